//! L1: an in-process moka cache bounded by bytes, holding typed values behind `Arc`s.
//!
//! Values are stored typed (`Arc<dyn Any>`), so an L1 hit never decodes bytes again; a lookup with
//! another type than the one stored reads as a miss. Each entry has its own lifetime (moka `Expiry`):
//! its TTL plus the fail-safe grace period, so it never lives in L1 longer than that. Within its
//! lifetime an entry is *fresh* until `fresh_until`, then *stale* (served only when a load fails).

use moka::{future::Cache as Moka, notification::RemovalCause, Expiry};
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Age;

/// What one entry costs on the heap besides its key's characters, its value and its tags: moka's
/// own per-entry structures (the entry and its info, the hash-table bucket, the access-order and
/// write-order deque nodes, the expiration timer node), the `Arc<String>` holding the key, the
/// `Arc` around the value and the entry's own allocation (`EntryInner`). Measured with a counting
/// allocator (`cargo bench -p cache-benches --bench compare`, section "L1 memory"), not derived:
/// moka's layout is not part of its API, so re-measure it when upgrading moka.
const ENTRY_OVERHEAD: usize = 400;

/// Heap bytes of one tag name beyond its characters (the `String` in the boxed slice).
const TAG_OVERHEAD: usize = std::mem::size_of::<String>();

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
    /// The heap data inside the value (its encoded size); the value's own size and its `Arc` are
    /// added, the key and moka's share in the weigher.
    pub(crate) payload_bytes: usize,
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
            payload_bytes,
            fresh_for,
            loaded_at,
            tags,
            age,
        } = e;
        let value_bytes = payload_bytes + std::mem::size_of::<T>();
        let tags_bytes: usize = if tags.is_empty() {
            0
        } else {
            std::mem::size_of::<Tagged>()
                + tags.iter().map(|t| t.len() + TAG_OVERHEAD).sum::<usize>()
        };
        L1Entry(Arc::new(EntryInner {
            value,
            tagged: (!tags.is_empty()).then(|| {
                Box::new(Tagged {
                    tags: tags.to_vec().into_boxed_slice(),
                    loaded_at,
                })
            }),
            weight: u32::try_from(value_bytes + tags_bytes + ENTRY_OVERHEAD).unwrap_or(u32::MAX),
            fresh_until: Instant::now() + fresh_for,
            lifetime: fresh_for + grace,
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

/// The L1: moka bounded by bytes, with per-kind epochs so that dropping everything (or a kind) is
/// O(1) for callers: entries stored before the epoch changed are dead at once (a lookup treats them
/// as absent) and are removed in the background ([`L1::sweep`]) or evicted by moka as usual.
/// moka's own `invalidate_all` does the removal work inside later inserts instead, which stalled
/// callers for hundreds of milliseconds after a flush of ~100k entries.
pub(crate) struct L1 {
    cache: Moka<String, L1Entry>,
    max_bytes: u64,
    evictions: Arc<AtomicU64>,
    /// Per kind id: the current epoch.
    epochs: Box<[AtomicU64]>,
    next_token: AtomicU64,
    /// The fail-safe grace: an entry lives this long past its freshness.
    grace: Duration,
    /// Whether dead entries may remain (an epoch changed since the last full sweep).
    dead: AtomicBool,
}

impl L1 {
    /// An L1 of `max_bytes` for `kinds` kind ids, keeping entries `grace` past their freshness.
    pub(crate) fn new(max_bytes: u64, kinds: usize, grace: Duration) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let ev = evictions.clone();
        let cache = Moka::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &L1Entry| {
                v.0.weight
                    .saturating_add(u32::try_from(k.len()).unwrap_or(u32::MAX))
            })
            .expire_after(EntryExpiry)
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    ev.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            cache,
            max_bytes,
            evictions,
            epochs: (0..kinds.max(1)).map(|_| AtomicU64::new(0)).collect(),
            next_token: AtomicU64::new(1),
            grace,
            dead: AtomicBool::new(false),
        }
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
        self.cache.insert(key, entry).await;
        token
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
        if !self.dead.load(Ordering::Acquire) {
            return 0;
        }
        let dead: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(_, e)| e.0.epoch != self.epoch(e.0.kind))
            .map(|(k, _)| k)
            .take(max)
            .collect();
        if dead.len() < max {
            self.dead.store(false, Ordering::Release);
        }
        for k in &dead {
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
    pub(crate) async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}
