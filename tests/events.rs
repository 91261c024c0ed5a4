//! `Cache::events()` against real redis-server processes: every kind of event, staged one step at
//! a time (hits from each tier, misses with their reasons, loads with their duration, a stale
//! value served under fail-safe grace, breaker transitions through a fault proxy, invalidations
//! sent by one instance and received by another), a subscriber that never reads (the cache does
//! not wait for it, and what it lost is counted), and the cost of events nobody listens to (no
//! allocation on a hit: this binary counts the allocations of each thread).
//!
//! Events of a call are sent before the call returns, so the read-path steps check them with
//! `try_recv` right after each call; events from other instances and from the background (the
//! breaker's probes) are collected by a task and waited for with a deadline.

use cache_core::events::{Event, EventStream, Tier};
use cache_core::{BreakerState, Cache, Kind, KindConfig};
use cache_tests::{
    init_tracing, l2_only, l2_only_builder, serial, unique_prefix, wait_for_state, within,
    FaultProxy, ProxyMode, RedisServer,
};
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts heap allocations per thread, so that a test can count those of the code it runs on its
/// own thread (a current-thread runtime runs every task of the test there).
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    fn count() {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    }

    /// Allocations made by this thread so far.
    pub fn allocations() -> u64 {
        ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
    }

    pub struct Counting;

    // SAFETY (all four): forwards to the system allocator unchanged; counting is a side effect
    // on a thread-local `Cell` (const-initialised, no destructor: it never allocates).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

const LOADER_TIME: Duration = Duration::from_millis(25);

/// An event as one line the assertions compare: the entry first for keyed events, durations left
/// out (checked apart).
fn line(e: &Event) -> String {
    match e {
        Event::Hit { entry, tier, .. } => format!("{entry} hit {tier}"),
        Event::Miss {
            entry,
            tier,
            reason,
            ..
        } => format!("{entry} miss {tier} {reason}"),
        Event::Load {
            entry,
            outcome,
            cause,
            ..
        } => format!("{entry} load {outcome} ({cause})"),
        Event::StaleServed { entry, cause, .. } => format!("{entry} stale served ({cause})"),
        other => other.to_string(),
    }
}

/// A subscription read right after each call (a call's events are all there when it returns),
/// keeping everything it read.
struct Steps {
    stream: EventStream,
    seen: Vec<Event>,
}

impl Steps {
    fn new(stream: EventStream) -> Self {
        Steps {
            stream,
            seen: Vec::new(),
        }
    }

    /// The events waiting now.
    fn take(&mut self) -> Vec<Event> {
        let got: Vec<Event> = std::iter::from_fn(|| self.stream.try_recv()).collect();
        self.seen.extend(got.iter().cloned());
        got
    }

    /// Every event taken so far.
    fn seen(&self) -> Vec<Event> {
        self.seen.clone()
    }
}

fn lines(events: &[Event]) -> Vec<String> {
    events.iter().map(line).collect()
}

/// The duration of the only `Load` event in `events`.
fn load_time(events: &[Event]) -> Duration {
    let times: Vec<Duration> = events
        .iter()
        .filter_map(|e| match e {
            Event::Load { took, .. } => Some(*took),
            _ => None,
        })
        .collect();
    assert_eq!(times.len(), 1, "{events:?}");
    times[0]
}

/// A subscription read by a task of its own (for events that arrive on their own time).
struct Collected {
    events: Arc<Mutex<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collected {
    fn start(mut stream: EventStream) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(e) = stream.recv().await {
                sink.lock().unwrap().push(e);
            }
        });
        Collected { events, task }
    }

    fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until the events so far satisfy `done`.
    async fn until(&self, limit: Duration, what: &str, done: impl Fn(&[Event]) -> bool) {
        within(limit, what, || async { done(&self.snapshot()) }).await;
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn load_ok(cache: &Cache, kind: &str, key: &str, value: &str) -> Arc<String> {
    let value = value.to_owned();
    cache
        .get_or_load(kind, key, || async move {
            tokio::time::sleep(LOADER_TIME).await;
            Ok::<_, std::io::Error>(value)
        })
        .await
        .expect("the loader succeeds")
}

#[tokio::test]
async fn every_read_path_event_is_observed_with_its_tier_reason_and_duration() {
    init_tracing();
    let server = RedisServer::start();
    let prefix = unique_prefix("events-read");
    let short_ttl = Duration::from_millis(300);
    let build = || {
        Cache::builder()
            .redis_url(server.url())
            .prefix(&prefix)
            .fail_safe_grace(Duration::from_secs(60))
            .kind(Kind::new("ev"), KindConfig::new(Duration::from_secs(60)))
            .kind(Kind::new("short"), KindConfig::new(short_ttl))
            .build()
    };
    let a = build().await.expect("build a");
    let b = build().await.expect("build b");
    let mut ea = Steps::new(a.events());
    let mut eb = Steps::new(b.events());

    // A cold key: both tiers miss, nothing stored; the loader runs once and its time is told.
    let started = Instant::now();
    assert_eq!(*load_ok(&a, "ev", "k", "v1").await, "v1");
    let call = started.elapsed();
    let got = ea.take();
    assert_eq!(
        lines(&got),
        [
            "ev/k miss L1 absent",
            "ev/k miss L2 absent",
            "ev/k load loaded (miss)"
        ]
    );
    let took = load_time(&got);
    assert!(
        took >= LOADER_TIME && took <= call,
        "loader time {took:?}, loader {LOADER_TIME:?}, call {call:?}"
    );

    // Again: an L1 hit.
    load_ok(&a, "ev", "k", "unused").await;
    assert_eq!(lines(&ea.take()), ["ev/k hit L1"]);

    // Another instance: its L1 misses, Redis has it; then its own L1 has it.
    load_ok(&b, "ev", "k", "unused").await;
    assert_eq!(lines(&eb.take()), ["ev/k miss L1 absent", "ev/k hit L2"]);
    load_ok(&b, "ev", "k", "unused").await;
    assert_eq!(lines(&eb.take()), ["ev/k hit L1"]);
    assert!(
        ea.take().is_empty(),
        "b's reads are not a's events (reads publish nothing)"
    );

    // Invalidated: the L1 copy was removed, L2 holds a tombstone; both say "rejected".
    a.invalidate("ev", "k").await;
    assert_eq!(*load_ok(&a, "ev", "k", "v2").await, "v2");
    assert_eq!(
        lines(&ea.take()),
        [
            "invalidation sent key ev/k",
            "ev/k miss L1 rejected",
            "ev/k miss L2 rejected",
            "ev/k load loaded (miss)"
        ]
    );

    // Stored as another type: a mismatch in both tiers.
    a.set("ev", "typed", "a string".to_string()).await;
    let n = a
        .get_or_load("ev", "typed", || async { Ok::<_, std::io::Error>(7u64) })
        .await
        .unwrap();
    assert_eq!(*n, 7);
    assert_eq!(
        lines(&ea.take()),
        [
            "ev/typed miss L1 mismatch",
            "ev/typed miss L2 mismatch",
            "ev/typed load loaded (miss)"
        ]
    );

    // Bytes in Redis that do not decode.
    let mut conn = server.conn().await;
    let garbage_key = cache_core::admin::entry_key(&prefix, "ev", "garbage");
    let () = redis::cmd("SET")
        .arg(&garbage_key)
        .arg(b"\x00not an envelope".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    load_ok(&a, "ev", "garbage", "v").await;
    assert_eq!(
        lines(&ea.take()),
        [
            "ev/garbage miss L1 absent",
            "ev/garbage miss L2 undecodable",
            "ev/garbage load loaded (miss)"
        ]
    );

    // Expired, and the loader fails: the stale value is served (fail-safe grace).
    load_ok(&a, "short", "s", "s1").await;
    ea.take();
    tokio::time::sleep(short_ttl + Duration::from_millis(100)).await;
    let stale = a
        .get_or_load("short", "s", || async {
            Err::<String, _>(std::io::Error::other("origin down"))
        })
        .await
        .expect("the stale value, not the error");
    assert_eq!(*stale, "s1");
    assert_eq!(
        lines(&ea.take()),
        [
            "short/s miss L1 expired",
            "short/s miss L2 expired",
            "short/s load failed (miss)",
            "short/s stale served (loader failed)"
        ]
    );

    // A batch: per key, its misses and its load (a key the loader did not return is uncached).
    let got = a
        .get_or_load_many("ev", &["b1", "b2", "b3"], |keys| async move {
            tokio::time::sleep(LOADER_TIME).await;
            Ok::<_, std::io::Error>(
                keys.into_iter()
                    .filter(|k| k != "b3")
                    .map(|k| (k.clone(), k))
                    .collect::<HashMap<String, String>>(),
            )
        })
        .await
        .unwrap();
    assert_eq!(got.iter().filter(|v| v.is_some()).count(), 2);
    let batch = ea.take();
    assert_eq!(
        lines(&batch),
        [
            "ev/b1 miss L1 absent",
            "ev/b2 miss L1 absent",
            "ev/b3 miss L1 absent",
            "ev/b1 miss L2 absent",
            "ev/b2 miss L2 absent",
            "ev/b3 miss L2 absent",
            "ev/b1 load loaded (miss)",
            "ev/b2 load loaded (miss)",
            "ev/b3 load uncached (miss)"
        ]
    );
    for e in &batch {
        if let Event::Load { took, .. } = e {
            assert!(*took >= LOADER_TIME, "{took:?}");
        }
    }

    // The events mirror the counters: every hit and every miss counted (per tier and reason),
    // every stale value served, is one event.
    let all = ea.seen();
    let s = a.stats();
    let events_of = |want: &str| all.iter().filter(|e| line(e).contains(want)).count() as u64;
    assert_eq!(events_of(" hit L1"), s.total.l1.hits);
    assert_eq!(events_of(" hit L2"), s.total.l2.hits);
    for (reason, n) in s.total.l1.miss_reasons.iter() {
        assert_eq!(events_of(&format!(" miss L1 {reason}")), n, "L1 {reason}");
    }
    for (reason, n) in s.total.l2.miss_reasons.iter() {
        assert_eq!(events_of(&format!(" miss L2 {reason}")), n, "L2 {reason}");
    }
    assert_eq!(events_of(" stale served"), s.total.loader.stale_served);
    assert_eq!(s.events.subscribers, 1, "a's own subscription");
    assert_eq!(s.events.dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_transitions_are_events_and_so_are_the_reads_it_skips() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let cache = l2_only_builder(proxy.url(), &unique_prefix("events-breaker"))
        .l2_timeout(Duration::from_millis(100))
        .breaker_failure_threshold(2)
        .breaker_cooldown(Duration::from_millis(50), Duration::from_millis(200))
        .build()
        .await
        .expect("build");
    let events = Collected::start(cache.events());
    let read = || cache.get::<String>(l2_only(), "x");

    // Healthy: the read reaches Redis and finds nothing.
    assert!(read().await.is_none());
    // The path to Redis refuses connections: reads fail until the breaker opens.
    proxy.set_mode(ProxyMode::Refuse);
    proxy.cut_all();
    within(Duration::from_secs(5), "the breaker opens", || async {
        let _ = read().await;
        cache.breaker_state() == Some(BreakerState::Open)
    })
    .await;
    // While open, reads are skipped.
    assert!(read().await.is_none());
    // Redis reachable again: the background probe closes the breaker.
    proxy.set_mode(ProxyMode::Pass);
    wait_for_state(&cache, BreakerState::Closed, Duration::from_secs(8)).await;
    let transitions = |events: &[Event]| -> Vec<(BreakerState, BreakerState)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Breaker { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    };
    events
        .until(Duration::from_secs(2), "the closing transition", |e| {
            transitions(e).last() == Some(&(BreakerState::HalfOpen, BreakerState::Closed))
        })
        .await;
    let seen = events.snapshot();
    let t = transitions(&seen);
    assert_eq!(t[0], (BreakerState::Closed, BreakerState::Open), "{t:?}");
    for pair in t.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "transitions follow each other: {t:?}");
    }
    // Probes that failed while Redis still refused reopen it: each opening from closed counts.
    let opens = t
        .iter()
        .filter(|(from, _)| *from == BreakerState::Closed)
        .count() as u64;
    assert_eq!(Some(opens), cache.stats().breaker.map(|b| b.opens));

    // During the fault reads failed (unavailable); once the breaker opened they were skipped.
    let l = lines(&seen);
    let opened_at = seen
        .iter()
        .position(|e| matches!(e, Event::Breaker { .. }))
        .unwrap();
    assert_eq!(l[0], "l2only/x miss L2 absent", "{l:?}");
    assert!(
        l.iter().any(|l| l == "l2only/x miss L2 unavailable"),
        "{l:?}"
    );
    assert!(
        l[opened_at..]
            .iter()
            .any(|l| l == "l2only/x miss L2 skipped"),
        "{l:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_sent_by_one_instance_are_received_by_the_other() {
    init_tracing();
    let server = RedisServer::start();
    let prefix = unique_prefix("events-inval");
    let build = || {
        Cache::builder()
            .redis_url(server.url())
            .prefix(&prefix)
            .kind(Kind::new("ev"), KindConfig::new(Duration::from_secs(60)))
            .build()
    };
    let (a, b) = (build().await.expect("a"), build().await.expect("b"));
    within(Duration::from_secs(5), "both subscribed", || async {
        a.backplane_subscribed() && b.backplane_subscribed()
    })
    .await;
    let mut sent = Steps::new(a.events());
    let received = Collected::start(b.events());

    a.invalidate("ev", "k1").await;
    a.invalidate_tags(&["user:42", "team:7"]).await;
    a.clear_kind("ev").await.expect("clear kind");
    a.clear_all().await.expect("clear all");
    // A write is news for the other instance's L1 too.
    a.set("ev", "k2", 2u32).await;
    // A key too long to travel as is: named by its hash on both sides, and matched either way.
    let long = "question ".repeat(40);
    a.invalidate("ev", &long).await;

    let out = sent.take();
    let long_entry = out.last().and_then(Event::entry).expect("a keyed event");
    assert!(long_entry.is("ev", &long) && long_entry.key().starts_with('#'));
    let expected_sent = [
        "invalidation sent key ev/k1".to_owned(),
        "invalidation sent tag user:42".to_owned(),
        "invalidation sent tag team:7".to_owned(),
        "invalidation sent kind ev".to_owned(),
        "invalidation sent everything".to_owned(),
        format!("invalidation sent key {long_entry}"),
    ];
    assert_eq!(lines(&out), expected_sent);

    let expected_received = [
        "invalidation received key ev/k1".to_owned(),
        "invalidation received tag user:42".to_owned(),
        "invalidation received tag team:7".to_owned(),
        "invalidation received kind ev".to_owned(),
        "invalidation received everything".to_owned(),
        "invalidation received key ev/k2".to_owned(),
        format!("invalidation received key {long_entry}"),
    ];
    received
        .until(
            Duration::from_secs(5),
            "the other instance hears them all",
            |e| e.len() >= expected_received.len(),
        )
        .await;
    let got = received.snapshot();
    assert_eq!(lines(&got), expected_received);
    let Some(Event::InvalidationReceived { target, .. }) = got.last() else {
        panic!("{got:?}");
    };
    assert!(matches!(target, cache_core::events::Target::Key(e) if e.is("ev", &long)));
    assert!(
        sent.take().is_empty(),
        "an instance does not receive its own messages"
    );
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_slow_the_cache_and_what_it_lost_is_counted() {
    init_tracing();
    const BUFFER: usize = 64;
    const HITS: u64 = 20_000;
    let cache = Cache::builder()
        .prefix(unique_prefix("events-slow"))
        .event_buffer(BUFFER)
        .build()
        .await
        .expect("build");
    cache.set(Kind::API_RESPONSE, "k", 1u64).await;
    let mut slow = cache.events();

    let hits = || async {
        for _ in 0..HITS {
            let v = cache.get::<u64>(Kind::API_RESPONSE, "k").await;
            assert_eq!(v.as_deref(), Some(&1));
        }
    };
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), hits())
        .await
        .expect("the cache never waits for a subscriber");
    let took = started.elapsed();
    // A cache that waited for the subscriber would not finish at all; one that did much more
    // than building and buffering an event per hit would take seconds (a debug build makes a hit
    // with its event in a few microseconds).
    println!(
        "{HITS} L1 hits with a subscriber that never reads: {took:?} ({:?} per hit)",
        took / HITS as u32
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // The subscriber finds the last BUFFER events; the rest are counted as lost.
    let kept = std::iter::from_fn(|| slow.try_recv()).count() as u64;
    assert_eq!(kept, BUFFER as u64);
    assert_eq!(slow.dropped(), HITS - BUFFER as u64);
    let stats = cache.stats();
    assert_eq!(stats.events.dropped, HITS - BUFFER as u64);
    assert_eq!(stats.events.subscribers, 1);
    assert!(
        cache.prometheus_text().contains(&format!(
            "cache_events_dropped_total{{cache=\"{}\"}} {}\n",
            stats.name,
            HITS - BUFFER as u64
        )),
        "{}",
        cache.prometheus_text()
    );

    // A subscriber dropped without reading: what it lost is counted when it goes.
    hits().await;
    drop(slow);
    let stats = cache.stats();
    assert_eq!(stats.events.dropped, 2 * (HITS - BUFFER as u64));
    assert_eq!(stats.events.subscribers, 0);
}

/// With no subscriber an L1 hit allocates nothing (its event is never built); with one, each hit
/// builds its event.
///
/// The hits are counted in rounds of 48, each after `run_pending_tasks`: moka flushes its log of
/// reads every 64 reads (boxing a future or two for its housekeeping), which has nothing to do with
/// events and would otherwise be counted too.
#[tokio::test]
async fn with_no_subscriber_a_hit_builds_no_event_and_allocates_nothing() {
    init_tracing();
    const ROUND: u64 = 48;
    const ROUNDS: u64 = 20;
    let cache = Cache::builder()
        .prefix(unique_prefix("events-alloc"))
        .build()
        .await
        .expect("build");
    cache.set(Kind::API_RESPONSE, "k", 7u64).await;
    // Allocations by ROUNDS rounds of ROUND hits. Each hit is polled once: a hit never waits, so
    // no other task runs in between (and allocates).
    let hits = || async {
        let mut allocated = 0;
        for _ in 0..ROUNDS {
            cache.run_pending_tasks().await;
            let before = counting::allocations();
            for _ in 0..ROUND {
                let v = cache
                    .get::<u64>(Kind::API_RESPONSE, "k")
                    .now_or_never()
                    .expect("an L1 hit does not wait");
                assert_eq!(v.as_deref(), Some(&7));
            }
            allocated += counting::allocations() - before;
        }
        allocated
    };
    hits().await;
    let n = ROUND * ROUNDS;
    assert_eq!(
        hits().await,
        0,
        "allocations by {n} hits, nobody subscribed"
    );

    let mut events = cache.events();
    let allocated = hits().await;
    assert!(allocated >= n, "{allocated} allocations: an event per hit");
    let got: Vec<Event> = std::iter::from_fn(|| events.try_recv()).collect();
    assert_eq!(got.len() as u64, n);
    assert!(got.iter().all(|e| matches!(
        e,
        Event::Hit { tier: Tier::L1, entry, .. } if entry.is(Kind::API_RESPONSE, "k")
    )));

    drop(events);
    assert_eq!(hits().await, 0, "after the last subscription went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_when_the_cache_is_gone() {
    init_tracing();
    let server = RedisServer::start();
    let cache = cache_tests::cache_on(&server, &unique_prefix("events-end")).await;
    within(Duration::from_secs(5), "backplane subscribed", || async {
        cache.backplane_subscribed()
    })
    .await;
    let mut events = cache.events();
    cache.invalidate(Kind::API_RESPONSE, "k").await;
    drop(cache);
    // What was sent is still read; then the stream ends (the background tasks stop with the
    // cache, and with them the last holder of the sender).
    assert!(matches!(
        events.recv().await,
        Some(Event::InvalidationSent { .. })
    ));
    let end = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "recv() ends once the cache is gone: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_say_why_they_ran_and_stale_values_why_they_were_served() {
    init_tracing();
    // Refreshed from half its TTL on: read at 0.6 s, it is due and still fresh (a late wake-up
    // of 400 ms would not change that).
    let fresh_ttl = Duration::from_secs(1);
    let ttl = Duration::from_millis(400);
    let cache = Cache::builder()
        .prefix(unique_prefix("events-why"))
        .fail_safe_grace(Duration::from_secs(60))
        .kind(
            Kind::new("fresh"),
            KindConfig::new(fresh_ttl).eager_refresh(0.5),
        )
        .kind(
            Kind::new("slow"),
            KindConfig::new(ttl).soft_timeout(Duration::from_millis(50)),
        )
        .build()
        .await
        .expect("build");
    let events = Collected::start(cache.events());
    let owned = |kind: &'static str, key: &'static str, value: u32, delay: Duration| {
        cache.get_or_load_owned(
            kind,
            key,
            cache_core::OwnedOptions::new(),
            move || async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::io::Error>(value)
            },
        )
    };
    // Waits until `want` was seen `times` times.
    let wait = |want: &'static str, times: usize| {
        events.until(Duration::from_secs(5), want, move |e| {
            lines(e).iter().filter(|l| *l == want).count() >= times
        })
    };

    // Read past half its TTL, an entry is served and refreshed in the background.
    assert_eq!(*owned("fresh", "r", 1, Duration::ZERO).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(*owned("fresh", "r", 2, Duration::ZERO).await.unwrap(), 1);
    wait("fresh/r load loaded (refresh)", 1).await;

    // Expired, and the loader slower than the soft timeout: the stale value now, the load goes on.
    assert_eq!(*owned("slow", "s", 1, Duration::ZERO).await.unwrap(), 1);
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let started = Instant::now();
    let v = owned("slow", "s", 2, Duration::from_millis(1_500))
        .await
        .unwrap();
    assert_eq!(*v, 1, "the stale value");
    assert!(started.elapsed() < Duration::from_millis(1_000));
    // The second load of the key ends in the background.
    wait("slow/s load loaded (miss)", 2).await;

    // Warming.
    let plan = cache_core::WarmPlan::new()
        .entries("fresh", [("w", || async { Ok::<_, std::io::Error>(3u32) })]);
    let report = cache.warm_with(plan).await;
    assert_eq!(report.warmed, 1, "{report:?}");
    wait("fresh/w load loaded (warm)", 1).await;

    let got = lines(&events.snapshot());
    let of = |prefix: &str| -> Vec<&str> {
        got.iter()
            .map(String::as_str)
            .filter(|l| l.starts_with(prefix))
            .collect()
    };
    assert_eq!(
        of("fresh/r"),
        [
            "fresh/r miss L1 absent",
            "fresh/r load loaded (miss)",
            "fresh/r hit L1",
            "fresh/r load loaded (refresh)"
        ]
    );
    assert_eq!(
        of("slow/s"),
        [
            "slow/s miss L1 absent",
            "slow/s load loaded (miss)",
            "slow/s miss L1 expired",
            "slow/s stale served (soft timeout)",
            "slow/s load loaded (miss)"
        ]
    );
    assert_eq!(of("fresh/w"), ["fresh/w load loaded (warm)"]);
}
