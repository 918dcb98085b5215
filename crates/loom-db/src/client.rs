//! [`GrpcStore`]: a `loom_store::Store` that calls the database service, so callers switch between
//! a local store and the service by configuration alone.
//!
//! Every call has a deadline. Failures of the service or the path to it (`UNAVAILABLE`, a refused
//! or reset connection) are retried with exponential backoff and full jitter — always for calls
//! whose repeat has no further effect and the same answer (reads, `UpdateProject`,
//! `AddDependency`, `ExtendLease`, `RecordResult` — keyed by dispatch id —, lease sweeps,
//! `BlockDispatch`, outbox marks, agent upserts), and for the others (`ClaimReady`, `CreateBeads`,
//! `CreateProject`, `AppendEvent`, `DeleteProject`, bead updates, closes and reopens,
//! `RemoveDependency`) only when the first try provably had no effect: the connection was never
//! made, or the service answered that the store failed (a failed store operation changes
//! nothing). Repeated failures open a circuit breaker that fails
//! fast until a probe after the cool-down succeeds. Calls are spread round-robin over several
//! HTTP/2 connections.

mod breaker;
mod calls;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use loom_proto::v1::database_client::DatabaseClient;
use rand::Rng;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Response, Status};

use breaker::Breaker;
pub use breaker::BreakerConfig;

use crate::Error;
use crate::auth::{SendToken, Token};
use crate::status::{from_status, is_transient, never_sent, store_unavailable};

/// How a [`GrpcStore`] reaches the service.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port`, or `https://host:port` with [`ClientConfig::tls`].
    pub endpoint: String,
    /// HTTP/2 connections to spread calls over.
    pub channels: usize,
    /// The deadline of each call, retries included; also sent to the server as `grpc-timeout`.
    pub deadline: Duration,
    /// How long to wait for a connection to be made.
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    pub tls: Option<ClientTls>,
    /// The bearer token the service asks for, sent with every call.
    pub token: Option<Token>,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
}

impl ClientConfig {
    /// Defaults for the service at `endpoint`: 4 connections, 5 s deadline, 4 attempts, a breaker
    /// that opens after 5 failed calls for 2 s.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            channels: 4,
            deadline: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            tls: None,
            token: None,
            max_message_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Retries of transient failures: up to `max_attempts` in all, waiting a random time up to
/// `initial_backoff · 2^n` (capped at `max_backoff`) between them.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 4, initial_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(1) }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (full jitter).
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.initial_backoff.saturating_mul(1 << attempt.min(16)).min(self.max_backoff);
        cap.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// The CA that signs the server's certificate, and the client's own certificate for mutual TLS.
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    /// Certificate and key (PEM) presented to a server that requires client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry; default: the endpoint's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("identity", &self.identity.as_ref().map(|_| "<certificate and redacted key>"))
            .field("domain", &self.domain)
            .finish()
    }
}

impl ClientTls {
    /// Reads the CA and, for mutual TLS, the client certificate and key.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, Error> {
        use crate::server::read_pem;
        Ok(Self {
            ca_pem: read_pem(ca, "CA certificate")?,
            identity: identity
                .map(|(c, k)| Ok::<_, Error>((read_pem(c, "client certificate")?, read_pem(k, "client key")?)))
                .transpose()?,
            domain: None,
        })
    }

    pub(crate) fn to_tonic(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        match &self.domain {
            Some(domain) => config.domain_name(domain.clone()),
            None => config,
        }
    }
}

/// A generated client that sends the bearer token and the caller's trace context.
type Client = DatabaseClient<InterceptedService<loom_telemetry::propagate::TraceClient<Channel>, SendToken>>;

/// Whether a call may be sent again after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Repeating it has no further effect (reads; writes keyed by id, version or dispatch).
    Always,
    /// Only if the first try provably had no effect.
    IfNoEffect,
}

/// The gRPC implementation of `loom_store::Store`. Cheap to clone; clones share connections and
/// the circuit breaker.
#[derive(Clone, Debug)]
pub struct GrpcStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: String,
    clients: Vec<Client>,
    next: AtomicUsize,
    deadline: Duration,
    retry: RetryPolicy,
    breaker: Breaker,
}

impl GrpcStore {
    /// Prepares the connections; nothing is dialled until the first call, so a client may start
    /// before the service. Fails only on a bad endpoint or TLS configuration.
    pub fn connect(config: ClientConfig) -> Result<Self, Error> {
        if config.channels == 0 {
            return Err(Error::Config("channels must be at least 1".into()));
        }
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| Error::Config(format!("bad endpoint {:?}: {e}", config.endpoint)))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        match (&config.tls, config.endpoint.starts_with("https://")) {
            (Some(tls), true) => {
                endpoint = endpoint.tls_config(tls.to_tonic()).map_err(|e| Error::Tls(e.to_string()))?
            }
            (None, false) => {}
            (Some(_), false) => return Err(Error::Config("TLS is configured: the endpoint must be https://".into())),
            (None, true) => return Err(Error::Config("an https:// endpoint needs a TLS configuration (CA)".into())),
        }
        let clients = (0..config.channels)
            .map(|_| {
                let channel =
                    tower::Layer::layer(&loom_telemetry::propagate::TraceClientLayer, endpoint.connect_lazy());
                DatabaseClient::with_interceptor(channel, SendToken(config.token.clone()))
                    .max_decoding_message_size(config.max_message_bytes)
                    .max_encoding_message_size(config.max_message_bytes)
            })
            .collect();
        let breaker = Breaker::new(config.breaker, config.deadline);
        // Present from the start, so an alert on it has a series to watch (the recorder first, or
        // the value would go nowhere).
        let _ = loom_telemetry::prometheus();
        metrics::gauge!("loom_db_client_breaker_open").set(0.0);
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: config.endpoint,
                clients,
                next: AtomicUsize::new(0),
                deadline: config.deadline,
                retry: config.retry,
                breaker,
            }),
        })
    }

    /// The service's address.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// True while the circuit breaker fails calls fast.
    pub fn circuit_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    fn client(&self) -> Client {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.clients.len();
        self.inner.clients[i].clone()
    }

    /// Runs one RPC under the deadline, the retry policy and the circuit breaker. `send` makes
    /// one attempt with a client and the time left.
    async fn call<T, F, Fut>(&self, method: &'static str, retry: Retry, mut send: F) -> loom_store::Result<T>
    where
        F: FnMut(Client, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let inner = &self.inner;
        inner.breaker.admit().map_err(|why| {
            loom_store::Error::Unavailable(format!(
                "database service unavailable (circuit open) at {}: {why}",
                inner.endpoint
            ))
        })?;
        let deadline = Instant::now() + inner.deadline;
        let mut attempt = 1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = match tokio::time::timeout(left, send(self.client(), left)).await {
                Ok(Ok(response)) => {
                    inner.breaker.success();
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    let err = format!(
                        "database service at {} did not answer {method} within {:?}",
                        inner.endpoint, inner.deadline
                    );
                    inner.breaker.failure(&err);
                    return Err(loom_store::Error::Unavailable(err));
                }
            };
            if !is_transient(&status) {
                inner.breaker.success();
                return Err(from_status(&status));
            }
            let pause = inner.retry.backoff(attempt);
            let safe = retry == Retry::Always || never_sent(&status) || store_unavailable(&status);
            if !safe || attempt >= inner.retry.max_attempts || Instant::now() + pause >= deadline {
                let err = from_status(&status);
                inner.breaker.failure(&err.to_string());
                tracing::debug!(method, attempt, error = %err, "database service call failed");
                return Err(err);
            }
            tracing::debug!(method, attempt, ?pause, status = %status.message(), "retrying database service call");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        };
        for attempt in 0..12 {
            let cap = Duration::from_millis((10u64 << attempt.min(16)).min(100));
            for _ in 0..50 {
                assert!(policy.backoff(attempt) <= cap, "attempt {attempt}");
            }
        }
        let spread: std::collections::BTreeSet<_> = (0..50).map(|_| policy.backoff(5)).collect();
        assert!(spread.len() > 1, "jittered");
    }

    #[test]
    fn configuration_mistakes_are_clear() {
        let err = GrpcStore::connect(ClientConfig { channels: 0, ..ClientConfig::new("http://127.0.0.1:1") });
        assert!(err.unwrap_err().to_string().contains("channels"));
        let err = GrpcStore::connect(ClientConfig::new("https://127.0.0.1:1")).unwrap_err();
        assert!(err.to_string().contains("needs a TLS configuration"), "{err}");
        let err = GrpcStore::connect(ClientConfig::new("not a url")).unwrap_err();
        assert!(err.to_string().contains("bad endpoint"), "{err}");
    }
}
