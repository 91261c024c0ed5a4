//! How long after `set` / `invalidate` returns on instance A does instance B (same process, own
//! L1, shared redis-server) serve the new state? That is the backplane's stale window.
//!
//! ```text
//! cargo bench -p cache-benches --bench stale_window
//! ```

use cache_benches::summarize;
use cache_core::{Cache, Kind};
use cache_tests::RedisServer;
use std::time::{Duration, Instant};

const ROUNDS: usize = 500;

async fn wait_until<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "B never saw the change"
        );
        tokio::task::yield_now().await;
    }
    t.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = RedisServer::start();
        let build = || async {
            Cache::builder()
                .redis_url(server.url())
                .prefix("stale-window")
                .build()
                .await
                .expect("cache")
        };
        let (a, b) = (build().await, build().await);
        let mut after_set = Vec::with_capacity(ROUNDS);
        let mut after_invalidate = Vec::with_capacity(ROUNDS);
        for i in 0..ROUNDS as u64 {
            let key = format!("k{}", i % 16);
            a.set(Kind::API_RESPONSE, &key, i * 2).await;
            // B takes the value into its L1.
            wait_until(|| async {
                b.get::<u64>(Kind::API_RESPONSE, &key).await.as_deref() == Some(&(i * 2))
            })
            .await;
            a.set(Kind::API_RESPONSE, &key, i * 2 + 1).await;
            after_set.push(
                wait_until(|| async {
                    b.get::<u64>(Kind::API_RESPONSE, &key).await.as_deref() == Some(&(i * 2 + 1))
                })
                .await,
            );
            a.invalidate(Kind::API_RESPONSE, &key).await;
            after_invalidate.push(
                wait_until(|| async { b.get::<u64>(Kind::API_RESPONSE, &key).await.is_none() })
                    .await,
            );
        }
        let s = summarize(&mut after_set);
        let i = summarize(&mut after_invalidate);
        println!(
            "stale window on instance B, {ROUNDS} rounds (backplane over redis pub/sub, loopback):"
        );
        println!(
            "after A.set returns:        p50 {:>9.1?}  p99 {:>9.1?}  mean {:>9.1?}",
            s.p50, s.p99, s.mean
        );
        println!(
            "after A.invalidate returns: p50 {:>9.1?}  p99 {:>9.1?}  mean {:>9.1?}",
            i.p50, i.p99, i.mean
        );
    });
}
