//! Starting the service in-process and clients for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use loom_db::{BreakerConfig, ClientConfig, GrpcStore, RetryPolicy, ServerConfig};
use loom_store::Store;
use loom_store::testing::TestDatabase;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running service; stops when dropped.
#[derive(Debug)]
pub struct Service {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), loom_db::Error>>>,
}

impl Service {
    /// Serves `store` on a free port of 127.0.0.1.
    pub async fn start(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), store, config).await
    }

    /// Serves `store` on `addr` (a restart on the port it had).
    pub async fn start_on(addr: SocketAddr, store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(loom_db::serve(config, listener, store, shutdown.clone()));
        Self { addr, shutdown, task: Some(task) }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight calls finish, and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the service stops within 10 s")
            .expect("serve task")
            .expect("serve returns Ok");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Keeps a test's service and database alive; dropping it stops the one and drops the other.
#[derive(Debug)]
pub struct Guard {
    pub service: Service,
    pub db: TestDatabase,
}

/// A fresh database, the service over it, and the PostgreSQL store it serves.
pub async fn service() -> (Guard, Arc<dyn Store>) {
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let service = Service::start(store.clone(), ServerConfig::default()).await;
    (Guard { service, db }, store)
}

/// A client with short timings, so failure tests run in seconds.
pub fn fast_client(url: &str) -> GrpcStore {
    let mut config = ClientConfig::new(url);
    config.deadline = Duration::from_secs(3);
    config.connect_timeout = Duration::from_millis(500);
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    };
    config.breaker = BreakerConfig { failure_threshold: 3, cool_down: Duration::from_millis(500) };
    GrpcStore::connect(config).expect("client")
}

/// A TCP proxy in front of PostgreSQL that can go down and come back on the same port: to the
/// service, exactly what a PostgreSQL restart looks like (open connections reset, new ones
/// refused, then accepted again) without touching the machine's shared server.
#[derive(Debug)]
pub struct PgProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    running: CancellationToken,
}

impl PgProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let running = CancellationToken::new();
        tokio::spawn(Self::accept(listener, target, running.clone()));
        Self { addr, target, running }
    }

    /// Resets every connection and refuses new ones.
    pub fn down(&self) {
        self.running.cancel();
    }

    /// Accepts connections again, on the same port.
    pub async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind proxy");
        self.running = CancellationToken::new();
        tokio::spawn(Self::accept(listener, self.target, self.running.clone()));
    }

    async fn accept(listener: TcpListener, target: SocketAddr, running: CancellationToken) {
        loop {
            let (mut inbound, _) = tokio::select! {
                () = running.cancelled() => return,
                accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
            };
            let running = running.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                tokio::select! {
                    () = running.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.running.cancel();
    }
}
