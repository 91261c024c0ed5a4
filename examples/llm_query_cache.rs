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
//! - Each answer is marked `[CACHED L1]`, `[CACHED L2]` or `[MODEL]` from the cache's events
//!   (`Cache::events`): the hit (with its tier) or the loader call the cache reports for that
//!   question's key.
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`); with no Redis it runs L1 only and says so.

use cache_core::events::{Event, EventStream, Tier};
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

/// The cache key `ask` uses (its `key` template).
fn answer_key(model: &str, content_hash: &str, question: &str) -> String {
    format!("answer:{model}:{content_hash}:{question}")
}

/// Where an answer came from, as the cache's events tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// A cache hit, from this tier.
    Cached(Tier),
    /// The model was called (a loader call).
    Model,
    /// The model failed and an older answer was served.
    Stale,
}

impl Served {
    fn marker(self) -> &'static str {
        match self {
            Served::Cached(Tier::L1) => "[CACHED L1]",
            Served::Cached(_) => "[CACHED L2]",
            Served::Model => "[MODEL]",
            Served::Stale => "[STALE]",
        }
    }
}

/// What the events waiting in `events` say about the lookup of `key` just made: its hit, its
/// loader call, or a stale answer (the last one wins: a miss in L1 then a hit in L2 is an L2
/// hit). The events of a call are all sent when it returns. Events of other keys (concurrent
/// requests, in a real service) are skipped: an app that serves many requests at once would read
/// its subscription in a task of its own and match events to requests by key the same way.
fn served(events: &mut EventStream, key: &str) -> Option<Served> {
    let mut found = None;
    while let Some(event) = events.try_recv() {
        if !event.entry().is_some_and(|e| e.is(Kind::MODEL_DATA, key)) {
            continue;
        }
        found = match event {
            Event::Hit { tier, .. } => Some(Served::Cached(tier)),
            Event::Load { .. } => Some(Served::Model),
            Event::StaleServed { .. } => Some(Served::Stale),
            _ => found,
        };
    }
    found
}

/// Asks every question about `data` with `model`, printing each answer with its marker; returns
/// each call's time and whether the model answered it.
async fn run(
    events: &mut EventStream,
    label: &str,
    data: &str,
    model: &str,
) -> Vec<(Duration, bool)> {
    let data = Arc::new(data.to_owned());
    let hash = content_hash(&data);
    println!("\n-- {label} (model {model}, content {})", &hash[..12]);
    let mut out = Vec::new();
    for q in QUESTIONS {
        let started = Instant::now();
        let a = ask(model.into(), hash.clone(), q.into(), data.clone()).await;
        let took = started.elapsed();
        let from = served(events, &answer_key(model, &hash, q));
        out.push((took, from == Some(Served::Model)));
        let text = a.map_or_else(|e| format!("error: {e}"), |a| a.text);
        let marker = from.map_or("[?]", Served::marker);
        println!("{took:>9.1?} {marker:<11} {q:<42} → {text}");
    }
    out
}

const QUESTIONS: [&str; 3] = [
    "What is the total revenue in this file?",
    "Which region has the highest revenue?",
    "Describe the data set.",
];

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
    // Subscribed before the first question: the marker of each answer comes from its events.
    let mut events = cache.events();

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sales.csv");
    let original = std::fs::read_to_string(path)?;
    let edited = format!("{original}north,gizmo,50,99.00\n");
    let mut timings = Timings::default();
    let mut all = Vec::new();
    let small = "small-model-v1";
    all.extend(run(&mut events, "first questions", &original, small).await);
    all.extend(run(&mut events, "same questions again", &original, small).await);
    all.extend(run(&mut events, "after the file changed", &edited, small).await);
    all.extend(run(&mut events, "edited file, asked again", &edited, small).await);
    all.extend(run(&mut events, "another model", &edited, "large-model-v2").await);
    for (took, origin) in all {
        timings.record(took, origin);
    }

    // Another instance of the app (another process, or this one after a restart) finds the
    // answers in Redis without asking the model: an L2 hit, then copied into its own L1.
    let other = peer("llm-example").await?;
    let mut other_events = other.events();
    let key = answer_key(small, &content_hash(&original), QUESTIONS[0]);
    let started = Instant::now();
    match other.get::<Answer>(Kind::MODEL_DATA, &key).await {
        Some(a) => println!(
            "\nanother instance: {:?} in {:.1?} {}",
            a.text,
            started.elapsed(),
            served(&mut other_events, &key).map_or("[?]", Served::marker)
        ),
        None => println!("\nanother instance: not found (no Redis: each instance has only its L1)"),
    }

    println!(
        "\nmodel calls: {} (of {} questions), prompt tokens billed: {}",
        MODEL_CALLS.load(Ordering::Relaxed),
        QUESTIONS.len() * 5,
        TOKENS_BILLED.load(Ordering::Relaxed)
    );
    timings.summary(&cache);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The markers come from the events of each call's own key: the model the first time, L1
    /// after, and another key's events never count.
    #[tokio::test]
    async fn each_answer_is_marked_by_the_events_of_its_key() {
        let cache = cache_core::Cache::builder()
            .prefix("llm-example-test")
            .build()
            .await
            .unwrap();
        cache_core::set_default_cache(cache.clone()).unwrap_or_else(|_| panic!("set twice"));
        let mut events = cache.events();
        let data = Arc::new("region,product,units,unit_price\nnorth,gizmo,1,2.0\n".to_owned());
        let hash = content_hash(&data);
        let ask_one = |q: &str| ask("m".into(), hash.clone(), q.into(), data.clone());
        let q = QUESTIONS[0];
        let key = answer_key("m", &hash, q);

        ask_one(q).await.unwrap();
        assert_eq!(served(&mut events, &key), Some(Served::Model));
        ask_one(q).await.unwrap();
        assert_eq!(served(&mut events, &key), Some(Served::Cached(Tier::L1)));
        // Another question's events say nothing about this one.
        ask_one(QUESTIONS[1]).await.unwrap();
        assert_eq!(served(&mut events, &key), None);
        // A question long enough for the cache to hash its key is matched all the same.
        let long = "Which product sold best in each region, month by month? ".repeat(5);
        ask_one(&long).await.unwrap();
        ask_one(&long).await.unwrap();
        let long_key = answer_key("m", &hash, &long);
        assert!(long_key.len() > cache_core::MAX_KEY_PART);
        assert_eq!(
            served(&mut events, &long_key),
            Some(Served::Cached(Tier::L1))
        );
    }
}
