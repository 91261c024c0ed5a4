//! Running a loader: in the caller's task (borrowed loaders, `get_or_load`), or with timeouts and
//! background completion (owned loaders, `get_or_load_owned`).
//!
//! A borrowed loader (`FnOnce() -> Fut` that may borrow from the caller) cannot outlive the call,
//! so it can neither finish in the background after a soft timeout nor be started again later for
//! an eager refresh, and its error type is the caller's own, so a timeout has no error to become.
//! An owned loader (`Send + 'static`) is boxed into an [`OwnedLoader`] and can do all of that. The
//! load path in `cache.rs` is written once over the [`Loader`] trait; the two kinds differ only in
//! [`Loader::run`] and [`Loader::into_owned`].
//!
//! Whatever ends a load (in the caller's flight or in a background task) goes through
//! [`Cache::finish_ok`] / [`Cache::finish_failed`], so the write-back guards (generation check, L2
//! compare-and-set) and the release of a distributed lock are the same on every path.

use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{unix_ms, KindEntry, L2Write};
use crate::codec::TagVersion;
use crate::error::{Error, LoadError};
use crate::key;
use crate::lock::LockGuard;
use crate::refresh::{self, Age, Claim};
use crate::stats::KindStats;
use crate::{Cache, EntryOptions};

/// A loader that can move into a spawned task.
///
/// A struct rather than a type alias of the box: an `impl Loader for Box<dyn ... + 'static>` makes
/// rustc fail to prove the spawned futures `Send` ("implementation is not general enough", from the
/// lifetimes it erases while checking auto traits); a struct's header has no lifetime to erase.
///
/// `H` is what a hard timeout reports to the callers: [`Duration`] for
/// [`Cache::get_or_load_owned`]; [`Infallible`] for callers with no error of the cache's own to
/// return (a `#[cached]` function returning `T`), whose loads have no hard timeout.
pub(crate) struct OwnedLoader<T, E, H = Duration>(
    Box<dyn FnOnce() -> BoxFuture<'static, Result<T, E>> + Send>,
    std::marker::PhantomData<fn() -> H>,
);

impl<T, E, H> OwnedLoader<T, E, H> {
    pub(crate) fn call(self) -> BoxFuture<'static, Result<T, E>> {
        (self.0)()
    }
}

/// Wraps an owned loader closure.
pub(crate) fn owned<T, E, H, F, Fut>(loader: F) -> OwnedLoader<T, E, H>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    OwnedLoader(
        Box::new(move || Box::pin(loader())),
        std::marker::PhantomData,
    )
}

/// What a hard timeout reports, if loads of this kind can have one.
#[doc(hidden)]
pub trait HardTimeout: Clone + Send + Sync + Sized + 'static {
    /// The report of a load abandoned after `after`; `None`: this caller has no hard timeout (the
    /// loader is then awaited to its end).
    fn report(after: Duration) -> Option<Self>;
}

impl HardTimeout for Duration {
    fn report(after: Duration) -> Option<Self> {
        Some(after)
    }
}

impl HardTimeout for Infallible {
    fn report(_: Duration) -> Option<Self> {
        None
    }
}

/// An owned loader made only when a load or a refresh needs it, so that a hit costs no copy of
/// what the loader captures (the `#[cached]` macro builds owned copies of borrowed arguments).
pub(crate) struct Lazy<M>(pub(crate) M);

impl<T, E, H, M> Loader<T, E> for Lazy<M>
where
    T: Serialize + Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: HardTimeout,
    M: FnOnce() -> OwnedLoader<T, E, H>,
{
    type TimedOut = H;

    fn into_owned(self) -> Result<OwnedLoader<T, E, H>, Self> {
        Ok((self.0)())
    }

    async fn run(self, cache: &Cache, job: LoadJob, t: Timeouts<T>) -> Run<T, E, H> {
        (self.0)().run(cache, job, t).await
    }
}

/// How a load through [`Cache::get_or_load_lazy`] failed.
pub(crate) enum LazyError<E, H> {
    /// The loader's error.
    Loader(Arc<E>),
    /// The load was abandoned at its hard timeout.
    TimedOut(H),
}

/// A borrowed loader, run in the caller's task.
pub(crate) struct InPlace<F>(pub(crate) F);

/// Why a load runs.
pub(crate) enum LoadMode<T> {
    /// A caller found no fresh value.
    Miss,
    /// A background refresh of `current`, written at `created_ms`; `claim` marks the key as being
    /// refreshed until the load (or its background completion) ends.
    Refresh {
        current: Arc<T>,
        created_ms: u64,
        claim: Claim,
    },
}

/// Everything needed to store a loader's result, owned so that it can move into a background task.
pub(crate) struct LoadJob {
    pub(crate) ke: Arc<KindEntry>,
    pub(crate) full: String,
    /// The entry's TTL (jitter applied), unless `ttl_fn` gives one for the loaded value.
    pub(crate) ttl: Duration,
    /// A TTL computed from the loaded value (`EntryOptions::ttl_with`, the macro's `ttl_fn`).
    pub(crate) ttl_fn: Option<crate::cache::TtlFn>,
    /// The jitter fraction applied to a TTL from `ttl_fn`.
    pub(crate) jitter: f64,
    pub(crate) tags: Vec<TagVersion>,
    /// The key's generation when the load began.
    pub(crate) g0: u64,
    /// When the load began (before its L2 read).
    pub(crate) started: Instant,
    pub(crate) loader_started: Instant,
    pub(crate) write: L2Write,
    pub(crate) lock: Option<LockGuard>,
    pub(crate) claim: Option<Claim>,
    pub(crate) refresh: bool,
}

/// The loader's timeouts for one load. `soft` comes with the stale value it serves.
pub(crate) struct Timeouts<T> {
    pub(crate) soft: Option<(Duration, Arc<T>)>,
    pub(crate) hard: Option<Duration>,
}

/// How a loader run ended.
pub(crate) enum Run<T, E, X> {
    Done(LoadJob, Result<T, E>),
    /// The hard timeout passed (`X` is uninhabited for borrowed loaders, which have none).
    TimedOut(LoadJob, X),
    /// The soft timeout passed: serve this stale value; the loader goes on in the background and
    /// finishes the job there.
    Detached(Arc<T>),
}

/// A loader, borrowed or owned.
pub(crate) trait Loader<T, E>: Sized {
    /// What a hard timeout reports (`Infallible` when there can be none).
    type TimedOut: HardTimeout;

    /// The loader as an [`OwnedLoader`], or itself back when it borrows from the caller.
    fn into_owned(self) -> Result<OwnedLoader<T, E, Self::TimedOut>, Self>;

    /// Calls the loader under `timeouts` (where it can honour them).
    async fn run(
        self,
        cache: &Cache,
        job: LoadJob,
        timeouts: Timeouts<T>,
    ) -> Run<T, E, Self::TimedOut>;
}

impl<T, E, F, Fut> Loader<T, E> for InPlace<F>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type TimedOut = Infallible;

    fn into_owned(self) -> Result<OwnedLoader<T, E, Infallible>, Self> {
        Err(self)
    }

    async fn run(self, _: &Cache, job: LoadJob, _: Timeouts<T>) -> Run<T, E, Infallible> {
        Run::Done(job, (self.0)().await)
    }
}

impl<T, E, H> Loader<T, E> for OwnedLoader<T, E, H>
where
    T: Serialize + Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: HardTimeout,
{
    type TimedOut = H;

    fn into_owned(self) -> Result<OwnedLoader<T, E, H>, Self> {
        Ok(self)
    }

    async fn run(self, cache: &Cache, mut job: LoadJob, t: Timeouts<T>) -> Run<T, E, H> {
        let mut fut = self.call();
        // A caller that cannot report a hard timeout has none.
        let hard = t.hard.filter(|d| H::report(*d).is_some());
        // `Freshness::resolve` keeps a soft timeout only below the hard one.
        let first = t.soft.as_ref().map(|(d, _)| *d).or(hard);
        let Some(first) = first else {
            return Run::Done(job, fut.await);
        };
        match tokio::time::timeout(first, &mut fut).await {
            Ok(res) => Run::Done(job, res),
            Err(_) => match t.soft {
                Some((soft, stale)) => {
                    KindStats::inc(&job.ke.stats.soft_timeouts);
                    tracing::debug!(kind = %job.ke.name, ?soft,
                        "loader past its soft timeout: serving the stale value, finishing in the background");
                    if job.claim.is_none() {
                        // Callers holding a stale value serve it instead of loading again.
                        job.claim = cache.inner.refreshing.claim(&job.full);
                    }
                    let rest = hard.map(|h| h.saturating_sub(soft));
                    let cache = cache.clone();
                    tokio::spawn(async move {
                        let res = match rest {
                            Some(d) => tokio::time::timeout(d, fut).await.ok(),
                            None => Some(fut.await),
                        };
                        match res {
                            Some(Ok(v)) => cache.finish_ok(job, Arc::new(v)).await,
                            Some(Err(_)) => cache.finish_failed(job, false).await,
                            None => cache.finish_failed(job, true).await,
                        }
                    });
                    Run::Detached(stale)
                }
                None => match H::report(first) {
                    Some(x) => Run::TimedOut(job, x),
                    // Not reached (`hard` is `None` for such callers): wait for the loader.
                    None => Run::Done(job, fut.await),
                },
            },
        }
    }
}

impl Cache {
    /// [`get_or_load_with`](Self::get_or_load_with) for an owned loader (`Send + 'static`), which
    /// can outlive the call: this is the method that honours every freshness option.
    ///
    /// - **Eager refresh / XFetch** ([`KindConfig::eager_refresh`](crate::KindConfig::eager_refresh), [`KindConfig::xfetch`](crate::KindConfig::xfetch)): a
    ///   read late in an entry's life returns the current value at once and hands `loader` to a
    ///   background refresh (one per key at a time, whatever the number of readers).
    /// - **Soft timeout** ([`KindConfig::soft_timeout`](crate::KindConfig::soft_timeout)): with a stale value at hand, callers get it
    ///   once the loader has run this long; the loader goes on in the background and updates the
    ///   cache.
    /// - **Hard timeout** ([`KindConfig::hard_timeout`](crate::KindConfig::hard_timeout)): the loader is abandoned; callers get a
    ///   stale value if there is one, else [`LoadError::Cache`]`(`[`Error::LoaderTimeout`]`)`.
    ///
    /// Each can also be set per call in `opts`. Background work obeys the same guards as any
    /// load: a refresh or a late completion never overwrites an invalidation or a newer `set`.
    ///
    /// ```
    /// use cache_core::{Cache, EntryOptions, Kind, KindConfig, LoadError};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder()
    ///     .kind(Kind::new("quote"), KindConfig::new(Duration::from_secs(60)).eager_refresh(0.8))
    ///     .build()
    ///     .await?;
    /// let symbol = "ACME".to_string(); // moved into the loader: it must own what it uses
    /// let price = cache
    ///     .get_or_load_owned("quote", "ACME", &EntryOptions::new(), move || async move {
    ///         Ok::<_, std::io::Error>(format!("{symbol}: 42.0"))
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(*price, "ACME: 42.0");
    ///
    /// // A hard timeout and no stale value: the cache's own error.
    /// let opts = EntryOptions::new().hard_timeout(Duration::from_millis(10));
    /// let slow = cache
    ///     .get_or_load_owned("quote", "SLOW", &opts, || async {
    ///         tokio::time::sleep(Duration::from_secs(5)).await;
    ///         Ok::<_, std::io::Error>("late".to_string())
    ///     })
    ///     .await;
    /// assert!(matches!(slow, Err(LoadError::Cache(cache_core::Error::LoaderTimeout(_)))));
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`LoadError::Loader`] with the loader's error (shared by every caller of the failed load,
    /// never cached), or [`LoadError::Cache`] with [`Error::LoaderTimeout`]. With a stale value at
    /// hand (fail-safe grace), it is returned instead of either. L2 problems are never returned.
    pub async fn get_or_load_owned<T, E, F, Fut>(
        &self,
        kind: impl AsRef<str>,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> std::result::Result<Arc<T>, LoadError<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        let res = self
            .get_or_load_lazy(kind.as_ref(), key, opts, move || {
                owned::<T, E, Duration, _, _>(loader)
            })
            .await;
        res.map_err(|e| match e {
            LazyError::Loader(e) => LoadError::Loader(e),
            LazyError::TimedOut(d) => LoadError::Cache(Error::LoaderTimeout(d)),
        })
    }

    /// The owned-loader read path, with the loader made by `make` only when a load or a refresh
    /// needs it (so a hit copies nothing). [`get_or_load_owned`](Self::get_or_load_owned) and the
    /// `#[cached]` functions with freshness arguments go through here.
    pub(crate) async fn get_or_load_lazy<T, E, H, M>(
        &self,
        kind: &str,
        key: &str,
        opts: &EntryOptions,
        make: M,
    ) -> std::result::Result<Arc<T>, LazyError<E, H>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        H: HardTimeout,
        M: FnOnce() -> OwnedLoader<T, E, H>,
    {
        let ke = self.kind_entry(kind);
        let policy = opts.freshness.resolve(ke.cfg.freshness());
        if !self.inner.enabled {
            KindStats::inc(&ke.stats.loader_calls);
            let fut = make().call();
            let hard = policy
                .hard_timeout
                .and_then(|d| H::report(d).map(|x| (d, x)));
            let res = match hard {
                Some((d, x)) => match tokio::time::timeout(d, fut).await {
                    Ok(res) => res,
                    Err(_) => {
                        KindStats::inc(&ke.stats.hard_timeouts);
                        return Err(LazyError::TimedOut(x));
                    }
                },
                None => fut.await,
            };
            return res.map(Arc::new).map_err(|e| {
                KindStats::inc(&ke.stats.loader_errors);
                LazyError::Loader(Arc::new(e))
            });
        }
        // The L1 lookup needs no allocated key; everything after a miss (or a due refresh) does.
        let lookup = key::LookupKey::new(ke.key_prefix.as_deref(), &self.inner.prefix, kind, key);
        let mut stale = None;
        if ke.cfg.tier_routing().l1() {
            let found = self.inner.l1.get(&lookup).await;
            let (fresh, s, age) = self.l1_found::<T>(ke, found);
            if let Some(v) = fresh {
                let due = |a: &Age| {
                    refresh::is_due(&policy, *a, unix_ms(), refresh::loader_time(&ke.stats))
                };
                if let Some(age) = age.filter(|a| policy.refreshes() && due(a)) {
                    let full = lookup.to_full();
                    self.spawn_refresh(ke, &full, opts, v.clone(), age.created_ms, make());
                }
                return Ok(v);
            }
            if let (Some(s), Some(_)) = (&s, policy.soft_timeout) {
                if self.inner.refreshing.is_claimed(&lookup.to_full()) {
                    // A load of this key is finishing in the background after its soft timeout.
                    KindStats::inc(&ke.stats.soft_timeouts);
                    return Ok(s.clone());
                }
            }
            stale = s;
        }
        // Boxed, as in `get_or_load_with`: a hit does not carry the miss path's state machine.
        let full = lookup.to_full();
        Box::pin(self.miss(ke, &full, opts, stale, Lazy(make))).await
    }

    /// Stores a loaded value (under the load's guards) and releases the load's lock.
    pub(crate) async fn finish_ok<T>(&self, job: LoadJob, value: Arc<T>)
    where
        T: Serialize + Send + Sync + 'static,
    {
        refresh::record_loader_time(&job.ke.stats, job.loader_started.elapsed());
        let ttl = job
            .ttl_fn
            .as_ref()
            .and_then(|f| f.ttl_of(&*value))
            .map_or(job.ttl, |t| crate::jitter::jittered(t, job.jitter));
        self.store(
            &job.ke,
            &job.full,
            value,
            ttl,
            &job.tags,
            job.g0,
            job.started,
            job.write,
        )
        .await;
        if let Some(lock) = job.lock {
            lock.release().await;
        }
    }

    /// Counts a failed (or timed-out) loader call and releases the load's lock.
    pub(crate) async fn finish_failed(&self, job: LoadJob, timed_out: bool) {
        if timed_out {
            KindStats::inc(&job.ke.stats.hard_timeouts);
            tracing::debug!(kind = %job.ke.name, "loader abandoned at its hard timeout");
        } else {
            KindStats::inc(&job.ke.stats.loader_errors);
        }
        if job.refresh {
            KindStats::inc(&job.ke.stats.refresh_failures);
        }
        if let Some(lock) = job.lock {
            lock.release().await;
        }
    }
}
