//! A scrape of the whole system after a known workload: the control plane's `/metrics` (in one
//! process the database service's and the agent's metrics share its recorder) has the RED
//! series per HTTP route (templated), gRPC method and bus handler, the latency histograms, the
//! gauges the dashboard and the alerts watch, with the expected counts — and every metric that
//! `deploy/grafana/loom-dashboard.json` and `deploy/prometheus/alerts.yml` name is one the
//! scrape has. A test binary of its own: the Prometheus recorder is process-wide.

#[allow(dead_code, unreachable_pub)]
#[path = "it/support.rs"]
mod support;
#[allow(dead_code)]
mod whole;

use std::collections::BTreeSet;
use std::time::Duration;

use loom_telemetry::scrape::sample;
use serde_json::json;

const BEADS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrape_after_a_known_workload_has_the_expected_names_labels_and_counts() {
    let system = whole::Whole::start("scraped", loom_agent::ExecutorKind::Noop).await;
    let mut beads = Vec::new();
    for n in 0..BEADS {
        beads.push(system.bead(&format!("noop {n}"), json!({ "executor": "noop" })).await);
    }
    for bead in &beads {
        system.closed(bead).await;
    }

    // Results are counted right after they commit: wait for the last of them, and for the
    // outbox relay's first pass (every 250 ms on the leader), which sets the backlog gauge.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = loom_telemetry::scrape::get(system.cp_addr, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        let closed = sample(&text, "loom_bus_messages_total", &[("handler", "results"), ("outcome", "closed")]);
        if closed == Some(BEADS as f64) && sample(&text, "loom_outbox_backlog", &[]).is_some() {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "the results were not counted: {closed:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let n = BEADS as f64;
    let get = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);

    // RED per HTTP route, by template.
    let posted = [("method", "POST"), ("route", "/api/v1/beads"), ("status", "201")];
    assert_eq!(get("loom_http_requests_total", &posted), Some(n), "{text}");
    assert_eq!(get("loom_http_request_duration_seconds_count", &posted[..2]), Some(n), "{text}");
    let read = [("method", "GET"), ("route", "/api/v1/beads/{id}"), ("status", "200")];
    assert!(get("loom_http_requests_total", &read).is_some_and(|v| v >= n), "{text}");
    // The agent's start reports go through the API too, one per bead.
    let started = [("method", "POST"), ("route", "/api/v1/beads/{id}/start"), ("status", "200")];
    assert_eq!(get("loom_http_requests_total", &started), Some(n), "{text}");
    for line in text.lines().filter(|l| l.starts_with("loom_")) {
        assert!(!beads.iter().any(|b| line.contains(b.as_str())), "a raw id in a label: {line}");
    }

    // RED per gRPC method of the database service: one create per bead (claimed in its commit,
    // or open and claimed later).
    let db = ("service", "loom.db.v1.Database");
    let creates = ["CreateClaimed", "CreateBeads"]
        .iter()
        .filter_map(|m| get("loom_grpc_server_requests_total", &[db, ("method", m), ("code", "OK")]))
        .sum::<f64>();
    assert_eq!(creates, n, "{text}");
    assert!(get("loom_grpc_server_requests_total", &[db, ("method", "RecordResults"), ("code", "OK")]).is_some());

    // RED per bus handler of the control plane, and the agent's.
    assert_eq!(get("loom_bus_handler_duration_seconds_count", &[("handler", "results")]), Some(n), "{text}");
    assert_eq!(get("loom_results_total", &[("outcome", "closed")]), Some(n), "{text}");
    let project = ("project", "scraped");
    assert_eq!(
        get("loom_agent_bus_messages_total", &[project, ("handler", "task"), ("outcome", "ran")]),
        Some(n),
        "{text}"
    );

    // Dispatch latency and queue wait: one observation per bead.
    assert_eq!(get("loom_dispatch_latency_seconds_count", &[]), Some(n), "{text}");
    assert_eq!(get("loom_agent_queue_wait_seconds_count", &[project]), Some(n), "{text}");

    // Gauges: beads by status, agents by status, slots, queue, DLQ, leader, breaker.
    assert_eq!(get("loom_beads", &[("status", "closed")]), Some(n), "{text}");
    assert_eq!(get("loom_beads", &[("status", "open")]), Some(0.0), "{text}");
    let agents: f64 = ["idle", "busy", "draining", "offline"]
        .iter()
        .map(|s| get("loom_agents", &[("status", s)]).expect("every agent status has a series"))
        .sum();
    assert_eq!(agents, 1.0, "{text}");
    assert_eq!(get("loom_dispatch_slots", &[("state", "advertised")]), Some(2.0), "{text}");
    assert_eq!(get("loom_dispatch_slots", &[("state", "in_use")]), Some(0.0), "{text}");
    assert_eq!(get("loom_bus_stream_messages", &[("stream", "tasks")]), Some(0.0), "{text}");
    assert_eq!(get("loom_bus_stream_messages", &[("stream", "dlq")]), Some(0.0), "{text}");
    assert_eq!(get("loom_bus_consumer_ack_pending", &[("consumer", "control-plane-results")]), Some(0.0), "{text}");
    assert_eq!(get("loom_leader", &[]), Some(1.0), "{text}");
    assert_eq!(get("loom_db_client_breaker_open", &[]), Some(0.0), "{text}");
    assert!(get("loom_outbox_backlog", &[]).is_some(), "{text}");

    // Conventions: counters end in `_total`, nothing else does; times are in seconds.
    for line in text.lines().filter(|l| l.starts_with("# TYPE loom_")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        let timed = ["_duration", "_latency", "_wait", "_ms", "_millis"].iter().any(|t| name.contains(t));
        assert!(!timed || name.ends_with("_seconds"), "a time not in seconds: {line}");
    }

    // The dashboard and the alerts watch only metrics the services emit.
    let scraped: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(base_name)
        .collect();
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let dashboard = std::fs::read_to_string(format!("{deploy}/grafana/loom-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("every panel has targets");
        assert!(!targets.is_empty(), "{panel}");
        exprs.extend(targets.iter().map(|t| t["expr"].as_str().expect("a target has an expr").to_owned()));
    }
    let rules = std::fs::read_to_string(format!("{deploy}/prometheus/alerts.yml")).unwrap();
    let alerts = alert_rules(&rules);
    let names: BTreeSet<&str> = alerts.iter().map(|(name, _)| name.as_str()).collect();
    let expected = [
        "LoomDatabaseBreakerOpen",
        "LoomDeadLettersGrowing",
        "LoomNoDispatcherLeader",
        "LoomOutboxStuck",
        "LoomTaskQueueStuck",
    ];
    assert_eq!(names, expected.into_iter().collect(), "{rules}");
    exprs.extend(alerts.into_iter().map(|(_, expr)| expr));
    for expr in &exprs {
        for metric in metric_names(expr) {
            assert!(scraped.contains(base_name(&metric)), "{metric} (in {expr:?}) is not emitted");
        }
    }

    consumer_lag_is_the_agents_own_consumers(&system).await;
    outbox_backlog_is_exact_past_one_relay_batch(&system).await;
    system.stop().await;
}

/// A metric, its labels and a value.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Waits until the control plane's scrape has the value of each expected `(metric, labels)`.
async fn scraped_until(system: &whole::Whole, want: &[Expected<'_>]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = loom_telemetry::scrape::get(system.cp_addr, "/metrics");
        let (_, text) = tokio::time::timeout(Duration::from_secs(10), scrape).await.expect("a scrape answers").unwrap();
        let got: Vec<Option<f64>> = want.iter().map(|(name, labels, _)| sample(&text, name, labels)).collect();
        if want.iter().zip(&got).all(|((_, _, v), g)| *g == Some(*v)) {
            return;
        }
        let names: Vec<&str> = want.iter().map(|(n, ..)| *n).collect();
        assert!(tokio::time::Instant::now() < deadline, "{names:?} never reached {want:?}: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An agent of its own (its own bus namespace, which the control plane never binds) holding
/// one task that waits, with three queued behind it: its task consumer's pending and ack
/// pending, as the agent reports them, are JetStream's figures — and drop to zero once it runs.
async fn consumer_lag_is_the_agents_own_consumers(system: &whole::Whole) {
    let bus = support::nats().await;
    let mut config = system.repo.config("lagging");
    config.default_executor = loom_agent::ExecutorKind::Shell;
    config.concurrency = 1;
    config.heartbeat_interval = Duration::from_millis(200);
    let agent = support::Agent::start(config, &bus);
    let gate = system.repo.shared().join("lag-gate");
    let wait = format!("while [ ! -f {} ]; do sleep 0.1; done", gate.display());
    support::publish(&bus, &support::task("lagging", "lag-0", "shell", &[("command", &wait)])).await;
    for n in 1..=3 {
        support::publish(&bus, &support::task("lagging", &format!("lag-{n}"), "noop", &[])).await;
    }
    let consumer = [("consumer", "agents-lagging")];
    scraped_until(
        system,
        &[("loom_bus_consumer_pending", &consumer, 3.0), ("loom_bus_consumer_ack_pending", &consumer, 1.0)],
    )
    .await;
    std::fs::write(&gate, "").unwrap();
    scraped_until(
        system,
        &[("loom_bus_consumer_pending", &consumer, 0.0), ("loom_bus_consumer_ack_pending", &consumer, 0.0)],
    )
    .await;
    agent.stop().await;
    support::nats_cleanup(bus).await;
}

/// 600 claims left by a control plane that died before publishing them (one transaction, so
/// the backlog appears at once): the gauge shows all of them, past the relay's batch of 512,
/// and zero once the relay has published them (after their grace period).
async fn outbox_backlog_is_exact_past_one_relay_batch(system: &whole::Whole) {
    const CLAIMED: usize = 600;
    let (status, body) =
        system.post("/api/v1/projects", json!({ "id": "backlogged", "git_repo": system.repo.remote })).await;
    assert!(status.is_success(), "{body}");
    let project = loom_domain::ProjectId::parse("backlogged").unwrap();
    let beads = (0..CLAIMED).map(|n| loom_domain::NewBead::new(project.clone(), format!("queued {n}"))).collect();
    system.store.create_beads(beads).await.unwrap();
    let request = loom_store::ClaimRequest {
        project,
        max: CLAIMED as u32,
        now: chrono::Utc::now(),
        lease: Duration::from_secs(120),
        claimer: "a-dead-control-plane".into(),
    };
    assert_eq!(system.store.claim_ready(&request).await.unwrap().len(), CLAIMED);
    scraped_until(system, &[("loom_outbox_backlog", &[], CLAIMED as f64)]).await;
    scraped_until(system, &[("loom_outbox_backlog", &[], 0.0)]).await;
}

/// A histogram's series name without its `_bucket`, `_count` or `_sum`.
fn base_name(series: &str) -> &str {
    ["_bucket", "_count", "_sum"].iter().find_map(|s| series.strip_suffix(s)).unwrap_or(series)
}

/// The `loom_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("loom_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// `(alert, expr)` of a Prometheus rule file written as block YAML (`groups:` → `rules:` →
/// `- alert:` with `expr:`, `for:`, `labels: severity`, `annotations: summary`); refuses a
/// file that does not have that shape.
fn alert_rules(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(lines.first().copied(), Some("groups:"), "a rule file starts with `groups:`");
    assert!(lines.iter().any(|l| l.trim() == "rules:"), "a group has rules");
    let mut rules = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim().strip_prefix("- alert: ") else { continue };
        let body: Vec<&str> =
            lines[i + 1..].iter().take_while(|l| !l.trim_start().starts_with("- ")).map(|l| l.trim()).collect();
        let field = |key: &str| body.iter().find_map(|l| l.strip_prefix(key)).map(str::trim);
        let expr = field("expr:").unwrap_or_else(|| panic!("{name} has no expr"));
        assert!(field("for:").is_some(), "{name} has no `for:`");
        assert!(field("severity:").is_some(), "{name} has no severity");
        assert!(field("summary:").is_some(), "{name} has no summary");
        rules.push((name.trim().to_owned(), expr.to_owned()));
    }
    rules
}
