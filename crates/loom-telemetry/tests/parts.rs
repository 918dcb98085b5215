//! A process that runs several services (`loom up`) exports each one's spans under its own
//! `service.name`, in the same trace: by the crate that made the span, by its in-process parent
//! for a shared crate's span (the gRPC client layer, the bus), by the served package for a gRPC
//! server span continuing a remote caller. A test binary of its own: the subscriber is global.

use std::task::{Context, Poll};
use std::time::Duration;

use loom_telemetry::propagate::{TRACEPARENT, TraceClientLayer, TraceServerLayer};
use loom_telemetry::receiver::{ReceivedSpan, Receiver};
use tower::{Layer as _, Service as _};

/// A gRPC-like endpoint that answers at once (its span is the layer's).
#[derive(Clone)]
struct Answer;

impl tower::Service<http::Request<()>> for Answer {
    type Response = ();
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<(), Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        // A span of a shared crate, below the server span: the server's part.
        let _inner = tracing::info_span!(target: "loom_store::pg", "store.query").entered();
        std::future::ready(Ok(()))
    }
}

async fn serve(path: &str, traceparent: &str) {
    let request = http::Request::builder().uri(path).header(TRACEPARENT, traceparent).body(()).unwrap();
    TraceServerLayer.layer(Answer).call(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_part_of_one_process_exports_its_spans_under_its_own_service_name_in_one_trace() {
    let receiver = Receiver::start().await.unwrap();
    let export = loom_telemetry::TraceExport::to(receiver.endpoint(), "loom-parts-test").by_part();
    let telemetry = loom_telemetry::init_with(loom_telemetry::LogFormat::Text, "info", &export).unwrap();
    assert!(telemetry.exporting());

    let request = tracing::info_span!(target: "loom_control_plane::api", "http.request", otel.name = "POST /beads");
    let traceparent = {
        let _request = request.enter();
        let _publish = tracing::info_span!(target: "loom_bus::envelope", "bus.publish").entered();
        let mut client = TraceClientLayer.layer(Answer);
        let call = http::Request::builder().uri("/loom.db.v1.Database/CreateBeads").body(()).unwrap();
        client.call(call).await.unwrap();
        {
            let _check = tracing::info_span!(target: "loom_connectors::health", "connector.check").entered();
            let _shared = tracing::info_span!(target: "loom_bus::kv", "bus.kv").entered();
        }
        loom_telemetry::propagate::current().traceparent.expect("a traceparent while exporting")
    };
    // The services at the other end of the wire, in this process too.
    serve("/loom.db.v1.Database/CreateBeads", &traceparent).await;
    serve("/loom.connectors.v1.Connectors/ListConnectors", &traceparent).await;
    let task = tracing::info_span!(target: "loom_agent::agent::task", "agent.task", otel.kind = "consumer");
    loom_telemetry::propagate::set_parent(&task, Some(&traceparent), None);
    task.in_scope(|| drop(tracing::info_span!(target: "loom_bus::delivery", "bus.ack").entered()));
    drop(task);
    drop(request);
    drop(tracing::info_span!("test.root").entered());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        telemetry.flush();
        let spans = receiver.spans();
        if spans.len() >= 13 {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "not every span was exported: {:?}", names(&spans));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let service = |name: &str| -> Vec<String> {
        let mut found: Vec<String> = spans.iter().filter(|s| s.name() == name).map(|s| s.service.clone()).collect();
        found.sort();
        found
    };
    assert_eq!(service("POST /beads"), ["loom-control-plane"]);
    assert_eq!(service("bus.publish"), ["loom-control-plane"], "a shared crate's span is its parent's part");
    assert_eq!(service("connector.check"), ["loom-connectors"], "a part's span below another part's is its own");
    assert_eq!(service("bus.kv"), ["loom-connectors"]);
    assert_eq!(
        service("loom.db.v1.Database/CreateBeads"),
        ["loom-control-plane", "loom-db"],
        "the client call is the caller's, the served one the server's"
    );
    assert_eq!(service("loom.connectors.v1.Connectors/ListConnectors"), ["loom-connectors"]);
    assert_eq!(service("store.query"), ["loom-connectors", "loom-control-plane", "loom-db"]);
    assert_eq!(service("agent.task"), ["loom-agent"]);
    assert_eq!(service("bus.ack"), ["loom-agent"]);
    assert_eq!(service("test.root"), ["loom-parts-test"], "a span of no part has the process's name");

    let trace = spans.iter().find(|s| s.name() == "POST /beads").unwrap().trace_id();
    for s in spans.iter().filter(|s| s.name() != "test.root") {
        assert_eq!(s.trace_id(), trace, "{} left the trace", s.name());
    }
    telemetry.shutdown();
}

fn names(spans: &[ReceivedSpan]) -> Vec<String> {
    spans.iter().map(|s| format!("{} ({})", s.name(), s.service)).collect()
}
