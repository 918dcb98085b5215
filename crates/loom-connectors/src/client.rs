//! [`Client`]: the connectors service over gRPC (lazy connection, a deadline per call, the
//! bearer token and TLS of `loom_db::transport`), and [`Api`], what both it and the in-process
//! [`Connectors`] offer, so the control plane and agents use either by configuration alone.

use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt as _};
use loom_db::transport::{ClientTls, SendToken, Token, client_tls};
use loom_proto::connectors as pb;
use loom_proto::connectors::connectors_client::ConnectorsClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::convert::*;
use crate::model::{Connector, Health, HealthChange, LlmEndpoint, Spec};
use crate::{Connectors, Error};

/// The operations of the connectors service.
#[async_trait]
pub trait Api: Send + Sync + std::fmt::Debug {
    async fn list(&self) -> Result<Vec<Connector>, Error>;
    async fn get(&self, id: &str) -> Result<Connector, Error>;
    async fn register(&self, spec: Spec) -> Result<Connector, Error>;
    async fn update(&self, expected_version: i64, spec: Spec, remove_secrets: &[String]) -> Result<Connector, Error>;
    async fn remove(&self, id: &str) -> Result<(), Error>;
    async fn check(&self, id: &str) -> Result<Health, Error>;
    async fn check_all(&self) -> Result<Vec<Health>, Error>;
    async fn resolve_llm(&self, id: &str) -> Result<LlmEndpoint, Error>;
}

#[async_trait]
impl Api for Connectors {
    async fn list(&self) -> Result<Vec<Connector>, Error> {
        Connectors::list(self).await
    }
    async fn get(&self, id: &str) -> Result<Connector, Error> {
        Connectors::get(self, id).await
    }
    async fn register(&self, spec: Spec) -> Result<Connector, Error> {
        Connectors::register(self, spec).await
    }
    async fn update(&self, expected_version: i64, spec: Spec, remove_secrets: &[String]) -> Result<Connector, Error> {
        Connectors::update(self, expected_version, spec, remove_secrets).await
    }
    async fn remove(&self, id: &str) -> Result<(), Error> {
        Connectors::remove(self, id).await
    }
    async fn check(&self, id: &str) -> Result<Health, Error> {
        Connectors::check(self, id).await
    }
    async fn check_all(&self) -> Result<Vec<Health>, Error> {
        Connectors::check_all(self).await
    }
    async fn resolve_llm(&self, id: &str) -> Result<LlmEndpoint, Error> {
        Connectors::resolve_llm(self, id).await
    }
}

/// Where and how to reach the service.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    pub token: Option<Token>,
    pub tls: Option<ClientTls>,
    /// Of each call; `HealthCheckAll` gets four times as much.
    pub deadline: Duration,
    pub connect_timeout: Duration,
}

impl ClientConfig {
    pub fn new(endpoint: impl Into<String>) -> ClientConfig {
        ClientConfig {
            endpoint: endpoint.into(),
            token: None,
            tls: None,
            deadline: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

type Rpc = ConnectorsClient<InterceptedService<loom_telemetry::propagate::TraceClient<Channel>, SendToken>>;

/// The connectors service over gRPC. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    rpc: Rpc,
    endpoint: String,
    deadline: Duration,
}

impl Client {
    /// Prepares the connection; nothing is dialled until the first call.
    pub fn connect(config: ClientConfig) -> Result<Client, Error> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| Error::Config(format!("bad connectors endpoint {:?}: {e}", config.endpoint)))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true);
        match (&config.tls, config.endpoint.starts_with("https://")) {
            (Some(tls), true) => {
                endpoint = endpoint.tls_config(client_tls(tls)).map_err(|e| Error::Config(format!("TLS: {e}")))?
            }
            (None, false) => {}
            (Some(_), false) => return Err(Error::Config("TLS is configured: the endpoint must be https://".into())),
            (None, true) => return Err(Error::Config("an https:// endpoint needs a TLS configuration (CA)".into())),
        }
        let rpc = ConnectorsClient::with_interceptor(
            tower::Layer::layer(&loom_telemetry::propagate::TraceClientLayer, endpoint.connect_lazy()),
            SendToken::new(config.token),
        );
        Ok(Client { rpc, endpoint: config.endpoint, deadline: config.deadline })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request<T>(&self, message: T, deadline: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline);
        request
    }

    fn fail(&self, status: tonic::Status) -> Error {
        match Error::from_status(&status) {
            Error::Unavailable(m) => Error::Unavailable(format!("{m} (at {})", self.endpoint)),
            other => other,
        }
    }

    /// Health changes as they happen, of `ids` (all when empty).
    pub async fn watch(
        &self,
        ids: Vec<String>,
    ) -> Result<impl Stream<Item = Result<HealthChange, Error>> + use<>, Error> {
        let mut rpc = self.rpc.clone();
        let stream = rpc.watch_health(pb::WatchHealthRequest { ids }).await.map_err(|s| self.fail(s))?.into_inner();
        Ok(stream.map(|c| c.map(change_from).map_err(|s| Error::from_status(&s))))
    }
}

#[async_trait]
impl Api for Client {
    async fn list(&self) -> Result<Vec<Connector>, Error> {
        let r = self.rpc.clone().list_connectors(self.request(pb::ListConnectorsRequest {}, self.deadline)).await;
        r.map_err(|s| self.fail(s))?.into_inner().connectors.into_iter().map(connector_from).collect()
    }

    async fn get(&self, id: &str) -> Result<Connector, Error> {
        let request = self.request(pb::GetConnectorRequest { id: id.into() }, self.deadline);
        let r = self.rpc.clone().get_connector(request).await;
        connector_from(r.map_err(|s| self.fail(s))?.into_inner())
    }

    async fn register(&self, spec: Spec) -> Result<Connector, Error> {
        let message = pb::RegisterConnectorRequest { spec: Some(spec_to(spec)) };
        let r = self.rpc.clone().register_connector(self.request(message, self.deadline)).await;
        connector_from(r.map_err(|s| self.fail(s))?.into_inner())
    }

    async fn update(&self, expected_version: i64, spec: Spec, remove_secrets: &[String]) -> Result<Connector, Error> {
        let message = pb::UpdateConnectorRequest {
            expected_version,
            spec: Some(spec_to(spec)),
            remove_secrets: remove_secrets.to_vec(),
        };
        let r = self.rpc.clone().update_connector(self.request(message, self.deadline)).await;
        connector_from(r.map_err(|s| self.fail(s))?.into_inner())
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        let message = pb::RemoveConnectorRequest { id: id.into() };
        self.rpc.clone().remove_connector(self.request(message, self.deadline)).await.map_err(|s| self.fail(s))?;
        Ok(())
    }

    async fn check(&self, id: &str) -> Result<Health, Error> {
        let request = self.request(pb::HealthCheckRequest { id: id.into() }, self.deadline);
        let r = self.rpc.clone().health_check(request).await;
        Ok(health_from(r.map_err(|s| self.fail(s))?.into_inner()))
    }

    async fn check_all(&self) -> Result<Vec<Health>, Error> {
        let request = self.request(pb::HealthCheckAllRequest {}, self.deadline * 4);
        let r = self.rpc.clone().health_check_all(request).await.map_err(|s| self.fail(s))?;
        Ok(r.into_inner().health.into_iter().map(health_from).collect())
    }

    async fn resolve_llm(&self, id: &str) -> Result<LlmEndpoint, Error> {
        let message = pb::ResolveLlmEndpointRequest { id: id.into() };
        let r = self.rpc.clone().resolve_llm_endpoint(self.request(message, self.deadline)).await;
        Ok(endpoint_from(r.map_err(|s| self.fail(s))?.into_inner()))
    }
}
