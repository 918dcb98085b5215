//! `loom.connectors.v1.Connectors` over gRPC, served like the database service (and with its
//! code, `loom_db::transport`): `grpc.health.v1`, reflection, RED metrics per method, TLS
//! reloaded from its files, a bearer token, the exposure check, graceful shutdown.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use loom_db::transport::{self, CheckToken, GrpcMetrics, ServerTls, Token};
use loom_proto::connectors as pb;
use loom_proto::connectors::connectors_server::{Connectors as ConnectorsRpc, ConnectorsServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::convert::*;
use crate::{Connectors, Error};

/// How the service is served.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub tls: Option<ServerTls>,
    pub tls_reload_interval: Duration,
    /// Set: every `loom.connectors.v1` call needs `authorization: Bearer <token>`.
    pub token: Option<Token>,
    /// Plaintext outside loopback (a service mesh encrypts); client authentication still needed.
    pub insecure_no_tls: bool,
    /// Passing while the service serves (the `/readyz` of `loom serve connectors`).
    pub ready: Option<loom_telemetry::Check>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: None,
            tls_reload_interval: Duration::from_secs(5),
            token: None,
            insecure_no_tls: false,
            ready: None,
        }
    }
}

/// Serves `connectors` on `listener` until `shutdown`, then lets in-flight calls finish (open
/// `WatchHealth` streams end). Runs the background work ([`Connectors::run`]) meanwhile.
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    connectors: Connectors,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(|e| Error::Config(format!("listener has no address: {e}")))?;
    let hint = "[connectors] service_token_file or LOOM_CONNECTORS__SERVICE_TOKEN";
    transport::check_exposure(
        addr,
        config.tls.as_ref(),
        config.token.is_some(),
        config.insecure_no_tls,
        "connectors",
        hint,
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<ConnectorsServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(loom_proto::CONNECTORS_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let stop = shutdown.child_token();
    let service = Service { connectors: connectors.clone(), shutdown: stop.clone() };
    let service = InterceptedService::new(ConnectorsServer::new(service), CheckToken::new(config.token.clone()));
    let background = {
        let (connectors, stop) = (connectors.clone(), stop.clone());
        tokio::spawn(async move { connectors.run(stop).await })
    };
    let (tls, auth) = transport::security(config.tls.as_ref(), config.token.is_some());
    tracing::info!(%addr, tls, auth, "connectors service listening");
    if let Some(ready) = &config.ready {
        ready.set(true);
    }
    let ready = config.ready.clone();
    let stopping = shutdown.clone();
    let stream_stop = stop.clone();
    let stopped = async move {
        stopping.cancelled().await;
        if let Some(ready) = ready {
            ready.set(false);
        }
        // Ends the open WatchHealth streams, so the graceful shutdown does not wait on them.
        stream_stop.cancel();
        reporter.set_not_serving::<ConnectorsServer<Service>>().await;
        tracing::info!(%addr, "connectors service stopping: finishing in-flight calls");
    };
    let router = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(GrpcMetrics)
        .layer(loom_telemetry::propagate::TraceServerLayer)
        .add_service(health)
        .add_service(reflection)
        .add_service(service);
    let served = match &config.tls {
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
        Some(tls) => {
            let (incoming, reload) = transport::tls_incoming(listener, tls, config.tls_reload_interval, stop.clone())
                .map_err(|e| Error::Config(e.to_string()))?;
            let served = router.serve_with_incoming_shutdown(incoming, stopped).await;
            if let Some(reload) = reload {
                reload.abort();
            }
            served
        }
    };
    stop.cancel();
    let _ = background.await;
    served.map_err(|e| Error::Internal(format!("connectors service transport: {e}")))?;
    tracing::info!(%addr, "connectors service stopped");
    Ok(())
}

#[derive(Debug, Clone)]
struct Service {
    connectors: Connectors,
    shutdown: CancellationToken,
}

type Reply<T> = Result<Response<T>, Status>;

fn fail(e: Error) -> Status {
    match &e {
        Error::Internal(_) | Error::Sealed(_) | Error::Config(_) => {
            tracing::error!(error = %e, "connectors call failed")
        }
        Error::Unavailable(_) => tracing::warn!(error = %e, "connectors store unavailable"),
        _ => tracing::debug!(error = %e, "connectors call refused"),
    }
    e.to_status()
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| Error::invalid(field, "is required").to_status())
}

type Changes = Pin<Box<dyn Stream<Item = Result<pb::HealthChange, Status>> + Send>>;

#[tonic::async_trait]
impl ConnectorsRpc for Service {
    async fn list_connectors(&self, _: Request<pb::ListConnectorsRequest>) -> Reply<pb::ListConnectorsResponse> {
        let list = self.connectors.list().await.map_err(fail)?;
        Ok(Response::new(pb::ListConnectorsResponse { connectors: list.into_iter().map(connector_to).collect() }))
    }

    async fn get_connector(&self, r: Request<pb::GetConnectorRequest>) -> Reply<pb::Connector> {
        let c = self.connectors.get(&r.into_inner().id).await.map_err(fail)?;
        Ok(Response::new(connector_to(c)))
    }

    async fn register_connector(&self, r: Request<pb::RegisterConnectorRequest>) -> Reply<pb::Connector> {
        let spec = spec_from(required(r.into_inner().spec, "spec")?).map_err(fail)?;
        Ok(Response::new(connector_to(self.connectors.register(spec).await.map_err(fail)?)))
    }

    async fn update_connector(&self, r: Request<pb::UpdateConnectorRequest>) -> Reply<pb::Connector> {
        let r = r.into_inner();
        let spec = spec_from(required(r.spec, "spec")?).map_err(fail)?;
        let c = self.connectors.update(r.expected_version, spec, &r.remove_secrets).await.map_err(fail)?;
        Ok(Response::new(connector_to(c)))
    }

    async fn remove_connector(&self, r: Request<pb::RemoveConnectorRequest>) -> Reply<pb::RemoveConnectorResponse> {
        self.connectors.remove(&r.into_inner().id).await.map_err(fail)?;
        Ok(Response::new(pb::RemoveConnectorResponse {}))
    }

    async fn health_check(&self, r: Request<pb::HealthCheckRequest>) -> Reply<pb::Health> {
        Ok(Response::new(health_to(self.connectors.check(&r.into_inner().id).await.map_err(fail)?)))
    }

    async fn health_check_all(&self, _: Request<pb::HealthCheckAllRequest>) -> Reply<pb::HealthCheckAllResponse> {
        let all = self.connectors.check_all().await.map_err(fail)?;
        Ok(Response::new(pb::HealthCheckAllResponse { health: all.into_iter().map(health_to).collect() }))
    }

    type WatchHealthStream = Changes;

    async fn watch_health(&self, r: Request<pb::WatchHealthRequest>) -> Reply<Changes> {
        let ids = r.into_inner().ids;
        let stop = self.shutdown.clone();
        let stream = BroadcastStream::new(self.connectors.watch())
            .filter_map(move |change| {
                futures::future::ready(match change {
                    Ok(c) if ids.is_empty() || ids.contains(&c.health.connector_id) => Some(Ok(change_to(c))),
                    Ok(_) => None,
                    // A watcher that fell behind is told, not silently skipped.
                    Err(e) => Some(Err(Status::data_loss(format!("health changes were missed: {e}; watch again")))),
                })
            })
            .take_until(async move { stop.cancelled().await });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resolve_llm_endpoint(&self, r: Request<pb::ResolveLlmEndpointRequest>) -> Reply<pb::LlmEndpoint> {
        let endpoint = self.connectors.resolve_llm(&r.into_inner().id).await.map_err(fail)?;
        Ok(Response::new(endpoint_to(endpoint)))
    }
}
