//! Certificate reload: the service watches its TLS files; once they are rewritten with another
//! CA's certificates, new connections get the new ones (and the new client CA) while a connection
//! made before keeps working; a rewrite that does not load keeps the previous material and counts
//! `loom_db_tls_reload_failures_total`; SIGHUP reloads without waiting for the poll.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loom_db::{ClientConfig, ClientTls, GrpcStore, ServerConfig, ServerTls};
use loom_domain::{NewProject, ProjectId};
use loom_store::Store;
use loom_store::testing::TestDatabase;

use crate::support::Service;
use crate::tls::{Pki, pki};

/// The service's three files in a directory of the test.
struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        Self { cert: path("server.pem"), key: path("server-key.pem"), ca: path("ca.pem"), _dir: dir }
    }

    /// Writes `pki`'s server certificate, key and CA over the files, one after the other (as a
    /// rotation by hand or by a secret mount does).
    fn write(&self, pki: &Pki) {
        std::fs::write(&self.cert, &pki.server.0).unwrap();
        std::fs::write(&self.key, &pki.server.1).unwrap();
        std::fs::write(&self.ca, &pki.ca_pem).unwrap();
    }

    fn tls(&self, mutual: bool) -> Result<ServerTls, loom_db::Error> {
        ServerTls::from_files(&self.cert, &self.key, mutual.then_some(self.ca.as_path()))
    }
}

async fn service(files: &Files, mutual: bool, interval: Duration) -> (Service, TestDatabase) {
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let config =
        ServerConfig { tls: Some(files.tls(mutual).unwrap()), tls_reload_interval: interval, ..Default::default() };
    (Service::start(store, config).await, db)
}

/// A client over one connection, trusting `trust`'s CA and presenting `identity`'s client
/// certificate.
fn client(service: &Service, trust: &Pki, identity: Option<&Pki>) -> GrpcStore {
    let mut config = ClientConfig::new(format!("https://{}", service.addr));
    config.tls =
        Some(ClientTls { ca_pem: trust.ca_pem.clone(), identity: identity.map(|p| p.client.clone()), domain: None });
    config.channels = 1;
    config.retry.max_attempts = 1;
    GrpcStore::connect(config).unwrap()
}

async fn served(store: &GrpcStore) -> bool {
    store.list_projects().await.is_ok()
}

/// Whether `grpc.health.v1` answers `SERVING` to a client of `pki`'s CA.
async fn health_serving(service: &Service, pki: &Pki) -> bool {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    use tonic_health::pb::health_check_response::ServingStatus;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    let channel = Channel::from_shared(format!("https://{}", service.addr)).unwrap().tls_config(tls).unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.connect().await.unwrap());
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    health.check(request).await.unwrap().into_inner().status == ServingStatus::Serving as i32
}

/// Waits up to 10 s for `check` to hold.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Held by the tests that run a watcher: SIGHUP reaches every watcher of the process, and a forced
/// reload of another test's broken files would count as a failure there.
static WATCHERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The value of a counter in the process's Prometheus rendering (0 before its first increment).
fn counter(name: &str) -> u64 {
    let text = loom_telemetry::prometheus().render();
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_files_serve_new_connections_and_a_broken_rotation_keeps_the_last_good_one() {
    let _watching = WATCHERS.lock().await;
    let _ = loom_telemetry::prometheus();
    let (a, b) = (pki("reload A"), pki("reload B"));
    let files = Files::new();
    files.write(&a);
    let (service, _db) = service(&files, true, Duration::from_millis(100)).await;
    let open = client(&service, &a, Some(&a));
    open.create_project(NewProject::new(ProjectId::parse("reload").unwrap(), "/tmp/repo")).await.unwrap();

    files.write(&b);
    eventually("a client of CA B is served", || async { served(&client(&service, &b, Some(&b))).await }).await;
    assert!(!served(&client(&service, &a, Some(&a))).await, "a new client trusting only CA A is refused");
    assert!(!served(&client(&service, &b, Some(&a))).await, "a client certificate from CA A is refused now");
    // `open` trusts only CA A, so a new connection could not be made: this call travels on the
    // connection made before the rotation.
    assert_eq!(open.list_projects().await.unwrap().len(), 1, "the connection opened before goes on");

    let failures = counter("loom_db_tls_reload_failures_total");
    std::fs::write(&files.key, b"not a key at all\n").unwrap();
    eventually("the failed reload is counted", || async { counter("loom_db_tls_reload_failures_total") > failures })
        .await;
    assert!(served(&client(&service, &b, Some(&b))).await, "still serving certificate B");
    assert!(!served(&client(&service, &a, Some(&a))).await);
    assert!(health_serving(&service, &b).await, "a failed reload leaves the health status alone");

    // A well-formed key of another certificate fails too (counted once, not at every poll).
    let failures = counter("loom_db_tls_reload_failures_total");
    std::fs::write(&files.key, &a.server.1).unwrap();
    eventually("the mismatched key is counted", || async { counter("loom_db_tls_reload_failures_total") > failures })
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(counter("loom_db_tls_reload_failures_total"), failures + 1, "one failure per bad rewrite");
    assert!(served(&client(&service, &b, Some(&b))).await, "still serving certificate B");
    assert_eq!(open.list_projects().await.unwrap().len(), 1);

    // Repaired: loads again.
    let reloads = counter("loom_db_tls_reloads_total");
    files.write(&a);
    eventually("certificate A is back", || async { served(&client(&service, &a, Some(&a))).await }).await;
    assert!(counter("loom_db_tls_reloads_total") > reloads);
    assert!(!served(&client(&service, &a, None)).await, "a client without a certificate is still refused");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_files_at_once() {
    let _watching = WATCHERS.lock().await;
    let (a, b) = (pki("hup A"), pki("hup B"));
    let files = Files::new();
    files.write(&a);
    let (service, _db) = service(&files, false, Duration::from_secs(3600)).await;
    // Served: `serve` is past registering its SIGHUP handler, so the signal cannot kill the tests.
    assert!(served(&client(&service, &a, None)).await);

    files.write(&b);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!served(&client(&service, &b, None)).await, "no poll within the hour: still certificate A");
    let status = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(status.success());
    eventually("SIGHUP loads certificate B", || async { served(&client(&service, &b, None)).await }).await;
    assert!(!served(&client(&service, &a, None)).await);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_the_start_and_name_the_file() {
    let (a, b) = (pki("start A"), pki("start B"));
    let files = Files::new();
    files.write(&a);
    std::fs::write(&files.key, &b.server.1).unwrap();
    let err = start_error(files.tls(true).unwrap()).await;
    assert!(err.contains(&format!("private key {} does not match certificate", files.key.display())), "{err}");

    std::fs::write(&files.key, b"garbage").unwrap();
    let err = files.tls(true).unwrap_err().to_string();
    assert!(err.contains(&format!("private key {} is not a PEM file", files.key.display())), "{err}");

    files.write(&a);
    std::fs::write(&files.ca, b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n").unwrap();
    let err = start_error(files.tls(true).unwrap()).await;
    assert!(err.contains(&format!("client CA {}", files.ca.display())), "{err}");
}

async fn start_error(tls: ServerTls) -> String {
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServerConfig { tls: Some(tls), ..Default::default() };
    let shutdown = tokio_util::sync::CancellationToken::new();
    loom_db::serve(config, listener, store, shutdown).await.unwrap_err().to_string()
}
