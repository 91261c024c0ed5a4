//! The tool's errors: each message says what failed and never contains a Redis password.

use std::time::Duration;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Neither `--redis-url` nor `--cluster-nodes` (nor their variables) was given.
    #[error("no Redis given: pass --redis-url (or set REDIS_URL), or --cluster-nodes (or set REDIS_CLUSTER_URLS)")]
    NoRedis,
    /// An argument is malformed.
    #[error("{0}")]
    Usage(String),
    /// The connection could not be made.
    #[error("cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    /// Redis answered an error, or the connection broke.
    #[error("{what} failed on {target}: {detail}")]
    Redis {
        what: String,
        target: String,
        detail: String,
    },
    /// Redis did not answer in time.
    #[error("{what} on {target}: no answer within {after:?}")]
    Timeout {
        what: String,
        target: String,
        after: Duration,
    },
    /// No entry under the key.
    #[error("no entry under {0}")]
    NotFound(String),
    /// The bytes under the key are not a cache entry (or are corrupted).
    #[error("{key} does not hold a readable cache entry: {reason}")]
    Undecodable { key: String, reason: String },
    /// The library refused or failed the operation.
    #[error("{0}")]
    Cache(String),
    /// The operator did not confirm.
    #[error("aborted: nothing was deleted")]
    Aborted,
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

/// Removes `secrets` (the URLs in use, their passwords) from a message, whatever produced it;
/// the longest first, so that a URL goes whole rather than around a password inside it.
pub(crate) fn scrub(msg: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .into_iter()
        .fold(msg.to_owned(), |m, s| m.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_every_secret_and_ignores_empty_ones() {
        let secrets = vec!["s3cret".to_owned(), String::new()];
        assert_eq!(
            scrub("auth s3cret failed (s3cret)", &secrets),
            "auth *** failed (***)"
        );
    }

    #[test]
    fn scrub_removes_a_whole_url_before_the_password_inside_it() {
        let secrets = vec!["s3cret".to_owned(), "redis://:s3cret@h".to_owned()];
        assert_eq!(scrub("at redis://:s3cret@h: no", &secrets), "at ***: no");
    }
}
