//! The sweeper: sessions that are not final by their `expires_at_ms` get their last vendor check and, if still
//! undecided, become EXPIRED (their watchers hear of it); vendor personal data kept past its retention is wiped;
//! whole session rows past `retention.session_rows_days` are deleted, their billing kept in `billing_daily`.

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
                match service.recover(false).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(sessions = n, "vendor calls lost with their process; marked outcome unknown"),
                    Err(e) => tracing::warn!(error = %e, "recovery sweep failed"),
                }
                match service.wipe_due().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "vendor personal data wiped after retention"),
                    Err(e) => tracing::warn!(error = %e, "personal data sweep failed"),
                }
                match service.delete_old_rows().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "session rows deleted after retention; billing aggregated"),
                    Err(e) => tracing::warn!(error = %e, "session row sweep failed"),
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
