//! facegate: one typed gRPC API for face real-name verification (人脸实名认证) across vendors.
//!
//! Data flows one way: `grpc` -> `domain` -> `vendors`/`store`/`status`; `http` -> `domain`.

pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod health;
pub mod http;
pub mod metrics;
pub mod mode;
pub mod net;
pub mod proto;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod vendors;
pub mod webhooks;
