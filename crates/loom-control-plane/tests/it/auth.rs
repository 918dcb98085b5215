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
    // Revoked elsewhere (another control plane, straight in the store): this instance trusts the
    // key it found for at most a couple of seconds, then refuses it too.
    let viewer_id =
        keys.as_array().unwrap().iter().find(|k| k["name"] == "viewer").unwrap()["id"].as_str().unwrap().to_owned();
    let (status, _) = c.call_as(Some(&viewer), Method::GET, "/api/v1/projects", None).await;
    assert_eq!(status, StatusCode::OK);
    c.store.revoke_api_key(&viewer_id).await.unwrap();
    let revoked = std::time::Instant::now();
    loop {
        let (status, _) = c.call_as(Some(&viewer), Method::GET, "/api/v1/projects", None).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(5),
            "a key revoked in the store still works: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    c.stop().await;
}

/// The `audit.api_write` events recorded so far (all pages).
async fn audit_events(c: &Cluster) -> Vec<serde_json::Value> {
    let (mut after, mut found) = (0i64, Vec::new());
    loop {
        let resp = c
            .http
            .get(format!("{}/api/v1/events?after={after}&limit=1000", c.cp.url))
            .bearer_auth(&c.key)
            .send()
            .await
            .unwrap();
        let next: i64 = resp.headers()["x-next-cursor"].to_str().unwrap().parse().unwrap();
        let page: Vec<serde_json::Value> = resp.json().await.unwrap();
        found.extend(page.iter().filter(|e| e["type"] == "audit.api_write").cloned());
        if page.is_empty() || next == after {
            return found;
        }
        after = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_audited_with_who_what_and_the_outcome() {
    let c = Cluster::start(fast_config()).await;
    c.project("audit").await;
    let mint = |name: &str, role: &str| json!({ "name": name, "role": role });
    let viewer = c.post("/api/v1/keys", mint("watcher", "viewer")).await["secret"].as_str().unwrap().to_owned();
    let operator = c.post("/api/v1/keys", mint("deployer", "operator")).await["secret"].as_str().unwrap().to_owned();
    let bead = json!({ "project_id": "audit", "title": "audited" });
    let (status, created) = c.call_as(Some(&operator), Method::POST, "/api/v1/beads", Some(bead.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let close = format!("/api/v1/beads/{id}/close");
    let (status, _) = c.call_as(Some(&operator), Method::POST, &close, Some(json!({ "reason": "done" }))).await;
    assert_eq!(status, StatusCode::OK);
    // A viewer's write is refused, and recorded as an attempt by that key.
    let (status, _) = c.call_as(Some(&viewer), Method::POST, "/api/v1/beads", Some(bead.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Reads are not writes; an unauthenticated write is logged but never becomes an event.
    c.get(&format!("/api/v1/beads/{id}")).await;
    let (status, _) = c.call_as(None, Method::POST, "/api/v1/beads", Some(bead.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The writer appends behind the responses: wait for the six authenticated writes (the
    // admin's project and two keys, the operator's create and close, the viewer's refused create).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = loop {
        let events = audit_events(&c).await;
        if events.len() >= 6 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let seen: Vec<(String, String, String, u64)> = events
        .iter()
        .map(|e| {
            let d = &e["data"];
            (
                d["key_name"].as_str().unwrap().to_owned(),
                d["method"].as_str().unwrap().to_owned(),
                d["route"].as_str().unwrap().to_owned(),
                d["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let row = |k: &str, m: &str, r: &str, s: u64| (k.to_owned(), m.to_owned(), r.to_owned(), s);
    assert_eq!(
        seen,
        vec![
            row("initial admin", "POST", "/api/v1/projects", 201),
            row("initial admin", "POST", "/api/v1/keys", 201),
            row("initial admin", "POST", "/api/v1/keys", 201),
            row("deployer", "POST", "/api/v1/beads", 201),
            row("deployer", "POST", "/api/v1/beads/{id}/close", 200),
            row("watcher", "POST", "/api/v1/beads", 403),
        ],
        "exactly the authenticated writes, in order, with their caller and outcome"
    );
    let close_event = &events[4];
    assert_eq!(close_event["data"]["path"], close.as_str());
    assert_eq!(close_event["data"]["role"], "operator");
    assert!(close_event["data"]["key_id"].as_str().is_some_and(|k| !k.is_empty()));
    // No audit record carries a secret.
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&operator) && !all.contains(&viewer) && !all.contains(&c.key), "no key in the audit log");
    c.stop().await;
}
