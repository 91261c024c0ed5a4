//! Contracts every L2 backend must keep, written once and run against a single redis-server
//! (`tests/contract_single.rs`) and a 3-master Redis Cluster (`tests/cluster.rs`).
//!
//! Every cache here connects as a Redis user with exactly the ACL rules the library documents
//! (`cache_core::admin::acl_rules` of its prefix), and after each contract the suite checks that
//! Redis refused none of its commands (`ACL LOG`): a command the library starts sending without
//! adding it to the rules fails the suite. The harness's own inspection (`KEYS`, `INFO`, `SCRIPT
//! FLUSH`...) goes through the default user.

use cache_core::{Cache, CacheBuilder, EntryOptions, Kind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{acl, init_tracing, unique_prefix, RedisCluster, RedisServer};

type Res<T> = Result<T, std::io::Error>;

/// The Redis deployment under test.
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    /// One node.
    Single(&'a RedisServer),
    /// A cluster.
    Cluster(&'a RedisCluster),
}

impl Backend<'_> {
    /// A builder pointed at this backend, as a user with exactly the documented ACL rules of
    /// `prefix` (created on every node).
    pub async fn builder(&self, prefix: &str) -> CacheBuilder {
        init_tracing();
        let user = acl::cache_user(prefix);
        let rules = cache_core::admin::acl_rules(prefix);
        for s in self.servers() {
            acl::set_user(s, &s.url(), &user, &rules).await;
        }
        let b = Cache::builder().prefix(prefix);
        match self {
            Backend::Single(s) => b.redis_url(acl::url_as(&s.url(), &user)),
            Backend::Cluster(c) => b.redis_cluster(c.urls().iter().map(|u| acl::url_as(u, &user))),
        }
    }

    /// Panics if any node refused a command of the caches' users since the last check (`ACL
    /// LOG`): the documented rules lack something the library sends.
    pub async fn assert_no_acl_refusals(&self) {
        for s in self.servers() {
            let refused = acl::refusals(&s.url()).await;
            assert!(
                refused.is_empty(),
                "node {} refused commands of the cache's ACL user (add them to \
                 cache_core::admin::ACL_RULES and the README):\n{}",
                s.port(),
                refused.join("\n")
            );
        }
    }

    /// A built cache (asserting it connected and subscribed).
    pub async fn cache(&self, prefix: &str) -> Cache {
        let c = self.builder(prefix).await.build().await.expect("build");
        assert_eq!(c.breaker_state(), Some(cache_core::BreakerState::Closed));
        assert!(c.backplane_subscribed());
        c
    }

    /// Keys matching `pattern`, over every node.
    pub async fn count_keys(&self, pattern: &str) -> usize {
        match self {
            Backend::Single(s) => {
                let mut c = s.conn().await;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query_async(&mut c)
                    .await
                    .expect("KEYS");
                keys.len()
            }
            Backend::Cluster(c) => c.keys(pattern).await.iter().map(Vec::len).sum(),
        }
    }

    /// How many nodes hold at least one key matching `pattern`.
    pub async fn nodes_holding(&self, pattern: &str) -> usize {
        match self {
            Backend::Single(_) => usize::from(self.count_keys(pattern).await > 0),
            Backend::Cluster(c) => c
                .keys(pattern)
                .await
                .iter()
                .filter(|k| !k.is_empty())
                .count(),
        }
    }

    /// The redis-server processes of the backend.
    fn servers(&self) -> Vec<&RedisServer> {
        match self {
            Backend::Single(s) => vec![*s],
            Backend::Cluster(c) => c.nodes().iter().collect(),
        }
    }

    async fn reset_stats(&self) {
        for s in self.servers() {
            s.reset_stats().await;
        }
    }

    async fn command_breakdown(&self) -> String {
        let mut out = String::new();
        for s in self.servers() {
            let info = s.info("commandstats").await;
            for l in info.lines().filter(|l| l.starts_with("cmdstat_")) {
                out.push_str(&format!("{}: {l}\n", s.port()));
            }
        }
        out
    }

    async fn calls(&self) -> u64 {
        let mut total = 0;
        for s in self.servers() {
            total += s.command_calls(None).await;
        }
        total
    }
}

/// Values loaded on one instance are read from L2 by another; 200 keys spread over every node.
pub async fn read_through_is_shared_between_instances(b: Backend<'_>) {
    let prefix = unique_prefix("shared");
    let (x, y) = (b.cache(&prefix).await, b.cache(&prefix).await);
    let calls = AtomicUsize::new(0);
    for i in 0..200u32 {
        let v = x
            .get_or_load(Kind::API_RESPONSE, &format!("k{i}"), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Res::Ok(i)
            })
            .await
            .unwrap();
        assert_eq!(*v, i);
    }
    for i in 0..200u32 {
        let v = y
            .get_or_load(Kind::API_RESPONSE, &format!("k{i}"), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Res::Ok(u32::MAX)
            })
            .await
            .unwrap();
        assert_eq!(*v, i, "instance y must read x's value from L2");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 200);
    assert_eq!(y.stats().total.l2.hits, 200);
    let expected_nodes = if matches!(b, Backend::Cluster(_)) {
        3
    } else {
        1
    };
    assert_eq!(
        b.nodes_holding(&format!("{prefix}:*")).await,
        expected_nodes
    );
}

/// 200 concurrent callers of a cold key: one loader call.
pub async fn concurrent_misses_run_one_loader(b: Backend<'_>) {
    let cache = b.cache(&unique_prefix("stampede")).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                *cache
                    .get_or_load(Kind::API_RESPONSE, "hot", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        Res::Ok(7u8)
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 7);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Two instances with the distributed lock, 50 callers each on one cold key: one loader call in
/// all, and the lock (one key, so any node of a cluster) is released afterwards.
pub async fn the_distributed_lock_runs_one_loader_across_instances(b: Backend<'_>) {
    let prefix = unique_prefix("dlock");
    let kind = cache_core::KindConfig::new(Duration::from_secs(60)).distributed_lock(true);
    let mut caches = Vec::new();
    for _ in 0..2 {
        caches.push(
            b.builder(&prefix)
                .await
                .kind(Kind::new("origin"), kind.clone())
                .build()
                .await
                .expect("build"),
        );
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for cache in &caches {
        for _ in 0..50 {
            let (cache, calls, barrier) = (cache.clone(), calls.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                *cache
                    .get_or_load("origin", "cold", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Res::Ok(42u32)
                    })
                    .await
                    .unwrap()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 42);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let lock = |c: &Cache| c.stats().total.lock;
    assert_eq!(lock(&caches[0]).acquired + lock(&caches[1]).acquired, 1);
    assert_eq!(b.count_keys(&format!("{prefix}:lock:*")).await, 0);
}

/// A load that began before an invalidation on another instance does not store its result.
pub async fn an_invalidation_fences_off_a_load_in_flight_elsewhere(b: Backend<'_>) {
    let prefix = unique_prefix("fence");
    let (x, y) = (b.cache(&prefix).await, b.cache(&prefix).await);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let xc = x.clone();
    let load = tokio::spawn(async move {
        *xc.get_or_load(Kind::DATABASE_QUERY, "row", || async move {
            let _ = started_tx.send(());
            let _ = go_rx.await;
            Res::Ok(1u32) // read before the update
        })
        .await
        .unwrap()
    });
    started_rx.await.unwrap();
    y.invalidate(Kind::DATABASE_QUERY, "row").await;
    go_tx.send(()).unwrap();
    assert_eq!(load.await.unwrap(), 1);
    let fresh = b.cache(&prefix).await;
    assert!(
        fresh
            .get::<u32>(Kind::DATABASE_QUERY, "row")
            .await
            .is_none(),
        "the stale load was stored in L2 after the invalidation"
    );
    assert!(x.stats().total.l2.write_conflicts >= 1);
}

/// Tags whose entries live on every node are invalidated in O(1) commands, on every instance.
pub async fn tags_invalidate_everywhere_in_constant_commands(b: Backend<'_>) {
    let prefix = unique_prefix("tags");
    let (x, y) = (b.cache(&prefix).await, b.cache(&prefix).await);
    let opts = EntryOptions::new().tags(["tenant:7"]);
    for i in 0..2_000u32 {
        x.set_with(Kind::DATABASE_QUERY, &format!("row:{i}"), i, &opts)
            .await;
    }
    x.set(Kind::DATABASE_QUERY, "untagged", 1u32).await;
    for i in [0u32, 999, 1_999] {
        assert_eq!(
            *y.get::<u32>(Kind::DATABASE_QUERY, &format!("row:{i}"))
                .await
                .unwrap(),
            i
        );
    }
    b.reset_stats().await;
    x.invalidate_tag("tenant:7").await;
    let calls = b.calls().await;
    // INCR script (+ a script load on a node that had not seen it), PUBLISH, and the background
    // heartbeats and cluster-topology checks of the two instances: a handful, whatever the number
    // of tagged entries (2,000 here).
    assert!(
        calls <= 20,
        "{calls} commands for one tag invalidation:\n{}",
        b.command_breakdown().await
    );
    let t = Instant::now();
    for i in [0u32, 999, 1_999] {
        while y
            .get::<u32>(Kind::DATABASE_QUERY, &format!("row:{i}"))
            .await
            .is_some()
        {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "instance y still serves row:{i}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(b
            .cache(&prefix)
            .await
            .get::<u32>(Kind::DATABASE_QUERY, &format!("row:{i}"))
            .await
            .is_none());
    }
    assert_eq!(
        *y.get::<u32>(Kind::DATABASE_QUERY, "untagged")
            .await
            .unwrap(),
        1
    );
}

/// A `set` on one instance replaces another instance's L1 copy.
pub async fn the_backplane_reaches_other_instances(b: Backend<'_>) {
    let prefix = unique_prefix("bp");
    let (x, y) = (b.cache(&prefix).await, b.cache(&prefix).await);
    x.set(Kind::API_RESPONSE, "k", 1u32).await;
    assert_eq!(*y.get::<u32>(Kind::API_RESPONSE, "k").await.unwrap(), 1);
    x.set(Kind::API_RESPONSE, "k", 2u32).await;
    let t = Instant::now();
    while *y.get::<u32>(Kind::API_RESPONSE, "k").await.unwrap() != 2 {
        assert!(t.elapsed() < Duration::from_secs(1), "y kept its L1 copy");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Clears sweep every node and stay within their kind and prefix.
pub async fn clears_cover_every_node_within_kind_and_prefix(b: Backend<'_>) {
    let prefix = unique_prefix("clear");
    let other = unique_prefix("clear-other");
    let (x, o) = (b.cache(&prefix).await, b.cache(&other).await);
    for i in 0..300u32 {
        x.set(Kind::API_RESPONSE, &format!("a{i}"), i).await;
        x.set(Kind::STATIC_DATA, &format!("s{i}"), i).await;
        o.set(Kind::API_RESPONSE, &format!("a{i}"), i).await;
    }
    assert_eq!(x.clear_kind(Kind::API_RESPONSE).await.unwrap(), 300);
    assert_eq!(
        b.count_keys(&format!("{prefix}:v1:api_response:*")).await,
        0
    );
    assert_eq!(
        b.count_keys(&format!("{prefix}:v1:static_data:*")).await,
        300
    );
    assert_eq!(x.clear_all().await.unwrap(), 300);
    assert_eq!(b.count_keys(&format!("{prefix}:v1:*")).await, 0);
    assert_eq!(
        b.count_keys(&format!("{other}:v1:*")).await,
        300,
        "another prefix was cleared"
    );
}

/// Two prefixes on one Redis never read, clear or invalidate each other's entries (keys, tags,
/// backplane messages).
pub async fn prefixes_are_isolated(b: Backend<'_>) {
    let (pa, pb) = (unique_prefix("iso-a"), unique_prefix("iso-b"));
    let (a, bb) = (b.cache(&pa).await, b.cache(&pb).await);
    let tagged = EntryOptions::new().tags(["shared-tag"]);
    a.set_with(Kind::API_RESPONSE, "k", "from-a".to_string(), &tagged)
        .await;
    bb.set_with(Kind::API_RESPONSE, "k", "from-b".to_string(), &tagged)
        .await;
    assert_eq!(
        *a.get::<String>(Kind::API_RESPONSE, "k").await.unwrap(),
        "from-a"
    );
    assert_eq!(
        *bb.get::<String>(Kind::API_RESPONSE, "k").await.unwrap(),
        "from-b"
    );
    // A marker `bb` holds in L1, which another instance of `bb`'s prefix invalidates after `a`
    // has sent its messages: once `bb` has dropped it, any message of `a`'s that (wrongly) reached
    // `bb`'s subscription has been handled too (on one node, Redis delivers in the order it
    // received the PUBLISHes; on a cluster, through the cluster bus, almost always so).
    bb.set(Kind::API_RESPONSE, "marker", 1u32).await;
    let other_b = b.cache(&pb).await;
    a.invalidate(Kind::API_RESPONSE, "k").await;
    a.invalidate_tag("shared-tag").await;
    a.clear_all().await.unwrap();
    other_b.invalidate(Kind::API_RESPONSE, "marker").await;
    crate::within(
        Duration::from_secs(5),
        "bb hears the marker's invalidation",
        || async { bb.get::<u32>(Kind::API_RESPONSE, "marker").await.is_none() },
    )
    .await;
    // `bb` kept its own entry in L1: it heard nothing from `a`.
    let kept = bb
        .get_or_load_traced(Kind::API_RESPONSE, "k", &tagged, || async {
            Err::<String, _>("bb lost its entry")
        })
        .await
        .expect("bb's entry");
    assert_eq!(
        (kept.value.as_str(), kept.source),
        ("from-b", cache_core::Source::L1),
        "bb dropped its L1 copy on a message of another prefix"
    );
    let fresh_b = b.cache(&pb).await;
    assert_eq!(
        *fresh_b
            .get::<String>(Kind::API_RESPONSE, "k")
            .await
            .unwrap(),
        "from-b"
    );
}

/// `warm_with` writes its entries with pipelines (one per master on a cluster): every node gets
/// its share of the SETs in far fewer socket reads than SETs; a second warm-up finds everything
/// hot and calls no loader; another instance reads the values from L2.
pub async fn warming_pipelines_entries_to_every_node(b: Backend<'_>) {
    const N: u32 = 2_000;
    let prefix = unique_prefix("warm");
    // What is checked is where the writes go, not latency: a generous deadline keeps a loaded CI
    // machine from tripping the breaker.
    let build = || async {
        b.builder(&prefix)
            .await
            .l2_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("build")
    };
    let (x, y) = (build().await, build().await);
    let calls = Arc::new(AtomicUsize::new(0));
    let plan = |calls: Arc<AtomicUsize>| {
        cache_core::WarmPlan::new().registered(false).entries(
            Kind::STATIC_DATA,
            (0..N).map(move |i| {
                let calls = calls.clone();
                (format!("row:{i}"), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Res::Ok(i * 3)
                })
            }),
        )
    };
    b.reset_stats().await;
    let report = x.warm_with(plan(calls.clone())).await;
    assert_eq!(report.warmed, u64::from(N), "{report:?}");
    assert!(
        report.failed.is_empty() && report.l2_write_errors == 0,
        "{report:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), N as usize);
    // Per entry one lease read (`SET NX GET`) and one compare-and-set (a script whose SET counts
    // too), pipelined to the node that serves the key.
    let mut sets_total = 0;
    let mut writes_total = 0;
    for s in b.servers() {
        let sets = s.command_calls(Some("set")).await;
        let writes = s.command_calls(Some("evalsha")).await;
        let reads = reads_processed(s).await;
        assert!(writes > 0, "node {} got no write", s.port());
        assert!(
            reads * 4 < sets,
            "node {}: {sets} SETs in {reads} socket reads: not pipelined",
            s.port()
        );
        sets_total += sets;
        writes_total += writes;
    }
    assert_eq!(sets_total, 2 * u64::from(N));
    assert_eq!(writes_total, u64::from(N));
    let again = y.warm_with(plan(calls.clone())).await;
    assert_eq!(again.already_hot, u64::from(N), "{again:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        N as usize,
        "a hot entry was loaded again"
    );
    for i in [0, N / 2, N - 1] {
        assert_eq!(
            *y.get::<u32>(Kind::STATIC_DATA, &format!("row:{i}"))
                .await
                .unwrap(),
            i * 3
        );
    }
}

/// Redis lost its script cache on one node (a restart or failover of one master): a warming
/// batch's compare-and-set writes answered `NOSCRIPT` there are sent again once the scripts are
/// loaded, and only those (the others were applied: sent again, they would find their own write and
/// report a conflict). Every entry is stored, none is counted as a conflict or a write error.
pub async fn lost_scripts_resend_only_the_items_refused_for_them(b: Backend<'_>) {
    const N: u32 = 300;
    let prefix = unique_prefix("noscript");
    let build = || async {
        b.builder(&prefix)
            .await
            .l2_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("build")
    };
    let (x, y) = (build().await, build().await);
    let plan = |from: u32| {
        cache_core::WarmPlan::new().registered(false).entries(
            Kind::STATIC_DATA,
            (from..from + N).map(|i| (format!("row:{i}"), move || async move { Res::Ok(i * 3) })),
        )
    };
    // The scripts are loaded everywhere (a first batch used them), then one node loses them.
    let first = x.warm_with(plan(0)).await;
    assert_eq!(first.warmed, u64::from(N), "{first:?}");
    let flushed = b.servers()[0];
    let mut c = flushed.conn().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .expect("SCRIPT FLUSH");
    b.reset_stats().await;

    let report = x.warm_with(plan(N)).await;

    assert_eq!(report.warmed, u64::from(N), "{report:?}");
    assert!(
        report.failed.is_empty() && report.l2_write_errors == 0,
        "{report:?}"
    );
    let l2 = x.stats().total.l2;
    assert_eq!(
        l2.write_conflicts, 0,
        "an applied write was sent again: {l2:?}"
    );
    assert_eq!(l2.refused, 0, "{l2:?}");
    // One compare-and-set per entry, plus one more for each answered NOSCRIPT (until the scripts
    // were loaded again), and nothing else.
    let mut total = 0;
    let mut noscript = 0;
    for s in b.servers() {
        total += s.command_calls(Some("evalsha")).await;
        noscript += failed_evalsha(s).await;
    }
    assert!(
        failed_evalsha(flushed).await > 0,
        "the flushed node answered no NOSCRIPT"
    );
    assert_eq!(
        noscript,
        failed_evalsha(flushed).await,
        "NOSCRIPT elsewhere"
    );
    assert_eq!(total, u64::from(N) + noscript, "EVALSHA calls");
    for i in [N, N + N / 2, 2 * N - 1] {
        assert_eq!(
            y.get::<u32>(Kind::STATIC_DATA, &format!("row:{i}"))
                .await
                .as_deref(),
            Some(&(i * 3)),
            "row:{i} reached L2"
        );
    }
}

/// `failed_calls` of `EVALSHA` in `INFO commandstats` (a `NOSCRIPT` answer is one).
async fn failed_evalsha(s: &RedisServer) -> u64 {
    s.info("commandstats")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("failed_calls=")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `total_reads_processed` of `INFO stats`: socket reads (a pipeline of many commands can arrive
/// in one).
async fn reads_processed(s: &RedisServer) -> u64 {
    s.info_u64("stats", "total_reads_processed").await
}

/// Defines one `#[tokio::test]` per contract, each against a fresh backend started by `$start`
/// (`RedisServer::start()` or `RedisCluster::start()`) and wrapped as `Backend::$variant`: every
/// backend runs the same list.
#[macro_export]
macro_rules! contract_suite {
    ($start:expr, $variant:ident) => {
        $crate::contract_suite!(
            @each $start, $variant,
            read_through_is_shared_between_instances,
            concurrent_misses_run_one_loader,
            the_distributed_lock_runs_one_loader_across_instances,
            an_invalidation_fences_off_a_load_in_flight_elsewhere,
            tags_invalidate_everywhere_in_constant_commands,
            the_backplane_reaches_other_instances,
            clears_cover_every_node_within_kind_and_prefix,
            prefixes_are_isolated,
            warming_pipelines_entries_to_every_node,
            lost_scripts_resend_only_the_items_refused_for_them,
        );
    };
    (@each $start:expr, $variant:ident, $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $start;
                $crate::contract::$name($crate::contract::Backend::$variant(&backend)).await;
                $crate::contract::Backend::$variant(&backend)
                    .assert_no_acl_refusals()
                    .await;
            }
        )*
    };
}
