//! Fixtures: a bare "remote" repository with a seed commit, a scripted chat completions server,
//! buses (embedded, or NATS with a namespace deleted at the end), and a running agent.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use loom_agent::{AgentConfig, Error};
use loom_bus::{
    Bus, BusConfig, ConsumeOptions, ResultKind, ResultMessage, Subscription, TaskData, TaskKind, TaskMessage,
    TaskMetadata, TraceContext,
};
use loom_domain::{BeadId, ContextMap, DispatchId, ProjectId};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);

/// A bare repository on branch `main` with one commit (README.md, AGENTS.md), and a scratch
/// directory for the agent's workspace.
pub struct Repo {
    pub dir: TempDir,
    pub remote: PathBuf,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        git(dir.path(), &["init", "-q", "--bare", "-b", "main", remote.to_str().unwrap()]);
        let seed = dir.path().join("seed");
        git(dir.path(), &["clone", "-q", remote.to_str().unwrap(), seed.to_str().unwrap()]);
        git(&seed, &["checkout", "-q", "-b", "main"]);
        std::fs::write(seed.join("README.md"), "# demo\n").unwrap();
        std::fs::write(seed.join("AGENTS.md"), "Always write tests. MARKER-AGENTS-MD\n").unwrap();
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", "seed"]);
        git(&seed, &["push", "-q", "origin", "main"]);
        std::fs::create_dir(dir.path().join("shared")).unwrap();
        Repo { dir, remote }
    }

    /// A directory bead commands may write besides their worktree (`sandbox.writable`): where
    /// tests' commands leave side-effect logs and wait for flags. Nothing else outside the
    /// worktree is writable, or even visible under /tmp, in the sandbox.
    pub fn shared(&self) -> PathBuf {
        self.dir.path().join("shared")
    }

    /// A second clone, as another contributor would have.
    pub fn seed(&self) -> PathBuf {
        self.dir.path().join("seed")
    }

    pub fn work_root(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `git show {rev}:{path}` in the remote.
    pub fn show(&self, rev: &str, path: &str) -> Option<String> {
        let out = Command::new("git")
            .args(["--git-dir", self.remote.to_str().unwrap(), "show", &format!("{rev}:{path}")])
            .output()
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Commit subjects of `rev` in the remote, newest first.
    pub fn log(&self, rev: &str) -> Vec<String> {
        let out = git(self.dir.path(), &["--git-dir", self.remote.to_str().unwrap(), "log", "--format=%s", rev]);
        out.lines().map(str::to_owned).collect()
    }

    pub fn config(&self, project: &str) -> AgentConfig {
        let mut c =
            AgentConfig::new(ProjectId::parse(project).unwrap(), self.work_root(), self.remote.to_str().unwrap());
        c.progress_interval = Duration::from_millis(300);
        c.heartbeat_interval = Duration::from_millis(500);
        c.shutdown_grace = Duration::from_secs(5);
        c.sandbox.writable = vec![self.shared()];
        c
    }
}

/// One scripted reply of the chat server.
#[derive(Clone, Debug)]
pub enum Reply {
    /// An assistant message with this content (and some token usage).
    Say(String),
    /// An assistant message with these native calls: `(name, arguments)`.
    Calls(Vec<(String, Value)>),
    /// A reply cut off at `max_tokens` (`finish_reason: "length"`) with this partial content.
    Cut(String),
    /// Native calls cut off at `max_tokens`.
    CutCalls(Vec<(String, Value)>),
    /// HTTP 429 with this `Retry-After`.
    RateLimited(String),
    /// An error status with this body.
    Status(u16, String),
}

pub fn say(v: Value) -> Reply {
    Reply::Say(v.to_string())
}

/// One reply calling these tools in order.
pub fn calls(list: &[(&str, Value)]) -> Reply {
    Reply::Calls(list.iter().map(|(n, a)| ((*n).to_owned(), a.clone())).collect())
}

/// A recorded request: its `Authorization` header, JSON body, and when it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub body: Value,
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn messages(&self) -> &[Value] {
        self.body["messages"].as_array().unwrap()
    }

    /// The names of the `tools` offered (empty when none).
    pub fn tools(&self) -> Vec<&str> {
        let tools = self.body.get("tools").and_then(Value::as_array);
        tools.into_iter().flatten().map(|t| t["function"]["name"].as_str().unwrap()).collect()
    }
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    calls: AtomicU32,
}

/// A real HTTP server speaking `POST /v1/chat/completions`, answering from a script in order.
pub struct ChatServer {
    pub url: String,
    script: Arc<Script>,
    _server: JoinHandle<()>,
}

/// The model the scripted server says answered.
pub const SERVED_MODEL: &str = "scripted-model-1";

impl ChatServer {
    pub async fn start(replies: Vec<Reply>) -> ChatServer {
        let script = Arc::new(Script { replies: Mutex::new(replies.into()), ..Script::default() });
        let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ChatServer { url, script, _server: server }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.script.requests.lock().unwrap().clone()
    }
}

async fn complete(State(script): State<Arc<Script>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    script.requests.lock().unwrap().push(Recorded { authorization, body, at: std::time::Instant::now() });
    let answer = |message: Value, finish: &str| {
        Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": SERVED_MODEL,
            "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
            "usage": { "prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110 },
        }))
        .into_response()
    };
    let next = script.replies.lock().unwrap().pop_front();
    match next {
        Some(Reply::Say(content)) => answer(json!({ "role": "assistant", "content": content }), "stop"),
        Some(Reply::Cut(content)) => answer(json!({ "role": "assistant", "content": content }), "length"),
        Some(reply @ (Reply::Calls(_) | Reply::CutCalls(_))) => {
            let (list, finish) = match reply {
                Reply::Calls(list) => (list, "tool_calls"),
                Reply::CutCalls(list) => (list, "length"),
                _ => unreachable!(),
            };
            let calls: Vec<Value> = list
                .into_iter()
                .map(|(name, args)| {
                    let id = format!("call_{}", script.calls.fetch_add(1, Ordering::Relaxed));
                    json!({ "id": id, "type": "function", "function": { "name": name, "arguments": args.to_string() } })
                })
                .collect();
            answer(json!({ "role": "assistant", "content": null, "tool_calls": calls }), finish)
        }
        Some(Reply::RateLimited(after)) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", after)], r#"{"error":{"message":"rate limited"}}"#)
                .into_response()
        }
        Some(Reply::Status(code, body)) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
    }
}

pub fn unique_namespace() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("ag{:x}{:x}{}", std::process::id(), rand::random::<u16>(), N.fetch_add(1, Ordering::Relaxed))
}

fn bus_config() -> BusConfig {
    BusConfig {
        url: std::env::var("LOOM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        namespace: Some(unique_namespace()),
        ack_wait: Duration::from_secs(2),
        backoff: vec![Duration::from_millis(100)],
        progress_interval: Duration::from_millis(300),
        agent_ttl: Duration::from_secs(3),
        ..BusConfig::default()
    }
}

/// The embedded bus (same semantics, in memory).
pub fn embedded() -> Bus {
    Bus::embedded(bus_config()).unwrap()
}

/// A provisioned bus on the real NATS, in a namespace of its own; call [`nats_cleanup`].
pub async fn nats() -> Bus {
    let bus = Bus::connect(bus_config()).await.expect("NATS must be running at LOOM_NATS_URL (scripts/test.sh)");
    bus.provision().await.unwrap();
    bus
}

/// A bus on the real NATS whose streams and bucket do not exist yet (call `provision` later).
pub async fn nats_unprovisioned() -> Bus {
    Bus::connect(bus_config()).await.expect("NATS must be running at LOOM_NATS_URL (scripts/test.sh)")
}

pub async fn nats_cleanup(bus: Bus) {
    bus.destroy().await.unwrap();
    bus.shutdown();
}

/// A task for `bead` with a fresh dispatch id.
pub fn task(project: &str, bead: &str, executor: &str, context: &[(&str, &str)]) -> TaskMessage {
    let context: ContextMap = context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let dispatch = format!("d{:x}{:x}", rand::random::<u64>(), rand::random::<u16>());
    TaskMessage {
        kind: TaskKind::Assigned,
        project_id: ProjectId::parse(project).unwrap(),
        bead_id: BeadId::parse(bead).unwrap(),
        assigned_to: String::new(),
        task_data: TaskData {
            title: format!("implement {bead}"),
            description: "Add hello.txt".into(),
            priority: 1,
            bead_type: "task".into(),
            context,
            work_dir: String::new(),
            project_context: ContextMap::new(),
        },
        correlation_id: dispatch.clone(),
        timestamp: Utc::now(),
        metadata: TaskMetadata {
            dispatch_id: DispatchId::parse(&dispatch).unwrap(),
            attempt: 1,
            role: None,
            executor: executor.into(),
        },
    }
}

pub fn cancel_of(task: &TaskMessage) -> TaskMessage {
    TaskMessage { kind: TaskKind::Cancelled, task_data: TaskData::default(), ..task.clone() }
}

pub async fn publish(bus: &Bus, task: &TaskMessage) {
    let out = bus.task(task, &TraceContext::default()).unwrap();
    let receipt = bus.publish(out).await.unwrap();
    assert!(!receipt.duplicate, "{:?} was dropped as a duplicate", task.kind);
}

pub async fn results(bus: &Bus) -> Subscription<ResultMessage> {
    bus.consume_results(ConsumeOptions { max_in_flight: 64, prefetch: true }).await.unwrap()
}

/// The next result of `kind` (others are acked and skipped).
pub async fn next_of(sub: &mut Subscription<ResultMessage>, want: &[ResultKind]) -> ResultMessage {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let received = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} result within {WAIT:?}"))
            .expect("results subscription open");
        received.delivery.ack().await.unwrap();
        if want.contains(&received.message.kind) {
            return received.message;
        }
    }
}

/// A final result (completed or failed).
pub async fn final_result(sub: &mut Subscription<ResultMessage>) -> ResultMessage {
    next_of(sub, &[ResultKind::Completed, ResultKind::Failed]).await
}

/// An agent running in a tokio task.
pub struct Agent {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), Error>>,
}

impl Agent {
    pub fn start(config: AgentConfig, bus: &Bus) -> Agent {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(loom_agent::run(config, bus.clone(), shutdown.clone()));
        Agent { shutdown, handle }
    }

    /// Graceful stop; the agent must exit cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle).await.expect("agent stops").unwrap().unwrap();
    }
}
