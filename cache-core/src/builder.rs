//! `CacheBuilder`: every setting of a [`Cache`], from code, the environment or a config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;
use crate::coherence::{Coherence, CoherenceConfig};
use crate::config::{self, Config, Invalid, Key, KindLayer, L2Target, Pem, Settings};
use crate::entry_store::EntryStore;
use crate::error::{Error, Result};
use crate::events::EventBus;
use crate::history::{History, Reading};
use crate::inner::Inner;
use crate::kind::{Kind, KindConfig, Kinds};
use crate::l1::L1;
use crate::l2::{L2Config, SentinelAuth, L2};
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
///
/// # Where settings come from
/// Each setting is taken from the first of these that sets it:
///
/// 1. **code**: this builder's methods, whenever they are called (before or after
///    [`from_env`](Self::from_env) or [`config_file`](Self::config_file));
/// 2. **the environment** ([`from_env`](Self::from_env): `REDIS_URL`, `CACHE_PREFIX`, ...);
/// 3. **config files** ([`config_file`](Self::config_file), or the file named by `CACHE_CONFIG`
///    for `from_env`), a file read later over one read earlier;
/// 4. the defaults (each method's doc says its default).
///
/// Kinds merge setting by setting: a kind registered in code with
/// [`kind`](Self::kind) takes its TTL, and each setting its `KindConfig` sets, from code, and its
/// other settings from the file (`[kinds.NAME]`); a built-in kind the file does not mention keeps
/// its built-in TTL. A kind only in the file is registered by it (a kind that is not built in
/// needs its `ttl` there). `build()` logs a warning naming every file or environment setting
/// that code overrides.
#[derive(Clone)]
#[must_use]
pub struct CacheBuilder {
    /// What this builder's methods set: wins over everything else.
    code: Settings,
    /// What environment variables set (`from_env`).
    env: Settings,
    /// What config files set (`CACHE_CONFIG`, `config_file`), later files over earlier ones.
    file: Settings,
    /// The config files read, in order (named in messages).
    files: Vec<PathBuf>,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Each layer's settings; passwords in URLs are redacted and certificates not shown.
impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("code", &self.code)
            .field("env", &self.env)
            .field("files", &self.files)
            .field("file", &self.file)
            .finish()
    }
}

impl CacheBuilder {
    /// A builder with every default.
    pub fn new() -> Self {
        Self {
            code: Settings::default(),
            env: Settings::default(),
            file: Settings::default(),
            files: Vec::new(),
        }
    }

    /// The environment variables [`from_env`](Self::from_env) reads, and no other: every setting
    /// a deployment can give the cache through its environment. Deployment recipes can check the
    /// variables they set against it (this repository's `deploy/` is, in
    /// `tests/deploy_recipes.rs`).
    ///
    /// ```
    /// assert!(cache_core::CacheBuilder::ENV_VARS.contains(&"CACHE_L1_MAX_BYTES"));
    /// assert!(cache_core::CacheBuilder::ENV_VARS.contains(&"CACHE_CONFIG"));
    /// ```
    pub const ENV_VARS: &'static [&'static str] = config::env::VARS;

    /// A builder from environment variables (unset or empty ones keep their defaults), and from
    /// the config file `CACHE_CONFIG` names, if set, below them (see
    /// [`config_file`](Self::config_file)):
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `CACHE_CONFIG` | a TOML config file ([`config_file`](Self::config_file)); variables override its settings | unset |
    /// | `REDIS_URL` | `redis://[user:password@]host:port[/db]`; unset means L1-only | unset |
    /// | `REDIS_CLUSTER_URLS` | comma-separated node URLs of a Redis Cluster (instead of `REDIS_URL`) | unset |
    /// | `REDIS_SENTINELS` / `REDIS_SENTINEL_MASTER` | Redis Sentinel (instead of the two above): comma-separated sentinel `host[:port]`s (port 26379 when omitted), and the master's name ([`redis_sentinel`](Self::redis_sentinel)) | unset |
    /// | `REDIS_USERNAME` / `REDIS_PASSWORD` | with `REDIS_SENTINELS`: the Redis nodes' credentials (ignored otherwise: a URL carries its own) | unset |
    /// | `REDIS_SENTINEL_USERNAME` / `REDIS_SENTINEL_PASSWORD` | with `REDIS_SENTINELS`: the sentinels' own credentials, when they require a password | unset |
    /// | `REDIS_SENTINEL_TLS` | with `REDIS_SENTINELS`: `true` for TLS to the sentinels and the nodes (needs the `tls` feature) | `false` |
    /// | `REDIS_TLS_CA_FILE` | PEM file of the CA trusted for `rediss://` (default: system roots) | unset |
    /// | `CACHE_ENABLED` | `false` turns caching off (loaders always run) | `true` |
    /// | `CACHE_PREFIX` | key prefix (namespace) of this application | `cache` |
    /// | `CACHE_L1_MAX_BYTES` | L1 byte budget, e.g. `67108864`, `64M` or `64MiB` | `64M` |
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
    /// | `CACHE_EVENT_BUFFER` | events buffered for the subscribers of [`Cache::events`] | `1024` |
    ///
    /// Settings made in code on the returned builder override both.
    ///
    /// # Errors
    /// [`Error::Config`] naming the malformed variable, or the config file, line and key.
    pub fn from_env() -> Result<Self> {
        Self::new().with_env(&|name| std::env::var(name).ok())
    }

    /// `from_env` over the variables `var` gives.
    pub(crate) fn with_env(mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(path) = var("CACHE_CONFIG").filter(|p| !p.trim().is_empty()) {
            self = self.config_file(path.trim())?;
        }
        self.env = config::env::read(var)?;
        Ok(self)
    }

    /// Reads the settings of a TOML config file: every builder setting, and each kind's settings
    /// in a `[kinds.NAME]` table, keyed by the methods' names (but `redis_cluster_urls`,
    /// `redis_sentinels` / `redis_sentinel_master` and the Sentinel credentials,
    /// `redis_tls_ca_file` and `breaker_cooldown_min` / `_max`). The environment and code override
    /// them (see [Where settings come from](Self#where-settings-come-from)); a file read later
    /// overrides one read earlier. The repository's `cache.example.toml` shows every key.
    ///
    /// ```toml
    /// redis_url = "redis://127.0.0.1:6379"
    /// l1_max_bytes = "256MiB"     # or a number of bytes; K, M, G are powers of 1024
    /// l2_timeout = "100ms"        # durations: "250ms", "5m", "1h 30m"
    ///
    /// [kinds.api_response]        # a built-in kind: every key optional
    /// ttl = "10m"
    /// eager_refresh = 0.8
    ///
    /// [kinds.llm_answer]          # a kind of the application's: registered by the file
    /// ttl = "1day"
    /// tiers = "l2_only"           # "both", "l1_only" or "l2_only"
    /// schema = "answer-v2"
    /// ```
    ///
    /// A relative `redis_tls_ca_file` is read from the file's directory. The file is read and
    /// checked now; its kinds' TTLs, like every setting, then change with a restart, without a
    /// rebuild.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("cache-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let path = dir.join("cache.toml");
    /// std::fs::write(&path, "prefix = \"from-file\"\nl1_max_bytes = \"8M\"\n[kinds.api_response]\nttl = \"42s\"\n")?;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache = cache_core::Cache::builder()
    ///     .l1_max_bytes(16 << 20) // code wins, even when called before the file is read
    ///     .config_file(&path)?
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.prefix(), "from-file");
    /// assert_eq!(cache.stats().total.l1.max_bytes, 16 << 20);
    /// # Ok::<_, cache_core::Error>(())
    /// # }).unwrap();
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read, is not TOML, has an unknown key or a
    /// value of the wrong type or out of range; the message names the file, the line and column,
    /// and the key (`cache.toml:12:7: kinds.api_response.ttl: ...`).
    pub fn config_file(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let layer = config::file::read(path)?;
        self.file = layer.over(&self.file);
        self.files.push(path.to_owned());
        Ok(self)
    }

    /// The Redis URL of L2 (`redis://[user:password@]host:port[/db]`, or `rediss://` with the
    /// `tls` feature; `redis+sentinel://` for Redis Sentinel, see
    /// [`redis_sentinel`](Self::redis_sentinel)). Default: none (L1-only).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.code.l2 = Some(L2Target::Url(url.into()));
        self
    }

    /// A Redis Cluster as L2, from the URLs of some of its nodes (the client discovers the
    /// others). Credentials come from the URLs. Default: none.
    pub fn redis_cluster(mut self, nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.code.l2 = Some(L2Target::Cluster(
            nodes.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Redis Sentinel as L2: the sentinels' addresses (`host[:port]`, port 26379 when omitted;
    /// `[v6]:port`) and the name of the master they monitor. The cache uses the master the
    /// sentinels name and follows it across failovers (README, "Redis Sentinel"). With
    /// passwords (the nodes', the sentinels') or TLS, give a `redis+sentinel://` URL to
    /// [`redis_url`](Self::redis_url) instead, or set them in the environment
    /// ([`from_env`](Self::from_env)) or a config file ([`config_file`](Self::config_file)).
    /// Default: none.
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
        mut self,
        sentinels: impl IntoIterator<Item = impl Into<String>>,
        master: impl AsRef<str>,
    ) -> Self {
        self.code.l2 = Some(L2Target::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master: master.as_ref().to_owned(),
            node_auth: SentinelAuth::default(),
            sentinel_auth: SentinelAuth::default(),
            tls: false,
        });
        self
    }

    /// Trusts this CA (PEM) for `rediss://` connections instead of the system's root certificates:
    /// for a Redis whose certificate is signed by a private CA. Needs the `tls` feature to take
    /// effect. Default: the system roots.
    pub fn redis_tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.code.tls_root_cert = Some(Pem(pem.into()));
        self
    }

    /// Runs without L2 even if a URL was set (in code, the environment or a config file). Default:
    /// L2 when a URL is set.
    pub fn no_l2(mut self) -> Self {
        self.code.l2 = Some(L2Target::None);
        self
    }

    /// The key prefix (namespace) of this application: ASCII letters, digits, `_`, `-`, `.`.
    /// Caches with different prefixes never see each other's keys. Default: `cache`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.code.prefix = Some(prefix.into());
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
        self.code.name = Some(name.into());
        self
    }

    /// `false` turns caching off: loaders always run, nothing is stored. Default: `true`.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.code.enabled = Some(enabled);
        self
    }

    /// The L1 budget in bytes of memory, as the allocator hands it out (malloc chunks, headers and
    /// rounding included): each entry weighs its key, its value's heap (estimated by walking the
    /// value's `Serialize` impl: strings, buffers, collections and maps, each allocation rounded
    /// as glibc malloc rounds it) and ~500 bytes of per-entry bookkeeping (moka's and ours,
    /// measured). Spare capacity in a value's strings and vectors cannot be seen and comes on top.
    /// Default: 64 MiB.
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.code.l1_max_bytes = Some(bytes);
        self
    }

    /// How long connecting to Redis may take. Default: 250 ms.
    pub fn l2_connect_timeout(mut self, d: Duration) -> Self {
        self.code.l2_connect_timeout = Some(d);
        self
    }

    /// The deadline of each Redis operation: a hung Redis delays a caller at most this long.
    /// Default: 100 ms (loopback round trips take ~0.1 ms; leave room for a loaded network).
    pub fn l2_timeout(mut self, d: Duration) -> Self {
        self.code.l2_timeout = Some(d);
        self
    }

    /// Consecutive L2 failures (errors or timeouts) that open the circuit breaker. Default: 5.
    pub fn breaker_failure_threshold(mut self, n: u32) -> Self {
        self.code.breaker_failure_threshold = Some(n);
        self
    }

    /// The breaker's cool-down before a probe: starts at `min`, doubles after each failed probe up
    /// to `max`, ±20% jitter. A probe is one PING from a background task (no caller waits for it);
    /// while invalidations wait for replay it is sent every 100 ms whatever the cool-down. Default:
    /// 250 ms to 1 s.
    pub fn breaker_cooldown(mut self, min: Duration, max: Duration) -> Self {
        self.code.breaker_cooldown_min = Some(min);
        self.code.breaker_cooldown_max = Some(max);
        self
    }

    /// Values whose MessagePack form is at least this many bytes are zstd-compressed in L2 (never
    /// in L1). Default: 1024.
    pub fn compress_threshold(mut self, bytes: usize) -> Self {
        self.code.compress_threshold = Some(bytes);
        self
    }

    /// zstd level. Default: 1 (level 3 gains ~5% of size for 20-25% more time).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.code.compression_level = Some(level);
        self
    }

    /// Largest value (MessagePack bytes) written to or accepted from L2; larger values are not
    /// written (counted as `oversized`) and larger stored values read as misses. Default: 16 MiB.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.code.max_value_bytes = Some(bytes);
        self
    }

    /// Fail-safe: keep entries this long past their TTL; when a loader fails and such a stale value
    /// exists, it is served (and counted as `stale_served`). Default: 0 (off).
    pub fn fail_safe_grace(mut self, grace: Duration) -> Self {
        self.code.fail_safe_grace = Some(grace);
        self
    }

    /// Registers a kind (or overrides a built-in one). A second call for the same kind replaces
    /// the first. Its TTL, and each setting `cfg` sets, win over a config file's for the kind;
    /// the settings `cfg` leaves unset come from the file.
    pub fn kind(mut self, kind: Kind, cfg: KindConfig) -> Self {
        let (ttl, opts) = cfg.into_parts();
        self.code.set_kind(
            kind,
            KindLayer {
                ttl: Some(ttl),
                opts,
            },
        );
        self
    }

    /// Cross-instance L1 invalidation over Redis pub/sub (channel `{prefix}:bp`). Turn it off only
    /// for a single instance. Default: on when an L2 is configured.
    pub fn backplane(mut self, on: bool) -> Self {
        self.code.backplane = Some(on);
        self
    }

    /// While the backplane is not subscribed (other instances' invalidations cannot arrive), new
    /// L1 entries live at most this long. Default: 5 s.
    pub fn unsynced_l1_ttl(mut self, ttl: Duration) -> Self {
        self.code.unsynced_l1_ttl = Some(ttl);
        self
    }

    /// How long the tombstone that `invalidate` leaves in L2 lives. It must outlast any load
    /// (loads that began before the invalidation and end while the tombstone exists cannot store).
    /// Default: 60 s.
    pub fn invalidation_tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.code.invalidation_tombstone_ttl = Some(ttl);
        self
    }

    /// How often this instance publishes its stats snapshot to Redis (`{prefix}:stats:{instance}`,
    /// expiring after three intervals), where `cachectl stats` and `cachectl health` read it.
    /// `Duration::ZERO` turns publishing off. Default: 5 s.
    pub fn stats_report_interval(mut self, every: Duration) -> Self {
        self.code.stats_report_interval = Some(every);
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
        self.code.ttl_jitter = Some(fraction);
        self
    }

    /// While the circuit breaker is open (L2 skipped), entries stored in L1 live at most this long:
    /// invalidations made by other instances cannot reach this one meanwhile. Default: 5 s.
    pub fn breaker_open_l1_ttl(mut self, ttl: Duration) -> Self {
        self.code.breaker_open_l1_ttl = Some(ttl);
        self
    }

    /// How long a distributed lock (see
    /// [`KindConfig::distributed_lock`](crate::KindConfig::distributed_lock)) lives unless
    /// released: the time after which other instances stop waiting on a holder that died. Set it
    /// above your loaders' usual time (a load that outlives its lock may be duplicated). Default:
    /// 10 s.
    pub fn distributed_lock_ttl(mut self, ttl: Duration) -> Self {
        self.code.distributed_lock_ttl = Some(ttl);
        self
    }

    /// The longest a load waits for another instance's distributed lock before calling its own
    /// loader. Default: 10 s.
    pub fn distributed_lock_wait(mut self, wait: Duration) -> Self {
        self.code.distributed_lock_wait = Some(wait);
        self
    }

    /// How many invalidations (one per key or tag) are kept while L2 is unreachable, to replay
    /// when it is back; further ones are dropped and counted in
    /// [`Stats::pending_invalidations`](crate::Stats::pending_invalidations). Default: 10 000.
    pub fn max_pending_invalidations(mut self, max: usize) -> Self {
        self.code.max_pending_invalidations = Some(max);
        self
    }

    /// The TTL used for kinds that were never registered. Default: 300 s.
    pub fn unregistered_kind_ttl(mut self, ttl: Duration) -> Self {
        self.code.unregistered_kind_ttl = Some(ttl);
        self
    }

    /// How many events ([`Cache::events`]) are buffered for the subscribers, rounded up to a
    /// power of two, between 1 and [`MAX_EVENT_BUFFER`](crate::events::MAX_EVENT_BUFFER). A
    /// subscriber that falls further behind loses the oldest events it had not read (counted in
    /// [`Stats::events`](crate::Stats::events)); the cache never waits for a subscriber. The buffer
    /// (about 100 bytes per event) is allocated by the first subscription. Default:
    /// [`DEFAULT_EVENT_BUFFER`](crate::events::DEFAULT_EVENT_BUFFER) (1,024).
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.code.event_buffer = Some(events);
        self
    }

    /// The settings of every layer resolved and checked.
    pub(crate) fn config(&self) -> Result<Config> {
        let merged = self.code.clone().over(&self.env).over(&self.file);
        Config::resolve(merged)
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|inv| self.explain(inv))
    }

    /// An invalid setting as an error naming where it was set.
    fn explain(&self, inv: Invalid) -> Error {
        let Invalid { key, message } = inv;
        // A layer is to blame for a key it sets, or for a kind it declares without the TTL no
        // other layer gives.
        let by = |layer: &Settings| {
            layer.keys().contains(&key)
                || matches!(&key, Key::Kind { kind, field: Some("ttl") }
                    if layer.kinds.iter().any(|(k, _)| k.name() == kind))
        };
        if !by(&self.code) && !by(&self.env) && by(&self.file) {
            Error::Config(format!("{}: {key}: {message}", self.file_names()))
        } else {
            Error::Config(format!("{key}: {message}"))
        }
    }

    fn file_names(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        names.join(", ")
    }

    /// Logs the environment and file settings that code overrides (a TTL edited in the file that
    /// does not take effect should not go unnoticed).
    fn warn_overridden(&self) {
        for (source, keys) in self.overridden() {
            tracing::warn!(
                settings = %keys.join(", "),
                "settings from {source} are overridden by the ones set in code (CacheBuilder)"
            );
        }
    }

    /// The settings of the environment and of the config files that code overrides, by source.
    fn overridden(&self) -> Vec<(String, Vec<String>)> {
        let code = self.code.keys();
        [
            (&self.env, "the environment".to_owned()),
            (&self.file, self.file_names()),
        ]
        .into_iter()
        .filter_map(|(layer, source)| {
            let keys: Vec<String> = layer
                .keys()
                .into_iter()
                .filter(|k| code.contains(k))
                .map(|k| k.to_string())
                .collect();
            (!keys.is_empty()).then_some((source, keys))
        })
        .collect()
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
        let cfg = self.config()?;
        self.warn_overridden();
        let kinds = Arc::new(Kinds::new(
            &cfg.prefix,
            cfg.kinds.iter().cloned(),
            cfg.unregistered_ttl,
        ));
        // A Sentinel target becomes the `redis+sentinel://` URL the L2 reads.
        let (urls, cluster) = cfg.l2.urls().unwrap_or_default();
        let events = Arc::new(EventBus::new(&cfg.prefix, cfg.event_buffer));
        let l2 = if urls.is_empty() {
            None
        } else {
            let l2 = L2::new(&L2Config {
                urls,
                cluster,
                tls_root_cert: cfg.tls_root_cert.clone().map(|p| p.0),
                connect_timeout: cfg.connect_timeout,
                op_timeout: cfg.op_timeout,
                breaker: cfg.breaker.clone(),
                acl_rules: crate::l2::acl::fill(crate::l2::acl::ACL_RULES, &cfg.prefix),
            })?;
            let bus = events.clone();
            l2.breaker
                .observe(Box::new(move |from, to| bus.breaker(from, to)));
            Some(Arc::new(l2))
        };
        let longest_ttl = kinds.longest_ttl().max(Duration::from_secs(3600));
        let l1 = Arc::new(L1::new(cfg.l1_max_bytes, kinds.count(), cfg.grace));
        let coherence = Arc::new(Coherence::new(
            CoherenceConfig {
                prefix: cfg.prefix.clone(),
                tombstone_ttl: cfg.tombstone_ttl,
                breaker_open_l1_ttl: cfg.breaker_open_l1_ttl,
                max_l1_lifetime: longest_ttl.saturating_add(cfg.grace),
                backplane: cfg.backplane,
                unsynced_l1_ttl: cfg.unsynced_l1_ttl,
                max_pending_invalidations: cfg.max_pending_invalidations,
            },
            l1.clone(),
            l2.clone(),
            kinds.clone(),
            events.clone(),
        ));
        let entries = l2.as_ref().map(|l2| {
            EntryStore::new(
                l2.clone(),
                coherence.clone(),
                cfg.codec.clone(),
                cfg.prefix.clone(),
                cfg.grace,
                events.clone(),
            )
        });
        let history = History::new(Reading::take(
            kinds.all().map(|k| (k.id, &k.stats)),
            Default::default(),
        ));
        let inner = Arc::new(Inner {
            name: cfg.name.clone().unwrap_or_else(|| cfg.prefix.clone()),
            history,
            prefix: cfg.prefix.clone(),
            enabled: cfg.enabled,
            kinds,
            l1,
            l2,
            entries,
            coherence,
            flights: crate::flight::Flights::default(),
            refreshing: Claims::default(),
            lock_ttl: cfg.lock_ttl,
            lock_wait: cfg.lock_wait,
            ttl_jitter: cfg.ttl_jitter,
            stats_report_interval: cfg.stats_report_interval,
            events,
        });
        let cache = Cache::from_inner(inner);
        if !cfg.enabled {
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

    /// Builds a cache from the environment and the config file `CACHE_CONFIG` names, if any (see
    /// [`CacheBuilder::from_env`](crate::CacheBuilder::from_env) for the variables).
    ///
    /// # Errors
    /// [`Error::Config`] when a variable or the config file is malformed. An unreachable Redis is not an error: the cache
    /// starts L1-only and connects in the background.
    pub async fn from_env() -> Result<Cache> {
        CacheBuilder::from_env()?.build().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::MAX_TTL;

    #[test]
    fn invalid_settings_are_config_errors() {
        assert!(CacheBuilder::new().prefix("has space").config().is_err());
        assert!(CacheBuilder::new().l1_max_bytes(0).config().is_err());
        assert!(CacheBuilder::new()
            .kind(Kind::new("ok"), KindConfig::new(Duration::ZERO))
            .config()
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
                    .config()
                    .is_err(),
                "{bad:?}"
            );
        }
        assert!(CacheBuilder::new().ttl_jitter(-0.1).config().is_err());
        assert!(CacheBuilder::new()
            .ttl_jitter(0.1)
            .kind(
                Kind::new("k"),
                KindConfig::new(ttl).eager_refresh(0.8).xfetch(1.0)
            )
            .config()
            .is_ok());
        assert!(CacheBuilder::new().config().is_ok());
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
                .config()
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
                matches!(b.config(), Err(Error::Config(m)) if m.contains("MAX_TTL")),
                "{b:?}"
            );
        }
        // MAX_TTL itself is accepted.
        assert!(CacheBuilder::new()
            .kind(Kind::new("k"), KindConfig::new(MAX_TTL))
            .fail_safe_grace(MAX_TTL)
            .config()
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

    #[test]
    fn the_file_and_environment_settings_code_overrides_are_listed_by_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.toml");
        std::fs::write(
            &path,
            "prefix = \"file\"\nl2_timeout = \"50ms\"\n[kinds.api_response]\nttl = \"1m\"\nschema = \"v1\"\n",
        )
        .unwrap();
        let b = CacheBuilder::new()
            .prefix("code")
            .kind(Kind::API_RESPONSE, KindConfig::new(Duration::from_secs(5)))
            .with_env(&|name| {
                [
                    ("CACHE_CONFIG", path.to_str().unwrap()),
                    ("CACHE_L1_MAX_BYTES", "8M"),
                    ("CACHE_PREFIX", "env"),
                ]
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
            })
            .unwrap();
        assert_eq!(
            b.overridden(),
            [
                ("the environment".to_owned(), vec!["prefix".to_owned()]),
                (
                    path.display().to_string(),
                    vec!["prefix".to_owned(), "kinds.api_response.ttl".to_owned()]
                ),
            ]
        );
        assert!(CacheBuilder::new().prefix("code").overridden().is_empty());
    }
}
