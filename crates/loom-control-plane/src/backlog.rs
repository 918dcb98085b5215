//! `loom_outbox_backlog`: the unsent outbox rows, exactly. A relay pass reads at most one batch;
//! when it got fewer, that is the whole outbox (it holds only unsent rows). Only a full batch
//! asks the store to count, at most once per [`COUNT_EVERY`] per process: a count reads the
//! backlog itself (PostgreSQL: `count(*)` over the outbox, whose rows are deleted once sent), so
//! its cost grows with the backlog, never with the history, and only while a backlog that large
//! lasts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use loom_store::Store;

/// How often a full batch may be counted.
pub(crate) const COUNT_EVERY: Duration = Duration::from_secs(5);

/// The last count and when it was read (process-wide, like the gauge it feeds).
static COUNTED: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

/// Sets the gauge after a relay pass that took `taken` rows, asking for at most `batch`.
pub(crate) async fn observe(store: &dyn Store, taken: usize, batch: u32) {
    let taken = taken as u64;
    let backlog = if taken < u64::from(batch) {
        *COUNTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        taken
    } else {
        let fresh = COUNTED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .filter(|(at, _)| at.elapsed() < COUNT_EVERY)
            .map(|(_, n)| n);
        match fresh {
            Some(n) => n.max(taken),
            None => match store.outbox_backlog().await {
                Ok(n) => {
                    *COUNTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), n));
                    n.max(taken)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "counting the outbox failed; the backlog gauge shows one batch");
                    taken
                }
            },
        }
    };
    metrics::gauge!("loom_outbox_backlog").set(backlog as f64);
}
