//! The web UI at `/` (pages under `/ui/`): server-rendered HTML (askama templates under
//! `templates/web/`), htmx and one small script (`assets/`, embedded with rust-embed), and one
//! SSE connection per page (`/ui/live`) that says "this changed" so the page re-fetches its
//! fragment.
//!
//! Invariants:
//! - Reads go to the store; every write goes through the `/api/v1` router in-process with the
//!   session's key as its bearer key, so the API's role checks, validation and audit log apply to
//!   the UI exactly as to any client (a viewer's write is refused there, not only hidden here).
//! - A session is an HttpOnly, `SameSite=Strict` cookie (`Path=/ui`) holding the API key the user
//!   logged in with; every request checks it against the store (a revoked key ends the session).
//!   Every POST but the login carries the session's CSRF token (form field `csrf` or header
//!   `X-CSRF-Token`), compared in constant time, and a cross-site `Origin`/`Sec-Fetch-Site` is refused.
//! - Every response carries a strict Content-Security-Policy: scripts and styles only from this
//!   origin's files, no inline script or style, no framing. Output is escaped by askama; bead
//!   descriptions are Markdown rendered with raw HTML shown as text and unsafe link schemes dropped.
//! - The live stream coalesces: however many events a burst holds, a page gets at most one
//!   `changed` message per [`live::COALESCE`].

mod actions;
mod assets;
mod graph;
mod live;
mod markdown;
mod pages;
mod session;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::Shared;

/// What the UI's handlers share: the control plane's state and the in-process `/api/v1` router
/// writes go through.
pub(crate) struct Web {
    pub shared: Arc<Shared>,
    pub api: Router,
    /// Keys the CSRF token when authentication is off (no key to derive it from).
    pub anonymous_secret: [u8; 32],
}

/// The CSP of every UI response.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes; `api` is the `/api/v1` router that writes are sent to (in-process).
pub(crate) fn router(shared: Arc<Shared>, api: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    let api = Router::new().nest("/api/v1", api).with_state(shared.clone());
    let web = Arc::new(Web { shared, api, anonymous_secret: rand::random() });
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/board") }))
        .route("/ui", get(|| async { Redirect::to("/ui/board") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/board") }))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/board", get(pages::board))
        .route("/ui/board/columns", get(pages::board_columns))
        .route("/ui/list", get(pages::list))
        .route("/ui/list/rows", get(pages::list_rows))
        .route("/ui/beads", post(actions::create))
        .route("/ui/beads/{id}", get(pages::bead))
        .route("/ui/beads/{id}/panel", get(pages::bead_panel))
        .route("/ui/beads/{id}/edit", post(actions::edit))
        .route("/ui/beads/{id}/{action}", post(actions::transition))
        .route("/ui/bulk", post(actions::bulk))
        .route("/ui/projects", get(pages::projects))
        .route("/ui/projects/panel", get(pages::projects_panel))
        .route("/ui/projects/{id}/{action}", post(actions::project))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/agents/panel", get(pages::agents_panel))
        .route("/ui/events", get(pages::events))
        .route("/ui/events/panel", get(pages::events_panel))
        .route("/ui/live", get(live::stream))
        .layer(axum::Extension(web))
        .layer(axum::middleware::map_response(secure_headers))
}

/// The security headers of every UI response.
async fn secure_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    /// The budget of the JS and CSS a page loads, gzipped.
    const BUDGET: usize = 100 * 1024;

    #[test]
    fn page_js_and_css_fit_the_gzipped_budget() {
        let mut total = 0;
        for name in super::assets::PAGE_ASSETS {
            let bytes = super::assets::bytes(name).expect("the asset is embedded");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&bytes).unwrap();
            let size = gz.finish().unwrap().len();
            println!("{name}: {} bytes, {size} gzipped", bytes.len());
            total += size;
        }
        println!("JS + CSS: {total} bytes gzipped (budget {BUDGET})");
        assert!(total <= BUDGET, "the page's JS + CSS is {total} bytes gzipped, over the {BUDGET} budget");
    }
}
