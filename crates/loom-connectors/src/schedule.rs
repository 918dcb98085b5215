//! Background checks: each enabled connector is checked every `check_interval`, jittered ±20 %
//! so many connectors do not fire together; checks run concurrently, at most one per connector
//! at a time. The list is re-read every few seconds and at once when a connector changes; while
//! the store is down the last list is used.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Connectors;
use crate::model::{Mode, Spec};

const REFRESH: Duration = Duration::from_secs(5);

struct Entry {
    spec: Arc<Spec>,
    version: i64,
    due: Instant,
}

pub(crate) async fn run(connectors: Connectors, shutdown: CancellationToken) {
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut refresh_at = Instant::now();
    loop {
        let now = Instant::now();
        if now >= refresh_at {
            refresh(&connectors, &mut entries, now).await;
            refresh_at = now + REFRESH;
        }
        for entry in entries.values_mut().filter(|e| e.due <= now) {
            entry.due = now + jittered(entry.spec.check_interval);
            if !running.lock().expect("not poisoned").insert(entry.spec.id.clone()) {
                continue;
            }
            let (connectors, spec, running) = (connectors.clone(), entry.spec.clone(), running.clone());
            tokio::spawn(async move {
                connectors.check_spec(&spec).await;
                running.lock().expect("not poisoned").remove(&spec.id);
            });
        }
        let next = entries.values().map(|e| e.due).min().unwrap_or(refresh_at).min(refresh_at);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
            () = connectors.changed().notified() => refresh_at = Instant::now(),
        }
    }
}

/// Re-reads the connectors: a new or changed one is due soon (within a second, jittered), a
/// removed or disabled one is dropped (and its health forgotten).
async fn refresh(connectors: &Connectors, entries: &mut HashMap<String, Entry>, now: Instant) {
    let specs = match connectors.specs().await {
        Ok(specs) => specs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list connectors: checking the last known ones");
            return;
        }
    };
    let mut seen = HashSet::new();
    for (spec, version) in specs.into_iter().filter(|(s, _)| s.mode == Mode::Enabled) {
        seen.insert(spec.id.clone());
        match entries.get_mut(&spec.id) {
            Some(e) if e.version == version => {}
            _ => {
                let first = Duration::from_secs(1).min(spec.check_interval).mul_f64(rand::rng().random_range(0.0..1.0));
                let id = spec.id.clone();
                entries.insert(id, Entry { spec: Arc::new(spec), version, due: now + first });
            }
        }
    }
    // One removed or disabled through another replica: its last health goes too, so a connector
    // registered again under its id starts from `unknown` here as well.
    for gone in entries.keys().filter(|id| !seen.contains(*id)) {
        connectors.forget(gone);
    }
    entries.retain(|id, _| seen.contains(id));
}

/// `interval` ± 20 %.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.8..1.2))
}
