//! The deployment recipes of `deploy/` (Docker Compose, and Kubernetes with one Redis or with
//! Sentinel), checked without a container runtime:
//!
//! - every YAML file parses;
//! - every environment variable given to the app is one it reads: `CacheBuilder::ENV_VARS` (what
//!   `Cache::from_env` reads) and `examples::api::ENV_VARS` (what the example reads itself), both
//!   taken from the code; a Kubernetes variable that only serves to compose another one
//!   (`$(NAME)`) is allowed; its flags are `examples::api::FLAGS`;
//! - the app's memory limit is its L1 budget (`CACHE_L1_MAX_BYTES`) plus [`OVERHEAD`];
//! - Redis gets its password from the Secret (Compose: from `.env`), has a `maxmemory` below its
//!   container's limit and an `allkeys-*` policy (what the cache's guards make safe), and its
//!   cache user has exactly `cache_core::admin::acl_rules` of the app's prefix;
//! - the Sentinel variant points the app at every sentinel (`host:port`, as the library reads
//!   `REDIS_SENTINELS`) and at the master they monitor, as the user the data nodes and the
//!   sentinels have for it (on the sentinels with exactly `cache_core::admin::SENTINEL_ACL_RULES`).

use cache_core::admin::{acl_rules, SENTINEL_ACL_RULES};
use cache_core::CacheBuilder;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What the app's memory limit holds beyond its L1 budget: the process with an empty L1 (~20 MiB
/// of RSS measured for the example serving traffic), L1 up to 5% over its budget in malloc chunks
/// (the compare bench's "L1 memory" rows), values in flight (one at the largest size,
/// `CACHE_MAX_VALUE_BYTES`, 16 MiB, decoded while it is read), and slack. Stated in
/// deploy/README.md.
const OVERHEAD: u64 = 64 << 20;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every `*.yml` / `*.yaml` under `dir`.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The variables the app reads, from the code.
fn known_variables() -> BTreeSet<&'static str> {
    CacheBuilder::ENV_VARS
        .iter()
        .chain(examples::api::ENV_VARS)
        .copied()
        .collect()
}

/// `v[key]` as a string, or a panic naming `what`.
fn str_at<'a>(v: &'a Value, key: &str, what: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: no string `{key}`"))
}

/// A byte size as `CACHE_L1_MAX_BYTES` takes it: a number with an optional K, M or G suffix
/// (powers of 1024).
fn l1_bytes(v: &str) -> u64 {
    let v = v.trim();
    let (num, mult) = match v.chars().last() {
        Some('k' | 'K') => (&v[..v.len() - 1], 1 << 10),
        Some('m' | 'M') => (&v[..v.len() - 1], 1 << 20),
        Some('g' | 'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("not a byte size: {v}"))
        * mult
}

/// A Kubernetes memory quantity (`192Mi`, `1Gi`, `500M`, bytes).
fn k8s_bytes(v: &str) -> u64 {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = v.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap_or_else(|_| panic!("quantity {v}")) * mult;
        }
    }
    v.parse().unwrap_or_else(|_| panic!("quantity {v}"))
}

/// A Compose memory size (`192m`, `1g`, `512mb`: powers of 1024, as Docker reads them).
fn compose_bytes(v: &str) -> u64 {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (num, mult) = match v.chars().last() {
        Some('k') => (&v[..v.len() - 1], 1 << 10),
        Some('m') => (&v[..v.len() - 1], 1 << 20),
        Some('g') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("memory size {v}"))
        * mult
}

/// A Redis config size (`256mb` = 256 MiB, `256m` = 256,000,000, `1gb`, bytes).
fn redis_bytes(v: &str) -> u64 {
    let v = v.trim().to_ascii_lowercase();
    let units: [(&str, u64); 6] = [
        ("kb", 1 << 10),
        ("mb", 1 << 20),
        ("gb", 1 << 30),
        ("k", 1_000),
        ("m", 1_000_000),
        ("g", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = v.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap_or_else(|_| panic!("size {v}")) * mult;
        }
    }
    v.parse().unwrap_or_else(|_| panic!("size {v}"))
}

/// Checks a redis.conf: a `maxmemory` (returned, in bytes) and an `allkeys-*` policy.
fn check_redis_conf(conf: &str, what: &str) -> u64 {
    let directive = |name: &str| {
        conf.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.split_once(char::is_whitespace)?;
                (k == name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("{what}: no `{name}`"))
    };
    let maxmemory = redis_bytes(&directive("maxmemory"));
    assert!(maxmemory > 0, "{what}: maxmemory 0 is no limit");
    let policy = directive("maxmemory-policy");
    assert!(
        policy.starts_with("allkeys-"),
        "{what}: maxmemory-policy {policy}: the cache needs an allkeys-* policy (noeviction \
         refuses writes when full, volatile-* evicts guards too but never plain keys)"
    );
    maxmemory
}

/// Checks the flags the image or a container passes against the example's.
fn check_flags<'a>(flags: impl IntoIterator<Item = &'a str>, what: &str) {
    for f in flags {
        assert!(
            examples::api::FLAGS.contains(&f),
            "{what}: {f:?} is not a flag of the example ({:?})",
            examples::api::FLAGS
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes.

/// One folder of manifests (a kustomization): its documents and the Secrets it generates.
struct Manifests {
    dir: PathBuf,
    docs: Vec<Value>,
    /// `name -> keys`, from `secretGenerator` (keys from the committed `*.env.example`).
    secrets: Vec<(String, BTreeSet<String>)>,
}

fn kubernetes_variants() -> Vec<Manifests> {
    let root = deploy().join("kubernetes");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).expect("deploy/kubernetes") {
        let dir = entry.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let kustomization = documents(&dir.join("kustomization.yaml"))
            .pop()
            .unwrap_or_else(|| panic!("{}: empty kustomization", dir.display()));
        let mut docs = Vec::new();
        for r in kustomization["resources"]
            .as_sequence()
            .expect("resources")
            .iter()
            .filter_map(Value::as_str)
        {
            docs.extend(documents(&dir.join(r)));
        }
        let mut secrets = Vec::new();
        for g in kustomization["secretGenerator"]
            .as_sequence()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let name = str_at(g, "name", "secretGenerator").to_owned();
            let mut keys = BTreeSet::new();
            for env in g["envs"].as_sequence().expect("envs").iter() {
                let file = env.as_str().expect("env file");
                // The env file itself holds the passwords and is not committed: its example is.
                let example = read(&dir.join(format!("{file}.example")));
                keys.extend(
                    example
                        .lines()
                        .filter(|l| !l.trim_start().starts_with('#'))
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, _)| k.trim().to_owned()),
                );
            }
            secrets.push((name, keys));
        }
        out.push(Manifests { dir, docs, secrets });
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    assert!(
        out.len() >= 2,
        "deploy/kubernetes holds the base and the Sentinel variant"
    );
    out
}

impl Manifests {
    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs.iter().filter(move |d| d["kind"] == kind)
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .filter(|d| d["kind"] == kind)
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.name()))
    }

    /// The app's container (the Deployment's).
    fn app(&self) -> &Value {
        let deployments: Vec<&Value> = self.of_kind("Deployment").collect();
        assert_eq!(deployments.len(), 1, "{}: one app Deployment", self.name());
        &deployments[0]["spec"]["template"]["spec"]["containers"][0]
    }

    /// The app's variables with a plain value.
    fn app_value(&self, name: &str) -> Option<String> {
        env_list(self.app())
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str().map(str::to_owned))
    }

    /// The StatefulSets whose container runs `program` (`redis-server` data nodes, or
    /// `--sentinel`), with their start script.
    fn statefulsets(&self, sentinel: bool) -> Vec<(&Value, String)> {
        self.of_kind("StatefulSet")
            .map(|s| {
                let c = &s["spec"]["template"]["spec"]["containers"][0];
                let script = script_of(c);
                (s, script)
            })
            .filter(|(_, script)| script.contains("--sentinel") == sentinel)
            .collect()
    }

    /// Checks that a `secretKeyRef` names a generated Secret and one of its keys.
    fn check_secret_ref(&self, r: &Value, what: &str) {
        let name = str_at(r, "name", what);
        let key = str_at(r, "key", what);
        let keys = self
            .secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
            .unwrap_or_else(|| panic!("{what}: Secret {name} is not generated here"));
        assert!(keys.contains(key), "{what}: Secret {name} has no key {key}");
    }
}

fn env_list(container: &Value) -> Vec<Value> {
    container["env"].as_sequence().cloned().unwrap_or_default()
}

/// The shell script a container runs (`sh -ec SCRIPT`), or its command line.
fn script_of(container: &Value) -> String {
    let words = |k: &str| -> Vec<String> {
        container[k]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    [words("command"), words("args")].concat().join(" ")
}

#[test]
fn every_yaml_file_of_deploy_parses() {
    let files = yaml_files(&deploy());
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        let docs = documents(&f);
        assert!(!docs.is_empty(), "{}: no document", f.display());
        for d in &docs {
            assert!(
                d.is_mapping(),
                "{}: a document is not a mapping",
                f.display()
            );
        }
    }
}

#[test]
fn the_settings_passed_to_the_app_are_settings_it_reads() {
    let known = known_variables();
    // Kubernetes: each variable is read by the app, or only composes a later one ($(NAME)).
    for m in kubernetes_variants() {
        let app = m.app();
        let env = env_list(app);
        for (i, e) in env.iter().enumerate() {
            let name = str_at(e, "name", "env");
            if known.contains(name) {
                continue;
            }
            let reference = format!("$({name})");
            let composes = env[i + 1..].iter().any(|later| {
                later["value"]
                    .as_str()
                    .is_some_and(|v| v.contains(&reference))
            });
            assert!(
                composes,
                "{}: the app does not read {name} (known: {known:?}), and no later variable \
                 uses $({name})",
                m.name()
            );
        }
        let args = app["args"].as_sequence().cloned().unwrap_or_default();
        check_flags(args.iter().filter_map(Value::as_str), &m.name());
        assert!(
            app["command"].is_null(),
            "{}: the image's entrypoint runs the app",
            m.name()
        );
    }
    // Compose.
    let compose = documents(&deploy().join("compose/docker-compose.yml")).remove(0);
    let app = &compose["services"]["app"];
    for name in app["environment"]
        .as_mapping()
        .expect("app.environment is a mapping")
        .keys()
    {
        let name = name.as_str().expect("variable name");
        assert!(
            known.contains(name),
            "compose: the app does not read {name}"
        );
    }
    if let Some(cmd) = app["command"].as_sequence() {
        check_flags(cmd.iter().filter_map(Value::as_str), "compose");
    }
    // The image.
    let dockerfile = read(&deploy().join("Dockerfile"));
    for line in dockerfile.lines().filter(|l| l.starts_with("ENV ")) {
        let name = line[4..].split('=').next().unwrap_or_default().trim();
        assert!(
            known.contains(name),
            "Dockerfile: the app does not read {name}"
        );
    }
}

#[test]
fn the_image_builds_and_runs_the_example_as_deployed() {
    let dockerfile = read(&deploy().join("Dockerfile"));
    assert!(
        dockerfile.contains("--example api_endpoints"),
        "the image builds the api_endpoints example"
    );
    let entrypoint = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let words: Vec<String> = serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec form");
    let binary = &words[0];
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("COPY --from=build") && l.ends_with(binary.as_str())),
        "the entrypoint {binary} is the binary copied from the build stage"
    );
    check_flags(words[1..].iter().map(String::as_str), "Dockerfile");
    assert!(words.iter().any(|w| w == "--serve-only"), "{words:?}");
    // Compose builds it, and every recipe runs the same image.
    let compose = documents(&deploy().join("compose/docker-compose.yml")).remove(0);
    let app = &compose["services"]["app"];
    let dockerfile_path = str_at(&app["build"], "dockerfile", "compose build");
    let context = deploy()
        .join("compose")
        .join(str_at(&app["build"], "context", "compose build"));
    assert!(context.join(dockerfile_path).is_file(), "{dockerfile_path}");
    let image = str_at(app, "image", "compose app");
    for m in kubernetes_variants() {
        assert_eq!(
            str_at(m.app(), "image", "app container"),
            image,
            "{}",
            m.name()
        );
    }
}

#[test]
fn the_app_memory_limit_is_the_l1_budget_plus_the_stated_overhead() {
    for m in kubernetes_variants() {
        let budget = l1_bytes(
            &m.app_value("CACHE_L1_MAX_BYTES")
                .unwrap_or_else(|| panic!("{}: no CACHE_L1_MAX_BYTES", m.name())),
        );
        let resources = &m.app()["resources"];
        let limit = k8s_bytes(str_at(&resources["limits"], "memory", "limits"));
        let request = k8s_bytes(str_at(&resources["requests"], "memory", "requests"));
        assert_eq!(
            limit,
            budget + OVERHEAD,
            "{}: memory limit {limit} for an L1 budget of {budget}",
            m.name()
        );
        assert_eq!(request, limit, "{}: memory requested as limited", m.name());
    }
    let compose = documents(&deploy().join("compose/docker-compose.yml")).remove(0);
    let app = &compose["services"]["app"];
    let budget = l1_bytes(str_at(
        &app["environment"],
        "CACHE_L1_MAX_BYTES",
        "compose app",
    ));
    let limit = compose_bytes(str_at(
        &app["deploy"]["resources"]["limits"],
        "memory",
        "compose app limits",
    ));
    assert_eq!(limit, budget + OVERHEAD, "compose: memory limit");
}

#[test]
fn redis_gets_its_password_from_the_secret_a_memory_bound_and_an_allkeys_policy() {
    for m in kubernetes_variants() {
        let prefix = m
            .app_value("CACHE_PREFIX")
            .unwrap_or_else(|| panic!("{}: the app sets CACHE_PREFIX", m.name()));
        let config = m.named("ConfigMap", "redis-config");
        let maxmemory = check_redis_conf(
            str_at(&config["data"], "redis.conf", "redis-config"),
            &m.name(),
        );
        // The cache's user: exactly the documented rules (with Sentinel too: they hold the ROLE
        // the cache checks the master with).
        let rules = str_at(&config["data"], "acl-rules", "redis-config");
        let sentinel = !m.statefulsets(true).is_empty();
        assert_eq!(
            rules,
            acl_rules(&prefix),
            "{}: the cache user's rules",
            m.name()
        );
        let data_nodes = m.statefulsets(false);
        assert_eq!(data_nodes.len(), 1, "{}: one Redis StatefulSet", m.name());
        let (redis, script) = &data_nodes[0];
        let c = &redis["spec"]["template"]["spec"]["containers"][0];
        assert!(
            script.contains("user default off")
                && script.contains("user cache on >%s %s")
                && script.contains("\"$REDIS_PASSWORD\" \"$CACHE_ACL_RULES\""),
            "{}: Redis' user cache gets the Secret's password and the rules",
            m.name()
        );
        for e in env_list(c) {
            if let Some(r) = e.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
                m.check_secret_ref(r, &format!("{} redis env", m.name()));
            }
        }
        let password = env_list(c)
            .into_iter()
            .find(|e| e["name"] == "REDIS_PASSWORD")
            .unwrap_or_else(|| panic!("{}: Redis gets REDIS_PASSWORD", m.name()));
        assert!(
            password["valueFrom"]["secretKeyRef"].is_mapping(),
            "{}: Redis' password comes from a Secret",
            m.name()
        );
        assert!(
            !script.contains("--requirepass") && !script.contains("--masterauth"),
            "{}: no password on a command line",
            m.name()
        );
        let limit = k8s_bytes(str_at(&c["resources"]["limits"], "memory", "redis limits"));
        assert!(
            limit > maxmemory + maxmemory / 4,
            "{}: Redis' memory limit {limit} leaves no room above maxmemory {maxmemory}",
            m.name()
        );
        // The app reaches Redis as that user, with the same password.
        let app_secret: Vec<Value> = env_list(m.app())
            .into_iter()
            .filter(|e| e["name"] == "REDIS_PASSWORD")
            .collect();
        assert_eq!(app_secret.len(), 1, "{}: the app's password", m.name());
        assert_eq!(
            app_secret[0]["valueFrom"],
            password["valueFrom"],
            "{}: the app's password is Redis'",
            m.name()
        );
        if !sentinel {
            let url = m.app_value("REDIS_URL").expect("REDIS_URL");
            let service = str_at(&redis["spec"], "serviceName", "redis");
            assert_eq!(
                url,
                format!("redis://cache:$(REDIS_PASSWORD)@{service}:6379"),
                "{}",
                m.name()
            );
            m.named("Service", service);
        }
    }

    // Compose: the password from .env for both, the same redis.conf checks.
    let compose = documents(&deploy().join("compose/docker-compose.yml")).remove(0);
    let (app, redis) = (&compose["services"]["app"], &compose["services"]["redis"]);
    let url = str_at(&app["environment"], "REDIS_URL", "compose app");
    assert!(
        url.starts_with("redis://cache:${REDIS_PASSWORD:?") && url.ends_with("}@redis:6379"),
        "{url}"
    );
    let password = str_at(&redis["environment"], "REDIS_PASSWORD", "compose redis");
    assert!(password.starts_with("${REDIS_PASSWORD:?"), "{password}");
    let prefix = str_at(&app["environment"], "CACHE_PREFIX", "compose app");
    assert_eq!(
        str_at(&redis["environment"], "CACHE_ACL_RULES", "compose redis"),
        acl_rules(prefix)
    );
    let volume = redis["volumes"]
        .as_sequence()
        .and_then(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .find(|v| v.contains("redis.conf"))
        })
        .expect("redis.conf mounted");
    let conf = deploy()
        .join("compose")
        .join(volume.split(':').next().unwrap_or_default());
    let maxmemory = check_redis_conf(&read(&conf), "compose redis.conf");
    let limit = compose_bytes(str_at(
        &redis["deploy"]["resources"]["limits"],
        "memory",
        "compose redis limits",
    ));
    assert!(
        limit > maxmemory + maxmemory / 4,
        "compose: Redis' memory limit"
    );
    let script = script_of(redis);
    assert!(
        script.contains("user default off") && script.contains("--aclfile"),
        "{script}"
    );
    // `.env` holds the password and is not committed.
    let gitignore = read(&deploy().join("../.gitignore"));
    assert!(gitignore.lines().any(|l| l == "deploy/compose/.env"));
    assert!(gitignore
        .lines()
        .any(|l| l == "deploy/kubernetes/*/redis-auth.env"));
}

#[test]
fn the_sentinel_variant_points_the_app_at_every_sentinel_and_their_master() {
    let variants = kubernetes_variants();
    let m = variants
        .iter()
        .find(|m| !m.statefulsets(true).is_empty())
        .expect("a Sentinel variant");
    let sentinels = m.statefulsets(true);
    assert_eq!(sentinels.len(), 1);
    let (set, script) = &sentinels[0];
    let replicas = set["spec"]["replicas"].as_u64().expect("replicas");
    let (name, service) = (
        str_at(&set["metadata"], "name", "sentinels"),
        str_at(&set["spec"], "serviceName", "sentinels"),
    );
    let port = m.named("Service", service)["spec"]["ports"][0]["port"]
        .as_u64()
        .expect("sentinel port");
    // `sentinel monitor NAME HOST PORT QUORUM`.
    let monitor: Vec<&str> = script
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("sentinel monitor "))
        .expect("sentinel monitor")
        .split_whitespace()
        .collect();
    let quorum: u64 = monitor[3].parse().expect("quorum");
    assert!(
        quorum > replicas / 2 && quorum <= replicas,
        "quorum {quorum} of {replicas}"
    );
    assert_eq!(
        m.app_value("REDIS_SENTINEL_MASTER").as_deref(),
        Some(monitor[0]),
        "the app asks for the master the sentinels monitor"
    );
    // `host[:port]` each, as `CacheBuilder::from_env` reads them (their credentials are
    // variables of their own).
    let sentinels = m.app_value("REDIS_SENTINELS").expect("REDIS_SENTINELS");
    let listed: BTreeSet<String> = sentinels.split(',').map(str::to_owned).collect();
    for s in &listed {
        assert!(
            !s.contains("://") && !s.contains('@') && s.trim() == s,
            "REDIS_SENTINELS lists `host[:port]`s, not {s:?}"
        );
    }
    let expected: BTreeSet<String> = (0..replicas)
        .map(|i| format!("{name}-{i}.{service}:{port}"))
        .collect();
    assert_eq!(listed, expected, "the app knows every sentinel");
    assert!(
        m.app_value("REDIS_URL").is_none(),
        "with Sentinel the app finds the master through the sentinels"
    );
    // The sentinels' users: off by default, the app's with exactly the documented rules, its
    // password the app's REDIS_SENTINEL_PASSWORD.
    assert!(script.contains("user default off"));
    let app_user = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("user cache on "))
        .expect("the app's user on the sentinels");
    let (password_var, rules) = app_user
        .strip_prefix("user cache on >$")
        .and_then(|rest| rest.split_once(' '))
        .unwrap_or_else(|| panic!("`user cache on >$PASSWORD_VARIABLE rules`: {app_user}"));
    assert_eq!(rules, SENTINEL_ACL_RULES, "the app's user on the sentinels");
    assert_eq!(
        m.app_value("REDIS_SENTINEL_USERNAME").as_deref(),
        Some("cache")
    );
    let sentinel_container = &set["spec"]["template"]["spec"]["containers"][0];
    let secret_of = |env: Vec<Value>, var: &str, what: &str| {
        env.into_iter()
            .find(|e| e["name"] == var)
            .map(|e| e["valueFrom"]["secretKeyRef"].clone())
            .filter(Value::is_mapping)
            .unwrap_or_else(|| panic!("{what}: {var} from a Secret"))
    };
    assert_eq!(
        secret_of(env_list(m.app()), "REDIS_SENTINEL_PASSWORD", "the app"),
        secret_of(env_list(sentinel_container), password_var, "the sentinels"),
        "the app logs in to the sentinels with the password of their user cache"
    );
    // On the data nodes, the app is the user cache (its password checked above).
    assert_eq!(m.app_value("REDIS_USERNAME").as_deref(), Some("cache"));
    // The data nodes' script knows the same master name and sentinel service.
    let (_, data_script) = &m.statefulsets(false)[0];
    assert!(data_script.contains(&format!("get-master-addr-by-name {}", monitor[0])));
    assert!(data_script.contains(&format!(".{service}\"")));
}
