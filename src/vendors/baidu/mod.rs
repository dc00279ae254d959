//! Baidu H5 faceprint (H5人脸实名认证方案) adapter, following baidu-faceprint-h5-api.txt and FACTS.md §1.
//!
//! Flow: `verifyToken/generate` with the plan's `plan_id` (a verify_token, valid 2 hours), then `idcard/submit`
//! when the plan verifies a specified user and `uploadMatchImage` when it compares with an uploaded face; the end
//! user then opens the H5 page (`<page_url>?token=..&successUrl=..&failedUrl=..`). Baidu does not call back, so
//! the status engine polls `result/getall` (every attempt, billing) and, once an attempt passed, reads
//! `result/detail` (scores, confirmed identity) and `result/stat`. `result/simple` (the captured face) and
//! `result/media/query` (video, images) are read only when a caller asks for them.
//!
//! None of these calls is billed: the charge is for the verification the user runs on Baidu's page, so the calls
//! before the page may be repeated after a transient failure (they are, a few times). The return URLs given to
//! Baidu point at facegate's relay (`/v1/return/<session>`), which wakes the poller and sends the browser on.
//!
//! The access_token travels in the URL query, so request URLs are never logged.

pub mod token;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::json;

use self::token::TokenCache;
use self::wire::{BaiduError, Reply as ApiReply};
use crate::config::{BaiduConfig, BaiduPlanConfig};
use crate::domain::adapter::{PollOutcome, Progress, ResultQuery, VendorAdapter};
use crate::domain::error::sanitize_vendor_text;
use crate::domain::far::threshold_for;
use crate::domain::service::{ImageInput, RequestedOptions};
use crate::domain::validation::{image_dimensions, IdType, Violation};
use crate::domain::{
    now_ms, BaiduApiStat, BaiduAttempt, BaiduDetail, BillingRecord, ExtrasRequest, FaceImage,
    FaceMatch, Failure, FailureCode, IdentityDocument, ImageRole, Inputs, Liveness, MediaLink,
    Outcome, RequiredInput, ResultExtras, ScoreThreshold, Session, Vendor, VendorDetail,
    VendorError, VendorErrorKind, VendorOptions,
};
use crate::vendors::budget::Budget;
use crate::vendors::http::{protocol_error, send, unbilled, Reply};

/// How long a verify_token can be used for a verification (baidu-faceprint-h5-api.txt §1.1).
pub const VERIFY_TOKEN_LIFE_MS: i64 = 2 * 3600 * 1000;
/// Largest base64 text uploadMatchImage takes (10 MB).
pub const MAX_IMAGE_BASE64_BYTES: usize = 10 * 1024 * 1024;
/// Largest image file whose base64 fits [`MAX_IMAGE_BASE64_BYTES`].
pub const MAX_IMAGE_BYTES: usize = MAX_IMAGE_BASE64_BYTES / 4 * 3;
/// Path of the faceprint API under the base URL.
const API_PATH: &str = "/rpc/2.0/brain/solution/faceprint";
/// Largest captured face image downloaded for GetResult.
const MAX_FACE_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Tries of an unbilled call that failed transiently.
const UNBILLED_TRIES: u32 = 3;

/// A plan as configured.
#[derive(Debug, Clone)]
struct Plan {
    plan_id: String,
    needs_identity: bool,
    needs_reference: bool,
    fail_ends_url: bool,
    success_url: String,
    failure_url: String,
}

impl From<&BaiduPlanConfig> for Plan {
    fn from(p: &BaiduPlanConfig) -> Self {
        Self {
            plan_id: p.plan_id.trim().to_owned(),
            needs_identity: p.needs_identity,
            needs_reference: p.needs_reference,
            fail_ends_url: p.fail_ends_url,
            success_url: p.success_url.clone(),
            failure_url: p.failure_url.clone(),
        }
    }
}

/// The Baidu adapter.
pub struct BaiduAdapter {
    http: reqwest::Client,
    api: String,
    page_url: String,
    tokens: TokenCache,
    plans: BTreeMap<String, Plan>,
    default_plan: Option<String>,
    thresholds: Vec<ScoreThreshold>,
    relay_base: String,
    max_response: usize,
    budget: Arc<Budget>,
    media_hosts: Vec<String>,
}

/// An answer of a faceprint endpoint after the access_token was dealt with.
enum Answer<T> {
    Ok(T, String),
    Err(BaiduError),
}

impl BaiduAdapter {
    /// Builds the adapter. `public_base_url` is facegate's HTTP address as browsers reach it (return URLs).
    pub fn new(cfg: &BaiduConfig, public_base_url: &str) -> Result<Self, String> {
        let http = crate::vendors::http::client(
            Duration::from_secs(cfg.connect_timeout_secs),
            Duration::from_secs(cfg.timeout_secs),
        )?;
        let base = cfg.base_url.trim_end_matches('/').to_owned();
        let tokens = TokenCache::new(
            http.clone(),
            &base,
            cfg.api_key.clone(),
            cfg.secret_key.clone(),
            Arc::new(now_ms),
            Duration::from_secs(cfg.token_refresh_margin_secs),
        );
        let plans: BTreeMap<String, Plan> = cfg
            .plans
            .iter()
            .map(|(name, p)| (name.clone(), Plan::from(p)))
            .collect();
        if plans.is_empty() {
            return Err("baidu.plans declares no plan".into());
        }
        let default_plan = if !cfg.default_plan.is_empty() {
            Some(cfg.default_plan.clone())
        } else if plans.len() == 1 {
            plans.keys().next().cloned()
        } else {
            None
        };
        let mut media_hosts = cfg.media_hosts.clone();
        if let Some(host) = host_of(&base) {
            media_hosts.push(host);
        }
        Ok(Self {
            http,
            api: format!("{base}{API_PATH}"),
            page_url: cfg.page_url.clone(),
            tokens,
            plans,
            default_plan,
            thresholds: cfg
                .score_thresholds
                .iter()
                .map(|t| ScoreThreshold {
                    false_accept_rate: t.false_accept_rate,
                    threshold: t.threshold,
                })
                .collect(),
            relay_base: format!("{}/v1/return", public_base_url.trim_end_matches('/')),
            max_response: cfg.max_response_bytes,
            budget: Arc::new(Budget::new(cfg.poll_qps)),
            media_hosts,
        })
    }

    fn plan(&self, session: &Session) -> Result<(&str, &Plan), VendorError> {
        let name = match &session.options {
            VendorOptions::Baidu { plan, .. } => plan.as_str(),
            _ => return Err(protocol("not a Baidu session")),
        };
        self.plans
            .get_key_value(name)
            .map(|(k, p)| (k.as_str(), p))
            .ok_or_else(|| VendorError {
                kind: VendorErrorKind::AccountError,
                vendor: Vendor::Baidu,
                vendor_code: String::new(),
                vendor_message: "the session's plan is no longer configured".into(),
                possibly_billed: false,
                retry_after: None,
            })
    }

    /// Posts a JSON body to a faceprint endpoint. A token error answer makes the cache fetch a new token, and the
    /// call is made once more with it.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &serde_json::Value,
        session_id: &str,
    ) -> Result<Answer<T>, VendorError> {
        let bytes = serde_json::to_vec(body).map_err(|_| protocol("cannot encode the request"))?;
        let mut refreshed = false;
        loop {
            let token = self.tokens.get().await?;
            tracing::info!(vendor = "baidu", endpoint = path, session_id, "vendor call");
            let request = self
                .http
                .post(format!("{}/{path}", self.api))
                .query(&[("access_token", token.expose())])
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone());
            let Reply { status, body } = send(Vendor::Baidu, path, request, self.max_response)
                .await
                .map_err(unbilled)?;
            let reply = match wire::parse_reply::<T>(&body) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(vendor = "baidu", endpoint = path, http_status = status.as_u16(),
                        error = %e, "unreadable vendor reply");
                    return Err(if status.is_server_error() {
                        VendorError {
                            kind: VendorErrorKind::Unavailable,
                            vendor: Vendor::Baidu,
                            vendor_code: status.as_u16().to_string(),
                            vendor_message: String::new(),
                            possibly_billed: false,
                            retry_after: Some(Duration::from_secs(2)),
                        }
                    } else {
                        protocol(&e)
                    });
                }
            };
            match reply {
                ApiReply::Ok { result, log_id } => return Ok(Answer::Ok(result, log_id)),
                ApiReply::Err(e) if e.is_access_token_error() && !refreshed => {
                    tracing::info!(
                        vendor = "baidu",
                        code = e.code,
                        "access_token refused; fetching a new one"
                    );
                    self.tokens.invalidate(&token).await;
                    refreshed = true;
                }
                ApiReply::Err(e) => return Ok(Answer::Err(e)),
            }
        }
    }

    /// Runs an unbilled call, trying again after transient failures.
    async fn call_unbilled<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &serde_json::Value,
        session_id: &str,
    ) -> Result<(T, String), VendorError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let err = match self.call::<T>(path, body, session_id).await {
                Ok(Answer::Ok(result, log_id)) => return Ok((result, log_id)),
                Ok(Answer::Err(e)) => error_of(&e, path),
                Err(e) => e,
            };
            // A timed-out call has used the whole vendor timeout (`baidu.timeout_secs`): trying again would run past
            // it, so only failures that came back quickly are tried again.
            let transient = matches!(
                err.kind,
                VendorErrorKind::RateLimited
                    | VendorErrorKind::Unreachable
                    | VendorErrorKind::Unavailable
            );
            if !transient || tries >= UNBILLED_TRIES {
                return Err(err);
            }
            let wait = err
                .retry_after
                .unwrap_or(Duration::from_millis(300))
                .min(Duration::from_secs(2))
                * tries;
            tokio::time::sleep(wait).await;
        }
    }

    fn relay_url(&self, session_id: &str, result: &str) -> String {
        format!("{}/{session_id}?result={result}", self.relay_base)
    }

    fn user_url(&self, verify_token: &str, session_id: &str) -> String {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let sep = if self.page_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}token={}&successUrl={}&failedUrl={}",
            self.page_url,
            enc(verify_token),
            enc(&self.relay_url(session_id, "success")),
            enc(&self.relay_url(session_id, "failed")),
        )
    }

    fn media_allowed(&self, url: &str) -> bool {
        (url.starts_with("https://") || url.starts_with("http://"))
            && host_of(url).is_some_and(|h| self.media_hosts.iter().any(|m| m == &h))
    }

    /// Builds the final outcome of a passed verification from `result/getall` alone (the score, the plan's
    /// threshold, billing and the confirmed identity are all in it): one query decides. `result/detail` (liveness
    /// and spoofing scores, OCR fields) and `result/stat` are read later, only when GetResult asks
    /// ([`VendorAdapter::complete_outcome`]).
    fn decide_passed(
        &self,
        session: &Session,
        plan: &Plan,
        mut detail: BaiduDetail,
        passed: &BaiduAttempt,
        wire_passed: Option<&wire::Attempt>,
        billing: Vec<BillingRecord>,
    ) -> PollOutcome {
        detail.is_demote = passed.is_demote;
        detail.details_read = false;
        let score = passed.score;
        let liveness_score = passed.liveness_score.unwrap_or(0.0);
        let spoofing = passed.spoofing_score.unwrap_or(0.0);
        let identity = wire_passed.and_then(attempt_identity).map(|d| d.masked());
        let target = threshold_for(&self.thresholds, session.target_false_accept_rate);
        let plan_threshold = passed.threshold;
        let (threshold, threshold_far) = match (target, plan_threshold) {
            (Some(t), Some(p)) if t.threshold > p => (t.threshold, t.false_accept_rate),
            (Some(t), None) => (t.threshold, t.false_accept_rate),
            (_, Some(p)) => (
                p,
                far_of(&self.thresholds, p).unwrap_or(session.target_false_accept_rate),
            ),
            (None, None) => (0.0, session.target_false_accept_rate),
        };
        let source = if plan.needs_reference {
            "reference_image"
        } else {
            "authority"
        };
        let face_match = score.map(|score| FaceMatch {
            score,
            threshold,
            threshold_false_accept_rate: threshold_far,
            thresholds: self.thresholds.clone(),
            passed: score >= threshold,
            source: source.into(),
        });
        let below = face_match.as_ref().is_some_and(|f| !f.passed);
        let outcome = Outcome {
            face_match,
            liveness: Some(Liveness {
                passed: true,
                liveness_score,
                spoofing_score: spoofing,
                procedure: String::new(),
            }),
            identity_document: identity,
            revealable_identity: None,
            revealable_until_ms: None,
            billing,
            vendor_detail: Some(VendorDetail::Baidu(detail)),
        };
        if below {
            PollOutcome::Final {
                verified: false,
                failure: Some(Failure {
                    code: FailureCode::ScoreBelowThreshold,
                    vendor_code: "0".into(),
                    vendor_message: String::new(),
                }),
                outcome,
            }
        } else {
            PollOutcome::Final {
                verified: true,
                failure: None,
                outcome,
            }
        }
    }

    /// The verify_token is gone (expired, used up, past retention) with nothing new learned: decide from what the
    /// earlier polls saw.
    fn decide_gone(&self, session: &Session) -> PollOutcome {
        let last_failure = session
            .outcome
            .vendor_detail
            .as_ref()
            .and_then(|d| match d {
                VendorDetail::Baidu(b) => {
                    b.attempts.iter().rev().find(|a| !a.passed).map(failure_of)
                }
                _ => None,
            });
        match last_failure {
            Some(failure) => PollOutcome::Final {
                verified: false,
                failure: Some(failure),
                outcome: session.outcome.clone(),
            },
            None => PollOutcome::Expired {
                outcome: session.outcome.clone(),
            },
        }
    }
}

#[async_trait]
impl VendorAdapter for BaiduAdapter {
    fn vendor(&self) -> Vendor {
        Vendor::Baidu
    }

    fn published_thresholds(&self) -> &[ScoreThreshold] {
        &self.thresholds
    }

    fn resolve_options(&self, requested: RequestedOptions) -> Result<VendorOptions, Violation> {
        let name = match requested {
            RequestedOptions::Baidu { plan } if !plan.is_empty() => plan,
            RequestedOptions::Baidu { .. } | RequestedOptions::Default => {
                self.default_plan.clone().ok_or_else(|| Violation {
                    field: "baidu.plan".into(),
                    description: format!(
                        "required: several plans are configured ({})",
                        self.plans.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                })?
            }
            RequestedOptions::Juhe { .. } | RequestedOptions::Megvii(_) => {
                return Err(Violation {
                    field: "vendor_options".into(),
                    description: "the options must be those of the chosen vendor".into(),
                })
            }
        };
        let plan = self.plans.get(&name).ok_or_else(|| Violation {
            field: "baidu.plan".into(),
            description: format!(
                "no such plan; configured: {}",
                self.plans.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        Ok(VendorOptions::Baidu {
            plan: name,
            plan_id: plan.plan_id.clone(),
        })
    }

    fn max_image_bytes(&self) -> usize {
        MAX_IMAGE_BYTES
    }

    fn accept_image(&self, inputs: &mut Inputs, image: ImageInput) -> Result<(), Violation> {
        if image.role == Some(ImageRole::Probe) {
            return Err(Violation {
                field: "role".into(),
                description: "Baidu captures the live face on its page; send the reference face \
                              (IMAGE_ROLE_REFERENCE)"
                    .into(),
            });
        }
        if image.slot > 1 {
            return Err(Violation {
                field: "slot".into(),
                description: "Baidu takes one reference image; slot must be 0 or 1".into(),
            });
        }
        if let Some((w, h)) = image_dimensions(&image.data) {
            let fits = (w <= 1920 && h <= 1080) || (w <= 1080 && h <= 1920);
            if !fits {
                return Err(Violation {
                    field: "data".into(),
                    description: format!("Baidu takes images under 1920x1080; this one is {w}x{h}"),
                });
            }
        }
        inputs.references = vec![FaceImage {
            data: image.data,
            format: image.format,
            role: ImageRole::Reference,
            controls: image.controls,
        }];
        Ok(())
    }

    fn reset_for_retry(&self, inputs: &mut Inputs) {
        // Nothing before the page is billed, but a new attempt still needs the caller's new intent: the inputs the
        // plan takes are sent again.
        *inputs = Inputs::default();
    }

    fn billing_item(&self, session: &Session) -> String {
        match self.plan(session) {
            Ok((_, p)) if p.needs_reference => "match".into(),
            _ => "verify".into(),
        }
    }

    fn required_inputs(&self, session: &Session) -> Vec<RequiredInput> {
        let Ok((_, plan)) = self.plan(session) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if plan.needs_identity && session.inputs.identity.is_none() {
            out.push(RequiredInput::Identity);
        }
        if plan.needs_reference && session.inputs.references.is_empty() {
            out.push(RequiredInput::ReferenceImage);
        }
        out
    }

    async fn proceed(&self, session: &Session) -> Result<Progress, VendorError> {
        let (plan_name, plan) = self.plan(session)?;
        let started = now_ms();
        let (generated, _) = self
            .call_unbilled::<wire::GenerateResult>(
                "verifyToken/generate",
                &json!({
                    "plan_id": plan.plan_id,
                    "redirect_config": {
                        "success_url": self.relay_url(&session.id, "success"),
                        "failed_url": self.relay_url(&session.id, "failed"),
                    }
                }),
                &session.id,
            )
            .await?;
        let verify_token = generated.verify_token;
        if verify_token.is_empty()
            || verify_token.len() > 128
            || !verify_token.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(protocol("verify_token is not the documented form"));
        }
        if plan.needs_identity {
            let identity = session
                .inputs
                .identity
                .as_ref()
                .ok_or_else(|| protocol("inputs incomplete"))?;
            let certificate_type = match identity.id_type {
                IdType::MainlandResidentIdCard => 0,
                IdType::HmtResidencePermit => 4,
            };
            self.call_unbilled::<serde_json::Value>(
                "idcard/submit",
                &json!({
                    "verify_token": verify_token,
                    "id_name": identity.name,
                    "id_no": identity.id_number,
                    "certificate_type": certificate_type,
                }),
                &session.id,
            )
            .await?;
        }
        if plan.needs_reference {
            let image = session
                .inputs
                .references
                .first()
                .ok_or_else(|| protocol("inputs incomplete"))?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&image.data);
            if b64.len() > MAX_IMAGE_BASE64_BYTES {
                return Err(VendorError {
                    kind: VendorErrorKind::RejectedInput,
                    vendor: Vendor::Baidu,
                    vendor_code: String::new(),
                    vendor_message: "the image is over 10 MB in base64".into(),
                    possibly_billed: false,
                    retry_after: None,
                });
            }
            self.call_unbilled::<serde_json::Value>(
                "uploadMatchImage",
                &json!({
                    "verify_token": verify_token,
                    "image": b64,
                    "quality_control": image.controls.quality.as_str(),
                    "liveness_control": image.controls.liveness.as_str(),
                }),
                &session.id,
            )
            .await?;
        }
        Ok(Progress::AwaitUser {
            user_url: self.user_url(&verify_token, &session.id),
            expires_at_ms: started.saturating_add(VERIFY_TOKEN_LIFE_MS),
            decide_by_ms: started.saturating_add(VERIFY_TOKEN_LIFE_MS),
            outcome: Outcome {
                vendor_detail: Some(VendorDetail::Baidu(BaiduDetail {
                    verify_token: verify_token.clone(),
                    plan: plan_name.to_owned(),
                    plan_id: plan.plan_id.clone(),
                    plan_needs_identity: plan.needs_identity,
                    plan_needs_reference: plan.needs_reference,
                    ..Default::default()
                })),
                ..session.outcome.clone()
            },
            vendor_ref: verify_token,
        })
    }

    async fn poll(&self, session: &Session, final_check: bool) -> Result<PollOutcome, VendorError> {
        let Some(token) = session.vendor_ref.clone() else {
            return Err(protocol("the session has no verify_token"));
        };
        let (_, plan) = self.plan(session)?;
        self.budget.acquire().await;
        let all = match self
            .call::<wire::GetAllResult>(
                "result/getall",
                &json!({ "verify_token": token }),
                &session.id,
            )
            .await?
        {
            Answer::Ok(all, _) => all,
            Answer::Err(e) if e.is_verify_token_gone() => return Ok(self.decide_gone(session)),
            Answer::Err(e) => return Err(error_of(&e, "result/getall")),
        };
        let mut attempts = Vec::with_capacity(all.verify_result.len());
        for a in &all.verify_result {
            attempts.push(attempt_of(a)?);
        }
        attempts.sort_by_key(|a| a.order);
        let billing: Vec<BillingRecord> = attempts
            .iter()
            .map(|a| BillingRecord {
                vendor: Vendor::Baidu,
                item: if a.charge_type.is_empty() {
                    self.billing_item(session)
                } else {
                    a.charge_type.clone()
                },
                billed: a.charged,
                at_ms: a.charge_time_ms.or(a.verify_time_ms).unwrap_or(0),
                vendor_reference: a.verify_log_id.clone(),
            })
            .collect();
        let mut detail = match &session.outcome.vendor_detail {
            Some(VendorDetail::Baidu(d)) => d.clone(),
            _ => BaiduDetail {
                verify_token: token.clone(),
                ..Default::default()
            },
        };
        detail.verify_count = all.verify_count;
        detail.ocr_charge_count = all.ocr_charge_count.unwrap_or(0);
        detail.match_charge_count = all.match_charge_count.unwrap_or(0);
        detail.verify_charge_count = all.verify_charge_count.unwrap_or(0);
        detail.attempts = attempts.clone();

        if let Some(passed) = attempts.iter().find(|a| a.passed) {
            let wire_passed = all.verify_result.iter().find(|a| a.is_verify_passed);
            return Ok(self.decide_passed(session, plan, detail, passed, wire_passed, billing));
        }
        let outcome = Outcome {
            billing,
            vendor_detail: Some(VendorDetail::Baidu(detail)),
            ..session.outcome.clone()
        };
        let last_failure = attempts.iter().rev().find(|a| !a.passed).map(failure_of);
        match last_failure {
            Some(failure) if plan.fail_ends_url || final_check => Ok(PollOutcome::Final {
                verified: false,
                failure: Some(failure),
                outcome,
            }),
            None if final_check => Ok(PollOutcome::Expired { outcome }),
            attempt_failed => Ok(PollOutcome::Pending {
                outcome,
                attempt_failed,
                processing: false,
            }),
        }
    }

    fn result_query(&self) -> ResultQuery {
        ResultQuery::Poll
    }

    fn default_return_urls(&self, session: &Session) -> (String, String) {
        match self.plan(session) {
            Ok((_, p)) => (p.success_url.clone(), p.failure_url.clone()),
            Err(_) => (String::new(), String::new()),
        }
    }

    fn outcome_incomplete(&self, session: &Session) -> bool {
        // Only a verification that passed at Baidu has details, and they are read once (sessions decided before
        // the details were read lazily have their result/stat rows already).
        session.state.is_final()
            && session.vendor_ref.is_some()
            && matches!(&session.outcome.vendor_detail, Some(VendorDetail::Baidu(d))
                if !d.details_read && d.api_stats.is_empty() && d.attempts.iter().any(|a| a.passed))
    }

    async fn complete_outcome(&self, session: &Session) -> Result<Option<Outcome>, VendorError> {
        let Some(VendorDetail::Baidu(detail)) = &session.outcome.vendor_detail else {
            return Ok(None);
        };
        if !self.outcome_incomplete(session) {
            return Ok(None);
        }
        let Some(token) = session.vendor_ref.clone() else {
            return Ok(None);
        };
        let body = json!({ "verify_token": token });
        self.budget.acquire().await;
        let result = match self
            .call::<wire::DetailResult>("result/detail", &body, &session.id)
            .await?
        {
            Answer::Ok(r, _) => r,
            Answer::Err(e) => return Err(error_of(&e, "result/detail")),
        };
        let mut detail = detail.clone();
        self.budget.acquire().await;
        match self
            .call::<wire::StatResult>("result/stat", &body, &session.id)
            .await
        {
            Ok(Answer::Ok(stat, _)) => detail.api_stats = api_stats(&stat),
            Ok(Answer::Err(e)) => {
                tracing::warn!(
                    vendor = "baidu",
                    code = e.code,
                    "result/stat unavailable; kept without it"
                )
            }
            Err(e) => {
                tracing::warn!(
                    vendor = "baidu",
                    reason = e.kind.reason(),
                    "result/stat unavailable; kept without it"
                )
            }
        }
        detail.details_read = true;
        if let Some(demoted) = result.is_demote {
            detail.is_demote = demoted;
        }
        // The decision stands as getall made it; detail adds the scores getall leaves at 0 and the OCR fields.
        let mut outcome = session.outcome.clone();
        if let (Some(liveness), Some(v)) =
            (outcome.liveness.as_mut(), result.verify_result.as_ref())
        {
            if let Some(score) = v
                .liveness_score
                .as_ref()
                .and_then(wire::StringOrNumber::as_f64)
            {
                liveness.liveness_score = score;
            }
            if let Some(score) = v.spoofing.as_ref().and_then(wire::StringOrNumber::as_f64) {
                liveness.spoofing_score = score;
            }
        }
        if result.idcard_ocr_result.is_some() || outcome.identity_document.is_none() {
            if let Some(doc) = identity_of(&result) {
                outcome.identity_document = Some(doc.masked());
            }
        }
        outcome.vendor_detail = Some(VendorDetail::Baidu(detail));
        Ok(Some(outcome))
    }

    async fn fetch_extras(
        &self,
        session: &Session,
        request: ExtrasRequest,
    ) -> Result<ResultExtras, VendorError> {
        let mut extras = ResultExtras::default();
        let Some(token) = session.vendor_ref.clone() else {
            return Ok(extras);
        };
        // Baidu keeps the identity, the captured face and the media only of a verification that passed (the
        // result endpoints answer the failure's code otherwise).
        if session.state != crate::domain::State::Verified {
            return Ok(extras);
        }
        let body = json!({ "verify_token": token });
        if request.reveal_personal_data {
            self.budget.acquire().await;
            match self
                .call::<wire::DetailResult>("result/detail", &body, &session.id)
                .await?
            {
                Answer::Ok(d, _) => extras.identity_document = identity_of(&d),
                Answer::Err(e) => return Err(error_of(&e, "result/detail")),
            }
        }
        if request.face_image {
            self.budget.acquire().await;
            let url = match self
                .call::<wire::SimpleResult>("result/simple", &body, &session.id)
                .await?
            {
                Answer::Ok(s, _) => s.image,
                Answer::Err(e) => return Err(error_of(&e, "result/simple")),
            };
            if !self.media_allowed(&url) {
                return Err(protocol(
                    "result/simple named an image host outside baidu.media_hosts",
                ));
            }
            let reply = send(
                Vendor::Baidu,
                "face_image",
                self.http.get(&url),
                MAX_FACE_IMAGE_BYTES,
            )
            .await
            .map_err(unbilled)?;
            if !reply.status.is_success() {
                return Err(protocol("the captured face image could not be read"));
            }
            let data = reply.body;
            if crate::domain::validation::validate_image("face_image", &data, MAX_FACE_IMAGE_BYTES)
                .is_err()
            {
                return Err(protocol("the captured face image is not a JPEG or PNG"));
            }
            extras.face_image = Some(data);
        }
        if request.media {
            self.budget.acquire().await;
            match self
                .call::<wire::MediaResult>("result/media/query", &body, &session.id)
                .await?
            {
                Answer::Ok(m, _) => {
                    for (kind, list) in [
                        ("video", &m.process_video),
                        ("video", &m.video),
                        ("image", &m.images),
                    ] {
                        for url in list.iter().flatten() {
                            extras.media.push(MediaLink {
                                kind: kind.into(),
                                url: url.clone(),
                            });
                        }
                    }
                    extras.media_note = m
                        .ext_info
                        .as_deref()
                        .map(sanitize_vendor_text)
                        .unwrap_or_default();
                }
                Answer::Err(e) => return Err(error_of(&e, "result/media/query")),
            }
        }
        Ok(extras)
    }
}

fn protocol(message: &str) -> VendorError {
    protocol_error(Vendor::Baidu, message, false)
}

/// Maps an error answer to a vendor error.
pub fn error_of(e: &BaiduError, path: &str) -> VendorError {
    let (kind, retry) = if e.is_rate_limit() {
        (VendorErrorKind::RateLimited, Some(Duration::from_secs(1)))
    } else if e.is_access_token_error()
        || matches!(e.code, 6 | 283400) && path == "verifyToken/generate"
    {
        (VendorErrorKind::AccountError, None)
    } else if e.is_verify_token_gone() {
        (VendorErrorKind::ResultExpired, None)
    } else if matches!(path, "idcard/submit" | "uploadMatchImage") && e.code != 283400 {
        (VendorErrorKind::RejectedInput, None)
    } else {
        (VendorErrorKind::Unavailable, Some(Duration::from_secs(2)))
    };
    VendorError {
        kind,
        vendor: Vendor::Baidu,
        vendor_code: e.code.to_string(),
        vendor_message: sanitize_vendor_text(&e.message),
        possibly_billed: false,
        retry_after: retry,
    }
}

/// The neutral failure of a failed attempt. Codes are matched first, then the message; an unknown reason is a
/// VENDOR_ERROR failure (the attempt did fail: `is_verify_passed` is false).
pub fn failure_of(a: &BaiduAttempt) -> Failure {
    let code = match a.code.as_str() {
        "222351" | "222350" | "222354" | "222356" => FailureCode::IdNameMismatch,
        "222355" | "222360" => FailureCode::IdNotFound,
        "223120" | "223121" | "223122" | "223123" => FailureCode::LivenessFailed,
        "283455" | "222207" => FailureCode::FaceMismatch,
        "283456" => FailureCode::UserAbandoned,
        "222202" | "222203" => FailureCode::NoFaceFound,
        _ if a.message.contains("不匹配") || a.message.contains("不一致") => {
            FailureCode::IdNameMismatch
        }
        _ if a.message.contains("活体") => FailureCode::LivenessFailed,
        _ if a.message.contains("比对") || a.message.contains("相似度") => {
            FailureCode::FaceMismatch
        }
        _ if a.message.contains("放弃") || a.message.contains("取消") => {
            FailureCode::UserAbandoned
        }
        _ => FailureCode::VendorError,
    };
    Failure {
        code,
        vendor_code: a.code.clone(),
        vendor_message: a.message.clone(),
    }
}

/// Reads one attempt of `result/getall`; its times must be Beijing times.
pub fn attempt_of(a: &wire::Attempt) -> Result<BaiduAttempt, VendorError> {
    let time = |t: &Option<String>, field: &str| -> Result<Option<i64>, VendorError> {
        match t.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => parse_beijing_time(text)
                .map(Some)
                .ok_or_else(|| protocol(&format!("{field} is not a time"))),
        }
    };
    let num = |v: &Option<wire::StringOrNumber>| -> Option<f64> {
        v.as_ref().and_then(wire::StringOrNumber::as_f64)
    };
    let d = a.verify_detail.as_ref();
    Ok(BaiduAttempt {
        order: a.order,
        passed: a.is_verify_passed,
        code: a.code.as_text(),
        message: sanitize_vendor_text(a.message.as_deref().unwrap_or_default()),
        verify_time_ms: time(&a.verify_time, "verify_time")?,
        charged: a.is_charged.unwrap_or(false),
        charge_type: a.charge_type.clone().unwrap_or_default(),
        charge_time_ms: time(&a.charge_time, "charge_time")?,
        ocr_charged: a.is_ocr_charge.unwrap_or(false),
        ocr_charge_time_ms: time(&a.ocr_charge_time, "ocr_charge_time")?,
        ocr_count: a.ocr_count.unwrap_or(0),
        score: d.and_then(|d| num(&d.score)),
        threshold: d.and_then(|d| num(&d.threshold)),
        liveness_score: d.and_then(|d| num(&d.liveness_score)),
        spoofing_score: d.and_then(|d| num(&d.spoofing_score)),
        risk_level: d
            .and_then(|d| d.risk_level.as_ref())
            .map(wire::StringOrNumber::as_text)
            .unwrap_or_default(),
        risk_tag: d
            .and_then(|d| d.risk_tag.clone())
            .map(|t| sanitize_vendor_text(&t))
            .unwrap_or_default(),
        is_demote: d.and_then(|d| d.is_demote).unwrap_or(false),
        verify_log_id: d
            .and_then(|d| d.verify_log_id.as_ref())
            .map(wire::StringOrNumber::as_text)
            .unwrap_or_default(),
    })
}

/// The identity of a passed verification: the OCR'd card where the plan uses OCR, else what the user confirmed.
pub fn identity_of(d: &wire::DetailResult) -> Option<IdentityDocument> {
    if let Some(o) = &d.idcard_ocr_result {
        return Some(ocr_identity(o));
    }
    d.idcard_confirm
        .as_ref()
        .map(|c| confirmed_identity(c.name.as_deref(), c.idcard_number.as_deref()))
}

/// The identity of a passed attempt of `result/getall` (OCR fields beside `idcard_confirm` or inside it).
fn attempt_identity(a: &wire::Attempt) -> Option<IdentityDocument> {
    let confirm = a.idcard_confirm.as_ref();
    let ocr = a
        .idcard_ocr_result
        .as_ref()
        .or_else(|| confirm.and_then(|c| c.idcard_ocr_result.as_ref()))
        .filter(|o| o.name.is_some() && (o.id_card_number.is_some() || o.idcard_number.is_some()));
    if let Some(o) = ocr {
        return Some(ocr_identity(o));
    }
    confirm.map(|c| confirmed_identity(c.name.as_deref(), c.idcard_number.as_deref()))
}

fn ocr_identity(o: &wire::OcrResult) -> IdentityDocument {
    let number = o
        .id_card_number
        .clone()
        .or_else(|| o.idcard_number.clone())
        .unwrap_or_default();
    let valid = match (&o.issue_time, &o.expire_time) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => String::new(),
    };
    IdentityDocument {
        name: o.name.clone().unwrap_or_default(),
        id_type: IdType::of_number(&number),
        id_number: number,
        address: o.address.clone().unwrap_or_default(),
        birth_date: o.birthday.clone().unwrap_or_default(),
        gender: o.gender.clone().unwrap_or_default(),
        ethnicity: o.nation.clone().unwrap_or_default(),
        issued_by: o.issue_authority.clone().unwrap_or_default(),
        valid_period: valid,
    }
}

fn confirmed_identity(name: Option<&str>, number: Option<&str>) -> IdentityDocument {
    let number = number.unwrap_or_default().to_owned();
    IdentityDocument {
        name: name.unwrap_or_default().to_owned(),
        id_type: IdType::of_number(&number),
        id_number: number,
        ..Default::default()
    }
}

/// The counters of `result/stat`.
pub fn api_stats(stat: &wire::StatResult) -> Vec<BaiduApiStat> {
    let mut out = Vec::new();
    for (api, rows) in stat {
        for row in rows {
            out.push(BaiduApiStat {
                api: sanitize_vendor_text(api),
                error_code: row.error_code.as_text(),
                count: row.count.as_f64().map(|c| c as i64).unwrap_or(0),
            });
        }
    }
    out
}

/// The FAR a threshold stands for, when it is one of the published ones.
fn far_of(published: &[ScoreThreshold], threshold: f64) -> Option<f64> {
    published
        .iter()
        .find(|t| (t.threshold - threshold).abs() < 1e-9)
        .map(|t| t.false_accept_rate)
}

fn host_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(authority.to_ascii_lowercase())
}

/// Parses Baidu's `YYYY-M-D HH:MM:SS` (Beijing time, UTC+8; zero padding optional) into unix ms.
pub fn parse_beijing_time(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() {
        return None;
    }
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if t.next().is_some() {
        return None;
    }
    let date = crate::domain::validation::Date {
        year: u16::try_from(y).ok()?,
        month: u8::try_from(m).ok()?,
        day: u8::try_from(day).ok()?,
    };
    if !date.is_valid()
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..61).contains(&ss)
    {
        return None;
    }
    let days = date.unix_days();
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) - 8 * 3600) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_times_parse_with_or_without_padding() {
        // 2023-06-20 18:00:00 +08:00 = 2023-06-20 10:00:00 UTC = 1687255200.
        assert_eq!(
            parse_beijing_time("2023-6-20 18:00:00"),
            Some(1_687_255_200_000)
        );
        assert_eq!(
            parse_beijing_time("2023-06-20 18:00:00"),
            Some(1_687_255_200_000)
        );
        assert_eq!(parse_beijing_time("2023-02-30 18:00:00"), None);
        assert_eq!(parse_beijing_time("2023-06-20T18:00:00"), None);
        assert_eq!(parse_beijing_time("2023-06-20 25:00:00"), None);
    }

    fn attempt(code: &str, message: &str) -> BaiduAttempt {
        BaiduAttempt {
            code: code.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn failed_attempts_map_to_neutral_codes() {
        for (code, message, want) in [
            ("222351", "", FailureCode::IdNameMismatch),
            ("223120", "", FailureCode::LivenessFailed),
            ("283455", "", FailureCode::FaceMismatch),
            ("283456", "", FailureCode::UserAbandoned),
            ("1", "身份证姓名不匹配", FailureCode::IdNameMismatch),
        ] {
            assert_eq!(failure_of(&attempt(code, message)).code, want, "{code}");
        }
        let unknown = failure_of(&attempt("999999", "?"));
        assert_eq!(unknown.code, FailureCode::VendorError);
        assert_eq!(unknown.vendor_code, "999999");
    }

    #[test]
    fn hosts_are_read_without_userinfo_tricks() {
        assert_eq!(
            host_of("https://brain.baidu.com/solution/x?y").as_deref(),
            Some("brain.baidu.com")
        );
        assert_eq!(
            host_of("http://127.0.0.1:8080/a").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(host_of("https://brain.baidu.com@evil.example/"), None);
        assert_eq!(host_of("file:///etc/passwd"), None);
    }
}
