//! For admin tools (`cachectl`, dashboards): what instances publish about themselves, and the
//! helpers such tools share with the library so that they build the same keys, read the same
//! envelopes and never print a password.
//!
//! Each instance periodically stores an [`InstanceReport`] (its [`Stats`] snapshot) in Redis under
//! `{prefix}:stats:{instance}` (JSON, expiring after three report intervals, so instances that
//! stopped disappear by themselves). `cachectl stats` and `cachectl health` read them.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::Instrument;

use crate::clock::unix_ms;
use crate::inner::Inner;
use crate::stats::Rates;
use crate::Stats;

pub use crate::codec::{inspect, CodecError, Inspected};
pub use crate::recommend::{
    recommend, recommend_redis, Recommendation, Severity, MIN_EVENTS, MIN_LOOKUPS,
};

/// What an instance publishes: its stats snapshot and who it is.
///
/// Admin tools read this as JSON (`serde_json::from_slice::<InstanceReport>`); fields may be
/// added, and unknown fields are ignored when reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceReport {
    /// The instance id (the backplane's, in hex), unique per `Cache` built.
    pub instance: String,
    /// The host name, as far as it could be found (`HOSTNAME`, then `/proc/sys/kernel/hostname`).
    pub hostname: String,
    /// The process id.
    pub pid: u32,
    /// When the snapshot was taken (Unix milliseconds).
    pub timestamp_ms: u64,
    /// How often the instance reports, in milliseconds (readers can tell a late report).
    pub interval_ms: u64,
    /// The snapshot.
    pub stats: Stats,
    /// The figures over the last 1, 5 and 15 minutes (absent in reports of older releases).
    #[serde(default)]
    pub rates: Option<Rates>,
    /// The instance's [`recommendations`](crate::Cache::recommendations).
    #[serde(default)]
    pub recommendations: Vec<Recommendation>,
}

/// The Redis key of `instance`'s report.
pub(crate) fn stats_key(prefix: &str, instance: u64) -> String {
    format!("{prefix}:stats:{instance:016x}")
}

/// The Redis key of the index of live instances of `prefix`: a sorted set of instance ids (hex,
/// as in [`InstanceReport::instance`]) scored by the Unix ms of their last report, so that tools
/// find the reports without scanning the keyspace. Each report is under
/// `{prefix}:stats:{instance}`; an id whose report is gone stopped. Members older than an hour
/// are dropped at each report, and the set expires an hour after the last one. Instances of
/// releases before this index exist only as report keys (`stats_key_pattern`).
///
/// ```
/// assert_eq!(cache_core::admin::instances_key("app"), "app:instances");
/// ```
pub fn instances_key(prefix: &str) -> String {
    format!("{prefix}:instances")
}

/// The Redis key of the report of the instance `id` (hex, as in the index).
///
/// ```
/// assert_eq!(cache_core::admin::report_key("app", "00000000000000ff"), "app:stats:00000000000000ff");
/// ```
pub fn report_key(prefix: &str, id: &str) -> String {
    format!("{prefix}:stats:{id}")
}

pub use crate::l2::acl::{ACL_RULES, CACHECTL_ACL_RULES, SENTINEL_ACL_RULES};

/// The ACL rules of the Redis user of a cache whose prefix is `prefix`: [`ACL_RULES`] with the
/// prefix filled in (its glob characters `*?[]\` escaped). Every command the library sends, on
/// its keys and its backplane channel only; no `FLUSHALL`, `CONFIG`, `KEYS`, `DEBUG`,
/// `SHUTDOWN`, `ACL` or `CLIENT`.
///
/// ```
/// let rules = cache_core::admin::acl_rules("app");
/// assert!(rules.starts_with("resetkeys ~app:* resetchannels &app:bp -@all +ping +get "));
/// // As Redis takes them: ACL SETUSER cache on >PASSWORD <rules>
/// ```
pub fn acl_rules(prefix: &str) -> String {
    crate::l2::acl::fill(ACL_RULES, prefix)
}

/// The ACL rules of a Redis user for `cachectl`'s read-only commands on the cache whose prefix is
/// `prefix`: [`CACHECTL_ACL_RULES`] with the prefix filled in. Keys read-only, no channel, no
/// write (`cachectl invalidate` and `clear` need [`acl_rules`]).
///
/// ```
/// let rules = cache_core::admin::cachectl_acl_rules("app");
/// assert!(rules.starts_with("resetkeys %R~app:* resetchannels -@all +ping "));
/// ```
pub fn cachectl_acl_rules(prefix: &str) -> String {
    crate::l2::acl::fill(CACHECTL_ACL_RULES, prefix)
}

/// How long an instance stays in the index after its last report.
pub const INSTANCE_INDEX_KEEP: Duration = Duration::from_secs(3600);

/// The SCAN pattern matching every instance report of `prefix`. Glob characters in `prefix`
/// (`*?[]\`) are escaped, so a prefix given to a tool unvalidated matches only itself.
///
/// ```
/// assert_eq!(cache_core::admin::stats_key_pattern("app"), "app:stats:*");
/// assert_eq!(cache_core::admin::stats_key_pattern("a*"), "a\\*:stats:*");
/// ```
pub fn stats_key_pattern(prefix: &str) -> String {
    format!("{}:stats:*", crate::key::glob_escape(prefix))
}

/// The Redis key of `key` of `kind` under `prefix`, exactly as the cache builds it (key parts over
/// 200 bytes, holding `{`/`}` or starting with `#` are replaced by `#` and their BLAKE3 hash).
///
/// ```
/// assert_eq!(cache_core::admin::entry_key("app", "api_response", "u:1"), "app:v1:api_response:u:1");
/// ```
pub fn entry_key(prefix: &str, kind: &str, key: &str) -> String {
    crate::key::full_key(prefix, kind, key)
}

/// What to print instead of a Redis URL, or a comma-separated list of them (`REDIS_CLUSTER_URLS`):
/// every password, and every part that might hold one, replaced by `***`.
///
/// Handles what users write, not only what parses: passwords holding `/`, `@`, `:`, `#`, `?`,
/// `,` or `%` escapes, `rediss://`, `valkey://`, `unix://` / `redis+unix://` sockets with
/// `pass=` in the query, node lists, URLs without a scheme and malformed ones. Where a URL can be
/// read more than one way, what could be a secret under any reading is masked (the host too, if it
/// must); the username stays visible when it is plainly one.
///
/// ```
/// use cache_core::admin::redact_url;
/// assert_eq!(redact_url("redis://app:s3cret@db:6379/0"), "redis://app:***@db:6379/0");
/// // An unencoded `/` in the password (base64) does not end the password.
/// assert_eq!(redact_url("redis://:ab/cd==@db:6379"), "redis://:***@db:6379");
/// // Unix sockets take their credentials from the query.
/// assert_eq!(
///     redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
///     "redis+unix:///run/redis.sock?db=1&***"
/// );
/// // Cluster node lists, a comma inside a password included.
/// assert_eq!(
///     redact_url("redis://:p,w@n1:7000,redis://:p,w@n2:7001"),
///     "redis://:***@n1:7000,redis://:***@n2:7001"
/// );
/// // No scheme, or a malformed URL: still no password.
/// assert_eq!(redact_url("app:s3cret@db:6379"), "app:***@db:6379");
/// assert_eq!(redact_url("redis://:s3cret"), "redis://:***");
/// ```
pub fn redact_url(url: &str) -> String {
    crate::l2::redact_url(url)
}

/// This instance's id: the backplane's when there is one (so reports and backplane messages name
/// the same instance), otherwise a random id per `Inner`, derived from its address and a
/// per-process random salt.
fn instance_id(inner: &Inner) -> u64 {
    if let Some(bp) = inner.coherence.backplane.as_ref() {
        return bp.instance;
    }
    static SALT: OnceLock<u64> = OnceLock::new();
    let salt = *SALT.get_or_init(rand::random);
    let addr = inner as *const Inner as usize as u64;
    xxhash_rust::xxh3::xxh3_64_with_seed(&addr.to_le_bytes(), salt)
}

fn hostname() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    })
    .clone()
}

/// Builds this instance's report now.
pub(crate) fn build(inner: &Arc<Inner>) -> InstanceReport {
    let rates = inner.rates();
    InstanceReport {
        instance: format!("{:016x}", instance_id(inner)),
        hostname: hostname(),
        pid: std::process::id(),
        timestamp_ms: unix_ms(),
        interval_ms: crate::clock::millis(inner.stats_report_interval),
        stats: inner.stats(),
        recommendations: crate::recommend::recommend(&inner.stats(), &rates.last_15m),
        rates: Some(rates),
    }
}

/// Stores this instance's report in Redis (through the breaker and the L2 deadline; a failure is
/// logged at debug level and otherwise ignored: the next report will try again). Does nothing
/// without an L2 or with reports turned off.
pub(crate) async fn publish_stats(inner: &Arc<Inner>) {
    let Some(l2) = inner.l2.as_ref() else {
        return;
    };
    let every = inner.stats_report_interval;
    if every.is_zero() {
        return;
    }
    let report = build(inner);
    let json = match serde_json::to_vec(&report) {
        Ok(j) => j,
        Err(e) => {
            tracing::debug!(error = %e, "stats report cannot be serialized");
            return;
        }
    };
    let key = stats_key(&inner.prefix, instance_id(inner));
    let ttl = every.saturating_mul(3).max(Duration::from_secs(1));
    if let Err(e) = l2
        .set(&key, &json, ttl)
        .instrument(tracing::debug_span!("l2.set", op = "stats_report"))
        .await
    {
        tracing::debug!(error = %e, "stats report not published");
        return;
    }
    let keep = crate::clock::millis(INSTANCE_INDEX_KEEP);
    if let Err(e) = l2
        .index_member(
            &instances_key(&inner.prefix),
            &report.instance,
            report.timestamp_ms,
            report.timestamp_ms.saturating_sub(keep),
            INSTANCE_INDEX_KEEP,
        )
        .instrument(tracing::debug_span!("l2.index", op = "instances"))
        .await
    {
        tracing::debug!(error = %e, "instance index not updated");
    }
}

/// `(host, port)` of every live master in `CLUSTER NODES` output (lines flagged `master` and not
/// failed): the nodes to SCAN to see every key of a Redis Cluster.
///
/// ```
/// let nodes = "07c3 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460\n\
///              e7d1 127.0.0.1:7004@17004 slave 07c3 0 0 1 connected\n";
/// assert_eq!(cache_core::admin::cluster_masters(nodes), vec![("127.0.0.1".to_string(), 7001)]);
/// ```
pub fn cluster_masters(cluster_nodes: &str) -> Vec<(String, u16)> {
    crate::l2::conn::masters(cluster_nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_their_pattern_and_entry_keys_hash_like_the_cache() {
        assert_eq!(stats_key("app", 255), "app:stats:00000000000000ff");
        assert!(stats_key("app", 1).starts_with(&stats_key_pattern("app")[..10]));
        let long = "k".repeat(500);
        assert_eq!(
            entry_key("p", "kind", &long),
            crate::key::full_key("p", "kind", &long)
        );
        assert!(!redact_url("redis://:pw@h").contains("pw"));
    }

    #[test]
    fn the_stats_pattern_escapes_glob_characters_of_the_prefix() {
        assert_eq!(
            stats_key_pattern("a*b?[c]\\"),
            "a\\*b\\?\\[c\\]\\\\:stats:*"
        );
    }
}
