//! The fencing checks: may this agent start a dispatch, is it still current before its work is
//! pushed, and giving a dispatch back. The store owns the answers; the composition that starts
//! the agent supplies a [`Fence`] backed by the store (in-process) or by the control plane's API.
//!
//! Every check fails closed: an answer that cannot be had is retried with backoff, and if it
//! still cannot be had the task is handed back — never run or pushed on a guess.

use std::time::Duration;

use loom_domain::{AgentId, BeadId, DispatchId, ProjectId};

/// What the store said to a start report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAnswer {
    /// Run it: the bead is running under this dispatch, held by this agent.
    Run,
    /// The dispatch is not the bead's current one: do not run it.
    Stale,
    /// Another agent started this dispatch and it came back: it is never run twice (the bead is
    /// dispatched again under a new id, or blocked).
    Superseded,
}

/// Answers the fencing questions of one agent.
#[async_trait::async_trait]
pub trait Fence: Send + Sync + std::fmt::Debug {
    /// Whether the fence can be asked at all (called once when the agent starts, which refuses
    /// to run without a working fence).
    async fn check(&self) -> Result<(), String>;
    /// The agent starts `dispatch`: queued becomes running, held by `agent`.
    async fn start(&self, bead: &BeadId, dispatch: &DispatchId, agent: &AgentId) -> Result<StartAnswer, String>;
    /// `Ok(false)` when the bead has moved on (closed, or dispatched again under another id).
    async fn is_current(&self, bead: &BeadId, dispatch: &DispatchId) -> Result<bool, String>;
    /// Gives `dispatch` back unfinished; the attempt is not counted and the bead is dispatched
    /// again at once. `Ok(false)` when nothing changed.
    async fn hand_back(
        &self,
        bead: &BeadId,
        dispatch: &DispatchId,
        agent: &AgentId,
        reason: &str,
    ) -> Result<bool, String>;
}

/// How often a fence question is asked before the agent gives up on it (about 30 s in all).
const ASKS: u32 = 6;

/// Asks `question` until it is answered, backing off 0.5 s, 1 s, 2 s, …; the last error if
/// it never is.
pub(crate) async fn ask<T, F, Fut>(what: &str, bead: &BeadId, mut question: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut delay = Duration::from_millis(500);
    let mut last = String::new();
    for attempt in 1..=ASKS {
        match question().await {
            Ok(answer) => return Ok(answer),
            Err(e) => {
                tracing::warn!(%bead, attempt, error = %e, "cannot ask the fence {what}; retrying");
                last = e;
            }
        }
        if attempt < ASKS {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
    Err(last)
}

/// Whether the dispatch is current before its work is pushed: `Some(answer)`, or `None` when the
/// fence could not be asked (the caller hands the task back rather than push on a guess).
pub(crate) async fn current_before_push(
    fence: Option<&dyn Fence>,
    bead: &BeadId,
    dispatch: &DispatchId,
) -> Option<bool> {
    let Some(fence) = fence else { return Some(true) };
    ask("before a push", bead, || fence.is_current(bead, dispatch)).await.ok()
}

/// Fencing through the control plane's API (`loom serve agent`): `POST /beads/{id}/start`,
/// `GET /beads/{id}`, `POST /beads/{id}/hand-back`.
#[derive(Debug)]
pub struct ApiFence {
    client: loom_client::Client,
    project: ProjectId,
}

impl ApiFence {
    pub fn new(client: loom_client::Client, project: ProjectId) -> ApiFence {
        ApiFence { client, project }
    }
}

#[async_trait::async_trait]
impl Fence for ApiFence {
    async fn check(&self) -> Result<(), String> {
        self.client.project(self.project.as_str()).await.map(drop).map_err(|e| e.to_string())
    }

    async fn start(&self, bead: &BeadId, dispatch: &DispatchId, agent: &AgentId) -> Result<StartAnswer, String> {
        let answer = self.client.start_dispatch(bead.as_str(), dispatch.as_str(), agent.as_str()).await;
        match answer.map_err(|e| e.to_string())?.outcome.as_str() {
            "started" => Ok(StartAnswer::Run),
            "stale" => Ok(StartAnswer::Stale),
            "superseded" => Ok(StartAnswer::Superseded),
            other => Err(format!("the control plane answered an unknown start outcome {other:?}")),
        }
    }

    async fn is_current(&self, bead: &BeadId, dispatch: &DispatchId) -> Result<bool, String> {
        let b = self.client.bead(bead.as_str()).await.map_err(|e| e.to_string())?;
        Ok(b.dispatch_id.as_deref() == Some(dispatch.as_str()))
    }

    async fn hand_back(
        &self,
        bead: &BeadId,
        dispatch: &DispatchId,
        agent: &AgentId,
        reason: &str,
    ) -> Result<bool, String> {
        let answer = self.client.hand_back(bead.as_str(), dispatch.as_str(), agent.as_str(), reason).await;
        Ok(answer.map_err(|e| e.to_string())?.handed_back)
    }
}
