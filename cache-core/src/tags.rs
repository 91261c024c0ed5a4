//! Tag invalidation.
//!
//! # Mechanism: tag tokens checked on read
//! Each tag has a token in Redis (`{prefix}:t1:{tag}`): a random 64-bit number, created the first
//! time an entry with the tag is written. Writing an entry with tags first gets the current token of
//! each tag (creating the missing ones) and stores them in the entry's envelope; `invalidate_tag`
//! replaces the tag's token with a new random one (one `SET`). Reading an entry from L2 fetches the
//! current tokens of its tags (`MGET`): an entry is served only if every token it carries is still
//! the current one. Other instances learn of the invalidation through the backplane and reject
//! their L1 copies loaded before they heard of it (a local map tag → instant of the last
//! invalidation heard, compared with the entry's load instant, so no clocks of different machines
//! are ever compared).
//!
//! # Why tokens, not counters: the guard fails closed
//! Redis under `maxmemory` evicts any key, tag keys included; keys expire; a restart without
//! persistence or a `FLUSHDB` loses them; another writer may leave garbage under one. A version
//! *counter* that reads as 0 when absent fails open: 0 is also the version of an entry stored before
//! the first invalidation, so an evicted counter brings invalidated entries back. A token cannot:
//! - **absent** (evicted, expired, flushed): no stored entry matches "no token", so every entry of
//!   the tag is a miss until a load creates a new token; entries written afterwards carry the new
//!   one, which no entry written before can carry (64 random bits);
//! - **unreadable** (garbage bytes, another type): same as absent on read; writing an entry replaces
//!   it with a new token (the script refuses to hand out anything that is not a token);
//! - **replaced** (an invalidation): entries carrying the old token never match again.
//!
//! Losing a token therefore costs misses (extra loader calls), never an old value. Invalidation
//! stays O(1) commands whatever the number of entries, needs no `SCAN`, and touches one key per tag,
//! so it works unchanged on Redis Cluster. A load that began before an invalidation carries the old
//! token, so its late write is rejected on read: the stale-set race is closed without locks.
//!
//! The cost is on reads: an L2 read of a tagged entry takes one more round trip (the tokens), and
//! invalidated entries stay in Redis until their TTL instead of being deleted.
//!
//! Tokens live for [`TAG_TOKEN_TTL`] after the last entry written with them (a write refreshes
//! the expiry), longer than any entry's TTL in practice; an expired token only turns the entries
//! still carrying it into misses. Tokens are decimal integers below 2^62, so an older release (which
//! `INCR`ed counters under the same keys) and this one can share a Redis during a rolling deploy.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::codec::TagVersion;
use crate::l2::{L2Error, L2};

/// How long a tag's token lives after the last entry written with it (refreshed on each write).
pub(crate) const TAG_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The Redis key of a tag's token.
pub(crate) fn token_key(prefix: &str, tag: &str) -> String {
    crate::key::namespaced(prefix, "t1", tag)
}

/// A new random token: in `[2^32, 2^62)`, so never 0 (what entries of older releases carry for a
/// tag never invalidated) nor a small counter value, and still an integer `INCR` can take.
pub(crate) fn new_token() -> u64 {
    rand::random_range((1u64 << 32)..(1u64 << 62))
}

/// Most decimal digits of a token: every such number fits a `u64`, and new tokens (below 2^62)
/// have at most 19. The tag token script keeps exactly these values and replaces anything else.
pub(crate) const TOKEN_MAX_DIGITS: usize = 19;

/// A token read from Redis: 1 to [`TOKEN_MAX_DIGITS`] decimal digits; `None` for anything else
/// (absent, garbage, a number too long).
pub(crate) fn parse_token(raw: Option<&[u8]>) -> Option<u64> {
    let s = std::str::from_utf8(raw?).ok()?;
    if s.is_empty() || s.len() > TOKEN_MAX_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether an entry carrying `stored` tokens is still valid given the `current` ones (in the same
/// order): every token must be present, readable and equal.
pub(crate) fn all_current(stored: &[TagVersion], current: &[Option<Vec<u8>>]) -> bool {
    stored.len() == current.len()
        && stored
            .iter()
            .zip(current)
            .all(|((_, token), cur)| parse_token(cur.as_deref()) == Some(*token))
}

/// The current tokens of `tags`, created where missing: what an entry written now carries.
pub(crate) async fn tokens_for_write(
    l2: &L2,
    prefix: &str,
    tags: &[String],
) -> Result<Vec<TagVersion>, L2Error> {
    let keys: Vec<String> = tags.iter().map(|t| token_key(prefix, t)).collect();
    let fresh: Vec<u64> = tags.iter().map(|_| new_token()).collect();
    let raw = l2
        .tag_tokens_or_create(&keys, &fresh, TAG_TOKEN_TTL)
        .await?;
    tags.iter()
        .zip(raw)
        .map(|(t, r)| match parse_token(Some(&r)) {
            Some(token) => Ok((t.clone(), token)),
            // The script hands out tokens only; anything else is a refusal of sorts.
            None => Err(L2Error::Refused(
                crate::l2::Refusal::Other,
                redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "a tag token script returned something that is not a token",
                )),
            )),
        })
        .collect()
}

/// Whether the tokens an entry carries are all still current.
pub(crate) async fn entry_is_current(
    l2: &L2,
    prefix: &str,
    stored: &[TagVersion],
) -> Result<bool, L2Error> {
    if stored.is_empty() {
        return Ok(true);
    }
    let keys: Vec<String> = stored.iter().map(|(t, _)| token_key(prefix, t)).collect();
    let current = l2.tag_values(&keys).await?;
    Ok(all_current(stored, &current))
}

/// Invalidates `tags` in L2: each gets a new token.
pub(crate) async fn invalidate(l2: &L2, prefix: &str, tags: &[&str]) -> Result<(), L2Error> {
    let keys: Vec<String> = tags.iter().map(|t| token_key(prefix, t)).collect();
    let fresh: Vec<u64> = tags.iter().map(|_| new_token()).collect();
    l2.replace_tag_tokens(&keys, &fresh, TAG_TOKEN_TTL).await
}

/// Tag invalidations this instance has made or heard of, by tag: when it learnt of the last one.
#[derive(Default)]
pub(crate) struct LocalTags {
    map: RwLock<HashMap<String, Instant>>,
}

impl LocalTags {
    /// Records an invalidation of `tag` now.
    pub(crate) fn mark(&self, tag: &str) {
        let now = Instant::now();
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        m.insert(tag.to_owned(), now);
    }

    /// Whether any of `tags` was invalidated at or after `loaded_at`.
    pub(crate) fn invalidated_since(&self, tags: &[String], loaded_at: Instant) -> bool {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        tags.iter()
            .any(|t| m.get(t).is_some_and(|at| *at >= loaded_at))
    }

    /// Forgets invalidations older than `horizon` (no L1 entry can be older than that).
    pub(crate) fn prune(&self, horizon: Duration) {
        let Some(cutoff) = Instant::now().checked_sub(horizon) else {
            return;
        };
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, at| *at >= cutoff);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_loaded_before_a_tag_invalidation_is_rejected_and_one_loaded_after_is_not() {
        let tags = LocalTags::default();
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        tags.mark("user:1");
        std::thread::sleep(Duration::from_millis(2));
        let after = Instant::now();
        let t = vec!["team".to_string(), "user:1".to_string()];
        assert!(tags.invalidated_since(&t, before));
        assert!(!tags.invalidated_since(&t, after));
        assert!(!tags.invalidated_since(&["team".to_string()], before));
        tags.prune(Duration::ZERO);
        assert_eq!(tags.len(), 0);
    }

    #[test]
    fn new_tokens_are_never_zero_or_small_counters() {
        for _ in 0..10_000 {
            let t = new_token();
            assert!((1 << 32..1 << 62).contains(&t), "{t}");
        }
    }

    #[test]
    fn an_absent_or_unreadable_token_matches_no_entry() {
        let stored = vec![
            ("user:1".to_string(), 0u64),
            ("team".to_string(), 7_000_000_000),
        ];
        let current =
            |a: Option<&[u8]>, b: Option<&[u8]>| vec![a.map(<[u8]>::to_vec), b.map(<[u8]>::to_vec)];
        // An entry stored with version 0 (an older release, never invalidated): an absent token is
        // not 0.
        assert!(!all_current(&stored, &current(None, Some(b"7000000000"))));
        // Garbage and other shapes are not tokens.
        for garbage in [
            &b"zero"[..],
            b"",
            b"-1",
            b" 0",
            b"0x10",
            b"99999999999999999999999",
            // 20 digits, over u64::MAX; and 20 digits below it (longer than any token).
            b"99999999999999999999",
            b"10000000000000000000",
        ] {
            assert!(
                !all_current(&stored[1..], &current(Some(garbage), None)[..1]),
                "{garbage:?}"
            );
        }
        assert!(all_current(
            &stored[1..],
            &current(Some(b"7000000000"), None)[..1]
        ));
        // A wrong number of answers never matches.
        assert!(!all_current(&stored, &current(Some(b"0"), None)[..1]));
    }
}
