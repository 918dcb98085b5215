//! The database service: `loom.db.v1.Database` over any [`Store`], with `grpc.health.v1` and
//! reflection, optional TLS / mTLS and bearer tokens, served on a listener the caller bound until a
//! shutdown token fires (in-flight calls finish first). A listener that is not on loopback must
//! have TLS (unless waived for a service mesh) and client authentication (mTLS or a token).

mod service;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use loom_proto::v1::database_server::DatabaseServer;
use loom_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Error;
use crate::auth::{CheckToken, Token};
pub use service::DatabaseService;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Serve TLS (and require client certificates when it names a client CA).
    pub tls: Option<ServerTls>,
    /// Largest request or response message, in bytes (a batch of beads can be large).
    pub max_message_bytes: usize,
    /// How often the store is probed for the health service (`NOT_SERVING` while it is down).
    pub health_interval: Duration,
    /// Set: every `loom.db.v1` call needs `authorization: Bearer <token>`.
    pub token: Option<Token>,
    /// Serve plaintext on a non-loopback address (a service mesh such as Linkerd encrypts the
    /// traffic). Client authentication is still required there.
    pub insecure_no_tls: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tls: None,
            max_message_bytes: 64 * 1024 * 1024,
            health_interval: Duration::from_secs(5),
            token: None,
            insecure_no_tls: false,
        }
    }
}

/// The server's certificate and key (PEM), and the CA that client certificates must chain to for
/// mutual TLS.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Set: clients must present a certificate signed by this CA (mTLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("client_ca_pem", &self.client_ca_pem.as_ref().map(|c| format!("{} bytes", c.len())))
            .finish()
    }
}

impl ServerTls {
    /// Reads the PEM files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, Error> {
        Ok(Self {
            cert_pem: read_pem(cert, "certificate")?,
            key_pem: read_pem(key, "private key")?,
            client_ca_pem: client_ca.map(|p| read_pem(p, "client CA")).transpose()?,
        })
    }

    fn to_tonic(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}

/// Reads a PEM file, with the path in the error.
pub(crate) fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path).map_err(|e| Error::Tls(format!("cannot read {what} {}: {e}", path.display())))?;
    if !pem.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(Error::Tls(format!("{what} {} is not a PEM file", path.display())));
    }
    Ok(pem)
}

/// Serves the database service on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets in-flight calls finish and returns.
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(|e| Error::Config(format!("listener has no address: {e}")))?;
    check_exposure(addr, &config)?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DatabaseServer<DatabaseService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(loom_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let database = DatabaseServer::new(DatabaseService::new(store.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let database = InterceptedService::new(database, CheckToken(config.token.clone()));

    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.to_tonic()).map_err(|e| Error::Tls(e.to_string()))?;
    }
    let stop_probe = shutdown.child_token();
    let probe = tokio::spawn(watch_store(store, reporter.clone(), config.health_interval, stop_probe.clone()));
    let tls = match &config.tls {
        None => "off",
        Some(t) if t.client_ca_pem.is_some() => "mutual",
        Some(_) => "server",
    };
    let auth = match (&config.token, tls) {
        (Some(_), "mutual") => "token and client certificate",
        (Some(_), _) => "token",
        (None, "mutual") => "client certificate",
        (None, _) => "none",
    };
    tracing::info!(%addr, tls, auth, "database service listening");
    let stopping = shutdown.clone();
    let served = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(database)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            stopping.cancelled().await;
            reporter.set_not_serving::<DatabaseServer<DatabaseService>>().await;
            tracing::info!(%addr, "database service stopping: finishing in-flight calls");
        })
        .await;
    stop_probe.cancel();
    let _ = probe.await;
    served?;
    tracing::info!(%addr, "database service stopped");
    Ok(())
}

/// Refuses what would expose the store: a non-loopback listener without TLS (unless waived) or
/// without client authentication.
fn check_exposure(addr: std::net::SocketAddr, config: &ServerConfig) -> Result<(), Error> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if config.tls.is_none() && !config.insecure_no_tls {
        return Err(Error::Config(format!(
            "refusing to serve on {addr} without TLS: a listener outside loopback needs --tls-cert and --tls-key \
             (`loom certs dev` makes development ones), or --insecure-no-tls when a service mesh encrypts the traffic"
        )));
    }
    let mutual = config.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some());
    if !mutual && config.token.is_none() {
        return Err(Error::Config(format!(
            "refusing to serve on {addr} without client authentication: set --tls-client-ca (mutual TLS) or a \
             bearer token ([database] service_token_file or LOOM_DATABASE__SERVICE_TOKEN)"
        )));
    }
    if config.tls.is_none() {
        tracing::warn!(%addr, "INSECURE: serving the database service in plaintext outside loopback (--insecure-no-tls)");
    }
    Ok(())
}

/// Keeps the health status in step with the store: a cheap read every `interval`.
async fn watch_store(store: Arc<dyn Store>, reporter: HealthReporter, interval: Duration, stop: CancellationToken) {
    let name = <DatabaseServer<DatabaseService> as tonic::server::NamedService>::NAME;
    let mut serving = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        // Events after the largest possible seq: an index probe that returns nothing.
        let up = !matches!(store.list_events(i64::MAX, 1).await, Err(e) if e.is_transient());
        if up != serving {
            serving = up;
            let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
            tracing::warn!(serving = up, "database service health changed");
            reporter.set_service_status(name, status).await;
            reporter.set_service_status("", status).await;
        }
    }
}
