//! TLS for the database service, terminated here rather than by tonic so that the certificate,
//! key and client CA can change while it serves: every accepted connection handshakes with the
//! rustls configuration current at that moment, and a watcher replaces that configuration when
//! the files change (polled) or on SIGHUP. Established connections keep the session they have; a
//! reload that fails keeps the old material, logs why and counts
//! `loom_db_tls_reload_failures_total`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long changed files must stay the same before they are loaded: a rotation writes the
/// certificate and the key one after the other, and loading between the two would fail.
const SETTLE: Duration = Duration::from_millis(250);

/// The server's certificate and key, and the CA that client certificates must chain to for
/// mutual TLS. Read from files ([`ServerTls::from_files`]), the service reloads them when they
/// change; given as PEM ([`ServerTls::from_pem`]), they are fixed.
#[derive(Clone)]
pub struct ServerTls {
    pem: Pem,
    files: Option<Files>,
}

#[derive(Clone, PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &format_args!("{} bytes", self.pem.cert.len()))
            .field("key_pem", &"<redacted>")
            .field("client_ca_pem", &self.pem.client_ca.as_ref().map(|c| format!("{} bytes", c.len())))
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    /// Fixed PEM material: `client_ca_pem` set, clients must present a certificate it signed.
    pub fn from_pem(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>, client_ca_pem: Option<Vec<u8>>) -> Self {
        Self { pem: Pem { cert: cert_pem.into(), key: key_pem.into(), client_ca: client_ca_pem }, files: None }
    }

    /// Reads the PEM files of `--tls-cert`, `--tls-key` and `--tls-client-ca`; the service
    /// watches them and reloads them when they change.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, Error> {
        let files = Files { cert: cert.to_owned(), key: key.to_owned(), client_ca: client_ca.map(Path::to_owned) };
        Ok(Self { pem: files.read()?, files: Some(files) })
    }

    /// Whether clients must present a certificate (mutual TLS).
    pub fn is_mutual(&self) -> bool {
        self.pem.client_ca.is_some()
    }

    /// Whether the material came from files the service can watch.
    pub(crate) fn is_reloadable(&self) -> bool {
        self.files.is_some()
    }

    /// The rustls configuration of this material: ALPN `h2`, the `ring` provider, and a client
    /// verifier for the CA when there is one. Errors name the file and what is wrong with it.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let files = self.files.as_ref();
        let cert_name = name("certificate", files.map(|f| f.cert.as_path()));
        let key_name = name("private key", files.map(|f| f.key.as_path()));
        let chain = certificates(&self.pem.cert, &cert_name)?;
        let key = PrivateKeyDer::from_pem_slice(&self.pem.key).map_err(|e| Error::Tls(format!("{key_name}: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = match &self.pem.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let ca_name = name("client CA", files.and_then(|f| f.client_ca.as_deref()));
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca, &ca_name)? {
                    roots.add(cert).map_err(|e| Error::Tls(format!("{ca_name}: {e}")))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| Error::Tls(format!("{ca_name}: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => Error::Tls(format!("{key_name} does not match {cert_name}")),
            e => Error::Tls(format!("{cert_name} with {key_name}: {e}")),
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl Files {
    fn read(&self) -> Result<Pem, Error> {
        Ok(Pem {
            cert: read_pem(&self.cert, "certificate")?,
            key: read_pem(&self.key, "private key")?,
            client_ca: self.client_ca.as_deref().map(|p| read_pem(p, "client CA")).transpose()?,
        })
    }
}

/// "certificate /etc/loom/server.pem", or just "certificate" for material given as PEM.
fn name(what: &str, path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("{what} {}", path.display()),
        None => what.to_owned(),
    }
}

fn certificates(pem: &[u8], name: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{name}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{name}: no certificate in the PEM file")));
    }
    Ok(certs)
}

/// Reads a PEM file, with the path in the error.
pub(crate) fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path).map_err(|e| Error::Tls(format!("cannot read {what} {}: {e}", path.display())))?;
    if !pem.windows(10).any(|w| w == b"-----BEGIN") {
        return Err(Error::Tls(format!("{what} {} is not a PEM file", path.display())));
    }
    Ok(pem)
}

/// The TLS configuration that new connections handshake with; a reload replaces it whole.
#[derive(Clone)]
pub(crate) struct Current(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl Current {
    pub(crate) fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    fn get(&self) -> Arc<rustls::ServerConfig> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }
}

/// The connections of `listener` after their TLS handshake, for tonic: handshakes run
/// concurrently (a slow client delays no other) and failed ones are dropped. Accepting stops, and
/// the listener closes, when tonic drops the stream (at shutdown: tonic runs its shutdown signal
/// first, so the service is reported `NOT_SERVING` before).
pub(crate) fn incoming(listener: TcpListener, current: Current) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept(listener, current, tx));
    ReceiverStream::new(rx)
}

async fn accept(listener: TcpListener, current: Current, tx: mpsc::Sender<io::Result<TlsStream<TcpStream>>>) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "database service cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(current.get());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(tls)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Watches the files of `tls` every `interval` and on SIGHUP, and puts a new configuration in
/// `current` when they changed and load; stops when `stop` fires.
pub(crate) fn watch(tls: ServerTls, current: Current, interval: Duration, stop: CancellationToken) -> JoinHandle<()> {
    // Registered now, before the service accepts anyone, so a SIGHUP from then on reloads.
    let hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS files are reloaded only when they change");
            None
        }
    };
    let reloader = Reloader { tls, current, last_failure: None };
    tokio::spawn(reloader.run(interval, hangup, stop))
}

struct Reloader {
    tls: ServerTls,
    current: Current,
    /// The files' contents (or why they could not be read) when a reload last failed, so the same
    /// failure is reported once, not at every poll.
    last_failure: Option<Result<Pem, String>>,
}

impl Reloader {
    async fn run(mut self, interval: Duration, mut hangup: Option<Signal>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let forced = tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if forced {
                tracing::info!("SIGHUP: reloading the database service's TLS files");
            }
            self.check(forced).await;
        }
    }

    /// Loads the files if they changed (or `forced`, on SIGHUP).
    async fn check(&mut self, forced: bool) {
        let mut read = self.read().await;
        if !forced {
            let unchanged =
                |read: &Result<Pem, String>, tls: &ServerTls| read.as_ref().is_ok_and(|pem| *pem == tls.pem);
            if !unchanged(&read, &self.tls) {
                for _ in 0..4 {
                    tokio::time::sleep(SETTLE).await;
                    let again = self.read().await;
                    if again == read {
                        break;
                    }
                    read = again;
                }
            }
            if unchanged(&read, &self.tls) {
                if self.last_failure.take().is_some() {
                    tracing::info!("database service TLS files are back to the material in use");
                }
                return;
            }
            if self.last_failure.as_ref() == Some(&read) {
                return;
            }
        }
        let loaded = read.clone().and_then(|pem| {
            let tls = ServerTls { pem, files: self.tls.files.clone() };
            tls.server_config().map(|config| (tls, config)).map_err(|e| e.to_string())
        });
        match loaded {
            Ok((tls, config)) => {
                self.current.set(config);
                self.tls = tls;
                self.last_failure = None;
                metrics::counter!("loom_db_tls_reloads_total").increment(1);
                let cert = self.tls.files.as_ref().map(|f| f.cert.display().to_string());
                tracing::info!(cert, "database service TLS reloaded: new connections use it");
            }
            Err(error) => {
                self.last_failure = Some(read);
                metrics::counter!("loom_db_tls_reload_failures_total").increment(1);
                tracing::error!(%error, "database service TLS reload failed: still serving the previous certificate");
            }
        }
    }

    async fn read(&self) -> Result<Pem, String> {
        let files = self.tls.files.clone().expect("only TLS read from files is watched");
        match tokio::task::spawn_blocking(move || files.read()).await {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(e) => Err(format!("reading the TLS files failed: {e}")),
        }
    }
}
