//! The vendor-neutral domain: sessions, states, transitions, validation and the service that runs flows.

pub mod adapter;
pub mod caller;
pub mod calls;
pub mod error;
pub mod events;
pub mod far;
pub mod listing;
pub mod quota;
pub mod routing;
pub mod service;
pub mod session;
pub mod state;
pub mod validation;
pub mod webhooks;

pub use caller::{Caller, Scope};
pub use error::{Error, RetryWith, VendorError, VendorErrorKind};
pub use session::*;
pub use state::{Applied, Event, TransitionError};

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
