//! Runnable examples of tiered-cache (`cargo run --example NAME`), and the little they share:
//! connecting (L1 + L2, or L1 only when Redis is not there), timing calls, and the closing summary
//! every example prints (hit rate and latency); and the `api_endpoints` example's service
//! ([`api`]), which tests drive too.

pub mod api;

use cache_core::Cache;
use std::time::Duration;

/// Logs to stderr at `RUST_LOG` (default `warn`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

/// A cache on `REDIS_URL` (default `redis://127.0.0.1:6379`) under `prefix`, starting empty; says
/// whether it runs with L2 or L1 only.
pub async fn connect(prefix: &str) -> Result<Cache, cache_core::Error> {
    connect_with(prefix, |b| b).await
}

/// [`connect`] with extra builder settings.
pub async fn connect_with(
    prefix: &str,
    configure: impl FnOnce(cache_core::CacheBuilder) -> cache_core::CacheBuilder,
) -> Result<Cache, cache_core::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = configure(Cache::builder().redis_url(url).prefix(prefix))
        .build()
        .await?;
    match cache.ping_l2().await {
        Ok(rtt) => println!("L2: Redis reachable (PING {rtt:.1?}): running L1 + L2"),
        Err(e) => println!(
            "L2: Redis not reachable ({e}): running L1 only. Until Redis is back, L1 entries live \
             at most 5 s (`unsynced_l1_ttl`): invalidations from other instances cannot arrive."
        ),
    }
    // Start from a clean slate so first reads are real misses.
    let _ = cache.clear_all().await;
    Ok(cache)
}

/// Another instance on the same Redis and prefix (as another process of the app would be), without
/// clearing anything.
pub async fn peer(prefix: &str) -> Result<Cache, cache_core::Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Cache::builder().redis_url(url).prefix(prefix).build().await
}

/// Call latencies, split by whether the origin ran.
#[derive(Default)]
pub struct Timings {
    cached: Vec<Duration>,
    origin: Vec<Duration>,
}

impl Timings {
    /// Records one call that took `took`; `origin` says whether the origin ran.
    pub fn record(&mut self, took: Duration, origin: bool) -> Duration {
        if origin {
            self.origin.push(took);
        } else {
            self.cached.push(took);
        }
        took
    }

    /// Prints the closing summary: calls, hit rate (this cache's stats) and latencies.
    pub fn summary(&self, cache: &Cache) {
        let s = cache.stats();
        println!("\n== summary");
        println!(
            "calls: {} served from cache, {} went to the origin",
            self.cached.len(),
            self.origin.len()
        );
        println!(
            "cache hit rate: {:.1}% (L1 hits {}, L2 hits {}, loader calls {})",
            s.total.hit_rate * 100.0,
            s.total.l1.hits,
            s.total.l2.hits,
            s.total.loader.calls
        );
        for (name, v) in [("cached", &self.cached), ("origin", &self.origin)] {
            if let Some((p50, p99)) = percentiles(v) {
                println!("latency {name}: p50 {p50:.1?}, p99 {p99:.1?}");
            }
        }
    }
}

fn percentiles(v: &[Duration]) -> Option<(Duration, Duration)> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some((at(0.5), at(0.99)))
}
