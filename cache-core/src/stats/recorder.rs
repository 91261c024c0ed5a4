//! The counters behind [`Stats`](super::Stats), recorded on the hot path: one recorder per kind
//! (relaxed atomics: a hit costs a single increment), read into a plain [`Raw`] copy when a
//! snapshot is taken. Raw copies subtract ([`Raw::since`]), which is how the windows of
//! [`crate::history`] are computed, and add up ([`Raw::add`]), which is how tier totals are.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::l2::L2Error;

/// Why a tier could not serve a lookup: the reason of a [`Miss`](crate::events::Event::Miss)
/// event, counted per reason in [`MissReasons`](super::MissReasons). L1 misses have the reasons
/// `Absent`, `Expired`, `Evicted`, `Rejected`, `Mismatch` and `Bypassed`; L2 misses all but
/// `Evicted` and `Bypassed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MissReason {
    /// Nothing stored under the key (never loaded here, removed, or expired or evicted out of
    /// sight: Redis drops expired keys by itself), or another instance is loading it.
    Absent,
    /// The value was past its freshness (kept only as a fail-safe fallback), or L1 dropped it
    /// when its lifetime ended.
    Expired,
    /// L1 evicted the entry to stay within its byte budget.
    Evicted,
    /// Invalidated: by key (a tombstone in L2, or removed from L1), by tag, or by a clear.
    Rejected,
    /// Stored for another Rust type or another [`KindConfig::schema`](crate::KindConfig::schema).
    Mismatch,
    /// Bytes that do not decode (corrupt, another envelope version, another Redis type).
    Undecodable,
    /// Larger than the maximum value size.
    Oversized,
    /// L2 not asked: the circuit breaker was open (or the key was fenced during a recovery, or,
    /// with Redis Sentinel, L2 reads paused for a moment after the master moved).
    Skipped,
    /// L2 asked but did not answer in time or at all (error, timeout).
    Unavailable,
    /// The call bypassed the cache ([`scope::bypass`](crate::scope::bypass)).
    Bypassed,
}

/// The reason's name (as in JSON and the Prometheus `reason` label): `absent`, `expired`...
impl std::fmt::Display for MissReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl MissReason {
    pub(crate) const COUNT: usize = 10;
    pub(crate) const ALL: [MissReason; Self::COUNT] = [
        MissReason::Absent,
        MissReason::Expired,
        MissReason::Evicted,
        MissReason::Rejected,
        MissReason::Mismatch,
        MissReason::Undecodable,
        MissReason::Oversized,
        MissReason::Skipped,
        MissReason::Unavailable,
        MissReason::Bypassed,
    ];

    /// The name used in JSON and as the Prometheus `reason` label.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MissReason::Absent => "absent",
            MissReason::Expired => "expired",
            MissReason::Evicted => "evicted",
            MissReason::Rejected => "rejected",
            MissReason::Mismatch => "mismatch",
            MissReason::Undecodable => "undecodable",
            MissReason::Oversized => "oversized",
            MissReason::Skipped => "skipped",
            MissReason::Unavailable => "unavailable",
            MissReason::Bypassed => "bypassed",
        }
    }
}

/// Upper bounds (seconds) of the Prometheus histogram buckets (`+Inf` implied after the last).
pub(crate) const PROM_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
const PROM_BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
const FINE: usize = 256;

/// A latency histogram. Lock-free and shared by every caller of a kind, which is why it is
/// hand-written: `hdrhistogram` needs `&mut` to record (a lock per operation), and
/// `prometheus-client`'s histogram has no quantiles and cannot be subtracted for windows. It
/// keeps two sets of buckets: fine ones (4 per power of two of nanoseconds, ~19% resolution) for
/// quantiles, and exact counts for the Prometheus bounds [`PROM_BOUNDS`].
pub(crate) struct Histogram {
    fine: [AtomicU64; FINE],
    prom: [AtomicU64; PROM_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            fine: std::array::from_fn(|_| AtomicU64::new(0)),
            prom: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

pub(crate) fn bucket_of(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros() as u64;
    let sub = (ns >> (msb - 2)) & 3;
    ((msb - 1) * 4 + sub) as usize
}

pub(crate) fn bucket_upper(idx: usize) -> u64 {
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
        self.fine[bucket_of(ns).min(FINE - 1)].fetch_add(1, Relaxed);
        let prom = PROM_BOUNDS_NS.partition_point(|&b| b < ns);
        self.prom[prom].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
    }

    fn raw(&self) -> HistRaw {
        let fine = self
            .fine
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Relaxed);
                (n > 0).then_some((i as u8, n))
            })
            .collect();
        HistRaw {
            fine,
            prom: std::array::from_fn(|i| self.prom[i].load(Relaxed)),
            count: self.count.load(Relaxed),
            sum_ns: self.sum_ns.load(Relaxed),
            max_ns: self.max_ns.load(Relaxed),
        }
    }
}

/// A histogram read at one moment: the fine buckets that are not empty, by index.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HistRaw {
    pub(crate) fine: Vec<(u8, u64)>,
    /// Per Prometheus bound (not cumulative), then `+Inf`.
    pub(crate) prom: [u64; PROM_BOUNDS.len() + 1],
    pub(crate) count: u64,
    pub(crate) sum_ns: u64,
    /// The largest value seen since start (a window cannot know its own maximum: it reports the
    /// upper bound of its highest bucket instead).
    pub(crate) max_ns: u64,
}

impl HistRaw {
    fn merge(&mut self, other: &HistRaw, sign: i8) {
        let mut out = Vec::with_capacity(self.fine.len().max(other.fine.len()));
        let (mut a, mut b) = (self.fine.iter().peekable(), other.fine.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, Some(&&(i, n))) => {
                    b.next();
                    (i, if sign > 0 { n } else { 0 })
                }
                (Some(&&(i, n)), Some(&&(j, m))) => {
                    if i < j {
                        a.next();
                        (i, n)
                    } else if j < i {
                        b.next();
                        (j, if sign > 0 { m } else { 0 })
                    } else {
                        a.next();
                        b.next();
                        (i, combine(n, m, sign))
                    }
                }
            };
            if next.1 > 0 {
                out.push(next);
            }
        }
        self.fine = out;
        for (x, y) in self.prom.iter_mut().zip(other.prom) {
            *x = combine(*x, y, sign);
        }
        self.count = combine(self.count, other.count, sign);
        self.sum_ns = combine(self.sum_ns, other.sum_ns, sign);
        if sign > 0 {
            self.max_ns = self.max_ns.max(other.max_ns);
        } else {
            // The window's maximum is not known: the upper bound of its highest bucket (or 0).
            self.max_ns = self
                .fine
                .last()
                .map_or(0, |&(i, _)| bucket_upper(i as usize).min(self.max_ns));
        }
    }

    /// The value below which a fraction `q` of the observations fall (upper bound of its fine
    /// bucket, at most the maximum), in nanoseconds; `None` without observations.
    pub(crate) fn quantile_ns(&self, q: f64) -> Option<u64> {
        let total: u64 = self.fine.iter().map(|&(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(i, n) in &self.fine {
            seen += n;
            if seen >= rank {
                return Some(bucket_upper(i as usize).min(self.max_ns.max(1)));
            }
        }
        Some(self.max_ns)
    }
}

fn combine(a: u64, b: u64, sign: i8) -> u64 {
    if sign > 0 {
        a.saturating_add(b)
    } else {
        a.saturating_sub(b)
    }
}

/// Defines the counters of a kind once: the recorder's atomics, their plain copy, reading and
/// combining them.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The per-kind recorder.
        #[derive(Default)]
        pub(crate) struct KindStats {
            $($(#[$doc])* pub(crate) $name: AtomicU64,)*
            /// Misses per reason ([`MissReason`] order), per tier.
            pub(crate) l1_reasons: [AtomicU64; MissReason::COUNT],
            pub(crate) l2_reasons: [AtomicU64; MissReason::COUNT],
            /// Moving average of the loader's duration in µs (XFetch's `delta`); not a counter.
            pub(crate) loader_time_us: AtomicU64,
            pub(crate) read_latency: Histogram,
            pub(crate) write_latency: Histogram,
            pub(crate) loader_latency: Histogram,
            /// Time from an L1 eviction to the lookup that missed because of it.
            pub(crate) reread_after_eviction: Histogram,
            /// Time from a value's write to the lookup that found it expired.
            pub(crate) reread_after_expiry: Histogram,
            /// Whether a decode error was logged at WARN already (later ones go to DEBUG).
            pub(crate) decode_error_logged: AtomicBool,
        }

        /// A kind's counters read at one moment (or summed, or subtracted).
        #[derive(Debug, Clone, Default, PartialEq)]
        pub(crate) struct Raw {
            $(pub(crate) $name: u64,)*
            pub(crate) l1_reasons: [u64; MissReason::COUNT],
            pub(crate) l2_reasons: [u64; MissReason::COUNT],
            pub(crate) read_latency: HistRaw,
            pub(crate) write_latency: HistRaw,
            pub(crate) loader_latency: HistRaw,
            pub(crate) reread_after_eviction: HistRaw,
            pub(crate) reread_after_expiry: HistRaw,
        }

        impl KindStats {
            /// Reads every counter (each one atomically; not all of them at one instant).
            pub(crate) fn raw(&self) -> Raw {
                Raw {
                    $($name: self.$name.load(Relaxed),)*
                    l1_reasons: std::array::from_fn(|i| self.l1_reasons[i].load(Relaxed)),
                    l2_reasons: std::array::from_fn(|i| self.l2_reasons[i].load(Relaxed)),
                    read_latency: self.read_latency.raw(),
                    write_latency: self.write_latency.raw(),
                    loader_latency: self.loader_latency.raw(),
                    reread_after_eviction: self.reread_after_eviction.raw(),
                    reread_after_expiry: self.reread_after_expiry.raw(),
                }
            }
        }

        impl Raw {
            fn merge(&mut self, other: &Raw, sign: i8) {
                $(self.$name = combine(self.$name, other.$name, sign);)*
                for i in 0..MissReason::COUNT {
                    self.l1_reasons[i] = combine(self.l1_reasons[i], other.l1_reasons[i], sign);
                    self.l2_reasons[i] = combine(self.l2_reasons[i], other.l2_reasons[i], sign);
                }
                self.read_latency.merge(&other.read_latency, sign);
                self.write_latency.merge(&other.write_latency, sign);
                self.loader_latency.merge(&other.loader_latency, sign);
                self.reread_after_eviction.merge(&other.reread_after_eviction, sign);
                self.reread_after_expiry.merge(&other.reread_after_expiry, sign);
            }

            /// Adds `other`'s counts to these.
            pub(crate) fn add(&mut self, other: &Raw) {
                self.merge(other, 1);
            }

            /// What was counted between `earlier` and `self` (a later reading of the same kind).
            pub(crate) fn since(&self, earlier: &Raw) -> Raw {
                let mut d = self.clone();
                d.merge(earlier, -1);
                d
            }

            /// Lookups of the kind: L1 lookups, or loader calls for kinds that skip L1 (the
            /// denominator of the hit rate).
            pub(crate) fn lookups(&self) -> u64 {
                (self.l1_hits + self.l1_misses).max(self.loader_calls)
            }

            /// Lookups answered without the loader.
            pub(crate) fn answered(&self) -> u64 {
                self.lookups().saturating_sub(self.loader_calls)
            }
        }
    };
}

counters! {
    l1_hits,
    l1_misses,
    l2_hits,
    l2_misses,
    l2_errors,
    l2_timeouts,
    l2_skipped,
    l2_writes,
    l2_bytes_read,
    l2_bytes_written,
    l2_raw_bytes_written,
    l2_payload_bytes_written,
    l2_write_conflicts,
    /// Operations Redis refused (memory, permissions, another type under a key).
    l2_refused,
    tag_rejections,
    oversized,
    decode_errors,
    loader_calls,
    loader_errors,
    stale_served,
    sets,
    invalidations,
    refreshes,
    refresh_failures,
    soft_timeouts,
    hard_timeouts,
    lock_acquired,
    lock_waits,
    lock_fallbacks,
    /// Loader time avoided, in µs: added once per second by the history sampler (lookups answered
    /// without the loader in that second × the kind's mean loader time then), never on a hit.
    saved_us,
}

impl KindStats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts an L1 miss and its reason.
    pub(crate) fn l1_miss(&self, why: MissReason) {
        Self::inc(&self.l1_misses);
        Self::inc(&self.l1_reasons[why as usize]);
    }

    /// Counts an L2 read that produced no usable value, and its reason.
    pub(crate) fn l2_miss(&self, why: MissReason) {
        Self::inc(&self.l2_misses);
        Self::inc(&self.l2_reasons[why as usize]);
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

    /// Counts an L2 read that produced no result: the error, and a miss whose reason is that L2
    /// was skipped (breaker open) or unavailable. Returns that reason.
    pub(crate) fn count_l2_read_error(&self, e: &L2Error) -> MissReason {
        self.count_l2_error(e);
        let why = match e {
            L2Error::Skipped => MissReason::Skipped,
            L2Error::Refused(..) => MissReason::Undecodable,
            L2Error::Timeout(_) | L2Error::Unavailable(_) => MissReason::Unavailable,
        };
        self.l2_miss(why);
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(us: impl IntoIterator<Item = u64>) -> HistRaw {
        let h = Histogram::default();
        for us in us {
            h.record(Duration::from_micros(us));
        }
        h.raw()
    }

    #[test]
    fn histogram_quantiles_are_within_bucket_resolution() {
        let r = hist(1..=1000);
        assert_eq!(r.count, 1000);
        let p50 = r.quantile_ns(0.5).unwrap() as f64 / 1e3;
        let p99 = r.quantile_ns(0.99).unwrap() as f64 / 1e3;
        assert!((p50 - 500.0).abs() / 500.0 < 0.2, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.2, "{p99}");
        assert_eq!(r.max_ns, 1_000_000);
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

    #[test]
    fn prometheus_buckets_count_each_value_under_the_first_bound_at_or_above_it() {
        // 100 µs is exactly the first bound (le="0.0001"); 101 µs is above it.
        let r = hist([100, 101, 1_000, 20_000_000]);
        assert_eq!(r.prom[0], 1);
        assert_eq!(r.prom[1], 1);
        assert_eq!(r.prom[3], 1, "1 ms is le=0.001");
        assert_eq!(r.prom[PROM_BOUNDS.len()], 1, "20 s is only under +Inf");
        assert_eq!(r.prom.iter().sum::<u64>(), 4);
    }

    #[test]
    fn a_window_is_the_difference_of_two_readings() {
        let h = Histogram::default();
        for us in [10, 20, 30] {
            h.record(Duration::from_micros(us));
        }
        let before = h.raw();
        for us in [5_000, 6_000] {
            h.record(Duration::from_micros(us));
        }
        let mut after = h.raw();
        after.merge(&before, -1);
        assert_eq!(after.count, 2);
        assert_eq!(after.sum_ns, 11_000_000);
        let p50 = after.quantile_ns(0.5).unwrap();
        assert!((5_000_000..=6_100_000).contains(&p50), "{p50}");
        assert_eq!(after.fine.iter().map(|&(_, n)| n).sum::<u64>(), 2);
        // Added back, the readings give the total again.
        after.merge(&before, 1);
        assert_eq!(after.count, 5);
    }

    #[test]
    fn counters_subtract_per_field_and_reason() {
        let s = KindStats::default();
        s.l1_miss(MissReason::Evicted);
        KindStats::inc(&s.l1_hits);
        let a = s.raw();
        s.l1_miss(MissReason::Expired);
        s.l1_miss(MissReason::Expired);
        KindStats::inc(&s.loader_calls);
        let d = s.raw().since(&a);
        assert_eq!(d.l1_misses, 2);
        assert_eq!(d.l1_hits, 0);
        assert_eq!(d.l1_reasons[MissReason::Expired as usize], 2);
        assert_eq!(d.l1_reasons[MissReason::Evicted as usize], 0);
        assert_eq!(d.lookups(), 2);
        assert_eq!(d.answered(), 1);
    }
}
