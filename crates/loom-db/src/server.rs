//! The database service: `loom.db.v1.Database` over any [`Store`], with `grpc.health.v1` and
//! reflection, optional TLS / mTLS (reloaded when its files change, `tls.rs`) and bearer tokens,
//! served on a listener the caller bound until a shutdown token fires (in-flight calls finish
//! first). A listener that is not on loopback must have TLS (unless waived for a service mesh)
//! and client authentication (mTLS or a token). Every call is counted and timed per method
//! (`metrics.rs`); the store probe also drives an optional readiness check for `/readyz`.

pub(crate) mod metrics;
mod service;
pub(crate) mod tls;

use std::sync::Arc;
use std::time::Duration;

use loom_proto::v1::database_server::DatabaseServer;
use loom_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Error;
use crate::auth::{CheckToken, Token};
pub use service::DatabaseService;
pub use tls::ServerTls;
pub(crate) use tls::read_pem;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Serve TLS (and require client certificates when it names a client CA).
    pub tls: Option<ServerTls>,
    /// How often TLS files ([`ServerTls::from_files`]) are checked for changes; SIGHUP checks
    /// them at once.
    pub tls_reload_interval: Duration,
    /// Largest request or response message, in bytes (a batch of beads can be large).
    pub max_message_bytes: usize,
    /// How often the store is probed for the health service (`NOT_SERVING` while it is down).
    pub health_interval: Duration,
    /// Set: every `loom.db.v1` call needs `authorization: Bearer <token>`.
    pub token: Option<Token>,
    /// Serve plaintext on a non-loopback address (a service mesh such as Linkerd encrypts the
    /// traffic). Client authentication is still required there.
    pub insecure_no_tls: bool,
    /// Kept passing while the store answers the health probe (and failing once the service
    /// stops): the `/readyz` of [`loom_telemetry::serve_probes`].
    pub ready: Option<loom_telemetry::Check>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tls: None,
            tls_reload_interval: Duration::from_secs(5),
            max_message_bytes: 64 * 1024 * 1024,
            health_interval: Duration::from_secs(5),
            token: None,
            insecure_no_tls: false,
            ready: None,
        }
    }
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
    check_exposure(
        addr,
        config.tls.as_ref(),
        config.token.is_some(),
        config.insecure_no_tls,
        "database",
        "[database] service_token_file or LOOM_DATABASE__SERVICE_TOKEN",
    )?;
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

    // Built before anything is served, so bad TLS material fails the start, naming the file.
    let current = config.tls.as_ref().map(ServerTls::server_config).transpose()?.map(tls::Current::new);
    let stop_probe = shutdown.child_token();
    if let Some(ready) = &config.ready {
        ready.set(true);
    }
    let probe = tokio::spawn(watch_store(
        store,
        reporter.clone(),
        config.ready.clone(),
        config.health_interval,
        stop_probe.clone(),
    ));
    let reload = match (&config.tls, &current) {
        (Some(tls), Some(current)) if tls.is_reloadable() => {
            Some(tls::watch(tls.clone(), current.clone(), config.tls_reload_interval, stop_probe.clone()))
        }
        _ => None,
    };
    let (tls, auth) = security(config.tls.as_ref(), config.token.is_some());
    tracing::info!(%addr, tls, auth, reload = reload.is_some(), "database service listening");
    let stopping = shutdown.clone();
    let ready = config.ready.clone();
    let stopped = async move {
        stopping.cancelled().await;
        if let Some(ready) = ready {
            ready.set(false);
        }
        reporter.set_not_serving::<DatabaseServer<DatabaseService>>().await;
        tracing::info!(%addr, "database service stopping: finishing in-flight calls");
    };
    let router = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(metrics::GrpcMetrics)
        .layer(loom_telemetry::propagate::TraceServerLayer)
        .add_service(health)
        .add_service(reflection)
        .add_service(database);
    let served = match current {
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
        Some(current) => router.serve_with_incoming_shutdown(tls::incoming(listener, current), stopped).await,
    };
    stop_probe.cancel();
    let _ = probe.await;
    if let Some(reload) = reload {
        let _ = reload.await;
    }
    served?;
    tracing::info!(%addr, "database service stopped");
    Ok(())
}

/// How the service is protected, for its start-up log line: (TLS, client authentication).
pub(crate) fn security(tls: Option<&ServerTls>, token: bool) -> (&'static str, &'static str) {
    let tls = match tls {
        None => "off",
        Some(t) if t.is_mutual() => "mutual",
        Some(_) => "server",
    };
    let auth = match (token, tls) {
        (true, "mutual") => "token and client certificate",
        (true, _) => "token",
        (false, "mutual") => "client certificate",
        (false, _) => "none",
    };
    (tls, auth)
}

/// Refuses what would expose a service: a non-loopback listener without TLS (unless waived) or
/// without client authentication (mutual TLS or a token). `service` names it in the errors
/// ("database"), `token_hint` says where its token is configured.
pub(crate) fn check_exposure(
    addr: std::net::SocketAddr,
    tls: Option<&ServerTls>,
    token: bool,
    insecure_no_tls: bool,
    service: &str,
    token_hint: &str,
) -> Result<(), Error> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if tls.is_none() && !insecure_no_tls {
        return Err(Error::Config(format!(
            "refusing to serve on {addr} without TLS: a listener outside loopback needs --tls-cert and --tls-key \
             (`loom certs dev` makes development ones), or --insecure-no-tls when a service mesh encrypts the traffic"
        )));
    }
    let mutual = tls.is_some_and(ServerTls::is_mutual);
    if !mutual && !token {
        return Err(Error::Config(format!(
            "refusing to serve on {addr} without client authentication: set --tls-client-ca (mutual TLS) or a \
             bearer token ({token_hint})"
        )));
    }
    if tls.is_none() {
        tracing::warn!(%addr, "INSECURE: serving the {service} service in plaintext outside loopback (--insecure-no-tls)");
    }
    Ok(())
}

/// Keeps the health status in step with the store: a cheap read every `interval`.
async fn watch_store(
    store: Arc<dyn Store>,
    reporter: HealthReporter,
    ready: Option<loom_telemetry::Check>,
    interval: Duration,
    stop: CancellationToken,
) {
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
            if let Some(ready) = &ready {
                ready.set(up);
            }
            let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
            tracing::warn!(serving = up, "database service health changed");
            reporter.set_service_status(name, status).await;
            reporter.set_service_status("", status).await;
        }
    }
}
