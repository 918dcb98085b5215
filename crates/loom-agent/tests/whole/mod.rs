//! The whole system in one process, as the observability tests need it: the database service over
//! gRPC in front of a scratch PostgreSQL database, the control plane using it through
//! `GrpcStore`, NATS (a namespace of the shared server) and a real agent of project `project`
//! fenced through the API, online before `start` returns.

use std::sync::Arc;
use std::time::Duration;

use loom_agent::ApiFence;
use loom_bus::Bus;
use loom_domain::{AgentId, ProjectId};
use loom_store::Store;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{Agent, Repo, nats, nats_cleanup};

pub struct Whole {
    pub url: String,
    pub cp_addr: std::net::SocketAddr,
    pub key: String,
    pub http: reqwest::Client,
    pub repo: Repo,
    pub bus: Bus,
    /// The control plane's store: the database service, through `GrpcStore`.
    pub store: Arc<dyn Store>,
    pub project: ProjectId,
    agent: Option<Agent>,
    stop_cp: CancellationToken,
    cp: JoinHandle<Result<(), loom_control_plane::Error>>,
    stop_db: CancellationToken,
    db: JoinHandle<Result<(), loom_db::Error>>,
    _scratch: loom_store::scratch::ScratchDatabase,
}

impl Whole {
    pub async fn start(project: &str, executor: loom_agent::ExecutorKind) -> Whole {
        let scratch = loom_store::scratch::ScratchDatabase::create_on(&loom_store::testing::admin_url(), "loom_whole")
            .await
            .unwrap();
        let pg: Arc<dyn Store> = Arc::new(scratch.store().await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let db_url = format!("http://{}", listener.local_addr().unwrap());
        let stop_db = CancellationToken::new();
        let db = tokio::spawn(loom_db::serve(loom_db::ServerConfig::default(), listener, pg, stop_db.clone()));
        let store: Arc<dyn Store> = Arc::new(loom_db::GrpcStore::connect(loom_db::ClientConfig::new(&db_url)).unwrap());

        let bus = nats().await;
        let key = loom_control_plane::bootstrap_admin_key(&*store).await.unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cp_addr = listener.local_addr().unwrap();
        let url = format!("http://{cp_addr}");
        let stop_cp = CancellationToken::new();
        let cp_config = loom_control_plane::Config {
            sweep_interval: Duration::from_millis(100),
            leader_ttl: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(100),
            ..loom_control_plane::Config::default()
        };
        let cp =
            tokio::spawn(loom_control_plane::run(cp_config, listener, store.clone(), bus.clone(), stop_cp.clone()));
        let repo = Repo::new();
        let mut whole = Whole {
            url,
            cp_addr,
            key,
            http: reqwest::Client::new(),
            repo,
            bus,
            store,
            project: ProjectId::parse(project).unwrap(),
            agent: None,
            stop_cp,
            cp,
            stop_db,
            db,
            _scratch: scratch,
        };
        let (status, body) =
            whole.post("/api/v1/projects", json!({ "id": project, "git_repo": whole.repo.remote })).await;
        assert!(status.is_success(), "{body}");

        let api = loom_client::Client::new(&whole.url, Some(whole.key.clone()));
        let mut config = whole.repo.config(project);
        config.agent_id = Some(AgentId::parse(&format!("{project}-agent")).unwrap());
        config.fence = Some(Arc::new(ApiFence::new(api, whole.project.clone())));
        config.default_executor = executor;
        config.concurrency = 2;
        let agent = Agent::start(config, &whole.bus);
        // Dispatch follows advertised slots: wait until the agent is online.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let agents = whole.get("/api/v1/agents").await;
            if agents.to_string().contains(&format!("{project}-agent")) {
                break;
            }
            if agent.handle.is_finished() {
                panic!("the agent stopped: {:?}", agent.handle.await);
            }
            assert!(tokio::time::Instant::now() < deadline, "the agent never came online: {agents}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        whole.agent = Some(agent);
        whole
    }

    pub async fn post(&self, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let resp =
            self.http.post(format!("{}{path}", self.url)).bearer_auth(&self.key).json(&body).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.key).send().await.unwrap();
        resp.json().await.unwrap_or(Value::Null)
    }

    /// Creates a bead of the project with `context`; returns its id.
    pub async fn bead(&self, title: &str, context: Value) -> String {
        let body = json!({ "project_id": self.project.as_str(), "title": title, "context": context });
        let (status, bead) = self.post("/api/v1/beads", body).await;
        assert_eq!(status, 201, "{bead}");
        bead["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the bead is closed.
    pub async fn closed(&self, bead: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.get(&format!("/api/v1/beads/{bead}")).await;
            if got["status"] == "closed" {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the bead was not closed: {got}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        self.stop_cp.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.cp).await;
        self.stop_db.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.db).await;
        nats_cleanup(self.bus).await;
    }
}
