//! LLM endpoints by connector: a bead's project names an LLM provider (context key
//! `llm_provider`, else the agent's default), and the agent asks [`LlmEndpoints`] (the
//! connectors service) for its URL, key and default model before each LLM task, so keys live in
//! one place and a rotated key is used from the next task on, without a restart. A resolved
//! endpoint is kept: reused while its version is unchanged (the HTTP client and its tool-mode
//! probe survive), and used for at most [`STALE_FOR`] while the service cannot be reached — a
//! clear error after that, or when nothing was ever resolved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::config::{ApiKey, LlmConfig};
use crate::{Error, llm};

/// How long an endpoint resolved earlier stands in while the connectors service is unreachable.
pub const STALE_FOR: Duration = Duration::from_secs(600);

/// Where LLM providers are resolved (the connectors service; implemented by the binary).
#[async_trait]
pub trait LlmEndpoints: Send + Sync + std::fmt::Debug {
    /// The provider's endpoint. `Err(transient, why)`: `transient` when the service could not
    /// be reached (a cached endpoint may stand in).
    async fn resolve(&self, provider: &str) -> Result<ResolvedEndpoint, (bool, String)>;
}

/// A provider as resolved.
#[derive(Clone)]
pub struct ResolvedEndpoint {
    pub url: String,
    pub api_key: Option<String>,
    /// Empty: the agent's `[llm] model`.
    pub model: String,
    /// The connector's version: a change (a rotated key) makes a new client.
    pub version: i64,
}

impl std::fmt::Debug for ResolvedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedEndpoint")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "****"))
            .field("model", &self.model)
            .field("version", &self.version)
            .finish()
    }
}

struct Cached {
    version: i64,
    at: Instant,
    client: Arc<llm::Client>,
}

/// The per-agent cache in front of [`LlmEndpoints`].
pub(crate) struct Resolver {
    endpoints: Arc<dyn LlmEndpoints>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl Resolver {
    pub(crate) fn new(endpoints: Arc<dyn LlmEndpoints>) -> Resolver {
        Resolver { endpoints, cache: Mutex::default() }
    }

    /// The client of `provider`, resolved now (or, while the service is unreachable, the one
    /// resolved last, if it is recent enough).
    pub(crate) async fn client(&self, base: &LlmConfig, provider: &str) -> Result<Arc<llm::Client>, Error> {
        match self.endpoints.resolve(provider).await {
            Ok(endpoint) => {
                let mut cache = self.cache.lock().expect("not poisoned");
                if let Some(c) = cache.get_mut(provider).filter(|c| c.version == endpoint.version) {
                    c.at = Instant::now();
                    return Ok(c.client.clone());
                }
                let config = LlmConfig {
                    base_url: endpoint.url.clone(),
                    api_key: endpoint.api_key.clone().map(ApiKey::new),
                    model: if endpoint.model.is_empty() { base.model.clone() } else { endpoint.model.clone() },
                    ..base.clone()
                };
                let client = Arc::new(llm::Client::new(&config)?);
                tracing::info!(provider, version = endpoint.version, url = %endpoint.url, "LLM endpoint resolved");
                cache.insert(
                    provider.to_owned(),
                    Cached { version: endpoint.version, at: Instant::now(), client: client.clone() },
                );
                Ok(client)
            }
            Err((transient, why)) => {
                let cache = self.cache.lock().expect("not poisoned");
                match cache.get(provider).filter(|c| transient && c.at.elapsed() < STALE_FOR) {
                    Some(c) => {
                        tracing::warn!(provider, error = %why, "connectors service unreachable: using the LLM endpoint resolved last");
                        Ok(c.client.clone())
                    }
                    None => Err(Error::Llm(format!("cannot resolve the LLM provider {provider}: {why}"))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Answers in turn what the test scripted (the caching rules, not the service, are tested here;
    /// the service itself is exercised end to end by `loom`'s `connectors` system test).
    #[derive(Debug, Default)]
    struct Scripted(Mutex<VecDeque<Result<ResolvedEndpoint, (bool, String)>>>);

    #[async_trait]
    impl LlmEndpoints for Scripted {
        async fn resolve(&self, _: &str) -> Result<ResolvedEndpoint, (bool, String)> {
            self.0.lock().unwrap().pop_front().expect("scripted")
        }
    }

    fn at(version: i64) -> Result<ResolvedEndpoint, (bool, String)> {
        Ok(ResolvedEndpoint {
            url: "http://127.0.0.1:9".into(),
            api_key: Some("k".into()),
            model: String::new(),
            version,
        })
    }

    #[tokio::test]
    async fn a_resolved_endpoint_is_reused_per_version_and_stands_in_only_for_an_outage() {
        let script = [
            Err((true, "connectors unavailable".to_owned())),
            at(1),
            at(1),
            Err((true, "connectors unavailable".to_owned())),
            Err((false, "connector llm not found".to_owned())),
            at(2),
        ];
        let resolver = Resolver::new(Arc::new(Scripted(Mutex::new(script.into()))));
        let base = LlmConfig::default();
        let never = resolver.client(&base, "llm").await.unwrap_err().to_string();
        assert!(never.contains("cannot resolve the LLM provider llm") && never.contains("unavailable"), "{never}");
        let first = resolver.client(&base, "llm").await.unwrap();
        assert_eq!(first.model, base.model, "no default model: the agent's");
        assert!(Arc::ptr_eq(&first, &resolver.client(&base, "llm").await.unwrap()), "same version, same client");
        let outage = resolver.client(&base, "llm").await.unwrap();
        assert!(Arc::ptr_eq(&first, &outage), "the last one stands in while the service is down");
        assert!(resolver.client(&base, "llm").await.is_err(), "a refusal is not an outage");
        let rotated = resolver.client(&base, "llm").await.unwrap();
        assert!(!Arc::ptr_eq(&first, &rotated), "a new version (a rotated key) is a new client");
    }
}
