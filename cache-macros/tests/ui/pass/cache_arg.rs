//! `cache = ...` with a `static LazyLock<Cache>`, an `Arc<Cache>`, a `OnceLock<Cache>`, and a
//! function call returning `Cache`.

use cache_core::{cached, Cache};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

static CALLS: AtomicUsize = AtomicUsize::new(0);

static LAZY: LazyLock<Cache> = LazyLock::new(|| {
    futures::executor::block_on(Cache::builder().prefix("ui-lazy").build()).expect("cache")
});
static SHARED: LazyLock<Arc<Cache>> = LazyLock::new(|| Arc::new(LAZY.clone()));
static ONCE: OnceLock<Cache> = OnceLock::new();

fn make_cache() -> Cache {
    LAZY.clone()
}

#[cached(kind = "static_data", cache = LAZY)]
async fn lazy(n: u8) -> u8 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    n
}

#[cached(kind = "static_data", cache = SHARED)]
async fn shared(n: u8) -> u8 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    n
}

#[cached(kind = "static_data", cache = ONCE.get().expect("cache built in main"))]
async fn once(n: u8) -> u8 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    n
}

#[cached(kind = "static_data", cache = make_cache())]
async fn made(n: u8) -> u8 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    n
}

#[tokio::main]
async fn main() {
    ONCE.set(Cache::builder().prefix("ui-once").build().await.unwrap()).unwrap();
    for _ in 0..3 {
        assert_eq!(lazy(1).await, 1);
        assert_eq!(shared(2).await, 2);
        assert_eq!(once(3).await, 3);
        assert_eq!(made(4).await, 4);
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 4);
}
