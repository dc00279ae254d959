//! The HTTP listener: liveness, Prometheus metrics, the return-URL relay for vendor pages, vendor callbacks, and in
//! sandbox mode the vendor simulators.

pub mod callbacks;
pub mod metrics;
pub mod relay;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::domain::service::SessionService;
use crate::sandbox::Sandbox;

/// Builds the HTTP routes.
pub fn router(service: Arc<SessionService>, sandbox: Option<&Sandbox>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(metrics::router(Arc::clone(&service)))
        .merge(relay::router(Arc::clone(&service)))
        .merge(callbacks::router(service));
    if let Some(sb) = sandbox {
        router = router.merge(sb.router());
    }
    router
}
