//! `#[cached]` in background mode.
//!
//! With `refresh`, `xfetch`, `soft_timeout` or `hard_timeout`, a load may outlive the call (an eager
//! refresh, a load finishing after its soft timeout), so the body must own what it uses. The macro
//! then passes `make`: called only when a load (or a refresh) needs the body, it copies the
//! borrowed arguments and the receiver into an owned, `Send + 'static` body, which returns the
//! function's output and whether `unless` refuses it. A hit copies nothing. The shapes are those
//! of `read`; the skeleton is [`read_through_bg`](super::read_through_bg).

use futures::FutureExt as _;
use serde::{de::DeserializeOwned, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use super::read::{
    CacheableError, Fallible, FallibleCached, Maybe, MaybeNegative, Plain, SharedError,
};
use super::{direct, guarded, read_through_bg, Call};
use crate::loader::{self, HardTimeout, OwnedLoader};

/// An argument of a `#[cached]` function in background mode, owned by the body.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`refresh`, `xfetch`, `soft_timeout` and `hard_timeout` run the body in a background task, so it owns a copy of each argument: `{Self}` is not `Send + 'static`",
    label = "this argument cannot be moved into a background task",
    note = "a `&T` argument is copied with `ToOwned` (`&str` becomes a `String`); take owned, `Send + 'static` arguments, or remove the background arguments"
)]
pub trait BackgroundArg: Send + 'static {}

impl<A: Send + 'static> BackgroundArg for A {}

/// The receiver of a `#[cached]` method in background mode, cloned into the body.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`refresh`, `xfetch`, `soft_timeout` and `hard_timeout` run the body in a background task, so a `#[cached]` method clones `self` into it: `{Self}` must be `Clone + Send + Sync + 'static`",
    label = "`self` cannot be cloned into a background task",
    note = "derive `Clone` for it (a struct of `Arc`s, pools and clients clones cheaply), or remove the background arguments"
)]
pub trait BackgroundReceiver: Clone + Send + Sync + 'static {}

impl<S: Clone + Send + Sync + 'static> BackgroundReceiver for S {}

/// A `&T` argument, owned.
#[doc(hidden)]
pub fn own_arg<A: ?Sized + ToOwned>(arg: &A) -> A::Owned
where
    A::Owned: BackgroundArg,
{
    arg.to_owned()
}

/// An owned argument, checked.
#[doc(hidden)]
pub fn own_value<A: BackgroundArg>(arg: A) -> A {
    arg
}

/// `&self`, cloned.
#[doc(hidden)]
pub fn own_receiver<S: BackgroundReceiver>(receiver: &S) -> S {
    receiver.clone()
}

/// The error type of a `#[cached(hard_timeout = ...)]` function.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`hard_timeout` gives up on the body with `cache_core::Error::LoaderTimeout`, so the error type `{Self}` must implement `From<cache_core::Error>`",
    label = "no `From<cache_core::Error>` for this error type",
    note = "add `impl From<cache_core::Error> for {Self}` (or a `#[from] cache_core::Error` variant with thiserror), or use `soft_timeout` alone"
)]
pub trait TimeoutError: From<crate::Error> {}

impl<E: From<crate::Error>> TimeoutError for E {}

/// What a `hard_timeout` returns.
#[doc(hidden)]
pub fn timeout_error<E: TimeoutError>(after: Duration) -> E {
    E::from(crate::Error::LoaderTimeout(after))
}

/// Runs a background-mode body in the caller's task (bypassed, refreshed, uncached).
pub(super) fn direct_bg<M, L, Fut>(make: M) -> impl Future<Output = Fut::Output>
where
    M: FnOnce() -> L,
    L: FnOnce() -> Fut,
    Fut: Future,
{
    direct(guarded(make()()))
}

/// The owned loader of a background-mode body: `make`'s body, its output sorted by `sort`.
pub(super) fn bg_loader<Out, S, X, H, L, Fut>(
    body: L,
    sort: impl FnOnce(Out, bool) -> Result<S, X> + Send + 'static,
) -> OwnedLoader<S, X, H>
where
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = (Out, bool)> + Send + 'static,
{
    loader::owned(move || guarded(body()).map(move |(out, refused)| sort(out, refused)))
}

/// No hard timeout for functions that have no error to report it with.
fn no_timeout<O>(never: Infallible) -> O {
    match never {}
}

/// `#[cached]` on `async fn -> T`, in background mode.
#[doc(hidden)]
pub async fn cached_value_bg<T, M, L, Fut>(call: Call<'_, T>, make: M) -> T
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    M: FnOnce() -> L,
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = (T, bool)> + Send + 'static,
{
    read_through_bg::<_, Infallible, _, _, _, _>(call, Plain::new(), make, no_timeout).await
}

/// `#[cached]` on `async fn -> Option<T>`, in background mode (see
/// [`cached_option`](super::cached_option)).
#[doc(hidden)]
pub async fn cached_option_bg<T, M, L, Fut>(
    call: Call<'_, T>,
    none_ttl: Option<Duration>,
    make: M,
) -> Option<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    M: FnOnce() -> L,
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = (Option<T>, bool)> + Send + 'static,
{
    match none_ttl {
        None => {
            read_through_bg::<_, Infallible, _, _, _, _>(call, Maybe::new(), make, no_timeout).await
        }
        Some(ttl) => {
            read_through_bg::<_, Infallible, _, _, _, _>(
                call,
                MaybeNegative::new(ttl),
                make,
                no_timeout,
            )
            .await
        }
    }
}

/// `#[cached]` on `async fn -> Result<T, E>`, in background mode (see
/// [`cached_result`](super::cached_result)). A hard timeout (`H = Duration`, only with
/// `hard_timeout`) becomes `on_timeout(after)`.
#[doc(hidden)]
pub async fn cached_result_bg<T, E, H, M, L, Fut, C>(
    call: Call<'_, T>,
    make: M,
    on_timeout: C,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: SharedError,
    H: HardTimeout,
    M: FnOnce() -> L,
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = (Result<T, E>, bool)> + Send + 'static,
    C: FnOnce(H) -> E,
{
    read_through_bg(call, Fallible::new(), make, |x| Err(on_timeout(x))).await
}

/// `#[cached(cache_errors = ...)]` on `async fn -> Result<T, E>`, in background mode (see
/// [`cached_result_errors`](super::cached_result_errors)).
#[doc(hidden)]
pub async fn cached_result_errors_bg<T, E, H, M, L, Fut, C>(
    call: Call<'_, T>,
    error_ttl: Duration,
    make: M,
    on_timeout: C,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: CacheableError,
    H: HardTimeout,
    M: FnOnce() -> L,
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = (Result<T, E>, bool)> + Send + 'static,
    C: FnOnce(H) -> E,
{
    read_through_bg(call, FallibleCached::new(error_ttl), make, |x| {
        Err(on_timeout(x))
    })
    .await
}
