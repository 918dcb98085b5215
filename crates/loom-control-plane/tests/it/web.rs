//! The web UI over real HTTP: login and its cookie, role-aware pages, CSRF, writes refused by the
//! API's role check, escaping and the CSP, and the live stream's coalescing of a burst.

use std::time::{Duration, Instant};

use loom_domain::{NewBead, ProjectId};
use reqwest::{Method, StatusCode, header};
use serde_json::json;

use crate::support::{Cluster, fast_config};

/// A browser-like client that does not follow redirects (the test looks at them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn form(http: &reqwest::Client, url: &str, cookie: Option<&str>, body: &str) -> reqwest::Response {
    let mut req =
        http.post(url).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body.to_owned());
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.send().await.unwrap()
}

/// Logs in with `key`; returns the `Cookie` header value to send.
async fn login(c: &Cluster, key: &str) -> String {
    let resp = form(&browser(), &format!("{}/ui/login", c.cp.url), None, &format!("key={key}")).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().unwrap().to_owned()
}

async fn page(c: &Cluster, cookie: &str, path: &str) -> (StatusCode, header::HeaderMap, String) {
    let resp = browser().get(format!("{}{path}", c.cp.url)).header(header::COOKIE, cookie).send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.unwrap())
}

/// The CSRF token a page embeds in its forms.
fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("the page has a form with a CSRF token") + 19;
    html[at..at + 32].to_owned()
}

#[tokio::test]
async fn web_ui_logs_in_renders_by_role_and_writes_through_the_api() {
    let c = Cluster::start(fast_config()).await;
    c.project("web").await;
    let id = c.bead("web", "<script>alert(1)</script> fix login", 0, &[]).await;

    // No session: the pages send the browser to the login; a wrong key is refused there.
    let anon = browser().get(format!("{}/ui/board", c.cp.url)).send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::SEE_OTHER);
    assert_eq!(anon.headers()[header::LOCATION], "/ui/login");
    let wrong = form(&browser(), &format!("{}/ui/login", c.cp.url), None, "key=loom_nope").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let root = browser().get(format!("{}/", c.cp.url)).send().await.unwrap();
    assert_eq!(root.headers()[header::LOCATION], "/ui/board");

    // The admin sees the board with its write controls, escaped output and a strict CSP.
    let admin = login(&c, &c.key).await;
    let (status, headers, board) = page(&c, &admin, "/ui/board?project=web").await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let escaped = board.lines().find(|l| l.contains("fix login")).unwrap_or_default();
    assert!(escaped.contains("&#60;script&#62;alert(1)&#60;/script&#62; fix login"), "{escaped}");
    assert!(!board.contains("<script>alert"));
    assert!(!board.contains(" style=") && !board.contains("<script>"), "no inline style or script");
    assert!(board.contains("New bead") && board.contains(&format!("formaction=\"/ui/beads/{id}/close\"")));
    assert!(board.contains("data-column=\"ready\""), "{board}");

    // A viewer sees no write control, and a write it forges anyway is refused by the API.
    let viewer_key = c.post("/api/v1/keys", json!({ "name": "watcher", "role": "viewer" })).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let viewer = login(&c, &viewer_key).await;
    let (_, _, seen) = page(&c, &viewer, "/ui/board?project=web").await;
    assert!(seen.contains("fix login") && !seen.contains("New bead") && !seen.contains("/close\""), "{seen}");
    let viewer_csrf = csrf(&seen); // the logout form's
    let forged = form(
        &browser(),
        &format!("{}/ui/beads/{id}/close", c.cp.url),
        Some(&viewer),
        &format!("csrf={viewer_csrf}&next=/ui/board"),
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.text().await.unwrap().contains("operator"), "the API's refusal is shown");
    assert_eq!(c.get(&format!("/api/v1/beads/{id}")).await["status"], "open");

    // The admin's write needs the session's CSRF token; with it, the bead closes.
    let url = format!("{}/ui/beads/{id}/close", c.cp.url);
    let no_token = form(&browser(), &url, Some(&admin), "next=/ui/board").await;
    assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
    let other_token = form(&browser(), &url, Some(&admin), &format!("csrf={viewer_csrf}")).await;
    assert_eq!(other_token.status(), StatusCode::FORBIDDEN);
    let token = csrf(&board);
    let closed = form(&browser(), &url, Some(&admin), &format!("csrf={token}&next=%2Fui%2Fbeads%2F{id}")).await;
    assert_eq!(closed.status(), StatusCode::SEE_OTHER);
    assert_eq!(closed.headers()[header::LOCATION], format!("/ui/beads/{id}").as_str());
    let bead = c.get(&format!("/api/v1/beads/{id}")).await;
    assert_eq!(bead["status"], "closed");
    assert!(bead["close_reason"].as_str().unwrap().contains("web UI"), "{bead}");

    // Create through the dialog's form; the detail page renders its Markdown safely.
    let body = format!(
        "csrf={token}&project_id=web&title=from+the+ui&description=%23+Plan%0A%0A*bold*+%3Cimg+src%3Dx+onerror%3Dalert(1)%3E&priority=1&type=bug&tags=ui%2C+web&context=command%3Dtrue&next=%2Fui%2Fboard"
    );
    let created = form(&browser(), &format!("{}/ui/beads", c.cp.url), Some(&admin), &body).await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let listed = c.get("/api/v1/beads?project_id=web&type=bug").await;
    let new = &listed["beads"][0];
    assert_eq!((new["title"].as_str(), new["priority"].as_i64()), (Some("from the ui"), Some(1)), "{listed}");
    assert_eq!(new["tags"], json!(["ui", "web"]));
    let new_id = new["id"].as_str().unwrap();
    let (status, _, detail) = page(&c, &admin, &format!("/ui/beads/{new_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(detail.contains("<h1>Plan</h1>") && detail.contains("<em>bold</em>"), "{detail}");
    assert!(!detail.contains("<img") && detail.contains("&lt;img"), "raw HTML is shown as text");
    // The edit dialog's form patches the bead.
    let edited = form(
        &browser(),
        &format!("{}/ui/beads/{new_id}/edit", c.cp.url),
        Some(&admin),
        &format!(
            "csrf={token}&title=renamed&description=&type=chore&priority=3&assignee=alice&tags=&next=%2Fui%2Fboard"
        ),
    )
    .await;
    assert_eq!(edited.status(), StatusCode::SEE_OTHER);
    let bead = c.get(&format!("/api/v1/beads/{new_id}")).await;
    assert_eq!(
        (&bead["title"], &bead["type"], &bead["priority"], &bead["assignee"]),
        (&json!("renamed"), &json!("chore"), &json!(3), &json!("alice")),
        "{bead}"
    );
    // Bulk: reprioritise two beads at once; a redispatch of beads that do not run is refused, each named.
    let bulk = format!("{}/ui/bulk", c.cp.url);
    let both = format!("csrf={token}&ids={id}&ids={new_id}&next=%2Fui%2Flist");
    let reprioritised = form(&browser(), &bulk, Some(&admin), &format!("{both}&action=priority&priority=0")).await;
    assert_eq!(reprioritised.status(), StatusCode::SEE_OTHER);
    for b in [&id, &new_id.to_owned()] {
        assert_eq!(c.get(&format!("/api/v1/beads/{b}")).await["priority"], 0);
    }
    let refused = form(&browser(), &bulk, Some(&admin), &format!("{both}&action=redispatch")).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let text = refused.text().await.unwrap();
    assert!(text.contains(&id) && text.contains(new_id) && text.contains("only a running bead"), "{text}");
    // A refused create shows the API's reason.
    let bad = form(
        &browser(),
        &format!("{}/ui/beads", c.cp.url),
        Some(&admin),
        &format!("csrf={token}&project_id=web&title="),
    )
    .await;
    assert!(bad.status().is_client_error(), "{}", bad.status());

    // The other views render for the viewer.
    for path in ["/ui/projects", "/ui/agents", "/ui/events", "/ui/list?project=web", &format!("/ui/beads/{id}")] {
        let (status, _, html) = page(&c, &viewer, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(!html.contains("Pause web") && !html.contains("Apply to selected"), "{path} shows no write control");
    }
    let (_, _, projects) = page(&c, &admin, "/ui/projects").await;
    assert!(projects.contains("Pause web"), "{projects}");
    c.stop().await;
}

/// Reads SSE `changed` messages from `resp` until `until`; returns the `events` count of each.
async fn changed_messages(resp: &mut reqwest::Response, until: Instant) -> Vec<u64> {
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(until.saturating_duration_since(Instant::now()), resp.chunk()).await
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n")
        .filter(|m| m.lines().any(|l| l == "event: changed"))
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()["events"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn web_live_stream_coalesces_a_burst_of_a_thousand_beads() {
    let c = Cluster::start(fast_config()).await;
    c.project("burst").await;
    let cookie = login(&c, &c.key).await;
    let mut live = browser()
        .request(Method::GET, format!("{}/ui/live?project=burst", c.cp.url))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let project = ProjectId::parse("burst").unwrap();
    let beads = (0..1000).map(|n| NewBead::new(project.clone(), format!("bead {n}"))).collect();
    c.store.create_beads(beads).await.unwrap();
    let counts = changed_messages(&mut live, Instant::now() + Duration::from_secs(3)).await;
    let total: u64 = counts.iter().sum();
    println!("a 1000-bead burst reached the page as {} message(s): {counts:?}", counts.len());
    assert!(total >= 1000, "every event is counted: {counts:?}");
    assert!(!counts.is_empty() && counts.len() <= 3, "a burst is coalesced into a few messages: {counts:?}");
    // A stream resumed from before the burst gets it again, as one message.
    let mut resumed = browser()
        .request(Method::GET, format!("{}/ui/live?project=burst&after=0", c.cp.url))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let again = changed_messages(&mut resumed, Instant::now() + Duration::from_secs(2)).await;
    assert!(again.len() == 1 && again[0] >= 1000, "{again:?}");
    c.stop().await;
}
