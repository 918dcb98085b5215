//! Projects through the API: a project whose beads other projects' beads wait on is not deleted.

use reqwest::{Method, StatusCode};

use crate::support::{Cluster, fast_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_project_other_projects_depend_on_is_refused() {
    let c = Cluster::start(fast_config()).await;
    c.project("lib").await;
    c.project("app").await;
    let base = c.bead("lib", "base", 1, &[]).await;
    let user = c.bead("app", "uses base", 1, &[&base]).await;
    let (status, body) = c.call(Method::DELETE, "/api/v1/projects/lib", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for name in ["app", user.as_str(), base.as_str(), "loom bead dep rm"] {
        assert!(message.contains(name), "the error names {name}: {message}");
    }
    assert_eq!(c.get("/api/v1/projects/lib").await["id"], "lib", "the project is still there");
    let waiting = c.get(&format!("/api/v1/beads/{user}")).await;
    assert_eq!((&waiting["status"], &waiting["blocked_by"][0]), (&"open".into(), &base.as_str().into()));
    assert!(c.get("/api/v1/ready?project_id=app").await.as_array().unwrap().is_empty(), "it still waits");

    let dep = serde_json::json!({ "blocker": base });
    let (status, body) = c.call(Method::DELETE, &format!("/api/v1/beads/{user}/dependencies"), Some(dep)).await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = c.call(Method::DELETE, "/api/v1/projects/lib", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    c.stop().await;
}
