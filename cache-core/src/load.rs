//! The read path, in one place: L1 lookup, then on a miss one load per key among concurrent callers
//! (single-flight), which reads L2 (and checks what it finds), takes the distributed lock if asked,
//! calls the loader and writes the value back under the race guards; eager refreshes start here too.
//!
//! ```text
//! get_or_load ─► L1 ─hit─► value
//!                 └miss─► flight(key, ticket) ─► GET ─fresh─► L1 copy ─► value
//!                                                  └─► L2 read (lease if absent) ─fresh─► L1 copy ─► value
//!                                                       └─miss/stale─► [lock] ─► loader ─► store ─► value
//! store: L2 compare-and-set against what the read saw (value, tombstone or lease), then L1 unless
//!        the key's ticket was superseded (an invalidation or a newer write since the load began).
//! ```
//!
//! Writes (`set`) go through [`store`] too, with an unconditional L2 write. Batches of keys take
//! the same steps, pipelined, in `load/batch.rs`.
//!
//! Longer than the other modules (~900 lines) on purpose: the read path reads top to bottom in one
//! file. What it calls has its own module: the loader's timeouts (`loader`), the distributed lock
//! (`lock`), refresh claims (`refresh`), the L2 entry store (`entry_store`) and generations and
//! L1 writes (`coherence`); its unit tests are in `load/tests.rs`.

use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{unix_ms, Age};
use crate::codec::TagVersion;
use crate::coherence::{Message, Origin, PendingOp, Ticket};
use crate::departures::Cause;
use crate::entry_store::{Found, L2Read, NoTokens, Write, Written};
use crate::events::{At, LoadCause, LoadOutcome, StaleCause, Tier};
use crate::flight::Role;
use crate::freshness::Freshness;
use crate::heap_size::heap_bytes;
use crate::inner::Inner;
use crate::key;
use crate::kind::KindEntry;
use crate::l1::{L1Entry, NewEntry};
use crate::loader::{
    Detach, HardTimeout, InPlace, Lazy, LazyError, Loader, OwnedLoader, Rest, Run, Timeouts,
};
use crate::lock::{self, LockGuard, LockOutcome, LockRequest, Poll};
use crate::options::EntryOptions;
use crate::provenance::{self, Source, Trace};
use crate::refresh::{self, Claim};
use crate::stats::{KindStats, MissReason};

/// What a coalesced load produced, shared by every caller of the flight. `X` is what a hard
/// timeout reports (uninhabited for borrowed loaders, which have none).
pub(crate) enum Outcome<T, E, X> {
    Value(Arc<T>),
    Failed(Arc<E>),
    TimedOut(X),
}

/// Tells whether a loader's `Err` is a failure, or an output returned uncached.
///
/// A failure may be answered with a stale value (fail-safe) and counts as a loader error. An
/// uncached output (a `#[cached]` function's `None`, or a value its `unless` refused) is the answer
/// of the call: every caller of the load gets it, and a stale value is never served instead.
pub(crate) type Failure<E> = fn(&E) -> bool;

/// Every `Err` is a failure: the loaders of the public API.
pub(crate) fn any_err<E>(_: &E) -> bool {
    true
}

/// Why a load runs.
enum LoadMode<T> {
    /// A caller found no fresh value.
    Miss,
    /// A background refresh of `current`, written at `created_ms`; `claim` marks the key as being
    /// refreshed until the load (or its background completion) ends.
    Refresh {
        current: Arc<T>,
        created_ms: u64,
        claim: Claim,
    },
}

/// Everything needed to store a loader's result, owned so that it can move into a background task.
struct LoadJob {
    ke: Arc<KindEntry>,
    ticket: Ticket,
    opts: EntryOptions,
    /// The tokens of the entry's tags (without them, no L2 write).
    tokens: Result<Vec<TagVersion>, NoTokens>,
    /// How to write back (`None`: not at all: L2 could not be read, Redis refuses writes, or the
    /// key held another type).
    write: Option<Write>,
    /// When the load began (before its L2 read).
    started: Instant,
    loader_started: Instant,
    lock: Option<LockGuard>,
    claim: Option<Claim>,
    refresh: bool,
}

impl LoadJob {
    /// Whether the tokens' read failed as an outage: the caller then waits for no other round
    /// trip of this load (no write-back, see [`release`]).
    fn l2_down(&self) -> bool {
        matches!(self.tokens, Err(NoTokens { outage: true }))
    }

    /// Why the loader runs (for its event).
    fn cause(&self) -> LoadCause {
        if self.refresh {
            LoadCause::Refresh
        } else {
            LoadCause::Miss
        }
    }
}

// ---- Entry points -------------------------------------------------------------------------------

/// `Cache::get`: L1, then L2; never the loader.
pub(crate) async fn get<T>(inner: &Arc<Inner>, kind: &str, key: &str) -> Option<Arc<T>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    if !inner.enabled {
        return None;
    }
    let ke = inner.kinds.get(kind);
    let lookup = key::LookupKey::new(ke.key_prefix.as_deref(), &inner.prefix, kind, key);
    if ke.cfg.tier_routing().l1() {
        let found = inner.l1.get(&lookup).await;
        if let Some(v) = l1_found::<T>(inner, ke, &lookup, found).fresh {
            return Some(v);
        }
    }
    // Inline in the boxed future (no string allocated for it).
    let full = lookup.into_full_key();
    // Boxed for the same reason as the miss path of `get_or_load_with`: an L1 hit must not carry
    // the L2 read's state machine.
    Box::pin(async move {
        // The ticket guards the L1 copy: a kind kept only in L2 needs none.
        let ticket = ke
            .cfg
            .tier_routing()
            .l1()
            .then(|| inner.coherence.gens.begin(&full));
        let fp = fingerprint::<T>(ke, None);
        match read(inner, ke, (&full, ticket.as_ref()), fp, false).await {
            L2Read::Fresh(found) => Some(found.value),
            _ => None,
        }
    })
    .await
}

/// `Cache::get_or_load_with`: the read path for a borrowed loader.
pub(crate) async fn get_or_load_with<T, E, F, Fut>(
    inner: &Arc<Inner>,
    kind: &str,
    key: &str,
    opts: &EntryOptions,
    loader: F,
    failure: Failure<E>,
) -> Result<Arc<T>, Arc<E>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let ke = inner.kinds.get(kind);
    if !inner.enabled {
        // Boxed, as the miss path below: the loader's future must not enlarge this one.
        return Box::pin(async move {
            KindStats::inc(&ke.stats.loader_calls);
            loader().await.map(Arc::new).map_err(|e| {
                if failure(&e) {
                    KindStats::inc(&ke.stats.loader_errors);
                }
                Arc::new(e)
            })
        })
        .await;
    }
    // The L1 lookup needs no allocated key; everything after a miss does.
    let lookup = key::LookupKey::new(ke.key_prefix.as_deref(), &inner.prefix, kind, key);
    let mut stale = None;
    if ke.cfg.tier_routing().l1() {
        let found = inner.l1.get(&lookup).await;
        let l1 = l1_found::<T>(inner, ke, &lookup, found);
        if let Some(v) = l1.fresh {
            return Ok(v);
        }
        stale = l1.stale;
    }
    // The miss path (L2, single-flight, loader, write-back) is boxed: inline, its state machine
    // made this future ~8.7 KB, which every call (hits too) paid for in stack traffic (the future
    // is moved into its caller's state); boxed it is one pointer, and the allocation is only paid
    // on a miss, next to a Redis round trip. The full key lives in it too (inline when short).
    let full = lookup.into_full_key();
    Box::pin(async move {
        if !ke.warned_in_place.load(Ordering::Relaxed)
            && opts
                .lock_override()
                .resolve(ke.cfg.freshness())
                .needs_owned_loader()
            && !ke.warned_in_place.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(kind, "eager refresh and loader timeouts need an owned loader: they apply to get_or_load_owned and to #[cached] functions with refresh/xfetch/soft_timeout/hard_timeout, not to get_or_load/get_or_load_with");
        }
        let fresh = opts.lock_override();
        match miss(inner, ke, &full, opts, (fresh, failure), stale, InPlace(loader)).await {
            Ok(v) => Ok(v),
            Err(LazyError::Loader(e)) => Err(e),
            Err(LazyError::TimedOut(never)) => match never {},
        }
    })
    .await
}

/// The owned-loader read path, with the loader made by `make` only when a load or a refresh needs
/// it (so a hit copies nothing). `Cache::get_or_load_owned` and the `#[cached]` functions with
/// freshness arguments go through here.
pub(crate) async fn get_or_load_lazy<T, E, H, M>(
    inner: &Arc<Inner>,
    kind: &str,
    key: &str,
    opts: &EntryOptions,
    fresh: Freshness,
    make: M,
    failure: Failure<E>,
) -> Result<Arc<T>, LazyError<E, H>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: HardTimeout,
    M: FnOnce() -> OwnedLoader<T, E, H>,
{
    let ke = inner.kinds.get(kind);
    let policy = fresh.resolve(ke.cfg.freshness());
    if !inner.enabled {
        KindStats::inc(&ke.stats.loader_calls);
        let fut = make().call();
        let hard = policy
            .hard_timeout
            .and_then(|d| H::report(d).map(|x| (d, x)));
        let res = match hard {
            Some((d, x)) => match tokio::time::timeout(d, fut).await {
                Ok(res) => res,
                Err(_) => {
                    KindStats::inc(&ke.stats.hard_timeouts);
                    return Err(LazyError::TimedOut(x));
                }
            },
            None => fut.await,
        };
        return res.map(Arc::new).map_err(|e| {
            if failure(&e) {
                KindStats::inc(&ke.stats.loader_errors);
            }
            LazyError::Loader(Arc::new(e))
        });
    }
    // The L1 lookup needs no allocated key; everything after a miss (or a due refresh) does.
    let lookup = key::LookupKey::new(ke.key_prefix.as_deref(), &inner.prefix, kind, key);
    let mut stale = None;
    if ke.cfg.tier_routing().l1() {
        let found = inner.l1.get(&lookup).await;
        let l1 = l1_found::<T>(inner, ke, &lookup, found);
        if let Some(v) = l1.fresh {
            let due =
                |a: &Age| refresh::is_due(&policy, *a, unix_ms(), refresh::loader_time(&ke.stats));
            if let Some(age) = l1.age.filter(|a| policy.refreshes() && due(a)) {
                let full = lookup.to_full();
                spawn_refresh(
                    inner,
                    ke,
                    &full,
                    (opts, fresh, failure),
                    v.clone(),
                    age.created_ms,
                    make(),
                );
            }
            return Ok(v);
        }
        if let (Some(s), Some(_)) = (&l1.stale, policy.soft_timeout) {
            if inner.refreshing.is_claimed(&lookup.to_full()) {
                // A load of this key is finishing in the background after its soft timeout.
                KindStats::inc(&ke.stats.soft_timeouts);
                provenance::note_stale_served();
                inner
                    .events
                    .stale_served(At::Lookup(&lookup), StaleCause::SoftTimeout);
                return Ok(s.clone());
            }
        }
        stale = l1.stale;
    }
    // Boxed, as in `get_or_load_with`: a hit does not carry the miss path's state machine (nor
    // the full key, which lives in the box).
    let full = lookup.into_full_key();
    Box::pin(async move {
        let fresh_failure = (fresh, failure);
        miss(inner, ke, &full, opts, fresh_failure, stale, Lazy(make)).await
    })
    .await
}

// ---- L1 -----------------------------------------------------------------------------------------

/// What an L1 lookup found.
struct L1Found<T> {
    fresh: Option<Arc<T>>,
    /// An entry past its freshness (a fail-safe fallback).
    stale: Option<Arc<T>>,
    /// The age of the fresh value.
    age: Option<Age>,
}

/// Classifies what an L1 lookup of `key` found and counts the hit, or the miss and its reason.
/// Not `async` (hot paths await moka directly): one state machine less per hit.
fn l1_found<T: Send + Sync + 'static>(
    inner: &Inner,
    ke: &KindEntry,
    key: &key::LookupKey<'_>,
    found: Option<L1Entry>,
) -> L1Found<T> {
    let none = L1Found {
        fresh: None,
        stale: None,
        age: None,
    };
    let Some(found) = found else {
        l1_absent(inner, ke, key);
        return none;
    };
    // A dead entry (its kind was dropped, or everything was) was cleared; a value stored as
    // another type is a mismatch.
    let Some(entry) = inner.l1.live(Some(found)) else {
        ke.stats.l1_miss(MissReason::Rejected);
        inner
            .events
            .miss(At::Lookup(key), Tier::L1, MissReason::Rejected);
        return none;
    };
    let Some(v) = entry.value::<T>() else {
        ke.stats.l1_miss(MissReason::Mismatch);
        inner
            .events
            .miss(At::Lookup(key), Tier::L1, MissReason::Mismatch);
        return none;
    };
    let tag_invalidated = entry
        .tags()
        .is_some_and(|(tags, loaded_at)| inner.coherence.tags_invalidated_since(tags, loaded_at));
    if tag_invalidated {
        ke.stats.l1_miss(MissReason::Rejected);
        inner
            .events
            .miss(At::Lookup(key), Tier::L1, MissReason::Rejected);
        return none;
    }
    // Without a grace period an entry's L1 lifetime is its freshness, and moka never returns an
    // expired entry: no clock read needed.
    if inner.l1.grace().is_zero() || entry.is_fresh(Instant::now()) {
        KindStats::inc(&ke.stats.l1_hits);
        inner.events.hit(At::Lookup(key), Tier::L1);
        provenance::note(Source::L1, entry.created_ms());
        return L1Found {
            fresh: Some(v),
            stale: None,
            age: Some(entry.age()),
        };
    }
    ke.stats.l1_miss(MissReason::Expired);
    inner
        .events
        .miss(At::Lookup(key), Tier::L1, MissReason::Expired);
    let written_ago = unix_ms().saturating_sub(entry.created_ms());
    ke.stats
        .reread_after_expiry
        .record(Duration::from_millis(written_ago));
    provenance::note_stale_candidate(entry.created_ms());
    L1Found {
        fresh: None,
        stale: Some(v),
        age: None,
    }
}

/// Counts an L1 miss of a key L1 does not hold, with the reason its departure says (if L1 still
/// knows why it left) and how soon it came back.
#[cold]
fn l1_absent(inner: &Inner, ke: &KindEntry, key: &key::LookupKey<'_>) {
    let why = match inner.l1.departed(key) {
        None => MissReason::Absent,
        Some(d) => match d.cause {
            Cause::Evicted => {
                ke.stats.reread_after_eviction.record(d.ago);
                MissReason::Evicted
            }
            Cause::Expired => {
                ke.stats.reread_after_expiry.record(d.written_ago);
                MissReason::Expired
            }
            Cause::Removed => MissReason::Rejected,
        },
    };
    ke.stats.l1_miss(why);
    inner.events.miss(At::Lookup(key), Tier::L1, why);
}

/// Copies a value found in L2 into L1 (if the kind uses it), unless `ticket` was superseded.
async fn copy_to_l1<T: Serialize + Send + Sync + 'static>(
    inner: &Inner,
    ke: &KindEntry,
    ticket: &Ticket,
    found: &Found<T>,
    read_at: Instant,
) {
    let value = found.value.clone();
    fill_l1(inner, ke, ticket, value, &found.tags, read_at, found.age).await;
}

/// Puts a value into L1 if the kind uses it, for as long as `age` leaves it fresh (within the
/// limits of [`Coherence::l1_lifetime`](crate::coherence::Coherence::l1_lifetime)), unless
/// `ticket` was superseded: what loads, reads, writes and warming put into L1 goes through here.
pub(crate) async fn fill_l1<T: Serialize + Send + Sync + 'static>(
    inner: &Inner,
    ke: &KindEntry,
    ticket: &Ticket,
    value: Arc<T>,
    tags: &[String],
    loaded_at: Instant,
    age: Age,
) {
    if !ke.cfg.tier_routing().l1() {
        return;
    }
    let fresh_for = inner.coherence.l1_lifetime(
        age.remaining(unix_ms()),
        ke.cfg.l1_ttl_cap(),
        !tags.is_empty(),
    );
    let value_heap = heap_bytes(&*value);
    let entry = NewEntry {
        value,
        value_heap,
        fresh_for,
        loaded_at,
        tags,
        age,
    };
    inner.coherence.store_local(ticket, ke.id, entry).await;
}

// ---- L2 -----------------------------------------------------------------------------------------

/// The fingerprint of the kind's entries of `T`: of the call's schema, else the kind's, else the
/// type name (see `KindConfig::schema`).
pub(crate) fn fingerprint<T>(ke: &KindEntry, opts: Option<&EntryOptions>) -> u64 {
    let schema = opts
        .and_then(EntryOptions::schema_id)
        .or(ke.cfg.schema_id());
    crate::codec::fingerprint::<T>(schema)
}

/// Reads `full` from L2 (`lease`: for a load that will write back) and copies a fresh value into
/// L1 while `ticket` (taken on `full` before the read) is current; without a ticket (a kind kept
/// only in L2) nothing goes to L1. Records provenance.
async fn read<T>(
    inner: &Inner,
    ke: &KindEntry,
    (full, ticket): (&str, Option<&Ticket>),
    fp: u64,
    lease: bool,
) -> L2Read<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let Some(entries) = inner.entries_for(ke) else {
        return L2Read::Miss(None);
    };
    let started = Instant::now();
    let r = entries.read::<T>(ke, full, fp, lease).await;
    match &r {
        L2Read::Fresh(found) => {
            provenance::note(Source::L2, found.age.created_ms);
            if let Some(ticket) = ticket {
                copy_to_l1(inner, ke, ticket, found, started).await;
            }
        }
        L2Read::Stale(found) => provenance::note_stale_candidate(found.age.created_ms),
        L2Read::Miss(_) | L2Read::Leased(_) | L2Read::Unavailable => {}
    }
    r
}

/// What the plain read of L2 that a load starts with found.
enum First<T> {
    /// A fresh value: the answer (copied into L1).
    Fresh(Arc<T>),
    /// L2 could not be read: the load does not wait for it a second time.
    Unavailable,
    /// Nothing to serve: load (lease, lock, loader, write-back).
    Load,
}

/// The first step of a load: a plain `GET` of `ticket`'s key. An L2 hit needs no lease, no lock
/// and no loader, so it costs one `GET`, as `get`, not a leasing `SET ... NX GET`; the race
/// guards are those of `get` (the value is copied into L1 only while the ticket is current).
/// Made by the flight's lead, so that concurrent callers of a cold key still send one read. A
/// value due for an eager refresh is left to the load (it starts the refresh).
///
/// Only a hit is counted here: anything else is counted by the load's own read, so that a
/// lookup counts once.
async fn l2_first<T>(
    inner: &Inner,
    ke: &KindEntry,
    ticket: &Ticket,
    fp: u64,
    policy: &crate::freshness::Resolved,
) -> First<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let Some(entries) = inner.entries_for(ke) else {
        return First::Load;
    };
    let started = Instant::now();
    let not_due = |found: &Found<T>| {
        !(policy.refreshes()
            && refresh::is_due(
                policy,
                found.age,
                unix_ms(),
                refresh::loader_time(&ke.stats),
            ))
    };
    let found = match entries.read_fresh::<T>(ke, ticket.key(), fp, not_due).await {
        Ok(Some(found)) => found,
        Ok(None) => return First::Load,
        Err(()) => return First::Unavailable,
    };
    provenance::note(Source::L2, found.age.created_ms);
    copy_to_l1(inner, ke, ticket, &found, started).await;
    First::Fresh(found.value)
}

// ---- Loads --------------------------------------------------------------------------------------

/// A miss of `full`: one load per key and state, shared by every concurrent caller.
async fn miss<T, E, L>(
    inner: &Arc<Inner>,
    ke: &Arc<KindEntry>,
    full: &str,
    opts: &EntryOptions,
    (fresh, failure): (Freshness, Failure<E>),
    stale: Option<Arc<T>>,
    loader: L,
) -> Result<Arc<T>, LazyError<E, L::TimedOut>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Send + Sync + 'static,
    L: Loader<T, E>,
{
    // One load per key and state among concurrent callers (`flight`). The key's state is part of
    // the flight's identity, so a caller arriving after an invalidation never joins a load that
    // began before it. A lead that gives up (its caller was cancelled) lets its followers join
    // again.
    let policy = fresh.resolve(ke.cfg.freshness());
    let fp = fingerprint::<T>(ke, Some(opts));
    loop {
        let ticket = inner.coherence.gens.begin(full);
        // Callers that miss while the key is being refreshed share a flight of their own (a load
        // finishing in the background after its soft timeout has none: they are served its stale
        // value on the L1 path, or load).
        let flight = (ticket.state(), inner.refreshing.is_claimed(full));
        let key = ticket.shared_key().clone();
        match inner.flights.join::<Led<T, E, L::TimedOut>>(&key, flight) {
            Role::Lead(lead) => {
                // What the load found travels with its outcome to every caller of the flight.
                let led = Arc::new(
                    provenance::capture(async {
                        let l2_down = match l2_first::<T>(inner, ke, &ticket, fp, &policy).await {
                            First::Fresh(v) => return Outcome::Value(v),
                            First::Unavailable => true,
                            First::Load => false,
                        };
                        let opts = (opts, fresh, failure);
                        let mode = LoadMode::Miss;
                        load(inner, ke, ticket, opts, (stale, l2_down), loader, mode).await
                    })
                    .await,
                );
                lead.complete(led.clone());
                return answer(&led);
            }
            Role::Follow(follow) => {
                drop(ticket);
                if let Some(led) = follow.outcome().await {
                    return answer(&led);
                }
            }
        }
    }
}

/// What a load (and its provenance) gives every caller of its flight.
pub(crate) type Led<T, E, X> = Arc<(Outcome<T, E, X>, Trace)>;

/// The answer of a caller of a flight, its lead's too.
fn answer<T, E, X: Clone>(led: &(Outcome<T, E, X>, Trace)) -> Result<Arc<T>, LazyError<E, X>> {
    match led {
        (Outcome::Value(v), trace) => {
            // The load ran in a provenance slot of its own: its records become this caller's.
            provenance::joined(*trace);
            Ok(v.clone())
        }
        (Outcome::Failed(e), _) => Err(LazyError::Loader(e.clone())),
        (Outcome::TimedOut(x), _) => Err(LazyError::TimedOut(x.clone())),
    }
}

/// One load (inside its flight): L2, then the distributed lock if enabled, then the loader, then
/// the guarded write-back. `stale` is a fail-safe fallback found in L1.
async fn load<T, E, L>(
    inner: &Arc<Inner>,
    ke: &Arc<KindEntry>,
    ticket: Ticket,
    (opts, fresh, failure): (&EntryOptions, Freshness, Failure<E>),
    (mut stale, l2_down): (Option<Arc<T>>, bool),
    loader: L,
    mode: LoadMode<T>,
) -> Outcome<T, E, L::TimedOut>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Send + Sync + 'static,
    L: Loader<T, E>,
{
    let started = Instant::now();
    let policy = fresh.resolve(ke.cfg.freshness());
    // A refresh serves the current value to callers that join it past its soft timeout, and also
    // after a failure when fail-safe is on.
    let (current, refreshed_from, claim) = match mode {
        LoadMode::Miss => (None, None, None),
        LoadMode::Refresh {
            current,
            created_ms,
            claim,
        } => {
            if !inner.l1.grace().is_zero() {
                stale = stale.or_else(|| Some(current.clone()));
            }
            (Some(current), Some(created_ms), Some(claim))
        }
    };
    // What the write-back may replace: exactly what L2 held when this load began (or the lease it
    // put there). If L2 could not be read, nothing is written back (the read's deadline was the
    // caller's only wait); nor when the read found nothing it may replace (Redis refuses writes,
    // another type under the key).
    let uses_l2 = inner.entries_for(ke).is_some();
    let fp = fingerprint::<T>(ke, Some(opts));
    // A load that can store nothing (a zero TTL) reads without leasing: no Redis write at all.
    let lease = !opts.never_stores();
    // `l2_down`: the caller's own read of L2 just now failed; a second deadline is not waited.
    let found = if l2_down {
        L2Read::Unavailable
    } else {
        read::<T>(inner, ke, (ticket.key(), Some(&ticket)), fp, lease).await
    };
    let write = match found {
        L2Read::Fresh(found) => match refreshed_from {
            None => {
                let due = policy.refreshes()
                    && refresh::is_due(
                        &policy,
                        found.age,
                        unix_ms(),
                        refresh::loader_time(&ke.stats),
                    );
                if due {
                    if let Ok(owned) = loader.into_owned() {
                        spawn_refresh(
                            inner,
                            ke,
                            ticket.key(),
                            (opts, fresh, failure),
                            found.value.clone(),
                            found.age.created_ms,
                            owned,
                        );
                    }
                }
                return Outcome::Value(found.value);
            }
            // Refreshed already (by another instance, or a load since).
            Some(created) if found.age.created_ms > created => return Outcome::Value(found.value),
            Some(_) => Some(Write::IfUnchanged {
                seen: found.seen,
                leased: false,
            }),
        },
        L2Read::Stale(found) => {
            stale = stale.or(Some(found.value));
            Some(Write::IfUnchanged {
                seen: found.seen,
                leased: false,
            })
        }
        L2Read::Miss(seen) => seen.map(|seen| Write::IfUnchanged {
            seen,
            leased: false,
        }),
        L2Read::Leased(lease) => Some(Write::IfUnchanged {
            seen: lease,
            leased: true,
        }),
        L2Read::Unavailable => None,
    };
    let mut lock = None;
    if policy.lock && (!uses_l2 || write.is_none()) {
        // No L2, or it could not be read (unreachable, breaker open): no lock to take, load
        // locally.
        KindStats::inc(&ke.stats.lock_fallbacks);
    } else if policy.lock {
        // A refresh does not wait: if another instance holds the lock, it is refreshing.
        let answer = match lock_step::<T>(inner, ke, &ticket, fp, refreshed_from.is_none()).await {
            LockOutcome::Acquired(guard) => {
                lock = Some(guard);
                None
            }
            LockOutcome::Filled(v) => Some(v),
            LockOutcome::Busy => current.clone(),
            LockOutcome::Fallback => None,
        };
        if let Some(v) = answer {
            // Answered without loading: a lease this load put in L2 is released.
            if let Some(Write::IfUnchanged { seen, leased: true }) = &write {
                release_lease(inner, ke, ticket.key(), seen).await;
            }
            return Outcome::Value(v);
        }
    }
    // The tokens of the entry's tags as of now, before the loader runs.
    let tokens = match (inner.entries_for(ke), &write) {
        _ if !lease => Err(NoTokens::NOT_READ),
        (Some(entries), Some(_)) => entries.tag_tokens(ke, opts.tag_list()).await,
        _ => Err(NoTokens::NOT_READ),
    };
    // Their read timed out (or L2 is out): this load has waited its one L2 deadline and writes
    // nothing back; its lease, if it took one, is left to expire rather than released with a
    // second round trip that would wait again.
    let write = match tokens {
        Err(NoTokens { outage: true }) => None,
        _ => write,
    };
    KindStats::inc(&ke.stats.loader_calls);
    let job = LoadJob {
        ke: ke.clone(),
        ticket,
        opts: opts.clone(),
        tokens,
        write,
        started,
        loader_started: Instant::now(),
        lock,
        claim,
        refresh: refreshed_from.is_some(),
    };
    let fallback = stale.clone().or(current);
    let timeouts = Timeouts {
        soft: policy.soft_timeout.zip(fallback),
        hard: policy.hard_timeout,
    };
    let detach = Background {
        inner: inner.clone(),
        failure,
    };
    match loader.run(job, timeouts, detach).await {
        Run::Done(job, Ok(v)) => {
            provenance::note_loaded();
            let v = Arc::new(v);
            finish_ok(inner, job, v.clone()).await;
            Outcome::Value(v)
        }
        Run::Done(job, Err(e)) if !failure(&e) => {
            // Returned uncached: the answer of this call, not a reason to serve a stale value.
            finish_uncached(inner, job).await;
            Outcome::Failed(Arc::new(e))
        }
        Run::Done(job, Err(e)) => {
            let name = job.ke.name.clone();
            let entry = inner.events.entry_if_listening(At::Full(job.ticket.key()));
            finish_failed(inner, job, false).await;
            match stale {
                Some(s) => {
                    KindStats::inc(&ke.stats.stale_served);
                    provenance::note_stale_served();
                    inner
                        .events
                        .stale_served_entry(entry, StaleCause::LoaderFailed);
                    tracing::debug!(kind = %name, "loader failed: serving the stale value (fail-safe)");
                    Outcome::Value(s)
                }
                None => Outcome::Failed(Arc::new(e)),
            }
        }
        Run::TimedOut(job, x) => {
            let entry = inner.events.entry_if_listening(At::Full(job.ticket.key()));
            finish_failed(inner, job, true).await;
            match stale {
                Some(s) => {
                    KindStats::inc(&ke.stats.stale_served);
                    provenance::note_stale_served();
                    inner
                        .events
                        .stale_served_entry(entry, StaleCause::HardTimeout);
                    Outcome::Value(s)
                }
                None => Outcome::TimedOut(x),
            }
        }
        Run::Detached(s) => {
            provenance::note_stale_served();
            Outcome::Value(s)
        }
    }
}

/// Finishes loads that went on in the background past their soft timeout.
struct Background<E> {
    inner: Arc<Inner>,
    failure: Failure<E>,
}

impl<T, E> Detach<T, E, LoadJob> for Background<E>
where
    T: Serialize + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    fn detach(self, mut job: LoadJob, rest: Rest<T, E>) {
        KindStats::inc(&job.ke.stats.soft_timeouts);
        self.inner
            .events
            .stale_served(At::Full(job.ticket.key()), StaleCause::SoftTimeout);
        tracing::debug!(kind = %job.ke.name,
            "loader past its soft timeout: serving the stale value, finishing in the background");
        if job.claim.is_none() {
            // Callers holding a stale value serve it instead of loading again.
            job.claim = self.inner.refreshing.claim(job.ticket.key());
        }
        tokio::spawn(async move {
            match rest.await {
                Some(Ok(v)) => finish_ok(&self.inner, job, Arc::new(v)).await,
                Some(Err(e)) if !(self.failure)(&e) => finish_uncached(&self.inner, job).await,
                Some(Err(_)) => finish_failed(&self.inner, job, false).await,
                None => finish_failed(&self.inner, job, true).await,
            }
        });
    }
}

/// Stores a loaded value (under the load's guards) and releases the load's lock.
async fn finish_ok<T>(inner: &Inner, job: LoadJob, value: Arc<T>)
where
    T: Serialize + Send + Sync + 'static,
{
    refresh::record_loader_time(&job.ke.stats, job.loader_started.elapsed());
    inner.events.load(
        At::Full(job.ticket.key()),
        job.loader_started,
        LoadOutcome::Loaded,
        job.cause(),
    );
    let ttl = job
        .opts
        .entry_ttl(&*value, job.ke.cfg.ttl(), inner.jitter(&job.ke));
    let l2_down = job.l2_down();
    let mut ticket = job.ticket;
    let outage = store(
        inner,
        &job.ke,
        &mut ticket,
        value,
        StoreSpec {
            fp: fingerprint::<T>(&job.ke, Some(&job.opts)),
            ttl,
            tags: job.opts.tag_list(),
            tokens: job.tokens.as_deref().map_err(|no| *no),
            write: job.write,
            loaded_at: job.started,
        },
    )
    .await;
    release(inner, ticket.key(), job.lock, l2_down || outage).await;
}

/// Counts a failed (or timed-out) loader call and releases the load's lock.
async fn finish_failed(inner: &Inner, job: LoadJob, timed_out: bool) {
    job.ke
        .stats
        .loader_latency
        .record(job.loader_started.elapsed());
    let outcome = if timed_out {
        LoadOutcome::TimedOut
    } else {
        LoadOutcome::Failed
    };
    inner.events.load(
        At::Full(job.ticket.key()),
        job.loader_started,
        outcome,
        job.cause(),
    );
    if timed_out {
        KindStats::inc(&job.ke.stats.hard_timeouts);
        tracing::debug!(kind = %job.ke.name, "loader abandoned at its hard timeout");
    } else {
        KindStats::inc(&job.ke.stats.loader_errors);
    }
    if job.refresh {
        KindStats::inc(&job.ke.stats.refresh_failures);
    }
    if let Some(Write::IfUnchanged { seen, leased: true }) = &job.write {
        release_lease(inner, &job.ke, job.ticket.key(), seen).await;
    }
    let l2_down = job.l2_down();
    release(inner, job.ticket.key(), job.lock, l2_down).await;
}

/// Ends a load whose output is returned uncached: its lease and lock are released. A refresh's
/// entry is dropped everywhere: its fresh answer says the value it holds is no longer the answer.
async fn finish_uncached(inner: &Inner, job: LoadJob) {
    refresh::record_loader_time(&job.ke.stats, job.loader_started.elapsed());
    inner.events.load(
        At::Full(job.ticket.key()),
        job.loader_started,
        LoadOutcome::Uncached,
        job.cause(),
    );
    if let Some(Write::IfUnchanged { seen, leased: true }) = &job.write {
        release_lease(inner, &job.ke, job.ticket.key(), seen).await;
    }
    let l2_down = job.l2_down();
    release(inner, job.ticket.key(), job.lock, l2_down).await;
    if job.refresh {
        let uses_l2 = inner.entries_for(&job.ke).is_some();
        inner
            .coherence
            .invalidate_key(&job.ke.stats, job.ticket.key(), uses_l2)
            .await;
    }
}

/// Releases the lease a load put under `full` when it stores nothing.
async fn release_lease(inner: &Inner, ke: &KindEntry, full: &str, lease: &[u8]) {
    if let Some(entries) = inner.entries_for(ke) {
        entries.release_lease(ke, full, lease).await;
    }
}

/// Releases a load's distributed lock, wakes this instance's waiters and tells the others.
///
/// After an outage met by the load (`l2_down`) the caller waits for no further round trip: the
/// lock is released in the background (it expires by itself if that fails too) and no `loaded`
/// notice is sent (nothing was written; the other instances' waiters find the lock free when they
/// next poll, or stop waiting when L2 cannot be read).
async fn release(inner: &Inner, full: &str, lock: Option<LockGuard>, l2_down: bool) {
    if let Some(lock) = lock {
        if l2_down {
            // `LockGuard`'s drop releases it in a task of its own.
            drop(lock);
            inner.coherence.lock_waiters.wake(full);
            return;
        }
        lock.release().await;
        inner.coherence.lock_waiters.wake(full);
        inner.coherence.publish(Message::Loaded(full)).await;
    }
}

/// The lock step of a load that missed in both tiers (see the `lock` module).
async fn lock_step<T>(
    inner: &Inner,
    ke: &KindEntry,
    ticket: &Ticket,
    fp: u64,
    wait: bool,
) -> LockOutcome<Arc<T>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let Some(l2) = inner.l2.as_ref() else {
        return LockOutcome::Fallback;
    };
    let full = ticket.key();
    let req = LockRequest {
        l2,
        waiters: &inner.coherence.lock_waiters,
        stats: &ke.stats,
        key: lock::lock_key(&inner.prefix, full),
        full,
        ttl: inner.lock_ttl,
        wait_bound: inner.lock_wait,
        wait,
    };
    lock::acquire(req, || async {
        match read::<T>(inner, ke, (ticket.key(), Some(ticket)), fp, false).await {
            L2Read::Fresh(found) => Poll::Filled(found.value),
            L2Read::Unavailable => Poll::Unavailable,
            L2Read::Stale(..) | L2Read::Miss(_) | L2Read::Leased(_) => Poll::Waiting,
        }
    })
    .await
}

/// Starts a background refresh of `full` unless one is running already. `current` is the value
/// being served (the refresh's stale fallback) and `created_ms` when it was written.
fn spawn_refresh<T, E, H>(
    inner: &Arc<Inner>,
    ke: &Arc<KindEntry>,
    full: &str,
    (opts, fresh, failure): (&EntryOptions, Freshness, Failure<E>),
    current: Arc<T>,
    created_ms: u64,
    loader: OwnedLoader<T, E, H>,
) where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Send + Sync + 'static,
    H: HardTimeout,
{
    let Some(claim) = inner.refreshing.claim(full) else {
        return;
    };
    KindStats::inc(&ke.stats.refreshes);
    tracing::debug!(kind = %ke.name, "eager refresh started");
    let ticket = inner.coherence.gens.begin(full);
    let (inner, ke, opts) = (inner.clone(), ke.clone(), opts.clone());
    tokio::spawn(async move {
        let mode = LoadMode::Refresh {
            current,
            created_ms,
            claim,
        };
        // Through the single-flight registry, so that one refresh of the key runs at a time. (Its
        // outcome type is not a caller's: callers that miss meanwhile share their own load.)
        let (key, flight) = (ticket.shared_key().clone(), (ticket.state(), true));
        if let Role::Lead(lead) = inner.flights.join::<Arc<Outcome<T, E, H>>>(&key, flight) {
            let opts = (&opts, fresh, failure);
            let out = load(&inner, &ke, ticket, opts, (None, false), loader, mode).await;
            lead.complete(Arc::new(out));
        }
    });
}

// ---- Writes -------------------------------------------------------------------------------------

/// How [`store`] writes a value.
pub(crate) struct StoreSpec<'a> {
    /// The fingerprint its entry carries ([`fingerprint`]).
    pub(crate) fp: u64,
    pub(crate) ttl: Duration,
    /// Its tags, and their current tokens (without them, no L2 write).
    pub(crate) tags: &'a [String],
    pub(crate) tokens: Result<&'a [TagVersion], NoTokens>,
    /// How to write it to L2 (`None`: not at all).
    pub(crate) write: Option<Write>,
    /// When the load that produced it (or the write) began.
    pub(crate) loaded_at: Instant,
}

/// Stores a value in the kind's tiers: the write-back of a load (`write`: compare-and-set against
/// what it read) or a `set` (`Write::Overwrite`, with the write's ticket). `None`: L2 could not be
/// read, so it is not written.
///
/// - L2: a load's compare-and-set decides for itself; a `set` is skipped only when this instance
///   wrote or invalidated the key since it began (news from elsewhere may be late news of an older
///   write, and never cancels a `set`). A `set` whose value does not reach L2 must not leave the
///   older value there for other instances: it is deleted (a refusal) or its invalidation queued
///   (an outage).
/// - L1: unless the ticket was superseded since (checked again after the insert), or a load's
///   compare-and-set found L2 changed (the value may be older than what replaced it there).
///
/// Returns whether the L2 write failed as an outage (the caller then waits for no further round
/// trip of its own).
pub(crate) async fn store<T>(
    inner: &Inner,
    ke: &KindEntry,
    ticket: &mut Ticket,
    value: Arc<T>,
    spec: StoreSpec<'_>,
) -> bool
where
    T: Serialize + Send + Sync + 'static,
{
    let StoreSpec {
        fp,
        ttl,
        tags,
        tokens,
        write,
        loaded_at,
    } = spec;
    let overwrite = matches!(write, Some(Write::Overwrite));
    // What must happen in L2 if the value does not reach it.
    let unwritten = match &write {
        Some(Write::Overwrite) => Unwritten::Set,
        Some(Write::IfUnchanged { seen, leased: true }) => Unwritten::Lease(seen.clone()),
        _ => Unwritten::Nothing,
    };
    if ttl.is_zero() {
        // Stored nowhere. A `set` with a zero TTL removes the key everywhere (the older value
        // must not stay), like an invalidation; a load's lease is released.
        if inner.entries_for(ke).is_some() {
            unwritten.apply(inner, ke, ticket.key(), false).await;
        }
        if overwrite {
            inner.coherence.drop_local(ticket.key(), Origin::Here).await;
        }
        return false;
    }
    let mut outage = false;
    if let Some(entries) = inner.entries_for(ke) {
        let began = inner.coherence.write_began();
        match (write, tokens) {
            (None, _) => KindStats::inc(&ke.stats.l2_skipped),
            // Tags without their tokens: the entry could not be checked against tag
            // invalidations. After an outage nothing more is sent (a `set`'s invalidation is
            // queued, as when its write fails): the caller waited its one deadline already.
            (Some(_), Err(no)) => {
                KindStats::inc(&ke.stats.l2_skipped);
                outage = no.outage;
                unwritten.apply(inner, ke, ticket.key(), no.outage).await;
            }
            (Some(Write::Overwrite), _) if ticket.superseded_here() => {}
            (Some(_), Ok(_)) if entries.l2().breaker.is_rejecting() => {
                // Breaker open: dropped (and counted) before any encoding work.
                entries.l2().breaker.count_rejected();
                KindStats::inc(&ke.stats.l2_skipped);
                unwritten.apply(inner, ke, ticket.key(), true).await;
            }
            (Some(how), Ok(tokens)) => {
                match entries.encode(ke, ticket.key(), &*value, fp, ttl, tokens) {
                    None => unwritten.apply(inner, ke, ticket.key(), false).await,
                    Some(encoded) => {
                        match entries.write(ke, ticket.key(), &encoded, &how).await {
                            Written::Stored if overwrite => {
                                inner.coherence.written(ticket.key(), began);
                                // Loads of the key that read L2 before this write must not fill L1
                                // with the older value.
                                ticket.supersede_others();
                            }
                            Written::Stored => {}
                            // L2 no longer holds what the load read: an invalidation, a write or a
                            // load elsewhere replaced it (or it was evicted). The loaded value may be
                            // older than that: not kept here either.
                            Written::Conflict => return false,
                            Written::Failed { outage: out } => {
                                outage = out;
                                unwritten.apply(inner, ke, ticket.key(), out).await
                            }
                        }
                    }
                }
            }
        }
    }
    fill_l1(
        inner,
        ke,
        ticket,
        value,
        tags,
        loaded_at,
        Age::starting_now(ttl),
    )
    .await;
    outage
}

/// What a value that did not reach L2 leaves to do there.
enum Unwritten {
    /// A load's write-back over what it read: nothing (the next read misses).
    Nothing,
    /// A load's write-back over its own lease: release the lease.
    Lease(Vec<u8>),
    /// A `set`: the older value must not stay there for other instances. It is deleted, or (L2
    /// out) its invalidation is queued.
    Set,
}

impl Unwritten {
    async fn apply(&self, inner: &Inner, ke: &KindEntry, full: &str, outage: bool) {
        match self {
            Unwritten::Nothing => {}
            Unwritten::Lease(lease) if !outage => release_lease(inner, ke, full, lease).await,
            Unwritten::Lease(_) => {}
            Unwritten::Set => {
                let removed = match (outage, inner.entries_for(ke)) {
                    (false, Some(entries)) => entries.remove(ke, full).await,
                    _ => false,
                };
                if !removed {
                    inner.coherence.queue(PendingOp::Key(full.to_owned()));
                }
            }
        }
    }
}

pub(crate) mod batch;

#[cfg(test)]
mod tests;
