//! L2: Redis (one node through a self-reconnecting `ConnectionManager`, or a Redis Cluster), every
//! operation behind the circuit breaker and our own deadline.
//!
//! redis-rs makes callers wait on a shared reconnect future with no deadline of their own, and a
//! response timeout does not trigger a reconnect; so each operation here is wrapped in
//! `tokio::time::timeout(op_timeout)` and reports to the [`Breaker`], which fails fast while Redis is
//! down or hung. Connection setup is lazy, so building a cache never blocks on an absent Redis.

pub(crate) mod conn;
mod redact;

use conn::Conn;
pub(crate) use redact::redact_url;
use redis::{AsyncCommands, RedisError};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::breaker::{Breaker, BreakerConfig};
use crate::error::Error;

/// L2 connection settings.
#[derive(Clone)]
pub(crate) struct L2Config {
    /// One URL, or the seed nodes of a cluster.
    pub(crate) urls: Vec<String>,
    pub(crate) cluster: bool,
    /// CA (PEM) trusted for `rediss://`; none: the system roots.
    pub(crate) tls_root_cert: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) breaker: BreakerConfig,
}

impl std::fmt::Debug for L2Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2Config")
            .field("urls", &conn::shown_urls(&self.urls))
            .field("cluster", &self.cluster)
            .field(
                "tls_root_cert",
                &self.tls_root_cert.as_ref().map(|_| "<PEM>"),
            )
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
    conn: Conn,
    /// One client per configured URL, for the backplane's dedicated pub/sub connection.
    pub(crate) clients: Vec<redis::Client>,
    pub(crate) breaker: Breaker,
    op_timeout: Duration,
    connect_timeout: Duration,
    pub(crate) url_redacted: String,
    cluster: bool,
}

/// INCR a tag version counter and refresh its expiry. ARGV: PX.
const INCR_LUA: &str = r"
local v = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return v
";

static INCR_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(INCR_LUA));

/// Compare-and-set of a load's write-back: SET only if the key still holds the write the load
/// saw when it began (identified by the first bytes of its envelope).
/// ARGV: expected identity, new bytes, PX. (`set_if_unchanged` sends the "still absent" case as a
/// plain `SET NX`.)
const CAS_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
if string.len(cur) > string.len(ARGV[1]) and string.len(ARGV[1]) < 36 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

static CAS_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(CAS_LUA));

/// Deletes a distributed lock only if it still holds our token (it may have expired and been taken
/// by another instance). ARGV: token.
const UNLOCK_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

static UNLOCK_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(UNLOCK_LUA));

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
        Ok(Self {
            conn: conn::connect(cfg)?,
            clients: conn::clients(&cfg.urls, cfg.tls_root_cert.as_deref())?,
            breaker: Breaker::new(cfg.breaker.clone()),
            op_timeout: cfg.op_timeout,
            connect_timeout: cfg.connect_timeout,
            url_redacted: conn::shown_urls(&cfg.urls),
            cluster: cfg.cluster,
        })
    }

    /// Whether L2 is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
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
        F: FnOnce(Conn) -> Fut,
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
        let Some(expected) = expected else {
            // "Only if still absent" is exactly `SET NX`: the same atomic check as a script, without
            // running Lua, which costs Redis several times a plain SET (this is the write-back of
            // every load that found nothing in L2, the common case).
            return self.set_nx_px(key, bytes, px).await;
        };
        let script = &*CAS_SCRIPT;
        self.run(|mut c| async move {
            let mut inv = script.key(key);
            inv.arg(expected).arg(bytes).arg(px);
            inv.invoke_async::<i64>(&mut c).await.map(|n| n == 1)
        })
        .await
    }

    /// `SET key token NX PX ttl`: takes a distributed lock. Returns whether it was taken.
    pub(crate) async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, L2Error> {
        let px = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.set_nx_px(key, token.as_bytes(), px).await
    }

    /// `SET key value NX PX px`: whether the key was absent (and is now set).
    async fn set_nx_px(&self, key: &str, value: &[u8], px: u64) -> Result<bool, L2Error> {
        self.run(|mut c| async move {
            let reply: redis::Value = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(px)
                .query_async(&mut c)
                .await?;
            Ok(!matches!(reply, redis::Value::Nil))
        })
        .await
    }

    /// Releases a distributed lock if it still holds `token` (Lua compare-and-delete). Returns
    /// whether it was deleted.
    pub(crate) async fn unlock(&self, key: &str, token: &str) -> Result<bool, L2Error> {
        let script = &*UNLOCK_SCRIPT;
        self.run(|mut c| async move {
            script
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|n| n == 1)
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

    /// INCRs tag version counters and refreshes their TTL: one single-key script per tag (so each
    /// goes to its own slot on a cluster), all in flight at once.
    pub(crate) async fn incr_versions(
        &self,
        keys: &[String],
        ttl: Duration,
    ) -> Result<(), L2Error> {
        let px = ttl.as_millis() as u64;
        let script = &*INCR_SCRIPT;
        let all = futures::future::join_all(keys.iter().map(|k| {
            self.run(
                move |mut c| async move { script.key(k).arg(px).invoke_async::<i64>(&mut c).await },
            )
        }))
        .await;
        all.into_iter().try_for_each(|r| r.map(drop))
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

    /// Deletes every key matching `pattern` with SCAN + UNLINK in batches (never KEYS), on every
    /// master of a cluster. Each round trip has the L2 deadline; the whole sweep does not.
    pub(crate) async fn unlink_matching(&self, pattern: &str) -> Result<u64, L2Error> {
        let mut removed = 0;
        for node in self.scan_targets().await? {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys) = self.scan_page(node.as_ref(), cursor, pattern, 1000).await?;
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                removed += self.unlink(&refs).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Where a SCAN must run: the one node, or every master of the cluster (`(host, port)`).
    pub(crate) async fn scan_targets(&self) -> Result<Vec<Option<(String, u16)>>, L2Error> {
        if !self.cluster {
            return Ok(vec![None]);
        }
        let nodes: String = self
            .run(
                |mut c| async move { redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await },
            )
            .await?;
        Ok(conn::masters(&nodes).into_iter().map(Some).collect())
    }

    /// One SCAN page on `node` (`None`: the single node).
    pub(crate) async fn scan_page(
        &self,
        node: Option<&(String, u16)>,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<String>), L2Error> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        self.run(|c| async move {
            match (c, node) {
                (Conn::Cluster(mut cc), Some((host, port))) => {
                    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    });
                    let v = cc.route_command(cmd, routing).await?;
                    redis::from_redis_value(v).map_err(RedisError::from)
                }
                (mut c, _) => cmd.query_async(&mut c).await,
            }
        })
        .await
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
            Ok(Ok(())) => {
                permit.success();
                // A restarted Redis has an empty script cache.
                self.load_scripts().await;
            }
            _ => permit.failure(),
        }
    }

    /// Loads the Lua scripts into Redis' script cache (on every master of a cluster: redis-rs
    /// routes `SCRIPT LOAD` to all of them), so the first write-back or tag invalidation after a
    /// (re)connection costs one round trip instead of three (EVALSHA, NOSCRIPT, SCRIPT LOAD,
    /// EVALSHA). Best effort: on failure the scripts load themselves on first use.
    pub(crate) async fn load_scripts(&self) {
        for lua in [INCR_LUA, CAS_LUA, UNLOCK_LUA] {
            let mut c = self.conn.clone();
            let res = tokio::time::timeout(
                self.op_timeout,
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(lua)
                    .query_async::<redis::Value>(&mut c),
            )
            .await;
            if !matches!(res, Ok(Ok(_))) {
                tracing::debug!(
                    "could not preload the cache's Lua scripts: they load on first use"
                );
                return;
            }
        }
    }

    // --- Batched reads and writes (warming, stats reports) ---

    /// Most keys in one MGET or one pipeline of SETs (`get_many`, `set_many`).
    pub(crate) const MANY_CHUNK_KEYS: usize = 128;
    /// Most value bytes in one pipeline of SETs (`set_many`); a single larger value goes alone.
    pub(crate) const MANY_CHUNK_BYTES: usize = 1 << 20;

    /// MGET of `keys`, in chunks of [`Self::MANY_CHUNK_KEYS`] keys: one round trip per chunk, each under
    /// the breaker and the L2 deadline. `None` for absent keys; the result is in the order of `keys`.
    /// (On a cluster, redis-rs splits an MGET across the slots' nodes by itself.)
    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, L2Error> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(Self::MANY_CHUNK_KEYS) {
            let vals: Vec<Option<Vec<u8>>> = self
                .run(|mut c| async move { redis::cmd("MGET").arg(chunk).query_async(&mut c).await })
                .await?;
            if vals.len() != chunk.len() {
                return Err(L2Error::Redis(RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "MGET returned a wrong number of values",
                ))));
            }
            out.extend(vals);
        }
        Ok(out)
    }

    /// SETs `(key, bytes, ttl)` items with pipelines.
    ///
    /// Chunked rather than given a scaled deadline: a pipeline carries at most
    /// [`Self::MANY_CHUNK_KEYS`] SETs or about [`Self::MANY_CHUNK_BYTES`] of values, and each chunk is
    /// one round trip under the normal L2 deadline and one breaker permit, so a hung Redis costs one
    /// deadline per call, not one scaled to the batch, and the breaker sees one failure per chunk.
    /// The first failure stops the rest.
    ///
    /// On a Redis Cluster a pipeline must go to the master that serves its keys: the items are
    /// grouped by master (slot table from one `CLUSTER NODES`), and each master gets its own
    /// pipelines, all masters in parallel. A group whose pipeline fails (a slot moved meanwhile) is
    /// sent again as single SETs, which redis-rs routes and redirects by itself.
    pub(crate) async fn set_many(
        &self,
        items: &[(String, Vec<u8>, Duration)],
    ) -> Result<(), L2Error> {
        if items.is_empty() {
            return Ok(());
        }
        if !self.cluster {
            let all: Vec<usize> = (0..items.len()).collect();
            return self.set_group(items, &all, None).await;
        }
        let nodes: String = self
            .run(
                |mut c| async move { redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await },
            )
            .await?;
        let (masters, owners) = conn::slot_owners(&nodes);
        let groups = conn::group_by_master(items.iter().map(|(k, _, _)| k.as_bytes()), &owners);
        futures::future::try_join_all(groups.iter().map(|(owner, members)| {
            self.set_group(items, members, owner.and_then(|o| masters.get(o)))
        }))
        .await
        .map(drop)
    }

    /// Pipelines of SETs of `items[members]`, chunk after chunk, to `node` (cluster) or the node.
    async fn set_group(
        &self,
        items: &[(String, Vec<u8>, Duration)],
        members: &[usize],
        node: Option<&(String, u16)>,
    ) -> Result<(), L2Error> {
        let mut start = 0;
        while start < members.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < members.len()
                && end - start < Self::MANY_CHUNK_KEYS
                && (end == start || bytes + items[members[end]].1.len() <= Self::MANY_CHUNK_BYTES)
            {
                bytes += items[members[end]].1.len();
                end += 1;
            }
            let chunk: Vec<&(String, Vec<u8>, Duration)> =
                members[start..end].iter().map(|&i| &items[i]).collect();
            self.run(|c| set_chunk(c, chunk, node)).await?;
            start = end;
        }
        Ok(())
    }
}

/// PX argument of a TTL: whole milliseconds, at least 1.
fn px(ttl: &Duration) -> u64 {
    ttl.as_millis().clamp(1, u64::MAX as u128) as u64
}

/// One pipeline of SETs: to the single node, or to `node` of a cluster (falling back to single SETs
/// routed by redis-rs when the pipeline fails or no master is known for the keys' slots).
async fn set_chunk(
    c: Conn,
    chunk: Vec<&(String, Vec<u8>, Duration)>,
    node: Option<&(String, u16)>,
) -> Result<(), RedisError> {
    let mut p = redis::pipe();
    for (key, value, ttl) in &chunk {
        p.cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(px(ttl))
            .ignore();
    }
    let cc = match (c, node) {
        (Conn::Single(mut sc), _) => return p.query_async::<()>(&mut sc).await,
        (Conn::Cluster(cc), Some((host, port))) => {
            use redis::cluster_routing::SingleNodeRoutingInfo;
            let route = SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            };
            let mut pc = cc.clone();
            let count = chunk.len();
            match pc.route_pipeline(p, 0, count, route).await {
                Ok(replies) => match replies.into_iter().find_map(|v| v.extract_error().err()) {
                    None => return Ok(()),
                    Some(e) => {
                        tracing::debug!(error = %e, "pipeline to a cluster master failed: sending the SETs one by one");
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "pipeline to a cluster master failed: sending the SETs one by one");
                }
            }
            cc
        }
        (Conn::Cluster(cc), None) => cc,
    };
    futures::future::try_join_all(chunk.iter().map(|(key, value, ttl)| {
        let mut c = cc.clone();
        async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(px(ttl))
                .query_async::<()>(&mut c)
                .await
        }
    }))
    .await?;
    Ok(())
}
