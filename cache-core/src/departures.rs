//! Why keys recently left L1: evicted for the byte budget, expired, or removed (an invalidation,
//! a clear), so that the next lookup of such a key can say why it missed (a miss reason) and how
//! soon it came back (what the recommendations weigh).
//!
//! A fixed table of slots indexed by the key's hash, each remembering the last departure that
//! landed in it: bounded memory (32 bytes a slot: 256 KiB for L1's [`SLOTS`], 32 KiB for the
//! entry store's table of values too large to write) whatever the cache's size, no allocation,
//! and a lookup only on a miss. A departure overwritten by a later one in the same slot is
//! forgotten: its key's next miss counts as `absent` (so the counts of evictions and expiries
//! noticed are lower bounds when L1 churns through more than `SLOTS` keys between re-reads).
//! Times are kept as milliseconds from the table's creation (not `Instant`s, 16 bytes each).

use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Slots in L1's table (a power of two).
pub(crate) const SLOTS: usize = 8_192;

/// Why a key left L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Evicted to stay within the byte budget.
    Evicted,
    /// Its lifetime ended.
    Expired,
    /// Invalidated or cleared.
    Removed,
}

/// A departure, as a lookup finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Departed {
    pub(crate) cause: Cause,
    /// How long ago it left.
    pub(crate) ago: Duration,
    /// How long before the lookup the value had been written.
    pub(crate) written_ago: Duration,
}

/// 24 bytes (32 with its mutex); `Option<Slot>` takes no more (the cause's spare values mark
/// `None`).
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    /// When it left: milliseconds since the table's `base`.
    at_ms: u64,
    /// How old the value was when it left, in milliseconds (saturating at ~49 days).
    age_ms: u32,
    cause: Cause,
}

/// The table (see the module documentation).
pub(crate) struct Departures {
    base: Instant,
    slots: Box<[Mutex<Option<Slot>>]>,
}

impl Default for Departures {
    fn default() -> Self {
        Self::with_slots(SLOTS)
    }
}

/// The hash of a key as the table knows it: the same for a full key `String` and for a
/// [`LookupKey`](crate::key::LookupKey) of it (they hash alike by design).
pub(crate) fn key_hash(key: &(impl Hash + ?Sized)) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    key.hash(&mut h);
    h.finish()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Departures {
    /// A table of `slots` slots (rounded up to a power of two).
    pub(crate) fn with_slots(slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        Self {
            base: Instant::now(),
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, hash: u64) -> &Mutex<Option<Slot>> {
        &self.slots[(hash as usize) & (self.slots.len() - 1)]
    }

    fn now_ms(&self) -> u64 {
        millis(self.base.elapsed())
    }

    /// Notes that the key of hash `hash`, written `written_ago` ago, left L1 now.
    pub(crate) fn note(&self, hash: u64, cause: Cause, written_ago: Duration) {
        let slot = Slot {
            hash,
            at_ms: self.now_ms(),
            age_ms: u32::try_from(millis(written_ago)).unwrap_or(u32::MAX),
            cause,
        };
        *self.slot(hash).lock().unwrap_or_else(|p| p.into_inner()) = Some(slot);
    }

    /// The departure of the key of hash `hash`, if the table still knows it; forgotten once
    /// taken (a key's later misses are then plain absences).
    pub(crate) fn take(&self, hash: u64) -> Option<Departed> {
        let mut slot = self.slot(hash).lock().unwrap_or_else(|p| p.into_inner());
        let s = (*slot).filter(|s| s.hash == hash)?;
        *slot = None;
        drop(slot);
        let ago = Duration::from_millis(self.now_ms().saturating_sub(s.at_ms));
        Some(Departed {
            cause: s.cause,
            ago,
            written_ago: ago.saturating_add(Duration::from_millis(u64::from(s.age_ms))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_departure_is_found_once_by_its_key() {
        let d = Departures::default();
        let h = key_hash("p:v1:k:a");
        d.note(h, Cause::Evicted, Duration::from_secs(3));
        let got = d.take(h).expect("noted");
        assert_eq!(got.cause, Cause::Evicted);
        assert!(got.written_ago >= Duration::from_secs(3));
        assert!(got.ago < Duration::from_secs(3));
        assert_eq!(d.take(h), None, "taken");
    }

    #[test]
    fn another_key_in_the_same_slot_is_not_mistaken_for_it() {
        let d = Departures::default();
        let h = key_hash("p:v1:k:a");
        let other = h ^ (1 << 40); // same slot, other hash
        d.note(h, Cause::Expired, Duration::ZERO);
        assert_eq!(d.take(other), None);
        d.note(other, Cause::Removed, Duration::ZERO);
        assert_eq!(d.take(h), None, "overwritten by the later departure");
        assert_eq!(d.take(other).map(|x| x.cause), Some(Cause::Removed));
    }

    #[test]
    fn a_slot_takes_32_bytes_with_its_mutex() {
        assert_eq!(std::mem::size_of::<Mutex<Option<Slot>>>(), 32);
    }

    #[test]
    fn a_smaller_table_still_finds_what_it_noted() {
        let d = Departures::with_slots(1_000);
        assert_eq!(d.slots.len(), 1_024);
        let h = key_hash("p:v1:k:big");
        d.note(h, Cause::Removed, Duration::from_millis(40));
        let got = d.take(h).expect("noted");
        assert_eq!(got.cause, Cause::Removed);
        assert!(got.written_ago >= Duration::from_millis(40));
    }

    #[test]
    fn a_lookup_key_hashes_like_its_full_key() {
        let full = "p:v1:kind:user:1".to_owned();
        let split = crate::key::LookupKey::Split("p:v1:kind:", "user:1");
        assert_eq!(key_hash(&full), key_hash(&split));
    }
}
