//! One `redis-server` process.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on 127.0.0.1 at a free port, with no persistence, in its own temp dir.
/// Dropping it kills the process; dropped while a test panics, it first prints its log (the end
/// of it) and its port, so that a failed test shows what Redis saw.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
}

pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local addr").port()
}

/// Fails (never skips) with how to install `program` when it is not on `PATH`; `what` says which
/// tests need it and why.
pub(crate) fn check_binary(program: &str, package: &str, what: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "\n\n*** {program} was not found on PATH. {what}\n\
         *** Install it (Debian/Ubuntu: `apt-get update && apt-get install -y {package}`)\n\
         *** or run `bash .ci/run`, which installs it and runs every test.\n\n"
    );
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--requirepass", "x"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(free_port, extra)
    }

    /// Starts a server on a port from `pick` (retried when the port turns out to be taken).
    pub(crate) fn start_on(pick: fn() -> u16, extra: &[&str]) -> Self {
        check_binary(
            "redis-server",
            "redis-server",
            "These integration tests need a real Redis.",
        );
        let mut last_err = String::new();
        for _ in 0..5 {
            let mut s = RedisServer {
                child: None,
                port: pick(),
                dir: tempfile::tempdir().expect("temp dir"),
                extra_args: extra.iter().map(|s| s.to_string()).collect(),
            };
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    /// Reserves a free port without starting a server there (to test a Redis that appears later).
    pub fn reserve() -> Self {
        check_binary(
            "redis-server",
            "redis-server",
            "These integration tests need a real Redis.",
        );
        RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra_args: Vec::new(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server exited ({status}); log:\n{}",
                        self.log()
                    ));
                }
            }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = self.log();
        self.kill();
        Err(format!(
            "redis-server did not answer PING within 10 s; log:\n{log}"
        ))
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        // "+PONG", or "-NOAUTH" from a password-protected server: both mean it is up.
        matches!(s.read(&mut buf), Ok(n) if n > 0)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A plain client connection for inspecting the server directly.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// `INFO section` text.
    pub async fn info(&self, section: &str) -> String {
        let mut c = self.conn().await;
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut c)
            .await
            .expect("INFO")
    }

    /// The integer field `field` of `INFO section` (e.g. `("stats", "evicted_keys")`); panics
    /// when Redis does not report it.
    pub async fn info_u64(&self, section: &str, field: &str) -> u64 {
        let info = self.info(section).await;
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO {section} has no integer {field}"))
    }

    /// Calls of `command` (e.g. `"set"`), or of every command, since the last `reset_stats`.
    pub async fn command_calls(&self, command: Option<&str>) -> u64 {
        command_calls(&self.info("commandstats").await, command)
    }

    /// `CONFIG RESETSTAT`.
    pub async fn reset_stats(&self) {
        let mut c = self.conn().await;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut c)
            .await
            .expect("CONFIG RESETSTAT");
    }

    /// SIGKILLs the server (data is lost: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill) or [`reserve`](Self::reserve)).
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        // The port can stay in TIME_WAIT briefly; retry.
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "could not restart redis-server on port {}: {last}",
            self.port
        );
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("server is running");
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// SIGSTOP: the server hangs with its sockets open.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: resumes a paused server.
    pub fn resume(&self) {
        self.signal("CONT");
    }
}

/// Most log lines printed for a failed test (the end of the log, where the failure is).
const LOG_LINES_ON_FAILURE: usize = 200;

impl RedisServer {
    /// Prints the server's log to stderr (captured by the test harness, shown with the failed
    /// test's output).
    fn print_log_of_failed_test(&self) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let skipped = lines.len().saturating_sub(LOG_LINES_ON_FAILURE);
        let state = if self.child.is_some() {
            "running"
        } else {
            "not running"
        };
        eprintln!(
            "\n--- the test failed: log of redis-server on port {} ({state}), {} ---",
            self.port,
            self.log_path().display()
        );
        if lines.is_empty() {
            eprintln!("(empty: the server was never started, or logged nothing)");
        }
        if skipped > 0 {
            eprintln!("({skipped} earlier lines not shown)");
        }
        for line in &lines[skipped..] {
            eprintln!("{line}");
        }
        eprintln!(
            "--- end of the log of redis-server on port {} ---",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Dropped while the test panics: the server's side of the failure is in its log, which
        // goes away with the temp dir.
        if std::thread::panicking() {
            self.print_log_of_failed_test();
        }
        if self.child.is_some() {
            // A stopped process must be continued to die promptly on some systems.
            let _ = self.pid().map(|pid| {
                Command::new("kill")
                    .arg("-CONT")
                    .arg(pid.to_string())
                    .status()
            });
        }
        self.kill();
    }
}

/// Sum of `calls=` in `INFO commandstats` text: of `command` (lower case, e.g. `"set"`), or of every
/// command. 0 for a command that never ran.
pub fn command_calls(commandstats: &str, command: Option<&str>) -> u64 {
    let prefix = match command {
        Some(cmd) => format!("cmdstat_{cmd}:"),
        None => "cmdstat_".to_owned(),
    };
    commandstats
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
