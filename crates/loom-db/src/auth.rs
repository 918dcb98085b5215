//! Client authentication by bearer token: the service checks `authorization: Bearer <token>` on
//! every `loom.db.v1` call (health and reflection stay open, so probes and `grpcurl list` work),
//! and [`GrpcStore`](crate::GrpcStore) sends it. Mutual TLS is the other way (`ServerTls`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::Error;

/// A shared secret between the database service and its clients. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// A token; at least 16 characters, no whitespace (it travels in an HTTP/2 header).
    pub fn new(token: impl AsRef<str>) -> Result<Token, Error> {
        let token = token.as_ref().trim();
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Config(
                "the database service token must be at least 16 printable characters without spaces".into(),
            ));
        }
        Ok(Token(token.into()))
    }

    /// Reads the token from a file (surrounding whitespace trimmed).
    pub fn from_file(path: &Path) -> Result<Token, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read the token file {}: {e}", path.display())))?;
        Token::new(text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Whether `offered` is this token, in time independent of where they differ (both are
    /// hashed first, so neither the length nor a prefix leaks).
    fn matches(&self, offered: &[u8]) -> bool {
        let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
        let (a, b) = (digest(self.0.as_bytes()), digest(offered));
        a.as_ref().iter().zip(b.as_ref()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn header(&self) -> MetadataValue<tonic::metadata::Ascii> {
        let mut value: MetadataValue<_> = format!("Bearer {}", self.0).parse().expect("a token is printable ASCII");
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(****)")
    }
}

/// The server side: refuses a call without the right bearer token (`UNAUTHENTICATED`); lets
/// everything through when no token is configured.
#[derive(Clone, Debug)]
pub struct CheckToken(pub(crate) Option<Token>);

impl CheckToken {
    /// Checks `token` on every call; lets everything through with `None`.
    pub fn new(token: Option<Token>) -> Self {
        Self(token)
    }
}

impl Interceptor for CheckToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else { return Ok(request) };
        let offered = request.metadata().get("authorization").map(|v| v.as_bytes());
        match offered.and_then(|v| v.strip_prefix(b"Bearer ")) {
            Some(t) if token.matches(t) => Ok(request),
            Some(_) => Err(Status::unauthenticated("the service refused the bearer token")),
            None => Err(Status::unauthenticated(
                "the service needs a bearer token (authorization: Bearer …; [database] / [connectors] service_token)",
            )),
        }
    }
}

/// The client side: adds the bearer token, when there is one, to every call.
#[derive(Clone, Debug)]
pub struct SendToken(pub(crate) Option<Token>);

impl SendToken {
    /// Sends `token`, when there is one, with every call.
    pub fn new(token: Option<Token>) -> Self {
        Self(token)
    }
}

impl Interceptor for SendToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.header());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_whole_and_never_shown() {
        let token = Token::new("0123456789abcdef-secret").unwrap();
        assert!(token.matches(b"0123456789abcdef-secret"));
        for wrong in [&b""[..], b"0123456789abcdef-secreT", b"0123456789abcdef-secret2", b"0123456789abcdef"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "Token(****)");
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in the middle").is_err());
    }
}
