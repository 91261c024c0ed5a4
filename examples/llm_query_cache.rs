//! An LLM answer cache: questions about a data file go to a (simulated, slow and costly) model;
//! answers are cached under a hash of (file content hash, question, model name).
//!
//! ```text
//! cargo run --example llm_query_cache
//! ```
//!
//! - The same question about the same file is answered from the cache (L1, or L2 from another
//!   instance or after a restart).
//! - Editing the file changes its content hash, hence the key: answers about the old content are
//!   never served for the new one (and simply expire).
//! - Another model gets its own answers.
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`); with no Redis it runs L1 only and says so.

use cache_core::{cached, Kind};
use examples::{connect, init_logging, peer, Timings};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static MODEL_CALLS: AtomicU64 = AtomicU64::new(0);
static TOKENS_BILLED: AtomicU64 = AtomicU64::new(0);

/// What the model returns, cached as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    text: String,
    model: String,
    prompt_tokens: u64,
}

/// Asks `model` about `data`. The key is the model, the content hash and the question: the
/// question may be long, and key parts over 200 bytes are hashed by the cache (with BLAKE3 too,
/// since questions are user input), so any question fits. `data` itself is not in the key template: its hash stands for it. `lock`: instances
/// sharing Redis that miss the same question together make one model call between them.
#[cached(
    kind = "model_data",
    key = "answer:{model}:{content_hash}:{question}",
    lock
)]
async fn ask(
    model: String,
    content_hash: String,
    question: String,
    data: Arc<String>,
) -> Result<Answer, Arc<std::io::Error>> {
    MODEL_CALLS.fetch_add(1, Ordering::Relaxed);
    let prompt_tokens = (data.len() + question.len()) as u64 / 4;
    TOKENS_BILLED.fetch_add(prompt_tokens, Ordering::Relaxed);
    // A model round trip: a few hundred milliseconds.
    tokio::time::sleep(Duration::from_millis(400)).await;
    Ok(Answer {
        text: answer_from(&data, &question),
        model,
        prompt_tokens,
    })
}

/// Hash of the file's content: BLAKE3, 256 bits in hex.
///
/// The files are uploaded by users, so the hash must be cryptographic. With a fast
/// non-cryptographic hash (xxh3, FxHash, ...) anyone can craft a file whose hash equals another
/// file's: asking a question about it reads the answers cached for the other user's file, or, asked
/// first, poisons them with answers about the crafted file. BLAKE3 (or SHA-256: the original report
/// used it, and it is as good here) makes such collisions infeasible, for a few microseconds
/// (3.5 µs for 10 KiB on the development machine; `benches/compare.rs`, section `keyhash`):
/// nothing next to a model call.
fn content_hash(data: &str) -> String {
    blake3::hash(data.as_bytes()).to_hex().to_string()
}

/// The "model": actually reads the CSV, so answers change when the data does.
fn answer_from(csv: &str, question: &str) -> String {
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .filter(|r: &Vec<&str>| r.len() == 4)
        .collect();
    let revenue =
        |r: &Vec<&str>| r[2].parse::<f64>().unwrap_or(0.0) * r[3].parse::<f64>().unwrap_or(0.0);
    if question.contains("region") {
        let mut by: Vec<(&str, f64)> = Vec::new();
        for r in &rows {
            match by.iter_mut().find(|(k, _)| *k == r[0]) {
                Some((_, v)) => *v += revenue(r),
                None => by.push((r[0], revenue(r))),
            }
        }
        by.sort_by(|a, b| b.1.total_cmp(&a.1));
        by.first()
            .map_or("no rows".into(), |(r, v)| format!("{r} leads with {v:.2}."))
    } else if question.contains("revenue") {
        let total: f64 = rows.iter().map(revenue).sum();
        format!("Total revenue is {total:.2} over {} rows.", rows.len())
    } else {
        format!(
            "{} rows, columns region/product/units/unit_price.",
            rows.len()
        )
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let cache = connect("llm-example").await?;
    cache_core::set_default_cache(cache.clone()).map_err(|_| "a default cache was set already")?;

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sales.csv");
    let original = std::fs::read_to_string(path)?;
    let edited = format!("{original}north,gizmo,50,99.00\n");
    let questions = [
        "What is the total revenue in this file?",
        "Which region has the highest revenue?",
        "Describe the data set.",
    ];
    let mut timings = Timings::default();
    let run = |label: &'static str, data: &String, model: &'static str| {
        let data = Arc::new(data.clone());
        let hash = content_hash(&data);
        async move {
            println!("\n-- {label} (model {model}, content {})", &hash[..12]);
            let mut out = Vec::new();
            for q in questions {
                let before = MODEL_CALLS.load(Ordering::Relaxed);
                let started = Instant::now();
                let a = ask(model.into(), hash.clone(), q.into(), data.clone()).await;
                let origin = MODEL_CALLS.load(Ordering::Relaxed) > before;
                out.push((started.elapsed(), origin));
                let text = a.map_or_else(|e| format!("error: {e}"), |a| a.text);
                println!(
                    "{:>9.1?} {:<7} {q:<42} → {text}",
                    started.elapsed(),
                    if origin { "model" } else { "cached" }
                );
            }
            out
        }
    };
    let mut all = Vec::new();
    all.extend(run("first questions", &original, "small-model-v1").await);
    all.extend(run("same questions again", &original, "small-model-v1").await);
    all.extend(run("after the file changed", &edited, "small-model-v1").await);
    all.extend(run("edited file, asked again", &edited, "small-model-v1").await);
    all.extend(run("another model", &edited, "large-model-v2").await);
    for (took, origin) in all {
        timings.record(took, origin);
    }

    // Another instance of the app (another process, or this one after a restart) finds the
    // answers in Redis without asking the model: an L2 hit, then copied into its own L1.
    let other = peer("llm-example").await?;
    let key = format!(
        "answer:small-model-v1:{}:{}",
        content_hash(&original),
        questions[0]
    );
    let started = Instant::now();
    match other.get::<Answer>(Kind::MODEL_DATA, &key).await {
        Some(a) => println!(
            "\nanother instance: {:?} from Redis in {:.1?} (L2 hits there: {})",
            a.text,
            started.elapsed(),
            other.stats().total.l2.hits
        ),
        None => println!("\nanother instance: not found (no Redis: each instance has only its L1)"),
    }

    println!(
        "\nmodel calls: {} (of {} questions), prompt tokens billed: {}",
        MODEL_CALLS.load(Ordering::Relaxed),
        questions.len() * 5,
        TOKENS_BILLED.load(Ordering::Relaxed)
    );
    timings.summary(&cache);
    Ok(())
}
