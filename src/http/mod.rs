//! The HTTP listeners. The public one takes the return-URL relay for vendor pages and vendor callbacks (in sandbox
//! mode, `app` adds the vendor simulators); the operations paths (liveness, readiness, Prometheus metrics) are
//! served on `http.admin_listen` when it is set, else on the public listener too.

pub mod callbacks;
pub mod health;
pub mod metrics;
pub mod page;
pub mod relay;
pub mod serve;

use std::sync::Arc;

use axum::Router;

use crate::domain::service::SessionService;
use crate::health::Health;

/// Path prefixes of everything the public listener serves (besides the sandbox simulators' `/sandbox/`): what an
/// Ingress or HTTPRoute in front may route here.
pub const PUBLIC_PREFIXES: &[&str] = &[callbacks::PREFIX, relay::PREFIX];

/// The public routes: the return relay and vendor callbacks.
pub fn public_router(service: Arc<SessionService>) -> Router {
    Router::new()
        .merge(relay::router(Arc::clone(&service)))
        .merge(callbacks::router(service))
}

/// The operations routes: `/healthz`, `/readyz`, `/metrics`.
pub fn admin_router(service: Arc<SessionService>, health: Arc<Health>) -> Router {
    Router::new()
        .merge(health::router(health))
        .merge(metrics::router(service))
}

/// Every route on one listener (no `http.admin_listen`).
pub fn router(service: Arc<SessionService>, health: Arc<Health>) -> Router {
    public_router(Arc::clone(&service)).merge(admin_router(service, health))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart's Ingress and HTTPRoute route exactly these (helm/facegate/templates/_helpers.tpl,
    /// `facegate.publicPaths`), so a moved route must move there too.
    #[test]
    fn the_chart_routes_the_public_paths() {
        let helpers = include_str!("../../helm/facegate/templates/_helpers.tpl");
        assert!(callbacks::MEGVII_NOTIFY_PATH.starts_with(&format!("{}/", callbacks::PREFIX)));
        let expected = format!(
            r#"[{{"path": "{}", "type": "Exact"}}, {{"path": "{}", "type": "Prefix"}}]"#,
            callbacks::MEGVII_NOTIFY_PATH,
            relay::PREFIX
        );
        assert!(
            helpers.contains(&expected),
            "facegate.publicPaths must be {expected}"
        );
        assert_eq!(PUBLIC_PREFIXES, &["/v1/callbacks", "/v1/return"]);
    }
}
