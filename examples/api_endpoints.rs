//! An axum service whose handlers call `#[cached]` functions of several kinds, warms its static
//! data at startup with `warm()`, and mounts the cache's admin router (`/cache/stats`,
//! `/cache/warm`, `/cache/invalidate`, `/health`, `/metrics` and the live dashboard
//! `/cache/dashboard`; cache-core feature `http`). The service itself is in the examples library
//! (`examples::api`), where tests drive it too.
//!
//! ```text
//! cargo run --example api_endpoints             # starts, sends itself traffic, prints a summary
//! cargo run --example api_endpoints -- --serve  # then keeps serving on 127.0.0.1:3000, sending
//!                                               # itself light traffic so the dashboard moves
//! ```
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`); with no Redis it runs L1 only and says so.

use examples::api::{app, configure, request, traffic, traffic_path, ORIGIN_CALLS};
use examples::{connect_with, init_logging, Timings};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let serve = std::env::args().any(|a| a == "--serve");
    let cache = connect_with("api-example", configure).await?;
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
    println!("dashboard: http://{addr}/cache/dashboard");

    println!("\n-- 600 requests: users (200 distinct), rates, countries, flags (first 12 shown; latency is the whole HTTP exchange, connect included)");
    let mut timings = Timings::default();
    for i in 0..600u64 {
        let path = traffic_path(i);
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
        // About 100 requests a second from two clients, until the process ends.
        tokio::spawn(traffic(
            addr,
            2,
            Duration::from_millis(20),
            Arc::new(AtomicBool::new(false)),
        ));
        println!("\nserving on http://{addr} until Ctrl-C, with light traffic");
        println!("dashboard: http://{addr}/cache/dashboard");
        server.await??;
    }
    Ok(())
}
