//! A real headless Chromium, driven over the DevTools protocol (CDP), for tests of web pages (the
//! dashboard): navigate, evaluate JavaScript, emulate a viewport, take screenshots, and collect
//! every console error and uncaught exception.
//!
//! The client is written here, over `tokio-tungstenite`, rather than taken from a CDP or WebDriver
//! crate: the tests need a dozen CDP methods and a few events, while `chromiumoxide` and
//! `headless_chrome` compile Rust bindings generated for the whole protocol (minutes of CI time
//! on two cores, against seconds for a WebSocket crate), and WebDriver (`fantoccini` +
//! chromedriver) adds hyper's client stack and a second program, and has no standard way to
//! report console errors.
//!
//! A missing browser is a loud failure with instructions, never a skip.

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one CDP command may take (a busy 2-core machine starting a renderer included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The browser program: `$CHROMIUM` when set, otherwise the first of Debian's `chromium` and the
/// usual Chrome names found on `PATH`. Panics with instructions when there is none.
pub fn chromium_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "\n\n*** CHROMIUM is set to {}, which is not a file.\n\n",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "\n\n*** chromium was not found on PATH. The dashboard tests check the page in a real \
         browser.\n\
         *** Install it (Debian/Ubuntu: `apt-get update && apt-get install -y chromium`), set \
         CHROMIUM=/path/to/chrome,\n\
         *** or run `bash .ci/run`, which installs it and runs every test.\n\n"
    );
}

/// Whether this process runs as root (Chromium's sandbox refuses to start as root).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Something the page reported: a console error, an uncaught exception, or a browser log entry
/// of level error (failed network requests among them).
#[derive(Debug, Clone)]
pub struct Problem {
    /// `exception`, `console` or `log:<source>` (e.g. `log:network`).
    pub source: String,
    /// The message.
    pub text: String,
    /// The URL it is about, when there is one.
    pub url: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.source, self.text)?;
        if let Some(u) = &self.url {
            write!(f, " ({u})")?;
        }
        Ok(())
    }
}

struct Event {
    session: Option<String>,
    method: String,
    params: Value,
}

#[derive(Default)]
struct Shared {
    pending: HashMap<u64, oneshot::Sender<Result<Value, String>>>,
    events: Vec<Event>,
    closed: Option<String>,
}

/// The WebSocket connection to the browser.
struct Conn {
    sink: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    next_id: AtomicU64,
    shared: Mutex<Shared>,
    changed: Notify,
}

impl Conn {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a command without waiting for its answer; returns its id.
    async fn send(&self, session: Option<&str>, method: &str, params: Value) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send_as(id, session, method, params).await;
        id
    }

    async fn send_as(&self, id: u64, session: Option<&str>, method: &str, params: Value) {
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.sink
            .lock()
            .await
            .send(Message::text(msg.to_string()))
            .await
            .unwrap_or_else(|e| panic!("CDP {method}: send failed: {e}"));
    }

    /// Sends a command and waits for its answer; panics with the browser's error if it fails.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut sh = self.shared();
            if let Some(why) = &sh.closed {
                panic!("CDP {method}: the browser connection is closed ({why})");
            }
            sh.pending.insert(id, tx);
        }
        self.send_as(id, session, method, params).await;
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Err(_) => panic!("CDP {method}: no answer within {COMMAND_TIMEOUT:?}"),
            Ok(Err(_)) => panic!("CDP {method}: the browser connection closed"),
            Ok(Ok(Err(e))) => panic!("CDP {method} failed: {e}"),
            Ok(Ok(Ok(v))) => v,
        }
    }

    /// Reads the socket until it closes: answers go to their callers, events are kept.
    async fn read_loop(self: Arc<Self>, mut stream: SplitStream<Socket>) {
        let why = loop {
            let msg = match stream.next().await {
                None => break "end of stream".to_owned(),
                Some(Err(e)) => break e.to_string(),
                Some(Ok(m)) => m,
            };
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                Message::Close(_) => break "closed by the browser".to_owned(),
                _ => continue,
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let mut sh = self.shared();
            if let Some(id) = v.get("id").and_then(Value::as_u64) {
                if let Some(tx) = sh.pending.remove(&id) {
                    let r = match v.get("error") {
                        Some(e) => Err(e.to_string()),
                        None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    let _ = tx.send(r);
                }
            } else if let Some(method) = v.get("method").and_then(Value::as_str) {
                sh.events.push(Event {
                    session: v
                        .get("sessionId")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    method: method.to_owned(),
                    params: v.get("params").cloned().unwrap_or(Value::Null),
                });
                drop(sh);
                self.changed.notify_waiters();
            }
        };
        let mut sh = self.shared();
        sh.closed = Some(why);
        sh.pending.clear();
        drop(sh);
        self.changed.notify_waiters();
    }
}

/// A headless Chromium with a fresh profile, killed (with its helper processes) on drop.
pub struct Browser {
    /// `None` once it exited and was reaped.
    child: Option<Child>,
    conn: Arc<Conn>,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser (see [`chromium_path`]) and connects to it.
    pub async fn launch() -> Browser {
        let program = chromium_path();
        let profile = tempfile::tempdir().expect("temp dir for the browser profile");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let mut cmd = Command::new(&program);
        cmd.args([
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-dev-shm-usage",
            "--mute-audio",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
        if is_root() {
            // Chromium's sandbox does not run as root.
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank");
        // Its own process group, so that its helper processes can be killed with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        // Killed if the start fails.
        let mut guard = KillOnDrop(Some(child));
        let url = devtools_url(guard.0.as_mut().expect("child"), profile.path()).await;
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the browser at {url}: {e}"));
        let (sink, stream) = socket.split();
        let conn = Arc::new(Conn {
            sink: tokio::sync::Mutex::new(sink),
            next_id: AtomicU64::new(1),
            shared: Mutex::new(Shared::default()),
            changed: Notify::new(),
        });
        tokio::spawn(conn.clone().read_loop(stream));
        Browser {
            child: guard.0.take(),
            conn,
            profile,
        }
    }

    /// The browser's product and version (`Browser.getVersion`).
    pub async fn version(&self) -> String {
        let v = self.conn.call(None, "Browser.getVersion", json!({})).await;
        v["product"].as_str().unwrap_or("?").to_owned()
    }

    /// Opens a new tab on `about:blank`, with console, exception and log reporting on.
    pub async fn new_page(&self) -> Page {
        let target = self
            .conn
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await["targetId"]
            .as_str()
            .expect("targetId")
            .to_owned();
        let session = self
            .conn
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        let page = Page {
            conn: self.conn.clone(),
            session,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await;
        }
        page
    }

    /// The tail of the browser's own log (for failure messages).
    pub fn log_tail(&self) -> String {
        log_tail(self.profile.path())
    }

    /// Closes the browser (`Browser.close`); it is killed on drop if it did not exit within 10 s.
    pub async fn close(mut self) {
        // No answer is awaited: the browser may exit before sending it.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.conn.send(None, "Browser.close", json!({})),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    // Exited and reaped: its helpers went with it.
                    self.child = None;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }
}

/// Kills the browser's process group (whose id is the browser's pid, from `process_group(0)`:
/// helpers left behind go too), then reaps the browser. Called only on a child not reaped yet,
/// so that the group id is still ours.
fn kill_group(child: &mut Child) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    let _ = child.kill();
    let _ = child.wait();
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            kill_group(&mut c);
        }
    }
}

fn log_tail(profile: &Path) -> String {
    let log = std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits for `DevToolsActivePort` in the profile (written once the browser listens) and returns
/// the browser's WebSocket URL.
async fn devtools_url(child: &mut Child, profile: &Path) -> String {
    let file = profile.join("DevToolsActivePort");
    let started = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(&file) {
            let mut lines = s.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "chromium exited at startup ({status}); its log:\n{}",
                log_tail(profile)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "chromium did not open its DevTools port within 60 s; its log:\n{}",
            log_tail(profile)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One tab.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
}

/// A viewport to emulate.
#[derive(Debug, Clone, Copy)]
pub struct Viewport {
    /// CSS pixels.
    pub width: u32,
    /// CSS pixels.
    pub height: u32,
    /// Device pixels per CSS pixel.
    pub scale: f64,
    /// Mobile emulation (meta viewport honoured, overlay scrollbars).
    pub mobile: bool,
}

impl Viewport {
    /// A laptop screen: 1280×800.
    pub const DESKTOP: Viewport = Viewport {
        width: 1280,
        height: 800,
        scale: 1.0,
        mobile: false,
    };
    /// A phone: 390×844 CSS pixels at 2 device pixels per CSS pixel.
    pub const PHONE: Viewport = Viewport {
        width: 390,
        height: 844,
        scale: 2.0,
        mobile: true,
    };
}

impl Page {
    /// Sends a CDP command to this tab; panics with the browser's error if it fails.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.conn.call(Some(&self.session), method, params).await
    }

    fn event_count(&self) -> usize {
        self.conn.shared().events.len()
    }

    /// Waits for event `method` of this tab, received after the first `after` events.
    async fn wait_event(&self, method: &str, after: usize, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.conn.changed.notified();
            {
                let sh = self.conn.shared();
                if let Some(e) = sh.events[after.min(sh.events.len())..].iter().find(|e| {
                    e.method == method && e.session.as_deref() == Some(self.session.as_str())
                }) {
                    return e.params.clone();
                }
                if let Some(why) = &sh.closed {
                    panic!("waiting for {method}: the browser connection closed ({why})");
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {method} within {limit:?}");
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    /// Loads `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) {
        let after = self.event_count();
        let r = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            panic!("cannot load {url}: {e}");
        }
        self.wait_event("Page.loadEventFired", after, Duration::from_secs(60))
            .await;
    }

    /// Evaluates `expression` (promises awaited) and returns its value as JSON; panics on an
    /// exception.
    pub async fn eval(&self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("evaluating `{expression}` threw: {ex}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Polls `condition` (a JavaScript expression) every 50 ms until it is truthy; panics with
    /// `what` after `limit`. Returns how long it took.
    pub async fn wait_for(&self, condition: &str, limit: Duration, what: &str) -> Duration {
        let started = Instant::now();
        loop {
            let truthy = match self.eval(condition).await {
                Value::Null => false,
                Value::Bool(b) => b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return started.elapsed();
            }
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Emulates viewport `v` (the page is laid out again at its size).
    pub async fn set_viewport(&self, v: Viewport) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": v.width, "height": v.height,
                "deviceScaleFactor": v.scale, "mobile": v.mobile,
            }),
        )
        .await;
    }

    /// A PNG of the viewport (`full_page`: of the whole page, content below the fold included),
    /// written to `path` (directories created). Returns the PNG.
    pub async fn screenshot(&self, path: &Path, full_page: bool) -> Vec<u8> {
        let mut params = json!({ "format": "png", "captureBeyondViewport": full_page });
        if full_page {
            let m = self.call("Page.getLayoutMetrics", json!({})).await;
            let size = &m["cssContentSize"];
            params["clip"] = json!({
                "x": 0, "y": 0,
                "width": size["width"].as_f64().expect("content width"),
                "height": size["height"].as_f64().expect("content height"),
                "scale": 1,
            });
        }
        let r = self.call("Page.captureScreenshot", params).await;
        let data = r["data"].as_str().expect("screenshot data");
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, &png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        png
    }

    /// Everything this tab reported so far: console errors (`console.error`, failed
    /// `console.assert`), uncaught exceptions (rejected promises included) and browser log
    /// entries of level error.
    pub fn problems(&self) -> Vec<Problem> {
        let sh = self.conn.shared();
        sh.events
            .iter()
            .filter(|e| e.session.as_deref() == Some(self.session.as_str()))
            .filter_map(|e| problem_of(&e.method, &e.params))
            .collect()
    }
}

fn problem_of(method: &str, p: &Value) -> Option<Problem> {
    let url = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    match method {
        "Runtime.exceptionThrown" => {
            let d = &p["exceptionDetails"];
            let text = d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("exception")
                .to_owned();
            Some(Problem {
                source: "exception".into(),
                text,
                url: url(&d["url"]),
            })
        }
        "Runtime.consoleAPICalled" => {
            let kind = p["type"].as_str().unwrap_or("");
            if kind != "error" && kind != "assert" {
                return None;
            }
            let text = p["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .map(|a| match (a["value"].as_str(), a["description"].as_str()) {
                            (Some(v), _) => v.to_owned(),
                            (None, Some(d)) => d.to_owned(),
                            (None, None) => a["value"].to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            Some(Problem {
                source: "console".into(),
                text,
                url: None,
            })
        }
        "Log.entryAdded" => {
            let e = &p["entry"];
            if e["level"].as_str() != Some("error") {
                return None;
            }
            Some(Problem {
                source: format!("log:{}", e["source"].as_str().unwrap_or("?")),
                text: e["text"].as_str().unwrap_or("").to_owned(),
                url: url(&e["url"]),
            })
        }
        _ => None,
    }
}

/// Width and height of a PNG, from its header.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
    Some((w, h))
}
