//! The service of the `api_endpoints` example: axum handlers calling `#[cached]` functions of
//! several kinds, the cache's admin router and dashboard mounted beside them, and the traffic the
//! example sends itself. In the library so that tests (tests/dashboard.rs) drive the same app.
//!
//! The `#[cached]` functions use the default cache ([`cache_core::set_default_cache`]).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cache_core::{cached, CacheBuilder, Kind, KindConfig};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variable naming the address the service listens on (`--serve`, `--serve-only`).
pub const LISTEN_ADDR_VAR: &str = "API_LISTEN_ADDR";

/// Where the service listens without [`LISTEN_ADDR_VAR`].
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:3000";

/// The environment variables the example reads itself, besides the cache's
/// ([`CacheBuilder::ENV_VARS`], with `--serve-only`): where to listen, and the log filter
/// ([`crate::init_logging`]). The recipes of `deploy/` set no other (`tests/deploy_recipes.rs`).
pub const ENV_VARS: &[&str] = &[LISTEN_ADDR_VAR, "RUST_LOG"];

/// The example's command-line flags: `--serve` (the demo, then serving with light traffic of its
/// own) and `--serve-only` (as deployed: the cache from the environment, no demo, no traffic of
/// its own, no clearing, until SIGTERM).
pub const FLAGS: &[&str] = &["--serve", "--serve-only"];

/// The address to listen on: [`LISTEN_ADDR_VAR`], or [`DEFAULT_LISTEN_ADDR`].
pub fn listen_addr() -> String {
    std::env::var(LISTEN_ADDR_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned())
}

/// The cache of the deployed service: every setting from the environment
/// ([`CacheBuilder::from_env`]: `REDIS_URL`, `CACHE_L1_MAX_BYTES`, ...), the prefix `api-example`
/// unless `CACHE_PREFIX` says otherwise, and the service's kinds ([`configure`]).
///
/// # Errors
/// A malformed variable ([`cache_core::Error::Config`]).
pub fn builder_from_env() -> Result<CacheBuilder, cache_core::Error> {
    let b = CacheBuilder::from_env()?;
    let b = if std::env::var("CACHE_PREFIX").is_ok_and(|p| !p.trim().is_empty()) {
        b
    } else {
        b.prefix("api-example")
    };
    Ok(configure(b))
}

/// Calls that reached an origin (database, upstream API, config store).
pub static ORIGIN_CALLS: AtomicU64 = AtomicU64::new(0);

/// A user row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
}

/// Exchange rates of one currency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rates {
    /// The currency.
    pub base: String,
    /// In US dollars.
    pub usd: f64,
    /// In euros.
    pub eur: f64,
}

/// Users from the database (30 ms), 10 minutes (`database_query`'s TTL).
#[cached(kind = "database_query", key = "user:{id}")]
pub async fn user(id: u64) -> Option<User> {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(30)).await;
    (id <= 1_000).then(|| User {
        id,
        name: format!("user {id}"),
    })
}

/// Exchange rates from an upstream API (120 ms), cached 60 s.
#[cached(kind = "api_response", ttl = 60, key = "rates:{base}")]
pub async fn rates(base: String) -> Result<Rates, String> {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(120)).await;
    match base.as_str() {
        "GBP" => Ok(Rates {
            base,
            usd: 1.27,
            eur: 1.17,
        }),
        "JPY" => Ok(Rates {
            base,
            usd: 0.0066,
            eur: 0.0061,
        }),
        _ => Err(format!("unknown currency {base}")),
    }
}

/// Reference data that every request needs: warmed at startup (`warm`), kept two hours.
#[cached(kind = "static_data", warm)]
pub async fn countries() -> Vec<String> {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    ["FR", "JP", "GB", "US", "BR"].map(String::from).to_vec()
}

/// Feature flags from a config store, warmed too.
#[cached(kind = "static_data", ttl = 300, warm)]
pub async fn feature_flags() -> Vec<(String, bool)> {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(150)).await;
    vec![("new_checkout".into(), true), ("dark_mode".into(), false)]
}

/// The example's cache settings: its name on the dashboard and in metrics, what one load of a
/// kind costs (the exchange-rate API bills each call: its savings are money), and the hit rates
/// the kinds should reach (the dashboard and `cachectl doctor` say when they do not).
pub fn configure(b: CacheBuilder) -> CacheBuilder {
    b.name("api-example")
        .kind(
            Kind::API_RESPONSE,
            KindConfig::new(Duration::from_secs(60))
                .load_cost(0.002)
                .hit_rate_target(0.9),
        )
        .kind(
            Kind::DATABASE_QUERY,
            KindConfig::new(Duration::from_secs(600)).hit_rate_target(0.8),
        )
}

/// The service's router: `/users/{id}`, `/rates/{base}`, `/countries`, `/flags`, and the cache's
/// admin routes (`/cache/stats`, `/cache/dashboard`, `/health`, `/metrics`, ...).
pub fn app(cache: cache_core::Cache) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|Path(id): Path<u64>| async move {
                user(id).await.map(Json).ok_or(StatusCode::NOT_FOUND)
            }),
        )
        .route(
            "/rates/{base}",
            get(|Path(base): Path<String>| async move {
                rates(base)
                    .await
                    .map(Json)
                    .map_err(|e| (StatusCode::BAD_GATEWAY, e))
            }),
        )
        .route("/countries", get(|| async { Json(countries().await) }))
        .route("/flags", get(|| async { Json(feature_flags().await) }))
        .merge(cache_core::http::router(cache))
}

/// The `i`-th request of the example's traffic: half users (200 distinct), then exchange rates
/// (one currency unknown upstream), countries and feature flags.
pub fn traffic_path(i: u64) -> String {
    match i % 6 {
        0..=2 => format!("/users/{}", 1 + (i * 37) % 200),
        3 => ["/rates/GBP", "/rates/JPY", "/rates/XXX"][(i as usize / 6) % 3].to_string(),
        4 => "/countries".to_string(),
        _ => "/flags".to_string(),
    }
}

/// Sends the traffic of [`traffic_path`] to `addr` from `clients` concurrent clients, each
/// pausing `pause` between its requests, until `stop` is set. Returns how many requests were
/// answered (all of them: it stops at the first failed exchange and returns the error).
///
/// # Errors
/// The I/O error of the first request that failed.
pub async fn traffic(
    addr: std::net::SocketAddr,
    clients: u64,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, stop) = (next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                request(addr, "GET", &traffic_path(i)).await?;
                sent += 1;
                tokio::time::sleep(pause).await;
            }
            Ok::<u64, std::io::Error>(sent)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(std::io::Error::other)??;
    }
    Ok(total)
}

/// A minimal HTTP/1.1 client (one request per connection): status and body.
///
/// # Errors
/// The connection's I/O errors.
pub async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}
