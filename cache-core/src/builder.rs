//! `CacheBuilder`: every setting of a [`Cache`], from code or from the environment.

use std::sync::Arc;
use std::time::Duration;

use crate::breaker::BreakerConfig;
use crate::cache::Cache;
use crate::codec::CodecConfig;
use crate::coherence::{Coherence, CoherenceConfig};
use crate::entry_store::EntryStore;
use crate::error::{Error, Result};
use crate::freshness;
use crate::history::{History, Reading};
use crate::inner::Inner;
use crate::key;
use crate::kind::{Kind, KindConfig, Kinds};
use crate::l1::L1;
use crate::l2::{sentinel_url, L2Config, SentinelAuth, L2};
use crate::options::MAX_TTL;
use crate::refresh::Claims;

/// Builds a [`Cache`].
///
/// ```
/// use cache_core::{Cache, Kind, KindConfig, Tiers};
/// use std::time::Duration;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = Cache::builder()
///     .prefix("myapp")
///     .l1_max_bytes(32 * 1024 * 1024)
///     // .redis_url("redis://127.0.0.1:6379")
///     .kind(Kind::new("llm_answer"), KindConfig::new(Duration::from_secs(86_400)))
///     .kind(Kind::new("token"), KindConfig::new(Duration::from_secs(60)).tiers(Tiers::L1Only))
///     .build()
///     .await?;
/// assert_eq!(cache.prefix(), "myapp");
/// # Ok::<_, cache_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
#[must_use]
pub struct CacheBuilder {
    /// One URL, or the seed nodes of a cluster; empty: L1-only.
    l2_urls: Vec<String>,
    cluster: bool,
    /// PEM of the CA that signed the Redis server's certificate (`rediss://`); none: system roots.
    tls_root_cert: Option<Vec<u8>>,
    prefix: String,
    /// `None`: the prefix.
    name: Option<String>,
    enabled: bool,
    l1_max_bytes: u64,
    connect_timeout: Duration,
    op_timeout: Duration,
    breaker: BreakerConfig,
    codec: CodecConfig,
    grace: Duration,
    unregistered_ttl: Duration,
    kinds: Vec<(Kind, KindConfig)>,
    backplane: bool,
    unsynced_l1_ttl: Duration,
    tombstone_ttl: Duration,
    stats_report_interval: Duration,
    ttl_jitter: f64,
    breaker_open_l1_ttl: Duration,
    lock_ttl: Duration,
    lock_wait: Duration,
    max_pending_invalidations: usize,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_env<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match env_var(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::Config(format!("{name}={v:?} is not a valid number"))),
    }
}

/// The Sentinel URL the environment describes (`REDIS_SENTINELS` and `REDIS_SENTINEL_MASTER`,
/// with credentials and TLS from their own variables); `None` when it describes none.
fn sentinel_from_env() -> Result<Option<String>> {
    let (sentinels, master) = match (env_var("REDIS_SENTINELS"), env_var("REDIS_SENTINEL_MASTER")) {
        (None, None) => return Ok(None),
        (Some(s), Some(m)) => (s, m),
        _ => {
            return Err(Error::Config(
                "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together".into(),
            ))
        }
    };
    if env_var("REDIS_URL").is_some() || env_var("REDIS_CLUSTER_URLS").is_some() {
        return Err(Error::Config(
            "set REDIS_SENTINELS or REDIS_URL / REDIS_CLUSTER_URLS, not both".into(),
        ));
    }
    let auth = |user: &str, password: &str| SentinelAuth {
        username: env_var(user),
        password: env_var(password),
    };
    let tls = match env_var("REDIS_SENTINEL_TLS") {
        Some(v) => parse_bool("REDIS_SENTINEL_TLS", &v)?,
        None => false,
    };
    let nodes: Vec<String> = sentinels
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Some(sentinel_url(
        &nodes,
        &master,
        &auth("REDIS_USERNAME", "REDIS_PASSWORD"),
        &auth("REDIS_SENTINEL_USERNAME", "REDIS_SENTINEL_PASSWORD"),
        tls,
    )))
}

/// Parses a byte size: a number with an optional K, M or G suffix (powers of 1024).
fn parse_bytes(name: &str, v: &str) -> Result<u64> {
    let t = v.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            Error::Config(format!(
                "{name}={v:?} is not a byte size (e.g. 67108864, 64M)"
            ))
        })
}

fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Config(format!(
            "{name}={v:?} is not a boolean (true/false)"
        ))),
    }
}

impl std::fmt::Debug for CacheBuilder {
    /// Passwords in the URLs are redacted (the list as a whole: see `redact_url`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("l2_urls", &crate::l2::conn::shown_urls(&self.l2_urls))
            .field("cluster", &self.cluster)
            .field(
                "tls_root_cert",
                &self.tls_root_cert.as_ref().map(|_| "<PEM>"),
            )
            .field("prefix", &self.prefix)
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("l1_max_bytes", &self.l1_max_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("op_timeout", &self.op_timeout)
            .field("breaker", &self.breaker)
            .field("codec", &self.codec)
            .field("grace", &self.grace)
            .field("kinds", &self.kinds)
            .field("backplane", &self.backplane)
            .finish_non_exhaustive()
    }
}

impl CacheBuilder {
    /// A builder with every default.
    pub fn new() -> Self {
        Self {
            l2_urls: Vec::new(),
            cluster: false,
            tls_root_cert: None,
            prefix: crate::DEFAULT_PREFIX.into(),
            name: None,
            enabled: true,
            l1_max_bytes: 64 << 20,
            connect_timeout: Duration::from_millis(250),
            op_timeout: Duration::from_millis(100),
            breaker: BreakerConfig::default(),
            codec: CodecConfig::default(),
            grace: Duration::ZERO,
            unregistered_ttl: Duration::from_secs(300),
            kinds: Vec::new(),
            backplane: true,
            unsynced_l1_ttl: Duration::from_secs(5),
            tombstone_ttl: Duration::from_secs(60),
            stats_report_interval: Duration::from_secs(5),
            ttl_jitter: 0.0,
            breaker_open_l1_ttl: Duration::from_secs(5),
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(10),
            max_pending_invalidations: 10_000,
        }
    }

    /// A builder from environment variables (unset or empty ones keep their defaults):
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `REDIS_URL` | `redis://[user:password@]host:port[/db]`; unset means L1-only | unset |
    /// | `REDIS_CLUSTER_URLS` | comma-separated node URLs of a Redis Cluster (instead of `REDIS_URL`) | unset |
    /// | `REDIS_SENTINELS` / `REDIS_SENTINEL_MASTER` | Redis Sentinel (instead of the two above): comma-separated sentinel `host[:port]`s (port 26379 when omitted), and the master's name | unset |
    /// | `REDIS_USERNAME` / `REDIS_PASSWORD` | with `REDIS_SENTINELS`: the Redis nodes' credentials (a URL carries its own) | unset |
    /// | `REDIS_SENTINEL_USERNAME` / `REDIS_SENTINEL_PASSWORD` | the sentinels' own credentials, when they require a password | unset |
    /// | `REDIS_SENTINEL_TLS` | `true`: TLS to the sentinels and the nodes (needs the `tls` feature) | `false` |
    /// | `REDIS_TLS_CA_FILE` | PEM file of the CA trusted for `rediss://` (default: system roots) | unset |
    /// | `CACHE_ENABLED` | `false` turns caching off (loaders always run) | `true` |
    /// | `CACHE_PREFIX` | key prefix (namespace) of this application | `cache` |
    /// | `CACHE_L1_MAX_BYTES` | L1 byte budget, e.g. `67108864` or `64M` | `64M` |
    /// | `CACHE_L2_CONNECT_TIMEOUT_MS` | Redis connect timeout | `250` |
    /// | `CACHE_L2_TIMEOUT_MS` | deadline of each Redis operation | `100` |
    /// | `CACHE_COMPRESS_THRESHOLD_BYTES` | compress values at least this large | `1024` |
    /// | `CACHE_MAX_VALUE_BYTES` | largest value written or read | `16M` |
    /// | `CACHE_BREAKER_FAILURES` | consecutive L2 failures that open the breaker | `5` |
    /// | `CACHE_FAIL_SAFE_GRACE_SECS` | keep entries this long past their TTL to serve when a loader fails | `0` |
    /// | `CACHE_TTL_JITTER` | cut every TTL by a random 0 to this fraction (e.g. `0.1`) | `0` |
    /// | `CACHE_BREAKER_OPEN_L1_TTL_MS` | longest L1 lifetime of entries stored while the breaker is open | `5000` |
    /// | `CACHE_LOCK_TTL_MS` / `CACHE_LOCK_WAIT_MS` | distributed lock lifetime / longest wait for it | `10000` |
    /// | `CACHE_MAX_PENDING_INVALIDATIONS` | invalidations kept while Redis is unreachable | `10000` |
    /// | `CACHE_STATS_REPORT_SECS` | how often stats are published for `cachectl` (`0`: never) | `5` |
    ///
    /// # Errors
    /// [`Error::Config`] naming the malformed variable.
    pub fn from_env() -> Result<Self> {
        let mut b = Self::new();
        if let Some(url) = sentinel_from_env()? {
            b = b.redis_url(url);
        } else if let Some(nodes) = env_var("REDIS_CLUSTER_URLS") {
            b = b.redis_cluster(nodes.split(',').map(str::trim).filter(|s| !s.is_empty()));
        } else if let Some(url) = env_var("REDIS_URL") {
            b = b.redis_url(url);
        }
        if let Some(path) = env_var("REDIS_TLS_CA_FILE") {
            let pem = std::fs::read(&path).map_err(|e| {
                Error::Config(format!("REDIS_TLS_CA_FILE: cannot read {path}: {e}"))
            })?;
            b = b.redis_tls_root_cert(pem);
        }
        if let Some(v) = env_var("CACHE_ENABLED") {
            b.enabled = parse_bool("CACHE_ENABLED", &v)?;
        }
        if let Some(v) = env_var("CACHE_PREFIX") {
            b.prefix = v.trim().to_owned();
        }
        if let Some(v) = env_var("CACHE_L1_MAX_BYTES") {
            b.l1_max_bytes = parse_bytes("CACHE_L1_MAX_BYTES", &v)?;
        }
        if let Some(ms) = parse_env::<u64>("CACHE_L2_CONNECT_TIMEOUT_MS")? {
            b.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = parse_env::<u64>("CACHE_L2_TIMEOUT_MS")? {
            b.op_timeout = Duration::from_millis(ms);
        }
        if let Some(v) = env_var("CACHE_COMPRESS_THRESHOLD_BYTES") {
            b.codec.compress_threshold =
                parse_bytes("CACHE_COMPRESS_THRESHOLD_BYTES", &v)? as usize;
        }
        if let Some(v) = env_var("CACHE_MAX_VALUE_BYTES") {
            b.codec.max_value_bytes = parse_bytes("CACHE_MAX_VALUE_BYTES", &v)? as usize;
        }
        if let Some(n) = parse_env::<u32>("CACHE_BREAKER_FAILURES")? {
            b.breaker.failure_threshold = n;
        }
        if let Some(f) = parse_env::<f64>("CACHE_TTL_JITTER")? {
            b = b.ttl_jitter(f);
        }
        if let Some(ms) = parse_env::<u64>("CACHE_BREAKER_OPEN_L1_TTL_MS")? {
            b = b.breaker_open_l1_ttl(Duration::from_millis(ms));
        }
        if let Some(ms) = parse_env::<u64>("CACHE_LOCK_TTL_MS")? {
            b = b.distributed_lock_ttl(Duration::from_millis(ms));
        }
        if let Some(ms) = parse_env::<u64>("CACHE_LOCK_WAIT_MS")? {
            b = b.distributed_lock_wait(Duration::from_millis(ms));
        }
        if let Some(n) = parse_env::<usize>("CACHE_MAX_PENDING_INVALIDATIONS")? {
            b = b.max_pending_invalidations(n);
        }
        if let Some(s) = parse_env::<u64>("CACHE_STATS_REPORT_SECS")? {
            b = b.stats_report_interval(Duration::from_secs(s));
        }
        if let Some(s) = parse_env::<u64>("CACHE_FAIL_SAFE_GRACE_SECS")? {
            b.grace = Duration::from_secs(s);
        }
        Ok(b)
    }

    /// The Redis URL of L2 (`redis://[user:password@]host:port[/db]`, or `rediss://` with the
    /// `tls` feature; `redis+sentinel://` for Redis Sentinel, see
    /// [`redis_sentinel`](Self::redis_sentinel)). Default: none (L1-only).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.l2_urls = vec![url.into()];
        self.cluster = false;
        self
    }

    /// A Redis Cluster as L2, from the URLs of some of its nodes (the client discovers the
    /// others). Credentials come from the URLs. Default: none.
    pub fn redis_cluster(mut self, nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.l2_urls = nodes.into_iter().map(Into::into).collect();
        self.cluster = true;
        self
    }

    /// Redis Sentinel as L2: the sentinels' addresses (`host[:port]`, port 26379 when omitted;
    /// `[v6]:port`) and the name of the master they monitor. The cache uses the master the
    /// sentinels name and follows it across failovers (README, "Redis Sentinel"). With
    /// passwords (the nodes', the sentinels') or TLS, give a `redis+sentinel://` URL to
    /// [`redis_url`](Self::redis_url) instead, or use [`from_env`](Self::from_env). Default: none.
    ///
    /// ```
    /// use cache_core::Cache;
    /// let plain = Cache::builder().redis_sentinel(["10.0.0.1", "10.0.0.2:26380"], "mymaster");
    /// let with_passwords = Cache::builder().redis_url(
    ///     "redis+sentinel://:node-pw@10.0.0.1,10.0.0.2:26380/mymaster?sentinel_password=sentinel-pw",
    /// );
    /// # let _ = (plain, with_passwords);
    /// ```
    pub fn redis_sentinel(
        self,
        sentinels: impl IntoIterator<Item = impl Into<String>>,
        master: impl AsRef<str>,
    ) -> Self {
        let sentinels: Vec<String> = sentinels.into_iter().map(Into::into).collect();
        let none = SentinelAuth::default();
        self.redis_url(sentinel_url(
            &sentinels,
            master.as_ref(),
            &none,
            &none,
            false,
        ))
    }

    /// Trusts this CA (PEM) for `rediss://` connections instead of the system's root certificates:
    /// for a Redis whose certificate is signed by a private CA. Needs the `tls` feature to take
    /// effect. Default: the system roots.
    pub fn redis_tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// Runs without L2 even if a URL was set. Default: L2 when a URL is set.
    pub fn no_l2(mut self) -> Self {
        self.l2_urls.clear();
        self
    }

    /// The key prefix (namespace) of this application: ASCII letters, digits, `_`, `-`, `.`.
    /// Caches with different prefixes never see each other's keys. Default: `cache`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The cache's name in its stats, its Prometheus series (label `cache`, so that two caches
    /// in one process, or in one Prometheus, are told apart) and the dashboard: 1-64 ASCII
    /// letters, digits, `_`, `-` or `.`. Default: the prefix.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let users = cache_core::Cache::builder().prefix("app").name("users").build().await.unwrap();
    /// assert_eq!(users.stats().name, "users");
    /// # });
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `false` turns caching off: loaders always run, nothing is stored. Default: `true`.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The L1 budget in bytes of memory, as the allocator hands it out (malloc chunks, headers and
    /// rounding included): each entry weighs its key, its value's heap (estimated by walking the
    /// value's `Serialize` impl: strings, buffers, collections and maps, each allocation rounded
    /// as glibc malloc rounds it) and ~500 bytes of per-entry bookkeeping (moka's and ours,
    /// measured). Spare capacity in a value's strings and vectors cannot be seen and comes on top.
    /// Default: 64 MiB.
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.l1_max_bytes = bytes;
        self
    }

    /// How long connecting to Redis may take. Default: 250 ms.
    pub fn l2_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The deadline of each Redis operation: a hung Redis delays a caller at most this long.
    /// Default: 100 ms (loopback round trips take ~0.1 ms; leave room for a loaded network).
    pub fn l2_timeout(mut self, d: Duration) -> Self {
        self.op_timeout = d;
        self
    }

    /// Consecutive L2 failures (errors or timeouts) that open the circuit breaker. Default: 5.
    pub fn breaker_failure_threshold(mut self, n: u32) -> Self {
        self.breaker.failure_threshold = n;
        self
    }

    /// The breaker's cool-down before a probe: starts at `min`, doubles after each failed probe up
    /// to `max`, ±20% jitter. A probe is one PING from a background task (no caller waits for it);
    /// while invalidations wait for replay it is sent every 100 ms whatever the cool-down. Default:
    /// 250 ms to 1 s.
    pub fn breaker_cooldown(mut self, min: Duration, max: Duration) -> Self {
        self.breaker.cooldown_min = min;
        self.breaker.cooldown_max = max;
        self
    }

    /// Values whose MessagePack form is at least this many bytes are zstd-compressed in L2 (never
    /// in L1). Default: 1024.
    pub fn compress_threshold(mut self, bytes: usize) -> Self {
        self.codec.compress_threshold = bytes;
        self
    }

    /// zstd level. Default: 1 (level 3 gains ~5% of size for 20-25% more time).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.codec.compress_level = level;
        self
    }

    /// Largest value (MessagePack bytes) written to or accepted from L2; larger values are not
    /// written (counted as `oversized`) and larger stored values read as misses. Default: 16 MiB.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.codec.max_value_bytes = bytes;
        self
    }

    /// Fail-safe: keep entries this long past their TTL; when a loader fails and such a stale value
    /// exists, it is served (and counted as `stale_served`). Default: 0 (off).
    pub fn fail_safe_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Registers a kind (or overrides a built-in one).
    pub fn kind(mut self, kind: Kind, cfg: KindConfig) -> Self {
        self.kinds.push((kind, cfg));
        self
    }

    /// Cross-instance L1 invalidation over Redis pub/sub (channel `{prefix}:bp`). Turn it off only
    /// for a single instance. Default: on when an L2 is configured.
    pub fn backplane(mut self, on: bool) -> Self {
        self.backplane = on;
        self
    }

    /// While the backplane is not subscribed (other instances' invalidations cannot arrive), new
    /// L1 entries live at most this long. Default: 5 s.
    pub fn unsynced_l1_ttl(mut self, ttl: Duration) -> Self {
        self.unsynced_l1_ttl = ttl;
        self
    }

    /// How long the tombstone that `invalidate` leaves in L2 lives. It must outlast any load
    /// (loads that began before the invalidation and end while the tombstone exists cannot store).
    /// Default: 60 s.
    pub fn invalidation_tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// How often this instance publishes its stats snapshot to Redis (`{prefix}:stats:{instance}`,
    /// expiring after three intervals), where `cachectl stats` and `cachectl health` read it.
    /// `Duration::ZERO` turns publishing off. Default: 5 s.
    pub fn stats_report_interval(mut self, every: Duration) -> Self {
        self.stats_report_interval = every;
        self
    }

    /// TTL jitter for every kind without its own
    /// ([`KindConfig::ttl_jitter`](crate::KindConfig::ttl_jitter)): each TTL, in L1 and L2, is cut
    /// by a uniform random 0 to `fraction` of itself (never lengthened), so entries written
    /// together do not expire together. `build()` rejects values outside `[0, 1)`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// // A 600 s TTL becomes 540-600 s.
    /// let cache = cache_core::Cache::builder().ttl_jitter(0.1).build().await?;
    /// # let _ = cache;
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Default: 0 (off).
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.ttl_jitter = fraction;
        self
    }

    /// While the circuit breaker is open (L2 skipped), entries stored in L1 live at most this long:
    /// invalidations made by other instances cannot reach this one meanwhile. Default: 5 s.
    pub fn breaker_open_l1_ttl(mut self, ttl: Duration) -> Self {
        self.breaker_open_l1_ttl = ttl;
        self
    }

    /// How long a distributed lock (see
    /// [`KindConfig::distributed_lock`](crate::KindConfig::distributed_lock)) lives unless
    /// released: the time after which other instances stop waiting on a holder that died. Set it
    /// above your loaders' usual time (a load that outlives its lock may be duplicated). Default:
    /// 10 s.
    pub fn distributed_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// The longest a load waits for another instance's distributed lock before calling its own
    /// loader. Default: 10 s.
    pub fn distributed_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// How many invalidations (one per key or tag) are kept while L2 is unreachable, to replay
    /// when it is back; further ones are dropped and counted in
    /// [`Stats::pending_invalidations`](crate::Stats::pending_invalidations). Default: 10 000.
    pub fn max_pending_invalidations(mut self, max: usize) -> Self {
        self.max_pending_invalidations = max;
        self
    }

    /// The TTL used for kinds that were never registered. Default: 300 s.
    pub fn unregistered_kind_ttl(mut self, ttl: Duration) -> Self {
        self.unregistered_ttl = ttl;
        self
    }

    fn validate(&self) -> Result<()> {
        if !key::is_valid_name(&self.prefix) {
            return Err(Error::Config(format!(
                "prefix {:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'",
                self.prefix
            )));
        }
        if let Some(name) = self.name.as_deref().filter(|n| !key::is_valid_name(n)) {
            return Err(Error::Config(format!(
                "name {name:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'"
            )));
        }
        if self.l1_max_bytes == 0 {
            return Err(Error::Config("the L1 byte budget must be above 0".into()));
        }
        if self.op_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::Config("L2 timeouts must be above 0".into()));
        }
        if self.breaker.failure_threshold == 0 {
            return Err(Error::Config(
                "the breaker failure threshold must be at least 1".into(),
            ));
        }
        if self.breaker.cooldown_min.is_zero()
            || self.breaker.cooldown_max < self.breaker.cooldown_min
        {
            return Err(Error::Config(
                "breaker cool-down: need 0 < min <= max".into(),
            ));
        }
        if self.codec.max_value_bytes == 0 || self.codec.max_value_bytes > u32::MAX as usize {
            return Err(Error::Config(
                "max value size must be between 1 byte and 4 GiB".into(),
            ));
        }
        for (k, cfg) in &self.kinds {
            if !key::is_valid_name(k.name()) {
                return Err(Error::Config(format!(
                    "kind {:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'",
                    k.name()
                )));
            }
            if cfg.ttl().is_zero() {
                return Err(Error::Config(format!("kind {:?} has a zero TTL", k.name())));
            }
            if cfg.ttl() > MAX_TTL || cfg.l1_ttl_cap().is_some_and(|t| t > MAX_TTL) {
                return Err(Error::Config(format!(
                    "kind {:?}: TTLs must be at most cache_core::MAX_TTL (100 years)",
                    k.name()
                )));
            }
            if cfg
                .schema_id()
                .is_some_and(|s| s.is_empty() || s.len() > 128)
            {
                return Err(Error::Config(format!(
                    "kind {:?}: a schema name must be 1-128 bytes",
                    k.name()
                )));
            }
            if cfg
                .cost_per_load()
                .is_some_and(|c| !c.is_finite() || c < 0.0)
            {
                return Err(Error::Config(format!(
                    "kind {:?}: load_cost must be a finite number >= 0",
                    k.name()
                )));
            }
            if cfg
                .target_hit_rate()
                .is_some_and(|t| !(t > 0.0 && t <= 1.0))
            {
                return Err(Error::Config(format!(
                    "kind {:?}: hit_rate_target must be in (0, 1]",
                    k.name()
                )));
            }
            cfg.freshness()
                .validate()
                .and_then(|()| cfg.jitter().map_or(Ok(()), freshness::validate_jitter))
                .map_err(|e| Error::Config(format!("kind {:?}: {e}", k.name())))?;
        }
        freshness::validate_jitter(self.ttl_jitter).map_err(Error::Config)?;
        if self.breaker_open_l1_ttl.is_zero() || self.lock_ttl.is_zero() {
            return Err(Error::Config(
                "the breaker-open L1 TTL and the distributed lock TTL must be above 0".into(),
            ));
        }
        if self.tombstone_ttl.is_zero() || self.unsynced_l1_ttl.is_zero() {
            return Err(Error::Config(
                "the tombstone and unsynced L1 TTLs must be above 0".into(),
            ));
        }
        if self.unregistered_ttl.is_zero() {
            return Err(Error::Config(
                "the unregistered kind TTL must be above 0".into(),
            ));
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
            ("the L2 operation timeout", self.op_timeout),
            ("the L2 connect timeout", self.connect_timeout),
            ("the breaker cool-down", self.breaker.cooldown_max),
        ] {
            if d > MAX_TTL {
                return Err(Error::Config(format!(
                    "{name} must be at most cache_core::MAX_TTL (100 years), not {d:?}"
                )));
            }
        }
        Ok(())
    }

    /// Builds the cache. Must run inside a tokio runtime.
    ///
    /// With an L2 configured, it PINGs Redis once (bounded by the L2 timeouts). When Redis is
    /// unreachable the cache starts L1-only, logs that once, and keeps probing in the background;
    /// it begins using L2 as soon as a probe succeeds.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings or a malformed Redis URL.
    pub async fn build(self) -> Result<Cache> {
        self.validate()?;
        let kinds = Arc::new(Kinds::new(
            &self.prefix,
            self.kinds.iter().cloned(),
            self.unregistered_ttl,
        ));
        let l2 = if self.l2_urls.is_empty() {
            None
        } else {
            Some(Arc::new(L2::new(&L2Config {
                urls: self.l2_urls.clone(),
                cluster: self.cluster,
                tls_root_cert: self.tls_root_cert.clone(),
                connect_timeout: self.connect_timeout,
                op_timeout: self.op_timeout,
                breaker: self.breaker.clone(),
            })?))
        };
        let longest_ttl = kinds.longest_ttl().max(Duration::from_secs(3600));
        let l1 = Arc::new(L1::new(self.l1_max_bytes, kinds.count(), self.grace));
        let coherence = Arc::new(Coherence::new(
            CoherenceConfig {
                prefix: self.prefix.clone(),
                tombstone_ttl: self.tombstone_ttl,
                breaker_open_l1_ttl: self.breaker_open_l1_ttl,
                max_l1_lifetime: longest_ttl.saturating_add(self.grace),
                backplane: self.backplane,
                unsynced_l1_ttl: self.unsynced_l1_ttl,
                max_pending_invalidations: self.max_pending_invalidations,
            },
            l1.clone(),
            l2.clone(),
            kinds.clone(),
        ));
        let entries = l2.as_ref().map(|l2| {
            EntryStore::new(
                l2.clone(),
                coherence.clone(),
                self.codec.clone(),
                self.prefix.clone(),
                self.grace,
            )
        });
        let history = History::new(Reading::take(
            kinds.all().map(|k| (k.id, &k.stats)),
            Default::default(),
        ));
        let inner = Arc::new(Inner {
            name: self.name.clone().unwrap_or_else(|| self.prefix.clone()),
            history,
            prefix: self.prefix.clone(),
            enabled: self.enabled,
            kinds,
            l1,
            l2,
            entries,
            coherence,
            flights: moka::future::Cache::builder().build(),
            refreshing: Claims::default(),
            lock_ttl: self.lock_ttl,
            lock_wait: self.lock_wait,
            ttl_jitter: self.ttl_jitter,
            stats_report_interval: self.stats_report_interval,
        });
        let cache = Cache::from_inner(inner);
        if !self.enabled {
            tracing::info!("caching is disabled (CACHE_ENABLED=false): loaders always run");
        }
        crate::housekeeper::start(&cache.inner).await?;
        Ok(cache)
    }
}

/// The ways to build a [`Cache`] (here rather than in `cache.rs`: the handle does not depend on
/// its construction).
impl Cache {
    /// A builder with every default: L1-only, 64 MiB of L1, prefix `cache`.
    pub fn builder() -> crate::CacheBuilder {
        CacheBuilder::new()
    }

    /// Builds a cache from the environment (see [`CacheBuilder::from_env`](crate::CacheBuilder::from_env)
    /// for the variables).
    ///
    /// # Errors
    /// [`Error::Config`] when a variable is malformed. An unreachable Redis is not an error: the cache
    /// starts L1-only and connects in the background.
    pub async fn from_env() -> Result<Cache> {
        CacheBuilder::from_env()?.build().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_accept_suffixes_and_reject_garbage() {
        assert_eq!(parse_bytes("X", "1024").unwrap(), 1024);
        assert_eq!(parse_bytes("X", "64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("X", "2k").unwrap(), 2048);
        assert!(parse_bytes("X", "lots").is_err());
        assert!(parse_bytes("X", "99999999999G").is_err());
    }

    #[test]
    fn invalid_settings_are_config_errors() {
        assert!(CacheBuilder::new().prefix("has space").validate().is_err());
        assert!(CacheBuilder::new().l1_max_bytes(0).validate().is_err());
        assert!(CacheBuilder::new()
            .kind(Kind::new("ok"), KindConfig::new(Duration::ZERO))
            .validate()
            .is_err());
        let ttl = Duration::from_secs(1);
        for bad in [
            KindConfig::new(ttl).eager_refresh(1.5),
            KindConfig::new(ttl).xfetch(0.0),
            KindConfig::new(ttl)
                .soft_timeout(Duration::from_secs(2))
                .hard_timeout(Duration::from_secs(1)),
            KindConfig::new(ttl).ttl_jitter(1.0),
        ] {
            assert!(
                CacheBuilder::new()
                    .kind(Kind::new("k"), bad.clone())
                    .validate()
                    .is_err(),
                "{bad:?}"
            );
        }
        assert!(CacheBuilder::new().ttl_jitter(-0.1).validate().is_err());
        assert!(CacheBuilder::new()
            .ttl_jitter(0.1)
            .kind(
                Kind::new("k"),
                KindConfig::new(ttl).eager_refresh(0.8).xfetch(1.0)
            )
            .validate()
            .is_ok());
        assert!(CacheBuilder::new().validate().is_ok());
    }

    #[test]
    fn durations_over_max_ttl_are_config_errors() {
        let huge = Duration::MAX;
        let over = MAX_TTL + Duration::from_secs(1);
        for cfg in [
            KindConfig::new(huge),
            KindConfig::new(over),
            KindConfig::new(Duration::from_secs(1)).l1_ttl(huge),
        ] {
            let err = CacheBuilder::new()
                .kind(Kind::new("k"), cfg.clone())
                .validate()
                .expect_err("a TTL over MAX_TTL");
            assert!(
                matches!(&err, Error::Config(m) if m.contains("MAX_TTL")),
                "{err:?}"
            );
        }
        for b in [
            CacheBuilder::new().fail_safe_grace(huge),
            CacheBuilder::new().invalidation_tombstone_ttl(huge),
            CacheBuilder::new().unsynced_l1_ttl(huge),
            CacheBuilder::new().stats_report_interval(huge),
            CacheBuilder::new().breaker_open_l1_ttl(huge),
            CacheBuilder::new().distributed_lock_ttl(huge),
            CacheBuilder::new().distributed_lock_wait(huge),
            CacheBuilder::new().unregistered_kind_ttl(huge),
            CacheBuilder::new().l2_timeout(huge),
            CacheBuilder::new().l2_connect_timeout(huge),
            CacheBuilder::new().breaker_cooldown(Duration::from_secs(1), huge),
        ] {
            assert!(
                matches!(b.validate(), Err(Error::Config(m)) if m.contains("MAX_TTL")),
                "{b:?}"
            );
        }
        // MAX_TTL itself is accepted.
        assert!(CacheBuilder::new()
            .kind(Kind::new("k"), KindConfig::new(MAX_TTL))
            .fail_safe_grace(MAX_TTL)
            .validate()
            .is_ok());
    }

    #[tokio::test]
    async fn the_longest_ttls_store_and_read_without_overflow() {
        let cache = CacheBuilder::new()
            .prefix("max-ttl")
            .kind(Kind::new("forever"), KindConfig::new(MAX_TTL))
            .fail_safe_grace(MAX_TTL)
            .build()
            .await
            .expect("build");
        let forever = Kind::new("forever");
        cache.set(forever.clone(), "kind", 1u32).await;
        let opts = crate::EntryOptions::new().ttl(Duration::MAX);
        cache.set_with(forever.clone(), "call", 2u32, &opts).await;
        let computed = crate::EntryOptions::new().ttl_with(|_: &u32| Duration::MAX);
        cache
            .set_with(forever.clone(), "computed", 3u32, &computed)
            .await;
        let none = crate::EntryOptions::new().none_ttl(Duration::MAX);
        cache
            .set_with(forever.clone(), "none", None::<u32>, &none)
            .await;
        assert_eq!(
            cache.get::<u32>(forever.clone(), "kind").await.as_deref(),
            Some(&1)
        );
        assert_eq!(
            cache.get::<u32>(forever.clone(), "call").await.as_deref(),
            Some(&2)
        );
        assert_eq!(
            cache
                .get::<u32>(forever.clone(), "computed")
                .await
                .as_deref(),
            Some(&3)
        );
        assert_eq!(
            cache.get::<Option<u32>>(forever, "none").await.as_deref(),
            Some(&None)
        );
    }
}
