//! The snapshot [`Cache::stats`](crate::Cache::stats) returns ([`Stats`], serde-serializable:
//! per tier, per kind, and the state of the breaker, the backplane and the pending queue), and the
//! counters behind it, recorded on the hot path (relaxed atomics, per kind).
//!
//! Each kind has its own recorder; tier totals are summed when a snapshot is taken, so a hit costs a
//! single atomic increment.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::breaker::BreakerState;
use crate::l2::L2Error;

/// A latency histogram with ~19% resolution: 4 sub-buckets per power of two of nanoseconds.
pub(crate) struct Histogram {
    buckets: [AtomicU64; 256],
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros() as u64;
    let sub = (ns >> (msb - 2)) & 3;
    ((msb - 1) * 4 + sub) as usize
}

fn bucket_upper(idx: usize) -> u64 {
    if idx < 4 {
        return idx as u64;
    }
    let msb = idx as u64 / 4 + 1;
    let sub = idx as u64 % 4;
    ((4 + sub + 1) << (msb - 2)).saturating_sub(1)
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.buckets[bucket_of(ns).min(255)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
    }

    fn merge_into(&self, acc: &mut HistAcc) {
        for (a, b) in acc.buckets.iter_mut().zip(self.buckets.iter()) {
            *a += b.load(Relaxed);
        }
        acc.count += self.count.load(Relaxed);
        acc.sum_ns += self.sum_ns.load(Relaxed);
        acc.max_ns = acc.max_ns.max(self.max_ns.load(Relaxed));
    }
}

struct HistAcc {
    buckets: [u64; 256],
    count: u64,
    sum_ns: u64,
    max_ns: u64,
}

impl Default for HistAcc {
    fn default() -> Self {
        Self {
            buckets: [0; 256],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl HistAcc {
    fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (bucket_upper(i).min(self.max_ns)) as f64 / 1_000.0;
            }
        }
        self.max_ns as f64 / 1_000.0
    }

    fn snapshot(&self) -> LatencyStats {
        LatencyStats {
            count: self.count,
            mean_us: if self.count == 0 {
                0.0
            } else {
                self.sum_ns as f64 / self.count as f64 / 1_000.0
            },
            p50_us: self.quantile_us(0.50),
            p99_us: self.quantile_us(0.99),
            max_us: self.max_ns as f64 / 1_000.0,
        }
    }
}

/// The per-kind recorder.
#[derive(Default)]
pub(crate) struct KindStats {
    pub(crate) l1_hits: AtomicU64,
    pub(crate) l1_misses: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) l2_misses: AtomicU64,
    pub(crate) l2_errors: AtomicU64,
    pub(crate) l2_timeouts: AtomicU64,
    pub(crate) l2_skipped: AtomicU64,
    pub(crate) l2_writes: AtomicU64,
    pub(crate) l2_bytes_read: AtomicU64,
    pub(crate) l2_bytes_written: AtomicU64,
    pub(crate) l2_raw_bytes_written: AtomicU64,
    pub(crate) l2_payload_bytes_written: AtomicU64,
    pub(crate) l2_write_conflicts: AtomicU64,
    /// Operations Redis refused (memory, permissions, another type under a key).
    pub(crate) l2_refused: AtomicU64,
    pub(crate) tag_rejections: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) loader_calls: AtomicU64,
    pub(crate) loader_errors: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) sets: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    pub(crate) soft_timeouts: AtomicU64,
    pub(crate) hard_timeouts: AtomicU64,
    pub(crate) lock_acquired: AtomicU64,
    pub(crate) lock_waits: AtomicU64,
    pub(crate) lock_fallbacks: AtomicU64,
    /// Moving average of the loader's duration in µs (XFetch's `delta`); not a counter.
    pub(crate) loader_time_us: AtomicU64,
    pub(crate) read_latency: Histogram,
    pub(crate) write_latency: Histogram,
    /// Whether a decode error was logged at WARN already (later ones go to DEBUG).
    pub(crate) decode_error_logged: AtomicBool,
}

impl KindStats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts an L2 operation that produced no result.
    pub(crate) fn count_l2_error(&self, e: &L2Error) {
        match e {
            L2Error::Skipped => Self::inc(&self.l2_skipped),
            L2Error::Timeout(_) => Self::inc(&self.l2_timeouts),
            L2Error::Unavailable(_) => {
                Self::inc(&self.l2_errors);
                tracing::debug!(error = %e, "L2 operation failed");
            }
            L2Error::Refused(..) => {
                Self::inc(&self.l2_refused);
                tracing::debug!(error = %e, "Redis refused an L2 operation");
            }
        }
    }
}

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
    /// Largest latency seen.
    pub max_us: f64,
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
}

/// L2 (Redis) counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct L2Stats {
    /// Reads that found a fresh value.
    pub hits: u64,
    /// Reads that found nothing usable (absent, stale, undecodable).
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
    /// Lookups answered without the loader / all lookups.
    pub hit_rate: f64,
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

/// A point-in-time snapshot of the cache's counters. Serializable with serde.
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
    /// The cache's key prefix.
    pub prefix: String,
    /// Whether an L2 is configured.
    pub l2_configured: bool,
    /// Whether Redis refused a write for lack of memory within the last second (`maxmemory`
    /// reached with policy `noeviction`): reads from L2 go on, nothing is written back. Said once
    /// in the log too.
    #[serde(default)]
    pub l2_refusing_writes: bool,
    /// The circuit breaker, when an L2 is configured.
    pub breaker: Option<BreakerStats>,
    /// The backplane, when enabled.
    pub backplane: Option<BackplaneStats>,
    /// Tags whose recent invalidation this instance tracks for its L1.
    pub tracked_tag_invalidations: u64,
    /// Invalidations made while L2 was unreachable, and their replay.
    pub pending_invalidations: PendingInvalidationStats,
    /// All kinds together.
    pub total: TierStats,
    /// Per kind, by name.
    pub kinds: BTreeMap<String, TierStats>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Sums recorders into one `TierStats` (L1 gauges are filled in by the caller).
pub(crate) fn summarize<'a>(recorders: impl IntoIterator<Item = &'a KindStats>) -> TierStats {
    let mut t = TierStats::default();
    let mut rl = HistAcc::default();
    let mut wl = HistAcc::default();
    let mut raw_written = 0;
    let mut payload_written = 0;
    for r in recorders {
        t.l1.hits += r.l1_hits.load(Relaxed);
        t.l1.misses += r.l1_misses.load(Relaxed);
        t.l2.hits += r.l2_hits.load(Relaxed);
        t.l2.misses += r.l2_misses.load(Relaxed);
        t.l2.errors += r.l2_errors.load(Relaxed);
        t.l2.refused += r.l2_refused.load(Relaxed);
        t.l2.timeouts += r.l2_timeouts.load(Relaxed);
        t.l2.skipped += r.l2_skipped.load(Relaxed);
        t.l2.writes += r.l2_writes.load(Relaxed);
        t.l2.bytes_read += r.l2_bytes_read.load(Relaxed);
        t.l2.bytes_written += r.l2_bytes_written.load(Relaxed);
        raw_written += r.l2_raw_bytes_written.load(Relaxed);
        payload_written += r.l2_payload_bytes_written.load(Relaxed);
        t.l2.oversized += r.oversized.load(Relaxed);
        t.l2.decode_errors += r.decode_errors.load(Relaxed);
        t.l2.write_conflicts += r.l2_write_conflicts.load(Relaxed);
        t.l2.tag_rejections += r.tag_rejections.load(Relaxed);
        t.loader.calls += r.loader_calls.load(Relaxed);
        t.loader.errors += r.loader_errors.load(Relaxed);
        t.loader.stale_served += r.stale_served.load(Relaxed);
        t.loader.refreshes += r.refreshes.load(Relaxed);
        t.loader.refresh_failures += r.refresh_failures.load(Relaxed);
        t.loader.soft_timeouts += r.soft_timeouts.load(Relaxed);
        t.loader.hard_timeouts += r.hard_timeouts.load(Relaxed);
        t.lock.acquired += r.lock_acquired.load(Relaxed);
        t.lock.waits += r.lock_waits.load(Relaxed);
        t.lock.fallbacks += r.lock_fallbacks.load(Relaxed);
        t.sets += r.sets.load(Relaxed);
        t.invalidations += r.invalidations.load(Relaxed);
        r.read_latency.merge_into(&mut rl);
        r.write_latency.merge_into(&mut wl);
    }
    t.l1.hit_rate = ratio(t.l1.hits, t.l1.hits + t.l1.misses);
    t.l2.hit_rate = ratio(t.l2.hits, t.l2.hits + t.l2.misses);
    t.l2.compression_ratio = if payload_written == 0 {
        1.0
    } else {
        ratio(raw_written, payload_written)
    };
    t.l2.read_latency = rl.snapshot();
    t.l2.write_latency = wl.snapshot();
    let lookups = t.l1.hits + t.l1.misses;
    // A lookup is answered from cache unless it had to call the loader. Kinds that skip L1 count
    // their L2 lookups instead.
    let lookups = lookups.max(t.loader.calls);
    t.hit_rate = ratio(lookups.saturating_sub(t.loader.calls), lookups);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_bucket_resolution() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let mut acc = HistAcc::default();
        h.merge_into(&mut acc);
        let s = acc.snapshot();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() / 500.0 < 0.2, "{s:?}");
        assert!((s.p99_us - 990.0).abs() / 990.0 < 0.2, "{s:?}");
        assert_eq!(s.max_us, 1000.0);
    }

    #[test]
    fn bucket_bounds_contain_their_values() {
        for ns in [0u64, 1, 3, 4, 5, 7, 8, 100, 12_345, 1 << 40, u64::MAX / 2] {
            let b = bucket_of(ns);
            assert!(bucket_upper(b) >= ns, "{ns} in bucket {b}");
            if b > 0 {
                assert!(bucket_upper(b - 1) < ns, "{ns} in bucket {b}");
            }
        }
    }
}
