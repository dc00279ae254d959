//! Strict JSON reading shared by the adapters: a vendor reply is untrusted input.

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Parses a reply body strictly: UTF-8, one JSON value of the expected shape, nothing after it.
pub fn parse_strict<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(body).map_err(|_| "reply is not UTF-8".to_owned())?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value =
        T::deserialize(&mut de).map_err(|e| format!("reply is not the documented JSON: {e}"))?;
    de.end()
        .map_err(|_| "trailing data after the JSON reply".to_owned())?;
    Ok(value)
}

/// A value vendors document as a string but some replies send as a JSON number (or the other way round).
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum StringOrNumber {
    /// "96"
    Text(String),
    /// 96
    Number(serde_json::Number),
}

impl StringOrNumber {
    /// The value as sent, as text.
    pub fn as_text(&self) -> String {
        match self {
            StringOrNumber::Text(s) => s.clone(),
            StringOrNumber::Number(n) => n.to_string(),
        }
    }

    /// The value as a finite number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            StringOrNumber::Text(s) => s.trim().parse::<f64>().ok(),
            StringOrNumber::Number(n) => n.as_f64(),
        }
        .filter(|v| v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing_and_lenient_scalars() {
        #[derive(Deserialize)]
        struct T {
            v: StringOrNumber,
        }
        assert_eq!(
            parse_strict::<T>(br#"{"v":"7.5"}"#).unwrap().v.as_f64(),
            Some(7.5)
        );
        assert_eq!(parse_strict::<T>(br#"{"v":80}"#).unwrap().v.as_text(), "80");
        assert_eq!(parse_strict::<T>(br#"{"v":"x"}"#).unwrap().v.as_f64(), None);
        assert!(parse_strict::<T>(br#"{"v":1} {}"#).is_err());
        assert!(parse_strict::<T>(&[0xff]).is_err());
    }
}
