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

fn push_key_part(out: &mut String, key: &str) {
    if key.len() > MAX_KEY_PART || key.contains(['{', '}']) {
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
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(kind_pattern("a*b", "k"), "a\\*b:v1:k:*");
        assert_eq!(prefix_pattern("app"), "app:v1:*");
    }
}
