//! An axum service whose handlers call `#[cached]` functions of several kinds, warms its static
//! data at startup with `warm()`, and mounts the cache's admin router (`/cache/stats`,
//! `/cache/warm`, `/cache/invalidate`, `/health`, `/metrics` and the live dashboard
//! `/cache/dashboard`; cache-core feature `http`). The service itself is in the examples library
//! (`examples::api`), where tests drive it too.
//!
//! ```text
//! cargo run --example api_endpoints                  # starts, sends itself traffic, prints a summary
//! cargo run --example api_endpoints -- --serve       # then keeps serving on API_LISTEN_ADDR
//!                                                    # (default 127.0.0.1:3000), sending itself
//!                                                    # light traffic so the dashboard moves
//! cargo run --example api_endpoints -- --serve-only  # as deployed (deploy/): the cache from the
//!                                                    # environment (Cache::from_env variables),
//!                                                    # warmed, then serving until SIGTERM
//! ```
//!
//! The demo uses `REDIS_URL` (default `redis://127.0.0.1:6379`); with no Redis it runs L1 only and
//! says so.

use examples::api::{
    app, builder_from_env, configure, listen_addr, request, traffic, traffic_path, FLAGS,
    ORIGIN_CALLS,
};
use examples::{connect_with, init_logging, Timings};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = args.iter().find(|a| !FLAGS.contains(&a.as_str())) {
        return Err(format!("unknown argument {unknown:?} (expected one of {FLAGS:?})").into());
    }
    if args.iter().any(|a| a == "--serve-only") {
        return serve_only().await;
    }
    let serve = args.iter().any(|a| a == "--serve");
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
        listen_addr()
    } else {
        "127.0.0.1:0".to_owned()
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

/// The service as deployed: the cache from the environment (nothing cleared: other replicas share
/// it), warmed before taking traffic, then serving on `API_LISTEN_ADDR` until SIGTERM or Ctrl-C,
/// letting requests in flight finish.
async fn serve_only() -> Result<(), Box<dyn std::error::Error>> {
    let cache = builder_from_env()?.build().await?;
    cache_core::set_default_cache(cache.clone()).map_err(|_| "a default cache was set already")?;
    let report = cache.warm().await;
    println!(
        "warm(): {} warmed, {} already hot, {} failed, in {} ms",
        report.warmed,
        report.already_hot,
        report.failed.len(),
        report.duration_ms
    );
    let listener = tokio::net::TcpListener::bind(listen_addr()).await?;
    println!("serving on http://{}", listener.local_addr()?);
    axum::serve(listener, app(cache))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// Resolves on SIGTERM (what Docker and Kubernetes send to stop a container; as PID 1 the process
/// has no default handler for it) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
