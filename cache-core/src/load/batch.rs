//! The read path of many keys of one kind at once: [`Cache::get_many`](crate::Cache::get_many)
//! and [`Cache::get_or_load_many`](crate::Cache::get_or_load_many).
//!
//! ```text
//! keys ─► L1 ─hits─► values
//!          └rest─► one MGET (per master on a cluster) ─fresh─► L1 copies ─► values
//!                   └rest─► flights: keys another caller is loading are joined; the others are led:
//!                           one pipeline of SET NX GET (read and lease, as a single load)
//!                           ─► one loader call (the keys still missing) ─► one pipeline of
//!                           compare-and-set write-backs ─► L1 (unless superseded) ─► values
//! ```
//!
//! Each key keeps the guarantees of a single load: its ticket is taken before L2 is read, the
//! write-back compares against what the read saw (value, tombstone or the batch's own lease), L1
//! is filled only while the ticket is current, and single callers of the same keys join the
//! batch's flights (and the batch theirs), so a key is never loaded twice at once on an instance.

use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{answer, copy_to_l1, fill_l1, fingerprint, l1_found, Led, Outcome};
use crate::clock::Age;
use crate::coherence::Ticket;
use crate::entry_store::{L2Read, NoTokens, Written};
use crate::events::{At, LoadCause, LoadOutcome, StaleCause};
use crate::flight::{Follow, Lead, Role};
use crate::inner::Inner;
use crate::key;
use crate::kind::KindEntry;
use crate::loader::LazyError;
use crate::options::EntryOptions;
use crate::provenance::Trace;
use crate::refresh;
use crate::stats::KindStats;

/// What the L1 pass left to do: the distinct keys not fresh in L1 (duplicates merged), with the
/// first position each holds in the caller's list, their full keys and a stale value at hand (a
/// fail-safe fallback).
///
/// Only the keys L1 did not answer are merged: L1 is looked up at every position (a key asked
/// twice is looked up twice, as two `get`s would), so that a batch served from L1 hashes no key
/// twice and allocates nothing per key.
struct Rest<'k, T> {
    keys: Vec<&'k str>,
    /// The first position of each key in the caller's list.
    idx: Vec<usize>,
    fulls: Vec<String>,
    stale: Vec<Option<Arc<T>>>,
    /// Later positions of keys already in `keys`: (position, index in `keys`).
    dups: Vec<(usize, usize)>,
    /// Each key's index in `keys`.
    seen: HashMap<&'k str, usize>,
}

impl<'k, T> Rest<'k, T> {
    fn new() -> Self {
        Self {
            keys: Vec::new(),
            idx: Vec::new(),
            fulls: Vec::new(),
            stale: Vec::new(),
            dups: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// Adds the key at position `pos` (its full key made by `full` unless it is already there).
    fn add(
        &mut self,
        pos: usize,
        key: &'k str,
        full: impl FnOnce() -> String,
        stale: Option<Arc<T>>,
    ) {
        match self.seen.entry(key) {
            std::collections::hash_map::Entry::Occupied(j) => self.dups.push((pos, *j.get())),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self.keys.len());
                self.keys.push(key);
                self.idx.push(pos);
                self.fulls.push(full());
                self.stale.push(stale);
            }
        }
    }

    /// Copies each key's value to the later positions it holds.
    fn spread(&self, found: &mut [Option<Arc<T>>]) {
        for &(pos, j) in &self.dups {
            found[pos] = found[self.idx[j]].clone();
        }
    }
}

/// Looks every key up in L1 (counting hits and misses as single reads do); what L1 does not
/// answer is returned, duplicates merged.
async fn l1_pass<'k, T>(
    inner: &Inner,
    ke: &KindEntry,
    kind: &str,
    keys: &'k [impl AsRef<str>],
    found: &mut [Option<Arc<T>>],
) -> Rest<'k, T>
where
    T: Send + Sync + 'static,
{
    let mut rest = Rest::new();
    for (pos, k) in keys.iter().enumerate() {
        let k = k.as_ref();
        let lookup = key::LookupKey::new(ke.key_prefix.as_deref(), &inner.prefix, kind, k);
        let mut stale = None;
        if ke.cfg.tier_routing().l1() {
            let hit = inner.l1.get(&lookup).await;
            let l1 = l1_found::<T>(inner, ke, &lookup, hit);
            if let Some(v) = l1.fresh {
                found[pos] = Some(v);
                continue;
            }
            stale = l1.stale;
        }
        rest.add(pos, k, || lookup.to_full(), stale);
    }
    rest
}

/// One `MGET` for `rest`: fresh values go into `found` (and into L1 while the ticket taken before
/// the read is current). `count_misses`: the keys it leaves are counted as L2 misses (`get_many`;
/// a batch load counts them when it reads them again). Returns whether L2 could not be read.
async fn l2_pass<T>(
    inner: &Inner,
    ke: &KindEntry,
    (rest, count_misses): (&Rest<'_, T>, bool),
    fp: u64,
    found: &mut [Option<Arc<T>>],
) -> bool
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let Some(entries) = inner.entries_for(ke) else {
        return false;
    };
    // The tickets guard the L1 copies: a kind kept only in L2 needs none.
    let tickets: Vec<Ticket> = if ke.cfg.tier_routing().l1() {
        rest.fulls
            .iter()
            .map(|f| inner.coherence.gens.begin(f))
            .collect()
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let Ok(reads) = entries
        .read_fresh_many::<T>(ke, &rest.fulls, fp, count_misses)
        .await
    else {
        return true;
    };
    for (j, (r, &i)) in reads.into_iter().zip(&rest.idx).enumerate() {
        if let Some(f) = r {
            if let Some(ticket) = tickets.get(j) {
                copy_to_l1(inner, ke, ticket, &f, started).await;
            }
            found[i] = Some(f.value);
        }
    }
    false
}

/// `Cache::get_many`: L1, then one `MGET`; never a loader.
pub(crate) async fn get_many<T>(
    inner: &Arc<Inner>,
    kind: &str,
    keys: &[impl AsRef<str>],
) -> Vec<Option<Arc<T>>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let mut found = vec![None; keys.len()];
    if !inner.enabled || keys.is_empty() {
        return found;
    }
    let ke = inner.kinds.get(kind);
    let rest = l1_pass::<T>(inner, ke, kind, keys, &mut found).await;
    if !rest.idx.is_empty() {
        let fp = fingerprint::<T>(ke, None);
        let _ = Box::pin(l2_pass(inner, ke, (&rest, true), fp, &mut found)).await;
        rest.spread(&mut found);
    }
    found
}

/// The outcome a batch shares through a key's flight: the type single reads with a borrowed
/// loader use, so that they and batches join each other's loads.
type Shared<T, E> = Led<T, E, Infallible>;

/// `Cache::get_or_load_many_with`.
pub(crate) async fn get_or_load_many<T, E, F, Fut>(
    inner: &Arc<Inner>,
    kind: &str,
    keys: &[impl AsRef<str>],
    opts: &EntryOptions,
    mut loader: F,
) -> Result<Vec<Option<Arc<T>>>, Arc<E>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Send + Sync + 'static,
    F: FnMut(Vec<String>) -> Fut,
    Fut: Future<Output = Result<HashMap<String, T>, E>>,
{
    let mut found: Vec<Option<Arc<T>>> = vec![None; keys.len()];
    if keys.is_empty() {
        return Ok(found);
    }
    let ke = inner.kinds.get(kind);
    if !inner.enabled {
        let mut rest = Rest::new();
        for (pos, k) in keys.iter().enumerate() {
            rest.add(pos, k.as_ref(), String::new, None);
        }
        KindStats::inc(&ke.stats.loader_calls);
        let asked = rest.keys.iter().map(|k| (*k).to_owned()).collect();
        let mut map = loader(asked).await.map_err(|e| {
            KindStats::inc(&ke.stats.loader_errors);
            Arc::new(e)
        })?;
        for (k, &pos) in rest.keys.iter().zip(&rest.idx) {
            found[pos] = map.remove(*k).map(Arc::new);
        }
        rest.spread(&mut found);
        return Ok(found);
    }
    let rest = l1_pass::<T>(inner, ke, kind, keys, &mut found).await;
    if rest.idx.is_empty() {
        return Ok(found);
    }
    // Boxed, as the single miss path: the L1 pass does not carry the rest's state machine.
    Box::pin(async move {
        let fp = fingerprint::<T>(ke, Some(opts));
        let l2_down = l2_pass(inner, ke, (&rest, false), fp, &mut found).await;
        // The keys still missing, by position in `rest`.
        let mut todo: Vec<usize> = (0..rest.idx.len())
            .filter(|&j| found[rest.idx[j]].is_none())
            .collect();
        let mut failure = None;
        let mut loaded_once = false;
        while !todo.is_empty() {
            let mut leads = Vec::new();
            let mut follows = Vec::new();
            for &j in &todo {
                let full = &rest.fulls[j];
                let ticket = inner.coherence.gens.begin(full);
                let flight = (ticket.state(), inner.refreshing.is_claimed(full));
                let key = ticket.shared_key().clone();
                match inner.flights.join::<Shared<T, E>>(&key, flight) {
                    Role::Lead(lead) => leads.push(Led1 {
                        j,
                        key: rest.keys[j],
                        ticket,
                        lead,
                        write: None,
                    }),
                    Role::Follow(f) => follows.push((j, f)),
                }
            }
            // A key whose load another caller gave up on is led by this batch in the next round
            // (a second loader call, for those keys only).
            let led_now = !leads.is_empty();
            let stale = &rest.stale;
            let (led, joined) = futures::future::join(
                lead_keys(
                    inner,
                    ke,
                    opts,
                    fp,
                    (l2_down && !loaded_once, stale),
                    leads,
                    &mut loader,
                ),
                follow_keys(follows),
            )
            .await;
            loaded_once |= led_now;
            todo.clear();
            for (j, out) in led.into_iter().chain(joined) {
                match out {
                    Some(Ok(v)) => found[rest.idx[j]] = v,
                    Some(Err(e)) => failure = failure.or(Some(e)),
                    None => todo.push(j),
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => {
                rest.spread(&mut found);
                Ok(found)
            }
        }
    })
    .await
}

/// A key whose flight this batch leads.
struct Led1<'a, 'k, T: Send + Sync + 'static, E: Send + Sync + 'static> {
    /// Its position in `Rest`.
    j: usize,
    key: &'k str,
    ticket: Ticket,
    lead: Lead<'a, Shared<T, E>>,
    /// What its write-back compares against, and whether it is this batch's own lease.
    write: Option<(Vec<u8>, bool)>,
}

/// Per key (position in `Rest`): its value (`None`: the loader had none), the error of the load
/// it joined, or `None` to try again.
type KeyOut<T, E> = (usize, Option<Result<Option<Arc<T>>, Arc<E>>>);

/// Waits for the loads other callers lead.
async fn follow_keys<T, E>(follows: Vec<(usize, Follow<Shared<T, E>>)>) -> Vec<KeyOut<T, E>>
where
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let waits = follows.into_iter().map(|(j, f)| async move {
        let out = f.outcome().await.map(|led| match answer(&led) {
            Ok(v) => Ok(Some(v)),
            Err(LazyError::Loader(e)) => Err(e),
            Err(LazyError::TimedOut(never)) => match never {},
        });
        (j, out)
    });
    futures::future::join_all(waits).await
}

/// Loads the keys this batch leads: reads and leases them in one pipeline, calls the loader once
/// for those still missing, writes back in one pipeline, fills L1 and completes their flights.
async fn lead_keys<T, E, F, Fut>(
    inner: &Inner,
    ke: &Arc<KindEntry>,
    opts: &EntryOptions,
    fp: u64,
    (l2_down, stale): (bool, &[Option<Arc<T>>]),
    mut keys: Vec<Led1<'_, '_, T, E>>,
    loader: &mut F,
) -> Vec<KeyOut<T, E>>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Send + Sync + 'static,
    F: FnMut(Vec<String>) -> Fut,
    Fut: Future<Output = Result<HashMap<String, T>, E>>,
{
    let mut out = Vec::with_capacity(keys.len());
    if keys.is_empty() {
        return out;
    }
    let started = Instant::now();
    let entries = inner.entries_for(ke);
    let mut stale: Vec<Option<Arc<T>>> = keys.iter().map(|k| stale[k.j].clone()).collect();
    // Read and lease, as a single load does (a load that stores nothing reads without leasing:
    // with a zero TTL there is nothing to read either).
    if let (Some(entries), false) = (entries, l2_down || opts.never_stores()) {
        let fulls: Vec<String> = keys.iter().map(|k| k.ticket.key().to_owned()).collect();
        let reads = entries.read_many::<T>(ke, &fulls, fp, Duration::ZERO).await;
        let mut kept = Vec::with_capacity(keys.len());
        let mut kept_stale = Vec::with_capacity(keys.len());
        for ((mut k, r), s) in keys.into_iter().zip(reads).zip(stale) {
            let mut s = s;
            match r {
                L2Read::Fresh(found) => {
                    // Written meanwhile (another instance's load): the answer.
                    copy_to_l1(inner, ke, &k.ticket, &found, started).await;
                    let led = Arc::new((Outcome::Value(found.value.clone()), Trace::default()));
                    k.lead.complete(led);
                    out.push((k.j, Some(Ok(Some(found.value)))));
                    continue;
                }
                L2Read::Stale(found) => {
                    s = s.or(Some(found.value));
                    k.write = Some((found.seen, false));
                }
                L2Read::Miss(seen) => k.write = seen.map(|s| (s, false)),
                L2Read::Leased(lease) => k.write = Some((lease, true)),
                L2Read::Unavailable => k.write = None,
            }
            kept.push(k);
            kept_stale.push(s);
        }
        keys = kept;
        stale = kept_stale;
    }
    if keys.is_empty() {
        return out;
    }
    // The tokens of the entries' tags as of now, before the loader runs.
    let tokens = match entries {
        Some(entries) if keys.iter().any(|k| k.write.is_some()) => {
            entries.tag_tokens(ke, opts.tag_list()).await
        }
        _ => Err(NoTokens::NOT_READ),
    };
    if let Err(NoTokens { outage: true }) = tokens {
        // Their read timed out (or L2 is out): nothing is written back, and the leases are left
        // to expire rather than released key by key, each release waiting a deadline again.
        for k in &mut keys {
            k.write = None;
        }
    }
    KindStats::inc(&ke.stats.loader_calls);
    let loader_started = Instant::now();
    let asked: Vec<String> = keys.iter().map(|k| k.key.to_owned()).collect();
    let res = loader(asked).await;
    let took = loader_started.elapsed();
    let mut map = match res {
        Ok(map) => {
            refresh::record_loader_time(&ke.stats, took);
            map
        }
        Err(e) => {
            ke.stats.loader_latency.record(took);
            KindStats::inc(&ke.stats.loader_errors);
            let e = Arc::new(e);
            for (k, s) in keys.into_iter().zip(stale) {
                release_own_lease(inner, ke, &k).await;
                let at = At::Full(k.ticket.key());
                inner
                    .events
                    .loaded(at, took, LoadOutcome::Failed, LoadCause::Miss);
                let outcome = match s {
                    // Fail-safe: the stale value at hand, as a single load serves it.
                    Some(s) => {
                        KindStats::inc(&ke.stats.stale_served);
                        inner.events.stale_served(at, StaleCause::LoaderFailed);
                        Outcome::Value(s)
                    }
                    None => Outcome::Failed(e.clone()),
                };
                let mine = match &outcome {
                    Outcome::Value(v) => Ok(Some(v.clone())),
                    Outcome::Failed(e) => Err(e.clone()),
                    Outcome::TimedOut(never) => match *never {},
                };
                k.lead.complete(Arc::new((outcome, Trace::default())));
                out.push((k.j, Some(mine)));
            }
            return out;
        }
    };

    // What the loader gave (absent keys: negative-cached only when asked, as `None`).
    let jitter = inner.jitter(ke);
    let none = opts.none_ttl_set().then(absent_value::<T>).flatten();
    let mut stores = Vec::new();
    let mut writes = Vec::new();
    for k in keys {
        let at = At::Full(k.ticket.key());
        let value = match map.remove(k.key) {
            Some(v) => Arc::new(v),
            None => match &none {
                Some(none) => none.clone(),
                None => {
                    // Nothing to store: the key's followers load it themselves.
                    inner
                        .events
                        .loaded(at, took, LoadOutcome::Uncached, LoadCause::Miss);
                    release_own_lease(inner, ke, &k).await;
                    out.push((k.j, Some(Ok(None))));
                    continue;
                }
            },
        };
        inner
            .events
            .loaded(at, took, LoadOutcome::Loaded, LoadCause::Miss);
        let ttl = opts.entry_ttl(&*value, ke.cfg.ttl(), jitter);
        if ttl.is_zero() || !k.ticket.is_current() {
            // A zero TTL stores nothing; a load superseded by an invalidation or a write since it
            // began may be stale: its value is the answer of this call only, and stored nowhere.
            release_own_lease(inner, ke, &k).await;
            let led = Arc::new((Outcome::Value(value.clone()), Trace::default()));
            k.lead.complete(led);
            out.push((k.j, Some(Ok(Some(value)))));
            continue;
        }
        let encoded = match (entries, &k.write, &tokens) {
            (Some(entries), Some(_), Ok(tokens)) => {
                entries.encode(ke, k.ticket.key(), &*value, fp, ttl, tokens)
            }
            _ => None,
        };
        match encoded {
            Some(e) => {
                let (seen, _) = k.write.clone().unwrap_or_default();
                writes.push((k.ticket.key().to_owned(), seen, e));
                stores.push((k, value, ttl, true));
            }
            None => {
                release_own_lease(inner, ke, &k).await;
                stores.push((k, value, ttl, false));
            }
        }
    }
    // One pipeline of compare-and-set writes (per 128 keys / 1 MiB, per master on a cluster). A
    // write that found L2 changed keeps the value out of L1 too, as a single load's does.
    let mut results = Vec::new();
    if let (Some(entries), false) = (entries, writes.is_empty()) {
        results = entries.write_many(ke, writes).await.unwrap_or_default();
    }
    let mut results = results.into_iter();
    for (k, value, ttl, written) in stores {
        let conflict = written && matches!(results.next(), Some(Written::Conflict));
        if !conflict {
            let age = Age::starting_now(ttl);
            fill_l1(
                inner,
                ke,
                &k.ticket,
                value.clone(),
                opts.tag_list(),
                started,
                age,
            )
            .await;
        }
        let led = Arc::new((Outcome::Value(value.clone()), Trace::default()));
        k.lead.complete(led);
        out.push((k.j, Some(Ok(Some(value)))));
    }
    out
}

/// Releases the lease this batch put under a key that stores nothing.
async fn release_own_lease<T, E>(inner: &Inner, ke: &KindEntry, k: &Led1<'_, '_, T, E>)
where
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    if let (Some(entries), Some((lease, true))) = (inner.entries_for(ke), &k.write) {
        entries.release_lease(ke, k.ticket.key(), lease).await;
    }
}

/// The "absent" value of `T` when it has one (`None` of an `Option`, `()`...), which negative
/// caching stores for keys the loader did not return; `None` for other types.
fn absent_value<T: DeserializeOwned>() -> Option<Arc<T>> {
    // MessagePack's nil: what `None` (and only absent-like values) deserialize from.
    crate::codec::from_msgpack::<T>(&[0xc0]).ok().map(Arc::new)
}
