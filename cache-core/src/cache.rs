//! The `Cache` handle: a cheap clone of the shared components, and the public operations, each a
//! thin call into the component that does the work (the read path in `load.rs`, coherence in
//! `coherence.rs`, warming in `warm.rs`).

use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use crate::breaker::BreakerState;
use crate::coherence::{Confirmation, Message, Origin};
use crate::entry_store::Write;
use crate::error::{Error, LoadError, Result};
use crate::events::EventStream;
use crate::inner::Inner;
use crate::key;
use crate::load;
use crate::loader::{self, HardTimeout, LazyError, OwnedLoader};
use crate::options::{EntryOptions, OwnedOptions};
use crate::provenance::{self, Lookup};
use crate::stats::{KindStats, Rates, SeriesPoint, Stats, WindowStats};

/// A two-tier cache: an in-process moka L1 in front of a shared Redis L2.
///
/// `Cache` is a cheap handle (an `Arc` inside): clone it into every task that needs it instead of
/// wrapping it in `Arc<Mutex<_>>`.
///
/// Reads go L1 → L2 → loader. A dead or hung Redis never surfaces as an error: each L2 operation has
/// a deadline, and a circuit breaker skips L2 entirely while it is failing, so the cache degrades to
/// L1-only and recovers by itself.
///
/// ```
/// use cache_core::{Cache, Kind};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // No Redis URL: an L1-only cache (use `.redis_url(..)` or `Cache::from_env()` for L2).
/// let cache = Cache::builder().prefix("docs").build().await?;
///
/// let user: std::sync::Arc<String> = cache
///     .get_or_load(Kind::DATABASE_QUERY, "user:42", || async {
///         Ok::<_, std::io::Error>("Ada".to_string())
///     })
///     .await
///     .unwrap();
/// assert_eq!(*user, "Ada");
///
/// // Served from L1 now: the loader does not run.
/// let again: std::sync::Arc<String> = cache
///     .get_or_load(Kind::DATABASE_QUERY, "user:42", || async {
///         Err::<String, _>(std::io::Error::other("not called"))
///     })
///     .await
///     .unwrap();
/// assert_eq!(*again, "Ada");
/// # Ok::<_, cache_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.inner.prefix)
            .field("enabled", &self.inner.enabled)
            .field("l2", &self.inner.l2.as_ref().map(|l2| &l2.url_redacted))
            .finish()
    }
}

impl Cache {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Returns the value cached under `key` of `kind`, from L1 or L2, or `None`.
    ///
    /// A value stored as another type reads as `None`. (`T: Serialize`: a value read from L2 is
    /// weighed for L1 by walking it.)
    pub async fn get<T>(&self, kind: impl AsRef<str>, key: &str) -> Option<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        load::get(&self.inner, kind.as_ref(), key).await
    }

    /// Returns the cached value of `key`, or runs `loader` once to produce it, caches it with the
    /// kind's TTL and returns it.
    ///
    /// # Concurrent calls on the same key
    /// Concurrent callers of one missing key share one load: the loader runs once, the others wait
    /// for its result (stampede protection). A load that began before an `invalidate` or `set` of the
    /// same key (on this instance or any other sharing the Redis) does not store its result, and
    /// callers arriving after the invalidation start a new load.
    ///
    /// # Errors
    /// The loader's error, shared by every caller of the failed load (as in moka's `try_get_with`).
    /// Errors are never cached. With a fail-safe grace period configured and a stale value at hand,
    /// the stale value is returned instead. L2 problems are never returned.
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        kind: impl AsRef<str>,
        key: &str,
        loader: F,
    ) -> std::result::Result<Arc<T>, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        load::get_or_load_with(
            &self.inner,
            kind.as_ref(),
            key,
            &EntryOptions::default(),
            loader,
            load::any_err,
        )
        .await
    }

    /// [`get_or_load`](Self::get_or_load) with per-entry options (TTL, tags, freshness).
    ///
    /// # Freshness options
    /// The loader is borrowed (it may capture references), so it cannot run after this call
    /// returns: eager refresh, XFetch and the soft and hard timeouts, which need that (or need an
    /// error of the cache's own), do not apply here; use
    /// [`get_or_load_owned`](Self::get_or_load_owned) for them (or, on a `#[cached]` function, the
    /// `refresh`, `xfetch`, `soft_timeout` and `hard_timeout` arguments). The distributed lock and
    /// TTL jitter do apply.
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn get_or_load_with<T, E, F, Fut>(
        &self,
        kind: impl AsRef<str>,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> std::result::Result<Arc<T>, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        load::get_or_load_with(&self.inner, kind.as_ref(), key, opts, loader, load::any_err).await
    }

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
    /// Each can also be set per call ([`OwnedOptions`]). Background work obeys the same guards as any
    /// load: a refresh or a late completion never overwrites an invalidation or a newer `set`.
    ///
    /// ```
    /// use cache_core::{Cache, Kind, KindConfig, LoadError, OwnedOptions};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder()
    ///     .kind(Kind::new("quote"), KindConfig::new(Duration::from_secs(60)).eager_refresh(0.8))
    ///     .build()
    ///     .await?;
    /// let symbol = "ACME".to_string(); // moved into the loader: it must own what it uses
    /// let price = cache
    ///     .get_or_load_owned("quote", "ACME", &OwnedOptions::new(), move || async move {
    ///         Ok::<_, std::io::Error>(format!("{symbol}: 42.0"))
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(*price, "ACME: 42.0");
    ///
    /// // A hard timeout and no stale value: the cache's own error.
    /// let opts = OwnedOptions::new().hard_timeout(Duration::from_millis(10));
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
        opts: impl Into<OwnedOptions>,
        loader: F,
    ) -> std::result::Result<Arc<T>, LoadError<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        let opts: OwnedOptions = opts.into();
        let res = self
            .get_or_load_lazy(
                kind.as_ref(),
                key,
                &opts,
                move || loader::owned::<T, E, Duration, _, _>(loader),
                load::any_err,
            )
            .await;
        res.map_err(|e| match e {
            LazyError::Loader(e) => LoadError::Loader(e),
            LazyError::TimedOut(d) => LoadError::Cache(Error::LoaderTimeout(d)),
        })
    }

    /// The owned-loader read path with the loader made only when a load or a refresh needs it
    /// (the `#[cached]` functions with freshness arguments); `failure` tells a failed load from
    /// an output returned uncached.
    pub(crate) async fn get_or_load_lazy<T, E, H, M>(
        &self,
        kind: &str,
        key: &str,
        opts: &OwnedOptions,
        make: M,
        failure: load::Failure<E>,
    ) -> std::result::Result<Arc<T>, LazyError<E, H>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        H: HardTimeout,
        M: FnOnce() -> OwnedLoader<T, E, H>,
    {
        let (entry, fresh) = (opts.entry(), opts.per_call());
        load::get_or_load_lazy(&self.inner, kind, key, entry, fresh, make, failure).await
    }

    /// [`get_or_load_with`](Self::get_or_load_with), also telling where the value came from and
    /// how old it is: to show "served from cache, 2 min old" next to an answer, or to measure
    /// staleness.
    ///
    /// Traced and untraced calls share entries, loads and stats; tracing costs nothing to the
    /// calls that do not use it.
    ///
    /// ```
    /// use cache_core::{Cache, EntryOptions, Kind, Source};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder().prefix("docs-traced").build().await?;
    /// let opts = EntryOptions::new();
    /// let load = || async { Ok::<_, std::io::Error>("Ada".to_string()) };
    ///
    /// let first = cache.get_or_load_traced(Kind::DATABASE_QUERY, "user:1", &opts, load).await.unwrap();
    /// assert_eq!((first.source, first.is_cached()), (Source::Loader, false));
    ///
    /// let second = cache.get_or_load_traced(Kind::DATABASE_QUERY, "user:1", &opts, load).await.unwrap();
    /// assert_eq!(second.source, Source::L1);
    /// assert_eq!(*second.value, "Ada");
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load): the loader's error.
    pub async fn get_or_load_traced<T, E, F, Fut>(
        &self,
        kind: impl AsRef<str>,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> std::result::Result<Lookup<Arc<T>>, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        // The loader's own cache calls must not be taken for this call's provenance.
        let loader = || provenance::isolate(loader());
        let (res, trace) =
            provenance::capture(self.get_or_load_with(kind, key, opts, loader)).await;
        res.map(|value| trace.lookup(value))
    }

    /// The cached values of many keys of `kind`, in the order of `keys` (`None` where a key is
    /// cached nowhere): L1 first, then the rest from L2 in one `MGET` (on a Redis Cluster, one
    /// pipeline of `GET`s per master, in parallel). Never a loader. Hits and misses are counted
    /// as [`get`](Self::get) counts them: in L1 at every position of `keys` (a key listed twice is
    /// looked up twice), in L2 once per distinct key.
    ///
    /// ```
    /// use cache_core::{Cache, Kind};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder().prefix("docs-get-many").build().await?;
    /// cache.set(Kind::DATABASE_QUERY, "user:1", "Ada".to_string()).await;
    /// let got = cache
    ///     .get_many::<String>(Kind::DATABASE_QUERY, &["user:1", "user:2"])
    ///     .await;
    /// assert_eq!(got[0].as_deref().map(String::as_str), Some("Ada"));
    /// assert!(got[1].is_none());
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_many<T>(
        &self,
        kind: impl AsRef<str>,
        keys: &[impl AsRef<str>],
    ) -> Vec<Option<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        load::batch::get_many(&self.inner, kind.as_ref(), keys).await
    }

    /// The read-through of many keys of `kind`: the values of `keys`, in their order, with one
    /// call of `loader` for the keys cached nowhere. The loader receives those keys and returns
    /// the values it found, by key; a key it leaves out is `None` in the result (and remembered
    /// as absent only when asked: [`get_or_load_many_with`](Self::get_or_load_many_with) with
    /// [`EntryOptions::none_ttl`] and `T = Option<_>`).
    ///
    /// The steps: L1; then one `MGET` for the rest; then, for the keys still missing, one
    /// pipeline that reads and leases them (as a single load does), **one** loader call, one
    /// pipeline of compare-and-set write-backs and the L1 copies. Every key keeps the guarantees
    /// of [`get_or_load`](Self::get_or_load): a load that began before an invalidation or a `set`
    /// of its key stores nothing, and concurrent callers of the same keys (single or batch) share
    /// their loads: keys another caller is loading are not loaded again but waited for. (If such
    /// a caller is cancelled, or its batch loader had no value for a key, the key is loaded by a
    /// second call of `loader`, for those keys only: hence `FnMut`.)
    ///
    /// # Errors
    /// The loader's error (or that of a load of one of the keys it joined). With a fail-safe
    /// grace period, keys with a stale value at hand get it instead; the call fails only if a
    /// key has none. L2 problems are never returned.
    ///
    /// ```
    /// use cache_core::{Cache, Kind};
    /// use std::collections::HashMap;
    /// use std::convert::Infallible;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder().prefix("docs-load-many").build().await?;
    /// let ids = ["1", "2", "3"];
    /// let names = cache
    ///     .get_or_load_many(Kind::DATABASE_QUERY, &ids, |missing: Vec<String>| async move {
    ///         // SELECT id, name FROM users WHERE id = ANY($1)
    ///         let found: HashMap<String, String> = missing
    ///             .into_iter()
    ///             .filter(|id| id != "3")
    ///             .map(|id| (id.clone(), format!("user {id}")))
    ///             .collect();
    ///         Ok::<_, Infallible>(found)
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(names[0].as_deref().map(String::as_str), Some("user 1"));
    /// assert!(names[2].is_none(), "the loader had no user 3");
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_or_load_many<T, E, F, Fut>(
        &self,
        kind: impl AsRef<str>,
        keys: &[impl AsRef<str>],
        loader: F,
    ) -> std::result::Result<Vec<Option<Arc<T>>>, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
    {
        let opts = EntryOptions::default();
        load::batch::get_or_load_many(&self.inner, kind.as_ref(), keys, &opts, loader).await
    }

    /// [`get_or_load_many`](Self::get_or_load_many) with per-entry options (TTL, tags, a
    /// TTL computed from each value, negative caching).
    ///
    /// With [`EntryOptions::none_ttl`] and `T = Option<V>`, keys the loader did not return are
    /// stored as `None` for that TTL, so the next call does not ask the loader for them again;
    /// without it, or for a `T` with no absent value, they are not remembered.
    ///
    /// ```
    /// use cache_core::{Cache, EntryOptions, Kind};
    /// use std::collections::HashMap;
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder().prefix("docs-load-many-with").build().await?;
    /// let opts = EntryOptions::new().none_ttl(Duration::from_secs(30));
    /// let load = |missing: Vec<String>| async move {
    ///     let found: HashMap<String, Option<String>> = missing
    ///         .into_iter()
    ///         .filter(|id| id == "1")
    ///         .map(|id| (id, Some("Ada".to_string())))
    ///         .collect();
    ///     Ok::<_, Infallible>(found)
    /// };
    /// let got = cache
    ///     .get_or_load_many_with(Kind::DATABASE_QUERY, &["1", "404"], &opts, load)
    ///     .await
    ///     .unwrap();
    /// // "404" is remembered as absent for 30 s.
    /// assert_eq!(got[1].as_deref(), Some(&None));
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_or_load_many_with<T, E, F, Fut>(
        &self,
        kind: impl AsRef<str>,
        keys: &[impl AsRef<str>],
        opts: &EntryOptions,
        loader: F,
    ) -> std::result::Result<Vec<Option<Arc<T>>>, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<HashMap<String, T>, E>>,
    {
        load::batch::get_or_load_many(&self.inner, kind.as_ref(), keys, opts, loader).await
    }

    /// Stores `value` under `key` with the kind's TTL, in L1 and L2, superseding loads in flight
    /// here and on every other instance (their L1 copies are dropped through the backplane).
    ///
    /// An L2 failure is counted in the stats, not returned: the value is still in L1.
    pub async fn set<T>(&self, kind: impl AsRef<str>, key: &str, value: T)
    where
        T: Serialize + Send + Sync + 'static,
    {
        self.set_with(kind, key, value, &EntryOptions::default())
            .await;
    }

    /// [`set`](Self::set) with per-entry options (TTL, tags).
    pub async fn set_with<T>(&self, kind: impl AsRef<str>, key: &str, value: T, opts: &EntryOptions)
    where
        T: Serialize + Send + Sync + 'static,
    {
        let inner = &self.inner;
        if !inner.enabled {
            return;
        }
        let kind = kind.as_ref();
        let ke = inner.kinds.get(kind);
        KindStats::inc(&ke.stats.sets);
        let full = key::full_key(&inner.prefix, kind, key);
        // Waits for this instance's earlier writes of the key, and supersedes its loads in flight.
        let mut write = inner.coherence.gens.begin_write(&full).await;
        let started = Instant::now();
        let ttl = opts.entry_ttl(&value, ke.cfg.ttl(), inner.jitter(ke));
        let tokens = match inner.entries_for(ke) {
            // A zero TTL stores nothing: no tokens needed.
            Some(entries) if !ttl.is_zero() => entries.tag_tokens(ke, opts.tag_list()).await,
            _ => Ok(Vec::new()),
        };
        load::store(
            inner,
            ke,
            &mut write.ticket,
            Arc::new(value),
            load::StoreSpec {
                fp: load::fingerprint::<T>(ke, Some(opts)),
                ttl,
                tags: opts.tag_list(),
                tokens: tokens.as_deref().map_err(|no| *no),
                write: Some(Write::Overwrite),
                loaded_at: started,
            },
        )
        .await;
        drop(write);
        inner.coherence.publish(Message::Key(&full)).await;
    }

    /// Removes `key` of `kind` from L1 and L2 on every instance. In L2 a short-lived tombstone
    /// replaces the value, so that loads which began before this call (here or on other instances)
    /// cannot store their now-stale result afterwards.
    pub async fn invalidate(&self, kind: impl AsRef<str>, key: &str) {
        let kind = kind.as_ref();
        let full = key::full_key(&self.inner.prefix, kind, key);
        self.invalidate_full(kind, &full).await;
    }

    /// [`invalidate`](Self::invalidate) by the entry's full Redis key, as
    /// [`admin::entry_key`](crate::admin::entry_key) builds it and `cachectl keys` lists it: for tools, since an
    /// entry whose key part was hashed (see [`MAX_KEY_PART`](crate::MAX_KEY_PART)) can only be
    /// named this way. Returns `false`, doing nothing, when `full_key` is not a key this cache
    /// could have built (another prefix, no kind, a part that would have been hashed).
    ///
    /// ```
    /// use cache_core::{Cache, Kind};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder().prefix("docs-inv-full").build().await?;
    /// let question = "What does the contract say about renewals? ".repeat(8); // > 200 bytes
    /// cache.set(Kind::MODEL_DATA, &question, "30 days' notice".to_string()).await;
    /// let full = cache_core::admin::entry_key("docs-inv-full", "model_data", &question);
    /// assert!(cache.invalidate_entry_key(&full).await);
    /// assert!(cache.get::<String>(Kind::MODEL_DATA, &question).await.is_none());
    /// assert!(!cache.invalidate_entry_key("other-prefix:v1:model_data:x").await);
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn invalidate_entry_key(&self, full_key: &str) -> bool {
        match key::split_entry_key(&self.inner.prefix, full_key) {
            Some((kind, _)) => {
                self.invalidate_full(kind, full_key).await;
                true
            }
            None => false,
        }
    }

    async fn invalidate_full(&self, kind: &str, full: &str) {
        let ke = self.inner.kinds.get(kind);
        KindStats::inc(&ke.stats.invalidations);
        let use_l2 = ke.cfg.tier_routing().l2();
        self.inner
            .coherence
            .invalidate_key(&ke.stats, full, use_l2)
            .await;
    }

    /// Invalidates every entry carrying `tag`, in L1 and L2, on every instance sharing the Redis.
    /// O(1) Redis commands whatever the number of entries (see the `tags` module).
    pub async fn invalidate_tag(&self, tag: &str) {
        self.invalidate_tags(&[tag]).await;
    }

    /// [`invalidate_tag`](Self::invalidate_tag) for several tags in one round trip.
    pub async fn invalidate_tags(&self, tags: &[&str]) {
        if tags.is_empty() {
            return;
        }
        let stats = &self.inner.kinds.unregistered().stats;
        self.inner.coherence.invalidate_tags(stats, tags).await;
    }

    /// [`invalidate`](Self::invalidate), then waits (at most `timeout`) until every other
    /// instance subscribed to the backplane confirms it dropped its copy: for the flows that need
    /// read-your-writes across instances. `invalidate` alone returns once L2 is updated and the
    /// message is sent; other instances drop their L1 copies when the message arrives (about a
    /// millisecond later on a local network: see the README).
    ///
    /// Instances that do not answer in time (busy, partitioned, or of a release without
    /// confirmations) leave the [`Confirmation`] incomplete; their copies still go when the
    /// message arrives, or when they resubscribe.
    pub async fn invalidate_confirmed(
        &self,
        kind: impl AsRef<str>,
        key: &str,
        timeout: Duration,
    ) -> Confirmation {
        self.invalidate(kind, key).await;
        self.inner.coherence.confirm(timeout).await
    }

    /// [`invalidate_tags`](Self::invalidate_tags), confirmed as in
    /// [`invalidate_confirmed`](Self::invalidate_confirmed).
    pub async fn invalidate_tags_confirmed(
        &self,
        tags: &[&str],
        timeout: Duration,
    ) -> Confirmation {
        self.invalidate_tags(tags).await;
        self.inner.coherence.confirm(timeout).await
    }

    /// Removes every entry of `kind` from L1 and L2 (SCAN + UNLINK, never KEYS). Returns the number
    /// of L2 keys removed.
    ///
    /// # Errors
    /// An L2 error or timeout: L1 is cleared anyway, L2 may be partly cleared.
    pub async fn clear_kind(&self, kind: impl AsRef<str>) -> Result<u64> {
        let kind = kind.as_ref();
        let ke = self.inner.kinds.get(kind);
        let removed = self
            .unlink_matching(&key::kind_pattern(&self.inner.prefix, kind))
            .await;
        // After L2, as in `invalidate`: loads that read L2 before the sweep lose their L1 insert.
        // Dead at once (an epoch); removed here, since the caller asked for it.
        self.inner.coherence.drop_kind(ke.id, Origin::Here);
        self.inner.l1.sweep(usize::MAX).await;
        let removed = removed?;
        let l1_prefix = key::kind_key_prefix(&self.inner.prefix, kind);
        self.inner
            .coherence
            .publish(Message::Clear(&l1_prefix))
            .await;
        self.inner.coherence.cleared(Some(kind));
        Ok(removed)
    }

    /// Removes every entry of this cache (all kinds under its prefix) from L1 and L2. Keys of other
    /// prefixes are untouched. Returns the number of L2 keys removed.
    ///
    /// # Errors
    /// An L2 error or timeout: L1 is cleared anyway, L2 may be partly cleared.
    pub async fn clear_all(&self) -> Result<u64> {
        let removed = self
            .unlink_matching(&key::prefix_pattern(&self.inner.prefix))
            .await;
        self.inner.coherence.drop_all(Origin::Here);
        self.inner.l1.sweep(usize::MAX).await;
        let removed = removed?;
        self.inner.coherence.publish(Message::Clear("")).await;
        self.inner.coherence.cleared(None);
        Ok(removed)
    }

    /// SCAN + UNLINK of `pattern` in L2 (0 without one).
    async fn unlink_matching(&self, pattern: &str) -> Result<u64> {
        match &self.inner.l2 {
            Some(l2) => l2
                .unlink_matching(pattern)
                .instrument(tracing::debug_span!("l2.unlink_matching", pattern))
                .await
                .map_err(Error::from),
            None => Ok(0),
        }
    }

    /// Subscribes to the cache's [`Event`](crate::Event)s: hits with their tier, misses with their
    /// reason, loader calls with their duration, stale values served, breaker transitions,
    /// invalidations sent and received (see [`events`](crate::events)). The stream receives every
    /// event emitted from now on, until it is dropped; any number of subscriptions may be open.
    ///
    /// The cache never waits for a subscription: events go through a bounded buffer
    /// ([`CacheBuilder::event_buffer`](crate::CacheBuilder::event_buffer)), and a subscription
    /// that falls more than the buffer behind loses the oldest events it had not read (counted in
    /// [`Stats::events`](crate::Stats::events)). With no subscription open, emitting costs one
    /// atomic load.
    ///
    /// ```
    /// use cache_core::events::{Event, Tier};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cache_core::Cache::builder().prefix("docs-events-audit").build().await?;
    /// let mut events = cache.events();
    /// // An audit log: a task of its own, so the cache never waits for the log's writes.
    /// let audit = tokio::spawn(async move {
    ///     let mut lines = Vec::new();
    ///     while let Some(event) = events.recv().await {
    ///         if matches!(event, Event::Load { .. } | Event::InvalidationSent { .. }) {
    ///             lines.push(event.to_string());
    ///         }
    ///         if matches!(event, Event::InvalidationSent { .. }) {
    ///             break;
    ///         }
    ///     }
    ///     lines
    /// });
    /// let v = cache.get_or_load("api_response", "report:7", || async { Ok::<_, ()>(7u32) }).await;
    /// assert_eq!(*v.unwrap(), 7);
    /// cache.invalidate("api_response", "report:7").await;
    /// let lines = audit.await.unwrap();
    /// assert!(lines[0].starts_with("load api_response/report:7 loaded in "), "{lines:?}");
    /// assert_eq!(lines[1], "invalidation sent key api_response/report:7");
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    /// A snapshot of the counters since the cache was built, per tier and per kind.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The same figures over the last `len` (at most 15 minutes are kept): what was counted in
    /// the window, its hit rates, latencies and miss reasons, requests per second. The window
    /// starts at a reading taken every 10 s, so it covers `len` to `len` + 10 s
    /// ([`WindowStats::seconds`] says how much; less while the cache is younger than `len`).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let cache = cache_core::Cache::builder().build().await.unwrap();
    /// let _ = cache.get_or_load("api_response", "k", || async { Ok::<_, ()>(1u32) }).await;
    /// let _ = cache.get_or_load("api_response", "k", || async { Ok::<_, ()>(1u32) }).await;
    /// let last_minute = cache.stats_over(Duration::from_secs(60));
    /// assert_eq!(last_minute.kinds["api_response"].lookups, 2);
    /// assert_eq!(last_minute.kinds["api_response"].hit_rate, 0.5);
    /// # });
    /// ```
    pub fn stats_over(&self, len: std::time::Duration) -> WindowStats {
        self.inner.stats_over(len)
    }

    /// [`stats_over`](Self::stats_over) the last 1, 5 and 15 minutes.
    pub fn rates(&self) -> Rates {
        self.inner.rates()
    }

    /// What to change, read off the last 15 minutes and the cache's state: each
    /// [`Recommendation`](crate::admin::Recommendation) names the setting and the figure behind
    /// it (the rules: [`admin::recommend`](crate::admin::recommend)). Redis's memory settings
    /// are read every 10 s in the background; this call does no I/O.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cache_core::Cache::builder().build().await.unwrap();
    /// for r in cache.recommendations() {
    ///     println!("{r}");
    /// }
    /// # });
    /// ```
    pub fn recommendations(&self) -> Vec<crate::admin::Recommendation> {
        let window = self
            .inner
            .stats_over(std::time::Duration::from_secs(15 * 60));
        crate::admin::recommend(&self.inner.stats(), &window)
    }

    /// One point per second over the last 15 minutes (oldest first; empty during the first
    /// second): requests per second, hit rates per tier, L2 read latency, loader calls, L1 bytes,
    /// breaker and backplane state. What the dashboard's charts draw.
    pub fn history(&self) -> Vec<SeriesPoint> {
        self.inner.history.series()
    }

    /// Applies moka's pending maintenance so that entry counts and sizes in [`stats`](Self::stats)
    /// are exact (they are otherwise updated lazily).
    pub async fn run_pending_tasks(&self) {
        self.inner.l1.run_pending_tasks().await;
    }

    /// The circuit breaker's state, or `None` without an L2.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.inner.l2.as_ref().map(|l2| l2.breaker.state())
    }

    /// PINGs Redis (through the breaker) and returns the round-trip time.
    ///
    /// # Errors
    /// [`Error::NoL2`] without an L2; otherwise the Redis error, timeout or open breaker.
    pub async fn ping_l2(&self) -> Result<Duration> {
        let l2 = self.inner.l2.as_ref().ok_or(Error::NoL2)?;
        l2.ping()
            .instrument(tracing::debug_span!("l2.ping"))
            .await
            .map_err(Error::from)
    }

    /// The key prefix of this cache.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Whether the backplane subscription is up (`false` without an L2 or with the backplane off).
    pub fn backplane_subscribed(&self) -> bool {
        self.inner
            .coherence
            .backplane
            .as_ref()
            .is_some_and(|bp| bp.is_subscribed())
    }
}
