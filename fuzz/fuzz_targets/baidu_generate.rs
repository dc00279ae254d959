//! Baidu `verifyToken/generate`, `idcard/submit` and `uploadMatchImage` replies: the faceprint envelope or the
//! gateway error, read the same whatever the result type, and error answers mapped to vendor errors.
#![no_main]

use facegate::vendors::baidu::error_of;
use facegate::vendors::baidu::wire::{self, GenerateResult, Reply};
use facegate_fuzz::sanitized;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let generic = wire::parse_reply::<serde_json::Value>(body);
    let generate = wire::parse_reply::<GenerateResult>(body);
    let optional = wire::parse_reply::<Option<serde_json::Value>>(body);
    // An error answer, or an unreadable envelope, does not depend on the result type expected.
    match (&generic, &generate) {
        (Ok(Reply::Err(a)), b) => assert_eq!(b.as_ref().ok(), Some(&Reply::Err(a.clone()))),
        (Err(_), b) => assert!(b.is_err()),
        (Ok(Reply::Ok { log_id, .. }), Ok(Reply::Ok { log_id: l2, .. })) => assert_eq!(log_id, l2),
        (Ok(Reply::Ok { .. }), _) => {}
    }
    assert_eq!(generic.is_ok(), optional.is_ok());
    if let Ok(Reply::Err(e)) = &generic {
        for path in ["verifyToken/generate", "idcard/submit", "uploadMatchImage"] {
            let v = error_of(e, path);
            assert!(sanitized(&v.vendor_message), "{v:?}");
            assert_eq!(v.vendor_code, e.code.to_string());
            assert!(!v.possibly_billed);
        }
    }
});
