//! Redis users with exactly the ACL rules the library documents
//! (`cache_core::admin::acl_rules`, `cachectl_acl_rules`), and what Redis refused them (its
//! `ACL LOG`): the tests that run as such users check afterwards that nothing was refused, so a
//! command added to the library without adding it to the rules fails them.

use crate::RedisServer;

/// The password of the users made here.
pub const PASSWORD: &str = "acl-Pa55word";

/// The user name the contract suite gives the cache of `prefix` (one user per prefix, so that
/// each user's keys are its prefix's only).
pub fn cache_user(prefix: &str) -> String {
    format!("cache-{prefix}")
}

/// `url` (`redis://host:port...`) with `user:`[`PASSWORD`]`@` added.
pub fn url_as(url: &str, user: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{user}:{PASSWORD}@{rest}"),
        None => panic!("not a URL: {url}"),
    }
}

/// The `ACL SETUSER` arguments that make `user` (password [`PASSWORD`]) have exactly `rules`
/// (`reset` first: nothing from an earlier definition stays).
pub fn setuser_args(user: &str, rules: &str) -> Vec<String> {
    let mut args = vec![user.to_owned(), "reset".into(), "on".into()];
    args.push(format!(">{PASSWORD}"));
    args.extend(rules.split_whitespace().map(str::to_owned));
    args
}

/// Creates (or redefines) `user` with exactly `rules` on `server`, through `admin_url` (a URL of
/// a user allowed to run `ACL SETUSER`; `server.url()` on a server whose default user is on).
pub async fn set_user(server: &RedisServer, admin_url: &str, user: &str, rules: &str) {
    let mut c = connect(admin_url).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(setuser_args(user, rules))
        .query_async(&mut c)
        .await
        .unwrap_or_else(|e| panic!("ACL SETUSER {user} {rules} on {}: {e}", server.port()));
}

/// What Redis refused since the last call, as `user: reason object (context)` lines (`ACL LOG`,
/// then `ACL LOG RESET`), read through `admin_url`. Failed logins (reason `auth`) are left out:
/// tests make them on purpose.
pub async fn refusals(admin_url: &str) -> Vec<String> {
    let mut c = connect(admin_url).await;
    let log: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .arg(1000)
        .query_async(&mut c)
        .await
        .expect("ACL LOG");
    let _: () = redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query_async(&mut c)
        .await
        .expect("ACL LOG RESET");
    log.iter()
        .map(entry)
        .filter(|e| !e.contains(": auth "))
        .collect()
}

/// One `ACL LOG` entry as `user: reason object (context, count N)`.
fn entry(v: &redis::Value) -> String {
    let fields: Vec<(String, String)> = match v {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((text(k), text(v))),
                _ => None,
            })
            .collect(),
        redis::Value::Map(items) => items.iter().map(|(k, v)| (text(k), text(v))).collect(),
        other => return format!("{other:?}"),
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("?", |(_, v)| v.as_str())
            .to_owned()
    };
    format!(
        "{}: {} {} ({}, count {})",
        get("username"),
        get("reason"),
        get("object"),
        get("context"),
        get("count")
    )
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Double(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect to the test redis-server as its admin: {e}"))
}
