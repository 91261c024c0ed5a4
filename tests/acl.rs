//! A Redis protected by an ACL user with exactly the rules the library documents
//! (`cache_core::admin::acl_rules`, shown in the README): every operation works and Redis refuses
//! none of them (its `ACL LOG`), every command the rules grant is one the library sends, a user
//! missing one command is told once (a configuration error, not an outage), a wrong password is
//! a clear error at build time, and the password never appears in `Debug` output, errors or logs.
//! The same with Redis Sentinel, where the sentinels have the cache's user too
//! (`SENTINEL_ACL_RULES`), through a failover.

use cache_core::admin::{acl_rules, ACL_RULES, CACHECTL_ACL_RULES, SENTINEL_ACL_RULES};
use cache_core::{Cache, EntryOptions, Error, Kind, KindConfig, WarmPlan};
use cache_tests::{acl, serial, within, RedisSentinels, RedisServer};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "s3cret-Pa55word";
/// The password of the `admin` user of the servers here (the default user is off), through which
/// the tests read `ACL LOG` and `INFO`.
const ADMIN_PASSWORD: &str = "admin-Pa55";

/// Every log line of this test binary, at every level.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        buf
    })
}

/// The captured logs from byte `from` on.
fn logs_since(from: usize) -> String {
    let logs = captured().lock().unwrap();
    String::from_utf8_lossy(&logs[from.min(logs.len())..]).into_owned()
}

/// Waits until a background probe of an unreachable server has failed (and been logged) since
/// byte `from` of the logs: the background retries have run and logged what they log. The tests
/// that read the logs hold `serial()`, so the probe is their own cache's.
async fn a_background_probe_failed_since(from: usize) {
    within(
        Duration::from_secs(10),
        "a background probe of the unreachable server is logged",
        || async { logs_since(from).contains("probe failed") },
    )
    .await;
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server whose default user is off, with an `admin` user (every command) and `users`:
/// `(name, password, rules)`.
fn server_with_users(users: &[(&str, &str, &str)]) -> RedisServer {
    let mut args: Vec<String> = ["--user", "default", "off", "--user", "admin", "on"]
        .map(String::from)
        .to_vec();
    args.extend([
        format!(">{ADMIN_PASSWORD}"),
        "~*".into(),
        "&*".into(),
        "+@all".into(),
    ]);
    for (name, password, rules) in users {
        args.extend(["--user".to_owned(), (*name).to_owned(), "on".to_owned()]);
        args.push(format!(">{password}"));
        args.extend(rules.split_whitespace().map(str::to_owned));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    RedisServer::start_with(&args)
}

/// A server with `cacheuser`, whose rules are exactly the documented ones for the prefix `app`.
fn acl_server() -> RedisServer {
    server_with_users(&[("cacheuser", PASSWORD, &acl_rules("app"))])
}

fn url(server: &RedisServer, password: &str) -> String {
    format!("redis://cacheuser:{password}@127.0.0.1:{}", server.port())
}

fn admin_url(server: &RedisServer) -> String {
    format!("redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{}", server.port())
}

/// `INFO commandstats` of `server`, read as its admin.
async fn commandstats(server: &RedisServer) -> String {
    let mut c = redis::Client::open(admin_url(server))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect as admin");
    redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .expect("INFO commandstats")
}

/// Calls of `command` (`get`, `script|load`...) in `INFO commandstats` output.
fn calls(commandstats: &str, command: &str) -> u64 {
    commandstats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("calls=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `GET path` of the HTTP server at `addr`: the status and the body as JSON.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .expect("read response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, json)
}

/// Serves `cache`'s HTTP endpoints on a free loopback port.
async fn serve(cache: &Cache) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(cache_core::http::serve(listener, cache.clone()));
    addr
}

#[test]
fn the_readme_shows_the_rules_the_library_documents() {
    let readme = include_str!("../README.md");
    for (name, user, rules) in [
        ("ACL_RULES", "cache", ACL_RULES),
        ("CACHECTL_ACL_RULES", "cachectl", CACHECTL_ACL_RULES),
    ] {
        let line = format!("\nACL SETUSER {user} on >PASSWORD {rules}\n");
        assert!(
            readme.contains(&line),
            "the README does not show cache_core::admin::{name} as the line{line}"
        );
    }
    // The sentinels' user, as a sentinel.conf line (in a list item: indented).
    let line = format!("user cache on >PASSWORD {SENTINEL_ACL_RULES}");
    assert!(
        readme.lines().any(|l| l.trim() == line),
        "the README does not show cache_core::admin::SENTINEL_ACL_RULES as the line\n{line}"
    );
    assert!(
        !readme.contains("+@all"),
        "the README still grants +@all somewhere"
    );
}

/// Every operation of the library, as a user with exactly the documented rules: nothing is
/// refused, and every command the rules grant was sent (but the cluster's: `CLUSTER SLOTS` and
/// `CLUSTER NODES` are sent on the cluster of the contract suite, `ASKING` only while slots
/// migrate; and Sentinel's `ROLE`, sent by the Sentinel test below), so the rules hold no command
/// the library does not need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_runs_with_exactly_the_documented_rules_and_needs_each_of_them() {
    captured();
    let server = acl_server();
    let lock = Kind::new("locked");
    let build = || {
        Cache::builder()
            .redis_url(url(&server, PASSWORD))
            .prefix("app")
            .stats_report_interval(Duration::from_millis(100))
            .kind(
                lock.clone(),
                KindConfig::new(Duration::from_secs(60)).distributed_lock(true),
            )
            .build()
    };
    let (a, b) = (build().await.expect("build"), build().await.expect("build"));
    type Res<T> = Result<T, std::io::Error>;
    // Read-through (lease, compare-and-set), plain writes and reads, on both instances.
    for i in 0..20u32 {
        let v = a
            .get_or_load(Kind::API_RESPONSE, &format!("k{i}"), || async move {
                Res::Ok(i)
            })
            .await
            .unwrap();
        assert_eq!(*v, i);
    }
    assert_eq!(*b.get::<u32>(Kind::API_RESPONSE, "k7").await.unwrap(), 7);
    a.set(Kind::STATIC_DATA, "s", 1u32).await;
    // Tags: tokens created, then found (and their expiry refreshed) by the other instance.
    let tagged = EntryOptions::new().tags(["user:1"]);
    a.set_with(Kind::DATABASE_QUERY, "row", 1u32, &tagged).await;
    b.set_with(Kind::DATABASE_QUERY, "row2", 2u32, &tagged)
        .await;
    assert_eq!(*b.get::<u32>(Kind::DATABASE_QUERY, "row").await.unwrap(), 1);
    a.invalidate_tag("user:1").await;
    // The distributed lock: taken by one instance, found held (and waited for) by the other,
    // released.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let (b, lock) = (b.clone(), lock.clone());
        tokio::spawn(async move {
            *b.get_or_load(&lock, "cold", || async move {
                let _ = started_tx.send(());
                let _ = go_rx.await;
                Res::Ok(5u32)
            })
            .await
            .unwrap()
        })
    };
    started_rx.await.unwrap();
    let waiter = {
        let (a, lock) = (a.clone(), lock.clone());
        tokio::spawn(async move {
            *a.get_or_load(&lock, "cold", || async { Res::Ok(6u32) })
                .await
                .unwrap()
        })
    };
    within(Duration::from_secs(5), "the lock is found held", || async {
        calls(&commandstats(&server).await, "pttl") > 0
    })
    .await;
    go_tx.send(()).unwrap();
    assert_eq!(holder.await.unwrap(), 5);
    assert_eq!(
        waiter.await.unwrap(),
        5,
        "the waiter reads the holder's value"
    );
    // Invalidations, confirmed by the other instance.
    let confirmation = a
        .invalidate_confirmed(Kind::API_RESPONSE, "k1", Duration::from_secs(5))
        .await;
    assert!(confirmation.is_complete(), "{confirmation:?}");
    // Warming (pipelines), clearing (SCAN + UNLINK), the health PING.
    let report = a
        .warm_with(WarmPlan::new().registered(false).entries(
            Kind::STATIC_DATA,
            (0..50u32).map(|i| (format!("w{i}"), move || async move { Res::Ok(i) })),
        ))
        .await;
    assert_eq!(report.warmed, 50, "{report:?}");
    assert!(a.clear_kind(Kind::STATIC_DATA).await.unwrap() >= 50);
    a.ping_l2().await.expect("PING");
    // The dashboard lists the instances from their index; INFO memory was read.
    let addr = serve(&a).await;
    within(
        Duration::from_secs(10),
        "the dashboard lists both instances",
        || async {
            let (_, data) = http_get(addr, "/cache/dashboard/data").await;
            data["instances"].as_array().is_some_and(|l| l.len() == 2)
        },
    )
    .await;
    within(Duration::from_secs(10), "INFO memory was read", || async {
        a.stats().redis_memory.is_some()
    })
    .await;

    assert_eq!(
        acl::refusals(&admin_url(&server)).await,
        Vec::<String>::new()
    );
    for cache in [&a, &b] {
        let s = cache.stats();
        assert!(s.l2_acl_refused.is_empty(), "{:?}", s.l2_acl_refused);
        assert_eq!(
            (s.total.l2.refused, s.total.l2.errors),
            (0, 0),
            "{:?}",
            s.total.l2
        );
    }
    let stats = commandstats(&server).await;
    let cluster_only = ["cluster|slots", "cluster|nodes", "asking"];
    // Sent only with Redis Sentinel, to check that the node the sentinels name is a master: by
    // `with_sentinel_every_command_runs_with_exactly_the_documented_rules_through_a_failover`.
    let sentinel_only = ["role"];
    for grant in ACL_RULES.split(' ').filter_map(|r| r.strip_prefix('+')) {
        if cluster_only.contains(&grant) || sentinel_only.contains(&grant) {
            continue;
        }
        assert!(
            calls(&stats, grant) > 0,
            "the rules grant `{grant}`, which the library never sent:\n{stats}"
        );
    }
}

/// Redis Sentinel, the cache logged in as users with exactly the documented rules: on the Redis
/// nodes `acl_rules` (whose `ROLE` checks that the node the sentinels name is a master), on the
/// sentinels `SENTINEL_ACL_RULES`. Two instances work on the first master, then through a forced
/// failover (the new master checked with `ROLE`, the backplane resubscribed there, the scripts
/// loaded again, the recent writes applied again): no node and no sentinel refused anything, `ROLE`
/// was sent to both masters, and every sentinel served both commands of its rules to the cache's
/// user (`SENTINEL MASTER` and `PSUBSCRIBE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sentinel_every_command_runs_with_exactly_the_documented_rules_through_a_failover() {
    let _serial = serial().await;
    captured();
    let prefix = "app";
    let topo = RedisSentinels::start_with_users(
        Some(("cache", &acl_rules(prefix))),
        Some(("cache", SENTINEL_ACL_RULES)),
    )
    .await;
    let url = topo.url_as("cache");
    let build = || {
        Cache::builder()
            .redis_url(url.clone())
            .prefix(prefix)
            .build()
    };
    let (a, b) = (build().await.expect("build"), build().await.expect("build"));
    let nodes = topo.node_ports();
    let first = nodes[0];
    type Res<T> = Result<T, std::io::Error>;
    let node_calls = |port: u16, command: &'static str| {
        let topo = &topo;
        async move {
            let mut info = redis::cmd("INFO");
            info.arg("commandstats");
            let stats: String = topo.node_query(port, &info).await.unwrap_or_default();
            calls(&stats, command)
        }
    };
    let exists = |port: u16, key: String| {
        let topo = &topo;
        async move {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(key);
            topo.node_query::<bool>(port, &cmd).await.unwrap_or(false)
        }
    };
    let subscribers = |port: u16| {
        let topo = &topo;
        async move {
            let mut cmd = redis::cmd("PUBSUB");
            cmd.arg("NUMSUB").arg(format!("{prefix}:bp"));
            topo.node_query::<(String, u64)>(port, &cmd)
                .await
                .map_or(0, |(_, n)| n)
        }
    };
    // On the first master: read-through, writes, an invalidation seen by the other instance.
    for i in 0..10u32 {
        let v = a
            .get_or_load(Kind::API_RESPONSE, &format!("k{i}"), || async move {
                Res::Ok(i)
            })
            .await
            .unwrap();
        assert_eq!(*v, i);
    }
    assert_eq!(*b.get::<u32>(Kind::API_RESPONSE, "k3").await.unwrap(), 3);
    let confirmation = a
        .invalidate_confirmed(Kind::API_RESPONSE, "k3", Duration::from_secs(5))
        .await;
    assert!(confirmation.is_complete(), "{confirmation:?}");
    assert!(
        node_calls(first, "role").await > 0,
        "ROLE checked the master"
    );

    // A forced failover: both instances move to the new master.
    topo.failover().await;
    let second = topo
        .wait_master_moved_from(first, Duration::from_secs(20))
        .await;
    let key = cache_core::admin::entry_key(prefix, "static_data", "after");
    within(
        Duration::from_secs(20),
        "the cache writes to the new master",
        || async {
            a.set(Kind::STATIC_DATA, "after", 1u32).await;
            exists(second, key.clone()).await
        },
    )
    .await;
    within(
        Duration::from_secs(20),
        "both backplanes subscribe on the new master",
        || async { subscribers(second).await >= 2 },
    )
    .await;
    for i in 10..20u32 {
        let v = b
            .get_or_load(Kind::API_RESPONSE, &format!("k{i}"), || async move {
                Res::Ok(i)
            })
            .await
            .unwrap();
        assert_eq!(*v, i);
    }
    a.invalidate_tag("user:1").await;
    assert!(
        node_calls(second, "role").await > 0,
        "ROLE checked the new master"
    );

    for port in nodes {
        assert_eq!(
            acl::refusals(&topo.node_url(port)).await,
            Vec::<String>::new(),
            "node {port}"
        );
    }
    for i in 0..topo.sentinel_ports().len() {
        let admin = topo.sentinel_admin_url(i);
        assert_eq!(
            acl::refusals(&admin).await,
            Vec::<String>::new(),
            "sentinel {i}"
        );
        // The cache's connections to this sentinel, and the last command of each.
        let mut c = redis::Client::open(admin)
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a sentinel");
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut c)
            .await
            .expect("CLIENT LIST");
        let sent: Vec<&str> = list
            .lines()
            .filter(|l| l.contains(" user=cache "))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("cmd=")))
            .collect();
        for grant in SENTINEL_ACL_RULES
            .split(' ')
            .filter_map(|r| r.strip_prefix('+'))
        {
            assert!(
                sent.contains(&grant),
                "sentinel {i}: the rules grant `{grant}`, which the cache never sent: {sent:?}"
            );
        }
    }
    for cache in [&a, &b] {
        let s = cache.stats();
        assert!(s.l2_acl_refused.is_empty(), "{:?}", s.l2_acl_refused);
        assert_eq!(s.total.l2.refused, 0, "{:?}", s.total.l2);
    }
}

/// A user without one command the cache needs (`EVALSHA`: write-backs, tag tokens, locks): a
/// configuration error, said once at error level with the command and the rules to give the user,
/// listed in `stats()`, `recommendations()` and `/health`; the breaker never opens, and the cache
/// serves what it can (loaded values, L1, plain writes that other instances read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_missing_one_command_is_told_once_and_the_cache_serves_what_it_can() {
    let _serial = serial().await;
    let logs = captured();
    let without_evalsha = acl_rules("app").replace(" +evalsha", "");
    assert_ne!(without_evalsha, acl_rules("app"));
    let server = server_with_users(&[
        ("cacheuser", PASSWORD, &acl_rules("app")),
        ("noeval", PASSWORD, &without_evalsha),
    ]);
    let mark = logs.lock().unwrap().len();
    let limited = Cache::builder()
        .redis_url(format!(
            "redis://noeval:{PASSWORD}@127.0.0.1:{}",
            server.port()
        ))
        .prefix("app")
        .build()
        .await
        .expect("a missing command is no build error");
    let full = Cache::builder()
        .redis_url(url(&server, PASSWORD))
        .prefix("app")
        .build()
        .await
        .expect("build");
    type Res<T> = Result<T, std::io::Error>;
    let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for round in 0..3 {
        for i in 0..30u32 {
            let loads = loads.clone();
            let v = limited
                .get_or_load(Kind::API_RESPONSE, &format!("k{i}"), || async move {
                    loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Res::Ok(i)
                })
                .await
                .expect("the loader's value");
            assert_eq!(*v, i, "round {round}");
        }
    }
    // Each key loaded once: the refused write-back left the value in L1, which served it since.
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 30);
    // Plain writes work, and reach the other instances through Redis.
    limited.set(Kind::STATIC_DATA, "plain", 9u32).await;
    assert_eq!(
        *full.get::<u32>(Kind::STATIC_DATA, "plain").await.unwrap(),
        9
    );
    assert_eq!(full.stats().total.l2.hits, 1);

    let s = limited.stats();
    assert_eq!(s.l2_acl_refused, ["EVALSHA"]);
    let breaker = s.breaker.expect("an L2 is configured");
    assert_eq!(
        (breaker.state, breaker.opens),
        (cache_core::BreakerState::Closed, 0)
    );
    assert!(s.total.l2.refused >= 30, "{:?}", s.total.l2);
    assert_eq!(s.total.l2.errors, 0, "{:?}", s.total.l2);
    let told = logs_since(mark)
        .lines()
        .filter(|l| l.contains("for lack of an ACL permission (NOPERM)"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(told.len(), 1, "said once:\n{}", told.join("\n"));
    assert!(told[0].contains("ERROR"), "{}", told[0]);
    assert!(told[0].contains("EVALSHA"), "{}", told[0]);
    assert!(told[0].contains(&acl_rules("app")), "{}", told[0]);
    assert!(!told[0].contains(PASSWORD), "{}", told[0]);
    let rec = limited
        .recommendations()
        .into_iter()
        .find(|r| r.code == "redis_acl_refused")
        .expect("a recommendation names the refusal");
    assert!(rec.figure.contains("EVALSHA"), "{rec:?}");
    let (status, health) = http_get(serve(&limited).await, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["l2_acl_refused"], serde_json::json!(["EVALSHA"]));
    assert_eq!(health["breaker"], "closed", "{health}");
    // The full user's cache was refused nothing.
    assert!(full.stats().l2_acl_refused.is_empty());
}

/// A user without the backplane channel: the subscription is refused at every retry, said once
/// (and the cache's own messages, said once too); the cache works on L2 without the backplane (its L1 entries then live at most the unsynced
/// TTL), and the breaker stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_told_once_and_l2_still_works() {
    let _serial = serial().await;
    let logs = captured();
    let without_channel = acl_rules("app").replace(" &app:bp", "");
    assert_ne!(without_channel, acl_rules("app"));
    let server = server_with_users(&[("nochan", PASSWORD, &without_channel)]);
    let mark = logs.lock().unwrap().len();
    let cache = Cache::builder()
        .redis_url(format!(
            "redis://nochan:{PASSWORD}@127.0.0.1:{}",
            server.port()
        ))
        .prefix("app")
        .build()
        .await
        .expect("a refused channel is no build error");
    assert!(!cache.backplane_subscribed());
    // The subscriber keeps retrying (100 ms, doubling): wait for three refusals in Redis' log.
    let admin = admin_url(&server);
    let started = std::time::Instant::now();
    let mut refusals = 0;
    while refusals < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{refusals} refused subscriptions in 10 s"
        );
        // Identical refusals are one entry of the log, with a count.
        refusals += acl::refusals(&admin)
            .await
            .iter()
            .filter(|r| r.contains(" app:bp "))
            .filter_map(|r| {
                r.rsplit("count ")
                    .next()?
                    .trim_end_matches(')')
                    .parse::<u64>()
                    .ok()
            })
            .sum::<u64>();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cache.set(Kind::API_RESPONSE, "k", 1u32).await;
    assert_eq!(cache.stats().total.l2.writes, 1);
    let s = cache.stats();
    // The channel is refused to PUBLISH too (the cache's own messages): each command said once.
    assert_eq!(s.l2_acl_refused, ["SUBSCRIBE", "PUBLISH"]);
    assert_eq!(
        s.breaker.map(|b| (b.state, b.opens)),
        Some((cache_core::BreakerState::Closed, 0))
    );
    let logs = logs_since(mark);
    let told: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("for lack of an ACL permission (NOPERM)"))
        .collect();
    assert_eq!(told.len(), 2, "{logs}");
    assert!(
        told[0].contains("SUBSCRIBE") && told[1].contains("PUBLISH"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_credentials_work_for_l2_and_the_backplane() {
    captured();
    let server = acl_server();
    let build = || {
        Cache::builder()
            .redis_url(url(&server, PASSWORD))
            .prefix("app")
            .build()
    };
    let (a, b) = (build().await.expect("build"), build().await.expect("build"));
    assert!(a.backplane_subscribed(), "the ACL allows the app:* channel");
    a.set(Kind::API_RESPONSE, "k", 1u32).await;
    assert_eq!(*b.get::<u32>(Kind::API_RESPONSE, "k").await.unwrap(), 1);
    assert_eq!(b.stats().total.l2.hits, 1);
    a.invalidate_tag("t").await;
    assert_eq!(a.stats().total.l2.errors, 0);
    let debug = format!(
        "{a:?} {:?}",
        Cache::builder().redis_url(url(&server, PASSWORD))
    );
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("cacheuser:***@"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_without_the_password() {
    captured();
    let server = acl_server();
    let wrong = "not-the-Pa55word";
    let err = Cache::builder()
        .redis_url(url(&server, wrong))
        .prefix("app")
        .build()
        .await
        .expect_err("a wrong password must fail the build");
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    // No password at all is an auth error too (the default user is off).
    let err = Cache::builder()
        .redis_url(server.url())
        .prefix("app")
        .build()
        .await
        .expect_err("no password must fail the build");
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_reach_the_logs() {
    let _serial = serial().await;
    let logs = captured();
    let server = acl_server();
    // Right password, wrong password, an unreachable server with a password, a malformed URL.
    let ok = Cache::builder()
        .redis_url(url(&server, PASSWORD))
        .prefix("app")
        .build()
        .await
        .unwrap();
    ok.set(Kind::API_RESPONSE, "k", 1u32).await;
    let _ = Cache::builder()
        .redis_url(url(&server, "wrong-Pa55"))
        .prefix("app")
        .build()
        .await;
    let dead = RedisServer::reserve();
    let mark = logs.lock().unwrap().len();
    let down = Cache::builder()
        .redis_url(format!(
            "redis://cacheuser:{PASSWORD}@127.0.0.1:{}",
            dead.port()
        ))
        .prefix("app")
        .build()
        .await
        .unwrap();
    let _ = down.get::<u32>(Kind::API_RESPONSE, "k").await;
    let bad = Cache::builder()
        .redis_url(format!("redis://cacheuser:{PASSWORD}@127.0.0.1:notaport"))
        .build()
        .await
        .expect_err("malformed URL");
    assert!(!format!("{bad} {bad:?}").contains(PASSWORD), "{bad:?}");
    a_background_probe_failed_since(mark).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        logs_since(mark).contains(&format!(
            "cacheuser:***@127.0.0.1:{} unreachable at startup",
            dead.port()
        )),
        "the logs were captured:\n{text}"
    );
    assert!(!text.contains(PASSWORD), "password in the logs:\n{text}");
    assert!(
        !text.contains("wrong-Pa55"),
        "password in the logs:\n{text}"
    );
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
async fn passwords_with_url_delimiters_work_encoded_and_are_never_echoed() {
    let _serial = serial().await;
    let logs = captured();
    // Every URL delimiter, a `%` escape look-alike and base64 padding, around a marker.
    const DELIMS: &str = "b64/+Dq@PWMARK2:x%2F#y?z,w=v&u==";
    let server = server_with_users(&[("delimuser", DELIMS, &acl_rules("app"))]);
    let port = server.port();
    let needles = [
        DELIMS.to_owned(),
        percent_encode(DELIMS),
        "PWMARK2".to_owned(),
        "b64/+Dq".to_owned(),
    ];
    let leaked = |text: &str| needles.iter().find(|s| text.contains(s.as_str())).cloned();
    let encoded = format!(
        "redis://delimuser:{}@127.0.0.1:{port}",
        percent_encode(DELIMS)
    );

    // Percent-encoded: it works, and `Debug` shows the user and host but not the password.
    let builder = Cache::builder().redis_url(encoded.clone()).prefix("app");
    let debug = format!("{builder:?}");
    let cache = builder.build().await.expect("encoded password works");
    cache.set(Kind::API_RESPONSE, "k", 1u32).await;
    assert_eq!(cache.stats().total.l2.errors, 0);
    let debug = format!("{debug} {cache:?}");
    assert_eq!(leaked(&debug), None, "{debug}");
    assert!(
        debug.contains(&format!("redis://delimuser:***@127.0.0.1:{port}")),
        "{debug}"
    );

    // Unencoded, alone or in a cluster list (split at its commas, as from REDIS_CLUSTER_URLS):
    // an `Error::Config` without the password.
    let raw = format!("redis://delimuser:{DELIMS}@127.0.0.1:{port}");
    let err = Cache::builder()
        .redis_url(raw.clone())
        .build()
        .await
        .expect_err("an unencoded `/` and `?` do not parse");
    let list = format!("{raw},redis://delimuser:{DELIMS}@127.0.0.1:1");
    let cluster_err = Cache::builder()
        .redis_cluster(list.split(','))
        .build()
        .await
        .expect_err("nor in a list");
    for e in [&err, &cluster_err] {
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        let text = format!("{e} {e:?}");
        assert_eq!(leaked(&text), None, "{text}");
        assert!(text.contains("delimuser:***@"), "{text}");
    }

    // A wrong password (encoded), and an unreachable server: errors and logs stay clean.
    let wrong = Cache::builder()
        .redis_url(format!(
            "redis://delimuser:{}x@127.0.0.1:{port}",
            percent_encode(DELIMS)
        ))
        .prefix("app")
        .build()
        .await
        .expect_err("a wrong password fails the build");
    assert!(matches!(wrong, Error::Auth(_)), "{wrong:?}");
    assert_eq!(leaked(&format!("{wrong} {wrong:?}")), None, "{wrong:?}");
    let dead = RedisServer::reserve();
    let mark = logs.lock().unwrap().len();
    let down = Cache::builder()
        .redis_url(encoded.replace(&format!(":{port}"), &format!(":{}", dead.port())))
        .prefix("app")
        .build()
        .await
        .expect("an unreachable Redis is not a build error");
    let _ = down.get::<u32>(Kind::API_RESPONSE, "k").await;
    a_background_probe_failed_since(mark).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        text.contains(&format!("delimuser:***@127.0.0.1:{}", dead.port())),
        "the logs name the server:\n{text}"
    );
    assert_eq!(leaked(&text), None, "password in the logs:\n{text}");
}
