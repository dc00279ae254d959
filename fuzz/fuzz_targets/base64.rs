//! The base64 validator: it accepts exactly the texts RFC 4648 standard base64 with canonical padding decodes
//! (checked against the base64 crate), says how many bytes they decode to, and the accepted text is canonical.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use facegate::domain::validation::validate_base64;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let got = validate_base64("probe_image.base64", text);
    let decoded = STANDARD.decode(text.as_bytes());
    if text.is_empty() {
        assert!(got.is_err());
        return;
    }
    match (&got, &decoded) {
        (Ok(n), Ok(bytes)) => {
            assert_eq!(*n, bytes.len());
            assert_eq!(STANDARD.encode(bytes), text);
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("accepted what does not decode: {e}"),
        (Err(v), Ok(_)) => panic!("refused canonical base64: {}", v.description),
    }
});
