//! In-process simulator of the Baidu AI H5 人脸实名认证 (faceprint) solution.
//!
//! Follows baidu-faceprint-h5-api.txt and FACTS.md §1 / §5 "Baidu". It is mounted under [`MOUNT`]; every route below
//! is relative to that prefix:
//! - `GET|POST /oauth/2.0/token?grant_type=client_credentials&client_id=..&client_secret=..` — access tokens
//!   (30 days on the [`SimClock`]; a new token never revokes older ones).
//! - `POST /rpc/2.0/brain/solution/faceprint/<path>?access_token=..`, `<path>` one of `verifyToken/generate`,
//!   `idcard/submit`, `uploadMatchImage`, `result/simple`, `result/detail`, `result/stat`, `result/media/query`,
//!   `result/getall`; `application/json` bodies, HTTP 200 for every answer.
//! - `GET /face/print/?token=..&successUrl=..&failedUrl=..` — the sandbox H5 page (`page.html`), and
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

use super::web::{esc, fill_template, html_response, json_response, query_param, Bilingual};
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

mod page;
mod routes;
mod state;
#[cfg(test)]
mod tests;

use page::*;
use routes::*;
pub use state::BaiduSimulator;
use state::*;

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
const PAGE_TITLE: Bilingual = Bilingual::new(
    "facegate 沙箱 — 百度H5人脸实名认证",
    "facegate sandbox — Baidu faceprint",
);

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
