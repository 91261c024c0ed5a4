//! The Redis the tool talks to: one node, or every master of a Redis Cluster. Every command has
//! the `--timeout-ms` deadline, and every error is scrubbed of passwords.

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncConnectionConfig, FromRedisValue, IntoConnectionInfo, RedisError};
use std::future::Future;
use std::time::Duration;

use crate::args::Global;
use crate::error::{scrub, CliError, Result};

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// One node to run per-node commands on (SCAN, INFO, PING).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// `host:port`.
    pub(crate) label: String,
    /// `None` for the single node.
    addr: Option<(String, u16)>,
}

/// A connected Redis.
pub(crate) struct Target {
    conn: Conn,
    /// The URL(s), passwords redacted.
    pub(crate) display: String,
    urls: Vec<String>,
    timeout: Duration,
    secrets: Vec<String>,
}

impl Target {
    /// Connects to the Redis named by the global options.
    pub(crate) async fn connect(g: &Global) -> Result<Self> {
        let (urls, cluster) = match (&g.redis_url, g.cluster_nodes.as_slice()) {
            (Some(url), []) => (vec![url.clone()], false),
            (None, nodes) if !nodes.is_empty() => (nodes.to_vec(), true),
            (Some(_), _) => {
                return Err(CliError::Usage(
                    "give either --redis-url or --cluster-nodes, not both".into(),
                ))
            }
            (None, _) => return Err(CliError::NoRedis),
        };
        // The list redacted as a whole: a password holding a comma was split in two by
        // `--cluster-nodes`, and its pieces redacted one by one could pass for a host or a port.
        let display = cache_core::admin::redact_url(&urls.join(","));
        let timeout = Duration::from_millis(g.timeout_ms.max(1));
        let mut infos = Vec::with_capacity(urls.len());
        for (i, u) in urls.iter().enumerate() {
            // redis-rs' parse error may echo the URL: report only the redacted URL.
            let info = u.as_str().into_connection_info().map_err(|_| {
                let which = match urls.len() {
                    1 => display.clone(),
                    n => format!("(node {} of {n}) in {display}", i + 1),
                };
                CliError::Usage(format!(
                    "invalid Redis URL {which} (expected redis://[user:password@]host:port[/db], \
                     with `/`, `?`, `#`, `@` and `%` in the password percent-encoded)"
                ))
            })?;
            infos.push(info);
        }
        // Scrubbed from every message: the URLs as given, and the passwords as redis-rs decoded
        // them (what a connection error could quote).
        let secrets: Vec<String> = urls
            .iter()
            .cloned()
            .chain(
                infos
                    .iter()
                    .filter_map(|i| i.redis_settings().password().map(str::to_owned)),
            )
            .collect();
        let connect_err = |e: RedisError| CliError::Connect {
            target: display.clone(),
            detail: scrub(&e.to_string(), &secrets),
        };
        let timed_out = || CliError::Timeout {
            what: "connecting".into(),
            target: display.clone(),
            after: timeout,
        };
        let conn = if cluster {
            let client = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(connect_err)?;
            let c = tokio::time::timeout(timeout * 2, client.get_async_connection())
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_err)?;
            Conn::Cluster(c)
        } else {
            let info = infos.into_iter().next().ok_or(CliError::NoRedis)?;
            let client = redis::Client::open(info).map_err(connect_err)?;
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let c = tokio::time::timeout(
                timeout * 2,
                client.get_multiplexed_async_connection_with_config(&cfg),
            )
            .await
            .map_err(|_| timed_out())?
            .map_err(connect_err)?;
            Conn::Single(c)
        };
        Ok(Self {
            conn,
            display,
            urls,
            timeout,
            secrets,
        })
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// The URL(s) as given (with passwords: never print them, use [`Self::display`]).
    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    /// `msg` without the URLs as given or their passwords.
    pub(crate) fn scrub(&self, msg: &str) -> String {
        scrub(msg, &self.secrets)
    }

    /// The command deadline.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn deadline<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(CliError::Timeout {
                what: what.to_owned(),
                target: self.display.clone(),
                after: self.timeout,
            }),
            Ok(Err(e)) => Err(CliError::Redis {
                what: what.to_owned(),
                target: self.display.clone(),
                detail: scrub(&e.to_string(), &self.secrets),
            }),
            Err(_) => Err(CliError::Timeout {
                what: what.to_owned(),
                target: self.display.clone(),
                after: self.timeout,
            }),
        }
    }

    /// Runs `cmd`, routed by its key on a cluster.
    pub(crate) async fn query<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T> {
        match self.conn.clone() {
            Conn::Single(mut c) => self.deadline(what, cmd.query_async(&mut c)).await,
            Conn::Cluster(mut c) => self.deadline(what, cmd.query_async(&mut c)).await,
        }
    }

    /// The nodes holding data: the single node, or every master of the cluster.
    pub(crate) async fn nodes(&self) -> Result<Vec<Node>> {
        if !self.is_cluster() {
            let label = self
                .display
                .split("://")
                .nth(1)
                .map(|s| s.rsplit('@').next().unwrap_or(s))
                .unwrap_or(&self.display)
                .trim_end_matches('/')
                .to_owned();
            return Ok(vec![Node { label, addr: None }]);
        }
        let text: String = self
            .query("CLUSTER NODES", redis::cmd("CLUSTER").arg("NODES"))
            .await?;
        let nodes: Vec<Node> = cache_core::admin::cluster_masters(&text)
            .into_iter()
            .map(|(host, port)| Node {
                label: format!("{host}:{port}"),
                addr: Some((host, port)),
            })
            .collect();
        if nodes.is_empty() {
            return Err(CliError::Redis {
                what: "CLUSTER NODES".into(),
                target: self.display.clone(),
                detail: "no master is up".into(),
            });
        }
        Ok(nodes)
    }

    /// Runs `cmd` on `node`.
    pub(crate) async fn query_on<T: FromRedisValue>(
        &self,
        node: &Node,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        let what = format!("{what} on {}", node.label);
        match (self.conn.clone(), &node.addr) {
            (Conn::Cluster(mut c), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let v = self
                    .deadline(&what, c.route_command(cmd.clone(), routing))
                    .await?;
                T::from_redis_value(v).map_err(|e| CliError::Redis {
                    what,
                    target: self.display.clone(),
                    detail: self.scrub(&e.to_string()),
                })
            }
            _ => self.query(&what, cmd).await,
        }
    }

    /// SCANs every node for keys matching `pattern`, stopping after `limit` keys when given.
    /// `keep` filters each page (it may read the keys); what it returns is collected.
    pub(crate) async fn scan<T, F, Fut>(
        &self,
        pattern: &str,
        limit: Option<usize>,
        mut keep: F,
    ) -> Result<Vec<T>>
    where
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<T>>>,
    {
        let mut out = Vec::new();
        for node in self.nodes().await? {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = self
                    .query_on(
                        &node,
                        "SCAN",
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await?;
                out.extend(keep(keys).await?);
                if limit.is_some_and(|l| out.len() >= l) {
                    out.truncate(limit.unwrap_or(usize::MAX));
                    return Ok(out);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(out)
    }

    /// GETs `keys` (all in flight at once; the connection pipelines them).
    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        futures::future::try_join_all(keys.iter().map(|k| async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(k);
            self.query::<Option<Vec<u8>>>("GET", &cmd).await
        }))
        .await
    }
}
