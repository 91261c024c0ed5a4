//! Warming: fill the cache at startup, before traffic arrives.
//!
//! [`Cache::warm`] runs every zero-argument `#[cached(..., warm)]` function;
//! [`Cache::warm_with`] also runs a [`WarmPlan`]: entries of a kind, each a key with its loader,
//! and free-form tasks. Whatever runs:
//!
//! - at most [`WarmPlan::concurrency`] loaders, functions or tasks are in flight at once;
//! - each has its own deadline ([`WarmPlan::timeout`]); a warmer that fails, times out or panics
//!   is reported and never stops the others;
//! - entries are handled in batches of up to 128 keys with the L2 protocol of a load, pipelined
//!   (`entries`): one pipeline of reads tells which are already fresh in L2 (those are copied into
//!   L1 and their loaders are not called) and leases the absent ones, and the values that were
//!   loaded are written back with one pipeline of compare-and-set writes;
//! - progress goes to `tracing`: one `info` line per warmer, one `debug` line per batch.

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use crate::inner::Inner;
use crate::l2::L2;
use crate::macro_support::warming;
use crate::options::EntryOptions;
use crate::Cache;
use entries::warm_batch;

mod entries;

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
    run: Box<dyn FnOnce(Arc<Ctx>) -> BoxFuture<'a, JobResult> + Send + 'a>,
}

/// Shared by the jobs of one `warm_with` call.
struct Ctx {
    inner: Arc<Inner>,
    permits: Semaphore,
    timeout: Duration,
}

/// What one job did.
#[derive(Default)]
struct JobResult {
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
            .field("jobs", &self.jobs.len())
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

    /// Whether the zero-argument `#[cached(..., warm)]` functions of the program run too. They
    /// fill the cache `warm_with` is called on (a function naming its own `cache = ...` fills
    /// that one). Default: `true`.
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
                        let cache = Cache::from_inner(ctx.inner.clone());
                        let res = guarded(&ctx, warming(cache, run())).await;
                        one_outcome(warmer, name, res)
                    }
                    .boxed()
                }),
            });
        }
    }

    /// Calls of a function, one per item of `args`, under the concurrency bound and the timeout
    /// like a loader, reported as `name`: the way to warm a `#[cached]` function that takes
    /// arguments, so that the keys warmed are exactly the ones the function reads. Inside the
    /// calls, `#[cached]` functions that name no `cache = ...` use the cache being warmed.
    ///
    /// `f` returns anything [`WarmOutput`] covers: `()` (a function returning `T` or `Option<T>`:
    /// ignore the value), or a `Result` whose `Err` is reported as a failure.
    ///
    /// ```
    /// use cache_core::{cached, Cache, WarmPlan};
    ///
    /// #[cached(kind = "database_query")]
    /// async fn price(item: u32) -> Result<u64, String> {
    ///     Ok(u64::from(item) * 100)
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder().prefix("docs-warm-calls").build().await?;
    /// let report = cache
    ///     .warm_with(WarmPlan::new().registered(false).calls("price", [1, 2, 3], price))
    ///     .await;
    /// assert_eq!(report.warmed, 3);
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn calls<A, F, Fut>(
        mut self,
        name: impl Into<String>,
        args: impl IntoIterator<Item = A>,
        f: F,
    ) -> Self
    where
        A: Send + 'a,
        F: Fn(A) -> Fut + Send + Sync + 'a,
        Fut: Future + Send + 'a,
        Fut::Output: WarmOutput,
    {
        let warmer = self.warmers.len();
        let name: Arc<str> = Arc::from(name.into());
        self.warmers.push(name.to_string());
        let f = Arc::new(f);
        for a in args {
            let (f, name) = (f.clone(), name.clone());
            self.jobs.push(Job {
                warmer,
                run: Box::new(move |ctx| {
                    async move {
                        let cache = Cache::from_inner(ctx.inner.clone());
                        let call = async move { f(a).await.outcome() };
                        let res = guarded(&ctx, warming(cache, call)).await;
                        one_outcome(warmer, &name, res)
                    }
                    .boxed()
                }),
            });
        }
        self
    }
}

/// What a warming call returns: `()` (success), or a `Result` whose `Err` is a failure.
pub trait WarmOutput {
    /// `Err` with the reason when the call failed.
    fn outcome(self) -> Result<(), String>;
}

impl WarmOutput for () {
    fn outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<T, E: Display> WarmOutput for Result<T, E> {
    fn outcome(self) -> Result<(), String> {
        self.map(drop).map_err(|e| e.to_string())
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
    /// Warms this cache: runs every zero-argument `#[cached(..., warm)]` function of the program
    /// against it (the functions use this cache, whatever the default cache is; a function
    /// naming its own `cache = ...` fills that one), 8 at a time, each with a 30 s deadline. Same
    /// as `warm_with(WarmPlan::new())`; functions with arguments are warmed with
    /// [`WarmPlan::calls`].
    ///
    /// Failures are reported, never returned or raised: warming is an optimization.
    pub async fn warm(&self) -> WarmReport {
        self.warm_with(WarmPlan::new()).await
    }

    /// Runs `plan` (and, unless [`WarmPlan::registered`] turned them off, the `#[cached(..., warm)]`
    /// functions) and reports what happened.
    ///
    /// # Entries
    /// In batches of up to 128 keys of one kind: keys fresh in L1 are skipped; one pipeline reads
    /// the others from L2 (leasing the absent ones, as a load does), and fresh values (whose tags
    /// are still current) are copied into L1 without calling their loader. The remaining loaders
    /// run under the concurrency bound and the timeout; their values go to L1 and, in one pipeline
    /// of compare-and-set writes per batch, to L2. Like a load's write-back, a warm write stores
    /// only over what the read saw: a value another instance wrote or invalidated meanwhile wins,
    /// and a value whose key was invalidated on this instance while it loaded is dropped. A value
    /// whose TTL is zero is stored nowhere. When L2 could not be read, values go to L1 only.
    ///
    /// # Failures
    /// A loader error, a timeout or a panic is recorded in [`WarmReport::failed`]; the other
    /// warmers go on.
    pub async fn warm_with(&self, plan: WarmPlan<'_>) -> WarmReport {
        let started = Instant::now();
        let mut plan = plan;
        let inner = self.inner.clone();
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

async fn run_job(ctx: Arc<Ctx>, job: Job<'_>) -> JobResult {
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
fn one_outcome(warmer: usize, name: &str, res: Result<(), (String, bool)>) -> JobResult {
    match res {
        Ok(()) => JobResult {
            warmer,
            warmed: 1,
            ..JobResult::default()
        },
        Err((reason, timed_out)) => {
            tracing::warn!(warmer = name, %reason, "warmer failed");
            JobResult {
                warmer,
                failed: vec![WarmFailure {
                    warmer: name.to_owned(),
                    key: None,
                    reason,
                    timed_out,
                }],
                ..JobResult::default()
            }
        }
    }
}
