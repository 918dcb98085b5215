//! The fencing check: is this agent's `dispatch_id` still the bead's current one? The store owns
//! the answer; the composition that starts the agent supplies a [`Fence`] backed by the store
//! (in-process) or by the control plane's API.

use loom_domain::{BeadId, DispatchId};

/// Answers whether a dispatch is still current.
#[async_trait::async_trait]
pub trait Fence: Send + Sync + std::fmt::Debug {
    /// `Ok(false)` when the bead has moved on (closed, or dispatched again under another id);
    /// `Err` when the answer cannot be had right now.
    async fn is_current(&self, bead: &BeadId, dispatch: &DispatchId) -> Result<bool, String>;
}

/// Asks `fence` (if any); an unanswerable check is logged and counts as current, since results
/// are fenced by the store anyway and an unreachable API must not stop all work.
pub(crate) async fn still_current(fence: Option<&dyn Fence>, bead: &BeadId, dispatch: &DispatchId) -> bool {
    let Some(fence) = fence else { return true };
    match fence.is_current(bead, dispatch).await {
        Ok(current) => current,
        Err(e) => {
            tracing::warn!(%bead, %dispatch, error = %e, "cannot check whether the dispatch is current; going on");
            true
        }
    }
}
