//! An agent's `/metrics` and `/readyz` after a known number of tasks. A test binary of its own:
//! the Prometheus recorder is process-wide, so no other test's tasks count.

#[allow(dead_code, unreachable_pub)]
#[path = "it/support.rs"]
mod support;

use std::time::Duration;

use loom_agent::ExecutorKind;
use loom_telemetry::Readiness;
use loom_telemetry::scrape::sample;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use support::{Agent, Repo, cancel_of, final_result, nats, nats_cleanup, publish, results, task};

/// `GET path` on `addr`: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    loom_telemetry::scrape::get(addr, path).await.expect("the metrics listener answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_known_tasks_counts_them_and_readiness_follows_the_bus() {
    let repo = Repo::new();
    let bus = nats().await;
    let mut sub = results(&bus).await;
    let readiness = Readiness::new();
    let stop_probes = CancellationToken::new();
    let probes = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probes.local_addr().unwrap();
    tokio::spawn(loom_telemetry::serve_probes(probes, readiness.clone(), stop_probes.clone()));

    let mut config = repo.config("metered");
    config.default_executor = ExecutorKind::Noop;
    config.concurrency = 2;
    config.readiness = Some(readiness);
    let agent = Agent::start(config, &bus);
    let mut last = None;
    for n in 1..=3 {
        let t = task("metered", &format!("metered-{n}"), "", &[]);
        publish(&bus, &t).await;
        let r = final_result(&mut sub).await;
        assert_eq!(r.kind, loom_bus::ResultKind::Completed);
        last = Some(t);
    }
    // A cancel of a finished task: handled (acked), nothing runs.
    publish(&bus, &cancel_of(&last.unwrap())).await;

    let project = ("project", "metered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        let cancels =
            sample(&text, "loom_agent_bus_messages_total", &[project, ("handler", "cancel"), ("outcome", "ok")]);
        let ran = sample(&text, "loom_agent_bus_messages_total", &[project, ("handler", "task"), ("outcome", "ran")]);
        if cancels == Some(1.0) && ran == Some(3.0) {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "the bus messages were not counted: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sample(&text, "loom_agent_tasks_total", &[project, ("outcome", "success")]), Some(3.0), "{text}");
    assert_eq!(sample(&text, "loom_agent_tasks_total", &[project, ("outcome", "failure")]), None, "{text}");
    assert_eq!(sample(&text, "loom_agent_task_duration_seconds_count", &[project]), Some(3.0), "{text}");
    assert_eq!(sample(&text, "loom_agent_slots", &[project, ("state", "free")]), Some(2.0), "{text}");
    assert_eq!(sample(&text, "loom_agent_slots", &[project, ("state", "busy")]), Some(0.0), "{text}");
    for line in text.lines().filter(|l| l.starts_with("loom_agent")) {
        assert!(!line.contains("metered-") && !line.contains("bead"), "a raw id in a label: {line}");
    }
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_owned()));

    // A stopped agent is not ready (it no longer takes tasks), and its slots are gone.
    agent.stop().await;
    assert_eq!(get(addr, "/readyz").await, (503, "not ready: bus\n".to_owned()));
    // The earlier implementation's probe paths answer the same.
    assert_eq!(get(addr, "/health/ready").await, (503, "not ready: bus\n".to_owned()));
    assert_eq!(get(addr, "/health").await, (503, "not ready: bus\n".to_owned()));
    assert_eq!(get(addr, "/health/live").await, (200, "ok\n".to_owned()));
    let text = get(addr, "/metrics").await.1;
    assert_eq!(sample(&text, "loom_agent_slots", &[project, ("state", "free")]), Some(0.0), "{text}");
    stop_probes.cancel();
    nats_cleanup(bus).await;
}
