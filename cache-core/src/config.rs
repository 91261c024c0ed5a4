//! The settings of a cache in layers, and their resolution.
//!
//! Settings come from three places, each a [`Settings`] layer in which every setting is optional:
//! code (the `CacheBuilder` methods), the environment (`env.rs`) and TOML config files
//! (`file.rs`). [`Config::resolve`] takes, for each setting, the value of the highest layer that
//! sets it (code, then environment, then file) and the default for the others, and
//! [`Config::validate`] checks the result, naming the offending setting by its [`Key`]: the
//! builder method's name, which is also the config file's key.
//!
//! # Adding a setting
//! 1. a field in [`Settings`] (and its line in `Settings::over` and `Settings::keys`: their
//!    destructuring makes the compiler point at both);
//! 2. its resolved field and default in [`Config`] / `Config::resolve`, and its checks in
//!    `Config::validate`;
//! 3. the builder method that sets `code.<field>` (`builder.rs`), its environment variable if it
//!    has one (`env.rs`), its key in `file.rs` (`FileSettings` and `into_settings`);
//! 4. the sample `cache.example.toml`, the README's tables, the `from_env` rustdoc table.

pub(crate) mod env;
pub(crate) mod file;

use std::fmt;
use std::time::Duration;

use crate::breaker::BreakerConfig;
use crate::codec::CodecConfig;
use crate::events;
use crate::freshness;
use crate::key;
use crate::kind::{Kind, KindConfig, KindOptions};
use crate::l2::{check_sentinel_url, sentinel_url, SentinelAuth};
use crate::options::MAX_TTL;

/// Where L2 is.
#[derive(Clone, PartialEq)]
pub(crate) enum L2Target {
    /// No L2: L1-only (also what `no_l2()` asks for, over a URL from a lower layer).
    None,
    /// One Redis server.
    Url(String),
    /// A Redis Cluster, from the URLs of some of its nodes.
    Cluster(Vec<String>),
    /// The master of a Redis Sentinel deployment, followed across failovers: what a
    /// `redis+sentinel://` URL holds, in parts (a URL given as `redis_url` stays a [`Url`](Self::Url)).
    Sentinel {
        /// The sentinels, `host[:port]` each (port 26379 when omitted).
        sentinels: Vec<String>,
        /// The name the sentinels monitor the master under.
        master: String,
        /// The Redis nodes' credentials.
        node_auth: SentinelAuth,
        /// The sentinels' own (for sentinels that require a password).
        sentinel_auth: SentinelAuth,
        /// TLS to the sentinels and the nodes.
        tls: bool,
    },
}

impl L2Target {
    /// The URLs L2 connects to, and whether they are a cluster's seed nodes (`None`: no L2).
    pub(crate) fn urls(&self) -> Option<(Vec<String>, bool)> {
        match self {
            L2Target::None => None,
            L2Target::Url(url) => Some((vec![url.clone()], false)),
            L2Target::Cluster(nodes) => Some((nodes.clone(), true)),
            L2Target::Sentinel {
                sentinels,
                master,
                node_auth,
                sentinel_auth,
                tls,
            } => Some((
                vec![sentinel_url(
                    sentinels,
                    master,
                    node_auth,
                    sentinel_auth,
                    *tls,
                )],
                false,
            )),
        }
    }

    /// Checks a [`Sentinel`](Self::Sentinel) target: its field named by its config file key, and
    /// what is wrong (never quoting a password).
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        let L2Target::Sentinel {
            sentinels, master, ..
        } = self
        else {
            return Ok(());
        };
        if sentinels.iter().all(|s| s.trim().is_empty()) {
            return Err((
                "redis_sentinels",
                "no sentinel: list them (host[:port] each), or set no Redis to run L1-only".into(),
            ));
        }
        if sentinels
            .iter()
            .any(|s| s.contains("://") || s.contains('@'))
        {
            return Err((
                "redis_sentinels",
                "sentinels are given as host[:port], not as URLs: their credentials are \
                 separate settings (redis_sentinel_username / redis_sentinel_password; \
                 REDIS_SENTINEL_USERNAME / REDIS_SENTINEL_PASSWORD)"
                    .into(),
            ));
        }
        if master.trim().is_empty() {
            return Err((
                "redis_sentinel_master",
                "the name of the master the sentinels monitor is empty".into(),
            ));
        }
        let (urls, _) = self.urls().unwrap_or_default();
        urls.iter()
            .try_for_each(|u| check_sentinel_url(u))
            .map_err(|m| ("redis_sentinels", m))
    }
}

/// URLs redacted: they may hold a password.
impl fmt::Debug for L2Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            L2Target::None => f.write_str("None"),
            L2Target::Url(u) => write!(
                f,
                "Url({})",
                crate::l2::conn::shown_urls(std::slice::from_ref(u))
            ),
            L2Target::Cluster(n) => write!(f, "Cluster({})", crate::l2::conn::shown_urls(n)),
            // As the `redis+sentinel://` URL it makes: both passwords masked, the rest shown.
            L2Target::Sentinel { .. } => {
                let (urls, _) = self.urls().unwrap_or_default();
                write!(f, "Sentinel({})", crate::l2::conn::shown_urls(&urls))
            }
        }
    }
}

/// The PEM of a CA certificate (shown as `<PEM>`).
#[derive(Clone, PartialEq)]
pub(crate) struct Pem(pub(crate) Vec<u8>);

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<PEM>")
    }
}

/// A kind's settings in one layer: its TTL (always set by code, optional in a file) and the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KindLayer {
    pub(crate) ttl: Option<Duration>,
    pub(crate) opts: KindOptions,
}

impl KindLayer {
    fn over(self, lower: &KindLayer) -> KindLayer {
        KindLayer {
            ttl: self.ttl.or(lower.ttl),
            opts: self.opts.over(&lower.opts),
        }
    }
}

/// One layer of settings (code, the environment, a config file); `None`: not set by this layer.
/// Field names follow the builder's methods, which are also the config file's keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Settings {
    pub(crate) l2: Option<L2Target>,
    pub(crate) tls_root_cert: Option<Pem>,
    pub(crate) enabled: Option<bool>,
    pub(crate) prefix: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) l1_max_bytes: Option<u64>,
    pub(crate) l2_connect_timeout: Option<Duration>,
    pub(crate) l2_timeout: Option<Duration>,
    pub(crate) breaker_failure_threshold: Option<u32>,
    pub(crate) breaker_cooldown_min: Option<Duration>,
    pub(crate) breaker_cooldown_max: Option<Duration>,
    pub(crate) compress_threshold: Option<usize>,
    pub(crate) compression_level: Option<i32>,
    pub(crate) max_value_bytes: Option<usize>,
    pub(crate) fail_safe_grace: Option<Duration>,
    pub(crate) backplane: Option<bool>,
    pub(crate) unsynced_l1_ttl: Option<Duration>,
    pub(crate) invalidation_tombstone_ttl: Option<Duration>,
    pub(crate) stats_report_interval: Option<Duration>,
    pub(crate) ttl_jitter: Option<f64>,
    pub(crate) breaker_open_l1_ttl: Option<Duration>,
    pub(crate) distributed_lock_ttl: Option<Duration>,
    pub(crate) distributed_lock_wait: Option<Duration>,
    pub(crate) max_pending_invalidations: Option<usize>,
    pub(crate) unregistered_kind_ttl: Option<Duration>,
    pub(crate) event_buffer: Option<usize>,
    /// Kinds in the order first set; one entry per kind.
    pub(crate) kinds: Vec<(Kind, KindLayer)>,
}

impl Settings {
    /// Each setting of `self`, and `lower`'s where `self` has none; kinds setting by setting.
    pub(crate) fn over(self, lower: &Settings) -> Settings {
        let Settings {
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
        } = self;
        let mut merged_kinds = lower.kinds.clone();
        for (kind, layer) in kinds {
            match merged_kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some(slot) => slot.1 = layer.over(&slot.1),
                None => merged_kinds.push((kind, layer)),
            }
        }
        Settings {
            l2: l2.or_else(|| lower.l2.clone()),
            tls_root_cert: tls_root_cert.or_else(|| lower.tls_root_cert.clone()),
            enabled: enabled.or(lower.enabled),
            prefix: prefix.or_else(|| lower.prefix.clone()),
            name: name.or_else(|| lower.name.clone()),
            l1_max_bytes: l1_max_bytes.or(lower.l1_max_bytes),
            l2_connect_timeout: l2_connect_timeout.or(lower.l2_connect_timeout),
            l2_timeout: l2_timeout.or(lower.l2_timeout),
            breaker_failure_threshold: breaker_failure_threshold
                .or(lower.breaker_failure_threshold),
            breaker_cooldown_min: breaker_cooldown_min.or(lower.breaker_cooldown_min),
            breaker_cooldown_max: breaker_cooldown_max.or(lower.breaker_cooldown_max),
            compress_threshold: compress_threshold.or(lower.compress_threshold),
            compression_level: compression_level.or(lower.compression_level),
            max_value_bytes: max_value_bytes.or(lower.max_value_bytes),
            fail_safe_grace: fail_safe_grace.or(lower.fail_safe_grace),
            backplane: backplane.or(lower.backplane),
            unsynced_l1_ttl: unsynced_l1_ttl.or(lower.unsynced_l1_ttl),
            invalidation_tombstone_ttl: invalidation_tombstone_ttl
                .or(lower.invalidation_tombstone_ttl),
            stats_report_interval: stats_report_interval.or(lower.stats_report_interval),
            ttl_jitter: ttl_jitter.or(lower.ttl_jitter),
            breaker_open_l1_ttl: breaker_open_l1_ttl.or(lower.breaker_open_l1_ttl),
            distributed_lock_ttl: distributed_lock_ttl.or(lower.distributed_lock_ttl),
            distributed_lock_wait: distributed_lock_wait.or(lower.distributed_lock_wait),
            max_pending_invalidations: max_pending_invalidations
                .or(lower.max_pending_invalidations),
            unregistered_kind_ttl: unregistered_kind_ttl.or(lower.unregistered_kind_ttl),
            event_buffer: event_buffer.or(lower.event_buffer),
            kinds: merged_kinds,
        }
    }

    /// The keys this layer sets (for the log line naming what code overrides).
    pub(crate) fn keys(&self) -> Vec<Key> {
        let Settings {
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
        } = self;
        let top = [
            // Or redis_cluster_urls, redis_sentinels: one setting, where L2 is.
            ("redis_url", l2.is_some()),
            ("redis_tls_ca_file", tls_root_cert.is_some()),
            ("enabled", enabled.is_some()),
            ("prefix", prefix.is_some()),
            ("name", name.is_some()),
            ("l1_max_bytes", l1_max_bytes.is_some()),
            ("l2_connect_timeout", l2_connect_timeout.is_some()),
            ("l2_timeout", l2_timeout.is_some()),
            (
                "breaker_failure_threshold",
                breaker_failure_threshold.is_some(),
            ),
            ("breaker_cooldown_min", breaker_cooldown_min.is_some()),
            ("breaker_cooldown_max", breaker_cooldown_max.is_some()),
            ("compress_threshold", compress_threshold.is_some()),
            ("compression_level", compression_level.is_some()),
            ("max_value_bytes", max_value_bytes.is_some()),
            ("fail_safe_grace", fail_safe_grace.is_some()),
            ("backplane", backplane.is_some()),
            ("unsynced_l1_ttl", unsynced_l1_ttl.is_some()),
            (
                "invalidation_tombstone_ttl",
                invalidation_tombstone_ttl.is_some(),
            ),
            ("stats_report_interval", stats_report_interval.is_some()),
            ("ttl_jitter", ttl_jitter.is_some()),
            ("breaker_open_l1_ttl", breaker_open_l1_ttl.is_some()),
            ("distributed_lock_ttl", distributed_lock_ttl.is_some()),
            ("distributed_lock_wait", distributed_lock_wait.is_some()),
            (
                "max_pending_invalidations",
                max_pending_invalidations.is_some(),
            ),
            ("unregistered_kind_ttl", unregistered_kind_ttl.is_some()),
            ("event_buffer", event_buffer.is_some()),
        ];
        let mut keys: Vec<Key> = top
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| Key::top(k))
            .collect();
        for (kind, layer) in kinds {
            let KindOptions {
                l1_ttl,
                tiers,
                freshness,
                ttl_jitter,
                schema,
                load_cost,
                hit_rate_target,
            } = &layer.opts;
            let set = [
                ("ttl", layer.ttl.is_some()),
                ("l1_ttl", l1_ttl.is_some()),
                ("tiers", tiers.is_some()),
                ("eager_refresh", freshness.refresh_at.is_some()),
                ("xfetch", freshness.xfetch_beta.is_some()),
                ("soft_timeout", freshness.soft_timeout.is_some()),
                ("hard_timeout", freshness.hard_timeout.is_some()),
                ("distributed_lock", freshness.lock.is_some()),
                ("ttl_jitter", ttl_jitter.is_some()),
                ("schema", schema.is_some()),
                ("load_cost", load_cost.is_some()),
                ("hit_rate_target", hit_rate_target.is_some()),
            ];
            keys.extend(
                set.into_iter()
                    .filter(|(_, s)| *s)
                    .map(|(f, _)| Key::kind(kind.name(), Some(f))),
            );
        }
        keys
    }

    /// Sets `kind` in this layer, replacing what the layer had for it.
    pub(crate) fn set_kind(&mut self, kind: Kind, layer: KindLayer) {
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some(slot) => slot.1 = layer,
            None => self.kinds.push((kind, layer)),
        }
    }
}

/// A setting's name: a builder method's, which is also its config file key (`l1_max_bytes`,
/// `kinds.api_response.ttl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// A cache-wide setting.
    Top(&'static str),
    /// A kind (`field` `None`: the kind's name itself) or one of its settings.
    Kind {
        kind: String,
        field: Option<&'static str>,
    },
}

impl Key {
    pub(crate) fn top(name: &'static str) -> Key {
        Key::Top(name)
    }

    pub(crate) fn kind(kind: &str, field: Option<&'static str>) -> Key {
        Key::Kind {
            kind: kind.to_owned(),
            field,
        }
    }

    /// The path of tables to the key in a config file.
    pub(crate) fn path(&self) -> Vec<&str> {
        match self {
            Key::Top(k) => vec![k],
            Key::Kind { kind, field } => {
                let mut p = vec!["kinds", kind.as_str()];
                p.extend(field);
                p
            }
        }
    }
}

/// As a TOML dotted key: `kinds.api_response.ttl`, `kinds."v2.answers".ttl`.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.path().into_iter().map(toml_key).collect();
        f.write_str(&parts.join("."))
    }
}

/// `part` as one part of a TOML dotted key: as is when it is a bare key, quoted otherwise.
pub(crate) fn toml_key(part: &str) -> String {
    let bare = !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        part.to_owned()
    } else {
        format!("{part:?}")
    }
}

/// A setting that is not valid, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Invalid {
    pub(crate) key: Key,
    pub(crate) message: String,
}

impl Invalid {
    fn new(key: Key, message: impl Into<String>) -> Self {
        Invalid {
            key,
            message: message.into(),
        }
    }
}

/// Every setting of a cache, resolved: what `build()` composes the cache from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub(crate) l2: L2Target,
    /// PEM of the CA that signed the Redis server's certificate (`rediss://`); none: system roots.
    pub(crate) tls_root_cert: Option<Pem>,
    pub(crate) prefix: String,
    /// `None`: the prefix.
    pub(crate) name: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) l1_max_bytes: u64,
    pub(crate) connect_timeout: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) breaker: BreakerConfig,
    pub(crate) codec: CodecConfig,
    pub(crate) grace: Duration,
    pub(crate) unregistered_ttl: Duration,
    /// The kinds any layer set, by name (the built-in ones not set anywhere are added by
    /// `Kinds::new`).
    pub(crate) kinds: Vec<(Kind, KindConfig)>,
    pub(crate) backplane: bool,
    pub(crate) unsynced_l1_ttl: Duration,
    pub(crate) tombstone_ttl: Duration,
    pub(crate) stats_report_interval: Duration,
    pub(crate) ttl_jitter: f64,
    pub(crate) breaker_open_l1_ttl: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    pub(crate) max_pending_invalidations: usize,
    pub(crate) event_buffer: usize,
}

impl Config {
    /// `settings` (the layers already merged) over the defaults.
    ///
    /// # Errors
    /// A kind with no TTL in any layer that is not a built-in kind (`kinds.NAME.ttl`).
    pub(crate) fn resolve(settings: Settings) -> Result<Config, Invalid> {
        let Settings {
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
        } = settings;
        let breaker = BreakerConfig::default();
        let codec = CodecConfig::default();
        let kinds = kinds
            .into_iter()
            .map(|(kind, layer)| {
                let ttl = layer.ttl.or_else(|| kind.default_ttl()).ok_or_else(|| {
                    Invalid::new(
                        Key::kind(kind.name(), Some("ttl")),
                        format!(
                            "kind {:?} has no TTL: it is not a built-in kind, so give it one \
                             (its `ttl` key in the config file, or CacheBuilder::kind)",
                            kind.name()
                        ),
                    )
                })?;
                Ok((kind, KindConfig::from_parts(ttl, layer.opts)))
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        let mut kinds = kinds;
        kinds.sort_by(|(a, _), (b, _)| a.name().cmp(b.name()));
        Ok(Config {
            l2: l2.unwrap_or(L2Target::None),
            tls_root_cert,
            prefix: prefix.unwrap_or_else(|| crate::DEFAULT_PREFIX.into()),
            name,
            enabled: enabled.unwrap_or(true),
            l1_max_bytes: l1_max_bytes.unwrap_or(64 << 20),
            connect_timeout: l2_connect_timeout.unwrap_or(Duration::from_millis(250)),
            op_timeout: l2_timeout.unwrap_or(Duration::from_millis(100)),
            breaker: BreakerConfig {
                failure_threshold: breaker_failure_threshold.unwrap_or(breaker.failure_threshold),
                cooldown_min: breaker_cooldown_min.unwrap_or(breaker.cooldown_min),
                cooldown_max: breaker_cooldown_max.unwrap_or(breaker.cooldown_max),
            },
            codec: CodecConfig {
                compress_threshold: compress_threshold.unwrap_or(codec.compress_threshold),
                compress_level: compression_level.unwrap_or(codec.compress_level),
                max_value_bytes: max_value_bytes.unwrap_or(codec.max_value_bytes),
            },
            grace: fail_safe_grace.unwrap_or(Duration::ZERO),
            unregistered_ttl: unregistered_kind_ttl.unwrap_or(Duration::from_secs(300)),
            kinds,
            backplane: backplane.unwrap_or(true),
            unsynced_l1_ttl: unsynced_l1_ttl.unwrap_or(Duration::from_secs(5)),
            tombstone_ttl: invalidation_tombstone_ttl.unwrap_or(Duration::from_secs(60)),
            stats_report_interval: stats_report_interval.unwrap_or(Duration::from_secs(5)),
            ttl_jitter: ttl_jitter.unwrap_or(0.0),
            breaker_open_l1_ttl: breaker_open_l1_ttl.unwrap_or(Duration::from_secs(5)),
            lock_ttl: distributed_lock_ttl.unwrap_or(Duration::from_secs(10)),
            lock_wait: distributed_lock_wait.unwrap_or(Duration::from_secs(10)),
            max_pending_invalidations: max_pending_invalidations.unwrap_or(10_000),
            event_buffer: event_buffer.unwrap_or(events::DEFAULT_EVENT_BUFFER),
        })
    }

    /// Checks every setting; the error names the first invalid one.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let top = |k: &'static str, m: String| Err(Invalid::new(Key::top(k), m));
        if let Err((key, m)) = self.l2.check() {
            return top(key, m);
        }
        if !key::is_valid_name(&self.prefix) {
            return top(
                "prefix",
                format!(
                    "prefix {:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'",
                    self.prefix
                ),
            );
        }
        if let Some(name) = self.name.as_deref().filter(|n| !key::is_valid_name(n)) {
            return top(
                "name",
                format!("name {name:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'"),
            );
        }
        if self.l1_max_bytes == 0 {
            return top("l1_max_bytes", "the L1 byte budget must be above 0".into());
        }
        if self.op_timeout.is_zero() {
            return top("l2_timeout", "L2 timeouts must be above 0".into());
        }
        if self.connect_timeout.is_zero() {
            return top("l2_connect_timeout", "L2 timeouts must be above 0".into());
        }
        if self.breaker.failure_threshold == 0 {
            return top(
                "breaker_failure_threshold",
                "the breaker failure threshold must be at least 1".into(),
            );
        }
        if self.breaker.cooldown_min.is_zero() {
            return top(
                "breaker_cooldown_min",
                "breaker cool-down: need 0 < min <= max".into(),
            );
        }
        if self.breaker.cooldown_max < self.breaker.cooldown_min {
            return top(
                "breaker_cooldown_max",
                "breaker cool-down: need 0 < min <= max".into(),
            );
        }
        if self.codec.max_value_bytes == 0 || self.codec.max_value_bytes > u32::MAX as usize {
            return top(
                "max_value_bytes",
                "max value size must be between 1 byte and 4 GiB".into(),
            );
        }
        for (k, cfg) in &self.kinds {
            validate_kind(k, cfg)?;
        }
        freshness::validate_jitter(self.ttl_jitter).or_else(|m| top("ttl_jitter", m))?;
        if self.breaker_open_l1_ttl.is_zero() {
            return top(
                "breaker_open_l1_ttl",
                "the breaker-open L1 TTL must be above 0".into(),
            );
        }
        if !(1..=events::MAX_EVENT_BUFFER).contains(&self.event_buffer) {
            return top(
                "event_buffer",
                format!(
                    "the event buffer must hold between 1 and {} events",
                    events::MAX_EVENT_BUFFER
                ),
            );
        }
        if self.lock_ttl.is_zero() {
            return top(
                "distributed_lock_ttl",
                "the distributed lock TTL must be above 0".into(),
            );
        }
        if self.tombstone_ttl.is_zero() {
            return top(
                "invalidation_tombstone_ttl",
                "the invalidation tombstone TTL must be above 0".into(),
            );
        }
        if self.unsynced_l1_ttl.is_zero() {
            return top(
                "unsynced_l1_ttl",
                "the unsynced L1 TTL must be above 0".into(),
            );
        }
        if self.unregistered_ttl.is_zero() {
            return top(
                "unregistered_kind_ttl",
                "the unregistered kind TTL must be above 0".into(),
            );
        }
        // Every duration setting, so that no deadline or expiry computed from one overflows.
        for (name, d) in [
            ("fail_safe_grace", self.grace),
            ("invalidation_tombstone_ttl", self.tombstone_ttl),
            ("unsynced_l1_ttl", self.unsynced_l1_ttl),
            ("stats_report_interval", self.stats_report_interval),
            ("breaker_open_l1_ttl", self.breaker_open_l1_ttl),
            ("distributed_lock_ttl", self.lock_ttl),
            ("distributed_lock_wait", self.lock_wait),
            ("unregistered_kind_ttl", self.unregistered_ttl),
            ("l2_timeout", self.op_timeout),
            ("l2_connect_timeout", self.connect_timeout),
            ("breaker_cooldown_max", self.breaker.cooldown_max),
        ] {
            if d > MAX_TTL {
                return top(
                    name,
                    format!("{name} must be at most cache_core::MAX_TTL (100 years), not {d:?}"),
                );
            }
        }
        Ok(())
    }
}

fn validate_kind(k: &Kind, cfg: &KindConfig) -> Result<(), Invalid> {
    let name = k.name();
    let err = |field: Option<&'static str>, m: String| Err(Invalid::new(Key::kind(name, field), m));
    if !key::is_valid_name(name) {
        return err(
            None,
            format!("kind {name:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'"),
        );
    }
    if cfg.ttl().is_zero() {
        return err(Some("ttl"), format!("kind {name:?} has a zero TTL"));
    }
    if cfg.ttl() > MAX_TTL {
        return err(
            Some("ttl"),
            format!("kind {name:?}: TTLs must be at most cache_core::MAX_TTL (100 years)"),
        );
    }
    if cfg.l1_ttl_cap().is_some_and(|t| t > MAX_TTL) {
        return err(
            Some("l1_ttl"),
            format!("kind {name:?}: TTLs must be at most cache_core::MAX_TTL (100 years)"),
        );
    }
    if cfg
        .schema_id()
        .is_some_and(|s| s.is_empty() || s.len() > 128)
    {
        return err(
            Some("schema"),
            format!("kind {name:?}: a schema name must be 1-128 bytes"),
        );
    }
    if cfg
        .cost_per_load()
        .is_some_and(|c| !c.is_finite() || c < 0.0)
    {
        return err(
            Some("load_cost"),
            format!("kind {name:?}: load_cost must be a finite number >= 0"),
        );
    }
    if cfg
        .target_hit_rate()
        .is_some_and(|t| !(t > 0.0 && t <= 1.0))
    {
        return err(
            Some("hit_rate_target"),
            format!("kind {name:?}: hit_rate_target must be in (0, 1]"),
        );
    }
    if let Err((field, m)) = cfg.freshness().validate() {
        return err(Some(field), format!("kind {name:?}: {m}"));
    }
    if let Some(Err(m)) = cfg.jitter().map(freshness::validate_jitter) {
        return err(Some("ttl_jitter"), format!("kind {name:?}: {m}"));
    }
    Ok(())
}

/// Parses a byte size: a number of bytes, or one followed by K, M, G or T (or KiB, MiB, GiB,
/// TiB; powers of 1024, any case, a space allowed before the unit). `64MB` is refused rather
/// than guessed (10^6 or 2^20?).
pub(crate) fn parse_bytes(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => Some(0),
        "k" | "ki" | "kib" => Some(10),
        "m" | "mi" | "mib" => Some(20),
        "g" | "gi" | "gib" => Some(30),
        "t" | "ti" | "tib" => Some(40),
        _ => None,
    };
    shift
        .and_then(|s| num.parse::<u64>().ok()?.checked_mul(1 << s))
        .ok_or_else(|| {
            format!(
                "{v:?} is not a byte size: write a number of bytes, or one with K, M, G (or \
                 KiB, MiB, GiB), powers of 1024: 67108864, 64M, 64MiB"
            )
        })
}

/// Parses a boolean as the environment writes them: true/false, 1/0, yes/no, on/off.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
