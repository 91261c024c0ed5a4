//! Resolution of the layers: precedence (code > environment > file > defaults) whatever the order
//! of the calls, kinds merged setting by setting, errors naming where a setting came from.

use super::*;
use crate::builder::CacheBuilder;
use crate::error::Error;
use crate::kind::Tiers;
use std::collections::HashMap;
use std::path::PathBuf;

/// A config file with `text` in a fresh directory (kept alive with the returned guard).
fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn kind<'a>(c: &'a Config, name: &str) -> &'a KindConfig {
    &c.kinds
        .iter()
        .find(|(k, _)| k.name() == name)
        .unwrap_or_else(|| panic!("kind {name} not in {:?}", c.kinds))
        .1
}

#[test]
fn a_builder_with_nothing_set_resolves_to_the_documented_defaults() {
    let c = CacheBuilder::new().config().unwrap();
    assert_eq!(c.l2, L2Target::None);
    assert_eq!(c.prefix, "cache");
    assert_eq!(c.name, None);
    assert!(c.enabled && c.backplane);
    assert_eq!(c.l1_max_bytes, 64 << 20);
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.op_timeout, Duration::from_millis(100));
    assert_eq!(c.breaker, BreakerConfig::default());
    assert_eq!(c.codec, CodecConfig::default());
    assert_eq!(c.grace, Duration::ZERO);
    assert_eq!(c.unregistered_ttl, Duration::from_secs(300));
    assert!(c.kinds.is_empty());
    assert_eq!(c.unsynced_l1_ttl, Duration::from_secs(5));
    assert_eq!(c.tombstone_ttl, Duration::from_secs(60));
    assert_eq!(c.stats_report_interval, Duration::from_secs(5));
    assert_eq!(c.ttl_jitter, 0.0);
    assert_eq!(c.breaker_open_l1_ttl, Duration::from_secs(5));
    assert_eq!(c.lock_ttl, Duration::from_secs(10));
    assert_eq!(c.lock_wait, Duration::from_secs(10));
    assert_eq!(c.max_pending_invalidations, 10_000);
}

#[test]
fn the_environment_overrides_the_file_and_code_overrides_both() {
    let (_dir, path) = file(
        r#"
        prefix = "from-file"
        l1_max_bytes = "8MiB"
        l2_timeout = "70ms"
        stats_report_interval = "9s"
        redis_cluster_urls = ["redis://file-a:7000", "redis://file-b:7000"]
        "#,
    );
    let env = vars(&[
        ("CACHE_CONFIG", path.to_str().unwrap()),
        ("CACHE_PREFIX", "from-env"),
        ("CACHE_L1_MAX_BYTES", "16M"),
        ("REDIS_URL", "redis://env:6379"),
    ]);
    // The file alone (through CACHE_CONFIG), under the environment.
    let c = CacheBuilder::new()
        .with_env(&env)
        .unwrap()
        .config()
        .unwrap();
    assert_eq!(c.prefix, "from-env", "environment over file");
    assert_eq!(c.l1_max_bytes, 16 << 20, "environment over file");
    assert_eq!(c.l2, L2Target::Url("redis://env:6379".into()));
    assert_eq!(c.op_timeout, Duration::from_millis(70), "file over default");
    assert_eq!(c.stats_report_interval, Duration::from_secs(9));
    assert_eq!(c.lock_wait, Duration::from_secs(10), "default");

    // Code, set before the environment and file are read and after: code wins either way.
    let before = CacheBuilder::new()
        .prefix("from-code")
        .l2_timeout(Duration::from_millis(30))
        .with_env(&env)
        .unwrap();
    let after = CacheBuilder::new()
        .with_env(&env)
        .unwrap()
        .prefix("from-code")
        .l2_timeout(Duration::from_millis(30));
    for b in [before, after] {
        let c = b.config().unwrap();
        assert_eq!(c.prefix, "from-code", "code over environment");
        assert_eq!(c.op_timeout, Duration::from_millis(30), "code over file");
        assert_eq!(
            c.l1_max_bytes,
            16 << 20,
            "the environment still sets the rest"
        );
        assert_eq!(c.stats_report_interval, Duration::from_secs(9));
    }

    // `config_file` called after a setter does not undo it either.
    let c = CacheBuilder::new()
        .l1_max_bytes(1 << 20)
        .no_l2()
        .config_file(&path)
        .unwrap()
        .config()
        .unwrap();
    assert_eq!(c.l1_max_bytes, 1 << 20);
    assert_eq!(
        c.l2,
        L2Target::None,
        "no_l2 in code over the file's cluster"
    );
    assert_eq!(c.prefix, "from-file");
}

#[test]
fn a_file_read_later_overrides_one_read_earlier_setting_by_setting() {
    let (_a, base) = file("prefix = \"base\"\nl2_timeout = \"70ms\"\n[kinds.api_response]\nttl = \"1m\"\nschema = \"v1\"\n");
    let (_b, overlay) = file("prefix = \"overlay\"\n[kinds.api_response]\nttl = \"2m\"\n");
    let c = CacheBuilder::new()
        .config_file(&base)
        .unwrap()
        .config_file(&overlay)
        .unwrap()
        .config()
        .unwrap();
    assert_eq!(c.prefix, "overlay");
    assert_eq!(c.op_timeout, Duration::from_millis(70));
    let api = kind(&c, "api_response");
    assert_eq!(api.ttl(), Duration::from_secs(120));
    assert_eq!(api.schema_id(), Some("v1"));
}

#[test]
fn a_kind_registered_in_code_takes_what_code_sets_and_the_rest_from_the_file() {
    let (_dir, path) = file(
        r#"
        [kinds.database_query]
        ttl = "1m"
        tiers = "l2_only"
        load_cost = 0.5
        eager_refresh = 0.7

        [kinds.api_response]
        ttl = "42s"

        [kinds.llm_answer]
        ttl = "1day"
        schema = "answer-v2"
        "#,
    );
    for code_first in [true, false] {
        let code = |b: CacheBuilder| {
            b.kind(
                Kind::DATABASE_QUERY,
                KindConfig::new(Duration::from_secs(600)).eager_refresh(0.9),
            )
        };
        let b = if code_first {
            code(CacheBuilder::new()).config_file(&path).unwrap()
        } else {
            code(CacheBuilder::new().config_file(&path).unwrap())
        };
        let c = b.config().unwrap();
        let db = kind(&c, "database_query");
        assert_eq!(db.ttl(), Duration::from_secs(600), "code's TTL");
        assert_eq!(db.eager_refresh_fraction(), Some(0.9), "code's setting");
        assert_eq!(db.tier_routing(), Tiers::L2Only, "the file's, code left it");
        assert_eq!(db.cost_per_load(), Some(0.5), "the file's, code left it");
        // A built-in kind only the file mentions: the file's TTL.
        assert_eq!(kind(&c, "api_response").ttl(), Duration::from_secs(42));
        // A kind only the file mentions: registered by it.
        let llm = kind(&c, "llm_answer");
        assert_eq!(llm.ttl(), Duration::from_secs(86_400));
        assert_eq!(llm.schema_id(), Some("answer-v2"));
        assert_eq!(llm.tier_routing(), Tiers::Both, "the default");
        assert!(
            c.kinds.iter().all(|(k, _)| k.name() != "static_data"),
            "built-in kinds nobody sets keep their built-in settings (Kinds::new)"
        );
    }
}

#[test]
fn code_tiers_left_at_the_default_do_not_override_the_files() {
    let (_dir, path) = file("[kinds.session_data]\ntiers = \"l1_only\"\n");
    let c = CacheBuilder::new()
        .config_file(&path)
        .unwrap()
        .kind(Kind::SESSION_DATA, KindConfig::new(Duration::from_secs(60)))
        .config()
        .unwrap();
    let s = kind(&c, "session_data");
    assert_eq!(
        (s.ttl(), s.tier_routing()),
        (Duration::from_secs(60), Tiers::L1Only)
    );
    let c = CacheBuilder::new()
        .config_file(&path)
        .unwrap()
        .kind(
            Kind::SESSION_DATA,
            KindConfig::new(Duration::from_secs(60)).tiers(Tiers::Both),
        )
        .config()
        .unwrap();
    assert_eq!(
        kind(&c, "session_data").tier_routing(),
        Tiers::Both,
        "set explicitly"
    );
}

#[test]
fn a_custom_kind_without_a_ttl_anywhere_names_its_key_and_the_file() {
    let (_dir, path) = file("[kinds.llm_answer]\nschema = \"answer-v2\"\n");
    let b = CacheBuilder::new()
        .config_file(&path)
        .expect("code may still give the TTL");
    let err = b.config().unwrap_err();
    let Error::Config(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.contains("kinds.llm_answer.ttl"), "{m}");
    assert!(m.contains(&path.display().to_string()), "{m}");
    // Registered in code, the kind has its TTL and keeps the file's schema.
    let c = b
        .kind(
            Kind::new("llm_answer"),
            KindConfig::new(Duration::from_secs(5)),
        )
        .config()
        .unwrap();
    assert_eq!(kind(&c, "llm_answer").schema_id(), Some("answer-v2"));
}

#[test]
fn an_invalid_combination_across_layers_names_the_key_and_its_source() {
    // Each layer is valid alone; code's hard timeout under the file's soft one is not.
    let (_dir, path) = file("[kinds.api_response]\nsoft_timeout = \"2s\"\n");
    let err = CacheBuilder::new()
        .config_file(&path)
        .unwrap()
        .kind(
            Kind::API_RESPONSE,
            KindConfig::new(Duration::from_secs(60)).hard_timeout(Duration::from_secs(1)),
        )
        .config()
        .unwrap_err();
    let Error::Config(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.contains("kinds.api_response.soft_timeout"), "{m}");
    assert!(m.contains(&path.display().to_string()), "{m}");

    // A value from the environment is named by its key (not blamed on a file).
    let env = vars(&[("CACHE_TTL_JITTER", "2")]);
    let err = CacheBuilder::new()
        .with_env(&env)
        .unwrap()
        .config()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.starts_with("ttl_jitter: ")),
        "{err}"
    );
}

#[test]
fn keys_list_what_a_layer_sets_as_the_file_names_it() {
    let mut layer = Settings {
        prefix: Some("p".into()),
        ttl_jitter: Some(0.1),
        ..Settings::default()
    };
    layer.set_kind(
        Kind::new("v2.answers"),
        KindLayer {
            ttl: Some(Duration::from_secs(1)),
            opts: KindConfig::new(Duration::from_secs(1))
                .schema("s")
                .into_parts()
                .1,
        },
    );
    let shown: Vec<String> = layer.keys().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "prefix",
            "ttl_jitter",
            "kinds.\"v2.answers\".ttl",
            "kinds.\"v2.answers\".schema"
        ]
    );
}

#[test]
fn byte_sizes_accept_binary_units_and_refuse_ambiguous_ones() {
    for (text, bytes) in [
        ("1024", 1024),
        ("64M", 64 << 20),
        ("64MiB", 64 << 20),
        ("64 mib", 64 << 20),
        ("2k", 2048),
        ("2Ki", 2048),
        ("1G", 1 << 30),
        ("3TiB", 3 << 40),
        ("512B", 512),
    ] {
        assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
    }
    for bad in ["lots", "64MB", "1.5M", "-1", "", "M", "99999999999G"] {
        assert!(parse_bytes(bad).is_err(), "{bad:?}");
    }
}
