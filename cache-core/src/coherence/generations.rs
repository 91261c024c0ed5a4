//! Per-key generations: what stops a load that began before an invalidation (or a newer `set`) from
//! storing its now-stale result afterwards (the "stale set" race), and what orders this instance's
//! writes of one key.
//!
//! A load or a write takes a [`Ticket`] for its key before it reads L2 or calls the loader; an
//! invalidation, a `set` or a backplane message about the key *bumps* the key's generation, and a
//! clear bumps the epoch of every key. The ticket then tells whether anything happened to the key
//! since ([`Ticket::is_current`]), and whether it was this instance's own write or invalidation
//! ([`Ticket::superseded_here`]): a load keeps nothing in L1 once superseded (its L2 compare-and-set decides for itself); a `set` skips its L2 write
//! only when superseded here (a backplane message may be late news of an older write elsewhere).
//!
//! Generations are exact per key: a key has a slot only while tickets of it are held (loads, sets
//! and reads in flight), so memory is bounded by the operations in flight, and one key's
//! invalidation never supersedes an unrelated key's load or write (striped counters did: a `set`
//! could be dropped by an unrelated key's invalidation). Slots are spread over shards to keep lock
//! contention low; the critical sections are a hash-map lookup.
//!
//! Every generation value comes from one counter that only grows, and a slot created for a key
//! takes a fresh value from it, so a slot created again never repeats a state handed out before:
//! a ticket's snapshot identifies one state of its key (and one flight: see `flight.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 64;

/// Where a bump comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// This instance's own `set`, `invalidate` or clear.
    Here,
    /// A backplane message (another instance's write), or a resynchronisation.
    Elsewhere,
}

#[derive(Clone)]
pub(crate) struct Generations(Arc<Shared>);

struct Shared {
    /// Source of every generation value (never repeats).
    next: AtomicU64,
    /// Bumped by clears made here / heard of.
    epoch_here: AtomicU64,
    epoch_elsewhere: AtomicU64,
    /// The keys are shared with the tickets: one allocation per key in flight, not per ticket.
    shards: Box<[Mutex<Shard>]>,
}

/// The slots of one shard, by key.
type Shard = HashMap<Arc<str>, Slot>;

struct Slot {
    here: u64,
    elsewhere: u64,
    /// Tickets held (a `Cell`: counted through the shared reference a key lookup gives, under
    /// the shard's lock).
    holders: std::cell::Cell<usize>,
    /// Serializes this instance's `set`s of the key (created by the first writer).
    writes: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// A snapshot of one key's generation, held while an operation on the key is in flight.
pub(crate) struct Ticket {
    gens: Generations,
    key: Arc<str>,
    here: u64,
    elsewhere: u64,
    epoch_here: u64,
    epoch_elsewhere: u64,
}

/// A [`Ticket`] of a `set`, holding the key's write lock: this instance's writes of one key take
/// effect in the order they began.
pub(crate) struct WriteTicket {
    pub(crate) ticket: Ticket,
    _order: tokio::sync::OwnedMutexGuard<()>,
}

impl Generations {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Shared {
            next: AtomicU64::new(1),
            epoch_here: AtomicU64::new(0),
            epoch_elsewhere: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }))
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize;
        &self.0.shards[h % SHARDS]
    }

    /// A value above every value handed out so far (and above what new slots start at).
    fn next(&self) -> u64 {
        self.0.next.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// A ticket of `key` as of now.
    pub(crate) fn begin(&self, key: &str) -> Ticket {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let epochs = self.epochs();
        let (key, here, elsewhere) = match shard.get_key_value(key) {
            Some((k, slot)) => {
                slot.holders.set(slot.holders.get() + 1);
                (k.clone(), slot.here, slot.elsewhere)
            }
            None => {
                // Past every value handed out so far, bumps of an earlier slot of this key
                // included, and never the start of an earlier slot: a load's flight can outlive
                // its ticket by a moment (its slot gone, an invalidation then finding nothing to
                // bump), and a caller arriving after that invalidation must not see the same state
                // and join it.
                let g = self.next();
                let k: Arc<str> = Arc::from(key);
                let slot = Slot {
                    here: g,
                    elsewhere: g,
                    holders: std::cell::Cell::new(1),
                    writes: None,
                };
                shard.insert(k.clone(), slot);
                (k, g, g)
            }
        };
        Ticket {
            gens: self.clone(),
            key,
            here,
            elsewhere,
            epoch_here: epochs.0,
            epoch_elsewhere: epochs.1,
        }
    }

    /// The ticket of a write of `key`: waits for this instance's earlier writes of the key, then
    /// supersedes every load of it in flight and returns a ticket taken after that.
    pub(crate) async fn begin_write(&self, key: &str) -> WriteTicket {
        let ticket = self.begin(key);
        let order = {
            let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
            match shard.get_mut(key) {
                Some(slot) => slot.writes.get_or_insert_with(Default::default).clone(),
                // Not reached: our ticket keeps the slot.
                None => Arc::default(),
            }
        };
        let guard = order.lock_owned().await;
        self.bump(key, Origin::Here);
        // The new ticket is taken before the first is dropped: the slot (and with it the write
        // order that later writes of the key wait on) must not be removed in between.
        let after = self.begin(key);
        drop(ticket);
        WriteTicket {
            ticket: after,
            _order: guard,
        }
    }

    /// Supersedes every operation on `key` in flight (nothing to do when none is).
    pub(crate) fn bump(&self, key: &str, origin: Origin) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = shard.get_mut(key) {
            let g = self.next();
            match origin {
                Origin::Here => slot.here = g,
                Origin::Elsewhere => slot.elsewhere = g,
            }
        }
    }

    /// Supersedes every operation in flight.
    pub(crate) fn bump_all(&self, origin: Origin) {
        match origin {
            Origin::Here => self.0.epoch_here.fetch_add(1, Ordering::AcqRel),
            Origin::Elsewhere => self.0.epoch_elsewhere.fetch_add(1, Ordering::AcqRel),
        };
    }

    fn epochs(&self) -> (u64, u64) {
        (
            self.0.epoch_here.load(Ordering::Acquire),
            self.0.epoch_elsewhere.load(Ordering::Acquire),
        )
    }

    /// The current `(here, elsewhere)` of a key with a slot.
    fn current(&self, key: &str) -> Option<(u64, u64)> {
        let shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        shard.get(key).map(|s| (s.here, s.elsewhere))
    }

    /// Keys with operations in flight (for tests and stats).
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.0
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl Ticket {
    /// The key of the ticket.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Nothing happened to the key since the ticket was taken (no write, invalidation or clear,
    /// here or heard of).
    pub(crate) fn is_current(&self) -> bool {
        let epochs = self.gens.epochs();
        epochs == (self.epoch_here, self.epoch_elsewhere)
            && self.gens.current(&self.key) == Some((self.here, self.elsewhere))
    }

    /// This instance wrote, invalidated or cleared the key since the ticket was taken.
    pub(crate) fn superseded_here(&self) -> bool {
        self.gens.epochs().0 != self.epoch_here
            || self.gens.current(&self.key).map(|c| c.0) != Some(self.here)
    }

    /// Supersedes every other ticket of the key, and moves this one along if it was current: once
    /// a write reached L2, a load that read L2 just before it can no longer fill L1 with the older
    /// value, while the write itself still can.
    pub(crate) fn supersede_others(&mut self) {
        let mut shard = self
            .gens
            .shard(&self.key)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let epochs = self.gens.epochs();
        if let Some(slot) = shard.get_mut(&self.key) {
            let was_current = (slot.here, slot.elsewhere) == (self.here, self.elsewhere)
                && epochs == (self.epoch_here, self.epoch_elsewhere);
            slot.here = self.gens.next();
            if was_current {
                self.here = slot.here;
            }
        }
    }

    /// The key, shared with the registry (a clone costs no allocation).
    pub(crate) fn shared_key(&self) -> &Arc<str> {
        &self.key
    }

    /// Identifies the key's state the ticket saw: loads of one key share a flight only when they
    /// saw the same state, so a caller arriving after an invalidation never joins a load that began
    /// before it.
    pub(crate) fn state(&self) -> [u64; 4] {
        [
            self.here,
            self.elsewhere,
            self.epoch_here,
            self.epoch_elsewhere,
        ]
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut shard = self
            .gens
            .shard(&self.key)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = shard.get_mut(&self.key) {
            let holders = slot.holders.get_mut();
            *holders -= 1;
            if *holders == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_supersedes_only_tickets_of_that_key() {
        let g = Generations::new();
        let a = g.begin("a");
        let b = g.begin("b");
        g.bump("a", Origin::Here);
        assert!(!a.is_current());
        assert!(a.superseded_here());
        assert!(b.is_current(), "another key's invalidation leaves b alone");
        let c = g.begin("c");
        g.bump_all(Origin::Here);
        assert!(!b.is_current() && !c.is_current());
    }

    #[test]
    fn news_from_elsewhere_supersedes_loads_but_is_not_a_write_here() {
        let g = Generations::new();
        let t = g.begin("k");
        g.bump("k", Origin::Elsewhere);
        assert!(!t.is_current());
        assert!(!t.superseded_here());
        let u = g.begin("u");
        g.bump_all(Origin::Elsewhere);
        assert!(!u.is_current() && !u.superseded_here());
    }

    #[test]
    fn slots_live_only_while_tickets_are_held_and_never_repeat_a_state() {
        let g = Generations::new();
        let first = g.begin("k");
        let key1 = first.state();
        g.bump("k", Origin::Here);
        let second = g.begin("k");
        assert_ne!(key1, second.state());
        drop(first);
        drop(second);
        assert_eq!(g.slots(), 0);
        // A bump with nothing in flight is a no-op, and a new slot starts past every value seen.
        g.bump("k", Origin::Here);
        let third = g.begin("k");
        assert_ne!(third.state(), key1);
        assert_eq!(g.slots(), 1);
    }

    #[test]
    fn a_slot_created_again_never_repeats_the_state_of_the_one_before() {
        let g = Generations::new();
        let first = g.begin("k");
        let before = first.state();
        drop(first);
        // An invalidation now finds no slot (a no-op): the next ticket must still differ.
        g.bump("k", Origin::Here);
        let second = g.begin("k");
        assert_ne!(second.state(), before);
    }

    #[test]
    fn a_write_supersedes_the_reads_before_it_but_not_itself() {
        let g = Generations::new();
        let mut write = g.begin("k");
        let read = g.begin("k");
        write.supersede_others();
        assert!(write.is_current());
        assert!(!read.is_current());
        // Superseded before: stays superseded.
        let mut late = g.begin("k");
        g.bump("k", Origin::Elsewhere);
        late.supersede_others();
        assert!(!late.is_current());
    }

    #[tokio::test]
    async fn writes_of_one_key_wait_for_each_other_and_supersede_loads() {
        let g = Generations::new();
        let load = g.begin("k");
        let w1 = g.begin_write("k").await;
        assert!(!load.is_current(), "a write supersedes loads in flight");
        assert!(w1.ticket.is_current());
        let g2 = g.clone();
        let second = tokio::spawn(async move { g2.begin_write("k").await.ticket.is_current() });
        tokio::task::yield_now().await;
        assert!(
            !second.is_finished(),
            "the second write waits for the first"
        );
        assert!(w1.ticket.is_current(), "and has not superseded it yet");
        drop(w1);
        assert!(second.await.unwrap());
        // Writes of other keys do not wait.
        let _a = g.begin_write("a").await;
        let _b = g.begin_write("b").await;
    }

    #[tokio::test]
    async fn a_write_waits_for_the_previous_write_of_its_key_with_nothing_else_in_flight() {
        let g = Generations::new();
        // No other ticket of the key is held: the first write's own tickets keep the write order.
        let w1 = g.begin_write("k").await;
        let g2 = g.clone();
        let second = tokio::spawn(async move { g2.begin_write("k").await.ticket.is_current() });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !second.is_finished(),
            "the second write must wait for the first"
        );
        drop(w1);
        assert!(second.await.unwrap());
        assert_eq!(g.slots(), 0);
    }
}
