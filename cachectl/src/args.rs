//! Command-line arguments.

use clap::{ArgGroup, Args, Parser, Subcommand};

/// Admin tool for tiered-cache: read the instances' stats (also live, with `top`), list, inspect,
/// invalidate and clear entries, check the health of the Redis behind the cache, and find what to
/// change (`doctor`).
#[derive(Debug, Parser)]
#[command(name = "cachectl", version)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the cache lives and how to print.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Redis URL, `redis://[user:password@]host:port[/db]`.
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
    /// Comma-separated node URLs of a Redis Cluster (instead of --redis-url).
    #[arg(
        long,
        env = "REDIS_CLUSTER_URLS",
        global = true,
        value_delimiter = ',',
        hide_env_values = true,
        conflicts_with = "redis_url"
    )]
    pub(crate) cluster_nodes: Vec<String>,
    /// The application's key prefix.
    #[arg(long, env = "CACHE_PREFIX", global = true, default_value = cache_core::DEFAULT_PREFIX)]
    pub(crate) prefix: String,
    /// Print JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Deadline of each Redis command, in milliseconds.
    #[arg(long, global = true, default_value_t = 5000, value_name = "MS")]
    pub(crate) timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Stats published by every live instance, per instance and summed.
    Stats,
    /// List entry keys (SCAN, never KEYS; every master of a cluster). Without --tag, the
    /// tombstones of entries invalidated in the last minute are listed too (`get` shows them).
    Keys(KeysArgs),
    /// Decode one entry and print its value as JSON with its metadata.
    Get(GetArgs),
    /// Invalidate one entry or a tag, on every instance (as `Cache::invalidate` / `invalidate_tag`).
    Invalidate(InvalidateArgs),
    /// Delete every entry of a kind, or of the whole prefix (asks for confirmation).
    Clear(ClearArgs),
    /// Redis reachability, latency, memory and eviction policy; breaker states of the instances.
    Health,
    /// What to change: every instance's recommendations and Redis's memory settings, grouped and
    /// deduplicated, most severe first. Exit status 0 when nothing is above info, 3 when there
    /// are warnings or critical findings (to gate a deploy).
    Doctor,
    /// A live view of the instances and kinds over the last minute, redrawn every second (Ctrl-C
    /// ends it).
    Top(TopArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Print one frame and exit (no screen clearing).
    #[arg(long, conflicts_with = "iterations")]
    pub(crate) once: bool,
    /// Stop after this many frames.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) iterations: Option<u64>,
    /// Time between frames (`1s`, `500ms`, `2s`; at least 100ms).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) interval: std::time::Duration,
}

#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    /// Only entries of this kind.
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// Only entries carrying this tag (reads and decodes each entry).
    #[arg(long)]
    pub(crate) tag: Option<String>,
    /// Stop after this many keys.
    #[arg(long, default_value_t = 1000)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// `kind:key` (as passed to the library), or the full Redis key `{prefix}:v1:{kind}:{key}`.
    pub(crate) key: String,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["key", "tag"])))]
pub(crate) struct InvalidateArgs {
    /// The entry: `kind:key` or the full Redis key.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Every entry carrying this tag.
    #[arg(long)]
    pub(crate) tag: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["kind", "all"])))]
pub(crate) struct ClearArgs {
    /// Every entry of this kind.
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// Every entry under the prefix.
    #[arg(long)]
    pub(crate) all: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}
