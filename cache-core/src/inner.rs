//! What a [`Cache`](crate::Cache) handle shares: its components, composed. Each component owns its
//! state (see `architecture.md`); this struct only holds them and the few settings the read path
//! needs, and takes the stats snapshot across them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::coherence::Coherence;
use crate::entry_store::EntryStore;
use crate::kind::{KindEntry, Kinds};
use crate::l1::L1;
use crate::l2::L2;
use crate::refresh::Claims;
use crate::stats::{self, BackplaneStats, BreakerStats, PendingInvalidationStats, Stats};

pub(crate) struct Inner {
    pub(crate) prefix: String,
    pub(crate) enabled: bool,
    pub(crate) kinds: Arc<Kinds>,
    pub(crate) l1: Arc<L1>,
    pub(crate) l2: Option<Arc<L2>>,
    /// The L2 entry store (with an L2).
    pub(crate) entries: Option<EntryStore>,
    pub(crate) coherence: Arc<Coherence>,
    /// Single-flight of loads; nothing is ever inserted (see `load::miss`).
    pub(crate) flights: moka::future::Cache<String, Never>,
    /// Keys with a load running in the background (eager refresh, past a soft timeout).
    pub(crate) refreshing: Claims,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    /// The TTL jitter fraction of kinds without their own.
    pub(crate) ttl_jitter: f64,
    /// How often the stats snapshot is published to Redis for `cachectl` (zero: never).
    pub(crate) stats_report_interval: Duration,
}

/// The value type of the single-flight map: uninhabited, so the type system proves nothing is
/// ever stored in it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Never {}

impl Inner {
    /// The entry store, if the kind uses L2 and there is one.
    pub(crate) fn entries_for(&self, ke: &KindEntry) -> Option<&EntryStore> {
        self.entries.as_ref().filter(|_| ke.cfg.tier_routing().l2())
    }

    /// The TTL jitter fraction of a kind.
    pub(crate) fn jitter(&self, ke: &KindEntry) -> f64 {
        ke.cfg.jitter().unwrap_or(self.ttl_jitter)
    }

    /// A snapshot of the counters, per tier and per kind.
    pub(crate) fn stats(&self) -> Stats {
        let mut kinds = std::collections::BTreeMap::new();
        for k in self.kinds.all() {
            let mut t = stats::summarize([&k.stats]);
            if let Some(o) = self.l1.occupancy(k.id) {
                t.l1.entries = o.entries();
                t.l1.bytes = o.bytes();
                t.l1.evictions = o.evictions();
            }
            // The budget is shared by all kinds.
            t.l1.max_bytes = self.l1.max_bytes();
            kinds.insert(k.name.clone(), t);
        }
        let mut total = stats::summarize(self.kinds.all().map(|k| &k.stats));
        total.l1.entries = self.l1.entries();
        total.l1.bytes = self.l1.bytes();
        total.l1.max_bytes = self.l1.max_bytes();
        total.l1.evictions = self.l1.evictions();
        let c = &self.coherence;
        Stats {
            prefix: self.prefix.clone(),
            l2_configured: self.l2.is_some(),
            l2_refusing_writes: self.l2.as_ref().is_some_and(|l2| l2.refusing_writes()),
            breaker: self.l2.as_ref().map(|l2| BreakerStats {
                state: l2.breaker.state(),
                opens: l2.breaker.opens(),
                rejected: l2.breaker.rejected(),
            }),
            backplane: c.backplane.as_ref().map(|bp| BackplaneStats {
                subscribed: bp.is_subscribed(),
                received: bp.received.load(Ordering::Relaxed),
                published: bp.published.load(Ordering::Relaxed),
                publish_failures: bp.publish_failures.load(Ordering::Relaxed),
                disconnects: bp.disconnects.load(Ordering::Relaxed),
                resyncs: bp.resyncs.load(Ordering::Relaxed),
                unsent: bp.unsent() as u64,
                resent: bp.resent.load(Ordering::Relaxed),
            }),
            tracked_tag_invalidations: c.local_tags.len() as u64,
            pending_invalidations: PendingInvalidationStats {
                pending: c.pending.len() as u64,
                queued: c.pending.queued.load(Ordering::Relaxed),
                replayed: c.pending.replayed.load(Ordering::Relaxed),
                dropped: c.pending.dropped.load(Ordering::Relaxed),
            },
            total,
            kinds,
        }
    }
}
