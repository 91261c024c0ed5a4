//! What the stats say about a cache against a real Redis: why each miss missed (per tier and
//! kind), the windows over the last minutes, the per-second history, and what the cache saved.

use cache_core::{Cache, Kind, KindConfig};
use cache_tests::{init_tracing, l2_only, l2_only_builder, unique_prefix, within, RedisServer};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KIND: &str = "obs";

async fn loaded(cache: &Cache, kind: &str, key: &str, v: u64) -> Arc<u64> {
    cache
        .get_or_load(kind, key, || async move { Ok::<_, std::io::Error>(v) })
        .await
        .expect("load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_say_why_per_tier_absent_rejected_mismatch_and_expired() {
    init_tracing();
    let server = RedisServer::start();
    let prefix = unique_prefix("obs-reasons");
    let build = || {
        Cache::builder()
            .redis_url(server.url())
            .prefix(&prefix)
            .fail_safe_grace(Duration::from_secs(60))
            .kind(Kind::new(KIND), KindConfig::new(Duration::from_secs(600)))
            .kind(
                Kind::new("short"),
                KindConfig::new(Duration::from_millis(300)),
            )
            .build()
    };
    let (a, b) = (build().await.expect("a"), build().await.expect("b"));

    // Never stored: absent in both tiers.
    loaded(&a, KIND, "k1", 1).await;
    let s = a.stats().kinds[KIND].clone();
    assert_eq!(s.l1.miss_reasons.absent, 1, "{s:?}");
    assert_eq!(s.l2.miss_reasons.absent, 1, "{s:?}");

    // Invalidated: L1 removed it (rejected), L2 holds a tombstone (rejected).
    a.invalidate(KIND, "k1").await;
    loaded(&a, KIND, "k1", 2).await;
    let s = a.stats().kinds[KIND].clone();
    assert_eq!(s.l1.miss_reasons.rejected, 1, "{:?}", s.l1.miss_reasons);
    assert_eq!(s.l2.miss_reasons.rejected, 1, "{:?}", s.l2.miss_reasons);

    // Stored as another type: a mismatch in L1 (this instance) and in L2 (the other one).
    let _: Arc<String> = a
        .get_or_load(KIND, "k1", || async {
            Ok::<_, std::io::Error>("x".to_owned())
        })
        .await
        .expect("load");
    assert_eq!(a.stats().kinds[KIND].l1.miss_reasons.mismatch, 1);
    let _: Option<Arc<Vec<u8>>> = b.get(KIND, "k1").await;
    assert_eq!(b.stats().kinds[KIND].l2.miss_reasons.mismatch, 1);

    // Past its TTL (kept for the fail-safe grace): expired in both tiers, and the time from
    // the write to the re-request is recorded.
    loaded(&a, "short", "s", 1).await;
    // B's L1 holds it too.
    let _ = loaded(&b, "short", "s", 1).await;
    // Time has to pass for a TTL to end (nothing to wait on instead).
    tokio::time::sleep(Duration::from_millis(400)).await;
    loaded(&a, "short", "s", 2).await;
    let s = a.stats().kinds["short"].clone();
    assert_eq!(s.l1.miss_reasons.expired, 1, "{:?}", s.l1.miss_reasons);
    assert_eq!(s.l2.miss_reasons.expired, 1, "{:?}", s.l2.miss_reasons);
    assert!(
        s.reread_after_expiry.count >= 1 && s.reread_after_expiry.p50_us >= 300_000.0,
        "{:?}",
        s.reread_after_expiry
    );

    // Every tier's reasons add up to its misses.
    for cache in [&a, &b] {
        for (kind, t) in cache.stats().kinds {
            assert_eq!(t.l1.misses, t.l1.miss_reasons.total(), "{kind} L1");
            assert_eq!(t.l2.misses, t.l2.miss_reasons.total(), "{kind} L2");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_evicted_by_the_l1_budget_miss_as_evicted_with_the_time_since() {
    init_tracing();
    let cache = Cache::builder()
        .no_l2()
        .prefix(unique_prefix("obs-evict"))
        .kind(Kind::new(KIND), KindConfig::new(Duration::from_secs(600)))
        .l1_max_bytes(256 << 10)
        .build()
        .await
        .expect("build");
    let big = "v".repeat(2_000);
    for i in 0..1_000 {
        let v = big.clone();
        let _: Arc<String> = cache
            .get_or_load(KIND, &format!("k{i}"), || async move {
                Ok::<_, std::io::Error>(v)
            })
            .await
            .expect("load");
    }
    cache.run_pending_tasks().await;
    let before = cache.stats().kinds[KIND].clone();
    assert!(before.l1.evictions > 100, "{:?}", before.l1);
    for i in 0..1_000 {
        let _: Option<Arc<String>> = cache.get(KIND, &format!("k{i}")).await;
    }
    let after = cache.stats().kinds[KIND].clone();
    let evicted = after.l1.miss_reasons.evicted - before.l1.miss_reasons.evicted;
    // Each departure is remembered until a later one lands in its slot of the table (8,192
    // slots): 1,000 keys fit, so nearly every evicted key is recognised.
    assert!(
        evicted as f64 >= 0.9 * before.l1.evictions.min(1_000) as f64,
        "{evicted} of {} evictions recognised: {:?}",
        before.l1.evictions,
        after.l1.miss_reasons
    );
    assert_eq!(after.l1.reread_after_eviction.count, evicted);
    assert!(after.l1.reread_after_eviction.p50_us < 60e6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_undecodable_and_skipped_reads_say_so_at_l2() {
    init_tracing();
    let server = RedisServer::start();
    let prefix = unique_prefix("obs-l2");
    let cache = l2_only_builder(server.url(), &prefix)
        .max_value_bytes(1_024)
        .breaker_failure_threshold(1)
        .build()
        .await
        .expect("build");
    let kind = l2_only();
    let kind = kind.name();

    // Too large to store: the next read finds nothing, because of its size.
    for _ in 0..2 {
        let _: Arc<String> = cache
            .get_or_load(kind, "big", || async {
                Ok::<_, std::io::Error>("x".repeat(10_000))
            })
            .await
            .expect("load");
    }
    let s = cache.stats().kinds[kind].clone();
    assert_eq!(s.l2.oversized, 2, "{:?}", s.l2);
    assert_eq!(s.l2.miss_reasons.oversized, 1, "{:?}", s.l2.miss_reasons);
    assert_eq!(s.l2.miss_reasons.absent, 1, "{:?}", s.l2.miss_reasons);

    // Garbage under the key: undecodable.
    let mut conn = server.conn().await;
    let key = cache_core::admin::entry_key(&prefix, kind, "junk");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(b"not an envelope".as_slice())
        .query_async(&mut conn)
        .await
        .expect("SET");
    let _: Option<Arc<String>> = cache.get(kind, "junk").await;
    assert_eq!(cache.stats().kinds[kind].l2.miss_reasons.undecodable, 1);

    // Redis gone and the breaker open: reads are skipped, and say so.
    let mut server = server;
    server.kill();
    // This read fails and opens the breaker.
    let _: Option<Arc<String>> = cache.get(kind, "a").await;
    cache_tests::wait_for_state(
        &cache,
        cache_core::BreakerState::Open,
        Duration::from_secs(5),
    )
    .await;
    let _: Option<Arc<String>> = cache.get(kind, "b").await;
    let r = cache.stats().kinds[kind].l2.miss_reasons;
    assert_eq!(r.unavailable, 1, "{r:?}");
    assert!(r.skipped >= 1, "{r:?}");
    let s = cache.stats().kinds[kind].clone();
    assert_eq!(s.l2.misses, s.l2.miss_reasons.total(), "{:?}", s.l2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_history_and_savings_follow_the_traffic() {
    init_tracing();
    let cache = Cache::builder()
        .no_l2()
        .prefix(unique_prefix("obs-rates"))
        .kind(
            Kind::new(KIND),
            KindConfig::new(Duration::from_secs(600)).load_cost(0.01),
        )
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicU32::new(0));
    let lookups = |n: u32| {
        let cache = cache.clone();
        let calls = calls.clone();
        async move {
            for i in 0..n {
                let calls = calls.clone();
                let _: Arc<u32> = cache
                    .get_or_load(KIND, &format!("k{}", i % 10), || async move {
                        calls.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::io::Error>(i)
                    })
                    .await
                    .expect("load");
            }
        }
    };
    lookups(60).await;
    assert_eq!(calls.load(Ordering::Relaxed), 10);

    // The window since start: 60 lookups, 10 loads.
    let w = cache.stats_over(Duration::from_secs(60));
    let k = &w.kinds[KIND];
    assert_eq!(k.lookups, 60);
    assert_eq!(k.loader.calls, 10);
    assert!((k.hit_rate - 50.0 / 60.0).abs() < 1e-9, "{}", k.hit_rate);
    assert!(w.seconds > 0.0 && w.seconds < 60.0, "{}", w.seconds);
    assert!(
        k.loader.latency.p50_us >= 20_000.0,
        "{:?}",
        k.loader.latency
    );
    // Money: 50 answered lookups × 0.01, 10 loads × 0.01.
    assert!((k.savings.cost_saved - 0.5).abs() < 1e-9, "{:?}", k.savings);
    assert!((k.savings.cost_spent - 0.1).abs() < 1e-9, "{:?}", k.savings);

    // The sampler adds the loader time saved once a second: 50 × ~20 ms.
    within(Duration::from_secs(10), "loader time saved", || async {
        cache.stats().kinds[KIND].savings.loader_time_saved_secs >= 0.9
    })
    .await;
    let saved = cache.stats().kinds[KIND].savings.loader_time_saved_secs;
    let mean = cache.stats().kinds[KIND].loader.latency.mean_us / 1e6;
    assert!(
        (saved - 50.0 * mean).abs() < 1e-3,
        "{saved} s saved, {mean} s per load"
    );

    // The history has a point with the traffic of a later second.
    lookups(30).await;
    within(
        Duration::from_secs(10),
        "a chart point with 30 hits",
        || async {
            cache
                .history()
                .iter()
                .any(|p| p.requests_per_sec > 0.0 && p.hit_rate == Some(1.0))
        },
    )
    .await;
    let points = cache.history();
    assert!(points.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
    let total: f64 = cache.rates().last_1m.kinds[KIND].lookups as f64;
    assert_eq!(total, 90.0);
}
