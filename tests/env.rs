//! `Cache::from_env` reads its settings from the environment. One test in its own binary, since the
//! environment is process-wide.

use cache_core::{Cache, Kind};
use cache_tests::{init_tracing, unique_prefix, RedisServer};
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_reads_url_prefix_budget_and_rejects_malformed_values() {
    init_tracing();
    let server = RedisServer::start();
    let prefix = unique_prefix("env");
    std::env::set_var("REDIS_URL", server.url());
    std::env::set_var("CACHE_PREFIX", &prefix);
    std::env::set_var("CACHE_L1_MAX_BYTES", "8M");
    std::env::set_var("CACHE_L2_TIMEOUT_MS", "80");
    std::env::set_var("CACHE_ENABLED", "true");
    let cache = Cache::from_env().await.unwrap();
    assert_eq!(cache.prefix(), prefix);
    assert_eq!(cache.stats().total.l1.max_bytes, 8 << 20);
    cache.set(Kind::API_RESPONSE, "k", 1u8).await;
    let mut conn = server.conn().await;
    let exists: bool = conn
        .exists(format!("{prefix}:v1:api_response:k"))
        .await
        .unwrap();
    assert!(exists, "from_env did not use REDIS_URL");

    std::env::set_var("CACHE_L1_MAX_BYTES", "a lot");
    let err = Cache::from_env().await.unwrap_err();
    assert!(err.to_string().contains("CACHE_L1_MAX_BYTES"), "{err}");
    std::env::set_var("CACHE_L1_MAX_BYTES", "8M");

    std::env::set_var("CACHE_ENABLED", "maybe");
    assert!(Cache::from_env()
        .await
        .unwrap_err()
        .to_string()
        .contains("CACHE_ENABLED"));
    std::env::set_var("CACHE_ENABLED", "false");
    let off = Cache::from_env().await.unwrap();
    assert!(
        off.get::<u8>(Kind::API_RESPONSE, "k").await.is_none(),
        "a disabled cache reads nothing"
    );

    std::env::set_var("CACHE_ENABLED", "true");
    std::env::set_var("CACHE_LOCK_WAIT_MS", "soon");
    let err = Cache::from_env().await.unwrap_err();
    assert!(err.to_string().contains("CACHE_LOCK_WAIT_MS"), "{err}");
    std::env::remove_var("CACHE_LOCK_WAIT_MS");
    // Parsed, then refused by `build()`: a jitter must be a fraction below 1.
    std::env::set_var("CACHE_TTL_JITTER", "2");
    assert!(Cache::from_env().await.is_err());
    std::env::set_var("CACHE_TTL_JITTER", "0.1");
    std::env::set_var("CACHE_STATS_REPORT_SECS", "0");
    assert!(Cache::from_env().await.is_ok());
    std::env::remove_var("CACHE_TTL_JITTER");
    std::env::remove_var("CACHE_STATS_REPORT_SECS");

    std::env::remove_var("REDIS_URL");
    let l1_only = Cache::from_env().await.unwrap();
    assert!(!l1_only.stats().l2_configured);
}
