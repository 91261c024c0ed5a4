//! The Grafana dashboard (`deploy/grafana/tiered-cache.json`) and the Prometheus rules
//! (`deploy/prometheus/*.yml`) query only what `Cache::prometheus_text()` exports.
//!
//! Every query is parsed as PromQL (promql-parser; Grafana's `$__rate_interval`-style variables
//! replaced by durations first, as Grafana does). Every metric a query selects must be a sample
//! name of the exposition of a real cache (L2 on redis-server, backplane, a kind with a load cost
//! and a hit-rate target, after traffic with a loader call and with Redis memory sampled), or a
//! recording rule of the rules files. Each selector's label matchers must be satisfiable by one
//! exported sample (a label it does not carry, or a literal value no sample has, is a query that
//! matches nothing). `rate`/`irate`/`increase` read counters or histogram samples only, and
//! `histogram_quantile` reads a `sum by (le, ...)`. The checker itself is shown to fail on a
//! misspelt series, a label value no sample has, a rate over a gauge and a quantile without `le`.

use cache_core::{Cache, Kind, KindConfig};
use cache_tests::{init_tracing, unique_prefix, within, RedisServer};
use promql_parser::label::{Matcher, METRIC_NAME};
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---- Queries ------------------------------------------------------------------------------------

/// One query of the deploy files: where it is (for messages) and its PromQL text.
#[derive(Debug, Clone)]
struct Query {
    origin: String,
    expr: String,
}

/// One metric selection of a query: the metric name and the label matchers that a sample must
/// satisfy (each inner list is one alternative, for `{a="x" or b="y"}`).
#[derive(Debug, Clone)]
struct Selection {
    name: String,
    alternatives: Vec<Vec<Matcher>>,
}

/// What a parsed query reads.
#[derive(Debug, Default)]
struct Reads {
    selections: Vec<Selection>,
    /// Metric names read through `rate`, `irate` or `increase`.
    rated: Vec<String>,
    /// Shape problems found while walking (a selector without a name, a quantile without `le`).
    problems: Vec<String>,
}

impl Reads {
    fn names(&self) -> BTreeSet<String> {
        self.selections.iter().map(|s| s.name.clone()).collect()
    }
}

fn selection(vs: &VectorSelector) -> Result<Selection, String> {
    let all = &vs.matchers;
    let by_name = all
        .find_matchers(METRIC_NAME)
        .into_iter()
        .find(|m| m.op == promql_parser::label::MatchOp::Equal)
        .map(|m| m.value);
    let name = vs
        .name
        .clone()
        .or(by_name)
        .ok_or_else(|| format!("selector {vs} has no metric name"))?;
    let plain: Vec<Matcher> = all
        .matchers
        .iter()
        .filter(|m| m.name != METRIC_NAME)
        .cloned()
        .collect();
    let alternatives = if all.or_matchers.is_empty() {
        vec![plain]
    } else {
        all.or_matchers
            .iter()
            .map(|group| {
                plain
                    .iter()
                    .chain(group.iter().filter(|m| m.name != METRIC_NAME))
                    .cloned()
                    .collect()
            })
            .collect()
    };
    Ok(Selection { name, alternatives })
}

impl ExprVisitor for Reads {
    type Error = String;

    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        match e {
            Expr::VectorSelector(vs) => match selection(vs) {
                Ok(s) => self.selections.push(s),
                Err(p) => self.problems.push(p),
            },
            Expr::MatrixSelector(ms) => match selection(&ms.vs) {
                Ok(s) => self.selections.push(s),
                Err(p) => self.problems.push(p),
            },
            Expr::Call(call) => {
                let arg = |i: usize| call.args.args.get(i).map(|a| unparen(a));
                if matches!(call.func.name, "rate" | "irate" | "increase") {
                    if let Some(Expr::MatrixSelector(ms)) = arg(0) {
                        if let Ok(s) = selection(&ms.vs) {
                            self.rated.push(s.name);
                        }
                    }
                }
                if call.func.name == "histogram_quantile" {
                    let by_le = matches!(arg(1), Some(Expr::Aggregate(a))
                        if a.op.to_string() == "sum"
                            && matches!(&a.modifier, Some(LabelModifier::Include(l))
                                if l.labels.iter().any(|l| l == "le")));
                    if !by_le {
                        self.problems.push(format!(
                            "histogram_quantile over something other than `sum by (le, ...)`: {e}"
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

fn unparen(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

/// Grafana's built-in interval variables, replaced as Grafana does before sending a query
/// (`$cache`, `$kind` stay: they only appear inside label matcher strings).
fn grafana_substitute(expr: &str) -> String {
    [
        ("${__rate_interval}", "5m"),
        ("$__rate_interval", "5m"),
        ("${__interval}", "1m"),
        ("$__interval", "1m"),
        ("${__range}", "1h"),
        ("$__range", "1h"),
    ]
    .iter()
    .fold(expr.to_owned(), |s, (var, dur)| s.replace(var, dur))
}

/// Parses a query and collects what it reads.
fn reads(expr: &str) -> Result<Reads, String> {
    let ast = parser::parse(expr).map_err(|e| format!("not PromQL ({e})"))?;
    let mut r = Reads::default();
    walk_expr(&mut r, &ast)?;
    Ok(r)
}

/// The dashboard's queries: every panel target's `expr` (rows' nested panels included) and every
/// query variable's `label_values(<selector>, <label>)`, whose selector must carry `<label>`
/// (returned as `<selector> and the label`, checked like a target).
fn dashboard_queries(dash: &Value) -> Result<Vec<Query>, String> {
    fn panels<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                panels(nested, out);
            }
        }
    }
    let mut all = Vec::new();
    panels(&dash["panels"], &mut all);
    let mut out = Vec::new();
    for p in all {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .ok_or_else(|| format!("panel {title:?}: a target without expr"))?;
            out.push(Query {
                origin: format!(
                    "dashboard panel {title:?} target {}",
                    t["refId"].as_str().unwrap_or("?")
                ),
                expr: grafana_substitute(expr),
            });
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or("?");
        let q = match &v["query"] {
            Value::String(s) => s.as_str(),
            q => q["query"].as_str().unwrap_or(""),
        };
        let inner = q
            .trim()
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("variable {name}: expected label_values(...), got {q:?}"))?;
        let (selector, label) = inner
            .rsplit_once(',')
            .ok_or_else(|| format!("variable {name}: label_values without a metric: {q:?}"))?;
        // `sel{...}` with the label required: `label!=""` is satisfied only by samples carrying it.
        let selector = selector.trim();
        let label = label.trim();
        let with_label = match selector.strip_suffix('}') {
            Some(open) => format!("{open}, {label}!=\"\"}}"),
            None => format!("{selector}{{{label}!=\"\"}}"),
        };
        out.push(Query {
            origin: format!("dashboard variable {name}"),
            expr: with_label,
        });
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    record: Option<String>,
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The rule files of deploy/prometheus/ (`*.yml`; their unit tests live in `tests/`).
fn rule_files() -> Vec<(PathBuf, RuleFile)> {
    let dir = deploy_dir().join("prometheus");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no rule file in {}", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let f: RuleFile = serde_yaml_ng::from_str(&read(&p))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, f)
        })
        .collect()
}

/// The rules' queries, and the names their recording rules define.
fn rule_queries(files: &[(PathBuf, RuleFile)]) -> (Vec<Query>, BTreeSet<String>) {
    let mut queries = Vec::new();
    let mut recorded = BTreeSet::new();
    for (path, f) in files {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
        for g in &f.groups {
            for r in &g.rules {
                if let Some(name) = &r.record {
                    recorded.insert(name.clone());
                }
                let what = r
                    .record
                    .as_deref()
                    .map(|n| format!("record {n}"))
                    .or_else(|| r.alert.as_deref().map(|n| format!("alert {n}")))
                    .unwrap_or_else(|| "a rule without record or alert".into());
                queries.push(Query {
                    origin: format!(
                        "{} group {}: {what}",
                        file.as_deref().unwrap_or("?"),
                        g.name
                    ),
                    expr: r.expr.clone(),
                });
            }
        }
    }
    (queries, recorded)
}

// ---- The exposition -----------------------------------------------------------------------------

/// The exported samples: name → label sets, and family → type (from `# TYPE`).
#[derive(Debug, Default)]
struct Exported {
    samples: BTreeMap<String, Vec<BTreeMap<String, String>>>,
    types: BTreeMap<String, String>,
}

impl Exported {
    /// Reads the text format. A sample line is a PromQL vector selector (`name{label="value"}`,
    /// with the same string escapes) and a value, so promql-parser reads it too.
    fn parse(text: &str) -> Result<Self, String> {
        let mut out = Exported::default();
        for line in text.lines() {
            if let Some(meta) = line.strip_prefix("# TYPE ") {
                let (family, ty) = meta
                    .split_once(' ')
                    .ok_or_else(|| format!("bad TYPE line {line:?}"))?;
                out.types.insert(family.to_owned(), ty.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("sample without value {line:?}"))?;
            if !matches!(value, "NaN" | "+Inf" | "-Inf") && value.parse::<f64>().is_err() {
                return Err(format!("bad sample value in {line:?}"));
            }
            let Ok(Expr::VectorSelector(vs)) = parser::parse(series) else {
                return Err(format!("bad sample {line:?}"));
            };
            let name = vs
                .name
                .clone()
                .ok_or_else(|| format!("sample without a name {line:?}"))?;
            let labels = vs
                .matchers
                .matchers
                .iter()
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect();
            out.samples.entry(name).or_default().push(labels);
        }
        Ok(out)
    }

    /// The type of the family a sample name belongs to.
    fn type_of(&self, sample: &str) -> Option<&str> {
        let family = ["_total", "_bucket", "_sum", "_count", ""]
            .iter()
            .filter_map(|s| sample.strip_suffix(s))
            .find(|f| self.types.contains_key(*f))?;
        self.types.get(family).map(String::as_str)
    }

    /// A sample name `rate` can read: a counter's `_total`, or a histogram's buckets, sum, count.
    fn is_cumulative(&self, sample: &str) -> bool {
        match self.type_of(sample) {
            Some("counter") => sample.ends_with("_total"),
            Some("histogram") => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| sample.ends_with(s)),
            _ => false,
        }
    }
}

/// Whether one exported label set satisfies a matcher. A matcher whose value holds a Grafana
/// variable (`$cache`) cannot be evaluated here: the sample only has to carry the label.
fn satisfies(labels: &BTreeMap<String, String>, m: &Matcher) -> bool {
    if m.value.contains('$') {
        return labels.contains_key(&m.name);
    }
    m.is_match(labels.get(&m.name).map(String::as_str).unwrap_or(""))
}

/// The problems of one query against the exposition (empty: it reads only exported series).
fn check(q: &Query, exported: &Exported, recorded: &BTreeSet<String>) -> Vec<String> {
    let r = match reads(&q.expr) {
        Ok(r) => r,
        Err(e) => return vec![format!("{}: {e}: {}", q.origin, q.expr)],
    };
    let mut problems: Vec<String> = r
        .problems
        .iter()
        .map(|p| format!("{}: {p}", q.origin))
        .collect();
    for s in &r.selections {
        if recorded.contains(&s.name) {
            continue;
        }
        let Some(samples) = exported.samples.get(&s.name) else {
            problems.push(format!(
                "{}: reads {}, which the cache does not export (nor a recording rule defines)",
                q.origin, s.name
            ));
            continue;
        };
        for alt in &s.alternatives {
            if !samples.iter().any(|l| alt.iter().all(|m| satisfies(l, m))) {
                let shown: Vec<String> = alt.iter().map(|m| m.to_string()).collect();
                problems.push(format!(
                    "{}: no exported {} sample matches {{{}}}",
                    q.origin,
                    s.name,
                    shown.join(", ")
                ));
            }
        }
    }
    for name in &r.rated {
        if !recorded.contains(name)
            && exported.samples.contains_key(name)
            && !exported.is_cumulative(name)
        {
            problems.push(format!(
                "{}: rate/increase over {name}, a {} (not a counter or histogram sample)",
                q.origin,
                exported.type_of(name).unwrap_or("series of unknown type")
            ));
        }
    }
    problems
}

// ---- Tests --------------------------------------------------------------------------------------

#[test]
fn a_query_reads_metric_names_not_labels_functions_or_recording_rule_parts() {
    let r = reads(
        r#"sum by (cache, kind) (rate(cache_hits_total{tier="l1", kind=~"$kind"}[5m]))
             / on (cache, kind) group_left (reason) cache_kind:cache_lookups:rate10m
           and histogram_quantile(0.99, sum by (le, cache) (rate(cache_l2_duration_seconds_bucket[5m])))
           > on (cache) max by (cache) ({__name__="cache_redis_used_memory_bytes"} offset 1h)"#,
    )
    .expect("parses");
    assert_eq!(
        r.names(),
        [
            "cache_hits_total",
            "cache_kind:cache_lookups:rate10m",
            "cache_l2_duration_seconds_bucket",
            "cache_redis_used_memory_bytes",
        ]
        .map(String::from)
        .into(),
    );
    assert_eq!(
        r.rated,
        ["cache_hits_total", "cache_l2_duration_seconds_bucket"]
    );
    assert!(r.problems.is_empty(), "{:?}", r.problems);

    let r = reads(
        "histogram_quantile(0.5, sum by (cache) (rate(cache_l2_duration_seconds_bucket[5m])))",
    )
    .expect("parses");
    assert_eq!(
        r.problems.len(),
        1,
        "a quantile without le: {:?}",
        r.problems
    );
    assert!(reads("sum(rate(cache_hits_total[$__rate_interval]))").is_err());
    assert!(reads(&grafana_substitute(
        "sum(rate(cache_hits_total[$__rate_interval]))"
    ))
    .is_ok());
}

#[test]
fn the_dashboard_is_an_importable_grafana_dashboard_over_a_datasource_variable() {
    let path = deploy_dir().join("grafana/tiered-cache.json");
    let dash: Value =
        serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        dash["id"].is_null(),
        "an exported dashboard has no database id"
    );

    let vars = dash["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for (name, q) in [
        ("cache", "label_values(cache_hits_total, cache)"),
        (
            "kind",
            r#"label_values(cache_hits_total{cache=~"$cache"}, kind)"#,
        ),
    ] {
        assert_eq!(var(name)["type"], "query");
        assert_eq!(var(name)["definition"], q);
        assert_eq!(var(name)["query"]["query"], q);
        assert_eq!(var(name)["datasource"]["uid"], "${datasource}");
    }

    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut with_queries = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "panel id repeated: {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(
            x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some(),
            "{title}: {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId repeated"
            );
        }
        with_queries += 1;
    }
    assert!(with_queries >= 20, "{with_queries} panels with queries");
}

#[test]
fn every_alert_has_a_duration_a_severity_and_annotations_naming_the_cache() {
    let files = rule_files();
    let mut alerts = 0;
    for (path, f) in &files {
        for g in &f.groups {
            for r in &g.rules {
                if let Some(name) = &r.record {
                    assert!(
                        name.contains(':'),
                        "{}: recording rule {name} not level:metric:op",
                        path.display()
                    );
                    continue;
                }
                let name = r.alert.as_deref().expect("a rule is a record or an alert");
                alerts += 1;
                assert!(r.for_.is_some(), "{name}: no `for`");
                assert!(
                    matches!(
                        r.labels.get("severity").map(String::as_str),
                        Some("info" | "warning" | "critical")
                    ),
                    "{name}: severity {:?}",
                    r.labels.get("severity")
                );
                for key in ["summary", "description"] {
                    let text = r
                        .annotations
                        .get(key)
                        .unwrap_or_else(|| panic!("{name}: no {key}"));
                    assert!(
                        text.contains("$labels.cache"),
                        "{name}: {key} does not name the cache"
                    );
                }
            }
        }
    }
    assert!(alerts >= 8, "{alerts} alerts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_the_rules_query_is_one_the_cache_exports() {
    init_tracing();
    // noeviction named explicitly: the rules select `cache_redis_maxmemory_policy{policy="noeviction"}`.
    let server =
        RedisServer::start_with(&["--maxmemory", "256mb", "--maxmemory-policy", "noeviction"]);
    let profile = Kind::new("profile");
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("deploy"))
        .name("deploy")
        .kind(
            profile.clone(),
            KindConfig::new(Duration::from_secs(600))
                .load_cost(0.002)
                .hit_rate_target(0.9),
        )
        .build()
        .await
        .expect("build cache");
    within(Duration::from_secs(30), "backplane subscribed", || async {
        cache.stats().backplane.is_some_and(|b| b.subscribed)
    })
    .await;

    // Traffic: a load (L1 and L2 misses, an L2 read and write, a loader call), an L1 hit, and a
    // key nobody has.
    let _: Arc<String> = cache
        .get_or_load(&profile, "u1", || async {
            Ok::<_, std::io::Error>("user 1".to_owned())
        })
        .await
        .expect("load");
    let _: Option<Arc<String>> = cache.get(&profile, "u1").await;
    let _: Option<Arc<String>> = cache.get(&profile, "nobody").await;
    let stats = cache.stats();
    let p = &stats.kinds["profile"];
    assert_eq!((p.loader.calls, p.l1.hits), (1, 1), "{p:?}");
    within(Duration::from_secs(30), "Redis memory sampled", || async {
        cache.stats().redis_memory.is_some()
    })
    .await;

    let text = cache.prometheus_text();
    let exported = Exported::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let dash_path = deploy_dir().join("grafana/tiered-cache.json");
    let dash: Value = serde_json::from_str(&read(&dash_path)).expect("dashboard JSON");
    let dash_queries = dashboard_queries(&dash).expect("dashboard queries");
    let files = rule_files();
    let (rule_queries, recorded) = rule_queries(&files);

    let mut problems = Vec::new();
    let mut read_by = |queries: &[Query], recorded: &BTreeSet<String>| {
        let mut names = BTreeSet::new();
        for q in queries {
            problems.extend(check(q, &exported, recorded));
            if let Ok(r) = reads(&q.expr) {
                names.extend(r.names());
            }
        }
        names
    };
    // The dashboard must work without the recording rules: it may read exported series only.
    let dash_names = read_by(&dash_queries, &BTreeSet::new());
    let rule_names = read_by(&rule_queries, &recorded);
    assert!(
        problems.is_empty(),
        "queries of deploy/ read series the cache does not export:\n  {}\n\nexported: {:?}",
        problems.join("\n  "),
        exported.samples.keys().collect::<Vec<_>>()
    );

    // What the dashboard and the rules are for (issue 18): each is read somewhere.
    for name in [
        "cache_lookups_total",
        "cache_loader_calls_total",
        "cache_hits_total",
        "cache_misses_total",
        "cache_miss_reasons_total",
        "cache_l2_duration_seconds_bucket",
        "cache_loader_duration_seconds_bucket",
        "cache_loader_time_saved_seconds_total",
        "cache_cost_saved_total",
        "cache_bytes",
        "cache_max_bytes",
        "cache_evictions_total",
        "cache_breaker_state",
        "cache_backplane_subscribed",
        "cache_backplane_unsent",
        "cache_pending_invalidations",
        "cache_redis_used_memory_bytes",
        "cache_redis_maxmemory_bytes",
        "cache_hit_rate_target",
    ] {
        assert!(
            dash_names.contains(name),
            "the dashboard does not show {name}"
        );
    }
    for name in [
        "cache_hit_rate_target",
        "cache_breaker_state",
        "cache_l2_duration_seconds_bucket",
        "cache_backplane_subscribed",
        "cache_pending_invalidations",
        "cache_redis_used_memory_bytes",
        "cache_redis_maxmemory_bytes",
        "cache_redis_maxmemory_policy",
        "cache_l2_refusing_writes",
    ] {
        assert!(rule_names.contains(name), "no rule reads {name}");
    }
    // No recording rule shadows an exported series.
    assert!(recorded.len() >= 3, "recording rules: {recorded:?}");
    for name in &recorded {
        assert!(
            !exported.samples.contains_key(name),
            "{name} is also an exported series"
        );
    }

    // The checker fails on what it is there to catch.
    let q = |expr: &str| Query {
        origin: "broken".into(),
        expr: expr.into(),
    };
    for (expr, why) in [
        ("sum(rate(cache_hit_total[5m]))", "misspelt series"),
        (
            "sum(rate(cache_l2_latency_seconds_total[5m]))",
            "removed series",
        ),
        (
            r#"cache_l2_duration_seconds_bucket{op="reads"}"#,
            "label value no sample has",
        ),
        (
            r#"cache_breaker_state{tier="l1"}"#,
            "label the series does not carry",
        ),
        ("rate(cache_bytes[5m])", "rate over a gauge"),
        (
            "histogram_quantile(0.99, sum by (cache) (rate(cache_l2_duration_seconds_bucket[5m])))",
            "quantile without le",
        ),
        (
            "cache_kind:cache_lookups:rate10m",
            "recording rule read where none is loaded",
        ),
    ] {
        assert!(
            !check(&q(expr), &exported, &BTreeSet::new()).is_empty(),
            "the checker accepted a {why}: {expr}"
        );
    }
    assert!(check(&q("cache_kind:cache_lookups:rate10m"), &exported, &recorded).is_empty());
}
