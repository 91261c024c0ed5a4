//! What a newcomer expects, against a real redis-server: a zero TTL stores nothing anywhere, a
//! failing origin gets one call per burst through `#[cached]`, negative caching on the plain API,
//! warming fills the cache it is called on (and functions with arguments), a forgotten default
//! cache is loud, typed handles, and invalidations confirmed by the other instances.

use cache_core::{cached, Cache, EntryOptions, Kind, WarmPlan};
use cache_tests::{l2_only_builder, unique_prefix, within, RedisServer};
use futures::StreamExt;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

async fn cache(server: &RedisServer, prefix: &str) -> Cache {
    l2_only_builder(server.url(), prefix)
        // No stats reports: their SETs would show among the keyspace events.
        .stats_report_interval(Duration::ZERO)
        .build()
        .await
        .expect("build")
}

/// Every keyspace event of the server from now on, until `sentinel` is written (by the caller).
struct Keyspace {
    events: futures::stream::BoxStream<'static, (String, String)>,
}

impl Keyspace {
    async fn watch(server: &RedisServer) -> Self {
        let mut c = server.conn().await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("KEA")
            .query_async(&mut c)
            .await
            .expect("CONFIG SET notify-keyspace-events");
        let client = redis::Client::open(server.url()).expect("client");
        let mut ps = client.get_async_pubsub().await.expect("pubsub");
        ps.psubscribe("__keyevent@0__:*").await.expect("PSUBSCRIBE");
        let events = ps
            .into_on_message()
            .map(|m| {
                let event = m
                    .get_channel_name()
                    .rsplit(':')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let key: String = m.get_payload().unwrap_or_default();
                (event, key)
            })
            .boxed();
        Keyspace { events }
    }

    /// The events seen before `sentinel` (a key the test then writes itself).
    async fn until(mut self, server: &RedisServer, sentinel: &str) -> Vec<(String, String)> {
        let mut c = server.conn().await;
        let _: () = redis::cmd("SET")
            .arg(sentinel)
            .arg(1)
            .query_async(&mut c)
            .await
            .expect("SET sentinel");
        let mut seen = Vec::new();
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), self.events.next())
            .await
            .expect("the sentinel's event arrives")
        {
            if ev.1 == sentinel {
                return seen;
            }
            seen.push(ev);
        }
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_of_duration_max_stores_for_max_ttl_in_both_tiers() {
    let server = RedisServer::start();
    let prefix = unique_prefix("max-ttl");
    let (a, b) = (cache(&server, &prefix).await, cache(&server, &prefix).await);
    let forever = EntryOptions::new().ttl(Duration::MAX);
    a.set_with(Kind::API_RESPONSE, "set", 1u32, &forever).await;
    let v = a
        .get_or_load_with(Kind::API_RESPONSE, "loaded", &forever, || async {
            Ok::<_, Infallible>(2u32)
        })
        .await
        .expect("load");
    assert_eq!(*v, 2);
    let mut c = server.conn().await;
    for (key, value) in [("set", 1u32), ("loaded", 2)] {
        assert_eq!(
            b.get::<u32>(Kind::API_RESPONSE, key).await.as_deref(),
            Some(&value),
            "{key} reached L2"
        );
        let full = cache_core::admin::entry_key(&prefix, Kind::API_RESPONSE.name(), key);
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&full)
            .query_async(&mut c)
            .await
            .expect("PTTL");
        let max = i64::try_from(cache_core::MAX_TTL.as_millis()).expect("fits");
        assert!(
            pttl > max - 60_000 && pttl <= max,
            "{key}: PTTL {pttl} ms, MAX_TTL {max} ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_ttl_stores_nothing_and_writes_nothing_to_redis() {
    let server = RedisServer::start();
    let prefix = unique_prefix("zero-ttl");
    let (a, b) = (cache(&server, &prefix).await, cache(&server, &prefix).await);
    let zero = EntryOptions::new().ttl(Duration::ZERO);
    let calls = AtomicUsize::new(0);
    let load = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>("fresh".to_string())
    };
    let watch = Keyspace::watch(&server).await;
    for _ in 0..3 {
        let v = a
            .get_or_load_with(Kind::API_RESPONSE, "k", &zero, load)
            .await
            .unwrap();
        assert_eq!(*v, "fresh");
    }
    a.set_with(Kind::API_RESPONSE, "absent", "x".to_string(), &zero)
        .await;
    let events = watch.until(&server, &format!("{prefix}-sentinel")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "nothing was served back");
    assert!(events.is_empty(), "Redis saw writes: {events:?}");
    assert!(b.get::<String>(Kind::API_RESPONSE, "k").await.is_none());

    // A TTL computed from the value, zero (the `max-age=0` of an API response): known only once
    // the value is, so the load leases the key in L2 like any load (Redis sees that write: this
    // part is after the keyspace watch), then releases the lease. Nothing is left in L2, nothing
    // in L1, and the next load calls the loader again.
    let computed = EntryOptions::new().ttl_with(|_: &String| Duration::ZERO);
    for n in 4..=5 {
        let v = a
            .get_or_load_with(Kind::API_RESPONSE, "computed", &computed, load)
            .await
            .unwrap();
        assert_eq!(*v, "fresh");
        assert_eq!(calls.load(Ordering::SeqCst), n, "nothing was served back");
    }
    assert!(a
        .get::<String>(Kind::API_RESPONSE, "computed")
        .await
        .is_none());
    let mut c = server.conn().await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(cache_core::admin::entry_key(
            &prefix,
            "api_response",
            "computed",
        ))
        .query_async(&mut c)
        .await
        .expect("EXISTS");
    assert!(!exists, "the lease was released");

    // A `set` with a zero TTL of a key that holds a value removes it everywhere: the older value
    // must not stay.
    a.set(Kind::API_RESPONSE, "held", "old".to_string()).await;
    assert_eq!(
        b.get::<String>(Kind::API_RESPONSE, "held")
            .await
            .as_deref()
            .map(String::as_str),
        Some("old")
    );
    a.set_with(Kind::API_RESPONSE, "held", "new".to_string(), &zero)
        .await;
    assert!(a.get::<String>(Kind::API_RESPONSE, "held").await.is_none());
    within(Duration::from_secs(2), "B drops its copy", || async {
        b.get::<String>(Kind::API_RESPONSE, "held").await.is_none()
    })
    .await;
}

static FAILING_CACHE: OnceLock<Cache> = OnceLock::new();
static ORIGIN_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq)]
struct OriginDown(u32);

/// Callers of the burst: the body answers only once all of them have missed L1 (and so, on the
/// test's one thread, joined its flight).
const BURST: u64 = 100;

#[cached(kind = "api_response", cache = FAILING_CACHE.get().expect("built"))]
async fn quote(symbol: String) -> Result<u64, OriginDown> {
    let n = ORIGIN_CALLS.fetch_add(1, Ordering::SeqCst) as u32;
    // The gate: every caller counts its L1 miss just before it joins the key's flight (no await
    // in between), so once all have missed, all wait on this call.
    let cache = FAILING_CACHE.get().expect("built");
    within(
        Duration::from_secs(10),
        "every caller missed L1",
        || async { cache.stats().total.l1.misses >= BURST },
    )
    .await;
    let _ = symbol;
    Err(OriginDown(n))
}

// One thread: once the body sees every caller's L1 miss, each of them has run on to its first
// await, which is its wait on the flight (it joined it). With two worker threads a caller could
// be between its miss and its join on the other thread when the body returned: it then starts a
// second load, legitimately (it arrived after the first ended), which is not what this measures.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_against_a_failing_origin_makes_one_call_and_shares_its_error() {
    let server = RedisServer::start();
    let c = cache(&server, &unique_prefix("burst")).await;
    assert!(FAILING_CACHE.set(c).is_ok());
    let barrier = Arc::new(tokio::sync::Barrier::new(BURST as usize));
    let callers: Vec<_> = (0..BURST)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                quote("ACME".into()).await
            })
        })
        .collect();
    let mut errors = Vec::new();
    for c in callers {
        errors.push(c.await.expect("caller"));
    }
    let calls = ORIGIN_CALLS.load(Ordering::SeqCst);
    println!("100 concurrent callers of a failing #[cached] function: {calls} body call(s)");
    assert_eq!(calls, 1, "the failing origin was called {calls} times");
    assert!(
        errors.iter().all(|e| *e == Err(OriginDown(0))),
        "{errors:?}"
    );
    // Errors are not cached: the next call tries again.
    assert_eq!(quote("ACME".into()).await, Err(OriginDown(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_and_failed_values_get_their_own_ttl_on_the_plain_api() {
    let server = RedisServer::start();
    let prefix = unique_prefix("negative");
    let c = cache(&server, &prefix).await;
    let conn = server.conn().await;
    let pttl = |key: &str| {
        let key = cache_core::admin::entry_key(&prefix, "l2only", key);
        let mut conn = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .expect("PTTL")
        }
    };
    let opts = EntryOptions::new()
        .none_ttl(Duration::from_secs(5))
        .error_ttl(Duration::from_secs(2));
    let missing = c
        .get_or_load_with("l2only", "user:404", &opts, || async {
            Ok::<Option<String>, Infallible>(None)
        })
        .await
        .unwrap();
    assert!(missing.is_none());
    let found = c
        .get_or_load_with("l2only", "user:1", &opts, || async {
            Ok::<_, Infallible>(Some("Ada".to_string()))
        })
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("Ada"));
    let failed = c
        .get_or_load_with("l2only", "quote:X", &opts, || async {
            Ok::<Result<u64, String>, Infallible>(Err("origin down".into()))
        })
        .await
        .unwrap();
    assert!(failed.is_err());
    let (none_ms, some_ms, err_ms) = (
        pttl("user:404").await,
        pttl("user:1").await,
        pttl("quote:X").await,
    );
    println!("PTTL: None {none_ms} ms, Some {some_ms} ms, Err {err_ms} ms");
    assert!((1..=5_000).contains(&none_ms), "None kept for {none_ms} ms");
    assert!((1..=2_000).contains(&err_ms), "Err kept for {err_ms} ms");
    assert!(
        some_ms > 500_000,
        "a value keeps the kind's TTL: {some_ms} ms"
    );
    // Served back from the cache without the loader.
    let loads = AtomicUsize::new(0);
    let again = c
        .get_or_load_with("l2only", "user:404", &opts, || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<Option<String>, Infallible>(Some("not served".into()))
        })
        .await
        .unwrap();
    assert!(again.is_none());
    assert_eq!(loads.load(Ordering::SeqCst), 0, "a cached None is served");
    // `none_ttl(0)`: absent values are not cached at all.
    let no_negative = EntryOptions::new().none_ttl(Duration::ZERO);
    let _ = c
        .get_or_load_with("l2only", "user:405", &no_negative, || async {
            Ok::<Option<String>, Infallible>(None)
        })
        .await
        .unwrap();
    assert_eq!(pttl("user:405").await, -2, "not stored");
}

static WARMED_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(kind = "static_data", warm)]
async fn countries() -> Vec<String> {
    WARMED_CALLS.fetch_add(1, Ordering::SeqCst);
    vec!["fr".into(), "jp".into()]
}

static PRICE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(kind = "database_query")]
async fn price(item: u32) -> Result<u64, String> {
    PRICE_CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(u64::from(item) * 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_fills_the_cache_it_is_called_on_and_functions_with_arguments() {
    let server = RedisServer::start();
    let prefix = unique_prefix("warm-receiver");
    // No default cache in this test binary: the functions above use the cache being warmed.
    let c = cache(&server, &prefix).await;
    let report = c
        .warm_with(WarmPlan::new().calls("price", [1, 2, 3], price))
        .await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.warmed, 4, "countries + three prices: {report:?}");
    assert_eq!(WARMED_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(PRICE_CALLS.load(Ordering::SeqCst), 3);
    // The keys warmed are exactly the ones the functions read: a fresh instance finds them in
    // Redis, and calling the functions through the same cache runs no body.
    let fresh = cache(&server, &prefix).await;
    assert_eq!(fresh.stats().total.l2.hits, 0);
    let again = fresh
        .warm_with(WarmPlan::new().calls("price", [1, 2, 3], price))
        .await;
    assert_eq!(again.warmed, 4, "{again:?}");
    assert_eq!(PRICE_CALLS.load(Ordering::SeqCst), 3, "served from Redis");
    assert_eq!(WARMED_CALLS.load(Ordering::SeqCst), 1, "served from Redis");
    assert!(fresh.stats().total.l2.hits >= 4);
}

#[cached(kind = "api_response")]
async fn needs_a_default_cache(id: u32) -> u32 {
    id
}

#[tokio::test]
#[should_panic(expected = "cache_core::set_default_cache")]
async fn a_cached_function_without_a_default_cache_panics_in_debug_builds() {
    // No test of this binary sets a default cache.
    let _ = needs_a_default_cache(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handles_read_and_write_without_naming_types() {
    let server = RedisServer::start();
    let c = cache(&server, &unique_prefix("typed")).await;
    let users = c.typed::<String>(Kind::DATABASE_QUERY);
    let ada = users
        .get_or_load_cloned("u1", || async { Ok::<_, Infallible>("Ada".to_string()) })
        .await
        .unwrap();
    assert_eq!(ada, "Ada");
    users.set("u2", "Grace".to_string()).await;
    assert_eq!(users.get_cloned("u2").await.as_deref(), Some("Grace"));
    users.invalidate("u1").await;
    assert!(users.get("u1").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_invalidation_returns_once_every_instance_dropped_its_copy() {
    let server = RedisServer::start();
    let prefix = unique_prefix("confirmed");
    let a = cache(&server, &prefix).await;
    let others = [cache(&server, &prefix).await, cache(&server, &prefix).await];
    // The window of a plain invalidation: how long another instance still reads its L1 copy.
    let mut windows = Vec::new();
    for round in 0..50 {
        let key = format!("plain{round}");
        a.set(Kind::API_RESPONSE, &key, round).await;
        for o in &others {
            assert_eq!(
                o.get::<u32>(Kind::API_RESPONSE, &key).await.as_deref(),
                Some(&round)
            );
        }
        a.invalidate(Kind::API_RESPONSE, &key).await;
        let t = Instant::now();
        within(Duration::from_secs(2), "the copy goes", || async {
            others[0]
                .get::<u32>(Kind::API_RESPONSE, &key)
                .await
                .is_none()
        })
        .await;
        windows.push(t.elapsed());
    }
    windows.sort();
    println!(
        "plain invalidate: another instance read the old value up to {:?} after it returned (median {:?})",
        windows[windows.len() - 1],
        windows[windows.len() / 2]
    );
    for round in 0..50 {
        let key = format!("confirmed{round}");
        a.set(Kind::API_RESPONSE, &key, round).await;
        for o in &others {
            assert_eq!(
                o.get::<u32>(Kind::API_RESPONSE, &key).await.as_deref(),
                Some(&round)
            );
        }
        let c = a
            .invalidate_confirmed(Kind::API_RESPONSE, &key, Duration::from_secs(2))
            .await;
        assert_eq!((c.expected, c.acknowledged), (2, 2), "{c:?}");
        assert!(c.is_complete());
        // No window: both copies are gone when it returns.
        for o in &others {
            assert!(
                o.get::<u32>(Kind::API_RESPONSE, &key).await.is_none(),
                "round {round}"
            );
        }
    }
    let c = a
        .invalidate_tags_confirmed(&["nothing"], Duration::from_secs(2))
        .await;
    assert!(c.is_complete(), "{c:?}");
    // "No deadline" (`Duration::MAX`) waits for the confirmations, without overflowing.
    let c = a
        .invalidate_confirmed(Kind::API_RESPONSE, "no-deadline", Duration::MAX)
        .await;
    assert_eq!((c.expected, c.acknowledged), (2, 2), "{c:?}");
}
