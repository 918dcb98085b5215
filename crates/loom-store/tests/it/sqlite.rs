//! The conformance suite against the embedded SQLite store (a file per test, and in memory),
//! plus what only SQLite has: the file outlives the process, and migrations are idempotent.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use loom_domain::{NewBead, NewProject, ProjectId, Status};
use loom_store::{ClaimRequest, SqliteStore, Store};

async fn make() -> (Arc<dyn Store>, impl Sized) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("loom.sqlite")).await.unwrap();
    (Arc::new(store), dir)
}
loom_store::conformance_tests!(make);

mod in_memory {
    //! The same suite on `SqliteStore::in_memory`, the store tests and benchmarks use.

    async fn make() -> (std::sync::Arc<dyn loom_store::Store>, ()) {
        (std::sync::Arc::new(loom_store::SqliteStore::in_memory().await.unwrap()), ())
    }
    loom_store::conformance_tests!(make);
}

fn claim(project: &ProjectId, max: u32) -> ClaimRequest {
    ClaimRequest {
        project: project.clone(),
        max,
        now: Utc::now(),
        lease: std::time::Duration::from_secs(60),
        claimer: "sqlite-test".into(),
    }
}

#[tokio::test]
async fn the_file_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loom.sqlite");
    let p = ProjectId::parse("keep").unwrap();
    let (bead, claimed) = {
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_project(NewProject::new(p.clone(), "/tmp/repo")).await.unwrap();
        let beads = store.create_beads(vec![NewBead::new(p.clone(), "a"), NewBead::new(p.clone(), "b")]).await.unwrap();
        let claimed = store.claim_ready(&claim(&p, 1)).await.unwrap().remove(0);
        (beads[1].clone(), claimed)
    };
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), 0, "a reopened file is already migrated");
    assert_eq!(store.get_bead(&bead.id).await.unwrap(), bead);
    assert_eq!(store.get_bead(&claimed.bead.id).await.unwrap(), claimed.bead, "the claim survived");
    assert_eq!(store.take_outbox(10).await.unwrap().len(), 1, "so did its outbox row");
    let next = store.create_beads(vec![NewBead::new(p.clone(), "c")]).await.unwrap().remove(0);
    let ids: BTreeSet<_> = [&bead.id, &claimed.bead.id, &next.id].into_iter().collect();
    assert_eq!(ids.len(), 3, "bead ids are never reused after reopening");
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let store = SqliteStore::in_memory().await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), 0);
    assert_eq!(store.migrate().await.unwrap(), 0);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("loom.sqlite")).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), 0);
}

#[tokio::test]
async fn in_memory_stores_are_private() {
    let a = SqliteStore::in_memory().await.unwrap();
    let b = SqliteStore::in_memory().await.unwrap();
    a.create_project(NewProject::new(ProjectId::parse("mine").unwrap(), "/tmp/repo")).await.unwrap();
    assert_eq!(a.list_projects().await.unwrap().len(), 1);
    assert!(b.list_projects().await.unwrap().is_empty());
    let clone = a.clone();
    assert_eq!(clone.list_projects().await.unwrap().len(), 1, "clones share one database");
}

/// Two stores on one file stand for two processes: their claims still never overlap, and neither
/// fails with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_never_claim_the_same_bead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loom.sqlite");
    let first = SqliteStore::open(&path).await.unwrap();
    let second = SqliteStore::open(&path).await.unwrap();
    let p = ProjectId::parse("shared").unwrap();
    first.create_project(NewProject::new(p.clone(), "/tmp/repo")).await.unwrap();
    let new: Vec<NewBead> = (0..80).map(|i| NewBead::new(p.clone(), format!("b{i}"))).collect();
    first.create_beads(new).await.unwrap();
    let drain = |store: SqliteStore, p: ProjectId| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claims = store.claim_ready(&claim(&p, 3)).await.unwrap();
                if claims.is_empty() {
                    break got;
                }
                got.extend(claims.into_iter().map(|c| c.bead.id));
            }
        })
    };
    let (a, b) = (drain(first.clone(), p.clone()), drain(second, p.clone()));
    let all: Vec<_> = a.await.unwrap().into_iter().chain(b.await.unwrap()).collect();
    let unique: BTreeSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (80, 80), "every bead claimed exactly once");
    let counts = first.bead_counts(Some(&p)).await.unwrap();
    assert_eq!(counts.iter().find(|(s, _)| *s == Status::InProgress), Some(&(Status::InProgress, 80)));
}

#[tokio::test]
async fn failed_batches_do_not_consume_bead_ids_visibly() {
    // A refused batch rolls back the id counter with everything else: the next bead gets the
    // next id, not a gap.
    let store = SqliteStore::in_memory().await.unwrap();
    let p = ProjectId::parse("gap").unwrap();
    store.create_project(NewProject::new(p.clone(), "/tmp/repo")).await.unwrap();
    let first = store.create_beads(vec![NewBead::new(p.clone(), "one")]).await.unwrap().remove(0);
    let mut bad = NewBead::new(p.clone(), "bad");
    bad.blocked_by = vec![loom_domain::BeadId::parse("gap-zzz").unwrap()];
    assert!(store.create_beads(vec![NewBead::new(p.clone(), "x"), bad]).await.is_err());
    let second = store.create_beads(vec![NewBead::new(p.clone(), "two")]).await.unwrap().remove(0);
    assert_eq!((first.id.as_str(), second.id.as_str()), ("gap-1", "gap-2"));
}
