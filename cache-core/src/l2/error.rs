//! What goes wrong in an L2 operation: outages (retrying later helps) and refusals (Redis
//! answered, and would answer the same again), sorted from redis-rs errors and reply codes.
//!
//! Outages: the breaker open, our deadline, I/O errors, refused or dropped connections, and the
//! replies of a server that is not serving now: `LOADING`, `READONLY`, `MASTERDOWN`, `TRYAGAIN`,
//! `CLUSTERDOWN`, `BUSY`, `MISCONF` (writes stopped after a failed background save),
//! `NOREPLICAS` (fewer replicas than `min-replicas-to-write`) and `ERR max number of clients
//! reached`. Everything else Redis answers with is a refusal.
//!
//! Errors are shown (`Display`, `Debug`, and [`Error::Redis`] messages) without redis-rs' own
//! text for anything but server replies: errors about connections may echo a URL, and so a
//! password.

use redis::RedisError;
use std::fmt;
use std::time::Duration;

use crate::error::Error;

/// Why an L2 operation did not produce a result.
pub(crate) enum L2Error {
    /// Nothing was sent: the breaker is open, or (Sentinel) reads wait after the master moved.
    Skipped,
    /// No answer within the deadline (this one).
    Timeout(Duration),
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

    /// Sorts a redis-rs error; `timeout` is the deadline a timed-out operation had.
    pub(super) fn from_redis(e: RedisError, timeout: Duration) -> Self {
        if e.is_timeout() {
            return L2Error::Timeout(timeout);
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

impl fmt::Display for L2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            L2Error::Skipped => f.write_str("skipped: the circuit breaker is open"),
            L2Error::Timeout(d) => write!(f, "no answer within {d:?}"),
            L2Error::Unavailable(e) => write!(f, "unavailable: {}", redacted(e)),
            L2Error::Refused(r, e) => write!(f, "refused ({r:?}): {}", redacted(e)),
        }
    }
}

/// As `Display`: redacted.
impl fmt::Debug for L2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            L2Error::Skipped => f.write_str("Skipped"),
            L2Error::Timeout(d) => write!(f, "Timeout({d:?})"),
            L2Error::Unavailable(e) => write!(f, "Unavailable({})", redacted(e)),
            L2Error::Refused(r, e) => write!(f, "Refused({r:?}, {})", redacted(e)),
        }
    }
}

impl From<L2Error> for Error {
    fn from(e: L2Error) -> Self {
        match e {
            L2Error::Skipped => Error::CircuitOpen,
            L2Error::Timeout(d) => Error::Timeout(d),
            L2Error::Unavailable(e) | L2Error::Refused(_, e) => Error::Redis(redacted(&e)),
        }
    }
}

/// Whether `e` means Redis is unreachable or not serving now: I/O, refused or dropped connections,
/// and the replies of a server that is loading, read-only (a replica after failover), without a
/// master, busy with a script, refusing writes after a failed background save or for lack of
/// replicas, or full of clients, or of a cluster that is down.
pub(super) fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some(
                "LOADING"
                    | "READONLY"
                    | "MASTERDOWN"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "BUSY"
                    | "MISCONF"
                    | "NOREPLICAS"
            )
        )
        || (e.code() == Some("ERR")
            && e.detail()
                .is_some_and(|d| d.starts_with("max number of clients reached")))
}

/// Whether `e` is what retrying cannot fix at startup: a wrong password, an unknown user or a
/// password missing (`WRONGPASS`, `NOAUTH`, or redis-rs' authentication error kind), or an ACL
/// user without the permission to run a command (`NOPERM`).
pub(crate) fn is_auth(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
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

/// A redis-rs error's text without the parts that may echo a URL (redis-rs errors about
/// connections may): a server reply's code and message; for an I/O error its class; for anything
/// else its category and kind, with its message only for the kinds that never carry client
/// settings (parsing a reply, a reply of an unexpected type).
pub(crate) fn redacted(e: &RedisError) -> String {
    if let Some(code) = e.code() {
        return match e.detail() {
            Some(detail) => format!("{code} {detail}"),
            None => code.to_owned(),
        };
    }
    if e.is_io_error() {
        // redis-rs keeps the `io::Error` behind a trait object that `source()` does not let us
        // downcast: its public predicates give the class.
        let class = if e.is_connection_refusal() {
            " (connection refused)"
        } else if e.is_timeout() {
            " (timed out)"
        } else if e.is_connection_dropped() {
            " (connection dropped)"
        } else {
            ""
        };
        return format!("I/O error{class}");
    }
    match e.kind() {
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => e.to_string(),
        kind => format!("{} ({kind:?})", e.category()),
    }
}

/// A reply error as redis-rs makes it from the wire (for tests of error handling).
#[cfg(test)]
pub(super) fn reply_error(line: &str) -> RedisError {
    let wire = format!("-{line}\r\n");
    match redis::parse_redis_value(wire.as_bytes()) {
        Ok(redis::Value::ServerError(e)) => e.into(),
        other => panic!("not an error reply: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_a_server_not_serving_now_are_outages() {
        for line in [
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "BUSY Redis is busy running a script.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to \
             persist to disk. Commands that may modify the data set are disabled",
            "NOREPLICAS Not enough good replicas to write.",
            "ERR max number of clients reached",
        ] {
            let e = L2Error::from_redis(reply_error(line), Duration::from_millis(5));
            assert!(e.is_outage(), "{line}: {e:?}");
        }
    }

    #[test]
    fn other_replies_are_refusals() {
        for (line, refusal) in [
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                Refusal::OutOfMemory,
            ),
            (
                "NOPERM User cache has no permissions to run the 'set' command",
                Refusal::NoPermission,
            ),
            (
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                Refusal::WrongType,
            ),
            ("ERR syntax error", Refusal::Other),
            (
                "ERR value is not an integer or out of range",
                Refusal::Other,
            ),
            // Only the exact message is the client limit.
            (
                "ERR unknown command 'max number of clients reached'",
                Refusal::Other,
            ),
        ] {
            let e = L2Error::from_redis(reply_error(line), Duration::from_millis(5));
            assert_eq!(e.refusal(), Some(refusal), "{line}");
        }
    }

    #[test]
    fn a_timeout_carries_the_deadline_it_had() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let e = L2Error::from_redis(io.into(), Duration::from_millis(70));
        assert!(matches!(e, L2Error::Timeout(d) if d == Duration::from_millis(70)));
        let shown = Error::from(e).to_string();
        assert!(shown.contains("70ms"), "{shown}");
    }

    #[test]
    fn errors_are_shown_without_client_text() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connect to redis://u:s3cret@h:1 failed",
        );
        let e = L2Error::Unavailable(io.into());
        for shown in [format!("{e}"), format!("{e:?}"), Error::from(e).to_string()] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("connection refused"), "{shown}");
        }
        let config = RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "bad",
            "redis://u:s3cret@h:1".to_owned(),
        ));
        assert!(!redacted(&config).contains("s3cret"));
        let reply = L2Error::from_redis(reply_error("WRONGTYPE wrong kind"), Duration::ZERO);
        assert_eq!(
            reply.to_string(),
            "refused (WrongType): WRONGTYPE wrong kind"
        );
    }
}
