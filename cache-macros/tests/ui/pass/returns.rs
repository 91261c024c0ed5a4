//! `Option<T>` and `Result<T, E>` returns (also through an alias), `none_ttl`, `unless`, and
//! `?` / early `return` inside the body.

use cache_core::{cached, Cache};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static CALLS: AtomicUsize = AtomicUsize::new(0);

// Concurrent callers share one call of the body, and so its error: `Clone`.
#[derive(Debug, Clone)]
enum AppError {
    NotFound,
    Parse(std::num::ParseIntError),
}

/// A one-parameter `Result` alias (as `std::io::Result`), with a shareable error.
mod io {
    pub type Result<T> = std::result::Result<T, std::sync::Arc<std::io::Error>>;
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError::Parse(e)
    }
}

#[cached(kind = "database_query", none_ttl = 60)]
async fn find(id: u32) -> Option<String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    if id == 0 {
        return None;
    }
    Some(format!("item-{id}"))
}

#[cached(kind = "database_query", none_ttl = Duration::from_secs(5), unless = result.is_empty())]
async fn find_name(id: u32) -> Option<String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    Some(if id == 1 { String::new() } else { "x".into() })
}

/// `?` converts through `From`, early `return` returns an `Err`.
#[cached(kind = "api_response", unless = *result > 1000)]
async fn parse(input: String) -> Result<i64, AppError> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    if input.is_empty() {
        return Err(AppError::NotFound);
    }
    let n: i64 = input.parse()?;
    Ok(n)
}

/// A `Result` alias with one parameter.
#[cached(kind = "api_response")]
async fn read(name: String) -> io::Result<String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    if name == "missing" {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "missing").into());
    }
    Ok(name.to_uppercase())
}

/// `unless` on a plain value.
#[cached(kind = "heavy_computation", unless = result.len() > 3)]
async fn digits(n: u64) -> String {
    CALLS.fetch_add(1, Ordering::SeqCst);
    n.to_string()
}

fn calls() -> usize {
    CALLS.swap(0, Ordering::SeqCst)
}

#[tokio::main]
async fn main() {
    cache_core::set_default_cache(Cache::builder().prefix("ui").build().await.unwrap()).unwrap();

    assert_eq!(find(1).await.as_deref(), Some("item-1"));
    assert_eq!(find(1).await.as_deref(), Some("item-1"));
    assert_eq!(find(0).await, None);
    assert_eq!(find(0).await, None, "None cached with none_ttl");
    assert_eq!(calls(), 2);

    assert_eq!(find_name(1).await.as_deref(), Some(""));
    assert_eq!(find_name(1).await.as_deref(), Some(""));
    assert_eq!(calls(), 2, "empty names are not cached (unless)");

    assert!(matches!(parse(String::new()).await, Err(AppError::NotFound)));
    assert!(matches!(parse("x".into()).await, Err(AppError::Parse(_))));
    assert!(matches!(parse("x".into()).await, Err(AppError::Parse(_))));
    assert_eq!(calls(), 3, "errors are not cached");
    assert_eq!(parse("7".into()).await.unwrap(), 7);
    assert_eq!(parse("7".into()).await.unwrap(), 7);
    assert_eq!(parse("5000".into()).await.unwrap(), 5000);
    assert_eq!(parse("5000".into()).await.unwrap(), 5000);
    assert_eq!(calls(), 3);

    assert!(read("missing".into()).await.is_err());
    assert_eq!(read("a".into()).await.unwrap(), "A");
    assert_eq!(read("a".into()).await.unwrap(), "A");
    assert_eq!(calls(), 2);

    assert_eq!(digits(12345).await, "12345");
    assert_eq!(digits(12345).await, "12345");
    assert_eq!(digits(12).await, "12");
    assert_eq!(digits(12).await, "12");
    assert_eq!(calls(), 3);
}
