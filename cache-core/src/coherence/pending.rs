//! Invalidations that survive an L2 outage.
//!
//! An `invalidate` or `invalidate_tag` that cannot reach Redis (error, timeout, breaker open) is
//! queued here instead of being lost; so is the invalidation implied by a `set` whose value could not
//! be written (Redis may still hold the older value). A write that timed out may still execute
//! later (a SIGSTOPped server runs its socket backlog after SIGCONT), so a timed-out invalidation
//! counts as not applied.
//!
//! - **Bounded, newest per key**: one slot per key and per tag (queuing it again only moves it to
//!   the back); when [`CacheBuilder::max_pending_invalidations`] slots are taken, new ones are
//!   dropped and counted (`stats().pending_invalidations.dropped`, plus a warning): those entries
//!   stay in L2 until their TTL, as before this queue existed.
//! - **Fenced until replayed**: while a key's invalidation is queued, reads of that key (or of an
//!   entry carrying a queued tag) do not use L2, so this instance never serves what the
//!   invalidation removes; loads of it do not write back. Other keys use L2 as usual: writes are
//!   not held back (under steady writes that would keep L2 unused). A `set` of a queued key that
//!   reaches L2 supersedes the queued invalidation (its value replaced what it invalidated).
//! - **Replayed promptly**: the background task replays the queue (tombstones and new tag tokens,
//!   oldest first, in concurrent batches: invalidations commute) as soon as Redis answers (it
//!   probes every 100 ms while something is queued), and publishes each on the backplane so that
//!   other instances drop their L1 copies.
//!
//! [`CacheBuilder::max_pending_invalidations`]: crate::CacheBuilder::max_pending_invalidations

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A queued invalidation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PendingOp {
    /// A key (its full Redis key).
    Key(String),
    /// A tag.
    Tag(String),
}

#[derive(Default)]
struct Queue {
    keys: HashMap<String, u64>,
    tags: HashMap<String, u64>,
}

/// The queue and its counters.
pub(crate) struct PendingInvalidations {
    max: usize,
    len: AtomicUsize,
    queue: Mutex<Queue>,
    /// The sequence number of the next queued invalidation (taken under the queue's lock, read
    /// without it).
    next_seq: AtomicU64,
    replaying: AtomicBool,
    pub(crate) queued: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl PendingInvalidations {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            len: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            next_seq: AtomicU64::new(0),
            replaying: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Nothing queued: one atomic load, for the hot paths.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The most invalidations kept.
    pub(crate) fn capacity(&self) -> usize {
        self.max
    }

    /// Queues `op` (moving it to the back if queued already). Returns false when it was dropped
    /// because the queue is full.
    pub(crate) fn push(&self, op: PendingOp) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let total = q.keys.len() + q.tags.len();
        let (map, name) = match op {
            PendingOp::Key(k) => (&mut q.keys, k),
            PendingOp::Tag(t) => (&mut q.tags, t),
        };
        if let Some(s) = map.get_mut(&name) {
            *s = seq;
        } else if total >= self.max {
            drop(q);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                max = self.max,
                "pending invalidation queue full: an invalidation is dropped (its entry stays in L2 until its TTL)"
            );
            return false;
        } else {
            map.insert(name, seq);
            self.len.store(total + 1, Ordering::Release);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether an invalidation of the entry `full` is queued.
    pub(crate) fn has_key(&self, full: &str) -> bool {
        !self.is_empty()
            && self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys
                .contains_key(full)
    }

    /// Whether an invalidation of any of `tags` is queued.
    pub(crate) fn has_any_tag<'a>(&self, mut tags: impl Iterator<Item = &'a str>) -> bool {
        if self.is_empty() {
            return false;
        }
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        tags.any(|t| q.tags.contains_key(t))
    }

    /// The sequence number the next queued invalidation gets: an operation that began before
    /// it may supersede what is queued now (see [`supersede_key`](Self::supersede_key)).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    /// Whether `op` is still queued as `seq` (not superseded by a write, nor queued again).
    pub(crate) fn is_queued(&self, op: &PendingOp, seq: u64) -> bool {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let (map, name) = match op {
            PendingOp::Key(k) => (&q.keys, k),
            PendingOp::Tag(t) => (&q.tags, t),
        };
        map.get(name) == Some(&seq)
    }

    /// Drops the queued invalidation of `full` if it was queued before `seq`: a write of the key
    /// that began after it reached L2 (so L2 no longer holds what it invalidated).
    pub(crate) fn supersede_key(&self, full: &str, seq: u64) {
        if self.is_empty() {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.keys.get(full).is_some_and(|s| *s < seq) {
            q.keys.remove(full);
            let total = q.keys.len() + q.tags.len();
            self.len.store(total, Ordering::Release);
        }
    }

    /// Claims the replay (one at a time); `None` when one is running.
    pub(crate) fn start_replay(&self) -> Option<ReplayGuard<'_>> {
        (!self.replaying.swap(true, Ordering::AcqRel)).then_some(ReplayGuard(self))
    }

    /// Everything queued, oldest first, with the sequence number to complete it with.
    pub(crate) fn snapshot(&self) -> Vec<(PendingOp, u64)> {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(PendingOp, u64)> = q
            .keys
            .iter()
            .map(|(k, s)| (PendingOp::Key(k.clone()), *s))
            .chain(q.tags.iter().map(|(t, s)| (PendingOp::Tag(t.clone()), *s)))
            .collect();
        all.sort_by_key(|(_, s)| *s);
        all
    }

    /// Removes `op` if it was not queued again since `seq` (a newer one must be replayed too).
    pub(crate) fn complete(&self, op: &PendingOp, seq: u64) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let (map, name) = match op {
            PendingOp::Key(k) => (&mut q.keys, k),
            PendingOp::Tag(t) => (&mut q.tags, t),
        };
        if map.get(name) == Some(&seq) {
            map.remove(name);
        }
        let total = q.keys.len() + q.tags.len();
        self.len.store(total, Ordering::Release);
    }
}

/// A running replay; ends when dropped.
pub(crate) struct ReplayGuard<'a>(&'a PendingInvalidations);

impl Drop for ReplayGuard<'_> {
    fn drop(&mut self) {
        self.0.replaying.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_keeps_the_newest_per_key_and_counts_what_it_drops() {
        let p = PendingInvalidations::new(3);
        assert!(p.is_empty());
        assert!(p.push(PendingOp::Key("a".into())));
        assert!(p.push(PendingOp::Tag("t".into())));
        assert!(p.push(PendingOp::Key("a".into())), "a again: one slot");
        assert_eq!(p.len(), 2);
        assert!(p.push(PendingOp::Key("b".into())));
        assert!(!p.push(PendingOp::Key("c".into())), "full");
        assert!(p.push(PendingOp::Tag("t".into())), "queued already: fits");
        assert_eq!(p.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(p.queued.load(Ordering::Relaxed), 5);
        assert!(p.has_key("a") && p.has_key("b") && !p.has_key("c"));
        assert!(p.has_any_tag(["x", "t"].into_iter()));
        // Oldest first; `a` moved behind `t` when queued again, `t` behind `b`.
        let order: Vec<PendingOp> = p.snapshot().into_iter().map(|(op, _)| op).collect();
        assert_eq!(
            order,
            [
                PendingOp::Key("a".into()),
                PendingOp::Key("b".into()),
                PendingOp::Tag("t".into())
            ]
        );
    }

    #[test]
    fn completing_removes_only_the_version_replayed() {
        let p = PendingInvalidations::new(10);
        p.push(PendingOp::Key("a".into()));
        let snap = p.snapshot();
        // Queued again while the replay was in flight: must stay for the next replay.
        p.push(PendingOp::Key("a".into()));
        p.complete(&snap[0].0, snap[0].1);
        assert!(p.has_key("a"));
        let snap = p.snapshot();
        p.complete(&snap[0].0, snap[0].1);
        assert!(p.is_empty());
    }

    #[test]
    fn a_write_supersedes_only_invalidations_queued_before_it_began() {
        let p = PendingInvalidations::new(10);
        // A write that began with nothing queued does not supersede what is queued after.
        let early = p.next_seq();
        p.push(PendingOp::Key("c".into()));
        p.supersede_key("c", early);
        assert!(
            p.has_key("c"),
            "queued after the write began, with the queue empty then"
        );
        p.push(PendingOp::Key("a".into()));
        let began = p.next_seq();
        p.push(PendingOp::Key("b".into()));
        p.supersede_key("a", began);
        p.supersede_key("b", began);
        assert!(!p.has_key("a"), "queued before the write began");
        assert!(p.has_key("b"), "queued after it began: still to replay");
        assert_eq!(p.len(), 2);
    }
}
