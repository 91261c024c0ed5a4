//! `cachectl doctor` and `cachectl top` against real redis-servers with live `Cache` instances.
//!
//! Each doctor test stages one situation the recommendations are about (a TTL just shorter than
//! the re-request interval, an L1 too small for the working set, many tag rejections, a type
//! change after a deploy, Redis's memory settings, a flapping breaker, an unsubscribed backplane,
//! a kind below its hit-rate target) and checks that both `Cache::recommendations()` and
//! `cachectl doctor` (text and `--json`, and its exit status) name it: its code, the setting to
//! change and the figure behind it. The other tests run `top`: one frame, several frames, JSON
//! lines, and Ctrl-C.
//!
//! The rules judge the last 15 minutes with at least `MIN_LOOKUPS` lookups per kind and
//! `MIN_EVENTS` occurrences: each test makes that much traffic. Instances report every 200 ms.

use cache_core::admin::{Recommendation, Severity, MIN_EVENTS, MIN_LOOKUPS};
use cache_core::{BreakerState, Cache, CacheBuilder, EntryOptions, Kind, KindConfig};
use cache_tests::RedisServer;
use cache_tests::{init_tracing, unique_prefix, wait_for_state, within, FaultProxy, ProxyMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The exit status of `doctor` when it finds warnings or critical findings.
const FINDINGS: i32 = 3;

/// What a run of the binary produced.
#[derive(Debug, Clone)]
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
}

/// `cachectl --redis-url URL --prefix P args...`, away from the caller's variables, off the
/// runtime's worker threads.
async fn cachectl(url: &str, prefix: &str, args: &[&str]) -> Run {
    let mut all = vec![
        "--redis-url".to_owned(),
        url.to_owned(),
        "--prefix".to_owned(),
        prefix.to_owned(),
    ];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || {
        let out = command(&all)
            .stdin(Stdio::null())
            .output()
            .expect("run cachectl");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("cachectl task")
}

fn command(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachectl"));
    c.args(args)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER_URLS")
        .env_remove("CACHE_PREFIX")
        .env_remove("RUST_LOG");
    c
}

/// A Redis configured as a cache should be (a memory limit, an eviction policy), so that the
/// staged situation is the only finding.
fn cache_fit_server() -> RedisServer {
    RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
}

fn builder(url: String, prefix: &str) -> CacheBuilder {
    init_tracing();
    Cache::builder()
        .redis_url(url)
        .prefix(prefix)
        .stats_report_interval(Duration::from_millis(200))
}

fn find<'a>(
    recs: &'a [Recommendation],
    code: &str,
    kind: Option<&str>,
) -> Option<&'a Recommendation> {
    recs.iter()
        .find(|r| r.code == code && r.kind.as_deref() == kind)
}

/// Waits until `cache.recommendations()` names `code` (for `kind`), and returns it.
async fn api_names(
    cache: &Cache,
    code: &str,
    kind: Option<&str>,
    limit: Duration,
) -> Recommendation {
    within(
        limit,
        &format!("Cache::recommendations() names {code}"),
        || async { find(&cache.recommendations(), code, kind).is_some() },
    )
    .await;
    let all = cache.recommendations();
    find(&all, code, kind).cloned().expect("found above")
}

/// The finding `code` (for `kind`) of `doctor --json` output.
fn finding<'a>(j: &'a Value, code: &str, kind: Option<&str>) -> Option<&'a Value> {
    j["findings"]
        .as_array()?
        .iter()
        .find(|f| f["code"] == code && f["kind"].as_str() == kind)
}

/// Polls `cachectl doctor --json` until `done` holds (10 s at most); returns that run.
async fn doctor_until(url: &str, prefix: &str, what: &str, done: impl Fn(&Value) -> bool) -> Run {
    let t = Instant::now();
    loop {
        let run = cachectl(url, prefix, &["doctor", "--json"]).await;
        let j = run.json();
        if done(&j) {
            return run;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "cachectl doctor: {what}: not within 10 s: {j:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cachectl doctor --json` until it names `code` (for `kind`) with a figure holding
/// every one of `figure` and a setting holding every one of `setting`; then checks that the
/// exit status follows the most severe finding and that the text output says the same. Returns
/// the JSON.
async fn doctor_names(
    url: &str,
    prefix: &str,
    code: &str,
    kind: Option<&str>,
    figure: &[&str],
    setting: &[&str],
) -> Value {
    let run = doctor_until(url, prefix, &format!("names {code} ({kind:?})"), |j| {
        finding(j, code, kind).is_some_and(|f| {
            let set = f["setting"].as_str().unwrap_or("");
            f["seen_on"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["figure"].as_str())
                .any(|fig| figure.iter().all(|w| fig.contains(w)))
                && setting.iter().all(|w| set.contains(w))
        })
    })
    .await;
    let j = run.json();
    let gate = j["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["severity"] == "warning" || f["severity"] == "critical");
    assert_eq!(
        run.code,
        Some(if gate { FINDINGS } else { 0 }),
        "exit status: {run:?}"
    );
    assert_eq!(j["exit_code"], run.code.unwrap_or(-1));
    let text = cachectl(url, prefix, &["doctor"]).await;
    assert!(
        text.code == Some(0) || text.code == Some(FINDINGS),
        "{text:?}"
    );
    assert!(text.stderr.is_empty(), "nothing on stderr: {text:?}");
    assert!(
        text.stdout.contains(code),
        "{code} missing:\n{}",
        text.stdout
    );
    for w in figure.iter().chain(setting) {
        assert!(text.stdout.contains(w), "{w:?} missing:\n{}", text.stdout);
    }
    if let Some(k) = kind {
        assert!(
            text.stdout.contains(&format!("kind \"{k}\"")),
            "{}",
            text.stdout
        );
    }
    j
}

/// Checks that `r` says what the test staged.
#[track_caller]
fn says(r: &Recommendation, severity: Severity, figure: &[&str], setting: &[&str]) {
    assert_eq!(r.severity, severity, "{r}");
    for w in figure {
        assert!(r.figure.contains(w), "figure lacks {w:?}: {r}");
    }
    for w in setting {
        assert!(r.setting.contains(w), "setting lacks {w:?}: {r}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A percentage in a figure (`"67% of lookups ..."`), the first one.
fn first_percent(s: &str) -> f64 {
    let end = s
        .find('%')
        .unwrap_or_else(|| panic!("no percentage in {s:?}"));
    let start = s[..end]
        .rfind(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or(0, |i| i + 1);
    s[start..end]
        .parse()
        .unwrap_or_else(|_| panic!("no percentage in {s:?}"))
}

// ---- (a) TTL shorter than the re-request interval -----------------------------------------------

/// A cache whose kind `quotes` has a 1 s TTL, each of its 60 keys asked for every 1.5 s (the
/// staged workload's pace), three times.
async fn short_ttl_cache(url: String, prefix: &str, grace: Duration) -> Cache {
    let cache = builder(url, prefix)
        .fail_safe_grace(grace)
        .kind(Kind::new("quotes"), KindConfig::new(Duration::from_secs(1)))
        .build()
        .await
        .expect("build");
    for round in 0..3 {
        let start = tokio::time::Instant::now();
        for i in 0..60u32 {
            let v = cache
                .get_or_load("quotes", &format!("q{i}"), || async move {
                    Ok::<_, std::io::Error>(i)
                })
                .await
                .expect("load");
            assert_eq!(*v, i);
        }
        if round < 2 {
            tokio::time::sleep_until(start + Duration::from_millis(1500)).await;
        }
    }
    cache
}

/// Both ways a re-read finds its value expired: L1 dropped it at its TTL (no grace: Redis drops
/// it too), or both tiers keep it past its TTL for a fail-safe grace period and find it stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_shorter_than_the_rerequest_interval_is_named_with_the_interval() {
    let server = cache_fit_server();
    let (p_plain, p_grace) = (unique_prefix("doc-ttl"), unique_prefix("doc-ttl-grace"));
    let (plain, grace) = tokio::join!(
        short_ttl_cache(server.url(), &p_plain, Duration::ZERO),
        short_ttl_cache(server.url(), &p_grace, Duration::from_secs(30)),
    );
    for (cache, prefix) in [(&plain, &p_plain), (&grace, &p_grace)] {
        let q = &cache.stats().kinds["quotes"];
        assert!(q.lookups >= MIN_LOOKUPS, "{}", q.lookups);
        let r = api_names(
            cache,
            "ttl_shorter_than_rerequests",
            Some("quotes"),
            Duration::from_secs(5),
        )
        .await;
        says(
            &r,
            Severity::Warning,
            &[
                "of lookups found their value expired",
                "after it was written",
            ],
            &["KindConfig::new(ttl)", "\"quotes\"", "now 1.0 s"],
        );
        // Two of three rounds re-read expired values; each lookup counts once (with a grace
        // period, it finds the value expired in both tiers).
        let share = first_percent(&r.figure);
        assert!((60.0..=70.0).contains(&share), "{r}");
        // The median interval is the pace of the workload (1.5 s), within the histogram's ~19%.
        let median = r
            .figure
            .split("median ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no median in {r}"));
        assert!((1.2..=2.0).contains(&median), "{r}");
        doctor_names(
            &server.url(),
            prefix,
            "ttl_shorter_than_rerequests",
            Some("quotes"),
            &["of lookups found their value expired"],
            &["KindConfig::new(ttl)", "now 1.0 s"],
        )
        .await;
    }
}

// ---- (b) L1 too small -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l1_smaller_than_the_working_set_is_named_with_its_budget() {
    let server = cache_fit_server();
    let prefix = unique_prefix("doc-l1");
    let cache = builder(server.url(), &prefix)
        .l1_max_bytes(256 * 1024)
        .kind(
            Kind::new("pages"),
            KindConfig::new(Duration::from_secs(600)),
        )
        .build()
        .await
        .expect("build");
    // 400 values of ~2 KiB (~800 KiB) read in turn, three times, through a 256 KiB L1.
    for _ in 0..3 {
        for i in 0..400u32 {
            let v = cache
                .get_or_load("pages", &format!("p{i}"), || async move {
                    Ok::<_, std::io::Error>(format!("{i:04}{}", "x".repeat(2_000)))
                })
                .await
                .expect("load");
            assert!(v.starts_with(&format!("{i:04}")));
        }
    }
    let s = &cache.stats().kinds["pages"];
    assert!(
        s.l1.miss_reasons.evicted >= MIN_EVENTS,
        "{:?}",
        s.l1.miss_reasons
    );
    let r = api_names(
        &cache,
        "l1_too_small",
        Some("pages"),
        Duration::from_secs(5),
    )
    .await;
    says(
        &r,
        Severity::Warning,
        &[
            "of L1 lookups missed entries evicted for the budget",
            "after their eviction",
        ],
        &["CacheBuilder::l1_max_bytes", "now 256.0 KiB"],
    );
    doctor_names(
        &server.url(),
        &prefix,
        "l1_too_small",
        Some("pages"),
        &["of L1 lookups missed entries evicted for the budget"],
        &["CacheBuilder::l1_max_bytes", "now 256.0 KiB"],
    )
    .await;
}

// ---- (c) many rejections ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tag_rejections_are_named_and_alone_do_not_fail_the_doctor() {
    let server = cache_fit_server();
    let prefix = unique_prefix("doc-rej");
    let cache = builder(server.url(), &prefix)
        .kind(Kind::new("feed"), KindConfig::new(Duration::from_secs(600)))
        .build()
        .await
        .expect("build");
    let opts = EntryOptions::new().tags(["feed"]);
    // 25 entries under one tag, read, then the tag invalidated; six times.
    for _ in 0..6 {
        for i in 0..25u32 {
            cache
                .get_or_load_with("feed", &format!("f{i}"), &opts, || async move {
                    Ok::<_, std::io::Error>(i)
                })
                .await
                .expect("load");
        }
        cache.invalidate_tag("feed").await;
    }
    let r = api_names(
        &cache,
        "many_rejections",
        Some("feed"),
        Duration::from_secs(5),
    )
    .await;
    says(
        &r,
        Severity::Info,
        &["of lookups found invalidated entries", "by tag in L2"],
        &["invalidate / invalidate_tag", "\"feed\""],
    );
    // Five of six rounds found their entries invalidated; each lookup counts once.
    let share = first_percent(&r.figure);
    assert!((80.0..=100.0).contains(&share), "{r}");
    let j = doctor_names(
        &server.url(),
        &prefix,
        "many_rejections",
        Some("feed"),
        &["of lookups found invalidated entries"],
        &["invalidate / invalidate_tag"],
    )
    .await;
    // Information only, on a Redis fit for a cache: nothing to stop a deploy for.
    assert_eq!(j["status"], "info", "{j:#}");
    assert_eq!(j["exit_code"], 0, "{j:#}");
}

// ---- (d) type or schema mismatch after a deploy --------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProfileV1 {
    id: u32,
    name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProfileV2 {
    id: u32,
    name: String,
    email: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_another_schema_after_a_deploy_are_named() {
    let server = cache_fit_server();
    let prefix = unique_prefix("doc-schema");
    let kind = |schema: &'static str| KindConfig::new(Duration::from_secs(600)).schema(schema);
    // The old release wrote its profiles...
    let old = builder(server.url(), &prefix)
        .kind(Kind::new("profiles"), kind("profile-v1"))
        .build()
        .await
        .expect("build");
    for i in 0..120u32 {
        old.get_or_load("profiles", &format!("u{i}"), || async move {
            Ok::<_, std::io::Error>(ProfileV1 {
                id: i,
                name: format!("user {i}"),
            })
        })
        .await
        .expect("load");
    }
    // ... the new one reads them with another type and schema.
    let new = builder(server.url(), &prefix)
        .kind(Kind::new("profiles"), kind("profile-v2"))
        .build()
        .await
        .expect("build");
    for i in 0..120u32 {
        let p = new
            .get_or_load("profiles", &format!("u{i}"), || async move {
                Ok::<_, std::io::Error>(ProfileV2 {
                    id: i,
                    name: format!("user {i}"),
                    email: format!("u{i}@example.com"),
                })
            })
            .await
            .expect("load");
        assert_eq!(p.id, i);
    }
    assert_eq!(new.stats().kinds["profiles"].l2.miss_reasons.mismatch, 120);
    let r = api_names(
        &new,
        "type_mismatch",
        Some("profiles"),
        Duration::from_secs(5),
    )
    .await;
    says(
        &r,
        Severity::Warning,
        &["120 lookups (100%) found values written for another type or schema"],
        &["KindConfig::schema", "\"profiles\""],
    );
    assert!(
        find(&old.recommendations(), "type_mismatch", Some("profiles")).is_none(),
        "the old release read only its own values"
    );
    let j = doctor_names(
        &server.url(),
        &prefix,
        "type_mismatch",
        Some("profiles"),
        &["120 lookups (100%) found values written for another type or schema"],
        &["KindConfig::schema"],
    )
    .await;
    let f = finding(&j, "type_mismatch", Some("profiles")).expect("finding");
    assert_eq!(
        (f["count"].as_u64(), f["of"].as_u64()),
        (Some(1), Some(2)),
        "{f:#}"
    );
}

// ---- (e) Redis's memory settings ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_maxmemory_with_noeviction_or_nearly_full_is_named() {
    // redis-server's defaults: no memory limit, policy noeviction.
    let server = RedisServer::start();
    let prefix = unique_prefix("doc-redis");
    let cache = builder(server.url(), &prefix).build().await.expect("build");
    // The housekeeper reads Redis's memory at its first tick.
    let none = api_names(&cache, "redis_no_maxmemory", None, Duration::from_secs(5)).await;
    says(
        &none,
        Severity::Warning,
        &["maxmemory 0 (no limit), used"],
        &["maxmemory in redis.conf"],
    );
    let noev = api_names(&cache, "redis_noeviction", None, Duration::from_secs(5)).await;
    says(
        &noev,
        Severity::Warning,
        &["maxmemory-policy noeviction"],
        &["maxmemory-policy in redis.conf"],
    );
    for (code, figure, setting) in [
        (
            "redis_no_maxmemory",
            "maxmemory 0 (no limit), used",
            "maxmemory in redis.conf",
        ),
        (
            "redis_noeviction",
            "maxmemory-policy noeviction",
            "maxmemory-policy in redis.conf",
        ),
    ] {
        let j = doctor_names(&server.url(), &prefix, code, None, &[figure], &[setting]).await;
        // Read off Redis by the doctor itself (every master), not the instances' last sample.
        let f = finding(&j, code, None).expect("finding");
        assert_eq!(f["scope"], "redis", "{f:#}");
        assert_eq!(
            f["seen_on"][0]["node"],
            format!("127.0.0.1:{}", server.port())
        );
    }

    // Now a limit just above what Redis uses (~90% full), with an eviction policy.
    let used = server.info_u64("memory", "used_memory").await;
    let mut c = server.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used * 10 / 9)
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut c)
        .await
        .expect("CONFIG SET");
    let j = doctor_names(
        &server.url(),
        &prefix,
        "redis_memory_high",
        None,
        &["used ", " of "],
        &["maxmemory in redis.conf"],
    )
    .await;
    let f = finding(&j, "redis_memory_high", None).expect("finding");
    let figure = f["seen_on"][0]["figure"].as_str().unwrap_or("");
    // Redis's use moves with its clients (this test's included): warning up to 95%, critical
    // above.
    let fill = first_percent(figure);
    let expected = if fill > 95.0 { "critical" } else { "warning" };
    assert!(
        fill >= 80.0 && (f["severity"] == expected || fill == 95.0),
        "{f:#}"
    );
    assert!(finding(&j, "redis_no_maxmemory", None).is_none(), "{j:#}");
    assert!(finding(&j, "redis_noeviction", None).is_none(), "{j:#}");
    // The cache's own reading comes with its next sample (every 10 s).
    let high = api_names(&cache, "redis_memory_high", None, Duration::from_secs(15)).await;
    let fill = first_percent(&high.figure);
    assert!(fill >= 80.0, "{high}");
    assert!(high.setting.contains("maxmemory in redis.conf"), "{high}");
    assert!(find(&cache.recommendations(), "redis_no_maxmemory", None).is_none());
    assert!(find(&cache.recommendations(), "redis_noeviction", None).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_instances_the_doctor_judges_redis_alone() {
    let fit = cache_fit_server();
    let prefix = unique_prefix("doc-alone");
    let run = cachectl(&fit.url(), &prefix, &["doctor"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("No instance reports"), "{}", run.stdout);
    assert!(run.stdout.contains("0 finding(s)"), "{}", run.stdout);
    let j = cachectl(&fit.url(), &prefix, &["doctor", "--json"])
        .await
        .json();
    assert_eq!(
        (j["status"].as_str(), j["exit_code"].as_i64()),
        (Some("ok"), Some(0))
    );
    assert_eq!(
        j["redis_nodes"][0]["maxmemory_policy"], "allkeys-lru",
        "{j:#}"
    );
    // redis-server's defaults are no fit for a cache, instances or not.
    let default = RedisServer::start();
    let j = cachectl(&default.url(), &prefix, &["doctor", "--json"]).await;
    assert_eq!(j.code, Some(FINDINGS), "{j:?}");
    let j = j.json();
    for code in ["redis_no_maxmemory", "redis_noeviction"] {
        assert!(finding(&j, code, None).is_some(), "{code}: {j:#}");
    }
}

/// An operator's ACL user that may not run `INFO`: the doctor says Redis was not checked, and
/// the instances' own last readings stand in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctor_not_allowed_info_uses_the_instances_readings() {
    let server = RedisServer::start_with(&[
        "--user", "default", "off", "--user", "app", "on", ">app-pw", "~*", "&*", "+@all",
        "--user", "ops", "on", ">ops-pw", "~*", "&*", "+@all", "-info",
    ]);
    let port = server.port();
    let prefix = unique_prefix("doc-noinfo");
    let cache = builder(format!("redis://app:app-pw@127.0.0.1:{port}"), &prefix)
        .build()
        .await
        .expect("build");
    api_names(&cache, "redis_no_maxmemory", None, Duration::from_secs(5)).await;
    let ops = format!("redis://ops:ops-pw@127.0.0.1:{port}");
    let j = doctor_names(
        &ops,
        &prefix,
        "redis_no_maxmemory",
        None,
        &["maxmemory 0 (no limit)"],
        &["maxmemory in redis.conf"],
    )
    .await;
    let f = finding(&j, "redis_no_maxmemory", None).expect("finding");
    assert_eq!(f["scope"], "instances", "{f:#}");
    assert!(
        j["redis_check_error"]
            .as_str()
            .is_some_and(|e| e.contains("INFO memory")),
        "{j:#}"
    );
    let text = cachectl(&ops, &prefix, &["doctor"]).await;
    assert!(
        text.stdout.contains("Redis itself not checked")
            && text
                .stdout
                .contains("redis_no_maxmemory  Redis, on 1 of 1 instance(s)"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains("ops-pw"), "{}", text.stdout);
}

// ---- (f) a flapping breaker ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_that_keeps_opening_is_named_with_its_count() {
    let server = cache_fit_server();
    let proxy = FaultProxy::start(server.port()).await;
    let prefix = unique_prefix("doc-breaker");
    let cache = Arc::new(
        builder(proxy.url(), &prefix)
            .breaker_failure_threshold(1)
            .breaker_cooldown(Duration::from_millis(100), Duration::from_millis(200))
            .build()
            .await
            .expect("build"),
    );
    // Traffic all along, so that failures are seen.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (cache, stop) = (cache.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 1) % 50;
                let _: Option<Arc<u32>> = cache.get("api_response", &format!("k{i}")).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // The link is cut three times; each time the breaker opens, then closes once it is back.
    for _ in 0..3 {
        proxy.set_mode(ProxyMode::Refuse);
        proxy.cut_all();
        wait_for_state(&cache, BreakerState::Open, Duration::from_secs(5)).await;
        proxy.set_mode(ProxyMode::Pass);
        wait_for_state(&cache, BreakerState::Closed, Duration::from_secs(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic");
    let opens = cache.stats().breaker.expect("breaker").opens;
    assert!(opens >= 3, "{opens}");
    let r = api_names(&cache, "breaker_flapping", None, Duration::from_secs(5)).await;
    says(
        &r,
        Severity::Warning,
        &[&format!("the breaker opened {opens} times in the last")],
        &["breaker_cooldown", "l2_timeout"],
    );
    doctor_names(
        &server.url(),
        &prefix,
        "breaker_flapping",
        None,
        &["the breaker opened", "times in the last"],
        &["breaker_cooldown"],
    )
    .await;
}

// ---- (g) an unsubscribed backplane ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backplane_that_cannot_subscribe_is_named_and_fails_the_doctor() {
    // The cache's user may use every key and command, but no pub/sub channel (Redis 7's default
    // for new users): SUBSCRIBE is refused, everything else works, reports included.
    let server = RedisServer::start_with(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--user",
        "default",
        "off",
        "--user",
        "app",
        "on",
        ">app-pw",
        "~*",
        "resetchannels",
        "+@all",
    ]);
    let url = format!("redis://app:app-pw@127.0.0.1:{}", server.port());
    let prefix = unique_prefix("doc-bp");
    let cache = builder(url.clone(), &prefix).build().await.expect("build");
    assert!(!cache.backplane_subscribed());
    let r = api_names(
        &cache,
        "backplane_unsubscribed",
        None,
        Duration::from_secs(5),
    )
    .await;
    says(&r, Severity::Critical, &["subscribed: false"], &["pub/sub"]);
    let j = doctor_names(
        &url,
        &prefix,
        "backplane_unsubscribed",
        None,
        &["subscribed: false"],
        &["pub/sub"],
    )
    .await;
    assert_eq!(j["status"], "critical", "{j:#}");
    assert_eq!(j["exit_code"], FINDINGS, "{j:#}");
}

// ---- (h) a kind below its hit-rate target, and what doctor and top print -------------------------

/// Two instances serving a kind whose target is 90% while half its lookups are first reads.
async fn low_hit_rate_instances(url: &str, prefix: &str) -> (Cache, Cache) {
    let build = || {
        builder(url.to_owned(), prefix)
            .kind(
                Kind::new("recommendations"),
                KindConfig::new(Duration::from_secs(300))
                    .hit_rate_target(0.9)
                    .load_cost(0.002),
            )
            .build()
    };
    let (a, b) = (build().await.expect("build"), build().await.expect("build"));
    // Each instance reads its own 100 users twice: half the lookups call the loader (an LLM
    // call of 2 ms here), half are answered from L1.
    for (cache, base) in [(&a, 0u32), (&b, 1_000)] {
        for _ in 0..2 {
            for i in base..base + 100 {
                cache
                    .get_or_load("recommendations", &format!("user{i}"), || async move {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Ok::<_, std::io::Error>(format!("items for user {i}"))
                    })
                    .await
                    .expect("load");
            }
        }
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_below_its_hit_rate_target_is_named_on_every_instance_once() {
    let server = cache_fit_server();
    let prefix = unique_prefix("doc-target");
    let (a, b) = low_hit_rate_instances(&server.url(), &prefix).await;
    let traffic_done_ms = now_ms();
    for cache in [&a, &b] {
        let r = api_names(
            cache,
            "below_hit_rate_target",
            Some("recommendations"),
            Duration::from_secs(5),
        )
        .await;
        says(
            &r,
            Severity::Warning,
            &["hit rate 50% over 200 lookups (target 90%)"],
            &["KindConfig::hit_rate_target", "\"recommendations\""],
        );
    }
    let j = doctor_names(
        &server.url(),
        &prefix,
        "below_hit_rate_target",
        Some("recommendations"),
        &["hit rate 50% over 200 lookups (target 90%)"],
        &["KindConfig::hit_rate_target"],
    )
    .await;
    // Both instances say it: one finding, seen on both, the figure given once in the text. (A
    // report is up to 200 ms old: wait for both to be published after all the traffic.)
    let seen_on_both = |j: &Value| {
        finding(j, "below_hit_rate_target", Some("recommendations")).is_some_and(|f| {
            f["count"] == 2
                && f["seen_on"].as_array().is_some_and(|s| {
                    s.iter().all(|s| {
                        s["figure"]
                            .as_str()
                            .is_some_and(|f| f.contains("over 200 lookups"))
                    })
                })
        })
    };
    let j = if seen_on_both(&j) {
        j
    } else {
        doctor_until(
            &server.url(),
            &prefix,
            "both instances name it",
            seen_on_both,
        )
        .await
        .json()
    };
    let f = finding(&j, "below_hit_rate_target", Some("recommendations")).expect("finding");
    assert_eq!(
        (f["count"].as_u64(), f["of"].as_u64()),
        (Some(2), Some(2)),
        "{f:#}"
    );
    let text = cachectl(&server.url(), &prefix, &["doctor"]).await;
    assert_eq!(text.code, Some(FINDINGS), "{text:?}");
    assert!(
        text.stdout.contains("on 2 of 2 instance(s)"),
        "{}",
        text.stdout
    );
    assert_eq!(
        text.stdout.matches("hit rate 50% over 200 lookups").count(),
        1,
        "{}",
        text.stdout
    );

    // What the closing note shows: the real output of both commands on this staged case, once
    // each instance has sampled its counters after the traffic (savings are added up at each
    // one-second sample) and published a report since.
    within(
        Duration::from_secs(5),
        "a sample after the traffic",
        || async {
            [&a, &b]
                .iter()
                .all(|c| c.history().last().is_some_and(|p| p.t_ms > traffic_done_ms))
        },
    )
    .await;
    let sampled_ms = now_ms();
    within(
        Duration::from_secs(5),
        "reports after the sample",
        || async {
            let j = cachectl(&server.url(), &prefix, &["stats", "--json"])
                .await
                .json();
            j["instances"].as_array().is_some_and(|i| {
                i.len() == 2
                    && i.iter()
                        .all(|i| i["timestamp_ms"].as_u64().is_some_and(|t| t > sampled_ms))
            })
        },
    )
    .await;
    let text = cachectl(&server.url(), &prefix, &["doctor"]).await;
    assert_eq!(text.code, Some(FINDINGS), "{text:?}");
    let top = cachectl(&server.url(), &prefix, &["top", "--once"]).await;
    assert_eq!(top.code, Some(0), "{top:?}");
    let url = server.url();
    println!(
        "$ cachectl --redis-url {url} --prefix {prefix} doctor\n{}$ echo $?\n{}\n",
        text.stdout,
        text.code.unwrap_or(-1)
    );
    println!(
        "$ cachectl --redis-url {url} --prefix {prefix} top --once\n{}",
        top.stdout
    );
    assert!(!top.stdout.contains('\x1b'), "no escape codes with --once");
    assert!(top.stdout.contains("2 instance(s)"), "{}", top.stdout);
    for i in j["instances"].as_array().expect("instances") {
        let id = i["instance"].as_str().expect("instance id");
        assert!(top.stdout.contains(id), "{id} missing:\n{}", top.stdout);
    }
    let line = top
        .stdout
        .lines()
        .find(|l| l.starts_with("recommendations"))
        .unwrap_or_else(|| panic!("no kind line:\n{}", top.stdout));
    // 400 lookups over both instances, 200 answered: 50%; 200 loads at 0.002 each spent.
    assert!(line.contains("50.0%"), "{line}");
    assert!(line.contains("absent"), "{line}");
    assert!(line.contains("0.4000"), "cost spent: {line}");
}

// ---- top -------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_prints_the_asked_frames_and_json_lines_that_match_the_instances() {
    let server = cache_fit_server();
    let prefix = unique_prefix("top-frames");
    let (a, b) = low_hit_rate_instances(&server.url(), &prefix).await;
    within(Duration::from_secs(5), "both instances report", || async {
        let j = cachectl(&server.url(), &prefix, &["stats", "--json"])
            .await
            .json();
        j["instances"].as_array().map(Vec::len) == Some(2)
            && j["kinds"]["recommendations"]["loader_calls"] == 200
    })
    .await;
    // Piped: frames one after the other, no screen clearing.
    let run = cachectl(
        &server.url(),
        &prefix,
        &["top", "--iterations", "3", "--interval", "100ms"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout.matches("cachectl top: prefix").count(),
        3,
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('\x1b'), "{}", run.stdout);
    // JSON: one object per line and frame, with each instance's last minute.
    let run = cachectl(
        &server.url(),
        &prefix,
        &["top", "--json", "--iterations", "2", "--interval", "100ms"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let frames: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(frames.len(), 2, "{}", run.stdout);
    let f = &frames[1];
    assert_eq!(f["instances"].as_array().map(Vec::len), Some(2), "{f:#}");
    let k = &f["kinds"][0];
    assert_eq!(k["kind"], "recommendations");
    assert_eq!(
        (k["instances"].as_u64(), k["lookups"].as_u64()),
        (Some(2), Some(400)),
        "{k:#}"
    );
    assert_eq!(k["hit_rate"].as_f64(), Some(0.5));
    assert!(
        (k["cost_saved"].as_f64().unwrap_or(0.0) - 0.4).abs() < 1e-9,
        "{k:#}"
    );
    let saved = a.stats().kinds["recommendations"]
        .savings
        .loader_time_saved_secs
        + b.stats().kinds["recommendations"]
            .savings
            .loader_time_saved_secs;
    assert!(
        k["loader_time_saved_secs"].as_f64().unwrap_or(0.0) <= saved + 1e-9,
        "{k:#}"
    );
    for i in f["instances"].as_array().expect("instances") {
        assert_eq!(i["hit_rate"].as_f64(), Some(0.5), "{i:#}");
        assert_eq!(i["breaker"], "closed", "{i:#}");
        assert_eq!(i["backplane_subscribed"], true, "{i:#}");
        assert!(
            i["l1_bytes"].as_u64() > Some(0) && i["l1_max_bytes"] == 64 << 20,
            "{i:#}"
        );
        assert!(i["l2_read_p99_us"].as_f64() > Some(0.0), "{i:#}");
    }
    // --once and --iterations do not go together.
    let both = cachectl(
        &server.url(),
        &prefix,
        &["top", "--once", "--iterations", "2"],
    )
    .await;
    assert_eq!(both.code, Some(2), "{both:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_ends_cleanly_on_ctrl_c() {
    let server = cache_fit_server();
    let prefix = unique_prefix("top-ctrlc");
    let _cache = builder(server.url(), &prefix).build().await.expect("build");
    let args: Vec<String> = [
        "--redis-url",
        &server.url(),
        "--prefix",
        &prefix,
        "top",
        "--interval",
        "100ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut child = command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cachectl top");
    let pid = child.id();
    // Lines as they come, read on a thread.
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, out) = (lines.clone(), child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    let frames = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("cachectl top: prefix"))
            .count()
    };
    within(Duration::from_secs(10), "two frames of top", || async {
        frames() >= 2
    })
    .await;
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return Some(s);
            }
            if t.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .expect("wait task")
    .expect("top did not end within 5 s of Ctrl-C");
    reader.join().expect("reader");
    assert_eq!(status.code(), Some(0), "Ctrl-C ends top with status 0");
}

/// In a terminal (a pseudo-terminal from util-linux's `script`, part of every Debian), each frame
/// starts by clearing the screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_in_a_terminal_clears_the_screen_before_each_frame() {
    let server = cache_fit_server();
    let prefix = unique_prefix("top-tty");
    let _cache = builder(server.url(), &prefix).build().await.expect("build");
    let line = format!(
        "{} --redis-url {} --prefix {prefix} top --iterations 2 --interval 100ms",
        env!("CARGO_BIN_EXE_cachectl"),
        server.url()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .env_remove("REDIS_URL")
            .env_remove("CACHE_PREFIX")
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("script task")
    .unwrap_or_else(|e| {
        panic!("`script` (util-linux, Debian package bsdutils) is needed for a terminal: {e}")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout.matches("\x1b[H\x1b[2J").count(), 2, "{stdout:?}");
    assert_eq!(
        stdout.matches("cachectl top: prefix").count(),
        2,
        "{stdout:?}"
    );
}
