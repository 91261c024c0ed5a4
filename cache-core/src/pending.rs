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
//! - **Replayed before writes resume**: while anything is queued, L2 writes of this instance are
//!   skipped and reads of a queued key (or of an entry carrying a queued tag) do not use L2. The
//!   background task replays the queue (tombstones and tag version bumps, oldest first, in
//!   concurrent batches: invalidations commute) as soon as the breaker is closed, publishes each on the backplane so that other instances drop
//!   their L1 copies, and only then does traffic use L2 again.
//!
//! [`CacheBuilder::max_pending_invalidations`]: crate::CacheBuilder::max_pending_invalidations

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::backplane::{self, Message};
use crate::cache::{tombstone, Inner};
use crate::tags;

/// A queued invalidation.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    next_seq: u64,
}

/// The queue and its counters.
pub(crate) struct PendingInvalidations {
    max: usize,
    len: AtomicUsize,
    queue: Mutex<Queue>,
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

    /// Queues `op` (moving it to the back if queued already). Returns false when it was dropped
    /// because the queue is full.
    pub(crate) fn push(&self, op: PendingOp) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let seq = q.next_seq;
        q.next_seq += 1;
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

    /// Everything queued, oldest first, with the sequence number to complete it with.
    fn snapshot(&self) -> Vec<(PendingOp, u64)> {
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
    fn complete(&self, op: &PendingOp, seq: u64) {
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

/// How many queued invalidations are sent to Redis at once during a replay.
const REPLAY_BATCH: usize = 64;

/// Applies the queued invalidations to L2 and publishes them, oldest first, if L2 is usable. Stops
/// at the first failure (the rest stays queued for the next attempt). Called by the background task.
pub(crate) async fn replay(inner: &Inner) {
    let pending = &inner.pending;
    let Some(l2) = inner.l2.as_ref() else {
        return;
    };
    if pending.is_empty() || l2.breaker.is_rejecting() {
        return;
    }
    if pending.replaying.swap(true, Ordering::AcqRel) {
        return;
    }
    let ops = pending.snapshot();
    tracing::debug!(count = ops.len(), "replaying queued invalidations");
    let mut done = 0;
    'batches: for batch in ops.chunks(REPLAY_BATCH) {
        let results = futures::future::join_all(batch.iter().map(|(op, _)| async move {
            match op {
                PendingOp::Key(full) => l2.set(full, &tombstone(), inner.tombstone_ttl).await,
                PendingOp::Tag(tag) => {
                    let key = tags::version_key(&inner.prefix, tag);
                    l2.incr_versions(std::slice::from_ref(&key), tags::TAG_VERSION_TTL)
                        .await
                }
            }
        }))
        .await;
        for ((op, seq), res) in batch.iter().zip(results) {
            if let Err(e) = res {
                // Expected while L2 is still failing: the breaker opens and the next attempt
                // follows its probe.
                tracing::debug!(error = ?e, replayed = done,
                    "replaying queued invalidations failed: the rest stays queued");
                break 'batches;
            }
            pending.complete(op, *seq);
            pending.replayed.fetch_add(1, Ordering::Relaxed);
            done += 1;
            let msg = match op {
                PendingOp::Key(full) => Message::Key(full),
                PendingOp::Tag(tag) => Message::Tag(tag),
            };
            backplane::publish(inner, msg).await;
        }
    }
    if done > 0 {
        tracing::info!(
            replayed = done,
            left = pending.len(),
            "invalidations queued during the L2 outage replayed"
        );
    }
    pending.replaying.store(false, Ordering::Release);
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
}
