//! The database service's `/metrics`, `/healthz` and `/readyz` after a known workload. A test
//! binary of its own: the Prometheus recorder is process-wide, so no other test's calls count.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use loom_db::{ClientConfig, GrpcStore, ServerConfig};
use loom_domain::{BeadId, NewProject, ProjectId};
use loom_store::testing::TestDatabase;
use loom_store::{PgOptions, PgStore, Store};
use loom_telemetry::Readiness;
use loom_telemetry::scrape::sample;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `GET path` on `addr`: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    loom_telemetry::scrape::get(addr, path).await.expect("the metrics listener answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_known_workload_counts_each_method_and_code() {
    let db = TestDatabase::create().await;
    db.store().await; // migrates
    // The store goes through a proxy that can go down: readiness must follow it.
    let direct = PgConnectOptions::from_str(db.url()).unwrap();
    let target = format!("{}:{}", direct.get_host(), direct.get_port()).parse().unwrap();
    let proxy = Proxy::start(target).await;
    let via_proxy = direct.host("127.0.0.1").port(proxy.addr.port()).to_url_lossy().to_string();
    let options = PgOptions { max_connections: 2, acquire_timeout: Duration::from_millis(500), ..PgOptions::default() };
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&via_proxy, &options).await.unwrap());

    let readiness = Readiness::new();
    let ready = readiness.check("store", false);
    let shutdown = CancellationToken::new();
    let probes = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probes_addr = probes.local_addr().unwrap();
    tokio::spawn(loom_telemetry::serve_probes(probes, readiness, shutdown.clone()));
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let config =
        ServerConfig { health_interval: Duration::from_millis(100), ready: Some(ready), ..ServerConfig::default() };
    let served = tokio::spawn(loom_db::serve(config, grpc, store, shutdown.clone()));

    let client = GrpcStore::connect(ClientConfig::new(&url)).unwrap();
    for n in 0..3 {
        let id = ProjectId::parse(&format!("metrics-{n}")).unwrap();
        client.create_project(NewProject::new(id, "/tmp/repo")).await.unwrap();
    }
    for n in ["zz-1", "zz-2"] {
        let err = client.get_bead(&BeadId::parse(n).unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    let (status, text) = get(probes_addr, "/metrics").await;
    assert_eq!(status, 200);
    let db = ("service", "loom.db.v1.Database");
    let count = |method: &str, code: &str| {
        sample(&text, "loom_grpc_server_requests_total", &[db, ("method", method), ("code", code)])
    };
    assert_eq!(count("CreateProject", "OK"), Some(3.0), "{text}");
    assert_eq!(count("GetBead", "NOT_FOUND"), Some(2.0), "{text}");
    assert_eq!(count("GetBead", "OK"), None, "no GetBead succeeded: {text}");
    let histogram = "loom_grpc_server_request_duration_seconds_count";
    assert_eq!(sample(&text, histogram, &[db, ("method", "CreateProject")]), Some(3.0), "{text}");
    assert_eq!(sample(&text, histogram, &[db, ("method", "GetBead")]), Some(2.0), "{text}");
    assert!(text.contains("# TYPE loom_grpc_server_request_duration_seconds histogram"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("loom_grpc_server")) {
        assert!(!line.contains("metrics-") && !line.contains("zz-"), "a raw id in a label: {line}");
    }

    assert_eq!(get(probes_addr, "/healthz").await.0, 200);
    assert_eq!(get(probes_addr, "/readyz").await, (200, "ready\n".to_owned()));

    // PostgreSQL out of reach: not ready (naming the check), but still live; then ready again.
    proxy.down();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(probes_addr, "/readyz").await.0 != 503 {
        assert!(tokio::time::Instant::now() < deadline, "still ready 10 s after the store went away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(probes_addr, "/readyz").await, (503, "not ready: store\n".to_owned()));
    assert_eq!(get(probes_addr, "/healthz").await.0, 200);
    let _back = proxy.up().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(probes_addr, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready 10 s after the store came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    shutdown.cancel();
    served.await.unwrap().unwrap();
}

/// A TCP proxy to PostgreSQL that can refuse connections and reset open ones, then come back on
/// the same port (what a PostgreSQL restart looks like to the service).
struct Proxy {
    addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    running: CancellationToken,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let running = CancellationToken::new();
        tokio::spawn(Self::accept(listener, target, running.clone()));
        Self { addr, target, running }
    }

    fn down(&self) {
        self.running.cancel();
    }

    async fn up(&self) -> Self {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let running = CancellationToken::new();
        tokio::spawn(Self::accept(listener, self.target, running.clone()));
        Self { addr: self.addr, target: self.target, running }
    }

    async fn accept(listener: TcpListener, target: std::net::SocketAddr, running: CancellationToken) {
        loop {
            let conn = tokio::select! {
                () = running.cancelled() => return,
                c = listener.accept() => match c { Ok((c, _)) => c, Err(_) => continue },
            };
            let running = running.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else { return };
                let mut conn = conn;
                tokio::select! {
                    () = running.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream) => {}
                }
            });
        }
    }
}
