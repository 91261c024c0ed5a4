//! Freshness and origin protection against real redis-server processes: eager refresh and XFetch,
//! soft and hard loader timeouts, the distributed lock between two instances, TTL jitter, and
//! invalidations made while Redis is hung (SIGSTOP) taking effect after SIGCONT.
//!
//! "No caller waits for the loader" is checked with a loader held at a [`Gate`] until the callers
//! are done (a caller that waited for it would never finish), not with a latency bound; the
//! latencies are printed. The remaining timings are relations with generous margins, never tight
//! absolute bounds. The tests run one at a time (`serial()`) so that their timings do not disturb
//! each other on a 2-core machine.

use cache_core::{Cache, EntryOptions, Error, Kind, KindConfig, LoadError, OwnedOptions, Tiers};
use cache_tests::{init_tracing, serial, unique_prefix, within, Gate, RedisServer};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Barrier};

type Res<T> = Result<T, std::io::Error>;

/// A bound on what must finish at once: only reached by a caller stuck behind a held loader.
const STUCK: Duration = Duration::from_secs(20);

fn builder(server: &RedisServer, prefix: &str) -> cache_core::CacheBuilder {
    init_tracing();
    Cache::builder().redis_url(server.url()).prefix(prefix)
}

/// Sorted latencies → (p50, p99, max).
fn summary(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99), v[v.len() - 1])
}

type BoxedLoad = std::pin::Pin<Box<dyn std::future::Future<Output = Res<String>> + Send>>;

/// A loader that counts its calls, waits until `gate` opens, and returns `v{call number}`.
fn gated(calls: &Arc<AtomicUsize>, gate: &Gate) -> impl FnOnce() -> BoxedLoad + Send + 'static {
    let (calls, gate) = (calls.clone(), gate.clone());
    move || {
        Box::pin(async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            gate.wait().await;
            Ok(format!("v{n}"))
        })
    }
}

/// A loader that counts its calls, takes `took`, and returns `v{call number}`.
fn versioned(
    calls: &Arc<AtomicUsize>,
    took: Duration,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Res<String>> + Send>>
       + Send
       + 'static {
    let calls = calls.clone();
    move || {
        Box::pin(async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(took).await;
            Ok(format!("v{n}"))
        })
    }
}

// --- Eager refresh -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_refresh_runs_once_in_the_background_and_no_caller_waits_for_it() {
    let _serial = serial().await;
    let server = RedisServer::start();
    // Refreshed from a quarter of a 6 s TTL: the readers are done long before the entry expires.
    let cache = builder(&server, &unique_prefix("refresh"))
        .kind(
            Kind::new("quote"),
            KindConfig::new(Duration::from_secs(6)).eager_refresh(0.25),
        )
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new();
    let first = cache
        .get_or_load_owned("quote", "ACME", &opts, versioned(&calls, Duration::ZERO))
        .await
        .expect("cold load");
    assert_eq!(*first, "v1");
    // Past a quarter of the TTL, well before expiry.
    tokio::time::sleep(Duration::from_millis(1_600)).await;

    // 50 readers for 1 s: the first read past the threshold starts the refresh, whose loader is
    // held until every reader is done.
    let gate = Gate::closed();
    let readers = 50;
    let barrier = Arc::new(Barrier::new(readers));
    let tasks: Vec<_> = (0..readers)
        .map(|_| {
            let (cache, calls, barrier, opts, gate) = (
                cache.clone(),
                calls.clone(),
                barrier.clone(),
                opts.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let until = Instant::now() + Duration::from_millis(1_000);
                let mut seen = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let v = cache
                        .get_or_load_owned("quote", "ACME", &opts, gated(&calls, &gate))
                        .await
                        .expect("read");
                    seen.push((t.elapsed(), (*v).clone()));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut values = Vec::new();
    let all_done = tokio::time::timeout(STUCK, futures::future::join_all(tasks))
        .await
        .expect("a reader waited for the refresh (its loader is held until the readers are done)");
    for seen in all_done {
        for (lat, v) in seen.expect("reader") {
            latencies.push(lat);
            values.push(v);
        }
    }
    assert!(values.iter().all(|v| v == "v1"), "{values:?}");
    within(
        Duration::from_secs(5),
        "the refresh's loader runs",
        || async { calls.load(Ordering::SeqCst) == 2 },
    )
    .await;
    gate.open();
    let landed = within(
        Duration::from_secs(5),
        "the refreshed value is served",
        || async {
            cache.get::<String>("quote", "ACME").await.as_deref() == Some(&"v2".to_string())
        },
    )
    .await;
    let (p50, p99, max) = summary(latencies.clone());
    let s = cache.stats().total;
    println!(
        "eager refresh: {} reads by {readers} callers while the refresh was held: p50 {p50:?} p99 {p99:?} max {max:?}; served {landed:?} after its release; loader calls {}, refreshes {}",
        latencies.len(),
        calls.load(Ordering::SeqCst),
        s.loader.refreshes
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the cold load and exactly one refresh"
    );
    assert_eq!(s.loader.refreshes, 1);
    // The refreshed value replaced the old one in L2 as well.
    let from_l2 = builder(&server, cache.prefix())
        .build()
        .await
        .expect("build");
    assert_eq!(
        from_l2.get::<String>("quote", "ACME").await.as_deref(),
        Some(&"v2".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_refresh_also_applies_to_entries_read_from_l2() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let cache = builder(&server, &unique_prefix("refresh-l2"))
        .kind(
            Kind::new("l2only"),
            KindConfig::new(Duration::from_secs(2))
                .tiers(Tiers::L2Only)
                .eager_refresh(0.5),
        )
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new();
    let cold = versioned(&calls, Duration::ZERO);
    let cold = cache.get_or_load_owned("l2only", "k", &opts, cold).await;
    assert_eq!(*cold.expect("cold"), "v1");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // The refresh's loader is held until this read has returned.
    let gate = Gate::closed();
    let t = Instant::now();
    let read = cache.get_or_load_owned("l2only", "k", &opts, gated(&calls, &gate));
    let read = tokio::time::timeout(STUCK, read)
        .await
        .expect("the read waited for the refresh it started");
    assert_eq!(*read.expect("read"), "v1", "the current value, at once");
    let took = t.elapsed();
    gate.open();
    let landed = within(
        Duration::from_secs(5),
        "the refreshed value in L2",
        || async { cache.get::<String>("l2only", "k").await.as_deref() == Some(&"v2".to_string()) },
    )
    .await;
    println!("eager refresh from L2: the current value in {took:?}; refreshed {landed:?} after");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().total.loader.refreshes, 1);
}

/// A document of the refresh-race test. `_token` marks the copies made by the refresh under test
/// (held, never read, not serialized: L2 holds bytes, not this value): once every token is gone,
/// the refresh has ended and this process kept its value nowhere.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Doc {
    text: String,
    #[serde(skip)]
    _token: Option<Arc<()>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_never_resurrects_a_value_invalidated_while_it_ran() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let prefix = unique_prefix("refresh-race");
    let kind = KindConfig::new(Duration::from_secs(4)).eager_refresh(0.25);
    let a = builder(&server, &prefix)
        .kind(Kind::new("doc"), kind.clone())
        .build()
        .await
        .expect("build");
    let b = builder(&server, &prefix)
        .kind(Kind::new("doc"), kind)
        .build()
        .await
        .expect("build");
    // The origin: a loader reads it when it starts.
    let source = Arc::new(StdMutex::new("old".to_string()));
    let load = |source: &Arc<StdMutex<String>>| {
        let source = source.clone();
        move || async move {
            let text = source.lock().unwrap().clone();
            Ok::<_, std::io::Error>(Doc { text, _token: None })
        }
    };
    let opts = EntryOptions::new();
    let cold = a.get_or_load_owned("doc", "d", &opts, load(&source)).await;
    assert_eq!(cold.unwrap().text, "old");
    // Past a quarter of the TTL: the next read refreshes.
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    // The refresh's loader reads "old" from the origin, says so, and returns only once released.
    let (read_tx, read_rx) = oneshot::channel();
    let gate = Gate::closed();
    let token = Arc::new(());
    let refresh_copies = Arc::downgrade(&token);
    let refresh = {
        let (source, gate) = (source.clone(), gate.clone());
        move || async move {
            let text = source.lock().unwrap().clone();
            let _ = read_tx.send(());
            gate.wait().await;
            Ok::<_, std::io::Error>(Doc {
                text,
                _token: Some(token),
            })
        }
    };
    let current = a.get_or_load_owned("doc", "d", &opts, refresh).await;
    assert_eq!(current.unwrap().text, "old");
    tokio::time::timeout(STUCK, read_rx)
        .await
        .expect("the refresh never read the origin")
        .expect("no refresh started: its loader was dropped");
    // Then the origin changes and the key is invalidated, while the refresh holds "old".
    *source.lock().unwrap() = "new".to_string();
    a.invalidate("doc", "d").await;
    gate.open();
    // The last copy is the flight's record of the outcome, which the single-flight map (moka)
    // frees through deferred (epoch-based) destruction: `sync` runs moka maintenance, which
    // collects it. Once no copy is left, the refresh's load has returned, L1 step included.
    within(
        Duration::from_secs(5),
        "the refresh ends and no copy of its value is left (a copy left was stored in L1)",
        || async {
            a.run_pending_tasks().await;
            refresh_copies.strong_count() == 0
        },
    )
    .await;
    let s = a.stats().total;
    assert_eq!(s.loader.refreshes, 1, "the refresh ran and ended");
    assert_eq!(s.l2.write_conflicts, 1, "its write-back was refused");
    for (name, c) in [("A", &a), ("B", &b)] {
        assert!(
            c.get::<Doc>("doc", "d").await.is_none(),
            "{name}: the refresh stored its stale result"
        );
    }
    for (name, c) in [("A", &a), ("B", &b)] {
        let v = c.get_or_load_owned("doc", "d", &opts, load(&source)).await;
        assert_eq!(v.unwrap().text, "new", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfetch_refreshes_hot_keys_before_they_expire() {
    let _serial = serial().await;
    const LOADER: Duration = Duration::from_millis(100);
    let server = RedisServer::start();
    let cache = builder(&server, &unique_prefix("xfetch"))
        .kind(
            Kind::new("hot"),
            KindConfig::new(Duration::from_secs(2)).xfetch(3.0),
        )
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new();
    cache
        .get_or_load_owned("hot", "k", &opts, versioned(&calls, LOADER))
        .await
        .expect("cold");
    let loaded = Instant::now();
    // Read every 10 ms until just before the first value would have expired. With a 100 ms loader
    // and beta 3, a read at time-to-expiry d refreshes with probability exp(-d / 300 ms): about
    // 20 refreshing reads are expected, so none at all has a probability around e^-20.
    let mut slowest = Duration::ZERO;
    while loaded.elapsed() < Duration::from_millis(1_950) {
        let t = Instant::now();
        cache
            .get_or_load_owned("hot", "k", &opts, versioned(&calls, LOADER))
            .await
            .expect("read");
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = cache.stats().total;
    let s = &total.loader;
    println!(
        "XFetch: {} refreshes before expiry, slowest read {slowest:?} (loader {LOADER:?})",
        s.refreshes
    );
    assert!(s.refreshes >= 1, "no early refresh");
    assert_eq!(calls.load(Ordering::SeqCst) as u64, 1 + s.refreshes);
    assert!(
        s.refreshes <= 5,
        "refreshing on most reads: {}",
        s.refreshes
    );
    // A read waits for a load only when it finds no fresh value in L1: none did but the first.
    assert_eq!(total.l1.misses, 1, "a reader waited for a load: {total:?}");
}

// --- Loader timeouts -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_timeout_serves_the_stale_value_and_the_load_completes_in_the_background() {
    let _serial = serial().await;
    const SOFT: Duration = Duration::from_millis(100);
    let server = RedisServer::start();
    let cache = builder(&server, &unique_prefix("soft"))
        .fail_safe_grace(Duration::from_secs(30))
        .kind(
            Kind::new("slow"),
            KindConfig::new(Duration::from_millis(300))
                .soft_timeout(SOFT)
                .hard_timeout(Duration::from_secs(5)),
        )
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new();
    let v1 = cache
        .get_or_load_owned("slow", "k", &opts, versioned(&calls, Duration::ZERO))
        .await
        .expect("cold");
    assert_eq!(*v1, "v1");
    tokio::time::sleep(Duration::from_millis(500)).await; // expired, within the grace period

    // The load is held until released: a caller that waited for it would never finish.
    let gate = Gate::closed();
    let t = Instant::now();
    let got = cache.get_or_load_owned("slow", "k", &opts, gated(&calls, &gate));
    let got = tokio::time::timeout(STUCK, got)
        .await
        .expect("the caller waited for the loader past its soft timeout");
    let first = t.elapsed();
    assert_eq!(*got.expect("stale value"), "v1");
    // While that load goes on in the background, other callers get the stale value at once and
    // start no load of their own (a load started here would be counted: `calls` must end at 2).
    let t2 = Instant::now();
    let again = cache.get_or_load_owned("slow", "k", &opts, gated(&calls, &gate));
    let again = tokio::time::timeout(STUCK, again)
        .await
        .expect("the next caller waited for the load in the background");
    let second = t2.elapsed();
    assert_eq!(*again.expect("stale again"), "v1");
    gate.open();
    let updated = within(
        Duration::from_secs(5),
        "the background load lands",
        || async { cache.get::<String>("slow", "k").await.as_deref() == Some(&"v2".to_string()) },
    )
    .await;
    let s = cache.stats().total.loader;
    println!(
        "soft timeout {SOFT:?}, loader held: stale served after {first:?}, next caller {second:?}, cache updated {updated:?} after the loader's release"
    );
    assert!(
        first >= SOFT - Duration::from_millis(5),
        "served before the soft timeout: {first:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(s.soft_timeouts, 2, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stale_value_the_soft_timeout_does_not_cut_the_load_short() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let cache = builder(&server, &unique_prefix("soft-cold"))
        .kind(
            Kind::new("slow"),
            KindConfig::new(Duration::from_secs(60)).soft_timeout(Duration::from_millis(50)),
        )
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let v = cache
        .get_or_load_owned(
            "slow",
            "k",
            &EntryOptions::new(),
            versioned(&calls, Duration::from_millis(300)),
        )
        .await
        .expect("value");
    assert_eq!(*v, "v1");
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(cache.stats().total.loader.soft_timeouts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_timeout_gives_every_waiting_caller_a_loader_timeout_error() {
    let _serial = serial().await;
    const HARD: Duration = Duration::from_millis(200);
    let server = RedisServer::start();
    let cache = builder(&server, &unique_prefix("hard"))
        .kind(
            Kind::new("origin"),
            KindConfig::new(Duration::from_secs(60)).hard_timeout(HARD),
        )
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let r = cache
                    .get_or_load_owned(
                        "origin",
                        "k",
                        &EntryOptions::new(),
                        versioned(&calls, Duration::from_secs(3)),
                    )
                    .await;
                (t.elapsed(), r)
            })
        })
        .collect();
    let mut times = Vec::new();
    for t in tasks {
        let (took, r) = t.await.expect("task");
        match r {
            Err(LoadError::Cache(Error::LoaderTimeout(d))) => assert_eq!(d, HARD),
            other => panic!("expected a loader timeout, got {other:?}"),
        }
        times.push(took);
    }
    let (_, _, max) = summary(times.clone());
    let min = times.iter().min().copied().unwrap_or_default();
    println!("hard timeout {HARD:?}: 10 callers gave up after {min:?}..{max:?} (loader 3 s)");
    assert!(min >= HARD - Duration::from_millis(5), "{min:?}");
    assert!(max < Duration::from_secs(1), "{max:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one shared load");
    assert_eq!(cache.stats().total.loader.hard_timeouts, 1);
    // Nothing was cached: the next call loads again (quickly this time).
    let v = cache
        .get_or_load_owned(
            "origin",
            "k",
            &EntryOptions::new(),
            versioned(&calls, Duration::ZERO),
        )
        .await
        .expect("value");
    assert_eq!(*v, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_call_hard_timeout_with_a_stale_value_serves_the_stale_value() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let cache = builder(&server, &unique_prefix("hard-stale"))
        .fail_safe_grace(Duration::from_secs(30))
        .kind(
            Kind::new("origin"),
            KindConfig::new(Duration::from_millis(200)),
        )
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = OwnedOptions::new().hard_timeout(Duration::from_millis(150));
    cache
        .get_or_load_owned("origin", "k", &opts, versioned(&calls, Duration::ZERO))
        .await
        .expect("cold");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let v = cache
        .get_or_load_owned(
            "origin",
            "k",
            &opts,
            versioned(&calls, Duration::from_secs(3)),
        )
        .await
        .expect("stale value");
    assert_eq!(*v, "v1");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let s = cache.stats().total.loader;
    assert_eq!((s.hard_timeouts, s.stale_served), (1, 1));
}

// --- Distributed single-flight -------------------------------------------------------------------

/// Two instances sharing one Redis, 100 concurrent callers each on one cold key; returns the
/// number of loader calls, the callers' latencies and the two caches.
async fn two_instances_one_cold_key(
    server: &RedisServer,
    lock: bool,
    loader_time: Duration,
) -> (usize, Vec<Duration>, Cache, Cache) {
    let prefix = unique_prefix(if lock { "lock" } else { "nolock" });
    let kind = KindConfig::new(Duration::from_secs(60)).distributed_lock(lock);
    let a = builder(server, &prefix)
        .kind(Kind::new("origin"), kind.clone())
        .build()
        .await
        .expect("build");
    let b = builder(server, &prefix)
        .kind(Kind::new("origin"), kind)
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(200));
    let mut tasks = Vec::new();
    for cache in [&a, &b] {
        for _ in 0..100 {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let t = Instant::now();
                // The borrowed-loader API: the lock applies to it too.
                let v = cache
                    .get_or_load("origin", "cold", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(loader_time).await;
                        Ok::<_, std::io::Error>("expensive answer".to_string())
                    })
                    .await
                    .expect("value");
                assert_eq!(*v, "expensive answer");
                t.elapsed()
            }));
        }
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.push(t.await.expect("caller"));
    }
    (calls.load(Ordering::SeqCst), latencies, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_the_lock_make_one_loader_call_for_200_callers() {
    let _serial = serial().await;
    const LOADER: Duration = Duration::from_millis(300);
    let server = RedisServer::start();
    let (calls, latencies, a, b) = two_instances_one_cold_key(&server, true, LOADER).await;
    let (p50, p99, max) = summary(latencies);
    let (la, lb) = (a.stats().total.lock, b.stats().total.lock);
    println!(
        "with the lock: {calls} loader call(s) for 2 x 100 callers; latency p50 {p50:?} p99 {p99:?} max {max:?} (loader {LOADER:?}); lock A {la:?} B {lb:?}"
    );
    assert_eq!(calls, 1);
    assert_eq!(la.acquired + lb.acquired, 1);
    assert_eq!(la.waits + lb.waits, 1, "the other instance's load waited");
    assert_eq!(la.fallbacks + lb.fallbacks, 0);
    // The waiter is woken by the backplane notice, not a late poll.
    assert!(max < LOADER * 2, "max {max:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_without_the_lock_each_call_the_loader() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let (calls, _, _, _) =
        two_instances_one_cold_key(&server, false, Duration::from_millis(300)).await;
    println!("without the lock: {calls} loader calls for 2 x 100 callers");
    assert_eq!(calls, 2, "one per instance (local single-flight only)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_lock_holder_dies_a_waiter_loads_once_its_lock_expires() {
    let _serial = serial().await;
    const LOCK_TTL: Duration = Duration::from_millis(600);
    let server = RedisServer::start();
    let prefix = unique_prefix("lock-dead");
    let cache = builder(&server, &prefix)
        .distributed_lock_ttl(LOCK_TTL)
        .distributed_lock_wait(Duration::from_secs(10))
        .kind(
            Kind::new("origin"),
            KindConfig::new(Duration::from_secs(60)).distributed_lock(true),
        )
        .build()
        .await
        .expect("build");
    // What a crashed holder leaves behind: its lock, with its own token, until PX expires.
    let mut conn = server.conn().await;
    let lock_key = format!("{prefix}:lock:v1:origin:k");
    let _: () = redis::cmd("SET")
        .arg(&lock_key)
        .arg("token-of-a-dead-instance")
        .arg("PX")
        .arg(LOCK_TTL.as_millis() as u64)
        .query_async(&mut conn)
        .await
        .expect("SET lock");
    let calls = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load_owned(
                        "origin",
                        "k",
                        &EntryOptions::new(),
                        versioned(&calls, Duration::from_millis(50)),
                    )
                    .await
                    .expect("value")
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(*task.await.expect("caller"), "v1");
    }
    let took = t.elapsed();
    let l = cache.stats().total.lock;
    println!("dead holder: waiters got the value after {took:?} (lock TTL {LOCK_TTL:?}); {l:?}");
    assert!(
        took >= LOCK_TTL - Duration::from_millis(100),
        "did not wait for the lock: {took:?}"
    );
    assert!(took < LOCK_TTL + Duration::from_secs(1), "{took:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!((l.waits, l.acquired, l.fallbacks), (1, 1, 0));
    // Released with compare-and-delete after the load.
    let exists: bool = redis::cmd("EXISTS")
        .arg(&lock_key)
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(!exists, "the lock was not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_load_locally_after_the_wait_bound_or_when_redis_is_down() {
    let _serial = serial().await;
    const WAIT: Duration = Duration::from_millis(400);
    let mut server = RedisServer::start();
    let prefix = unique_prefix("lock-bound");
    let cache = builder(&server, &prefix)
        .distributed_lock_wait(WAIT)
        .breaker_failure_threshold(1)
        .kind(
            Kind::new("origin"),
            KindConfig::new(Duration::from_secs(60)).distributed_lock(true),
        )
        .build()
        .await
        .expect("build");
    // A lock held (by a slow or stuck instance) for much longer than the wait bound.
    let mut conn = server.conn().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:lock:v1:origin:k"))
        .arg("someone-else")
        .arg("PX")
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .expect("SET lock");
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new();
    let t = Instant::now();
    let v = cache
        .get_or_load_owned("origin", "k", &opts, versioned(&calls, Duration::ZERO))
        .await
        .expect("value");
    let took = t.elapsed();
    assert_eq!(*v, "v1");
    assert!(took >= WAIT - Duration::from_millis(20), "{took:?}");
    assert!(took < WAIT + Duration::from_millis(600), "{took:?}");
    assert_eq!(cache.stats().total.lock.fallbacks, 1);

    // Redis gone: no waiting at all, the load runs locally.
    server.kill();
    let t = Instant::now();
    let v = cache
        .get_or_load_owned("origin", "other", &opts, versioned(&calls, Duration::ZERO))
        .await
        .expect("value without Redis");
    assert_eq!(*v, "v2");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    println!(
        "wait bound {WAIT:?}: fell back after {took:?}; Redis down: loaded locally in {:?}",
        t.elapsed()
    );
    assert_eq!(cache.stats().total.lock.fallbacks, 2);
}

// --- TTL jitter ----------------------------------------------------------------------------------

/// PTTLs (ms) of `n` keys written by `cache` with `set`.
async fn pttls(server: &RedisServer, cache: &Cache, kind: &str, n: usize) -> Vec<i64> {
    for i in 0..n {
        cache.set(kind, &format!("k{i}"), i as u64).await;
    }
    let mut conn = server.conn().await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{}:v1:{kind}:k{i}", cache.prefix());
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        out.push(pttl);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_jitter_spreads_l2_ttls_within_the_configured_fraction() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let ttl = Duration::from_secs(100);
    let jittered = builder(&server, &unique_prefix("jitter"))
        .ttl_jitter(0.1)
        .kind(Kind::new("j"), KindConfig::new(ttl))
        .kind(Kind::new("half"), KindConfig::new(ttl).ttl_jitter(0.5))
        .build()
        .await
        .expect("build");
    let plain = builder(&server, &unique_prefix("no-jitter"))
        .kind(Kind::new("j"), KindConfig::new(ttl))
        .build()
        .await
        .expect("build");
    let n = 300;
    let spread = |v: &[i64]| v.iter().max().unwrap() - v.iter().min().unwrap();
    let distinct = |v: &[i64]| v.iter().collect::<std::collections::HashSet<_>>().len();

    let j = pttls(&server, &jittered, "j", n).await;
    // Cut by 0-10%: within (90 s, 100 s], minus the time the test took.
    assert!(j.iter().all(|p| (89_000..=100_000).contains(p)), "{j:?}");
    let mean = j.iter().sum::<i64>() / n as i64;
    println!(
        "jitter 10%: {} distinct PTTLs of {n}, spread {} ms, mean {mean} ms",
        distinct(&j),
        spread(&j)
    );
    assert!(distinct(&j) > n / 2, "{}", distinct(&j));
    assert!(spread(&j) > 7_000, "{}", spread(&j));
    assert!((93_000..97_000).contains(&mean), "{mean}");

    let h = pttls(&server, &jittered, "half", n).await;
    assert!(h.iter().all(|p| (49_000..=100_000).contains(p)));
    assert!(spread(&h) > 35_000, "the kind's own fraction applies");

    // Without jitter every key gets the same TTL (less the few ms the writes took).
    let p = pttls(&server, &plain, "j", n).await;
    assert!(spread(&p) < 2_000, "{}", spread(&p));
    assert!(p.iter().all(|p| (98_000..=100_000).contains(p)));
}

// --- Invalidations during an outage --------------------------------------------------------------

/// The origin of the SIGSTOP test: current values by key.
type Origin = Arc<StdMutex<std::collections::HashMap<&'static str, String>>>;

fn from(origin: &Origin, key: &'static str) -> impl FnOnce() -> std::future::Ready<Res<String>> {
    let v = origin.lock().unwrap()[key].clone();
    move || std::future::ready(Ok(v))
}

async fn read(c: &Cache, origin: &Origin, key: &'static str) -> String {
    let opts = if key == "tagged" {
        EntryOptions::new().tags(["team:1"])
    } else {
        EntryOptions::new()
    };
    (*c.get_or_load_with("doc", key, &opts, from(origin, key))
        .await
        .expect("read"))
    .clone()
}

/// Redis hung for `hang`; meanwhile instance A invalidates a key, invalidates a tag, and sets a
/// third key. After SIGCONT, no read on A, on B (which held the old values in L1) or on a fresh
/// instance C returns an old value.
async fn invalidations_during_sigstop(hang: Duration) {
    let server = RedisServer::start();
    let prefix = unique_prefix("outage");
    let mk = || async {
        builder(&server, &prefix)
            .l2_timeout(Duration::from_millis(100))
            .breaker_cooldown(Duration::from_millis(200), Duration::from_millis(800))
            .kind(Kind::new("doc"), KindConfig::new(Duration::from_secs(300)))
            .build()
            .await
            .expect("build")
    };
    let (a, b) = (mk().await, mk().await);
    let origin: Origin = Arc::new(StdMutex::new(
        [("plain", "old"), ("tagged", "old"), ("written", "old")]
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
    ));
    let keys = ["plain", "tagged", "written"];
    for k in keys {
        assert_eq!(read(&a, &origin, k).await, "old");
        assert_eq!(read(&b, &origin, k).await, "old"); // B: in L1 for 300 s
    }

    server.pause();
    let stopped = Instant::now();
    for k in keys {
        origin.lock().unwrap().insert(k, "new".to_string());
    }
    a.invalidate("doc", "plain").await;
    a.invalidate_tag("team:1").await;
    a.set("doc", "written", "new".to_string()).await;
    let p = a.stats().pending_invalidations;
    assert_eq!(p.pending, 3, "{p:?}");
    // A never serves an old value, though L2 still holds them all.
    for k in keys {
        assert_eq!(read(&a, &origin, k).await, "new", "A during the outage");
    }
    tokio::time::sleep(hang.saturating_sub(stopped.elapsed())).await;
    server.resume();
    let resumed = Instant::now();
    let replayed = within(Duration::from_secs(10), "replay after SIGCONT", || async {
        a.stats().pending_invalidations.pending == 0
    })
    .await;
    // B drops its L1 copies when the replay's backplane messages arrive (or when its
    // subscription, silent during the hang, is replaced and L1 flushed).
    let b_synced = within(
        Duration::from_secs(5),
        "B serves the new values",
        || async {
            let mut all = true;
            for k in keys {
                all &= read(&b, &origin, k).await == "new";
            }
            all
        },
    )
    .await;
    let c = mk().await;
    for round in 0..100 {
        for k in keys {
            for (name, cache) in [("A", &a), ("B", &b), ("C", &c)] {
                assert_eq!(
                    read(cache, &origin, k).await,
                    "new",
                    "{name} read an old {k} (round {round})"
                );
            }
        }
    }
    let p = a.stats().pending_invalidations;
    println!(
        "SIGSTOP {hang:?}: 3 invalidations queued; replayed {replayed:?} after SIGCONT; B served the new values {b_synced:?} later; {p:?}"
    );
    assert!(p.replayed >= 3, "{p:?}");
    assert_eq!(p.dropped, 0);
    assert!(resumed.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_made_while_redis_is_sigstopped_take_effect_after_sigcont() {
    let _serial = serial().await;
    // Shorter than the backplane's silence limit: B keeps its subscription, so only the replay's
    // messages can tell it.
    invalidations_during_sigstop(Duration::from_millis(1_500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_made_while_the_breaker_is_open_are_replayed_once_it_closes() {
    let _serial = serial().await;
    // Long enough for A's breaker to open and B's subscription to be replaced.
    invalidations_during_sigstop(Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_breaker_is_open_l1_entries_live_only_briefly() {
    let _serial = serial().await;
    let mut server = RedisServer::start();
    let cache = builder(&server, &unique_prefix("short-l1"))
        .breaker_failure_threshold(1)
        .breaker_open_l1_ttl(Duration::from_millis(300))
        .kind(Kind::new("doc"), KindConfig::new(Duration::from_secs(60)))
        .build()
        .await
        .expect("build");
    let calls = Arc::new(AtomicUsize::new(0));
    let opts = EntryOptions::new();
    let get = |key: &'static str| {
        cache.get_or_load_owned("doc", key, &opts, versioned(&calls, Duration::ZERO))
    };
    // Breaker closed: a 60 s entry.
    get("healthy").await.expect("load");
    tokio::time::sleep(Duration::from_millis(500)).await;
    get("healthy").await.expect("hit");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    server.kill();
    within(Duration::from_secs(5), "breaker open", || async {
        let _ = get("probe").await;
        cache.breaker_state() == Some(cache_core::BreakerState::Open)
    })
    .await;
    let before = calls.load(Ordering::SeqCst);
    get("outage").await.expect("load");
    get("outage").await.expect("hit");
    assert_eq!(calls.load(Ordering::SeqCst), before + 1, "an L1 hit first");
    tokio::time::sleep(Duration::from_millis(500)).await;
    get("outage").await.expect("reload");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before + 2,
        "the entry outlived the breaker-open L1 TTL"
    );
}
