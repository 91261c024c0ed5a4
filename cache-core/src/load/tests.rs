//! Unit tests of the read path and its single-flight, on an L1-only cache with tokio's clock
//! paused: time moves only when every task is waiting, so "the loader takes 50 ms" or "a hard
//! timeout of 200 ms" involve no real waiting and cannot race the scheduler. Orderings ("an
//! invalidation while the load runs") are made with events: a loader that says it has started and
//! waits until the test releases it. No test sleeps to let something happen.
//!
//! L1 lifetimes are measured on the monotonic wall clock, not on tokio's: moka's expiry reads
//! `std::time::Instant` (its mock clock exists only inside moka's own tests), and so does our
//! freshness check (`L1Entry::is_fresh`). Advancing the paused clock therefore expires nothing
//! (checked below). Expiry is tested with a TTL of milliseconds and a real wait past it
//! (`std::thread::sleep`): only more time than asked for can pass, so those checks cannot flake,
//! and what must still be fresh has a TTL of an hour.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{oneshot, Barrier};
use tokio::time::Instant;

use crate::{Cache, EntryOptions, Error, Kind, KindConfig, LoadError, OwnedOptions};

const KIND: &str = "unit";
const HOUR: Duration = Duration::from_secs(3600);

/// The loaders below: owned and boxed, so that they fit every entry point.
type TestLoader = Box<dyn FnOnce() -> BoxFuture<'static, io::Result<String>> + Send>;

fn boxed(
    f: impl Future<Output = io::Result<String>> + Send + 'static,
) -> BoxFuture<'static, io::Result<String>> {
    Box::pin(f)
}

async fn cache() -> Cache {
    cache_with(Cache::builder()).await
}

async fn cache_with(builder: crate::CacheBuilder) -> Cache {
    builder
        .prefix("load-tests")
        .kind(Kind::new(KIND), KindConfig::new(HOUR))
        .build()
        .await
        .expect("an L1-only cache builds")
}

/// Counts loader calls.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// A loader that counts its call, takes `took` (of tokio's clock) and returns `value`.
    fn loader(&self, took: Duration, value: &str) -> TestLoader {
        let (calls, value) = (self.0.clone(), value.to_owned());
        Box::new(move || {
            boxed(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(took).await;
                Ok(value)
            })
        })
    }

    /// A loader that counts its call, takes `took` and fails.
    fn failing(&self, took: Duration) -> TestLoader {
        let calls = self.0.clone();
        Box::new(move || {
            boxed(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(took).await;
                Err(io::Error::other("origin down"))
            })
        })
    }
}

/// A loader for a call that must be answered without loading.
fn must_not_run(why: &'static str) -> TestLoader {
    Box::new(move || boxed(async move { unreachable!("the loader ran: {why}") }))
}

/// The test's side of a [`held`] loader.
struct Held {
    /// Fires once the loader has started.
    started: oneshot::Receiver<()>,
    /// Lets the loader return.
    release: oneshot::Sender<()>,
}

/// A loader that says when it has started, then returns `value` only once released: the load
/// stays in flight for exactly as long as the test needs.
fn held(value: &str) -> (Held, TestLoader) {
    let (started_tx, started) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    let value = value.to_owned();
    let loader: TestLoader = Box::new(move || {
        boxed(async move {
            let _ = started_tx.send(());
            released.await.expect("the test released the loader");
            Ok(value)
        })
    });
    (Held { started, release }, loader)
}

/// Starts `get_or_load` of `key` in its own task.
fn spawn_load(
    cache: &Cache,
    key: &'static str,
    loader: TestLoader,
) -> tokio::task::JoinHandle<Result<Arc<String>, Arc<io::Error>>> {
    let cache = cache.clone();
    tokio::spawn(async move { cache.get_or_load(KIND, key, loader).await })
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_of_one_key_share_one_loader_call() {
    const CALLERS: usize = 16;
    let cache = cache().await;
    let calls = Calls::default();
    let barrier = Arc::new(Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_load(KIND, "k", calls.loader(Duration::from_millis(50), "v"))
                    .await
            })
        })
        .collect();
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.expect("caller").expect("value"));
    }
    assert_eq!(calls.get(), 1, "one loader call for {CALLERS} callers");
    assert!(
        values.iter().all(|v| Arc::ptr_eq(v, &values[0])),
        "every caller got the one loaded value"
    );
    // The clock stood still until every caller was waiting: each of them missed L1, so each one
    // joined the load rather than finding its result in L1 afterwards.
    let s = cache.stats().total;
    assert_eq!((s.l1.misses, s.l1.hits), (CALLERS as u64, 0));
    assert_eq!(s.loader.calls, 1);
    let hit = cache
        .get_or_load(KIND, "k", must_not_run("the value is in L1"))
        .await
        .expect("hit");
    assert!(Arc::ptr_eq(&hit, &values[0]));
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_of_different_keys_load_each_key_once() {
    const KEYS: [&str; 4] = ["a", "b", "c", "d"];
    let cache = cache().await;
    let calls: Vec<Calls> = KEYS.iter().map(|_| Calls::default()).collect();
    let barrier = Arc::new(Barrier::new(KEYS.len() * 4));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        for (key, calls) in KEYS.into_iter().zip(&calls) {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let v = cache
                    .get_or_load(KIND, key, calls.loader(Duration::from_millis(50), key))
                    .await
                    .expect("value");
                (key, v)
            }));
        }
    }
    for t in tasks {
        let (key, v) = t.await.expect("caller");
        assert_eq!(*v, key, "a caller got another key's value");
    }
    for (key, calls) in KEYS.iter().zip(&calls) {
        assert_eq!(calls.get(), 1, "loader calls of {key}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_gives_its_error_to_every_waiter_and_is_not_cached() {
    const CALLERS: usize = 8;
    let cache = cache().await;
    let calls = Calls::default();
    let barrier = Arc::new(Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_load(KIND, "k", calls.failing(Duration::from_millis(50)))
                    .await
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.expect("caller") {
            Err(e) => errors.push(e),
            Ok(v) => panic!("a caller got a value from a failed load: {v:?}"),
        }
    }
    assert_eq!(
        calls.get(),
        1,
        "one failed loader call for {CALLERS} callers"
    );
    assert!(
        errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])),
        "every caller got the one error"
    );
    assert_eq!(errors[0].to_string(), "origin down");
    let s = cache.stats().total.loader;
    assert_eq!((s.calls, s.errors), (1, 1));

    // Not cached: the next call loads again, and its value is cached.
    let v = cache
        .get_or_load(KIND, "k", calls.loader(Duration::ZERO, "recovered"))
        .await
        .expect("value");
    assert_eq!(*v, "recovered");
    assert_eq!(calls.get(), 2);
    assert_eq!(
        cache.get::<String>(KIND, "k").await.as_deref(),
        Some(&"recovered".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_load_invalidated_while_in_flight_does_not_store_its_result() {
    let cache = cache().await;
    let (held, loader) = held("old");
    let leader = spawn_load(&cache, "k", loader);
    held.started.await.expect("the loader started");
    cache.invalidate(KIND, "k").await;
    held.release.send(()).expect("the load is waiting");
    let got = leader.await.expect("leader").expect("value");
    assert_eq!(*got, "old", "the caller gets what its loader returned");

    assert_eq!(
        cache.get::<String>(KIND, "k").await,
        None,
        "the load stored its result after the invalidation"
    );
    let calls = Calls::default();
    let v = cache
        .get_or_load(KIND, "k", calls.loader(Duration::ZERO, "new"))
        .await
        .expect("value");
    assert_eq!((v.as_str(), calls.get()), ("new", 1));
}

#[tokio::test(start_paused = true)]
async fn callers_arriving_after_an_invalidation_start_a_new_load_instead_of_joining_the_old_one() {
    let cache = cache().await;
    let (held, loader) = held("old");
    let leader = spawn_load(&cache, "k", loader);
    held.started.await.expect("the loader started");
    cache.invalidate(KIND, "k").await;

    // The old load is held until released: a caller that joined it would wait forever (the
    // timeout fires as soon as nothing else can run, since the clock is paused).
    let calls = Calls::default();
    let late = tokio::time::timeout(
        HOUR,
        cache.get_or_load(KIND, "k", calls.loader(Duration::from_millis(10), "new")),
    )
    .await
    .expect("the late caller joined the load that began before the invalidation")
    .expect("value");
    assert_eq!((late.as_str(), calls.get()), ("new", 1));

    held.release.send(()).expect("the old load is waiting");
    assert_eq!(*leader.await.expect("leader").expect("value"), "old");
    assert_eq!(
        cache.get::<String>(KIND, "k").await.as_deref(),
        Some(&"new".to_owned()),
        "the older load overwrote the newer value"
    );
}

#[tokio::test(start_paused = true)]
async fn a_set_during_a_load_wins_over_the_loaded_value() {
    let cache = cache().await;
    let (held, loader) = held("loaded");
    let leader = spawn_load(&cache, "k", loader);
    held.started.await.expect("the loader started");
    cache.set(KIND, "k", "set".to_owned()).await;
    held.release.send(()).expect("the load is waiting");
    assert_eq!(*leader.await.expect("leader").expect("value"), "loaded");

    assert_eq!(
        cache.get::<String>(KIND, "k").await.as_deref(),
        Some(&"set".to_owned()),
        "the load overwrote the set"
    );
    let v = cache
        .get_or_load(KIND, "k", must_not_run("the set value is in L1"))
        .await
        .expect("value");
    assert_eq!(*v, "set");
}

#[tokio::test(start_paused = true)]
async fn a_hard_timeout_fails_every_waiter_at_the_timeout_and_caches_nothing() {
    const HARD: Duration = Duration::from_millis(200);
    const CALLERS: usize = 8;
    let cache = cache().await;
    let opts = OwnedOptions::new().hard_timeout(HARD);
    let calls = Calls::default();
    let barrier = Arc::new(Barrier::new(CALLERS));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, calls, barrier, opts) =
                (cache.clone(), calls.clone(), barrier.clone(), opts.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let r = cache
                    .get_or_load_owned(KIND, "k", &opts, calls.loader(HOUR, "too late"))
                    .await;
                (r, start.elapsed())
            })
        })
        .collect();
    for t in tasks {
        match t.await.expect("caller") {
            (Err(LoadError::Cache(Error::LoaderTimeout(d))), took) => {
                assert_eq!(d, HARD);
                // Paused time: exactly the timeout (to the timer wheel's millisecond).
                assert!(
                    took >= HARD && took <= HARD + Duration::from_millis(1),
                    "{took:?}"
                );
            }
            (other, _) => panic!("expected a loader timeout, got {other:?}"),
        }
    }
    assert_eq!(calls.get(), 1, "one shared load");
    assert_eq!(cache.stats().total.loader.hard_timeouts, 1);
    let v = cache
        .get_or_load_owned(KIND, "k", &opts, calls.loader(Duration::ZERO, "fast"))
        .await
        .expect("value");
    assert_eq!((v.as_str(), calls.get()), ("fast", 2));
}

#[tokio::test(start_paused = true)]
async fn a_soft_timeout_serves_the_stale_value_and_the_load_lands_in_the_background() {
    const SOFT: Duration = Duration::from_millis(100);
    const LOADER: Duration = Duration::from_secs(10);
    let cache = cache_with(Cache::builder().fail_safe_grace(HOUR)).await;
    let calls = Calls::default();
    let short = EntryOptions::new().ttl(Duration::from_millis(1));
    cache
        .get_or_load_with(KIND, "k", &short, calls.loader(Duration::ZERO, "v1"))
        .await
        .expect("cold load");
    // Past its freshness on the wall clock (see the module comment), within the grace period.
    std::thread::sleep(Duration::from_millis(5));

    let opts = OwnedOptions::from(EntryOptions::new().ttl(HOUR)).soft_timeout(SOFT);
    let start = Instant::now();
    let first = cache
        .get_or_load_owned(KIND, "k", &opts, calls.loader(LOADER, "v2"))
        .await
        .expect("the stale value");
    let first_took = start.elapsed();
    assert_eq!(*first, "v1");
    assert!(
        first_took >= SOFT && first_took <= SOFT + Duration::from_millis(1),
        "{first_took:?}"
    );
    // While the load goes on, the next caller gets the stale value without waiting for anything
    // (no time passes) and without a load of its own.
    let second = cache
        .get_or_load_owned(
            KIND,
            "k",
            &opts,
            must_not_run("a load of the key is running"),
        )
        .await
        .expect("the stale value");
    assert_eq!(*second, "v1");
    assert_eq!(start.elapsed(), first_took, "the second caller waited");
    assert_eq!(cache.get::<String>(KIND, "k").await, None, "v1 is stale");

    // The load ends at LOADER and stores v2 before the clock can move on (paused time moves only
    // while every task waits).
    tokio::time::sleep_until(start + LOADER + Duration::from_millis(1)).await;
    assert_eq!(
        cache.get::<String>(KIND, "k").await.as_deref(),
        Some(&"v2".to_owned())
    );
    assert_eq!(calls.get(), 2);
    assert_eq!(cache.stats().total.loader.soft_timeouts, 2);
}

#[tokio::test(start_paused = true)]
async fn l1_entries_expire_at_their_ttl_on_the_wall_clock_not_on_tokios_clock() {
    let cache = cache().await;
    let calls = Calls::default();
    let short = EntryOptions::new().ttl(Duration::from_millis(20));
    let long = EntryOptions::new().ttl(HOUR);
    for (key, opts) in [("short", &short), ("long", &long)] {
        cache
            .get_or_load_with(KIND, key, opts, calls.loader(Duration::ZERO, key))
            .await
            .expect("load");
    }
    // Two hours of tokio's clock: nothing expires.
    tokio::time::advance(2 * HOUR).await;
    // 30 ms of the wall clock: the 20 ms entry has expired, the one-hour entry has not.
    std::thread::sleep(Duration::from_millis(30));
    let long_v = cache
        .get_or_load_with(KIND, "long", &long, must_not_run("fresh for an hour"))
        .await
        .expect("hit");
    assert_eq!(*long_v, "long");
    let short_v = cache
        .get_or_load_with(KIND, "short", &short, calls.loader(Duration::ZERO, "again"))
        .await
        .expect("reload");
    assert_eq!(*short_v, "again", "served past its TTL");
    assert_eq!(calls.get(), 3);
}

/// Compile-time: every public read and write returns a `Send` future (so that it can run in a
/// spawned task), also with a loader that borrows from the caller.
#[tokio::test]
async fn the_read_and_write_futures_are_send() {
    fn send<F: Future + Send>(f: F) -> F {
        f
    }
    let cache = cache().await;
    let borrowed = String::from("a loader may borrow this");
    let opts = EntryOptions::new();
    let load = || async { Ok::<_, io::Error>(borrowed.clone()) };
    send(cache.get_or_load(KIND, "a", load))
        .await
        .expect("load");
    send(cache.get_or_load_with(KIND, "b", &opts, load))
        .await
        .expect("load");
    send(cache.get_or_load_traced(KIND, "c", &opts, load))
        .await
        .expect("load");
    send(cache.get_or_load_owned(
        KIND,
        "d",
        &opts,
        Calls::default().loader(Duration::ZERO, "d"),
    ))
    .await
    .expect("load");
    assert!(send(cache.get::<String>(KIND, "a")).await.is_some());
    send(cache.set(KIND, "e", 1u32)).await;
    send(cache.set_with(KIND, "f", 2u32, &opts)).await;
    send(cache.invalidate(KIND, "e")).await;
    send(cache.invalidate_tag("t")).await;
}

/// An L1 hit pays for the size of the future it awaits (moved into its caller's state): the miss
/// path (L2 read, single-flight, loader, write-back, and the full key it holds inline) is boxed so
/// that it stays out of it. Inline, `get_or_load`'s future was ~8.7 KB; with the miss path boxed
/// both are about 1 KB (mostly moka's own `get` future).
#[tokio::test(start_paused = true)]
async fn the_futures_of_the_read_path_keep_the_miss_path_out_of_an_l1_hit() {
    let c = cache().await;
    let get = c.get::<String>(KIND, "k");
    let get_or_load = c.get_or_load(KIND, "k", || async { Ok::<_, io::Error>("v".to_string()) });
    let sizes = [
        std::mem::size_of_val(&get),
        std::mem::size_of_val(&get_or_load),
    ];
    assert!(
        sizes.iter().all(|&s| s <= 2048),
        "futures of {sizes:?} bytes"
    );
    drop((get, get_or_load));
}
