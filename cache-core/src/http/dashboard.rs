//! The live dashboard: `GET /cache/dashboard` (one self-contained HTML page, embedded in the
//! binary) and `GET /cache/dashboard/data` (the JSON it polls about once a second).
//!
//! The data is this instance's report (the [`Stats`] snapshot, the [`Rates`] over 1, 5 and 15
//! minutes and the recommendations, taken together), its [`history`](Cache::history) (with
//! `?since=T_MS`, only the points after `T_MS`: the page asks for the new ones only), and one
//! row per instance reporting under the prefix. Other instances' reports are read from Redis
//! (the index of live instances, [`admin::instances_key`](crate::admin::instances_key), then a
//! GET per report; a SCAN for reports only when there is no index, as with older releases) in
//! the background, at most once per [`REPORTS_EVERY`] and only while the dashboard is polled; a
//! request never waits for them.

use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admin::{InstanceReport, Recommendation};
use crate::breaker::BreakerState;
use crate::stats::{Rates, SeriesPoint};
use crate::{Cache, Stats};

/// The page: styles, script and charts inline (no CDN, no web font), see `dashboard.html`.
const PAGE: &str = include_str!("dashboard.html");

/// Everything the page needs is inline; nothing else may load, and its only request is for its
/// data. Inline script and style are allowed (the page is ours; every value it shows is escaped
/// or set as text).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// How often other instances' reports are read again (instances publish theirs every 5 s by
/// default, `CACHE_STATS_REPORT_SECS`).
const REPORTS_EVERY: Duration = Duration::from_secs(5);

/// At most this many instances are listed.
const MAX_INSTANCES: usize = 200;

/// The dashboard's routes, with their own state: the cache and the other instances' reports as
/// last read.
pub(super) fn routes(cache: Cache) -> Router {
    let state = Arc::new(Dashboard {
        cache,
        reports: Mutex::new(Reports::default()),
    });
    Router::new()
        .route("/cache/dashboard", get(page))
        .route("/cache/dashboard/data", get(data))
        .with_state(state)
}

struct Dashboard {
    cache: Cache,
    reports: Mutex<Reports>,
}

#[derive(Default)]
struct Reports {
    /// When the last read started.
    started: Option<Instant>,
    reading: bool,
    list: Vec<InstanceReport>,
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

/// The body of `GET /cache/dashboard/data`.
#[derive(Serialize)]
struct DashboardData {
    stats: Stats,
    rates: Rates,
    history: Vec<SeriesPoint>,
    instances: Vec<InstanceRow>,
    recommendations: Vec<Recommendation>,
}

/// One instance reporting under the prefix.
#[derive(Serialize)]
struct InstanceRow {
    instance: String,
    hostname: String,
    pid: u32,
    /// How old its report is (0 for this instance: its figures are live).
    age_ms: u64,
    this: bool,
    /// Over the last minute; `None` in reports of releases without rates.
    requests_per_sec: Option<f64>,
    /// Over the last minute; `None` without lookups (or rates).
    hit_rate: Option<f64>,
    l1_bytes: u64,
    breaker: Option<BreakerState>,
    backplane_subscribed: Option<bool>,
}

impl InstanceRow {
    fn new(r: &InstanceReport, this: bool, now_ms: u64) -> Self {
        let minute = r.rates.as_ref().map(|r| &r.last_1m);
        InstanceRow {
            instance: r.instance.clone(),
            hostname: r.hostname.clone(),
            pid: r.pid,
            age_ms: if this {
                0
            } else {
                now_ms.saturating_sub(r.timestamp_ms)
            },
            this,
            requests_per_sec: minute.map(|m| m.requests_per_sec),
            hit_rate: minute
                .filter(|m| m.total.lookups > 0)
                .map(|m| m.total.hit_rate),
            l1_bytes: r.stats.total.l1.bytes,
            breaker: r.stats.breaker.as_ref().map(|b| b.state),
            backplane_subscribed: r.stats.backplane.as_ref().map(|b| b.subscribed),
        }
    }
}

/// `?since=T_MS`: only the history points after `T_MS` (the page asks for the new ones only).
fn since(uri: &Uri) -> Option<u64> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="))?
        .parse()
        .ok()
}

async fn data(State(d): State<Arc<Dashboard>>, uri: Uri) -> Response {
    // This instance's snapshot, rates and recommendations, as it publishes them.
    let report = crate::admin::build(&d.cache.inner);
    d.read_reports_if_due();
    let now_ms = crate::clock::unix_ms();
    let mut instances = vec![InstanceRow::new(&report, true, now_ms)];
    {
        let reports = d.reports.lock().unwrap_or_else(|p| p.into_inner());
        instances.extend(
            reports
                .list
                .iter()
                .filter(|r| r.instance != report.instance)
                .map(|r| InstanceRow::new(r, false, now_ms)),
        );
    }
    let rates = match report.rates {
        Some(r) => r,
        None => d.cache.rates(),
    };
    let mut history = d.cache.history();
    if let Some(after) = since(&uri) {
        history.retain(|p| p.t_ms > after);
    }
    let body = DashboardData {
        stats: report.stats,
        rates,
        history,
        instances,
        recommendations: report.recommendations,
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

impl Dashboard {
    /// Starts reading the other instances' reports in the background when the last read is older
    /// than [`REPORTS_EVERY`] and none is under way.
    fn read_reports_if_due(self: &Arc<Self>) {
        if self.cache.inner.l2.is_none() {
            return;
        }
        {
            let mut r = self.reports.lock().unwrap_or_else(|p| p.into_inner());
            if r.reading || r.started.is_some_and(|t| t.elapsed() < REPORTS_EVERY) {
                return;
            }
            r.reading = true;
            r.started = Some(Instant::now());
        }
        let d = self.clone();
        tokio::spawn(async move {
            let list = d.read_reports().await;
            let mut r = d.reports.lock().unwrap_or_else(|p| p.into_inner());
            r.reading = false;
            // A failed read keeps the last list.
            if let Some(list) = list {
                r.list = list;
            }
        });
    }

    /// Every report under the prefix, sorted by host and pid; `None` if they could not be listed.
    async fn read_reports(&self) -> Option<Vec<InstanceReport>> {
        let l2 = self.cache.inner.l2.as_ref()?;
        let prefix = &self.cache.inner.prefix;
        let since = crate::clock::unix_ms()
            .saturating_sub(crate::clock::millis(crate::admin::INSTANCE_INDEX_KEEP));
        let listed = match l2
            .members_since(&crate::admin::instances_key(prefix), since, MAX_INSTANCES)
            .await
        {
            Ok(ids) if !ids.is_empty() => Ok(ids
                .iter()
                .map(|id| crate::admin::report_key(prefix, id))
                .collect()),
            // No index (instances of older releases only): scan for their reports.
            Ok(_) => {
                l2.keys_matching(&crate::admin::stats_key_pattern(prefix), MAX_INSTANCES)
                    .await
            }
            Err(e) => Err(e),
        };
        let keys: Vec<String> = match listed {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(error = %e, "dashboard: instance reports not listed");
                return None;
            }
        };
        let mut list = Vec::with_capacity(keys.len());
        for key in keys {
            match l2.get(&key).await {
                Ok(Some(bytes)) => match serde_json::from_slice::<InstanceReport>(&bytes) {
                    Ok(r) => list.push(r),
                    Err(e) => tracing::debug!(error = %e, "dashboard: unreadable instance report"),
                },
                // Expired between SCAN and GET: that instance stopped.
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "dashboard: instance report not read");
                    return None;
                }
            }
        }
        list.sort_by(|a, b| (&a.hostname, a.pid).cmp(&(&b.hostname, b.pid)));
        Some(list)
    }
}
