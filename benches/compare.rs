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
    std::thread_local! {
        /// Allocations (calls of `alloc`, `alloc_zeroed` and `realloc`) made by this thread
        /// while counting: what a call on this thread costs, whatever other threads do meanwhile.
        static ALLOCS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
    }
    /// The same in glibc malloc chunks (8-byte header, 16-byte granules, 32 bytes at least): an
    /// estimate of what the allocator really hands out.
    static CHUNKS: AtomicI64 = AtomicI64::new(0);

    fn chunk(size: usize) -> i64 {
        ((size + 8).div_ceil(16) * 16).max(32) as i64
    }

    fn add(size: usize) {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
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
        let _ = ALLOCS.try_with(|n| n.set(0));
        LIVE.store(0, Relaxed);
        CHUNKS.store(0, Relaxed);
        ON.store(true, Relaxed);
    }

    /// Bytes allocated and not freed since `start` (frees of older blocks count negatively: keep
    /// the rest of the program quiet meanwhile).
    pub(crate) fn live() -> i64 {
        LIVE.load(Relaxed)
    }

    /// Allocations by this thread since `start`.
    pub(crate) fn allocs() -> i64 {
        ALLOCS.try_with(std::cell::Cell::get).unwrap_or(0)
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

/// One line of the final table (and of the JSON file).
#[derive(serde::Serialize)]
struct Row {
    what: String,
    ours: String,
    baseline: String,
    ratio: String,
    /// The median ratio as a number, when the row has one.
    ratio_value: Option<f64>,
    /// The lowest and highest per-round ratio, when measured over rounds.
    spread: Option<(f64, f64)>,
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
            ratio_value: None,
            spread: None,
            target: String::new(),
            pass: None,
        }
    }

    fn ratio(mut self, r: f64, target: &str, pass: bool) -> Self {
        self = self.info(r);
        self.target = target.into();
        self.pass = Some(pass);
        self
    }

    /// A ratio shown for information, with no target.
    fn info(mut self, r: f64) -> Self {
        self.ratio = format!("{r:.2}×");
        self.ratio_value = Some(r);
        self
    }

    /// The ratio of each round (`ours[i] / base[i]`, paired by round): the median is the row's
    /// ratio, judged against `target` (`at_most`: a cost, else a rate), the range shown beside it.
    fn rounds(mut self, ours: &[f64], base: &[f64], target: f64, at_most: bool) -> Self {
        let ratios: Vec<f64> = ours.iter().zip(base).map(|(o, b)| o / b).collect();
        let r = median(ratios.clone());
        let (lo, hi) = spread(&ratios);
        let (sign, pass) = if at_most {
            ("≤", r <= target)
        } else {
            ("≥", r >= target)
        };
        self = self.ratio(r, &format!("{sign} {target}×"), pass);
        self.ratio = format!("{r:.2}× ({lo:.2}–{hi:.2})");
        self.spread = Some((lo, hi));
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

/// The lowest and highest of `v`.
fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
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
        // What is measured is throughput, not the deadline: a busy machine (a debug build in CI)
        // must not turn a slow read into a miss that the rows take for a defect.
        .l2_timeout(Duration::from_secs(2))
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
    // COMPARE_ONLY=l1,l2,batch,zipf,stampede,warm,memory,keyhash runs a subset (for profiling one section).
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default();
    let on = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);
    let mut rows = Vec::new();
    if on("l1") {
        rows.extend(l1_hit(&plan, &url).await);
    }
    if on("l2") {
        rows.extend(l2_hit(&plan, &url).await);
    }
    if on("batch") {
        rows.extend(batches(&plan, &url).await);
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
    write_json(&plan, &rows);
}

/// Writes the rows as JSON under `target/compare/` (one file per run, and `latest.json`), so that
/// runs can be compared.
fn write_json(plan: &Plan, rows: &[Row]) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("compare");
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let doc = serde_json::json!({
        "run": if plan.quick { "quick" } else { "full" },
        "unix_time": unix,
        "rounds": plan.rounds,
        "rows": rows,
    });
    let text = serde_json::to_string_pretty(&doc).expect("rows as JSON");
    let file = dir.join(format!("compare-{unix}.json"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, &text))
        .and_then(|()| std::fs::write(dir.join("latest.json"), &text));
    match written {
        Ok(()) => println!("results written to {}", file.display()),
        Err(e) => panic!("cannot write the results to {}: {e}", dir.display()),
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of this process (every thread: the runtime's workers too).
fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed out-parameter for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock})");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time redis-server has used (user + system, from `INFO cpu`), in milliseconds.
async fn redis_cpu_ms(c: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(c)
        .await
        .expect("INFO cpu");
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO cpu without {name}"))
    };
    (field("used_cpu_user") + field("used_cpu_sys")) * 1e3
}

/// CPU time spent while something ran, by this process (the client) and by redis-server: where
/// the time of a contender goes when the two share the machine's cores.
struct CpuProbe {
    client: Duration,
    redis_ms: f64,
}

impl CpuProbe {
    async fn start(c: &mut MultiplexedConnection) -> Self {
        let redis_ms = redis_cpu_ms(c).await;
        Self {
            client: process_cpu(),
            redis_ms,
        }
    }

    /// Microseconds of CPU per operation since `start`: (client, redis-server).
    async fn per_op(self, c: &mut MultiplexedConnection, ops: usize) -> (f64, f64) {
        let client = (process_cpu() - self.client).as_secs_f64() * 1e6 / ops as f64;
        let redis = (redis_cpu_ms(c).await - self.redis_ms) * 1e3 / ops as f64;
        (client, redis)
    }
}

/// Medians of (client, redis-server) CPU per operation.
fn cpu_medians(v: &[(f64, f64)]) -> (f64, f64) {
    (
        median(v.iter().map(|c| c.0).collect()),
        median(v.iter().map(|c| c.1).collect()),
    )
}

struct TenMinutes;

impl<V> moka::Expiry<String, V> for TenMinutes {
    fn expire_after_create(&self, _: &String, _: &V, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(600))
    }
}

/// The least an L1 of typed values with per-entry metadata does on a hit, as a moka value: the
/// entry is a pointer (moka clones its value on every hit) to the metadata and the value's own
/// `Arc` (what the caller gets), and a hit is counted. What `l1_hit` compares our hit with, to
/// tell this layout's cost from the rest of ours.
#[derive(Clone)]
struct EntryLayout(Arc<(u64, Arc<ApiResponse>)>);

/// Hits counted by the [`EntryLayout`] baseline.
static LAYOUT_HITS: AtomicU64 = AtomicU64::new(0);

// ---- L1 hit -------------------------------------------------------------------------------------

async fn l1_hit(plan: &Plan, url: &str) -> Vec<Row> {
    const FULL: &str = "cmp-l1:v1:api_response:k";
    let cache = cache(Some(url), "cmp-l1", 64 << 20).await;
    let value = api_response(1);
    cache.set(Kind::API_RESPONSE, "k", value.clone()).await;
    let raw: moka::future::Cache<String, Arc<ApiResponse>> =
        moka::future::Cache::builder().max_capacity(10_000).build();
    raw.insert(FULL.to_string(), Arc::new(value)).await;

    // moka configured as L1 is (byte weigher, per-entry expiry): the same-config baseline.
    let raw_expiry = same_config_moka(64 << 20);
    raw_expiry
        .insert(FULL.to_string(), Arc::new(api_response(1)))
        .await;
    // The same, holding entries laid out as L1's (see `EntryLayout`).
    let layout: moka::future::Cache<String, EntryLayout> = moka::future::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(|k: &String, _| k.len() as u32 + SAME_CONFIG_VALUE_WEIGHT)
        .expire_after(TenMinutes)
        .build();
    layout
        .insert(
            FULL.to_string(),
            EntryLayout(Arc::new((600, Arc::new(api_response(1))))),
        )
        .await;
    let layout_get = || async {
        let v = layout.get(black_box(FULL)).await.map(|e| {
            LAYOUT_HITS.fetch_add(1, Relaxed);
            e.0 .1.clone()
        });
        black_box(v);
    };
    let n = plan.l1_ops;
    let get = || async {
        black_box(
            cache
                .get::<ApiResponse>(Kind::API_RESPONSE, black_box("k"))
                .await,
        );
    };
    let get_or_load = || async {
        let v = cache
            .get_or_load(Kind::API_RESPONSE, black_box("k"), || async {
                Err::<ApiResponse, &str>("a hit never loads")
            })
            .await;
        black_box(v.is_ok());
    };
    // [raw, get, get_or_load, same-config moka] per round, in CPU time of this thread (the loops
    // never wait, and CPU time leaves out the time other processes on a shared machine held the
    // core).
    let mut per_op: [Vec<f64>; 5] = Default::default();
    // One warm-up round, then measured rounds; the contenders take turns going first.
    for round in 0..=plan.rounds {
        for j in 0..5 {
            let which = (round + j) % 5;
            let t = thread_cpu();
            match which {
                0 => {
                    for _ in 0..n {
                        black_box(raw.get(black_box(FULL)).await);
                    }
                }
                1 => {
                    for _ in 0..n {
                        get().await;
                    }
                }
                3 => {
                    for _ in 0..n {
                        black_box(raw_expiry.get(black_box(FULL)).await);
                    }
                }
                4 => {
                    for _ in 0..n {
                        layout_get().await;
                    }
                }
                _ => {
                    for _ in 0..n {
                        get_or_load().await;
                    }
                }
            }
            if round > 0 {
                per_op[which].push((thread_cpu() - t).as_nanos() as f64 / n as f64);
            }
        }
    }
    // Heap allocations per hit (counting allocator, this thread only).
    let allocs = |ops: usize, a: i64| a as f64 / ops as f64;
    heap::start();
    for _ in 0..1_000 {
        get().await;
    }
    let get_allocs = allocs(1_000, heap::allocs());
    heap::start();
    for _ in 0..1_000 {
        get_or_load().await;
    }
    let gol_allocs = allocs(1_000, heap::allocs());
    // moka's own: its maintenance (draining the read log) runs now and then inside a call.
    heap::start();
    for _ in 0..1_000 {
        black_box(raw_expiry.get(black_box(FULL)).await);
    }
    let moka_allocs = allocs(1_000, heap::allocs());
    heap::stop();
    let [r_raw, r_get, r_gol, r_exp, r_layout] = per_op;
    let (raw_ns, get_ns, gol_ns, exp_ns, layout_ns) = (
        median(r_raw.clone()),
        median(r_get.clone()),
        median(r_gol.clone()),
        median(r_exp.clone()),
        median(r_layout.clone()),
    );
    assert!(LAYOUT_HITS.load(Relaxed) > 0);
    let stats = cache.stats();
    assert_eq!(
        stats.total.l1.misses, 0,
        "every L1 read must have been a hit"
    );
    println!(
        "L1 hit, 1 task, {n} ops x {} rounds (thread CPU time): raw moka {raw_ns:.0} ns, \
         get {get_ns:.0} ns, get_or_load {gol_ns:.0} ns; moka with weigher + per-entry expiry \
         {exp_ns:.0} ns, the same holding L1's entry layout {layout_ns:.0} ns; heap allocations \
         per hit: get {get_allocs:.2}, get_or_load \
         {gol_allocs:.2}, same-config moka {moka_allocs:.2}",
        plan.rounds
    );
    let same = |ns_: f64| format!("moka, same weigher + per-entry expiry: {}", ns(ns_));
    vec![
        Row::new("L1 hit: `get`", ns(get_ns), same(exp_ns)).rounds(&r_get, &r_exp, 1.1, true),
        Row::new("L1 hit: `get_or_load`", ns(gol_ns), same(exp_ns))
            .rounds(&r_gol, &r_exp, 1.1, true),
        Row::new(
            "L1 hit: heap allocations per `get` / `get_or_load` beyond moka's own (counting allocator)",
            format!(
                "{:+.2} / {:+.2}",
                get_allocs - moka_allocs,
                gol_allocs - moka_allocs
            ),
            format!("same-config moka `get`: {moka_allocs:.2} per read"),
        )
        .check("0", get_allocs <= moka_allocs && gol_allocs <= moka_allocs),
        Row::new(
            "(for reference) L1 hit `get` against count-bounded moka",
            ns(get_ns),
            format!("raw moka `get`: {}", ns(raw_ns)),
        )
        .info(get_ns / raw_ns),
        Row::new(
            "(for reference) moka with a weigher and per-entry expiry, as L1 uses it",
            ns(exp_ns),
            format!("raw moka `get`: {}", ns(raw_ns)),
        )
        .info(exp_ns / raw_ns),
        // How much of the gap is the entry layout any L1 of typed values with metadata pays
        // (two pointers cloned per hit, a hit counted), and how much the rest of ours.
        Row::new(
            "(for reference) same-config moka holding L1's entry layout (entry `Arc` → value `Arc`, a hit counter)",
            ns(layout_ns),
            same(exp_ns),
        )
        .info(layout_ns / exp_ns),
        Row::new(
            "(for reference) L1 hit `get` against that layout",
            ns(get_ns),
            format!("same-config moka, L1's entry layout: {}", ns(layout_ns)),
        )
        .info(get_ns / layout_ns),
    ]
}

/// A moka cache configured as L1 is (a byte weigher, per-entry expiry), for the same-config
/// baselines: moka sizes its frequency sketch differently for weighted caches, and per-entry
/// expiry adds a timer wheel, so a count-bounded moka measures moka's cheapest mode, not ours.
fn same_config_moka(max_bytes: u64) -> moka::future::Cache<String, Arc<ApiResponse>> {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|k: &String, _| k.len() as u32 + SAME_CONFIG_VALUE_WEIGHT)
        .expire_after(TenMinutes)
        .build()
}

/// The weight the same-config baselines give a value (about what L1's weigher finds for an
/// `ApiResponse`).
const SAME_CONFIG_VALUE_WEIGHT: u32 = 1_000;

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
    // The kind is L2-only: every read is an L2 hit (L1 is never consulted or filled). One key per
    // task, so that `get_or_load`'s per-key coordination is measured as a real workload meets it.
    let conn = raw_conn(url).await;
    for t in 0..L2_TASKS {
        let value = api_response(t as u64);
        cache.set("remote", &format!("d{t}"), value.clone()).await;
        let mut c = conn.clone();
        let bytes = rmp_serde::to_vec_named(&value).expect("encode");
        let _: () = redis::cmd("SET")
            .arg(format!("raw:d{t}"))
            .arg(bytes)
            .query_async(&mut c)
            .await
            .expect("raw SET");
    }
    assert_eq!(raw_get_decode(&conn, "raw:d3").await, api_response(3));
    assert_eq!(
        cache.get::<ApiResponse>("remote", "d3").await.as_deref(),
        Some(&api_response(3))
    );
    let keys: Arc<Vec<(String, String)>> = Arc::new(
        (0..L2_TASKS)
            .map(|t| (format!("d{t}"), format!("raw:d{t}")))
            .collect(),
    );

    let one = {
        let (cache, conn, keys) = (cache.clone(), conn.clone(), keys.clone());
        move |op: Op, t: usize| l2_op(cache.clone(), conn.clone(), keys.clone(), op, t)
    };
    let ops = [Op::Raw, Op::Get, Op::GetOrLoad];
    // [op][tasks: 0 = one task, 1 = 64 tasks] -> per-round throughput.
    let mut tput: [[Vec<f64>; 2]; 3] = Default::default();
    // [op] -> per-round CPU per hit at 64 tasks (client, redis-server).
    let mut cpu: [Vec<(f64, f64)>; 3] = Default::default();
    let mut probe_conn = conn.clone();
    let n = plan.l2_ops_1;
    for round in 0..=plan.rounds {
        for j in 0..3 {
            let which = (round + j) % 3;
            let op = ops[which];
            let t = Instant::now();
            for _ in 0..n {
                one(op, 0).await;
            }
            let single = n as f64 / t.elapsed().as_secs_f64();
            let f = one.clone();
            let probe = CpuProbe::start(&mut probe_conn).await;
            let many = par(L2_TASKS, plan.l2_ops_per_task, move |t, _| f(op, t)).await;
            let used = probe
                .per_op(&mut probe_conn, L2_TASKS * plan.l2_ops_per_task)
                .await;
            if round > 0 {
                tput[which][0].push(single);
                tput[which][1].push(many);
                cpu[which].push(used);
            }
        }
    }
    // Heap allocations per L2 hit, one task, counted on the calling thread (the connection's own
    // task, which reads and parses the replies on a worker thread, is left out for every
    // contender alike).
    let mut allocs = [0.0; 3];
    for (a, op) in allocs.iter_mut().zip(ops) {
        heap::start();
        for _ in 0..500 {
            one(op, 0).await;
        }
        *a = heap::allocs() as f64 / 500.0;
    }
    heap::stop();
    let [raw, get, gol] = tput;
    let m = |v: &Vec<f64>| median(v.clone());
    println!(
        "L2 hit (one key per task), ops/s: 1 task raw {:.0}, get {:.0}, get_or_load {:.0}; \
         {L2_TASKS} tasks raw {:.0}, get {:.0}, get_or_load {:.0}; heap allocations per hit: \
         raw GET + decode {:.1}, get {:.1}, get_or_load {:.1}",
        m(&raw[0]),
        m(&get[0]),
        m(&gol[0]),
        m(&raw[1]),
        m(&get[1]),
        m(&gol[1]),
        allocs[0],
        allocs[1],
        allocs[2],
    );
    let base = |v: &Vec<f64>| format!("redis-rs GET + rmp-serde decode: {}", kops(m(v)));
    let mut rows = Vec::new();
    for (i, tasks) in [(0, 1), (1, L2_TASKS)] {
        rows.push(
            Row::new(
                format!("L2 hit `get`, {tasks} task(s)"),
                kops(m(&get[i])),
                base(&raw[i]),
            )
            .rounds(&get[i], &raw[i], 0.95, false),
        );
        rows.push(
            Row::new(
                format!("L2 hit `get_or_load`, {tasks} task(s), a key per task"),
                kops(m(&gol[i])),
                base(&raw[i]),
            )
            .rounds(&gol[i], &raw[i], 0.9, false),
        );
    }
    let (beyond_get, beyond_gol) = (allocs[1] - allocs[0], allocs[2] - allocs[0]);
    rows.push(
        Row::new(
            "L2 hit: heap allocations per `get` / `get_or_load` beyond a raw GET + decode",
            format!("{beyond_get:+.1} / {beyond_gol:+.1}"),
            format!("raw GET + decode: {:.1} per read", allocs[0]),
        )
        .check("0", beyond_get <= 0.0 && beyond_gol <= 0.0),
    );
    // Where the time of the 64-task rows goes: the client, its connection task and redis-server
    // share the two cores, so CPU per hit is what bounds throughput.
    let [c_raw, c_get, c_gol] = cpu.map(|v| cpu_medians(&v));
    println!(
        "L2 hit, {L2_TASKS} tasks, CPU per hit (client / redis-server): raw {:.2} / {:.2} µs, \
         get {:.2} / {:.2} µs, get_or_load {:.2} / {:.2} µs",
        c_raw.0, c_raw.1, c_get.0, c_get.1, c_gol.0, c_gol.1
    );
    let us2 = |c: (f64, f64)| format!("{:.2} / {:.2} µs", c.0, c.1);
    for (label, c) in [("get", c_get), ("get_or_load", c_gol)] {
        rows.push(
            Row::new(
                format!(
                    "(for reference) CPU per L2 hit at {L2_TASKS} tasks, client / redis-server: \
                     `{label}`"
                ),
                us2(c),
                format!("raw GET + decode: {}", us2(c_raw)),
            )
            .info((c.0 + c.1) / (c_raw.0 + c_raw.1)),
        );
    }
    rows
}

/// The contenders of the L2 rows.
#[derive(Clone, Copy)]
enum Op {
    Raw,
    Get,
    GetOrLoad,
}

/// One L2 read by `op` of task `t`'s key (`keys[t]`: ours, raw).
async fn l2_op(
    cache: Cache,
    conn: MultiplexedConnection,
    keys: Arc<Vec<(String, String)>>,
    op: Op,
    t: usize,
) {
    let (ours, raw) = &keys[t];
    match op {
        Op::Raw => {
            black_box(raw_get_decode(&conn, raw).await);
        }
        Op::Get => {
            black_box(cache.get::<ApiResponse>("remote", ours).await.expect("hit"));
        }
        Op::GetOrLoad => {
            let v = cache
                .get_or_load("remote", ours, || async {
                    Err::<ApiResponse, Infallible>(unreachable_load())
                })
                .await
                .expect("hit");
            black_box(v);
        }
    }
}

/// What a loader that must not run does if it runs: the bench's figures would be wrong.
fn unreachable_load() -> Infallible {
    panic!("an L2 hit called its loader")
}

/// Tasks of the concurrent L2 rows.
const L2_TASKS: usize = 64;

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
    /// What both hand-written loads begin with: L1, then one GET (an L2 hit is copied into L1).
    /// `Err` gives the key back when neither holds it.
    async fn read(&self, key: String) -> Result<Arc<ApiResponse>, String> {
        if let Some(v) = self.l1.get(&key).await {
            return Ok(v);
        }
        let mut c = self.conn.clone();
        let got: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut c)
            .await
            .expect("GET");
        match got.and_then(|b| rmp_serde::from_slice::<ApiResponse>(&b).ok()) {
            Some(v) => {
                let v = Arc::new(v);
                self.l1.insert(key, v.clone()).await;
                Ok(v)
            }
            None => Err(key),
        }
    }

    async fn get_or_load(&self, key: String, id: u64, calls: &AtomicU64) -> Arc<ApiResponse> {
        let key = match self.read(key).await {
            Ok(v) => return v,
            Err(key) => key,
        };
        let v = Arc::new(origin(id, calls).await);
        let bytes = rmp_serde::to_vec_named(&*v).expect("encode");
        let mut c = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .arg("PX")
            .arg(ZIPF_TTL.as_millis() as u64)
            .query_async(&mut c)
            .await
            .expect("SET");
        self.l1.insert(key, v.clone()).await;
        v
    }
}

/// The race guard's protocol, written by hand: a load reads with a plain GET, then (on a miss)
/// leases the key in one command (`SET key lease NX GET`), calls the loader and writes back only
/// if the key still holds its lease (a compare-and-set script). Same steps in Redis as ours, none
/// of the rest (envelope, single-flight, tags, stats...): what the guards alone cost the
/// hand-written two-tier.
const GUARDED_CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

impl HandWritten {
    async fn get_or_load_guarded(
        &self,
        key: String,
        id: u64,
        calls: &AtomicU64,
        cas: &redis::Script,
    ) -> Arc<ApiResponse> {
        let key = match self.read(key).await {
            Ok(v) => return v,
            Err(key) => key,
        };
        let mut c = self.conn.clone();
        // Unique per load, as a lease must be.
        let lease = format!("lease:{}", GUARD_LEASES.fetch_add(1, Relaxed));
        let found: Option<Vec<u8>> = redis::cmd("SET")
            .arg(&key)
            .arg(&lease)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut c)
            .await
            .expect("SET NX GET");
        if let Some(v) = found.and_then(|b| rmp_serde::from_slice::<ApiResponse>(&b).ok()) {
            let v = Arc::new(v);
            self.l1.insert(key, v.clone()).await;
            return v;
        }
        let v = Arc::new(origin(id, calls).await);
        let bytes = rmp_serde::to_vec_named(&*v).expect("encode");
        let stored: i64 = cas
            .key(&key)
            .arg(&lease)
            .arg(bytes)
            .arg(ZIPF_TTL.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .expect("compare-and-set");
        if stored == 1 {
            self.l1.insert(key, v.clone()).await;
        }
        v
    }
}

/// Leases handed out by [`HandWritten::get_or_load_guarded`].
static GUARD_LEASES: AtomicU64 = AtomicU64::new(0);

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

    /// The L1 hit ratio of a two-tier contender: each L1 miss reads L2 with one GET. `INFO
    /// commandstats` also counts the GET a compare-and-set script runs inside (one per EVALSHA),
    /// which is not a read of an L1 miss.
    fn l1_hit_ratio(&self, ops: usize) -> f64 {
        let reads = self.calls("get").saturating_sub(self.calls("evalsha"));
        1.0 - reads as f64 / ops as f64
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
/// warm pass and its CPU per operation (client, redis-server).
async fn zipf_passes<F, Fut>(
    plan: &Plan,
    url: &str,
    dist: &Arc<Zipf>,
    op: F,
) -> (f64, f64, WarmCmds, (f64, f64))
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
    let mut cpu = (0.0, 0.0);
    for o in &mut out {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .expect("CONFIG RESETSTAT");
        let (dist, rngs, op) = (dist.clone(), rngs.clone(), op.clone());
        let probe = CpuProbe::start(&mut conn).await;
        *o = par(ZIPF_TASKS, plan.zipf_ops_per_task, move |t, _| {
            let id = {
                let mut rng = rngs[t].lock().expect("rng lock");
                dist.sample(&mut rng)
            };
            op(id)
        })
        .await;
        // The last pass (warm) is the one kept.
        cpu = probe
            .per_op(&mut conn, ZIPF_TASKS * plan.zipf_ops_per_task)
            .await;
    }
    let cmds = WarmCmds(command_calls(&mut conn).await);
    (out[0], out[1], cmds, cpu)
}

async fn zipf(plan: &Plan, url: &str) -> Vec<Row> {
    let n = plan.zipf_keys;
    let l1_keys = n / 10;
    let dist = Arc::new(Zipf::new(n, 1.0));
    let key = |id: u64| format!("item:{id}");
    // The hand-written contenders store under the same full keys as ours (L1 and Redis): key
    // length is workload, not code (moka and Redis hash and compare every byte of it).
    let hand_key = |id: u64| format!("zipf:v1:api_response:item:{id}");

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

    let ops = ZIPF_TASKS * plan.zipf_ops_per_task;
    // Contenders alternate over rounds (each from an empty Redis and an empty L1): [tiered-cache,
    // hand-written with L1 configured as ours (byte weigher, per-entry expiry), hand-written with
    // a count-bounded moka, hand-written with L1 as ours and our race guard's Redis protocol] x
    // [from empty, warm].
    let rounds = if plan.quick { 1 } else { 3 };
    let mut tput: [[Vec<f64>; 2]; 4] = Default::default();
    let mut calls = [0u64; 4];
    let mut last_cmds: [Option<WarmCmds>; 4] = Default::default();
    // [contender] -> per-round CPU per operation of the warm pass (client, redis-server).
    let mut warm_cpu: [Vec<(f64, f64)>; 4] = Default::default();
    let cas = Arc::new(redis::Script::new(GUARDED_CAS));
    let mut ours_hit_l1 = 0.0;
    let same_budget = l1_keys as u64
        * (hand_key(l1_keys as u64 - 1).len() as u64 + u64::from(SAME_CONFIG_VALUE_WEIGHT));
    for round in 0..rounds {
        for j in 0..4 {
            let which = (round + j) % 4;
            flushall(url).await;
            let counter = Arc::new(AtomicU64::new(0));
            let (cold, warm, cmds, cpu) = match which {
                0 => {
                    let ours = cache(Some(url), "zipf", budget).await;
                    let (c, n) = (ours.clone(), counter.clone());
                    let out = zipf_passes(plan, url, &dist, move |id| {
                        let (c, n) = (c.clone(), n.clone());
                        async move {
                            let v = c
                                .get_or_load(Kind::API_RESPONSE, &key(id), || async {
                                    Ok::<_, Infallible>(origin(id, &n).await)
                                })
                                .await
                                .expect("infallible loader");
                            assert_eq!(v.id, id);
                        }
                    })
                    .await;
                    let st = ours.stats().total;
                    ours_hit_l1 = st.l1.hits as f64 / (st.l1.hits + st.l1.misses).max(1) as f64;
                    out
                }
                _ => {
                    let l1 = if which != 2 {
                        same_config_moka(same_budget)
                    } else {
                        moka::future::Cache::builder()
                            .max_capacity(l1_keys as u64)
                            .build()
                    };
                    let hand = HandWritten {
                        l1,
                        conn: raw_conn(url).await,
                    };
                    let (n, cas) = (counter.clone(), cas.clone());
                    let guarded = which == 3;
                    zipf_passes(plan, url, &dist, move |id| {
                        let (h, n, cas) = (hand.clone(), n.clone(), cas.clone());
                        async move {
                            let v = if guarded {
                                h.get_or_load_guarded(hand_key(id), id, &n, &cas).await
                            } else {
                                h.get_or_load(hand_key(id), id, &n).await
                            };
                            assert_eq!(v.id, id);
                        }
                    })
                    .await
                }
            };
            tput[which][0].push(cold);
            tput[which][1].push(warm);
            calls[which] += counter.load(Relaxed);
            last_cmds[which] = Some(cmds);
            warm_cpu[which].push(cpu);
        }
    }
    let [cpu_ours, cpu_same, cpu_count, cpu_guarded] = warm_cpu.map(|v| cpu_medians(&v));
    println!(
        "zipf warm pass, CPU per operation (client / redis-server): tiered-cache {:.2} / {:.2} µs; \
         hand-written, L1 as ours {:.2} / {:.2} µs; hand-written, count-bounded {:.2} / {:.2} µs; \
         hand-written with the guards {:.2} / {:.2} µs",
        cpu_ours.0,
        cpu_ours.1,
        cpu_same.0,
        cpu_same.1,
        cpu_count.0,
        cpu_count.1,
        cpu_guarded.0,
        cpu_guarded.1
    );

    // The `cached` crate's AsyncRedisCache, once (for reference: no L1).
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
    let (cached_cold, cached_warm, cached_cmds, _) = {
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
    flushall(url).await;

    let [ours, same, count, guarded] = tput;
    let m = |v: &Vec<f64>| median(v.clone());
    println!(
        "zipf ops/s from empty/warm (median of {rounds} round(s)): tiered-cache {:.0}/{:.0} (L1 hit \
         ratio {:.1}%, {} loader calls); hand-written, L1 as ours {:.0}/{:.0} ({} loader calls); \
         hand-written, count-bounded L1 {:.0}/{:.0} ({} loader calls); hand-written with the \
         guards {:.0}/{:.0} ({} loader calls); cached {cached_cold:.0}/{cached_warm:.0} ({} loader \
         calls)",
        m(&ours[0]),
        m(&ours[1]),
        ours_hit_l1 * 100.0,
        calls[0],
        m(&same[0]),
        m(&same[1]),
        calls[1],
        m(&count[0]),
        m(&count[1]),
        calls[2],
        m(&guarded[0]),
        m(&guarded[1]),
        calls[3],
        cached_calls.load(Relaxed),
    );
    // Same workload, same L1 share: the two-tier contenders should hit L1 alike (each L1 miss is one
    // GET), so that the throughput ratio measures the code, not the hit ratio.
    let cmds = |c: &Option<WarmCmds>| {
        c.as_ref().map_or((String::new(), 0.0), |c| {
            (c.breakdown(), c.l1_hit_ratio(ops) * 100.0)
        })
    };
    let (c_ours, c_same, c_count, c_guarded) = (
        cmds(&last_cmds[0]),
        cmds(&last_cmds[1]),
        cmds(&last_cmds[2]),
        cmds(&last_cmds[3]),
    );
    println!(
        "zipf warm pass, Redis commands: tiered-cache [{}] (L1 hit ratio {:.1}%); hand-written, L1 \
         as ours [{}] ({:.1}%); hand-written, count-bounded [{}] ({:.1}%); hand-written with the \
         guards [{}] ({:.1}%); cached [{}]",
        c_ours.0,
        c_ours.1,
        c_same.0,
        c_same.1,
        c_count.0,
        c_count.1,
        c_guarded.0,
        c_guarded.1,
        cached_cmds.breakdown(),
    );
    let hand = |what: &str, v: &Vec<f64>| format!("hand-written, {what}: {}", kops(m(v)));
    // "from empty / warm" throughputs of one contender.
    let both = |v: &[Vec<f64>; 2]| format!("{} / {}", kops(m(&v[0])), kops(m(&v[1])));
    vec![
        Row::new(
            format!("Zipf, {ops} ops from empty: vs hand-written two-tier, L1 configured as ours"),
            kops(m(&ours[0])),
            hand("L1 as ours", &same[0]),
        )
        .rounds(&ours[0], &same[0], 0.85, false),
        Row::new(
            format!("Zipf, next {ops} ops (warm): vs hand-written two-tier, L1 configured as ours"),
            kops(m(&ours[1])),
            hand("L1 as ours", &same[1]),
        )
        .rounds(&ours[1], &same[1], 0.85, false),
        Row::new(
            "(for reference) Zipf from empty: vs hand-written, count-bounded L1",
            kops(m(&ours[0])),
            hand("count-bounded", &count[0]),
        )
        .info(m(&ours[0]) / m(&count[0])),
        Row::new(
            "(for reference) Zipf warm: vs hand-written, count-bounded L1",
            kops(m(&ours[1])),
            hand("count-bounded", &count[1]),
        )
        .info(m(&ours[1]) / m(&count[1])),
        Row::new(
            "(for reference) Zipf from empty / warm: vs `cached` AsyncRedisCache (no L1)",
            both(&ours),
            format!("`cached`: {} / {}", kops(cached_cold), kops(cached_warm)),
        )
        .info(m(&ours[1]) / cached_warm),
        // What the race guard's Redis protocol (a leasing read and a compare-and-set per load)
        // costs a hand-written two-tier, and how ours compares with that.
        Row::new(
            "(for reference) Zipf from empty / warm: hand-written, L1 as ours, with the race guard's protocol (GET, SET NX GET lease, compare-and-set script)",
            both(&guarded),
            format!("without: {}", both(&same)),
        )
        .info(m(&guarded[1]) / m(&same[1])),
        Row::new(
            "(for reference) Zipf from empty / warm: vs that guarded hand-written",
            both(&ours),
            format!("guarded hand-written: {}", both(&guarded)),
        )
        .info(m(&ours[1]) / m(&guarded[1])),
        Row::new(
            "(for reference) Zipf warm: CPU per operation, client / redis-server",
            format!("{:.2} / {:.2} µs", cpu_ours.0, cpu_ours.1),
            format!(
                "hand-written, L1 as ours: {:.2} / {:.2} µs; with the guards: {:.2} / {:.2} µs",
                cpu_same.0, cpu_same.1, cpu_guarded.0, cpu_guarded.1
            ),
        )
        .info((cpu_ours.0 + cpu_ours.1) / (cpu_same.0 + cpu_same.1)),
        Row::new(
            "Zipf: loader calls (both passes, all rounds)",
            calls[0].to_string(),
            format!(
                "hand-written as ours: {}, count-bounded: {}, guarded: {}, `cached` (one round): {}",
                calls[1],
                calls[2],
                calls[3],
                cached_calls.load(Relaxed)
            ),
        ),
    ]
}

// ---- Batches ------------------------------------------------------------------------------------

/// Keys per batch in the batch rows.
const BATCH: usize = 100;

async fn raw_mget_decode(c: &MultiplexedConnection, keys: &[String]) -> Vec<ApiResponse> {
    let mut c = c.clone();
    let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(keys)
        .query_async(&mut c)
        .await
        .expect("raw MGET");
    got.into_iter()
        .map(|b| rmp_serde::from_slice(&b.expect("raw key present")).expect("raw decode"))
        .collect()
}

async fn batches(plan: &Plan, url: &str) -> Vec<Row> {
    let cache = cache(Some(url), "cmp-batch", 64 << 20).await;
    let conn = raw_conn(url).await;
    let keys: Vec<String> = (0..BATCH).map(|i| format!("b{i}")).collect();
    let raw_keys: Vec<String> = keys.iter().map(|k| format!("raw:{k}")).collect();
    for (i, (k, raw)) in keys.iter().zip(&raw_keys).enumerate() {
        let value = api_response(i as u64);
        cache.set("remote", k, value.clone()).await;
        cache.set(Kind::API_RESPONSE, k, value.clone()).await;
        let mut c = conn.clone();
        let _: () = redis::cmd("SET")
            .arg(raw)
            .arg(rmp_serde::to_vec_named(&value).expect("encode"))
            .query_async(&mut c)
            .await
            .expect("raw SET");
    }
    let moka = same_config_moka(64 << 20);
    for (i, k) in keys.iter().enumerate() {
        moka.insert(
            format!("cmp-batch:v1:api_response:{k}"),
            Arc::new(api_response(i as u64)),
        )
        .await;
    }
    let moka_keys: Vec<String> = keys
        .iter()
        .map(|k| format!("cmp-batch:v1:api_response:{k}"))
        .collect();

    // (1) 100 keys all in L2 (an L2-only kind): `get_many` against one raw MGET + decode, batches
    // per second, one task. (2) 100 keys all in L1: `get_many` against 100 gets of a moka
    // configured as L1, thread CPU time per batch.
    let n = (plan.l2_ops_1 / 10).max(20);
    let m = (plan.l1_ops / BATCH).max(20);
    let (mut l2_raw, mut l2_ours, mut l1_raw, mut l1_ours) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=plan.rounds {
        for j in 0..2 {
            let ours_turn = (round + j) % 2 == 1;
            let t = Instant::now();
            for _ in 0..n {
                if ours_turn {
                    let got = cache.get_many::<ApiResponse>("remote", &keys).await;
                    assert!(got.iter().all(Option::is_some), "an L2 batch missed");
                    black_box(got);
                } else {
                    black_box(raw_mget_decode(&conn, &raw_keys).await);
                }
            }
            let l2 = n as f64 / t.elapsed().as_secs_f64();
            let t = thread_cpu();
            for _ in 0..m {
                if ours_turn {
                    let got = cache
                        .get_many::<ApiResponse>(Kind::API_RESPONSE, black_box(&keys))
                        .await;
                    black_box(got);
                } else {
                    for k in &moka_keys {
                        black_box(moka.get(black_box(k.as_str())).await);
                    }
                }
            }
            let l1 = (thread_cpu() - t).as_nanos() as f64 / m as f64;
            if round > 0 {
                if ours_turn {
                    l2_ours.push(l2);
                    l1_ours.push(l1);
                } else {
                    l2_raw.push(l2);
                    l1_raw.push(l1);
                }
            }
        }
    }
    let kind = &cache.stats().kinds[Kind::API_RESPONSE.name()];
    assert_eq!(
        kind.l1.misses, 0,
        "every L1 batch read must have been L1 hits"
    );

    // (3) 100 keys cached nowhere: one loader call, and the Redis commands of the batch.
    let mut c = conn.clone();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await
        .expect("CONFIG RESETSTAT");
    let loader_calls = AtomicU64::new(0);
    let cold: Vec<String> = (0..BATCH).map(|i| format!("cold{i}")).collect();
    let got = cache
        .get_or_load_many(Kind::API_RESPONSE, &cold, |missing: Vec<String>| {
            loader_calls.fetch_add(1, Relaxed);
            async move {
                let found: std::collections::HashMap<String, ApiResponse> = missing
                    .into_iter()
                    .enumerate()
                    .map(|(i, k)| (k, api_response(i as u64)))
                    .collect();
                Ok::<_, Infallible>(found)
            }
        })
        .await
        .expect("infallible loader");
    assert!(got.iter().all(Option::is_some));
    let cmds = WarmCmds(command_calls(&mut c).await);
    let (mget, set, evalsha) = (cmds.calls("mget"), cmds.calls("set"), cmds.calls("evalsha"));
    let loader_calls = loader_calls.load(Relaxed);
    let md = |v: &Vec<f64>| median(v.clone());
    println!(
        "batches of {BATCH}: all in L2, batches/s: get_many {:.0}, raw MGET + decode {:.0}; all in \
         L1, ns per batch: get_many {:.0}, {BATCH} moka gets {:.0}; all missing: {loader_calls} \
         loader call(s), Redis [{}]",
        md(&l2_ours),
        md(&l2_raw),
        md(&l1_ours),
        md(&l1_raw),
        cmds.breakdown(),
    );
    vec![
        Row::new(
            format!("{BATCH} keys all in L2: `get_many` (batches/s)"),
            format!("{:.0}/s", md(&l2_ours)),
            format!("one raw MGET + decode: {:.0}/s", md(&l2_raw)),
        )
        .rounds(&l2_ours, &l2_raw, 0.9, false),
        Row::new(
            format!("{BATCH} keys all in L1: `get_many`"),
            ns(md(&l1_ours)),
            format!("{BATCH} gets of moka configured as L1: {}", ns(md(&l1_raw))),
        )
        .rounds(&l1_ours, &l1_raw, 1.3, true),
        Row::new(
            format!("{BATCH} keys cached nowhere: `get_or_load_many`"),
            format!("{loader_calls} loader call; MGET {mget}, SET {set}, EVALSHA {evalsha}"),
            "1 loader call; 1 MGET; leases and compare-and-sets pipelined",
        )
        // A lease (SET NX GET) per key, then one compare-and-set script per key, whose own SET
        // counts too: 2 SETs a key. One pipeline each (`entry_store::read_many`, `write_many`).
        .check(
            "1 loader call, 1 MGET, 100 leases + 100 CAS",
            loader_calls == 1 && mget == 1 && evalsha == BATCH as u64 && set == 2 * BATCH as u64,
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
    // Where the time goes: CPU of this process (the client) and of redis-server, per contender.
    let (mut ours_cpu, mut raw_cpu) = (Vec::new(), Vec::new());
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
        let (r0, c0) = (redis_cpu_ms(&mut conn).await, process_cpu());
        let t = Instant::now();
        let report = cache.warm_with(plan_w).await;
        let ours = t.elapsed().as_secs_f64() * 1e3;
        let cpu = (
            (process_cpu() - c0).as_secs_f64() * 1e3,
            redis_cpu_ms(&mut conn).await - r0,
        );
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
        let (r0, c0) = (redis_cpu_ms(&mut conn).await, process_cpu());
        let t = Instant::now();
        let _: () = p.query_async(&mut conn).await.expect("raw pipeline");
        let raw = t.elapsed().as_secs_f64() * 1e3;
        let rcpu = (
            (process_cpu() - c0).as_secs_f64() * 1e3,
            redis_cpu_ms(&mut conn).await - r0,
        );
        written = Some(bytes);
        if round > 0 {
            ours_ms.push(ours);
            raw_ms.push(raw);
            ours_cpu.push(cpu);
            raw_cpu.push(rcpu);
        }
    }
    flushall(url).await;
    let (ours, raw) = (median(ours_ms.clone()), median(raw_ms.clone()));
    let part = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    let (oc, orc) = (part(&ours_cpu, |c| c.0), part(&ours_cpu, |c| c.1));
    let (rc, rrc) = (part(&raw_cpu, |c| c.0), part(&raw_cpu, |c| c.1));
    println!(
        "warm of {n}: warm_with {ours:.1} ms, raw pipelined SET {raw:.1} ms; CPU (client / \
         redis-server): warm_with {oc:.1} / {orc:.1} ms, raw pipeline {rc:.1} / {rrc:.1} ms"
    );
    vec![
        Row::new(
            format!("`warm_with` of {n} entries (L1 + L2)"),
            ms(ours),
            format!("one raw pipeline of {n} SETs, same bytes: {}", ms(raw)),
        )
        .rounds(&ours_ms, &raw_ms, 1.3, true),
        // The leases and compare-and-sets of the race guard are Redis work the raw pipeline does
        // not do: this row shows that floor.
        Row::new(
            format!("(for reference) redis-server CPU during `warm_with` of {n}"),
            ms(orc),
            format!("during the raw pipeline: {}", ms(rrc)),
        )
        .info(orc / rrc),
        Row::new(
            format!("(for reference) client CPU during `warm_with` of {n}"),
            ms(oc),
            format!("during the raw pipeline: {}", ms(rc)),
        )
        .info(oc / rc),
    ]
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
