//! Per-call options of a load or a write: TTL (fixed or computed from the value), tags, and the
//! freshness overrides of [`KindConfig`](crate::KindConfig).

use std::sync::Arc;
use std::time::Duration;

use crate::freshness::Freshness;
use crate::jitter;

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
    schema: Option<Arc<str>>,
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

    /// The TTL an entry holding `value` is stored with: computed from the value, else fixed, else
    /// `kind_ttl`; cut by the jitter `fraction` (see the `jitter` module).
    pub(crate) fn entry_ttl<T: 'static>(
        &self,
        value: &T,
        kind_ttl: Duration,
        fraction: f64,
    ) -> Duration {
        jitter::jittered(self.ttl_for(value).unwrap_or(kind_ttl), fraction)
    }
}
