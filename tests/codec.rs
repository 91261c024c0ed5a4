//! Hostile bytes under a key in a real Redis: every undecodable value is a counted miss that the
//! next load overwrites; never a panic, never an error to the caller.

use cache_core::{Cache, Kind};
use cache_tests::{init_tracing, unique_prefix, RedisServer};
use redis::AsyncCommands;
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Answer {
    text: String,
    tokens: u32,
}

type Res<T> = Result<T, std::io::Error>;

async fn setup(server: &RedisServer, max_value: usize) -> (Cache, String) {
    init_tracing();
    let prefix = unique_prefix("codec");
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .max_value_bytes(max_value)
        .build()
        .await
        .unwrap();
    (cache, prefix)
}

/// The envelope the cache writes for `Answer { text: "ok", tokens: 1 }`, read back from Redis.
async fn valid_envelope(server: &RedisServer) -> Vec<u8> {
    let (cache, prefix) = setup(server, 1 << 20).await;
    cache.set(Kind::API_RESPONSE, "probe", answer()).await;
    let mut conn = server.conn().await;
    conn.get(format!("{prefix}:v1:api_response:probe"))
        .await
        .unwrap()
}

fn answer() -> Answer {
    Answer {
        text: "ok".into(),
        tokens: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_values_are_counted_misses_and_get_overwritten() {
    let server = RedisServer::start();
    let valid = valid_envelope(&server).await;
    let mut other_version = valid.clone();
    other_version[2] = 2;
    let mut unknown_flags = valid.clone();
    unknown_flags[3] = 0x80;
    let zeros = vec![0u8; 32 << 20];
    let bomb_body = zstd::bulk::compress(&zeros, 1).unwrap();
    // Header through the nonce (36 bytes), then the declared length, no tags, the zstd body.
    let mut bomb = valid[..36].to_vec();
    bomb[3] = 1; // compressed
    bomb.extend_from_slice(&(zeros.len() as u32).to_le_bytes());
    bomb.extend_from_slice(&[0, 0]);
    bomb.extend_from_slice(&bomb_body);
    let mut lying_bomb = bomb.clone();
    lying_bomb[36..40].copy_from_slice(&100u32.to_le_bytes());
    // The right header for a `String`, with an `Answer` in it.
    let wrong_type = {
        let (cache, prefix) = setup(&server, 1 << 20).await;
        cache
            .set(Kind::API_RESPONSE, "s", "a string".to_string())
            .await;
        let mut conn = server.conn().await;
        conn.get::<_, Vec<u8>>(format!("{prefix}:v1:api_response:s"))
            .await
            .unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"not an envelope at all".to_vec()),
        (
            "random",
            (0..500u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("truncated header", valid[..10].to_vec()),
        ("truncated payload", valid[..valid.len() - 1].to_vec()),
        ("other format version", other_version),
        ("unknown flags", unknown_flags),
        ("decompression bomb", bomb),
        ("bomb with a lying length", lying_bomb),
        ("another type", wrong_type),
        (
            "raw msgpack, no envelope",
            rmp_serde::to_vec(&answer()).unwrap(),
        ),
    ];
    for (name, bytes) in cases {
        let (cache, prefix) = setup(&server, 1 << 20).await;
        let key = format!("{prefix}:v1:api_response:k");
        let mut conn = server.conn().await;
        let _: () = conn.set(&key, &bytes).await.unwrap();
        let calls = AtomicUsize::new(0);
        let v = cache
            .get_or_load(Kind::API_RESPONSE, "k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Res::Ok(answer())
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: error {e}"));
        assert_eq!(*v, answer(), "{name}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{name}: loader calls");
        let s = cache.stats().total;
        assert_eq!(s.l2.decode_errors, 1, "{name}: decode errors");
        // The load overwrote the bad bytes: a fresh instance decodes the key.
        let fresh = Cache::builder()
            .redis_url(server.url())
            .prefix(&prefix)
            .build()
            .await
            .unwrap();
        assert_eq!(
            fresh
                .get::<Answer>(Kind::API_RESPONSE, "k")
                .await
                .as_deref(),
            Some(&answer()),
            "{name}: not overwritten"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_over_the_size_limit_reads_as_a_miss() {
    let server = RedisServer::start();
    let (writer, prefix) = setup(&server, 1 << 20).await;
    writer
        .set(Kind::API_RESPONSE, "big", "x".repeat(50_000))
        .await;
    let reader = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .max_value_bytes(10_000)
        .build()
        .await
        .unwrap();
    assert!(reader
        .get::<String>(Kind::API_RESPONSE, "big")
        .await
        .is_none());
    assert_eq!(reader.stats().total.l2.decode_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_size_limit_is_not_written_and_is_counted() {
    let server = RedisServer::start();
    let (cache, prefix) = setup(&server, 10_000).await;
    let big = "x".repeat(50_000);
    cache.set(Kind::API_RESPONSE, "big", big.clone()).await;
    // Still served from L1 to this instance...
    assert_eq!(
        *cache
            .get::<String>(Kind::API_RESPONSE, "big")
            .await
            .unwrap(),
        big
    );
    // ...but never written to Redis.
    let mut conn = server.conn().await;
    let exists: bool = conn
        .exists(format!("{prefix}:v1:api_response:big"))
        .await
        .unwrap();
    assert!(!exists);
    assert_eq!(cache.stats().total.l2.oversized, 1);
}

static DESERIALIZED: AtomicUsize = AtomicUsize::new(0);

/// A value that counts how often it is deserialized.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Counted(u64);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DESERIALIZED.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(Counted)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_l1_hits_do_not_decode_bytes_again() {
    let server = RedisServer::start();
    let (writer, prefix) = setup(&server, 1 << 20).await;
    writer.set(Kind::API_RESPONSE, "c", Counted(5)).await;
    let reader = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .build()
        .await
        .unwrap();
    let before = DESERIALIZED.load(Ordering::SeqCst);
    for _ in 0..100 {
        let v: Arc<Counted> = reader.get(Kind::API_RESPONSE, "c").await.unwrap();
        assert_eq!(*v, Counted(5));
    }
    assert_eq!(
        DESERIALIZED.load(Ordering::SeqCst) - before,
        1,
        "one decode for the L2 hit, none for the 99 L1 hits"
    );
    assert_eq!(reader.stats().total.l1.hits, 99);
}
