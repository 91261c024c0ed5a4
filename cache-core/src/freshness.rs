//! The freshness and origin-protection settings of a load: eager refresh (fixed threshold or
//! XFetch), soft and hard loader timeouts, and the distributed lock.
//!
//! Each setting can be given per kind ([`KindConfig`](crate::KindConfig)) and per call
//! ([`OwnedOptions`](crate::OwnedOptions), and the lock on
//! [`EntryOptions`](crate::EntryOptions)); a per-call value wins over the kind's. This module only
//! holds the values and resolves them; the behaviours live in `refresh`, `loader` and `lock`.

use std::time::Duration;

/// Freshness settings; `None` means "not set here" (fall back to the kind, then off).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Freshness {
    /// Refresh in the background once this fraction of the TTL has passed.
    pub(crate) refresh_at: Option<f64>,
    /// XFetch probabilistic early refresh with this beta.
    pub(crate) xfetch_beta: Option<f64>,
    /// With a stale value at hand, serve it after this long and let the load finish in the
    /// background.
    pub(crate) soft_timeout: Option<Duration>,
    /// Give up on the loader after this long.
    pub(crate) hard_timeout: Option<Duration>,
    /// Take a Redis lock so that one instance loads a cold key at a time.
    pub(crate) lock: Option<bool>,
}

/// The settings that apply to one call, with invalid per-call values turned off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) refresh_at: Option<f64>,
    pub(crate) xfetch_beta: Option<f64>,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    pub(crate) lock: bool,
}

impl Freshness {
    /// The settings of a call: `self` (per call) over `kind`.
    pub(crate) fn resolve(&self, kind: &Freshness) -> Resolved {
        let hard_timeout = self
            .hard_timeout
            .or(kind.hard_timeout)
            .filter(|d| !d.is_zero());
        Resolved {
            refresh_at: self
                .refresh_at
                .or(kind.refresh_at)
                .filter(|f| valid_fraction(*f)),
            xfetch_beta: self
                .xfetch_beta
                .or(kind.xfetch_beta)
                .filter(|b| valid_beta(*b)),
            // A soft timeout at or past the hard one could never fire.
            soft_timeout: self
                .soft_timeout
                .or(kind.soft_timeout)
                .filter(|s| hard_timeout.is_none_or(|h| *s < h)),
            hard_timeout,
            lock: self.lock.or(kind.lock).unwrap_or(false),
        }
    }

    /// Each setting of `self`, and `lower`'s where `self` has none (layers of a kind's settings:
    /// code over a config file).
    pub(crate) fn over(self, lower: &Freshness) -> Freshness {
        Freshness {
            refresh_at: self.refresh_at.or(lower.refresh_at),
            xfetch_beta: self.xfetch_beta.or(lower.xfetch_beta),
            soft_timeout: self.soft_timeout.or(lower.soft_timeout),
            hard_timeout: self.hard_timeout.or(lower.hard_timeout),
            lock: self.lock.or(lower.lock),
        }
    }

    /// Checks a kind's settings (per-call values are not checked: invalid ones are ignored). The
    /// error names the offending setting as `KindConfig`'s method (and a config file's key) does.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(f) = self.refresh_at {
            if !valid_fraction(f) {
                return Err((
                    "eager_refresh",
                    format!("eager refresh fraction {f} must be strictly between 0 and 1"),
                ));
            }
        }
        if let Some(b) = self.xfetch_beta {
            if !valid_beta(b) {
                return Err((
                    "xfetch",
                    format!("XFetch beta {b} must be a finite number above 0"),
                ));
            }
        }
        if self.hard_timeout.is_some_and(|d| d.is_zero()) {
            return Err((
                "hard_timeout",
                "the hard loader timeout must be above 0".into(),
            ));
        }
        if let (Some(s), Some(h)) = (self.soft_timeout, self.hard_timeout) {
            if s >= h {
                return Err((
                    "soft_timeout",
                    format!(
                        "the soft loader timeout ({s:?}) must be shorter than the hard one ({h:?})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Resolved {
    /// Whether reads must check for an early refresh.
    pub(crate) fn refreshes(&self) -> bool {
        self.refresh_at.is_some() || self.xfetch_beta.is_some()
    }

    /// Whether a caller of the in-place API (`get_or_load_with`) loses settings it cannot honour.
    pub(crate) fn needs_owned_loader(&self) -> bool {
        self.refreshes() || self.soft_timeout.is_some() || self.hard_timeout.is_some()
    }
}

fn valid_fraction(f: f64) -> bool {
    f > 0.0 && f < 1.0
}

fn valid_beta(b: f64) -> bool {
    b.is_finite() && b > 0.0
}

/// Checks a TTL jitter fraction: `0 <= f < 1`.
pub(crate) fn validate_jitter(f: f64) -> Result<(), String> {
    if (0.0..1.0).contains(&f) {
        Ok(())
    } else {
        Err(format!(
            "TTL jitter {f} must be at least 0 and below 1 (e.g. 0.1 for up to 10%)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_call_settings_win_over_the_kind_and_invalid_ones_are_off() {
        let kind = Freshness {
            refresh_at: Some(0.8),
            soft_timeout: Some(Duration::from_millis(100)),
            hard_timeout: Some(Duration::from_secs(1)),
            lock: Some(true),
            ..Freshness::default()
        };
        let call = Freshness {
            refresh_at: Some(0.5),
            lock: Some(false),
            ..Freshness::default()
        };
        let r = call.resolve(&kind);
        assert_eq!(r.refresh_at, Some(0.5));
        assert!(!r.lock);
        assert_eq!(r.soft_timeout, Some(Duration::from_millis(100)));
        let off = Freshness {
            refresh_at: Some(1.0),
            xfetch_beta: Some(f64::NAN),
            soft_timeout: Some(Duration::from_secs(2)),
            ..Freshness::default()
        }
        .resolve(&kind);
        assert_eq!(off.refresh_at, None, "1.0 turns eager refresh off");
        assert_eq!(off.xfetch_beta, None);
        assert_eq!(off.soft_timeout, None, "a soft timeout past the hard one");
        assert!(!Freshness::default()
            .resolve(&Freshness::default())
            .refreshes());
    }

    #[test]
    fn kind_settings_are_validated() {
        let bad = [
            Freshness {
                refresh_at: Some(0.0),
                ..Freshness::default()
            },
            Freshness {
                xfetch_beta: Some(-1.0),
                ..Freshness::default()
            },
            Freshness {
                soft_timeout: Some(Duration::from_secs(1)),
                hard_timeout: Some(Duration::from_secs(1)),
                ..Freshness::default()
            },
            Freshness {
                hard_timeout: Some(Duration::ZERO),
                ..Freshness::default()
            },
        ];
        for f in bad {
            assert!(f.validate().is_err(), "{f:?}");
        }
        assert!(validate_jitter(0.1).is_ok());
        assert!(validate_jitter(1.0).is_err());
        assert!(validate_jitter(-0.1).is_err());
    }
}
