//! Guards that fail closed, on a real redis-server: tag tokens, tombstones, leases and locks lost to
//! eviction, expiry, deletion or garbage only ever cost misses, never an invalidated value; Redis
//! error replies are handled per operation, never as an outage.

use cache_core::{Cache, EntryOptions, Kind, KindConfig};
use cache_tests::{l2_only, l2_only_builder, unique_prefix, within, RedisServer};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

type Res<T> = Result<T, std::io::Error>;

async fn cache(server: &RedisServer, prefix: &str) -> Cache {
    l2_only_builder(server.url(), prefix)
        .build()
        .await
        .expect("build")
}

/// `(allkeys-lru|allkeys-random)`: Redis may evict any key.
fn evicting(policy: &str) -> RedisServer {
    RedisServer::start_with(&["--maxmemory", "8mb", "--maxmemory-policy", policy])
}

async fn evicted_keys(server: &RedisServer) -> u64 {
    server.info_u64("stats", "evicted_keys").await
}

/// Writes 1 KiB values under unrelated keys until `done` says enough was evicted (or 40,000 keys).
async fn fill_until(server: &RedisServer, tag: &str, mut done: impl AsyncFnMut() -> bool) -> usize {
    let mut c = server.conn().await;
    let filler = vec![b'x'; 1024];
    let mut written = 0;
    while written < 40_000 {
        let mut p = redis::pipe();
        for i in written..written + 500 {
            p.cmd("SET")
                .arg(format!("filler:{tag}:{i}"))
                .arg(&filler)
                .ignore();
        }
        let _: () = p.query_async(&mut c).await.expect("filler pipeline");
        written += 500;
        if done().await {
            break;
        }
    }
    written
}

async fn count_existing(server: &RedisServer, keys: &[String]) -> usize {
    let mut c = server.conn().await;
    let mut n = 0;
    for chunk in keys.chunks(500) {
        let found: usize = redis::cmd("EXISTS")
            .arg(chunk)
            .query_async(&mut c)
            .await
            .expect("EXISTS");
        n += found;
    }
    n
}

/// 2,000 entries, each with its own tag, all tags invalidated; then Redis runs out of memory and
/// evicts, with the entries touched last so that the tag tokens are the least recently used. An
/// evicted token must never bring an invalidated entry back.
async fn invalidated_entries_stay_invalid_under_eviction(policy: &str) {
    let server = evicting(policy);
    let prefix = unique_prefix("evict");
    let cache = cache(&server, &prefix).await;
    const N: usize = 2_000;
    for i in 0..N {
        let opts = EntryOptions::new().tags([format!("t{i}")]);
        cache
            .set_with(l2_only(), &format!("k{i}"), format!("old value {i}"), &opts)
            .await;
    }
    let tags: Vec<String> = (0..N).map(|i| format!("t{i}")).collect();
    let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    for chunk in tag_refs.chunks(100) {
        cache.invalidate_tags(chunk).await;
    }
    for i in 0..N {
        assert!(
            cache
                .get::<String>(l2_only(), &format!("k{i}"))
                .await
                .is_none(),
            "invalidated before any eviction"
        );
    }
    // Touch the entries (not the tokens) so that the tokens are the least recently used.
    let entry_keys: Vec<String> = (0..N)
        .map(|i| cache_core::admin::entry_key(&prefix, "l2only", &format!("k{i}")))
        .collect();
    let token_keys: Vec<String> = tags.iter().map(|t| format!("{prefix}:t1:{t}")).collect();
    {
        let mut c = server.conn().await;
        for chunk in entry_keys.chunks(500) {
            let _: Vec<Option<Vec<u8>>> = c.mget(chunk).await.expect("touch entries");
        }
    }
    let tokens_before = count_existing(&server, &token_keys).await;
    assert_eq!(
        tokens_before, N,
        "every tag has a token before the pressure"
    );
    let filler = fill_until(&server, policy, async || {
        count_existing(&server, &token_keys).await < N / 4
    })
    .await;
    let tokens_left = count_existing(&server, &token_keys).await;
    let entries_left = count_existing(&server, &entry_keys).await;
    let evicted = evicted_keys(&server).await;
    // Not vacuous: most tag tokens are gone, and Redis says it evicted them (at least as many
    // keys evicted as tokens missing), before any read is checked.
    let tokens_evicted = N - tokens_left;
    assert!(
        tokens_evicted >= N / 2,
        "the test must evict most tag tokens to mean anything ({tokens_evicted} of {N} evicted, \
         {filler} filler keys written)"
    );
    assert!(
        evicted >= tokens_evicted as u64,
        "Redis reports {evicted} evicted keys, fewer than the {tokens_evicted} tag tokens gone"
    );
    let mut served_again = 0;
    for i in 0..N {
        if cache
            .get::<String>(l2_only(), &format!("k{i}"))
            .await
            .is_some()
        {
            served_again += 1;
        }
    }
    println!(
        "{policy}: {N} entries invalidated; {filler} filler keys written, {evicted} keys evicted; \
         tag tokens evicted {} of {N}, entries still in Redis {entries_left}; \
         invalidated values served again: {served_again}",
        N - tokens_left
    );
    assert_eq!(
        served_again, 0,
        "an evicted tag token brought invalidated values back"
    );
    let s = cache.stats();
    assert_eq!(s.breaker.as_ref().map(|b| b.opens), Some(0));
    assert_eq!(s.pending_invalidations.queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_tag_tokens_never_bring_invalidated_entries_back_under_allkeys_lru() {
    invalidated_entries_stay_invalid_under_eviction("allkeys-lru").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_tag_tokens_never_bring_invalidated_entries_back_under_allkeys_random() {
    invalidated_entries_stay_invalid_under_eviction("allkeys-random").await;
}

/// What can happen to a guard key.
#[derive(Debug, Clone, Copy)]
enum Loss {
    Deleted,
    Expired,
    Garbage,
    OtherType,
}

async fn lose(server: &RedisServer, key: &str, loss: Loss) {
    let mut c = server.conn().await;
    match loss {
        Loss::Deleted => {
            let _: () = c.del(key).await.expect("DEL");
        }
        Loss::Expired => {
            let _: () = c.pexpire(key, 1).await.expect("PEXPIRE");
            within(Duration::from_secs(2), "the key expires", || async {
                let mut c = server.conn().await;
                !c.exists::<_, bool>(key).await.expect("EXISTS")
            })
            .await;
        }
        Loss::Garbage => {
            let _: () = c.set(key, "not a token \u{1f4a5}").await.expect("SET");
        }
        Loss::OtherType => {
            let _: () = c.del(key).await.expect("DEL");
            let _: () = c.rpush(key, "a list").await.expect("RPUSH");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_garbled_tag_token_turns_entries_into_misses_and_tags_keep_working() {
    let server = RedisServer::start();
    for loss in [Loss::Deleted, Loss::Expired, Loss::Garbage, Loss::OtherType] {
        let prefix = unique_prefix("token-loss");
        let cache = cache(&server, &prefix).await;
        let token_key = format!("{prefix}:t1:team");
        let opts = EntryOptions::new().tags(["team"]);
        // Written before any invalidation: the case a counter read as 0 got wrong.
        cache
            .set_with(l2_only(), "a", "before".to_string(), &opts)
            .await;
        assert_eq!(
            cache
                .get::<String>(l2_only(), "a")
                .await
                .as_deref()
                .map(String::as_str),
            Some("before")
        );
        lose(&server, &token_key, loss).await;
        assert!(
            cache.get::<String>(l2_only(), "a").await.is_none(),
            "{loss:?}: an entry whose tag token is gone must not be served"
        );
        // Entries written after the loss carry a new token and are served...
        cache
            .set_with(l2_only(), "b", "after".to_string(), &opts)
            .await;
        assert_eq!(
            cache
                .get::<String>(l2_only(), "b")
                .await
                .as_deref()
                .map(String::as_str),
            Some("after"),
            "{loss:?}: a new token is created on the next write"
        );
        // ...and the tag can still be invalidated (a reply error is handled, never queued).
        lose(&server, &token_key, loss).await;
        cache.invalidate_tag("team").await;
        assert!(
            cache.get::<String>(l2_only(), "b").await.is_none(),
            "{loss:?}"
        );
        let s = cache.stats();
        assert_eq!(s.pending_invalidations.queued, 0, "{loss:?}: {s:?}");
        assert_eq!(s.breaker.as_ref().map(|b| b.opens), Some(0), "{loss:?}");
    }
}

/// A load that read the key before an invalidation, whose loader returns the old value only after
/// the invalidation returned and its tombstone (or the load's lease) was lost: its write-back must
/// not store the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tombstone_or_lease_never_lets_an_earlier_load_store_an_old_value() {
    let server = RedisServer::start();
    for (what, present_before) in [
        ("absent key, tombstone deleted", false),
        ("absent key, lease deleted before the invalidation", false),
        ("present key, tombstone deleted", true),
        ("flushdb", false),
    ] {
        let prefix = unique_prefix("tomb-loss");
        let (a, b) = (cache(&server, &prefix).await, cache(&server, &prefix).await);
        let full = cache_core::admin::entry_key(&prefix, "l2only", "k");
        if present_before {
            a.set(l2_only(), "k", "v0".to_string()).await;
            // Make it stale in L2 for loads: invalidate then let a load start after.
            a.invalidate(l2_only(), "k").await;
        }
        let started = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let load = {
            let (a, started, release) = (a.clone(), started.clone(), release.clone());
            tokio::spawn(async move {
                a.get_or_load(l2_only(), "k", || async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, std::io::Error>("old value read before the update".to_string())
                })
                .await
                .expect("load")
            })
        };
        started.notified().await;
        let mut c = server.conn().await;
        if what.starts_with("absent key, lease") {
            let _: () = c.del(&full).await.expect("DEL lease");
        }
        // The origin changes; another instance invalidates.
        b.invalidate(l2_only(), "k").await;
        match what {
            "flushdb" => {
                let _: () = redis::cmd("FLUSHDB")
                    .query_async(&mut c)
                    .await
                    .expect("FLUSHDB");
            }
            _ => {
                let _: () = c.del(&full).await.expect("DEL tombstone");
            }
        }
        release.notify_one();
        let served = load.await.expect("task");
        assert_eq!(
            *served, "old value read before the update",
            "the caller gets its load"
        );
        assert!(
            b.get::<String>(l2_only(), "k").await.is_none(),
            "{what}: the earlier load stored its old value after the invalidation"
        );
        let raw: Option<Vec<u8>> = c.get(&full).await.expect("GET");
        assert!(raw.is_none(), "{what}: L2 holds {raw:?}");
        assert!(a.stats().total.l2.write_conflicts >= 1, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_a_lock_key_never_blocks_loads() {
    let server = RedisServer::start();
    let prefix = unique_prefix("lock-garbage");
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .kind(
            Kind::new("locked"),
            KindConfig::new(Duration::from_secs(60)).distributed_lock(true),
        )
        .distributed_lock_wait(Duration::from_secs(30))
        .build()
        .await
        .expect("build");
    let mut c = server.conn().await;
    // No expiry: a lock that would never go away by itself.
    let _: () = c
        .set(
            format!("{prefix}:lock:v1:locked:k"),
            "left over by someone else",
        )
        .await
        .expect("SET");
    let _: () = c
        .rpush(format!("{prefix}:lock:v1:locked:k2"), "x")
        .await
        .expect("RPUSH");
    for key in ["k", "k2"] {
        let v = tokio::time::timeout(
            Duration::from_secs(10),
            cache.get_or_load("locked", key, || async { Ok::<_, std::io::Error>(1u32) }),
        )
        .await
        .expect("a garbage lock made the load wait for the whole lock wait")
        .expect("load");
        assert_eq!(*v, 1);
    }
    let lock = cache.stats().kinds["locked"].lock.clone();
    assert_eq!(lock.acquired, 2, "{lock:?}");
    assert_eq!(lock.fallbacks, 0, "{lock:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_are_handled_per_operation_and_never_open_the_breaker() {
    let server = RedisServer::start();
    let prefix = unique_prefix("reply-errors");
    let cache = cache(&server, &prefix).await;
    let mut c = server.conn().await;
    // Another type under an entry key.
    let full = cache_core::admin::entry_key(&prefix, "l2only", "list");
    let _: () = c.rpush(&full, "someone else's list").await.expect("RPUSH");
    for _ in 0..10 {
        assert!(cache.get::<String>(l2_only(), "list").await.is_none());
    }
    // A read removes the list (best effort): the load leases the key and writes its value as
    // usual.
    let loads = AtomicUsize::new(0);
    let v = cache
        .get_or_load(l2_only(), "list", || async {
            loads.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::io::Error>("mine".to_string())
        })
        .await
        .expect("load");
    assert_eq!(*v, "mine");
    // So the next load of the key reads that value from L2, without calling its loader.
    let v = cache
        .get_or_load(l2_only(), "list", || async {
            loads.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::io::Error>("mine".to_string())
        })
        .await
        .expect("load");
    assert_eq!(*v, "mine");
    assert_eq!(
        cache
            .get::<String>(l2_only(), "list")
            .await
            .as_deref()
            .map(String::as_str),
        Some("mine")
    );
    assert_eq!(
        loads.load(Ordering::Relaxed),
        1,
        "the first load wrote its value back, the second read it"
    );
    // A non-integer and another type under tag keys: invalidations still land, nothing queued.
    let _: () = c
        .set(format!("{prefix}:t1:t"), "garbage")
        .await
        .expect("SET");
    let _: () = c.rpush(format!("{prefix}:t1:u"), "x").await.expect("RPUSH");
    cache.invalidate_tags(&["t", "u"]).await;
    cache
        .set_with(
            l2_only(),
            "tagged",
            1u8,
            &EntryOptions::new().tags(["t", "u"]),
        )
        .await;
    assert_eq!(
        cache.get::<u8>(l2_only(), "tagged").await.as_deref(),
        Some(&1)
    );
    cache.invalidate_tag("u").await;
    assert!(cache.get::<u8>(l2_only(), "tagged").await.is_none());
    let s = cache.stats();
    assert!(
        s.total.l2.refused > 0,
        "refusals are counted: {:?}",
        s.total.l2
    );
    assert_eq!(
        s.total.l2.errors + s.total.l2.timeouts,
        0,
        "{:?}",
        s.total.l2
    );
    assert_eq!(s.breaker.as_ref().map(|b| b.opens), Some(0));
    assert_eq!(s.pending_invalidations.queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_with_noeviction_keeps_serving_reads_and_says_so() {
    let server =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let prefix = unique_prefix("noeviction");
    let a = cache(&server, &prefix).await;
    for i in 0..50 {
        a.set(l2_only(), &format!("k{i}"), format!("value {i}"))
            .await;
    }
    // Someone else fills Redis to the limit: writes are refused from now on.
    let mut c = server.conn().await;
    let filler = vec![b'x'; 4096];
    for i in 0.. {
        let r: redis::RedisResult<()> = c.set(format!("filler:{i}"), &filler).await;
        if r.is_err() {
            break;
        }
        assert!(i < 10_000, "Redis never refused a write");
    }
    let b = cache(&server, &prefix).await;
    for i in 0..50 {
        assert_eq!(
            b.get::<String>(l2_only(), &format!("k{i}"))
                .await
                .as_deref()
                .map(String::as_str),
            Some(format!("value {i}").as_str()),
            "reads from L2 go on"
        );
    }
    let loads = AtomicUsize::new(0);
    for _ in 0..3 {
        let v = b
            .get_or_load(l2_only(), "new", || async {
                loads.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>("loaded".to_string())
            })
            .await
            .expect("load");
        assert_eq!(*v, "loaded");
    }
    assert_eq!(
        loads.load(Ordering::Relaxed),
        3,
        "nothing could be written back"
    );
    b.set(l2_only(), "k1", "new value".to_string()).await;
    assert!(
        a.get::<String>(l2_only(), "k1").await.is_none(),
        "a set that could not be written removed the older value"
    );
    b.invalidate(l2_only(), "k2").await;
    assert!(
        a.get::<String>(l2_only(), "k2").await.is_none(),
        "invalidation fell back to delete"
    );
    let s = b.stats();
    assert!(s.l2_refusing_writes, "stats say Redis refuses writes");
    assert!(s.total.l2.refused > 0);
    assert_eq!(
        s.breaker.as_ref().map(|b| b.opens),
        Some(0),
        "not an outage"
    );
    assert_eq!(s.pending_invalidations.queued, 0, "nothing queued forever");
    assert_eq!(s.total.l2.errors, 0);
}

/// Loads, writes and invalidations from two instances racing with eviction (`allkeys-random`, so
/// guard keys of every age go): a read that begins after a write or invalidation of its key
/// returned on the same instance never sees an older version, nor one older than a write on the
/// other instance that returned more than [`BACKPLANE_WINDOW`] before. Writes of one key are
/// ordered by the application (a per-key lock around "update the origin, then tell the cache"), as
/// a database row would be.
///
/// Why the window: an instance learns of another's write through the backplane, a moment after
/// the write returned; a call that joins a load already in flight on its instance in that moment
/// gets that load's value (measured: 1 such read in 1 of 8 runs of 4,800 operations, the load's
/// loader having read the origin just before the other instance's invalidation). A guard lost to
/// eviction would leave the old value in Redis for every later read, on both instances: the
/// strict same-instance check catches it at the next read there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_loads_writes_and_invalidations_with_eviction_never_read_older_versions() {
    /// How long after another instance's write a read may still miss it (the soak's stale bound).
    const BACKPLANE_WINDOW: Duration = Duration::from_millis(250);
    let server = evicting("allkeys-random");
    let prefix = unique_prefix("evict-race");
    let (a, b) = (cache(&server, &prefix).await, cache(&server, &prefix).await);
    const KEYS: usize = 16;
    let origin: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    // Per key: the application's write lock, and the versions whose write has returned (when, on
    // which instance).
    let locks: Arc<Vec<Mutex<()>>> = Arc::new((0..KEYS).map(|_| Mutex::new(())).collect());
    type Done = std::sync::Mutex<Vec<(Instant, u64, u64)>>;
    let completed: Arc<Vec<Done>> = Arc::new((0..KEYS).map(|_| Done::default()).collect());
    let in_window = Arc::new(AtomicUsize::new(0));
    let next_version = Arc::new(AtomicU64::new(1));
    let stale = Arc::new(AtomicUsize::new(0));
    let ops = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(tokio::sync::watch::channel(false).0);
    let filler = {
        let (server_url, mut stopped) = (server.url(), stop.subscribe());
        tokio::spawn(async move {
            let mut c = redis::Client::open(server_url)
                .expect("client")
                .get_multiplexed_async_connection()
                .await
                .expect("connect");
            let v = vec![b'f'; 2048];
            let mut i = 0u64;
            while !*stopped.borrow_and_update() {
                let mut p = redis::pipe();
                for _ in 0..50 {
                    p.cmd("SET")
                        .arg(format!("race-filler:{i}"))
                        .arg(&v)
                        .ignore();
                    i += 1;
                }
                let _: redis::RedisResult<()> = p.query_async(&mut c).await;
                tokio::task::yield_now().await;
            }
            i
        })
    };
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let cache = if w % 2 == 0 { a.clone() } else { b.clone() };
        let (origin, locks, completed, next_version, stale, ops) = (
            origin.clone(),
            locks.clone(),
            completed.clone(),
            next_version.clone(),
            stale.clone(),
            ops.clone(),
        );
        let in_window = in_window.clone();
        let me = w % 2;
        let done = move |completed: &[Done], k: usize, v: u64| {
            completed[k].lock().unwrap().push((Instant::now(), v, me));
        };
        workers.push(tokio::spawn(async move {
            let mut rng = w.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for _ in 0..600 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let k = (rng % KEYS as u64) as usize;
                let key = format!("k{k}");
                let opts = EntryOptions::new().tags([format!("g{}", k % 4)]);
                match (rng >> 8) % 4 {
                    0 => {
                        let _g = locks[k].lock().await;
                        let v = next_version.fetch_add(1, Ordering::SeqCst);
                        origin[k].store(v, Ordering::SeqCst);
                        cache.set_with(l2_only(), &key, v, &opts).await;
                        done(&completed, k, v);
                    }
                    1 => {
                        let _g = locks[k].lock().await;
                        let v = next_version.fetch_add(1, Ordering::SeqCst);
                        origin[k].store(v, Ordering::SeqCst);
                        cache.invalidate(l2_only(), &key).await;
                        done(&completed, k, v);
                    }
                    _ => {
                        let start = Instant::now();
                        // What this read must see, and the newest write returned anywhere.
                        let (floor, newest) = completed[k].lock().unwrap().iter().fold(
                            (0, 0),
                            |(floor, newest), &(at, v, on)| {
                                let due = on == me || at + BACKPLANE_WINDOW <= start;
                                (if due { floor.max(v) } else { floor }, newest.max(v))
                            },
                        );
                        let origin = origin.clone();
                        let got = cache
                            .get_or_load_with(l2_only(), &key, &opts, || async move {
                                Res::Ok(origin[k].load(Ordering::SeqCst))
                            })
                            .await
                            .expect("load");
                        if *got < floor {
                            stale.fetch_add(1, Ordering::Relaxed);
                            eprintln!(
                                "key {k}: read version {} on i{me} after version {floor} was written",
                                *got
                            );
                        } else if *got < newest {
                            in_window.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let _ = stop.send(true);
    let filled = filler.await.expect("filler");
    let evicted = evicted_keys(&server).await;
    let versions: HashMap<usize, u64> = (0..KEYS)
        .map(|k| (k, origin[k].load(Ordering::SeqCst)))
        .collect();
    println!(
        "{} operations on {KEYS} keys by two instances while {filled} filler keys forced {evicted} \
         evictions; stale reads: {}; reads within {BACKPLANE_WINDOW:?} of the other instance's \
         newer write that did not see it: {}; final versions {versions:?}",
        ops.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
        in_window.load(Ordering::Relaxed)
    );
    assert!(
        evicted > 0,
        "the race must run under eviction to mean anything"
    );
    assert_eq!(stale.load(Ordering::Relaxed), 0);
}
