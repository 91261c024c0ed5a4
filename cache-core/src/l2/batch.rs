//! Batches of single-key commands (warming, stats reports): pipelines chunked by count and bytes,
//! each chunk one round trip under the normal deadline; on a Redis Cluster grouped by master.

use redis::RedisError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::{self, Conn};
use super::error::{is_outage, oom_error, redacted, wrong_count};
use super::{px, scripts, L2Error, ReadOrLease, Refusal, L2};

/// What a compare-and-set of a batch ([`L2::set_if_unchanged_many`]) did to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CasResult {
    /// Written.
    Stored,
    /// The key no longer held what was expected: left alone.
    Conflict,
    /// Redis refused the command (memory, permissions...): not written.
    Refused(Refusal),
    /// Its pipeline failed ([`CasBatch::failure`]): whether it was written is unknown (a timed-out
    /// write may still land).
    Failed,
}

/// What [`L2::set_if_unchanged_many`] did: per item, and the failure that stopped some pipelines
/// (an outage, or a malformed answer), if any. Pipelines that went through keep their results.
#[derive(Debug)]
pub(crate) struct CasBatch {
    pub(crate) items: Vec<CasResult>,
    pub(crate) failure: Option<L2Error>,
}

impl L2 {
    // --- Batches (warming, stats reports) ---

    /// Most keys in one pipeline (`read_or_lease_many`, `set_if_unchanged_many`).
    pub(crate) const MANY_CHUNK_KEYS: usize = 128;
    /// Most value bytes in one pipeline of writes; a single larger value goes alone.
    pub(crate) const MANY_CHUNK_BYTES: usize = 1 << 20;

    /// Most keys in one `MGET` ([`mget`](Self::mget)).
    pub(crate) const MGET_CHUNK_KEYS: usize = 1_024;

    /// The values of `keys` (`None`: absent, or not a string): on one node, one `MGET` per
    /// [`Self::MGET_CHUNK_KEYS`] keys, each a round trip under the normal deadline; on a Redis
    /// Cluster, where an `MGET` must stay within one slot, one pipeline of `GET`s per master, all
    /// masters in parallel (one round trip in all, as many commands as keys). A key a cluster
    /// node refused reads as absent (the load that follows reads it again and handles the reply).
    pub(crate) async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, L2Error> {
        self.reads_allowed()?;
        if self.cluster {
            let replies = self.replies(keys, &gets(keys), |_| 0).await?;
            return Ok(replies
                .into_iter()
                .map(|r| match self.read_reply(r, false) {
                    Ok(ReadOrLease::Found(b)) => Some(b),
                    _ => None,
                })
                .collect());
        }
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(Self::MGET_CHUNK_KEYS) {
            let got = self
                .run("MGET", |mut c| async move {
                    redis::cmd("MGET")
                        .arg(chunk)
                        .query_async::<Vec<Option<Vec<u8>>>>(&mut c)
                        .await
                })
                .await?;
            if got.len() != chunk.len() {
                return Err(wrong_count());
            }
            out.extend(got);
        }
        Ok(out)
    }

    /// [`read_or_lease`](Self::read_or_lease) of many keys (`leases[i]` for `keys[i]`), in
    /// pipelines; per key, `Err` when Redis refused that key's command (another type under it).
    /// An outage in any pipeline (including a reply such as `LOADING`) fails the whole batch.
    ///
    /// On a Redis that does not take `SET ... NX GET` (before 7.0), the keys are read with `GET`,
    /// then the absent ones are leased with a second pipeline of `SET ... NX PX`. While Redis
    /// refuses writes for lack of memory, the keys are only read (no leases: the loads then do not
    /// write back).
    pub(crate) async fn read_or_lease_many(
        &self,
        keys: &[String],
        leases: &[Vec<u8>],
        ttl: Duration,
    ) -> Result<Vec<Result<ReadOrLease, Refusal>>, L2Error> {
        self.reads_allowed()?;
        if self.refusing_writes() {
            let replies = self.replies(keys, &gets(keys), |_| 0).await?;
            return Ok(replies
                .into_iter()
                .map(|r| self.read_reply(r, false))
                .collect());
        }
        let px = px(&ttl);
        if self.no_set_nx_get.load(Ordering::Relaxed) {
            return self.read_then_lease_many(keys, leases, px).await;
        }
        let cmds: Vec<redis::Cmd> = keys
            .iter()
            .zip(leases)
            .map(|(k, lease)| {
                let mut c = redis::cmd("SET");
                c.arg(k).arg(lease).arg("NX").arg("GET").arg("PX").arg(px);
                c
            })
            .collect();
        let replies = self.replies(keys, &cmds, |i| leases[i].len()).await?;
        if replies
            .iter()
            .any(|r| matches!(r, Err(e) if super::is_syntax_error(e)))
        {
            self.lease_in_two_steps();
            return self.read_then_lease_many(keys, leases, px).await;
        }
        let out: Vec<Result<ReadOrLease, Refusal>> = replies
            .into_iter()
            .map(|r| self.read_reply(r, true))
            .collect();
        if out.iter().any(|r| matches!(r, Err(Refusal::OutOfMemory))) {
            // Now refusing writes: read only.
            self.note_refusal(&L2Error::Refused(Refusal::OutOfMemory, oom_error()));
            return Box::pin(self.read_or_lease_many(keys, leases, ttl)).await;
        }
        Ok(out)
    }

    /// The leases of a Redis without `SET ... NX GET`: a pipeline of `GET`, then one of
    /// `SET key lease NX PX` for the keys found absent. A key written between the two is not
    /// leased (whatever was written is newer than the load's start), nor is one whose `SET` was
    /// refused.
    async fn read_then_lease_many(
        &self,
        keys: &[String],
        leases: &[Vec<u8>],
        px: u64,
    ) -> Result<Vec<Result<ReadOrLease, Refusal>>, L2Error> {
        let replies = self.replies(keys, &gets(keys), |_| 0).await?;
        let mut out: Vec<Result<ReadOrLease, Refusal>> = replies
            .into_iter()
            .map(|r| self.read_reply(r, false))
            .collect();
        let absent: Vec<usize> = (0..out.len())
            .filter(|&i| matches!(out[i], Ok(ReadOrLease::Absent)))
            .collect();
        if absent.is_empty() {
            return Ok(out);
        }
        let absent_keys: Vec<String> = absent.iter().map(|&i| keys[i].clone()).collect();
        let cmds: Vec<redis::Cmd> = absent
            .iter()
            .map(|&i| {
                let mut c = redis::cmd("SET");
                c.arg(&keys[i]).arg(&leases[i]).arg("NX").arg("PX").arg(px);
                c
            })
            .collect();
        let replies = self
            .replies(&absent_keys, &cmds, |j| leases[absent[j]].len())
            .await?;
        // As on the `SET ... NX GET` path: an `OOM` leaves the key unleased (read only, and
        // writes are held from now on), any other refusal is that key's `Err`.
        let mut oom = false;
        for (&i, r) in absent.iter().zip(replies) {
            out[i] = match r {
                Ok(redis::Value::Nil) => Ok(ReadOrLease::Absent),
                Ok(_) => Ok(ReadOrLease::Leased),
                Err(e) => match self.classify("SET", e).refusal() {
                    Some(Refusal::OutOfMemory) => {
                        oom = true;
                        Ok(ReadOrLease::Absent)
                    }
                    refusal => Err(refusal.unwrap_or(Refusal::Other)),
                },
            };
        }
        if oom {
            self.note_refusal(&L2Error::Refused(Refusal::OutOfMemory, oom_error()));
        }
        Ok(out)
    }

    /// [`set_if_unchanged`](Self::set_if_unchanged) of many `(key, expected, bytes, ttl)` items, in
    /// pipelines: what happened to each item, refusals counted as such (and noted, as for single
    /// writes). A failed pipeline (an outage) fails its items only; the others keep their results.
    ///
    /// When Redis lost the script cache (a restart, a failover, `SCRIPT FLUSH`), the scripts are
    /// loaded again and only the items answered `NOSCRIPT` are sent again: the others were applied
    /// (sending them again would find their own write and report a conflict).
    pub(crate) async fn set_if_unchanged_many(
        &self,
        items: &[(String, Vec<u8>, Vec<u8>, Duration)],
    ) -> CasBatch {
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
        let (mut replies, mut failure) = self
            .per_key_pipeline(&keys, &cmds, |i| items[i].2.len())
            .await;
        let lost: Vec<usize> = (0..replies.len())
            .filter(|&i| matches!(&replies[i], Some(r) if is_noscript(r)))
            .collect();
        if !lost.is_empty() {
            self.load_scripts().await;
            let lost_keys: Vec<String> = lost.iter().map(|&i| keys[i].clone()).collect();
            let lost_cmds: Vec<redis::Cmd> = lost.iter().map(|&i| cmds[i].clone()).collect();
            let (again, err) = self
                .per_key_pipeline(&lost_keys, &lost_cmds, |j| items[lost[j]].2.len())
                .await;
            for (&i, r) in lost.iter().zip(again) {
                replies[i] = r;
            }
            failure = failure.or(err);
        }
        let out: Vec<CasResult> = replies
            .into_iter()
            .map(|r| match r {
                None => CasResult::Failed,
                Some(Ok(redis::Value::Int(1))) => CasResult::Stored,
                Some(Ok(redis::Value::Int(_))) => CasResult::Conflict,
                Some(Ok(_)) => CasResult::Refused(Refusal::Other),
                Some(Err(e)) => {
                    let e = self.classify("EVALSHA", e);
                    self.note_refusal(&e);
                    CasResult::Refused(e.refusal().unwrap_or(Refusal::Other))
                }
            })
            .collect();
        if out.contains(&CasResult::Stored) && self.oom_until.load(Ordering::Relaxed) != 0 {
            self.oom_until.store(0, Ordering::Relaxed);
        }
        CasBatch {
            items: out,
            failure,
        }
    }

    /// Leases take two round trips from now on (Redis does not take `SET ... NX GET`).
    pub(super) fn lease_in_two_steps(&self) {
        if !self.no_set_nx_get.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "Redis does not take SET NX GET (before 7.0): leases take two round trips"
            );
        }
    }

    /// [`per_key_pipeline`](Self::per_key_pipeline) when a failure of any pipeline fails the whole
    /// batch: one reply per command.
    async fn replies(
        &self,
        keys: &[String],
        cmds: &[redis::Cmd],
        size: impl Fn(usize) -> usize + Sync,
    ) -> Result<Vec<Reply>, L2Error> {
        let (replies, failure) = self.per_key_pipeline(keys, cmds, size).await;
        if let Some(e) = failure {
            return Err(e);
        }
        replies
            .into_iter()
            .map(|r| r.ok_or_else(wrong_count))
            .collect()
    }

    /// Sends `cmds` (`cmds[i]` touches `keys[i]` only) in pipelines and returns one reply per
    /// command, in order (an error reply as that command's `Err`; `None` for a command whose
    /// pipeline failed or was not sent), and the first failure.
    ///
    /// Chunked rather than given a scaled deadline: a pipeline carries at most
    /// [`Self::MANY_CHUNK_KEYS`] commands or about [`Self::MANY_CHUNK_BYTES`] of values (`size(i)`),
    /// and each chunk is one round trip under the normal L2 deadline and one breaker permit, so a
    /// hung Redis costs one deadline per call, not one scaled to the batch. A chunk fails as a
    /// whole on an outage: an I/O error, the deadline, or a reply of a server not serving now
    /// (`LOADING`, `READONLY`, `MISCONF`...: the breaker hears of it). The first failure stops the
    /// rest of the node's chunks.
    ///
    /// On a Redis Cluster a pipeline must go to the master that serves its keys: the commands are
    /// grouped by master (slot table from one `CLUSTER NODES`), and each master gets its own
    /// pipelines, all masters in parallel; a failure on one master leaves the others' results. A
    /// group whose pipeline fails (a slot moved meanwhile) is sent again as single commands, which
    /// redis-rs routes and redirects by itself.
    async fn per_key_pipeline(
        &self,
        keys: &[String],
        cmds: &[redis::Cmd],
        size: impl Fn(usize) -> usize + Sync,
    ) -> (Vec<Option<Reply>>, Option<L2Error>) {
        let mut out: Vec<Option<Reply>> = (0..cmds.len()).map(|_| None).collect();
        if cmds.is_empty() {
            return (out, None);
        }
        if !self.cluster {
            let all: Vec<usize> = (0..cmds.len()).collect();
            let (done, failure) = self.pipeline_group(cmds, &all, None, &size).await;
            for (i, v) in done {
                out[i] = Some(v);
            }
            return (out, failure);
        }
        let nodes = match self.cluster_nodes().await {
            Ok(nodes) => nodes,
            Err(e) => return (out, Some(e)),
        };
        let (masters, owners) = conn::slot_owners(&nodes);
        let groups = conn::group_by_master(keys.iter().map(|k| k.as_bytes()), &owners);
        let results = futures::future::join_all(groups.iter().map(|(owner, members)| {
            self.pipeline_group(cmds, members, owner.and_then(|o| masters.get(o)), &size)
        }))
        .await;
        let mut first = None;
        for (done, failure) in results {
            for (i, v) in done {
                out[i] = Some(v);
            }
            first = first.or(failure);
        }
        (out, first)
    }

    /// Pipelines of `cmds[members]`, chunk after chunk, to `node` (cluster) or the node, until one
    /// fails: the replies of the chunks that went through, and the failure.
    async fn pipeline_group(
        &self,
        cmds: &[redis::Cmd],
        members: &[usize],
        node: Option<&(String, u16)>,
        size: &(impl Fn(usize) -> usize + Sync),
    ) -> (Vec<(usize, Reply)>, Option<L2Error>) {
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
            let replies = match self
                .run("pipeline", |c| pipeline_chunk(c, chunk, node))
                .await
            {
                Ok(r) if r.len() == end - start => r,
                Ok(_) => return (out, Some(wrong_count())),
                Err(e) => return (out, Some(e)),
            };
            out.extend(members[start..end].iter().copied().zip(replies));
            start = end;
        }
        (out, None)
    }

    /// The reply of a GET (`leasing`: of a `SET ... NX GET`) in a batch.
    fn read_reply(&self, r: Reply, leasing: bool) -> Result<ReadOrLease, Refusal> {
        match r {
            Ok(redis::Value::Nil) if leasing => Ok(ReadOrLease::Leased),
            Ok(redis::Value::Nil) => Ok(ReadOrLease::Absent),
            Ok(redis::Value::BulkString(b)) => Ok(ReadOrLease::Found(b)),
            Ok(_) => Err(Refusal::Other),
            Err(e) => Err(self
                .classify(if leasing { "SET" } else { "GET" }, e)
                .refusal()
                .unwrap_or(Refusal::Other)),
        }
    }
}

/// One `GET` per key.
fn gets(keys: &[String]) -> Vec<redis::Cmd> {
    keys.iter()
        .map(|k| {
            let mut c = redis::cmd("GET");
            c.arg(k);
            c
        })
        .collect()
}

fn is_noscript(r: &Reply) -> bool {
    matches!(r, Err(e) if e.code() == Some("NOSCRIPT"))
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
            return replies_or_outage(replies);
        }
        (Conn::Sentinel(mut sc), _) => {
            let replies: Vec<redis::Value> = p.query_async(&mut sc).await?;
            return replies_or_outage(replies);
        }
        (Conn::Cluster(cc), Some(node)) => {
            let route = conn::by_address(node);
            let mut pc = cc.clone();
            let count = chunk.len();
            match pc.route_pipeline(p, 0, count, route).await {
                Ok(replies) if !replies.iter().any(is_redirect) => {
                    return replies_or_outage(replies)
                }
                Ok(_) => {
                    tracing::debug!("a slot moved under a pipeline to a cluster master: sending its commands one by one");
                }
                Err(e) => {
                    tracing::debug!(error = %redacted(&e), "pipeline to a cluster master failed: sending its commands one by one");
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

/// The replies of a pipeline sent with `ignore_errors`, one per command, unless one of them is a
/// reply of a server not serving now (`LOADING`, `READONLY`, `MISCONF`...): that one fails the
/// chunk, as an outage, so that the breaker hears of it (`ignore_errors` would otherwise hand it
/// back as a successful pipeline).
fn replies_or_outage(replies: Vec<redis::Value>) -> Result<Vec<Reply>, RedisError> {
    let out: Vec<Reply> = replies.into_iter().map(reply).collect();
    if let Some(Err(e)) = out.iter().find(|r| matches!(r, Err(e) if is_outage(e))) {
        return Err(e.clone());
    }
    Ok(out)
}

fn is_redirect(v: &redis::Value) -> bool {
    matches!(v, redis::Value::ServerError(e) if matches!(e.code(), "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
}
