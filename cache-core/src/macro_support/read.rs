//! `#[cached]`: the read-through of functions returning `T`, `Option<T>` and `Result<T, E>`, each a
//! [`Shape`] run by the one skeleton ([`read_through`](super::read_through)).

use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::{read_through, Call, Ready, Refreshed, Shape};
use crate::EntryOptions;

/// A stored value type of a `#[cached]` function.
pub(crate) trait Value:
    Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Value for T {}

/// `-> T`: stored as `T`; a value refused by `unless` is returned, not stored.
pub(crate) struct Plain<T>(PhantomData<fn() -> T>);

/// `-> Option<T>`: `Some` stored as `T` (so such functions, functions returning `T` or
/// `Result<T, E>` and `#[cache_put]` share entries); `None` not cached.
pub(crate) struct Maybe<T>(PhantomData<fn() -> T>);

/// `-> Option<T>` with `none_ttl`: stored as `Option<T>`, `None` for `none_ttl` (negative caching).
pub(crate) struct MaybeNegative<T>(Duration, PhantomData<fn() -> T>);

/// `-> Result<T, E>`: `Ok` stored as `T`; an `Err` is not cached but shared with every caller of
/// the failed load (one call reaches a failing origin, as for a successful one).
pub(crate) struct Fallible<T, E>(PhantomData<fn() -> (T, E)>);

/// `-> Result<T, E>` with `cache_errors`: stored as `Result<T, E>`, an `Err` for the error TTL.
pub(crate) struct FallibleCached<T, E>(Duration, PhantomData<fn() -> (T, E)>);

macro_rules! clone_shape {
    ($($name:ident<$($p:ident),*>),*) => {$(
        impl<$($p),*> Clone for $name<$($p),*> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),*> Copy for $name<$($p),*> {}
    )*};
}

clone_shape!(Plain<T>, Maybe<T>, MaybeNegative<T>, Fallible<T, E>, FallibleCached<T, E>);

impl<T> Plain<T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Maybe<T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> MaybeNegative<T> {
    pub(crate) fn new(none_ttl: Duration) -> Self {
        Self(none_ttl, PhantomData)
    }
}

impl<T, E> Fallible<T, E> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T, E> FallibleCached<T, E> {
    pub(crate) fn new(error_ttl: Duration) -> Self {
        Self(error_ttl, PhantomData)
    }
}

impl<T: Value> Shape for Plain<T> {
    type Value = T;
    type Out = T;
    type Stored = T;
    type Kept = T;

    fn value<'o>(&self, out: &'o T) -> Option<&'o T> {
        Some(out)
    }
    fn opts(&self, r: &Ready<'_, T>) -> EntryOptions {
        r.value_opts()
    }
    fn sort(&self, out: T, refused: bool) -> Result<T, T> {
        if refused {
            Err(out)
        } else {
            Ok(out)
        }
    }
    fn failure(_: &T) -> bool {
        false
    }
    fn hit(&self, stored: Arc<T>) -> T {
        Arc::unwrap_or_clone(stored)
    }
    fn kept(&self, kept: &T) -> T {
        kept.clone()
    }
    fn refreshed(&self, out: &T, refused: bool) -> Refreshed<T> {
        if refused {
            Refreshed::Drop
        } else {
            Refreshed::Store(out.clone())
        }
    }
}

impl<T: Value> Shape for Maybe<T> {
    type Value = T;
    type Out = Option<T>;
    type Stored = T;
    type Kept = Option<T>;

    fn value<'o>(&self, out: &'o Option<T>) -> Option<&'o T> {
        out.as_ref()
    }
    fn opts(&self, r: &Ready<'_, T>) -> EntryOptions {
        r.value_opts()
    }
    fn sort(&self, out: Option<T>, refused: bool) -> Result<T, Option<T>> {
        match out {
            Some(v) if !refused => Ok(v),
            other => Err(other),
        }
    }
    fn failure(_: &Option<T>) -> bool {
        false
    }
    fn hit(&self, stored: Arc<T>) -> Option<T> {
        Some(Arc::unwrap_or_clone(stored))
    }
    fn kept(&self, kept: &Option<T>) -> Option<T> {
        kept.clone()
    }
    fn refreshed(&self, out: &Option<T>, refused: bool) -> Refreshed<T> {
        match out {
            Some(v) if !refused => Refreshed::Store(v.clone()),
            _ => Refreshed::Drop,
        }
    }
}

impl<T: Value> Shape for MaybeNegative<T> {
    type Value = T;
    type Out = Option<T>;
    type Stored = Option<T>;
    type Kept = Option<T>;

    fn value<'o>(&self, out: &'o Option<T>) -> Option<&'o T> {
        out.as_ref()
    }
    fn opts(&self, r: &Ready<'_, T>) -> EntryOptions {
        r.wrapped_opts(Option::as_ref).none_ttl(self.0)
    }
    fn sort(&self, out: Option<T>, refused: bool) -> Result<Option<T>, Option<T>> {
        if refused {
            Err(out)
        } else {
            Ok(out)
        }
    }
    fn failure(_: &Option<T>) -> bool {
        false
    }
    fn hit(&self, stored: Arc<Option<T>>) -> Option<T> {
        Arc::unwrap_or_clone(stored)
    }
    fn kept(&self, kept: &Option<T>) -> Option<T> {
        kept.clone()
    }
    fn refreshed(&self, out: &Option<T>, refused: bool) -> Refreshed<Option<T>> {
        if refused {
            Refreshed::Drop
        } else {
            Refreshed::Store(out.clone())
        }
    }
}

impl<T: Value, E: SharedError> Shape for Fallible<T, E> {
    type Value = T;
    type Out = Result<T, E>;
    type Stored = T;
    type Kept = Result<T, E>;

    fn value<'o>(&self, out: &'o Result<T, E>) -> Option<&'o T> {
        out.as_ref().ok()
    }
    fn opts(&self, r: &Ready<'_, T>) -> EntryOptions {
        r.value_opts()
    }
    fn sort(&self, out: Result<T, E>, refused: bool) -> Result<T, Result<T, E>> {
        match out {
            Ok(v) if !refused => Ok(v),
            other => Err(other),
        }
    }
    fn failure(kept: &Result<T, E>) -> bool {
        kept.is_err()
    }
    fn hit(&self, stored: Arc<T>) -> Result<T, E> {
        Ok(Arc::unwrap_or_clone(stored))
    }
    fn kept(&self, kept: &Result<T, E>) -> Result<T, E> {
        kept.clone()
    }
    fn refreshed(&self, out: &Result<T, E>, refused: bool) -> Refreshed<T> {
        match out {
            Ok(v) if !refused => Refreshed::Store(v.clone()),
            Ok(_) => Refreshed::Drop,
            // A failed reload leaves the cache as it was.
            Err(_) => Refreshed::Leave,
        }
    }
}

impl<T: Value, E: CacheableError> Shape for FallibleCached<T, E> {
    type Value = T;
    type Out = Result<T, E>;
    type Stored = Result<T, E>;
    type Kept = Result<T, E>;

    fn value<'o>(&self, out: &'o Result<T, E>) -> Option<&'o T> {
        out.as_ref().ok()
    }
    fn opts(&self, r: &Ready<'_, T>) -> EntryOptions {
        r.wrapped_opts(|r: &Result<T, E>| r.as_ref().ok())
            .error_ttl(self.0)
    }
    fn sort(&self, out: Result<T, E>, refused: bool) -> Result<Result<T, E>, Result<T, E>> {
        if refused {
            Err(out)
        } else {
            Ok(out)
        }
    }
    fn failure(kept: &Result<T, E>) -> bool {
        // Only `Ok` values `unless` refused are kept (an `Err` is stored for the error TTL).
        kept.is_err()
    }
    fn hit(&self, stored: Arc<Result<T, E>>) -> Result<T, E> {
        Arc::unwrap_or_clone(stored)
    }
    fn kept(&self, kept: &Result<T, E>) -> Result<T, E> {
        kept.clone()
    }
    fn refreshed(&self, out: &Result<T, E>, refused: bool) -> Refreshed<Result<T, E>> {
        if refused {
            Refreshed::Drop
        } else {
            Refreshed::Store(out.clone())
        }
    }
}

/// The error type of a `#[cached]` function returning `Result<T, E>`: concurrent callers of one
/// key share one call of the body, so a failed call's error is handed to each of them.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "concurrent callers of a `#[cached]` function share one call of its body, and so its error: the error type `{Self}` must be `Clone + Send + Sync + 'static`",
    label = "this error type cannot be shared between the callers of one load",
    note = "derive `Clone` for it, or return `Result<T, Arc<{Self}>>` (an `Arc` clones cheaply and shares the one error)"
)]
pub trait SharedError: Clone + Send + Sync + 'static {}

impl<E: Clone + Send + Sync + 'static> SharedError for E {}

/// Checks at the error type that a `#[cached]` function's error can be shared.
#[doc(hidden)]
pub fn assert_shared_error<T, E: SharedError>(_: PhantomData<Result<T, E>>) {}

/// The error type of a `#[cached(cache_errors = ...)]` function, which is stored in the cache.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`cache_errors` stores the error type `{Self}` in the cache, so it must implement `Serialize`, `Deserialize` and `Clone`",
    label = "this error type is not `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`",
    note = "derive `Serialize`, `Deserialize` and `Clone` for it (or map it into an error type that does), or remove `cache_errors`"
)]
pub trait CacheableError: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<E: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> CacheableError for E {}

/// Checks at the `cache_errors` argument that the error type can be cached.
#[doc(hidden)]
pub fn assert_cacheable_error<T, E: CacheableError>(_: PhantomData<Result<T, E>>) {}

/// `#[cached]` on `async fn -> T`.
#[doc(hidden)]
pub async fn cached_value<T, F, Fut, U>(call: Call<'_, T>, unless: U, body: F) -> T
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
    U: FnOnce(&T) -> bool,
{
    read_through(call, Plain::new(), unless, body).await
}

/// `#[cached]` on `async fn -> Option<T>`.
///
/// Without `none_ttl`, a `Some` value is stored as `T`, like the value of a function returning
/// `T` or `Result<T, E>` (so such functions and `#[cache_put]` share entries with this one), and
/// `None` is not cached. With `none_ttl`, entries are `Option<T>`, so that `None` can be cached
/// (as a negative entry) too.
#[doc(hidden)]
pub async fn cached_option<T, F, Fut, U>(
    call: Call<'_, T>,
    none_ttl: Option<Duration>,
    unless: U,
    body: F,
) -> Option<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<T>>,
    U: FnOnce(&T) -> bool,
{
    match none_ttl {
        None => read_through(call, Maybe::new(), unless, body).await,
        Some(ttl) => read_through(call, MaybeNegative::new(ttl), unless, body).await,
    }
}

/// `#[cached]` on `async fn -> Result<T, E>`. `Err` is never cached; concurrent callers of the
/// failed load all get (a clone of) its error.
#[doc(hidden)]
pub async fn cached_result<T, E, F, Fut, U>(call: Call<'_, T>, unless: U, body: F) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: SharedError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    U: FnOnce(&T) -> bool,
{
    read_through(call, Fallible::new(), unless, body).await
}

/// `#[cached(cache_errors = ...)]` on `async fn -> Result<T, E>`: the whole `Result` is the
/// cached value, an `Err` for `error_ttl`, so a cached `Err` is returned without running the body.
#[doc(hidden)]
pub async fn cached_result_errors<T, E, F, Fut, U>(
    call: Call<'_, T>,
    error_ttl: Duration,
    unless: U,
    body: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    E: CacheableError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    U: FnOnce(&T) -> bool,
{
    read_through(call, FallibleCached::new(error_ttl), unless, body).await
}
