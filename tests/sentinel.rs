//! Redis Sentinel on real processes (a master, a replica, three sentinels; `harness/sentinel.rs`):
//! two cache instances under load follow the master through a forced failover (`SENTINEL
//! FAILOVER`, which leaves the old master up, and a master, for seconds) and then through a killed
//! master, with no call failing, no stale read, no lost write or invalidation, and L2 back on the
//! new master within a bound.
//!
//! The load is the chaos soak's (`harness/chaos/`): each instance in its own runtime, a seeded mix
//! of `get_or_load`, `get`, `set`, `invalidate` and `invalidate_tag` on 64 keys, every call recorded
//! and the history checked:
//! - the forced failover is *not* given to the checker as a fault: every write, including those
//!   that returned during it, is due at every instance the backplane's latency after it returned,
//!   as when nothing fails (the old master answers until the new one is announced, and the writes
//!   its replica missed are applied again to the new master);
//! - the killed master is an outage from the kill until both instances write to the new master:
//!   as for any outage (README, "When Redis fails"), a write made during it is due at the other
//!   instance only the recovery bound after it (the backplane goes through Redis). A write that
//!   returned before the kill is due as usual: the failover must not bring back what it replaced,
//!   even when the dead master had not passed it on to its replica yet.
//!
//! Then, once both have settled, every instance reads every key: nothing written may be lost.
//!
//! The workload's 64 keys are all read many times a second, so a write the new master missed is
//! mostly overwritten or hidden by L1 before anyone reads it there. *Witness* keys make the loss
//! certain and look for it: written at version 0 before, each failover makes the new master miss
//! writes of them (made after the forced promotion, on the old master; made by the master about to
//! be killed once it no longer feeds its replica), and once L2 is back (and its read pause over) no
//! instance, nor a fresh one, may read version 0 of any of them.
//!
//! For a moment after the master moved, an instance does not read L2 (the other instances may be
//! a little later to move and apply again what the new master missed): a key written by none of
//! them reads as a miss right after the move, and from the new master a second later.
//!
//! A second test configures a cache from the environment (`REDIS_SENTINELS`...) and checks that
//! wrong passwords, the nodes' or the sentinels', stop `build()` with an error saying whose.

use cache_core::{Cache, CacheBuilder, Error, Kind, KindConfig, Tiers};
use cache_tests::chaos::checker::{self, Class, FaultWindow, Input};
use cache_tests::chaos::history::{Clock, Record};
use cache_tests::chaos::monitor::{self, Stalls};
use cache_tests::chaos::origin::Val;
use cache_tests::chaos::workload::{self, Instance, Shared};
use cache_tests::chaos::{self, SoakConfig};
use cache_tests::sentinel::{
    DOWN_AFTER, FAILOVER_TIMEOUT, MASTER_NAME, PASSWORD, SENTINEL_PASSWORD,
};
use cache_tests::{unique_prefix, RedisSentinels};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after a forced failover began the instances may take to write to the new master:
/// the sentinels promote the replica and announce it (1.2-1.3 s measured on the 2-core
/// development machine, busy), with room for a much busier one.
const FORCED_BOUND: Duration = Duration::from_secs(8);
/// The same after the master was killed: the sentinels first take `DOWN_AFTER` to call it down,
/// then agree, elect a leader, promote and announce (1.5-2.5 s measured).
const KILLED_BOUND: Duration = Duration::from_secs(12);
/// Pause between two writes of a probe.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// Witness keys per failover.
const WITNESSES: usize = 24;
/// The key that shows the read pause after a move.
const GRACE_KEY: &str = "grace";
/// How long after L2 is back the witnesses are read: past the read pause after a master move
/// (one second) and the replay of what the instances wrote again.
const SETTLE_WITNESSES: Duration = Duration::from_secs(3);

/// Witness `j` of failover `phase`.
fn witness(phase: char, j: usize) -> String {
    format!("witness-{phase}{j}")
}

fn witness_val(version: u64) -> Val {
    Val {
        key: u32::MAX - 1,
        version,
        pad: String::new(),
    }
}

/// Writes every witness of `phase` at version 0.
async fn seed_witnesses(cache: &Cache, phase: char) {
    let kind = Kind::new(workload::KIND);
    for j in 0..WITNESSES {
        cache.set(&kind, &witness(phase, j), witness_val(0)).await;
    }
}

/// The writes the new master is to miss: `invalidate` of the even witnesses through one instance,
/// `set` of the odd ones to version 1 through the other.
async fn touch_witnesses(invalidator: &Cache, setter: &Cache, phase: char) {
    let kind = Kind::new(workload::KIND);
    for j in 0..WITNESSES {
        if j % 2 == 0 {
            invalidator.invalidate(&kind, &witness(phase, j)).await;
        } else {
            setter.set(&kind, &witness(phase, j), witness_val(1)).await;
        }
    }
}

/// The witnesses of `phase` that read version 0 through `cache`.
async fn old_witnesses(cache: &Cache, phase: char) -> Vec<String> {
    let kind = Kind::new(workload::KIND);
    let mut old = Vec::new();
    for j in 0..WITNESSES {
        let key = witness(phase, j);
        if cache
            .get::<Val>(&kind, &key)
            .await
            .is_some_and(|v| v.version == 0)
        {
            old.push(key);
        }
    }
    old
}

/// The probe key of instance `i`'s `seq`-th write (outside the workload's key space).
fn probe_key(i: u16, seq: usize) -> String {
    format!("probe-i{i}-{seq}")
}

/// When each write of a probe began and returned (ns on the run's clock), by sequence number.
type ProbeLog = Arc<Mutex<Vec<(u64, u64)>>>;

/// Writes a fresh key every [`PROBE_EVERY`] through `cache`, logging each write once it returned.
async fn probe(cache: Cache, i: u16, clock: Clock, stop: Arc<AtomicBool>, log: ProbeLog) {
    let kind = Kind::new(workload::KIND);
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let start = clock.now_ns();
        let v = Val {
            key: u32::MAX,
            version: seq as u64,
            pad: String::new(),
        };
        cache.set(&kind, &probe_key(i, seq), v).await;
        log.lock().unwrap().push((start, clock.now_ns()));
        seq += 1;
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Reads entries straight from one Redis node (no L1, no Sentinel).
async fn reader(url: String, prefix: &str) -> Cache {
    Cache::builder()
        .redis_url(url)
        .prefix(prefix)
        .backplane(false)
        .stats_report_interval(Duration::ZERO)
        .kind(
            Kind::new(workload::KIND),
            KindConfig::new(Duration::from_secs(600)).tiers(Tiers::L2Only),
        )
        .build()
        .await
        .expect("build a reader")
}

/// Waits until the node on `port` says it is a master; returns when (on the run's clock).
async fn promoted(topo: &RedisSentinels, port: u16, clock: Clock, limit: Duration) -> u64 {
    topo.wait_promoted(port, limit).await;
    clock.now_ns()
}

/// When instance `i` first wrote to the new master on `port` (promoted at `promoted_ns`): the
/// start of its first probe write begun after the promotion whose value is there. Writes begun
/// before could have reached it by replication from the old master.
async fn l2_back(reader: &Cache, log: &ProbeLog, i: u16, promoted_ns: u64, limit: Duration) -> u64 {
    let kind = Kind::new(workload::KIND);
    let t = Instant::now();
    let mut seq = None;
    loop {
        assert!(
            t.elapsed() < limit,
            "instance i{i} wrote nothing that reached the new master within {limit:?} of its promotion"
        );
        let write = {
            let log = log.lock().unwrap();
            let first =
                seq.unwrap_or_else(|| log.partition_point(|&(start, _)| start < promoted_ns));
            seq = Some(first);
            log.get(first).copied()
        };
        let (Some(s), Some((start, _))) = (seq, write) else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        // That write returned: it reached the node, or it never will.
        if reader.get::<Val>(&kind, &probe_key(i, s)).await.is_some() {
            return start;
        }
        seq = Some(s + 1);
    }
}

/// The witnesses of `phase` read at version 0 by either instance or by a fresh one (no L1), as
/// `i{n}: key` / `fresh: key`.
fn witnesses_read_old(
    instances: &[Instance],
    topo: &RedisSentinels,
    prefix: &str,
    driver: &tokio::runtime::Runtime,
    phase: char,
) -> Vec<String> {
    let mut old = Vec::new();
    for inst in instances {
        for k in inst.rt.block_on(old_witnesses(&inst.cache, phase)) {
            old.push(format!("i{}: {k}", inst.index));
        }
    }
    let fresh = driver.block_on(async {
        Cache::builder()
            .redis_url(topo.url())
            .prefix(prefix)
            .backplane(false)
            .stats_report_interval(Duration::ZERO)
            .kind(
                Kind::new(workload::KIND),
                KindConfig::new(Duration::from_secs(600)),
            )
            .build()
            .await
            .expect("build a fresh instance")
    });
    for k in driver.block_on(old_witnesses(&fresh, phase)) {
        old.push(format!("fresh: {k}"));
    }
    drop(fresh);
    old
}

fn ms(ns: u64) -> Duration {
    Duration::from_nanos(ns)
}

/// One deployment at a time: the failover test's figures must not share the machine with another.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn from_env_finds_the_master_through_password_protected_sentinels_and_says_whose_password_is_wrong()
{
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    cache_tests::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let topo = RedisSentinels::start().await;
        let prefix = unique_prefix("sentinel-env");
        let hosts: Vec<String> = topo
            .sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        std::env::set_var("REDIS_SENTINELS", hosts.join(", "));
        std::env::set_var("REDIS_SENTINEL_MASTER", MASTER_NAME);
        std::env::set_var("REDIS_PASSWORD", PASSWORD);
        std::env::set_var("REDIS_SENTINEL_PASSWORD", SENTINEL_PASSWORD);
        std::env::set_var("CACHE_PREFIX", &prefix);
        let builder = CacheBuilder::from_env().expect("from_env");
        let shown = format!("{builder:?}");
        assert!(
            !shown.contains(PASSWORD) && !shown.contains(SENTINEL_PASSWORD),
            "{shown}"
        );
        let cache = builder.build().await.expect("build from the environment");
        cache.set(Kind::API_RESPONSE, "k", 1u8).await;
        let mut exists = redis::cmd("EXISTS");
        exists.arg(cache_core::admin::entry_key(&prefix, "api_response", "k"));
        let master = topo.node_ports()[0];
        let found: bool = topo.node_query(master, &exists).await.expect("EXISTS");
        assert!(found, "the write reached the master the sentinels name");
        drop(cache);

        for (var, wrong, whose) in [
            ("REDIS_SENTINEL_PASSWORD", "WRONG-SENTINEL-PW", "sentinel"),
            ("REDIS_PASSWORD", "WRONG-NODE-PW", "Redis nodes"),
        ] {
            let right = std::env::var(var).expect("set above");
            std::env::set_var(var, wrong);
            let err = Cache::from_env().await.expect_err("a wrong password");
            let text = format!("{err} {err:?}");
            assert!(matches!(err, Error::Auth(_)), "{text}");
            assert!(text.contains(whose), "the error says whose: {text}");
            assert!(!text.contains(wrong) && !text.contains(&right), "{text}");
            std::env::set_var(var, right);
        }
        std::env::remove_var("REDIS_SENTINEL_MASTER");
        let err = Cache::from_env()
            .await
            .expect_err("sentinels without a master name");
        assert!(matches!(err, Error::Config(_)), "{err}");
        for var in [
            "REDIS_SENTINELS",
            "REDIS_PASSWORD",
            "REDIS_SENTINEL_PASSWORD",
            "CACHE_PREFIX",
        ] {
            std::env::remove_var(var);
        }
    });
}

#[test]
fn two_instances_follow_the_master_through_a_forced_failover_and_a_killed_master_under_load() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    chaos::init_tracing();
    let driver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("driver runtime");
    let mut topo = driver.block_on(RedisSentinels::start());
    let [first, second] = topo.node_ports()[..] else {
        unreachable!("two nodes")
    };
    let mut cfg = SoakConfig::new(7, Duration::from_secs(30));
    cfg.instances = 2;
    let clock = Clock::start();
    let prefix = unique_prefix("sentinel");
    let instances: Vec<Instance> = (0..2)
        .map(|i| Instance::start(i, false, topo.url(), &prefix, &cfg))
        .collect();
    let shared = Shared::new(cfg.keys, clock);
    let probes_stop = Arc::new(AtomicBool::new(false));
    let stalls: Stalls = Arc::default();
    let machine = monitor::spawn_machine_probe(clock, probes_stop.clone(), stalls.clone());
    let logs: Vec<ProbeLog> = instances.iter().map(|_| ProbeLog::default()).collect();
    let probes: Vec<_> = instances
        .iter()
        .zip(&logs)
        .map(|(inst, log)| {
            inst.rt.spawn(probe(
                inst.cache.clone(),
                inst.index,
                clock,
                shared.stop.clone(),
                log.clone(),
            ))
        })
        .collect();
    let workers: Vec<_> = instances
        .iter()
        .map(|inst| workload::spawn_workers(inst, &shared, &cfg))
        .collect();
    let (i0, i1) = (&instances[0], &instances[1]);
    let soak = Kind::new(workload::KIND);
    i0.rt.block_on(seed_witnesses(&i0.cache, 'a'));
    std::thread::sleep(cfg.warmup);
    // Written straight to the master, by no instance: in no instance's journal.
    let plain = driver.block_on(reader(topo.node_url(first), &prefix));
    driver.block_on(plain.set(&soak, GRACE_KEY, witness_val(0)));
    drop(plain);
    let replica = driver.block_on(reader(topo.node_url(second), &prefix));
    assert_eq!(
        driver.block_on(old_witnesses(&replica, 'a')).len(),
        WITNESSES,
        "the replica holds every witness at version 0"
    );
    assert!(driver
        .block_on(replica.get::<Val>(&soak, GRACE_KEY))
        .is_some());
    let resyncs = |c: &Cache| c.stats().backplane.map_or(0, |b| b.resyncs);
    let resyncs_before = resyncs(&i0.cache);

    // (a) A forced failover: the replica is promoted; the old master stays up (and a master) and
    // the instances go on using it until the sentinels announce the new one.
    let forced_at = clock.now_ns();
    driver.block_on(topo.failover());
    drop(replica);
    let promoted_a = driver.block_on(promoted(&topo, second, clock, FORCED_BOUND));
    i0.rt.block_on(touch_witnesses(&i0.cache, &i1.cache, 'a'));
    let touched_a = clock.now_ns();
    let missed_a = {
        // A new connection: the sentinels closed the old ones when they promoted the node.
        let promoted = driver.block_on(reader(topo.node_url(second), &prefix));
        driver.block_on(old_witnesses(&promoted, 'a')).len()
    };
    // i0 moved (its backplane resubscribed on the new master): its reads wait.
    driver.block_on(cache_tests::within(
        FORCED_BOUND,
        "i0 follows the master",
        || async { resyncs(&i0.cache) > resyncs_before },
    ));
    let skipped = |c: &Cache| {
        c.stats()
            .kinds
            .get(workload::KIND)
            .map_or(0, |k| k.l2.skipped)
    };
    let skipped_before = skipped(&i0.cache);
    let paused_read = i0.rt.block_on(i0.cache.get::<Val>(&soak, GRACE_KEY));
    let paused_skips = skipped(&i0.cache) - skipped_before;
    assert_eq!(
        driver.block_on(topo.wait_master_moved_from(first, FORCED_BOUND)),
        second
    );
    let reader_a = driver.block_on(reader(topo.node_url(second), &prefix));
    let back_a: Vec<u64> = (0..2)
        .map(|i| {
            driver.block_on(l2_back(
                &reader_a,
                &logs[i],
                i as u16,
                promoted_a,
                FORCED_BOUND,
            )) - forced_at
        })
        .collect();
    drop(reader_a);
    std::thread::sleep(SETTLE_WITNESSES);
    let resumed_read = i0.rt.block_on(i0.cache.get::<Val>(&soak, GRACE_KEY));
    let stale_a = witnesses_read_old(&instances, &topo, &prefix, &driver, 'a');
    // The sentinels turn the old master into a replica of the new one (~10 s later).
    driver.block_on(topo.wait_synced(first, Duration::from_secs(40)));
    // Seeded only now: the instances applied their writes of the seconds before the first move
    // again, as invalidations.
    i0.rt.block_on(seed_witnesses(&i0.cache, 'b'));
    let replica = driver.block_on(reader(topo.node_url(first), &prefix));
    driver.block_on(cache_tests::within(
        Duration::from_secs(5),
        "the replica holds every witness at version 0",
        || async { old_witnesses(&replica, 'b').await.len() == WITNESSES },
    ));
    drop(replica);

    // (b) The master killed, having acknowledged writes its replica never got (it stopped
    // feeding it just before): the old master, now that replica, takes over.
    driver.block_on(topo.starve_replicas(second));
    i0.rt.block_on(touch_witnesses(&i1.cache, &i0.cache, 'b'));
    let killed_at = clock.now_ns();
    topo.kill_node(second);
    let missed_b = {
        let replica = driver.block_on(reader(topo.node_url(first), &prefix));
        driver.block_on(old_witnesses(&replica, 'b')).len()
    };
    let promoted_b = driver.block_on(promoted(&topo, first, clock, KILLED_BOUND));
    let reader_b = driver.block_on(reader(topo.node_url(first), &prefix));
    let back_b: Vec<u64> = (0..2)
        .map(|i| {
            driver.block_on(l2_back(
                &reader_b,
                &logs[i],
                i as u16,
                promoted_b,
                KILLED_BOUND,
            )) - killed_at
        })
        .collect();
    drop(reader_b);
    std::thread::sleep(SETTLE_WITNESSES);
    let stale_b = witnesses_read_old(&instances, &topo, &prefix, &driver, 'b');
    let failovers_over = clock.now_ns();
    std::thread::sleep(cfg.quiet.saturating_sub(SETTLE_WITNESSES));

    shared.stop.store(true, Ordering::Relaxed);
    let mut records: Vec<Record> = Vec::new();
    for (inst, handles) in instances.iter().zip(workers) {
        for h in handles {
            records.extend(inst.rt.block_on(h).expect("a worker panicked"));
        }
    }
    for (inst, p) in instances.iter().zip(probes) {
        inst.rt.block_on(p).expect("a probe panicked");
    }
    let settled = chaos::settle(&instances, chaos::SETTLE_LIMIT);
    let final_versions = shared.origin.snapshot();
    for inst in &instances {
        records.extend(workload::final_reads(inst, &shared, &cfg));
    }
    probes_stop.store(true, Ordering::Relaxed);
    let _ = machine.join();
    let pauses: Vec<_> = stalls
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.instance.is_none())
        .map(monitor::Stall::window)
        .collect();
    let outage = FaultWindow {
        label: "killed master".into(),
        start_ns: killed_at,
        end_ns: killed_at + back_b.iter().copied().max().unwrap_or(0),
        instance: None,
        added_rtt: Duration::ZERO,
    };
    let findings = checker::check(
        &Input {
            records: &records,
            faults: &[outage],
            final_versions: &final_versions,
            growth: &[],
            health: &[],
            pauses: &pauses,
        },
        &cfg.bounds(),
    );

    // The figures.
    let window = |from: u64, back: &[u64]| {
        let until = from + back.iter().copied().max().unwrap_or(0);
        let during: Vec<&Record> = records
            .iter()
            .filter(|r| r.primary && r.start_ns >= from && r.start_ns <= until)
            .collect();
        let errors = during.iter().filter(|r| r.errored).count();
        (during.len(), errors)
    };
    let (calls_a, errors_a) = window(forced_at, &back_a);
    let (calls_b, errors_b) = window(killed_at, &back_b);
    let errors = records.iter().filter(|r| r.errored).count();
    let stats: Vec<_> = instances.iter().map(|i| i.cache.stats()).collect();
    println!(
        "Sentinel failovers under load ({} calls, {} keys, 2 instances; down-after {:?}, \
         failover-timeout {:?}):",
        records.len(),
        cfg.keys,
        DOWN_AFTER,
        FAILOVER_TIMEOUT
    );
    println!(
        "  forced (SENTINEL FAILOVER): replica promoted after {:?}; L2 back on the new master \
         after {:?} / {:?} (i0 / i1); {calls_a} calls meanwhile, {errors_a} errors",
        ms(promoted_a - forced_at),
        ms(back_a[0]),
        ms(back_a[1])
    );
    println!(
        "  killed master (SIGKILL): replica promoted after {:?}; L2 back on the new master \
         after {:?} / {:?} (i0 / i1); {calls_b} calls meanwhile, {errors_b} errors",
        ms(promoted_b - killed_at),
        ms(back_b[0]),
        ms(back_b[1])
    );
    let shown = |v: &[String]| format!("{} {:?}", v.len(), &v[..v.len().min(3)]);
    println!(
        "  witnesses: the new master missed {missed_a} / {missed_b} of {WITNESSES} writes \
         (forced / killed); read at their old version afterwards: {} / {}",
        shown(&stale_a),
        shown(&stale_b)
    );
    println!(
        "  read pause: right after moving, i0 read {:?} ({paused_skips} L2 reads skipped); \
         {SETTLE_WITNESSES:?} later, {:?}",
        paused_read.as_deref().map(|v| v.version),
        resumed_read.as_deref().map(|v| v.version)
    );
    println!(
        "  whole run: {errors} errors; reads checked strictly {:.1}% ({} of {}); settled: {settled:?}; \
         pending invalidations replayed {} / {}, backplane resubscriptions {} / {}",
        findings.coverage.strict_fraction() * 100.0,
        findings.coverage.strict,
        findings.coverage.reads,
        stats[0].pending_invalidations.replayed,
        stats[1].pending_invalidations.replayed,
        stats[0].backplane.as_ref().map_or(0, |b| b.resyncs),
        stats[1].backplane.as_ref().map_or(0, |b| b.resyncs),
    );
    for class in Class::ALL {
        let n = findings.of(class).count();
        if n > 0 {
            println!(
                "  {n} {}: first {:?}",
                class.name(),
                findings.of(class).next()
            );
        }
    }

    for inst in instances {
        let Instance { rt, cache, .. } = inst;
        drop(cache);
        rt.shutdown_timeout(Duration::from_secs(2));
    }
    assert!(failovers_over > killed_at);
    assert_eq!(errors, 0, "no call may fail");
    // The scenario happened: the new masters missed the witnesses' writes...
    assert!(
        touched_a < forced_at + back_a.iter().copied().min().unwrap_or(0),
        "the witnesses of the forced failover were written before the instances moved"
    );
    assert_eq!(
        (missed_a, missed_b),
        (WITNESSES, WITNESSES),
        "the new masters missed every witness write"
    );
    // ... and no instance read what those writes replaced.
    assert!(
        stale_a.is_empty() && stale_b.is_empty(),
        "values read after the invalidations or sets that replaced them returned: {} (forced \
         failover), {} (killed master)",
        shown(&stale_a),
        shown(&stale_b)
    );
    assert!(
        paused_read.is_none() && paused_skips > 0,
        "right after the move, L2 reads wait"
    );
    assert_eq!(
        resumed_read.as_deref().map(|v| v.version),
        Some(0),
        "then they read the new master"
    );
    assert!(
        findings.violations.is_empty(),
        "{} violations (stale reads, lost writes or invalidations, slow calls...)",
        findings.violations.len()
    );
    settled.expect("the instances settle after the failovers");
    // Only the killed master's outage and recovery allowance (~4 s of ~30) excuse reads.
    assert!(
        findings.coverage.strict_fraction() > 0.7,
        "most reads are held to the newest write of their key"
    );
    for (what, back, bound) in [
        ("forced failover", &back_a, FORCED_BOUND),
        ("killed master", &back_b, KILLED_BOUND),
    ] {
        for (i, b) in back.iter().enumerate() {
            assert!(
                ms(*b) < bound,
                "{what}: i{i} wrote to the new master only {:?} after it began (bound {bound:?})",
                ms(*b)
            );
        }
    }
}
