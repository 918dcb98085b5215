//! The UI's static files, embedded in the binary (`assets/`): served under
//! `/ui/assets/{file}?v={hash}` and cached for a year, since the hash changes with the content.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

/// The JS and CSS every page loads (the size budget covers these).
#[cfg(test)]
pub(crate) const PAGE_ASSETS: &[&str] = &["htmx.min.js", "app.js", "app.css"];

/// An embedded file's bytes.
#[cfg(test)]
pub(crate) fn bytes(name: &str) -> Option<Vec<u8>> {
    Assets::get(name).map(|f| f.data.into_owned())
}

/// `/ui/assets/{name}?v=…` for a page to link to.
pub(crate) fn url(name: &str) -> String {
    let version = Assets::get(name).map(|f| hex8(&f.metadata.sha256_hash())).unwrap_or_default();
    format!("/ui/assets/{name}?v={version}")
}

fn hex8(hash: &[u8]) -> String {
    hash.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let Some(asset) = Assets::get(&file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mime = match file.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
        ],
        asset.data.into_owned(),
    )
        .into_response()
}
