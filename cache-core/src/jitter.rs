//! TTL jitter against synchronized expiry: entries written together (a warm-up, a burst of misses
//! after a deploy) would otherwise expire together and send their reloads to the origin at once.
//!
//! A TTL is only ever shortened (by a uniform random 0 to `fraction` of itself), never lengthened,
//! so a configured TTL stays an upper bound on staleness.

use std::time::Duration;

/// `ttl` cut by a uniform random fraction in `[0, fraction)`; `ttl` itself when `fraction` is not in
/// `(0, 1)`. Never below 1 ms.
pub(crate) fn jittered(ttl: Duration, fraction: f64) -> Duration {
    if !(fraction > 0.0 && fraction < 1.0) {
        return ttl;
    }
    let cut = rand::random_range(0.0..fraction);
    ttl.mul_f64(1.0 - cut).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_only_shortens_within_the_fraction_and_spreads_values() {
        let ttl = Duration::from_secs(100);
        let got: Vec<Duration> = (0..1000).map(|_| jittered(ttl, 0.1)).collect();
        assert!(got
            .iter()
            .all(|d| *d <= ttl && *d > Duration::from_secs(90)));
        let lo = got.iter().min().copied().unwrap_or_default();
        let hi = got.iter().max().copied().unwrap_or_default();
        // 1000 uniform draws over 10 s: the extremes are within ~0.1 s of the bounds.
        assert!(
            hi - lo > Duration::from_secs(9),
            "spread {:?}",
            hi.saturating_sub(lo)
        );
        let mean = got.iter().sum::<Duration>() / 1000;
        assert!(
            mean > Duration::from_secs(94) && mean < Duration::from_secs(96),
            "{mean:?}"
        );
    }

    #[test]
    fn zero_or_invalid_fractions_leave_the_ttl_unchanged() {
        let ttl = Duration::from_secs(7);
        for f in [0.0, -0.5, 1.0, f64::NAN] {
            assert_eq!(jittered(ttl, f), ttl);
        }
    }
}
