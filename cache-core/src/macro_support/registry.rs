//! The default cache of `#[cached]` functions, and the warmers they register.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::Cache;

static DEFAULT: OnceLock<Cache> = OnceLock::new();

tokio::task_local! {
    /// The cache `Cache::warm` runs the registered warmers against.
    static WARMING: Cache;
}

/// Sets `cache` as the default cache: the one `#[cached]`, `#[cache_put]` and `#[cache_invalidate]`
/// functions use when they name no `cache = ...`. Call it once at startup, before the first call
/// of such a function.
///
/// A function without `cache = ...` called before any default cache is set is a mistake the
/// program cannot recover from on its own: in a debug build it panics, saying so; in a release
/// build it logs an error (once) and runs uncached.
///
/// # Errors
/// Returns the cache back when a default cache was set already.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = cache_core::Cache::builder().build().await.unwrap();
/// cache_core::set_default_cache(cache.clone()).unwrap();
/// assert!(cache_core::set_default_cache(cache).is_err());
/// assert!(cache_core::default_cache().is_some());
/// # });
/// ```
pub fn set_default_cache(cache: Cache) -> Result<(), Cache> {
    DEFAULT.set(cache)
}

/// The default cache set with [`set_default_cache`], if any.
pub fn default_cache() -> Option<&'static Cache> {
    DEFAULT.get()
}

/// The cache of a `#[cached]` function without `cache = ...`: the one being warmed (inside
/// `Cache::warm`), else the default cache. Without either: see [`set_default_cache`].
#[doc(hidden)]
pub fn global() -> Option<Cow<'static, Cache>> {
    if let Ok(c) = WARMING.try_with(Cache::clone) {
        return Some(Cow::Owned(c));
    }
    match DEFAULT.get() {
        Some(c) => Some(Cow::Borrowed(c)),
        None => {
            missing_default();
            None
        }
    }
}

fn missing_default() {
    const MESSAGE: &str = "a #[cached], #[cache_put] or #[cache_invalidate] function without \
        `cache = ...` ran before any default cache was set: call \
        `cache_core::set_default_cache(cache)` at startup (or give the function `cache = ...`)";
    if cfg!(debug_assertions) {
        panic!("{MESSAGE}");
    }
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::error!("{MESSAGE}; running it uncached");
    }
}

/// Runs `fut` with `cache` as the cache of the `#[cached]` functions it calls that name no
/// `cache = ...` (what `Cache::warm` does for the registered warmers and `WarmPlan::calls`).
pub(crate) fn warming<F: Future>(cache: Cache, fut: F) -> impl Future<Output = F::Output> {
    WARMING.scope(cache, fut)
}

/// The future a warmer returns.
#[doc(hidden)]
pub type WarmFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A zero-argument `#[cached(..., warm)]` function, registered at link time for `warm()`.
#[doc(hidden)]
pub struct Warmer {
    /// The function's path.
    pub name: &'static str,
    /// Calls the function (which caches its result).
    pub run: fn() -> WarmFuture,
}

inventory::collect!(Warmer);

/// Every registered warmer.
#[doc(hidden)]
pub fn warmers() -> impl Iterator<Item = &'static Warmer> {
    inventory::iter::<Warmer>.into_iter()
}
