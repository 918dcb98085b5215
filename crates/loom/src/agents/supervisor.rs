//! `loom up`'s agents over time: one agent per project that is not archived, started when the
//! project appears, restarted when its repository, branch or git strategy changes (the agent
//! works in a clone of the old one until then), stopped when the project is archived or deleted.
//! The projects are listed every two seconds; a stopped agent hands its running tasks back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use loom_bus::Bus;
use loom_domain::{GitStrategy, Project, ProjectId, ProjectStatus};
use loom_store::Store;
use tokio_util::sync::CancellationToken;

use super::agent_for;
use crate::config::Config;
use loom_agent::Personas;

/// How often the projects are listed.
const POLL: Duration = Duration::from_secs(2);

/// What an agent was started with that only a restart changes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    git_repo: String,
    branch: String,
    git_strategy: GitStrategy,
}

impl Spec {
    fn of(p: &Project) -> Spec {
        Spec { git_repo: p.git_repo.clone(), branch: p.branch.clone(), git_strategy: p.git_strategy }
    }
}

/// A running agent.
struct Running {
    spec: Spec,
    token: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the agent and waits until it handed its tasks back.
    async fn stop(self) {
        self.token.cancel();
        let _ = self.handle.await;
    }
}

/// Keeps the agents in step with the projects until `shutdown`.
pub async fn supervise(
    config: Config,
    personas: Personas,
    store: Arc<dyn Store>,
    bus: Bus,
    connectors: Option<Arc<dyn loom_connectors::Api>>,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<ProjectId, Running> = HashMap::new();
    loop {
        match store.list_projects().await {
            Ok(projects) => {
                follow(&projects, &mut running, (&config, &personas, connectors.as_ref()), &store, &bus, &shutdown)
                    .await
            }
            Err(e) => tracing::warn!(error = %e, "listing projects for the agents failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    futures::future::join_all(running.into_values().map(Running::stop)).await;
}

/// One step: stops the agents of projects gone or archived and of projects whose settings
/// changed, then starts the missing ones (and any that stopped on an error).
async fn follow(
    projects: &[Project],
    running: &mut HashMap<ProjectId, Running>,
    (config, personas, connectors): (&Config, &Personas, Option<&Arc<dyn loom_connectors::Api>>),
    store: &Arc<dyn Store>,
    bus: &Bus,
    shutdown: &CancellationToken,
) {
    let wanted: HashMap<&ProjectId, &Project> =
        projects.iter().filter(|p| p.status != ProjectStatus::Archived).map(|p| (&p.id, p)).collect();
    let stale: Vec<ProjectId> = running
        .iter()
        .filter(|(id, r)| wanted.get(id).is_none_or(|p| Spec::of(p) != r.spec))
        .map(|(id, _)| id.clone())
        .collect();
    for id in stale {
        let agent = running.remove(&id).expect("listed above");
        match wanted.get(&id) {
            Some(_) => {
                tracing::info!(project = %id, "the project's repository, branch or git strategy changed; restarting its agent")
            }
            None => tracing::info!(project = %id, "the project was archived or deleted; stopping its agent"),
        }
        agent.stop().await;
    }
    for p in wanted.values() {
        if running.get(&p.id).is_some_and(|r| !r.handle.is_finished()) {
            continue;
        }
        let token = shutdown.child_token();
        let (agent, bus, t, id) =
            (agent_for(p, config, personas, store, connectors), bus.clone(), token.clone(), p.id.clone());
        tracing::info!(project = %id, repo = %p.git_repo, branch = %p.branch, "starting an agent for the project");
        let handle = tokio::spawn(async move {
            if let Err(e) = loom_agent::run(agent, bus, t).await {
                tracing::error!(project = %id, error = %e, "agent stopped; it is restarted shortly");
            }
        });
        running.insert(p.id.clone(), Running { spec: Spec::of(p), token, handle });
    }
}
