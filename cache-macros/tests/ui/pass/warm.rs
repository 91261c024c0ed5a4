//! `warm` on zero-argument functions returning `T`, `Option<T>` and `Result<T, E>`: each is
//! registered as a warmer, and running a warmer fills the cache.

use cache_core::{cached, Cache};
use std::sync::atomic::{AtomicUsize, Ordering};

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(kind = "static_data", warm)]
async fn countries() -> Vec<String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    vec!["fr".into(), "jp".into()]
}

#[cached(kind = "static_data", ttl = 60, warm, none_ttl = 5)]
pub async fn default_country() -> Option<String> {
    Some("fr".into())
}

#[derive(Debug, Clone)]
struct NoDisplay;

#[cached(warm, kind = "static_data")]
async fn failing() -> Result<u32, NoDisplay> {
    Err(NoDisplay)
}

#[tokio::main]
async fn main() {
    cache_core::set_default_cache(Cache::builder().prefix("ui").build().await.unwrap()).unwrap();
    // Names are `module_path!()::fn` (the module is the crate root here).
    let mut names: Vec<&str> = cache_core::__private::warmers()
        .map(|w| w.name.rsplit("::").next().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["countries", "default_country", "failing"]);
    for w in cache_core::__private::warmers() {
        let outcome = (w.run)().await;
        if w.name.ends_with("failing") {
            let err = outcome.unwrap_err();
            assert!(err.contains("NoDisplay"), "{err}");
        } else {
            outcome.unwrap();
        }
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(countries().await.len(), 2);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "warmed: the body does not run again");
}
