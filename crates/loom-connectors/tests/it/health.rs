//! Health: statuses and timeouts against real endpoints, concurrency of `check_all`, exactly
//! one event (and one watched change) per change of status, background checks.

use std::time::{Duration, Instant};

use loom_connectors::{Kind, Spec, Status};

use crate::support::{Behaviour, Endpoint, Fixture, eventually};

fn spec(id: &str, kind: Kind, url: &str, timeout_ms: u64) -> Spec {
    let mut s = Spec::new(id, kind, url);
    s.check_timeout = Duration::from_millis(timeout_ms);
    // Background checks out of the way: the tests check by hand.
    s.check_interval = Duration::from_secs(3600);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_timeouts_of_real_endpoints() {
    let f = Fixture::start().await;
    let healthy = Endpoint::start(Behaviour::Ok).await;
    let failing = Endpoint::start(Behaviour::Status(503)).await;
    let slow = Endpoint::start(Behaviour::Slow(Duration::from_secs(5))).await;
    let c = &f.connectors;
    c.register(spec("prom", Kind::Prometheus, &healthy.url(), 1000)).await.unwrap();
    c.register(spec("graf", Kind::Grafana, &failing.url(), 1000)).await.unwrap();
    c.register(spec("slow", Kind::Http, &slow.url(), 300)).await.unwrap();
    let mut llm = spec("llm", Kind::LlmProvider, &healthy.url(), 1000);
    llm.secrets.insert("api_key".into(), "sk-test".into());
    c.register(llm).await.unwrap();
    let mut down = spec("down", Kind::Jaeger, "http://127.0.0.1:9", 1000);
    down.description = "nothing listens on port 9".into();
    c.register(down).await.unwrap();

    let started = Instant::now();
    let all = c.check_all().await.unwrap();
    let elapsed = started.elapsed();
    let by_id = |id: &str| all.iter().find(|h| h.connector_id == id).unwrap().clone();
    assert_eq!(by_id("prom").status, Status::Healthy);
    let graf = by_id("graf");
    assert_eq!((graf.status, graf.message.as_str()), (Status::Unhealthy, "HTTP 503"));
    let slow_h = by_id("slow");
    assert_eq!((slow_h.status, slow_h.message.as_str()), (Status::Unhealthy, "timed out after 300ms"));
    assert!(slow_h.latency < Duration::from_millis(1000), "the timeout cut the check: {:?}", slow_h.latency);
    let llm = by_id("llm");
    assert_eq!(llm.status, Status::Healthy);
    assert_eq!(llm.models, ["gpt-test", "gpt-big"]);
    let down = by_id("down");
    assert!(down.status == Status::Unhealthy && down.message.starts_with("unreachable"), "{down:?}");
    assert!(elapsed < Duration::from_millis(1500), "checks ran concurrently: {elapsed:?}");

    // Each check hit the kind's path; the LLM provider's carried its key.
    let paths: Vec<String> = healthy.received().iter().map(|r| r.path.clone()).collect();
    assert!(paths.contains(&"/-/healthy".to_owned()) && paths.contains(&"/v1/models".to_owned()), "{paths:?}");
    let models = healthy.received().into_iter().find(|r| r.path == "/v1/models").unwrap();
    assert_eq!(models.headers["authorization"], "Bearer sk-test");
    assert_eq!(failing.received()[0].path, "/api/health");

    // The last health is what Get and List show.
    assert_eq!(c.get("graf").await.unwrap().health.message, "HTTP 503");
    assert!(c.list().await.unwrap().iter().all(|x| x.health.status != Status::Unknown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_change_of_status_and_none_otherwise() {
    let f = Fixture::start().await;
    let flapping = Endpoint::start(Behaviour::Ok).await;
    let c = &f.connectors;
    let mut watch = c.watch();
    // A timeout a loaded machine does not reach by accident: the scheduler's first background
    // check (within a second of registering) must see what the manual ones see.
    c.register(spec("flap", Kind::Http, &flapping.url(), 2000)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.check("flap").await.unwrap().status, Status::Healthy);
    }
    flapping.set(Behaviour::Status(500));
    for _ in 0..3 {
        assert_eq!(c.check("flap").await.unwrap().status, Status::Unhealthy);
    }
    flapping.set(Behaviour::Slow(Duration::from_secs(5)));
    let h = c.check("flap").await.unwrap();
    assert_eq!((h.status, h.message.as_str()), (Status::Unhealthy, "timed out after 2s"), "still unhealthy");
    flapping.set(Behaviour::Ok);
    for _ in 0..2 {
        assert_eq!(c.check("flap").await.unwrap().status, Status::Healthy);
    }
    let expected = [("unknown", "healthy"), ("healthy", "unhealthy"), ("unhealthy", "healthy")]
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
    eventually(Duration::from_secs(5), "three events", || async { f.changes("flap").await.len() >= 3 }).await;
    // Give a stray extra event the time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.changes("flap").await, expected, "one event per change, in order");
    let mut watched = Vec::new();
    while let Ok(change) = watch.try_recv() {
        watched.push((change.previous.as_str().to_owned(), change.health.status.as_str().to_owned()));
    }
    assert_eq!(watched, expected, "WatchHealth streams the same changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_checks_run_on_the_interval_and_stop_for_a_disabled_connector() {
    let f = Fixture::start().await;
    let endpoint = Endpoint::start(Behaviour::Ok).await;
    let c = &f.connectors;
    let mut s = spec("bg", Kind::Http, &endpoint.url(), 500);
    s.check_interval = Duration::from_millis(200);
    let created = c.register(s.clone()).await.unwrap();
    eventually(Duration::from_secs(5), "a background check", || async {
        c.get("bg").await.unwrap().health.status == Status::Healthy
    })
    .await;
    endpoint.set(Behaviour::Status(502));
    eventually(Duration::from_secs(5), "the failure noticed without a call", || async {
        c.get("bg").await.unwrap().health.message == "HTTP 502"
    })
    .await;
    let before = endpoint.received().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = endpoint.received().len() - before;
    assert!((2..=10).contains(&during), "about one check per 200 ms (jittered), got {during} in 1 s");

    s.mode = loom_connectors::Mode::Disabled;
    c.update(created.version, s, &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = endpoint.received().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(endpoint.received().len(), after, "a disabled connector is not checked");
    assert_eq!(c.check("bg").await.unwrap().status, Status::Unknown);
}

/// Two replicas of the service over one store check the same flapping endpoint, each on its own
/// schedule: every change of its health is one event, not one per replica — also when the
/// replica recording them stops and the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_record_one_event_per_change() {
    let ttl = Duration::from_secs(2);
    // The first replica takes the events' lease as it starts; the second cannot while it runs.
    let f = Fixture::start_with_lease(ttl).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (b, stop_b) = f.replica(ttl).await;
    let flapping = Endpoint::start(Behaviour::Ok).await;
    let mut s = spec("flap", Kind::Http, &flapping.url(), 300);
    s.check_interval = Duration::from_millis(200);
    f.connectors.register(s).await.unwrap();
    let replicas = [f.connectors.clone(), b.clone()];

    let mut expected: Vec<(String, String)> = Vec::new();
    let mut previous = Status::Unknown;
    let steps = [Behaviour::Ok, Behaviour::Status(500), Behaviour::Ok, Behaviour::Status(503), Behaviour::Ok];
    for (i, behaviour) in steps.into_iter().enumerate() {
        // The last step runs on the second replica alone: the first, which recorded so far, stops.
        let running = if i == 4 {
            f.stop.cancel();
            &replicas[1..]
        } else {
            &replicas[..]
        };
        let want = if matches!(behaviour, Behaviour::Ok) { Status::Healthy } else { Status::Unhealthy };
        flapping.set(behaviour);
        eventually(Duration::from_secs(10), &format!("every running replica in step {i}"), || async {
            for r in running {
                if r.get("flap").await.unwrap().health.status != want {
                    return false;
                }
            }
            true
        })
        .await;
        expected.push((previous.as_str().to_owned(), want.as_str().to_owned()));
        previous = want;
        eventually(Duration::from_secs(5), &format!("the event of step {i}"), || async {
            f.changes("flap").await.len() >= expected.len()
        })
        .await;
        // Both replicas check a few more times (and saw the change): still one event.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(f.changes("flap").await, expected, "step {i}: one event per change, in order");
    }
    stop_b.cancel();
}
