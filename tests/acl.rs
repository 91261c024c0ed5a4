//! A Redis protected by an ACL user limited to the cache's prefix: the right credentials work
//! (L2 and the backplane), a wrong password is a clear error at build time, and the password never
//! appears in `Debug` output, errors or logs.

use cache_core::{Cache, Error, Kind};
use cache_tests::RedisServer;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

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
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        text.contains("unreachable at startup"),
        "the logs were captured:\n{text}"
    );
    assert!(!text.contains(PASSWORD), "password in the logs:\n{text}");
    assert!(
        !text.contains("wrong-Pa55"),
        "password in the logs:\n{text}"
    );
}
