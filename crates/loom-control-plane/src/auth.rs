//! Bearer API keys: generated with 256 bits of randomness, stored as SHA-256 hashes, checked on
//! every route against the role the route needs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use loom_domain::Role;
use sha2::{Digest, Sha256};

use crate::audit::{Caller, Write};
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

/// Middleware: authenticates the bearer key and checks its role, stores the [`Caller`] in the
/// request, and writes every write request to the audit log (refused ones included).
pub async fn authorize(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // Inside `nest("/api/v1")` the URI is stripped of the prefix; judge by the original path.
    let path = match request.extensions().get::<axum::extract::OriginalUri>() {
        Some(original) => original.path().to_owned(),
        None => request.uri().path().to_owned(),
    };
    let method = request.method().clone();
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let header =
        request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (caller, response) = match authenticate(&shared, header.as_deref()).await {
        Err(e) => (None, e.into_response()),
        Ok(caller) => {
            let needed = required_role(&method, &path);
            let response = if caller.role.allows(needed) {
                request.extensions_mut().insert(caller.clone());
                next.run(request).await
            } else {
                Error::Forbidden(format!("this needs the {needed} role; the key has {}", caller.role)).into_response()
            };
            (Some(caller), response)
        }
    };
    if method != Method::GET && method != Method::HEAD {
        let route = route.unwrap_or_else(|| path.clone());
        let write = Write {
            method: method.as_str(),
            route: &route,
            path: &path,
            status: response.status().as_u16(),
            elapsed: started.elapsed(),
        };
        shared.audit.record(caller.as_ref(), &write).await;
    }
    response
}

/// The caller the request's `Authorization` header names.
async fn authenticate(shared: &Shared, header: Option<&str>) -> Result<Caller, Error> {
    if shared.config.insecure_no_auth {
        return Ok(Caller::anonymous());
    }
    let secret = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| Error::Unauthorized("missing API key: send `Authorization: Bearer <key>`".into()))?;
    let hash = hash_key(secret.trim());
    if let Some(caller) = shared.keys.get(&hash) {
        return Ok(caller);
    }
    let key = shared
        .store
        .find_api_key(&hash)
        .await?
        .ok_or_else(|| Error::Unauthorized("unknown or revoked API key".into()))?;
    let caller = Caller { key_id: key.id, key_name: key.name, role: key.role };
    shared.keys.put(hash, caller.clone());
    Ok(caller)
}

/// How long a key found in the store is trusted without asking it again. A key revoked through
/// this instance is forgotten at once; through another instance, it stops working here within
/// this time. Saves a store round trip on nearly every request.
pub(crate) const KEY_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Most keys remembered; past that the cache starts again empty (unknown keys are never kept, so
/// only real keys fill it).
const KEY_CACHE_MAX: usize = 1024;

/// API keys found lately, by hash.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    found: std::sync::Mutex<std::collections::HashMap<String, (Caller, std::time::Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Caller> {
        let found = self.found.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        found.get(hash).filter(|(_, at)| at.elapsed() < KEY_TTL).map(|(c, _)| c.clone())
    }

    fn put(&self, hash: String, caller: Caller) {
        let mut found = self.found.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if found.len() >= KEY_CACHE_MAX {
            found.clear();
        }
        found.insert(hash, (caller, std::time::Instant::now()));
    }

    /// Forgets every key (one was revoked).
    pub(crate) fn clear(&self) {
        self.found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
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
