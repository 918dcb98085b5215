//! Project agents: `loom serve agent` runs one; `loom up` runs one per project that is not
//! archived, and follows the projects as they change (`supervisor`).

mod endpoints;
mod supervisor;

pub use supervisor::supervise;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use loom_agent::{AgentConfig, ApiFence, ExecutorKind, Personas, StartAnswer};
use loom_bus::Role;
use loom_domain::{AgentId, BeadId, DispatchId, GitStrategy, Project, ProjectId};
use loom_store::{DispatchStart, StartOutcome, Store};

use crate::config::Config;
use crate::paths;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The project whose tasks to run.
    #[arg(long)]
    project: String,
    /// Bind to the role's queue (`loom.tasks.{project}.{role}`) and play that persona.
    #[arg(long)]
    role: Option<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    // Where the work lands; by default the project's, asked from the control plane.
    #[command(flatten)]
    git: crate::cli::GitArgs,
    /// Where workspaces live [default: {data_dir}/work].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Executor for tasks that name none: shell, llm or noop.
    #[arg(long, default_value = "shell")]
    executor: String,
    /// OpenAI-compatible endpoint for the llm executor [default: `llm.base_url` of the
    /// configuration]; the key comes from `[llm]` (`$LOOM_LLM_API_KEY` by default).
    #[arg(long)]
    llm_url: Option<String>,
    /// The model [default: `llm.model` of the configuration].
    #[arg(long)]
    llm_model: Option<String>,
    /// Personas directory overriding the built-in personas by name [default: `personas_dir` of
    /// the configuration, `personas`; a missing directory leaves the built-in ones].
    #[arg(long)]
    personas: Option<PathBuf>,
    /// How bead commands run: `bubblewrap` (a sandbox; needs `bwrap`) or `none` (unsandboxed,
    /// for machines without user namespaces; logged as a warning) [default: `agent.sandbox` of
    /// the configuration, `bubblewrap`].
    #[arg(long)]
    sandbox: Option<String>,
    /// Serve `/metrics`, `/healthz` and `/readyz` (plain HTTP) on this address [default:
    /// `agent.metrics_addr` of the configuration; unset = not served].
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Fencing through the store (`loom up`: the agent runs beside it).
#[derive(Debug)]
pub(crate) struct StoreFence {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) lease: Duration,
    pub(crate) max_attempts: u32,
}

#[async_trait::async_trait]
impl loom_agent::Fence for StoreFence {
    async fn check(&self) -> Result<(), String> {
        self.store.last_event_seq().await.map(drop).map_err(|e| e.to_string())
    }

    async fn start(&self, bead: &BeadId, dispatch: &DispatchId, agent: &AgentId) -> Result<StartAnswer, String> {
        let start = DispatchStart {
            bead_id: bead.clone(),
            dispatch_id: dispatch.clone(),
            agent_id: agent.to_string(),
            now: chrono::Utc::now(),
            lease: self.lease,
            max_attempts: self.max_attempts,
        };
        Ok(match self.store.start_dispatch(&start).await.map_err(|e| e.to_string())? {
            StartOutcome::Started(_) => StartAnswer::Run,
            StartOutcome::Stale => StartAnswer::Stale,
            StartOutcome::Superseded(_) => StartAnswer::Superseded,
        })
    }

    async fn is_current(&self, bead: &BeadId, dispatch: &DispatchId) -> Result<bool, String> {
        let b = self.store.get_bead(bead).await.map_err(|e| e.to_string())?;
        Ok(b.dispatch_id.as_ref() == Some(dispatch))
    }

    async fn hand_back(
        &self,
        bead: &BeadId,
        dispatch: &DispatchId,
        agent: &AgentId,
        reason: &str,
    ) -> Result<bool, String> {
        let b = self.store.hand_back(dispatch, agent.as_str(), reason).await.map_err(|e| e.to_string())?;
        Ok(b.is_some_and(|b| &b.id == bead))
    }
}

/// `loom serve agent`.
pub async fn serve(args: AgentArgs, config: &Config) -> anyhow::Result<()> {
    let project = ProjectId::parse(&args.project)?;
    let work_root = match &args.work_dir {
        Some(dir) => paths::absolute(dir).context("--work-dir")?,
        None => config.data_dir.join("work"),
    };
    let mut agent = AgentConfig::new(project.clone(), work_root, "");
    let client = loom_client::Client::new(&config.api_url(), config.api_key.clone());
    agent.fence = Some(Arc::new(ApiFence::new(client.clone(), project.clone())));
    match &args.git.repo {
        Some(repo) => agent.git_repo = paths::repo(repo).context("--repo")?,
        None => {
            let p = client
                .project(project.as_str())
                .await
                .context("looking up the project's repository (or pass --repo)")?;
            agent.git_repo = stored_repo(&p.git_repo);
            agent.branch = p.branch;
            agent.git_strategy = p.git_strategy.parse()?;
        }
    }
    if let Some(b) = args.git.branch {
        agent.branch = b;
    }
    if let Some(s) = args.git.git_strategy {
        agent.git_strategy = s.parse::<GitStrategy>()?;
    }
    agent.role = args.role.as_deref().map(Role::parse).transpose()?;
    agent.concurrency = args.concurrency;
    agent.default_executor = ExecutorKind::parse(&args.executor)?;
    let personas = match &args.personas {
        Some(dir) => paths::absolute(dir).context("--personas")?,
        None => config.personas_dir.clone(),
    };
    agent.personas = crate::personas::load(&personas)?;
    let mut llm = config.llm.clone();
    llm.base_url = args.llm_url.unwrap_or(llm.base_url);
    llm.model = args.llm_model.unwrap_or(llm.model);
    // The flags are checked like the configuration they override.
    llm.validate().context("--llm-url / --llm-model")?;
    agent.llm = llm.agent(config.llm_key.as_ref());
    // Only the remote service: an agent never holds the sealing key.
    let connectors: Option<Arc<dyn loom_connectors::Api>> =
        config.connectors.client()?.map(|c| Arc::new(c) as Arc<dyn loom_connectors::Api>);
    endpoints::configure(&mut agent, config, connectors.as_ref());
    agent.sandbox = config.agent_sandbox();
    if let Some(mode) = &args.sandbox {
        agent.sandbox.mode = loom_agent::SandboxMode::parse(mode).context("--sandbox")?;
    }
    agent.push_checks = config.agent_push_checks();
    // Replies on a prefix of the project's own, which the agent users of `deploy/nats/` may read.
    let mut config = config.clone();
    config.bus.inbox_prefix.get_or_insert_with(|| format!("_INBOX.agent-{project}"));
    let (bus, what) = crate::compose::bus(&config, crate::config::Service::Agent).await?;
    println!("loom: agent for project {project} on {what}");
    let shutdown = crate::compose::shutdown_on_signals();
    let probes = match args.metrics_addr.or(config.agent.metrics_addr) {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for /metrics (set --metrics-addr or agent.metrics_addr)")
            })?;
            println!("loom: metrics and probes at http://{}/metrics (/healthz, /readyz)", listener.local_addr()?);
            let readiness = loom_telemetry::Readiness::new();
            agent.readiness = Some(readiness.clone());
            Some(tokio::spawn(loom_telemetry::serve_probes(listener, readiness, shutdown.clone())))
        }
    };
    let ran = loom_agent::run(agent, bus, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    ran?;
    Ok(())
}

/// A repository as the store has it. `loom project add` stores local paths absolute; one given
/// relative through the API is taken from the directory `loom` was started in.
fn stored_repo(repo: &str) -> String {
    if !loom_agent::is_relative_local_path(repo) {
        return repo.to_owned();
    }
    paths::absolute(Path::new(repo)).map_or_else(|_| repo.to_owned(), |p| p.to_string_lossy().into_owned())
}

/// The agent `loom up` runs for a project: shell executor (a bead's `executor` context picks
/// another), the project's repository, `[llm]` for `llm` beads.
fn agent_for(
    project: &Project,
    config: &Config,
    personas: &Personas,
    store: &Arc<dyn Store>,
    connectors: Option<&Arc<dyn loom_connectors::Api>>,
) -> AgentConfig {
    let mut agent = AgentConfig::new(project.id.clone(), config.data_dir.join("work"), stored_repo(&project.git_repo));
    agent.branch = project.branch.clone();
    agent.git_strategy = project.git_strategy;
    agent.shutdown_grace = Duration::from_secs(10);
    agent.personas = personas.clone();
    agent.llm = config.agent_llm();
    endpoints::configure(&mut agent, config, connectors);
    agent.sandbox = config.agent_sandbox();
    agent.push_checks = config.agent_push_checks();
    agent.fence = Some(Arc::new(StoreFence {
        store: store.clone(),
        lease: Duration::from_secs(config.dispatch.lease_secs),
        max_attempts: config.dispatch.max_attempts,
    }));
    agent
}
