//! A user repository over a slow "database": cached reads, `#[cache_put]` on update,
//! `#[cache_invalidate]` on delete, a cached "not found" error, and where each answer came from.
//!
//! ```text
//! cargo run --example write_side_macros
//! ```
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`). With no Redis there it still works,
//! L1-only, and says so.

use cache_core::{cache_invalidate, cache_put, cached, Cache, Source};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// Serializable, so that "not found" can be cached for a while (`cache_errors`).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum RepoError {
    NotFound(u64),
}

impl std::fmt::Display for RepoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoError::NotFound(id) => write!(f, "user {id} not found"),
        }
    }
}

impl std::error::Error for RepoError {}

struct Users {
    cache: Cache,
    rows: Mutex<HashMap<u64, String>>,
    queries: AtomicUsize,
}

impl Users {
    /// 30 ms per query.
    async fn query(&self, id: u64) -> Option<String> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.rows.lock().ok()?.get(&id).cloned()
    }

    /// Cached under `user:{id}`; unknown ids are answered from the cache for 10 s.
    #[cached(
        kind = "database_query",
        key = "user:{id}",
        cache_errors = 10,
        cache = self.cache,
        companions(traced),
    )]
    async fn user(&self, id: u64) -> Result<User, RepoError> {
        let name = self.query(id).await.ok_or(RepoError::NotFound(id))?;
        Ok(User { id, name })
    }

    /// The profile page reads this one: plain entries, which `rename` overwrites.
    #[cached(kind = "database_query", key = "profile:{id}", cache = self.cache, companions(traced))]
    async fn profile(&self, id: u64) -> Option<User> {
        let name = self.query(id).await?;
        Some(User { id, name })
    }

    /// Stores the updated user where `profile` reads it, on every instance.
    #[cache_put(kind = "database_query", key = "profile:{id}", cache = self.cache)]
    async fn rename(&self, id: u64, name: String) -> Result<User, RepoError> {
        let mut rows = self.rows.lock().map_err(|_| RepoError::NotFound(id))?;
        let row = rows.get_mut(&id).ok_or(RepoError::NotFound(id))?;
        row.clone_from(&name);
        Ok(User { id, name })
    }

    /// Drops both entries of the user once the row is gone.
    #[cache_invalidate(kind = "database_query", key = ["user:{id}", "profile:{id}"], cache = self.cache)]
    async fn delete(&self, id: u64) -> Result<(), RepoError> {
        let removed = self.rows.lock().ok().and_then(|mut r| r.remove(&id));
        removed.map(drop).ok_or(RepoError::NotFound(id))
    }
}

fn shown(source: Source) -> &'static str {
    if source.is_cached() {
        "cache"
    } else {
        "database"
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder()
        .redis_url(url)
        .prefix("user-repository")
        .build()
        .await?;
    match cache.ping_l2().await {
        Ok(rtt) => println!("L2: Redis reachable (PING {rtt:?}): running L1 + L2"),
        Err(e) => println!("L2: Redis not reachable ({e}): running L1 only"),
    }
    let _ = cache.clear_all().await;
    let users = Users {
        cache,
        rows: Mutex::new(HashMap::from([(1, "Ada".to_string())])),
        queries: AtomicUsize::new(0),
    };

    for id in [1, 1, 2, 2] {
        let got = users.user_traced(id).await;
        println!(
            "user({id}) = {:<28} from the {} ({} ms old)",
            format!("{:?}", got.value),
            shown(got.source),
            got.age.as_millis()
        );
    }

    users.profile(1).await;
    users.rename(1, "Grace".into()).await?;
    let p = users.profile_traced(1).await;
    println!(
        "after rename: profile(1) = {:?}, from the {}",
        p.value.map(|u| u.name),
        shown(p.source)
    );

    users.delete(1).await?;
    let p = users.profile_traced(1).await;
    println!(
        "after delete: profile(1) = {:?}, from the {}",
        p.value,
        shown(p.source)
    );
    println!(
        "database queries: {}",
        users.queries.load(Ordering::Relaxed)
    );
    Ok(())
}
