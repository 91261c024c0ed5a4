//! The history of a soak run: one record per cache call, timed on one monotonic clock shared by
//! every thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The run's clock: nanoseconds since the run began, from one `Instant` (CLOCK_MONOTONIC), so
/// times taken on different threads and runtimes compare directly.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the run began.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// The instant `ns` after the run began.
    pub fn instant(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }
}

/// What a recorded call was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `get_or_load_with` (the loader reads the origin).
    GetOrLoad,
    /// `get` (may return `None`).
    Get,
    /// `set_with` of a value carrying the version the origin was just bumped to.
    Set,
    /// `invalidate` after bumping the origin.
    Invalidate,
    /// `invalidate_tag` after bumping every key of the tag (one record per key).
    InvalidateTag,
    /// A `get_or_load_with` of the final check, after the faults and the workload stopped.
    FinalRead,
    /// A `get_or_load` of a read-only bulk key (an L1-only kind, never written; there to make
    /// L1 large).
    BulkLoad,
}

impl Op {
    /// Every kind of call, in report order.
    pub const ALL: [Op; 7] = [
        Op::GetOrLoad,
        Op::Get,
        Op::Set,
        Op::Invalidate,
        Op::InvalidateTag,
        Op::FinalRead,
        Op::BulkLoad,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::GetOrLoad => "get_or_load",
            Op::Get => "get",
            Op::Set => "set_with",
            Op::Invalidate => "invalidate",
            Op::InvalidateTag => "invalidate_tag",
            Op::FinalRead => "final get_or_load",
            Op::BulkLoad => "bulk get_or_load",
        }
    }

    /// Whether the call returns a value.
    pub fn is_read(self) -> bool {
        matches!(self, Op::GetOrLoad | Op::Get | Op::FinalRead | Op::BulkLoad)
    }

    /// Whether the call changes the origin (and must change what the cache returns).
    pub fn is_write(self) -> bool {
        matches!(self, Op::Set | Op::Invalidate | Op::InvalidateTag)
    }
}

/// Where a `get_or_load` found its value (from `get_or_load_traced`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// This instance's L1.
    L1,
    /// Redis.
    L2,
    /// The loader (the origin).
    Loader,
    /// A fail-safe stale value, or a source this harness does not know.
    Other,
}

impl Source {
    /// From the cache's provenance.
    pub fn of(s: cache_core::Source) -> Self {
        match s {
            cache_core::Source::L1 => Source::L1,
            cache_core::Source::L2 => Source::L2,
            cache_core::Source::Loader => Source::Loader,
            _ => Source::Other,
        }
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Source::L1 => "L1",
            Source::L2 => "L2",
            Source::Loader => "loader",
            Source::Other => "other",
        }
    }
}

/// One call (or, for `invalidate_tag`, its effect on one key of the tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Which cache instance made the call.
    pub instance: u16,
    /// What the call was.
    pub op: Op,
    /// `false` for the second and later records of one `invalidate_tag` call (one per key), so
    /// that calls are counted and timed once.
    pub primary: bool,
    /// The call returned an error (a loader error: the origin never fails, so never expected).
    pub errored: bool,
    /// The value returned belongs to another key.
    pub wrong_key: bool,
    /// Where a `get_or_load` found its value (`None` for other calls).
    pub source: Option<Source>,
    /// The key (an index into the key space).
    pub key: u32,
    /// When the call began, in ns since the run began.
    pub start_ns: u64,
    /// When it returned.
    pub end_ns: u64,
    /// Writes: the key's version after the write. Reads: the version of the value returned
    /// (`None`: `get` found nothing, or the call failed).
    pub version: Option<u64>,
}

impl Record {
    /// How long the call took.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_ns.saturating_sub(self.start_ns))
    }
}

/// Records per chunk of a [`Recorder`]: 64 Ki records, ~3 MiB, allocated once and never moved.
const CHUNK: usize = 1 << 16;

/// One task's history, append-only in fixed-size chunks (a growing `Vec` would copy itself and
/// leave freed blocks behind, which would blur the RSS growth check). `bytes` counts what was
/// written across all recorders, so the growth check can subtract the history's own memory.
pub struct Recorder {
    chunks: Vec<Vec<Record>>,
    bytes: Arc<AtomicU64>,
}

impl Recorder {
    /// An empty recorder adding to the shared byte counter `bytes`.
    pub fn new(bytes: Arc<AtomicU64>) -> Self {
        Self {
            chunks: Vec::new(),
            bytes,
        }
    }

    /// Appends `r`.
    pub fn push(&mut self, r: Record) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(r),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(r);
                self.chunks.push(c);
            }
        }
        self.bytes
            .fetch_add(std::mem::size_of::<Record>() as u64, Ordering::Relaxed);
    }

    /// Every record, in the order pushed.
    pub fn into_records(self) -> Vec<Record> {
        self.chunks.into_iter().flatten().collect()
    }
}
