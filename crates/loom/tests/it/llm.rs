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
    let toml = format!("[llm]\nbase_url = \"{}/v1\"\nmodel = \"scripted-model\"\nmax_tokens = 256\n", server.url);
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
