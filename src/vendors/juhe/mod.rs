//! Juhe verifyface adapter: `POST <base>/verifyface/verify` (plain) and `/verifyface/verifyEncry` (AES), form
//! encoded, synchronous answer. The call is billed when `error_code` is 0, so it is made once per intent.

pub mod crypto;
pub mod wire;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;

use self::crypto::JuheKey;
use crate::config::{JuheConfig, Secret};
use crate::domain::adapter::{Progress, VendorAdapter};
use crate::domain::error::sanitize_vendor_text;
use crate::domain::far::{threshold_for, JUHE_THRESHOLDS};
use crate::domain::service::{ImageInput, RequestedOptions};
use crate::domain::validation::Violation;
use crate::domain::{
    now_ms, BillingRecord, FaceImage, FaceMatch, Failure, FailureCode, Identity, ImageRole, Inputs,
    JuheDetail, Outcome, RequiredInput, ScoreThreshold, Session, Vendor, VendorDetail, VendorError,
    VendorErrorKind, VendorOptions,
};

/// Path of the plain endpoint below the base URL.
pub const VERIFY_PATH: &str = "/verifyface/verify";
/// Path of the encrypted endpoint below the base URL.
pub const VERIFY_ENCRY_PATH: &str = "/verifyface/verifyEncry";

/// The Juhe adapter.
pub struct JuheAdapter {
    http: reqwest::Client,
    base_url: String,
    key: Secret,
    aes: Option<JuheKey>,
    max_response_bytes: usize,
    max_image_bytes: usize,
}

impl JuheAdapter {
    /// Builds the adapter from its configuration (`key` must be set).
    pub fn new(cfg: &JuheConfig) -> Result<Self, String> {
        if cfg.key.is_empty() {
            return Err("juhe.key is empty".into());
        }
        Ok(Self {
            http: super::http::client(
                Duration::from_secs(cfg.connect_timeout_secs),
                Duration::from_secs(cfg.timeout_secs),
            )?,
            base_url: cfg.base_url.trim_end_matches('/').to_owned(),
            key: cfg.key.clone(),
            aes: (!cfg.openid.is_empty()).then(|| JuheKey::from_openid(cfg.openid.expose())),
            max_response_bytes: cfg.max_response_bytes,
            max_image_bytes: cfg.max_image_bytes,
        })
    }

    /// Whether verifyEncry can be used (an openid is configured).
    pub fn supports_encryption(&self) -> bool {
        self.aes.is_some()
    }

    /// Builds the form body of a call. Encrypted fields are AES-128-ECB + base64, then form-encoded exactly once.
    fn form_body(
        &self,
        encrypted: bool,
        id_number: &str,
        name: &str,
        image_b64: &str,
    ) -> Result<String, VendorError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("key", self.key.expose());
        match (encrypted, &self.aes) {
            (false, _) => {
                form.append_pair("idcard", id_number);
                form.append_pair("realname", name);
                form.append_pair("image", image_b64);
            }
            (true, Some(aes)) => {
                form.append_pair("idcard", &aes.encrypt_field(id_number));
                form.append_pair("realname", &aes.encrypt_field(name));
                form.append_pair("image", &aes.encrypt_field(image_b64));
            }
            (true, None) => {
                return Err(VendorError {
                    kind: VendorErrorKind::AccountError,
                    vendor: Vendor::Juhe,
                    vendor_code: String::new(),
                    vendor_message: "juhe.openid is not configured; verifyEncry is unavailable"
                        .into(),
                    possibly_billed: false,
                    retry_after: None,
                })
            }
        }
        Ok(form.finish())
    }
}

fn error(kind: VendorErrorKind, code: i64, reason: &str, retry_secs: Option<u64>) -> VendorError {
    VendorError {
        kind,
        vendor: Vendor::Juhe,
        vendor_code: code.to_string(),
        vendor_message: sanitize_vendor_text(reason),
        possibly_billed: false,
        retry_after: retry_secs.map(Duration::from_secs),
    }
}

fn protocol(message: &str, possibly_billed: bool) -> VendorError {
    crate::vendors::http::protocol_error(Vendor::Juhe, message, possibly_billed)
}

/// Maps a non-zero `error_code` (juhe-verifyface-api.txt, 错误码参照).
pub fn map_error_code(code: i64, reason: &str) -> VendorError {
    use VendorErrorKind as K;
    match code {
        226401 => error(K::DataSourceTimeout, code, reason, Some(5)),
        226402 => error(K::NoRecord, code, reason, None),
        226403 => error(K::RejectedInput, code, reason, None),
        226404 => error(K::Unavailable, code, reason, Some(5)),
        10001 | 10002 | 10003 | 10004 | 10005 | 10007 | 10008 | 10009 | 10021 => {
            error(K::AccountError, code, reason, None)
        }
        10011 => error(K::RateLimited, code, reason, Some(10)),
        10012 | 10013 => error(K::RateLimited, code, reason, Some(60)),
        10014 => error(K::Unavailable, code, reason, Some(10)),
        10020 => error(K::Unavailable, code, reason, Some(60)),
        _ => {
            let mut e = error(K::ProtocolError, code, reason, None);
            e.vendor_message = sanitize_vendor_text(&format!("undocumented error_code: {reason}"));
            e
        }
    }
}

/// Maps a successful (billed) reply to the neutral outcome at the session's target FAR.
pub fn map_result(
    envelope: wire::Envelope,
    encrypted: bool,
    target_far: f64,
    at_ms: i64,
) -> Result<Progress, VendorError> {
    map_result_for(envelope, encrypted, target_far, at_ms, None)
}

/// [`map_result`] for a session whose `identity` was sent: vendor text that echoes its name or ID number is
/// masked before it is kept.
pub fn map_result_for(
    envelope: wire::Envelope,
    encrypted: bool,
    target_far: f64,
    at_ms: i64,
    identity: Option<&Identity>,
) -> Result<Progress, VendorError> {
    let clean = |text: &str| match identity {
        Some(i) => sanitize_vendor_text(&i.mask_in(text)),
        None => sanitize_vendor_text(text),
    };
    let result = envelope
        .result
        .ok_or_else(|| protocol("error_code 0 without a result", true))?;
    let order_id = result.orderid.clone().unwrap_or_default();
    let detail = JuheDetail {
        res: i32::try_from(result.res).unwrap_or(-1),
        score: result
            .score
            .as_ref()
            .map(|s| s.as_text())
            .unwrap_or_default(),
        code: result
            .code
            .as_ref()
            .map(|c| clean(&c.as_text()))
            .unwrap_or_default(),
        desc: result.desc.as_deref().map(clean).unwrap_or_default(),
        message: result.message.as_deref().map(clean).unwrap_or_default(),
        order_id: order_id.clone(),
        encrypted,
    };
    let mut outcome = Outcome {
        face_match: None,
        liveness: None,
        identity_document: None,
        revealable_identity: None,
        revealable_until_ms: None,
        billing: vec![BillingRecord {
            vendor: Vendor::Juhe,
            item: if encrypted {
                "verifyface/verifyEncry"
            } else {
                "verifyface/verify"
            }
            .into(),
            billed: true,
            at_ms,
            vendor_reference: order_id,
        }],
        vendor_detail: Some(VendorDetail::Juhe(detail.clone())),
    };
    let fail = |code: FailureCode, vendor_code: &str, outcome: Outcome| Progress::Final {
        verified: false,
        failure: Some(Failure {
            code,
            vendor_code: vendor_code.to_owned(),
            vendor_message: if detail.desc.is_empty() {
                detail.message.clone()
            } else {
                detail.desc.clone()
            },
        }),
        outcome,
    };
    match result.res {
        1 => {
            let score: f64 = detail
                .score
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && (0.0..=100.0).contains(s))
                .ok_or_else(|| protocol("res=1 without a score between 0 and 100", true))?;
            let threshold = threshold_for(&JUHE_THRESHOLDS, target_far).ok_or_else(|| {
                protocol(
                    "no Juhe threshold for the session's false accept rate",
                    true,
                )
            })?;
            let passed = score >= threshold.threshold;
            outcome.face_match = Some(FaceMatch {
                score,
                threshold: threshold.threshold,
                threshold_false_accept_rate: threshold.false_accept_rate,
                thresholds: JUHE_THRESHOLDS.to_vec(),
                passed,
                source: "authority".into(),
            });
            if passed {
                Ok(Progress::Final {
                    verified: true,
                    failure: None,
                    outcome,
                })
            } else {
                Ok(fail(FailureCode::ScoreBelowThreshold, "res=1", outcome))
            }
        }
        // res 2 is the verdict (identity confirmed, faces not matched; billed); `code` only refines it. An
        // undocumented code or none is still that decided failure, never a reason to call (and pay) again.
        2 => match detail.code.as_str() {
            "3003" => Ok(fail(FailureCode::IdPhotoUnavailable, "3003", outcome)),
            "3004" => Ok(fail(FailureCode::NoFaceFound, "3004", outcome)),
            "3005" => Ok(fail(FailureCode::FaceMismatch, "3005", outcome)),
            "" => Ok(fail(FailureCode::FaceMismatch, "res=2", outcome)),
            other => {
                tracing::warn!(vendor = "juhe", code = %other, "res=2 with an undocumented code");
                Ok(fail(FailureCode::FaceMismatch, other, outcome))
            }
        },
        3 => Ok(fail(FailureCode::IdNameMismatch, "res=3", outcome)),
        _ => Err(protocol("undocumented res value", true)),
    }
}

/// Whether the session uses verifyEncry (only Juhe sessions reach this adapter).
fn encrypted(session: &Session) -> bool {
    matches!(session.options, VendorOptions::Juhe { encrypted: true })
}

#[async_trait]
impl VendorAdapter for JuheAdapter {
    fn vendor(&self) -> Vendor {
        Vendor::Juhe
    }

    fn published_thresholds(&self) -> &[ScoreThreshold] {
        &JUHE_THRESHOLDS
    }

    fn resolve_options(&self, requested: RequestedOptions) -> Result<VendorOptions, Violation> {
        let encrypted = match requested {
            RequestedOptions::Default | RequestedOptions::Juhe { encrypted: None } => {
                self.supports_encryption()
            }
            RequestedOptions::Juhe {
                encrypted: Some(false),
            } => false,
            RequestedOptions::Juhe {
                encrypted: Some(true),
            } if self.supports_encryption() => true,
            RequestedOptions::Juhe {
                encrypted: Some(true),
            } => {
                return Err(Violation {
                    field: "juhe.mode".into(),
                    description:
                        "JUHE_MODE_ENCRYPTED needs juhe.openid in facegate's configuration".into(),
                })
            }
            RequestedOptions::Baidu { .. } | RequestedOptions::Megvii(_) => {
                return Err(Violation {
                    field: "vendor_options".into(),
                    description: "the options must be those of the chosen vendor".into(),
                })
            }
        };
        Ok(VendorOptions::Juhe { encrypted })
    }

    fn max_image_bytes(&self) -> usize {
        self.max_image_bytes
    }

    fn accept_image(&self, inputs: &mut Inputs, image: ImageInput) -> Result<(), Violation> {
        match image.role.unwrap_or(ImageRole::Probe) {
            ImageRole::Probe => {}
            ImageRole::Reference => return Err(Violation {
                field: "role".into(),
                description:
                    "Juhe compares the probe face with the authority photo: send IMAGE_ROLE_PROBE"
                        .into(),
            }),
        }
        if image.slot > 1 {
            return Err(Violation {
                field: "slot".into(),
                description: "Juhe takes one image; slot must be 0 or 1".into(),
            });
        }
        // A new probe replaces an earlier one: the latest image is the caller's intent.
        inputs.probe = Some(FaceImage {
            data: image.data,
            format: image.format,
            role: ImageRole::Probe,
            controls: image.controls,
        });
        Ok(())
    }

    fn reset_for_retry(&self, inputs: &mut Inputs) {
        inputs.probe = None;
    }

    fn billing_item(&self, session: &Session) -> String {
        if encrypted(session) {
            "verifyface/verifyEncry"
        } else {
            "verifyface/verify"
        }
        .into()
    }

    fn required_inputs(&self, session: &Session) -> Vec<RequiredInput> {
        let mut out = Vec::new();
        if session.inputs.identity.is_none() {
            out.push(RequiredInput::Identity);
        }
        if session.inputs.probe.is_none() {
            out.push(RequiredInput::ProbeImage);
        }
        out
    }

    async fn proceed(&self, session: &Session) -> Result<Progress, VendorError> {
        let encrypted = encrypted(session);
        let (Some(identity), Some(probe)) = (&session.inputs.identity, &session.inputs.probe)
        else {
            return Err(protocol("inputs incomplete", false));
        };
        let image_b64 = base64::engine::general_purpose::STANDARD.encode(&probe.data);
        let body = self.form_body(encrypted, &identity.id_number, &identity.name, &image_b64)?;
        let path = if encrypted {
            VERIFY_ENCRY_PATH
        } else {
            VERIFY_PATH
        };
        let started = now_ms();
        tracing::info!(vendor = "juhe", endpoint = path, session_id = %session.id, "vendor call");
        let request = self
            .http
            .post(format!("{}{}", self.base_url, path))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body);
        let endpoint = path.trim_start_matches('/');
        let super::http::Reply { status, body } =
            super::http::send(Vendor::Juhe, endpoint, request, self.max_response_bytes).await?;
        tracing::info!(vendor = "juhe", endpoint = path, http_status = status.as_u16(),
            elapsed_ms = now_ms() - started, session_id = %session.id, "vendor reply");
        if status.as_u16() == 429 {
            return Err(error(
                VendorErrorKind::RateLimited,
                429,
                "HTTP 429",
                Some(10),
            ));
        }
        if !status.is_success() {
            let mut e = protocol(&format!("HTTP status {}", status.as_u16()), true);
            e.kind = VendorErrorKind::Unavailable;
            return Err(e);
        }
        let envelope = wire::parse(&body).map_err(|m| protocol(&m, true))?;
        if envelope.error_code != 0 {
            return Err(map_error_code(
                envelope.error_code,
                &identity.mask_in(envelope.reason.as_deref().unwrap_or("")),
            ));
        }
        map_result_for(
            envelope,
            encrypted,
            session.target_false_accept_rate,
            started,
            Some(identity),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(json: &str) -> wire::Envelope {
        wire::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn maps_res_and_codes() {
        let pass = env(
            r#"{"reason":"成功","result":{"res":1,"score":"96","message":"m","orderid":"JH1"},"error_code":0}"#,
        );
        match map_result(pass, false, 1e-3, 1).unwrap() {
            Progress::Final {
                verified, outcome, ..
            } => {
                assert!(verified);
                let fm = outcome.face_match.unwrap();
                assert_eq!(
                    (fm.score, fm.threshold, fm.threshold_false_accept_rate),
                    (96.0, 60.0, 1e-3)
                );
                assert_eq!(outcome.billing.len(), 1);
                assert!(outcome.billing[0].billed);
            }
            other => panic!("expected a final outcome, got {other:?}"),
        }
        let mid =
            r#"{"reason":"成功","result":{"res":1,"score":"65","orderid":"JH1"},"error_code":0}"#;
        let Progress::Final { verified, .. } = map_result(env(mid), false, 1e-3, 1).unwrap() else {
            panic!("expected a final outcome")
        };
        assert!(verified);
        let Progress::Final {
            verified, failure, ..
        } = map_result(env(mid), false, 1e-4, 1).unwrap()
        else {
            panic!("expected a final outcome")
        };
        assert!(!verified);
        assert_eq!(failure.unwrap().code, FailureCode::ScoreBelowThreshold);
        for (code, want) in [
            ("3003", FailureCode::IdPhotoUnavailable),
            ("3004", FailureCode::NoFaceFound),
            ("3005", FailureCode::FaceMismatch),
        ] {
            let j = format!(
                r#"{{"reason":"成功","result":{{"res":2,"code":"{code}","desc":"d","message":"m","orderid":"JH"}},"error_code":0}}"#
            );
            let Progress::Final { failure, .. } = map_result(env(&j), false, 1e-3, 1).unwrap()
            else {
                panic!("expected a final outcome")
            };
            assert_eq!(failure.unwrap().code, want);
        }
        let mismatch =
            r#"{"reason":"成功","result":{"res":3,"message":"m","orderid":"JH"},"error_code":0}"#;
        let Progress::Final { failure, .. } = map_result(env(mismatch), false, 1e-3, 1).unwrap()
        else {
            panic!("expected a final outcome")
        };
        assert_eq!(failure.unwrap().code, FailureCode::IdNameMismatch);
    }

    #[test]
    fn unknown_values_are_errors_not_success() {
        for j in [
            r#"{"result":{"res":4,"orderid":"JH"},"error_code":0}"#,
            r#"{"result":{"res":1,"score":"abc"},"error_code":0}"#,
            r#"{"result":{"res":1,"score":"101"},"error_code":0}"#,
            r#"{"result":{"res":1},"error_code":0}"#,
            r#"{"result":null,"error_code":0}"#,
        ] {
            let e = map_result(env(j), false, 1e-3, 1).unwrap_err();
            assert_eq!(e.kind, VendorErrorKind::ProtocolError);
            assert!(e.possibly_billed, "error_code 0 is billed");
        }
    }

    #[test]
    fn res_2_is_a_decided_failure_whatever_its_code() {
        for (j, code, message) in [
            (
                r#"{"reason":"成功","result":{"res":2,"code":"3999","desc":"其他原因","message":"m","orderid":"JH"},"error_code":0}"#,
                "3999",
                "其他原因",
            ),
            (
                r#"{"reason":"成功","result":{"res":2,"code":3006,"orderid":"JH"},"error_code":0}"#,
                "3006",
                "",
            ),
            (
                r#"{"reason":"成功","result":{"res":2,"message":"身份证核查成功，但人脸比对失败","orderid":"JH"},"error_code":0}"#,
                "res=2",
                "身份证核查成功，但人脸比对失败",
            ),
            (
                r#"{"reason":"成功","result":{"res":"2","code":"","orderid":"JH"},"error_code":"0"}"#,
                "res=2",
                "",
            ),
        ] {
            let Progress::Final {
                verified,
                failure,
                outcome,
            } = map_result(env(j), false, 1e-3, 1).unwrap()
            else {
                panic!("expected a final outcome for {j}")
            };
            assert!(!verified);
            let f = failure.unwrap();
            assert_eq!(f.code, FailureCode::FaceMismatch, "{j}");
            assert_eq!(f.vendor_code, code, "{j}");
            assert_eq!(f.vendor_message, message, "{j}");
            assert!(outcome.billing[0].billed, "res 2 is billed");
        }
    }

    #[test]
    fn string_res_and_error_code_decide_like_numbers() {
        let j = r#"{"reason":"成功","result":{"res":"1","score":"96","orderid":"JH1"},"error_code":"0"}"#;
        let Progress::Final { verified, .. } = map_result(env(j), false, 1e-3, 1).unwrap() else {
            panic!("expected a final outcome")
        };
        assert!(verified);
        let j = r#"{"reason":"成功","result":{"res":"3","orderid":"JH1"},"error_code":"0"}"#;
        let Progress::Final { failure, .. } = map_result(env(j), false, 1e-3, 1).unwrap() else {
            panic!("expected a final outcome")
        };
        assert_eq!(failure.unwrap().code, FailureCode::IdNameMismatch);
        assert!(wire::parse(br#"{"result":{"res":"1 "},"error_code":"0"}"#).is_err());
    }

    #[test]
    fn vendor_text_echoing_the_identity_is_masked() {
        let identity = Identity {
            name: "张三".into(),
            id_number: "11010519491231002X".into(),
            id_type: crate::domain::validation::IdType::MainlandResidentIdCard,
        };
        let j = r#"{"reason":"成功","result":{"res":2,"code":"3005","desc":"张三的照片比对失败","message":"张三 11010519491231002x","orderid":"JH"},"error_code":0}"#;
        let Progress::Final {
            failure, outcome, ..
        } = map_result_for(env(j), false, 1e-3, 1, Some(&identity)).unwrap()
        else {
            panic!("expected a final outcome")
        };
        let f = failure.unwrap();
        assert_eq!(f.vendor_message, "张*的照片比对失败");
        let Some(VendorDetail::Juhe(d)) = outcome.vendor_detail else {
            panic!("expected Juhe detail")
        };
        assert_eq!(d.message, "张* 110***********002X");
        assert!(!format!("{d:?}{f:?}").contains("张三"));
    }

    #[test]
    fn maps_error_codes() {
        use VendorErrorKind as K;
        for (code, kind, retry) in [
            (226401, K::DataSourceTimeout, true),
            (226402, K::NoRecord, false),
            (226403, K::RejectedInput, false),
            (226404, K::Unavailable, true),
            (10001, K::AccountError, false),
            (10004, K::AccountError, false),
            (10011, K::RateLimited, true),
            (10012, K::RateLimited, true),
            (10013, K::RateLimited, true),
            (10014, K::Unavailable, true),
            (10020, K::Unavailable, true),
            (10021, K::AccountError, false),
            (99999, K::ProtocolError, false),
        ] {
            let e = map_error_code(code, "reason 11010519491231002X");
            assert_eq!(e.kind, kind, "{code}");
            assert_eq!(e.retry_after.is_some(), retry, "{code}");
            assert!(!e.possibly_billed);
            assert_eq!(e.vendor_code, code.to_string());
            assert!(!e.vendor_message.contains("11010519491231002X"));
        }
    }
}
