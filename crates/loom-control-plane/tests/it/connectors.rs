//! `/api/v1/connectors`: the REST façade over the connectors service in process — secrets
//! write-only, versioned updates, roles, a check against a real endpoint, and a clear 503
//! without a connectors service.

use std::sync::Arc;

use std::sync::Mutex;
use std::time::Duration;

use loom_connectors::{Client, ClientConfig, Connectors, Key, Keyring, ServerConfig};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{Cluster, fast_config};

const SECRET: &str = "sk-rest-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_through_the_api_never_show_secrets() {
    let c = Cluster::start_with(fast_config(), |store| {
        let keys = Keyring::new(Key::from_bytes(&[3; 32]).unwrap(), vec![]);
        let connectors = Connectors::new(store, keys);
        // Its background work (checks, the event writer), as `loom up` runs it.
        let background = connectors.clone();
        tokio::spawn(async move { background.run(CancellationToken::new()).await });
        Some(Arc::new(connectors) as Arc<dyn loom_connectors::Api>)
    })
    .await;
    // A real endpoint for the check: the control plane's own /healthz.
    let body = json!({
        "id": "self", "kind": "http", "url": c.cp.url, "settings": { "health_path": "/healthz" },
        "secrets": { "bearer_token": SECRET }, "check_timeout_ms": 2000
    });
    let (status, created) = c.call(Method::POST, "/api/v1/connectors", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["secrets"], json!({ "bearer_token": "****" }));
    assert_eq!(created["version"], 1);
    let (status, _) = c.call(Method::POST, "/api/v1/connectors", Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, health) = c.call(Method::POST, "/api/v1/connectors/self/check", None).await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("healthy")), "{health}");
    // The change is an event in the store, which the relay publishes on
    // loom.events.connector.health_changed.
    let mut changed = None;
    for _ in 0..100 {
        let events = c.store.list_events(0, 1000).await.unwrap();
        changed = events.into_iter().find(|e| e.kind.as_str() == "connector.health_changed" && e.entity_id == "self");
        if changed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let changed = changed.expect("a connector.health_changed event");
    // The web UI's connectors view shows it with its health, and no secret.
    let cookie = crate::web::login(&c, &c.key).await;
    let (status, _, html) = crate::web::page(&c, &cookie, "/ui/connectors").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(">self") && html.contains("healthy") && html.contains("1 healthy of 1"), "{html}");
    assert!(!html.contains(SECRET), "the connectors view shows no secret");
    assert_eq!(
        (changed.data["previous"].as_str(), changed.data["status"].as_str()),
        (Some("unknown"), Some("healthy"))
    );
    let mut published = false;
    for _ in 0..100 {
        if c.bus.read_event_ids(1, 10_000).await.unwrap().iter().any(|(_, id)| *id == changed.id) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(published, "the health change reached the bus");
    let update = json!({ "expected_version": 1, "kind": "http", "url": c.cp.url, "description": "me",
                         "settings": { "health_path": "/nope" } });
    let (status, updated) = c.call(Method::PUT, "/api/v1/connectors/self", Some(update.clone())).await;
    assert_eq!((status, &updated["version"]), (StatusCode::OK, &json!(2)), "{updated}");
    assert_eq!(updated["secrets"], json!({ "bearer_token": "****" }), "kept");
    let (status, stale) = c.call(Method::PUT, "/api/v1/connectors/self", Some(update)).await;
    assert_eq!((status, stale["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("version_conflict")));
    let (_, health) = c.call(Method::POST, "/api/v1/connectors/self/check", None).await;
    assert_eq!(health["status"], "unhealthy");
    let (status, bad) = c
        .call(Method::POST, "/api/v1/connectors", Some(json!({ "id": "x", "kind": "nonsense", "url": "http://x" })))
        .await;
    assert_eq!((status, bad["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")), "{bad}");
    let (status, list) = c.call(Method::GET, "/api/v1/connectors", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, one) = c.call(Method::GET, "/api/v1/connectors/self", None).await;
    for answer in [created.to_string(), updated.to_string(), list.to_string(), one.to_string(), health.to_string()] {
        assert!(!answer.contains(SECRET), "a secret leaked: {answer}");
    }

    // Writes hold secrets: an operator may check, not register.
    let operator = c.post("/api/v1/keys", json!({ "name": "op", "role": "operator" })).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = c.call_as(Some(&operator), Method::DELETE, "/api/v1/connectors/self", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = c.call_as(Some(&operator), Method::POST, "/api/v1/connectors/self/check", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = c.call(Method::DELETE, "/api/v1/connectors/self", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = c.call(Method::GET, "/api/v1/connectors/self", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_connectors_service_the_routes_say_so() {
    let c = Cluster::start(fast_config()).await;
    let (status, v) = c.call(Method::GET, "/api/v1/connectors", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"]["message"].as_str().unwrap().contains("[connectors] service_url"), "{v}");
    // The web UI's view says the same instead of failing.
    let cookie = crate::web::login(&c, &c.key).await;
    let (status, _, html) = crate::web::page(&c, &cookie, "/ui/connectors").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("[connectors] service_url"), "{html}");
    c.stop().await;
}

/// Serves `connectors` on `addr` until the token is cancelled.
fn serve(connectors: &Connectors, addr: &str) -> (std::net::SocketAddr, CancellationToken) {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(loom_connectors::serve(ServerConfig::default(), listener, connectors.clone(), stop.clone()));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connectors_service_outage_serves_the_last_known_and_recovers() {
    let slot: Arc<Mutex<Option<(Connectors, std::net::SocketAddr, CancellationToken)>>> = Arc::default();
    let remember = slot.clone();
    let c = Cluster::start_with(fast_config(), move |store| {
        let connectors = Connectors::new(store, Keyring::new(Key::from_bytes(&[4; 32]).unwrap(), vec![]));
        let (addr, stop) = serve(&connectors, "127.0.0.1:0");
        *remember.lock().unwrap() = Some((connectors, addr, stop));
        let mut config = ClientConfig::new(format!("http://{addr}"));
        config.deadline = Duration::from_secs(3);
        Some(Arc::new(Client::connect(config).unwrap()) as Arc<dyn loom_connectors::Api>)
    })
    .await;
    let (connectors, addr, stop) = slot.lock().unwrap().take().unwrap();
    let body = json!({ "id": "prom", "kind": "prometheus", "url": "http://127.0.0.1:9" });
    let (status, _) = c.call(Method::POST, "/api/v1/connectors", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let get = |path: &'static str| {
        let (http, url, key) = (c.http.clone(), format!("{}{path}", c.cp.url), c.key.clone());
        async move { http.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let fresh = get("/api/v1/connectors").await;
    assert!(fresh.headers().get("x-loom-stale").is_none());

    stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stale = get("/api/v1/connectors").await;
    assert_eq!(stale.status(), StatusCode::OK);
    let why = stale.headers()["x-loom-stale"].to_str().unwrap().to_owned();
    assert!(why.contains("unavailable"), "{why}");
    let list: serde_json::Value = stale.json().await.unwrap();
    assert_eq!(list[0]["id"], "prom", "the last known list: {list}");
    let one = get("/api/v1/connectors/prom").await;
    assert_eq!(one.status(), StatusCode::OK);
    assert!(one.headers().contains_key("x-loom-stale"));
    let (status, v) =
        c.call(Method::POST, "/api/v1/connectors", Some(json!({ "id": "x", "kind": "http", "url": "http://x" }))).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("connectors_unavailable"))
    );

    // Back on its address: the control plane recovers by itself.
    let (_, again) = serve(&connectors, &addr.to_string());
    let mut recovered = false;
    for _ in 0..50 {
        let r = get("/api/v1/connectors").await;
        if r.status() == StatusCode::OK && !r.headers().contains_key("x-loom-stale") {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "fresh answers once the service is back");
    again.cancel();
    c.stop().await;
}
