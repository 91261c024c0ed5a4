//! `#[cached]` functions end to end against a real redis-server: hits skip the body, TTLs expire,
//! `Err` and (by default) `None` are not cached, keys land where the docs say, arguments that are
//! skipped do not change the key, `unless` refuses values, concurrent callers share one run.
//!
//! Every test builds its own `Cache` with a unique prefix and passes it with `cache = ...` (a field
//! behind `&self`, or a `OnceLock` declared next to the functions inside the test); only
//! `warm_registers_the_function_and_running_it_fills_the_default_cache` sets the global default
//! cache.

use cache_core::{cached, Cache, Kind};
use cache_tests::{init_tracing, unique_prefix, RedisServer};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

async fn cache_on(server: &RedisServer, name: &str) -> Cache {
    init_tracing();
    Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix(name))
        .build()
        .await
        .expect("build cache")
}

/// Waits (up to 2 s) until `key` exists in Redis.
async fn wait_for_key(server: &RedisServer, key: &str) -> bool {
    let mut conn = server.conn().await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let exists: bool = conn.exists(key).await.expect("EXISTS");
        if exists {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Every key under `prefix` in Redis.
async fn keys_under(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut conn = server.conn().await;
    let mut keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.expect("KEYS");
    keys.sort();
    keys
}

/// A service with `#[cached]` methods that use the cache in `self.cache` and count their calls.
struct Users {
    cache: Cache,
    calls: AtomicUsize,
}

impl Users {
    fn new(cache: Cache) -> Self {
        Users {
            cache,
            calls: AtomicUsize::new(0),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    #[cached(kind = "database_query", key = "user:{id}", cache = self.cache)]
    async fn user(&self, id: u64) -> User {
        self.calls.fetch_add(1, Ordering::SeqCst);
        User {
            id,
            name: format!("user-{id}"),
        }
    }

    /// `Err` for odd ids.
    #[cached(kind = "database_query", cache = self.cache)]
    async fn even_user(&self, id: u64) -> Result<User, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if id % 2 == 1 {
            return Err(format!("{id} is odd"));
        }
        Ok(User {
            id,
            name: format!("user-{id}"),
        })
    }

    /// `None` for id 0, not cached.
    #[cached(kind = "database_query", cache = self.cache)]
    async fn find(&self, id: u64) -> Option<User> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (id != 0).then(|| User {
            id,
            name: format!("user-{id}"),
        })
    }

    /// `None` for id 0, cached for 60 s.
    #[cached(kind = "database_query", none_ttl = 60, cache = self.cache)]
    async fn find_negative(&self, id: u64) -> Option<User> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (id != 0).then(|| User {
            id,
            name: format!("user-{id}"),
        })
    }

    #[cached(kind = "session_data", ttl = 1, cache = self.cache)]
    async fn short_lived(&self, id: u64) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        id
    }

    /// Results with fewer than `min` items are returned but not cached.
    #[cached(kind = "api_response", unless = result.len() < 2, cache = self.cache)]
    async fn search(&self, q: String) -> Vec<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        q.split(' ').map(str::to_owned).collect()
    }

    /// Slow: 100 ms.
    #[cached(kind = "heavy_computation", cache = self.cache)]
    async fn slow(&self, id: u64) -> User {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        User {
            id,
            name: format!("user-{id}"),
        }
    }

    #[cached(kind = "database_query", key = "member:{id}", tags = ["user:{id}", "members"], cache = self.cache)]
    async fn member(&self, id: u64) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        id * 10
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_runs_the_body_once_then_hits_do_not() {
    let server = RedisServer::start();
    let users = Users::new(cache_on(&server, "macro-hit").await);

    // Miss: the body runs.
    assert_eq!(users.user(1).await.name, "user-1");
    assert_eq!(users.calls(), 1);
    // Hits (L1): the body does not run.
    for _ in 0..5 {
        assert_eq!(users.user(1).await.name, "user-1");
    }
    assert_eq!(users.calls(), 1);
    // Other arguments: another key, another miss.
    assert_eq!(users.user(2).await.name, "user-2");
    assert_eq!(users.calls(), 2);

    // A second instance (cold L1, same prefix) finds the value in Redis: its body does not run.
    let other = Users::new(
        Cache::builder()
            .redis_url(server.url())
            .prefix(users.cache.prefix())
            .build()
            .await
            .unwrap(),
    );
    assert_eq!(other.user(1).await.name, "user-1");
    assert_eq!(other.calls(), 0);
    let s = other.cache.stats().kinds["database_query"].clone();
    assert_eq!((s.l2.hits, s.loader.calls), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_the_ttl_given_in_the_attribute() {
    let server = RedisServer::start();
    let users = Users::new(cache_on(&server, "macro-ttl").await);
    assert_eq!(users.short_lived(7).await, 7);
    assert_eq!(users.short_lived(7).await, 7);
    assert_eq!(users.calls(), 1);
    // The Redis TTL is the attribute's 1 s (plus the grace period, 0 here), not session_data's 1800 s.
    let keys = keys_under(&server, users.cache.prefix()).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let pttl: i64 = server.conn().await.pttl(&keys[0]).await.unwrap();
    assert!((1..=1000).contains(&pttl), "PTTL {pttl}");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(users.short_lived(7).await, 7);
    assert_eq!(users.calls(), 2, "expired: the body ran again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_results_are_returned_and_not_cached() {
    let server = RedisServer::start();
    let users = Users::new(cache_on(&server, "macro-err").await);
    for _ in 0..3 {
        assert_eq!(users.even_user(3).await, Err("3 is odd".to_string()));
    }
    assert_eq!(
        users.calls(),
        3,
        "every call with an Err result ran the body"
    );
    assert_eq!(
        keys_under(&server, users.cache.prefix()).await,
        Vec::<String>::new()
    );
    // Ok results are cached as usual.
    assert_eq!(users.even_user(4).await.unwrap().id, 4);
    assert_eq!(users.even_user(4).await.unwrap().id, 4);
    assert_eq!(users.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_is_not_cached_by_default_and_is_cached_with_none_ttl() {
    let server = RedisServer::start();
    let users = Users::new(cache_on(&server, "macro-none").await);

    assert_eq!(users.find(0).await, None);
    assert_eq!(users.find(0).await, None);
    assert_eq!(users.calls(), 2, "None is not cached without none_ttl");
    assert!(users.find(5).await.is_some());
    assert!(users.find(5).await.is_some());
    assert_eq!(users.calls(), 3, "Some is cached");

    users.calls.store(0, Ordering::SeqCst);
    assert_eq!(users.find_negative(0).await, None);
    assert_eq!(users.find_negative(0).await, None);
    assert_eq!(users.calls(), 1, "None is cached with none_ttl");

    // The negative entry is in Redis with the 60 s TTL: a cold instance does not run its body.
    let other = Users::new(
        Cache::builder()
            .redis_url(server.url())
            .prefix(users.cache.prefix())
            .build()
            .await
            .unwrap(),
    );
    assert_eq!(other.find_negative(0).await, None);
    assert_eq!(other.calls(), 0);
    let key = keys_under(&server, users.cache.prefix())
        .await
        .into_iter()
        .find(|k| k.contains("::Users::find_negative:"))
        .expect("the negative entry is in Redis");
    let ttl: i64 = server.conn().await.ttl(&key).await.unwrap();
    assert!((1..=60).contains(&ttl), "{key}: TTL {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_template_gives_the_documented_redis_key() {
    let server = RedisServer::start();
    let users = Users::new(cache_on(&server, "macro-key").await);
    users.user(42).await;
    let prefix = users.cache.prefix().to_owned();
    let expected = format!("{prefix}:v1:database_query:user:42");
    assert!(
        wait_for_key(&server, &expected).await,
        "{expected} not in Redis; keys: {:?}",
        keys_under(&server, &prefix).await
    );
    assert_eq!(keys_under(&server, &prefix).await, [expected]);

    // The value under that key is what `Cache::get` reads back, so hand-written code and
    // `#[cached]` functions share entries.
    let v: Arc<User> = users
        .cache
        .get(Kind::DATABASE_QUERY, "user:42")
        .await
        .expect("entry written by the #[cached] method");
    assert_eq!(v.name, "user-42");
    // ... and invalidating it makes the next call run the body.
    users
        .cache
        .invalidate(Kind::DATABASE_QUERY, "user:42")
        .await;
    users.user(42).await;
    assert_eq!(users.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_key_is_the_function_path_and_an_argument_hash() {
    static CACHE: OnceLock<Cache> = OnceLock::new();

    #[cached(kind = "api_response", cache = CACHE.get().expect("set at the start of the test"))]
    async fn weather(city: String, days: u8) -> String {
        format!("{city}:{days}")
    }

    let server = RedisServer::start();
    CACHE
        .set(cache_on(&server, "macro-default-key").await)
        .expect("set once");
    let prefix = CACHE.get().unwrap().prefix().to_owned();
    assert_eq!(weather("paris".into(), 3).await, "paris:3");
    let keys = keys_under(&server, &prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let rest = keys[0]
        .strip_prefix(&format!("{prefix}:v1:api_response:"))
        .unwrap_or_else(|| panic!("{} is not under the kind", keys[0]));
    let (path, hash) = rest.rsplit_once(':').expect("path:hash");
    assert_eq!(
        path,
        "macros::the_default_key_is_the_function_path_and_an_argument_hash::weather"
    );
    // BLAKE3 (256 bits) of the arguments' MessagePack, as a tuple of references: pinned, since a
    // change of shape moves every default key (a deploy would start cold).
    let args = rmp_serde::to_vec(&(&"paris".to_string(), &3u8)).expect("encode");
    assert_eq!(hash, blake3::hash(&args).to_hex().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_functions_with_the_same_arguments_do_not_collide() {
    static CACHE: OnceLock<Cache> = OnceLock::new();

    #[cached(kind = "database_query", cache = CACHE.get().expect("set at the start of the test"))]
    async fn name_of(id: u64) -> String {
        format!("name-{id}")
    }

    #[cached(kind = "database_query", cache = CACHE.get().expect("set at the start of the test"))]
    async fn email_of(id: u64) -> String {
        format!("email-{id}")
    }

    // Methods of the same name on two types, same argument.
    struct Teams(Cache);
    struct Projects(Cache);
    impl Teams {
        #[cached(kind = "database_query", cache = self.0)]
        async fn label(&self, id: u64) -> String {
            format!("team-{id}")
        }
    }
    impl Projects {
        #[cached(kind = "database_query", cache = self.0)]
        async fn label(&self, id: u64) -> String {
            format!("project-{id}")
        }
    }

    // One method of a generic type, two instantiations.
    struct Table<T>(Cache, std::marker::PhantomData<T>);
    impl<T> Table<T> {
        #[cached(kind = "database_query", cache = self.0)]
        async fn label(&self, id: u64) -> String {
            format!("{}-{id}", std::any::type_name::<T>())
        }
    }

    let server = RedisServer::start();
    let cache = cache_on(&server, "macro-collide").await;
    CACHE.set(cache.clone()).expect("set once");
    let (teams, projects) = (Teams(cache.clone()), Projects(cache.clone()));
    let bytes = Table::<u8>(cache.clone(), std::marker::PhantomData);
    let words = Table::<u16>(cache.clone(), std::marker::PhantomData);
    for _ in 0..2 {
        assert_eq!(name_of(1).await, "name-1");
        assert_eq!(email_of(1).await, "email-1");
        assert_eq!(teams.label(1).await, "team-1");
        assert_eq!(projects.label(1).await, "project-1");
        assert_eq!(bytes.label(1).await, "u8-1");
        assert_eq!(words.label(1).await, "u16-1");
    }
    let keys = keys_under(&server, cache.prefix()).await;
    assert_eq!(keys.len(), 6, "six functions, six keys: {keys:#?}");
    // The paths are readable (not hashed), and methods carry their type.
    for part in [
        "::name_of:",
        "::email_of:",
        "::Teams::label:",
        "::Projects::label:",
    ] {
        assert!(keys.iter().any(|k| k.contains(part)), "{part} in {keys:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_arguments_do_not_change_the_key() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    /// A client: not `Serialize`, so it must be skipped.
    struct Client {
        shard: u64,
    }

    #[cached(kind = "database_query", skip(client, trace_id), cache = CACHE.get().expect("set"))]
    async fn orders(client: &Client, customer: u64, trace_id: String) -> Vec<u64> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        let _ = trace_id;
        vec![customer, client.shard]
    }

    let server = RedisServer::start();
    let cache = cache_on(&server, "macro-skip").await;
    CACHE.set(cache.clone()).expect("set once");

    assert_eq!(orders(&Client { shard: 1 }, 7, "a".into()).await, [7, 1]);
    // Another client and trace id, same customer: same key, the cached value.
    assert_eq!(orders(&Client { shard: 2 }, 7, "b".into()).await, [7, 1]);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    // Another customer: another key.
    assert_eq!(orders(&Client { shard: 2 }, 8, "c".into()).await, [8, 2]);
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(keys_under(&server, cache.prefix()).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unless_returns_the_value_without_caching_it() {
    let server = RedisServer::start();
    let users = Users::new(cache_on(&server, "macro-unless").await);
    // One word: `unless = result.len() < 2` refuses it.
    assert_eq!(users.search("rust".into()).await, ["rust"]);
    assert_eq!(users.search("rust".into()).await, ["rust"]);
    assert_eq!(users.calls(), 2);
    assert_eq!(keys_under(&server, users.cache.prefix()).await.len(), 0);
    // Two words: cached.
    assert_eq!(users.search("rust cache".into()).await, ["rust", "cache"]);
    assert_eq!(users.search("rust cache".into()).await, ["rust", "cache"]);
    assert_eq!(users.calls(), 3);
    assert_eq!(keys_under(&server, users.cache.prefix()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_callers_run_the_body_once() {
    let server = RedisServer::start();
    let users = Arc::new(Users::new(cache_on(&server, "macro-stampede").await));
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (users, barrier) = (users.clone(), barrier.clone());
            // Each task waits for the others, then calls the cold key at the same moment.
            tokio::spawn(async move {
                barrier.wait().await;
                users.slow(9).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().name, "user-9");
    }
    assert_eq!(users.calls(), 1, "the body ran once for 100 callers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_mark_and_early_return_work_in_the_body() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug, Clone, PartialEq)]
    enum SumError {
        Int(String),
    }
    impl From<std::num::ParseIntError> for SumError {
        fn from(e: std::num::ParseIntError) -> Self {
            SumError::Int(e.to_string())
        }
    }

    #[cached(kind = "heavy_computation", cache = CACHE.get().expect("set"))]
    async fn sum(input: String) -> Result<i64, SumError> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if input.is_empty() {
            return Ok(0);
        }
        let mut total = 0;
        for part in input.split(',') {
            total += part.trim().parse::<i64>()?;
        }
        Ok(total)
    }

    let server = RedisServer::start();
    CACHE
        .set(cache_on(&server, "macro-question-mark").await)
        .expect("set once");
    let calls = || CALLS.load(Ordering::SeqCst);

    assert_eq!(sum("1, 2, 3".into()).await, Ok(6));
    assert_eq!(sum("1, 2, 3".into()).await, Ok(6));
    assert_eq!(calls(), 1);
    // Early `return Ok(0)`: a value like any other, cached.
    assert_eq!(sum(String::new()).await, Ok(0));
    assert_eq!(sum(String::new()).await, Ok(0));
    assert_eq!(calls(), 2);
    // `?` converts the ParseIntError through `From` and returns it; not cached.
    let err = SumError::Int("invalid digit found in string".into());
    assert_eq!(sum("1, x".into()).await, Err(err));
    assert!(sum("1, x".into()).await.is_err());
    assert_eq!(calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_from_the_attribute_invalidate_the_entries() {
    let server = RedisServer::start();
    let users = Users::new(cache_on(&server, "macro-tags").await);
    assert_eq!(users.member(1).await, 10);
    assert_eq!(users.member(2).await, 20);
    assert_eq!(users.member(1).await, 10);
    assert_eq!(users.calls(), 2);

    // `user:{id}` is per entry: only member 1 reloads.
    users.cache.invalidate_tag("user:1").await;
    assert_eq!(users.member(1).await, 10);
    assert_eq!(users.member(2).await, 20);
    assert_eq!(users.calls(), 3);

    // `members` is on every entry.
    users.cache.invalidate_tag("members").await;
    assert_eq!(users.member(1).await, 10);
    assert_eq!(users.member(2).await, 20);
    assert_eq!(users.calls(), 5);
}

static WARM_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Uses the default (global) cache: no `cache = ...`.
#[cached(kind = "static_data", key = "countries", warm)]
async fn countries() -> Vec<String> {
    WARM_CALLS.fetch_add(1, Ordering::SeqCst);
    vec!["fr".into(), "jp".into()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_registers_the_function_and_running_it_fills_the_default_cache() {
    let server = RedisServer::start();
    let cache = cache_on(&server, "macro-warm").await;
    // The only test of this binary that installs a global cache.
    cache_core::set_default_cache(cache.clone()).expect("no default cache set before");

    let warmer = cache_core::__private::warmers()
        .find(|w| w.name == "macros::countries")
        .expect("countries is registered as a warmer");
    (warmer.run)().await.expect("warming succeeds");
    assert_eq!(WARM_CALLS.load(Ordering::SeqCst), 1);
    let key = format!("{}:v1:static_data:countries", cache.prefix());
    assert!(wait_for_key(&server, &key).await, "{key} not in Redis");

    // Warm: the first call is a hit.
    assert_eq!(countries().await, ["fr", "jp"]);
    assert_eq!(WARM_CALLS.load(Ordering::SeqCst), 1);
}

/// What the origin of [`Accounts`] answers now.
#[derive(Clone, Copy, PartialEq)]
enum Origin {
    Found,
    Gone,
    Failing,
    Tiny,
}

/// `#[cached]` methods over one origin whose answer a test changes, on a cache with a fail-safe
/// grace period: an expired entry can still be served when a reload *fails*.
struct Accounts {
    cache: Cache,
    origin: std::sync::Mutex<Origin>,
    calls: AtomicUsize,
}

impl Accounts {
    fn answer(&self) -> Origin {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.origin.lock().expect("origin lock")
    }

    fn set(&self, o: Origin) {
        *self.origin.lock().expect("origin lock") = o;
    }

    #[cached(kind = "database_query", key = "account:{id}", ttl = Duration::from_millis(200), cache = self.cache)]
    async fn account(&self, id: u64) -> Option<String> {
        match self.answer() {
            Origin::Gone => None,
            _ => Some(format!("account-{id}")),
        }
    }

    #[cached(kind = "database_query", key = "balance:{id}", ttl = Duration::from_millis(200), cache = self.cache)]
    async fn balance(&self, id: u64) -> Result<String, String> {
        match self.answer() {
            Origin::Failing => Err("origin down".to_owned()),
            _ => Ok(format!("balance-{id}")),
        }
    }

    #[cached(kind = "database_query", key = "history:{id}", ttl = Duration::from_millis(200), unless = result.len() < 2, cache = self.cache)]
    async fn history(&self, id: u64) -> Vec<u64> {
        match self.answer() {
            Origin::Tiny => vec![id],
            _ => vec![id, id + 1],
        }
    }
}

/// Waits until the `T` under `key` has expired (it may still be kept for the grace period).
async fn until_expired<T>(cache: &Cache, key: &str)
where
    T: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    cache_tests::within(Duration::from_secs(10), "the entry expires", || async {
        cache.get::<T>("database_query", key).await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncached_answer_is_returned_and_never_replaced_by_a_stale_value() {
    init_tracing();
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("macro-uncached-answer"))
        .fail_safe_grace(Duration::from_secs(60))
        .build()
        .await
        .expect("build cache");
    let accounts = Accounts {
        cache: cache.clone(),
        origin: std::sync::Mutex::new(Origin::Found),
        calls: AtomicUsize::new(0),
    };
    assert_eq!(accounts.account(1).await.as_deref(), Some("account-1"));
    assert_eq!(accounts.balance(1).await.as_deref(), Ok("balance-1"));
    assert_eq!(accounts.history(1).await, [1, 2]);
    until_expired::<String>(&cache, "account:1").await;
    until_expired::<String>(&cache, "balance:1").await;
    until_expired::<Vec<u64>>(&cache, "history:1").await;

    // The account is gone: `None` (not cached) is the answer, not the expired `Some`.
    accounts.set(Origin::Gone);
    assert_eq!(accounts.account(1).await, None);
    assert_eq!(accounts.account(1).await, None);
    // A value `unless` refuses is the answer too.
    accounts.set(Origin::Tiny);
    assert_eq!(accounts.history(1).await, [1]);
    // A failure is what the grace period is for: the expired value is served.
    accounts.set(Origin::Failing);
    assert_eq!(accounts.balance(1).await.as_deref(), Ok("balance-1"));

    let s = cache.stats();
    let q = &s.kinds["database_query"].loader;
    assert_eq!(
        q.stale_served, 1,
        "only the failed reload was answered stale: {q:?}"
    );
    assert_eq!(
        q.errors, 1,
        "only the failed reload counts as an error: {q:?}"
    );
}
