//! The L2 entry store: how entries are read from and written to Redis, in one place for loads,
//! writes and warming (so that warming can never drift from the read path).
//!
//! - **Read and check**: the bytes are decoded (a tombstone, garbage or another type is a miss),
//!   the tokens of the entry's tags are checked ([`tags`](crate::tags)), and the entry is fresh or
//!   stale by its envelope. An entry whose invalidation (or one of whose tags' invalidation) waits
//!   in the pending queue reads as unavailable.
//! - **Leases**: a read for a load puts a lease under an absent key in the same command, and the
//!   load's write-back is a compare-and-set against what the read saw (the value, the tombstone or
//!   the lease). Whatever replaces or removes it meanwhile (an invalidation, a `set`, eviction,
//!   expiry, a restart) makes the write-back a no-op: a lost guard costs a miss, never an old
//!   value.
//! - **Write**: encode (MessagePack, envelope, zstd above a threshold), write (unconditionally for
//!   `set`, compare-and-set for loads), count.

use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use crate::clock::{unix_ms, Age};
use crate::codec::{self, CodecConfig, CodecError, Header, TagVersion};
use crate::coherence::Coherence;
use crate::departures::{key_hash, Cause, Departures};
use crate::events::{At, EventBus, Tier};
use crate::kind::KindEntry;
use crate::l2::{CasResult, L2Error, ReadOrLease, Refusal, L2};
use crate::stats::{KindStats, MissReason};
use crate::tags;

/// A usable entry read from L2.
pub(crate) struct Found<T> {
    pub(crate) value: Arc<T>,
    pub(crate) age: Age,
    /// The entry's tags (names).
    pub(crate) tags: Vec<String>,
    /// The identity of the write (for a compare-and-set against it).
    pub(crate) seen: Vec<u8>,
}

/// A decoded entry, fresh by its envelope, whose tags (with the tokens it was written with) are
/// still to be checked.
struct Unchecked<T> {
    /// Its `tags` left empty until they are checked.
    found: Found<T>,
    tags: Vec<TagVersion>,
}

/// Why an entry read from L2 cannot be served (nothing counted yet).
enum Unusable {
    /// Absent, rejected, expired, undecodable...
    Miss(MissReason),
    /// Its tags' tokens could not be read (an L2 error, counted as one when counted).
    Unread(L2Error),
}

/// What an L2 read saw.
pub(crate) enum L2Read<T> {
    Fresh(Found<T>),
    /// Past its freshness (fail-safe grace).
    Stale(Found<T>),
    /// Nothing usable: absent, a tombstone or another load's lease, an undecodable value, an entry
    /// with outdated tags. With the identity to compare-and-set against (`None`: no write-back
    /// possible, such as an absent key that could not be leased).
    Miss(Option<Vec<u8>>),
    /// Absent, and now holding this read's lease (its identity): the load compare-and-sets against
    /// it, or releases it when it stores nothing.
    Leased(Vec<u8>),
    /// The read failed, timed out, was skipped by the breaker, or is fenced by a pending
    /// invalidation.
    Unavailable,
}

/// How a write goes to L2.
#[derive(Debug)]
pub(crate) enum Write {
    /// Unconditionally (`set`).
    Overwrite,
    /// Only if L2 still holds what the load saw when it began (its value or tombstone, or its own
    /// lease: `leased`).
    IfUnchanged { seen: Vec<u8>, leased: bool },
}

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The value is in L2.
    Stored,
    /// The compare-and-set found something else there (a newer write or an invalidation won).
    Conflict,
    /// Not written: L2 out, or Redis refused (counted).
    Failed {
        /// Whether it was an outage (rather than a refusal).
        outage: bool,
    },
}

/// Why the tokens of an entry's tags could not be had: the entry is then not written to L2 (it
/// could not be checked against tag invalidations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoTokens {
    /// Their read failed as an outage (deadline, I/O, breaker open): the caller has waited its one
    /// L2 deadline, and sends nothing more for this entry (a lease is left to expire, a `set`'s
    /// invalidation is queued). `false`: Redis refused, or they were not read at all.
    pub(crate) outage: bool,
}

impl NoTokens {
    /// Not read (nothing is written back): no outage seen.
    pub(crate) const NOT_READ: Self = Self { outage: false };
}

/// Slots of the table of keys whose value was too large to write: such values are rare (a
/// misconfigured kind), so a smaller table than L1's departures (32 KiB).
const OVERSIZED_SLOTS: usize = 1_024;

pub(crate) struct EntryStore {
    l2: Arc<L2>,
    coherence: Arc<Coherence>,
    codec: CodecConfig,
    prefix: String,
    /// How long entries stay readable (as stale) past their freshness.
    grace: Duration,
    /// Keys whose value was too large to write (so that their next miss can say so).
    oversized: Departures,
    /// Where L2 hits and misses are told, as they are counted.
    events: Arc<EventBus>,
}

impl EntryStore {
    pub(crate) fn new(
        l2: Arc<L2>,
        coherence: Arc<Coherence>,
        codec: CodecConfig,
        prefix: String,
        grace: Duration,
        events: Arc<EventBus>,
    ) -> Self {
        Self {
            l2,
            coherence,
            codec,
            prefix,
            grace,
            oversized: Departures::with_slots(OVERSIZED_SLOTS),
            events,
        }
    }

    /// Counts (and tells) an L2 hit of `full`.
    fn hit(&self, ke: &KindEntry, full: &str) {
        KindStats::inc(&ke.stats.l2_hits);
        self.events.hit(At::Full(full), Tier::L2);
    }

    /// Counts (and tells) an L2 read of `full` that found nothing usable.
    fn miss(&self, ke: &KindEntry, full: &str, why: MissReason) {
        ke.stats.l2_miss(why);
        self.events.miss(At::Full(full), Tier::L2, why);
    }

    /// Counts (and tells) an L2 read of `full` that failed: the error and the miss.
    fn read_error(&self, ke: &KindEntry, full: &str, e: &L2Error) {
        let why = ke.stats.count_l2_read_error(e);
        self.events.miss(At::Full(full), Tier::L2, why);
    }

    /// The reason of a read that found nothing under `full`: `oversized` if the last value
    /// loaded for it was too large to store, otherwise `absent`.
    fn absent(&self, full: &str) -> MissReason {
        match self.oversized.take(key_hash(full)) {
            Some(_) => MissReason::Oversized,
            None => MissReason::Absent,
        }
    }

    pub(crate) fn l2(&self) -> &L2 {
        &self.l2
    }

    /// Reads `full` as a `T` whose entries carry the fingerprint `fp` ([`codec::fingerprint`]);
    /// `lease`: for a load, which writes back (an absent key gets a lease).
    pub(crate) async fn read<T>(
        &self,
        ke: &KindEntry,
        full: &str,
        fp: u64,
        lease: bool,
    ) -> L2Read<T>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if self.coherence.key_fenced(full) {
            KindStats::inc(&ke.stats.l2_skipped);
            self.miss(ke, full, MissReason::Skipped);
            return L2Read::Unavailable;
        }
        let started = Instant::now();
        let lease_bytes = lease.then(codec::tombstone_now);
        let res = match &lease_bytes {
            Some(l) => {
                self.l2
                    .read_or_lease(full, l, self.coherence.tombstone_ttl())
                    .instrument(tracing::debug_span!("l2.read_or_lease", kind = %ke.name))
                    .await
            }
            None => self
                .l2
                .get(full)
                .instrument(tracing::debug_span!("l2.get", kind = %ke.name))
                .await
                .map(|b| b.map_or(ReadOrLease::Absent, ReadOrLease::Found)),
        };
        let bytes = match res {
            Ok(ReadOrLease::Found(b)) => b,
            Ok(ReadOrLease::Leased) => {
                ke.stats.read_latency.record(started.elapsed());
                self.miss(ke, full, self.absent(full));
                return match lease_bytes {
                    Some(l) => L2Read::Leased(codec::identity(&l).to_vec()),
                    None => L2Read::Miss(None),
                };
            }
            Ok(ReadOrLease::Absent) => {
                ke.stats.read_latency.record(started.elapsed());
                self.miss(ke, full, self.absent(full));
                return L2Read::Miss(None);
            }
            Err(e) if e.refusal() == Some(Refusal::WrongType) => {
                // Someone else's value of another type under our key: a miss; removed so that a
                // later load can lease the key (best effort).
                ke.stats.count_l2_error(&e);
                self.miss(ke, full, MissReason::Undecodable);
                let _ = self.l2.unlink(&[full]).await;
                return L2Read::Miss(None);
            }
            Err(e) => {
                self.read_error(ke, full, &e);
                return L2Read::Unavailable;
            }
        };
        ke.stats.read_latency.record(started.elapsed());
        // A read without a lease (`get`) writes nothing back: it needs no identity.
        self.check(ke, full, fp, bytes, lease).await
    }

    /// A plain read of `full` (no lease) that returns only a fresh, current entry that `accept`
    /// takes, and counts only that (an L2 hit). Anything else is `Ok(None)`, uncounted: the load
    /// that follows reads again and counts it. `Err` when L2 could not be read, its `GET` or the
    /// tokens that check a tagged entry (counted: the load does not read again).
    pub(crate) async fn read_fresh<T>(
        &self,
        ke: &KindEntry,
        full: &str,
        fp: u64,
        accept: impl FnOnce(&Found<T>) -> bool,
    ) -> Result<Option<Found<T>>, ()>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if self.coherence.key_fenced(full) {
            return Ok(None);
        }
        let started = Instant::now();
        let bytes = match self
            .l2
            .get(full)
            .instrument(tracing::debug_span!("l2.get", kind = %ke.name))
            .await
        {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) if e.refusal().is_some() => return Ok(None),
            Err(e) => {
                self.read_error(ke, full, &e);
                return Err(());
            }
        };
        let Ok(unchecked) = self.fresh_unchecked(&bytes, fp) else {
            return Ok(None);
        };
        let found = match self.tags_current(unchecked).await {
            Ok(found) => found,
            Err(Unusable::Miss(_)) => return Ok(None),
            Err(Unusable::Unread(e)) if e.refusal().is_some() => return Ok(None),
            // L2 could not be read after all (counted): the load that follows must not wait for
            // it a second time (it used to read again, with a lease, and wait again).
            Err(Unusable::Unread(e)) => {
                self.read_error(ke, full, &e);
                return Err(());
            }
        };
        if !accept(&found) {
            return Ok(None);
        }
        ke.stats.read_latency.record(started.elapsed());
        KindStats::add(&ke.stats.l2_bytes_read, bytes.len() as u64);
        self.hit(ke, full);
        Ok(Some(found))
    }

    /// [`read_fresh`](Self::read_fresh) of many keys (every entry accepted): one `MGET` (on a
    /// cluster, one pipeline of `GET`s per master), then the entries found checked concurrently
    /// (a tagged entry takes a round trip for its tokens). Per key, the fresh entry or `None`;
    /// `Err` when L2 could not be read (counted for every key). `count_misses`: a key without a
    /// fresh entry is counted (and told) as an L2 miss with its reason, as a plain read counts it
    /// (`get_many`); otherwise only hits are (a load follows that counts the rest).
    pub(crate) async fn read_fresh_many<T>(
        &self,
        ke: &KindEntry,
        fulls: &[String],
        fp: u64,
        count_misses: bool,
    ) -> Result<Vec<Option<Found<T>>>, ()>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let started = Instant::now();
        let replies = match self
            .l2
            .mget(fulls)
            .instrument(tracing::debug_span!("l2.mget", kind = %ke.name, keys = fulls.len()))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                for full in fulls {
                    self.read_error(ke, full, &e);
                }
                return Err(());
            }
        };
        ke.stats.read_latency.record(started.elapsed());
        // Decoded in place; only tagged entries wait (for their tokens), concurrently. (A future
        // per key through `join_all` cost an allocation and a task wake-up each.)
        let mut results: Vec<Result<Found<T>, Unusable>> = Vec::with_capacity(fulls.len());
        let mut tagged = Vec::new();
        for (i, (full, bytes)) in fulls.iter().zip(replies).enumerate() {
            let r = match bytes {
                _ if self.coherence.key_fenced(full) => Err(MissReason::Skipped),
                // `absent` below: it takes the key's oversized mark, which a load that follows
                // uncounted reads must still find.
                None => Err(MissReason::Absent),
                Some(bytes) => {
                    KindStats::add(&ke.stats.l2_bytes_read, bytes.len() as u64);
                    self.fresh_unchecked::<T>(&bytes, fp)
                }
            };
            match r {
                Ok(u) if !u.tags.is_empty() => {
                    results.push(Err(Unusable::Miss(MissReason::Unavailable)));
                    tagged.push((i, u));
                }
                Ok(u) => results.push(Ok(u.found)),
                Err(why) => results.push(Err(Unusable::Miss(why))),
            }
        }
        if !tagged.is_empty() {
            let checks = tagged
                .into_iter()
                .map(|(i, u)| async move { (i, self.tags_current(u).await) });
            for (i, r) in futures::future::join_all(checks).await {
                results[i] = r;
            }
        }
        Ok(fulls
            .iter()
            .zip(results)
            .map(|(full, r)| match r {
                Ok(found) => {
                    self.hit(ke, full);
                    Some(found)
                }
                Err(unusable) => {
                    if count_misses {
                        match unusable {
                            // The tag tokens could not be read: an L2 error, as a plain read
                            // counts it.
                            Unusable::Unread(e) => self.read_error(ke, full, &e),
                            Unusable::Miss(MissReason::Absent) => {
                                self.miss(ke, full, self.absent(full));
                            }
                            Unusable::Miss(why @ MissReason::Skipped) => {
                                KindStats::inc(&ke.stats.l2_skipped);
                                self.miss(ke, full, why);
                            }
                            Unusable::Miss(why) => self.miss(ke, full, why),
                        }
                    }
                    None
                }
            })
            .collect())
    }

    /// The entry in `bytes` if it is a fresh `T` (fingerprint `fp`), up to the check of its tags
    /// against their current tokens (which takes a round trip, [`tags_current`](Self::tags_current)):
    /// decoded, fresh by its envelope, no tag's invalidation pending; else why not. Nothing is
    /// counted. Its `seen` is left empty (no write follows a fresh read).
    fn fresh_unchecked<T>(&self, bytes: &[u8], fp: u64) -> Result<Unchecked<T>, MissReason>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let decoded = match codec::decode::<T>(&self.codec, bytes, fp) {
            Ok(Some(d)) => d,
            // A tombstone or another load's lease.
            Ok(None) => return Err(MissReason::Rejected),
            Err(e) => return Err(decode_miss(&e)),
        };
        if unix_ms() >= decoded.header.fresh_until_ms {
            return Err(MissReason::Expired);
        }
        if !decoded.tags.is_empty()
            && self
                .coherence
                .tags_fenced(decoded.tags.iter().map(|(t, _)| t.as_str()))
        {
            return Err(MissReason::Skipped);
        }
        Ok(Unchecked {
            found: Found {
                value: Arc::new(decoded.value),
                age: Age {
                    created_ms: decoded.header.created_at_ms,
                    fresh_until_ms: decoded.header.fresh_until_ms,
                },
                tags: Vec::new(),
                seen: Vec::new(),
            },
            tags: decoded.tags,
        })
    }

    /// The rest of [`fresh_unchecked`](Self::fresh_unchecked): an entry with tags is served only if
    /// each tag's token is still the one it was written with.
    async fn tags_current<T>(&self, u: Unchecked<T>) -> Result<Found<T>, Unusable> {
        let Unchecked { mut found, tags } = u;
        if tags.is_empty() {
            return Ok(found);
        }
        let current = tags::entry_is_current(&self.l2, &self.prefix, &tags)
            .instrument(tracing::debug_span!("l2.tag_tokens"))
            .await;
        match current {
            Ok(true) => {
                found.tags = tags.into_iter().map(|(t, _)| t).collect();
                Ok(found)
            }
            Ok(false) => Err(Unusable::Miss(MissReason::Rejected)),
            Err(e) => Err(Unusable::Unread(e)),
        }
    }

    /// Decodes and checks bytes read from L2 (see the module docs); `want_seen`: the entry's
    /// identity is kept (`Found::seen`, `L2Read::Miss`) for a write-back to compare against.
    pub(crate) async fn check<T>(
        &self,
        ke: &KindEntry,
        full: &str,
        fp: u64,
        bytes: Vec<u8>,
        want_seen: bool,
    ) -> L2Read<T>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        KindStats::add(&ke.stats.l2_bytes_read, bytes.len() as u64);
        // What a compare-and-set against this entry would expect (only for a load that writes back).
        let seen = if want_seen {
            codec::identity(&bytes).to_vec()
        } else {
            Vec::new()
        };
        let decoded = match codec::decode::<T>(&self.codec, &bytes, fp) {
            Ok(Some(d)) => d,
            Ok(None) => {
                // A tombstone or a lease: invalidated recently, or (they look alike) being loaded
                // by another instance.
                self.miss(ke, full, MissReason::Rejected);
                return L2Read::Miss(Some(seen));
            }
            Err(e) => {
                count_decode_error(ke, full, &e);
                self.miss(ke, full, decode_miss(&e));
                return L2Read::Miss(Some(seen));
            }
        };
        if !decoded.tags.is_empty() {
            if self
                .coherence
                .tags_fenced(decoded.tags.iter().map(|(t, _)| t.as_str()))
            {
                KindStats::inc(&ke.stats.l2_skipped);
                self.miss(ke, full, MissReason::Skipped);
                return L2Read::Unavailable;
            }
            match tags::entry_is_current(&self.l2, &self.prefix, &decoded.tags)
                .instrument(tracing::debug_span!("l2.tag_tokens", kind = %ke.name))
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    self.miss(ke, full, MissReason::Rejected);
                    KindStats::inc(&ke.stats.tag_rejections);
                    return L2Read::Miss(Some(seen));
                }
                Err(e) => {
                    // The entry cannot be checked against tag invalidations: do not serve it.
                    self.read_error(ke, full, &e);
                    return L2Read::Unavailable;
                }
            }
        }
        let found = Found {
            value: Arc::new(decoded.value),
            age: Age {
                created_ms: decoded.header.created_at_ms,
                fresh_until_ms: decoded.header.fresh_until_ms,
            },
            tags: decoded.tags.into_iter().map(|(t, _)| t).collect(),
            seen,
        };
        let now = unix_ms();
        if now >= found.age.fresh_until_ms {
            self.miss(ke, full, MissReason::Expired);
            ke.stats.reread_after_expiry.record(Duration::from_millis(
                now.saturating_sub(found.age.created_ms),
            ));
            return L2Read::Stale(found);
        }
        self.hit(ke, full);
        L2Read::Fresh(found)
    }

    /// The tokens an entry with `tags` written now carries, or why they cannot be had (the entry
    /// must then not be written to L2: it could not be checked against tag invalidations).
    pub(crate) async fn tag_tokens(
        &self,
        ke: &KindEntry,
        tags: &[String],
    ) -> Result<Vec<TagVersion>, NoTokens> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        match tags::tokens_for_write(&self.l2, &self.prefix, tags)
            .instrument(
                tracing::debug_span!("l2.tag_tokens_for_write", kind = %ke.name, tags = tags.len()),
            )
            .await
        {
            Ok(t) => Ok(t),
            Err(e) => {
                ke.stats.count_l2_error(&e);
                Err(NoTokens {
                    outage: e.is_outage(),
                })
            }
        }
    }

    /// Encodes the entry of `full`: its envelope with `tags` and the fingerprint `fp`, fresh for
    /// `ttl` from now. A value over the maximum size is not encoded, and the next read of `full`
    /// that finds nothing says why (miss reason `oversized`).
    pub(crate) fn encode<T>(
        &self,
        ke: &KindEntry,
        full: &str,
        value: &T,
        fp: u64,
        ttl: Duration,
        tags: &[TagVersion],
    ) -> Option<Encoded>
    where
        T: Serialize + 'static,
    {
        let payload = match codec::to_msgpack(value) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(kind = %ke.name, error = %e, "value cannot be serialized: kept in L1 only");
                return None;
            }
        };
        let now_ms = unix_ms();
        let header = Header {
            created_at_ms: now_ms,
            fresh_until_ms: now_ms.saturating_add(crate::clock::millis(ttl)),
            type_fp: fp,
            nonce: rand::random(),
        };
        match codec::seal(&self.codec, &header, tags, &payload) {
            Ok(bytes) => Some(Encoded {
                payload_len: payload.len(),
                envelope_overhead: codec::envelope_overhead(tags),
                bytes,
                px: ttl.saturating_add(self.grace),
            }),
            Err(CodecError::TooLarge { size, max }) => {
                KindStats::inc(&ke.stats.oversized);
                self.oversized
                    .note(key_hash(full), Cause::Removed, Duration::ZERO);
                tracing::debug!(kind = %ke.name, size, max, "value over the maximum size: not written to L2");
                None
            }
            Err(e) => {
                tracing::warn!(kind = %ke.name, error = %e, "value cannot be encoded");
                None
            }
        }
    }

    /// Writes an encoded entry under `full`.
    pub(crate) async fn write(
        &self,
        ke: &KindEntry,
        full: &str,
        entry: &Encoded,
        how: &Write,
    ) -> Written {
        let started = Instant::now();
        let res = match how {
            Write::IfUnchanged { seen, .. } => {
                self.l2
                    .set_if_unchanged(full, seen, &entry.bytes, entry.px)
                    .instrument(tracing::debug_span!(
                        "l2.set_if_unchanged",
                        kind = %ke.name,
                        bytes = entry.bytes.len()
                    ))
                    .await
            }
            Write::Overwrite => self
                .l2
                .set(full, &entry.bytes, entry.px)
                .instrument(tracing::debug_span!(
                    "l2.set",
                    kind = %ke.name,
                    bytes = entry.bytes.len()
                ))
                .await
                .map(|()| true),
        };
        match res {
            Ok(true) => {
                ke.stats.write_latency.record(started.elapsed());
                entry.count_written(ke);
                Written::Stored
            }
            Ok(false) => {
                KindStats::inc(&ke.stats.l2_write_conflicts);
                Written::Conflict
            }
            Err(e) => {
                ke.stats.count_l2_error(&e);
                Written::Failed {
                    outage: e.is_outage(),
                }
            }
        }
    }

    /// Releases the lease `lease` a load put under `full`, when the load stores nothing (best
    /// effort: a lease left behind expires with the tombstone TTL, and is only a miss meanwhile).
    pub(crate) async fn release_lease(&self, ke: &KindEntry, full: &str, lease: &[u8]) {
        if let Err(e) = self.l2.release_lease(full, lease).await {
            ke.stats.count_l2_error(&e);
        }
    }

    /// Removes `full` from L2 (a `set` whose value could not be written must not leave the older
    /// value there). Returns whether L2 answered.
    pub(crate) async fn remove(&self, ke: &KindEntry, full: &str) -> bool {
        match self.l2.unlink(&[full]).await {
            Ok(_) => true,
            Err(e) => {
                ke.stats.count_l2_error(&e);
                false
            }
        }
    }

    // --- Batches (warming) ---

    /// [`read`](Self::read) of many keys of one kind for loads (leases for the absent ones, kept
    /// for `lease_ttl` or the tombstone TTL if longer), in pipelines: one round trip per 128 keys
    /// (per master on a cluster); then the entries found are checked concurrently (a tagged entry
    /// takes a round trip for its tokens).
    pub(crate) async fn read_many<T>(
        &self,
        ke: &KindEntry,
        fulls: &[String],
        fp: u64,
        lease_ttl: Duration,
    ) -> Vec<L2Read<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        // Keys whose invalidation waits for replay are not read (nor leased), as in `read`.
        let fenced: Vec<bool> = fulls.iter().map(|f| self.coherence.key_fenced(f)).collect();
        let sent: Vec<String> = fulls
            .iter()
            .zip(&fenced)
            .filter(|(_, fenced)| !**fenced)
            .map(|(f, _)| f.clone())
            .collect();
        let leases: Vec<Vec<u8>> = sent.iter().map(|_| codec::tombstone_now()).collect();
        let lease_ttl = lease_ttl.max(self.coherence.tombstone_ttl());
        let replies = match self
            .l2
            .read_or_lease_many(&sent, &leases, lease_ttl)
            .instrument(
                tracing::debug_span!("l2.read_or_lease_many", kind = %ke.name, keys = sent.len()),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                for full in fulls {
                    self.read_error(ke, full, &e);
                }
                return fulls.iter().map(|_| L2Read::Unavailable).collect();
            }
        };
        let mut replies = sent.iter().zip(replies).zip(&leases);
        // Checked concurrently: entries with tags each take a round trip for their tokens.
        let checks = fulls.iter().zip(fenced).map(|(full, fenced)| {
            let reply = if fenced { None } else { replies.next() };
            async move {
                let Some(((_, reply), lease)) = reply else {
                    KindStats::inc(&ke.stats.l2_skipped);
                    self.miss(ke, full, MissReason::Skipped);
                    return L2Read::Unavailable;
                };
                match reply {
                    Ok(ReadOrLease::Found(bytes)) => self.check(ke, full, fp, bytes, true).await,
                    Ok(ReadOrLease::Leased) => {
                        self.miss(ke, full, self.absent(full));
                        L2Read::Leased(codec::identity(lease).to_vec())
                    }
                    Ok(ReadOrLease::Absent) => {
                        self.miss(ke, full, self.absent(full));
                        L2Read::Miss(None)
                    }
                    Err(refusal) => {
                        // As in `read`: counted, and someone else's value of another type under
                        // our key is removed so that a later load can lease it (best effort).
                        KindStats::inc(&ke.stats.l2_refused);
                        self.miss(ke, full, MissReason::Undecodable);
                        if refusal == Refusal::WrongType {
                            let _ = self.l2.unlink(&[full.as_str()]).await;
                        }
                        L2Read::Miss(None)
                    }
                }
            }
        });
        futures::future::join_all(checks).await
    }

    /// Compare-and-set writes of many encoded entries (`(full, expected identity, entry)`), in
    /// pipelines. Per entry, what happened (a refusal counted as one, an entry of a failed
    /// pipeline as `Failed { outage }`); `Err` when no entry reached L2.
    pub(crate) async fn write_many(
        &self,
        ke: &KindEntry,
        items: Vec<(String, Vec<u8>, Encoded)>,
    ) -> Result<Vec<Written>, ()> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let batch: Vec<(String, Vec<u8>, Vec<u8>, Duration)> = items
            .iter()
            .map(|(full, seen, e)| (full.clone(), seen.clone(), e.bytes.clone(), e.px))
            .collect();
        let done = self
            .l2
            .set_if_unchanged_many(&batch)
            .instrument(tracing::debug_span!("l2.set_if_unchanged_many", kind = %ke.name, keys = batch.len()))
            .await;
        let outage = done.failure.as_ref().is_none_or(L2Error::is_outage);
        if let Some(e) = &done.failure {
            ke.stats.count_l2_error(e);
        }
        if done.items.iter().all(|r| *r == CasResult::Failed) {
            return Err(());
        }
        Ok(done
            .items
            .into_iter()
            .zip(&items)
            .map(|(r, (_, _, e))| match r {
                CasResult::Stored => {
                    e.count_written(ke);
                    Written::Stored
                }
                CasResult::Conflict => {
                    KindStats::inc(&ke.stats.l2_write_conflicts);
                    Written::Conflict
                }
                CasResult::Refused(_) => {
                    KindStats::inc(&ke.stats.l2_refused);
                    Written::Failed { outage: false }
                }
                CasResult::Failed => Written::Failed { outage },
            })
            .collect())
    }
}

/// An entry encoded for L2.
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    /// Its MessagePack payload size (before compression).
    pub(crate) payload_len: usize,
    envelope_overhead: usize,
    /// How long Redis keeps it: its TTL plus the fail-safe grace.
    pub(crate) px: Duration,
}

impl Encoded {
    fn count_written(&self, ke: &KindEntry) {
        KindStats::inc(&ke.stats.l2_writes);
        KindStats::add(&ke.stats.l2_bytes_written, self.bytes.len() as u64);
        KindStats::add(&ke.stats.l2_raw_bytes_written, self.payload_len as u64);
        KindStats::add(
            &ke.stats.l2_payload_bytes_written,
            self.bytes.len().saturating_sub(self.envelope_overhead) as u64,
        );
    }
}

/// The miss reason of an entry that could not be decoded.
fn decode_miss(e: &CodecError) -> MissReason {
    match e {
        CodecError::TypeMismatch => MissReason::Mismatch,
        CodecError::TooLarge { .. } => MissReason::Oversized,
        _ => MissReason::Undecodable,
    }
}

fn count_decode_error(ke: &KindEntry, full: &str, e: &CodecError) {
    use std::sync::atomic::Ordering;
    KindStats::inc(&ke.stats.decode_errors);
    // The class only: MessagePack and zstd messages may quote the stored data.
    let error: std::borrow::Cow<'static, str> = match e {
        CodecError::MessagePack(_) => "messagepack".into(),
        CodecError::Compression(_) => "compression".into(),
        other => other.to_string().into(),
    };
    if !ke.stats.decode_error_logged.swap(true, Ordering::Relaxed) {
        tracing::warn!(kind = %ke.name, key = full, error = %error,
            "undecodable value in L2 treated as a miss (further ones are logged at debug level)");
    } else {
        tracing::debug!(kind = %ke.name, key = full, error = %error, "undecodable value in L2 treated as a miss");
    }
}
