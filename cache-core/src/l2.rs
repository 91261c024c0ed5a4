//! L2: Redis through a self-reconnecting `ConnectionManager`, every operation behind the circuit
//! breaker and our own deadline.
//!
//! redis-rs makes callers wait on a shared reconnect future with no deadline of their own, and a
//! response timeout does not trigger a reconnect; so each operation here is wrapped in
//! `tokio::time::timeout(op_timeout)` and reports to the [`Breaker`], which fails fast while Redis is
//! down or hung. Connection setup is lazy, so building a cache never blocks on an absent Redis.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::breaker::{Breaker, BreakerConfig};
use crate::error::Error;

/// L2 connection settings.
#[derive(Clone)]
pub(crate) struct L2Config {
    pub(crate) url: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) breaker: BreakerConfig,
}

impl std::fmt::Debug for L2Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2Config")
            .field("url", &redact_url(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .field("op_timeout", &self.op_timeout)
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// Why an L2 operation did not produce a result.
#[derive(Debug)]
pub(crate) enum L2Error {
    /// The breaker is open: nothing was sent.
    Skipped,
    /// No answer within the deadline.
    Timeout,
    /// I/O failure or an error reply.
    Redis(RedisError),
}

impl From<L2Error> for Error {
    fn from(e: L2Error) -> Self {
        match e {
            L2Error::Skipped => Error::CircuitOpen,
            L2Error::Timeout => Error::Timeout(Duration::ZERO),
            L2Error::Redis(e) => Error::Redis(e.to_string()),
        }
    }
}

pub(crate) struct L2 {
    conn: ConnectionManager,
    /// For the backplane's dedicated pub/sub connection.
    pub(crate) client: redis::Client,
    pub(crate) breaker: Breaker,
    op_timeout: Duration,
    connect_timeout: Duration,
    pub(crate) url_redacted: String,
}

/// Compare-and-set of a load's write-back: SET only if the key still holds the write the load
/// saw when it began (identified by the first bytes of its envelope), or is still absent.
/// ARGV: expected identity, whether a value was expected (0/1), new bytes, PX.
static CAS_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if cur then return 0 end
else
  if not cur or string.sub(cur, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
  if string.len(cur) > string.len(ARGV[1]) and string.len(ARGV[1]) < 36 then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
",
    )
});

/// Replaces the password of a `redis://user:password@host` URL with `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let redacted = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{}{}@{}", &url[..scheme_end + 3], redacted, &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Infrastructure failures count against the breaker; error replies (WRONGTYPE...) do not.
fn is_infra(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

impl L2 {
    /// Creates the client; no connection is made until the first operation.
    pub(crate) fn new(cfg: &L2Config) -> Result<Self, Error> {
        use redis::IntoConnectionInfo;
        let info = cfg
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::Config(format!("REDIS_URL is invalid: {e}")))?;
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        // redis-rs leaves Nagle's algorithm on: pipelined requests on the multiplexed connection
        // would then wait for delayed ACKs (up to ~40 ms) whenever the network has latency.
        let client = redis::Client::open(info.set_tcp_settings(tcp))
            .map_err(|e| Error::Config(format!("REDIS_URL is invalid: {e}")))?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.op_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), mgr_cfg)
            .map_err(|e| Error::Config(format!("cannot create the Redis client: {e}")))?;
        Ok(Self {
            conn,
            client,
            breaker: Breaker::new(cfg.breaker.clone()),
            op_timeout: cfg.op_timeout,
            connect_timeout: cfg.connect_timeout,
            url_redacted: redact_url(&cfg.url),
        })
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Runs one operation under the breaker and the deadline.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, L2Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let permit = self.breaker.acquire().ok_or(L2Error::Skipped)?;
        match tokio::time::timeout(self.op_timeout, op(self.conn.clone())).await {
            Ok(Ok(v)) => {
                permit.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                if is_infra(&e) {
                    permit.failure();
                } else {
                    permit.success();
                }
                // redis-rs' own response timeout (set to the same deadline) may fire first.
                if e.is_timeout() {
                    Err(L2Error::Timeout)
                } else {
                    Err(L2Error::Redis(e))
                }
            }
            Err(_) => {
                permit.failure();
                Err(L2Error::Timeout)
            }
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        self.run(|mut c| async move { c.get(key).await }).await
    }

    pub(crate) async fn set(&self, key: &str, bytes: &[u8], ttl: Duration) -> Result<(), L2Error> {
        let px = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(bytes)
                .arg("PX")
                .arg(px)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// SET `key` to `bytes` only if its current value is still the write identified by `expected`
    /// (`None`: the key must be absent). Returns whether it was written.
    pub(crate) async fn set_if_unchanged(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
        ttl: Duration,
    ) -> Result<bool, L2Error> {
        let px = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let script = &*CAS_SCRIPT;
        self.run(|mut c| async move {
            let mut inv = script.key(key);
            inv.arg(expected.map_or(&[][..], |e| e))
                .arg(if expected.is_some() { 1 } else { 0 })
                .arg(bytes)
                .arg(px);
            inv.invoke_async::<i64>(&mut c).await.map(|n| n == 1)
        })
        .await
    }

    /// MGET of tag version counters (absent counters read as 0).
    pub(crate) async fn get_versions(&self, keys: &[String]) -> Result<Vec<u64>, L2Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let vals: Vec<Option<u64>> = self
            .run(|mut c| async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await })
            .await?;
        Ok(vals.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// INCRs tag version counters and refreshes their TTL, in one pipeline.
    pub(crate) async fn incr_versions(
        &self,
        keys: &[String],
        ttl: Duration,
    ) -> Result<(), L2Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let px = ttl.as_millis() as u64;
        self.run(|mut c| async move {
            let mut p = redis::pipe();
            for k in keys {
                p.cmd("INCR").arg(k).ignore();
                p.cmd("PEXPIRE").arg(k).arg(px).ignore();
            }
            p.query_async::<()>(&mut c).await
        })
        .await
    }

    /// PUBLISH on the backplane channel.
    pub(crate) async fn publish(&self, channel: &str, msg: &str) -> Result<(), L2Error> {
        self.run(|mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(msg)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub(crate) async fn unlink(&self, keys: &[&str]) -> Result<u64, L2Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.run(|mut c| async move { redis::cmd("UNLINK").arg(keys).query_async(&mut c).await })
            .await
    }

    /// Deletes every key matching `pattern` with SCAN + UNLINK in batches (never KEYS). Each round
    /// trip has the L2 deadline; the whole sweep does not.
    pub(crate) async fn unlink_matching(&self, pattern: &str) -> Result<u64, L2Error> {
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(|mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            removed += self.unlink(&refs).await?;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// PING through the breaker; returns the round-trip time.
    pub(crate) async fn ping(&self) -> Result<Duration, L2Error> {
        let start = Instant::now();
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await?;
        Ok(start.elapsed())
    }

    /// A PING that bypasses the breaker's admission (used at startup) but reports to it.
    pub(crate) async fn ping_unguarded(&self) -> Result<(), L2Error> {
        let mut c = self.conn.clone();
        match tokio::time::timeout(
            self.op_timeout.max(Duration::from_millis(1)) * 4,
            redis::cmd("PING").query_async::<()>(&mut c),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(L2Error::Redis(e)),
            Err(_) => Err(L2Error::Timeout),
        }
    }

    /// The background probe: when the breaker is open and its cool-down has passed, PING once.
    pub(crate) async fn probe(&self) {
        let Some(permit) = self.breaker.acquire_probe() else {
            return;
        };
        let mut c = self.conn.clone();
        match tokio::time::timeout(
            self.op_timeout,
            redis::cmd("PING").query_async::<()>(&mut c),
        )
        .await
        {
            Ok(Ok(())) => permit.success(),
            _ => permit.failure(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://:s3cret@host"), "rediss://:***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("redis://tok@host"), "redis://***@host");
        assert!(!redact_url("redis://u:p@ss@host").contains("p@ss"));
    }
}
