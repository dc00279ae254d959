//! Baidu `result/media/query` replies (video and image URLs kept one day).
#![no_main]

use facegate::vendors::baidu::error_of;
use facegate::vendors::baidu::wire::{self, MediaResult, Reply};
use facegate_fuzz::sanitized;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match wire::parse_reply::<MediaResult>(body) {
        Ok(Reply::Ok { result, .. }) => {
            for list in [&result.process_video, &result.video, &result.images]
                .into_iter()
                .flatten()
            {
                assert!(list.iter().all(|u| u.len() <= body.len()));
            }
        }
        Ok(Reply::Err(e)) => {
            let v = error_of(&e, "result/media/query");
            assert!(sanitized(&v.vendor_message), "{v:?}");
        }
        Err(_) => {}
    }
});
