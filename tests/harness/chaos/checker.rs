//! The history checker: a pure function from what the run recorded (calls, fault windows,
//! samples) to violations.
//!
//! # What is a violation
//! - **Stale read.** A read `R` by instance `r` of key `k` returning version `v` is stale when
//!   some write `W` of `k` (a `set`, `invalidate` or `invalidate_tag`, by any instance `w`) with a
//!   version above `v` was *due at `r`* before `R` began. `W` is due `stale` after it returned
//!   ([`Bounds::stale`]: the backplane's message latency), later only when a fault or a machine
//!   pause may legitimately have delayed it *for that writer and reader* (see [`due`]):
//!   - a fault of the server (`instance: None`: kill, stop, client kills, memory pressure) delays
//!     every pair: if `[W.start, due]` meets `[F.start, F.end + recovery]`, `W` is due only at
//!     `F.end + recovery + stale` (an invalidation queued during an outage is replayed after it;
//!     commands sent before a SIGSTOP land in any order at SIGCONT; the recovery bound is how long
//!     after the fault's end the cache may take to be back to normal);
//!   - a fault of one instance's link (`instance: Some(j)`: cut, flapping, latency over the L2
//!     deadline) delays the same way only the pairs where exactly one of `w`, `r` is `j`: a write by
//!     `j` may reach Redis and the others late (queued and replayed), and `j` may miss the others'
//!     messages until it has resubscribed (which flushes its L1). A write by `j` read by `j` is
//!     never delayed: the cache applies a write to its own L1 at once and, while its invalidation
//!     is queued, reads of the key skip L2 (README, "When Redis fails"); and a fault of a third
//!     instance's link delays nothing between the two (its writes of the key ended before `W`
//!     began: the harness orders writes of one key, and a write returns only after its L2 round
//!     trips arrived or timed out);
//!   - latency under the L2 deadline on `j`'s link (nothing times out, so nothing may open or be
//!     queued) delays a pair with exactly one of `w`, `r` on that link by the added time alone: a
//!     message crosses the link once, and a call on it makes at most
//!     [`LatencyBounds::MAX_ROUND_TRIPS`] round trips, so `W` is due at most
//!     `MAX_ROUND_TRIPS × added RTT` later ([`Bounds::slowed`]);
//!   - a machine pause (the harness's own plain thread could not run) met on the way delays every
//!     pair: `W` is due `stale` after the pause ended.
//!
//!   And one excuse bears on the version read rather than on `W`: a `set` by `j` made while `j`'s
//!   link was slower than the L2 deadline timed out with its command still on the way, and may
//!   land in Redis after later writes of the key by other instances, until `j` replays the
//!   invalidation it queued for that unwritten set; so another instance reading that set's
//!   version is not stale before `F.end + recovery + stale` ([`resurfaces_until`]).
//!
//!   Each delay can meet the next fault or pause, and so on. A `get` that returns `None` is never
//!   stale. [`Coverage`] counts the reads held to the newest write of their key that had returned
//!   `stale` before them (no delay applying), against those for which a delay left only older
//!   writes to check them against.
//! - **Lost write / lost invalidation.** After the faults stopped, a quiet period and the end of
//!   the workload, every instance reads every key with `get_or_load`: anything but the origin's
//!   latest version is a violation, named after the key's last write (a `set`: lost write; an
//!   invalidation: lost invalidation).
//! - **Phantom read.** A version that was never the key's, or that was written only after the
//!   read returned.
//! - **Wrong value, error.** A value carrying another key; a call that returned an error (the
//!   origin never fails, and the cache must not surface L2 failures).
//! - **Slow call.** A call longer than its latency bound ([`LatencyBounds`]): one L2 deadline
//!   for reads, two for writes, plus the latency a fault added to the call's link, the loader's
//!   time and a scheduling slack. A call whose excess is covered by machine pauses within it
//!   ([`Input::pauses`]: the harness's own plain thread could not run either) is excused, and
//!   listed as such.
//! - **Growth.** Process RSS (net of the history's own memory) or a runtime's alive tasks whose
//!   mean over the last quarter of the run exceeds the first quarter's by more than the slack.
//! - **Slow recovery.** After a fault's end, the time until every instance again has its breaker
//!   closed, nothing pending and its backplane subscribed, when that exceeds [`Bounds::recovery`]
//!   (machine pauses in between not counted).

use std::collections::HashMap;
use std::time::Duration;

use super::history::{Op, Record};

/// A fault's window, as injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    /// What the fault was (for reports).
    pub label: String,
    /// When it began (ns since the run began).
    pub start_ns: u64,
    /// When it was over (the server answering again, the proxy passing traffic, the memory
    /// limit lifted); equal to `start_ns` for an instantaneous fault (a connection cut).
    pub end_ns: u64,
    /// The instance it acted on (proxy faults); `None`: all (the server).
    pub instance: Option<u16>,
    /// Round-trip time it added on that instance's link (latency faults), zero otherwise.
    pub added_rtt: Duration,
}

/// How a fault bears on when a write is due at a reader (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Not at all: a third instance's link, or the writer's own link for its own reads.
    None,
    /// An outage for the pair: the write is due only `recovery + stale` after the fault's end.
    Outage,
    /// Latency under the L2 deadline on one of the two links: due at most
    /// [`Bounds::slowed`] of this added round trip later.
    Slowed(Duration),
}

impl FaultWindow {
    /// Latency on a link that keeps every round trip under the L2 deadline: nothing times out.
    pub fn under_deadline(&self, l2_timeout: Duration) -> bool {
        !self.added_rtt.is_zero() && self.added_rtt < l2_timeout
    }

    /// Latency on a link that makes every round trip time out.
    pub fn over_deadline(&self, l2_timeout: Duration) -> bool {
        self.added_rtt >= l2_timeout
    }

    /// How this fault bears on a write by instance `writer` read by instance `reader`.
    pub fn effect(&self, writer: u16, reader: u16, l2_timeout: Duration) -> Effect {
        let Some(j) = self.instance else {
            // The server: every pair, the writer's own reads included (data lost on a restart,
            // commands sent before a SIGSTOP applied in any order at SIGCONT, evictions).
            return Effect::Outage;
        };
        if (j == writer) == (j == reader) {
            return Effect::None;
        }
        if self.under_deadline(l2_timeout) {
            Effect::Slowed(self.added_rtt)
        } else {
            Effect::Outage
        }
    }
}

/// How long each kind of call may take:
/// `timeouts(op) × l2_timeout + round_trips(op) × added RTT + loader_max (loads) + slack`.
///
/// Why: every Redis operation of the cache has the L2 deadline, and a call makes a bounded
/// number of them in sequence (`round_trips`): a `get_or_load` miss of a tagged entry up to 4
/// (GET of the entry, MGET of its tags' versions, MGET of the tags' versions before loading, the
/// write-back), `set_with` 3 (tag versions, SET, PUBLISH), `invalidate` 2 (tombstone, PUBLISH),
/// `invalidate_tag` 2 (INCR, PUBLISH), `get` 2 (GET, tag versions), a bulk load none (an L1-only
/// kind). The README promises that a hung Redis delays a call by at most the
/// deadline, and the code agrees for reads: after a failed round trip a load or a `get` skips
/// the rest of L2 (`timeouts` = 1). A write still publishes after its write failed, so it may
/// wait twice (`timeouts` = 2). Round trips that succeed take the loopback time (negligible)
/// plus the RTT a latency fault adds on the call's link while the call overlaps it (an RTT at or
/// over the deadline times out instead, and is covered by `timeouts`). `slack` covers scheduling
/// on a busy machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyBounds {
    /// The cache's L2 deadline.
    pub l2_timeout: Duration,
    /// The loader's longest own time.
    pub loader_max: Duration,
    /// Scheduling allowance.
    pub slack: Duration,
}

impl LatencyBounds {
    /// The most Redis round trips any call makes ([`Self::round_trips`] of a load).
    pub const MAX_ROUND_TRIPS: u32 = 4;

    /// Redis round trips a call of `op` makes at most.
    pub fn round_trips(op: Op) -> u32 {
        match op {
            Op::GetOrLoad | Op::FinalRead => 4,
            Op::Set => 3,
            Op::Get | Op::Invalidate | Op::InvalidateTag => 2,
            Op::BulkLoad => 0,
        }
    }

    /// Round trips of a call of `op` that may each wait the whole deadline.
    pub fn timeouts(op: Op) -> u32 {
        match op {
            Op::GetOrLoad | Op::FinalRead | Op::Get => 1,
            Op::Set | Op::Invalidate | Op::InvalidateTag => 2,
            Op::BulkLoad => 0,
        }
    }

    /// The bound for a call of `op` while latency faults add `added_rtt` to its link.
    pub fn bound(&self, op: Op, added_rtt: Duration) -> Duration {
        let loader = match op {
            Op::GetOrLoad | Op::FinalRead | Op::BulkLoad => self.loader_max,
            _ => Duration::ZERO,
        };
        let rtt = if added_rtt < self.l2_timeout {
            added_rtt
        } else {
            Duration::ZERO
        };
        self.l2_timeout * Self::timeouts(op) + rtt * Self::round_trips(op) + loader + self.slack
    }
}

/// How much growth between the first and the last quarter of the run is tolerated: the larger
/// of an absolute and a relative allowance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrowthSlack {
    /// RSS, bytes.
    pub rss_abs: u64,
    /// RSS, fraction of the first quarter's mean.
    pub rss_rel: f64,
    /// Alive tasks per runtime, absolute.
    pub tasks_abs: f64,
    /// Alive tasks per runtime, fraction of the first quarter's mean.
    pub tasks_rel: f64,
}

impl Default for GrowthSlack {
    fn default() -> Self {
        Self {
            rss_abs: 48 << 20,
            rss_rel: 0.5,
            tasks_abs: 16.0,
            tasks_rel: 0.5,
        }
    }
}

/// Every bound the checker applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// How long after a write returned other instances may still return the older value.
    pub stale: Duration,
    /// How long after a fault's end the cache may take to be back to normal (breaker closed,
    /// queued invalidations replayed and published, backplane resubscribed).
    pub recovery: Duration,
    /// Per-call latency bounds.
    pub latency: LatencyBounds,
    /// Memory and task growth allowances.
    pub growth: GrowthSlack,
}

impl Bounds {
    /// How much later a write is due at a reader when one of the two links is slowed by
    /// `added_rtt` (under the deadline): a backplane message crosses the link once, and a call
    /// on it that was under way makes at most [`LatencyBounds::MAX_ROUND_TRIPS`] round trips.
    /// Scheduling slack is in [`Bounds::stale`] already.
    pub fn slowed(&self, added_rtt: Duration) -> Duration {
        added_rtt * LatencyBounds::MAX_ROUND_TRIPS
    }
}

/// One sample of process memory and runtime tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrowthSample {
    /// When (ns since the run began).
    pub t_ns: u64,
    /// Resident set size minus the bytes of history recorded so far.
    pub rss_bytes: u64,
    /// Alive tasks of each instance's runtime.
    pub tasks: Vec<u64>,
}

/// One instance's recovery-relevant state at a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceHealth {
    /// The breaker is closed.
    pub breaker_closed: bool,
    /// Invalidations waiting for replay, and backplane messages waiting for a resend.
    pub pending: u64,
    /// The backplane is subscribed.
    pub subscribed: bool,
}

impl InstanceHealth {
    /// Back to normal.
    pub fn healthy(&self) -> bool {
        self.breaker_closed && self.pending == 0 && self.subscribed
    }
}

/// The state of every instance at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSample {
    /// When (ns since the run began).
    pub t_ns: u64,
    /// One per instance.
    pub instances: Vec<InstanceHealth>,
}

/// Everything the checker looks at.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Every call.
    pub records: &'a [Record],
    /// Every fault injected.
    pub faults: &'a [FaultWindow],
    /// The origin's version of each key at the end.
    pub final_versions: &'a [u64],
    /// Memory and task samples, oldest first.
    pub growth: &'a [GrowthSample],
    /// Health samples, oldest first.
    pub health: &'a [HealthSample],
    /// When the whole process could not run: a plain OS thread of the harness (no cache code)
    /// woke up late. Nothing the cache does explains such a pause, so a slow call is excused by
    /// the pause time it contains, and a write that met one is due `stale` after it ended.
    pub pauses: &'a [FaultWindow],
}

/// A class of violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// See [`Violation::StaleRead`].
    StaleRead,
    /// See [`Violation::LostWrite`].
    LostWrite,
    /// See [`Violation::LostInvalidation`].
    LostInvalidation,
    /// See [`Violation::PhantomRead`].
    PhantomRead,
    /// See [`Violation::WrongValue`].
    WrongValue,
    /// See [`Violation::Error`].
    Error,
    /// See [`Violation::SlowCall`].
    SlowCall,
    /// See [`Violation::Growth`].
    Growth,
    /// See [`Violation::SlowRecovery`].
    SlowRecovery,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 9] = [
        Class::StaleRead,
        Class::LostWrite,
        Class::LostInvalidation,
        Class::PhantomRead,
        Class::WrongValue,
        Class::Error,
        Class::SlowCall,
        Class::Growth,
        Class::SlowRecovery,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Class::StaleRead => "stale read",
            Class::LostWrite => "lost write",
            Class::LostInvalidation => "lost invalidation",
            Class::PhantomRead => "phantom read",
            Class::WrongValue => "wrong value",
            Class::Error => "error",
            Class::SlowCall => "slow call",
            Class::Growth => "growth",
            Class::SlowRecovery => "slow recovery",
        }
    }
}

/// One violation, with what is needed to explain it.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// `read` returned an older version than `newer`, which was due at the reader by
    /// `visible_by_ns`.
    StaleRead {
        /// The read.
        read: Record,
        /// The newest write of the key due at the reader when the read began.
        newer: Record,
        /// When `newer` had to be visible to the reader.
        visible_by_ns: u64,
        /// A fault or a machine pause delayed when `newer` was due (see `why`).
        fault_delayed: bool,
        /// What set `visible_by_ns` (e.g. `its end + stale`, or the fault that delayed it).
        why: String,
        /// The write that produced the version read (`None`: the key's initial version).
        written_by: Option<Record>,
    },
    /// A final read did not return the version of the key's last write, a `set`.
    LostWrite {
        /// The final read.
        read: Record,
        /// The key's last write.
        latest: Record,
        /// The write that produced the version read.
        written_by: Option<Record>,
    },
    /// A final read returned a value older than the key's last write, an invalidation.
    LostInvalidation {
        /// The final read.
        read: Record,
        /// The key's last write.
        latest: Record,
        /// The write that produced the version read.
        written_by: Option<Record>,
    },
    /// A version never written for the key, or only after the read.
    PhantomRead {
        /// The read.
        read: Record,
        /// Why.
        why: &'static str,
    },
    /// A value of another key.
    WrongValue {
        /// The read.
        read: Record,
    },
    /// A call that returned an error.
    Error {
        /// The call.
        record: Record,
    },
    /// A call over its latency bound.
    SlowCall {
        /// The call.
        record: Record,
        /// Its bound.
        bound: Duration,
    },
    /// Memory or tasks grew.
    Growth {
        /// What grew.
        what: String,
        /// Mean over the first quarter of the samples.
        first_mean: f64,
        /// Mean over the last quarter.
        last_mean: f64,
        /// The growth allowed.
        allowed: f64,
    },
    /// The cache took longer than the recovery bound to be back to normal after a fault.
    SlowRecovery(Recovery),
}

impl Violation {
    /// The violation's class.
    pub fn class(&self) -> Class {
        match self {
            Violation::StaleRead { .. } => Class::StaleRead,
            Violation::LostWrite { .. } => Class::LostWrite,
            Violation::LostInvalidation { .. } => Class::LostInvalidation,
            Violation::PhantomRead { .. } => Class::PhantomRead,
            Violation::WrongValue { .. } => Class::WrongValue,
            Violation::Error { .. } => Class::Error,
            Violation::SlowCall { .. } => Class::SlowCall,
            Violation::Growth { .. } => Class::Growth,
            Violation::SlowRecovery { .. } => Class::SlowRecovery,
        }
    }
}

/// How long the cache took to be back to normal after one fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Index of the fault in the input's `faults`.
    pub fault: usize,
    /// At least this long after the fault's end (the last unhealthy sample; zero when the first
    /// sample after the end was healthy).
    pub at_least: Duration,
    /// At most this long (the first healthy sample); `None` when not seen before the next fault
    /// began or the samples ended.
    pub at_most: Option<Duration>,
    /// The previous fault (its index), when the cache had not recovered from it yet as this one
    /// began: the two recoveries are one.
    pub inherited_from: Option<usize>,
    /// What was still wrong at the last unhealthy sample (e.g. `i1 breaker open, 3 pending`).
    pub unhealthy: String,
    /// Machine pause time between the fault's end and the last unhealthy sample: not counted
    /// against the recovery bound.
    pub paused: Duration,
}

/// What was wrong with each unhealthy instance in `s`.
pub fn unhealthy_text(s: &HealthSample) -> String {
    s.instances
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.healthy())
        .map(|(i, h)| {
            let mut what = Vec::new();
            if !h.breaker_closed {
                what.push("breaker not closed".to_owned());
            }
            if h.pending > 0 {
                what.push(format!("{} invalidations pending", h.pending));
            }
            if !h.subscribed {
                what.push("backplane unsubscribed".to_owned());
            }
            format!("i{i} {}", what.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A call over its bound by less than the machine pauses it contained: not a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Excused {
    /// The call.
    pub record: Record,
    /// Its bound.
    pub bound: Duration,
    /// Machine pause time within the call.
    pub paused: Duration,
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    /// Every violation, grouped by class in [`Class::ALL`] order, by time within a class.
    pub violations: Vec<Violation>,
    /// The recovery time after each fault.
    pub recoveries: Vec<Recovery>,
    /// Slow calls explained by machine pauses.
    pub excused: Vec<Excused>,
    /// How strictly the reads were checked for staleness.
    pub coverage: Coverage,
}

/// How strictly the reads were checked for staleness. Each read (`get_or_load` or `get` that
/// returned a value) is compared with the newest write of its key that had returned
/// [`Bounds::stale`] before the read began (the *latest*): it is held to it when that write was
/// due at the reader (no fault or pause delaying it for that writer and reader), and only to older
/// writes, or none, when a delay applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Reads that returned a value.
    pub reads: u64,
    /// Reads held to the latest write of their key (it was due at the reader).
    pub strict: u64,
    /// Of `strict`, those that began during a fault or its recovery allowance
    /// (`[F.start, F.end + recovery]`): checked strictly thanks to the per-instance rules.
    pub strict_during_faults: u64,
    /// Reads for which a fault or pause delayed the latest write for that pair: held only to an
    /// older write of the key (or to none).
    pub excused: u64,
    /// Reads that returned a version a delayed `set` may have put back
    /// ([`resurfaces_until`]), older than a write that was due: not stale, and not counted in
    /// the other classes.
    pub resurfaced: u64,
    /// Reads that began before any write of their key had returned `stale` before: nothing to
    /// hold them to.
    pub nothing_due: u64,
}

impl Coverage {
    /// `strict` as a fraction of `reads`.
    pub fn strict_fraction(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            self.strict as f64 / self.reads as f64
        }
    }
}

impl Findings {
    /// Violations of `class`.
    pub fn of(&self, class: Class) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.class() == class)
    }
}

/// What set the time a write was due at a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Nothing delayed it: its end + stale.
    Stale,
    /// An outage for the pair (index into the faults given): its end + recovery + stale.
    Outage(usize),
    /// Latency under the deadline on one of the two links (index into the faults given): the
    /// write's end + stale + [`Bounds::slowed`].
    Slowed(usize),
    /// A machine pause (index into the pauses given): its end + stale.
    Pause(usize),
}

/// When a write is due at a reader, and why then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// ns since the run began.
    pub at_ns: u64,
    /// What set it.
    pub cause: Cause,
}

impl Due {
    /// `cause` in words, naming the fault or pause from the slices `due` was given.
    pub fn why(&self, faults: &[FaultWindow], pauses: &[FaultWindow]) -> String {
        match self.cause {
            Cause::Stale => "its end + stale".into(),
            Cause::Outage(i) => format!(
                "end of {} at {:.3}s + recovery + stale",
                faults[i].label,
                faults[i].end_ns as f64 / 1e9
            ),
            Cause::Slowed(i) => format!(
                "its end + stale + {:?} for {} (+{:?} round trip)",
                LatencyBounds::MAX_ROUND_TRIPS * faults[i].added_rtt,
                faults[i].label,
                faults[i].added_rtt
            ),
            Cause::Pause(i) => format!(
                "end of a machine pause at {:.3}s + stale",
                pauses[i].end_ns as f64 / 1e9
            ),
        }
    }
}

/// When write `w` is due at instance `reader`: `stale` after it returned, later when a fault or a
/// machine pause met on the way delays it for that writer and reader (see the module docs and
/// [`FaultWindow::effect`]). `faults` and `pauses` must be sorted by start.
pub fn due(
    w: &Record,
    reader: u16,
    faults: &[FaultWindow],
    pauses: &[FaultWindow],
    bounds: &Bounds,
) -> Due {
    let stale = bounds.stale.as_nanos() as u64;
    let recovery = bounds.recovery.as_nanos() as u64;
    let timeout = bounds.latency.l2_timeout;
    let mut due = Due {
        at_ns: w.end_ns + stale,
        cause: Cause::Stale,
    };
    let raise = |due: &mut Due, at_ns: u64, cause: Cause| {
        if at_ns > due.at_ns {
            *due = Due { at_ns, cause };
        }
    };
    loop {
        let before = due.at_ns;
        for (i, f) in faults.iter().enumerate() {
            if f.start_ns > due.at_ns {
                break;
            }
            match f.effect(w.instance, reader, timeout) {
                Effect::None => {}
                Effect::Outage => {
                    if f.end_ns + recovery >= w.start_ns {
                        raise(&mut due, f.end_ns + recovery + stale, Cause::Outage(i));
                    }
                }
                Effect::Slowed(rtt) => {
                    if f.end_ns >= w.start_ns {
                        let at = w.end_ns + stale + bounds.slowed(rtt).as_nanos() as u64;
                        raise(&mut due, at, Cause::Slowed(i));
                    }
                }
            }
        }
        for (i, p) in pauses.iter().enumerate() {
            if p.start_ns > due.at_ns {
                break;
            }
            if p.end_ns >= w.start_ns {
                raise(&mut due, p.end_ns + stale, Cause::Pause(i));
            }
        }
        if due.at_ns == before {
            return due;
        }
    }
}

/// [`due`]'s time alone.
pub fn visible_by(
    w: &Record,
    reader: u16,
    faults: &[FaultWindow],
    pauses: &[FaultWindow],
    bounds: &Bounds,
) -> u64 {
    due(w, reader, faults, pauses, bounds).at_ns
}

/// Until when the version of write `x` may legitimately be read by `reader` after later writes
/// of its key were due: when `x` is a `set` by instance `j` made while `j`'s link was slower than
/// the L2 deadline (its SET timed out with the command still on the way, and may land after later
/// writes of other instances), until `recovery + stale` after that fault's end (by then `j` has
/// replayed the invalidation it queued for the unwritten set). `None` for anything else, and for
/// `j`'s own reads (they skip L2 while the invalidation is queued). `faults` sorted by start.
pub fn resurfaces_until(
    x: &Record,
    reader: u16,
    faults: &[FaultWindow],
    bounds: &Bounds,
) -> Option<u64> {
    if x.op != Op::Set || x.instance == reader {
        return None;
    }
    let recovery = bounds.recovery.as_nanos() as u64;
    let stale = bounds.stale.as_nanos() as u64;
    faults
        .iter()
        .take_while(|f| f.start_ns <= x.end_ns)
        .filter(|f| {
            f.instance == Some(x.instance)
                && f.over_deadline(bounds.latency.l2_timeout)
                && f.end_ns >= x.start_ns
        })
        .map(|f| f.end_ns + recovery + stale)
        .max()
}

/// The union of `[F.start, F.end + recovery]` over `faults` (sorted by start), as sorted disjoint
/// spans.
fn spans(faults: &[FaultWindow], recovery: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for f in faults {
        let (a, b) = (f.start_ns, f.end_ns + recovery);
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Whether `t` lies in one of `spans` (sorted, disjoint).
fn within_spans(spans: &[(u64, u64)], t: u64) -> bool {
    let i = spans.partition_point(|s| s.0 <= t);
    i > 0 && t <= spans[i - 1].1
}

/// Machine pause time within `[from, to]`.
fn paused_within(pauses: &[FaultWindow], from: u64, to: u64) -> Duration {
    Duration::from_nanos(
        pauses
            .iter()
            .filter(|p| p.start_ns <= to && p.end_ns >= from)
            .map(|p| p.end_ns.min(to) - p.start_ns.max(from))
            .sum(),
    )
}

/// Checks a run. Pure: the same input gives the same findings.
pub fn check(input: &Input<'_>, bounds: &Bounds) -> Findings {
    let mut faults: Vec<FaultWindow> = input.faults.to_vec();
    faults.sort_by_key(|f| f.start_ns);
    let mut pauses: Vec<FaultWindow> = input.pauses.to_vec();
    pauses.sort_by_key(|p| p.start_ns);
    let mut out = Findings::default();
    let records = input.records;

    // Writes of each key, and each key's versions.
    let keys = records
        .iter()
        .map(|r| r.key as usize + 1)
        .chain(std::iter::once(input.final_versions.len()))
        .max()
        .unwrap_or(0);
    let mut writes: Vec<Vec<usize>> = vec![Vec::new(); keys];
    let mut reads: Vec<Vec<usize>> = vec![Vec::new(); keys];
    let mut by_version: Vec<HashMap<u64, usize>> = vec![HashMap::new(); keys];
    for (i, r) in records.iter().enumerate() {
        if r.op.is_write() {
            if let Some(v) = r.version {
                writes[r.key as usize].push(i);
                by_version[r.key as usize].insert(v, i);
            }
        } else if matches!(r.op, Op::GetOrLoad | Op::Get)
            && !r.errored
            && !r.wrong_key
            && r.version.is_some()
        {
            reads[r.key as usize].push(i);
        }
    }

    let mut stale = Vec::new();
    let mut lost_w = Vec::new();
    let mut lost_i = Vec::new();
    let mut phantom = Vec::new();
    let mut wrong = Vec::new();
    let mut errors = Vec::new();
    let mut slow = Vec::new();

    // Latency faults, for the bound of the calls that overlap them on their link.
    let latency: Vec<&FaultWindow> = faults.iter().filter(|f| !f.added_rtt.is_zero()).collect();
    let added_rtt = |r: &Record| {
        latency
            .iter()
            .filter(|f| {
                f.instance.is_none_or(|i| i == r.instance)
                    && f.start_ns <= r.end_ns
                    && f.end_ns >= r.start_ns
            })
            .map(|f| f.added_rtt)
            .max()
            .unwrap_or_default()
    };

    // Per-record checks: errors, wrong values, phantoms, slow calls.
    for r in records {
        if r.errored {
            errors.push(Violation::Error { record: *r });
        }
        if r.op.is_read() && r.wrong_key {
            wrong.push(Violation::WrongValue { read: *r });
        }
        if r.op.is_read() && !r.errored && !r.wrong_key {
            if let Some(v) = r.version.filter(|&v| v != 0) {
                match by_version[r.key as usize].get(&v) {
                    None => phantom.push(Violation::PhantomRead {
                        read: *r,
                        why: "version never written for this key",
                    }),
                    Some(&w) if records[w].start_ns > r.end_ns => {
                        phantom.push(Violation::PhantomRead {
                            read: *r,
                            why: "version written only after the read returned",
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        if r.primary {
            let bound = bounds.latency.bound(r.op, added_rtt(r));
            if r.duration() > bound {
                let paused = paused_within(&pauses, r.start_ns, r.end_ns);
                if r.duration() - bound <= paused {
                    out.excused.push(Excused {
                        record: *r,
                        bound,
                        paused,
                    });
                } else {
                    slow.push(Violation::SlowCall { record: *r, bound });
                }
            }
        }
    }

    // Stale reads: per key and reader, the reader's reads by start against the key's writes by
    // when they were due at that reader (and by when they had returned `stale` before, for the
    // coverage).
    let stale_ns = bounds.stale.as_nanos() as u64;
    let instances = records
        .iter()
        .map(|r| r.instance as usize + 1)
        .max()
        .unwrap_or(0);
    let fault_spans = spans(&faults, bounds.recovery.as_nanos() as u64);
    let mut coverage = Coverage::default();
    for (key, (ws, key_reads)) in writes.iter().zip(reads.iter_mut()).enumerate() {
        key_reads.sort_by_key(|&i| records[i].start_ns);
        let mut latest: Vec<(u64, u64)> = ws
            .iter()
            .map(|&i| {
                (
                    records[i].end_ns + stale_ns,
                    records[i].version.unwrap_or(0),
                )
            })
            .collect();
        latest.sort_unstable();
        for reader in 0..instances as u16 {
            let mut vis: Vec<(u64, u64, usize)> = Vec::new();
            let (mut j, mut l) = (0, 0);
            let mut best: Option<(u64, usize)> = None;
            let mut best_latest: Option<u64> = None;
            for &ri in key_reads.iter().filter(|&&i| records[i].instance == reader) {
                if vis.is_empty() && !ws.is_empty() {
                    vis = ws
                        .iter()
                        .map(|&i| {
                            let w = &records[i];
                            (
                                visible_by(w, reader, &faults, &pauses, bounds),
                                w.version.unwrap_or(0),
                                i,
                            )
                        })
                        .collect();
                    vis.sort_unstable();
                }
                let r = &records[ri];
                while j < vis.len() && vis[j].0 < r.start_ns {
                    if best.is_none_or(|(v, _)| vis[j].1 > v) {
                        best = Some((vis[j].1, vis[j].2));
                    }
                    j += 1;
                }
                while l < latest.len() && latest[l].0 < r.start_ns {
                    best_latest = best_latest.max(Some(latest[l].1));
                    l += 1;
                }
                coverage.reads += 1;
                let older = best
                    .zip(r.version)
                    .filter(|&((v, _), got)| got < v)
                    .map(|((_, wi), got)| (wi, got));
                let written_by = older.and_then(|(_, got)| by_version[key].get(&got));
                let written_by = written_by.map(|&i| records[i]);
                if older.is_some()
                    && written_by
                        .and_then(|x| resurfaces_until(&x, reader, &faults, bounds))
                        .is_some_and(|until| r.start_ns <= until)
                {
                    coverage.resurfaced += 1;
                    continue;
                }
                match best_latest {
                    None => coverage.nothing_due += 1,
                    Some(v) if best.is_some_and(|(b, _)| b == v) => {
                        coverage.strict += 1;
                        if within_spans(&fault_spans, r.start_ns) {
                            coverage.strict_during_faults += 1;
                        }
                    }
                    Some(_) => coverage.excused += 1,
                }
                let Some((wi, _)) = older else {
                    continue;
                };
                let newer = records[wi];
                let d = due(&newer, reader, &faults, &pauses, bounds);
                stale.push(Violation::StaleRead {
                    read: *r,
                    newer,
                    visible_by_ns: d.at_ns,
                    fault_delayed: d.cause != Cause::Stale,
                    why: d.why(&faults, &pauses),
                    written_by,
                });
            }
        }
    }
    out.coverage = coverage;
    stale.sort_by_key(|v| match v {
        Violation::StaleRead { read, .. } => read.start_ns,
        _ => 0,
    });

    // Final reads against the origin's latest versions.
    for r in records.iter().filter(|r| r.op == Op::FinalRead) {
        if r.errored || r.wrong_key {
            continue;
        }
        let latest = input
            .final_versions
            .get(r.key as usize)
            .copied()
            .unwrap_or(0);
        let got = r.version.unwrap_or(0);
        if got >= latest {
            // Above the latest is a phantom, flagged above.
            continue;
        }
        let Some(&wi) = by_version[r.key as usize].get(&latest) else {
            continue;
        };
        let latest = records[wi];
        let written_by = by_version[r.key as usize].get(&got).map(|&i| records[i]);
        if latest.op == Op::Set {
            lost_w.push(Violation::LostWrite {
                read: *r,
                latest,
                written_by,
            });
        } else {
            lost_i.push(Violation::LostInvalidation {
                read: *r,
                latest,
                written_by,
            });
        }
    }

    out.violations.extend(stale);
    out.violations.extend(lost_w);
    out.violations.extend(lost_i);
    out.violations.extend(phantom);
    out.violations.extend(wrong);
    out.violations.extend(errors);
    out.violations.extend(slow);
    out.violations.extend(growth(input.growth, &bounds.growth));
    let (recoveries, slow_rec) = recoveries(&faults, input.faults, input.health, &pauses, bounds);
    out.violations.extend(slow_rec);
    out.recoveries = recoveries;
    out
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (n, s) = xs.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Growth of RSS and of each runtime's tasks between the first and the last quarter.
pub fn growth(samples: &[GrowthSample], slack: &GrowthSlack) -> Vec<Violation> {
    let mut out = Vec::new();
    // Too few samples to tell a trend from noise.
    if samples.len() < 8 {
        return out;
    }
    let q = samples.len() / 4;
    let (first, last) = (&samples[..q], &samples[samples.len() - q..]);
    let f = mean(first.iter().map(|s| s.rss_bytes as f64));
    let l = mean(last.iter().map(|s| s.rss_bytes as f64));
    let allowed = (slack.rss_abs as f64).max(slack.rss_rel * f);
    if l - f > allowed {
        out.push(Violation::Growth {
            what: "process RSS (bytes, history excluded)".into(),
            first_mean: f,
            last_mean: l,
            allowed,
        });
    }
    let runtimes = samples.iter().map(|s| s.tasks.len()).min().unwrap_or(0);
    for i in 0..runtimes {
        let f = mean(first.iter().map(|s| s.tasks[i] as f64));
        let l = mean(last.iter().map(|s| s.tasks[i] as f64));
        let allowed = slack.tasks_abs.max(slack.tasks_rel * f);
        if l - f > allowed {
            out.push(Violation::Growth {
                what: format!("alive tasks of instance {i}'s runtime"),
                first_mean: f,
                last_mean: l,
                allowed,
            });
        }
    }
    out
}

/// Recovery after each fault (`sorted`: the faults by start; `original`: in input order, whose
/// indices the results use).
fn recoveries(
    sorted: &[FaultWindow],
    original: &[FaultWindow],
    health: &[HealthSample],
    pauses: &[FaultWindow],
    bounds: &Bounds,
) -> (Vec<Recovery>, Vec<Violation>) {
    let mut recs = Vec::new();
    let mut violations = Vec::new();
    let index_of = |f: &FaultWindow| original.iter().position(|o| o == f);
    let healthy = |s: &HealthSample| s.instances.iter().all(InstanceHealth::healthy);
    for (n, f) in sorted.iter().enumerate() {
        let Some(index) = index_of(f) else {
            continue;
        };
        // Not recovered from the previous fault yet: no healthy sample since its end.
        let inherited_from = n
            .checked_sub(1)
            .filter(|&p| {
                let prev = &sorted[p];
                let mut between = health
                    .iter()
                    .filter(|s| s.t_ns >= prev.end_ns && s.t_ns < f.start_ns)
                    .peekable();
                between.peek().is_some() && !between.any(healthy)
            })
            .and_then(|p| index_of(&sorted[p]));
        let until = sorted.get(n + 1).map_or(u64::MAX, |next| next.start_ns);
        let after: Vec<&HealthSample> = health
            .iter()
            .filter(|s| s.t_ns >= f.end_ns && s.t_ns < until)
            .collect();
        if after.is_empty() {
            continue;
        }
        let since = |s: &HealthSample| Duration::from_nanos(s.t_ns - f.end_ns);
        let (at_least, at_most, last_bad) = match after.iter().position(|s| healthy(s)) {
            Some(0) => (Duration::ZERO, Some(since(after[0])), None),
            Some(j) => (
                since(after[j - 1]),
                Some(since(after[j])),
                Some(after[j - 1]),
            ),
            None => (since(after[after.len() - 1]), None, after.last().copied()),
        };
        let paused = paused_within(pauses, f.end_ns, f.end_ns + at_least.as_nanos() as u64);
        let rec = Recovery {
            fault: index,
            at_least,
            at_most,
            inherited_from,
            unhealthy: last_bad.map_or(String::new(), unhealthy_text),
            paused,
        };
        if rec.at_least.saturating_sub(paused) > bounds.recovery {
            violations.push(Violation::SlowRecovery(rec.clone()));
        }
        recs.push(rec);
    }
    (recs, violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn bounds() -> Bounds {
        Bounds {
            stale: Duration::from_millis(250),
            recovery: Duration::from_secs(2),
            latency: LatencyBounds {
                l2_timeout: Duration::from_millis(100),
                loader_max: Duration::from_millis(3),
                slack: Duration::from_millis(150),
            },
            growth: GrowthSlack::default(),
        }
    }

    fn rec(instance: u16, op: Op, key: u32, start_ms: u64, end_ms: u64, v: Option<u64>) -> Record {
        Record {
            instance,
            op,
            primary: true,
            errored: false,
            wrong_key: false,
            source: None,
            key,
            start_ns: start_ms * MS,
            end_ns: end_ms * MS,
            version: v,
        }
    }

    fn run(records: &[Record], faults: &[FaultWindow], finals: &[u64]) -> Findings {
        check(
            &Input {
                records,
                faults,
                final_versions: finals,
                growth: &[],
                health: &[],
                pauses: &[],
            },
            &bounds(),
        )
    }

    fn classes(f: &Findings) -> Vec<Class> {
        f.violations.iter().map(Violation::class).collect()
    }

    #[test]
    fn a_read_older_than_a_write_that_completed_long_before_is_a_stale_read() {
        let h = [
            rec(0, Op::Set, 3, 100, 101, Some(1)),
            rec(0, Op::Set, 3, 200, 201, Some(2)),
            // Another instance, 1 s later, still returns version 1.
            rec(1, Op::GetOrLoad, 3, 1_200, 1_201, Some(1)),
            // Other keys are unaffected.
            rec(1, Op::GetOrLoad, 4, 1_200, 1_201, Some(0)),
        ];
        let f = run(&h, &[], &[]);
        assert_eq!(classes(&f), [Class::StaleRead]);
        let Violation::StaleRead {
            read,
            newer,
            visible_by_ns,
            fault_delayed,
            why,
            written_by,
        } = &f.violations[0]
        else {
            unreachable!()
        };
        assert_eq!((read.instance, read.version), (1, Some(1)));
        assert_eq!(newer.version, Some(2));
        assert_eq!(*visible_by_ns, 451 * MS);
        assert!(!fault_delayed);
        assert_eq!(why, "its end + stale");
        assert_eq!(written_by.map(|w| w.start_ns), Some(100 * MS));
        assert_eq!(
            f.coverage,
            Coverage {
                reads: 2,
                strict: 1,
                // Key 4 was never written.
                nothing_due: 1,
                ..Coverage::default()
            }
        );
    }

    #[test]
    fn a_read_concurrent_with_the_write_or_within_the_stale_bound_is_not_flagged() {
        let h = [
            rec(0, Op::Set, 3, 10, 11, Some(5)),
            rec(0, Op::Invalidate, 3, 100, 150, Some(7)),
            // Overlaps the write.
            rec(1, Op::GetOrLoad, 3, 120, 160, Some(5)),
            // Began 100 ms after it returned: within the 250 ms stale bound.
            rec(2, Op::Get, 3, 250, 251, Some(5)),
            // `None` from `get` is never stale.
            rec(2, Op::Get, 3, 900, 901, None),
            // Newer than the write: fine.
            rec(1, Op::GetOrLoad, 3, 900, 901, Some(7)),
        ];
        assert!(run(&h, &[], &[]).violations.is_empty());
    }

    #[test]
    fn a_write_that_met_a_fault_is_only_due_after_the_fault_end_plus_recovery() {
        let fault = FaultWindow {
            label: "sigstop".into(),
            start_ns: 1_000 * MS,
            end_ns: 3_000 * MS,
            instance: None,
            added_rtt: Duration::ZERO,
        };
        let h = [
            rec(0, Op::Set, 1, 10, 11, Some(4)),
            rec(0, Op::Set, 2, 10, 11, Some(5)),
            rec(0, Op::Set, 5, 10, 11, Some(6)),
            // Returned during the fault (its invalidation could only be queued).
            rec(0, Op::Invalidate, 1, 1_500, 1_600, Some(9)),
            // Returned just before the fault began: its message may have been lost with it.
            rec(0, Op::Set, 2, 900, 950, Some(10)),
            // Began during the fault's recovery allowance (breaker still open).
            rec(0, Op::Set, 5, 4_000, 4_001, Some(11)),
            // Old values read within the grace: fine.
            rec(1, Op::GetOrLoad, 1, 4_000, 4_001, Some(4)),
            rec(1, Op::GetOrLoad, 2, 5_200, 5_201, Some(5)),
            rec(1, Op::GetOrLoad, 5, 5_200, 5_201, Some(6)),
            // Past fault end + recovery + stale (5.25 s): stale.
            rec(2, Op::GetOrLoad, 1, 5_300, 5_301, Some(4)),
        ];
        let f = run(&h, std::slice::from_ref(&fault), &[]);
        assert_eq!(classes(&f), [Class::StaleRead]);
        let Violation::StaleRead {
            read,
            visible_by_ns,
            fault_delayed,
            ..
        } = &f.violations[0]
        else {
            unreachable!()
        };
        assert_eq!((read.instance, read.key), (2, 1));
        assert_eq!(*visible_by_ns, 5_250 * MS);
        assert!(fault_delayed);
        // A write long after the fault's recovery is visible after the stale bound only.
        let later = rec(0, Op::Set, 1, 9_000, 9_001, Some(12));
        assert_eq!(
            visible_by(&later, 1, std::slice::from_ref(&fault), &[], &bounds()),
            9_251 * MS
        );
        // A fault of the server delays the writer's own reads too.
        let during = rec(0, Op::Set, 1, 1_500, 1_501, Some(13));
        assert_eq!(
            visible_by(&during, 0, std::slice::from_ref(&fault), &[], &bounds()),
            5_250 * MS
        );
    }

    fn cut(instance: u16, at_ms: u64) -> FaultWindow {
        FaultWindow {
            label: format!("proxy cut (i{instance})"),
            start_ns: at_ms * MS,
            end_ns: at_ms * MS,
            instance: Some(instance),
            added_rtt: Duration::ZERO,
        }
    }

    fn stale_reads(f: &Findings) -> Vec<(u16, u32, u64)> {
        f.violations
            .iter()
            .filter_map(|v| match v {
                Violation::StaleRead { read, .. } => {
                    Some((read.instance, read.key, read.start_ns / MS))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_fault_on_one_instance_excuses_no_stale_read_between_the_others_nor_of_a_writer_s_own_write(
    ) {
        // i2's link is cut at 1 s (end = start: a cut); writes by i0 just before and after it.
        let faults = [cut(2, 1_000)];
        let h = [
            rec(0, Op::Set, 1, 10, 11, Some(1)),
            rec(0, Op::Set, 1, 990, 1_000, Some(2)),
            // i0 reads an older version than its own write, 500 ms later: stale.
            rec(0, Op::GetOrLoad, 1, 1_500, 1_501, Some(1)),
            // So does i1, which i2's link has nothing to do with.
            rec(1, Op::Get, 1, 1_500, 1_501, Some(1)),
            // i2 may miss i0's message until it resubscribed (fault end + recovery + stale).
            rec(2, Op::GetOrLoad, 1, 1_500, 1_501, Some(1)),
            rec(2, Op::GetOrLoad, 1, 3_240, 3_241, Some(1)),
            // ...but not after that.
            rec(2, Op::GetOrLoad, 1, 3_300, 3_301, Some(1)),
        ];
        let f = run(&h, &faults, &[]);
        assert_eq!(
            stale_reads(&f),
            [(0, 1, 1_500), (1, 1, 1_500), (2, 1, 3_300)]
        );
        let Violation::StaleRead { why, .. } = &f.violations[2] else {
            unreachable!()
        };
        assert_eq!(why, "end of proxy cut (i2) at 1.000s + recovery + stale");
        assert_eq!(
            f.coverage,
            Coverage {
                reads: 5,
                strict: 3,
                strict_during_faults: 2,
                excused: 2,
                ..Coverage::default()
            }
        );
    }

    #[test]
    fn a_write_by_the_faulted_instance_is_late_for_the_others_but_not_for_itself() {
        let faults = [cut(2, 1_000)];
        let h = [
            rec(2, Op::Set, 4, 10, 11, Some(1)),
            // Made as its link was cut: queued, replayed once the link is back.
            rec(2, Op::Invalidate, 4, 1_000, 1_001, Some(2)),
            // The others may read the old version until the cut's end + recovery + stale.
            rec(0, Op::GetOrLoad, 4, 1_500, 1_501, Some(1)),
            rec(1, Op::GetOrLoad, 4, 3_000, 3_001, Some(1)),
            rec(1, Op::GetOrLoad, 4, 3_300, 3_301, Some(1)),
            // i2 itself dropped its copy at once: an old version 500 ms later is stale.
            rec(2, Op::GetOrLoad, 4, 1_500, 1_501, Some(1)),
        ];
        let f = run(&h, &faults, &[]);
        assert_eq!(stale_reads(&f), [(2, 4, 1_500), (1, 4, 3_300)]);
    }

    #[test]
    fn latency_under_the_deadline_delays_only_its_link_s_pairs_and_only_by_the_added_time() {
        let ms = Duration::from_millis;
        let slow = |added_rtt: Duration| FaultWindow {
            label: "latency (i1)".into(),
            start_ns: 900 * MS,
            end_ns: 2_000 * MS,
            instance: Some(1),
            added_rtt,
        };
        let w = rec(0, Op::Set, 2, 1_000, 1_001, Some(3));
        // Under the deadline: 4 round trips x 40 ms = 160 ms more, for i1's reads only.
        let under = [slow(ms(40))];
        assert_eq!(visible_by(&w, 1, &under, &[], &bounds()), 1_411 * MS);
        assert_eq!(visible_by(&w, 2, &under, &[], &bounds()), 1_251 * MS);
        assert_eq!(visible_by(&w, 0, &under, &[], &bounds()), 1_251 * MS);
        // Over the deadline: an outage of i1's link (fault end + recovery + stale).
        let over = [slow(ms(150))];
        assert_eq!(visible_by(&w, 1, &over, &[], &bounds()), 4_250 * MS);
        assert_eq!(visible_by(&w, 2, &over, &[], &bounds()), 1_251 * MS);
        let h = [
            rec(0, Op::Set, 2, 10, 11, Some(1)),
            w,
            rec(1, Op::GetOrLoad, 2, 1_400, 1_401, Some(1)),
            rec(1, Op::GetOrLoad, 2, 1_450, 1_451, Some(1)),
            rec(2, Op::GetOrLoad, 2, 1_300, 1_301, Some(1)),
        ];
        let f = run(&h, &under, &[]);
        assert_eq!(stale_reads(&f), [(2, 2, 1_300), (1, 2, 1_450)]);
        let Violation::StaleRead {
            why, fault_delayed, ..
        } = &f.violations[1]
        else {
            unreachable!()
        };
        assert!(fault_delayed);
        assert_eq!(
            why,
            "its end + stale + 160ms for latency (i1) (+40ms round trip)"
        );
    }

    #[test]
    fn a_set_made_while_its_link_was_over_the_deadline_may_land_late_until_its_replay() {
        let over = FaultWindow {
            label: "latency > deadline (i1)".into(),
            start_ns: 1_000 * MS,
            end_ns: 2_000 * MS,
            instance: Some(1),
            added_rtt: Duration::from_millis(150),
        };
        let h = [
            // i1's set times out with its SET still on the way...
            rec(1, Op::Set, 6, 1_100, 1_300, Some(1)),
            // ...and i0 writes the key right after.
            rec(0, Op::Set, 6, 1_301, 1_302, Some(2)),
            // i2 may read i1's version from L2 until i1 replayed its invalidation.
            rec(2, Op::GetOrLoad, 6, 1_800, 1_801, Some(1)),
            rec(2, Op::GetOrLoad, 6, 4_300, 4_301, Some(1)),
            // So may i0, whose own set it overwrote (i1's late PUBLISH drops i0's copy).
            rec(0, Op::GetOrLoad, 6, 1_800, 1_801, Some(1)),
            // A set i1 made before its link slowed down landed in time: no excuse.
            rec(1, Op::Set, 7, 500, 510, Some(1)),
            rec(0, Op::Set, 7, 600, 601, Some(2)),
            rec(2, Op::GetOrLoad, 7, 1_500, 1_501, Some(1)),
        ];
        let f = run(&h, std::slice::from_ref(&over), &[]);
        assert_eq!(stale_reads(&f), [(2, 7, 1_500), (2, 6, 4_300)]);
        assert_eq!(f.coverage.resurfaced, 2);
    }

    #[test]
    fn a_final_read_older_than_the_last_set_is_a_lost_write_and_after_an_invalidation_a_lost_invalidation(
    ) {
        let h = [
            rec(0, Op::Set, 0, 100, 101, Some(1)),
            rec(1, Op::Set, 0, 200, 201, Some(2)),
            rec(0, Op::Invalidate, 1, 100, 101, Some(3)),
            rec(0, Op::FinalRead, 0, 20_000, 20_001, Some(1)),
            rec(1, Op::FinalRead, 0, 20_000, 20_001, Some(2)),
            rec(0, Op::FinalRead, 1, 20_000, 20_001, Some(0)),
            rec(0, Op::FinalRead, 2, 20_000, 20_001, Some(0)),
        ];
        let f = run(&h, &[], &[2, 3, 0]);
        assert_eq!(classes(&f), [Class::LostWrite, Class::LostInvalidation]);
        let Violation::LostWrite { read, latest, .. } = &f.violations[0] else {
            unreachable!()
        };
        assert_eq!(
            (read.instance, read.version, latest.version),
            (0, Some(1), Some(2))
        );
    }

    #[test]
    fn a_call_over_its_latency_bound_is_a_slow_call() {
        let b = bounds().latency;
        let ms = Duration::from_millis;
        assert_eq!(b.bound(Op::GetOrLoad, Duration::ZERO), ms(253));
        assert_eq!(b.bound(Op::Invalidate, Duration::ZERO), ms(350));
        // 4 round trips of 40 ms added; an RTT over the deadline only times out.
        assert_eq!(b.bound(Op::GetOrLoad, ms(40)), ms(413));
        assert_eq!(b.bound(Op::GetOrLoad, ms(150)), ms(253));
        let h = [
            rec(0, Op::GetOrLoad, 0, 0, 240, Some(0)),
            rec(0, Op::Invalidate, 1, 0, 400, Some(1)),
            rec(0, Op::Set, 2, 0, 340, Some(2)),
            // On instance 1 while its link is 40 ms slower: within 413 ms.
            rec(1, Op::GetOrLoad, 0, 1_000, 1_400, Some(0)),
            // The same call on instance 0, whose link is not slowed: slow.
            rec(0, Op::GetOrLoad, 0, 1_000, 1_300, Some(0)),
        ];
        let latency = FaultWindow {
            label: "latency".into(),
            start_ns: 900 * MS,
            end_ns: 1_100 * MS,
            instance: Some(1),
            added_rtt: ms(40),
        };
        let f = run(&h, &[latency], &[]);
        assert_eq!(classes(&f), [Class::SlowCall, Class::SlowCall]);
        let slow: Vec<(u16, Op)> = f
            .violations
            .iter()
            .map(|v| match v {
                Violation::SlowCall { record, .. } => (record.instance, record.op),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(slow, [(0, Op::Invalidate), (0, Op::GetOrLoad)]);
    }

    #[test]
    fn versions_never_written_errors_and_wrong_keys_are_flagged() {
        let mut wrong = rec(1, Op::Get, 0, 10, 11, Some(1));
        wrong.wrong_key = true;
        let mut failed = rec(1, Op::GetOrLoad, 0, 10, 11, None);
        failed.errored = true;
        let h = [
            rec(0, Op::Set, 0, 100, 101, Some(1)),
            // Read before it was written.
            rec(1, Op::GetOrLoad, 0, 10, 11, Some(1)),
            // Never written for key 0.
            rec(1, Op::GetOrLoad, 0, 200, 201, Some(5)),
            wrong,
            failed,
        ];
        let f = run(&h, &[], &[]);
        assert_eq!(
            classes(&f),
            [
                Class::PhantomRead,
                Class::PhantomRead,
                Class::WrongValue,
                Class::Error
            ]
        );
    }

    #[test]
    fn growth_beyond_the_slack_is_flagged_and_flat_noise_is_not() {
        let slack = GrowthSlack::default();
        let sample = |i: u64, rss: u64, tasks: u64| GrowthSample {
            t_ns: i * 1_000 * MS,
            rss_bytes: rss,
            tasks: vec![12, tasks],
        };
        let flat: Vec<_> = (0..40)
            .map(|i| sample(i, (100 << 20) + (i % 3) * (1 << 20), 12 + i % 2))
            .collect();
        assert!(growth(&flat, &slack).is_empty());
        let leaking: Vec<_> = (0..40)
            .map(|i| sample(i, (100 << 20) + i * (4 << 20), 12 + i))
            .collect();
        let v = growth(&leaking, &slack);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(matches!(&v[1], Violation::Growth { what, .. } if what.contains("instance 1")));
    }

    #[test]
    fn recovery_is_measured_from_the_fault_end_and_slow_recovery_flagged() {
        let faults = [
            FaultWindow {
                label: "a".into(),
                start_ns: 0,
                end_ns: 1_000 * MS,
                instance: None,
                added_rtt: Duration::ZERO,
            },
            FaultWindow {
                label: "b".into(),
                start_ns: 10_000 * MS,
                end_ns: 11_000 * MS,
                instance: None,
                added_rtt: Duration::ZERO,
            },
        ];
        let ok = InstanceHealth {
            breaker_closed: true,
            pending: 0,
            subscribed: true,
        };
        let open = InstanceHealth {
            breaker_closed: false,
            ..ok
        };
        let mut health = Vec::new();
        for t in (0..20_000).step_by(250) {
            // After fault a: back at 1.5 s. After fault b: breaker open until 14 s.
            let bad = (t < 1_500) || (10_000..14_000).contains(&t);
            health.push(HealthSample {
                t_ns: t * MS,
                instances: vec![ok, if bad { open } else { ok }],
            });
        }
        let f = check(
            &Input {
                records: &[],
                faults: &faults,
                final_versions: &[],
                growth: &[],
                health: &health,
                pauses: &[],
            },
            &bounds(),
        );
        assert_eq!(f.recoveries.len(), 2);
        assert_eq!(f.recoveries[0].at_least, Duration::from_millis(250));
        assert_eq!(f.recoveries[0].at_most, Some(Duration::from_millis(500)));
        assert_eq!(classes(&f), [Class::SlowRecovery]);
        let Violation::SlowRecovery(r) = &f.violations[0] else {
            unreachable!()
        };
        assert_eq!((r.fault, r.at_least), (1, Duration::from_millis(2_750)));
        assert_eq!(r.unhealthy, "i1 breaker not closed");
        assert_eq!(r.inherited_from, None);
    }

    #[test]
    fn a_fault_begun_before_the_previous_recovery_inherits_it() {
        let w = |start_ms: u64, end_ms: u64| FaultWindow {
            label: format!("{start_ms}"),
            start_ns: start_ms * MS,
            end_ns: end_ms * MS,
            instance: None,
            added_rtt: Duration::ZERO,
        };
        let faults = [w(0, 1_000), w(2_000, 2_000)];
        let ok = InstanceHealth {
            breaker_closed: true,
            pending: 0,
            subscribed: true,
        };
        let bad = InstanceHealth {
            pending: 3,
            subscribed: false,
            ..ok
        };
        let health: Vec<_> = (0..8_000)
            .step_by(250)
            .map(|t| HealthSample {
                t_ns: t * MS,
                instances: vec![if t < 5_000 { bad } else { ok }],
            })
            .collect();
        let f = check(
            &Input {
                records: &[],
                faults: &faults,
                final_versions: &[],
                growth: &[],
                health: &health,
                pauses: &[],
            },
            &bounds(),
        );
        assert_eq!(f.recoveries[0].at_most, None, "not before the next fault");
        assert_eq!(f.recoveries[1].inherited_from, Some(0));
        assert_eq!(
            f.recoveries[1].unhealthy,
            "i0 3 invalidations pending, backplane unsubscribed"
        );
        assert_eq!(classes(&f), [Class::SlowRecovery]);
    }

    #[test]
    fn machine_pauses_excuse_the_time_they_took_and_delay_what_was_due() {
        let pause = FaultWindow {
            label: "machine stall".into(),
            start_ns: 1_000 * MS,
            end_ns: 1_600 * MS,
            instance: None,
            added_rtt: Duration::ZERO,
        };
        let h = [
            // 700 ms, 447 over its 253 ms bound, 600 of them paused: excused.
            rec(0, Op::GetOrLoad, 1, 950, 1_650, Some(0)),
            // 900 ms: 647 over, only 600 paused: slow.
            rec(1, Op::GetOrLoad, 1, 950, 1_850, Some(0)),
            // A write just before the pause: due 250 ms after it, not after the write.
            rec(0, Op::Set, 2, 900, 910, Some(5)),
            rec(1, Op::GetOrLoad, 2, 1_700, 1_701, Some(0)),
            rec(2, Op::GetOrLoad, 2, 1_900, 1_901, Some(0)),
        ];
        let f = check(
            &Input {
                records: &h,
                faults: &[],
                final_versions: &[],
                growth: &[],
                health: &[],
                pauses: std::slice::from_ref(&pause),
            },
            &bounds(),
        );
        assert_eq!(f.excused.len(), 1);
        assert_eq!(f.excused[0].record.instance, 0);
        assert_eq!(f.excused[0].paused, Duration::from_millis(600));
        assert_eq!(classes(&f), [Class::StaleRead, Class::SlowCall]);
        let Violation::StaleRead { read, .. } = &f.violations[0] else {
            unreachable!()
        };
        assert_eq!(
            read.instance, 2,
            "the read at 1.7 s was within the stale bound of the pause"
        );
    }

    #[test]
    fn machine_pauses_are_not_counted_against_recovery() {
        let fault = FaultWindow {
            label: "cut".into(),
            start_ns: 1_000 * MS,
            end_ns: 1_000 * MS,
            instance: None,
            added_rtt: Duration::ZERO,
        };
        let pause = FaultWindow {
            label: "machine stall".into(),
            start_ns: 1_200 * MS,
            end_ns: 3_200 * MS,
            instance: None,
            added_rtt: Duration::ZERO,
        };
        let ok = InstanceHealth {
            breaker_closed: true,
            pending: 0,
            subscribed: true,
        };
        let bad = InstanceHealth {
            subscribed: false,
            ..ok
        };
        // Unhealthy until 3.5 s: 2.5 s after the fault, 2 s of which the machine was stalled.
        let health: Vec<_> = (0..6_000)
            .step_by(250)
            .map(|t| HealthSample {
                t_ns: t * MS,
                instances: vec![if (1_000..3_500).contains(&t) { bad } else { ok }],
            })
            .collect();
        let f = check(
            &Input {
                records: &[],
                faults: std::slice::from_ref(&fault),
                final_versions: &[],
                growth: &[],
                health: &health,
                pauses: std::slice::from_ref(&pause),
            },
            &bounds(),
        );
        assert_eq!(f.recoveries[0].at_least, Duration::from_millis(2_250));
        assert_eq!(f.recoveries[0].paused, Duration::from_millis(2_000));
        assert!(f.violations.is_empty(), "{:?}", f.violations);
    }
}
