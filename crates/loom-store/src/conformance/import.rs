//! Conformance cases: importing beads from another tracker (ids, statuses and times kept; one
//! transaction per batch; idempotent) and looking up which project holds an id.

use chrono::{DateTime, TimeZone, Utc};
use loom_domain::{BeadId, BeadType, ContextMap, EventKind, Priority, Status};
use serde_json::{Value, json};

use super::{claim_req, ids, project};
use crate::{Error, ImportAction, ImportBead, Store};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 123_456_789).unwrap()
}

fn id(s: &str) -> BeadId {
    BeadId::parse(s).unwrap()
}

/// An open task `id` created at `at(n)`.
pub fn import_bead(bead_id: &str, n: i64) -> ImportBead {
    ImportBead {
        id: id(bead_id),
        title: format!("issue {bead_id}"),
        description: String::new(),
        bead_type: BeadType::Task,
        priority: Priority::DEFAULT,
        status: Status::Open,
        assignee: None,
        tags: Vec::new(),
        context: ContextMap::new(),
        parent: None,
        blocked_by: Vec::new(),
        close_reason: None,
        created_at: at(n),
        updated_at: at(n + 1),
        closed_at: None,
    }
}

pub async fn import_keeps_ids_statuses_times_and_is_idempotent(store: &dyn Store) {
    let p = project(store, "imp").await;
    let mut epic = import_bead("bd-e1", 0);
    epic.bead_type = BeadType::Epic;
    // The child comes first in the batch: its parent is later in the same batch.
    let mut child = import_bead("bd-c1", 10);
    child.parent = Some(id("bd-e1"));
    child.blocked_by = vec![id("bd-done"), id("bd-open")];
    child.context.insert("bd.issue".into(), r#"{"status":"open"}"#.into());
    child.tags = vec!["backend".into()];
    let mut done = import_bead("bd-done", 20);
    done.status = Status::Closed;
    done.close_reason = Some("fixed".into());
    let mut held = import_bead("bd-open", 30);
    held.status = Status::Blocked;
    held.priority = Priority::P0;
    let batch = vec![child.clone(), epic, done.clone(), held];
    let got = store.import_beads(&p, batch.clone()).await.unwrap();
    assert_eq!(got, vec![ImportAction::Created; 4]);

    let c = store.get_bead(&id("bd-c1")).await.unwrap();
    assert_eq!(c.project_id, p);
    assert_eq!(c.parent, Some(id("bd-e1")));
    assert_eq!(ids_of(&c.blocked_by), ["bd-done", "bd-open"]);
    assert_eq!(c.created_at, crate::micros(at(10)), "times are the source's, at store precision");
    assert_eq!(c.updated_at, crate::micros(at(11)));
    assert_eq!(c.context, child.context);
    assert_eq!(c.tags, child.tags);
    let d = store.get_bead(&id("bd-done")).await.unwrap();
    assert_eq!((d.status, d.close_reason.as_deref()), (Status::Closed, Some("fixed")));
    assert_eq!(d.closed_at, Some(crate::micros(at(21))), "a closed bead without closed_at gets updated_at");
    assert_eq!(store.get_bead(&id("bd-open")).await.unwrap().status, Status::Blocked);
    // bd-c1 waits on the blocked bd-open; the epic is the only ready bead.
    assert_eq!(ids(&store.list_ready(&p, 10, Utc::now()).await.unwrap()), ["bd-e1"]);

    let events = store.list_events(0, 1000).await.unwrap();
    let created: Vec<(&str, Value)> = events
        .iter()
        .filter(|e| e.kind == EventKind::BeadCreated && e.project_id.as_ref() == Some(&p))
        .map(|e| (e.entity_id.as_str(), e.data["title"].clone()))
        .collect();
    let titles: Vec<(&str, Value)> =
        ["bd-c1", "bd-e1", "bd-done", "bd-open"].into_iter().map(|id| (id, json!(format!("issue {id}")))).collect();
    assert_eq!(created, titles, "one bead.created event per new bead, in batch order");
    let events = events.len();
    let again = store.import_beads(&p, batch.clone()).await.unwrap();
    assert_eq!(again, vec![ImportAction::Unchanged; 4], "the same batch twice changes nothing");
    assert_eq!(store.list_events(0, 1000).await.unwrap().len(), events, "and records nothing");
    assert_eq!(store.get_bead(&id("bd-c1")).await.unwrap().version, c.version);

    // A changed bead is overwritten, its edges replaced: bd-c1 no longer waits on bd-open.
    let mut changed = child.clone();
    changed.blocked_by = vec![id("bd-done")];
    changed.title = "renamed".into();
    changed.updated_at = at(99);
    let got = store.import_beads(&p, vec![changed]).await.unwrap();
    assert_eq!(got, [ImportAction::Updated]);
    let c2 = store.get_bead(&id("bd-c1")).await.unwrap();
    assert_eq!((c2.title.as_str(), c2.version, ids_of(&c2.blocked_by)), ("renamed", c.version + 1, vec!["bd-done"]));
    assert_eq!(c2.updated_at, crate::micros(at(99)));
    assert_eq!(ids(&store.list_ready(&p, 10, Utc::now()).await.unwrap()), ["bd-c1", "bd-e1"], "batch order is age");

    // A bead created afterwards never gets an imported id, even with the same prefix.
    let q = store.create_project(loom_domain::NewProject::new(loom_domain::ProjectId::parse("bd").unwrap(), "/r"));
    let q = q.await.unwrap();
    assert_eq!(q.bead_prefix.as_str(), "bd");
    // `bd-a` is the id the counter draws at 10: the counter moves past it.
    store.import_beads(&p, vec![import_bead("bd-a", 40)]).await.unwrap();
    let fresh = super::bead(store, &q.id, "new", 2, &[]).await;
    let many = (0..40).map(|i| loom_domain::NewBead::new(q.id.clone(), format!("n{i}"))).collect();
    let later = ids(&store.create_beads(many).await.unwrap());
    assert!(!later.contains(&"bd-a".to_string()) && fresh.id.as_str() != "bd-a", "{later:?}");
    let mut owners = store.bead_projects(&[id("bd-c1"), id("bd-none"), fresh.id.clone()]).await.unwrap();
    owners.sort();
    let mut want = vec![(id("bd-c1"), p.clone()), (fresh.id.clone(), q.id.clone())];
    want.sort();
    assert_eq!(owners, want, "ids that exist, with their projects; others left out");
}

pub async fn import_batches_are_all_or_nothing(store: &dyn Store) {
    let p = project(store, "imq").await;
    let other = project(store, "imr").await;
    store.import_beads(&other, vec![import_bead("x-1", 0)]).await.unwrap();
    let count = |s: &'static str| async move { store.bead_projects(&[id(s)]).await.unwrap().len() };

    let mut dangling = import_bead("q-2", 1);
    dangling.blocked_by = vec![id("q-missing")];
    let err = store.import_beads(&p, vec![import_bead("q-1", 0), dangling]).await.unwrap_err();
    assert!(matches!(err, Error::MissingBlocker { .. }), "{err}");
    assert_eq!(count("q-1").await, 0, "nothing of a failed batch is kept");

    let mut a = import_bead("q-a", 0);
    let mut b = import_bead("q-b", 1);
    a.blocked_by = vec![id("q-b")];
    b.blocked_by = vec![id("q-a")];
    let err = store.import_beads(&p, vec![a, b, import_bead("q-3", 2)]).await.unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    assert_eq!(count("q-3").await, 0);

    let err = store.import_beads(&p, vec![import_bead("q-4", 0), import_bead("x-1", 0)]).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)) && err.to_string().contains("imr"), "{err}");
    assert_eq!(count("q-4").await, 0);

    let mut running = import_bead("q-5", 0);
    running.status = Status::InProgress;
    let err = store.import_beads(&p, vec![running]).await.unwrap_err();
    assert!(err.to_string().contains("in_progress"), "{err}");

    let nope = loom_domain::ProjectId::parse("nope").unwrap();
    let err = store.import_beads(&nope, vec![import_bead("q-6", 0)]).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    // A bead Loom is running is left alone; the rest of the batch goes in.
    store.import_beads(&p, vec![import_bead("q-7", 0)]).await.unwrap();
    let claimed = store.claim_ready(&claim_req(&p, 1)).await.unwrap();
    assert_eq!(claimed[0].bead.id.as_str(), "q-7");
    let mut retitled = import_bead("q-7", 0);
    retitled.title = "other".into();
    let got = store.import_beads(&p, vec![retitled, import_bead("q-8", 0)]).await.unwrap();
    assert!(matches!(&got[0], ImportAction::Refused(r) if r.contains("in_progress")), "{got:?}");
    assert_eq!(got[1], ImportAction::Created);
    assert_eq!(store.get_bead(&id("q-7")).await.unwrap().title, "issue q-7");

    // An update that closes a cycle through stored edges is refused, with the whole batch.
    let mut y = import_bead("q-y", 0);
    y.blocked_by = vec![id("q-8")];
    store.import_beads(&p, vec![y]).await.unwrap();
    let mut back = import_bead("q-8", 0);
    back.blocked_by = vec![id("q-y")];
    let err = store.import_beads(&p, vec![import_bead("q-9", 0), back]).await.unwrap_err();
    assert!(err.to_string().contains("q-8 -> q-y -> q-8"), "{err}");
    assert_eq!(count("q-9").await, 0);
    assert!(store.get_bead(&id("q-8")).await.unwrap().blocked_by.is_empty());
}

fn ids_of(ids: &[BeadId]) -> Vec<&str> {
    ids.iter().map(BeadId::as_str).collect()
}
