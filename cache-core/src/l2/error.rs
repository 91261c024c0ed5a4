//! What goes wrong in an L2 operation: outages (retrying later helps) and refusals (Redis
//! answered, and would answer the same again), sorted from redis-rs errors and reply codes.

use redis::RedisError;
use std::time::Duration;

use crate::error::Error;

/// Why an L2 operation did not produce a result.
#[derive(Debug)]
pub(crate) enum L2Error {
    /// The breaker is open: nothing was sent.
    Skipped,
    /// No answer within the deadline.
    Timeout,
    /// Redis is unreachable or not serving now (an outage: retrying later helps).
    Unavailable(RedisError),
    /// Redis answered with an error that retrying cannot fix.
    Refused(Refusal, RedisError),
}

/// The kinds of refusals handled differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `OOM command not allowed when used memory > 'maxmemory'` (policy `noeviction`).
    OutOfMemory,
    /// `NOPERM`: the ACL user may not run the command.
    NoPermission,
    /// `WRONGTYPE`: the key holds another type (written by someone else).
    WrongType,
    /// Any other error reply (syntax, not an integer...).
    Other,
}

impl L2Error {
    /// Whether this is an outage (breaker open, deadline, I/O, not serving), which retrying later
    /// may fix, rather than a refusal.
    pub(crate) fn is_outage(&self) -> bool {
        !matches!(self, L2Error::Refused(..))
    }

    /// The refusal, if Redis refused the command.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        match self {
            L2Error::Refused(r, _) => Some(*r),
            _ => None,
        }
    }

    pub(super) fn from_redis(e: RedisError) -> Self {
        if e.is_timeout() {
            return L2Error::Timeout;
        }
        if is_outage(&e) {
            return L2Error::Unavailable(e);
        }
        let text = e.to_string();
        let refusal = match e.code() {
            Some("OOM") => Refusal::OutOfMemory,
            Some("NOPERM") => Refusal::NoPermission,
            Some("WRONGTYPE") => Refusal::WrongType,
            // Errors raised inside a script carry the original error in their text.
            _ if text.contains("OOM command not allowed") => Refusal::OutOfMemory,
            _ if text.contains("NOPERM") => Refusal::NoPermission,
            _ if text.contains("WRONGTYPE") => Refusal::WrongType,
            _ => Refusal::Other,
        };
        L2Error::Refused(refusal, e)
    }
}

impl From<L2Error> for Error {
    fn from(e: L2Error) -> Self {
        match e {
            L2Error::Skipped => Error::CircuitOpen,
            L2Error::Timeout => Error::Timeout(Duration::ZERO),
            L2Error::Unavailable(e) | L2Error::Refused(_, e) => Error::Redis(e.to_string()),
        }
    }
}

/// Whether `e` means Redis is unreachable or not serving now: I/O, refused or dropped connections,
/// and the replies of a server that is loading, read-only (a replica after failover), without a
/// master, busy with a script, or of a cluster that is down.
pub(super) fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("LOADING" | "READONLY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "BUSY")
        )
}

pub(super) fn wrong_count() -> L2Error {
    L2Error::Refused(
        Refusal::Other,
        RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a batch returned a wrong number of replies",
        )),
    )
}

pub(super) fn oom_error() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Extension,
        "OOM command not allowed when used memory > 'maxmemory'",
    ))
}

/// An error's text without the parts that may echo a URL (redis-rs errors about connections may).
pub(super) fn redacted_error(e: &L2Error) -> String {
    match e {
        L2Error::Refused(_, err) | L2Error::Unavailable(err) => {
            format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.detail().unwrap_or("")
            )
        }
        other => format!("{other:?}"),
    }
}
