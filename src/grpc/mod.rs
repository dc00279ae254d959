//! The gRPC surface: thin handlers, proto <-> domain conversions, error mapping.

pub mod auth;
pub mod conn;
pub mod convert;
pub mod error;
pub mod handlers;
pub mod observe;

pub use handlers::VerificationApi;
