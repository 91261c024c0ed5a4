//! Tag invalidation.
//!
//! # Mechanism: tag version counters checked on read
//! Each tag has a version counter in Redis (`{prefix}:t1:{tag}`). A load that caches an entry with
//! tags first reads the versions of its tags and stores them in the entry's envelope;
//! `invalidate_tag` increments the counter (`INCR`). Reading an entry from L2 compares its stored
//! versions with the current ones: any difference makes it a miss. Other instances learn of the
//! invalidation through the backplane and reject their L1 copies loaded before they heard of it
//! (a local map tag → instant of the last invalidation heard, compared with the entry's load
//! instant, so no clocks of different machines are ever compared).
//!
//! Trade-off against per-tag key sets (`SADD` on write, `SMEMBERS` + `DEL` on invalidation):
//! - invalidation is O(1) commands whatever the number of tagged keys, needs no `SCAN`, and never
//!   touches keys of several slots in one command, so it works unchanged on Redis Cluster (a set's
//!   members live on many slots and would need per-node fan-out);
//! - a load that began before an invalidation carries the old versions, so its late write is
//!   rejected on read: the stale-set race is closed without locks;
//! - the cost moves to reads: an L2 read of a tagged entry takes one more round trip (the versions),
//!   and invalidated entries stay in Redis until their TTL instead of being deleted.
//!
//! Version keys live for [`TAG_VERSION_TTL`], longer than any entry: an expired counter reads as 0,
//! which only turns entries stored under an older non-zero version into misses.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long a tag's version counter lives after its last invalidation (refreshed on each).
pub(crate) const TAG_VERSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The Redis key of a tag's version counter.
pub(crate) fn version_key(prefix: &str, tag: &str) -> String {
    crate::key::namespaced(prefix, "t1", tag)
}

/// Tag invalidations this instance has made or heard of, by tag: when it learnt of the last one.
#[derive(Default)]
pub(crate) struct LocalTags {
    map: RwLock<HashMap<String, Instant>>,
}

impl LocalTags {
    /// Records an invalidation of `tag` now.
    pub(crate) fn mark(&self, tag: &str) {
        let now = Instant::now();
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        m.insert(tag.to_owned(), now);
    }

    /// Whether any of `tags` was invalidated at or after `loaded_at`.
    pub(crate) fn invalidated_since(&self, tags: &[String], loaded_at: Instant) -> bool {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        tags.iter()
            .any(|t| m.get(t).is_some_and(|at| *at >= loaded_at))
    }

    /// Forgets invalidations older than `horizon` (no L1 entry can be older than that).
    pub(crate) fn prune(&self, horizon: Duration) {
        let Some(cutoff) = Instant::now().checked_sub(horizon) else {
            return;
        };
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, at| *at >= cutoff);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_loaded_before_a_tag_invalidation_is_rejected_and_one_loaded_after_is_not() {
        let tags = LocalTags::default();
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        tags.mark("user:1");
        std::thread::sleep(Duration::from_millis(2));
        let after = Instant::now();
        let t = vec!["team".to_string(), "user:1".to_string()];
        assert!(tags.invalidated_since(&t, before));
        assert!(!tags.invalidated_since(&t, after));
        assert!(!tags.invalidated_since(&["team".to_string()], before));
        tags.prune(Duration::ZERO);
        assert_eq!(tags.len(), 0);
    }
}
