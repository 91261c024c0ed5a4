//! A Redis Sentinel deployment on loopback: a master, one replica and three sentinels (quorum 2),
//! all password-protected, on free ports, killed on drop. Optionally with an ACL user for the
//! cache on the nodes and on the sentinels ([`RedisSentinels::start_with_users`]).
//!
//! The sentinels decide fast (`down-after-milliseconds` 1000, `failover-timeout` 3000), so a
//! killed master is replaced within a few seconds. A missing `redis-sentinel` binary is a loud
//! failure with instructions, never a skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;
use crate::RedisServer;

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";
/// The password of the Redis nodes (`requirepass`, `masterauth`).
pub const PASSWORD: &str = "node-pw";
/// The sentinels' own password (`requirepass` in `sentinel.conf`).
pub const SENTINEL_PASSWORD: &str = "sentinel-pw";
/// After how long without answers a sentinel deems a node down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// The sentinels' failover timeout.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);

/// One `redis-sentinel` process with its own writable config file.
struct SentinelProcess {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl SentinelProcess {
    /// `user`: an ACL user `(name, rules)` of the sentinel besides its default one, with the
    /// password [`acl::PASSWORD`](crate::acl::PASSWORD).
    fn start(master_port: u16, user: Option<(&str, &str)>) -> Self {
        let user_line = user
            .map(|(name, rules)| format!("user {name} on >{} {rules}\n", crate::acl::PASSWORD))
            .unwrap_or_default();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir");
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 dir {dir}\n\
                 logfile {log}\n\
                 requirepass {SENTINEL_PASSWORD}\n\
                 sentinel sentinel-pass {SENTINEL_PASSWORD}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel auth-pass {MASTER_NAME} {PASSWORD}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {down}\n\
                 sentinel failover-timeout {MASTER_NAME} {failover}\n\
                 {user_line}",
                dir = dir.path().display(),
                log = dir.path().join("sentinel.log").display(),
                down = DOWN_AFTER.as_millis(),
                failover = FAILOVER_TIMEOUT.as_millis(),
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
            let child = Command::new("redis-sentinel")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-sentinel");
            let mut s = SentinelProcess {
                child: Some(child),
                port,
                dir,
            };
            match s.wait_up() {
                Ok(()) => return s,
                Err(e) => {
                    last = e;
                    s.kill();
                }
            }
        }
        panic!("could not start redis-sentinel: {last}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "redis-sentinel exited ({status}); log:\n{}",
                    self.log()
                ));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-sentinel did not listen within 10 s; log:\n{}",
            self.log()
        ))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(80);
            eprintln!(
                "\n--- the test failed: log of redis-sentinel on port {} ---",
                self.port
            );
            for l in &lines[from..] {
                eprintln!("{l}");
            }
            eprintln!(
                "--- end of the log of redis-sentinel on port {} ---",
                self.port
            );
        }
        self.kill();
    }
}

/// A master, a replica and three sentinels. The two Redis nodes keep their ports for life; which
/// of them is the master changes with failovers.
pub struct RedisSentinels {
    nodes: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

impl RedisSentinels {
    /// Starts the nodes and the sentinels, and waits until every sentinel knows the replica and
    /// the two other sentinels (so that a failover can be agreed on).
    pub async fn start() -> Self {
        Self::start_with_users(None, None).await
    }

    /// [`start`](Self::start), with an ACL user `(name, rules)` (password
    /// [`acl::PASSWORD`](crate::acl::PASSWORD)) on both Redis nodes (`node_user`) and on every
    /// sentinel (`sentinel_user`), besides the default users the harness and the sentinels use.
    pub async fn start_with_users(
        node_user: Option<(&str, &str)>,
        sentinel_user: Option<(&str, &str)>,
    ) -> Self {
        crate::server::check_binary(
            "redis-sentinel",
            "redis-sentinel",
            "The Sentinel tests need real sentinels.",
        );
        let auth = ["--requirepass", PASSWORD, "--masterauth", PASSWORD];
        let master = RedisServer::start_with(&auth);
        let port = master.port().to_string();
        let replica = RedisServer::start_with(&[
            "--requirepass",
            PASSWORD,
            "--masterauth",
            PASSWORD,
            "--replicaof",
            "127.0.0.1",
            &port,
        ]);
        let me = Self {
            sentinels: (0..3)
                .map(|_| SentinelProcess::start(master.port(), sentinel_user))
                .collect(),
            nodes: vec![master, replica],
        };
        if let Some((name, rules)) = node_user {
            // ACL users are not replicated: each node gets its own.
            for port in me.node_ports() {
                let mut set = redis::cmd("ACL");
                set.arg("SETUSER")
                    .arg(crate::acl::setuser_args(name, rules));
                let () = me
                    .node_query(port, &set)
                    .await
                    .unwrap_or_else(|e| panic!("ACL SETUSER {name} {rules}: {e}"));
            }
        }
        let replica_port = me.nodes[1].port();
        me.wait_synced(replica_port, Duration::from_secs(20)).await;
        let t = Instant::now();
        loop {
            let mut ready = true;
            for i in 0..me.sentinels.len() {
                let m = me.sentinel_master(i).await;
                let n = |f: &str| m.get(f).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
                ready &= n("num-slaves") >= 1 && n("num-other-sentinels") >= 2;
            }
            if ready {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the sentinels did not discover the replica and each other within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        me
    }

    /// `redis+sentinel://` URL of the deployment, with both passwords.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "redis+sentinel://:{PASSWORD}@{}/{MASTER_NAME}?sentinel_password={SENTINEL_PASSWORD}",
            hosts.join(",")
        )
    }

    /// `redis+sentinel://` URL of the deployment as `user` on the nodes and on the sentinels
    /// (made by [`start_with_users`](Self::start_with_users)), password
    /// [`acl::PASSWORD`](crate::acl::PASSWORD) on both.
    pub fn url_as(&self, user: &str) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let password = crate::acl::PASSWORD;
        format!(
            "redis+sentinel://{user}:{password}@{}/{MASTER_NAME}\
             ?sentinel_username={user}&sentinel_password={password}",
            hosts.join(",")
        )
    }

    /// `redis://` URL of sentinel `i` as its default user (every command).
    pub fn sentinel_admin_url(&self, i: usize) -> String {
        format!(
            "redis://:{SENTINEL_PASSWORD}@127.0.0.1:{}",
            self.sentinels[i].port
        )
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The Redis nodes' ports (the first was the master at the start).
    pub fn node_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `redis://` URL of the node on `port`, with the password.
    pub fn node_url(&self, port: u16) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{port}")
    }

    /// `cmd` on the node on `port`, on a new connection (the sentinels kill the connections of
    /// a node they reconfigure, so none is kept).
    pub async fn node_query<T: redis::FromRedisValue>(
        &self,
        port: u16,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let mut c = redis::Client::open(self.node_url(port))?
            .get_multiplexed_async_connection()
            .await?;
        cmd.query_async(&mut c).await
    }

    /// Polls until the node on `port` says it is a master (errors while it is being reconfigured
    /// are retried); returns how long it took.
    pub async fn wait_promoted(&self, port: u16, limit: Duration) -> Duration {
        let t = Instant::now();
        loop {
            if let Ok(redis::Role::Primary { .. }) =
                self.node_query(port, &redis::cmd("ROLE")).await
            {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < limit,
                "the node on port {port} was not promoted within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn sentinel_conn(&self, i: usize) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.sentinel_admin_url(i))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a sentinel")
    }

    /// `SENTINEL MASTER mymaster` on sentinel `i`.
    async fn sentinel_master(&self, i: usize) -> std::collections::HashMap<String, String> {
        let mut c = self.sentinel_conn(i).await;
        redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(MASTER_NAME)
            .query_async(&mut c)
            .await
            .expect("SENTINEL MASTER")
    }

    /// The master's port as sentinel `i` sees it.
    pub async fn master_port_seen_by(&self, i: usize) -> u16 {
        let mut c = self.sentinel_conn(i).await;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query_async(&mut c)
            .await
            .expect("SENTINEL GET-MASTER-ADDR-BY-NAME");
        port
    }

    /// `SENTINEL FAILOVER mymaster` (sent to the first sentinel): the replica is promoted at once,
    /// without asking the others.
    pub async fn failover(&self) {
        let mut c = self.sentinel_conn(0).await;
        let () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query_async(&mut c)
            .await
            .expect("SENTINEL FAILOVER");
    }

    fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// SIGKILLs the node on `port` (it stays dead).
    pub fn kill_node(&mut self, port: u16) {
        self.node(port).kill();
    }

    /// The node on `port` stops feeding its replicas: it drops their links and refuses their
    /// reconnection (its password changes; the connections already open keep working), so the
    /// writes it acknowledges from now on reach none of them.
    pub async fn starve_replicas(&self, port: u16) {
        let mut set = redis::cmd("CONFIG");
        set.arg("SET")
            .arg("requirepass")
            .arg("changed-to-starve-replicas");
        let mut c = redis::Client::open(self.node_url(port))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the master");
        let () = set
            .query_async(&mut c)
            .await
            .expect("CONFIG SET requirepass");
        let _: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .query_async(&mut c)
            .await
            .expect("CLIENT KILL TYPE replica");
    }

    /// Waits until every sentinel names a master other than the node on `port`; returns the new
    /// master's port.
    pub async fn wait_master_moved_from(&self, port: u16, limit: Duration) -> u16 {
        let t = Instant::now();
        loop {
            let mut seen = Vec::new();
            for i in 0..self.sentinels.len() {
                seen.push(self.master_port_seen_by(i).await);
            }
            if seen.iter().all(|p| *p != port && *p == seen[0]) {
                return seen[0];
            }
            assert!(
                t.elapsed() < limit,
                "the sentinels still name {seen:?} as master {limit:?} after the failover began"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the node on `port` is a replica whose link to its master is up and in sync.
    pub async fn wait_synced(&self, port: u16, limit: Duration) {
        let t = Instant::now();
        loop {
            let mut cmd = redis::cmd("INFO");
            cmd.arg("replication");
            let info: String = self.node_query(port, &cmd).await.unwrap_or_default();
            if info.contains("role:slave")
                && info.contains("master_link_status:up")
                && info.contains("master_sync_in_progress:0")
            {
                return;
            }
            assert!(
                t.elapsed() < limit,
                "the node on port {port} is not a replica in sync within {limit:?}:\n{info}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
