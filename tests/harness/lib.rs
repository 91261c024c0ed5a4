//! Test harness: real `redis-server` processes on free loopback ports, in temp dirs, killed on drop.
//!
//! A missing `redis-server` binary is a loud failure with instructions, never a skip.

pub mod chaos;
mod cluster;
pub mod contract;
mod load;
mod proxy;
mod server;
mod tls;

pub use cluster::RedisCluster;
pub use load::{LoadReport, Percentiles};
pub use proxy::{FaultProxy, ProxyMode};
pub use server::{command_calls, RedisServer};
pub use tls::TlsRedis;

use std::sync::Once;

/// Installs a tracing subscriber once (honours `RUST_LOG`; quiet by default).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A cache on `server` under `prefix`, with the defaults (tracing installed).
pub async fn cache_on(server: &RedisServer, prefix: &str) -> cache_core::Cache {
    init_tracing();
    cache_core::Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .build()
        .await
        .expect("build cache")
}

/// A unique key prefix per test, so tests sharing a server never see each other's keys.
pub fn unique_prefix(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `f` every millisecond until it returns true; panics after `limit`. Returns how long it
/// took.
pub async fn within<F, Fut>(limit: std::time::Duration, what: &str, mut f: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = std::time::Instant::now();
    loop {
        if f().await {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}
