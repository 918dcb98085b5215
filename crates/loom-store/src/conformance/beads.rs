//! Conformance cases: projects, beads, updates, transitions and dependencies.

use loom_domain::{BeadId, BeadType, GitStrategy, NewBead, NewProject, Priority, ProjectId, ProjectStatus, Status};

use super::{bead, claim_req, ids, project};
use crate::{BeadFilter, BeadPatch, Error, PageRequest, Store};

pub async fn project_crud(store: &dyn Store) {
    let id = project(store, "alpha").await;
    let got = store.get_project(&id).await.unwrap();
    assert_eq!((got.name.as_str(), got.branch.as_str(), got.bead_prefix.as_str()), ("alpha", "main", "alpha"));
    let dup = store.create_project(NewProject::new(id.clone(), "/x")).await.unwrap_err();
    assert!(matches!(dup, Error::AlreadyExists { .. }), "{dup}");
    project(store, "beta").await;
    let all = store.list_projects().await.unwrap();
    assert_eq!(all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["alpha", "beta"]);

    let mut update = NewProject::new(id.clone(), "/srv/alpha.git");
    update.git_strategy = GitStrategy::BranchPr;
    update.status = ProjectStatus::Paused;
    update.context.insert("test".into(), "cargo test".into());
    let updated = store.update_project(update).await.unwrap();
    assert_eq!(updated.git_strategy, GitStrategy::BranchPr);
    assert_eq!(store.get_project(&id).await.unwrap().context["test"], "cargo test");

    store.delete_project(&id).await.unwrap();
    assert!(matches!(store.get_project(&id).await, Err(Error::NotFound { .. })));
    assert!(matches!(store.delete_project(&id).await, Err(Error::NotFound { .. })));
}

pub async fn project_validation(store: &dyn Store) {
    let id = project(store, "gamma").await;
    let mut bad = NewProject::new(id.clone(), "/x");
    bad.branch = "has space".into();
    let err = store.update_project(bad).await.unwrap_err();
    assert!(err.to_string().contains("branch"), "{err}");
    let mut prefix = NewProject::new(id.clone(), "/x");
    prefix.bead_prefix = loom_domain::BeadPrefix::parse("other").unwrap();
    assert!(matches!(store.update_project(prefix).await, Err(Error::Conflict(_))));
    let missing = NewProject::new(ProjectId::parse("nope").unwrap(), "/x");
    assert!(matches!(store.update_project(missing).await, Err(Error::NotFound { .. })));
    assert_eq!(store.get_project(&id).await.unwrap().branch, "main", "failed updates change nothing");
}

pub async fn project_delete_refuses_running_beads(store: &dyn Store) {
    let p = project(store, "busy").await;
    let b = bead(store, &p, "running", 1, &[]).await;
    store.claim_ready(&claim_req(&p, 1)).await.unwrap();
    let err = store.delete_project(&p).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert_eq!(store.get_bead(&b.id).await.unwrap().status, Status::InProgress);
}

pub async fn bead_create_and_get(store: &dyn Store) {
    let p = project(store, "proj").await;
    let a = bead(store, &p, "first", 2, &[]).await;
    let mut nb = NewBead::new(p.clone(), "second");
    nb.description = "## details".into();
    nb.bead_type = BeadType::Bug;
    nb.tags = vec!["ui".into(), "urgent".into()];
    nb.context.insert("command".into(), "make".into());
    nb.parent = Some(a.id.clone());
    nb.blocked_by = vec![a.id.clone(), a.id.clone()];
    let b = store.create_beads(vec![nb]).await.unwrap().remove(0);
    assert!(a.id.as_str().starts_with("proj-") && b.id.as_str().starts_with("proj-"));
    assert_ne!(a.id, b.id);
    let got = store.get_bead(&b.id).await.unwrap();
    assert_eq!(got, b, "get returns what create returned");
    assert_eq!((got.status, got.version, got.attempts), (Status::Open, 1, 0));
    assert_eq!(got.blocked_by, vec![a.id.clone()], "duplicate blockers are merged");
    assert_eq!(got.parent, Some(a.id.clone()));
    assert_eq!(got.context["command"], "make");
    let missing = BeadId::parse("proj-zzzz").unwrap();
    assert!(matches!(store.get_bead(&missing).await, Err(Error::NotFound { .. })));
    // A batch of plain beads: numbered in order, stored as returned, one created event each.
    let batch: Vec<NewBead> = ["x", "y", "z"]
        .iter()
        .map(|t| {
            let mut nb = NewBead::new(p.clone(), *t);
            nb.tags = vec!["batch".into()];
            nb.context.insert("k".into(), "v \"quoted\"".into());
            nb
        })
        .collect();
    let made = store.create_beads(batch).await.unwrap();
    let numbers: Vec<u64> =
        made.iter().map(|b| u64::from_str_radix(b.id.as_str().rsplit_once('-').unwrap().1, 36).unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "numbered in batch order: {numbers:?}");
    for b in &made {
        assert_eq!(&store.get_bead(&b.id).await.unwrap(), b, "get returns what create returned");
    }
    let events = store.list_events(0, 100).await.unwrap();
    let created: Vec<_> = events.iter().filter(|e| e.kind == loom_domain::EventKind::BeadCreated).collect();
    let last3: Vec<&str> = created[created.len() - 3..].iter().map(|e| e.entity_id.as_str()).collect();
    assert_eq!(last3, ids(&made), "created events in batch order");
    let x = created.iter().find(|e| e.entity_id == made[0].id.as_str()).unwrap();
    assert_eq!(x.description, format!("bead {} created: x", made[0].id));
    assert_eq!(x.data, serde_json::json!({ "title": "x", "priority": made[0].priority.get(), "type": "task" }));
    assert_eq!((x.action.as_str(), x.source.as_str(), x.project_id.as_ref()), ("created", "store", Some(&p)));
}

pub async fn bead_create_is_all_or_nothing(store: &dyn Store) {
    let p = project(store, "atomic").await;
    let good = NewBead::new(p.clone(), "good");
    let mut bad = NewBead::new(p.clone(), "bad");
    bad.blocked_by = vec![BeadId::parse("atomic-zzzz").unwrap()];
    let err = store.create_beads(vec![good.clone(), bad]).await.unwrap_err();
    assert!(matches!(err, Error::MissingBlocker { .. }), "{err}");
    let mut big = NewBead::new(p.clone(), "big");
    big.description = "x".repeat(loom_domain::limits::DESCRIPTION_MAX + 1);
    assert!(matches!(store.create_beads(vec![good.clone(), big]).await, Err(Error::Domain(_))));
    let ghost = NewBead::new(ProjectId::parse("ghost").unwrap(), "orphan");
    assert!(matches!(store.create_beads(vec![ghost.clone()]).await, Err(Error::NotFound { .. })));
    let err = store.create_beads(vec![good.clone(), ghost]).await.unwrap_err();
    assert!(matches!(&err, Error::NotFound { entity: "project", id } if id == "ghost"), "{err}");
    let page = store.list_beads(&BeadFilter::default(), &PageRequest::first(100)).await.unwrap();
    assert!(page.beads.is_empty(), "nothing was created: {:?}", ids(&page.beads));
}

pub async fn bead_list_filters_and_pages(store: &dyn Store) {
    let p = project(store, "lists").await;
    let q = project(store, "other").await;
    let mut made = Vec::new();
    for i in 0..7 {
        let mut nb = NewBead::new(p.clone(), format!("bead {i}"));
        nb.priority = Priority::try_from(i % 4).unwrap();
        nb.bead_type = if i % 2 == 0 { BeadType::Task } else { BeadType::Bug };
        nb.assignee = (i == 3).then(|| "ana".to_string());
        nb.tags = if i % 3 == 0 { vec!["ui".into()] } else { vec![] };
        made.push(store.create_beads(vec![nb]).await.unwrap().remove(0));
    }
    bead(store, &q, "elsewhere", 0, &[]).await;
    let only_p = BeadFilter { project: Some(p.clone()), ..BeadFilter::default() };
    let mut seen = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let got = store.list_beads(&only_p, &page).await.unwrap();
        assert!(got.beads.len() <= 3);
        seen.extend(ids(&got.beads));
        match got.next_cursor {
            Some(c) => page.after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids(&made), "pages cover every bead once, oldest first");
    let count =
        |f: BeadFilter| async move { store.list_beads(&f, &PageRequest::first(100)).await.unwrap().beads.len() };
    assert_eq!(count(BeadFilter { bead_type: Some(BeadType::Bug), ..only_p.clone() }).await, 3);
    assert_eq!(count(BeadFilter { assignee: Some("ana".into()), ..only_p.clone() }).await, 1);
    assert_eq!(count(BeadFilter { tag: Some("ui".into()), ..only_p.clone() }).await, 3);
    assert_eq!(count(BeadFilter { priority: Some(Priority::P0), ..BeadFilter::default() }).await, 3);
    assert_eq!(count(BeadFilter { status: Some(Status::Closed), ..only_p.clone() }).await, 0);
    let bad_cursor = PageRequest { after: Some("not-a-cursor".into()), limit: 10 };
    assert!(matches!(store.list_beads(&only_p, &bad_cursor).await, Err(Error::Domain(_))));
    assert!(matches!(store.list_beads(&only_p, &PageRequest::first(0)).await, Err(Error::Domain(_))));
}

pub async fn bead_update_with_version(store: &dyn Store) {
    let p = project(store, "upd").await;
    let b = bead(store, &p, "before", 2, &[]).await;
    let patch = BeadPatch { title: Some("after".into()), priority: Some(Priority::P0), ..BeadPatch::default() };
    let updated = store.update_bead(&b.id, b.version, patch.clone()).await.unwrap();
    assert_eq!((updated.title.as_str(), updated.priority, updated.version), ("after", Priority::P0, b.version + 1));
    let stale = BeadPatch { title: Some("lost update".into()), ..BeadPatch::default() };
    let err = store.update_bead(&b.id, b.version, stale).await.unwrap_err();
    assert!(matches!(err, Error::VersionConflict { expected: 1, actual: 2, .. }), "{err}");
    assert!(err.to_string().contains("re-read and retry"));
    let huge = BeadPatch { title: Some("t".repeat(10_000)), ..BeadPatch::default() };
    assert!(matches!(store.update_bead(&b.id, 2, huge).await, Err(Error::Domain(_))));
    let own_parent = BeadPatch { parent: Some(Some(b.id.clone())), ..BeadPatch::default() };
    assert!(store.update_bead(&b.id, 2, own_parent).await.is_err());
    let got = store.get_bead(&b.id).await.unwrap();
    assert_eq!((got.title.as_str(), got.version, got.parent), ("after", 2, None), "refused updates change nothing");
}

pub async fn bead_illegal_transitions_change_nothing(store: &dyn Store) {
    let p = project(store, "illegal").await;
    let b = bead(store, &p, "b", 2, &[]).await;
    let to = |s| BeadPatch { status: Some(s), ..BeadPatch::default() };
    let err = store.update_bead(&b.id, 1, to(Status::InProgress)).await.unwrap_err();
    assert!(err.to_string().contains("claiming"), "{err}");
    let err = store.update_bead(&b.id, 1, to(Status::Blocked)).await.unwrap_err();
    assert!(matches!(err, Error::Domain(loom_domain::Error::IllegalTransition { .. })), "{err}");
    let err = store.reopen_bead(&b.id, None).await.unwrap_err();
    assert!(err.to_string().contains("cannot go from open to open"), "{err}");
    let closed = store.close_bead(&b.id, "done", None).await.unwrap();
    let err = store.close_bead(&b.id, "again", None).await.unwrap_err();
    assert!(matches!(err, Error::Domain(loom_domain::Error::IllegalTransition { .. })), "{err}");
    assert_eq!(store.get_bead(&b.id).await.unwrap(), closed, "refused transitions change nothing");
}

pub async fn close_and_reopen(store: &dyn Store) {
    let p = project(store, "cr").await;
    let b = bead(store, &p, "b", 2, &[]).await;
    let closed = store.close_bead(&b.id, "won't fix", Some(1)).await.unwrap();
    assert_eq!((closed.status, closed.close_reason.as_deref()), (Status::Closed, Some("won't fix")));
    assert!(closed.closed_at.is_some());
    assert!(matches!(store.reopen_bead(&b.id, Some(1)).await, Err(Error::VersionConflict { .. })));
    let reopened = store.reopen_bead(&b.id, Some(closed.version)).await.unwrap();
    assert_eq!((reopened.status, reopened.close_reason, reopened.closed_at), (Status::Open, None, None));
    let via_patch = store
        .update_bead(&b.id, reopened.version, BeadPatch { status: Some(Status::Closed), ..BeadPatch::default() })
        .await
        .unwrap();
    assert_eq!(via_patch.status, Status::Closed);
}

pub async fn dependencies_add_remove(store: &dyn Store) {
    let p = project(store, "deps").await;
    let a = bead(store, &p, "a", 2, &[]).await;
    let b = bead(store, &p, "b", 2, &[]).await;
    let with = store.add_dependency(&b.id, &a.id).await.unwrap();
    assert_eq!(with.blocked_by, vec![a.id.clone()]);
    assert_eq!(with.version, b.version + 1);
    let again = store.add_dependency(&b.id, &a.id).await.unwrap();
    assert_eq!(again.version, with.version, "adding an existing edge is a no-op");
    let without = store.remove_dependency(&b.id, &a.id).await.unwrap();
    assert!(without.blocked_by.is_empty());
    assert!(matches!(store.remove_dependency(&b.id, &a.id).await, Err(Error::NotFound { .. })));
    assert!(store.get_bead(&b.id).await.unwrap().blocked_by.is_empty());
}

pub async fn dependency_cycle_rejected(store: &dyn Store) {
    let p = project(store, "cyc").await;
    let a = bead(store, &p, "a", 2, &[]).await;
    let b = bead(store, &p, "b", 2, &[&a.id]).await;
    let c = bead(store, &p, "c", 2, &[&b.id]).await;
    let err = store.add_dependency(&a.id, &c.id).await.unwrap_err();
    match &err {
        Error::Domain(loom_domain::Error::Cycle { path, .. }) => {
            assert_eq!(path, &format!("{} -> {} -> {} -> {}", a.id, c.id, b.id, a.id))
        }
        other => panic!("expected a cycle error, got {other}"),
    }
    assert!(err.to_string().contains("would close a cycle"));
    assert!(store.add_dependency(&a.id, &a.id).await.is_err(), "self edge");
    assert!(store.get_bead(&a.id).await.unwrap().blocked_by.is_empty(), "store unchanged");
}

pub async fn dependency_missing_blocker_rejected(store: &dyn Store) {
    let p = project(store, "miss").await;
    let a = bead(store, &p, "a", 2, &[]).await;
    let ghost = BeadId::parse("miss-zzzzz").unwrap();
    let err = store.add_dependency(&a.id, &ghost).await.unwrap_err();
    assert!(matches!(err, Error::MissingBlocker { .. }), "{err}");
    assert!(err.to_string().contains("no such bead"));
    assert!(matches!(store.add_dependency(&ghost, &a.id).await, Err(Error::NotFound { .. })));
    let got = store.get_bead(&a.id).await.unwrap();
    assert_eq!((got.version, got.blocked_by.len()), (1, 0));
}
