//! Rates, not only totals: the cache's counters read once a second by the housekeeper, kept in
//! a bounded ring, so that [`Cache::stats_over`](crate::Cache::stats_over) can give the figures
//! of the last minutes and [`Cache::history`](crate::Cache::history) one point per second for a
//! chart.
//!
//! Memory is bounded whatever the traffic: [`SERIES_LEN`] chart points (~130 bytes each, ~115
//! KiB) and [`READINGS_LEN`] full readings of the counters of every kind used so far (one every
//! [`READING_EVERY`]; ~1.3 KiB per kind plus 16 bytes per non-empty latency bucket, a pointer for
//! a kind never used), about 150 KiB per busy kind. A window's start is the newest reading at
//! least as old as asked, so its length is rounded up to [`READING_EVERY`] (its
//! [`WindowStats::seconds`](crate::stats::WindowStats::seconds) says what it covers).
//!
//! The sampler also adds up what the cache saved: each second, every kind's lookups answered
//! without the loader times its mean loader time (`saved_us`), off the hot path.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::breaker::BreakerState;
use crate::clock::unix_ms;
use crate::stats::{KindStats, Raw, SeriesPoint, TierStats};

/// Chart points kept (one per second: 15 minutes).
pub(crate) const SERIES_LEN: usize = 900;
/// How often a full reading is kept for windows.
pub(crate) const READING_EVERY: Duration = Duration::from_secs(10);
/// Full readings kept (15 minutes and one more, so that a 15-minute window is whole).
const READINGS_LEN: usize = 92;
/// How often the housekeeper samples.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Every kind's counters at one moment (by kind id), and the state around them.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    pub(crate) at: Instant,
    pub(crate) t_ms: u64,
    /// By kind id; `None` for a kind with nothing counted yet (most caches leave several of the
    /// built-in kinds unused: a pointer, not ~1.3 KiB of zeros, in each kept reading).
    pub(crate) kinds: Vec<Option<Box<Raw>>>,
    pub(crate) gauges: Gauges,
}

/// What a chart point shows that is not a counter.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gauges {
    pub(crate) l1_bytes: u64,
    pub(crate) l1_max_bytes: u64,
    pub(crate) breaker: Option<BreakerState>,
    pub(crate) backplane_subscribed: Option<bool>,
    pub(crate) pending_invalidations: u64,
    /// Times the breaker opened since start (a window's figure is a difference).
    pub(crate) breaker_opens: u64,
}

impl Reading {
    /// Reads `recorders` (by kind id) now.
    pub(crate) fn take<'a>(
        recorders: impl Iterator<Item = (usize, &'a KindStats)>,
        gauges: Gauges,
    ) -> Self {
        let mut kinds: Vec<Option<Box<Raw>>> = Vec::new();
        let zero = Raw::default();
        for (id, r) in recorders {
            if kinds.len() <= id {
                kinds.resize(id + 1, None);
            }
            let raw = r.raw();
            kinds[id] = (raw != zero).then(|| Box::new(raw));
        }
        Reading {
            at: Instant::now(),
            t_ms: unix_ms(),
            kinds,
            gauges,
        }
    }

    /// Per kind id: what was counted since `earlier`.
    pub(crate) fn since(&self, earlier: &Reading) -> Vec<Raw> {
        self.kinds
            .iter()
            .enumerate()
            .map(
                |(i, r)| match (r, earlier.kinds.get(i).and_then(Option::as_ref)) {
                    (Some(r), Some(e)) => r.since(e),
                    (Some(r), None) => (**r).clone(),
                    (None, _) => Raw::default(),
                },
            )
            .collect()
    }

    /// Kind `id`'s counters (zeros for a kind never used).
    #[cfg(test)]
    fn kind(&self, id: usize) -> Raw {
        self.kinds
            .get(id)
            .and_then(Option::as_ref)
            .map_or_else(Raw::default, |r| (**r).clone())
    }
}

#[derive(Default)]
struct State {
    /// The last sample (the start of the next chart point).
    last: Option<Reading>,
    readings: VecDeque<Reading>,
    series: VecDeque<SeriesPoint>,
}

/// The ring (see the module documentation).
pub(crate) struct History {
    state: Mutex<State>,
}

impl History {
    /// A history starting from `first` (the counters when the cache was built).
    pub(crate) fn new(first: Reading) -> Self {
        let mut readings = VecDeque::with_capacity(READINGS_LEN);
        readings.push_back(first.clone());
        History {
            state: Mutex::new(State {
                last: Some(first),
                readings,
                series: VecDeque::with_capacity(SERIES_LEN),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a sample is due.
    pub(crate) fn due(&self) -> bool {
        self.state()
            .last
            .as_ref()
            .is_none_or(|l| l.at.elapsed() >= SAMPLE_EVERY)
    }

    /// Records `now` (a fresh reading): a chart point made by `point` from what was counted since
    /// the last sample (per kind id) and the seconds elapsed, and, every [`READING_EVERY`], a
    /// reading for windows.
    pub(crate) fn record(
        &self,
        now: Reading,
        point: impl FnOnce(&[Raw], f64, &Gauges) -> SeriesPoint,
    ) {
        let mut st = self.state();
        if let Some(last) = &st.last {
            let secs = now.at.saturating_duration_since(last.at).as_secs_f64();
            if secs > 0.0 {
                let mut p = point(&now.since(last), secs, &now.gauges);
                p.t_ms = now.t_ms;
                if st.series.len() == SERIES_LEN {
                    st.series.pop_front();
                }
                st.series.push_back(p);
            }
        }
        let keep = st
            .readings
            .back()
            .is_none_or(|r| now.at.saturating_duration_since(r.at) >= READING_EVERY);
        if keep {
            if st.readings.len() == READINGS_LEN {
                st.readings.pop_front();
            }
            st.readings.push_back(now.clone());
        }
        st.last = Some(now);
    }

    /// The reading a window of `len` ending now starts at: the newest at least `len` old, or the
    /// oldest kept.
    pub(crate) fn start_of(&self, len: Duration) -> Option<Reading> {
        let st = self.state();
        let now = Instant::now();
        st.readings
            .iter()
            .rev()
            .find(|r| now.saturating_duration_since(r.at) >= len)
            .or_else(|| st.readings.front())
            .cloned()
    }

    /// The chart points, oldest first.
    pub(crate) fn series(&self) -> Vec<SeriesPoint> {
        self.state().series.iter().cloned().collect()
    }
}

/// A chart point from what all kinds counted in `secs` seconds (summed in `total`).
pub(crate) fn point(total: &TierStats, secs: f64, g: &Gauges) -> SeriesPoint {
    let rate = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    let l2_reads = total.l2.hits + total.l2.misses;
    let read = &total.l2.read_latency;
    SeriesPoint {
        t_ms: 0,
        requests_per_sec: total.lookups as f64 / secs,
        hit_rate: (total.lookups > 0).then_some(total.hit_rate),
        l1_hit_rate: rate(total.l1.hits, total.l1.hits + total.l1.misses),
        l2_hit_rate: rate(total.l2.hits, l2_reads),
        l2_read_p50_us: (read.count > 0).then_some(read.p50_us),
        l2_read_p99_us: (read.count > 0).then_some(read.p99_us),
        loader_calls_per_sec: total.loader.calls as f64 / secs,
        l1_bytes: g.l1_bytes,
        l1_max_bytes: g.l1_max_bytes,
        breaker: g.breaker,
        backplane_subscribed: g.backplane_subscribed,
        pending_invalidations: g.pending_invalidations,
    }
}

/// Adds to each kind's `saved_us` what it saved in `delta` (counted since the last sample): its
/// lookups answered without the loader times its mean loader time so far.
pub(crate) fn add_savings<'a>(
    delta: &[Raw],
    totals: &Reading,
    recorders: impl Iterator<Item = (usize, &'a KindStats)>,
) {
    for (id, r) in recorders {
        let (Some(d), Some(t)) = (delta.get(id), totals.kinds.get(id).and_then(Option::as_ref))
        else {
            continue;
        };
        let loads = &t.loader_latency;
        if loads.count == 0 {
            continue;
        }
        let mean_us = loads.sum_ns as f64 / loads.count as f64 / 1_000.0;
        let saved = (d.answered() as f64 * mean_us).round();
        if saved >= 1.0 {
            KindStats::add(&r.saved_us, saved as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::MissReason;

    fn reading(kind: &KindStats, at: Instant) -> Reading {
        let mut r = Reading::take([(0, kind)].into_iter(), Gauges::default());
        r.at = at;
        r
    }

    #[test]
    fn windows_start_at_the_newest_reading_old_enough() {
        let k = KindStats::default();
        let t0 = Instant::now() - Duration::from_secs(120);
        let h = History::new(reading(&k, t0));
        for s in 1..=12u64 {
            KindStats::inc(&k.l1_hits);
            h.record(
                reading(&k, t0 + Duration::from_secs(s * 10)),
                |d, secs, g| point(&TierStats::from_raw(&d[0], None), secs, g),
            );
        }
        let start = h.start_of(Duration::from_secs(60)).expect("readings");
        let age = start.at.elapsed().as_secs_f64();
        assert!((60.0..70.0).contains(&age), "{age}");
        // 12 hits since t0, 6 since the start of the 1-minute window (each reading 10 s apart).
        assert_eq!(start.kind(0).l1_hits, 6);
        // Older than everything: the oldest reading.
        let oldest = h.start_of(Duration::from_secs(3600)).expect("readings");
        assert_eq!(oldest.kind(0).l1_hits, 0);
        assert!(
            oldest.kinds[0].is_none(),
            "nothing counted: no copy of zeros kept"
        );
    }

    #[test]
    fn chart_points_are_per_second_rates_and_the_ring_is_bounded() {
        let k = KindStats::default();
        let t0 = Instant::now() - Duration::from_secs(2_000);
        let h = History::new(reading(&k, t0));
        for s in 1..=(SERIES_LEN as u64 + 10) {
            for _ in 0..3 {
                KindStats::inc(&k.l1_hits);
            }
            k.l1_miss(MissReason::Absent);
            KindStats::inc(&k.loader_calls);
            h.record(reading(&k, t0 + Duration::from_secs(s)), |d, secs, g| {
                point(&TierStats::from_raw(&d[0], None), secs, g)
            });
        }
        let series = h.series();
        assert_eq!(series.len(), SERIES_LEN);
        let p = series.last().unwrap();
        assert!((p.requests_per_sec - 4.0).abs() < 1e-9, "{p:?}");
        assert_eq!(p.hit_rate, Some(0.75));
        assert_eq!(p.l1_hit_rate, Some(0.75));
        assert_eq!(p.l2_hit_rate, None, "no L2 reads");
        assert!((p.loader_calls_per_sec - 1.0).abs() < 1e-9);
        assert!(h.state().readings.len() <= READINGS_LEN);
    }

    #[test]
    fn savings_are_answered_lookups_times_the_mean_loader_time() {
        let k = KindStats::default();
        k.loader_latency.record(Duration::from_millis(40));
        k.loader_latency.record(Duration::from_millis(60));
        let before = k.raw();
        for _ in 0..10 {
            KindStats::inc(&k.l1_hits);
        }
        let after = Reading::take([(0, &k)].into_iter(), Gauges::default());
        add_savings(
            &[after.kind(0).since(&before)],
            &after,
            [(0, &k)].into_iter(),
        );
        // 10 answered lookups × 50 ms.
        assert_eq!(k.raw().saved_us, 500_000);
    }
}
