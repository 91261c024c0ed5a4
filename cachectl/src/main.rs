//! `cachectl`: admin tool for tiered-cache.
//!
//! Works against the Redis behind the caches (`--redis-url` / `REDIS_URL`, or `--cluster-nodes` /
//! `REDIS_CLUSTER_URLS`) and their key prefix (`--prefix` / `CACHE_PREFIX`):
//!
//! | command | what it does |
//! |---|---|
//! | `stats` | the stats each live instance publishes, per instance and summed |
//! | `keys [--kind K] [--tag T] [--limit N]` | entry keys (SCAN on every master) |
//! | `get KIND:KEY` | one entry decoded: value as JSON, created, fresh until, tags, sizes, TTL |
//! | `invalidate --key KIND:KEY \| --tag T` | what `Cache::invalidate` / `invalidate_tag` do, on every instance |
//! | `clear --kind K \| --all [--yes]` | delete entries (asks for confirmation) |
//! | `health` | PING latency, memory, eviction policy, breaker states of the instances |
//! | `doctor` | what to change: the instances' recommendations and Redis's memory settings, grouped, most severe first |
//! | `top [--once \| --iterations N] [--interval 1s]` | live view: per instance and per kind over the last minute, redrawn every second |
//!
//! Text by default, `--json` for scripts (`top --json` prints one JSON object per line and
//! frame). `top` clears the screen between frames only when stdout is a terminal; Ctrl-C ends it
//! with status 0.
//!
//! | exit status | meaning |
//! |---|---|
//! | 0 | success (`doctor`: nothing above info) |
//! | 1 | error (the message on stderr never contains the Redis password) |
//! | 2 | usage error |
//! | 3 | `doctor` found warnings or critical findings (gate a deploy on it) |

mod admin;
mod args;
mod doctor;
mod entry;
mod error;
mod health;
mod output;
mod stats;
mod target;
mod top;

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

use args::{Cli, Command};
use error::{CliError, Result};
use target::Target;

/// What a command prints: text for people, JSON for scripts.
pub(crate) struct Report {
    pub(crate) human: String,
    pub(crate) json: serde_json::Value,
}

/// Runs the command: what it printed, or `None` when it printed by itself (`top`), and the exit
/// status it calls for.
async fn run(cli: &Cli) -> Result<(Option<Report>, u8)> {
    let g = &cli.global;
    if !entry::valid_name(&g.prefix) {
        return Err(CliError::Usage(format!(
            "prefix {:?} must be 1-64 ASCII letters, digits, '_', '-' or '.'",
            g.prefix
        )));
    }
    let t = Target::connect(g).await?;
    let report = match &cli.command {
        Command::Stats => stats::run(&t, &g.prefix).await,
        Command::Keys(a) => {
            entry::keys(&t, &g.prefix, a.kind.as_deref(), a.tag.as_deref(), a.limit).await
        }
        Command::Get(a) => entry::get(&t, &g.prefix, &a.key).await,
        Command::Invalidate(a) => {
            admin::invalidate(g, &t, a.key.as_deref(), a.tag.as_deref()).await
        }
        Command::Clear(a) => admin::clear(g, &t, a).await,
        Command::Health => health::run(&t, &g.prefix).await,
        Command::Doctor => {
            let (report, code) = doctor::run(&t, &g.prefix).await?;
            return Ok((Some(report), code));
        }
        Command::Top(a) => {
            top::run(&t, &g.prefix, a, g.json).await?;
            return Ok((None, 0));
        }
    }?;
    Ok((Some(report), 0))
}

fn print(report: &Report, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report.json)?;
        writeln!(out)?;
    } else {
        out.write_all(report.human.as_bytes())?;
    }
    out.flush()
}

/// Parses the command line. clap's errors quote the arguments they are about (`unexpected
/// argument 'redis://:pw@host' found` when a URL lands in the wrong place), so they are printed
/// with every argument and Redis variable that holds a URL redacted; help and version as usual.
fn parse_cli() -> Cli {
    let err = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    if !err.use_stderr() {
        err.exit();
    }
    let given = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .chain(
            ["REDIS_URL", "REDIS_CLUSTER_URLS"]
                .into_iter()
                .filter_map(|v| std::env::var(v).ok()),
        );
    eprint!("{}", redact_given(&err.render().to_string(), given));
    std::process::exit(err.exit_code());
}

/// `msg` with every string of `given` (arguments, variables) that holds a Redis URL, and every
/// part of one (the value of `--opt=VALUE`, the items of a comma-separated list), replaced by its
/// redaction; the longest first.
fn redact_given(msg: &str, given: impl IntoIterator<Item = String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for g in given {
        let value = g.split_once('=').map_or(g.as_str(), |(_, v)| v);
        let items: Vec<String> = g
            .split(',')
            .chain(value.split(','))
            .map(str::to_owned)
            .collect();
        parts.push(value.to_owned());
        parts.extend(items);
        parts.push(g);
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    parts.dedup();
    parts.into_iter().fold(msg.to_owned(), |m, p| {
        let redacted = cache_core::admin::redact_url(&p);
        if p.is_empty() || redacted == p {
            m
        } else {
            m.replace(&p, &redacted)
        }
    })
}

fn main() -> ExitCode {
    let cli = parse_cli();
    // Logs go to stderr; the library's own warnings are quiet unless RUST_LOG asks for them.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,cache_core=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cachectl: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = runtime.block_on(run(&cli));
    let printed = res.and_then(|(report, code)| {
        if let Some(r) = report {
            print(&r, cli.global.json)?;
        }
        Ok(code)
    });
    let code = match printed {
        Ok(code) => ExitCode::from(code),
        Err(CliError::Usage(msg)) => {
            eprintln!("cachectl: error: {msg}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("cachectl: error: {e}");
            ExitCode::FAILURE
        }
    };
    // Background tasks of an admin `Cache` end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

#[cfg(test)]
mod tests {
    use super::redact_given;

    #[test]
    fn quoted_arguments_holding_urls_are_redacted() {
        let msg = "error: unexpected argument 'redis://:s3cret@db:6379' found\n\n  tip: to pass \
                   'redis://:s3cret@db:6379' as a value, use '-- redis://:s3cret@db:6379'";
        let out = redact_given(
            msg,
            ["stats".to_owned(), "redis://:s3cret@db:6379".to_owned()],
        );
        assert!(!out.contains("s3cret"), "{out}");
        assert_eq!(out.matches("redis://:***@db:6379").count(), 3, "{out}");
        // `--opt=VALUE` and comma-separated pieces (a password holding a comma, split by clap).
        let out = redact_given(
            "'--redis-url=redis://:a,b@db' and 'b@db' and 'redis://:a'",
            ["--redis-url=redis://:a,b@db".to_owned()],
        );
        assert!(!out.contains(":a") && !out.contains("b@"), "{out}");
    }
}
