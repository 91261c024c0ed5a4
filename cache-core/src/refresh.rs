//! Eager refresh: a hot entry read late in its life is reloaded in the background while readers
//! keep getting the current value, so it never expires under load and no reader waits for the
//! origin.
//!
//! - **When**: after a fixed fraction of the TTL ([`KindConfig::eager_refresh`]), or XFetch's
//!   probabilistic test ([`KindConfig::xfetch`]): refresh when
//!   `now + delta * beta * -ln(rand()) >= expiry`, where `delta` is the kind's recent loader time
//!   (an exponentially weighted average; the envelope does not carry each entry's compute time).
//! - **Once**: a key being refreshed is *claimed* in a per-cache set; other readers see the claim
//!   and do not start another refresh. The refresh itself runs as a load through the single-flight
//!   map (under its own flight key, since it may start from inside a caller's load), and callers
//!   that miss while the key is claimed join it instead of loading again.
//! - **Safely**: the refresh takes a ticket of the key's generation and writes back with the same
//!   compare-and-set as any load, so an invalidation or `set` made while it runs wins.
//!
//! This module holds the decision and the claims; the read path (`load.rs`) starts refreshes.
//!
//! A claim is also held by a load that outlived its soft timeout and finishes in the background
//! (see `loader`), so that callers holding a stale value serve it instead of loading again.
//!
//! [`KindConfig::eager_refresh`]: crate::KindConfig::eager_refresh
//! [`KindConfig::xfetch`]: crate::KindConfig::xfetch

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Age;
use crate::freshness::Resolved;
use crate::stats::KindStats;

/// Whether a read at `now_ms` of an entry of this `age` should refresh it, given the kind's recent
/// loader time `delta`. Never for an expired entry (that is a miss, not a refresh).
pub(crate) fn is_due(policy: &Resolved, age: Age, now_ms: u64, delta: Duration) -> bool {
    if now_ms >= age.fresh_until_ms || age.fresh_until_ms <= age.created_ms {
        return false;
    }
    let ttl_ms = (age.fresh_until_ms - age.created_ms) as f64;
    if let Some(f) = policy.refresh_at {
        if now_ms.saturating_sub(age.created_ms) as f64 >= f * ttl_ms {
            return true;
        }
    }
    if let Some(beta) = policy.xfetch_beta {
        // Unknown loader time (no load on this instance yet): assume 1% of the TTL.
        let delta_ms = if delta.is_zero() {
            ttl_ms / 100.0
        } else {
            delta.as_secs_f64() * 1000.0
        };
        // 1 - random() is in (0, 1]: its logarithm is finite.
        let u = 1.0 - rand::random::<f64>();
        let early_ms = delta_ms * beta * -u.ln();
        if now_ms as f64 + early_ms >= age.fresh_until_ms as f64 {
            return true;
        }
    }
    false
}

/// Keys with a load running in the background (an eager refresh, or a load past its soft timeout).
/// `len` lets the miss path skip the lock when nothing is claimed (the usual case).
#[derive(Clone, Default)]
pub(crate) struct Claims(Arc<ClaimSet>);

#[derive(Default)]
pub(crate) struct ClaimSet {
    keys: Mutex<HashSet<String>>,
    len: AtomicUsize,
}

/// A claim on a key; released when dropped.
pub(crate) struct Claim {
    set: Claims,
    key: String,
}

impl Claims {
    /// Claims `key`, or `None` when it is claimed already.
    pub(crate) fn claim(&self, key: &str) -> Option<Claim> {
        let mut set = self.0.keys.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.to_owned()) {
            return None;
        }
        self.0.len.store(set.len(), Release);
        Some(Claim {
            set: self.clone(),
            key: key.to_owned(),
        })
    }

    pub(crate) fn is_claimed(&self, key: &str) -> bool {
        self.0.len.load(Acquire) > 0
            && self
                .0
                .keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(key)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.set.0.keys.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
        self.set.0.len.store(set.len(), Release);
    }
}

/// Records a successful loader call's duration: in the kind's loader latency histogram, and in
/// its moving average (weight 1/8; races between concurrent updates only lose a sample).
pub(crate) fn record_loader_time(stats: &KindStats, took: Duration) {
    stats.loader_latency.record(took);
    let us = took.as_micros().min(u64::MAX as u128) as u64;
    let old = stats.loader_time_us.load(Relaxed);
    let new = if old == 0 {
        us.max(1)
    } else {
        (old * 7 + us) / 8
    };
    stats.loader_time_us.store(new.max(1), Relaxed);
}

/// The kind's recent loader time (zero before its first load).
pub(crate) fn loader_time(stats: &KindStats) -> Duration {
    Duration::from_micros(stats.loader_time_us.load(Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(refresh_at: Option<f64>, xfetch_beta: Option<f64>) -> Resolved {
        Resolved {
            refresh_at,
            xfetch_beta,
            ..Resolved::default()
        }
    }

    const AGE: Age = Age {
        created_ms: 1_000_000,
        fresh_until_ms: 1_010_000,
    };

    #[test]
    fn a_fixed_fraction_refreshes_after_that_share_of_the_ttl_and_never_once_expired() {
        let p = policy(Some(0.8), None);
        let d = Duration::ZERO;
        assert!(!is_due(&p, AGE, 1_007_999, d));
        assert!(is_due(&p, AGE, 1_008_000, d));
        assert!(is_due(&p, AGE, 1_009_999, d));
        assert!(!is_due(&p, AGE, 1_010_000, d), "expired: a miss");
        assert!(!is_due(&policy(None, None), AGE, 1_009_999, d));
    }

    #[test]
    fn xfetch_refreshes_more_often_as_expiry_nears() {
        let p = policy(None, Some(1.0));
        let delta = Duration::from_millis(500);
        let rate =
            |now| (0..10_000).filter(|_| is_due(&p, AGE, now, delta)).count() as f64 / 10_000.0;
        // P(due) = exp(-remaining / (delta * beta)).
        let (early, mid, late) = (rate(1_001_000), rate(1_009_000), rate(1_009_900));
        assert!(early < 0.001, "{early}");
        assert!((mid - (-2.0f64).exp()).abs() < 0.03, "{mid}");
        assert!((late - (-0.2f64).exp()).abs() < 0.03, "{late}");
    }

    #[test]
    fn a_key_is_claimed_once_until_the_claim_drops() {
        let c = Claims::default();
        let first = c.claim("k").expect("first claim");
        assert!(c.claim("k").is_none());
        assert!(c.is_claimed("k"));
        assert!(c.claim("other").is_some());
        drop(first);
        assert!(!c.is_claimed("k"));
        assert!(c.claim("k").is_some());
    }

    #[test]
    fn loader_time_is_a_moving_average() {
        let s = KindStats::default();
        assert_eq!(loader_time(&s), Duration::ZERO);
        record_loader_time(&s, Duration::from_millis(80));
        assert_eq!(loader_time(&s), Duration::from_millis(80));
        for _ in 0..50 {
            record_loader_time(&s, Duration::from_millis(8));
        }
        assert!(loader_time(&s) < Duration::from_millis(9));
    }
}
