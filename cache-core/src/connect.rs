//! Startup connection check and the background task that brings L2 back after an outage.

use std::time::{Duration, Instant};
use tracing::Instrument;

use crate::backplane;
use crate::breaker::BreakerState;
use crate::error::Error;
use crate::l2::L2Error;
use crate::pending;
use crate::report;
use crate::Cache;

/// How often the background task looks at the breaker. A probe is only sent once the breaker's
/// cool-down has passed, so this bounds the reaction time, not the probe rate.
const PROBE_POLL: Duration = Duration::from_millis(100);

/// PINGs Redis once; on failure opens the breaker (L1-only) and says so once. Then spawns the task
/// that probes Redis while the breaker is open, so L2 comes back even without traffic. The task
/// holds only a weak reference and ends when the last `Cache` handle is dropped.
///
/// # Errors
/// [`Error::Auth`] when Redis rejects the credentials: retrying would not help, so the cache is not
/// built.
pub(crate) async fn start(cache: &Cache) -> Result<(), Error> {
    let weak = cache.downgrade();
    let Some(inner) = weak.upgrade() else {
        return Ok(());
    };
    let Some(l2) = inner.l2.as_ref() else {
        tracing::info!(prefix = %inner.prefix, "no Redis URL configured: running L1-only");
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
        Err(L2Error::Redis(e)) if is_auth_error(&e) => {
            return Err(Error::Auth(format!(
                "Redis at {} rejected the credentials: {}",
                l2.url_redacted,
                e.detail().unwrap_or("authentication failed")
            )));
        }
        Err(e) => {
            l2.breaker.trip(&format!(
                "Redis at {} unreachable at startup ({e:?}): running L1-only, retrying in the background",
                l2.url_redacted
            ));
            false
        }
    };
    if let Some(bp) = inner.backplane.as_ref() {
        // Subscribe before returning the cache, so it is in sync from its first call.
        let initial = if reachable {
            backplane::subscribe_any(&l2.clients, &bp.channel, l2.connect_timeout() * 4).await
        } else {
            None
        };
        if initial.is_some() {
            backplane::mark_subscribed(bp);
        }
        backplane::spawn_subscriber(
            weak.clone(),
            l2.clients.clone(),
            l2.connect_timeout(),
            initial,
        );
    }
    drop(inner);
    tokio::spawn(async move {
        let mut last_heartbeat = Instant::now();
        let mut last_prune = Instant::now();
        let mut last_report = Instant::now();
        loop {
            tokio::time::sleep(PROBE_POLL).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let Some(l2) = inner.l2.as_ref() else {
                return;
            };
            if l2.breaker.state() == BreakerState::Open {
                l2.probe()
                    .instrument(tracing::debug_span!("l2.probe"))
                    .await;
            }
            // Right after the probe closed the breaker: invalidations made during the outage
            // reach L2 before this instance's writes do (they are held back until then).
            if !inner.pending.is_empty() {
                pending::replay(&inner).await;
            }
            if last_heartbeat.elapsed() >= backplane::HEARTBEAT_EVERY {
                last_heartbeat = Instant::now();
                backplane::publish(&inner, backplane::Message::Heartbeat).await;
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = Instant::now();
                inner.local_tags.prune(inner.max_l1_lifetime);
            }
            if last_report.elapsed() >= inner.stats_report_interval {
                last_report = Instant::now();
                report::publish_stats(&inner).await;
            }
        }
    });
    Ok(())
}

/// Wrong password, unknown user, or a password missing: `WRONGPASS`, `NOAUTH`, or redis-rs'
/// authentication error kind.
fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}
