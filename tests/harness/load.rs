//! Latency bookkeeping for load tests: every call's duration, and percentiles over a window.

use std::time::{Duration, Instant};

/// p50 / p99 / max of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

/// Every call of a load test: when it started (relative to the test start) and how long it took.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// `(start offset, duration)` per call.
    pub samples: Vec<(Duration, Duration)>,
    /// Calls that returned an error or a wrong value.
    pub errors: usize,
}

impl LoadReport {
    /// Merges another worker's report.
    pub fn merge(&mut self, other: LoadReport) {
        self.samples.extend(other.samples);
        self.errors += other.errors;
    }

    /// Records one call.
    pub fn record(&mut self, test_start: Instant, started: Instant) {
        self.samples
            .push((started.duration_since(test_start), started.elapsed()));
    }

    /// Percentiles of the calls that started within `[from, to)`.
    pub fn window(&self, from: Duration, to: Duration) -> Percentiles {
        let mut d: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(s, _)| *s >= from && *s < to)
            .map(|(_, d)| *d)
            .collect();
        d.sort_unstable();
        let at = |q: f64| {
            if d.is_empty() {
                Duration::ZERO
            } else {
                d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1]
            }
        };
        Percentiles {
            count: d.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: d.last().copied().unwrap_or_default(),
        }
    }
}
