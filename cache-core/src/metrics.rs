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
//! Every series is labelled `cache` (the [`CacheBuilder::name`](crate::CacheBuilder::name), the
//! prefix unless set) first, so two caches in one registry are told apart. Every per-kind series
//! also exists, at 0, for kinds with no traffic yet. Counter families are listed by their sample
//! name (`_total` added by the encoder):
//!
//! | series | type | labels |
//! |---|---|---|
//! | `cache_hits_total`, `cache_misses_total` | counter | `tier` (`l1`, `l2`), `kind` |
//! | `cache_miss_reasons_total` | counter | `tier`, `kind`, `reason` (`absent`, `expired`, `evicted`, `rejected`, `mismatch`, `undecodable`, `oversized`, `skipped`, `unavailable`, `bypassed`) |
//! | `cache_lookups_total`, `cache_loader_time_saved_seconds_total`, `cache_cost_saved_total`, `cache_cost_spent_total` | counter | `kind` |
//! | `cache_hit_rate_target` | gauge (kinds with a target) | `kind` |
//! | `cache_errors_total`, `cache_refused_total`, `cache_timeouts_total`, `cache_skipped_total`, `cache_writes_total`, `cache_read_bytes_total`, `cache_written_bytes_total`, `cache_decode_errors_total`, `cache_oversized_total`, `cache_write_conflicts_total`, `cache_tag_rejections_total` | counter | `tier` (`l2`), `kind` |
//! | `cache_compression_ratio` | gauge | `tier` (`l2`), `kind` |
//! | `cache_loader_calls_total`, `cache_loader_errors_total`, `cache_stale_served_total`, `cache_sets_total`, `cache_invalidations_total` | counter | `kind` |
//! | `cache_refreshes_total`, `cache_refresh_failures_total`, `cache_soft_timeouts_total`, `cache_hard_timeouts_total`, `cache_lock_acquired_total`, `cache_lock_waits_total`, `cache_lock_fallbacks_total` | counter | `kind` |
//! | `cache_l2_duration_seconds` | histogram | `op` (`read`, `write`), `kind` |
//! | `cache_loader_duration_seconds` | histogram | `kind` |
//! | `cache_entries`, `cache_bytes`, `cache_max_bytes` | gauge | `tier` (`l1`) |
//! | `cache_evictions_total` | counter | `tier` (`l1`) |
//! | `cache_l2_configured`, `cache_l2_refusing_writes`, `cache_tracked_tag_invalidations`, `cache_pending_invalidations` | gauge | |
//! | `cache_pending_invalidations_queued_total`, `cache_pending_invalidations_replayed_total`, `cache_pending_invalidations_dropped_total` | counter | |
//! | `cache_redis_used_memory_bytes`, `cache_redis_maxmemory_bytes` | gauge | |
//! | `cache_redis_maxmemory_policy` | gauge (1) | `policy` |
//! | `cache_breaker_state` | gauge (1 for the current state) | `state` (`closed`, `open`, `half_open`) |
//! | `cache_breaker_opens_total`, `cache_breaker_rejected_total` | counter | |
//! | `cache_backplane_subscribed`, `cache_backplane_unsent` | gauge | |
//! | `cache_backplane_received_total`, `cache_backplane_published_total`, `cache_backplane_publish_failures_total`, `cache_backplane_disconnects_total`, `cache_backplane_resyncs_total`, `cache_backplane_resent_total` | counter | |
//! | `cache_event_subscribers` | gauge | |
//! | `cache_events_dropped_total` | counter | |
//!
//! Histogram buckets (seconds): 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
//! 0.1, 0.25, 0.5, 1, 2.5, 5, 10, +Inf. The L2 p99 over 5 minutes is
//! `histogram_quantile(0.99, sum by (le, cache) (rate(cache_l2_duration_seconds_bucket{op="read"}[5m])))`.
//! Redis memory series appear once it was read (every 10 s; not with an ACL user without `INFO`).
//! Breaker and backplane series are present only when the cache has an L2 / a backplane.

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
    /// assert!(text.contains(r#"cache_hits_total{cache="cache",tier="l1",kind="api_response"} 0"#));
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
        encode_stats(&[self.cache.stats()], &mut encoder)
    }
}

/// The collector of several caches of one process, for one registry: each family is written
/// once with every cache's samples, told apart by their `cache` label (their
/// [`CacheBuilder::name`](crate::CacheBuilder::name)s, which must then differ). Registering one
/// [`Cache::prometheus_collector`] per cache instead would declare each family once per cache,
/// which Prometheus refuses.
///
/// ```
/// use prometheus_client::registry::Registry;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let users = cache_core::Cache::builder().prefix("app").name("users").build().await.unwrap();
/// let llm = cache_core::Cache::builder().prefix("app").name("llm").build().await.unwrap();
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(cache_core::metrics::collector([&users, &llm])));
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert_eq!(text.matches("# TYPE cache_hits counter").count(), 1);
/// assert!(text.contains(r#"cache_hits_total{cache="users",tier="l1",kind="api_response"} 0"#));
/// assert!(text.contains(r#"cache_hits_total{cache="llm",tier="l1",kind="api_response"} 0"#));
/// # });
/// ```
pub fn collector<'a>(caches: impl IntoIterator<Item = &'a Cache>) -> CachesCollector {
    CachesCollector {
        caches: caches.into_iter().cloned().collect(),
    }
}

/// Reads the [`Cache::stats`] of several caches at each scrape (see [`collector`]).
#[derive(Debug, Clone)]
pub struct CachesCollector {
    caches: Vec<Cache>,
}

impl Collector for CachesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), FmtError> {
        let all: Vec<Stats> = self.caches.iter().map(Cache::stats).collect();
        encode_stats(&all, &mut encoder)
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

/// Writes the descriptors and samples of snapshots of one or more caches: each family once, with
/// every cache's samples, each labelled `cache` first.
struct Writer<'e, 'w, 's> {
    enc: &'e mut DescriptorEncoder<'w>,
    all: &'s [Stats],
}

impl<'s> Writer<'_, '_, 's> {
    /// A family with, per snapshot, the samples `samples` gives. `ty` is its type even when it
    /// has no sample.
    fn family<I>(
        &mut self,
        name: &str,
        help: &str,
        ty: MetricType,
        samples: impl Fn(&'s Stats) -> I,
    ) -> Result<(), FmtError>
    where
        I: IntoIterator<Item = (Labels<'s>, Value)>,
    {
        let mut m = self.enc.encode_descriptor(name, help, None, ty)?;
        for s in self.all {
            for (mut labels, v) in samples(s) {
                labels.insert(0, ("cache", Escaped(&s.name)));
                v.write(&mut m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// A family with one sample per snapshot (labelled `cache` only), for the snapshots where
    /// `v` gives one; left out when none does.
    fn single(
        &mut self,
        name: &str,
        help: &str,
        v: impl Fn(&'s Stats) -> Option<Value>,
    ) -> Result<(), FmtError> {
        let Some(ty) = self.all.iter().find_map(&v).map(Value::metric_type) else {
            return Ok(());
        };
        self.family(name, help, ty, |s| v(s).map(|v| (Vec::new(), v)))
    }

    /// A histogram family: one histogram per label set, from a latency's cumulative buckets.
    fn histograms<I>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl Fn(&'s Stats) -> I,
    ) -> Result<(), FmtError>
    where
        I: IntoIterator<Item = (Labels<'s>, &'s LatencyStats)>,
    {
        let mut m = self
            .enc
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for s in self.all {
            for (mut labels, l) in samples(s) {
                labels.insert(0, ("cache", Escaped(&s.name)));
                // The encoder takes per-bucket counts and adds them up itself; `f64::MAX` is
                // `+Inf`.
                let mut below = 0;
                let mut buckets: Vec<(f64, u64)> = crate::stats::PROM_BOUNDS
                    .iter()
                    .map(|&le| {
                        let cumulative = l
                            .buckets
                            .iter()
                            .find(|(b, _)| *b == le)
                            .map_or(below, |&(_, n)| n);
                        let n = cumulative.saturating_sub(below);
                        below = cumulative;
                        (le, n)
                    })
                    .collect();
                buckets.push((f64::MAX, l.count.saturating_sub(below)));
                let sum = l.mean_us * l.count as f64 / 1e6;
                m.encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, l.count, &buckets, None)?;
            }
        }
        Ok(())
    }

    /// A family with one sample per kind, labelled `kind` (and `tier` when given).
    fn per_kind(
        &mut self,
        name: &str,
        help: &str,
        tier: Option<&'static str>,
        get: impl Fn(&TierStats) -> Value + Copy,
    ) -> Result<(), FmtError> {
        let ty = get(&TierStats::default()).metric_type();
        self.family(name, help, ty, move |s| {
            s.kinds.iter().map(move |(k, t)| {
                let mut labels: Labels<'_> = Vec::with_capacity(3);
                if let Some(tier) = tier {
                    labels.push(("tier", Escaped(tier)));
                }
                labels.push(("kind", Escaped(k)));
                (labels, get(t))
            })
        })
    }
}

/// A per-kind counter: name, help, and how to read it from a kind's stats.
type KindCounter = (&'static str, &'static str, fn(&TierStats) -> u64);

/// Encodes snapshots of one or more caches (every family, see the module documentation).
fn encode_stats(all: &[Stats], enc: &mut DescriptorEncoder<'_>) -> Result<(), FmtError> {
    let mut w = Writer { enc, all };

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
        w.family(name, help, MetricType::Counter, |s| {
            [("l1", get[0]), ("l2", get[1])]
                .into_iter()
                .flat_map(move |(tier, g)| {
                    s.kinds.iter().map(move |(k, t)| {
                        (
                            vec![("tier", Escaped(tier)), ("kind", Escaped(k))],
                            Value::Counter(g(t)),
                        )
                    })
                })
        })?;
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
        w.per_kind(name, help, Some("l2"), move |t| Value::Counter(get(t)))?;
    }
    w.per_kind(
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
        w.per_kind(name, help, None, move |t| Value::Counter(get(t)))?;
    }

    // L1 occupancy: moka's cache-wide totals (per-kind figures are in `Stats::kinds`).
    type L1Get = fn(&crate::stats::L1Stats) -> Value;
    let occupancy: [(&str, &str, L1Get); 4] = [
        (
            "cache_entries",
            "Entries held (approximate while writes are pending).",
            |l1| Value::gauge(l1.entries),
        ),
        ("cache_bytes", "Weighted size held, in bytes.", |l1| {
            Value::gauge(l1.bytes)
        }),
        ("cache_max_bytes", "The byte budget.", |l1| {
            Value::gauge(l1.max_bytes)
        }),
        (
            "cache_evictions",
            "Entries evicted to stay within the byte budget.",
            |l1| Value::Counter(l1.evictions),
        ),
    ];
    for (name, help, get) in occupancy {
        let ty = get(&Default::default()).metric_type();
        w.family(name, help, ty, |s| {
            [(vec![("tier", Escaped("l1"))], get(&s.total.l1))]
        })?;
    }

    // Latency histograms: L2 reads and writes, loader calls.
    w.histograms("cache_l2_duration_seconds", "L2 operation latency.", |s| {
        ["read", "write"].into_iter().flat_map(move |op| {
            s.kinds.iter().map(move |(k, t)| {
                let l = if op == "read" {
                    &t.l2.read_latency
                } else {
                    &t.l2.write_latency
                };
                (vec![("op", Escaped(op)), ("kind", Escaped(k))], l)
            })
        })
    })?;
    w.histograms(
        "cache_loader_duration_seconds",
        "Loader call latency (successful and failed calls).",
        |s| {
            s.kinds
                .iter()
                .map(|(k, t)| (vec![("kind", Escaped(k))], &t.loader.latency))
        },
    )?;

    // Why lookups missed, per tier and kind.
    type ReasonsGet = fn(&TierStats) -> &crate::stats::MissReasons;
    let tiers: [(&str, ReasonsGet); 2] = [
        ("l1", |t| &t.l1.miss_reasons),
        ("l2", |t| &t.l2.miss_reasons),
    ];
    w.family(
        "cache_miss_reasons",
        "Misses by reason: absent, expired, evicted (L1 budget), rejected (invalidated, by key or \
         tag), mismatch (another type or schema), undecodable, oversized, skipped (breaker open), \
         unavailable (L2 error or timeout), bypassed.",
        MetricType::Counter,
        |s| {
            tiers.iter().flat_map(move |&(tier, get)| {
                s.kinds.iter().flat_map(move |(k, t)| {
                    get(t).iter().map(move |(reason, n)| {
                        (
                            vec![
                                ("tier", Escaped(tier)),
                                ("kind", Escaped(k)),
                                ("reason", Escaped(reason)),
                            ],
                            Value::Counter(n),
                        )
                    })
                })
            })
        },
    )?;

    // Lookups and what the cache saved.
    w.per_kind(
        "cache_lookups",
        "Lookups (L1 lookups; loader calls for kinds that skip L1): the hit rate is \
         1 - cache_loader_calls_total / cache_lookups_total.",
        None,
        |t| Value::Counter(t.lookups),
    )?;
    w.per_kind(
        "cache_loader_time_saved_seconds",
        "Loader time avoided: lookups answered without the loader × the kind's mean loader time.",
        None,
        |t| Value::FloatCounter(t.savings.loader_time_saved_secs),
    )?;
    w.per_kind(
        "cache_cost_saved",
        "Lookups answered without the loader × the kind's cost of one load (KindConfig::load_cost).",
        None,
        |t| Value::FloatCounter(t.savings.cost_saved),
    )?;
    w.per_kind(
        "cache_cost_spent",
        "Loader calls × the kind's cost of one load (KindConfig::load_cost).",
        None,
        |t| Value::FloatCounter(t.savings.cost_spent),
    )?;
    w.family(
        "cache_hit_rate_target",
        "The hit rate a kind should reach (KindConfig::hit_rate_target), for kinds with one.",
        MetricType::Gauge,
        |s| {
            s.kinds.iter().filter_map(|(k, t)| {
                let target = t.settings.as_ref()?.hit_rate_target?;
                Some((vec![("kind", Escaped(k))], Value::Float(target)))
            })
        },
    )?;

    w.single(
        "cache_l2_configured",
        "1 when the cache has an L2 (Redis).",
        |s| Some(Value::Gauge(i64::from(s.l2_configured))),
    )?;
    w.single(
        "cache_l2_refusing_writes",
        "1 while Redis refuses writes for lack of memory (OOM under noeviction): values are not \
         written back, invalidations delete keys.",
        |s| Some(Value::Gauge(i64::from(s.l2_refusing_writes))),
    )?;
    w.single(
        "cache_tracked_tag_invalidations",
        "Tags whose recent invalidation this instance tracks for its L1.",
        |s| Some(Value::gauge(s.tracked_tag_invalidations)),
    )?;
    w.single(
        "cache_pending_invalidations",
        "Invalidations made while L2 was unreachable, waiting to be replayed.",
        |s| Some(Value::gauge(s.pending_invalidations.pending)),
    )?;
    type PendingGet = fn(&crate::stats::PendingInvalidationStats) -> u64;
    let pending: [(&str, &str, PendingGet); 3] = [
        (
            "cache_pending_invalidations_queued",
            "Invalidations queued while L2 was unreachable.",
            |p| p.queued,
        ),
        (
            "cache_pending_invalidations_replayed",
            "Queued invalidations applied to L2 once it was back.",
            |p| p.replayed,
        ),
        (
            "cache_pending_invalidations_dropped",
            "Invalidations dropped because the queue was full.",
            |p| p.dropped,
        ),
    ];
    for (name, help, get) in pending {
        w.single(name, help, |s| {
            Some(Value::Counter(get(&s.pending_invalidations)))
        })?;
    }

    // Redis memory, once read.
    w.single(
        "cache_redis_used_memory_bytes",
        "Redis used_memory (the fullest master of a cluster), read every 10 s.",
        |s| s.redis_memory.as_ref().map(|m| Value::gauge(m.used_bytes)),
    )?;
    w.single(
        "cache_redis_maxmemory_bytes",
        "Redis maxmemory (0: no limit).",
        |s| {
            s.redis_memory
                .as_ref()
                .map(|m| Value::gauge(m.maxmemory_bytes))
        },
    )?;
    if w.all.iter().any(|s| s.redis_memory.is_some()) {
        w.family(
            "cache_redis_maxmemory_policy",
            "Redis maxmemory-policy: 1 for the current one.",
            MetricType::Gauge,
            |s| {
                s.redis_memory
                    .iter()
                    .map(|m| (vec![("policy", Escaped(&m.policy))], Value::Gauge(1)))
            },
        )?;
    }

    // The breaker, with an L2.
    if w.all.iter().any(|s| s.breaker.is_some()) {
        let states = [
            ("closed", BreakerState::Closed),
            ("open", BreakerState::Open),
            ("half_open", BreakerState::HalfOpen),
        ];
        w.family(
            "cache_breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            MetricType::Gauge,
            |s| {
                s.breaker.iter().flat_map(move |b| {
                    states.map(|(label, st)| {
                        (
                            vec![("state", Escaped(label))],
                            Value::Gauge(i64::from(b.state == st)),
                        )
                    })
                })
            },
        )?;
    }
    w.single(
        "cache_breaker_opens",
        "Times the circuit breaker opened.",
        |s| s.breaker.as_ref().map(|b| Value::Counter(b.opens)),
    )?;
    w.single(
        "cache_breaker_rejected",
        "L2 operations rejected while the breaker was open.",
        |s| s.breaker.as_ref().map(|b| Value::Counter(b.rejected)),
    )?;

    // The backplane, when enabled.
    w.single(
        "cache_backplane_subscribed",
        "1 while the backplane (pub/sub) subscription is up.",
        |s| {
            s.backplane
                .as_ref()
                .map(|b| Value::Gauge(i64::from(b.subscribed)))
        },
    )?;
    type BackplaneGet = fn(&crate::stats::BackplaneStats) -> u64;
    let backplane: [(&str, &str, BackplaneGet); 6] = [
        (
            "cache_backplane_received",
            "Backplane messages received (own echoes and heartbeats included).",
            |b| b.received,
        ),
        (
            "cache_backplane_published",
            "Backplane messages published.",
            |b| b.published,
        ),
        (
            "cache_backplane_publish_failures",
            "Backplane publishes that failed.",
            |b| b.publish_failures,
        ),
        (
            "cache_backplane_disconnects",
            "Times the backplane subscription was lost.",
            |b| b.disconnects,
        ),
        (
            "cache_backplane_resyncs",
            "L1 flushes after (re)subscribing.",
            |b| b.resyncs,
        ),
        (
            "cache_backplane_resent",
            "Backplane messages sent again after their publish failed.",
            |b| b.resent,
        ),
    ];
    for (name, help, get) in backplane {
        w.single(name, help, |s| {
            s.backplane.as_ref().map(|b| Value::Counter(get(b)))
        })?;
    }
    w.single(
        "cache_backplane_unsent",
        "Backplane messages waiting to be sent again (other instances may hold copies they would drop).",
        |s| s.backplane.as_ref().map(|b| Value::gauge(b.unsent)),
    )?;

    // Event subscriptions (Cache::events).
    w.single(
        "cache_event_subscribers",
        "Event subscriptions (Cache::events) open.",
        |s| Some(Value::gauge(s.events.subscribers)),
    )?;
    w.single(
        "cache_events_dropped",
        "Events subscribers missed because they fell more than the event buffer behind.",
        |s| Some(Value::Counter(s.events.dropped)),
    )?;
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
                let all = [super::tests::named("c")];
                let mut w = Writer {
                    enc: &mut enc,
                    all: &all,
                };
                w.family("x", "h", MetricType::Gauge, |_| {
                    [(vec![("k", Escaped(&self.0))], Value::Gauge(1))]
                })
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
        assert!(out.contains(r#"x{cache="c",k="a\"b\\c\nd"} 1"#), "{out}");
    }

    fn encoded(stats: Stats) -> String {
        #[derive(Debug)]
        struct S(Stats);
        impl Collector for S {
            fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), FmtError> {
                encode_stats(std::slice::from_ref(&self.0), &mut enc)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(S(stats)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    pub(super) fn named(name: &str) -> Stats {
        let mut s = snapshot(TierStats::default());
        s.name = name.into();
        s
    }

    fn snapshot(kind: TierStats) -> Stats {
        Stats {
            kinds: [("k".to_owned(), kind)].into(),
            ..Stats::empty("c1", "p")
        }
    }

    #[test]
    fn counters_get_total_suffix_and_gauges_do_not() {
        let out = encoded(snapshot(TierStats::default()));
        assert!(out.contains("# TYPE cache_hits counter\n"), "{out}");
        assert!(out.contains("cache_hits_total{cache=\"c1\",tier=\"l2\",kind=\"k\"} 0\n"));
        assert!(out.contains("cache_entries{cache=\"c1\",tier=\"l1\"} 0\n"));
        assert!(
            out.contains("# TYPE cache_events_dropped counter\n"),
            "{out}"
        );
        assert!(out.contains("cache_events_dropped_total{cache=\"c1\"} 0\n"));
        assert!(out.contains("cache_event_subscribers{cache=\"c1\"} 0\n"));
        assert!(!out.contains("cache_breaker"));
        assert!(
            out.contains("cache_refused_total{cache=\"c1\",tier=\"l2\",kind=\"k\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("cache_l2_refusing_writes{cache=\"c1\"} 0\n"),
            "{out}"
        );
        assert!(out.contains(
            "cache_miss_reasons_total{cache=\"c1\",tier=\"l1\",kind=\"k\",reason=\"evicted\"} 0\n"
        ));
        assert!(
            !out.contains("cache_hit_rate_target{"),
            "no kind has a target"
        );
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn latencies_are_histograms_with_cumulative_buckets() {
        let s = crate::stats::KindStats::default();
        for ms in [1, 2, 30, 30, 20_000] {
            s.read_latency.record(std::time::Duration::from_millis(ms));
        }
        let kind = TierStats::from_raw(&s.raw(), None);
        let out = encoded(snapshot(kind));
        assert!(
            out.contains("# TYPE cache_l2_duration_seconds histogram\n"),
            "{out}"
        );
        let line = |le: &str| {
            // prometheus-client writes `le` first.
            format!("cache_l2_duration_seconds_bucket{{le=\"{le}\",cache=\"c1\",op=\"read\",kind=\"k\"}}")
        };
        assert!(out.contains(&format!("{} 1\n", line("0.001"))), "{out}");
        assert!(out.contains(&format!("{} 2\n", line("0.0025"))), "{out}");
        assert!(out.contains(&format!("{} 4\n", line("0.05"))), "{out}");
        assert!(out.contains(&format!("{} 4\n", line("10.0"))), "{out}");
        assert!(out.contains(&format!("{} 5\n", line("+Inf"))), "{out}");
        assert!(out
            .contains("cache_l2_duration_seconds_count{cache=\"c1\",op=\"read\",kind=\"k\"} 5\n"));
        // No operation: an empty histogram, every bucket at 0.
        assert!(out.contains(
            "cache_l2_duration_seconds_bucket{le=\"+Inf\",cache=\"c1\",op=\"write\",kind=\"k\"} 0\n"
        ));
    }
}
