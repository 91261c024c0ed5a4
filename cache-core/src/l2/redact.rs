//! Redaction of Redis URLs (and lists of them) for error messages, logs and `Debug` output.
//!
//! Hand-written rather than built on the `url` crate: a URL that a parser rejects or reads in an
//! unintended way (an unencoded `/`, `?` or `#` in a password, a missing scheme, a password split
//! across a comma-separated node list) is exactly the one that ends up in an error message, so the
//! redaction has to reason about every way the text *could* be read, not about the one way a
//! parser reads it.
//!
//! The rules, each chosen so that a doubt costs visibility (a masked host), never a password:
//! - **Userinfo** is everything before the **last** `@` of a node (redis-rs, through the `url`
//!   crate, stops the authority at the first `/`, `?` or `#`, but a user who wrote
//!   `redis://:ab/cd@host` meant `ab/cd` as the password). The username (before the first `:`)
//!   is kept when it is made of plain characters; the password becomes `***` (an empty one stays
//!   empty); a userinfo without `:` (a bare token, or a user) becomes `***`. Under a scheme
//!   that is not a Redis one the whole userinfo becomes `***` (`user://x:y@h` may be `user:` and
//!   the password `//x:y`).
//! - When that userinfo holds a `?`, the `@` may as well lie in a query (a `pass=` value with an
//!   `@`), so everything after it is masked too. (A `#` needs no such care: no fragment but
//!   `#insecure` means anything to redis-rs, so no reading puts a credential after a `#`.)
//! - **Host** and **port** are kept when they look like a host name, an IPv4 or a bracketed IPv6
//!   address, and a port number; anything else there (the tail of a password without `@`, say
//!   `redis://:secret`) is masked.
//! - **Path**: the database number (`/0`) of TCP URLs is kept, anything else is masked; the socket
//!   path of `unix://` / `redis+unix://` / `valkey+unix://` URLs is kept when it is made of plain
//!   characters (no `:`, `@`, `,`...); the master name (plain characters) and database number of
//!   `redis+sentinel://` / `rediss+sentinel://` URLs are kept.
//! - **Sentinel hosts**: a `redis+sentinel://` URL names its sentinels in one authority,
//!   comma-separated; each is kept or masked as a host and port, and from the first malformed one
//!   on the rest is masked.
//! - **Query**: `db`, `protocol` and `user` (with a plain value) are kept, and on Sentinel URLs
//!   `sentinel_username`; from the first other parameter on (redis-rs reads `pass` on Unix-socket
//!   URLs, Sentinel URLs carry `sentinel_password`; others may carry credentials, and an `&`
//!   inside a value makes the rest look like more parameters) the query is masked to the end of
//!   the node.
//! - **Fragment**: `#insecure` is kept, any other fragment is masked.
//! - From the first malformed part on (a host that is not one, a port that is not a number...),
//!   the rest of the node is masked: it may be a password that lost its `@` (`redis://:ab?db=12`).
//! - **Lists**: a comma starts a new node only when a Redis scheme (`redis://`, `rediss://`,
//!   `valkey://`, ...) follows it, and only when the text before it is a well-formed node; so a
//!   password holding a comma stays inside its node. A string with no scheme is one node.
//!
//! Residual risks, accepted because the text *is* a well-formed URL that reads otherwise:
//! - a password that itself contains `,redis://` (or another Redis scheme) right after a part
//!   that reads as a well-formed node is split there;
//! - in a URL with no host (`redis://:p@ss`), what follows an `@` inside the password reads as
//!   the host, and is shown as one;
//! - `redis:` followed by a password starting with `//` (`redis://x:y@h`) reads as a scheme.

/// What replaces a secret.
const MASK: &str = "***";

/// Schemes redis-rs accepts, and the crate's Sentinel ones (compared case-insensitively, as URL
/// schemes are).
const SCHEMES: [&str; 9] = [
    "redis",
    "rediss",
    "valkey",
    "valkeys",
    "redis+unix",
    "valkey+unix",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
];

/// The schemes whose path is a socket path and whose credentials are query parameters.
const UNIX_SCHEMES: [&str; 3] = ["unix", "redis+unix", "valkey+unix"];

/// The schemes of a Sentinel deployment: sentinel hosts, `/master-name[/db]`.
const SENTINEL_SCHEMES: [&str; 2] = ["redis+sentinel", "rediss+sentinel"];

/// How the part after the scheme reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `host:port/db`.
    Tcp,
    /// A socket path.
    Unix,
    /// `host:port,host:port/master-name/db`.
    Sentinel,
}

/// `url` (one Redis URL, or a comma-separated list of them) with every password and every part
/// that might hold one replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut node_start = 0;
    let mut first = true;
    for cut in scheme_commas(url).chain(std::iter::once(url.len())) {
        let node = &url[node_start..cut];
        let mut scratch = String::with_capacity(node.len());
        // A malformed node may be the head of a password that goes on past the comma: keep it
        // together with what follows.
        if !redact_node(node, &mut scratch) && cut < url.len() {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&scratch);
        node_start = cut + 1;
    }
    out
}

/// Byte offsets of the commas that are followed (after optional whitespace) by a Redis scheme and
/// `://`.
fn scheme_commas(s: &str) -> impl Iterator<Item = usize> + '_ {
    s.match_indices(',')
        .map(|(i, _)| i)
        .filter(move |&i| starts_with_redis_scheme(&s[i + 1..]))
}

fn starts_with_redis_scheme(s: &str) -> bool {
    let s = s.trim_start();
    s.find("://")
        .is_some_and(|p| SCHEMES.iter().any(|k| k.eq_ignore_ascii_case(&s[..p])))
}

/// A URL scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Writes the redacted `node` to `out`; false when the node is malformed (something was masked
/// that is not a credential's place).
fn redact_node(node: &str, out: &mut String) -> bool {
    let core = node.trim();
    let lead = &node[..node.len() - node.trim_start().len()];
    let trail = &node[lead.len() + core.len()..];
    out.push_str(lead);
    // `known`: a Redis scheme, or none. Text that only looks like a scheme (`user://...` is
    // also `user:` and a password starting with `//`) shows no username.
    let (rest, form, known) = match core.find("://") {
        Some(p) if is_scheme(&core[..p]) => {
            out.push_str(&core[..p + 3]);
            let scheme = &core[..p];
            let is = |list: &[&str]| list.iter().any(|k| k.eq_ignore_ascii_case(scheme));
            let form = if is(&UNIX_SCHEMES) {
                Form::Unix
            } else if is(&SENTINEL_SCHEMES) {
                Form::Sentinel
            } else {
                Form::Tcp
            };
            (&core[p + 3..], form, is(&SCHEMES))
        }
        _ => (core, Form::Tcp, true),
    };
    let clean = if form == Form::Unix && rest.starts_with('/') {
        // `unix:///path/to.sock?pass=...`: no authority, so an `@` can only be in the path or
        // the query (where the parameters are handled).
        location(rest, form, out)
    } else if let Some(at) = rest.rfind('@') {
        let userinfo = &rest[..at];
        let user_clean = if known {
            redact_userinfo(userinfo, out)
        } else {
            if !userinfo.is_empty() {
                out.push_str(MASK);
            }
            true
        };
        out.push('@');
        let tail = &rest[at + 1..];
        if userinfo.contains('?') {
            // The `@` may lie inside a query: what follows may be the tail of a `pass=` value.
            if !tail.is_empty() {
                out.push_str(MASK);
            }
            false
        } else {
            location(tail, form, out) && user_clean
        }
    } else {
        location(rest, form, out)
    };
    out.push_str(trail);
    clean
}

/// `user:password` → `user:***`; a user alone → `***`. False when the username was masked for
/// its characters.
fn redact_userinfo(userinfo: &str, out: &mut String) -> bool {
    match userinfo.split_once(':') {
        None if userinfo.is_empty() => true,
        // A bare token, or a user: either way, possibly a credential.
        None => {
            out.push_str(MASK);
            true
        }
        Some((user, password)) if user.is_empty() || plain(user) => {
            out.push_str(user);
            out.push(':');
            if !password.is_empty() {
                out.push_str(MASK);
            }
            true
        }
        Some(_) => {
            out.push_str(MASK);
            false
        }
    }
}

/// A username or parameter value safe to show: unreserved URL characters and `%` escapes, no
/// delimiter that could mean a credential was cut in the wrong place.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%' | '+'))
}

/// Host, port, path, query and fragment: writes what can be shown, masks the rest. From the first
/// malformed part on, everything is masked (it may be a password that lost its `@`:
/// `redis://:ab?db=12`), and the result is false.
fn location(s: &str, form: Form, out: &mut String) -> bool {
    let hp_end = s.find(['/', '?', '#']).unwrap_or(s.len());
    let hosts = &s[..hp_end];
    if form == Form::Sentinel {
        for (i, hp) in hosts.split(',').enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Every sentinel needs a host (and a port after a `:`): an empty one is where a
            // password that lost its `@` begins (`redis+sentinel://:,secret,h/m`).
            if hp.is_empty() || hp.starts_with(':') || hp.ends_with(':') {
                return mask(out);
            }
            if !host_port(hp, out) {
                return false;
            }
        }
    } else if !host_port(hosts, out) {
        return false;
    }
    let mut rest = &s[hp_end..];
    if rest.starts_with('/') {
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        let path = &rest[..end];
        let shown = match form {
            // A socket path. One with `:`, `@`, `,`... could hold a misplaced `user:password@`,
            // or the head of a password that goes on past a comma: masked below.
            Form::Unix => path.split('/').all(|seg| seg.is_empty() || plain(seg)),
            Form::Tcp => path == "/" || is_db(&path[1..]),
            // `/master-name[/db]`.
            Form::Sentinel => {
                let mut segs = path[1..].split('/');
                plain(segs.next().unwrap_or(""))
                    && segs.next().is_none_or(is_db)
                    && segs.next().is_none()
            }
        };
        if shown {
            out.push_str(path);
        } else {
            out.push('/');
            out.push_str(MASK);
            return false;
        }
        rest = &rest[end..];
    }
    if let Some(q) = rest.strip_prefix('?') {
        let end = q.find('#').unwrap_or(q.len());
        out.push('?');
        match query(&q[..end], form == Form::Sentinel, out) {
            Query::Shown => rest = &q[end..],
            // Masked to the end of the node (a value may hold `#`).
            Query::Credential => return true,
            Query::Unknown => return false,
        }
    }
    match rest.strip_prefix('#') {
        None => true,
        Some("insecure") => {
            out.push_str(rest);
            true
        }
        Some(_) => {
            out.push('#');
            out.push_str(MASK);
            false
        }
    }
}

/// How a query string was written.
enum Query {
    /// Every parameter is shown.
    Shown,
    /// Masked from a `pass` / `password` parameter on.
    Credential,
    /// Masked from an unknown or malformed parameter on.
    Unknown,
}

/// The query `q` (of a Sentinel URL: `sentinel`).
fn query(q: &str, sentinel: bool, out: &mut String) -> Query {
    for (i, param) in q.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let shown = match param.split_once('=') {
            Some(("db", v)) => is_db(v),
            Some(("protocol", v)) => !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric()),
            Some(("user", v)) => plain(v),
            Some(("sentinel_username", v)) => sentinel && plain(v),
            _ => false,
        };
        if shown {
            out.push_str(param);
            continue;
        }
        out.push_str(MASK);
        return match param.split_once('=') {
            Some(("pass" | "password" | "sentinel_password", _)) => Query::Credential,
            _ => Query::Unknown,
        };
    }
    Query::Shown
}

/// A database number.
fn is_db(s: &str) -> bool {
    !s.is_empty() && s.len() <= 19 && s.chars().all(|c| c.is_ascii_digit())
}

/// `host`, `host:port`, `[v6]:port` or `:port`: kept when it reads as such, else (partly) masked.
/// False when something was masked.
fn host_port(hp: &str, out: &mut String) -> bool {
    let (host, port) = if hp.starts_with('[') {
        match hp.find(']') {
            Some(close) if ipv6_literal(&hp[1..close]) => match &hp[close + 1..] {
                "" => (&hp[..=close], None),
                after => match after.strip_prefix(':') {
                    Some(port) => (&hp[..=close], Some(port)),
                    None => return mask(out),
                },
            },
            _ => return mask(out),
        }
    } else {
        match hp.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hp, None),
        }
    };
    if !host.starts_with('[') && !host.chars().all(host_char) {
        return mask(out);
    }
    out.push_str(host);
    match port {
        None => true,
        Some(p) => {
            out.push(':');
            if p.is_empty() || (p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit())) {
                out.push_str(p);
                true
            } else {
                out.push_str(MASK);
                false
            }
        }
    }
}

fn mask(out: &mut String) -> bool {
    out.push_str(MASK);
    false
}

fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
}

fn ipv6_literal(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '%'))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[track_caller]
    fn check(url: &str, expected: &str) {
        assert_eq!(redact_url(url), expected, "redact_url({url:?})");
    }

    #[test]
    fn well_formed_urls_keep_everything_but_the_password() {
        check(
            "redis://user:s3cret@host:6379/0",
            "redis://user:***@host:6379/0",
        );
        check("rediss://:s3cret@host", "rediss://:***@host");
        check(
            "rediss://:s3cret@host:6380/#insecure",
            "rediss://:***@host:6380/#insecure",
        );
        check("redis://host:6379", "redis://host:6379");
        check(
            "redis://127.0.0.1:6379/3?protocol=resp3",
            "redis://127.0.0.1:6379/3?protocol=resp3",
        );
        check("redis://u:pw@[::1]:6379", "redis://u:***@[::1]:6379");
        check(
            "valkeys://app-1:pw@cache.internal",
            "valkeys://app-1:***@cache.internal",
        );
        check("", "");
    }

    #[test]
    fn passwords_with_url_delimiters_are_redacted_whole() {
        // The case: redis-rs stops the authority at the first `/`.
        check("redis://:ab/cd@host:6379", "redis://:***@host:6379");
        check(
            "redis://user:ab/cd+ef==@host:6379/1",
            "redis://user:***@host:6379/1",
        );
        check("redis://u:p@ss@host", "redis://u:***@host");
        check("redis://u:a:b:c@host", "redis://u:***@host");
        check("redis://u:p%40ss%2F@host", "redis://u:***@host");
        check("redis://u:a#b@host", "redis://u:***@host");
        // `?` in a password: the `@` might be in a query, so the rest is masked.
        check("redis://u:a?b@host:6379", "redis://u:***@***");
        check("redis://:a,b@host", "redis://:***@host");
    }

    #[test]
    fn users_alone_and_empty_passwords() {
        check("redis://tok@host", "redis://***@host");
        check("redis://user:@host", "redis://user:@host");
        check("redis://:@host", "redis://:@host");
        check("redis://@host", "redis://@host");
    }

    #[test]
    fn unix_socket_urls_mask_credentials_in_the_query() {
        check(
            "redis+unix:///run/redis.sock?db=2&user=app&pass=s3&cr=et",
            "redis+unix:///run/redis.sock?db=2&user=app&***",
        );
        check("unix:///tmp/r.sock?pass=a@b#c", "unix:///tmp/r.sock?***");
        check(
            "valkey+unix:///tmp/r.sock?password=x&db=1",
            "valkey+unix:///tmp/r.sock?***",
        );
        check("unix:///tmp/r.sock?db=1", "unix:///tmp/r.sock?db=1");
        check("unix://:pw@/tmp/r.sock", "unix://:***@/tmp/r.sock");
        check("unix:///tmp/a:pw@b.sock", "unix:///***");
        // A node with no scheme after a comma belongs to the node before it.
        check("unix:///0.sock,redis//:pw#@a", "unix:///***");
        // A password query parameter on a TCP URL is masked too.
        check("redis://host/0?pass=p@ss", "redis://***@***");
        check("redis://host/0?pass=pw", "redis://host/0?***");
    }

    #[test]
    fn sentinel_urls_keep_hosts_master_and_users_but_no_password() {
        check(
            "redis+sentinel://app:s3cret@10.0.0.1:26379,s-2,[::1]:5000/mymaster/2",
            "redis+sentinel://app:***@10.0.0.1:26379,s-2,[::1]:5000/mymaster/2",
        );
        check(
            "rediss+sentinel://:pw@h1,h2/m?sentinel_username=sen&sentinel_password=s&x=y",
            "rediss+sentinel://:***@h1,h2/m?sentinel_username=sen&***",
        );
        check(
            "redis+sentinel://h1/m?sentinel_password=a@b&c",
            "redis+sentinel://***@***",
        );
        check("redis+sentinel://h1,h2/m", "redis+sentinel://h1,h2/m");
        // A password that lost its `@`: masked from where it starts.
        check("redis+sentinel://:secret,h2/m", "redis+sentinel://***");
        check("redis+sentinel://h1,:secret/m", "redis+sentinel://h1,***");
        check("redis+sentinel://:,secret,h/m", "redis+sentinel://***");
        check("redis+sentinel://:/secret#,h/m", "redis+sentinel://***");
        check("redis+sentinel://h1,,h2/m", "redis+sentinel://h1,***");
        check(
            "redis+sentinel://:a,b@h1,h2/m",
            "redis+sentinel://:***@h1,h2/m",
        );
        // A path that is not `/name[/db]`.
        check("redis+sentinel://h/m/x", "redis+sentinel://h/***");
        check("redis+sentinel://h/m:pw", "redis+sentinel://h/***");
        // After a comma, a Sentinel URL starts a new node.
        check(
            "redis://:a@h,redis+sentinel://:b@s/m",
            "redis://:***@h,redis+sentinel://:***@s/m",
        );
    }

    #[test]
    fn node_lists_are_redacted_node_by_node() {
        check(
            "redis://:a@h1:7000,redis://u:b@h2:7001, rediss://h3",
            "redis://:***@h1:7000,redis://u:***@h2:7001, rediss://h3",
        );
        // A comma inside a password does not start a node.
        check(
            "redis://:a,b@h1,redis://:c,d@h2",
            "redis://:***@h1,redis://:***@h2",
        );
        // Nor does a scheme after a comma inside a password, when the head is malformed.
        check("redis://:a,redis://b@h1", "redis://:***@h1");
    }

    #[test]
    fn urls_without_a_scheme_or_malformed_are_redacted() {
        check("user:pw@host:6379", "user:***@host:6379");
        check(":pw@host", ":***@host");
        check("redis//:pw@host", "***@host");
        check("user://pw:x@host", "user://***@host");
        check("http://u:pw@host", "http://***@host");
        check("redis:/:pw@host", "redis:***@host");
        check("redis://:pw@", "redis://:***@");
        check("redis://:pw@/0", "redis://:***@/0");
        check("redis://:secret", "redis://:***");
        check("redis://user:secret", "redis://user:***");
        check("redis://:ab/cd", "redis://:***");
        check("redis://:ab?cd", "redis://:***");
        check("redis://:ab#cd", "redis://:***");
        // After a malformed part nothing is trusted: `db=12` may be the password's tail.
        check("redis://:ab?db=12", "redis://:***");
        check(
            "redis://:pw@host:63x79/0?protocol=resp3",
            "redis://:***@host:***",
        );
        check(
            "redis://:pw@host:6379/0 trailing",
            "redis://:***@host:6379/***",
        );
        check("redis://:pw@host:63x79", "redis://:***@host:***");
        check("redis://:pw@ho$t", "redis://:***@***");
        check("  redis://:pw@host  ", "  redis://:***@host  ");
    }
}
