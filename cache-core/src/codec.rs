//! Encoding of cached values for L2: MessagePack (rmp-serde) inside a small versioned envelope, with
//! zstd compression above a size threshold.
//!
//! Bytes read from Redis are untrusted. Every malformed input (garbage, truncation, an unknown format
//! version, a value written for another Rust type, a decompression bomb) becomes a [`CodecError`],
//! which the cache treats as a miss. Nothing here panics on input.

mod compress;
mod envelope;
mod shape;

pub(crate) use envelope::{Envelope, Header, TagVersion, IDENTITY_LEN};
pub(crate) use shape::{shape_of, Shape};

use serde::{de::DeserializeOwned, Serialize};

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes do not start with the envelope's magic number: not written by this library.
    #[error("not a cache envelope (bad magic)")]
    BadMagic,
    /// The envelope was written by another format version of this library.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// The envelope is shorter than its header says.
    #[error("truncated envelope: {0}")]
    Truncated(&'static str),
    /// The envelope carries flags this version does not know.
    #[error("unknown envelope flags {0:#04x}")]
    UnknownFlags(u8),
    /// The value was written for another Rust type.
    #[error("type mismatch: the value was written for another type")]
    TypeMismatch,
    /// The (declared or actual) decoded size exceeds the configured maximum.
    #[error("value of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The size found.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// zstd failed to compress or decompress.
    #[error("compression: {0}")]
    Compression(String),
    /// MessagePack (de)serialization failed.
    #[error("messagepack: {0}")]
    MessagePack(String),
}

/// Codec settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CodecConfig {
    /// Payloads at least this large are compressed.
    pub(crate) compress_threshold: usize,
    /// zstd level.
    pub(crate) compress_level: i32,
    /// Largest decoded payload accepted (and written).
    pub(crate) max_value_bytes: usize,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            compress_threshold: 1024,
            compress_level: 1,
            max_value_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A stable-per-build fingerprint of `T`, stored in the envelope so a value is never decoded as
/// another type. It is derived from `std::any::type_name`, which may change between compiler
/// versions and changes when the type moves: then old entries read as misses and are reloaded,
/// which is safe but costly right after a deploy (see [`fingerprint`]).
pub(crate) fn type_fingerprint<T: ?Sized>() -> u64 {
    xxhash_rust::xxh3::xxh3_64(std::any::type_name::<T>().as_bytes())
}

/// The fingerprint entries of `T` carry: of the schema name when one is set
/// (`KindConfig::schema`), which survives moves, renames and compiler upgrades; otherwise of the
/// type name.
pub(crate) fn fingerprint<T: ?Sized>(schema: Option<&str>) -> u64 {
    match schema {
        Some(s) => xxhash_rust::xxh3::xxh3_64_with_seed(s.as_bytes(), SCHEMA_SEED),
        None => type_fingerprint::<T>(),
    }
}

/// Keeps schema fingerprints apart from type-name ones.
const SCHEMA_SEED: u64 = 0x5c4e_3a11;

/// Serializes `value` to MessagePack (struct fields by name, so adding an optional field stays
/// readable).
pub(crate) fn to_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError::MessagePack(e.to_string()))
}

/// Deserializes MessagePack.
pub(crate) fn from_msgpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::MessagePack(e.to_string()))
}

/// Builds the wire bytes for a payload already serialized to MessagePack.
pub(crate) fn seal(
    cfg: &CodecConfig,
    header: &Header,
    tags: &[TagVersion],
    payload: &[u8],
) -> Result<Vec<u8>, CodecError> {
    if payload.len() > cfg.max_value_bytes {
        return Err(CodecError::TooLarge {
            size: payload.len(),
            max: cfg.max_value_bytes,
        });
    }
    if payload.len() >= cfg.compress_threshold {
        let compressed = compress::compress(payload, cfg.compress_level)?;
        // Only keep the compressed form when it is actually smaller.
        if compressed.len() < payload.len() {
            return Ok(envelope::write(
                header,
                true,
                tags,
                payload.len(),
                &compressed,
            ));
        }
    }
    Ok(envelope::write(header, false, tags, payload.len(), payload))
}

/// Bytes the envelope adds around a payload carrying `tags`.
pub(crate) fn envelope_overhead(tags: &[TagVersion]) -> usize {
    envelope::overhead(tags)
}

/// The tombstone `invalidate` writes.
pub(crate) fn tombstone(header: &Header) -> Vec<u8> {
    envelope::tombstone(header)
}

/// A tombstone written now, with a random nonce: what `invalidate` leaves in place of a value, and
/// the lease a load puts under an absent key (its identity is unique, so a compare-and-set against
/// it fails once anything else was written there, or once it is gone).
pub(crate) fn tombstone_now() -> Vec<u8> {
    let now_ms = crate::clock::unix_ms();
    tombstone(&Header {
        created_at_ms: now_ms,
        fresh_until_ms: now_ms,
        type_fp: 0,
        nonce: rand::random(),
    })
}

/// What identifies the write that produced `bytes` (for the L2 compare-and-set): its first
/// [`IDENTITY_LEN`] bytes, or all of them when shorter (garbage).
pub(crate) fn identity(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(IDENTITY_LEN)]
}

/// Returns the decompressed MessagePack payload of an opened envelope (borrowed when it was not
/// compressed: no copy on the read path).
pub(crate) fn payload<'a>(
    cfg: &CodecConfig,
    env: &Envelope<'a>,
) -> Result<std::borrow::Cow<'a, [u8]>, CodecError> {
    if env.compressed {
        compress::decompress(env.body, env.raw_len, cfg.max_value_bytes).map(Into::into)
    } else {
        Ok(env.body.into())
    }
}

/// Decodes an envelope of any type into its header, tags and raw MessagePack payload, for admin
/// tools that print values without knowing their Rust type.
pub fn inspect(bytes: &[u8], max_value_bytes: usize) -> Result<Inspected, CodecError> {
    let cfg = CodecConfig {
        max_value_bytes,
        ..CodecConfig::default()
    };
    let env = envelope::read(bytes, max_value_bytes)?;
    let payload = payload(&cfg, &env)?;
    Ok(Inspected {
        created_at_ms: env.header.created_at_ms,
        fresh_until_ms: env.header.fresh_until_ms,
        type_fingerprint: env.header.type_fp,
        compressed: env.compressed,
        tombstone: env.tombstone,
        stored_bytes: bytes.len(),
        tags: env.tags,
        msgpack: payload.into_owned(),
    })
}

/// What [`inspect`] finds in an envelope.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Inspected {
    /// When the value was written (Unix milliseconds).
    pub created_at_ms: u64,
    /// Until when the value is fresh (Unix milliseconds).
    pub fresh_until_ms: u64,
    /// Fingerprint of the Rust type that wrote the value.
    pub type_fingerprint: u64,
    /// Whether the payload was stored zstd-compressed.
    pub compressed: bool,
    /// Whether this is an invalidation tombstone (no value).
    pub tombstone: bool,
    /// Size of the bytes stored in Redis.
    pub stored_bytes: usize,
    /// Tags carried by the entry, with the tag version its load saw.
    pub tags: Vec<(String, u64)>,
    /// The decompressed MessagePack payload.
    pub msgpack: Vec<u8>,
}

/// Encodes `value` into wire bytes.
#[cfg(test)]
pub(crate) fn encode<T: Serialize>(
    cfg: &CodecConfig,
    header: &Header,
    tags: &[TagVersion],
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    let payload = to_msgpack(value)?;
    seal(cfg, header, tags, &payload)
}

/// A value decoded from wire bytes, with its metadata.
#[derive(Debug)]
pub(crate) struct Decoded<T> {
    pub(crate) header: Header,
    pub(crate) tags: Vec<TagVersion>,
    pub(crate) value: T,
}

/// Decodes wire bytes into a value of type `T` whose entries carry the fingerprint `fp` (see
/// [`fingerprint`]); `Ok(None)` for a tombstone.
pub(crate) fn decode<T: DeserializeOwned + 'static>(
    cfg: &CodecConfig,
    bytes: &[u8],
    fp: u64,
) -> Result<Option<Decoded<T>>, CodecError> {
    let env = envelope::read(bytes, cfg.max_value_bytes)?;
    if env.tombstone {
        return Ok(None);
    }
    if env.header.type_fp != fp {
        return Err(CodecError::TypeMismatch);
    }
    let payload = payload(cfg, &env)?;
    let value = from_msgpack(&payload)?;
    Ok(Some(Decoded {
        header: env.header,
        tags: env.tags,
        value,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Profile {
        id: u64,
        name: String,
        bio: String,
    }

    fn header<T: 'static>() -> Header {
        Header {
            created_at_ms: 1_700_000_000_000,
            fresh_until_ms: 1_700_000_300_000,
            type_fp: type_fingerprint::<T>(),
            nonce: 42,
        }
    }

    fn profile(bio_len: usize) -> Profile {
        Profile {
            id: 7,
            name: "ada".into(),
            bio: "lorem ipsum ".repeat(bio_len / 12 + 1),
        }
    }

    #[test]
    fn small_value_round_trips_uncompressed() {
        let cfg = CodecConfig::default();
        let bytes = encode(&cfg, &header::<Profile>(), &[], &profile(10)).unwrap();
        let env = envelope::read(&bytes, cfg.max_value_bytes).unwrap();
        assert!(!env.compressed);
        let d: Decoded<Profile> = decode(&cfg, &bytes, type_fingerprint::<Profile>())
            .unwrap()
            .unwrap();
        assert_eq!(d.value, profile(10));
        assert_eq!(d.header, header::<Profile>());
    }

    #[test]
    fn large_value_is_compressed_and_round_trips_with_tags() {
        let cfg = CodecConfig::default();
        let tags = vec![("user:7".to_string(), 3), ("team:1".to_string(), 0)];
        let bytes = encode(&cfg, &header::<Profile>(), &tags, &profile(10_000)).unwrap();
        let env = envelope::read(&bytes, cfg.max_value_bytes).unwrap();
        assert!(env.compressed);
        assert!(bytes.len() < 2_000, "compressed size {}", bytes.len());
        let d: Decoded<Profile> = decode(&cfg, &bytes, type_fingerprint::<Profile>())
            .unwrap()
            .unwrap();
        assert_eq!(d.value, profile(10_000));
        assert_eq!(d.tags, tags);
        assert_eq!(inspect(&bytes, cfg.max_value_bytes).unwrap().tags, tags);
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        let cfg = CodecConfig::default();
        for input in [
            &b""[..],
            b"x",
            b"hello world",
            &[0xff; 64][..],
            b"TC",
            b"TC\x01",
        ] {
            assert!(
                decode::<Profile>(&cfg, input, type_fingerprint::<Profile>()).is_err(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn every_truncation_of_a_valid_envelope_is_an_error() {
        let cfg = CodecConfig::default();
        for value in [profile(10), profile(10_000)] {
            let bytes = encode(&cfg, &header::<Profile>(), &[("t".into(), 1)], &value).unwrap();
            for cut in 0..bytes.len() {
                assert!(
                    decode::<Profile>(&cfg, &bytes[..cut], type_fingerprint::<Profile>()).is_err(),
                    "prefix of {cut} bytes decoded"
                );
            }
        }
    }

    #[test]
    fn random_bit_flips_never_panic() {
        let cfg = CodecConfig::default();
        let bytes = encode(
            &cfg,
            &header::<Profile>(),
            &[("t".into(), 1)],
            &profile(5_000),
        )
        .unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            let mut b = bytes.clone();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % b.len();
            b[i] ^= 1 << (state % 8);
            let _ = decode::<Profile>(&cfg, &b, type_fingerprint::<Profile>());
        }
    }

    #[test]
    fn tombstones_decode_as_none_and_carry_an_identity() {
        let cfg = CodecConfig::default();
        let t = tombstone(&header::<Profile>());
        assert!(decode::<Profile>(&cfg, &t, type_fingerprint::<Profile>())
            .unwrap()
            .is_none());
        assert_eq!(identity(&t).len(), IDENTITY_LEN);
        let mut other = header::<Profile>();
        other.nonce = 43;
        assert_ne!(identity(&t), identity(&tombstone(&other)));
        // A tombstone flag on an envelope with a payload is malformed.
        let mut bad = encode(&cfg, &header::<Profile>(), &[], &profile(10)).unwrap();
        bad[3] |= 0b10;
        assert!(decode::<Profile>(&cfg, &bad, type_fingerprint::<Profile>()).is_err());
    }

    #[test]
    fn other_format_version_is_rejected() {
        let cfg = CodecConfig::default();
        let mut bytes = encode(&cfg, &header::<Profile>(), &[], &profile(10)).unwrap();
        bytes[2] = 99;
        assert_eq!(
            decode::<Profile>(&cfg, &bytes, type_fingerprint::<Profile>()).unwrap_err(),
            CodecError::UnsupportedVersion(99)
        );
    }

    #[test]
    fn value_of_another_type_is_rejected() {
        let cfg = CodecConfig::default();
        let bytes = encode(&cfg, &header::<Profile>(), &[], &profile(10)).unwrap();
        assert_eq!(
            decode::<String>(&cfg, &bytes, type_fingerprint::<String>()).unwrap_err(),
            CodecError::TypeMismatch
        );
    }

    #[test]
    fn msgpack_that_does_not_fit_the_type_is_rejected() {
        let cfg = CodecConfig::default();
        // Right fingerprint, wrong shape.
        let h = header::<Profile>();
        let bytes = seal(&cfg, &h, &[], &to_msgpack(&"just a string").unwrap()).unwrap();
        assert!(matches!(
            decode::<Profile>(&cfg, &bytes, type_fingerprint::<Profile>()).unwrap_err(),
            CodecError::MessagePack(_)
        ));
        // An array declaring 2^32-1 items with none present.
        let bytes = seal(
            &cfg,
            &header::<Vec<u64>>(),
            &[],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
        )
        .unwrap();
        assert!(decode::<Vec<u64>>(&cfg, &bytes, type_fingerprint::<Vec<u64>>()).is_err());
    }

    #[test]
    fn decompression_bomb_is_rejected() {
        // 64 MiB of zeros compresses to a few KiB; the cap is 1 MiB.
        let cfg = CodecConfig {
            max_value_bytes: 1 << 20,
            ..CodecConfig::default()
        };
        let zeros = vec![0u8; 64 << 20];
        let compressed = zstd::bulk::compress(&zeros, 1).unwrap();
        // Honest declared length: refused before decompressing.
        let honest = envelope::write(&header::<Vec<u8>>(), true, &[], zeros.len(), &compressed);
        assert!(matches!(
            decode::<Vec<u8>>(&cfg, &honest, type_fingerprint::<Vec<u8>>()).unwrap_err(),
            CodecError::TooLarge { .. }
        ));
        // Lying declared length: decompression stops at the cap.
        let lying = envelope::write(&header::<Vec<u8>>(), true, &[], 100, &compressed);
        assert!(decode::<Vec<u8>>(&cfg, &lying, type_fingerprint::<Vec<u8>>()).is_err());
    }

    #[test]
    fn oversized_value_is_refused_on_write() {
        let cfg = CodecConfig {
            max_value_bytes: 100,
            ..CodecConfig::default()
        };
        assert!(matches!(
            encode(&cfg, &header::<Profile>(), &[], &profile(1_000)).unwrap_err(),
            CodecError::TooLarge { .. }
        ));
    }
}
