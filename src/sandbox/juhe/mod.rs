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
        let (idcard, image) = match endpoint {
            Endpoint::Verify => (idcard, image),
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
                required(Some(name_plain), "realname")?;
                let image_plain = required(Some(image_plain), "image")?;
                (id_plain, image_plain)
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

/// `result` of a billed reply. Field order follows the vendor examples.
#[derive(Debug, Serialize)]
struct VerifyResult {
    res: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    desc: Option<&'static str>,
    orderid: String,
}

impl VerifyResult {
    fn matched(score: &'static str) -> Self {
        VerifyResult {
            res: 1,
            score: Some(score),
            code: None,
            message: MSG_RES1,
            desc: None,
            orderid: new_orderid(),
        }
    }

    fn face_failed(code: &'static str, desc: &'static str) -> Self {
        VerifyResult {
            res: 2,
            score: None,
            code: Some(code),
            message: MSG_RES2,
            desc: Some(desc),
            orderid: new_orderid(),
        }
    }

    fn mismatch() -> Self {
        VerifyResult {
            res: 3,
            score: None,
            code: None,
            message: MSG_RES3,
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
    error_code: u32,
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
                error_code: 0,
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
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const KEY: &str = "sim-juhe-key-0123456789abcdef";
    // Same openid as the crypto known-answer test.
    const OPENID: &str = "JHsim-openid-0001";
    const NAME: &str = "测试用户";
    const FORM: &str = "application/x-www-form-urlencoded";

    /// Synthetic ID: region 110101, born 1900-01-01, given sequence code.
    fn synth_id(seq: &str) -> String {
        let first17 = format!("11010119000101{seq}");
        let check = gb11643_check_char(&first17).expect("17 digits");
        format!("{first17}{check}")
    }

    /// Tiny synthetic JPEG-looking bytes; bytes 6..9 encode to "++++".
    fn jpeg_bytes() -> Vec<u8> {
        vec![
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0xFB, 0xEF, 0xBE, 0x00, 0xFF, 0xD9,
        ]
    }

    fn jpeg_b64() -> String {
        STANDARD.encode(jpeg_bytes())
    }

    struct Harness {
        sim: Arc<JuheSimulator>,
        base: String,
        client: reqwest::Client,
    }

    impl Harness {
        async fn start() -> Self {
            let sim = JuheSimulator::new(JuheSimConfig {
                key: KEY.to_owned(),
                openid: OPENID.to_owned(),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let app = sim.router();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            crate::app::install_crypto_provider();
            Harness {
                sim,
                base: format!("http://{addr}"),
                client: reqwest::Client::new(),
            }
        }

        fn url(&self, endpoint: Endpoint) -> String {
            match endpoint {
                Endpoint::Verify => format!("{}/verifyface/verify", self.base),
                Endpoint::VerifyEncry => format!("{}/verifyface/verifyEncry", self.base),
            }
        }

        async fn read(resp: reqwest::Response) -> (String, Value) {
            assert_eq!(resp.status().as_u16(), 200);
            let ct = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            assert_eq!(ct.as_deref(), Some(JSON_CONTENT_TYPE));
            let text = resp.text().await.expect("body");
            let value = serde_json::from_str(&text).expect("json body");
            (text, value)
        }

        async fn form(&self, endpoint: Endpoint, fields: &[(&str, &str)]) -> Value {
            let resp = self
                .client
                .post(self.url(endpoint))
                .form(fields)
                .send()
                .await
                .expect("send");
            Self::read(resp).await.1
        }

        async fn raw(
            &self,
            endpoint: Endpoint,
            content_type: Option<&str>,
            body: Vec<u8>,
        ) -> Value {
            self.raw_text(endpoint, content_type, body).await.1
        }

        async fn raw_text(
            &self,
            endpoint: Endpoint,
            content_type: Option<&str>,
            body: Vec<u8>,
        ) -> (String, Value) {
            let mut req = self.client.post(self.url(endpoint)).body(body);
            if let Some(ct) = content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, ct);
            }
            Self::read(req.send().await.expect("send")).await
        }

        async fn plain(&self, idcard: &str, image: &str) -> Value {
            self.form(
                Endpoint::Verify,
                &[
                    ("key", KEY),
                    ("idcard", idcard),
                    ("realname", NAME),
                    ("image", image),
                ],
            )
            .await
        }

        async fn encrypted(&self, idcard: &str, image: &str) -> Value {
            let k = JuheKey::from_openid(OPENID);
            let (i, n, m) = (
                k.encrypt_field(idcard),
                k.encrypt_field(NAME),
                k.encrypt_field(image),
            );
            self.form(
                Endpoint::VerifyEncry,
                &[
                    ("key", KEY),
                    ("idcard", &i),
                    ("realname", &n),
                    ("image", &m),
                ],
            )
            .await
        }
    }

    fn param_error(reason: &str) -> Value {
        json!({"reason": reason, "result": null, "error_code": 226403})
    }

    /// Checks a billed reply; returns `result` without the random orderid.
    fn billed(v: &Value) -> Value {
        assert_eq!(v["reason"], "成功");
        assert_eq!(v["error_code"], 0);
        let mut result = v["result"].clone();
        let orderid = result["orderid"].as_str().expect("orderid").to_owned();
        assert_eq!(orderid.len(), 26, "{orderid}");
        assert!(orderid.starts_with("JH"));
        assert!(orderid[2..].bytes().all(|b| b.is_ascii_digit()));
        if let Some(obj) = result.as_object_mut() {
            obj.remove("orderid");
        }
        result
    }

    fn expected_result(seq: &str) -> Value {
        match seq {
            "901" => json!({"res":2,"code":"3005","message":MSG_RES2,"desc":"人脸比对失败"}),
            "902" => json!({"res":3,"message":"身份证号与姓名不匹配"}),
            "903" => {
                json!({"res":2,"code":"3004","message":MSG_RES2,"desc":"用户上传的照片检测不到人脸"})
            }
            "904" => {
                json!({"res":2,"code":"3003","message":MSG_RES2,"desc":"人脸库中的照片检测不到人脸"})
            }
            "905" => json!({"res":1,"score":"55","message":"身份证号与姓名匹配，且比对成功"}),
            "906" => json!({"res":1,"score":"65","message":"身份证号与姓名匹配，且比对成功"}),
            _ => json!({"res":1,"score":"96","message":"身份证号与姓名匹配，且比对成功"}),
        }
    }

    fn expected_error(seq: &str) -> Option<Value> {
        let sys = |code: u32, rc: &str, reason: &str| json!({"resultcode": rc, "reason": reason, "result": null, "error_code": code});
        let svc =
            |code: u32, reason: &str| json!({"reason": reason, "result": null, "error_code": code});
        Some(match seq {
            "911" => svc(226401, "数据源超时"),
            "912" => svc(226402, "查无记录"),
            "914" => svc(226404, "对比错误"),
            "921" => sys(10012, "112", "请求超过次数限制"),
            "922" => sys(10011, "111", "当前IP请求超过限制"),
            "923" => sys(10013, "113", "测试KEY超过请求限制"),
            "924" => sys(10014, "114", "系统内部异常"),
            "925" => sys(10020, "120", "接口维护"),
            _ => return None,
        })
    }

    fn check_scenario(seq: &str, v: &Value) {
        match expected_error(seq) {
            Some(err) => assert_eq!(v, &err, "seq {seq}"),
            None => assert_eq!(billed(v), expected_result(seq), "seq {seq}"),
        }
    }

    #[test]
    fn synthetic_ids_are_valid() {
        assert_eq!(synth_id("001"), "110101190001010014");
        for (seq, _) in SCENARIOS {
            let id = synth_id(seq);
            assert_eq!(idcard_sequence(&id).as_deref(), Some(*seq));
        }
    }

    #[tokio::test]
    async fn default_success_exact_wire_shape() {
        let h = Harness::start().await;
        let resp = h
            .client
            .post(h.url(Endpoint::Verify))
            .form(&[
                ("key", KEY),
                ("idcard", &synth_id("001")),
                ("realname", NAME),
                ("image", &jpeg_b64()),
            ])
            .send()
            .await
            .expect("send");
        let (text, v) = Harness::read(resp).await;
        let orderid = v["result"]["orderid"].as_str().expect("orderid").to_owned();
        assert_eq!(
            text,
            format!(
                r#"{{"reason":"成功","result":{{"res":1,"score":"96","message":"身份证号与姓名匹配，且比对成功","orderid":"{orderid}"}},"error_code":0}}"#
            )
        );
        billed(&v);
    }

    #[tokio::test]
    async fn every_scenario_plain() {
        let h = Harness::start().await;
        for (seq, _) in SCENARIOS
            .iter()
            .chain(&[("001", "default"), ("900", "default")])
            .filter(|(seq, _)| answer_delay(seq).is_zero())
        {
            let v = h.plain(&synth_id(seq), &jpeg_b64()).await;
            check_scenario(seq, &v);
        }
    }

    #[tokio::test]
    async fn every_scenario_encrypted() {
        let h = Harness::start().await;
        for (seq, _) in SCENARIOS
            .iter()
            .chain(&[("001", "default")])
            .filter(|(seq, _)| answer_delay(seq).is_zero())
        {
            let v = h.encrypted(&synth_id(seq), &jpeg_b64()).await;
            check_scenario(seq, &v);
        }
    }

    #[tokio::test]
    async fn system_error_exact_wire_text() {
        let h = Harness::start().await;
        let body = format!(
            "key={KEY}&idcard={}&realname=x&image={}",
            synth_id("921"),
            "%2F9j%2F4A%3D%3D"
        );
        let (text, _) = h
            .raw_text(Endpoint::Verify, Some(FORM), body.into_bytes())
            .await;
        assert_eq!(
            text,
            r#"{"resultcode":"112","reason":"请求超过次数限制","result":null,"error_code":10012}"#
        );
        let (text, _) = h
            .raw_text(Endpoint::Verify, Some(FORM), b"idcard=1".to_vec())
            .await;
        assert_eq!(
            text,
            r#"{"resultcode":"101","reason":"错误的请求KEY","result":null,"error_code":10001}"#
        );
    }

    #[tokio::test]
    async fn bad_or_missing_key() {
        let h = Harness::start().await;
        let bad_key =
            json!({"resultcode":"101","reason":"错误的请求KEY","result":null,"error_code":10001});
        let id = synth_id("001");
        let img = jpeg_b64();
        for endpoint in [Endpoint::Verify, Endpoint::VerifyEncry] {
            for key in [Some("wrong"), Some(""), None] {
                let mut fields = vec![("idcard", id.as_str()), ("realname", NAME), ("image", &img)];
                if let Some(k) = key {
                    fields.push(("key", k));
                }
                assert_eq!(h.form(endpoint, &fields).await, bad_key);
            }
        }
        // Key is case-sensitive.
        let upper = KEY.to_uppercase();
        let v = h
            .form(
                Endpoint::Verify,
                &[
                    ("key", &upper),
                    ("idcard", &id),
                    ("realname", NAME),
                    ("image", &img),
                ],
            )
            .await;
        assert_eq!(v, bad_key);
    }

    #[tokio::test]
    async fn missing_or_empty_fields() {
        let h = Harness::start().await;
        let id = synth_id("001");
        let img = jpeg_b64();
        let all = [
            ("idcard", id.as_str()),
            ("realname", NAME),
            ("image", img.as_str()),
        ];
        for endpoint in [Endpoint::Verify, Endpoint::VerifyEncry] {
            for skip in ["idcard", "realname", "image"] {
                let expected = param_error(&format!("参数错误:{skip}不能为空"));
                let mut missing = vec![("key", KEY)];
                let mut empty = vec![("key", KEY)];
                for (name, value) in all {
                    if name == skip {
                        empty.push((name, ""));
                    } else {
                        missing.push((name, value));
                        empty.push((name, value));
                    }
                }
                assert_eq!(h.form(endpoint, &missing).await, expected, "{skip}");
                assert_eq!(h.form(endpoint, &empty).await, expected, "{skip}");
            }
        }
        // Fields are checked in document order: idcard first.
        let v = h.form(Endpoint::Verify, &[("key", KEY)]).await;
        assert_eq!(v, param_error("参数错误:idcard不能为空"));
        // An encrypted empty string decrypts fine but is still empty.
        let k = JuheKey::from_openid(OPENID);
        let (i, n, e) = (
            k.encrypt_field(&id),
            k.encrypt_field(""),
            k.encrypt_field(&img),
        );
        let v = h
            .form(
                Endpoint::VerifyEncry,
                &[
                    ("key", KEY),
                    ("idcard", &i),
                    ("realname", &n),
                    ("image", &e),
                ],
            )
            .await;
        assert_eq!(v, param_error("参数错误:realname不能为空"));
    }

    #[tokio::test]
    async fn bad_idcard_format() {
        let h = Harness::start().await;
        let good = synth_id("001");
        let wrong_check = format!(
            "{}{}",
            &good[..17],
            if good.ends_with('0') { '1' } else { '0' }
        );
        let expected = param_error(REASON_IDCARD_FORMAT);
        for id in [
            "11010119000101001".to_owned(),   // 17 chars
            format!("{good}0"),               // 19 chars
            wrong_check,                      // bad check char
            "11010119000101001Ｘ".to_owned(), // non-ASCII
            "1101011900010100A4".to_owned(),  // letter in body
            "110101000101001".to_owned(),     // old 15-digit form
        ] {
            assert_eq!(h.plain(&id, &jpeg_b64()).await, expected, "{id}");
            assert_eq!(h.encrypted(&id, &jpeg_b64()).await, expected, "{id}");
        }
        // A check char 'X' is accepted in either case.
        let x_id = (0..1000)
            .map(|n| synth_id(&format!("{n:03}")))
            .find(|id| id.ends_with('X') && !id[14..17].starts_with('9'))
            .expect("some sequence has check char X");
        billed(&h.plain(&x_id, &jpeg_b64()).await);
        billed(&h.plain(&x_id.to_lowercase(), &jpeg_b64()).await);
    }

    #[tokio::test]
    async fn bad_base64_image() {
        let h = Harness::start().await;
        let id = synth_id("001");
        let expected = param_error(REASON_IMAGE_FORMAT);
        let data_uri = format!("data:image/jpeg;base64,{}", jpeg_b64());
        let urlsafe = jpeg_b64().replace('+', "-").replace('/', "_");
        let with_space = jpeg_b64().replace('+', " ");
        let unpadded = STANDARD
            .encode([0xFF, 0xD8, 0xFF, 0xE0])
            .trim_end_matches('=')
            .to_owned();
        for img in [
            "***",
            data_uri.as_str(),
            &urlsafe,
            &with_space,
            &unpadded,
            "====",
        ] {
            assert_eq!(h.plain(&id, img).await, expected, "{img}");
            assert_eq!(h.encrypted(&id, img).await, expected, "{img}");
        }
    }

    #[tokio::test]
    async fn non_image_bytes_are_billed_3004() {
        let h = Harness::start().await;
        let not_image = STANDARD.encode(b"GIF89a not a face");
        let expected = expected_result("903");
        for seq in ["001", "901", "905"] {
            assert_eq!(billed(&h.plain(&synth_id(seq), &not_image).await), expected);
            assert_eq!(
                billed(&h.encrypted(&synth_id(seq), &not_image).await),
                expected
            );
        }
        // Name/ID mismatch is decided before the picture is looked at.
        assert_eq!(
            billed(&h.plain(&synth_id("902"), &not_image).await),
            expected_result("902")
        );
        // PNG is accepted.
        let png = STANDARD.encode([0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0]);
        assert_eq!(
            billed(&h.plain(&synth_id("001"), &png).await),
            expected_result("001")
        );
        assert_eq!(h.sim.stats().billed_calls, 8);
    }

    #[tokio::test]
    async fn plain_and_encrypted_paths_do_not_mix() {
        let h = Harness::start().await;
        let id = synth_id("001");
        let img = jpeg_b64();
        // Plaintext sent to verifyEncry cannot be decrypted.
        let v = h
            .form(
                Endpoint::VerifyEncry,
                &[
                    ("key", KEY),
                    ("idcard", &id),
                    ("realname", NAME),
                    ("image", &img),
                ],
            )
            .await;
        assert_eq!(v, param_error(REASON_DECRYPT));
        // Ciphertext sent to verify is not an ID number.
        let k = JuheKey::from_openid(OPENID);
        let (i, n, m) = (
            k.encrypt_field(&id),
            k.encrypt_field(NAME),
            k.encrypt_field(&img),
        );
        let v = h
            .form(
                Endpoint::Verify,
                &[
                    ("key", KEY),
                    ("idcard", &i),
                    ("realname", &n),
                    ("image", &m),
                ],
            )
            .await;
        assert_eq!(v, param_error(REASON_IDCARD_FORMAT));
        // Wrong openid on the client side.
        let other = JuheKey::from_openid("JHsim-openid-0002");
        let (i, n, m) = (
            other.encrypt_field(&id),
            other.encrypt_field(NAME),
            other.encrypt_field(&img),
        );
        let v = h
            .form(
                Endpoint::VerifyEncry,
                &[
                    ("key", KEY),
                    ("idcard", &i),
                    ("realname", &n),
                    ("image", &m),
                ],
            )
            .await;
        assert_eq!(v, param_error(REASON_DECRYPT));
        // Each field alone failing to decrypt is enough.
        for bad in ["idcard", "realname", "image"] {
            let mut fields = vec![("key", KEY)];
            let enc = [("idcard", &i), ("realname", &n), ("image", &m)];
            let good = [
                ("idcard", k.encrypt_field(&id)),
                ("realname", k.encrypt_field(NAME)),
                ("image", k.encrypt_field(&img)),
            ];
            for ((name, wrong), (_, right)) in enc.iter().zip(good.iter()) {
                fields.push((
                    name,
                    if *name == bad {
                        wrong.as_str()
                    } else {
                        right.as_str()
                    },
                ));
            }
            assert_eq!(
                h.form(Endpoint::VerifyEncry, &fields).await,
                param_error(REASON_DECRYPT),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn plus_in_unencoded_ciphertext_breaks_decryption() {
        let h = Harness::start().await;
        let k = JuheKey::from_openid(OPENID);
        let i = k.encrypt_field(&synth_id("001"));
        let n = k.encrypt_field(NAME);
        let m = k.encrypt_field(&jpeg_b64());
        // Fixed by the crypto known-answer vector: the name ciphertext has a '+'.
        assert_eq!(n, "Ht61vShgNoTQZNmhN+jCZA==");
        let raw = format!("key={KEY}&idcard={i}&realname={n}&image={m}");
        let v = h
            .raw(Endpoint::VerifyEncry, Some(FORM), raw.clone().into_bytes())
            .await;
        assert_eq!(v, param_error(REASON_DECRYPT));
        // Only '+' matters: escaping just that one character makes it work.
        let fixed = raw.replace('+', "%2B");
        let v = h
            .raw(Endpoint::VerifyEncry, Some(FORM), fixed.into_bytes())
            .await;
        assert_eq!(billed(&v), expected_result("001"));
        // Double urlencoding breaks it too.
        let once: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("realname", &n)
            .finish();
        let twice = once.replace('%', "%25");
        let raw2 = format!("key={KEY}&idcard={i}&{twice}&image={m}").replace('+', "%2B");
        let v = h
            .raw(Endpoint::VerifyEncry, Some(FORM), raw2.into_bytes())
            .await;
        assert_eq!(v, param_error(REASON_DECRYPT));
        // The same happens to a plain image sent without urlencoding.
        let img = jpeg_b64();
        assert!(img.contains('+'));
        let raw3 = format!(
            "key={KEY}&idcard={}&realname=x&image={img}",
            synth_id("001")
        );
        let v = h.raw(Endpoint::Verify, Some(FORM), raw3.into_bytes()).await;
        assert_eq!(v, param_error(REASON_IMAGE_FORMAT));
    }

    #[tokio::test]
    async fn content_type_must_be_form() {
        let h = Harness::start().await;
        let body = format!(
            "key={KEY}&idcard={}&realname=x&image=%2F9j%2F4A%3D%3D",
            synth_id("001")
        );
        let expected = param_error(REASON_BAD_FORMAT);
        for ct in [
            None,
            Some("application/json"),
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
        ] {
            for endpoint in [Endpoint::Verify, Endpoint::VerifyEncry] {
                let v = h.raw(endpoint, ct, body.clone().into_bytes()).await;
                assert_eq!(v, expected, "{ct:?}");
            }
        }
        // Parameters and case variations of the form type are accepted.
        for ct in [
            "application/x-www-form-urlencoded; charset=UTF-8",
            "Application/X-WWW-Form-Urlencoded",
        ] {
            let v = h
                .raw(Endpoint::Verify, Some(ct), body.clone().into_bytes())
                .await;
            assert_eq!(billed(&v), expected_result("001"), "{ct}");
        }
    }

    #[tokio::test]
    async fn oversized_body_is_rejected_with_json() {
        let h = Harness::start().await;
        let mut body = b"key=".to_vec();
        body.resize(BODY_LIMIT + 1, b'a');
        let v = h.raw(Endpoint::Verify, Some(FORM), body).await;
        assert_eq!(v, param_error(REASON_BAD_FORMAT));
    }

    #[tokio::test]
    async fn garbage_never_breaks_the_server() {
        let h = Harness::start().await;
        let bodies: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xFF, 0xFE, 0x00, b'&', b'='],
            b"key=%ZZ%&&&==&idcard=%FF%FE".to_vec(),
            format!("key={KEY}&idcard=%FF%FE%00&realname=%00&image=%FF").into_bytes(),
            format!(
                "key={KEY}&idcard={}&realname=x&image=%E4%B8%AD",
                synth_id("001")
            )
            .into_bytes(),
            format!("key={KEY}&key=other&idcard={}", "9".repeat(10_000)).into_bytes(),
        ];
        for body in bodies {
            for endpoint in [Endpoint::Verify, Endpoint::VerifyEncry] {
                let v = h.raw(endpoint, Some(FORM), body.clone()).await;
                assert!(v["error_code"].as_u64().is_some_and(|c| c != 0), "{v}");
            }
        }
        // Still serving.
        billed(&h.plain(&synth_id("001"), &jpeg_b64()).await);
    }

    #[tokio::test]
    async fn stats_count_requests_and_billing() {
        let h = Harness::start().await;
        assert_eq!(h.sim.stats(), JuheSimStats::default());
        let img = jpeg_b64();
        h.plain(&synth_id("001"), &img).await; // billed
        h.plain(&synth_id("902"), &img).await; // billed (res 3)
        h.plain(&synth_id("911"), &img).await; // 226401
        h.plain(&synth_id("921"), &img).await; // 10012
        h.form(Endpoint::Verify, &[("key", "bad")]).await; // 10001
        h.encrypted(&synth_id("901"), &img).await; // billed (res 2)
        h.encrypted(&synth_id("912"), &img).await; // 226402
        h.raw(Endpoint::VerifyEncry, Some("text/plain"), vec![])
            .await; // 226403
        assert_eq!(
            h.sim.stats(),
            JuheSimStats {
                verify_calls: 5,
                verify_encry_calls: 3,
                billed_calls: 3,
            }
        );
        // Wrong method / unknown path are not counted.
        let r = h
            .client
            .get(h.url(Endpoint::Verify))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 405);
        assert_eq!(h.sim.stats().verify_calls, 5);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let sim = JuheSimulator::new(JuheSimConfig {
            key: KEY.to_owned(),
            openid: OPENID.to_owned(),
        });
        let text = format!("{sim:?}");
        assert!(!text.contains(KEY) && !text.contains(OPENID), "{text}");
    }

    #[test]
    fn scenario_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for (seq, desc) in SCENARIOS {
            assert_eq!(seq.len(), 3);
            assert!(seq.bytes().all(|b| b.is_ascii_digit()));
            assert!(seen.insert(*seq), "duplicate {seq}");
            assert!(!desc.is_empty());
        }
        assert_eq!(SCENARIOS.len(), 16);
    }
}
