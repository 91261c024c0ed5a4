//! Wall-clock time as the L2 envelope records it, and the age of an entry.
//!
//! Monotonic time (`Instant`) is used for everything measured within one process (L1 lifetimes,
//! deadlines, tag invalidations heard); wall-clock milliseconds only where instances must agree
//! (an entry's creation and freshness in its L2 envelope).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// Whole milliseconds of `d`, saturating at `u64::MAX` (never truncated to a small number).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// When an entry was written and until when it is fresh (wall clock, ms since the epoch, as in
/// the L2 envelope header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Age {
    pub(crate) created_ms: u64,
    pub(crate) fresh_until_ms: u64,
}

impl Age {
    /// An entry written now and fresh for `ttl`.
    pub(crate) fn starting_now(ttl: Duration) -> Self {
        let now = unix_ms();
        Age {
            created_ms: now,
            fresh_until_ms: now.saturating_add(millis(ttl)),
        }
    }

    /// How long the entry stays fresh after `now_ms` (zero once stale).
    pub(crate) fn remaining(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.fresh_until_ms.saturating_sub(now_ms))
    }
}
