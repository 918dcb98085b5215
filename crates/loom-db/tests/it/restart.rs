//! The service stopped and restarted under a client: calls fail fast with a clear error while it
//! is down, succeed again after it is back on the same port, and nothing is half-written.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use loom_db::ServerConfig;
use loom_domain::{EventKind, NewBead, NewProject, ProjectId};
use loom_store::{BeadFilter, Error, PageRequest, Store};
use tokio_util::sync::CancellationToken;

use crate::support::{Service, fast_client, service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_a_client_fails_fast_then_recovers_with_nothing_half_written() {
    let (guard, pg) = service().await;
    let addr = guard.service.addr;
    let client = fast_client(&guard.service.url());
    let project = ProjectId::parse("restart").unwrap();
    client.create_project(NewProject::new(project.clone(), "/tmp/repo")).await.unwrap();

    // Creates in flight while the service stops: each either lands whole or not at all. A writer
    // starts one every 5 ms; the service stops once a few have landed, and the writer goes on
    // for a few more while it is down.
    let landed = Arc::new(AtomicUsize::new(0));
    let stopped = CancellationToken::new();
    let writer = tokio::spawn({
        let (client, project, landed, stopped) = (client.clone(), project.clone(), landed.clone(), stopped.clone());
        async move {
            let (mut creates, mut after_stop) = (Vec::new(), 0);
            for i in 0.. {
                after_stop += usize::from(stopped.is_cancelled());
                if after_stop > 5 {
                    break;
                }
                let (client, project, landed) = (client.clone(), project.clone(), landed.clone());
                creates.push(tokio::spawn(async move {
                    let title = format!("bead {i}");
                    let result = client.create_beads(vec![NewBead::new(project, title.clone())]).await;
                    result.map(|_| landed.fetch_add(1, Ordering::SeqCst)).map(|_| title)
                }));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            creates
        }
    });
    let waited = Instant::now();
    while landed.load(Ordering::SeqCst) < 3 {
        assert!(waited.elapsed() < Duration::from_secs(10), "creates land while the service runs");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    guard.service.stop().await;
    stopped.cancel();
    let (mut acknowledged, mut refused) = (BTreeSet::new(), 0);
    for create in writer.await.unwrap() {
        match create.await.unwrap() {
            Ok(title) => drop(acknowledged.insert(title)),
            Err(e) => {
                assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
                refused += 1;
            }
        }
    }
    assert!(acknowledged.len() >= 3 && refused >= 5, "{} landed, {refused} refused", acknowledged.len());

    // While it is down: the circuit opens and calls fail at once with a clear error.
    let mut last = None;
    for _ in 0..10 {
        let err = client.get_project(&project).await.unwrap_err();
        let open = err.to_string().contains("circuit open");
        last = Some(err);
        if open {
            break;
        }
    }
    let last = last.unwrap();
    assert!(matches!(last, Error::Unavailable(_)), "{last:?}");
    assert!(client.circuit_open());
    let started = Instant::now();
    let err = client.get_project(&project).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(50), "fails fast: {:?}", started.elapsed());
    let text = err.to_string();
    assert!(text.contains("database service unavailable (circuit open)") && text.contains(&addr.to_string()), "{text}");
    assert!(text.contains("connect"), "says why: {text}");

    // Back on the same port: the breaker half-opens by itself and calls succeed again.
    let service = Service::start_on(addr, pg.clone(), ServerConfig::default()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_project(&project).await {
            Ok(p) => break assert_eq!(p.id, project),
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the client did not recover within 10 s: {e}"),
        }
    }
    assert!(!client.circuit_open());

    // Nothing half-written: exactly the acknowledged beads exist, each with its creation event.
    let filter = BeadFilter { project: Some(project.clone()), ..BeadFilter::default() };
    let beads = client.list_beads(&filter, &PageRequest::first(100)).await.unwrap().beads;
    let stored: BTreeSet<String> = beads.iter().map(|b| b.title.clone()).collect();
    assert_eq!(stored, acknowledged, "every acknowledged create landed, and only those");
    let created = pg.list_events(0, 1000).await.unwrap().into_iter().filter(|e| e.kind == EventKind::BeadCreated);
    assert_eq!(created.count(), beads.len(), "one creation event per bead");
    service.stop().await;
}
