//! Reading the event log without losing an event that becomes visible late.
//!
//! On PostgreSQL an event's `seq` is drawn when it is inserted, not when its transaction commits,
//! so `seq` 10 may become visible after `seq` 11. A reader that kept only "the highest seq seen"
//! would skip 10 for good. [`EventCursor`] keeps a settled mark (every seq at or below it was
//! handled or never will exist) plus the seqs seen above it, and re-reads above the mark until the
//! hole fills or is older than [`WINDOW`] (a transaction that drew a seq and rolled back leaves a
//! hole for ever; transactions here last milliseconds).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use loom_domain::Event;
use loom_store::Store;

/// How long a hole in the seqs is waited for before it is taken as a rolled-back insert.
pub(crate) const WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct EventCursor {
    /// Every seq at or below this was handled, or never will exist.
    settled: i64,
    /// Seqs above `settled` already handled, with their events' times.
    seen: BTreeMap<i64, DateTime<Utc>>,
}

impl EventCursor {
    /// A cursor that yields events after `seq`.
    pub(crate) fn after(seq: i64) -> Self {
        Self { settled: seq, seen: BTreeMap::new() }
    }

    /// Where a reader resumes without losing anything (it may see some events again).
    pub(crate) fn resume_token(&self) -> i64 {
        self.settled
    }

    /// Events not handled yet: late ones in the holes above the settled mark, then new ones. They
    /// count as handled once passed to [`EventCursor::handled`].
    pub(crate) async fn pending(&self, store: &dyn Store, limit: u32) -> loom_store::Result<Vec<Event>> {
        let unseen = |e: &Event| !self.seen.contains_key(&e.seq);
        // From the mark: late events in the holes, then new ones.
        let batch = store.list_events(self.settled, limit).await?;
        let last = batch.last().map(|e| e.seq);
        let mut fresh: Vec<Event> = batch.into_iter().filter(unseen).collect();
        // A hole held open may leave more than `limit` seen events above the mark: read on past
        // them too, so new events keep flowing while it is waited for.
        if let (Some(last), Some((&highest, _))) = (last, self.seen.last_key_value())
            && last < highest
        {
            fresh.extend(store.list_events(highest, limit).await?.into_iter().filter(unseen));
        }
        Ok(fresh)
    }

    /// Records `events` as handled.
    pub(crate) fn handled(&mut self, events: &[Event]) {
        for e in events {
            if e.seq > self.settled {
                self.seen.insert(e.seq, e.created_at);
            }
        }
        self.advance(Utc::now());
    }

    /// Moves the settled mark over every seen seq that follows it, and over a hole whose next
    /// event is older than the window.
    fn advance(&mut self, now: DateTime<Utc>) {
        while let Some((&seq, &at)) = self.seen.first_key_value() {
            if waits_for_hole(self.settled, seq, at, now) {
                break;
            }
            self.settled = seq;
            self.seen.pop_first();
        }
    }
}

/// Whether an event `seq` (created at `at`) that follows `prev` must wait: a seq between them
/// is missing and may still commit, being younger than [`WINDOW`].
fn waits_for_hole(prev: i64, seq: i64, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    seq != prev + 1 && at > now - WINDOW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs_ago: i64) -> DateTime<Utc> {
        Utc::now() - chrono::Duration::seconds(secs_ago)
    }

    #[test]
    fn settles_contiguous_seqs_and_holds_fresh_holes() {
        let mut c = EventCursor::after(10);
        c.seen.extend([(11, at(0)), (12, at(0)), (14, at(0))]);
        c.advance(Utc::now());
        assert_eq!(c.resume_token(), 12, "13 may still commit");
        assert_eq!(c.seen.keys().copied().collect::<Vec<_>>(), vec![14]);
        c.seen.insert(13, at(0));
        c.advance(Utc::now());
        assert_eq!(c.resume_token(), 14, "the late one filled the hole");
        assert!(c.seen.is_empty());
    }

    #[test]
    fn gives_up_on_a_hole_older_than_the_window() {
        let mut c = EventCursor::after(0);
        c.seen.extend([(2, at(10)), (3, at(10)), (5, at(0))]);
        c.advance(Utc::now());
        assert_eq!(c.resume_token(), 3, "1 was rolled back long ago; 4 may still commit");
    }

    /// Against PostgreSQL: an event whose transaction commits after a later event's is still
    /// yielded, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_committed_late_is_not_lost() {
        let db = loom_store::testing::TestDatabase::create().await;
        let store = db.store().await;
        let mut late = store.pool().begin().await.unwrap();
        sqlx::query(
            "INSERT INTO events (id, kind, source, entity_id, action, description, data, created_at)
             VALUES ('late', 'project.created', 'test', 'p', 'created', 'late', '{}', now())",
        )
        .execute(&mut *late)
        .await
        .unwrap();
        let on_time = loom_store::NewEvent {
            kind: loom_domain::EventKind::ProjectCreated,
            source: "test".into(),
            project_id: Some(loom_domain::ProjectId::parse("q").unwrap()),
            entity_id: "q".into(),
            action: "created".into(),
            description: "on time".into(),
            data: serde_json::json!({}),
            correlation_id: None,
        };
        store.append_event(on_time).await.unwrap();
        let page = |project: Option<&str>| loom_store::EventQuery {
            after: 0,
            limit: 100,
            project: project.map(|p| loom_domain::ProjectId::parse(p).unwrap()),
            gaps_fill_until: Utc::now() - WINDOW,
        };
        for project in [None, Some("q")] {
            let waiting = store.list_event_page(&page(project)).await.unwrap();
            assert_eq!(
                (waiting.events.len(), waiting.next),
                (0, 0),
                "a stateless reader waits for seq 1 ({project:?})"
            );
        }
        let mut cursor = EventCursor::after(0);
        let first = cursor.pending(&store, 100).await.unwrap();
        assert_eq!(first.iter().map(|e| e.description.as_str()).collect::<Vec<_>>(), ["on time"]);
        cursor.handled(&first);
        assert_eq!(cursor.resume_token(), 0, "the hole at seq 1 may still fill");
        late.commit().await.unwrap();
        let second = cursor.pending(&store, 100).await.unwrap();
        assert_eq!(second.iter().map(|e| e.description.as_str()).collect::<Vec<_>>(), ["late"]);
        assert_eq!(store.list_event_page(&page(None)).await.unwrap().events.len(), 2, "both, once the hole filled");
        let of_q = store.list_event_page(&page(Some("q"))).await.unwrap();
        assert_eq!((of_q.events.len(), of_q.next), (1, 2), "q's event, and a cursor past the filled hole");
        cursor.handled(&second);
        assert_eq!(cursor.resume_token(), 2);
        assert!(cursor.pending(&store, 100).await.unwrap().is_empty(), "each event once");
    }
}
