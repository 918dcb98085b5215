//! One bead, one trace: the whole system in one process — the database service over gRPC in
//! front of a scratch PostgreSQL database, the control plane using it, NATS (a namespace of the
//! shared server), a real agent fenced through the API — exporting its spans to an in-test OTLP
//! receiver. A test binary of its own: the subscriber and the exporter are process-wide.

#[allow(dead_code, unreachable_pub)]
#[path = "it/support.rs"]
mod support;
#[allow(dead_code)]
mod whole;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt as _;
use loom_telemetry::receiver::{ReceivedSpan, Receiver};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bead_is_one_trace_from_the_api_through_the_database_service_bus_and_agent_back_to_the_result() {
    let receiver = Receiver::start().await.unwrap();
    let telemetry = loom_telemetry::init_with(
        loom_telemetry::LogFormat::Text,
        "info",
        &loom_telemetry::TraceExport::to(receiver.endpoint(), "loom-trace-test"),
    )
    .unwrap();
    assert!(telemetry.exporting());
    let system = whole::Whole::start("traced", loom_agent::ExecutorKind::Shell).await;

    // Tasks as NATS carries them: a plain subscriber on the tasks subjects sees each publish.
    let nats_url = std::env::var("LOOM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let watcher = async_nats::connect(nats_url).await.unwrap();
    let mut tasks = watcher.subscribe(system.bus.subjects().tasks(&system.project, None)).await.unwrap();

    let bead = system.bead("write hello", json!({ "executor": "shell", "command": "echo hello > hello.txt" })).await;
    let task = tokio::time::timeout(Duration::from_secs(20), tasks.next()).await.expect("a task on NATS").unwrap();
    let headers = task.headers.expect("the task has headers");
    let traceparent = headers.get("traceparent").expect("the task carries traceparent").as_str().to_owned();
    assert!(traceparent.starts_with("00-"), "{traceparent}");
    system.closed(&bead).await;
    assert!(system.repo.show("main", "hello.txt").is_some(), "the work was pushed");

    // Everything is exported (the batch processor sends on flush).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        telemetry.flush();
        let spans = receiver.spans();
        if spans.iter().any(|s| s.name() == "apply loom.results" && s.attr("bead_id").as_deref() == Some(&*bead)) {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "no result span was exported: {:?}", names(&spans));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(spans.iter().all(|s| s.service == "loom-trace-test"), "the service name is the configured one");

    let http_span = one(&spans, |s| s.name() == "POST /api/v1/beads");
    let trace = http_span.trace_id();
    assert_eq!(traceparent.split('-').nth(1), Some(&*trace), "the task's traceparent continues the bead's trace");
    let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id() == trace).collect();
    let by_id: HashMap<String, &ReceivedSpan> = in_trace.iter().map(|s| (s.span_id(), *s)).collect();
    let parent = |s: &ReceivedSpan| by_id.get(&s.parent_id()).copied();
    let descends = |s: &ReceivedSpan, ancestor: &ReceivedSpan| {
        let mut at = parent(s);
        while let Some(p) = at {
            if p.span_id() == ancestor.span_id() {
                return true;
            }
            at = parent(p);
        }
        false
    };
    let find = |name: &str| {
        let found: Vec<&ReceivedSpan> = in_trace.iter().copied().filter(|s| s.name() == name).collect();
        assert!(!found.is_empty(), "no {name:?} span in the bead's trace; it has {:?}", names_of(&in_trace));
        found
    };

    // The database service answered the create in the same trace, below the HTTP request.
    let db_calls = in_trace.iter().filter(|s| s.name().starts_with("loom.db.v1.Database/")).collect::<Vec<_>>();
    assert!(
        db_calls.iter().any(|s| descends(s, http_span)),
        "no database service span below the API request: {:?}",
        names_of(&in_trace)
    );
    // API request → task publish → the agent's consumer span → executor → command, push.
    let publish = find("publish loom.tasks")[0];
    assert_eq!(publish.attr("bead_id").as_deref(), Some(&*bead));
    assert_eq!(publish.parent_id(), http_span.span_id(), "the publish continues the request");
    assert_eq!(traceparent.split('-').nth(2), Some(&*publish.span_id()), "the task names its publish span");
    let process = find("process loom.tasks")[0];
    assert_eq!(process.parent_id(), publish.span_id(), "the agent's span is a child of the publish");
    let executor = find("executor shell")[0];
    assert!(descends(executor, process));
    assert!(descends(find("command shell")[0], executor));
    assert!(descends(find("git.push")[0], executor));
    // The agent's fence calls reach the control plane in the same trace.
    let start = find("POST /api/v1/beads/{id}/start")[0];
    assert!(descends(start, process));
    // The result goes back under the agent's span and is applied in the same trace.
    let result_publish = find("publish loom.results")[0];
    assert!(descends(result_publish, process));
    let applied = find("apply loom.results")
        .into_iter()
        .find(|s| s.attr("kind").is_some_and(|k| k.contains("Completed")))
        .expect("the final result's apply span");
    assert!(descends(applied, result_publish), "the apply is below the result's publish");
    assert_eq!(applied.attr("outcome").as_deref(), Some("closed"));
    assert!(
        in_trace.iter().any(|s| s.name().starts_with("loom.db.v1.Database/RecordResult") && descends(s, applied)),
        "the result's store call is in its trace: {:?}",
        names_of(&in_trace)
    );

    system.stop().await;
    telemetry.shutdown();
}

fn one(spans: &[ReceivedSpan], pick: impl Fn(&ReceivedSpan) -> bool) -> &ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "{:?}", names(spans));
    found[0]
}

fn names(spans: &[ReceivedSpan]) -> Vec<String> {
    spans.iter().map(|s| s.name().to_owned()).collect()
}

fn names_of(spans: &[&ReceivedSpan]) -> Vec<String> {
    spans.iter().map(|s| format!("{} <- {}", s.name(), s.parent_id())).collect()
}
