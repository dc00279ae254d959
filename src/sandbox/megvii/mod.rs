//! In-process simulator of Megvii Face++ FaceID Lite (H5 人脸核身).
//!
//! Follows megvii-faceid-lite-callbacks.txt and FACTS.md §2 / §5 "Megvii", speaking the wire types of
//! [`crate::vendors::megvii::wire`]. It is mounted under [`MOUNT`]; every route below is relative to that prefix:
//! - `POST /faceid/lite/get_token`, `application/x-www-form-urlencoded` or `multipart/form-data` (image_ref1..3 are
//!   file parts, so they can only come by multipart). 200 `{request_id, time_used, token, biz_id, expired_time,
//!   biz_no}`: a 32-hex single-use token living 1 h on the [`SimClock`], `biz_id` = `"<unix>,<uuid>"`.
//! - `GET /faceid/lite/do?token=..` — the sandbox H5 page (`page.html`): NOT_STARTED -> PROCESSING, one
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
//!   and `verify_result.error_message` only; cancel, timeout and WebRTC-unsupported (status WEBRTC_UNSUPPORTED, or
//!   FAILED with fail_reason WEBRTC_UNSUPPORTED for `webrtc_failed`) interrupt the flow (no
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

use super::web::{esc, fill_template, html_response, json_response, query_param, Bilingual};
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

mod page;
mod result;
mod routes;
mod state;
#[cfg(test)]
mod tests;

use page::*;
use result::*;
use routes::*;
pub use state::MegviiSimulator;
use state::*;

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

const PAGE_TITLE: Bilingual = Bilingual::new(
    "facegate 沙箱 — 旷视 FaceID Lite",
    "facegate sandbox — Megvii FaceID Lite",
);
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
    /// The browser lacks WebRTC, reported as status FAILED with `fail_reason` WEBRTC_UNSUPPORTED (the callback
    /// document's form, sent when get_fail_reason=1; without it FAILED carries no reason).
    WebrtcFailed,
}

impl PageOutcome {
    /// Every outcome, in page order.
    pub const ALL: [PageOutcome; 9] = [
        PageOutcome::Pass,
        PageOutcome::FaceMismatch,
        PageOutcome::LivenessFailed,
        PageOutcome::IdNameMismatch,
        PageOutcome::NoSuchIdNumber,
        PageOutcome::Cancel,
        PageOutcome::Timeout,
        PageOutcome::WebrtcUnsupported,
        PageOutcome::WebrtcFailed,
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
            PageOutcome::WebrtcFailed => "webrtc_failed",
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
            PageOutcome::Cancel
                | PageOutcome::Timeout
                | PageOutcome::WebrtcUnsupported
                | PageOutcome::WebrtcFailed
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
