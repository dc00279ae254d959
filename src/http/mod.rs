//! The HTTP listener: liveness, and in sandbox mode the vendor simulators. Vendor callback intake lands here with
//! the vendors that call back.

use axum::routing::get;
use axum::Router;

use crate::sandbox::Sandbox;

/// Builds the HTTP routes.
pub fn router(sandbox: Option<&Sandbox>) -> Router {
    let mut router = Router::new().route("/healthz", get(|| async { "ok\n" }));
    if let Some(sb) = sandbox {
        router = router.merge(sb.router());
    }
    router
}
