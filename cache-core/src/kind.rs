//! Named kinds of cached data, each with a default TTL and a tier routing, and the registry of a
//! cache's kinds (their settings, stats and precomputed key prefixes).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::{borrow::Cow, fmt, time::Duration};

use crate::freshness::Freshness;
use crate::stats::KindStats;

/// A named kind of cached data (`api_response`, `session_data`, ...). The kind is part of the Redis
/// key, picks the default TTL and the tiers used, and has its own stats.
///
/// Six kinds are built in; register your own with
/// [`CacheBuilder::kind`](crate::CacheBuilder::kind).
///
/// ```
/// use cache_core::Kind;
/// assert_eq!(Kind::API_RESPONSE.name(), "api_response");
/// assert_eq!(Kind::API_RESPONSE.default_ttl().unwrap().as_secs(), 300);
/// let custom = Kind::new("llm_answer");
/// assert_eq!(custom.default_ttl(), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Kind(Cow<'static, str>);

impl Kind {
    /// ML model outputs and metadata. Default TTL 3600 s.
    pub const MODEL_DATA: Kind = Kind::from_static("model_data");
    /// User sessions. Default TTL 1800 s.
    pub const SESSION_DATA: Kind = Kind::from_static("session_data");
    /// Responses of external APIs. Default TTL 300 s.
    pub const API_RESPONSE: Kind = Kind::from_static("api_response");
    /// Database query results. Default TTL 600 s.
    pub const DATABASE_QUERY: Kind = Kind::from_static("database_query");
    /// Results of expensive computations. Default TTL 1800 s.
    pub const HEAVY_COMPUTATION: Kind = Kind::from_static("heavy_computation");
    /// Rarely changing reference data. Default TTL 7200 s.
    pub const STATIC_DATA: Kind = Kind::from_static("static_data");

    /// The built-in kinds with their default TTLs.
    pub const BUILT_IN: [(Kind, u64); 6] = [
        (Kind::MODEL_DATA, 3600),
        (Kind::SESSION_DATA, 1800),
        (Kind::API_RESPONSE, 300),
        (Kind::DATABASE_QUERY, 600),
        (Kind::HEAVY_COMPUTATION, 1800),
        (Kind::STATIC_DATA, 7200),
    ];

    /// A kind from a static name (usable in `const`).
    pub const fn from_static(name: &'static str) -> Kind {
        Kind(Cow::Borrowed(name))
    }

    /// A kind by name. Names are ASCII letters, digits, `_`, `-`, `.`, at most 64 bytes; the cache
    /// refuses to register other names.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Kind {
        Kind(name.into())
    }

    /// The kind's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The default TTL of a built-in kind; `None` for other kinds.
    pub fn default_ttl(&self) -> Option<Duration> {
        Kind::BUILT_IN
            .iter()
            .find(|(k, _)| k.0 == self.0)
            .map(|(_, s)| Duration::from_secs(*s))
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kind({})", self.0)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Kind {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Kind {
    fn from(s: &'static str) -> Self {
        Kind::from_static(s)
    }
}

/// Which tiers a kind uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Tiers {
    /// In-process L1 in front of Redis L2 (the default).
    #[default]
    Both,
    /// Only the in-process L1 (data that must not leave the process, or is cheap to recompute).
    L1Only,
    /// Only Redis (large values that would crowd L1, or data that must be coherent at once).
    L2Only,
}

impl Tiers {
    pub(crate) fn l1(self) -> bool {
        matches!(self, Tiers::Both | Tiers::L1Only)
    }
    pub(crate) fn l2(self) -> bool {
        matches!(self, Tiers::Both | Tiers::L2Only)
    }
}

/// Settings of one kind.
///
/// ```
/// use cache_core::{KindConfig, Tiers};
/// use std::time::Duration;
/// let cfg = KindConfig::new(Duration::from_secs(60))
///     .tiers(Tiers::Both)
///     .l1_ttl(Duration::from_secs(10));
/// assert_eq!(cfg.ttl(), Duration::from_secs(60));
/// ```
///
/// # Freshness and origin protection
/// A kind can also refresh hot entries before they expire, bound its loaders' time, share one
/// load between instances and spread its expiries:
///
/// ```
/// use cache_core::KindConfig;
/// use std::time::Duration;
/// let cfg = KindConfig::new(Duration::from_secs(600))
///     .eager_refresh(0.8) // read after 480 s: refreshed in the background
///     .soft_timeout(Duration::from_millis(200)) // stale value after 200 ms if there is one
///     .hard_timeout(Duration::from_secs(5)) // Error::LoaderTimeout after 5 s
///     .distributed_lock(true) // one loader call per cold key across instances
///     .ttl_jitter(0.1); // TTLs cut by 0-10% at random
/// assert_eq!(cfg.eager_refresh_fraction(), Some(0.8));
/// ```
///
/// Two configs are equal when they set the same settings to the same values: a setting set to its
/// default differs from one left unset, which a config file can still set
/// ([`CacheBuilder::kind`](crate::CacheBuilder::kind)).
#[derive(Debug, Clone, PartialEq)]
pub struct KindConfig {
    ttl: Duration,
    opts: KindOptions,
}

/// Every setting of a kind but its TTL, each `None` when not set: what a layer of settings (code,
/// a config file) gives, merged with [`over`](Self::over) before the defaults apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KindOptions {
    pub(crate) l1_ttl: Option<Duration>,
    pub(crate) tiers: Option<Tiers>,
    pub(crate) freshness: Freshness,
    pub(crate) ttl_jitter: Option<f64>,
    pub(crate) schema: Option<Cow<'static, str>>,
    pub(crate) load_cost: Option<f64>,
    pub(crate) hit_rate_target: Option<f64>,
}

impl KindOptions {
    /// Each setting of `self`, and `lower`'s where `self` has none.
    pub(crate) fn over(self, lower: &KindOptions) -> KindOptions {
        let KindOptions {
            l1_ttl,
            tiers,
            freshness,
            ttl_jitter,
            schema,
            load_cost,
            hit_rate_target,
        } = self;
        KindOptions {
            l1_ttl: l1_ttl.or(lower.l1_ttl),
            tiers: tiers.or(lower.tiers),
            freshness: freshness.over(&lower.freshness),
            ttl_jitter: ttl_jitter.or(lower.ttl_jitter),
            schema: schema.or_else(|| lower.schema.clone()),
            load_cost: load_cost.or(lower.load_cost),
            hit_rate_target: hit_rate_target.or(lower.hit_rate_target),
        }
    }
}

impl KindConfig {
    /// A kind with this default TTL, using both tiers, with the L1 TTL equal to the TTL. At most
    /// [`MAX_TTL`](crate::MAX_TTL) (100 years): `build()` refuses a longer one
    /// ([`Error::Config`](crate::Error::Config)), as it refuses a zero one.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            opts: KindOptions::default(),
        }
    }

    /// A kind of this TTL with these settings.
    pub(crate) fn from_parts(ttl: Duration, opts: KindOptions) -> Self {
        Self { ttl, opts }
    }

    /// The TTL and the other settings apart.
    pub(crate) fn into_parts(self) -> (Duration, KindOptions) {
        (self.ttl, self.opts)
    }

    /// The schema of the kind's values: a name you choose for the *shape* of the serialized type
    /// (for example `"profile-v3"`), stored in each L2 entry instead of the Rust type name. Without
    /// it, entries are identified by `std::any::type_name`, so moving the struct to another module,
    /// renaming it or a compiler that prints type names differently turns every L2 entry into a
    /// miss at the next deploy, and the origin takes the whole load at once.
    ///
    /// Bump it (`"profile-v4"`) when the serialized form changes in a way older entries cannot be
    /// read as: a field renamed, removed or retyped, a new field without `#[serde(default)]`, enum
    /// variants changed. No bump is needed to move or rename the Rust type, to add an optional
    /// field with a serde default, or to upgrade the compiler. A mismatch is a miss, never a wrong
    /// value; so is bytes that do not decode as the type despite a matching schema.
    ///
    /// One schema names one type: every value of the kind must then be of that type (values of
    /// another type under the same schema would be decoded as it). A per-call schema
    /// ([`EntryOptions::schema`](crate::EntryOptions::schema), `#[cached(schema = "...")]`) wins
    /// over the kind's. `build()` rejects an empty name or one over 128 bytes. Default: none (the
    /// type name).
    ///
    /// ```
    /// use cache_core::KindConfig;
    /// use std::time::Duration;
    /// let cfg = KindConfig::new(Duration::from_secs(600)).schema("profile-v3");
    /// assert_eq!(cfg.schema_id(), Some("profile-v3"));
    /// ```
    #[must_use]
    pub fn schema(mut self, id: impl Into<Cow<'static, str>>) -> Self {
        self.opts.schema = Some(id.into());
        self
    }

    /// The schema set with [`schema`](Self::schema).
    pub fn schema_id(&self) -> Option<&str> {
        self.opts.schema.as_deref()
    }

    /// Eager refresh: when an entry is read after this fraction of its TTL has passed (for
    /// example `0.8`: after 80%), the read returns the current value at once and the loader runs
    /// once in the background (one refresh per key at a time, however many readers) to replace
    /// it. The refresh obeys the same guards as a load: if the key is invalidated or set while it
    /// runs, its result is not stored.
    ///
    /// Applies to [`Cache::get_or_load_owned`](crate::Cache::get_or_load_owned), whose loader can
    /// outlive the call; `get_or_load`/`get_or_load_with` borrow their loader and cannot refresh in
    /// the background. `build()` rejects a fraction outside `(0, 1)`. Default: off.
    #[must_use]
    pub fn eager_refresh(mut self, fraction: f64) -> Self {
        self.opts.freshness.refresh_at = Some(fraction);
        self
    }

    /// Probabilistic early refresh (XFetch, Vattani et al., VLDB 2015): each read refreshes in the
    /// background with a probability that grows as expiry nears, scaled by `beta` (1.0 is the
    /// paper's default; above 1 favours earlier refreshes) and by the kind's recent loader time.
    /// Readers of a hot key thus refresh it shortly before it expires, and rarely at the same
    /// time. Combined with [`eager_refresh`](Self::eager_refresh), whichever fires first wins.
    ///
    /// As eager refresh, it needs [`Cache::get_or_load_owned`](crate::Cache::get_or_load_owned).
    /// `build()` rejects a beta that is not finite and above 0. Default: off.
    #[must_use]
    pub fn xfetch(mut self, beta: f64) -> Self {
        self.opts.freshness.xfetch_beta = Some(beta);
        self
    }

    /// Soft loader timeout: when a load takes longer than this and a stale value is at hand (kept
    /// by [`fail_safe_grace`](crate::CacheBuilder::fail_safe_grace), or the current value of an
    /// entry being refreshed), callers get the stale value and the load goes on in the background,
    /// updating the cache when it completes (still bounded by the hard timeout). Without a stale
    /// value it has no effect. Counted from the loader's start.
    ///
    /// Needs [`Cache::get_or_load_owned`](crate::Cache::get_or_load_owned). `build()` rejects a
    /// soft timeout not shorter than the hard one. Default: none.
    #[must_use]
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.opts.freshness.soft_timeout = Some(timeout);
        self
    }

    /// Hard loader timeout: a load still running after this long is abandoned; its callers get a
    /// stale value if one is at hand (fail-safe), otherwise
    /// [`Error::LoaderTimeout`](crate::Error::LoaderTimeout) (as
    /// [`LoadError::Cache`](crate::LoadError::Cache)). Counted from the loader's start.
    ///
    /// Needs [`Cache::get_or_load_owned`](crate::Cache::get_or_load_owned) (the error type of
    /// `get_or_load` is the loader's own). Default: none.
    #[must_use]
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.opts.freshness.hard_timeout = Some(timeout);
        self
    }

    /// Distributed single-flight: on a miss in both tiers, an instance takes a short Redis lock
    /// (`SET {prefix}:lock:... NX PX`) before calling the loader, so instances sharing the Redis
    /// make one loader call per key between them. The others wait (woken by a backplane notice,
    /// polling L2 meanwhile) at most
    /// [`distributed_lock_wait`](crate::CacheBuilder::distributed_lock_wait), then read the value
    /// from L2; if the holder dies (its lock expires after
    /// [`distributed_lock_ttl`](crate::CacheBuilder::distributed_lock_ttl)), or Redis is
    /// unreachable, they load locally.
    ///
    /// Costs one more Redis round trip per load; worth it for costly origins. Applies to every
    /// loading method. Default: off.
    #[must_use]
    pub fn distributed_lock(mut self, on: bool) -> Self {
        self.opts.freshness.lock = Some(on);
        self
    }

    /// TTL jitter for this kind: every TTL (L1 and L2) is cut by a random 0 to `fraction` of
    /// itself, so entries written together (warming, a burst of misses) do not all expire
    /// together. `build()` rejects values outside `[0, 1)`. Default: the builder's
    /// [`ttl_jitter`](crate::CacheBuilder::ttl_jitter).
    #[must_use]
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.opts.ttl_jitter = Some(fraction);
        self
    }

    /// The eager refresh fraction, if set.
    pub fn eager_refresh_fraction(&self) -> Option<f64> {
        self.opts.freshness.refresh_at
    }

    pub(crate) fn freshness(&self) -> &Freshness {
        &self.opts.freshness
    }

    pub(crate) fn jitter(&self) -> Option<f64> {
        self.opts.ttl_jitter
    }

    /// Which tiers the kind uses. Default: [`Tiers::Both`].
    #[must_use]
    pub fn tiers(mut self, tiers: Tiers) -> Self {
        self.opts.tiers = Some(tiers);
        self
    }

    /// A cap on how long an entry stays in L1 (shorter than the TTL bounds how stale an instance's
    /// L1 copy can get); at most [`MAX_TTL`](crate::MAX_TTL). Default: the entry's TTL.
    #[must_use]
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.opts.l1_ttl = Some(ttl);
        self
    }

    /// The default TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The L1 TTL cap, if any.
    pub fn l1_ttl_cap(&self) -> Option<Duration> {
        self.opts.l1_ttl
    }

    /// The tiers used.
    pub fn tier_routing(&self) -> Tiers {
        self.opts.tiers.unwrap_or_default()
    }

    /// What one load of this kind costs, in a unit of your choice (dollars per LLM call, say):
    /// the stats then report the money saved (lookups answered without the loader × this) and
    /// spent (loader calls × this), per kind, in `stats()`, the dashboard and Prometheus
    /// (`cache_cost_saved_total`). `build()` rejects a negative or non-finite cost. Default: none.
    ///
    /// ```
    /// use cache_core::KindConfig;
    /// use std::time::Duration;
    /// let cfg = KindConfig::new(Duration::from_secs(3600)).load_cost(0.002);
    /// assert_eq!(cfg.cost_per_load(), Some(0.002));
    /// ```
    #[must_use]
    pub fn load_cost(mut self, cost: f64) -> Self {
        self.opts.load_cost = Some(cost);
        self
    }

    /// The cost of one load, if set.
    pub fn cost_per_load(&self) -> Option<f64> {
        self.opts.load_cost
    }

    /// The hit rate this kind should reach (0 to 1): the recommendations say when it is below it
    /// over the last 15 minutes (with enough traffic to tell), and Prometheus exports it
    /// (`cache_hit_rate_target`) for alerting. `build()` rejects a value outside `(0, 1]`.
    /// Default: none.
    ///
    /// ```
    /// use cache_core::KindConfig;
    /// use std::time::Duration;
    /// let cfg = KindConfig::new(Duration::from_secs(60)).hit_rate_target(0.9);
    /// assert_eq!(cfg.target_hit_rate(), Some(0.9));
    /// ```
    #[must_use]
    pub fn hit_rate_target(mut self, target: f64) -> Self {
        self.opts.hit_rate_target = Some(target);
        self
    }

    /// The hit-rate target, if set.
    pub fn target_hit_rate(&self) -> Option<f64> {
        self.opts.hit_rate_target
    }

    /// The settings as the stats show them.
    pub(crate) fn settings(&self) -> crate::stats::KindSettings {
        crate::stats::KindSettings {
            ttl_ms: crate::clock::millis(self.ttl),
            tiers: match self.tier_routing() {
                Tiers::Both => "l1+l2",
                Tiers::L1Only => "l1",
                Tiers::L2Only => "l2",
            }
            .to_owned(),
            load_cost: self.opts.load_cost,
            hit_rate_target: self.opts.hit_rate_target,
        }
    }
}

/// Kinds by name. This lookup is on every call's hot path and the keys are the application's own
/// few kind names, not attacker-chosen: a hash of the length and the first and last eight bytes is
/// enough to tell them apart (equal hashes only cost a comparison), where SipHash or xxh3's
/// streaming state cost more than the rest of the lookup.
type KindMap = HashMap<String, Arc<KindEntry>, BuildHasherDefault<KindHasher>>;

#[derive(Default)]
struct KindHasher(u64);

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

/// A kind as the cache holds it: its settings, its stats and what its hot paths need precomputed.
pub(crate) struct KindEntry {
    /// Index of the kind in the registry (0: unregistered kinds); what L1 keeps per kind.
    pub(crate) id: usize,
    pub(crate) name: String,
    /// `{prefix}:v1:{name}:`, the start of every full key of the kind (`None` for the entry shared
    /// by unregistered kinds): L1 lookups hash and compare it as is, without building a key.
    pub(crate) key_prefix: Option<String>,
    pub(crate) cfg: KindConfig,
    pub(crate) stats: KindStats,
    /// Whether the "needs `get_or_load_owned`" warning was logged for this kind.
    pub(crate) warned_in_place: AtomicBool,
}

/// The kinds of one cache: the registered ones by name, and one entry shared by every name used
/// without being registered (default TTL, no key prefix of its own).
pub(crate) struct Kinds {
    map: KindMap,
    unregistered: Arc<KindEntry>,
    warned_unregistered: AtomicBool,
}

impl Kinds {
    /// The registry of `kinds` (built-in ones first, then the builder's, which override them)
    /// under `prefix`; unregistered names get `unregistered_ttl`.
    pub(crate) fn new(
        prefix: &str,
        kinds: impl IntoIterator<Item = (Kind, KindConfig)>,
        unregistered_ttl: Duration,
    ) -> Self {
        let entry = |id: usize, name: &str, key_prefix: Option<String>, cfg: KindConfig| {
            Arc::new(KindEntry {
                id,
                name: name.to_owned(),
                key_prefix,
                cfg,
                stats: KindStats::default(),
                warned_in_place: AtomicBool::new(false),
            })
        };
        let mut all: Vec<(Kind, KindConfig)> = Kind::BUILT_IN
            .iter()
            .map(|(k, secs)| (k.clone(), KindConfig::new(Duration::from_secs(*secs))))
            .collect();
        for (k, cfg) in kinds {
            match all.iter_mut().find(|(known, _)| *known == k) {
                Some(slot) => slot.1 = cfg,
                None => all.push((k, cfg)),
            }
        }
        let mut map = KindMap::default();
        for (i, (k, cfg)) in all.into_iter().enumerate() {
            let key_prefix = crate::key::kind_key_prefix(prefix, k.name());
            map.insert(
                k.name().to_owned(),
                entry(i + 1, k.name(), Some(key_prefix), cfg),
            );
        }
        Self {
            map,
            unregistered: entry(0, "unregistered", None, KindConfig::new(unregistered_ttl)),
            warned_unregistered: AtomicBool::new(false),
        }
    }

    /// The entry of `kind`; the shared unregistered entry (with a warning, once) for a name that was
    /// not registered.
    pub(crate) fn get(&self, kind: &str) -> &Arc<KindEntry> {
        match self.map.get(kind) {
            Some(k) => k,
            None => {
                if !self.warned_unregistered.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        kind,
                        "kind is not registered: using the default TTL of {:?}; register it with CacheBuilder::kind",
                        self.unregistered.cfg.ttl()
                    );
                }
                &self.unregistered
            }
        }
    }

    /// The entry of `kind` (the unregistered one for an unknown name), without a warning.
    pub(crate) fn get_quiet(&self, kind: &str) -> &Arc<KindEntry> {
        self.map.get(kind).unwrap_or(&self.unregistered)
    }

    /// The entry of unregistered kinds (also what cache-wide operations count against).
    pub(crate) fn unregistered(&self) -> &Arc<KindEntry> {
        &self.unregistered
    }

    /// Every entry, the unregistered one last.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<KindEntry>> + Clone {
        self.map.values().chain(std::iter::once(&self.unregistered))
    }

    /// How many entries there are (ids are `0..count()`).
    pub(crate) fn count(&self) -> usize {
        self.map.len() + 1
    }

    /// The longest TTL of any kind.
    pub(crate) fn longest_ttl(&self) -> Duration {
        self.all()
            .map(|k| k.cfg.ttl())
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_kinds_have_the_documented_ttls() {
        let built_in = Kind::BUILT_IN;
        let got: Vec<(&str, u64)> = built_in
            .iter()
            .map(|(k, _)| (k.name(), k.default_ttl().unwrap().as_secs()))
            .collect();
        assert_eq!(
            got,
            [
                ("model_data", 3600),
                ("session_data", 1800),
                ("api_response", 300),
                ("database_query", 600),
                ("heavy_computation", 1800),
                ("static_data", 7200)
            ]
        );
    }
}
