//! A handle on one kind of a cache whose values have one type, so that calls name neither.

use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::{Cache, EntryOptions, Kind};

/// The values of one kind, all of type `T`: the common calls without turbofish or kind
/// arguments. Cheap to clone, like [`Cache`]; made with [`Cache::typed`].
///
/// ```
/// use cache_core::{Cache, Kind};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// struct Profile { name: String }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache = Cache::builder().prefix("docs-typed").build().await?;
/// let profiles = cache.typed::<Profile>(Kind::DATABASE_QUERY);
///
/// let ada = profiles
///     .get_or_load("user:1", || async { Ok::<_, std::io::Error>(Profile { name: "Ada".into() }) })
///     .await
///     .unwrap();
/// assert_eq!(ada.name, "Ada");
/// // Owned copies where that reads better than an `Arc`.
/// assert_eq!(profiles.get_cloned("user:1").await, Some(Profile { name: "Ada".into() }));
/// profiles.invalidate("user:1").await;
/// assert!(profiles.get("user:1").await.is_none());
/// # Ok::<_, cache_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Typed<T> {
    cache: Cache,
    kind: Kind,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for Typed<T> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            kind: self.kind.clone(),
            _value: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed")
            .field("kind", &self.kind)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl Cache {
    /// A handle on `kind` for values of type `T` (see [`Typed`]).
    pub fn typed<T>(&self, kind: impl Into<Kind>) -> Typed<T> {
        Typed {
            cache: self.clone(),
            kind: kind.into(),
            _value: PhantomData,
        }
    }
}

impl<T> Typed<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The kind.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// [`Cache::get`].
    pub async fn get(&self, key: &str) -> Option<Arc<T>> {
        self.cache.get(&self.kind, key).await
    }

    /// [`get`](Self::get), as an owned value.
    pub async fn get_cloned(&self, key: &str) -> Option<T>
    where
        T: Clone,
    {
        self.get(key).await.map(Arc::unwrap_or_clone)
    }

    /// [`Cache::get_or_load`].
    ///
    /// # Errors
    /// The loader's error, shared by every caller of the failed load.
    pub async fn get_or_load<E, F, Fut>(&self, key: &str, loader: F) -> Result<Arc<T>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.cache.get_or_load(&self.kind, key, loader).await
    }

    /// [`Cache::get_or_load_with`].
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn get_or_load_with<E, F, Fut>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Arc<T>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.cache
            .get_or_load_with(&self.kind, key, opts, loader)
            .await
    }

    /// [`get_or_load`](Self::get_or_load), as an owned value.
    ///
    /// # Errors
    /// As [`get_or_load`](Self::get_or_load).
    pub async fn get_or_load_cloned<E, F, Fut>(&self, key: &str, loader: F) -> Result<T, Arc<E>>
    where
        T: Clone,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.get_or_load(key, loader)
            .await
            .map(Arc::unwrap_or_clone)
    }

    /// [`Cache::set`].
    pub async fn set(&self, key: &str, value: T) {
        self.cache.set(&self.kind, key, value).await;
    }

    /// [`Cache::set_with`].
    pub async fn set_with(&self, key: &str, value: T, opts: &EntryOptions) {
        self.cache.set_with(&self.kind, key, value, opts).await;
    }

    /// [`Cache::invalidate`].
    pub async fn invalidate(&self, key: &str) {
        self.cache.invalidate(&self.kind, key).await;
    }
}
