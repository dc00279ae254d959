//! What the domain asks of a vendor: the adapter trait, the neutral answers it gives, and the registry of the
//! configured adapters. Vendors implement this; the domain never names a vendor module.
//!
//! An adapter turns a session's inputs into vendor calls and maps the vendor's answers to neutral outcomes with an
//! exhaustive `match`; anything it does not recognise is an error, never a guessed success.

use async_trait::async_trait;

use super::service::{ImageInput, RequestedOptions};
use super::validation::Violation;
use super::{
    Error, ExtrasRequest, Failure, Inputs, Outcome, RequiredInput, ResultExtras, ScoreThreshold,
    Session, Vendor, VendorError, VendorOptions,
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
    /// The vendor page is ready: the end user must complete it. The result is then polled ([`VendorAdapter::poll`]).
    AwaitUser {
        /// The page.
        user_url: String,
        /// When the page (and the vendor's token) stops working, unix ms.
        expires_at_ms: i64,
        /// When the flow must be over: then the vendor is asked one last time, and what is not decided expires.
        decide_by_ms: i64,
        /// The vendor's handle of the flow (Baidu verify_token).
        vendor_ref: String,
        /// What is known so far (plan, token).
        outcome: Outcome,
    },
}

/// What a poll of a flow that waits for the end user found.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    /// Not decided yet; `outcome` is what is known so far (attempts, billing). `attempt_failed` describes the latest
    /// failed attempt when the user may try again on the same page.
    Pending {
        /// What is known so far.
        outcome: Outcome,
        /// The latest failed attempt the user may retry after.
        attempt_failed: Option<Failure>,
        /// The vendor reports the user's flow under way (the session moves to PROCESSING).
        processing: bool,
    },
    /// Decided.
    Final {
        /// Whether the person was verified.
        verified: bool,
        /// Why not, when not.
        failure: Option<Failure>,
        /// Scores, billing and vendor detail.
        outcome: Outcome,
    },
    /// The vendor's token died before anything was decided.
    Expired {
        /// What is known.
        outcome: Outcome,
    },
}

/// How a vendor's result of a flow that waits for the end user is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultQuery {
    /// The vendor answers synchronously: nothing to query.
    None,
    /// Polled while watched, on demand, and once more at the token's end (Baidu).
    Poll,
    /// The vendor calls back; its result query may be made only once, when the flow must be over and no callback
    /// decided it (Megvii get_result).
    OnceAtEnd,
}

/// A callback whose signature checked out and whose data parsed strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCallback {
    /// facegate's session id the vendor echoed (Megvii biz_no).
    pub session_id: String,
    /// The vendor's handle of the flow (Megvii biz_id), which must match the session's.
    pub vendor_ref: String,
}

/// Why a callback was refused. It changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackRejection {
    /// A field is missing or not in the documented form.
    Malformed,
    /// The signature does not match.
    InvalidSignature,
    /// The session is unknown, or the callback names another flow.
    UnknownSession,
}

impl CallbackRejection {
    /// Stable text answered to the sender and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "MALFORMED_CALLBACK",
            Self::InvalidSignature => "INVALID_SIGNATURE",
            Self::UnknownSession => "UNKNOWN_SESSION",
        }
    }
}

/// One vendor's flow.
#[async_trait]
pub trait VendorAdapter: Send + Sync {
    /// Which vendor.
    fn vendor(&self) -> Vendor;
    /// The score thresholds the vendor publishes, by false accept rate.
    fn published_thresholds(&self) -> &[ScoreThreshold];
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
    /// How results of flows that wait for the end user are learned.
    fn result_query(&self) -> ResultQuery {
        ResultQuery::None
    }
    /// Checks a callback's signature over the data exactly as received and parses the data strictly. Vendors that
    /// do not call back refuse every callback.
    fn verify_callback(
        &self,
        data: &[u8],
        sign: &[u8],
    ) -> Result<VerifiedCallback, CallbackRejection> {
        let _ = (data, sign);
        Err(CallbackRejection::UnknownSession)
    }
    /// The session a callback names, read without verifying it (only to record a rejection on that session's event
    /// log). `None` when the data names none or the vendor does not call back.
    fn claimed_session_id(&self, data: &[u8]) -> Option<String> {
        let _ = data;
        None
    }
    /// What a verified callback's data says about `session`.
    fn interpret_callback(
        &self,
        session: &Session,
        data: &[u8],
    ) -> Result<PollOutcome, CallbackRejection> {
        let _ = (session, data);
        Err(CallbackRejection::UnknownSession)
    }
    /// Asks the vendor how a flow that waits for the end user stands (never billed). With `final_check` the
    /// vendor's token has run out: whatever is not decided now never will be. Vendors that answer synchronously have
    /// no such flow and keep the default, which reports nothing new.
    async fn poll(&self, session: &Session, final_check: bool) -> Result<PollOutcome, VendorError> {
        let _ = final_check;
        Ok(PollOutcome::Pending {
            outcome: session.outcome.clone(),
            attempt_failed: None,
            processing: false,
        })
    }
    /// Where the browser goes after the vendor page when the session names no return URLs (success, failure).
    fn default_return_urls(&self, session: &Session) -> (String, String) {
        let _ = session;
        (String::new(), String::new())
    }
    /// For a final session, reads what its decision did not need and left out (Baidu: the `result/detail` scores
    /// and OCR fields, `result/stat`), once: `None` when nothing is missing. Never billed; the decision and the
    /// billing records stay as they are.
    /// Whether [`VendorAdapter::complete_outcome`] has something to read for `session` (no I/O).
    fn outcome_incomplete(&self, session: &Session) -> bool {
        let _ = session;
        false
    }
    /// See [`VendorAdapter::outcome_incomplete`].
    async fn complete_outcome(&self, session: &Session) -> Result<Option<Outcome>, VendorError> {
        let _ = session;
        Ok(None)
    }
    /// Fetches result data that is never stored (unmasked identity, face image, media) from the vendor. Vendors that
    /// keep none of it return nothing.
    async fn fetch_extras(
        &self,
        session: &Session,
        request: ExtrasRequest,
    ) -> Result<ResultExtras, VendorError> {
        let _ = (session, request);
        Ok(ResultExtras::default())
    }
}

/// The configured adapters.
pub struct Vendors {
    /// Juhe, when configured.
    pub juhe: Option<Box<dyn VendorAdapter>>,
    /// Baidu, when configured.
    pub baidu: Option<Box<dyn VendorAdapter>>,
    /// Megvii, when configured.
    pub megvii: Option<Box<dyn VendorAdapter>>,
}

impl Vendors {
    /// The adapter for `vendor`, or why there is none.
    pub fn adapter(&self, vendor: Vendor) -> Result<&dyn VendorAdapter, Error> {
        match vendor {
            Vendor::Juhe => self
                .juhe
                .as_deref()
                .ok_or(Error::VendorNotConfigured(vendor)),
            Vendor::Baidu => self
                .baidu
                .as_deref()
                .ok_or(Error::VendorNotConfigured(vendor)),
            Vendor::Megvii => self
                .megvii
                .as_deref()
                .ok_or(Error::VendorNotConfigured(vendor)),
        }
    }
}
