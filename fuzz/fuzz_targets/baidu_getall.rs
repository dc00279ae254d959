//! Baidu `result/getall` replies: every attempt read as the poller reads it (times in Beijing time, scores,
//! billing), failed attempts mapped to neutral failures.
#![no_main]

use facegate::vendors::baidu::wire::{self, GetAllResult, Reply};
use facegate::vendors::baidu::{attempt_of, error_of, failure_of, parse_beijing_time};
use facegate_fuzz::sanitized;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let all = match wire::parse_reply::<GetAllResult>(body) {
        Ok(Reply::Ok { result, .. }) => result,
        Ok(Reply::Err(e)) => {
            let v = error_of(&e, "result/getall");
            assert!(sanitized(&v.vendor_message), "{v:?}");
            return;
        }
        Err(_) => return,
    };
    for a in &all.verify_result {
        let times = [&a.verify_time, &a.charge_time, &a.ocr_charge_time];
        let readable = times.iter().all(|t| match t.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(text) => parse_beijing_time(text).is_some(),
        });
        let Ok(attempt) = attempt_of(a) else {
            assert!(!readable, "an attempt with readable times is read");
            continue;
        };
        assert!(readable);
        assert_eq!(attempt.order, a.order);
        assert_eq!(attempt.passed, a.is_verify_passed);
        assert_eq!(
            attempt.verify_time_ms,
            a.verify_time
                .as_deref()
                .map(str::trim)
                .and_then(parse_beijing_time)
        );
        for score in [
            attempt.score,
            attempt.threshold,
            attempt.liveness_score,
            attempt.spoofing_score,
        ]
        .into_iter()
        .flatten()
        {
            assert!(score.is_finite());
        }
        assert!(sanitized(&attempt.message), "{:?}", attempt.message);
        assert!(sanitized(&attempt.risk_tag), "{:?}", attempt.risk_tag);
        if !attempt.passed {
            let f = failure_of(&attempt);
            assert_eq!(f.vendor_code, attempt.code);
            assert_eq!(f.vendor_message, attempt.message);
        }
    }
});
