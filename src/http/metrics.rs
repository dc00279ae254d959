//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of [`crate::metrics`], plus the session counts by
//! state and the per-tenant quotas (billed calls read from the store) at scrape time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::domain::service::SessionService;

/// Path of the metrics endpoint.
pub const PATH: &str = "/metrics";

/// The metrics route.
pub fn router(service: Arc<SessionService>) -> Router {
    Router::new().route(PATH, get(scrape)).with_state(service)
}

async fn scrape(State(service): State<Arc<SessionService>>) -> impl IntoResponse {
    // A store failure leaves the sessions gauge out of this scrape; everything else is still served.
    let sessions = match service.sessions_by_state().await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "cannot count sessions for /metrics");
            Vec::new()
        }
    };
    let mut text = crate::metrics::global().render(&sessions);
    text.push_str(&crate::metrics::render_quotas(&service.quota_usage().await));
    text.push_str(&crate::metrics::render_breakers(
        &service.router().breakers().snapshot(),
    ));
    if !service.webhook_endpoints().is_empty() {
        match service.webhook_backlog().await {
            Ok(backlog) => {
                let names: Vec<&str> = service
                    .webhook_endpoints()
                    .iter()
                    .map(String::as_str)
                    .collect();
                text.push_str(&crate::metrics::render_webhook_backlog(
                    &names,
                    &backlog,
                    crate::domain::now_ms(),
                ));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the webhook backlog for /metrics"),
        }
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}
