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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Shards of the registry (a power of two).
const SHARDS: usize = 64;

/// Which flight of a key state: a caller's load, or one joining a refresh in progress.
pub(crate) type FlightId = ([u64; 4], bool);

/// One flight in the registry.
struct Entry {
    /// The key's state the flight's lead saw, and whether it is a refresh's.
    flight: FlightId,
    outcome: TypeId,
    id: u64,
    /// A `watch::Receiver<Option<O>>` of the flight's outcome type `O`.
    rx: Box<dyn Any + Send + Sync>,
}

type Shard = HashMap<Arc<str>, Vec<Entry>>;

/// The registry of loads in flight.
pub(crate) struct Flights {
    shards: Box<[Mutex<Shard>]>,
    next_id: AtomicU64,
}

impl Default for Flights {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
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
    id: u64,
    tx: watch::Sender<Option<O>>,
}

/// A caller waiting for another's load.
pub(crate) struct Follow<O> {
    rx: watch::Receiver<Option<O>>,
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
        if let Some(entries) = shard.get(&**key) {
            let found = entries
                .iter()
                .find(|e| e.outcome == outcome && e.flight == flight)
                .and_then(|e| e.rx.downcast_ref::<watch::Receiver<Option<O>>>());
            if let Some(rx) = found {
                return Role::Follow(Follow { rx: rx.clone() });
            }
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        shard.entry(key.clone()).or_default().push(Entry {
            flight,
            outcome,
            id,
            rx: Box::new(rx),
        });
        Role::Lead(Lead {
            flights: self,
            key: key.clone(),
            id,
            tx,
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
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}

impl<O: Clone + Send + Sync + 'static> Lead<'_, O> {
    /// Ends the flight with `outcome`, which every follower receives.
    pub(crate) fn complete(self, outcome: O) {
        self.tx.send_replace(Some(outcome));
        // Dropped here: leaves the registry (new callers start a new load, which will find what
        // this one stored).
    }
}

impl<O: Clone + Send + Sync + 'static> Drop for Lead<'_, O> {
    fn drop(&mut self) {
        let mut shard = self.flights.lock(&self.key);
        if let Some(entries) = shard.get_mut(&*self.key) {
            entries.retain(|e| e.id != self.id);
            if entries.is_empty() {
                shard.remove(&*self.key);
            }
        }
        // The sender is dropped after this: followers of a flight left without an outcome see the
        // channel closed and join again.
    }
}

impl<O: Clone + Send + Sync + 'static> Follow<O> {
    /// The flight's outcome; `None` when its lead gave up without one (join again).
    pub(crate) async fn outcome(mut self) -> Option<O> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
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
