//! JetStream specifics: provisioning is idempotent and refuses to touch a stream with other
//! settings; the benchmark runs end to end.

use async_nats::jetstream::{self, stream};
use loom_bus::{Bus, Error};

use crate::support::{Kind, TestBus, fast_config};

#[tokio::test]
async fn provisioning_twice_is_a_no_op() -> anyhow::Result<()> {
    let bus = TestBus::new(Kind::JetStream, fast_config()).await?;
    bus.provision().await?;
    let again = Bus::connect(bus.config().clone()).await?;
    again.provision().await?;
    Ok(())
}

#[tokio::test]
async fn a_stream_with_other_settings_is_reported_and_left_alone() -> anyhow::Result<()> {
    let config = fast_config();
    let bus = TestBus::new(Kind::JetStream, config.clone()).await?;
    let names = loom_bus::Names::new(config.namespace.as_deref())?;
    let js = jetstream::new(async_nats::connect(config.url.as_str()).await?);
    let results = names.stream(loom_bus::StreamKind::Results);
    js.delete_stream(&results).await?;
    js.create_stream(stream::Config {
        name: results.clone(),
        subjects: vec![names.wildcard(loom_bus::StreamKind::Results)],
        retention: stream::RetentionPolicy::Limits,
        ..Default::default()
    })
    .await?;

    let err = bus.provision().await.unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&results) && text.contains("retention: have Limits, want WorkQueue"), "{text}");
    let kept = js.get_stream(&results).await?.cached_info().config.retention;
    assert_eq!(kept, stream::RetentionPolicy::Limits, "the existing stream was not changed");
    Ok(())
}

#[tokio::test]
async fn health_names_a_stream_that_does_not_answer() -> anyhow::Result<()> {
    let config = fast_config();
    let bus = TestBus::new(Kind::JetStream, config.clone()).await?;
    let health = bus.health().await;
    assert!(health.is_ready() && health.unanswered.is_empty(), "{health:?}");
    // The events stream gone (as good as stuck: JetStream answers, that stream does not).
    let names = loom_bus::Names::new(config.namespace.as_deref())?;
    let js = jetstream::new(async_nats::connect(config.url.as_str()).await?);
    let events = names.stream(loom_bus::StreamKind::Events);
    js.delete_stream(&events).await?;
    let health = bus.health().await;
    assert!(!health.is_ready(), "not ready while a stream does not answer: {health:?}");
    assert_eq!(health.unanswered, [events], "{health:?}");
    Ok(())
}

#[tokio::test]
async fn a_consumer_with_other_settings_is_refused() -> anyhow::Result<()> {
    let config = fast_config();
    let bus = TestBus::new(Kind::JetStream, config.clone()).await?;
    drop(bus.consume_results(Default::default()).await?);
    let mut other = config.clone();
    other.max_deliver = 9;
    let other = Bus::connect(other).await?;
    let err = other.consume_results(Default::default()).await.unwrap_err().to_string();
    assert!(err.contains("max_deliver: have 5, want 9"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_both_rates() -> anyhow::Result<()> {
    let messages = std::env::var("LOOM_BENCH_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let opts = loom_bus::bench::BenchOptions { url: crate::support::nats_url(), messages, ..Default::default() };
    let report = loom_bus::bench::run(opts).await?;
    eprintln!("{}", serde_json::to_string(&report)?);
    assert!(report.raw_msgs_per_s > 0.0 && report.loom_msgs_per_s > 0.0, "{report:?}");
    assert!(report.p50_us <= report.p99_us, "{report:?}");
    Ok(())
}
