//! Batches of single-key commands (warming, stats reports): pipelines chunked by count and bytes,
//! each chunk one round trip under the normal deadline; on a Redis Cluster grouped by master.

use redis::RedisError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::{self, Conn};
use super::error::{is_outage, oom_error, wrong_count};
use super::{px, scripts, L2Error, ReadOrLease, Refusal, L2};

impl L2 {
    // --- Batches (warming, stats reports) ---

    /// Most keys in one pipeline (`read_or_lease_many`, `set_if_unchanged_many`).
    pub(crate) const MANY_CHUNK_KEYS: usize = 128;
    /// Most value bytes in one pipeline of writes; a single larger value goes alone.
    pub(crate) const MANY_CHUNK_BYTES: usize = 1 << 20;

    /// [`read_or_lease`](Self::read_or_lease) of many keys (`leases[i]` for `keys[i]`), in
    /// pipelines; per key, `Err` when Redis refused that key's command (another type under it).
    pub(crate) async fn read_or_lease_many(
        &self,
        keys: &[String],
        leases: &[Vec<u8>],
        ttl: Duration,
    ) -> Result<Vec<Result<ReadOrLease, Refusal>>, L2Error> {
        if self.refusing_writes() || self.no_set_nx_get.load(Ordering::Relaxed) {
            // No leases: read only (the loads then do not write back).
            let cmds: Vec<redis::Cmd> = keys
                .iter()
                .map(|k| {
                    let mut c = redis::cmd("GET");
                    c.arg(k);
                    c
                })
                .collect();
            let replies = self.per_key_pipeline(keys, &cmds, |_| 0).await?;
            return Ok(replies.into_iter().map(|v| read_reply(v, false)).collect());
        }
        let px = px(&ttl);
        let cmds: Vec<redis::Cmd> = keys
            .iter()
            .zip(leases)
            .map(|(k, lease)| {
                let mut c = redis::cmd("SET");
                c.arg(k).arg(lease).arg("NX").arg("GET").arg("PX").arg(px);
                c
            })
            .collect();
        let replies = self
            .per_key_pipeline(keys, &cmds, |i| leases[i].len())
            .await?;
        let out: Vec<Result<ReadOrLease, Refusal>> =
            replies.into_iter().map(|v| read_reply(v, true)).collect();
        if out.iter().any(|r| matches!(r, Err(Refusal::OutOfMemory))) {
            self.note_refusal(&L2Error::Refused(Refusal::OutOfMemory, oom_error()));
            return Box::pin(self.read_or_lease_many(keys, leases, ttl)).await;
        }
        if out.iter().any(|r| matches!(r, Err(Refusal::Other)))
            && !self.no_set_nx_get.load(Ordering::Relaxed)
        {
            // Most likely a Redis before 7.0: read without leases.
            self.no_set_nx_get.store(true, Ordering::Relaxed);
            return Box::pin(self.read_or_lease_many(keys, leases, ttl)).await;
        }
        Ok(out)
    }

    /// [`set_if_unchanged`](Self::set_if_unchanged) of many `(key, expected, bytes, ttl)` items, in
    /// pipelines. Per item: whether it was written (`false` also for a refusal, which is counted).
    pub(crate) async fn set_if_unchanged_many(
        &self,
        items: &[(String, Vec<u8>, Vec<u8>, Duration)],
    ) -> Result<Vec<bool>, L2Error> {
        let script = &*scripts::CAS;
        let keys: Vec<String> = items.iter().map(|(k, ..)| k.clone()).collect();
        let cmds: Vec<redis::Cmd> = items
            .iter()
            .map(|(k, expected, bytes, ttl)| {
                let mut c = redis::cmd("EVALSHA");
                c.arg(script.get_hash())
                    .arg(1)
                    .arg(k)
                    .arg(expected)
                    .arg(bytes)
                    .arg(px(ttl));
                c
            })
            .collect();
        let size = |i: usize| items[i].2.len();
        let mut replies = self.per_key_pipeline(&keys, &cmds, size).await?;
        if replies.iter().any(is_noscript) {
            // A restarted Redis (or a failover) lost the script cache.
            self.load_scripts().await;
            replies = self.per_key_pipeline(&keys, &cmds, size).await?;
        }
        let mut out = Vec::with_capacity(replies.len());
        for r in replies {
            match r {
                Ok(redis::Value::Int(n)) => out.push(n == 1),
                Ok(_) => out.push(false),
                Err(e) => {
                    self.note_refusal(&L2Error::from_redis(e));
                    out.push(false);
                }
            }
        }
        if out.iter().any(|w| *w) && self.oom_until.load(Ordering::Relaxed) != 0 {
            self.oom_until.store(0, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Sends `cmds` (`cmds[i]` touches `keys[i]` only) in pipelines and returns one reply per
    /// command, in order; an error reply comes back as `Value::ServerError`.
    ///
    /// Chunked rather than given a scaled deadline: a pipeline carries at most
    /// [`Self::MANY_CHUNK_KEYS`] commands or about [`Self::MANY_CHUNK_BYTES`] of values (`size(i)`),
    /// and each chunk is one round trip under the normal L2 deadline and one breaker permit, so a
    /// hung Redis costs one deadline per call, not one scaled to the batch. The first failure stops
    /// the rest.
    ///
    /// On a Redis Cluster a pipeline must go to the master that serves its keys: the commands are
    /// grouped by master (slot table from one `CLUSTER NODES`), and each master gets its own
    /// pipelines, all masters in parallel. A group whose pipeline fails (a slot moved meanwhile) is
    /// sent again as single commands, which redis-rs routes and redirects by itself.
    async fn per_key_pipeline(
        &self,
        keys: &[String],
        cmds: &[redis::Cmd],
        size: impl Fn(usize) -> usize + Sync,
    ) -> Result<Vec<Reply>, L2Error> {
        let mut out: Vec<Reply> = (0..cmds.len()).map(|_| Ok(redis::Value::Nil)).collect();
        if cmds.is_empty() {
            return Ok(out);
        }
        if !self.cluster {
            let all: Vec<usize> = (0..cmds.len()).collect();
            for (i, v) in self.pipeline_group(cmds, &all, None, &size).await? {
                out[i] = v;
            }
            return Ok(out);
        }
        let nodes = self.cluster_nodes().await?;
        let (masters, owners) = conn::slot_owners(&nodes);
        let groups = conn::group_by_master(keys.iter().map(|k| k.as_bytes()), &owners);
        let results = futures::future::try_join_all(groups.iter().map(|(owner, members)| {
            self.pipeline_group(cmds, members, owner.and_then(|o| masters.get(o)), &size)
        }))
        .await?;
        for (i, v) in results.into_iter().flatten() {
            out[i] = v;
        }
        Ok(out)
    }

    /// Pipelines of `cmds[members]`, chunk after chunk, to `node` (cluster) or the node.
    async fn pipeline_group(
        &self,
        cmds: &[redis::Cmd],
        members: &[usize],
        node: Option<&(String, u16)>,
        size: &(impl Fn(usize) -> usize + Sync),
    ) -> Result<Vec<(usize, Reply)>, L2Error> {
        let mut out = Vec::with_capacity(members.len());
        let mut start = 0;
        while start < members.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < members.len()
                && end - start < Self::MANY_CHUNK_KEYS
                && (end == start || bytes + size(members[end]) <= Self::MANY_CHUNK_BYTES)
            {
                bytes += size(members[end]);
                end += 1;
            }
            let chunk: Vec<&redis::Cmd> = members[start..end].iter().map(|&i| &cmds[i]).collect();
            let replies = self.run(|c| pipeline_chunk(c, chunk, node)).await?;
            if replies.len() != end - start {
                return Err(wrong_count());
            }
            out.extend(members[start..end].iter().copied().zip(replies));
            start = end;
        }
        Ok(out)
    }
}

fn is_noscript(r: &Reply) -> bool {
    matches!(r, Err(e) if e.code() == Some("NOSCRIPT"))
}

/// The reply of a GET (`leasing`: of a `SET ... NX GET`) in a batch.
fn read_reply(r: Reply, leasing: bool) -> Result<ReadOrLease, Refusal> {
    match r {
        Ok(redis::Value::Nil) if leasing => Ok(ReadOrLease::Leased),
        Ok(redis::Value::Nil) => Ok(ReadOrLease::Absent),
        Ok(redis::Value::BulkString(b)) => Ok(ReadOrLease::Found(b)),
        Ok(_) => Err(Refusal::Other),
        Err(e) => Err(L2Error::from_redis(e).refusal().unwrap_or(Refusal::Other)),
    }
}

/// The reply of one command of a batch: its value, or the error Redis answered it with.
type Reply = Result<redis::Value, RedisError>;

fn reply(v: redis::Value) -> Reply {
    match v {
        redis::Value::ServerError(e) => Err(e.into()),
        v => Ok(v),
    }
}

/// One pipeline of single-key commands: to the single node, or to `node` of a cluster (falling back
/// to single commands routed by redis-rs when the pipeline fails or no master is known for the
/// keys' slots). An error reply is that command's `Err`; only an outage fails the whole chunk.
async fn pipeline_chunk(
    c: Conn,
    chunk: Vec<&redis::Cmd>,
    node: Option<&(String, u16)>,
) -> Result<Vec<Reply>, RedisError> {
    let mut p = redis::pipe();
    p.ignore_errors();
    for cmd in &chunk {
        p.add_command((*cmd).clone());
    }
    let cc = match (c, node) {
        (Conn::Single(mut sc), _) => {
            let replies: Vec<redis::Value> = p.query_async(&mut sc).await?;
            return Ok(replies.into_iter().map(reply).collect());
        }
        (Conn::Cluster(cc), Some((host, port))) => {
            use redis::cluster_routing::SingleNodeRoutingInfo;
            let route = SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            };
            let mut pc = cc.clone();
            let count = chunk.len();
            match pc.route_pipeline(p, 0, count, route).await {
                Ok(replies) if !replies.iter().any(is_redirect) => {
                    return Ok(replies.into_iter().map(reply).collect())
                }
                Ok(_) => {
                    tracing::debug!("a slot moved under a pipeline to a cluster master: sending its commands one by one");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "pipeline to a cluster master failed: sending its commands one by one");
                }
            }
            cc
        }
        (Conn::Cluster(cc), None) => cc,
    };
    let replies = futures::future::join_all(chunk.iter().map(|cmd| {
        let mut c = cc.clone();
        async move { cmd.query_async::<redis::Value>(&mut c).await }
    }))
    .await;
    // An outage fails the chunk (the breaker hears of it); error replies stay per command.
    let mut out = Vec::with_capacity(replies.len());
    for r in replies {
        match r {
            Err(e) if is_outage(&e) => return Err(e),
            other => out.push(other),
        }
    }
    Ok(out)
}

fn is_redirect(v: &redis::Value) -> bool {
    matches!(v, redis::Value::ServerError(e) if matches!(e.code(), "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
}
