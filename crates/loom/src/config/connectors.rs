//! The `[connectors]` section: where the connectors service runs (`loom serve connectors`), how
//! clients reach it (`service_url`; unset = in process, as under `loom up`), its bearer token,
//! and the key that seals connector secrets at rest (`encryption_key_file`: 32 bytes, raw or
//! base64; `loom up` creates `data_dir/connectors.key`). While rotating, the old key files go
//! in `previous_encryption_key_files`: what they sealed is re-sealed under the new key at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use loom_connectors::{Api, Client, ClientConfig, Connectors, Key, Keyring};
use loom_store::Store;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorsSection {
    /// The connectors service as `http://host:50052` or `https://…`; unset = in process.
    pub service_url: Option<String>,
    /// Where `loom serve connectors` listens (`--listen` overrides).
    pub service_addr: SocketAddr,
    /// Where `loom serve connectors` serves `/metrics` and the probes (`--metrics-addr`).
    pub service_metrics_addr: SocketAddr,
    /// The service's bearer token (secret: `LOOM_CONNECTORS__SERVICE_TOKEN` or the file).
    pub service_token: Option<String>,
    pub service_token_file: Option<PathBuf>,
    /// CA (PEM) of the service's certificate, for an `https://` `service_url`.
    pub service_ca: Option<PathBuf>,
    /// The key sealing connector secrets (32 bytes, raw or base64).
    pub encryption_key_file: Option<PathBuf>,
    /// Retired keys: what they sealed still opens, and is re-sealed under the current key.
    pub previous_encryption_key_files: Vec<PathBuf>,
    /// The LLM provider connector agents use when neither the bead's project (context key
    /// `llm_provider`) nor its persona names one; unset = the `[llm]` endpoint.
    pub llm_provider: Option<String>,
}

impl Default for ConnectorsSection {
    fn default() -> Self {
        Self {
            service_url: None,
            service_addr: ([127, 0, 0, 1], 50052).into(),
            service_metrics_addr: ([127, 0, 0, 1], 9465).into(),
            service_token: None,
            service_token_file: None,
            service_ca: None,
            encryption_key_file: None,
            previous_encryption_key_files: Vec::new(),
            llm_provider: None,
        }
    }
}

impl ConnectorsSection {
    /// The bearer token, from `service_token` or `service_token_file`.
    pub fn token(&self) -> anyhow::Result<Option<loom_db::Token>> {
        match (self.service_token.as_deref().filter(|t| !t.is_empty()), &self.service_token_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set connectors.service_token or connectors.service_token_file, not both")
            }
            (Some(t), None) => Ok(Some(loom_db::Token::new(t).context("connectors.service_token")?)),
            (None, Some(file)) => Ok(Some(loom_db::Token::from_file(file)?)),
            (None, None) => Ok(None),
        }
    }

    /// The secret-sealing keys. Without `encryption_key_file`, `default_file` is used — created
    /// (0600, 32 random bytes) when `create` and it does not exist.
    pub fn keyring(&self, default_file: &Path, create: bool) -> anyhow::Result<Keyring> {
        let file = match &self.encryption_key_file {
            Some(file) => file.clone(),
            None => {
                if create && !default_file.exists() {
                    write_new_key(default_file)?;
                }
                anyhow::ensure!(
                    default_file.exists(),
                    "the connectors service needs a key to seal secrets: set [connectors] encryption_key_file \
                     (32 random bytes, raw or base64; e.g. `head -c 32 /dev/urandom | base64 > connectors.key`)"
                );
                default_file.to_owned()
            }
        };
        let current = Key::from_file(&file)?;
        let retired =
            self.previous_encryption_key_files.iter().map(|f| Key::from_file(f)).collect::<Result<Vec<_>, _>>()?;
        Ok(Keyring::new(current, retired))
    }

    /// The paths of the section, for making them absolute.
    pub fn paths(&mut self) -> Vec<(&'static str, &mut Option<PathBuf>)> {
        vec![
            ("connectors.service_token_file", &mut self.service_token_file),
            ("connectors.service_ca", &mut self.service_ca),
            ("connectors.encryption_key_file", &mut self.encryption_key_file),
        ]
    }

    pub fn redacted(&self) -> Self {
        Self { service_token: self.service_token.as_ref().map(|_| "****".to_owned()), ..self.clone() }
    }

    /// The gRPC client of `service_url`, if set.
    pub fn client(&self) -> anyhow::Result<Option<Client>> {
        let Some(url) = &self.service_url else { return Ok(None) };
        let mut config = ClientConfig::new(url.clone());
        config.token = self.token()?;
        if let Some(ca) = &self.service_ca {
            config.tls = Some(loom_db::ClientTls::from_files(ca, None)?);
        }
        Ok(Some(Client::connect(config)?))
    }
}

/// The connectors the control plane and agents use: the remote service when `service_url` is
/// set, else the service in process over `store` (its background checks and deliveries run
/// until `shutdown`; its key under `data_dir` is created when missing).
pub async fn open(
    config: &crate::config::Config,
    store: Arc<dyn Store>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(Arc<dyn Api>, String)> {
    let section = &config.connectors;
    if let Some(client) = section.client()? {
        let what = format!("connectors service at {}", client.endpoint());
        return Ok((Arc::new(client), what));
    }
    let connectors = local(config, store, true).await?;
    let background = connectors.clone();
    tokio::spawn(async move { background.run(shutdown).await });
    Ok((Arc::new(connectors), "connectors in process".into()))
}

/// The in-process service over `store`, its secrets re-sealed under the current key.
pub async fn local(
    config: &crate::config::Config,
    store: Arc<dyn Store>,
    create_key: bool,
) -> anyhow::Result<Connectors> {
    let keys = config.connectors.keyring(&config.data_dir.join("connectors.key"), create_key)?;
    let connectors = Connectors::new(store, keys);
    connectors.rotate_keys().await.context("re-sealing connector secrets under the current key")?;
    Ok(connectors)
}

fn write_new_key(path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the connectors key {}", path.display()))?;
    writeln!(file, "{}", Key::generate_base64())?;
    Ok(())
}
