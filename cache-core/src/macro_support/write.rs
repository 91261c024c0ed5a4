//! `#[cache_put]` and `#[cache_invalidate]`, and the companions of `#[cached]` functions.

use serde::Serialize;
use std::future::Future;

use super::{global, ValueTtl};
use crate::provenance::{self, Lookup};
use crate::scope;
use crate::{Cache, EntryOptions};

/// The `{name}_traced` companion: runs one call of the function, returning its provenance.
#[doc(hidden)]
pub fn traced<F: Future>(call: F) -> impl Future<Output = Lookup<F::Output>> {
    provenance::traced(call)
}

/// The `{name}_refresh` companion: runs one call of the function in refresh mode (not the calls
/// its body makes).
#[doc(hidden)]
pub fn refresh_one<F: Future>(call: F) -> impl Future<Output = F::Output> {
    scope::refresh_next(call)
}

/// The cache of a `#[cache_put]` / `#[cache_invalidate]` call, cloned before the body runs (so
/// that the body may take `&mut self` or `self`).
#[doc(hidden)]
pub fn owned(cache: &Cache) -> Option<Cache> {
    Some(cache.clone())
}

/// The default cache, for a `#[cache_put]` / `#[cache_invalidate]` without `cache = ...`.
#[doc(hidden)]
pub fn global_owned() -> Option<Cache> {
    global().map(std::borrow::Cow::into_owned)
}

/// A value that `#[cache_put]` stores.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`#[cache_put]` stores `{Self}` in the cache, so it must implement `Serialize` and `Clone`",
    label = "the stored value is not `Serialize + Clone + Send + Sync + 'static`",
    note = "derive `Serialize` and `Clone` for it; `#[cached]` functions reading it back also need `Deserialize`"
)]
pub trait PutValue: Serialize + Clone + Send + Sync + 'static {}

impl<T: Serialize + Clone + Send + Sync + 'static> PutValue for T {}

/// Stores the value of a `#[cache_put]` function under each key (and nothing for `None`/`Err`).
/// `ttl_fn` sees the stored value (for `Option<T>`, the `Some` value).
#[doc(hidden)]
pub async fn put<S: PutValue>(
    cache: Option<&Cache>,
    kind: &str,
    keys: &[String],
    value: Option<S>,
    opts: EntryOptions,
) {
    let (Some(cache), Some(value)) = (cache, value) else {
        return;
    };
    let writes = keys
        .iter()
        .map(|key| cache.set_with(kind, key, value.clone(), &opts));
    futures::future::join_all(writes).await;
}

/// `#[cache_put]` on `-> T`.
#[doc(hidden)]
pub fn put_plain<T: PutValue>(
    out: &T,
    ttl_fn: Option<ValueTtl<T>>,
    opts: EntryOptions,
) -> (Option<T>, EntryOptions) {
    let opts = match ttl_fn {
        Some(f) => opts.ttl(f(out)),
        None => opts,
    };
    (Some(out.clone()), opts)
}

/// `#[cache_put]` on `-> Option<T>`: `Some` only, stored as `T`.
#[doc(hidden)]
pub fn put_some<T: PutValue>(
    out: &Option<T>,
    ttl_fn: Option<ValueTtl<T>>,
    opts: EntryOptions,
) -> (Option<T>, EntryOptions) {
    match out {
        Some(v) => put_plain(v, ttl_fn, opts),
        None => (None, opts),
    }
}

/// `#[cache_put]` on `-> Result<T, E>`: `Ok` only, stored as `T`.
#[doc(hidden)]
pub fn put_ok<T: PutValue, E>(
    out: &Result<T, E>,
    ttl_fn: Option<ValueTtl<T>>,
    opts: EntryOptions,
) -> (Option<T>, EntryOptions) {
    match out {
        Ok(v) => put_plain(v, ttl_fn, opts),
        Err(_) => (None, opts),
    }
}

/// `#[cache_invalidate]`: drops each key of `kind` and each tag, on every instance.
#[doc(hidden)]
pub async fn invalidate(cache: Option<&Cache>, kind: &str, keys: &[String], tags: &[String]) {
    let Some(cache) = cache else {
        return;
    };
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let keys = futures::future::join_all(keys.iter().map(|key| cache.invalidate(kind, key)));
    futures::future::join(keys, cache.invalidate_tags(&tags)).await;
}
