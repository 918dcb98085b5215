//! An agent's `/metrics` and `/readyz` after a known number of tasks. A test binary of its own:
//! the Prometheus recorder is process-wide, so no other test's tasks count.

#[allow(dead_code, unreachable_pub)]
#[path = "it/support.rs"]
mod support;

use std::time::Duration;

use loom_agent::ExecutorKind;
use loom_telemetry::Readiness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use support::{Agent, Repo, cancel_of, final_result, nats, nats_cleanup, publish, results, task};

/// `GET path` on `addr`: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics listener");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The value of the sample `name{labels}` (any label order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            return None;
        }
        let mut have: Vec<(&str, &str)> = rest
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('=').map(|(k, v)| (k, v.trim_matches('"'))))
            .collect();
        let mut want = labels.to_vec();
        have.sort_unstable();
        want.sort_unstable();
        (have == want).then(|| value.parse().expect("a number"))
    })
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
    let text = get(addr, "/metrics").await.1;
    assert_eq!(sample(&text, "loom_agent_slots", &[project, ("state", "free")]), Some(0.0), "{text}");
    stop_probes.cancel();
    nats_cleanup(bus).await;
}
