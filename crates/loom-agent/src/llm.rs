//! The LLM executor: an action loop against an OpenAI-compatible chat completions endpoint.
//! The actions are offered as native `tools` (each `tool_calls` entry performed in order and
//! answered with a `tool` message) or, as the fallback, as a JSON-in-text protocol (one action
//! per reply, `protocol`); `llm.tool_mode` chooses, `auto` probing once per provider (`client`).
//! Actions are performed in the bead's worktree through the sandbox (`actions`).
//!
//! Limits: iterations (model turns) per task, consecutive unusable replies (unparseable, or cut
//! off at `max_tokens`: `finish_reason: "length"` performs nothing and asks for a shorter
//! reply), the same action repeated (no progress), bounded retries of 429/5xx/timeouts (the
//! client), per-command timeout and output caps (sandbox), and the task's wall clock (the
//! executor). Near the context window older results are condensed to one line each (`condense`);
//! a context-length error drops the oldest exchanges and retries. Token usage (per
//! turn and in total, with the model), the tool mode and every action are reported in the
//! result's context, so they are stored with the attempt.

mod actions;
mod client;
mod prompt;
mod protocol;
mod transcript;

use std::time::{Duration, Instant};

use loom_bus::TaskMessage;
pub(crate) use loom_domain::Persona;
use serde_json::{Value, json};

pub(crate) use client::Client;
use client::{ChatError, Completion, Message, Usage};
pub(crate) use prompt::persona;
use protocol::{Action, parse_action, parse_call};

use crate::config::LlmConfig;
use crate::executor::runner::Runner;
use crate::executor::{Outcome, Steps};
use crate::redact::Redactor;
use crate::sandbox::Sandbox;
use crate::workspace::{Workspace, Worktree};
use crate::{AgentConfig, Error};
use transcript::Transcript;

/// Messages kept at the head of the history whatever is trimmed: system prompt and the task.
const PINNED: usize = 2;

/// Runs the loop for one task; a model that fails or gives up is an unsuccessful outcome.
#[allow(clippy::too_many_arguments, reason = "what one task's loop works with, each borrowed from the executor")]
pub(crate) async fn run(
    config: &AgentConfig,
    client: &Client,
    task: &TaskMessage,
    persona: &Persona,
    workspace: &Workspace,
    worktree: &Worktree,
    runner: &Runner<'_>,
    steps: &Steps,
) -> Result<Outcome, Error> {
    let sandbox = Sandbox::new(&worktree.path)?;
    let tools = client.uses_tools();
    let system = prompt::system(persona, &sandbox, tools);
    let history = vec![Message::new("system", system), Message::new("user", prompt::task(task))];
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
    let budget = task.task_data.context.get(BUDGET_REMAINING).and_then(|v| v.trim().parse::<u64>().ok());
    let mut run = Run {
        persona: persona.clone(),
        tools,
        model: client.model.clone(),
        budget,
        transcript: Transcript::new(Redactor::new(client.secrets())),
        live: Some((steps.clone(), task.metadata.dispatch_id.clone())),
        ..Run::default()
    };
    let mut kept = Vec::with_capacity(history.len());
    for m in history {
        run.push(&mut kept, m);
    }
    let outcome = run.drive(config, client, &mut kept, &mut env).await;
    Ok(run.report(outcome, client, &env))
}

/// Bookkeeping of one loop.
#[derive(Default)]
struct Run {
    persona: Persona,
    /// Whether the history speaks native tools (else the text protocol).
    tools: bool,
    usage: Usage,
    /// Model turns (replies).
    turns: u32,
    retries: u32,
    model: String,
    /// Per turn: tokens, model, finish reason, retries, time in the model call (`model_ms`) and
    /// the agent's time until the next one (`agent_ms`: parsing, actions, the next request).
    turn_log: Vec<Value>,
    /// When the last reply arrived.
    replied: Option<Instant>,
    model_time: Duration,
    agent_time: Duration,
    log: Vec<Value>,
    /// Consecutive unusable replies (unparseable or cut off).
    failures: u32,
    /// Messages condensed to one line to fit the context window.
    condensed: usize,
    repeats: u32,
    last: Option<Action>,
    /// Tokens this attempt may spend (`token_budget_remaining` of the task), if bounded.
    budget: Option<u64>,
    /// Whether the attempt stopped because it spent its budget.
    budget_spent: bool,
    /// What the escalation asked, when the model escalated.
    escalation: Option<String>,
    /// Everything said, bounded and redacted, for the result (`llm_conversation`).
    transcript: Transcript,
    /// Where the latest steps go for the progress reports.
    live: Option<(Steps, loom_domain::DispatchId)>,
}

/// Steps a progress report carries.
const LIVE_STEPS: usize = 5;

/// The task context entry with the tokens the attempt may spend (set by the control plane when
/// the bead or its project has a `token_budget`).
const BUDGET_REMAINING: &str = "token_budget_remaining";

/// After one action: tell the model this (with the one line that may replace it when the
/// history is condensed; `None` for a failure, which is always kept whole), or end the task.
enum Next {
    Observe(String, Option<String>),
    Stop(Outcome),
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
        while self.turns < limits.max_iterations {
            if let Some(budget) = self.budget
                && self.usage.total_tokens >= budget
            {
                self.budget_spent = true;
                let used = self.usage.total_tokens;
                return Outcome::failure(format!(
                    "token budget spent: this attempt used {used} tokens of the {budget} left in the bead's or its \
                     project's token_budget; raise token_budget and reopen the bead to go on"
                ));
            }
            self.turns += 1;
            let Completion { mut message, finish_reason, .. } = match self.complete(client, history, env).await {
                Ok(reply) => reply,
                Err(err) => return Outcome::failure(err.to_string()),
            };
            if finish_reason == "length" {
                // Cut off at max_tokens: its last action or call may be incomplete; none is done.
                let max = client.max_tokens.map_or_else(|| "the endpoint's default".to_owned(), |m| m.to_string());
                let why = format!("the reply was cut off at max_tokens ({max}), finish_reason \"length\"");
                if let Some(stop) = self.unusable(limits, "(cut off)", &why) {
                    return stop;
                }
                self.push(history, Message::new("assistant", message.content));
                self.push(
                    history,
                    Message::new(
                        "user",
                        format!(
                            "Your reply was cut off (finish_reason \"length\", max_tokens {max}) and nothing in it was \
                         done. Continue with a shorter reply: one small step at a time (split a large write_file \
                         into several edit_file steps)."
                        ),
                    ),
                );
                continue;
            }
            if message.tool_calls.is_empty() {
                self.push(history, Message::new("assistant", message.content.clone()));
                let action = match parse_action(&message.content) {
                    Ok(action) => action,
                    Err(why) => {
                        if let Some(stop) = self.unusable(limits, "(unparseable)", &why) {
                            return stop;
                        }
                        let ask = if self.tools {
                            "Call one of the tools (or reply with exactly one JSON action object)."
                        } else {
                            "Reply with exactly one JSON object."
                        };
                        self.push(
                            history,
                            Message::new("user", format!("Your reply is not a valid action: {why}. {ask}")),
                        );
                        continue;
                    }
                };
                match self.act(action, limits, env).await {
                    Next::Observe(text, brief) => self.push(history, Message { brief, ..Message::new("user", text) }),
                    Next::Stop(outcome) => return outcome,
                }
                continue;
            }
            for (i, call) in message.tool_calls.iter_mut().enumerate() {
                if call.id.is_empty() {
                    call.id = format!("call_{}_{i}", self.turns);
                }
            }
            let calls = message.tool_calls.clone();
            self.push(history, message);
            for call in calls {
                let (answer, brief) = match parse_call(&call.function.name, &call.function.arguments) {
                    Ok(action) => match self.act(action, limits, env).await {
                        Next::Observe(text, brief) => (text, brief),
                        Next::Stop(outcome) => return outcome,
                    },
                    Err(why) => {
                        if let Some(stop) = self.unusable(limits, "(unparseable)", &why) {
                            return stop;
                        }
                        (format!("error: not a valid call of {}: {why}", call.function.name), None)
                    }
                };
                self.push(history, Message { brief, ..Message::tool(&call.id, answer) });
            }
        }
        Outcome::failure(format!("the model did not finish within {} iterations", limits.max_iterations))
    }

    /// The last [`LIVE_STEPS`] actions (redacted), for the progress reports.
    fn publish_steps(&self) {
        let Some((steps, dispatch)) = &self.live else { return };
        if self.log.is_empty() {
            return;
        }
        let from = self.log.len().saturating_sub(LIVE_STEPS);
        let latest: Vec<Value> = self.log[from..]
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mut step = step.clone();
                if let Some(detail) = step["detail"].as_str() {
                    step["detail"] = self.transcript.redactor.redact(detail).into();
                }
                step["step"] = (from + i + 1).into();
                step
            })
            .collect();
        let turn = json!({ "turn": self.turns, "tokens": self.usage.total_tokens, "steps": latest });
        steps.set(dispatch, turn.to_string());
    }

    /// Adds `m` to the history and to the transcript.
    fn push(&mut self, history: &mut Vec<Message>, m: Message) {
        self.transcript.record(&m, self.turns);
        history.push(m);
    }

    /// Counts an unusable reply or call; the outcome when there were too many in a row.
    fn unusable(&mut self, limits: &LlmConfig, what: &str, why: &str) -> Option<Outcome> {
        self.failures += 1;
        self.log.push(json!({ "action": what, "ok": false, "detail": why }));
        (self.failures >= limits.max_parse_failures).then(|| {
            let n = self.failures;
            if what == "(cut off)" {
                Outcome::failure(format!(
                    "{why} {n} times in a row; raise llm.max_tokens or ask the model for smaller steps"
                ))
            } else {
                Outcome::failure(format!(
                    "the model's reply could not be parsed as an action {n} times in a row; last error: {why}"
                ))
            }
        })
    }

    /// Performs one valid action.
    async fn act(&mut self, action: Action, limits: &LlmConfig, env: &mut actions::Env<'_>) -> Next {
        self.failures = 0;
        self.repeats = if self.last.as_ref() == Some(&action) { self.repeats + 1 } else { 1 };
        if self.repeats >= limits.max_repeats {
            return Next::Stop(Outcome::failure(format!(
                "no progress: the model repeated the same {} action {} times in a row",
                action.name(),
                self.repeats
            )));
        }
        if self.persona.denies(&action.name()) {
            let name = action.name();
            self.log.push(json!({ "action": name, "ok": false, "detail": "denied by the persona" }));
            self.last = Some(action);
            let text = format!(
                "error: {name} is not available to the {} persona; it was not done. Use another action, or \
                 finish with done, fail or escalate.",
                self.persona.name
            );
            return Next::Observe(text, None);
        }
        let step = env.perform(&action).await;
        let next = match step {
            actions::Step::Observe { ok, text } => {
                let (name, target) = (action.name(), summary(&action));
                let brief = ok.then(|| {
                    let target: String = target.chars().take(120).collect();
                    format!("[condensed] {name} {target}: ok, {} chars of output", text.chars().count())
                });
                self.log.push(json!({ "action": name, "ok": ok, "detail": target }));
                Next::Observe(format!("Result of {name}:\n{text}"), brief)
            }
            actions::Step::Done(summary) => {
                self.log.push(json!({ "action": "done", "ok": true }));
                Next::Stop(Outcome::success(summary))
            }
            actions::Step::Fail(reason) => {
                self.log.push(json!({ "action": "fail", "ok": true }));
                Next::Stop(Outcome::failure(format!("the agent gave up: {reason}")))
            }
            actions::Step::Escalate(reason) => {
                self.log.push(json!({ "action": "escalate", "ok": true }));
                self.escalation = Some(self.transcript.redactor.redact(&reason));
                let mut o = Outcome::failure(format!("escalated: {reason}"));
                o.context.insert("escalated".into(), "true".into());
                Next::Stop(o)
            }
        };
        self.last = Some(action);
        next
    }

    /// One completion; on a context-length error, drops the oldest exchanges and retries; when
    /// `auto` learns the endpoint refuses `tools`, goes on in the text protocol.
    async fn complete(
        &mut self,
        client: &Client,
        history: &mut Vec<Message>,
        env: &actions::Env<'_>,
    ) -> Result<Completion, Error> {
        loop {
            if self.tools && !client.uses_tools() {
                self.tools = false;
                history[0].content = prompt::system(&self.persona, &env.sandbox, false);
                to_text(history);
            }
            let tools = self.tools.then(|| protocol::tools(&self.persona.deny));
            let budget = u64::from(client.context_window_tokens) * 3; // 75 % of the window, 4 chars a token
            let condensed = condense(history, budget, tools.as_ref());
            if condensed > 0 {
                self.condensed += condensed;
                tracing::info!(condensed, "the conversation neared the context window; condensed older results");
            }
            self.publish_steps();
            let asked = Instant::now();
            if let Some(replied) = self.replied.take()
                && let Some(turn) = self.turn_log.last_mut()
            {
                let agent = asked - replied;
                self.agent_time += agent;
                turn["agent_ms"] = ms(agent).into();
            }
            let result = client.chat(history, tools.as_ref()).await;
            let model = asked.elapsed();
            self.model_time += model;
            match result {
                Ok(reply) => {
                    self.replied = Some(Instant::now());
                    self.usage.prompt_tokens += reply.usage.prompt_tokens;
                    self.usage.completion_tokens += reply.usage.completion_tokens;
                    self.usage.total_tokens += reply.usage.total_tokens;
                    self.retries += reply.retries;
                    self.model.clone_from(&reply.model);
                    self.turn_log.push(json!({
                        "turn": self.turns,
                        "prompt_tokens": reply.usage.prompt_tokens,
                        "completion_tokens": reply.usage.completion_tokens,
                        "model": reply.model,
                        "finish_reason": reply.finish_reason,
                        "retries": reply.retries,
                        "model_ms": ms(model),
                    }));
                    return Ok(reply);
                }
                Err(ChatError::ContextLength(body)) => {
                    if !trim_history(history) {
                        return Err(Error::Llm(format!("the prompt is too long even without history: {body}")));
                    }
                    tracing::info!(kept = history.len(), "context length exceeded; dropped the oldest exchanges");
                }
                Err(ChatError::ToolsRejected(why)) => {
                    if !client.fall_back_to_text() {
                        return Err(Error::Llm(format!(
                            "the endpoint refused native tool calls (llm.tool_mode = \"tools\"; \"auto\" or \"text\" \
                             would fall back to JSON in the text): {why}"
                        )));
                    }
                    tracing::warn!(error = %why, "the endpoint refused native tool calls; using the JSON-in-text protocol");
                }
                Err(ChatError::Other(err)) => return Err(err),
            }
        }
    }

    fn report(&mut self, mut outcome: Outcome, client: &Client, env: &actions::Env<'_>) -> Outcome {
        let end = if outcome.success {
            format!("finished: {}", outcome.output)
        } else {
            format!("stopped: {}", outcome.error)
        };
        self.transcript.record(&Message::new("note", end), self.turns);
        let ctx = &mut outcome.context;
        let price = client.price(&self.model);
        let cost = price.map_or(0.0, |p| p.cost(self.usage.prompt_tokens, self.usage.completion_tokens));
        ctx.insert("llm_provider".into(), client.provider.clone());
        ctx.insert("llm_cost_usd".into(), format!("{cost:.6}"));
        ctx.insert("llm_conversation".into(), self.transcript.finish());
        if self.budget_spent {
            ctx.insert("llm_budget_spent".into(), "true".into());
        }
        if let Some(question) = &self.escalation {
            ctx.insert("escalation".into(), question.clone());
        }
        ctx.insert("llm_iterations".into(), self.turns.to_string());
        ctx.insert("llm_turns".into(), self.turns.to_string());
        ctx.insert("llm_model".into(), self.model.clone());
        ctx.insert("llm_tool_mode".into(), if self.tools { "tools" } else { "text" }.into());
        ctx.insert("llm_retries".into(), self.retries.to_string());
        ctx.insert("llm_condensed".into(), self.condensed.to_string());
        ctx.insert("llm_prompt_tokens".into(), self.usage.prompt_tokens.to_string());
        ctx.insert("llm_completion_tokens".into(), self.usage.completion_tokens.to_string());
        ctx.insert("llm_total_tokens".into(), self.usage.total_tokens.to_string());
        ctx.insert("llm_model_ms".into(), ms(self.model_time).to_string());
        ctx.insert("llm_agent_ms".into(), ms(self.agent_time).to_string());
        ctx.insert("llm_usage".into(), Value::Array(self.turn_log.clone()).to_string());
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

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Rewrites native calls and their answers as the text protocol's messages (after `auto` fell
/// back mid-task): a call becomes its JSON action, an answer a user message.
fn to_text(history: &mut [Message]) {
    for m in history.iter_mut() {
        for call in std::mem::take(&mut m.tool_calls) {
            let mut action = serde_json::from_str::<Value>(&call.function.arguments).unwrap_or_else(|_| json!({}));
            if let Value::Object(o) = &mut action {
                o.insert("action".into(), call.function.name.into());
            }
            if !m.content.is_empty() {
                m.content.push('\n');
            }
            m.content.push_str(&action.to_string());
        }
        if m.tool_call_id.take().is_some() {
            m.role = "user".into();
        }
    }
}

/// Steps (an assistant message and its results) kept whole at the end of the history.
const KEEP_STEPS: usize = 6;

/// The estimated size of a request in characters: its messages and tools as JSON (a token is
/// taken as 4 characters).
fn request_chars(history: &[Message], tools: Option<&Value>) -> u64 {
    let messages: usize = history.iter().map(|m| serde_json::to_string(m).map_or(0, |s| s.len())).sum();
    (messages + tools.map_or(0, |t| t.to_string().len())) as u64
}

/// While the request is over `budget` characters, replaces the oldest condensable messages by
/// one line each: a successful action's result by its brief (action, target, outcome, size), and
/// an assistant message's long call arguments (a `write_file` content, say) by their size. Kept
/// whole: the system prompt and the task, the model's first message (its plan), the last
/// [`KEEP_STEPS`] steps and every failed step's error. Returns how many messages it condensed.
fn condense(history: &mut [Message], budget: u64, tools: Option<&Value>) -> usize {
    let mut size = request_chars(history, tools);
    if size <= budget {
        return 0;
    }
    let assistants: Vec<usize> =
        history.iter().enumerate().filter(|(_, m)| m.role == "assistant").map(|(i, _)| i).collect();
    if assistants.len() <= KEEP_STEPS {
        return 0;
    }
    let keep_from = assistants[assistants.len() - KEEP_STEPS];
    let plan = assistants[0];
    let mut condensed = 0;
    let json_len = |m: &Message| serde_json::to_string(m).map_or(0, |s| s.len()) as u64;
    for (i, m) in history.iter_mut().enumerate().take(keep_from).skip(PINNED) {
        if size <= budget {
            break;
        }
        if i == plan {
            continue;
        }
        let before = json_len(m);
        let changed = if let Some(brief) = m.brief.take() {
            m.content = brief;
            true
        } else if m.role == "assistant" {
            shorten_calls(m)
        } else {
            false
        };
        if changed {
            condensed += 1;
            size = size.saturating_sub(before.saturating_sub(json_len(m)));
        }
    }
    condensed
}

/// Replaces string arguments over 200 characters (and a text-protocol reply over 1000) by
/// their size. True when something changed.
fn shorten_calls(m: &mut Message) -> bool {
    let mut changed = false;
    for call in &mut m.tool_calls {
        let Ok(Value::Object(mut args)) = serde_json::from_str::<Value>(&call.function.arguments) else { continue };
        for value in args.values_mut() {
            if let Value::String(s) = value
                && s.len() > 200
            {
                *value = Value::String(format!("[condensed: {} chars]", s.chars().count()));
                changed = true;
            }
        }
        call.function.arguments = Value::Object(args).to_string();
    }
    if m.tool_calls.is_empty() && m.content.len() > 1000 {
        let head: String = m.content.chars().take(200).collect();
        m.content = format!("{head}… [condensed: {} chars]", m.content.chars().count());
        changed = true;
    }
    changed
}

/// Drops the older half of the exchanges after the pinned messages (at least one exchange,
/// always keeping the latest one). False when nothing is left to drop.
fn trim_history(history: &mut Vec<Message>) -> bool {
    // The latest exchange: the last assistant message and what answers it.
    let latest = history.iter().rposition(|m| m.role == "assistant").unwrap_or(0);
    let droppable = latest.saturating_sub(PINNED);
    if droppable == 0 {
        return false;
    }
    let drop = (droppable / 2).max(1);
    // Whole exchanges (assistant + user) keep the alternation the API expects.
    let drop = drop + drop % 2;
    let mut drop = drop.min(droppable);
    // Nor an answer to a call whose assistant message went.
    while drop < droppable && history[PINNED + drop].role != "assistant" {
        drop += 1;
    }
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

    fn call(name: &str, arguments: &str) -> client::ToolCall {
        let function = client::FunctionCall { name: name.into(), arguments: arguments.into() };
        client::ToolCall { id: format!("id-{name}"), kind: "function".into(), function }
    }

    #[test]
    fn trimming_never_leaves_a_tool_answer_without_its_call() {
        let mut h: Vec<Message> = ["system", "user"].iter().map(|r| Message::new(r, "")).collect();
        for i in 0..4 {
            let calls = vec![call("a", "{}"), call("b", "{}"), call("c", "{}")];
            h.push(Message { tool_calls: calls, ..Message::new("assistant", format!("a{i}")) });
            for id in ["id-a", "id-b", "id-c"] {
                h.push(Message::tool(id, format!("r{i}")));
            }
        }
        while trim_history(&mut h) {
            assert_eq!(h[PINNED].role, "assistant", "{h:?}");
        }
        assert_eq!(h[PINNED].content, "a3");
    }

    #[test]
    fn condensing_keeps_the_pinned_the_plan_the_last_steps_and_the_errors() {
        let mut h: Vec<Message> = vec![Message::new("system", "S"), Message::new("user", "TASK")];
        let big = "x".repeat(1000);
        h.push(Message::new("assistant", "PLAN"));
        h.push(Message { brief: Some("[condensed] first".into()), ..Message::new("user", big.clone()) });
        h.push(Message {
            tool_calls: vec![call("write_file", &json!({"path": "a", "content": big}).to_string())],
            ..Message::new("assistant", "")
        });
        h.push(Message::tool("id-write_file", "error: disk full"));
        for i in 0..KEEP_STEPS {
            h.push(Message::new("assistant", format!("a{i}")));
            h.push(Message { brief: Some(format!("[condensed] {i}")), ..Message::new("user", big.clone()) });
        }
        let whole = h.clone();
        assert_eq!(condense(&mut h, u64::MAX, None), 0, "nothing changes under the budget");
        assert_eq!(h, whole);
        assert_eq!(condense(&mut h, 0, None), 2);
        assert_eq!(h[2].content, "PLAN");
        assert_eq!(h[3].content, "[condensed] first");
        let args: Value = serde_json::from_str(&h[4].tool_calls[0].function.arguments).unwrap();
        assert_eq!(args, json!({"path": "a", "content": "[condensed: 1000 chars]"}));
        assert_eq!(h[5].content, "error: disk full", "an error is kept whole");
        assert_eq!(h[6..], whole[6..], "the last steps are whole");
    }

    #[test]
    fn native_calls_become_text_actions_when_auto_falls_back() {
        let mut h = vec![
            Message { tool_calls: vec![call("read_file", r#"{"path":"a"}"#)], ..Message::new("assistant", "") },
            Message::tool("id-read_file", "Result of read_file:\nx"),
        ];
        to_text(&mut h);
        assert!(h[0].tool_calls.is_empty());
        assert_eq!(parse_action(&h[0].content).unwrap(), Action::ReadFile { path: "a".into() });
        assert_eq!((h[1].role.as_str(), h[1].tool_call_id.as_deref()), ("user", None));
    }
}
