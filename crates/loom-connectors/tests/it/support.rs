//! Endpoints the tests start (healthy, slow, failing, flapping, recording webhook receivers), a
//! connectors service over a scratch PostgreSQL database, and waiting helpers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use loom_connectors::{Client, ClientConfig, Connectors, Error, Key, Keyring, ServerConfig};
use loom_store::Store;
use loom_store::testing::TestDatabase;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How an endpoint answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Ok,
    /// Answers this status.
    Status(u16),
    /// Answers 200 after this long.
    Slow(Duration),
    /// Answers these statuses in turn, then 200.
    Script(Vec<u16>),
    /// Answers 503 until this instant, then 200.
    FailUntil(std::time::Instant),
}

/// A request an endpoint received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was answered.
    pub answered: u16,
}

#[derive(Debug)]
struct EndpointState {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
}

/// A small real HTTP server: every path answers per its behaviour; `/v1/models` lists models.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    state: Arc<EndpointState>,
    stop: CancellationToken,
}

impl Endpoint {
    pub async fn start(behaviour: Behaviour) -> Endpoint {
        let state = Arc::new(EndpointState { behaviour: Mutex::new(behaviour), received: Mutex::default() });
        let app = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await }).await.unwrap()
        });
        Endpoint { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(
    State(state): State<Arc<EndpointState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let behaviour = {
        let mut b = state.behaviour.lock().unwrap();
        match &mut *b {
            // A webhook's health check does not consume a delivery's scripted answers.
            Behaviour::Script(_) | Behaviour::FailUntil(_) if method == axum::http::Method::HEAD => Behaviour::Ok,
            Behaviour::Script(codes) if !codes.is_empty() => Behaviour::Status(codes.remove(0)),
            Behaviour::Script(_) => Behaviour::Ok,
            Behaviour::FailUntil(t) if std::time::Instant::now() < *t => Behaviour::Status(503),
            Behaviour::FailUntil(_) => Behaviour::Ok,
            other => other.clone(),
        }
    };
    let answered = match behaviour {
        Behaviour::Status(code) => code,
        _ => 200,
    };
    let path = uri.path().to_owned();
    state.received.lock().unwrap().push(Received { path: path.clone(), headers, body, answered });
    match behaviour {
        Behaviour::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            ok(&path)
        }
        _ => ok(&path),
    }
}

fn ok(path: &str) -> axum::response::Response {
    if path.ends_with("/models") {
        axum::Json(serde_json::json!({ "object": "list", "data": [{ "id": "gpt-test" }, { "id": "gpt-big" }] }))
            .into_response()
    } else {
        "ok".into_response()
    }
}

/// A key of fixed bytes.
pub fn key(b: u8) -> Key {
    Key::from_bytes(&[b; 32]).unwrap()
}

/// The connectors service over a fresh scratch database, its background work running.
pub struct Fixture {
    pub db: TestDatabase,
    pub store: Arc<dyn Store>,
    pub connectors: Connectors,
    pub stop: CancellationToken,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with_lease(loom_connectors::LEASE_TTL).await
    }

    /// With the replicas' leases (health events, webhook deliveries) lasting `ttl` unrenewed.
    pub async fn start_with_lease(ttl: Duration) -> Fixture {
        let db = TestDatabase::create().await;
        let store: Arc<dyn Store> = Arc::new(db.store().await);
        let (connectors, stop) = running(store.clone(), ttl);
        Fixture { db, store, connectors, stop }
    }

    /// Another replica of the service over the same database (its own connection), running
    /// until the token is cancelled.
    pub async fn replica(&self, ttl: Duration) -> (Connectors, CancellationToken) {
        running(Arc::new(self.db.store().await), ttl)
    }

    /// The `connector.health_changed` events of `id` in the store, as `(previous, status)`.
    pub async fn changes(&self, id: &str) -> Vec<(String, String)> {
        let events = self.store.list_events(0, 1000).await.unwrap();
        events
            .into_iter()
            .filter(|e| e.kind.as_str() == "connector.health_changed" && e.entity_id == id)
            .map(|e| (e.data["previous"].as_str().unwrap().to_owned(), e.data["status"].as_str().unwrap().to_owned()))
            .collect()
    }
}

fn running(store: Arc<dyn Store>, ttl: Duration) -> (Connectors, CancellationToken) {
    let connectors = Connectors::new(store, Keyring::new(key(1), vec![])).with_lease_ttl(ttl);
    let stop = CancellationToken::new();
    let (c, s) = (connectors.clone(), stop.clone());
    tokio::spawn(async move { c.run(s).await });
    (connectors, stop)
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls `f` every 25 ms until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The gRPC service of a fixture, on a free port, with a bearer token.
pub const TOKEN: &str = "connectors-token-0123456789";

pub struct Served {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), Error>>,
}

pub async fn serve(f: &Fixture, addr: SocketAddr) -> Served {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let config = ServerConfig { token: Some(loom_db::Token::new(TOKEN).unwrap()), ..ServerConfig::default() };
    let task = tokio::spawn(loom_connectors::serve(config, listener, f.connectors.clone(), stop.clone()));
    Served { addr, stop, task }
}

pub fn client(addr: SocketAddr, token: Option<&str>) -> Client {
    let mut config = ClientConfig::new(format!("http://{addr}"));
    config.token = token.map(|t| loom_db::Token::new(t).unwrap());
    config.deadline = Duration::from_secs(5);
    Client::connect(config).unwrap()
}
