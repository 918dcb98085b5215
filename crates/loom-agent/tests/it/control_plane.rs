//! End to end with the real control plane (PostgreSQL + NATS): a chain of shell beads on a
//! local git repository runs in order through the agent, each bead closes exactly once, and
//! each command it ran is an `agent.command` event.

use std::sync::Arc;
use std::time::Duration;

use loom_store::Store;
use loom_store::testing::TestDatabase;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{Agent, Repo, nats, nats_cleanup};

struct Api {
    url: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> Value {
        let resp = req.bearer_auth(&self.key).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.send(self.http.get(format!("{}{path}", self.url))).await
    }

    async fn wait_closed(&self, bead: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get(&format!("/api/v1/beads/{bead}")).await;
            if v["status"] == "closed" || tokio::time::Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_bead_chain_runs_to_completion_and_each_bead_closes_once() {
    let repo = Repo::new();
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let bus = nats().await;
    let key = loom_control_plane::bootstrap_admin_key(&*store).await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cp_config = loom_control_plane::Config {
        sweep_interval: Duration::from_millis(100),
        retry_backoff: Duration::from_millis(100),
        leader_ttl: Duration::from_secs(1),
        ..loom_control_plane::Config::default()
    };
    let cp_stop = CancellationToken::new();
    let cp = tokio::spawn(loom_control_plane::run(cp_config, listener, store, bus.clone(), cp_stop.clone()));
    let api = Api { url, key, http: reqwest::Client::new() };

    api.post("/api/v1/projects", json!({ "id": "chain", "git_repo": repo.remote.to_str().unwrap() })).await;
    let shell = |command: &str| json!({ "command": command, "executor": "shell" });
    let first = api
        .post(
            "/api/v1/beads",
            json!({ "project_id": "chain", "title": "first", "context": shell("echo one > one.txt") }),
        )
        .await;
    let first = first["id"].as_str().unwrap().to_owned();
    let second_cmd = "test -f one.txt && echo two > two.txt";
    let second = api
        .post(
            "/api/v1/beads",
            json!({ "project_id": "chain", "title": "second", "blocked_by": [first], "context": shell(second_cmd) }),
        )
        .await;
    let second = second["id"].as_str().unwrap().to_owned();
    let agent = Agent::start(repo.config("chain"), &bus);

    let last = api.wait_closed(&second).await;
    assert_eq!(last["status"], "closed", "{last}");
    assert_eq!(api.get(&format!("/api/v1/beads/{first}")).await["status"], "closed");
    assert_eq!(repo.show("main", "two.txt").as_deref(), Some("two\n"), "the second bead saw the first's push");
    let log = repo.log("main");
    for bead in [&first, &second] {
        let landed = log.iter().filter(|s| s.starts_with(&format!("{bead}:"))).count();
        assert_eq!(landed, 1, "{bead} landed once: {log:?}");
    }
    // Every command the agent ran is an `agent.command` event: who, what, when, exit code,
    // bead, dispatch.
    let events = api.get("/api/v1/events?project_id=chain&after=0&limit=1000").await;
    let commands: Vec<&Value> = events.as_array().unwrap().iter().filter(|e| e["type"] == "agent.command").collect();
    assert_eq!(commands.len(), 2, "{events}");
    let second_run = commands.iter().find(|e| e["entity_id"] == second.as_str()).expect("the second bead's command");
    let data = &second_run["data"];
    assert_eq!((data["command"].as_str(), data["exit_code"].as_i64()), (Some(second_cmd), Some(0)), "{data}");
    assert_eq!((data["kind"].as_str(), data["sandbox"].as_str()), (Some("shell"), Some("bubblewrap")), "{data}");
    assert!(data["agent"].as_str().is_some_and(|a| a.starts_with("chain-")), "{data}");
    assert!(data["dispatch"].as_str().is_some_and(|d| !d.is_empty()) && data["started_at"].is_string(), "{data}");
    agent.stop().await;
    cp_stop.cancel();
    cp.await.unwrap().unwrap();
    nats_cleanup(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_beads_progress_is_an_agent_progress_event_with_its_latest_steps() {
    let repo = Repo::new();
    let server = crate::support::ChatServer::start(vec![
        crate::support::say(json!({"action": "run_command", "command": "true # token=s3cr3t-value-xyz"})),
        crate::support::say(json!({"action": "run_command", "command": "sleep 2"})),
        crate::support::say(json!({"action": "done", "summary": "slept"})),
    ])
    .await;
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let bus = nats().await;
    let key = loom_control_plane::bootstrap_admin_key(&*store).await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cp_config = loom_control_plane::Config {
        sweep_interval: Duration::from_millis(100),
        leader_ttl: Duration::from_secs(1),
        ..loom_control_plane::Config::default()
    };
    let cp_stop = CancellationToken::new();
    let cp = tokio::spawn(loom_control_plane::run(cp_config, listener, store, bus.clone(), cp_stop.clone()));
    let api = Api { url, key, http: reqwest::Client::new() };
    api.post("/api/v1/projects", json!({ "id": "live", "git_repo": repo.remote.to_str().unwrap() })).await;
    let bead = api
        .post("/api/v1/beads", json!({ "project_id": "live", "title": "sleep", "context": { "executor": "llm" } }))
        .await;
    let bead = bead["id"].as_str().unwrap().to_owned();
    let mut config = repo.config("live");
    config.llm.base_url = server.url.clone();
    config.llm.tool_mode = loom_agent::ToolMode::Text;
    config.progress_interval = Duration::from_millis(200);
    let agent = Agent::start(config, &bus);

    assert_eq!(api.wait_closed(&bead).await["status"], "closed");
    let events = api.get("/api/v1/events?project_id=live&after=0&limit=1000").await;
    let progress: Vec<&Value> = events.as_array().unwrap().iter().filter(|e| e["type"] == "agent.progress").collect();
    assert!(!progress.is_empty(), "the running bead's progress is visible: {events}");
    let data = &progress[0]["data"];
    assert_eq!((&data["bead"], &data["turn"], &data["tokens"]), (&json!(bead), &json!(2), &json!(110)), "{data}");
    assert_eq!(data["steps"][0]["action"], "run_command", "{data}");
    assert_eq!(data["steps"][0]["detail"], "true # token=<redacted>", "{data}");
    assert!(progress[0]["description"].as_str().unwrap().contains("last step run_command"), "{}", progress[0]);
    let shown = serde_json::to_string(&progress).unwrap();
    assert!(!shown.contains("s3cr3t-value-xyz"), "no secret in the progress events: {shown}");
    agent.stop().await;
    cp_stop.cancel();
    cp.await.unwrap().unwrap();
    nats_cleanup(bus).await;
}
