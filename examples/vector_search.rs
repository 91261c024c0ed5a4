//! A vector-search cache: nearest-neighbour results keyed by the query vector rounded to a fixed
//! precision, the namespace and `top_k`.
//!
//! ```text
//! cargo run --example vector_search
//! ```
//!
//! Embeddings of the same text differ in their last bits between calls (batching, hardware), so
//! keying on the raw floats would never hit. The query is rounded to 3 decimals before hashing:
//! near-identical queries share a key, different ones do not. (A component that sits right on a
//! rounding boundary can still split two near-identical queries: the precision trades hit rate
//! against answering a slightly different query.) The search itself is an exact
//! brute-force scan of 20,000 vectors of 128 dimensions (the "expensive origin").
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`); with no Redis it runs L1 only and says so.

use cache_core::cached;
use examples::{connect, init_logging, Timings};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

const DIM: usize = 128;
const CORPUS: usize = 20_000;
/// Decimals kept when a query vector is turned into a key.
const PRECISION: i32 = 3;

static SEARCHES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hit {
    doc_id: u32,
    score: f32,
}

/// The vectors of one namespace.
type Corpus = Arc<Vec<[f32; DIM]>>;

/// The index: one namespace per corpus ("products", "support-articles").
fn index(namespace: &str) -> Corpus {
    static INDEXES: OnceLock<std::sync::Mutex<Vec<(String, Corpus)>>> = OnceLock::new();
    let all = INDEXES.get_or_init(Default::default);
    let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, v)) = all.iter().find(|(n, _)| n == namespace) {
        return v.clone();
    }
    let seed = xxhash_rust::xxh3::xxh3_64(namespace.as_bytes());
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Corpus = Arc::new(
        (0..CORPUS)
            .map(|_| normalized(std::array::from_fn(|_| rng.random_range(-1.0..1.0))))
            .collect(),
    );
    all.push((namespace.to_string(), v.clone()));
    v
}

fn normalized(mut v: [f32; DIM]) -> [f32; DIM] {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// The cache key of a query: BLAKE3 hash (hex) of the vector rounded to `PRECISION` decimals.
/// Queries come from users: a cryptographic hash keeps one from crafting a vector whose key is
/// another query's, which would poison that query's cached results.
fn query_key(v: &[f32; DIM]) -> String {
    let scale = 10f32.powi(PRECISION);
    let mut bytes = Vec::with_capacity(DIM * 4);
    for x in v {
        bytes.extend_from_slice(&((x * scale).round() as i32).to_le_bytes());
    }
    blake3::hash(&bytes).to_hex().to_string()
}

/// Exact top-k by cosine similarity (the vectors are normalized), cached per
/// (namespace, top_k, rounded query).
#[cached(
    kind = "heavy_computation",
    ttl = 900,
    key = "knn:{namespace}:{top_k}:{qkey}"
)]
async fn search(namespace: String, top_k: usize, qkey: String, query: Arc<[f32; DIM]>) -> Vec<Hit> {
    SEARCHES.fetch_add(1, Ordering::Relaxed);
    let idx = index(&namespace);
    // CPU-bound: off the async workers.
    tokio::task::spawn_blocking(move || {
        let mut scored: Vec<Hit> = idx
            .iter()
            .enumerate()
            .map(|(i, d)| Hit {
                doc_id: i as u32,
                score: d.iter().zip(query.iter()).map(|(a, b)| a * b).sum(),
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
        scored.truncate(top_k);
        scored
    })
    .await
    .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let cache = connect("vector-example").await?;
    cache_core::set_default_cache(cache.clone()).map_err(|_| "a default cache was set already")?;
    for ns in ["products", "support-articles"] {
        index(ns); // build the corpora before timing anything
    }

    let mut rng = StdRng::seed_from_u64(7);
    let queries: Vec<[f32; DIM]> = (0..5)
        .map(|_| normalized(std::array::from_fn(|_| rng.random_range(-1.0..1.0))))
        .collect();
    let mut timings = Timings::default();
    let mut ask = async |label: &str, ns: &str, top_k: usize, q: [f32; DIM]| {
        let before = SEARCHES.load(Ordering::Relaxed);
        let started = Instant::now();
        let qkey = query_key(&q);
        let hits = search(ns.into(), top_k, qkey.clone(), Arc::new(q)).await;
        let origin = SEARCHES.load(Ordering::Relaxed) > before;
        let took = timings.record(started.elapsed(), origin);
        println!(
            "{label:<34} {ns:<17} k={top_k:<2} key {}…  {:>9.1?} {:<6} best doc {} ({:.3})",
            &qkey[..8],
            took,
            if origin { "search" } else { "cached" },
            hits.first().map_or(0, |h| h.doc_id),
            hits.first().map_or(0.0, |h| h.score),
        );
    };

    println!("\n-- five queries, cold");
    for q in &queries {
        ask("query", "products", 10, *q).await;
    }
    println!("\n-- the same five queries with float jitter (1e-7, as re-embedding gives)");
    for q in &queries {
        let noisy: [f32; DIM] = std::array::from_fn(|i| q[i] + rng.random_range(-1e-7..1e-7));
        ask("query + 1e-7 jitter", "products", 10, noisy).await;
    }
    println!("\n-- a different top_k, and another namespace: their own keys");
    ask("query 1, top 5", "products", 5, queries[0]).await;
    ask(
        "query 1, other namespace",
        "support-articles",
        10,
        queries[0],
    )
    .await;
    println!("\n-- a genuinely different query (noise 1e-2, above the precision)");
    let moved: [f32; DIM] = normalized(std::array::from_fn(|i| {
        queries[0][i] + rng.random_range(-1e-2..1e-2)
    }));
    ask("query 1 moved", "products", 10, moved).await;
    println!("\n-- 200 repeated queries (a popular search)");
    for i in 0..200 {
        ask("popular", "products", 10, queries[i % 3]).await;
    }

    println!(
        "\nbrute-force searches run: {}",
        SEARCHES.load(Ordering::Relaxed)
    );
    timings.summary(&cache);
    Ok(())
}
