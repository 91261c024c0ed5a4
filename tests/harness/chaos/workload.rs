//! The instances and their workers: each instance is a `Cache` in its own tokio runtime (its own
//! OS threads), with tasks doing a seeded random mix of calls and recording each one.

use cache_core::{Cache, EntryOptions, Kind, KindConfig, Tiers};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::history::{Clock, Op, Record, Recorder, Source};
use super::origin::{Origin, Val};
use super::SoakConfig;

/// The name of the kind every soak entry uses.
pub const KIND: &str = "soak";
/// The kind of the read-only bulk keys: L1 only (they are there to make L1 large; preloading
/// them costs no Redis traffic, and memory pressure in Redis does not evict them instead of the
/// soak's keys).
pub const BULK_KIND: &str = "soak_bulk";

/// The RNG stream of task `task` of instance `instance` (the fault plan uses stream 0).
fn stream(instance: u16, task: usize) -> u64 {
    1 + u64::from(instance) * 1_000 + task as u64
}

/// The cache key of key `k`.
pub fn key_name(k: u32) -> String {
    format!("k{k}")
}

/// The tag of key `k`.
pub fn tag_name(k: u32, tags: u32) -> String {
    format!("g{}", k % tags)
}

/// One instance: its runtime and its cache.
pub struct Instance {
    /// Its index (0-based).
    pub index: u16,
    /// Whether it reaches Redis through its own fault proxy.
    pub via_proxy: bool,
    /// Its runtime.
    pub rt: Runtime,
    /// Its cache.
    pub cache: Cache,
}

/// The builder every instance uses (printed in the report).
pub fn builder(cfg: &SoakConfig, url: String, prefix: &str) -> cache_core::CacheBuilder {
    Cache::builder()
        .redis_url(url)
        .prefix(prefix)
        .l2_timeout(cfg.l2_timeout)
        .unsynced_l1_ttl(cfg.unsynced_l1_ttl)
        .breaker_open_l1_ttl(cfg.breaker_open_l1_ttl)
        // Stats reports would only add unrelated keys and traffic.
        .stats_report_interval(Duration::ZERO)
        .kind(Kind::new(KIND), KindConfig::new(cfg.ttl))
        .kind(
            Kind::new(BULK_KIND),
            KindConfig::new(cfg.ttl).tiers(Tiers::L1Only),
        )
}

impl Instance {
    /// Starts the runtime (named `soak-i{index}`) and builds the cache in it.
    pub fn start(index: u16, via_proxy: bool, url: String, prefix: &str, cfg: &SoakConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads)
            .thread_name(format!("soak-i{index}"))
            .enable_all()
            .build()
            .expect("build an instance runtime");
        let cache = rt
            .block_on(builder(cfg, url, prefix).build())
            .expect("build the instance's cache");
        Self {
            index,
            via_proxy,
            rt,
            cache,
        }
    }
}

/// What every worker of every instance shares.
#[derive(Clone)]
pub struct Shared {
    /// The origin.
    pub origin: Arc<Origin>,
    /// The run's clock.
    pub clock: Clock,
    /// Set when the workload must stop.
    pub stop: Arc<AtomicBool>,
    /// Bytes of history recorded (for the RSS growth check).
    pub history_bytes: Arc<AtomicU64>,
}

impl Shared {
    /// A run over `keys` keys, timed by `clock`, not yet stopped.
    pub fn new(keys: u32, clock: Clock) -> Self {
        Self {
            origin: Arc::new(Origin::new(keys)),
            clock,
            stop: Arc::new(AtomicBool::new(false)),
            history_bytes: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// The op mix, in percent: get_or_load, get, set_with, invalidate, invalidate_tag.
const MIX: [(Op, u32); 5] = [
    (Op::GetOrLoad, 55),
    (Op::Get, 30),
    (Op::Set, 9),
    (Op::Invalidate, 4),
    (Op::InvalidateTag, 2),
];

/// Tags whose keys are "hot": they take [`HOT_WRITES`] percent of the writes (and of the tag
/// invalidations), so that writes to one key from several instances often follow each other
/// closely, while the other keys change about once a second, so that a stale value on them
/// lasts long enough to be read. Reads are uniform over all keys.
pub const HOT_TAGS: u32 = 2;
/// Percent of writes to keys of the hot tags.
pub const HOT_WRITES: u32 = 75;

/// The op mix as text, for the report.
pub fn mix_description() -> String {
    let ops = MIX
        .iter()
        .map(|(op, p)| format!("{} {p}%", op.name()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{ops}; {HOT_WRITES}% of writes to the keys of tags g0..g{} (hot), reads uniform",
        HOT_TAGS - 1
    )
}

fn pick(roll: u32) -> Op {
    let mut acc = 0;
    for (op, p) in MIX {
        acc += p;
        if roll < acc {
            return op;
        }
    }
    Op::GetOrLoad
}

/// The key a write goes to: `uniform` (a key drawn uniformly) moved onto a hot tag's key when
/// `roll < HOT_WRITES`, keeping its position within its tag (`hot_tag` picks which hot tag).
fn write_key(uniform: u32, roll: u32, hot_tag: u32, keys: u32, tags: u32) -> u32 {
    let hot = HOT_TAGS.min(tags);
    if roll >= HOT_WRITES || hot == tags {
        return uniform;
    }
    let k = uniform - uniform % tags + hot_tag % hot;
    if k < keys {
        k
    } else {
        hot_tag % hot
    }
}

/// One worker's view: its instance's cache and the settings it needs.
#[derive(Clone)]
pub struct Caller {
    cache: Cache,
    instance: u16,
    shared: Shared,
    kind: Kind,
    bulk_kind: Kind,
    keys: u32,
    tags: u32,
    bulk_keys: u32,
    bulk_share: u32,
    /// Entry options per tag: every entry carries its key's tag.
    opts: Arc<Vec<EntryOptions>>,
    /// Options of bulk keys (no tags).
    bulk_opts: EntryOptions,
}

impl Caller {
    /// A caller on `inst`.
    pub fn new(inst: &Instance, shared: &Shared, cfg: &SoakConfig) -> Self {
        let opts = (0..cfg.tags)
            .map(|t| EntryOptions::new().tags([tag_name(t, cfg.tags)]))
            .collect();
        Self {
            cache: inst.cache.clone(),
            instance: inst.index,
            shared: shared.clone(),
            kind: Kind::new(KIND),
            bulk_kind: Kind::new(BULK_KIND),
            keys: cfg.keys,
            tags: cfg.tags,
            bulk_keys: cfg.bulk_keys,
            bulk_share: cfg.bulk_share,
            opts: Arc::new(opts),
            bulk_opts: EntryOptions::new(),
        }
    }

    fn record(&self, op: Op, key: u32, start_ns: u64, version: Option<u64>) -> Record {
        Record {
            instance: self.instance,
            op,
            primary: true,
            errored: false,
            wrong_key: false,
            source: None,
            key,
            start_ns,
            end_ns: self.shared.clock.now_ns(),
            version,
        }
    }

    /// `get_or_load_with`, through `get_or_load_traced` (the same call, which also says where
    /// the value came from); the loader reads the origin, then takes `delay` (a query whose
    /// result is in flight while writes land).
    pub async fn load(&self, op: Op, key: u32, delay: Duration, pad: usize) -> Record {
        let name = key_name(key);
        let origin = &*self.shared.origin;
        let start = self.shared.clock.now_ns();
        let res = self
            .cache
            .get_or_load_traced(
                &self.kind,
                &name,
                &self.opts[(key % self.tags) as usize],
                || async move {
                    let version = origin.current(key);
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::io::Error>(Val {
                        key,
                        version,
                        pad: "p".repeat(pad),
                    })
                },
            )
            .await;
        match res {
            Ok(found) => Record {
                wrong_key: found.value.key != key,
                source: Some(Source::of(found.source)),
                ..self.record(op, key, start, Some(found.value.version))
            },
            Err(_) => Record {
                errored: true,
                ..self.record(op, key, start, None)
            },
        }
    }

    /// `get_or_load` of bulk key `n` (recorded as key `keys + n`, always at version 0).
    pub async fn bulk(&self, n: u32) -> Record {
        let key = self.keys + n;
        let name = format!("b{n}");
        let start = self.shared.clock.now_ns();
        let res = self
            .cache
            .get_or_load_traced(&self.bulk_kind, &name, &self.bulk_opts, || async move {
                Ok::<_, std::io::Error>(Val {
                    key,
                    version: 0,
                    pad: String::new(),
                })
            })
            .await;
        match res {
            Ok(found) => Record {
                wrong_key: found.value.key != key,
                source: Some(Source::of(found.source)),
                ..self.record(Op::BulkLoad, key, start, Some(found.value.version))
            },
            Err(_) => Record {
                errored: true,
                ..self.record(Op::BulkLoad, key, start, None)
            },
        }
    }

    /// `get`.
    pub async fn get(&self, key: u32) -> Record {
        let name = key_name(key);
        let start = self.shared.clock.now_ns();
        let v = self.cache.get::<Val>(&self.kind, &name).await;
        Record {
            wrong_key: v.as_ref().is_some_and(|v| v.key != key),
            ..self.record(Op::Get, key, start, v.map(|v| v.version))
        }
    }

    /// Bumps the origin, then `set_with` the new version (with the key's tag).
    pub async fn set(&self, key: u32, pad: usize) -> Record {
        let name = key_name(key);
        let origin = &self.shared.origin;
        let _writer = origin.lock(key).await;
        let start = self.shared.clock.now_ns();
        let version = origin.bump(key);
        let value = Val {
            key,
            version,
            pad: "s".repeat(pad),
        };
        self.cache
            .set_with(
                &self.kind,
                &name,
                value,
                &self.opts[(key % self.tags) as usize],
            )
            .await;
        self.record(Op::Set, key, start, Some(version))
    }

    /// Bumps the origin, then `invalidate`.
    pub async fn invalidate(&self, key: u32) -> Record {
        let name = key_name(key);
        let origin = &self.shared.origin;
        let _writer = origin.lock(key).await;
        let start = self.shared.clock.now_ns();
        let version = origin.bump(key);
        self.cache.invalidate(&self.kind, &name).await;
        self.record(Op::Invalidate, key, start, Some(version))
    }

    /// Bumps every key of `key`'s tag, then `invalidate_tag`: one record per key of the tag.
    pub async fn invalidate_tag(&self, key: u32, out: &mut Recorder) {
        let tag = key % self.tags;
        let members: Vec<u32> = (tag..self.keys).step_by(self.tags as usize).collect();
        let origin = &self.shared.origin;
        // Ascending key order, as every writer: no deadlock with single-key writers.
        let mut writers = Vec::with_capacity(members.len());
        for &k in &members {
            writers.push(origin.lock(k).await);
        }
        let start = self.shared.clock.now_ns();
        let versions: Vec<u64> = members.iter().map(|&k| origin.bump(k)).collect();
        self.cache.invalidate_tag(&tag_name(tag, self.tags)).await;
        let end = self.shared.clock.now_ns();
        drop(writers);
        for (i, (&k, &v)) in members.iter().zip(&versions).enumerate() {
            out.push(Record {
                instance: self.instance,
                op: Op::InvalidateTag,
                primary: i == 0,
                errored: false,
                wrong_key: false,
                source: None,
                key: k,
                start_ns: start,
                end_ns: end,
                version: Some(v),
            });
        }
    }
}

/// Spawns `cfg.tasks_per_instance` workers on `inst`'s runtime. Each returns its history when
/// `shared.stop` is set.
pub fn spawn_workers(
    inst: &Instance,
    shared: &Shared,
    cfg: &SoakConfig,
) -> Vec<JoinHandle<Vec<Record>>> {
    (0..cfg.tasks_per_instance)
        .map(|task| {
            let caller = Caller::new(inst, shared, cfg);
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(stream(inst.index, task));
            let think = (
                cfg.think.0.as_micros() as u64,
                cfg.think.1.as_micros() as u64,
            );
            let loader_max = cfg.loader_max.as_micros() as u64;
            inst.rt
                .spawn(worker(caller, rng, think, loader_max, shared.clone()))
        })
        .collect()
}

async fn worker(
    caller: Caller,
    mut rng: ChaCha8Rng,
    think_us: (u64, u64),
    loader_max_us: u64,
    shared: Shared,
) -> Vec<Record> {
    let mut out = Recorder::new(shared.history_bytes.clone());
    while !shared.stop.load(Ordering::Relaxed) {
        // Every draw is made for every op, used or not, so a task's sequence of calls depends
        // on the seed only (not on which loads happened to miss).
        let uniform = rng.random_range(0..caller.keys);
        let op = pick(rng.random_range(0..100));
        let hot_roll = rng.random_range(0..100);
        let hot_tag = rng.random_range(0..HOT_TAGS);
        let delay = Duration::from_micros(rng.random_range(0..=loader_max_us));
        let pad = rng.random_range(16..1_200);
        let think = Duration::from_micros(rng.random_range(think_us.0..=think_us.1));
        let bulk_roll = rng.random_range(0..100);
        let bulk_key = rng.random_range(0..caller.bulk_keys.max(1));
        let op = if op == Op::GetOrLoad && caller.bulk_keys > 0 && bulk_roll < caller.bulk_share {
            Op::BulkLoad
        } else {
            op
        };
        let key = if op.is_write() {
            write_key(uniform, hot_roll, hot_tag, caller.keys, caller.tags)
        } else {
            uniform
        };
        match op {
            Op::GetOrLoad => out.push(caller.load(Op::GetOrLoad, key, delay, pad).await),
            Op::Get => out.push(caller.get(key).await),
            Op::Set => out.push(caller.set(key, pad).await),
            Op::Invalidate => out.push(caller.invalidate(key).await),
            Op::InvalidateTag => caller.invalidate_tag(key, &mut out).await,
            Op::BulkLoad => out.push(caller.bulk(bulk_key).await),
            Op::FinalRead => unreachable!("not in the mix"),
        }
        tokio::time::sleep(think).await;
    }
    out.into_records()
}

/// Loads every bulk key into `inst`'s L1 (32 at a time; not recorded: there is no fault yet).
pub fn preload_bulk(inst: &Instance, shared: &Shared, cfg: &SoakConfig) {
    use futures::StreamExt;
    if cfg.bulk_keys == 0 {
        return;
    }
    let caller = Caller::new(inst, shared, cfg);
    inst.rt.block_on(
        futures::stream::iter(0..cfg.bulk_keys)
            .map(|n| caller.bulk(n))
            .buffer_unordered(32)
            .for_each(|_| async {}),
    );
}

/// The final check's reads: `inst` reads every key with `get_or_load`, one after the other.
pub fn final_reads(inst: &Instance, shared: &Shared, cfg: &SoakConfig) -> Vec<Record> {
    let caller = Caller::new(inst, shared, cfg);
    inst.rt.block_on(async {
        let mut out = Vec::with_capacity(cfg.keys as usize);
        for key in 0..cfg.keys {
            out.push(caller.load(Op::FinalRead, key, Duration::ZERO, 16).await);
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_writes_land_on_keys_of_the_hot_tags_and_cold_ones_stay_uniform() {
        for k in 0..64 {
            assert_eq!(
                write_key(k, HOT_WRITES, 0, 64, 8),
                k,
                "cold roll keeps the key"
            );
            for t in 0..HOT_TAGS {
                let h = write_key(k, 0, t, 64, 8);
                assert!(h < 64 && h % 8 < HOT_TAGS, "{k} -> {h}");
                assert_eq!(h / 8, k / 8, "same row of the tag table");
            }
        }
        // A short last row: falls back to a hot key of the first row.
        assert!(write_key(60, 0, 1, 61, 8) % 8 < HOT_TAGS);
        // All tags hot: uniform.
        assert_eq!(write_key(5, 0, 1, 8, 2), 5);
    }
}
