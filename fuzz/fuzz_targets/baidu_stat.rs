//! Baidu `result/stat` replies: the per-interface counters facegate keeps.
#![no_main]

use facegate::vendors::baidu::wire::{self, Reply, StatResult};
use facegate::vendors::baidu::{api_stats, error_of};
use facegate_fuzz::sanitized;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let stat = match wire::parse_reply::<StatResult>(body) {
        Ok(Reply::Ok { result, .. }) => result,
        Ok(Reply::Err(e)) => {
            let v = error_of(&e, "result/stat");
            assert!(sanitized(&v.vendor_message), "{v:?}");
            return;
        }
        Err(_) => return,
    };
    let kept = api_stats(&stat);
    // One row kept per counter sent, in the same order, with the error code as sent.
    let sent: Vec<_> = stat.values().flatten().collect();
    assert_eq!(kept.len(), sent.len());
    for (k, row) in kept.iter().zip(sent) {
        assert!(sanitized(&k.api), "{:?}", k.api);
        assert_eq!(k.error_code, row.error_code.as_text());
        if let Some(c) = row.count.as_f64() {
            assert_eq!(k.count, c as i64);
        } else {
            assert_eq!(k.count, 0);
        }
    }
});
