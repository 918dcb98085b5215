//! Typed, layered configuration: defaults ← `loom.toml` ← `LOOM_*` environment ← command-line
//! flags. Secrets (passwords in URLs) are redacted in `Debug` and in `loom config show`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The effective configuration of every Loom command.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL URL; unset means the embedded SQLite file under `data_dir`.
    pub database_url: Option<String>,
    /// NATS URL; unset means the embedded in-process bus.
    pub nats_url: Option<String>,
    /// Where embedded state (the SQLite file) lives.
    pub data_dir: PathBuf,
    /// The control plane's HTTP address.
    pub http_addr: SocketAddr,
    /// The API the CLI talks to; default `http://{http_addr}`.
    pub api_url: Option<String>,
    /// The API key the CLI sends (secret: redacted in `config show`).
    pub api_key: Option<String>,
    /// Serve the API without authentication (loopback only; development).
    pub insecure_no_auth: bool,
    /// The database service's gRPC address.
    pub db_addr: SocketAddr,
    /// The connectors service's gRPC address.
    pub connectors_addr: SocketAddr,
    /// `text` or `json`.
    pub log_format: String,
    /// Default log filter when `RUST_LOG` is unset.
    pub log_level: String,
    pub database: DatabaseConfig,
    pub dispatch: DispatchConfig,
}

/// PostgreSQL pool settings, or the database service to use instead.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// PgBouncer transaction pooling: no prepared statements that outlive a transaction.
    pub pgbouncer: bool,
    /// The database service (`loom serve db`) as `http://host:50051` or `https://…`: when set,
    /// the control plane and `loom up` use it over gRPC instead of opening a database themselves.
    pub service_url: Option<String>,
    /// CA certificate (PEM) that signs the database service's certificate (for `https://`).
    pub service_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for a database service that requires mutual TLS.
    pub service_cert: Option<PathBuf>,
    pub service_key: Option<PathBuf>,
}

/// Dispatch policy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// A dispatch with no progress for this long is swept and redispatched.
    pub lease_secs: u64,
    /// Attempts before a failing bead is blocked.
    pub max_attempts: u32,
    /// Wait before a failed bead is ready again.
    pub retry_backoff_secs: u64,
    /// Most beads of one project in progress at once.
    pub project_concurrency: u32,
    /// Most beads in progress at once over all projects.
    pub global_concurrency: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            nats_url: None,
            data_dir: PathBuf::from(".loom"),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            api_url: None,
            api_key: None,
            insecure_no_auth: false,
            db_addr: ([127, 0, 0, 1], 50051).into(),
            connectors_addr: ([127, 0, 0, 1], 50052).into(),
            log_format: "text".into(),
            log_level: "info".into(),
            database: DatabaseConfig::default(),
            dispatch: DispatchConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout_ms: 5000,
            pgbouncer: false,
            service_url: None,
            service_ca: None,
            service_cert: None,
            service_key: None,
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            lease_secs: 600,
            max_attempts: 3,
            retry_backoff_secs: 5,
            project_concurrency: 256,
            global_concurrency: 1024,
        }
    }
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl Config {
    /// Loads the layers. `file` is `--config`; otherwise `./loom.toml` is read when it exists.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
                figment = figment.merge(Toml::file(path));
            }
            None if Path::new("loom.toml").exists() => figment = figment.merge(Toml::file("loom.toml")),
            None => {}
        }
        let config: Config = figment
            .merge(Env::prefixed("LOOM_").split("__").ignore(&["config"]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .context("invalid configuration")?;
        let d = &config.dispatch;
        anyhow::ensure!(
            d.project_concurrency > 0 && d.global_concurrency > 0 && d.max_attempts > 0 && d.lease_secs > 0,
            "invalid configuration: dispatch.project_concurrency, global_concurrency, max_attempts and lease_secs \
             must be at least 1"
        );
        anyhow::ensure!(
            matches!(config.log_format.as_str(), "text" | "json"),
            "invalid configuration: log_format must be \"text\" or \"json\", not {:?}",
            config.log_format
        );
        Ok(config)
    }

    /// The configuration as TOML with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).expect("config serialises")
    }

    fn redacted(&self) -> Self {
        let mut c = self.clone();
        c.database_url = c.database_url.as_deref().map(loom_store::redact_url);
        c.nats_url = c.nats_url.as_deref().map(loom_store::redact_url);
        c.api_key = c.api_key.as_ref().map(|_| "****".to_owned());
        c
    }

    /// The SQLite file used when no database URL is configured.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("loom.sqlite")
    }

    /// The API URL the CLI uses.
    pub fn api_url(&self) -> String {
        self.api_url.clone().unwrap_or_else(|| format!("http://{}", self.http_addr))
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.redacted();
        f.debug_struct("Config")
            .field("database_url", &c.database_url)
            .field("nats_url", &c.nats_url)
            .field("data_dir", &c.data_dir)
            .field("http_addr", &c.http_addr)
            .field("database", &c.database)
            .field("dispatch", &c.dispatch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order_and_secrets_are_redacted() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "loom.toml",
                "database_url = \"postgres://u:file@db/loom\"\nlog_level = \"debug\"\n[dispatch]\nmax_attempts = 7\n",
            )?;
            jail.set_env("LOOM_DATABASE_URL", "postgres://u:env-secret@db/loom");
            jail.set_env("LOOM_DISPATCH__LEASE_SECS", "42");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.database_url.as_deref(), Some("postgres://u:env-secret@db/loom"), "env beats file");
            assert_eq!((c.log_level.as_str(), c.dispatch.max_attempts, c.dispatch.lease_secs), ("debug", 7, 42));
            let flags = Overrides { database_url: Some("postgres://u:flag@db/x".into()), ..Overrides::default() };
            let c = Config::load(None, &flags).unwrap();
            assert_eq!(c.database_url.as_deref(), Some("postgres://u:flag@db/x"), "flags beat env");
            let shown = c.to_redacted_toml();
            assert!(shown.contains("postgres://u:****@db/x") && !shown.contains("flag@"), "{shown}");
            assert!(!format!("{c:?}").contains("flag@"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("loom.toml", "databse_url = \"x\"\n")?;
            let err = format!("{:#}", Config::load(None, &Overrides::default()).unwrap_err());
            assert!(err.contains("databse_url"), "{err}");
            jail.create_file("loom.toml", "[dispatch]\nglobal_concurrency = 0\n")?;
            let err = format!("{:#}", Config::load(None, &Overrides::default()).unwrap_err());
            assert!(err.contains("global_concurrency"), "{err}");
            jail.create_file("loom.toml", "log_format = \"xml\"\n")?;
            let err = format!("{:#}", Config::load(None, &Overrides::default()).unwrap_err());
            assert!(err.contains("log_format"), "{err}");
            Ok(())
        });
    }
}
