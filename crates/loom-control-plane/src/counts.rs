//! Bead counts by status for `/status` and `/metrics`, read from the store at most once per
//! [`TTL`]: counting is a pass over every bead of the store, so scrapes and status calls share
//! one recent answer instead of each scanning 100 k beads.

use std::time::{Duration, Instant};

use loom_domain::Status;
use loom_store::Store;

/// How old the counts `/status` and `/metrics` show may be.
pub(crate) const TTL: Duration = Duration::from_secs(15);

/// Bead counts by status.
type Counts = Vec<(Status, u64)>;

/// The last counts read and when.
#[derive(Debug, Default)]
pub(crate) struct CountsCache(tokio::sync::Mutex<Option<(Instant, Counts)>>);

impl CountsCache {
    /// Counts at most [`TTL`] old. Callers that arrive while a read is under way wait for it
    /// (an async lock), so a burst of scrapes costs one count.
    pub(crate) async fn get(&self, store: &dyn Store) -> loom_store::Result<Counts> {
        let mut cached = self.0.lock().await;
        if let Some((at, counts)) = &*cached
            && at.elapsed() < TTL
        {
            return Ok(counts.clone());
        }
        let counts = store.bead_counts(None).await?;
        *cached = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }
}
