//! Every built-in kind, a custom kind, `ttl` as seconds and as a `Duration` expression, plain `T`
//! returns, the installed (global) cache.

use cache_core::{cached, Cache, Kind, KindConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static CALLS: AtomicUsize = AtomicUsize::new(0);
const SHORT: Duration = Duration::from_secs(5);

#[cached(kind = "model_data")]
async fn model(n: u32) -> u32 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    n * 2
}

#[cached(kind = "session_data", ttl = 60)]
async fn session(id: String) -> String {
    CALLS.fetch_add(1, Ordering::SeqCst);
    format!("session-{id}")
}

#[cached(kind = "api_response", ttl = Duration::from_millis(1500))]
async fn api(path: &str) -> Vec<String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    vec![path.to_owned()]
}

#[cached(kind = "database_query", ttl = SHORT)]
pub async fn query(a: i64, b: i64) -> i64 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    a + b
}

/// Attributes and visibility are kept.
#[cached(kind = "heavy_computation", ttl = 3600u64)]
#[allow(clippy::needless_return)]
pub(crate) async fn heavy() -> (u8, bool) {
    CALLS.fetch_add(1, Ordering::SeqCst);
    return (1, true);
}

#[cached(kind = "static_data")]
async fn countries() -> Vec<(String, String)> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    vec![("fr".into(), "France".into())]
}

#[cached(kind = "llm-answer.v2", ttl = 86_400)]
async fn answer(question: String, model: String) -> String {
    CALLS.fetch_add(1, Ordering::SeqCst);
    format!("{model}: {question}?")
}

#[tokio::main]
async fn main() {
    // (Before a default cache is set, a call panics in a debug build: `tests/newcomer.rs`.)
    let cache = Cache::builder()
        .prefix("ui")
        .kind(Kind::new("llm-answer.v2"), KindConfig::new(Duration::from_secs(60)))
        .build()
        .await
        .unwrap();
    cache_core::set_default_cache(cache).unwrap();
    for _ in 0..2 {
        assert_eq!(model(21).await, 42);
        assert_eq!(session("a".into()).await, "session-a");
        assert_eq!(api("/x").await, vec!["/x".to_string()]);
        assert_eq!(query(1, 2).await, 3);
        assert_eq!(heavy().await, (1, true));
        assert_eq!(countries().await.len(), 1);
        assert_eq!(answer("why".into(), "m".into()).await, "m: why?");
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 7, "each body ran once");
}
