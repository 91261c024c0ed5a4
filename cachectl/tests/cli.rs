//! The built `cachectl` binary against real redis-servers (and a 3-master cluster), with live
//! `Cache` instances publishing their stats: every command, text and `--json`, exit codes, the
//! confirmation of `clear`, undecodable values, and passwords kept out of every output.

use cache_core::{Cache, EntryOptions, Kind};
use cache_tests::{acl, init_tracing, unique_prefix, RedisCluster, RedisServer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a run of the binary produced.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "cachectl failed: {self:?}");
        self
    }
}

/// Runs `cachectl args...` with `stdin` (closed when `None`), away from the caller's REDIS_* and
/// CACHE_* variables, off the async runtime's worker threads.
async fn cachectl(args: Vec<String>, stdin: Option<&'static str>) -> Run {
    cachectl_env(args, vec![], stdin).await
}

/// [`cachectl`] with these variables set.
async fn cachectl_env(
    args: Vec<String>,
    vars: Vec<(&'static str, String)>,
    stdin: Option<&'static str>,
) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cachectl"))
            .args(&args)
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER_URLS")
            .env_remove("CACHE_PREFIX")
            .env_remove("RUST_LOG")
            .envs(vars)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cachectl");
        if let Some(mut input) = child.stdin.take() {
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).expect("write stdin");
            }
        }
        let out = child.wait_with_output().expect("wait for cachectl");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("cachectl task")
}

/// `--redis-url URL --prefix P` followed by `rest`.
fn args(server: &RedisServer, prefix: &str, rest: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--redis-url".to_owned(),
        server.url(),
        "--prefix".to_owned(),
        prefix.to_owned(),
    ];
    a.extend(rest.iter().map(|s| (*s).to_owned()));
    a
}

async fn instance(server: &RedisServer, prefix: &str) -> Cache {
    init_tracing();
    Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .stats_report_interval(Duration::from_millis(200))
        .build()
        .await
        .expect("build cache")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    langs: Vec<String>,
}

/// Polls `cachectl stats --json` until `done` holds (5 s at most).
async fn stats_until(server: &RedisServer, prefix: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let j = cachectl(args(server, prefix, &["stats", "--json"]), None)
            .await
            .ok()
            .json();
        if done(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "stats never matched: {j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_shows_every_live_instance_and_their_sum() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-stats");
    let (a, b) = (
        instance(&server, &prefix).await,
        instance(&server, &prefix).await,
    );
    // A: 2 loads + 2 L1 hits. B: 2 L2 hits + 1 miss everywhere.
    for i in 0..2u32 {
        let _: Arc<u32> = a
            .get_or_load(Kind::DATABASE_QUERY, &format!("k{i}"), || async move {
                Ok::<_, std::io::Error>(i)
            })
            .await
            .expect("load");
        let _: Option<Arc<u32>> = a.get(Kind::DATABASE_QUERY, &format!("k{i}")).await;
        let _: Option<Arc<u32>> = b.get(Kind::DATABASE_QUERY, &format!("k{i}")).await;
    }
    let _: Option<Arc<u32>> = b.get(Kind::API_RESPONSE, "nothing").await;
    let (sa, sb) = (a.stats().total, b.stats().total);

    let j = stats_until(&server, &prefix, |j| {
        j["instances"].as_array().map(Vec::len) == Some(2)
            && j["total"]["l1_hits"] == sa.l1.hits + sb.l1.hits
            && j["total"]["l2_hits"] == sa.l2.hits + sb.l2.hits
    })
    .await;

    assert_eq!(j["prefix"], prefix.as_str());
    assert_eq!(j["total"]["l1_hits"], 2);
    assert_eq!(j["total"]["l2_hits"], 2);
    assert_eq!(j["total"]["loader_calls"], 2);
    assert_eq!(j["total"]["l1_misses"], sa.l1.misses + sb.l1.misses);
    assert_eq!(j["kinds"]["database_query"]["loader_calls"], 2);
    for inst in j["instances"].as_array().expect("instances") {
        assert_eq!(inst["pid"], std::process::id());
        assert_eq!(inst["stats"]["prefix"], prefix.as_str());
    }
    let text = cachectl(args(&server, &prefix, &["stats"]), None)
        .await
        .ok();
    assert!(
        text.stdout.contains("2 instance(s) reporting"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("TOTAL"));
    assert!(text.stdout.contains("By kind (all instances):"));
    for inst in j["instances"].as_array().expect("instances") {
        let id = inst["instance"].as_str().expect("instance id");
        assert!(text.stdout.contains(id), "{id} missing:\n{}", text.stdout);
    }
    println!("$ cachectl stats\n{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_with_no_instance_says_so() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-empty");
    let r = cachectl(args(&server, &prefix, &["stats"]), None)
        .await
        .ok();
    assert!(r.stdout.contains("No instance reports"), "{}", r.stdout);
    let j = cachectl(args(&server, &prefix, &["stats", "--json"]), None)
        .await
        .ok()
        .json();
    assert_eq!(j["instances"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_latency_memory_policy_and_instance_breakers() {
    let server =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let prefix = unique_prefix("ctl-health");
    let cache = instance(&server, &prefix).await;
    cache.set(Kind::STATIC_DATA, "x", 1u32).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let j = loop {
        let j = cachectl(args(&server, &prefix, &["health", "--json"]), None)
            .await
            .ok()
            .json();
        if j["instances"].as_array().map(Vec::len) == Some(1) {
            break j;
        }
        assert!(Instant::now() < deadline, "no instance in {j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_eq!(j["status"], "ok", "{j:#}");
    assert_eq!(j["warnings"], json!([]));
    let node = &j["nodes"][0];
    assert_eq!(node["maxmemory_policy"], "allkeys-lru");
    assert_eq!(node["maxmemory"], 64 << 20);
    assert!(node["used_memory"].as_u64().is_some_and(|m| m > 0));
    assert!(node["ping_ms"]
        .as_f64()
        .is_some_and(|ms| ms > 0.0 && ms < 1000.0));
    assert_eq!(j["instances"][0]["breaker"], "closed");
    assert_eq!(j["instances"][0]["backplane_subscribed"], true);
    let text = cachectl(args(&server, &prefix, &["health"]), None)
        .await
        .ok();
    assert!(text.stdout.contains("reachable"));
    assert!(text.stdout.contains("allkeys-lru"));
    assert!(text.stdout.contains("Status: ok"), "{}", text.stdout);
    println!("$ cachectl health\n{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_warns_about_an_eviction_policy_unfit_for_a_cache() {
    // redis-server's defaults: no maxmemory, noeviction.
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-noevict");
    let r = cachectl(args(&server, &prefix, &["health", "--json"]), None)
        .await
        .ok();
    let j = r.json();
    assert_eq!(j["status"], "warning");
    let warnings = j["warnings"].to_string();
    assert!(warnings.contains("noeviction"), "{warnings}");
    assert!(warnings.contains("maxmemory is not set"), "{warnings}");
    let text = cachectl(args(&server, &prefix, &["health"]), None)
        .await
        .ok();
    assert!(text.stdout.contains("Warnings:"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_lists_by_kind_and_by_tag_up_to_the_limit() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-keys");
    let cache = instance(&server, &prefix).await;
    let tagged = EntryOptions::new().tags(["team:1"]);
    for i in 0..3 {
        cache.set(Kind::DATABASE_QUERY, &format!("u{i}"), i).await;
    }
    cache.set_with(Kind::API_RESPONSE, "r1", 1u8, &tagged).await;
    cache
        .set_with(Kind::DATABASE_QUERY, "u9", 9u8, &tagged)
        .await;
    cache.set(Kind::API_RESPONSE, "r2", 2u8).await;

    let keys_of = |j: Value| -> Vec<String> {
        let mut v: Vec<String> = j
            .as_array()
            .expect("array")
            .iter()
            .map(|k| k["key"].as_str().expect("key").to_owned())
            .collect();
        v.sort();
        v
    };
    let k = |kind: &str, key: &str| format!("{prefix}:v1:{kind}:{key}");

    let all = cachectl(args(&server, &prefix, &["keys", "--json"]), None)
        .await
        .ok();
    assert_eq!(keys_of(all.json()).len(), 6);
    let by_kind = cachectl(
        args(
            &server,
            &prefix,
            &["keys", "--kind", "database_query", "--json"],
        ),
        None,
    )
    .await
    .ok();
    assert_eq!(
        keys_of(by_kind.json()),
        ["u0", "u1", "u2", "u9"].map(|u| k("database_query", u))
    );
    let by_tag = cachectl(
        args(&server, &prefix, &["keys", "--tag", "team:1", "--json"]),
        None,
    )
    .await
    .ok();
    assert_eq!(
        keys_of(by_tag.json()),
        [k("api_response", "r1"), k("database_query", "u9")]
    );
    let limited = cachectl(
        args(&server, &prefix, &["keys", "--limit", "2", "--json"]),
        None,
    )
    .await
    .ok();
    assert_eq!(keys_of(limited.json()).len(), 2);
    let text = cachectl(
        args(&server, &prefix, &["keys", "--kind", "api_response"]),
        None,
    )
    .await
    .ok();
    assert!(
        text.stdout.contains(&k("api_response", "r2")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("2 key(s)"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_a_cluster_come_from_every_master() {
    init_tracing();
    let cluster = RedisCluster::start();
    let prefix = unique_prefix("ctl-cluster");
    let cache = Cache::builder()
        .redis_cluster(cluster.urls())
        .prefix(&prefix)
        .build()
        .await
        .expect("build cluster cache");
    for i in 0..30 {
        cache
            .set(Kind::DATABASE_QUERY, &format!("user:{i}"), i)
            .await;
    }
    // The keys really are spread over several masters.
    let per_node = cluster.keys(&format!("{prefix}:v1:*")).await;
    assert!(
        per_node.iter().filter(|k| !k.is_empty()).count() >= 2,
        "{per_node:?}"
    );

    let mut a = vec![
        "--cluster-nodes".to_owned(),
        cluster.urls().join(","),
        "--prefix".to_owned(),
        prefix.clone(),
    ];
    a.extend(["keys", "--json"].map(String::from));
    let j = cachectl(a.clone(), None).await.ok().json();
    assert_eq!(j.as_array().map(Vec::len), Some(30), "{j:#}");
    // `get` is routed to the key's master.
    let mut g = a[..4].to_vec();
    g.extend(["get", "database_query:user:7", "--json"].map(String::from));
    let e = cachectl(g, None).await.ok().json();
    assert_eq!(e["value"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_the_value_as_json_with_its_metadata() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-get");
    let cache = instance(&server, &prefix).await;
    let ada = Profile {
        id: 7,
        name: "Ada".into(),
        langs: vec!["en".into(), "fr".into()],
    };
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(600))
        .tags(["user:7"]);
    cache
        .set_with(Kind::DATABASE_QUERY, "user:7", ada.clone(), &opts)
        .await;
    // A value large and repetitive enough to be stored compressed.
    cache
        .set(Kind::API_RESPONSE, "big", "lorem ipsum ".repeat(2000))
        .await;

    let j = cachectl(
        args(
            &server,
            &prefix,
            &["get", "database_query:user:7", "--json"],
        ),
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(j["value"], serde_json::to_value(&ada).expect("json"));
    assert_eq!(j["key"], format!("{prefix}:v1:database_query:user:7"));
    assert_eq!(j["kind"], "database_query");
    assert_eq!(j["fresh"], true);
    assert_eq!(j["tombstone"], false);
    assert_eq!(j["compressed"], false);
    assert_eq!(j["tags"][0]["tag"], "user:7");
    let lifetime =
        j["fresh_until_ms"].as_u64().unwrap_or(0) - j["created_ms"].as_u64().unwrap_or(0);
    assert_eq!(lifetime, 600_000);
    let ttl = j["redis_ttl_ms"].as_i64().expect("a TTL");
    assert!(ttl > 590_000 && ttl <= 600_000, "{ttl}");
    assert!(j["created"].as_str().is_some_and(|s| s.ends_with('Z')));

    // The full Redis key names the same entry.
    let full = format!("{prefix}:v1:database_query:user:7");
    let again = cachectl(args(&server, &prefix, &["get", &full, "--json"]), None)
        .await
        .ok()
        .json();
    assert_eq!(again["value"], j["value"]);

    let big = cachectl(
        args(&server, &prefix, &["get", "api_response:big", "--json"]),
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(big["compressed"], true);
    assert!(big["stored_bytes"].as_u64() < big["payload_bytes"].as_u64());

    let text = cachectl(
        args(&server, &prefix, &["get", "database_query:user:7"]),
        None,
    )
    .await
    .ok();
    for needle in [
        "fresh until",
        "tags         user:7",
        "\"name\": \"Ada\"",
        "redis ttl",
    ] {
        assert!(
            text.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            text.stdout
        );
    }

    let missing = cachectl(
        args(&server, &prefix, &["get", "database_query:nobody"]),
        None,
    )
    .await;
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("no entry under"), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_of_garbage_or_truncated_bytes_is_a_clear_error_not_a_panic() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-garbage");
    let cache = instance(&server, &prefix).await;
    cache
        .set(Kind::API_RESPONSE, "good", "a value".to_owned())
        .await;
    let mut c = server.conn().await;
    let good: Vec<u8> = redis::cmd("GET")
        .arg(format!("{prefix}:v1:api_response:good"))
        .query_async(&mut c)
        .await
        .expect("GET");
    let cases: [(&str, Vec<u8>); 3] = [
        ("garbage", b"\xff\x00not an envelope at all".to_vec()),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("empty", Vec::new()),
    ];
    for (key, bytes) in cases {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}:v1:api_response:{key}"))
            .arg(bytes)
            .query_async(&mut c)
            .await
            .expect("SET");
        let r = cachectl(
            args(&server, &prefix, &["get", &format!("api_response:{key}")]),
            None,
        )
        .await;
        assert_eq!(r.code, Some(1), "{key}: {r:?}");
        assert!(
            r.stderr.contains("does not hold a readable cache entry"),
            "{key}: {r:?}"
        );
        assert!(!r.stderr.contains("panicked"), "{key}: {r:?}");
        assert!(r.stdout.is_empty(), "{key}: {r:?}");
    }
}

/// Waits until `cache` no longer returns `key` (the backplane reached its L1), 3 s at most.
async fn gone_from(cache: &Cache, kind: Kind, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v: Option<Arc<u32>> = cache.get(kind.clone(), key).await;
        if v.is_none() {
            return;
        }
        assert!(Instant::now() < deadline, "{key} still served after 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every command as a Redis user with exactly the rules the README documents: the read-only
/// ones as a user with `cachectl_acl_rules` (keys read-only, no channel, no write), `invalidate`
/// and `clear` as a user with the cache's `acl_rules`. Each works, and Redis refused none of their
/// commands (`ACL LOG`): a command added to `cachectl` without adding it to the rules fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_runs_as_a_user_with_exactly_the_documented_acl_rules() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-acl");
    let (reader, writer) = ("ctl-reader", "ctl-writer");
    let rules = cache_core::admin::cachectl_acl_rules(&prefix);
    acl::set_user(&server, &server.url(), reader, &rules).await;
    let rules = cache_core::admin::acl_rules(&prefix);
    acl::set_user(&server, &server.url(), writer, &rules).await;
    let as_user = |user: &str, rest: &[&str]| {
        let mut a = vec![
            "--redis-url".to_owned(),
            acl::url_as(&server.url(), user),
            "--prefix".to_owned(),
            prefix.clone(),
        ];
        a.extend(rest.iter().map(|s| (*s).to_owned()));
        a
    };
    let app = instance(&server, &prefix).await;
    let tagged = EntryOptions::new().tags(["team:1"]);
    app.set_with(Kind::DATABASE_QUERY, "user:7", 7u32, &tagged)
        .await;
    app.set(Kind::API_RESPONSE, "plain", 1u32).await;
    stats_until(&server, &prefix, |j| {
        j["instances"].as_array().is_some_and(|l| !l.is_empty())
    })
    .await;

    let stats = cachectl(as_user(reader, &["stats", "--json"]), None)
        .await
        .ok();
    assert_eq!(stats.json()["instances"].as_array().map(Vec::len), Some(1));
    let keys = cachectl(as_user(reader, &["keys"]), None).await.ok();
    assert!(keys.stdout.contains("user:7"), "{keys:?}");
    let by_tag = cachectl(as_user(reader, &["keys", "--tag", "team:1"]), None)
        .await
        .ok();
    assert!(by_tag.stdout.contains("user:7"), "{by_tag:?}");
    let get = cachectl(
        as_user(reader, &["get", "database_query:user:7", "--json"]),
        None,
    )
    .await
    .ok();
    assert_eq!(get.json()["value"], 7);
    cachectl(as_user(reader, &["health"]), None).await.ok();
    cachectl(as_user(reader, &["top", "--once"]), None)
        .await
        .ok();
    let doctor = cachectl(as_user(reader, &["doctor"]), None).await;
    // 3: findings above info (this Redis has no maxmemory), which is no failure to run.
    assert!(matches!(doctor.code, Some(0 | 3)), "{doctor:?}");
    // The reader writes nothing: an invalidation as the reader fails.
    let refused = cachectl(
        as_user(reader, &["invalidate", "--key", "api_response:plain"]),
        None,
    )
    .await;
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("was refused by Redis' ACL"),
        "{refused:?}"
    );
    assert!(
        !acl::refusals(&server.url()).await.is_empty(),
        "the reader was refused the write"
    );

    cachectl(
        as_user(writer, &["invalidate", "--key", "api_response:plain"]),
        None,
    )
    .await
    .ok();
    gone_from(&app, Kind::API_RESPONSE, "plain").await;
    cachectl(as_user(writer, &["invalidate", "--tag", "team:1"]), None)
        .await
        .ok();
    gone_from(&app, Kind::DATABASE_QUERY, "user:7").await;
    cachectl(as_user(writer, &["clear", "--all", "--yes"]), None)
        .await
        .ok();
    assert_eq!(acl::refusals(&server.url()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_a_key_or_a_tag_drops_it_from_every_instance() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-inv");
    let app = instance(&server, &prefix).await;
    let tagged = EntryOptions::new().tags(["team:1"]);
    app.set(Kind::DATABASE_QUERY, "plain", 1u32).await;
    app.set_with(Kind::DATABASE_QUERY, "t1", 2u32, &tagged)
        .await;
    app.set(Kind::DATABASE_QUERY, "other", 3u32).await;
    // Warm the instance's L1 (`set` put them there already; read to be sure).
    for k in ["plain", "t1", "other"] {
        let v: Option<Arc<u32>> = app.get(Kind::DATABASE_QUERY, k).await;
        assert!(v.is_some());
    }

    let r = cachectl(
        args(
            &server,
            &prefix,
            &["invalidate", "--key", "database_query:plain", "--json"],
        ),
        None,
    )
    .await
    .ok();
    assert_eq!(
        r.json(),
        json!({"invalidated": {"key": format!("{prefix}:v1:database_query:plain"), "kind": "database_query"}})
    );
    gone_from(&app, Kind::DATABASE_QUERY, "plain").await;

    let r = cachectl(
        args(&server, &prefix, &["invalidate", "--tag", "team:1"]),
        None,
    )
    .await
    .ok();
    assert!(r.stdout.contains("team:1"), "{r:?}");
    gone_from(&app, Kind::DATABASE_QUERY, "t1").await;

    // Untouched entries stay, and the instance counts no loader call for them.
    let v: Option<Arc<u32>> = app.get(Kind::DATABASE_QUERY, "other").await;
    assert_eq!(v.as_deref(), Some(&3));
    // The tombstone is what `get` shows now.
    let g = cachectl(
        args(&server, &prefix, &["get", "database_query:plain", "--json"]),
        None,
    )
    .await
    .ok()
    .json();
    assert_eq!(g["tombstone"], true);

    let none = cachectl(args(&server, &prefix, &["invalidate"]), None).await;
    assert_eq!(none.code, Some(2), "{none:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_a_hashed_key_is_named_by_the_full_key_that_keys_lists() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-hashed");
    let app = instance(&server, &prefix).await;
    let question = "Which clauses of the attached contract mention renewal? ".repeat(5);
    app.set(Kind::MODEL_DATA, &question, 7u32).await;
    let full = cache_core::admin::entry_key(&prefix, "model_data", &question);
    assert!(full.contains(":model_data:#"), "{full}");

    let listed = cachectl(args(&server, &prefix, &["keys", "--json"]), None)
        .await
        .ok()
        .json();
    assert_eq!(
        listed,
        json!([{"key": full.clone(), "kind": "model_data"}]),
        "keys lists the hashed name"
    );
    let got = cachectl(args(&server, &prefix, &["get", &full, "--json"]), None)
        .await
        .ok()
        .json();
    assert_eq!(got["value"], 7);

    let r = cachectl(
        args(&server, &prefix, &["invalidate", "--key", &full, "--json"]),
        None,
    )
    .await
    .ok();
    assert_eq!(
        r.json(),
        json!({"invalidated": {"key": full.clone(), "kind": "model_data"}})
    );
    gone_from(&app, Kind::MODEL_DATA, &question).await;
    let g = cachectl(args(&server, &prefix, &["get", &full, "--json"]), None)
        .await
        .ok()
        .json();
    assert_eq!(g["tombstone"], true);

    // A name the cache never builds (a literal part starting with `#`) is refused, not "done".
    let bogus = format!("{prefix}:v1:model_data:#not-a-hash");
    let r = cachectl(
        args(&server, &prefix, &["invalidate", "--key", &bogus]),
        None,
    )
    .await;
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_asks_first_and_refuses_unless_the_answer_is_yes() {
    let server = RedisServer::start();
    let prefix = unique_prefix("ctl-clear");
    let app = instance(&server, &prefix).await;
    for i in 0..3u32 {
        app.set(Kind::DATABASE_QUERY, &format!("d{i}"), i).await;
        app.set(Kind::API_RESPONSE, &format!("a{i}"), i).await;
    }
    let count = |j: Value| j.as_array().map_or(0, Vec::len);
    let keys = || cachectl(args(&server, &prefix, &["keys", "--json"]), None);

    for answer in [Some("n\n"), Some("whatever\n"), None] {
        let r = cachectl(args(&server, &prefix, &["clear", "--all"]), answer).await;
        assert_eq!(r.code, Some(1), "{answer:?}: {r:?}");
        assert!(r.stderr.contains("[y/N]"), "{r:?}");
        assert!(r.stderr.contains("aborted: nothing was deleted"), "{r:?}");
        assert_eq!(
            count(keys().await.ok().json()),
            6,
            "deleted after {answer:?}"
        );
    }

    let r = cachectl(
        args(&server, &prefix, &["clear", "--kind", "api_response"]),
        Some("y\n"),
    )
    .await
    .ok();
    assert!(r.stdout.contains("removed 3 key(s)"), "{r:?}");
    assert_eq!(count(keys().await.ok().json()), 3);
    gone_from(&app, Kind::API_RESPONSE, "a0").await;

    let r = cachectl(
        args(&server, &prefix, &["clear", "--all", "--yes", "--json"]),
        None,
    )
    .await
    .ok();
    assert_eq!(r.json()["removed_keys"], 3);
    assert_eq!(count(keys().await.ok().json()), 0);
    gone_from(&app, Kind::DATABASE_QUERY, "d0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_never_appears_in_any_output() {
    let server = RedisServer::start_with(&["--requirepass", "s3cr3t-pw"]);
    let prefix = unique_prefix("ctl-auth");
    let url = |pw: &str| format!("redis://:{pw}@127.0.0.1:{}", server.port());
    let run = |pw: &'static str, cmd: &'static str| {
        let a = vec![
            "--redis-url".into(),
            url(pw),
            "--prefix".into(),
            prefix.clone(),
            cmd.into(),
        ];
        async move { cachectl(a, None).await }
    };
    let good = run("s3cr3t-pw", "health").await.ok();
    assert!(
        !good.stdout.contains("s3cr3t-pw") && !good.stderr.contains("s3cr3t-pw"),
        "{good:?}"
    );
    assert!(good.stdout.contains(":***@"), "{good:?}");
    for cmd in ["health", "stats"] {
        let bad = run("wr0ng-pw", cmd).await;
        assert_eq!(bad.code, Some(1), "{bad:?}");
        assert!(!bad.stderr.contains("wr0ng-pw"), "{bad:?}");
        assert!(bad.stderr.contains("redis://:***@127.0.0.1"), "{bad:?}");
    }
    let bad = run("wr0ng-pw", "invalidate").await;
    assert!(!bad.stderr.contains("wr0ng-pw"), "{bad:?}");
}

/// Everything but letters and digits as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_with_url_delimiters_are_never_echoed_wherever_the_url_is_given() {
    // A base64-like password with every URL delimiter but `?` (which hides the host too).
    const PW: &str = "Zk/9+PWMARKq@x:y%2Fz#w,v=u&t==";
    let leaked = |r: &Run| {
        let all = format!("{}{}", r.stdout, r.stderr);
        [PW, &percent_encode(PW), "PWMARK", "Zk/9"]
            .into_iter()
            .any(|s| all.contains(s))
    };
    let server = RedisServer::start_with(&["--requirepass", PW]);
    let port = server.port();
    let prefix = unique_prefix("ctl-delims");
    let with = |url: String, rest: &[&str]| {
        let mut a = vec![
            "--redis-url".to_owned(),
            url,
            "--prefix".into(),
            prefix.clone(),
        ];
        a.extend(rest.iter().map(|s| (*s).to_owned()));
        a
    };
    let encoded = format!("redis://:{}@127.0.0.1:{port}", percent_encode(PW));
    let raw = format!("redis://:{PW}@127.0.0.1:{port}");

    // Percent-encoded, as redis-rs wants it: works, and is shown redacted.
    let good = cachectl(with(encoded.clone(), &["health"]), None)
        .await
        .ok();
    assert!(!leaked(&good), "{good:?}");
    assert!(
        good.stdout
            .contains(&format!("redis://:***@127.0.0.1:{port}")),
        "{good:?}"
    );

    // Unencoded: a usage error naming the host, not the password; by option or by variable.
    let bad = cachectl(with(raw.clone(), &["stats"]), None).await;
    let by_var = cachectl_env(
        vec!["--prefix".into(), prefix.clone(), "stats".into()],
        vec![("REDIS_URL", raw.clone())],
        None,
    )
    .await;
    for r in [&bad, &by_var] {
        assert_eq!(r.code, Some(2), "{r:?}");
        assert!(!leaked(r), "{r:?}");
        assert!(
            r.stderr
                .contains(&format!("invalid Redis URL redis://:***@127.0.0.1:{port}")),
            "{r:?}"
        );
    }

    // A cluster list: `--cluster-nodes` splits at the commas inside the password too.
    let list = format!("{raw},redis://:{PW}@127.0.0.1:1");
    let cluster = cachectl(
        vec!["--cluster-nodes".into(), list.clone(), "keys".into()],
        None,
    )
    .await;
    let cluster_var = cachectl_env(
        vec!["keys".into()],
        vec![("REDIS_CLUSTER_URLS", list.clone())],
        None,
    )
    .await;
    for r in [&cluster, &cluster_var] {
        assert_eq!(r.code, Some(2), "{r:?}");
        assert!(!leaked(r), "{r:?}");
        assert!(r.stderr.contains("invalid Redis URL (node "), "{r:?}");
    }

    // Misplaced, or clashing with another option: clap's own errors quote arguments.
    let misplaced = cachectl(vec!["stats".into(), raw.clone()], None).await;
    let inline = cachectl(
        vec![
            format!("--redis-url={raw}"),
            format!("--cluster-nodes={list}"),
            "stats".into(),
        ],
        None,
    )
    .await;
    let typo = cachectl(vec!["--redis-ur".into(), raw.clone(), "stats".into()], None).await;
    for r in [&misplaced, &inline, &typo] {
        assert_eq!(r.code, Some(2), "{r:?}");
        assert!(r.stderr.contains("error"), "{r:?}");
        assert!(!leaked(r), "{r:?}");
    }
    assert!(
        misplaced.stderr.contains("redis://:***@127.0.0.1"),
        "{misplaced:?}"
    );

    // Well-formed but wrong: every command, through the tool's connection and the library's.
    let wrong = format!("redis://:{}x@127.0.0.1:{port}", percent_encode(PW));
    for rest in [
        &["health"][..],
        &["stats"],
        &["invalidate", "--key", "api_response:k"],
    ] {
        let r = cachectl(with(wrong.clone(), rest), None).await;
        assert_eq!(r.code, Some(1), "{r:?}");
        assert!(!leaked(&r), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unreachable_redis_is_a_clear_error() {
    let none = cachectl(vec!["stats".into()], None).await;
    assert_eq!(none.code, Some(1));
    assert!(none.stderr.contains("no Redis given"), "{none:?}");

    let gone = RedisServer::reserve();
    let r = cachectl(
        vec![
            "--redis-url".into(),
            gone.url(),
            "--timeout-ms".into(),
            "500".into(),
            "health".into(),
        ],
        None,
    )
    .await;
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("cannot connect to"), "{r:?}");
}
