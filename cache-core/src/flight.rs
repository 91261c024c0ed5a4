//! Single-flight: at most one load per key (and per state of the key: see
//! [`Ticket::state`](crate::coherence::Ticket::state)) among the concurrent callers of one
//! instance, single reads and batches alike.
//!
//! A caller [`join`](Flights::join)s the flight of its key: the first becomes its [`Lead`] and
//! runs the load, the others [`Follow`] it and wait for what the lead
//! [`complete`](Lead::complete)s it with. A lead dropped without completing (its caller was
//! cancelled, or a batch did not produce that key) lets its followers go: each joins again, and one
//! of them leads the next load. Outcomes are typed: a flight is shared only by callers expecting
//! the same outcome type (as moka's `try_get_with`, which this replaces: it is cheaper on the miss
//! path, and a batch can lead many flights at once, which `try_get_with` cannot express).
//!
//! The registry is keyed by the entry's full key, shared with the generation ticket (`Arc<str>`):
//! joining costs a shard lock, a hash lookup and, for a lead, the outcome channel.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;

/// Shards of the registry (a power of two).
const SHARDS: usize = 64;

/// Which flight of a key state: a caller's load, or one joining a refresh in progress.
pub(crate) type FlightId = ([u64; 4], bool);

/// What the followers of a flight wait on: one allocation per flight.
struct Slot<O> {
    outcome: OnceLock<O>,
    /// The lead gave up without an outcome.
    abandoned: AtomicBool,
    done: Notify,
}

/// One flight in the registry.
struct Entry {
    /// The key's state the flight's lead saw, and whether it is a refresh's.
    flight: FlightId,
    outcome: TypeId,
    /// The flight's `Slot<O>`, `O` being the outcome type.
    slot: Arc<dyn Any + Send + Sync>,
}

/// The flights of one key: nearly always one (kept inline), more only for other states or
/// outcome types.
struct Entries {
    first: Entry,
    others: Vec<Entry>,
}

type Shard = HashMap<Arc<str>, Entries>;

/// The registry of loads in flight.
pub(crate) struct Flights {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Flights {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// What [`Flights::join`] made of a caller.
pub(crate) enum Role<'a, O: Clone + Send + Sync + 'static> {
    /// The caller runs the load.
    Lead(Lead<'a, O>),
    /// Another caller runs it.
    Follow(Follow<O>),
}

/// The caller that runs a flight's load.
pub(crate) struct Lead<'a, O: Clone + Send + Sync + 'static> {
    flights: &'a Flights,
    key: Arc<str>,
    slot: Arc<Slot<O>>,
}

/// A caller waiting for another's load.
pub(crate) struct Follow<O> {
    slot: Arc<Slot<O>>,
}

impl Flights {
    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let h = crate::departures::key_hash(key);
        &self.shards[(h as usize) & (SHARDS - 1)]
    }

    fn lock(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        self.shard(key).lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the flight `flight` of `key` (its full key) whose outcome is an `O`, or starts it.
    pub(crate) fn join<O: Clone + Send + Sync + 'static>(
        &self,
        key: &Arc<str>,
        flight: FlightId,
    ) -> Role<'_, O> {
        let outcome = TypeId::of::<O>();
        let mut shard = self.lock(key);
        let same = |e: &&Entry| e.outcome == outcome && e.flight == flight;
        let found = shard.get(&**key).and_then(|es| {
            std::iter::once(&es.first)
                .chain(&es.others)
                .find(same)
                .and_then(|e| e.slot.clone().downcast::<Slot<O>>().ok())
        });
        if let Some(slot) = found {
            return Role::Follow(Follow { slot });
        }
        let slot = Arc::new(Slot {
            outcome: OnceLock::new(),
            abandoned: AtomicBool::new(false),
            done: Notify::new(),
        });
        let entry = Entry {
            flight,
            outcome,
            slot: slot.clone(),
        };
        match shard.get_mut(&**key) {
            Some(es) => es.others.push(entry),
            None => {
                shard.insert(
                    key.clone(),
                    Entries {
                        first: entry,
                        others: Vec::new(),
                    },
                );
            }
        }
        Role::Lead(Lead {
            flights: self,
            key: key.clone(),
            slot,
        })
    }

    /// Loads in flight (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .map(|es| 1 + es.others.len())
                    .sum::<usize>()
            })
            .sum()
    }
}

impl<O: Clone + Send + Sync + 'static> Lead<'_, O> {
    /// Ends the flight with `outcome`, which every follower receives.
    pub(crate) fn complete(self, outcome: O) {
        let _ = self.slot.outcome.set(outcome);
        // Dropped here: leaves the registry (new callers start a new load, which will find what
        // this one stored) and wakes the followers.
    }
}

impl<O: Clone + Send + Sync + 'static> Drop for Lead<'_, O> {
    fn drop(&mut self) {
        {
            let mut shard = self.flights.lock(&self.key);
            let mine = |e: &Entry| {
                // The same allocation: this flight's slot.
                std::ptr::eq(
                    Arc::as_ptr(&e.slot).cast::<()>(),
                    Arc::as_ptr(&self.slot).cast::<()>(),
                )
            };
            if let Some(es) = shard.get_mut(&*self.key) {
                if mine(&es.first) {
                    match es.others.pop() {
                        Some(next) => es.first = next,
                        None => {
                            shard.remove(&*self.key);
                        }
                    }
                } else {
                    es.others.retain(|e| !mine(e));
                }
            }
        }
        if self.slot.outcome.get().is_none() {
            // Followers of a flight left without an outcome join again.
            self.slot.abandoned.store(true, Ordering::Release);
        }
        self.slot.done.notify_waiters();
    }
}

impl<O: Clone + Send + Sync + 'static> Follow<O> {
    /// The flight's outcome; `None` when its lead gave up without one (join again).
    pub(crate) async fn outcome(self) -> Option<O> {
        loop {
            // Registered before looking, so that a lead finishing in between still wakes us.
            let done = self.slot.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if let Some(o) = self.slot.outcome.get() {
                return Some(o.clone());
            }
            if self.slot.abandoned.load(Ordering::Acquire) {
                return None;
            }
            done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: FlightId = ([1, 1, 0, 0], false);

    fn key() -> Arc<str> {
        Arc::from("k")
    }

    #[tokio::test]
    async fn followers_receive_the_leads_outcome_and_the_flight_leaves_the_registry() {
        let f = Flights::default();
        let Role::Lead(lead) = f.join::<u32>(&key(), S1) else {
            panic!("the first caller leads");
        };
        let Role::Follow(a) = f.join::<u32>(&key(), S1) else {
            panic!("the second follows");
        };
        assert_eq!(f.len(), 1);
        lead.complete(7);
        assert_eq!(a.outcome().await, Some(7));
        assert_eq!(f.len(), 0);
    }

    #[tokio::test]
    async fn a_lead_dropped_without_an_outcome_lets_its_followers_join_again() {
        let f = Flights::default();
        let lead = f.join::<u32>(&key(), S1);
        let Role::Follow(a) = f.join::<u32>(&key(), S1) else {
            panic!("the second follows");
        };
        drop(lead);
        assert_eq!(a.outcome().await, None);
        assert!(matches!(f.join::<u32>(&key(), S1), Role::Lead(_)));
    }

    #[test]
    fn another_state_lane_or_outcome_type_is_another_flight() {
        let f = Flights::default();
        let _a = f.join::<u32>(&key(), S1);
        assert!(matches!(
            f.join::<u32>(&key(), ([2, 1, 0, 0], false)),
            Role::Lead(_)
        ));
        assert!(matches!(
            f.join::<u32>(&key(), ([1, 1, 0, 0], true)),
            Role::Lead(_)
        ));
        let _b = f.join::<u64>(&key(), S1);
        assert!(matches!(f.join::<u32>(&key(), S1), Role::Follow(_)));
        assert!(matches!(f.join::<u64>(&key(), S1), Role::Follow(_)));
    }
}
