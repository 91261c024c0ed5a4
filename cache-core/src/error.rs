//! The crate's error type.
//!
//! Callers of the read/write API never see L2 failures: a dead or hung Redis degrades the cache to
//! L1-only. These errors surface from construction (`CacheBuilder::build`, `Cache::from_env`) and from
//! the few explicit operations that must tell you whether Redis was reached (for example
//! [`Cache::ping_l2`](crate::Cache::ping_l2)).

use std::time::Duration;

/// Errors returned by `cache-core`.
#[derive(Debug, thiserror::Error)]
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
    /// A value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
}

impl Error {
    /// True when the error is an L2 timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// True when the error comes from L2 being unreachable, hung or skipped.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Redis(_) | Error::Timeout(_) | Error::CircuitOpen | Error::NoL2
        )
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
