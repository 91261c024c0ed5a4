//! `#[cached]` freshness arguments end to end against a real redis-server: `refresh` and `xfetch`
//! (one background refresh, callers get the current value meanwhile), `soft_timeout` (the stale
//! value after the soft timeout, the body finishing in the background), `hard_timeout` (the
//! function's own error type, from `cache_core::Error::LoaderTimeout`) and `lock` (one body run
//! for two instances). In these modes the body runs on owned copies of its arguments and of
//! `self`: the tests use `&str` arguments, `&self` methods, `mut` arguments and `unless` reading
//! `self`.
//!
//! "No caller waits for the body" is checked with the body held at a [`Gate`] until the callers
//! are done (a caller that waited for it would never finish), not with a latency bound. Other
//! timings are relations with generous margins; the tests run one at a time (`serial()`) so that
//! their timings do not disturb each other on a 2-core machine.

use cache_core::{cached, Cache};
use cache_tests::{init_tracing, serial, unique_prefix, within, Gate, RedisServer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// A bound on what must finish at once: only reached by a caller stuck behind a held body.
const STUCK: Duration = Duration::from_secs(20);

async fn cache_with_grace(server: &RedisServer, prefix: &str) -> Cache {
    init_tracing();
    Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .fail_safe_grace(Duration::from_secs(30))
        .build()
        .await
        .expect("build cache")
}

#[derive(Debug, Clone)]
enum QuoteError {
    Cache(cache_core::Error),
}

impl From<cache_core::Error> for QuoteError {
    fn from(e: cache_core::Error) -> Self {
        QuoteError::Cache(e)
    }
}

/// A service whose `#[cached]` methods count their runs, take `delay_ms` each and wait at `gate`
/// (open unless a test closes it). `Clone` (cheap: `Arc`s and a `Cache` handle), as background
/// mode clones `self` into the body.
#[derive(Clone)]
struct Quotes {
    cache: Cache,
    calls: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    gate: Gate,
    max_len: usize,
}

impl Quotes {
    fn new(cache: Cache) -> Self {
        Quotes {
            cache,
            calls: Arc::new(AtomicUsize::new(0)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            gate: Gate::opened(),
            max_len: 64,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// One body run: `{symbol}:v{run number}` after the current delay, once the gate is open.
    async fn origin(&self, symbol: &str) -> String {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        tokio::time::sleep(delay).await;
        self.gate.wait().await;
        format!("{symbol}:v{n}")
    }

    #[cached(kind = "api_response", ttl = Duration::from_secs(4), refresh = 0.25, cache = self.cache)]
    async fn price(&self, symbol: &str) -> String {
        self.origin(symbol).await
    }

    #[cached(kind = "api_response", ttl = Duration::from_secs(2), xfetch = 4.0, cache = self.cache)]
    async fn price_xfetch(&self, symbol: &str) -> String {
        self.origin(symbol).await
    }

    #[cached(
        kind = "api_response",
        ttl = Duration::from_millis(300),
        soft_timeout = "100ms",
        cache = self.cache
    )]
    async fn report(&self, symbol: &str) -> Option<String> {
        Some(self.origin(symbol).await)
    }

    #[cached(kind = "api_response", hard_timeout = "200ms", cache = self.cache)]
    async fn fetch(&self, symbol: &str) -> Result<String, QuoteError> {
        Ok(self.origin(symbol).await)
    }

    /// Refused by `unless` (which reads `self`) when longer than `self.max_len`.
    #[cached(
        kind = "api_response",
        refresh = 0.8,
        unless = result.len() > self.max_len,
        cache = self.cache
    )]
    async fn bounded(&self, symbol: &str) -> String {
        self.origin(symbol).await
    }

    /// The lock without a background argument: the body may borrow (no copies are made).
    #[cached(kind = "api_response", lock, cache = self.cache)]
    async fn answer(&self, question: &str) -> String {
        self.origin(question).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_argument_refreshes_once_in_the_background_while_callers_get_the_current_value() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let q = Quotes::new(cache_with_grace(&server, &unique_prefix("bg-refresh")).await);
    assert_eq!(q.price("ACME").await, "ACME:v1");
    // Past a quarter of the 4 s TTL; the refresh's body is held until every caller is done.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    q.gate.close();

    let callers = 30;
    let barrier = Arc::new(Barrier::new(callers));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (q, barrier) = (q.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let t = Instant::now();
                let v = q.price("ACME").await;
                (t.elapsed(), v)
            })
        })
        .collect();
    let all_done = tokio::time::timeout(STUCK, futures::future::join_all(tasks))
        .await
        .expect("a caller waited for the refresh (its body is held until the callers are done)");
    let mut slowest = Duration::ZERO;
    for done in all_done {
        let (took, v) = done.expect("caller");
        assert_eq!(
            v, "ACME:v1",
            "callers get the current value during the refresh"
        );
        slowest = slowest.max(took);
    }
    within(
        Duration::from_secs(5),
        "the refresh's body runs",
        || async { q.calls() == 2 },
    )
    .await;
    q.gate.open();
    let landed = within(Duration::from_secs(3), "the refresh lands", || async {
        q.price("ACME").await == "ACME:v2"
    })
    .await;
    println!(
        "#[cached(refresh = 0.25)]: {callers} callers past the threshold while the refresh was \
         held, slowest {slowest:?}; refreshed value served {landed:?} after its release; body runs {}",
        q.calls()
    );
    assert_eq!(q.calls(), 2, "the first load and exactly one refresh");
    assert_eq!(q.cache.stats().total.loader.refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfetch_argument_refreshes_a_hot_key_before_it_expires() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let q = Quotes::new(cache_with_grace(&server, &unique_prefix("bg-xfetch")).await);
    // A slow body makes XFetch refresh early (beta 4, 300 ms loads, 2 s TTL).
    q.set_delay(Duration::from_millis(300));
    assert_eq!(q.price_xfetch("ACME").await, "ACME:v1");
    let t = Instant::now();
    let refreshed = within(Duration::from_secs(3), "an early refresh", || async {
        q.price_xfetch("ACME").await != "ACME:v1"
    })
    .await;
    println!("#[cached(xfetch = 4.0)]: refreshed {refreshed:?} into a 2 s TTL");
    assert!(
        t.elapsed() < Duration::from_millis(2_000),
        "refreshed only at expiry: {:?}",
        t.elapsed()
    );
    // (The read that saw the new value may itself draw an early refresh of it: at least one.)
    assert!(q.cache.stats().total.loader.refreshes >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_timeout_argument_serves_the_stale_value_and_the_body_finishes_in_the_background() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let q = Quotes::new(cache_with_grace(&server, &unique_prefix("bg-soft")).await);
    assert_eq!(q.report("ACME").await.as_deref(), Some("ACME:v1"));
    // Expired, within the grace period.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The body is held until released: a caller that waited for it would never finish.
    q.gate.close();

    let t = Instant::now();
    let stale = tokio::time::timeout(STUCK, q.report("ACME"))
        .await
        .expect("the caller waited for the body past the soft timeout");
    let first = t.elapsed();
    assert_eq!(stale.as_deref(), Some("ACME:v1"));
    // Callers meanwhile get the stale value at once and start no body of their own.
    let again = tokio::time::timeout(STUCK, q.report("ACME"))
        .await
        .expect("the next caller waited for the body in the background");
    assert_eq!(again.as_deref(), Some("ACME:v1"));
    q.gate.open();
    let updated = within(
        Duration::from_secs(5),
        "the background body lands",
        || async { q.report("ACME").await.as_deref() == Some("ACME:v2") },
    )
    .await;
    println!(
        "#[cached(soft_timeout = \"100ms\")]: stale value after {first:?} (body held), cache \
         updated {updated:?} after the body's release"
    );
    assert!(
        first >= Duration::from_millis(95),
        "before the soft timeout: {first:?}"
    );
    assert_eq!(q.calls(), 2);
    assert_eq!(q.report("ACME").await.as_deref(), Some("ACME:v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_timeout_argument_returns_the_functions_error_from_a_loader_timeout() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let q = Quotes::new(cache_with_grace(&server, &unique_prefix("bg-hard")).await);
    q.set_delay(Duration::from_secs(3));
    let t = Instant::now();
    let got = q.fetch("ACME").await;
    let took = t.elapsed();
    println!("#[cached(hard_timeout = \"200ms\")]: {got:?} after {took:?} (body 3 s)");
    assert!(
        matches!(got, Err(QuoteError::Cache(ref e)) if e.is_loader_timeout()),
        "{got:?}"
    );
    assert!(took >= Duration::from_millis(195), "{took:?}");
    assert!(took < Duration::from_millis(1_500), "{took:?}");
    assert_eq!(q.calls(), 1);
    // A fast body afterwards is cached as usual.
    q.set_delay(Duration::ZERO);
    assert_eq!(q.fetch("ACME").await.ok().as_deref(), Some("ACME:v2"));
    assert_eq!(q.fetch("ACME").await.ok().as_deref(), Some("ACME:v2"));
    assert_eq!(q.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unless_reads_self_and_the_arguments_in_background_mode() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let mut q = Quotes::new(cache_with_grace(&server, &unique_prefix("bg-unless")).await);
    q.max_len = 8;
    // "SHORT:v1" is 8 bytes: cached.
    assert_eq!(q.bounded("SHORT").await, "SHORT:v1");
    assert_eq!(q.bounded("SHORT").await, "SHORT:v1");
    assert_eq!(q.calls(), 1);
    // Longer than `self.max_len`: returned, never cached.
    assert_eq!(q.bounded("LONGNAME").await, "LONGNAME:v2");
    assert_eq!(q.bounded("LONGNAME").await, "LONGNAME:v3");
    assert_eq!(q.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_argument_makes_one_body_run_for_two_instances_with_100_callers_each() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let prefix = unique_prefix("bg-lock");
    let a = Quotes::new(cache_with_grace(&server, &prefix).await);
    let mut b = Quotes::new(cache_with_grace(&server, &prefix).await);
    // Both instances count into one counter.
    b.calls = a.calls.clone();
    b.delay_ms = a.delay_ms.clone();
    a.set_delay(Duration::from_millis(300));
    let barrier = Arc::new(Barrier::new(200));
    let mut tasks = Vec::new();
    for q in [&a, &b] {
        for _ in 0..100 {
            let (q, barrier) = (q.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                q.answer("what is the answer?").await
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.expect("caller"), "what is the answer?:v1");
    }
    let (la, lb) = (a.cache.stats().total.lock, b.cache.stats().total.lock);
    println!(
        "#[cached(lock)]: {} body run(s) for 2 x 100 callers; lock A {la:?} B {lb:?}",
        a.calls()
    );
    assert_eq!(a.calls(), 1);
    assert_eq!(la.acquired + lb.acquired, 1);
}

// A free function in background mode: a `&str` and a `mut` owned argument, a per-test
// cache through a static.
static FREE_CACHE: OnceLock<Cache> = OnceLock::new();
static FREE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(kind = "api_response", refresh = 0.9, soft_timeout = "1s", cache = FREE_CACHE.get().expect("set by the test"))]
async fn greeting(name: &str, mut punctuation: String) -> String {
    FREE_CALLS.fetch_add(1, Ordering::SeqCst);
    punctuation.push('!');
    format!("hello {name}{punctuation}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_functions_with_borrowed_and_mut_arguments_work_in_background_mode() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let cache = cache_with_grace(&server, &unique_prefix("bg-free")).await;
    FREE_CACHE.set(cache).expect("set once");
    assert_eq!(greeting("ada", "!".into()).await, "hello ada!!");
    assert_eq!(greeting("ada", "!".into()).await, "hello ada!!");
    assert_eq!(greeting("bob", "?".into()).await, "hello bob?!");
    assert_eq!(FREE_CALLS.load(Ordering::SeqCst), 2);
}

/// Listings that can disappear at the origin: `None` then (not cached).
#[derive(Clone)]
struct Listings {
    cache: Cache,
    gone: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Listings {
    #[cached(kind = "api_response", key = "listing:{symbol}", ttl = Duration::from_secs(120), refresh = 0.01, cache = self.cache)]
    async fn listing(&self, symbol: &str) -> Option<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (!self.gone.load(Ordering::SeqCst)).then(|| format!("{symbol}:listed"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_answer_is_not_cacheable_drops_the_entry() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let l = Listings {
        cache: cache_with_grace(&server, &unique_prefix("bg-refresh-gone")).await,
        gone: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    assert_eq!(l.listing("ACME").await.as_deref(), Some("ACME:listed"));
    // The listing disappears. Past 1% of the 120 s TTL a call refreshes it in the background: the
    // fresh answer (`None`, not cached) says the entry no longer holds the answer, so it goes,
    // long before its TTL; it is not kept as if the refresh had failed.
    l.gone.store(true, Ordering::SeqCst);
    within(
        Duration::from_secs(30),
        "the refreshed-away listing is gone",
        || async { l.listing("ACME").await.is_none() },
    )
    .await;
    assert_eq!(l.listing("ACME").await, None, "and is not served again");
    let s = l.cache.stats().total.loader;
    assert_eq!(
        s.errors, 0,
        "an uncached answer is not a loader error: {s:?}"
    );
    assert_eq!(s.refresh_failures, 0, "nor a failed refresh: {s:?}");
}
