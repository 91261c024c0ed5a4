//! A Redis protected by an ACL user limited to the cache's prefix: the right credentials work
//! (L2 and the backplane), a wrong password is a clear error at build time, and the password never
//! appears in `Debug` output, errors or logs.

use cache_core::{Cache, Error, Kind};
use cache_tests::{serial, within, RedisServer};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const PASSWORD: &str = "s3cret-Pa55word";

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

fn acl_server() -> RedisServer {
    RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "cacheuser",
        "on",
        &format!(">{PASSWORD}"),
        "~app:*",
        "&app:*",
        "+@all",
    ])
}

fn url(server: &RedisServer, password: &str) -> String {
    format!("redis://cacheuser:{password}@127.0.0.1:{}", server.port())
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
    let server = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "delimuser",
        "on",
        &format!(">{DELIMS}"),
        "~app:*",
        "&app:*",
        "+@all",
    ]);
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
