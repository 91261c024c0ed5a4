//! `cachectl get` and `cachectl keys`: entries as the key layout `{prefix}:v1:{kind}:{key}` and
//! the envelope (via `cache_core::admin::inspect`) describe them.

use cache_core::admin;
use serde::Serialize;

use crate::error::{CliError, Result};
use crate::output::{self, Table};
use crate::target::Target;
use crate::Report;

/// Largest decoded value accepted (the library's default `max_value_bytes`).
const MAX_VALUE_BYTES: usize = 16 << 20;

/// An entry named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryRef {
    pub(crate) kind: String,
    /// The key as the library receives it (for a full Redis key, its last part).
    pub(crate) key: String,
    /// The full Redis key.
    pub(crate) full: String,
}

/// Whether `s` is a valid kind or prefix name (as the library requires).
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Parses `kind:key` or a full Redis key `{prefix}:v1:{kind}:{key}`.
pub(crate) fn parse_entry(prefix: &str, arg: &str) -> Result<EntryRef> {
    let layout = format!("{prefix}:v1:");
    if let Some(rest) = arg.strip_prefix(&layout) {
        let (kind, key) = rest.split_once(':').unwrap_or((rest, ""));
        if !valid_name(kind) || key.is_empty() {
            return Err(CliError::Usage(format!(
                "{arg:?} is not an entry key: expected {layout}KIND:KEY"
            )));
        }
        return Ok(EntryRef {
            kind: kind.to_owned(),
            key: key.to_owned(),
            full: arg.to_owned(),
        });
    }
    match arg.split_once(':') {
        Some((kind, key)) if valid_name(kind) && !key.is_empty() => Ok(EntryRef {
            kind: kind.to_owned(),
            key: key.to_owned(),
            full: cache_core::admin::entry_key(prefix, kind, key),
        }),
        _ => Err(CliError::Usage(format!(
            "{arg:?}: expected KIND:KEY (e.g. api_response:user:42) or the full Redis key \
             {layout}KIND:KEY"
        ))),
    }
}

/// The kind of a full Redis key of this prefix.
fn kind_of<'k>(prefix: &str, full: &'k str) -> Option<&'k str> {
    full.strip_prefix(prefix)?
        .strip_prefix(":v1:")?
        .split(':')
        .next()
}

#[derive(Serialize)]
struct TagJson<'a> {
    tag: &'a str,
    version: u64,
}

#[derive(Serialize)]
struct EntryJson<'a> {
    key: &'a str,
    kind: &'a str,
    tombstone: bool,
    fresh: bool,
    created: String,
    created_ms: u64,
    fresh_until: String,
    fresh_until_ms: u64,
    /// Remaining Redis TTL in milliseconds (`null`: no expiry).
    redis_ttl_ms: Option<i64>,
    compressed: bool,
    stored_bytes: usize,
    payload_bytes: usize,
    type_fingerprint: String,
    tags: Vec<TagJson<'a>>,
    value: Option<serde_json::Value>,
}

/// Runs `cachectl get KEY`.
pub(crate) async fn get(t: &Target, prefix: &str, arg: &str) -> Result<Report> {
    let e = parse_entry(prefix, arg)?;
    let bytes: Option<Vec<u8>> = t.query("GET", redis::cmd("GET").arg(&e.full)).await?;
    let bytes = bytes.ok_or_else(|| CliError::NotFound(e.full.clone()))?;
    let pttl: i64 = t.query("PTTL", redis::cmd("PTTL").arg(&e.full)).await?;
    let undecodable = |reason: String| CliError::Undecodable {
        key: e.full.clone(),
        reason,
    };
    let ins =
        admin::inspect(&bytes, MAX_VALUE_BYTES).map_err(|err| undecodable(err.to_string()))?;
    let value = if ins.tombstone {
        None
    } else {
        let v = rmpv::decode::read_value(&mut ins.msgpack.as_slice())
            .map_err(|err| undecodable(format!("messagepack: {err}")))?;
        Some(output::msgpack_to_json(&v))
    };
    let now = output::now_ms();
    let j = EntryJson {
        key: &e.full,
        kind: &e.kind,
        tombstone: ins.tombstone,
        fresh: !ins.tombstone && now < ins.fresh_until_ms,
        created: output::utc(ins.created_at_ms),
        created_ms: ins.created_at_ms,
        fresh_until: output::utc(ins.fresh_until_ms),
        fresh_until_ms: ins.fresh_until_ms,
        redis_ttl_ms: (pttl >= 0).then_some(pttl),
        compressed: ins.compressed,
        stored_bytes: ins.stored_bytes,
        payload_bytes: ins.msgpack.len(),
        type_fingerprint: format!("{:016x}", ins.type_fingerprint),
        tags: ins
            .tags
            .iter()
            .map(|(tag, version)| TagJson {
                tag,
                version: *version,
            })
            .collect(),
        value,
    };
    let mut human = String::new();
    human.push_str(&format!("key          {}\n", j.key));
    human.push_str(&format!("kind         {}\n", j.kind));
    if j.tombstone {
        human.push_str(&format!(
            "state        invalidated at {} ({}): a tombstone, read as a miss\n",
            j.created,
            output::relative(j.created_ms, now)
        ));
    } else {
        human.push_str(&format!(
            "created      {} ({})\n",
            j.created,
            output::relative(j.created_ms, now)
        ));
        human.push_str(&format!(
            "fresh until  {} ({}){}\n",
            j.fresh_until,
            output::relative(j.fresh_until_ms, now),
            if j.fresh { "" } else { ", stale" }
        ));
    }
    human.push_str(&format!(
        "redis ttl    {}\n",
        match j.redis_ttl_ms {
            Some(ms) => output::human_duration(std::time::Duration::from_millis(ms as u64)),
            None => "none".into(),
        }
    ));
    human.push_str(&format!(
        "size         {} stored, {} payload{}\n",
        output::bytes(j.stored_bytes as u64),
        output::bytes(j.payload_bytes as u64),
        if j.compressed {
            ", zstd-compressed"
        } else {
            ""
        }
    ));
    let tags: Vec<String> = j
        .tags
        .iter()
        .map(|t| format!("{} (v{})", t.tag, t.version))
        .collect();
    human.push_str(&format!(
        "tags         {}\n",
        if tags.is_empty() {
            "-".into()
        } else {
            tags.join(", ")
        }
    ));
    if let Some(v) = &j.value {
        human.push_str("value\n");
        human.push_str(&serde_json::to_string_pretty(v).unwrap_or_default());
        human.push('\n');
    }
    Ok(Report {
        human,
        json: serde_json::to_value(&j).unwrap_or_default(),
    })
}

#[derive(Serialize)]
struct KeyJson {
    key: String,
    kind: String,
}

/// Runs `cachectl keys`.
pub(crate) async fn keys(
    t: &Target,
    prefix: &str,
    kind: Option<&str>,
    tag: Option<&str>,
    limit: usize,
) -> Result<Report> {
    let pattern = match kind {
        Some(k) if !valid_name(k) => {
            return Err(CliError::Usage(format!(
                "kind {k:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'"
            )))
        }
        Some(k) => format!("{prefix}:v1:{k}:*"),
        None => format!("{prefix}:v1:*"),
    };
    let found = t
        .scan(&pattern, Some(limit), |page| async move {
            let Some(tag) = tag else { return Ok(page) };
            // Keep live entries carrying the tag: read and open each envelope.
            let values = t.get_many(&page).await?;
            Ok(page
                .into_iter()
                .zip(values)
                .filter(|(_, v)| {
                    v.as_deref()
                        .and_then(|b| admin::inspect(b, MAX_VALUE_BYTES).ok())
                        .is_some_and(|i| !i.tombstone && i.tags.iter().any(|(t, _)| t == tag))
                })
                .map(|(k, _)| k)
                .collect())
        })
        .await?;
    let rows: Vec<KeyJson> = found
        .into_iter()
        .map(|key| KeyJson {
            kind: kind_of(prefix, &key).unwrap_or("").to_owned(),
            key,
        })
        .collect();
    let mut human = String::new();
    if rows.is_empty() {
        human.push_str("no matching keys\n");
    } else {
        let mut table = Table::new(&["KIND", "KEY"]);
        for r in &rows {
            table.row(vec![r.kind.clone(), r.key.clone()]);
        }
        human.push_str(&table.render());
        human.push_str(&format!(
            "{} key(s){}\n",
            rows.len(),
            if rows.len() >= limit {
                " (limit reached; use --limit)"
            } else {
                ""
            }
        ));
    }
    Ok(Report {
        human,
        json: serde_json::to_value(&rows).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_named_by_kind_and_key_or_by_full_key() {
        let short = parse_entry("app", "api_response:user:42").unwrap();
        assert_eq!(short.full, "app:v1:api_response:user:42");
        assert_eq!(
            (short.kind.as_str(), short.key.as_str()),
            ("api_response", "user:42")
        );
        let full = parse_entry("app", "app:v1:api_response:user:42").unwrap();
        assert_eq!(full, short);
        assert!(parse_entry("app", "nokind").is_err());
        assert!(parse_entry("app", "bad kind:x").is_err());
        assert!(parse_entry("app", "app:v1:k:").is_err());
    }

    #[test]
    fn kinds_are_read_from_full_keys() {
        assert_eq!(
            kind_of("app", "app:v1:static_data:x:y"),
            Some("static_data")
        );
        assert_eq!(kind_of("app", "other:v1:k:x"), None);
    }
}
