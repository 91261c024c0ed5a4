//! The two-tier contract against a real redis-server: read-through, TTLs per kind, L1 refill from
//! L2, stampede protection, invalidation and clearing, tier routing, stats, L1-only startup.

use cache_core::{Cache, EntryOptions, Kind, KindConfig, Tiers};
use cache_tests::{cache_on, command_calls, init_tracing, unique_prefix, RedisServer};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user-{id}"),
    }
}

type Res<T> = Result<T, std::io::Error>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_result_is_shared_through_l2_with_another_instance() {
    let server = RedisServer::start();
    let prefix = unique_prefix("share");
    let a = cache_on(&server, &prefix).await;
    let b = cache_on(&server, &prefix).await;
    let calls = AtomicUsize::new(0);

    let v: Arc<User> = a
        .get_or_load(Kind::DATABASE_QUERY, "user:1", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Res::Ok(user(1))
        })
        .await
        .unwrap();
    assert_eq!(*v, user(1));
    // Instance B has a cold L1: it must find the value in L2 without calling its loader.
    let v: Arc<User> = b
        .get_or_load(Kind::DATABASE_QUERY, "user:1", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Res::Ok(user(999))
        })
        .await
        .unwrap();
    assert_eq!(*v, user(1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let sb = b.stats().kinds["database_query"].clone();
    assert_eq!((sb.l1.misses, sb.l2.hits, sb.loader.calls), (1, 1, 0));
    // A's second read is an L1 hit.
    let _: Option<Arc<User>> = a.get(Kind::DATABASE_QUERY, "user:1").await;
    assert_eq!(a.stats().total.l1.hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_of_a_cold_key_cause_one_loader_call_and_one_redis_write() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("stampede")).await;
    let mut conn = server.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_load(Kind::API_RESPONSE, "hot", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Res::Ok(user(7))
                    })
                    .await
                    .map(|v| (*v).clone())
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), user(7));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "loader calls");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    // One load for the 200 callers: one read that leased the absent key (`SET NX GET`), then one
    // compare-and-set of the value against that lease (a script, whose SET counts too).
    assert_eq!(
        command_calls(&info, Some("set")),
        2,
        "redis SET calls; INFO: {info}"
    );
    assert_eq!(
        command_calls(&info, Some("evalsha")),
        1,
        "write-backs; INFO: {info}"
    );
    // Two reads in all, whatever the number of callers: the one load's plain read first (a hit
    // would have needed nothing more), and the script's own comparison.
    assert_eq!(command_calls(&info, Some("get")), 2, "INFO: {info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_kinds_store_with_their_default_ttls_under_namespaced_keys() {
    let server = RedisServer::start();
    let prefix = unique_prefix("kinds");
    let cache = cache_on(&server, &prefix).await;
    let mut conn = server.conn().await;
    for (kind, secs) in Kind::BUILT_IN {
        cache.set(kind.clone(), "k", 1u32).await;
        let key = format!("{prefix}:v1:{}:k", kind.name());
        let pttl: i64 = conn.pttl(&key).await.unwrap();
        let expected = secs as i64 * 1000;
        assert!(
            pttl <= expected && pttl > expected - 5_000,
            "{key}: PTTL {pttl} ms, expected about {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_from_both_tiers_at_their_ttl() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("ttl")).await;
    let opts = EntryOptions::new().ttl(Duration::from_millis(400));
    cache
        .set_with(Kind::API_RESPONSE, "short", user(1), &opts)
        .await;
    assert!(cache
        .get::<User>(Kind::API_RESPONSE, "short")
        .await
        .is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(cache
        .get::<User>(Kind::API_RESPONSE, "short")
        .await
        .is_none());
    let mut conn = server.conn().await;
    let keys: Vec<String> = conn.keys("*short").await.unwrap();
    assert!(keys.is_empty(), "still in redis: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l1_copy_taken_from_l2_expires_with_the_l2_entry_not_later() {
    let server = RedisServer::start();
    let prefix = unique_prefix("l1ttl");
    let a = cache_on(&server, &prefix).await;
    let b = cache_on(&server, &prefix).await;
    let opts = EntryOptions::new().ttl(Duration::from_millis(1_000));
    a.set_with(Kind::API_RESPONSE, "k", user(1), &opts).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // B copies the entry into its L1 with about 500 ms left.
    assert!(b.get::<User>(Kind::API_RESPONSE, "k").await.is_some());
    let mut conn = server.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        b.get::<User>(Kind::API_RESPONSE, "k").await.is_none(),
        "B's L1 copy outlived the entry's TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_removes_the_key_from_l1_and_l2() {
    let server = RedisServer::start();
    let prefix = unique_prefix("inval");
    let cache = cache_on(&server, &prefix).await;
    cache.set(Kind::SESSION_DATA, "s1", user(1)).await;
    assert!(cache.get::<User>(Kind::SESSION_DATA, "s1").await.is_some());
    cache.invalidate(Kind::SESSION_DATA, "s1").await;
    assert!(cache.get::<User>(Kind::SESSION_DATA, "s1").await.is_none());
    // In Redis the value is replaced by a short-lived tombstone that fences off older loads.
    let mut conn = server.conn().await;
    let key = format!("{prefix}:v1:session_data:s1");
    let raw: Vec<u8> = conn.get(&key).await.unwrap();
    let inspected = cache_core::admin::inspect(&raw, 1 << 20).unwrap();
    assert!(inspected.tombstone && inspected.msgpack.is_empty());
    let pttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "tombstone PTTL {pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_kind_and_clear_all_stay_within_their_kind_and_prefix() {
    let server = RedisServer::start();
    let p1 = unique_prefix("clear");
    let p2 = unique_prefix("other");
    let a = cache_on(&server, &p1).await;
    let other = cache_on(&server, &p2).await;
    for i in 0..50 {
        a.set(Kind::API_RESPONSE, &format!("a{i}"), i).await;
        a.set(Kind::STATIC_DATA, &format!("s{i}"), i).await;
    }
    other.set(Kind::API_RESPONSE, "a0", 7).await;

    assert_eq!(a.clear_kind(Kind::API_RESPONSE).await.unwrap(), 50);
    assert!(a.get::<i32>(Kind::API_RESPONSE, "a1").await.is_none());
    assert_eq!(*a.get::<i32>(Kind::STATIC_DATA, "s1").await.unwrap(), 1);

    assert_eq!(a.clear_all().await.unwrap(), 50);
    assert!(a.get::<i32>(Kind::STATIC_DATA, "s1").await.is_none());
    // The other prefix is untouched, in L2 as well (a fresh instance reads it from Redis).
    let fresh = cache_on(&server, &p2).await;
    assert_eq!(
        *fresh.get::<i32>(Kind::API_RESPONSE, "a0").await.unwrap(),
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_route_to_their_tiers_and_cap_their_l1_ttl() {
    let server = RedisServer::start();
    let prefix = unique_prefix("tiers");
    let build = || async {
        Cache::builder()
            .redis_url(server.url())
            .prefix(&prefix)
            .kind(
                Kind::new("local"),
                KindConfig::new(Duration::from_secs(60)).tiers(Tiers::L1Only),
            )
            .kind(
                Kind::new("remote"),
                KindConfig::new(Duration::from_secs(60)).tiers(Tiers::L2Only),
            )
            .kind(
                Kind::new("short_l1"),
                KindConfig::new(Duration::from_secs(60)).l1_ttl(Duration::from_millis(300)),
            )
            .build()
            .await
            .unwrap()
    };
    let cache = build().await;
    let mut conn = server.conn().await;

    cache.set("local", "k", 1u8).await;
    let exists: bool = conn.exists(format!("{prefix}:v1:local:k")).await.unwrap();
    assert!(!exists, "an L1-only kind wrote to Redis");
    assert_eq!(*cache.get::<u8>("local", "k").await.unwrap(), 1);

    cache.set("remote", "k", 2u8).await;
    let exists: bool = conn.exists(format!("{prefix}:v1:remote:k")).await.unwrap();
    assert!(exists);
    assert_eq!(*cache.get::<u8>("remote", "k").await.unwrap(), 2);
    assert_eq!(*cache.get::<u8>("remote", "k").await.unwrap(), 2);
    let s = cache.stats().kinds["remote"].clone();
    assert_eq!((s.l1.hits, s.l2.hits), (0, 2), "an L2-only kind used L1");

    cache.set("short_l1", "k", 3u8).await;
    assert_eq!(*cache.get::<u8>("short_l1", "k").await.unwrap(), 3);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(*cache.get::<u8>("short_l1", "k").await.unwrap(), 3);
    let s = cache.stats().kinds["short_l1"].clone();
    assert_eq!(
        (s.l1.hits, s.l2.hits),
        (1, 1),
        "the L1 copy should have expired after 300 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_keys_are_hashed_and_still_distinct() {
    let server = RedisServer::start();
    let prefix = unique_prefix("long");
    let cache = cache_on(&server, &prefix).await;
    let k1 = "q".repeat(10_000);
    let k2 = format!("{}x", "q".repeat(9_999));
    cache.set(Kind::DATABASE_QUERY, &k1, 1u32).await;
    cache.set(Kind::DATABASE_QUERY, &k2, 2u32).await;
    let fresh = cache_on(&server, &prefix).await;
    assert_eq!(
        *fresh.get::<u32>(Kind::DATABASE_QUERY, &k1).await.unwrap(),
        1
    );
    assert_eq!(
        *fresh.get::<u32>(Kind::DATABASE_QUERY, &k2).await.unwrap(),
        2
    );
    let mut conn = server.conn().await;
    let mut keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    keys.sort();
    // `#` and the 256-bit BLAKE3 hash of the part, as `cache_core::admin::entry_key` (cachectl) says.
    let mut expected =
        [&k1, &k2].map(|k| cache_core::admin::entry_key(&prefix, "database_query", k));
    expected.sort();
    assert_eq!(keys, expected);
    let head = format!("{prefix}:v1:database_query:#");
    for k in &keys {
        let hash = k
            .strip_prefix(&head)
            .unwrap_or_else(|| panic!("{k} is not hashed"));
        assert_eq!(hash.len(), 64, "{k}");
        assert!(
            hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_key_spelling_a_hashed_name_does_not_reach_that_entry() {
    let server = RedisServer::start();
    let prefix = unique_prefix("aim");
    let cache = cache_on(&server, &prefix).await;
    let question = "What is the refund policy for orders shipped abroad? ".repeat(5);
    cache
        .set(Kind::MODEL_DATA, &question, "the real answer".to_string())
        .await;
    // The name the long question is stored under, sent as a key of its own.
    let full = cache_core::admin::entry_key(&prefix, "model_data", &question);
    let name = full
        .strip_prefix(&format!("{prefix}:v1:model_data:"))
        .expect("under the kind");
    assert!(name.starts_with('#'), "{name}");
    let loaded = cache
        .get_or_load(Kind::MODEL_DATA, name, || async {
            Ok::<_, std::io::Error>("an answer to the hash itself".to_string())
        })
        .await
        .unwrap();
    assert_eq!(*loaded, "an answer to the hash itself");
    let fresh = cache_on(&server, &prefix).await;
    assert_eq!(
        fresh
            .get::<String>(Kind::MODEL_DATA, &question)
            .await
            .as_deref()
            .map(String::as_str),
        Some("the real answer")
    );
    let mut conn = server.conn().await;
    let keys: Vec<String> = conn.keys(format!("{prefix}:v1:*")).await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_errors_are_returned_unchanged_and_not_cached() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("err")).await;
    let err = cache
        .get_or_load(Kind::API_RESPONSE, "e", || async {
            Err::<User, _>(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "origin down",
            ))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(err.to_string(), "origin down");
    let v = cache
        .get_or_load(Kind::API_RESPONSE, "e", || async { Res::Ok(user(2)) })
        .await
        .unwrap();
    assert_eq!(*v, user(2));
    let s = cache.stats().total;
    assert_eq!((s.loader.calls, s.loader.errors), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_safe_serves_a_stale_value_when_the_loader_fails() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("failsafe"))
        .fail_safe_grace(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let opts = EntryOptions::new().ttl(Duration::from_millis(200));
    cache
        .get_or_load_with(Kind::API_RESPONSE, "k", &opts, || async {
            Res::Ok(user(1))
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = cache
        .get_or_load_with(Kind::API_RESPONSE, "k", &opts, || async {
            Err::<User, _>(std::io::Error::other("origin down"))
        })
        .await
        .expect("stale value served");
    assert_eq!(*v, user(1));
    let s = cache.stats().total;
    assert_eq!((s.loader.errors, s.loader.stale_served), (1, 1));
    // A successful load replaces the stale value.
    let v = cache
        .get_or_load_with(Kind::API_RESPONSE, "k", &opts, || async {
            Res::Ok(user(2))
        })
        .await
        .unwrap();
    assert_eq!(*v, user(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_load_keeps_the_loaded_value_out_of_both_tiers() {
    let server = RedisServer::start();
    let prefix = unique_prefix("race");
    let cache = cache_on(&server, &prefix).await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let c = cache.clone();
    let load = tokio::spawn(async move {
        c.get_or_load(Kind::DATABASE_QUERY, "row", || async move {
            let _ = started_tx.send(());
            let _ = finish_rx.await;
            Res::Ok(user(1)) // read from the database before the update below
        })
        .await
        .unwrap()
    });
    started_rx.await.unwrap();
    // The row is updated and the key invalidated while the load is in flight.
    cache.invalidate(Kind::DATABASE_QUERY, "row").await;
    finish_tx.send(()).unwrap();
    assert_eq!(
        *load.await.unwrap(),
        user(1),
        "the caller still gets its own load's value"
    );
    // A caller after the invalidation must not see the old value from either tier.
    let v = cache
        .get_or_load(Kind::DATABASE_QUERY, "row", || async { Res::Ok(user(2)) })
        .await
        .unwrap();
    assert_eq!(*v, user(2));
    let fresh = cache_on(&server, &prefix).await;
    assert_eq!(
        *fresh
            .get::<User>(Kind::DATABASE_QUERY, "row")
            .await
            .unwrap(),
        user(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_snapshot_counts_per_tier_and_kind_and_serializes() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("stats")).await;
    let big = "x".repeat(20_000);
    cache.set(Kind::MODEL_DATA, "big", big.clone()).await;
    for _ in 0..3 {
        assert_eq!(
            *cache.get::<String>(Kind::MODEL_DATA, "big").await.unwrap(),
            big
        );
    }
    assert!(cache
        .get::<String>(Kind::MODEL_DATA, "absent")
        .await
        .is_none());
    cache.run_pending_tasks().await;
    let s = cache.stats();
    let m = &s.kinds["model_data"];
    assert_eq!((m.l1.hits, m.l1.misses, m.l2.misses), (3, 1, 1));
    assert_eq!(m.l2.writes, 1);
    assert!(
        m.l2.compression_ratio > 10.0,
        "ratio {}",
        m.l2.compression_ratio
    );
    assert!(m.l2.write_latency.count == 1 && m.l2.read_latency.count == 1);
    assert_eq!(s.total.l1.entries, 1);
    assert!(s.total.l1.bytes >= 20_000);
    assert_eq!(
        s.breaker.as_ref().unwrap().state,
        cache_core::BreakerState::Closed
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["kinds"]["model_data"]["l1"]["hits"], 3);
    assert_eq!(json["breaker"]["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_stays_within_its_byte_budget_and_counts_evictions() {
    init_tracing();
    let cache = Cache::builder()
        .prefix(unique_prefix("budget"))
        .l1_max_bytes(100_000)
        .build()
        .await
        .unwrap();
    for i in 0..1_000 {
        cache
            .set(Kind::API_RESPONSE, &format!("k{i}"), "v".repeat(1_000))
            .await;
    }
    cache.run_pending_tasks().await;
    let s = cache.stats().total;
    assert!(s.l1.bytes <= 100_000, "{} bytes", s.l1.bytes);
    assert!(s.l1.entries < 100, "{} entries", s.l1.entries);
    assert!(s.l1.evictions > 800, "{} evictions", s.l1.evictions);
}

/// The L1 figures of one kind: `(entries, bytes, evictions)`.
fn l1_of(cache: &Cache, kind: Kind) -> (u64, u64, u64) {
    let s = cache.stats();
    let k = &s.kinds[kind.name()].l1;
    (k.entries, k.bytes, k.evictions)
}

/// Per-kind figures add up to moka's own totals.
fn assert_kinds_add_up(cache: &Cache) {
    let s = cache.stats();
    let sum =
        |f: fn(&cache_core::stats::L1Stats) -> u64| s.kinds.values().map(|k| f(&k.l1)).sum::<u64>();
    assert_eq!(sum(|l| l.entries), s.total.l1.entries, "entries");
    assert_eq!(sum(|l| l.bytes), s.total.l1.bytes, "bytes");
    assert_eq!(sum(|l| l.evictions), s.total.l1.evictions, "evictions");
    for k in s.kinds.values() {
        assert_eq!(k.l1.max_bytes, s.total.l1.max_bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_entries_bytes_and_evictions_are_kept_per_kind() {
    init_tracing();
    let cache = Cache::builder()
        .prefix(unique_prefix("perkind"))
        .l1_max_bytes(200_000)
        .build()
        .await
        .unwrap();
    // One kind overflows the budget on its own.
    for i in 0..2_000 {
        cache
            .set(Kind::API_RESPONSE, &format!("k{i}"), "v".repeat(1_000))
            .await;
    }
    cache.run_pending_tasks().await;
    let (entries, bytes, evictions) = l1_of(&cache, Kind::API_RESPONSE);
    assert!((50..200).contains(&entries), "{entries} entries");
    assert!(bytes <= 200_000 && bytes > 100_000, "{bytes} bytes");
    assert_eq!(
        entries + evictions,
        2_000,
        "every insert is held or evicted"
    );
    // A 1,000-byte string takes a 1,008-byte malloc chunk, plus the entry's own structures.
    assert!(
        bytes / entries > 1_008,
        "{} bytes per entry",
        bytes / entries
    );
    assert_eq!(l1_of(&cache, Kind::MODEL_DATA), (0, 0, 0));
    assert_kinds_add_up(&cache);

    // Emptied explicitly: its entries and bytes go, its evictions stay.
    cache.clear_kind(Kind::API_RESPONSE).await.unwrap();
    cache.run_pending_tasks().await;
    assert_eq!(l1_of(&cache, Kind::API_RESPONSE), (0, 0, evictions));

    // Another kind, filled differently: three large embeddings, weighed by their heap (a
    // 5,000-float `Vec<f32>` is one 20,000-byte buffer, 20,016 bytes in a malloc chunk).
    for i in 0..3 {
        cache
            .set(Kind::MODEL_DATA, &format!("e{i}"), vec![0.5f32; 5_000])
            .await;
    }
    cache.run_pending_tasks().await;
    let (entries, bytes, evictions) = l1_of(&cache, Kind::MODEL_DATA);
    assert_eq!((entries, evictions), (3, 0));
    assert!(
        (3 * 20_016..3 * 21_000).contains(&bytes),
        "{bytes} bytes for three 20,016-byte buffers"
    );
    let per_entry = bytes / 3;
    // Replaced: counted once.
    cache.set(Kind::MODEL_DATA, "e0", vec![0.5f32; 5_000]).await;
    cache.invalidate(Kind::MODEL_DATA, "e1").await;
    cache.run_pending_tasks().await;
    assert_eq!(l1_of(&cache, Kind::MODEL_DATA), (2, 2 * per_entry, 0));
    assert_kinds_add_up(&cache);

    // Expired: removed from its kind's figures too.
    cache
        .set_with(
            Kind::SESSION_DATA,
            "short",
            "x".repeat(100),
            &EntryOptions::new().ttl(Duration::from_millis(50)),
        )
        .await;
    cache.run_pending_tasks().await;
    assert_eq!(l1_of(&cache, Kind::SESSION_DATA).0, 1);
    cache_tests::within(Duration::from_secs(10), "the entry expires", || async {
        cache.run_pending_tasks().await;
        l1_of(&cache, Kind::SESSION_DATA) == (0, 0, 0)
    })
    .await;
    assert_kinds_add_up(&cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_weigh_their_heap_not_their_encoding() {
    #[derive(Serialize)]
    struct Item {
        name: String,
        tags: Vec<String>,
    }
    let cache = Cache::builder()
        .prefix(unique_prefix("heapweight"))
        .build()
        .await
        .unwrap();
    // 12 items of small strings: ~300 bytes of MessagePack, ~2.4 KiB of malloc chunks.
    let value: Vec<Item> = (0..12)
        .map(|i| Item {
            name: format!("item-{i}"),
            tags: vec!["a".into(), "b".into(), "c".into()],
        })
        .collect();
    let encoded = rmp_serde::to_vec_named(&value).unwrap().len() as u64;
    cache.set(Kind::API_RESPONSE, "items", value).await;
    cache.run_pending_tasks().await;
    let (_, bytes, _) = l1_of(&cache, Kind::API_RESPONSE);
    // The buffer of 12 items (48 bytes each), 12 names, 12 tag buffers and 36 tags: at least
    // 60 allocations of 32 bytes or more.
    assert!(
        bytes > 12 * 48 + 60 * 32,
        "{bytes} bytes weighed for {encoded} encoded"
    );
    assert!(
        bytes > 4 * encoded,
        "{bytes} bytes weighed for {encoded} encoded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_cache_always_runs_the_loader() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .enabled(false)
        .build()
        .await
        .unwrap();
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        cache
            .get_or_load(Kind::API_RESPONSE, "k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Res::Ok(1u8)
            })
            .await
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let mut conn = server.conn().await;
    let n: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_started_without_redis_works_l1_only_and_uses_l2_once_redis_appears() {
    init_tracing();
    let mut server = RedisServer::reserve();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("late"))
        .build()
        .await
        .expect("an unreachable Redis is not a build error");
    assert_eq!(cache.breaker_state(), Some(cache_core::BreakerState::Open));
    let v = cache
        .get_or_load(Kind::API_RESPONSE, "k", || async { Res::Ok(user(1)) })
        .await
        .unwrap();
    assert_eq!(*v, user(1));
    assert_eq!(
        *cache.get::<User>(Kind::API_RESPONSE, "k").await.unwrap(),
        user(1)
    );

    server.restart();
    let appeared = std::time::Instant::now();
    while cache.breaker_state() != Some(cache_core::BreakerState::Closed) {
        assert!(
            appeared.elapsed() < Duration::from_secs(6),
            "L2 not used {:?} after Redis appeared",
            appeared.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cache.set(Kind::API_RESPONSE, "after", user(2)).await;
    let mut conn = server.conn().await;
    let n: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(n, 1, "the write after recovery reached Redis");
    println!(
        "L2 in use {:?} after redis-server started",
        appeared.elapsed()
    );
}
