//! Connection setup: one node through a `ConnectionManager`, a Redis Cluster through the async
//! cluster client, or the master of a Sentinel deployment (`sentinel.rs`); all behind [`Conn`], so
//! every L2 operation is written once.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use std::num::NonZeroUsize;
use std::time::Duration;

use super::sentinel::{self, SentinelConn, SentinelSpec};
use super::{redact_url, L2Config};
use crate::error::Error;

/// The L2 connection: single node, cluster, or the master the sentinels name. Cheap to clone
/// (every kind multiplexes).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl Conn {
    /// Whether reads of L2 wait (Sentinel, right after the master moved).
    pub(crate) fn reads_paused(&self) -> bool {
        matches!(self, Conn::Sentinel(s) if s.reads_paused())
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

/// Where the backplane subscribes: the configured nodes, or the master the sentinels name now
/// (a subscription on an old master would hear nothing published on the new one).
#[derive(Clone)]
pub(crate) enum PubSubNodes {
    Fixed(Vec<redis::Client>),
    Sentinel(SentinelConn),
}

impl PubSubNodes {
    /// Clients to try, in order; none while no master is usable within `deadline`.
    pub(crate) async fn clients(&self, deadline: Duration) -> Vec<redis::Client> {
        match self {
            PubSubNodes::Fixed(c) => c.clone(),
            PubSubNodes::Sentinel(s) => s.master_client(deadline).await.into_iter().collect(),
        }
    }

    /// A counter that moves each time the master moves (Sentinel); `None` otherwise.
    pub(crate) fn switches(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            PubSubNodes::Fixed(_) => None,
            PubSubNodes::Sentinel(s) => Some(s.switches()),
        }
    }
}

/// How messages name the URLs of `urls`: the redaction of the whole list (a password holding a
/// comma was split across two "URLs" by whoever split the list; redacted one by one, its pieces
/// could pass for a host or a port), and which node of it is meant.
pub(crate) fn shown_urls(urls: &[String]) -> String {
    redact_url(&urls.join(","))
}

/// `URL` of a single node, `(node N of M) in URLS` of a list.
fn node_name(urls: &[String], i: usize) -> String {
    match urls {
        [_] => shown_urls(urls),
        _ => format!("(node {} of {}) in {}", i + 1, urls.len(), shown_urls(urls)),
    }
}

/// A parsed URL with `TCP_NODELAY` on. redis-rs leaves Nagle's algorithm on: pipelined requests on
/// a multiplexed connection would then wait for delayed ACKs (up to ~40 ms) whenever the network
/// has latency. `name` is how messages name the URL (see [`node_name`]).
fn connection_info(url: &str, name: &str) -> Result<redis::ConnectionInfo, Error> {
    if url.contains("#insecure") {
        return Err(Error::Config(format!(
            "{name}: the `#insecure` TLS fragment (no certificate verification) is refused"
        )));
    }
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        return Err(Error::Config(format!(
            "{name}: a `rediss://` (TLS) URL needs cache-core's `tls` feature"
        )));
    }
    let info = url.into_connection_info().map_err(|e| {
        let hint = if url.contains('@') {
            " (a password holding `/`, `?`, `#`, `@` or `%` must be percent-encoded)"
        } else {
            ""
        };
        Error::Config(format!("invalid Redis URL {name}: {}{hint}", kind_text(&e)))
    })?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

/// The masters of a cluster, from `CLUSTER NODES` output: `(host, port)` of every line flagged
/// `master` and not `fail`. A master only suspected by this node (`fail?`, PFAIL) is kept: it
/// still serves its slots until the cluster agrees it failed.
pub(crate) fn masters(cluster_nodes: &str) -> Vec<(String, u16)> {
    cluster_nodes
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _id = f.next()?;
            let addr = f.next()?;
            let flags = f.next()?;
            let has = |flag: &str| flags.split(',').any(|x| x == flag);
            if !has("master") || has("fail") {
                return None;
            }
            // ip:port@cport[,hostname]
            let hostport = addr.split('@').next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// Number of hash slots of a Redis Cluster.
pub(crate) const SLOTS: usize = 16_384;

/// The hash slot of `key`, as Redis computes it: CRC16 (XMODEM) of the key, or of its `{hash tag}`
/// when it has a non-empty one, modulo 16384.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS as u16
}

/// Which master serves each slot, from `CLUSTER NODES` output: the masters (as [`masters`] lists
/// them) and, per slot, the index of its master (`None` for a slot no healthy master claims, or
/// one being imported).
pub(crate) fn slot_owners(cluster_nodes: &str) -> (Vec<(String, u16)>, Vec<Option<usize>>) {
    let mut owners = vec![None; SLOTS];
    let mut nodes = Vec::new();
    for line in cluster_nodes.lines() {
        let Some(node) = masters(line).pop() else {
            continue;
        };
        let idx = nodes.len();
        nodes.push(node);
        // id addr flags master ping pong epoch link slot...
        for range in line.split_whitespace().skip(8) {
            if range.starts_with('[') {
                continue; // a slot migrating or importing
            }
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (a.parse::<usize>(), b.parse::<usize>()),
                None => (range.parse::<usize>(), range.parse::<usize>()),
            };
            if let (Ok(lo), Ok(hi)) = (lo, hi) {
                for owner in owners.iter_mut().take(hi.min(SLOTS - 1) + 1).skip(lo) {
                    *owner = Some(idx);
                }
            }
        }
    }
    (nodes, owners)
}

/// The routing of a command (or pipeline) to one cluster node, `(host, port)` as in
/// [`masters`].
pub(crate) fn by_address(
    (host, port): &(String, u16),
) -> redis::cluster_routing::SingleNodeRoutingInfo {
    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
        host: host.clone(),
        port: *port,
    }
}

/// Groups item indices by the master that serves their key (`keys[i]`), in first-seen order;
/// keys of slots with no known master go to a last group of their own (`None`).
pub(crate) fn group_by_master<'k>(
    keys: impl IntoIterator<Item = &'k [u8]>,
    owners: &[Option<usize>],
) -> Vec<(Option<usize>, Vec<usize>)> {
    let mut groups: Vec<(Option<usize>, Vec<usize>)> = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let owner = owners.get(key_slot(key) as usize).copied().flatten();
        match groups.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, members)) => members.push(i),
            None => groups.push((owner, vec![i])),
        }
    }
    groups.sort_by_key(|(o, _)| o.is_none());
    groups
}

/// A short description of a redis-rs error without its message, which for a malformed URL may
/// echo the URL (and so the password).
fn kind_text(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

/// Where the backplane of `conn` subscribes: the master of a Sentinel deployment, else a plain
/// client per URL.
pub(crate) fn pubsub_nodes(
    conn: &Conn,
    urls: &[String],
    root_cert: Option<&[u8]>,
) -> Result<PubSubNodes, Error> {
    if let Conn::Sentinel(s) = conn {
        return Ok(PubSubNodes::Sentinel(s.clone()));
    }
    urls.iter()
        .enumerate()
        .map(|(i, u)| client(u, &node_name(urls, i), root_cert))
        .collect::<Result<_, _>>()
        .map(PubSubNodes::Fixed)
}

/// A client for `url` (named `name` in messages); a `rediss://` one trusts `root_cert` (PEM) when
/// given, else the system roots.
fn client(url: &str, name: &str, root_cert: Option<&[u8]>) -> Result<redis::Client, Error> {
    let info = connection_info(url, name)?;
    let tls = url.starts_with("rediss://");
    client_for(info, tls, root_cert)
        .map_err(|e| Error::Config(format!("invalid Redis URL {name}: {}", kind_text(&e))))
}

/// A client for `info`; a TLS one (`tls`) trusts `root_cert` (PEM) when given, else the system
/// roots.
pub(super) fn client_for(
    info: redis::ConnectionInfo,
    tls: bool,
    root_cert: Option<&[u8]>,
) -> redis::RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    if tls {
        install_crypto_provider();
        if let Some(pem) = root_cert {
            return redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            );
        }
    }
    #[cfg(not(feature = "tls"))]
    let _ = (tls, root_cert);
    redis::Client::open(info)
}

/// rustls needs a process-wide crypto provider; install *ring* unless the application installed
/// one already (then this does nothing).
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Creates the connection without waiting for Redis: the first operation connects.
pub(crate) fn connect(cfg: &L2Config) -> Result<Conn, Error> {
    let (urls, connect_timeout, op_timeout) = (&cfg.urls[..], cfg.connect_timeout, cfg.op_timeout);
    let root_cert = cfg.tls_root_cert.as_deref();
    if !cfg.cluster {
        let [url] = urls else {
            return Err(Error::Config(
                "a single-node L2 takes exactly one URL; use the cluster setting for several"
                    .into(),
            ));
        };
        if sentinel::is_sentinel_url(url) {
            return sentinel_conn(url, cfg);
        }
        let client = client(url, &node_name(urls, 0), root_cert)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, cfg).map_err(|e| {
            Error::Config(format!("cannot create the Redis client: {}", kind_text(&e)))
        })?;
        return Ok(Conn::Single(conn));
    }
    if urls.is_empty() {
        return Err(Error::Config(
            "a Redis Cluster needs at least one node URL".into(),
        ));
    }
    let infos = urls
        .iter()
        .enumerate()
        .map(|(i, u)| connection_info(u, &node_name(urls, i)))
        .collect::<Result<Vec<_>, _>>()?;
    let tcp = infos[0].tcp_settings().clone();
    #[cfg(feature = "tls")]
    if urls.iter().any(|u| u.starts_with("rediss://")) {
        install_crypto_provider();
    }
    let builder = ClusterClientBuilder::new(infos);
    #[cfg(feature = "tls")]
    let builder = match root_cert {
        Some(pem) => builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        }),
        None => builder,
    };
    #[cfg(not(feature = "tls"))]
    let _ = root_cert;
    let client = builder
        .connection_timeout(connect_timeout)
        .response_timeout(op_timeout)
        .retries(1)
        .min_retry_wait(10)
        .max_retry_wait(200)
        // Without a bound, reconnects to a dead node never stop.
        .max_connection_attempts(NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN))
        .tcp_settings(tcp)
        .build()
        .map_err(|e| {
            Error::Config(format!(
                "cannot create the Redis Cluster client: {}",
                kind_text(&e)
            ))
        })?;
    let cfg = ClusterConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(op_timeout);
    Ok(Conn::Cluster(
        client.get_pending_async_connection_with_config(cfg),
    ))
}

/// The connection to the master of the Sentinel deployment `url` names.
fn sentinel_conn(url: &str, cfg: &L2Config) -> Result<Conn, Error> {
    let name = redact_url(url);
    let spec = SentinelSpec::parse(url)
        .map_err(|e| Error::Config(format!("invalid Redis Sentinel URL {name}: {e}")))?;
    if spec.tls && !cfg!(feature = "tls") {
        return Err(Error::Config(format!(
            "{name}: a `rediss+sentinel://` (TLS) URL needs cache-core's `tls` feature"
        )));
    }
    Ok(Conn::Sentinel(SentinelConn::new(
        spec,
        cfg.tls_root_cert.clone(),
        cfg.connect_timeout,
        cfg.op_timeout,
    )))
}

#[cfg(test)]
mod tests {
    use super::{group_by_master, key_slot, masters, slot_owners};

    #[test]
    fn masters_are_parsed_from_cluster_nodes_output() {
        let out = "07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\
                   67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922\n\
                   292f 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 connected\n\
                   e7d1 127.0.0.1:30004@40004 slave 07c3 0 1426238317741 1 connected\n";
        assert_eq!(
            masters(out),
            vec![
                ("127.0.0.1".to_string(), 30001),
                ("127.0.0.1".to_string(), 30002)
            ]
        );
    }

    #[test]
    fn only_the_exact_fail_flag_drops_a_master() {
        let out = "a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\
                   b2 127.0.0.1:30002@40002 master,fail? - 0 0 2 connected 5461-10922\n\
                   c3 127.0.0.1:30003@40003 master,fail - 0 0 3 connected\n\
                   d4 127.0.0.1:30004@40004 master,nofailover - 0 0 4 connected 10923-16383\n";
        assert_eq!(
            masters(out),
            vec![
                ("127.0.0.1".to_string(), 30001),
                ("127.0.0.1".to_string(), 30002),
                ("127.0.0.1".to_string(), 30004)
            ]
        );
        // The suspected master keeps its slots.
        let (nodes, owners) = slot_owners(out);
        assert_eq!(nodes.len(), 3);
        assert_eq!(owners[5461], Some(1));
        assert!(owners.iter().all(Option::is_some));
    }

    #[test]
    fn key_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` and the cluster specification.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty hash tag does not count: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn keys_are_grouped_by_the_master_serving_their_slot() {
        let out = "07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\
                   67ed 127.0.0.1:30002@40002 master - 0 0 2 connected 5461-10922 [5500->-292f]\n\
                   292f 127.0.0.1:30003@40003 master - 0 0 3 connected 10923-16383\n\
                   e7d1 127.0.0.1:30004@40004 slave 07c3 0 0 1 connected\n";
        let (nodes, owners) = slot_owners(out);
        assert_eq!(nodes.len(), 3);
        assert_eq!(owners[0], Some(0));
        assert_eq!(owners[5461], Some(1));
        assert_eq!(owners[16383], Some(2));
        // foo: 12182 (third), bar: 5061 (first), 123456789: 12739 (third).
        let keys: [&[u8]; 3] = [b"foo", b"bar", b"123456789"];
        let groups = group_by_master(keys, &owners);
        assert_eq!(groups, vec![(Some(2), vec![0, 2]), (Some(0), vec![1])]);
        // A slot nobody serves goes to the `None` group, last.
        let mut partial = owners.clone();
        partial[5061] = None;
        let groups = group_by_master(keys, &partial);
        assert_eq!(groups, vec![(Some(2), vec![0, 2]), (None, vec![1])]);
    }
}
