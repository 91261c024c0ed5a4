//! A real 3-master Redis Cluster on loopback: three `redis-server --cluster-enabled yes` processes
//! joined with `redis-cli --cluster create ... --cluster-yes`.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::RedisServer;

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    for _ in 0..500 {
        let p = 20_000 + (rand_u16() % 20_000);
        let ok = TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok();
        if ok {
            return p;
        }
    }
    panic!("no free port pair (p, p+10000) for a cluster node");
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u16
}

/// Three masters, no replicas. Dropping it stops every node (and, when a test failed, prints each
/// node's log).
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let ports: Vec<u16> = self.nodes.iter().map(RedisServer::port).collect();
            eprintln!(
                "\n--- the test failed on the cluster of nodes {ports:?}: their logs follow ---"
            );
        }
        // Each node prints its own log as it is dropped.
    }
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits for `cluster_state:ok` on every node.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_on(
                    cluster_port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli (installed with redis-server; apt-get install -y redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &c.nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &n.port().to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok in 30 s:\n{info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        c
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes (for direct inspection).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Calls of `command`, or of every command, in `INFO commandstats` over all nodes.
    pub async fn total_calls(&self, command: Option<&str>) -> u64 {
        let mut total = 0;
        for n in &self.nodes {
            total += n.command_calls(command).await;
        }
        total
    }

    /// `CONFIG RESETSTAT` on every node.
    pub async fn reset_stats(&self) {
        for n in &self.nodes {
            n.reset_stats().await;
        }
    }

    /// Keys on every node matching `pattern` (KEYS is fine on a tiny test cluster).
    pub async fn keys(&self, pattern: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let mut c = n.conn().await;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut c)
                .await
                .expect("KEYS");
            out.push(keys);
        }
        out
    }
}
