//! L1: an in-process moka cache bounded by bytes, holding typed values behind `Arc`s.
//!
//! Values are stored typed (`Arc<dyn Any>`), so an L1 hit never decodes bytes again; a lookup with
//! another type than the one stored reads as a miss. Each entry has its own lifetime (moka `Expiry`):
//! its TTL plus the fail-safe grace period, so it never lives in L1 longer than that. Within its
//! lifetime an entry is *fresh* until `fresh_until`, then *stale* (served only when a load fails).

use moka::{future::Cache as Moka, notification::RemovalCause, Expiry};
use std::any::Any;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{unix_ms, Age};
use crate::departures::{key_hash, Cause, Departed, Departures};
use crate::heap_size::alloc_bytes;

/// What moka's own structures cost per entry, in malloc chunk bytes: the entry and its info, the
/// hash-table bucket, the access-order and write-order deque nodes, the expiration timer node, the
/// `Arc` around the key, and the entry's share of the frequency sketch and of hash-table slack.
/// Everything else an entry holds is counted exactly (the key's characters, our `EntryInner`, the
/// value's `Arc`, the tags) or estimated (the value's heap, [`crate::heap_size`]).
///
/// Measured, not derived (moka's layout is not part of its API: re-measure when upgrading moka):
/// `COMPARE_ONLY=memory cargo bench -p cache-benches --bench compare` fills an L1 with `u64`
/// values (no heap of their own) under a counting global allocator, and prints the malloc chunks
/// per entry beyond what the weigher counts ("moka's own per-entry cost is ENTRY_OVERHEAD +N
/// bytes"): add N here. With moka 0.12.16: 591 bytes of chunks per entry against 464 weighed
/// with 256 here (1,000,000 keys into 64 MiB, 144,631 entries kept): 383; re-run with 384, N was
/// +7.6 (113,359 entries kept) and, in quick mode (100,000 keys into 4 MiB), +0.5. Part of it
/// varies with the entry count (hash-table slack, the frequency sketch), within ~10 bytes.
const ENTRY_OVERHEAD: usize = 384;

/// Heap bytes of one tag name beyond its characters (the `String` in the boxed slice).
const TAG_OVERHEAD: usize = size_of::<String>();

/// One kind's share of L1: entries, weighted bytes and evictions. Kept exact by [`L1::insert`]
/// (before the entry reaches moka) and by moka's eviction listener (every removal, whatever its
/// cause), through the kind id each entry carries: an L1 hit never touches it. Dead entries (of
/// an older epoch) count until they are swept or evicted: they still take their memory.
#[derive(Debug, Default)]
pub(crate) struct KindOccupancy {
    entries: AtomicU64,
    bytes: AtomicU64,
    evictions: AtomicU64,
}

impl KindOccupancy {
    fn added(&self, weight: u32) {
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(u64::from(weight), Ordering::Relaxed);
    }

    fn removed(&self, weight: u32, evicted: bool) {
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(u64::from(weight), Ordering::Relaxed);
        if evicted {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries held (those inserted and not yet removed; moka's own count lags until its
    /// pending maintenance runs).
    pub(crate) fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Weighted bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Entries evicted to keep the cache within its budget (or refused by its admission policy).
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

pub(crate) type AnyValue = Arc<dyn Any + Send + Sync>;

/// One L1 entry: a pointer, since moka moves and clones it on every hit (a flat entry costs fewer
/// atomic operations per hit, but moving its ~70 bytes through moka's and our futures costs more:
/// measured with `cargo bench -p cache-benches --bench compare`).
#[derive(Clone)]
pub(crate) struct L1Entry(Arc<EntryInner>);

struct EntryInner {
    value: AnyValue,
    fresh_until: Instant,
    lifetime: Duration,
    /// Identifies this entry among the ones stored under its key (see [`L1::remove_if_token`]).
    token: u64,
    /// The kind's id and its L1 epoch when stored: an entry of an older epoch is dead.
    kind: u32,
    epoch: u64,
    /// Malloc chunk bytes of everything but the key (see [`weight`]).
    weight: u32,
    /// Only for entries with tags (rare).
    tagged: Option<Box<Tagged>>,
    /// When the value was written and until when it is fresh, as in its L2 envelope (the L1
    /// lifetime may be shorter): what eager refresh measures, and the age provenance reports
    /// (`Lookup::age`).
    age: Age,
}

struct Tagged {
    tags: Box<[String]>,
    /// When the load that produced the value began (for tag invalidations heard later).
    loaded_at: Instant,
}

/// What to store in L1 (see [`L1::insert`]).
pub(crate) struct NewEntry<'a, T> {
    pub(crate) value: Arc<T>,
    /// The heap the value owns besides its own inline bytes (its
    /// [`heap_bytes`](crate::heap_size::heap_bytes)); the value's `Arc`, the entry's allocation, its
    /// tags and moka's share are added, the key in the weigher.
    pub(crate) value_heap: usize,
    /// How long the value is served as fresh.
    pub(crate) fresh_for: Duration,
    /// When the load that produced it began (for tag invalidations heard later).
    pub(crate) loaded_at: Instant,
    pub(crate) tags: &'a [String],
    pub(crate) age: Age,
}

impl L1Entry {
    fn new<T: Send + Sync + 'static>(
        e: NewEntry<'_, T>,
        grace: Duration,
        token: u64,
        kind: u32,
        epoch: u64,
    ) -> Self {
        let NewEntry {
            value,
            value_heap,
            fresh_for,
            loaded_at,
            tags,
            age,
        } = e;
        // The `Arc<T>` is one allocation: two counters and the value.
        let value_bytes = alloc_bytes(2 * size_of::<usize>() + size_of::<T>()) + value_heap;
        let tags_bytes: usize = if tags.is_empty() {
            0
        } else {
            alloc_bytes(size_of::<Tagged>())
                + alloc_bytes(tags.len() * TAG_OVERHEAD)
                + tags.iter().map(|t| alloc_bytes(t.len())).sum::<usize>()
        };
        let own = alloc_bytes(2 * size_of::<usize>() + size_of::<EntryInner>());
        let weight = value_bytes
            .saturating_add(tags_bytes)
            .saturating_add(own)
            .saturating_add(ENTRY_OVERHEAD);
        L1Entry(Arc::new(EntryInner {
            value,
            tagged: (!tags.is_empty()).then(|| {
                Box::new(Tagged {
                    tags: tags.to_vec().into_boxed_slice(),
                    loaded_at,
                })
            }),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            // Capped: every TTL is at most `MAX_TTL` already; this keeps the sum far from
            // overflowing whatever reaches here.
            fresh_until: Instant::now() + fresh_for.min(crate::options::MAX_TTL),
            lifetime: fresh_for.min(crate::options::MAX_TTL).saturating_add(grace),
            token,
            kind,
            epoch,
            age,
        }))
    }

    /// When the value was written and until when it is fresh.
    pub(crate) fn age(&self) -> Age {
        self.0.age
    }

    /// When the value was produced, Unix ms (for a value read from L2: when it was written there).
    pub(crate) fn created_ms(&self) -> u64 {
        self.0.age.created_ms
    }

    /// The entry's tags and the instant its load began, if it has tags.
    pub(crate) fn tags(&self) -> Option<(&[String], Instant)> {
        self.0.tagged.as_deref().map(|t| (&*t.tags, t.loaded_at))
    }

    /// Whether the value was stored as a `T`.
    pub(crate) fn holds<T: Send + Sync + 'static>(&self) -> bool {
        self.0.value.is::<T>()
    }

    /// The value as `T`, or `None` when it was stored as another type.
    pub(crate) fn value<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.0.value.clone().downcast::<T>().ok()
    }

    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now < self.0.fresh_until
    }
}

/// What an entry weighs in L1 (and in its kind's stats): its own weight and its key's characters
/// (a `String` of exactly the key's length, moved into moka). Computed on insert and removal only.
fn weight(key: &str, entry: &L1Entry) -> u32 {
    entry
        .0
        .weight
        .saturating_add(u32::try_from(alloc_bytes(key.len())).unwrap_or(u32::MAX))
}

struct EntryExpiry;

impl Expiry<String, L1Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &String, v: &L1Entry, _: Instant) -> Option<Duration> {
        Some(v.0.lifetime)
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &L1Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.0.lifetime)
    }
}

/// [`L1::sweep`] yields to the other tasks of its runtime after this many removals. A removal
/// does not suspend when nothing contends, and tokio polls its timers and sockets only every few
/// dozen task polls: without frequent yields a pass of 2,000 removals held a runtime's worker for
/// 100-570 ms in a debug build (seen as stalled callers after each resubscription in
/// tests/soak.rs); with a yield every 8 removals, for under 70 ms.
const SWEEP_YIELD_EVERY: usize = 8;

/// The L1: moka bounded by bytes, with per-kind epochs so that dropping everything (or a kind) is
/// O(1) for callers: entries stored before the epoch changed are dead at once (a lookup treats them
/// as absent) and are removed in the background ([`L1::sweep`]) or evicted by moka as usual.
/// moka's own `invalidate_all` does the removal work inside later inserts instead, which stalled
/// callers for hundreds of milliseconds after a flush of ~100k entries.
pub(crate) struct L1 {
    cache: Moka<String, L1Entry>,
    max_bytes: u64,
    evictions: Arc<AtomicU64>,
    /// Per kind id: entries, bytes and evictions.
    occupancy: Arc<[KindOccupancy]>,
    /// Per kind id: the current epoch.
    epochs: Box<[AtomicU64]>,
    next_token: AtomicU64,
    /// The fail-safe grace: an entry lives this long past its freshness.
    grace: Duration,
    /// Whether dead entries may remain (an epoch changed since the last full sweep).
    dead: AtomicBool,
    /// Why keys recently left (for miss reasons).
    departures: Arc<Departures>,
}

impl L1 {
    /// An L1 of `max_bytes` for `kinds` kind ids, keeping entries `grace` past their freshness.
    pub(crate) fn new(max_bytes: u64, kinds: usize, grace: Duration) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let occupancy: Arc<[KindOccupancy]> = (0..kinds.max(1))
            .map(|_| KindOccupancy::default())
            .collect();
        let (ev, occ) = (evictions.clone(), occupancy.clone());
        let departures = Arc::new(Departures::default());
        let gone = departures.clone();
        let cache = Moka::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &L1Entry| weight(k, v))
            .expire_after(EntryExpiry)
            // Called once for every entry that leaves the cache: replaced, invalidated, expired,
            // evicted, or refused by the admission policy right after its insert (`Size`).
            .eviction_listener(move |k: Arc<String>, v: L1Entry, cause| {
                let evicted = cause == RemovalCause::Size;
                if let Some(o) = occ.get(v.0.kind as usize) {
                    o.removed(weight(&k, &v), evicted);
                }
                if evicted {
                    ev.fetch_add(1, Ordering::Relaxed);
                }
                let cause = match cause {
                    RemovalCause::Size => Cause::Evicted,
                    RemovalCause::Expired => Cause::Expired,
                    RemovalCause::Explicit => Cause::Removed,
                    RemovalCause::Replaced => return,
                };
                let written_ago = unix_ms().saturating_sub(v.created_ms());
                gone.note(key_hash(&*k), cause, Duration::from_millis(written_ago));
            })
            .build();
        Self {
            cache,
            max_bytes,
            evictions,
            occupancy,
            epochs: (0..kinds.max(1)).map(|_| AtomicU64::new(0)).collect(),
            next_token: AtomicU64::new(1),
            grace,
            dead: AtomicBool::new(false),
            departures,
        }
    }

    /// Why the key `key` (a full key or a lookup key) left L1 recently, if that is known (see
    /// [`crate::departures`]); forgotten once asked.
    pub(crate) fn departed(&self, key: &(impl std::hash::Hash + ?Sized)) -> Option<Departed> {
        self.departures.take(key_hash(key))
    }

    /// The fail-safe grace period.
    pub(crate) fn grace(&self) -> Duration {
        self.grace
    }

    fn epoch(&self, kind: u32) -> u64 {
        self.epochs
            .get(kind as usize)
            .map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// `found` unless it is dead (stored before its kind's epoch changed).
    pub(crate) fn live(&self, found: Option<L1Entry>) -> Option<L1Entry> {
        found.filter(|e| e.0.epoch == self.epoch(e.0.kind))
    }

    /// `key`: a `&str` or a [`LookupKey`](crate::key::LookupKey).
    ///
    /// moka's future itself, not wrapped in another `async fn`: each layer of state machine costs
    /// measurably on an L1 hit.
    pub(crate) fn get<'a, Q>(
        &'a self,
        key: &'a Q,
    ) -> impl std::future::Future<Output = Option<L1Entry>> + Send + 'a
    where
        Q: moka::Equivalent<String> + std::hash::Hash + Sync + ?Sized,
    {
        self.cache.get(key)
    }

    /// Stores `entry` under `key` for kind `kind`; returns the entry's token.
    pub(crate) async fn insert<T: Send + Sync + 'static>(
        &self,
        key: String,
        kind: usize,
        entry: NewEntry<'_, T>,
    ) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let kind = u32::try_from(kind).unwrap_or(u32::MAX);
        let epoch = self.epoch(kind);
        let entry = L1Entry::new(entry, self.grace, token, kind, epoch);
        // Counted before moka holds it, so that its removal is never counted first.
        if let Some(o) = self.occupancy.get(kind as usize) {
            o.added(weight(&key, &entry));
        }
        self.cache.insert(key, entry).await;
        token
    }

    /// The L1 share of kind `kind`.
    pub(crate) fn occupancy(&self, kind: usize) -> Option<&KindOccupancy> {
        self.occupancy.get(kind)
    }

    pub(crate) async fn invalidate(&self, key: &str) {
        self.cache.invalidate(key).await;
    }

    /// Removes the entry under `key` only if it is the one identified by `token` (a newer entry
    /// inserted meanwhile is kept).
    pub(crate) async fn remove_if_token(&self, key: &str, token: u64) {
        self.remove_if(key, |e| e.0.token == token).await;
    }

    /// Removes the entry under `key` if `pred` holds for it (atomically with respect to inserts).
    async fn remove_if(&self, key: &str, pred: impl FnOnce(&L1Entry) -> bool) {
        use moka::ops::compute::Op;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|e| {
                let op = match e {
                    Some(e) if pred(e.value()) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Drops every entry of kind `kind`, in O(1).
    pub(crate) fn drop_kind(&self, kind: usize) {
        if let Some(e) = self.epochs.get(kind) {
            e.fetch_add(1, Ordering::AcqRel);
            self.dead.store(true, Ordering::Release);
        }
    }

    /// Drops every entry, in O(1).
    pub(crate) fn drop_all(&self) {
        for e in self.epochs.iter() {
            e.fetch_add(1, Ordering::AcqRel);
        }
        self.dead.store(true, Ordering::Release);
    }

    /// Removes up to `max` dead entries (background work after a drop); returns how many. Once a
    /// pass finds fewer, there are none left.
    pub(crate) async fn sweep(&self, max: usize) -> usize {
        // Cleared before the scan, not after: a drop during the scan (whose entries the scan may
        // already have passed as live) sets it again, so the next pass removes them.
        if !self.dead.swap(false, Ordering::AcqRel) {
            return 0;
        }
        let dead: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(_, e)| e.0.epoch != self.epoch(e.0.kind))
            .map(|(k, _)| k)
            .take(max)
            .collect();
        if dead.len() == max {
            // There may be more.
            self.dead.store(true, Ordering::Release);
        }
        for (i, k) in dead.iter().enumerate() {
            if i > 0 && i % SWEEP_YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
            // Only if still dead: a live entry may have replaced it meanwhile.
            self.remove_if(k, |e| e.0.epoch != self.epoch(e.0.kind))
                .await;
        }
        dead.len()
    }

    pub(crate) fn entries(&self) -> u64 {
        self.cache.entry_count()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Applies pending maintenance (for exact counts in stats and tests).
    pub(crate) async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_entry(value: &Arc<Vec<u64>>) -> NewEntry<'static, Vec<u64>> {
        let ttl = Duration::from_secs(60);
        NewEntry {
            value: value.clone(),
            value_heap: crate::heap_size::heap_bytes(&**value),
            fresh_for: ttl,
            loaded_at: Instant::now(),
            tags: &[],
            age: Age::starting_now(ttl),
        }
    }

    fn figures(l1: &L1, kind: usize) -> (u64, u64, u64) {
        let k = l1.occupancy(kind).expect("kind");
        (k.entries(), k.bytes(), k.evictions())
    }

    #[test]
    fn a_value_weighs_its_heap_its_arc_and_the_entry() {
        let e = L1Entry::new(new_entry(&Arc::new(vec![7; 1000])), Duration::ZERO, 0, 0, 0);
        let expected = alloc_bytes(8000)
            + alloc_bytes(16 + size_of::<Vec<u64>>())
            + alloc_bytes(16 + size_of::<EntryInner>())
            + ENTRY_OVERHEAD;
        assert_eq!(e.0.weight as usize, expected);
        assert_eq!(weight("abc", &e) as usize, expected + 32);
    }

    #[tokio::test]
    async fn each_kind_counts_its_own_entries_through_every_removal() {
        let l1 = L1::new(1 << 20, 2, Duration::ZERO);
        let (small, big) = (Arc::new(vec![1u64; 10]), Arc::new(vec![1u64; 1000]));
        let mut tokens = Vec::new();
        for i in 0..10 {
            tokens.push(l1.insert(format!("a{i}"), 0, new_entry(&small)).await);
        }
        l1.insert("b0".into(), 1, new_entry(&big)).await;
        l1.run_pending_tasks().await;
        let w = |key: &str, v: &Arc<Vec<u64>>| {
            u64::from(weight(
                key,
                &L1Entry::new(new_entry(v), Duration::ZERO, 0, 0, 0),
            ))
        };
        let (wa, wb) = (w("a0", &small), w("b0", &big));
        assert_eq!(figures(&l1, 0), (10, 10 * wa, 0));
        assert_eq!(figures(&l1, 1), (1, wb, 0));
        assert_eq!(l1.bytes(), 10 * wa + wb);

        // Replaced, invalidated, removed by token (and not removed by a stale token).
        l1.insert("a0".into(), 0, new_entry(&small)).await;
        l1.invalidate("a1").await;
        l1.remove_if_token("a2", tokens[2]).await;
        l1.remove_if_token("a3", 999_999).await;
        l1.run_pending_tasks().await;
        assert_eq!(figures(&l1, 0), (8, 8 * wa, 0));
        assert_eq!(l1.entries(), 9);

        // Dropped (dead at once) and swept: still counted until swept, since they take memory.
        l1.drop_kind(1);
        assert!(
            l1.live(l1.get("b0").await).is_none(),
            "a dropped entry is dead at once"
        );
        assert!(
            l1.live(l1.get("a0").await).is_some(),
            "other kinds are untouched"
        );
        assert_eq!(figures(&l1, 1).0, 1);
        while l1.sweep(1_000).await > 0 {}
        l1.run_pending_tasks().await;
        assert_eq!(figures(&l1, 1), (0, 0, 0));

        l1.drop_all();
        while l1.sweep(3).await > 0 {}
        l1.run_pending_tasks().await;
        assert_eq!(figures(&l1, 0), (0, 0, 0));
        assert_eq!((l1.entries(), l1.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn entries_over_the_budget_count_as_their_kinds_evictions() {
        let l1 = L1::new(20_000, 2, Duration::ZERO);
        // Larger than the whole budget: refused at once.
        l1.insert("huge".into(), 1, new_entry(&Arc::new(vec![1; 10_000])))
            .await;
        let small = Arc::new(vec![1u64; 20]);
        for i in 0..200 {
            l1.insert(format!("a{i}"), 0, new_entry(&small)).await;
            l1.run_pending_tasks().await;
        }
        assert_eq!(figures(&l1, 1), (0, 0, 1));
        let (entries, bytes, evictions) = figures(&l1, 0);
        assert_eq!(entries + evictions, 200);
        assert!(evictions > 100, "{evictions} evictions");
        assert_eq!((entries, bytes), (l1.entries(), l1.bytes()));
        assert!(bytes <= 20_000);
        assert_eq!(l1.evictions(), evictions + 1);
    }
}
