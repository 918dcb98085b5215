//! The agents' LLM endpoints by connector: `loom_agent::endpoints::LlmEndpoints` over the
//! connectors service (in process under `loom up`, over gRPC with `[connectors] service_url`).

use std::sync::Arc;

use async_trait::async_trait;
use loom_agent::endpoints::{LlmEndpoints, ResolvedEndpoint};
use loom_connectors::Api;

#[derive(Debug)]
pub struct ConnectorEndpoints(pub Arc<dyn Api>);

#[async_trait]
impl LlmEndpoints for ConnectorEndpoints {
    async fn resolve(&self, provider: &str) -> Result<ResolvedEndpoint, (bool, String)> {
        match self.0.resolve_llm(provider).await {
            Ok(e) => {
                Ok(ResolvedEndpoint { url: e.url, api_key: e.api_key, model: e.default_model, version: e.version })
            }
            Err(e) => Err((e.is_transient(), e.to_string())),
        }
    }
}

/// Gives `agent` the connectors' LLM endpoints and `[connectors] llm_provider`.
pub fn configure(
    agent: &mut loom_agent::AgentConfig,
    config: &crate::config::Config,
    connectors: Option<&Arc<dyn Api>>,
) {
    if let Some(connectors) = connectors {
        agent.llm_endpoints = Some(Arc::new(ConnectorEndpoints(connectors.clone())));
    }
    agent.llm_provider = config.connectors.llm_provider.clone();
}
