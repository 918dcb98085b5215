//! Executors: what running a task means. `noop` succeeds at once; `shell` runs a command in the
//! bead's worktree; `llm` runs the action loop there. Work a successful executor leaves in the
//! worktree is committed and landed with the project's git strategy before the task counts as
//! done, so `task.completed` always means "the work is in the remote".

pub(crate) mod runner;
mod shell;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loom_bus::{TaskMessage, TaskMetadata};
use loom_domain::{AgentId, ContextMap, DispatchId, limits};
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

/// The latest steps of each running LLM task (redacted, a few), which its progress reports
/// carry while it works; each change has a new version, so a report sends them only when new.
#[derive(Clone, Debug, Default)]
pub(crate) struct Steps(Arc<Mutex<HashMap<DispatchId, (u64, String)>>>);

impl Steps {
    pub(crate) fn set(&self, dispatch: &DispatchId, steps: String) {
        let mut all = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = all.entry(dispatch.clone()).or_insert((0, String::new()));
        if entry.1 != steps {
            *entry = (entry.0 + 1, steps);
        }
    }

    /// The steps when their version is newer than `seen` (which is updated).
    pub(crate) fn newer(&self, dispatch: &DispatchId, seen: &mut u64) -> Option<String> {
        let all = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (version, steps) = all.get(dispatch)?;
        (*version > *seen).then(|| {
            *seen = *version;
            steps.clone()
        })
    }

    pub(crate) fn remove(&self, dispatch: &DispatchId) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(dispatch);
    }
}

/// Runs tasks for one agent.
#[derive(Debug)]
pub(crate) struct Executors {
    config: AgentConfig,
    workspace: Option<Workspace>,
    llm: Arc<llm::Client>,
    /// LLM endpoints by connector, when configured.
    endpoints: Option<crate::endpoints::Resolver>,
    pub(crate) steps: Steps,
}

impl Executors {
    pub(crate) fn new(config: &AgentConfig) -> Result<Executors, Error> {
        Ok(Executors {
            config: config.clone(),
            workspace: Workspace::new(config),
            llm: Arc::new(llm::Client::new(&config.llm)?),
            endpoints: config.llm_endpoints.clone().map(crate::endpoints::Resolver::new),
            steps: Steps::default(),
        })
    }

    /// Runs `task` (for `agent`) to an outcome; never fails (a failure is an outcome), never
    /// panics on bad input. Bounded by the task's wall-clock limit. The commands it ran are
    /// listed in the outcome's context whatever the outcome.
    pub(crate) async fn execute(&self, task: &TaskMessage, agent: &AgentId) -> Outcome {
        let started = Instant::now();
        let limit = self.config.task_timeout;
        // What is kept of the attempt (its output, error and command records) holds no secret.
        let redactor = crate::redact::Redactor::new(self.llm.secrets());
        let log = CommandLog::new(agent, task, redactor.clone());
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
        outcome.output = redactor.redact(&outcome.output);
        outcome.error = redactor.redact(&outcome.error);
        self.steps.remove(&task.metadata.dispatch_id);
        span.record("success", outcome.success);
        outcome.executor_time = started.elapsed();
        outcome.capped()
    }

    /// The LLM endpoint of `task`: the provider its persona names (`llm_provider`), else its
    /// project's (context `llm_provider`), else the agent's default, resolved through the
    /// connectors service; else the configured one.
    async fn llm_client(&self, task: &TaskMessage, persona: &loom_domain::Persona) -> Result<Arc<llm::Client>, Error> {
        let project = task.task_data.project_context.get("llm_provider").map(String::as_str).filter(|p| !p.is_empty());
        let named = persona.llm_provider.as_deref().or(project);
        match (&self.endpoints, named.or(self.config.llm_provider.as_deref())) {
            (Some(resolver), Some(provider)) => resolver.client(&self.config.llm, provider).await,
            (None, Some(provider)) if named.is_some() => Err(Error::Config(format!(
                "the bead's persona or project names the LLM provider {provider}, but this agent has no connectors service"
            ))),
            _ => Ok(self.llm.clone()),
        }
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
                let client = self.llm_client(task, persona).await?;
                let mut outcome = llm::run(&self.config, &client, task, persona, ws, &wt, &runner, &self.steps).await?;
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
