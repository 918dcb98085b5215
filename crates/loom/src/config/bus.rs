//! `[bus]`: how each service authenticates to NATS (one kind of credential: user and password,
//! token, nkey seed or `.creds` file — secrets from a file or a `LOOM_BUS__*` variable, never
//! printed), TLS to the server, and the task keys: the control plane signs tasks with
//! `task_signing_key`, agents accept only tasks signed by `task_verify_key`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use loom_bus::{BusConfig, Credentials, SigningKey, Tls, VerifyKey};
use serde::{Deserialize, Serialize};

/// The file `loom up` keeps its task-signing key in, under `data_dir`.
pub const UP_SIGNING_KEY: &str = "task-signing.pem";

#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BusSection {
    /// NATS user (with `password` or `password_file`).
    pub user: Option<String>,
    /// Secret: set it through `LOOM_BUS__PASSWORD`, or use `password_file`.
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Secret: `LOOM_BUS__TOKEN`, or `token_file`.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A NATS `.creds` file (JWT and nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// CA (PEM) the NATS server's certificate must chain to.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for a server that verifies clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse a plaintext connection to NATS.
    pub require_tls: bool,
    /// Prefix of this service's reply subjects (default `_INBOX`; for `loom serve agent`,
    /// `_INBOX.agent-<project>`): the agent users of `deploy/nats/` may subscribe to their own
    /// prefix only.
    pub inbox_prefix: Option<String>,
    /// The control plane's Ed25519 task-signing key (PKCS#8 PEM). `loom up` makes one in
    /// `data_dir` when unset.
    pub task_signing_key: Option<PathBuf>,
    /// The public key (PEM) agents accept task signatures from; default: the public half of
    /// `task_signing_key`.
    pub task_verify_key: Option<PathBuf>,
}

/// What a process does with tasks, which decides the task keys it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `loom up`: signs and verifies, with a key it keeps in `data_dir` unless one is configured.
    Up,
    /// `loom serve control-plane`: signs; refuses to start without `task_signing_key`.
    ControlPlane,
    /// `loom serve agent`: verifies; refuses to start without a verify (or signing) key.
    Agent,
}

impl BusSection {
    /// The paths that are resolved against the start directory.
    pub(super) fn paths(&mut self) -> [(&'static str, &mut Option<PathBuf>); 9] {
        [
            ("bus.password_file", &mut self.password_file),
            ("bus.token_file", &mut self.token_file),
            ("bus.nkey_seed_file", &mut self.nkey_seed_file),
            ("bus.credentials_file", &mut self.credentials_file),
            ("bus.tls_ca", &mut self.tls_ca),
            ("bus.tls_cert", &mut self.tls_cert),
            ("bus.tls_key", &mut self.tls_key),
            ("bus.task_signing_key", &mut self.task_signing_key),
            ("bus.task_verify_key", &mut self.task_verify_key),
        ]
    }

    pub(super) fn redacted(&self) -> BusSection {
        let mut b = self.clone();
        b.password = b.password.map(|_| "****".into());
        b.token = b.token.map(|_| "****".into());
        b
    }

    /// The NATS credentials; more than one kind configured is an error.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let password = secret(self.password.as_deref(), self.password_file.as_deref(), "bus.password")?;
        let token = secret(self.token.as_deref(), self.token_file.as_deref(), "bus.token")?;
        let nkey = match &self.nkey_seed_file {
            Some(p) => Some(read_secret(p, "bus.nkey_seed_file")?),
            None => None,
        };
        let kinds = [
            self.user.is_some() || password.is_some(),
            token.is_some(),
            nkey.is_some(),
            self.credentials_file.is_some(),
        ];
        anyhow::ensure!(
            kinds.iter().filter(|k| **k).count() <= 1,
            "[bus]: configure one kind of NATS credential (user and password, token, nkey_seed_file or credentials_file)"
        );
        Ok(match (&self.user, password, token, nkey, &self.credentials_file) {
            (Some(user), Some(password), ..) => Credentials::UserPassword { user: user.clone(), password },
            (Some(_), None, ..) | (None, Some(_), ..) => {
                anyhow::bail!("[bus]: user and password (or password_file) go together")
            }
            (_, _, Some(token), ..) => Credentials::Token(token),
            (_, _, _, Some(seed), _) => Credentials::Nkey(seed),
            (_, _, _, _, Some(file)) => Credentials::CredsFile(file.clone()),
            _ => Credentials::None,
        })
    }

    /// The bus settings of `service` connecting to `url`: credentials, TLS and task keys.
    pub fn bus_config(&self, url: Option<&str>, service: Service, data_dir: &Path) -> anyhow::Result<BusConfig> {
        let mut config = BusConfig {
            credentials: self.credentials()?,
            tls: Tls {
                ca: self.tls_ca.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                required: self.require_tls,
            },
            ..BusConfig::default()
        };
        if let Some(url) = url {
            config.url = url.to_owned();
        }
        if let Some(prefix) = &self.inbox_prefix {
            config.inbox_prefix = prefix.clone();
        }
        let signing = match (&self.task_signing_key, service) {
            (Some(path), _) => Some(SigningKey::from_file(path)?),
            (None, Service::Up) => Some(up_signing_key(data_dir)?),
            // The embedded bus lives in this process: its own key is the only one that can sign.
            (None, _) if url.is_none() => Some(SigningKey::process()),
            (None, Service::ControlPlane) => anyhow::bail!(
                "the control plane signs every task it publishes: set [bus] task_signing_key \
                 (LOOM_BUS__TASK_SIGNING_KEY) to an Ed25519 PEM key; `loom certs dev` writes one"
            ),
            (None, Service::Agent) => None,
        };
        let verify = match (&self.task_verify_key, &signing) {
            (Some(path), _) => Some(VerifyKey::from_file(path)?),
            (None, Some(key)) => Some(key.verify_key()),
            (None, None) => anyhow::bail!(
                "an agent runs only tasks signed by the control plane: set [bus] task_verify_key \
                 (LOOM_BUS__TASK_VERIFY_KEY) to the control plane's public key (PEM)"
            ),
        };
        config.task_signing_key = if service == Service::Agent { None } else { signing };
        config.task_verify_key = Some(verify.expect("set above"));
        Ok(config)
    }
}

/// `loom up`'s key: read from `data_dir/task-signing.pem`, or made there (mode 0600) on first start.
fn up_signing_key(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = data_dir.join(UP_SIGNING_KEY);
    if path.exists() {
        return Ok(SigningKey::from_file(&path)?);
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let (pem, key) = SigningKey::generate_pem();
    crate::certs::write_private(&path, pem.as_bytes())?;
    tracing::info!(path = %path.display(), key = key.id(), "made a task-signing key");
    Ok(key)
}

fn secret(value: Option<&str>, file: Option<&Path>, name: &str) -> anyhow::Result<Option<String>> {
    match (value.filter(|v| !v.is_empty()), file) {
        (Some(_), Some(_)) => anyhow::bail!("[bus]: set {name} or {name}_file, not both"),
        (Some(v), None) => Ok(Some(v.to_owned())),
        (None, Some(f)) => Ok(Some(read_secret(f, &format!("{name}_file"))?)),
        (None, None) => Ok(None),
    }
}

fn read_secret(path: &Path, name: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read {}", path.display()))?;
    let text = text.trim();
    anyhow::ensure!(!text.is_empty(), "{name}: {} is empty", path.display());
    Ok(text.to_owned())
}

impl fmt::Debug for BusSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.redacted();
        f.debug_struct("BusSection")
            .field("user", &b.user)
            .field("password", &b.password)
            .field("password_file", &b.password_file)
            .field("token", &b.token)
            .field("token_file", &b.token_file)
            .field("nkey_seed_file", &b.nkey_seed_file)
            .field("credentials_file", &b.credentials_file)
            .field("tls_ca", &b.tls_ca)
            .field("tls_cert", &b.tls_cert)
            .field("tls_key", &b.tls_key)
            .field("require_tls", &b.require_tls)
            .field("inbox_prefix", &b.inbox_prefix)
            .field("task_signing_key", &b.task_signing_key)
            .field("task_verify_key", &b.task_verify_key)
            .finish()
    }
}
