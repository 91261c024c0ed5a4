//! `Cache::prometheus_text` after real traffic against redis-server: the text is valid OpenMetrics
//! (checked by a strict parser below), and the hit and miss series per `tier` and `kind` carry
//! exactly the numbers of `Cache::stats`.

use cache_core::{metrics::PROMETHEUS_CONTENT_TYPE, Cache, Kind};
use cache_tests::{init_tracing, unique_prefix, RedisServer};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A family: its type and samples.
#[derive(Debug, Default)]
struct Family {
    ty: String,
    help: bool,
    samples: Vec<Sample>,
}

fn is_name(s: &str, extra: &[char]) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || extra.contains(&c))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
}

/// `{a="x",b="y\"z"}` → labels; the rest of the line after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_name(name, &[]) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    '"' => value.push('"'),
                    '\\' => value.push('\\'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// Parses the OpenMetrics text format strictly: metadata before samples, each family declared
/// once with its samples together, sample names matching their family's type, no repeated
/// series, `# EOF` as the last line.
fn parse_openmetrics(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition does not end with \"# EOF\\n\"")?;
    for (n, line) in body.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !is_name(name, &[':']) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            let fam = families.entry(name.to_owned()).or_default();
            if current.as_deref() != Some(name) {
                if !fam.samples.is_empty() || !fam.ty.is_empty() || fam.help {
                    return Err(at("family declared twice".into()));
                }
                current = Some(name.to_owned());
            }
            match kw {
                "HELP" => fam.help = true,
                "TYPE" => {
                    let ty = parts.next().unwrap_or("");
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "unknown",
                    ]
                    .contains(&ty)
                    {
                        return Err(at(format!("unknown type {ty:?}")));
                    }
                    fam.ty = ty.to_owned();
                }
                _ => return Err(at(format!("unknown metadata {kw:?}"))),
            }
            continue;
        }
        let fam_name = current
            .clone()
            .ok_or_else(|| at("sample before any TYPE".into()))?;
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = parse_value(
            rest.strip_prefix(' ')
                .ok_or_else(|| at("no value".into()))?,
        )
        .map_err(at)?;
        let fam = families.get_mut(&fam_name).ok_or("family vanished")?;
        let allowed: &[&str] = match fam.ty.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" | "unknown" => &[""],
            "info" => &["_info"],
            _ => &["", "_sum", "_count", "_bucket", "_created"],
        };
        if !allowed.iter().any(|s| format!("{fam_name}{s}") == name) {
            return Err(at(format!(
                "sample {name} does not belong to {} family {fam_name}",
                fam.ty
            )));
        }
        if fam.ty == "counter" && name.ends_with("_total") && (value.is_nan() || value < 0.0) {
            return Err(at("negative or NaN counter".into()));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("series repeated".into()));
        }
        fam.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(families)
}

/// The value of the one sample of `family` whose labels are `labels` plus the `cache` label
/// (any value: each exposition here is one cache's).
fn value_of(fams: &BTreeMap<String, Family>, family: &str, labels: &[(&str, &str)]) -> f64 {
    sample_of(fams, family, family, labels)
}

/// As [`value_of`], for the sample named `sample` (`x_count`, `x_bucket`...) of `family`.
fn sample_of(
    fams: &BTreeMap<String, Family>,
    family: &str,
    sample: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<&Sample> = fams
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"))
        .samples
        .iter()
        .filter(|s| {
            let mut l = s.labels.clone();
            l.remove("cache").is_some()
                && l == want
                && (s.name == sample || s.name == format!("{sample}_total"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{family} samples {sample} with {labels:?}: {found:?}"
    );
    found[0].value
}

#[test]
fn the_strict_parser_rejects_malformed_expositions() {
    let ok = "# HELP a_x h\n# TYPE a_x counter\na_x_total{k=\"v\\\"\"} 1\n# EOF\n";
    assert!(parse_openmetrics(ok).is_ok());
    for bad in [
        "# TYPE a counter\na_total 1\n",       // no EOF
        "# TYPE a counter\na 1\n# EOF\n",      // counter sample without _total
        "a 1\n# EOF\n",                        // sample before TYPE
        "# TYPE a gauge\na{k=\"v} 1\n# EOF\n", // unterminated label
        "# TYPE a gauge\na 1\na 2\n# EOF\n",   // repeated series
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n# EOF\n", // family twice
        "# TYPE a gauge\na one\n# EOF\n",      // bad value
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_is_valid_openmetrics_and_hits_and_misses_match_stats_per_tier_and_kind() {
    init_tracing();
    let server = RedisServer::start();
    let prefix = unique_prefix("metrics");
    let build = || async {
        Cache::builder()
            .redis_url(server.url())
            .prefix(&prefix)
            .build()
            .await
            .expect("build cache")
    };
    let (a, b) = (build().await, build().await);
    // A loads 3 users and 2 responses (L1 and L2 misses), then reads the users again (L1 hits).
    for i in 0..3 {
        let _: Arc<String> = a
            .get_or_load(Kind::DATABASE_QUERY, &format!("u{i}"), || async move {
                Ok::<_, std::io::Error>(format!("user {i}"))
            })
            .await
            .expect("load");
        let _: Option<Arc<String>> = a.get(Kind::DATABASE_QUERY, &format!("u{i}")).await;
    }
    for i in 0..2 {
        let _: Arc<u32> = a
            .get_or_load(Kind::API_RESPONSE, &format!("r{i}"), || async move {
                Ok::<_, std::io::Error>(i)
            })
            .await
            .expect("load");
    }
    // B reads the users from L2 (L1 misses, L2 hits) and misses a key nobody has.
    for i in 0..3 {
        let _: Option<Arc<String>> = b.get(Kind::DATABASE_QUERY, &format!("u{i}")).await;
    }
    let _: Option<Arc<String>> = b.get(Kind::DATABASE_QUERY, "nobody").await;

    for cache in [&a, &b] {
        let stats = cache.stats();
        let text = cache.prometheus_text();
        let fams = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(fams["cache_hits"].ty, "counter");
        assert_eq!(fams["cache_misses"].ty, "counter");
        assert_eq!(fams["cache_entries"].ty, "gauge");
        for (kind, t) in &stats.kinds {
            for (tier, hits, misses) in [
                ("l1", t.l1.hits, t.l1.misses),
                ("l2", t.l2.hits, t.l2.misses),
            ] {
                let labels = [("tier", tier), ("kind", kind.as_str())];
                assert_eq!(
                    value_of(&fams, "cache_hits", &labels),
                    hits as f64,
                    "{labels:?}"
                );
                assert_eq!(
                    value_of(&fams, "cache_misses", &labels),
                    misses as f64,
                    "{labels:?}"
                );
            }
        }
        assert_eq!(
            value_of(&fams, "cache_breaker_state", &[("state", "closed")]),
            1.0
        );
    }
    // The traffic above, as the series tell it (so the comparison is not 0 == 0).
    let fams = parse_openmetrics(&a.prometheus_text()).expect("parse");
    let db = [("tier", "l1"), ("kind", "database_query")];
    assert_eq!(value_of(&fams, "cache_hits", &db), 3.0);
    assert_eq!(value_of(&fams, "cache_misses", &db), 3.0);
    assert_eq!(
        value_of(&fams, "cache_loader_calls", &[("kind", "api_response")]),
        2.0
    );
    let fams = parse_openmetrics(&b.prometheus_text()).expect("parse");
    let db_l2 = [("tier", "l2"), ("kind", "database_query")];
    assert_eq!(value_of(&fams, "cache_hits", &db_l2), 3.0);
    assert_eq!(value_of(&fams, "cache_misses", &db_l2), 1.0);
    let read = [("op", "read"), ("kind", "database_query")];
    let reads = sample_of(
        &fams,
        "cache_l2_duration_seconds",
        "cache_l2_duration_seconds_count",
        &read,
    );
    assert!(reads >= 4.0, "{reads}");
    let below_inf = sample_of(
        &fams,
        "cache_l2_duration_seconds",
        "cache_l2_duration_seconds_bucket",
        &[("op", "read"), ("kind", "database_query"), ("le", "+Inf")],
    );
    assert_eq!(below_inf, reads, "the +Inf bucket counts every operation");
    // B's miss of "nobody" at L2: absent.
    let absent = [
        ("tier", "l2"),
        ("kind", "database_query"),
        ("reason", "absent"),
    ];
    assert_eq!(value_of(&fams, "cache_miss_reasons", &absent), 1.0);
    assert_eq!(
        PROMETHEUS_CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caches_in_one_registry_are_told_apart_by_their_cache_label() {
    use prometheus_client::registry::Registry;
    init_tracing();
    let users = Cache::builder()
        .prefix(unique_prefix("m-users"))
        .name("users")
        .build()
        .await
        .expect("build");
    let llm = Cache::builder()
        .prefix(unique_prefix("m-llm"))
        .name("llm")
        .build()
        .await
        .expect("build");
    for i in 0..3 {
        let _: Arc<u32> = users
            .get_or_load(Kind::DATABASE_QUERY, &format!("u{i}"), || async move {
                Ok::<_, std::io::Error>(i)
            })
            .await
            .expect("load");
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(cache_core::metrics::collector([&users, &llm])));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    // Valid (the strict parser rejects a family declared twice and a repeated series), with
    // both caches' samples in each family.
    let fams = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let caches = |family: &str| {
        fams[family]
            .samples
            .iter()
            .map(|s| s.labels["cache"].clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    for family in [
        "cache_hits",
        "cache_loader_calls",
        "cache_l2_configured",
        "cache_entries",
    ] {
        assert_eq!(
            caches(family),
            ["llm".to_owned(), "users".to_owned()].into(),
            "{family}"
        );
    }
    assert!(text.contains("cache_loader_calls_total{cache=\"users\",kind=\"database_query\"} 3\n"));
    assert!(text.contains("cache_loader_calls_total{cache=\"llm\",kind=\"database_query\"} 0\n"));
}
