//! Typed, layered configuration: defaults ← `loom.toml` ← `LOOM_*` environment ← command-line
//! flags. Secrets (passwords in URLs, API keys) are redacted in `Debug` and in `loom config show`.
//! Relative paths are made absolute once, here, against the directory `loom` was started in.
//!
//! Environment variables: `LOOM_{KEY}` sets a top-level key and `__` nests
//! (`LOOM_DISPATCH__MAX_ATTEMPTS` is `[dispatch] max_attempts`). `LOOM_LLM_URL` and
//! `LOOM_LLM_MODEL` are short for `LOOM_LLM__BASE_URL` and `LOOM_LLM__MODEL`. Not keys, so
//! skipped: `LOOM_CONFIG` (the file, read by the command line), `LOOM_LLM_API_KEY` (the LLM key,
//! read by `[llm]`, see `llm.rs`), and the variables tools and tasks get (`LOOM_PG_BINDIR`,
//! `LOOM_NATS_SERVER`, `LOOM_PROJECT_ID`, `LOOM_BUILD`, …). Any other `LOOM_*` name is an unknown key: an error.

mod bus;
pub mod connectors;
mod llm;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use bus::{BusSection, Service};
pub use llm::{LlmConfig, LoadedKey};

use crate::paths;

/// `LOOM_*` variables that are not configuration keys (lower case, prefix stripped).
const NOT_KEYS: &[&str] = &[
    "config",
    "llm_api_key",
    "pg_bindir",
    "nats_server",
    "test_real_llm",
    "real_llm_venv",
    "bench_messages",
    "project_id",
    "bead_id",
    "dispatch_id",
    "build",
    "test",
    "lint",
    "attempt",
];

/// The effective configuration of every Loom command.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL URL; unset means the embedded SQLite file under `data_dir`.
    pub database_url: Option<String>,
    /// NATS URL; unset means the embedded in-process bus.
    pub nats_url: Option<String>,
    /// Where embedded state (the SQLite file) and the agents' workspaces (`work/`) live.
    pub data_dir: PathBuf,
    /// Personas (`<name>/SKILL.md`) of the agents, each overriding the built-in persona of its
    /// name; a missing directory leaves the built-in ones.
    pub personas_dir: PathBuf,
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
    pub bus: BusSection,
    pub dispatch: DispatchConfig,
    pub llm: LlmConfig,
    pub agent: AgentSection,
    pub connectors: connectors::ConnectorsSection,
    /// The LLM key `[llm]` names, read when the configuration loads (never serialised).
    #[serde(skip)]
    pub llm_key: Option<LoadedKey>,
    /// The configuration file that was read, if any (hidden from the agents' commands).
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// `[agent]`: how the project agents (`loom up`'s and `loom serve agent`) run bead commands and
/// what they refuse to push.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// `bubblewrap` (the default; needs the `bwrap` program and user namespaces) or `none`:
    /// commands run unsandboxed, which the agent logs as a warning when it starts.
    pub sandbox: String,
    /// More paths bead commands may not see; `data_dir` (the SQLite file, the agents' work
    /// root), the configuration file and the key files are always hidden.
    pub sandbox_hidden: Vec<PathBuf>,
    /// Paths bead commands may write besides their worktree (a shared build cache).
    pub sandbox_writable: Vec<PathBuf>,
    /// Per-process limits inside the sandbox; 0 = none.
    pub limit_cpu_secs: u64,
    pub limit_memory_bytes: u64,
    /// Not applied by the kernel when the agent runs as root.
    pub limit_processes: u64,
    pub limit_file_size_bytes: u64,
    /// Globs of paths a bead may not change (`**` spans directories); its push is refused.
    pub protected_paths: Vec<String>,
    /// Largest diff a bead may push, in bytes; 0 = no limit.
    pub max_diff_bytes: u64,
    /// Where `loom serve agent` serves `/metrics`, `/healthz` and `/readyz`; unset = not served
    /// (several agents often share a host). `--metrics-addr` sets it. `loom up`'s agents show
    /// in its control plane's `/metrics`.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for AgentSection {
    fn default() -> Self {
        let limits = loom_agent::ResourceLimits::default();
        let checks = loom_agent::PushChecks::default();
        Self {
            sandbox: loom_agent::SandboxMode::Bubblewrap.as_str().to_owned(),
            sandbox_hidden: Vec::new(),
            sandbox_writable: Vec::new(),
            limit_cpu_secs: limits.cpu_secs,
            limit_memory_bytes: limits.memory_bytes,
            limit_processes: limits.processes,
            limit_file_size_bytes: limits.file_size_bytes,
            protected_paths: checks.protected_paths,
            max_diff_bytes: checks.max_diff_bytes,
            metrics_addr: None,
        }
    }
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
    /// The bearer token of the database service (secret: `LOOM_DATABASE__SERVICE_TOKEN`, or
    /// `service_token_file`): `loom serve db` requires it of every client, and clients send it.
    pub service_token: Option<String>,
    pub service_token_file: Option<PathBuf>,
    /// Where `loom serve db` serves `/metrics`, `/healthz` and `/readyz` (plain HTTP; keep it
    /// on loopback or a cluster-internal address). `--metrics-addr` overrides it.
    pub service_metrics_addr: SocketAddr,
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
            personas_dir: PathBuf::from("personas"),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            api_url: None,
            api_key: None,
            insecure_no_auth: false,
            db_addr: ([127, 0, 0, 1], 50051).into(),
            connectors_addr: ([127, 0, 0, 1], 50052).into(),
            log_format: "text".into(),
            log_level: "info".into(),
            database: DatabaseConfig::default(),
            bus: BusSection::default(),
            dispatch: DispatchConfig::default(),
            llm: LlmConfig::default(),
            agent: AgentSection::default(),
            connectors: connectors::ConnectorsSection::default(),
            llm_key: None,
            config_file: None,
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
            service_token: None,
            service_token_file: None,
            service_metrics_addr: ([127, 0, 0, 1], 9464).into(),
        }
    }
}

impl DatabaseConfig {
    /// The database service's bearer token, from `service_token` or `service_token_file`.
    pub fn token(&self) -> anyhow::Result<Option<loom_db::Token>> {
        match (self.service_token.as_deref().filter(|t| !t.is_empty()), &self.service_token_file) {
            (Some(_), Some(_)) => anyhow::bail!("set database.service_token or database.service_token_file, not both"),
            (Some(t), None) => Ok(Some(loom_db::Token::new(t).context("database.service_token")?)),
            (None, Some(file)) => Ok(Some(loom_db::Token::from_file(file)?)),
            (None, None) => Ok(None),
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
        let read = match file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
                figment = figment.merge(Toml::file(path));
                Some(path)
            }
            None if Path::new("loom.toml").exists() => {
                figment = figment.merge(Toml::file("loom.toml"));
                Some(Path::new("loom.toml"))
            }
            None => None,
        };
        let mut config: Config =
            figment.merge(env()).merge(Serialized::defaults(overrides)).extract().context("invalid configuration")?;
        config.config_file = read.map(paths::absolute).transpose().context("the configuration file")?;
        config.resolve_paths().context("invalid configuration")?;
        config.validate()?;
        config.llm_key = config.llm.load_key()?;
        Ok(config)
    }

    fn resolve_paths(&mut self) -> anyhow::Result<()> {
        self.data_dir = paths::absolute(&self.data_dir).context("data_dir")?;
        self.personas_dir = paths::absolute(&self.personas_dir).context("personas_dir")?;
        let db = &mut self.database;
        let mut paths = vec![
            ("database.service_ca", &mut db.service_ca),
            ("database.service_cert", &mut db.service_cert),
            ("database.service_key", &mut db.service_key),
            ("database.service_token_file", &mut db.service_token_file),
            ("llm.api_key_file", &mut self.llm.api_key_file),
        ];
        paths.extend(self.bus.paths());
        paths.extend(self.connectors.paths());
        for (name, path) in paths {
            // An empty value (`LOOM_LLM__API_KEY_FILE=`) unsets the file.
            *path = match path.take().filter(|p| !p.as_os_str().is_empty()) {
                Some(p) => Some(paths::absolute(&p).context(name)?),
                None => None,
            };
        }
        for p in self.connectors.previous_encryption_key_files.iter_mut() {
            *p = paths::absolute(p).context("connectors.previous_encryption_key_files")?;
        }
        let agent = &mut self.agent;
        for (name, list) in [
            ("agent.sandbox_hidden", &mut agent.sandbox_hidden),
            ("agent.sandbox_writable", &mut agent.sandbox_writable),
        ] {
            for p in list.iter_mut() {
                *p = paths::absolute(p).context(name)?;
            }
        }
        Ok(())
    }

    /// The agents' sandbox: `[agent]`, with Loom's own secrets hidden (the data directory with
    /// the SQLite file and the work root, the configuration file, the LLM key file, the database
    /// service's client key and certificate).
    pub fn agent_sandbox(&self) -> loom_agent::SandboxConfig {
        let a = &self.agent;
        let mut hidden = vec![self.data_dir.clone()];
        hidden.extend(self.config_file.iter().cloned());
        let db = &self.database;
        let bus = &self.bus;
        let secrets = [
            &self.llm.api_key_file,
            &db.service_key,
            &db.service_cert,
            &db.service_token_file,
            &bus.password_file,
            &bus.token_file,
            &bus.nkey_seed_file,
            &bus.credentials_file,
            &bus.tls_key,
            &bus.task_signing_key,
            &self.connectors.encryption_key_file,
            &self.connectors.service_token_file,
        ];
        hidden.extend(secrets.into_iter().flatten().cloned());
        hidden.extend(a.sandbox_hidden.iter().cloned());
        loom_agent::SandboxConfig {
            mode: loom_agent::SandboxMode::parse(&a.sandbox).unwrap_or(loom_agent::SandboxMode::Bubblewrap),
            hidden,
            writable: a.sandbox_writable.clone(),
            limits: loom_agent::ResourceLimits {
                cpu_secs: a.limit_cpu_secs,
                memory_bytes: a.limit_memory_bytes,
                processes: a.limit_processes,
                file_size_bytes: a.limit_file_size_bytes,
            },
            ..loom_agent::SandboxConfig::default()
        }
    }

    /// The agents' push checks of `[agent]`.
    pub fn agent_push_checks(&self) -> loom_agent::PushChecks {
        loom_agent::PushChecks {
            protected_paths: self.agent.protected_paths.clone(),
            max_diff_bytes: self.agent.max_diff_bytes,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        let d = &self.dispatch;
        anyhow::ensure!(
            d.project_concurrency > 0 && d.global_concurrency > 0 && d.max_attempts > 0 && d.lease_secs > 0,
            "invalid configuration: dispatch.project_concurrency, global_concurrency, max_attempts and lease_secs \
             must be at least 1"
        );
        loom_agent::SandboxMode::parse(&self.agent.sandbox).map_err(|_| {
            anyhow::anyhow!(
                "invalid configuration: agent.sandbox must be \"bubblewrap\" or \"none\", not {:?}",
                self.agent.sandbox
            )
        })?;
        anyhow::ensure!(
            self.agent.protected_paths.iter().all(|g| !g.trim().is_empty()),
            "invalid configuration: agent.protected_paths must not hold an empty glob"
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "invalid configuration: log_format must be \"text\" or \"json\", not {:?}",
            self.log_format
        );
        Ok(())
    }

    /// The configuration as TOML with secrets redacted; whether an LLM key was found, and where,
    /// is a comment in `[llm]` (the key is not a configuration value).
    pub fn to_redacted_toml(&self) -> String {
        let text = toml::to_string_pretty(&self.redacted()).expect("config serialises");
        let note = match &self.llm_key {
            Some(k) => format!("# API key: **** (from {})\n", k.source),
            None => format!("# API key: none (${} is unset and no api_key_file is set)\n", self.llm.api_key_env),
        };
        text.replacen("[llm]\n", &format!("[llm]\n{note}"), 1)
    }

    /// The agents' LLM settings, key included.
    pub fn agent_llm(&self) -> loom_agent::LlmConfig {
        self.llm.agent(self.llm_key.as_ref())
    }

    fn redacted(&self) -> Self {
        let mut c = self.clone();
        c.database_url = c.database_url.as_deref().map(loom_store::redact_url);
        c.nats_url = c.nats_url.as_deref().map(loom_store::redact_url);
        c.api_key = c.api_key.as_ref().map(|_| "****".to_owned());
        c.database.service_token = c.database.service_token.as_ref().map(|_| "****".to_owned());
        c.bus = c.bus.redacted();
        c.connectors = c.connectors.redacted();
        c.llm_key = None;
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
            .field("bus", &c.bus)
            .field("dispatch", &c.dispatch)
            .field("llm", &c.llm)
            .field("agent", &c.agent)
            .field("connectors", &c.connectors)
            .field("llm_key", &self.llm_key.as_ref().map(|k| format!("**** (from {})", k.source)))
            .finish_non_exhaustive()
    }
}

/// The `LOOM_*` layer (see the module documentation for the mapping).
fn env() -> Env {
    Env::prefixed("LOOM_").filter_map(|key| {
        if NOT_KEYS.iter().any(|k| key.as_str().eq_ignore_ascii_case(k)) {
            return None;
        }
        Some(match key.as_str().to_ascii_lowercase().as_str() {
            "llm_url" => "llm.base_url".into(),
            "llm_model" => "llm.model".into(),
            other => other.replace("__", ".").into(),
        })
    })
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

    #[test]
    fn relative_paths_are_made_absolute_against_the_start_directory() {
        figment::Jail::expect_with(|jail| {
            let here = std::env::current_dir().unwrap();
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!((&c.data_dir, &c.personas_dir), (&here.join(".loom"), &here.join("personas")));
            assert_eq!(c.sqlite_path(), here.join(".loom/loom.sqlite"));
            jail.create_file("loom.toml", "[database]\nservice_ca = \"certs/ca.pem\"\n")?;
            let flags = Overrides { data_dir: Some("state/../data".into()), ..Overrides::default() };
            let c = Config::load(None, &flags).unwrap();
            assert!(c.data_dir.is_absolute() && c.data_dir.starts_with(&here), "{}", c.data_dir.display());
            assert_eq!(c.database.service_ca, Some(here.join("certs/ca.pem")));
            Ok(())
        });
    }

    #[test]
    fn the_llm_section_reads_its_key_from_env_or_file_and_never_shows_it() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LOOM_LLM_API_KEY", "sk-from-env-1234");
            jail.set_env("LOOM_LLM_URL", "http://llm.internal:8000/v1");
            jail.set_env("LOOM_LLM__MAX_TOKENS", "512");
            jail.create_file("loom.toml", "[llm]\nmodel = \"qwen\"\nrequest_timeout_secs = 60\n")?;
            let c = Config::load(None, &Overrides::default()).unwrap();
            let agent = c.agent_llm();
            assert_eq!(agent.base_url, "http://llm.internal:8000/v1");
            assert_eq!((agent.model.as_str(), agent.max_tokens), ("qwen", Some(512)));
            assert_eq!(agent.request_timeout, std::time::Duration::from_secs(60));
            assert_eq!(agent.api_key, Some(loom_agent::ApiKey::new("sk-from-env-1234")));
            let (shown, debug) = (c.to_redacted_toml(), format!("{c:?}"));
            for text in [&shown, &debug] {
                assert!(!text.contains("sk-from-env"), "{text}");
            }
            assert!(shown.contains("# API key: **** (from $LOOM_LLM_API_KEY)"), "{shown}");
            assert!(debug.contains("****"), "{debug}");

            jail.create_file("llm.key", "sk-from-file-5678\n")?;
            jail.set_env("LOOM_LLM__API_KEY_FILE", "llm.key");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.agent_llm().api_key, Some(loom_agent::ApiKey::new("sk-from-file-5678")), "the file wins");
            assert!(!c.to_redacted_toml().contains("sk-from-file"));

            jail.set_env("LOOM_LLM__API_KEY_FILE", "");
            jail.set_env("LOOM_LLM__API_KEY_ENV", "OPENAI_API_KEY");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.agent_llm().api_key, None, "$OPENAI_API_KEY is unset");
            assert!(c.to_redacted_toml().contains("# API key: none ($OPENAI_API_KEY is unset"));
            Ok(())
        });
    }

    #[test]
    fn bus_secrets_are_read_from_env_or_files_and_never_shown() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LOOM_BUS__USER", "agent-web");
            jail.set_env("LOOM_BUS__PASSWORD", "nats-secret-42");
            jail.set_env("LOOM_DATABASE__SERVICE_TOKEN", "db-token-0123456789abcdef");
            let c = Config::load(None, &Overrides::default()).unwrap();
            let creds = c.bus.credentials().unwrap();
            assert_eq!(
                creds,
                loom_bus::Credentials::UserPassword { user: "agent-web".into(), password: "nats-secret-42".into() }
            );
            assert!(c.database.token().unwrap().is_some());
            let (shown, debug) = (c.to_redacted_toml(), format!("{c:?}"));
            for text in [&shown, &debug] {
                assert!(!text.contains("nats-secret-42") && !text.contains("db-token-0123"), "{text}");
                assert!(text.contains("agent-web"), "{text}");
            }
            jail.create_file("nats.pw", "file-secret\n")?;
            jail.set_env("LOOM_BUS__PASSWORD", "");
            jail.set_env("LOOM_BUS__PASSWORD_FILE", "nats.pw");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(
                c.bus.credentials().unwrap(),
                loom_bus::Credentials::UserPassword { user: "agent-web".into(), password: "file-secret".into() }
            );
            jail.set_env("LOOM_BUS__TOKEN", "tok");
            let err = Config::load(None, &Overrides::default()).unwrap().bus.credentials().unwrap_err().to_string();
            assert!(err.contains("one kind of NATS credential"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn task_keys_each_service_needs() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, &Overrides::default()).unwrap();
            let nats = Some("nats://127.0.0.1:4222");
            let err = format!("{:#}", c.bus.bus_config(nats, Service::ControlPlane, &c.data_dir).unwrap_err());
            assert!(err.contains("set [bus] task_signing_key"), "{err}");
            let err = format!("{:#}", c.bus.bus_config(nats, Service::Agent, &c.data_dir).unwrap_err());
            assert!(err.contains("set [bus] task_verify_key"), "{err}");
            // On the embedded bus (one process) the process's own key does.
            assert!(c.bus.bus_config(None, Service::ControlPlane, &c.data_dir).unwrap().task_signing_key.is_some());

            // `loom up` makes its key once, keeps it (0600) and uses it again on the next start.
            let first = c.bus.bus_config(None, Service::Up, &c.data_dir).unwrap();
            let path = c.data_dir.join(bus::UP_SIGNING_KEY);
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            let again = c.bus.bus_config(None, Service::Up, &c.data_dir).unwrap();
            let id = |b: &loom_bus::BusConfig| b.task_signing_key.as_ref().unwrap().id().to_owned();
            assert_eq!(id(&first), id(&again));
            assert_eq!(first.task_verify_key, Some(first.task_signing_key.as_ref().unwrap().verify_key()));

            // An agent given the public key verifies with it and holds no signing key.
            let public = first.task_verify_key.as_ref().unwrap().to_pem();
            jail.create_file("verify.pem", &public)?;
            jail.set_env("LOOM_BUS__TASK_VERIFY_KEY", "verify.pem");
            let c = Config::load(None, &Overrides::default()).unwrap();
            let agent = c.bus.bus_config(None, Service::Agent, &c.data_dir).unwrap();
            assert!(agent.task_signing_key.is_none());
            assert_eq!(agent.task_verify_key, first.task_verify_key);
            jail.set_env("LOOM_BUS__TASK_SIGNING_KEY", "verify.pem");
            let c = Config::load(None, &Overrides::default()).unwrap();
            let err = format!("{:#}", c.bus.bus_config(nats, Service::ControlPlane, &c.data_dir).unwrap_err());
            assert!(err.contains("task_signing_key") && err.contains("PRIVATE KEY"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_metrics_listeners_default_to_loopback_and_are_configurable() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.database.service_metrics_addr, "127.0.0.1:9464".parse().unwrap());
            assert_eq!(c.agent.metrics_addr, None, "agents serve no listener unless asked");
            jail.create_file("loom.toml", "[database]\nservice_metrics_addr = \"0.0.0.0:9000\"\n")?;
            jail.set_env("LOOM_AGENT__METRICS_ADDR", "127.0.0.1:9465");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.database.service_metrics_addr, "0.0.0.0:9000".parse().unwrap());
            assert_eq!(c.agent.metrics_addr, Some("127.0.0.1:9465".parse().unwrap()));
            jail.set_env("LOOM_AGENT__METRICS_ADDR", "not an address");
            let err = format!("{:#}", Config::load(None, &Overrides::default()).unwrap_err());
            assert!(err.to_lowercase().contains("agent.metrics_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_agent_section_sets_the_sandbox_and_hides_loom_secrets() {
        figment::Jail::expect_with(|jail| {
            let here = std::env::current_dir().unwrap();
            jail.create_file("llm.key", "sk-1\n")?;
            jail.create_file("nats.pw", "pw\n")?;
            jail.create_file("db.token", "0123456789abcdef0123\n")?;
            jail.create_file(
                "loom.toml",
                "[llm]\napi_key_file = \"llm.key\"\n[bus]\nuser = \"u\"\npassword_file = \"nats.pw\"\n\
                 [database]\nservice_token_file = \"db.token\"\n[agent]\nsandbox_writable = [\"cache\"]\nmax_diff_bytes = 7\n\
                 protected_paths = [\"deploy/**\"]\n",
            )?;
            let c = Config::load(None, &Overrides::default()).unwrap();
            let sandbox = c.agent_sandbox();
            assert_eq!(sandbox.mode, loom_agent::SandboxMode::Bubblewrap, "on by default");
            let secrets = ["loom.toml", "llm.key", "nats.pw", "db.token"].map(|f| here.join(f));
            for hidden in std::iter::once(here.join(".loom")).chain(secrets) {
                assert!(sandbox.hidden.contains(&hidden), "{hidden:?} in {:?}", sandbox.hidden);
            }
            assert_eq!(sandbox.writable, [here.join("cache")]);
            assert_eq!(sandbox.limits, loom_agent::ResourceLimits::default());
            let checks = c.agent_push_checks();
            assert_eq!((checks.protected_paths, checks.max_diff_bytes), (vec!["deploy/**".to_owned()], 7));
            jail.set_env("LOOM_AGENT__SANDBOX", "none");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.agent_sandbox().mode, loom_agent::SandboxMode::None, "the opt-out");
            jail.set_env("LOOM_AGENT__SANDBOX", "docker");
            let err = format!("{:#}", Config::load(None, &Overrides::default()).unwrap_err());
            assert!(err.contains("agent.sandbox must be \"bubblewrap\" or \"none\""), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_llm_values_are_clear_errors() {
        let cases = [
            ("base_url = \"llm.internal:8000\"", "llm.base_url must be an http:// or https:// URL"),
            ("model = \" \"", "llm.model must not be empty"),
            ("api_key_env = \"LOOM_SECRET\"", "LOOM_* variables are configuration keys"),
            ("api_key_env = \"my-key\"", "is not an environment variable name"),
            ("api_key_file = \"missing.key\"", "missing.key cannot be read"),
            ("max_tokens = 0", "llm.max_tokens must be at least 1"),
            ("request_timeout_secs = 0", "request_timeout_secs"),
            ("api_key = \"sk-x\"", "unknown field: found `api_key`"),
        ];
        figment::Jail::expect_with(|jail| {
            for (line, want) in cases {
                jail.create_file("loom.toml", &format!("[llm]\n{line}\n"))?;
                let err = format!("{:#}", Config::load(None, &Overrides::default()).unwrap_err());
                assert!(err.contains(want), "{line}: {err}");
            }
            Ok(())
        });
    }
}
