//! The recent-writes journal (Redis Sentinel only): what this instance wrote to L2 in the last
//! [`JOURNAL_WINDOW`], applied again when the master moves.
//!
//! Replication is asynchronous: a write the old master acknowledged may never reach the replica
//! that takes over. A lost `set` leaves the new master with the older value, a lost invalidation
//! with the value it removed; either would then be served (and copied into every L1) until its
//! TTL. So each invalidation, tag invalidation and `set` that reached L2 is noted here (one slot per
//! key or tag: the last time), and when the master moves every one still within the window is
//! queued as a pending invalidation ([`PendingOp`]): fenced on this instance until replayed, then
//! replayed on the new master and published to the other instances (see `pending.rs`). A `set` is
//! re-applied as an invalidation: its value is not kept, and the next read loads the current one.
//!
//! What a write can be lost to is the replication lag when the master died, plus the time an
//! instance kept writing to a master that was no longer one (the watcher stops using a master as
//! soon as a sentinel reports it down or being failed over, and follows a new one within
//! milliseconds of its announcement): well under the window. Loads' write-backs and warming are not
//! noted: they write what the origin holds, and what the new master holds instead was valid unless
//! an invalidation or a `set` since replaced it, which is noted.
//!
//! Bounded: at most `max` keys and tags (the pending queue's bound); when it is full of writes
//! still within the window, further ones are not noted, and the next master move says so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::PendingOp;

/// How long a write stays in the journal.
pub(crate) const JOURNAL_WINDOW: Duration = Duration::from_secs(10);
/// The least time between two sweeps of a full journal.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Journal {
    max: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Each key or tag written, with when it was last.
    last: HashMap<PendingOp, Instant>,
    swept: Instant,
    /// When a write was last left out for lack of room.
    full_at: Option<Instant>,
}

impl Journal {
    /// A journal of at most `max` keys and tags.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            inner: Mutex::new(Inner {
                last: HashMap::new(),
                swept: Instant::now(),
                full_at: None,
            }),
        }
    }

    /// Notes that `op` reached L2 now.
    pub(crate) fn note(&self, op: PendingOp) {
        let now = Instant::now();
        let mut j = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if j.last.len() >= self.max && !j.last.contains_key(&op) {
            if now.duration_since(j.swept) >= SWEEP_EVERY {
                j.swept = now;
                j.last
                    .retain(|_, t| now.duration_since(*t) < JOURNAL_WINDOW);
            }
            if j.last.len() >= self.max {
                j.full_at = Some(now);
                return;
            }
        }
        j.last.insert(op, now);
    }

    /// The keys and tags written within the window, and whether some were left out of it for
    /// lack of room. They stay in the journal: a second move soon after needs them too.
    pub(crate) fn recent(&self) -> (Vec<PendingOp>, bool) {
        let now = Instant::now();
        let mut j = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        j.last
            .retain(|_, t| now.duration_since(*t) < JOURNAL_WINDOW);
        j.swept = now;
        let left_out = j
            .full_at
            .is_some_and(|t| now.duration_since(t) < JOURNAL_WINDOW);
        (j.last.keys().cloned().collect(), left_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_noted_once_and_a_full_journal_says_so() {
        let j = Journal::new(3);
        j.note(PendingOp::Key("a".into()));
        j.note(PendingOp::Key("a".into()));
        j.note(PendingOp::Tag("a".into()));
        let (mut ops, left_out) = j.recent();
        ops.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            ops,
            vec![PendingOp::Key("a".into()), PendingOp::Tag("a".into())]
        );
        assert!(!left_out);
        j.note(PendingOp::Key("b".into()));
        // Full of writes within the window: `c` is left out, and that is said.
        j.note(PendingOp::Key("c".into()));
        let (ops, left_out) = j.recent();
        assert_eq!(ops.len(), 3);
        assert!(!ops.contains(&PendingOp::Key("c".into())));
        assert!(left_out);
        // A key already noted is noted again even when full.
        j.note(PendingOp::Key("b".into()));
        assert_eq!(j.recent().0.len(), 3);
    }
}
