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
use loom_telemetry::receiver::{ReceivedSpan, Receiver, SpanKind};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bead_is_one_trace_from_the_api_through_the_database_service_bus_and_agent_back_to_the_result() {
    let receiver = Receiver::start().await.unwrap();
    let telemetry = loom_telemetry::init_with(
        loom_telemetry::LogFormat::Text,
        "info",
        // Named by part, as `loom up` exports them.
        &loom_telemetry::TraceExport::to(receiver.endpoint(), "loom-trace-test").by_part(),
    )
    .unwrap();
    assert!(telemetry.exporting());
    let system = whole::Whole::start("traced", loom_agent::ExecutorKind::Shell).await;

    // Tasks as NATS carries them: a plain subscriber on the tasks subjects sees each publish.
    let nats_url = std::env::var("LOOM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let watcher = async_nats::connect(nats_url).await.unwrap();
    let mut tasks = watcher.subscribe(system.bus.subjects().tasks(&system.project, None)).await.unwrap();

    // The first attempt fails; the retry (a new dispatch) succeeds.
    let marker = system.repo.shared().join("attempted");
    let command = format!("test -f {m} || {{ touch {m}; exit 1; }}; echo hello > hello.txt", m = marker.display());
    let bead = system.bead("write hello", json!({ "executor": "shell", "command": command })).await;
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
        db_calls.iter().any(|s| descends(s, http_span) && s.service == "loom-db"),
        "no database service span below the API request: {:?}",
        names_of(&in_trace)
    );
    // Each part under its own service name: the client side of a call is the caller's.
    let is = |s: &ReceivedSpan, service: &str| assert_eq!(s.service, service, "the service of {}", s.name());
    is(http_span, "loom-control-plane");
    for call in &db_calls {
        let server = call.span.kind == SpanKind::Server as i32;
        is(call, if server { "loom-db" } else { "loom-control-plane" });
    }
    // API request → task publish → the agent's consumer span → executor → command, push.
    // Both attempts are published in the bead's trace, continuing the request; the second is
    // linked to the first.
    let publishes = find("publish loom.tasks");
    let attempt = |n: &str| {
        *publishes.iter().find(|s| s.attr("attempt").as_deref() == Some(n)).unwrap_or_else(|| panic!("attempt {n}"))
    };
    let (first, publish) = (attempt("1"), attempt("2"));
    for p in [first, publish] {
        is(p, "loom-control-plane");
        assert_eq!(p.attr("bead_id").as_deref(), Some(&*bead));
        assert_eq!(p.parent_id(), http_span.span_id(), "the publish continues the request");
    }
    assert_eq!(traceparent.split('-').nth(2), Some(&*first.span_id()), "the task names its publish span");
    assert_eq!(publish.links(), vec![first.span_id()], "the retry is linked to the first attempt");
    let processes = find("process loom.tasks");
    assert_eq!(processes.len(), 2, "one consumer span per attempt");
    assert!(processes.iter().any(|p| p.parent_id() == first.span_id()));
    let process = *processes.iter().find(|p| p.parent_id() == publish.span_id()).expect("the retry's consumer span");
    let executor = *find("executor shell").iter().find(|e| descends(e, process)).expect("the retry's executor");
    let command = *find("command shell").iter().find(|c| descends(c, executor)).expect("the retry's command");
    assert!(descends(find("git.push")[0], executor));
    for agent_span in [process, executor, command, find("git.push")[0]] {
        is(agent_span, "loom-agent");
    }
    // The agent's fence calls reach the control plane in the same trace.
    let start = *find("POST /api/v1/beads/{id}/start").iter().find(|s| descends(s, process)).expect("the fence call");
    is(start, "loom-control-plane");
    // The result goes back under the agent's span and is applied in the same trace.
    let result_publish =
        *find("publish loom.results").iter().find(|r| descends(r, process)).expect("the retry's result publish");
    let applied = find("apply loom.results")
        .into_iter()
        .find(|s| s.attr("kind").is_some_and(|k| k.contains("Completed")))
        .expect("the final result's apply span");
    assert!(descends(applied, result_publish), "the apply is below the result's publish");
    is(result_publish, "loom-agent");
    is(applied, "loom-control-plane");
    let failed = find("apply loom.results").into_iter().find(|s| s.attr("kind").is_some_and(|k| k.contains("Failed")));
    assert_eq!(failed.and_then(|f| f.attr("outcome")).as_deref(), Some("retrying"), "the first attempt's result");
    assert_eq!(applied.attr("outcome").as_deref(), Some("closed"));
    assert!(
        in_trace.iter().any(|s| s.name().starts_with("loom.db.v1.Database/RecordResult") && descends(s, applied)),
        "the result's store call is in its trace: {:?}",
        names_of(&in_trace)
    );

    // A JetStream redelivery of one message: each delivery's consumer span is a child of the
    // publisher's span, in its trace; the redelivery is also linked to it and counted.
    let project = loom_domain::ProjectId::parse("redelivered").unwrap();
    let options = loom_bus::ConsumeOptions { max_in_flight: 1, prefetch: false };
    let mut sub = system.bus.consume_tasks(&project, None, options).await.unwrap();
    let publisher = tracing::info_span!("test.publish");
    let out = publisher.in_scope(|| {
        system
            .bus
            .task(&support::task("redelivered", "red-1", "noop", &[]), &loom_bus::TraceContext::default())
            .unwrap()
    });
    system.bus.publish(out).await.unwrap();
    let consumer_span = || tracing::info_span!("test.consume", messaging.delivery_count = tracing::field::Empty);
    let first = tokio::time::timeout(Duration::from_secs(20), sub.next()).await.unwrap().unwrap();
    let first_span = consumer_span();
    first.delivery.follow(&first_span);
    drop(first_span);
    drop(first); // unsettled: redelivered after the ack wait
    let again = tokio::time::timeout(Duration::from_secs(20), sub.next()).await.unwrap().unwrap();
    assert_eq!(again.delivery.deliveries(), 2);
    let again_span = consumer_span();
    again.delivery.follow(&again_span);
    drop(again_span);
    again.delivery.ack().await.unwrap();
    drop(publisher);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        telemetry.flush();
        let spans = receiver.spans();
        let publish = spans.iter().find(|s| s.name() == "test.publish");
        if publish.is_some() && spans.iter().filter(|s| s.name() == "test.consume").count() == 2 {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "the redelivery spans were not exported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let publish = spans.iter().find(|s| s.name() == "test.publish").unwrap();
    assert_eq!(publish.service, "loom-trace-test", "a span of no part has the process's name");
    let consumes: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name() == "test.consume").collect();
    for c in &consumes {
        assert_eq!((c.trace_id(), c.parent_id()), (publish.trace_id(), publish.span_id()), "a child of the publish");
    }
    let redelivery = consumes.iter().find(|c| c.attr("messaging.delivery_count").as_deref() == Some("2"));
    let redelivery = redelivery.expect("the redelivery's span is counted");
    assert_eq!(redelivery.links(), vec![publish.span_id()], "and linked to the publish");
    assert!(consumes.iter().any(|c| c.links().is_empty()), "the first delivery is not a redelivery");
    drop(sub);

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
