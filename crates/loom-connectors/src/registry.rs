//! [`Connectors`]: the service's state and operations, independent of gRPC. Configuration lives
//! in the store (sealed secrets); health lives in memory, and a change of status (never a check
//! that finds the same status) is broadcast to watchers at once and appended to the store as a
//! `connector.health_changed` event, in the order the changes happened, by one writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loom_store::{ConnectorRecord, NewConnector, Store};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::model::{Connector, Health, HealthChange, Kind, LlmEndpoint, Mode, Spec, Status, StoredConfig};
use crate::seal::Keyring;
use crate::{Error, health};

/// The connectors service's core. Cheap to clone; clones share everything.
#[derive(Clone, Debug)]
pub struct Connectors {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    keys: Keyring,
    http: reqwest::Client,
    health: Mutex<HashMap<String, Health>>,
    changes: broadcast::Sender<HealthChange>,
    to_append: mpsc::UnboundedSender<HealthChange>,
    appends: Mutex<Option<mpsc::UnboundedReceiver<HealthChange>>>,
    /// Wakes the scheduler when connectors were added, changed or removed.
    pub(crate) changed: Notify,
    /// How long a replica's hold on the health events and the webhook deliveries lasts unrenewed.
    lease_ttl: Duration,
}

/// The default of [`Connectors::with_lease_ttl`].
pub const LEASE_TTL: Duration = Duration::from_secs(15);

impl Connectors {
    /// The service over `store`, sealing secrets with `keys`. Nothing runs until [`Self::run`].
    pub fn new(store: Arc<dyn Store>, keys: Keyring) -> Connectors {
        let (changes, _) = broadcast::channel(1024);
        let (to_append, appends) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("loom-connectors/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        Connectors {
            inner: Arc::new(Inner {
                store,
                keys,
                http,
                health: Mutex::default(),
                changes,
                to_append,
                appends: Mutex::new(Some(appends)),
                changed: Notify::new(),
                lease_ttl: LEASE_TTL,
            }),
        }
    }

    /// How long this replica's hold on the health events and the webhook deliveries lasts
    /// unrenewed (renewed every third of it; another replica takes over after it): 15 s by
    /// default. Set it before the service is cloned or run.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Connectors {
        Arc::get_mut(&mut self.inner).expect("set before the service is cloned").lease_ttl = ttl;
        self
    }

    pub(crate) fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn changed(&self) -> &Notify {
        &self.inner.changed
    }

    /// Runs the background work — scheduled checks, the event writer, webhook deliveries — until
    /// `shutdown`; the health changes found until then are appended before it returns. Runs once
    /// per `Connectors` (a second call returns at once).
    pub async fn run(&self, shutdown: CancellationToken) {
        let Some(appends) = self.inner.appends.lock().expect("not poisoned").take() else {
            // Once per service: a second run would check and deliver everything twice.
            tracing::warn!("the connectors' background work runs already");
            return;
        };
        let writer = tokio::spawn(crate::events::write(self.clone(), appends, shutdown.clone()));
        let scheduler = tokio::spawn(crate::schedule::run(self.clone(), shutdown.clone()));
        let webhooks = tokio::spawn(crate::deliveries::run(self.clone(), shutdown.clone()));
        let _ = scheduler.await;
        let _ = webhooks.await;
        let _ = writer.await;
    }

    /// Every connector, ordered by id, with its last known health.
    pub async fn list(&self) -> Result<Vec<Connector>, Error> {
        let records = self.inner.store.list_connectors().await?;
        records.into_iter().map(|r| self.view(r)).collect()
    }

    /// One connector, secrets by name only.
    pub async fn get(&self, id: &str) -> Result<Connector, Error> {
        crate::model::validate_id(id)?;
        let record = self.inner.store.get_connector(id).await?;
        self.view(record)
    }

    /// Stores a new connector (its secrets sealed) and schedules its checks.
    pub async fn register(&self, spec: Spec) -> Result<Connector, Error> {
        spec.validate()?;
        let record = self.inner.store.create_connector(self.sealed(&spec)).await?;
        tracing::info!(connector = %spec.id, kind = %spec.kind, "connector registered");
        self.inner.changed.notify_one();
        self.view(record)
    }

    /// Replaces a connector's settings if it is at `expected_version`. Secrets named in
    /// `spec.secrets` are set, those in `remove_secrets` deleted, the others kept.
    pub async fn update(
        &self,
        expected_version: i64,
        spec: Spec,
        remove_secrets: &[String],
    ) -> Result<Connector, Error> {
        crate::model::validate_id(&spec.id)?;
        let current = self.inner.store.get_connector(&spec.id).await?;
        if current.version != expected_version {
            return Err(Error::Conflict(format!(
                "connector {} was changed concurrently: expected version {expected_version}, it is at {}; re-read and retry",
                spec.id, current.version
            )));
        }
        let mut secrets = self.inner.keys.open(&current.id, &current.sealed_secrets)?;
        for name in remove_secrets {
            secrets.remove(name);
        }
        secrets.extend(spec.secrets.clone());
        let spec = Spec { secrets, ..spec };
        spec.validate()?;
        let record = self.inner.store.update_connector(expected_version, self.sealed(&spec)).await?;
        tracing::info!(connector = %spec.id, version = record.version, "connector updated");
        if spec.mode == Mode::Disabled {
            self.forget(&spec.id);
            crate::events::reset(&self.inner.store, &spec.id).await;
        }
        self.inner.changed.notify_one();
        self.view(record)
    }

    /// Deletes a connector.
    pub async fn remove(&self, id: &str) -> Result<(), Error> {
        crate::model::validate_id(id)?;
        self.inner.store.delete_connector(id).await?;
        self.forget(id);
        crate::events::reset(&self.inner.store, id).await;
        tracing::info!(connector = %id, "connector removed");
        self.inner.changed.notify_one();
        Ok(())
    }

    /// Checks one connector now (a disabled one is `unknown`, unchecked).
    pub async fn check(&self, id: &str) -> Result<Health, Error> {
        let (spec, _) = self.spec(id).await?;
        Ok(self.check_spec(&spec).await)
    }

    /// Checks every enabled connector now, concurrently, each within its own timeout.
    pub async fn check_all(&self) -> Result<Vec<Health>, Error> {
        let specs = self.specs().await?;
        Ok(futures::future::join_all(specs.iter().map(|(spec, _)| self.check_spec(spec))).await)
    }

    pub(crate) async fn check_spec(&self, spec: &Spec) -> Health {
        if spec.mode == Mode::Disabled {
            return Health::unknown(&spec.id, "disabled");
        }
        let health = health::check(&self.inner.http, spec).await;
        metrics::counter!("loom_connector_checks_total", "kind" => spec.kind.as_str(), "status" => health.status.as_str())
            .increment(1);
        metrics::histogram!("loom_connector_check_duration_seconds", "kind" => spec.kind.as_str())
            .record(health.latency.as_secs_f64());
        self.record(health.clone());
        health
    }

    /// Health changes from now on.
    pub fn watch(&self) -> broadcast::Receiver<HealthChange> {
        self.inner.changes.subscribe()
    }

    /// The endpoint, key and default model of an LLM provider connector, for the agents.
    pub async fn resolve_llm(&self, id: &str) -> Result<LlmEndpoint, Error> {
        let (spec, version) = self.spec(id).await?;
        if spec.kind != Kind::LlmProvider {
            return Err(Error::invalid("id", format!("connector {id} is a {}, not an llm_provider", spec.kind)));
        }
        if spec.mode == Mode::Disabled {
            return Err(Error::Conflict(format!("connector {id} is disabled")));
        }
        let status = self.health_of(id).status;
        Ok(LlmEndpoint {
            connector_id: spec.id,
            url: spec.url,
            api_key: spec.secrets.get("api_key").cloned(),
            default_model: spec.settings.get("default_model").cloned().unwrap_or_default(),
            version,
            status,
        })
    }

    /// Re-seals, under the current key, every connector a retired key sealed; returns how many.
    pub async fn rotate_keys(&self) -> Result<usize, Error> {
        let mut rotated = 0;
        for record in self.inner.store.list_connectors().await? {
            if self.inner.keys.is_current(&record.sealed_secrets) {
                continue;
            }
            let secrets = self.inner.keys.open(&record.id, &record.sealed_secrets)?;
            let sealed = NewConnector {
                sealed_secrets: self.inner.keys.seal(&record.id, &secrets),
                id: record.id.clone(),
                kind: record.kind.clone(),
                config: record.config.clone(),
            };
            self.inner.store.update_connector(record.version, sealed).await?;
            rotated += 1;
        }
        if rotated > 0 {
            tracing::info!(rotated, "connector secrets re-sealed under the current key");
        }
        Ok(rotated)
    }

    /// A connector with its secrets in clear, and its version.
    pub(crate) async fn spec(&self, id: &str) -> Result<(Spec, i64), Error> {
        crate::model::validate_id(id)?;
        let record = self.inner.store.get_connector(id).await?;
        self.open(&record)
    }

    /// Every connector with its secrets in clear (ones that do not open are logged and skipped).
    pub(crate) async fn specs(&self) -> Result<Vec<(Spec, i64)>, Error> {
        let records = self.inner.store.list_connectors().await?;
        Ok(records
            .iter()
            .filter_map(|r| match self.open(r) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    tracing::error!(connector = %r.id, error = %e, "connector skipped");
                    None
                }
            })
            .collect())
    }

    pub(crate) fn open(&self, record: &ConnectorRecord) -> Result<(Spec, i64), Error> {
        let config = stored_config(record)?;
        let secrets = self.inner.keys.open(&record.id, &record.sealed_secrets)?;
        let spec = Spec {
            id: record.id.clone(),
            kind: Kind::parse(&record.kind)?,
            mode: config.mode,
            url: config.url,
            description: config.description,
            settings: config.settings,
            secrets,
            event_types: config.event_types,
            check_interval: Duration::from_millis(config.check_interval_ms),
            check_timeout: Duration::from_millis(config.check_timeout_ms),
        };
        Ok((spec, record.version))
    }

    fn sealed(&self, spec: &Spec) -> NewConnector {
        NewConnector {
            id: spec.id.clone(),
            kind: spec.kind.as_str().to_owned(),
            config: serde_json::to_value(StoredConfig::of(spec)).expect("the config serializes"),
            sealed_secrets: if spec.secrets.is_empty() {
                Vec::new()
            } else {
                self.inner.keys.seal(&spec.id, &spec.secrets)
            },
        }
    }

    fn view(&self, record: ConnectorRecord) -> Result<Connector, Error> {
        let config = stored_config(&record)?;
        Ok(Connector {
            health: self.health_of(&record.id),
            kind: Kind::parse(&record.kind)?,
            mode: config.mode,
            url: config.url,
            description: config.description,
            settings: config.settings,
            secret_names: config.secret_names,
            event_types: config.event_types,
            check_interval: Duration::from_millis(config.check_interval_ms),
            check_timeout: Duration::from_millis(config.check_timeout_ms),
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
            id: record.id,
        })
    }

    fn health_of(&self, id: &str) -> Health {
        let health = self.inner.health.lock().expect("not poisoned");
        health.get(id).cloned().unwrap_or_else(|| Health::unknown(id, "not checked yet"))
    }

    pub(crate) fn forget(&self, id: &str) {
        self.inner.health.lock().expect("not poisoned").remove(id);
    }

    /// The last checked health of every connector.
    pub(crate) fn health_snapshot(&self) -> Vec<Health> {
        let health = self.inner.health.lock().expect("not poisoned");
        health.values().filter(|h| h.status != Status::Unknown).cloned().collect()
    }

    /// Keeps a check's outcome unless a later-begun check's is kept already; a change of status
    /// is broadcast and queued for the event log (`events.rs`: recorded by one replica).
    pub(crate) fn record(&self, health: Health) {
        let change = {
            let mut all = self.inner.health.lock().expect("not poisoned");
            let last = all.get(&health.connector_id);
            if last.is_some_and(|last| last.checked_at > health.checked_at) {
                // A check that began before the one recorded: its news is older.
                return;
            }
            let previous = last.map_or(Status::Unknown, |h| h.status);
            all.insert(health.connector_id.clone(), health.clone());
            (previous != health.status).then_some(HealthChange { previous, health })
        };
        if let Some(change) = change {
            tracing::info!(
                connector = %change.health.connector_id,
                from = change.previous.as_str(),
                to = change.health.status.as_str(),
                why = %change.health.message,
                "connector health changed"
            );
            let _ = self.inner.changes.send(change.clone());
            let _ = self.inner.to_append.send(change);
        }
    }

    /// Disables a connector (a webhook answered 410 Gone).
    pub(crate) async fn disable(&self, id: &str, why: &str) -> Result<(), Error> {
        let (spec, version) = self.spec(id).await?;
        if spec.mode == Mode::Disabled {
            return Ok(());
        }
        let spec = Spec { mode: Mode::Disabled, ..spec };
        self.inner.store.update_connector(version, self.sealed(&spec)).await?;
        self.forget(id);
        crate::events::reset(&self.inner.store, id).await;
        tracing::warn!(connector = %id, why, "connector disabled");
        self.inner.changed.notify_one();
        Ok(())
    }
}

fn stored_config(record: &ConnectorRecord) -> Result<StoredConfig, Error> {
    serde_json::from_value(record.config.clone())
        .map_err(|e| Error::Internal(format!("connector {} has a corrupt configuration: {e}", record.id)))
}

/// Secrets by name with the value redacted, as `GetConnector` shows them.
pub fn redacted(names: &[String]) -> BTreeMap<String, String> {
    names.iter().map(|n| (n.clone(), "****".to_owned())).collect()
}
