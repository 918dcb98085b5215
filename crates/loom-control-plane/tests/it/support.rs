//! A cluster per test: a fresh PostgreSQL database, a bus namespace, a control plane on port 0,
//! and a scriptable test agent. Everything is removed when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use loom_bus::{
    Bus, BusConfig, ConsumeOptions, ResultData, ResultKind, ResultMessage, ResultMetadata, ResultStatus, TaskKind,
    TaskMessage, TraceContext,
};
use loom_control_plane::Config;
use loom_domain::AgentId;
use loom_store::Store;
use loom_store::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn unique_namespace() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("cp{:x}{:x}{}", std::process::id(), rand::random::<u16>(), N.fetch_add(1, Ordering::Relaxed))
}

/// Timings short enough for tests.
pub fn fast_config() -> Config {
    Config {
        lease: Duration::from_secs(30),
        retry_backoff: Duration::from_millis(100),
        sweep_interval: Duration::from_millis(100),
        leader_ttl: Duration::from_secs(1),
        ..Config::default()
    }
}

/// One running control plane.
pub struct ControlPlane {
    pub url: String,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), loom_control_plane::Error>>>,
}

impl ControlPlane {
    pub async fn start(config: Config, store: Arc<dyn Store>, bus: Bus) -> ControlPlane {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(loom_control_plane::run(config, listener, store, bus, shutdown.clone()));
        ControlPlane { url, shutdown, handle: Some(handle) }
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Deletes a test's bus namespace when dropped, even when the test panicked: it connects afresh
/// from its own thread, since the test's runtime may be unwinding.
pub struct NamespaceGuard(pub BusConfig);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let config = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(bus) = Bus::connect(config).await {
                    let _ = bus.destroy().await;
                }
            });
        })
        .join();
    }
}

pub struct Cluster {
    pub cp: ControlPlane,
    pub key: String,
    pub store: Arc<dyn Store>,
    pub bus: Bus,
    pub http: reqwest::Client,
    _namespace: NamespaceGuard,
    _db: TestDatabase,
}

impl Cluster {
    pub async fn start(config: Config) -> Cluster {
        let db = TestDatabase::create().await;
        let store: Arc<dyn Store> = Arc::new(db.store().await);
        let nats = std::env::var("LOOM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let bus_config = BusConfig {
            url: nats,
            namespace: Some(unique_namespace()),
            ack_wait: Duration::from_secs(3),
            backoff: vec![Duration::from_millis(200)],
            ..BusConfig::default()
        };
        let bus = Bus::connect(bus_config.clone()).await.expect("NATS must be running (scripts/test.sh starts it)");
        bus.provision().await.unwrap();
        let key = loom_control_plane::bootstrap_admin_key(&*store).await.unwrap().expect("a fresh store has no key");
        let cp = ControlPlane::start(config, store.clone(), bus.clone()).await;
        Cluster { cp, key, store, bus, http: reqwest::Client::new(), _namespace: NamespaceGuard(bus_config), _db: db }
    }

    pub async fn call_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.cp.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(Some(&self.key), method, path, body).await
    }

    /// POST that must succeed; returns the body.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call(Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call(Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status} {v}");
        v
    }

    pub async fn project(&self, id: &str) {
        self.post("/api/v1/projects", json!({ "id": id, "git_repo": "/tmp/repo" })).await;
    }

    pub async fn bead(&self, project: &str, title: &str, priority: u8, blocked_by: &[&str]) -> String {
        let v = self
            .post(
                "/api/v1/beads",
                json!({ "project_id": project, "title": title, "priority": priority, "blocked_by": blocked_by }),
            )
            .await;
        v["id"].as_str().unwrap().to_owned()
    }

    /// Advertises `slots` agent slots for `project` in the registry, as a registered agent that
    /// never takes a task would (the test reads the tasks itself). Withdrawn when dropped.
    pub async fn advertise(&self, project: &str, slots: u32) -> Advertised {
        Advertised::start(&self.bus, project, slots).await
    }

    /// Polls a bead until `done` holds or the timeout passes; returns the last state.
    pub async fn wait_bead(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.get(&format!("/api/v1/beads/{id}")).await;
            if done(&v) || tokio::time::Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the control plane (it must stop cleanly); the guards remove the namespace and database.
    pub async fn stop(mut self) {
        self.cp.stop().await;
    }
}

/// What the test agent does with a task.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behaviour {
    Succeed,
    Fail,
    /// Take the task and never answer or ack (a dead agent).
    Vanish,
}

/// A test agent on the bus: registers one slot in the agent registry (so the dispatcher sends it
/// work), runs every task of `project` with `decide(title)`, records the titles in the order it
/// ran them, publishes the result, then acks.
pub struct TestAgent {
    pub log: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl TestAgent {
    pub async fn start(bus: &Bus, project: &str, decide: fn(&str) -> Behaviour) -> TestAgent {
        TestAgent::start_bound(bus, project, None, decide).await
    }

    /// An agent bound to `role`'s queue (`loom serve agent --role`), or the project's.
    pub async fn start_bound(bus: &Bus, project: &str, role: Option<&str>, decide: fn(&str) -> Behaviour) -> TestAgent {
        let project = loom_domain::ProjectId::parse(project).unwrap();
        let bound = role.map(|r| loom_bus::Role::parse(r).unwrap());
        let mut sub = bus
            .consume_tasks(&project, bound.as_ref(), ConsumeOptions { max_in_flight: 1, prefetch: false })
            .await
            .unwrap();
        let (bus, log, stop) = (bus.clone(), Arc::new(Mutex::new(Vec::new())), CancellationToken::new());
        let (log2, stop2) = (log.clone(), stop.clone());
        static N: AtomicU32 = AtomicU32::new(0);
        let agent = AgentId::parse(&format!("test-agent-{}", N.fetch_add(1, Ordering::Relaxed))).unwrap();
        let record = loom_bus::AgentRecord {
            agent_id: agent.clone(),
            project_id: project.clone(),
            role: role.unwrap_or_default().to_owned(),
            instance: "test".into(),
            status: loom_domain::AgentStatus::Idle,
            current_bead: None,
            capacity: 1,
            last_heartbeat: Utc::now(),
        };
        bus.register_agent(&record).await.unwrap();
        let handle = tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
            loop {
                let received = tokio::select! {
                    _ = stop2.cancelled() => {
                        let _ = bus.deregister_agent(&agent).await;
                        return;
                    }
                    _ = heartbeat.tick() => {
                        let _ = bus.heartbeat_agent(&loom_bus::AgentRecord { last_heartbeat: Utc::now(), ..record.clone() }).await;
                        continue;
                    }
                    r = sub.next() => match r { Some(r) => r, None => return },
                };
                let task = received.message.clone();
                if task.kind == TaskKind::Cancelled {
                    received.delivery.ack().await.unwrap();
                    continue;
                }
                log2.lock().unwrap().push(task.task_data.title.clone());
                let behaviour = decide(&task.task_data.title);
                if behaviour == Behaviour::Vanish {
                    // It reports one progress (so the bead is running), then is never heard of.
                    let mut progress = result_for(&task, &agent, true);
                    progress.kind = ResultKind::Progress;
                    progress.result.status = ResultStatus::InProgress;
                    bus.publish(bus.result(&progress, &TraceContext::default()).unwrap()).await.unwrap();
                    std::mem::forget(received);
                    continue;
                }
                let result = result_for(&task, &agent, behaviour == Behaviour::Succeed);
                bus.publish(bus.result(&result, &TraceContext::default()).unwrap()).await.unwrap();
                received.delivery.ack().await.unwrap();
            }
        });
        TestAgent { log, stop, handle }
    }

    pub fn ran(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

pub fn result_for(task: &TaskMessage, agent: &AgentId, success: bool) -> ResultMessage {
    ResultMessage {
        kind: if success { ResultKind::Completed } else { ResultKind::Failed },
        project_id: task.project_id.clone(),
        bead_id: task.bead_id.clone(),
        agent_id: agent.clone(),
        result: ResultData {
            status: if success { ResultStatus::Success } else { ResultStatus::Failure },
            output: "ok".into(),
            error: if success { String::new() } else { format!("{} failed on purpose", task.task_data.title) },
            commits: Vec::new(),
            branch: String::new(),
            artifacts: Vec::new(),
            duration: 1,
            context: Default::default(),
        },
        correlation_id: task.correlation_id.clone(),
        timestamp: Utc::now(),
        metadata: ResultMetadata { dispatch_id: task.metadata.dispatch_id.clone(), attempt: task.metadata.attempt },
    }
}

/// A registry entry with agent slots for a project, heartbeated until dropped.
pub struct Advertised(JoinHandle<()>);

impl Advertised {
    pub async fn start(bus: &Bus, project: &str, slots: u32) -> Advertised {
        static N: AtomicU32 = AtomicU32::new(0);
        let record = loom_bus::AgentRecord {
            agent_id: AgentId::parse(&format!("slots-{project}-{}", N.fetch_add(1, Ordering::Relaxed))).unwrap(),
            project_id: loom_domain::ProjectId::parse(project).unwrap(),
            role: String::new(),
            instance: "test".into(),
            status: loom_domain::AgentStatus::Idle,
            current_bead: None,
            capacity: slots,
            last_heartbeat: Utc::now(),
        };
        bus.register_agent(&record).await.unwrap();
        let bus = bus.clone();
        Advertised(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ =
                    bus.heartbeat_agent(&loom_bus::AgentRecord { last_heartbeat: Utc::now(), ..record.clone() }).await;
            }
        }))
    }
}

impl Drop for Advertised {
    fn drop(&mut self) {
        self.0.abort();
    }
}
