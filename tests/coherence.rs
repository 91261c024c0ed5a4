//! Cross-instance coherence against a real redis-server: the backplane, tag invalidation in both
//! tiers, the stale-set race, and a second OS process.

use cache_core::{Cache, EntryOptions, Kind};
use cache_tests::{command_calls, init_tracing, unique_prefix, within, RedisServer};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, std::io::Error>;

async fn instance(server: &RedisServer, prefix: &str) -> Cache {
    init_tracing();
    let c = Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .build()
        .await
        .expect("build");
    assert!(
        c.backplane_subscribed(),
        "build() returns a subscribed cache"
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_on_one_instance_replaces_the_l1_copy_on_another() {
    let server = RedisServer::start();
    let prefix = unique_prefix("bp-set");
    let (a, b) = (
        instance(&server, &prefix).await,
        instance(&server, &prefix).await,
    );
    a.set(Kind::API_RESPONSE, "k", "v1".to_string()).await;
    assert_eq!(
        *b.get::<String>(Kind::API_RESPONSE, "k").await.unwrap(),
        "v1"
    );
    // B now holds v1 in L1 for 300 s; only the backplane can tell it about v2.
    a.set(Kind::API_RESPONSE, "k", "v2".to_string()).await;
    let took = within(Duration::from_secs(1), "B sees v2", || async {
        b.get::<String>(Kind::API_RESPONSE, "k").await.as_deref() == Some(&"v2".to_string())
    })
    .await;
    println!("B served the new value {took:?} after A's set returned");
    assert!(b.stats().backplane.unwrap().received > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_on_one_instance_drops_the_l1_copy_on_another() {
    let server = RedisServer::start();
    let prefix = unique_prefix("bp-inval");
    let (a, b) = (
        instance(&server, &prefix).await,
        instance(&server, &prefix).await,
    );
    a.set(Kind::SESSION_DATA, "s", 7u32).await;
    assert_eq!(*b.get::<u32>(Kind::SESSION_DATA, "s").await.unwrap(), 7);
    a.invalidate(Kind::SESSION_DATA, "s").await;
    within(Duration::from_secs(1), "B drops its copy", || async {
        b.get::<u32>(Kind::SESSION_DATA, "s").await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_tag_removes_tagged_entries_from_every_instance_and_tier() {
    let server = RedisServer::start();
    let prefix = unique_prefix("tags");
    let (a, b) = (
        instance(&server, &prefix).await,
        instance(&server, &prefix).await,
    );
    let loads = AtomicUsize::new(0);
    let load = |c: &Cache, key: &'static str, tags: &'static [&'static str], v: u32| {
        let c = c.clone();
        let loads = &loads;
        async move {
            let opts = EntryOptions::new().tags(tags.iter().copied());
            *c.get_or_load_with(Kind::DATABASE_QUERY, key, &opts, || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Res::Ok(v)
            })
            .await
            .unwrap()
        }
    };
    load(&a, "profile:1", &["user:1"], 1).await;
    load(&a, "settings:1", &["user:1", "team:9"], 2).await;
    load(&a, "profile:2", &["user:2"], 3).await;
    // B copies all three into its L1 from L2.
    for (k, t, v) in [
        ("profile:1", &["user:1"][..], 1),
        ("settings:1", &["user:1", "team:9"][..], 2),
        ("profile:2", &["user:2"][..], 3),
    ] {
        assert_eq!(load(&b, k, t, v).await, v);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 3, "B read everything from L2");

    a.invalidate_tag("user:1").await;
    // B drops both user:1 entries (its L1 copies are rejected), keeps profile:2.
    within(Duration::from_secs(1), "B drops user:1 entries", || async {
        b.get::<u32>(Kind::DATABASE_QUERY, "profile:1")
            .await
            .is_none()
            && b.get::<u32>(Kind::DATABASE_QUERY, "settings:1")
                .await
                .is_none()
    })
    .await;
    assert_eq!(
        *b.get::<u32>(Kind::DATABASE_QUERY, "profile:2")
            .await
            .unwrap(),
        3
    );
    // L2 rejects them too: a fresh instance misses them.
    let c = instance(&server, &prefix).await;
    assert!(c
        .get::<u32>(Kind::DATABASE_QUERY, "profile:1")
        .await
        .is_none());
    assert!(c
        .get::<u32>(Kind::DATABASE_QUERY, "settings:1")
        .await
        .is_none());
    assert_eq!(
        *c.get::<u32>(Kind::DATABASE_QUERY, "profile:2")
            .await
            .unwrap(),
        3
    );
    assert!(c.stats().total.l2.tag_rejections >= 2);
    // Reloading stores entries under the new tag version, which are served again.
    let before = loads.load(Ordering::SeqCst);
    assert_eq!(load(&b, "profile:1", &["user:1"], 10).await, 10);
    assert_eq!(load(&a, "profile:1", &["user:1"], 99).await, 10);
    assert_eq!(loads.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_a_tag_on_ten_thousand_entries_takes_constant_commands() {
    let server = RedisServer::start();
    let prefix = unique_prefix("tags10k");
    let a = instance(&server, &prefix).await;
    let opts = EntryOptions::new().tags(["tenant:42"]);
    for i in 0..10_000u32 {
        a.set_with(Kind::DATABASE_QUERY, &format!("row:{i}"), i, &opts)
            .await;
    }
    // One tag invalidation before counting, so a script (re)load cannot be counted.
    a.invalidate_tag("tenant:0").await;
    server.reset_stats().await;
    a.invalidate_tag("tenant:42").await;
    let info = server.info("commandstats").await;
    let calls = command_calls(&info, None);
    // EVALSHA (INCR + PEXPIRE) + PUBLISH (+ at most a heartbeat PUBLISH and this INFO).
    assert!(calls <= 6, "{calls} commands:\n{info}");
    let fresh = instance(&server, &prefix).await;
    for i in [0u32, 4_999, 9_999] {
        assert!(fresh
            .get::<u32>(Kind::DATABASE_QUERY, &format!("row:{i}"))
            .await
            .is_none());
        assert!(a
            .get::<u32>(Kind::DATABASE_QUERY, &format!("row:{i}"))
            .await
            .is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_is_counted_and_l1_is_flushed_on_resubscribe() {
    let server = RedisServer::start();
    let prefix = unique_prefix("bp-drop");
    let b = instance(&server, &prefix).await;
    b.set(Kind::API_RESPONSE, "k", "v1".to_string()).await;
    let mut conn = server.conn().await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1);
    // Meanwhile another writer changes the value; B cannot hear of it.
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:v1:api_response:k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    within(
        Duration::from_secs(5),
        "B notices and resubscribes",
        || async {
            let s = b.stats().backplane.unwrap();
            s.disconnects >= 1 && s.resyncs >= 1 && s.subscribed
        },
    )
    .await;
    // The resync flushed L1, so B no longer serves its old copy.
    assert!(b.get::<String>(Kind::API_RESPONSE, "k").await.is_none());
}

/// Many concurrent loads, sets and invalidations on two instances. The "database" holds a
/// version per key; every update bumps it, then invalidates the key. After an invalidation
/// returns, no read on the same instance may return an older version, and reads on the other
/// instance may only during the backplane's delivery window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_older_than_the_last_invalidation_is_served_after_it_returns() {
    let server = RedisServer::start();
    let prefix = unique_prefix("race");
    let instances = [
        instance(&server, &prefix).await,
        instance(&server, &prefix).await,
    ];
    const KEYS: usize = 4;
    const WINDOW: Duration = Duration::from_millis(250);
    let db: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    // Per key and instance: the version the last returned invalidation made stale-proof.
    let fence: Arc<Vec<[AtomicU64; 2]>> = Arc::new(
        (0..KEYS)
            .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
            .collect(),
    );
    let history: Arc<std::sync::Mutex<Vec<(usize, u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..2usize {
        let (cache, db, fence, history, stop) = (
            instances[w].clone(),
            db.clone(),
            fence.clone(),
            history.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let k = (i as usize * 7 + w) % KEYS;
                let v = db[k].fetch_add(1, Ordering::SeqCst) + 1;
                cache.invalidate(Kind::DATABASE_QUERY, &k.to_string()).await;
                fence[k][w].fetch_max(v, Ordering::SeqCst);
                history.lock().unwrap().push((k, v, Instant::now()));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    for r in 0..6usize {
        let on = r % 2;
        let (cache, db, fence, history, stop, violations, reads) = (
            instances[on].clone(),
            db.clone(),
            fence.clone(),
            history.clone(),
            stop.clone(),
            violations.clone(),
            reads.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = r as u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let k = (i as usize * 3) % KEYS;
                let started = Instant::now();
                let own_fence = fence[k][on].load(Ordering::SeqCst);
                let db = db.clone();
                let got = cache
                    .get_or_load(Kind::DATABASE_QUERY, &k.to_string(), || async move {
                        let v = db[k].load(Ordering::SeqCst);
                        // A slow query: updates and invalidations land while it runs.
                        tokio::time::sleep(Duration::from_micros(500 + (i % 7) * 300)).await;
                        Res::Ok(v)
                    })
                    .await
                    .unwrap();
                reads.fetch_add(1, Ordering::Relaxed);
                // Invalidations made on the other instance count once their delivery window passed.
                let other_fence = history
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(hk, _, at)| *hk == k && *at + WINDOW < started)
                    .map(|(_, v, _)| *v)
                    .max()
                    .unwrap_or(0);
                // Let the writers and the backplane run: L1 hits never yield by themselves.
                tokio::task::yield_now().await;
                if *got < own_fence.max(other_fence) {
                    violations.fetch_add(1, Ordering::SeqCst);
                    eprintln!("stale read on instance {on}: key {k} got {got}, fence {own_fence}/{other_fence}");
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let reads = reads.load(Ordering::Relaxed);
    let invalidations = history.lock().unwrap().len();
    println!(
        "{reads} reads, {invalidations} invalidations, {} write conflicts",
        instances
            .iter()
            .map(|c| c.stats().total.l2.write_conflicts)
            .sum::<u64>()
    );
    assert!(
        reads > 500 && invalidations > 200,
        "{reads} reads, {invalidations} invalidations"
    );
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "stale values served after invalidations returned"
    );
    // Once quiet, a fresh instance reads nothing older than the database from L2.
    let fresh = instance(&server, &prefix).await;
    for k in 0..KEYS {
        if let Some(v) = fresh.get::<u64>(Kind::DATABASE_QUERY, &k.to_string()).await {
            assert_eq!(
                *v,
                db[k].load(Ordering::SeqCst),
                "L2 kept a stale value for key {k}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_os_process_sees_sets_and_invalidations_within_a_bounded_window() {
    let server = RedisServer::start();
    let prefix = unique_prefix("proc");
    let a = instance(&server, &prefix).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_peer"))
        .args([server.url(), prefix.clone()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the peer process");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "ready", "the peer did not start");
    let mut ask = move |cmd: &str| {
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    assert_eq!(ask("get nothing"), "none");

    a.set(Kind::API_RESPONSE, "k", "v1".to_string()).await;
    assert_eq!(ask("get k"), "value v1"); // now in the peer's L1
    a.set(Kind::API_RESPONSE, "k", "v2".to_string()).await;
    let t = Instant::now();
    while ask("get k") != "value v2" {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the peer kept serving v1"
        );
    }
    let set_window = t.elapsed();
    a.invalidate(Kind::API_RESPONSE, "k").await;
    let t = Instant::now();
    while ask("get k") != "none" {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the peer kept serving v2"
        );
    }
    let inval_window = t.elapsed();
    // And the other way round: the peer invalidates, this process drops its L1 copy.
    a.set(Kind::API_RESPONSE, "j", "x".to_string()).await;
    assert_eq!(
        *a.get::<String>(Kind::API_RESPONSE, "j").await.unwrap(),
        "x"
    );
    assert_eq!(ask("inval j"), "ok");
    within(Duration::from_secs(1), "this process drops j", || async {
        a.get::<String>(Kind::API_RESPONSE, "j").await.is_none()
    })
    .await;
    println!("peer process: set seen after {set_window:?}, invalidation after {inval_window:?}");
    let _ = child.kill();
    let _ = child.wait();
}
