//! What a connector is: its kind, mode and settings (validated once, here), its health, and the
//! JSON form its non-secret settings take in the store.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The systems a connector can stand for; each has its own health check (`health.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    LlmProvider,
    Prometheus,
    Grafana,
    Jaeger,
    GitHost,
    Webhook,
    Http,
}

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::LlmProvider, Kind::Prometheus, Kind::Grafana, Kind::Jaeger, Kind::GitHost, Kind::Webhook, Kind::Http];

    /// The name used in the store, the REST API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LlmProvider => "llm_provider",
            Kind::Prometheus => "prometheus",
            Kind::Grafana => "grafana",
            Kind::Jaeger => "jaeger",
            Kind::GitHost => "git_host",
            Kind::Webhook => "webhook",
            Kind::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, Error> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            Error::invalid("kind", format!("{s:?} is not one of {}", names.join(", ")))
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a connector is used (checked, delivered to) or only kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enabled,
    Disabled,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enabled => "enabled",
            Mode::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Result<Mode, Error> {
        match s {
            "enabled" => Ok(Mode::Enabled),
            "disabled" => Ok(Mode::Disabled),
            _ => Err(Error::invalid("mode", format!("{s:?} is not enabled or disabled"))),
        }
    }
}

/// A connector's health as its last check found it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// The default time between two background checks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The default time limit of one check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_INTERVAL: Duration = Duration::from_millis(200);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// What a caller sets: a connector with its secrets in clear (they are sealed before storing).
#[derive(Clone, PartialEq)]
pub struct Spec {
    pub id: String,
    pub kind: Kind,
    pub mode: Mode,
    pub url: String,
    pub description: String,
    pub settings: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub event_types: Vec<String>,
    pub check_interval: Duration,
    pub check_timeout: Duration,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("mode", &self.mode)
            .field("url", &self.url)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Spec {
    /// A spec with the defaults: enabled, no settings or secrets, default interval and timeout.
    pub fn new(id: impl Into<String>, kind: Kind, url: impl Into<String>) -> Spec {
        Spec {
            id: id.into(),
            kind,
            mode: Mode::Enabled,
            url: url.into(),
            description: String::new(),
            settings: BTreeMap::new(),
            secrets: BTreeMap::new(),
            event_types: Vec::new(),
            check_interval: DEFAULT_INTERVAL,
            check_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Refuses what no connector may be, naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        validate_id(&self.id)?;
        let url = url::Url::parse(&self.url).map_err(|e| Error::invalid("url", format!("{:?}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::invalid(
                "url",
                format!("{:?} must be an http:// or https:// URL with a host", self.url),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid("url", "must not hold credentials: put them in secrets"));
        }
        if self.description.len() > 1024 {
            return Err(Error::invalid("description", "is longer than 1024 bytes"));
        }
        for (name, value) in self.settings.iter().chain(&self.secrets) {
            if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::invalid("settings", format!("{name:?} is not a name (letters, digits, _)")));
            }
            if value.len() > 16 * 1024 {
                return Err(Error::invalid("settings", format!("{name} is longer than 16 KiB")));
            }
        }
        if self.check_interval < MIN_INTERVAL {
            return Err(Error::invalid("check_interval", format!("must be at least {MIN_INTERVAL:?}")));
        }
        if self.check_timeout.is_zero() || self.check_timeout > MAX_TIMEOUT {
            return Err(Error::invalid("check_timeout", format!("must be between 0 and {MAX_TIMEOUT:?}")));
        }
        for t in &self.event_types {
            let ok = t == "*"
                || (!t.is_empty()
                    && t.len() <= 64
                    && t.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'));
            if !ok {
                return Err(Error::invalid(
                    "event_types",
                    format!("{t:?} is not an event type such as bead.closed or *"),
                ));
            }
        }
        if self.kind != Kind::Webhook && !self.event_types.is_empty() {
            return Err(Error::invalid("event_types", "only a webhook connector subscribes to events"));
        }
        if self.kind == Kind::Webhook {
            let secret = self.secrets.get("signing_secret").ok_or_else(|| {
                Error::invalid(
                    "secrets",
                    "a webhook needs a signing_secret (whsec_ followed by base64 of 24 to 64 bytes)",
                )
            })?;
            crate::webhook::decode_secret(secret)?;
        }
        Ok(())
    }
}

/// Lower-case letters, digits, `-` and `_`, starting with a letter, at most 64 characters.
pub fn validate_id(id: &str) -> Result<(), Error> {
    let ok = id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "id",
            format!(
                "{id:?} must be lower-case letters, digits, - and _, starting with a letter, at most 64 characters"
            ),
        ))
    }
}

/// A connector as every API shows it: secrets by name only.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Connector {
    pub id: String,
    pub kind: Kind,
    pub mode: Mode,
    pub url: String,
    pub description: String,
    pub settings: BTreeMap<String, String>,
    /// The names of the secrets that are set.
    pub secret_names: Vec<String>,
    pub event_types: Vec<String>,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub health: Health,
}

/// The outcome of a check.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Health {
    pub connector_id: String,
    pub status: Status,
    pub message: String,
    pub checked_at: Option<DateTime<Utc>>,
    pub latency: Duration,
    /// An LLM provider's models.
    pub models: Vec<String>,
}

impl Health {
    pub fn unknown(id: &str, message: &str) -> Health {
        Health { connector_id: id.to_owned(), message: message.to_owned(), ..Health::default() }
    }
}

/// A change of a connector's status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthChange {
    pub previous: Status,
    pub health: Health,
}

/// An LLM provider as an agent calls it.
#[derive(Clone, PartialEq)]
pub struct LlmEndpoint {
    pub connector_id: String,
    pub url: String,
    pub api_key: Option<String>,
    pub default_model: String,
    pub version: i64,
    pub status: Status,
}

impl fmt::Debug for LlmEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmEndpoint")
            .field("connector_id", &self.connector_id)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "****"))
            .field("default_model", &self.default_model)
            .field("version", &self.version)
            .finish()
    }
}

/// The non-secret part of a spec, as the store keeps it (`ConnectorRecord::config`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredConfig {
    pub mode: Mode,
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub event_types: Vec<String>,
    pub check_interval_ms: u64,
    pub check_timeout_ms: u64,
    /// Which secrets the sealed blob holds (names are not secret; listing needs no key).
    #[serde(default)]
    pub secret_names: Vec<String>,
}

impl StoredConfig {
    pub(crate) fn of(spec: &Spec) -> StoredConfig {
        StoredConfig {
            mode: spec.mode,
            url: spec.url.clone(),
            description: spec.description.clone(),
            settings: spec.settings.clone(),
            event_types: spec.event_types.clone(),
            check_interval_ms: spec.check_interval.as_millis() as u64,
            check_timeout_ms: spec.check_timeout.as_millis() as u64,
            secret_names: spec.secrets.keys().cloned().collect(),
        }
    }
}
