//! The Megvii notify_url form (`data` and `sign`, application/x-www-form-urlencoded) as facegate's HTTP intake
//! reads it, then the adapter's signature check over the data exactly as decoded.
#![no_main]

use facegate::domain::adapter::{CallbackRejection, VendorAdapter};
use facegate::http::callbacks::{data_and_sign, decode_form};
use facegate::vendors::megvii::wire;
use facegate_fuzz::{form_encode, megvii, MEGVII_SECRET};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let pairs = decode_form(body);
    if let Some(pairs) = &pairs {
        // Round trip: the fully escaped form of what was read reads back the same.
        assert_eq!(decode_form(&form_encode(pairs)).as_ref(), Some(pairs));
    }

    let mut form = HeaderMap::new();
    form.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
    );
    let found = data_and_sign(&form, body);
    // data and sign are taken only when the form reads and each is there exactly once.
    let count = |name: &[u8]| {
        pairs
            .as_ref()
            .map_or(0, |p| p.iter().filter(|(k, _)| k == name).count())
    };
    assert_eq!(found.is_some(), count(b"data") == 1 && count(b"sign") == 1);
    let mut json = HeaderMap::new();
    json.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    assert!(data_and_sign(&json, body).is_none());
    assert!(data_and_sign(&HeaderMap::new(), body).is_none());

    let Some((data, sign)) = found else { return };
    let adapter = megvii();
    let expected = std::str::from_utf8(&data)
        .ok()
        .map(|d| wire::sign(MEGVII_SECRET, d));
    let verdict = adapter.verify_callback(&data, &sign);
    // Never accepted without the right signature over exactly these bytes.
    if verdict.is_ok() {
        assert_eq!(
            expected.as_deref().map(str::as_bytes),
            Some(sign.as_slice())
        );
    }
    if expected.as_deref().map(str::as_bytes) != Some(sign.as_slice()) {
        assert!(matches!(
            verdict,
            Err(CallbackRejection::InvalidSignature | CallbackRejection::Malformed)
        ));
    }
    // Correctly signed, the data is accepted exactly when it parses.
    if let Some(good) = expected {
        let text = std::str::from_utf8(&data).unwrap_or_default();
        let parsed = wire::parse_callback_data(text);
        let signed = adapter.verify_callback(&data, good.as_bytes());
        assert_eq!(signed.is_ok(), !data.is_empty() && parsed.is_ok());
        if let (Ok(v), Ok(r)) = (signed, parsed) {
            assert_eq!(v.session_id, r.biz_info.biz_no);
            assert_eq!(v.vendor_ref, r.biz_info.biz_id);
        }
    }
});
