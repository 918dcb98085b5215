//! The service's own log lines — text and JSON, down to `trace` — while connectors carrying
//! secrets (an LLM key, a git token, a bearer token, a webhook signing secret) are registered,
//! updated (a key rotated), refused, checked against failing endpoints and deliver webhooks
//! that fail, succeed and are gone: no secret value appears in them.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loom_connectors::{Api, Kind, Mode, Spec, Status};
use loom_domain::EventKind;
use loom_store::NewEvent;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::{Behaviour, Endpoint, Fixture, TOKEN, client, eventually, serve};

const API_KEY: &str = "sk-log-secret-first-0123456789";
const ROTATED: &str = "sk-log-secret-second-0123456789";
const GIT_TOKEN: &str = "ghp_logsecrettoken0123456789";
const BEARER: &str = "bearer-log-secret-0123456789";
const SIGNING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const REFUSED: &str = "whsec_not base64 but secret-0123456789";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn with_secret(id: &str, kind: Kind, url: &str, name: &str, value: &str) -> Spec {
    let mut s = Spec::new(id, kind, url);
    s.secrets.insert(name.into(), value.into());
    s.check_interval = Duration::from_millis(200);
    s.check_timeout = Duration::from_millis(500);
    s
}

// One thread: the subscriber set for this test sees every task of the service it starts.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_the_services_log_lines() {
    let (text, json) = (Captured::default(), Captured::default());
    let (t, j) = (text.clone(), json.clone());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("warn,loom_connectors=trace,loom_db=trace,loom_store=trace"))
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || t.clone()))
        .with(tracing_subscriber::fmt::layer().json().with_writer(move || j.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = Fixture::start_with_lease(Duration::from_secs(2)).await;
    let served = serve(&f, "127.0.0.1:0".parse().unwrap()).await;
    let c = client(served.addr, Some(TOKEN));
    let refusing = Endpoint::start(Behaviour::Status(401)).await;
    let flaky = Endpoint::start(Behaviour::Script(vec![500, 503])).await;
    let gone = Endpoint::start(Behaviour::Status(410)).await;

    let llm = c.register(with_secret("llm", Kind::LlmProvider, &refusing.url(), "api_key", API_KEY)).await.unwrap();
    c.register(with_secret("git", Kind::GitHost, &refusing.url(), "token", GIT_TOKEN)).await.unwrap();
    c.register(with_secret("down", Kind::Http, "http://127.0.0.1:9", "bearer_token", BEARER)).await.unwrap();
    let mut hook = with_secret("hook", Kind::Webhook, &flaky.url(), "signing_secret", SIGNING);
    hook.event_types = vec!["bead.closed".into()];
    c.register(hook.clone()).await.unwrap();
    let mut gone_hook = with_secret("gone", Kind::Webhook, &gone.url(), "signing_secret", SIGNING);
    gone_hook.event_types = vec!["*".into()];
    c.register(gone_hook).await.unwrap();
    // Refused: a signing secret that is not `whsec_…` base64, and a stale version.
    let bad = with_secret("bad", Kind::Webhook, &flaky.url(), "signing_secret", REFUSED);
    assert!(c.register(bad).await.is_err());
    let mut rotated = with_secret("llm", Kind::LlmProvider, &refusing.url(), "api_key", ROTATED);
    assert!(c.update(llm.version + 7, rotated.clone(), &[]).await.is_err());
    rotated.description = "key rotated".into();
    c.update(llm.version, rotated, &[]).await.unwrap();
    assert_eq!(c.check("llm").await.unwrap().status, Status::Unhealthy);
    c.check_all().await.unwrap();

    tokio::time::sleep(Duration::from_millis(600)).await;
    f.store.append_event(event("b-1")).await.unwrap();
    eventually(Duration::from_secs(15), "the retried delivery and the gone webhook", || async {
        flaky.received().iter().any(|r| r.answered == 200)
            && f.connectors.get("gone").await.unwrap().mode == Mode::Disabled
    })
    .await;
    served.stop.cancel();
    served.task.await.unwrap().unwrap();
    f.stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (text, json) = (text.text(), json.text());
    for (format, lines) in [("text", &text), ("JSON", &json)] {
        // What the service did was logged (so the capture saw it), without a secret.
        for said in [
            "connector registered",
            "connector updated",
            "connector health changed",
            "webhook delivery failed",
            "connector disabled",
            "connectors call refused",
        ] {
            assert!(lines.contains(said), "no {said:?} in the {format} log:\n{lines}");
        }
        for secret in [API_KEY, ROTATED, GIT_TOKEN, BEARER, SIGNING, REFUSED, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert!(!lines.contains(secret), "{secret} leaked into the {format} log:\n{lines}");
        }
    }
    assert!(json.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "one JSON object a line");
}

fn event(entity: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::BeadClosed,
        source: "test".into(),
        project_id: None,
        entity_id: entity.into(),
        action: "closed".into(),
        description: format!("{entity} closed"),
        data: json!({}),
        correlation_id: None,
    }
}
