//! L2: Redis (one node through a self-reconnecting `ConnectionManager`, a Redis Cluster, or the
//! master of a Sentinel deployment, followed across failovers), every operation behind the circuit
//! breaker and our own deadline.
//!
//! redis-rs makes callers wait on a shared reconnect future with no deadline of their own, and a
//! response timeout does not trigger a reconnect; so each operation here is wrapped in
//! `tokio::time::timeout(op_timeout)` and reports to the [`Breaker`], which fails fast while Redis is
//! down or hung. Connection setup is lazy, so building a cache never blocks on an absent Redis.
//!
//! # Outages and refusals
//! What goes wrong is sorted into two kinds ([`L2Error`]):
//! - **outages** (the breaker open, our deadline, I/O errors, refused connections, and the replies
//!   that mean "not serving now": `LOADING`, `READONLY`, `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`,
//!   `BUSY`, `MISCONF` (writes stopped after a failed background save), `NOREPLICAS` (fewer
//!   replicas than `min-replicas-to-write`), `ERR max number of clients reached`): retrying later
//!   helps, so they count toward the breaker and invalidations that hit one are queued for replay.
//!   In a pipeline, one such reply fails that pipeline as an outage (a batch of lease reads fails
//!   whole; a batch of writes keeps the results of its other pipelines);
//! - **refusals** (`OOM` under `maxmemory` with `noeviction`, `NOPERM`, `WRONGTYPE`, any other error
//!   reply): Redis answered, and the same command would be refused again. They never count toward the
//!   breaker and are never queued: each operation handles them (an invalidation falls back to
//!   deleting, a write is skipped and counted). A Redis refusing writes for lack of memory is said
//!   once in the log and shown in `stats()` while it lasts; reads go on. A `NOPERM` (the ACL user
//!   lacks a command: see [`acl`]) is said once per command, with the rules to give the user, and
//!   listed in `stats()`.

pub(crate) mod acl;
mod batch;
pub(crate) mod conn;
mod error;
mod redact;
mod scripts;
mod sentinel;

pub(crate) use batch::CasResult;
use conn::Conn;
pub(crate) use conn::PubSubNodes;
use error::wrong_count;
pub(crate) use error::{is_auth as is_auth_error, redacted as redacted_error, L2Error, Refusal};
pub(crate) use redact::redact_url;
use redis::RedisError;
pub(crate) use sentinel::{check_url as check_sentinel_url, sentinel_url, Auth as SentinelAuth};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::breaker::{Breaker, BreakerConfig};
use crate::error::Error;
use acl::AclRefusals;

/// L2 connection settings.
#[derive(Clone)]
pub(crate) struct L2Config {
    /// One URL (a `redis+sentinel://` one: a Sentinel deployment), or the seed nodes of a
    /// cluster.
    pub(crate) urls: Vec<String>,
    pub(crate) cluster: bool,
    /// CA (PEM) trusted for `rediss://`; none: the system roots.
    pub(crate) tls_root_cert: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) breaker: BreakerConfig,
    /// The ACL rules this cache needs (its prefix filled in), for the message of a `NOPERM`.
    pub(crate) acl_rules: String,
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
            .field("acl_rules", &self.acl_rules)
            .finish()
    }
}

/// What [`L2::read_or_lease`] found.
pub(crate) enum ReadOrLease {
    /// The key holds these bytes (nothing was written).
    Found(Vec<u8>),
    /// The key was absent and now holds the lease given.
    Leased,
    /// The key is absent and no lease could be written (Redis refuses writes).
    Absent,
}

pub(crate) struct L2 {
    conn: Conn,
    /// Where the backplane's dedicated pub/sub connection goes.
    pub(crate) pubsub: PubSubNodes,
    pub(crate) breaker: Breaker,
    op_timeout: Duration,
    connect_timeout: Duration,
    pub(crate) url_redacted: String,
    cluster: bool,
    /// The origin of [`oom_until`](Self::oom_until): monotonic (a wall-clock step must neither
    /// prolong nor cut the hold), and tokio's, like the breaker's, so tests can pause it.
    epoch: tokio::time::Instant,
    /// Until when (ms since `epoch`; 0: not) Redis is taken to refuse writes for lack of memory.
    oom_until: AtomicU64,
    oom_warned: AtomicBool,
    /// Commands Redis refused for lack of an ACL permission (said once each).
    pub(crate) acl: AclRefusals,
    /// The server does not take `SET ... NX GET` (Redis before 7.0): lease in two round trips.
    no_set_nx_get: AtomicBool,
    /// Redis's memory as last read ([`L2::sample_memory`]).
    memory: std::sync::Mutex<Option<RedisMemory>>,
}

/// How long after an `OOM` refusal writes are assumed refused (and reads skip the lease).
const OOM_HOLD: Duration = Duration::from_secs(1);

impl L2 {
    /// Creates the client; no connection is made until the first operation.
    pub(crate) fn new(cfg: &L2Config) -> Result<Self, Error> {
        let conn = conn::connect(cfg)?;
        Ok(Self {
            pubsub: conn::pubsub_nodes(&conn, &cfg.urls, cfg.tls_root_cert.as_deref())?,
            conn,
            breaker: Breaker::new(cfg.breaker.clone()),
            op_timeout: cfg.op_timeout,
            connect_timeout: cfg.connect_timeout,
            url_redacted: conn::shown_urls(&cfg.urls),
            cluster: cfg.cluster,
            epoch: tokio::time::Instant::now(),
            oom_until: AtomicU64::new(0),
            oom_warned: AtomicBool::new(false),
            acl: AclRefusals::new(cfg.acl_rules.clone(), conn::shown_urls(&cfg.urls)),
            no_set_nx_get: AtomicBool::new(false),
            memory: std::sync::Mutex::new(None),
        })
    }

    /// Whether L2 is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// With Sentinel, a counter that moves each time the master moves to another node (the new
    /// master may lack the last writes the old one acknowledged); `None` otherwise.
    pub(crate) fn master_switches(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.pubsub.switches()
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whether Redis refused a write for lack of memory within the last second.
    pub(crate) fn refusing_writes(&self) -> bool {
        let until = self.oom_until.load(Ordering::Relaxed);
        until != 0 && self.elapsed_ms() < until
    }

    /// Milliseconds since `epoch` (monotonic).
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sorts an error Redis (or redis-rs) gave `command`, noting a `NOPERM` (said once per
    /// command).
    fn classify(&self, command: &str, e: RedisError) -> L2Error {
        let e = L2Error::from_redis(e, self.op_timeout);
        if let L2Error::Refused(Refusal::NoPermission, inner) = &e {
            self.acl.note(command, inner);
        }
        e
    }

    /// Runs one operation (`command`: what it sends, as messages name it) under the breaker and
    /// the deadline.
    async fn run<T, F, Fut>(&self, command: &str, op: F) -> Result<T, L2Error>
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
                let e = self.classify(command, e);
                if e.is_outage() {
                    permit.failure();
                } else {
                    // Redis answered: not an infrastructure failure.
                    permit.success();
                }
                Err(e)
            }
            Err(_) => {
                permit.failure();
                Err(L2Error::Timeout(self.op_timeout))
            }
        }
    }

    /// Runs a write: a refusal is counted (and, for memory, said once; permissions are said by
    /// [`run`](Self::run)).
    async fn write<T, F, Fut>(&self, command: &str, op: F) -> Result<T, L2Error>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let res = self.run(command, op).await;
        match &res {
            Ok(_) => {
                if self.oom_until.load(Ordering::Relaxed) != 0 {
                    self.oom_until.store(0, Ordering::Relaxed);
                }
            }
            Err(e) => self.note_refusal(e),
        }
        res
    }

    /// Records a refusal of a write.
    fn note_refusal(&self, e: &L2Error) {
        let Some(refusal) = e.refusal() else {
            return;
        };
        match refusal {
            Refusal::OutOfMemory => {
                let hold = u64::try_from(OOM_HOLD.as_millis()).unwrap_or(u64::MAX);
                let until = self.elapsed_ms().saturating_add(hold).max(1);
                self.oom_until.store(until, Ordering::Relaxed);
                if !self.oom_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(redis = %self.url_redacted,
                        "Redis refuses writes: used memory is over 'maxmemory' with policy noeviction. \
                         Reads from L2 go on; values are not written back and invalidations delete \
                         keys instead. Set maxmemory-policy allkeys-lru (see `cachectl health`)");
                }
            }
            // Said once per command where it was sorted (`classify`).
            Refusal::NoPermission => {}
            Refusal::WrongType | Refusal::Other => {
                tracing::debug!(error = %e, "Redis refused a write");
            }
        }
    }

    /// `Skipped` while reads wait: for a moment after a Sentinel master move, the new master may
    /// still lack writes that other instances are applying to it again.
    fn reads_allowed(&self) -> Result<(), L2Error> {
        if self.conn.reads_paused() {
            return Err(L2Error::Skipped);
        }
        Ok(())
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        self.reads_allowed()?;
        // A `Cmd` sent as is: the `AsyncCommands` methods box their future (an allocation per read).
        self.run("GET", |mut c| async move {
            redis::cmd("GET").arg(key).query_async(&mut c).await
        })
        .await
    }

    /// Reads `key` and, when it is absent, puts `lease` there in the same step (`SET key lease NX
    /// GET PX`), so that the write-back of a load can compare-and-set against the lease: if the
    /// lease is replaced (an invalidation, a `set`) or lost (eviction, expiry, a restart), the
    /// write-back does nothing. When Redis refuses writes, the key is only read.
    pub(crate) async fn read_or_lease(
        &self,
        key: &str,
        lease: &[u8],
        ttl: Duration,
    ) -> Result<ReadOrLease, L2Error> {
        self.reads_allowed()?;
        if self.refusing_writes() {
            return Ok(self
                .get(key)
                .await?
                .map_or(ReadOrLease::Absent, ReadOrLease::Found));
        }
        let px = px(&ttl);
        if self.no_set_nx_get.load(Ordering::Relaxed) {
            if let Some(found) = self.get(key).await? {
                return Ok(ReadOrLease::Found(found));
            }
            // As on the `SET ... NX GET` path: an `OOM` (noted by `set_nx_px`) leaves the key
            // unleased, anything else is returned.
            return match self.set_nx_px(key, lease, px).await {
                Ok(true) => Ok(ReadOrLease::Leased),
                // Written meanwhile: whatever it is, it is newer than this load's start.
                Ok(false) => Ok(ReadOrLease::Absent),
                Err(e) if e.refusal() == Some(Refusal::OutOfMemory) => Ok(ReadOrLease::Absent),
                Err(e) => Err(e),
            };
        }
        let res = self
            .run("SET", |mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(lease)
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(px)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
            })
            .await;
        match res {
            Ok(Some(found)) => Ok(ReadOrLease::Found(found)),
            Ok(None) => Ok(ReadOrLease::Leased),
            Err(e @ L2Error::Refused(Refusal::OutOfMemory, _)) => {
                self.note_refusal(&e);
                Ok(self
                    .get(key)
                    .await?
                    .map_or(ReadOrLease::Absent, ReadOrLease::Found))
            }
            Err(L2Error::Refused(Refusal::Other, e)) if is_syntax_error(&e) => {
                self.lease_in_two_steps();
                Box::pin(self.read_or_lease(key, lease, ttl)).await
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn set(&self, key: &str, bytes: &[u8], ttl: Duration) -> Result<(), L2Error> {
        let px = px(&ttl);
        self.write("SET", |mut c| async move {
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

    /// Adds (or refreshes) `member` with score `score` in the sorted set `key`, drops members
    /// scored below `oldest`, and keeps the set `keep` longer: one round trip.
    pub(crate) async fn index_member(
        &self,
        key: &str,
        member: &str,
        score: u64,
        oldest: u64,
        keep: Duration,
    ) -> Result<(), L2Error> {
        let px = px(&keep);
        self.write("ZADD+ZREMRANGEBYSCORE+PEXPIRE", |mut c| async move {
            redis::pipe()
                .cmd("ZADD")
                .arg(key)
                .arg(score)
                .arg(member)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(format!("({oldest}"))
                .ignore()
                .cmd("PEXPIRE")
                .arg(key)
                .arg(px)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// The members of the sorted set `key` scored `min` or more (at most `limit`).
    #[cfg(feature = "http")]
    pub(crate) async fn members_since(
        &self,
        key: &str,
        min: u64,
        limit: usize,
    ) -> Result<Vec<String>, L2Error> {
        self.run("ZRANGEBYSCORE", |mut c| async move {
            // ZRANGEBYSCORE rather than ZRANGE ... BYSCORE: Redis before 6.2 has only this.
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(min)
                .arg("+inf")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut c)
                .await
        })
        .await
    }

    /// Replaces `key` with `tombstone` (an invalidation; a SET replaces a value of any type). When
    /// Redis refuses the write (`OOM` under `maxmemory` with `noeviction`, a `NOPERM`, any other
    /// refusal), the key is deleted instead, which Redis accepts even when out of memory: a
    /// missing tombstone only costs in-flight loads their write-back (their leases are gone too).
    /// An outage is returned as is (the caller queues the invalidation).
    pub(crate) async fn invalidate(
        &self,
        key: &str,
        tombstone: &[u8],
        ttl: Duration,
    ) -> Result<(), L2Error> {
        match self.set(key, tombstone, ttl).await {
            Err(e) if !e.is_outage() => self.unlink(&[key]).await.map(drop),
            other => other,
        }
    }

    /// SET `key` to `bytes` only if its current value is still the write (or lease) identified by
    /// `expected`. Returns whether it was written.
    pub(crate) async fn set_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
        bytes: &[u8],
        ttl: Duration,
    ) -> Result<bool, L2Error> {
        let px = px(&ttl);
        let script = &*scripts::CAS;
        self.write("EVALSHA", |mut c| async move {
            let mut inv = script.key(key);
            inv.arg(expected).arg(bytes).arg(px);
            inv.invoke_async::<i64>(&mut c).await.map(|n| n == 1)
        })
        .await
    }

    /// Deletes `key` if it still holds the lease identified by `lease`. Returns whether it did.
    pub(crate) async fn release_lease(&self, key: &str, lease: &[u8]) -> Result<bool, L2Error> {
        let script = &*scripts::RELEASE;
        self.run("EVALSHA", |mut c| async move {
            script
                .key(key)
                .arg(lease)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|n| n == 1)
        })
        .await
    }

    /// Takes a distributed lock (`SET NX PX`; a key that cannot be a live lock is taken over).
    /// Returns whether it was taken.
    pub(crate) async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, L2Error> {
        let px = px(&ttl);
        let script = &*scripts::LOCK;
        self.write("EVALSHA", |mut c| async move {
            script
                .key(key)
                .arg(token)
                .arg(px)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|n| n == 1)
        })
        .await
    }

    /// `SET key value NX PX px`: whether the key was absent (and is now set).
    async fn set_nx_px(&self, key: &str, value: &[u8], px: u64) -> Result<bool, L2Error> {
        self.write("SET", |mut c| async move {
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
        let script = &*scripts::UNLOCK;
        self.run("EVALSHA", |mut c| async move {
            script
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|n| n == 1)
        })
        .await
    }

    // --- Tag tokens (see the `tags` module) ---

    /// The raw values of tag keys (MGET); `None` for absent keys.
    pub(crate) async fn tag_values(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, L2Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.reads_allowed()?;
        let vals: Vec<Option<Vec<u8>>> = self
            .run("MGET", |mut c| async move {
                redis::cmd("MGET").arg(keys).query_async(&mut c).await
            })
            .await?;
        if vals.len() != keys.len() {
            return Err(wrong_count());
        }
        Ok(vals)
    }

    /// The current tokens of tag keys, creating `fresh[i]` for a key that has none (or holds
    /// something that is not a token); one single-key script per tag, all in flight at once.
    pub(crate) async fn tag_tokens_or_create(
        &self,
        keys: &[String],
        fresh: &[u64],
        ttl: Duration,
    ) -> Result<Vec<Vec<u8>>, L2Error> {
        let px = px(&ttl);
        let script = &*scripts::TAG_TOKEN;
        let all = futures::future::join_all(keys.iter().zip(fresh).map(|(k, t)| {
            self.write("EVALSHA", move |mut c| async move {
                script
                    .key(k)
                    .arg(t.to_string())
                    .arg(px)
                    .invoke_async::<Vec<u8>>(&mut c)
                    .await
            })
        }))
        .await;
        all.into_iter().collect()
    }

    /// Gives tag keys new tokens (an invalidation of the tags): one SET per tag, all in flight at
    /// once. A tag whose SET is refused (memory) is deleted instead: an absent token matches no
    /// entry either.
    pub(crate) async fn replace_tag_tokens(
        &self,
        keys: &[String],
        fresh: &[u64],
        ttl: Duration,
    ) -> Result<(), L2Error> {
        let all = futures::future::join_all(keys.iter().zip(fresh).map(|(k, t)| {
            let token = t.to_string();
            async move {
                match self.set(k, token.as_bytes(), ttl).await {
                    Err(e) if !e.is_outage() => self.unlink(&[k.as_str()]).await.map(drop),
                    other => other,
                }
            }
        }))
        .await;
        all.into_iter().collect()
    }

    /// PUBLISH on the backplane channel.
    pub(crate) async fn publish(&self, channel: &str, msg: &str) -> Result<(), L2Error> {
        self.run("PUBLISH", |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(msg)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// How many connections are subscribed to `channel` (`PUBSUB NUMSUB`; on a cluster, summed
    /// over the masters, where the instances subscribe).
    pub(crate) async fn subscribers(&self, channel: &str) -> Result<u64, L2Error> {
        let mut total = 0;
        for node in self.node_targets().await? {
            let mut cmd = redis::cmd("PUBSUB");
            cmd.arg("NUMSUB").arg(channel);
            let reply: (String, u64) = self.query_on("PUBSUB NUMSUB", node.as_ref(), cmd).await?;
            total += reply.1;
        }
        Ok(total)
    }

    pub(crate) async fn unlink(&self, keys: &[&str]) -> Result<u64, L2Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.run("UNLINK", |mut c| async move {
            redis::cmd("UNLINK").arg(keys).query_async(&mut c).await
        })
        .await
    }

    /// Deletes every key matching `pattern` with SCAN + UNLINK in batches (never KEYS), on every
    /// master of a cluster. Each round trip has the L2 deadline; the whole sweep does not.
    ///
    /// On a cluster where some hash slot has no known master (a master failed and no replica took
    /// over yet), nothing is deleted and the sweep fails: keys of those slots could not be reached,
    /// and reporting success would leave them behind unnoticed.
    pub(crate) async fn unlink_matching(&self, pattern: &str) -> Result<u64, L2Error> {
        let targets = if self.cluster {
            let nodes = self.cluster_nodes().await?;
            let (masters, owners) = conn::slot_owners(&nodes);
            let orphans = owners.iter().filter(|o| o.is_none()).count();
            if orphans > 0 {
                return Err(L2Error::Unavailable(RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                    "hash slots without a known master",
                    format!(
                        "{orphans} hash slots have no known master: their keys cannot be reached"
                    ),
                ))));
            }
            masters.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let mut removed = 0;
        for node in targets {
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

    /// The keys matching `pattern` (SCAN, never KEYS; every master of a cluster), at most
    /// `limit`. Each round trip has the L2 deadline; the whole scan does not.
    #[cfg(feature = "http")]
    pub(crate) async fn keys_matching(
        &self,
        pattern: &str,
        limit: usize,
    ) -> Result<Vec<String>, L2Error> {
        let mut found = Vec::new();
        for node in self.node_targets().await? {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys) = self.scan_page(node.as_ref(), cursor, pattern, 1000).await?;
                found.extend(keys);
                if next == 0 || found.len() >= limit {
                    break;
                }
                cursor = next;
            }
            if found.len() >= limit {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Where a per-node command must run: the one node (`None`), or every master of the cluster
    /// (`(host, port)`).
    async fn node_targets(&self) -> Result<Vec<Option<(String, u16)>>, L2Error> {
        if !self.cluster {
            return Ok(vec![None]);
        }
        let nodes = self.cluster_nodes().await?;
        Ok(conn::masters(&nodes).into_iter().map(Some).collect())
    }

    /// `CLUSTER NODES` of the cluster.
    async fn cluster_nodes(&self) -> Result<String, L2Error> {
        self.run("CLUSTER NODES", |mut c| async move {
            redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await
        })
        .await
    }

    /// One SCAN page on `node` (`None`: the single node).
    async fn scan_page(
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
        self.query_on("SCAN", node, cmd).await
    }

    /// Runs `cmd` on `node` of a cluster, routed by address (`None`: on the single node, or where
    /// redis-rs routes it), under the breaker and the deadline.
    async fn query_on<T: redis::FromRedisValue + Send>(
        &self,
        command: &str,
        node: Option<&(String, u16)>,
        cmd: redis::Cmd,
    ) -> Result<T, L2Error> {
        self.run(command, |c| async move {
            match (c, node) {
                (Conn::Cluster(mut cc), Some(node)) => {
                    let routing =
                        redis::cluster_routing::RoutingInfo::SingleNode(conn::by_address(node));
                    let v = cc.route_command(cmd, routing).await?;
                    redis::from_redis_value(v).map_err(RedisError::from)
                }
                (mut c, _) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    /// Redis's memory as last read, if it was.
    pub(crate) fn memory(&self) -> Option<RedisMemory> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads Redis's memory (`INFO memory`; on a cluster, every master's, keeping the fullest)
    /// through the breaker. A failure (Redis down, an ACL user without `INFO`) keeps the last
    /// reading and is logged at debug level.
    pub(crate) async fn sample_memory(&self) {
        let mut fullest: Option<RedisMemory> = None;
        let nodes = match self.node_targets().await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "Redis memory not read");
                return;
            }
        };
        for node in nodes {
            let mut cmd = redis::cmd("INFO");
            cmd.arg("memory");
            let info: String = match self.query_on("INFO", node.as_ref(), cmd).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::debug!(error = %e, "Redis memory not read");
                    return;
                }
            };
            let Some(m) = parse_memory(&info) else {
                continue;
            };
            let fill = |m: &RedisMemory| m.used_bytes as f64 / m.maxmemory_bytes.max(1) as f64;
            if fullest.as_ref().is_none_or(|f| fill(&m) > fill(f)) {
                fullest = Some(m);
            }
        }
        if fullest.is_some() {
            *self.memory.lock().unwrap_or_else(|p| p.into_inner()) = fullest;
        }
    }

    /// PING through the breaker; returns the round-trip time.
    pub(crate) async fn ping(&self) -> Result<Duration, L2Error> {
        let start = Instant::now();
        self.run("PING", |mut c| async move {
            redis::cmd("PING").query_async::<()>(&mut c).await
        })
        .await?;
        Ok(start.elapsed())
    }

    /// A PING that bypasses the breaker's admission (used at startup) but reports to it.
    pub(crate) async fn ping_unguarded(&self) -> Result<(), L2Error> {
        let mut c = self.conn.clone();
        let deadline = self
            .op_timeout
            .max(Duration::from_millis(1))
            .saturating_mul(4);
        match tokio::time::timeout(deadline, redis::cmd("PING").query_async::<()>(&mut c)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(L2Error::from_redis(e, deadline)),
            Err(_) => Err(L2Error::Timeout(deadline)),
        }
    }

    /// The background probe: when the breaker is open and a probe is due (`eager`: now, whatever
    /// the cool-down), PING. A PING that fails because the connection was cut since the last
    /// command is sent once more on the new connection (redis-rs reconnects on that error), so a
    /// cut that happened while the breaker was open does not cost a whole cool-down. Returns
    /// whether the breaker closed.
    pub(crate) async fn probe(&self, eager: bool) -> bool {
        let Some(permit) = self.breaker.acquire_probe(eager) else {
            return false;
        };
        let ping = || {
            let mut c = self.conn.clone();
            async move {
                tokio::time::timeout(
                    self.op_timeout,
                    redis::cmd("PING").query_async::<()>(&mut c),
                )
                .await
            }
        };
        let mut res = ping().await;
        if let Ok(Err(e)) = &res {
            if e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error() {
                res = ping().await;
            }
        }
        match res {
            Ok(Ok(())) => {
                permit.success();
                // A restarted Redis has an empty script cache.
                self.load_scripts().await;
                true
            }
            _ => {
                permit.failure();
                false
            }
        }
    }

    /// Loads the Lua scripts into Redis' script cache (on every master of a cluster: redis-rs
    /// routes `SCRIPT LOAD` to all of them), so the first write-back or lock after a
    /// (re)connection costs one round trip instead of three (EVALSHA, NOSCRIPT, SCRIPT LOAD,
    /// EVALSHA). Best effort: on failure the scripts load themselves on first use.
    pub(crate) async fn load_scripts(&self) {
        for lua in scripts::ALL {
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
                if let Ok(Err(e)) = res {
                    // A user without `script|load` is said once, as any `NOPERM`.
                    let _ = self.classify("SCRIPT LOAD", e);
                }
                tracing::debug!(
                    "could not preload the cache's Lua scripts: they load on first use"
                );
                return;
            }
        }
    }
}

/// The largest PX the cache sends: Redis refuses an expiry whose absolute time (now + PX, in ms)
/// overflows a signed 64-bit integer ("invalid expire time"); half of that range stays clear of
/// it for the next ~146 million years. TTLs are capped far below it
/// ([`MAX_TTL`](crate::options::MAX_TTL)); this only guards the arithmetic.
const MAX_PX: u64 = (i64::MAX as u64) / 2;

/// PX argument of a TTL: whole milliseconds, at least 1, at most [`MAX_PX`].
fn px(ttl: &Duration) -> u64 {
    u64::try_from(ttl.as_millis()).map_or(MAX_PX, |ms| ms.clamp(1, MAX_PX))
}

/// Whether `e` is Redis' `ERR syntax error` reply (what a Redis before 7.0 answers to `SET ... NX
/// GET`); nothing else switches leasing to two round trips.
fn is_syntax_error(e: &RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail().is_some_and(|d| {
            d.trim_start()
                .to_ascii_lowercase()
                .starts_with("syntax error")
        })
}

/// Redis's memory, as `INFO memory` reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RedisMemory {
    pub(crate) used_bytes: u64,
    /// 0: no limit.
    pub(crate) maxmemory_bytes: u64,
    pub(crate) policy: String,
    /// When it was read (Unix ms).
    pub(crate) sampled_at_ms: u64,
}

/// `used_memory`, `maxmemory` and `maxmemory_policy` of an `INFO memory` reply.
pub(crate) fn parse_memory(info: &str) -> Option<RedisMemory> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
    };
    Some(RedisMemory {
        used_bytes: field("used_memory")?.parse().ok()?,
        maxmemory_bytes: field("maxmemory")?.parse().ok()?,
        policy: field("maxmemory_policy")?.to_owned(),
        sampled_at_ms: crate::clock::unix_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::error::reply_error;
    use super::*;

    #[test]
    fn only_a_syntax_error_reply_switches_leases_to_two_round_trips() {
        assert!(is_syntax_error(&reply_error("ERR syntax error")));
        for other in [
            "ERR value is not an integer or out of range",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOPERM this user has no permissions to run the 'set' command",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "LOADING Redis is loading the dataset in memory",
            // Quoting the words elsewhere is not the reply.
            "ERR unknown command 'syntax error'",
        ] {
            assert!(!is_syntax_error(&reply_error(other)), "{other}");
        }
    }

    /// An L2 that never connects (nothing is sent in these tests).
    fn unconnected() -> L2 {
        L2::new(&L2Config {
            urls: vec!["redis://127.0.0.1:1".to_owned()],
            cluster: false,
            tls_root_cert: None,
            connect_timeout: Duration::from_millis(10),
            op_timeout: Duration::from_millis(10),
            breaker: BreakerConfig::default(),
            acl_rules: acl::fill(acl::ACL_RULES, "test"),
        })
        .expect("a client")
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_held_for_oom_hold_on_the_monotonic_clock() {
        let l2 = unconnected();
        assert!(!l2.refusing_writes());
        l2.note_refusal(&L2Error::Refused(Refusal::OutOfMemory, error::oom_error()));
        assert!(l2.refusing_writes());
        tokio::time::advance(OOM_HOLD - Duration::from_millis(1)).await;
        assert!(l2.refusing_writes(), "held for OOM_HOLD");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(!l2.refusing_writes(), "released after OOM_HOLD");
        // Other refusals hold nothing.
        l2.note_refusal(&L2Error::Refused(
            Refusal::WrongType,
            reply_error("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ));
        assert!(!l2.refusing_writes());
    }

    #[test]
    fn px_is_whole_milliseconds_within_what_redis_accepts() {
        assert_eq!(px(&Duration::ZERO), 1);
        assert_eq!(px(&Duration::from_micros(1500)), 1);
        assert_eq!(px(&Duration::from_secs(2)), 2000);
        assert_eq!(px(&Duration::MAX), MAX_PX);
        assert!(MAX_PX < i64::MAX as u64 / 2 + 1);
    }

    #[test]
    fn memory_is_read_from_info_memory() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:8388608\r\nmaxmemory_human:8.00M\r\nmaxmemory_policy:allkeys-lru\r\n";
        let m = parse_memory(info).expect("parsed");
        assert_eq!(m.used_bytes, 1_048_576);
        assert_eq!(m.maxmemory_bytes, 8_388_608);
        assert_eq!(m.policy, "allkeys-lru");
        assert!(parse_memory("# Memory\r\nused_memory:x\r\n").is_none());
    }
}
