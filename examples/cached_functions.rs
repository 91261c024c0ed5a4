//! `#[cached]` on a free function and on a `&self` method, using the default cache set at startup.
//!
//! ```text
//! cargo run --example cached_functions
//! ```
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`). With no Redis there it still works,
//! L1-only, and says so.

use cache_core::{cached, Cache};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static RATE_API_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A slow external API (80 ms per call), cached for 60 s under the default key: the function's
/// path and a hash of `(from, to)`.
///
/// Concurrent callers of one pair share one call, and so its error: the error type is cloned to
/// each of them (an `Arc` shares one `io::Error`).
#[cached(kind = "api_response", ttl = 60)]
async fn exchange_rate(from: String, to: String) -> Result<f64, Arc<std::io::Error>> {
    RATE_API_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(80)).await;
    match (from.as_str(), to.as_str()) {
        ("EUR", "USD") => Ok(1.08),
        ("USD", "JPY") => Ok(151.2),
        _ => Err(Arc::new(std::io::Error::other(format!(
            "no rate for {from}/{to}"
        )))),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Product {
    id: u32,
    name: String,
    price_cents: u64,
}

/// A repository whose lookups hit a slow database (50 ms per query).
struct Catalog {
    queries: AtomicUsize,
}

impl Catalog {
    /// Cached under `product:{id}`; unknown ids are cached as `None` for 30 s so that repeated
    /// lookups of a missing product do not reach the database.
    #[cached(kind = "database_query", key = "product:{id}", none_ttl = 30, tags = ["products"])]
    async fn product(&self, id: u32) -> Option<Product> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        (id < 100).then(|| Product {
            id,
            name: format!("product #{id}"),
            price_cents: 999 + u64::from(id),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .redis_url(url)
        .prefix("cached-functions")
        .build()
        .await?;
    match cache.ping_l2().await {
        Ok(rtt) => println!("L2: Redis reachable (PING {rtt:?}): running L1 + L2"),
        Err(e) => println!("L2: Redis not reachable ({e}): running L1 only"),
    }
    // Start from a clean slate so the first calls are real misses.
    let _ = cache.clear_all().await;
    // `#[cached]` functions without `cache = ...` use the default cache.
    cache_core::set_default_cache(cache.clone()).map_err(|_| "a default cache was set already")?;

    println!("\n-- free function: exchange_rate(from, to), ttl 60 s");
    for round in 1..=3 {
        for (from, to) in [("EUR", "USD"), ("USD", "JPY"), ("EUR", "GBP")] {
            let before = RATE_API_CALLS.load(Ordering::Relaxed);
            let started = Instant::now();
            let rate = exchange_rate(from.into(), to.into()).await;
            let ran = RATE_API_CALLS.load(Ordering::Relaxed) > before;
            let rate = match rate {
                Ok(r) => format!("{r}"),
                Err(e) => format!("Err({e}), not cached"),
            };
            println!(
                "round {round}: {from}/{to} = {rate:<36} {:>9.3?}  {}",
                started.elapsed(),
                if ran { "body ran" } else { "cached" }
            );
        }
    }

    println!("\n-- method: Catalog::product(&self, id), key product:{{id}}, none_ttl 30 s");
    let catalog = Catalog {
        queries: AtomicUsize::new(0),
    };
    for round in 1..=2 {
        for id in [7, 42, 404] {
            let before = catalog.queries.load(Ordering::Relaxed);
            let started = Instant::now();
            let product = catalog.product(id).await;
            let ran = catalog.queries.load(Ordering::Relaxed) > before;
            let shown = product.map_or("none".to_string(), |p| {
                format!("{} ({} cents)", p.name, p.price_cents)
            });
            println!(
                "round {round}: product {id:<3} = {shown:<26} {:>9.3?}  {}",
                started.elapsed(),
                if ran { "body ran" } else { "cached" }
            );
        }
    }

    // Tag invalidation: every entry written with the "products" tag reloads.
    cache.invalidate_tag("products").await;
    let started = Instant::now();
    catalog.product(7).await;
    println!(
        "after invalidate_tag(\"products\"): product 7 reloaded in {:.3?}",
        started.elapsed()
    );

    let stats = cache.stats();
    println!(
        "\nexchange-rate API calls: {}, database queries: {}",
        RATE_API_CALLS.load(Ordering::Relaxed),
        catalog.queries.load(Ordering::Relaxed)
    );
    println!(
        "hit rate: {:.1}% (L1 hits {}, L2 hits {}, loader calls {})",
        stats.total.hit_rate * 100.0,
        stats.total.l1.hits,
        stats.total.l2.hits,
        stats.total.loader.calls
    );
    Ok(())
}
