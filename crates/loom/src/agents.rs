//! Project agents: `loom serve agent` runs one; `loom up` runs one per active project and starts
//! one for each project added while it runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use loom_agent::{AgentConfig, ApiFence, ExecutorKind, StartAnswer};
use loom_bus::{Bus, Role};
use loom_domain::{AgentId, BeadId, DispatchId, GitStrategy, Project, ProjectId, ProjectStatus};
use loom_store::{DispatchStart, StartOutcome, Store};
use tokio_util::sync::CancellationToken;

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
    /// The project's repository (default: asked from the control plane's API); a relative path
    /// is taken from the current directory.
    #[arg(long)]
    repo: Option<String>,
    #[arg(long)]
    branch: Option<String>,
    /// `direct` or `branch-pr` (default: the project's).
    #[arg(long)]
    git_strategy: Option<String>,
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
    /// Personas directory [default: `personas_dir` of the configuration, `personas`].
    #[arg(long)]
    personas: Option<PathBuf>,
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
    match &args.repo {
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
    if let Some(b) = args.branch {
        agent.branch = b;
    }
    if let Some(s) = args.git_strategy {
        agent.git_strategy = s.parse::<GitStrategy>()?;
    }
    agent.role = args.role.as_deref().map(Role::parse).transpose()?;
    agent.concurrency = args.concurrency;
    agent.default_executor = ExecutorKind::parse(&args.executor)?;
    let personas = match &args.personas {
        Some(dir) => paths::absolute(dir).context("--personas")?,
        None => config.personas_dir.clone(),
    };
    agent.personas_dir = personas.is_dir().then_some(personas);
    let mut llm = config.llm.clone();
    llm.base_url = args.llm_url.unwrap_or(llm.base_url);
    llm.model = args.llm_model.unwrap_or(llm.model);
    // The flags are checked like the configuration they override.
    llm.validate().context("--llm-url / --llm-model")?;
    agent.llm = llm.agent(config.llm_key.as_ref());
    let (bus, what) = crate::compose::bus(config).await?;
    println!("loom: agent for project {project} on {what}");
    loom_agent::run(agent, bus, crate::compose::shutdown_on_signals()).await?;
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
fn agent_for(project: &Project, config: &Config, store: &Arc<dyn Store>) -> AgentConfig {
    let mut agent = AgentConfig::new(project.id.clone(), config.data_dir.join("work"), stored_repo(&project.git_repo));
    agent.branch = project.branch.clone();
    agent.git_strategy = project.git_strategy;
    agent.shutdown_grace = Duration::from_secs(10);
    let personas = config.personas_dir.clone();
    agent.personas_dir = personas.is_dir().then_some(personas);
    agent.llm = config.agent_llm();
    agent.fence = Some(Arc::new(StoreFence {
        store: store.clone(),
        lease: Duration::from_secs(config.dispatch.lease_secs),
        max_attempts: config.dispatch.max_attempts,
    }));
    agent
}

/// Keeps one agent running per active project until `shutdown`; checks for new projects every
/// two seconds.
pub async fn supervise(config: Config, store: Arc<dyn Store>, bus: Bus, shutdown: CancellationToken) {
    let mut running: HashMap<ProjectId, (CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        match store.list_projects().await {
            Ok(projects) => {
                for p in projects.iter().filter(|p| p.status != ProjectStatus::Archived) {
                    let alive = running.get(&p.id).is_some_and(|(_, h)| !h.is_finished());
                    if alive {
                        continue;
                    }
                    let token = shutdown.child_token();
                    let (agent, bus, t, id) = (agent_for(p, &config, &store), bus.clone(), token.clone(), p.id.clone());
                    tracing::info!(project = %id, "starting an agent for the project");
                    let handle = tokio::spawn(async move {
                        if let Err(e) = loom_agent::run(agent, bus, t).await {
                            tracing::error!(project = %id, error = %e, "agent stopped; it is restarted shortly");
                        }
                    });
                    running.insert(p.id.clone(), (token, handle));
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing projects for the agents failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    for (_, (token, handle)) in running {
        token.cancel();
        let _ = handle.await;
    }
}
