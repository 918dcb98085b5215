//! `/events` (paged by cursor) and `/events/stream` (SSE with `Last-Event-ID` resume).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::Utc;
use futures::Stream;
use loom_api::EventDto;
use loom_domain::ProjectId;
use loom_store::{EventPage, EventQuery, Store};
use serde::Deserialize;

use super::{ApiQuery, parse_id};
use crate::cursor::{EventCursor, WINDOW};
use crate::{Error, Shared};

/// The response header of `GET /events` naming the `after` of the next call.
pub(crate) const NEXT_CURSOR: &str = "x-next-cursor";

/// Events one read of a stream asks the store for.
const STREAM_BATCH: u32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
    /// Only events of this project.
    project_id: Option<String>,
}

impl EventsQuery {
    fn project(&self) -> Result<Option<ProjectId>, Error> {
        self.project_id.as_deref().map(|p| parse_id(ProjectId::parse, p)).transpose()
    }
}

/// Events after `after`, in `seq` order, as a JSON array; the `X-Next-Cursor` header is the
/// `after` of the next call. With `project_id` the store reads only that project's events and
/// the cursor moves past the others', so a quiet project behind a busy one is reached at once.
/// A page stops before a seq that may still commit (a gap in the log younger than
/// `cursor::WINDOW`), so a client that continues from the cursor never skips an event; the late
/// one comes on a later call.
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<([(&'static str, String); 1], Json<Vec<EventDto>>), Error> {
    let page = settled_page(&*s.store, q.after.unwrap_or(0), q.limit.unwrap_or(100), q.project()?).await?;
    Ok(([(NEXT_CURSOR, page.next.to_string())], Json(page.events.iter().map(EventDto::from).collect())))
}

async fn settled_page(
    store: &dyn Store,
    after: i64,
    limit: u32,
    project: Option<ProjectId>,
) -> loom_store::Result<EventPage> {
    let gaps_fill_until = Utc::now() - WINDOW;
    store.list_event_page(&EventQuery { after, limit, project, gaps_fill_until }).await
}

/// Streams events after `Last-Event-ID` (or `?after=`), else from now on; each SSE event has its
/// type as the SSE event name and the JSON (with its `seq`) as data. The SSE id is a resume
/// token: after a reconnect with it, no event is missing, though some may come again (dedupe by
/// `seq`). Events are sent in the order they become visible, which is not always `seq` order;
/// with `project_id`, only that project's, read from the store's filter in `seq` order.
pub(crate) async fn stream(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    let project = q.project()?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let cursor = match resume.or(q.after) {
        Some(c) => c,
        None => s.store.last_event_seq().await?,
    };
    let reader = match project {
        Some(project) => Reader::Project { project, after: cursor },
        None => Reader::All(EventCursor::after(cursor)),
    };
    let wake = s.events_wake.subscribe();
    let state = (s, reader, wake, Vec::<Event>::new().into_iter());
    let stream = futures::stream::unfold(state, move |(s, mut reader, mut wake, mut pending)| async move {
        loop {
            if let Some(ev) = pending.next() {
                return Some((Ok(ev), (s, reader, wake, pending)));
            }
            match reader.next(&*s.store).await {
                Ok(batch) if !batch.is_empty() => {
                    pending = batch.into_iter();
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
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Where a stream reads from: every event through the [`EventCursor`] (each as soon as it is
/// visible), or one project's through the store's settled pages (its index, in `seq` order).
/// The web UI's live stream (`web::live`) reads through it too.
pub(crate) enum Reader {
    All(EventCursor),
    Project { project: ProjectId, after: i64 },
}

impl Reader {
    /// A reader of every event (or `project`'s) after the resume token `after`.
    pub(crate) fn new(project: Option<ProjectId>, after: i64) -> Self {
        match project {
            Some(project) => Reader::Project { project, after },
            None => Reader::All(EventCursor::after(after)),
        }
    }

    /// The next events, marked handled: after them, [`Reader::token`] resumes without a loss.
    pub(crate) async fn read(&mut self, store: &dyn Store) -> loom_store::Result<Vec<loom_domain::Event>> {
        match self {
            Reader::All(cursor) => {
                let batch = cursor.pending(store, STREAM_BATCH).await?;
                cursor.handled(&batch);
                Ok(batch)
            }
            Reader::Project { project, after } => {
                let page = settled_page(store, *after, STREAM_BATCH, Some(project.clone())).await?;
                *after = page.next;
                Ok(page.events)
            }
        }
    }

    /// A resume token: a reader made with it misses no event this one has not read yet.
    pub(crate) fn token(&self) -> i64 {
        match self {
            Reader::All(cursor) => cursor.resume_token(),
            Reader::Project { after, .. } => *after,
        }
    }

    /// The next events to send, each with its SSE id.
    async fn next(&mut self, store: &dyn Store) -> loom_store::Result<Vec<Event>> {
        match self {
            Reader::All(cursor) => {
                let batch = cursor.pending(store, STREAM_BATCH).await?;
                // A resume token from before this batch: a client that reconnects mid-batch
                // sees some events again, never misses one.
                let token = cursor.resume_token().to_string();
                cursor.handled(&batch);
                Ok(batch.iter().map(|e| sse_event(e, &token)).collect())
            }
            Reader::Project { project, after } => {
                let page = settled_page(store, *after, STREAM_BATCH, Some(project.clone())).await?;
                *after = page.next;
                // A settled page in seq order: resuming after any event's seq misses nothing.
                Ok(page.events.iter().map(|e| sse_event(e, &e.seq.to_string())).collect())
            }
        }
    }
}

fn sse_event(e: &loom_domain::Event, resume_token: &str) -> Event {
    let data = serde_json::to_string(&EventDto::from(e)).unwrap_or_default();
    Event::default().id(resume_token).event(e.kind.as_str()).data(data)
}
