//! Juhe verifyface replies (`reason`, `result{res, score, code, ...}`, `error_code`): a billed answer mapped to a
//! decision at each published false accept rate, error codes mapped to vendor errors.
#![no_main]

use facegate::domain::adapter::Progress;
use facegate::domain::{FailureCode, Vendor};
use facegate::vendors::juhe::{map_error_code, map_result, wire};
use facegate_fuzz::sanitized;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(envelope) = wire::parse(body) else {
        return;
    };
    if envelope.error_code != 0 {
        let e = map_error_code(
            envelope.error_code,
            envelope.reason.as_deref().unwrap_or_default(),
        );
        assert_eq!(e.vendor, Vendor::Juhe);
        assert_eq!(e.vendor_code, envelope.error_code.to_string());
        assert!(sanitized(&e.vendor_message), "{e:?}");
        return;
    }
    for encrypted in [false, true] {
        for far in [1e-3, 1e-4, 1e-5] {
            // Envelope is not Clone: each decision reads the body afresh.
            let Ok(envelope) = wire::parse(body) else {
                panic!("the body parsed once");
            };
            let res = envelope.result.as_ref().map(|r| r.res);
            match map_result(envelope, encrypted, far, 1_700_000_000_000) {
                Ok(Progress::Final {
                    verified,
                    failure,
                    outcome,
                }) => {
                    assert_eq!(verified, failure.is_none());
                    // error_code 0 is billed once, whatever the decision.
                    assert_eq!(outcome.billing.len(), 1);
                    assert!(outcome.billing[0].billed);
                    if verified {
                        // A pass is res 1 with a score in 0..=100 at or above the threshold of the session's FAR.
                        assert_eq!(res, Some(1));
                        let fm = outcome.face_match.expect("a pass has a face match");
                        assert!((0.0..=100.0).contains(&fm.score));
                        assert!(fm.passed && fm.score >= fm.threshold);
                        assert!((fm.threshold_false_accept_rate - far).abs() <= far * 0.01);
                    }
                    if let Some(f) = failure {
                        assert!(sanitized(&f.vendor_message), "{f:?}");
                        match res {
                            Some(3) => assert_eq!(f.code, FailureCode::IdNameMismatch),
                            Some(1) => assert_eq!(f.code, FailureCode::ScoreBelowThreshold),
                            Some(2) => {}
                            other => panic!("undocumented res {other:?} decided"),
                        }
                    }
                }
                Ok(Progress::AwaitUser { .. }) => panic!("Juhe is synchronous"),
                Err(e) => {
                    // Anything unreadable after a billed answer is a protocol error that says it may be billed.
                    assert!(e.possibly_billed, "{e:?}");
                    assert!(sanitized(&e.vendor_message), "{e:?}");
                }
            }
        }
    }
});
