//! The soak's report: configuration, bounds, operations, faults and recoveries, the cache's own
//! counters, and the violations by class with the first ones in detail.

use cache_core::Stats;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::checker::{
    Class, Findings, GrowthSample, HealthSample, InstanceHealth, LatencyBounds, Recovery, Violation,
};
use super::faults::{FaultKind, InjectedFault};
use super::history::{Op, Record};
use super::monitor::{Stall, STALL_MIN};
use super::workload;
use super::SoakConfig;

/// How many violations are shown in detail by default.
pub const DETAILED: usize = 20;

/// When each phase began (ns since the run began).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Workers started.
    pub workload_start: u64,
    /// First fault may begin.
    pub faults_from: u64,
    /// Last fault over.
    pub faults_over: u64,
    /// Workers stopped.
    pub workload_stopped: u64,
    /// Final reads began.
    pub final_reads: u64,
    /// Checked.
    pub end: u64,
}

/// Latency figures of one kind of call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpStats {
    /// The kind of call.
    pub op: Op,
    /// Calls.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Longest.
    pub max: Duration,
}

/// One instance's identity and its cache's counters at the end.
#[derive(Clone, Debug)]
pub struct InstanceSummary {
    /// Index.
    pub index: u16,
    /// Reached Redis through a proxy.
    pub via_proxy: bool,
    /// `cache.stats()` at the end.
    pub stats: Stats,
}

/// Everything a run found and measured.
#[derive(Debug)]
pub struct SoakReport {
    /// The configuration.
    pub config: SoakConfig,
    /// Phases.
    pub timeline: Timeline,
    /// How long the instances took after the workload stopped to have handled every message sent
    /// before (markers, see `chaos::settle`), or what was still missing.
    pub settled: Result<Duration, String>,
    /// Per kind of call.
    pub ops: Vec<OpStats>,
    /// Every fault injected.
    pub faults: Vec<InjectedFault>,
    /// What the checker found.
    pub findings: Findings,
    /// The instances at the end.
    pub instances: Vec<InstanceSummary>,
    /// Late wake-ups of the stall probes.
    pub stalls: Vec<Stall>,
    /// Memory and task samples.
    pub growth: Vec<GrowthSample>,
    /// Health samples.
    pub health: Vec<HealthSample>,
    /// How many violations to show in detail (about; every class gets a share).
    pub detailed: usize,
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0}ms", d.as_secs_f64() * 1e3)
    }
}

impl SoakReport {
    /// Builds the report (summarizing `records`, which it does not keep).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: SoakConfig,
        timeline: Timeline,
        settled: Result<Duration, String>,
        records: &[Record],
        faults: Vec<InjectedFault>,
        findings: Findings,
        instances: Vec<InstanceSummary>,
        stalls: Vec<Stall>,
        growth: Vec<GrowthSample>,
        health: Vec<HealthSample>,
    ) -> Self {
        let mut by_op: BTreeMap<Op, (Vec<Duration>, u64)> = BTreeMap::new();
        for r in records.iter().filter(|r| r.primary) {
            let e = by_op.entry(r.op).or_default();
            e.0.push(r.duration());
            e.1 += u64::from(r.errored);
        }
        let ops = by_op
            .into_iter()
            .map(|(op, (mut d, errors))| {
                d.sort_unstable();
                OpStats {
                    op,
                    calls: d.len() as u64,
                    errors,
                    p50: pct(&d, 0.5),
                    p99: pct(&d, 0.99),
                    p999: pct(&d, 0.999),
                    max: d.last().copied().unwrap_or_default(),
                }
            })
            .collect();
        Self {
            config,
            timeline,
            settled,
            ops,
            faults,
            findings,
            instances,
            stalls,
            growth,
            health,
            detailed: DETAILED,
        }
    }

    /// Faults the driver could not inject.
    pub fn driver_failures(&self) -> usize {
        self.faults.iter().filter(|f| f.failed).count()
    }

    /// Faults injected per kind.
    pub fn faults_by_kind(&self) -> BTreeMap<FaultKind, usize> {
        let mut m = BTreeMap::new();
        for f in self.faults.iter().filter(|f| !f.failed) {
            *m.entry(f.kind).or_default() += 1;
        }
        m
    }

    /// Violations per class.
    pub fn violations_by_class(&self) -> BTreeMap<Class, usize> {
        let mut m = BTreeMap::new();
        for v in &self.findings.violations {
            *m.entry(v.class()).or_default() += 1;
        }
        m
    }

    /// The fault nearest before `t_ns`, described relative to it.
    fn near(&self, t_ns: u64) -> String {
        match self
            .faults
            .iter()
            .filter(|f| f.start_ns <= t_ns)
            .max_by_key(|f| f.start_ns)
        {
            None => "before any fault".into(),
            Some(f) if t_ns <= f.end_ns => format!(
                "during {} #{} ({}..{})",
                f.label(),
                self.fault_no(f),
                secs(f.start_ns),
                secs(f.end_ns)
            ),
            Some(f) => format!(
                "{} after {} #{} ended ({}..{})",
                ms(Duration::from_nanos(t_ns - f.end_ns)),
                f.label(),
                self.fault_no(f),
                secs(f.start_ns),
                secs(f.end_ns)
            ),
        }
    }

    /// The faults that began while a call ran (`(from, to]`): `near` names only the one before it
    /// began, and a call that straddles a fault's start is the one most likely to meet a hang
    /// between two of its round trips.
    fn began_during(&self, from: u64, to: u64) -> Option<String> {
        let began: Vec<String> = self
            .faults
            .iter()
            .filter(|f| f.start_ns > from && f.start_ns <= to)
            .map(|f| {
                format!(
                    "{} #{} began {} into it",
                    f.label(),
                    self.fault_no(f),
                    ms(Duration::from_nanos(f.start_ns - from))
                )
            })
            .collect();
        (!began.is_empty()).then(|| began.join(", "))
    }

    fn fault_no(&self, f: &InjectedFault) -> usize {
        self.faults.iter().position(|g| g == f).unwrap_or(0) + 1
    }

    /// Which stale episodes to show: those with every instance healthy from the write to the
    /// read first (up to half the lines when there are others), then the others, at most two
    /// per nearest fault.
    fn pick_episodes<'a>(
        &self,
        episodes: &'a [(usize, &'a Violation, u64)],
        n: usize,
    ) -> Vec<&'a (usize, &'a Violation, u64)> {
        let healthy = |v: &Violation| match v {
            Violation::StaleRead { read, newer, .. } => {
                self.all_healthy(newer.start_ns, read.start_ns)
            }
            _ => false,
        };
        let nearest = |v: &Violation| match v {
            Violation::StaleRead { read, .. } => self
                .faults
                .iter()
                .filter(|f| f.start_ns <= read.start_ns)
                .map(|f| f.start_ns)
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        let calm: Vec<_> = episodes.iter().filter(|(_, v, _)| healthy(v)).collect();
        let mut per_fault: BTreeMap<u64, usize> = BTreeMap::new();
        let rest: Vec<_> = episodes
            .iter()
            .filter(|(_, v, _)| !healthy(v))
            .filter(|(_, v, _)| {
                let c = per_fault.entry(nearest(v)).or_default();
                *c += 1;
                *c <= 2
            })
            .collect();
        let take_calm = calm.len().min(n.saturating_sub(rest.len().min(n / 2)));
        let mut out: Vec<_> = calm.into_iter().take(take_calm).collect();
        out.extend(rest.into_iter().take(n - take_calm));
        out
    }

    /// `instance`'s health at the last sample at or before `t_ns`.
    fn health_at(&self, instance: u16, t_ns: u64) -> Option<InstanceHealth> {
        let i = self.health.partition_point(|s| s.t_ns <= t_ns);
        let s = self.health.get(i.checked_sub(1)?)?;
        s.instances.get(instance as usize).copied()
    }

    /// Whether every instance was healthy at every sample in `[from, to]` (and at the last one
    /// before `from`).
    pub fn all_healthy(&self, from: u64, to: u64) -> bool {
        let first = self
            .health
            .partition_point(|s| s.t_ns <= from)
            .saturating_sub(1);
        self.health[first..]
            .iter()
            .take_while(|s| s.t_ns <= to)
            .all(|s| s.instances.iter().all(InstanceHealth::healthy))
    }

    fn health_text(&self, instance: u16, t_ns: u64) -> String {
        match self.health_at(instance, t_ns) {
            None => "unknown".into(),
            Some(h) if h.healthy() => "healthy".into(),
            Some(h) => {
                let mut what = Vec::new();
                if !h.breaker_closed {
                    what.push("breaker not closed".to_owned());
                }
                if h.pending > 0 {
                    what.push(format!("{} pending", h.pending));
                }
                if !h.subscribed {
                    what.push("unsubscribed".to_owned());
                }
                what.join(", ")
            }
        }
    }

    /// The worst stall overlapping `[from, to]` on `instance`'s runtime or the machine.
    fn stall_during(&self, instance: u16, from: u64, to: u64) -> Option<String> {
        let worst = |on: Option<u16>| {
            self.stalls
                .iter()
                .filter(|s| s.instance == on)
                // A stall ending at t began `late` (+ the probe period) before.
                .filter(|s| s.t_ns >= from && s.t_ns.saturating_sub(s.late.as_nanos() as u64) <= to)
                .map(|s| s.late)
                .max()
        };
        let rt = worst(Some(instance));
        let machine = worst(None);
        match (rt, machine) {
            (None, None) => None,
            (rt, machine) => Some(format!(
                "probes late: runtime i{instance} {}, machine {}",
                rt.map_or("-".into(), ms),
                machine.map_or("-".into(), ms)
            )),
        }
    }

    fn describe(&self, v: &Violation) -> String {
        let r = |r: &Record| {
            format!(
                "i{} {} k{} [{}..{}] v{}{}",
                r.instance,
                r.op.name(),
                r.key,
                secs(r.start_ns),
                secs(r.end_ns),
                r.version.map_or("-".into(), |v| v.to_string()),
                r.source
                    .map_or(String::new(), |s| format!(" from {}", s.name()))
            )
        };
        match v {
            Violation::StaleRead {
                read,
                newer,
                visible_by_ns,
                why,
                written_by,
                ..
            } => format!(
                "stale read: {} (written by {}) but {} was due at i{} by {} ({}) ({} late); {}; writer i{} at the write: {}, reader i{} at the read: {}",
                r(read),
                written_by.as_ref().map_or("no write: initial".into(), r),
                r(newer),
                read.instance,
                secs(*visible_by_ns),
                why,
                ms(Duration::from_nanos(read.start_ns.saturating_sub(*visible_by_ns))),
                self.near(read.start_ns),
                newer.instance,
                self.health_text(newer.instance, newer.start_ns),
                read.instance,
                self.health_text(read.instance, read.start_ns),
            ),
            Violation::LostWrite {
                read,
                latest,
                written_by,
            }
            | Violation::LostInvalidation {
                read,
                latest,
                written_by,
            } => {
                format!(
                    "{}: final read {} (written by {}) but the last write was {}; last write {}",
                    v.class().name(),
                    r(read),
                    written_by.as_ref().map_or("no write: initial".into(), r),
                    r(latest),
                    self.near(latest.start_ns)
                )
            }
            Violation::PhantomRead { read, why } => {
                format!("phantom read: {} ({why}); {}", r(read), self.near(read.start_ns))
            }
            Violation::WrongValue { read } => format!("wrong value: {}", r(read)),
            Violation::Error { record } => {
                format!("error: {}; {}", r(record), self.near(record.start_ns))
            }
            Violation::SlowCall { record, bound } => format!(
                "slow call: {} took {} (bound {}); {}{}{}",
                r(record),
                ms(record.duration()),
                ms(*bound),
                self.near(record.start_ns),
                self.began_during(record.start_ns, record.end_ns)
                    .map_or(String::new(), |s| format!("; {s}")),
                self.stall_during(record.instance, record.start_ns, record.end_ns)
                    .map_or(String::new(), |s| format!("; {s}"))
            ),
            Violation::Growth {
                what,
                first_mean,
                last_mean,
                allowed,
            } => format!(
                "growth: {what}: first quarter mean {first_mean:.0}, last quarter {last_mean:.0} (allowed +{allowed:.0})"
            ),
            Violation::SlowRecovery(rec) => {
                let f = &self.faults[rec.fault];
                format!(
                    "slow recovery: after {} #{} ({}..{}, {}){}: unhealthy for {} ({})",
                    f.label(),
                    rec.fault + 1,
                    secs(f.start_ns),
                    secs(f.end_ns),
                    f.detail,
                    rec.inherited_from.map_or(String::new(), |p| format!(
                        ", which began before the cache had recovered from {} #{}",
                        self.faults[p].label(),
                        p + 1
                    )),
                    recovery_text(rec),
                    rec.unhealthy
                )
            }
        }
    }
}

/// Stale reads grouped into episodes: the same instance returning the same old version of the
/// same key.
fn stale_episodes(f: &Findings) -> Vec<(usize, &Violation, u64)> {
    let mut first: BTreeMap<(u16, u32, u64), (usize, usize, u64)> = BTreeMap::new();
    for (i, v) in f.violations.iter().enumerate() {
        if let Violation::StaleRead { read, .. } = v {
            let e = first
                .entry((read.instance, read.key, read.version.unwrap_or(0)))
                .or_insert((i, 0, read.start_ns));
            e.1 += 1;
            e.2 = e.2.max(read.start_ns);
        }
    }
    let mut eps: Vec<(usize, &Violation, u64)> = first
        .into_values()
        .map(|(i, n, last)| (n, &f.violations[i], last))
        .collect();
    eps.sort_by_key(|(_, v, _)| match v {
        Violation::StaleRead { read, .. } => read.start_ns,
        _ => 0,
    });
    eps
}

fn recovery_text(r: &Recovery) -> String {
    let t = match r.at_most {
        Some(m) if r.at_least.is_zero() => format!("<= {}", ms(m)),
        Some(m) => format!("{}..{}", ms(r.at_least), ms(m)),
        None => format!("> {} (not before the next fault)", ms(r.at_least)),
    };
    let t = if r.paused.is_zero() {
        t
    } else {
        format!("{t}, {} of it with the machine stalled", ms(r.paused))
    };
    match r.inherited_from {
        Some(p) => format!("{t} (still recovering from #{} as it began)", p + 1),
        None => t,
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let t = &self.timeline;
        let b = c.bounds();
        writeln!(f, "=== chaos soak: seed {} ===", c.seed)?;
        let links: Vec<String> = self
            .instances
            .iter()
            .map(|i| {
                format!(
                    "i{} {}",
                    i.index,
                    if i.via_proxy { "via proxy" } else { "direct" }
                )
            })
            .collect();
        writeln!(
            f,
            "setup: {} instances ({}), each its own tokio runtime ({} worker thread(s), {} tasks); {} keys, {} tags (key k carries g{{k % {}}}); mix: {}; {}think {}..{}; loader 0..{} after reading the origin",
            c.instances,
            links.join(", "),
            c.worker_threads,
            c.tasks_per_instance,
            c.keys,
            c.tags,
            c.tags,
            workload::mix_description(),
            if c.bulk_keys > 0 {
                format!(
                    "{}% of get_or_load calls read one of {} read-only bulk keys (kind `{}`, L1 only, preloaded into every L1); ",
                    c.bulk_share,
                    c.bulk_keys,
                    workload::BULK_KIND
                )
            } else {
                String::new()
            },
            ms(c.think.0),
            ms(c.think.1),
            ms(c.loader_max),
        )?;
        writeln!(
            f,
            "cache: prefix `{}`; kind `{}` TTL {:?}, l2_timeout {:?}, unsynced_l1_ttl {:?}, breaker_open_l1_ttl {:?}, breaker (threshold, cool-down) and tombstone TTL at their defaults (5 failures, 0.5-4 s, 60 s), stats reports off",
            self.instances
                .first()
                .map_or("?", |i| i.stats.prefix.as_str()),
            workload::KIND,
            c.ttl,
            c.l2_timeout,
            c.unsynced_l1_ttl,
            c.breaker_open_l1_ttl
        )?;
        let lb = |op| ms(b.latency.bound(op, Duration::ZERO));
        writeln!(
            f,
            "bounds: stale {}; recovery {} after a fault's end: a write is due at a reader at its end + stale, or at end + recovery + stale of a fault it met (its window within [fault start, end + recovery]) that bears on that writer and reader (the server's: every pair; one instance's link cut, flapping or over the deadline: pairs with exactly that instance on one side), or + {} x the added RTT for latency under the deadline on one side, or at a machine pause's end + stale; a set made while its writer's link was over the deadline may land late, so its version is excused for others until that fault's end + recovery + stale; latency = timeouts x {} + round trips x RTT added by a latency fault on the call's link + loader {} (loads) + slack {}: get_or_load {} ({} timeout, {} round trips), get {} ({}, {}), set_with {} ({}, {}), invalidate/invalidate_tag {} ({}, {}); growth: RSS +max({} MiB, {:.0}%), tasks +max({:.0}, {:.0}%) first vs last quarter",
            ms(b.stale),
            ms(b.recovery),
            LatencyBounds::MAX_ROUND_TRIPS,
            ms(b.latency.l2_timeout),
            ms(b.latency.loader_max),
            ms(b.latency.slack),
            lb(Op::GetOrLoad),
            LatencyBounds::timeouts(Op::GetOrLoad),
            LatencyBounds::round_trips(Op::GetOrLoad),
            lb(Op::Get),
            LatencyBounds::timeouts(Op::Get),
            LatencyBounds::round_trips(Op::Get),
            lb(Op::Set),
            LatencyBounds::timeouts(Op::Set),
            LatencyBounds::round_trips(Op::Set),
            lb(Op::Invalidate),
            LatencyBounds::timeouts(Op::Invalidate),
            LatencyBounds::round_trips(Op::Invalidate),
            b.growth.rss_abs >> 20,
            b.growth.rss_rel * 100.0,
            b.growth.tasks_abs,
            b.growth.tasks_rel * 100.0,
        )?;
        writeln!(
            f,
            "timeline: workload {}..{}, faults {}..{}, final reads at {} ({}), checked at {}",
            secs(t.workload_start),
            secs(t.workload_stopped),
            secs(t.faults_from),
            secs(t.faults_over),
            secs(t.final_reads),
            match &self.settled {
                Ok(d) => format!(
                    "every instance had handled every message sent before {} after the workload stopped",
                    ms(*d)
                ),
                Err(e) => format!("NOT SETTLED: {e}"),
            },
            secs(t.end)
        )?;

        let workload_secs = (t.workload_stopped - t.workload_start) as f64 / 1e9;
        let total: u64 = self
            .ops
            .iter()
            .filter(|o| o.op != Op::FinalRead)
            .map(|o| o.calls)
            .sum();
        writeln!(
            f,
            "\noperations: {total} calls in {workload_secs:.1} s ({:.0}/s), plus final reads",
            total as f64 / workload_secs.max(1e-9)
        )?;
        writeln!(
            f,
            "  {:<18} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "call", "count", "errors", "p50", "p99", "p99.9", "max", "bound*"
        )?;
        for o in &self.ops {
            writeln!(
                f,
                "  {:<18} {:>8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
                o.op.name(),
                o.calls,
                o.errors,
                ms(o.p50),
                ms(o.p99),
                ms(o.p999),
                ms(o.max),
                ms(b.latency.bound(o.op, Duration::ZERO))
            )?;
        }

        writeln!(
            f,
            "  (* without a latency fault on the call's link; during one, its round trips are added)"
        )?;
        let by_kind = self.faults_by_kind();
        writeln!(
            f,
            "\nfaults injected: {} ({} kinds of {}), {} could not be injected",
            by_kind.values().sum::<usize>(),
            by_kind.len(),
            FaultKind::ALL.len(),
            self.driver_failures()
        )?;
        for (k, n) in &by_kind {
            let recs: Vec<&Recovery> = self
                .findings
                .recoveries
                .iter()
                .filter(|r| self.faults[r.fault].kind == *k)
                .collect();
            let worst = recs
                .iter()
                .filter(|r| r.inherited_from.is_none())
                .map(|r| r.at_most.unwrap_or(Duration::MAX).max(r.at_least))
                .max();
            writeln!(
                f,
                "  {:<26} {:>3}  worst recovery (faults begun healthy) {}",
                k.name(),
                n,
                match worst {
                    None => "-".into(),
                    Some(Duration::MAX) => "not seen before the next fault".into(),
                    Some(d) => format!("<= {}", ms(d)),
                }
            )?;
        }
        writeln!(f, "  timeline:")?;
        for (i, fl) in self.faults.iter().enumerate() {
            let rec = self
                .findings
                .recoveries
                .iter()
                .find(|r| r.fault == i)
                .map_or("-".into(), |r| {
                    let t = recovery_text(r);
                    if r.unhealthy.is_empty() {
                        t
                    } else {
                        format!("{t}; last unhealthy: {}", r.unhealthy)
                    }
                });
            writeln!(
                f,
                "  #{:<3} {}..{} {:<30} {} ; recovered {}",
                i + 1,
                secs(fl.start_ns),
                secs(fl.end_ns),
                fl.label(),
                fl.detail,
                rec
            )?;
        }

        writeln!(f, "\ncache counters at the end:")?;
        for i in &self.instances {
            let s = &i.stats;
            let br = s.breaker.as_ref();
            let bp = s.backplane.as_ref();
            let p = &s.pending_invalidations;
            writeln!(
                f,
                "  i{}: breaker {:?} opened {} rejected {}; backplane disconnects {} resyncs {} publish failures {}; pending queued {} replayed {} dropped {} left {}; L2 writes {} skipped {} timeouts {} errors {} write conflicts {} tag rejections {}; loader calls {}; hit rate {:.3}",
                i.index,
                br.map(|b| b.state),
                br.map_or(0, |b| b.opens),
                br.map_or(0, |b| b.rejected),
                bp.map_or(0, |b| b.disconnects),
                bp.map_or(0, |b| b.resyncs),
                bp.map_or(0, |b| b.publish_failures),
                p.queued,
                p.replayed,
                p.dropped,
                p.pending,
                s.total.l2.writes,
                s.total.l2.skipped,
                s.total.l2.timeouts,
                s.total.l2.errors,
                s.total.l2.write_conflicts,
                s.total.l2.tag_rejections,
                s.total.loader.calls,
                s.total.hit_rate,
            )?;
        }
        let machine: Vec<&Stall> = self
            .stalls
            .iter()
            .filter(|s| s.instance.is_none())
            .collect();
        let runtime: Vec<&Stall> = self
            .stalls
            .iter()
            .filter(|s| s.instance.is_some())
            .collect();
        writeln!(
            f,
            "stall probes (10 ms period, late by >= {}): machine {} (max {}), instance runtimes {} (max {})",
            ms(STALL_MIN),
            machine.len(),
            machine.iter().map(|s| s.late).max().map_or("-".into(), ms),
            runtime.len(),
            runtime.iter().map(|s| s.late).max().map_or("-".into(), ms),
        )?;
        if let (Some(first), Some(last)) = (self.growth.first(), self.growth.last()) {
            writeln!(
                f,
                "memory/tasks: RSS (history excluded) {:.1} MiB -> {:.1} MiB; alive tasks per runtime {:?} -> {:?} ({} samples)",
                first.rss_bytes as f64 / (1 << 20) as f64,
                last.rss_bytes as f64 / (1 << 20) as f64,
                first.tasks,
                last.tasks,
                self.growth.len()
            )?;
        }

        if !self.findings.excused.is_empty() {
            writeln!(
                f,
                "slow calls excused (their excess lies within machine stalls: the harness's plain thread could not run either): {}",
                self.findings.excused.len()
            )?;
            for e in self.findings.excused.iter().take(3) {
                writeln!(
                    f,
                    "  - i{} {} k{} [{}..{}] took {} (bound {}), {} of it with the machine stalled",
                    e.record.instance,
                    e.record.op.name(),
                    e.record.key,
                    secs(e.record.start_ns),
                    secs(e.record.end_ns),
                    ms(e.record.duration()),
                    ms(e.bound),
                    ms(e.paused)
                )?;
            }
        }
        let cov = &self.findings.coverage;
        let pc = |n: u64| 100.0 * n as f64 / cov.reads.max(1) as f64;
        writeln!(
            f,
            "stale-read coverage (at least {:.0}% strict to pass): {} reads returned a value; {} ({:.1}%) held to the newest write of their key that had returned >= stale before (it was due at the reader), {} of them during a fault or its recovery allowance; {} ({:.1}%) held only to older writes (a fault or pause delayed the newest for that writer and reader); {} ({:.1}%) returned a version a set made over its link's deadline may have put back; {} ({:.1}%) with no write of their key due yet",
            100.0 * super::MIN_STRICT_COVERAGE,
            cov.reads,
            cov.strict,
            pc(cov.strict),
            cov.strict_during_faults,
            cov.excused,
            pc(cov.excused),
            cov.resurfaced,
            pc(cov.resurfaced),
            cov.nothing_due,
            pc(cov.nothing_due),
        )?;
        let by_class = self.violations_by_class();
        let total: usize = by_class.values().sum();
        let episodes = stale_episodes(&self.findings);
        writeln!(f, "\nviolations: {total}")?;
        for class in Class::ALL {
            let n = by_class.get(&class).copied().unwrap_or(0);
            if class == Class::StaleRead && n > 0 {
                let delayed = |v: &Violation| {
                    matches!(
                        v,
                        Violation::StaleRead {
                            fault_delayed: true,
                            ..
                        }
                    )
                };
                let source = |v: &Violation| match v {
                    Violation::StaleRead { read, .. } => read.source,
                    _ => None,
                };
                let ep_delayed = episodes.iter().filter(|(_, v, _)| delayed(v)).count();
                let healthy = |v: &Violation| match v {
                    Violation::StaleRead { read, newer, .. } => {
                        self.all_healthy(newer.start_ns, read.start_ns)
                    }
                    _ => false,
                };
                let ep_healthy = episodes.iter().filter(|(_, v, _)| healthy(v)).count();
                let mut by_source: BTreeMap<&str, usize> = BTreeMap::new();
                for v in self.findings.of(Class::StaleRead) {
                    *by_source
                        .entry(source(v).map_or("get (L1 or L2)", |s| s.name()))
                        .or_default() += 1;
                }
                let by_source: Vec<String> =
                    by_source.iter().map(|(s, n)| format!("{n} {s}")).collect();
                writeln!(
                    f,
                    "  {:<18} {n} in {} episodes (instance, key, old version): {} after a write a fault or pause delayed for that reader, {} after a write with nothing delaying it (due at its end + stale); {} with every instance healthy (breaker closed, nothing pending, subscribed) from the write to the read, {} with an instance unhealthy meanwhile; reads served from: {}",
                    class.name(),
                    episodes.len(),
                    ep_delayed,
                    episodes.len() - ep_delayed,
                    ep_healthy,
                    episodes.len() - ep_healthy,
                    by_source.join(", ")
                )?;
            } else {
                writeln!(f, "  {:<18} {n}", class.name())?;
            }
        }
        if total > 0 {
            // Every class gets examples: a share of the detail lines each, in class order.
            let classes = by_class.len().max(1);
            let per_class = (self.detailed / classes).max(3);
            writeln!(f, "\nin detail (up to {per_class} per class):")?;
            for class in Class::ALL {
                if class == Class::StaleRead {
                    for (n, v, last) in self.pick_episodes(&episodes, per_class) {
                        writeln!(
                            f,
                            "  - {} [episode: {n} reads, last at {}]",
                            self.describe(v),
                            secs(*last)
                        )?;
                    }
                } else {
                    for v in self.findings.of(class).take(per_class) {
                        writeln!(f, "  - {}", self.describe(v))?;
                    }
                }
            }
        }
        writeln!(
            f,
            "\nresult: {} (seed {}; rerun: cargo run --release -p cache-tests --bin soak -- --seed {} --secs {} --instances {} --keys {} --tags {} --tasks {} --bulk-keys {} --think-ms {}-{})",
            if total == 0
                && self.driver_failures() == 0
                && self.settled.is_ok()
                && self.findings.coverage.strict_fraction() >= super::MIN_STRICT_COVERAGE
            {
                "PASS"
            } else {
                "FAIL"
            },
            c.seed,
            c.seed,
            c.duration.as_secs(),
            c.instances,
            c.keys,
            c.tags,
            c.tasks_per_instance,
            c.bulk_keys,
            c.think.0.as_millis(),
            c.think.1.as_millis(),
        )
    }
}
