//! An axum service whose handlers call `#[cached]` functions of several kinds, warms its static
//! data at startup with `warm()`, and mounts the cache's admin router (`/cache/stats`,
//! `/cache/warm`, `/cache/invalidate`, `/health`, `/metrics`; cache-core feature `http`).
//!
//! ```text
//! cargo run --example api_endpoints             # starts, sends itself traffic, prints a summary
//! cargo run --example api_endpoints -- --serve  # then keeps serving on 127.0.0.1:3000
//! ```
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`); with no Redis it runs L1 only and says so.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cache_core::cached;
use examples::{connect, init_logging, Timings};
use serde::{Deserialize, Serialize};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Calls that reached an origin (database, upstream API, config store).
static ORIGIN_CALLS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rates {
    base: String,
    usd: f64,
    eur: f64,
}

/// Users from the database (30 ms), 10 minutes (`database_query`'s TTL).
#[cached(kind = "database_query", key = "user:{id}")]
async fn user(id: u64) -> Option<User> {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(30)).await;
    (id <= 1_000).then(|| User {
        id,
        name: format!("user {id}"),
    })
}

/// Exchange rates from an upstream API (120 ms), cached 60 s.
#[cached(kind = "api_response", ttl = 60, key = "rates:{base}")]
async fn rates(base: String) -> Result<Rates, String> {
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
async fn countries() -> Vec<String> {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    ["FR", "JP", "GB", "US", "BR"].map(String::from).to_vec()
}

/// Feature flags from a config store, warmed too.
#[cached(kind = "static_data", ttl = 300, warm)]
async fn feature_flags() -> Vec<(String, bool)> {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(150)).await;
    vec![("new_checkout".into(), true), ("dark_mode".into(), false)]
}

fn app(cache: cache_core::Cache) -> Router {
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

/// A minimal HTTP/1.1 client (one request per connection): status and body.
async fn request(
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let serve = std::env::args().any(|a| a == "--serve");
    let cache = connect("api-example").await?;
    cache_core::set_default_cache(cache.clone()).map_err(|_| "a default cache was set already")?;

    // Startup: warm the `warm` functions before taking traffic.
    let report = cache.warm().await;
    println!(
        "warm(): {} warmed, {} already hot, {} failed, in {} ms",
        report.warmed,
        report.already_hot,
        report.failed.len(),
        report.duration_ms
    );

    let listener = tokio::net::TcpListener::bind(if serve {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    })
    .await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(axum::serve(listener, app(cache.clone())).into_future());
    println!("serving on http://{addr}");

    println!("\n-- 600 requests: users (200 distinct), rates, countries, flags (first 12 shown; latency is the whole HTTP exchange, connect included)");
    let mut timings = Timings::default();
    for i in 0..600u64 {
        let path = match i % 6 {
            0..=2 => format!("/users/{}", 1 + (i * 37) % 200),
            3 => ["/rates/GBP", "/rates/JPY", "/rates/XXX"][(i as usize / 6) % 3].to_string(),
            4 => "/countries".to_string(),
            _ => "/flags".to_string(),
        };
        let before = ORIGIN_CALLS.load(Ordering::Relaxed);
        let started = Instant::now();
        let (status, _) = request(addr, "GET", &path).await?;
        let origin = ORIGIN_CALLS.load(Ordering::Relaxed) > before;
        let took = timings.record(started.elapsed(), origin);
        if i < 12 {
            println!(
                "GET {path:<12} {status} {took:>9.1?} {}",
                if origin { "origin" } else { "cached" }
            );
        }
    }
    println!(
        "(an Err from upstream, /rates/XXX, is never cached: it reaches the origin every time)"
    );

    let (status, body) = request(addr, "GET", "/health").await?;
    println!("\nGET /health → {status} {body}");
    let (_, metrics) = request(addr, "GET", "/metrics").await?;
    let hits: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("cache_hits_total") && !l.ends_with(" 0"))
        .collect();
    println!(
        "GET /metrics → {} lines, non-zero hit series:\n  {}",
        metrics.lines().count(),
        hits.join("\n  ")
    );
    let (_, stats) = request(addr, "GET", "/cache/stats").await?;
    println!("GET /cache/stats → {} bytes of JSON", stats.len());

    println!("\norigin calls: {}", ORIGIN_CALLS.load(Ordering::Relaxed));
    timings.summary(&cache);
    if serve {
        println!("\nserving on http://{addr} until Ctrl-C");
        server.await??;
    }
    Ok(())
}
