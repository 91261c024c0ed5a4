//! The live dashboard (`GET /cache/dashboard`, cache-core feature `http`) checked in a real
//! browser: a headless Chromium (Debian's `chromium`) driven over the DevTools protocol
//! (tests/harness/browser.rs).
//!
//! - `the_dashboard_shows_the_live_cache_of_the_example_app`: the `api_endpoints` example's app
//!   on a real redis-server, under generated traffic, with a second instance reporting under its
//!   prefix. The page loads without a console error, its charts have data points, and once the
//!   traffic stopped every figure it shows from the snapshot (`data-stat`) is the one
//!   `Cache::stats()` gives. Screenshots at 1280×800 and at phone width.
//! - `the_dashboard_draws_gaps_outages_and_disconnects_from_a_fixture`: the same page on a
//!   hand-written payload (the spec's `DashboardData`, with gaps, an open breaker, a lost
//!   backplane, recommendations and three instances), then with its data endpoint failing: a
//!   visible "disconnected" state, no script error, and back to live when the endpoint is.
//!
//! - `the_data_endpoint_answers_the_specs_json_and_lists_every_instance_of_the_prefix`: the JSON
//!   itself and the page's headers, without a browser.
//!
//! Screenshots go to `<target dir>/dashboard/`. Without chromium the browser tests fail (never
//! skip).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cache_core::Cache;
use cache_tests::browser::{self, png_size, Browser, Page, Viewport};
use cache_tests::{unique_prefix, within, RedisServer};
use serde_json::{json, Value};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the screenshots go: `<target dir>/dashboard` (the target dir is the parent of
/// `CARGO_TARGET_TMPDIR`, so `CARGO_TARGET_DIR` is honoured).
fn shots_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("dashboard")
}

/// Every figure of the page that names its source: `[data-stat]` (into `stats`) and
/// `[data-rate]` (into `rates`), with how it is shown.
const FIGURES: &str = r#"Array.from(document.querySelectorAll('[data-stat],[data-rate]')).map(e => ({
    base: e.hasAttribute('data-stat') ? 'stats' : 'rates',
    ptr: e.getAttribute('data-stat') ?? e.getAttribute('data-rate'),
    format: e.dataset.format || 'text',
    text: e.textContent,
    zero: e.dataset.zero ?? null,
    yes: e.dataset.yes ?? null,
    no: e.dataset.no ?? null,
    den: e.dataset.denominator ?? null,
}))"#;

/// The page's horizontal overflow in CSS pixels (0: nothing wider than the viewport).
const OVERFLOW: &str = "document.documentElement.scrollWidth - window.innerWidth";

const DASH: &str = "—";

/// A shown number and the rounding its display allows: `"12.3 MiB"` → (12.3 × 2²⁰, 0.05 × 2²⁰).
fn parse_shown(format: &str, text: &str) -> Result<(f64, f64), String> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',' || c == '-'))
        .unwrap_or(text.len());
    let (mantissa, mut rest) = text.split_at(end);
    let mut exp = 0i32;
    // `toPrecision` writes tiny amounts as `1.00e-7`.
    if let Some(r) = rest.strip_prefix('e') {
        let n = r
            .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '+'))
            .unwrap_or(r.len());
        exp = r[..n]
            .parse()
            .map_err(|_| format!("bad exponent in {text:?}"))?;
        rest = &r[n..];
    }
    let clean = mantissa.replace(',', "");
    let x: f64 = clean
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    let decimals = clean.split('.').nth(1).map_or(0, str::len) as i32;
    let unit = rest.trim();
    const KIB: f64 = 1024.0;
    let mult = match (format, unit) {
        ("count" | "money", "") => 1.0,
        ("count", "M") => 1e6,
        ("count", "G") => 1e9,
        ("count", "T") => 1e12,
        ("percent", "%") => 0.01,
        ("rate", "/s") => 1.0,
        ("rate", "k/s") => 1e3,
        ("rate", "M/s") => 1e6,
        ("bytes", "B") => 1.0,
        ("bytes", "KiB") => KIB,
        ("bytes", "MiB") => KIB * KIB,
        ("bytes", "GiB") => KIB * KIB * KIB,
        ("bytes", "TiB") => KIB * KIB * KIB * KIB,
        ("us", "µs") | ("ms", "ms") | ("secs", "s") => 1.0,
        ("us", "ms") | ("ms", "s") => 1e3,
        ("us", "s") => 1e6,
        ("secs", "min") => 60.0,
        ("secs", "h") => 3600.0,
        ("secs", "d") => 86400.0,
        ("ms", "min") => 60e3,
        ("ms", "h") => 3600e3,
        ("ms", "d") => 86400e3,
        _ => {
            return Err(format!(
                "unit {unit:?} unknown for format {format} in {text:?}"
            ))
        }
    };
    let scale = 10f64.powi(exp) * mult;
    Ok((x * scale, 0.5 * 10f64.powi(-decimals) * scale))
}

/// What is wrong with one shown figure against `root` (the JSON it points into), if anything.
fn figure_mismatch(f: &Value, root: &Value) -> Option<String> {
    let s = |k: &str| f[k].as_str().map(str::to_owned);
    let (ptr, format, text) = (s("ptr")?, s("format")?, s("text")?);
    let text = text.trim().to_owned();
    let expect =
        |want: &str| (text != want).then(|| format!("{ptr}: shows {text:?}, want {want:?}"));
    let v = match root.pointer(&ptr) {
        None | Some(Value::Null) => return expect(DASH),
        Some(v) => v,
    };
    if let Some(den) = s("den") {
        let total: f64 = den
            .split_whitespace()
            .map(|p| root.pointer(p).and_then(Value::as_f64).unwrap_or(0.0))
            .sum();
        if total == 0.0 {
            return expect(DASH);
        }
    }
    match format.as_str() {
        "bool" => {
            let b = v.as_bool()?;
            let want = if b { s("yes") } else { s("no") };
            expect(&want.unwrap_or_else(|| if b { "yes" } else { "no" }.into()))
        }
        "text" => expect(
            &v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string()),
        ),
        "state" => expect(&v.as_str().unwrap_or("?").replace('_', "-")),
        _ => {
            let Some(want) = v.as_f64() else {
                return Some(format!("{ptr}: {v} is not a number"));
            };
            if want == 0.0 {
                if let Some(z) = s("zero") {
                    return expect(&z);
                }
            }
            match parse_shown(&format, &text) {
                Err(e) => Some(format!("{ptr}: {e}")),
                Ok((shown, tol)) => ((shown - want).abs() > tol * (1.0 + 1e-9) + 1e-12)
                    .then(|| format!("{ptr}: shows {text:?} ({shown}), want {want} (±{tol})")),
            }
        }
    }
}

/// Checks every figure of `figures` (from [`FIGURES`]) against `stats` and `rates`; returns how
/// many were checked, how many showed a value (not "—"), and the mismatches.
fn check_figures(figures: &Value, stats: &Value, rates: &Value) -> (usize, usize, Vec<String>) {
    let list = figures.as_array().expect("figures");
    let mut bad = Vec::new();
    let mut valued = 0;
    for f in list {
        let root = if f["base"] == "stats" { stats } else { rates };
        if f["text"].as_str().is_some_and(|t| t.trim() != DASH) {
            valued += 1;
        }
        if let Some(m) = figure_mismatch(f, root) {
            bad.push(m);
        }
    }
    (list.len(), valued, bad)
}

/// The `data-points` of every chart, by figure id.
async fn chart_points(page: &Page) -> Value {
    page.eval(
        "Object.fromEntries(Array.from(document.querySelectorAll('figure.chart')).map(f => \
         [f.id, Number(f.querySelector('svg').dataset.points || 0)]))",
    )
    .await
}

/// Writes a screenshot of the viewport and of the whole page; checks the viewport's PNG size.
async fn screenshots(page: &Page, name: &str, v: Viewport) -> PathBuf {
    let dir = shots_dir();
    let path = dir.join(format!("{name}.png"));
    let png = page.screenshot(&path, false).await;
    let want = (
        (v.width as f64 * v.scale) as u32,
        (v.height as f64 * v.scale) as u32,
    );
    assert_eq!(png_size(&png), Some(want), "{} size", path.display());
    page.screenshot(&dir.join(format!("{name}-full.png")), true)
        .await;
    path
}

/// Emulates `v` and waits for a refresh drawn at that size.
async fn resize(page: &Page, v: Viewport) {
    page.set_viewport(v).await;
    let before = page.eval("window.cacheDashboard.updates").await;
    let before = before.as_u64().expect("update count");
    page.wait_for(
        &format!(
            "window.innerWidth === {} && window.cacheDashboard.updates > {before}",
            v.width
        ),
        Duration::from_secs(30),
        "a refresh at the new size",
    )
    .await;
}

fn assert_no_problems(page: &Page, browser: &Browser, when: &str) {
    let problems = page.problems();
    assert!(
        problems.is_empty(),
        "{when}: the page reported problems:\n{}\nbrowser log:\n{}",
        problems
            .iter()
            .map(|p| format!("  {p}"))
            .collect::<Vec<_>>()
            .join("\n"),
        browser.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_live_cache_of_the_example_app() {
    let started = Instant::now();
    // First, so that a missing browser fails before anything else starts.
    browser::chromium_path();
    cache_tests::init_tracing();
    let server = RedisServer::start();
    let prefix = unique_prefix("dashboard");
    let cache = examples::api::configure(Cache::builder().redis_url(server.url()).prefix(&prefix))
        .stats_report_interval(Duration::from_secs(1))
        .build()
        .await
        .expect("cache");
    // The example's `#[cached]` functions use the default cache (this test binary's only one).
    cache_core::set_default_cache(cache.clone()).expect("no default cache yet");
    // Another instance of the app, reporting under the same prefix.
    let peer = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .stats_report_interval(Duration::from_secs(1))
        .build()
        .await
        .expect("peer");
    let report = cache.warm().await;
    assert!(report.failed.is_empty(), "warm: {report:?}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(axum::serve(listener, examples::api::app(cache.clone())).into_future());
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(examples::api::traffic(
        addr,
        3,
        Duration::from_millis(2),
        stop.clone(),
    ));

    let browser = Browser::launch().await;
    println!("browser: {}", browser.version().await);
    let page = browser.new_page().await;
    page.set_viewport(Viewport::DESKTOP).await;
    page.goto(&format!("http://{addr}/cache/dashboard")).await;
    page.wait_for(
        "window.cacheDashboard && window.cacheDashboard.updates >= 2 \
         && document.body.dataset.state === 'live'",
        Duration::from_secs(60),
        "the page is live",
    )
    .await;

    // Charts: enough history for lines, every chart drawing points.
    page.wait_for(
        "(() => { const h = window.cacheDashboard.last.history; \
           return h.length >= 15 && h.filter(p => p.hit_rate !== null).length >= 10; })()",
        Duration::from_secs(90),
        "15 s of history with lookups",
    )
    .await;
    let points = chart_points(&page).await;
    for id in [
        "chart-hit",
        "chart-req",
        "chart-lat",
        "chart-mem",
        "chart-state",
    ] {
        let n = points[id].as_u64().unwrap_or(0);
        assert!(n >= 10, "{id} draws {n} points: {points}");
    }
    // The hit chart draws exactly the non-null points of its three series.
    let expected_hit = page
        .eval(
            "window.cacheDashboard.last.history.reduce((n, p) => n + \
             ['hit_rate', 'l1_hit_rate', 'l2_hit_rate'].filter(k => p[k] !== null).length, 0)",
        )
        .await;
    let drawn_hit = chart_points(&page).await["chart-hit"].clone();
    assert_eq!(drawn_hit, expected_hit, "hit chart points vs the history");

    // The other instance's report reaches the page: two rows, this one first.
    page.wait_for(
        "document.querySelectorAll('#instances tbody tr[data-instance]').length === 2",
        Duration::from_secs(30),
        "two instances listed",
    )
    .await;
    let this_first = page
        .eval("document.querySelector('#instances tbody tr').dataset.this === 'true'")
        .await;
    assert_eq!(this_first, json!(true), "this instance is listed first");

    // Screenshots under traffic, at both widths; nothing wider than the screen.
    let desktop = screenshots(&page, "desktop", Viewport::DESKTOP).await;
    assert_eq!(page.eval(OVERFLOW).await, json!(0), "overflow at 1280 px");
    resize(&page, Viewport::PHONE).await;
    assert_eq!(
        page.eval(OVERFLOW).await,
        json!(0),
        "overflow at phone width"
    );
    let phone = screenshots(&page, "phone", Viewport::PHONE).await;
    resize(&page, Viewport::DESKTOP).await;

    // Stop the traffic; once the page refreshed, every figure is the cache's.
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.expect("traffic task").expect("traffic");
    assert!(sent >= 100, "only {sent} requests sent");
    let kinds_shown = || async {
        let v = page
            .eval(
                "({ rows: Array.from(document.querySelectorAll('#kinds tbody tr[data-kind]')).map(r => r.dataset.kind), \
                    idle: Array.from(document.querySelectorAll('#kinds [data-idle-kind]')).map(e => e.dataset.idleKind) })",
            )
            .await;
        let names =
            |k: &str| -> Vec<String> { serde_json::from_value(v[k].clone()).expect("names") };
        (names("rows"), names("idle"))
    };
    let compared = Instant::now();
    let (checked, valued, kind_rows) = loop {
        let before = page.eval("window.cacheDashboard.updates").await;
        let before = before.as_u64().expect("update count");
        page.wait_for(
            &format!("window.cacheDashboard.updates >= {}", before + 2),
            Duration::from_secs(30),
            "two refreshes",
        )
        .await;
        let stats = serde_json::to_value(cache.stats()).expect("stats as JSON");
        let shown = page
            .eval(&format!(
                "({{ figures: {FIGURES}, rates: window.cacheDashboard.last.rates }})"
            ))
            .await;
        let (checked, valued, bad) = check_figures(&shown["figures"], &stats, &shown["rates"]);
        if bad.is_empty() {
            // A row per kind with traffic; the others named on one line.
            let (rows, idle) = kinds_shown().await;
            let kinds = stats["kinds"].as_object().expect("kinds");
            let busy = |k: &Value| {
                [
                    "/lookups",
                    "/l1/entries",
                    "/loader/calls",
                    "/sets",
                    "/invalidations",
                ]
                .iter()
                .any(|p| k.pointer(p).and_then(Value::as_u64).unwrap_or(0) > 0)
            };
            let want_rows: Vec<&String> = kinds
                .iter()
                .filter(|(_, k)| busy(k))
                .map(|(n, _)| n)
                .collect();
            let want_idle: Vec<&String> = kinds
                .iter()
                .filter(|(_, k)| !busy(k))
                .map(|(n, _)| n)
                .collect();
            assert_eq!(
                rows.iter().collect::<Vec<_>>(),
                want_rows,
                "a row per kind with traffic"
            );
            assert_eq!(
                idle.iter().collect::<Vec<_>>(),
                want_idle,
                "the kinds without traffic"
            );
            assert!(rows.len() >= 3, "the example's kinds: {rows:?}");
            break (checked, valued, rows.len());
        }
        assert!(
            compared.elapsed() < Duration::from_secs(30),
            "the page's figures are not cache.stats()'s:\n  {}",
            bad.join("\n  ")
        );
    };
    // The cards' figures, and at least ten per kind's row.
    assert!(
        checked >= 40 + 10 * kind_rows && valued >= checked * 9 / 10,
        "only {checked} figures ({valued} with a value) for {kind_rows} kinds"
    );
    assert_no_problems(&page, &browser, "after the live run");
    browser.close().await;
    drop(peer);
    println!(
        "{checked} figures ({valued} with a value) match cache.stats(); {sent} requests; \
         screenshots: {}, {}; {:.1?} in all",
        desktop.display(),
        phone.display(),
        started.elapsed()
    );
}

/// The spec's `DashboardData`, written out by hand: 300 s of history with a stretch of empty
/// seconds (nulls), ten missing seconds, the breaker open 20 s then half-open, the backplane
/// down, invalidations pending meanwhile; four kinds (one without L2, one with a cost per load,
/// one below its target); three instances and three recommendations.
fn fixture() -> Value {
    fn lat(p50: f64, p99: f64, count: u64) -> Value {
        json!({ "count": count, "mean_us": p50 * 1.2, "p50_us": p50, "p99_us": p99, "max_us": p99 * 2.0 })
    }
    fn reasons(pairs: &[(&str, u64)]) -> Value {
        let mut r = json!({ "absent": 0, "expired": 0, "evicted": 0, "rejected": 0, "mismatch": 0,
            "undecodable": 0, "oversized": 0, "skipped": 0, "bypassed": 0 });
        for (k, v) in pairs {
            r[*k] = json!(v);
        }
        r
    }
    #[allow(clippy::too_many_arguments)]
    fn tier(
        l1: (u64, u64),
        l2: (u64, u64),
        calls: u64,
        entries: u64,
        bytes: u64,
        settings: Value,
        cost: Option<f64>,
        why: (Value, Value),
    ) -> Value {
        let lookups = l1.0 + l1.1;
        let hits = lookups - calls;
        json!({
            "l1": { "hits": l1.0, "misses": l1.1, "hit_rate": l1.0 as f64 / lookups.max(1) as f64,
                    "entries": entries, "bytes": bytes, "max_bytes": 64u64 << 20, "evictions": 12,
                    "miss_reasons": why.0 },
            "l2": { "hits": l2.0, "misses": l2.1, "hit_rate": l2.0 as f64 / (l2.0 + l2.1).max(1) as f64,
                    "errors": 0, "refused": 0, "timeouts": 1, "skipped": 0, "writes": calls,
                    "bytes_read": 12345, "bytes_written": 2345, "compression_ratio": 1.0,
                    "oversized": 0, "decode_errors": 0, "write_conflicts": 0, "tag_rejections": 0,
                    "read_latency": lat(310.5, 2210.0, l2.0 + l2.1), "write_latency": lat(400.0, 3000.0, calls),
                    "miss_reasons": why.1 },
            "loader": { "calls": calls, "errors": 2, "stale_served": 0, "refreshes": 0,
                        "refresh_failures": 0, "soft_timeouts": 0, "hard_timeouts": 0,
                        "latency": lat(30_500.0, 121_000.0, calls) },
            "lock": { "acquired": calls, "waits": 0, "fallbacks": 0 },
            "sets": 0, "invalidations": 3,
            "hit_rate": hits as f64 / lookups.max(1) as f64, "lookups": lookups,
            "savings": { "loader_time_saved_secs": hits as f64 * 0.0305, "cost_per_load": cost,
                         "cost_saved": hits as f64 * cost.unwrap_or(0.0),
                         "cost_spent": calls as f64 * cost.unwrap_or(0.0) },
            "settings": settings,
        })
    }
    let kinds = json!({
        "database_query": tier((52_000, 3_100), (2_200, 900), 900, 980, 1_843_200,
            json!({ "ttl_ms": 600_000, "tiers": "l1+l2", "load_cost": null, "hit_rate_target": 0.9 }), None,
            (reasons(&[("absent", 2_000), ("expired", 900), ("evicted", 200)]), reasons(&[("absent", 850), ("expired", 50)]))),
        "api_response": tier((8_000, 4_000), (1_500, 2_500), 2_500, 3, 4_096,
            json!({ "ttl_ms": 60_000, "tiers": "l1+l2", "load_cost": 0.002, "hit_rate_target": 0.9 }), Some(0.002),
            (reasons(&[("absent", 1_000), ("expired", 3_000)]), reasons(&[("absent", 2_000), ("expired", 400), ("rejected", 100)]))),
        "static_data": tier((20_000, 2), (2, 0), 2, 2, 2_048,
            json!({ "ttl_ms": 7_200_000, "tiers": "l1+l2", "load_cost": null, "hit_rate_target": null }), None,
            (reasons(&[("absent", 2)]), reasons(&[]))),
        "llm.answers-v2": tier((1_200, 300), (0, 0), 300, 250, 9_000_000,
            json!({ "ttl_ms": 86_400_000, "tiers": "l1", "load_cost": 0.0125, "hit_rate_target": 0.95 }), Some(0.0125),
            (reasons(&[("absent", 250), ("mismatch", 50)]), reasons(&[]))),
    });
    let mut total = tier(
        (81_200, 7_402),
        (3_702, 3_400),
        3_702,
        1_235,
        10_850_000,
        Value::Null,
        None,
        (
            reasons(&[("absent", 3_252), ("expired", 3_900), ("evicted", 200)]),
            reasons(&[("absent", 2_850), ("expired", 450), ("rejected", 100)]),
        ),
    );
    total["savings"]["cost_saved"] = json!(1_400.0 * 0.0125 + 9_500.0 * 0.002);
    let stats = json!({
        "name": "users", "prefix": "api-example", "l2_configured": true, "l2_refusing_writes": false,
        "breaker": { "state": "closed", "opens": 2, "rejected": 40 },
        "backplane": { "subscribed": true, "received": 1234, "published": 20, "publish_failures": 0,
                       "disconnects": 1, "resyncs": 1, "unsent": 0, "resent": 0 },
        "tracked_tag_invalidations": 0,
        "pending_invalidations": { "pending": 0, "queued": 3, "replayed": 3, "dropped": 0 },
        "redis_memory": { "used_bytes": 50u64 << 20, "maxmemory_bytes": 0, "policy": "noeviction",
                          "sampled_at_ms": 1_700_000_000_000u64 },
        "total": total, "kinds": kinds,
    });
    let window = |seconds: f64, rps: f64| {
        json!({ "seconds": seconds, "requests_per_sec": rps, "loader_calls_per_sec": rps * 0.04,
                "total": stats["total"], "kinds": stats["kinds"] })
    };
    let rates = json!({ "last_1m": window(60.0, 812.4), "last_5m": window(300.0, 790.1),
                        "last_15m": window(300.0, 790.1) });
    let t_end: u64 = 1_700_000_000_000;
    let mut history = Vec::new();
    for i in 0..300u64 {
        if (220..230).contains(&i) {
            continue; // ten seconds missing (the process was paused)
        }
        let idle = (100..110).contains(&i);
        let open = (150..170).contains(&i);
        let wave = (i as f64 / 25.0).sin();
        let some = |v: f64| if idle { Value::Null } else { json!(v) };
        history.push(json!({
            "t_ms": t_end - (299 - i) * 1000,
            "requests_per_sec": if idle { 0.0 } else { 700.0 + 100.0 * wave },
            "hit_rate": some(0.9 + 0.05 * wave),
            "l1_hit_rate": some(0.85 + 0.05 * wave),
            "l2_hit_rate": if open { Value::Null } else { some(0.5 + 0.2 * wave) },
            "l2_read_p50_us": if open { Value::Null } else { some(300.0 + 20.0 * wave) },
            "l2_read_p99_us": if open { Value::Null } else { some(2_000.0 + 500.0 * wave) },
            "loader_calls_per_sec": if idle { 0.0 } else { 30.0 + 5.0 * wave },
            "l1_bytes": 8_000_000 + i * 10_000, "l1_max_bytes": 64u64 << 20,
            "breaker": if open { "open" } else if i == 170 { "half_open" } else { "closed" },
            "backplane_subscribed": !(150..180).contains(&i),
            "pending_invalidations": if (150..175).contains(&i) { 3 } else { 0 },
        }));
    }
    json!({
        "stats": stats,
        "rates": rates,
        "history": history,
        "instances": [
            { "instance": "1234567890abcdef", "hostname": "worker-a", "pid": 9, "age_ms": 4100,
              "this": false, "requests_per_sec": 0.0, "hit_rate": null, "l1_bytes": 0,
              "breaker": null, "backplane_subscribed": null },
            { "instance": "0a1b2c3d4e5f6071", "hostname": "web-1", "pid": 4242, "age_ms": 0,
              "this": true, "requests_per_sec": 812.4, "hit_rate": 0.912, "l1_bytes": 10_850_000,
              "breaker": "closed", "backplane_subscribed": true },
            { "instance": "99887766554433aa", "hostname": "web-2", "pid": 77, "age_ms": 2300,
              "this": false, "requests_per_sec": 640.2, "hit_rate": 0.88, "l1_bytes": 9_000_000,
              "breaker": "open", "backplane_subscribed": false },
        ],
        "recommendations": [
            { "code": "ttl_shorter_than_rerequest", "severity": "warning", "kind": "api_response",
              "setting": "KindConfig::ttl", "figure": "re-requested after 95 s (median), TTL 60 s",
              "message": "api_response entries expire before they are asked for again: 3,000 of 4,000 L1 misses were expired entries. Raise its TTL to about 120 s." },
            { "code": "below_target", "severity": "info", "kind": "llm.answers-v2",
              "setting": "KindConfig::hit_rate_target", "figure": "80.0% < 95.0%",
              "message": "llm.answers-v2 is below its hit-rate target <b>not bold</b>." },
            { "code": "redis_noeviction", "severity": "critical", "kind": null,
              "setting": "Redis maxmemory-policy", "figure": "policy noeviction, no maxmemory",
              "message": "Redis has no maxmemory and evicts nothing: it grows until the host runs out of memory." },
        ],
    })
}

#[derive(Clone)]
struct FixtureState {
    page: Arc<String>,
    data: Arc<Value>,
    down: Arc<AtomicBool>,
}

async fn fixture_page(State(s): State<FixtureState>) -> Html<String> {
    Html(s.page.as_ref().clone())
}

async fn fixture_data(State(s): State<FixtureState>) -> Response {
    if s.down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for the test").into_response();
    }
    Json(s.data.as_ref().clone()).into_response()
}

/// Serves `router` on a free loopback port.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(axum::serve(listener, router).into_future());
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_gaps_outages_and_disconnects_from_a_fixture() {
    browser::chromium_path();
    // The page as the cache's router serves it (an L1-only cache is enough for that).
    let cache = Cache::builder().build().await.expect("cache");
    let real = serve(cache_core::http::router(cache)).await;
    let (status, html) = examples::api::request(real, "GET", "/cache/dashboard")
        .await
        .expect("GET /cache/dashboard");
    assert_eq!(status, 200);
    assert!(html.contains("data-stat=\"/total/l1/bytes\""), "the page");

    // Mounted under another path: the page finds its data relative to its own URL.
    let data = fixture();
    let state = FixtureState {
        page: Arc::new(html),
        data: Arc::new(data.clone()),
        down: Arc::new(AtomicBool::new(false)),
    };
    let addr = serve(
        Router::new()
            .route("/admin/cache/dashboard", get(fixture_page))
            .route("/admin/cache/dashboard/data", get(fixture_data))
            .with_state(state.clone()),
    )
    .await;

    let browser = Browser::launch().await;
    let page = browser.new_page().await;
    page.set_viewport(Viewport::DESKTOP).await;
    page.goto(&format!("http://{addr}/admin/cache/dashboard"))
        .await;
    page.wait_for(
        "window.cacheDashboard && window.cacheDashboard.updates >= 1 \
         && document.body.dataset.state === 'live'",
        Duration::from_secs(60),
        "the page is live",
    )
    .await;

    let last_t = data["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|p| p["t_ms"].as_u64())
        .expect("fixture history");
    // Every figure is the fixture's.
    let figures = page.eval(FIGURES).await;
    let (checked, valued, bad) = check_figures(&figures, &data["stats"], &data["rates"]);
    assert!(bad.is_empty(), "figures:\n  {}", bad.join("\n  "));
    assert!(
        checked >= 70 && valued >= 60,
        "{checked} figures, {valued} valued"
    );
    // `maxmemory 0` reads "no limit", a kind without a target or cost says so.
    let shown = |sel: &str| {
        let page = &page;
        let js = format!("document.querySelector({sel:?})?.textContent ?? null");
        async move { page.eval(&js).await }
    };
    assert_eq!(
        shown("[data-stat='/redis_memory/maxmemory_bytes']").await,
        json!("0 (no limit)")
    );
    assert_eq!(
        shown("tr[data-kind='static_data'] td[data-label='cost saved']").await,
        json!("no load cost set")
    );

    // Gaps: nulls and missing seconds break the lines (three runs), and are not drawn.
    let runs = page
        .eval("document.querySelector('#chart-hit path[data-series=hit_rate]').getAttribute('d').split('M').length - 1")
        .await;
    assert_eq!(runs, json!(3), "hit-rate line runs");
    let history = data["history"].as_array().expect("history");
    let non_null = |k: &str| history.iter().filter(|p| !p[k].is_null()).count();
    let points = chart_points(&page).await;
    assert_eq!(
        points["chart-hit"],
        json!(non_null("hit_rate") + non_null("l1_hit_rate") + non_null("l2_hit_rate"))
    );
    assert_eq!(
        points["chart-lat"],
        json!(non_null("l2_read_p50_us") + non_null("l2_read_p99_us"))
    );
    // Outages on the state chart.
    let states = page
        .eval(
            "Array.from(document.querySelectorAll('#chart-state rect[data-state]')).map(r => r.dataset.state)",
        )
        .await;
    for s in ["closed", "open", "half_open", "true", "false"] {
        assert!(
            states.as_array().expect("states").contains(&json!(s)),
            "state {s} drawn: {states}"
        );
    }

    // Tables: a row per kind and instance (this one first), recommendations by severity,
    // markup in a message shown as text.
    let rows = page
        .eval(
            "({ kinds: document.querySelectorAll('#kinds tbody tr[data-kind]').length, \
                instances: Array.from(document.querySelectorAll('#instances tbody tr')).map(r => r.dataset.this === 'true'), \
                recs: Array.from(document.querySelectorAll('#recs li')).map(l => l.dataset.code), \
                below: Array.from(document.querySelectorAll('#kinds .below')).map(e => e.closest('tr').dataset.kind) })",
        )
        .await;
    assert_eq!(rows["kinds"], json!(4));
    assert_eq!(rows["instances"], json!([true, false, false]));
    assert_eq!(
        rows["recs"],
        json!([
            "redis_noeviction",
            "ttl_shorter_than_rerequest",
            "below_target"
        ])
    );
    let bold_kinds = page
        .eval("document.querySelectorAll('#recs li[data-code=below_target] b').length")
        .await;
    assert_eq!(bold_kinds, json!(1), "only the kind name is bold: {rows}");
    assert_eq!(rows["below"], json!(["api_response", "llm.answers-v2"]));

    assert_eq!(page.eval(OVERFLOW).await, json!(0), "overflow at 1280 px");
    screenshots(&page, "fixture-desktop", Viewport::DESKTOP).await;
    resize(&page, Viewport::PHONE).await;
    assert_eq!(
        page.eval(OVERFLOW).await,
        json!(0),
        "overflow at phone width"
    );
    screenshots(&page, "fixture-phone", Viewport::PHONE).await;
    resize(&page, Viewport::DESKTOP).await;
    assert_no_problems(&page, &browser, "on the fixture");

    // The endpoint fails: the page says so, keeps the last figures, and retries with a back-off.
    let before = page.problems().len();
    state.down.store(true, Ordering::Relaxed);
    page.wait_for(
        "document.body.dataset.state === 'disconnected' \
         && document.getElementById('status').textContent.includes('HTTP 503')",
        Duration::from_secs(30),
        "the disconnected state",
    )
    .await;
    screenshots(&page, "fixture-disconnected", Viewport::DESKTOP).await;
    let down_since = Instant::now();
    page.wait_for(
        "window.cacheDashboard.failures >= 3",
        Duration::from_secs(30),
        "three failed polls",
    )
    .await;
    let down_for = down_since.elapsed();
    state.down.store(false, Ordering::Relaxed);
    page.wait_for(
        "document.body.dataset.state === 'live'",
        Duration::from_secs(30),
        "live again",
    )
    .await;
    // Only the browser's own note of each failed request: no script error, no console spam.
    let during: Vec<_> = page.problems().into_iter().skip(before).collect();
    for p in &during {
        assert!(
            p.source == "log:network"
                && p.url
                    .as_deref()
                    // Asking only for the history after the fixture's last point.
                    .is_some_and(
                        |u| u.ends_with(&format!("/admin/cache/dashboard/data?since={last_t}"))
                    ),
            "unexpected while the endpoint failed: {p}"
        );
    }
    let failures = during.len();
    println!("{checked} figures ({valued} with a value) match the fixture; {failures} failed polls logged in {down_for:?}");
    assert!(
        (3..=10).contains(&failures),
        "{failures} failed requests logged while down for {down_for:?} (back-off: 1, 2, 4 s...)"
    );
    // The figures are still the fixture's after the outage.
    let (_, _, bad) = check_figures(&page.eval(FIGURES).await, &data["stats"], &data["rates"]);
    assert!(
        bad.is_empty(),
        "figures after the outage:\n  {}",
        bad.join("\n  ")
    );
    browser.close().await;
}

/// `GET path`: status, headers (lower-case names) and body.
async fn get_raw(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_endpoint_answers_the_specs_json_and_lists_every_instance_of_the_prefix() {
    cache_tests::init_tracing();
    let server = RedisServer::start();
    let prefix = unique_prefix("dashdata");
    let build = |name: &str| {
        Cache::builder()
            .redis_url(server.url())
            .prefix(&prefix)
            .name(name)
            .stats_report_interval(Duration::from_secs(1))
            .build()
    };
    let cache = build("front").await.expect("cache");
    let other = build("worker").await.expect("other");
    for i in 0..20u32 {
        let _ = cache
            .get_or_load("api_response", &format!("k{}", i % 5), || async {
                Ok::<_, ()>(i)
            })
            .await;
    }
    let addr = serve(cache_core::http::router(cache.clone())).await;

    // The page: HTML, nothing to load from elsewhere, and a policy that would block it anyway.
    let (status, headers, html) = get_raw(addr, "/cache/dashboard").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = header(&headers, "content-security-policy").expect("a CSP");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    for external in [
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
        "src=\"//",
        "href=\"//",
    ] {
        assert!(!html.contains(external), "the page loads {external}...");
    }

    let (status, headers, body) = get_raw(addr, "/cache/dashboard/data").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let d: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(d["stats"]["name"], "front");
    assert_eq!(d["stats"]["kinds"]["api_response"]["lookups"], 20);
    assert_eq!(d["stats"]["kinds"]["api_response"]["loader"]["calls"], 5);
    assert_eq!(
        d["rates"]["last_1m"]["kinds"]["api_response"]["lookups"],
        20
    );
    assert!(
        d["rates"]["last_15m"]["seconds"].is_number(),
        "{}",
        d["rates"]
    );
    assert!(d["history"].is_array() && d["recommendations"].is_array());
    let this = &d["instances"][0];
    assert_eq!(this["this"], true);
    assert_eq!(this["pid"], std::process::id());
    assert_eq!(this["age_ms"], 0);
    assert_eq!(this["hit_rate"], json!(0.75));
    for field in [
        "instance",
        "hostname",
        "requests_per_sec",
        "l1_bytes",
        "breaker",
        "backplane_subscribed",
    ] {
        assert!(!this[field].is_null(), "{field} in {this}");
    }

    // The other instance appears once it reported (every second here) and the page asked again.
    let data = || async {
        let (_, _, body) = get_raw(addr, "/cache/dashboard/data").await;
        serde_json::from_str::<Value>(&body).expect("JSON")
    };
    within(
        Duration::from_secs(30),
        "the other instance listed",
        || async { data().await["instances"].as_array().map(Vec::len) == Some(2) },
    )
    .await;
    let rows = data().await["instances"].clone();
    assert_eq!(rows[0]["this"], true);
    assert_eq!(rows[1]["this"], false);
    assert_ne!(rows[1]["instance"], rows[0]["instance"]);
    assert!(
        rows[1]["age_ms"].as_u64().is_some_and(|a| a < 10_000),
        "{rows}"
    );
    assert_eq!(rows[1]["hit_rate"], Value::Null, "no lookups there: {rows}");

    // `since`: the history after a point only.
    within(Duration::from_secs(10), "two history points", || async {
        data().await["history"].as_array().map(Vec::len) >= Some(2)
    })
    .await;
    let first = data().await["history"].clone();
    let last = first
        .as_array()
        .and_then(|h| h.last())
        .and_then(|p| p["t_ms"].as_u64())
        .expect("a last point");
    let (_, _, body) = get_raw(addr, &format!("/cache/dashboard/data?since={last}")).await;
    let d: Value = serde_json::from_str(&body).expect("JSON");
    let after: Vec<u64> = d["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|p| p["t_ms"].as_u64())
        .collect();
    assert!(after.iter().all(|t| *t > last), "{after:?} after {last}");

    // Without L2, the only instance listed is this one.
    let alone = Cache::builder().build().await.expect("L1-only cache");
    let addr = serve(cache_core::http::router(alone)).await;
    let (_, _, body) = get_raw(addr, "/cache/dashboard/data").await;
    let d: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(d["instances"].as_array().map(Vec::len), Some(1));
    assert_eq!(d["stats"]["breaker"], Value::Null);
    drop(other);
}

#[test]
fn shown_figures_parse_with_the_rounding_their_display_allows() {
    let near = |f: &str, t: &str, v: f64, tol: f64| {
        let (x, e) = parse_shown(f, t).unwrap();
        assert!((x - v).abs() < 1e-9 * v.abs().max(1.0), "{t}: {x} vs {v}");
        assert!(
            (e - tol).abs() < 1e-9 * tol.max(1e-12),
            "{t}: ±{e} vs ±{tol}"
        );
    };
    near("count", "12,345", 12345.0, 0.5);
    near("count", "1.23M", 1.23e6, 0.005e6);
    near("percent", "93.4%", 0.934, 0.0005);
    near("bytes", "10.3 MiB", 10.3 * 1048576.0, 0.05 * 1048576.0);
    near("us", "2.21 ms", 2210.0, 5.0);
    near("secs", "43.2 min", 43.2 * 60.0, 3.0);
    near("ms", "10 min", 600_000.0, 30_000.0);
    near("money", "0.00240", 0.0024, 0.000005);
    near("money", "1.00e-7", 1e-7, 0.005e-7);
    near("rate", "812/s", 812.0, 0.5);
    assert!(parse_shown("bytes", "12 parsecs").is_err());
    assert!(parse_shown("count", "—").is_err());
}
