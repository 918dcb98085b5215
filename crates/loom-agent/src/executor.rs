//! Executors: what running a task means. `noop` succeeds at once; `shell` runs a command in the
//! bead's worktree; `llm` runs the action loop there. Work a successful executor leaves in the
//! worktree is committed and landed with the project's git strategy before the task counts as
//! done, so `task.completed` always means "the work is in the remote".

pub(crate) mod runner;
mod shell;

use std::time::{Duration, Instant};

use loom_bus::{TaskMessage, TaskMetadata};
use loom_domain::{AgentId, ContextMap, limits};
use runner::{CommandLog, Runner};
use tracing::Instrument as _;

use crate::agent::step;

use crate::config::ExecutorKind;
use crate::llm;
use crate::sandbox::command::cap_text;
use crate::workspace::Workspace;
use crate::{AgentConfig, Error};

/// What a task produced, before it becomes a `task.completed` or `task.failed`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) success: bool,
    pub(crate) output: String,
    pub(crate) error: String,
    pub(crate) commits: Vec<String>,
    /// The branch `commits` landed on.
    pub(crate) branch: String,
    pub(crate) artifacts: Vec<String>,
    pub(crate) context: ContextMap,
    /// Time spent inside the executor (the agent's overhead is the rest).
    pub(crate) executor_time: Duration,
    /// Not an outcome: the task must be handed back (the fence could not be asked before the
    /// push, so nothing was pushed). `error` says why.
    pub(crate) hand_back: bool,
}

impl Outcome {
    pub(crate) fn success(output: impl Into<String>) -> Outcome {
        Outcome { success: true, output: output.into(), ..Outcome::default() }
    }

    pub(crate) fn failure(error: impl Into<String>) -> Outcome {
        Outcome { success: false, error: error.into(), ..Outcome::default() }
    }

    /// Applies the size limits of the wire contract.
    pub(crate) fn capped(mut self) -> Outcome {
        self.output = cap_text(&self.output, 64 * 1024);
        self.error = loom_domain::truncate_reason(&self.error);
        for value in self.context.values_mut() {
            if value.len() > limits::CONTEXT_VALUE_MAX {
                *value = cap_text(value, limits::CONTEXT_VALUE_MAX - 64);
            }
        }
        self
    }
}

/// Runs tasks for one agent.
#[derive(Debug)]
pub(crate) struct Executors {
    config: AgentConfig,
    workspace: Option<Workspace>,
    llm: llm::Client,
}

impl Executors {
    pub(crate) fn new(config: &AgentConfig) -> Result<Executors, Error> {
        Ok(Executors { config: config.clone(), workspace: Workspace::new(config), llm: llm::Client::new(&config.llm)? })
    }

    /// Runs `task` (for `agent`) to an outcome; never fails (a failure is an outcome), never
    /// panics on bad input. Bounded by the task's wall-clock limit. The commands it ran are
    /// listed in the outcome's context whatever the outcome.
    pub(crate) async fn execute(&self, task: &TaskMessage, agent: &AgentId) -> Outcome {
        let started = Instant::now();
        let limit = self.config.task_timeout;
        let log = CommandLog::new(agent, task);
        let span = if loom_telemetry::propagate::enabled() {
            let kind = self.kind(&task.metadata).map(ExecutorKind::as_str).unwrap_or("unknown");
            tracing::info_span!(
                "agent.executor",
                otel.name = format!("executor {kind}"),
                executor = kind,
                success = tracing::field::Empty
            )
        } else {
            tracing::Span::none()
        };
        let work = tracing::Instrument::instrument(self.dispatch(task, &log), span.clone());
        let mut outcome = match tokio::time::timeout(limit, work).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(err)) => Outcome::failure(err.to_string()),
            Err(_) => Outcome::failure(format!("the task exceeded its wall-clock limit of {limit:?}")),
        };
        log.report(&mut outcome.context);
        span.record("success", outcome.success);
        outcome.executor_time = started.elapsed();
        outcome.capped()
    }

    fn kind(&self, meta: &TaskMetadata) -> Result<ExecutorKind, Error> {
        match meta.executor.trim() {
            "" => Ok(self.config.default_executor),
            other => ExecutorKind::parse(other),
        }
    }

    async fn dispatch(&self, task: &TaskMessage, log: &CommandLog) -> Result<Outcome, Error> {
        let kind = self.kind(&task.metadata)?;
        if kind == ExecutorKind::Noop {
            // Simulated work for benchmarks and the fault suite: `noop_ms` (at most an hour).
            let ms = task.task_data.context.get("noop_ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms.min(3_600_000))).await;
            return Ok(Outcome::success("noop"));
        }
        let Some(ws) = &self.workspace else {
            return Err(Error::Config(format!(
                "the {} executor needs a repository (git_repo is empty)",
                kind.as_str()
            )));
        };
        let persona = if kind == ExecutorKind::Llm { Some(llm::persona(&self.config, task)?) } else { None };
        let wt = ws.checkout(&task.bead_id).instrument(step("git.checkout")).await?;
        let runner = Runner::new(&self.config, ws, &wt, task, log).await?;
        let mut outcome = match persona {
            None => shell::run(&runner, task).await?,
            Some(persona) => {
                let mut outcome = llm::run(&self.config, &self.llm, task, persona, ws, &wt, &runner).await?;
                outcome.context.insert("persona".into(), persona.name.clone());
                outcome
            }
        };
        outcome.context.insert("executor".into(), kind.as_str().into());
        if !outcome.success {
            // The worktree stays for inspection; the next attempt starts from a fresh one.
            return Ok(outcome);
        }
        if let Some(persona) = persona.filter(|p| p.denies("push")) {
            // A persona that may not push (a reviewer) lands nothing, whatever a command changed.
            ws.remove(&wt).await;
            let note = format!("not pushed: the {} persona may not push", persona.name);
            outcome.context.insert("push".into(), note);
            return Ok(outcome);
        }
        let message = commit_message(task);
        ws.commit(&wt, &message).instrument(step("git.commit")).await?;
        let fence = self.config.fence.as_deref();
        match crate::fence::current_before_push(fence, &task.bead_id, &task.metadata.dispatch_id).await {
            Some(true) => {}
            Some(false) => {
                // Another dispatch owns the bead now: landing this work could land it twice.
                ws.remove(&wt).await;
                return Ok(Outcome::failure(
                    "the dispatch was superseded before its work was pushed; nothing was pushed",
                ));
            }
            None => {
                ws.remove(&wt).await;
                let mut o =
                    Outcome::failure("cannot confirm the dispatch is current before the push; nothing was pushed");
                o.hand_back = true;
                return Ok(o);
            }
        }
        outcome.commits = ws.push(&wt).instrument(step("git.push")).await?;
        if !outcome.commits.is_empty() {
            outcome.branch = ws.landing_branch(&task.bead_id);
        }
        ws.remove(&wt).await;
        Ok(outcome)
    }
}

/// `{bead}: {title}` with the dispatch as a trailer, so every landed commit names the dispatch
/// that made it.
pub(crate) fn commit_message(task: &TaskMessage) -> String {
    let title = task.task_data.title.lines().next().unwrap_or("").trim();
    format!("{}: {title}\n\nLoom-Dispatch: {}", task.bead_id, task.metadata.dispatch_id)
}
