//! Vendor callback intake. Megvii POSTs a form with `data` (JSON) and `sign` to `notify_url`, which facegate points
//! at `/v1/callbacks/megvii/notify`. The form is decoded to bytes without any other change, so the signature is
//! checked over the data exactly as received; the domain then parses it strictly and applies it as a hint. Forged
//! or malformed callbacks change nothing, are answered with an error status, and are counted.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::domain::adapter::CallbackRejection;
use crate::domain::service::SessionService;
use crate::domain::Vendor;

/// Path prefix of every vendor callback.
pub const PREFIX: &str = "/v1/callbacks";

/// Path of the Megvii notify_url.
pub const MEGVII_NOTIFY_PATH: &str = "/v1/callbacks/megvii/notify";

/// Largest callback body accepted.
pub const MAX_CALLBACK_BYTES: usize = 256 * 1024;

/// The callback routes.
pub fn router(service: Arc<SessionService>) -> Router {
    Router::new()
        .route(MEGVII_NOTIFY_PATH, post(megvii_notify))
        .layer(DefaultBodyLimit::max(MAX_CALLBACK_BYTES))
        .with_state(service)
}

/// Decodes an `application/x-www-form-urlencoded` body into raw byte pairs (`+` is a space, `%XX` a byte). Any
/// malformed escape makes the whole body invalid.
pub fn decode_form(body: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    fn decode(part: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = part.get(i + 1..i + 3)?;
                    let text = std::str::from_utf8(hex).ok()?;
                    out.push(u8::from_str_radix(text, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        Some(out)
    }
    let mut pairs = Vec::new();
    for piece in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match piece.iter().position(|b| *b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &[][..]),
        };
        pairs.push((decode(k)?, decode(v)?));
    }
    Some(pairs)
}

/// The `data` and `sign` fields of a callback form, each exactly once.
pub fn data_and_sign(headers: &HeaderMap, body: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
        .unwrap_or(false);
    if !form_type {
        return None;
    }
    let pairs = decode_form(body)?;
    let one = |name: &[u8]| -> Option<Vec<u8>> {
        let mut found = pairs.iter().filter(|(k, _)| k == name);
        let first = found.next()?.1.clone();
        found.next().is_none().then_some(first)
    };
    Some((one(b"data")?, one(b"sign")?))
}

/// The answer to a callback sender.
pub fn answer(result: Result<(), CallbackRejection>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "OK").into_response(),
        Err(r) => {
            let status = match r {
                CallbackRejection::Malformed => StatusCode::BAD_REQUEST,
                CallbackRejection::InvalidSignature => StatusCode::FORBIDDEN,
                CallbackRejection::UnknownSession => StatusCode::NOT_FOUND,
            };
            (status, r.as_str()).into_response()
        }
    }
}

async fn megvii_notify(
    State(service): State<Arc<SessionService>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // A body over MAX_CALLBACK_BYTES (or one that could not be read) is a malformed callback like any other:
    // counted, and answered 400 MALFORMED_CALLBACK rather than axum's own 413 text.
    let body = body.unwrap_or_default();
    let (data, sign) = data_and_sign(&headers, &body).unwrap_or_default();
    answer(
        service
            .callback(
                Vendor::Megvii,
                &data,
                &sign,
                crate::domain::events::SOURCE_NOTIFY,
            )
            .await
            .map(|_| ()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_to_exact_bytes() {
        let pairs = decode_form(b"data=%7B%22a%22%3A1%7D%00%80&sign=ab+c").unwrap();
        assert_eq!(pairs[0].0, b"data");
        assert_eq!(pairs[0].1, b"{\"a\":1}\x00\x80");
        assert_eq!(pairs[1].1, b"ab c");
        assert!(decode_form(b"data=%7").is_none());
        assert!(decode_form(b"data=%zz").is_none());
    }

    #[test]
    fn data_and_sign_must_each_be_there_once() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert!(data_and_sign(&h, b"data=x&sign=y").is_some());
        assert!(data_and_sign(&h, b"data=x&sign=y&data=z").is_none());
        assert!(data_and_sign(&h, b"data=x").is_none());
        let mut json = HeaderMap::new();
        json.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(data_and_sign(&json, b"data=x&sign=y").is_none());
    }
}
