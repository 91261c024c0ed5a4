//! Admin HTTP endpoints as an [axum](https://docs.rs/axum) router (feature `http`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /cache/stats` | the [`Stats`] snapshot (since start) as JSON |
//! | `GET /cache/rates` | the same figures over the last 1, 5 and 15 minutes ([`Rates`](crate::stats::Rates)) as JSON |
//! | `GET /cache/recommendations` | [`Cache::recommendations`] as JSON |
//! | `POST /cache/warm` | runs [`Cache::warm`], answers the [`WarmReport`] as JSON |
//! | `POST /cache/invalidate` | body `{"kind": "...", "key": "..."}` or `{"tag": "..."}`; 400 on anything else |
//! | `GET /health` | 200 with the breaker and backplane states (`degraded` while the breaker is half-open, the backplane is down or Redis refuses writes for lack of memory); 503 while the breaker is open |
//! | `GET /metrics` | Prometheus text ([`Cache::prometheus_text`]) |
//! | `GET /cache/dashboard` | a live dashboard: one self-contained HTML page (no CDN, works offline) refreshing every second |
//! | `GET /cache/dashboard/data` | what the dashboard shows, as JSON: `stats`, `rates` (1, 5, 15 min), `history` (per second, 15 min; `?since=T_MS`: only the points after `T_MS`), `instances` (every instance reporting under the prefix), `recommendations` |
//!
//! Mount it into the application's router, behind whatever authentication the application uses for
//! admin routes (these endpoints can invalidate entries and trigger loads):
//!
//! ```no_run
//! # async fn run(cache: cache_core::Cache) -> std::io::Result<()> {
//! // On its own port:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! cache_core::http::serve(listener, cache).await
//! # }
//! ```
//!
//! `/health` describes L2: while the breaker is open the cache still answers from L1 and loaders,
//! so use it for alerting or as a readiness signal only if losing Redis should take the instance
//! out of rotation.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

mod dashboard;

use crate::breaker::BreakerState;
use crate::metrics::PROMETHEUS_CONTENT_TYPE;
use crate::{Cache, Stats, WarmReport};

/// The admin router for `cache` (see the module documentation for the routes).
pub fn router(cache: Cache) -> Router {
    Router::new()
        .route("/cache/stats", get(stats))
        .route("/cache/rates", get(rates))
        .route("/cache/recommendations", get(recommendations))
        .route("/cache/warm", post(warm))
        .route("/cache/invalidate", post(invalidate))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(cache.clone())
        .merge(dashboard::routes(cache))
}

/// Serves [`router`] on `listener` until the listener fails.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve(listener: tokio::net::TcpListener, cache: Cache) -> std::io::Result<()> {
    axum::serve(listener, router(cache)).await
}

async fn stats(State(cache): State<Cache>) -> Json<Stats> {
    Json(cache.stats())
}

async fn rates(State(cache): State<Cache>) -> Json<crate::stats::Rates> {
    Json(cache.rates())
}

async fn recommendations(State(cache): State<Cache>) -> Json<Vec<crate::admin::Recommendation>> {
    Json(cache.recommendations())
}

async fn warm(State(cache): State<Cache>) -> Json<WarmReport> {
    Json(cache.warm().await)
}

/// The body of `POST /cache/invalidate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateRequest {
    kind: Option<String>,
    key: Option<String>,
    tag: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(ErrorBody { error: msg.into() }),
    )
        .into_response()
}

async fn invalidate(State(cache): State<Cache>, body: Bytes) -> Response {
    // Parsed by hand so that every malformed body is a 400 (axum's `Json` answers 415 or 422).
    let req: InvalidateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid JSON body: {e}")),
    };
    match req {
        InvalidateRequest {
            kind: Some(kind),
            key: Some(key),
            tag: None,
        } => {
            if !crate::key::is_valid_name(&kind) {
                return bad_request(
                    "kind must be 1-64 ASCII letters, digits, '_', '-' or '.'".to_owned(),
                );
            }
            if key.is_empty() {
                return bad_request("key must not be empty");
            }
            cache.invalidate(kind.as_str(), &key).await;
            Json(serde_json::json!({ "invalidated": { "kind": kind, "key": key } })).into_response()
        }
        InvalidateRequest {
            kind: None,
            key: None,
            tag: Some(tag),
        } => {
            if tag.is_empty() {
                return bad_request("tag must not be empty");
            }
            cache.invalidate_tag(&tag).await;
            Json(serde_json::json!({ "invalidated": { "tag": tag } })).into_response()
        }
        _ => bad_request(r#"expected {"kind": ..., "key": ...} or {"tag": ...}"#),
    }
}

/// The body of `GET /health`.
#[derive(Serialize)]
struct Health {
    /// `ok`, `degraded` (breaker half-open, backplane down, Redis refusing writes for lack of
    /// memory, or commands refused by the ACL) or `l2_unavailable` (breaker open).
    status: &'static str,
    l2_configured: bool,
    l2_refusing_writes: bool,
    /// The commands Redis refused for lack of an ACL permission (`NOPERM`).
    l2_acl_refused: Vec<String>,
    breaker: Option<BreakerState>,
    backplane_subscribed: Option<bool>,
}

async fn health(State(cache): State<Cache>) -> Response {
    let s = cache.stats();
    let breaker = s.breaker.as_ref().map(|b| b.state);
    let backplane_subscribed = s.backplane.as_ref().map(|b| b.subscribed);
    let (code, status) = match breaker {
        Some(BreakerState::Open) => (StatusCode::SERVICE_UNAVAILABLE, "l2_unavailable"),
        Some(BreakerState::HalfOpen) => (StatusCode::OK, "degraded"),
        _ if backplane_subscribed == Some(false) => (StatusCode::OK, "degraded"),
        // Reads go on, but nothing is written back and invalidations fall back to deletes.
        _ if s.l2_refusing_writes => (StatusCode::OK, "degraded"),
        // A configuration error: what the user may not run reads as a miss or is not written.
        _ if !s.l2_acl_refused.is_empty() => (StatusCode::OK, "degraded"),
        _ => (StatusCode::OK, "ok"),
    };
    let body = Health {
        status,
        l2_configured: s.l2_configured,
        l2_refusing_writes: s.l2_refusing_writes,
        l2_acl_refused: s.l2_acl_refused,
        breaker,
        backplane_subscribed,
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(cache): State<Cache>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        cache.prometheus_text(),
    )
        .into_response()
}
