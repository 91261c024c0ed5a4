//! The crate's error type.
//!
//! Callers of the read/write API never see L2 failures: a dead or hung Redis degrades the cache to
//! L1-only. These errors surface from construction (`CacheBuilder::build`, `Cache::from_env`) and from
//! the few explicit operations that must tell you whether Redis was reached (for example
//! [`Cache::ping_l2`](crate::Cache::ping_l2)).

use std::time::Duration;

/// Errors returned by `cache-core`. `Clone`, so that one error can be handed to every caller of a
/// shared load.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (a bad environment variable, a zero byte budget...).
    /// Fix the named setting.
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// Redis answered with an error or the connection failed. The message never contains the
    /// password of the Redis URL.
    #[error("redis error: {0}")]
    Redis(String),
    /// Redis rejected the credentials (wrong password, unknown ACL user, missing permissions). The
    /// message never contains the password.
    #[error("redis authentication failed: {0}")]
    Auth(String),
    /// Redis did not answer within the L2 timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open: L2 is skipped until a probe succeeds.
    #[error("L2 skipped: the circuit breaker is open")]
    CircuitOpen,
    /// L2 is not configured (no `REDIS_URL`, or the cache runs L1-only).
    #[error("L2 is not configured")]
    NoL2,
    /// A loader ran past its hard timeout and no stale value was at hand: the load was abandoned.
    /// Retry later, or raise the kind's [`hard_timeout`](crate::KindConfig::hard_timeout).
    #[error("the loader did not finish within its hard timeout of {0:?}")]
    LoaderTimeout(Duration),
}

impl Error {
    /// True when the error is an L2 timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// True when a loader was abandoned at its hard timeout.
    pub fn is_loader_timeout(&self) -> bool {
        matches!(self, Error::LoaderTimeout(_))
    }

    /// True when the error comes from L2 being unreachable, hung or skipped.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Redis(_) | Error::Timeout(_) | Error::CircuitOpen | Error::NoL2
        )
    }
}

/// Why [`Cache::get_or_load_owned`](crate::Cache::get_or_load_owned) returned no value: the
/// loader's own error, or one made by the cache (a hard timeout).
///
/// ```
/// use cache_core::{Error, LoadError};
/// use std::time::Duration;
/// let e: LoadError<std::io::Error> = LoadError::Cache(Error::LoaderTimeout(Duration::from_secs(2)));
/// assert!(e.is_timeout());
/// assert_eq!(e.to_string(), "the loader did not finish within its hard timeout of 2s");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError<E> {
    /// The loader returned this error (shared by every caller of the same load; never cached).
    Loader(std::sync::Arc<E>),
    /// The cache gave up on the load: [`Error::LoaderTimeout`].
    Cache(Error),
}

impl<E> LoadError<E> {
    /// True when the load was abandoned at its hard timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, LoadError::Cache(e) if e.is_loader_timeout())
    }

    /// The loader's error, if that is what this is.
    pub fn loader_error(&self) -> Option<&std::sync::Arc<E>> {
        match self {
            LoadError::Loader(e) => Some(e),
            LoadError::Cache(_) => None,
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Loader(e) => write!(f, "{e}"),
            LoadError::Cache(e) => write!(f, "{e}"),
        }
    }
}

/// Transparent: the message and source are those of the wrapped error.
impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Loader(e) => e.source(),
            LoadError::Cache(e) => std::error::Error::source(e),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
