//! The agent's typed configuration. The binary layers defaults, `loom.toml`, `LOOM_*` and flags
//! into it; this crate only validates it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loom_bus::Role;
use loom_domain::{AgentId, GitStrategy, ProjectId};

use crate::Error;
use crate::personas::Personas;

/// How one agent process runs the tasks of one project.
///
/// The control plane does not send repository details in a task yet, so the repository,
/// branch and git strategy of the project come from here (flags of `loom serve agent`).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub project: ProjectId,
    /// Bind to `agents-{project}-{role}` instead of `agents-{project}`; also picks the persona.
    pub role: Option<Role>,
    /// Registry id; `None` = `{project}-{instance}-{n}`, unique per process and run.
    pub agent_id: Option<AgentId>,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Workspaces live in `work_root/<project>/{repo,worktrees/<bead>}`. Absolute: git runs in
    /// several directories below it, so a relative root would mean a different place to each.
    pub work_root: PathBuf,
    /// The project's repository: a URL, a `file://` URL or an absolute local path. Empty = no
    /// workspace (only `noop` tasks can run).
    pub git_repo: String,
    pub branch: String,
    pub git_strategy: GitStrategy,
    /// Executor of tasks whose `metadata.executor` is empty.
    pub default_executor: ExecutorKind,
    /// Registry heartbeat period (the registry TTL is 30 s).
    pub heartbeat_interval: Duration,
    /// Period of `task.progress` results, which extend the bead's lease.
    pub progress_interval: Duration,
    /// On shutdown, how long running tasks may finish before they are handed back (nak).
    pub shutdown_grace: Duration,
    /// Total wall-clock time of one task, executor included.
    pub task_timeout: Duration,
    /// Limits of every command an executor runs.
    pub command: CommandLimits,
    /// How commands are isolated from the agent (bubblewrap unless opted out).
    pub sandbox: SandboxConfig,
    /// What a bead's work may change before it is pushed.
    pub push_checks: PushChecks,
    /// The personas the LLM executor plays (the bead's `role`, else the agent's, else
    /// `engineer`); default: the built-in ones ([`Personas::load`] adds a directory's).
    pub personas: Personas,
    pub llm: LlmConfig,
    /// Resolves LLM providers by connector (`crate::endpoints`); `None` = always `llm`.
    pub llm_endpoints: Option<std::sync::Arc<dyn crate::endpoints::LlmEndpoints>>,
    /// The provider of a bead whose project's context names none (`llm_provider`); `None` =
    /// such beads use `llm`.
    pub llm_provider: Option<String>,
    /// Checks that a dispatch is still current before a task starts and before its work is
    /// pushed, so two agents never both land work for one bead. `None` = no check.
    pub fence: Option<std::sync::Arc<dyn crate::Fence>>,
    /// Where the agent reports whether it is ready (`/readyz` of
    /// [`loom_telemetry::serve_probes`]): checks `bus` (registered, heartbeats go through) and
    /// `fence` (its last question was answered). `None` = not reported.
    pub readiness: Option<loom_telemetry::Readiness>,
}

impl AgentConfig {
    /// A configuration with the defaults of DESIGN.md (heartbeat 10 s, progress 10 s, one task
    /// at a time, `direct` pushes to `main`, shell executor).
    pub fn new(project: ProjectId, work_root: impl Into<PathBuf>, git_repo: impl Into<String>) -> AgentConfig {
        AgentConfig {
            project,
            role: None,
            agent_id: None,
            concurrency: 1,
            work_root: work_root.into(),
            git_repo: git_repo.into(),
            branch: "main".to_owned(),
            git_strategy: GitStrategy::Direct,
            default_executor: ExecutorKind::Shell,
            heartbeat_interval: Duration::from_secs(10),
            progress_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            task_timeout: Duration::from_secs(3600),
            command: CommandLimits::default(),
            sandbox: SandboxConfig::default(),
            push_checks: PushChecks::default(),
            personas: Personas::builtin(),
            llm: LlmConfig::default(),
            llm_endpoints: None,
            llm_provider: None,
            fence: None,
            readiness: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if self.concurrency == 0 || self.concurrency > 1024 {
            return bad("concurrency must be 1..=1024");
        }
        if self.heartbeat_interval.is_zero() || self.progress_interval.is_zero() {
            return bad("heartbeat and progress intervals must be positive");
        }
        if self.branch.is_empty() || self.branch.starts_with('-') || self.branch.contains("..") {
            return bad("branch must be a plain branch name");
        }
        if !self.work_root.is_absolute() {
            return Err(Error::Config(format!("work_root must be an absolute path, not {}", self.work_root.display())));
        }
        if self.git_repo.starts_with('-') {
            return bad("git_repo must not start with '-'");
        }
        if is_relative_local_path(&self.git_repo) {
            return Err(Error::Config(format!(
                "git_repo {:?} is a relative path: give a URL or an absolute path",
                self.git_repo
            )));
        }
        if self.command.output_cap < 1024 {
            return bad("command output cap must be at least 1 KiB");
        }
        if self.command.timeout.is_zero() {
            return bad("command timeout must be positive");
        }
        let sandbox_paths = self.sandbox.hidden.iter().chain(&self.sandbox.writable);
        if let Some(relative) = sandbox_paths.into_iter().find(|p| !p.is_absolute()) {
            return Err(Error::Config(format!("sandbox path {} must be absolute", relative.display())));
        }
        if let Some(bad_glob) = self.push_checks.protected_paths.iter().find(|g| g.trim().is_empty()) {
            return Err(Error::Config(format!("protected path {bad_glob:?} is empty")));
        }
        Ok(())
    }
}

/// Whether git would take `repo` as a path relative to the directory it runs in: not a URL
/// (`scheme://…`), not scp-like (`[user@]host:path`, a colon before any slash), not absolute.
pub fn is_relative_local_path(repo: &str) -> bool {
    if repo.is_empty() || repo.contains("://") || Path::new(repo).is_absolute() {
        return false;
    }
    match (repo.find(':'), repo.find('/')) {
        (Some(colon), Some(slash)) => colon > slash,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Which executor runs a task (`metadata.executor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// The bead's `command` (or the project's `build`/`test`) with `sh -c` in the worktree.
    Shell,
    /// The LLM action loop.
    Llm,
    /// Succeeds, touching nothing (benchmarks); after `noop_ms` of the context, if set.
    Noop,
}

impl ExecutorKind {
    /// Parses `shell`, `llm` or `noop`.
    pub fn parse(s: &str) -> Result<ExecutorKind, Error> {
        match s {
            "shell" => Ok(ExecutorKind::Shell),
            "llm" => Ok(ExecutorKind::Llm),
            "noop" => Ok(ExecutorKind::Noop),
            other => Err(Error::Config(format!("unknown executor {other:?} (want shell, llm or noop)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Shell => "shell",
            ExecutorKind::Llm => "llm",
            ExecutorKind::Noop => "noop",
        }
    }
}

/// Limits of a sandboxed command.
#[derive(Clone, Copy, Debug)]
pub struct CommandLimits {
    /// Killed (with its whole process group) after this long.
    pub timeout: Duration,
    /// Bytes of output kept (stdout and stderr together); the middle of longer output is cut.
    pub output_cap: usize,
}

impl Default for CommandLimits {
    fn default() -> Self {
        CommandLimits { timeout: Duration::from_secs(600), output_cap: 64 * 1024 }
    }
}

/// Whether commands run in a bubblewrap sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxMode {
    /// `bwrap`: read-only root, the worktree writable, private `/tmp`, own pid/ipc/uts (and,
    /// unless the project allows it, network) namespaces, Loom's state hidden, resource limits.
    Bubblewrap,
    /// No sandbox (machines without user namespaces): commands run as the agent's user with a
    /// scrubbed environment, a process-group kill at the timeout and an output cap only. The
    /// agent warns about it when it starts.
    None,
}

impl SandboxMode {
    /// Parses `bubblewrap` (or `bwrap`) and `none`.
    pub fn parse(s: &str) -> Result<SandboxMode, Error> {
        match s {
            "bubblewrap" | "bwrap" => Ok(SandboxMode::Bubblewrap),
            "none" => Ok(SandboxMode::None),
            other => Err(Error::Config(format!("unknown sandbox {other:?} (want bubblewrap or none)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Bubblewrap => "bubblewrap",
            SandboxMode::None => "none",
        }
    }
}

/// The sandbox commands run in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// The `bwrap` program; a bare name is looked up in `PATH`.
    pub bwrap: PathBuf,
    /// Absolute paths hidden from commands besides the agent's `work_root` (which is always
    /// hidden but for the bead's worktree): the binary adds its data directory (the SQLite file),
    /// its configuration file and key files. A directory shows empty, a file empty.
    pub hidden: Vec<PathBuf>,
    /// Absolute paths bound read-write besides the worktree (a shared build cache, say); a
    /// missing one is left out. Whatever is there, every bead's command can change.
    pub writable: Vec<PathBuf>,
    /// Per-process limits inside the sandbox (`prlimit`); 0 = no limit.
    pub limits: ResourceLimits,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mode: SandboxMode::Bubblewrap,
            bwrap: PathBuf::from("bwrap"),
            hidden: Vec::new(),
            writable: Vec::new(),
            limits: ResourceLimits::default(),
        }
    }
}

/// Resource limits of each process a sandboxed command starts (`setrlimit` through
/// `prlimit`, soft = hard, so the command cannot raise them). 0 = unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceLimits {
    /// CPU seconds per process (`RLIMIT_CPU`; SIGXCPU/SIGKILL beyond).
    pub cpu_secs: u64,
    /// Address space per process in bytes (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Processes of the sandbox's user (`RLIMIT_NPROC`). The kernel does not apply it to
    /// root, so it holds only for an agent that does not run as root.
    pub processes: u64,
    /// Largest file a process may write, in bytes (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits { cpu_secs: 3600, memory_bytes: 16 << 30, processes: 4096, file_size_bytes: 1 << 30 }
    }
}

/// Checks of a bead's commits before they are pushed; a violation fails the task with the
/// reason and pushes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushChecks {
    /// Globs (`*` within a path segment, `**` across segments, `?`) of paths a bead may not
    /// change. The default protects what runs with the repository's CI secrets or changes
    /// where code comes from: CI workflow definitions and `.gitmodules`.
    pub protected_paths: Vec<String>,
    /// Largest diff (`git diff --binary` from the bead's start to its last commit) in bytes;
    /// 0 = no limit.
    pub max_diff_bytes: u64,
}

impl PushChecks {
    /// The default protected paths.
    pub const DEFAULT_PROTECTED: &'static [&'static str] =
        &[".github/workflows/**", ".gitlab-ci.yml", ".circleci/**", ".gitmodules"];
}

impl Default for PushChecks {
    fn default() -> Self {
        PushChecks {
            protected_paths: Self::DEFAULT_PROTECTED.iter().map(|s| (*s).to_owned()).collect(),
            max_diff_bytes: 10 << 20,
        }
    }
}

/// An OpenAI-compatible chat completions endpoint and the action loop's limits.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// `http://host:port` (with or without a trailing `/v1`).
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    pub model: String,
    /// Model replies per task.
    pub max_iterations: u32,
    /// Consecutive replies that are not a valid action before the task fails.
    pub max_parse_failures: u32,
    /// The same action this many times in a row fails the task (no progress).
    pub max_repeats: u32,
    /// One HTTP request, the whole reply included.
    pub request_timeout: Duration,
    /// Establishing the connection to the endpoint.
    pub connect_timeout: Duration,
    /// `max_tokens` of each request (tokens of one reply); `None` = the endpoint's default.
    pub max_tokens: Option<u32>,
    /// How the actions reach the model: native `tools`, the JSON-in-text protocol, or `auto`.
    pub tool_mode: ToolMode,
    /// Retries of one request on 429, 5xx, timeouts and connection failures.
    pub max_retries: u32,
    /// The first backoff (doubled on each retry) when the server sends no `Retry-After`.
    pub retry_base: Duration,
    /// The longest wait before a retry; a `Retry-After` asking for more fails the request.
    pub retry_max_wait: Duration,
    /// The model's context window in tokens: past 75 % of it (estimated as the request's
    /// characters / 4) older action results are condensed to one line each.
    pub context_window_tokens: u32,
    /// Per model name (as configured or as the server reports it): what its tokens cost, for
    /// the cost of each attempt. A model without a price costs 0.
    pub prices: std::collections::BTreeMap<String, Price>,
}

/// What a model's tokens cost, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub prompt_per_mtok: f64,
    #[serde(default)]
    pub completion_per_mtok: f64,
}

impl Price {
    /// The cost of `prompt` and `completion` tokens.
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.prompt_per_mtok + completion as f64 * self.completion_per_mtok) / 1e6
    }
}

/// How the action loop offers its actions to the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToolMode {
    /// Native tools until the endpoint rejects a request carrying them, then text (remembered).
    #[default]
    Auto,
    /// OpenAI `tools` / `tool_calls` only; an endpoint refusing them fails the task.
    Tools,
    /// One JSON action inside the text of each reply.
    Text,
}

impl ToolMode {
    /// Parses `auto`, `tools` or `text`.
    pub fn parse(s: &str) -> Result<ToolMode, Error> {
        match s {
            "auto" => Ok(ToolMode::Auto),
            "tools" => Ok(ToolMode::Tools),
            "text" => Ok(ToolMode::Text),
            other => Err(Error::Config(format!("unknown tool mode {other:?} (want auto, tools or text)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ToolMode::Auto => "auto",
            ToolMode::Tools => "tools",
            ToolMode::Text => "text",
        }
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            base_url: "http://127.0.0.1:8000".to_owned(),
            api_key: None,
            model: "default".to_owned(),
            max_iterations: 50,
            max_parse_failures: 3,
            max_repeats: 3,
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_tokens: Some(4096),
            tool_mode: ToolMode::Auto,
            max_retries: 3,
            retry_base: Duration::from_millis(500),
            retry_max_wait: Duration::from_secs(60),
            context_window_tokens: 32768,
            prices: std::collections::BTreeMap::new(),
        }
    }
}

/// A bearer key. Its `Debug` is redacted, and it is sent only in the `Authorization` header:
/// never in a prompt, a log line, a result or a command's environment.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_redacted_in_debug() {
        let mut config = AgentConfig::new(ProjectId::parse("p").unwrap(), "/tmp/w", "/tmp/r");
        config.llm.api_key = Some(ApiKey::new("sk-very-secret"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn validates() {
        let mut config = AgentConfig::new(ProjectId::parse("p").unwrap(), "/tmp/w", "/tmp/r");
        assert!(config.validate().is_ok());
        config.concurrency = 0;
        assert!(config.validate().is_err());
        config.concurrency = 2;
        config.branch = "--upload-pack=x".into();
        assert!(config.validate().is_err());
        config.branch = "main".into();
        config.work_root = ".loom/work".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("work_root must be an absolute path, not .loom/work"), "{err}");
        config.work_root = "/tmp/w".into();
        config.git_repo = "../repo".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("\"../repo\" is a relative path"), "{err}");
        assert_eq!(ExecutorKind::parse("llm").unwrap(), ExecutorKind::Llm);
        assert!(ExecutorKind::parse("python").is_err());
    }

    #[test]
    fn relative_local_paths_are_told_from_urls_and_absolute_paths() {
        for relative in ["repo", "./repo", "../up/repo", "dir/with:colon", ".loom/x"] {
            assert!(is_relative_local_path(relative), "{relative}");
        }
        for not in ["", "/srv/repo.git", "file:///srv/repo", "https://h/r.git", "git@github.com:o/r.git", "host:r"] {
            assert!(!is_relative_local_path(not), "{not}");
        }
    }
}
