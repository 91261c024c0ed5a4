//! Shared helpers of the benchmark binaries: a realistic ~1 KiB value and latency summaries.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A ~1 KiB API-response-like value (MessagePack ≈ 1,000 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiResponse {
    /// Request id.
    pub id: u64,
    /// Status text.
    pub status: String,
    /// Items.
    pub items: Vec<Item>,
}

/// One item of [`ApiResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Name.
    pub name: String,
    /// Score.
    pub score: f64,
    /// Tags.
    pub tags: Vec<String>,
}

/// The benchmark value for `id`.
pub fn api_response(id: u64) -> ApiResponse {
    ApiResponse {
        id,
        status: "ok".into(),
        items: (0..12)
            .map(|i| Item {
                name: format!("item-{id}-{i}-lorem-ipsum"),
                score: i as f64 * 1.5,
                tags: vec!["alpha".into(), "beta".into(), format!("t{i}")],
            })
            .collect(),
    }
}

/// Median and p99 of per-operation latencies, and the mean.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Mean.
    pub mean: Duration,
}

/// Summarizes samples (sorted in place).
pub fn summarize(samples: &mut [Duration]) -> Summary {
    samples.sort_unstable();
    let n = samples.len().max(1);
    let at = |q: f64| samples[((n as f64 * q) as usize).min(n - 1)];
    let total: Duration = samples.iter().sum();
    Summary {
        p50: at(0.5),
        p99: at(0.99),
        mean: total / n as u32,
    }
}
