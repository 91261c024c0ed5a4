//! The versioned envelope around every value stored in Redis.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset size field
//! 0      2    magic "TC"
//! 2      1    format version (1)
//! 3      1    flags (bit 0: payload is zstd-compressed; bit 1: tombstone; other bits must be 0)
//! 4      8    created_at, Unix ms
//! 12     8    fresh_until, Unix ms (after it the entry is stale: served only as a fail-safe)
//! 20     8    type fingerprint
//! 28     8    write nonce (random per write)
//! 36     4    decompressed payload length
//! 40     2    tag count, then per tag: u16 length + UTF-8 bytes + u64 tag version
//! ..     ..   payload (MessagePack, possibly compressed) to the end
//! ```
//!
//! The first [`IDENTITY_LEN`] bytes identify one write: the L2 compare-and-set of a load compares
//! them with what its read saw. A tombstone (written by `invalidate`) has no tags and no payload.

use super::CodecError;

const MAGIC: [u8; 2] = *b"TC";
/// The current envelope format version. A change of layout bumps it (and the key namespace `v1`).
pub(crate) const VERSION: u8 = 1;
const FLAG_COMPRESSED: u8 = 0b0000_0001;
const FLAG_TOMBSTONE: u8 = 0b0000_0010;
const KNOWN_FLAGS: u8 = FLAG_COMPRESSED | FLAG_TOMBSTONE;
const FIXED_LEN: usize = 42;
/// Bytes at the start of an envelope that identify one write (magic through nonce).
pub(crate) const IDENTITY_LEN: usize = 36;

/// Metadata stored with each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) created_at_ms: u64,
    pub(crate) fresh_until_ms: u64,
    pub(crate) type_fp: u64,
    pub(crate) nonce: u64,
}

/// A tag and the version it had when the entry's load began.
pub(crate) type TagVersion = (String, u64);

/// A parsed envelope.
#[derive(Debug, Clone)]
pub(crate) struct Envelope<'a> {
    pub(crate) header: Header,
    pub(crate) compressed: bool,
    pub(crate) tombstone: bool,
    pub(crate) raw_len: usize,
    pub(crate) tags: Vec<TagVersion>,
    /// The payload as stored (compressed or not), borrowed from the bytes read.
    pub(crate) body: &'a [u8],
}

pub(crate) fn overhead(tags: &[TagVersion]) -> usize {
    FIXED_LEN
        + tags
            .iter()
            .take(u16::MAX as usize)
            .map(|(t, _)| 10 + t.len().min(u16::MAX as usize))
            .sum::<usize>()
}

/// A tombstone: the marker `invalidate` leaves so that loads which began earlier cannot store.
pub(crate) fn tombstone(header: &Header) -> Vec<u8> {
    write_flags(header, FLAG_TOMBSTONE, &[], 0, &[])
}

pub(crate) fn write(
    header: &Header,
    compressed: bool,
    tags: &[TagVersion],
    raw_len: usize,
    body: &[u8],
) -> Vec<u8> {
    let flags = if compressed { FLAG_COMPRESSED } else { 0 };
    write_flags(header, flags, tags, raw_len, body)
}

fn write_flags(
    header: &Header,
    flags: u8,
    tags: &[TagVersion],
    raw_len: usize,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(overhead(tags) + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&header.created_at_ms.to_le_bytes());
    out.extend_from_slice(&header.fresh_until_ms.to_le_bytes());
    out.extend_from_slice(&header.type_fp.to_le_bytes());
    out.extend_from_slice(&header.nonce.to_le_bytes());
    out.extend_from_slice(&u32::try_from(raw_len).unwrap_or(u32::MAX).to_le_bytes());
    let count = tags.len().min(u16::MAX as usize);
    out.extend_from_slice(&(count as u16).to_le_bytes());
    for (tag, version) in &tags[..count] {
        // Truncation is a last resort (a tag over 64 KiB) at a char boundary, so the envelope stays
        // well-formed.
        let mut end = tag.len().min(u16::MAX as usize);
        while !tag.is_char_boundary(end) {
            end -= 1;
        }
        out.extend_from_slice(&(end as u16).to_le_bytes());
        out.extend_from_slice(&tag.as_bytes()[..end]);
        out.extend_from_slice(&version.to_le_bytes());
    }
    out.extend_from_slice(body);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }
}

pub(crate) fn read(bytes: &[u8], max_value_bytes: usize) -> Result<Envelope<'_>, CodecError> {
    let mut r = Reader { buf: bytes };
    if r.take(2, "magic")? != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let flags = r.u8("flags")?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(CodecError::UnknownFlags(flags));
    }
    let header = Header {
        created_at_ms: r.u64("created_at")?,
        fresh_until_ms: r.u64("fresh_until")?,
        type_fp: r.u64("type fingerprint")?,
        nonce: r.u64("nonce")?,
    };
    let raw_len = r.u32("payload length")? as usize;
    if raw_len > max_value_bytes {
        return Err(CodecError::TooLarge {
            size: raw_len,
            max: max_value_bytes,
        });
    }
    let count = r.u16("tag count")?;
    let mut tags = Vec::with_capacity(count.min(64) as usize);
    for _ in 0..count {
        let len = r.u16("tag length")? as usize;
        let raw = r.take(len, "tag")?;
        let tag = std::str::from_utf8(raw)
            .map_err(|_| CodecError::Truncated("tag is not UTF-8"))?
            .to_owned();
        tags.push((tag, r.u64("tag version")?));
    }
    let compressed = flags & FLAG_COMPRESSED != 0;
    let tombstone = flags & FLAG_TOMBSTONE != 0;
    let body = r.buf;
    if !compressed && body.len() != raw_len {
        return Err(CodecError::Truncated("payload"));
    }
    if compressed && body.is_empty() {
        return Err(CodecError::Truncated("compressed payload"));
    }
    if tombstone && (compressed || raw_len != 0 || !tags.is_empty()) {
        return Err(CodecError::UnknownFlags(flags));
    }
    Ok(Envelope {
        header,
        compressed,
        tombstone,
        raw_len,
        tags,
        body,
    })
}
