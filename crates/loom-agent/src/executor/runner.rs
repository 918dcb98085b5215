//! A task's commands: each runs in the task's sandbox — its worktree writable, the agent's work
//! root hidden but for the shared clone's `.git` (read-only, with a config that holds no remote
//! URL), the network only when the project's context says `sandbox_network = "allow"` — and each
//! is audited: a `tracing` line with target `audit` (agent, project, bead, dispatch, kind,
//! command, exit code, duration, sandbox) and a record in the result's context under `commands`
//! (a JSON array), from which the control plane records an `agent.command` event per command.

use std::path::PathBuf;
use std::sync::Mutex;

use chrono::Utc;
use loom_bus::{PROJECT_COMMANDS, TaskMessage};
use loom_domain::{AgentId, ContextMap};
use serde_json::{Value, json};

use crate::config::CommandLimits;
use crate::redact::Redactor;
use crate::sandbox::{CommandOutput, Isolation, run_command};
use crate::workspace::{Workspace, Worktree};
use crate::{AgentConfig, Error, SandboxMode};

/// The project context key that lets a project's commands reach the network.
pub(crate) const NETWORK_KEY: &str = "sandbox_network";
/// The result context key of the command records.
pub(crate) const COMMANDS_KEY: &str = "commands";
/// Records kept per task (the result's context value is bounded); later ones are counted.
const RECORDS_MAX: usize = 64;
/// Characters of a command kept in its record.
const COMMAND_MAX: usize = 300;

/// The commands one task ran, for its result and the audit log.
#[derive(Debug)]
pub(crate) struct CommandLog {
    agent: AgentId,
    task: TaskMessage,
    /// A command's text may carry a secret (`curl -H "Authorization: …"`): the audit line and
    /// the record keep it redacted.
    redactor: Redactor,
    records: Mutex<(Vec<Value>, usize)>,
}

impl CommandLog {
    pub(crate) fn new(agent: &AgentId, task: &TaskMessage, redactor: Redactor) -> CommandLog {
        CommandLog { agent: agent.clone(), task: task.clone(), redactor, records: Mutex::default() }
    }

    fn record(&self, kind: &str, command: &str, isolation: &Isolation, out: &CommandOutput) {
        let t = &self.task;
        let duration_ms = out.duration.as_millis() as u64;
        let sandbox = isolation.mode().as_str();
        let command = self.redactor.redact(command);
        let command = command.as_str();
        tracing::info!(
            target: "audit",
            agent = %self.agent,
            project = %t.project_id,
            bead = %t.bead_id,
            dispatch = %t.metadata.dispatch_id,
            kind,
            command,
            exit_code = out.code,
            timed_out = out.timed_out,
            duration_ms,
            sandbox,
            network = isolation.network_allowed(),
            "agent command"
        );
        let started_at = Utc::now() - chrono::Duration::milliseconds(duration_ms as i64);
        let record = json!({
            "kind": kind,
            "command": command.chars().take(COMMAND_MAX).collect::<String>(),
            "exit_code": out.code,
            "timed_out": out.timed_out,
            "duration_ms": duration_ms,
            "started_at": started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "sandbox": sandbox,
        });
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.0.len() < RECORDS_MAX {
            records.0.push(record);
        } else {
            records.1 += 1;
        }
    }

    /// Puts the records into a result's context (nothing when no command ran).
    pub(crate) fn report(&self, context: &mut ContextMap) {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.0.is_empty() {
            return;
        }
        context.insert(COMMANDS_KEY.into(), Value::Array(records.0.clone()).to_string());
        if records.1 > 0 {
            context.insert("commands_not_listed".into(), records.1.to_string());
        }
    }
}

/// Runs one task's commands in its worktree.
#[derive(Debug)]
pub(crate) struct Runner<'a> {
    isolation: Isolation,
    dir: PathBuf,
    limits: CommandLimits,
    env: Vec<(String, String)>,
    log: &'a CommandLog,
}

impl<'a> Runner<'a> {
    pub(crate) async fn new(
        config: &AgentConfig,
        ws: &Workspace,
        wt: &Worktree,
        task: &TaskMessage,
        log: &'a CommandLog,
    ) -> Result<Runner<'a>, Error> {
        let dir = wt.path.canonicalize().map_err(|e| Error::io("the worktree", e))?;
        let allowed = task.task_data.project_context.get(NETWORK_KEY).is_some_and(|v| v.trim() == "allow");
        let mut isolation = Isolation::new(&config.sandbox).hide(&config.work_root).network(allowed);
        if config.sandbox.mode == SandboxMode::Bubblewrap {
            let git = ws.git_common_dir().canonicalize().map_err(|e| Error::io("the clone's .git", e))?;
            let public = ws.sandbox_git_config().await?;
            isolation = isolation.read_only(&git, &git).read_only(public, git.join("config"));
        }
        let data = &task.task_data;
        let mut env = vec![
            ("LOOM_PROJECT_ID".to_owned(), task.project_id.to_string()),
            ("LOOM_BEAD_ID".to_owned(), task.bead_id.to_string()),
            ("LOOM_DISPATCH_ID".to_owned(), task.metadata.dispatch_id.to_string()),
            ("LOOM_ATTEMPT".to_owned(), task.metadata.attempt.to_string()),
        ];
        env.extend(
            PROJECT_COMMANDS
                .iter()
                .filter_map(|(key, var)| Some(((*var).to_owned(), data.project_command(key)?.to_owned()))),
        );
        Ok(Runner { isolation, dir, limits: config.command, env, log })
    }

    /// Runs `script` (`kind` says what it is for the audit: `shell`, `run_command`, `build`,
    /// `test`) and records it.
    pub(crate) async fn run(&self, kind: &str, script: &str) -> Result<CommandOutput, Error> {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // The span names the command's kind and exit, never its text (it may hold anything).
        let span = if loom_telemetry::propagate::enabled() {
            tracing::info_span!(
                "agent.command",
                otel.name = format!("command {kind}"),
                command.kind = kind,
                exit_code = tracing::field::Empty
            )
        } else {
            tracing::Span::none()
        };
        let running = run_command(&self.isolation, &self.dir, script, &self.limits, &env);
        let out = tracing::Instrument::instrument(running, span.clone()).await?;
        if let Some(code) = out.code {
            span.record("exit_code", code);
        }
        self.log.record(kind, script, &self.isolation, &out);
        Ok(out)
    }
}
