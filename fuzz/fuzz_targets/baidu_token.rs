//! Baidu's OAuth token endpoint reply (`access_token`/`expires_in`, or `error`/`error_description`), read as the
//! token cache reads it.
#![no_main]

use facegate::domain::error::sanitize_vendor_text;
use facegate::vendors::baidu::token::TokenReply;
use facegate_fuzz::sanitized;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(reply) = serde_json::from_slice::<TokenReply>(body) else {
        return;
    };
    // What the cache keeps of an error reply: sanitised text.
    for text in [&reply.error, &reply.error_description]
        .into_iter()
        .flatten()
    {
        let kept = sanitize_vendor_text(text);
        assert!(sanitized(&kept), "{kept:?}");
        assert_eq!(
            sanitize_vendor_text(&kept),
            kept,
            "sanitising is idempotent"
        );
    }
    // The token's end, as the cache computes it, never overflows.
    if let Some(expires_in) = reply.expires_in {
        let _ = 0i64.saturating_add(expires_in.saturating_mul(1000));
    }
});
