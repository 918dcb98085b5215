//! Reads that stay bounded however much is stored: one project's events behind a busy project's,
//! the work graph in pages.

use std::time::Duration;

use loom_domain::{NewBead, ProjectId};
use reqwest::Method;
use serde_json::Value;

use crate::support::{Cluster, fast_config};

/// Loads `n` beads into `project` straight through the store (thousands of API calls would
/// only slow the test down); each leaves a `bead.created` event.
async fn load_beads(c: &Cluster, project: &str, n: usize) {
    let project = ProjectId::parse(project).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let beads = chunk.iter().map(|i| NewBead::new(project.clone(), format!("busy {i}"))).collect();
        c.store.create_beads(beads).await.unwrap();
    }
}

/// `GET {path}`: the JSON body and the `X-Next-Cursor` header.
async fn get_page(c: &Cluster, path: &str) -> (Value, i64) {
    let resp = c.http.get(format!("{}{path}", c.cp.url)).bearer_auth(&c.key).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    let next = resp.headers()["x-next-cursor"].to_str().unwrap().parse().unwrap();
    (resp.json().await.unwrap(), next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_projects_events_are_reached_behind_a_busy_one() {
    let c = Cluster::start(fast_config()).await;
    c.project("quiet").await;
    c.project("busy").await;
    load_beads(&c, "busy", 5000).await;
    let mine = c.bead("quiet", "the quiet one", 1, &[]).await;

    // A client paging quiet's events with the cursor reaches its bead at once, not after 5,000
    // of busy's events (before, it got `[]` for every page that held only busy's).
    let (mut after, mut requests, mut found) = (0, 0, None);
    while found.is_none() && requests < 10 {
        let (page, next) = get_page(&c, &format!("/api/v1/events?project_id=quiet&limit=100&after={after}")).await;
        requests += 1;
        let page = page.as_array().unwrap().clone();
        assert!(page.iter().all(|e| e["project_id"] == "quiet"), "only quiet's events: {page:?}");
        found = page.into_iter().find(|e| e["entity_id"] == mine.as_str());
        assert!(next >= after, "the cursor never goes back");
        after = next;
    }
    let found = found.expect("quiet's bead.created within 10 requests");
    assert_eq!(found["type"], "bead.created");
    assert_eq!(requests, 1, "the first page has it");
    assert!(after >= found["seq"].as_i64().unwrap(), "the cursor is past what was returned");
    // The audit events of the requests above are written behind their responses, so the head may
    // still move while the page is read: the cursor is at the head of that moment.
    let head_before = c.store.last_event_seq().await.unwrap();
    let (rest, next) = get_page(&c, &format!("/api/v1/events?project_id=quiet&after={after}")).await;
    let head_after = c.store.last_event_seq().await.unwrap();
    assert_eq!(rest, Value::Array(vec![]), "nothing more of quiet's");
    assert!(
        (head_before..=head_after).contains(&next),
        "the cursor {next} is at the head ({head_before}..={head_after})"
    );

    // Without a filter the body is the same JSON array as before, and the cursor pages it.
    let (all, next) = get_page(&c, "/api/v1/events?limit=1000").await;
    assert_eq!(all.as_array().unwrap().len(), 1000);
    assert_eq!(next, all[999]["seq"].as_i64().unwrap());
    let (status, body) = c.call(Method::GET, "/api/v1/events?project_id=Not.A.Slug", None).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");

    // The stream's filter reads the store's filter too: quiet's events come first, not after
    // busy's 5,000.
    let mut resp = c
        .http
        .get(format!("{}/api/v1/events/stream?project_id=quiet&after=0", c.cp.url))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains(mine.as_str()) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    assert!(text.contains(mine.as_str()), "the stream sent quiet's bead: {text}");
    assert!(!text.contains("\"busy\""), "and none of busy's events: {text}");
    drop(resp);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_graph_comes_in_bounded_pages() {
    let c = Cluster::start(fast_config()).await;
    c.project("graph").await;
    load_beads(&c, "graph", 1200).await;
    let first = c.bead("graph", "first of the chain", 1, &[]).await;
    let second = c.bead("graph", "second", 1, &[&first]).await;
    c.bead("graph", "third", 1, &[&second, &first]).await;

    let (mut nodes, mut edges, mut pages, mut cursor) = (0, Vec::new(), 0, None::<String>);
    loop {
        let query = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let page = c.get(&format!("/api/v1/work-graph?project_id=graph{query}")).await;
        pages += 1;
        let n = page["nodes"].as_array().unwrap().len();
        assert!(n <= 500, "a page holds at most the default 500 beads, not {n}");
        nodes += n;
        edges.extend(page["edges"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((nodes, pages), (1203, 3), "every bead once, in pages");
    assert_eq!(edges.len(), 3, "every edge once: {edges:?}");
    assert!(edges.iter().all(|e| e["bead"].is_string() && e["blocker"].is_string()));

    let small = c.get("/api/v1/work-graph?project_id=graph&limit=10").await;
    assert_eq!(small["nodes"].as_array().unwrap().len(), 10);
    let (status, body) = c.call(Method::GET, "/api/v1/work-graph?project_id=graph&limit=5000", None).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "the cap is 1000 per page: {body}");
    c.stop().await;
}
