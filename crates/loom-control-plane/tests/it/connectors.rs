//! `/api/v1/connectors`: the REST façade over the connectors service in process — secrets
//! write-only, versioned updates, roles, a check against a real endpoint, and a clear 503
//! without a connectors service.

use std::sync::Arc;

use loom_connectors::{Connectors, Key, Keyring};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Cluster, fast_config};

const SECRET: &str = "sk-rest-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_through_the_api_never_show_secrets() {
    let c = Cluster::start_with(fast_config(), |store| {
        let keys = Keyring::new(Key::from_bytes(&[3; 32]).unwrap(), vec![]);
        Some(Arc::new(Connectors::new(store, keys)) as Arc<dyn loom_connectors::Api>)
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
    c.stop().await;
}
