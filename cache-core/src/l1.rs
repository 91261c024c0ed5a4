//! L1: an in-process moka cache bounded by bytes, holding typed values behind `Arc`s.
//!
//! Values are stored typed (`Arc<dyn Any>`), so an L1 hit never decodes bytes again; a lookup with
//! another type than the one stored reads as a miss. Each entry has its own lifetime (moka `Expiry`):
//! its TTL plus the fail-safe grace period, so it never lives in L1 longer than that. Within its
//! lifetime an entry is *fresh* until `fresh_until`, then *stale* (served only when a load fails).

use moka::{future::Cache as Moka, notification::RemovalCause, Expiry};
use std::any::Any;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::heap_size::alloc_bytes;
use crate::refresh::Age;

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

/// One kind's share of L1: entries, weighted bytes and evictions. Kept exact by [`L1::insert`]
/// (before the entry reaches moka) and by moka's eviction listener (every removal, whatever its
/// cause), through the `Arc` each entry holds: an L1 hit never touches it.
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

/// Heap bytes of one tag name beyond its characters (the `String` in the boxed slice).
const TAG_OVERHEAD: usize = size_of::<String>();

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
    token: u64,
    /// Malloc chunk bytes of everything but the key (see [`weight`]).
    weight: u32,
    /// The stats of the entry's kind.
    kind: Arc<KindOccupancy>,
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

impl L1Entry {
    /// `value_heap`: the heap the value owns besides its own inline bytes (its
    /// [`heap_bytes`](crate::heap_size::heap_bytes)); the value's `Arc`, this entry's allocation,
    /// its tags and moka's share are added here, the key in the weigher. `kind`: the occupancy
    /// counters of the entry's kind.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new<T: Send + Sync + 'static>(
        value: Arc<T>,
        value_heap: usize,
        kind: &Arc<KindOccupancy>,
        fresh_for: Duration,
        grace: Duration,
        token: u64,
        loaded_at: Instant,
        tags: &[String],
        age: Age,
    ) -> Self {
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
            kind: kind.clone(),
            fresh_until: Instant::now() + fresh_for,
            lifetime: fresh_for + grace,
            token,
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

pub(crate) struct L1 {
    cache: Moka<String, L1Entry>,
    max_bytes: u64,
    evictions: Arc<AtomicU64>,
}

impl L1 {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let ev = evictions.clone();
        let cache = Moka::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &L1Entry| weight(k, v))
            .expire_after(EntryExpiry)
            // Called once for every entry that leaves the cache: replaced, invalidated, expired,
            // evicted, or refused by the admission policy right after its insert (`Size`).
            .eviction_listener(move |k: Arc<String>, v: L1Entry, cause| {
                let evicted = cause == RemovalCause::Size;
                v.0.kind.removed(weight(&k, &v), evicted);
                if evicted {
                    ev.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            cache,
            max_bytes,
            evictions,
        }
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

    pub(crate) async fn insert(&self, key: String, entry: L1Entry) {
        // Counted before moka holds it, so that its removal is never counted first.
        entry.0.kind.added(weight(&key, &entry));
        self.cache.insert(key, entry).await;
    }

    pub(crate) async fn invalidate(&self, key: &str) {
        self.cache.invalidate(key).await;
    }

    /// Removes the entry under `key` only if it is the one identified by `token` (a newer entry
    /// inserted meanwhile is kept).
    pub(crate) async fn remove_if_token(&self, key: &str, token: u64) {
        use moka::ops::compute::Op;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|e| {
                let op = match e {
                    Some(e) if e.value().0.token == token => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Removes every entry whose key starts with `prefix`.
    pub(crate) async fn invalidate_prefix(&self, prefix: &str) {
        let keys: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            self.cache.invalidate(k.as_str()).await;
        }
    }

    pub(crate) fn invalidate_all(&self) {
        self.cache.invalidate_all();
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
    pub(crate) async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: Vec<u64>, kind: &Arc<KindOccupancy>, token: u64) -> L1Entry {
        let heap = crate::heap_size::heap_bytes(&value);
        let ttl = Duration::from_secs(60);
        L1Entry::new(
            Arc::new(value),
            heap,
            kind,
            ttl,
            Duration::ZERO,
            token,
            Instant::now(),
            &[],
            Age::starting_now(ttl),
        )
    }

    fn figures(k: &KindOccupancy) -> (u64, u64, u64) {
        (k.entries(), k.bytes(), k.evictions())
    }

    #[test]
    fn a_value_weighs_its_heap_its_arc_and_the_entry() {
        let kind = Arc::new(KindOccupancy::default());
        let e = entry(vec![7; 1000], &kind, 0);
        let expected = alloc_bytes(8000)
            + alloc_bytes(16 + size_of::<Vec<u64>>())
            + alloc_bytes(16 + size_of::<EntryInner>())
            + ENTRY_OVERHEAD;
        assert_eq!(e.0.weight as usize, expected);
        assert_eq!(weight("abc", &e) as usize, expected + 32);
    }

    #[tokio::test]
    async fn each_kind_counts_its_own_entries_through_every_removal() {
        let l1 = L1::new(1 << 20);
        let (a, b) = (
            Arc::new(KindOccupancy::default()),
            Arc::new(KindOccupancy::default()),
        );
        for i in 0..10 {
            l1.insert(format!("a{i}"), entry(vec![1; 10], &a, i)).await;
        }
        l1.insert("b0".into(), entry(vec![1; 1000], &b, 100)).await;
        l1.sync().await;
        let wa = u64::from(weight("a0", &entry(vec![1; 10], &a, 0)));
        let wb = u64::from(weight("b0", &entry(vec![1; 1000], &b, 0)));
        assert_eq!(figures(&a), (10, 10 * wa, 0));
        assert_eq!(figures(&b), (1, wb, 0));
        assert_eq!(l1.bytes(), 10 * wa + wb);

        // Replaced, invalidated, removed by token (and not removed by a stale token).
        l1.insert("a0".into(), entry(vec![1; 10], &a, 50)).await;
        l1.invalidate("a1").await;
        l1.remove_if_token("a2", 2).await;
        l1.remove_if_token("a3", 999).await;
        l1.sync().await;
        assert_eq!(figures(&a), (8, 8 * wa, 0));
        assert_eq!(l1.entries(), 9);

        l1.invalidate_prefix("b").await;
        l1.sync().await;
        assert_eq!(figures(&b), (0, 0, 0));

        l1.invalidate_all();
        l1.sync().await;
        assert_eq!(figures(&a), (0, 0, 0));
        assert_eq!((l1.entries(), l1.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn entries_over_the_budget_count_as_their_kinds_evictions() {
        let l1 = L1::new(20_000);
        let (a, b) = (
            Arc::new(KindOccupancy::default()),
            Arc::new(KindOccupancy::default()),
        );
        // Larger than the whole budget: refused at once.
        l1.insert("huge".into(), entry(vec![1; 10_000], &b, 0))
            .await;
        for i in 0..200 {
            l1.insert(format!("a{i}"), entry(vec![1; 20], &a, i)).await;
            l1.sync().await;
        }
        assert_eq!(figures(&b), (0, 0, 1));
        let (entries, bytes, evictions) = figures(&a);
        assert_eq!(entries + evictions, 200);
        assert!(evictions > 100, "{evictions} evictions");
        assert_eq!((entries, bytes), (l1.entries(), l1.bytes()));
        assert!(bytes <= 20_000);
        assert_eq!(l1.evictions(), evictions + 1);
    }
}
