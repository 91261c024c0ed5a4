//! The environment's layer of settings: `REDIS_URL`, `CACHE_PREFIX`, ... (the table is in the
//! rustdoc of `CacheBuilder::from_env`). `CACHE_CONFIG`, which names a config file rather than a
//! setting, is read by the builder.

use std::str::FromStr;
use std::time::Duration;

use super::{parse_bool, parse_bytes, L2Target, Pem, Settings};
use crate::error::{Error, Result};
use crate::l2::SentinelAuth;

/// Every variable [`read`] reads, and `CACHE_CONFIG` (read by the builder): what
/// `CacheBuilder::ENV_VARS` publishes for deployment recipes to check against.
pub(crate) const VARS: &[&str] = &[
    "CACHE_CONFIG",
    "REDIS_URL",
    "REDIS_CLUSTER_URLS",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "REDIS_SENTINEL_USERNAME",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_SENTINEL_TLS",
    "REDIS_TLS_CA_FILE",
    "CACHE_ENABLED",
    "CACHE_PREFIX",
    "CACHE_L1_MAX_BYTES",
    "CACHE_L2_CONNECT_TIMEOUT_MS",
    "CACHE_L2_TIMEOUT_MS",
    "CACHE_COMPRESS_THRESHOLD_BYTES",
    "CACHE_MAX_VALUE_BYTES",
    "CACHE_BREAKER_FAILURES",
    "CACHE_TTL_JITTER",
    "CACHE_BREAKER_OPEN_L1_TTL_MS",
    "CACHE_LOCK_TTL_MS",
    "CACHE_LOCK_WAIT_MS",
    "CACHE_MAX_PENDING_INVALIDATIONS",
    "CACHE_STATS_REPORT_SECS",
    "CACHE_FAIL_SAFE_GRACE_SECS",
    "CACHE_EVENT_BUFFER",
];

/// The settings set by the variables `var` gives (`std::env::var` but for tests); unset or empty
/// ones are left unset.
///
/// # Errors
/// [`Error::Config`] naming the first malformed variable.
pub(crate) fn read(var: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
    let get = |name: &str| {
        debug_assert!(VARS.contains(&name), "{name} is read but missing from VARS");
        var(name).filter(|v| !v.trim().is_empty())
    };
    let number = |name: &str| -> Result<Option<u64>> { parse(name, get(name)) };
    let millis = |name: &str| Ok::<_, Error>(number(name)?.map(Duration::from_millis));
    let secs = |name: &str| Ok::<_, Error>(number(name)?.map(Duration::from_secs));
    let bytes = |name: &str| -> Result<Option<u64>> {
        get(name)
            .map(|v| {
                parse_bytes(&v).map_err(|_| {
                    Error::Config(format!(
                        "{name}={v:?} is not a byte size (e.g. 67108864, 64M, 64MiB)"
                    ))
                })
            })
            .transpose()
    };
    let usize_bytes = |name: &str| -> Result<Option<usize>> {
        bytes(name)?
            .map(|b| {
                usize::try_from(b)
                    .map_err(|_| Error::Config(format!("{name}: {b} bytes is too large")))
            })
            .transpose()
    };

    let mut s = Settings::default();
    if let Some(sentinel) = sentinel(&get)? {
        s.l2 = Some(sentinel);
    } else if let Some(nodes) = get("REDIS_CLUSTER_URLS") {
        s.l2 = Some(L2Target::Cluster(
            nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        ));
    } else if let Some(url) = get("REDIS_URL") {
        s.l2 = Some(L2Target::Url(url));
    }
    if let Some(path) = get("REDIS_TLS_CA_FILE") {
        let pem = std::fs::read(&path)
            .map_err(|e| Error::Config(format!("REDIS_TLS_CA_FILE: cannot read {path}: {e}")))?;
        s.tls_root_cert = Some(Pem(pem));
    }
    if let Some(v) = get("CACHE_ENABLED") {
        s.enabled = Some(parse_bool(&v).ok_or_else(|| {
            Error::Config(format!("CACHE_ENABLED={v:?} is not a boolean (true/false)"))
        })?);
    }
    s.prefix = get("CACHE_PREFIX").map(|v| v.trim().to_owned());
    s.l1_max_bytes = bytes("CACHE_L1_MAX_BYTES")?;
    s.l2_connect_timeout = millis("CACHE_L2_CONNECT_TIMEOUT_MS")?;
    s.l2_timeout = millis("CACHE_L2_TIMEOUT_MS")?;
    s.compress_threshold = usize_bytes("CACHE_COMPRESS_THRESHOLD_BYTES")?;
    s.max_value_bytes = usize_bytes("CACHE_MAX_VALUE_BYTES")?;
    s.breaker_failure_threshold = parse("CACHE_BREAKER_FAILURES", get("CACHE_BREAKER_FAILURES"))?;
    s.ttl_jitter = parse("CACHE_TTL_JITTER", get("CACHE_TTL_JITTER"))?;
    s.breaker_open_l1_ttl = millis("CACHE_BREAKER_OPEN_L1_TTL_MS")?;
    s.distributed_lock_ttl = millis("CACHE_LOCK_TTL_MS")?;
    s.distributed_lock_wait = millis("CACHE_LOCK_WAIT_MS")?;
    s.max_pending_invalidations = parse(
        "CACHE_MAX_PENDING_INVALIDATIONS",
        get("CACHE_MAX_PENDING_INVALIDATIONS"),
    )?;
    s.stats_report_interval = secs("CACHE_STATS_REPORT_SECS")?;
    s.fail_safe_grace = secs("CACHE_FAIL_SAFE_GRACE_SECS")?;
    s.event_buffer = parse("CACHE_EVENT_BUFFER", get("CACHE_EVENT_BUFFER"))?;
    Ok(s)
}

/// The Sentinel deployment the variables describe (`REDIS_SENTINELS` and `REDIS_SENTINEL_MASTER`,
/// with the nodes' credentials, the sentinels' own and TLS from their variables); `None` when
/// they describe none. Every variable is read, whether used or not (`VARS` is what is read).
fn sentinel(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<L2Target>> {
    let sentinels = get("REDIS_SENTINELS");
    let master = get("REDIS_SENTINEL_MASTER");
    let auth = |user: &str, password: &str| SentinelAuth {
        username: get(user),
        password: get(password),
    };
    let node_auth = auth("REDIS_USERNAME", "REDIS_PASSWORD");
    let sentinel_auth = auth("REDIS_SENTINEL_USERNAME", "REDIS_SENTINEL_PASSWORD");
    let tls = get("REDIS_SENTINEL_TLS")
        .map(|v| {
            parse_bool(&v).ok_or_else(|| {
                Error::Config(format!(
                    "REDIS_SENTINEL_TLS={v:?} is not a boolean (true/false)"
                ))
            })
        })
        .transpose()?;
    let (sentinels, master) = match (sentinels, master) {
        (None, None) => return Ok(None),
        (Some(s), Some(m)) => (s, m),
        _ => {
            return Err(Error::Config(
                "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together".into(),
            ))
        }
    };
    if get("REDIS_URL").is_some() || get("REDIS_CLUSTER_URLS").is_some() {
        return Err(Error::Config(
            "set REDIS_SENTINELS or REDIS_URL / REDIS_CLUSTER_URLS, not both".into(),
        ));
    }
    let target = L2Target::Sentinel {
        sentinels: sentinels
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        master: master.trim().to_owned(),
        node_auth,
        sentinel_auth,
        tls: tls.unwrap_or(false),
    };
    target.check().map_err(|(key, m)| {
        let var = match key {
            "redis_sentinel_master" => "REDIS_SENTINEL_MASTER",
            _ => "REDIS_SENTINELS",
        };
        Error::Config(format!("{var}: {m}"))
    })?;
    Ok(Some(target))
}

fn parse<T: FromStr>(name: &str, value: Option<String>) -> Result<Option<T>> {
    value
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| Error::Config(format!("{name}={v:?} is not a valid number")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read_vars(vars: &[(&str, &str)]) -> Result<Settings> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(&|name| map.get(name).cloned())
    }

    #[test]
    fn variables_set_their_settings_and_empty_ones_are_unset() {
        let s = read_vars(&[
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("CACHE_PREFIX", " app "),
            ("CACHE_L1_MAX_BYTES", "8M"),
            ("CACHE_L2_TIMEOUT_MS", "80"),
            ("CACHE_MAX_VALUE_BYTES", "1MiB"),
            ("CACHE_ENABLED", "off"),
            ("CACHE_STATS_REPORT_SECS", "0"),
            ("CACHE_LOCK_WAIT_MS", " "),
            ("CACHE_EVENT_BUFFER", "4096"),
        ])
        .unwrap();
        assert_eq!(s.l2, Some(L2Target::Url("redis://127.0.0.1:1".into())));
        assert_eq!(s.prefix.as_deref(), Some("app"));
        assert_eq!(s.l1_max_bytes, Some(8 << 20));
        assert_eq!(s.l2_timeout, Some(Duration::from_millis(80)));
        assert_eq!(s.max_value_bytes, Some(1 << 20));
        assert_eq!(s.enabled, Some(false));
        assert_eq!(s.stats_report_interval, Some(Duration::ZERO));
        assert_eq!(s.distributed_lock_wait, None);
        assert_eq!(s.l2_connect_timeout, None);
        assert_eq!(s.event_buffer, Some(4096));
    }

    #[test]
    fn the_cluster_list_wins_over_the_single_url() {
        let s = read_vars(&[
            ("REDIS_URL", "redis://a:1"),
            ("REDIS_CLUSTER_URLS", "redis://b:1, redis://c:1,"),
        ])
        .unwrap();
        assert_eq!(
            s.l2,
            Some(L2Target::Cluster(vec![
                "redis://b:1".into(),
                "redis://c:1".into()
            ]))
        );
    }

    #[test]
    fn the_sentinel_variables_make_one_target_with_both_credentials() {
        let s = read_vars(&[
            ("REDIS_SENTINELS", "10.0.0.1, 10.0.0.2:26380,"),
            ("REDIS_SENTINEL_MASTER", " mymaster "),
            ("REDIS_USERNAME", "cache"),
            ("REDIS_PASSWORD", "node-pw"),
            ("REDIS_SENTINEL_PASSWORD", "sentinel-pw"),
            ("REDIS_SENTINEL_TLS", "yes"),
        ])
        .unwrap();
        assert_eq!(
            s.l2,
            Some(L2Target::Sentinel {
                sentinels: vec!["10.0.0.1".into(), "10.0.0.2:26380".into()],
                master: "mymaster".into(),
                node_auth: SentinelAuth {
                    username: Some("cache".into()),
                    password: Some("node-pw".into()),
                },
                sentinel_auth: SentinelAuth {
                    username: None,
                    password: Some("sentinel-pw".into()),
                },
                tls: true,
            })
        );
        // Shown as the URL it makes, both passwords masked.
        let shown = format!("{s:?}");
        assert!(
            shown.contains("rediss+sentinel://") && shown.contains("10.0.0.2:26380/mymaster"),
            "{shown}"
        );
        assert!(
            !shown.contains("node-pw") && !shown.contains("sentinel-pw"),
            "{shown}"
        );
    }

    #[test]
    fn the_nodes_credentials_alone_leave_a_url_as_it_is() {
        let s = read_vars(&[
            ("REDIS_URL", "redis://a:1"),
            ("REDIS_USERNAME", "cache"),
            ("REDIS_PASSWORD", "node-pw"),
        ])
        .unwrap();
        assert_eq!(s.l2, Some(L2Target::Url("redis://a:1".into())));
    }

    #[test]
    fn sentinel_variables_that_do_not_fit_are_errors_naming_them() {
        for (vars, says) in [
            (&[("REDIS_SENTINELS", "a")][..], "REDIS_SENTINEL_MASTER"),
            (&[("REDIS_SENTINEL_MASTER", "m")][..], "REDIS_SENTINELS"),
            (
                &[
                    ("REDIS_SENTINELS", "a"),
                    ("REDIS_SENTINEL_MASTER", "m"),
                    ("REDIS_URL", "redis://b:1"),
                ][..],
                "not both",
            ),
            (
                &[("REDIS_SENTINELS", " , "), ("REDIS_SENTINEL_MASTER", "m")][..],
                "REDIS_SENTINELS: no sentinel",
            ),
            (
                &[
                    ("REDIS_SENTINELS", "redis://cache:pw@s-0:26379"),
                    ("REDIS_SENTINEL_MASTER", "m"),
                ][..],
                "REDIS_SENTINELS: sentinels are given as host[:port], not as URLs",
            ),
            (
                &[("REDIS_SENTINELS", "a:0"), ("REDIS_SENTINEL_MASTER", "m")][..],
                "REDIS_SENTINELS: sentinel 1 of 1 is not `host[:port]`",
            ),
            (&[("REDIS_SENTINEL_TLS", "maybe")][..], "REDIS_SENTINEL_TLS"),
        ] {
            let err = read_vars(vars).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains(says) && !m.contains("pw")),
                "{vars:?}: {err}"
            );
        }
    }

    #[test]
    fn malformed_variables_are_named() {
        for (var, value) in [
            ("CACHE_L1_MAX_BYTES", "a lot"),
            ("CACHE_ENABLED", "maybe"),
            ("CACHE_LOCK_WAIT_MS", "soon"),
            ("CACHE_TTL_JITTER", "ten percent"),
            ("CACHE_EVENT_BUFFER", "-1"),
            ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"),
        ] {
            let err = read_vars(&[(var, value)]).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains(var)),
                "{var}: {err}"
            );
        }
    }

    #[test]
    fn the_published_list_is_exactly_what_is_read() {
        let read = std::sync::Mutex::new(Vec::new());
        super::read(&|name: &str| {
            read.lock().unwrap().push(name.to_owned());
            None
        })
        .expect("nothing set");
        let mut read = read.into_inner().unwrap();
        read.push("CACHE_CONFIG".to_owned()); // read by the builder
        read.sort();
        read.dedup();
        let mut listed: Vec<String> = VARS.iter().map(|&v| v.to_owned()).collect();
        listed.sort();
        assert_eq!(read, listed);
    }
}
