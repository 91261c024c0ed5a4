//! The write-side attributes and per-call policy, end to end against a real redis-server:
//! `#[cache_put]` and `#[cache_invalidate]` (when they act, on which instances), dynamic TTLs
//! (`ttl = <expr>`, `ttl_fn`) observed with `PTTL`, cached errors, `condition`, provenance
//! (`_traced` companions, `Cache::get_or_load_traced`), `_refresh` companions and the
//! `bypass` / `refresh` scopes.
//!
//! Every test builds its own caches with a unique prefix and passes them with `cache = self.cache`
//! to the methods of a small repository over an in-memory "database" that counts its queries.

use cache_core::{cache_invalidate, cache_put, cached, Cache, EntryOptions, Kind, Source};
use cache_tests::{cache_on, init_tracing, unique_prefix, RedisServer};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum DbError {
    NotFound(u64),
    Invalid(String),
}

/// Two instances (their own L1, one Redis, one prefix) and a shared database.
async fn two_instances(server: &RedisServer, name: &str) -> (Repo, Repo) {
    let prefix = unique_prefix(name);
    let db = Arc::new(Db::default());
    let a = Repo::new(cache_on(server, &prefix).await, db.clone());
    let b = Repo::new(cache_on(server, &prefix).await, db);
    (a, b)
}

async fn one_instance(server: &RedisServer, name: &str) -> Repo {
    let cache = cache_on(server, &unique_prefix(name)).await;
    Repo::new(cache, Arc::new(Db::default()))
}

/// Every key under `prefix` in Redis.
async fn keys_under(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut conn = server.conn().await;
    let mut keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.expect("KEYS");
    keys.sort();
    keys
}

/// `PTTL` of the entry `key` of `kind`, in ms.
async fn pttl(server: &RedisServer, cache: &Cache, kind: &str, key: &str) -> i64 {
    let full = format!("{}:v1:{kind}:{key}", cache.prefix());
    server.conn().await.pttl(&full).await.expect("PTTL")
}

/// Polls `f` every 10 ms for up to 2 s (for what travels over the backplane).
async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The source of truth, counting its queries.
#[derive(Default)]
struct Db {
    users: Mutex<HashMap<u64, String>>,
    queries: AtomicUsize,
}

impl Db {
    fn insert(&self, id: u64, name: &str) {
        self.users
            .lock()
            .expect("db lock")
            .insert(id, name.to_owned());
    }

    fn find(&self, id: u64) -> Option<User> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let name = self.users.lock().expect("db lock").get(&id).cloned()?;
        Some(User { id, name })
    }
}

struct Repo {
    cache: Cache,
    db: Arc<Db>,
    /// What the body of `delete_*` saw in the cache when it ran.
    entry_seen_by_body: AtomicBool,
    /// Calls of the bodies of functions without a database.
    calls: AtomicUsize,
    /// A value that changes under the cache.
    version: AtomicU64,
}

impl Repo {
    fn new(cache: Cache, db: Arc<Db>) -> Self {
        Repo {
            cache,
            db,
            entry_seen_by_body: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            version: AtomicU64::new(1),
        }
    }

    fn queries(&self) -> usize {
        self.db.queries.load(Ordering::SeqCst)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    // --- reads ---

    #[cached(kind = "database_query", key = "user:{id}", tags = ["user:{id}"], cache = self.cache, companions(traced, refresh))]
    async fn user(&self, id: u64) -> Result<User, DbError> {
        self.db.find(id).ok_or(DbError::NotFound(id))
    }

    /// The same entries as `user`, read as a plain value.
    #[cached(kind = "database_query", key = "user:{id}", cache = self.cache)]
    async fn user_plain(&self, id: u64) -> User {
        self.db.find(id).unwrap_or(User {
            id,
            name: "?".into(),
        })
    }

    #[cached(kind = "database_query", key = "email:{email}", cache = self.cache)]
    async fn user_by_email(&self, email: String) -> Option<User> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = email;
        None
    }

    #[cached(kind = "session_data", key = "nick:{id}", cache = self.cache)]
    async fn nick(&self, id: u64) -> Option<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = id;
        None
    }

    /// Page 1 of the team, unfiltered requests only.
    #[cached(kind = "api_response", key = "team:{team}", condition = filter.is_none(), cache = self.cache)]
    async fn team(&self, team: u32, filter: Option<String>) -> Vec<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let all = vec![format!("{team}-ada"), format!("{team}-bob")];
        match filter {
            Some(f) => all.into_iter().filter(|n| n.contains(&f)).collect(),
            None => all,
        }
    }

    #[cached(kind = "database_query", key = "member:{id}", tags = ["team:{team}"], cache = self.cache)]
    async fn member(&self, id: u64, team: u32) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        id + u64::from(team)
    }

    /// TTL from an argument, evaluated per call.
    #[cached(kind = "api_response", key = "ttl:{secs}", ttl = Duration::from_secs(secs), cache = self.cache)]
    async fn with_ttl(&self, secs: u64) -> u64 {
        secs
    }

    /// TTL from the value: `n` seconds.
    #[cached(kind = "api_response", key = "tf:{n}", ttl_fn = |v: &u64| Duration::from_secs(*v), cache = self.cache)]
    async fn ttl_from_value(&self, n: u64) -> u64 {
        n
    }

    /// TTL from the `Some` value; `None` cached for 7 s.
    #[cached(kind = "api_response", key = "tfo:{n}", ttl_fn = secs_of, none_ttl = 7, cache = self.cache)]
    async fn maybe_ttl(&self, n: u64) -> Option<u64> {
        (n > 0).then_some(n)
    }

    /// Unknown schemas are `Err(NotFound)`, cached for 1 s; known ones for 300 s.
    #[cached(kind = "static_data", key = "schema:{name}", ttl = 300, cache_errors = 1, cache = self.cache, companions(traced))]
    async fn schema(&self, name: String) -> Result<String, DbError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        match name.as_str() {
            "orders" => Ok("id, total".into()),
            _ => Err(DbError::NotFound(name.len() as u64)),
        }
    }

    #[cached(kind = "static_data", key = "version", cache = self.cache, companions(refresh))]
    async fn version(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.version.load(Ordering::SeqCst)
    }

    /// Calls `version` and `user(1)` from its body.
    #[cached(kind = "api_response", key = "summary", cache = self.cache, companions(refresh))]
    async fn summary(&self) -> String {
        let v = self.version().await;
        let u = self.user(1).await.map(|u| u.name).unwrap_or_default();
        format!("v{v} {u}")
    }

    // --- writes ---

    #[cache_put(kind = "database_query", key = "user:{id}", cache = self.cache)]
    async fn rename(&self, id: u64, name: String) -> Result<User, DbError> {
        if name.is_empty() {
            return Err(DbError::Invalid("empty name".into()));
        }
        self.db.insert(id, &name);
        Ok(User { id, name })
    }

    /// Stores the user under both keys (by id for `user`, by email for `user_by_email`).
    #[cache_put(kind = "database_query", key = ["user:{id}", "email:{email}"], ttl = 120, cache = self.cache)]
    async fn register(&self, id: u64, email: String) -> Option<User> {
        let name = email.split('@').next().unwrap_or_default().to_owned();
        self.db.insert(id, &name);
        Some(User { id, name })
    }

    #[cache_put(kind = "session_data", key = "nick:{id}", cache = self.cache)]
    async fn set_nick(&self, id: u64, nick: Option<String>) -> Option<String> {
        let _ = id;
        nick
    }

    /// Stored for `n` seconds.
    #[cache_put(kind = "api_response", key = "tf:{n}", ttl_fn = |v: &u64| Duration::from_secs(*v), cache = self.cache)]
    async fn put_ttl_from_value(&self, n: u64) -> u64 {
        n
    }

    /// Invalidates after success; `Err` for unknown users.
    #[cache_invalidate(kind = "database_query", key = "user:{id}", cache = self.cache)]
    async fn delete(&self, id: u64) -> Result<(), DbError> {
        self.entry_seen_by_body
            .store(self.cached_user(id).await, Ordering::SeqCst);
        match self.db.users.lock().expect("db lock").remove(&id) {
            Some(_) => Ok(()),
            None => Err(DbError::NotFound(id)),
        }
    }

    /// Invalidates before the body runs, whatever it returns.
    #[cache_invalidate(kind = "database_query", key = "user:{id}", before = true, cache = self.cache)]
    async fn delete_before(&self, id: u64) -> Result<(), DbError> {
        self.entry_seen_by_body
            .store(self.cached_user(id).await, Ordering::SeqCst);
        match self.db.users.lock().expect("db lock").remove(&id) {
            Some(_) => Ok(()),
            None => Err(DbError::NotFound(id)),
        }
    }

    #[cache_invalidate(tags = ["team:{team}"], cache = self.cache)]
    async fn disband(&self, team: u32) {
        let _ = team;
    }

    /// Whether this instance's cache holds user `id` (either tier).
    async fn cached_user(&self, id: u64) -> bool {
        self.cache
            .get::<User>(Kind::DATABASE_QUERY, &format!("user:{id}"))
            .await
            .is_some()
    }
}

fn secs_of(v: &u64) -> Duration {
    Duration::from_secs(*v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_is_read_by_cached_functions_of_the_same_kind_and_key_without_running_their_bodies() {
    let server = RedisServer::start();
    let (a, b) = two_instances(&server, "put-meets-read").await;

    let stored = a.rename(1, "Ada".into()).await.expect("rename");
    assert_eq!(stored.name, "Ada");
    // The key is the one `#[cached(key = "user:{id}")]` reads.
    let key = format!("{}:v1:database_query:user:1", a.cache.prefix());
    assert_eq!(keys_under(&server, a.cache.prefix()).await, [key]);

    // Same instance (L1), other instance (L2), a `-> Result<User, _>` and a `-> User` reader:
    // none runs its body.
    assert_eq!(a.user(1).await, Ok(stored.clone()));
    assert_eq!(b.user(1).await, Ok(stored.clone()));
    assert_eq!(b.user_plain(1).await, stored);
    assert_eq!(
        a.queries() + b.queries(),
        0,
        "no reader queried the database"
    );

    // `Option<T>` puts store `Some` in the layout of `-> Option<T>` readers.
    a.set_nick(1, Some("ace".into())).await;
    assert_eq!(b.nick(1).await.as_deref(), Some("ace"));
    assert_eq!(b.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_with_several_keys_stores_the_value_under_each() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "put-keys").await;
    let user = repo.register(5, "eve@example.com".into()).await;
    assert_eq!(repo.user_by_email("eve@example.com".into()).await, user);
    assert_eq!(repo.user(5).await.ok(), user);
    assert_eq!((repo.calls(), repo.queries()), (0, 0));
    // `ttl = 120` on the put.
    let left = pttl(&server, &repo.cache, "database_query", "user:5").await;
    assert!((110_000..=120_000).contains(&left), "PTTL {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_stores_nothing_when_the_function_returns_err_or_none() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "put-err").await;
    assert!(repo.rename(1, String::new()).await.is_err());
    repo.set_nick(1, None).await;
    assert_eq!(keys_under(&server, repo.cache.prefix()).await.len(), 0);
    // The readers run their bodies.
    assert_eq!(repo.user(1).await, Err(DbError::NotFound(1)));
    assert_eq!(repo.nick(1).await, None);
    assert_eq!((repo.queries(), repo.calls()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_replaces_the_value_other_instances_hold_in_l1() {
    let server = RedisServer::start();
    let (a, b) = two_instances(&server, "put-coherence").await;
    a.db.insert(1, "Ada");
    assert_eq!(b.user(1).await.expect("user").name, "Ada"); // in b's L1 now
    a.rename(1, "Grace".into()).await.expect("rename");
    assert!(
        eventually(async || b.user(1).await.is_ok_and(|u| u.name == "Grace")).await,
        "b still serves the old name"
    );
    assert_eq!(
        b.queries(),
        1,
        "b read the new name from L2, not the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_acts_after_the_function_succeeds_and_not_after_err() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "invalidate-after").await;
    repo.db.insert(1, "Ada");
    repo.user(1).await.expect("user");
    assert_eq!(repo.queries(), 1);

    // Unknown user: `Err`, nothing invalidated.
    assert_eq!(repo.delete(2).await, Err(DbError::NotFound(2)));
    assert!(repo.cached_user(1).await);

    // Success: invalidated after the body ran (the body still saw the entry).
    repo.delete(1).await.expect("delete");
    assert!(
        repo.entry_seen_by_body.load(Ordering::SeqCst),
        "after: the body runs first"
    );
    assert!(!repo.cached_user(1).await);
    assert_eq!(repo.user(1).await, Err(DbError::NotFound(1)));
    assert_eq!(
        repo.queries(),
        2,
        "the read after the delete queried the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_before_acts_before_the_body_runs_even_when_it_fails() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "invalidate-before").await;
    repo.db.insert(1, "Ada");
    repo.user(1).await.expect("user");

    repo.delete_before(1).await.expect("delete");
    assert!(
        !repo.entry_seen_by_body.load(Ordering::SeqCst),
        "before: the body ran after the invalidation"
    );

    // A failing call invalidates too: it did so before its body ran.
    repo.db.insert(1, "Ada");
    repo.user(1).await.expect("user");
    repo.db.users.lock().expect("db lock").remove(&1); // gone from the database, still cached
    assert!(repo.cached_user(1).await);
    assert_eq!(repo.delete_before(1).await, Err(DbError::NotFound(1)));
    assert!(!repo.cached_user(1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_reaches_a_second_instance() {
    let server = RedisServer::start();
    let (a, b) = two_instances(&server, "invalidate-coherence").await;
    a.db.insert(1, "Ada");
    b.user(1).await.expect("user"); // b: L1 and L2
    a.user(1).await.expect("user"); // a: from L2
    assert_eq!(a.queries(), 1);

    a.delete(1).await.expect("delete");
    // b's L1 copy is dropped through the backplane: b's next read misses and queries.
    assert!(
        eventually(async || !b.cached_user(1).await).await,
        "b still holds user 1"
    );
    assert_eq!(b.user(1).await, Err(DbError::NotFound(1)));
    assert_eq!(b.queries(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_a_tag_drops_every_entry_carrying_it_on_every_instance() {
    let server = RedisServer::start();
    let (a, b) = two_instances(&server, "invalidate-tags").await;
    for id in [1, 2] {
        b.member(id, 7).await;
    }
    b.member(3, 8).await;
    assert_eq!(b.calls(), 3);

    a.disband(7).await;
    assert!(
        eventually(async || {
            b.member(1, 7).await;
            b.calls() > 3
        })
        .await,
        "team 7 still cached on b"
    );
    b.member(2, 7).await;
    b.member(3, 8).await; // team 8: still cached
    assert_eq!(b.calls(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_expression_is_evaluated_at_each_call() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "ttl-expr").await;
    repo.with_ttl(30).await;
    repo.with_ttl(3000).await;
    let short = pttl(&server, &repo.cache, "api_response", "ttl:30").await;
    let long = pttl(&server, &repo.cache, "api_response", "ttl:3000").await;
    assert!((25_000..=30_000).contains(&short), "PTTL {short}");
    assert!((2_990_000..=3_000_000).contains(&long), "PTTL {long}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_fn_sets_the_ttl_from_the_value_in_cached_and_put() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "ttl-fn").await;
    repo.ttl_from_value(40).await;
    let left = pttl(&server, &repo.cache, "api_response", "tf:40").await;
    assert!((35_000..=40_000).contains(&left), "PTTL {left}");

    // `Option<T>`: the `Some` value decides; `None` gets `none_ttl`.
    repo.maybe_ttl(50).await;
    repo.maybe_ttl(0).await;
    let some = pttl(&server, &repo.cache, "api_response", "tfo:50").await;
    let none = pttl(&server, &repo.cache, "api_response", "tfo:0").await;
    assert!((45_000..=50_000).contains(&some), "PTTL {some}");
    assert!((1..=7_000).contains(&none), "PTTL {none}");

    repo.put_ttl_from_value(60).await;
    let put = pttl(&server, &repo.cache, "api_response", "tf:60").await;
    assert!((55_000..=60_000).contains(&put), "PTTL {put}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_error_is_served_without_the_body_then_expires() {
    let server = RedisServer::start();
    let (a, b) = two_instances(&server, "cache-errors").await;

    let err = DbError::NotFound("missing".len() as u64);
    assert_eq!(a.schema("missing".into()).await, Err(err.clone()));
    assert_eq!(a.schema("missing".into()).await, Err(err.clone()));
    assert_eq!(b.schema("missing".into()).await, Err(err.clone()));
    assert_eq!(
        a.calls() + b.calls(),
        1,
        "the error was served from L1 and L2"
    );
    // Its own TTL (`cache_errors = 1`), not `ttl = 300`.
    let left = pttl(&server, &a.cache, "static_data", "schema:missing").await;
    assert!((1..=1_000).contains(&left), "PTTL {left}");
    let ok = a.schema("orders".into()).await;
    assert_eq!(ok.as_deref(), Ok("id, total"));
    let left = pttl(&server, &a.cache, "static_data", "schema:orders").await;
    assert!(left > 290_000, "PTTL {left}");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(a.schema("missing".into()).await, Err(err));
    assert_eq!(a.calls(), 3, "the expired error was reloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_cached_error() {
    let server = RedisServer::start();
    let repo = Arc::new(one_instance(&server, "cache-errors-stampede").await);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (repo, barrier) = (repo.clone(), barrier.clone());
            // Each task waits for the others, then asks for the missing schema at once.
            tokio::spawn(async move {
                barrier.wait().await;
                repo.schema("gone".into()).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), Err(DbError::NotFound(4)));
    }
    assert_eq!(repo.calls(), 1, "one body run for 20 callers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_condition_runs_the_body_without_reading_or_writing_the_cache() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "condition").await;

    // Filtered: not cached, never read from the cache.
    assert_eq!(repo.team(1, Some("ada".into())).await, ["1-ada"]);
    assert_eq!(repo.team(1, Some("ada".into())).await, ["1-ada"]);
    assert_eq!(repo.calls(), 2);
    assert_eq!(keys_under(&server, repo.cache.prefix()).await.len(), 0);

    // Unfiltered: cached.
    assert_eq!(repo.team(1, None).await.len(), 2);
    assert_eq!(repo.team(1, None).await.len(), 2);
    assert_eq!(repo.calls(), 3);
    // A filtered call does not read the full entry under the same key.
    assert_eq!(repo.team(1, Some("bob".into())).await, ["1-bob"]);
    assert_eq!(repo.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traced_companion_reports_loader_l1_and_l2_with_ages() {
    let server = RedisServer::start();
    let (a, b) = two_instances(&server, "traced").await;
    a.db.insert(1, "Ada");

    let t = Instant::now();
    let first = a.user_traced(1).await;
    let took = t.elapsed();
    assert_eq!(first.source, Source::Loader);
    // Loaded during this call: no older than the call (to the millisecond of the wall clock the
    // age is measured with).
    assert!(
        first.age <= took + Duration::from_millis(1),
        "{:?} for a call of {took:?}",
        first.age
    );
    assert_eq!(first.value.as_ref().map(|u| u.name.as_str()), Ok("Ada"));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let l1 = a.user_traced(1).await;
    assert_eq!(l1.source, Source::L1);
    assert!(l1.age >= Duration::from_millis(300), "{:?}", l1.age);

    // b: cold L1, so L2; the age is the entry's, not b's.
    let l2 = b.user_traced(1).await;
    assert_eq!(l2.source, Source::L2);
    assert!(l2.age >= Duration::from_millis(300), "{:?}", l2.age);
    // b's L1 copy keeps the age of the value it was read from.
    let b_l1 = b.user_traced(1).await;
    assert_eq!(b_l1.source, Source::L1);
    assert!(b_l1.age >= l2.age, "{:?} < {:?}", b_l1.age, l2.age);
    assert_eq!(a.queries(), 1);

    // Cached errors have a provenance too.
    assert_eq!(a.schema_traced("nope".into()).await.source, Source::Loader);
    let cached_err = a.schema_traced("nope".into()).await;
    assert_eq!(
        (cached_err.source, cached_err.value),
        (Source::L1, Err(DbError::NotFound(4)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_load_traced_reports_a_stale_fallback_and_its_age() {
    let server = RedisServer::start();
    init_tracing();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("traced-stale"))
        .fail_safe_grace(Duration::from_secs(30))
        .build()
        .await
        .expect("build cache");
    let opts = EntryOptions::new().ttl(Duration::from_millis(200));
    let ok = || async { Ok::<_, String>(7u32) };

    let loaded = cache
        .get_or_load_traced(Kind::API_RESPONSE, "k", &opts, ok)
        .await
        .expect("loads");
    assert_eq!((*loaded.value, loaded.source), (7, Source::Loader));
    let hit = cache
        .get_or_load_traced(Kind::API_RESPONSE, "k", &opts, || async {
            unreachable!("fresh in L1") as Result<u32, String>
        })
        .await
        .expect("hit");
    assert_eq!(hit.source, Source::L1);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let stale = cache
        .get_or_load_traced(Kind::API_RESPONSE, "k", &opts, || async {
            Err::<u32, _>("origin down".to_string())
        })
        .await
        .expect("the stale value is served");
    assert_eq!((*stale.value, stale.source), (7, Source::Stale));
    assert!(stale.age >= Duration::from_millis(300), "{:?}", stale.age);
    assert!(stale.is_cached());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_companion_reloads_and_every_instance_sees_the_new_value() {
    let server = RedisServer::start();
    let (a, b) = two_instances(&server, "refresh-companion").await;
    assert_eq!(a.version().await, 1);
    assert_eq!(b.version().await, 1); // from L2, now in b's L1
    a.version.store(2, Ordering::SeqCst);
    b.version.store(2, Ordering::SeqCst);
    assert_eq!(a.version().await, 1, "cached");

    assert_eq!(a.version_refresh().await, 2);
    assert_eq!(a.version().await, 2);
    assert!(
        eventually(async || b.version().await == 2).await,
        "b still serves version 1"
    );
    assert_eq!(a.calls() + b.calls(), 2, "one load, one refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_companion_reloads_its_function_but_not_the_calls_its_body_makes() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "refresh-one").await;
    repo.db.insert(1, "Ada");
    assert_eq!(repo.summary().await, "v1 Ada");
    repo.version.store(2, Ordering::SeqCst);
    repo.db.insert(1, "Grace");

    // `summary` reruns its body, whose `version()` and `user(1)` calls hit the cache.
    assert_eq!(repo.summary_refresh().await, "v1 Ada");
    assert_eq!((repo.calls(), repo.queries()), (1, 1));

    // The `refresh` scope reaches every call inside it.
    assert_eq!(cache_core::scope::refresh(repo.summary()).await, "v2 Grace");
    assert_eq!((repo.calls(), repo.queries()), (2, 2));
    assert_eq!(repo.summary().await, "v2 Grace");
    assert_eq!(repo.version().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bypass_scope_neither_reads_nor_writes_the_cache() {
    let server = RedisServer::start();
    let repo = one_instance(&server, "bypass").await;
    repo.db.insert(1, "Ada");

    // Not written.
    assert!(cache_core::scope::bypass(repo.user(1)).await.is_ok());
    assert_eq!(keys_under(&server, repo.cache.prefix()).await.len(), 0);
    assert_eq!(repo.queries(), 1);

    // Not read: a cached entry is ignored, and stays.
    repo.user(1).await.expect("user");
    repo.db.insert(1, "Grace");
    let fresh = cache_core::scope::bypass(async { repo.user(1).await }).await;
    assert_eq!(fresh.expect("user").name, "Grace");
    assert_eq!(repo.user(1).await.expect("user").name, "Ada");
    assert_eq!(repo.queries(), 3);

    // The traced companion says the body ran.
    let traced = cache_core::scope::bypass(repo.user_traced(1)).await;
    assert_eq!(traced.source, Source::Loader);

    // Each bypassed call is a miss of reason `bypassed` (3 above), the others are not.
    let reasons = repo.cache.stats().kinds["database_query"].l1.miss_reasons;
    assert_eq!(reasons.bypassed, 3, "{reasons:?}");
    assert_eq!(reasons.absent, 1, "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_attributes_accept_mut_self() {
    struct Counter {
        cache: Cache,
        n: u64,
    }
    impl Counter {
        #[cache_put(kind = "session_data", key = "counter", cache = self.cache)]
        async fn incr(&mut self) -> u64 {
            self.n += 1;
            self.n
        }

        #[cache_invalidate(kind = "session_data", key = "counter", cache = self.cache)]
        async fn reset(&mut self) {
            self.n = 0;
        }
    }

    let server = RedisServer::start();
    let cache = cache_on(&server, &unique_prefix("mut-self")).await;
    let mut c = Counter {
        cache: cache.clone(),
        n: 0,
    };
    c.incr().await;
    c.incr().await;
    let stored: Option<Arc<u64>> = cache.get(Kind::SESSION_DATA, "counter").await;
    assert_eq!(stored.as_deref(), Some(&2));
    c.reset().await;
    let gone: Option<Arc<u64>> = cache.get(Kind::SESSION_DATA, "counter").await;
    assert_eq!(gone, None);
}

#[tokio::test]
async fn a_cached_function_calling_cached_functions_keeps_a_small_future() {
    // Each wrapper layer once held its inner future twice (`async fn` arguments), so nested
    // cached calls grew exponentially and overflowed the stack in debug builds.
    let server = RedisServer::start();
    let repo = one_instance(&server, "future-size").await;
    let one = std::mem::size_of_val(&repo.version());
    let nested = std::mem::size_of_val(&repo.summary()); // calls `version` and `user`
    assert!(
        nested < 4 * one,
        "summary: {nested} bytes, version: {one} bytes"
    );
}
