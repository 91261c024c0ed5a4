//! Per-call policy for `#[cached]` functions, without touching their signatures: skip the cache
//! ([`bypass`]) or reload and store ([`refresh`]) for every `#[cached]` call made while a future
//! runs, through a task-local scope.

use std::future::Future;

/// How the `#[cached]` calls of the current task use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// Read through the cache.
    #[default]
    Normal,
    /// Run the body; neither read nor write the cache.
    Bypass,
    /// Run the body and store its result (replacing the cached one on every instance).
    Refresh,
}

tokio::task_local! {
    /// Set by [`bypass`] and [`refresh`].
    static MODE: Mode;
    /// Set by the `_refresh` companions: the next `#[cached]` call (only it, not the calls its
    /// body makes) refreshes.
    static REFRESH_NEXT: bool;
}

/// Runs `fut` with the cache bypassed by every `#[cached]` function it calls: their bodies run,
/// and nothing is read from or written to the cache. For a request that must see the source of
/// truth (say, an admin page or a `Cache-Control: no-cache` request).
///
/// The scope covers the calls made by `fut` and the calls their bodies make, not tasks that `fut`
/// spawns. The innermost of nested [`bypass`] / [`refresh`] scopes wins. [`Cache`](crate::Cache)
/// methods called directly are not affected.
///
/// ```
/// use cache_core::{cached, Cache};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::LazyLock;
///
/// static CACHE: LazyLock<Cache> = LazyLock::new(|| {
///     futures::executor::block_on(Cache::builder().prefix("docs-bypass").build()).expect("valid")
/// });
/// static CALLS: AtomicUsize = AtomicUsize::new(0);
///
/// #[cached(kind = "api_response", cache = CACHE)]
/// async fn price(item: u32) -> u64 {
///     CALLS.fetch_add(1, Ordering::SeqCst);
///     u64::from(item) * 100
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// price(1).await; // miss: cached
/// price(1).await; // hit
/// assert_eq!(CALLS.load(Ordering::SeqCst), 1);
/// assert_eq!(cache_core::scope::bypass(price(1)).await, 100); // the body runs
/// assert_eq!(CALLS.load(Ordering::SeqCst), 2);
/// # });
/// ```
pub fn bypass<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    // Not an `async fn`, which would hold `fut` twice (see `provenance::capture`).
    MODE.scope(Mode::Bypass, fut)
}

/// Runs `fut` with every `#[cached]` function it calls reloading: their bodies run and their
/// results replace the cached ones, in both tiers and on every instance (through the backplane).
/// A result that would not be cached (refused by `unless`, `None` without `none_ttl`) removes the
/// cached entry instead; an `Err` leaves the cache as it was (unless the function caches errors,
/// see `cache_errors`).
///
/// The scope covers the calls made by `fut` and the calls their bodies make; to reload one
/// function only, use the `{name}_refresh` companion that
/// `#[cached(..., companions(refresh))]` generates. The innermost of nested scopes wins.
///
/// ```
/// use cache_core::{cached, Cache};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::LazyLock;
///
/// static CACHE: LazyLock<Cache> = LazyLock::new(|| {
///     futures::executor::block_on(Cache::builder().prefix("docs-refresh").build()).expect("valid")
/// });
/// static VERSION: AtomicU64 = AtomicU64::new(1);
///
/// #[cached(kind = "static_data", cache = CACHE)]
/// async fn config_version() -> u64 {
///     VERSION.load(Ordering::SeqCst)
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(config_version().await, 1);
/// VERSION.store(2, Ordering::SeqCst);
/// assert_eq!(config_version().await, 1); // cached
/// assert_eq!(cache_core::scope::refresh(config_version()).await, 2); // reloaded and stored
/// assert_eq!(config_version().await, 2);
/// # });
/// ```
pub fn refresh<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    MODE.scope(Mode::Refresh, fut)
}

/// Runs `fut` so that the first `#[cached]` call it makes refreshes (the `_refresh` companions).
pub(crate) fn refresh_next<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    REFRESH_NEXT.scope(true, fut)
}

/// Called by a `#[cached]` call as it starts: how it uses the cache.
pub(crate) fn enter() -> Mode {
    if REFRESH_NEXT.try_with(|r| *r).unwrap_or(false) {
        Mode::Refresh
    } else {
        MODE.try_with(|m| *m).unwrap_or_default()
    }
}

/// Runs a `#[cached]` function's body: the one-call refresh of a companion does not reach the
/// calls the body makes (a [`bypass`] or [`refresh`] scope does).
pub(crate) fn within<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    REFRESH_NEXT.scope(false, fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outside_any_scope_calls_read_through() {
        assert_eq!(enter(), Mode::Normal);
    }

    #[tokio::test]
    async fn the_innermost_scope_wins() {
        let mode = bypass(refresh(async { enter() })).await;
        assert_eq!(mode, Mode::Refresh);
        let mode = refresh(bypass(async { enter() })).await;
        assert_eq!(mode, Mode::Bypass);
    }

    #[tokio::test]
    async fn refresh_next_reaches_the_first_call_but_not_its_body() {
        let (first, nested) = bypass(refresh_next(async {
            let mode = enter();
            let nested = within(async { enter() }).await;
            (mode, nested)
        }))
        .await;
        assert_eq!(first, Mode::Refresh);
        assert_eq!(nested, Mode::Bypass, "the body keeps the outer scope");
    }
}
