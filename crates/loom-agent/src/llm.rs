//! The LLM executor: an action loop against an OpenAI-compatible chat completions endpoint.
//! Each model reply carries one JSON action (`protocol`), performed in the bead's worktree
//! through the sandbox (`actions`), whose result is the next user message.
//!
//! Limits: iterations per task, consecutive unparseable replies, the same action repeated (no
//! progress), per-command timeout and output caps (sandbox), and the task's wall clock (the
//! executor). A context-length error drops the oldest exchanges and retries. Token usage and
//! every action are reported in the result's context.

mod actions;
mod client;
mod prompt;
mod protocol;

use loom_bus::TaskMessage;
use serde_json::{Value, json};

pub(crate) use client::Client;
use client::{ChatError, Message, Usage};
use protocol::{Action, parse_action};

use crate::executor::Outcome;
use crate::executor::runner::Runner;
use crate::sandbox::Sandbox;
use crate::workspace::{Workspace, Worktree};
use crate::{AgentConfig, Error};

/// Messages kept at the head of the history whatever is trimmed: system prompt and the task.
const PINNED: usize = 2;

/// Runs the loop for one task; a model that fails or gives up is an unsuccessful outcome.
pub(crate) async fn run(
    config: &AgentConfig,
    client: &Client,
    task: &TaskMessage,
    workspace: &Workspace,
    worktree: &Worktree,
    runner: &Runner<'_>,
) -> Result<Outcome, Error> {
    let sandbox = Sandbox::new(&worktree.path)?;
    let system = prompt::system(&prompt::persona(config)?, &sandbox);
    let mut history = vec![Message::new("system", system), Message::new("user", prompt::task(task))];
    let mut env = actions::Env {
        sandbox,
        workspace,
        worktree,
        limits: config.command,
        runner,
        task: &task.task_data,
        created_beads: Vec::new(),
        commits: Vec::new(),
    };
    let mut run = Run::default();
    let outcome = run.drive(config, client, &mut history, &mut env).await;
    Ok(run.report(outcome, &env))
}

/// Bookkeeping of one loop.
#[derive(Default)]
struct Run {
    usage: Usage,
    iterations: u32,
    log: Vec<Value>,
}

impl Run {
    async fn drive(
        &mut self,
        config: &AgentConfig,
        client: &Client,
        history: &mut Vec<Message>,
        env: &mut actions::Env<'_>,
    ) -> Outcome {
        let limits = &config.llm;
        let (mut parse_failures, mut repeats, mut last): (u32, u32, Option<Action>) = (0, 0, None);
        while self.iterations < limits.max_iterations {
            self.iterations += 1;
            let reply = match self.complete(client, history).await {
                Ok(reply) => reply,
                Err(err) => return Outcome::failure(err.to_string()),
            };
            history.push(Message::new("assistant", reply.clone()));
            let action = match parse_action(&reply) {
                Ok(action) => action,
                Err(why) => {
                    parse_failures += 1;
                    self.log.push(json!({ "action": "(unparseable)", "ok": false, "detail": why }));
                    if parse_failures >= limits.max_parse_failures {
                        return Outcome::failure(format!(
                            "the model's reply could not be parsed as an action {parse_failures} times in a row; last error: {why}"
                        ));
                    }
                    history.push(Message::new(
                        "user",
                        format!("Your reply is not a valid action: {why}. Reply with exactly one JSON object."),
                    ));
                    continue;
                }
            };
            parse_failures = 0;
            repeats = if last.as_ref() == Some(&action) { repeats + 1 } else { 1 };
            if repeats >= limits.max_repeats {
                return Outcome::failure(format!(
                    "no progress: the model repeated the same {} action {repeats} times in a row",
                    action.name()
                ));
            }
            let step = env.perform(&action).await;
            match step {
                actions::Step::Observe { ok, text } => {
                    self.log.push(json!({ "action": action.name(), "ok": ok, "detail": summary(&action) }));
                    history.push(Message::new("user", format!("Result of {}:\n{text}", action.name())));
                }
                actions::Step::Done(summary) => {
                    self.log.push(json!({ "action": "done", "ok": true }));
                    return Outcome::success(summary);
                }
                actions::Step::Fail(reason) => {
                    self.log.push(json!({ "action": "fail", "ok": true }));
                    return Outcome::failure(format!("the agent gave up: {reason}"));
                }
                actions::Step::Escalate(reason) => {
                    self.log.push(json!({ "action": "escalate", "ok": true }));
                    let mut o = Outcome::failure(format!("escalated: {reason}"));
                    o.context.insert("escalated".into(), "true".into());
                    return o;
                }
            }
            last = Some(action);
        }
        Outcome::failure(format!("the model did not finish within {} iterations", limits.max_iterations))
    }

    /// One completion; on a context-length error, drops the oldest exchanges and retries.
    async fn complete(&mut self, client: &Client, history: &mut Vec<Message>) -> Result<String, Error> {
        loop {
            match client.chat(&client.model, history).await {
                Ok((reply, usage)) => {
                    self.usage.prompt_tokens += usage.prompt_tokens;
                    self.usage.completion_tokens += usage.completion_tokens;
                    self.usage.total_tokens += usage.total_tokens;
                    return Ok(reply);
                }
                Err(ChatError::ContextLength(body)) => {
                    if !trim_history(history) {
                        return Err(Error::Llm(format!("the prompt is too long even without history: {body}")));
                    }
                    tracing::info!(kept = history.len(), "context length exceeded; dropped the oldest exchanges");
                }
                Err(ChatError::Other(err)) => return Err(err),
            }
        }
    }

    fn report(&self, mut outcome: Outcome, env: &actions::Env<'_>) -> Outcome {
        let ctx = &mut outcome.context;
        ctx.insert("llm_iterations".into(), self.iterations.to_string());
        ctx.insert("llm_prompt_tokens".into(), self.usage.prompt_tokens.to_string());
        ctx.insert("llm_completion_tokens".into(), self.usage.completion_tokens.to_string());
        ctx.insert("llm_total_tokens".into(), self.usage.total_tokens.to_string());
        ctx.insert("actions".into(), Value::Array(self.log.clone()).to_string());
        if !env.created_beads.is_empty() {
            ctx.insert("created_beads".into(), Value::Array(env.created_beads.clone()).to_string());
            for bead in &env.created_beads {
                outcome.artifacts.push(format!("bead:{}", bead["title"].as_str().unwrap_or_default()));
            }
        }
        outcome
    }
}

/// Drops the older half of the exchanges after the pinned messages (at least one exchange,
/// always keeping the latest one). False when nothing is left to drop.
fn trim_history(history: &mut Vec<Message>) -> bool {
    let droppable = history.len().saturating_sub(PINNED + 2);
    if droppable == 0 {
        return false;
    }
    let drop = (droppable / 2).max(1);
    // Whole exchanges (assistant + user) keep the alternation the API expects.
    let drop = drop + drop % 2;
    let drop = drop.min(droppable);
    history.drain(PINNED..PINNED + drop);
    true
}

/// What an action was about, for the report (paths and commands, never file contents).
fn summary(action: &Action) -> String {
    match action {
        Action::ReadFile { path } | Action::WriteFile { path, .. } | Action::EditFile { path, .. } => path.clone(),
        Action::ListFiles { path } => path.clone().unwrap_or_else(|| ".".into()),
        Action::SearchText { query, .. } => query.clone(),
        Action::RunCommand { command } => command.chars().take(200).collect(),
        Action::GitCommit { message } => message.lines().next().unwrap_or_default().to_owned(),
        Action::CreateBead { title, .. } => title.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_the_pinned_and_the_latest_exchange() {
        let mut h: Vec<Message> = ["system", "user"].iter().map(|r| Message::new(r, "")).collect();
        for i in 0..6 {
            h.push(Message::new("assistant", format!("a{i}")));
            h.push(Message::new("user", format!("u{i}")));
        }
        assert!(trim_history(&mut h));
        assert_eq!(h[0].role, "system");
        assert_eq!(h[2].content, "a3", "the older half of the exchanges went: {h:?}");
        assert_eq!(h.last().unwrap().content, "u5");
        while trim_history(&mut h) {}
        assert_eq!(h.len(), PINNED + 2);
        assert_eq!(h[2].content, "a5");
    }
}
