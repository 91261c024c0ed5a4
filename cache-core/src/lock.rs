//! Distributed single-flight: instances sharing a Redis make one loader call per cold key between
//! them (opt-in per kind or per call, see [`KindConfig::distributed_lock`]).
//!
//! On a miss in both tiers the load tries `SET {prefix}:lock:v1:{kind}:{key} token NX PX ttl`:
//! - **acquired**: it calls the loader, writes the value back to L2 (the usual compare-and-set),
//!   then releases the lock with a Lua compare-and-delete on its token (a lock that expired and was
//!   taken by another instance is left alone) and publishes a `loaded` notice on the backplane;
//! - **held elsewhere**: it waits, woken by the notice or polling L2 with a growing interval, and
//!   returns the value as soon as L2 has it. When the lock is free again without a value in L2 (the
//!   holder failed, or died and its lock expired), it tries to take the lock itself. After
//!   [`CacheBuilder::distributed_lock_wait`] it gives up waiting and loads locally;
//! - **Redis unreachable** (error, timeout, breaker open): it loads locally at once.
//!
//! A lock is one key, so this works unchanged on Redis Cluster. The lock only reduces duplicate
//! loads; correctness never depends on it (the write-back guards do that), so a lost or expired
//! lock costs at most an extra loader call.
//!
//! [`KindConfig::distributed_lock`]: crate::KindConfig::distributed_lock
//! [`CacheBuilder::distributed_lock_wait`]: crate::CacheBuilder::distributed_lock_wait

use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backplane::{self, Message};
use crate::cache::{Inner, KindEntry, L2Read};
use crate::stats::KindStats;
use crate::Cache;

/// First polling interval of a waiter; doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_millis(200);

/// The lock key of an entry key: `{prefix}:lock:` followed by the entry key after its prefix.
pub(crate) fn lock_key(prefix: &str, full: &str) -> String {
    let rest = full
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(full);
    let mut out = String::with_capacity(prefix.len() + rest.len() + 6);
    out.push_str(prefix);
    out.push_str(":lock:");
    out.push_str(rest);
    out
}

/// What the lock step of a load decided.
pub(crate) enum LockOutcome<T> {
    /// This load holds the lock: call the loader.
    Acquired(LockGuard),
    /// Another instance loaded the value while we waited.
    Filled(Arc<T>),
    /// Another instance holds the lock and we were not to wait (a refresh).
    Busy,
    /// Load locally without the lock (Redis unreachable, or the wait bound passed).
    Fallback,
}

/// A held lock. Release it with [`release`](Self::release) once the value is in L2; dropped
/// unreleased (the load was cancelled), it is released from a spawned task.
pub(crate) struct LockGuard {
    inner: Weak<Inner>,
    key: String,
    full: String,
    token: String,
    released: bool,
}

impl LockGuard {
    /// Deletes the lock if it is still ours, wakes this instance's waiters and tells the others.
    pub(crate) async fn release(mut self) {
        self.released = true;
        if let Some(inner) = self.inner.upgrade() {
            release(&inner, &self.key, &self.token, &self.full).await;
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (inner, key, token, full) = (
            self.inner.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
            std::mem::take(&mut self.full),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(inner) = inner.upgrade() {
                    release(&inner, &key, &token, &full).await;
                }
            });
        }
    }
}

async fn release(inner: &Inner, key: &str, token: &str, full: &str) {
    if let Some(l2) = inner.l2.as_ref() {
        if let Err(e) = l2.unlock(key, token).await {
            // It expires by itself after the lock TTL.
            tracing::debug!(error = ?e, "could not release a distributed lock");
        }
    }
    inner.lock_waiters.wake(full);
    backplane::publish(inner, Message::Loaded(full)).await;
}

/// This instance's loads waiting for another's lock, by entry key, woken by `loaded` notices.
#[derive(Default)]
pub(crate) struct LockWaiters(Mutex<HashMap<String, Arc<Notify>>>);

struct Registration<'a> {
    waiters: &'a LockWaiters,
    full: &'a str,
    notify: Arc<Notify>,
}

impl LockWaiters {
    fn register<'a>(&'a self, full: &'a str) -> Registration<'a> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let notify = map.entry(full.to_owned()).or_default().clone();
        Registration {
            waiters: self,
            full,
            notify,
        }
    }

    /// Wakes every load waiting on `full`.
    pub(crate) fn wake(&self, full: &str) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(full) {
            n.notify_waiters();
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.0.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else waits on this key.
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(self.full);
        }
    }
}

impl Cache {
    /// The lock step of a load of `full` that missed in both tiers. `wait`: whether to wait for
    /// another instance's lock (a refresh does not: the other instance is refreshing already).
    pub(crate) async fn lock_for_load<T>(
        &self,
        ke: &KindEntry,
        full: &str,
        g0: u64,
        wait: bool,
    ) -> LockOutcome<T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let Some(l2) = inner.l2.as_ref().filter(|l2| !l2.breaker.is_rejecting()) else {
            KindStats::inc(&ke.stats.lock_fallbacks);
            return LockOutcome::Fallback;
        };
        let key = lock_key(&inner.prefix, full);
        let token = format!("{:032x}", rand::random::<u128>());
        let waiters = wait.then(|| inner.lock_waiters.register(full));
        let deadline = Instant::now() + inner.lock_wait;
        let mut poll = FIRST_POLL;
        let mut waited = false;
        loop {
            let notified = waiters.as_ref().map(|w| w.notify.clone());
            let notified = async move {
                match notified {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            // Registered before looking at Redis, so a notice sent meanwhile is not lost.
            let mut notified = std::pin::pin!(notified);
            futures::FutureExt::now_or_never(notified.as_mut());
            match l2.try_lock(&key, &token, inner.lock_ttl).await {
                Ok(true) => {
                    KindStats::inc(&ke.stats.lock_acquired);
                    return LockOutcome::Acquired(LockGuard {
                        inner: self.downgrade(),
                        key,
                        full: full.to_owned(),
                        token,
                        released: false,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    self.count_l2_error(ke, &e);
                    KindStats::inc(&ke.stats.lock_fallbacks);
                    return LockOutcome::Fallback;
                }
            }
            if !wait {
                return LockOutcome::Busy;
            }
            if !waited {
                waited = true;
                KindStats::inc(&ke.stats.lock_waits);
            }
            let now = Instant::now();
            if now >= deadline {
                KindStats::inc(&ke.stats.lock_fallbacks);
                tracing::debug!(kind = %ke.name, wait = ?inner.lock_wait,
                    "distributed lock still held after the wait bound: loading locally");
                return LockOutcome::Fallback;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.min(now + poll)) => {}
            }
            poll = (poll * 2).min(MAX_POLL);
            match self.read_l2::<T>(ke, full, g0).await {
                L2Read::Fresh(v, _) => return LockOutcome::Filled(v),
                L2Read::Unavailable => {
                    KindStats::inc(&ke.stats.lock_fallbacks);
                    return LockOutcome::Fallback;
                }
                L2Read::Stale(..) | L2Read::Miss(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_live_under_the_prefix_next_to_the_entry_key() {
        assert_eq!(
            lock_key("app", "app:v1:api_response:user:1"),
            "app:lock:v1:api_response:user:1"
        );
        // A key that does not start with the prefix (never built by the cache) stays whole.
        assert_eq!(lock_key("app", "other:k"), "app:lock:other:k");
    }

    #[tokio::test]
    async fn waiters_are_woken_by_key_and_unregistered_when_done() {
        let w = LockWaiters::default();
        let reg = w.register("k");
        let n = reg.notify.clone();
        let woken = tokio::spawn(async move { n.notified().await });
        tokio::task::yield_now().await;
        w.wake("other");
        w.wake("k");
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("woken")
            .expect("task");
        drop(reg);
        assert!(w.0.lock().unwrap().is_empty());
    }
}
