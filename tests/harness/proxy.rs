//! A loopback TCP proxy in front of a `redis-server` for partial failures: added latency,
//! blackhole (connections accepted, nothing forwarded), refuse (accepted then closed at once),
//! cutting every open connection, cutting the connection that sends a given command (a link
//! lost between two commands of one operation), and hanging from a given command on (Redis
//! hung between two commands of one operation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Forward everything after this delay per chunk (each direction).
    Delay(Duration),
    /// Accept connections and read requests, but forward nothing (a hung network path).
    Blackhole,
    /// Accept new connections and close them at once; open ones are left alone.
    Refuse,
}

struct Shared {
    mode: Mutex<ProxyMode>,
    cut: watch::Sender<u64>,
    accepted: AtomicU64,
    /// [`FaultProxy::cut_on`]: byte strings that together mark the request to cut on (once).
    cut_on: Mutex<Option<Vec<Vec<u8>>>>,
    cut_on_done: AtomicU64,
    /// [`FaultProxy::hang_on`]: byte strings that together mark the request to hang on (once).
    hang_on: Mutex<Option<Vec<Vec<u8>>>>,
    hang_on_done: AtomicU64,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `127.0.0.1:upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            mode: Mutex::new(ProxyMode::Pass),
            cut,
            accepted: AtomicU64::new(0),
            cut_on: Mutex::new(None),
            cut_on_done: AtomicU64::new(0),
            hang_on: Mutex::new(None),
            hang_on_done: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::Relaxed);
                if s.mode() == ProxyMode::Refuse {
                    drop(client);
                    continue;
                }
                let s = s.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        relay(s, client, server).await;
                    }
                });
            }
        });
        FaultProxy { port, shared, task }
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sets the mode for all traffic from now on.
    pub fn set_mode(&self, mode: ProxyMode) {
        *self.shared.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// Closes every open connection (as a network reset would).
    pub fn cut_all(&self) {
        self.shared.cut.send_modify(|g| *g += 1);
    }

    /// Once: the first client data read from now on that contains every one of `parts` (say
    /// `PUBLISH` and a key) is not forwarded, and its connection is closed, as if the link went
    /// down just before that request. [`cuts_on_done`](Self::cuts_on_done) counts such cuts.
    pub fn cut_on(&self, parts: &[&[u8]]) {
        arm(&self.shared.cut_on, parts);
    }

    /// Once: from the first client data read from now on that contains every one of `parts` (say
    /// a tag's name), the proxy is a [`ProxyMode::Blackhole`]: that request and everything after it,
    /// on every connection, waits unforwarded until the mode is set again, as if Redis hung just
    /// before it.
    pub fn hang_on(&self, parts: &[&[u8]]) {
        arm(&self.shared.hang_on, parts);
    }

    /// How many times [`hang_on`](Self::hang_on) has found its request.
    pub fn hangs_done(&self) -> u64 {
        self.shared.hang_on_done.load(Ordering::Acquire)
    }

    /// How many connections [`cut_on`](Self::cut_on) has closed.
    pub fn cuts_on_done(&self) -> u64 {
        self.shared.cut_on_done.load(Ordering::Acquire)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

impl Shared {
    fn mode(&self) -> ProxyMode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether client data `chunk` is the request [`FaultProxy::cut_on`] waits for (taken once).
    fn cuts_on(&self, chunk: &[u8]) -> bool {
        let hit = take_match(&self.cut_on, chunk);
        if hit {
            self.cut_on_done.fetch_add(1, Ordering::AcqRel);
        }
        hit
    }

    /// Turns the proxy into a blackhole if client data `chunk` is the request
    /// [`FaultProxy::hang_on`] waits for (taken once).
    fn hang_if_asked(&self, chunk: &[u8]) {
        if take_match(&self.hang_on, chunk) {
            *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = ProxyMode::Blackhole;
            self.hang_on_done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Sets `slot` to wait for the request that contains every one of `parts`.
fn arm(slot: &Mutex<Option<Vec<Vec<u8>>>>, parts: &[&[u8]]) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(parts.iter().map(|p| p.to_vec()).collect());
}

/// Whether `chunk` contains every part `slot` holds; if so, the slot is emptied (a match is
/// taken once).
fn take_match(slot: &Mutex<Option<Vec<Vec<u8>>>>, chunk: &[u8]) -> bool {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    let hit = slot.as_ref().is_some_and(|parts| {
        parts
            .iter()
            .all(|p| chunk.windows(p.len().max(1)).any(|w| w == p.as_slice()))
    });
    if hit {
        *slot = None;
    }
    hit
}

async fn relay(s: Arc<Shared>, client: TcpStream, server: TcpStream) {
    // Without this, Nagle's algorithm and delayed ACKs add ~40 ms stalls to small writes.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cut = s.cut.subscribe();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(s.clone(), cr, sw, true);
    let down = pump(s.clone(), sr, cw, false);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

/// Forwards `from` to `to` (`upstream`: client to server). Delay is a delay line (each chunk is
/// due `d` after it was read; chunks do not queue behind each other's delays), so pipelined
/// traffic keeps its throughput.
async fn pump(
    s: Arc<Shared>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    upstream: bool,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if upstream && s.cuts_on(&buf[..n]) {
                // Ends the relay: both halves are dropped, the connection closes.
                return;
            }
            if upstream {
                s.hang_if_asked(&buf[..n]);
            }
            let due = loop {
                match s.mode() {
                    ProxyMode::Blackhole => tokio::time::sleep(Duration::from_millis(10)).await,
                    ProxyMode::Delay(d) => break tokio::time::Instant::now() + d,
                    ProxyMode::Pass | ProxyMode::Refuse => break tokio::time::Instant::now(),
                }
            };
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
