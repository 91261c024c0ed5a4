//! Coherence: what keeps every copy of an entry (this instance's L1, other instances' L1s, L2) from
//! outliving an invalidation or a newer write.
//!
//! It owns the four mechanisms that do it, and is the one place that applies them:
//! - **generations** ([`Generations`]): a load or a write holds a ticket of its key; invalidations,
//!   writes and backplane messages bump the key, so a superseded load keeps nothing in L1;
//! - **local tags** ([`LocalTags`]): tag invalidations made or heard here, checked against L1
//!   entries' load instants;
//! - **the backplane** ([`Backplane`]): pub/sub messages that make other instances drop their L1
//!   copies, and the subscriber that applies theirs here (through [`Listener`]);
//! - **the pending queue** ([`PendingInvalidations`]): invalidations that could not reach L2
//!   during an outage, fenced off and replayed;
//! - **the recent-writes journal** ([`Journal`], Redis Sentinel only): this instance's writes of
//!   the last seconds, queued again when the master moves (the new master may have missed them).
//!
//! "Drop from L1" always goes with "supersede loads in flight": [`Coherence::drop_local`],
//! [`Coherence::drop_kind`] and [`Coherence::drop_all`] do both, in that order. Dropping a kind or
//! everything is O(1) (an L1 epoch), so a resubscription after a link loss never stalls callers.

mod backplane;
mod generations;
mod journal;
mod pending;

pub(crate) use backplane::{
    mark_subscribed, spawn_subscriber, subscribe_any, Backplane, Listener, Message, HEARTBEAT_EVERY,
};
pub(crate) use generations::{Generations, Origin, Ticket};
use journal::Journal;
pub(crate) use pending::{PendingInvalidations, PendingOp};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::codec;
use crate::events::{Covered, EventBus};
use crate::kind::Kinds;
use crate::l1::{NewEntry, L1};
use crate::l2::L2;
use crate::lock::LockWaiters;
use crate::stats::KindStats;
use crate::tags::{self, LocalTags};

/// How many queued invalidations are sent to Redis at once during a replay.
const REPLAY_BATCH: usize = 64;

/// Settings of the coherence component.
pub(crate) struct CoherenceConfig {
    pub(crate) prefix: String,
    /// How long an invalidation tombstone (or a load's lease) stays in L2: longer than any load.
    pub(crate) tombstone_ttl: Duration,
    /// The longest L1 lifetime of entries stored while the breaker is open.
    pub(crate) breaker_open_l1_ttl: Duration,
    /// The longest an L1 entry with tags may live (and so how long tag invalidations are tracked).
    pub(crate) max_l1_lifetime: Duration,
    /// Publish and subscribe on the backplane (needs an L2).
    pub(crate) backplane: bool,
    /// The longest L1 lifetime of entries stored while the backplane is not subscribed.
    pub(crate) unsynced_l1_ttl: Duration,
    pub(crate) max_pending_invalidations: usize,
}

pub(crate) struct Coherence {
    l1: Arc<L1>,
    l2: Option<Arc<L2>>,
    kinds: Arc<Kinds>,
    prefix: String,
    tombstone_ttl: Duration,
    breaker_open_l1_ttl: Duration,
    max_l1_lifetime: Duration,
    pub(crate) gens: Generations,
    pub(crate) local_tags: LocalTags,
    pub(crate) pending: PendingInvalidations,
    /// This instance's recent writes, when the Redis master can move (Sentinel).
    journal: Option<Journal>,
    pub(crate) backplane: Option<Backplane>,
    /// Loads waiting for another instance's distributed lock (woken by `loaded` notices).
    pub(crate) lock_waiters: Arc<LockWaiters>,
    /// Evidence that Redis answers again (the backplane resubscribed): probe at once.
    probe_soon: AtomicBool,
    /// Confirmation requests of this instance waiting for acknowledgements, by id.
    confirmations: Mutex<HashMap<u64, Arc<AckWait>>>,
    /// Where invalidations made and heard are told.
    events: Arc<EventBus>,
}

/// One confirmation request: the acknowledgements heard so far.
#[derive(Default)]
struct AckWait {
    acks: AtomicUsize,
    notify: Notify,
}

/// What [`Cache::invalidate_confirmed`](crate::Cache::invalidate_confirmed) (or the tag form)
/// found: how many other instances were subscribed to the backplane, and how many confirmed they
/// had dropped their copies before the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Confirmation {
    /// Other instances subscribed when the invalidation was sent.
    pub expected: usize,
    /// Those that confirmed within the timeout.
    pub acknowledged: usize,
    /// How long the confirmations took (the timeout when some are missing).
    pub waited: Duration,
}

impl Confirmation {
    /// Whether every instance subscribed confirmed.
    pub fn is_complete(&self) -> bool {
        self.acknowledged >= self.expected
    }
}

impl Coherence {
    pub(crate) fn new(
        cfg: CoherenceConfig,
        l1: Arc<L1>,
        l2: Option<Arc<L2>>,
        kinds: Arc<Kinds>,
        events: Arc<EventBus>,
    ) -> Self {
        let backplane = (cfg.backplane && l2.is_some())
            .then(|| Backplane::new(&cfg.prefix, cfg.unsynced_l1_ttl));
        let journal = l2
            .as_ref()
            .filter(|l2| l2.master_switches().is_some())
            .map(|_| Journal::new(cfg.max_pending_invalidations));
        Self {
            l1,
            l2,
            kinds,
            prefix: cfg.prefix,
            tombstone_ttl: cfg.tombstone_ttl,
            breaker_open_l1_ttl: cfg.breaker_open_l1_ttl,
            max_l1_lifetime: cfg.max_l1_lifetime,
            gens: Generations::new(),
            local_tags: LocalTags::default(),
            pending: PendingInvalidations::new(cfg.max_pending_invalidations),
            journal,
            backplane,
            lock_waiters: Arc::default(),
            probe_soon: AtomicBool::new(false),
            confirmations: Mutex::default(),
            events,
        }
    }

    /// The TTL of tombstones and leases.
    pub(crate) fn tombstone_ttl(&self) -> Duration {
        self.tombstone_ttl
    }

    // --- Dropping local copies -------------------------------------------------------------

    /// Supersedes loads of `full` in flight, then drops its L1 copy.
    pub(crate) async fn drop_local(&self, full: &str, origin: Origin) {
        self.gens.bump(full, origin);
        self.l1.invalidate(full).await;
    }

    /// Supersedes every load in flight, then drops every L1 entry of kind `kind_id` (O(1)).
    pub(crate) fn drop_kind(&self, kind_id: usize, origin: Origin) {
        self.gens.bump_all(origin);
        self.l1.drop_kind(kind_id);
    }

    /// Supersedes every load in flight, then drops every L1 entry (O(1)).
    pub(crate) fn drop_all(&self, origin: Origin) {
        self.gens.bump_all(origin);
        self.l1.drop_all();
    }

    /// Whether `tags` were invalidated (here or heard of) at or after `loaded_at`.
    pub(crate) fn tags_invalidated_since(&self, tags: &[String], loaded_at: Instant) -> bool {
        self.local_tags.invalidated_since(tags, loaded_at)
    }

    // --- Keeping local copies --------------------------------------------------------------

    /// How long an entry whose TTL is `ttl` may be served fresh from L1 now: capped by the kind's
    /// L1 TTL, shortened while invalidations from other instances cannot arrive (backplane down,
    /// breaker open), and, for tagged entries, by how long tag invalidations are tracked.
    pub(crate) fn l1_lifetime(
        &self,
        ttl: Duration,
        kind_cap: Option<Duration>,
        tagged: bool,
    ) -> Duration {
        let mut fresh_for = kind_cap.map_or(ttl, |cap| cap.min(ttl));
        if let Some(bp) = self.backplane.as_ref() {
            if !bp.is_subscribed() {
                fresh_for = fresh_for.min(bp.unsynced_l1_ttl);
            }
        }
        if self.l2.as_ref().is_some_and(|l2| l2.breaker.is_rejecting()) {
            // Nor while L2 is skipped: other instances' invalidations are not reaching Redis.
            fresh_for = fresh_for.min(self.breaker_open_l1_ttl);
        }
        if tagged {
            fresh_for = fresh_for.min(self.max_l1_lifetime);
        }
        fresh_for
    }

    /// Stores an entry in L1 unless `ticket` was superseded, and takes it back out if an
    /// invalidation raced the insert. The one way into L1: loads, reads, writes and warming.
    pub(crate) async fn store_local<T: Send + Sync + 'static>(
        &self,
        ticket: &Ticket,
        kind_id: usize,
        entry: NewEntry<'_, T>,
    ) {
        if !ticket.is_current() {
            return;
        }
        let full = ticket.key();
        let token = self.l1.insert(full.to_owned(), kind_id, entry).await;
        if !ticket.is_current() {
            self.l1.remove_if_token(full, token).await;
        }
    }

    // --- Invalidating everywhere -----------------------------------------------------------

    /// Invalidates `full` on every instance: a tombstone in L2 (queued when L2 is out), loads in
    /// flight superseded and the L1 copy dropped here, a message to the others.
    ///
    /// Order matters: L2 first, then local. A load that read L2 before the tombstone landed then
    /// always has its L1 insert undone.
    pub(crate) async fn invalidate_key(&self, stats: &KindStats, full: &str, use_l2: bool) {
        if let (Some(l2), true) = (self.l2.as_deref(), use_l2) {
            let res = l2
                .invalidate(full, &codec::tombstone_now(), self.tombstone_ttl)
                .instrument(tracing::debug_span!("l2.invalidate"))
                .await;
            if res.is_ok() {
                self.note(|| PendingOp::Key(full.to_owned()));
            }
            if let Err(e) = res {
                stats.count_l2_error(&e);
                if e.is_outage() {
                    tracing::warn!(
                        "an invalidation could not reach L2: queued, replayed when L2 is back"
                    );
                    self.queue(PendingOp::Key(full.to_owned()));
                } else {
                    tracing::warn!(error = %e, "Redis refused an invalidation and its fallback delete");
                }
            }
        }
        self.drop_local(full, Origin::Here).await;
        self.publish(Message::Key(full)).await;
        self.events.invalidation_sent(Covered::Key(full));
    }

    /// Invalidates every entry carrying one of `tags`, on every instance: new tokens in L2
    /// (queued when L2 is out), local copies rejected, a message per tag to the others.
    ///
    /// The tags are marked here before L2 changes (loads in flight stop filling L1) and again
    /// after: a read that began between the two marks may have seen the old tokens in L2, and its
    /// L1 copy must be rejected too.
    pub(crate) async fn invalidate_tags(&self, stats: &KindStats, tags: &[&str]) {
        for t in tags {
            self.local_tags.mark(t);
        }
        if let Some(l2) = self.l2.as_deref() {
            let res = tags::invalidate(l2, &self.prefix, tags)
                .instrument(tracing::debug_span!(
                    "l2.invalidate_tags",
                    tags = tags.len()
                ))
                .await;
            if res.is_ok() {
                for t in tags {
                    self.note(|| PendingOp::Tag((*t).to_owned()));
                }
            }
            if let Err(e) = res {
                stats.count_l2_error(&e);
                if e.is_outage() {
                    tracing::warn!(
                        ?tags,
                        "tag invalidation could not reach L2: queued, replayed when L2 is back"
                    );
                    for t in tags {
                        self.queue(PendingOp::Tag((*t).to_owned()));
                    }
                } else {
                    tracing::warn!(error = %e, "Redis refused a tag invalidation and its fallback delete");
                }
            }
        }
        for t in tags {
            self.local_tags.mark(t);
        }
        for t in tags {
            self.publish(Message::Tag(t)).await;
            self.events.invalidation_sent(Covered::Tag(t));
        }
    }

    /// Tells that this instance cleared a kind (`Some`) or everything (`None`).
    pub(crate) fn cleared(&self, kind: Option<&str>) {
        self.events
            .invalidation_sent(kind.map_or(Covered::All, Covered::Kind));
    }

    /// Asks the other instances subscribed to the backplane to confirm they applied the messages
    /// this instance sent so far, and waits for them (at most `timeout`). Messages of one
    /// publisher reach each subscriber in order, so a confirmation covers every earlier message.
    pub(crate) async fn confirm(&self, timeout: Duration) -> Confirmation {
        let started = Instant::now();
        let (Some(bp), Some(l2)) = (self.backplane.as_ref(), self.l2.as_deref()) else {
            return Confirmation {
                expected: 0,
                acknowledged: 0,
                waited: Duration::ZERO,
            };
        };
        let subscribed = match tokio::time::timeout(timeout, l2.subscribers(&bp.channel)).await {
            Ok(Ok(n)) => n as usize,
            _ => {
                return Confirmation {
                    expected: 0,
                    acknowledged: 0,
                    waited: started.elapsed(),
                }
            }
        };
        let expected = subscribed.saturating_sub(usize::from(bp.is_subscribed()));
        // A confirmation vouches for every message sent before it: none may wait for a resend.
        bp.resend(l2).await;
        if bp.unsent() > 0 {
            return Confirmation {
                expected,
                acknowledged: 0,
                waited: started.elapsed(),
            };
        }
        let id: u64 = rand::random();
        let wait = Arc::new(AckWait::default());
        self.confirmations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, wait.clone());
        let request = format!("{id:016x}");
        self.publish(Message::Confirm(&request)).await;
        // Capped: a caller's `Duration::MAX` means "as long as it takes", not an overflow.
        let deadline = tokio::time::Instant::now()
            + timeout
                .saturating_sub(started.elapsed())
                .min(crate::options::MAX_TTL);
        loop {
            let notified = wait.notify.notified();
            if wait.acks.load(Ordering::Acquire) >= expected {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.confirmations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        Confirmation {
            expected,
            acknowledged: wait.acks.load(Ordering::Acquire),
            waited: started.elapsed(),
        }
    }

    /// An acknowledgement heard on the backplane (`to:id`): counted if it answers one of ours.
    fn acknowledged(&self, payload: &str) {
        let Some(bp) = self.backplane.as_ref() else {
            return;
        };
        let Some((to, id)) = payload.split_once(':') else {
            return;
        };
        let (Ok(to), Ok(id)) = (u64::from_str_radix(to, 16), u64::from_str_radix(id, 16)) else {
            return;
        };
        if to != bp.instance {
            return;
        }
        let wait = self
            .confirmations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(w) = wait {
            w.acks.fetch_add(1, Ordering::AcqRel);
            w.notify.notify_waiters();
        }
    }

    /// Publishes `msg` on the backplane (nothing without one).
    pub(crate) async fn publish(&self, msg: Message<'_>) {
        if let (Some(bp), Some(l2)) = (self.backplane.as_ref(), self.l2.as_deref()) {
            bp.publish(l2, msg).await;
        }
    }

    // --- Invalidations waiting for L2 ----------------------------------------------------------

    /// Queues an invalidation that could not reach L2, for replay.
    pub(crate) fn queue(&self, op: PendingOp) {
        self.pending.push(op);
    }

    /// Whether an invalidation of `full` waits for replay (L2 may still hold what it removes).
    pub(crate) fn key_fenced(&self, full: &str) -> bool {
        self.pending.has_key(full)
    }

    /// Whether an invalidation of one of `tags` waits for replay.
    pub(crate) fn tags_fenced<'a>(&self, tags: impl Iterator<Item = &'a str>) -> bool {
        self.pending.has_any_tag(tags)
    }

    /// Where a write that begins now stands in the queue (see [`Self::written`]).
    pub(crate) fn write_began(&self) -> u64 {
        self.pending.next_seq()
    }

    /// A write of `full` that began at `began` reached L2: an invalidation of the key queued
    /// before is moot (L2 no longer holds what it invalidated).
    pub(crate) fn written(&self, full: &str, began: u64) {
        self.pending.supersede_key(full, began);
        self.note(|| PendingOp::Key(full.to_owned()));
    }

    /// Notes in the journal (if any) that the write `op` reached L2.
    fn note(&self, op: impl FnOnce() -> PendingOp) {
        if let Some(j) = self.journal.as_ref() {
            j.note(op());
        }
    }

    /// The Redis master moved (Sentinel): this instance's writes of the last seconds are queued
    /// again, to be replayed on the new master (which may have missed them) and announced to the
    /// other instances; until then this instance does not read those keys from L2.
    pub(crate) fn master_changed(&self) {
        let Some(j) = self.journal.as_ref() else {
            return;
        };
        let (ops, left_out) = j.recent();
        let count = ops.len();
        for op in ops {
            self.pending.push(op);
        }
        if left_out {
            tracing::warn!(
                max = self.pending.capacity(),
                "the Redis master moved: more keys were written in the last seconds than are kept \
                 (max_pending_invalidations); some may read their value from before the move"
            );
        }
        tracing::info!(
            writes = count,
            "the Redis master moved: this instance's recent writes are applied again"
        );
    }

    /// Whether invalidations wait for replay, or messages for a resend (the background task then
    /// probes eagerly).
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.backplane.as_ref().is_some_and(|bp| bp.unsent() > 0)
    }

    /// If L2 is usable: sends the backplane messages whose publish failed again, then applies the
    /// queued invalidations to L2 and publishes them, oldest first. Stops at the first outage (the
    /// rest stays queued for the next attempt).
    pub(crate) async fn replay(&self) {
        let Some(l2) = self.l2.as_deref() else {
            return;
        };
        if l2.breaker.is_rejecting() {
            return;
        }
        if let Some(bp) = self.backplane.as_ref() {
            bp.resend(l2).await;
        }
        if self.pending.is_empty() {
            return;
        }
        let Some(_replaying) = self.pending.start_replay() else {
            return;
        };
        let ops = self.pending.snapshot();
        tracing::debug!(count = ops.len(), "replaying queued invalidations");
        let mut done = 0;
        'batches: for batch in ops.chunks(REPLAY_BATCH) {
            let results = futures::future::join_all(batch.iter().map(|(op, seq)| async move {
                match op {
                    PendingOp::Key(full) => {
                        // In this instance's write order of the key: a `set` of it that reached
                        // L2 since the invalidation was queued superseded it, and its value must
                        // not be deleted by the older invalidation.
                        let _order = self.gens.begin_write(full).await;
                        if !self.pending.is_queued(op, *seq) {
                            return None;
                        }
                        Some(
                            l2.invalidate(full, &codec::tombstone_now(), self.tombstone_ttl)
                                .await,
                        )
                    }
                    PendingOp::Tag(tag) => Some(tags::invalidate(l2, &self.prefix, &[tag]).await),
                }
            }))
            .await;
            for ((op, seq), res) in batch.iter().zip(results) {
                let Some(res) = res else {
                    // Superseded by a write meanwhile: nothing to apply or announce.
                    continue;
                };
                match res {
                    Err(e) if e.is_outage() => {
                        // Expected while L2 is still failing: the next attempt follows a probe.
                        tracing::debug!(error = %e, replayed = done,
                            "replaying queued invalidations failed: the rest stays queued");
                        break 'batches;
                    }
                    Err(e) => {
                        // Retrying cannot help (even the fallback delete was refused): never
                        // queued forever.
                        tracing::warn!(error = %e, "Redis refused a queued invalidation: dropped");
                        self.pending.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => {
                        self.pending.replayed.fetch_add(1, Ordering::Relaxed);
                        self.note(|| op.clone());
                        done += 1;
                    }
                }
                self.pending.complete(op, *seq);
                let msg = match op {
                    PendingOp::Key(full) => Message::Key(full),
                    PendingOp::Tag(tag) => Message::Tag(tag),
                };
                self.publish(msg).await;
            }
        }
        if done > 0 {
            tracing::info!(
                replayed = done,
                left = self.pending.len(),
                "invalidations queued during the L2 outage replayed"
            );
        }
    }

    /// Whether the backplane just came back (a hint that Redis answers): taken once.
    pub(crate) fn take_probe_hint(&self) -> bool {
        self.probe_soon.swap(false, Ordering::AcqRel)
    }

    /// Forgets tag invalidations older than any L1 entry can be.
    pub(crate) fn prune(&self) {
        self.local_tags.prune(self.max_l1_lifetime);
    }

    /// The kind id a `Clear` message's key prefix names (`None`: every kind).
    fn kind_of_clear(&self, key_prefix: &str) -> Option<usize> {
        let rest = key_prefix
            .strip_prefix(&self.prefix)?
            .strip_prefix(":v1:")?;
        let name = rest.strip_suffix(':').unwrap_or(rest);
        Some(self.kinds.get_quiet(name).id)
    }
}

impl Listener for Coherence {
    fn backplane(&self) -> Option<&Backplane> {
        self.backplane.as_ref()
    }

    fn refused(&self, command: &str, e: &redis::RedisError) {
        if let Some(l2) = self.l2.as_deref() {
            l2.acl.note(command, e);
        }
    }

    async fn heard(&self, from: u64, msg: Message<'_>) {
        match msg {
            Message::Key(full) => {
                self.drop_local(full, Origin::Elsewhere).await;
                self.events.invalidation_received(Covered::Key(full));
            }
            Message::Tag(tag) => {
                self.local_tags.mark(tag);
                self.events.invalidation_received(Covered::Tag(tag));
            }
            Message::Clear(prefix) => {
                match self.kind_of_clear(prefix).filter(|_| !prefix.is_empty()) {
                    Some(id) => self.drop_kind(id, Origin::Elsewhere),
                    None => self.drop_all(Origin::Elsewhere),
                }
                self.events.invalidation_received(Covered::Cleared(prefix));
            }
            Message::Loaded(full) => self.lock_waiters.wake(full),
            Message::Heartbeat => {}
            // Every earlier message of the sender has been applied (delivery is in order).
            Message::Confirm(id) => {
                let ack = format!("{from:016x}:{id}");
                self.publish(Message::Ack(&ack)).await;
            }
            Message::Ack(payload) => self.acknowledged(payload),
        }
    }

    fn resubscribed(&self) {
        self.drop_all(Origin::Elsewhere);
        self.probe_soon.store(true, Ordering::Release);
    }
}
