//! `loom up` with an LLM provider registered as a connector: an `llm` bead runs against the
//! scripted OpenAI-compatible server the connector names (the `[llm]` endpoint is a dead one),
//! and a key rotated with `loom connector update` is used from the next task on, without a
//! restart; no key is ever shown. With the connectors service a process of its own (over gRPC)
//! that stops: LLM beads still run on the endpoint the agent resolved last, the REST façade reads
//! stale and refuses writes clearly, and both recover by themselves when it is back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::llm::{ChatServer, Reply};
use crate::support::{Group, LOOM, Lines, Up, bare_repo, free_port, fresh, show};

const FIRST: &str = "sk-connector-first-0123456789";
const SECOND: &str = "sk-connector-second-0123456789";

fn one_task(file: &str) -> Vec<Reply> {
    vec![
        Reply::Say(json!({"action": "write_file", "path": file, "content": "hi\n"})),
        Reply::Say(json!({"action": "git_commit", "message": format!("add {file}")})),
        Reply::Say(json!({"action": "done", "summary": format!("added {file}")})),
    ]
}

#[test]
fn llm_beads_resolve_their_endpoint_by_connector_and_follow_a_key_rotation() {
    let mut replies = one_task("one.txt");
    replies.extend(one_task("two.txt"));
    let server = ChatServer::start(replies);
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let toml = "[llm]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"not-this-one\"\n\n\
                [connectors]\nllm_provider = \"scripted\"\n";
    std::fs::write(tmp.path().join("loom.toml"), toml).unwrap();
    let (first, second) = (tmp.path().join("first.key"), tmp.path().join("second.key"));
    std::fs::write(&first, format!("{FIRST}\n")).unwrap();
    std::fs::write(&second, SECOND).unwrap();
    let up = Up::start(tmp.path(), &[]);
    assert!(up.output.text().contains("loom: connectors in process"), "{}", up.output.text());

    let added = up.loom(&[
        "connector",
        "add",
        "scripted",
        "--kind",
        "llm_provider",
        "--url",
        &format!("{}/v1", server.url),
        "--setting",
        "default_model=scripted-model",
        "--secret-file",
        &format!("api_key={}", first.display()),
        "--json",
    ]);
    let added: Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["secrets"], json!({ "api_key": "****" }), "{added}");
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "one", "--context", "executor=llm"]);
    let shown = up.wait_status(bead.trim(), "closed");
    assert_eq!(shown["close_reason"], "completed", "{shown}");
    assert_eq!(show(&origin, "one.txt"), "hi\n");
    let after_first = server.requests().len();
    assert_eq!(after_first, 3);

    // Rotate the key: the next task uses the new one, with no restart.
    up.loom(&["connector", "update", "scripted", "--secret-file", &format!("api_key={}", second.display())]);
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "two", "--context", "executor=llm"]);
    let shown = up.wait_status(bead.trim(), "closed");
    assert_eq!(shown["close_reason"], "completed", "{shown}");
    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    for (i, (authorization, body)) in requests.iter().enumerate() {
        let key = if i < after_first { FIRST } else { SECOND };
        assert_eq!(authorization.as_deref(), Some(format!("Bearer {key}").as_str()), "request {i}");
        assert_eq!(body["model"], "scripted-model", "the connector's default model");
        assert!(!body.to_string().contains(FIRST) && !body.to_string().contains(SECOND));
    }
    let listed = up.loom(&["connector", "list", "--json"]) + &up.loom(&["connector", "show", "scripted"]);
    for text in [listed, up.output.text()] {
        assert!(!text.contains(FIRST) && !text.contains(SECOND), "a key leaked: {text}");
    }
}

/// `loom serve connectors` on `listen` over the database `db_url`, ready.
fn connectors_service(dir: &Path, db_url: &str, key: &Path, listen: &str) -> (Group, Lines) {
    let env = [("LOOM_DATABASE_URL", db_url), ("LOOM_CONNECTORS__ENCRYPTION_KEY_FILE", key.to_str().unwrap())];
    let mut cmd = fresh(LOOM, dir, &env);
    let metrics = format!("127.0.0.1:{}", free_port());
    cmd.args(["serve", "connectors", "--listen", listen, "--metrics-addr", &metrics]);
    let (group, output) = Group::spawn(cmd);
    output.wait_for("the connectors service", Duration::from_secs(30), |l| l.contains("metrics and probes at"));
    (group, output)
}

/// A call of the REST façade with the admin key: status, `X-Loom-Stale`, JSON body.
fn api(up: &Up, method: &str, path: &str, body: Option<Value>) -> (u16, Option<String>, Value) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!("http://{}/api/v1{path}", up.addr);
        let mut request = reqwest::Client::new().request(method.parse().unwrap(), url).bearer_auth(&up.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.unwrap();
        let stale = resp.headers().get("x-loom-stale").map(|v| v.to_str().unwrap().to_owned());
        (resp.status().as_u16(), stale, resp.json().await.unwrap_or(Value::Null))
    })
}

fn run_bead(up: &Up, title: &str) {
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", title, "--context", "executor=llm"]);
    let shown = up.wait_status(bead.trim(), "closed");
    assert_eq!((&shown["status"], &shown["close_reason"]), (&json!("closed"), &json!("completed")), "{shown}");
}

#[test]
fn with_the_connectors_service_down_llm_beads_use_the_cached_endpoint_and_everything_recovers() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(loom_store::testing::TestDatabase::create());
    let mut replies = one_task("one.txt");
    replies.extend(one_task("two.txt"));
    replies.extend(one_task("three.txt"));
    let server = ChatServer::start(replies);
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let key = tmp.path().join("connectors.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (service, _) = connectors_service(tmp.path(), db.url(), &key, &listen);

    let up_dir = tmp.path().join("up");
    std::fs::create_dir_all(&up_dir).unwrap();
    let toml = "[llm]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"not-this-one\"\n\n\
                [connectors]\nllm_provider = \"scripted\"\n";
    std::fs::write(up_dir.join("loom.toml"), toml).unwrap();
    let (first, second) = (tmp.path().join("first.key"), tmp.path().join("second.key"));
    std::fs::write(&first, FIRST).unwrap();
    std::fs::write(&second, SECOND).unwrap();
    let url = format!("http://{listen}");
    let up = Up::start(&up_dir, &[("LOOM_CONNECTORS__SERVICE_URL", &url)]);
    assert!(up.output.text().contains(&format!("connectors service at {url}")), "{}", up.output.text());
    up.loom(&[
        "connector",
        "add",
        "scripted",
        "--kind",
        "llm_provider",
        "--url",
        &format!("{}/v1", server.url),
        "--secret-file",
        &format!("api_key={}", first.display()),
    ]);
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    run_bead(&up, "one");
    assert_eq!(api(&up, "GET", "/connectors", None).1, None, "fresh while the service is up");

    // The service stops: the agent runs the next LLM bead on the endpoint it resolved last.
    drop(service);
    run_bead(&up, "two");
    assert_eq!(show(&origin, "two.txt"), "hi\n");
    up.output.wait_for("the agent's warning", Duration::from_secs(5), |l| {
        l.contains("connectors service unreachable: using the LLM endpoint resolved last")
    });
    // Reads answer the last list, marked stale; writes are refused clearly.
    let (status, stale, listed) = api(&up, "GET", "/connectors", None);
    assert_eq!(status, 200, "{listed}");
    assert!(stale.is_some(), "X-Loom-Stale names why: {listed}");
    assert_eq!(listed[0]["id"], "scripted", "{listed}");
    let (status, _, one) = api(&up, "GET", "/connectors/scripted", None);
    assert_eq!((status, &one["id"]), (200, &json!("scripted")), "{one}");
    let new = json!({ "id": "prom", "kind": "prometheus", "url": "http://127.0.0.1:9" });
    let (status, _, refused) = api(&up, "POST", "/connectors", Some(new.clone()));
    assert_eq!(status, 503, "{refused}");
    assert!(refused.to_string().to_lowercase().contains("connectors"), "the error names the service: {refused}");
    let cli = up.loom_in(tmp.path(), &["connector", "update", "scripted", "--description", "now"]);
    assert!(!cli.status.success(), "a write while the service is down fails");

    // Back on the same address: reads are fresh and writes work again, with no restart.
    let (_service, _) = connectors_service(tmp.path(), db.url(), &key, &listen);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api(&up, "GET", "/connectors", None).1.is_some() {
        assert!(Instant::now() < deadline, "the façade did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(api(&up, "POST", "/connectors", Some(new)).0, 201);
    up.loom(&["connector", "update", "scripted", "--secret-file", &format!("api_key={}", second.display())]);
    run_bead(&up, "three");
    let keys: Vec<Option<String>> = server.requests().into_iter().map(|(authorization, _)| authorization).collect();
    let bearer = |k: &str| Some(format!("Bearer {k}"));
    let want: Vec<Option<String>> = [FIRST; 6].iter().chain(&[SECOND; 3]).map(|k| bearer(k)).collect();
    assert_eq!(
        keys, want,
        "the first key until the rotation made after the recovery, the new one from the next task on"
    );
    assert!(!up.output.text().contains(FIRST) && !up.output.text().contains(SECOND), "no key in loom up's output");
    drop(db);
}
