//! `GET /healthz` (liveness: 200 while the process serves, 503 once a shutdown began) and `GET /readyz`
//! (readiness: 200 when the store answers, a vendor is configured and no shutdown began; 503 with the reasons
//! otherwise), from the same [`Health`] state as the gRPC health service.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::health::Health;

/// Path of the liveness endpoint.
pub const LIVENESS_PATH: &str = "/healthz";
/// Path of the readiness endpoint.
pub const READINESS_PATH: &str = "/readyz";

/// The health routes.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route(LIVENESS_PATH, get(liveness))
        .route(READINESS_PATH, get(readiness))
        .with_state(health)
}

async fn liveness(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.current().live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

async fn readiness(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let state = health.current();
    if state.ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", state.reasons().join(", ")),
        )
    }
}
