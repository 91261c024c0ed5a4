//! Per-call options of a load or a write: TTL (fixed or computed from the value, zero meaning "do
//! not store"), negative caching, tags, schema, the distributed lock ([`EntryOptions`]); and, for
//! loaders that can outlive the call, the freshness overrides of [`KindConfig`](crate::KindConfig)
//! ([`OwnedOptions`]).

use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{shape_of, Shape};
use crate::freshness::Freshness;
use crate::jitter;

/// The longest time the cache keeps anything: 100 years (of 365 days).
///
/// Builder settings and [`KindConfig`](crate::KindConfig) TTLs above it are refused by
/// [`CacheBuilder::build`](crate::CacheBuilder::build) ([`Error::Config`](crate::Error::Config));
/// per-call TTLs ([`EntryOptions::ttl`], [`ttl_with`](EntryOptions::ttl_with),
/// [`none_ttl`](EntryOptions::none_ttl), [`error_ttl`](EntryOptions::error_ttl)) are cut to it, so
/// `Duration::MAX` means "as long as the cache keeps anything". It keeps every deadline and expiry
/// the cache computes (instants, Unix milliseconds, Redis' `PX`) far from overflowing.
///
/// ```
/// use cache_core::{EntryOptions, MAX_TTL};
/// use std::time::Duration;
/// assert_eq!(MAX_TTL, Duration::from_secs(100 * 365 * 24 * 3600));
/// assert_eq!(EntryOptions::new().ttl(Duration::MAX).ttl_override(), Some(MAX_TTL));
/// ```
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Options of one write or load.
///
/// ```
/// use cache_core::EntryOptions;
/// use std::time::Duration;
/// let opts = EntryOptions::new().ttl(Duration::from_secs(30));
/// assert_eq!(opts.ttl_override(), Some(Duration::from_secs(30)));
/// ```
///
/// # A zero TTL means "do not store"
/// A TTL of zero (fixed, computed by [`ttl_with`](Self::ttl_with), or a zero
/// [`none_ttl`](Self::none_ttl) / [`error_ttl`](Self::error_ttl)) stores nothing in either tier
/// and writes nothing to Redis: a load returns its value uncached, and a `set` with a zero TTL
/// removes the key everywhere (the older value must not stay), like `invalidate`.
///
/// # Negative caching
/// For values that can be absent or failed (`Option<T>`, `Result<T, E>` loaded with an infallible
/// loader), [`none_ttl`](Self::none_ttl) and [`error_ttl`](Self::error_ttl) give `None` and `Err`
/// their own, usually short, TTL:
///
/// ```
/// use cache_core::{Cache, EntryOptions, Kind};
/// use std::convert::Infallible;
/// use std::time::Duration;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = Cache::builder().prefix("docs-negative").build().await?;
/// // A user that does not exist is remembered for 30 s, an existing one for the kind's TTL.
/// let opts = EntryOptions::new().none_ttl(Duration::from_secs(30));
/// let user = cache
///     .get_or_load_with(Kind::DATABASE_QUERY, "user:404", &opts, || async {
///         Ok::<Option<String>, Infallible>(None)
///     })
///     .await
///     .unwrap();
/// assert!(user.is_none());
/// # Ok::<_, cache_core::Error>(())
/// # }).unwrap();
/// ```
///
/// The freshness settings of a kind (eager refresh, loader timeouts) can be overridden per call
/// only where they can apply, with [`OwnedOptions`] on
/// [`Cache::get_or_load_owned`](crate::Cache::get_or_load_owned).
#[derive(Debug, Clone, Default)]
pub struct EntryOptions {
    ttl: Option<Duration>,
    tags: Vec<String>,
    ttl_fn: Option<TtlFn>,
    schema: Option<Arc<str>>,
    none_ttl: Option<Duration>,
    error_ttl: Option<Duration>,
    lock: Option<bool>,
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

    /// The TTL of this entry; zero: do not store it (see above); at most [`MAX_TTL`] (longer is
    /// cut to it). Default: the kind's TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl.min(MAX_TTL));
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

    /// The schema of the value, for this call (see [`KindConfig::schema`](crate::KindConfig::schema),
    /// which it overrides). Default: the kind's.
    #[must_use]
    pub fn schema(mut self, id: impl Into<Arc<str>>) -> Self {
        self.schema = Some(id.into());
        self
    }

    /// The schema of this call, if set.
    pub fn schema_id(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The TTL computed from the value being stored, for values of type `T` (what a load returns,
    /// or what [`Cache::set_with`](crate::Cache::set_with) stores): for instance a short TTL for an
    /// empty result, or the `max-age` an API response carries (`max-age=0`: a zero duration, not
    /// stored). Takes precedence over [`ttl`](Self::ttl) for values of type `T`; values of other
    /// types get the fixed TTL. A TTL above [`MAX_TTL`] is cut to it. Default: none.
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
            v.downcast_ref::<T>().and_then(&ttl).map(|d| d.min(MAX_TTL))
        })));
        self
    }

    /// Negative caching: how long an absent value (`None`, from a loader or a `set`) is kept;
    /// zero: absent values are not cached at all. Applies to values whose `Serialize` impl says
    /// "none" (an `Option<T>` that is `None`). Takes precedence over the other TTLs for such values.
    /// At most [`MAX_TTL`] (longer is cut to it). Default: absent values are cached like any other.
    #[must_use]
    pub fn none_ttl(mut self, ttl: Duration) -> Self {
        self.none_ttl = Some(ttl.min(MAX_TTL));
        self
    }

    /// Error caching: how long a failed value (the `Err` of a `Result<T, E>` stored as the value,
    /// e.g. by a loader returning `Ok::<Result<T, E>, Infallible>(...)`) is kept, so that a failing
    /// origin is not asked again at once; zero: errors are not cached; at most [`MAX_TTL`] (longer
    /// is cut to it). Default: cached like any other value.
    #[must_use]
    pub fn error_ttl(mut self, ttl: Duration) -> Self {
        self.error_ttl = Some(ttl.min(MAX_TTL));
        self
    }

    /// Distributed single-flight for this call (see
    /// [`KindConfig::distributed_lock`](crate::KindConfig::distributed_lock)); `false` turns it
    /// off for a kind that has it. Default: the kind's setting.
    #[must_use]
    pub fn distributed_lock(mut self, on: bool) -> Self {
        self.lock = Some(on);
        self
    }

    /// Whether nothing loaded with these options can be stored (a fixed zero TTL, and nothing
    /// that could compute another): a load then neither leases its key nor writes it back.
    /// Whether absent values get their own TTL ([`none_ttl`](Self::none_ttl)): the batch loads
    /// then remember the keys their loader did not return.
    pub(crate) fn none_ttl_set(&self) -> bool {
        self.none_ttl.is_some()
    }

    pub(crate) fn never_stores(&self) -> bool {
        self.ttl == Some(Duration::ZERO)
            && self.ttl_fn.is_none()
            && self.none_ttl.is_none_or(|d| d.is_zero())
            && self.error_ttl.is_none_or(|d| d.is_zero())
    }

    /// The per-call freshness settings of a borrowed loader: the lock only.
    pub(crate) fn lock_override(&self) -> Freshness {
        Freshness {
            lock: self.lock,
            ..Freshness::default()
        }
    }

    /// The TTL for `value`: computed, else fixed; `None`: the kind's TTL.
    pub(crate) fn ttl_for<T: 'static>(&self, value: &T) -> Option<Duration> {
        self.ttl_fn
            .as_ref()
            .and_then(|f| f.ttl_of(value))
            .or(self.ttl)
    }

    /// The TTL an entry holding `value` is stored with: the negative-caching TTL of an absent or
    /// failed value, else computed from the value, else fixed, else `kind_ttl`; cut by the jitter
    /// `fraction` (see the `jitter` module). Zero (do not store) stays zero.
    pub(crate) fn entry_ttl<T: Serialize + 'static>(
        &self,
        value: &T,
        kind_ttl: Duration,
        fraction: f64,
    ) -> Duration {
        let negative = match (self.none_ttl, self.error_ttl) {
            (None, None) => None,
            (none, error) => match shape_of(value) {
                Shape::Absent => none,
                Shape::Error => error,
                Shape::Value => None,
            },
        };
        let ttl = negative
            .or_else(|| self.ttl_for(value))
            .unwrap_or(kind_ttl)
            .min(MAX_TTL);
        if ttl.is_zero() {
            return Duration::ZERO;
        }
        jitter::jittered(ttl, fraction)
    }
}

/// Options of a load whose loader can outlive the call
/// ([`Cache::get_or_load_owned`](crate::Cache::get_or_load_owned)): the [`EntryOptions`] and the
/// freshness settings of a kind ([`KindConfig`](crate::KindConfig)) for this call; a per-call
/// value wins over the kind's.
///
/// ```
/// use cache_core::{EntryOptions, OwnedOptions};
/// use std::time::Duration;
/// let opts = OwnedOptions::from(EntryOptions::new().ttl(Duration::from_secs(60)))
///     .eager_refresh(0.8)
///     .soft_timeout(Duration::from_millis(100))
///     .hard_timeout(Duration::from_secs(2));
/// assert_eq!(opts.entry().ttl_override(), Some(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct OwnedOptions {
    entry: EntryOptions,
    pub(crate) freshness: Freshness,
}

impl OwnedOptions {
    /// Options with every default (the kind's settings).
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry options (TTL, tags, ...).
    pub fn entry(&self) -> &EntryOptions {
        &self.entry
    }

    /// These freshness settings with `entry` as the entry options.
    pub(crate) fn with_entry(self, entry: EntryOptions) -> Self {
        Self { entry, ..self }
    }

    /// The resolved per-call freshness: these settings, and the lock of the entry options.
    pub(crate) fn per_call(&self) -> Freshness {
        Freshness {
            lock: self.entry.lock,
            ..self.freshness
        }
    }
}

/// Per-call freshness settings.
impl OwnedOptions {
    /// Eager refresh for this call (see [`KindConfig::eager_refresh`](crate::KindConfig::eager_refresh)): read after this fraction
    /// of its TTL, the entry is refreshed once in the background. A value outside `(0, 1)` (for
    /// example `1.0`) turns it off for this call. Only [`Cache::get_or_load_owned`](crate::Cache::get_or_load_owned) refreshes.
    /// Default: the kind's setting.
    #[must_use]
    pub fn eager_refresh(mut self, fraction: f64) -> Self {
        self.freshness.refresh_at = Some(fraction);
        self
    }

    /// XFetch probabilistic early refresh for this call (see [`KindConfig::xfetch`](crate::KindConfig::xfetch)). A beta that
    /// is not finite and above 0 turns it off. Default: the kind's setting.
    #[must_use]
    pub fn xfetch(mut self, beta: f64) -> Self {
        self.freshness.xfetch_beta = Some(beta);
        self
    }

    /// Soft loader timeout for this call (see [`KindConfig::soft_timeout`](crate::KindConfig::soft_timeout)); ignored when not
    /// shorter than the hard timeout. Default: the kind's setting.
    #[must_use]
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.freshness.soft_timeout = Some(timeout);
        self
    }

    /// Hard loader timeout for this call (see [`KindConfig::hard_timeout`](crate::KindConfig::hard_timeout)); zero means none.
    /// Default: the kind's setting.
    #[must_use]
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.freshness.hard_timeout = Some(timeout);
        self
    }
}

impl From<EntryOptions> for OwnedOptions {
    fn from(entry: EntryOptions) -> Self {
        Self {
            entry,
            freshness: Freshness::default(),
        }
    }
}

impl From<&EntryOptions> for OwnedOptions {
    fn from(entry: &EntryOptions) -> Self {
        entry.clone().into()
    }
}

impl From<&OwnedOptions> for OwnedOptions {
    fn from(o: &OwnedOptions) -> Self {
        o.clone()
    }
}
