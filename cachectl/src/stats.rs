//! `cachectl stats`: the reports that live instances publish under `{prefix}:stats:*` (listed
//! in the index `{prefix}:instances`).

use cache_core::{admin::InstanceReport, stats::TierStats};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::Result;
use crate::output::{self, Table};
use crate::target::Target;
use crate::Report;

/// Every readable instance report, oldest host first; keys whose value is not a report are
/// returned apart (they are skipped, not fatal). The reports are found through the index of live
/// instances (`cache_core::admin::instances_key`, one round trip), or, when there is none
/// (instances of releases before it), by scanning for their keys.
pub(crate) async fn read_reports(
    t: &Target,
    prefix: &str,
) -> Result<(Vec<InstanceReport>, Vec<String>)> {
    let since = output::now_ms().saturating_sub(
        u64::try_from(cache_core::admin::INSTANCE_INDEX_KEEP.as_millis()).unwrap_or(u64::MAX),
    );
    let mut cmd = redis::cmd("ZRANGEBYSCORE");
    cmd.arg(cache_core::admin::instances_key(prefix))
        .arg(since)
        .arg("+inf");
    let ids: Vec<String> = t.query("ZRANGEBYSCORE", &cmd).await?;
    let pairs = if ids.is_empty() {
        let pattern = cache_core::admin::stats_key_pattern(prefix);
        t.scan(&pattern, None, |keys| async move {
            let values = t.get_many(&keys).await?;
            Ok(keys.into_iter().zip(values).collect::<Vec<_>>())
        })
        .await?
    } else {
        let keys: Vec<String> = ids
            .iter()
            .map(|id| cache_core::admin::report_key(prefix, id))
            .collect();
        let values = t.get_many(&keys).await?;
        keys.into_iter().zip(values).collect()
    };
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    for (key, value) in pairs {
        // A report that expired between SCAN and GET is simply gone.
        let Some(bytes) = value else { continue };
        match serde_json::from_slice::<InstanceReport>(&bytes) {
            Ok(r) => reports.push(r),
            Err(e) => {
                tracing::warn!(key, error = %e, "not an instance report: skipped");
                unreadable.push(key);
            }
        }
    }
    reports
        .sort_by(|a, b| (&a.hostname, a.pid, &a.instance).cmp(&(&b.hostname, b.pid, &b.instance)));
    Ok((reports, unreadable))
}

/// Counters summed over instances (or kinds), with the hit rates recomputed from the sums.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Totals {
    pub(crate) l1_hits: u64,
    pub(crate) l1_misses: u64,
    pub(crate) l1_hit_rate: f64,
    pub(crate) l2_hits: u64,
    pub(crate) l2_misses: u64,
    pub(crate) l2_hit_rate: f64,
    pub(crate) loader_calls: u64,
    pub(crate) loader_errors: u64,
    /// Lookups answered without calling the loader / all lookups.
    pub(crate) hit_rate: f64,
    pub(crate) l2_errors: u64,
    pub(crate) l2_timeouts: u64,
    pub(crate) l2_skipped: u64,
    pub(crate) l2_writes: u64,
    pub(crate) sets: u64,
    pub(crate) invalidations: u64,
    pub(crate) l1_entries: u64,
    pub(crate) l1_bytes: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Totals {
    fn add(&mut self, t: &TierStats) {
        self.l1_hits += t.l1.hits;
        self.l1_misses += t.l1.misses;
        self.l2_hits += t.l2.hits;
        self.l2_misses += t.l2.misses;
        self.loader_calls += t.loader.calls;
        self.loader_errors += t.loader.errors;
        self.l2_errors += t.l2.errors;
        self.l2_timeouts += t.l2.timeouts;
        self.l2_skipped += t.l2.skipped;
        self.l2_writes += t.l2.writes;
        self.sets += t.sets;
        self.invalidations += t.invalidations;
        self.l1_entries += t.l1.entries;
        self.l1_bytes += t.l1.bytes;
        self.rates();
    }

    /// The same definitions as the library's `TierStats`.
    fn rates(&mut self) {
        self.l1_hit_rate = ratio(self.l1_hits, self.l1_hits + self.l1_misses);
        self.l2_hit_rate = ratio(self.l2_hits, self.l2_hits + self.l2_misses);
        let lookups = (self.l1_hits + self.l1_misses).max(self.loader_calls);
        self.hit_rate = ratio(lookups - self.loader_calls, lookups);
    }

    fn of(t: &TierStats) -> Self {
        let mut s = Self::default();
        s.add(t);
        s
    }

    fn lookups(&self) -> u64 {
        (self.l1_hits + self.l1_misses).max(self.loader_calls)
    }
}

#[derive(Serialize)]
struct StatsJson<'a> {
    prefix: &'a str,
    instances: &'a [InstanceReport],
    total: Totals,
    kinds: BTreeMap<String, Totals>,
    unreadable_reports: Vec<String>,
}

/// Runs `cachectl stats`.
pub(crate) async fn run(t: &Target, prefix: &str) -> Result<Report> {
    let (reports, unreadable) = read_reports(t, prefix).await?;
    let mut total = Totals::default();
    let mut kinds: BTreeMap<String, Totals> = BTreeMap::new();
    for r in &reports {
        total.add(&r.stats.total);
        for (k, s) in &r.stats.kinds {
            kinds.entry(k.clone()).or_default().add(s);
        }
    }
    kinds.retain(|_, k| k.lookups() + k.sets + k.invalidations + k.l2_writes > 0);
    let now = output::now_ms();

    let mut human = String::new();
    if reports.is_empty() {
        human.push_str(&format!(
            "No instance reports under prefix \"{prefix}\" on {}.\n\
             Instances publish every few seconds while they run with an L2 (stats_report_interval).\n",
            t.display
        ));
    } else {
        human.push_str(&format!(
            "{} instance(s) reporting under prefix \"{prefix}\" on {}\n\n",
            reports.len(),
            t.display
        ));
        let mut table = Table::new(&[
            "INSTANCE",
            "HOST",
            "PID",
            "REPORTED",
            "LOOKUPS",
            "L1 HIT",
            "L2 HIT",
            "HIT RATE",
            "REQ/S 1/5/15 MIN",
            "HIT RATE 1/5/15 MIN",
            "LOADS",
            "L2 ERR/TMO",
            "L1 ENTRIES",
            "L1 SIZE",
            "BREAKER",
        ]);
        for r in &reports {
            let s = Totals::of(&r.stats.total);
            let (per_sec, hit_rates) = windows(r);
            table.row(vec![
                r.instance.clone(),
                r.hostname.clone(),
                r.pid.to_string(),
                output::relative(r.timestamp_ms, now),
                s.lookups().to_string(),
                output::percent(s.l1_hits, s.l1_hits + s.l1_misses),
                output::percent(s.l2_hits, s.l2_hits + s.l2_misses),
                output::percent(s.lookups() - s.loader_calls, s.lookups()),
                per_sec,
                hit_rates,
                s.loader_calls.to_string(),
                format!("{}/{}", s.l2_errors, s.l2_timeouts),
                s.l1_entries.to_string(),
                output::bytes(s.l1_bytes),
                r.stats
                    .breaker
                    .as_ref()
                    .map_or("-".to_owned(), |b| breaker_text(b.state)),
            ]);
        }
        table.row(vec![
            "TOTAL".into(),
            String::new(),
            String::new(),
            String::new(),
            total.lookups().to_string(),
            output::percent(total.l1_hits, total.l1_hits + total.l1_misses),
            output::percent(total.l2_hits, total.l2_hits + total.l2_misses),
            output::percent(total.lookups() - total.loader_calls, total.lookups()),
            String::new(),
            String::new(),
            total.loader_calls.to_string(),
            format!("{}/{}", total.l2_errors, total.l2_timeouts),
            total.l1_entries.to_string(),
            output::bytes(total.l1_bytes),
            String::new(),
        ]);
        human.push_str(&table.render());
        if !kinds.is_empty() {
            human.push_str("\nBy kind (all instances):\n");
            let mut table = Table::new(&[
                "KIND",
                "LOOKUPS",
                "L1 HIT",
                "L2 HIT",
                "HIT RATE",
                "LOADS",
                "LOAD ERR",
                "SETS",
                "INVALIDATIONS",
            ]);
            for (k, s) in &kinds {
                table.row(vec![
                    k.clone(),
                    s.lookups().to_string(),
                    output::percent(s.l1_hits, s.l1_hits + s.l1_misses),
                    output::percent(s.l2_hits, s.l2_hits + s.l2_misses),
                    output::percent(s.lookups() - s.loader_calls, s.lookups()),
                    s.loader_calls.to_string(),
                    s.loader_errors.to_string(),
                    s.sets.to_string(),
                    s.invalidations.to_string(),
                ]);
            }
            human.push_str(&table.render());
        }
    }
    if !unreadable.is_empty() {
        human.push_str(&format!(
            "\nSkipped {} key(s) that do not hold an instance report: {}\n",
            unreadable.len(),
            unreadable.join(", ")
        ));
    }
    let json = serde_json::to_value(StatsJson {
        prefix,
        instances: &reports,
        total,
        kinds,
        unreadable_reports: unreadable,
    })
    .unwrap_or_default();
    Ok(Report { human, json })
}

/// An instance's requests per second and hit rates over its last 1, 5 and 15 minutes (`-` for
/// reports of releases without rates, or windows without lookups).
fn windows(r: &InstanceReport) -> (String, String) {
    let Some(rates) = &r.rates else {
        return ("-".into(), "-".into());
    };
    let ws = [&rates.last_1m, &rates.last_5m, &rates.last_15m];
    let per_sec = ws
        .iter()
        .map(|w| format!("{:.1}", w.requests_per_sec))
        .collect::<Vec<_>>()
        .join("/");
    let hits = ws
        .iter()
        .map(|w| {
            let t = &w.total;
            output::percent(t.lookups.saturating_sub(t.loader.calls), t.lookups)
        })
        .collect::<Vec<_>>()
        .join("/");
    (per_sec, hits)
}

pub(crate) fn breaker_text(s: cache_core::BreakerState) -> String {
    match s {
        cache_core::BreakerState::Closed => "closed".into(),
        cache_core::BreakerState::Open => "OPEN".into(),
        cache_core::BreakerState::HalfOpen => "half-open".into(),
    }
}

/// How late a report is, relative to its own interval.
pub(crate) fn is_late(r: &InstanceReport, now_ms: u64) -> bool {
    let age = Duration::from_millis(now_ms.saturating_sub(r.timestamp_ms));
    age > Duration::from_millis(r.interval_ms.max(1000) * 2)
}
