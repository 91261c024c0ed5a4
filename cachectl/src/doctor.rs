//! `cachectl doctor`: what to change, from every live instance's recommendations (the reports
//! they publish under `{prefix}:stats:*`) and from Redis itself (`INFO memory` on every master),
//! grouped and deduplicated, most severe first. Its exit status can gate a deploy: 0 when there is
//! nothing above `info`, [`EXIT_FINDINGS`] when there are warnings or critical findings.

use cache_core::admin::{InstanceReport, Recommendation, Severity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{CliError, Result};
use crate::output::{self, Table};
use crate::stats::{is_late, read_reports};
use crate::target::Target;
use crate::Report;

/// The exit status when there are warnings or critical findings.
pub(crate) const EXIT_FINDINGS: u8 = 3;

/// The codes of the rules about Redis itself: when the doctor could read Redis, its own reading
/// replaces what the instances last sampled (every 10 s, and on a cluster only the fullest master).
const REDIS_CODES: [&str; 3] = [
    "redis_no_maxmemory",
    "redis_noeviction",
    "redis_memory_high",
];

pub(crate) fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
        // A severity added by a newer library.
        _ => "unknown",
    }
}

/// Where a finding was seen: an instance (by its report) or a Redis node (by the doctor itself).
#[derive(Debug, Clone, Serialize)]
struct Seen {
    /// The instance id, for findings of instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    /// `host:port`, for findings the doctor read off Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    severity: Severity,
    setting: String,
    figure: String,
}

impl Seen {
    fn label(&self) -> String {
        match (&self.instance, &self.node) {
            (Some(i), _) => i.clone(),
            (None, Some(n)) => n.clone(),
            (None, None) => "?".into(),
        }
    }
}

/// One recommendation, deduplicated over the instances (or nodes) that made it.
#[derive(Debug, Serialize)]
struct Finding {
    code: String,
    /// The most severe of the instances'.
    severity: Severity,
    kind: Option<String>,
    /// `instances` or `redis`: what `count` and `of` count.
    scope: &'static str,
    /// Instances (or nodes) that made it.
    count: usize,
    /// Instances reporting (or nodes checked).
    of: usize,
    /// The most severe instance's setting and advice.
    setting: String,
    message: String,
    seen_on: Vec<Seen>,
}

#[derive(Debug, Serialize)]
struct InstanceLine {
    instance: String,
    hostname: String,
    pid: u32,
    age_ms: u64,
    late: bool,
    /// `false` for reports of releases before recommendations were published.
    has_recommendations: bool,
    recommendations: usize,
}

#[derive(Debug, Serialize)]
struct NodeLine {
    node: String,
    used_memory: u64,
    maxmemory: u64,
    maxmemory_policy: String,
}

#[derive(Debug, Serialize)]
struct DoctorJson<'a> {
    prefix: &'a str,
    redis: &'a str,
    /// The most severe finding's severity, `ok` without findings.
    status: &'static str,
    exit_code: u8,
    instances: Vec<InstanceLine>,
    /// The nodes whose memory the doctor read (empty when it could not: see `redis_check_error`).
    redis_nodes: Vec<NodeLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_check_error: Option<String>,
    findings: Vec<Finding>,
    unreadable_reports: Vec<String>,
}

/// Reads `INFO memory` on every master and runs the library's Redis rules on it.
async fn check_redis(
    t: &Target,
    refusing_writes: bool,
) -> Result<(Vec<NodeLine>, Vec<(String, Recommendation)>)> {
    let mut nodes = Vec::new();
    let mut recs = Vec::new();
    for node in t.nodes().await? {
        let info: String = t
            .query_on(&node, "INFO memory", redis::cmd("INFO").arg("memory"))
            .await?;
        let found =
            cache_core::admin::recommend_redis(&info, refusing_writes).ok_or_else(|| {
                CliError::Redis {
                    what: format!("INFO memory on {}", node.label),
                    target: t.display.clone(),
                    detail: "the reply has no used_memory, maxmemory or maxmemory_policy".into(),
                }
            })?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or("")
                .to_owned()
        };
        nodes.push(NodeLine {
            node: node.label.clone(),
            used_memory: field("used_memory").parse().unwrap_or(0),
            maxmemory: field("maxmemory").parse().unwrap_or(0),
            maxmemory_policy: field("maxmemory_policy"),
        });
        recs.extend(found.into_iter().map(|r| (node.label.clone(), r)));
    }
    Ok((nodes, recs))
}

/// Groups recommendations by (code, kind): the most severe first, then the most widespread.
fn group(
    from_instances: &[(&InstanceReport, &Recommendation)],
    from_redis: &[(String, Recommendation)],
    instances: usize,
    nodes: usize,
) -> Vec<Finding> {
    let mut groups: BTreeMap<(String, Option<String>), Finding> = BTreeMap::new();
    let mut add = |r: &Recommendation, seen: Seen, scope: &'static str, of: usize| {
        let f = groups
            .entry((r.code.clone(), r.kind.clone()))
            .or_insert_with(|| Finding {
                code: r.code.clone(),
                severity: r.severity,
                kind: r.kind.clone(),
                scope,
                count: 0,
                of,
                setting: r.setting.clone(),
                message: r.message.clone(),
                seen_on: Vec::new(),
            });
        if r.severity > f.severity {
            f.severity = r.severity;
            f.setting = r.setting.clone();
            f.message = r.message.clone();
        }
        f.count += 1;
        f.seen_on.push(seen);
    };
    for (rep, r) in from_instances {
        let seen = Seen {
            instance: Some(rep.instance.clone()),
            hostname: Some(rep.hostname.clone()),
            pid: Some(rep.pid),
            node: None,
            severity: r.severity,
            setting: r.setting.clone(),
            figure: r.figure.clone(),
        };
        add(r, seen, "instances", instances);
    }
    for (node, r) in from_redis {
        let seen = Seen {
            instance: None,
            hostname: None,
            pid: None,
            node: Some(node.clone()),
            severity: r.severity,
            setting: r.setting.clone(),
            figure: r.figure.clone(),
        };
        add(r, seen, "redis", nodes);
    }
    let mut out: Vec<Finding> = groups.into_values().collect();
    for f in &mut out {
        f.seen_on
            .sort_by(|a, b| b.severity.cmp(&a.severity).then(a.label().cmp(&b.label())));
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.count.cmp(&a.count))
            .then(a.code.cmp(&b.code))
            .then(a.kind.cmp(&b.kind))
    });
    out
}

/// The text of one finding: a heading, then its figures (identical figures once, with where they
/// were seen), the setting to change and the advice.
fn render_finding(f: &Finding, out: &mut String) {
    let what = match &f.kind {
        Some(k) => format!("kind \"{k}\""),
        None if f.scope == "redis" || REDIS_CODES.contains(&f.code.as_str()) => "Redis".to_owned(),
        None => "cache".to_owned(),
    };
    let on = match f.scope {
        "redis" => format!("on {} of {} node(s)", f.count, f.of),
        _ => format!("on {} of {} instance(s)", f.count, f.of),
    };
    out.push_str(&format!(
        "{:<8}  {}  {what}, {on}\n",
        severity_name(f.severity).to_uppercase(),
        f.code
    ));
    // Identical figures once, with the instances (or nodes) that gave them.
    let mut figures: Vec<(&str, Vec<String>)> = Vec::new();
    for s in &f.seen_on {
        match figures.iter_mut().find(|(fig, _)| *fig == s.figure) {
            Some((_, who)) => who.push(s.label()),
            None => figures.push((&s.figure, vec![s.label()])),
        }
    }
    for (i, (fig, who)) in figures.iter().enumerate() {
        let shown: Vec<&str> = who.iter().take(3).map(String::as_str).collect();
        let more = who.len().saturating_sub(shown.len());
        out.push_str(&format!(
            "  {:<8} {fig}  [{}{}]\n",
            if i == 0 { "figure" } else { "" },
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    let mut settings: Vec<&str> = vec![f.setting.as_str()];
    for s in &f.seen_on {
        if !settings.contains(&s.setting.as_str()) {
            settings.push(&s.setting);
        }
    }
    for (i, s) in settings.iter().enumerate() {
        out.push_str(&format!(
            "  {:<8} {s}\n",
            if i == 0 { "setting" } else { "" }
        ));
    }
    out.push_str(&format!("  {:<8} {}\n", "advice", f.message));
}

/// Runs `cachectl doctor`: the report, and the exit status it calls for (0, or
/// [`EXIT_FINDINGS`]).
pub(crate) async fn run(t: &Target, prefix: &str) -> Result<(Report, u8)> {
    let (reports, unreadable) = read_reports(t, prefix).await?;
    let now = output::now_ms();
    let refusing_writes = reports.iter().any(|r| r.stats.l2_refusing_writes);
    let (redis_nodes, from_redis, redis_check_error) = match check_redis(t, refusing_writes).await {
        Ok((nodes, recs)) => (nodes, recs, None),
        // An ACL user without INFO, say: the instances' last readings stand in.
        Err(e) => (Vec::new(), Vec::new(), Some(e.to_string())),
    };
    let redis_checked = redis_check_error.is_none();
    let from_instances: Vec<(&InstanceReport, &Recommendation)> = reports
        .iter()
        .flat_map(|rep| rep.recommendations.iter().map(move |r| (rep, r)))
        .filter(|(_, r)| !(redis_checked && REDIS_CODES.contains(&r.code.as_str())))
        .collect();
    let findings = group(
        &from_instances,
        &from_redis,
        reports.len(),
        redis_nodes.len(),
    );
    let worst = findings.iter().map(|f| f.severity).max();
    let exit_code = if worst.is_some_and(|s| s >= Severity::Warning) {
        EXIT_FINDINGS
    } else {
        0
    };
    let instances: Vec<InstanceLine> = reports
        .iter()
        .map(|r| InstanceLine {
            instance: r.instance.clone(),
            hostname: r.hostname.clone(),
            pid: r.pid,
            age_ms: now.saturating_sub(r.timestamp_ms),
            late: is_late(r, now),
            has_recommendations: r.rates.is_some(),
            recommendations: r.recommendations.len(),
        })
        .collect();

    let mut human = String::new();
    human.push_str(&format!(
        "Doctor for prefix \"{prefix}\" on {}: {} instance(s) reporting; {}\n",
        t.display,
        reports.len(),
        match &redis_check_error {
            None => format!("Redis memory read on {} node(s)", redis_nodes.len()),
            Some(e) => format!(
                "Redis itself not checked ({e}): its findings are the instances' last readings"
            ),
        }
    ));
    if instances.is_empty() {
        human.push_str(&format!(
            "No instance reports under prefix \"{prefix}\" (no instance running with an L2, or \
             reports turned off): only Redis was checked.\n"
        ));
    } else {
        human.push('\n');
        let mut table = Table::new(&["INSTANCE", "HOST", "PID", "REPORTED", "RECOMMENDATIONS"]);
        for i in &instances {
            table.row(vec![
                i.instance.clone(),
                i.hostname.clone(),
                i.pid.to_string(),
                format!(
                    "{}{}",
                    output::human_duration(Duration::from_millis(i.age_ms)) + " ago",
                    if i.late { " (late)" } else { "" }
                ),
                if i.has_recommendations {
                    i.recommendations.to_string()
                } else {
                    "- (older release)".into()
                },
            ]);
        }
        table.right(&[2, 4]);
        human.push_str(&table.render());
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    human.push_str(&format!(
        "\n{} finding(s): {} critical, {} warning, {} info\n",
        findings.len(),
        count(Severity::Critical),
        count(Severity::Warning),
        count(Severity::Info)
    ));
    for f in &findings {
        human.push('\n');
        render_finding(f, &mut human);
    }
    if !unreadable.is_empty() {
        human.push_str(&format!(
            "\nSkipped {} key(s) that do not hold an instance report: {}\n",
            unreadable.len(),
            unreadable.join(", ")
        ));
    }
    let status = worst.map_or("ok", severity_name);
    human.push_str(&if exit_code == 0 {
        format!("\nStatus: {status}: nothing above info (exit status 0)\n")
    } else {
        format!("\nStatus: {status} (exit status {exit_code})\n")
    });
    let json = serde_json::to_value(DoctorJson {
        prefix,
        redis: &t.display,
        status,
        exit_code,
        instances,
        redis_nodes,
        redis_check_error,
        findings,
        unreadable_reports: unreadable,
    })
    .unwrap_or_default();
    Ok((Report { human, json }, exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: serde_json::Value) -> Recommendation {
        serde_json::from_value(json).expect("a recommendation")
    }

    fn report(instance: &str, recs: Vec<Recommendation>) -> InstanceReport {
        let cache = serde_json::json!({
            "instance": instance, "hostname": "h", "pid": 1, "timestamp_ms": 0,
            "interval_ms": 5000,
            "stats": {
                "prefix": "p", "l2_configured": true, "breaker": null, "backplane": null,
                "tracked_tag_invalidations": 0, "pending_invalidations": {},
                "total": {}, "kinds": {}
            },
        });
        let mut r: InstanceReport = serde_json::from_value(cache).expect("a report");
        r.recommendations = recs;
        r
    }

    fn target_rec(kind: &str, figure: &str, severity: &str) -> Recommendation {
        rec(serde_json::json!({
            "code": "below_hit_rate_target", "severity": severity, "kind": kind,
            "setting": "s", "figure": figure, "message": "m"
        }))
    }

    #[test]
    fn findings_are_deduplicated_by_code_and_kind_and_the_most_severe_come_first() {
        let a = report(
            "a",
            vec![
                target_rec("k", "hit rate 50%", "warning"),
                target_rec("other", "hit rate 10%", "warning"),
            ],
        );
        let b = report("b", vec![target_rec("k", "hit rate 50%", "warning")]);
        let c = report(
            "c",
            vec![rec(serde_json::json!({
                "code": "backplane_unsubscribed", "severity": "critical", "kind": null,
                "setting": "s", "figure": "subscribed: false", "message": "m"
            }))],
        );
        let pairs: Vec<_> = [&a, &b, &c]
            .into_iter()
            .flat_map(|r| r.recommendations.iter().map(move |x| (r, x)))
            .collect();
        let f = group(&pairs, &[], 3, 1);
        let got: Vec<_> = f
            .iter()
            .map(|f| (f.code.as_str(), f.kind.as_deref(), f.count))
            .collect();
        assert_eq!(
            got,
            [
                ("backplane_unsubscribed", None, 1),
                ("below_hit_rate_target", Some("k"), 2),
                ("below_hit_rate_target", Some("other"), 1),
            ]
        );
        let mut text = String::new();
        render_finding(&f[1], &mut text);
        assert!(text.contains("on 2 of 3 instance(s)"), "{text}");
        // The same figure once, naming both instances.
        assert_eq!(text.matches("hit rate 50%").count(), 1, "{text}");
        assert!(text.contains("[a, b]"), "{text}");
    }

    #[test]
    fn a_group_takes_the_severity_of_its_most_severe_member() {
        let a = report("a", vec![target_rec("k", "x", "info")]);
        let b = report("b", vec![target_rec("k", "y", "critical")]);
        let pairs: Vec<_> = [&a, &b]
            .into_iter()
            .flat_map(|r| r.recommendations.iter().map(move |x| (r, x)))
            .collect();
        let f = group(&pairs, &[], 2, 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].seen_on[0].figure, "y", "the most severe first");
    }
}
