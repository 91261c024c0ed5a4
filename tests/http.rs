//! The admin router (`cache_core::http`, feature `http`) served on a real loopback listener, with
//! a real redis-server behind the cache: every endpoint, its status codes and bodies.
//!
//! Only `warm_endpoint_runs_the_registered_warmers_and_answers_the_report` installs a global
//! cache (for the registered `#[cached(..., warm)]` function below).

use cache_core::{cached, metrics::PROMETHEUS_CONTENT_TYPE, Cache, EntryOptions, Kind};
use cache_tests::{cache_on, unique_prefix, within, RedisServer};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves the router for `cache` on a free loopback port.
async fn serve(cache: Cache) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(cache_core::http::serve(listener, cache));
    addr
}

/// A response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// A minimal HTTP/1.1 client: one request per connection (`Connection: close`).
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Response {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .expect("read response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let r = Response {
        status,
        headers,
        body: body.to_owned(),
    };
    assert_eq!(
        r.header("content-length").and_then(|n| n.parse().ok()),
        Some(r.body.len()),
        "a complete, non-chunked body"
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_endpoint_answers_the_snapshot_as_json() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("http-stats")).await;
    cache.set(Kind::API_RESPONSE, "a", 1u32).await;
    let _: Option<Arc<u32>> = cache.get(Kind::API_RESPONSE, "a").await;
    let _: Option<Arc<u32>> = cache.get(Kind::API_RESPONSE, "missing").await;
    let addr = serve(cache.clone()).await;

    let r = request(addr, "GET", "/cache/stats", "").await;

    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let j = r.json();
    assert_eq!(j["prefix"], cache.prefix());
    assert_eq!(j["l2_configured"], true);
    assert_eq!(j["kinds"]["api_response"]["l1"]["hits"], 1);
    assert_eq!(j["kinds"]["api_response"]["l2"]["misses"], 1);
    assert_eq!(j["kinds"]["api_response"]["sets"], 1);
    assert_eq!(j["breaker"]["state"], "closed");
    assert_eq!(
        j["kinds"]["api_response"]["l2"]["miss_reasons"]["absent"],
        1
    );

    // The same lookups over the last minute, and the recommendations (none for two lookups).
    let r = request(addr, "GET", "/cache/rates", "").await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["last_1m"]["kinds"]["api_response"]["l1"]["hits"], 1);
    assert_eq!(j["last_15m"]["kinds"]["api_response"]["lookups"], 2);
    assert!(j["last_5m"]["seconds"].as_f64().is_some_and(|s| s > 0.0));
    let r = request(addr, "GET", "/cache/recommendations", "").await;
    assert_eq!(r.status, 200);
    assert!(r.json().as_array().is_some(), "{}", r.body);
}

static MOTD_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(kind = "static_data", key = "motd", warm)]
async fn motd() -> String {
    MOTD_CALLS.fetch_add(1, Ordering::SeqCst);
    "welcome".to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_endpoint_runs_the_registered_warmers_and_answers_the_report() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("http-warm")).await;
    cache_core::set_default_cache(cache.clone())
        .expect("the only test of this binary that installs");
    let addr = serve(cache.clone()).await;

    let r = request(addr, "POST", "/cache/warm", "").await;

    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["warmed"], 1, "{j}");
    assert_eq!(j["failed"], json!([]));
    assert_eq!(j["warmers"][0]["name"], "http::motd");
    assert_eq!(MOTD_CALLS.load(Ordering::SeqCst), 1);
    let v: Option<Arc<String>> = cache.get(Kind::STATIC_DATA, "motd").await;
    assert_eq!(v.as_deref().map(String::as_str), Some("welcome"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_endpoint_drops_a_key_or_a_tag_on_every_instance() {
    let server = RedisServer::start();
    let prefix = unique_prefix("http-inv");
    let a = cache_on(&server, &prefix).await;
    let b = cache_on(&server, &prefix).await;
    let tagged = EntryOptions::new().tags(["user:7"]);
    a.set(Kind::DATABASE_QUERY, "plain", 1u32).await;
    a.set_with(Kind::DATABASE_QUERY, "t1", 2u32, &tagged).await;
    a.set_with(Kind::DATABASE_QUERY, "t2", 3u32, &tagged).await;
    // B holds L1 copies of all three.
    for k in ["plain", "t1", "t2"] {
        let v: Option<Arc<u32>> = b.get(Kind::DATABASE_QUERY, k).await;
        assert!(v.is_some(), "{k} not readable on B");
    }
    let addr = serve(a.clone()).await;

    let r = request(
        addr,
        "POST",
        "/cache/invalidate",
        r#"{"kind": "database_query", "key": "plain"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"invalidated": {"kind": "database_query", "key": "plain"}})
    );
    let r = request(addr, "POST", "/cache/invalidate", r#"{"tag": "user:7"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"invalidated": {"tag": "user:7"}}));

    // Gone on A at once, and on B once the backplane message arrives.
    for k in ["plain", "t1", "t2"] {
        let v: Option<Arc<u32>> = a.get(Kind::DATABASE_QUERY, k).await;
        assert!(v.is_none(), "{k} still on A");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for k in ["plain", "t1", "t2"] {
        loop {
            let v: Option<Arc<u32>> = b.get(Kind::DATABASE_QUERY, k).await;
            if v.is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "{k} still on B after 3 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_endpoint_answers_400_with_a_reason_to_malformed_bodies() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("http-bad")).await;
    let addr = serve(cache.clone()).await;
    for body in [
        "",
        "not json",
        "{}",
        r#"{"kind": "database_query"}"#,
        r#"{"kind": "bad kind!", "key": "x"}"#,
        r#"{"kind": "database_query", "key": ""}"#,
        r#"{"kind": "database_query", "key": "x", "tag": "t"}"#,
        r#"{"tag": ""}"#,
        r#"{"tag": "t", "extra": 1}"#,
    ] {
        let r = request(addr, "POST", "/cache/invalidate", body).await;
        assert_eq!(r.status, 400, "{body:?} -> {}", r.body);
        let reason = r.json()["error"].as_str().map(str::to_owned);
        assert!(reason.is_some_and(|e| !e.is_empty()), "{body:?}: no reason");
    }
    assert_eq!(cache.stats().total.invalidations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoint_is_ok_with_redis_and_503_while_the_breaker_is_open() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("http-health"))
        .breaker_failure_threshold(1)
        .breaker_cooldown(Duration::from_secs(30), Duration::from_secs(60))
        .build()
        .await
        .expect("build cache");
    let addr = serve(cache.clone()).await;

    let r = request(addr, "GET", "/health", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"status": "ok", "l2_configured": true, "l2_refusing_writes": false, "l2_acl_refused": [], "breaker": "closed", "backplane_subscribed": true})
    );

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.breaker_state() != Some(cache_core::BreakerState::Open) {
        assert!(Instant::now() < deadline, "breaker did not open");
        let _: Option<Arc<u32>> = cache.get(Kind::API_RESPONSE, "x").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = request(addr, "GET", "/health", "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "l2_unavailable");
    assert_eq!(r.json()["breaker"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_and_metrics_say_so_while_redis_refuses_writes() {
    let server =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let cache = cache_on(&server, &unique_prefix("http-oom")).await;
    let addr = serve(cache.clone()).await;
    // Someone else fills Redis to the limit: writes are refused from now on.
    let mut c = server.conn().await;
    let filler = vec![b'x'; 4096];
    for i in 0.. {
        let r: redis::RedisResult<()> =
            redis::AsyncCommands::set(&mut c, format!("filler:{i}"), &filler).await;
        if r.is_err() {
            break;
        }
        assert!(i < 10_000, "Redis never refused a write");
    }
    // The cache hears of it at its next write, and holds writes for a second after each refused
    // one: while it does, /health says `degraded` and /metrics says so too.
    let mut i = 0u32;
    within(
        Duration::from_secs(10),
        "health and metrics say writes are refused",
        || {
            i += 1;
            let (cache, c) = (cache.clone(), c.clone());
            async move {
                let mut c = c;
                let _: redis::RedisResult<()> =
                    redis::AsyncCommands::set(&mut c, format!("more:{i}"), vec![b'x'; 4096]).await;
                cache.set(Kind::API_RESPONSE, &format!("k{i}"), i).await;
                let h = request(addr, "GET", "/health", "").await;
                let m = request(addr, "GET", "/metrics", "").await;
                h.status == 200
                    && h.json()["status"] == "degraded"
                    && h.json()["l2_refusing_writes"] == true
                    && h.json()["breaker"] == "closed"
                    && m.body.contains(&format!(
                        "cache_l2_refusing_writes{{cache=\"{}\"}} 1\n",
                        cache.prefix()
                    ))
            }
        },
    )
    .await;
    let s = cache.stats();
    assert!(s.total.l2.refused > 0, "{:?}", s.total.l2);
    assert_eq!(s.breaker.map(|b| b.opens), Some(0), "not an outage");
    let m = request(addr, "GET", "/metrics", "").await;
    assert!(
        m.body.contains(&format!(
            "cache_refused_total{{cache=\"{}\",tier=\"l2\",kind=\"api_response\"}} {}\n",
            cache.prefix(),
            s.kinds["api_response"].l2.refused
        )),
        "{}",
        m.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_openmetrics_with_its_content_type() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("http-metrics")).await;
    let _: Option<Arc<u32>> = cache.get(Kind::API_RESPONSE, "x").await;
    let addr = serve(cache.clone()).await;

    let r = request(addr, "GET", "/metrics", "").await;

    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(PROMETHEUS_CONTENT_TYPE));
    assert!(r.body.ends_with("# EOF\n"));
    assert!(
        r.body.contains(&format!(
            "cache_misses_total{{cache=\"{}\",tier=\"l1\",kind=\"api_response\"}} 1\n",
            cache.prefix()
        )),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_are_refused() {
    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("http-404")).await;
    let addr = serve(cache).await;
    assert_eq!(request(addr, "GET", "/nope", "").await.status, 404);
    assert_eq!(request(addr, "GET", "/cache/warm", "").await.status, 405);
    assert_eq!(request(addr, "POST", "/cache/stats", "").await.status, 405);
}
