//! `#[cache_put]` and `#[cache_invalidate]`: every return shape, key lists, tags alone,
//! `before`, `ttl` / `ttl_fn`, the installed cache or `cache = ...`, any receiver, generic and
//! `impl Trait` arguments, `?` in the body; the futures are `Send`.

use cache_core::{cache_invalidate, cache_put, cached, Cache, Kind};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
struct DbError;

#[cached(kind = "database_query", key = "user:{id}")]
async fn user(id: u64) -> Result<String, DbError> {
    Ok(format!("loaded-{id}"))
}

#[cached(kind = "database_query", key = "user:{id}")]
async fn find_user(id: u64) -> Option<String> {
    Some(format!("found-{id}"))
}

/// The installed cache; `Ok` stored as `String`.
#[cache_put(kind = "database_query", key = "user:{id}", tags = ["user:{id}"], ttl = 60)]
pub async fn rename(id: u64, name: &str) -> Result<String, DbError> {
    if name.is_empty() {
        return Err(DbError);
    }
    let parsed: u64 = "1".parse().map_err(|_| DbError)?;
    Ok(format!("{name}-{}", id * parsed))
}

/// `Some` stored as `String`, under two keys, for a computed time.
#[cache_put(
    kind = "database_query",
    key = ["user:{id}", "email:{email}"],
    ttl = Duration::from_secs(id + 30),
)]
async fn register(id: u64, email: String) -> Option<String> {
    Some(email)
}

#[cache_put(kind = "api_response", key = "n:{n}", ttl_fn = |v: &u64| Duration::from_secs(*v + 1))]
async fn store_number(n: u64) -> u64 {
    n
}

#[cache_invalidate(kind = "database_query", key = ["user:{id}", "email:{email}"], tags = ["user:{id}"])]
async fn delete(id: u64, email: String) -> Result<(), DbError> {
    let _ = (id, email);
    Ok(())
}

#[cache_invalidate(tags = ["users"], before = true)]
async fn purge() {}

#[cache_invalidate(tags = ["user:{id}"], before = false)]
async fn touch(id: u64) -> u64 {
    id
}

/// Generic and `impl Trait` arguments are fine: the body always runs.
#[cache_invalidate(kind = "database_query", key = "user:{id}")]
async fn delete_generic<T: std::fmt::Display>(id: T, reason: impl AsRef<str>) -> String {
    format!("{id}: {}", reason.as_ref())
}

struct Repo {
    cache: Arc<Cache>,
    writes: u32,
}

impl Repo {
    #[cache_put(kind = "database_query", key = "user:{id}", cache = self.cache)]
    async fn save(&self, id: u64) -> String {
        format!("saved-{id}")
    }

    #[cache_put(kind = "database_query", key = "user:{id}", cache = self.cache)]
    async fn save_mut(&mut self, id: u64) -> String {
        self.writes += 1;
        format!("saved-{id}-{}", self.writes)
    }

    #[cache_invalidate(kind = "database_query", key = "user:{id}", cache = self.cache)]
    async fn close(self, id: u64) -> u32 {
        let _ = id;
        self.writes
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::main]
async fn main() {
    let cache = Cache::builder().prefix("ui-write").build().await.unwrap();
    cache_core::set_default_cache(cache.clone()).unwrap();

    assert_send(rename(1, "ada")).await.unwrap();
    assert_eq!(user(1).await.unwrap(), "ada-1"); // the put's value
    assert!(rename(1, "").await.is_err());
    assert_eq!(user(1).await.unwrap(), "ada-1");

    assert_send(register(2, "bob@x".into())).await;
    assert_eq!(find_user(2).await.as_deref(), Some("bob@x"));
    let by_email: Option<Arc<String>> = cache.get(Kind::DATABASE_QUERY, "email:bob@x").await;
    assert_eq!(by_email.as_deref().map(String::as_str), Some("bob@x"));

    store_number(5).await;
    assert_send(delete(2, "bob@x".into())).await.unwrap();
    assert_eq!(find_user(2).await.as_deref(), Some("found-2"));
    purge().await;
    assert_eq!(touch(3).await, 3);
    assert_eq!(delete_generic(4u8, "test").await, "4: test");

    let mut repo = Repo {
        cache: Arc::new(cache.clone()),
        writes: 0,
    };
    assert_eq!(repo.save(7).await, "saved-7");
    assert_eq!(repo.save_mut(7).await, "saved-7-1");
    assert_eq!(user(7).await.unwrap(), "saved-7-1");
    assert_eq!(repo.close(7).await, 1);
    assert_eq!(user(7).await.unwrap(), "loaded-7");
}
