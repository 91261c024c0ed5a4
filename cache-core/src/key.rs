//! Redis key building: `{prefix}:v{format}:{kind}:{key}`.
//!
//! The envelope format version is part of every key, so a new format moves to new keys instead of
//! misreading old bytes. A user key part longer than [`MAX_KEY_PART`] bytes, or containing `{` or `}`
//! (which Redis Cluster would treat as a hash tag and pile keys onto one slot), is replaced by
//! `#` followed by its 128-bit xxh3 hash in hex.

use std::fmt::Write as _;

/// User key parts longer than this many bytes are hashed.
pub const MAX_KEY_PART: usize = 200;

/// Returns the full Redis key for `key` of `kind` under `prefix`.
pub(crate) fn full_key(prefix: &str, kind: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + kind.len() + key.len().min(40) + 8);
    out.push_str(prefix);
    out.push_str(":v1:");
    out.push_str(kind);
    out.push(':');
    push_key_part(&mut out, key);
    out
}

/// A full key for an L1 lookup, without building it: the kind's precomputed `{prefix}:v1:{kind}:`
/// and the user key part, hashed and compared exactly like the `String` that [`full_key`] builds
/// (so moka finds the entry stored under that `String`). An L1 hit thus needs no allocation. Keys
/// whose user part is hashed, and keys of unregistered kinds, are built (rare).
pub(crate) enum LookupKey<'a> {
    Split(&'a str, &'a str),
    Built(String),
}

impl<'a> LookupKey<'a> {
    /// `kind_prefix`: `kind_key_prefix(prefix, kind)`, when the caller has it.
    pub(crate) fn new(
        kind_prefix: Option<&'a str>,
        prefix: &str,
        kind: &str,
        key: &'a str,
    ) -> Self {
        match kind_prefix {
            Some(head) if !needs_hashing(key) => LookupKey::Split(head, key),
            _ => LookupKey::Built(full_key(prefix, kind, key)),
        }
    }

    /// The full key as a `String` (what L2 and everything after an L1 miss use).
    pub(crate) fn to_full(&self) -> String {
        match self {
            LookupKey::Split(head, key) => {
                let mut s = String::with_capacity(head.len() + key.len());
                s.push_str(head);
                s.push_str(key);
                s
            }
            LookupKey::Built(s) => s.clone(),
        }
    }
}

impl std::hash::Hash for LookupKey<'_> {
    /// What `str::hash` feeds the hasher: the bytes, then `0xFF`. Hashers take bytes as a stream
    /// (SipHash, moka's default, does), so two writes hash like one of the concatenation.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            LookupKey::Split(head, key) => {
                state.write(head.as_bytes());
                state.write(key.as_bytes());
            }
            LookupKey::Built(s) => state.write(s.as_bytes()),
        }
        state.write_u8(0xFF);
    }
}

impl moka::Equivalent<String> for LookupKey<'_> {
    fn equivalent(&self, full: &String) -> bool {
        match self {
            LookupKey::Split(head, key) => full
                .as_bytes()
                .strip_prefix(head.as_bytes())
                .is_some_and(|rest| rest == key.as_bytes()),
            LookupKey::Built(s) => s == full,
        }
    }
}

/// `{prefix}:{space}:{part}` with the same hashing of long or brace-holding parts as entry keys.
pub(crate) fn namespaced(prefix: &str, space: &str, part: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + space.len() + part.len().min(40) + 2);
    out.push_str(prefix);
    out.push(':');
    out.push_str(space);
    out.push(':');
    push_key_part(&mut out, part);
    out
}

/// Pattern matching every key of `kind` (for SCAN).
pub(crate) fn kind_pattern(prefix: &str, kind: &str) -> String {
    format!("{}:v1:{}:*", glob_escape(prefix), glob_escape(kind))
}

/// Pattern matching every key of the cache (for SCAN).
pub(crate) fn prefix_pattern(prefix: &str) -> String {
    format!("{}:v1:*", glob_escape(prefix))
}

/// The L1 key prefix shared by every entry of `kind`.
pub(crate) fn kind_key_prefix(prefix: &str, kind: &str) -> String {
    format!("{prefix}:v1:{kind}:")
}

/// Whether a user key part is replaced by its hash (too long, or holding cluster hash-tag braces).
fn needs_hashing(key: &str) -> bool {
    key.len() > MAX_KEY_PART || key.contains(['{', '}'])
}

fn push_key_part(out: &mut String, key: &str) {
    if needs_hashing(key) {
        let h = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
        let _ = write!(out, "#{h:032x}");
    } else {
        out.push_str(key);
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `s` is acceptable as a prefix or kind name: non-empty, at most 64 bytes, and made of
/// ASCII letters, digits, `_`, `-` and `.`.
pub(crate) fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_by_prefix_version_and_kind() {
        assert_eq!(
            full_key("app", "api_response", "u:1"),
            "app:v1:api_response:u:1"
        );
    }

    #[test]
    fn long_keys_are_hashed_to_a_fixed_length() {
        let long = "x".repeat(10_000);
        let k = full_key("app", "k", &long);
        assert_eq!(k.len(), "app:v1:k:#".len() + 32);
        assert_ne!(k, full_key("app", "k", &"y".repeat(10_000)));
    }

    #[test]
    fn braces_are_hashed_so_they_never_act_as_cluster_hash_tags() {
        let k = full_key("app", "k", "{user}:1");
        assert!(!k.contains('{'));
    }

    #[test]
    fn lookup_keys_hash_and_compare_like_the_full_key_string() {
        use moka::Equivalent;
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        let long = "x".repeat(MAX_KEY_PART + 1);
        for (prefix, kind, key) in [
            ("app", "api_response", "u:1"),
            ("app", "k", ""),
            ("app", "k", "{user}:1"),
            ("app", "k", &long),
            (
                "a",
                "b",
                "ünïcödé ✓ and a part long enough to span several SipHash blocks",
            ),
        ] {
            let head = kind_key_prefix(prefix, kind);
            let full = full_key(prefix, kind, key);
            for lookup in [
                LookupKey::new(Some(&head), prefix, kind, key),
                LookupKey::new(None, prefix, kind, key),
            ] {
                assert_eq!(lookup.to_full(), full);
                assert_eq!(hasher.hash_one(&lookup), hasher.hash_one(&full));
                assert!(lookup.equivalent(&full));
                assert!(!lookup.equivalent(&format!("{full}x")));
                assert!(!lookup.equivalent(&full[..full.len() - 1].to_string()));
            }
        }
    }

    #[tokio::test]
    async fn moka_finds_entries_by_lookup_key() {
        let cache: moka::future::Cache<String, u32> = moka::future::Cache::new(10);
        cache.insert(full_key("app", "kind", "k:1"), 7).await;
        let head = kind_key_prefix("app", "kind");
        let hit = LookupKey::new(Some(&head), "app", "kind", "k:1");
        let miss = LookupKey::new(Some(&head), "app", "kind", "k:2");
        assert_eq!(cache.get(&hit).await, Some(7));
        assert_eq!(cache.get(&miss).await, None);
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(kind_pattern("a*b", "k"), "a\\*b:v1:k:*");
        assert_eq!(prefix_pattern("app"), "app:v1:*");
    }
}
