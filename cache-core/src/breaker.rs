//! A circuit breaker around every L2 operation (closed → open → half-open → closed).
//!
//! - Only outages count: I/O errors, refused or dropped connections, our deadline expiring, and
//!   the replies of a server not serving now (`LOADING`, `READONLY`, `MASTERDOWN`, `TRYAGAIN`,
//!   `CLUSTERDOWN`, `BUSY`, `MISCONF`, `NOREPLICAS`, `ERR max number of clients reached`; also when
//!   one answers a command inside a pipeline). Misses, decode errors and the other Redis error
//!   replies (refusals: `OOM`, `NOPERM`, `WRONGTYPE`...) do not.
//! - It trips after `failure_threshold` consecutive failures. One error per reconnect is normal, so
//!   a single failure never trips it.
//! - While open, [`Breaker::acquire`] rejects in O(1) with atomics only: no I/O, no await.
//! - Probes come from the background task ([`Breaker::acquire_probe`]), never from callers, so no
//!   caller waits on a Redis that may still be hung: after a cool-down (or at once, when asked to
//!   be eager) exactly one probe is let through (claimed by compare-and-swap). Its success closes
//!   the breaker; its failure reopens it with a doubled cool-down (capped, jittered).
//! - Every permit carries the generation it was issued in; results of calls issued before a trip
//!   neither close nor re-trip the breaker.
//! - A permit dropped without a result (the caller was cancelled) counts as nothing, except that a
//!   dropped probe reopens the breaker so another probe can follow.
//!
//! Time comes from `tokio::time::Instant`, so tests can pause and advance the clock.
//!
//! Every state change is told to an [`Observer`] if one was set (the cache's event bus): the
//! breaker knows nothing of who listens.
//!
//! Hand-written rather than the `failsafe` crate: we need generation-tagged permits and a
//! cancellation-safe probe, which it does not offer, and the whole machine is ~150 lines of atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BreakerConfig {
    pub(crate) failure_threshold: u32,
    pub(crate) cooldown_min: Duration,
    pub(crate) cooldown_max: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown_min: Duration::from_millis(250),
            cooldown_max: Duration::from_secs(1),
        }
    }
}

/// The breaker's state as reported in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// L2 is used normally.
    Closed,
    /// L2 is skipped until the cool-down ends.
    Open,
    /// One probe is testing L2.
    HalfOpen,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

fn state_of(s: u8) -> BreakerState {
    match s {
        CLOSED => BreakerState::Closed,
        OPEN => BreakerState::Open,
        _ => BreakerState::HalfOpen,
    }
}

/// Told of every state change (`from`, `to`), on the thread that made it: it must not block.
pub(crate) type Observer = Box<dyn Fn(BreakerState, BreakerState) + Send + Sync>;

pub(crate) struct Breaker {
    cfg: BreakerConfig,
    base: Instant,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    generation: AtomicU64,
    /// Nanoseconds since `base` at which a probe may be let through.
    open_until: AtomicU64,
    cooldown_nanos: AtomicU64,
    probe_claimed: AtomicBool,
    opens: AtomicU64,
    rejected: AtomicU64,
    observer: OnceLock<Observer>,
}

/// Permission to run one L2 operation. Report the outcome with [`Permit::success`] or
/// [`Permit::failure`]; dropping it reports nothing (a dropped probe reopens the breaker).
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    probe: bool,
    done: bool,
}

impl Breaker {
    pub(crate) fn new(cfg: BreakerConfig) -> Self {
        let cooldown = cfg.cooldown_min.as_nanos() as u64;
        Self {
            cfg,
            base: Instant::now(),
            state: AtomicU8::new(CLOSED),
            consecutive_failures: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            cooldown_nanos: AtomicU64::new(cooldown),
            probe_claimed: AtomicBool::new(false),
            opens: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            observer: OnceLock::new(),
        }
    }

    /// Sets the observer of state changes (once: a second one is ignored).
    pub(crate) fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// Tells the observer of a change from `from` to `to` (nothing if they are the same).
    fn changed(&self, from: u8, to: u8) {
        if from != to {
            if let Some(observe) = self.observer.get() {
                observe(state_of(from), state_of(to));
            }
        }
    }

    fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos() as u64
    }

    pub(crate) fn state(&self) -> BreakerState {
        state_of(self.state.load(Ordering::Acquire))
    }

    /// Whether operations are currently being skipped (open, or half-open with its probe running).
    /// One atomic load: lets writers skip encoding work for an L2 they would not reach.
    pub(crate) fn is_rejecting(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
    }

    /// Counts an operation skipped without asking for a permit.
    pub(crate) fn count_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Times the breaker has opened.
    pub(crate) fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Operations rejected while open.
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Returns a permit while closed, or `None` (counted) when L2 must be skipped.
    pub(crate) fn acquire(&self) -> Option<Permit<'_>> {
        let generation = self.generation.load(Ordering::Acquire);
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Some(self.permit(generation, false));
        }
        // Probes come from the background task only: no caller ever waits on a probe.
        self.rejected.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// A probe permit if the breaker is open, its cool-down has passed (or `eager`: whatever the
    /// cool-down) and no other probe runs. Used by the background task so L2 comes back even
    /// without traffic; eagerly while invalidations wait to be replayed, since then every moment
    /// Redis is back but unused, other instances may read what those invalidations remove.
    pub(crate) fn acquire_probe(&self, eager: bool) -> Option<Permit<'_>> {
        let generation = self.generation.load(Ordering::Acquire);
        if self.state.load(Ordering::Acquire) == OPEN
            && (eager || self.now() >= self.open_until.load(Ordering::Acquire))
        {
            self.try_probe(generation)
        } else {
            None
        }
    }

    fn try_probe(&self, generation: u64) -> Option<Permit<'_>> {
        self.probe_claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let prev = self.state.swap(HALF_OPEN, Ordering::AcqRel);
        self.changed(prev, HALF_OPEN);
        Some(self.permit(generation, true))
    }

    fn permit(&self, generation: u64, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            generation,
            probe,
            done: false,
        }
    }

    /// Opens the breaker now if it is closed (startup found Redis unreachable, or an operator
    /// asked), logging `reason` once. Returns whether it was closed before.
    pub(crate) fn trip(&self, reason: &str) -> bool {
        let was_closed = self
            .state
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if was_closed {
            self.cooldown_nanos
                .store(self.cfg.cooldown_min.as_nanos() as u64, Ordering::Release);
            self.open_for_cooldown();
            self.opens.fetch_add(1, Ordering::Relaxed);
            self.changed(CLOSED, OPEN);
            tracing::warn!(
                target: "cache_core::breaker",
                reason,
                "circuit breaker opened: L2 (Redis) is skipped, serving from L1 and loaders"
            );
        }
        was_closed
    }

    /// Closes the breaker (a probe succeeded, or an operator asked).
    pub(crate) fn close(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.cooldown_nanos
            .store(self.cfg.cooldown_min.as_nanos() as u64, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        let prev = self.state.swap(CLOSED, Ordering::AcqRel);
        self.probe_claimed.store(false, Ordering::Release);
        self.changed(prev, CLOSED);
        if prev != CLOSED {
            tracing::info!(target: "cache_core::breaker", "circuit breaker closed: L2 (Redis) in use again");
        }
    }

    fn open_for_cooldown(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let cd = self.cooldown_nanos.load(Ordering::Acquire);
        // ±20% jitter so instances that lost Redis together do not probe in lockstep.
        let jittered = (cd as f64 * rand::random_range(0.8..1.2)) as u64;
        self.open_until
            .store(self.now().saturating_add(jittered), Ordering::Release);
    }

    fn record_failure(&self, generation: u64, probe: bool) {
        if probe {
            let cd = self.cooldown_nanos.load(Ordering::Acquire);
            let next = cd
                .saturating_mul(2)
                .min(self.cfg.cooldown_max.as_nanos() as u64);
            self.cooldown_nanos.store(next, Ordering::Release);
            let prev = self.state.swap(OPEN, Ordering::AcqRel);
            self.open_for_cooldown();
            self.probe_claimed.store(false, Ordering::Release);
            self.changed(prev, OPEN);
            tracing::debug!(target: "cache_core::breaker", "probe failed: circuit breaker stays open");
            return;
        }
        if generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.cfg.failure_threshold {
            self.trip("consecutive L2 failures reached the threshold");
        }
    }

    fn record_success(&self, generation: u64, probe: bool) {
        if probe {
            self.close();
        } else if generation == self.generation.load(Ordering::Acquire) {
            self.consecutive_failures.store(0, Ordering::Release);
        }
    }
}

impl Permit<'_> {
    /// The operation reached Redis and got an answer.
    pub(crate) fn success(mut self) {
        self.done = true;
        self.breaker.record_success(self.generation, self.probe);
    }

    /// The operation failed for an infrastructure reason (I/O, refused, deadline).
    pub(crate) fn failure(mut self) {
        self.done = true;
        self.breaker.record_failure(self.generation, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            // A cancelled probe proves nothing: reopen so the next one can run after a cool-down.
            self.breaker.record_failure(self.generation, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            cooldown_min: Duration::from_secs(1),
            cooldown_max: Duration::from_secs(4),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_consecutive_failures_and_rejects_without_io() {
        let b = breaker();
        for _ in 0..2 {
            b.acquire().unwrap().failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire().is_none());
        assert_eq!(b.rejected(), 1);
        assert_eq!(b.opens(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_consecutive_count() {
        let b = breaker();
        b.acquire().unwrap().failure();
        b.acquire().unwrap().failure();
        b.acquire().unwrap().success();
        b.acquire().unwrap().failure();
        b.acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_cooldown_and_its_success_closes() {
        let b = breaker();
        assert!(b.trip("test"));
        assert!(b.acquire().is_none());
        tokio::time::advance(Duration::from_millis(1_300)).await;
        assert!(b.acquire().is_none(), "callers never probe");
        let probe = b.acquire_probe(false).expect("probe after cool-down");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.acquire_probe(false).is_none(), "only one probe at a time");
        assert!(b.acquire_probe(true).is_none(), "only one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_with_a_longer_cooldown() {
        let b = breaker();
        b.trip("test");
        tokio::time::advance(Duration::from_millis(1_300)).await;
        b.acquire_probe(false).unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        // The cool-down doubled to 2 s (±20%): 1.3 s is not enough any more.
        tokio::time::advance(Duration::from_millis(1_300)).await;
        assert!(b.acquire_probe(false).is_none());
        tokio::time::advance(Duration::from_millis(1_200)).await;
        assert!(b.acquire_probe(false).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_eager_probe_does_not_wait_for_the_cooldown() {
        let b = breaker();
        b.trip("test");
        assert!(b.acquire_probe(false).is_none(), "cool-down not over");
        let probe = b.acquire_probe(true).expect("eager probe");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn results_from_before_a_trip_do_not_close_or_count() {
        let b = breaker();
        let old = b.acquire().unwrap();
        b.trip("test");
        old.success();
        assert_eq!(b.state(), BreakerState::Open);
        let b = breaker();
        let stale: Vec<_> = (0..5).map(|_| b.acquire().unwrap()).collect();
        b.trip("test");
        tokio::time::advance(Duration::from_millis(1_300)).await;
        b.acquire_probe(false).unwrap().success();
        // Failures of calls issued before the trip do not re-open a breaker that closed since.
        stale.into_iter().for_each(Permit::failure);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_is_told_every_transition_once() {
        use std::sync::{Arc, Mutex};
        let b = breaker();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        b.observe(Box::new(move |from, to| {
            log.lock().unwrap().push((from, to))
        }));
        for _ in 0..3 {
            b.acquire().unwrap().failure();
        }
        assert!(!b.trip("already open"));
        tokio::time::advance(Duration::from_millis(1_300)).await;
        b.acquire_probe(false).unwrap().failure();
        b.acquire_probe(true).unwrap().success();
        b.close();
        use BreakerState::*;
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_lets_another_probe_follow() {
        let b = breaker();
        b.trip("test");
        tokio::time::advance(Duration::from_millis(1_300)).await;
        drop(b.acquire_probe(false).unwrap());
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert!(b.acquire_probe(false).is_some());
    }
}
