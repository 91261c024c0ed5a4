//! The `#[cached]` attribute macro of tiered-cache. Use it through `cache_core::cached` (feature
//! `macros`, on by default); the generated code calls `cache_core::__private`.
//!
//! The macro is a pipeline, one file per step (as in tracing-attributes): `args` parses the
//! attribute, `validate` checks the signature and the arguments together (every error at its
//! token, all reported at once), `expand` rebuilds the function and `key` builds its cache key.
#![warn(missing_docs, unreachable_pub)]

use proc_macro::TokenStream;

mod args;
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
/// #[derive(Debug)]
/// struct DbError;
///
/// #[cached(kind = "database_query", key = "user:{id}", ttl = 600)]
/// async fn load_user(id: u64) -> Result<User, DbError> {
///     Ok(User { id, name: "Ada".into() }) // the database query
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // Once at startup; without it, `#[cached]` functions run uncached (with one warning).
/// cache_core::install(Cache::from_env().await?).ok();
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
///     `Err` is never cached and is returned unchanged.
///
///   `T` must be `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`; the caller gets a
///   clone. A type alias named otherwise (e.g. `type Lookup = Option<User>`) is cached as a plain
///   value.
/// - The body is moved into `move || async move { ... }`: `?` and `return` behave as before.
/// - Concurrent calls with the same key share one run of the body (stampede protection). For
///   `Result` functions an `Err` is returned to the caller whose body produced it; callers that
///   waited on it run their own body.
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
/// each call. Overrides the kind's TTL for this function's entries. Default: the kind's TTL.
///
/// # `key`
/// `key = "user:{id}"`: a format string over the arguments, giving the key part after
/// `{prefix}:v1:{kind}:`. Each `{name}` must be an argument (formatted with `Display`; `{name:?}`
/// uses `Debug`); `{{` and `}}` are literal braces. With `key`, nothing else goes into the key:
/// make it unique per function. Key parts over 200 bytes, or containing `{`/`}`, are replaced by a
/// hash.
///
/// Default: the function's path (module, type for methods, name) and a 128-bit hash of the
/// MessagePack encoding of the arguments (minus `self` and [`skip`](#skip)ped ones), which must
/// then be `Serialize`. Two functions never share a default key; renaming or moving a function
/// changes its keys (old entries then expire).
///
/// # `tags`
/// `tags = ["user:{id}", "users"]`: templates like `key`, stored with the entry for tag
/// invalidation. Default: none.
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
/// item do not reach the origin. Default: `None` is not cached.
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
/// `OnceLock<Cache>` and write `cache = CACHE.get().expect("cache built at startup")`, or
/// `install` it.
///
/// Default: the cache installed with `cache_core::install(cache)` at startup. When none is
/// installed, the function runs uncached and one warning is logged.
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
/// # `warm`
/// `warm`: a flag, only on a function without arguments. Registers the function as a warmer
/// (`cache_core::__private::warmers()`): warm-up calls it once, which fills the cache. Free
/// functions only (an associated function cannot be named from the registration).
///
/// # Errors at compile time
/// Unknown, duplicated or mistyped arguments, a missing `kind`, a non-`async` function, `{name}`s
/// that are not arguments, and the other rules above are compile errors at the offending token,
/// each saying how to fix it.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(item as syn::ItemFn);
    let checked = syn::parse::<args::CachedArgs>(args)
        .and_then(|args| validate::check(&args, &item).map(|plan| (args, plan)));
    match checked {
        Ok((args, plan)) => expand::expand(&args, &item, &plan).into(),
        // Re-emit the function unchanged too, so its callers get no follow-up errors.
        Err(e) => {
            let e = e.to_compile_error();
            quote::quote! { #e #item }.into()
        }
    }
}
