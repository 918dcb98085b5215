//! A whole system per test: the control plane in-process (API on a port of its own, an admin
//! key), PostgreSQL (a scratch database on the shared server, or a cluster of the test's own that
//! it may stop), NATS (a namespace on the shared server, or a nats-server of the test's own that
//! it may restart), real agents behind the API fence, and a side-effect log that the beads'
//! commands append `{bead} {dispatch}` to — the history the tests check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loom_agent::{AgentConfig, ApiFence};
use loom_bus::{Bus, BusConfig};
use loom_domain::{AgentId, ProjectId};
use loom_faults::{NatsServer, PgCluster};
use loom_store::Store;
use loom_store::scratch::ScratchDatabase;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{Agent, Repo, unique_namespace};

/// Which servers the test gets for itself (to stop or restart them).
#[derive(Clone, Copy, Debug, Default)]
pub struct Own {
    pub postgres: bool,
    pub nats: bool,
}

type ControlPlaneTask = JoinHandle<Result<(), loom_control_plane::Error>>;

pub struct System {
    pub repo: Repo,
    pub store: Arc<dyn Store>,
    pub bus: Bus,
    pub api: loom_client::Client,
    pub key: String,
    pub log: PathBuf,
    pub project: ProjectId,
    cp: Option<(CancellationToken, ControlPlaneTask)>,
    cp_addr: SocketAddr,
    pub cp_config: loom_control_plane::Config,
    http: reqwest::Client,
    // Dropped in this order: the database before the cluster it lives on.
    _db: ScratchDatabase,
    pub pg: Option<PgCluster>,
    pub nats: Option<NatsServer>,
}

/// Control plane timings short enough for tests.
pub fn fast_control_plane() -> loom_control_plane::Config {
    loom_control_plane::Config {
        sweep_interval: Duration::from_millis(100),
        retry_backoff: Duration::from_millis(100),
        leader_ttl: Duration::from_secs(1),
        ..loom_control_plane::Config::default()
    }
}

impl System {
    pub async fn start(own: Own, cp_config: loom_control_plane::Config) -> System {
        let pg = if own.postgres { Some(PgCluster::start().await.expect("own PostgreSQL cluster")) } else { None };
        let admin = pg.as_ref().map_or_else(loom_store::testing::admin_url, PgCluster::url);
        let db = ScratchDatabase::create_on(&admin, "loom_test").await.expect("scratch database");
        let store: Arc<dyn Store> = Arc::new(db.store().await);
        let nats = if own.nats { Some(NatsServer::start().await.expect("own nats-server")) } else { None };
        let bus = Bus::connect(bus_config(nats.as_ref())).await.expect("NATS");
        bus.provision().await.unwrap();
        let key = loom_control_plane::bootstrap_admin_key(&*store).await.unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cp_addr = listener.local_addr().unwrap();
        let url = format!("http://{cp_addr}");
        let repo = Repo::new();
        let log = repo.shared().join("side-effects.log");
        let mut system = System {
            api: loom_client::Client::new(&url, Some(key.clone())),
            repo,
            store,
            bus,
            key,
            log,
            project: ProjectId::parse("deliver").unwrap(),
            cp: None,
            cp_addr,
            cp_config,
            http: reqwest::Client::new(),
            _db: db,
            pg,
            nats,
        };
        system.run_control_plane(listener);
        system.post("/api/v1/projects", json!({ "id": "deliver", "git_repo": system.repo.remote })).await;
        system
    }

    fn run_control_plane(&mut self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        let task = loom_control_plane::run(
            self.cp_config.clone(),
            listener,
            self.store.clone(),
            self.bus.clone(),
            stop.clone(),
        );
        self.cp = Some((stop, tokio::spawn(task)));
    }

    /// Kills the control plane without a graceful shutdown: its loops are told to stop and its
    /// task is aborted at once, so nothing it would do on the way out (release the dispatcher
    /// lease, finish a batch) happens.
    pub async fn kill_control_plane(&mut self) {
        if let Some((stop, task)) = self.cp.take() {
            stop.cancel();
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts the control plane again on the same address.
    pub async fn restart_control_plane(&mut self) {
        self.kill_control_plane().await;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.cp_addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.run_control_plane(listener);
    }

    /// An agent of the project with `slots`, fenced through the API, named `name`.
    pub fn agent_config(&self, name: &str, slots: usize) -> AgentConfig {
        let mut c = self.repo.config(self.project.as_str());
        c.agent_id = Some(AgentId::parse(name).unwrap());
        // One host per agent name: its journal survives its restarts, and no other agent's.
        c.work_root = self.repo.dir.path().join(format!("work-{name}"));
        c.concurrency = slots;
        c.fence = Some(Arc::new(ApiFence::new(self.api.clone(), self.project.clone())));
        c
    }

    pub fn agent(&self, name: &str, slots: usize) -> Agent {
        Agent::start(self.agent_config(name, slots), &self.bus)
    }

    /// Creates a shell bead whose command logs `{bead} {dispatch}` to the side-effect log, then
    /// runs `then`.
    pub async fn bead(&self, title: &str, priority: u8, then: &str) -> String {
        let command = format!("echo \"$LOOM_BEAD_ID $LOOM_DISPATCH_ID\" >> {}; {then}", self.log.display());
        let body = json!({
            "project_id": self.project.as_str(),
            "title": title,
            "priority": priority,
            "context": { "command": command, "executor": "shell" },
        });
        self.post("/api/v1/beads", body).await["id"].as_str().unwrap().to_owned()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (reqwest::StatusCode, Value) {
        let mut req = self.http.request(method, format!("http://{}{path}", self.cp_addr)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Every bead of the project, read from the store (works while the API is down).
    pub async fn beads(&self) -> Vec<loom_domain::Bead> {
        let filter = loom_store::BeadFilter { project: Some(self.project.clone()), ..Default::default() };
        let page = self.store.list_beads(&filter, &loom_store::PageRequest::first(1000)).await.unwrap();
        page.beads
    }

    /// Waits until every bead of the project is closed (or `timeout` passes); returns them.
    pub async fn all_closed(&self, timeout: Duration) -> Vec<loom_domain::Bead> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let beads = match tokio::time::timeout(Duration::from_secs(5), self.try_beads()).await {
                Ok(Some(b)) => b,
                _ => Vec::new(),
            };
            let done = !beads.is_empty() && beads.iter().all(|b| b.status == loom_domain::Status::Closed);
            if done || tokio::time::Instant::now() > deadline {
                return beads;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn try_beads(&self) -> Option<Vec<loom_domain::Bead>> {
        let filter = loom_store::BeadFilter { project: Some(self.project.clone()), ..Default::default() };
        self.store.list_beads(&filter, &loom_store::PageRequest::first(1000)).await.ok().map(|p| p.beads)
    }

    /// The side-effect log: bead → the dispatches its command ran under, in order.
    pub fn side_effects(&self) -> BTreeMap<String, Vec<String>> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some((bead, dispatch)) = line.split_once(' ') {
                runs.entry(bead.to_owned()).or_default().push(dispatch.to_owned());
            }
        }
        runs
    }

    /// The beads in the order their commands first ran.
    pub fn run_order(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut order: Vec<String> = Vec::new();
        for bead in text.lines().filter_map(|l| l.split_once(' ').map(|(b, _)| b.to_owned())) {
            if !order.contains(&bead) {
                order.push(bead);
            }
        }
        order
    }

    /// Every `bead.status_changed` event of a bead into `blocked`.
    pub async fn blocked_events(&self) -> Vec<loom_domain::Event> {
        let events = self.store.list_events(0, 1000).await.unwrap();
        events
            .into_iter()
            .filter(|e| e.kind == loom_domain::EventKind::BeadStatusChanged && e.data["to"] == "blocked")
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.cp.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        let _ = self.bus.destroy().await;
        self.bus.shutdown();
    }
}

fn bus_config(own: Option<&NatsServer>) -> BusConfig {
    BusConfig {
        url: own.map_or_else(
            || std::env::var("LOOM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
            NatsServer::url,
        ),
        namespace: Some(unique_namespace()),
        ack_wait: Duration::from_secs(3),
        backoff: vec![Duration::from_millis(200)],
        progress_interval: Duration::from_millis(300),
        agent_ttl: Duration::from_secs(3),
        ..BusConfig::default()
    }
}
