//! Test harness: real `redis-server` (and `redis-sentinel`) processes on free loopback ports, in
//! temp dirs, killed on drop.
//!
//! A missing `redis-server` binary is a loud failure with instructions, never a skip.

pub mod acl;
pub mod browser;
pub mod chaos;
mod cluster;
pub mod contract;
mod load;
mod proxy;
pub mod sentinel;
mod server;
mod tls;

pub use cluster::RedisCluster;
pub use load::{LoadReport, Percentiles};
pub use proxy::{FaultProxy, ProxyMode};
pub use sentinel::RedisSentinels;
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

/// The kind the fault and guard tests use: its reads always go to Redis, so what Redis holds is
/// what callers see.
pub fn l2_only() -> cache_core::Kind {
    cache_core::Kind::new("l2only")
}

/// A builder for a cache on `url` under `prefix` with the [`l2_only`] kind (600 s TTL) besides
/// the built-in kinds (tracing installed).
pub fn l2_only_builder(url: impl Into<String>, prefix: &str) -> cache_core::CacheBuilder {
    init_tracing();
    cache_core::Cache::builder()
        .redis_url(url)
        .prefix(prefix)
        .kind(
            l2_only(),
            cache_core::KindConfig::new(std::time::Duration::from_secs(600))
                .tiers(cache_core::Tiers::L2Only),
        )
}

/// Waits until `cache`'s breaker is in state `want`; panics after `limit` with the breaker's
/// figures. Returns how long it took.
pub async fn wait_for_state(
    cache: &cache_core::Cache,
    want: cache_core::BreakerState,
    limit: std::time::Duration,
) -> std::time::Duration {
    let what = format!("breaker {want:?}");
    let t = std::time::Instant::now();
    loop {
        if cache.breaker_state() == Some(want) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{what}: not within {limit:?} (state {:?}, stats {:?})",
            cache.breaker_state(),
            cache.stats().breaker
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Runs the tests that hold it one at a time (a process-wide lock), so that the latency figures of
/// fault and load tests do not disturb each other on a 2-core machine.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
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

/// A gate that tasks wait at until the test opens it: it holds a loader (or any step) in flight
/// for exactly as long as the test needs, where a sleep would only be long enough "usually". A
/// task that must not wait for the held step can then be checked exactly: if it did wait, it would
/// never finish (bound it with `tokio::time::timeout`).
///
/// Clones are the same gate.
#[derive(Clone, Debug)]
pub struct Gate(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    /// A closed gate.
    pub fn closed() -> Self {
        Gate(std::sync::Arc::new(tokio::sync::watch::channel(false).0))
    }

    /// An open gate (to be closed later).
    pub fn opened() -> Self {
        let gate = Self::closed();
        gate.open();
        gate
    }

    /// Lets every waiting task through, and every later one.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Holds the tasks that arrive from now on.
    pub fn close(&self) {
        self.0.send_replace(false);
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`: the wait can only end with the gate open.
        let _ = rx.wait_for(|open| *open).await;
    }
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
