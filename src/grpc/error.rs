//! Domain error -> `tonic::Status` with exactly one `google.rpc.ErrorInfo` (domain `facegate.v1`), a `BadRequest`
//! for field violations and a `RetryInfo` where repeating the same request can help.
//!
//! Metadata keys are lowerCamelCase (AIP-193). For one release the keys renamed from snake_case are also sent under
//! their former names (`sessionId` and `session_id`, ...), so callers reading the old keys keep working (README,
//! "Errors").

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, FieldViolation, QuotaViolation, StatusExt};

use crate::domain::{Error, RetryWith, VendorErrorKind};

/// The ErrorInfo domain.
pub const DOMAIN: &str = "facegate.v1";

/// Builds a status with an ErrorInfo and optional RetryInfo / BadRequest.
pub fn status(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
    retry: Option<Duration>,
    violations: Vec<FieldViolation>,
) -> tonic::Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, DOMAIN, with_legacy_keys(metadata));
    if let Some(delay) = retry {
        details.set_retry_info(Some(delay));
    }
    if !violations.is_empty() {
        details.set_bad_request(violations);
    }
    tonic::Status::with_error_details(code, message, details)
}

/// The metadata keys renamed to lowerCamelCase in this release, with their former names, which are sent too until
/// the next one.
const LEGACY_KEYS: [(&str, &str); 6] = [
    ("sessionId", "session_id"),
    ("vendorCode", "vendor_code"),
    ("vendorMessage", "vendor_message"),
    ("possiblyBilled", "possibly_billed"),
    ("limitBytes", "limit_bytes"),
    ("messageBytes", "message_bytes"),
];

/// Adds the former name of every renamed key (`sessionId` -> `session_id`), kept for one release.
fn with_legacy_keys(mut metadata: HashMap<String, String>) -> HashMap<String, String> {
    for (key, former) in LEGACY_KEYS {
        if let Some(v) = metadata.get(key).cloned() {
            metadata.entry(former.to_owned()).or_insert(v);
        }
    }
    metadata
}

/// The RPCs that send what a session takes again (ErrorInfo `retryWith`), in the order a caller sends them.
fn rpcs_for(identity: bool, image: bool) -> String {
    let rpcs: Vec<&str> = [(identity, "SubmitIdentity"), (image, "UploadReference")]
        .into_iter()
        .filter_map(|(needed, rpc)| needed.then_some(rpc))
        .collect();
    rpcs.join(",")
}

/// A delay as the JSON form of `google.protobuf.Duration` (`5s`, `1.500s`).
fn duration_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
    }
}

/// The gRPC code and reason of a vendor failure.
pub fn vendor_code(kind: VendorErrorKind) -> Code {
    match kind {
        VendorErrorKind::RateLimited => Code::ResourceExhausted,
        VendorErrorKind::Unavailable
        | VendorErrorKind::DataSourceTimeout
        | VendorErrorKind::Unreachable => Code::Unavailable,
        VendorErrorKind::NoRecord
        | VendorErrorKind::AccountError
        | VendorErrorKind::ResultExpired => Code::FailedPrecondition,
        VendorErrorKind::RejectedInput => Code::InvalidArgument,
        VendorErrorKind::Timeout => Code::DeadlineExceeded,
        VendorErrorKind::ProtocolError => Code::Unknown,
    }
}

/// What a quota refusal's `QuotaFailure` violation says.
fn quota_description(quota: &str, limit: &str) -> String {
    match quota {
        crate::domain::quota::RPC_RATE => format!("RPC rate limit of {limit} per second reached"),
        crate::domain::quota::OPEN_STREAMS => format!("{limit} StatusStreams open already"),
        crate::domain::quota::BILLED_CALLS_PER_DAY => {
            format!("{limit} billed vendor calls today (UTC) already")
        }
        other => format!("quota {other} ({limit}) reached"),
    }
}

/// Maps a domain error.
pub fn to_status(err: &Error) -> tonic::Status {
    let none = HashMap::new;
    let msg = err.to_string();
    match err {
        Error::InvalidArgument(violations) => status(
            Code::InvalidArgument,
            "INVALID_REQUEST",
            format!(
                "invalid request: {}",
                violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            none(),
            None,
            violations
                .iter()
                .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                .collect(),
        ),
        Error::NotFound => status(
            Code::NotFound,
            "SESSION_NOT_FOUND",
            msg,
            none(),
            None,
            vec![],
        ),
        Error::IdempotencyKeyReused { session_id } => status(
            Code::AlreadyExists,
            "IDEMPOTENCY_KEY_REUSED",
            msg,
            HashMap::from([("sessionId".to_owned(), session_id.clone())]),
            None,
            vec![],
        ),
        Error::SessionFinal(state) => status(
            Code::FailedPrecondition,
            "SESSION_FINAL",
            msg,
            HashMap::from([("state".to_owned(), state.as_str().to_owned())]),
            None,
            vec![],
        ),
        Error::SessionBusy => status(
            Code::Aborted,
            "SESSION_BUSY",
            msg,
            none(),
            Some(Duration::from_secs(1)),
            vec![],
        ),
        Error::InputNotAccepted(_) => status(
            Code::FailedPrecondition,
            "INPUT_NOT_ACCEPTED",
            msg,
            none(),
            None,
            vec![],
        ),
        Error::NoVendorAvailable(_) => status(
            Code::FailedPrecondition,
            "NO_VENDOR_AVAILABLE",
            msg,
            none(),
            None,
            vec![],
        ),
        Error::VendorNotConfigured(v) => status(
            Code::FailedPrecondition,
            "VENDOR_NOT_CONFIGURED",
            msg,
            HashMap::from([("vendor".to_owned(), v.as_str().to_owned())]),
            None,
            vec![],
        ),
        Error::Vendor {
            session_id,
            err,
            retry_with,
        } => {
            let mut md = HashMap::from([
                ("sessionId".to_owned(), session_id.clone()),
                ("vendor".to_owned(), err.vendor.as_str().to_owned()),
                ("possiblyBilled".to_owned(), err.possibly_billed.to_string()),
            ]);
            if !err.vendor_code.is_empty() {
                md.insert("vendorCode".into(), err.vendor_code.clone());
            }
            if !err.vendor_message.is_empty() {
                md.insert("vendorMessage".into(), err.vendor_message.clone());
            }
            // RetryInfo only where repeating this very request can succeed; otherwise `retryWith` names what to
            // send instead (and `retryDelay` how long to wait first).
            let retry = match retry_with {
                RetryWith::SameRequest => err.retry_after,
                RetryWith::Inputs {
                    identity,
                    image,
                    replay,
                } => {
                    let rpcs = rpcs_for(*identity, *image);
                    if !rpcs.is_empty() {
                        md.insert("retryWith".into(), rpcs);
                    }
                    if *replay {
                        if let Some(delay) = err.retry_after {
                            md.insert("retryDelay".into(), duration_text(delay));
                        }
                        None
                    } else {
                        err.retry_after
                    }
                }
                RetryWith::NewSession => {
                    md.insert("retryWith".into(), "StartSession".into());
                    None
                }
            };
            let message = if err.vendor_code.is_empty() {
                msg
            } else {
                format!("{msg} (vendor code {})", err.vendor_code)
            };
            status(
                vendor_code(err.kind),
                err.kind.reason(),
                message,
                md,
                retry,
                vec![],
            )
        }
        Error::QuotaExceeded {
            tenant,
            quota,
            limit,
            retry_after,
        } => {
            let mut details = ErrorDetails::new();
            details.set_error_info(
                "QUOTA_EXCEEDED",
                DOMAIN,
                HashMap::from([
                    ("tenant".to_owned(), tenant.clone()),
                    ("quota".to_owned(), (*quota).to_owned()),
                    ("limit".to_owned(), limit.clone()),
                ]),
            );
            details.set_quota_failure(vec![QuotaViolation {
                quota_id: (*quota).to_owned(),
                ..QuotaViolation::new(format!("tenant:{tenant}"), quota_description(quota, limit))
            }]);
            if let Some(delay) = retry_after {
                details.set_retry_info(Some(*delay));
            }
            tonic::Status::with_error_details(Code::ResourceExhausted, msg, details)
        }
        Error::WebhookNotFound => status(
            Code::NotFound,
            "WEBHOOK_DELIVERY_NOT_FOUND",
            msg,
            none(),
            None,
            vec![],
        ),
        Error::WebhookBodyRedacted => status(
            Code::FailedPrecondition,
            "WEBHOOK_BODY_REDACTED",
            msg,
            none(),
            None,
            vec![],
        ),
        Error::SessionRedacted => status(
            Code::FailedPrecondition,
            "SESSION_REDACTED",
            msg,
            none(),
            None,
            vec![],
        ),
        Error::ConsentRequired => status(
            Code::InvalidArgument,
            "CONSENT_REQUIRED",
            msg,
            none(),
            None,
            vec![FieldViolation::new(
                "consent",
                "required by the policy session.require_consent",
            )],
        ),
        Error::Store => status(
            Code::Unavailable,
            "STORE_UNAVAILABLE",
            msg,
            none(),
            Some(Duration::from_secs(1)),
            vec![],
        ),
        Error::ShuttingDown => status(
            Code::Unavailable,
            "SHUTTING_DOWN",
            msg,
            none(),
            Some(Duration::from_secs(1)),
            vec![],
        ),
        Error::Internal(_) => status(
            Code::Internal,
            "INTERNAL",
            "internal error",
            none(),
            None,
            vec![],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RequiredInput, Vendor, VendorError};

    #[test]
    fn every_status_has_one_error_info() {
        let errs = vec![
            Error::invalid("identity.id_number", "check digit does not match"),
            Error::NotFound,
            Error::SessionBusy,
            Error::Store,
            Error::Vendor {
                session_id: "ses_1".into(),
                err: VendorError {
                    kind: VendorErrorKind::RateLimited,
                    vendor: Vendor::Juhe,
                    vendor_code: "10012".into(),
                    vendor_message: "请求超过次数限制".into(),
                    possibly_billed: false,
                    retry_after: Some(Duration::from_secs(60)),
                },
                retry_with: RetryWith::SameRequest,
            },
        ];
        for e in errs {
            let st = to_status(&e);
            let d = st.get_error_details();
            let info = d.error_info().expect("error info");
            assert_eq!(info.domain, DOMAIN);
            assert!(info
                .reason
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_'));
        }
        let st = to_status(&Error::invalid("a", "b"));
        assert_eq!(st.code(), Code::InvalidArgument);
        assert_eq!(
            st.get_error_details()
                .bad_request()
                .unwrap()
                .field_violations
                .len(),
            1
        );
        let st = to_status(&Error::Vendor {
            session_id: "ses_1".into(),
            err: VendorError {
                kind: VendorErrorKind::RateLimited,
                vendor: Vendor::Juhe,
                vendor_code: "10012".into(),
                vendor_message: String::new(),
                possibly_billed: false,
                retry_after: Some(Duration::from_secs(60)),
            },
            retry_with: RetryWith::SameRequest,
        });
        assert_eq!(st.code(), Code::ResourceExhausted);
        let d = st.get_error_details();
        assert_eq!(
            d.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(60))
        );
        let md = &d.error_info().unwrap().metadata;
        assert_eq!(md["vendorCode"], "10012");
        assert_eq!(
            md["vendor_code"], "10012",
            "the former key, for one release"
        );
        assert_eq!(md["sessionId"], "ses_1");
        assert_eq!(md["session_id"], "ses_1");
        assert_eq!(md["possiblyBilled"], "false");
        assert_eq!(md["possibly_billed"], "false");
        assert!(
            !md.contains_key("retryWith"),
            "GetResult is retried as it is"
        );
    }

    fn data_source_timeout(retry_with: RetryWith) -> tonic::Status {
        to_status(&Error::Vendor {
            session_id: "ses_2".into(),
            err: VendorError {
                kind: VendorErrorKind::DataSourceTimeout,
                vendor: Vendor::Juhe,
                vendor_code: "226401".into(),
                vendor_message: "数据源超时".into(),
                possibly_billed: false,
                retry_after: Some(Duration::from_millis(5500)),
            },
            retry_with,
        })
    }

    #[test]
    fn retry_info_only_where_the_same_request_can_succeed() {
        // StartSession's call failed: its replay answers the same, so no RetryInfo; the ErrorInfo says what to send.
        let st = data_source_timeout(RetryWith::inputs(&[RequiredInput::ProbeImage], true));
        assert_eq!(st.code(), Code::Unavailable);
        let d = st.get_error_details();
        assert!(d.retry_info().is_none());
        let md = &d.error_info().unwrap().metadata;
        assert_eq!(md["retryWith"], "UploadReference");
        assert_eq!(md["retryDelay"], "5.500s");
        // UploadReference failed the same way: sending that image again is the retry.
        let st = data_source_timeout(RetryWith::inputs(
            &[RequiredInput::ProbeImage, RequiredInput::Identity],
            false,
        ));
        let d = st.get_error_details();
        assert_eq!(
            d.retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(5500))
        );
        let md = &d.error_info().unwrap().metadata;
        assert_eq!(md["retryWith"], "SubmitIdentity,UploadReference");
        assert!(!md.contains_key("retryDelay"));
        // The session is over: only a new StartSession (new request_id) tries again.
        let st = data_source_timeout(RetryWith::NewSession);
        let d = st.get_error_details();
        assert!(d.retry_info().is_none());
        assert_eq!(
            d.error_info().unwrap().metadata["retryWith"],
            "StartSession"
        );
    }

    #[test]
    fn camel_case_keys_keep_their_former_names_for_one_release() {
        let md = with_legacy_keys(HashMap::from([
            ("limitBytes".to_owned(), "1".to_owned()),
            ("scope".to_owned(), "s".to_owned()),
            ("retryWith".to_owned(), "UploadReference".to_owned()),
        ]));
        assert_eq!(md.len(), 4, "new keys have no former name: {md:?}");
        assert_eq!(md["limit_bytes"], "1");
        assert_eq!(md["scope"], "s");
    }

    #[test]
    fn quota_refusals_carry_quota_failure_and_retry_only_where_waiting_helps() {
        let refuse = |quota: &'static str, retry_after| Error::QuotaExceeded {
            tenant: "shop".into(),
            quota,
            limit: "5".into(),
            retry_after,
        };
        let st = to_status(&refuse(
            "billed_calls_per_day",
            Some(Duration::from_secs(60)),
        ));
        assert_eq!(st.code(), Code::ResourceExhausted);
        let d = st.get_error_details();
        let info = d.error_info().unwrap();
        assert_eq!(info.reason, "QUOTA_EXCEEDED");
        assert_eq!(info.metadata["tenant"], "shop");
        assert_eq!(info.metadata["quota"], "billed_calls_per_day");
        assert_eq!(info.metadata["limit"], "5");
        let violations = &d.quota_failure().unwrap().violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].subject, "tenant:shop");
        assert_eq!(violations[0].quota_id, "billed_calls_per_day");
        assert!(violations[0].description.contains("billed vendor calls"));
        assert_eq!(
            d.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(60))
        );
        let st = to_status(&refuse("open_streams", None));
        let d = st.get_error_details();
        assert!(d.retry_info().is_none(), "waiting does not close a stream");
        assert!(d.quota_failure().unwrap().violations[0]
            .description
            .contains("StatusStreams"));
    }
}
