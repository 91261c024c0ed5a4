//! L2 over TLS (`rediss://`, cache-core's `tls` feature) to a real redis-server with a certificate
//! from a private CA.

use cache_core::{BreakerState, Cache, Kind};
use cache_tests::{init_tracing, unique_prefix, TlsRedis};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_private_ca_trusted_reads_writes_and_subscribes_over_tls() {
    init_tracing();
    let redis = TlsRedis::start();
    let prefix = unique_prefix("tls");
    let build = || async {
        Cache::builder()
            .redis_url(redis.url())
            .redis_tls_root_cert(redis.ca_pem().as_bytes().to_vec())
            .prefix(&prefix)
            .build()
            .await
            .expect("build over TLS")
    };
    let (a, b) = (build().await, build().await);
    assert_eq!(a.breaker_state(), Some(BreakerState::Closed));
    assert!(a.backplane_subscribed(), "pub/sub over TLS");
    assert!(a.ping_l2().await.is_ok());

    a.set(Kind::API_RESPONSE, "greeting", "hello over TLS".to_string())
        .await;
    let got = b.get::<String>(Kind::API_RESPONSE, "greeting").await;
    assert_eq!(got.as_deref().map(String::as_str), Some("hello over TLS"));
    assert_eq!(b.stats().total.l2.hits, 1, "read from L2 through TLS");

    // The backplane works over TLS: an invalidation on A reaches B's L1.
    a.invalidate(Kind::API_RESPONSE, "greeting").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while b
        .get::<String>(Kind::API_RESPONSE, "greeting")
        .await
        .is_some()
    {
        assert!(std::time::Instant::now() < deadline, "B kept its copy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // And the data really is on the TLS server (the plain port sees it).
    let mut plain = redis.server.conn().await;
    a.set(Kind::API_RESPONSE, "k2", 7u32).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*k2"))
        .query_async(&mut plain)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_server_whose_ca_is_not_trusted_is_not_used() {
    init_tracing();
    let redis = TlsRedis::start();
    // No private CA given: the system roots do not trust the server's certificate.
    let cache = Cache::builder()
        .redis_url(redis.url())
        .prefix(unique_prefix("tls-untrusted"))
        .build()
        .await
        .expect("an unverifiable Redis leaves the cache L1-only, it does not fail the app");
    assert_eq!(cache.breaker_state(), Some(BreakerState::Open));
    assert!(cache.ping_l2().await.is_err());
    cache.set(Kind::API_RESPONSE, "k", 1u32).await;
    assert_eq!(
        cache.get::<u32>(Kind::API_RESPONSE, "k").await.as_deref(),
        Some(&1)
    );
    let mut plain = redis.server.conn().await;
    let n: u64 = redis::cmd("DBSIZE")
        .query_async(&mut plain)
        .await
        .expect("DBSIZE");
    assert_eq!(n, 0, "nothing may be written over an unverified connection");
}
