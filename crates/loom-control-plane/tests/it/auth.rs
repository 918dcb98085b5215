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
    let b = |p: &str| p.replace("{b}", &bead);
    // (method, path, role needed: 0 viewer, 1 operator, 2 admin)
    let routes: Vec<(Method, String, u8)> = vec![
        (Method::GET, "/api/v1/health".into(), 0),
        (Method::GET, "/api/v1/status".into(), 0),
        (Method::GET, "/api/v1/projects".into(), 0),
        (Method::POST, "/api/v1/projects".into(), 1),
        (Method::GET, "/api/v1/projects/auth".into(), 0),
        (Method::PUT, "/api/v1/projects/auth".into(), 1),
        (Method::DELETE, "/api/v1/projects/auth".into(), 1),
        (Method::POST, "/api/v1/projects/auth/pause".into(), 1),
        (Method::POST, "/api/v1/projects/auth/resume".into(), 1),
        (Method::GET, "/api/v1/beads".into(), 0),
        (Method::POST, "/api/v1/beads".into(), 1),
        (Method::GET, b("/api/v1/beads/{b}"), 0),
        (Method::PATCH, b("/api/v1/beads/{b}"), 1),
        (Method::DELETE, b("/api/v1/beads/{b}"), 1),
        (Method::POST, b("/api/v1/beads/{b}/close"), 1),
        (Method::POST, b("/api/v1/beads/{b}/reopen"), 1),
        (Method::POST, b("/api/v1/beads/{b}/redispatch"), 1),
        (Method::POST, b("/api/v1/beads/{b}/dependencies"), 1),
        (Method::DELETE, b("/api/v1/beads/{b}/dependencies"), 1),
        (Method::GET, "/api/v1/ready?project_id=auth".into(), 0),
        (Method::GET, "/api/v1/work-graph?project_id=auth".into(), 0),
        (Method::GET, "/api/v1/agents".into(), 0),
        (Method::GET, "/api/v1/events".into(), 0),
        (Method::GET, "/api/v1/keys".into(), 2),
        (Method::POST, "/api/v1/keys".into(), 2),
        (Method::DELETE, "/api/v1/keys/some-id".into(), 2),
    ];
    for (method, path, needed) in &routes {
        let (status, v) = c.call_as(None, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a key: {v}");
        assert_eq!(v["error"]["code"], "unauthorized");
        let (status, _) = c.call_as(Some("loom_not-a-key"), method.clone(), path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with an unknown key");
        for (key, rank) in [(&viewer, 0u8), (&operator, 1)] {
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
