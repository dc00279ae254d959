//! The HTTP listener: liveness, Prometheus metrics, the return-URL relay for vendor pages and vendor callbacks (in
//! sandbox mode, `app` adds the vendor simulators).

pub mod callbacks;
pub mod metrics;
pub mod page;
pub mod relay;
pub mod serve;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::domain::service::SessionService;

/// Builds the HTTP routes.
pub fn router(service: Arc<SessionService>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(metrics::router(Arc::clone(&service)))
        .merge(relay::router(Arc::clone(&service)))
        .merge(callbacks::router(service))
}
