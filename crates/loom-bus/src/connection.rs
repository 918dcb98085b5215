//! How a service authenticates to NATS and secures the connection: per-service credentials
//! (user and password, token, nkey seed or a `.creds` file) and TLS (a CA to trust, a client
//! certificate). Secrets are redacted in `Debug`.

use std::fmt;
use std::path::PathBuf;

use async_nats::ConnectOptions;

use crate::Error;

/// A service's NATS identity (see `deploy/nats/` for the users and their permissions).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Anonymous: only for a server without users (development).
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// An nkey seed (`SU…`): the server knows only the public key.
    Nkey(String),
    /// A `.creds` file (JWT and nkey seed; decentralised auth).
    CredsFile(PathBuf),
}

/// TLS to the server. Any field set (or `required`) makes the connection TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificate (PEM) the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for a server that verifies clients.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Refuse a plaintext connection.
    pub required: bool,
}

impl Credentials {
    /// A short description for logs, without the secret.
    pub fn describe(&self) -> String {
        match self {
            Credentials::None => "anonymous".into(),
            Credentials::UserPassword { user, .. } => format!("user {user:?}"),
            Credentials::Token(_) => "token".into(),
            Credentials::Nkey(_) => "nkey".into(),
            Credentials::CredsFile(p) => format!("credentials file {}", p.display()),
        }
    }

    pub(crate) async fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions, Error> {
        Ok(match self {
            Credentials::None => options,
            Credentials::UserPassword { user, password } => options.user_and_password(user.clone(), password.clone()),
            Credentials::Token(token) => options.token(token.clone()),
            Credentials::Nkey(seed) => options.nkey(seed.clone()),
            Credentials::CredsFile(path) => options
                .credentials_file(path)
                .await
                .map_err(|e| Error::invalid("credentials_file", format!("cannot read {}: {e}", path.display())))?,
        })
    }
}

impl Tls {
    pub(crate) fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, Error> {
        for path in [&self.ca, &self.cert, &self.key].into_iter().flatten() {
            if !path.is_file() {
                return Err(Error::invalid("tls", format!("{} is not a readable file", path.display())));
            }
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()),
            (None, None) => {}
            _ => return Err(Error::invalid("tls", "a client certificate needs both tls_cert and tls_key")),
        }
        let wanted = self.required || self.ca.is_some() || self.cert.is_some();
        Ok(if wanted { options.require_tls(true) } else { options })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, ****)"),
            Credentials::Token(_) => f.write_str("Token(****)"),
            Credentials::Nkey(_) => f.write_str("Nkey(****)"),
            other => f.write_str(&other.describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let shown = [
            Credentials::UserPassword { user: "agent-p".into(), password: "hunter2".into() },
            Credentials::Token("tok-secret".into()),
            Credentials::Nkey("SUACSECRET".into()),
        ]
        .map(|c| format!("{c:?}"))
        .join(" ");
        assert!(shown.contains("agent-p") && shown.contains("****"), "{shown}");
        for secret in ["hunter2", "tok-secret", "SUACSECRET"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
