//! Quick start: a read-through cache in front of a slow "weather API".
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`). With no Redis there it still works, L1-only,
//! and says so.

use cache_core::{Cache, Kind};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Weather {
    city: String,
    celsius: f32,
    summary: String,
}

static API_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The slow origin: 80 ms per call.
async fn fetch_weather(city: &str) -> Result<Weather, std::io::Error> {
    API_CALLS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(80)).await;
    Ok(Weather {
        city: city.to_string(),
        celsius: 18.0 + city.len() as f32,
        summary: "partly cloudy".into(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .redis_url(url)
        .prefix("quickstart")
        .build()
        .await?;
    match cache.ping_l2().await {
        Ok(rtt) => println!("L2: Redis reachable (PING {rtt:?}): running L1 + L2"),
        Err(e) => println!("L2: Redis not reachable ({e}): running L1 only"),
    }
    // Start from a clean slate so the first read is a real miss.
    let _ = cache.clear_kind(Kind::API_RESPONSE).await;

    for round in 1..=3 {
        for city in ["paris", "tokyo", "lima"] {
            let started = Instant::now();
            let w = cache
                .get_or_load(Kind::API_RESPONSE, &format!("weather:{city}"), || {
                    fetch_weather(city)
                })
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "round {round}: {:<6} {:>5.1} °C  {:>9.1?}",
                w.city,
                w.celsius,
                started.elapsed()
            );
        }
    }

    // 100 concurrent callers of one cold key: one API call.
    let before = API_CALLS.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(Kind::API_RESPONSE, "weather:oslo", || fetch_weather("oslo"))
                    .await
                    .is_ok()
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await?);
    }
    println!(
        "100 concurrent callers of a cold key -> {} API call(s)",
        API_CALLS.load(Ordering::Relaxed) - before
    );

    cache.run_pending_tasks().await;
    let s = cache.stats();
    println!(
        "API calls: {}   hit rate: {:.1}%   L1 hits: {}   L2 hits: {}   L1 entries: {}",
        API_CALLS.load(Ordering::Relaxed),
        s.total.hit_rate * 100.0,
        s.total.l1.hits,
        s.total.l2.hits,
        s.total.l1.entries
    );
    println!("stats: {}", serde_json::to_string(&s.total)?);
    Ok(())
}
