//! `cachectl top`: a live view of the instances and kinds under a prefix, over the last minute of
//! each instance's published report (`rates.last_1m`), redrawn every second.

use cache_core::admin::InstanceReport;
use cache_core::stats::{TierStats, WindowStats};
use cache_core::BreakerState;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::args::TopArgs;
use crate::error::{CliError, Result};
use crate::output::{self, Table};
use crate::stats::{breaker_text, read_reports};
use crate::target::Target;

/// Home the cursor and clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Miss reasons shown per kind.
const TOP_REASONS: usize = 3;

/// One instance, over the last minute of its report.
#[derive(Debug, Clone, Serialize)]
struct InstanceRow {
    instance: String,
    hostname: String,
    pid: u32,
    /// How old the report is.
    age_ms: u64,
    /// How often the instance reports.
    interval_ms: u64,
    /// The seconds the window covers (`None`: a report without rates, from an older release).
    window_secs: Option<f64>,
    requests_per_sec: Option<f64>,
    /// `None` also when there were no lookups in the window.
    hit_rate: Option<f64>,
    l2_read_p99_us: Option<f64>,
    loader_calls_per_sec: Option<f64>,
    l1_bytes: u64,
    l1_max_bytes: u64,
    breaker: Option<BreakerState>,
    backplane_subscribed: Option<bool>,
}

/// One miss reason of a kind, summed over the instances.
#[derive(Debug, Clone, Serialize)]
struct Reason {
    tier: &'static str,
    reason: &'static str,
    count: u64,
}

/// One kind, summed over the instances' last minute.
#[derive(Debug, Clone, Default, Serialize)]
struct KindRow {
    kind: String,
    /// Instances that looked it up in the window.
    instances: usize,
    lookups: u64,
    requests_per_sec: f64,
    hit_rate: Option<f64>,
    loader_calls: u64,
    top_miss_reasons: Vec<Reason>,
    loader_time_saved_secs: f64,
    /// `None` unless the kind has a load cost.
    cost_saved: Option<f64>,
    cost_spent: Option<f64>,
}

/// What one frame shows.
#[derive(Debug, Serialize)]
struct Frame {
    t_ms: u64,
    prefix: String,
    redis: String,
    instances: Vec<InstanceRow>,
    kinds: Vec<KindRow>,
    unreadable_reports: Vec<String>,
}

fn instance_row(r: &InstanceReport, now_ms: u64) -> InstanceRow {
    let w: Option<&WindowStats> = r.rates.as_ref().map(|r| &r.last_1m);
    let t = w.map(|w| &w.total);
    InstanceRow {
        instance: r.instance.clone(),
        hostname: r.hostname.clone(),
        pid: r.pid,
        age_ms: now_ms.saturating_sub(r.timestamp_ms),
        interval_ms: r.interval_ms,
        window_secs: w.map(|w| w.seconds),
        requests_per_sec: w.map(|w| w.requests_per_sec),
        hit_rate: t.filter(|t| t.lookups > 0).map(|t| t.hit_rate),
        l2_read_p99_us: t
            .map(|t| &t.l2.read_latency)
            .filter(|l| l.count > 0)
            .map(|l| l.p99_us),
        loader_calls_per_sec: w.map(|w| w.loader_calls_per_sec),
        l1_bytes: r.stats.total.l1.bytes,
        l1_max_bytes: r.stats.total.l1.max_bytes,
        breaker: r.stats.breaker.as_ref().map(|b| b.state),
        backplane_subscribed: r.stats.backplane.as_ref().map(|b| b.subscribed),
    }
}

/// Every kind seen in the instances' last minute, summed: rates are each instance's count over
/// its own window, added up; the hit rate is recomputed from the sums.
fn kind_rows(reports: &[InstanceReport]) -> Vec<KindRow> {
    let mut rows: BTreeMap<&str, KindRow> = BTreeMap::new();
    let mut reasons: BTreeMap<(&str, &'static str, &'static str), u64> = BTreeMap::new();
    let mut answered: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reports {
        let Some(w) = r.rates.as_ref().map(|r| &r.last_1m) else {
            continue;
        };
        for (name, t) in &w.kinds {
            if t.lookups == 0 && t.loader.calls == 0 {
                continue;
            }
            let row = rows.entry(name).or_insert_with(|| KindRow {
                kind: name.clone(),
                ..KindRow::default()
            });
            add_kind(row, t, w.seconds);
            *answered.entry(name).or_default() += t.lookups.saturating_sub(t.loader.calls);
            for (tier, m) in [("l1", &t.l1.miss_reasons), ("l2", &t.l2.miss_reasons)] {
                for (reason, n) in m.iter().filter(|(_, n)| *n > 0) {
                    *reasons.entry((name, tier, reason)).or_default() += n;
                }
            }
        }
    }
    for ((name, tier, reason), count) in reasons {
        if let Some(row) = rows.get_mut(name) {
            row.top_miss_reasons.push(Reason {
                tier,
                reason,
                count,
            });
        }
    }
    let mut out: Vec<KindRow> = rows
        .into_iter()
        .map(|(name, mut row)| {
            let a = answered.get(name).copied().unwrap_or(0);
            row.hit_rate = (row.lookups > 0).then(|| a as f64 / row.lookups as f64);
            row.top_miss_reasons
                .sort_by(|a, b| b.count.cmp(&a.count).then(a.tier.cmp(b.tier)));
            row.top_miss_reasons.truncate(TOP_REASONS);
            row
        })
        .collect();
    out.sort_by(|a, b| {
        b.requests_per_sec
            .total_cmp(&a.requests_per_sec)
            .then(a.kind.cmp(&b.kind))
    });
    out
}

fn add_kind(row: &mut KindRow, t: &TierStats, secs: f64) {
    row.instances += 1;
    row.lookups += t.lookups;
    row.loader_calls += t.loader.calls;
    if secs > 0.0 {
        row.requests_per_sec += t.lookups as f64 / secs;
    }
    row.loader_time_saved_secs += t.savings.loader_time_saved_secs;
    if t.savings.cost_per_load.is_some() {
        *row.cost_saved.get_or_insert(0.0) += t.savings.cost_saved;
        *row.cost_spent.get_or_insert(0.0) += t.savings.cost_spent;
    }
}

async fn frame(t: &Target, prefix: &str) -> Result<Frame> {
    let (reports, unreadable) = read_reports(t, prefix).await?;
    let now = output::now_ms();
    Ok(Frame {
        t_ms: now,
        prefix: prefix.to_owned(),
        redis: t.display.clone(),
        instances: reports.iter().map(|r| instance_row(r, now)).collect(),
        kinds: kind_rows(&reports),
        unreadable_reports: unreadable,
    })
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn money(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

fn age(ms: u64) -> String {
    output::human_duration(Duration::from_millis(ms))
}

/// The frame as text.
fn render(f: &Frame) -> String {
    let mut out = format!(
        "cachectl top: prefix \"{}\" on {}, {}\n",
        f.prefix,
        f.redis,
        output::utc(f.t_ms)
    );
    if f.instances.is_empty() {
        out.push_str(&format!(
            "\nNo instance reports under prefix \"{}\" (instances publish every \
             stats_report_interval while they run with an L2).\n",
            f.prefix
        ));
        return out;
    }
    let ages = f.instances.iter().map(|i| i.age_ms);
    let (newest, oldest) = (ages.clone().min().unwrap_or(0), ages.max().unwrap_or(0));
    let mut intervals: Vec<u64> = f.instances.iter().map(|i| i.interval_ms).collect();
    intervals.sort_unstable();
    intervals.dedup();
    let intervals: Vec<String> = intervals.into_iter().map(|ms| age(ms.max(1))).collect();
    // Younger instances' windows cover less than a minute: say how much.
    let covered: Vec<u64> = f
        .instances
        .iter()
        .filter_map(|i| i.window_secs)
        .map(|s| (s * 1e3) as u64)
        .collect();
    let covered = match (covered.iter().min(), covered.iter().max()) {
        (Some(lo), Some(hi)) if age(*lo) == age(*hi) => format!(", covering {}", age(*lo)),
        (Some(lo), Some(hi)) => format!(", covering {} to {}", age(*lo), age(*hi)),
        _ => String::new(),
    };
    out.push_str(&format!(
        "{} instance(s); figures over the last minute of each{covered}, as of its last report \
         (reports every {}; data {} to {} old)\n\n",
        f.instances.len(),
        intervals.join(" / "),
        age(newest),
        age(oldest)
    ));
    let mut t = Table::new(&[
        "INSTANCE",
        "HOST",
        "PID",
        "AGE",
        "REQ/S",
        "HIT RATE",
        "L2 P99",
        "LOADS/S",
        "L1 BYTES / BUDGET",
        "BREAKER",
        "BACKPLANE",
    ]);
    for i in &f.instances {
        t.row(vec![
            i.instance.clone(),
            i.hostname.clone(),
            i.pid.to_string(),
            age(i.age_ms),
            opt(i.requests_per_sec, rate),
            opt(i.hit_rate, pct),
            opt(i.l2_read_p99_us, |us| {
                output::human_duration(Duration::from_secs_f64(us / 1e6))
            }),
            opt(i.loader_calls_per_sec, rate),
            format!(
                "{} / {} ({})",
                output::bytes(i.l1_bytes),
                output::bytes(i.l1_max_bytes),
                output::percent(i.l1_bytes, i.l1_max_bytes)
            ),
            opt(i.breaker, breaker_text),
            opt(i.backplane_subscribed, |s| {
                if s {
                    "subscribed".into()
                } else {
                    "DOWN".into()
                }
            }),
        ]);
    }
    t.right(&[2, 3, 4, 5, 6, 7, 8]);
    out.push_str(&t.render());
    if f.instances.iter().any(|i| i.window_secs.is_none()) {
        out.push_str("(-: a report without rates, from an older release)\n");
    }
    out.push('\n');
    if f.kinds.is_empty() {
        out.push_str("No lookups in the last minute.\n");
    } else {
        let costs = f.kinds.iter().any(|k| k.cost_saved.is_some());
        let mut header = vec![
            "KIND",
            "INSTANCES",
            "REQ/S",
            "HIT RATE",
            "TOP MISS REASONS",
            "TIME SAVED",
        ];
        if costs {
            header.extend(["COST SAVED", "COST SPENT"]);
        }
        let mut t = Table::new(&header);
        for k in &f.kinds {
            let reasons: Vec<String> = k
                .top_miss_reasons
                .iter()
                .map(|r| format!("{} {} {}", r.tier, r.reason, r.count))
                .collect();
            let mut row = vec![
                k.kind.clone(),
                k.instances.to_string(),
                rate(k.requests_per_sec),
                opt(k.hit_rate, pct),
                if reasons.is_empty() {
                    "-".into()
                } else {
                    reasons.join(", ")
                },
                age((k.loader_time_saved_secs * 1e3).round() as u64),
            ];
            if costs {
                row.push(opt(k.cost_saved, money));
                row.push(opt(k.cost_spent, money));
            }
            t.row(row);
        }
        t.right(&[1, 2, 3, 5, 6, 7]);
        out.push_str(&t.render());
    }
    if !f.unreadable_reports.is_empty() {
        out.push_str(&format!(
            "\nSkipped {} key(s) that do not hold an instance report.\n",
            f.unreadable_reports.len()
        ));
    }
    out
}

/// Writes one frame: JSON on one line, or text (after clearing the screen when `clear`).
fn show(out: &mut impl Write, f: &Frame, json: bool, clear: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, f)?;
        writeln!(out)?;
    } else {
        if clear {
            out.write_all(CLEAR.as_bytes())?;
        }
        out.write_all(render(f).as_bytes())?;
    }
    out.flush()
}

/// Runs `cachectl top` until Ctrl-C (or `--iterations` frames, or one with `--once`). The screen
/// is cleared between frames only when stdout is a terminal; otherwise (a pipe, a file) frames
/// follow each other, separated by a blank line.
pub(crate) async fn run(t: &Target, prefix: &str, a: &TopArgs, json: bool) -> Result<()> {
    let limit = if a.once { Some(1) } else { a.iterations };
    let live = !a.once && std::io::stdout().is_terminal();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut tick = tokio::time::interval(a.interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = 0u64;
    while limit.is_none_or(|l| shown < l) {
        // Ctrl-C first: polling it installs the handler, before the first frame.
        tokio::select! {
            biased;
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {}
        }
        let f = tokio::select! {
            biased;
            _ = &mut ctrl_c => break,
            f = frame(t, prefix) => f,
        };
        let f = match f {
            Ok(f) => f,
            // One frame asked for: its error is the command's.
            Err(e) if limit == Some(1) => return Err(e),
            // A live view outlasts a Redis that went away: say so, and try again.
            Err(e) => {
                let mut out = std::io::stdout().lock();
                if live {
                    out.write_all(CLEAR.as_bytes())?;
                }
                writeln!(out, "cachectl top: {e}; retrying")?;
                out.flush()?;
                shown += 1;
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        if shown > 0 && !live && !json {
            out.write_all(b"\n")?;
        }
        show(&mut out, &f, json, live).map_err(CliError::from)?;
        shown += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(instance: &str, kinds: serde_json::Value, secs: f64) -> InstanceReport {
        serde_json::from_value(serde_json::json!({
            "instance": instance, "hostname": "h", "pid": 7, "timestamp_ms": 1_000,
            "interval_ms": 5000,
            "stats": {
                "prefix": "p", "l2_configured": true, "breaker": null, "backplane": null,
                "tracked_tag_invalidations": 0, "pending_invalidations": {},
                "total": {"l1": {"bytes": 1024, "max_bytes": 4096}}, "kinds": {}
            },
            "rates": {"last_1m": {"seconds": secs, "requests_per_sec": 2.0, "kinds": kinds}}
        }))
        .expect("a report")
    }

    #[test]
    fn kinds_are_summed_over_instances_with_their_own_windows() {
        let k = |lookups: u64, loads: u64, absent: u64| {
            serde_json::json!({"k": {
                "lookups": lookups, "loader": {"calls": loads},
                "l2": {"miss_reasons": {"absent": absent}},
                "l1": {"miss_reasons": {"expired": 1}},
                "savings": {"loader_time_saved_secs": 1.5, "cost_per_load": 0.01,
                            "cost_saved": 0.5, "cost_spent": 0.25}
            }})
        };
        let rows = kind_rows(&[
            report("a", k(60, 30, 30), 60.0),
            report("b", k(40, 10, 10), 20.0),
        ]);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.instances, r.lookups, r.loader_calls), (2, 100, 40));
        assert!((r.requests_per_sec - 3.0).abs() < 1e-9, "60/60 + 40/20");
        assert_eq!(r.hit_rate, Some(0.6));
        assert_eq!(
            (r.top_miss_reasons[0].tier, r.top_miss_reasons[0].reason),
            ("l2", "absent")
        );
        assert_eq!(r.top_miss_reasons[0].count, 40);
        assert!((r.loader_time_saved_secs - 3.0).abs() < 1e-9);
        assert_eq!(r.cost_saved, Some(1.0));
    }

    #[test]
    fn a_frame_shows_instances_and_kinds_and_clears_only_when_asked() {
        let reports = [report("a", serde_json::json!({"k": {"lookups": 10}}), 60.0)];
        let f = Frame {
            t_ms: 6_000,
            prefix: "p".into(),
            redis: "redis://x".into(),
            instances: reports.iter().map(|r| instance_row(r, 6_000)).collect(),
            kinds: kind_rows(&reports),
            unreadable_reports: vec![],
        };
        let mut plain = Vec::new();
        show(&mut plain, &f, false, false).unwrap();
        let plain = String::from_utf8(plain).unwrap();
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(plain.contains("1.0 KiB / 4.0 KiB (25.0%)"), "{plain}");
        assert!(plain.contains("data 5s to 5s old"), "{plain}");
        assert!(
            plain.contains("last minute of each, covering 1m,"),
            "{plain}"
        );
        let mut live = Vec::new();
        show(&mut live, &f, false, true).unwrap();
        assert!(String::from_utf8(live).unwrap().starts_with(CLEAR));
    }
}
