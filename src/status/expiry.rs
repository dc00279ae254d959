//! The expiry sweeper: sessions that are not final by their `expires_at_ms` become EXPIRED, and their watchers hear
//! of it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::service::SessionService;

/// Runs the sweeper until `shutdown` turns true.
pub async fn run(
    service: Arc<SessionService>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match service.expire_due().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "expired sessions"),
                    Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}
