//! Latency of L1 and L2 hits against raw moka and raw redis-rs, and the cost of the open circuit
//! breaker against an L1-only cache, measured in one run on one machine.
//!
//! ```text
//! cargo bench -p cache-benches --bench tiers
//! ```
//!
//! Starts its own redis-server on a free loopback port (via the test harness).

use cache_benches::{api_response, summarize, ApiResponse, Summary};
use cache_core::{Cache, Kind, KindConfig, Tiers};
use cache_tests::RedisServer;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const L1_OPS: usize = 1_000_000;
const L2_OPS: usize = 20_000;
const L2_TASK_OPS: usize = 2_000;

fn row(name: &str, s: Summary) {
    println!(
        "{name:<52} p50 {:>9.2?}  p99 {:>9.2?}  mean {:>9.2?}",
        s.p50, s.p99, s.mean
    );
}

async fn time_each<F, Fut>(n: usize, mut f: F) -> Summary
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed());
    }
    summarize(&mut samples)
}

/// Throughput of `tasks` tasks each running `per_task` operations.
async fn throughput<F, Fut>(tasks: usize, per_task: usize, f: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let t = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|w| {
            let f = f.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    f(w * per_task + i).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    (tasks * per_task) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let server = RedisServer::start();
    let value = api_response(1);
    let encoded_len = rmp_serde::to_vec_named(&value)
        .map(|v| v.len())
        .unwrap_or(0);
    println!("value: ApiResponse, {encoded_len} bytes of MessagePack; redis-server on loopback\n");

    // ---- L1 hit vs raw moka -------------------------------------------------------------------
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix("bench")
        .kind(
            Kind::new("remote"),
            KindConfig::new(Duration::from_secs(600)).tiers(Tiers::L2Only),
        )
        .build()
        .await
        .expect("cache");
    cache.set(Kind::API_RESPONSE, "k", value.clone()).await;
    let raw_moka: moka::future::Cache<String, Arc<ApiResponse>> =
        moka::future::Cache::builder().max_capacity(10_000).build();
    raw_moka
        .insert(
            "bench:v1:api_response:k".to_string(),
            Arc::new(value.clone()),
        )
        .await;
    // Warm up both.
    for _ in 0..100_000 {
        black_box(raw_moka.get("bench:v1:api_response:k").await);
        black_box(cache.get::<ApiResponse>(Kind::API_RESPONSE, "k").await);
    }
    let raw_l1 = time_each(L1_OPS, |_| async {
        black_box(raw_moka.get("bench:v1:api_response:k").await);
    })
    .await;
    let ours_l1 = time_each(L1_OPS, |_| async {
        black_box(cache.get::<ApiResponse>(Kind::API_RESPONSE, "k").await);
    })
    .await;
    let ours_l1_gol = time_each(L1_OPS, |_| async {
        black_box(
            cache
                .get_or_load(Kind::API_RESPONSE, "k", || async {
                    Ok::<ApiResponse, std::io::Error>(api_response(0))
                })
                .await
                .ok(),
        );
    })
    .await;
    println!("== L1 hit (1 task, {L1_OPS} ops, per-op timing incl. ~20 ns of Instant::now) ==");
    row("raw moka::future::Cache::get (Arc<T>)", raw_l1);
    row("tiered-cache get (typed L1 hit)", ours_l1);
    row("tiered-cache get_or_load (typed L1 hit)", ours_l1_gol);
    println!(
        "ratio get / raw moka: {:.2}x (mean), {:.2}x (p50)\n",
        ours_l1.mean.as_secs_f64() / raw_l1.mean.as_secs_f64(),
        ours_l1.p50.as_secs_f64() / raw_l1.p50.as_secs_f64()
    );

    // ---- L2 hit (L1 not used) vs raw redis-rs GET + decode --------------------------------------
    cache.set("remote", "k", value.clone()).await;
    let client = redis::Client::open(server.url()).expect("client");
    let raw_conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let raw_bytes = rmp_serde::to_vec_named(&value).expect("encode");
    {
        let mut c = raw_conn.clone();
        let _: () = redis::cmd("SET")
            .arg("raw:k")
            .arg(&raw_bytes)
            .query_async(&mut c)
            .await
            .expect("set");
    }
    let raw_get = |c: redis::aio::MultiplexedConnection| async move {
        let mut c = c;
        let b: Vec<u8> = redis::cmd("GET")
            .arg("raw:k")
            .query_async(&mut c)
            .await
            .expect("get");
        black_box(rmp_serde::from_slice::<ApiResponse>(&b).expect("decode"));
    };
    for _ in 0..2_000 {
        raw_get(raw_conn.clone()).await;
        black_box(cache.get::<ApiResponse>("remote", "k").await);
    }
    let raw_l2 = time_each(L2_OPS, |_| raw_get(raw_conn.clone())).await;
    let ours_l2 = time_each(L2_OPS, |_| async {
        black_box(
            cache
                .get::<ApiResponse>("remote", "k")
                .await
                .expect("L2 hit"),
        );
    })
    .await;
    println!("== L2 hit, L1 not used (1 task, {L2_OPS} ops) ==");
    row("raw redis-rs GET + rmp-serde decode", raw_l2);
    row("tiered-cache get (L2-only kind)", ours_l2);
    println!(
        "throughput ratio tiered / raw (1 task): {:.2}x\n",
        raw_l2.mean.as_secs_f64() / ours_l2.mean.as_secs_f64()
    );
    let rc = raw_conn.clone();
    let raw_64 = throughput(64, L2_TASK_OPS, move |_| raw_get(rc.clone())).await;
    let c2 = cache.clone();
    let ours_64 = throughput(64, L2_TASK_OPS, move |_| {
        let c = c2.clone();
        async move {
            black_box(c.get::<ApiResponse>("remote", "k").await.expect("L2 hit"));
        }
    })
    .await;
    println!("== L2 hit, 64 tasks x {L2_TASK_OPS} ops ==");
    println!("raw redis-rs GET + decode: {raw_64:>10.0} ops/s");
    println!("tiered-cache L2 hit:       {ours_64:>10.0} ops/s");
    println!(
        "throughput ratio tiered / raw (64 tasks): {:.2}x\n",
        ours_64 / raw_64
    );

    // ---- Breaker open vs L1-only ----------------------------------------------------------------
    let dead = RedisServer::reserve();
    let open = Cache::builder()
        .redis_url(dead.url())
        .prefix("bench-open")
        .build()
        .await
        .expect("cache");
    assert_eq!(open.breaker_state(), Some(cache_core::BreakerState::Open));
    let l1_only = Cache::builder()
        .prefix("bench-l1")
        .build()
        .await
        .expect("cache");
    for c in [&open, &l1_only] {
        c.set(Kind::API_RESPONSE, "k", value.clone()).await;
    }
    let miss_ops = 100_000;
    let mut results = Vec::new();
    for (name, c) in [("L1-only cache", &l1_only), ("breaker-open cache", &open)] {
        let hit = time_each(L1_OPS / 2, |_| async {
            black_box(
                c.get_or_load(Kind::API_RESPONSE, "k", || async {
                    Ok::<ApiResponse, std::io::Error>(api_response(0))
                })
                .await
                .ok(),
            );
        })
        .await;
        let miss = time_each(miss_ops, |i| async move {
            let key = format!("miss-{i}");
            black_box(
                c.get_or_load(Kind::API_RESPONSE, &key, || async {
                    Ok::<u64, std::io::Error>(i as u64)
                })
                .await
                .ok(),
            );
        })
        .await;
        results.push((name, hit, miss));
    }
    println!("== get_or_load: breaker open (Redis down) vs L1-only ==");
    for (name, hit, miss) in &results {
        row(&format!("{name}: hit"), *hit);
        row(&format!("{name}: miss + trivial loader"), *miss);
    }
    let (_, h0, m0) = results[0];
    let (_, h1, m1) = results[1];
    println!(
        "breaker-open / L1-only: hit {:.2}x, miss {:.2}x (mean)",
        h1.mean.as_secs_f64() / h0.mean.as_secs_f64(),
        m1.mean.as_secs_f64() / m0.mean.as_secs_f64()
    );
    println!("L2 skipped while open: {}", open.stats().total.l2.skipped);
}
