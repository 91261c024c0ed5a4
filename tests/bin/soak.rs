//! The long chaos soak, as a command:
//!
//! ```text
//! cargo run --release -p cache-tests --bin soak -- --seed 42 --secs 600 [--instances 3] [--keys 64]
//!     [--tags 8] [--tasks 4] [--bulk-keys 50000] [--think-ms 1-4] [--details 20]
//! ```
//!
//! Starts its own `redis-server`, runs the workload and the seeded fault plan for `--secs`, prints
//! the report and exits 1 when the checker found a violation (or a fault could not be injected),
//! 0 otherwise. The fault plan and each worker's calls replay from the seed; thread interleavings
//! and timings do not (see `cache_tests::chaos`).

use cache_tests::chaos::{self, SoakConfig};
use clap::Parser;
use std::time::Duration;

/// Chaos soak of tiered-cache with a history checker.
#[derive(Parser, Debug)]
#[command(name = "soak")]
struct Args {
    /// Seed of the fault plan and of every worker's calls.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Wall time of the workload in seconds (warm-up, faults, and a final quiet period).
    #[arg(long, default_value_t = 600)]
    secs: u64,
    /// Cache instances (the first direct, the others through their own fault proxy).
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Keys in the key space.
    #[arg(long, default_value_t = 64)]
    keys: u32,
    /// Tags (key k carries tag g{k % tags}).
    #[arg(long, default_value_t = 8)]
    tags: u32,
    /// Read-only keys preloaded into every L1 (makes the L1 flushes of resubscriptions as costly
    /// as in production; 0: none).
    #[arg(long, default_value_t = 50_000)]
    bulk_keys: u32,
    /// A worker's pause between two calls, in ms, uniform in `MIN-MAX`.
    #[arg(long, default_value = "1-4", value_parser = parse_range)]
    think_ms: (u64, u64),
    /// Worker tasks per instance.
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Violations shown in detail (each class gets a share).
    #[arg(long, default_value_t = 20)]
    details: usize,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not MIN-MAX"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a number"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a number"))?;
    if a > b {
        return Err(format!("{a} > {b}"));
    }
    Ok((a, b))
}

fn main() {
    let args = Args::parse();
    chaos::init_tracing();
    if args.instances == 0 || args.keys == 0 || args.tags == 0 || args.tags > args.keys {
        eprintln!("soak: need --instances >= 1 and 1 <= --tags <= --keys");
        std::process::exit(2);
    }
    let mut cfg = SoakConfig::new(args.seed, Duration::from_secs(args.secs));
    cfg.instances = args.instances;
    cfg.keys = args.keys;
    cfg.tags = args.tags;
    cfg.tasks_per_instance = args.tasks.max(1);
    cfg.bulk_keys = args.bulk_keys;
    cfg.think = (
        Duration::from_millis(args.think_ms.0),
        Duration::from_millis(args.think_ms.1),
    );
    if cfg.duration < cfg.warmup + cfg.quiet {
        eprintln!(
            "soak: --secs must be at least {} (warm-up and final quiet period)",
            (cfg.warmup + cfg.quiet).as_secs()
        );
        std::process::exit(2);
    }
    eprintln!(
        "soak: seed {}, {} s, {} instances, {} keys: running...",
        cfg.seed, args.secs, cfg.instances, cfg.keys
    );
    let mut outcome = chaos::run(&cfg);
    outcome.report.detailed = args.details;
    println!("{}", outcome.report);
    std::process::exit(if outcome.passed() { 0 } else { 1 });
}
