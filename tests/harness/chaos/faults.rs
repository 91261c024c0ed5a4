//! The fault plan (a seeded schedule) and the driver that injects it, one fault at a time with
//! quiet gaps between, recording each fault's window.

use futures::StreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::checker::FaultWindow;
use super::history::Clock;
use crate::{FaultProxy, ProxyMode, RedisServer};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `redis-server` SIGKILLed, restarted on the same port after a while (data lost).
    KillRestart,
    /// `redis-server` SIGSTOPped, SIGCONTed after a while (sockets stay open, nothing answers).
    StopCont,
    /// One proxied instance's connections cut once.
    ProxyCut,
    /// One proxied instance's connections cut every 200 ms for a while (flapping network).
    ProxyFlap,
    /// Latency added on one proxied instance's link, round trip under the L2 deadline.
    LatencyUnder,
    /// Latency added on one proxied instance's link, round trip over the L2 deadline.
    LatencyOver,
    /// `CLIENT KILL TYPE pubsub`: every subscription dropped.
    KillPubsub,
    /// `CLIENT KILL TYPE normal`: every command connection dropped.
    KillNormal,
    /// `maxmemory` just above use with `allkeys-lru`, filler keys written until evictions happen.
    MemoryLru,
    /// The same with `allkeys-random`.
    MemoryRandom,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::KillRestart,
        FaultKind::StopCont,
        FaultKind::ProxyCut,
        FaultKind::ProxyFlap,
        FaultKind::LatencyUnder,
        FaultKind::LatencyOver,
        FaultKind::KillPubsub,
        FaultKind::KillNormal,
        FaultKind::MemoryLru,
        FaultKind::MemoryRandom,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillRestart => "sigkill+restart",
            FaultKind::StopCont => "sigstop/sigcont",
            FaultKind::ProxyCut => "proxy cut",
            FaultKind::ProxyFlap => "proxy flapping",
            FaultKind::LatencyUnder => "latency < deadline",
            FaultKind::LatencyOver => "latency > deadline",
            FaultKind::KillPubsub => "client kill pubsub",
            FaultKind::KillNormal => "client kill normal",
            FaultKind::MemoryLru => "maxmemory allkeys-lru",
            FaultKind::MemoryRandom => "maxmemory allkeys-random",
        }
    }

    /// Whether it acts on one instance's proxy.
    pub fn needs_proxy(self) -> bool {
        matches!(
            self,
            FaultKind::ProxyCut
                | FaultKind::ProxyFlap
                | FaultKind::LatencyUnder
                | FaultKind::LatencyOver
        )
    }

    /// How long it is held (drawn from this range).
    fn hold_range(self) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            FaultKind::KillRestart => (ms(200), ms(1_000)),
            FaultKind::StopCont => (ms(300), ms(3_000)),
            FaultKind::ProxyFlap => (ms(2_000), ms(3_000)),
            FaultKind::LatencyUnder | FaultKind::LatencyOver => (ms(1_000), ms(2_000)),
            FaultKind::MemoryLru | FaultKind::MemoryRandom => (ms(1_000), ms(2_000)),
            FaultKind::ProxyCut | FaultKind::KillPubsub | FaultKind::KillNormal => (ms(0), ms(0)),
        }
    }
}

/// One fault of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedFault {
    /// Its kind.
    pub kind: FaultKind,
    /// The quiet gap before it.
    pub gap: Duration,
    /// How long it is held.
    pub hold: Duration,
    /// Which proxied instance (an index into the proxies) it acts on, for proxy faults.
    pub target: usize,
}

/// The seeded schedule: rounds of every kind in a random order, with random gaps and holds.
/// The sequence depends only on the seed and the kinds available.
pub struct FaultPlan {
    rng: ChaCha8Rng,
    kinds: Vec<FaultKind>,
    round: Vec<FaultKind>,
    gap: (Duration, Duration),
    proxies: usize,
}

impl FaultPlan {
    /// The plan of `seed`; proxy faults only when there are `proxies` (> 0).
    pub fn new(seed: u64, proxies: usize, gap: (Duration, Duration)) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(0);
        Self {
            rng,
            kinds: FaultKind::ALL
                .into_iter()
                .filter(|k| proxies > 0 || !k.needs_proxy())
                .collect(),
            round: Vec::new(),
            gap,
            proxies,
        }
    }

    /// The kinds the plan uses.
    pub fn kinds(&self) -> &[FaultKind] {
        &self.kinds
    }
}

fn between(rng: &mut ChaCha8Rng, (lo, hi): (Duration, Duration)) -> Duration {
    Duration::from_micros(rng.random_range(lo.as_micros() as u64..=hi.as_micros() as u64))
}

impl Iterator for FaultPlan {
    type Item = PlannedFault;

    fn next(&mut self) -> Option<PlannedFault> {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            self.round.shuffle(&mut self.rng);
            self.round.reverse();
        }
        let kind = self.round.pop()?;
        Some(PlannedFault {
            kind,
            gap: between(&mut self.rng, self.gap),
            hold: between(&mut self.rng, kind.hold_range()),
            target: self.rng.random_range(0..self.proxies.max(1)),
        })
    }
}

/// A fault as injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// Its kind.
    pub kind: FaultKind,
    /// The instance it acted on (proxy faults).
    pub instance: Option<u16>,
    /// When it began (ns since the run began).
    pub start_ns: u64,
    /// When it was over.
    pub end_ns: u64,
    /// What happened (evictions, clients killed...), or why it could not be injected.
    pub detail: String,
    /// Round-trip time added on the instance's link (latency faults).
    pub added_rtt: Duration,
    /// The driver could not inject it (a Redis command failed).
    pub failed: bool,
}

impl InjectedFault {
    /// Its window for the checker.
    pub fn window(&self) -> FaultWindow {
        FaultWindow {
            label: self.label(),
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            instance: self.instance,
            added_rtt: self.added_rtt,
        }
    }

    /// Kind and target, e.g. `proxy cut (i2)`.
    pub fn label(&self) -> String {
        match self.instance {
            Some(i) => format!("{} (i{i})", self.kind.name()),
            None => self.kind.name().to_owned(),
        }
    }
}

/// Injects faults into the server and the proxies.
pub struct Driver<'a> {
    /// The server (killed, stopped, restarted).
    pub server: &'a mut RedisServer,
    /// Each proxied instance's index and its proxy.
    pub proxies: &'a [(u16, FaultProxy)],
    /// The run's clock.
    pub clock: Clock,
    /// The cache's key prefix (to tell its evicted keys from fillers).
    pub prefix: String,
    /// The cache's L2 deadline (latency faults are set relative to it).
    pub l2_timeout: Duration,
}

/// Cut period of a flapping link.
const FLAP_EVERY: Duration = Duration::from_millis(200);
/// Size of one filler value.
const FILLER_BYTES: usize = 4 * 1024;
/// Key prefix of filler keys.
const FILLER_PREFIX: &str = "soak-filler:";

impl Driver<'_> {
    async fn admin(
        &self,
    ) -> redis::RedisResult<(redis::Client, redis::aio::MultiplexedConnection)> {
        let client = redis::Client::open(self.server.url())?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "admin connection timed out"))
        })??;
        Ok((client, conn))
    }

    /// Injects `f` and returns its record once it is over.
    pub async fn inject(&mut self, f: &PlannedFault) -> InjectedFault {
        let proxy = self.proxies.get(f.target);
        let instance = f
            .kind
            .needs_proxy()
            .then(|| proxy.map(|(i, _)| *i))
            .flatten();
        let start_ns = self.clock.now_ns();
        let mut added_rtt = Duration::ZERO;
        let res: redis::RedisResult<String> = match f.kind {
            FaultKind::KillRestart => {
                self.server.kill();
                tokio::time::sleep(f.hold).await;
                // Blocks this (driver) thread until the server answers; proxies run on the
                // driver runtime's worker, instances on their own.
                self.server.restart();
                Ok(format!("down {:?}", f.hold))
            }
            FaultKind::StopCont => {
                self.server.pause();
                tokio::time::sleep(f.hold).await;
                self.server.resume();
                Ok(format!("stopped {:?}", f.hold))
            }
            FaultKind::ProxyCut => {
                if let Some((_, p)) = proxy {
                    p.cut_all();
                }
                Ok(String::new())
            }
            FaultKind::ProxyFlap => {
                let mut cuts = 0;
                if let Some((_, p)) = proxy {
                    let until = Instant::now() + f.hold;
                    while Instant::now() < until {
                        p.cut_all();
                        cuts += 1;
                        tokio::time::sleep(FLAP_EVERY).await;
                    }
                }
                Ok(format!("{cuts} cuts over {:?}", f.hold))
            }
            FaultKind::LatencyUnder | FaultKind::LatencyOver => {
                // Delay is per direction: the round trip gets twice as much.
                let d = if f.kind == FaultKind::LatencyUnder {
                    self.l2_timeout / 5
                } else {
                    self.l2_timeout * 3 / 4
                };
                added_rtt = d * 2;
                if let Some((_, p)) = proxy {
                    p.set_mode(ProxyMode::Delay(d));
                    tokio::time::sleep(f.hold).await;
                    p.set_mode(ProxyMode::Pass);
                    // Chunks already in the delay line still arrive late.
                    tokio::time::sleep(d).await;
                }
                Ok(format!("+{:?} round trip for {:?}", d * 2, f.hold))
            }
            FaultKind::KillPubsub | FaultKind::KillNormal => {
                let ty = if f.kind == FaultKind::KillPubsub {
                    "pubsub"
                } else {
                    "normal"
                };
                match self.admin().await {
                    Ok((_, mut c)) => redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg(ty)
                        .query_async::<u64>(&mut c)
                        .await
                        .map(|n| format!("{n} connections killed")),
                    Err(e) => Err(e),
                }
            }
            FaultKind::MemoryLru => self.memory_pressure("allkeys-lru", f.hold).await,
            FaultKind::MemoryRandom => self.memory_pressure("allkeys-random", f.hold).await,
        };
        let end_ns = self.clock.now_ns();
        let (detail, failed) = match res {
            Ok(d) => (d, false),
            Err(e) => (format!("could not inject: {e}"), true),
        };
        InjectedFault {
            kind: f.kind,
            instance,
            start_ns,
            end_ns,
            detail,
            added_rtt,
            failed,
        }
    }

    /// Sets `maxmemory` 1 MiB above the current use with `policy`, writes filler keys for `hold`
    /// (evicting as it goes), then lifts the limit. Evicted keys are classified through keyspace
    /// notifications.
    async fn memory_pressure(&self, policy: &str, hold: Duration) -> redis::RedisResult<String> {
        let (client, mut c) = self.admin().await?;
        let config = |k: &str, v: String| {
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("SET").arg(k).arg(v);
            cmd
        };
        config("notify-keyspace-events", "Ee".into())
            .query_async::<()>(&mut c)
            .await?;
        let mut ps = client.get_async_pubsub().await?;
        ps.subscribe("__keyevent@0__:evicted").await?;
        let evicted: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();
        let entries = format!("{}:v1:", self.prefix);
        let tags = format!("{}:t1:", self.prefix);
        let counter = {
            let evicted = evicted.clone();
            tokio::spawn(async move {
                let mut s = ps.into_on_message();
                while let Some(m) = s.next().await {
                    let key: String = m.get_payload().unwrap_or_default();
                    let class = if key.starts_with(&entries) {
                        "cache entries/tombstones"
                    } else if key.starts_with(&tags) {
                        "tag versions"
                    } else if key.starts_with(FILLER_PREFIX) {
                        "fillers"
                    } else {
                        "other"
                    };
                    *evicted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(class)
                        .or_default() += 1;
                }
            })
        };
        let info = |section: &'static str| {
            let mut cmd = redis::cmd("INFO");
            cmd.arg(section);
            cmd
        };
        let field = |text: &str, name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let used = field(
            &info("memory").query_async::<String>(&mut c).await?,
            "used_memory",
        );
        let ev0 = field(
            &info("stats").query_async::<String>(&mut c).await?,
            "evicted_keys",
        );
        let limit = used + (1 << 20);
        config("maxmemory-policy", policy.into())
            .query_async::<()>(&mut c)
            .await?;
        config("maxmemory", limit.to_string())
            .query_async::<()>(&mut c)
            .await?;
        let filler = vec![b'f'; FILLER_BYTES];
        let until = Instant::now() + hold;
        let mut n = 0u64;
        let mut fill_err = None;
        while Instant::now() < until {
            let mut p = redis::pipe();
            for _ in 0..16 {
                p.cmd("SET")
                    .arg(format!("{FILLER_PREFIX}{n}"))
                    .arg(&filler)
                    .arg("PX")
                    .arg(60_000)
                    .ignore();
                n += 1;
            }
            if let Err(e) = p.query_async::<()>(&mut c).await {
                fill_err = Some(e);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Restore, whatever happened.
        let restored = async {
            config("maxmemory", "0".into())
                .query_async::<()>(&mut c)
                .await?;
            config("maxmemory-policy", "noeviction".into())
                .query_async::<()>(&mut c)
                .await?;
            let ev1 = field(
                &info("stats").query_async::<String>(&mut c).await?,
                "evicted_keys",
            );
            config("notify-keyspace-events", String::new())
                .query_async::<()>(&mut c)
                .await?;
            Ok::<u64, redis::RedisError>(ev1)
        }
        .await;
        // Let the last notifications arrive before counting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        counter.abort();
        let ev1 = restored?;
        if let Some(e) = fill_err {
            return Err(e);
        }
        // Fillers go (best effort: they expire anyway).
        let names: Vec<String> = (0..n).map(|i| format!("{FILLER_PREFIX}{i}")).collect();
        for chunk in names.chunks(512) {
            let _ = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async::<u64>(&mut c)
                .await;
        }
        let by_class = evicted.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let classes: Vec<String> = by_class.iter().map(|(k, v)| format!("{v} {k}")).collect();
        Ok(format!(
            "limit {} KiB, {} fillers written, {} keys evicted ({})",
            limit / 1024,
            n,
            ev1.saturating_sub(ev0),
            classes.join(", ")
        ))
    }
}

/// Runs the plan from `from_ns` on: every kind at least once (the first round always runs to
/// its end), then further faults while they fit before `until_ns`.
pub async fn drive(
    driver: &mut Driver<'_>,
    plan: &mut FaultPlan,
    from_ns: u64,
    until_ns: u64,
) -> Vec<InjectedFault> {
    let clock = driver.clock;
    tokio::time::sleep_until(clock.instant(from_ns).into()).await;
    let mut out: Vec<InjectedFault> = Vec::new();
    let first_round = plan.kinds().len();
    for p in plan.by_ref() {
        let planned_end = clock.now_ns() + (p.gap + p.hold).as_nanos() as u64;
        if out.len() >= first_round && planned_end > until_ns {
            break;
        }
        tokio::time::sleep(p.gap).await;
        out.push(driver.inject(&p).await);
    }
    out
}
