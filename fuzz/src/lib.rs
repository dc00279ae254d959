//! Helpers shared by the fuzz targets: the Megvii adapter and sessions they drive, and independent oracles (written
//! from the documents, not copied from facegate) that the targets compare facegate's parsers with.

use std::sync::OnceLock;

use facegate::config::{MegviiConfig, Secret};
use facegate::domain::state::tests_support::blank_session;
use facegate::domain::validation::Date;
use facegate::domain::{MegviiComparison, MegviiSettings, Session, Vendor, VendorOptions};
use facegate::vendors::megvii::MegviiAdapter;

/// The api_secret the fuzzed Megvii adapter signs with.
pub const MEGVII_SECRET: &str = "fuzz-megvii-secret";

/// The date the ID number targets validate against (fixed, so a crash reproduces on any day).
pub const TODAY: Date = Date {
    year: 2026,
    month: 1,
    day: 1,
};

/// One Megvii adapter for the whole run (no network is ever used: only the callback methods are called).
pub fn megvii() -> &'static MegviiAdapter {
    static ADAPTER: OnceLock<MegviiAdapter> = OnceLock::new();
    ADAPTER.get_or_init(|| {
        facegate::app::install_crypto_provider();
        let cfg = MegviiConfig {
            api_key: Secret::new("fuzz-megvii-key"),
            api_secret: Secret::new(MEGVII_SECRET),
            ..MegviiConfig::default()
        };
        MegviiAdapter::new(&cfg, "https://facegate.example", 3600).expect("adapter")
    })
}

/// A Megvii session comparing with `comparison`, deciding at `far`.
pub fn megvii_session(comparison: MegviiComparison, far: f64) -> Session {
    let mut s = blank_session("ses_fuzz");
    s.vendor = Vendor::Megvii;
    s.options = VendorOptions::Megvii(MegviiSettings {
        comparison,
        ..MegviiSettings::default()
    });
    s.target_false_accept_rate = far;
    s
}

/// `application/x-www-form-urlencoded` with every byte escaped as `%XX`: the canonical form `decode_form` must read
/// back exactly.
pub fn form_encode(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        for b in k {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
        out.push(b'=');
        for b in v {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// Whether vendor text that facegate keeps (error metadata, logs) is free of ID-number-like digit runs.
pub fn sanitized(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            run += 1;
            if run >= 6 {
                return false;
            }
        } else {
            run = 0;
        }
    }
    !text.chars().any(char::is_control) && text.chars().count() <= 200
}

/// GB 11643-1999 check character of 17 ASCII digits (ISO 7064 MOD 11-2: weights 2^(17-i) mod 11, check value
/// (12 - sum mod 11) mod 11, 10 written X).
pub fn oracle_check_char(first17: &[u8]) -> Option<u8> {
    if first17.len() != 17 || !first17.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut sum = 0u32;
    let mut weight = 1u32;
    for &d in first17.iter().rev() {
        weight = weight * 2 % 11;
        sum += u32::from(d - b'0') * weight;
    }
    let value = (12 - sum % 11) % 11;
    Some(if value == 10 {
        b'X'
    } else {
        b'0' + value as u8
    })
}

/// Whether `y-m-d` is a real Gregorian date.
pub fn oracle_real_date(year: u32, month: u32, day: u32) -> bool {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time (UTC+8) of unix ms `ms` (whole seconds), the form Baidu sends.
pub fn beijing_time_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000) + 8 * 3600;
    let date = Date::from_unix_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date.year,
        date.month,
        date.day,
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}
