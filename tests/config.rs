//! The config file end to end, against a real Redis: `CACHE_CONFIG` read by `Cache::from_env`, a
//! kind's TTL changed in the file changing the TTL (`PTTL`) of the entries written after a
//! restart of the same binary, and the order environment > file, code > both.
//!
//! The tests set process-wide environment variables: they hold `ENV` so that they run one at a
//! time (and nothing else in this binary reads the environment).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cache_core::{Cache, CacheBuilder, Error, Kind, KindConfig};
use cache_tests::{init_tracing, unique_prefix, RedisServer};
use redis::AsyncCommands;

static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds `ENV` with only `vars` set among the variables `from_env` reads
/// (`CacheBuilder::ENV_VARS`), so that none from the machine leaks into a test.
async fn environment(vars: &[(&str, &str)]) -> tokio::sync::MutexGuard<'static, ()> {
    let guard = ENV.lock().await;
    for v in CacheBuilder::ENV_VARS {
        std::env::remove_var(v);
    }
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    guard
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("cache.toml");
    std::fs::write(&path, text).expect("write cache.toml");
    path
}

/// The TTL Redis holds for `key`, in milliseconds.
async fn pttl(server: &RedisServer, key: &str) -> i64 {
    let mut conn = server.conn().await;
    conn.pttl(key).await.expect("PTTL")
}

/// `pttl` is at most `ttl` and less than a few seconds below it (the time the test took since the
/// write, on a busy machine).
fn assert_ttl(pttl: i64, ttl: Duration, what: &str) {
    let ttl = ttl.as_millis() as i64;
    assert!(
        pttl <= ttl && pttl > ttl - 5_000,
        "{what}: PTTL {pttl} ms, expected just under {ttl} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kinds_ttl_changed_in_the_config_file_changes_the_ttl_of_entries_written_after_a_restart()
{
    init_tracing();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("config-ttl");
    let file = |api_ttl: &str| {
        format!(
            "redis_url = \"{}\"\nprefix = \"{prefix}\"\n\n[kinds.api_response]\nttl = \"{api_ttl}\"\n\n\
             [kinds.llm_answer]\nttl = \"2h\"\n",
            server.url()
        )
    };
    let path = write(dir.path(), &file("5m"));
    let _env = environment(&[("CACHE_CONFIG", path.to_str().unwrap())]).await;

    // The application's startup, unchanged between the two runs.
    let start = || async { Cache::from_env().await.expect("from_env") };

    let cache = start().await;
    assert_eq!(cache.prefix(), prefix, "the file's prefix");
    cache.set(Kind::API_RESPONSE, "before", 1u32).await;
    cache.set(Kind::new("llm_answer"), "q", 2u32).await;
    let before = format!("{prefix}:v1:api_response:before");
    assert_ttl(
        pttl(&server, &before).await,
        Duration::from_secs(300),
        "api_response at the file's 5m",
    );
    assert_ttl(
        pttl(&server, &format!("{prefix}:v1:llm_answer:q")).await,
        Duration::from_secs(7200),
        "a kind registered by the file alone",
    );
    drop(cache);

    // An operator edits the TTL; the same binary restarts.
    write(dir.path(), &file("42s"));
    let cache = start().await;
    cache.set(Kind::API_RESPONSE, "after", 1u32).await;
    assert_ttl(
        pttl(&server, &format!("{prefix}:v1:api_response:after")).await,
        Duration::from_secs(42),
        "api_response at the edited 42s",
    );
    assert!(
        pttl(&server, &before).await > 60_000,
        "entries written before keep the TTL they were written with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_overrides_the_file_and_code_overrides_both() {
    init_tracing();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file_prefix = unique_prefix("config-file");
    let env_prefix = unique_prefix("config-env");
    let code_prefix = unique_prefix("config-code");
    let path = write(
        dir.path(),
        &format!(
            "redis_url = \"{}\"\nprefix = \"{file_prefix}\"\nl1_max_bytes = \"8MiB\"\nname = \"from-file\"\n\n\
             [kinds.api_response]\nttl = \"5m\"\n",
            server.url()
        ),
    );
    let _env = environment(&[
        ("CACHE_CONFIG", path.to_str().unwrap()),
        ("CACHE_PREFIX", &env_prefix),
        ("CACHE_L1_MAX_BYTES", "16M"),
    ])
    .await;

    // Environment over file; what the environment leaves comes from the file.
    let cache = Cache::from_env().await.unwrap();
    assert_eq!(cache.prefix(), env_prefix);
    assert_eq!(cache.stats().total.l1.max_bytes, 16 << 20);
    assert_eq!(cache.stats().name, "from-file");
    cache.set(Kind::API_RESPONSE, "k", 1u32).await;
    assert_ttl(
        pttl(&server, &format!("{env_prefix}:v1:api_response:k")).await,
        Duration::from_secs(300),
        "the file's TTL under the environment's prefix",
    );
    drop(cache);

    // Code over both, whether set before or after the file is read.
    let code = |b: CacheBuilder| {
        b.prefix(&code_prefix)
            .l1_max_bytes(32 << 20)
            .kind(Kind::API_RESPONSE, KindConfig::new(Duration::from_secs(60)))
    };
    for builder in [
        code(CacheBuilder::from_env().unwrap()),
        code(Cache::builder())
            .config_file(&path)
            .unwrap()
            .redis_url(server.url()),
    ] {
        let cache = builder.build().await.unwrap();
        assert_eq!(cache.prefix(), code_prefix);
        assert_eq!(cache.stats().total.l1.max_bytes, 32 << 20);
        assert_eq!(
            cache.stats().name,
            "from-file",
            "not set in code: the file's"
        );
        cache.set(Kind::API_RESPONSE, "k", 1u32).await;
        assert_ttl(
            pttl(&server, &format!("{code_prefix}:v1:api_response:k")).await,
            Duration::from_secs(60),
            "code's TTL over the file's",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_file_stops_from_env_with_its_path_line_and_key() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "prefix = \"app\"\n\n[kinds.api_response]\nttl = \"5m\"\nttl_jiter = 0.1\n",
    );
    let _env = environment(&[("CACHE_CONFIG", path.to_str().unwrap())]).await;
    let err = Cache::from_env().await.unwrap_err();
    let Error::Config(m) = &err else {
        panic!("{err:?}")
    };
    assert!(
        m.starts_with(&format!(
            "{}:5:1: kinds.api_response.ttl_jiter: unknown field `ttl_jiter`",
            path.display()
        )),
        "{m}"
    );

    write(
        dir.path(),
        "[kinds.api_response]\nttl = \"5m\"\nhit_rate_target = 1.5\n",
    );
    let err = Cache::from_env().await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "{}:3:19: kinds.api_response.hit_rate_target: ",
            path.display()
        )),
        "{err}"
    );

    let missing = dir.path().join("missing.toml");
    std::env::set_var("CACHE_CONFIG", &missing);
    let err = Cache::from_env().await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{}: cannot read", missing.display())),
        "{err}"
    );
}
