//! The origin: an in-process "database" shared by every instance, holding one version per key.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, MutexGuard};

/// The value cached for a key: the version of the origin it reflects, and padding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Val {
    /// The key it belongs to.
    pub key: u32,
    /// The origin's version of the key it reflects.
    pub version: u64,
    /// Filler, so values have realistic and varied sizes (some above the compression threshold).
    pub pad: String,
}

/// Per key a version, bumped by every write to a new value of one global counter, so versions
/// are unique and increase in the order writes happen.
///
/// Writers of a key hold its lock from the bump until their cache call returned ([`Origin::lock`]):
/// an application updating a row and then its cache entry under the row's lock. Without it, two
/// writers could bump in one order and reach the cache in the other, and the cache (last call
/// wins) would rightly hold the lower version: the history could not tell that from a lost write.
/// Readers (loaders) take no lock, so loads race writes as they do in production.
pub struct Origin {
    versions: Vec<AtomicU64>,
    counter: AtomicU64,
    locks: Vec<Mutex<()>>,
}

impl Origin {
    /// `keys` keys, all at version 0.
    pub fn new(keys: u32) -> Self {
        Self {
            versions: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            counter: AtomicU64::new(0),
            locks: (0..keys).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Number of keys.
    pub fn keys(&self) -> u32 {
        self.versions.len() as u32
    }

    /// The current version of `key`.
    pub fn current(&self, key: u32) -> u64 {
        self.versions[key as usize].load(Ordering::Acquire)
    }

    /// Every key's current version.
    pub fn snapshot(&self) -> Vec<u64> {
        (0..self.keys()).map(|k| self.current(k)).collect()
    }

    /// The writer's lock of `key` (a tokio mutex: it works across runtimes).
    pub async fn lock(&self, key: u32) -> MutexGuard<'_, ()> {
        self.locks[key as usize].lock().await
    }

    /// Bumps `key` to a new version and returns it. Call with the key's lock held.
    pub fn bump(&self, key: u32) -> u64 {
        let v = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        self.versions[key as usize].store(v, Ordering::Release);
        v
    }
}
