//! Megvii FaceID Lite wire types (megvii-faceid-lite-callbacks.txt, FACTS.md §2.1-2.4) and their parsing.
//!
//! - `get_token` answers [`GetTokenReply`]; `get_result` answers [`GetResultReply`] (the result fields of
//!   [`LiteResult`] plus `request_id`, `time_used` and optional `images`).
//! - Every error is `{"error_message": "<CODE[: detail]>", "request_id": "..", "time_used": N}` with a non-200 HTTP
//!   status; clients recognise it by the presence of `error_message` ([`ErrorReply`], [`Reply::Err`]).
//! - Callbacks (`notify_url`, and `return_url` by POST) carry a form with `data` (the [`LiteResult`] JSON) and
//!   `sign` = lowercase hex `sha1(api_secret + data)` ([`sign`]); [`parse_callback_data`] reads `data`.
//!
//! Strictness: bodies must be UTF-8 without NUL bytes and hold exactly one JSON object (an array never stands in
//! for an object), with nothing but JSON whitespace after it; values must have the documented types and `status`
//! one of the documented values. Fields Megvii may add later are ignored. The vendor document's JSON examples have
//! stray spaces inside some keys (`"FACE_NOT _FOUND"`, `"idcard _info"`): those are formatting artifacts, the
//! real keys have none.
//!
//! Serialisation (used by the simulator) omits absent optional fields, except `verify_result.error_message`, which
//! is sent as `null` when there is no error, as Megvii does.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use sha1::{Digest, Sha1};

pub use crate::vendors::json::StringOrNumber;

/// Largest callback `data` accepted by [`parse_callback_data`].
pub const MAX_CALLBACK_DATA: usize = 64 * 1024;

/// The `get_token` success body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct GetTokenReply {
    /// `"<unix>,<uuid>"`.
    pub request_id: String,
    /// Server time in ms.
    pub time_used: i64,
    /// The single-use page token (32 lowercase hex in practice).
    pub token: String,
    /// The flow's business id `"<unix>,<uuid>"`, the key of `get_result`.
    pub biz_id: String,
    /// When the token stops working, unix seconds.
    pub expired_time: i64,
    /// The caller's `biz_no`, echoed by newer servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_no: Option<String>,
}

/// An error body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ErrorReply {
    /// `"<CODE>"` or `"<CODE>: <detail>"` (spacing after the colon varies), e.g. `"BAD_ARGUMENTS: idcard_number"`.
    pub error_message: String,
    /// `"<unix>,<uuid>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Server time in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_used: Option<i64>,
}

impl ErrorReply {
    /// The code: the part before the first ':', trimmed (e.g. `"BAD_ARGUMENTS"`).
    pub fn code(&self) -> &str {
        match self.error_message.split_once(':') {
            Some((code, _)) => code.trim(),
            None => self.error_message.trim(),
        }
    }

    /// The detail after the first ':', trimmed (e.g. the argument name); `""` when there is none.
    pub fn detail(&self) -> &str {
        match self.error_message.split_once(':') {
            Some((_, detail)) => detail.trim(),
            None => "",
        }
    }
}

/// An interpreted reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    /// The success body.
    Ok(T),
    /// An error body (any HTTP status, 200 included, when `error_message` is present).
    Err {
        /// The HTTP status it came with.
        http_status: u16,
        /// The body.
        error: ErrorReply,
    },
}

/// Parses a `get_token` answer: a body with `error_message` is [`Reply::Err`] whatever the status; otherwise the
/// status must be 200 and the body a complete [`GetTokenReply`].
pub fn parse_get_token(http_status: u16, body: &[u8]) -> Result<Reply<GetTokenReply>, String> {
    parse_reply(http_status, body)
}

/// Parses a `get_result` answer (same rules as [`parse_get_token`]).
pub fn parse_get_result(http_status: u16, body: &[u8]) -> Result<Reply<GetResultReply>, String> {
    parse_reply(http_status, body)
}

/// Only `error_message`, to tell the two shapes apart.
#[derive(Deserialize)]
struct ErrorProbe {
    error_message: Option<String>,
}

fn parse_reply<T: DeserializeOwned>(http_status: u16, body: &[u8]) -> Result<Reply<T>, String> {
    check_object_text(body)?;
    let probe: ErrorProbe = crate::vendors::json::parse_strict(body)?;
    if probe.error_message.is_some() {
        let error: ErrorReply = crate::vendors::json::parse_strict(body)?;
        return Ok(Reply::Err { http_status, error });
    }
    if http_status != 200 {
        return Err(format!("HTTP {http_status} without error_message"));
    }
    crate::vendors::json::parse_strict(body).map(Reply::Ok)
}

/// UTF-8, no NUL byte, and the first non-whitespace character opens an object.
fn check_object_text(body: &[u8]) -> Result<(), String> {
    if body.contains(&0) {
        return Err("NUL byte in the JSON".to_owned());
    }
    let text = std::str::from_utf8(body).map_err(|_| "JSON is not UTF-8".to_owned())?;
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err("not a JSON object".to_owned());
    }
    Ok(())
}

/// `status` of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LiteStatus {
    /// Token issued, page not opened.
    NotStarted,
    /// The page is open.
    Processing,
    /// The flow ended normally (not necessarily a pass: read liveness and verify results).
    Ok,
    /// The flow failed.
    Failed,
    /// The user cancelled.
    Cancelled,
    /// The user ran out of time.
    Timeout,
    /// The browser cannot do WebRTC.
    WebrtcUnsupported,
}

impl LiteStatus {
    /// The wire value (`"NOT_STARTED"`, ..).
    pub fn as_str(&self) -> &'static str {
        match self {
            LiteStatus::NotStarted => "NOT_STARTED",
            LiteStatus::Processing => "PROCESSING",
            LiteStatus::Ok => "OK",
            LiteStatus::Failed => "FAILED",
            LiteStatus::Cancelled => "CANCELLED",
            LiteStatus::Timeout => "TIMEOUT",
            LiteStatus::WebrtcUnsupported => "WEBRTC_UNSUPPORTED",
        }
    }

    /// Whether the flow is over (every status but `NOT_STARTED` and `PROCESSING`).
    pub fn is_final(&self) -> bool {
        !matches!(self, LiteStatus::NotStarted | LiteStatus::Processing)
    }
}

/// `biz_info`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BizInfo {
    /// The flow's business id from get_token.
    pub biz_id: String,
    /// The caller's `biz_no`.
    pub biz_no: String,
    /// The caller's `biz_extra_data`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_extra_data: Option<String>,
}

/// One face comparison: confidence 0-100 and the thresholds by false accept rate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Comparison {
    /// Similarity 0-100.
    pub confidence: f64,
    /// Thresholds keyed `"1e-3"`, `"1e-4"`, `"1e-5"`, `"1e-6"`.
    pub thresholds: BTreeMap<String, f64>,
}

/// `verify_result`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct VerifyResult {
    /// Unix seconds of the comparison (get_result only with `return_verify_time=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_time: Option<i64>,
    /// `null`, or `NO_SUCH_ID_NUMBER`, `ID_NUMBER_NAME_NOT_MATCH`, `IMAGE_ERROR_UNSUPPORTED_FORMAT: data_source`,
    /// `DATA_SOURCE_ERROR`, `INTERNAL_ERROR`. Always serialised (`null` when absent).
    #[serde(default)]
    pub error_message: Option<String>,
    /// Against the authority source photo (comparison_type 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_faceid: Option<Comparison>,
    /// Against image_ref1 (comparison_type 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref1: Option<Comparison>,
    /// Against image_ref2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref2: Option<Comparison>,
    /// Against image_ref3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref3: Option<Comparison>,
    /// Against the ID card photo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_idcard_photo: Option<Comparison>,
    /// Against the authority data source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_idcard_datasource: Option<Comparison>,
    /// `id_attacked`, `id_photo_monochrome` (comparison_type 1 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_exceptions: Option<BTreeMap<String, i64>>,
}

/// `liveness_result`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LivenessResult {
    /// `PASS`, `FAIL` or `TIMEOUT`.
    pub result: String,
    /// The liveness procedure used (`video`, `still`, `will`, ..).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure_type: Option<String>,
    /// Counters such as `UPLOAD_TIMES`, `FACE_NOT_FOUND`, `LOW_FACE_QUALITY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<BTreeMap<String, i64>>,
    /// Scores and thresholds such as `synthetic_face_confidence`, `mask_threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_genuineness: Option<BTreeMap<String, f64>>,
}

/// OCR birthday; the document sends strings, numbers are accepted too.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct OcrBirthday {
    /// Day of month.
    #[serde(serialize_with = "ser_son")]
    pub day: StringOrNumber,
    /// Month.
    #[serde(serialize_with = "ser_son")]
    pub month: StringOrNumber,
    /// Year.
    #[serde(serialize_with = "ser_son")]
    pub year: StringOrNumber,
}

/// OCR of the ID card's front (portrait) side.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct FrontOcr {
    /// 住址.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// 出生.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthday: Option<OcrBirthday>,
    /// 性别.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// 公民身份号码.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_card_number: Option<String>,
    /// 姓名.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 民族.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race: Option<String>,
    /// Scores for `ID Photo`, `Temporary ID Photo`, `Photocopy`, `Screen`, `Edited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legality: Option<BTreeMap<String, f64>>,
}

/// OCR of the ID card's back (emblem) side.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct BackOcr {
    /// 签发机关.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
    /// 有效期限 `"YYYY.MM.DD-YYYY.MM.DD"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_date: Option<String>,
    /// Legality scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legality: Option<BTreeMap<String, f64>>,
}

/// One side of the ID card.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Side<T> {
    /// What OCR read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr_result: Option<T>,
    /// How many photos the user uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_times: Option<i64>,
}

/// `idcard_info` (absent for idcard_mode 0 and when the user interrupted the flow).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct IdcardInfo {
    /// The idcard_mode of the flow (`"1"` in the document).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_son"
    )]
    pub idcard_mode: Option<StringOrNumber>,
    /// The caller's idcard_uneditable_field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idcard_uneditable_field: Option<String>,
    /// The confirmed ID number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idcard_number: Option<String>,
    /// The confirmed name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idcard_name: Option<String>,
    /// The confirmed validity period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idcard_valid_date: Option<String>,
    /// The confirmed issuing authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idcard_issued_by: Option<String>,
    /// The front side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_side: Option<Side<FrontOcr>>,
    /// The back side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_side: Option<Side<BackOcr>>,
    /// Per-field OCR quality of the front side (shape varies; kept as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr_front_quality: Option<serde_json::Value>,
    /// Per-field OCR quality of the back side (shape varies; kept as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr_back_quality: Option<serde_json::Value>,
}

/// One entry of `will_result` (意愿核身, procedure_type `will`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct WillResult {
    /// `PASS` or `FAIL`.
    pub result: String,
    /// `""` on a pass, e.g. `ACTION_FAIL` on a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will_error_message: Option<String>,
}

/// A flow's result: the callback `data` JSON, and the result part of `get_result`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LiteResult {
    /// Where the flow stands.
    pub status: LiteStatus,
    /// Why it failed, with `get_fail_reason=1` (e.g. `WEBRTC_UNSUPPORTED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// Business ids.
    pub biz_info: BizInfo,
    /// ID card data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idcard_info: Option<IdcardInfo>,
    /// Liveness outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_result: Option<LivenessResult>,
    /// Face comparison outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_result: Option<VerifyResult>,
    /// Will (意愿) results, procedure_type `will` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will_result: Option<Vec<WillResult>>,
    /// `"0"`/`"1"`: several faces seen (with `return_multifaces_tag=1` only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_son"
    )]
    pub multifaces_tag: Option<StringOrNumber>,
}

/// Parses a callback's `data` strictly: at most [`MAX_CALLBACK_DATA`] bytes, no NUL, exactly one JSON object and
/// nothing after it but JSON whitespace. Verify `sign` over the same text first ([`sign`]).
pub fn parse_callback_data(data: &str) -> Result<LiteResult, String> {
    if data.len() > MAX_CALLBACK_DATA {
        return Err(format!("callback data over {MAX_CALLBACK_DATA} bytes"));
    }
    check_object_text(data.as_bytes())?;
    crate::vendors::json::parse_strict(data.as_bytes())
}

/// `images` of get_result: `"data:image/jpeg;base64,.."` strings (see [`decode_data_uri_jpeg`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Images {
    /// The best face frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_best: Option<String>,
    /// ID card front.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_idcard_front: Option<String>,
    /// ID card back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_idcard_back: Option<String>,
}

/// The `get_result` success body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct GetResultReply {
    /// The result fields (`status`, `biz_info`, ..); while `NOT_STARTED`/`PROCESSING` without idcard_info,
    /// liveness_result and verify_result.
    #[serde(flatten)]
    pub result: LiteResult,
    /// `"<unix>,<uuid>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Server time in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_used: Option<i64>,
    /// Images, with `return_image` > 0 and status `OK` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Images>,
}

/// Decodes `"data:image/jpeg;base64,<b64>"` (also `image/jpg` and `image/png`) to bytes; `None` for anything else,
/// bad base64 or an empty image.
pub fn decode_data_uri_jpeg(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let b64 = [
        "data:image/jpeg;base64,",
        "data:image/jpg;base64,",
        "data:image/png;base64,",
    ]
    .iter()
    .find_map(|prefix| s.strip_prefix(prefix))?;
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()
        .filter(|bytes| !bytes.is_empty())
}

/// The callback signature: lowercase hex `sha1(api_secret + data)`.
pub fn sign(api_secret: &str, data: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hasher = Sha1::new();
    hasher.update(api_secret.as_bytes());
    hasher.update(data.as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest.iter() {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(&c) = HEX.get(usize::from(nibble)) {
                out.push(char::from(c));
            }
        }
    }
    out
}

/// Serialises a [`StringOrNumber`] as it came (string or number).
fn ser_son<S: Serializer>(value: &StringOrNumber, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        StringOrNumber::Text(text) => serializer.serialize_str(text),
        StringOrNumber::Number(number) => number.serialize(serializer),
    }
}

fn ser_opt_son<S: Serializer>(
    value: &Option<StringOrNumber>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => ser_son(v, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendor document's examples assembled into one `data`, with the stray spaces removed from the keys (the
    /// legality key "Temporary ID Photo " keeps its trailing space: it is a map key, not a field).
    const DOC_DATA: &str = r#"{
        "status": "OK",
        "biz_info": {"biz_extra_data": "...", "biz_id": "1462259748,52b13fb5-8dfb-4537-a62b-a641d5e929f1",
                     "biz_no": "cc47190f-5502-44a2-ab74-ea4f0f649f61"},
        "idcard_info": {"idcard_mode": "1", "idcard_uneditable_field": "idcard_number, idcard_valid_date",
            "idcard_number": "xxxxxx19910602xxxx", "idcard_name": "陈AB", "idcard_valid_date": "2010.11.13-2020.11.13",
            "idcard_issued_by": "北京市公安局",
            "front_side": {"ocr_result": {"address": "北京市海淀区XXXX", "birthday": {"day": "2", "month": "6", "year": "1991"},
                "gender": "男", "id_card_number": "xxxxxx19910602xxxx", "name": "陈XX", "race": "汉",
                "legality": {"ID Photo": 0.855, "Temporary ID Photo ": 0, "Photocopy": 0.049, "Screen": 0.096, "Edited": 0}},
                "upload_times": 1},
            "back_side": {"ocr_result": {"issued_by": " 北京市公安局海淀分局", "valid_date": "2010.11.13-2020.11.13",
                "legality": {"ID Photo": 0.855, "Temporary ID Photo ": 0, "Photocopy": 0.049, "Screen": 0.096, "Edited": 0}},
                "upload_times": 2},
            "ocr_front_quality": {"gender": {"quality": 0.925, "logic": 0, "result": "男"},
                "birth_year": {"quality": 0.942, "logic": 0, "result": "1996"}},
            "ocr_back_quality": {"valid_date_start": {"quality": 0.995, "logic": 0, "result": "20140515"}}},
        "liveness_result": {"result": "PASS", "procedure_type": "will",
            "details": {"UPLOAD_TIMES": 5, "FACE_NOT_FOUND": 0, "LOW_FACE_QUALITY": 0, "INVALID_VIDEO_DURATION": 1,
                "SR_ERROR": 2, "NOT_SYNCHRONIZED": 1, "VIDEO_FORMAT_UNSUPPORTED": 0, "NO_AUDIO": 0},
            "face_genuineness": {"synthetic_face_confidence": 0.88, "synthetic_face_threshold": 0.5,
                "mask_confidence": 0.32, "mask_threshold": 0.5, "screen_replay_confidence": 0,
                "screen_replay_threshold": 0.5}},
        "verify_result": {"verify_time": 1462259763,
            "result_faceid": {"confidence": 68.918, "thresholds": {"1e-3": 64, "1e-4": 69, "1e-5": 74, "1e-6": 79.9}},
            "result_ref1": {"confidence": 68.918, "thresholds": {"1e-3": 64, "1e-4": 69, "1e-5": 74, "1e-6": 79.9}},
            "result_idcard_photo": {"confidence": 68.918, "thresholds": {"1e-3": 64, "1e-4": 69, "1e-5": 74, "1e-6": 79.9}},
            "result_idcard_datasource": {"confidence": 68.918, "thresholds": {"1e-3": 64, "1e-4": 69, "1e-5": 74, "1e-6": 79.9}},
            "id_exceptions": {"id_attacked": 0, "id_photo_monochrome": 0}},
        "will_result": [{"will_error_message": "", "result": "PASS"}],
        "multifaces_tag": 0
    }"#;

    #[test]
    fn megvii_document_example_parses() {
        let r = parse_callback_data(DOC_DATA).unwrap();
        assert_eq!(r.status, LiteStatus::Ok);
        assert_eq!(
            r.biz_info.biz_id,
            "1462259748,52b13fb5-8dfb-4537-a62b-a641d5e929f1"
        );
        assert_eq!(r.biz_info.biz_extra_data.as_deref(), Some("..."));
        let id = r.idcard_info.as_ref().unwrap();
        assert_eq!(id.idcard_mode.as_ref().unwrap().as_text(), "1");
        let front = id.front_side.as_ref().unwrap().ocr_result.as_ref().unwrap();
        assert_eq!(front.birthday.as_ref().unwrap().year.as_f64(), Some(1991.0));
        assert_eq!(front.legality.as_ref().unwrap()["Temporary ID Photo "], 0.0);
        assert_eq!(id.back_side.as_ref().unwrap().upload_times, Some(2));
        let l = r.liveness_result.as_ref().unwrap();
        assert_eq!(l.result, "PASS");
        assert_eq!(l.details.as_ref().unwrap()["FACE_NOT_FOUND"], 0);
        assert_eq!(
            l.face_genuineness.as_ref().unwrap()["synthetic_face_confidence"],
            0.88
        );
        let v = r.verify_result.as_ref().unwrap();
        assert_eq!(v.verify_time, Some(1462259763));
        assert_eq!(v.error_message, None);
        let faceid = v.result_faceid.as_ref().unwrap();
        assert_eq!(faceid.confidence, 68.918);
        assert_eq!(faceid.thresholds["1e-4"], 69.0);
        assert_eq!(faceid.thresholds["1e-6"], 79.9);
        assert!(v.result_idcard_datasource.is_some());
        assert_eq!(v.id_exceptions.as_ref().unwrap()["id_photo_monochrome"], 0);
        assert_eq!(
            r.will_result.as_ref().unwrap()[0]
                .will_error_message
                .as_deref(),
            Some("")
        );
        assert_eq!(r.multifaces_tag.as_ref().unwrap().as_text(), "0");

        // Serialising and reading back gives the same value; error_message is sent as null.
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""error_message":null"#), "{text}");
        assert!(!text.contains("fail_reason"), "{text}");
        assert!(text.contains(r#""idcard_mode":"1""#), "{text}");
        assert!(text.contains(r#""multifaces_tag":0"#), "{text}");
        assert_eq!(parse_callback_data(&text).unwrap(), r);
    }

    #[test]
    fn megvii_numbers_read_back_the_same_after_serialising() {
        // Found by fuzzing (fuzz/fuzz_targets/megvii_get_result.rs): without serde_json's float_roundtrip, a
        // number such as 1e-30 could read back one ULP off once serialised.
        let body = r#"{"status":"OK","biz_info":{"biz_id":"1,a","biz_no":"n"},"request_id":"1,r","time_used":5,
            "idcard_info":{"ocr_front_quality":{"birth_year":{"quality":0.942,"logic":1e-30}}},
            "verify_result":{"result_faceid":{"confidence":68.918,"thresholds":{"1e-3":64,"1e-6":7.9e-300}}}}"#;
        let Reply::Ok(r) = parse_get_result(200, body.as_bytes()).unwrap() else {
            panic!()
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            parse_get_result(200, text.as_bytes()).unwrap(),
            Reply::Ok(r)
        );
        let data = r#"{"status":"OK","biz_info":{"biz_id":"1,a","biz_no":"n"},
            "liveness_result":{"result":"PASS","face_genuineness":{"mask_confidence":1e-30}}}"#;
        let r = parse_callback_data(data).unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(parse_callback_data(&text).unwrap(), r);
    }

    #[test]
    fn megvii_minimal_and_failure_data() {
        let r = parse_callback_data(
            r#"{"status":"WEBRTC_UNSUPPORTED","fail_reason":"WEBRTC_UNSUPPORTED","biz_info":{"biz_id":"1,a","biz_no":"n"}}"#,
        )
        .unwrap();
        assert_eq!(r.status, LiteStatus::WebrtcUnsupported);
        assert!(r.status.is_final());
        assert!(
            r.idcard_info.is_none() && r.liveness_result.is_none() && r.verify_result.is_none()
        );
        let r = parse_callback_data(
            r#"{"status":"OK","biz_info":{"biz_id":"1,a","biz_no":"n"},"verify_result":{"error_message":"ID_NUMBER_NAME_NOT_MATCH"}}"#,
        )
        .unwrap();
        assert_eq!(
            r.verify_result.unwrap().error_message.as_deref(),
            Some("ID_NUMBER_NAME_NOT_MATCH")
        );
    }

    #[test]
    fn megvii_status_values() {
        for (text, status, final_) in [
            ("NOT_STARTED", LiteStatus::NotStarted, false),
            ("PROCESSING", LiteStatus::Processing, false),
            ("OK", LiteStatus::Ok, true),
            ("FAILED", LiteStatus::Failed, true),
            ("CANCELLED", LiteStatus::Cancelled, true),
            ("TIMEOUT", LiteStatus::Timeout, true),
            ("WEBRTC_UNSUPPORTED", LiteStatus::WebrtcUnsupported, true),
        ] {
            let parsed: LiteStatus = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(parsed, status);
            assert_eq!(status.as_str(), text);
            assert_eq!(status.is_final(), final_);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{text}\"")
            );
        }
        for bad in ["SUCCESS", "ok", "Ok", ""] {
            let data =
                format!(r#"{{"status":"{bad}","biz_info":{{"biz_id":"1,a","biz_no":"n"}}}}"#);
            assert!(parse_callback_data(&data).is_err(), "{bad}");
        }
    }

    #[test]
    fn megvii_callback_data_is_strict() {
        let good = r#"{"status":"CANCELLED","biz_info":{"biz_id":"1,a","biz_no":"n"}}"#;
        assert!(parse_callback_data(good).is_ok());
        assert!(parse_callback_data(&format!(" {good}\n")).is_ok());
        for bad in [
            format!("{good}\0"),
            format!("{good} x"),
            format!("{good}\n{good}"),
            format!("{good}}}"),
            good.replace("CANCELLED", "CANCEL\0LED"),
            format!("\0{good}"),
            format!("[{good}]"),
            r#"["CANCELLED",{"biz_id":"1,a","biz_no":"n"}]"#.to_owned(),
            r#"{"status":"CANCELLED"}"#.to_owned(),
            r#"{"status":"CANCELLED","status":"OK","biz_info":{"biz_id":"1,a","biz_no":"n"}}"#.to_owned(),
            r#"{"status":"OK","biz_info":{"biz_id":"1,a","biz_no":"n"},"verify_result":{"result_faceid":{"confidence":"x","thresholds":{}}}}"#.to_owned(),
            String::new(),
        ] {
            assert!(parse_callback_data(&bad).is_err(), "{bad:?}");
        }
        let padding = " ".repeat(MAX_CALLBACK_DATA);
        assert!(parse_callback_data(&format!("{good}{padding}")).is_err());
    }

    #[test]
    fn megvii_get_token_replies() {
        let ok = br#"{"request_id":"1461740007,71eeb124-08f0-47b3-8fc8-ac048cfa1372","time_used":204,
            "token":"aa9fd8d0a1b34a7ea2b5a0c1c0a7e3a1","biz_id":"1461740007,ac5b0a28-7e49-4b05-8efc-1eb8f6fb1a9e",
            "expired_time":1461743607,"biz_no":"order-1"}"#;
        let Reply::Ok(r) = parse_get_token(200, ok).unwrap() else {
            panic!()
        };
        assert_eq!(r.token, "aa9fd8d0a1b34a7ea2b5a0c1c0a7e3a1");
        assert_eq!(r.expired_time - 1461740007, 3600);
        assert_eq!(r.biz_no.as_deref(), Some("order-1"));
        let older =
            br#"{"request_id":"1,a","time_used":1,"token":"t","biz_id":"1,b","expired_time":2}"#;
        assert!(matches!(
            parse_get_token(200, older).unwrap(),
            Reply::Ok(GetTokenReply { biz_no: None, .. })
        ));

        let err =
            br#"{"error_message":"BAD_ARGUMENTS: idcard_number","request_id":"1,c","time_used":3}"#;
        let Reply::Err { http_status, error } = parse_get_token(400, err).unwrap() else {
            panic!()
        };
        assert_eq!(http_status, 400);
        assert_eq!(
            (error.code(), error.detail()),
            ("BAD_ARGUMENTS", "idcard_number")
        );
        assert_eq!(error.request_id.as_deref(), Some("1,c"));
        let Reply::Err { error, .. } =
            parse_get_token(403, br#"{"error_message":"AUTHENTICATION_ERROR"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((error.code(), error.detail()), ("AUTHENTICATION_ERROR", ""));
        let Reply::Err { http_status, error } =
            parse_get_token(200, br#"{"error_message":"AUTHORIZATION_ERROR:Denied"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(http_status, 200);
        assert_eq!(
            (error.code(), error.detail()),
            ("AUTHORIZATION_ERROR", "Denied")
        );

        // 200 without a token, an error status without error_message, junk.
        assert!(parse_get_token(200, br#"{"request_id":"1,a","time_used":1}"#).is_err());
        assert!(parse_get_token(500, br#"{"request_id":"1,a","time_used":1}"#).is_err());
        assert!(parse_get_token(502, b"<html>Bad Gateway</html>").is_err());
        assert!(parse_get_token(200, &[ok.as_slice(), b" {}"].concat()).is_err());
        assert!(parse_get_token(400, br#"{"error_message":7}"#).is_err());
    }

    #[test]
    fn megvii_get_result_replies_and_images() {
        let jpeg = [0xFF_u8, 0xD8, 0xFF, 0xD9];
        use base64::Engine as _;
        let uri = format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(jpeg)
        );
        let body = format!(
            r#"{{"status":"OK","biz_info":{{"biz_id":"1,a","biz_no":"n"}},"request_id":"1,r","time_used":5,
                "liveness_result":{{"result":"PASS"}},"images":{{"image_best":"{uri}"}}}}"#
        );
        let Reply::Ok(r) = parse_get_result(200, body.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.result.status, LiteStatus::Ok);
        assert_eq!(r.request_id.as_deref(), Some("1,r"));
        let images = r.images.as_ref().unwrap();
        assert_eq!(
            decode_data_uri_jpeg(images.image_best.as_deref().unwrap()).unwrap(),
            jpeg
        );
        assert!(images.image_idcard_front.is_none());
        // Round trip through Serialize (flatten).
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            parse_get_result(200, text.as_bytes()).unwrap(),
            Reply::Ok(r)
        );

        let Reply::Err { error, .. } = parse_get_result(
            400,
            br#"{"error_message":"RESULT_NOT_FOUND","request_id":"1,x","time_used":2}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(error.code(), "RESULT_NOT_FOUND");
        assert!(parse_get_result(
            200,
            br#"{"status":"DONE","biz_info":{"biz_id":"1","biz_no":"n"}}"#
        )
        .is_err());
        assert!(parse_get_result(200, br#"{"biz_info":{"biz_id":"1","biz_no":"n"}}"#).is_err());

        assert_eq!(
            decode_data_uri_jpeg("data:image/png;base64,iVBO"),
            Some(vec![0x89, 0x50, 0x4e])
        );
        assert_eq!(decode_data_uri_jpeg("data:image/gif;base64,R0lG"), None);
        assert_eq!(decode_data_uri_jpeg("data:image/jpeg;base64,@@@"), None);
        assert_eq!(decode_data_uri_jpeg("data:image/jpeg;base64,"), None);
        assert_eq!(decode_data_uri_jpeg("/9j/"), None);
    }

    #[test]
    fn megvii_sign_is_lowercase_hex_sha1_of_secret_and_data() {
        // printf '%s' 'secret{}' | sha1sum
        assert_eq!(
            sign("secret", "{}"),
            "313497c3712f3817a8a95eb3763b52f7c09690ba"
        );
        // printf '%s' 'sandbox-secret{"status":"OK"}' | sha1sum
        assert_eq!(
            sign("sandbox-secret", r#"{"status":"OK"}"#),
            "8d44fe2fc1336e4a4f644b417c6f276e441b2fab"
        );
        assert_ne!(sign("secret", "{} "), sign("secret", "{}"));
    }
}
