//! Outgoing webhooks: the events a webhook subscribes to reach it, signed per Standard Webhooks
//! 1.0 — verified here by an independent implementation (the `hmac` and `sha2` crates); failed
//! deliveries are retried; a 410 disables the connector.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use loom_connectors::{Kind, Mode, Spec};
use loom_domain::EventKind;
use loom_store::NewEvent;
use serde_json::json;

use crate::support::{Behaviour, Endpoint, Fixture, Received, eventually};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hook(id: &str, url: &str, types: &[&str]) -> Spec {
    let mut s = Spec::new(id, Kind::Webhook, url);
    s.secrets.insert("signing_secret".into(), SECRET.into());
    s.event_types = types.iter().map(|t| (*t).to_owned()).collect();
    s.check_interval = Duration::from_secs(3600);
    s
}

fn event(kind: EventKind, entity: &str) -> NewEvent {
    NewEvent {
        kind,
        source: "test".into(),
        project_id: None,
        entity_id: entity.into(),
        action: kind.as_str().rsplit('.').next().unwrap().into(),
        description: format!("{entity} happened"),
        data: json!({ "reason": "done" }),
        correlation_id: None,
    }
}

/// The spec's verification, written from the spec's text: the signed content is
/// `{webhook-id}.{webhook-timestamp}.{body}`, the key is the base64 after `whsec_`, the
/// signature header is a space-separated list of `v1,{base64(HMAC-SHA256)}`.
fn verify(received: &Received, secret: &str) -> Result<(), String> {
    let header = |name: &str| {
        received.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or(format!("no {name}"))
    };
    let (id, timestamp, signatures) =
        (header("webhook-id")?, header("webhook-timestamp")?, header("webhook-signature")?);
    let ts: i64 = timestamp.parse().map_err(|_| "timestamp not an integer")?;
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return Err("timestamp outside the tolerance".into());
    }
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
        .then_some(())
        .ok_or(format!("no valid v1 signature in {signatures:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_events_arrive_signed_per_the_spec() {
    let f = Fixture::start().await;
    let receiver = Endpoint::start(Behaviour::Ok).await;
    let all = Endpoint::start(Behaviour::Ok).await;
    f.connectors
        .register(hook("closed", &format!("{}/hook", receiver.url()), &["bead.closed", "bead.blocked"]))
        .await
        .unwrap();
    f.connectors.register(hook("everything", &all.url(), &["*"])).await.unwrap();
    // The deliveries start at the head of the log: let them find it before appending.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let appended = f.store.append_event(event(EventKind::BeadClosed, "b-1")).await.unwrap();
    f.store.append_event(event(EventKind::BeadCreated, "b-2")).await.unwrap();
    eventually(Duration::from_secs(10), "deliveries", || async {
        receiver.received().iter().any(|r| r.path == "/hook")
            && all.received().iter().filter(|r| !r.body.is_empty()).count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts: Vec<Received> = receiver.received().into_iter().filter(|r| !r.body.is_empty()).collect();
    assert_eq!(posts.len(), 1, "only the subscribed type, once: {posts:?}");
    let post = &posts[0];
    verify(post, SECRET).unwrap();
    assert_eq!(post.headers["webhook-id"], appended.id.as_str());
    assert_eq!(post.headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(body["type"], "bead.closed");
    assert_eq!(body["data"]["entity_id"], "b-1");
    assert_eq!(body["data"]["data"]["reason"], "done");
    // Another secret, or an altered body, does not verify.
    assert!(verify(post, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_err());
    let mut altered = post.clone();
    altered.body = axum::body::Bytes::from(post.body.iter().copied().rev().collect::<Vec<u8>>());
    assert!(verify(&altered, SECRET).is_err());
    let everything: Vec<_> = all.received().into_iter().filter(|r| !r.body.is_empty()).collect();
    let types: Vec<String> = everything
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    let beads: Vec<&String> = types.iter().filter(|t| t.starts_with("bead.")).collect();
    assert_eq!(beads, ["bead.closed", "bead.created"], "* receives every event, in order: {types:?}");
    assert!(everything.iter().all(|r| verify(r, SECRET).is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_and_a_410_disables_the_webhook() {
    let f = Fixture::start().await;
    let flaky = Endpoint::start(Behaviour::Script(vec![500, 503])).await;
    let gone = Endpoint::start(Behaviour::Status(410)).await;
    f.connectors.register(hook("flaky", &flaky.url(), &["bead.closed"])).await.unwrap();
    f.connectors.register(hook("gone", &gone.url(), &["bead.closed"])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    f.store.append_event(event(EventKind::BeadClosed, "b-1")).await.unwrap();
    eventually(Duration::from_secs(15), "the retried delivery", || async {
        flaky.received().iter().filter(|r| !r.body.is_empty()).count() >= 3
    })
    .await;
    let attempts: Vec<Received> = flaky.received().into_iter().filter(|r| !r.body.is_empty()).collect();
    assert_eq!(attempts[0].headers["webhook-id"], attempts[2].headers["webhook-id"], "the same message retried");
    assert!(attempts.iter().all(|r| verify(r, SECRET).is_ok()), "each attempt signed afresh");
    eventually(Duration::from_secs(5), "the 410 webhook disabled", || async {
        f.connectors.get("gone").await.unwrap().mode == Mode::Disabled
    })
    .await;
    assert_eq!(gone.received().iter().filter(|r| !r.body.is_empty()).count(), 1, "a 410 is not retried");
    f.store.append_event(event(EventKind::BeadClosed, "b-2")).await.unwrap();
    eventually(Duration::from_secs(10), "the next delivery", || async {
        flaky.received().iter().filter(|r| !r.body.is_empty()).count() >= 4
    })
    .await;
    assert_eq!(gone.received().iter().filter(|r| !r.body.is_empty()).count(), 1, "a disabled webhook gets nothing");
}

/// A receiver failing for longer than the deliveries' lease, two replicas delivering: the one
/// delivering keeps its lease while it retries, so the receiver gets one logical delivery —
/// every attempt with the same `webhook-id`, none after the one it accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_longer_than_the_lease_is_one_delivery() {
    let ttl = Duration::from_secs(1);
    let f = Fixture::start_with_lease(ttl).await;
    let (_b, stop_b) = f.replica(ttl).await;
    let receiver = Endpoint::start(Behaviour::Ok).await;
    let mut h = hook("slow", &receiver.url(), &["bead.closed"]);
    h.settings.insert("max_attempts".into(), "10".into());
    f.connectors.register(h).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let failing_for = 3 * ttl + Duration::from_millis(500);
    receiver.set(Behaviour::FailUntil(std::time::Instant::now() + failing_for));
    let appended = f.store.append_event(event(EventKind::BeadClosed, "b-1")).await.unwrap();
    let posts = || receiver.received().into_iter().filter(|r| !r.body.is_empty()).collect::<Vec<Received>>();
    eventually(Duration::from_secs(20), "an accepted delivery", || async { posts().iter().any(|r| r.answered == 200) })
        .await;
    // Time enough for another replica to take the lease over and deliver the page again.
    tokio::time::sleep(4 * ttl).await;
    let posts = posts();
    let answered: Vec<u16> = posts.iter().map(|r| r.answered).collect();
    assert!(posts.len() >= 3, "retried across the lease: {answered:?}");
    assert_eq!(answered.iter().filter(|a| **a == 200).count(), 1, "one accepted delivery: {answered:?}");
    assert_eq!(answered.last(), Some(&200), "nothing after the accepted one: {answered:?}");
    assert!(posts.iter().all(|r| r.headers["webhook-id"] == appended.id.as_str()), "one message id throughout");
    assert!(posts.iter().all(|r| verify(r, SECRET).is_ok()));
    stop_b.cancel();
}
