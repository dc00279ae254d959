//! Liveness and readiness, one state for both protocols. Liveness is the process alone: it fails only once a
//! shutdown began (draining). Readiness also needs a reachable store (pinged every `health.store_check_interval_ms`)
//! and at least one configured vendor. The gRPC health service (`grpc.health.v1`: the overall status `""` is
//! liveness, `facegate.v1.VerificationService` readiness) and the HTTP endpoints (`/healthz`, `/readyz`) are both
//! fed from [`Health`], so they always agree.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::store::SessionStore;

/// What liveness and readiness are decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The last store ping answered in time.
    pub store_reachable: bool,
    /// At least one vendor adapter is configured.
    pub vendor_configured: bool,
    /// A shutdown began.
    pub draining: bool,
}

impl Readiness {
    /// Whether the process should keep running (not draining).
    pub fn live(&self) -> bool {
        !self.draining
    }

    /// Whether the instance should get traffic.
    pub fn ready(&self) -> bool {
        self.live() && self.store_reachable && self.vendor_configured
    }

    /// Why it is not ready (empty when it is), for `/readyz` and the logs.
    pub fn reasons(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.draining {
            out.push("draining");
        }
        if !self.store_reachable {
            out.push("store unreachable");
        }
        if !self.vendor_configured {
            out.push("no vendor configured");
        }
        out
    }
}

/// The shared health state.
#[derive(Debug)]
pub struct Health {
    state: watch::Sender<Readiness>,
}

impl Health {
    /// A state with the store reachable (it was just opened) and not draining.
    pub fn new(vendor_configured: bool) -> Arc<Self> {
        let (state, _) = watch::channel(Readiness {
            store_reachable: true,
            vendor_configured,
            draining: false,
        });
        Arc::new(Self { state })
    }

    /// The current state.
    pub fn current(&self) -> Readiness {
        *self.state.borrow()
    }

    /// Changes to the state.
    pub fn subscribe(&self) -> watch::Receiver<Readiness> {
        self.state.subscribe()
    }

    /// Records a store check's outcome.
    pub fn set_store_reachable(&self, reachable: bool) {
        self.state.send_if_modified(|s| {
            let changed = s.store_reachable != reachable;
            s.store_reachable = reachable;
            changed
        });
    }

    /// Records that a shutdown began; liveness and readiness fail from now on.
    pub fn set_draining(&self) {
        self.state.send_if_modified(|s| {
            let changed = !s.draining;
            s.draining = true;
            changed
        });
    }
}

/// Pings the store every `interval` (each ping bounded by `timeout`) until `stop`, recording whether it answered.
pub async fn check_store(
    store: Arc<dyn SessionStore>,
    health: Arc<Health>,
    interval: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let outcome = match tokio::time::timeout(timeout, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        let was = health.current().store_reachable;
        match outcome {
            Ok(()) => {
                if !was {
                    tracing::info!("the session store answers again: readiness SERVING");
                }
                health.set_store_reachable(true);
            }
            Err(error) => {
                if was {
                    tracing::warn!(%error, "the session store does not answer: readiness NOT_SERVING");
                }
                health.set_store_reachable(false);
            }
        }
    }
}

/// The gRPC health statuses of `state`: (overall `""`, the readiness service).
pub fn grpc_statuses(state: &Readiness) -> (ServingStatus, ServingStatus) {
    let status = |ok: bool| {
        if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    (status(state.live()), status(state.ready()))
}

/// Sets the gRPC health statuses of `state`.
pub async fn set_grpc(reporter: &HealthReporter, service: &'static str, state: &Readiness) {
    let (overall, ready) = grpc_statuses(state);
    // Readiness first: whoever sees liveness fail sees readiness failed already.
    reporter.set_service_status(service, ready).await;
    reporter.set_service_status("", overall).await;
}

/// Sets the gRPC health statuses from `health` now and on every change, until `stop` (the listeners close).
/// `service` is the name whose status is readiness.
pub async fn report_grpc(
    health: Arc<Health>,
    reporter: HealthReporter,
    service: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = health.subscribe();
    drop(health);
    loop {
        let state = *changes.borrow_and_update();
        set_grpc(&reporter, service, &state).await;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_store_vendor_and_no_drain() {
        let h = Health::new(true);
        assert!(h.current().ready());
        h.set_store_reachable(false);
        assert!(!h.current().ready());
        assert!(h.current().live());
        assert_eq!(h.current().reasons(), vec!["store unreachable"]);
        h.set_store_reachable(true);
        assert!(h.current().ready());
        h.set_draining();
        assert!(!h.current().ready());
        assert!(!h.current().live());
        let none = Health::new(false);
        assert!(!none.current().ready());
        assert!(none.current().live());
        assert_eq!(none.current().reasons(), vec!["no vendor configured"]);
    }

    #[test]
    fn grpc_statuses_follow_the_state() {
        let h = Health::new(false);
        assert_eq!(
            grpc_statuses(&h.current()),
            (ServingStatus::Serving, ServingStatus::NotServing)
        );
        h.set_draining();
        assert_eq!(
            grpc_statuses(&h.current()),
            (ServingStatus::NotServing, ServingStatus::NotServing)
        );
    }

    #[tokio::test]
    async fn changes_are_sent_once() {
        let h = Health::new(true);
        let mut rx = h.subscribe();
        rx.borrow_and_update();
        h.set_store_reachable(true);
        assert!(!rx.has_changed().unwrap());
        h.set_store_reachable(false);
        assert!(rx.has_changed().unwrap());
    }
}
