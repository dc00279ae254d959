//! Megvii `get_token` replies under the HTTP statuses Megvii answers with: the success body read back from its
//! serialised form, error bodies mapped to vendor errors.
#![no_main]

use facegate::vendors::megvii::wire::{self, Reply};
use facegate_fuzz::{megvii, sanitized};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    for status in [200u16, 400, 403, 404, 500, 502] {
        match wire::parse_get_token(status, body) {
            Ok(Reply::Ok(r)) => {
                assert_eq!(status, 200, "a success body is only read under 200");
                let text = serde_json::to_vec(&r).expect("serialise");
                assert_eq!(wire::parse_get_token(200, &text), Ok(Reply::Ok(r)));
            }
            Ok(Reply::Err { http_status, error }) => {
                assert_eq!(http_status, status);
                check_error(status, &error);
                let text = serde_json::to_vec(&error).expect("serialise");
                assert_eq!(
                    wire::parse_get_token(status, &text),
                    Ok(Reply::Err { http_status, error })
                );
            }
            Err(_) => {}
        }
    }
});

fn check_error(status: u16, error: &wire::ErrorReply) {
    let (code, detail) = (error.code(), error.detail());
    assert_eq!(code, code.trim());
    assert_eq!(detail, detail.trim());
    assert!(!code.contains(':'));
    assert!(error.error_message.contains(code) && error.error_message.contains(detail));
    let e = megvii().error_of(status, error);
    assert!(
        sanitized(&e.vendor_code) && sanitized(&e.vendor_message),
        "{e:?}"
    );
    assert!(!e.possibly_billed);
}
