//! A loopback TCP proxy in front of a `redis-server` for partial failures: added latency,
//! blackhole (connections accepted, nothing forwarded), refuse (accepted then closed at once), and
//! cutting every open connection.

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
}

async fn relay(s: Arc<Shared>, client: TcpStream, server: TcpStream) {
    // Without this, Nagle's algorithm and delayed ACKs add ~40 ms stalls to small writes.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cut = s.cut.subscribe();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(s.clone(), cr, sw);
    let down = pump(s.clone(), sr, cw);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

/// Forwards `from` to `to`. Delay is a delay line (each chunk is due `d` after it was read; chunks
/// do not queue behind each other's delays), so pipelined traffic keeps its throughput.
async fn pump(
    s: Arc<Shared>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
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
