//! Why keys recently left L1: evicted for the byte budget, expired, or removed (an invalidation,
//! a clear), so that the next lookup of such a key can say why it missed (a miss reason) and how
//! soon it came back (what the recommendations weigh).
//!
//! A fixed table of slots indexed by the key's hash, each remembering the last departure that
//! landed in it: bounded memory (`SLOTS` slots, ~300 KiB) whatever the cache's size, no allocation,
//! and a lookup only on an L1 miss. A departure overwritten by a later one in the same slot is
//! forgotten: its key's next miss counts as `absent` (so the counts of evictions and expiries
//! noticed are lower bounds when L1 churns through more than `SLOTS` keys between re-reads).

use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Slots in the table (a power of two).
const SLOTS: usize = 8_192;

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

#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    cause: Cause,
    at: Instant,
    written: Instant,
}

/// The table (see the module documentation).
pub(crate) struct Departures {
    slots: Box<[Mutex<Option<Slot>>]>,
}

impl Default for Departures {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

/// The hash of a key as the table knows it: the same for a full key `String` and for a
/// [`LookupKey`](crate::key::LookupKey) of it (they hash alike by design).
pub(crate) fn key_hash(key: &(impl Hash + ?Sized)) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    key.hash(&mut h);
    h.finish()
}

impl Departures {
    fn slot(&self, hash: u64) -> &Mutex<Option<Slot>> {
        &self.slots[(hash as usize) & (SLOTS - 1)]
    }

    /// Notes that the key of hash `hash`, written `written_ago` ago, left L1 now.
    pub(crate) fn note(&self, hash: u64, cause: Cause, written_ago: Duration) {
        let now = Instant::now();
        let slot = Slot {
            hash,
            cause,
            at: now,
            written: now.checked_sub(written_ago).unwrap_or(now),
        };
        *self.slot(hash).lock().unwrap_or_else(|p| p.into_inner()) = Some(slot);
    }

    /// The departure of the key of hash `hash`, if the table still knows it; forgotten once
    /// taken (a key's later misses are then plain absences).
    pub(crate) fn take(&self, hash: u64) -> Option<Departed> {
        let mut slot = self.slot(hash).lock().unwrap_or_else(|p| p.into_inner());
        let s = (*slot).filter(|s| s.hash == hash)?;
        *slot = None;
        let now = Instant::now();
        Some(Departed {
            cause: s.cause,
            ago: now.saturating_duration_since(s.at),
            written_ago: now.saturating_duration_since(s.written),
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
    fn a_lookup_key_hashes_like_its_full_key() {
        let full = "p:v1:kind:user:1".to_owned();
        let split = crate::key::LookupKey::Split("p:v1:kind:", "user:1");
        assert_eq!(key_hash(&full), key_hash(&split));
    }
}
