//! In-process simulator of the Juhe (聚合数据) verifyface HTTP API.
//!
//! Follows juhe-verifyface-api.txt and FACTS.md §3 / §5 "Juhe":
//! - `POST /verifyface/verify` and `POST /verifyface/verifyEncry`,
//!   `application/x-www-form-urlencoded` fields `key`, `idcard`, `realname`,
//!   `image`; HTTP 200 with a JSON body (`application/json;charset=utf-8`).
//! - Success: `{"reason":"成功","result":{...},"error_code":0}` (billed).
//! - Service errors: `{"reason":"...","result":null,"error_code":2264xx}`.
//! - System errors: `{"resultcode":"1xx","reason":"...","result":null,"error_code":100xx}`.
//!
//! The outcome is chosen by the ID number's sequence code (`idcard[14..17]`),
//! see [`SCENARIOS`]; every other sequence code is a successful match with
//! score "96".
//!
//! Decisions where the vendor documents are silent (INFERRED):
//! - the body is parsed as a raw form (`+` decodes to a space), so base64
//!   sent without urlencoding breaks, as it would on a real form parser;
//! - a repeated field uses its first occurrence;
//! - the ID check character is compared case-insensitively (`x` == `X`);
//! - an unreadable or over-limit body (16 MiB) is answered like a wrong
//!   content type (226403 "请求格式错误"), keeping HTTP 200;
//! - evaluation order: content type, key, empty fields, (decryption),
//!   idcard format, image base64, system/service error scenarios,
//!   name mismatch (res 3), image magic (res 2 / 3004), face outcome.
//!
//! Nothing here logs request data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;

use crate::domain::validation::gb11643_check_char;
use crate::vendors::juhe::crypto::JuheKey;

/// Maximum accepted request body.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";

const MSG_RES1: &str = "身份证号与姓名匹配，且比对成功";
const MSG_RES2: &str = "身份证核查成功，但人脸比对失败";
const MSG_RES3: &str = "身份证号与姓名不匹配";
const DESC_3003: &str = "人脸库中的照片检测不到人脸";
const DESC_3004: &str = "用户上传的照片检测不到人脸";
const DESC_3005: &str = "人脸比对失败";
/// The desc of the undocumented code 3006 (scenario 907).
const DESC_OTHER: &str = "其他原因";

const REASON_BAD_FORMAT: &str = "请求格式错误";
const REASON_DECRYPT: &str = "参数错误:解密失败";
const REASON_IDCARD_FORMAT: &str = "参数错误:身份证号码格式错误";
const REASON_IMAGE_FORMAT: &str = "参数错误:image格式错误";

/// The documented sandbox scenarios: (sequence code, scenario) — used for docs and test identity generation.
///
/// The sequence code is characters 15–17 of the ID number (`idcard[14..17]`).
/// Any other sequence code: res 1, score "96".
pub const SCENARIOS: &[(&str, &str)] = &[
    ("901", "res 2, code 3005 人脸比对失败"),
    ("902", "res 3, 身份证号与姓名不匹配"),
    ("903", "res 2, code 3004 用户上传的照片检测不到人脸"),
    ("904", "res 2, code 3003 人脸库中的照片检测不到人脸"),
    ("905", "res 1, score 55 (fails the 60 / 1e-3 threshold)"),
    ("906", "res 1, score 65 (passes 60 / 1e-3, fails 70 / 1e-4)"),
    (
        "907",
        "res 2, code 3006 (not in the document; seen in the wild), desc 其他原因",
    ),
    ("908", "res 2 without code or desc (seen in the wild)"),
    (
        "909",
        "res \"1\" and error_code \"0\" sent as strings (seen in the wild), score 96",
    ),
    (
        "910",
        "res 2, code 3005, message echoing the request's realname and idcard (seen in the wild)",
    ),
    ("911", "error_code 226401 数据源超时"),
    ("912", "error_code 226402 查无记录"),
    ("914", "error_code 226404 对比错误"),
    ("921", "error_code 10012 请求超过次数限制"),
    ("922", "error_code 10011 当前IP请求超过限制"),
    ("923", "error_code 10013 测试KEY超过请求限制"),
    ("924", "error_code 10014 系统内部异常"),
    ("925", "error_code 10020 接口维护"),
    ("931", "res 1, score 96, answered after 3 s (a slow vendor)"),
    (
        "932",
        "res 1, score 96, answered after 120 s (longer than any sane client timeout)",
    ),
];

/// How long the simulator holds its answer for a sequence code (slow-vendor scenarios).
fn answer_delay(seq: &str) -> Duration {
    match seq {
        "931" => Duration::from_secs(3),
        "932" => Duration::from_secs(120),
        _ => Duration::ZERO,
    }
}

/// Simulator configuration: the account's request `key` and its `openid`
/// (the verifyEncry key is derived from the openid).
#[derive(Clone)]
pub struct JuheSimConfig {
    pub key: String,
    pub openid: String,
}

impl std::fmt::Debug for JuheSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JuheSimConfig")
            .field("key", &"***")
            .field("openid", &"***")
            .finish()
    }
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JuheSimStats {
    /// Requests to `/verifyface/verify` (any outcome).
    pub verify_calls: u64,
    /// Requests to `/verifyface/verifyEncry` (any outcome).
    pub verify_encry_calls: u64,
    /// Replies with `error_code` 0 (billed by Juhe).
    pub billed_calls: u64,
}

/// The simulator: configuration plus counters. Build with [`JuheSimulator::new`].
pub struct JuheSimulator {
    cfg: JuheSimConfig,
    aes_key: JuheKey,
    verify_calls: AtomicU64,
    verify_encry_calls: AtomicU64,
    billed_calls: AtomicU64,
}

impl std::fmt::Debug for JuheSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JuheSimulator")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Verify,
    VerifyEncry,
}

impl JuheSimulator {
    pub fn new(cfg: JuheSimConfig) -> std::sync::Arc<Self> {
        let aes_key = JuheKey::from_openid(&cfg.openid);
        Arc::new(JuheSimulator {
            cfg,
            aes_key,
            verify_calls: AtomicU64::new(0),
            verify_encry_calls: AtomicU64::new(0),
            billed_calls: AtomicU64::new(0),
        })
    }

    /// Routes: `POST /verifyface/verify` and `POST /verifyface/verifyEncry`.
    pub fn router(self: &std::sync::Arc<Self>) -> axum::Router {
        Router::new()
            .route("/verifyface/verify", post(verify_handler))
            .route("/verifyface/verifyEncry", post(verify_encry_handler))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Arc::clone(self))
    }

    pub fn stats(&self) -> JuheSimStats {
        JuheSimStats {
            verify_calls: self.verify_calls.load(Ordering::Relaxed),
            verify_encry_calls: self.verify_encry_calls.load(Ordering::Relaxed),
            billed_calls: self.billed_calls.load(Ordering::Relaxed),
        }
    }

    /// Answers one request; the reply is held for the scenario's delay (billing counts when the vendor decides,
    /// which is before the answer leaves, as with a real slow vendor).
    async fn serve(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let mut delay = Duration::ZERO;
        let response = self.answer(endpoint, headers, body, &mut delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        response
    }

    fn answer(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        delay: &mut Duration,
    ) -> Response {
        let counter = match endpoint {
            Endpoint::Verify => &self.verify_calls,
            Endpoint::VerifyEncry => &self.verify_encry_calls,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let reply = match self.process(endpoint, headers, body, delay) {
            Ok(result) => Reply::Success(result),
            Err(reply) => reply,
        };
        if matches!(reply, Reply::Success(_)) {
            self.billed_calls.fetch_add(1, Ordering::Relaxed);
        }
        json_response(reply.to_json())
    }

    fn process(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        delay: &mut Duration,
    ) -> Result<VerifyResult, Reply> {
        if !is_form_content_type(headers) {
            return Err(Reply::param(REASON_BAD_FORMAT));
        }
        let body = body.map_err(|_| Reply::param(REASON_BAD_FORMAT))?;
        let form = FormFields::parse(&body);

        match form.key.as_deref() {
            Some(k) if !k.is_empty() && k == self.cfg.key => {}
            _ => return Err(Reply::System(10001)),
        }

        let idcard = required(form.idcard, "idcard")?;
        let realname = required(form.realname, "realname")?;
        let image = required(form.image, "image")?;

        // The name only has to be present (and, for verifyEncry, decryptable).
        let (idcard, realname, image) = match endpoint {
            Endpoint::Verify => (idcard, realname, image),
            Endpoint::VerifyEncry => {
                let decrypt = |v: &str| {
                    self.aes_key
                        .decrypt_field(v)
                        .map_err(|_| Reply::param(REASON_DECRYPT))
                };
                let id_plain = decrypt(&idcard)?;
                let name_plain = decrypt(&realname)?;
                let image_plain = decrypt(&image)?;
                let id_plain = required(Some(id_plain), "idcard")?;
                let name_plain = required(Some(name_plain), "realname")?;
                let image_plain = required(Some(image_plain), "image")?;
                (id_plain, name_plain, image_plain)
            }
        };

        let seq = idcard_sequence(&idcard).ok_or(Reply::param(REASON_IDCARD_FORMAT))?;
        *delay = answer_delay(&seq);
        let image_bytes = STANDARD
            .decode(image.as_bytes())
            .map_err(|_| Reply::param(REASON_IMAGE_FORMAT))?;

        match seq.as_str() {
            "921" => return Err(Reply::System(10012)),
            "922" => return Err(Reply::System(10011)),
            "923" => return Err(Reply::System(10013)),
            "924" => return Err(Reply::System(10014)),
            "925" => return Err(Reply::System(10020)),
            "911" => return Err(Reply::Service(226401, "数据源超时")),
            "912" => return Err(Reply::Service(226402, "查无记录")),
            "914" => return Err(Reply::Service(226404, "对比错误")),
            "902" => return Ok(VerifyResult::mismatch()),
            _ => {}
        }

        if !is_supported_image(&image_bytes) {
            return Ok(VerifyResult::face_failed("3004", DESC_3004));
        }

        Ok(match seq.as_str() {
            "901" => VerifyResult::face_failed("3005", DESC_3005),
            "903" => VerifyResult::face_failed("3004", DESC_3004),
            "904" => VerifyResult::face_failed("3003", DESC_3003),
            "905" => VerifyResult::matched("55"),
            "906" => VerifyResult::matched("65"),
            "907" => VerifyResult::face_failed("3006", DESC_OTHER),
            "908" => VerifyResult {
                code: None,
                desc: None,
                ..VerifyResult::face_failed("", "")
            },
            "909" => VerifyResult {
                res: Int::Text("1"),
                ..VerifyResult::matched("96")
            },
            "910" => VerifyResult {
                message: format!("{MSG_RES2}: {realname} {idcard}"),
                ..VerifyResult::face_failed("3005", DESC_3005)
            },
            _ => VerifyResult::matched("96"),
        })
    }
}

async fn verify_handler(
    State(sim): State<Arc<JuheSimulator>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    sim.serve(Endpoint::Verify, &headers, body).await
}

async fn verify_encry_handler(
    State(sim): State<Arc<JuheSimulator>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    sim.serve(Endpoint::VerifyEncry, &headers, body).await
}

/// The four documented request fields; first occurrence wins.
#[derive(Default)]
struct FormFields {
    key: Option<String>,
    idcard: Option<String>,
    realname: Option<String>,
    image: Option<String>,
}

impl FormFields {
    fn parse(body: &[u8]) -> Self {
        let mut out = FormFields::default();
        for (name, value) in form_urlencoded::parse(body) {
            let slot = match name.as_ref() {
                "key" => &mut out.key,
                "idcard" => &mut out.idcard,
                "realname" => &mut out.realname,
                "image" => &mut out.image,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        out
    }
}

fn required(value: Option<String>, name: &'static str) -> Result<String, Reply> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Reply::ParamOwned(format!("参数错误:{name}不能为空"))),
    }
}

fn is_form_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Validates an 18-character GB 11643 number and returns its sequence code.
fn idcard_sequence(idcard: &str) -> Option<String> {
    if idcard.len() != 18 || !idcard.is_ascii() {
        return None;
    }
    let first17 = idcard.get(..17)?;
    let given = idcard.get(17..)?.chars().next()?.to_ascii_uppercase();
    let expected = gb11643_check_char(first17)?;
    if given != expected {
        return None;
    }
    idcard.get(14..17).map(str::to_owned)
}

fn is_supported_image(bytes: &[u8]) -> bool {
    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF];
    const PNG: &[u8] = &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    bytes.starts_with(JPEG) || bytes.starts_with(PNG)
}

fn json_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

/// An integer field: a JSON number as documented, or a string as some replies send it (scenario 909).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(untagged)]
enum Int {
    Number(u8),
    Text(&'static str),
}

/// `result` of a billed reply. Field order follows the vendor examples.
#[derive(Debug, Serialize)]
struct VerifyResult {
    res: Int,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    desc: Option<&'static str>,
    orderid: String,
}

impl VerifyResult {
    fn matched(score: &'static str) -> Self {
        VerifyResult {
            res: Int::Number(1),
            score: Some(score),
            code: None,
            message: MSG_RES1.to_owned(),
            desc: None,
            orderid: new_orderid(),
        }
    }

    fn face_failed(code: &'static str, desc: &'static str) -> Self {
        VerifyResult {
            res: Int::Number(2),
            score: None,
            code: Some(code),
            message: MSG_RES2.to_owned(),
            desc: Some(desc),
            orderid: new_orderid(),
        }
    }

    fn mismatch() -> Self {
        VerifyResult {
            res: Int::Number(3),
            score: None,
            code: None,
            message: MSG_RES3.to_owned(),
            desc: None,
            orderid: new_orderid(),
        }
    }
}

/// "JH" + 24 random decimal digits.
fn new_orderid() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 10u128.pow(24);
    format!("JH{n:024}")
}

#[derive(Debug)]
enum Reply {
    Success(VerifyResult),
    /// Service error 2264xx with its reason.
    Service(u32, &'static str),
    /// 226403 with a computed reason.
    ParamOwned(String),
    /// System error 100xx (reason from the vendor table).
    System(u32),
}

#[derive(Serialize)]
struct SuccessEnvelope<'a> {
    reason: &'static str,
    result: &'a VerifyResult,
    error_code: Int,
}

#[derive(Serialize)]
struct ServiceEnvelope<'a> {
    reason: &'a str,
    result: Option<()>,
    error_code: u32,
}

#[derive(Serialize)]
struct SystemEnvelope {
    resultcode: String,
    reason: &'static str,
    result: Option<()>,
    error_code: u32,
}

impl Reply {
    fn param(reason: &'static str) -> Self {
        Reply::Service(226403, reason)
    }

    fn to_json(&self) -> String {
        let encoded = match self {
            Reply::Success(result) => serde_json::to_string(&SuccessEnvelope {
                reason: "成功",
                result,
                // A reply that sends res as a string sends error_code as one too (scenario 909).
                error_code: match result.res {
                    Int::Number(_) => Int::Number(0),
                    Int::Text(_) => Int::Text("0"),
                },
            }),
            Reply::Service(code, reason) => serde_json::to_string(&ServiceEnvelope {
                reason,
                result: None,
                error_code: *code,
            }),
            Reply::ParamOwned(reason) => serde_json::to_string(&ServiceEnvelope {
                reason,
                result: None,
                error_code: 226403,
            }),
            Reply::System(code) => serde_json::to_string(&SystemEnvelope {
                resultcode: format!("1{:02}", code % 100),
                reason: system_reason(*code),
                result: None,
                error_code: *code,
            }),
        };
        encoded.unwrap_or_else(|_| {
            r#"{"resultcode":"114","reason":"系统内部异常","result":null,"error_code":10014}"#
                .to_owned()
        })
    }
}

/// System error reasons from the vendor table (juhe-verifyface-api.txt §3).
fn system_reason(code: u32) -> &'static str {
    match code {
        10001 => "错误的请求KEY",
        10002 => "该KEY无请求权限",
        10003 => "KEY过期",
        10004 => "错误的OPENID",
        10005 => "应用未审核超时，请提交认证",
        10007 => "未知的请求源",
        10008 => "被禁止的IP",
        10009 => "被禁止的KEY",
        10011 => "当前IP请求超过限制",
        10012 => "请求超过次数限制",
        10013 => "测试KEY超过请求限制",
        10020 => "接口维护",
        10021 => "接口停用",
        _ => "系统内部异常",
    }
}

#[cfg(test)]
mod tests;
