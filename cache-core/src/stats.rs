//! The snapshot [`Cache::stats`](crate::Cache::stats) returns ([`Stats`], serde-serializable:
//! per tier, per kind, and the state of the breaker, the backplane and the pending queue), and the
//! counters behind it, recorded on the hot path (relaxed atomics, per kind).
//!
//! Each kind has its own recorder; tier totals are summed when a snapshot is taken, so a hit costs a
//! single atomic increment.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::breaker::BreakerState;

mod recorder;

use recorder::HistRaw;
pub use recorder::MissReason;
pub(crate) use recorder::{KindStats, Raw, PROM_BOUNDS};

/// Latency summary in microseconds (p50/p99 from a log-bucketed histogram, ~19% resolution).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Number of operations measured.
    pub count: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// Largest latency seen (over a window: the upper bound of its highest bucket).
    pub max_us: f64,
    /// Observations per Prometheus bucket: `(upper bound in seconds, count at or below it)`,
    /// cumulative (the `+Inf` bucket is `count`). Empty without observations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<(f64, u64)>,
}

/// L1 (in-process) counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct L1Stats {
    /// Lookups served by L1.
    pub hits: u64,
    /// Lookups L1 could not serve.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 when there were no lookups.
    pub hit_rate: f64,
    /// Entries currently held (approximate while writes are pending: exact after
    /// [`Cache::run_pending_tasks`](crate::Cache::run_pending_tasks)). Entries dropped by a clear or a resynchronisation
    /// count until they are swept or evicted, since they still take their memory.
    pub entries: u64,
    /// Weighted size in bytes currently held: the estimated memory of the entries (their values'
    /// heap as malloc hands it out, their keys, tags and the cache's per-entry structures), which
    /// the byte budget bounds.
    pub bytes: u64,
    /// The byte budget (shared by all kinds: a kind's figure is the cache's).
    pub max_bytes: u64,
    /// Entries evicted to stay within the byte budget (including entries the admission policy
    /// refused right after their insert).
    pub evictions: u64,
    /// Why the misses missed (they add up to `misses`).
    pub miss_reasons: MissReasons,
    /// For misses of entries L1 had evicted: the time from the eviction to the lookup (short
    /// times mean the budget is too small for the working set).
    pub reread_after_eviction: LatencyStats,
}

/// L2 (Redis) counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct L2Stats {
    /// Reads that found a fresh value.
    pub hits: u64,
    /// Reads that found nothing usable (absent, stale, undecodable, rejected, or not answered:
    /// breaker open, error, timeout).
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: f64,
    /// Operations that failed because Redis was unreachable or not serving (I/O, refused
    /// connection, `LOADING`, `READONLY`...), timeouts excluded.
    pub errors: u64,
    /// Operations Redis answered with an error retrying cannot fix: a write refused under
    /// `maxmemory` with `noeviction` (`OOM`), a command the ACL user may not run (`NOPERM`),
    /// another type under a key (`WRONGTYPE`). They never open the breaker; see
    /// [`Stats::l2_refusing_writes`].
    pub refused: u64,
    /// Operations that exceeded the L2 timeout.
    pub timeouts: u64,
    /// Operations skipped because the circuit breaker was open (reads and dropped writes).
    pub skipped: u64,
    /// Values written.
    pub writes: u64,
    /// Bytes read from Redis.
    pub bytes_read: u64,
    /// Bytes written to Redis (after compression).
    pub bytes_written: u64,
    /// MessagePack payload bytes before compression / after (1.0 when nothing was compressed;
    /// envelope headers excluded).
    pub compression_ratio: f64,
    /// Values refused because they exceed the maximum value size.
    pub oversized: u64,
    /// Values that could not be decoded and were treated as misses.
    pub decode_errors: u64,
    /// Write-backs of loads not stored because the key changed meanwhile (an invalidation or a
    /// newer write won: the stale-set race, avoided).
    pub write_conflicts: u64,
    /// Entries read from L2 but rejected because one of their tags was invalidated since.
    pub tag_rejections: u64,
    /// Why the reads missed (they add up to `misses`).
    pub miss_reasons: MissReasons,
    /// Read latency.
    pub read_latency: LatencyStats,
    /// Write latency.
    pub write_latency: LatencyStats,
}

/// Loader counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct LoaderStats {
    /// Loader calls (one per key among concurrent callers).
    pub calls: u64,
    /// Loader calls that returned an error.
    pub errors: u64,
    /// Failed loads answered with a stale value (fail-safe).
    pub stale_served: u64,
    /// Eager refreshes started (at most one per key at a time).
    pub refreshes: u64,
    /// Eager refreshes whose loader failed or timed out (the current value stays until its TTL).
    pub refresh_failures: u64,
    /// Stale values served because a load passed its soft timeout: once per such load (its
    /// callers all get the stale value), plus once per later caller served while that load went
    /// on in the background.
    pub soft_timeouts: u64,
    /// Loads abandoned at their hard timeout.
    pub hard_timeouts: u64,
    /// How long the loader took.
    pub latency: LatencyStats,
}

/// Distributed single-flight counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct LockStats {
    /// Loads that took the Redis lock (and so called the loader for every instance).
    pub acquired: u64,
    /// Loads that found the lock held by another load and waited.
    pub waits: u64,
    /// Loads that called their loader without the lock: Redis unreachable, breaker open, or the
    /// wait bound passed (the holder died or is slow).
    pub fallbacks: u64,
}

/// Invalidations queued while L2 was unreachable, replayed when it is back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct PendingInvalidationStats {
    /// Invalidations waiting for L2 now (one per key or tag).
    pub pending: u64,
    /// Invalidations queued (a key or tag queued again counts again).
    pub queued: u64,
    /// Invalidations applied to L2 by a replay.
    pub replayed: u64,
    /// Invalidations dropped because the queue was full.
    pub dropped: u64,
}

/// Counters of one kind (or of the whole cache).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct TierStats {
    /// L1 counters.
    pub l1: L1Stats,
    /// L2 counters.
    pub l2: L2Stats,
    /// Loader counters.
    pub loader: LoaderStats,
    /// Distributed single-flight counters.
    pub lock: LockStats,
    /// Explicit `set` calls.
    pub sets: u64,
    /// Explicit invalidations.
    pub invalidations: u64,
    /// Lookups: calls that asked the cache for a value (L1 lookups; loader calls for kinds that
    /// skip L1).
    pub lookups: u64,
    /// Lookups answered without the loader / all lookups.
    pub hit_rate: f64,
    /// For lookups that found their value expired: the time since the value was written (when
    /// it is often a little over the TTL, the TTL is shorter than the re-request interval).
    pub reread_after_expiry: LatencyStats,
    /// What the cache saved.
    pub savings: Savings,
    /// The kind's settings (`None` in [`Stats::total`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<KindSettings>,
}

/// Why lookups missed, one count per reason. L1 misses use `absent`, `expired`, `evicted`,
/// `rejected`, `mismatch` and `bypassed`; L2 misses all but `evicted` and `bypassed`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
#[non_exhaustive]
pub struct MissReasons {
    /// Nothing stored under the key (never loaded here, removed, or expired or evicted out of
    /// sight: Redis drops expired keys by itself), or another instance is loading it.
    pub absent: u64,
    /// The value was past its freshness (kept only as a fail-safe fallback), or L1 dropped it
    /// when its lifetime ended.
    pub expired: u64,
    /// L1 evicted the entry to stay within its byte budget.
    pub evicted: u64,
    /// Invalidated: by key (a tombstone in L2, or removed from L1), by tag, or by a clear.
    pub rejected: u64,
    /// Stored for another Rust type or another [`KindConfig::schema`](crate::KindConfig::schema)
    /// (typically right after a deploy that changed it).
    pub mismatch: u64,
    /// Bytes that do not decode (corrupt, another envelope version, another Redis type).
    pub undecodable: u64,
    /// Larger than the maximum value size.
    pub oversized: u64,
    /// L2 not asked: the circuit breaker was open (or the key was fenced during a recovery).
    pub skipped: u64,
    /// L2 asked but did not answer in time or at all (error, timeout).
    pub unavailable: u64,
    /// The call bypassed the cache ([`scope::bypass`](crate::scope::bypass)).
    pub bypassed: u64,
}

impl MissReasons {
    fn from_counts(c: &[u64; MissReason::COUNT]) -> Self {
        let at = |r: MissReason| c[r as usize];
        Self {
            absent: at(MissReason::Absent),
            expired: at(MissReason::Expired),
            evicted: at(MissReason::Evicted),
            rejected: at(MissReason::Rejected),
            mismatch: at(MissReason::Mismatch),
            undecodable: at(MissReason::Undecodable),
            oversized: at(MissReason::Oversized),
            skipped: at(MissReason::Skipped),
            unavailable: at(MissReason::Unavailable),
            bypassed: at(MissReason::Bypassed),
        }
    }

    /// `(reason name, count)` for every reason, in a fixed order (the names are the JSON field
    /// names and the Prometheus `reason` label values).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let counts = [
            self.absent,
            self.expired,
            self.evicted,
            self.rejected,
            self.mismatch,
            self.undecodable,
            self.oversized,
            self.skipped,
            self.unavailable,
            self.bypassed,
        ];
        MissReason::ALL.into_iter().map(|r| r.name()).zip(counts)
    }

    /// All misses.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, n)| n).sum()
    }
}

/// What the cache saved a kind (or all kinds).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct Savings {
    /// Loader time avoided: each second, the lookups answered without the loader times the kind's
    /// mean loader time then (zero until the kind's first load).
    pub loader_time_saved_secs: f64,
    /// The kind's [`KindConfig::load_cost`](crate::KindConfig::load_cost) (`None` in totals and
    /// for kinds without one).
    pub cost_per_load: Option<f64>,
    /// Lookups answered without the loader × the cost of one load.
    pub cost_saved: f64,
    /// Loader calls × the cost of one load.
    pub cost_spent: f64,
}

/// A kind's settings, as the dashboard and the recommendations show them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct KindSettings {
    /// The kind's TTL, in milliseconds.
    pub ttl_ms: u64,
    /// Its tiers: `l1+l2`, `l1` or `l2`.
    pub tiers: String,
    /// [`KindConfig::load_cost`](crate::KindConfig::load_cost).
    pub load_cost: Option<f64>,
    /// [`KindConfig::hit_rate_target`](crate::KindConfig::hit_rate_target).
    pub hit_rate_target: Option<f64>,
}

/// Redis's memory, as `INFO memory` reports it (on a cluster: the fullest master).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct RedisMemory {
    /// `used_memory`.
    pub used_bytes: u64,
    /// `maxmemory` (0: no limit).
    pub maxmemory_bytes: u64,
    /// `maxmemory_policy`.
    pub policy: String,
    /// When it was read (Unix milliseconds).
    pub sampled_at_ms: u64,
}

/// Circuit breaker state and counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// Current state.
    pub state: BreakerState,
    /// Times it has opened.
    pub opens: u64,
    /// Operations rejected while open.
    pub rejected: u64,
}

/// Backplane (cross-instance L1 invalidation) state and counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// Whether the pub/sub subscription is up.
    pub subscribed: bool,
    /// Messages received (own echoes and heartbeats included).
    pub received: u64,
    /// Messages published.
    pub published: u64,
    /// Publishes that failed (L2 down or breaker open).
    pub publish_failures: u64,
    /// Times the subscription was lost.
    pub disconnects: u64,
    /// L1 flushes after (re)subscribing.
    pub resyncs: u64,
    /// Messages whose publish failed for an outage, waiting to be sent again (other instances may
    /// hold copies they would drop until then).
    pub unsent: u64,
    /// Such messages sent again.
    pub resent: u64,
}

/// Event subscriptions ([`Cache::events`](crate::Cache::events)) and what they missed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct EventStats {
    /// Subscriptions open now.
    pub subscribers: u64,
    /// Events subscribers missed because they fell more than the event buffer
    /// ([`CacheBuilder::event_buffer`](crate::CacheBuilder::event_buffer)) behind: one per event
    /// per subscriber that missed it, counted when that subscriber next receives (or is dropped).
    /// The cache never waits for a subscriber.
    pub dropped: u64,
}

/// A point-in-time snapshot of the cache's counters, since it was built. Serializable with
/// serde. [`Cache::rates`](crate::Cache::rates) gives the same figures over the last minutes.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = cache_core::Cache::builder().build().await.unwrap();
/// let stats = cache.stats();
/// assert_eq!(stats.total.l1.hits, 0);
/// println!("{}", serde_json::to_string_pretty(&stats).unwrap());
/// # });
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The cache's name ([`CacheBuilder::name`](crate::CacheBuilder::name); its prefix unless
    /// set).
    #[serde(default)]
    pub name: String,
    /// The cache's key prefix.
    pub prefix: String,
    /// Whether an L2 is configured.
    pub l2_configured: bool,
    /// Whether Redis refused a write for lack of memory within the last second (`maxmemory`
    /// reached with policy `noeviction`): reads from L2 go on, nothing is written back. Said once
    /// in the log too.
    #[serde(default)]
    pub l2_refusing_writes: bool,
    /// The commands Redis refused for lack of an ACL permission (`NOPERM`), in the order they
    /// first were: a configuration error (the user lacks rules of
    /// [`admin::acl_rules`](crate::admin::acl_rules)), said once per command in the log. Empty
    /// when none was.
    #[serde(default)]
    pub l2_acl_refused: Vec<String>,
    /// The circuit breaker, when an L2 is configured.
    pub breaker: Option<BreakerStats>,
    /// The backplane, when enabled.
    pub backplane: Option<BackplaneStats>,
    /// Tags whose recent invalidation this instance tracks for its L1.
    pub tracked_tag_invalidations: u64,
    /// Invalidations made while L2 was unreachable, and their replay.
    pub pending_invalidations: PendingInvalidationStats,
    /// Redis's memory, read every 10 s (`None` before the first reading, or without L2).
    #[serde(default)]
    pub redis_memory: Option<RedisMemory>,
    /// Event subscriptions and the events they missed.
    #[serde(default)]
    pub events: EventStats,
    /// All kinds together.
    pub total: TierStats,
    /// Per kind, by name.
    pub kinds: BTreeMap<String, TierStats>,
}

#[cfg(test)]
impl Stats {
    /// A snapshot of a cache with nothing in it and no L2 (for the tests of what reads
    /// snapshots: metrics, recommendations).
    pub(crate) fn empty(name: &str, prefix: &str) -> Self {
        Stats {
            name: name.into(),
            prefix: prefix.into(),
            l2_configured: false,
            l2_refusing_writes: false,
            l2_acl_refused: Vec::new(),
            breaker: None,
            backplane: None,
            tracked_tag_invalidations: 0,
            pending_invalidations: Default::default(),
            redis_memory: None,
            events: Default::default(),
            total: TierStats::default(),
            kinds: Default::default(),
        }
    }
}

/// The cache's figures over a recent window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct WindowStats {
    /// The seconds the window covers (less than asked while the cache is younger, a little more
    /// otherwise: windows start at a reading, taken every 10 s).
    pub seconds: f64,
    /// Lookups per second.
    pub requests_per_sec: f64,
    /// Loader calls per second.
    pub loader_calls_per_sec: f64,
    /// Times the circuit breaker opened in the window.
    pub breaker_opens: u64,
    /// All kinds: counters are what was counted in the window, rates and latencies are the
    /// window's, L1 entries and bytes are current.
    pub total: TierStats,
    /// Per kind, the same.
    pub kinds: BTreeMap<String, TierStats>,
}

/// The figures over the last 1, 5 and 15 minutes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct Rates {
    /// The last minute.
    pub last_1m: WindowStats,
    /// The last 5 minutes.
    pub last_5m: WindowStats,
    /// The last 15 minutes.
    pub last_15m: WindowStats,
}

/// One second of the cache's life, for a chart. `None`: nothing to measure in that second (no
/// lookups, no L2 operation), or no L2 / no backplane.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct SeriesPoint {
    /// When the second ended (Unix milliseconds).
    pub t_ms: u64,
    /// Lookups per second.
    pub requests_per_sec: f64,
    /// Lookups answered without the loader / lookups.
    pub hit_rate: Option<f64>,
    /// L1 hits / L1 lookups.
    pub l1_hit_rate: Option<f64>,
    /// L2 hits / L2 reads.
    pub l2_hit_rate: Option<f64>,
    /// Median L2 read latency (µs).
    pub l2_read_p50_us: Option<f64>,
    /// 99th percentile L2 read latency (µs).
    pub l2_read_p99_us: Option<f64>,
    /// Loader calls per second.
    pub loader_calls_per_sec: f64,
    /// L1 bytes held.
    pub l1_bytes: u64,
    /// The L1 byte budget.
    pub l1_max_bytes: u64,
    /// The breaker's state.
    pub breaker: Option<BreakerState>,
    /// Whether the backplane was subscribed.
    pub backplane_subscribed: Option<bool>,
    /// Invalidations waiting for L2.
    pub pending_invalidations: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl LatencyStats {
    fn from_raw(h: &HistRaw) -> Self {
        let us = |ns: Option<u64>| ns.map_or(0.0, |ns| ns as f64 / 1_000.0);
        let mut cumulative = 0;
        let buckets = if h.count == 0 {
            Vec::new()
        } else {
            PROM_BOUNDS
                .iter()
                .copied()
                .zip(h.prom)
                .map(|(le, n)| {
                    cumulative += n;
                    (le, cumulative)
                })
                .collect()
        };
        LatencyStats {
            count: h.count,
            mean_us: if h.count == 0 {
                0.0
            } else {
                h.sum_ns as f64 / h.count as f64 / 1_000.0
            },
            p50_us: us(h.quantile_ns(0.50)),
            p99_us: us(h.quantile_ns(0.99)),
            max_us: if h.count == 0 {
                0.0
            } else {
                h.max_ns as f64 / 1_000.0
            },
            buckets,
        }
    }
}

impl TierStats {
    /// The figures of counters `r` (totals since start, or a window's deltas). L1 occupancy and
    /// settings are filled in by the caller; `cost_per_load` is the kind's, if any.
    pub(crate) fn from_raw(r: &Raw, cost_per_load: Option<f64>) -> Self {
        let mut t = TierStats::default();
        t.l1.hits = r.l1_hits;
        t.l1.misses = r.l1_misses;
        t.l1.hit_rate = ratio(r.l1_hits, r.l1_hits + r.l1_misses);
        t.l1.miss_reasons = MissReasons::from_counts(&r.l1_reasons);
        t.l1.reread_after_eviction = LatencyStats::from_raw(&r.reread_after_eviction);
        let l2 = &mut t.l2;
        l2.hits = r.l2_hits;
        l2.misses = r.l2_misses;
        l2.hit_rate = ratio(r.l2_hits, r.l2_hits + r.l2_misses);
        l2.errors = r.l2_errors;
        l2.refused = r.l2_refused;
        l2.timeouts = r.l2_timeouts;
        l2.skipped = r.l2_skipped;
        l2.writes = r.l2_writes;
        l2.bytes_read = r.l2_bytes_read;
        l2.bytes_written = r.l2_bytes_written;
        l2.compression_ratio = if r.l2_payload_bytes_written == 0 {
            1.0
        } else {
            ratio(r.l2_raw_bytes_written, r.l2_payload_bytes_written)
        };
        l2.oversized = r.oversized;
        l2.decode_errors = r.decode_errors;
        l2.write_conflicts = r.l2_write_conflicts;
        l2.tag_rejections = r.tag_rejections;
        l2.miss_reasons = MissReasons::from_counts(&r.l2_reasons);
        l2.read_latency = LatencyStats::from_raw(&r.read_latency);
        l2.write_latency = LatencyStats::from_raw(&r.write_latency);
        t.loader = LoaderStats {
            calls: r.loader_calls,
            errors: r.loader_errors,
            stale_served: r.stale_served,
            refreshes: r.refreshes,
            refresh_failures: r.refresh_failures,
            soft_timeouts: r.soft_timeouts,
            hard_timeouts: r.hard_timeouts,
            latency: LatencyStats::from_raw(&r.loader_latency),
        };
        t.lock = LockStats {
            acquired: r.lock_acquired,
            waits: r.lock_waits,
            fallbacks: r.lock_fallbacks,
        };
        t.sets = r.sets;
        t.invalidations = r.invalidations;
        // A lookup is answered from cache unless it had to call the loader. Kinds that skip L1
        // count their loader calls instead.
        t.lookups = r.lookups();
        t.hit_rate = ratio(r.answered(), t.lookups);
        t.reread_after_expiry = LatencyStats::from_raw(&r.reread_after_expiry);
        let cost = cost_per_load.unwrap_or(0.0);
        t.savings = Savings {
            loader_time_saved_secs: r.saved_us as f64 / 1e6,
            cost_per_load,
            cost_saved: r.answered() as f64 * cost,
            cost_spent: r.loader_calls as f64 * cost,
        };
        t
    }

    /// Adds the savings of kinds with different costs (the totals' `cost_*` are sums of each
    /// kind's, which `from_raw` over summed counters cannot know).
    pub(crate) fn add_costs(&mut self, kind: &Savings) {
        self.savings.cost_saved += kind.cost_saved;
        self.savings.cost_spent += kind.cost_spent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_add_up_and_keep_their_names() {
        let s = KindStats::default();
        s.l1_miss(MissReason::Evicted);
        s.l1_miss(MissReason::Bypassed);
        s.l2_miss(MissReason::Mismatch);
        let t = TierStats::from_raw(&s.raw(), Some(0.5));
        assert_eq!(t.l1.misses, t.l1.miss_reasons.total());
        assert_eq!(t.l1.miss_reasons.evicted, 1);
        assert_eq!(t.l1.miss_reasons.bypassed, 1);
        assert_eq!(t.l2.miss_reasons.mismatch, 1);
        let json = serde_json::to_value(t.l2.miss_reasons).unwrap();
        for (name, n) in t.l2.miss_reasons.iter() {
            assert_eq!(json[name], n, "{name}");
        }
    }

    #[test]
    fn money_saved_is_answered_lookups_times_the_cost_of_a_load() {
        let s = KindStats::default();
        for _ in 0..9 {
            KindStats::inc(&s.l1_hits);
        }
        s.l1_miss(MissReason::Absent);
        KindStats::inc(&s.loader_calls);
        let t = TierStats::from_raw(&s.raw(), Some(0.002));
        assert_eq!(t.lookups, 10);
        assert!((t.hit_rate - 0.9).abs() < 1e-9);
        assert!((t.savings.cost_saved - 0.018).abs() < 1e-12);
        assert!((t.savings.cost_spent - 0.002).abs() < 1e-12);
    }

    #[test]
    fn prometheus_buckets_are_cumulative_and_end_at_infinity() {
        let s = KindStats::default();
        s.read_latency.record(std::time::Duration::from_micros(50));
        s.read_latency.record(std::time::Duration::from_secs(30));
        let l = TierStats::from_raw(&s.raw(), None).l2.read_latency;
        assert_eq!(l.buckets.first(), Some(&(0.0001, 1)));
        assert_eq!(l.buckets.last(), Some(&(10.0, 1)), "30 s is only in +Inf");
        assert_eq!(l.count, 2);
        assert!(l.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
