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

use crate::{acl, init_tracing, unique_prefix, within, RedisCluster, RedisServer};

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

// ---- Batches ------------------------------------------------------------------------------------

/// The per-command counts of the backend, summed over its nodes.
async fn command_totals(b: Backend<'_>, names: &[&str]) -> Vec<u64> {
    let mut out = vec![0; names.len()];
    for s in b.servers() {
        for (o, n) in out.iter_mut().zip(names) {
            *o += s.command_calls(Some(n)).await;
        }
    }
    out
}

/// 100 keys cached nowhere: one loader call with all of them, their leases in one pipeline, one
/// compare-and-set each in one pipeline (per master on a cluster); then the same keys are L1 hits
/// on that instance (no command at all) and L2 hits on another, read with one `MGET` (on a
/// cluster, `GET`s pipelined per master); duplicates keep their places.
pub async fn batch_loads_call_the_loader_once_and_pipeline_every_step(b: Backend<'_>) {
    const N: u32 = 100;
    let prefix = unique_prefix("batch");
    let (x, y) = (b.cache(&prefix).await, b.cache(&prefix).await);
    let keys: Vec<String> = (0..N).map(|i| format!("k{i}")).collect();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let loader = |asked: Arc<std::sync::Mutex<Vec<Vec<String>>>>| {
        move |missing: Vec<String>| {
            asked.lock().unwrap().push(missing.clone());
            async move {
                Res::Ok(
                    missing
                        .into_iter()
                        .map(|k| {
                            let v: u32 = k[1..].parse().unwrap();
                            (k, v * 10)
                        })
                        .collect::<std::collections::HashMap<_, _>>(),
                )
            }
        }
    };
    b.reset_stats().await;
    let got = x
        .get_or_load_many(Kind::DATABASE_QUERY, &keys, loader(asked.clone()))
        .await
        .unwrap();
    // Socket reads first (every later INFO is one more): the batch's commands came in a few.
    let mut reads = Vec::new();
    for s in b.servers() {
        reads.push(reads_processed(s).await);
    }
    for (s, reads) in b.servers().into_iter().zip(reads) {
        let sets = s.command_calls(Some("set")).await;
        assert!(
            reads * 4 < sets,
            "node {}: {sets} SETs in {reads} socket reads: not pipelined",
            s.port()
        );
    }
    assert_eq!(got.len(), N as usize);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v.as_deref(), Some(&(i as u32 * 10)));
    }
    {
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 1, "one loader call");
        assert_eq!(asked[0].len(), N as usize, "with every missing key");
    }
    let [mget, get, set, evalsha] = command_totals(b, &["mget", "get", "set", "evalsha"])
        .await
        .try_into()
        .unwrap();
    // A compare-and-set is a script whose GET and SET count too.
    let single = matches!(b, Backend::Single(_));
    assert_eq!(evalsha, u64::from(N), "{}", b.command_breakdown().await);
    assert_eq!(set, 2 * u64::from(N), "a lease and a write each");
    if single {
        assert_eq!(
            (mget, get),
            (1, u64::from(N)),
            "one MGET, then the scripts' GETs"
        );
    } else {
        assert_eq!(
            (mget, get),
            (0, 2 * u64::from(N)),
            "GETs pipelined per master"
        );
    }
    let stats = x.stats().kinds[Kind::DATABASE_QUERY.name()].clone();
    assert_eq!(stats.loader.calls, 1);
    assert_eq!(stats.l1.misses, u64::from(N));

    // Again on x: every key from L1, nothing sent.
    b.reset_stats().await;
    let again = x
        .get_or_load_many(Kind::DATABASE_QUERY, &keys, loader(asked.clone()))
        .await
        .unwrap();
    assert_eq!(again, got);
    assert_eq!(
        command_totals(b, &["mget", "get", "set", "evalsha"]).await,
        vec![0; 4],
        "L1 hits send nothing"
    );
    // On y: from L2, in one read, with duplicates in place.
    let mixed = ["k7", "k3", "k7", "absent"];
    let read = y.get_many::<u32>(Kind::DATABASE_QUERY, &mixed).await;
    assert_eq!(
        read.iter()
            .map(|v| v.as_deref().copied())
            .collect::<Vec<_>>(),
        vec![Some(70), Some(30), Some(70), None]
    );
    // Looked up in L1 at every position (as four `get`s), read from L2 once per distinct key.
    let kind = y.stats().kinds[Kind::DATABASE_QUERY.name()].clone();
    assert_eq!((kind.l1.misses, kind.l2.hits, kind.l2.misses), (4, 2, 1));
    let [mget, get] = command_totals(b, &["mget", "get"])
        .await
        .try_into()
        .unwrap();
    if single {
        assert_eq!((mget, get), (1, 0));
    } else {
        assert_eq!((mget, get), (0, 3), "one GET per distinct key");
    }
    let got_y = y
        .get_or_load_many(Kind::DATABASE_QUERY, &keys, loader(asked.clone()))
        .await
        .unwrap();
    assert_eq!(got_y, got);
    assert_eq!(asked.lock().unwrap().len(), 1, "y found every value in L2");
    assert_eq!(
        y.stats().kinds[Kind::DATABASE_QUERY.name()].l2.hits,
        u64::from(N),
        "2 L2 hits by get_many (k3, k7), then the batch's other 98 (those two from L1 by then)"
    );
}

/// A batch load of `keys` (each loaded as 1) on its own task, whose loader says it started and
/// then waits at `held`.
fn held_batch(
    x: &Cache,
    kind: &'static str,
    keys: &[String],
    held: &crate::Gate,
    started: &Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<Vec<Option<Arc<u32>>>> {
    let (x, keys, held, started) = (x.clone(), keys.to_vec(), held.clone(), started.clone());
    tokio::spawn(async move {
        x.get_or_load_many(kind, &keys, |missing: Vec<String>| {
            let (held, started) = (held.clone(), started.clone());
            async move {
                started.notify_one();
                held.wait().await;
                let loaded = missing.into_iter().map(|k| (k, 1u32));
                Res::Ok(loaded.collect::<std::collections::HashMap<_, _>>())
            }
        })
        .await
        .unwrap()
    })
}

/// A key a batch is loading is not loaded again by a single caller (it waits for the batch), and
/// a key a single caller is loading is left out of a batch's loader call (the batch waits for it).
pub async fn batches_and_single_reads_share_loads(b: Backend<'_>) {
    let prefix = unique_prefix("batch-share");
    let x = b.cache(&prefix).await;
    let kind = "database_query";
    let held = crate::Gate::closed();
    let started = Arc::new(tokio::sync::Notify::new());

    // The batch leads; a single caller of one of its keys joins it.
    let keys: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let batch = held_batch(&x, kind, &keys, &held, &started);
    started.notified().await;
    let single_calls = Arc::new(AtomicUsize::new(0));
    let single = {
        let (x, calls) = (x.clone(), single_calls.clone());
        tokio::spawn(async move {
            *x.get_or_load(kind, "a5", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Res::Ok(2u32)
            })
            .await
            .unwrap()
        })
    };
    // The single caller waits for the batch: it cannot finish while the batch's loader is held.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), async {
            while !single.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .is_err(),
        "the single caller did not wait for the batch loading its key"
    );
    held.open();
    assert!(batch
        .await
        .unwrap()
        .iter()
        .all(|v| v.as_deref() == Some(&1)));
    assert_eq!(
        single.await.unwrap(),
        1,
        "the single caller got the batch's value"
    );
    assert_eq!(single_calls.load(Ordering::SeqCst), 0);

    // A single caller leads; a batch including its key joins it for that key.
    held.close();
    let single = {
        let (x, held, started) = (x.clone(), held.clone(), started.clone());
        tokio::spawn(async move {
            *x.get_or_load(kind, "b3", || async {
                started.notify_one();
                held.wait().await;
                Res::Ok(3u32)
            })
            .await
            .unwrap()
        })
    };
    started.notified().await;
    let keys: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let batch = {
        let (x, keys, asked) = (x.clone(), keys.clone(), asked.clone());
        tokio::spawn(async move {
            x.get_or_load_many(kind, &keys, |missing: Vec<String>| {
                asked.lock().unwrap().push(missing.clone());
                async move {
                    Res::Ok(
                        missing
                            .into_iter()
                            .map(|k| (k, 4u32))
                            .collect::<std::collections::HashMap<_, _>>(),
                    )
                }
            })
            .await
            .unwrap()
        })
    };
    within(Duration::from_secs(10), "the batch's loader call", || {
        let asked = asked.clone();
        async move { !asked.lock().unwrap().is_empty() }
    })
    .await;
    held.open();
    let got = batch.await.unwrap();
    assert_eq!(single.await.unwrap(), 3);
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(
        !asked[0].contains(&"b3".to_string()),
        "b3 was being loaded: {asked:?}"
    );
    assert_eq!(asked[0].len(), 5);
    assert_eq!(
        got[3].as_deref(),
        Some(&3),
        "the batch got the single load's value"
    );
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, v)| i == 3 || v.as_deref() == Some(&4)));
}

/// A key invalidated (on another instance) while a batch loads it: the batch returns what it
/// loaded, but stores it nowhere; the batch's other keys are stored.
pub async fn a_batch_load_begun_before_an_invalidation_stores_nothing_for_that_key(b: Backend<'_>) {
    let prefix = unique_prefix("batch-fence");
    let (x, y) = (b.cache(&prefix).await, b.cache(&prefix).await);
    let kind = "database_query";
    let held = crate::Gate::closed();
    let started = Arc::new(tokio::sync::Notify::new());
    let keys: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    let batch = held_batch(&x, kind, &keys, &held, &started);
    started.notified().await;
    y.invalidate(kind, "c2").await;
    held.open();
    let got = batch.await.unwrap();
    assert!(
        got.iter().all(|v| v.as_deref() == Some(&1)),
        "the call's answer"
    );
    let z = b.cache(&prefix).await;
    assert_eq!(
        z.get::<u32>(kind, "c2").await,
        None,
        "the fenced value reached L2"
    );
    assert_eq!(
        x.get::<u32>(kind, "c2").await,
        None,
        "the fenced value stayed in L1"
    );
    for k in ["c0", "c1", "c3", "c4"] {
        assert_eq!(z.get::<u32>(kind, k).await.as_deref(), Some(&1), "{k}");
    }
}

/// Batch entries carry the options' tags and TTLs; keys the loader did not return are
/// remembered as absent (`None`) only with `none_ttl`, for that TTL.
pub async fn batch_loads_keep_tags_ttls_and_negative_caching_when_asked(b: Backend<'_>) {
    let prefix = unique_prefix("batch-opts");
    let (x, y) = (b.cache(&prefix).await, b.cache(&prefix).await);
    let kind = "database_query";
    let calls = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let evens = |calls: Arc<std::sync::Mutex<Vec<Vec<String>>>>| {
        move |missing: Vec<String>| {
            calls.lock().unwrap().push(missing.clone());
            async move {
                let found: std::collections::HashMap<String, Option<u32>> = missing
                    .into_iter()
                    .filter_map(|k| {
                        let i: u32 = k[1..].parse().ok()?;
                        i.is_multiple_of(2).then_some((k, Some(i)))
                    })
                    .collect();
                Res::Ok(found)
            }
        }
    };
    let keys: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
    let opts = EntryOptions::new()
        .tags(["batch-tag"])
        .ttl(Duration::from_secs(60))
        .none_ttl(Duration::from_secs(5));
    let got = x
        .get_or_load_many_with(kind, &keys, &opts, evens(calls.clone()))
        .await
        .unwrap();
    for (i, v) in got.iter().enumerate() {
        let want = if i % 2 == 0 { Some(i as u32) } else { None };
        assert_eq!(v.as_deref(), Some(&want), "key n{i}");
    }
    // Remembered, absent ones included: y asks the loader for nothing.
    let again = y
        .get_or_load_many_with(kind, &keys, &opts, evens(calls.clone()))
        .await
        .unwrap();
    assert_eq!(again, got);
    assert_eq!(calls.lock().unwrap().len(), 1);
    let pttl = |key: &str| {
        let full = cache_core::admin::entry_key(&prefix, kind, key);
        async move {
            let mut c = match b {
                Backend::Single(s) => s.conn().await,
                Backend::Cluster(cl) => {
                    // The node holding the key answers; the others say MOVED.
                    let client = redis::cluster::ClusterClient::new(cl.urls()).unwrap();
                    let mut cc = client.get_async_connection().await.unwrap();
                    let ms: i64 = redis::cmd("PTTL")
                        .arg(&full)
                        .query_async(&mut cc)
                        .await
                        .unwrap();
                    return ms;
                }
            };
            redis::cmd("PTTL")
                .arg(&full)
                .query_async::<i64>(&mut c)
                .await
                .unwrap()
        }
    };
    let (absent, present) = (pttl("n1").await, pttl("n2").await);
    assert!((1..=5_000).contains(&absent), "absent key PTTL {absent}");
    assert!((55_000..=60_000).contains(&present), "value PTTL {present}");
    // The tag covers every entry of the batch.
    x.invalidate_tag("batch-tag").await;
    let z = b.cache(&prefix).await;
    let after = z
        .get_or_load_many_with(kind, &keys, &opts, evens(calls.clone()))
        .await
        .unwrap();
    assert_eq!(after, got);
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "the tag invalidated the batch's entries"
    );
    assert_eq!(calls.lock().unwrap()[1].len(), keys.len());

    // Without `none_ttl`, absent keys are asked for again.
    let plain = EntryOptions::new();
    let keys: Vec<String> = (10..14).map(|i| format!("m{i}")).collect();
    let calls = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    for _ in 0..2 {
        x.get_or_load_many_with(kind, &keys, &plain, evens(calls.clone()))
            .await
            .unwrap();
    }
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1], vec!["m11".to_string(), "m13".to_string()]);
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
            batch_loads_call_the_loader_once_and_pipeline_every_step,
            batches_and_single_reads_share_loads,
            a_batch_load_begun_before_an_invalidation_stores_nothing_for_that_key,
            batch_loads_keep_tags_ttls_and_negative_caching_when_asked,
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
