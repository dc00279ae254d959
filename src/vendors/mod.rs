//! Vendor adapters behind one trait, and the one `match` that picks a vendor.
//!
//! An adapter turns a session's inputs into vendor calls and maps the vendor's answers to neutral outcomes with an
//! exhaustive `match`; anything it does not recognise is an error, never a guessed success.

pub mod baidu;
pub mod http;
pub mod json;
pub mod juhe;

use async_trait::async_trait;

use crate::domain::service::{ImageInput, RequestedOptions};
use crate::domain::validation::Violation;
use crate::domain::{
    Error, Failure, Inputs, Outcome, RequiredInput, ScoreThreshold, Session, Vendor, VendorError,
    VendorOptions,
};

/// What a vendor step produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The verification is over.
    Final {
        /// Whether the person was verified.
        verified: bool,
        /// Why not, when not.
        failure: Option<Failure>,
        /// Scores, billing and vendor detail.
        outcome: Outcome,
    },
}

/// One vendor's flow.
#[async_trait]
pub trait VendorAdapter: Send + Sync {
    /// Which vendor.
    fn vendor(&self) -> Vendor;
    /// The score thresholds the vendor publishes, by false accept rate.
    fn published_thresholds(&self) -> &'static [ScoreThreshold];
    /// Resolves the caller's options against this deployment (e.g. whether encryption is available).
    fn resolve_options(&self, requested: RequestedOptions) -> Result<VendorOptions, Violation>;
    /// Largest image the vendor takes, in bytes.
    fn max_image_bytes(&self) -> usize;
    /// Puts an image where the flow needs it, or says why it does not fit the flow.
    fn accept_image(&self, inputs: &mut Inputs, image: ImageInput) -> Result<(), Violation>;
    /// After a failed call, drops the inputs whose re-submission is the caller's new intent to try again.
    fn reset_for_retry(&self, inputs: &mut Inputs);
    /// The billing item name of the session's vendor call.
    fn billing_item(&self, session: &Session) -> String;
    /// What the session still needs before [`VendorAdapter::proceed`] can run.
    fn required_inputs(&self, session: &Session) -> Vec<RequiredInput>;
    /// Runs the vendor step for a session whose inputs are complete. Billed calls are made once: no retries here.
    async fn proceed(&self, session: &Session) -> Result<Progress, VendorError>;
}

/// The configured adapters.
pub struct Vendors {
    /// Juhe, when configured.
    pub juhe: Option<Box<dyn VendorAdapter>>,
}

impl Vendors {
    /// The adapter for `vendor`, or why there is none.
    pub fn adapter(&self, vendor: Vendor) -> Result<&dyn VendorAdapter, Error> {
        match vendor {
            Vendor::Juhe => self
                .juhe
                .as_deref()
                .ok_or(Error::VendorNotConfigured(vendor)),
            Vendor::Baidu | Vendor::Megvii => Err(Error::VendorNotImplemented(vendor)),
        }
    }
}
