//! The Megvii callback `data` JSON: strict parsing, its serialised form read back, and what the adapter makes of a
//! correctly signed callback for sessions of both comparison types.
#![no_main]

use facegate::domain::adapter::{CallbackRejection, PollOutcome, VendorAdapter};
use facegate::domain::{FailureCode, MegviiComparison};
use facegate::vendors::megvii::wire::{self, LiteStatus, MAX_CALLBACK_DATA};
use facegate_fuzz::{megvii, megvii_session, sanitized, MEGVII_SECRET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let adapter = megvii();
    let Ok(text) = std::str::from_utf8(data) else {
        // Bytes that are not UTF-8 are never accepted, whatever the signature.
        assert!(adapter
            .verify_callback(data, b"0000000000000000000000000000000000000000")
            .is_err());
        assert!(adapter.claimed_session_id(data).is_none());
        return;
    };
    let parsed = wire::parse_callback_data(text);
    if let Ok(r) = &parsed {
        // Round trip through the simulator's serialisation.
        let again = serde_json::to_string(r).expect("serialise");
        if again.len() <= MAX_CALLBACK_DATA {
            assert_eq!(wire::parse_callback_data(&again).as_ref(), Ok(r));
        }
    }
    assert_eq!(
        adapter.claimed_session_id(data),
        parsed.as_ref().ok().map(|r| r.biz_info.biz_no.clone())
    );

    let sign = wire::sign(MEGVII_SECRET, text);
    let verdict = adapter.verify_callback(data, sign.as_bytes());
    assert_eq!(verdict.is_ok(), !data.is_empty() && parsed.is_ok());
    // One wrong hex digit, upper case, or a signature over other bytes: refused as forged.
    let mut wrong = sign.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    if !data.is_empty() {
        assert_eq!(
            adapter.verify_callback(data, &wrong).err(),
            Some(CallbackRejection::InvalidSignature)
        );
        if sign.bytes().any(|b| b.is_ascii_alphabetic()) {
            assert_eq!(
                adapter
                    .verify_callback(data, sign.to_ascii_uppercase().as_bytes())
                    .err(),
                Some(CallbackRejection::InvalidSignature)
            );
        }
    }

    let Ok(r) = parsed else {
        return;
    };
    for comparison in [
        MegviiComparison::Authority,
        MegviiComparison::ReferenceImage,
    ] {
        for far in [1e-3, 1e-4, 1e-5, 1e-6] {
            let session = megvii_session(comparison, far);
            let outcome = adapter
                .interpret_callback(&session, data)
                .expect("parsed data is interpreted");
            check(&r, &outcome);
        }
    }
});

/// What must hold of any interpretation.
fn check(r: &wire::LiteResult, outcome: &PollOutcome) {
    match outcome {
        PollOutcome::Pending { .. } => {
            assert!(matches!(
                r.status,
                LiteStatus::NotStarted | LiteStatus::Processing
            ));
        }
        PollOutcome::Expired { .. } => panic!("a callback never expires a session"),
        PollOutcome::Final {
            verified,
            failure,
            outcome,
        } => {
            assert!(r.status.is_final());
            assert_eq!(*verified, failure.is_none());
            if *verified {
                // A pass needs a finished flow, a passed liveness check, no comparison error and a comparison at
                // or above the threshold.
                assert_eq!(r.status, LiteStatus::Ok);
                assert_eq!(
                    r.liveness_result.as_ref().map(|l| l.result.as_str()),
                    Some("PASS")
                );
                let verify = r
                    .verify_result
                    .as_ref()
                    .expect("a pass has a verify_result");
                assert!(verify
                    .error_message
                    .as_deref()
                    .unwrap_or_default()
                    .is_empty());
                let fm = outcome
                    .face_match
                    .as_ref()
                    .expect("a pass has a face match");
                assert!(fm.passed && fm.score >= fm.threshold, "{fm:?}");
            }
            if let Some(f) = failure {
                assert!(sanitized(&f.vendor_code), "{:?}", f.vendor_code);
                if r.status == LiteStatus::Cancelled {
                    assert_eq!(f.code, FailureCode::UserAbandoned);
                }
            }
        }
    }
    let o = match outcome {
        PollOutcome::Pending { outcome, .. }
        | PollOutcome::Expired { outcome }
        | PollOutcome::Final { outcome, .. } => outcome,
    };
    // What is shown is the masked form of what is kept.
    assert_eq!(
        o.identity_document,
        o.revealable_identity.as_ref().map(|i| i.masked())
    );
}
