//! The project agent: it takes a project's tasks from the bus, does the work in a git worktree
//! of the project's repository — a shell step, an LLM action loop, or nothing (`noop`) — and
//! reports the result. `loom serve agent` runs [`run`]; `loom bench agent` runs [`bench::run`].
//!
//! Invariants:
//! - A task is acked only after its result (`task.completed` / `task.failed`) is stored by the
//!   bus. A crash before that leaves the delivery unsettled, so it is redelivered — to this or
//!   another instance — and never lost. Results are kept in the journal (on disk) until their
//!   delivery is settled: a redelivery, or a restart, republishes a kept result instead of
//!   redoing the work, and an outage of NATS is waited out.
//! - A dispatch is run at most once: the fence must say `Run` to the start report (a dispatch
//!   another agent started is superseded, never run again), and the journal refuses a dispatch
//!   this host started before. The agent refuses to start without a working fence, and every
//!   fence question fails closed (retried, then the task is handed back).
//! - While a task runs its delivery gets in-progress acks and the control plane gets
//!   `task.progress` every `progress_interval`, so neither the bus nor the lease sweeper takes
//!   it away from a live agent.
//! - At most `concurrency` tasks run at once; the subscription holds one more delivery so a
//!   `task.cancelled` is seen while every slot is busy, and never pulls more than it holds.
//! - On shutdown no new task starts; running tasks get `shutdown_grace`, then are handed back
//!   through the fence (the bead is dispatched again at once, the attempt not counted) with no
//!   result; the instance deregisters.
//! - `task.completed` means the work is in the remote: the executor's changes are committed and
//!   pushed (`direct`: to the branch, rebasing on rejection; `branch-pr`: to `bead/<id>`) first.
//! - File actions never leave the bead's worktree nor touch `.git`, and open only regular files
//!   (`sandbox`); commands run in a bubblewrap sandbox (`sandbox::isolation`: no Loom secret in
//!   their environment, `/proc` or file system, no network unless the project allows it, the
//!   worktree the only writable place besides a private `/tmp`) with a scrubbed environment,
//!   resource limits, a timeout that kills everything they started, and an output cap; the agent
//!   refuses to start without the sandbox unless `sandbox = none`, which it logs as a warning.
//!   Every command is audited (`executor::runner`).
//! - No git hook or fsmonitor program runs under the agent, whatever a command or a repository
//!   planted (`workspace`); nothing is pushed that changes a protected path or is over the diff
//!   limit.
//! - The LLM API key is sent only in the `Authorization` header.

mod agent;
pub mod bench;
mod config;
pub mod endpoints;
mod error;
mod executor;
mod fence;
mod journal;
mod llm;
mod personas;
mod redact;
pub mod sandbox;
mod workspace;

pub use agent::run;
pub use config::{
    AgentConfig, ApiKey, CommandLimits, ExecutorKind, LlmConfig, Price, PushChecks, ResourceLimits, SandboxConfig,
    SandboxMode, ToolMode, is_relative_local_path,
};
pub use error::Error;
pub use fence::{ApiFence, Fence, StartAnswer};
pub use personas::{DEFAULT_PERSONA, PersonaSource, Personas};
