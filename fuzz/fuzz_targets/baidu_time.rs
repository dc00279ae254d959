//! Baidu's `YYYY-M-D HH:MM:SS` Beijing times (getall `verify_time`, `charge_time`): never a panic, only real
//! dates and times, and the canonical text of what was read reads back the same.
#![no_main]

use facegate::vendors::baidu::parse_beijing_time;
use facegate_fuzz::{beijing_time_text, oracle_real_date};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(ms) = parse_beijing_time(text) else {
        return;
    };
    assert_eq!(ms % 1000, 0);
    // What was accepted named a real date and a time of day (a leap second 60 is allowed). Components are read as
    // numbers, sign and leading zeros included, as facegate reads them; the checks are on the values.
    let (date, time) = text
        .split_once(' ')
        .expect("accepted text has a date and a time");
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().expect("date part"))
        .collect();
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().expect("time part"))
        .collect();
    assert!(d.len() == 3 && t.len() == 3);
    let part = |v: i64| u32::try_from(v).expect("a non-negative component");
    assert!(
        oracle_real_date(part(d[0]), part(d[1]), part(d[2])),
        "{text:?}"
    );
    assert!(
        (0..24).contains(&t[0]) && (0..60).contains(&t[1]) && (0..=60).contains(&t[2]),
        "{text:?}"
    );
    if t[2] == 60 {
        // A leap second is the second after :59.
        let before = format!("{} {}:{}:59", date, t[0], t[1]);
        assert_eq!(parse_beijing_time(&before), Some(ms - 1000));
        return;
    }
    // Inverse: the canonical text of what was read reads back the same, and is the same date and time.
    let canonical = beijing_time_text(ms);
    assert_eq!(parse_beijing_time(&canonical), Some(ms));
    assert_eq!(
        canonical,
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            d[0], d[1], d[2], t[0], t[1], t[2]
        )
    );
});
