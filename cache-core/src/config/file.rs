//! The config file's layer of settings: a TOML file whose keys are the builder's method names
//! (`l1_max_bytes = "64MiB"`), with one table per kind (`[kinds.api_response]`, keys named after
//! `KindConfig`'s methods). Durations are strings as humantime reads them (`"250ms"`, `"5m"`,
//! `"1h 30m"`), byte sizes numbers or strings (`"64M"`, `"64MiB"`: powers of 1024).
//!
//! A file is checked whole when read: an unknown key, a value of the wrong type and a value out
//! of range are all [`Error::Config`] naming the file, the line and column, and the key
//! (`cache.toml:12:7: kinds.api_response.ttl: ...`). The sample `cache.example.toml` at the
//! repository's root shows every key.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use super::{parse_bytes, Config, Invalid, Key, KindLayer, L2Target, Pem, Settings};
use crate::error::{Error, Result};
use crate::freshness::Freshness;
use crate::kind::{Kind, KindOptions, Tiers};
use crate::l2::SentinelAuth;

/// The file's top level. Each field is a builder method's name.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    redis_url: Option<String>,
    redis_cluster_urls: Option<Vec<String>>,
    redis_sentinels: Option<Vec<String>>,
    redis_sentinel_master: Option<String>,
    redis_username: Option<String>,
    redis_password: Option<String>,
    redis_sentinel_username: Option<String>,
    redis_sentinel_password: Option<String>,
    redis_sentinel_tls: Option<bool>,
    redis_tls_ca_file: Option<PathBuf>,
    enabled: Option<bool>,
    prefix: Option<String>,
    name: Option<String>,
    #[serde(default, deserialize_with = "bytes")]
    l1_max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    l2_connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    l2_timeout: Option<Duration>,
    breaker_failure_threshold: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    breaker_cooldown_min: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    breaker_cooldown_max: Option<Duration>,
    #[serde(default, deserialize_with = "bytes")]
    compress_threshold: Option<u64>,
    compression_level: Option<i32>,
    #[serde(default, deserialize_with = "bytes")]
    max_value_bytes: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    fail_safe_grace: Option<Duration>,
    backplane: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    unsynced_l1_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    invalidation_tombstone_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    stats_report_interval: Option<Duration>,
    ttl_jitter: Option<f64>,
    #[serde(default, deserialize_with = "duration")]
    breaker_open_l1_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    distributed_lock_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    distributed_lock_wait: Option<Duration>,
    max_pending_invalidations: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    unregistered_kind_ttl: Option<Duration>,
    event_buffer: Option<usize>,
    #[serde(default)]
    kinds: BTreeMap<String, FileKind>,
}

/// A `[kinds.NAME]` table. Each field is a `KindConfig` method's name.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileKind {
    #[serde(default, deserialize_with = "duration")]
    ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    l1_ttl: Option<Duration>,
    tiers: Option<FileTiers>,
    eager_refresh: Option<f64>,
    xfetch: Option<f64>,
    #[serde(default, deserialize_with = "duration")]
    soft_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    hard_timeout: Option<Duration>,
    distributed_lock: Option<bool>,
    ttl_jitter: Option<f64>,
    schema: Option<String>,
    load_cost: Option<f64>,
    hit_rate_target: Option<f64>,
}

/// [`Tiers`] as the file writes them: `"both"`, `"l1_only"`, `"l2_only"`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum FileTiers {
    Both,
    L1Only,
    L2Only,
}

impl From<FileTiers> for Tiers {
    fn from(t: FileTiers) -> Tiers {
        match t {
            FileTiers::Both => Tiers::Both,
            FileTiers::L1Only => Tiers::L1Only,
            FileTiers::L2Only => Tiers::L2Only,
        }
    }
}

/// The settings of the config file at `path`, checked.
///
/// # Errors
/// [`Error::Config`] naming the file (and, but for an unreadable file, the line, column and key).
pub(crate) fn read(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "{}: cannot read the config file: {e}",
            path.display()
        ))
    })?;
    parse(&text, path)
}

/// The settings of `text`, the content of the file at `path` (relative paths in it are read from
/// the file's directory), checked.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Settings> {
    // Messages are toml's bare message with a position, never its rendering of the source line:
    // that line may be a `redis_url` with its password.
    let located = |span: Option<Range<usize>>, key: Option<String>, message: &str| {
        let mut at = path.display().to_string();
        if let Some((line, column)) = span.map(|s| line_column(text, s.start)) {
            at = format!("{at}:{line}:{column}");
        }
        let key = key.map(|k| format!(" {k}:")).unwrap_or_default();
        Error::Config(format!("{at}:{key} {message}"))
    };
    let doc =
        toml::de::Deserializer::parse(text).map_err(|e| located(e.span(), None, e.message()))?;
    let file: FileSettings = serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = dotted_path(e.path());
        let inner = e.into_inner();
        located(inner.span(), Some(key), inner.message())
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let settings = into_settings(file, dir)
        .and_then(|s| check(&s).map(|()| s))
        .map_err(|inv| {
            located(
                span_of(text, &inv.key),
                Some(inv.key.to_string()),
                &inv.message,
            )
        })?;
    Ok(settings)
}

/// Checks the file's settings over the defaults, as `build()` would with no other layer (a
/// custom kind without a TTL is let through: code may register it).
fn check(settings: &Settings) -> std::result::Result<(), Invalid> {
    let mut alone = settings.clone();
    for (kind, layer) in &mut alone.kinds {
        if layer.ttl.is_none() && kind.default_ttl().is_none() {
            layer.ttl = Some(Duration::from_secs(1));
        }
    }
    Config::resolve(alone)?.validate()
}

fn into_settings(file: FileSettings, dir: &Path) -> std::result::Result<Settings, Invalid> {
    let FileSettings {
        redis_url,
        redis_cluster_urls,
        redis_sentinels,
        redis_sentinel_master,
        redis_username,
        redis_password,
        redis_sentinel_username,
        redis_sentinel_password,
        redis_sentinel_tls,
        redis_tls_ca_file,
        enabled,
        prefix,
        name,
        l1_max_bytes,
        l2_connect_timeout,
        l2_timeout,
        breaker_failure_threshold,
        breaker_cooldown_min,
        breaker_cooldown_max,
        compress_threshold,
        compression_level,
        max_value_bytes,
        fail_safe_grace,
        backplane,
        unsynced_l1_ttl,
        invalidation_tombstone_ttl,
        stats_report_interval,
        ttl_jitter,
        breaker_open_l1_ttl,
        distributed_lock_ttl,
        distributed_lock_wait,
        max_pending_invalidations,
        unregistered_kind_ttl,
        event_buffer,
        kinds,
    } = file;
    let invalid = |key: &'static str, message: String| Invalid {
        key: Key::top(key),
        message,
    };
    // One of the three ways to name L2; the one named second is the error.
    let named = [
        ("redis_url", redis_url.is_some()),
        ("redis_cluster_urls", redis_cluster_urls.is_some()),
        ("redis_sentinels", redis_sentinels.is_some()),
    ];
    if let Some((second, _)) = named.iter().filter(|(_, set)| *set).nth(1) {
        return Err(invalid(
            second,
            "set one of redis_url (one server), redis_cluster_urls (a cluster) or \
             redis_sentinels (Redis Sentinel), not several"
                .into(),
        ));
    }
    // The master's name and the credentials of a Sentinel deployment go with its sentinels.
    if redis_sentinels.is_none() {
        for (key, set) in [
            ("redis_sentinel_master", redis_sentinel_master.is_some()),
            ("redis_username", redis_username.is_some()),
            ("redis_password", redis_password.is_some()),
            ("redis_sentinel_username", redis_sentinel_username.is_some()),
            ("redis_sentinel_password", redis_sentinel_password.is_some()),
            ("redis_sentinel_tls", redis_sentinel_tls.is_some()),
        ] {
            if set {
                return Err(invalid(
                    key,
                    format!(
                        "{key} is a setting of Redis Sentinel: it goes with redis_sentinels (a \
                         redis_url carries its own credentials)"
                    ),
                ));
            }
        }
    }
    let l2 = match (redis_url, redis_cluster_urls, redis_sentinels) {
        (Some(url), _, _) if url.trim().is_empty() => {
            return Err(invalid(
                "redis_url",
                "an empty URL: leave the key out to run L1-only".into(),
            ))
        }
        (_, Some(nodes), _) if nodes.iter().all(|n| n.trim().is_empty()) => {
            return Err(invalid(
                "redis_cluster_urls",
                "no node URL: leave the key out to run L1-only".into(),
            ))
        }
        (Some(url), _, _) => Some(L2Target::Url(url)),
        (_, Some(nodes), _) => Some(L2Target::Cluster(nodes)),
        (_, _, Some(sentinels)) => {
            let Some(master) = redis_sentinel_master else {
                return Err(invalid(
                    "redis_sentinels",
                    "redis_sentinel_master is missing: the name of the master the sentinels \
                     monitor"
                        .into(),
                ));
            };
            let auth = |username: Option<String>, password: Option<String>| SentinelAuth {
                username: username.filter(|u| !u.is_empty()),
                password: password.filter(|p| !p.is_empty()),
            };
            Some(L2Target::Sentinel {
                sentinels: sentinels.iter().map(|h| h.trim().to_owned()).collect(),
                master: master.trim().to_owned(),
                node_auth: auth(redis_username, redis_password),
                sentinel_auth: auth(redis_sentinel_username, redis_sentinel_password),
                tls: redis_sentinel_tls.unwrap_or(false),
            })
        }
        (None, None, None) => None,
    };
    let tls_root_cert = redis_tls_ca_file
        .map(|p| {
            let p = dir.join(p);
            std::fs::read(&p).map(Pem).map_err(|e| {
                invalid(
                    "redis_tls_ca_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })
        })
        .transpose()?;
    let size = |key: &'static str, b: Option<u64>| {
        b.map(|b| usize::try_from(b).map_err(|_| invalid(key, format!("{b} bytes is too large"))))
            .transpose()
    };
    Ok(Settings {
        l2,
        tls_root_cert,
        enabled,
        prefix,
        name,
        l1_max_bytes,
        l2_connect_timeout,
        l2_timeout,
        breaker_failure_threshold,
        breaker_cooldown_min,
        breaker_cooldown_max,
        compress_threshold: size("compress_threshold", compress_threshold)?,
        compression_level,
        max_value_bytes: size("max_value_bytes", max_value_bytes)?,
        fail_safe_grace,
        backplane,
        unsynced_l1_ttl,
        invalidation_tombstone_ttl,
        stats_report_interval,
        ttl_jitter,
        breaker_open_l1_ttl,
        distributed_lock_ttl,
        distributed_lock_wait,
        max_pending_invalidations,
        unregistered_kind_ttl,
        event_buffer,
        kinds: kinds
            .into_iter()
            .map(|(name, k)| (Kind::new(name), k.into_layer()))
            .collect(),
    })
}

impl FileKind {
    fn into_layer(self) -> KindLayer {
        let FileKind {
            ttl,
            l1_ttl,
            tiers,
            eager_refresh,
            xfetch,
            soft_timeout,
            hard_timeout,
            distributed_lock,
            ttl_jitter,
            schema,
            load_cost,
            hit_rate_target,
        } = self;
        KindLayer {
            ttl,
            opts: KindOptions {
                l1_ttl,
                tiers: tiers.map(Tiers::from),
                freshness: Freshness {
                    refresh_at: eager_refresh,
                    xfetch_beta: xfetch,
                    soft_timeout,
                    hard_timeout,
                    lock: distributed_lock,
                },
                ttl_jitter,
                schema: schema.map(Into::into),
                load_cost,
                hit_rate_target,
            },
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where the value of `key` is in `text`, if it is there.
fn span_of(text: &str, key: &Key) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let (last, parents) = key.path().split_last().map(|(l, p)| (*l, p.to_vec()))?;
    let mut table: &DeTable<'_> = doc.get_ref();
    for part in parents {
        match table.get(part)?.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    table.get(last).map(|v| v.span())
}

/// A serde path as a TOML dotted key (quoting parts that are not bare keys).
fn dotted_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&super::toml_key(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// A duration written as humantime reads it (`"250ms"`, `"5m"`, `"1h 30m"`).
fn duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Duration>, D::Error> {
    struct Human;
    impl Visitor<'_> for Human {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"250ms\", \"5m\" or \"1h 30m\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Duration, E> {
            humantime::parse_duration(s.trim()).map_err(|e| {
                E::custom(format!(
                    "{s:?} is not a duration ({e}): write e.g. \"250ms\", \"5m\" or \"1h 30m\""
                ))
            })
        }
    }
    d.deserialize_str(Human).map(Some)
}

/// A byte size: a number of bytes, or a string with a unit (`"64M"`, `"64MiB"`).
fn bytes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    struct Size;
    impl Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte size such as 67108864, \"64M\" or \"64MiB\"")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<u64, E> {
            Ok(n)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom(format!("{n} is not a byte size: below 0")))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<u64, E> {
            parse_bytes(s).map_err(E::custom)
        }
    }
    d.deserialize_any(Size).map(Some)
}

#[cfg(test)]
mod tests;
