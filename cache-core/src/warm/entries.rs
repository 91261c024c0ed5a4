//! Warming entries in batches: the L2 protocol of a load (the entry store's read with leases, its
//! checks, and compare-and-set write-back), one pipeline per batch instead of one round trip per
//! key. Keys fresh in L1 or L2 are not loaded.

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{guarded, Ctx, JobResult, WarmFailure};
use crate::clock::Age;
use crate::coherence::Ticket;
use crate::entry_store::{L2Read, NoTokens, Written};
use crate::events::{At, LoadCause, LoadOutcome};
use crate::inner::Inner;
use crate::key;
use crate::kind::KindEntry;
use crate::l2::L2;
use crate::load::fill_l1;
use crate::options::EntryOptions;
use crate::stats::KindStats;

/// One entry of a batch on its way: its ticket (taken before looking at L2 or calling the loader,
/// as a load does), its loader until it runs, and what its write-back may replace.
struct Cold<F> {
    key: String,
    ticket: Ticket,
    loader: Option<F>,
    /// What the write-back compares against, and whether it is this batch's own lease.
    write: Option<(Vec<u8>, bool)>,
}

/// Warms one batch of entries of one kind (see [`Cache::warm_with`]): the same L2 protocol as a
/// load (the entry store's read with leases, checks and compare-and-set write-back), in pipelines.
pub(super) async fn warm_batch<T, E, F, Fut>(
    ctx: Arc<Ctx>,
    warmer: usize,
    kind: Arc<str>,
    opts: Arc<EntryOptions>,
    batch: Vec<(String, F)>,
) -> JobResult
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, E>> + Send,
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    E: Display + Send,
{
    let started = Instant::now();
    let inner = &*ctx.inner;
    let ke = inner.kinds.get(&kind);
    let mut out = JobResult {
        warmer,
        ..JobResult::default()
    };
    let mut cold: Vec<Cold<F>> = Vec::with_capacity(batch.len());
    for (key, loader) in batch {
        let full = key::full_key(&inner.prefix, &kind, &key);
        let ticket = inner.coherence.gens.begin(&full);
        if ke.cfg.tier_routing().l1() && l1_fresh::<T>(inner, &full).await {
            out.already_hot += 1;
            continue;
        }
        cold.push(Cold {
            key,
            ticket,
            loader: Some(loader),
            write: None,
        });
    }
    let entries = inner.entries_for(ke);
    let fp = crate::load::fingerprint::<T>(ke, Some(&opts));
    if let (Some(entries), false) = (entries, cold.is_empty()) {
        let fulls: Vec<String> = cold.iter().map(|c| c.ticket.key().to_owned()).collect();
        // The leases must outlive the batch's loaders. They share the plan's concurrency bound
        // (n permits, handed out in order) with the other jobs in flight (at most n, each at most
        // a batch of entries): at worst a batch's worth of deadlines pass before the last one ends.
        let lease_ttl = ctx.timeout.saturating_mul(L2::MANY_CHUNK_KEYS as u32);
        let reads = entries.read_many::<T>(ke, &fulls, fp, lease_ttl).await;
        for (c, r) in cold.iter_mut().zip(reads) {
            match r {
                L2Read::Fresh(found) => {
                    // Already fresh in L2: copied into L1, the loader is not called.
                    out.already_hot += 1;
                    c.loader = None;
                    let (value, tags) = (found.value, &found.tags);
                    fill_l1(inner, ke, &c.ticket, value, tags, started, found.age).await;
                }
                L2Read::Stale(found) => c.write = Some((found.seen, false)),
                L2Read::Miss(seen) => c.write = seen.map(|s| (s, false)),
                L2Read::Leased(lease) => c.write = Some((lease, true)),
                L2Read::Unavailable => c.write = None,
            }
        }
    }
    cold.retain(|c| c.loader.is_some());
    let hot_count = out.already_hot;

    // The tokens of the entries' tags, read before the loaders run.
    let tokens = match entries {
        Some(entries) if cold.iter().any(|c| c.write.is_some()) => {
            entries.tag_tokens(ke, opts.tag_list()).await
        }
        _ => Err(NoTokens::NOT_READ),
    };
    if let Err(NoTokens { outage: true }) = tokens {
        // Their read timed out (or L2 is out): nothing is written, and the leases are left to
        // expire rather than released one by one, each release waiting a deadline again.
        for c in &mut cold {
            c.write = None;
        }
    }

    // Run the loaders (the concurrency bound is the shared semaphore).
    let name = format!("entries({kind})");
    let in_flight = FuturesUnordered::new();
    for (i, c) in cold.iter_mut().enumerate() {
        if let Some(loader) = c.loader.take() {
            in_flight.push(load_one(&ctx, ke, i, loader));
        }
    }
    let loads: Vec<_> = in_flight.collect().await;

    // Encode what was loaded; drop what an invalidation superseded meanwhile.
    let jitter = inner.jitter(ke);
    let mut loaded: Vec<(usize, Instant, Arc<T>, Duration)> = Vec::new();
    let mut writes = Vec::new();
    // The entries of `writes`, in order.
    let mut written = Vec::new();
    // Leases of entries that store nothing (failed, superseded, not encodable) are released.
    let mut unused_leases = Vec::new();
    for (i, loaded_at, took, res) in loads {
        let c = &cold[i];
        if let Some((lease, true)) = &c.write {
            unused_leases.push((i, lease.clone()));
        }
        let at = At::Full(c.ticket.key());
        let value = match res {
            Ok(v) => {
                inner
                    .events
                    .loaded(at, took, LoadOutcome::Loaded, LoadCause::Warm);
                Arc::new(v)
            }
            Err((reason, timed_out)) => {
                let outcome = if timed_out {
                    LoadOutcome::TimedOut
                } else {
                    LoadOutcome::Failed
                };
                inner.events.loaded(at, took, outcome, LoadCause::Warm);
                KindStats::inc(&ke.stats.loader_errors);
                tracing::debug!(kind = %ke.name, key = %c.key, %reason, "warm loader failed");
                out.failed.push(WarmFailure {
                    warmer: name.clone(),
                    key: Some(c.key.clone()),
                    reason,
                    timed_out,
                });
                continue;
            }
        };
        out.warmed += 1;
        // Warming writes many entries at once: the jitter keeps them from expiring at once.
        let ttl = opts.entry_ttl(&*value, ke.cfg.ttl(), jitter);
        if !c.ticket.is_current() || ttl.is_zero() {
            // Invalidated (or set) while loading: the value may be stale; keep neither copy. A
            // zero TTL (from a TTL function) stores nothing, as on the read path.
            continue;
        }
        if let (Some(entries), Some((seen, _)), Ok(tokens)) = (entries, &c.write, &tokens) {
            if let Some(encoded) = entries.encode(ke, c.ticket.key(), &*value, fp, ttl, tokens) {
                writes.push((c.ticket.key().to_owned(), seen.clone(), encoded));
                written.push(i);
                unused_leases.retain(|(j, _)| *j != i);
            }
        }
        loaded.push((i, loaded_at, value, ttl));
    }

    // One pipeline (per 128 keys / 1 MiB) for the batch. A compare-and-set that found L2 changed
    // (invalidated, written or loaded elsewhere meanwhile) keeps the value out of L1 too, as a
    // load's write-back does.
    let mut conflict = vec![false; cold.len()];
    if let (Some(entries), false) = (entries, writes.is_empty()) {
        let count = writes.len() as u64;
        match entries.write_many(ke, writes).await {
            Ok(results) => {
                for (i, w) in written.iter().zip(results) {
                    conflict[*i] = matches!(w, Written::Conflict);
                    // A refused item, or one of a pipeline that failed while others went through.
                    out.l2_write_errors += u64::from(matches!(w, Written::Failed { .. }));
                }
            }
            Err(()) => out.l2_write_errors += count,
        }
    }
    if let Some(entries) = entries {
        for (i, lease) in unused_leases {
            entries
                .release_lease(ke, cold[i].ticket.key(), &lease)
                .await;
        }
    }
    for (i, loaded_at, value, ttl) in loaded {
        if conflict[i] {
            continue;
        }
        let (ticket, tags, age) = (&cold[i].ticket, opts.tag_list(), Age::starting_now(ttl));
        fill_l1(inner, ke, ticket, value, tags, loaded_at, age).await;
    }
    tracing::debug!(
        kind = %ke.name,
        hot = hot_count,
        loaded = out.warmed,
        failed = out.failed.len(),
        took = ?started.elapsed(),
        "warm batch done"
    );
    out
}

/// Calls one loader (under the permit and the deadline), counting the call. Returns when it
/// began, how long it took and its result.
async fn load_one<T, E, F, Fut>(
    ctx: &Ctx,
    ke: &KindEntry,
    i: usize,
    loader: F,
) -> (usize, Instant, Duration, Result<T, (String, bool)>)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let loaded_at = Instant::now();
    KindStats::inc(&ke.stats.loader_calls);
    // When the loader began (after the wait for a permit).
    let began = std::sync::OnceLock::new();
    let res = guarded(ctx, async {
        began.get_or_init(Instant::now);
        loader().await.map_err(|e| e.to_string())
    })
    .await;
    let took = began.get().map_or(Duration::ZERO, Instant::elapsed);
    (i, loaded_at, took, res)
}

/// Whether L1 holds a fresh, live `T` under `full`.
async fn l1_fresh<T: Send + Sync + 'static>(inner: &Inner, full: &str) -> bool {
    let Some(entry) = inner.l1.live(inner.l1.get(full).await) else {
        return false;
    };
    if !entry.holds::<T>() {
        return false;
    }
    let tag_invalidated = entry
        .tags()
        .is_some_and(|(tags, at)| inner.coherence.tags_invalidated_since(tags, at));
    !tag_invalidated && (inner.l1.grace().is_zero() || entry.is_fresh(Instant::now()))
}
