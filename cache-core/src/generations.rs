//! Per-key generation counters that stop a load which began before an invalidation (or a newer
//! `set`) from storing its now-stale result afterwards (the "stale set" race).
//!
//! Keys are hashed onto 4096 striped counters plus one global epoch (bumped by clears). A load
//! captures `snapshot(key)` before it reads L2 or calls the loader and stores only if the snapshot is
//! unchanged. A collision on a stripe only makes an unrelated load skip its store: a later miss,
//! never a stale value.

use std::sync::atomic::{AtomicU64, Ordering};

const STRIPES: usize = 4096;

pub(crate) struct Generations {
    epoch: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

impl Generations {
    pub(crate) fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize;
        &self.stripes[h % STRIPES]
    }

    /// The generation of `key` now. It changes whenever the key or the whole cache is invalidated.
    pub(crate) fn snapshot(&self, key: &str) -> u64 {
        self.epoch
            .load(Ordering::Acquire)
            .wrapping_add(self.stripe(key).load(Ordering::Acquire))
    }

    /// Supersedes every load of `key` in flight.
    pub(crate) fn bump(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
    }

    /// Supersedes every load in flight.
    pub(crate) fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumping_a_key_changes_its_snapshot_and_clearing_changes_all() {
        let g = Generations::new();
        let a = g.snapshot("a");
        let b = g.snapshot("b");
        g.bump("a");
        assert_ne!(g.snapshot("a"), a);
        g.bump_all();
        assert_ne!(g.snapshot("b"), b);
    }
}
