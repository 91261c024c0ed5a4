//! Recommendations: what to change, read off the stats. Each names the setting to change and the
//! figure behind it. [`Cache::recommendations`](crate::Cache::recommendations) runs them on the
//! cache's own figures (the last 15 minutes) and every instance publishes the result in its
//! report, which `cachectl doctor` reads; [`recommend`] runs them on any snapshot, and
//! [`recommend_redis`] the Redis rules alone on an `INFO memory` reply (how `cachectl doctor`
//! checks Redis itself).
//!
//! The rules, and their thresholds (a kind needs [`MIN_LOOKUPS`] lookups in the window before
//! its rates are judged, and a rule [`MIN_EVENTS`] occurrences):
//!
//! | code | when |
//! |---|---|
//! | `ttl_shorter_than_rerequests` | ≥ 10% of a kind's lookups found their value expired, and the median time from the value's write to that lookup is over its TTL but within 10× |
//! | `l1_too_small` | ≥ 5% of a kind's L1 lookups missed entries L1 had evicted for its byte budget, a median time after the eviction shorter than the kind's TTL |
//! | `many_rejections` | ≥ 20% of a kind's lookups found invalidated entries |
//! | `type_mismatch` | lookups found values of another type or schema |
//! | `redis_no_maxmemory`, `redis_noeviction`, `redis_memory_high` | Redis has no `maxmemory`, refuses writes when full, or is above 80% of it |
//! | `breaker_flapping` | the breaker opened 3 times or more |
//! | `backplane_unsubscribed` | the backplane is enabled but not subscribed |
//! | `redis_acl_refused` | Redis refused commands of the cache for lack of an ACL permission (`NOPERM`) |
//! | `below_hit_rate_target` | a kind's hit rate is below its [`KindConfig::hit_rate_target`](crate::KindConfig::hit_rate_target) |

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::stats::{RedisMemory, Stats, TierStats, WindowStats};

/// Lookups a kind needs in the window before its rates are judged.
pub const MIN_LOOKUPS: u64 = 100;
/// Occurrences a rule needs before it speaks.
pub const MIN_EVENTS: u64 = 20;

/// How much a recommendation matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Costs hit rate or risks an outage.
    Warning,
    /// Something is broken now.
    Critical,
}

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Recommendation {
    /// A stable identifier of the rule (see the table in the module documentation).
    pub code: String,
    /// How much it matters.
    pub severity: Severity,
    /// The kind it is about, if it is about one.
    pub kind: Option<String>,
    /// The setting to change.
    pub setting: String,
    /// The figure behind it.
    pub figure: String,
    /// What to do, in a sentence or two.
    pub message: String,
}

impl std::fmt::Display for Recommendation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        };
        write!(f, "[{sev}] ")?;
        if let Some(k) = &self.kind {
            write!(f, "kind {k}: ")?;
        }
        write!(
            f,
            "{} (figure: {}; setting: {})",
            self.message, self.figure, self.setting
        )
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 120.0 {
        format!("{:.0} s", s)
    } else if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

/// Bytes in the largest binary unit that keeps a figure of at least 1 (`256.0 KiB`, `64.0 MiB`):
/// whole MiB would print a budget under 1 MiB as 0. (Ten lines, not a new dependency of the
/// library for one figure.)
fn size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

fn rec(
    code: &str,
    severity: Severity,
    kind: Option<&str>,
    setting: String,
    figure: String,
    message: String,
) -> Recommendation {
    Recommendation {
        code: code.to_owned(),
        severity,
        kind: kind.map(str::to_owned),
        setting,
        figure,
        message,
    }
}

/// The recommendations for a cache whose snapshot is `stats` (since start: states, settings,
/// Redis memory) and whose recent figures are `window` (typically the last 15 minutes). Most
/// severe first.
///
/// ```
/// use cache_core::admin::recommend;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = cache_core::Cache::builder().build().await.unwrap();
/// let window = cache.stats_over(std::time::Duration::from_secs(900));
/// // A quiet L1-only cache: nothing to say.
/// assert!(recommend(&cache.stats(), &window).is_empty());
/// # });
/// ```
pub fn recommend(stats: &Stats, window: &WindowStats) -> Vec<Recommendation> {
    let mut out = Vec::new();
    for (name, t) in &window.kinds {
        kind_rules(name, t, stats, &mut out);
    }
    if let Some(m) = &stats.redis_memory {
        redis_rules(m, stats.l2_refusing_writes, &mut out);
    }
    if window.breaker_opens >= 3 {
        out.push(rec(
            "breaker_flapping",
            Severity::Warning,
            None,
            "CacheBuilder::breaker_cooldown / l2_timeout (or the network to Redis)".into(),
            format!(
                "the breaker opened {} times in the last {}",
                window.breaker_opens,
                secs(Duration::from_secs_f64(window.seconds))
            ),
            "The link to Redis keeps failing and recovering: check Redis latency and the \
             network; if operations time out under load, raise l2_timeout; a longer cool-down \
             keeps the cache on L1 longer between attempts."
                .into(),
        ));
    }
    if let Some(bp) = stats.backplane.as_ref().filter(|b| !b.subscribed) {
        out.push(rec(
            "backplane_unsubscribed",
            Severity::Critical,
            None,
            "Redis reachability (pub/sub), or CacheBuilder::backplane".into(),
            format!("subscribed: false, {} disconnects so far", bp.disconnects),
            "The backplane is down: this instance does not hear other instances' \
             invalidations, so its L1 entries are capped at unsynced_l1_ttl until it \
             resubscribes. Check that Redis accepts SUBSCRIBE for this user."
                .into(),
        ));
    }
    if !stats.l2_acl_refused.is_empty() {
        out.push(rec(
            "redis_acl_refused",
            Severity::Critical,
            None,
            "the ACL rules of the cache's Redis user".into(),
            format!("refused: {}", stats.l2_acl_refused.join(", ")),
            format!(
                "The cache's Redis user may not run every command the cache needs: what is \
                 refused reads as a miss or is not written. Give the user these rules: ACL \
                 SETUSER <user> {}",
                crate::l2::acl::fill(crate::l2::acl::ACL_RULES, &stats.prefix)
            ),
        ));
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.severity));
    out
}

/// The lookups that missed for a reason, from its count in each tier: a lookup that misses L1
/// for it goes on to L2 and usually misses there for the same reason (an expired value is
/// expired in both, an invalidated one invalidated in both), so the sum would count it twice
/// (and print shares over 100%). The larger count: exact when one tier sees them all, a lower
/// bound otherwise, never more than the lookups.
fn per_lookup(l1: u64, l2: u64) -> u64 {
    l1.max(l2)
}

fn kind_rules(name: &str, t: &TierStats, stats: &Stats, out: &mut Vec<Recommendation>) {
    if t.lookups < MIN_LOOKUPS {
        return;
    }
    let k = Some(name);
    let lookups = t.lookups as f64;
    let ttl = t.settings.as_ref().map(|s| Duration::from_millis(s.ttl_ms));

    // Expired before being asked again. (`reread_after_expiry` has one time per tier that found
    // the value expired: its median is the re-request interval, its count is not lookups.)
    let expired = per_lookup(t.l1.miss_reasons.expired, t.l2.miss_reasons.expired);
    if let Some(ttl) = ttl {
        let median = Duration::from_secs_f64(t.reread_after_expiry.p50_us / 1e6);
        if expired >= MIN_EVENTS
            && expired as f64 >= 0.10 * lookups
            && median > ttl
            && median <= ttl.saturating_mul(10)
        {
            out.push(rec(
                "ttl_shorter_than_rerequests",
                Severity::Warning,
                k,
                format!("KindConfig::new(ttl) of kind {name:?} (now {})", secs(ttl)),
                format!(
                    "{} of lookups found their value expired; median {} after it was written",
                    pct(expired as f64 / lookups),
                    secs(median)
                ),
                format!(
                    "Values expire shortly before they are asked for again: a TTL of about {} \
                     would answer these lookups from the cache, if the data may be that old.",
                    secs(median.mul_f64(1.2))
                ),
            ));
        }
    }

    // Evicted from L1 and wanted again soon.
    let l1_lookups = (t.l1.hits + t.l1.misses) as f64;
    let evicted = t.l1.miss_reasons.evicted;
    let back_after = Duration::from_secs_f64(t.l1.reread_after_eviction.p50_us / 1e6);
    if evicted >= MIN_EVENTS
        && evicted as f64 >= 0.05 * l1_lookups
        && ttl.is_none_or(|ttl| back_after < ttl)
    {
        let l1 = &stats.total.l1;
        out.push(rec(
            "l1_too_small",
            Severity::Warning,
            k,
            format!(
                "CacheBuilder::l1_max_bytes (now {}, {} used)",
                size(l1.max_bytes),
                pct(l1.bytes as f64 / l1.max_bytes.max(1) as f64)
            ),
            format!(
                "{} of L1 lookups missed entries evicted for the budget, re-read a median {} \
                 after their eviction",
                pct(evicted as f64 / l1_lookups.max(1.0)),
                secs(back_after)
            ),
            "The L1 budget is smaller than the working set: entries are evicted while they are \
             still wanted. Raise l1_max_bytes, or route large values of this kind to L2 only \
             (Tiers::L2Only)."
                .into(),
        ));
    }

    // Invalidated often relative to reads.
    let rejected = per_lookup(t.l1.miss_reasons.rejected, t.l2.miss_reasons.rejected);
    if rejected >= MIN_EVENTS && rejected as f64 >= 0.20 * lookups {
        out.push(rec(
            "many_rejections",
            Severity::Info,
            k,
            format!("invalidate / invalidate_tag calls and tags of kind {name:?}"),
            format!(
                "{} of lookups found invalidated entries ({} by tag in L2)",
                pct(rejected as f64 / lookups),
                t.l2.tag_rejections
            ),
            "Entries are invalidated about as often as they are read: finer tags (or \
             invalidating by key), a shorter TTL instead of invalidating, or not caching this \
             kind would serve it better."
                .into(),
        ));
    }

    // Another type or schema.
    let mismatch = per_lookup(t.l1.miss_reasons.mismatch, t.l2.miss_reasons.mismatch);
    if mismatch >= MIN_EVENTS {
        out.push(rec(
            "type_mismatch",
            Severity::Warning,
            k,
            format!("KindConfig::schema of kind {name:?}"),
            format!(
                "{mismatch} lookups ({}) found values written for another type or schema",
                pct(mismatch as f64 / lookups)
            ),
            "Expected once per key after a deploy that changed the type or its schema. If it \
             goes on, two versions are writing the kind at once (a rolling deploy): give each \
             type its own schema name, or its own kind."
                .into(),
        ));
    }

    // Below its target.
    if let Some(target) = t.settings.as_ref().and_then(|s| s.hit_rate_target) {
        if t.hit_rate < target {
            let (top, n) =
                t.l1.miss_reasons
                    .iter()
                    .chain(t.l2.miss_reasons.iter())
                    .filter(|(r, _)| *r != "absent")
                    .fold(
                        ("absent", 0),
                        |best, (r, n)| if n > best.1 { (r, n) } else { best },
                    );
            let calls = t.loader.calls;
            let failed = t.loader.errors;
            let why = if failed >= MIN_EVENTS && failed * 2 >= calls {
                // Failed loads store nothing: every lookup of a failing key calls the loader.
                format!(
                    ": {failed} of its {calls} loads failed, and a failure is not cached \
                     (EntryOptions::error_ttl caches it briefly, so that repeated lookups of a \
                     failing key stop reaching the origin)"
                )
            } else if n > 0 {
                format!("; the most common miss reason besides absent is {top} ({n})")
            } else {
                "; its misses are first reads of their keys (absent): more lookups per key, a \
                 longer TTL or warming would raise it"
                    .to_owned()
            };
            out.push(rec(
                "below_hit_rate_target",
                Severity::Warning,
                k,
                format!(
                    "KindConfig::hit_rate_target of kind {name:?}, or what the reasons point at"
                ),
                format!(
                    "hit rate {} over {} lookups (target {})",
                    pct(t.hit_rate),
                    t.lookups,
                    pct(target)
                ),
                format!("The kind misses its hit-rate target{why}."),
            ));
        }
    }
}

/// The Redis rules alone (`redis_no_maxmemory`, `redis_noeviction`, `redis_memory_high`), on
/// an `INFO memory` reply: what an admin tool checking Redis itself runs on each node, with the
/// figures and wording the instances use. `refusing_writes`: whether a cache saw Redis refuse a
/// write for lack of memory lately ([`Stats::l2_refusing_writes`]), which makes `noeviction`
/// critical. `None` when the reply lacks `used_memory`, `maxmemory` or `maxmemory_policy`.
///
/// ```
/// use cache_core::admin::recommend_redis;
/// let info = "# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n";
/// let codes: Vec<String> = recommend_redis(info, false)
///     .unwrap()
///     .into_iter()
///     .map(|r| r.code)
///     .collect();
/// assert_eq!(codes, ["redis_no_maxmemory", "redis_noeviction"]);
/// assert!(recommend_redis("not an INFO reply", false).is_none());
/// ```
pub fn recommend_redis(info_memory: &str, refusing_writes: bool) -> Option<Vec<Recommendation>> {
    let m = crate::l2::parse_memory(info_memory)?;
    let m = RedisMemory {
        used_bytes: m.used_bytes,
        maxmemory_bytes: m.maxmemory_bytes,
        policy: m.policy,
        sampled_at_ms: m.sampled_at_ms,
    };
    let mut out = Vec::new();
    redis_rules(&m, refusing_writes, &mut out);
    out.sort_by_key(|r| std::cmp::Reverse(r.severity));
    Some(out)
}

fn redis_rules(m: &RedisMemory, refusing_writes: bool, out: &mut Vec<Recommendation>) {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    if m.maxmemory_bytes == 0 {
        out.push(rec(
            "redis_no_maxmemory",
            Severity::Warning,
            None,
            "maxmemory in redis.conf (and maxmemory-policy allkeys-lru)".into(),
            format!("maxmemory 0 (no limit), used {}", mib(m.used_bytes)),
            "Redis has no memory limit: a cache grows until the host runs out of memory. Set \
             maxmemory with an eviction policy (allkeys-lru)."
                .into(),
        ));
    } else {
        let fill = m.used_bytes as f64 / m.maxmemory_bytes as f64;
        if fill > 0.8 {
            out.push(rec(
                "redis_memory_high",
                if fill > 0.95 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                None,
                "maxmemory in redis.conf, or the TTLs of the largest kinds".into(),
                format!(
                    "used {} of {} ({})",
                    mib(m.used_bytes),
                    mib(m.maxmemory_bytes),
                    pct(fill)
                ),
                "Redis is near its memory limit: it evicts (or, with noeviction, refuses \
                 writes) soon. Raise maxmemory or shorten TTLs."
                    .into(),
            ));
        }
    }
    if m.policy == "noeviction" {
        out.push(rec(
            "redis_noeviction",
            if refusing_writes {
                Severity::Critical
            } else {
                Severity::Warning
            },
            None,
            "maxmemory-policy in redis.conf (allkeys-lru)".into(),
            format!(
                "maxmemory-policy noeviction{}",
                if refusing_writes {
                    ", refusing writes now"
                } else {
                    ""
                }
            ),
            "With noeviction a full Redis refuses every write: nothing new is cached and \
             invalidations fall back to deletes. Use allkeys-lru (or allkeys-lfu) for a cache."
                .into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{KindSettings, LatencyStats};

    fn kind(lookups: u64, hit_rate: f64, ttl_ms: u64) -> TierStats {
        let mut t = TierStats {
            lookups,
            hit_rate,
            ..Default::default()
        };
        t.l1.hits = (lookups as f64 * hit_rate) as u64;
        t.l1.misses = lookups - t.l1.hits;
        t.settings = Some(KindSettings {
            ttl_ms,
            tiers: "l1+l2".into(),
            load_cost: None,
            hit_rate_target: None,
        });
        t
    }

    fn window(name: &str, t: TierStats) -> WindowStats {
        let mut w = WindowStats {
            seconds: 900.0,
            ..Default::default()
        };
        w.kinds.insert(name.to_owned(), t);
        w
    }

    fn stats() -> Stats {
        Stats::empty("c", "c")
    }

    fn codes(r: &[Recommendation]) -> Vec<&str> {
        r.iter().map(|r| r.code.as_str()).collect()
    }

    #[test]
    fn a_ttl_just_short_of_the_rerequest_interval_is_flagged_with_the_interval() {
        let mut t = kind(1_000, 0.6, 30_000);
        // 300 lookups found their value expired in L1, and then in L2 too.
        t.l1.miss_reasons.expired = 300;
        t.l2.miss_reasons.expired = 300;
        t.reread_after_expiry = LatencyStats {
            count: 600,
            p50_us: 45e6,
            ..Default::default()
        };
        let r = recommend(&stats(), &window("api", t.clone()));
        assert_eq!(codes(&r), ["ttl_shorter_than_rerequests"]);
        assert!(r[0].figure.contains("45.0 s"), "{}", r[0]);
        assert!(
            r[0].figure.starts_with("30% of lookups"),
            "once per lookup: {}",
            r[0]
        );
        assert!(r[0].setting.contains("30.0 s"), "{}", r[0]);
        // Re-requests an hour later: a longer TTL would not be a small change; nothing said.
        t.reread_after_expiry.p50_us = 3_600e6;
        assert!(recommend(&stats(), &window("api", t)).is_empty());
    }

    #[test]
    fn quiet_kinds_are_not_judged() {
        let mut t = kind(MIN_LOOKUPS - 1, 0.0, 1_000);
        t.l1.miss_reasons.evicted = 99;
        assert!(recommend(&stats(), &window("k", t)).is_empty());
    }

    #[test]
    fn a_kind_below_its_target_names_its_main_miss_reason() {
        let mut t = kind(1_000, 0.5, 60_000);
        if let Some(s) = t.settings.as_mut() {
            s.hit_rate_target = Some(0.9);
        }
        t.l2.miss_reasons.rejected = 10;
        t.l2.miss_reasons.absent = 490;
        let r = recommend(&stats(), &window("k", t));
        assert_eq!(codes(&r), ["below_hit_rate_target"]);
        assert!(
            r[0].figure.contains("50%") && r[0].figure.contains("90%"),
            "{}",
            r[0]
        );
        assert!(r[0].message.contains("rejected"), "{}", r[0]);

        // Mostly failed loads: said, with the setting that would help.
        let mut t = kind(1_000, 0.5, 60_000);
        if let Some(s) = t.settings.as_mut() {
            s.hit_rate_target = Some(0.9);
        }
        t.loader.calls = 500;
        t.loader.errors = 400;
        let r = recommend(&stats(), &window("k", t));
        assert!(
            r[0].message.contains("400 of its 500 loads failed"),
            "{}",
            r[0]
        );
        assert!(r[0].message.contains("error_ttl"), "{}", r[0]);
    }

    #[test]
    fn redis_settings_are_judged_from_its_memory() {
        let mut s = stats();
        s.redis_memory = Some(RedisMemory {
            used_bytes: 90 << 20,
            maxmemory_bytes: 100 << 20,
            policy: "noeviction".into(),
            sampled_at_ms: 0,
        });
        s.l2_refusing_writes = true;
        let r = recommend(&s, &WindowStats::default());
        assert_eq!(codes(&r), ["redis_noeviction", "redis_memory_high"]);
        assert_eq!(r[0].severity, Severity::Critical);
        s.redis_memory = Some(RedisMemory {
            used_bytes: 1 << 20,
            maxmemory_bytes: 0,
            policy: "allkeys-lru".into(),
            sampled_at_ms: 0,
        });
        assert_eq!(
            codes(&recommend(&s, &WindowStats::default())),
            ["redis_no_maxmemory"]
        );
    }

    #[test]
    fn the_redis_rules_on_an_info_reply_say_what_an_instance_says() {
        let info = "# Memory\r\nused_memory:94371840\r\nused_memory_human:90.00M\r\n\
                    maxmemory:104857600\r\nmaxmemory_policy:noeviction\r\n";
        let mut s = stats();
        s.redis_memory = Some(RedisMemory {
            used_bytes: 90 << 20,
            maxmemory_bytes: 100 << 20,
            policy: "noeviction".into(),
            sampled_at_ms: 0,
        });
        for refusing in [false, true] {
            s.l2_refusing_writes = refusing;
            assert_eq!(
                recommend_redis(info, refusing),
                Some(recommend(&s, &WindowStats::default()))
            );
        }
        assert_eq!(
            recommend_redis("# Memory\r\nused_memory:1\r\n", false),
            None
        );
    }

    #[test]
    fn an_l1_budget_under_a_mebibyte_is_named_in_kibibytes() {
        let mut t = kind(1_000, 0.5, 600_000);
        t.l1.miss_reasons.evicted = 300;
        t.l1.reread_after_eviction = LatencyStats {
            count: 300,
            p50_us: 2e5,
            ..Default::default()
        };
        let mut s = stats();
        s.total.l1.max_bytes = 256 << 10;
        s.total.l1.bytes = 250 << 10;
        let r = recommend(&s, &window("pages", t));
        assert_eq!(codes(&r), ["l1_too_small"]);
        assert!(r[0].setting.contains("now 256.0 KiB, 98% used"), "{}", r[0]);
        assert_eq!(size(64 << 20), "64.0 MiB");
        assert_eq!(size(512), "512 B");
    }

    #[test]
    fn a_lookup_that_misses_both_tiers_for_one_reason_counts_once() {
        // 150 lookups; 125 found their entries invalidated in L1 and again in L2.
        let mut t = kind(150, 0.2, 600_000);
        t.l1.miss_reasons.rejected = 125;
        t.l2.miss_reasons.rejected = 125;
        t.l1.miss_reasons.mismatch = 40;
        t.l2.miss_reasons.mismatch = 40;
        let r = recommend(&stats(), &window("feed", t));
        assert_eq!(codes(&r), ["type_mismatch", "many_rejections"]);
        assert!(r[0].figure.starts_with("40 lookups (27%)"), "{}", r[0]);
        assert!(r[1].figure.starts_with("83% of lookups"), "{}", r[1]);
    }
}
