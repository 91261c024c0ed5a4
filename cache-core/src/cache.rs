//! The `Cache` handle: read-through L1 → L2 → loader, writes, invalidation and stats.

use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use crate::backplane::{self, Backplane, Message};
use crate::breaker::BreakerState;
use crate::codec::{self, CodecConfig, CodecError, Header, TagVersion};
use crate::error::{Error, Result};
use crate::freshness::Freshness;
use crate::generations::Generations;
use crate::jitter;
use crate::key;
use crate::kind::KindConfig;
use crate::l1::{L1Entry, L1};
use crate::l2::{L2Error, L2};
use crate::loader::{InPlace, LazyError, LoadJob, LoadMode, Loader, Run, Timeouts};
use crate::lock::{LockOutcome, LockWaiters};
use crate::pending::{PendingInvalidations, PendingOp};
use crate::provenance::{self, Source};
use crate::refresh::{self, Age, Claims};
use crate::stats::{
    self, BackplaneStats, BreakerStats, KindStats, PendingInvalidationStats, Stats,
};
use crate::tags::{self, LocalTags};

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

/// Options of one write or load.
///
/// ```
/// use cache_core::EntryOptions;
/// use std::time::Duration;
/// let opts = EntryOptions::new().ttl(Duration::from_secs(30));
/// assert_eq!(opts.ttl_override(), Some(Duration::from_secs(30)));
/// ```
///
/// The freshness settings of a kind ([`KindConfig`]) can be overridden per call; a per-call value
/// wins over the kind's:
///
/// ```
/// use cache_core::EntryOptions;
/// use std::time::Duration;
/// let opts = EntryOptions::new()
///     .eager_refresh(0.8)
///     .soft_timeout(Duration::from_millis(100))
///     .hard_timeout(Duration::from_secs(2))
///     .distributed_lock(true);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct EntryOptions {
    ttl: Option<Duration>,
    tags: Vec<String>,
    pub(crate) freshness: Freshness,
    ttl_fn: Option<TtlFn>,
}

/// A TTL computed from the value to store; `None` when the value is of another type.
#[derive(Clone)]
pub(crate) struct TtlFn(Arc<AnyTtl>);

type AnyTtl = dyn Fn(&dyn std::any::Any) -> Option<Duration> + Send + Sync;

impl TtlFn {
    /// The TTL for `value`; `None` when the function is for another type.
    pub(crate) fn ttl_of<T: 'static>(&self, value: &T) -> Option<Duration> {
        (self.0)(value)
    }
}

impl std::fmt::Debug for TtlFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TtlFn(..)")
    }
}

impl EntryOptions {
    /// Options with every default (the kind's TTL).
    pub fn new() -> Self {
        Self::default()
    }

    /// The TTL of this entry. Default: the kind's TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The TTL override, if any.
    pub fn ttl_override(&self) -> Option<Duration> {
        self.ttl
    }

    /// Tags stored with the entry (in its L2 envelope), for tag invalidation. Default: none.
    #[must_use]
    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// The entry's tags.
    pub fn tag_list(&self) -> &[String] {
        &self.tags
    }

    /// The TTL computed from the value being stored, for values of type `T` (what a load returns,
    /// or what [`Cache::set_with`] stores): for instance a short TTL for an empty result, or the
    /// `max-age` an API response carries. Takes precedence over [`ttl`](Self::ttl) for values of
    /// type `T`; values of other types get the fixed TTL. A zero duration is stored for 1 ms.
    /// Default: none.
    ///
    /// ```
    /// use cache_core::{Cache, EntryOptions, Kind};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = Cache::builder().prefix("docs-ttl-with").build().await?;
    /// // Empty results are kept for 5 s only, others for the kind's TTL.
    /// let opts = EntryOptions::new().ttl_with(|hits: &Vec<String>| {
    ///     if hits.is_empty() { Duration::from_secs(5) } else { Duration::from_secs(300) }
    /// });
    /// let hits = cache
    ///     .get_or_load_with(Kind::API_RESPONSE, "search:rust", &opts, || async {
    ///         Ok::<_, std::io::Error>(vec!["tokio".to_string()])
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(hits.len(), 1);
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    #[must_use]
    pub fn ttl_with<T: 'static>(
        self,
        ttl: impl Fn(&T) -> Duration + Send + Sync + 'static,
    ) -> Self {
        self.ttl_with_opt(move |v: &T| Some(ttl(v)))
    }

    /// [`ttl_with`](Self::ttl_with) where `None` falls back to the fixed or the kind's TTL.
    #[must_use]
    pub(crate) fn ttl_with_opt<T: 'static>(
        mut self,
        ttl: impl Fn(&T) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.ttl_fn = Some(TtlFn(Arc::new(move |v: &dyn std::any::Any| {
            v.downcast_ref::<T>().and_then(&ttl)
        })));
        self
    }

    /// The TTL for `value`: computed, else fixed; `None`: the kind's TTL.
    pub(crate) fn ttl_for<T: 'static>(&self, value: &T) -> Option<Duration> {
        self.ttl_fn
            .as_ref()
            .and_then(|f| f.ttl_of(value))
            .or(self.ttl)
    }
}

/// Kinds by name. This lookup is on every call's hot path and the keys are the application's own
/// few kind names, not attacker-chosen: a hash of the length and the first and last eight bytes is
/// enough to tell them apart (equal hashes only cost a comparison), where SipHash or xxh3's
/// streaming state cost more than the rest of the lookup.
pub(crate) type KindMap = HashMap<String, Arc<KindEntry>, BuildHasherDefault<KindHasher>>;

#[derive(Default)]
pub(crate) struct KindHasher(u64);

impl KindHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for KindHasher {
    fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let (first, last) = if n >= 8 {
            (word(&bytes[..8]), word(&bytes[n - 8..]))
        } else {
            (word(bytes), 0)
        };
        self.add(first ^ (n as u64).rotate_left(56));
        self.add(last);
    }

    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) struct KindEntry {
    pub(crate) name: String,
    /// `{prefix}:v1:{name}:`, the start of every full key of the kind (`None` for the entry shared
    /// by unregistered kinds): L1 lookups hash and compare it as is, without building a key.
    pub(crate) key_prefix: Option<String>,
    pub(crate) cfg: KindConfig,
    pub(crate) stats: KindStats,
    /// Whether the "needs `get_or_load_owned`" warning was logged for this kind.
    pub(crate) warned_in_place: AtomicBool,
}

pub(crate) struct Inner {
    pub(crate) prefix: String,
    pub(crate) enabled: bool,
    pub(crate) l1: L1,
    pub(crate) l2: Option<L2>,
    pub(crate) codec: CodecConfig,
    pub(crate) kinds: KindMap,
    /// Stats and settings for kinds used without being registered.
    pub(crate) unregistered: Arc<KindEntry>,
    pub(crate) warned_unregistered: AtomicBool,
    /// Single-flight of loads; nothing is ever inserted (see `get_or_load_with`).
    pub(crate) flights: moka::future::Cache<String, Never>,
    pub(crate) gens: Generations,
    pub(crate) grace: Duration,
    pub(crate) next_token: AtomicU64,
    /// How long an invalidation tombstone stays in L2: longer than any load may take.
    pub(crate) tombstone_ttl: Duration,
    pub(crate) local_tags: LocalTags,
    /// The longest an L1 entry with tags may live (and so how long tag invalidations are tracked).
    pub(crate) max_l1_lifetime: Duration,
    pub(crate) backplane: Option<Backplane>,
    /// How often the stats snapshot is published to Redis for `cachectl` (zero: never).
    pub(crate) stats_report_interval: Duration,
    /// Keys with a load running in the background (eager refresh, past a soft timeout).
    pub(crate) refreshing: Claims,
    /// Loads waiting for another instance's distributed lock.
    pub(crate) lock_waiters: LockWaiters,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    /// Invalidations that could not reach L2, replayed when it is back.
    pub(crate) pending: PendingInvalidations,
    /// The TTL jitter fraction of kinds without their own.
    pub(crate) ttl_jitter: f64,
    /// The longest L1 lifetime of entries stored while the breaker is open.
    pub(crate) breaker_open_l1_ttl: Duration,
}

/// What a coalesced load produced, shared by every caller of the flight. `X` is what a hard
/// timeout reports (uninhabited for borrowed loaders, which have none).
pub(crate) enum Outcome<T, E, X> {
    Value(Arc<T>),
    Failed(Arc<E>),
    TimedOut(X),
}

/// What an L2 read saw of a fresh entry.
pub(crate) struct Written {
    pub(crate) age: Age,
    /// The identity of the write (for a compare-and-set against it).
    pub(crate) seen: Vec<u8>,
}

pub(crate) enum L2Read<T> {
    Fresh(Arc<T>, Written),
    /// Past its freshness (fail-safe grace); with the identity of the write read.
    Stale(Arc<T>, Vec<u8>),
    /// Nothing usable: absent (`None`), or a tombstone, an undecodable value or an entry with
    /// outdated tags, identified by its first bytes.
    Miss(Option<Vec<u8>>),
    /// The read failed, timed out or was skipped by the breaker.
    Unavailable,
}

/// How a store writes to L2.
pub(crate) enum L2Write {
    /// Unconditionally (`set`).
    Overwrite,
    /// Only if L2 still holds what the load saw when it began (`None`: nothing).
    IfUnchanged(Option<Vec<u8>>),
    /// Not at all (L2 could not be read, so what it holds is unknown).
    Skip,
}

/// The single-flight key of a load of `full` begun at generation `g0`.
pub(crate) fn flight_key(full: &str, g0: u64) -> String {
    format!("{full}\u{0}{g0}")
}

/// The bytes `invalidate` leaves in L2 in place of a value.
pub(crate) fn tombstone() -> Vec<u8> {
    let now_ms = unix_ms();
    codec::tombstone(&Header {
        created_at_ms: now_ms,
        fresh_until_ms: now_ms,
        type_fp: 0,
        nonce: rand::random(),
    })
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Cache {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// A builder with every default: L1-only, 64 MiB of L1, prefix `cache`.
    pub fn builder() -> crate::CacheBuilder {
        crate::CacheBuilder::new()
    }

    /// Builds a cache from the environment (see [`CacheBuilder::from_env`](crate::CacheBuilder::from_env)
    /// for the variables).
    ///
    /// # Errors
    /// [`Error::Config`] when a variable is malformed. An unreachable Redis is not an error: the cache
    /// starts L1-only and connects in the background.
    pub async fn from_env() -> Result<Cache> {
        crate::CacheBuilder::from_env()?.build().await
    }

    pub(crate) fn kind_entry(&self, kind: &str) -> &Arc<KindEntry> {
        match self.inner.kinds.get(kind) {
            Some(k) => k,
            None => {
                if !self.inner.warned_unregistered.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        kind,
                        "kind is not registered: using the default TTL of {:?}; register it with CacheBuilder::kind",
                        self.inner.unregistered.cfg.ttl()
                    );
                }
                &self.inner.unregistered
            }
        }
    }

    /// Returns the value cached under `key` of `kind`, from L1 or L2, or `None`.
    ///
    /// A value stored as another type reads as `None`. (`T: Serialize`: a value read from L2 is
    /// weighed for L1 by walking it.)
    pub async fn get<T>(&self, kind: impl AsRef<str>, key: &str) -> Option<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        if !self.inner.enabled {
            return None;
        }
        let kind = kind.as_ref();
        let ke = self.kind_entry(kind);
        let lookup = key::LookupKey::new(ke.key_prefix.as_deref(), &self.inner.prefix, kind, key);
        if ke.cfg.tier_routing().l1() {
            let found = self.inner.l1.get(&lookup).await;
            if let Some(v) = self.l1_found::<T>(ke, found).0 {
                return Some(v);
            }
        }
        let full = lookup.to_full();
        // Boxed for the same reason as the miss path of `get_or_load_with`: an L1 hit must not
        // carry the L2 read's state machine.
        Box::pin(async move {
            let g0 = self.inner.gens.snapshot(&full);
            match self.read_l2::<T>(ke, &full, g0).await {
                L2Read::Fresh(v, _) => Some(v),
                _ => None,
            }
        })
        .await
    }

    /// Classifies what an L1 lookup found: `(fresh value, stale value, age of the fresh value)`.
    /// Counts the hit or miss. Not `async` (hot paths await moka directly): one state machine less
    /// per hit.
    pub(crate) fn l1_found<T: Send + Sync + 'static>(
        &self,
        ke: &KindEntry,
        found: Option<L1Entry>,
    ) -> (Option<Arc<T>>, Option<Arc<T>>, Option<Age>) {
        // A value stored as another type reads as a miss.
        if let Some((entry, v)) = found.and_then(|e| e.value::<T>().map(|v| (e, v))) {
            let tag_invalidated = entry.tags().is_some_and(|(tags, loaded_at)| {
                self.inner.local_tags.invalidated_since(tags, loaded_at)
            });
            if tag_invalidated {
                KindStats::inc(&ke.stats.l1_misses);
                return (None, None, None);
            }
            // Without a grace period an entry's L1 lifetime is its freshness, and moka never
            // returns an expired entry: no clock read needed.
            if self.inner.grace.is_zero() || entry.is_fresh(Instant::now()) {
                KindStats::inc(&ke.stats.l1_hits);
                provenance::note(Source::L1, entry.created_ms());
                return (Some(v), None, Some(entry.age()));
            }
            KindStats::inc(&ke.stats.l1_misses);
            provenance::note_stale_candidate(entry.created_ms());
            return (None, Some(v), None);
        }
        KindStats::inc(&ke.stats.l1_misses);
        (None, None, None)
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
        self.get_or_load_with(kind, key, &EntryOptions::default(), loader)
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
        let kind = kind.as_ref();
        let ke = self.kind_entry(kind);
        if !self.inner.enabled {
            // Boxed, as the miss path below: the loader's future must not enlarge this one.
            return Box::pin(async move {
                KindStats::inc(&ke.stats.loader_calls);
                loader().await.map(Arc::new).map_err(|e| {
                    KindStats::inc(&ke.stats.loader_errors);
                    Arc::new(e)
                })
            })
            .await;
        }
        // The L1 lookup needs no allocated key; everything after a miss does.
        let lookup = key::LookupKey::new(ke.key_prefix.as_deref(), &self.inner.prefix, kind, key);
        let mut stale = None;
        if ke.cfg.tier_routing().l1() {
            let found = self.inner.l1.get(&lookup).await;
            let (fresh, s, _) = self.l1_found::<T>(ke, found);
            if let Some(v) = fresh {
                return Ok(v);
            }
            stale = s;
        }
        // The miss path (L2, single-flight, loader, write-back) is boxed: inline, its state
        // machine made this future ~8.7 KB, which every call (hits too) paid for in stack
        // traffic (the future is moved into its caller's state); boxed it is one pointer, and the
        // allocation is only paid on a miss, next to a Redis round trip.
        let full = lookup.to_full();
        Box::pin(self.load_missed(ke, kind, full, opts, stale, loader)).await
    }

    /// [`get_or_load_with`](Self::get_or_load_with) after an L1 miss (`stale`: an entry past its
    /// freshness found there).
    async fn load_missed<T, E, F, Fut>(
        &self,
        ke: &Arc<KindEntry>,
        kind: &str,
        full: String,
        opts: &EntryOptions,
        stale: Option<Arc<T>>,
        loader: F,
    ) -> std::result::Result<Arc<T>, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        if !ke.warned_in_place.load(Ordering::Relaxed)
            && opts
                .freshness
                .resolve(ke.cfg.freshness())
                .needs_owned_loader()
            && !ke.warned_in_place.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(kind, "eager refresh and loader timeouts need an owned loader: they apply to get_or_load_owned and to #[cached] functions with refresh/xfetch/soft_timeout/hard_timeout, not to get_or_load/get_or_load_with");
        }
        match self.miss(ke, &full, opts, stale, InPlace(loader)).await {
            Ok(v) => Ok(v),
            Err(LazyError::Loader(e)) => Err(e),
            Err(LazyError::TimedOut(never)) => match never {},
        }
    }

    /// A miss of `full`: one load per key and generation, shared by every concurrent caller.
    pub(crate) async fn miss<T, E, L>(
        &self,
        ke: &Arc<KindEntry>,
        full: &str,
        opts: &EntryOptions,
        stale: Option<Arc<T>>,
        loader: L,
    ) -> std::result::Result<Arc<T>, LazyError<E, L::TimedOut>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        L: Loader<T, E>,
    {
        // Single-flight through moka's `try_get_with` on a cache that never stores anything: the init
        // future always returns `Err(outcome)`, which moka hands to every waiter without inserting.
        // We insert into L1 ourselves, after the generation check that closes the stale-set race.
        // The generation is part of the flight key, so a caller arriving after an invalidation never
        // joins a load that began before it.
        let g0 = self.inner.gens.snapshot(full);
        let res = self
            .inner
            .flights
            .try_get_with(self.miss_flight_key(full, g0), async {
                // What the load found travels with its outcome to every caller of the flight.
                let led = provenance::capture(self.load(
                    ke,
                    full,
                    opts,
                    g0,
                    stale,
                    loader,
                    LoadMode::Miss,
                ))
                .await;
                Err::<Never, _>(led)
            })
            .await;
        match res {
            Err(led) => match &*led {
                (Outcome::Value(v), trace) => {
                    provenance::joined(*trace);
                    Ok(v.clone())
                }
                (Outcome::Failed(e), _) => Err(LazyError::Loader(e.clone())),
                (Outcome::TimedOut(x), _) => Err(LazyError::TimedOut(x.clone())),
            },
            Ok(never) => match never {},
        }
    }

    /// One load of `full` (inside its flight): L2, then the distributed lock if enabled, then the
    /// loader, then the guarded write-back. `stale` is a fail-safe fallback found in L1.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn load<T, E, L>(
        &self,
        ke: &Arc<KindEntry>,
        full: &str,
        opts: &EntryOptions,
        g0: u64,
        mut stale: Option<Arc<T>>,
        loader: L,
        mode: LoadMode<T>,
    ) -> Outcome<T, E, L::TimedOut>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        L: Loader<T, E>,
    {
        let started = Instant::now();
        let policy = opts.freshness.resolve(ke.cfg.freshness());
        // A refresh serves the current value to callers that join it past its soft timeout, and
        // also after a failure when fail-safe is on.
        let (current, refreshed_from, claim) = match mode {
            LoadMode::Miss => (None, None, None),
            LoadMode::Refresh {
                current,
                created_ms,
                claim,
            } => {
                if !self.inner.grace.is_zero() {
                    stale = stale.or_else(|| Some(current.clone()));
                }
                (Some(current), Some(created_ms), Some(claim))
            }
        };
        // What the write-back may replace: exactly what L2 held when this load began. If L2 could
        // not be read, nothing is written back (the read's deadline was the caller's only wait).
        let write = match self.read_l2::<T>(ke, full, g0).await {
            L2Read::Fresh(v, written) => match refreshed_from {
                None => {
                    let due = policy.refreshes()
                        && refresh::is_due(
                            &policy,
                            written.age,
                            unix_ms(),
                            refresh::loader_time(&ke.stats),
                        );
                    if due {
                        if let Ok(owned) = loader.into_owned() {
                            self.spawn_refresh(
                                ke,
                                full,
                                opts,
                                v.clone(),
                                written.age.created_ms,
                                owned,
                            );
                        }
                    }
                    return Outcome::Value(v);
                }
                // Refreshed already (by another instance, or a load since).
                Some(created) if written.age.created_ms > created => return Outcome::Value(v),
                Some(_) => L2Write::IfUnchanged(Some(written.seen)),
            },
            L2Read::Stale(v, seen) => {
                stale = stale.or(Some(v));
                L2Write::IfUnchanged(Some(seen))
            }
            L2Read::Miss(seen) => L2Write::IfUnchanged(seen),
            L2Read::Unavailable => L2Write::Skip,
        };
        let mut lock = None;
        if policy.lock && matches!(write, L2Write::Skip) {
            // L2 could not be read (unreachable, breaker open): no lock to take, load locally.
            KindStats::inc(&ke.stats.lock_fallbacks);
        } else if policy.lock {
            // A refresh does not wait: if another instance holds the lock, it is refreshing.
            match self
                .lock_for_load::<T>(ke, full, g0, refreshed_from.is_none())
                .await
            {
                LockOutcome::Acquired(guard) => lock = Some(guard),
                LockOutcome::Filled(v) => return Outcome::Value(v),
                LockOutcome::Busy => {
                    if let Some(cur) = current {
                        return Outcome::Value(cur);
                    }
                }
                LockOutcome::Fallback => {}
            }
        }
        // Versions of the entry's tags as of now, before the loader runs.
        let (tags, write) = self.tag_versions(ke, &opts.tags, write).await;
        let ttl = jitter::jittered(
            opts.ttl.unwrap_or_else(|| ke.cfg.ttl()),
            ke.cfg.jitter().unwrap_or(self.inner.ttl_jitter),
        );
        KindStats::inc(&ke.stats.loader_calls);
        let job = LoadJob {
            ke: ke.clone(),
            full: full.to_owned(),
            ttl,
            ttl_fn: opts.ttl_fn.clone(),
            jitter: ke.cfg.jitter().unwrap_or(self.inner.ttl_jitter),
            tags,
            g0,
            started,
            loader_started: Instant::now(),
            write,
            lock,
            claim,
            refresh: refreshed_from.is_some(),
        };
        let fallback = stale.clone().or(current);
        let timeouts = Timeouts {
            soft: policy.soft_timeout.zip(fallback),
            hard: policy.hard_timeout,
        };
        match loader.run(self, job, timeouts).await {
            Run::Done(job, Ok(v)) => {
                provenance::note_loaded();
                let v = Arc::new(v);
                self.finish_ok(job, v.clone()).await;
                Outcome::Value(v)
            }
            Run::Done(job, Err(e)) => {
                let name = job.ke.name.clone();
                self.finish_failed(job, false).await;
                match stale {
                    Some(s) => {
                        KindStats::inc(&ke.stats.stale_served);
                        provenance::note_stale_served();
                        tracing::debug!(kind = %name, "loader failed: serving the stale value (fail-safe)");
                        Outcome::Value(s)
                    }
                    None => Outcome::Failed(Arc::new(e)),
                }
            }
            Run::TimedOut(job, x) => {
                self.finish_failed(job, true).await;
                match stale {
                    Some(s) => {
                        KindStats::inc(&ke.stats.stale_served);
                        Outcome::Value(s)
                    }
                    None => Outcome::TimedOut(x),
                }
            }
            Run::Detached(s) => Outcome::Value(s),
        }
    }

    /// Reads the current versions of `tags` from L2. Without them (no L2, or it failed) the entry
    /// is not written to L2, since it could not be checked against later tag invalidations.
    async fn tag_versions(
        &self,
        ke: &KindEntry,
        tags: &[String],
        write: L2Write,
    ) -> (Vec<TagVersion>, L2Write) {
        if tags.is_empty() {
            return (Vec::new(), write);
        }
        let unversioned = || tags.iter().map(|t| (t.clone(), 0)).collect();
        let Some(l2) = self
            .inner
            .l2
            .as_ref()
            .filter(|_| ke.cfg.tier_routing().l2() && !matches!(write, L2Write::Skip))
        else {
            return (unversioned(), L2Write::Skip);
        };
        let keys: Vec<String> = tags
            .iter()
            .map(|t| tags::version_key(&self.inner.prefix, t))
            .collect();
        match l2
            .get_versions(&keys)
            .instrument(tracing::debug_span!("l2.get_versions", kind = %ke.name, tags = keys.len()))
            .await
        {
            Ok(v) => (tags.iter().cloned().zip(v).collect(), write),
            Err(e) => {
                self.count_l2_error(ke, &e);
                (unversioned(), L2Write::Skip)
            }
        }
    }

    /// Reads and decodes `full` from L2, checking its tags' versions; a fresh value is copied into
    /// L1 (if the kind uses it).
    ///
    /// An entry whose invalidation (or one of whose tags' invalidation) is queued for replay reads
    /// as `Unavailable`: L2 may still hold what was invalidated.
    pub(crate) async fn read_l2<T>(&self, ke: &KindEntry, full: &str, g0: u64) -> L2Read<T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let Some(l2) = self.inner.l2.as_ref() else {
            return L2Read::Miss(None);
        };
        if !ke.cfg.tier_routing().l2() {
            return L2Read::Miss(None);
        }
        if self.inner.pending.has_key(full) {
            KindStats::inc(&ke.stats.l2_skipped);
            return L2Read::Unavailable;
        }
        let started = Instant::now();
        let bytes = match l2
            .get(full)
            .instrument(tracing::debug_span!("l2.get", kind = %ke.name))
            .await
        {
            Ok(Some(b)) => b,
            Ok(None) => {
                ke.stats.read_latency.record(started.elapsed());
                KindStats::inc(&ke.stats.l2_misses);
                return L2Read::Miss(None);
            }
            Err(e) => {
                self.count_l2_error(ke, &e);
                return L2Read::Unavailable;
            }
        };
        ke.stats.read_latency.record(started.elapsed());
        KindStats::add(&ke.stats.l2_bytes_read, bytes.len() as u64);
        let seen = codec::identity(&bytes).to_vec();
        let decoded = match codec::decode::<T>(&self.inner.codec, &bytes) {
            Ok(Some(d)) => d,
            Ok(None) => {
                // A tombstone: invalidated recently.
                KindStats::inc(&ke.stats.l2_misses);
                return L2Read::Miss(Some(seen));
            }
            Err(e) => {
                self.count_decode_error(ke, full, &e);
                KindStats::inc(&ke.stats.l2_misses);
                return L2Read::Miss(Some(seen));
            }
        };
        if !decoded.tags.is_empty() {
            if self
                .inner
                .pending
                .has_any_tag(decoded.tags.iter().map(|(t, _)| t.as_str()))
            {
                KindStats::inc(&ke.stats.l2_skipped);
                return L2Read::Unavailable;
            }
            let keys: Vec<String> = decoded
                .tags
                .iter()
                .map(|(t, _)| tags::version_key(&self.inner.prefix, t))
                .collect();
            match l2
                .get_versions(&keys)
                .instrument(
                    tracing::debug_span!("l2.get_versions", kind = %ke.name, tags = keys.len()),
                )
                .await
            {
                Ok(current) => {
                    let outdated = decoded.tags.iter().zip(&current).any(|((_, v), c)| v != c);
                    if outdated {
                        KindStats::inc(&ke.stats.l2_misses);
                        KindStats::inc(&ke.stats.tag_rejections);
                        return L2Read::Miss(Some(seen));
                    }
                }
                Err(e) => {
                    // The entry cannot be checked against tag invalidations: do not serve it.
                    self.count_l2_error(ke, &e);
                    return L2Read::Unavailable;
                }
            }
        }
        let now_ms = unix_ms();
        let value = Arc::new(decoded.value);
        if now_ms >= decoded.header.fresh_until_ms {
            KindStats::inc(&ke.stats.l2_misses);
            provenance::note_stale_candidate(decoded.header.created_at_ms);
            return L2Read::Stale(value, seen);
        }
        KindStats::inc(&ke.stats.l2_hits);
        provenance::note(Source::L2, decoded.header.created_at_ms);
        let age = Age {
            created_ms: decoded.header.created_at_ms,
            fresh_until_ms: decoded.header.fresh_until_ms,
        };
        if ke.cfg.tier_routing().l1() {
            let remaining = Duration::from_millis(decoded.header.fresh_until_ms - now_ms);
            let tag_names: Vec<String> = decoded.tags.into_iter().map(|(t, _)| t).collect();
            self.inner
                .store_l1(
                    ke,
                    full,
                    value.clone(),
                    crate::heap_size::heap_bytes(&*value),
                    remaining,
                    &tag_names,
                    g0,
                    started,
                    age,
                )
                .await;
        }
        L2Read::Fresh(value, Written { age, seen })
    }

    pub(crate) fn count_l2_error(&self, ke: &KindEntry, e: &L2Error) {
        match e {
            L2Error::Skipped => KindStats::inc(&ke.stats.l2_skipped),
            L2Error::Timeout => KindStats::inc(&ke.stats.l2_timeouts),
            L2Error::Redis(err) => {
                KindStats::inc(&ke.stats.l2_errors);
                tracing::debug!(kind = %ke.name, error = %err, "L2 operation failed");
            }
        }
    }

    fn count_decode_error(&self, ke: &KindEntry, full: &str, e: &CodecError) {
        KindStats::inc(&ke.stats.decode_errors);
        if !ke.stats.decode_error_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(kind = %ke.name, key = full, error = %e,
                "undecodable value in L2 treated as a miss (further ones are logged at debug level)");
        } else {
            tracing::debug!(kind = %ke.name, key = full, error = %e, "undecodable value in L2 treated as a miss");
        }
    }

    /// Stores a value in the kind's tiers unless a newer write or an invalidation superseded the
    /// load (`g0` is the key's generation captured before the load, `loaded_at` its start).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store<T>(
        &self,
        ke: &KindEntry,
        full: &str,
        value: Arc<T>,
        ttl: Duration,
        tags: &[TagVersion],
        g0: u64,
        loaded_at: Instant,
        write: L2Write,
    ) where
        T: Serialize + Send + Sync + 'static,
    {
        let now_ms = unix_ms();
        let payload = match codec::to_msgpack(&*value) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(kind = %ke.name, error = %e, "value cannot be serialized: kept in L1 only");
                None
            }
        };
        // Superseded by a newer write or an invalidation since the load began. A load's L2 write is
        // a compare-and-set that decides for itself; everything else is dropped.
        let superseded = self.inner.gens.snapshot(full) != g0;
        if superseded && !matches!(write, L2Write::IfUnchanged(_)) {
            return;
        }
        let l2 = self
            .inner
            .l2
            .as_ref()
            .filter(|_| ke.cfg.tier_routing().l2());
        // A `set` whose value does not reach L2 leaves the older value there for other
        // instances: queue an invalidation of it (a timed-out write may still land: the
        // tombstone then removes it, a miss either way).
        let overwrite = matches!(write, L2Write::Overwrite);
        let unwritten = |cache: &Self| {
            if overwrite {
                cache.queue_invalidation(PendingOp::Key(full.to_owned()));
            }
        };
        if let (Some(l2), L2Write::Skip) = (l2, &write) {
            let _ = l2;
            KindStats::inc(&ke.stats.l2_skipped);
        } else if let Some(l2) = l2.filter(|l2| l2.breaker.is_rejecting()) {
            // Breaker open: the write is dropped (and counted) before any encoding work.
            l2.breaker.count_rejected();
            KindStats::inc(&ke.stats.l2_skipped);
            unwritten(self);
        } else if l2.is_some() && !self.inner.pending.is_empty() {
            // Invalidations made during an outage are replayed before writes resume.
            KindStats::inc(&ke.stats.l2_skipped);
            unwritten(self);
        } else if let (Some(l2), Some(payload)) = (l2, payload.as_ref()) {
            let header = Header {
                created_at_ms: now_ms,
                fresh_until_ms: now_ms.saturating_add(ttl.as_millis() as u64),
                type_fp: codec::type_fingerprint::<T>(),
                nonce: rand::random(),
            };
            match codec::seal(&self.inner.codec, &header, tags, payload) {
                Ok(bytes) => {
                    let started = Instant::now();
                    let px = ttl + self.inner.grace;
                    let res = match &write {
                        L2Write::IfUnchanged(seen) => l2
                            .set_if_unchanged(full, seen.as_deref(), &bytes, px)
                            .instrument(tracing::debug_span!(
                                "l2.set_if_unchanged",
                                kind = %ke.name,
                                bytes = bytes.len()
                            ))
                            .await
                            .inspect(|&written| {
                                if !written {
                                    KindStats::inc(&ke.stats.l2_write_conflicts);
                                }
                            }),
                        _ => l2
                            .set(full, &bytes, px)
                            .instrument(tracing::debug_span!(
                                "l2.set",
                                kind = %ke.name,
                                bytes = bytes.len()
                            ))
                            .await
                            .map(|()| true),
                    };
                    match res {
                        Ok(true) => {
                            ke.stats.write_latency.record(started.elapsed());
                            KindStats::inc(&ke.stats.l2_writes);
                            KindStats::add(&ke.stats.l2_bytes_written, bytes.len() as u64);
                            KindStats::add(&ke.stats.l2_raw_bytes_written, payload.len() as u64);
                            KindStats::add(
                                &ke.stats.l2_payload_bytes_written,
                                bytes.len().saturating_sub(codec::envelope_overhead(tags)) as u64,
                            );
                        }
                        Ok(false) => {}
                        Err(e) => {
                            self.count_l2_error(ke, &e);
                            unwritten(self);
                        }
                    }
                }
                Err(CodecError::TooLarge { size, max }) => {
                    KindStats::inc(&ke.stats.oversized);
                    tracing::debug!(kind = %ke.name, size, max, "value over the maximum size: not written to L2");
                }
                Err(e) => tracing::warn!(kind = %ke.name, error = %e, "value cannot be encoded"),
            }
        }
        if ke.cfg.tier_routing().l1() && !superseded {
            let mut g = g0;
            if matches!(write, L2Write::Overwrite) {
                // A load on this instance that read L2 just before our write must not put the older
                // value into L1 after ours: supersede it now that L2 holds the new value.
                self.inner.gens.bump(full);
                g = self.inner.gens.snapshot(full);
            }
            let size = crate::heap_size::heap_bytes(&*value);
            let names: Vec<String> = tags.iter().map(|(t, _)| t.clone()).collect();
            let age = Age {
                created_ms: now_ms,
                fresh_until_ms: now_ms.saturating_add(ttl.as_millis() as u64),
            };
            self.inner
                .store_l1(ke, full, value, size, ttl, &names, g, loaded_at, age)
                .await;
        }
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
        if !self.inner.enabled {
            return;
        }
        let kind = kind.as_ref();
        let ke = self.kind_entry(kind);
        KindStats::inc(&ke.stats.sets);
        let full = key::full_key(&self.inner.prefix, kind, key);
        self.inner.gens.bump(&full);
        let g0 = self.inner.gens.snapshot(&full);
        let started = Instant::now();
        let (tags, write) = self.tag_versions(ke, &opts.tags, L2Write::Overwrite).await;
        let ttl = jitter::jittered(
            opts.ttl_for(&value).unwrap_or_else(|| ke.cfg.ttl()),
            ke.cfg.jitter().unwrap_or(self.inner.ttl_jitter),
        );
        self.store(ke, &full, Arc::new(value), ttl, &tags, g0, started, write)
            .await;
        backplane::publish(&self.inner, Message::Key(&full)).await;
    }

    /// Removes `key` of `kind` from L1 and L2 on every instance. In L2 a short-lived tombstone
    /// replaces the value, so that loads which began before this call (here or on other instances)
    /// cannot store their now-stale result afterwards.
    pub async fn invalidate(&self, kind: impl AsRef<str>, key: &str) {
        let kind = kind.as_ref();
        let ke = self.kind_entry(kind);
        KindStats::inc(&ke.stats.invalidations);
        let full = key::full_key(&self.inner.prefix, kind, key);
        // Order matters: L2 first, then supersede local loads and drop L1. A load that read L2
        // before the tombstone landed then always has its L1 insert undone.
        if let (Some(l2), true) = (self.inner.l2.as_ref(), ke.cfg.tier_routing().l2()) {
            if let Err(e) = l2
                .set(&full, &tombstone(), self.inner.tombstone_ttl)
                .instrument(tracing::debug_span!("l2.set", kind, tombstone = true))
                .await
            {
                self.count_l2_error(ke, &e);
                tracing::warn!(
                    kind,
                    key,
                    "invalidation could not reach L2: queued, replayed when L2 is back"
                );
                self.queue_invalidation(PendingOp::Key(full.clone()));
            }
        }
        self.inner.gens.bump(&full);
        self.inner.l1.invalidate(&full).await;
        backplane::publish(&self.inner, Message::Key(&full)).await;
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
        for t in tags {
            self.inner.local_tags.mark(t);
        }
        if let Some(l2) = self.inner.l2.as_ref() {
            let keys: Vec<String> = tags
                .iter()
                .map(|t| tags::version_key(&self.inner.prefix, t))
                .collect();
            if let Err(e) = l2
                .incr_versions(&keys, tags::TAG_VERSION_TTL)
                .instrument(tracing::debug_span!("l2.incr_versions", tags = keys.len()))
                .await
            {
                self.count_l2_error(&self.inner.unregistered, &e);
                tracing::warn!(
                    ?tags,
                    "tag invalidation could not reach L2: queued, replayed when L2 is back"
                );
                for t in tags {
                    self.queue_invalidation(PendingOp::Tag((*t).to_owned()));
                }
            }
        }
        for t in tags {
            backplane::publish(&self.inner, Message::Tag(t)).await;
        }
    }

    /// Removes every entry of `kind` from L1 and L2 (SCAN + UNLINK, never KEYS). Returns the number
    /// of L2 keys removed.
    ///
    /// # Errors
    /// An L2 error or timeout: L1 is cleared anyway, L2 may be partly cleared.
    pub async fn clear_kind(&self, kind: impl AsRef<str>) -> Result<u64> {
        let kind = kind.as_ref();
        let l1_prefix = key::kind_key_prefix(&self.inner.prefix, kind);
        let removed = match &self.inner.l2 {
            Some(l2) => l2
                .unlink_matching(&key::kind_pattern(&self.inner.prefix, kind))
                .instrument(tracing::debug_span!("l2.unlink_matching", kind))
                .await
                .map_err(Error::from),
            None => Ok(0),
        };
        // After L2, as in `invalidate`: loads that read L2 before the sweep lose their L1 insert.
        self.inner.gens.bump_all();
        self.inner.l1.invalidate_prefix(&l1_prefix).await;
        let removed = removed?;
        backplane::publish(&self.inner, Message::Clear(&l1_prefix)).await;
        Ok(removed)
    }

    /// Removes every entry of this cache (all kinds under its prefix) from L1 and L2. Keys of other
    /// prefixes are untouched. Returns the number of L2 keys removed.
    ///
    /// # Errors
    /// An L2 error or timeout: L1 is cleared anyway, L2 may be partly cleared.
    pub async fn clear_all(&self) -> Result<u64> {
        let removed = match &self.inner.l2 {
            Some(l2) => l2
                .unlink_matching(&key::prefix_pattern(&self.inner.prefix))
                .instrument(tracing::debug_span!("l2.unlink_matching", kind = "*"))
                .await
                .map_err(Error::from),
            None => Ok(0),
        };
        self.inner.gens.bump_all();
        self.inner.l1.invalidate_all();
        let removed = removed?;
        backplane::publish(&self.inner, Message::Clear("")).await;
        Ok(removed)
    }

    /// A snapshot of the counters, per tier and per kind.
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let mut kinds = std::collections::BTreeMap::new();
        let all = inner
            .kinds
            .values()
            .chain(std::iter::once(&inner.unregistered));
        for k in all.clone() {
            let mut t = stats::summarize([&k.stats]);
            t.l1.max_bytes = inner.l1.max_bytes();
            kinds.insert(k.name.clone(), t);
        }
        let mut total = stats::summarize(all.map(|k| &k.stats));
        total.l1.entries = inner.l1.entries();
        total.l1.bytes = inner.l1.bytes();
        total.l1.max_bytes = inner.l1.max_bytes();
        total.l1.evictions = inner.l1.evictions();
        Stats {
            prefix: inner.prefix.clone(),
            l2_configured: inner.l2.is_some(),
            breaker: inner.l2.as_ref().map(|l2| BreakerStats {
                state: l2.breaker.state(),
                opens: l2.breaker.opens(),
                rejected: l2.breaker.rejected(),
            }),
            backplane: inner.backplane.as_ref().map(|bp| BackplaneStats {
                subscribed: bp.is_subscribed(),
                received: bp.received.load(Ordering::Relaxed),
                published: bp.published.load(Ordering::Relaxed),
                publish_failures: bp.publish_failures.load(Ordering::Relaxed),
                disconnects: bp.disconnects.load(Ordering::Relaxed),
                resyncs: bp.resyncs.load(Ordering::Relaxed),
            }),
            tracked_tag_invalidations: inner.local_tags.len() as u64,
            pending_invalidations: PendingInvalidationStats {
                pending: inner.pending.len() as u64,
                queued: inner.pending.queued.load(Ordering::Relaxed),
                replayed: inner.pending.replayed.load(Ordering::Relaxed),
                dropped: inner.pending.dropped.load(Ordering::Relaxed),
            },
            total,
            kinds,
        }
    }

    /// Applies moka's pending maintenance so that entry counts and sizes in [`stats`](Self::stats)
    /// are exact (they are otherwise updated lazily).
    pub async fn sync(&self) {
        self.inner.l1.sync().await;
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
            .map_err(|e| match e {
                L2Error::Timeout => Error::Timeout(l2.op_timeout()),
                other => other.into(),
            })
    }

    /// Queues an invalidation that could not reach L2, for replay when it is back.
    fn queue_invalidation(&self, op: PendingOp) {
        self.inner.pending.push(op);
    }

    /// The key prefix of this cache.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Whether the backplane subscription is up (`false` without an L2 or with the backplane off).
    pub fn backplane_subscribed(&self) -> bool {
        self.inner
            .backplane
            .as_ref()
            .is_some_and(Backplane::is_subscribed)
    }
}

/// The value type of the single-flight map: uninhabited, so the type system proves nothing is
/// ever stored in it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Never {}

impl Inner {
    /// Inserts into L1 (L1 TTL cap; shorter lifetimes while the backplane or L2 is out; tagged
    /// entries bounded by the tag-tracking window), and takes the entry back out if an
    /// invalidation raced the insert. Shared by loads, `set` and warming.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_l1<T>(
        &self,
        ke: &KindEntry,
        full: &str,
        value: Arc<T>,
        size: usize,
        ttl: Duration,
        tags: &[String],
        g0: u64,
        loaded_at: Instant,
        age: Age,
    ) where
        T: Send + Sync + 'static,
    {
        let mut fresh_for = ke.cfg.l1_ttl_cap().map_or(ttl, |cap| cap.min(ttl));
        if let Some(bp) = self.backplane.as_ref() {
            if !bp.is_subscribed() {
                // Invalidations from other instances cannot reach us now: keep L1 copies short.
                fresh_for = fresh_for.min(bp.unsynced_l1_ttl);
            }
        }
        if self.l2.as_ref().is_some_and(|l2| l2.breaker.is_rejecting()) {
            // Nor while L2 is skipped: other instances' invalidations are not reaching Redis.
            fresh_for = fresh_for.min(self.breaker_open_l1_ttl);
        }
        if !tags.is_empty() {
            // Tag invalidations are tracked for `max_l1_lifetime`: a tagged entry must not outlive it.
            fresh_for = fresh_for.min(self.max_l1_lifetime);
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let entry = L1Entry::new(
            value,
            size,
            &ke.stats.l1,
            fresh_for,
            self.grace,
            token,
            loaded_at,
            tags,
            age,
        );
        self.l1.insert(full.to_owned(), entry).await;
        // An invalidation between our generation check and the insert: take our entry back out.
        if self.gens.snapshot(full) != g0 {
            self.l1.remove_if_token(full, token).await;
        }
    }
}
