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
use crate::cursor::EventCursor;
use crate::{Error, Shared};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
    /// Only events of this project.
    project_id: Option<String>,
}

/// Events after `after`, in `seq` order. Stops before a seq that may still commit (a hole in
/// the log younger than `cursor::WINDOW`), so a client that continues from the last `seq` it got
/// never skips an event; the late one comes on a later call.
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<EventDto>>, Error> {
    let after = q.after.unwrap_or(0);
    let events = s.store.list_events(after, q.limit.unwrap_or(100)).await?;
    Ok(Json(
        crate::cursor::settled_prefix(after, &events, chrono::Utc::now())
            .iter()
            .filter(|e| q.project_id.as_ref().is_none_or(|p| e.project_id.as_ref().is_some_and(|x| x.as_str() == p)))
            .map(EventDto::from)
            .collect(),
    ))
}

/// Streams events after `Last-Event-ID` (or `?after=`), else from now on; each SSE event has its
/// type as the SSE event name and the JSON (with its `seq`) as data. The SSE id is a resume
/// token: after a reconnect with it, no event is missing, though some may come again (dedupe by
/// `seq`). Events are sent in the order they become visible, which is not always `seq` order.
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
    let state = (s, EventCursor::after(cursor), wake, Vec::<Event>::new().into_iter());
    let stream = futures::stream::unfold(state, move |(s, mut cursor, mut wake, mut pending)| {
        let project = project.clone();
        async move {
            loop {
                if let Some(ev) = pending.next() {
                    return Some((Ok(ev), (s, cursor, wake, pending)));
                }
                match cursor.pending(&*s.store, 500).await {
                    Ok(batch) if !batch.is_empty() => {
                        // The SSE id is a resume token from before this batch: a client that
                        // reconnects mid-batch sees some events again, never misses one.
                        let token = cursor.resume_token().to_string();
                        cursor.handled(&batch);
                        let out: Vec<Event> = batch
                            .iter()
                            .filter(|e| {
                                project.as_ref().is_none_or(|p| e.project_id.as_ref().is_some_and(|x| x.as_str() == p))
                            })
                            .map(|e| sse_event(e, &token))
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

fn sse_event(e: &loom_domain::Event, resume_token: &str) -> Event {
    let data = serde_json::to_string(&EventDto::from(e)).unwrap_or_default();
    Event::default().id(resume_token).event(e.kind.as_str()).data(data)
}
