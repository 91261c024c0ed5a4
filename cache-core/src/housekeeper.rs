//! The housekeeper: the startup connection check, and the one background task that keeps a cache
//! healthy: it probes Redis while the breaker is open (so L2 comes back even without traffic),
//! replays invalidations queued during an outage, re-queues this instance's recent writes when a
//! Sentinel failover moved the master (at once, not at the next tick), sends backplane heartbeats,
//! removes L1 entries a flush made dead, forgets old tag invalidations and publishes the stats
//! report.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::Instrument;

use crate::admin;
use crate::breaker::BreakerState;
use crate::coherence;
use crate::error::Error;
use crate::inner::Inner;
use crate::l2::{is_auth_error, L2Error};

/// How often the background task runs. A probe is sent once the breaker's cool-down has passed,
/// or at every tick while invalidations wait for replay, so this bounds the reaction time.
const TICK: Duration = Duration::from_millis(100);
/// How often Redis's memory is read (`INFO memory`, for the stats and the recommendations).
const MEMORY_EVERY: Duration = Duration::from_secs(10);
/// Most dead L1 entries removed per tick (after a flush), so the sweep never hogs a worker.
const SWEEP_PER_TICK: usize = 2_000;

/// PINGs Redis once; on failure opens the breaker (L1-only) and says so once. Then spawns the task
/// that probes Redis while the breaker is open, so L2 comes back even without traffic. The task
/// holds only a weak reference and ends when the last `Cache` handle is dropped.
///
/// # Errors
/// [`Error::Auth`] when Redis rejects the credentials, or refuses the ACL user the startup `PING`
/// (`NOPERM`): retrying would not help, so the cache is not built.
pub(crate) async fn start(inner: &Arc<Inner>) -> Result<(), Error> {
    let weak = Arc::downgrade(inner);
    let Some(inner) = weak.upgrade() else {
        return Ok(());
    };
    let Some(l2) = inner.l2.as_ref() else {
        tracing::info!(prefix = %inner.prefix, "no Redis URL configured: running L1-only");
        drop(inner);
        spawn(weak);
        return Ok(());
    };
    let reachable = match l2
        .ping_unguarded()
        .instrument(tracing::debug_span!("l2.ping", startup = true))
        .await
    {
        Ok(()) => {
            tracing::info!(redis = %l2.url_redacted, cluster = l2.is_cluster(), "connected to Redis: L1 + L2");
            l2.load_scripts().await;
            true
        }
        Err(L2Error::Unavailable(e) | L2Error::Refused(_, e)) if is_auth_error(&e) => {
            let what = if e.code() == Some("NOPERM") {
                "refused the ACL user a command the cache needs"
            } else {
                "rejected the credentials"
            };
            return Err(Error::Auth(format!(
                "Redis at {} {what}: {}",
                l2.url_redacted,
                e.detail().unwrap_or("authentication failed")
            )));
        }
        Err(e) => {
            l2.breaker.trip(&format!(
                "Redis at {} unreachable at startup ({e}): running L1-only, retrying in the background",
                l2.url_redacted
            ));
            false
        }
    };
    if let Some(bp) = inner.coherence.backplane.as_ref() {
        // Subscribe before returning the cache, so it is in sync from its first call.
        let initial = if reachable {
            match coherence::subscribe_any(
                &l2.pubsub,
                &bp.channel,
                l2.connect_timeout().saturating_mul(4),
            )
            .await
            {
                Ok(ps) => Some(ps),
                Err(refused) => {
                    if let Some(e) = refused {
                        l2.acl.note("SUBSCRIBE", &e);
                    }
                    None
                }
            }
        } else {
            None
        };
        if initial.is_some() {
            coherence::mark_subscribed(bp);
        }
        coherence::spawn_subscriber(
            Arc::downgrade(&inner.coherence),
            l2.pubsub.clone(),
            l2.connect_timeout(),
            initial,
        );
    }
    drop(inner);
    spawn(weak);
    Ok(())
}

/// Spawns the background task. It holds a weak reference and ends with the cache.
fn spawn(weak: Weak<Inner>) {
    tokio::spawn(async move {
        let mut last_heartbeat = Instant::now();
        let mut last_prune = Instant::now();
        let mut last_report = Instant::now();
        let mut last_memory: Option<Instant> = None;
        // Sentinel: the master's moves (`seen`: the count handled).
        let mut switches = weak
            .upgrade()
            .and_then(|inner| inner.l2.as_ref().and_then(|l2| l2.master_switches()));
        let mut seen = switches.as_mut().map_or(0, |rx| *rx.borrow_and_update());
        loop {
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                changed = async {
                    match switches.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if !changed {
                        switches = None;
                    }
                }
            }
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let c = &inner.coherence;
            if let Some(rx) = switches.as_mut() {
                let now = *rx.borrow_and_update();
                if now != seen {
                    seen = now;
                    // The new master may lack the last writes the old one acknowledged: apply
                    // this instance's again (queued, so replayed below, and fenced until then).
                    c.master_changed();
                    if let Some(l2) = inner.l2.as_ref() {
                        // A new master has none of the scripts loaded.
                        l2.load_scripts().await;
                    }
                }
            }
            inner.sample();
            inner.l1.sweep(SWEEP_PER_TICK).await;
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = Instant::now();
                c.prune();
            }
            let Some(l2) = inner.l2.as_ref() else {
                continue;
            };
            if l2.breaker.state() == BreakerState::Open {
                // Eagerly (whatever the cool-down) while invalidations wait: until they are
                // replayed, other instances may read what they remove. Also when the backplane
                // just resubscribed: Redis answers again.
                let eager = c.has_pending() || c.take_probe_hint();
                l2.probe(eager)
                    .instrument(tracing::debug_span!("l2.probe"))
                    .await;
            }
            if c.has_pending() {
                c.replay().await;
            }
            if last_memory.is_none_or(|t| t.elapsed() >= MEMORY_EVERY) {
                last_memory = Some(Instant::now());
                l2.sample_memory()
                    .instrument(tracing::debug_span!("l2.info_memory"))
                    .await;
            }
            if last_heartbeat.elapsed() >= coherence::HEARTBEAT_EVERY {
                last_heartbeat = Instant::now();
                c.publish(coherence::Message::Heartbeat).await;
            }
            if last_report.elapsed() >= inner.stats_report_interval {
                last_report = Instant::now();
                admin::publish_stats(&inner).await;
            }
        }
    });
}
