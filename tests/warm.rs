//! `Cache::warm` / `warm_with` against a real redis-server: registered `#[cached(..., warm)]`
//! functions run, entries already fresh in L2 are pulled into L1 without calling their loader,
//! failing, timing-out and panicking warmers are reported without stopping the others, the
//! concurrency bound holds, and Redis sees batched reads and pipelined writes.
//!
//! Only `registered_warm_functions_run_and_fill_the_default_cache` sets the global default cache and
//! runs the registered functions; every other test passes `registered(false)`.

use cache_core::{cached, Cache, Kind, WarmPlan};
use cache_tests::{cache_on, unique_prefix, FaultProxy, ProxyMode, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

static GREETING_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A zero-argument warm function bound to the default cache.
#[cached(kind = "static_data", key = "greeting", warm)]
async fn greeting() -> String {
    GREETING_CALLS.fetch_add(1, Ordering::SeqCst);
    "hello".to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_warm_functions_run_and_fill_the_default_cache() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("warm-registered")).await;
    cache_core::set_default_cache(cache.clone())
        .expect("the only test of this binary that installs");

    let report = cache.warm().await;

    assert!(report.failed.is_empty(), "{report:?}");
    let summary = report
        .warmers
        .iter()
        .find(|w| w.name == "warm::greeting")
        .unwrap_or_else(|| panic!("greeting is not among the warmers: {report:?}"));
    assert_eq!(summary.warmed, 1);
    assert_eq!(GREETING_CALLS.load(Ordering::SeqCst), 1);
    // The value is in both tiers: the function does not run again, and Redis holds the entry.
    assert_eq!(greeting().await, "hello");
    assert_eq!(GREETING_CALLS.load(Ordering::SeqCst), 1);
    let mut c = server.conn().await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{}:v1:static_data:greeting", cache.prefix()))
        .query_async(&mut c)
        .await
        .expect("EXISTS");
    assert!(exists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_already_fresh_in_l2_are_pulled_into_l1_without_calling_their_loader() {
    let server = RedisServer::start();
    let prefix = unique_prefix("warm-hot");
    // Instance A fills L2 with keys 0..10.
    let a = cache_on(&server, &prefix).await;
    for i in 0..10u64 {
        a.set(
            Kind::DATABASE_QUERY,
            &format!("user:{i}"),
            format!("from A {i}"),
        )
        .await;
    }
    // Instance B starts cold and warms keys 0..15: 10 hot in L2, 5 to load.
    let b = cache_on(&server, &prefix).await;
    let loads = Arc::new(AtomicUsize::new(0));
    let plan = WarmPlan::new().registered(false).entries(
        Kind::DATABASE_QUERY,
        (0..15u64).map(|i| {
            let loads = loads.clone();
            (format!("user:{i}"), move || async move {
                if i < 10 {
                    // Hot in L2: this loader must not run (it would be reported as failed).
                    return Err(format!("loader of hot key {i} called"));
                }
                loads.fetch_add(1, Ordering::SeqCst);
                Res::Ok(format!("from B {i}"))
            })
        }),
    );

    let report = b.warm_with(plan).await;

    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!((report.already_hot, report.warmed), (10, 5));
    assert_eq!(loads.load(Ordering::SeqCst), 5);
    // Every key is now an L1 hit on B, with A's values for the hot ones.
    let before = b.stats().total;
    for i in 0..15u64 {
        let v: Option<Arc<String>> = b.get(Kind::DATABASE_QUERY, &format!("user:{i}")).await;
        let want = if i < 10 { "from A" } else { "from B" };
        assert_eq!(
            v.as_deref().map(String::as_str),
            Some(format!("{want} {i}").as_str())
        );
    }
    let after = b.stats().total;
    assert_eq!(after.l1.hits - before.l1.hits, 15);
    assert_eq!(after.l2.hits, before.l2.hits, "no L2 read after warming");
    // A second warm-up finds everything hot in L1 and loads nothing.
    let again = b
        .warm_with(WarmPlan::new().registered(false).entries(
            Kind::DATABASE_QUERY,
            (0..15u64).map(|i| {
                (format!("user:{i}"), move || async move {
                    Err::<String, _>(format!("loader {i} called on a warm cache"))
                })
            }),
        ))
        .await;
    assert_eq!((again.already_hot, again.warmed), (15, 0), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_timing_out_and_panicking_warmers_are_reported_and_the_others_complete() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("warm-fail")).await;
    let plan = WarmPlan::new()
        .registered(false)
        .timeout(Duration::from_millis(300))
        .task("slow", async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Res::Ok(())
        })
        .task("failing", async { Res::Err("backend said no".into()) })
        .task("panicking", async {
            if std::hint::black_box(true) {
                panic!("warmer bug");
            }
            Res::Ok(())
        })
        .entries(
            Kind::API_RESPONSE,
            ["a", "b", "c"].map(|k| {
                (k, move || async move {
                    if k == "b" {
                        Err(format!("cannot load {k}"))
                    } else {
                        Ok(k.to_uppercase())
                    }
                })
            }),
        )
        .task("fine", async { Res::Ok(()) });

    let started = Instant::now();
    let report = cache.warm_with(plan).await;

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow warmer was not cut at its deadline"
    );
    // Completed: entries a and c, and the task "fine".
    assert_eq!(report.warmed, 3, "{report:?}");
    let reason = |warmer: &str| {
        report
            .failed
            .iter()
            .find(|f| f.warmer == warmer)
            .unwrap_or_else(|| panic!("{warmer} not reported: {report:?}"))
    };
    assert!(reason("slow").timed_out);
    assert!(reason("slow").reason.contains("timed out"));
    assert_eq!(reason("failing").reason, "backend said no");
    assert!(!reason("failing").timed_out);
    assert!(reason("panicking").reason.contains("warmer bug"));
    let entry = reason("entries(api_response)");
    assert_eq!(entry.key.as_deref(), Some("b"));
    assert_eq!(entry.reason, "cannot load b");
    assert_eq!(report.failed.len(), 4);
    let a: Option<Arc<String>> = cache.get(Kind::API_RESPONSE, "a").await;
    assert_eq!(a.as_deref().map(String::as_str), Some("A"));
    let b: Option<Arc<String>> = cache.get(Kind::API_RESPONSE, "b").await;
    assert!(b.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_loaders_and_tasks_run_at_once_than_the_concurrency_bound() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("warm-bound")).await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let enter = {
        let (in_flight, max_seen) = (in_flight.clone(), max_seen.clone());
        move || {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            max_seen.fetch_max(now, Ordering::SeqCst);
        }
    };
    let mut plan = WarmPlan::new().registered(false).concurrency(3);
    // 300 entries over three kinds (so several batches run at once) and 5 tasks, 20 ms each.
    for kind in [Kind::API_RESPONSE, Kind::DATABASE_QUERY, Kind::STATIC_DATA] {
        plan = plan.entries(
            kind,
            (0..100u32).map(|i| {
                let (enter, in_flight) = (enter.clone(), in_flight.clone());
                (format!("k{i}"), move || async move {
                    enter();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    Res::Ok(i)
                })
            }),
        );
    }
    for t in 0..5 {
        let (enter, in_flight) = (enter.clone(), in_flight.clone());
        plan = plan.task(format!("task{t}"), async move {
            enter();
            tokio::time::sleep(Duration::from_millis(20)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Res::Ok(())
        });
    }

    let report = cache.warm_with(plan).await;

    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.warmed, 305);
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        3,
        "the bound was exceeded, or never reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_leases_each_batch_in_one_pipeline_and_writes_back_by_compare_and_set() {
    let server = RedisServer::start();
    // No stats reports: their SETs would be counted too.
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("warm-cmds"))
        .stats_report_interval(Duration::ZERO)
        .build()
        .await
        .expect("build cache");
    server.reset_stats().await;
    let n = 300u64;
    let report = cache
        .warm_with(WarmPlan::new().registered(false).entries(
            Kind::DATABASE_QUERY,
            (0..n).map(|i| (format!("row:{i}"), move || async move { Res::Ok(i) })),
        ))
        .await;
    assert_eq!(report.warmed, n, "{report:?}");

    // The same protocol as a read-through load, batched: per entry one read that leases the
    // absent key (`SET NX GET`) and one compare-and-set write-back (a script whose SET counts
    // too), so that warming never stores over an invalidation made meanwhile; no plain reads.
    assert_eq!(server.command_calls(Some("set")).await, 2 * n);
    assert_eq!(server.command_calls(Some("evalsha")).await, n);
    assert_eq!(server.command_calls(Some("eval")).await, 0);
    // The scripts' own comparisons are the only GETs; no MGET.
    assert_eq!(server.command_calls(Some("get")).await, n);
    assert_eq!(server.command_calls(Some("mget")).await, 0);
    // In pipelines: 300 keys in batches of 128 are 3 pipelines of reads and 3 of writes (and a
    // few commands of the cache's own), far fewer socket reads than commands.
    let reads = server.info_u64("stats", "total_reads_processed").await;
    assert!(
        reads < 30,
        "{reads} socket reads for {} commands: not pipelined",
        3 * n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_writes_are_pipelined_so_round_trips_do_not_grow_with_the_entries() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let cache = Cache::builder()
        .redis_url(proxy.url())
        .prefix(unique_prefix("warm-rtt"))
        .l2_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("build cache");
    // 100 ms per round trip from now on.
    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(50)));
    let n = 256u64;
    let started = Instant::now();
    let report = cache
        .warm_with(WarmPlan::new().registered(false).entries(
            Kind::DATABASE_QUERY,
            (0..n).map(|i| (format!("row:{i}"), move || async move { Res::Ok(i) })),
        ))
        .await;
    let took = started.elapsed();

    assert_eq!(
        (report.warmed, report.l2_write_errors),
        (n, 0),
        "{report:?}"
    );
    // Two batches, each one pipeline of reads and one of writes: a few round trips (~0.2-0.5 s).
    // One round trip per entry would take 256 x 100 ms = 25 s.
    assert!(took < Duration::from_secs(3), "warming took {took:?}");
    proxy.set_mode(ProxyMode::Pass);
    let mut c = server.conn().await;
    let stored: u64 = redis::cmd("DBSIZE")
        .query_async(&mut c)
        .await
        .expect("DBSIZE");
    assert!(stored >= n, "only {stored} keys in Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmed_values_whose_ttl_is_zero_are_stored_nowhere_and_leave_no_lease() {
    let server = RedisServer::start();
    let prefix = unique_prefix("warm-zero-ttl");
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .stats_report_interval(Duration::ZERO)
        // With a grace period an entry outlives its TTL (to be served if the origin fails): a
        // zero-TTL value written anyway would stay for the grace period.
        .fail_safe_grace(Duration::from_secs(60))
        .build()
        .await
        .expect("build cache");
    // Odd values get a zero TTL from the TTL function: "do not store", as on the read path.
    let opts = cache_core::EntryOptions::new().ttl_with(|v: &u64| {
        if v % 2 == 1 {
            Duration::ZERO
        } else {
            Duration::from_secs(60)
        }
    });
    let report = cache
        .warm_with(WarmPlan::new().registered(false).entries_with(
            Kind::DATABASE_QUERY,
            opts,
            (0..10u64).map(|i| (format!("n:{i}"), move || async move { Res::Ok(i) })),
        ))
        .await;
    assert_eq!(report.warmed, 10, "{report:?}");

    let mut c = server.conn().await;
    for i in 0..10u64 {
        let key = format!("{prefix}:v1:database_query:n:{i}");
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("EXISTS");
        // Even values are in Redis; odd ones are not (not even the batch's lease).
        assert_eq!(exists, i % 2 == 0, "{key}");
        let cached: Option<Arc<u64>> = cache.get(Kind::DATABASE_QUERY, &format!("n:{i}")).await;
        assert_eq!(
            cached.as_deref().copied(),
            (i % 2 == 0).then_some(i),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_leases_outlive_loaders_slower_than_the_tombstone_ttl() {
    let server = RedisServer::start();
    let prefix = unique_prefix("warm-slow-loaders");
    // Leases of loads live as long as tombstones (1 s here); these loaders take longer.
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .invalidation_tombstone_ttl(Duration::from_secs(1))
        .stats_report_interval(Duration::ZERO)
        .build()
        .await
        .expect("build cache");
    let gate = cache_tests::Gate::closed();
    let started = Instant::now();
    let n = 4u64;
    let warming = {
        let gate = gate.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .warm_with(WarmPlan::new().registered(false).entries(
                    Kind::DATABASE_QUERY,
                    (0..n).map(move |i| {
                        let gate = gate.clone();
                        (format!("slow:{i}"), move || async move {
                            gate.wait().await;
                            Res::Ok(i)
                        })
                    }),
                ))
                .await
        })
    };
    // The loaders are held past the tombstone TTL: a lease that lived only that long is gone.
    let mut c = server.conn().await;
    let first = format!("{prefix}:v1:database_query:slow:0");
    cache_tests::within(Duration::from_secs(10), "the batch leases its keys", || {
        let mut c = c.clone();
        let first = first.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(&first)
                .query_async::<bool>(&mut c)
                .await
                .unwrap_or(false)
        }
    })
    .await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&first)
        .query_async(&mut c)
        .await
        .expect("PTTL");
    assert!(
        pttl > 1_000,
        "the lease lives no longer than a tombstone: {pttl} ms"
    );
    tokio::time::sleep(Duration::from_millis(1_500).saturating_sub(started.elapsed())).await;
    gate.open();
    let report = warming.await.expect("warm task");
    assert_eq!(
        (report.warmed, report.l2_write_errors),
        (n, 0),
        "{report:?}"
    );
    for i in 0..n {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("{prefix}:v1:database_query:slow:{i}"))
            .query_async(&mut c)
            .await
            .expect("EXISTS");
        assert!(exists, "slow:{i} was not written back");
    }
}
