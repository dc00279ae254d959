//! The ID number validator (GB 11643-1999 mainland cards and HMT residence permits): whatever it accepts is 18
//! characters with a real birth date, the right region and a valid check character, canonical, and refused after
//! any single-digit change or adjacent swap; and a number built with the right check character is accepted exactly
//! when its region and birth date are right.
#![no_main]

use facegate::domain::validation::{
    gb11643_check_char, mask_id_number, validate_id_number, IdType,
};
use facegate_fuzz::{oracle_check_char, oracle_real_date, TODAY};
use libfuzzer_sys::fuzz_target;

const FIELD: &str = "identity.id_number";

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for id_type in [IdType::MainlandResidentIdCard, IdType::HmtResidencePermit] {
        if let Ok(id) = validate_id_number(FIELD, id_type, raw, TODAY) {
            check_accepted(id_type, raw, &id);
        }
        // The same 17 leading digits with the right check character.
        let first17: String = raw.trim_ascii().chars().take(17).collect();
        if let Some(check) = oracle_check_char(first17.as_bytes()) {
            assert_eq!(gb11643_check_char(&first17), Some(char::from(check)));
            let built = format!("{first17}{}", char::from(check));
            let expected = region_ok(id_type, built.as_bytes()) && birth_ok(built.as_bytes());
            let got = validate_id_number(FIELD, id_type, &built, TODAY);
            assert_eq!(
                got.is_ok(),
                expected,
                "{id_type:?} {}",
                got.err().map(|v| v.description).unwrap_or_default()
            );
            if let Ok(id) = got {
                check_accepted(id_type, &built, &id);
            }
        } else {
            assert_eq!(gb11643_check_char(&first17), None);
        }
    }
});

fn region_ok(id_type: IdType, id: &[u8]) -> bool {
    match id_type {
        IdType::MainlandResidentIdCard => {
            let province = (id[0] - b'0') * 10 + (id[1] - b'0');
            (11..=65).contains(&province) || province == 71
        }
        IdType::HmtResidencePermit => [b"810000", b"820000", b"830000"]
            .iter()
            .any(|p| id.starts_with(*p)),
    }
}

fn birth_ok(id: &[u8]) -> bool {
    let num = |r: std::ops::Range<usize>| -> u32 {
        id[r].iter().fold(0, |a, d| a * 10 + u32::from(d - b'0'))
    };
    let (y, m, d) = (num(6..10), num(10..12), num(12..14));
    if !oracle_real_date(y, m, d) {
        return false;
    }
    let birth = (y, m, d);
    let today = (
        u32::from(TODAY.year),
        u32::from(TODAY.month),
        u32::from(TODAY.day),
    );
    (1900, 1, 1) <= birth && birth <= today
}

fn check_accepted(id_type: IdType, raw: &str, id: &str) {
    let b = id.as_bytes();
    assert_eq!(b.len(), 18);
    assert!(b[..17].iter().all(u8::is_ascii_digit));
    assert_eq!(
        oracle_check_char(&b[..17]),
        Some(b[17]),
        "accepted with a wrong check character"
    );
    assert!(region_ok(id_type, b) && birth_ok(b));
    // Canonical: the input trimmed, with a lowercase x upper-cased, and accepted again as it is.
    assert_eq!(id, raw.trim_ascii().replace('x', "X"));
    assert_eq!(
        validate_id_number(FIELD, id_type, id, TODAY).as_deref(),
        Ok(id)
    );
    assert_eq!(IdType::of_number(id), Some(id_type));
    let masked = mask_id_number(id);
    assert_eq!(&masked[..3], &id[..3]);
    assert_eq!(&masked[14..], &id[14..]);
    assert!(masked[3..14].bytes().all(|c| c == b'*'));
    // MOD 11-2 catches every single-digit change and every swap of two different adjacent digits.
    let mut changed = b.to_vec();
    for i in 0..17 {
        for d in b'0'..=b'9' {
            if d == b[i] {
                continue;
            }
            changed[i] = d;
            let text = std::str::from_utf8(&changed).unwrap_or_default();
            assert!(
                validate_id_number(FIELD, id_type, text, TODAY).is_err(),
                "one digit changed at {i}"
            );
        }
        changed[i] = b[i];
    }
    for i in 0..16 {
        if b[i] == b[i + 1] {
            continue;
        }
        changed.swap(i, i + 1);
        let text = std::str::from_utf8(&changed).unwrap_or_default();
        assert!(
            validate_id_number(FIELD, id_type, text, TODAY).is_err(),
            "digits {i} and {} swapped",
            i + 1
        );
        changed.swap(i, i + 1);
    }
}
