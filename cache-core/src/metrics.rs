//! Prometheus / OpenMetrics export of the cache's [`Stats`] through
//! [`prometheus-client`](https://docs.rs/prometheus-client).
//!
//! The counters already live in the cache's own atomics, so nothing is copied into
//! `prometheus-client` metric objects: a [`CacheCollector`] takes one [`Cache::stats`] snapshot per
//! scrape (one consistent view) and encodes it with `prometheus-client`'s text encoder, which
//! writes the OpenMetrics text format (`# EOF`-terminated, counters as `*_total`). Use
//! [`Cache::prometheus_text`] for a ready-made exposition, or register the collector in the
//! application's own `Registry` next to its other metrics.
//!
//! Series (every per-kind series also exists, at 0, for kinds with no traffic yet). Counter
//! families are listed by their sample name (`_total` added by the encoder):
//!
//! | series | type | labels |
//! |---|---|---|
//! | `cache_hits_total`, `cache_misses_total` | counter | `tier` (`l1`, `l2`), `kind` |
//! | `cache_errors_total`, `cache_refused_total`, `cache_timeouts_total`, `cache_skipped_total`, `cache_writes_total`, `cache_read_bytes_total`, `cache_written_bytes_total`, `cache_decode_errors_total`, `cache_oversized_total`, `cache_write_conflicts_total`, `cache_tag_rejections_total` | counter | `tier` (`l2`), `kind` |
//! | `cache_compression_ratio` | gauge | `tier` (`l2`), `kind` |
//! | `cache_loader_calls_total`, `cache_loader_errors_total`, `cache_stale_served_total`, `cache_sets_total`, `cache_invalidations_total` | counter | `kind` |
//! | `cache_refreshes_total`, `cache_refresh_failures_total`, `cache_soft_timeouts_total`, `cache_hard_timeouts_total`, `cache_lock_acquired_total`, `cache_lock_waits_total`, `cache_lock_fallbacks_total` | counter | `kind` |
//! | `cache_entries`, `cache_bytes`, `cache_max_bytes` | gauge | `tier` (`l1`) |
//! | `cache_evictions_total` | counter | `tier` (`l1`) |
//! | `cache_l2_operations_total`, `cache_l2_latency_seconds_total` (sum of latencies) | counter | `op` (`read`, `write`), `kind` |
//! | `cache_l2_latency_quantile_seconds` | gauge (`NaN` before the first operation) | `op`, `kind`, `quantile` (`0.5`, `0.99`, `1` = max) |
//! | `cache_l2_configured`, `cache_l2_refusing_writes`, `cache_tracked_tag_invalidations`, `cache_pending_invalidations` | gauge | |
//! | `cache_pending_invalidations_queued_total`, `cache_pending_invalidations_replayed_total`, `cache_pending_invalidations_dropped_total` | counter | |
//! | `cache_breaker_state` | gauge (1 for the current state) | `state` (`closed`, `open`, `half_open`) |
//! | `cache_breaker_opens_total`, `cache_breaker_rejected_total` | counter | |
//! | `cache_backplane_subscribed`, `cache_backplane_unsent` | gauge | |
//! | `cache_backplane_received_total`, `cache_backplane_published_total`, `cache_backplane_publish_failures_total`, `cache_backplane_disconnects_total`, `cache_backplane_resyncs_total`, `cache_backplane_resent_total` | counter | |
//!
//! Breaker and backplane series are present only when the cache has an L2 / a backplane.
//! Mean L2 latency over a window is `rate(cache_l2_latency_seconds_total) /
//! rate(cache_l2_operations_total)`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::{Error as FmtError, Write as _};

use crate::breaker::BreakerState;
use crate::stats::{LatencyStats, Stats, TierStats};
use crate::Cache;

/// The `Content-Type` of [`Cache::prometheus_text`]'s output: the OpenMetrics text format that
/// `prometheus-client`'s encoder writes (Prometheus scrapes it natively).
pub const PROMETHEUS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Cache {
    /// The cache's stats in the OpenMetrics text format (serve it with
    /// [`PROMETHEUS_CONTENT_TYPE`]). See [`CacheCollector`] for the series.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cache_core::Cache::builder().build().await.unwrap();
    /// let text = cache.prometheus_text();
    /// assert!(text.contains("# TYPE cache_hits counter"));
    /// assert!(text.contains(r#"cache_hits_total{tier="l1",kind="api_response"} 0"#));
    /// assert!(text.ends_with("# EOF\n"));
    /// # });
    /// ```
    pub fn prometheus_text(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.prometheus_collector()));
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            // Only a gauge at u64::MAX can fail to encode; say so rather than serve half a page.
            tracing::warn!(error = %e, "cache metrics could not be encoded");
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }

    /// A `prometheus-client` [`Collector`] of this cache's stats, to register in the
    /// application's own registry:
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cache_core::Cache::builder().build().await.unwrap();
    /// let mut registry = Registry::default();
    /// registry.register_collector(Box::new(cache.prometheus_collector()));
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("cache_misses_total"));
    /// # });
    /// ```
    pub fn prometheus_collector(&self) -> CacheCollector {
        CacheCollector {
            cache: self.clone(),
        }
    }
}

/// Reads [`Cache::stats`] at each scrape and encodes it (see the module documentation of
/// `metrics` for the series). Holds a clone of the cache handle.
#[derive(Debug, Clone)]
pub struct CacheCollector {
    cache: Cache,
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), FmtError> {
        encode_stats(&self.cache.stats(), &mut encoder)
    }
}

/// A label value escaped as the text format requires (`\\`, `\"`, `\n`): `prometheus-client`
/// writes label values verbatim.
#[derive(Debug, Clone, Copy)]
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), FmtError> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A sample value: counters are `u64` or `f64` (sums of seconds), gauges `i64` or `f64`.
#[derive(Debug, Clone, Copy)]
enum Value {
    Counter(u64),
    FloatCounter(f64),
    Gauge(i64),
    Float(f64),
}

impl Value {
    fn gauge(n: u64) -> Self {
        Value::Gauge(i64::try_from(n).unwrap_or(i64::MAX))
    }

    fn write(self, m: &mut MetricEncoder<'_>) -> Result<(), FmtError> {
        match self {
            Value::Counter(n) => m.encode_counter::<NoLabelSet, u64, u64>(&n, None),
            Value::FloatCounter(x) => m.encode_counter::<NoLabelSet, f64, f64>(&x, None),
            Value::Gauge(n) => m.encode_gauge(&n),
            Value::Float(x) => m.encode_gauge(&x),
        }
    }

    fn metric_type(self) -> MetricType {
        match self {
            Value::Counter(_) | Value::FloatCounter(_) => MetricType::Counter,
            Value::Gauge(_) | Value::Float(_) => MetricType::Gauge,
        }
    }
}

/// Label pairs of one sample.
type Labels<'a> = Vec<(&'static str, Escaped<'a>)>;

/// Writes the descriptors and samples of a snapshot.
struct Writer<'e, 'w> {
    enc: &'e mut DescriptorEncoder<'w>,
}

impl Writer<'_, '_> {
    /// A family with one sample per label set. `ty` is its type even when it has no sample.
    fn family<'a>(
        &mut self,
        name: &str,
        help: &str,
        ty: MetricType,
        samples: impl IntoIterator<Item = (Labels<'a>, Value)>,
    ) -> Result<(), FmtError> {
        let mut m = self.enc.encode_descriptor(name, help, None, ty)?;
        for (labels, v) in samples {
            v.write(&mut m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, help: &str, v: Value) -> Result<(), FmtError> {
        let mut m = self
            .enc
            .encode_descriptor(name, help, None, v.metric_type())?;
        v.write(&mut m)
    }

    /// A family with one sample per kind, labelled `kind` (and `tier` when given).
    fn per_kind(
        &mut self,
        stats: &Stats,
        name: &str,
        help: &str,
        tier: Option<&'static str>,
        get: impl Fn(&TierStats) -> Value,
    ) -> Result<(), FmtError> {
        let ty = get(&TierStats::default()).metric_type();
        let samples = stats.kinds.iter().map(|(k, t)| {
            let mut labels: Labels<'_> = Vec::with_capacity(2);
            if let Some(tier) = tier {
                labels.push(("tier", Escaped(tier)));
            }
            labels.push(("kind", Escaped(k)));
            (labels, get(t))
        });
        self.family(name, help, ty, samples)
    }
}

/// A per-kind counter: name, help, and how to read it from a kind's stats.
type KindCounter = (&'static str, &'static str, fn(&TierStats) -> u64);

/// Encodes a snapshot (every family, see the module documentation).
fn encode_stats(s: &Stats, enc: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
    let mut w = Writer { enc };

    // Hits and misses: both tiers in one family.
    type TierGet = fn(&TierStats) -> u64;
    let hits: [TierGet; 2] = [|t| t.l1.hits, |t| t.l2.hits];
    let misses: [TierGet; 2] = [|t| t.l1.misses, |t| t.l2.misses];
    for (name, help, get) in [
        ("cache_hits", "Lookups answered by the tier.", hits),
        (
            "cache_misses",
            "Lookups the tier could not answer (absent, stale, undecodable, rejected).",
            misses,
        ),
    ] {
        let samples = [("l1", get[0]), ("l2", get[1])]
            .into_iter()
            .flat_map(|(tier, g)| {
                s.kinds.iter().map(move |(k, t)| {
                    (
                        vec![("tier", Escaped(tier)), ("kind", Escaped(k))],
                        Value::Counter(g(t)),
                    )
                })
            });
        w.family(name, help, MetricType::Counter, samples)?;
    }

    let l2_counters: [KindCounter; 11] = [
        (
            "cache_errors",
            "L2 operations that failed with an outage (I/O error, refused or dropped connection, \
             a reply of a server not serving now such as LOADING, READONLY or MISCONF); timeouts, \
             refusals and skipped operations excluded.",
            |t| t.l2.errors,
        ),
        (
            "cache_refused",
            "L2 commands Redis refused (OOM under noeviction, NOPERM, WRONGTYPE, other error \
             replies): handled per operation, not outages.",
            |t| t.l2.refused,
        ),
        (
            "cache_timeouts",
            "L2 operations that exceeded the L2 deadline.",
            |t| t.l2.timeouts,
        ),
        (
            "cache_skipped",
            "L2 operations skipped because the circuit breaker was open.",
            |t| t.l2.skipped,
        ),
        ("cache_writes", "Values written to L2.", |t| t.l2.writes),
        ("cache_read_bytes", "Bytes read from L2.", |t| {
            t.l2.bytes_read
        }),
        (
            "cache_written_bytes",
            "Bytes written to L2 (after compression).",
            |t| t.l2.bytes_written,
        ),
        (
            "cache_decode_errors",
            "L2 values that could not be decoded (read as misses).",
            |t| t.l2.decode_errors,
        ),
        (
            "cache_oversized",
            "Values over the maximum size, not written to L2.",
            |t| t.l2.oversized,
        ),
        (
            "cache_write_conflicts",
            "Load write-backs not stored because the key changed meanwhile.",
            |t| t.l2.write_conflicts,
        ),
        (
            "cache_tag_rejections",
            "L2 entries rejected because one of their tags was invalidated.",
            |t| t.l2.tag_rejections,
        ),
    ];
    for (name, help, get) in l2_counters {
        w.per_kind(s, name, help, Some("l2"), |t| Value::Counter(get(t)))?;
    }
    w.per_kind(
        s,
        "cache_compression_ratio",
        "MessagePack bytes before / after compression of the values written (1 when none was compressed).",
        Some("l2"),
        |t| Value::Float(t.l2.compression_ratio),
    )?;

    let kind_counters: [KindCounter; 12] = [
        (
            "cache_loader_calls",
            "Loader calls (one per key among concurrent callers).",
            |t| t.loader.calls,
        ),
        (
            "cache_loader_errors",
            "Loader calls that returned an error.",
            |t| t.loader.errors,
        ),
        (
            "cache_stale_served",
            "Failed loads answered with a stale value (fail-safe).",
            |t| t.loader.stale_served,
        ),
        ("cache_sets", "Explicit set calls.", |t| t.sets),
        (
            "cache_invalidations",
            "Explicit invalidations of a key.",
            |t| t.invalidations,
        ),
        (
            "cache_refreshes",
            "Eager refreshes started (at most one per key at a time).",
            |t| t.loader.refreshes,
        ),
        (
            "cache_refresh_failures",
            "Eager refreshes whose loader failed or timed out.",
            |t| t.loader.refresh_failures,
        ),
        (
            "cache_soft_timeouts",
            "Stale values served because a load passed its soft timeout.",
            |t| t.loader.soft_timeouts,
        ),
        (
            "cache_hard_timeouts",
            "Loads abandoned at their hard timeout.",
            |t| t.loader.hard_timeouts,
        ),
        (
            "cache_lock_acquired",
            "Loads that took the distributed lock.",
            |t| t.lock.acquired,
        ),
        (
            "cache_lock_waits",
            "Loads that waited for another instance's distributed lock.",
            |t| t.lock.waits,
        ),
        (
            "cache_lock_fallbacks",
            "Loads that called their loader without the lock (Redis unreachable, wait bound passed).",
            |t| t.lock.fallbacks,
        ),
    ];
    for (name, help, get) in kind_counters {
        w.per_kind(s, name, help, None, |t| Value::Counter(get(t)))?;
    }

    // L1 occupancy: moka's cache-wide totals (per-kind figures are in `Stats::kinds`).
    let l1 = &s.total.l1;
    for (name, help, v) in [
        (
            "cache_entries",
            "Entries held (approximate while writes are pending).",
            Value::gauge(l1.entries),
        ),
        (
            "cache_bytes",
            "Weighted size held, in bytes.",
            Value::gauge(l1.bytes),
        ),
        (
            "cache_max_bytes",
            "The byte budget.",
            Value::gauge(l1.max_bytes),
        ),
        (
            "cache_evictions",
            "Entries evicted to stay within the byte budget.",
            Value::Counter(l1.evictions),
        ),
    ] {
        w.family(
            name,
            help,
            v.metric_type(),
            [(vec![("tier", Escaped("l1"))], v)],
        )?;
    }

    // L2 latency per operation and kind: count and sum as counters, quantiles as gauges.
    type LatencyGet = fn(&TierStats) -> &LatencyStats;
    let ops: [(&str, LatencyGet); 2] = [
        ("read", |t| &t.l2.read_latency),
        ("write", |t| &t.l2.write_latency),
    ];
    // Samples of one latency family: `(quantile label, value)` pairs from a kind's latency.
    type LatencySamples = fn(&LatencyStats) -> Vec<(Option<&'static str>, Value)>;
    let per_op = |f: LatencySamples| {
        ops.iter().flat_map(move |&(op, get)| {
            s.kinds.iter().flat_map(move |(k, t)| {
                f(get(t)).into_iter().map(move |(q, v)| {
                    let mut labels = vec![("op", Escaped(op)), ("kind", Escaped(k))];
                    if let Some(q) = q {
                        labels.push(("quantile", Escaped(q)));
                    }
                    (labels, v)
                })
            })
        })
    };
    w.family(
        "cache_l2_operations",
        "L2 operations whose latency was measured.",
        MetricType::Counter,
        per_op(|l| vec![(None, Value::Counter(l.count))]),
    )?;
    w.family(
        "cache_l2_latency_seconds",
        "Sum of the latencies of the measured L2 operations.",
        MetricType::Counter,
        per_op(|l| {
            let sum = l.mean_us * l.count as f64 / 1e6;
            vec![(None, Value::FloatCounter(sum))]
        }),
    )?;
    w.family(
        "cache_l2_latency_quantile_seconds",
        "L2 operation latency quantiles since start (log-bucketed, ~19% resolution; quantile 1 is the maximum).",
        MetricType::Gauge,
        per_op(|l| {
            let secs = |us: f64| {
                if l.count == 0 {
                    Value::Float(f64::NAN)
                } else {
                    Value::Float(us / 1e6)
                }
            };
            vec![
                (Some("0.5"), secs(l.p50_us)),
                (Some("0.99"), secs(l.p99_us)),
                (Some("1"), secs(l.max_us)),
            ]
        }),
    )?;

    w.single(
        "cache_l2_configured",
        "1 when the cache has an L2 (Redis).",
        Value::Gauge(i64::from(s.l2_configured)),
    )?;
    w.single(
        "cache_l2_refusing_writes",
        "1 while Redis refuses writes for lack of memory (OOM under noeviction): values are not \
         written back, invalidations delete keys.",
        Value::Gauge(i64::from(s.l2_refusing_writes)),
    )?;
    w.single(
        "cache_tracked_tag_invalidations",
        "Tags whose recent invalidation this instance tracks for its L1.",
        Value::gauge(s.tracked_tag_invalidations),
    )?;
    let p = &s.pending_invalidations;
    w.single(
        "cache_pending_invalidations",
        "Invalidations made while L2 was unreachable, waiting to be replayed.",
        Value::gauge(p.pending),
    )?;
    for (name, help, v) in [
        (
            "cache_pending_invalidations_queued",
            "Invalidations queued while L2 was unreachable.",
            p.queued,
        ),
        (
            "cache_pending_invalidations_replayed",
            "Queued invalidations applied to L2 once it was back.",
            p.replayed,
        ),
        (
            "cache_pending_invalidations_dropped",
            "Invalidations dropped because the queue was full.",
            p.dropped,
        ),
    ] {
        w.single(name, help, Value::Counter(v))?;
    }

    if let Some(b) = &s.breaker {
        let states = [
            ("closed", BreakerState::Closed),
            ("open", BreakerState::Open),
            ("half_open", BreakerState::HalfOpen),
        ];
        w.family(
            "cache_breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            MetricType::Gauge,
            states.map(|(label, st)| {
                (
                    vec![("state", Escaped(label))],
                    Value::Gauge(i64::from(b.state == st)),
                )
            }),
        )?;
        w.single(
            "cache_breaker_opens",
            "Times the circuit breaker opened.",
            Value::Counter(b.opens),
        )?;
        w.single(
            "cache_breaker_rejected",
            "L2 operations rejected while the breaker was open.",
            Value::Counter(b.rejected),
        )?;
    }

    if let Some(bp) = &s.backplane {
        w.single(
            "cache_backplane_subscribed",
            "1 while the backplane (pub/sub) subscription is up.",
            Value::Gauge(i64::from(bp.subscribed)),
        )?;
        for (name, help, v) in [
            (
                "cache_backplane_received",
                "Backplane messages received (own echoes and heartbeats included).",
                bp.received,
            ),
            (
                "cache_backplane_published",
                "Backplane messages published.",
                bp.published,
            ),
            (
                "cache_backplane_publish_failures",
                "Backplane publishes that failed.",
                bp.publish_failures,
            ),
            (
                "cache_backplane_disconnects",
                "Times the backplane subscription was lost.",
                bp.disconnects,
            ),
            (
                "cache_backplane_resyncs",
                "L1 flushes after (re)subscribing.",
                bp.resyncs,
            ),
            (
                "cache_backplane_resent",
                "Backplane messages sent again after their publish failed.",
                bp.resent,
            ),
        ] {
            w.single(name, help, Value::Counter(v))?;
        }
        w.single(
            "cache_backplane_unsent",
            "Backplane messages waiting to be sent again (other instances may hold copies they would drop).",
            Value::Gauge(i64::try_from(bp.unsent).unwrap_or(i64::MAX)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut registry = Registry::default();
        #[derive(Debug)]
        struct One(String);
        impl Collector for One {
            fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), FmtError> {
                let mut w = Writer { enc: &mut enc };
                w.family(
                    "x",
                    "h",
                    MetricType::Gauge,
                    [(vec![("k", Escaped(&self.0))], Value::Gauge(1))],
                )
            }
        }
        registry.register_collector(Box::new(One(s.to_owned())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn label_values_are_escaped() {
        let out = escaped("a\"b\\c\nd");
        assert!(out.contains(r#"x{k="a\"b\\c\nd"} 1"#), "{out}");
    }

    #[test]
    fn counters_get_total_suffix_and_gauges_do_not() {
        let stats = Stats {
            prefix: "p".into(),
            l2_configured: false,
            l2_refusing_writes: false,
            breaker: None,
            backplane: None,
            tracked_tag_invalidations: 0,
            pending_invalidations: Default::default(),
            total: TierStats::default(),
            kinds: [("k".to_owned(), TierStats::default())].into(),
        };
        #[derive(Debug)]
        struct S(Stats);
        impl Collector for S {
            fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), FmtError> {
                encode_stats(&self.0, &mut enc)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(S(stats)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("# TYPE cache_hits counter\n"), "{out}");
        assert!(out.contains("cache_hits_total{tier=\"l2\",kind=\"k\"} 0\n"));
        assert!(out.contains("cache_entries{tier=\"l1\"} 0\n"));
        assert!(out.contains(
            "cache_l2_latency_quantile_seconds{op=\"read\",kind=\"k\",quantile=\"0.99\"} NaN\n"
        ));
        assert!(!out.contains("cache_breaker"));
        assert!(
            out.contains("cache_refused_total{tier=\"l2\",kind=\"k\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("cache_l2_refusing_writes 0\n"), "{out}");
        assert!(out.ends_with("# EOF\n"));
    }
}
