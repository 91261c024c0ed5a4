//! `condition`, `ttl_fn` (a path, a closure with an inferred argument, on `Option<T>`),
//! `cache_errors` (literal, `Duration` expression, through a `Result` alias), `companions` on
//! free functions and methods (lifetimes, `mut` arguments, `#[cfg]`), and the `bypass` /
//! `refresh` scopes; the futures are `Send`.

use cache_core::{cached, Cache, Lookup, Source};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AppError {
    NotFound(u64),
}

mod app {
    /// An alias named `Result`: still a `Result` function (its error type is not written out).
    pub type Result<T> = std::result::Result<T, super::AppError>;
}

fn ttl_of(v: &Vec<u64>) -> Duration {
    Duration::from_secs(v.len() as u64 + 1)
}

#[cached(kind = "api_response", condition = filter.is_none() && page < 10, ttl_fn = ttl_of)]
async fn list(page: u64, filter: Option<String>) -> Vec<u64> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let _ = filter;
    vec![page]
}

#[cached(kind = "api_response", ttl_fn = |v| Duration::from_secs(*v), none_ttl = 5)]
async fn maybe(n: u64) -> Option<u64> {
    (n > 0).then_some(n)
}

#[cached(kind = "database_query", cache_errors = 60, companions(traced, refresh))]
async fn lookup(id: u64) -> Result<String, AppError> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    if id == 0 {
        return Err(AppError::NotFound(id));
    }
    Ok(id.to_string())
}

#[cached(kind = "database_query", cache_errors = Duration::from_millis(500), ttl = 30)]
async fn lookup_alias(id: u64) -> app::Result<u64> {
    Err(AppError::NotFound(id))
}

#[cfg(not(any()))]
#[cached(kind = "heavy_computation", companions(traced))]
pub async fn sum(mut values: Vec<u64>) -> u64 {
    values.sort();
    values.iter().sum()
}

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(kind = "api_response", cache = self.cache, companions(traced, refresh))]
    async fn echo<'a>(&'a self, text: &'a str) -> String {
        text.to_owned()
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::main]
async fn main() {
    let cache = Cache::builder().prefix("ui-policy").build().await.unwrap();
    cache_core::set_default_cache(cache.clone()).unwrap();

    list(1, None).await;
    list(1, None).await;
    list(1, Some("x".into())).await;
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(maybe(3).await, Some(3));

    CALLS.store(0, Ordering::SeqCst);
    assert_eq!(lookup(0).await, Err(AppError::NotFound(0)));
    let traced: Lookup<Result<String, AppError>> = assert_send(lookup_traced(0)).await;
    assert_eq!((traced.value, traced.source), (Err(AppError::NotFound(0)), Source::L1));
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(assert_send(lookup_refresh(0)).await, Err(AppError::NotFound(0)));
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    assert!(lookup_alias(1).await.is_err());

    assert_eq!(sum(vec![2, 1]).await, 3);
    assert_eq!(sum_traced(vec![2, 1]).await.source, Source::L1);

    let repo = Repo { cache };
    assert_eq!(repo.echo("hi").await, "hi");
    assert!(repo.echo_traced("hi").await.is_cached());
    assert_eq!(repo.echo_refresh("hi").await, "hi");

    assert_eq!(assert_send(cache_core::scope::bypass(lookup(5))).await.as_deref(), Ok("5"));
    assert_eq!(assert_send(cache_core::scope::refresh(lookup(5))).await.as_deref(), Ok("5"));
    let handle = tokio::spawn(cache_core::scope::refresh(async { lookup(6).await }));
    assert_eq!(handle.await.unwrap().as_deref(), Ok("6"));
}
