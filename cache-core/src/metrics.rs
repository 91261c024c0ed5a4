//! Prometheus text exposition (format 0.0.4) of the cache's [`Stats`].
//!
//! Hand-written from the [`Stats`] snapshot rather than through the `metrics` facade or
//! `prometheus-client`: the counters already live in the cache's own atomics, so a registry would
//! only copy them; the `metrics` facade needs a process-global recorder that would collide with the
//! application's own; one snapshot gives a consistent view per scrape; and it adds no dependency.
//! The format is followed to the letter: one `# HELP` and one `# TYPE` line per family, all samples
//! of a family together, counters named `*_total`, label values escaped (`\\`, `\"`, `\n`), `NaN`
//! and `+Inf` spelt as Prometheus parses them.
//!
//! Series (every per-kind series also exists for kinds with no traffic yet, at 0):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `cache_hits_total`, `cache_misses_total` | counter | `tier` (`l1`, `l2`), `kind` |
//! | `cache_errors_total`, `cache_timeouts_total`, `cache_skipped_total`, `cache_writes_total`, `cache_read_bytes_total`, `cache_written_bytes_total`, `cache_decode_errors_total`, `cache_oversized_total`, `cache_write_conflicts_total`, `cache_tag_rejections_total` | counter | `tier` (`l2`), `kind` |
//! | `cache_compression_ratio` | gauge | `tier` (`l2`), `kind` |
//! | `cache_loader_calls_total`, `cache_loader_errors_total`, `cache_stale_served_total`, `cache_sets_total`, `cache_invalidations_total` | counter | `kind` |
//! | `cache_refreshes_total`, `cache_refresh_failures_total`, `cache_soft_timeouts_total`, `cache_hard_timeouts_total`, `cache_lock_acquired_total`, `cache_lock_waits_total`, `cache_lock_fallbacks_total` | counter | `kind` |
//! | `cache_entries`, `cache_bytes`, `cache_max_bytes` | gauge | `tier` (`l1`) |
//! | `cache_evictions_total` | counter | `tier` (`l1`) |
//! | `cache_l2_latency_seconds` | summary (quantiles 0.5, 0.99) | `op` (`read`, `write`), `kind` |
//! | `cache_l2_latency_max_seconds` | gauge | `op`, `kind` |
//! | `cache_l2_configured`, `cache_tracked_tag_invalidations`, `cache_pending_invalidations` | gauge | |
//! | `cache_pending_invalidations_queued_total`, `cache_pending_invalidations_replayed_total`, `cache_pending_invalidations_dropped_total` | counter | |
//! | `cache_breaker_state` | gauge (1 for the current state) | `state` (`closed`, `open`, `half_open`) |
//! | `cache_breaker_opens_total`, `cache_breaker_rejected_total` | counter | |
//! | `cache_backplane_subscribed` | gauge | |
//! | `cache_backplane_received_total`, `cache_backplane_published_total`, `cache_backplane_publish_failures_total`, `cache_backplane_disconnects_total`, `cache_backplane_resyncs_total` | counter | |
//!
//! Breaker and backplane series are present only when the cache has an L2 / a backplane.

use std::fmt::Write as _;

use crate::breaker::BreakerState;
use crate::stats::{LatencyStats, Stats, TierStats};
use crate::Cache;

/// The `Content-Type` of [`Cache::prometheus_text`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Cache {
    /// The cache's stats in the Prometheus text exposition format (serve it with
    /// [`PROMETHEUS_CONTENT_TYPE`]). See the module documentation of `metrics` for the series.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cache_core::Cache::builder().build().await.unwrap();
    /// let text = cache.prometheus_text();
    /// assert!(text.contains("# TYPE cache_hits_total counter"));
    /// assert!(text.contains(r#"cache_hits_total{tier="l1",kind="api_response"} 0"#));
    /// # });
    /// ```
    pub fn prometheus_text(&self) -> String {
        render(&self.stats())
    }
}

/// A per-kind counter family: name, help, and how to read it from a kind's stats.
type Counter = (&'static str, &'static str, fn(&TierStats) -> u64);
/// A latency family: `op` label and how to read it from a kind's stats.
type LatencyFamily = (&'static str, fn(&TierStats) -> &LatencyStats);

/// A sample value.
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) if x.is_nan() => f.write_str("NaN"),
            Value::Float(x) if x == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(x) if x == f64::NEG_INFINITY => f.write_str("-Inf"),
            // Rust prints finite floats without an exponent ("0.000012", "3"): valid for Prometheus.
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }

    /// A family with one sample per kind (and optionally a fixed tier label).
    fn per_kind(
        &mut self,
        stats: &Stats,
        name: &str,
        kind: &str,
        help: &str,
        tier: Option<&str>,
        get: impl Fn(&TierStats) -> Value,
    ) {
        self.family(name, kind, help);
        for (k, t) in &stats.kinds {
            match tier {
                Some(tier) => self.sample(name, &[("tier", tier), ("kind", k)], get(t)),
                None => self.sample(name, &[("kind", k)], get(t)),
            }
        }
    }
}

/// `HELP` text: backslash and line feed escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values: backslash, double quote and line feed escaped.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn int(n: u64) -> Value {
    Value::Int(n)
}

/// Renders a snapshot in the text exposition format.
pub(crate) fn render(stats: &Stats) -> String {
    let mut w = Writer {
        out: String::with_capacity(16 * 1024),
    };
    let s = stats;

    // Hits and misses, both tiers in one family.
    for (name, help, l1, l2) in [
        (
            "cache_hits_total",
            "Lookups answered by the tier.",
            (|t: &TierStats| t.l1.hits) as fn(&TierStats) -> u64,
            (|t: &TierStats| t.l2.hits) as fn(&TierStats) -> u64,
        ),
        (
            "cache_misses_total",
            "Lookups the tier could not answer (absent, stale, undecodable, rejected).",
            |t: &TierStats| t.l1.misses,
            |t: &TierStats| t.l2.misses,
        ),
    ] {
        w.family(name, "counter", help);
        for (k, t) in &s.kinds {
            w.sample(name, &[("tier", "l1"), ("kind", k)], int(l1(t)));
        }
        for (k, t) in &s.kinds {
            w.sample(name, &[("tier", "l2"), ("kind", k)], int(l2(t)));
        }
    }

    let l2_counters: [Counter; 10] = [
        (
            "cache_errors_total",
            "L2 operations that failed (I/O, refused, error reply), timeouts excluded.",
            |t| t.l2.errors,
        ),
        (
            "cache_timeouts_total",
            "L2 operations that exceeded the L2 deadline.",
            |t| t.l2.timeouts,
        ),
        (
            "cache_skipped_total",
            "L2 operations skipped because the circuit breaker was open.",
            |t| t.l2.skipped,
        ),
        ("cache_writes_total", "Values written to L2.", |t| {
            t.l2.writes
        }),
        ("cache_read_bytes_total", "Bytes read from L2.", |t| {
            t.l2.bytes_read
        }),
        (
            "cache_written_bytes_total",
            "Bytes written to L2 (after compression).",
            |t| t.l2.bytes_written,
        ),
        (
            "cache_decode_errors_total",
            "L2 values that could not be decoded (read as misses).",
            |t| t.l2.decode_errors,
        ),
        (
            "cache_oversized_total",
            "Values over the maximum size, not written to L2.",
            |t| t.l2.oversized,
        ),
        (
            "cache_write_conflicts_total",
            "Load write-backs not stored because the key changed meanwhile.",
            |t| t.l2.write_conflicts,
        ),
        (
            "cache_tag_rejections_total",
            "L2 entries rejected because one of their tags was invalidated.",
            |t| t.l2.tag_rejections,
        ),
    ];
    for (name, help, get) in l2_counters {
        w.per_kind(s, name, "counter", help, Some("l2"), |t| int(get(t)));
    }
    w.per_kind(
        s,
        "cache_compression_ratio",
        "gauge",
        "MessagePack bytes before / after compression of the values written (1 when none was compressed).",
        Some("l2"),
        |t| Value::Float(t.l2.compression_ratio),
    );

    let kind_counters: [Counter; 12] = [
        (
            "cache_loader_calls_total",
            "Loader calls (one per key among concurrent callers).",
            |t| t.loader.calls,
        ),
        (
            "cache_loader_errors_total",
            "Loader calls that returned an error.",
            |t| t.loader.errors,
        ),
        (
            "cache_stale_served_total",
            "Failed loads answered with a stale value (fail-safe).",
            |t| t.loader.stale_served,
        ),
        ("cache_sets_total", "Explicit set calls.", |t| t.sets),
        (
            "cache_invalidations_total",
            "Explicit invalidations of a key.",
            |t| t.invalidations,
        ),
        (
            "cache_refreshes_total",
            "Eager refreshes started (at most one per key at a time).",
            |t| t.loader.refreshes,
        ),
        (
            "cache_refresh_failures_total",
            "Eager refreshes whose loader failed or timed out.",
            |t| t.loader.refresh_failures,
        ),
        (
            "cache_soft_timeouts_total",
            "Stale values served because a load passed its soft timeout.",
            |t| t.loader.soft_timeouts,
        ),
        (
            "cache_hard_timeouts_total",
            "Loads abandoned at their hard timeout.",
            |t| t.loader.hard_timeouts,
        ),
        (
            "cache_lock_acquired_total",
            "Loads that took the distributed lock.",
            |t| t.lock.acquired,
        ),
        (
            "cache_lock_waits_total",
            "Loads that waited for another instance's distributed lock.",
            |t| t.lock.waits,
        ),
        (
            "cache_lock_fallbacks_total",
            "Loads that called their loader without the lock (Redis unreachable, wait bound passed).",
            |t| t.lock.fallbacks,
        ),
    ];
    for (name, help, get) in kind_counters {
        w.per_kind(s, name, "counter", help, None, |t| int(get(t)));
    }

    // L1 occupancy: cache-wide (moka does not split it by kind).
    let l1 = &s.total.l1;
    for (name, kind, help, v) in [
        (
            "cache_entries",
            "gauge",
            "Entries held (approximate while writes are pending).",
            l1.entries,
        ),
        (
            "cache_bytes",
            "gauge",
            "Weighted size held, in bytes.",
            l1.bytes,
        ),
        ("cache_max_bytes", "gauge", "The byte budget.", l1.max_bytes),
        (
            "cache_evictions_total",
            "counter",
            "Entries evicted to stay within the byte budget.",
            l1.evictions,
        ),
    ] {
        w.family(name, kind, help);
        w.sample(name, &[("tier", "l1")], int(v));
    }

    // L2 latency: a summary per operation and kind.
    let lat: [LatencyFamily; 2] = [
        ("read", |t| &t.l2.read_latency),
        ("write", |t| &t.l2.write_latency),
    ];
    let name = "cache_l2_latency_seconds";
    w.family(
        name,
        "summary",
        "L2 operation latency (quantiles from a log-bucketed histogram, ~19% resolution).",
    );
    for (op, get) in lat {
        for (k, t) in &s.kinds {
            let l = get(t);
            for (q, v) in [("0.5", l.p50_us), ("0.99", l.p99_us)] {
                let v = if l.count == 0 {
                    Value::Float(f64::NAN)
                } else {
                    Value::Float(v / 1e6)
                };
                w.sample(name, &[("op", op), ("kind", k), ("quantile", q)], v);
            }
            let sum = l.mean_us * l.count as f64 / 1e6;
            w.sample(
                "cache_l2_latency_seconds_sum",
                &[("op", op), ("kind", k)],
                Value::Float(sum),
            );
            w.sample(
                "cache_l2_latency_seconds_count",
                &[("op", op), ("kind", k)],
                int(l.count),
            );
        }
    }
    let name = "cache_l2_latency_max_seconds";
    w.family(name, "gauge", "Largest L2 operation latency seen.");
    for (op, get) in lat {
        for (k, t) in &s.kinds {
            w.sample(
                name,
                &[("op", op), ("kind", k)],
                Value::Float(get(t).max_us / 1e6),
            );
        }
    }

    w.family(
        "cache_l2_configured",
        "gauge",
        "1 when the cache has an L2 (Redis).",
    );
    w.sample("cache_l2_configured", &[], int(u64::from(s.l2_configured)));
    w.family(
        "cache_tracked_tag_invalidations",
        "gauge",
        "Tags whose recent invalidation this instance tracks for its L1.",
    );
    w.sample(
        "cache_tracked_tag_invalidations",
        &[],
        int(s.tracked_tag_invalidations),
    );
    let p = &s.pending_invalidations;
    w.family(
        "cache_pending_invalidations",
        "gauge",
        "Invalidations made while L2 was unreachable, waiting to be replayed.",
    );
    w.sample("cache_pending_invalidations", &[], int(p.pending));
    for (name, help, v) in [
        (
            "cache_pending_invalidations_queued_total",
            "Invalidations queued while L2 was unreachable.",
            p.queued,
        ),
        (
            "cache_pending_invalidations_replayed_total",
            "Queued invalidations applied to L2 once it was back.",
            p.replayed,
        ),
        (
            "cache_pending_invalidations_dropped_total",
            "Invalidations dropped because the queue was full.",
            p.dropped,
        ),
    ] {
        w.family(name, "counter", help);
        w.sample(name, &[], int(v));
    }

    if let Some(b) = &s.breaker {
        w.family(
            "cache_breaker_state",
            "gauge",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
        );
        for (label, st) in [
            ("closed", BreakerState::Closed),
            ("open", BreakerState::Open),
            ("half_open", BreakerState::HalfOpen),
        ] {
            w.sample(
                "cache_breaker_state",
                &[("state", label)],
                int(u64::from(b.state == st)),
            );
        }
        for (name, help, v) in [
            (
                "cache_breaker_opens_total",
                "Times the circuit breaker opened.",
                b.opens,
            ),
            (
                "cache_breaker_rejected_total",
                "L2 operations rejected while the breaker was open.",
                b.rejected,
            ),
        ] {
            w.family(name, "counter", help);
            w.sample(name, &[], int(v));
        }
    }

    if let Some(bp) = &s.backplane {
        w.family(
            "cache_backplane_subscribed",
            "gauge",
            "1 while the backplane (pub/sub) subscription is up.",
        );
        w.sample(
            "cache_backplane_subscribed",
            &[],
            int(u64::from(bp.subscribed)),
        );
        for (name, help, v) in [
            (
                "cache_backplane_received_total",
                "Backplane messages received (own echoes and heartbeats included).",
                bp.received,
            ),
            (
                "cache_backplane_published_total",
                "Backplane messages published.",
                bp.published,
            ),
            (
                "cache_backplane_publish_failures_total",
                "Backplane publishes that failed.",
                bp.publish_failures,
            ),
            (
                "cache_backplane_disconnects_total",
                "Times the backplane subscription was lost.",
                bp.disconnects,
            ),
            (
                "cache_backplane_resyncs_total",
                "L1 flushes after (re)subscribing.",
                bp.resyncs,
            ),
        ] {
            w.family(name, "counter", help);
            w.sample(name, &[], int(v));
        }
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");
    }

    #[test]
    fn special_floats_use_prometheus_spelling() {
        assert_eq!(Value::Float(f64::NAN).to_string(), "NaN");
        assert_eq!(Value::Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Value::Float(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(Value::Float(0.000012).to_string(), "0.000012");
        assert_eq!(Value::Int(7).to_string(), "7");
    }
}
