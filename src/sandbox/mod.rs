//! Sandbox: faithful in-process simulators of the vendors, so every flow can be tried without a vendor account.
//! Simulators are mounted on the HTTP listener under `/sandbox/<vendor>` and adapters are pointed at them.

pub mod juhe;

use std::sync::Arc;

use axum::Router;

use crate::domain::validation::{synthetic_id_number, Date};

/// The Juhe key the sandbox accepts.
pub const JUHE_KEY: &str = "sandbox-juhe-key";
/// The Juhe openid of the sandbox account (its md5 keys verifyEncry).
pub const JUHE_OPENID: &str = "sandbox-juhe-openid";
/// Path prefix of the Juhe simulator on the HTTP listener.
pub const JUHE_PREFIX: &str = "/sandbox/juhe";

/// All simulators.
pub struct Sandbox {
    /// The Juhe verifyface simulator.
    pub juhe: Arc<juhe::JuheSimulator>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Simulators with the sandbox credentials.
    pub fn new() -> Self {
        Self {
            juhe: juhe::JuheSimulator::new(juhe::JuheSimConfig {
                key: JUHE_KEY.into(),
                openid: JUHE_OPENID.into(),
            }),
        }
    }

    /// The simulators' routes.
    pub fn router(&self) -> Router {
        Router::new().nest(JUHE_PREFIX, self.juhe.router())
    }
}

/// A synthetic test ID number whose sequence code selects a sandbox scenario (see [`juhe::SCENARIOS`]). Born
/// 1900-01-01 in region 110101: valid by the checksum rules, and nobody's real number in use.
pub fn test_id_number(sequence: u16) -> Option<String> {
    synthetic_id_number(
        "110101",
        Date {
            year: 1900,
            month: 1,
            day: 1,
        },
        sequence,
    )
}
