//! The config file: every key maps to its builder setting, errors name the file, line and key,
//! and the shipped sample (`cache.example.toml`) is true.

use super::*;
use crate::builder::CacheBuilder;
use crate::kind::KindConfig;

/// The sample shipped at the repository's root.
const SAMPLE: &str = include_str!("../../../../cache.example.toml");

/// Writes `text` as `cache.toml` in a fresh directory.
fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

/// The message of the error reading `text` (with `cache.toml` standing for the file's path).
fn error_of(text: &str) -> String {
    let (_dir, path) = write(text);
    match read(&path) {
        Ok(s) => panic!("accepted {text:?} as {s:?}"),
        Err(Error::Config(m)) => m.replace(&path.display().to_string(), "cache.toml"),
        Err(e) => panic!("{e:?}"),
    }
}

fn config_of(path: &Path) -> Config {
    CacheBuilder::new()
        .config_file(path)
        .expect("config file")
        .config()
        .expect("valid")
}

#[test]
fn unknown_keys_are_errors_naming_the_file_the_line_and_the_key() {
    let m = error_of("prefix = \"app\"\nprefx = \"app\"\n");
    assert!(
        m.starts_with("cache.toml:2:1: prefx: unknown field `prefx`"),
        "{m}"
    );
    let m = error_of("[kinds.api_response]\nttl = \"5m\"\ntll = \"5m\"\n");
    assert!(
        m.starts_with("cache.toml:3:1: kinds.api_response.tll: unknown field `tll`"),
        "{m}"
    );
    assert!(m.contains("expected one of `ttl`"), "lists the keys: {m}");
    let m = error_of("[redis]\nurl = \"redis://x:1\"\n");
    assert!(
        m.starts_with("cache.toml:1:2: redis: unknown field `redis`"),
        "{m}"
    );
}

#[test]
fn values_of_the_wrong_type_or_unit_are_errors_naming_the_key() {
    for (text, start, says) in [
        (
            "l1_max_bytes = \"64MB\"",
            "cache.toml:1:16: l1_max_bytes: ",
            "powers of 1024",
        ),
        (
            "l1_max_bytes = -1",
            "cache.toml:1:16: l1_max_bytes: ",
            "below 0",
        ),
        (
            "[kinds.api_response]\nttl = 300",
            "cache.toml:2:7: kinds.api_response.ttl: ",
            "expected a duration such as \"250ms\"",
        ),
        (
            "[kinds.api_response]\nttl = \"5 parsecs\"",
            "cache.toml:2:7: kinds.api_response.ttl: ",
            "\"5 parsecs\" is not a duration",
        ),
        (
            "[kinds.api_response]\ntiers = \"l3\"",
            "cache.toml:2:9: kinds.api_response.tiers: ",
            "unknown variant `l3`, expected one of `both`, `l1_only`, `l2_only`",
        ),
        (
            "breaker_failure_threshold = -1",
            "cache.toml:1:29: breaker_failure_threshold: ",
            "expected u32",
        ),
        (
            "enabled = \"yes\"",
            "cache.toml:1:11: enabled: ",
            "expected a boolean",
        ),
        (
            "redis_cluster_urls = [\"redis://a:1\", 2]",
            "cache.toml:1:38: redis_cluster_urls[1]: ",
            "expected a string",
        ),
    ] {
        let m = error_of(text);
        assert!(m.starts_with(start) && m.contains(says), "{text:?}: {m}");
    }
}

#[test]
fn values_out_of_range_are_errors_naming_the_key_and_its_line() {
    for (text, start) in [
        (
            "[kinds.api_response]\nttl = \"5m\"\neager_refresh = 1.5\n",
            "cache.toml:3:17: kinds.api_response.eager_refresh: kind \"api_response\": eager refresh fraction 1.5",
        ),
        (
            "[kinds.api_response]\nttl = \"200years\"\n",
            "cache.toml:2:7: kinds.api_response.ttl: kind \"api_response\": TTLs must be at most cache_core::MAX_TTL",
        ),
        (
            "[kinds.api_response]\nttl = \"0s\"\n",
            "cache.toml:2:7: kinds.api_response.ttl: kind \"api_response\" has a zero TTL",
        ),
        (
            "[kinds.api_response]\nsoft_timeout = \"5s\"\nhard_timeout = \"1s\"\n",
            "cache.toml:2:16: kinds.api_response.soft_timeout: kind \"api_response\": the soft loader timeout (5s)",
        ),
        (
            "[kinds.\"has space\"]\nttl = \"1m\"\n",
            "cache.toml:1:1: kinds.\"has space\": kind \"has space\" must be 1-64 ASCII letters",
        ),
        ("ttl_jitter = 1.0\n", "cache.toml:1:14: ttl_jitter: TTL jitter 1 must be"),
        (
            "prefix = \"has space\"\n",
            "cache.toml:1:10: prefix: prefix \"has space\" must be",
        ),
        (
            "l1_max_bytes = 0\n",
            "cache.toml:1:16: l1_max_bytes: the L1 byte budget must be above 0",
        ),
        (
            "breaker_cooldown_min = \"2s\"\nbreaker_cooldown_max = \"1s\"\n",
            "cache.toml:2:24: breaker_cooldown_max: breaker cool-down: need 0 < min <= max",
        ),
        (
            "fail_safe_grace = \"101years\"\n",
            "cache.toml:1:19: fail_safe_grace: fail_safe_grace must be at most cache_core::MAX_TTL",
        ),
        (
            "redis_url = \"redis://a:1\"\nredis_cluster_urls = [\"redis://b:1\"]\n",
            "cache.toml:2:22: redis_cluster_urls: set one of redis_url (one server), redis_cluster_urls",
        ),
        (
            "redis_cluster_urls = [\"redis://b:1\"]\nredis_sentinels = [\"s\"]\n",
            "cache.toml:2:19: redis_sentinels: set one of redis_url",
        ),
        (
            "redis_sentinels = [\"s\"]\n",
            "cache.toml:1:19: redis_sentinels: redis_sentinel_master is missing",
        ),
        (
            "redis_sentinel_master = \"m\"\n",
            "cache.toml:1:25: redis_sentinel_master: redis_sentinel_master is a setting of Redis Sentinel",
        ),
        (
            "redis_url = \"redis://a:1\"\nredis_password = \"pw\"\n",
            "cache.toml:2:18: redis_password: redis_password is a setting of Redis Sentinel",
        ),
        (
            "redis_sentinels = []\nredis_sentinel_master = \"m\"\n",
            "cache.toml:1:19: redis_sentinels: no sentinel",
        ),
        (
            "redis_sentinels = [\"s:1\", \"s:x\"]\nredis_sentinel_master = \"m\"\n",
            "cache.toml:1:19: redis_sentinels: sentinel 2 of 2 is not `host[:port]`",
        ),
        (
            "redis_sentinels = [\"s\"]\nredis_sentinel_master = \" \"\n",
            "cache.toml:2:25: redis_sentinel_master: the name of the master",
        ),
        (
            "redis_url = \"\"\n",
            "cache.toml:1:13: redis_url: an empty URL",
        ),
    ] {
        let m = error_of(text);
        assert!(m.starts_with(start), "{text:?}:\n  got  {m}\n  want {start}");
    }
}

#[test]
fn syntax_errors_and_unreadable_files_name_the_file() {
    let m = error_of("prefix = \"app\"\nl2_timeout = \n");
    assert!(m.starts_with("cache.toml:2:"), "{m}");
    let m = error_of("[kinds.api_response]\nttl = \"1m\"\n[kinds.api_response]\n");
    assert!(m.starts_with("cache.toml:3:"), "a duplicate table: {m}");
    let missing = Path::new("/nonexistent/cache.toml");
    let err = read(missing).unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.starts_with("/nonexistent/cache.toml: cannot read")),
        "{err}"
    );
}

#[test]
fn a_relative_tls_ca_file_is_read_from_the_files_directory() {
    let (dir, path) = write("redis_tls_ca_file = \"certs/ca.pem\"\n");
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(
        dir.path().join("certs/ca.pem"),
        b"-----BEGIN CERTIFICATE-----\n",
    )
    .unwrap();
    let c = config_of(&path);
    assert_eq!(
        c.tls_root_cert,
        Some(Pem(b"-----BEGIN CERTIFICATE-----\n".to_vec()))
    );
    let m = error_of("redis_tls_ca_file = \"missing.pem\"\n");
    assert!(
        m.starts_with("cache.toml:1:21: redis_tls_ca_file: cannot read ")
            && m.contains("missing.pem"),
        "{m}"
    );
}

/// Every key, each at a value other than its default.
const FULL: &str = r#"redis_url = "redis://cache.internal:6380/2"
redis_tls_ca_file = "ca.pem"
enabled = false
prefix = "shop"
name = "shop-api"
l1_max_bytes = "96MiB"
l2_connect_timeout = "300ms"
l2_timeout = "40ms"
breaker_failure_threshold = 7
breaker_cooldown_min = "300ms"
breaker_cooldown_max = "3s"
compress_threshold = "2K"
compression_level = 3
max_value_bytes = "8MiB"
fail_safe_grace = "30s"
backplane = false
unsynced_l1_ttl = "6s"
invalidation_tombstone_ttl = "90s"
stats_report_interval = "15s"
ttl_jitter = 0.05
breaker_open_l1_ttl = "4s"
distributed_lock_ttl = "20s"
distributed_lock_wait = "25s"
max_pending_invalidations = 500
unregistered_kind_ttl = "2m"
event_buffer = 4096

[kinds.api_response]
ttl = "7m"
l1_ttl = "1m"
tiers = "l1_only"
eager_refresh = 0.75
xfetch = 1.5
soft_timeout = "150ms"
hard_timeout = "3s"
distributed_lock = true
ttl_jitter = 0.2
schema = "api-v4"
load_cost = 0.01
hit_rate_target = 0.95
"#;

/// FULL, and the same in code: each key must set the builder setting of its name (two keys
/// swapped, or one ignored, would differ).
#[test]
fn every_key_sets_the_builder_setting_of_its_name() {
    let (dir, path) = write(FULL);
    std::fs::write(dir.path().join("ca.pem"), b"PEM").unwrap();
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let code = CacheBuilder::new()
        .redis_url("redis://cache.internal:6380/2")
        .redis_tls_root_cert(b"PEM".to_vec())
        .enabled(false)
        .prefix("shop")
        .name("shop-api")
        .l1_max_bytes(96 << 20)
        .l2_connect_timeout(ms(300))
        .l2_timeout(ms(40))
        .breaker_failure_threshold(7)
        .breaker_cooldown(ms(300), s(3))
        .compress_threshold(2048)
        .compression_level(3)
        .max_value_bytes(8 << 20)
        .fail_safe_grace(s(30))
        .backplane(false)
        .unsynced_l1_ttl(s(6))
        .invalidation_tombstone_ttl(s(90))
        .stats_report_interval(s(15))
        .ttl_jitter(0.05)
        .breaker_open_l1_ttl(s(4))
        .distributed_lock_ttl(s(20))
        .distributed_lock_wait(s(25))
        .max_pending_invalidations(500)
        .unregistered_kind_ttl(s(120))
        .event_buffer(4096)
        .kind(
            Kind::API_RESPONSE,
            KindConfig::new(s(420))
                .l1_ttl(s(60))
                .tiers(Tiers::L1Only)
                .eager_refresh(0.75)
                .xfetch(1.5)
                .soft_timeout(ms(150))
                .hard_timeout(s(3))
                .distributed_lock(true)
                .ttl_jitter(0.2)
                .schema("api-v4")
                .load_cost(0.01)
                .hit_rate_target(0.95),
        );
    let layer = read(&path).unwrap();
    assert!(
        !format!("{layer:?}").contains("None"),
        "FULL sets every setting: {layer:?}"
    );
    assert_eq!(config_of(&path), code.config().unwrap());
    let (_d, other) = write("[kinds.\"llm.answer\"]\nttl = \"1day\"\ntiers = \"l2_only\"\n");
    assert_eq!(
        config_of(&other),
        CacheBuilder::new()
            .kind(
                Kind::new("llm.answer"),
                KindConfig::new(s(86_400)).tiers(Tiers::L2Only)
            )
            .config()
            .unwrap()
    );
    let cluster = write("redis_cluster_urls = [\"redis://a:7000\", \"redis://b:7000\"]\n");
    assert_eq!(
        config_of(&cluster.1).l2,
        CacheBuilder::new()
            .redis_cluster(["redis://a:7000", "redis://b:7000"])
            .config()
            .unwrap()
            .l2
    );
}

/// The Sentinel keys, and the same in code (the credentials only a URL carries there).
#[test]
fn the_sentinel_keys_set_the_sentinel_target() {
    let (_dir, path) = write(
        "redis_sentinels = [\"10.0.0.1\", \"10.0.0.2:26380\"]\nredis_sentinel_master = \"mymaster\"\n",
    );
    assert_eq!(
        config_of(&path).l2,
        CacheBuilder::new()
            .redis_sentinel(["10.0.0.1", "10.0.0.2:26380"], "mymaster")
            .config()
            .unwrap()
            .l2
    );
    let (_dir, path) = write(
        "redis_sentinels = [\"10.0.0.1\", \"10.0.0.2:26380\"]\nredis_sentinel_master = \"mymaster\"\n\
         redis_username = \"cache\"\nredis_password = \"node-pw\"\n\
         redis_sentinel_username = \"watcher\"\nredis_sentinel_password = \"sentinel-pw\"\n\
         redis_sentinel_tls = true\n",
    );
    let l2 = config_of(&path).l2;
    assert_eq!(
        l2.urls(),
        Some((
            vec![
                "rediss+sentinel://cache:node%2Dpw@10.0.0.1,10.0.0.2:26380/mymaster\
                  ?sentinel_username=watcher&sentinel_password=sentinel%2Dpw"
                    .to_owned()
            ],
            false
        ))
    );
    let shown = format!("{l2:?}");
    for password in ["node-pw", "node%2Dpw", "sentinel-pw", "sentinel%2Dpw"] {
        assert!(!shown.contains(password), "{shown}");
    }
}

#[test]
fn the_sample_file_sets_the_six_built_in_kinds_at_their_built_in_ttls_and_nothing_else() {
    let (_dir, path) = write(SAMPLE);
    let mut expected = CacheBuilder::new();
    for (kind, secs) in Kind::BUILT_IN {
        expected = expected.kind(kind, KindConfig::new(Duration::from_secs(secs)));
    }
    let sample = config_of(&path);
    assert_eq!(sample, expected.config().unwrap());
    assert_eq!(sample.kinds.len(), 6);
}

/// The sample's `#key = value` lines, uncommented: each shows its setting's default, or where
/// there is none the example named here.
#[test]
fn the_sample_file_uncommented_sets_the_defaults_and_examples_it_shows() {
    let uncommented: String = SAMPLE
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let changed = SAMPLE
        .lines()
        .zip(uncommented.lines())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed >= 30,
        "the sample's settings are commented out as `#key = value`"
    );
    let (dir, path) = write(&uncommented);
    std::fs::write(dir.path().join("redis-ca.pem"), b"PEM").unwrap();
    let s = Duration::from_secs;
    let expected = CacheBuilder::new()
        // No default: examples.
        .redis_url("redis://127.0.0.1:6379")
        .redis_tls_root_cert(b"PEM".to_vec())
        .name("myapp-api")
        .kind(
            Kind::MODEL_DATA,
            KindConfig::new(s(3600))
                .tiers(Tiers::L2Only)
                .load_cost(0.002),
        )
        .kind(
            Kind::SESSION_DATA,
            KindConfig::new(s(1800)).l1_ttl(s(30)).schema("session-v1"),
        )
        .kind(
            Kind::API_RESPONSE,
            KindConfig::new(s(300))
                .eager_refresh(0.8)
                .soft_timeout(Duration::from_millis(200))
                .hard_timeout(s(5))
                .hit_rate_target(0.9),
        )
        .kind(
            Kind::DATABASE_QUERY,
            KindConfig::new(s(600))
                .distributed_lock(true)
                .ttl_jitter(0.1),
        )
        .kind(
            Kind::HEAVY_COMPUTATION,
            KindConfig::new(s(1800)).xfetch(1.0).distributed_lock(true),
        )
        .kind(
            Kind::STATIC_DATA,
            KindConfig::new(s(7200)).tiers(Tiers::Both),
        );
    // Everything else at the default: the commented values are the defaults.
    assert_eq!(config_of(&path), expected.config().unwrap());
}

#[test]
fn the_sample_shows_every_key() {
    let mut in_kind = false;
    for line in FULL.lines() {
        in_kind |= line.starts_with("[kinds.");
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        let shown = if in_kind {
            SAMPLE.contains(&format!("#   {key} "))
        } else {
            SAMPLE.contains(&format!("\n#{key} = ")) || SAMPLE.contains(&format!("\n# {key} = "))
        };
        assert!(shown, "cache.example.toml does not show `{key}`");
    }
}

/// The ```toml blocks of `text` (lines with `strip` removed first, for rustdoc comments).
fn toml_blocks(text: &str, strip: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_start().strip_prefix(strip).unwrap_or(line);
        let line = line.strip_prefix(' ').unwrap_or(line);
        match (&mut current, line.trim_end()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_config_excerpts_of_the_readme_and_the_rustdoc_parse() {
    // Every TOML block of the README is a config file but the Cargo manifest excerpts.
    let readme: Vec<String> = toml_blocks(include_str!("../../../../README.md"), "")
        .into_iter()
        .filter(|b| !b.contains("[dependencies]"))
        .collect();
    let rustdoc = toml_blocks(include_str!("../../builder.rs"), "///");
    assert!(!readme.is_empty() && !rustdoc.is_empty());
    for block in readme.iter().chain(&rustdoc) {
        let (_dir, path) = write(block);
        config_of(&path);
    }
}

#[test]
fn errors_never_show_the_source_line_that_may_hold_a_password() {
    for text in [
        "redis_url = \"redis://app:s3cret-pw@cache:6379\nprefix = \"app\"\n",
        "redis_url = \"redis://app:s3cret-pw@cache:6379\" extra\n",
        "redis_url = \"redis://app:s3cret-pw@cache:6379\"\nredis_url = \"redis://app:s3cret-pw@other:6379\"\n",
        "redis_url = \"redis://app:s3cret-pw@cache:6379\"\nredis_cluster_urls = [\"redis://app:s3cret-pw@c:1\"]\n",
        "redis_url = [\"redis://app:s3cret-pw@cache:6379\"]\n",
    ] {
        let m = error_of(text);
        assert!(!m.contains("s3cret"), "{m}");
    }
}
