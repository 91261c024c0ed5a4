//! Startup connection check and the background task that brings L2 back after an outage.

use std::time::Duration;

use crate::breaker::BreakerState;
use crate::Cache;

/// How often the background task looks at the breaker. A probe is only sent once the breaker's
/// cool-down has passed, so this bounds the reaction time, not the probe rate.
const PROBE_POLL: Duration = Duration::from_millis(100);

/// PINGs Redis once; on failure opens the breaker (L1-only) and says so once. Then spawns the task
/// that probes Redis while the breaker is open, so L2 comes back even without traffic. The task
/// holds only a weak reference and ends when the last `Cache` handle is dropped.
pub(crate) async fn start(cache: &Cache) {
    let weak = cache.downgrade();
    let Some(inner) = weak.upgrade() else {
        return;
    };
    let Some(l2) = inner.l2.as_ref() else {
        tracing::info!(prefix = %inner.prefix, "no Redis URL configured: running L1-only");
        return;
    };
    match l2.ping_unguarded().await {
        Ok(()) => tracing::info!(redis = %l2.url_redacted, "connected to Redis: L1 + L2"),
        Err(e) => {
            l2.breaker.trip(&format!(
                "Redis at {} unreachable at startup ({e:?}): running L1-only, retrying in the background",
                l2.url_redacted
            ));
        }
    }
    drop(inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_POLL).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if let Some(l2) = inner.l2.as_ref() {
                if l2.breaker.state() == BreakerState::Open {
                    l2.probe().await;
                }
            }
        }
    });
}
