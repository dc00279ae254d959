//! Megvii Face++ FaceID Lite (H5 人脸核身) adapter, following megvii-faceid-lite-callbacks.txt and FACTS.md §2.
//!
//! Flow: `get_token` takes the identity and reference images up front, so a session stays REQUIRES_INPUT until
//! what its comparison type needs is there; then the token is made once (biz_no = the session id; notify_url and
//! return_url point at facegate's own HTTP intake). The end user opens `<page_url>?token=..`. Megvii POSTs the result
//! to notify_url (form `data` + `sign = sha1(api_secret + data)`, lowercase hex) and sends the browser to
//! return_url. A callback is verified over the data exactly as received, in constant time, and parsed strictly (a
//! SHA-1 length extension leaves bytes after the JSON, which is refused). `get_result` may be called only a few
//! times and results are kept one day, so it is called at most once per session, and only when no callback has
//! decided the flow by the time it must be over.
//!
//! [`wire`] holds the strict wire types and parsers.

pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use sha1::{Digest, Sha1};

use self::wire::{Comparison, ErrorReply, LiteResult, LiteStatus, Reply};
use crate::config::MegviiConfig;
use crate::domain::adapter::{
    CallbackRejection, PollOutcome, Progress, ResultQuery, VendorAdapter, VerifiedCallback,
};
use crate::domain::error::sanitize_vendor_text;
use crate::domain::far::threshold_for;
use crate::domain::service::{ImageInput, RequestedOptions};
use crate::domain::validation::{IdType, Violation};
use crate::domain::{
    mask_personal_text, now_ms, BillingRecord, FaceImage, FaceMatch, Failure, FailureCode,
    IdentityDocument, ImageRole, Inputs, Liveness, MegviiComparison, MegviiComparisonScore,
    MegviiDetail, MegviiGenuineness, MegviiSettings, Outcome, RequiredInput, ScoreThreshold,
    Session, Vendor, VendorDetail, VendorError, VendorErrorKind, VendorOptions,
};
use crate::vendors::http::{protocol_error, send, unbilled};

/// Thresholds Megvii publishes with every comparison (verify_result `thresholds`); decisions use the ones in the
/// reply, these are for validating a caller's target FAR.
pub const MEGVII_THRESHOLDS: [ScoreThreshold; 4] = [
    ScoreThreshold {
        false_accept_rate: 1e-3,
        threshold: 62.169,
    },
    ScoreThreshold {
        false_accept_rate: 1e-4,
        threshold: 69.315,
    },
    ScoreThreshold {
        false_accept_rate: 1e-5,
        threshold: 74.399,
    },
    ScoreThreshold {
        false_accept_rate: 1e-6,
        threshold: 78.038,
    },
];

/// Largest reference image (image_ref1..3).
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// How long Megvii keeps results, ms.
pub const RESULT_RETENTION_MS: i64 = 24 * 3600 * 1000;
/// The billing item of a Megvii verification.
const BILLING_ITEM: &str = "faceid/lite";

/// The Megvii adapter.
pub struct MegviiAdapter {
    http: reqwest::Client,
    base: String,
    page_url: String,
    api_key: crate::config::Secret,
    api_secret: crate::config::Secret,
    public_base: String,
    max_response: usize,
    max_flow_ms: i64,
    result_wait_ms: i64,
    /// How long facegate keeps the unmasked OCR of a result, ms.
    revealable_ms: i64,
}

impl MegviiAdapter {
    /// Builds the adapter. `public_base_url` is facegate's HTTP address as Megvii and browsers reach it.
    /// The adapter; facegate keeps the unmasked OCR of a result for `revealable_secs` (`retention.revealable_secs`).
    pub fn new(
        cfg: &MegviiConfig,
        public_base_url: &str,
        revealable_secs: u64,
    ) -> Result<Self, String> {
        let http = crate::vendors::http::client(
            Duration::from_secs(cfg.connect_timeout_secs),
            Duration::from_secs(cfg.timeout_secs),
        )?;
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        Ok(Self {
            http,
            base: cfg.base_url.trim_end_matches('/').to_owned(),
            page_url: cfg.page_url.clone(),
            api_key: cfg.api_key.clone(),
            api_secret: cfg.api_secret.clone(),
            public_base: public_base_url.trim_end_matches('/').to_owned(),
            max_response: cfg.max_response_bytes,
            max_flow_ms: ms(cfg.max_flow_secs),
            result_wait_ms: ms(cfg.result_wait_secs),
            revealable_ms: ms(revealable_secs),
        })
    }

    fn settings(session: &Session) -> Result<&MegviiSettings, VendorError> {
        match &session.options {
            VendorOptions::Megvii(s) => Ok(s),
            _ => Err(protocol("not a Megvii session")),
        }
    }

    /// The get_token fields (text) in the documented names.
    fn token_fields(&self, session: &Session) -> Result<Vec<(&'static str, String)>, VendorError> {
        let o = Self::settings(session)?;
        let mut f: Vec<(&'static str, String)> = vec![
            ("api_key", self.api_key.expose().to_owned()),
            ("api_secret", self.api_secret.expose().to_owned()),
            (
                "return_url",
                format!("{}/v1/return/{}", self.public_base, session.id),
            ),
            (
                "notify_url",
                format!(
                    "{}{}",
                    self.public_base,
                    crate::http::callbacks::MEGVII_NOTIFY_PATH
                ),
            ),
            ("biz_no", session.id.clone()),
        ];
        match o.comparison {
            MegviiComparison::Authority => {
                f.push(("comparison_type", "1".into()));
                f.push(("idcard_mode", o.idcard_mode.to_string()));
                if o.idcard_mode == 0 {
                    let id = session
                        .inputs
                        .identity
                        .as_ref()
                        .ok_or_else(|| protocol("inputs incomplete"))?;
                    f.push(("idcard_name", id.name.clone()));
                    f.push(("idcard_number", id.id_number.clone()));
                }
            }
            MegviiComparison::ReferenceImage => {
                f.push(("comparison_type", "0".into()));
                f.push((
                    "uuid",
                    if o.uuid.is_empty() {
                        session.id.clone()
                    } else {
                        o.uuid.clone()
                    },
                ));
            }
        }
        let text = [
            ("biz_extra_data", &o.biz_extra_data),
            ("web_title", &o.web_title),
            ("scene_id", &o.scene_id),
            ("procedure_type", &o.procedure_type),
            ("procedure_priority", &o.procedure_priority),
            ("liveness_preferences", &o.liveness_preferences),
        ];
        for (name, value) in text {
            if !value.is_empty() {
                f.push((name, value.clone()));
            }
        }
        if !o.idcard_uneditable_fields.is_empty() {
            f.push((
                "idcard_uneditable_field",
                o.idcard_uneditable_fields.join(","),
            ));
        }
        let flags = [
            ("get_fail_reason", o.get_fail_reason),
            ("return_multifaces_tag", o.return_multifaces_tag),
            ("multi_oriented_detection", o.multi_oriented_detection),
            ("fmp_mode", o.fmp_mode),
            ("get_shooting_error", o.get_shooting_error),
            ("update_rtc", o.update_rtc),
        ];
        for (name, on) in flags {
            if on {
                f.push((name, "1".into()));
            }
        }
        f.push((
            "action_http_method",
            if o.return_by_get { "GET" } else { "POST" }.into(),
        ));
        if o.maximum_shooting_time > 0 {
            f.push(("maximum_shooting_time", o.maximum_shooting_time.to_string()));
        }
        if let Some(t) = o.encryption_type {
            f.push(("encryption_type", t.to_string()));
        }
        Ok(f)
    }

    /// Checks `sign == sha1(api_secret + data)` in constant time.
    fn signature_ok(&self, data: &[u8], sign: &[u8]) -> bool {
        if sign.len() != 40
            || !sign
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            return false;
        }
        let mut h = Sha1::new();
        h.update(self.api_secret.expose().as_bytes());
        h.update(data);
        let expected: Vec<u8> = h
            .finalize()
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect();
        constant_time_eq(&expected, sign)
    }

    /// Maps a Megvii result to a neutral outcome for `session`.
    fn interpret(&self, session: &Session, r: &LiteResult, from_callback: bool) -> PollOutcome {
        let settings = match Self::settings(session) {
            Ok(s) => s.clone(),
            Err(_) => MegviiSettings::default(),
        };
        let identity = identity_of(r);
        // Vendor text that echoes the session's own name or ID number (given by the caller or read off the card)
        // is masked before it is kept.
        let (mut names, mut numbers) = (Vec::new(), Vec::new());
        if let Some(i) = &session.inputs.identity {
            names.push(i.name.clone());
            numbers.push(i.id_number.clone());
        }
        if let Some(i) = &identity {
            names.push(i.name.clone());
            numbers.push(i.id_number.clone());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let numbers: Vec<&str> = numbers.iter().map(String::as_str).collect();
        // After get_token the session keeps only the masked form of what it sent; that masks the name too.
        let masked = session.identity_masked.clone();
        let clean = |text: &str| {
            let text = mask_personal_text(text, &names, &numbers);
            let text = match &masked {
                Some(m) => m.mask_in(&text),
                None => text,
            };
            sanitize_vendor_text(&text)
        };
        let mut detail = detail_of(r, from_callback, &clean);
        detail.biz_id = r.biz_info.biz_id.clone();
        let now = now_ms();
        let ran = matches!(r.status, LiteStatus::Ok | LiteStatus::Failed);
        let mut outcome = Outcome {
            face_match: None,
            liveness: r.liveness_result.as_ref().map(|l| Liveness {
                passed: l.result == "PASS",
                liveness_score: 0.0,
                spoofing_score: genuineness_max(&detail.face_genuineness),
                procedure: l.procedure_type.clone().unwrap_or_default(),
            }),
            identity_document: identity.as_ref().map(IdentityDocument::masked),
            revealable_until_ms: identity
                .as_ref()
                .map(|_| now.saturating_add(self.revealable_ms)),
            revealable_identity: identity,
            billing: if ran {
                vec![BillingRecord {
                    vendor: Vendor::Megvii,
                    item: BILLING_ITEM.into(),
                    billed: true,
                    at_ms: detail.verify_time_ms.unwrap_or(now),
                    vendor_reference: r.biz_info.biz_id.clone(),
                }]
            } else {
                Vec::new()
            },
            vendor_detail: None,
        };
        let fail = |code: FailureCode, vendor_code: &str, outcome: Outcome| PollOutcome::Final {
            verified: false,
            failure: Some(Failure {
                code,
                vendor_code: vendor_code.to_owned(),
                vendor_message: String::new(),
            }),
            outcome,
        };
        let status = r.status.as_str().to_owned();
        match r.status {
            LiteStatus::NotStarted | LiteStatus::Processing => {
                outcome.vendor_detail = Some(VendorDetail::Megvii(Box::new(detail)));
                return PollOutcome::Pending {
                    outcome,
                    attempt_failed: None,
                    processing: r.status == LiteStatus::Processing,
                };
            }
            LiteStatus::Cancelled => {
                outcome.vendor_detail = Some(VendorDetail::Megvii(Box::new(detail)));
                return fail(FailureCode::UserAbandoned, &status, outcome);
            }
            LiteStatus::Timeout => {
                outcome.vendor_detail = Some(VendorDetail::Megvii(Box::new(detail)));
                return fail(FailureCode::UserTimeout, &status, outcome);
            }
            LiteStatus::WebrtcUnsupported => {
                outcome.vendor_detail = Some(VendorDetail::Megvii(Box::new(detail)));
                return fail(FailureCode::BrowserUnsupported, &status, outcome);
            }
            LiteStatus::Failed | LiteStatus::Ok => {}
        }
        let liveness_passed = r
            .liveness_result
            .as_ref()
            .is_some_and(|l| l.result == "PASS");
        let verify_error = r
            .verify_result
            .as_ref()
            .and_then(|v| v.error_message.clone())
            .unwrap_or_default();
        // The comparison this session decides on.
        let primary = r
            .verify_result
            .as_ref()
            .and_then(|v| match settings.comparison {
                MegviiComparison::Authority => v
                    .result_faceid
                    .as_ref()
                    .map(|c| ("faceid", c))
                    .or(v
                        .result_idcard_datasource
                        .as_ref()
                        .map(|c| ("idcard_datasource", c)))
                    .or(v.result_idcard_photo.as_ref().map(|c| ("idcard_photo", c))),
                MegviiComparison::ReferenceImage => [
                    ("ref1", &v.result_ref1),
                    ("ref2", &v.result_ref2),
                    ("ref3", &v.result_ref3),
                ]
                .into_iter()
                .filter_map(|(n, c)| c.as_ref().map(|c| (n, c)))
                .max_by(|a, b| a.1.confidence.total_cmp(&b.1.confidence)),
            });
        if let Some((source, c)) = primary {
            let thresholds = thresholds_of(c);
            let target = threshold_for(&thresholds, session.target_false_accept_rate)
                .or_else(|| threshold_for(&MEGVII_THRESHOLDS, session.target_false_accept_rate));
            if let Some(t) = target {
                outcome.face_match = Some(FaceMatch {
                    score: c.confidence,
                    threshold: t.threshold,
                    threshold_false_accept_rate: t.false_accept_rate,
                    thresholds: thresholds.clone(),
                    passed: c.confidence >= t.threshold,
                    source: if source == "faceid" {
                        "authority".into()
                    } else {
                        source.into()
                    },
                });
            }
        }
        outcome.vendor_detail = Some(VendorDetail::Megvii(Box::new(detail)));
        if !liveness_passed || r.status == LiteStatus::Failed {
            let vendor_code = clean(r.fail_reason.as_deref().unwrap_or(&status));
            // With get_fail_reason=1 a flow the browser could not run ends FAILED with fail_reason
            // WEBRTC_UNSUPPORTED (megvii-faceid-lite-callbacks.txt): the user's browser, not the vendor.
            let code = if vendor_code.trim() == "WEBRTC_UNSUPPORTED" {
                FailureCode::BrowserUnsupported
            } else if r.liveness_result.is_some() && !liveness_passed {
                FailureCode::LivenessFailed
            } else {
                FailureCode::VendorError
            };
            return fail(code, vendor_code.trim(), outcome);
        }
        if !verify_error.is_empty() {
            let code = match verify_error.split(':').next().unwrap_or("").trim() {
                "ID_NUMBER_NAME_NOT_MATCH" => FailureCode::IdNameMismatch,
                "NO_SUCH_ID_NUMBER" => FailureCode::IdNotFound,
                "IMAGE_ERROR_UNSUPPORTED_FORMAT" => FailureCode::IdPhotoUnavailable,
                _ => FailureCode::VendorError,
            };
            return fail(code, &clean(&verify_error), outcome);
        }
        match &outcome.face_match {
            Some(fm) if fm.passed => PollOutcome::Final {
                verified: true,
                failure: None,
                outcome,
            },
            Some(fm) => {
                let lowest = fm
                    .thresholds
                    .iter()
                    .map(|t| t.threshold)
                    .fold(f64::INFINITY, f64::min);
                let code = if fm.score < lowest {
                    FailureCode::FaceMismatch
                } else {
                    FailureCode::ScoreBelowThreshold
                };
                fail(code, "", outcome)
            }
            // Status OK without a comparison to decide on: not a pass.
            None => fail(FailureCode::VendorError, "NO_COMPARISON", outcome),
        }
    }

    /// Maps an error reply of get_token or get_result to a vendor error.
    pub fn error_of(&self, http_status: u16, e: &ErrorReply) -> VendorError {
        let code = e.code().to_owned();
        let (kind, retry) = match code.as_str() {
            "CONCURRENCY_LIMIT_EXCEEDED" => {
                (VendorErrorKind::RateLimited, Some(Duration::from_secs(1)))
            }
            "AUTHENTICATION_ERROR" | "AUTHORIZATION_ERROR" | "API_NOT_FOUND" => {
                (VendorErrorKind::AccountError, None)
            }
            "RESULT_NOT_FOUND" => (VendorErrorKind::ResultExpired, None),
            "INTERNAL_ERROR" => (VendorErrorKind::Unavailable, Some(Duration::from_secs(2))),
            _ if http_status == 400 => (VendorErrorKind::RejectedInput, None),
            _ if http_status >= 500 => (VendorErrorKind::Unavailable, Some(Duration::from_secs(2))),
            _ => (VendorErrorKind::ProtocolError, None),
        };
        VendorError {
            kind,
            vendor: Vendor::Megvii,
            vendor_code: sanitize_vendor_text(&code),
            vendor_message: sanitize_vendor_text(e.detail()),
            possibly_billed: false,
            retry_after: retry,
        }
    }
}

#[async_trait]
impl VendorAdapter for MegviiAdapter {
    fn vendor(&self) -> Vendor {
        Vendor::Megvii
    }

    fn published_thresholds(&self) -> &[ScoreThreshold] {
        &MEGVII_THRESHOLDS
    }

    fn resolve_options(&self, requested: RequestedOptions) -> Result<VendorOptions, Violation> {
        match requested {
            RequestedOptions::Default => Ok(VendorOptions::Megvii(MegviiSettings::default())),
            RequestedOptions::Megvii(s) => Ok(VendorOptions::Megvii(s)),
            RequestedOptions::Juhe { .. } | RequestedOptions::Baidu { .. } => Err(Violation {
                field: "vendor_options".into(),
                description: "the options must be those of the chosen vendor".into(),
            }),
        }
    }

    fn max_image_bytes(&self) -> usize {
        MAX_IMAGE_BYTES
    }

    fn accept_image(&self, inputs: &mut Inputs, image: ImageInput) -> Result<(), Violation> {
        if image.role == Some(ImageRole::Probe) {
            return Err(Violation {
                field: "role".into(),
                description: "Megvii captures the live face on its page; send reference faces \
                              (IMAGE_ROLE_REFERENCE)"
                    .into(),
            });
        }
        let slot = match image.slot {
            0 => inputs.references.len() + 1,
            s => s as usize,
        };
        if !(1..=3).contains(&slot) {
            return Err(Violation {
                field: "slot".into(),
                description: "Megvii takes up to three reference images (image_ref1..3)".into(),
            });
        }
        let face = FaceImage {
            data: image.data,
            format: image.format,
            role: ImageRole::Reference,
            controls: image.controls,
        };
        if slot <= inputs.references.len() {
            inputs.references[slot - 1] = face;
        } else if slot == inputs.references.len() + 1 {
            inputs.references.push(face);
        } else {
            return Err(Violation {
                field: "slot".into(),
                description: format!(
                    "fill the slots in order: the next free one is {}",
                    inputs.references.len() + 1
                ),
            });
        }
        Ok(())
    }

    fn reset_for_retry(&self, inputs: &mut Inputs) {
        *inputs = Inputs::default();
    }

    fn billing_item(&self, _session: &Session) -> String {
        BILLING_ITEM.into()
    }

    fn required_inputs(&self, session: &Session) -> Vec<RequiredInput> {
        let Ok(o) = Self::settings(session) else {
            return Vec::new();
        };
        match o.comparison {
            MegviiComparison::Authority
                if o.idcard_mode == 0 && session.inputs.identity.is_none() =>
            {
                vec![RequiredInput::Identity]
            }
            MegviiComparison::ReferenceImage if session.inputs.references.is_empty() => {
                vec![RequiredInput::ReferenceImage]
            }
            _ => Vec::new(),
        }
    }

    async fn proceed(&self, session: &Session) -> Result<Progress, VendorError> {
        let fields = self.token_fields(session)?;
        let url = format!("{}/faceid/lite/get_token", self.base);
        let request = if session.inputs.references.is_empty() {
            self.http.post(&url).form(&fields)
        } else {
            let boundary = format!("facegate{}", uuid::Uuid::new_v4().simple());
            let body = multipart(&boundary, &fields, &session.inputs.references);
            self.http
                .post(&url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
        };
        let started = now_ms();
        tracing::info!(vendor = "megvii", endpoint = "get_token", session_id = %session.id, "vendor call");
        let reply = send(Vendor::Megvii, "get_token", request, self.max_response)
            .await
            .map_err(unbilled)?;
        let reply =
            wire::parse_get_token(reply.status.as_u16(), &reply.body).map_err(|e| protocol(&e))?;
        let token = match reply {
            Reply::Ok(t) => t,
            Reply::Err { http_status, error } => return Err(self.error_of(http_status, &error)),
        };
        if token.token.is_empty()
            || token.token.len() > 128
            || !token.token.bytes().all(|b| b.is_ascii_alphanumeric())
            || token.biz_id.is_empty()
        {
            return Err(protocol("get_token answered an undocumented token"));
        }
        let expires_at_ms = token.expired_time.saturating_mul(1000);
        let flow_over = expires_at_ms.min(started.saturating_add(self.max_flow_ms));
        let sep = if self.page_url.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(Progress::AwaitUser {
            user_url: format!(
                "{}{sep}token={}",
                self.page_url,
                form_urlencoded::byte_serialize(token.token.as_bytes()).collect::<String>()
            ),
            expires_at_ms,
            decide_by_ms: flow_over.saturating_add(self.result_wait_ms),
            vendor_ref: token.biz_id.clone(),
            outcome: Outcome {
                vendor_detail: Some(VendorDetail::Megvii(Box::new(MegviiDetail {
                    biz_id: token.biz_id,
                    biz_no: session.id.clone(),
                    status: LiteStatus::NotStarted.as_str().into(),
                    ..Default::default()
                }))),
                ..session.outcome.clone()
            },
        })
    }

    fn result_query(&self) -> ResultQuery {
        ResultQuery::OnceAtEnd
    }

    fn verify_callback(
        &self,
        data: &[u8],
        sign: &[u8],
    ) -> Result<VerifiedCallback, CallbackRejection> {
        if data.is_empty() || sign.is_empty() {
            return Err(CallbackRejection::Malformed);
        }
        if !self.signature_ok(data, sign) {
            return Err(CallbackRejection::InvalidSignature);
        }
        let text = std::str::from_utf8(data).map_err(|_| CallbackRejection::Malformed)?;
        let r = wire::parse_callback_data(text).map_err(|_| CallbackRejection::Malformed)?;
        Ok(VerifiedCallback {
            session_id: r.biz_info.biz_no,
            vendor_ref: r.biz_info.biz_id,
        })
    }

    fn claimed_session_id(&self, data: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(data).ok()?;
        wire::parse_callback_data(text)
            .ok()
            .map(|r| r.biz_info.biz_no)
    }

    fn interpret_callback(
        &self,
        session: &Session,
        data: &[u8],
    ) -> Result<PollOutcome, CallbackRejection> {
        let text = std::str::from_utf8(data).map_err(|_| CallbackRejection::Malformed)?;
        let r = wire::parse_callback_data(text).map_err(|_| CallbackRejection::Malformed)?;
        Ok(self.interpret(session, &r, true))
    }

    async fn poll(&self, session: &Session, final_check: bool) -> Result<PollOutcome, VendorError> {
        let Some(biz_id) = session.vendor_ref.clone() else {
            return Err(protocol("the session has no biz_id"));
        };
        tracing::info!(vendor = "megvii", endpoint = "get_result", session_id = %session.id, "vendor call");
        let request = self
            .http
            .get(format!("{}/faceid/lite/get_result", self.base))
            .query(&[
                ("api_key", self.api_key.expose()),
                ("api_secret", self.api_secret.expose()),
                ("biz_id", biz_id.as_str()),
                ("return_image", "0"),
            ]);
        let reply = send(Vendor::Megvii, "get_result", request, self.max_response)
            .await
            .map_err(unbilled)?;
        let reply = match wire::parse_get_result(reply.status.as_u16(), &reply.body)
            .map_err(|e| protocol(&e))?
        {
            Reply::Ok(r) => r,
            Reply::Err { http_status, error } => return Err(self.error_of(http_status, &error)),
        };
        if reply.result.biz_info.biz_id != biz_id {
            return Err(protocol("get_result answered for another biz_id"));
        }
        let outcome = self.interpret(session, &reply.result, false);
        Ok(match outcome {
            // The one query found the flow unfinished when it had to be over: nothing more will be learned.
            PollOutcome::Pending { outcome, .. } if final_check => PollOutcome::Expired { outcome },
            other => other,
        })
    }
}

fn protocol(message: &str) -> VendorError {
    protocol_error(Vendor::Megvii, message, false)
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A multipart/form-data body with text fields and image_ref1..3 files.
fn multipart(boundary: &str, fields: &[(&'static str, String)], images: &[FaceImage]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    for (i, image) in images.iter().enumerate() {
        let ext = match image.format {
            crate::domain::validation::ImageFormat::Jpeg => "jpg",
            crate::domain::validation::ImageFormat::Png => "png",
        };
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image_ref{n}\"; filename=\"ref{n}.{ext}\"\r\n\
                 Content-Type: {mime}\r\n\r\n",
                n = i + 1,
                mime = image.format.mime(),
            )
            .as_bytes(),
        );
        body.extend_from_slice(&image.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

fn thresholds_of(c: &Comparison) -> Vec<ScoreThreshold> {
    let mut out: Vec<ScoreThreshold> = c
        .thresholds
        .iter()
        .filter_map(|(far, t)| {
            far.trim().parse::<f64>().ok().map(|f| ScoreThreshold {
                false_accept_rate: f,
                threshold: *t,
            })
        })
        .collect();
    out.sort_by(|a, b| b.false_accept_rate.total_cmp(&a.false_accept_rate));
    out
}

fn genuineness_max(list: &[MegviiGenuineness]) -> f64 {
    list.iter().map(|g| g.confidence).fold(0.0, f64::max)
}

fn detail_of(r: &LiteResult, from_callback: bool, clean: &dyn Fn(&str) -> String) -> MegviiDetail {
    let mut d = MegviiDetail {
        biz_id: r.biz_info.biz_id.clone(),
        biz_no: r.biz_info.biz_no.clone(),
        biz_extra_data: r.biz_info.biz_extra_data.clone().unwrap_or_default(),
        status: r.status.as_str().into(),
        fail_reason: r.fail_reason.as_deref().map(clean).unwrap_or_default(),
        multifaces_tag: r
            .multifaces_tag
            .as_ref()
            .map(wire::StringOrNumber::as_text)
            .unwrap_or_default(),
        from_callback,
        ..Default::default()
    };
    if let Some(v) = &r.verify_result {
        d.verify_error_message = v.error_message.as_deref().map(clean).unwrap_or_default();
        d.verify_time_ms = v.verify_time.map(|t| t.saturating_mul(1000));
        for (source, c) in [
            ("faceid", &v.result_faceid),
            ("ref1", &v.result_ref1),
            ("ref2", &v.result_ref2),
            ("ref3", &v.result_ref3),
            ("idcard_photo", &v.result_idcard_photo),
            ("idcard_datasource", &v.result_idcard_datasource),
        ] {
            if let Some(c) = c {
                d.comparisons.push(MegviiComparisonScore {
                    source: source.into(),
                    confidence: c.confidence,
                    thresholds: thresholds_of(c),
                });
            }
        }
        d.id_exceptions = v.id_exceptions.clone().unwrap_or_default();
    }
    if let Some(l) = &r.liveness_result {
        d.liveness_result = l.result.clone();
        d.liveness_procedure = l.procedure_type.clone().unwrap_or_default();
        d.liveness_details = l.details.clone().unwrap_or_default();
        let g = l.face_genuineness.clone().unwrap_or_default();
        let mut checks: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (key, value) in &g {
            if let Some(check) = key.strip_suffix("_confidence") {
                checks.entry(check.to_owned()).or_default().0 = *value;
            } else if let Some(check) = key.strip_suffix("_threshold") {
                checks.entry(check.to_owned()).or_default().1 = *value;
            }
        }
        d.face_genuineness = checks
            .into_iter()
            .map(|(check, (confidence, threshold))| MegviiGenuineness {
                check,
                confidence,
                threshold,
            })
            .collect();
    }
    for w in r.will_result.iter().flatten() {
        d.will_results.push((
            w.result.clone(),
            w.will_error_message
                .as_deref()
                .map(clean)
                .unwrap_or_default(),
        ));
    }
    if let Some(i) = &r.idcard_info {
        d.idcard_mode = i
            .idcard_mode
            .as_ref()
            .map(wire::StringOrNumber::as_text)
            .unwrap_or_default();
        if let Some(front) = &i.front_side {
            d.idcard_front_upload_times = front.upload_times.unwrap_or(0);
            d.idcard_front_legality = front
                .ocr_result
                .as_ref()
                .and_then(|o| o.legality.clone())
                .unwrap_or_default();
        }
        if let Some(back) = &i.back_side {
            d.idcard_back_upload_times = back.upload_times.unwrap_or(0);
            d.idcard_back_legality = back
                .ocr_result
                .as_ref()
                .and_then(|o| o.legality.clone())
                .unwrap_or_default();
        }
    }
    d
}

/// The identity Megvii read or the user confirmed (idcard_info), unmasked.
fn identity_of(r: &LiteResult) -> Option<IdentityDocument> {
    let i = r.idcard_info.as_ref()?;
    let front = i.front_side.as_ref().and_then(|s| s.ocr_result.as_ref());
    let back = i.back_side.as_ref().and_then(|s| s.ocr_result.as_ref());
    let number = i
        .idcard_number
        .clone()
        .or_else(|| front.and_then(|f| f.id_card_number.clone()))
        .unwrap_or_default();
    let birth = front
        .and_then(|f| f.birthday.as_ref())
        .map(|b| {
            format!(
                "{}-{:0>2}-{:0>2}",
                b.year.as_text(),
                b.month.as_text(),
                b.day.as_text()
            )
        })
        .unwrap_or_default();
    let doc = IdentityDocument {
        name: i
            .idcard_name
            .clone()
            .or_else(|| front.and_then(|f| f.name.clone()))
            .unwrap_or_default(),
        id_type: IdType::of_number(&number),
        id_number: number,
        address: front.and_then(|f| f.address.clone()).unwrap_or_default(),
        birth_date: birth,
        gender: front.and_then(|f| f.gender.clone()).unwrap_or_default(),
        ethnicity: front.and_then(|f| f.race.clone()).unwrap_or_default(),
        issued_by: i
            .idcard_issued_by
            .clone()
            .or_else(|| back.and_then(|b| b.issued_by.clone()))
            .unwrap_or_default(),
        valid_period: i
            .idcard_valid_date
            .clone()
            .or_else(|| back.and_then(|b| b.valid_date.clone()))
            .unwrap_or_default(),
    };
    (!doc.name.is_empty() || !doc.id_number.is_empty()).then_some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn multipart_bodies_carry_fields_and_files() {
        let img = FaceImage {
            data: vec![0xff, 0xd8, 0xff, 1],
            format: crate::domain::validation::ImageFormat::Jpeg,
            role: ImageRole::Reference,
            controls: Default::default(),
        };
        let body = multipart("B", &[("biz_no", "ses_1".into())], &[img]);
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(
            "--B\r\nContent-Disposition: form-data; name=\"biz_no\"\r\n\r\nses_1\r\n"
        ));
        assert!(
            text.contains("name=\"image_ref1\"; filename=\"ref1.jpg\"\r\nContent-Type: image/jpeg")
        );
        assert!(text.ends_with("--B--\r\n"));
    }

    #[test]
    fn thresholds_are_read_by_far() {
        let c = Comparison {
            confidence: 70.0,
            thresholds: [("1e-3".to_owned(), 62.0), ("1e-4".to_owned(), 69.0)].into(),
        };
        let t = thresholds_of(&c);
        assert_eq!(t[0].false_accept_rate, 1e-3);
        assert_eq!(t[1].threshold, 69.0);
    }
}
