//! A user repository with cache-first reads: profiles and settings come from the cache, updates go
//! to the database and then invalidate, with one tag per user, everything cached about that user,
//! on every instance sharing the Redis.
//!
//! ```text
//! cargo run --example user_repository
//! ```
//!
//! Two instances of the app (`a` and `b`, two `Cache` handles on one Redis, as two processes would
//! be) read the same user; `a` updates it; `b` serves the new profile at once: the invalidation
//! travels through Redis (tag version) and the backplane (L1 eviction). Without Redis each instance
//! has only its own L1, and `b` keeps its copy until its TTL; the example says so.
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`).

use cache_core::{cached, Cache};
use examples::{connect, init_logging, peer, Timings};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Profile {
    id: u64,
    name: String,
    email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Settings {
    theme: String,
    newsletter: bool,
}

#[derive(Debug, Clone)]
enum DbError {
    NotFound(u64),
}

impl std::error::Error for DbError {}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::NotFound(id) => write!(f, "user {id} not found"),
        }
    }
}

/// The database: 25 ms per query.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, (Profile, Settings)>>,
    queries: AtomicU64,
}

impl Db {
    async fn query<T>(&self, f: impl FnOnce(&mut HashMap<u64, (Profile, Settings)>) -> T) -> T {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(25)).await;
        f(&mut self.rows.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One instance of the app's repository, with its own cache handle.
struct UserRepo {
    db: Arc<Db>,
    cache: Cache,
}

impl UserRepo {
    /// Cache-first read; tagged `user:{id}` so an update can drop everything about the user.
    #[cached(kind = "database_query", key = "profile:{id}", tags = ["user:{id}"], cache = self.cache)]
    async fn profile(&self, id: u64) -> Result<Profile, DbError> {
        self.db
            .query(|rows| rows.get(&id).map(|r| r.0.clone()))
            .await
            .ok_or(DbError::NotFound(id))
    }

    #[cached(kind = "database_query", key = "settings:{id}", tags = ["user:{id}"], cache = self.cache)]
    async fn settings(&self, id: u64) -> Result<Settings, DbError> {
        self.db
            .query(|rows| rows.get(&id).map(|r| r.1.clone()))
            .await
            .ok_or(DbError::NotFound(id))
    }

    /// Write to the database first, then invalidate the user's tag: the next read anywhere loads
    /// the new row. (Invalidating before the write would let a concurrent read cache the old row.)
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        self.db
            .query(|rows| match rows.get_mut(&id) {
                Some(r) => {
                    r.0.name = name.to_string();
                    Ok(())
                }
                None => Err(DbError::NotFound(id)),
            })
            .await?;
        self.cache.invalidate_tag(&format!("user:{id}")).await;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let db = Arc::new(Db::default());
    db.query(|rows| {
        for id in 1..=50 {
            rows.insert(
                id,
                (
                    Profile {
                        id,
                        name: format!("user {id}"),
                        email: format!("user{id}@example.com"),
                    },
                    Settings {
                        theme: if id % 2 == 0 { "dark" } else { "light" }.into(),
                        newsletter: id % 3 == 0,
                    },
                ),
            );
        }
    })
    .await;
    let a = UserRepo {
        db: db.clone(),
        cache: connect("users-example").await?,
    };
    let b = UserRepo {
        db: db.clone(),
        cache: peer("users-example").await?,
    };
    let shared = a.cache.ping_l2().await.is_ok();

    let mut timings = Timings::default();
    let mut read = async |repo: &UserRepo, id: u64| {
        let before = db.queries.load(Ordering::Relaxed);
        let started = Instant::now();
        let p = repo.profile(id).await;
        let _ = repo.settings(id).await;
        let origin = db.queries.load(Ordering::Relaxed) > before;
        timings.record(started.elapsed(), origin);
        p
    };

    println!("\n-- page views: 1,000 reads of profile + settings over 50 users, on both instances");
    let started = Instant::now();
    for i in 0..1_000u64 {
        let id = 1 + (i * 7919) % 50;
        let repo = if i % 3 == 0 { &b } else { &a };
        read(repo, id).await?;
    }
    println!(
        "took {:.1?}, database queries: {}",
        started.elapsed(),
        db.queries.load(Ordering::Relaxed)
    );

    println!("\n-- user 7 renames themself on instance a");
    println!("b before: {:?}", read(&b, 7).await?.name);
    a.rename(7, "Ada Lovelace").await?;
    tokio::time::sleep(Duration::from_millis(5)).await; // the backplane message is sub-millisecond
    let seen = read(&b, 7).await?.name;
    println!("b after:  {seen:?}");
    if seen == "Ada Lovelace" {
        println!("instance b saw the update: its L1 copy was evicted by the invalidation");
    } else if !shared {
        println!("instance b still serves its L1 copy: without Redis, invalidations cannot reach other instances (it expires with its TTL)");
    }
    println!("settings of user 7 on b: {:?}", b.settings(7).await?);
    match a.profile(999).await {
        Err(e) => println!("\nunknown user: {e} (errors are never cached)"),
        Ok(p) => println!("\nunexpected: {p:?}"),
    }

    println!(
        "\ndatabase queries in total: {}",
        db.queries.load(Ordering::Relaxed)
    );
    timings.summary(&a.cache);
    let sb = b.cache.stats();
    println!(
        "instance b: hit rate {:.1}%, L2 hits {}",
        sb.total.hit_rate * 100.0,
        sb.total.l2.hits
    );
    Ok(())
}
