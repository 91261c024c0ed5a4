//! Distributed single-flight: instances sharing a Redis make one loader call per cold key between
//! them (opt-in per kind or per call, see [`KindConfig::distributed_lock`]).
//!
//! On a miss in both tiers the load tries to take `{prefix}:lock:v1:{kind}:{key}` with a Lua script
//! (`SET key token NX PX ttl`, which also takes over a key left without an expiry or holding
//! another type):
//! - **acquired**: it calls the loader, writes the value back to L2 (the usual compare-and-set),
//!   then releases the lock with a Lua compare-and-delete on its token (a lock that expired and was
//!   taken by another instance is left alone) and publishes a `loaded` notice on the backplane.
//!   When the load met an outage (its tag tokens' read or its write-back failed), the release runs
//!   in the background and no notice is sent: the caller waits no second deadline;
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

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::l2::L2;
use crate::stats::KindStats;

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
    Filled(T),
    /// Another instance holds the lock and we were not to wait (a refresh).
    Busy,
    /// Load locally without the lock (Redis unreachable, or the wait bound passed).
    Fallback,
}

/// What a waiter's poll of L2 found.
pub(crate) enum Poll<T> {
    /// The value is there.
    Filled(T),
    /// Not yet.
    Waiting,
    /// L2 cannot be read: stop waiting.
    Unavailable,
}

/// How one load uses the lock.
pub(crate) struct LockRequest<'a> {
    pub(crate) l2: &'a Arc<L2>,
    pub(crate) waiters: &'a LockWaiters,
    pub(crate) stats: &'a KindStats,
    /// The lock key ([`lock_key`]) and the entry's full key.
    pub(crate) key: String,
    pub(crate) full: &'a str,
    pub(crate) ttl: Duration,
    /// The longest wait for another instance's lock.
    pub(crate) wait_bound: Duration,
    /// Whether to wait for another instance's lock (a refresh does not: the other instance is
    /// refreshing already).
    pub(crate) wait: bool,
}

/// A held lock. Release it with [`release`](Self::release) once the value is in L2; dropped
/// unreleased (the load was cancelled), it is released from a spawned task.
pub(crate) struct LockGuard {
    l2: Arc<L2>,
    key: String,
    token: String,
    released: bool,
}

impl LockGuard {
    /// Deletes the lock if it is still ours (it expires by itself otherwise).
    pub(crate) async fn release(mut self) {
        self.released = true;
        unlock(&self.l2, &self.key, &self.token).await;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (l2, key, token) = (
            self.l2.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { unlock(&l2, &key, &token).await });
        }
    }
}

async fn unlock(l2: &L2, key: &str, token: &str) {
    if let Err(e) = l2.unlock(key, token).await {
        // It expires by itself after the lock TTL.
        tracing::debug!(error = %e, "could not release a distributed lock");
    }
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

/// The lock step of a load that missed in both tiers: take the lock, or wait for its holder's
/// value (`poll` reads L2; woken early by a `loaded` notice), or give up and load locally.
pub(crate) async fn acquire<T, P, Fut>(req: LockRequest<'_>, mut poll: P) -> LockOutcome<T>
where
    P: FnMut() -> Fut,
    Fut: Future<Output = Poll<T>>,
{
    let LockRequest {
        l2,
        waiters,
        stats,
        key,
        full,
        ttl,
        wait_bound,
        wait,
    } = req;
    if l2.breaker.is_rejecting() {
        KindStats::inc(&stats.lock_fallbacks);
        return LockOutcome::Fallback;
    }
    let token = format!("{:032x}", rand::random::<u128>());
    let registration = wait.then(|| waiters.register(full));
    let deadline = Instant::now() + wait_bound.min(crate::options::MAX_TTL);
    let mut interval = FIRST_POLL;
    let mut waited = false;
    loop {
        let notified = registration.as_ref().map(|w| w.notify.clone());
        let notified = async move {
            match notified {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        // Registered before looking at Redis, so a notice sent meanwhile is not lost.
        let mut notified = std::pin::pin!(notified);
        futures::FutureExt::now_or_never(notified.as_mut());
        match l2.try_lock(&key, &token, ttl).await {
            Ok(true) => {
                KindStats::inc(&stats.lock_acquired);
                return LockOutcome::Acquired(LockGuard {
                    l2: l2.clone(),
                    key,
                    token,
                    released: false,
                });
            }
            Ok(false) => {}
            Err(e) => {
                stats.count_l2_error(&e);
                KindStats::inc(&stats.lock_fallbacks);
                return LockOutcome::Fallback;
            }
        }
        if !wait {
            return LockOutcome::Busy;
        }
        if !waited {
            waited = true;
            KindStats::inc(&stats.lock_waits);
        }
        let now = Instant::now();
        if now >= deadline {
            KindStats::inc(&stats.lock_fallbacks);
            tracing::debug!(wait = ?wait_bound,
                "distributed lock still held after the wait bound: loading locally");
            return LockOutcome::Fallback;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline.min(now + interval)) => {}
        }
        interval = (interval * 2).min(MAX_POLL);
        match poll().await {
            Poll::Filled(v) => return LockOutcome::Filled(v),
            Poll::Unavailable => {
                KindStats::inc(&stats.lock_fallbacks);
                return LockOutcome::Fallback;
            }
            Poll::Waiting => {}
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
