//! The attribute macros of tiered-cache: `#[cached]` (read-through), `#[cache_put]` (store what a
//! function returns) and `#[cache_invalidate]` (drop entries after a function succeeds). Use them
//! through `cache_core` (feature `macros`, on by default); the generated code calls
//! `cache_core::__private`.
//!
//! Each macro is a pipeline, one file per step (as in tracing-attributes): `args` parses the
//! attribute, `validate` checks the signature and the arguments together (every error at its
//! token, all reported at once), `expand` rebuilds the function and `key` builds its cache key.
#![warn(missing_docs, unreachable_pub)]

use proc_macro::TokenStream;

use args::Attr;

mod args;
mod background;
mod expand;
mod key;
mod validate;

/// Caches the result of an `async fn` in a two-tier `cache_core::Cache`: the body runs on a
/// miss, its result is stored under a key built from the arguments, and later calls with the same
/// arguments return the cached value without running the body.
///
/// ```
/// use cache_core::{cached, Cache};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct User { id: u64, name: String }
///
/// #[derive(Debug, Clone)] // concurrent callers share one call, and so its error
/// struct DbError;
///
/// #[cached(kind = "database_query", key = "user:{id}", ttl = 600)]
/// async fn load_user(id: u64) -> Result<User, DbError> {
///     Ok(User { id, name: "Ada".into() }) // the database query
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // Once at startup: the cache of `#[cached]` functions that name none (without it, a call
/// // panics in a debug build).
/// cache_core::set_default_cache(Cache::from_env().await?).ok();
/// let user = load_user(42).await.unwrap(); // miss: runs the body, caches the user
/// let again = load_user(42).await.unwrap(); // hit: the body does not run
/// assert_eq!(again.name, user.name);
/// # Ok::<_, cache_core::Error>(())
/// # }).unwrap();
/// ```
///
/// # Supported functions
/// - `async fn` free functions and methods taking `&self` (`self` is usable in the body and is not
///   part of the key). `self` by value, `&mut self`, generic type or const parameters and
///   `impl Trait` arguments are compile errors; lifetime parameters are fine.
/// - Arguments are plain names (`id: u64`, `mut buf: Vec<u8>`), not patterns.
/// - The return type decides what is cached, by its last path segment:
///   - `T`: the value.
///   - `Option<T>`: `Some` values; `None` only with [`none_ttl`](#none_ttl).
///   - `Result<T, E>` (also aliases named `Result`, such as `io::Result<T>`): `Ok` values; an
///     `Err` is returned unchanged and not cached (unless [`cache_errors`](#cache_errors)).
///
///   Entries are stored as `T` in all three cases, so functions of any of these shapes with the
///   same `kind` and `key`, `#[cache_put]` and `Cache::get::<T>` share them; `none_ttl` and
///   `cache_errors` store `Option<T>` and `Result<T, E>` instead.
///
///   `T` must be `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`; the caller gets a
///   clone. A type alias named otherwise (e.g. `type Lookup = Option<User>`) is cached as a plain
///   value.
/// - The body is moved into `move || async move { ... }`: `?` and `return` behave as before.
/// - Concurrent calls with the same key share one run of the body (stampede protection), success
///   or failure: for `Result` functions every caller of the run gets a clone of its `Err` (so `E`
///   must be `Clone`; `Result<T, Arc<E>>` shares one error), and a burst against a failing origin
///   makes one call. An `Err`, a `None` that is not cached and a value `unless` refuses are
///   returned, not cached; with a fail-safe grace period only an `Err` is answered with the expired
///   value instead.
///
/// # `kind`
/// `kind = "api_response"`: required. The kind is part of the Redis key
/// (`{prefix}:v1:{kind}:{key}`), picks the default TTL and the tiers, and has its own stats.
/// Built-in kinds: `model_data` (3600 s), `session_data` (1800 s), `api_response` (300 s),
/// `database_query` (600 s), `heavy_computation` (1800 s), `static_data` (7200 s). Any other name of
/// 1 to 64 ASCII letters, digits, `_`, `-` or `.` compiles; register it at runtime with
/// `CacheBuilder::kind` (an unregistered kind gets the cache's default TTL and a warning).
///
/// # `ttl`
/// `ttl = 300` (whole seconds, > 0) or `ttl = <expr>` where the expression is a
/// `std::time::Duration` (`ttl = Duration::from_millis(1500)`, `ttl = CONFIG_TTL`), evaluated at
/// each call before the body runs, so it may use the arguments and the time of day
/// (`ttl = until_midnight()`). Overrides the kind's TTL for this function's entries. Default: the
/// kind's TTL.
///
/// # `ttl_fn`
/// `ttl_fn = ttl_of` (a path to a `fn(&T) -> Duration`) or `ttl_fn = |v: &T| ...` (a closure that
/// borrows nothing from the call): the TTL computed from the value being cached (the `Some` value
/// for `Option<T>`, the `Ok` value for `Result<T, E>`), such as a shorter TTL for an empty result
/// or the lifetime an upstream response declares. Not with `ttl` (one of them sets the TTL).
/// `None` entries keep [`none_ttl`](#none_ttl), cached errors [`cache_errors`](#cache_errors).
///
/// ```
/// use cache_core::{cached, Cache};
/// use std::sync::LazyLock;
/// use std::time::Duration;
///
/// # static CACHE: LazyLock<Cache> = LazyLock::new(|| {
/// #     futures::executor::block_on(Cache::builder().prefix("docs-ttl-fn").build()).expect("valid")
/// # });
/// /// Seconds left until midnight UTC (at least 1).
/// fn until_midnight() -> Duration {
///     let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
///     Duration::from_secs((86_400 - now.as_secs() % 86_400).max(1))
/// }
///
/// // Today's menu, cached until the day ends.
/// #[cached(kind = "static_data", key = "menu", ttl = until_midnight(), cache = CACHE)]
/// async fn menu() -> Vec<String> {
///     vec!["soup".into()]
/// }
///
/// // Empty search results are kept for 10 s only.
/// #[cached(
///     kind = "api_response",
///     ttl_fn = |hits: &Vec<String>| Duration::from_secs(if hits.is_empty() { 10 } else { 600 }),
///     cache = CACHE,
/// )]
/// async fn search(q: String) -> Vec<String> {
///     q.split(' ').filter(|w| w.len() > 3).map(str::to_owned).collect()
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # assert_eq!(menu().await, ["soup"]);
/// # assert_eq!(search("a rust cache".into()).await, ["rust", "cache"]);
/// # });
/// ```
///
/// # `key`
/// `key = "user:{id}"`: a format string over the arguments, giving the key part after
/// `{prefix}:v1:{kind}:`. Each `{name}` must be an argument (formatted with `Display`; `{name:?}`
/// uses `Debug`); `{{` and `}}` are literal braces. With `key`, nothing else goes into the key:
/// make it unique per function. Key parts over 200 bytes, containing `{`/`}` or starting with `#`,
/// are replaced by `#` and their BLAKE3 hash.
///
/// Default: the function's path (module, type for methods, name) and the BLAKE3 hash (256 bits,
/// collision resistant, since arguments are often user input) of the MessagePack encoding of the
/// arguments (minus `self` and [`skip`](#skip)ped ones), which must then be `Serialize`. Two
/// functions never share a default key; renaming or moving a function changes its keys (old
/// entries then expire).
///
/// # `tags`
/// `tags = ["user:{id}", "users"]`: templates like `key`, stored with the entry for tag
/// invalidation. Default: none.
///
/// # `condition`
/// `condition = <bool expr>`: evaluated over the arguments before anything else. When it is
/// `false`, the body runs and its result is returned without reading or writing the cache (no key
/// is even built): `condition = filter.is_none()` caches only full, unfiltered requests. Arguments
/// are borrowed. Default: `true`.
///
/// # `unless`
/// `unless = <bool expr>`: evaluated on the value that would be cached, bound as `result: &T`
/// (the `Some` value for `Option<T>`, the `Ok` value for `Result<T, E>`). When it is `true` the
/// value is returned but not cached: `unless = result.items.is_empty()`. Arguments used in it must
/// be `Copy` if the body uses them too (the body takes ownership of the arguments).
///
/// # `none_ttl`
/// `none_ttl = 60` (seconds, or a `Duration` expression as for `ttl`): only on functions returning
/// `Option<T>`. Caches `None` for that long (negative caching), so repeated lookups of a missing
/// item do not reach the origin. Entries are then `Option<T>` rather than `T`. Default: `None` is
/// not cached.
///
/// # `cache_errors`
/// `cache_errors = 60` (seconds, or a `Duration` expression as for `ttl`): only on functions
/// returning `Result<T, E>`. Caches `Err` results too, for that long: while a cached `Err` lives,
/// calls return it without running the body (protecting a failing origin; a schema service that
/// caches "not found" for a minute). The entry is then the whole `Result<T, E>`, so `E` must be
/// `Serialize + DeserializeOwned + Clone` (a compile error at the error type says so otherwise),
/// and concurrent callers share one `Err`. Such entries are not the `T` that `#[cache_put]` and
/// other `#[cached]` functions store: do not mix them under one key. Default: errors are never
/// cached.
///
/// ```
/// use cache_core::{cached, Cache};
/// use serde::{Deserialize, Serialize};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::LazyLock;
///
/// # static CACHE: LazyLock<Cache> = LazyLock::new(|| {
/// #     futures::executor::block_on(Cache::builder().prefix("docs-errors").build()).expect("valid")
/// # });
/// static LOOKUPS: AtomicUsize = AtomicUsize::new(0);
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum SchemaError { NotFound(String) }
///
/// #[cached(kind = "static_data", key = "schema:{name}", cache_errors = 60, cache = CACHE)]
/// async fn schema(name: String) -> Result<String, SchemaError> {
///     LOOKUPS.fetch_add(1, Ordering::SeqCst);
///     Err(SchemaError::NotFound(name))
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert!(schema("orders".into()).await.is_err());
/// assert!(schema("orders".into()).await.is_err()); // the cached error
/// assert_eq!(LOOKUPS.load(Ordering::SeqCst), 1);
/// # });
/// ```
///
/// # `skip`
/// `skip(db, client)`: arguments left out of the default key (connection pools, clients,
/// loggers); they need not be `Serialize`. Each must be an argument. Not allowed with `key` (the
/// template already says what goes into the key).
///
/// # `cache`
/// `cache = <expr>`: the cache to use, evaluated at each call before the body runs. Anything
/// that coerces from `&<expr>` to `&Cache` works: a `Cache`, a `&Cache`, `self.cache`, an
/// `Arc<Cache>`, a `static CACHE: LazyLock<Cache>`. For a cache built asynchronously, keep it in a
/// `OnceLock<Cache>` and write `cache = CACHE.get().expect("cache built at startup")`, or make it
/// the default cache.
///
/// Default: the default cache, set with `cache_core::set_default_cache(cache)` at startup (inside
/// `Cache::warm`, the cache being warmed). A call before any default cache is set is a bug: it
/// panics in a debug build, and runs uncached with an error logged (once) in a release build.
///
/// ```
/// use cache_core::{cached, Cache};
/// use std::sync::{Arc, LazyLock};
///
/// // An L1-only cache needs no runtime to build.
/// static CACHE: LazyLock<Cache> = LazyLock::new(|| {
///     futures::executor::block_on(Cache::builder().prefix("docs").build()).expect("valid settings")
/// });
///
/// #[cached(kind = "heavy_computation", cache = CACHE)]
/// async fn fib(n: u64) -> u64 {
///     (1..=n).fold((0, 1), |(a, b), _| (b, a + b)).0
/// }
///
/// struct Repo { cache: Cache, table: Arc<str> }
///
/// impl Repo {
///     #[cached(kind = "database_query", key = "row:{id}", cache = self.cache)]
///     async fn row(&self, id: u32) -> Option<String> {
///         Some(format!("{}:{id}", self.table))
///     }
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(fib(50).await, 12_586_269_025);
/// let repo = Repo { cache: CACHE.clone(), table: "users".into() };
/// assert_eq!(repo.row(7).await.as_deref(), Some("users:7"));
/// # });
/// ```
///
/// # `companions`
/// `companions(traced, refresh)`: generates functions next to this one, with the same arguments
/// and visibility, that call it:
/// - `{name}_traced(...) -> cache_core::Lookup<R>` (`R` the return type): the result with where it
///   came from (`cache_core::Source`: L1, L2, the body, a stale fallback) and
///   its age, to show "served from cache" next to an answer.
/// - `{name}_refresh(...) -> R`: runs the body and stores its result in place of the cached one,
///   on every instance (what a miss would store; a result that would not be cached removes the
///   entry; a failed reload leaves it, unless errors are cached). The calls the body makes read
///   through the cache as usual.
///
/// For all the calls made inside a future, see `cache_core::scope::bypass` and `cache_core::scope::refresh`.
/// Companions need a free function or an inherent `impl` (a trait `impl` cannot gain methods).
///
/// ```
/// use cache_core::{cached, Cache, Source};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// struct Rates { cache: Cache, eur_usd: AtomicU64 }
///
/// impl Rates {
///     #[cached(kind = "api_response", key = "rate:{from}", cache = self.cache, companions(traced, refresh))]
///     async fn rate(&self, from: String) -> u64 {
///         self.eur_usd.load(Ordering::SeqCst)
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let rates = Rates { cache: Cache::builder().prefix("docs-companions").build().await.unwrap(), eur_usd: AtomicU64::new(108) };
/// assert_eq!(rates.rate_traced("EUR".into()).await.source, Source::Loader);
/// rates.eur_usd.store(109, Ordering::SeqCst);
/// let hit = rates.rate_traced("EUR".into()).await;
/// assert_eq!((hit.value, hit.source), (108, Source::L1)); // cached
/// assert_eq!(rates.rate_refresh("EUR".into()).await, 109); // reloaded and stored
/// assert_eq!(rates.rate("EUR".into()).await, 109);
/// # });
/// ```
///
/// # `warm`
/// `warm`: a flag, only on a function without arguments. Registers the function as a warmer
/// (`cache_core::__private::warmers()`): warm-up calls it once, which fills the cache. Free
/// functions only (an associated function cannot be named from the registration).
///
/// # `refresh`, `xfetch`, `soft_timeout`, `hard_timeout`: background mode
/// The freshness settings of `cache_core::KindConfig`, per function (over the kind's):
/// - `refresh = 0.8`: an entry read after 80% of its TTL is returned at once and refreshed once in
///   the background;
/// - `xfetch` or `xfetch = 1.5`: probabilistic early refresh with this beta (default 1.0);
/// - `soft_timeout = "500ms"`: with a stale value at hand (fail-safe grace), callers get it after
///   this long while the body finishes in the background and updates the cache;
/// - `hard_timeout = "20s"`: the body is abandoned and the function returns
///   `E::from(cache_core::Error::LoaderTimeout(..))`; only on functions returning
///   `Result<T, E>` with `E: From<cache_core::Error>`.
///
/// Timeouts are strings with `ms` or `s` (`"1.5s"`), or `Duration` expressions. Any of these puts
/// the function in background mode: a load may outlive the call, so the body runs on owned
/// copies of the arguments (`&T` through `ToOwned`, so `&str` becomes a `String`; owned arguments
/// move in) and of `self` (which must be `Clone + Send + Sync + 'static`; `self` in the body and in
/// `unless` then refers to the clone). The copies are made only when a load or a refresh runs the
/// body: a hit copies nothing. `&mut` arguments are refused. A kind's hard timeout does not apply
/// to functions without `hard_timeout` (they have no error of the cache's to return).
///
/// ```
/// use cache_core::{cached, Cache};
///
/// #[derive(Debug, Clone)]
/// enum AppError { Cache(cache_core::Error) }
/// impl From<cache_core::Error> for AppError {
///     fn from(e: cache_core::Error) -> Self { AppError::Cache(e) }
/// }
///
/// #[derive(Clone)]
/// struct Schemas { cache: Cache }
///
/// impl Schemas {
///     #[cached(kind = "static_data", refresh = 0.8, hard_timeout = "2s", cache = self.cache)]
///     async fn schema(&self, table: &str) -> Result<Vec<String>, AppError> {
///         Ok(vec![format!("{table}.id")]) // information_schema query
///     }
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let s = Schemas { cache: Cache::builder().prefix("docs-bg").build().await.unwrap() };
/// assert_eq!(s.schema("users").await.unwrap(), ["users.id"]);
/// # });
/// ```
///
/// # `lock`
/// `lock` (or `lock = true` / `lock = false`): the distributed single-flight lock of
/// `KindConfig::distributed_lock` for this function: instances sharing Redis run the body once per
/// cold key between them. Works with or without background mode.
///
/// # `schema`
/// `schema = "profile-v3"`: the stable identity of the stored type in L2 entries (see
/// `KindConfig::schema`), used instead of the Rust type name, so that moving or renaming the type,
/// or a compiler upgrade, does not turn every entry into a miss at the next deploy. Bump it when
/// the type's serialized form changes (a field renamed, removed or retyped); a mismatch is a miss.
/// A `#[cache_put]` writing the same entries must name the same schema.
///
/// # Errors at compile time
/// Unknown, duplicated or mistyped arguments, a missing `kind`, a non-`async` function, `{name}`s
/// that are not arguments, and the other rules above are compile errors at the offending token,
/// each saying how to fix it.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(item as syn::ItemFn);
    let checked = parse(Attr::Cached, args)
        .and_then(|args| validate::check(&args, &item).map(|plan| (args, plan)));
    match checked {
        Ok((args, plan)) => expand::expand(&args, &item, &plan).into(),
        Err(e) => unchanged(e, &item),
    }
}

/// Stores the value an `async fn` returns in the cache, under keys built from its arguments, on
/// every instance: for functions that write data and return the new version of it (Spring's
/// `@CachePut`). A `#[cached]` function reading the same `kind` and `key` then gets the new value
/// without running its body.
///
/// ```
/// use cache_core::{cache_put, cached, Cache};
/// use serde::{Deserialize, Serialize};
/// use std::sync::LazyLock;
///
/// static CACHE: LazyLock<Cache> = LazyLock::new(|| {
///     futures::executor::block_on(Cache::builder().prefix("docs-put").build()).expect("valid")
/// });
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct User { id: u64, name: String }
/// #[derive(Debug, Clone)]
/// struct DbError;
///
/// #[cached(kind = "database_query", key = "user:{id}", cache = CACHE)]
/// async fn user(id: u64) -> Result<User, DbError> {
///     unreachable!("the put below stored the user")
/// }
///
/// #[cache_put(kind = "database_query", key = "user:{id}", tags = ["users"], cache = CACHE)]
/// async fn rename(id: u64, name: String) -> Result<User, DbError> {
///     Ok(User { id, name }) // UPDATE ... RETURNING
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// rename(7, "Grace".into()).await.unwrap();
/// assert_eq!(user(7).await.unwrap().name, "Grace");
/// # });
/// ```
///
/// # What is stored
/// By the return type: `T` for `-> T`, the `Ok` value for `-> Result<T, E>` (nothing on `Err`),
/// the `Some` value for `-> Option<T>` (nothing on `None`). It is stored as a `T`, which is what
/// `#[cached]` functions returning `T`, `Result<T, E>` or `Option<T>` read, and what
/// `Cache::get::<T>` returns. The exceptions are `#[cached]` functions that also cache absence or
/// failure (`none_ttl`, `cache_errors`): their entries are `Option<T>` / `Result<T, E>`, which a
/// put does not write; pair them with `#[cache_invalidate]` instead. (A mismatch is a miss, never
/// a wrong value.) The value must be `Serialize + Clone`; the caller gets it back unchanged.
///
/// The write goes through `Cache::set_with`: both tiers, loads in flight superseded, other
/// instances' L1 copies dropped through the backplane.
///
/// # Arguments
/// - `kind = "..."`: required; as in `#[cached]`.
/// - `key = "user:{id}"` or `key = ["user:{id}", "email:{email}"]`: required; templates over the
///   arguments, as in `#[cached]`, built before the body runs (arguments are borrowed). A list
///   stores the value under each key.
/// - `tags = ["user:{id}"]`: tags stored with the entries, for tag invalidation.
/// - `ttl = 300` or `ttl = <Duration expr>`, or `ttl_fn = <fn(&T) -> Duration>` over the stored
///   value: as in `#[cached]`. Default: the kind's TTL.
/// - `schema = "profile-v3"`: the stable identity of the stored type, as in `#[cached]`; a put must
///   name the schema the `#[cached]` functions reading the entries name (otherwise its entries
///   read as misses).
/// - `cache = <expr>`: as in `#[cached]`; the handle is cloned before the body runs, so the
///   function may take `&mut self` or `self`.
///
/// Generic functions and any receiver are fine: the body always runs.
#[proc_macro_attribute]
pub fn cache_put(args: TokenStream, item: TokenStream) -> TokenStream {
    write(Attr::Put, args, item)
}

/// Invalidates cache entries after an `async fn` succeeds, on every instance: for functions that
/// change or delete data (Spring's `@CacheEvict`). Keys are built from the arguments, as in
/// `#[cached]`; tags drop every entry carrying them.
///
/// ```
/// use cache_core::{cache_invalidate, cached, Cache};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::LazyLock;
///
/// static CACHE: LazyLock<Cache> = LazyLock::new(|| {
///     futures::executor::block_on(Cache::builder().prefix("docs-invalidate").build()).expect("valid")
/// });
/// static LOADS: AtomicUsize = AtomicUsize::new(0);
///
/// #[cached(kind = "database_query", key = "profile:{id}", tags = ["user:{id}"], cache = CACHE)]
/// async fn profile(id: u64) -> String {
///     LOADS.fetch_add(1, Ordering::SeqCst);
///     format!("profile {id}")
/// }
///
/// #[cache_invalidate(kind = "database_query", key = "profile:{id}", cache = CACHE)]
/// async fn update_profile(id: u64, bio: String) -> Result<(), std::io::Error> {
///     Ok(()) // UPDATE ...
/// }
///
/// #[cache_invalidate(tags = ["user:{id}"], cache = CACHE)]
/// async fn delete_user(id: u64) -> Result<(), std::io::Error> {
///     Ok(()) // DELETE ...
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// profile(1).await;
/// update_profile(1, "hi".into()).await.unwrap();
/// profile(1).await; // reloaded
/// delete_user(1).await.unwrap();
/// profile(1).await; // reloaded
/// assert_eq!(LOADS.load(Ordering::SeqCst), 3);
/// # });
/// ```
///
/// # When
/// After the body returns, unless it returns `Err` (a function returning `Result<T, E>`): a failed
/// write changed nothing, so nothing is invalidated. With `before = true`, before the body runs,
/// whatever it returns. After is the safer default: with `before`, a concurrent read between the
/// invalidation and the write can load and cache the old data again.
///
/// Invalidation goes through `Cache::invalidate` / `Cache::invalidate_tags`: both tiers, loads in
/// flight superseded, every instance's L1 through the backplane.
///
/// # Arguments
/// At least one of `key` and `tags`:
/// - `key = "user:{id}"` or `key = ["user:{id}", "email:{email}"]`: templates over the arguments,
///   as in `#[cached]`, built before the body runs; with `kind = "..."`. Only entries with a
///   `key = "..."` template can be named this way (default keys are hashes).
/// - `tags = ["user:{id}", "users"]`: templates; every entry carrying one of them is dropped.
/// - `before = true`: invalidate before the body runs. Default: after it succeeds.
/// - `cache = <expr>`: as in `#[cache_put]`.
#[proc_macro_attribute]
pub fn cache_invalidate(args: TokenStream, item: TokenStream) -> TokenStream {
    write(Attr::Invalidate, args, item)
}

fn write(attr: Attr, args: TokenStream, item: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(item as syn::ItemFn);
    let checked = parse(attr, args)
        .and_then(|args| validate::check_write(&args, &item).map(|plan| (args, plan)));
    match checked {
        Ok((args, plan)) => expand::expand_write(&args, &item, &plan).into(),
        Err(e) => unchanged(e, &item),
    }
}

fn parse(attr: Attr, args: TokenStream) -> syn::Result<args::Args> {
    syn::parse::Parser::parse(
        |input: syn::parse::ParseStream<'_>| args::parse(attr, input),
        args,
    )
}

/// The errors, and the function unchanged, so its callers get no follow-up errors.
fn unchanged(e: syn::Error, item: &syn::ItemFn) -> TokenStream {
    let e = e.to_compile_error();
    quote::quote! { #e #item }.into()
}
