//! Provenance: where a read found its value (L1, L2, the loader, a stale fallback) and how old
//! the value is.
//!
//! The read path records what it finds into a task-local slot that exists only while a traced
//! call runs ([`Cache::get_or_load_traced`](crate::Cache::get_or_load_traced), the `_traced` companions of `#[cached]` functions);
//! outside one, recording is a failed task-local lookup and nothing else. A load shared by several
//! callers (single-flight) records into its own slot, whose result travels with the load's outcome
//! to every caller of the flight.

use futures::FutureExt as _;
use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use crate::clock::unix_ms;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// This instance's memory (L1).
    L1,
    /// Redis (L2): read by this call, or by the concurrent call of the same key it waited for.
    L2,
    /// Neither tier had it: the loader (the function's body) ran, in this call or in the
    /// concurrent call it waited for. Also a call that bypassed the cache.
    Loader,
    /// The loader failed and a value past its freshness was served instead (fail-safe grace,
    /// see [`CacheBuilder::fail_safe_grace`](crate::CacheBuilder::fail_safe_grace)).
    Stale,
}

impl Source {
    /// Whether the value was served from the cache (either tier, fresh or stale) rather than
    /// produced by the loader.
    pub fn is_cached(self) -> bool {
        !matches!(self, Source::Loader)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::L1 => "L1",
            Source::L2 => "L2",
            Source::Loader => "loader",
            Source::Stale => "stale",
        })
    }
}

/// A value with where it came from and its age.
///
/// Returned by [`Cache::get_or_load_traced`](crate::Cache::get_or_load_traced) (with `V = Arc<T>`) and by the `{name}_traced`
/// companions that `#[cached(..., companions(traced))]` generates (with `V` the function's return
/// type).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lookup<V> {
    /// The value.
    pub value: V,
    /// Where it came from.
    pub source: Source,
    /// How long ago it was produced by a loader (on any instance), per the wall clocks of the
    /// instance that produced it and of this one. About zero when the loader ran for this call
    /// (the time since it returned).
    pub age: Duration,
}

impl<V> Lookup<V> {
    /// Whether the value was served from the cache rather than produced by the loader.
    pub fn is_cached(&self) -> bool {
        self.source.is_cached()
    }

    /// The value, without its provenance.
    pub fn into_value(self) -> V {
        self.value
    }

    /// Maps the value, keeping its provenance.
    pub fn map<U>(self, f: impl FnOnce(V) -> U) -> Lookup<U> {
        Lookup {
            value: f(self.value),
            source: self.source,
            age: self.age,
        }
    }
}

/// What one read found, recorded by the read path.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Trace {
    /// The source of the value returned, and when that value was produced (Unix ms).
    found: Option<(Source, u64)>,
    /// When the stale value at hand (if any) was produced: served if the loader fails.
    stale_created_ms: Option<u64>,
}

impl Trace {
    /// The provenance of `value`; a call that recorded nothing ran its loader (or no cache).
    pub(crate) fn lookup<V>(self, value: V) -> Lookup<V> {
        let now = unix_ms();
        let (source, created) = self.found.unwrap_or((Source::Loader, now));
        Lookup {
            value,
            source,
            age: Duration::from_millis(now.saturating_sub(created)),
        }
    }
}

tokio::task_local! {
    static SLOT: Cell<Trace>;
}

fn update(f: impl FnOnce(&mut Trace)) {
    let _ = SLOT.try_with(|slot| {
        let mut t = slot.get();
        f(&mut t);
        slot.set(t);
    });
}

/// Records that the value returned comes from `source`, produced at `created_ms`.
pub(crate) fn note(source: Source, created_ms: u64) {
    update(|t| t.found = Some((source, created_ms)));
}

/// Records that the loader produced the value returned, now.
pub(crate) fn note_loaded() {
    note(Source::Loader, unix_ms());
}

/// Records a stale value at hand (the first one seen is the one a failed load serves).
pub(crate) fn note_stale_candidate(created_ms: u64) {
    update(|t| {
        t.stale_created_ms.get_or_insert(created_ms);
    });
}

/// Records that a stale value was served after the loader failed.
pub(crate) fn note_stale_served() {
    update(|t| t.found = Some((Source::Stale, t.stale_created_ms.unwrap_or_else(unix_ms))));
}

/// Records the outcome of a load this call led or joined. A stale value from this caller's own
/// L1 lookup (made outside the load) takes precedence over one the load found in L2, as in the
/// load itself.
pub(crate) fn joined(led: Trace) {
    update(|t| {
        let mut found = led.found;
        if let (Some((Source::Stale, created)), Some(own)) = (&mut found, t.stale_created_ms) {
            *created = own;
        }
        t.found = found;
    });
}

// These wrappers are plain functions returning combinators rather than `async fn`s: an `async fn`
// keeps its future argument twice in its state (rust-lang/rust#62958), and they nest once per
// `#[cached]` call, so the futures of cached functions calling cached functions would grow
// exponentially (and overflow the stack in debug builds).

/// Runs `fut` with a slot of its own and returns what it recorded.
pub(crate) fn capture<F: Future>(fut: F) -> impl Future<Output = (F::Output, Trace)> {
    // The closure runs inside the scope, as the last poll of `fut` returns.
    SLOT.scope(
        Cell::new(Trace::default()),
        fut.map(|out| (out, SLOT.try_with(Cell::get).unwrap_or_default())),
    )
}

/// Runs `fut` so that what it records is discarded (a loader's own cache calls).
pub(crate) fn isolate<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    SLOT.scope(Cell::new(Trace::default()), fut)
}

/// Runs `fut` (one cached call) and returns its output with its provenance.
pub(crate) fn traced<F: Future>(fut: F) -> impl Future<Output = Lookup<F::Output>> {
    capture(fut).map(|(out, trace)| trace.lookup(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_recorded_reads_as_the_loader_with_age_zero() {
        let l = traced(async { 7 }).await;
        assert_eq!(
            (l.value, l.source, l.age),
            (7, Source::Loader, Duration::ZERO)
        );
    }

    #[tokio::test]
    async fn the_last_note_wins_and_age_comes_from_created_at() {
        let l = traced(async {
            note(Source::L2, unix_ms() - 5_000);
            note(Source::L1, unix_ms() - 2_000);
        })
        .await;
        assert_eq!(l.source, Source::L1);
        assert!((2_000..3_000).contains(&l.age.as_millis()), "{:?}", l.age);
    }

    #[tokio::test]
    async fn notes_inside_isolate_do_not_leak() {
        let l = traced(async {
            isolate(async { note(Source::L1, 0) }).await;
        })
        .await;
        assert_eq!(l.source, Source::Loader);
    }

    #[tokio::test]
    async fn a_joined_stale_load_takes_the_callers_own_stale_candidate() {
        let l = traced(async {
            note_stale_candidate(unix_ms() - 10_000);
            let ((), led) = capture(async {
                note_stale_candidate(unix_ms() - 1_000);
                note_stale_served();
            })
            .await;
            joined(led);
        })
        .await;
        assert_eq!(l.source, Source::Stale);
        assert!(l.age >= Duration::from_secs(10), "{:?}", l.age);
    }

    #[test]
    fn recording_outside_a_traced_call_is_a_no_op() {
        note(Source::L1, 0);
        note_stale_served();
    }
}
