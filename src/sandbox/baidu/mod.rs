//! In-process simulator of the Baidu AI H5 人脸实名认证 (faceprint) solution.
//!
//! Follows baidu-faceprint-h5-api.txt and FACTS.md §1 / §5 "Baidu". It is mounted under [`MOUNT`]; every route below
//! is relative to that prefix:
//! - `GET|POST /oauth/2.0/token?grant_type=client_credentials&client_id=..&client_secret=..` — access tokens
//!   (30 days on the [`SimClock`]; a new token never revokes older ones).
//! - `POST /rpc/2.0/brain/solution/faceprint/<path>?access_token=..`, `<path>` one of `verifyToken/generate`,
//!   `idcard/submit`, `uploadMatchImage`, `result/simple`, `result/detail`, `result/stat`, `result/media/query`,
//!   `result/getall`; `application/json` bodies, HTTP 200 for every answer.
//! - `GET /face/print/?token=..&successUrl=..&failedUrl=..` — the sandbox H5 page (`baidu_page.html`), and
//!   `POST /face/print/submit` — its form: records the attempt, then `303` to successUrl / failedUrl unchanged.
//!   (`GET /face/print` redirects to `/face/print/` so that the form's relative action resolves.)
//! - `GET /solution/faceprint/image/query?verify_token=..` and `GET /media/<file>` — small synthetic media.
//!
//! Replies: success `{"success":true,"result":..,"log_id":"<16 digits>"}`; business errors
//! `{"success":false,"result":null,"code":N,"message":"..","log_id":".."}`; gateway errors (access token, QPS,
//! unknown path) `{"error_code":N,"error_msg":".."}`. Order of checks on a faceprint call: count it, injected QPS
//! limit, access_token (100 missing, 110 unknown, 111 expired), Content-Type, body JSON, fields, session state.
//!
//! Codes and messages that no vendor document gives (all INFERRED):
//! - [`CODE_TOKEN_INVALID`] 283460 for the documented message "Token无效或者已过期" (the message text is what
//!   clients test): unknown verify_token; submit / upload / page use after the 2 h window or after completion (a pass,
//!   or a failure on a plan with "认证未通过时URL失效"); result queries more than 3 days after completion (media:
//!   1 day); result queries for a token whose 2 h window closed without any attempt.
//! - [`CODE_NOT_STARTED`] 283450 "认证尚未开始" from detail / simple / media before any attempt (FACTS §1.3).
//! - Attempt failures: [`CODE_FACE_MISMATCH`] 283455 "人脸比对未通过", [`CODE_LIVENESS_FAILED`] 223120
//!   "活体检测未通过", [`CODE_ID_NAME_MISMATCH`] 222351 "身份证号与姓名不匹配", [`CODE_USER_ABANDONED`] 283456
//!   "用户放弃认证". Face mismatch and liveness failure ran a compare and are billed; the other two are not.
//! - Request errors reuse Baidu AI's general codes (never 100/110/111, which clients read as access-token errors):
//!   [`CODE_NOT_JSON`] 222200 "request body should be json format" (Content-Type not JSON, body not a JSON object,
//!   or over 16 MiB); [`CODE_PARAM_MISSING`] 222001 "param[<name>] is null" (missing, null or empty);
//!   [`CODE_PARAM_INVALID`] 216100 "param[<name>] format error" (wrong type or value, e.g. certificate_type not 0/4,
//!   a bad ID number, a bad control value); [`CODE_IMAGE_FORMAT`] 216201 "image format error" (bad base64, not
//!   JPEG/PNG); [`CODE_IMAGE_SIZE`] 216202 "image size error" (base64 text over 10 MiB, or over 1920x1080 in either
//!   orientation); unknown faceprint path: gateway 3 "Unsupported openapi method" (not counted in the stats).
//! - `certificate_type` may be omitted (default 0); plan_id may be a string or an integer.
//! - OAuth checks grant_type first (400 `unsupported_grant_type`), then client_id, then client_secret (401).
//! - result/simple and result/media/query after a failed last attempt answer that attempt's failure code, like detail.
//!   A token whose window closed with only failed attempts (retry plans) ages from its last attempt.
//! - getall: `charge_type` and `charge_time` are "" for an attempt that was not billed; `score` is null for liveness
//!   failure, name mismatch and abandon; `idcard_confirm` is omitted when no identity is known (abandon before
//!   entering one). No OCR in sandbox plans, so no OCR fields. Times are UTC+8 "YYYY-MM-DD HH:MM:SS".
//! - stat: `Verify_FIN` counts attempts by code, `VideoLiveness` liveness checks (0 or 223120), `verify` backend
//!   compares (0, or 222351 for a name mismatch), the rest are empty.
//! - Page: a plan without 指定用户身份核验 asks for name + ID number (type 4 when it starts with 810000/820000/830000);
//!   [`BaiduSimulator::complete`] uses the submitted identity or, failing that, a synthetic sandbox identity.
//!   Redirect targets must be http(s) URLs; otherwise the submit answers a result page (`id="result"`).
//! - Media links: image/query serves a passed token for 3 days; `/media/<token>.mp4` and `/media/<token>-<1..4>.jpg`
//!   for 1 day; `/media/<token>-face<order>.jpg` (getall's face_image) for 3 days; otherwise 404 with the JSON error.
//!
//! Nothing here logs request data (names, ID numbers, images, credentials).

use super::web::{esc, fill_template, html_response, json_response, query_param};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::domain::validation::{gb11643_check_char, mask_id_number, Date};

/// Path prefix the simulator is mounted under; absolute URLs it emits are `http://<Host>` + this + the route.
pub const MOUNT: &str = "/sandbox/baidu";

/// "服务异常,请稍后再试": unknown plan_id for this app (FACTS §1.3).
pub const CODE_SERVICE_ERROR: i64 = 283400;
/// "认证尚未开始": result queried before any attempt (INFERRED mapping, FACTS §1.3).
pub const CODE_NOT_STARTED: i64 = 283450;
/// Numeric code sent with "Token无效或者已过期" (undocumented; INFERRED).
pub const CODE_TOKEN_INVALID: i64 = 283460;
/// "人脸比对未通过": the face did not reach the plan's threshold (INFERRED).
pub const CODE_FACE_MISMATCH: i64 = 283455;
/// "活体检测未通过": liveness failed (INFERRED).
pub const CODE_LIVENESS_FAILED: i64 = 223120;
/// "身份证号与姓名不匹配": the authority rejected the name / ID number pair (INFERRED).
pub const CODE_ID_NAME_MISMATCH: i64 = 222351;
/// "用户放弃认证": the user left the page (INFERRED).
pub const CODE_USER_ABANDONED: i64 = 283456;
/// QPS limit, in both the gateway and the envelope shape.
pub const CODE_QPS_LIMIT: i64 = 18;
/// "request body should be json format": Content-Type or body is not JSON (INFERRED use of a Baidu AI code).
pub const CODE_NOT_JSON: i64 = 222200;
/// "param[<name>] is null": a required field is missing, null or empty (INFERRED use of a Baidu AI code).
pub const CODE_PARAM_MISSING: i64 = 222001;
/// "param[<name>] format error": a field has the wrong type or value (INFERRED use of a Baidu AI code).
pub const CODE_PARAM_INVALID: i64 = 216100;
/// "image format error": uploadMatchImage image is not base64 of a JPEG or PNG (INFERRED use of a Baidu AI code).
pub const CODE_IMAGE_FORMAT: i64 = 216201;
/// "image size error": base64 text over 10 MiB or resolution over 1920x1080 (INFERRED use of a Baidu AI code).
pub const CODE_IMAGE_SIZE: i64 = 216202;
/// The documented message for an unknown, expired or used-up verify_token.
pub const MSG_TOKEN_INVALID: &str = "Token无效或者已过期";

const MSG_NOT_STARTED: &str = "认证尚未开始";
const MSG_SERVICE_ERROR: &str = "服务异常,请稍后再试";
const MSG_NOT_JSON: &str = "request body should be json format";
const MSG_PASSED: &str = "核验成功";
const PAGE_TITLE: &str = "facegate sandbox — Baidu faceprint";
const PAGE_TEMPLATE: &str = include_str!("page.html");

const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'";

/// Maximum accepted request body.
const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Maximum uploadMatchImage base64 text length ("编码后的图片大小不超过10M").
const MAX_IMAGE_BASE64_LEN: usize = 10 * 1024 * 1024;
/// Resolution limit ("图片分辨率小于1920*1080"), checked orientation-agnostically.
const MAX_LONG_SIDE: u32 = 1920;
const MAX_SHORT_SIDE: u32 = 1080;

const ACCESS_TOKEN_TTL_SECS: i64 = 2_592_000;
const REFRESH_TOKEN_TTL_SECS: i64 = 315_360_000;
const VERIFY_WINDOW_MS: i64 = 2 * 3_600_000;
const RESULT_RETENTION_MS: i64 = 3 * 86_400_000;
const MEDIA_RETENTION_MS: i64 = 86_400_000;
/// Liveness score reported by detail for a passed attempt (the document's example value).
const PASS_LIVENESS_SCORE: f64 = 0.9672966;

/// Identity used by [`BaiduSimulator::complete`] when none was submitted (synthetic, born 1900-01-01).
const SANDBOX_NAME: &str = "沙箱用户";
const SANDBOX_ID_NUMBER: &str = "110101190001010014";

/// A 1x1 baseline-JPEG-shaped placeholder (SOI, JFIF, SOF0 1x1, EOI): synthetic, not a real photo.
const SYNTHETIC_JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11,
    0x00, 0xFF, 0xD9,
];
/// An MP4 `ftyp` box only: synthetic, not a real video.
const SYNTHETIC_MP4: &[u8] = &[
    0x00, 0x00, 0x00, 0x18, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm', 0x00, 0x00, 0x02, 0x00,
    b'i', b's', b'o', b'm', b'm', b'p', b'4', b'1',
];

// ---------------------------------------------------------------------------------------------------------------
// Public configuration and helpers
// ---------------------------------------------------------------------------------------------------------------

/// Injectable clock shared by the simulator (wall clock + offset). Clone shares the offset.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    offset_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock at the wall-clock time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Current simulated time in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        wall.saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Moves simulated time forward by `by` (for every clone).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .offset_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                Some(o.saturating_add(ms))
            });
    }
}

/// A plan configured at the simulated Baidu console.
#[derive(Debug, Clone)]
pub struct BaiduSimPlan {
    /// 方案ID, as sent in `verifyToken/generate`.
    pub plan_id: String,
    /// 指定用户身份核验: idcard/submit must precede the page; else the page asks the user for name + ID number.
    pub needs_identity: bool,
    /// 自建人脸库比对: uploadMatchImage must precede the page (charge_type "match"); else authority compare
    /// (charge_type "verify").
    pub needs_reference: bool,
    /// 认证未通过时URL失效: a failed attempt consumes the token; false => the user may retry on the page.
    pub fail_ends_url: bool,
    /// Similarity threshold reported in getall (e.g. 80.0).
    pub threshold: f64,
}

/// Simulator configuration: the app's credentials and its plans (one app per simulator).
#[derive(Clone)]
pub struct BaiduSimConfig {
    /// API Key (OAuth client_id).
    pub api_key: String,
    /// Secret Key (OAuth client_secret).
    pub secret_key: String,
    /// AppID, the last segment of issued access tokens.
    pub app_id: String,
    /// The app's H5 plans.
    pub plans: Vec<BaiduSimPlan>,
}

impl fmt::Debug for BaiduSimConfig {
    /// Hides the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaiduSimConfig")
            .field("api_key", &"***")
            .field("secret_key", &"***")
            .field("app_id", &self.app_id)
            .field("plans", &self.plans)
            .finish()
    }
}

/// Request and billing counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaiduSimStats {
    /// `/oauth/2.0/token` calls (any outcome).
    pub token_requests: u64,
    /// Calls per faceprint path (e.g. "verifyToken/generate", "result/detail"), any outcome incl. injected errors.
    pub calls: BTreeMap<String, u64>,
    /// Answers with code 18 (injected QPS limit).
    pub qps_limited: u64,
    /// `GET /face/print/` renders (any outcome).
    pub page_views: u64,
    /// Billed attempts (verify or match charges).
    pub billed: u64,
}

/// What the simulated user does on the H5 page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageOutcome {
    /// Liveness and compare pass.
    Pass,
    /// The compare scores under the threshold ([`CODE_FACE_MISMATCH`], billed).
    FaceMismatch,
    /// Liveness fails ([`CODE_LIVENESS_FAILED`], billed).
    LivenessFailed,
    /// The authority rejects the name / ID number ([`CODE_ID_NAME_MISMATCH`], not billed).
    IdNameMismatch,
    /// The user gives up ([`CODE_USER_ABANDONED`], not billed).
    Abandon,
}

impl PageOutcome {
    /// Every outcome, in page order.
    pub const ALL: [PageOutcome; 5] = [
        PageOutcome::Pass,
        PageOutcome::FaceMismatch,
        PageOutcome::LivenessFailed,
        PageOutcome::IdNameMismatch,
        PageOutcome::Abandon,
    ];

    /// The form value: "pass", "face_mismatch", "liveness_failed", "id_name_mismatch" or "abandon".
    pub fn as_str(&self) -> &'static str {
        match self {
            PageOutcome::Pass => "pass",
            PageOutcome::FaceMismatch => "face_mismatch",
            PageOutcome::LivenessFailed => "liveness_failed",
            PageOutcome::IdNameMismatch => "id_name_mismatch",
            PageOutcome::Abandon => "abandon",
        }
    }

    /// Parses a form value (see [`PageOutcome::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Code and message of a failed attempt; `None` for a pass.
    fn failure(self) -> Option<(i64, &'static str)> {
        match self {
            PageOutcome::Pass => None,
            PageOutcome::FaceMismatch => Some((CODE_FACE_MISMATCH, "人脸比对未通过")),
            PageOutcome::LivenessFailed => Some((CODE_LIVENESS_FAILED, "活体检测未通过")),
            PageOutcome::IdNameMismatch => Some((CODE_ID_NAME_MISMATCH, "身份证号与姓名不匹配")),
            PageOutcome::Abandon => Some((CODE_USER_ABANDONED, "用户放弃认证")),
        }
    }

    /// Whether a compare ran (the attempt is billed).
    fn billed(self) -> bool {
        matches!(
            self,
            PageOutcome::Pass | PageOutcome::FaceMismatch | PageOutcome::LivenessFailed
        )
    }

    /// Whether a face was captured.
    fn captured(self) -> bool {
        !matches!(self, PageOutcome::Abandon)
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

// ---------------------------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Identity {
    name: String,
    number: String,
    certificate_type: u8,
}

struct Attempt {
    order: usize,
    outcome: PageOutcome,
    at_ms: i64,
    identity: Option<Identity>,
    charged: bool,
    score: Option<f64>,
    verify_log_id: String,
}

struct Session {
    plan: BaiduSimPlan,
    created_ms: i64,
    success_url: Option<String>,
    failed_url: Option<String>,
    identity: Option<Identity>,
    reference_uploaded: bool,
    attempts: Vec<Attempt>,
    completed_ms: Option<i64>,
}

impl Session {
    /// Whether the user may still verify (inside the 2 h window and not used up).
    fn usable(&self, now: i64) -> bool {
        self.completed_ms.is_none() && now < self.created_ms.saturating_add(VERIFY_WINDOW_MS)
    }

    /// Whether result queries may see the token at `now`, given the retention.
    fn queryable(&self, now: i64, retention_ms: i64) -> bool {
        let finished = match self.completed_ms {
            Some(t) => Some(t),
            None if self.usable(now) => return true,
            // Window closed: results of attempts made (retry plans) age from the last one; none made => gone.
            None => self.attempts.last().map(|a| a.at_ms),
        };
        finished.is_some_and(|t| now <= t.saturating_add(retention_ms))
    }

    fn charge_type(&self) -> &'static str {
        if self.plan.needs_reference {
            "match"
        } else {
            "verify"
        }
    }
}

#[derive(Default)]
struct Inner {
    /// access_token -> expiry (unix ms).
    access_tokens: HashMap<String, i64>,
    /// verify_token -> session.
    sessions: HashMap<String, Session>,
    stats: BaiduSimStats,
}

/// The simulator. Build with [`BaiduSimulator::new`], serve [`BaiduSimulator::router`] under [`MOUNT`].
pub struct BaiduSimulator {
    cfg: BaiduSimConfig,
    clock: SimClock,
    qps_pending: AtomicU32,
    qps_shape: AtomicU64,
    inner: Mutex<Inner>,
}

impl fmt::Debug for BaiduSimulator {
    /// Shows the (credential-free) configuration and the counters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BaiduSimulator")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------------------------

/// One faceprint answer.
#[derive(Debug)]
enum Reply {
    Ok(Value),
    Fail { code: i64, message: String },
    Gateway { code: i64, message: &'static str },
}

#[derive(Serialize)]
struct OkEnvelope<'a> {
    success: bool,
    result: &'a Value,
    log_id: String,
}

#[derive(Serialize)]
struct ErrEnvelope<'a> {
    success: bool,
    result: Option<()>,
    code: i64,
    message: &'a str,
    log_id: String,
}

#[derive(Serialize)]
struct GatewayError<'a> {
    error_code: i64,
    error_msg: &'a str,
}

impl Reply {
    fn fail(code: i64, message: impl Into<String>) -> Self {
        Reply::Fail {
            code,
            message: message.into(),
        }
    }

    fn token_invalid() -> Self {
        Reply::fail(CODE_TOKEN_INVALID, MSG_TOKEN_INVALID)
    }

    fn not_started() -> Self {
        Reply::fail(CODE_NOT_STARTED, MSG_NOT_STARTED)
    }

    fn not_json() -> Self {
        Reply::fail(CODE_NOT_JSON, MSG_NOT_JSON)
    }

    fn missing(name: &str) -> Self {
        Reply::fail(CODE_PARAM_MISSING, format!("param[{name}] is null"))
    }

    fn invalid(name: &str) -> Self {
        Reply::fail(CODE_PARAM_INVALID, format!("param[{name}] format error"))
    }

    fn outcome(outcome: PageOutcome) -> Self {
        match outcome.failure() {
            Some((code, message)) => Reply::fail(code, message),
            None => Reply::fail(CODE_SERVICE_ERROR, MSG_SERVICE_ERROR),
        }
    }

    fn to_json(&self) -> String {
        let encoded = match self {
            Reply::Ok(result) => serde_json::to_string(&OkEnvelope {
                success: true,
                result,
                log_id: new_log_id(),
            }),
            Reply::Fail { code, message } => serde_json::to_string(&ErrEnvelope {
                success: false,
                result: None,
                code: *code,
                message,
                log_id: new_log_id(),
            }),
            Reply::Gateway { code, message } => serde_json::to_string(&GatewayError {
                error_code: *code,
                error_msg: message,
            }),
        };
        encoded.unwrap_or_else(|_| r#"{"error_code":1,"error_msg":"Unknown error"}"#.to_owned())
    }

    fn into_response_with(self, status: StatusCode) -> Response {
        json_response_ct(status, self.to_json())
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        self.into_response_with(StatusCode::OK)
    }
}

/// The faceprint paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Generate,
    IdcardSubmit,
    UploadMatchImage,
    Simple,
    Detail,
    Stat,
    Media,
    GetAll,
}

impl Api {
    const ALL: [Api; 8] = [
        Api::Generate,
        Api::IdcardSubmit,
        Api::UploadMatchImage,
        Api::Simple,
        Api::Detail,
        Api::Stat,
        Api::Media,
        Api::GetAll,
    ];

    fn path(self) -> &'static str {
        match self {
            Api::Generate => "verifyToken/generate",
            Api::IdcardSubmit => "idcard/submit",
            Api::UploadMatchImage => "uploadMatchImage",
            Api::Simple => "result/simple",
            Api::Detail => "result/detail",
            Api::Stat => "result/stat",
            Api::Media => "result/media/query",
            Api::GetAll => "result/getall",
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        let path = path.trim_start_matches('/');
        Self::ALL.into_iter().find(|a| a.path() == path)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------------------------

/// Why the page (or [`BaiduSimulator::complete`]) refuses an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageError {
    TokenGone,
    IdentityNotSubmitted,
    ReferenceNotUploaded,
    IdentityRequired,
    BadIdentity,
}

impl PageError {
    fn message(self) -> &'static str {
        match self {
            PageError::TokenGone => MSG_TOKEN_INVALID,
            PageError::IdentityNotSubmitted => {
                "该方案为指定用户身份核验, 请先调用 idcard/submit 上报用户身份信息 (identity not submitted)"
            }
            PageError::ReferenceNotUploaded => {
                "该方案为自建人脸库比对, 请先调用 uploadMatchImage 上传比对图片 (reference image not uploaded)"
            }
            PageError::IdentityRequired => "请输入姓名和身份证号 (name and ID number are required)",
            PageError::BadIdentity => "姓名或身份证号格式错误 (invalid name or ID number)",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            PageError::TokenGone => StatusCode::GONE,
            PageError::IdentityNotSubmitted | PageError::ReferenceNotUploaded => {
                StatusCode::CONFLICT
            }
            PageError::IdentityRequired | PageError::BadIdentity => StatusCode::BAD_REQUEST,
        }
    }
}

/// An attempt recorded by the page.
struct Recorded {
    passed: bool,
    success_url: Option<String>,
    failed_url: Option<String>,
}

impl BaiduSimulator {
    /// A simulator for one app with its plans, on `clock`.
    pub fn new(cfg: BaiduSimConfig, clock: SimClock) -> Arc<Self> {
        Arc::new(BaiduSimulator {
            cfg,
            clock,
            qps_pending: AtomicU32::new(0),
            qps_shape: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Routes relative to the mount point ([`MOUNT`]); see the module documentation.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/oauth/2.0/token", get(oauth_handler).post(oauth_handler))
            .route(
                "/rpc/2.0/brain/solution/faceprint/{*path}",
                post(faceprint_handler),
            )
            .route("/face/print/", get(page_handler))
            .route("/face/print", get(page_slash_handler))
            .route("/face/print/submit", post(submit_handler))
            .route("/solution/faceprint/image/query", get(image_handler))
            .route("/media/{file}", get(media_handler))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Arc::clone(self))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BaiduSimStats {
        self.lock().stats.clone()
    }

    /// The simulator's clock (advance it to age tokens and results).
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// The next `n` faceprint requests (any path) answer the QPS limit, alternating the gateway shape
    /// `{"error_code":18,..}` and the envelope shape `{"success":false,..,"code":18,"message":"openapi限制",..}`.
    pub fn inject_qps_limit(&self, n: u32) {
        let _ = self
            .qps_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(p.saturating_add(n))
            });
    }

    /// Records an attempt with `outcome` as the page's submit does (for tests without HTTP). Uses the identity from
    /// idcard/submit or, for plans that let the user enter one, a synthetic sandbox identity.
    pub fn complete(&self, verify_token: &str, outcome: PageOutcome) -> Result<(), String> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        self.record_attempt(&mut inner, verify_token, outcome, None, true, now)
            .map(|_| ())
            .map_err(|e| e.message().to_owned())
    }

    /// Number of access tokens issued so far (expired ones included).
    pub fn issued_access_tokens(&self) -> usize {
        self.lock().access_tokens.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    // -- OAuth -----------------------------------------------------------------------------------------------

    fn oauth(&self, query: Option<&str>) -> Response {
        #[derive(Serialize)]
        struct TokenReply {
            access_token: String,
            expires_in: i64,
            refresh_token: String,
            scope: &'static str,
            session_key: String,
            session_secret: String,
        }
        let oauth_error = |status: StatusCode, error: &str, description: &str| {
            json_response_ct(
                status,
                json!({"error": error, "error_description": description}).to_string(),
            )
        };

        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.stats.token_requests += 1;
        let grant_type = query_param(query, "grant_type");
        if grant_type.as_deref() != Some("client_credentials") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported",
            );
        }
        let client_id = query_param(query, "client_id").unwrap_or_default();
        if client_id.is_empty() || client_id != self.cfg.api_key {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client id",
            );
        }
        let client_secret = query_param(query, "client_secret").unwrap_or_default();
        if client_secret != self.cfg.secret_key {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed",
            );
        }
        let now_s = now.div_euclid(1000);
        let app = &self.cfg.app_id;
        let mut access_token;
        loop {
            access_token = format!(
                "24.{}.{ACCESS_TOKEN_TTL_SECS}.{}.282335-{app}",
                random_hex(),
                now_s + ACCESS_TOKEN_TTL_SECS
            );
            if !inner.access_tokens.contains_key(&access_token) {
                break;
            }
        }
        inner.access_tokens.insert(
            access_token.clone(),
            now.saturating_add(ACCESS_TOKEN_TTL_SECS * 1000),
        );
        let reply = TokenReply {
            access_token,
            expires_in: ACCESS_TOKEN_TTL_SECS,
            refresh_token: format!(
                "25.{}.{REFRESH_TOKEN_TTL_SECS}.{}.282335-{app}",
                random_hex(),
                now_s + REFRESH_TOKEN_TTL_SECS
            ),
            scope: "public brain_all_scope",
            session_key: random_hex(),
            session_secret: random_hex(),
        };
        let body = serde_json::to_string(&reply).unwrap_or_default();
        json_response_ct(StatusCode::OK, body)
    }

    // -- Faceprint API ---------------------------------------------------------------------------------------

    fn faceprint(
        &self,
        api: Api,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        base: &str,
    ) -> Reply {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        *inner.stats.calls.entry(api.path().to_owned()).or_insert(0) += 1;
        if let Some(reply) = self.take_qps_limit() {
            inner.stats.qps_limited += 1;
            return reply;
        }
        match query_param(query, "access_token").as_deref() {
            None | Some("") => {
                return Reply::Gateway {
                    code: 100,
                    message: "Invalid parameter",
                }
            }
            Some(token) => match inner.access_tokens.get(token) {
                None => {
                    return Reply::Gateway {
                        code: 110,
                        message: "Access token invalid or no longer valid",
                    }
                }
                Some(&expires) if now >= expires => {
                    return Reply::Gateway {
                        code: 111,
                        message: "Access token expired",
                    }
                }
                Some(_) => {}
            },
        }
        if !is_json_content_type(headers) {
            return Reply::not_json();
        }
        let Ok(body) = body else {
            return Reply::not_json();
        };
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
            return Reply::not_json();
        };
        let result = match api {
            Api::Generate => self.generate(&mut inner, &obj, now),
            Api::IdcardSubmit => idcard_submit(&mut inner, &obj, now),
            Api::UploadMatchImage => upload_match_image(&mut inner, &obj, now),
            Api::Simple => result_simple(&inner, &obj, now, base),
            Api::Detail => result_detail(&inner, &obj, now),
            Api::Stat => result_stat(&inner, &obj, now),
            Api::Media => result_media(&inner, &obj, now, base),
            Api::GetAll => result_getall(&inner, &obj, now, base),
        };
        match result {
            Ok(value) => Reply::Ok(value),
            Err(reply) => reply,
        }
    }

    fn take_qps_limit(&self) -> Option<Reply> {
        self.qps_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()?;
        Some(
            if self
                .qps_shape
                .fetch_add(1, Ordering::SeqCst)
                .is_multiple_of(2)
            {
                Reply::Gateway {
                    code: CODE_QPS_LIMIT,
                    message: "Open api qps request limit reached",
                }
            } else {
                Reply::fail(CODE_QPS_LIMIT, "openapi限制")
            },
        )
    }

    fn generate(
        &self,
        inner: &mut Inner,
        obj: &Map<String, Value>,
        now: i64,
    ) -> Result<Value, Reply> {
        let plan_id = match obj.get("plan_id") {
            None | Some(Value::Null) => return Err(Reply::missing("plan_id")),
            Some(Value::String(s)) if s.trim().is_empty() => return Err(Reply::missing("plan_id")),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(Reply::invalid("plan_id")),
        };
        let (success_url, failed_url) = match obj.get("redirect_config") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(rc)) => (
                opt_str(rc, "success_url", "redirect_config.success_url")?.map(str::to_owned),
                opt_str(rc, "failed_url", "redirect_config.failed_url")?.map(str::to_owned),
            ),
            Some(_) => return Err(Reply::invalid("redirect_config")),
        };
        let Some(plan) = self.cfg.plans.iter().find(|p| p.plan_id == plan_id) else {
            return Err(Reply::fail(CODE_SERVICE_ERROR, MSG_SERVICE_ERROR));
        };
        let mut token = new_verify_token();
        while inner.sessions.contains_key(&token) {
            token = new_verify_token();
        }
        inner.sessions.insert(
            token.clone(),
            Session {
                plan: plan.clone(),
                created_ms: now,
                success_url,
                failed_url,
                identity: None,
                reference_uploaded: false,
                attempts: Vec::new(),
                completed_ms: None,
            },
        );
        Ok(json!({ "verify_token": token }))
    }

    // -- The page --------------------------------------------------------------------------------------------

    /// Checks what the plan needs before the page may be used.
    fn page_preconditions(session: &Session) -> Result<(), PageError> {
        if session.plan.needs_identity && session.identity.is_none() {
            return Err(PageError::IdentityNotSubmitted);
        }
        if session.plan.needs_reference && !session.reference_uploaded {
            return Err(PageError::ReferenceNotUploaded);
        }
        Ok(())
    }

    /// Records one attempt. `entered` is the name / ID number typed on the page (plans without
    /// 指定用户身份核验); `synthetic` allows the sandbox identity when none is known.
    fn record_attempt(
        &self,
        inner: &mut Inner,
        token: &str,
        outcome: PageOutcome,
        entered: Option<(&str, &str)>,
        synthetic: bool,
        now: i64,
    ) -> Result<Recorded, PageError> {
        let Inner {
            sessions, stats, ..
        } = inner;
        let session = match sessions.get_mut(token) {
            Some(s) if s.usable(now) => s,
            _ => return Err(PageError::TokenGone),
        };
        Self::page_preconditions(session)?;
        let identity = if session.plan.needs_identity {
            session.identity.clone()
        } else {
            let typed = match entered {
                Some((name, number)) => {
                    let cert = if is_hmt_prefix(number.trim()) { 4 } else { 0 };
                    Some(
                        validate_identity(name, number, cert)
                            .map_err(|_| PageError::BadIdentity)?,
                    )
                }
                None => None,
            };
            typed.or_else(|| session.identity.clone()).or_else(|| {
                synthetic.then(|| Identity {
                    name: SANDBOX_NAME.to_owned(),
                    number: SANDBOX_ID_NUMBER.to_owned(),
                    certificate_type: 0,
                })
            })
        };
        if identity.is_none() && outcome != PageOutcome::Abandon {
            return Err(PageError::IdentityRequired);
        }
        let threshold = session.plan.threshold;
        let charged = outcome.billed();
        let score = match outcome {
            PageOutcome::Pass => Some(round4(
                (threshold + (100.0 - threshold) * 0.7).clamp(0.0, 100.0),
            )),
            PageOutcome::FaceMismatch => Some(round4((threshold * 0.5).clamp(0.0, 100.0))),
            _ => None,
        };
        session.attempts.push(Attempt {
            order: session.attempts.len() + 1,
            outcome,
            at_ms: now,
            identity,
            charged,
            score,
            verify_log_id: if charged { new_log_id() } else { String::new() },
        });
        if charged {
            stats.billed += 1;
        }
        let passed = outcome == PageOutcome::Pass;
        if passed || session.plan.fail_ends_url {
            session.completed_ms = Some(now);
        }
        Ok(Recorded {
            passed,
            success_url: session.success_url.clone(),
            failed_url: session.failed_url.clone(),
        })
    }

    fn page(&self, query: Option<&str>) -> Response {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        inner.stats.page_views += 1;
        let token = query_param(query, "token").unwrap_or_default();
        let Some(session) = inner.sessions.get(&token).filter(|s| s.usable(now)) else {
            return error_page(PageError::TokenGone);
        };
        if let Err(e) = Self::page_preconditions(session) {
            return error_page(e);
        }
        let success =
            non_empty(query_param(query, "successUrl")).or_else(|| session.success_url.clone());
        let failed =
            non_empty(query_param(query, "failedUrl")).or_else(|| session.failed_url.clone());
        html_response(
            StatusCode::OK,
            PAGE_CSP,
            render_page(&token, session, success.as_deref(), failed.as_deref(), None),
        )
    }

    fn submit(&self, body: &[u8]) -> Response {
        let form = FormFields::parse(body);
        let Some(outcome) = PageOutcome::parse(&form.outcome) else {
            return message_page(
                StatusCode::BAD_REQUEST,
                "error",
                "无效的请求 (bad request)",
                "unknown outcome",
                None,
            );
        };
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let entered = (!form.id_name.trim().is_empty() || !form.id_no.trim().is_empty())
            .then_some((form.id_name.as_str(), form.id_no.as_str()));
        let recorded =
            match self.record_attempt(&mut inner, &form.token, outcome, entered, false, now) {
                Ok(r) => r,
                Err(e @ (PageError::IdentityRequired | PageError::BadIdentity)) => {
                    // Show the form again with the problem; nothing was recorded.
                    return match inner.sessions.get(&form.token) {
                        Some(session) => html_response(
                            e.status(),
                            PAGE_CSP,
                            render_page(
                                &form.token,
                                session,
                                non_empty(Some(form.success_url.clone())).as_deref(),
                                non_empty(Some(form.failed_url.clone())).as_deref(),
                                Some(e.message()),
                            ),
                        ),
                        None => error_page(e),
                    };
                }
                Err(e) => return error_page(e),
            };
        drop(inner);
        let target = if recorded.passed {
            non_empty(Some(form.success_url)).or(recorded.success_url)
        } else {
            non_empty(Some(form.failed_url)).or(recorded.failed_url)
        };
        match target
            .filter(|u| is_http_url(u))
            .and_then(|u| HeaderValue::from_str(&u).ok())
        {
            Some(location) => (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
            )
                .into_response(),
            None => message_page(
                StatusCode::OK,
                "result",
                "认证结果 (result)",
                &format!(
                    "outcome: {} — {}",
                    outcome.as_str(),
                    outcome.failure().map_or(MSG_PASSED, |(_, m)| m)
                ),
                Some(outcome),
            ),
        }
    }

    // -- Media -----------------------------------------------------------------------------------------------

    fn image(&self, query: Option<&str>) -> Response {
        let now = self.clock.now_ms();
        let inner = self.lock();
        let token = query_param(query, "verify_token").unwrap_or_default();
        match passed_session(&inner, &token, now, RESULT_RETENTION_MS) {
            Ok(_) => binary_response("image/jpeg", SYNTHETIC_JPEG),
            Err(reply) => reply.into_response_with(StatusCode::NOT_FOUND),
        }
    }

    fn media_file(&self, file: &str) -> Response {
        let now = self.clock.now_ms();
        let inner = self.lock();
        let found = if let Some(token) = file.strip_suffix(".mp4") {
            passed_session(&inner, token, now, MEDIA_RETENTION_MS)
                .map(|_| ("video/mp4", SYNTHETIC_MP4))
        } else if let Some((token, name)) =
            file.strip_suffix(".jpg").and_then(|f| f.split_once('-'))
        {
            if let Some(order) = name.strip_prefix("face") {
                face_image_session(&inner, token, order, now)
                    .map(|_| ("image/jpeg", SYNTHETIC_JPEG))
            } else if matches!(name, "1" | "2" | "3" | "4") {
                passed_session(&inner, token, now, MEDIA_RETENTION_MS)
                    .map(|_| ("image/jpeg", SYNTHETIC_JPEG))
            } else {
                Err(Reply::token_invalid())
            }
        } else {
            Err(Reply::token_invalid())
        };
        match found {
            Ok((mime, bytes)) => binary_response(mime, bytes),
            Err(reply) => reply.into_response_with(StatusCode::NOT_FOUND),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Faceprint endpoints
// ---------------------------------------------------------------------------------------------------------------

/// A required string field: missing / null / empty -> 222001, other types -> 216100.
fn req_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, Reply> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(Reply::missing(name)),
        Some(Value::String(s)) if s.is_empty() => Err(Reply::missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Reply::invalid(name)),
    }
}

/// An optional string field (null or empty = absent); other types -> 216100 naming `shown`.
fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    shown: &str,
) -> Result<Option<&'a str>, Reply> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reply::invalid(shown)),
    }
}

fn usable_session<'a>(
    inner: &'a mut Inner,
    token: &str,
    now: i64,
) -> Result<&'a mut Session, Reply> {
    match inner.sessions.get_mut(token) {
        Some(s) if s.usable(now) => Ok(s),
        _ => Err(Reply::token_invalid()),
    }
}

fn query_session<'a>(
    inner: &'a Inner,
    token: &str,
    now: i64,
    retention_ms: i64,
) -> Result<&'a Session, Reply> {
    match inner.sessions.get(token) {
        Some(s) if s.queryable(now, retention_ms) => Ok(s),
        _ => Err(Reply::token_invalid()),
    }
}

/// The session if its last attempt passed and it is within retention; else the error detail would answer.
fn passed_session<'a>(
    inner: &'a Inner,
    token: &str,
    now: i64,
    retention_ms: i64,
) -> Result<&'a Session, Reply> {
    let session = query_session(inner, token, now, retention_ms)?;
    let last = session.attempts.last().ok_or_else(Reply::not_started)?;
    if last.outcome == PageOutcome::Pass {
        Ok(session)
    } else {
        Err(Reply::outcome(last.outcome))
    }
}

fn face_image_session<'a>(
    inner: &'a Inner,
    token: &str,
    order: &str,
    now: i64,
) -> Result<&'a Session, Reply> {
    let session = query_session(inner, token, now, RESULT_RETENTION_MS)?;
    let order: usize = order.parse().map_err(|_| Reply::token_invalid())?;
    session
        .attempts
        .iter()
        .any(|a| a.order == order && a.outcome.captured())
        .then_some(session)
        .ok_or_else(Reply::token_invalid)
}

fn idcard_submit(inner: &mut Inner, obj: &Map<String, Value>, now: i64) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let name = req_str(obj, "id_name")?;
    let number = req_str(obj, "id_no")?;
    let cert = match obj.get("certificate_type") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => 0,
            Some(4) => 4,
            _ => return Err(Reply::invalid("certificate_type")),
        },
        Some(_) => return Err(Reply::invalid("certificate_type")),
    };
    let identity = validate_identity(name, number, cert)?;
    let session = usable_session(inner, token, now)?;
    session.identity = Some(identity);
    Ok(json!(1))
}

/// Validates a name and an 18-character ID number (GB 11643 check character; type 4 needs 810000/820000/830000).
fn validate_identity(name: &str, number: &str, certificate_type: u8) -> Result<Identity, Reply> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Reply::missing("id_name"));
    }
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Reply::invalid("id_name"));
    }
    let number = number.trim();
    if number.is_empty() {
        return Err(Reply::missing("id_no"));
    }
    let canonical = number.to_ascii_uppercase();
    let valid = canonical.len() == 18
        && canonical.is_ascii()
        && canonical
            .split_at_checked(17)
            .is_some_and(|(first17, last)| {
                gb11643_check_char(first17).is_some_and(|c| last.len() == 1 && last.starts_with(c))
            })
        && (certificate_type != 4 || is_hmt_prefix(&canonical));
    if !valid {
        return Err(Reply::invalid("id_no"));
    }
    Ok(Identity {
        name: name.to_owned(),
        number: canonical,
        certificate_type,
    })
}

fn is_hmt_prefix(number: &str) -> bool {
    ["810000", "820000", "830000"]
        .iter()
        .any(|p| number.starts_with(p))
}

fn upload_match_image(
    inner: &mut Inner,
    obj: &Map<String, Value>,
    now: i64,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let image = req_str(obj, "image")?;
    for control in ["quality_control", "liveness_control"] {
        if let Some(v) = opt_str(obj, control, control)? {
            if !matches!(v, "NONE" | "LOW" | "NORMAL" | "HIGH") {
                return Err(Reply::invalid(control));
            }
        }
    }
    check_match_image(image)?;
    let session = usable_session(inner, token, now)?;
    session.reference_uploaded = true;
    Ok(Value::Null)
}

/// uploadMatchImage's image rules: base64 text <= 10 MiB, standard base64 of a JPEG or PNG, at most 1920x1080
/// (either orientation) when the dimensions can be read.
fn check_match_image(text: &str) -> Result<(), Reply> {
    if text.len() > MAX_IMAGE_BASE64_LEN {
        return Err(Reply::fail(CODE_IMAGE_SIZE, "image size error"));
    }
    let format_error = || Reply::fail(CODE_IMAGE_FORMAT, "image format error");
    let bytes = STANDARD
        .decode(text.as_bytes())
        .map_err(|_| format_error())?;
    let dimensions = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg_dimensions(&bytes)
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some(png_dimensions(&bytes).ok_or_else(format_error)?)
    } else {
        return Err(format_error());
    };
    if let Some((w, h)) = dimensions {
        if w == 0 || h == 0 {
            return Err(format_error());
        }
        if w.max(h) > MAX_LONG_SIDE || w.min(h) > MAX_SHORT_SIDE {
            return Err(Reply::fail(CODE_IMAGE_SIZE, "image size error"));
        }
    }
    Ok(())
}

/// Width and height from a PNG's IHDR chunk.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

/// Width and height from a JPEG's first SOFn segment; `None` when there is none before SOS / the end.
fn jpeg_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2usize;
    loop {
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        while *bytes.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *bytes.get(i)?;
        i += 1;
        match marker {
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]));
        if len < 2 {
            return None;
        }
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let h = u16::from_be_bytes([*bytes.get(i + 3)?, *bytes.get(i + 4)?]);
            let w = u16::from_be_bytes([*bytes.get(i + 5)?, *bytes.get(i + 6)?]);
            return Some((u32::from(w), u32::from(h)));
        }
        i += len;
    }
}

fn result_simple(
    inner: &Inner,
    obj: &Map<String, Value>,
    now: i64,
    base: &str,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    passed_session(inner, token, now, RESULT_RETENTION_MS)?;
    Ok(json!({ "image": image_url(base, token) }))
}

fn result_detail(inner: &Inner, obj: &Map<String, Value>, now: i64) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let session = passed_session(inner, token, now, RESULT_RETENTION_MS)?;
    let Some(last) = session.attempts.last() else {
        return Err(Reply::not_started());
    };
    let (name, number) = last
        .identity
        .as_ref()
        .map_or((String::new(), String::new()), |id| {
            (id.name.clone(), id.number.clone())
        });
    Ok(json!({
        "verify_result": {
            "score": last.score.unwrap_or(0.0),
            "liveness_score": PASS_LIVENESS_SCORE,
            "spoofing": 0.0,
        },
        "idcard_confirm": { "name": name, "idcard_number": number },
        "is_demote": false,
    }))
}

fn result_stat(inner: &Inner, obj: &Map<String, Value>, now: i64) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let session = query_session(inner, token, now, RESULT_RETENTION_MS)?;
    let mut fin: BTreeMap<i64, u64> = BTreeMap::new();
    let mut verify: BTreeMap<i64, u64> = BTreeMap::new();
    let mut liveness: BTreeMap<i64, u64> = BTreeMap::new();
    for a in &session.attempts {
        *fin.entry(a.outcome.failure().map_or(0, |(c, _)| c))
            .or_default() += 1;
        match a.outcome {
            PageOutcome::Pass | PageOutcome::FaceMismatch => {
                *liveness.entry(0).or_default() += 1;
                *verify.entry(0).or_default() += 1;
            }
            PageOutcome::LivenessFailed => {
                *liveness.entry(CODE_LIVENESS_FAILED).or_default() += 1;
                *verify.entry(0).or_default() += 1;
            }
            PageOutcome::IdNameMismatch => {
                *liveness.entry(0).or_default() += 1;
                *verify.entry(CODE_ID_NAME_MISMATCH).or_default() += 1;
            }
            PageOutcome::Abandon => {}
        }
    }
    let entries = |counts: &BTreeMap<i64, u64>| -> Value {
        counts
            .iter()
            .map(|(code, count)| json!({ "error_code": code, "count": count }))
            .collect()
    };
    Ok(json!({
        "Verify_FIN": entries(&fin),
        "Sessioncode": [],
        "OCR": [],
        "verify": entries(&verify),
        "VideoLiveness": entries(&liveness),
        "Livenesscolorful": [],
        "VerifySec": [],
    }))
}

fn result_media(
    inner: &Inner,
    obj: &Map<String, Value>,
    now: i64,
    base: &str,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    passed_session(inner, token, now, MEDIA_RETENTION_MS)?;
    let images: Vec<String> = (1..=4)
        .map(|n| format!("{base}/media/{token}-{n}.jpg"))
        .collect();
    Ok(json!({
        "processVideo": [format!("{base}/media/{token}.mp4")],
        "images": images,
        "extInfo": null,
    }))
}

fn result_getall(
    inner: &Inner,
    obj: &Map<String, Value>,
    now: i64,
    base: &str,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let session = query_session(inner, token, now, RESULT_RETENTION_MS)?;
    let charged = session.attempts.iter().filter(|a| a.charged).count();
    let (match_count, verify_count) = if session.plan.needs_reference {
        (charged, 0)
    } else {
        (0, charged)
    };
    let attempts: Vec<Value> = session
        .attempts
        .iter()
        .map(|a| attempt_json(session, a, token, base))
        .collect();
    Ok(json!({
        "verify_count": session.attempts.len(),
        "ocr_charge_count": 0,
        "match_charge_count": match_count,
        "verify_charge_count": verify_count,
        "verify_result": attempts,
    }))
}

fn attempt_json(session: &Session, a: &Attempt, token: &str, base: &str) -> Value {
    let (code, message) = match a.outcome.failure() {
        None => ("0".to_owned(), MSG_PASSED),
        Some((code, message)) => (code.to_string(), message),
    };
    let time = format_cst(a.at_ms);
    let face_image = if a.outcome.captured() {
        format!("{base}/media/{token}-face{}.jpg", a.order)
    } else {
        String::new()
    };
    let mut record = Map::new();
    record.insert("order".into(), json!(a.order));
    record.insert(
        "is_verify_passed".into(),
        json!(a.outcome == PageOutcome::Pass),
    );
    record.insert("code".into(), json!(code));
    record.insert("message".into(), json!(message));
    record.insert("verify_time".into(), json!(time));
    record.insert("is_charged".into(), json!(a.charged));
    record.insert(
        "charge_type".into(),
        json!(if a.charged { session.charge_type() } else { "" }),
    );
    record.insert(
        "charge_time".into(),
        json!(if a.charged { time.as_str() } else { "" }),
    );
    record.insert("is_ocr_charge".into(), json!(false));
    record.insert("ocr_charge_time".into(), json!(""));
    record.insert("ocr_count".into(), json!(0));
    record.insert(
        "verify_detail".into(),
        json!({
            "face_image": face_image,
            "verify_log_id": a.verify_log_id,
            "score": a.score,
            "threshold": session.plan.threshold,
            "liveness_score": 0,
            "spoofing_score": 0,
            "is_demote": false,
        }),
    );
    if let Some(id) = &a.identity {
        record.insert(
            "idcard_confirm".into(),
            json!({
                "name": id.name,
                "idcard_number": id.number,
                "idcard_type": id.certificate_type.to_string(),
            }),
        );
    }
    Value::Object(record)
}

// ---------------------------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------------------------

async fn oauth_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.oauth(query.as_deref())
}

async fn faceprint_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(api) = Api::from_path(&path) else {
        return Reply::Gateway {
            code: 3,
            message: "Unsupported openapi method",
        }
        .into_response();
    };
    let base = base_url(&headers, &uri);
    sim.faceprint(api, query.as_deref(), &headers, body, &base)
        .into_response()
}

async fn page_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.page(query.as_deref())
}

/// `/face/print` -> `/face/print/` (relative, so it works under any mount point).
async fn page_slash_handler(RawQuery(query): RawQuery) -> Response {
    let location = match query {
        Some(q) => format!("print/?{q}"),
        None => "print/".to_owned(),
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => error_page(PageError::TokenGone),
    }
}

async fn submit_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => sim.submit(&body),
        Err(_) => message_page(
            StatusCode::BAD_REQUEST,
            "error",
            "无效的请求 (bad request)",
            "unreadable form",
            None,
        ),
    }
}

async fn image_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.image(query.as_deref())
}

async fn media_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    Path(file): Path<String>,
) -> Response {
    sim.media_file(&file)
}

// ---------------------------------------------------------------------------------------------------------------
// Page rendering
// ---------------------------------------------------------------------------------------------------------------

/// The page's form fields; first occurrence wins, absent = "".
#[derive(Default)]
struct FormFields {
    token: String,
    outcome: String,
    success_url: String,
    failed_url: String,
    id_name: String,
    id_no: String,
}

impl FormFields {
    fn parse(body: &[u8]) -> Self {
        let mut out = FormFields::default();
        let mut seen = [false; 6];
        for (name, value) in form_urlencoded::parse(body) {
            let (slot, index) = match name.as_ref() {
                "token" => (&mut out.token, 0),
                "outcome" => (&mut out.outcome, 1),
                "successUrl" => (&mut out.success_url, 2),
                "failedUrl" => (&mut out.failed_url, 3),
                "id_name" => (&mut out.id_name, 4),
                "id_no" => (&mut out.id_no, 5),
                _ => continue,
            };
            if let Some(flag) = seen.get_mut(index) {
                if !*flag {
                    *flag = true;
                    *slot = value.into_owned();
                }
            }
        }
        out
    }
}

fn render_page(
    token: &str,
    session: &Session,
    success_url: Option<&str>,
    failed_url: Option<&str>,
    notice: Option<&str>,
) -> String {
    let plan = &session.plan;
    let compare_source = if plan.needs_reference {
        "自建人脸库比对 (reference image uploaded)"
    } else {
        "权威数据源比对 (authority compare)"
    };
    let identity = match (&session.identity, plan.needs_identity) {
        (Some(id), true) => format!(
            "指定用户身份核验: {} / {} (certificate_type {})",
            esc(&mask_name(&id.name)),
            esc(&mask_id_number(&id.number)),
            id.certificate_type
        ),
        (Some(id), false) => format!(
            "已上报 {} / {}; 也可在下方重新输入 (submitted; you may enter another below)",
            esc(&mask_name(&id.name)),
            esc(&mask_id_number(&id.number))
        ),
        (None, _) => {
            "由用户在本页输入姓名和身份证号 (the user enters name and ID number below)".to_owned()
        }
    };
    let identity_inputs = if plan.needs_identity {
        String::new()
    } else {
        concat!(
            "  <label for=\"id_name_input\">姓名 (id_name)</label>\n",
            "  <input type=\"text\" id=\"id_name_input\" name=\"id_name\" autocomplete=\"off\">\n",
            "  <label for=\"id_no_input\">身份证号 (id_no)</label>\n",
            "  <input type=\"text\" id=\"id_no_input\" name=\"id_no\" autocomplete=\"off\" maxlength=\"18\">\n",
        )
        .to_owned()
    };
    let on_failure = if plan.fail_ends_url {
        "URL失效 (the link is used up)"
    } else {
        "URL不失效, 可重试 (the user may retry)"
    };
    let notice = notice
        .map(|n| format!("<p class=\"notice\" id=\"error\">{}</p>", esc(n)))
        .unwrap_or_default();
    fill_template(
        PAGE_TEMPLATE,
        &[
            ("plan_id", esc(&plan.plan_id)),
            ("compare_source", compare_source.to_owned()),
            ("identity", identity),
            ("on_failure", on_failure.to_owned()),
            ("threshold", esc(&plan.threshold.to_string())),
            ("attempts", session.attempts.len().to_string()),
            ("notice", notice),
            ("token", esc(token)),
            ("success_url", esc(success_url.unwrap_or_default())),
            ("failed_url", esc(failed_url.unwrap_or_default())),
            ("identity_inputs", identity_inputs),
        ],
    )
}

fn error_page(error: PageError) -> Response {
    message_page(
        error.status(),
        "error",
        "无法进行认证 (cannot verify)",
        error.message(),
        None,
    )
}

/// A small page with one `<div id="{element_id}">` (error or result).
fn message_page(
    status: StatusCode,
    element_id: &'static str,
    heading: &str,
    text: &str,
    outcome: Option<PageOutcome>,
) -> Response {
    let outcome_attr = outcome
        .map(|o| format!(" data-outcome=\"{}\"", o.as_str()))
        .unwrap_or_default();
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{PAGE_TITLE}</title>\n\
         <style>body {{ font-family: system-ui, sans-serif; max-width: 34rem; margin: 2rem auto; padding: 0 1rem; }}</style>\n\
         </head>\n<body>\n<h1>{PAGE_TITLE}</h1>\n<div id=\"{element_id}\"{outcome_attr}>\n<h2>{}</h2>\n<p>{}</p>\n</div>\n\
         </body>\n</html>\n",
        esc(heading),
        esc(text)
    );
    html_response(status, PAGE_CSP, body)
}

fn binary_response(mime: &'static str, bytes: &'static [u8]) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        bytes,
    )
        .into_response()
}

/// Keeps the first character of a name and masks the rest.
fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------------------

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// `http://<Host>/sandbox/baidu` from the request (Host header, else the URI's authority, else localhost).
fn base_url(headers: &HeaderMap, uri: &Uri) -> String {
    let valid = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
            })
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| valid(h))
        .or_else(|| uri.authority().map(|a| a.as_str()).filter(|h| valid(h)))
        .unwrap_or("localhost");
    format!("http://{host}{MOUNT}")
}

fn image_url(base: &str, token: &str) -> String {
    format!("{base}/solution/faceprint/image/query?verify_token={token}")
}

/// 24 random alphanumerics.
fn new_verify_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    a.as_bytes()
        .iter()
        .chain(b.as_bytes().iter())
        .take(24)
        .map(|&x| {
            char::from(
                ALPHABET
                    .get(usize::from(x) % ALPHABET.len())
                    .copied()
                    .unwrap_or(b'A'),
            )
        })
        .collect()
}

/// 16 random decimal digits (no leading zero).
fn new_log_id() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 9_000_000_000_000_000 + 1_000_000_000_000_000;
    n.to_string()
}

/// 32 random lowercase hex digits.
fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// "YYYY-MM-DD HH:MM:SS" in UTC+8.
fn format_cst(ms: i64) -> String {
    let secs = ms.div_euclid(1000) + 8 * 3600;
    let date = Date::from_unix_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date.year,
        date.month,
        date.day,
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// A JSON answer with this vendor's content type.
fn json_response_ct(status: StatusCode, body: String) -> Response {
    json_response(status, JSON_CONTENT_TYPE, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::baidu::wire::{
        parse_reply, BaiduError, DetailResult, GenerateResult, GetAllResult, MediaResult,
        Reply as WireReply, SimpleResult, StatResult,
    };
    use serde::de::DeserializeOwned;

    const API_KEY: &str = "sim-baidu-api-key";
    const SECRET_KEY: &str = "sim-baidu-secret-key";
    const APP_ID: &str = "118000001";
    /// 指定用户身份核验, authority compare, failure ends the URL.
    const PLAN_IDENTITY: &str = "1001";
    /// The user enters the identity, authority compare, retries allowed.
    const PLAN_RETRY: &str = "1002";
    /// 指定用户身份核验 + 自建人脸库比对, failure ends the URL.
    const PLAN_REFERENCE: &str = "1003";
    /// The user enters the identity, failure ends the URL.
    const PLAN_ONCE: &str = "1004";
    const NAME: &str = "测试用户";
    /// Synthetic: region 110101, born 1900-01-01, sequence 001.
    const ID_NO: &str = "110101190001010014";
    /// Residence-permit specimen number (FACTS §4.2).
    const HMT_NO: &str = "810000199408230021";
    const SUCCESS_URL: &str = "https://app.example/face/done?state=success&ref=a%2Fb";
    const FAILED_URL: &str = "https://app.example/face/done?state=failed&ref=a%2Fb";

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn plan(
        id: &str,
        identity: bool,
        reference: bool,
        fail_ends: bool,
        threshold: f64,
    ) -> BaiduSimPlan {
        BaiduSimPlan {
            plan_id: id.to_owned(),
            needs_identity: identity,
            needs_reference: reference,
            fail_ends_url: fail_ends,
            threshold,
        }
    }

    fn config() -> BaiduSimConfig {
        BaiduSimConfig {
            api_key: API_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            app_id: APP_ID.to_owned(),
            plans: vec![
                plan(PLAN_IDENTITY, true, false, true, 80.0),
                plan(PLAN_RETRY, false, false, false, 80.0),
                plan(PLAN_REFERENCE, true, true, true, 75.0),
                plan(PLAN_ONCE, false, false, true, 80.0),
            ],
        }
    }

    fn vt(token: &str) -> Value {
        json!({ "verify_token": token })
    }

    fn ok_of<T: DeserializeOwned>(bytes: &[u8]) -> T {
        match parse_reply::<T>(bytes).expect("parseable reply") {
            WireReply::Ok { result, log_id } => {
                assert!(
                    !log_id.is_empty() && log_id.bytes().all(|b| b.is_ascii_digit()),
                    "{log_id}"
                );
                result
            }
            WireReply::Err(e) => panic!("expected success, got {e:?}"),
        }
    }

    fn err_of(bytes: &[u8]) -> BaiduError {
        match parse_reply::<Value>(bytes).expect("parseable reply") {
            WireReply::Err(e) => e,
            WireReply::Ok { result, .. } => panic!("expected an error, got {result}"),
        }
    }

    fn assert_err(bytes: &[u8], code: i64, message: &str) -> BaiduError {
        let e = err_of(bytes);
        assert_eq!((e.code, e.message.as_str()), (code, message), "{e:?}");
        assert!(!e.gateway);
        assert!(e.log_id.bytes().all(|b| b.is_ascii_digit()) && !e.log_id.is_empty());
        e
    }

    fn assert_token_gone(bytes: &[u8]) {
        let e = assert_err(bytes, CODE_TOKEN_INVALID, MSG_TOKEN_INVALID);
        assert!(e.is_verify_token_gone() && !e.is_access_token_error() && !e.is_rate_limit());
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut v = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
        v.extend_from_slice(b"IHDR");
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    fn jpeg_sof(width: u16, height: u16) -> Vec<u8> {
        let mut v = vec![
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0,
            0,
        ];
        v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
        v
    }

    /// Tiny JPEG-looking bytes without a frame header.
    fn tiny_jpeg() -> Vec<u8> {
        vec![
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0xFB, 0xEF, 0xBE, 0x00, 0xFF, 0xD9,
        ]
    }

    struct Harness {
        sim: Arc<BaiduSimulator>,
        root: String,
        base: String,
        host: String,
        client: reqwest::Client,
        access_token: String,
    }

    impl Harness {
        async fn start() -> Self {
            crate::app::install_crypto_provider();
            let sim = BaiduSimulator::new(config(), SimClock::new());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let app = Router::new().nest(MOUNT, sim.router());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client");
            let mut h = Harness {
                sim,
                root: format!("http://{addr}"),
                base: format!("http://{addr}{MOUNT}"),
                host: addr.to_string(),
                client,
                access_token: String::new(),
            };
            h.access_token = h.new_access_token().await;
            h
        }

        async fn oauth(&self, method: reqwest::Method, params: &[(&str, &str)]) -> (u16, Value) {
            let resp = self
                .client
                .request(method, format!("{}/oauth/2.0/token", self.base))
                .query(params)
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            let body = resp.bytes().await.expect("body");
            (status, serde_json::from_slice(&body).expect("json"))
        }

        async fn new_access_token(&self) -> String {
            let (status, v) = self
                .oauth(
                    reqwest::Method::POST,
                    &[
                        ("grant_type", "client_credentials"),
                        ("client_id", API_KEY),
                        ("client_secret", SECRET_KEY),
                    ],
                )
                .await;
            assert_eq!(status, 200, "{v}");
            v["access_token"].as_str().expect("access_token").to_owned()
        }

        async fn post_raw(
            &self,
            path: &str,
            access_token: Option<&str>,
            content_type: Option<&str>,
            body: Vec<u8>,
        ) -> Vec<u8> {
            let mut req = self
                .client
                .post(format!(
                    "{}/rpc/2.0/brain/solution/faceprint/{path}",
                    self.base
                ))
                .body(body);
            if let Some(t) = access_token {
                req = req.query(&[("access_token", t)]);
            }
            if let Some(ct) = content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, ct);
            }
            let resp = req.send().await.expect("send");
            assert_eq!(resp.status().as_u16(), 200);
            assert_eq!(
                resp.headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                Some(JSON_CONTENT_TYPE)
            );
            resp.bytes().await.expect("body").to_vec()
        }

        async fn post_with(&self, access_token: &str, path: &str, body: &Value) -> Vec<u8> {
            self.post_raw(
                path,
                Some(access_token),
                Some("application/json"),
                serde_json::to_vec(body).expect("encode"),
            )
            .await
        }

        async fn post(&self, path: &str, body: &Value) -> Vec<u8> {
            self.post_with(&self.access_token, path, body).await
        }

        async fn ok<T: DeserializeOwned>(&self, path: &str, body: &Value) -> T {
            ok_of(&self.post(path, body).await)
        }

        async fn generate(&self, plan_id: &str) -> String {
            let r: GenerateResult = self
                .ok("verifyToken/generate", &json!({ "plan_id": plan_id }))
                .await;
            r.verify_token
        }

        async fn submit_identity(&self, token: &str, id_no: &str, certificate_type: u8) {
            let r: i64 = self
                .ok(
                    "idcard/submit",
                    &json!({"verify_token": token, "id_name": NAME, "id_no": id_no,
                            "certificate_type": certificate_type}),
                )
                .await;
            assert_eq!(r, 1);
        }

        async fn get(&self, url: &str) -> (u16, String, Vec<u8>) {
            let resp = self.client.get(url).send().await.expect("send");
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (status, ct, resp.bytes().await.expect("body").to_vec())
        }

        async fn page(&self, query: &[(&str, &str)]) -> (u16, String) {
            let resp = self
                .client
                .get(format!("{}/face/print/", self.base))
                .query(query)
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.text().await.expect("text"))
        }

        async fn submit(&self, fields: &[(&str, &str)]) -> reqwest::Response {
            self.client
                .post(format!("{}/face/print/submit", self.base))
                .form(fields)
                .send()
                .await
                .expect("send")
        }
    }

    fn location(resp: &reqwest::Response) -> Option<String> {
        resp.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    // -- OAuth -----------------------------------------------------------------------------------------------

    #[tokio::test]
    async fn oauth_success_and_error_shapes() {
        let h = Harness::start().await;
        let good = [
            ("grant_type", "client_credentials"),
            ("client_id", API_KEY),
            ("client_secret", SECRET_KEY),
        ];
        let now_s = h.sim.clock().now_ms() / 1000;
        for method in [reqwest::Method::POST, reqwest::Method::GET] {
            let (status, v) = h.oauth(method, &good).await;
            assert_eq!(status, 200);
            let token = v["access_token"].as_str().expect("token");
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 5, "{token}");
            assert_eq!(parts[0], "24");
            assert!(parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(parts[2], "2592000");
            let exp: i64 = parts[3].parse().expect("exp");
            assert!((exp - (now_s + 2_592_000)).abs() <= 5, "{exp}");
            assert_eq!(parts[4], format!("282335-{APP_ID}"));
            assert_eq!(v["expires_in"], 2_592_000);
            let refresh = v["refresh_token"].as_str().expect("refresh");
            assert!(
                refresh.starts_with("25.") && refresh.contains(".315360000."),
                "{refresh}"
            );
            assert!(refresh.ends_with(&format!(".282335-{APP_ID}")));
            assert_eq!(v["scope"], "public brain_all_scope");
            assert!(v["session_key"].is_string() && v["session_secret"].is_string());
        }
        let (status, v) = h
            .oauth(
                reqwest::Method::POST,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", "nope"),
                    ("client_secret", SECRET_KEY),
                ],
            )
            .await;
        assert_eq!(status, 401);
        assert_eq!(
            v,
            json!({"error":"invalid_client","error_description":"unknown client id"})
        );
        let (status, v) = h
            .oauth(
                reqwest::Method::POST,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", API_KEY),
                    ("client_secret", "nope"),
                ],
            )
            .await;
        assert_eq!(status, 401);
        assert_eq!(
            v,
            json!({"error":"invalid_client","error_description":"Client authentication failed"})
        );
        for grant in [None, Some("password")] {
            let mut params = vec![("client_id", API_KEY), ("client_secret", SECRET_KEY)];
            if let Some(g) = grant {
                params.push(("grant_type", g));
            }
            let (status, v) = h.oauth(reqwest::Method::POST, &params).await;
            assert_eq!(status, 400);
            assert_eq!(
                v,
                json!({"error":"unsupported_grant_type",
                       "error_description":"The authorization grant type is not supported"})
            );
        }
        // Harness token + POST + GET issued; 7 requests in all.
        assert_eq!(h.sim.issued_access_tokens(), 3);
        assert_eq!(h.sim.stats().token_requests, 7);
    }

    #[tokio::test]
    async fn the_oauth_client_reads_the_simulated_token_endpoint() {
        use crate::config::Secret;
        use crate::vendors::baidu::token::TokenCache;
        let h = Harness::start().await;
        let clock = h.sim.clock().clone();
        let cache = |key: &str| {
            let clock = clock.clone();
            TokenCache::new(
                reqwest::Client::new(),
                &h.base,
                Secret::new(key),
                Secret::new(SECRET_KEY),
                Arc::new(move || clock.now_ms()),
                DAY,
            )
        };
        let token = cache(API_KEY).get().await.expect("token");
        let r: GenerateResult = ok_of(
            &h.post_with(
                token.expose(),
                "verifyToken/generate",
                &json!({"plan_id": PLAN_IDENTITY}),
            )
            .await,
        );
        assert_eq!(r.verify_token.len(), 24);
        let e = cache("wrong").get().await.expect_err("bad key");
        assert_eq!(e.vendor_code, "invalid_client");
    }

    #[tokio::test]
    async fn access_tokens_live_thirty_days_and_gateway_errors() {
        let h = Harness::start().await;
        let body = serde_json::to_vec(&json!({"plan_id": PLAN_IDENTITY})).expect("encode");
        let missing = h
            .post_raw(
                "verifyToken/generate",
                None,
                Some("application/json"),
                body.clone(),
            )
            .await;
        assert_eq!(
            serde_json::from_slice::<Value>(&missing).expect("json"),
            json!({"error_code":100,"error_msg":"Invalid parameter"})
        );
        let e = err_of(&missing);
        assert!(e.gateway && e.is_access_token_error() && e.code == 100);
        let empty = h
            .post_raw(
                "verifyToken/generate",
                Some(""),
                Some("application/json"),
                body.clone(),
            )
            .await;
        assert_eq!(err_of(&empty).code, 100);
        let unknown = h
            .post_raw(
                "result/detail",
                Some("24.nope"),
                Some("application/json"),
                body.clone(),
            )
            .await;
        assert_eq!(
            serde_json::from_slice::<Value>(&unknown).expect("json"),
            json!({"error_code":110,"error_msg":"Access token invalid or no longer valid"})
        );
        assert!(err_of(&unknown).is_access_token_error());

        let first = h.access_token.clone();
        h.sim.clock().advance(29 * DAY);
        let _: GenerateResult = ok_of(
            &h.post_with(
                &first,
                "verifyToken/generate",
                &json!({"plan_id": PLAN_IDENTITY}),
            )
            .await,
        );
        // A new token does not revoke the old one.
        let second = h.new_access_token().await;
        assert_ne!(first, second);
        let _: GenerateResult = ok_of(
            &h.post_with(
                &first,
                "verifyToken/generate",
                &json!({"plan_id": PLAN_IDENTITY}),
            )
            .await,
        );
        h.sim.clock().advance(2 * DAY);
        let expired = h
            .post_raw(
                "uploadMatchImage",
                Some(&first),
                Some("application/json"),
                body.clone(),
            )
            .await;
        assert_eq!(
            serde_json::from_slice::<Value>(&expired).expect("json"),
            json!({"error_code":111,"error_msg":"Access token expired"})
        );
        assert!(err_of(&expired).is_access_token_error());
        let _: GenerateResult = ok_of(
            &h.post_with(
                &second,
                "verifyToken/generate",
                &json!({"plan_id": PLAN_IDENTITY}),
            )
            .await,
        );
        assert_eq!(h.sim.issued_access_tokens(), 2);
    }

    // -- Generate and request validation ---------------------------------------------------------------------

    #[tokio::test]
    async fn generate_plans_and_request_validation() {
        let h = Harness::start().await;
        assert_err(
            &h.post("verifyToken/generate", &json!({"plan_id": "9999"}))
                .await,
            CODE_SERVICE_ERROR,
            "服务异常,请稍后再试",
        );
        assert_err(
            &h.post("verifyToken/generate", &json!({"plan_id": 9999}))
                .await,
            CODE_SERVICE_ERROR,
            "服务异常,请稍后再试",
        );
        // Numeric plan ids, extra fields and a charset parameter are fine.
        let r: GenerateResult = h
            .ok(
                "verifyToken/generate",
                &json!({"plan_id": 1002, "access_token": "ignored", "extra": [1, 2]}),
            )
            .await;
        assert_eq!(r.verify_token.len(), 24);
        assert!(r.verify_token.bytes().all(|b| b.is_ascii_alphanumeric()));
        let _: GenerateResult = ok_of(
            &h.post_raw(
                "verifyToken/generate",
                Some(&h.access_token),
                Some("Application/JSON; charset=UTF-8"),
                br#"{"plan_id":"1001"}"#.to_vec(),
            )
            .await,
        );
        assert_err(
            &h.post("verifyToken/generate", &json!({})).await,
            CODE_PARAM_MISSING,
            "param[plan_id] is null",
        );
        assert_err(
            &h.post("verifyToken/generate", &json!({"plan_id": true}))
                .await,
            CODE_PARAM_INVALID,
            "param[plan_id] format error",
        );
        assert_err(
            &h.post(
                "verifyToken/generate",
                &json!({"plan_id": "1001", "redirect_config": "x"}),
            )
            .await,
            CODE_PARAM_INVALID,
            "param[redirect_config] format error",
        );
        let not_json = "request body should be json format";
        for (ct, body) in [
            (Some("text/plain"), br#"{"plan_id":"1001"}"#.to_vec()),
            (None, br#"{"plan_id":"1001"}"#.to_vec()),
            (
                Some("application/x-www-form-urlencoded"),
                b"plan_id=1001".to_vec(),
            ),
            (Some("application/json"), b"[1]".to_vec()),
            (Some("application/json"), b"{\"plan_id\":".to_vec()),
            (Some("application/json"), Vec::new()),
        ] {
            let r = h
                .post_raw("verifyToken/generate", Some(&h.access_token), ct, body)
                .await;
            assert_err(&r, CODE_NOT_JSON, not_json);
        }
        // Over the 16 MiB body limit.
        let mut big = b"{\"plan_id\":\"1001\",\"x\":\"".to_vec();
        big.resize(BODY_LIMIT + 1, b'a');
        let r = h
            .post_raw(
                "verifyToken/generate",
                Some(&h.access_token),
                Some("application/json"),
                big,
            )
            .await;
        assert_err(&r, CODE_NOT_JSON, not_json);
    }

    // -- The full flow -------------------------------------------------------------------------------------

    #[tokio::test]
    async fn full_pass_flow_over_http() {
        let h = Harness::start().await;
        let token = h.generate(PLAN_IDENTITY).await;

        // Before any attempt.
        assert_err(
            &h.post("result/detail", &vt(&token)).await,
            CODE_NOT_STARTED,
            "认证尚未开始",
        );
        assert_err(
            &h.post("result/simple", &vt(&token)).await,
            CODE_NOT_STARTED,
            "认证尚未开始",
        );
        assert_err(
            &h.post("result/media/query", &vt(&token)).await,
            CODE_NOT_STARTED,
            "认证尚未开始",
        );
        let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
        assert_eq!((all.verify_count, all.verify_result.len()), (0, 0));
        assert_eq!(all.verify_charge_count, Some(0));
        let stat: StatResult = h.ok("result/stat", &vt(&token)).await;
        assert!(stat.values().all(Vec::is_empty) && stat.len() == 7);

        // The page refuses until idcard/submit ran.
        let (status, html) = h.page(&[("token", &token)]).await;
        assert_eq!(status, 409);
        assert!(html.contains("id=\"error\""));
        h.submit_identity(&token, ID_NO, 0).await;

        let query = [
            ("token", token.as_str()),
            ("successUrl", SUCCESS_URL),
            ("failedUrl", FAILED_URL),
        ];
        let (status, html) = h.page(&query).await;
        assert_eq!(status, 200);
        assert!(html.contains("<title>facegate sandbox — Baidu faceprint</title>"));
        assert!(html.contains(r#"<form method="post" action="submit">"#));
        for outcome in PageOutcome::ALL {
            let button = format!(
                r#"<button type="submit" name="outcome" value="{0}" id="{0}">"#,
                outcome.as_str()
            );
            assert!(html.contains(&button), "{button}");
        }
        assert!(html.contains(&format!(r#"name="token" value="{token}""#)));
        assert!(html.contains(&format!(
            r#"name="successUrl" value="{}""#,
            SUCCESS_URL.replace('&', "&amp;")
        )));
        assert!(!html.contains("name=\"id_name\""), "identity is fixed");
        assert!(html.contains("110***********0014") && !html.contains(ID_NO));
        assert!(!html.contains(NAME) && !html.contains("{{"));

        let resp = h
            .submit(&[
                ("token", &token),
                ("outcome", "pass"),
                ("successUrl", SUCCESS_URL),
                ("failedUrl", FAILED_URL),
            ])
            .await;
        assert_eq!(resp.status().as_u16(), 303);
        assert_eq!(location(&resp).as_deref(), Some(SUCCESS_URL));

        let detail: DetailResult = h.ok("result/detail", &vt(&token)).await;
        let scores = detail.verify_result.expect("verify_result");
        let score = scores.score.and_then(|s| s.as_f64()).expect("score");
        assert!((80.0..=100.0).contains(&score), "{score}");
        assert!(scores
            .liveness_score
            .and_then(|s| s.as_f64())
            .is_some_and(|s| s > 0.0));
        assert_eq!(scores.spoofing.and_then(|s| s.as_f64()), Some(0.0));
        let confirm = detail.idcard_confirm.expect("idcard_confirm");
        assert_eq!(
            (confirm.name.as_deref(), confirm.idcard_number.as_deref()),
            (Some(NAME), Some(ID_NO))
        );
        assert_eq!(detail.is_demote, Some(false));
        assert!(detail.idcard_ocr_result.is_none() && detail.idcard_images.is_none());

        let simple: SimpleResult = h.ok("result/simple", &vt(&token)).await;
        assert_eq!(
            simple.image,
            format!(
                "http://{}/sandbox/baidu/solution/faceprint/image/query?verify_token={token}",
                h.host
            )
        );
        let (status, ct, bytes) = h.get(&simple.image).await;
        assert_eq!((status, ct.as_str()), (200, "image/jpeg"));
        assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]));

        let raw_all = h.post("result/getall", &vt(&token)).await;
        let raw: Value = serde_json::from_slice(&raw_all).expect("json");
        let all: GetAllResult = ok_of(&raw_all);
        assert_eq!(all.verify_count, 1);
        assert_eq!(
            (
                all.ocr_charge_count,
                all.match_charge_count,
                all.verify_charge_count
            ),
            (Some(0), Some(0), Some(1))
        );
        let a = &all.verify_result[0];
        assert_eq!(a.order, 1);
        assert!(a.is_verify_passed);
        assert_eq!(raw["result"]["verify_result"][0]["code"], json!("0"));
        assert_eq!(a.message.as_deref(), Some("核验成功"));
        let time = a.verify_time.clone().expect("verify_time");
        assert_eq!(time.len(), 19, "{time}");
        assert!(time.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        }));
        assert_eq!(a.is_charged, Some(true));
        assert_eq!(a.charge_type.as_deref(), Some("verify"));
        assert_eq!(a.charge_time.as_deref(), Some(time.as_str()));
        assert_eq!(
            (a.is_ocr_charge, a.ocr_charge_time.as_deref(), a.ocr_count),
            (Some(false), Some(""), Some(0))
        );
        let d = a.verify_detail.as_ref().expect("verify_detail");
        assert_eq!(d.score.as_ref().and_then(|s| s.as_f64()), Some(score));
        assert_eq!(d.threshold.as_ref().and_then(|s| s.as_f64()), Some(80.0));
        assert_eq!(
            d.liveness_score.as_ref().and_then(|s| s.as_f64()),
            Some(0.0)
        );
        assert_eq!(
            d.spoofing_score.as_ref().and_then(|s| s.as_f64()),
            Some(0.0)
        );
        assert_eq!(d.is_demote, Some(false));
        assert!(d
            .verify_log_id
            .as_ref()
            .is_some_and(|l| !l.as_text().is_empty()));
        let face = d.face_image.clone().expect("face_image");
        assert!(
            face.starts_with(&format!("http://{}/sandbox/baidu/", h.host)),
            "{face}"
        );
        let (status, ct, _) = h.get(&face).await;
        assert_eq!((status, ct.as_str()), (200, "image/jpeg"));
        let c = a.idcard_confirm.as_ref().expect("idcard_confirm");
        assert_eq!(
            (c.name.as_deref(), c.idcard_number.as_deref()),
            (Some(NAME), Some(ID_NO))
        );
        assert_eq!(
            c.idcard_type.as_ref().map(|t| t.as_text()).as_deref(),
            Some("0")
        );
        assert!(a.idcard_ocr_result.is_none() && c.idcard_ocr_result.is_none());
        assert!(raw["result"]["verify_result"][0]
            .get("idcard_ocr_result")
            .is_none());

        let stat: StatResult = h.ok("result/stat", &vt(&token)).await;
        for key in [
            "Verify_FIN",
            "Sessioncode",
            "OCR",
            "verify",
            "VideoLiveness",
            "Livenesscolorful",
            "VerifySec",
        ] {
            assert!(stat.contains_key(key), "{key}");
        }
        let fin = &stat["Verify_FIN"];
        assert_eq!(fin.len(), 1);
        assert_eq!(
            (fin[0].error_code.as_text(), fin[0].count.as_text()),
            ("0".into(), "1".into())
        );
        assert_eq!(stat["verify"][0].count.as_text(), "1");

        let raw_media = h.post("result/media/query", &vt(&token)).await;
        let media: MediaResult = ok_of(&raw_media);
        let raw: Value = serde_json::from_slice(&raw_media).expect("json");
        assert!(raw["result"].get("video").is_none());
        assert_eq!(raw["result"]["extInfo"], Value::Null);
        let videos = media.process_video.expect("processVideo");
        assert_eq!(
            videos,
            vec![format!("http://{}/sandbox/baidu/media/{token}.mp4", h.host)]
        );
        let images = media.images.expect("images");
        assert_eq!(images.len(), 4);
        let (status, ct, _) = h.get(&videos[0]).await;
        assert_eq!((status, ct.as_str()), (200, "video/mp4"));
        for image in &images {
            assert_eq!(h.get(image).await.0, 200, "{image}");
        }

        // Used up: no second verification.
        let (status, html) = h.page(&query).await;
        assert_eq!(status, 410);
        assert!(html.contains("id=\"error\"") && html.contains(MSG_TOKEN_INVALID));
        assert_token_gone(
            &h.post(
                "idcard/submit",
                &json!({"verify_token": token, "id_name": NAME, "id_no": ID_NO, "certificate_type": 0}),
            )
            .await,
        );
        assert_eq!(
            h.sim.complete(&token, PageOutcome::Pass),
            Err(MSG_TOKEN_INVALID.to_owned())
        );
        let stats = h.sim.stats();
        assert_eq!((stats.billed, stats.page_views), (1, 3));
    }

    // -- Failures and retries ------------------------------------------------------------------------------

    #[tokio::test]
    async fn failure_outcomes_detail_and_getall() {
        let h = Harness::start().await;
        let cases = [
            (
                PageOutcome::FaceMismatch,
                CODE_FACE_MISMATCH,
                "人脸比对未通过",
                true,
            ),
            (
                PageOutcome::LivenessFailed,
                CODE_LIVENESS_FAILED,
                "活体检测未通过",
                true,
            ),
            (
                PageOutcome::IdNameMismatch,
                CODE_ID_NAME_MISMATCH,
                "身份证号与姓名不匹配",
                false,
            ),
            (
                PageOutcome::Abandon,
                CODE_USER_ABANDONED,
                "用户放弃认证",
                false,
            ),
        ];
        for (outcome, code, message, billed) in cases {
            let token = h.generate(PLAN_IDENTITY).await;
            h.submit_identity(&token, ID_NO, 0).await;
            let resp = h
                .submit(&[
                    ("token", token.as_str()),
                    ("outcome", outcome.as_str()),
                    ("successUrl", SUCCESS_URL),
                    ("failedUrl", FAILED_URL),
                ])
                .await;
            assert_eq!(resp.status().as_u16(), 303);
            assert_eq!(location(&resp).as_deref(), Some(FAILED_URL), "{outcome}");
            assert_err(&h.post("result/detail", &vt(&token)).await, code, message);
            assert_err(&h.post("result/simple", &vt(&token)).await, code, message);
            let raw = h.post("result/getall", &vt(&token)).await;
            let all: GetAllResult = ok_of(&raw);
            let raw: Value = serde_json::from_slice(&raw).expect("json");
            assert_eq!(all.verify_count, 1, "{outcome}");
            assert_eq!(all.verify_charge_count, Some(i64::from(billed)));
            let a = &all.verify_result[0];
            assert!(!a.is_verify_passed);
            assert_eq!(
                raw["result"]["verify_result"][0]["code"],
                json!(code.to_string())
            );
            assert_eq!(a.message.as_deref(), Some(message));
            assert_eq!(a.is_charged, Some(billed), "{outcome}");
            assert_eq!(
                a.charge_type.as_deref(),
                Some(if billed { "verify" } else { "" })
            );
            let d = a.verify_detail.as_ref().expect("verify_detail");
            assert_eq!(d.threshold.as_ref().and_then(|t| t.as_f64()), Some(80.0));
            let score = d.score.as_ref().and_then(|s| s.as_f64());
            match outcome {
                PageOutcome::FaceMismatch => assert!(score.is_some_and(|s| s < 80.0), "{score:?}"),
                _ => assert_eq!(score, None, "{outcome}"),
            }
            assert_eq!(
                d.face_image.as_deref().is_some_and(str::is_empty),
                outcome == PageOutcome::Abandon
            );
            let stat: StatResult = h.ok("result/stat", &vt(&token)).await;
            assert_eq!(stat["Verify_FIN"][0].error_code.as_text(), code.to_string());
            // The URL is used up (认证未通过时URL失效).
            assert_eq!(h.page(&[("token", &token)]).await.0, 410);
        }
        assert_eq!(h.sim.stats().billed, 2);
    }

    #[tokio::test]
    async fn retry_allowed_when_the_url_stays_valid() {
        let h = Harness::start().await;
        let r: GenerateResult = h
            .ok(
                "verifyToken/generate",
                &json!({"plan_id": PLAN_RETRY,
                        "redirect_config": {"success_url": SUCCESS_URL, "failed_url": FAILED_URL}}),
            )
            .await;
        let token = r.verify_token;
        // redirect_config fills in for the missing query parameters; the user types the identity.
        let (status, html) = h.page(&[("token", &token)]).await;
        assert_eq!(status, 200);
        assert!(html.contains(&format!(
            r#"name="failedUrl" value="{}""#,
            FAILED_URL.replace('&', "&amp;")
        )));
        assert!(html.contains(r#"name="id_name""#) && html.contains(r#"name="id_no""#));

        // Missing identity: the form comes back with an error and nothing is recorded.
        let resp = h
            .submit(&[("token", token.as_str()), ("outcome", "pass")])
            .await;
        assert_eq!(resp.status().as_u16(), 400);
        assert!(resp.text().await.expect("text").contains("id=\"error\""));
        let resp = h
            .submit(&[
                ("token", token.as_str()),
                ("outcome", "pass"),
                ("id_name", NAME),
                ("id_no", "110101190001010015"),
            ])
            .await;
        assert_eq!(resp.status().as_u16(), 400);

        let resp = h
            .submit(&[
                ("token", token.as_str()),
                ("outcome", "face_mismatch"),
                ("id_name", NAME),
                ("id_no", ID_NO),
            ])
            .await;
        assert_eq!(resp.status().as_u16(), 303);
        assert_eq!(location(&resp).as_deref(), Some(FAILED_URL));
        assert_err(
            &h.post("result/detail", &vt(&token)).await,
            CODE_FACE_MISMATCH,
            "人脸比对未通过",
        );
        let (status, html) = h.page(&[("token", &token)]).await;
        assert_eq!(status, 200, "retry allowed");
        assert!(html.contains("<dd>1</dd>"));
        let resp = h
            .submit(&[
                ("token", token.as_str()),
                ("outcome", "pass"),
                ("id_name", NAME),
                ("id_no", HMT_NO),
            ])
            .await;
        assert_eq!(resp.status().as_u16(), 303);
        assert_eq!(location(&resp).as_deref(), Some(SUCCESS_URL));

        let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
        assert_eq!(all.verify_count, 2);
        assert_eq!(all.verify_charge_count, Some(2));
        let orders: Vec<(i64, bool)> = all
            .verify_result
            .iter()
            .map(|a| (a.order, a.is_verify_passed))
            .collect();
        assert_eq!(orders, vec![(1, false), (2, true)]);
        let second = all.verify_result[1]
            .idcard_confirm
            .as_ref()
            .expect("confirm");
        assert_eq!(second.idcard_number.as_deref(), Some(HMT_NO));
        assert_eq!(
            second.idcard_type.as_ref().map(|t| t.as_text()).as_deref(),
            Some("4")
        );
        let _: DetailResult = h.ok("result/detail", &vt(&token)).await;
        // A pass ends it.
        assert_eq!(h.page(&[("token", &token)]).await.0, 410);
        assert_eq!(h.sim.stats().billed, 2);
    }

    #[tokio::test]
    async fn retry_refused_when_failure_ends_the_url() {
        let h = Harness::start().await;
        let token = h.generate(PLAN_ONCE).await;
        h.sim
            .complete(&token, PageOutcome::LivenessFailed)
            .expect("first attempt");
        assert_eq!(
            h.sim.complete(&token, PageOutcome::Pass),
            Err(MSG_TOKEN_INVALID.to_owned())
        );
        let (status, html) = h.page(&[("token", &token)]).await;
        assert_eq!(status, 410);
        assert!(html.contains("id=\"error\""));
        let resp = h
            .submit(&[
                ("token", token.as_str()),
                ("outcome", "pass"),
                ("id_name", NAME),
                ("id_no", ID_NO),
            ])
            .await;
        assert_eq!(resp.status().as_u16(), 410);
        let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
        assert_eq!(all.verify_count, 1);
        // complete() used the synthetic sandbox identity.
        let c = all.verify_result[0]
            .idcard_confirm
            .as_ref()
            .expect("confirm");
        assert_eq!(c.idcard_number.as_deref(), Some(SANDBOX_ID_NUMBER));
    }

    #[tokio::test]
    async fn complete_checks_plan_preconditions() {
        let h = Harness::start().await;
        assert_eq!(
            h.sim.complete("unknown", PageOutcome::Pass),
            Err(MSG_TOKEN_INVALID.to_owned())
        );
        let token = h.generate(PLAN_IDENTITY).await;
        assert!(h.sim.complete(&token, PageOutcome::Pass).is_err());
        h.submit_identity(&token, ID_NO, 0).await;
        let token2 = h.generate(PLAN_REFERENCE).await;
        h.submit_identity(&token2, ID_NO, 0).await;
        assert!(
            h.sim.complete(&token2, PageOutcome::Pass).is_err(),
            "reference missing"
        );
        assert_eq!(h.sim.complete(&token, PageOutcome::Pass), Ok(()));
        assert_eq!(h.sim.stats().billed, 1);
    }

    // -- Time ----------------------------------------------------------------------------------------------

    #[tokio::test]
    async fn verification_window_is_two_hours() {
        let h = Harness::start().await;
        let token = h.generate(PLAN_IDENTITY).await;
        h.sim.clock().advance(HOUR + Duration::from_secs(59 * 60));
        h.submit_identity(&token, ID_NO, 0).await;
        assert_err(
            &h.post("result/detail", &vt(&token)).await,
            CODE_NOT_STARTED,
            "认证尚未开始",
        );
        h.sim.clock().advance(Duration::from_secs(120));
        assert_token_gone(
            &h.post(
                "idcard/submit",
                &json!({"verify_token": token, "id_name": NAME, "id_no": ID_NO, "certificate_type": 0}),
            )
            .await,
        );
        let image = STANDARD.encode(tiny_jpeg());
        assert_token_gone(
            &h.post(
                "uploadMatchImage",
                &json!({"verify_token": token, "image": image}),
            )
            .await,
        );
        let (status, html) = h.page(&[("token", &token)]).await;
        assert_eq!(status, 410);
        assert!(html.contains(MSG_TOKEN_INVALID));
        assert_eq!(
            h.sim.complete(&token, PageOutcome::Pass),
            Err(MSG_TOKEN_INVALID.to_owned())
        );
        for path in [
            "result/detail",
            "result/getall",
            "result/stat",
            "result/simple",
            "result/media/query",
        ] {
            assert_token_gone(&h.post(path, &vt(&token)).await);
        }
        // Unknown verify tokens answer the same.
        assert_token_gone(
            &h.post("result/detail", &vt("AAAAAAAAAAAAAAAAAAAAAAAA"))
                .await,
        );
    }

    #[tokio::test]
    async fn results_kept_three_days_and_media_one_day() {
        let h = Harness::start().await;
        let token = h.generate(PLAN_IDENTITY).await;
        h.submit_identity(&token, ID_NO, 0).await;
        h.sim.complete(&token, PageOutcome::Pass).expect("pass");
        let media: MediaResult = h.ok("result/media/query", &vt(&token)).await;
        let video = media.process_video.expect("video").remove(0);
        let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
        let face = all.verify_result[0]
            .verify_detail
            .as_ref()
            .and_then(|d| d.face_image.clone())
            .expect("face");
        let image = format!(
            "{}/solution/faceprint/image/query?verify_token={token}",
            h.base
        );

        h.sim.clock().advance(23 * HOUR);
        let _: MediaResult = h.ok("result/media/query", &vt(&token)).await;
        assert_eq!(h.get(&video).await.0, 200);
        h.sim.clock().advance(2 * HOUR);
        assert_token_gone(&h.post("result/media/query", &vt(&token)).await);
        let (status, ct, body) = h.get(&video).await;
        assert_eq!((status, ct.as_str()), (404, JSON_CONTENT_TYPE));
        assert_token_gone(&body);
        let _: DetailResult = h.ok("result/detail", &vt(&token)).await;
        assert_eq!(h.get(&image).await.0, 200);

        h.sim.clock().advance(46 * HOUR); // 71 h after completion
        let _: DetailResult = h.ok("result/detail", &vt(&token)).await;
        let _: SimpleResult = h.ok("result/simple", &vt(&token)).await;
        let _: GetAllResult = h.ok("result/getall", &vt(&token)).await;
        h.sim.clock().advance(2 * HOUR); // 73 h
        for path in [
            "result/detail",
            "result/simple",
            "result/getall",
            "result/stat",
        ] {
            assert_token_gone(&h.post(path, &vt(&token)).await);
        }
        assert_eq!(h.get(&image).await.0, 404);
        assert_eq!(h.get(&face).await.0, 404);
    }

    #[tokio::test]
    async fn retry_plan_results_age_from_the_last_attempt() {
        let h = Harness::start().await;
        let token = h.generate(PLAN_RETRY).await;
        h.sim
            .complete(&token, PageOutcome::FaceMismatch)
            .expect("attempt");
        h.sim.clock().advance(2 * HOUR + Duration::from_secs(60));
        assert_eq!(
            h.sim.complete(&token, PageOutcome::Pass),
            Err(MSG_TOKEN_INVALID.to_owned())
        );
        let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
        assert_eq!(all.verify_count, 1);
        assert_err(
            &h.post("result/detail", &vt(&token)).await,
            CODE_FACE_MISMATCH,
            "人脸比对未通过",
        );
        h.sim.clock().advance(3 * DAY);
        assert_token_gone(&h.post("result/getall", &vt(&token)).await);
    }

    // -- Fault injection and stats -------------------------------------------------------------------------

    #[tokio::test]
    async fn qps_limit_injection_alternates_both_shapes() {
        let h = Harness::start().await;
        let token = h.generate(PLAN_IDENTITY).await;
        h.sim.inject_qps_limit(3);
        let first = h.post("result/detail", &vt(&token)).await;
        assert_eq!(
            serde_json::from_slice::<Value>(&first).expect("json"),
            json!({"error_code":18,"error_msg":"Open api qps request limit reached"})
        );
        let e = err_of(&first);
        assert!(e.gateway && e.is_rate_limit() && !e.is_access_token_error());
        let second = h.post("result/getall", &vt(&token)).await;
        let v: Value = serde_json::from_slice(&second).expect("json");
        assert_eq!(
            (v["success"].clone(), v["result"].clone()),
            (json!(false), Value::Null)
        );
        let e = assert_err(&second, 18, "openapi限制");
        assert!(e.is_rate_limit());
        // Injected limits come before the access-token check.
        let third = h
            .post_raw(
                "result/simple",
                None,
                Some("application/json"),
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(err_of(&third).code, 18);
        assert!(err_of(&third).gateway);
        assert_err(
            &h.post("result/detail", &vt(&token)).await,
            CODE_NOT_STARTED,
            "认证尚未开始",
        );
        let stats = h.sim.stats();
        assert_eq!(stats.qps_limited, 3);
        assert_eq!(stats.calls.get("result/detail"), Some(&2));
    }

    #[tokio::test]
    async fn stats_count_every_call() {
        let h = Harness::start().await;
        assert_eq!(
            h.sim.stats(),
            BaiduSimStats {
                token_requests: 1,
                ..BaiduSimStats::default()
            }
        );
        let token = h.generate(PLAN_IDENTITY).await;
        // Still counted, even as an error.
        assert_err(
            &h.post("verifyToken/generate", &json!({"plan_id": "404"}))
                .await,
            CODE_SERVICE_ERROR,
            MSG_SERVICE_ERROR,
        );
        let _ = h
            .post_with("24.unknown", "result/detail", &vt(&token))
            .await;
        let _ = h
            .post_raw(
                "result/getall",
                Some(&h.access_token),
                Some("text/plain"),
                Vec::new(),
            )
            .await;
        h.sim.inject_qps_limit(1);
        let _ = h.post("result/stat", &vt(&token)).await;
        h.submit_identity(&token, ID_NO, 0).await;
        let _ = h.page(&[("token", &token)]).await;
        let _ = h.page(&[("token", "nope")]).await;
        h.sim.complete(&token, PageOutcome::Pass).expect("pass");
        // Unknown paths and wrong methods are not counted.
        let unknown = h.post("result/everything", &vt(&token)).await;
        assert_eq!(
            serde_json::from_slice::<Value>(&unknown).expect("json"),
            json!({"error_code":3,"error_msg":"Unsupported openapi method"})
        );
        let (status, _, _) = h
            .get(&format!(
                "{}/rpc/2.0/brain/solution/faceprint/result/detail",
                h.base
            ))
            .await;
        assert_eq!(status, 405);
        let expected: BTreeMap<String, u64> = [
            ("verifyToken/generate", 2),
            ("result/detail", 1),
            ("result/getall", 1),
            ("result/stat", 1),
            ("idcard/submit", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(
            h.sim.stats(),
            BaiduSimStats {
                token_requests: 1,
                calls: expected,
                qps_limited: 1,
                page_views: 2,
                billed: 1,
            }
        );
    }

    // -- Request validation --------------------------------------------------------------------------------

    #[tokio::test]
    async fn upload_match_image_validation() {
        let h = Harness::start().await;
        let token = h.generate(PLAN_REFERENCE).await;
        h.submit_identity(&token, ID_NO, 0).await;
        let (status, html) = h.page(&[("token", &token)]).await;
        assert_eq!(status, 409, "reference image missing");
        assert!(html.contains("id=\"error\""));
        let upload = |image: String, extra: Value| {
            let mut body = json!({"verify_token": token, "image": image});
            if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
                b.extend(e);
            }
            body
        };
        let rejected = [
            (
                upload("***".into(), json!({})),
                CODE_IMAGE_FORMAT,
                "image format error",
            ),
            (
                upload(STANDARD.encode(b"GIF89a not a face at all"), json!({})),
                CODE_IMAGE_FORMAT,
                "image format error",
            ),
            (
                upload(STANDARD.encode(png(1921, 1080)), json!({})),
                CODE_IMAGE_SIZE,
                "image size error",
            ),
            (
                upload(STANDARD.encode(png(1920, 1081)), json!({})),
                CODE_IMAGE_SIZE,
                "image size error",
            ),
            (
                upload(STANDARD.encode(jpeg_sof(2000, 1000)), json!({})),
                CODE_IMAGE_SIZE,
                "image size error",
            ),
            (
                upload(
                    STANDARD.encode(tiny_jpeg()),
                    json!({"quality_control": "MAX"}),
                ),
                CODE_PARAM_INVALID,
                "param[quality_control] format error",
            ),
            (
                upload(STANDARD.encode(tiny_jpeg()), json!({"liveness_control": 2})),
                CODE_PARAM_INVALID,
                "param[liveness_control] format error",
            ),
            (
                json!({"verify_token": token}),
                CODE_PARAM_MISSING,
                "param[image] is null",
            ),
        ];
        for (body, code, message) in &rejected {
            assert_err(&h.post("uploadMatchImage", body).await, *code, message);
        }
        assert_eq!(
            h.page(&[("token", &token)]).await.0,
            409,
            "nothing was accepted"
        );
        for image in [
            png(1920, 1080),
            png(1080, 1920),
            jpeg_sof(640, 480),
            tiny_jpeg(),
        ] {
            let body = upload(
                STANDARD.encode(image),
                json!({"quality_control": "LOW", "liveness_control": "HIGH"}),
            );
            let r: Option<Value> = ok_of(&h.post("uploadMatchImage", &body).await);
            assert_eq!(r, None);
        }
        assert_eq!(h.page(&[("token", &token)]).await.0, 200);
        h.sim.complete(&token, PageOutcome::Pass).expect("pass");
        let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
        assert_eq!(
            (all.match_charge_count, all.verify_charge_count),
            (Some(1), Some(0))
        );
        assert_eq!(all.verify_result[0].charge_type.as_deref(), Some("match"));
        let threshold = all.verify_result[0]
            .verify_detail
            .as_ref()
            .and_then(|d| d.threshold.as_ref())
            .and_then(|t| t.as_f64());
        assert_eq!(threshold, Some(75.0));
    }

    #[test]
    fn match_image_size_limits() {
        let code = |r: Result<(), Reply>| match r {
            Ok(()) => 0,
            Err(Reply::Fail { code, .. }) => code,
            Err(other) => panic!("{other:?}"),
        };
        assert_eq!(
            code(check_match_image(&"A".repeat(MAX_IMAGE_BASE64_LEN + 4))),
            CODE_IMAGE_SIZE
        );
        assert_eq!(
            code(check_match_image(&STANDARD.encode(png(0, 10)))),
            CODE_IMAGE_FORMAT
        );
        assert_eq!(
            code(check_match_image(&STANDARD.encode(png(10, 10))[..20])),
            CODE_IMAGE_FORMAT
        );
        let truncated_png = STANDARD.encode(&png(10, 10)[..14]);
        assert_eq!(code(check_match_image(&truncated_png)), CODE_IMAGE_FORMAT);
        assert_eq!(png_dimensions(&png(640, 480)), Some((640, 480)));
        assert_eq!(jpeg_dimensions(&jpeg_sof(640, 480)), Some((640, 480)));
        assert_eq!(jpeg_dimensions(&tiny_jpeg()), None);
        assert_eq!(jpeg_dimensions(SYNTHETIC_JPEG), Some((1, 1)));
        // Fill bytes and standalone markers before the frame header.
        let mut padded = vec![0xFF, 0xD8, 0xFF, 0xFF, 0xD0];
        padded.extend_from_slice(&jpeg_sof(3000, 10)[2..]);
        assert_eq!(jpeg_dimensions(&padded), Some((3000, 10)));
        assert_eq!(
            code(check_match_image(&STANDARD.encode(&padded))),
            CODE_IMAGE_SIZE
        );
    }

    #[tokio::test]
    async fn idcard_submit_validation_and_certificate_types() {
        let h = Harness::start().await;
        let token = h.generate(PLAN_IDENTITY).await;
        let submit = |name: Value, id: Value, cert: Option<Value>| {
            let mut body = json!({"verify_token": token, "id_name": name, "id_no": id});
            if let (Some(b), Some(c)) = (body.as_object_mut(), cert) {
                b.insert("certificate_type".into(), c);
            }
            body
        };
        let wrong_check = format!("{}5", &ID_NO[..17]);
        let rejected = [
            (
                submit(json!(NAME), json!(ID_NO), Some(json!(4))),
                CODE_PARAM_INVALID,
                "param[id_no] format error",
            ),
            (
                submit(json!(NAME), json!(HMT_NO), Some(json!(2))),
                CODE_PARAM_INVALID,
                "param[certificate_type] format error",
            ),
            (
                submit(json!(NAME), json!(ID_NO), Some(json!("0"))),
                CODE_PARAM_INVALID,
                "param[certificate_type] format error",
            ),
            (
                submit(json!(NAME), json!(wrong_check), Some(json!(0))),
                CODE_PARAM_INVALID,
                "param[id_no] format error",
            ),
            (
                submit(json!(NAME), json!(&ID_NO[..17]), Some(json!(0))),
                CODE_PARAM_INVALID,
                "param[id_no] format error",
            ),
            (
                submit(json!(NAME), json!(18), Some(json!(0))),
                CODE_PARAM_INVALID,
                "param[id_no] format error",
            ),
            (
                submit(json!("  "), json!(ID_NO), Some(json!(0))),
                CODE_PARAM_MISSING,
                "param[id_name] is null",
            ),
            (
                submit(json!(NAME), Value::Null, Some(json!(0))),
                CODE_PARAM_MISSING,
                "param[id_no] is null",
            ),
        ];
        for (body, code, message) in &rejected {
            assert_err(&h.post("idcard/submit", body).await, *code, message);
        }
        assert_eq!(
            h.page(&[("token", &token)]).await.0,
            409,
            "nothing was accepted"
        );
        // Type omitted = 0; a resubmission replaces it (type 4 with a residence-permit number).
        let r: i64 = h
            .ok("idcard/submit", &submit(json!(NAME), json!(ID_NO), None))
            .await;
        assert_eq!(r, 1);
        h.submit_identity(&token, HMT_NO, 4).await;
        assert_eq!(h.page(&[("token", &token)]).await.0, 200);
        h.sim.complete(&token, PageOutcome::Pass).expect("pass");
        let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
        let c = all.verify_result[0]
            .idcard_confirm
            .as_ref()
            .expect("confirm");
        assert_eq!(c.idcard_number.as_deref(), Some(HMT_NO));
        assert_eq!(
            c.idcard_type.as_ref().map(|t| t.as_text()).as_deref(),
            Some("4")
        );
        // Unknown verify tokens.
        assert_token_gone(
            &h.post(
                "idcard/submit",
                &json!({"verify_token": "x", "id_name": NAME, "id_no": ID_NO}),
            )
            .await,
        );
    }

    #[test]
    fn identity_rules() {
        assert!(validate_identity(NAME, ID_NO, 0).is_ok());
        assert!(validate_identity(NAME, HMT_NO, 4).is_ok());
        assert!(validate_identity(NAME, "830000199201300022", 4).is_ok());
        assert!(validate_identity(NAME, ID_NO, 4).is_err());
        // A lowercase check character x is accepted and canonicalised.
        let x_id = (0..1000u16)
            .filter_map(crate::sandbox::test_id_number)
            .find(|id| id.ends_with('X'))
            .expect("some sequence has check char X");
        let id = validate_identity(NAME, &x_id.to_lowercase(), 0).expect("x accepted");
        assert_eq!(id.number, x_id);
        assert!(validate_identity(NAME, "11010119000101001Ｘ", 0).is_err());
        assert!(validate_identity(&"名".repeat(65), ID_NO, 0).is_err());
    }

    // -- The page ------------------------------------------------------------------------------------------

    #[tokio::test]
    async fn page_escaping_redirects_and_result_page() {
        let h = Harness::start().await;
        let (status, html) = h.page(&[("token", "unknown")]).await;
        assert_eq!(status, 410);
        assert!(html.contains("id=\"error\"") && html.contains(MSG_TOKEN_INVALID));
        let (status, _) = h.page(&[]).await;
        assert_eq!(status, 410);

        let token = h.generate(PLAN_ONCE).await;
        let evil = "https://x.example/?a=\"><script>alert(1)</script>&b='";
        let (status, html) = h.page(&[("token", &token), ("successUrl", evil)]).await;
        assert_eq!(status, 200);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;b=&#39;"));

        // /face/print without the slash goes to /face/print/ (relative Location).
        let resp = h
            .client
            .get(format!("{}/face/print?token={token}", h.base))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 302);
        assert_eq!(
            location(&resp).as_deref(),
            Some(format!("print/?token={token}").as_str())
        );

        let resp = h
            .submit(&[("token", token.as_str()), ("outcome", "maybe")])
            .await;
        assert_eq!(resp.status().as_u16(), 400);
        // No URL known (and a non-http one is ignored): a result page.
        let resp = h
            .submit(&[
                ("token", token.as_str()),
                ("outcome", "pass"),
                ("successUrl", "javascript:alert(1)"),
                ("id_name", NAME),
                ("id_no", ID_NO),
            ])
            .await;
        assert_eq!(resp.status().as_u16(), 200);
        let html = resp.text().await.expect("text");
        assert!(
            html.contains(r#"id="result" data-outcome="pass""#),
            "{html}"
        );
        let _: DetailResult = h.ok("result/detail", &vt(&token)).await;
        assert_eq!(h.root.len() + MOUNT.len(), h.base.len());
    }

    // -- Pure helpers --------------------------------------------------------------------------------------

    #[test]
    fn times_are_utc_plus_8() {
        assert_eq!(format_cst(0), "1970-01-01 08:00:00");
        assert_eq!(format_cst(1_696_903_810_000), "2023-10-10 10:10:10");
        assert_eq!(format_cst(1_704_038_399_999), "2023-12-31 23:59:59");
        assert_eq!(format_cst(1_704_038_400_000), "2024-01-01 00:00:00");
    }

    #[test]
    fn outcomes_parse_and_print() {
        for o in PageOutcome::ALL {
            assert_eq!(PageOutcome::parse(o.as_str()), Some(o));
            assert_eq!(o.as_str().parse::<PageOutcome>(), Ok(o));
            assert_eq!(o.to_string(), o.as_str());
        }
        assert_eq!(PageOutcome::parse("PASS"), None);
        assert!("".parse::<PageOutcome>().is_err());
        let names: Vec<&str> = PageOutcome::ALL.iter().map(PageOutcome::as_str).collect();
        assert_eq!(
            names,
            [
                "pass",
                "face_mismatch",
                "liveness_failed",
                "id_name_mismatch",
                "abandon"
            ]
        );
    }

    #[test]
    fn generated_identifiers() {
        let tokens: std::collections::HashSet<String> =
            (0..200).map(|_| new_verify_token()).collect();
        assert_eq!(tokens.len(), 200);
        assert!(tokens
            .iter()
            .all(|t| t.len() == 24 && t.bytes().all(|b| b.is_ascii_alphanumeric())));
        let id = new_log_id();
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0'));
    }

    #[test]
    fn template_and_escaping() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        // Inserted values are not scanned for placeholders again.
        let out = fill_template(
            "{{a}}-{{b}}-{{c}}-{{",
            &[("a", "{{b}}".into()), ("b", "B".into())],
        );
        assert_eq!(out, "{{b}}-B-{{c}}-{{");
        assert_eq!(mask_name(NAME), "测***");
        assert_eq!(mask_name(""), "");
        for name in [
            "plan_id",
            "identity",
            "token",
            "success_url",
            "failed_url",
            "identity_inputs",
            "notice",
        ] {
            assert!(PAGE_TEMPLATE.contains(&format!("{{{{{name}}}}}")), "{name}");
        }
    }

    #[test]
    fn clock_clones_share_the_offset() {
        let clock = SimClock::new();
        let other = clock.clone();
        let before = other.now_ms();
        clock.advance(DAY);
        assert!(other.now_ms() - before >= 86_400_000);
        assert!(other.now_ms() - before < 86_400_000 + 60_000);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let sim = BaiduSimulator::new(config(), SimClock::new());
        let text = format!("{sim:?}");
        assert!(
            !text.contains(API_KEY) && !text.contains(SECRET_KEY),
            "{text}"
        );
        assert!(text.contains(APP_ID));
    }
}
