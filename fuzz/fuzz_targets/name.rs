//! The name validator: it accepts exactly the names its rules describe (1-64 letters, combining marks after a
//! character, space and the punctuation · • . - '), returns them trimmed and canonical, and masks them.
#![no_main]

use facegate::domain::mask_name;
use facegate::domain::validation::validate_name;
use libfuzzer_sys::fuzz_target;

fn combining(c: char) -> bool {
    ('\u{0300}'..='\u{036F}').contains(&c)
}

/// The documented rule, written independently of the validator.
fn should_accept(name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    !chars.is_empty()
        && chars.len() <= 64
        && !combining(chars[0])
        && chars.iter().any(|c| c.is_alphabetic() && !combining(*c))
        && chars.iter().all(|&c| {
            c.is_alphabetic()
                || combining(c)
                || matches!(c, ' ' | '\u{00B7}' | '\u{2022}' | '.' | '-' | '\'')
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let got = validate_name("identity.name", raw);
    assert_eq!(
        got.is_ok(),
        should_accept(raw.trim()),
        "{:?}",
        got.as_ref().err()
    );
    if let Ok(name) = got {
        assert_eq!(name, raw.trim());
        assert_eq!(validate_name("identity.name", &name).as_ref(), Ok(&name));
        assert!(!name
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'));
        let masked = mask_name(&name);
        assert_eq!(masked.chars().count(), name.chars().count());
        assert_eq!(masked.chars().next(), name.chars().next());
        assert!(masked.chars().skip(1).all(|c| c == '*'));
    }
});
