//! Redis Sentinel: an L2 that follows the master the sentinels name.
//!
//! `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master-name[/db]`
//! `[?sentinel_username=...&sentinel_password=...]` names the sentinels (port 26379 when omitted)
//! and the master they monitor; `rediss+sentinel://` speaks TLS to every node (with the `tls`
//! feature). The credentials before the `@` are the Redis nodes' (as in a `redis://` URL), the
//! query's are the sentinels' own, for sentinels that require a password (`requirepass` or an ACL
//! user in `sentinel.conf`). Like every URL of the crate, a password holding `@ / ? # % & ,` must
//! be percent-encoded.
//!
//! # Following the master
//! A background task, the *watcher*, asks every sentinel `SENTINEL MASTER <name>` every
//! [`CHECK_EVERY`], at once when any sentinel publishes an event (it listens to all of them: a
//! new master is announced by each), and at once when an operation finds its connection broken or
//! the node read-only. It believes the answers with the highest config epoch (a sentinel that has
//! not heard of a failover yet answers with the older epoch and the older address), connects to
//! the address named, checks with `ROLE` that the node is a master, and operations use that
//! connection until the sentinels name another master or the connection fails (then operations
//! fail at once, as an outage, until a master answers again).
//!
//! A new address is a *switch*. Replication is asynchronous, so the new master may lack the last
//! writes the old one acknowledged: those of its last milliseconds when it died, and, after
//! `SENTINEL FAILOVER` (the old master stays up, and a master, until the sentinels reconfigure it
//! seconds later), every write made between the promotion and its announcement. Other instances
//! may switch a little before or after this one. So, on a switch:
//! - it is counted and announced ([`SentinelConn::switches`]): the backplane resubscribes on the
//!   new master (flushing L1, as after any link loss), and coherence re-applies this instance's
//!   writes of the last seconds to it (its journal);
//! - for [`READ_GRACE`], this instance does not read L2 ([`SentinelConn::reads_paused`]): loads go
//!   to their loaders, while the other instances, which noticed the move within milliseconds (or
//!   at their next question), re-apply their own writes. Writes go on.
//!
//! Until the sentinels name a new master, the old one is used as long as it answers: its reads are
//! consistent with every write it acknowledged, and its pub/sub carries invalidations between the
//! instances still on it (the journal covers what its replica missed).
//!
//! redis-rs' own `sentinel::SentinelClient` is not used: it believes the first sentinel that
//! names a master, which right after a failover may still name the old one, and after `SENTINEL
//! FAILOVER` the old master goes on answering `ROLE` as a master for ~10 s (until the sentinels
//! reconfigure it), so its check cannot tell (measured with redis 7.0); it has no URL form, and
//! nothing in it notices a failover while its connection stays up.

use futures::stream::{BoxStream, SelectAll, StreamExt};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture};
use redis::{RedisResult, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{watch, Notify};

use super::conn::client_for;
use super::error::redacted;

/// The sentinels' port when a URL gives none.
pub(crate) const DEFAULT_PORT: u16 = 26379;
/// How often the watcher asks the sentinels when nothing else wakes it.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(500);
/// The least time between two rounds of questions (a burst of failing operations wakes the
/// watcher many times).
const MIN_SPACING: Duration = Duration::from_millis(50);
/// How long after a switch this instance does not read L2: longer than the other instances may
/// take to notice the move (at most [`CHECK_EVERY`] when they cannot hear the sentinels' events)
/// and re-apply their recent writes to the new master.
pub(crate) const READ_GRACE: Duration = Duration::from_secs(1);

/// The URL schemes of a Sentinel deployment.
const SCHEMES: [(&str, bool); 2] = [("redis+sentinel", false), ("rediss+sentinel", true)];

/// Whether `url` is a `redis+sentinel://` or `rediss+sentinel://` URL.
pub(crate) fn is_sentinel_url(url: &str) -> bool {
    scheme_tls(url.trim()).is_some()
}

/// `Some(tls)` for a Sentinel URL.
fn scheme_tls(url: &str) -> Option<bool> {
    let (scheme, _) = url.split_once("://")?;
    SCHEMES
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(scheme))
        .map(|&(_, tls)| tls)
}

/// Credentials of one side (the Redis nodes, or the sentinels).
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Auth {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A parsed Sentinel URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SentinelSpec {
    /// `(host, port)` of each sentinel, in the order given (an IPv6 host without brackets).
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub(crate) master: String,
    pub(crate) db: i64,
    pub(crate) tls: bool,
    /// The Redis nodes' credentials.
    pub(crate) redis_auth: Auth,
    /// The sentinels' own.
    pub(crate) sentinel_auth: Auth,
}

impl SentinelSpec {
    /// Parses a Sentinel URL. The error never quotes the URL (it may hold passwords).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let tls = scheme_tls(url).ok_or("not a redis+sentinel:// or rediss+sentinel:// URL")?;
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (redis_auth, hosts) = match authority.rfind('@') {
            Some(at) => (userinfo(&authority[..at])?, &authority[at + 1..]),
            None => (Auth::default(), authority),
        };
        let count = hosts.split(',').count();
        let sentinels = hosts
            .split(',')
            .enumerate()
            .map(|(i, h)| {
                host_port(h.trim()).ok_or_else(|| {
                    format!(
                        "sentinel {} of {count} is not `host[:port]` (a password holding `@`, `/`, \
                         `?`, `#` or `%` must be percent-encoded)",
                        i + 1
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (tail, fragment) = match tail.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (tail, None),
        };
        match fragment {
            None => {}
            Some("insecure") => {
                return Err(
                    "the `#insecure` TLS fragment (no certificate verification) is refused".into(),
                )
            }
            Some(_) => return Err("a URL fragment (`#...`) is not allowed".into()),
        }
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let mut segments = path.strip_prefix('/').unwrap_or("").split('/');
        let master = decode(segments.next().unwrap_or(""), "the master name")?;
        if master.is_empty() {
            return Err("the master name is missing (`.../mymaster`)".into());
        }
        let db = match segments.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or("the database (after the master name) is not a number")?,
        };
        if segments.next().is_some() {
            return Err("the path is `/master-name[/db]`".into());
        }
        let mut sentinel_auth = Auth::default();
        let params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        for (i, param) in params.iter().enumerate() {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k {
                "sentinel_username" => {
                    sentinel_auth.username =
                        Some(decode(v, "sentinel_username")?).filter(|u| !u.is_empty());
                }
                "sentinel_password" => {
                    sentinel_auth.password =
                        Some(decode(v, "sentinel_password")?).filter(|p| !p.is_empty());
                }
                // Never named: after a `&` left unencoded in a password, the "name" is the rest
                // of the password.
                _ => {
                    return Err(format!(
                        "unknown parameter {} of {} (known: sentinel_username, sentinel_password; \
                         a `&` or `=` in a value must be percent-encoded: %26, %3D)",
                        i + 1,
                        params.len()
                    ))
                }
            }
        }
        Ok(Self {
            sentinels,
            master,
            db,
            tls,
            redis_auth,
            sentinel_auth,
        })
    }

    /// How a node is named in logs: `host:port` (`[v6]:port`).
    fn show((host, port): &(String, u16)) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// The connection settings of the node `(host, port)`, with `auth` and database `db`.
    fn node_info(
        &self,
        addr: &(String, u16),
        auth: &Auth,
        db: i64,
    ) -> RedisResult<redis::ConnectionInfo> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let info = format!("{scheme}://{}/{db}", Self::show(addr)).into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &auth.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &auth.password {
            settings = settings.set_password(p);
        }
        // As for every connection of the crate: no Nagle delay on pipelined requests.
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        Ok(info.set_redis_settings(settings).set_tcp_settings(tcp))
    }
}

/// Checks a Sentinel URL as [`SentinelSpec::parse`] reads it; the error never quotes it.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    SentinelSpec::parse(url).map(|_| ())
}

/// The `redis+sentinel://` URL (`rediss+sentinel://` with `tls`) of the `sentinels`
/// (`host[:port]` each) monitoring `master`, with the nodes' and the sentinels' credentials
/// (percent-encoded), for [`SentinelSpec::parse`] to read back.
pub(crate) fn sentinel_url(
    sentinels: &[String],
    master: &str,
    redis: &Auth,
    sentinel: &Auth,
    tls: bool,
) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let scheme = if tls {
        "rediss+sentinel"
    } else {
        "redis+sentinel"
    };
    let userinfo = match (&redis.username, &redis.password) {
        (None, None) => String::new(),
        (u, p) => format!(
            "{}:{}@",
            u.as_deref().map(enc).unwrap_or_default(),
            p.as_deref().map(enc).unwrap_or_default()
        ),
    };
    let mut query = Vec::new();
    if let Some(u) = &sentinel.username {
        query.push(format!("sentinel_username={}", enc(u)));
    }
    if let Some(p) = &sentinel.password {
        query.push(format!("sentinel_password={}", enc(p)));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let hosts: Vec<&str> = sentinels.iter().map(|s| s.trim()).collect();
    format!(
        "{scheme}://{userinfo}{}/{}{query}",
        hosts.join(","),
        enc(master.trim())
    )
}

/// `user:password`, `:password` or `user`, percent-decoded.
fn userinfo(s: &str) -> Result<Auth, String> {
    let (user, password) = match s.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (s, None),
    };
    Ok(Auth {
        username: Some(decode(user, "the username")?).filter(|u| !u.is_empty()),
        password: match password {
            Some(p) => Some(decode(p, "the password")?).filter(|p| !p.is_empty()),
            None => None,
        },
    })
}

/// Percent-decodes `s` (`what` names it in the error, which never quotes it).
fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

/// `host`, `host:port` or `[v6]:port` (the port defaults to [`DEFAULT_PORT`]).
fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !s.starts_with('[')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some((host.to_owned(), port))
}

/// `e`, naming which node (a sentinel, or the master, at `addr`) refused the credentials when
/// that is what it is: a wrong password means little without knowing whose.
fn rejected(e: RedisError, sentinel: bool, addr: &(String, u16)) -> RedisError {
    if !super::error::is_auth(&e) {
        return e;
    }
    let (who, whose) = if sentinel {
        (
            "a sentinel",
            "the sentinels' (sentinel_username / sentinel_password)",
        )
    } else {
        (
            "the master",
            "the Redis nodes' (the URL's user and password)",
        )
    };
    // A user without a command the cache sends: what to give it.
    let fix = match (e.code(), sentinel) {
        (Some("NOPERM"), true) => format!(
            " (give the sentinels' user cache_core::admin::SENTINEL_ACL_RULES: {})",
            super::acl::SENTINEL_ACL_RULES
        ),
        (Some("NOPERM"), false) => {
            " (give the nodes' user cache_core::admin::acl_rules of the cache's prefix, ROLE \
             included)"
                .to_owned()
        }
        _ => String::new(),
    };
    RedisError::from((
        redis::ErrorKind::AuthenticationFailed,
        "credentials rejected",
        format!(
            "{who} ({}) rejected {whose} credentials: {}{fix}",
            SentinelSpec::show(addr),
            redacted(&e)
        ),
    ))
}

/// The error operations get while no master is usable (an outage: `MASTERDOWN`).
fn master_down(detail: String) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown),
        "no Redis master known to the sentinels",
        detail,
    ))
}

/// Whether an error on the master's connection means it must be found again: the link is gone,
/// or the node is no longer a master (`READONLY`: a replica now; `MASTERDOWN`: a replica that
/// lost its own master).
fn must_find_master(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
}

/// The same, for an error reply inside a successful answer (a pipeline that ignores errors).
fn replica_reply(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if matches!(e.code(), "READONLY" | "MASTERDOWN"))
}

/// The connection to the current master: cheap to clone, shared with the watcher.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    shared: Arc<Shared>,
    db: i64,
}

struct Shared {
    spec: SentinelSpec,
    root_cert: Option<Vec<u8>>,
    connect_timeout: Duration,
    op_timeout: Duration,
    state: watch::Sender<State>,
    /// How many times the master moved to another address.
    switches: watch::Sender<u64>,
    /// The origin of `reads_from_ms`.
    epoch: std::time::Instant,
    /// Reads wait until then (ms since `epoch`) after a switch.
    reads_from_ms: AtomicU64,
    /// Wakes the watcher (held apart: the watcher must not keep `Shared` alive).
    wake: Arc<Notify>,
    watching: AtomicBool,
}

#[derive(Clone)]
enum State {
    /// Nothing known yet, or the connection broke: the watcher is on it; operations wait (within
    /// their deadline).
    Connecting,
    Ready(Arc<Master>),
    /// No usable master now: operations fail at once with this.
    Down(RedisError),
}

struct Master {
    addr: (String, u16),
    conn: MultiplexedConnection,
    client: redis::Client,
    /// Tells this connection from a later one to the same node.
    id: u64,
}

impl SentinelConn {
    /// The connection; nothing is sent until the first operation (which starts the watcher).
    pub(crate) fn new(
        spec: SentinelSpec,
        root_cert: Option<Vec<u8>>,
        connect_timeout: Duration,
        op_timeout: Duration,
    ) -> Self {
        let db = spec.db;
        Self {
            shared: Arc::new(Shared {
                spec,
                root_cert,
                connect_timeout,
                op_timeout,
                state: watch::Sender::new(State::Connecting),
                switches: watch::Sender::new(0),
                epoch: std::time::Instant::now(),
                reads_from_ms: AtomicU64::new(0),
                wake: Arc::new(Notify::new()),
                watching: AtomicBool::new(false),
            }),
            db,
        }
    }

    /// A counter that moves each time the master moves to another address.
    pub(crate) fn switches(&self) -> watch::Receiver<u64> {
        self.shared.switches.subscribe()
    }

    /// Whether reads wait ([`READ_GRACE`] after a switch).
    pub(crate) fn reads_paused(&self) -> bool {
        self.shared.elapsed_ms() < self.shared.reads_from_ms.load(Ordering::Relaxed)
    }

    fn start_watcher(&self) {
        if !self.shared.watching.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(&self.shared);
            let wake = self.shared.wake.clone();
            tokio::spawn(watch_master(weak, wake));
        }
    }

    /// The master's connection, waiting while the watcher connects (callers bound the wait).
    async fn master(&self) -> Result<Arc<Master>, RedisError> {
        self.start_watcher();
        let mut rx = self.shared.state.subscribe();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                State::Ready(m) => return Ok(m),
                State::Down(e) => {
                    self.shared.wake.notify_one();
                    return Err(e);
                }
                State::Connecting => self.shared.wake.notify_one(),
            }
            if rx.changed().await.is_err() {
                return Err(master_down("the Sentinel watcher stopped".into()));
            }
        }
    }

    /// A client for the master, for a dedicated connection (the backplane's pub/sub); `None`
    /// when none is usable within `deadline`.
    pub(crate) async fn master_client(&self, deadline: Duration) -> Option<redis::Client> {
        match tokio::time::timeout(deadline, self.master()).await {
            Ok(Ok(m)) => Some(m.client.clone()),
            _ => None,
        }
    }

    /// After an operation on `m` failed with `e`: when it means the master must be found again,
    /// the connection is given up (unless a newer one replaced it) and the watcher woken.
    fn failed(&self, m: &Master, e: &RedisError) {
        if must_find_master(e) {
            self.give_up(m);
        }
    }

    fn give_up(&self, m: &Master) {
        let id = m.id;
        self.shared.state.send_if_modified(|s| match s {
            State::Ready(cur) if cur.id == id => {
                *s = State::Connecting;
                true
            }
            _ => false,
        });
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let m = self.master().await?;
            let res = m.conn.clone().req_packed_command(cmd).await;
            match &res {
                Err(e) => self.failed(&m, e),
                Ok(v) if replica_reply(v) => self.give_up(&m),
                Ok(_) => {}
            }
            res
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let m = self.master().await?;
            let res = m.conn.clone().req_packed_commands(cmd, offset, count).await;
            match &res {
                Err(e) => self.failed(&m, e),
                Ok(vs) if vs.iter().any(replica_reply) => self.give_up(&m),
                Ok(_) => {}
            }
            res
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

/// What one sentinel says of the master.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    addr: (String, u16),
    epoch: u64,
}

impl View {
    /// From a `SENTINEL MASTER <name>` reply (field → value).
    fn parse(fields: &HashMap<String, String>) -> Option<Self> {
        let flags = fields.get("flags")?;
        let has = |f: &str| flags.split(',').any(|x| x == f);
        if !has("master") {
            return None;
        }
        Some(Self {
            addr: (fields.get("ip")?.clone(), fields.get("port")?.parse().ok()?),
            epoch: fields.get("config-epoch")?.parse().ok()?,
        })
    }
}

/// What the sentinels say, all answers together: the view with the highest config epoch (the
/// first sentinel's, in the order given, among equals). `None` when none answered.
///
/// A master they call down (`s_down`, `o_down`) or being failed over is still believed: while it
/// answers, it is the one the other instances use too.
fn believe(views: &[View]) -> Option<View> {
    let epoch = views.iter().map(|v| v.epoch).max()?;
    views.iter().find(|v| v.epoch == epoch).cloned()
}

/// One sentinel as the watcher keeps it.
struct SentinelLink {
    addr: (String, u16),
    conn: Option<MultiplexedConnection>,
    /// Its events are in the watcher's stream.
    listening: bool,
}

/// What a sentinel's event stream yields.
enum Event {
    /// Something happened (any event: a failover starting, a new master, a node down...).
    Heard,
    /// The subscription to sentinel `i` ended.
    Lost(usize),
}

/// The watcher's own state.
struct Watcher {
    links: Vec<SentinelLink>,
    events: SelectAll<BoxStream<'static, Event>>,
    /// The highest config epoch believed so far: answers below it are late news.
    epoch: u64,
    /// The master of the last connection.
    last_addr: Option<(String, u16)>,
    next_id: u64,
    /// The failure said last (said once until it changes).
    said: Option<String>,
}

/// The watcher task: one round of questions, then wait for [`CHECK_EVERY`], a wake-up or an
/// event; ends with the connection.
async fn watch_master(weak: Weak<Shared>, wake: Arc<Notify>) {
    let mut w = Watcher {
        links: Vec::new(),
        events: SelectAll::new(),
        epoch: 0,
        last_addr: None,
        next_id: 0,
        said: None,
    };
    loop {
        let began = tokio::time::Instant::now();
        {
            let Some(shared) = weak.upgrade() else {
                return;
            };
            if w.links.is_empty() {
                w.links = shared
                    .spec
                    .sentinels
                    .iter()
                    .map(|addr| SentinelLink {
                        addr: addr.clone(),
                        conn: None,
                        listening: false,
                    })
                    .collect();
            }
            w.round(&shared).await;
        }
        let events = &mut w.events;
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = wake.notified() => {}
            Some(ev) = events.next(), if !events.is_empty() => {
                if let Event::Lost(i) = ev {
                    if let Some(l) = w.links.get_mut(i) {
                        l.listening = false;
                    }
                }
            }
        }
        tokio::time::sleep_until(began + MIN_SPACING).await;
    }
}

impl Watcher {
    /// Asks every sentinel (and listens to those not listened to yet), then acts on the answer.
    async fn round(&mut self, shared: &Shared) {
        let spec = &shared.spec;
        let deadline = shared.connect_timeout + shared.op_timeout;
        let links = std::mem::take(&mut self.links);
        let asked = futures::future::join_all(links.into_iter().map(|mut link| async move {
            let mut stream = None;
            let client = spec
                .node_info(&link.addr, &spec.sentinel_auth, 0)
                .and_then(|info| client_for(info, spec.tls, shared.root_cert.as_deref()));
            let answer = match client {
                Err(e) => Err(e),
                Ok(client) => {
                    if !link.listening {
                        stream = listen(&client, deadline).await;
                        link.listening = stream.is_some();
                    }
                    ask(&mut link, &client, &spec.master, shared, deadline).await
                }
            };
            (link, stream, answer)
        }))
        .await;
        let mut views = Vec::new();
        let mut errors = Vec::new();
        for (i, (link, stream, answer)) in asked.into_iter().enumerate() {
            self.links.push(link);
            if let Some(s) = stream {
                let tagged = s
                    .map(|()| Event::Heard)
                    .chain(futures::stream::once(async move { Event::Lost(i) }));
                self.events.push(tagged.boxed());
            }
            match answer {
                Ok(v) => views.push(v),
                Err(e) => errors.push(e),
            }
        }
        self.act(shared, believe(&views), errors).await;
    }

    /// Acts on what the sentinels said (`None`: no answer; `errors`: why some did not answer).
    async fn act(&mut self, shared: &Shared, view: Option<View>, errors: Vec<RedisError>) {
        let spec = &shared.spec;
        let current = match &*shared.state.borrow() {
            State::Ready(m) => Some(m.addr.clone()),
            _ => None,
        };
        let Some(view) = view else {
            if current.is_some() {
                // The master's connection works and nothing says otherwise.
                return;
            }
            // An authentication error first: the startup check reports it as such.
            let e = errors
                .iter()
                .find(|e| super::error::is_auth(e))
                .or(errors.last())
                .cloned()
                .unwrap_or_else(|| master_down("no sentinel answered".into()));
            self.say(format!("no sentinel answered: {}", redacted(&e)));
            shared.state.send_replace(State::Down(e));
            return;
        };
        if view.epoch < self.epoch {
            // Only sentinels that have not heard of the last failover answered.
            return;
        }
        self.epoch = view.epoch;
        let shown = SentinelSpec::show(&view.addr);
        if current.as_ref() == Some(&view.addr) {
            return;
        }
        match connect(shared, &view.addr).await {
            Ok((conn, client)) => {
                self.next_id += 1;
                let previous = self.last_addr.replace(view.addr.clone());
                if previous.as_ref().is_some_and(|old| *old != view.addr) {
                    // Before the connection is handed out: no read of the new master before it.
                    let grace = u64::try_from(READ_GRACE.as_millis()).unwrap_or(u64::MAX);
                    shared
                        .reads_from_ms
                        .store(shared.elapsed_ms().saturating_add(grace), Ordering::Relaxed);
                }
                shared.state.send_replace(State::Ready(Arc::new(Master {
                    addr: view.addr.clone(),
                    conn,
                    client,
                    id: self.next_id,
                })));
                self.said = None;
                match previous {
                    Some(old) if old != view.addr => {
                        shared.switches.send_modify(|n| *n += 1);
                        tracing::warn!(
                            master = %spec.master,
                            from = %SentinelSpec::show(&old),
                            to = %shown,
                            "Redis Sentinel: the master moved; L2 follows it (this instance's \
                             recent writes are applied again, the backplane resubscribes, L2 \
                             reads wait {READ_GRACE:?})"
                        );
                    }
                    Some(_) => {
                        tracing::info!(master = %spec.master, at = %shown, "Redis Sentinel: reconnected to the master");
                    }
                    None => {
                        tracing::info!(master = %spec.master, at = %shown, "Redis Sentinel: connected to the master");
                    }
                }
            }
            Err(e) => {
                self.say(format!(
                    "the master the sentinels name for {} ({shown}) cannot be used: {}",
                    spec.master,
                    redacted(&e)
                ));
                shared.state.send_replace(State::Down(e));
            }
        }
    }

    /// Logs a failure, once until it changes.
    fn say(&mut self, what: String) {
        if self.said.as_ref() != Some(&what) {
            tracing::warn!("Redis Sentinel: {what}");
            self.said = Some(what);
        }
    }
}

/// Subscribes to every event of the sentinel of `client`; `None` when it cannot (the periodic
/// questions remain).
async fn listen(client: &redis::Client, deadline: Duration) -> Option<BoxStream<'static, ()>> {
    let sub = tokio::time::timeout(deadline, async {
        let mut ps = client.get_async_pubsub().await?;
        ps.psubscribe("*").await?;
        Ok::<_, RedisError>(ps)
    })
    .await;
    match sub {
        Ok(Ok(ps)) => Some(ps.into_on_message().map(|_| ()).boxed()),
        Ok(Err(e)) => {
            tracing::debug!(error = %redacted(&e), "cannot listen to a sentinel's events");
            None
        }
        Err(_) => None,
    }
}

/// `SENTINEL MASTER <name>` on the sentinel of `link`, connecting first when needed.
async fn ask(
    link: &mut SentinelLink,
    client: &redis::Client,
    master: &str,
    shared: &Shared,
    deadline: Duration,
) -> Result<View, RedisError> {
    let res = tokio::time::timeout(deadline, async {
        let mut conn = match link.conn.take() {
            Some(c) => c,
            None => {
                client
                    .get_multiplexed_async_connection_with_config(&config(shared))
                    .await?
            }
        };
        let reply: RedisResult<HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master)
            .query_async(&mut conn)
            .await;
        if !matches!(&reply, Err(e) if must_find_master(e)) {
            link.conn = Some(conn);
        }
        reply
    })
    .await;
    let fields = match res {
        Ok(Ok(fields)) => fields,
        Ok(Err(e)) => return Err(rejected(e, true, &link.addr)),
        Err(_) => {
            return Err(RedisError::from((
                redis::ErrorKind::Io,
                "a sentinel did not answer in time",
            )))
        }
    };
    View::parse(&fields).ok_or_else(|| {
        RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a sentinel's SENTINEL MASTER reply lacks the master's address or epoch",
        ))
    })
}

fn config(shared: &Shared) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(shared.connect_timeout))
        .set_response_timeout(Some(shared.op_timeout))
}

/// Connects to the node at `addr` and checks with `ROLE` that it is a master.
async fn connect(
    shared: &Shared,
    addr: &(String, u16),
) -> Result<(MultiplexedConnection, redis::Client), RedisError> {
    let spec = &shared.spec;
    let info = spec.node_info(addr, &spec.redis_auth, spec.db)?;
    let client = client_for(info, spec.tls, shared.root_cert.as_deref())?;
    let deadline = shared.connect_timeout + shared.op_timeout;
    let res = tokio::time::timeout(deadline, async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config(shared))
            .await?;
        let role: redis::Role = redis::cmd("ROLE").query_async(&mut conn).await?;
        Ok::<_, RedisError>((conn, role))
    })
    .await;
    match res {
        Ok(Ok((conn, redis::Role::Primary { .. }))) => Ok((conn, client)),
        Ok(Ok(_)) => Err(master_down(format!(
            "{} is not a master (yet)",
            SentinelSpec::show(addr)
        ))),
        Ok(Err(e)) => Err(rejected(e, false, addr)),
        Err(_) => Err(RedisError::from((
            redis::ErrorKind::Io,
            "the master did not answer in time",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(h: &str, p: u16) -> (String, u16) {
        (h.to_owned(), p)
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_both_credentials() {
        let s = SentinelSpec::parse(
            "redis+sentinel://app:p%40ss%2Fw@10.0.0.1:26380,sentinel-2,[::1]:5000/mymaster/2\
             ?sentinel_username=sen&sentinel_password=s%26cret",
        )
        .expect("parsed");
        assert_eq!(
            s.sentinels,
            vec![
                addr("10.0.0.1", 26380),
                addr("sentinel-2", 26379),
                addr("::1", 5000)
            ]
        );
        assert_eq!((s.master.as_str(), s.db, s.tls), ("mymaster", 2, false));
        assert_eq!(s.redis_auth.username.as_deref(), Some("app"));
        assert_eq!(s.redis_auth.password.as_deref(), Some("p@ss/w"));
        assert_eq!(s.sentinel_auth.username.as_deref(), Some("sen"));
        assert_eq!(s.sentinel_auth.password.as_deref(), Some("s&cret"));
        assert!(
            !format!("{s:?}").contains("p@ss"),
            "Debug shows no password"
        );

        let s = SentinelSpec::parse("rediss+sentinel://:pw@h/m").expect("parsed");
        assert!(s.tls);
        assert_eq!(s.redis_auth.username, None);
        assert_eq!(s.redis_auth.password.as_deref(), Some("pw"));
        assert_eq!(s.sentinel_auth, Auth::default());
        assert!(is_sentinel_url(" REDIS+SENTINEL://h/m"));
        assert!(!is_sentinel_url("redis://h:26379"));
    }

    #[test]
    fn urls_made_from_settings_read_back_as_the_same_settings() {
        let redis = Auth {
            username: Some("app user".into()),
            password: Some("p@ss/w?#%&,:".into()),
        };
        let sentinel = Auth {
            username: None,
            password: Some("s=&c#".into()),
        };
        let hosts = ["10.0.0.1:26380".to_owned(), " [::1] ".to_owned()];
        let url = sentinel_url(&hosts, "my-master", &redis, &sentinel, true);
        let spec = SentinelSpec::parse(&url).expect("parsed");
        assert_eq!(
            spec,
            SentinelSpec {
                sentinels: vec![addr("10.0.0.1", 26380), addr("::1", 26379)],
                master: "my-master".into(),
                db: 0,
                tls: true,
                redis_auth: redis,
                sentinel_auth: sentinel,
            }
        );
        let plain = sentinel_url(&hosts[..1], "m", &Auth::default(), &Auth::default(), false);
        assert_eq!(plain, "redis+sentinel://10.0.0.1:26380/m");
    }

    #[test]
    fn malformed_sentinel_urls_are_refused_without_quoting_them() {
        for (url, says) in [
            ("redis+sentinel://h1,h2", "master name is missing"),
            ("redis+sentinel://h1/", "master name is missing"),
            ("redis+sentinel://h1:0/m", "sentinel 1 of 1"),
            ("redis+sentinel://h1,h2:port/m", "sentinel 2 of 2"),
            ("redis+sentinel://,h2/m", "sentinel 1 of 2"),
            ("redis+sentinel://:SECRET/x@h/m", "percent-encoded"),
            ("redis+sentinel://h/m/x", "not a number"),
            ("redis+sentinel://h/m/1/2", "/master-name[/db]"),
            (
                "redis+sentinel://h/m?sentinel_pasword=SECRET",
                "unknown parameter 1 of 1",
            ),
            (
                "redis+sentinel://h/m?x%3DSECRET",
                "unknown parameter 1 of 1",
            ),
            // A password with an unencoded `&`: its tail reads as a parameter name.
            (
                "redis+sentinel://h/m?sentinel_password=pw&SECRET",
                "unknown parameter 2 of 2",
            ),
            ("rediss+sentinel://h/m#insecure", "#insecure"),
            ("redis+sentinel://h/m#SECRET", "fragment"),
            ("redis://h/m", "not a redis+sentinel"),
        ] {
            let e = SentinelSpec::parse(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("SECRET"), "{url}: {e}");
        }
    }

    fn view(h: &str, epoch: u64) -> View {
        View {
            addr: addr(h, 6379),
            epoch,
        }
    }

    #[test]
    fn a_refused_command_says_whose_user_lacks_it_and_the_rules_to_give() {
        let addr = ("10.0.0.1".to_owned(), 26379);
        let noperm = || {
            super::super::error::reply_error(
                "NOPERM this user has no permissions to run the 'sentinel|master' command",
            )
        };
        let e = rejected(noperm(), true, &addr).to_string();
        assert!(
            e.contains("a sentinel (10.0.0.1:26379)")
                && e.contains(super::super::acl::SENTINEL_ACL_RULES),
            "{e}"
        );
        let e = rejected(noperm(), false, &addr).to_string();
        assert!(
            e.contains("the master") && e.contains("ROLE included"),
            "{e}"
        );
        // Not an authentication error: as it was.
        let io = RedisError::from((redis::ErrorKind::Io, "broken"));
        assert_eq!(rejected(io, true, &addr).kind(), redis::ErrorKind::Io);
    }

    #[test]
    fn the_answer_with_the_highest_config_epoch_is_believed() {
        // A sentinel that has not heard of the failover yet still names the old master.
        let (old, new) = (view("a", 1), view("b", 2));
        assert_eq!(believe(&[old.clone(), new.clone()]), Some(new.clone()));
        assert_eq!(believe(&[new.clone(), old.clone()]), Some(new.clone()));
        // Among equals, the first sentinel's.
        assert_eq!(believe(&[old.clone(), view("c", 1)]), Some(old.clone()));
        assert_eq!(believe(&[]), None);
    }

    #[test]
    fn sentinel_master_replies_are_read() {
        let fields = |flags: &str| {
            [
                ("name", "mymaster"),
                ("ip", "127.0.0.1"),
                ("port", "7001"),
                ("flags", flags),
                ("config-epoch", "3"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<HashMap<_, _>>()
        };
        let read = View {
            addr: addr("127.0.0.1", 7001),
            epoch: 3,
        };
        // A master its sentinels call down or are failing over is still named (and used while
        // it answers).
        for flags in [
            "master",
            "master,s_down,o_down",
            "master,failover_in_progress",
        ] {
            assert_eq!(View::parse(&fields(flags)), Some(read.clone()), "{flags}");
        }
        assert_eq!(View::parse(&fields("slave")), None);
        let mut missing = fields("master");
        missing.remove("config-epoch");
        assert_eq!(View::parse(&missing), None);
    }

    #[test]
    fn losing_the_master_is_an_outage_that_makes_it_found_again() {
        let e = master_down("test".into());
        assert_eq!(e.code(), Some("MASTERDOWN"));
        assert!(super::super::error::is_outage(&e));
        assert!(must_find_master(&e));
        let readonly = super::super::error::reply_error(
            "READONLY You can't write against a read only replica.",
        );
        assert!(must_find_master(&readonly));
        let wrongtype = super::super::error::reply_error(
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        );
        assert!(!must_find_master(&wrongtype));
    }
}
