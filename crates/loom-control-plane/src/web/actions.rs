//! The UI's writes. Each checks the session's CSRF token, then sends the matching `/api/v1`
//! request through the API router in-process with the session's key, so the API's role check,
//! validation and audit log decide and record it; then redirects back (303) or shows the API's
//! refusal.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::Web;
use super::session::{CsrfRefused, Session, check_csrf};
use super::view::FormData;

/// What the API answered.
struct Refused {
    status: StatusCode,
    message: String,
}

/// Sends one API request as the session's user.
async fn call(web: &Web, session: &Session, method: Method, path: &str, body: Option<Value>) -> Result<Value, Refused> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(key) = &session.key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let request = req.body(body).map_err(|e| Refused { status: StatusCode::BAD_REQUEST, message: e.to_string() })?;
    let response = web.api.clone().oneshot(request).await.unwrap_or_else(|never| match never {});
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 8 << 20).await.unwrap_or_default();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(Refused { status, message })
    }
}

fn refused(session: &Session, r: Refused, back: &str) -> Response {
    super::pages::error_page(session, r.status, &format!("Refused ({})", r.status.as_u16()), r.message, back)
}

/// Where to go after a write: the form's `next` when it is a UI path, else the board.
fn next(form: &FormData) -> String {
    match form.get("next") {
        // A path of this UI, in visible ASCII only (a valid `Location`, never another site).
        Some(n) if n.starts_with("/ui/") && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') => n.to_owned(),
        _ => "/ui/board".to_owned(),
    }
}

/// Parses the body and checks its CSRF token.
fn form_of(session: &Session, headers: &HeaderMap, body: &[u8]) -> Result<FormData, CsrfRefused> {
    let form = FormData::parse(body);
    check_csrf(session, headers, Some(&form))?;
    Ok(form)
}

fn done(result: Result<Value, Refused>, session: &Session, back: String) -> Response {
    match result {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(r) => refused(session, r, &back),
    }
}

fn text(form: &FormData, name: &str) -> String {
    form.get(name).unwrap_or_default().trim().to_owned()
}

fn list(form: &FormData, name: &str) -> Vec<String> {
    form.get(name).unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn priority(form: &FormData) -> Result<Option<i64>, Refused> {
    match form.get("priority").map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) => p.parse().map(Some).map_err(|_| Refused {
            status: StatusCode::BAD_REQUEST,
            message: format!("priority must be 0 to 3, got {p:?}"),
        }),
    }
}

/// `key=value` lines into the bead's context.
fn context(form: &FormData) -> Result<serde_json::Map<String, Value>, Refused> {
    let mut map = serde_json::Map::new();
    for line in form.get("context").unwrap_or_default().lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((k, v)) = line.split_once('=') else {
            return Err(Refused {
                status: StatusCode::BAD_REQUEST,
                message: format!("context line {line:?} is not key=value"),
            });
        };
        map.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
    }
    Ok(map)
}

/// `POST /ui/beads`: the create dialog.
pub(crate) async fn create(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match form_of(&session, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let back = next(&form);
    let request = (|| {
        let mut req = json!({
            "project_id": text(&form, "project_id"),
            "title": text(&form, "title"),
            "description": form.get("description").unwrap_or_default(),
            "tags": list(&form, "tags"),
            "blocked_by": list(&form, "blocked_by"),
            "context": context(&form)?,
        });
        if let Some(p) = priority(&form)? {
            req["priority"] = p.into();
        }
        if let Some(t) = form.get("type").filter(|t| !t.is_empty()) {
            req["type"] = t.into();
        }
        let assignee = text(&form, "assignee");
        if !assignee.is_empty() {
            req["assignee"] = assignee.into();
        }
        Ok(req)
    })();
    let result = match request {
        Ok(req) => call(&web, &session, Method::POST, "/api/v1/beads", Some(req)).await,
        Err(e) => Err(e),
    };
    done(result, &session, back)
}

/// `POST /ui/beads/{id}/edit`: the edit dialog (a PATCH naming the version it was shown).
pub(crate) async fn edit(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match form_of(&session, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let back = next(&form);
    let mut patch = json!({
        "title": text(&form, "title"),
        "description": form.get("description").unwrap_or_default(),
        "tags": list(&form, "tags"),
    });
    match priority(&form) {
        Ok(Some(p)) => patch["priority"] = p.into(),
        Ok(None) => {}
        Err(r) => return refused(&session, r, &back),
    }
    if let Some(t) = form.get("type").filter(|t| !t.is_empty()) {
        patch["type"] = t.into();
    }
    let assignee = text(&form, "assignee");
    patch["assignee"] = if assignee.is_empty() { Value::Null } else { assignee.into() };
    if let Some(v) = form.get("version").and_then(|v| v.parse::<i64>().ok()) {
        patch["version"] = v.into();
    }
    let path = format!("/api/v1/beads/{}", super::view::enc(&id));
    done(call(&web, &session, Method::PATCH, &path, Some(patch)).await, &session, back)
}

/// `POST /ui/beads/{id}/{close|reopen|redispatch}`.
pub(crate) async fn transition(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match form_of(&session, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let back = next(&form);
    let result = apply(&web, &session, &id, &action, None).await;
    done(result, &session, back)
}

async fn apply(web: &Web, session: &Session, id: &str, action: &str, priority: Option<i64>) -> Result<Value, Refused> {
    let id = super::view::enc(id);
    match action {
        "close" => {
            let body = json!({ "reason": format!("closed in the web UI by {}", session.name) });
            call(web, session, Method::POST, &format!("/api/v1/beads/{id}/close"), Some(body)).await
        }
        "reopen" | "redispatch" => {
            call(web, session, Method::POST, &format!("/api/v1/beads/{id}/{action}"), None).await
        }
        "priority" => {
            let body = json!({ "priority": priority });
            call(web, session, Method::PATCH, &format!("/api/v1/beads/{id}"), Some(body)).await
        }
        other => Err(Refused { status: StatusCode::NOT_FOUND, message: format!("no such action {other:?}") }),
    }
}

/// `POST /ui/bulk`: one action (`close`, `redispatch`, `priority` with `priority`) on every
/// selected bead (`ids`); reports each refusal.
pub(crate) async fn bulk(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match form_of(&session, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let back = next(&form);
    let action = text(&form, "action");
    let prio = match (action.as_str(), priority(&form)) {
        ("priority", Ok(None)) => {
            let r = Refused { status: StatusCode::BAD_REQUEST, message: "choose a priority".into() };
            return refused(&session, r, &back);
        }
        (_, Ok(p)) => p,
        (_, Err(r)) => return refused(&session, r, &back),
    };
    let ids: Vec<&str> = form.all("ids").collect();
    if ids.is_empty() {
        let r = Refused { status: StatusCode::BAD_REQUEST, message: "select at least one bead".into() };
        return refused(&session, r, &back);
    }
    let mut failures = Vec::new();
    let mut status = StatusCode::OK;
    for id in ids {
        if let Err(r) = apply(&web, &session, id, &action, prio).await {
            status = r.status;
            failures.push(format!("{id}: {}", r.message));
        }
    }
    if failures.is_empty() {
        Redirect::to(&back).into_response()
    } else {
        refused(&session, Refused { status, message: failures.join("; ") }, &back)
    }
}

/// `POST /ui/projects/{id}/{pause|resume}`.
pub(crate) async fn project(
    Extension(web): Extension<Arc<Web>>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match form_of(&session, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let back = next(&form);
    if action != "pause" && action != "resume" {
        let r = Refused { status: StatusCode::NOT_FOUND, message: format!("no such action {action:?}") };
        return refused(&session, r, &back);
    }
    let path = format!("/api/v1/projects/{}/{action}", super::view::enc(&id));
    done(call(&web, &session, Method::POST, &path, None).await, &session, back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_returns_only_to_a_path_of_the_ui() {
        let next_of = |v: &str| next(&FormData(vec![("next".into(), v.into())]));
        assert_eq!(next_of("/ui/beads/dm-1"), "/ui/beads/dm-1");
        assert_eq!(next_of("/ui/board?project=a&q=x%20y"), "/ui/board?project=a&q=x%20y");
        for bad in [
            "https://evil.example/ui/",
            "//evil.example",
            "/ui/\\evil",
            "/ui/a b",
            "/ui/\u{1}",
            "/api/v1/keys",
            "/ui/é",
        ] {
            assert_eq!(next_of(bad), "/ui/board", "{bad:?}");
        }
        assert_eq!(next(&FormData::default()), "/ui/board");
    }
}
