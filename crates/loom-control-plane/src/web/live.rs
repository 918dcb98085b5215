//! `/ui/live`: the page's one SSE connection. It reads the event log like `/api/v1/events/stream`
//! (the same [`Reader`]) but sends only "this changed" — an SSE event named `changed` whose data
//! says how many events, which projects and (up to [`MAX_BEADS`]) which beads — and coalesces:
//! whatever arrives within [`COALESCE`] of the previous message goes into the next one, so a
//! burst of a thousand bead changes costs a page one or two re-renders, not a thousand.
//! The SSE id is a resume token (`Last-Event-ID` or `?after=`), as on the API's stream.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use loom_domain::ProjectId;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::Web;
use super::session::Session;
use crate::Error;
use crate::api::events::Reader;

/// The least time between two messages of one stream.
pub(crate) const COALESCE: Duration = Duration::from_millis(300);
/// Bead ids named in one message at most (`more` says there were others).
pub(crate) const MAX_BEADS: usize = 100;
/// Events one message gathers at most before it goes out anyway.
const MAX_EVENTS: u64 = 50_000;

/// What changed since the last message.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Burst {
    pub events: u64,
    pub projects: BTreeSet<String>,
    pub beads: BTreeSet<String>,
    pub more: bool,
}

impl Burst {
    pub(crate) fn add(&mut self, e: &loom_domain::Event) {
        self.events += 1;
        if let Some(p) = &e.project_id {
            self.projects.insert(p.to_string());
        }
        if e.kind.as_str().starts_with("bead.") && !self.beads.contains(&e.entity_id) {
            if self.beads.len() < MAX_BEADS {
                self.beads.insert(e.entity_id.clone());
            } else {
                self.more = true;
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events == 0
    }

    fn message(&self, token: i64) -> Event {
        let data = json!({ "events": self.events, "projects": self.projects, "beads": self.beads, "more": self.more });
        Event::default().event("changed").id(token.to_string()).data(data.to_string())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiveQuery {
    project: Option<String>,
    after: Option<i64>,
}

pub(crate) async fn stream(
    Extension(web): Extension<Arc<Web>>,
    _session: Session,
    headers: HeaderMap,
    crate::api::ApiQuery(q): crate::api::ApiQuery<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    let project = q.project.as_deref().filter(|p| !p.is_empty()).map(ProjectId::parse).transpose()?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let after = match resume.or(q.after) {
        Some(c) => c,
        None => web.shared.store.last_event_seq().await?,
    };
    let reader = Reader::new(project, after);
    let wake = web.shared.events_wake.subscribe();
    let last_sent = Instant::now() - COALESCE;
    let state = (web, reader, wake, last_sent);
    let stream = futures::stream::unfold(state, |(web, mut reader, mut wake, last_sent)| async move {
        let shared = web.shared.clone();
        let mut burst = Burst::default();
        loop {
            // Drain what is visible now into the burst.
            while burst.events < MAX_EVENTS {
                match reader.read(&*shared.store).await {
                    Ok(batch) if !batch.is_empty() => batch.iter().for_each(|e| burst.add(e)),
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "web live stream: reading events failed; retrying");
                        break;
                    }
                }
            }
            if !burst.is_empty() {
                let due = last_sent + COALESCE;
                if Instant::now() >= due || burst.events >= MAX_EVENTS {
                    let message = burst.message(reader.token());
                    return Some((Ok(message), (web, reader, wake, Instant::now())));
                }
                // Too soon after the last message: what comes meanwhile joins this one.
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep_until(due) => {}
                }
                continue;
            }
            // Woken by this instance's changes; the timeout covers changes made by others.
            tokio::select! {
                _ = shared.shutdown.cancelled() => return None,
                _ = tokio::time::timeout(Duration::from_millis(500), wake.changed()) => {}
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_domain::{EventKind, ProjectId};

    fn event(seq: i64, bead: &str) -> loom_domain::Event {
        loom_domain::Event {
            seq,
            id: format!("e{seq}"),
            kind: EventKind::BeadCreated,
            source: "test".into(),
            project_id: Some(ProjectId::parse("demo").unwrap()),
            entity_id: bead.into(),
            action: "created".into(),
            description: String::new(),
            data: serde_json::Value::Null,
            correlation_id: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_burst_is_one_bounded_message() {
        let mut burst = Burst::default();
        for n in 0..1000 {
            burst.add(&event(n, &format!("dm-{n}")));
        }
        burst.add(&event(1000, "dm-1"));
        assert_eq!(burst.events, 1001);
        assert_eq!(burst.beads.len(), MAX_BEADS);
        assert!(burst.more);
        assert_eq!(burst.projects.iter().collect::<Vec<_>>(), ["demo"]);
    }
}
