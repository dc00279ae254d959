//! In-process simulator of Megvii Face++ FaceID Lite (H5 人脸核身).
//!
//! Follows megvii-faceid-lite-callbacks.txt and FACTS.md §2 / §5 "Megvii", speaking the wire types of
//! [`crate::vendors::megvii::wire`]. It is mounted under [`MOUNT`]; every route below is relative to that prefix:
//! - `POST /faceid/lite/get_token`, `application/x-www-form-urlencoded` or `multipart/form-data` (image_ref1..3 are
//!   file parts, so they can only come by multipart). 200 `{request_id, time_used, token, biz_id, expired_time,
//!   biz_no}`: a 32-hex single-use token living 1 h on the [`SimClock`], `biz_id` = `"<unix>,<uuid>"`.
//! - `GET /faceid/lite/do?token=..` — the sandbox H5 page (`megvii_page.html`): NOT_STARTED -> PROCESSING, one
//!   button per [`PageOutcome`]; an unknown, expired (1 h) or finished token gets an error page (`id="error"`).
//! - `POST /faceid/lite/do` (form `token`, `outcome`) — ends the flow as [`MegviiSimulator::complete`] does, sends
//!   the notify in the background, then answers the browser: with `action_http_method=GET` a 303 to `return_url` with
//!   `biz_id` appended (doc §1.2: `?biz_id=` or `&biz_id=`, before any `#fragment`); otherwise (POST, the default) a
//!   page whose form `id="return"` auto-submits `data` + `sign` to `return_url`.
//! - `GET /faceid/lite/get_result?api_key&api_secret&biz_id[&return_image=0..6][&return_verify_time=0|1]`.
//! - Any other path: 404 `API_NOT_FOUND`.
//!
//! Errors are `{"error_message": "..", "request_id": "<unix>,<uuid>", "time_used": N}` with the HTTP status:
//! 403 `AUTHENTICATION_ERROR` (key/secret), 403 `CONCURRENCY_LIMIT_EXCEEDED` (injected), 400
//! `MISSING_ARGUMENTS: <key>` / `BAD_ARGUMENTS: <key>`, 400 `IMAGE_ERROR_UNSUPPORTED_FORMAT: image_refN`, 400
//! `RESULT_NOT_FOUND`, 404 `API_NOT_FOUND`.
//!
//! The notify is a form POST of `data` (the [`LiteResult`] JSON) and `sign` = lowercase hex `sha1(api_secret +
//! data)` to `notify_url`, 5 s timeout, no retry; a 2xx answer counts as `notify_sent`, anything else (transport
//! error, other status) as `notify_failed`. A [`CallbackFault`] set with [`MegviiSimulator::set_fault`] changes the
//! notify of the next finished flow; the browser's return always carries the genuine `data` and `sign`.
//!
//! Choices the vendor documents leave open (all INFERRED):
//! - get_token check order: injected concurrency limit, body, `api_key`/`api_secret` (missing -> MISSING_ARGUMENTS,
//!   wrong -> 403), then the arguments in the order of FACTS §2.1. Only the first problem is reported.
//! - An unsupported Content-Type answers 400 `BAD_ARGUMENTS: Content-Type`, a malformed multipart body 400
//!   `BAD_ARGUMENTS: multipart`, a body over 16 MiB 413 `REQUEST_ENTITY_TOO_LARGE`.
//! - A repeated field uses its first occurrence; empty values count as absent; image_refN only counts as a file part
//!   (a multipart part with a `filename`), a text field of that name is ignored; a text part that is not UTF-8 is
//!   400 `BAD_ARGUMENTS: <name>`. A part that is not JPEG/PNG is 400
//!   `IMAGE_ERROR_UNSUPPORTED_FORMAT: image_refN`.
//! - `idcard_name`/`idcard_number` are validated whenever given (number: 18 characters, GB 11643 check character,
//!   `x` accepted) and required with comparison_type 1 + idcard_mode 0. URLs must be http(s). With
//!   `enforce_notify_ports`, the notify_url port (explicit, else 443/80 by scheme) must be 443, 5000, 16003, 8883
//!   or 8028.
//! - Results: `verify_time` is in every callback (as in the document's example) but in get_result only with
//!   `return_verify_time=1`. Pass/face mismatch compare with confidence 85.0/30.0 (`result_faceid` for
//!   comparison_type 1 with `id_exceptions`, else `result_ref1..3` for the uploaded references); liveness failure is
//!   `FAILED` with liveness `FAIL` and no verify_result; name mismatch / no such number are `OK` with liveness `PASS`
//!   and `verify_result.error_message` only; cancel, timeout and WebRTC-unsupported interrupt the flow (no
//!   idcard_info, no verify_result; timeout reports liveness `TIMEOUT`). idcard_info: idcard_mode 1 (front) and 2
//!   (front + back) carry OCR of the synthetic identity `沙箱用户` / `110101190001010014`; modes 3 and 4 (typed)
//!   carry name and number only; mode 0 and comparison_type 0 none.
//! - get_result: answers 400 `RESULT_NOT_FOUND` for an unknown biz_id, and 1 day after the flow finished (a flow
//!   that never finished: 1 day after get_token; until then it reports NOT_STARTED/PROCESSING, also after its token
//!   expired). Every answered call for a biz_id counts, whatever the status; the 4th and later answer 400
//!   `BAD_ARGUMENTS: biz_id`. `images` only with status OK: return_image 1 image_best, 2 ID front (modes 1, 2),
//!   3 ID back (mode 2), 4 all of these; 5 and 6 (selfie shots) give none in the sandbox.
//! - Faults: [`CallbackFault::Tampered`] changes `data` to status OK with every confidence 99.9 after signing;
//!   [`CallbackFault::Forged`] signs with a different secret; [`CallbackFault::Reordered`] sends a validly signed
//!   PROCESSING `data` (status + biz_info) after the final one.
//!
//! Nothing here logs request data (names, ID numbers, images, credentials).

use super::web::{esc, fill_template, html_response, json_response, query_param};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::domain::validation::gb11643_check_char;
use crate::sandbox::baidu::SimClock;
use crate::vendors::megvii::wire::{
    self, BackOcr, BizInfo, Comparison, ErrorReply, FrontOcr, GetResultReply, GetTokenReply,
    IdcardInfo, Images, LiteResult, LiteStatus, LivenessResult, OcrBirthday, Side, StringOrNumber,
    VerifyResult, WillResult,
};

/// Path prefix the simulator is mounted under.
pub const MOUNT: &str = "/sandbox/megvii";

/// Ports Megvii accepts in notify_url (megvii-faceid-lite-callbacks.txt §1).
pub const NOTIFY_PORTS: [u16; 5] = [443, 5000, 16003, 8883, 8028];

const TOKEN_TTL_MS: i64 = 3_600_000;
const RESULT_RETENTION_MS: i64 = 86_400_000;
const MAX_GET_RESULT_CALLS: u32 = 3;
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

const BODY_LIMIT: usize = 16 * 1024 * 1024;
const MAX_BIZ_NO: usize = 128;
const MAX_WEB_TITLE: usize = 32;
const MAX_BIZ_EXTRA_DATA: usize = 4096;
const MAX_NAME_CHARS: usize = 64;
const MAX_MULTIPART_PARTS: usize = 64;
const MAX_PART_HEADER: usize = 8 * 1024;

const PASS_CONFIDENCE: f64 = 85.0;
const MISMATCH_CONFIDENCE: f64 = 30.0;
const TAMPERED_CONFIDENCE: f64 = 99.9;
/// Thresholds by false accept rate reported with every comparison.
const THRESHOLDS: [(&str, f64); 4] = [
    ("1e-3", 62.169),
    ("1e-4", 69.315),
    ("1e-5", 74.399),
    ("1e-6", 78.038),
];

/// Synthetic identity of the OCR'd / typed ID card (born 1900-01-01, nobody's real number).
const SANDBOX_NAME: &str = "沙箱用户";
const SANDBOX_ID_NUMBER: &str = "110101190001010014";
const SANDBOX_ADDRESS: &str = "沙箱省沙箱市沙箱区测试路1号";
const SANDBOX_ISSUED_BY: &str = "沙箱市公安局沙箱分局";
const SANDBOX_VALID_DATE: &str = "2020.01.01-2040.01.01";

const PAGE_TITLE: &str = "facegate sandbox — Megvii FaceID Lite";
const PAGE_TEMPLATE: &str = include_str!("page.html");
const JSON_CONTENT_TYPE: &str = "application/json";
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";
const RETURN_PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'";

/// A 1x1 baseline-JPEG-shaped placeholder (SOI, JFIF, SOF0 1x1, EOI): synthetic, not a real photo.
const SYNTHETIC_JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11,
    0x00, 0xFF, 0xD9,
];

// ---------------------------------------------------------------------------------------------------------------
// Public configuration and types
// ---------------------------------------------------------------------------------------------------------------

/// Simulator configuration: one Megvii account.
#[derive(Clone)]
pub struct MegviiSimConfig {
    /// API Key.
    pub api_key: String,
    /// API Secret (also signs callbacks).
    pub api_secret: String,
    /// Reject notify_url ports outside [`NOTIFY_PORTS`] with 400 `BAD_ARGUMENTS: notify_url`, as Megvii does. The
    /// sandbox sets false (its receiver listens on an arbitrary local port).
    pub enforce_notify_ports: bool,
}

impl fmt::Debug for MegviiSimConfig {
    /// Hides the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MegviiSimConfig")
            .field("api_key", &"***")
            .field("api_secret", &"***")
            .field("enforce_notify_ports", &self.enforce_notify_ports)
            .finish()
    }
}

/// What the simulated user does on the H5 page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOutcome {
    /// Liveness passes, the face matches (status OK, confidence 85.0).
    Pass,
    /// Liveness passes, the face does not match (status OK, confidence 30.0).
    FaceMismatch,
    /// Liveness fails (status FAILED, liveness FAIL).
    LivenessFailed,
    /// The authority says name and number do not match (`ID_NUMBER_NAME_NOT_MATCH`).
    IdNameMismatch,
    /// The authority does not know the number (`NO_SUCH_ID_NUMBER`).
    NoSuchIdNumber,
    /// The user cancels (status CANCELLED).
    Cancel,
    /// The user runs out of time (status TIMEOUT).
    Timeout,
    /// The browser lacks WebRTC (status WEBRTC_UNSUPPORTED).
    WebrtcUnsupported,
}

impl PageOutcome {
    /// Every outcome, in page order.
    pub const ALL: [PageOutcome; 8] = [
        PageOutcome::Pass,
        PageOutcome::FaceMismatch,
        PageOutcome::LivenessFailed,
        PageOutcome::IdNameMismatch,
        PageOutcome::NoSuchIdNumber,
        PageOutcome::Cancel,
        PageOutcome::Timeout,
        PageOutcome::WebrtcUnsupported,
    ];

    /// The form value and button id.
    pub fn as_str(&self) -> &'static str {
        match self {
            PageOutcome::Pass => "pass",
            PageOutcome::FaceMismatch => "face_mismatch",
            PageOutcome::LivenessFailed => "liveness_failed",
            PageOutcome::IdNameMismatch => "id_name_mismatch",
            PageOutcome::NoSuchIdNumber => "no_such_id_number",
            PageOutcome::Cancel => "cancel",
            PageOutcome::Timeout => "timeout",
            PageOutcome::WebrtcUnsupported => "webrtc_unsupported",
        }
    }

    /// Parses a form value (see [`PageOutcome::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the user stopped before liveness and comparison finished.
    fn interrupted(self) -> bool {
        matches!(
            self,
            PageOutcome::Cancel | PageOutcome::Timeout | PageOutcome::WebrtcUnsupported
        )
    }
}

impl FromStr for PageOutcome {
    type Err = String;

    /// Parses a form value (see [`PageOutcome::as_str`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("unknown outcome {s:?}"))
    }
}

impl fmt::Display for PageOutcome {
    /// Writes the form value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A misbehaviour of the server notify, for the next finished flow only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallbackFault {
    /// One correct notify.
    #[default]
    None,
    /// The notify is sent twice.
    Duplicate,
    /// The notify is sent after this delay (real time).
    Late(Duration),
    /// The notify is signed with a wrong secret.
    Forged,
    /// `data` is changed after signing.
    Tampered,
    /// No notify at all.
    Never,
    /// A stale PROCESSING notify (validly signed) follows the final one.
    Reordered,
}

/// Request and notify counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MegviiSimStats {
    /// get_token calls (any outcome).
    pub get_token: u64,
    /// get_result calls (any outcome).
    pub get_result: u64,
    /// `GET /faceid/lite/do` renders (any outcome).
    pub page_views: u64,
    /// Notifies answered with 2xx.
    pub notify_sent: u64,
    /// Notifies that failed (transport error or non-2xx answer).
    pub notify_failed: u64,
}

/// Where the browser goes after the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedFlow {
    /// `"POST"` (form to return_url) or `"GET"` (redirect).
    pub return_method: String,
    /// POST: return_url as given; GET: return_url with `biz_id` appended (before a `#fragment`).
    pub return_url: String,
    /// POST: `data` and `sign`; GET: empty.
    pub form: Vec<(String, String)>,
}

// ---------------------------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------------------------

/// The get_token arguments a flow needs later.
#[derive(Debug, Clone)]
struct Params {
    return_url: String,
    notify_url: String,
    comparison_type: u8,
    idcard_mode: Option<u8>,
    idcard_uneditable_field: Option<String>,
    /// image_ref1..3 uploaded.
    refs: [bool; 3],
    procedure_type: Option<String>,
    get_fail_reason: bool,
    return_multifaces_tag: bool,
    action_get: bool,
    web_title: Option<String>,
}

struct Flow {
    token: String,
    biz_id: String,
    biz_no: String,
    biz_extra_data: Option<String>,
    params: Params,
    created_ms: i64,
    status: LiteStatus,
    result: Option<LiteResult>,
    completed_ms: Option<i64>,
    get_result_calls: u32,
}

impl Flow {
    fn biz_info(&self) -> BizInfo {
        BizInfo {
            biz_id: self.biz_id.clone(),
            biz_no: self.biz_no.clone(),
            biz_extra_data: self.biz_extra_data.clone(),
        }
    }

    /// Whether get_result still finds the flow at `now`.
    fn retained(&self, now: i64) -> bool {
        let from = self.completed_ms.unwrap_or(self.created_ms);
        now <= from.saturating_add(RESULT_RETENTION_MS)
    }
}

#[derive(Default)]
struct Inner {
    /// biz_id -> flow.
    flows: HashMap<String, Flow>,
    /// token -> biz_id.
    tokens: HashMap<String, String>,
    fault: CallbackFault,
    stats: MegviiSimStats,
}

/// The simulator. Build with [`MegviiSimulator::new`], serve [`MegviiSimulator::router`] under [`MOUNT`].
pub struct MegviiSimulator {
    cfg: MegviiSimConfig,
    clock: SimClock,
    client: Option<reqwest::Client>,
    concurrency_pending: AtomicU32,
    inner: Mutex<Inner>,
}

impl fmt::Debug for MegviiSimulator {
    /// Shows the (credential-free) configuration and the counters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MegviiSimulator")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One notify POST.
struct NotifySend {
    delay: Duration,
    data: String,
    sign: String,
}

/// The notifies of a finished flow.
struct NotifyPlan {
    url: String,
    sends: Vec<NotifySend>,
}

/// Why the page (or [`MegviiSimulator::complete`]) refuses a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageError {
    UnknownToken,
    Expired,
    Finished,
    BadOutcome,
    Internal,
}

impl PageError {
    fn message(self) -> &'static str {
        match self {
            PageError::UnknownToken => "无效的 token (unknown token)",
            PageError::Expired => "token 已过期 (the token expired)",
            PageError::Finished => "该 token 已使用 (the token was already used)",
            PageError::BadOutcome => "无效的请求 (unknown outcome)",
            PageError::Internal => "内部错误 (internal error)",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            PageError::UnknownToken => StatusCode::NOT_FOUND,
            PageError::Expired | PageError::Finished => StatusCode::GONE,
            PageError::BadOutcome => StatusCode::BAD_REQUEST,
            PageError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn missing(key: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("MISSING_ARGUMENTS: {key}"))
    }

    fn bad(key: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("BAD_ARGUMENTS: {key}"))
    }

    fn image(key: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("IMAGE_ERROR_UNSUPPORTED_FORMAT: {key}"),
        )
    }

    fn authentication() -> Self {
        Self::new(StatusCode::FORBIDDEN, "AUTHENTICATION_ERROR")
    }

    fn concurrency() -> Self {
        Self::new(StatusCode::FORBIDDEN, "CONCURRENCY_LIMIT_EXCEEDED")
    }

    fn result_not_found() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "RESULT_NOT_FOUND")
    }

    fn into_response(self, now_ms: i64, started: Instant) -> Response {
        let body = ErrorReply {
            error_message: self.message,
            request_id: Some(new_request_id(now_ms)),
            time_used: Some(elapsed_ms(started)),
        };
        let text = serde_json::to_string(&body)
            .unwrap_or_else(|_| r#"{"error_message":"INTERNAL_ERROR"}"#.to_owned());
        json_response_ct(self.status, text)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------------------------

impl MegviiSimulator {
    /// A simulator for one account, on `clock`.
    pub fn new(cfg: MegviiSimConfig, clock: SimClock) -> Arc<Self> {
        crate::app::install_crypto_provider();
        let client = crate::vendors::http::client(NOTIFY_TIMEOUT, NOTIFY_TIMEOUT).ok();
        Arc::new(MegviiSimulator {
            cfg,
            clock,
            client,
            concurrency_pending: AtomicU32::new(0),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Routes relative to the mount point ([`MOUNT`]); see the module documentation.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/faceid/lite/get_token", post(get_token_handler))
            .route("/faceid/lite/do", get(page_handler).post(do_handler))
            .route("/faceid/lite/get_result", get(get_result_handler))
            .route("/{*path}", any(api_not_found_handler))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Arc::clone(self))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MegviiSimStats {
        self.lock().stats.clone()
    }

    /// The simulator's clock (advance it to expire tokens and results).
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Makes the notify of the next finished flow misbehave; it then resets to [`CallbackFault::None`].
    pub fn set_fault(&self, fault: CallbackFault) {
        self.lock().fault = fault;
    }

    /// The next `n` get_token calls answer 403 `CONCURRENCY_LIMIT_EXCEEDED`.
    pub fn inject_concurrency_limit(&self, n: u32) {
        let _ = self
            .concurrency_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(p.saturating_add(n))
            });
    }

    /// Does what the page does, without a browser: records the result, sends the notify (applying the fault) and
    /// waits for it (a [`CallbackFault::Late`] delay included), then says where the browser would go.
    pub async fn complete(
        &self,
        token: &str,
        outcome: PageOutcome,
    ) -> Result<CompletedFlow, String> {
        let (completed, plan) = self
            .finish(token, outcome)
            .map_err(|e| e.message().to_owned())?;
        self.deliver(plan).await;
        Ok(completed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_concurrency_limit(&self) -> bool {
        self.concurrency_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    // -- get_token -------------------------------------------------------------------------------------------

    fn get_token(&self, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
        let started = Instant::now();
        let now = self.clock.now_ms();
        self.lock().stats.get_token += 1;
        match self.issue(headers, body, now) {
            Ok(reply) => {
                let text = serde_json::to_string(&GetTokenReply {
                    time_used: elapsed_ms(started),
                    ..reply
                })
                .unwrap_or_default();
                json_response_ct(StatusCode::OK, text)
            }
            Err(e) => e.into_response(now, started),
        }
    }

    fn issue(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        now: i64,
    ) -> Result<GetTokenReply, ApiError> {
        if self.take_concurrency_limit() {
            return Err(ApiError::concurrency());
        }
        let body = body.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "REQUEST_ENTITY_TOO_LARGE")
        })?;
        let fields = Fields::from_request(headers, &body)?;
        let api_key = fields.required("api_key")?;
        let api_secret = fields.required("api_secret")?;
        if api_key != self.cfg.api_key || api_secret != self.cfg.api_secret {
            return Err(ApiError::authentication());
        }
        let params = validate_params(&fields, self.cfg.enforce_notify_ports)?;
        let biz_no = fields.required("biz_no")?.to_owned();
        let biz_extra_data = fields.optional("biz_extra_data").map(str::to_owned);

        let now_s = now.div_euclid(1000);
        let mut inner = self.lock();
        let token = loop {
            let t = uuid::Uuid::new_v4().simple().to_string();
            if !inner.tokens.contains_key(&t) {
                break t;
            }
        };
        let biz_id = format!("{now_s},{}", uuid::Uuid::new_v4());
        inner.tokens.insert(token.clone(), biz_id.clone());
        inner.flows.insert(
            biz_id.clone(),
            Flow {
                token: token.clone(),
                biz_id: biz_id.clone(),
                biz_no: biz_no.clone(),
                biz_extra_data,
                params,
                created_ms: now,
                status: LiteStatus::NotStarted,
                result: None,
                completed_ms: None,
                get_result_calls: 0,
            },
        );
        Ok(GetTokenReply {
            request_id: new_request_id(now),
            time_used: 0,
            token,
            biz_id,
            expired_time: now_s + TOKEN_TTL_MS / 1000,
            biz_no: Some(biz_no),
        })
    }

    // -- Page ------------------------------------------------------------------------------------------------

    fn usable_flow<'a>(
        inner: &'a mut Inner,
        token: &str,
        now: i64,
    ) -> Result<&'a mut Flow, PageError> {
        let biz_id = inner.tokens.get(token).ok_or(PageError::UnknownToken)?;
        let flow = inner.flows.get_mut(biz_id).ok_or(PageError::UnknownToken)?;
        if flow.status.is_final() {
            return Err(PageError::Finished);
        }
        if now >= flow.created_ms.saturating_add(TOKEN_TTL_MS) {
            return Err(PageError::Expired);
        }
        Ok(flow)
    }

    fn page(&self, query: Option<&str>) -> Response {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.stats.page_views += 1;
        let token = query_param(query, "token").unwrap_or_default();
        match Self::usable_flow(&mut inner, &token, now) {
            Ok(flow) => {
                if flow.status == LiteStatus::NotStarted {
                    flow.status = LiteStatus::Processing;
                }
                html_response(StatusCode::OK, PAGE_CSP, render_page(flow))
            }
            Err(e) => error_page(e),
        }
    }

    fn finish(
        &self,
        token: &str,
        outcome: PageOutcome,
    ) -> Result<(CompletedFlow, NotifyPlan), PageError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let fault = {
            let flow = Self::usable_flow(&mut inner, token, now)?;
            let result = build_result(flow, outcome, now.div_euclid(1000));
            flow.status = result.status;
            flow.result = Some(result);
            flow.completed_ms = Some(now);
            std::mem::take(&mut inner.fault)
        };
        let flow = Self::finished_flow(&inner, token).ok_or(PageError::Internal)?;
        let result = flow.result.as_ref().ok_or(PageError::Internal)?;
        let data = serde_json::to_string(result).map_err(|_| PageError::Internal)?;
        let sign = wire::sign(&self.cfg.api_secret, &data);
        let plan = self.notify_plan(flow, result, &data, &sign, fault)?;
        let completed = if flow.params.action_get {
            CompletedFlow {
                return_method: "GET".to_owned(),
                return_url: append_biz_id(&flow.params.return_url, &flow.biz_id),
                form: Vec::new(),
            }
        } else {
            CompletedFlow {
                return_method: "POST".to_owned(),
                return_url: flow.params.return_url.clone(),
                form: vec![("data".to_owned(), data), ("sign".to_owned(), sign)],
            }
        };
        Ok((completed, plan))
    }

    fn finished_flow<'a>(inner: &'a Inner, token: &str) -> Option<&'a Flow> {
        inner.flows.get(inner.tokens.get(token)?)
    }

    fn notify_plan(
        &self,
        flow: &Flow,
        result: &LiteResult,
        data: &str,
        sign: &str,
        fault: CallbackFault,
    ) -> Result<NotifyPlan, PageError> {
        let send = |delay: Duration, data: &str, sign: &str| NotifySend {
            delay,
            data: data.to_owned(),
            sign: sign.to_owned(),
        };
        let now = Duration::ZERO;
        let sends = match fault {
            CallbackFault::None => vec![send(now, data, sign)],
            CallbackFault::Duplicate => vec![send(now, data, sign), send(now, data, sign)],
            CallbackFault::Late(delay) => vec![send(delay, data, sign)],
            CallbackFault::Forged => {
                let wrong = format!("forged-{}", self.cfg.api_secret);
                vec![send(now, data, &wire::sign(&wrong, data))]
            }
            CallbackFault::Tampered => {
                let tampered = serde_json::to_string(&tamper(result.clone()))
                    .map_err(|_| PageError::Internal)?;
                vec![send(now, &tampered, sign)]
            }
            CallbackFault::Never => Vec::new(),
            CallbackFault::Reordered => {
                let stale = LiteResult {
                    status: LiteStatus::Processing,
                    fail_reason: None,
                    biz_info: flow.biz_info(),
                    idcard_info: None,
                    liveness_result: None,
                    verify_result: None,
                    will_result: None,
                    multifaces_tag: None,
                };
                let stale = serde_json::to_string(&stale).map_err(|_| PageError::Internal)?;
                let stale_sign = wire::sign(&self.cfg.api_secret, &stale);
                vec![send(now, data, sign), send(now, &stale, &stale_sign)]
            }
        };
        Ok(NotifyPlan {
            url: flow.params.notify_url.clone(),
            sends,
        })
    }

    async fn deliver(&self, plan: NotifyPlan) {
        for send in plan.sends {
            if !send.delay.is_zero() {
                tokio::time::sleep(send.delay).await;
            }
            let delivered = match &self.client {
                Some(client) => client
                    .post(&plan.url)
                    .form(&[("data", send.data.as_str()), ("sign", send.sign.as_str())])
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                None => false,
            };
            let mut inner = self.lock();
            if delivered {
                inner.stats.notify_sent += 1;
            } else {
                inner.stats.notify_failed += 1;
            }
        }
    }

    fn submit(self: &Arc<Self>, body: &[u8]) -> Response {
        let mut token = None;
        let mut outcome = None;
        for (k, v) in form_urlencoded::parse(body) {
            match k.as_ref() {
                "token" if token.is_none() => token = Some(v.into_owned()),
                "outcome" if outcome.is_none() => outcome = Some(v.into_owned()),
                _ => {}
            }
        }
        let Some(outcome) = outcome.as_deref().and_then(PageOutcome::parse) else {
            return error_page(PageError::BadOutcome);
        };
        let (completed, plan) = match self.finish(token.as_deref().unwrap_or_default(), outcome) {
            Ok(done) => done,
            Err(e) => return error_page(e),
        };
        let sim = Arc::clone(self);
        tokio::spawn(async move { sim.deliver(plan).await });
        browser_return(&completed)
    }

    // -- get_result ------------------------------------------------------------------------------------------

    fn get_result(&self, query: Option<&str>) -> Response {
        let started = Instant::now();
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.stats.get_result += 1;
        match self.result_reply(&mut inner, query, now) {
            Ok(mut reply) => {
                reply.time_used = Some(elapsed_ms(started));
                match serde_json::to_string(&reply) {
                    Ok(text) => json_response_ct(StatusCode::OK, text),
                    Err(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
                        .into_response(now, started),
                }
            }
            Err(e) => e.into_response(now, started),
        }
    }

    fn result_reply(
        &self,
        inner: &mut Inner,
        query: Option<&str>,
        now: i64,
    ) -> Result<GetResultReply, ApiError> {
        let arg = |name: &str| query_param(query, name).filter(|v| !v.is_empty());
        let api_key = arg("api_key").ok_or_else(|| ApiError::missing("api_key"))?;
        let api_secret = arg("api_secret").ok_or_else(|| ApiError::missing("api_secret"))?;
        if api_key != self.cfg.api_key || api_secret != self.cfg.api_secret {
            return Err(ApiError::authentication());
        }
        let biz_id = arg("biz_id").ok_or_else(|| ApiError::missing("biz_id"))?;
        let return_image = match arg("return_image").as_deref() {
            None => 0,
            Some(v) => match v.parse::<u8>() {
                Ok(n) if n <= 6 && v.len() == 1 => n,
                _ => return Err(ApiError::bad("return_image")),
            },
        };
        let return_verify_time = match arg("return_verify_time").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err(ApiError::bad("return_verify_time")),
        };
        let flow = inner
            .flows
            .get_mut(&biz_id)
            .filter(|f| f.retained(now))
            .ok_or_else(ApiError::result_not_found)?;
        if flow.get_result_calls >= MAX_GET_RESULT_CALLS {
            return Err(ApiError::bad("biz_id"));
        }
        flow.get_result_calls += 1;
        let mut result = match &flow.result {
            Some(r) if flow.status.is_final() => r.clone(),
            _ => LiteResult {
                status: flow.status,
                fail_reason: None,
                biz_info: flow.biz_info(),
                idcard_info: None,
                liveness_result: None,
                verify_result: None,
                will_result: None,
                multifaces_tag: None,
            },
        };
        if !return_verify_time {
            if let Some(v) = result.verify_result.as_mut() {
                v.verify_time = None;
            }
        }
        let images = (result.status == LiteStatus::Ok && return_image > 0)
            .then(|| result_images(&flow.params, return_image))
            .flatten();
        Ok(GetResultReply {
            result,
            request_id: Some(new_request_id(now)),
            time_used: Some(0),
            images,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------------------------

fn comparison(confidence: f64) -> Comparison {
    Comparison {
        confidence,
        thresholds: THRESHOLDS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
    }
}

fn build_result(flow: &Flow, outcome: PageOutcome, now_s: i64) -> LiteResult {
    let p = &flow.params;
    let status = match outcome {
        PageOutcome::Pass
        | PageOutcome::FaceMismatch
        | PageOutcome::IdNameMismatch
        | PageOutcome::NoSuchIdNumber => LiteStatus::Ok,
        PageOutcome::LivenessFailed => LiteStatus::Failed,
        PageOutcome::Cancel => LiteStatus::Cancelled,
        PageOutcome::Timeout => LiteStatus::Timeout,
        PageOutcome::WebrtcUnsupported => LiteStatus::WebrtcUnsupported,
    };
    let fail_reason = (outcome == PageOutcome::WebrtcUnsupported && p.get_fail_reason)
        .then(|| "WEBRTC_UNSUPPORTED".to_owned());
    let procedure = p
        .procedure_type
        .clone()
        .unwrap_or_else(|| "video".to_owned());
    let genuineness: BTreeMap<String, f64> = [
        ("synthetic_face_confidence", 0.0),
        ("synthetic_face_threshold", 0.5),
        ("mask_confidence", 0.0),
        ("mask_threshold", 0.5),
        ("screen_replay_confidence", 0.0),
        ("screen_replay_threshold", 0.5),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), *v))
    .collect();
    let liveness_result = match outcome {
        PageOutcome::Cancel | PageOutcome::WebrtcUnsupported => None,
        PageOutcome::Timeout => Some(LivenessResult {
            result: "TIMEOUT".to_owned(),
            procedure_type: Some(procedure.clone()),
            details: None,
            face_genuineness: None,
        }),
        PageOutcome::LivenessFailed => Some(LivenessResult {
            result: "FAIL".to_owned(),
            procedure_type: Some(procedure.clone()),
            details: Some(
                [
                    ("UPLOAD_TIMES", 1),
                    ("FACE_NOT_FOUND", 0),
                    ("LOW_FACE_QUALITY", 1),
                    ("INVALID_VIDEO_DURATION", 0),
                    ("SR_ERROR", 0),
                    ("NOT_SYNCHRONIZED", 0),
                ]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            ),
            face_genuineness: Some(genuineness),
        }),
        _ => Some(LivenessResult {
            result: "PASS".to_owned(),
            procedure_type: Some(procedure.clone()),
            details: None,
            face_genuineness: Some(genuineness),
        }),
    };
    let confidence = match outcome {
        PageOutcome::Pass => Some(PASS_CONFIDENCE),
        PageOutcome::FaceMismatch => Some(MISMATCH_CONFIDENCE),
        _ => None,
    };
    let verify_result = match outcome {
        PageOutcome::Pass | PageOutcome::FaceMismatch => {
            let mut v = VerifyResult {
                verify_time: Some(now_s),
                ..VerifyResult::default()
            };
            let c = confidence.map(comparison);
            if p.comparison_type == 1 {
                v.result_faceid = c;
                v.id_exceptions = Some(
                    [("id_attacked", 0), ("id_photo_monochrome", 0)]
                        .iter()
                        .map(|(k, n)| ((*k).to_owned(), *n))
                        .collect(),
                );
            } else {
                let [r1, r2, r3] = p.refs;
                v.result_ref1 = c.clone().filter(|_| r1);
                v.result_ref2 = c.clone().filter(|_| r2);
                v.result_ref3 = c.filter(|_| r3);
            }
            Some(v)
        }
        PageOutcome::IdNameMismatch => Some(VerifyResult {
            verify_time: Some(now_s),
            error_message: Some("ID_NUMBER_NAME_NOT_MATCH".to_owned()),
            ..VerifyResult::default()
        }),
        PageOutcome::NoSuchIdNumber => Some(VerifyResult {
            verify_time: Some(now_s),
            error_message: Some("NO_SUCH_ID_NUMBER".to_owned()),
            ..VerifyResult::default()
        }),
        _ => None,
    };
    let idcard_info = if outcome.interrupted() || p.comparison_type != 1 {
        None
    } else {
        idcard_info(p)
    };
    let will_result = match (p.procedure_type.as_deref(), &liveness_result) {
        (Some("will"), Some(l)) if l.result == "PASS" => Some(vec![WillResult {
            result: "PASS".to_owned(),
            will_error_message: Some(String::new()),
        }]),
        (Some("will"), Some(l)) if l.result == "FAIL" => Some(vec![WillResult {
            result: "FAIL".to_owned(),
            will_error_message: Some("ACTION_FAIL".to_owned()),
        }]),
        _ => None,
    };
    LiteResult {
        status,
        fail_reason,
        biz_info: flow.biz_info(),
        idcard_info,
        liveness_result,
        verify_result,
        will_result,
        multifaces_tag: p
            .return_multifaces_tag
            .then(|| StringOrNumber::Text("0".to_owned())),
    }
}

fn idcard_info(p: &Params) -> Option<IdcardInfo> {
    let mode = p.idcard_mode?;
    let legality: BTreeMap<String, f64> = [
        ("ID Photo", 0.98),
        ("Temporary ID Photo", 0.0),
        ("Photocopy", 0.01),
        ("Screen", 0.01),
        ("Edited", 0.0),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), *v))
    .collect();
    let front = Side {
        ocr_result: Some(FrontOcr {
            address: Some(SANDBOX_ADDRESS.to_owned()),
            birthday: Some(OcrBirthday {
                day: StringOrNumber::Text("1".to_owned()),
                month: StringOrNumber::Text("1".to_owned()),
                year: StringOrNumber::Text("1900".to_owned()),
            }),
            gender: Some("男".to_owned()),
            id_card_number: Some(SANDBOX_ID_NUMBER.to_owned()),
            name: Some(SANDBOX_NAME.to_owned()),
            race: Some("汉".to_owned()),
            legality: Some(legality.clone()),
        }),
        upload_times: Some(1),
    };
    let back = Side {
        ocr_result: Some(BackOcr {
            issued_by: Some(SANDBOX_ISSUED_BY.to_owned()),
            valid_date: Some(SANDBOX_VALID_DATE.to_owned()),
            legality: Some(legality),
        }),
        upload_times: Some(1),
    };
    let base = IdcardInfo {
        idcard_mode: Some(StringOrNumber::Text(mode.to_string())),
        idcard_uneditable_field: p.idcard_uneditable_field.clone(),
        idcard_number: Some(SANDBOX_ID_NUMBER.to_owned()),
        idcard_name: Some(SANDBOX_NAME.to_owned()),
        ..IdcardInfo::default()
    };
    match mode {
        1 => Some(IdcardInfo {
            front_side: Some(front),
            ..base
        }),
        2 => Some(IdcardInfo {
            idcard_valid_date: Some(SANDBOX_VALID_DATE.to_owned()),
            idcard_issued_by: Some(SANDBOX_ISSUED_BY.to_owned()),
            front_side: Some(front),
            back_side: Some(back),
            ..base
        }),
        3 | 4 => Some(base),
        _ => None,
    }
}

/// The notify `data` of [`CallbackFault::Tampered`]: status OK, every confidence 99.9, no verify error.
fn tamper(mut result: LiteResult) -> LiteResult {
    result.status = LiteStatus::Ok;
    result.fail_reason = None;
    let v = result
        .verify_result
        .get_or_insert_with(VerifyResult::default);
    v.error_message = None;
    for c in [
        &mut v.result_faceid,
        &mut v.result_ref1,
        &mut v.result_ref2,
        &mut v.result_ref3,
        &mut v.result_idcard_photo,
        &mut v.result_idcard_datasource,
    ] {
        if let Some(c) = c.as_mut() {
            c.confidence = TAMPERED_CONFIDENCE;
        }
    }
    if v.result_faceid.is_none() && v.result_ref1.is_none() {
        v.result_faceid = Some(comparison(TAMPERED_CONFIDENCE));
    }
    result
}

fn result_images(p: &Params, return_image: u8) -> Option<Images> {
    let uri = || format!("data:image/jpeg;base64,{}", STANDARD.encode(SYNTHETIC_JPEG));
    let front = matches!(p.idcard_mode, Some(1 | 2)) && p.comparison_type == 1;
    let back = p.idcard_mode == Some(2) && p.comparison_type == 1;
    let images = Images {
        image_best: matches!(return_image, 1 | 4).then(uri),
        image_idcard_front: (front && matches!(return_image, 2 | 4)).then(uri),
        image_idcard_back: (back && matches!(return_image, 3 | 4)).then(uri),
    };
    (images != Images::default()).then_some(images)
}

// ---------------------------------------------------------------------------------------------------------------
// get_token arguments
// ---------------------------------------------------------------------------------------------------------------

/// A request field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Text(String),
    File(Vec<u8>),
}

/// The request's fields by name (first occurrence wins).
#[derive(Debug, Default)]
struct Fields(HashMap<String, Field>);

impl Fields {
    fn from_request(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let mut fields = Fields::default();
        match mime.as_str() {
            "application/x-www-form-urlencoded" => {
                for (k, v) in form_urlencoded::parse(body) {
                    fields.insert(k.into_owned(), Field::Text(v.into_owned()));
                }
            }
            "multipart/form-data" => {
                let boundary =
                    multipart_boundary(content_type).ok_or_else(|| ApiError::bad("multipart"))?;
                for part in
                    parse_multipart(body, &boundary).map_err(|_| ApiError::bad("multipart"))?
                {
                    let field = if part.filename.is_some() {
                        Field::File(part.data)
                    } else {
                        match String::from_utf8(part.data) {
                            Ok(text) => Field::Text(text),
                            Err(_) => return Err(ApiError::bad(&part.name)),
                        }
                    };
                    fields.insert(part.name, field);
                }
            }
            _ => return Err(ApiError::bad("Content-Type")),
        }
        Ok(fields)
    }

    fn insert(&mut self, name: String, field: Field) {
        self.0.entry(name).or_insert(field);
    }

    /// A text field; empty counts as absent.
    fn optional(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(Field::Text(t)) if !t.is_empty() => Some(t),
            _ => None,
        }
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.optional(name).ok_or_else(|| ApiError::missing(name))
    }

    /// A file part.
    fn file(&self, name: &str) -> Option<&[u8]> {
        match self.0.get(name) {
            Some(Field::File(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// An optional field restricted to `allowed`.
    fn one_of(&self, name: &str, allowed: &[&str]) -> Result<Option<&str>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v)),
            Some(_) => Err(ApiError::bad(name)),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.one_of(name, &["0", "1"])? == Some("1"))
    }
}

fn validate_params(f: &Fields, enforce_notify_ports: bool) -> Result<Params, ApiError> {
    let return_url = f.required("return_url")?;
    if parse_http_url(return_url).is_none() {
        return Err(ApiError::bad("return_url"));
    }
    let notify_url = f.required("notify_url")?;
    let port = parse_http_url(notify_url).ok_or_else(|| ApiError::bad("notify_url"))?;
    if enforce_notify_ports && !NOTIFY_PORTS.contains(&port) {
        return Err(ApiError::bad("notify_url"));
    }
    let biz_no = f.required("biz_no")?;
    if biz_no.len() > MAX_BIZ_NO {
        return Err(ApiError::bad("biz_no"));
    }
    let comparison_type = match f.required("comparison_type")? {
        "0" => 0,
        "1" => 1,
        _ => return Err(ApiError::bad("comparison_type")),
    };
    let idcard_mode = match f.one_of("idcard_mode", &["0", "1", "2", "3", "4"])? {
        Some(m) => Some(m.parse::<u8>().map_err(|_| ApiError::bad("idcard_mode"))?),
        None if comparison_type == 1 => return Err(ApiError::missing("idcard_mode")),
        None => None,
    };
    let kyc_given = comparison_type == 1 && idcard_mode == Some(0);
    match f.optional("idcard_name") {
        None if kyc_given => return Err(ApiError::missing("idcard_name")),
        None => {}
        Some(name) => {
            let name = name.trim();
            if name.is_empty()
                || name.chars().count() > MAX_NAME_CHARS
                || name.chars().any(char::is_control)
            {
                return Err(ApiError::bad("idcard_name"));
            }
        }
    }
    match f.optional("idcard_number") {
        None if kyc_given => return Err(ApiError::missing("idcard_number")),
        None => {}
        Some(number) if !valid_id_number(number) => return Err(ApiError::bad("idcard_number")),
        Some(_) => {}
    }
    let mut refs = [false; 3];
    for (i, slot) in refs.iter_mut().enumerate() {
        let key = format!("image_ref{}", i + 1);
        if let Some(bytes) = f.file(&key) {
            if !is_jpeg_or_png(bytes) {
                return Err(ApiError::image(&key));
            }
            *slot = true;
        }
    }
    if comparison_type == 0 && !refs[0] {
        return Err(ApiError::missing("image_ref1"));
    }
    let procedure_type = f
        .one_of(
            "procedure_type",
            &["video", "selfie", "still", "flash", "will"],
        )?
        .map(str::to_owned);
    f.one_of("procedure_priority", &["video", "still", "keep"])?;
    f.one_of(
        "liveness_preferences",
        &[
            "none",
            "selfie_no_metadata_check",
            "video_strict",
            "still_strict",
        ],
    )?;
    let web_title = f.optional("web_title").map(str::to_owned);
    if web_title.as_ref().is_some_and(|t| t.len() > MAX_WEB_TITLE) {
        return Err(ApiError::bad("web_title"));
    }
    if f.optional("biz_extra_data")
        .is_some_and(|d| d.len() > MAX_BIZ_EXTRA_DATA)
    {
        return Err(ApiError::bad("biz_extra_data"));
    }
    let idcard_uneditable_field = f.optional("idcard_uneditable_field").map(str::to_owned);
    if let Some(list) = &idcard_uneditable_field {
        let ok = list.split(',').all(|item| {
            matches!(
                item.trim(),
                "idcard_name" | "idcard_number" | "idcard_valid_date" | "idcard_issued_by"
            )
        });
        if !ok {
            return Err(ApiError::bad("idcard_uneditable_field"));
        }
    }
    let get_fail_reason = f.flag("get_fail_reason")?;
    let return_multifaces_tag = f.flag("return_multifaces_tag")?;
    let action_get = f.one_of("action_http_method", &["GET", "POST"])? == Some("GET");
    if let Some(t) = f.optional("maximum_shooting_time") {
        let valid = t.len() <= 2
            && t.bytes().all(|b| b.is_ascii_digit())
            && t.parse::<u8>().is_ok_and(|n| (10..=60).contains(&n));
        if !valid {
            return Err(ApiError::bad("maximum_shooting_time"));
        }
    }
    for key in [
        "multi_oriented_detection",
        "fmp_mode",
        "get_shooting_error",
        "update_rtc",
    ] {
        f.flag(key)?;
    }
    f.one_of("encryption_type", &["0", "1", "2"])?;
    for key in ["scene_id", "uuid"] {
        if f.optional(key)
            .is_some_and(|v| v.len() > MAX_BIZ_NO || v.chars().any(char::is_control))
        {
            return Err(ApiError::bad(key));
        }
    }
    Ok(Params {
        return_url: return_url.to_owned(),
        notify_url: notify_url.to_owned(),
        comparison_type,
        idcard_mode,
        idcard_uneditable_field,
        refs,
        procedure_type,
        get_fail_reason,
        return_multifaces_tag,
        action_get,
        web_title,
    })
}

/// 18 characters, the last the GB 11643 check character of the first 17 (`x` accepted for `X`).
fn valid_id_number(number: &str) -> bool {
    let upper = number.to_ascii_uppercase();
    upper.len() == 18
        && upper.is_ascii()
        && upper.split_at_checked(17).is_some_and(|(first17, last)| {
            gb11643_check_char(first17).is_some_and(|c| last.len() == 1 && last.starts_with(c))
        })
}

fn is_jpeg_or_png(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
        || bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A])
}

/// The port of an absolute http(s) URL (explicit, else 80/443); `None` when it is not one, or has whitespace or
/// control characters.
fn parse_http_url(url: &str) -> Option<u16> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        return None;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    match port {
        None => Some(default_port),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().filter(|&n| n != 0)
        }
        Some(_) => None,
    }
}

/// Appends `biz_id` to a return URL as the document's §1.2 shows: `?biz_id=` without a query, `&biz_id=` after
/// one, and before a `#fragment`.
fn append_biz_id(url: &str, biz_id: &str) -> String {
    let (base, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let encoded: String = form_urlencoded::byte_serialize(biz_id.as_bytes()).collect();
    format!("{base}{separator}biz_id={encoded}{fragment}")
}

// ---------------------------------------------------------------------------------------------------------------
// multipart/form-data
// ---------------------------------------------------------------------------------------------------------------

/// One multipart part.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    name: String,
    filename: Option<String>,
    data: Vec<u8>,
}

/// The `boundary` parameter of a multipart Content-Type (quoted or not, 1-70 characters).
fn multipart_boundary(content_type: &str) -> Option<String> {
    let (_, params) = content_type.split_once(';')?;
    let boundary = parse_params(params)?
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v)?;
    (!boundary.is_empty()
        && boundary.len() <= 70
        && boundary.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && !boundary.ends_with(' '))
    .then_some(boundary)
}

/// A strict multipart/form-data parser: the body starts with the first delimiter, every part has a
/// `Content-Disposition: form-data; name=".."` header, and the close delimiter ends the body (optionally followed
/// by CRLF).
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let mut rest = body
        .strip_prefix(delimiter.as_bytes())
        .ok_or("body does not start with the boundary")?;
    let mut parts = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(b"--") {
            return if after.is_empty() || after == b"\r\n" {
                Ok(parts)
            } else {
                Err("data after the close delimiter".to_owned())
            };
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("delimiter not followed by CRLF")?;
        if parts.len() >= MAX_MULTIPART_PARTS {
            return Err("too many parts".to_owned());
        }
        let header_end = find(rest, b"\r\n\r\n")
            .filter(|&i| i <= MAX_PART_HEADER)
            .ok_or("part headers not terminated")?;
        let headers = std::str::from_utf8(rest.get(..header_end).ok_or("headers")?)
            .map_err(|_| "part headers are not UTF-8")?;
        rest = rest.get(header_end + 4..).ok_or("headers")?;
        let data_end = find(rest, next_delimiter.as_bytes()).ok_or("part not terminated")?;
        let data = rest.get(..data_end).ok_or("data")?.to_vec();
        rest = rest
            .get(data_end + next_delimiter.len()..)
            .ok_or("delimiter")?;

        let mut disposition = None;
        for line in headers.split("\r\n") {
            let (name, value) = line.split_once(':').ok_or("malformed part header")?;
            if name.trim().eq_ignore_ascii_case("content-disposition") {
                if disposition.is_some() {
                    return Err("repeated Content-Disposition".to_owned());
                }
                disposition = Some(value.trim());
            }
        }
        let disposition = disposition.ok_or("part without Content-Disposition")?;
        let (kind, params) = disposition.split_once(';').unwrap_or((disposition, ""));
        if !kind.trim().eq_ignore_ascii_case("form-data") {
            return Err("part is not form-data".to_owned());
        }
        let params = parse_params(params).ok_or("malformed Content-Disposition")?;
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        let name = get("name")
            .filter(|n| !n.is_empty())
            .ok_or("part without a name")?;
        parts.push(Part {
            name,
            filename: get("filename"),
            data,
        });
    }
}

/// Parses `; k=v; k="quoted \" value"` header parameters (the text after the first ';').
fn parse_params(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars
            .next_if(|c| *c == ' ' || *c == '\t' || *c == ';')
            .is_some()
        {}
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ';') {
            key.push(c);
        }
        let key = key.trim().to_owned();
        if key.is_empty() || chars.next() != Some('=') {
            return None;
        }
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            if !matches!(chars.peek(), None | Some(';')) {
                return None;
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ';') {
                value.push(c);
            }
            value = value.trim().to_owned();
        }
        out.push((key, value));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------------------------

async fn get_token_handler(
    State(sim): State<Arc<MegviiSimulator>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    sim.get_token(&headers, body)
}

async fn page_handler(
    State(sim): State<Arc<MegviiSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.page(query.as_deref())
}

async fn do_handler(
    State(sim): State<Arc<MegviiSimulator>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => sim.submit(&body),
        Err(_) => error_page(PageError::BadOutcome),
    }
}

async fn get_result_handler(
    State(sim): State<Arc<MegviiSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.get_result(query.as_deref())
}

async fn api_not_found_handler(State(sim): State<Arc<MegviiSimulator>>) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "API_NOT_FOUND")
        .into_response(sim.clock.now_ms(), Instant::now())
}

// ---------------------------------------------------------------------------------------------------------------
// Pages and responses
// ---------------------------------------------------------------------------------------------------------------

fn render_page(flow: &Flow) -> String {
    let p = &flow.params;
    let web_title = p
        .web_title
        .as_deref()
        .map(|t| format!("<h2 id=\"web_title\">{}</h2>", esc(t)))
        .unwrap_or_default();
    let comparison = match (p.comparison_type, p.idcard_mode) {
        (1, Some(0)) => {
            "权威数据源比对, 调用方传入姓名和身份证号 (comparison_type 1, idcard_mode 0)".to_owned()
        }
        (1, Some(1)) => {
            "权威数据源比对, 拍摄身份证人像面 (comparison_type 1, idcard_mode 1)".to_owned()
        }
        (1, Some(2)) => {
            "权威数据源比对, 拍摄身份证正反面 (comparison_type 1, idcard_mode 2)".to_owned()
        }
        (1, Some(m)) => {
            format!("权威数据源比对, 用户输入身份信息 (comparison_type 1, idcard_mode {m})")
        }
        _ => {
            let n = p.refs.iter().filter(|r| **r).count();
            format!("与上传的参照图比对 (comparison_type 0, {n} image_ref)")
        }
    };
    let procedure = p.procedure_type.as_deref().unwrap_or("video");
    let return_method = if p.action_get { "GET" } else { "POST" };
    fill_template(
        PAGE_TEMPLATE,
        &[
            ("web_title", web_title),
            ("biz_no", esc(&flow.biz_no)),
            ("comparison", esc(&comparison)),
            ("procedure", esc(procedure)),
            ("return_method", return_method.to_owned()),
            ("token", esc(&flow.token)),
        ],
    )
}

/// The browser's way back: a 303 for GET, an auto-submitting form for POST.
fn browser_return(completed: &CompletedFlow) -> Response {
    if completed.return_method == "GET" {
        if let Ok(location) = HeaderValue::from_str(&completed.return_url) {
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        header::REFERRER_POLICY,
                        HeaderValue::from_static("no-referrer"),
                    ),
                ],
            )
                .into_response();
        }
        let body = page_shell(&format!(
            "<div id=\"result\"><p><a id=\"return\" href=\"{}\">继续 (continue)</a></p></div>",
            esc(&completed.return_url)
        ));
        return html_response(StatusCode::OK, PAGE_CSP, body);
    }
    let hidden: String = completed
        .form
        .iter()
        .map(|(k, v)| {
            format!(
                "  <input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                esc(k),
                esc(v)
            )
        })
        .collect();
    let body = page_shell(&format!(
        "<div id=\"result\">\n<p>正在返回 (returning)…</p>\n\
         <form id=\"return\" method=\"post\" action=\"{}\">\n{hidden}\
         <noscript><button type=\"submit\">继续 (continue)</button></noscript>\n</form>\n</div>\n\
         <script>document.getElementById('return').submit()</script>",
        esc(&completed.return_url)
    ));
    html_response(StatusCode::OK, RETURN_PAGE_CSP, body)
}

fn error_page(error: PageError) -> Response {
    let body = page_shell(&format!(
        "<div id=\"error\">\n<h2>无法进行核身 (cannot verify)</h2>\n<p>{}</p>\n</div>",
        esc(error.message())
    ));
    html_response(error.status(), PAGE_CSP, body)
}

/// A minimal page around `content` (already HTML).
fn page_shell(content: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{PAGE_TITLE}</title>\n\
         <style>body {{ font-family: system-ui, sans-serif; max-width: 34rem; margin: 2rem auto; padding: 0 1rem; }}</style>\n\
         </head>\n<body>\n<h1>{PAGE_TITLE}</h1>\n{content}\n</body>\n</html>\n"
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------------------

/// `"<unix>,<uuid>"`.
fn new_request_id(now_ms: i64) -> String {
    format!("{},{}", now_ms.div_euclid(1000), uuid::Uuid::new_v4())
}

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// A JSON answer with this vendor's content type.
fn json_response_ct(status: StatusCode, body: String) -> Response {
    json_response(status, JSON_CONTENT_TYPE, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::megvii::wire::{
        decode_data_uri_jpeg, parse_callback_data, parse_get_result, parse_get_token, Reply,
    };

    const API_KEY: &str = "sim-megvii-api-key";
    const API_SECRET: &str = "sim-megvii-api-secret";
    /// Synthetic: region 110101, born 1900-01-01, sequence 001.
    const ID_NO: &str = "110101190001010014";
    const NAME: &str = "测试用户";
    const RETURN_URL: &str = "https://app.example/face/return?state=a%2Fb";
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn config(enforce_notify_ports: bool) -> MegviiSimConfig {
        MegviiSimConfig {
            api_key: API_KEY.to_owned(),
            api_secret: API_SECRET.to_owned(),
            enforce_notify_ports,
        }
    }

    /// One notify the receiver got.
    #[derive(Debug, Clone)]
    struct Received {
        data: String,
        sign: String,
        at: Instant,
    }

    type Inbox = Arc<Mutex<Vec<Received>>>;
    /// Field changes: `Some(v)` sets, `None` removes.
    type Changes<'a> = Vec<(&'a str, Option<&'a str>)>;
    /// A get_result query.
    type Query<'a> = Vec<(&'a str, &'a str)>;

    async fn receive(State(inbox): State<Inbox>, body: Bytes) -> StatusCode {
        let mut data = None;
        let mut sign = None;
        for (k, v) in form_urlencoded::parse(&body) {
            match k.as_ref() {
                "data" => data = Some(v.into_owned()),
                "sign" => sign = Some(v.into_owned()),
                _ => {}
            }
        }
        inbox.lock().unwrap().push(Received {
            data: data.unwrap_or_default(),
            sign: sign.unwrap_or_default(),
            at: Instant::now(),
        });
        StatusCode::OK
    }

    async fn serve(app: Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    struct Harness {
        sim: Arc<MegviiSimulator>,
        base: String,
        notify_url: String,
        inbox: Inbox,
        client: reqwest::Client,
    }

    impl Harness {
        async fn start() -> Self {
            Self::start_with(config(false)).await
        }

        async fn start_with(cfg: MegviiSimConfig) -> Self {
            crate::app::install_crypto_provider();
            let sim = MegviiSimulator::new(cfg, SimClock::new());
            let addr = serve(Router::new().nest(MOUNT, sim.router())).await;
            let inbox: Inbox = Arc::default();
            let receiver = serve(
                Router::new()
                    .route("/notify", post(receive))
                    .with_state(Arc::clone(&inbox)),
            )
            .await;
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client");
            Harness {
                sim,
                base: format!("http://{addr}{MOUNT}"),
                notify_url: format!("http://{receiver}/notify"),
                inbox,
                client,
            }
        }

        /// Valid urlencoded fields of a comparison_type 1 / idcard_mode 0 flow.
        fn fields(&self) -> Vec<(String, String)> {
            [
                ("api_key", API_KEY),
                ("api_secret", API_SECRET),
                ("return_url", RETURN_URL),
                ("notify_url", self.notify_url.as_str()),
                ("biz_no", "order-0001"),
                ("comparison_type", "1"),
                ("idcard_mode", "0"),
                ("idcard_name", NAME),
                ("idcard_number", ID_NO),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
        }

        /// `fields()` with `changes` applied: `Some(v)` sets (or adds), `None` removes.
        fn with(&self, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
            let mut fields = self.fields();
            for (key, value) in changes {
                fields.retain(|(k, _)| k != key);
                if let Some(v) = value {
                    fields.push(((*key).to_owned(), (*v).to_owned()));
                }
            }
            fields
        }

        async fn post_token(&self, fields: &[(String, String)]) -> (u16, Vec<u8>) {
            let resp = self
                .client
                .post(format!("{}/faceid/lite/get_token", self.base))
                .form(fields)
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.bytes().await.expect("body").to_vec())
        }

        async fn post_multipart(&self, body: Vec<u8>, boundary: &str) -> (u16, Vec<u8>) {
            let resp = self
                .client
                .post(format!("{}/faceid/lite/get_token", self.base))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.bytes().await.expect("body").to_vec())
        }

        async fn token_ok(&self, fields: &[(String, String)]) -> GetTokenReply {
            let (status, body) = self.post_token(fields).await;
            match parse_get_token(status, &body).expect("parseable") {
                Reply::Ok(r) => r,
                Reply::Err { error, .. } => panic!("expected a token, got {error:?}"),
            }
        }

        async fn token(&self, changes: &[(&str, Option<&str>)]) -> GetTokenReply {
            self.token_ok(&self.with(changes)).await
        }

        async fn page(&self, token: &str) -> (u16, String) {
            let resp = self
                .client
                .get(format!("{}/faceid/lite/do", self.base))
                .query(&[("token", token)])
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.text().await.expect("text"))
        }

        async fn submit(&self, token: &str, outcome: &str) -> reqwest::Response {
            self.client
                .post(format!("{}/faceid/lite/do", self.base))
                .form(&[("token", token), ("outcome", outcome)])
                .send()
                .await
                .expect("send")
        }

        async fn get_result_raw(&self, query: &[(&str, &str)]) -> (u16, Vec<u8>) {
            let resp = self
                .client
                .get(format!("{}/faceid/lite/get_result", self.base))
                .query(query)
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.bytes().await.expect("body").to_vec())
        }

        async fn get_result(&self, biz_id: &str, extra: &[(&str, &str)]) -> Reply<GetResultReply> {
            let mut query = vec![
                ("api_key", API_KEY),
                ("api_secret", API_SECRET),
                ("biz_id", biz_id),
            ];
            query.extend_from_slice(extra);
            let (status, body) = self.get_result_raw(&query).await;
            parse_get_result(status, &body).expect("parseable")
        }

        async fn result_ok(&self, biz_id: &str, extra: &[(&str, &str)]) -> GetResultReply {
            match self.get_result(biz_id, extra).await {
                Reply::Ok(r) => r,
                Reply::Err { error, .. } => panic!("expected a result, got {error:?}"),
            }
        }

        fn received(&self) -> Vec<Received> {
            self.inbox.lock().unwrap().clone()
        }

        /// Waits (up to 5 s) until `n` notifies arrived.
        async fn wait_for(&self, n: usize) -> Vec<Received> {
            for _ in 0..500 {
                let got = self.received();
                if got.len() >= n {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("expected {n} notifies, got {}", self.received().len());
        }

        /// A flow finished with `outcome` via `complete`; returns the one notify's data, checked and parsed.
        async fn run(
            &self,
            changes: &[(&str, Option<&str>)],
            outcome: PageOutcome,
        ) -> (GetTokenReply, String, LiteResult) {
            let before = self.received().len();
            let t = self.token(changes).await;
            self.sim
                .complete(&t.token, outcome)
                .await
                .expect("complete");
            let got = self.received();
            assert_eq!(got.len(), before + 1, "one notify");
            let n = got.last().unwrap().clone();
            assert_eq!(n.sign, wire::sign(API_SECRET, &n.data));
            let parsed = parse_callback_data(&n.data).expect("data parses");
            assert_eq!(parsed.biz_info.biz_id, t.biz_id);
            (t, n.data, parsed)
        }
    }

    fn assert_error(status: u16, body: &[u8], want_status: u16, want_message: &str) {
        match parse_get_token(status, body).expect("parseable") {
            Reply::Err { http_status, error } => {
                assert_eq!(
                    (http_status, error.error_message.as_str()),
                    (want_status, want_message)
                );
                let rid = error.request_id.expect("request_id");
                let (ts, uuid) = rid.split_once(',').expect("<unix>,<uuid>");
                assert!(ts.parse::<i64>().is_ok() && uuid.len() == 36, "{rid}");
                assert!(error.time_used.is_some());
            }
            Reply::Ok(r) => panic!("expected {want_message}, got {r:?}"),
        }
    }

    /// A multipart body: (name, filename, bytes).
    fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, filename, data) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body
    }

    fn jpeg() -> Vec<u8> {
        SYNTHETIC_JPEG.to_vec()
    }

    fn png() -> Vec<u8> {
        vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13]
    }

    fn unescape(s: &str) -> String {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// The value of `<input ... name="{name}" value="...">` in a page.
    fn hidden_value(html: &str, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).expect("input") + marker.len();
        let end = start + html[start..].find('"').expect("end quote");
        unescape(&html[start..end])
    }

    // -- get_token ---------------------------------------------------------------------------------------------

    #[tokio::test]
    async fn get_token_urlencoded_success() {
        let h = Harness::start().await;
        let before = h.sim.clock().now_ms() / 1000;
        let t = h
            .token(&[
                ("biz_extra_data", Some("extra {\"k\":1}")),
                ("biz_no", Some("订单-1")),
            ])
            .await;
        assert_eq!(t.token.len(), 32);
        assert!(t
            .token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let (ts, uuid) = t.biz_id.split_once(',').expect("biz_id");
        let ts: i64 = ts.parse().expect("unix");
        assert!((before..=before + 2).contains(&ts));
        assert!(uuid::Uuid::parse_str(uuid).is_ok());
        assert_eq!(t.expired_time, ts + 3600);
        assert_eq!(t.biz_no.as_deref(), Some("订单-1"));
        assert!(t.request_id.contains(','));
        // Lowercase check character accepted; optional arguments at their limits accepted.
        h.token(&[
            ("idcard_number", Some("11010519491231002x")),
            ("maximum_shooting_time", Some("60")),
            ("web_title", Some(&"t".repeat(32))),
            ("biz_extra_data", Some(&"e".repeat(4096))),
            ("biz_no", Some(&"n".repeat(128))),
            (
                "idcard_uneditable_field",
                Some("idcard_name, idcard_number,idcard_valid_date,idcard_issued_by"),
            ),
            ("procedure_type", Some("still")),
            ("procedure_priority", Some("keep")),
            ("liveness_preferences", Some("video_strict")),
            ("encryption_type", Some("2")),
            ("update_rtc", Some("1")),
            ("scene_id", Some("scene-1")),
            ("uuid", Some("user-1")),
        ])
        .await;
        h.token(&[
            ("maximum_shooting_time", Some("10")),
            ("action_http_method", Some("GET")),
        ])
        .await;
        assert_eq!(h.sim.stats().get_token, 3);

        // A fresh flow is NOT_STARTED, without the result blocks.
        let r = h.result_ok(&t.biz_id, &[]).await;
        assert_eq!(r.result.status, LiteStatus::NotStarted);
        assert_eq!(r.result.biz_info.biz_no, "订单-1");
        assert_eq!(
            r.result.biz_info.biz_extra_data.as_deref(),
            Some("extra {\"k\":1}")
        );
        assert!(r.result.idcard_info.is_none() && r.result.liveness_result.is_none());
        assert!(r.result.verify_result.is_none() && r.images.is_none());
    }

    #[tokio::test]
    async fn get_token_multipart_success_with_reference_images() {
        let h = Harness::start().await;
        let b = "----facegate-test-boundary";
        let notify = h.notify_url.clone();
        let body = multipart(
            b,
            &[
                ("api_key", None, API_KEY.as_bytes()),
                ("api_secret", None, API_SECRET.as_bytes()),
                ("return_url", None, RETURN_URL.as_bytes()),
                ("notify_url", None, notify.as_bytes()),
                ("biz_no", None, "mp-1".as_bytes()),
                ("comparison_type", None, b"0"),
                ("image_ref1", Some("ref1.jpg"), &jpeg()),
                ("image_ref2", Some("ref2.png"), &png()),
            ],
        );
        let (status, body) = h.post_multipart(body, b).await;
        let Reply::Ok(t) = parse_get_token(status, &body).expect("parseable") else {
            panic!("{}", String::from_utf8_lossy(&body))
        };
        assert_eq!(t.biz_no.as_deref(), Some("mp-1"));
        h.sim
            .complete(&t.token, PageOutcome::Pass)
            .await
            .expect("complete");
        let n = h.received();
        let r = parse_callback_data(&n[0].data).expect("data");
        let v = r.verify_result.expect("verify_result");
        assert_eq!(v.result_ref1.expect("ref1").confidence, 85.0);
        assert!(v.result_ref2.is_some() && v.result_ref3.is_none() && v.result_faceid.is_none());
        assert!(v.id_exceptions.is_none() && r.idcard_info.is_none());

        // A quoted boundary and a multipart KYC flow with the urlencoded fields.
        let b2 = "simple";
        let fields = h.fields();
        let parts: Vec<(&str, Option<&str>, &[u8])> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), None, v.as_bytes()))
            .collect();
        let resp = h
            .client
            .post(format!("{}/faceid/lite/get_token", h.base))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary=\"{b2}\""),
            )
            .body(multipart(b2, &parts))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn get_token_validation_errors() {
        let h = Harness::start().await;
        let long = |n: usize| "x".repeat(n);
        let (biz_no, title, extra) = (long(129), long(33), long(4097));
        let cases: Vec<(Changes, u16, &str)> = vec![
            (vec![("api_key", None)], 400, "MISSING_ARGUMENTS: api_key"),
            (
                vec![("api_secret", Some(""))],
                400,
                "MISSING_ARGUMENTS: api_secret",
            ),
            (
                vec![("api_key", Some("wrong"))],
                403,
                "AUTHENTICATION_ERROR",
            ),
            (
                vec![("api_secret", Some("wrong"))],
                403,
                "AUTHENTICATION_ERROR",
            ),
            (
                vec![("return_url", None)],
                400,
                "MISSING_ARGUMENTS: return_url",
            ),
            (
                vec![("return_url", Some("ftp://app.example/r"))],
                400,
                "BAD_ARGUMENTS: return_url",
            ),
            (
                vec![("notify_url", None)],
                400,
                "MISSING_ARGUMENTS: notify_url",
            ),
            (
                vec![("notify_url", Some("not a url"))],
                400,
                "BAD_ARGUMENTS: notify_url",
            ),
            (
                vec![("notify_url", Some("http://h.example:99999/n"))],
                400,
                "BAD_ARGUMENTS: notify_url",
            ),
            (vec![("biz_no", None)], 400, "MISSING_ARGUMENTS: biz_no"),
            (
                vec![("biz_no", Some(&biz_no))],
                400,
                "BAD_ARGUMENTS: biz_no",
            ),
            (
                vec![("comparison_type", None)],
                400,
                "MISSING_ARGUMENTS: comparison_type",
            ),
            (
                vec![("comparison_type", Some("2"))],
                400,
                "BAD_ARGUMENTS: comparison_type",
            ),
            (
                vec![("idcard_mode", None)],
                400,
                "MISSING_ARGUMENTS: idcard_mode",
            ),
            (
                vec![("idcard_mode", Some("5"))],
                400,
                "BAD_ARGUMENTS: idcard_mode",
            ),
            (
                vec![("idcard_name", None)],
                400,
                "MISSING_ARGUMENTS: idcard_name",
            ),
            (
                vec![("idcard_number", None)],
                400,
                "MISSING_ARGUMENTS: idcard_number",
            ),
            // Wrong check character (…0014 is right), 17 and 19 characters, letters.
            (
                vec![("idcard_number", Some("110101190001010015"))],
                400,
                "BAD_ARGUMENTS: idcard_number",
            ),
            (
                vec![("idcard_number", Some("11010119000101001"))],
                400,
                "BAD_ARGUMENTS: idcard_number",
            ),
            (
                vec![("idcard_number", Some("1101011900010100144"))],
                400,
                "BAD_ARGUMENTS: idcard_number",
            ),
            (
                vec![("idcard_number", Some("11010119000101001A"))],
                400,
                "BAD_ARGUMENTS: idcard_number",
            ),
            // With idcard_mode 1 the number is optional but still checked when given.
            (
                vec![
                    ("idcard_mode", Some("1")),
                    ("idcard_number", Some("110101190001010015")),
                ],
                400,
                "BAD_ARGUMENTS: idcard_number",
            ),
            (
                vec![("comparison_type", Some("0"))],
                400,
                "MISSING_ARGUMENTS: image_ref1",
            ),
            // In a urlencoded body image_ref1 is only text: still missing.
            (
                vec![
                    ("comparison_type", Some("0")),
                    ("image_ref1", Some("/9j/4AAQ")),
                ],
                400,
                "MISSING_ARGUMENTS: image_ref1",
            ),
            (
                vec![("procedure_type", Some("face"))],
                400,
                "BAD_ARGUMENTS: procedure_type",
            ),
            (
                vec![("procedure_priority", Some("selfie"))],
                400,
                "BAD_ARGUMENTS: procedure_priority",
            ),
            (
                vec![("liveness_preferences", Some("strict"))],
                400,
                "BAD_ARGUMENTS: liveness_preferences",
            ),
            (
                vec![("web_title", Some(&title))],
                400,
                "BAD_ARGUMENTS: web_title",
            ),
            (
                vec![("biz_extra_data", Some(&extra))],
                400,
                "BAD_ARGUMENTS: biz_extra_data",
            ),
            (
                vec![("idcard_uneditable_field", Some("idcard_name,idcard_photo"))],
                400,
                "BAD_ARGUMENTS: idcard_uneditable_field",
            ),
            (
                vec![("get_fail_reason", Some("2"))],
                400,
                "BAD_ARGUMENTS: get_fail_reason",
            ),
            (
                vec![("return_multifaces_tag", Some("yes"))],
                400,
                "BAD_ARGUMENTS: return_multifaces_tag",
            ),
            (
                vec![("action_http_method", Some("PUT"))],
                400,
                "BAD_ARGUMENTS: action_http_method",
            ),
            (
                vec![("maximum_shooting_time", Some("9"))],
                400,
                "BAD_ARGUMENTS: maximum_shooting_time",
            ),
            (
                vec![("maximum_shooting_time", Some("61"))],
                400,
                "BAD_ARGUMENTS: maximum_shooting_time",
            ),
            (
                vec![("maximum_shooting_time", Some("+20"))],
                400,
                "BAD_ARGUMENTS: maximum_shooting_time",
            ),
            (
                vec![("multi_oriented_detection", Some("2"))],
                400,
                "BAD_ARGUMENTS: multi_oriented_detection",
            ),
            (
                vec![("fmp_mode", Some("x"))],
                400,
                "BAD_ARGUMENTS: fmp_mode",
            ),
            (
                vec![("get_shooting_error", Some("true"))],
                400,
                "BAD_ARGUMENTS: get_shooting_error",
            ),
            (
                vec![("update_rtc", Some("-1"))],
                400,
                "BAD_ARGUMENTS: update_rtc",
            ),
            (
                vec![("encryption_type", Some("3"))],
                400,
                "BAD_ARGUMENTS: encryption_type",
            ),
        ];
        for (changes, status, message) in &cases {
            let (s, body) = h.post_token(&h.with(changes)).await;
            assert_error(s, &body, *status, message);
        }
        // Not form data at all.
        let resp = h
            .client
            .post(format!("{}/faceid/lite/get_token", h.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        assert_error(
            status,
            &resp.bytes().await.unwrap(),
            400,
            "BAD_ARGUMENTS: Content-Type",
        );
        assert_eq!(h.sim.stats().get_token, cases.len() as u64 + 1);
        assert!(h.sim.lock().flows.is_empty(), "no flow was created");
    }

    #[tokio::test]
    async fn get_token_image_ref_checks() {
        let h = Harness::start().await;
        let b = "xYz";
        let notify = h.notify_url.clone();
        let base: Vec<(&str, Option<&str>, &[u8])> = vec![
            ("api_key", None, API_KEY.as_bytes()),
            ("api_secret", None, API_SECRET.as_bytes()),
            ("return_url", None, RETURN_URL.as_bytes()),
            ("notify_url", None, notify.as_bytes()),
            ("biz_no", None, b"img-1"),
            ("comparison_type", None, b"0"),
        ];
        let gif: &[u8] = b"GIF89a\x01\x00\x01\x00";
        let jpg = jpeg();
        let with = |extra: Vec<(&'static str, Option<&'static str>, &[u8])>| {
            let mut parts = base.clone();
            parts.extend(extra);
            multipart(b, &parts)
        };
        let (s, body) = h
            .post_multipart(with(vec![("image_ref1", Some("a.gif"), gif)]), b)
            .await;
        assert_error(s, &body, 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT: image_ref1");
        let (s, body) = h
            .post_multipart(with(vec![("image_ref1", Some("a.jpg"), b"")]), b)
            .await;
        assert_error(s, &body, 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT: image_ref1");
        let (s, body) = h
            .post_multipart(
                with(vec![
                    ("image_ref1", Some("a.jpg"), &jpg),
                    ("image_ref2", Some("b.txt"), b"hello"),
                ]),
                b,
            )
            .await;
        assert_error(s, &body, 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT: image_ref2");
        // A text part (no filename) is not a file.
        let (s, body) = h
            .post_multipart(with(vec![("image_ref1", None, b"/9j/4AAQ")]), b)
            .await;
        assert_error(s, &body, 400, "MISSING_ARGUMENTS: image_ref1");
        // A text part that is not UTF-8.
        let (s, body) = h
            .post_multipart(with(vec![("image_ref1", None, &jpg)]), b)
            .await;
        assert_error(s, &body, 400, "BAD_ARGUMENTS: image_ref1");
        // Malformed multipart: no close delimiter, wrong boundary.
        let mut truncated = with(vec![("image_ref1", Some("a.jpg"), &jpg)]);
        truncated.truncate(truncated.len() - 10);
        let (s, body) = h.post_multipart(truncated, b).await;
        assert_error(s, &body, 400, "BAD_ARGUMENTS: multipart");
        let (s, body) = h
            .post_multipart(with(vec![("image_ref1", Some("a.jpg"), &jpg)]), "other")
            .await;
        assert_error(s, &body, 400, "BAD_ARGUMENTS: multipart");
        // And the good one.
        let (s, body) = h
            .post_multipart(with(vec![("image_ref1", Some("a.jpg"), &jpg)]), b)
            .await;
        assert!(matches!(parse_get_token(s, &body).unwrap(), Reply::Ok(_)));
    }

    #[tokio::test]
    async fn notify_ports_enforced_when_enabled() {
        let h = Harness::start_with(config(true)).await;
        for (url, ok) in [
            ("http://127.0.0.1:8080/notify", false),
            ("http://notify.example/n", false),
            ("https://notify.example:444/n", false),
            ("https://notify.example/n", true),
            ("http://notify.example:5000/n", true),
            ("https://[::1]:16003/n", true),
            ("http://user@notify.example:8883/n?x=1", true),
            ("https://notify.example:8028", true),
        ] {
            let (s, body) = h.post_token(&h.with(&[("notify_url", Some(url))])).await;
            if ok {
                assert!(
                    matches!(parse_get_token(s, &body).unwrap(), Reply::Ok(_)),
                    "{url}"
                );
            } else {
                assert_error(s, &body, 400, "BAD_ARGUMENTS: notify_url");
            }
        }
        // Not enforced: the test receiver's arbitrary port is fine.
        let h = Harness::start().await;
        h.token(&[("notify_url", Some("http://127.0.0.1:8080/notify"))])
            .await;
    }

    #[tokio::test]
    async fn concurrency_limit_injection() {
        let h = Harness::start().await;
        h.sim.inject_concurrency_limit(2);
        for _ in 0..2 {
            let (s, body) = h.post_token(&h.fields()).await;
            assert_error(s, &body, 403, "CONCURRENCY_LIMIT_EXCEEDED");
        }
        h.token(&[]).await;
        assert_eq!(h.sim.stats().get_token, 3);
    }

    // -- page ----------------------------------------------------------------------------------------------------

    #[tokio::test]
    async fn page_renders_buttons_and_starts_processing() {
        let h = Harness::start().await;
        let t = h
            .token(&[
                ("web_title", Some("<b>T&C</b>")),
                ("biz_no", Some("a\"<x>")),
            ])
            .await;
        let (status, html) = h.page(&t.token).await;
        assert_eq!(status, 200);
        assert!(html.contains("<title>facegate sandbox — Megvii FaceID Lite</title>"));
        assert!(html.contains(r#"<form method="post" action="do">"#));
        assert!(html.contains(&format!(
            r#"<input type="hidden" name="token" value="{}">"#,
            t.token
        )));
        for o in PageOutcome::ALL {
            let button = format!(r#"name="outcome" value="{0}" id="{0}""#, o.as_str());
            assert!(html.contains(&button), "{button}");
        }
        assert!(html.contains("&lt;b&gt;T&amp;C&lt;/b&gt;") && !html.contains("<b>T&C"));
        assert!(html.contains("a&quot;&lt;x&gt;"));
        assert!(!html.contains("{{") && !html.contains("src=") && !html.contains("href="));
        assert!(!html.contains(ID_NO) && !html.contains(NAME));
        assert_eq!(
            h.result_ok(&t.biz_id, &[]).await.result.status,
            LiteStatus::Processing
        );
        // Reopening keeps PROCESSING.
        assert_eq!(h.page(&t.token).await.0, 200);
        let (status, html) = h.page("0123456789abcdef0123456789abcdef").await;
        assert_eq!(status, 404);
        assert!(html.contains("id=\"error\""));
        assert_eq!(h.sim.stats().page_views, 3);
    }

    #[tokio::test]
    async fn token_lives_one_hour_and_is_single_use() {
        let h = Harness::start().await;
        let t = h.token(&[]).await;
        h.sim.clock().advance(HOUR - Duration::from_secs(1));
        assert_eq!(h.page(&t.token).await.0, 200);
        h.sim.clock().advance(Duration::from_secs(1));
        let (status, html) = h.page(&t.token).await;
        assert_eq!(status, 410);
        assert!(html.contains("id=\"error\""));
        assert!(h.sim.complete(&t.token, PageOutcome::Pass).await.is_err());
        assert!(h
            .submit(&t.token, "pass")
            .await
            .text()
            .await
            .unwrap()
            .contains("id=\"error\""));
        assert!(h.received().is_empty());

        let t = h.token(&[]).await;
        h.sim
            .complete(&t.token, PageOutcome::Pass)
            .await
            .expect("first use");
        let (status, html) = h.page(&t.token).await;
        assert_eq!(status, 410);
        assert!(html.contains("id=\"error\""));
        assert!(h.sim.complete(&t.token, PageOutcome::Cancel).await.is_err());
        let resp = h.submit(&t.token, "cancel").await;
        assert_eq!(resp.status().as_u16(), 410);
        assert_eq!(h.received().len(), 1);
        assert_eq!(
            h.result_ok(&t.biz_id, &[]).await.result.status,
            LiteStatus::Ok
        );
        // Unknown outcome.
        let t = h.token(&[]).await;
        let resp = h.submit(&t.token, "explode").await;
        assert_eq!(resp.status().as_u16(), 400);
        assert!(resp.text().await.unwrap().contains("id=\"error\""));
    }

    // -- results -------------------------------------------------------------------------------------------------

    #[tokio::test]
    async fn outcome_data_shapes_kyc_given_identity() {
        let h = Harness::start().await;
        let extra = [("biz_extra_data", Some("ctx-42"))];
        let (_, text, r) = h.run(&extra, PageOutcome::Pass).await;
        assert_eq!(r.status, LiteStatus::Ok);
        assert_eq!(r.biz_info.biz_no, "order-0001");
        assert_eq!(r.biz_info.biz_extra_data.as_deref(), Some("ctx-42"));
        assert_eq!(r.liveness_result.as_ref().unwrap().result, "PASS");
        assert_eq!(
            r.liveness_result
                .as_ref()
                .unwrap()
                .procedure_type
                .as_deref(),
            Some("video")
        );
        let v = r.verify_result.as_ref().unwrap();
        assert!(text.contains(r#""error_message":null"#), "{text}");
        assert!(v.error_message.is_none() && v.verify_time.is_some());
        let c = v.result_faceid.as_ref().unwrap();
        assert_eq!(c.confidence, 85.0);
        let thresholds: Vec<(&str, f64)> =
            c.thresholds.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            thresholds,
            [
                ("1e-3", 62.169),
                ("1e-4", 69.315),
                ("1e-5", 74.399),
                ("1e-6", 78.038)
            ]
        );
        assert!(v.result_ref1.is_none() && v.id_exceptions.is_some());
        assert!(r.idcard_info.is_none(), "idcard_mode 0 has no idcard_info");
        assert!(r.will_result.is_none() && r.multifaces_tag.is_none() && r.fail_reason.is_none());
        assert!(!text.contains(NAME) && !text.contains(ID_NO));

        let (_, _, r) = h.run(&[], PageOutcome::FaceMismatch).await;
        assert_eq!(r.status, LiteStatus::Ok);
        assert_eq!(
            r.verify_result.unwrap().result_faceid.unwrap().confidence,
            30.0
        );

        let (_, _, r) = h.run(&[], PageOutcome::LivenessFailed).await;
        assert_eq!(r.status, LiteStatus::Failed);
        assert_eq!(r.liveness_result.unwrap().result, "FAIL");
        assert!(r.verify_result.is_none());

        for (outcome, message) in [
            (PageOutcome::IdNameMismatch, "ID_NUMBER_NAME_NOT_MATCH"),
            (PageOutcome::NoSuchIdNumber, "NO_SUCH_ID_NUMBER"),
        ] {
            let (_, _, r) = h.run(&[], outcome).await;
            assert_eq!(r.status, LiteStatus::Ok);
            assert_eq!(r.liveness_result.unwrap().result, "PASS");
            let v = r.verify_result.unwrap();
            assert_eq!(v.error_message.as_deref(), Some(message));
            assert!(v.result_faceid.is_none());
        }

        for (outcome, status) in [
            (PageOutcome::Cancel, LiteStatus::Cancelled),
            (PageOutcome::Timeout, LiteStatus::Timeout),
            (
                PageOutcome::WebrtcUnsupported,
                LiteStatus::WebrtcUnsupported,
            ),
        ] {
            let (_, _, r) = h.run(&[("idcard_mode", Some("2"))], outcome).await;
            assert_eq!(r.status, status);
            assert!(
                r.idcard_info.is_none() && r.verify_result.is_none(),
                "{outcome}"
            );
            assert!(r.fail_reason.is_none());
            match outcome {
                PageOutcome::Timeout => assert_eq!(r.liveness_result.unwrap().result, "TIMEOUT"),
                _ => assert!(r.liveness_result.is_none()),
            }
        }
        let (_, _, r) = h
            .run(
                &[("get_fail_reason", Some("1"))],
                PageOutcome::WebrtcUnsupported,
            )
            .await;
        assert_eq!(r.fail_reason.as_deref(), Some("WEBRTC_UNSUPPORTED"));
        let (_, _, r) = h
            .run(&[("get_fail_reason", Some("1"))], PageOutcome::Cancel)
            .await;
        assert!(r.fail_reason.is_none());
    }

    #[tokio::test]
    async fn outcome_data_shapes_ocr_will_and_multifaces() {
        let h = Harness::start().await;
        let mode1 = [
            ("idcard_mode", Some("1")),
            ("idcard_name", None),
            ("idcard_number", None),
        ];
        let (_, _, r) = h.run(&mode1, PageOutcome::Pass).await;
        let id = r.idcard_info.expect("idcard_info");
        assert_eq!(id.idcard_mode.unwrap().as_text(), "1");
        assert_eq!(id.idcard_name.as_deref(), Some("沙箱用户"));
        assert_eq!(id.idcard_number.as_deref(), Some("110101190001010014"));
        let front = id.front_side.unwrap().ocr_result.unwrap();
        assert_eq!(front.id_card_number.as_deref(), Some("110101190001010014"));
        assert_eq!(front.birthday.unwrap().year.as_text(), "1900");
        assert!(id.back_side.is_none());

        let mode2 = [
            ("idcard_mode", Some("2")),
            ("idcard_uneditable_field", Some("idcard_number")),
        ];
        let (_, _, r) = h.run(&mode2, PageOutcome::LivenessFailed).await;
        let id = r.idcard_info.expect("idcard_info");
        assert_eq!(id.idcard_uneditable_field.as_deref(), Some("idcard_number"));
        assert!(id.front_side.is_some());
        let back = id.back_side.unwrap().ocr_result.unwrap();
        assert!(back.issued_by.is_some() && back.valid_date.is_some());

        let (_, _, r) = h
            .run(&[("idcard_mode", Some("3"))], PageOutcome::Pass)
            .await;
        let id = r.idcard_info.expect("typed identity");
        assert!(id.front_side.is_none() && id.idcard_number.is_some());

        let will = [
            ("procedure_type", Some("will")),
            ("return_multifaces_tag", Some("1")),
        ];
        let (_, text, r) = h.run(&will, PageOutcome::Pass).await;
        assert!(text.contains(r#""multifaces_tag":"0""#), "{text}");
        assert_eq!(
            r.liveness_result.unwrap().procedure_type.as_deref(),
            Some("will")
        );
        let w = r.will_result.expect("will_result");
        assert_eq!(
            (w[0].result.as_str(), w[0].will_error_message.as_deref()),
            ("PASS", Some(""))
        );
        let (_, _, r) = h.run(&will, PageOutcome::LivenessFailed).await;
        let w = r.will_result.expect("will_result");
        assert_eq!(
            (w[0].result.as_str(), w[0].will_error_message.as_deref()),
            ("FAIL", Some("ACTION_FAIL"))
        );
        let (_, _, r) = h.run(&will, PageOutcome::Cancel).await;
        assert!(r.will_result.is_none());
        assert_eq!(r.multifaces_tag.unwrap().as_text(), "0");
    }

    // -- notify and faults ---------------------------------------------------------------------------------------

    #[tokio::test]
    async fn notify_signed_and_counted() {
        let h = Harness::start().await;
        let (t, data, _) = h.run(&[], PageOutcome::Pass).await;
        let n = &h.received()[0];
        assert_eq!(n.data, data);
        assert_eq!(n.sign.len(), 40);
        assert_eq!(n.sign, wire::sign(API_SECRET, &data));
        assert_ne!(n.sign, wire::sign("other", &data));
        assert_eq!(h.sim.stats().notify_sent, 1);
        assert_eq!(h.sim.stats().notify_failed, 0);

        // A notify_url nobody listens on counts as failed.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = format!("http://{}/notify", closed.local_addr().unwrap());
        drop(closed);
        let t2 = h.token(&[("notify_url", Some(&dead))]).await;
        h.sim.complete(&t2.token, PageOutcome::Pass).await.unwrap();
        assert_eq!(h.sim.stats().notify_failed, 1);
        assert_eq!(h.sim.stats().notify_sent, 1);
        assert_ne!(t.biz_id, t2.biz_id);
    }

    #[tokio::test]
    async fn callback_faults() {
        let h = Harness::start().await;

        // Duplicate: two identical, valid notifies.
        h.sim.set_fault(CallbackFault::Duplicate);
        let t = h.token(&[]).await;
        h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
        let got = h.received();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].data.as_str(), got[0].sign.as_str()),
            (got[1].data.as_str(), got[1].sign.as_str())
        );
        assert_eq!(got[0].sign, wire::sign(API_SECRET, &got[0].data));

        // The fault applied once: the next flow has one notify.
        let t = h.token(&[]).await;
        h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
        assert_eq!(h.received().len(), 3);

        // Forged: the data is genuine, the sign is not.
        h.sim.set_fault(CallbackFault::Forged);
        let t = h.token(&[]).await;
        let done = h
            .sim
            .complete(&t.token, PageOutcome::FaceMismatch)
            .await
            .unwrap();
        let n = h.received().last().unwrap().clone();
        assert_ne!(n.sign, wire::sign(API_SECRET, &n.data));
        assert_eq!(
            parse_callback_data(&n.data).unwrap().biz_info.biz_id,
            t.biz_id
        );
        // The browser's copy is genuine.
        let form: BTreeMap<_, _> = done.form.iter().cloned().collect();
        assert_eq!(form["data"], n.data);
        assert_eq!(form["sign"], wire::sign(API_SECRET, &form["data"]));

        // Tampered: data changed after signing (a cancelled flow now claims OK with a high score).
        h.sim.set_fault(CallbackFault::Tampered);
        let t = h.token(&[]).await;
        let done = h.sim.complete(&t.token, PageOutcome::Cancel).await.unwrap();
        let n = h.received().last().unwrap().clone();
        assert_ne!(n.sign, wire::sign(API_SECRET, &n.data));
        let genuine = &done.form[0].1;
        assert_eq!(n.sign, wire::sign(API_SECRET, genuine));
        let tampered = parse_callback_data(&n.data).unwrap();
        assert_eq!(tampered.status, LiteStatus::Ok);
        assert_eq!(
            tampered
                .verify_result
                .unwrap()
                .result_faceid
                .unwrap()
                .confidence,
            99.9
        );
        assert_eq!(
            h.result_ok(&t.biz_id, &[]).await.result.status,
            LiteStatus::Cancelled
        );

        // Never: no notify, the flow is still finished.
        h.sim.set_fault(CallbackFault::Never);
        let before = h.received().len();
        let t = h.token(&[]).await;
        h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
        assert_eq!(h.received().len(), before);
        assert_eq!(
            h.result_ok(&t.biz_id, &[]).await.result.status,
            LiteStatus::Ok
        );

        // Reordered: the final notify, then a validly signed stale PROCESSING one.
        h.sim.set_fault(CallbackFault::Reordered);
        let t = h.token(&[]).await;
        h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
        let got = h.received();
        assert_eq!(got.len(), before + 2);
        let (first, second) = (&got[before], &got[before + 1]);
        for n in [first, second] {
            assert_eq!(n.sign, wire::sign(API_SECRET, &n.data));
        }
        assert_eq!(
            parse_callback_data(&first.data).unwrap().status,
            LiteStatus::Ok
        );
        let stale = parse_callback_data(&second.data).unwrap();
        assert_eq!(stale.status, LiteStatus::Processing);
        assert_eq!(stale.biz_info.biz_id, t.biz_id);
        assert!(stale.verify_result.is_none());
        assert!(first.at <= second.at);

        // Late: after the delay.
        h.sim
            .set_fault(CallbackFault::Late(Duration::from_millis(300)));
        let t = h.token(&[]).await;
        let started = Instant::now();
        h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
        let got = h.received();
        assert_eq!(got.len(), before + 3);
        assert!(got.last().unwrap().at.duration_since(started) >= Duration::from_millis(300));
        assert_eq!(h.sim.stats().notify_sent, got.len() as u64);
    }

    // -- browser return --------------------------------------------------------------------------------------

    #[test]
    fn biz_id_is_appended_before_the_fragment() {
        let id = "1462259748,52b13fb5-8dfb-4537-a62b-a641d5e929f1";
        let enc = "1462259748%2C52b13fb5-8dfb-4537-a62b-a641d5e929f1";
        for (url, want) in [
            (
                "https://d.example/xxx",
                format!("https://d.example/xxx?biz_id={enc}"),
            ),
            (
                "https://d.example/xxx?xxx=1",
                format!("https://d.example/xxx?xxx=1&biz_id={enc}"),
            ),
            (
                "https://d.example/xxx?xxx=1#frag",
                format!("https://d.example/xxx?xxx=1&biz_id={enc}#frag"),
            ),
            (
                "https://d.example/xxx#/a?b=c",
                format!("https://d.example/xxx?biz_id={enc}#/a?b=c"),
            ),
            (
                "https://d.example/xxx?",
                format!("https://d.example/xxx?biz_id={enc}"),
            ),
            (
                "https://d.example/xxx?a=1&",
                format!("https://d.example/xxx?a=1&biz_id={enc}"),
            ),
        ] {
            assert_eq!(append_biz_id(url, id), want, "{url}");
        }
    }

    #[tokio::test]
    async fn get_return_redirects_with_biz_id() {
        let h = Harness::start().await;
        let url = "https://app.example/r?x=1#/done";
        let get = [
            ("action_http_method", Some("GET")),
            ("return_url", Some(url)),
        ];
        let t = h.token(&get).await;
        let done = h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
        assert_eq!(done.return_method, "GET");
        assert!(done.form.is_empty());
        let enc: String = form_urlencoded::byte_serialize(t.biz_id.as_bytes()).collect();
        assert_eq!(
            done.return_url,
            format!("https://app.example/r?x=1&biz_id={enc}#/done")
        );

        // Through the page.
        let t = h.token(&get).await;
        assert_eq!(h.page(&t.token).await.0, 200);
        let resp = h.submit(&t.token, "pass").await;
        assert_eq!(resp.status().as_u16(), 303);
        let location = resp.headers()[reqwest::header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        let enc: String = form_urlencoded::byte_serialize(t.biz_id.as_bytes()).collect();
        assert_eq!(
            location,
            format!("https://app.example/r?x=1&biz_id={enc}#/done")
        );
        // The notify is sent in the background.
        let got = h.wait_for(2).await;
        let last = parse_callback_data(&got[1].data).unwrap();
        assert_eq!(last.biz_info.biz_id, t.biz_id);
    }

    #[tokio::test]
    async fn post_return_page_carries_the_signed_form() {
        let h = Harness::start().await;
        let url = "https://app.example/r?a=1&b=\"2\"";
        let t = h.token(&[("return_url", Some(url))]).await;
        let resp = h.submit(&t.token, "face_mismatch").await;
        assert_eq!(resp.status().as_u16(), 200);
        let csp = resp.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'unsafe-inline'"));
        let html = resp.text().await.unwrap();
        assert!(html.contains(r#"<form id="return" method="post" action="https://app.example/r?a=1&amp;b=&quot;2&quot;">"#), "{html}");
        assert!(html.contains("<noscript><button type=\"submit\">"));
        assert!(html.contains("<script>document.getElementById('return').submit()</script>"));
        let data = hidden_value(&html, "data");
        let sign = hidden_value(&html, "sign");
        assert_eq!(sign, wire::sign(API_SECRET, &data));
        let r = parse_callback_data(&data).unwrap();
        assert_eq!(
            r.verify_result.unwrap().result_faceid.unwrap().confidence,
            30.0
        );
        let got = h.wait_for(1).await;
        assert_eq!(
            (got[0].data.as_str(), got[0].sign.as_str()),
            (data.as_str(), sign.as_str())
        );

        let t = h.token(&[]).await;
        let done = h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
        assert_eq!(done.return_method, "POST");
        assert_eq!(done.return_url, RETURN_URL);
        let names: Vec<&str> = done.form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["data", "sign"]);
    }

    // -- get_result ----------------------------------------------------------------------------------------------

    #[tokio::test]
    async fn get_result_shapes_images_and_call_cap() {
        let h = Harness::start().await;
        let (t, _, _) = h
            .run(&[("idcard_mode", Some("2"))], PageOutcome::Pass)
            .await;
        let r = h
            .result_ok(
                &t.biz_id,
                &[("return_image", "4"), ("return_verify_time", "1")],
            )
            .await;
        assert_eq!(r.result.status, LiteStatus::Ok);
        assert!(r.request_id.as_deref().is_some_and(|id| id.contains(',')));
        assert!(r.time_used.is_some());
        assert!(r
            .result
            .verify_result
            .as_ref()
            .unwrap()
            .verify_time
            .is_some());
        assert!(r.result.idcard_info.is_some() && r.result.liveness_result.is_some());
        let images = r.images.expect("images");
        for uri in [
            &images.image_best,
            &images.image_idcard_front,
            &images.image_idcard_back,
        ] {
            let uri = uri.as_deref().expect("image");
            assert!(uri.starts_with("data:image/jpeg;base64,"));
            assert!(decode_data_uri_jpeg(uri)
                .unwrap()
                .starts_with(&[0xFF, 0xD8, 0xFF]));
        }
        let r = h.result_ok(&t.biz_id, &[("return_image", "0")]).await;
        assert!(r.images.is_none());
        assert!(r.result.verify_result.unwrap().verify_time.is_none());
        let r = h.result_ok(&t.biz_id, &[("return_image", "3")]).await;
        let images = r.images.expect("images");
        assert!(images.image_best.is_none() && images.image_idcard_front.is_none());
        assert!(images.image_idcard_back.is_some());
        // The fourth call is refused.
        match h.get_result(&t.biz_id, &[]).await {
            Reply::Err { http_status, error } => {
                assert_eq!(
                    (http_status, error.error_message.as_str()),
                    (400, "BAD_ARGUMENTS: biz_id")
                )
            }
            Reply::Ok(_) => panic!("fourth call answered"),
        }

        // Images only for status OK; only what the mode shot.
        let (t, _, _) = h
            .run(&[("idcard_mode", Some("2"))], PageOutcome::LivenessFailed)
            .await;
        let r = h.result_ok(&t.biz_id, &[("return_image", "4")]).await;
        assert_eq!(r.result.status, LiteStatus::Failed);
        assert!(r.images.is_none());
        let (t, _, _) = h.run(&[], PageOutcome::Pass).await;
        let r = h.result_ok(&t.biz_id, &[("return_image", "2")]).await;
        assert!(r.images.is_none(), "idcard_mode 0 shot no card");
        let r = h.result_ok(&t.biz_id, &[("return_image", "1")]).await;
        assert!(r.images.unwrap().image_best.is_some());

        // Errors.
        let cases: [(Query, u16, &str); 7] = [
            (
                vec![("api_secret", API_SECRET), ("biz_id", &t.biz_id)],
                400,
                "MISSING_ARGUMENTS: api_key",
            ),
            (
                vec![
                    ("api_key", API_KEY),
                    ("api_secret", "nope"),
                    ("biz_id", &t.biz_id),
                ],
                403,
                "AUTHENTICATION_ERROR",
            ),
            (
                vec![("api_key", API_KEY), ("api_secret", API_SECRET)],
                400,
                "MISSING_ARGUMENTS: biz_id",
            ),
            (
                vec![
                    ("api_key", API_KEY),
                    ("api_secret", API_SECRET),
                    ("biz_id", "1,nope"),
                ],
                400,
                "RESULT_NOT_FOUND",
            ),
            (
                vec![
                    ("api_key", API_KEY),
                    ("api_secret", API_SECRET),
                    ("biz_id", &t.biz_id),
                    ("return_image", "7"),
                ],
                400,
                "BAD_ARGUMENTS: return_image",
            ),
            (
                vec![
                    ("api_key", API_KEY),
                    ("api_secret", API_SECRET),
                    ("biz_id", &t.biz_id),
                    ("return_image", "01"),
                ],
                400,
                "BAD_ARGUMENTS: return_image",
            ),
            (
                vec![
                    ("api_key", API_KEY),
                    ("api_secret", API_SECRET),
                    ("biz_id", &t.biz_id),
                    ("return_verify_time", "2"),
                ],
                400,
                "BAD_ARGUMENTS: return_verify_time",
            ),
        ];
        for (query, status, message) in &cases {
            let (s, body) = h.get_result_raw(query).await;
            assert_error(s, &body, *status, message);
        }
        // Those did not use up the flow's calls (two used so far).
        assert!(matches!(h.get_result(&t.biz_id, &[]).await, Reply::Ok(_)));
        assert_eq!(
            h.sim.stats().get_result,
            3 + 1 + 1 + 2 + cases.len() as u64 + 1
        );
    }

    #[tokio::test]
    async fn results_kept_one_day() {
        let h = Harness::start().await;
        let (done, _, _) = h.run(&[], PageOutcome::Pass).await;
        let pending = h.token(&[]).await;
        h.sim.clock().advance(DAY - Duration::from_secs(1));
        assert_eq!(
            h.result_ok(&done.biz_id, &[]).await.result.status,
            LiteStatus::Ok
        );
        // The unfinished flow (its token long expired) still reports NOT_STARTED.
        assert_eq!(
            h.result_ok(&pending.biz_id, &[]).await.result.status,
            LiteStatus::NotStarted
        );
        h.sim.clock().advance(Duration::from_secs(2));
        for biz_id in [&done.biz_id, &pending.biz_id] {
            match h.get_result(biz_id, &[]).await {
                Reply::Err { http_status, error } => {
                    assert_eq!(
                        (http_status, error.error_message.as_str()),
                        (400, "RESULT_NOT_FOUND")
                    )
                }
                Reply::Ok(r) => panic!("kept past a day: {r:?}"),
            }
        }
    }

    #[tokio::test]
    async fn unknown_paths_answer_api_not_found() {
        let h = Harness::start().await;
        let resp = h
            .client
            .get(format!("{}/faceid/lite/nope", h.base))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_error(status, &resp.bytes().await.unwrap(), 404, "API_NOT_FOUND");
    }

    // -- units -----------------------------------------------------------------------------------------------

    #[test]
    fn multipart_parser_is_strict() {
        let ok = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b\r\n\
                   content-disposition: form-data; name=\"f\"; filename=\"x;\\\"y.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\
                   \xff\xd8\r\n\r\n--b--";
        let parts = parse_multipart(ok, "b").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].data.as_slice()),
            ("a", b"1".as_slice())
        );
        assert_eq!(parts[1].filename.as_deref(), Some("x;\"y.jpg"));
        assert_eq!(parts[1].data, b"\xff\xd8\r\n");
        for bad in [
            b"preamble\r\n--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--"
                .as_slice(),
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b",
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--junk",
            b"--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\n1\r\n--b--",
            b"--b\r\nContent-Disposition: form-data\r\n\r\n1\r\n--b--",
            b"--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--b--",
            b"--b\r\nX-Other: 1\r\n\r\n1\r\n--b--",
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n1\r\n--b--",
        ] {
            assert!(
                parse_multipart(bad, "b").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            multipart_boundary("multipart/form-data; charset=utf-8; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(multipart_boundary("multipart/form-data"), None);
        assert_eq!(multipart_boundary("multipart/form-data; boundary="), None);
        assert_eq!(
            multipart_boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            None
        );
    }

    #[test]
    fn urls_ids_and_outcomes() {
        assert_eq!(parse_http_url("https://a.example/x"), Some(443));
        assert_eq!(parse_http_url("HTTP://a.example"), Some(80));
        assert_eq!(parse_http_url("http://a.example:5000?x"), Some(5000));
        assert_eq!(parse_http_url("http://[::1]:8028/"), Some(8028));
        assert_eq!(parse_http_url("http://[::1]/"), Some(80));
        for bad in [
            "a.example/x",
            "javascript:alert(1)",
            "http://",
            "http://:80/",
            "http://a:0/",
            "http://a:x/",
            "http://a b/",
            "http://a/\n",
        ] {
            assert_eq!(parse_http_url(bad), None, "{bad}");
        }
        assert!(valid_id_number("110101190001010014"));
        assert!(valid_id_number("11010519491231002x"));
        assert!(!valid_id_number("110101190001010013"));
        assert!(!valid_id_number("１１0101190001010014"));
        for o in PageOutcome::ALL {
            assert_eq!(PageOutcome::parse(o.as_str()), Some(o));
            assert_eq!(o.to_string().parse::<PageOutcome>(), Ok(o));
        }
        assert_eq!(PageOutcome::parse("abandon"), None);
        assert_eq!(CallbackFault::default(), CallbackFault::None);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!("{:?}", config(true));
        assert!(!text.contains(API_KEY) && !text.contains(API_SECRET));
        crate::app::install_crypto_provider();
        let sim = MegviiSimulator::new(config(false), SimClock::new());
        assert!(!format!("{sim:?}").contains(API_SECRET));
    }
}
