//! Samplers: each instance's health (breaker, pending invalidations, backplane) and the process's
//! memory and tasks, plus stall probes that tell a blocked runtime from a busy machine.

use cache_core::{BreakerState, Cache};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::checker::{FaultWindow, GrowthSample, HealthSample, InstanceHealth};
use super::history::Clock;

/// How often health is sampled.
pub const HEALTH_EVERY: Duration = Duration::from_millis(250);
/// How often memory and tasks are sampled.
pub const GROWTH_EVERY: Duration = Duration::from_secs(1);
/// Period of the stall probes.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// Lateness of a probe's wake-up worth recording.
pub const STALL_MIN: Duration = Duration::from_millis(50);

/// A probe that woke up late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The instance whose runtime was late; `None`: a plain OS thread (the whole machine).
    pub instance: Option<u16>,
    /// When it woke up (ns since the run began).
    pub t_ns: u64,
    /// How late.
    pub late: Duration,
}

impl Stall {
    /// The time it could not run, as a window for the checker.
    pub fn window(&self) -> FaultWindow {
        FaultWindow {
            label: match self.instance {
                None => "machine stall".into(),
                Some(i) => format!("runtime i{i} stall"),
            },
            start_ns: self.t_ns.saturating_sub(self.late.as_nanos() as u64),
            end_ns: self.t_ns,
            instance: self.instance,
            added_rtt: Duration::ZERO,
        }
    }
}

/// The process's resident set size, from `/proc/self/status` (`VmRSS`, in KiB: no page size
/// needed, unlike `/proc/self/statm`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One instance's health now.
pub fn health_of(cache: &Cache) -> InstanceHealth {
    let s = cache.stats();
    InstanceHealth {
        breaker_closed: s
            .breaker
            .as_ref()
            .is_none_or(|b| b.state == BreakerState::Closed),
        pending: s.pending_invalidations.pending + s.backplane.as_ref().map_or(0, |b| b.unsent),
        subscribed: s.backplane.as_ref().is_none_or(|b| b.subscribed),
    }
}

/// What the sampler collected.
#[derive(Debug, Default)]
pub struct Samples {
    /// Health, every [`HEALTH_EVERY`].
    pub health: Vec<HealthSample>,
    /// Memory and tasks, every [`GROWTH_EVERY`].
    pub growth: Vec<GrowthSample>,
}

/// Samples until `stop` on its own OS thread (a stuck instance runtime cannot delay it).
pub fn spawn_sampler(
    caches: Vec<Cache>,
    runtimes: Vec<tokio::runtime::Handle>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    history_bytes: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Samples> {
    std::thread::Builder::new()
        .name("soak-sampler".into())
        .spawn(move || {
            let mut out = Samples::default();
            let mut next_growth = Instant::now();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t_ns = clock.now_ns();
                out.health.push(HealthSample {
                    t_ns,
                    instances: caches.iter().map(health_of).collect(),
                });
                if Instant::now() >= next_growth {
                    next_growth += GROWTH_EVERY;
                    let history = history_bytes.load(Ordering::Relaxed);
                    out.growth.push(GrowthSample {
                        t_ns,
                        rss_bytes: rss_bytes().unwrap_or(0).saturating_sub(history),
                        tasks: runtimes
                            .iter()
                            .map(|h| h.metrics().num_alive_tasks() as u64)
                            .collect(),
                    });
                }
                next += HEALTH_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            out
        })
        .expect("spawn the sampler thread")
}

/// Shared list of stalls.
pub type Stalls = Arc<Mutex<Vec<Stall>>>;

fn push(stalls: &Stalls, s: Stall) {
    stalls.lock().unwrap_or_else(|p| p.into_inner()).push(s);
}

/// A plain OS thread waking every 10 ms: its lateness is the machine's (CPU contention).
pub fn spawn_machine_probe(
    clock: Clock,
    stop: Arc<AtomicBool>,
    stalls: Stalls,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("soak-probe".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::thread::sleep(PROBE_EVERY);
                let late = t.elapsed().saturating_sub(PROBE_EVERY);
                if late >= STALL_MIN {
                    push(
                        &stalls,
                        Stall {
                            instance: None,
                            t_ns: clock.now_ns(),
                            late,
                        },
                    );
                }
            }
        })
        .expect("spawn the probe thread")
}

/// A task on an instance's runtime waking every 10 ms: late while the machine is busy, or while
/// a task of that runtime blocks its worker thread.
pub async fn runtime_probe(instance: u16, clock: Clock, stop: Arc<AtomicBool>, stalls: Stalls) {
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        tokio::time::sleep(PROBE_EVERY).await;
        let late = t.elapsed().saturating_sub(PROBE_EVERY);
        if late >= STALL_MIN {
            push(
                &stalls,
                Stall {
                    instance: Some(instance),
                    t_ns: clock.now_ns(),
                    late,
                },
            );
        }
    }
}
