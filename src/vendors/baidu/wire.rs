//! Baidu faceprint wire types (baidu-faceprint-h5-api.txt, FACTS.md §1.2-1.6) and their parsing.
//!
//! Replies come in two shapes, and both must be accepted (FACTS.md §1.3):
//! - the faceprint envelope `{"success": bool, "result": ..., "log_id": "...", "code": N, "message": "..."}`;
//! - the AI gateway error `{"error_code": N, "error_msg": "..."}` (token problems, QPS limits).
//!
//! Numbers that the document types as strings (or the other way round) are read leniently with
//! [`StringOrNumber`]; shapes are otherwise strict, and anything unreadable is an error.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use crate::vendors::json::StringOrNumber;

/// Both reply shapes, before interpretation.
#[derive(Debug, Deserialize)]
struct Raw {
    success: Option<bool>,
    #[serde(default)]
    result: serde_json::Value,
    log_id: Option<StringOrNumber>,
    code: Option<StringOrNumber>,
    message: Option<String>,
    error_code: Option<StringOrNumber>,
    error_msg: Option<String>,
}

/// A Baidu error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaiduError {
    /// `code` (envelope) or `error_code` (gateway); -1 when the envelope had none.
    pub code: i64,
    /// `message` or `error_msg`.
    pub message: String,
    /// `log_id`, when sent.
    pub log_id: String,
    /// Whether it came in the gateway shape.
    pub gateway: bool,
}

impl BaiduError {
    /// Access token invalid or expired (gateway 110/111, or the envelope's "Token无效或者已过期" is about the
    /// verify_token and is not this).
    pub fn is_access_token_error(&self) -> bool {
        matches!(self.code, 100 | 110 | 111)
    }

    /// QPS or quota limit (code 18 in either shape; 4, 17, 19 at the gateway).
    pub fn is_rate_limit(&self) -> bool {
        self.code == 18 || (self.gateway && matches!(self.code, 4 | 17 | 19))
    }

    /// "Token无效或者已过期": the verify_token is unknown, expired, used up, or its results are past retention.
    pub fn is_verify_token_gone(&self) -> bool {
        self.message.contains("Token无效或者已过期")
    }
}

/// An interpreted reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    /// `success: true` with its result.
    Ok {
        /// The result.
        result: T,
        /// `log_id`.
        log_id: String,
    },
    /// An error answer in either shape.
    Err(BaiduError),
}

/// Parses a faceprint reply strictly into `T` (use `serde_json::Value` or `Option<..>` where `result` may be null).
pub fn parse_reply<T: DeserializeOwned>(body: &[u8]) -> Result<Reply<T>, String> {
    let raw: Raw = crate::vendors::json::parse_strict(body)?;
    let log_id = raw
        .log_id
        .as_ref()
        .map(StringOrNumber::as_text)
        .unwrap_or_default();
    if let Some(code) = raw.error_code {
        let code = code
            .as_text()
            .trim()
            .parse::<i64>()
            .map_err(|_| "error_code is not a number".to_owned())?;
        return Ok(Reply::Err(BaiduError {
            code,
            message: raw.error_msg.unwrap_or_default(),
            log_id,
            gateway: true,
        }));
    }
    match raw.success {
        Some(true) => {
            let result = serde_json::from_value(raw.result)
                .map_err(|e| format!("result is not the documented shape: {e}"))?;
            Ok(Reply::Ok { result, log_id })
        }
        Some(false) => {
            let code = match raw.code {
                Some(c) => c
                    .as_text()
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| "code is not a number".to_owned())?,
                None => -1,
            };
            Ok(Reply::Err(BaiduError {
                code,
                message: raw.message.unwrap_or_default(),
                log_id,
                gateway: false,
            }))
        }
        None => Err("reply has neither success nor error_code".to_owned()),
    }
}

/// `verifyToken/generate` result.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct GenerateResult {
    /// The verify_token (24 alphanumerics in the examples).
    pub verify_token: String,
}

/// `result/simple` result.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SimpleResult {
    /// URL of the captured face image.
    pub image: String,
}

/// `verify_result` of `result/detail`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct DetailVerify {
    /// Face comparison score 0-100 (0 for liveness-only plans).
    pub score: Option<StringOrNumber>,
    /// Liveness score.
    pub liveness_score: Option<StringOrNumber>,
    /// Synthetic-image (spoofing) score.
    pub spoofing: Option<StringOrNumber>,
}

/// OCR fields of the ID card.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OcrResult {
    /// 地址.
    pub address: Option<String>,
    /// 生日.
    pub birthday: Option<String>,
    /// 姓名.
    pub name: Option<String>,
    /// 身份证号 (`result/detail` spelling).
    pub id_card_number: Option<String>,
    /// 身份证号 (`result/getall` spelling).
    pub idcard_number: Option<String>,
    /// 证件类型 (getall).
    pub idcard_type: Option<StringOrNumber>,
    /// 性别.
    pub gender: Option<String>,
    /// 民族.
    pub nation: Option<String>,
    /// 身份证失效日期.
    pub expire_time: Option<String>,
    /// 身份证签发机关.
    pub issue_authority: Option<String>,
    /// 身份证生效日期.
    pub issue_time: Option<String>,
}

/// `idcard_images` of `result/detail`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct DetailImages {
    /// Front side, base64.
    pub front_base64: Option<String>,
    /// Back side, base64.
    pub back_base64: Option<String>,
}

/// `idcard_confirm` of `result/detail`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Confirm {
    /// 姓名.
    pub name: Option<String>,
    /// 身份证号.
    pub idcard_number: Option<String>,
}

/// `result/detail` result (only when the verification passed).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct DetailResult {
    /// Scores.
    pub verify_result: Option<DetailVerify>,
    /// OCR fields (OCR plans).
    pub idcard_ocr_result: Option<OcrResult>,
    /// Card images (OCR plans).
    pub idcard_images: Option<DetailImages>,
    /// What the user confirmed.
    pub idcard_confirm: Option<Confirm>,
    /// Whether real-time liveness was downgraded.
    pub is_demote: Option<bool>,
}

/// One counter of `result/stat`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StatEntry {
    /// Error code ("0" = success).
    pub error_code: StringOrNumber,
    /// Number of requests with it.
    pub count: StringOrNumber,
}

/// `result/stat` result: counters by interface (`Verify_FIN`, `Sessioncode`, `OCR`, `verify`, `VideoLiveness`,
/// `Livenesscolorful`, `VerifySec`).
pub type StatResult = BTreeMap<String, Vec<StatEntry>>;

/// `result/media/query` result (media kept 1 day).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct MediaResult {
    /// Real-time liveness plans' video.
    #[serde(rename = "processVideo")]
    pub process_video: Option<Vec<String>>,
    /// Other plans' video.
    pub video: Option<Vec<String>>,
    /// Face images.
    pub images: Option<Vec<String>>,
    /// Processing errors, if any.
    #[serde(rename = "extInfo")]
    pub ext_info: Option<String>,
}

/// `verify_detail` of one attempt in `result/getall`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AttemptDetail {
    /// URL of the best captured face.
    pub face_image: Option<String>,
    /// Backend log id.
    pub verify_log_id: Option<StringOrNumber>,
    /// Similarity (empty on name mismatch or failed liveness).
    pub score: Option<StringOrNumber>,
    /// The plan's threshold.
    pub threshold: Option<StringOrNumber>,
    /// Liveness score (reserved, 0).
    pub liveness_score: Option<StringOrNumber>,
    /// Spoofing score (reserved, 0).
    pub spoofing_score: Option<StringOrNumber>,
    /// Risk level 1-4.
    pub risk_level: Option<StringOrNumber>,
    /// Risk tag.
    pub risk_tag: Option<String>,
    /// Liveness downgraded.
    pub is_demote: Option<bool>,
}

/// Card images of one attempt (URLs).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AttemptImages {
    /// Front side URL.
    pub front_image: Option<String>,
    /// Back side URL.
    pub back_image: Option<String>,
}

/// `idcard_confirm` of one attempt; the document's example nests OCR fields and images inside it while its table
/// puts them beside it, so both places are read.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AttemptConfirm {
    /// 姓名.
    pub name: Option<String>,
    /// 证件号.
    pub idcard_number: Option<String>,
    /// 证件类型 ("0" mainland).
    pub idcard_type: Option<StringOrNumber>,
    /// OCR fields (example placement).
    pub idcard_ocr_result: Option<OcrResult>,
    /// Card images (example placement).
    pub idcard_images: Option<AttemptImages>,
}

/// One attempt of `result/getall`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Attempt {
    /// 1-based order.
    pub order: i64,
    /// Whether it passed.
    pub is_verify_passed: bool,
    /// "0" on success, else the error code.
    pub code: StringOrNumber,
    /// Error message.
    pub message: Option<String>,
    /// "YYYY-MM-DD HH:MM:SS".
    pub verify_time: Option<String>,
    /// Whether it was billed.
    pub is_charged: Option<bool>,
    /// verify | match | live.
    pub charge_type: Option<String>,
    /// When it was billed.
    pub charge_time: Option<String>,
    /// Whether OCR was billed.
    pub is_ocr_charge: Option<bool>,
    /// When OCR was billed.
    pub ocr_charge_time: Option<String>,
    /// OCR calls.
    pub ocr_count: Option<i64>,
    /// Scores and risk.
    pub verify_detail: Option<AttemptDetail>,
    /// Confirmed identity.
    pub idcard_confirm: Option<AttemptConfirm>,
    /// OCR fields (table placement).
    pub idcard_ocr_result: Option<OcrResult>,
    /// Card images (table placement).
    pub idcard_images: Option<AttemptImages>,
}

/// `result/getall` result.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct GetAllResult {
    /// Number of attempts.
    pub verify_count: i64,
    /// OCR charges.
    pub ocr_charge_count: Option<i64>,
    /// 人脸对比V4 charges.
    pub match_charge_count: Option<i64>,
    /// 人脸实名认证V4 charges.
    pub verify_charge_count: Option<i64>,
    /// The attempts.
    #[serde(default)]
    pub verify_result: Vec<Attempt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_error_shapes() {
        let gw: Reply<serde_json::Value> =
            parse_reply(br#"{"error_code":18,"error_msg":"Open api qps request limit reached"}"#)
                .unwrap();
        let Reply::Err(e) = gw else { panic!() };
        assert!(e.gateway && e.is_rate_limit() && !e.is_access_token_error());
        let env: Reply<serde_json::Value> = parse_reply(
            r#"{"success":false,"result":null,"code":283400,"message":"服务异常,请稍后再试","log_id":"161763046823255"}"#
                .as_bytes(),
        )
        .unwrap();
        let Reply::Err(e) = env else { panic!() };
        assert_eq!(
            (e.code, e.log_id.as_str(), e.gateway),
            (283400, "161763046823255", false)
        );
        let tok: Reply<serde_json::Value> =
            parse_reply(br#"{"error_code":111,"error_msg":"Access token expired"}"#).unwrap();
        let Reply::Err(e) = tok else { panic!() };
        assert!(e.is_access_token_error());
        assert!(parse_reply::<serde_json::Value>(br#"{"log_id":"1"}"#).is_err());
        assert!(parse_reply::<serde_json::Value>(br#"{"success":true,"result":{}} x"#).is_err());
    }

    #[test]
    fn parses_documented_results() {
        let r: Reply<GenerateResult> =
            parse_reply(br#"{"success":true,"result":{"verify_token":"Yz9rWITm4vak16PBAh5x8oG7"},"log_id":"1814798895"}"#)
                .unwrap();
        assert_eq!(
            r,
            Reply::Ok {
                result: GenerateResult {
                    verify_token: "Yz9rWITm4vak16PBAh5x8oG7".into()
                },
                log_id: "1814798895".into()
            }
        );
        let r: Reply<Option<serde_json::Value>> =
            parse_reply(br#"{"success":true,"result":null,"log_id":1329130892}"#).unwrap();
        assert!(matches!(r, Reply::Ok { result: None, .. }));
        let detail = r#"{"success":true,"result":{"verify_result":{"score":93.7835,"liveness_score":0.9672966,"spoofing":0.0},
            "idcard_ocr_result":{"birthday":"19960216","issue_authority":"x","address":"y","gender":"女","nation":"汉",
            "expire_time":"20221103","name":"柴*","issue_time":"20121103","id_card_number":"370***********5826"},
            "idcard_images":{"front_base64":"/9j/","back_base64":"/9j/"},
            "idcard_confirm":{"idcard_number":"370***********5826","name":"柴*"}},"log_id":"160931948204246"}"#;
        let Reply::Ok { result, .. } = parse_reply::<DetailResult>(detail.as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            result.verify_result.unwrap().score.unwrap().as_f64(),
            Some(93.7835)
        );
        let stat = r#"{"success":true,"result":{"Verify_FIN":[{"error_code":0,"count":1}],"VideoLiveness":[{"error_code":"0","count":"1"}]},"log_id":"1"}"#;
        let Reply::Ok { result, .. } = parse_reply::<StatResult>(stat.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(result["VideoLiveness"][0].count.as_text(), "1");
        let media = r#"{"success":true,"result":{"processVideo":["http://v/aa.mp4"],"video":null,"images":["http://v/aa.jpg"],"extInfo":null},"log_id":"1"}"#;
        let Reply::Ok { result, .. } = parse_reply::<MediaResult>(media.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(result.process_video.unwrap().len(), 1);
        let getall = r#"{"success":true,"log_id":"123456","result":{"verify_count":1,"ocr_charge_count":1,"match_charge_count":1,
            "verify_charge_count":1,"verify_result":[{"order":1,"is_verify_passed":true,"code":"0","message":"",
            "verify_time":"2023-10-10 10:10:10","is_charged":true,"charge_type":"verify","charge_time":"2023-10-10 10:10:10",
            "is_ocr_charge":true,"ocr_count":2,"ocr_charge_time":"2023-10-10 10:10:10","verify_detail":{"face_image":"xxx.jpg",
            "verify_log_id":"xxx","score":89.9,"threshold":80,"liveness_score":80,"spoofing_score":80,"risk_level":"1",
            "risk_tag":"xxx","is_demote":false},"idcard_confirm":{"name":"n","idcard_number":"n","idcard_type":"0",
            "idcard_ocr_result":{"address":"a","name":"n","idcard_number":"n","idcard_type":"0"},
            "idcard_images":{"front_image":"xxx.jpg","back_image":"xxx.jpg"}}}]}}"#;
        let Reply::Ok { result, .. } = parse_reply::<GetAllResult>(getall.as_bytes()).unwrap()
        else {
            panic!()
        };
        let a = &result.verify_result[0];
        assert!(a.is_verify_passed);
        assert_eq!(a.code.as_text(), "0");
        let d = a.verify_detail.as_ref().unwrap();
        assert_eq!(
            (
                d.score.as_ref().unwrap().as_f64(),
                d.threshold.as_ref().unwrap().as_f64()
            ),
            (Some(89.9), Some(80.0))
        );
        assert!(a.idcard_confirm.as_ref().unwrap().idcard_images.is_some());
    }
}
