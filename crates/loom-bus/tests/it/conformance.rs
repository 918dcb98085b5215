//! The conformance suite: every case runs against the embedded bus and against JetStream, and
//! both must behave alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use loom_bus::{ConsumeOptions, Outgoing, TraceContext, header};

use crate::support::{Kind, TestBus, fast_config, project, task, within};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(crate::support::Kind::Embedded).await
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(crate::support::Kind::JetStream).await
                }
            )*
        }
    };
}

conformance!(
    publish_and_consume,
    each_message_goes_to_exactly_one_competing_consumer,
    redelivered_after_a_handler_dies_without_ack,
    in_progress_acks_keep_a_long_task,
    max_deliveries_go_to_the_dlq,
    an_exhaustion_nobody_watched_reaches_the_dlq,
    handler_can_dead_letter_with_a_reason,
    malformed_and_unknown_messages_go_to_the_dlq,
    republished_msg_id_is_deduplicated,
);

fn one() -> ConsumeOptions {
    ConsumeOptions { max_in_flight: 1, prefetch: false }
}

async fn publish_and_consume(kind: Kind) -> anyhow::Result<()> {
    let bus = TestBus::new(kind, fast_config()).await?;
    let msg = task(1);
    let trace = TraceContext {
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        tracestate: None,
    };
    let receipt = bus.publish(bus.task(&msg, &trace)?).await?;
    assert!(!receipt.duplicate);

    let mut sub = bus.consume_tasks(&project(), None, one()).await?;
    let got = within(10, sub.next()).await.flatten().expect("a task");
    assert_eq!(got.message, msg);
    let d = &got.delivery;
    assert_eq!(d.deliveries(), 1);
    assert_eq!(d.msg_id(), Some("d1"));
    let h = d.headers();
    assert_eq!(h.get(header::SCHEMA), Some("1"));
    assert_eq!(h.get(header::CORRELATION_ID), Some("corr-1"));
    assert_eq!(h.trace(), trace);
    assert!(d.subject().ends_with(".loom.tasks.proj"), "{}", d.subject());
    got.delivery.ack().await?;

    // Acked means gone: nothing more to deliver, no lag.
    assert!(within(1, sub.next()).await.is_none());
    let health = bus.health().await;
    assert!(health.is_ready(), "{health:?}");
    assert_eq!(health.lag(), 0, "{health:?}");
    Ok(())
}

async fn each_message_goes_to_exactly_one_competing_consumer(kind: Kind) -> anyhow::Result<()> {
    const CONSUMERS: usize = 4;
    const MESSAGES: u64 = 200;
    let bus = TestBus::new(kind, fast_config()).await?;
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut handles = Vec::new();
    for i in 0..CONSUMERS {
        let peer = bus.peer().await?;
        let mut sub =
            peer.consume_tasks(&project(), None, ConsumeOptions { max_in_flight: 8, prefetch: false }).await?;
        let seen = seen.clone();
        handles.push(tokio::spawn(async move {
            let _keep = peer;
            let mut mine = 0;
            while let Some(Some(r)) = within(3, sub.next()).await {
                *seen.lock().unwrap().entry(r.message.metadata.dispatch_id.to_string()).or_default() += 1;
                r.delivery.ack().await.expect("ack");
                mine += 1;
            }
            (i, mine)
        }));
    }
    let msgs = (0..MESSAGES).map(|n| bus.task(&task(n), &TraceContext::default())).collect::<Result<Vec<_>, _>>()?;
    for r in bus.publish_batch(msgs).await {
        r?;
    }
    for h in handles {
        h.await?;
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), MESSAGES as usize, "every message delivered");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    Ok(())
}

async fn redelivered_after_a_handler_dies_without_ack(kind: Kind) -> anyhow::Result<()> {
    let bus = TestBus::new(kind, fast_config()).await?;
    bus.publish(bus.task(&task(7), &TraceContext::default())?).await?;
    {
        let dying = bus.peer().await?;
        let mut sub = dying.consume_tasks(&project(), None, one()).await?;
        let got = within(10, sub.next()).await.flatten().expect("first delivery");
        assert_eq!(got.delivery.deliveries(), 1);
        // The handler dies: its delivery and subscription go away unsettled.
        drop(got);
        drop(sub);
    }
    let mut sub = bus.consume_tasks(&project(), None, one()).await?;
    let again = within(10, sub.next()).await.flatten().expect("redelivery after the ack wait");
    assert_eq!(again.message.metadata.dispatch_id.as_str(), "d7");
    assert_eq!(again.delivery.deliveries(), 2);
    again.delivery.ack().await?;
    Ok(())
}

async fn in_progress_acks_keep_a_long_task(kind: Kind) -> anyhow::Result<()> {
    let mut config = fast_config();
    config.ack_wait = Duration::from_secs(1);
    let bus = TestBus::new(kind, config).await?;
    bus.publish(bus.task(&task(3), &TraceContext::default())?).await?;
    let mut worker = bus.consume_tasks(&project(), None, one()).await?;
    let got = within(10, worker.next()).await.flatten().expect("task");

    let rival_bus = bus.peer().await?;
    let mut rival = rival_bus.consume_tasks(&project(), None, one()).await?;
    let rival_got =
        tokio::spawn(async move { within(4, rival.next()).await.flatten().map(|r| r.delivery.deliveries()) });

    // Three ack waits long, kept alive by in-progress acks every 300 ms.
    got.delivery.keep_alive(tokio::time::sleep(Duration::from_secs(3))).await;
    got.delivery.ack().await?;
    assert_eq!(rival_got.await?, None, "the running task must not be redelivered");
    Ok(())
}

async fn max_deliveries_go_to_the_dlq(kind: Kind) -> anyhow::Result<()> {
    let mut config = fast_config();
    config.max_deliver = 2;
    let bus = TestBus::new(kind, config).await?;
    let mut notices = bus.dead_letters().await?;
    bus.publish(bus.task(&task(9), &TraceContext::default())?).await?;
    let mut sub = bus.consume_tasks(&project(), None, one()).await?;
    for n in 1..=2 {
        let got = within(10, sub.next()).await.flatten().expect("delivery");
        assert_eq!(got.delivery.deliveries(), n);
        assert_eq!(got.delivery.is_last_delivery(), n == 2);
        got.delivery.nak(None).await?;
    }
    // A subscriber keeps pulling, as agents do: JetStream notices the exhausted message when it
    // would deliver it again.
    let third = tokio::spawn(async move { within(4, sub.next()).await.flatten().map(|r| r.delivery.deliveries()) });
    let notice = within(10, notices.next()).await.flatten().expect("a dead-letter notice");
    assert!(notice.reason.starts_with("max deliveries (2) reached"), "{}", notice.reason);
    assert_eq!(notice.bead_id.as_ref().map(|b| b.as_str()), Some("proj-9"));
    assert_eq!(notice.dispatch_id.as_ref().map(|d| d.as_str()), Some("d9"));
    assert_eq!(notice.project_id, Some(project()));
    assert_eq!(notice.deliveries, 2);
    assert!(notice.subject.ends_with(".loom.tasks.proj"));

    let dlq = bus.read_dlq(0, 10).await?;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].stream_sequence, notice.stream_sequence);
    assert_eq!(dlq[0].headers.get(header::DLQ_MSG_ID), Some("d9"));
    assert_eq!(third.await?, None, "no third delivery");
    Ok(())
}

/// The message exhausts its deliveries while no control plane watches; one that starts later
/// still finds it in the DLQ (JetStream keeps the server's advisory in `LOOM_ADVISORIES`).
async fn an_exhaustion_nobody_watched_reaches_the_dlq(kind: Kind) -> anyhow::Result<()> {
    let mut config = fast_config();
    config.max_deliver = 2;
    let bus = TestBus::new(kind, config).await?;
    bus.publish(bus.task(&task(7), &TraceContext::default())?).await?;
    let mut sub = bus.consume_tasks(&project(), None, one()).await?;
    for _ in 1..=2 {
        let got = within(10, sub.next()).await.flatten().expect("delivery");
        got.delivery.nak(None).await?;
    }
    assert!(within(3, sub.next()).await.flatten().is_none(), "no third delivery");
    drop(sub);

    let _notices = bus.dead_letters().await?;
    let mut dlq = Vec::new();
    for _ in 0..100 {
        dlq = bus.read_dlq(0, 10).await?;
        if !dlq.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dlq.len(), 1, "the exhausted task is in the DLQ");
    assert_eq!(dlq[0].bead_id.as_ref().map(|b| b.as_str()), Some("proj-7"));
    assert!(dlq[0].reason.starts_with("max deliveries (2) reached"), "{}", dlq[0].reason);
    Ok(())
}

async fn handler_can_dead_letter_with_a_reason(kind: Kind) -> anyhow::Result<()> {
    let bus = TestBus::new(kind, fast_config()).await?;
    bus.publish(bus.task(&task(4), &TraceContext::default())?).await?;
    let mut sub = bus.consume_tasks(&project(), None, one()).await?;
    let got = within(10, sub.next()).await.flatten().expect("task");
    got.delivery.term_to_dlq("workspace is corrupt").await?;
    let dlq = bus.read_dlq(0, 10).await?;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].reason, "workspace is corrupt");
    assert_eq!(dlq[0].bead_id.as_ref().map(|b| b.as_str()), Some("proj-4"));
    assert!(within(3, sub.next()).await.is_none(), "terminated, never redelivered");
    Ok(())
}

async fn malformed_and_unknown_messages_go_to_the_dlq(kind: Kind) -> anyhow::Result<()> {
    let bus = TestBus::new(kind, fast_config()).await?;
    let subject = bus.subjects().tasks(&project(), None);
    bus.publish(Outgoing::raw(subject.clone(), "bad-1", Bytes::from_static(b"{not json"))).await?;
    bus.publish(Outgoing::raw(subject.clone(), "bad-2", Bytes::from_static(br#"{"type":"task.exploded"}"#))).await?;
    bus.publish(bus.task(&task(5), &TraceContext::default())?).await?;

    let mut sub = bus.consume_tasks(&project(), None, one()).await?;
    let got = within(10, sub.next()).await.flatten().expect("the valid task survives the bad ones");
    assert_eq!(got.message.metadata.dispatch_id.as_str(), "d5");
    got.delivery.ack().await?;

    let dlq = bus.read_dlq(0, 10).await?;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    assert!(dlq[0].reason.starts_with("malformed:"), "{}", dlq[0].reason);
    assert_eq!(dlq[0].payload.as_ref(), b"{not json");
    assert_eq!(dlq[1].reason, "unknown message type \"task.exploded\"");
    for d in &dlq {
        assert_eq!(d.subject, subject);
        assert_eq!(d.deliveries, 1);
        assert!(d.stream_sequence > 0);
        assert_eq!(d.project_id, Some(project()));
    }
    assert!(within(3, sub.next()).await.is_none(), "bad messages are settled, not redelivered");
    Ok(())
}

async fn republished_msg_id_is_deduplicated(kind: Kind) -> anyhow::Result<()> {
    let bus = TestBus::new(kind, fast_config()).await?;
    let msg = task(6);
    let first = bus.publish(bus.task(&msg, &TraceContext::default())?).await?;
    let again = bus.publish(bus.task(&msg, &TraceContext::default())?).await?;
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.stream_sequence, first.stream_sequence);
    let mut sub = bus.consume_tasks(&project(), None, one()).await?;
    let got = within(10, sub.next()).await.flatten().expect("task");
    got.delivery.ack().await?;
    assert!(within(2, sub.next()).await.is_none(), "the duplicate was not stored");
    Ok(())
}
