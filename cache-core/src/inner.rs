//! What a [`Cache`](crate::Cache) handle shares: its components, composed. Each component owns its
//! state (see `architecture.md`); this struct only holds them and the few settings the read path
//! needs, and takes the stats snapshot across them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::coherence::Coherence;
use crate::entry_store::EntryStore;
use crate::events::EventBus;
use crate::flight::Flights;
use crate::history::{self, Gauges, History, Reading};
use crate::kind::{KindEntry, Kinds};
use crate::l1::L1;
use crate::l2::L2;
use crate::refresh::Claims;
use crate::stats::{
    BackplaneStats, BreakerStats, EventStats, PendingInvalidationStats, Rates, Raw, RedisMemory,
    Stats, TierStats, WindowStats,
};

pub(crate) struct Inner {
    /// The cache's name (stats, metrics label).
    pub(crate) name: String,
    pub(crate) prefix: String,
    pub(crate) enabled: bool,
    pub(crate) kinds: Arc<Kinds>,
    pub(crate) l1: Arc<L1>,
    pub(crate) l2: Option<Arc<L2>>,
    /// The L2 entry store (with an L2).
    pub(crate) entries: Option<EntryStore>,
    pub(crate) coherence: Arc<Coherence>,
    /// Loads in flight (single-flight, for single reads and batches).
    pub(crate) flights: Flights,
    /// Keys with a load running in the background (eager refresh, past a soft timeout).
    pub(crate) refreshing: Claims,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    /// The TTL jitter fraction of kinds without their own.
    pub(crate) ttl_jitter: f64,
    /// How often the stats snapshot is published to Redis for `cachectl` (zero: never).
    pub(crate) stats_report_interval: Duration,
    /// The counters over the last 15 minutes.
    pub(crate) history: History,
    /// The event bus ([`Cache::events`](crate::Cache::events)): the read path emits through it.
    pub(crate) events: Arc<EventBus>,
}

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
        let raws: Vec<Raw> = self.kinds.all().map(|k| k.stats.raw()).collect();
        let (total, kinds) = self.figures(self.kinds.all().zip(&raws));
        let c = &self.coherence;
        Stats {
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            l2_configured: self.l2.is_some(),
            l2_refusing_writes: self.l2.as_ref().is_some_and(|l2| l2.refusing_writes()),
            l2_acl_refused: self
                .l2
                .as_ref()
                .map(|l2| l2.acl.commands())
                .unwrap_or_default(),
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
            redis_memory: self
                .l2
                .as_ref()
                .and_then(|l2| l2.memory())
                .map(|m| RedisMemory {
                    used_bytes: m.used_bytes,
                    maxmemory_bytes: m.maxmemory_bytes,
                    policy: m.policy,
                    sampled_at_ms: m.sampled_at_ms,
                }),
            events: EventStats {
                subscribers: self.events.subscribers(),
                dropped: self.events.dropped(),
            },
            total,
            kinds,
        }
    }

    /// The figures of counters `raws` (one per kind: totals, or a window's deltas), with the
    /// current L1 occupancy and each kind's settings: all kinds together, and per kind.
    fn figures<'a>(
        &self,
        raws: impl Iterator<Item = (&'a Arc<KindEntry>, &'a Raw)>,
    ) -> (TierStats, BTreeMap<String, TierStats>) {
        let mut kinds = BTreeMap::new();
        let mut sum = Raw::default();
        let mut costs = Vec::new();
        for (k, raw) in raws {
            sum.add(raw);
            let mut t = TierStats::from_raw(raw, k.cfg.cost_per_load());
            if let Some(o) = self.l1.occupancy(k.id) {
                t.l1.entries = o.entries();
                t.l1.bytes = o.bytes();
                t.l1.evictions = o.evictions();
            }
            // The budget is shared by all kinds.
            t.l1.max_bytes = self.l1.max_bytes();
            t.settings = Some(k.cfg.settings());
            costs.push(t.savings.clone());
            kinds.insert(k.name.clone(), t);
        }
        let mut total = TierStats::from_raw(&sum, None);
        for c in &costs {
            total.add_costs(c);
        }
        total.l1.entries = self.l1.entries();
        total.l1.bytes = self.l1.bytes();
        total.l1.max_bytes = self.l1.max_bytes();
        total.l1.evictions = self.l1.evictions();
        (total, kinds)
    }

    /// Every kind's counters now, and the state a chart point shows.
    fn reading(&self) -> Reading {
        let gauges = Gauges {
            l1_bytes: self.l1.bytes(),
            l1_max_bytes: self.l1.max_bytes(),
            breaker: self.l2.as_ref().map(|l2| l2.breaker.state()),
            backplane_subscribed: self.coherence.backplane.as_ref().map(|b| b.is_subscribed()),
            pending_invalidations: self.coherence.pending.len() as u64,
            breaker_opens: self.l2.as_ref().map_or(0, |l2| l2.breaker.opens()),
        };
        Reading::take(self.kinds.all().map(|k| (k.id, &k.stats)), gauges)
    }

    /// Samples the counters into the history if a second has passed (the housekeeper calls this
    /// at every tick), adding up what each kind saved meanwhile.
    pub(crate) fn sample(&self) {
        if !self.history.due() {
            return;
        }
        let now = self.reading();
        self.history.record(now.clone(), |delta, secs, gauges| {
            history::add_savings(delta, &now, self.kinds.all().map(|k| (k.id, &k.stats)));
            let (total, _) = self.figures(
                self.kinds
                    .all()
                    .filter_map(|k| delta.get(k.id).map(|d| (k, d))),
            );
            history::point(&total, secs, gauges)
        });
    }

    /// The figures over the last `len` (see [`crate::history`]).
    pub(crate) fn stats_over(&self, len: Duration) -> WindowStats {
        let now = self.reading();
        let Some(start) = self.history.start_of(len) else {
            return WindowStats::default();
        };
        let delta = now.since(&start);
        let secs = now.at.saturating_duration_since(start.at).as_secs_f64();
        let (total, kinds) = self.figures(
            self.kinds
                .all()
                .filter_map(|k| delta.get(k.id).map(|d| (k, d))),
        );
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        WindowStats {
            breaker_opens: now
                .gauges
                .breaker_opens
                .saturating_sub(start.gauges.breaker_opens),
            seconds: secs,
            requests_per_sec: per_sec(total.lookups),
            loader_calls_per_sec: per_sec(total.loader.calls),
            total,
            kinds,
        }
    }

    /// The figures over the last 1, 5 and 15 minutes.
    pub(crate) fn rates(&self) -> Rates {
        let min = |m: u64| self.stats_over(Duration::from_secs(m * 60));
        Rates {
            last_1m: min(1),
            last_5m: min(5),
            last_15m: min(15),
        }
    }
}
