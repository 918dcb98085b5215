//! Login, logout, the session cookie and the CSRF check.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use loom_domain::Role;
use sha2::{Digest, Sha256};

use super::Web;
use super::view::FormData;
use crate::hash_key;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "loom_session";
/// A session lasts a working day at most (the browser drops the cookie then).
const MAX_AGE_SECS: u64 = 12 * 3600;

/// The logged-in user of a request.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The API key; `None` when authentication is off.
    pub key: Option<String>,
    pub name: String,
    pub role: Role,
    pub csrf: String,
}

impl Session {
    /// Whether the role may change beads and projects (what the API lets operators do).
    pub(crate) fn can_write(&self) -> bool {
        self.role.allows(Role::Operator)
    }
}

/// A request without a valid session: pages redirect to the login, fragments (htmx) get a 401
/// that tells htmx to go there.
pub(crate) struct LoginRequired {
    htmx: bool,
}

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        if self.htmx {
            let mut r = (StatusCode::UNAUTHORIZED, "log in again").into_response();
            r.headers_mut().insert("hx-redirect", HeaderValue::from_static("/ui/login"));
            r
        } else {
            Redirect::to("/ui/login").into_response()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let htmx = parts.headers.contains_key("hx-request");
        let Some(web) = parts.extensions.get::<Arc<Web>>().cloned() else {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "the web UI is not mounted").into_response());
        };
        match authenticate(&web, &parts.headers).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(LoginRequired { htmx }.into_response()),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// The session the request's cookie names, if it is valid.
async fn authenticate(web: &Web, headers: &HeaderMap) -> Result<Option<Session>, crate::Error> {
    if web.shared.config.insecure_no_auth {
        let csrf = token(&web.anonymous_secret, b"anonymous");
        return Ok(Some(Session { key: None, name: "anonymous".into(), role: Role::Admin, csrf }));
    }
    let Some(secret) = cookie(headers, COOKIE) else { return Ok(None) };
    session_for(web, secret).await
}

async fn session_for(web: &Web, secret: &str) -> Result<Option<Session>, crate::Error> {
    if !plausible_key(secret) {
        return Ok(None);
    }
    let Some(key) = web.shared.store.find_api_key(&hash_key(secret)).await? else { return Ok(None) };
    let csrf = token(secret.as_bytes(), b"csrf");
    Ok(Some(Session { key: Some(secret.to_owned()), name: key.name, role: key.role, csrf }))
}

/// A key as `generate_key` makes them (what a cookie value may be).
fn plausible_key(s: &str) -> bool {
    (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The per-session CSRF token: a hash of the session's secret, so only a page served to that
/// session knows it, and any control plane instance derives the same one.
fn token(secret: &[u8], purpose: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"loom-web-");
    h.update(purpose);
    h.update([0]);
    h.update(secret);
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// Constant-time equality of two tokens.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A write refused before it reached the API: cross-site, or without the session's CSRF token.
#[derive(Debug)]
pub(crate) struct CsrfRefused(&'static str);

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, self.0).into_response()
    }
}

/// Refuses a write whose CSRF token (form field `csrf`, else header `X-CSRF-Token`) is not the
/// session's, or that a browser says came from another site.
pub(crate) fn check_csrf(session: &Session, headers: &HeaderMap, form: Option<&FormData>) -> Result<(), CsrfRefused> {
    if cross_site(headers) {
        return Err(CsrfRefused("cross-site request refused"));
    }
    let given = form
        .and_then(|f| f.get("csrf"))
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    if same(given, &session.csrf) {
        Ok(())
    } else {
        Err(CsrfRefused("missing or wrong CSRF token: reload the page and try again"))
    }
}

/// A request a browser marks as coming from another site (`Sec-Fetch-Site`), or whose `Origin`
/// is not this host.
fn cross_site(headers: &HeaderMap) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "cross-site") {
        return true;
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, rest)| rest) != Some(host),
        _ => false,
    }
}

#[derive(Template)]
#[template(path = "web/login.html")]
struct LoginPage {
    css: String,
    error: Option<String>,
}

fn login_html(error: Option<String>) -> Html<String> {
    let page = LoginPage { css: super::assets::url("app.css"), error };
    Html(page.render().unwrap_or_else(|e| format!("template error: {e}")))
}

pub(crate) async fn login_page(Extension(web): Extension<Arc<Web>>) -> Response {
    if web.shared.config.insecure_no_auth {
        return Redirect::to("/ui/board").into_response();
    }
    login_html(None).into_response()
}

/// `POST /ui/login` with the form field `key`: on a valid key, sets the session cookie.
pub(crate) async fn login(
    Extension(web): Extension<Arc<Web>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    let form = FormData::parse(&body);
    let key = form.get("key").unwrap_or_default().trim().to_owned();
    match session_for(&web, &key).await {
        Ok(Some(_)) => {
            // `Secure` when the browser came over HTTPS (a TLS-terminating proxy says so).
            let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
            let secure = if https { "; Secure" } else { "" };
            let cookie = format!("{COOKIE}={key}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECS}{secure}");
            let mut r = Redirect::to("/ui/board").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(None) => {
            tracing::warn!(target: "audit", "web UI login refused: unknown or revoked API key");
            let mut r = login_html(Some("That key is unknown or revoked.".into())).into_response();
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
        Err(e) => {
            let mut r = login_html(Some(format!("Cannot check the key now: {e}"))).into_response();
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    }
}

/// `POST /ui/logout`: drops the cookie.
pub(crate) async fn logout(session: Session, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let form = FormData::parse(&body);
    if let Err(r) = check_csrf(&session, &headers, Some(&form)) {
        return r.into_response();
    }
    let mut r = Redirect::to("/ui/login").into_response();
    let clear = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = headers(&[("cookie", "a=1; loom_session=loom_abc"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("loom_abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn csrf_needs_the_sessions_token_from_this_site() {
        let s = Session { key: Some("k".into()), name: "n".into(), role: Role::Operator, csrf: token(b"k", b"csrf") };
        let ok = FormData(vec![("csrf".into(), s.csrf.clone())]);
        let wrong = FormData(vec![("csrf".into(), token(b"other", b"csrf"))]);
        let same_site = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]);
        assert!(check_csrf(&s, &same_site, Some(&ok)).is_ok());
        assert!(check_csrf(&s, &same_site, Some(&wrong)).is_err());
        assert!(check_csrf(&s, &same_site, None).is_err());
        let header_token = headers(&[("x-csrf-token", &s.csrf)]);
        assert!(check_csrf(&s, &header_token, None).is_ok());
        let evil = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]);
        assert!(check_csrf(&s, &evil, Some(&ok)).is_err());
        let fetch = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(check_csrf(&s, &fetch, Some(&ok)).is_err());
    }

    #[test]
    fn only_key_shaped_cookies_are_looked_up() {
        assert!(plausible_key(&crate::generate_key()));
        assert!(!plausible_key("") && !plausible_key("a b") && !plausible_key("x\"; y"));
    }
}
