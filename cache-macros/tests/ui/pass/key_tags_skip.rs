//! `key` templates (`{{`/`}}` escapes, `{name:?}`), `tags`, `skip` of a non-`Serialize`
//! argument, default keys over several arguments (more than serde's 16-tuple limit too).

use cache_core::{cached, Cache};
use std::sync::atomic::{AtomicUsize, Ordering};

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Not `Serialize`: only usable as a skipped argument.
struct Pool {
    name: &'static str,
}

#[cached(kind = "database_query", key = "user:{id}", tags = ["user:{id}", "users"])]
async fn user(id: u64) -> String {
    CALLS.fetch_add(1, Ordering::SeqCst);
    format!("user-{id}")
}

#[cached(kind = "api_response", key = "{{literal}}:{region:?}:{page:03}", tags = ["pages"])]
async fn page(region: String, page: u32) -> Vec<u32> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    vec![page; region.len()]
}

#[cached(kind = "database_query", skip(pool, trace))]
async fn orders(pool: &Pool, customer: u64, trace: bool) -> Vec<String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let _ = trace;
    vec![format!("{}:{customer}", pool.name)]
}

#[allow(clippy::too_many_arguments)]
#[cached(kind = "heavy_computation")]
async fn wide(
    a0: u8, a1: u8, a2: u8, a3: u8, a4: u8, a5: u8, a6: u8, a7: u8, a8: u8, a9: u8,
    a10: u8, a11: u8, a12: u8, a13: u8, a14: u8, a15: u8, a16: u8, a17: u8,
) -> u32 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17]
        .iter()
        .map(|&x| u32::from(x))
        .sum()
}

/// `mut` arguments and references.
#[cached(kind = "heavy_computation")]
async fn sorted(mut items: Vec<i32>, by: &str) -> Vec<i32> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    items.sort();
    if by == "desc" {
        items.reverse();
    }
    items
}

#[tokio::main]
async fn main() {
    cache_core::set_default_cache(Cache::builder().prefix("ui").build().await.unwrap()).unwrap();
    for _ in 0..2 {
        assert_eq!(user(1).await, "user-1");
        assert_eq!(page("eu".into(), 7).await, vec![7, 7]);
        assert_eq!(orders(&Pool { name: "a" }, 9, true).await, ["a:9"]);
        // Another pool and another `trace`: same key, so the cached value of pool "a".
        assert_eq!(orders(&Pool { name: "b" }, 9, false).await, ["a:9"]);
        assert_eq!(wide(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2).await, 19);
        assert_eq!(sorted(vec![3, 1, 2], "desc").await, [3, 2, 1]);
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 5);
}
