//! Juhe verifyface wire types (juhe-verifyface-api.txt) and their strict parsing.
//!
//! Envelope: `{"reason": "...", "result": {...} | null, "error_code": N}` (legacy `resultcode` may appear).
//! `result`: `res` 1|2|3, `score` (string, res = 1), `code` (string 3003|3004|3005, res = 2), `desc`, `message`,
//! `orderid`.
//!
//! Seen in the wild: `res` and `error_code` sent as strings ("1", "0") although the document says int; both
//! forms are accepted, strictly (a JSON integer, or a string of decimal digits only).

use serde::Deserialize;

pub use crate::vendors::json::StringOrNumber;

/// The reply envelope.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    /// Human-readable reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// The result; null on errors.
    #[serde(default)]
    pub result: Option<VerifyResult>,
    /// 0 on success (billed once), else a service (2264xx) or system (100xx) code.
    #[serde(deserialize_with = "integer")]
    pub error_code: i64,
    /// Legacy system code ("101" ...), present on some system errors.
    #[serde(default)]
    pub resultcode: Option<String>,
}

/// The `result` object.
#[derive(Debug, Deserialize)]
pub struct VerifyResult {
    /// 1 match, 2 identity ok but face comparison failed, 3 name/ID mismatch.
    #[serde(deserialize_with = "integer")]
    pub res: i64,
    /// Score 0-100 (res = 1).
    #[serde(default)]
    pub score: Option<StringOrNumber>,
    /// Human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// Juhe order number.
    #[serde(default)]
    pub orderid: Option<String>,
    /// 3003, 3004 or 3005 (res = 2).
    #[serde(default)]
    pub code: Option<StringOrNumber>,
    /// Description of `code`.
    #[serde(default)]
    pub desc: Option<String>,
}

/// An integer sent as a JSON integer or as a string of ASCII decimal digits ("0", "226401"); anything else
/// (signs, spaces, decimals, exponents, empty) is not the documented value.
fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    match StringOrNumber::deserialize(d)? {
        StringOrNumber::Number(n) => n
            .as_i64()
            .ok_or_else(|| D::Error::custom("expected an integer")),
        StringOrNumber::Text(s)
            if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse()
                .map_err(|_| D::Error::custom("expected an integer"))
        }
        StringOrNumber::Text(_) => Err(D::Error::custom(
            "expected an integer or a string of decimal digits",
        )),
    }
}

/// Parses a reply body strictly: valid UTF-8 JSON object, nothing after it.
pub fn parse(body: &[u8]) -> Result<Envelope, String> {
    crate::vendors::json::parse_strict(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_examples() {
        let ok = r#"{"reason":"成功","result":{"res":1,"score":"96","message":"身份证号与姓名匹配，且比对成功","orderid":"JH264117091113513280159458"},"error_code":0}"#;
        let e = parse(ok.as_bytes()).unwrap();
        assert_eq!(e.error_code, 0);
        let r = e.result.unwrap();
        assert_eq!(r.res, 1);
        assert_eq!(r.score.unwrap().as_text(), "96");
        let err =
            r#"{"resultcode":"101","reason":"错误的请求KEY","result":null,"error_code":10001}"#;
        let e = parse(err.as_bytes()).unwrap();
        assert_eq!(e.error_code, 10001);
        assert!(e.result.is_none());
    }

    #[test]
    fn res_and_error_code_may_be_digit_strings() {
        let e = parse(br#"{"reason":"ok","result":{"res":"1","score":"96"},"error_code":"0"}"#)
            .unwrap();
        assert_eq!((e.error_code, e.result.unwrap().res), (0, 1));
        let e = parse(br#"{"reason":"x","result":null,"error_code":"226401"}"#).unwrap();
        assert_eq!(e.error_code, 226401);
        for bad in [
            r#"{"result":{"res":"+1"},"error_code":0}"#,
            r#"{"result":{"res":" 1"},"error_code":0}"#,
            r#"{"result":{"res":"1.0"},"error_code":0}"#,
            r#"{"result":{"res":1.5},"error_code":0}"#,
            r#"{"result":{"res":"１"},"error_code":0}"#,
            r#"{"result":{"res":""},"error_code":0}"#,
            r#"{"result":{"res":true},"error_code":0}"#,
            r#"{"result":null,"error_code":"-1"}"#,
            r#"{"result":null,"error_code":"0x0"}"#,
            r#"{"result":null,"error_code":"99999999999999999999"}"#,
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_trailing_and_garbage() {
        assert!(parse(br#"{"error_code":0}x"#).is_err());
        assert!(parse(b"<html>").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
        assert!(
            parse(br#"{"reason":"x"}"#).is_err(),
            "error_code is required"
        );
    }
}
