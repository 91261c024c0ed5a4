//! Side by side, in one run on one machine: tiered-cache against raw moka, raw redis-rs, the
//! `cached` crate's `AsyncRedisCache` and a minimal hand-written moka + redis-rs two-tier, with the
//! targets of issue 10 marked PASS or MISS.
//!
//! ```text
//! cargo bench -p cache-benches --bench compare                  # full run (a few minutes)
//! COMPARE_QUICK=1 cargo bench -p cache-benches --bench compare  # short run, same code paths
//! cargo test -p cache-benches --bench compare                   # smoke test (quick, debug build)
//! ```
//!
//! Starts its own redis-server on a free loopback port (via the test harness). Every comparison
//! alternates the contenders over several rounds and reports medians, so that noise from other
//! processes on the machine hits both sides alike; the ratios are what matter, not the absolutes.

use cache_benches::{api_response, ApiResponse};
use cache_core::{Cache, Kind, KindConfig, Tiers, WarmPlan};
use cache_tests::RedisServer;
use cached::ConcurrentCachedAsync;
use redis::aio::MultiplexedConnection;
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts the bytes the program holds on the heap, exactly, while switched on: the L1 memory
/// measurement needs what the cache really allocates, not an RSS figure blurred by the allocator's
/// caches and by everything else the process did before.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

    pub(crate) struct Counting;

    static ON: AtomicBool = AtomicBool::new(false);
    static LIVE: AtomicI64 = AtomicI64::new(0);
    /// The same in glibc malloc chunks (8-byte header, 16-byte granules, 32 bytes at least): an
    /// estimate of what the allocator really hands out.
    static CHUNKS: AtomicI64 = AtomicI64::new(0);

    fn chunk(size: usize) -> i64 {
        ((size + 8).div_ceil(16) * 16).max(32) as i64
    }

    fn add(size: usize) {
        LIVE.fetch_add(size as i64, Relaxed);
        CHUNKS.fetch_add(chunk(size), Relaxed);
    }

    fn sub(size: usize) {
        LIVE.fetch_sub(size as i64, Relaxed);
        CHUNKS.fetch_sub(chunk(size), Relaxed);
    }

    // SAFETY (all four): forwards to the system allocator unchanged; the counting is a side effect.
    // Off by default, so that the timed sections pay one relaxed load per allocation, not a
    // contended atomic add.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(l) };
            if !p.is_null() && ON.load(Relaxed) {
                add(l.size());
            }
            p
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(l) };
            if !p.is_null() && ON.load(Relaxed) {
                add(l.size());
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            if ON.load(Relaxed) {
                sub(l.size());
            }
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            let q = unsafe { System.realloc(p, l, new) };
            if !q.is_null() && ON.load(Relaxed) {
                sub(l.size());
                add(new);
            }
            q
        }
    }

    /// Starts counting (from zero).
    pub(crate) fn start() {
        LIVE.store(0, Relaxed);
        CHUNKS.store(0, Relaxed);
        ON.store(true, Relaxed);
    }

    /// Bytes allocated and not freed since `start` (frees of older blocks count negatively: keep
    /// the rest of the program quiet meanwhile).
    pub(crate) fn live() -> i64 {
        LIVE.load(Relaxed)
    }

    /// [`live`] in estimated malloc chunks.
    pub(crate) fn chunks() -> i64 {
        CHUNKS.load(Relaxed)
    }

    pub(crate) fn stop() {
        ON.store(false, Relaxed);
    }
}

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

/// Sizes of one run: full, or quick (smoke test: every code path, small counts).
struct Plan {
    quick: bool,
    rounds: usize,
    l1_ops: usize,
    l2_ops_1: usize,
    l2_ops_per_task: usize,
    zipf_keys: usize,
    zipf_ops_per_task: usize,
    stampede_callers: usize,
    warm_entries: usize,
    mem_keys: usize,
    mem_budget: u64,
    /// Key-hashing operations per round, for a 1 KiB part (scaled by size for the others).
    key_ops: usize,
}

impl Plan {
    fn from_env() -> Self {
        // `cargo bench` passes `--bench` to a harness-less bench; `cargo test` does not: run quick.
        let quick = std::env::var("COMPARE_QUICK").is_ok_and(|v| v != "0")
            || !std::env::args().any(|a| a == "--bench");
        if quick {
            Plan {
                quick,
                rounds: 3,
                l1_ops: 20_000,
                l2_ops_1: 300,
                l2_ops_per_task: 30,
                zipf_keys: 100_000,
                zipf_ops_per_task: 200,
                stampede_callers: 1_000,
                warm_entries: 2_000,
                mem_keys: 100_000,
                mem_budget: 4 << 20,
                key_ops: 2_000,
            }
        } else {
            Plan {
                quick,
                rounds: 7,
                l1_ops: 300_000,
                l2_ops_1: 5_000,
                l2_ops_per_task: 400,
                zipf_keys: 100_000,
                zipf_ops_per_task: 5_000,
                stampede_callers: 1_000,
                warm_entries: 10_000,
                mem_keys: 1_000_000,
                mem_budget: 64 << 20,
                key_ops: 50_000,
            }
        }
    }
}

/// One line of the final table.
struct Row {
    what: String,
    ours: String,
    baseline: String,
    ratio: String,
    target: String,
    pass: Option<bool>,
}

impl Row {
    fn new(what: impl Into<String>, ours: impl Into<String>, baseline: impl Into<String>) -> Self {
        Row {
            what: what.into(),
            ours: ours.into(),
            baseline: baseline.into(),
            ratio: String::new(),
            target: String::new(),
            pass: None,
        }
    }

    fn ratio(mut self, r: f64, target: &str, pass: bool) -> Self {
        self.ratio = format!("{r:.2}×");
        self.target = target.into();
        self.pass = Some(pass);
        self
    }

    /// A ratio shown for information, with no target.
    fn info(mut self, r: f64) -> Self {
        self.ratio = format!("{r:.2}×");
        self
    }

    fn check(mut self, target: &str, pass: bool) -> Self {
        self.target = target.into();
        self.pass = Some(pass);
        self
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ns(x: f64) -> String {
    format!("{x:.0} ns")
}

fn kops(x: f64) -> String {
    format!("{:.1} k/s", x / 1e3)
}

fn ms(d: f64) -> String {
    format!("{d:.1} ms")
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1u64 << 20) as f64)
}

/// Builds a cache on `url` (or L1-only) with nothing in the background that writes to Redis, so
/// that command counts only show what the measured operations do.
async fn cache(url: Option<&str>, prefix: &str, l1_bytes: u64) -> Cache {
    let mut b = Cache::builder()
        .prefix(prefix)
        .l1_max_bytes(l1_bytes)
        .stats_report_interval(Duration::ZERO)
        .kind(
            Kind::new("remote"),
            KindConfig::new(Duration::from_secs(600)).tiers(Tiers::L2Only),
        );
    if let Some(url) = url {
        b = b.redis_url(url);
    }
    b.build().await.expect("build the cache")
}

async fn raw_conn(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// Runs `per_task` operations in each of `tasks` tasks and returns the throughput (ops/s).
/// `op(task, i)` is one operation.
async fn par<F, Fut>(tasks: usize, per_task: usize, op: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (op, barrier) = (op.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for i in 0..per_task {
                    op(t, i).await;
                }
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    for h in handles {
        h.await.expect("bench task panicked");
    }
    (tasks * per_task) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let plan = Plan::from_env();
    let server = RedisServer::start();
    let url = server.url();
    let value = api_response(1);
    let encoded = rmp_serde::to_vec_named(&value).expect("encode");
    println!(
        "compare ({} run): value = ApiResponse, {} bytes of MessagePack; redis-server on loopback; \
         tokio, 2 worker threads",
        if plan.quick { "QUICK" } else { "full" },
        encoded.len()
    );
    // COMPARE_ONLY=l1,l2,zipf,stampede,warm,memory,keyhash runs a subset (for profiling one section).
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default();
    let on = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);
    let mut rows = Vec::new();
    if on("l1") {
        rows.extend(l1_hit(&plan, &url).await);
    }
    if on("l2") {
        rows.extend(l2_hit(&plan, &url).await);
    }
    if on("zipf") {
        rows.extend(zipf(&plan, &url).await);
    }
    if on("stampede") {
        rows.extend(stampede(&plan, &url).await);
    }
    if on("warm") {
        rows.extend(warm(&plan, &url).await);
    }
    if on("memory") {
        rows.extend(memory(&plan).await);
    }
    if on("keyhash") {
        rows.extend(key_hash(&plan, &url).await);
    }

    println!("\n| measurement | tiered-cache | baseline | ratio | target | result |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let result = match r.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.what, r.ours, r.baseline, r.ratio, r.target, result
        );
    }
    let misses = rows.iter().filter(|r| r.pass == Some(false)).count();
    let checked = rows.iter().filter(|r| r.pass.is_some()).count();
    println!("\n{} of {checked} targets met", checked - misses);
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed out-parameter for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct TenMinutes;

impl moka::Expiry<String, Arc<ApiResponse>> for TenMinutes {
    fn expire_after_create(
        &self,
        _: &String,
        _: &Arc<ApiResponse>,
        _: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(600))
    }
}

// ---- L1 hit -------------------------------------------------------------------------------------

async fn l1_hit(plan: &Plan, url: &str) -> Vec<Row> {
    const FULL: &str = "cmp-l1:v1:api_response:k";
    let cache = cache(Some(url), "cmp-l1", 64 << 20).await;
    let value = api_response(1);
    cache.set(Kind::API_RESPONSE, "k", value.clone()).await;
    let raw: moka::future::Cache<String, Arc<ApiResponse>> =
        moka::future::Cache::builder().max_capacity(10_000).build();
    raw.insert(FULL.to_string(), Arc::new(value)).await;

    // moka configured as L1 is (byte weigher, per-entry expiry): what those features cost moka.
    let raw_expiry: moka::future::Cache<String, Arc<ApiResponse>> = moka::future::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(|k: &String, _| k.len() as u32 + 1_000)
        .expire_after(TenMinutes)
        .build();
    raw_expiry
        .insert(FULL.to_string(), Arc::new(api_response(1)))
        .await;
    let n = plan.l1_ops;
    // [raw, get, get_or_load, raw with expiry] per round, in CPU time of this thread (the loops never wait, and
    // CPU time leaves out the time other processes on a shared machine held the core).
    let mut per_op: [Vec<f64>; 4] = Default::default();
    // One warm-up round, then measured rounds; the contenders take turns going first.
    for round in 0..=plan.rounds {
        for j in 0..4 {
            let which = (round + j) % 4;
            let t = thread_cpu();
            match which {
                0 => {
                    for _ in 0..n {
                        black_box(raw.get(black_box(FULL)).await);
                    }
                }
                1 => {
                    for _ in 0..n {
                        black_box(
                            cache
                                .get::<ApiResponse>(Kind::API_RESPONSE, black_box("k"))
                                .await,
                        );
                    }
                }
                3 => {
                    for _ in 0..n {
                        black_box(raw_expiry.get(black_box(FULL)).await);
                    }
                }
                _ => {
                    for _ in 0..n {
                        let v = cache
                            .get_or_load(Kind::API_RESPONSE, black_box("k"), || async {
                                Err::<ApiResponse, &str>("a hit never loads")
                            })
                            .await;
                        black_box(v.is_ok());
                    }
                }
            }
            if round > 0 {
                per_op[which].push((thread_cpu() - t).as_nanos() as f64 / n as f64);
            }
        }
    }
    let [r_raw, r_get, r_gol, r_exp] = per_op;
    let exp_ns = median(r_exp);
    let (raw_ns, get_ns, gol_ns) = (median(r_raw), median(r_get), median(r_gol));
    let stats = cache.stats();
    assert_eq!(
        stats.total.l1.misses, 0,
        "every L1 read must have been a hit"
    );
    println!(
        "L1 hit, 1 task, {n} ops x {} rounds (thread CPU time): raw moka {raw_ns:.0} ns, \
         get {get_ns:.0} ns, get_or_load {gol_ns:.0} ns; moka with weigher + per-entry expiry \
         {exp_ns:.0} ns",
        plan.rounds
    );
    vec![
        Row::new(
            "L1 hit: `get`",
            ns(get_ns),
            format!("raw moka `get`: {}", ns(raw_ns)),
        )
        .ratio(get_ns / raw_ns, "≤ 1.3×", get_ns / raw_ns <= 1.3),
        Row::new(
            "L1 hit: `get_or_load`",
            ns(gol_ns),
            format!("raw moka `get`: {}", ns(raw_ns)),
        )
        .ratio(gol_ns / raw_ns, "≤ 1.3×", gol_ns / raw_ns <= 1.3),
        Row::new(
            "(for reference) raw moka with a weigher and per-entry expiry, as L1 uses it",
            ns(exp_ns),
            format!("raw moka `get`: {}", ns(raw_ns)),
        )
        .info(exp_ns / raw_ns),
    ]
}

// ---- L2 hit -------------------------------------------------------------------------------------

async fn raw_get_decode(c: &MultiplexedConnection, key: &str) -> ApiResponse {
    let mut c = c.clone();
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .expect("raw GET");
    rmp_serde::from_slice(&bytes).expect("raw decode")
}

async fn l2_hit(plan: &Plan, url: &str) -> Vec<Row> {
    let cache = cache(Some(url), "cmp-l2", 64 << 20).await;
    let value = api_response(2);
    // The kind is L2-only: every read is an L2 hit (L1 is never consulted or filled).
    cache.set("remote", "k", value.clone()).await;
    let conn = raw_conn(url).await;
    {
        let mut c = conn.clone();
        let bytes = rmp_serde::to_vec_named(&value).expect("encode");
        let _: () = redis::cmd("SET")
            .arg("raw:k")
            .arg(bytes)
            .query_async(&mut c)
            .await
            .expect("raw SET");
    }
    assert_eq!(raw_get_decode(&conn, "raw:k").await, value);
    assert_eq!(
        cache.get::<ApiResponse>("remote", "k").await.as_deref(),
        Some(&value)
    );

    let n = plan.l2_ops_1;
    let (mut raw1, mut ours1, mut raw64, mut ours64) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=plan.rounds.min(5) {
        let t = Instant::now();
        for _ in 0..n {
            black_box(raw_get_decode(&conn, "raw:k").await);
        }
        let r1 = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            black_box(cache.get::<ApiResponse>("remote", "k").await.expect("hit"));
        }
        let o1 = n as f64 / t.elapsed().as_secs_f64();
        let c = conn.clone();
        let r64 = par(64, plan.l2_ops_per_task, move |_, _| {
            let c = c.clone();
            async move {
                black_box(raw_get_decode(&c, "raw:k").await);
            }
        })
        .await;
        let cc = cache.clone();
        let o64 = par(64, plan.l2_ops_per_task, move |_, _| {
            let cc = cc.clone();
            async move {
                black_box(cc.get::<ApiResponse>("remote", "k").await.expect("hit"));
            }
        })
        .await;
        if round > 0 {
            raw1.push(r1);
            ours1.push(o1);
            raw64.push(r64);
            ours64.push(o64);
        }
    }
    let (raw1, ours1, raw64, ours64) = (median(raw1), median(ours1), median(raw64), median(ours64));
    println!(
        "L2 hit: 1 task raw {raw1:.0}/s ours {ours1:.0}/s; 64 tasks raw {raw64:.0}/s ours {ours64:.0}/s"
    );
    vec![
        Row::new(
            "L2 hit (L2-only kind), 1 task",
            kops(ours1),
            format!("redis-rs GET + rmp-serde decode: {}", kops(raw1)),
        )
        .ratio(ours1 / raw1, "≥ 0.9×", ours1 / raw1 >= 0.9),
        Row::new(
            "L2 hit (L2-only kind), 64 tasks",
            kops(ours64),
            format!("redis-rs GET + rmp-serde decode: {}", kops(raw64)),
        )
        .ratio(ours64 / raw64, "≥ 0.9×", ours64 / raw64 >= 0.9),
    ]
}

// ---- Skewed workload ----------------------------------------------------------------------------

/// Zipf(s = 1.0) over `0..n` by inverse CDF; deterministic for a seed.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut SplitMix) -> u64 {
        let u = rng.next_f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }

    /// Share of the probability mass on the `top` most popular keys.
    fn mass(&self, top: usize) -> f64 {
        self.cdf[top.min(self.cdf.len()) - 1]
    }
}

/// SplitMix64: a fixed-seed generator, so every contender sees the same key sequence.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

const ZIPF_TASKS: usize = 64;
const LOADER_SLEEP: Duration = Duration::from_millis(1);
const ZIPF_TTL: Duration = Duration::from_secs(600);

/// The origin of the skewed workload: 1 ms per call.
async fn origin(id: u64, calls: &AtomicU64) -> ApiResponse {
    calls.fetch_add(1, Relaxed);
    tokio::time::sleep(LOADER_SLEEP).await;
    api_response(id)
}

/// The minimal hand-written two-tier: moka in front of redis-rs, nothing else (no single-flight,
/// no envelope, no breaker, no stats). The cost floor of the design.
#[derive(Clone)]
struct HandWritten {
    l1: moka::future::Cache<String, Arc<ApiResponse>>,
    conn: MultiplexedConnection,
}

impl HandWritten {
    async fn get_or_load(&self, key: String, id: u64, calls: &AtomicU64) -> Arc<ApiResponse> {
        if let Some(v) = self.l1.get(&key).await {
            return v;
        }
        let mut c = self.conn.clone();
        let got: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("GET");
        let v = match got.and_then(|b| rmp_serde::from_slice::<ApiResponse>(&b).ok()) {
            Some(v) => Arc::new(v),
            None => {
                let v = Arc::new(origin(id, calls).await);
                let bytes = rmp_serde::to_vec_named(&*v).expect("encode");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(bytes)
                    .arg("PX")
                    .arg(ZIPF_TTL.as_millis() as u64)
                    .query_async(&mut c)
                    .await
                    .expect("SET");
                v
            }
        };
        self.l1.insert(key, v.clone()).await;
        v
    }
}

/// The `cached` crate's documented use of its Redis store: get; on a miss, load, then set.
async fn cached_get_or_load(
    store: &cached::AsyncRedisCache<String, ApiResponse>,
    key: String,
    id: u64,
    calls: &AtomicU64,
) -> ApiResponse {
    if let Some(v) = store.async_cache_get(&key).await.expect("cached get") {
        return v;
    }
    let v = origin(id, calls).await;
    let _ = store
        .async_cache_set(key, v.clone())
        .await
        .expect("cached set");
    v
}

async fn flushall(url: &str) {
    let mut c = raw_conn(url).await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut c)
        .await
        .expect("FLUSHALL");
}

/// What one contender did in the warm pass of the skewed workload: Redis commands by name, from
/// `INFO commandstats` (reset before the pass).
struct WarmCmds(Vec<(String, u64)>);

impl WarmCmds {
    fn calls(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, k)| *k)
    }

    /// The L1 hit ratio of a two-tier contender: each L1 miss reads L2 with one GET.
    fn l1_hit_ratio(&self, ops: usize) -> f64 {
        1.0 - self.calls("get") as f64 / ops as f64
    }

    fn breakdown(&self) -> String {
        self.0
            .iter()
            .map(|(n, k)| format!("{n}={k}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Throughput of the skewed workload: one pass from an empty cache and Redis ("cold"), then a second
/// pass of the same length continuing the same key streams ("warm"); with the Redis commands of the
/// warm pass.
async fn zipf_passes<F, Fut>(
    plan: &Plan,
    url: &str,
    dist: &Arc<Zipf>,
    op: F,
) -> (f64, f64, WarmCmds)
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut conn = raw_conn(url).await;
    // One generator per task, seeded by the task's index: identical streams for every contender.
    let rngs: Arc<Vec<std::sync::Mutex<SplitMix>>> = Arc::new(
        (0..ZIPF_TASKS)
            .map(|t| std::sync::Mutex::new(SplitMix(0x5EED_0000 + t as u64)))
            .collect(),
    );
    let mut out = [0.0; 2];
    for o in &mut out {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .expect("CONFIG RESETSTAT");
        let (dist, rngs, op) = (dist.clone(), rngs.clone(), op.clone());
        *o = par(ZIPF_TASKS, plan.zipf_ops_per_task, move |t, _| {
            let id = {
                let mut rng = rngs[t].lock().expect("rng lock");
                dist.sample(&mut rng)
            };
            op(id)
        })
        .await;
    }
    let cmds = WarmCmds(command_calls(&mut conn).await);
    (out[0], out[1], cmds)
}

async fn zipf(plan: &Plan, url: &str) -> Vec<Row> {
    let n = plan.zipf_keys;
    let l1_keys = n / 10;
    let dist = Arc::new(Zipf::new(n, 1.0));
    let key = |id: u64| format!("item:{id}");

    // The L1 byte budget that holds ~10% of the keys: measured, not guessed, on the entries it is
    // meant to hold (the `l1_keys` most popular keys and their values; values grow with the id's
    // digits, so a sample of other keys would give L1 fewer entries than the hand-written's).
    let probe = cache(None, "zipf", 1 << 30).await;
    for id in 0..l1_keys as u64 {
        probe
            .set(Kind::API_RESPONSE, &key(id), api_response(id))
            .await;
    }
    probe.run_pending_tasks().await;
    let s = probe.stats().total.l1;
    let per_entry = s.bytes / s.entries.max(1);
    let budget = per_entry * l1_keys as u64;
    drop(probe);
    println!(
        "zipf: s=1.0 over {n} keys, {ZIPF_TASKS} tasks x {} ops per pass, loader sleeps {LOADER_SLEEP:?}; \
         L1 budget {budget} bytes ({l1_keys} entries of ~{per_entry} bytes); the top {l1_keys} keys \
         carry {:.1}% of the requests",
        plan.zipf_ops_per_task,
        dist.mass(l1_keys) * 100.0
    );

    // (a) tiered-cache
    flushall(url).await;
    let ours = cache(Some(url), "zipf", budget).await;
    let ours_calls = Arc::new(AtomicU64::new(0));
    let (ours_cold, ours_warm, ours_cmds) = {
        let (c, calls) = (ours.clone(), ours_calls.clone());
        zipf_passes(plan, url, &dist, move |id| {
            let (c, calls) = (c.clone(), calls.clone());
            async move {
                let v = c
                    .get_or_load(Kind::API_RESPONSE, &key(id), || async {
                        Ok::<_, Infallible>(origin(id, &calls).await)
                    })
                    .await
                    .expect("infallible loader");
                assert_eq!(v.id, id);
            }
        })
        .await
    };
    let st = ours.stats().total;
    let ours_hit_l1 = st.l1.hits as f64 / (st.l1.hits + st.l1.misses).max(1) as f64;
    drop(ours);

    // (b) the `cached` crate's AsyncRedisCache
    flushall(url).await;
    let store: cached::AsyncRedisCache<String, ApiResponse> =
        cached::AsyncRedisCache::builder("zipf")
            .ttl(ZIPF_TTL)
            .connection_string(url)
            .build()
            .await
            .expect("cached AsyncRedisCache");
    let store = Arc::new(store);
    let cached_calls = Arc::new(AtomicU64::new(0));
    let (cached_cold, cached_warm, cached_cmds) = {
        let (s, calls) = (store.clone(), cached_calls.clone());
        zipf_passes(plan, url, &dist, move |id| {
            let (s, calls) = (s.clone(), calls.clone());
            async move {
                let v = cached_get_or_load(&s, key(id), id, &calls).await;
                assert_eq!(v.id, id);
            }
        })
        .await
    };
    drop(store);

    // (c) hand-written moka + redis-rs, L1 of the same ~10% of the keys
    flushall(url).await;
    let hand = HandWritten {
        l1: moka::future::Cache::builder()
            .max_capacity(l1_keys as u64)
            .build(),
        conn: raw_conn(url).await,
    };
    let hand_calls = Arc::new(AtomicU64::new(0));
    let (hand_cold, hand_warm, hand_cmds) = {
        let (h, calls) = (hand.clone(), hand_calls.clone());
        zipf_passes(plan, url, &dist, move |id| {
            let (h, calls) = (h.clone(), calls.clone());
            async move {
                let v = h.get_or_load(key(id), id, &calls).await;
                assert_eq!(v.id, id);
            }
        })
        .await
    };
    drop(hand);
    flushall(url).await;

    println!(
        "zipf ops/s cold/warm: tiered-cache {ours_cold:.0}/{ours_warm:.0} (L1 hit ratio {:.1}%, {} loader calls); \
         cached {cached_cold:.0}/{cached_warm:.0} ({} loader calls); hand-written {hand_cold:.0}/{hand_warm:.0} ({} loader calls)",
        ours_hit_l1 * 100.0,
        ours_calls.load(Relaxed),
        cached_calls.load(Relaxed),
        hand_calls.load(Relaxed),
    );
    let ops = ZIPF_TASKS * plan.zipf_ops_per_task;
    // Same workload, same L1 share: the two-tier contenders should hit L1 alike (each L1 miss is one
    // GET), so that the throughput ratio measures the code, not the hit ratio.
    println!(
        "zipf warm pass, Redis commands: tiered-cache [{}] (L1 hit ratio {:.1}%); cached [{}]; \
         hand-written [{}] (L1 hit ratio {:.1}%)",
        ours_cmds.breakdown(),
        ours_cmds.l1_hit_ratio(ops) * 100.0,
        cached_cmds.breakdown(),
        hand_cmds.breakdown(),
        hand_cmds.l1_hit_ratio(ops) * 100.0,
    );
    vec![
        Row::new(
            format!("Zipf, {ops} ops from empty: vs `cached` AsyncRedisCache"),
            kops(ours_cold),
            format!("`cached`: {}", kops(cached_cold)),
        )
        .ratio(
            ours_cold / cached_cold,
            "≥ 10×",
            ours_cold / cached_cold >= 10.0,
        ),
        Row::new(
            format!("Zipf, next {ops} ops (warm): vs `cached` AsyncRedisCache"),
            kops(ours_warm),
            format!("`cached`: {}", kops(cached_warm)),
        )
        .ratio(
            ours_warm / cached_warm,
            "≥ 10×",
            ours_warm / cached_warm >= 10.0,
        ),
        Row::new(
            format!("Zipf, {ops} ops from empty: vs hand-written moka + redis-rs"),
            kops(ours_cold),
            format!("hand-written: {}", kops(hand_cold)),
        )
        .ratio(
            ours_cold / hand_cold,
            "≥ 0.8×",
            ours_cold / hand_cold >= 0.8,
        ),
        Row::new(
            format!("Zipf, next {ops} ops (warm): vs hand-written moka + redis-rs"),
            kops(ours_warm),
            format!("hand-written: {}", kops(hand_warm)),
        )
        .ratio(
            ours_warm / hand_warm,
            "≥ 0.8×",
            ours_warm / hand_warm >= 0.8,
        ),
        // The ≥ 10× target against `cached` is out of reach for any two-tier design on this
        // workload: the hand-written floor of the design (no single-flight, envelope or breaker)
        // shows the ceiling, measured in the same run.
        Row::new(
            format!("(ceiling) Zipf, {ops} ops from empty: hand-written two-tier vs `cached`"),
            kops(hand_cold),
            format!("`cached`: {}", kops(cached_cold)),
        )
        .info(hand_cold / cached_cold),
        Row::new(
            format!("(ceiling) Zipf, next {ops} ops (warm): hand-written two-tier vs `cached`"),
            kops(hand_warm),
            format!("`cached`: {}", kops(cached_warm)),
        )
        .info(hand_warm / cached_warm),
        Row::new(
            "Zipf: loader calls (both passes)",
            ours_calls.load(Relaxed).to_string(),
            format!(
                "`cached`: {}, hand-written: {}",
                cached_calls.load(Relaxed),
                hand_calls.load(Relaxed)
            ),
        ),
    ]
}

// ---- Stampede -----------------------------------------------------------------------------------

/// Calls per command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
async fn command_calls(c: &mut MultiplexedConnection) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, fields) = rest.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| !name.starts_with("info") && !name.starts_with("config"))
        .collect()
}

/// Writes that changed the dataset so far (`rdb_changes_since_last_save`, counted whether or not
/// Redis persists). Exact where `INFO commandstats` is not: it also counts the commands a Lua
/// script runs inside, so one compare-and-set EVALSHA shows up as `evalsha=1 get=1 set=1`.
async fn dirty(c: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(c)
        .await
        .expect("INFO persistence");
    info.lines()
        .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rdb_changes_since_last_save in INFO persistence")
}

/// `callers` tasks behind a barrier, all asking for one cold key at once. Returns loader calls,
/// Redis writes and the command breakdown (`INFO commandstats` after `CONFIG RESETSTAT`).
async fn stampede_of<F, Fut>(
    url: &str,
    callers: usize,
    calls: Arc<AtomicU64>,
    op: F,
) -> (u64, u64, String)
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut c = raw_conn(url).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await
        .expect("CONFIG RESETSTAT");
    let dirty0 = dirty(&mut c).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(callers));
    let handles: Vec<_> = (0..callers)
        .map(|_| {
            let (barrier, op) = (barrier.clone(), op.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                op().await;
            })
        })
        .collect();
    for h in handles {
        h.await.expect("stampede caller panicked");
    }
    let writes = dirty(&mut c).await - dirty0;
    let cmds = command_calls(&mut c).await;
    let breakdown = cmds
        .iter()
        .map(|(n, k)| format!("{n}={k}"))
        .collect::<Vec<_>>()
        .join(" ");
    (calls.load(Relaxed), writes, breakdown)
}

async fn stampede(plan: &Plan, url: &str) -> Vec<Row> {
    let callers = plan.stampede_callers;
    // Long enough that every caller arrives while the one load is in flight.
    let slow = Duration::from_millis(50);
    flushall(url).await;

    let ours = cache(Some(url), "stampede", 64 << 20).await;
    let calls = Arc::new(AtomicU64::new(0));
    let (ours_loads, ours_writes, ours_cmds) = {
        let (c, calls2) = (ours.clone(), calls.clone());
        stampede_of(url, callers, calls, move || {
            let (c, calls) = (c.clone(), calls2.clone());
            async move {
                let v = c
                    .get_or_load(Kind::API_RESPONSE, "hot", || async {
                        calls.fetch_add(1, Relaxed);
                        tokio::time::sleep(slow).await;
                        Ok::<_, Infallible>(api_response(7))
                    })
                    .await
                    .expect("infallible loader");
                assert_eq!(v.id, 7);
            }
        })
        .await
    };

    let store = Arc::new(
        cached::AsyncRedisCache::<String, ApiResponse>::builder("stampede-cached")
            .ttl(ZIPF_TTL)
            .connection_string(url)
            .build()
            .await
            .expect("cached AsyncRedisCache"),
    );
    let calls = Arc::new(AtomicU64::new(0));
    let (cached_loads, cached_writes, _) = {
        let (s, calls2) = (store.clone(), calls.clone());
        stampede_of(url, callers, calls, move || {
            let (s, calls) = (s.clone(), calls2.clone());
            async move {
                if s.async_cache_get(&"hot".to_string())
                    .await
                    .expect("get")
                    .is_none()
                {
                    calls.fetch_add(1, Relaxed);
                    tokio::time::sleep(slow).await;
                    let _ = s
                        .async_cache_set("hot".to_string(), api_response(7))
                        .await
                        .expect("set");
                }
            }
        })
        .await
    };
    println!(
        "stampede of {callers}: tiered-cache {ours_loads} loader call(s), {ours_writes} write(s) [{ours_cmds}]; \
         cached {cached_loads} loader calls, {cached_writes} writes"
    );
    vec![
        Row::new(
            format!("{callers} concurrent callers of one cold key: loader calls"),
            ours_loads.to_string(),
            format!("`cached` get/load/set: {cached_loads}"),
        )
        .check("exactly 1", ours_loads == 1),
        // Ours: the one load's lease on the absent key, then its value (compare-and-set against
        // the lease, so that an invalidation made meanwhile wins): 2 changes, 1 value written.
        Row::new(
            format!("{callers} concurrent callers of one cold key: Redis writes (lease + value)"),
            ours_writes.to_string(),
            format!("`cached` get/load/set: {cached_writes}"),
        )
        .check("exactly 2 (1 lease, 1 value)", ours_writes == 2),
    ]
}

// ---- Key hashing --------------------------------------------------------------------------------

/// The full key as the cache built it before BLAKE3: `#` and the 128-bit xxh3 of the part.
fn xxh3_entry_key(prefix: &str, kind: &str, part: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(prefix.len() + kind.len() + 40);
    out.push_str(prefix);
    out.push_str(":v1:");
    out.push_str(kind);
    out.push(':');
    let _ = write!(
        out,
        "#{:032x}",
        xxhash_rust::xxh3::xxh3_128(part.as_bytes())
    );
    out
}

/// What hashing a long (user-supplied) key part costs: the full key built as the cache builds it
/// (`cache_core::admin::entry_key`, BLAKE3) against the former xxh3-128, per key, in thread CPU time;
/// then the largest against one Redis round trip, which every L2 read or write of that key pays.
async fn key_hash(plan: &Plan, url: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    // The README's key-hashing table, printed from the same medians as the rows.
    let mut readme = vec![
        "| key part | xxh3-128 (before) | BLAKE3 (now) | ratio |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let mut largest = 0.0;
    for (label, len) in [("201 B", 201), ("1 KiB", 1 << 10), ("10 KiB", 10 << 10)] {
        // A question-like ASCII part, just over the 200-byte limit and beyond.
        let part: String = (0..len)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        assert!(cache_core::admin::entry_key("kh", "model_data", &part).contains(":#"));
        let n = (plan.key_ops * 1024 / len).max(100);
        let mut per_key: [Vec<f64>; 2] = Default::default();
        for round in 0..=plan.rounds {
            for j in 0..2 {
                let which = (round + j) % 2;
                let t = thread_cpu();
                for _ in 0..n {
                    let key = if which == 0 {
                        xxh3_entry_key("kh", "model_data", black_box(&part))
                    } else {
                        cache_core::admin::entry_key("kh", "model_data", black_box(&part))
                    };
                    black_box(key);
                }
                if round > 0 {
                    per_key[which].push((thread_cpu() - t).as_nanos() as f64 / n as f64);
                }
            }
        }
        let [xxh3, b3] = per_key.map(median);
        println!(
            "key part of {label} hashed, {n} keys x {} rounds (thread CPU time): xxh3-128 {xxh3:.0} \
             ns, BLAKE3 {b3:.0} ns per key",
            plan.rounds
        );
        readme.push(format!(
            "| {label} | {xxh3:.0} ns | {b3:.0} ns | {:.1}× |",
            b3 / xxh3
        ));
        rows.push(
            Row::new(
                format!("key part of {label} hashed: BLAKE3 (`entry_key`)"),
                ns(b3),
                format!("xxh3-128 (before): {}", ns(xxh3)),
            )
            .info(b3 / xxh3),
        );
        largest = b3;
    }

    // One round trip: a GET of an absent key, one task, wall time (it waits on the network).
    let conn = raw_conn(url).await;
    let n = (plan.l2_ops_1).max(100);
    let mut rtts = Vec::new();
    for round in 0..=plan.rounds {
        let mut c = conn.clone();
        let t = Instant::now();
        for _ in 0..n {
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg("kh:absent")
                .query_async(&mut c)
                .await
                .expect("GET");
            black_box(v);
        }
        if round > 0 {
            rtts.push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    let rtt = median(rtts);
    println!("Redis round trip (GET of an absent key, 1 task, loopback): {rtt:.0} ns");
    println!(
        "README key-hashing table (median of {} rounds; the GET round trip through redis-rs \
         {:.1} µs):\n{}",
        plan.rounds,
        rtt / 1e3,
        readme.join("\n")
    );
    rows.push(
        Row::new(
            "BLAKE3 key of 10 KiB against one Redis round trip (GET, 1 task, loopback)",
            ns(largest),
            format!("round trip: {}", ns(rtt)),
        )
        .ratio(largest / rtt, "≤ 0.1×", largest / rtt <= 0.1),
    );
    rows
}

// ---- Warm ---------------------------------------------------------------------------------------

async fn warm(plan: &Plan, url: &str) -> Vec<Row> {
    let n = plan.warm_entries;
    let values: Vec<ApiResponse> = (0..n as u64).map(api_response).collect();
    let mut conn = raw_conn(url).await;
    let (mut ours_ms, mut raw_ms) = (Vec::new(), Vec::new());
    let mut written: Option<Vec<Vec<u8>>> = None;
    for round in 0..=plan.rounds.min(5) {
        flushall(url).await;
        let prefix = format!("warm{round}");
        let cache = cache(Some(url), &prefix, 256 << 20).await;
        // The loaders hand over values built beforehand: producing them is the application's
        // cost, not the cache's, and the raw baseline does not pay it either.
        let plan_w = WarmPlan::new().registered(false).entries(
            Kind::API_RESPONSE,
            values.clone().into_iter().enumerate().map(|(i, v)| {
                (
                    format!("w:{i}"),
                    move || async move { Ok::<_, Infallible>(v) },
                )
            }),
        );
        let t = Instant::now();
        let report = cache.warm_with(plan_w).await;
        let ours = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(report.warmed, n as u64, "warm: {:?}", report.failed);
        assert_eq!(report.l2_write_errors, 0);

        // The raw baseline sends exactly the bytes the warm-up wrote, in one pipeline of SETs.
        let bytes = match written.take() {
            Some(b) => b,
            None => {
                let keys: Vec<String> = (0..n)
                    .map(|i| format!("{prefix}:v1:api_response:w:{i}"))
                    .collect();
                let mut all = Vec::with_capacity(n);
                for chunk in keys.chunks(1_000) {
                    let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                        .arg(chunk)
                        .query_async(&mut conn)
                        .await
                        .expect("MGET");
                    all.extend(got.into_iter().map(|b| b.expect("warmed key in Redis")));
                }
                all
            }
        };
        let mut p = redis::pipe();
        for (i, b) in bytes.iter().enumerate() {
            p.cmd("SET")
                .arg(format!("raw:w:{i}"))
                .arg(b)
                .arg("PX")
                .arg(300_000)
                .ignore();
        }
        let t = Instant::now();
        let _: () = p.query_async(&mut conn).await.expect("raw pipeline");
        let raw = t.elapsed().as_secs_f64() * 1e3;
        written = Some(bytes);
        if round > 0 {
            ours_ms.push(ours);
            raw_ms.push(raw);
        }
    }
    flushall(url).await;
    let (ours, raw) = (median(ours_ms), median(raw_ms));
    println!("warm of {n}: warm_with {ours:.1} ms, raw pipelined SET {raw:.1} ms");
    vec![Row::new(
        format!("`warm_with` of {n} entries (L1 + L2)"),
        ms(ours),
        format!("one raw pipeline of {n} SETs, same bytes: {}", ms(raw)),
    )
    .ratio(ours / raw, "≤ 1.5×", ours / raw <= 1.5)]
}

// ---- L1 memory ----------------------------------------------------------------------------------

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// What L1 holds after `n` distinct keys went into a `budget`-byte cache.
struct Held {
    entries: u64,
    weighed: u64,
    /// Bytes allocated and not freed since before the cache was built (everything it holds).
    heap: f64,
    /// The same in malloc chunks.
    chunks: f64,
    /// `chunks` without what the empty cache held (its fixed structures).
    chunks_filled: f64,
    rss: Option<u64>,
    /// The kind's own L1 figures (entries, bytes), to check them against the totals.
    kind: (u64, u64),
}

async fn fill_l1<V, F>(n: usize, budget: u64, value: F) -> Held
where
    V: serde::Serialize + Send + Sync + 'static,
    F: Fn(usize) -> V,
{
    let rss0 = rss_bytes();
    heap::start();
    let cache = cache(None, "mem", budget).await;
    let empty = heap::chunks() as f64;
    for i in 0..n {
        cache
            .set(Kind::SESSION_DATA, &format!("user:{i}"), value(i))
            .await;
    }
    // Apply moka's pending evictions before counting.
    cache.run_pending_tasks().await;
    cache.run_pending_tasks().await;
    let (heap, chunks) = (heap::live() as f64, heap::chunks() as f64);
    let rss = rss_bytes().zip(rss0).map(|(a, b)| a.saturating_sub(b));
    let stats = cache.stats();
    heap::stop();
    let s = stats.total.l1;
    let k = &stats.kinds[Kind::SESSION_DATA.name()].l1;
    let kind = (k.entries, k.bytes);
    drop(cache);
    Held {
        entries: s.entries,
        weighed: s.bytes,
        heap,
        chunks,
        chunks_filled: chunks - empty,
        rss,
        kind,
    }
}

/// A 1536-dimension embedding (OpenAI `text-embedding-3-small`).
fn embedding(i: usize) -> Vec<f32> {
    (0..1536)
        .map(|d| ((i * 31 + d) % 1000) as f32 / 1000.0)
        .collect()
}

async fn memory(plan: &Plan) -> Vec<Row> {
    let (n, budget) = (plan.mem_keys, plan.mem_budget);
    let mut rows = Vec::new();

    // Calibration: values with no heap of their own, so that the malloc chunks per entry beyond
    // what the weigher counts exactly are moka's own per-entry cost (`ENTRY_OVERHEAD` in
    // cache-core/src/l1.rs is set from this line).
    let h = fill_l1(n, budget, |i| i as u64).await;
    let entries = h.entries.max(1) as f64;
    println!(
        "L1 memory, calibration with u64 values: {} entries; weigher {:.1} bytes/entry, malloc \
         chunks {:.1}/entry ({:.1}/entry with the empty cache's fixed structures): moka's own \
         per-entry cost is ENTRY_OVERHEAD {:+.1} bytes",
        h.entries,
        h.weighed as f64 / entries,
        h.chunks_filled / entries,
        h.chunks / entries,
        (h.chunks_filled - h.weighed as f64) / entries,
    );

    // A small profile-like value (~85 bytes): per-entry overhead is most of what L1 holds. The
    // 770-byte API response, whose typed form holds several times its encoded size in many small
    // allocations. Large embeddings: one big buffer each, a little smaller than their encoding.
    let small = |i: usize| {
        format!("{{\"id\":{i:>12},\"name\":\"user number {i:>12}\",\"plan\":\"pro\",\"flags\":7}}")
    };
    let runs = [
        ("~85-byte strings", n, fill_l1(n, budget, small).await),
        (
            "770-byte `ApiResponse` structs",
            n / 5,
            fill_l1(n / 5, budget, |i| api_response(i as u64)).await,
        ),
        (
            "1536-float `Vec<f32>` embeddings",
            n / 20,
            fill_l1(n / 20, budget, embedding).await,
        ),
    ];
    for (what, keys, h) in runs {
        let per = |b: f64| b / h.entries.max(1) as f64;
        println!(
            "L1 memory, {what}: {} entries kept of {keys} keys into a {budget}-byte budget; weigher \
             counts {} bytes ({:.0}/entry; the kind's own figures: {} entries, {} bytes); heap holds \
             {:.0} bytes ({:.0}/entry), {:.0} bytes in malloc chunks ({:.0}/entry); RSS grew {:?}",
            h.entries,
            h.weighed,
            per(h.weighed as f64),
            h.kind.0,
            h.kind.1,
            h.heap,
            per(h.heap),
            h.chunks,
            per(h.chunks),
            h.rss
        );
        assert_eq!(
            h.kind,
            (h.entries, h.weighed),
            "one kind in the cache: its L1 figures are the totals"
        );
        // Judged in malloc chunks: what the allocator hands out for the requests, and so what
        // RSS and a container's memory limit see (the requested bytes alone miss the chunk
        // headers and rounding, most of the cost of small allocations).
        let r = h.chunks / budget as f64;
        let row = Row::new(
            format!("L1 memory after {keys} distinct keys, {what}"),
            format!(
                "{} in malloc chunks ({} requested; {} entries)",
                mib(h.chunks),
                mib(h.heap),
                h.entries,
            ),
            format!("budget {}", mib(budget as f64)),
        );
        // The target (issue 15: L1 heap within ±15% of the budget) can be judged only when the
        // keys overflowed the budget (L1 full) and the empty cache's fixed structures, which the
        // budget does not cover, are a small part of it. A quick run's 4 MiB budget may not be:
        // then the row is shown for information and the full run (64 MiB) judges the target.
        let fixed = h.chunks - h.chunks_filled;
        let full = h.entries < keys as u64;
        let measurable = full && fixed <= 0.05 * budget as f64;
        rows.push(if measurable {
            row.ratio(r, "within ±15%", (r - 1.0).abs() <= 0.15)
        } else {
            println!(
                "L1 memory, {what}: the ±15% target is not judged in this run (L1 {}; the empty \
                 cache's fixed structures {} = {:.0}% of the {} budget): the full run judges it",
                if full {
                    "full"
                } else {
                    "never filled: every key fit"
                },
                mib(fixed),
                100.0 * fixed / budget as f64,
                mib(budget as f64),
            );
            let mut row = row.info(r);
            row.target = "within ±15% (judged on the full run)".into();
            row
        });
    }
    rows
}
