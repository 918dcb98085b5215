//! Every route refuses a missing key, an unknown key and a key whose role is too weak.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Cluster, fast_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_the_key_and_its_role() {
    let c = Cluster::start(fast_config()).await;
    c.project("auth").await;
    let bead = c.bead("auth", "b", 1, &[]).await;
    let viewer = c.post("/api/v1/keys", json!({ "name": "viewer", "role": "viewer" })).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let operator = c.post("/api/v1/keys", json!({ "name": "op", "role": "operator" })).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every route the OpenAPI document lists (served without a key), with the role it names.
    let (status, doc) = c.call_as(None, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut routes: Vec<(Method, String, u8)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let role = op["description"].as_str().unwrap();
            let needed = ["`viewer`", "`operator`", "`admin`"].iter().position(|r| role.contains(r)).unwrap() as u8;
            let concrete = if path.starts_with("/projects/") {
                path.replace("{id}", "auth")
            } else if path.starts_with("/beads/") {
                path.replace("{id}", &bead)
            } else {
                path.replace("{id}", "some-id")
            };
            let query = if matches!(path.as_str(), "/ready" | "/work-graph") { "?project_id=auth" } else { "" };
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            routes.push((method, format!("/api/v1{concrete}{query}"), needed));
        }
    }
    assert_eq!(routes.len(), 34, "every route of the API is documented");
    for (method, path, needed) in &routes {
        let (status, v) = c.call_as(None, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a key: {v}");
        assert_eq!(v["error"]["code"], "unauthorized");
        let (status, _) = c.call_as(Some("loom_not-a-key"), method.clone(), path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with an unknown key");
        for (key, rank) in [(&viewer, 0u8), (&operator, 1)] {
            if path.ends_with("/events/stream") {
                // An authorised stream never ends: look at the status line only.
                let resp = c.http.get(format!("{}{path}", c.cp.url)).bearer_auth(key).send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "{path} with rank {rank}");
                continue;
            }
            let (status, v) = c.call_as(Some(key), method.clone(), path, None).await;
            if rank < *needed {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} with rank {rank}: {v}");
            } else {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{method} {path} with rank {rank}: {status}"
                );
            }
        }
    }
    // Revoked keys stop working at once.
    let keys = c.get("/api/v1/keys").await;
    let op_id = keys.as_array().unwrap().iter().find(|k| k["name"] == "op").unwrap()["id"].as_str().unwrap().to_owned();
    let (status, _) = c.call(Method::DELETE, &format!("/api/v1/keys/{op_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = c.call_as(Some(&operator), Method::GET, "/api/v1/projects", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    c.stop().await;
}
