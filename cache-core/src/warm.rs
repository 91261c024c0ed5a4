//! Warming: fill the cache at startup, before traffic arrives.
//!
//! [`Cache::warm`] runs every zero-argument `#[cached(..., warm)]` function;
//! [`Cache::warm_with`] also runs a [`WarmPlan`]: entries of a kind, each a key with its loader,
//! and free-form tasks. Whatever runs:
//!
//! - at most [`WarmPlan::concurrency`] loaders, functions or tasks are in flight at once;
//! - each has its own deadline ([`WarmPlan::timeout`]); a warmer that fails, times out or panics
//!   is reported and never stops the others;
//! - entries are handled in batches of up to 128 keys: one MGET tells which are already fresh in
//!   L2 (those are copied into L1 and their loaders are not called), and the values that were
//!   loaded are written back with pipelined SETs;
//! - progress goes to `tracing`: one `info` line per warmer, one `debug` line per batch.

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::cache::{unix_ms, Inner, KindEntry};
use crate::codec::{self, CodecError, Header, TagVersion};
use crate::jitter;
use crate::l2::{L2Error, L2};
use crate::refresh::Age;
use crate::stats::KindStats;
use crate::{key, tags, Cache, EntryOptions};

/// Default of [`WarmPlan::concurrency`].
pub const DEFAULT_WARM_CONCURRENCY: usize = 8;
/// Default of [`WarmPlan::timeout`].
pub const DEFAULT_WARM_TIMEOUT: Duration = Duration::from_secs(30);

/// What to warm, and how: entries with their loaders, tasks, and the `#[cached(..., warm)]`
/// functions.
///
/// ```
/// use cache_core::{Cache, Kind, WarmPlan};
/// use std::time::Duration;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = Cache::builder().build().await?;
/// let plan = WarmPlan::new()
///     .concurrency(4)
///     .timeout(Duration::from_secs(5))
///     // Each entry: a key and the loader that produces its value (called only when the key is
///     // not already fresh in the cache).
///     .entries(
///         Kind::DATABASE_QUERY,
///         (1..=3u64).map(|id| {
///             (format!("user:{id}"), move || async move {
///                 Ok::<_, std::io::Error>(format!("user {id}"))
///             })
///         }),
///     )
///     // Anything else that fills the cache.
///     .task("countries", {
///         let cache = cache.clone();
///         async move {
///             cache.set(Kind::STATIC_DATA, "countries", vec!["fr", "jp"]).await;
///             Ok::<_, std::io::Error>(())
///         }
///     });
/// let report = cache.warm_with(plan).await;
/// assert_eq!(report.warmed, 4);
/// assert!(report.failed.is_empty());
/// let user: Option<std::sync::Arc<String>> = cache.get(Kind::DATABASE_QUERY, "user:2").await;
/// assert_eq!(user.as_deref().map(String::as_str), Some("user 2"));
/// # Ok::<_, cache_core::Error>(())
/// # }).unwrap();
/// ```
#[must_use]
pub struct WarmPlan<'a> {
    warmers: Vec<String>,
    jobs: Vec<Job<'a>>,
    concurrency: usize,
    timeout: Duration,
    registered: bool,
}

/// One unit of scheduling: a batch of entries, a task or a registered function.
struct Job<'a> {
    warmer: usize,
    run: Box<dyn FnOnce(Arc<Ctx>) -> BoxFuture<'a, Outcome> + Send + 'a>,
}

/// Shared by the jobs of one `warm_with` call.
struct Ctx {
    inner: Arc<Inner>,
    permits: Semaphore,
    timeout: Duration,
}

/// What one job did.
#[derive(Default)]
struct Outcome {
    warmer: usize,
    /// When the job began (set by `warm_with`).
    started: Option<Instant>,
    warmed: u64,
    already_hot: u64,
    l2_write_errors: u64,
    failed: Vec<WarmFailure>,
}

impl std::fmt::Debug for WarmPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPlan")
            .field("warmers", &self.warmers)
            .field("batches", &self.jobs.len())
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("registered", &self.registered)
            .finish()
    }
}

impl Default for WarmPlan<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> WarmPlan<'a> {
    /// An empty plan: only the `#[cached(..., warm)]` functions, 8 at a time, 30 s each.
    pub fn new() -> Self {
        Self {
            warmers: Vec::new(),
            jobs: Vec::new(),
            concurrency: DEFAULT_WARM_CONCURRENCY,
            timeout: DEFAULT_WARM_TIMEOUT,
            registered: true,
        }
    }

    /// The most loaders, functions and tasks running at once (a value of 0 means 1).
    /// Default: 8.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The deadline of one warmer: one entry's loader, one task or one `#[cached(..., warm)]`
    /// function. One that runs longer is cancelled and reported as timed out. Default: 30 s.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Whether the zero-argument `#[cached(..., warm)]` functions of the program run too. They fill
    /// the cache they are bound to (the installed one unless they name `cache = ...`), which need not
    /// be the cache `warm_with` is called on. Default: `true`.
    pub fn registered(mut self, on: bool) -> Self {
        self.registered = on;
        self
    }

    /// Entries of `kind` with the kind's TTL and no tags: each item is a key and the loader that
    /// produces its value. A loader is called only when its key is not already fresh in L1 or L2.
    pub fn entries<T, E, K, F, Fut, I>(self, kind: impl AsRef<str>, entries: I) -> Self
    where
        I: IntoIterator<Item = (K, F)>,
        K: Into<String>,
        F: FnOnce() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, E>> + Send + 'a,
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Display + Send + 'a,
    {
        self.entries_with(kind, EntryOptions::default(), entries)
    }

    /// [`entries`](Self::entries) with options (TTL, tags) applied to every entry.
    pub fn entries_with<T, E, K, F, Fut, I>(
        mut self,
        kind: impl AsRef<str>,
        opts: EntryOptions,
        entries: I,
    ) -> Self
    where
        I: IntoIterator<Item = (K, F)>,
        K: Into<String>,
        F: FnOnce() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, E>> + Send + 'a,
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Display + Send + 'a,
    {
        let kind: Arc<str> = Arc::from(kind.as_ref());
        let opts = Arc::new(opts);
        let warmer = self.warmers.len();
        self.warmers.push(format!("entries({kind})"));
        let mut all: Vec<(String, F)> = entries.into_iter().map(|(k, f)| (k.into(), f)).collect();
        while !all.is_empty() {
            let rest = all.split_off(all.len().min(L2::MANY_CHUNK_KEYS));
            let batch = std::mem::replace(&mut all, rest);
            let (kind, opts) = (kind.clone(), opts.clone());
            self.jobs.push(Job {
                warmer,
                run: Box::new(move |ctx| warm_batch(ctx, warmer, kind, opts, batch).boxed()),
            });
        }
        self
    }

    /// Any other warming work, named `name` in the report: it runs under the concurrency bound and
    /// the timeout like a loader.
    pub fn task<E, Fut>(mut self, name: impl Into<String>, task: Fut) -> Self
    where
        Fut: Future<Output = Result<(), E>> + Send + 'a,
        E: Display + Send + 'a,
    {
        let warmer = self.warmers.len();
        let name = name.into();
        self.warmers.push(name.clone());
        self.jobs.push(Job {
            warmer,
            run: Box::new(move |ctx| {
                async move {
                    let res =
                        guarded(&ctx, async move { task.await.map_err(|e| e.to_string()) }).await;
                    one_outcome(warmer, &name, res)
                }
                .boxed()
            }),
        });
        self
    }

    fn add_registered(&mut self) {
        for w in crate::macro_support::warmers() {
            let warmer = self.warmers.len();
            self.warmers.push(w.name.to_owned());
            let run = w.run;
            let name = w.name;
            self.jobs.push(Job {
                warmer,
                run: Box::new(move |ctx| {
                    async move {
                        let res = guarded(&ctx, run()).await;
                        one_outcome(warmer, name, res)
                    }
                    .boxed()
                }),
            });
        }
    }
}

/// Why one warmer, or one entry of it, failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WarmFailure {
    /// The warmer: `entries(kind)`, a task's name, or a `#[cached]` function's path.
    pub warmer: String,
    /// The entry's key, for entries.
    pub key: Option<String>,
    /// The loader's error, "timed out after …", or "panicked: …".
    pub reason: String,
    /// Whether it was cancelled at the deadline.
    pub timed_out: bool,
}

/// One warmer's summary in a [`WarmReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WarmerSummary {
    /// The warmer's name (see [`WarmFailure::warmer`]).
    pub name: String,
    /// Entries loaded and stored, or 1 for a function or task that completed.
    pub warmed: u64,
    /// Entries already fresh in L1 or L2 (their loader was not called).
    pub already_hot: u64,
    /// Entries, functions or tasks that failed or timed out.
    pub failed: u64,
}

/// What [`Cache::warm`] / [`Cache::warm_with`] did. Serializable (e.g. as the answer of an admin
/// endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WarmReport {
    /// Entries loaded and stored, plus functions and tasks that completed.
    pub warmed: u64,
    /// Entries already fresh in L1 or L2: copied into L1, loader not called.
    pub already_hot: u64,
    /// Everything that failed, timed out or panicked, with the reason.
    pub failed: Vec<WarmFailure>,
    /// Loaded values that could not be written to L2 (they are in L1; L2 was down, or its breaker
    /// open).
    pub l2_write_errors: u64,
    /// Wall time of the whole warm-up, in milliseconds.
    pub duration_ms: u64,
    /// Per warmer, in the order they were added (registered functions last).
    pub warmers: Vec<WarmerSummary>,
}

impl Cache {
    /// Runs every zero-argument `#[cached(..., warm)]` function of the program, 8 at a time, each
    /// with a 30 s deadline. Same as `warm_with(WarmPlan::new())`.
    ///
    /// Failures are reported, never returned or raised: warming is an optimization.
    pub async fn warm(&self) -> WarmReport {
        self.warm_with(WarmPlan::new()).await
    }

    /// Runs `plan` (and, unless [`WarmPlan::registered`] turned them off, the `#[cached(..., warm)]`
    /// functions) and reports what happened.
    ///
    /// # Entries
    /// In batches of up to 128 keys of one kind: keys fresh in L1 are skipped; one MGET reads the
    /// others from L2, and fresh values (whose tags are still current) are copied into L1 without
    /// calling their loader. The remaining loaders run under the concurrency bound and the timeout;
    /// their values go to L1 and, in one pipeline of SETs per batch, to L2. Like [`set`](Self::set),
    /// a warm write replaces what L2 holds; a value whose key was invalidated on this instance
    /// while it loaded is dropped instead. When L2 could not be read, values go to L1 only.
    ///
    /// # Failures
    /// A loader error, a timeout or a panic is recorded in [`WarmReport::failed`]; the other
    /// warmers go on.
    pub async fn warm_with(&self, plan: WarmPlan<'_>) -> WarmReport {
        let started = Instant::now();
        let mut plan = plan;
        let Some(inner) = self.downgrade().upgrade() else {
            return WarmReport::default();
        };
        if !inner.enabled {
            tracing::info!("caching is disabled: nothing to warm");
            return WarmReport::default();
        }
        if plan.registered {
            plan.add_registered();
        }
        let WarmPlan {
            warmers,
            jobs,
            concurrency,
            timeout,
            ..
        } = plan;
        let mut report = WarmReport {
            warmers: warmers
                .iter()
                .map(|name| WarmerSummary {
                    name: name.clone(),
                    ..WarmerSummary::default()
                })
                .collect(),
            ..WarmReport::default()
        };
        let mut pending = vec![0usize; warmers.len()];
        for j in &jobs {
            pending[j.warmer] += 1;
        }
        let mut first_start: Vec<Option<Instant>> = vec![None; warmers.len()];
        tracing::info!(
            warmers = warmers.len(),
            concurrency,
            ?timeout,
            "warming the cache"
        );
        let ctx = Arc::new(Ctx {
            inner,
            permits: Semaphore::new(concurrency),
            timeout,
        });
        // At most `concurrency` jobs at once (a batch holds no permit itself; its loaders do).
        let mut jobs = jobs.into_iter();
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < concurrency {
                let Some(job) = jobs.next() else { break };
                running.push(run_job(ctx.clone(), job));
            }
            let Some(o) = running.next().await else {
                break;
            };
            let first = &mut first_start[o.warmer];
            *first = match (*first, o.started) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let s = &mut report.warmers[o.warmer];
            s.warmed += o.warmed;
            s.already_hot += o.already_hot;
            s.failed += o.failed.len() as u64;
            report.warmed += o.warmed;
            report.already_hot += o.already_hot;
            report.l2_write_errors += o.l2_write_errors;
            report.failed.extend(o.failed);
            pending[o.warmer] -= 1;
            if pending[o.warmer] == 0 {
                let s = &report.warmers[o.warmer];
                let took = first_start[o.warmer]
                    .map(|t| t.elapsed())
                    .unwrap_or_default();
                tracing::info!(
                    warmer = %s.name,
                    warmed = s.warmed,
                    already_hot = s.already_hot,
                    failed = s.failed,
                    ?took,
                    "warmer done"
                );
            }
        }
        drop(running);
        report.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            warmed = report.warmed,
            already_hot = report.already_hot,
            failed = report.failed.len(),
            l2_write_errors = report.l2_write_errors,
            duration_ms = report.duration_ms,
            "warming done"
        );
        report
    }
}

async fn run_job(ctx: Arc<Ctx>, job: Job<'_>) -> Outcome {
    let began = Instant::now();
    let mut o = (job.run)(ctx).await;
    o.started = Some(began);
    o
}

/// Runs `fut` holding a concurrency permit, under the deadline, catching a panic.
/// `Err((reason, timed_out))` on failure.
async fn guarded<T, Fut>(ctx: &Ctx, fut: Fut) -> Result<T, (String, bool)>
where
    Fut: Future<Output = Result<T, String>>,
{
    // The semaphore is never closed, so `acquire` cannot fail; without a permit, run anyway.
    let _permit = ctx.permits.acquire().await.ok();
    match tokio::time::timeout(ctx.timeout, AssertUnwindSafe(fut).catch_unwind()).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err((e, false)),
        Ok(Err(panic)) => Err((format!("panicked: {}", panic_message(&*panic)), false)),
        Err(_) => Err((format!("timed out after {:?}", ctx.timeout), true)),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The outcome of a task or function.
fn one_outcome(warmer: usize, name: &str, res: Result<(), (String, bool)>) -> Outcome {
    match res {
        Ok(()) => Outcome {
            warmer,
            warmed: 1,
            ..Outcome::default()
        },
        Err((reason, timed_out)) => {
            tracing::warn!(warmer = name, %reason, "warmer failed");
            Outcome {
                warmer,
                failed: vec![WarmFailure {
                    warmer: name.to_owned(),
                    key: None,
                    reason,
                    timed_out,
                }],
                ..Outcome::default()
            }
        }
    }
}

fn kind_entry<'i>(inner: &'i Inner, kind: &str) -> &'i Arc<KindEntry> {
    match inner.kinds.get(kind) {
        Some(k) => k,
        None => {
            if !inner.warned_unregistered.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    kind,
                    "kind is not registered: using the default TTL of {:?}; register it with CacheBuilder::kind",
                    inner.unregistered.cfg.ttl()
                );
            }
            &inner.unregistered
        }
    }
}

fn count_l2_error(ke: &KindEntry, e: &L2Error) {
    match e {
        L2Error::Skipped => KindStats::inc(&ke.stats.l2_skipped),
        L2Error::Timeout => KindStats::inc(&ke.stats.l2_timeouts),
        L2Error::Redis(err) => {
            KindStats::inc(&ke.stats.l2_errors);
            tracing::debug!(kind = %ke.name, error = %err, "L2 operation failed while warming");
        }
    }
}

/// One entry of a batch on its way.
struct Pending<F> {
    key: String,
    full: String,
    g0: u64,
    loader: Option<F>,
}

/// Warms one batch of entries of one kind (see [`Cache::warm_with`]).
async fn warm_batch<T, E, F, Fut>(
    ctx: Arc<Ctx>,
    warmer: usize,
    kind: Arc<str>,
    opts: Arc<EntryOptions>,
    batch: Vec<(String, F)>,
) -> Outcome
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Display + Send,
{
    let started = Instant::now();
    let inner = &*ctx.inner;
    let ke = kind_entry(inner, &kind);
    let routing = ke.cfg.tier_routing();
    let mut out = Outcome {
        warmer,
        ..Outcome::default()
    };
    let mut cold: Vec<Pending<F>> = Vec::with_capacity(batch.len());
    for (key, loader) in batch {
        let full = key::full_key(&inner.prefix, &kind, &key);
        // As a load does: the generation before looking at L2 or calling the loader.
        let g0 = inner.gens.snapshot(&full);
        if routing.l1() && l1_fresh::<T>(inner, &full).await {
            out.already_hot += 1;
            continue;
        }
        cold.push(Pending {
            key,
            full,
            g0,
            loader: Some(loader),
        });
    }
    // Not while invalidations made during an outage wait for replay: L2 may still hold what they
    // invalidated, and writes resume only after them.
    let l2 = inner
        .l2
        .as_ref()
        .filter(|_| routing.l2() && inner.pending.is_empty());
    // Whether L2 may be written: only after it could be read (as in a load's write-back).
    let mut write_l2 = l2.is_some();
    if let (Some(l2), false) = (l2, cold.is_empty()) {
        let keys: Vec<String> = cold.iter().map(|p| p.full.clone()).collect();
        match l2
            .get_many(&keys)
            .instrument(tracing::debug_span!("l2.get_many", kind = %ke.name, keys = keys.len()))
            .await
        {
            Ok(values) => {
                let hot = pull_hot::<T, F>(inner, ke, l2, &mut cold, values, started).await;
                out.already_hot += hot.0;
                write_l2 = hot.1;
            }
            Err(e) => {
                count_l2_error(ke, &e);
                write_l2 = false;
            }
        }
    }
    cold.retain(|p| p.loader.is_some());
    let hot_count = out.already_hot;

    // Tag versions of the entries about to be loaded, read before the loaders run.
    let mut tag_versions: Vec<TagVersion> =
        opts.tag_list().iter().map(|t| (t.clone(), 0)).collect();
    if let (Some(l2), true, false) = (l2, write_l2, opts.tag_list().is_empty() || cold.is_empty()) {
        let keys: Vec<String> = opts
            .tag_list()
            .iter()
            .map(|t| tags::version_key(&inner.prefix, t))
            .collect();
        match l2
            .get_versions(&keys)
            .instrument(tracing::debug_span!("l2.get_versions", kind = %ke.name, tags = keys.len()))
            .await
        {
            Ok(v) => {
                for (tv, v) in tag_versions.iter_mut().zip(v) {
                    tv.1 = v;
                }
            }
            Err(e) => {
                count_l2_error(ke, &e);
                write_l2 = false;
            }
        }
    }

    // Run the loaders (the concurrency bound is the shared semaphore).
    let name = format!("entries({kind})");
    let in_flight = FuturesUnordered::new();
    for (i, p) in cold.iter_mut().enumerate() {
        if let Some(loader) = p.loader.take() {
            in_flight.push(load_one(&ctx, ke, i, loader));
        }
    }
    let loads: Vec<_> = in_flight.collect().await;

    // Encode what was loaded; drop what an invalidation superseded meanwhile.
    let jitter = ke.cfg.jitter().unwrap_or(inner.ttl_jitter);
    let mut loaded: Vec<(usize, Instant, Arc<T>, usize, Duration)> = Vec::new();
    let mut writes: Vec<(String, Vec<u8>, Duration)> = Vec::new();
    let mut write_sizes: Vec<(usize, usize)> = Vec::new();
    for (i, loaded_at, res) in loads {
        let p = &cold[i];
        let value = match res {
            Ok(v) => Arc::new(v),
            Err((reason, timed_out)) => {
                KindStats::inc(&ke.stats.loader_errors);
                tracing::debug!(kind = %ke.name, key = %p.key, %reason, "warm loader failed");
                out.failed.push(WarmFailure {
                    warmer: name.clone(),
                    key: Some(p.key.clone()),
                    reason,
                    timed_out,
                });
                continue;
            }
        };
        out.warmed += 1;
        // Warming writes many entries at once: the jitter keeps them from expiring at once.
        let ttl = jitter::jittered(
            opts.ttl_for(&*value).unwrap_or_else(|| ke.cfg.ttl()),
            jitter,
        );
        if inner.gens.snapshot(&p.full) != p.g0 {
            // Invalidated (or set) while loading: the value may be stale; keep neither copy.
            continue;
        }
        let payload = match codec::to_msgpack(&*value) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(kind = %ke.name, error = %e, "value cannot be serialized: kept in L1 only");
                None
            }
        };
        let size = crate::heap_size::heap_bytes(&*value);
        if let (true, Some(payload)) = (write_l2, payload.as_ref()) {
            let now_ms = unix_ms();
            let header = Header {
                created_at_ms: now_ms,
                fresh_until_ms: now_ms.saturating_add(ttl.as_millis() as u64),
                type_fp: codec::type_fingerprint::<T>(),
                nonce: rand::random(),
            };
            match codec::seal(&inner.codec, &header, &tag_versions, payload) {
                Ok(bytes) => {
                    write_sizes.push((bytes.len(), payload.len()));
                    writes.push((p.full.clone(), bytes, ttl + inner.grace));
                }
                Err(CodecError::TooLarge { size, max }) => {
                    KindStats::inc(&ke.stats.oversized);
                    tracing::debug!(kind = %ke.name, size, max, "value over the maximum size: not written to L2");
                }
                Err(e) => tracing::warn!(kind = %ke.name, error = %e, "value cannot be encoded"),
            }
        }
        loaded.push((i, loaded_at, value, size, ttl));
    }

    // One pipeline (per 128 keys / 1 MiB) for the batch.
    if let (Some(l2), false) = (l2, writes.is_empty()) {
        match l2
            .set_many(&writes)
            .instrument(tracing::debug_span!("l2.set_many", kind = %ke.name, keys = writes.len()))
            .await
        {
            Ok(()) => {
                let overhead = codec::envelope_overhead(&tag_versions);
                for (stored, raw) in &write_sizes {
                    KindStats::inc(&ke.stats.l2_writes);
                    KindStats::add(&ke.stats.l2_bytes_written, *stored as u64);
                    KindStats::add(&ke.stats.l2_raw_bytes_written, *raw as u64);
                    KindStats::add(
                        &ke.stats.l2_payload_bytes_written,
                        stored.saturating_sub(overhead) as u64,
                    );
                }
            }
            Err(e) => {
                count_l2_error(ke, &e);
                out.l2_write_errors += writes.len() as u64;
            }
        }
    }
    if routing.l1() {
        let tag_names: Vec<String> = opts.tag_list().to_vec();
        for (i, loaded_at, value, size, ttl) in loaded {
            let p = &cold[i];
            store_l1(
                inner,
                ke,
                &p.full,
                value,
                size,
                ttl,
                &tag_names,
                p.g0,
                loaded_at,
                Age::starting_now(ttl),
            )
            .await;
        }
    }
    tracing::debug!(
        kind = %ke.name,
        hot = hot_count,
        loaded = out.warmed,
        failed = out.failed.len(),
        took = ?started.elapsed(),
        "warm batch done"
    );
    out
}

/// Calls one loader (under the permit and the deadline), counting the call.
async fn load_one<T, E, F, Fut>(
    ctx: &Ctx,
    ke: &KindEntry,
    i: usize,
    loader: F,
) -> (usize, Instant, Result<T, (String, bool)>)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let loaded_at = Instant::now();
    KindStats::inc(&ke.stats.loader_calls);
    let res = guarded(
        ctx,
        async move { loader().await.map_err(|e| e.to_string()) },
    )
    .await;
    (i, loaded_at, res)
}

/// Whether L1 holds a fresh `T` under `full`.
async fn l1_fresh<T: Send + Sync + 'static>(inner: &Inner, full: &str) -> bool {
    let Some(entry) = inner.l1.get(full).await else {
        return false;
    };
    if !entry.holds::<T>() {
        return false;
    }
    let tag_invalidated = entry
        .tags()
        .is_some_and(|(tags, at)| inner.local_tags.invalidated_since(tags, at));
    !tag_invalidated && (inner.grace.is_zero() || entry.is_fresh(Instant::now()))
}

/// Decodes the MGET answers; fresh values whose tags are current go into L1 and lose their loader
/// (`cold[i].loader = None`). Returns how many, and whether L2 may still be written (false when
/// tag versions could not be read).
async fn pull_hot<T, F>(
    inner: &Inner,
    ke: &KindEntry,
    l2: &L2,
    cold: &mut [Pending<F>],
    values: Vec<Option<Vec<u8>>>,
    read_at: Instant,
) -> (u64, bool)
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let now_ms = unix_ms();
    let mut fresh: Vec<(usize, codec::Decoded<T>)> = Vec::new();
    for (i, bytes) in values.into_iter().enumerate() {
        let Some(bytes) = bytes else {
            KindStats::inc(&ke.stats.l2_misses);
            continue;
        };
        KindStats::add(&ke.stats.l2_bytes_read, bytes.len() as u64);
        match codec::decode::<T>(&inner.codec, &bytes) {
            Ok(Some(d)) if now_ms < d.header.fresh_until_ms => fresh.push((i, d)),
            // Stale, or a tombstone: load it again.
            Ok(_) => KindStats::inc(&ke.stats.l2_misses),
            Err(e) => {
                KindStats::inc(&ke.stats.decode_errors);
                KindStats::inc(&ke.stats.l2_misses);
                tracing::debug!(kind = %ke.name, error = %e, "undecodable value in L2: warming it again");
            }
        }
    }
    // Tags of the fresh values: one MGET of every version counter involved.
    let mut tag_keys: Vec<String> = fresh
        .iter()
        .flat_map(|(_, d)| {
            d.tags
                .iter()
                .map(|(t, _)| tags::version_key(&inner.prefix, t))
        })
        .collect();
    tag_keys.sort_unstable();
    tag_keys.dedup();
    let mut write_l2 = true;
    let mut current: Option<std::collections::HashMap<String, u64>> = None;
    if !tag_keys.is_empty() {
        match l2
            .get_versions(&tag_keys)
            .instrument(
                tracing::debug_span!("l2.get_versions", kind = %ke.name, tags = tag_keys.len()),
            )
            .await
        {
            Ok(v) => current = Some(tag_keys.into_iter().zip(v).collect()),
            Err(e) => {
                count_l2_error(ke, &e);
                write_l2 = false;
            }
        }
    }
    let mut hot = 0;
    for (i, d) in fresh {
        if !d.tags.is_empty() {
            let Some(current) = current.as_ref() else {
                // Cannot be checked against tag invalidations: not served, loaded again (L1 only).
                continue;
            };
            let outdated = d.tags.iter().any(|(t, v)| {
                current
                    .get(&tags::version_key(&inner.prefix, t))
                    .copied()
                    .unwrap_or(0)
                    != *v
            });
            if outdated {
                KindStats::inc(&ke.stats.l2_misses);
                KindStats::inc(&ke.stats.tag_rejections);
                continue;
            }
        }
        KindStats::inc(&ke.stats.l2_hits);
        hot += 1;
        let p = &mut cold[i];
        p.loader = None;
        if ke.cfg.tier_routing().l1() {
            let remaining = Duration::from_millis(d.header.fresh_until_ms.saturating_sub(now_ms));
            let names: Vec<String> = d.tags.into_iter().map(|(t, _)| t).collect();
            let size = crate::heap_size::heap_bytes(&d.value);
            store_l1(
                inner,
                ke,
                &p.full,
                Arc::new(d.value),
                size,
                remaining,
                &names,
                p.g0,
                read_at,
                Age {
                    created_ms: d.header.created_at_ms,
                    fresh_until_ms: d.header.fresh_until_ms,
                },
            )
            .await;
        }
    }
    (hot, write_l2)
}

/// Inserts into L1 unless superseded since `g0`, by the cache's own rules ([`Inner::store_l1`]).
#[allow(clippy::too_many_arguments)]
async fn store_l1<T: Send + Sync + 'static>(
    inner: &Inner,
    ke: &KindEntry,
    full: &str,
    value: Arc<T>,
    size: usize,
    ttl: Duration,
    tags: &[String],
    g0: u64,
    loaded_at: Instant,
    age: Age,
) {
    if inner.gens.snapshot(full) != g0 {
        return;
    }
    inner
        .store_l1(ke, full, value, size, ttl, tags, g0, loaded_at, age)
        .await;
}
