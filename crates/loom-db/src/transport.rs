//! The parts of a Loom gRPC service that are not about the database, for the other services
//! (`loom-connectors`) to be served and called exactly as the database service is: the exposure
//! check, TLS termination with reload, bearer tokens, the RED metrics layer and client TLS.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub use crate::auth::{CheckToken, SendToken, Token};
pub use crate::client::ClientTls;
pub use crate::server::ServerTls;
pub use crate::server::metrics::GrpcMetrics;
use crate::{Error, server};

/// Refuses a listener outside loopback without TLS (unless `insecure_no_tls`) or without client
/// authentication (mutual TLS or a token). `service` names the service in the log, `token_hint`
/// says where its token is configured.
pub fn check_exposure(
    addr: SocketAddr,
    tls: Option<&ServerTls>,
    token: bool,
    insecure_no_tls: bool,
    service: &str,
    token_hint: &str,
) -> Result<(), Error> {
    server::check_exposure(addr, tls, token, insecure_no_tls, service, token_hint)
}

/// How a service is protected, for its start-up log line: (TLS, client authentication).
pub fn security(tls: Option<&ServerTls>, token: bool) -> (&'static str, &'static str) {
    server::security(tls, token)
}

/// A TLS listener: the handshaken connections for tonic and, when the material comes from files,
/// the watcher that reloads it (until `stop`).
pub type TlsIncoming = ReceiverStream<io::Result<TlsStream<TcpStream>>>;

/// Terminates TLS on `listener` with `tls` (checked now, so bad material fails the start naming
/// the file) and watches its files every `reload_interval` and on SIGHUP.
pub fn tls_incoming(
    listener: TcpListener,
    tls: &ServerTls,
    reload_interval: Duration,
    stop: CancellationToken,
) -> Result<(TlsIncoming, Option<JoinHandle<()>>), Error> {
    let current = server::tls::Current::new(tls.server_config()?);
    let reload = tls.is_reloadable().then(|| server::tls::watch(tls.clone(), current.clone(), reload_interval, stop));
    Ok((server::tls::incoming(listener, current), reload))
}

/// The tonic client TLS configuration of `tls`.
pub fn client_tls(tls: &ClientTls) -> tonic::transport::ClientTlsConfig {
    tls.to_tonic()
}
