//! The live dashboard: `GET /cache/dashboard` (one self-contained HTML page, embedded in the
//! binary) and `GET /cache/dashboard/data` (the JSON it polls about once a second).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page: styles, script and charts inline (no CDN, no web font), see `dashboard.html`.
const PAGE: &str = include_str!("dashboard.html");

/// Everything the page needs is inline; nothing else may load, and its only request is for its
/// data. Inline script and style are allowed (the page is ours; every value it shows is escaped
/// or set as text).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}
