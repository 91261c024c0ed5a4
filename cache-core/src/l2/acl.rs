//! The Redis ACL the cache needs, and what it does when Redis refuses a command for lack of one.
//!
//! [`ACL_RULES`] is every command the library sends (its own, those inside its Lua scripts, and
//! those redis-rs sends for it: topology discovery on a cluster, script loading; and the check
//! that the node the sentinels name is a master), on its own keys and backplane channel only.
//! [`SENTINEL_ACL_RULES`] is what it sends to the sentinels of a Sentinel deployment. The tests
//! create their Redis users from these constants (`tests/acl.rs`, and the contract suite on one
//! node and on a cluster), and check that Redis' `ACL LOG` holds no refusal afterwards: a command
//! added to the library without adding it here fails them.
//!
//! A command refused anyway (`NOPERM`: a user given fewer rules) is a configuration error, not an
//! outage: the breaker does not count it, the operation is handled as any refusal (a read is a
//! miss, a write is skipped, an invalidation falls back to deleting), and [`AclRefusals`] says it
//! once per command, at error level, with the rules to give the user.

use redis::RedisError;
use std::sync::Mutex;

/// The rules of the ACL user of a cache whose prefix is `{prefix}` (see
/// [`acl_rules`](crate::admin::acl_rules), which fills it in): its keys (`{prefix}:*`), its
/// backplane channel (`{prefix}:bp`), and exactly the commands the library sends.
///
/// Give them to a user with `ACL SETUSER cache on >PASSWORD <rules>`, or in an ACL file:
/// `user cache on >PASSWORD <rules>`. Redis 6.2 or newer (channel rules).
pub const ACL_RULES: &str = "resetkeys ~{prefix}:* resetchannels &{prefix}:bp -@all \
+ping +get +mget +set +pexpire +pttl +del +unlink +evalsha +script|load \
+zadd +zremrangebyscore +zrangebyscore +scan +info \
+publish +subscribe +pubsub|numsub +cluster|slots +cluster|nodes +asking +role";

/// The rules of the ACL user the cache logs in as on the sentinels of a Redis Sentinel
/// deployment (`sentinel_username` of a `redis+sentinel://` URL, `REDIS_SENTINEL_USERNAME`):
/// `SENTINEL MASTER <name>`, where the master is, and `PSUBSCRIBE *`, every channel, to hear of a
/// failover at once (without it the cache still follows the master, at its next question: every
/// 500 ms). No key, no other command.
///
/// Give them in each `sentinel.conf`: `user cache on >PASSWORD <rules>` (or `ACL SETUSER` on each
/// sentinel). Redis 6.2 or newer. The sentinels' own users (among themselves, and towards the
/// Redis nodes) are apart from this one.
pub const SENTINEL_ACL_RULES: &str = "resetchannels &* -@all +sentinel|master +psubscribe";

/// The rules of a user for `cachectl`'s read-only commands (`stats`, `top`, `keys`, `get`,
/// `health`, `doctor`) on the cache whose prefix is `{prefix}` (see
/// [`cachectl_acl_rules`](crate::admin::cachectl_acl_rules)): its keys read-only (`%R~`, Redis
/// 7.0 or newer), no channel, no write. `cachectl invalidate` and `cachectl clear` act as an
/// instance of the cache: they need [`ACL_RULES`].
pub const CACHECTL_ACL_RULES: &str = "resetkeys %R~{prefix}:* resetchannels -@all \
+ping +get +mget +pttl +scan +info +zrangebyscore +cluster|slots +cluster|nodes +asking";

/// `rules` with `{prefix}` replaced by `prefix`, its glob characters (`*?[]\`) escaped: ACL key
/// and channel patterns are globs.
pub(crate) fn fill(rules: &str, prefix: &str) -> String {
    rules.replace("{prefix}", &crate::key::glob_escape(prefix))
}

/// The most distinct refused commands remembered (and logged); more would only repeat the advice.
const MAX_REFUSED: usize = 16;

/// The commands Redis refused for lack of ACL permission (`NOPERM`), each said once at error level.
pub(crate) struct AclRefusals {
    /// What to give the user: `ACL SETUSER ... <rules>` for this cache's prefix.
    rules: String,
    /// How messages name the Redis (redacted).
    redis: String,
    /// The commands refused, in the order they first were.
    refused: Mutex<Vec<String>>,
}

impl AclRefusals {
    /// `rules`: the ACL rules of the cache (prefix filled in); `redis`: the redacted URL(s).
    pub(crate) fn new(rules: String, redis: String) -> Self {
        Self {
            rules,
            redis,
            refused: Mutex::new(Vec::new()),
        }
    }

    /// Records that Redis refused `command` with `e` (a `NOPERM`); the first refusal of each
    /// command is logged at error level, with the rules that fix it.
    pub(crate) fn note(&self, command: &str, e: &RedisError) {
        {
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            if refused.len() >= MAX_REFUSED || refused.iter().any(|c| c == command) {
                return;
            }
            refused.push(command.to_owned());
        }
        tracing::error!(
            redis = %self.redis,
            command,
            error = %super::redacted_error(e),
            "Redis refused the cache's {command} for lack of an ACL permission (NOPERM): a \
             configuration error, not an outage (the circuit breaker ignores it; the cache goes \
             on with the commands it may run, reading a refused read as a miss and skipping a \
             refused write). Said once per command. Give the cache's Redis user these rules: \
             ACL SETUSER <user> {}",
            self.rules
        );
    }

    /// The commands refused so far, in the order they first were.
    pub(crate) fn commands(&self) -> Vec<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_filled_in_with_its_glob_characters_escaped() {
        let rules = fill(ACL_RULES, "app");
        assert!(rules.starts_with("resetkeys ~app:* resetchannels &app:bp -@all +ping "));
        assert!(!rules.contains("{prefix}"));
        let odd = fill(CACHECTL_ACL_RULES, "a*b");
        assert!(odd.starts_with(r"resetkeys %R~a\*b:* "), "{odd}");
    }

    #[test]
    fn the_rules_grant_no_category_and_no_dangerous_command() {
        for rules in [ACL_RULES, CACHECTL_ACL_RULES, SENTINEL_ACL_RULES] {
            let grants: Vec<&str> = rules.split(' ').filter(|r| r.starts_with('+')).collect();
            assert!(grants.iter().all(|g| !g.starts_with("+@")), "{rules}");
            for forbidden in [
                "+flushall",
                "+flushdb",
                "+config",
                "+keys",
                "+debug",
                "+shutdown",
                "+acl",
                "+client",
                "+eval",
                "+script",
                "+module",
            ] {
                assert!(!grants.contains(&forbidden), "{forbidden} in {rules}");
            }
        }
        // The read-only tool's user writes nothing and subscribes to nothing.
        for write in [
            "+set",
            "+del",
            "+unlink",
            "+evalsha",
            "+publish",
            "+subscribe",
            "+zadd",
        ] {
            assert!(
                !CACHECTL_ACL_RULES.split(' ').any(|r| r == write),
                "{write}"
            );
        }
    }

    #[test]
    fn each_refused_command_is_remembered_once_in_order() {
        let record = AclRefusals::new("rules".into(), "redis://h:1".into());
        let e = RedisError::from((redis::ErrorKind::Extension, "NOPERM no permission"));
        for cmd in ["EVALSHA", "GET", "EVALSHA", "GET", "SCAN"] {
            record.note(cmd, &e);
        }
        assert_eq!(record.commands(), ["EVALSHA", "GET", "SCAN"]);
        for i in 0..2 * MAX_REFUSED {
            record.note(&format!("C{i}"), &e);
        }
        assert_eq!(record.commands().len(), MAX_REFUSED);
    }
}
