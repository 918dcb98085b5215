//! Bearer API keys: generated with 256 bits of randomness, stored as SHA-256 hashes, checked on
//! every route against the role the route needs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use loom_domain::Role;
use sha2::{Digest, Sha256};

use crate::{Error, Shared};

/// A new secret key: `loom_` and 64 hex digits.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("loom_{}", hex(&bytes))
}

/// The stored form of a key. Keys are random, so a fast hash is enough (no dictionary to guess).
pub fn hash_key(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The role a request needs: reads are for viewers, changes for operators, keys for admins.
fn required_role(method: &Method, path: &str) -> Role {
    if path.starts_with("/api/v1/keys") {
        Role::Admin
    } else if method == Method::GET || method == Method::HEAD {
        Role::Viewer
    } else {
        Role::Operator
    }
}

/// Middleware: authenticates the bearer key and checks its role, then stores the `Caller`.
pub async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Result<Response, Error> {
    let role = if shared.config.insecure_no_auth {
        Role::Admin
    } else {
        let header = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let secret = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Error::Unauthorized("missing API key: send `Authorization: Bearer <key>`".into()))?;
        let key = shared
            .store
            .find_api_key(&hash_key(secret.trim()))
            .await?
            .ok_or_else(|| Error::Unauthorized("unknown or revoked API key".into()))?;
        key.role
    };
    // Inside `nest("/api/v1")` the URI is stripped of the prefix; judge by the original path.
    let path = match request.extensions().get::<axum::extract::OriginalUri>() {
        Some(original) => original.path().to_owned(),
        None => request.uri().path().to_owned(),
    };
    let needed = required_role(request.method(), &path);
    if !role.allows(needed) {
        return Err(Error::Forbidden(format!("this needs the {needed} role; the key has {role}")));
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashes_stable() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with("loom_") && a.len() == 69);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
    }

    #[test]
    fn roles_by_route() {
        assert_eq!(required_role(&Method::GET, "/api/v1/beads"), Role::Viewer);
        assert_eq!(required_role(&Method::POST, "/api/v1/beads"), Role::Operator);
        assert_eq!(required_role(&Method::GET, "/api/v1/keys"), Role::Admin);
    }
}
