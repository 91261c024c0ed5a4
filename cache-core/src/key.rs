//! Redis key building: `{prefix}:v1:{kind}:{key}`.
//!
//! `v1` names the key space: a change that would make the bytes under existing keys unreadable
//! would move to `v2` instead of misreading them. Changes that only give some entries new names
//! keep `v1`: the switch from xxh3 to BLAKE3 for hashed parts moved those entries to new keys (the
//! README's "Upgrading" section says what that means during a deploy), and the old ones are simply
//! never read again and expire with their TTL. A user key part longer than [`MAX_KEY_PART`] bytes,
//! containing `{` or `}` (which Redis Cluster would treat as a hash tag and pile keys onto one
//! slot), or starting with `#`, is replaced by `#` followed by its BLAKE3 hash in hex (the full 256
//! bits: 64 hex digits).
//!
//! Kind names are checked where kinds are registered (ASCII letters, digits, `_`, `-`, `.`; at
//! most 64 bytes: [`is_valid_name`]). A name used without being registered is not checked (reads
//! and writes take any `&str` and cannot fail), so any other name is hashed the same way (`#` and
//! 64 hex digits): a kind `a:b` with key `c` and a kind `a` with key `b:c` get different keys, and
//! a kind holding `{x}` never becomes a cluster hash tag. A valid name never starts with `#`, so a
//! hashed name never takes the name of a valid one.
//!
//! # Why a cryptographic hash, and why all 256 bits
//! Hashed parts are often user input (an LLM question, a search query, a `#[cached]` function's
//! arguments). With a non-cryptographic hash (xxh3, used before) anyone can compute inputs that
//! collide, so a user could aim a key at another user's entry: read it, or poison it with a value
//! computed for their own input. BLAKE3 is collision resistant; its full 256-bit output keeps 128
//! bits of security against an attacker who chooses *both* colliding inputs (a 128-bit output
//! would leave 64: a birthday search within reach of a determined attacker), for 32 more bytes per
//! hashed key. Measured per key (section `keyhash` of `benches/compare.rs`, figures in the
//! README): 0.4 µs for 200 bytes, 1.3 µs for 1 KiB, 3.5 µs for 10 KiB, against 0.1-0.5 µs with
//! xxh3 and ~30-60 µs for a Redis round trip on loopback. SHA-256 would do as well: it is up to
//! 1.5× faster between 200 bytes and 1 KiB on a CPU with SHA extensions, but 3-11× slower without
//! them, and 2× slower from a few KiB on either.
//!
//! Parts starting with `#` are hashed too, so a literal key part can never take the name of a
//! hashed one: without that, a user who knows a long key could send `#` + its hash as a short key
//! and write under the same Redis key.

/// User key parts longer than this many bytes are hashed.
pub const MAX_KEY_PART: usize = 200;

/// Returns the full Redis key for `key` of `kind` under `prefix`.
pub(crate) fn full_key(prefix: &str, kind: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + kind.len() + key.len().min(40) + 8);
    out.push_str(prefix);
    out.push_str(":v1:");
    push_kind(&mut out, kind);
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

    /// The full key, inline when it is short enough (see [`FullKey`]).
    pub(crate) fn into_full_key(self) -> FullKey {
        match self {
            LookupKey::Split(head, key) => {
                let mut inline = arrayvec::ArrayString::new();
                match inline
                    .try_push_str(head)
                    .and_then(|()| inline.try_push_str(key))
                {
                    Ok(()) => FullKey::Inline(inline),
                    Err(_) => FullKey::Heap(Self::Split(head, key).to_full()),
                }
            }
            LookupKey::Built(s) => FullKey::Heap(s),
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

/// Full keys up to this many bytes are held inline by [`FullKey`] (a hashed user part is 65
/// bytes, so most keys fit with their prefix and kind).
const INLINE_KEY: usize = 160;

/// A full key for the path after an L1 miss: held inline when it fits (most keys), so that the
/// read of L2, whose future is allocated once anyway (boxed, to keep an L1 hit's small), allocates
/// no string for it; longer ones and keys that were built already are a `String`.
pub(crate) enum FullKey {
    Inline(arrayvec::ArrayString<INLINE_KEY>),
    Heap(String),
}

impl std::ops::Deref for FullKey {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            FullKey::Inline(s) => s,
            FullKey::Heap(s) => s,
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

/// The kind and the key part of a full entry key under `prefix`, if the cache could have built it:
/// a valid kind name, and a part kept as is (one [`needs_hashing`] leaves alone) or a hashed one
/// (`#` and 64 lowercase hex digits).
pub(crate) fn split_entry_key<'a>(prefix: &str, full: &'a str) -> Option<(&'a str, &'a str)> {
    let (kind, part) = full
        .strip_prefix(prefix)?
        .strip_prefix(":v1:")?
        .split_once(':')?;
    ((is_valid_name(kind) || is_hash_name(kind)) && (is_hash_name(part) || !needs_hashing(part)))
        .then_some((kind, part))
}

/// How `kind` appears in its entries' keys: as is when it is a valid name, else `#` and its hash.
pub(crate) fn stored_kind(kind: &str) -> std::borrow::Cow<'_, str> {
    if is_valid_name(kind) {
        kind.into()
    } else {
        let mut out = String::with_capacity(65);
        push_kind(&mut out, kind);
        out.into()
    }
}

/// How the user key `key` appears in its entry's key: as is, or `#` and its hash when it is
/// hashed (see the module docs).
pub(crate) fn stored_part(key: &str) -> std::borrow::Cow<'_, str> {
    if needs_hashing(key) {
        let mut out = String::with_capacity(65);
        push_key_part(&mut out, key);
        out.into()
    } else {
        key.into()
    }
}

/// Whether `s` is a hashed name: `#` and 64 lowercase hex digits.
fn is_hash_name(s: &str) -> bool {
    s.strip_prefix('#')
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Pattern matching every key of `kind` (for SCAN).
pub(crate) fn kind_pattern(prefix: &str, kind: &str) -> String {
    let mut name = String::new();
    push_kind(&mut name, kind);
    format!("{}:v1:{}:*", glob_escape(prefix), glob_escape(&name))
}

/// Pattern matching every key of the cache (for SCAN).
pub(crate) fn prefix_pattern(prefix: &str) -> String {
    format!("{}:v1:*", glob_escape(prefix))
}

/// The L1 key prefix shared by every entry of `kind`.
pub(crate) fn kind_key_prefix(prefix: &str, kind: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + kind.len().min(65) + 5);
    out.push_str(prefix);
    out.push_str(":v1:");
    push_kind(&mut out, kind);
    out.push(':');
    out
}

/// Appends a kind name: as is when it is a valid name (every registered kind's is), else `#` and
/// its BLAKE3 hash (see the module docs).
fn push_kind(out: &mut String, kind: &str) {
    if is_valid_name(kind) {
        out.push_str(kind);
    } else {
        out.push('#');
        push_hash(out, kind.as_bytes());
    }
}

/// Whether a user key part is replaced by its hash: too long, holding cluster hash-tag braces, or
/// starting with `#` (the mark of a hashed part, which a literal part must never imitate).
fn needs_hashing(key: &str) -> bool {
    key.len() > MAX_KEY_PART || key.starts_with('#') || key.contains(['{', '}'])
}

fn push_key_part(out: &mut String, key: &str) {
    if needs_hashing(key) {
        out.push('#');
        push_hash(out, key.as_bytes());
    } else {
        out.push_str(key);
    }
}

/// Appends the BLAKE3 hash of `bytes` in lowercase hex (64 digits): what stands for user input in
/// keys (hashed key parts, `#[cached]` default keys). See the module docs for why BLAKE3.
pub(crate) fn push_hash(out: &mut String, bytes: &[u8]) {
    out.push_str(blake3::hash(bytes).to_hex().as_str());
}

/// `s` with the glob characters of SCAN's `MATCH` (`*`, `?`, `[`, `]`, `\`) escaped.
pub(crate) fn glob_escape(s: &str) -> String {
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
        assert_eq!(k.len(), "app:v1:k:#".len() + 64);
        assert_ne!(k, full_key("app", "k", &"y".repeat(10_000)));
        // Up to the limit, a part is kept as is.
        let at_limit = "x".repeat(MAX_KEY_PART);
        assert_eq!(
            full_key("app", "k", &at_limit),
            format!("app:v1:k:{at_limit}")
        );
    }

    #[test]
    fn hashed_parts_are_the_blake3_hash_of_the_part_in_hex() {
        // The published BLAKE3 test vector of "abc", so the shape can be computed elsewhere
        // (another language's client, a shell with `b3sum`).
        let mut hex = String::new();
        push_hash(&mut hex, b"abc");
        assert_eq!(
            hex,
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let long = "q".repeat(MAX_KEY_PART + 1);
        for part in ["{user}:1", long.as_str(), "#abc"] {
            assert_eq!(
                full_key("app", "k", part),
                format!("app:v1:k:#{}", blake3::hash(part.as_bytes()).to_hex())
            );
        }
    }

    #[test]
    fn a_literal_part_never_takes_the_name_of_a_hashed_one() {
        let question = "What is the refund policy? ".repeat(10);
        let hashed = full_key("app", "k", &question);
        let name = hashed.strip_prefix("app:v1:k:").expect("under the kind");
        assert!(name.starts_with('#') && name.len() == 65, "{name}");
        // Sending the hashed name itself as a (short) key does not reach the entry: it is hashed.
        let aimed = full_key("app", "k", name);
        assert_ne!(aimed, hashed);
        assert_eq!(aimed.len(), hashed.len());
    }

    #[test]
    fn braces_are_hashed_so_they_never_act_as_cluster_hash_tags() {
        let k = full_key("app", "k", "{user}:1");
        assert!(!k.contains('{'));
    }

    #[test]
    fn a_full_key_is_held_inline_when_short_and_is_always_what_full_key_builds() {
        let head = kind_key_prefix("app", "database_query");
        let long_literal = "x".repeat(150);
        let hashed = "y".repeat(MAX_KEY_PART + 1);
        for key in [
            "k",
            "ünïcödé",
            long_literal.as_str(),
            hashed.as_str(),
            "{tag}",
        ] {
            let full = full_key("app", "database_query", key);
            let held = LookupKey::new(Some(&head), "app", "database_query", key).into_full_key();
            assert_eq!(&*held, full);
            let inline = matches!(held, FullKey::Inline(_));
            // Built keys (hashed parts) are moved, not copied inline.
            let split = matches!(
                LookupKey::new(Some(&head), "app", "database_query", key),
                LookupKey::Split(..)
            );
            assert_eq!(inline, split && full.len() <= INLINE_KEY, "{key}");
        }
        assert!(head.len() + long_literal.len() > INLINE_KEY);
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
            ("app", "k", "#not-a-hash"),
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
    fn stored_forms_are_the_parts_of_the_full_key() {
        let long = "q".repeat(MAX_KEY_PART + 1);
        for (kind, part) in [
            ("api_response", "u:1"),
            ("api_response", "{user}:1"),
            ("a:b", long.as_str()),
            ("k", "#abc"),
        ] {
            let full = full_key("app", kind, part);
            let expected = format!("app:v1:{}:{}", stored_kind(kind), stored_part(part));
            assert_eq!(full, expected);
        }
        assert!(matches!(stored_part("u:1"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn entry_keys_split_into_kind_and_part_only_when_the_cache_could_have_built_them() {
        let long = "q".repeat(MAX_KEY_PART + 1);
        for part in ["u:1", "", "{user}:1", long.as_str(), "#abc"] {
            let full = full_key("app", "api_response", part);
            let (kind, stored) = split_entry_key("app", &full).expect(&full);
            assert_eq!(kind, "api_response");
            assert_eq!(format!("app:v1:{kind}:{stored}"), full);
        }
        for bad in [
            "other:v1:k:u:1",
            "app:v2:k:u:1",
            "app:v1:k",
            "app:v1:bad kind:u:1",
            "app:v1:k:{user}",
            "app:v1:k:#abc",
            &format!("app:v1:k:{long}"),
            &format!("app:v1:k:#{}", "A".repeat(64)),
        ] {
            assert_eq!(split_entry_key("app", bad), None, "{bad}");
        }
    }

    #[test]
    fn kind_names_that_are_not_valid_names_are_hashed() {
        // `a:b` + `c` and `a` + `b:c` would otherwise be one key.
        assert_ne!(full_key("app", "a:b", "c"), full_key("app", "a", "b:c"));
        assert_eq!(full_key("app", "a", "b:c"), "app:v1:a:b:c");
        let hashed = full_key("app", "a:b", "c");
        let kind = format!("#{}", blake3::hash(b"a:b").to_hex());
        assert_eq!(hashed, format!("app:v1:{kind}:c"));
        // Braces in a kind never make a cluster hash tag.
        assert!(!full_key("app", "{x}", "k").contains('{'));
        // Every key function agrees, and the key splits back into its kind and part.
        for bad in ["a:b", "{x}", "", "sp ace", "#not-a-hash", &"k".repeat(65)] {
            let full = full_key("app", bad, "k");
            assert!(full.starts_with(&kind_key_prefix("app", bad)), "{bad}");
            let (k, part) = split_entry_key("app", &full).expect(&full);
            assert_eq!((k.len(), part), (65, "k"), "{bad}");
            let pattern = kind_pattern("app", bad);
            assert_eq!(
                pattern,
                format!("{}*", kind_key_prefix("app", bad)),
                "{bad}"
            );
            // The lookup key of an unregistered kind is built like the full key.
            assert_eq!(LookupKey::new(None, "app", bad, "k").to_full(), full);
        }
        // Valid names stay as they are.
        assert_eq!(
            kind_key_prefix("app", "api_response"),
            "app:v1:api_response:"
        );
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(kind_pattern("a*b", "k"), "a\\*b:v1:k:*");
        assert_eq!(prefix_pattern("app"), "app:v1:*");
    }
}
