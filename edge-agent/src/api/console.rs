//! The LAN console: a static page for guards (cameras, live view), built into the binary.
//!
//! Its files are the only things served without a token besides `health`: they hold no data,
//! and every call the page makes carries the guard's token (or, for media, a signed URL). A
//! strict Content-Security-Policy lets the page load only its own scripts and talk only to
//! this origin.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::error::ApiError;

/// The console's files: path, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/console/",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "/console/console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/console.js"),
    ),
    (
        "/console/live.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/live.js"),
    ),
    (
        "/console/console.css",
        "text/css; charset=utf-8",
        include_str!("../../console/console.css"),
    ),
];

/// Scripts and styles from this origin only; media also from the player's blob: URLs.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; media-src 'self' blob:; connect-src 'self'; \
    form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Whether `path` is one of the console's (public) files, or the root that leads there.
pub fn is_public(path: &str) -> bool {
    path == "/" || FILES.iter().any(|(file, _, _)| *file == path)
}

/// `/`: the console.
pub async fn root() -> Redirect {
    Redirect::to("/console/")
}

/// One of the console's files.
pub async fn file(uri: axum::http::Uri) -> Result<Response, ApiError> {
    let (_, content_type, body) = FILES
        .iter()
        .find(|(file, _, _)| *file == uri.path())
        .ok_or_else(|| ApiError::not_found("no such console file"))?;
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
