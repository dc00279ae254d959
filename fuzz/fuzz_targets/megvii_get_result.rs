//! Megvii `get_result` replies: the success body (the callback result fields plus request_id, time_used and
//! images) read back from its serialised form, images decoded from their data URIs, the result interpreted as a
//! callback's would be, and error bodies mapped to vendor errors.
#![no_main]

use base64::Engine as _;
use facegate::domain::adapter::{PollOutcome, VendorAdapter};
use facegate::domain::MegviiComparison;
use facegate::vendors::megvii::wire::{self, Reply};
use facegate_fuzz::{megvii, megvii_session, sanitized};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    for status in [200u16, 400, 403, 500] {
        match wire::parse_get_result(status, body) {
            Ok(Reply::Ok(r)) => {
                assert_eq!(status, 200, "a success body is only read under 200");
                let text = serde_json::to_vec(&r).expect("serialise");
                assert_eq!(wire::parse_get_result(200, &text), Ok(Reply::Ok(r.clone())));
                for image in r
                    .images
                    .iter()
                    .flat_map(|i| [&i.image_best, &i.image_idcard_front, &i.image_idcard_back])
                {
                    let Some(uri) = image else { continue };
                    if let Some(bytes) = wire::decode_data_uri_jpeg(uri) {
                        assert!(!bytes.is_empty());
                        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
                        assert!(uri.ends_with(&format!(";base64,{b64}")));
                    }
                }
                // The result part is what a callback carries: it is interpreted the same way.
                let data = serde_json::to_vec(&r.result).expect("serialise");
                if data.len() <= wire::MAX_CALLBACK_DATA {
                    let session = megvii_session(MegviiComparison::Authority, 1e-4);
                    let outcome = megvii()
                        .interpret_callback(&session, &data)
                        .expect("a get_result result reads as callback data");
                    if let PollOutcome::Final {
                        verified: true,
                        outcome,
                        ..
                    } = &outcome
                    {
                        assert_eq!(r.result.status, wire::LiteStatus::Ok);
                        assert!(outcome.face_match.as_ref().is_some_and(|f| f.passed));
                    }
                }
            }
            Ok(Reply::Err { http_status, error }) => {
                assert_eq!(http_status, status);
                let e = megvii().error_of(status, &error);
                assert!(
                    sanitized(&e.vendor_code) && sanitized(&e.vendor_message),
                    "{e:?}"
                );
                let text = serde_json::to_vec(&error).expect("serialise");
                assert_eq!(
                    wire::parse_get_result(status, &text),
                    Ok(Reply::Err { http_status, error })
                );
            }
            Err(_) => {}
        }
    }
});
