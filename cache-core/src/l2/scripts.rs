//! The Lua scripts the L2 runs. Each touches one key, so each runs on Redis Cluster unchanged.
//!
//! Every script is written to fail closed: garbage or a value of another type under its key never
//! lets it confirm a write that should not happen.

use std::sync::LazyLock;

/// Compare-and-set of a load's write-back: SET only if the key still holds the write (or lease) the
/// load saw when it began, identified by the first bytes of its envelope (36:
/// [`IDENTITY_LEN`](crate::codec::IDENTITY_LEN); an expected identity shorter than that is a whole
/// value, garbage, which must then match whole). A key that is absent (evicted, expired, flushed),
/// holds something else, or is of another type, is left alone. ARGV: expected identity, new bytes,
/// PX.
const CAS_LUA: &str = r"
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if not ok or not cur then return 0 end
if string.sub(cur, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
if string.len(cur) > string.len(ARGV[1]) and string.len(ARGV[1]) < 36 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// The current token of a tag, creating it (ARGV[1]) when the tag has none, or when what its key
/// holds is not a token (garbage, another type): a fresh token matches no entry stored before, so
/// replacing garbage only turns entries into misses. Refreshes the key's expiry. ARGV: new token, PX.
///
/// A token is 1 to 19 decimal digits: exactly what `tags::parse_token` accepts (every such number
/// fits a `u64`; new tokens are below 2^62, 19 digits at most), so the script never hands out, nor
/// keeps alive, a value the cache would then refuse.
const TAG_TOKEN_LUA: &str = r"
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and cur and string.len(cur) <= 19 and string.match(cur, '^%d+$') then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Takes a distributed lock: SET NX PX, except that a key which cannot be a live lock (no expiry,
/// or another type) is taken over, so garbage never blocks loads forever. (A value with an expiry
/// may be another instance's lock, whatever it holds: waiters wait for it, within their bound.)
/// ARGV: token, PX. Returns 1 when taken.
const LOCK_LUA: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and cur and redis.call('PTTL', KEYS[1]) > 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Deletes a distributed lock only if it still holds our token (it may have expired and been taken
/// by another instance). ARGV: token.
const UNLOCK_LUA: &str = r"
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and cur == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Deletes a load's lease if the key still holds it (the load failed or stored nothing: the lease
/// must not linger). ARGV: the lease's identity.
const RELEASE_LUA: &str = r"
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and cur and string.sub(cur, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub(crate) static CAS: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CAS_LUA));
pub(crate) static RELEASE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RELEASE_LUA));
pub(crate) static TAG_TOKEN: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(TAG_TOKEN_LUA));
pub(crate) static LOCK: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LOCK_LUA));
pub(crate) static UNLOCK: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(UNLOCK_LUA));

/// Every script, for preloading after a (re)connection.
pub(crate) const ALL: [&str; 5] = [CAS_LUA, RELEASE_LUA, TAG_TOKEN_LUA, LOCK_LUA, UNLOCK_LUA];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compare_and_set_uses_the_envelope_identity_length() {
        let check = format!("string.len(ARGV[1]) < {}", crate::codec::IDENTITY_LEN);
        assert!(CAS_LUA.contains(&check), "{CAS_LUA}");
    }

    #[test]
    fn the_tag_token_script_keeps_what_the_parser_accepts() {
        // The longest digit string the script keeps as a token, and the parser's bound.
        let digits = crate::tags::TOKEN_MAX_DIGITS;
        assert!(TAG_TOKEN_LUA.contains(&format!("string.len(cur) <= {digits}")));
        let longest = "9".repeat(digits);
        assert!(crate::tags::parse_token(Some(longest.as_bytes())).is_some());
        assert!(crate::tags::parse_token(Some(format!("{longest}9").as_bytes())).is_none());
    }
}
