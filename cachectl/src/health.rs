//! `cachectl health`: is Redis reachable and fit to be a cache, and how are the instances doing.

use cache_core::BreakerState;
use serde::Serialize;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::output::{self, Table};
use crate::stats::{breaker_text, is_late, read_reports};
use crate::target::{Node, Target};
use crate::Report;

/// PINGs per node (the median is reported).
const PINGS: usize = 3;

#[derive(Debug, Serialize)]
struct NodeHealth {
    node: String,
    ping_ms: f64,
    used_memory: u64,
    /// 0: no limit.
    maxmemory: u64,
    maxmemory_policy: String,
}

#[derive(Debug, Serialize)]
struct InstanceHealth {
    instance: String,
    hostname: String,
    pid: u32,
    breaker: Option<BreakerState>,
    backplane_subscribed: Option<bool>,
    reported_ms_ago: u64,
}

#[derive(Debug, Serialize)]
struct HealthJson {
    status: &'static str,
    redis: String,
    cluster: bool,
    nodes: Vec<NodeHealth>,
    instances: Vec<InstanceHealth>,
    warnings: Vec<String>,
}

/// `field:value` from `INFO` text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// Whether Redis evicts under memory pressure in a way that suits a cache whose entries all
/// have a TTL: any `allkeys-*` or `volatile-*` policy.
pub(crate) fn policy_suits_a_cache(policy: &str) -> bool {
    policy.starts_with("allkeys-") || policy.starts_with("volatile-")
}

async fn node_health(t: &Target, node: &Node) -> Result<NodeHealth> {
    let mut rtts = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let start = Instant::now();
        let _: String = t.query_on(node, "PING", &redis::cmd("PING")).await?;
        rtts.push(start.elapsed());
    }
    rtts.sort();
    let info: String = t
        .query_on(node, "INFO memory", redis::cmd("INFO").arg("memory"))
        .await?;
    let num = |f: &str| {
        info_field(&info, f)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(NodeHealth {
        node: node.label.clone(),
        ping_ms: rtts[PINGS / 2].as_secs_f64() * 1e3,
        used_memory: num("used_memory"),
        maxmemory: num("maxmemory"),
        maxmemory_policy: info_field(&info, "maxmemory_policy")
            .unwrap_or("unknown")
            .to_owned(),
    })
}

fn node_warnings(n: &NodeHealth, out: &mut Vec<String>) {
    if !policy_suits_a_cache(&n.maxmemory_policy) {
        out.push(format!(
            "{}: maxmemory-policy is {}: when memory is full Redis {} instead of evicting; \
             use allkeys-lru or allkeys-lfu for a cache",
            n.node,
            n.maxmemory_policy,
            if n.maxmemory_policy == "noeviction" {
                "refuses writes"
            } else {
                "may not free memory"
            }
        ));
    }
    if n.maxmemory == 0 {
        out.push(format!(
            "{}: maxmemory is not set: Redis grows until the host runs out of memory",
            n.node
        ));
    } else if n.used_memory * 10 >= n.maxmemory * 9 {
        out.push(format!(
            "{}: memory {} of {} used ({}): evictions are likely",
            n.node,
            output::bytes(n.used_memory),
            output::bytes(n.maxmemory),
            output::percent(n.used_memory, n.maxmemory)
        ));
    }
}

/// Runs `cachectl health`. Unreachable Redis is an error; the rest are warnings.
pub(crate) async fn run(t: &Target, prefix: &str) -> Result<Report> {
    let mut nodes = Vec::new();
    for node in t.nodes().await? {
        nodes.push(node_health(t, &node).await?);
    }
    let mut warnings = Vec::new();
    for n in &nodes {
        node_warnings(n, &mut warnings);
    }
    let (reports, _) = read_reports(t, prefix).await?;
    let now = output::now_ms();
    let instances: Vec<InstanceHealth> = reports
        .iter()
        .map(|r| {
            let breaker = r.stats.breaker.as_ref().map(|b| b.state);
            let label = format!("instance {} ({} pid {})", r.instance, r.hostname, r.pid);
            match breaker {
                Some(BreakerState::Open) => warnings.push(format!(
                    "{label}: circuit breaker OPEN: it cannot use Redis (serving L1 and loaders)"
                )),
                Some(BreakerState::HalfOpen) => warnings.push(format!(
                    "{label}: circuit breaker half-open: probing Redis after failures"
                )),
                _ => {}
            }
            let subscribed = r.stats.backplane.as_ref().map(|b| b.subscribed);
            if subscribed == Some(false) {
                warnings.push(format!(
                    "{label}: backplane not subscribed: it misses other instances' invalidations"
                ));
            }
            if is_late(r, now) {
                warnings.push(format!(
                    "{label}: last report {} (expected every {})",
                    output::relative(r.timestamp_ms, now),
                    output::human_duration(Duration::from_millis(r.interval_ms))
                ));
            }
            InstanceHealth {
                instance: r.instance.clone(),
                hostname: r.hostname.clone(),
                pid: r.pid,
                breaker,
                backplane_subscribed: subscribed,
                reported_ms_ago: now.saturating_sub(r.timestamp_ms),
            }
        })
        .collect();

    let status = if warnings.is_empty() { "ok" } else { "warning" };
    let mut human = format!(
        "Redis {} ({}): reachable\n\n",
        t.display,
        if t.is_cluster() {
            format!("cluster, {} masters", nodes.len())
        } else {
            "single node".to_owned()
        }
    );
    let mut table = Table::new(&["NODE", "PING", "USED MEMORY", "MAXMEMORY", "POLICY"]);
    for n in &nodes {
        table.row(vec![
            n.node.clone(),
            format!("{:.2} ms", n.ping_ms),
            output::bytes(n.used_memory),
            if n.maxmemory == 0 {
                "unlimited".into()
            } else {
                format!(
                    "{} ({} used)",
                    output::bytes(n.maxmemory),
                    output::percent(n.used_memory, n.maxmemory)
                )
            },
            n.maxmemory_policy.clone(),
        ]);
    }
    human.push_str(&table.render());
    if instances.is_empty() {
        human.push_str(&format!(
            "\nNo instance reports under prefix \"{prefix}\" (no instance running, or all L1-only).\n"
        ));
    } else {
        human.push_str(&format!(
            "\nInstances under prefix \"{prefix}\" ({}):\n",
            instances.len()
        ));
        let mut table = Table::new(&[
            "INSTANCE",
            "HOST",
            "PID",
            "BREAKER",
            "BACKPLANE",
            "REPORTED",
        ]);
        for i in &instances {
            table.row(vec![
                i.instance.clone(),
                i.hostname.clone(),
                i.pid.to_string(),
                i.breaker.map_or("-".into(), breaker_text),
                match i.backplane_subscribed {
                    Some(true) => "subscribed".into(),
                    Some(false) => "DOWN".into(),
                    None => "off".into(),
                },
                output::relative(now - i.reported_ms_ago, now),
            ]);
        }
        human.push_str(&table.render());
    }
    if warnings.is_empty() {
        human.push_str("\nStatus: ok\n");
    } else {
        human.push_str("\nWarnings:\n");
        for w in &warnings {
            human.push_str(&format!("  - {w}\n"));
        }
        human.push_str(&format!("\nStatus: {} warning(s)\n", warnings.len()));
    }
    let json = serde_json::to_value(HealthJson {
        status,
        redis: t.display.clone(),
        cluster: t.is_cluster(),
        nodes,
        instances,
        warnings,
    })
    .unwrap_or_default();
    Ok(Report { human, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_policies_that_suit_a_cache() {
        for p in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-ttl",
        ] {
            assert!(policy_suits_a_cache(p), "{p}");
        }
        assert!(!policy_suits_a_cache("noeviction"));
    }

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let info = "# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "maxmemory_policy"), Some("noeviction"));
        assert_eq!(info_field(info, "maxmemory"), None);
    }
}
