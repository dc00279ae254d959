//! Baidu `result/simple` replies (the captured face image URL).
#![no_main]

use facegate::vendors::baidu::error_of;
use facegate::vendors::baidu::wire::{self, Reply, SimpleResult};
use facegate_fuzz::sanitized;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match wire::parse_reply::<SimpleResult>(body) {
        Ok(Reply::Ok { .. }) => {
            // The same body read without a result type is an answer of the same kind.
            assert!(matches!(
                wire::parse_reply::<serde_json::Value>(body),
                Ok(Reply::Ok { .. })
            ));
        }
        Ok(Reply::Err(e)) => {
            assert_eq!(
                wire::parse_reply::<serde_json::Value>(body).ok(),
                Some(Reply::Err(e.clone()))
            );
            let v = error_of(&e, "result/simple");
            assert!(sanitized(&v.vendor_message), "{v:?}");
        }
        Err(_) => {}
    }
});
