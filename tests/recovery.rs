//! No lost writes and prompt recovery, on real redis-server processes: a returned `set` is never
//! dropped by another key's invalidation; writes reach L2 again soon after a restart under steady
//! writes; invalidations queued during an outage are replayed as soon as Redis answers; a flapping
//! link does not keep the breaker open; a set whose backplane message was lost with its link still
//! reaches the other instances' L1; flushing a large L1 does not stall callers.

use cache_core::{BreakerState, Cache, EntryOptions, Kind, KindConfig, Tiers};
use cache_tests::{
    l2_only, l2_only_builder, serial, unique_prefix, wait_for_state, within, FaultProxy,
    LoadReport, ProxyMode, RedisServer,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OP_TIMEOUT: Duration = Duration::from_millis(100);

async fn cache(url: String, prefix: &str) -> Cache {
    l2_only_builder(url, prefix)
        .l2_timeout(OP_TIMEOUT)
        .build()
        .await
        .expect("build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_set_is_never_dropped_by_invalidations_of_other_keys() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let prefix = unique_prefix("lost-sets");
    let (a, b) = (
        cache(server.url(), &prefix).await,
        cache(server.url(), &prefix).await,
    );
    const N: usize = 10_000;
    let tagged = |i: usize| EntryOptions::new().tags([format!("g{}", i % 16)]);
    for i in 0..N {
        a.set_with(Kind::API_RESPONSE, &format!("s{i}"), 0u32, &tagged(i))
            .await;
    }
    // Both instances read every key once, so both hold it in L1.
    for i in 0..N {
        assert_eq!(
            b.get::<u32>(Kind::API_RESPONSE, &format!("s{i}"))
                .await
                .as_deref(),
            Some(&0)
        );
    }
    // A marker in B's L1: once B has dropped it on A's invalidation below, B has handled every
    // message A published before (Redis delivers one connection's messages in order).
    const MARKER: &str = "marker";
    b.get_or_load(Kind::API_RESPONSE, MARKER, || async {
        Ok::<_, std::io::Error>(0u32)
    })
    .await
    .expect("marker");
    let writes_before = a.stats().total.l2.writes;
    let done = Arc::new(AtomicBool::new(false));
    // Invalidations of unrelated keys, as fast as they go, on both instances.
    let noise: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|c| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    c.invalidate(Kind::API_RESPONSE, &format!("other{}", n % 5_000))
                        .await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let setters: Vec<_> = (0..16)
        .map(|t| {
            let a = a.clone();
            tokio::spawn(async move {
                for i in (t..N).step_by(16) {
                    a.set_with(Kind::API_RESPONSE, &format!("s{i}"), 1u32, &tagged(i))
                        .await;
                }
            })
        })
        .collect();
    for s in setters {
        s.await.expect("setter");
    }
    done.store(true, Ordering::Relaxed);
    let mut invalidations = 0;
    for n in noise {
        invalidations += n.await.expect("noise");
    }
    let writes = a.stats().total.l2.writes - writes_before;
    let mut lost_a = 0;
    let mut lost_b = 0;
    for i in 0..N {
        let key = format!("s{i}");
        if a.get::<u32>(Kind::API_RESPONSE, &key).await.as_deref() != Some(&1) {
            lost_a += 1;
        }
    }
    // B's copies were dropped by the backplane: once B has dropped the marker, it has handled
    // every set's message; then read.
    a.invalidate(Kind::API_RESPONSE, MARKER).await;
    within(Duration::from_secs(5), "B hears every set", || async {
        b.get::<u32>(Kind::API_RESPONSE, MARKER).await.is_none()
    })
    .await;
    for i in 0..N {
        let key = format!("s{i}");
        if b.get::<u32>(Kind::API_RESPONSE, &key).await.as_deref() != Some(&1) {
            lost_b += 1;
        }
    }
    println!(
        "{N} tagged sets alongside {invalidations} invalidations of other keys: {writes} L2 \
         writes; keys reading the old value: {lost_a} on A, {lost_b} on B"
    );
    assert_eq!((lost_a, lost_b), (0, 0), "sets were lost");
    assert_eq!(writes, N as u64, "every set reached L2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_l2_again_soon_after_a_restart_under_steady_writes() {
    let _serial = serial().await;
    let mut server = RedisServer::start();
    let prefix = unique_prefix("restart-writes");
    let a = cache(server.url(), &prefix).await;
    let stop = Arc::new(AtomicBool::new(false));
    // ~2-3k sets/s over 200 keys, all the way through the outage.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (a, stop) = (a.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    a.set(Kind::API_RESPONSE, &format!("k{}", (n * 4 + w) % 200), n)
                        .await;
                    n += 1;
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    wait_for_state(&a, BreakerState::Open, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let queued = a.stats().pending_invalidations.pending;
    server.restart();
    let restarted = Instant::now();
    let closed = wait_for_state(&a, BreakerState::Closed, Duration::from_secs(5)).await;
    let writes_at_close = a.stats().total.l2.writes;
    let resumed = within(Duration::from_secs(3), "L2 writes resume", || async {
        a.stats().total.l2.writes > writes_at_close + 100
    })
    .await;
    let mut c = server.conn().await;
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut c)
        .await
        .expect("DBSIZE");
    let drained = within(
        Duration::from_secs(3),
        "the pending queue drains",
        || async { a.stats().pending_invalidations.pending == 0 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut sets = 0;
    for w in writers {
        sets += w.await.expect("writer");
    }
    println!(
        "{sets} sets in all; {queued} invalidations pending at the restart; breaker closed {closed:?} \
         after the restart; then 100 L2 writes within {resumed:?} (restart + {:?}); {keys} keys in \
         the new Redis; queue drained {drained:?} later",
        restarted.elapsed()
    );
    assert!(
        queued > 0,
        "the outage must leave invalidations pending to mean anything"
    );
    assert!(keys > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_queued_while_the_breaker_is_open_are_replayed_as_soon_as_redis_answers() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let prefix = unique_prefix("prompt-replay");
    // A breaker cool-down far longer than the replay may take: a replay that waited for the
    // cool-down's probe instead of probing eagerly fails the bound below, whatever the machine.
    const COOLDOWN: Duration = Duration::from_secs(6);
    let a = l2_only_builder(proxy.url(), &prefix)
        .l2_timeout(OP_TIMEOUT)
        .breaker_cooldown(COOLDOWN, COOLDOWN)
        .build()
        .await
        .expect("build");
    let b = cache(server.url(), &prefix).await;
    a.set(l2_only(), "k", "old".to_string()).await;
    assert_eq!(
        b.get::<String>(l2_only(), "k")
            .await
            .as_deref()
            .map(String::as_str),
        Some("old")
    );
    // A loses Redis (refused: probes fail at once, and the cool-down grows to its cap).
    proxy.set_mode(ProxyMode::Refuse);
    proxy.cut_all();
    within(Duration::from_secs(3), "A's breaker opens", || async {
        let _ = a.get::<String>(l2_only(), "probe").await;
        a.breaker_state() == Some(BreakerState::Open)
    })
    .await;
    a.invalidate(l2_only(), "k").await;
    assert_eq!(
        a.stats().pending_invalidations.pending,
        1,
        "queued, not sent"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Redis answers A again.
    proxy.set_mode(ProxyMode::Pass);
    let back = Instant::now();
    let old_reads = AtomicUsize::new(0);
    let gone = within(
        Duration::from_secs(10),
        "B stops reading the old value",
        || async {
            let old = b.get::<String>(l2_only(), "k").await.is_some();
            old_reads.fetch_add(usize::from(old), Ordering::Relaxed);
            !old
        },
    )
    .await;
    let old_reads = old_reads.load(Ordering::Relaxed);
    let c = cache(server.url(), &prefix).await;
    assert!(
        c.get::<String>(l2_only(), "k").await.is_none(),
        "a fresh instance reads no old value"
    );
    println!(
        "B read the old value {old_reads} times; the invalidation reached Redis {gone:?} after it \
         answered A again (total {:?})",
        back.elapsed()
    );
    assert!(
        gone < COOLDOWN,
        "the invalidation was replayed {gone:?} after Redis answered: not before the breaker's \
         {COOLDOWN:?} cool-down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_whose_announcement_was_cut_off_still_reaches_the_other_instances() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let prefix = unique_prefix("lost-publish");
    // Both tiers, and an L1 copy that would outlive the test by far if nothing dropped it.
    let kind = Kind::new("both");
    let build = |url: String| {
        l2_only_builder(url, &prefix)
            .l2_timeout(OP_TIMEOUT)
            .kind(kind.clone(), KindConfig::new(Duration::from_secs(600)))
            .build()
    };
    let a = build(proxy.url()).await.expect("build A");
    let b = build(server.url()).await.expect("build B");
    within(Duration::from_secs(5), "both subscribed", || async {
        [&a, &b]
            .iter()
            .all(|c| c.stats().backplane.is_some_and(|bp| bp.subscribed))
    })
    .await;
    a.set(&kind, "k", "old".to_string()).await;
    assert_eq!(
        b.get::<String>(&kind, "k")
            .await
            .as_deref()
            .map(String::as_str),
        Some("old"),
        "B holds the old value in L1"
    );
    // A's link goes down right after A's write reached Redis: the PUBLISH announcing it is lost
    // with its connection, while B stays subscribed and hears nothing wrong.
    proxy.cut_on(&[b"PUBLISH", b"v1:both:k"]);
    a.set(&kind, "k", "new".to_string()).await;
    let returned = Instant::now();
    assert_eq!(proxy.cuts_on_done(), 1, "the announcement was cut off");
    let c = build(server.url()).await.expect("build C");
    assert_eq!(
        c.get::<String>(&kind, "k")
            .await
            .as_deref()
            .map(String::as_str),
        Some("new"),
        "the value reached Redis"
    );
    let took = within(Duration::from_secs(10), "B reads the new value", || async {
        b.get::<String>(&kind, "k")
            .await
            .as_deref()
            .map(String::as_str)
            == Some("new")
    })
    .await;
    within(
        Duration::from_secs(5),
        "A has nothing left to send",
        || async { a.stats().backplane.is_some_and(|bp| bp.unsent == 0) },
    )
    .await;
    let bp = a.stats().backplane.expect("A has a backplane");
    assert!(bp.resent >= 1, "the announcement was sent again: {bp:?}");
    println!(
        "B dropped its old copy {took:?} after the check began ({:?} after the set returned); \
         A resent {} message(s)",
        returned.elapsed(),
        bp.resent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_does_not_keep_l2_away_once_it_settles() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let prefix = unique_prefix("flapping");
    // The defaults, spelled out: the bound below is made of them.
    const COOLDOWN_MAX: Duration = Duration::from_secs(1);
    let a = l2_only_builder(proxy.url(), &prefix)
        .l2_timeout(OP_TIMEOUT)
        .breaker_cooldown(Duration::from_millis(250), COOLDOWN_MAX)
        .build()
        .await
        .expect("build");
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (a, stop) = (a.clone(), stop.clone());
            tokio::spawn(async move {
                let mut errors = 0;
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{}", n % 300);
                    let got = a
                        .get_or_load(l2_only(), &key, || async {
                            Ok::<_, std::io::Error>(key.clone())
                        })
                        .await;
                    if got.ok().as_deref() != Some(&key) {
                        errors += 1;
                    }
                    n += 8;
                    tokio::task::yield_now().await;
                }
                errors
            })
        })
        .collect();
    // Connections cut every 200 ms for 4 s.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.cut_all();
    }
    let opens = a.stats().breaker.map(|b| b.opens).unwrap_or(0);
    let settled = Instant::now();
    let hits = a.stats().total.l2.hits;
    let back = within(Duration::from_secs(10), "L2 in use again", || async {
        a.breaker_state() == Some(BreakerState::Closed) && a.stats().total.l2.hits > hits + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for w in workers {
        errors += w.await.expect("worker");
    }
    println!(
        "flapping 4 s (breaker opened {opens} times): L2 in use again {back:?} after the cuts \
         stopped (total {:?}); caller errors {errors}",
        settled.elapsed()
    );
    assert_eq!(errors, 0);
    // Once the link settled, an open breaker probes within a cool-down (at most COOLDOWN_MAX;
    // one more if that probe met the last cut), and the probe and the 50 L2 reads after it each
    // take under the L2 deadline: what is left is scheduling.
    let bound = COOLDOWN_MAX * 2 + OP_TIMEOUT * 5;
    assert!(
        back < bound,
        "L2 back only {back:?} after the link settled (bound {bound:?}: two cool-downs and five \
         L2 deadlines)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_a_large_l1_after_a_resubscription_does_not_stall_callers() {
    let _serial = serial().await;
    let server = RedisServer::start();
    let prefix = unique_prefix("flush-stall");
    // Filled without Redis round trips (an L1-only kind); the flush drops every kind's entries.
    let local = Kind::new("local");
    let a = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .l2_timeout(OP_TIMEOUT)
        .l1_max_bytes(512 << 20)
        .kind(
            local.clone(),
            KindConfig::new(Duration::from_secs(600)).tiers(Tiers::L1Only),
        )
        .build()
        .await
        .expect("build");
    const ENTRIES: usize = 200_000;
    for i in 0..ENTRIES {
        a.get_or_load(&local, &format!("warm{i}"), || async move {
            Ok::<_, std::io::Error>(i as u64)
        })
        .await
        .expect("fill");
    }
    a.run_pending_tasks().await;
    let entries = a.stats().total.l1.entries;
    assert!(entries as usize >= ENTRIES * 9 / 10, "L1 holds {entries}");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let calls = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..64u64)
        .map(|w| {
            let (a, stop, calls) = (a.clone(), stop.clone(), calls.clone());
            tokio::spawn(async move {
                let mut report = LoadReport::default();
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let key = format!("live{}", n % 5_000);
                    let got = a
                        .get_or_load(Kind::API_RESPONSE, &key, || async {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            Ok::<_, std::io::Error>(n % 5_000)
                        })
                        .await;
                    report.record(start, t);
                    if got.ok().as_deref() != Some(&(n % 5_000)) {
                        report.errors += 1;
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                    n += 64;
                    // L1 hits never suspend: let the other tasks (and the test) run.
                    tokio::task::yield_now().await;
                }
                report
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resyncs = a.stats().backplane.map(|b| b.resyncs).unwrap_or(0);
    // The subscription is killed: the backplane resubscribes and flushes L1.
    let mut c = server.conn().await;
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut c)
        .await
        .expect("CLIENT KILL");
    let killed = start.elapsed();
    within(
        Duration::from_secs(5),
        "the backplane resubscribes",
        || async { a.stats().backplane.map(|b| b.resyncs).unwrap_or(0) > resyncs },
    )
    .await;
    // The flushed entries are gone for readers at once (nothing else holds them).
    assert!(
        a.get::<u64>(&local, "warm7").await.is_none(),
        "a flushed entry was served"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut report = LoadReport::default();
    for w in workers {
        report.merge(w.await.expect("worker"));
    }
    let after = report.window(killed, killed + Duration::from_secs(2));
    let before = report.window(Duration::ZERO, killed);
    println!(
        "L1 of {entries} entries flushed by a resubscription under 64 callers: before p99 {:?} max \
         {:?} ({} calls); 2 s after: p99 {:?} max {:?} ({} calls)",
        before.p99, before.max, before.count, after.p99, after.max, after.count
    );
    assert_eq!(report.errors, 0);
    // No caller waits for the flush: relative to the same callers before it (the machine's
    // scheduling, measured here), a call may now wait for one L2 read of a key the flush dropped
    // (under the L2 deadline); two more deadlines' worth covers a scheduling hiccup in the 2 s
    // after that the shorter window before did not see. (A flush that holds callers does worse:
    // moka's own `invalidate_all` stalled them for hundreds of milliseconds after ~100k entries,
    // see cache-core/src/l1.rs.)
    let bound = before.max * 2 + OP_TIMEOUT * 3;
    assert!(
        after.max <= bound,
        "a call took {:?} after the flush (bound: twice the {:?} before it + 3 L2 deadlines = \
         {bound:?})",
        after.max,
        before.max
    );
}
