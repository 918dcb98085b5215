//! `/events` (paged by cursor) and `/events/stream` (SSE with `Last-Event-ID` resume).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use loom_api::EventDto;
use serde::Deserialize;

use super::ApiQuery;
use crate::{Error, Shared};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
    /// Only events of this project.
    project_id: Option<String>,
}

pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<EventDto>>, Error> {
    let events = s.store.list_events(q.after.unwrap_or(0), q.limit.unwrap_or(100)).await?;
    Ok(Json(
        events
            .iter()
            .filter(|e| q.project_id.as_ref().is_none_or(|p| e.project_id.as_ref().is_some_and(|x| x.as_str() == p)))
            .map(EventDto::from)
            .collect(),
    ))
}

/// Streams events after `Last-Event-ID` (or `?after=`), else from now on; each SSE event has the
/// event's `seq` as its id, its type as the SSE event name and the JSON as data.
pub(crate) async fn stream(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let cursor = match resume.or(q.after) {
        Some(c) => c,
        None => s.store.last_event_seq().await?,
    };
    let project = q.project_id;
    let wake = s.events_wake.subscribe();
    let state = (s, cursor, wake, Vec::<Event>::new().into_iter());
    let stream = futures::stream::unfold(state, move |(s, mut cursor, mut wake, mut pending)| {
        let project = project.clone();
        async move {
            loop {
                if let Some(ev) = pending.next() {
                    return Some((Ok(ev), (s, cursor, wake, pending)));
                }
                match s.store.list_events(cursor, 500).await {
                    Ok(batch) if !batch.is_empty() => {
                        cursor = batch.last().map_or(cursor, |e| e.seq);
                        let out: Vec<Event> = batch
                            .iter()
                            .filter(|e| {
                                project.as_ref().is_none_or(|p| e.project_id.as_ref().is_some_and(|x| x.as_str() == p))
                            })
                            .map(sse_event)
                            .collect();
                        pending = out.into_iter();
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "event stream: reading events failed; retrying"),
                }
                // Woken by this instance's changes; the timeout covers changes made by others.
                tokio::select! {
                    _ = s.shutdown.cancelled() => return None,
                    _ = tokio::time::timeout(Duration::from_millis(500), wake.changed()) => {}
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(e: &loom_domain::Event) -> Event {
    let data = serde_json::to_string(&EventDto::from(e)).unwrap_or_default();
    Event::default().id(e.seq.to_string()).event(e.kind.as_str()).data(data)
}
