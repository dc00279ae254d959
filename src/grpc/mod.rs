//! The gRPC surface: thin handlers, proto <-> domain conversions, error mapping.

pub mod auth;
pub mod codec;
pub mod conn;
pub mod convert;
pub mod error;
pub mod handlers;
pub mod observe;
#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use handlers::VerificationApi;

use std::time::Duration;

use crate::config::GrpcConfig;

/// The tonic server with facegate's HTTP/2 and connection settings, before any layer or service is added.
///
/// The service and the benchmark's bare reference server both start from this, so a comparison between them
/// measures facegate's own work and not different transport settings.
pub fn server_builder(cfg: &GrpcConfig) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .concurrency_limit_per_connection(cfg.concurrency_limit_per_connection)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}
