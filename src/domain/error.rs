//! Domain errors. Their messages never carry personal data; the gRPC layer maps them to `tonic::Status` with a
//! `google.rpc.ErrorInfo` (reasons listed in README.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::session::{RequiredInput, State, Vendor};
use super::validation::Violation;

/// What went wrong with a vendor call, as far as the caller needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VendorErrorKind {
    /// The vendor throttled us (QPS, daily or test quota).
    RateLimited,
    /// The vendor is down, in maintenance or failed internally; the call was not billed.
    Unavailable,
    /// The vendor's authority data source timed out (Juhe 226401).
    DataSourceTimeout,
    /// The authority source has no record of the ID number (Juhe 226402).
    NoRecord,
    /// The vendor rejected a parameter (Juhe 226403).
    RejectedInput,
    /// Our vendor account or credentials are wrong, expired or not permitted.
    AccountError,
    /// No connection could be made; nothing reached the vendor.
    Unreachable,
    /// The call was sent but no answer came in time: it may have been billed.
    Timeout,
    /// The vendor answered something we cannot read: it may have been billed.
    ProtocolError,
    /// The vendor no longer keeps the result data asked for (past its retention).
    ResultExpired,
}

impl VendorErrorKind {
    /// The stable reason (README table).
    pub fn reason(self) -> &'static str {
        match self {
            Self::RateLimited => "VENDOR_RATE_LIMITED",
            Self::Unavailable => "VENDOR_UNAVAILABLE",
            Self::DataSourceTimeout => "VENDOR_DATA_SOURCE_TIMEOUT",
            Self::NoRecord => "VENDOR_NO_RECORD",
            Self::RejectedInput => "VENDOR_REJECTED_INPUT",
            Self::AccountError => "VENDOR_ACCOUNT_ERROR",
            Self::Unreachable => "VENDOR_UNREACHABLE",
            Self::Timeout => "VENDOR_TIMEOUT",
            Self::ProtocolError => "VENDOR_PROTOCOL_ERROR",
            Self::ResultExpired => "VENDOR_RESULT_EXPIRED",
        }
    }
}

/// A vendor call that did not produce an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} call failed: {}", vendor.as_str(), kind.reason())]
pub struct VendorError {
    /// What kind of failure.
    pub kind: VendorErrorKind,
    /// Which vendor.
    pub vendor: Vendor,
    /// The vendor's code, if it gave one.
    pub vendor_code: String,
    /// The vendor's message, sanitised (see [`sanitize_vendor_text`]).
    pub vendor_message: String,
    /// Whether the call may have been billed.
    pub possibly_billed: bool,
    /// When a retry may help, after how long.
    pub retry_after: Option<Duration>,
}

/// How a caller tries again after a vendor call failed. An error carries `RetryInfo` only where repeating the
/// same request can succeed ([`RetryWith::SameRequest`]); otherwise its ErrorInfo names what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryWith {
    /// Repeating the same request may succeed (after the error's `retry_after`, when it has one).
    SameRequest,
    /// The session takes inputs again: the identity (SubmitIdentity) and/or an image (UploadReference).
    Inputs {
        /// It needs the identity again.
        identity: bool,
        /// It needs an image again.
        image: bool,
        /// The failed request was StartSession: repeating it is an idempotent replay and answers the same error,
        /// so it carries no `RetryInfo`.
        replay: bool,
    },
    /// The session is over: only a new StartSession, with a new request_id, tries again.
    NewSession,
}

/// Removes anything that looks like personal data from vendor text (runs of 6+ digits or ID-like tokens) and bounds
/// its length, so it can go into error metadata and logs.
pub fn sanitize_vendor_text(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= 6 {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars().filter(|c| !c.is_control()) {
        // Any numeric character counts, full-width digits (１２３) included: vendors echo what the user typed.
        if c.is_numeric() || (matches!(c, 'X' | 'x' | 'Ｘ' | 'ｘ') && !run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out.chars().take(200).collect()
}

/// A domain operation that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request has invalid fields.
    #[error("the request has invalid fields")]
    InvalidArgument(Vec<Violation>),
    /// No such session.
    #[error("no session with that id")]
    NotFound,
    /// The idempotency key was used for a different request.
    #[error("request_id was already used for a different request")]
    IdempotencyKeyReused {
        /// The session created with the key.
        session_id: String,
    },
    /// The session is final and cannot change.
    #[error("the session is already final ({})", .0.as_str())]
    SessionFinal(State),
    /// A vendor call for the session is under way.
    #[error("a vendor call for this session is under way")]
    SessionBusy,
    /// The input is not what the session's flow takes now.
    #[error("{0}")]
    InputNotAccepted(String),
    /// The vendor has no credentials configured.
    #[error("vendor {} is not configured", .0.as_str())]
    VendorNotConfigured(Vendor),
    /// A vendor call failed without an outcome.
    #[error("{err}")]
    Vendor {
        /// The session the call was for.
        session_id: String,
        /// The failure.
        err: VendorError,
        /// How to try again.
        retry_with: RetryWith,
    },
    /// A tenant's quota refused the request; nothing was done (no vendor call made).
    #[error("quota {quota} of tenant {tenant} exceeded (limit {limit})")]
    QuotaExceeded {
        /// The tenant (from config; not personal data).
        tenant: String,
        /// Which quota: `rpc_rate`, `open_streams` or `billed_calls_per_day`.
        quota: &'static str,
        /// The quota's limit, as configured.
        limit: String,
        /// When waiting helps, how long until the request would be allowed.
        retry_after: Option<Duration>,
    },
    /// The session was redacted: its personal data is gone.
    #[error("the session was redacted; its personal data and media are gone")]
    SessionRedacted,
    /// The policy requires the end user's consent evidence and the request has none.
    #[error(
        "the request has no consent evidence and the policy session.require_consent requires it"
    )]
    ConsentRequired,
    /// The request left the vendor to facegate and no configured vendor can serve it now (`why` names the
    /// candidates and why each was left out; no personal data).
    #[error("no vendor can serve this request: {0}")]
    NoVendorAvailable(String),
    /// The tenant has no webhook event with that id (to that endpoint).
    #[error("no webhook delivery with that id")]
    WebhookNotFound,
    /// The webhook event was sent and its session redacted since: its body is gone and cannot be sent again.
    #[error("the session was redacted after this event was sent; its body is gone")]
    WebhookBodyRedacted,
    /// The store failed.
    #[error("session store unavailable")]
    Store,
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// A bug or broken invariant (no personal data in the text).
    #[error("internal error: {0}")]
    Internal(String),
}

impl RetryWith {
    /// What a session needing `required` takes again.
    pub fn inputs(required: &[RequiredInput], replay: bool) -> Self {
        RetryWith::Inputs {
            identity: required.contains(&RequiredInput::Identity),
            image: required
                .iter()
                .any(|i| matches!(i, RequiredInput::ReferenceImage | RequiredInput::ProbeImage)),
            replay,
        }
    }
}

impl Error {
    /// One field violation.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![Violation {
            field: field.to_owned(),
            description: description.into(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizer_removes_id_like_runs() {
        assert_eq!(
            sanitize_vendor_text("身份证11010519491231002X不匹配"),
            "身份证[redacted]不匹配"
        );
        assert_eq!(sanitize_vendor_text("code 3005 ok"), "code 3005 ok");
        assert_eq!(
            sanitize_vendor_text("身份证１１０１０５１９４９１２３１００２Ｘ不匹配"),
            "身份证[redacted]不匹配"
        );
        assert_eq!(sanitize_vendor_text("a\u{0}b\nc"), "abc");
        assert_eq!(sanitize_vendor_text(&"x".repeat(500)).chars().count(), 200);
    }
}
