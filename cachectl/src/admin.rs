//! `cachectl invalidate` and `cachectl clear`: done through a `cache_core::Cache` built on the same
//! Redis and prefix, so they do exactly what the library does (tombstones, tag versions, the
//! backplane message that makes every instance drop its L1 copies).

use cache_core::{Cache, Stats};
use std::io::{BufRead, Write};
use std::time::Duration;

use crate::args::{ClearArgs, Global};
use crate::entry::{parse_entry, valid_name};
use crate::error::{CliError, Result};
use crate::target::Target;
use crate::Report;

/// A cache handle for admin operations: no stats reports of its own, the tool's deadline.
async fn admin_cache(g: &Global, t: &Target) -> Result<Cache> {
    let mut b = Cache::builder()
        .prefix(&g.prefix)
        .l2_timeout(t.timeout())
        .l2_connect_timeout(t.timeout())
        .stats_report_interval(Duration::ZERO);
    b = if t.is_cluster() {
        b.redis_cluster(t.urls().iter().cloned())
    } else {
        b.redis_url(t.urls().first().cloned().unwrap_or_default())
    };
    let cache = b
        .build()
        .await
        .map_err(|e| CliError::Cache(t.scrub(&e.to_string())))?;
    // The library degrades silently when Redis is down; an admin command must not.
    cache.ping_l2().await.map_err(|e| {
        CliError::Cache(t.scrub(&format!("Redis at {} is not usable: {e}", t.display)))
    })?;
    Ok(cache)
}

/// Commands refused by the ACL, or L2 failures and lost backplane messages since `before`: the
/// operation did not fully apply.
fn check_applied(before: &Stats, after: &Stats, what: &str) -> Result<()> {
    let failures = |s: &Stats| {
        s.total.l2.errors
            + s.total.l2.timeouts
            + s.total.l2.skipped
            + s.backplane.as_ref().map_or(0, |b| b.publish_failures)
    };
    if !after.l2_acl_refused.is_empty() {
        return Err(CliError::Cache(format!(
            "{what} was refused by Redis' ACL ({} refused for lack of a permission): `cachectl \
             invalidate` and `clear` need a user with the cache's rules \
             (cache_core::admin::acl_rules: ACL SETUSER <user> {})",
            after.l2_acl_refused.join(", "),
            cache_core::admin::acl_rules(&after.prefix)
        )));
    }
    if failures(after) > failures(before) {
        return Err(CliError::Cache(format!(
            "{what} did not fully reach Redis (an L2 write or the backplane message failed); \
             run it again"
        )));
    }
    Ok(())
}

/// Runs `cachectl invalidate --key K | --tag T`.
pub(crate) async fn invalidate(
    g: &Global,
    t: &Target,
    key: Option<&str>,
    tag: Option<&str>,
) -> Result<Report> {
    let cache = admin_cache(g, t).await?;
    let before = cache.stats();
    let (what, json) = match (key, tag) {
        (Some(k), None) => {
            let e = parse_entry(&g.prefix, k)?;
            // By the full key: an entry whose key part was hashed (`#...`, as `keys` lists it)
            // cannot be named by kind and key.
            if !cache.invalidate_entry_key(&e.full).await {
                return Err(CliError::Usage(format!(
                    "{k:?} is not a key the cache builds under prefix {:?}",
                    g.prefix
                )));
            }
            (
                format!("invalidated {} on every instance", e.full),
                serde_json::json!({ "invalidated": { "key": e.full, "kind": e.kind } }),
            )
        }
        (None, Some(tag)) if !tag.is_empty() => {
            cache.invalidate_tag(tag).await;
            (
                format!("invalidated every entry tagged {tag:?} on every instance"),
                serde_json::json!({ "invalidated": { "tag": tag } }),
            )
        }
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --key KIND:KEY or --tag TAG".into(),
            ))
        }
    };
    check_applied(&before, &cache.stats(), "the invalidation")?;
    Ok(Report {
        human: format!("{what}\n"),
        json,
    })
}

/// Asks `question` on `prompt` and reads the answer from `input`: only `y` or `yes` confirm.
fn confirm(question: &str, input: &mut impl BufRead, err: &mut impl Write) -> Result<bool> {
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut line = String::new();
    let n = input.read_line(&mut line)?;
    if n == 0 {
        writeln!(err)?;
    }
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Runs `cachectl clear --kind K | --all`.
pub(crate) async fn clear(g: &Global, t: &Target, a: &ClearArgs) -> Result<Report> {
    let (scope, json_scope) = match (&a.kind, a.all) {
        (Some(k), false) if valid_name(k) => (
            format!("every entry of kind {k:?}"),
            serde_json::json!({ "kind": k }),
        ),
        (Some(k), false) => {
            return Err(CliError::Usage(format!(
                "kind {k:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'"
            )))
        }
        (None, true) => ("every entry".to_owned(), serde_json::json!({ "all": true })),
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --kind KIND or --all".into(),
            ))
        }
    };
    let question = format!(
        "Delete {scope} under prefix {:?} on {}, on every instance?",
        g.prefix, t.display
    );
    if !a.yes
        && !confirm(
            &question,
            &mut std::io::stdin().lock(),
            &mut std::io::stderr(),
        )?
    {
        return Err(CliError::Aborted);
    }
    let cache = admin_cache(g, t).await?;
    let before = cache.stats();
    let removed = match &a.kind {
        Some(k) => cache.clear_kind(k.as_str()).await,
        None => cache.clear_all().await,
    }
    .map_err(|e| CliError::Cache(format!("clearing failed part-way: {e}")))?;
    check_applied(&before, &cache.stats(), "the clear")?;
    let mut json = serde_json::json!({ "cleared": json_scope, "removed_keys": removed });
    if let Some(obj) = json.as_object_mut() {
        obj.insert("prefix".into(), g.prefix.clone().into());
    }
    Ok(Report {
        human: format!(
            "removed {removed} key(s): {scope} under prefix {:?}\n",
            g.prefix
        ),
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        for (answer, ok) in [
            ("y\n", true),
            ("YES\n", true),
            ("n\n", false),
            ("", false),
            ("yep\n", false),
        ] {
            let mut prompt = Vec::new();
            assert_eq!(
                confirm("Sure?", &mut answer.as_bytes(), &mut prompt).unwrap(),
                ok,
                "{answer:?}"
            );
            assert!(prompt.starts_with(b"Sure? [y/N] "));
        }
    }
}
