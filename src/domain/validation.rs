//! Input validation for face real-name verification requests.
//!
//! Everything in this module is pure and deterministic (apart from
//! [`Date::today_utc`]), never panics on any input, and never copies the
//! value under validation into an error: names and ID numbers are personal
//! data, so a [`Violation`] only says *what* is wrong, never *with what*.
//!
//! Rules implemented here:
//!
//! * Mainland resident ID card numbers (GB 11643-1999): 18 characters,
//!   17 digits plus a digit or `X` check character computed with
//!   ISO 7064 MOD 11-2, an embedded birth date between 1900-01-01 and today,
//!   and a province code in `11..=65` or `71`.
//! * Hong Kong / Macau / Taiwan residence permit numbers: the same structure
//!   and check rule, with the first six characters fixed to `810000`,
//!   `820000` or `830000`.
//! * Person names, JPEG/PNG image payloads and standard base64 text.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The kind of identity document an ID number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IdType {
    /// Mainland China resident identity card (GB 11643-1999, 18 characters).
    MainlandResidentIdCard,
    /// Residence permit for Hong Kong, Macau and Taiwan residents
    /// (18 characters starting with `810000`, `820000` or `830000`).
    HmtResidencePermit,
}

impl IdType {
    /// The document type an 18-character number (as a vendor reports it) belongs to, by its region prefix; `None`
    /// for anything else. It does not validate the number.
    #[must_use]
    pub fn of_number(number: &str) -> Option<IdType> {
        if number.len() != 18 {
            None
        } else if HMT_PREFIXES
            .iter()
            .any(|p| number.as_bytes().starts_with(*p))
        {
            Some(IdType::HmtResidencePermit)
        } else {
            Some(IdType::MainlandResidentIdCard)
        }
    }
}

/// A single invalid field, shaped like `google.rpc.BadRequest.FieldViolation`.
///
/// `description` explains what is wrong without ever repeating the rejected
/// value, so a `Violation` is safe to log and to return to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, e.g. `identity.id_number`.
    pub field: String,
    /// Human-readable description of the problem; never contains the input.
    pub description: String,
}

impl Violation {
    /// Builds a violation for `field` with the given description.
    pub fn new(field: &str, description: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            description: description.into(),
        }
    }
}

impl fmt::Display for Violation {
    /// Formats as `field: description`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

impl std::error::Error for Violation {}

/// A date in the proleptic Gregorian calendar.
///
/// Field order makes the derived `Ord` chronological. A `Date` value may be
/// invalid (e.g. February 30th); use [`Date::is_valid`] to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year, e.g. `1999`.
    pub year: u16,
    /// Month, `1..=12` when valid.
    pub month: u8,
    /// Day of month, `1..=31` when valid.
    pub day: u8,
}

/// Days from 1970-01-01 to 0000-01-01 (negative).
const MIN_UNIX_DAYS: i64 = days_from_civil(0, 1, 1);
/// Days from 1970-01-01 to 65535-12-31, the last date a `u16` year can hold.
const MAX_UNIX_DAYS: i64 = days_from_civil(u16::MAX as i64, 12, 31);

/// Returns true for Gregorian leap years.
const fn is_leap_year(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Number of days in `month` of `year`, or 0 for a month outside `1..=12`.
const fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a (valid) civil date, after Howard Hinnant's
/// `days_from_civil`. Callers pass years in `0..=65535`, months in `1..=12`
/// and days in `1..=31`, so no intermediate value can overflow.
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Date {
    /// Returns true if this is a real calendar date (month `1..=12`, day
    /// within that month, February 29th only in leap years).
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.day >= 1 && self.day <= days_in_month(self.year, self.month)
    }

    /// Days since 1970-01-01 (negative before).
    #[must_use]
    pub fn unix_days(&self) -> i64 {
        days_from_civil(
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        )
    }

    /// Converts a count of days since 1970-01-01 into a civil date, after
    /// Howard Hinnant's `civil_from_days` algorithm.
    ///
    /// Inputs outside the representable range (0000-01-01 ..= 65535-12-31)
    /// are clamped to the nearest end of that range, so this never panics.
    #[must_use]
    pub fn from_unix_days(days: i64) -> Date {
        let z = days.clamp(MIN_UNIX_DAYS, MAX_UNIX_DAYS) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date {
            year: u16::try_from(year).unwrap_or(0),
            month: u8::try_from(month).unwrap_or(1),
            day: u8::try_from(day).unwrap_or(1),
        }
    }

    /// Today's date in UTC, read from [`SystemTime::now`].
    #[must_use]
    pub fn today_utc() -> Date {
        const SECS_PER_DAY: i64 = 86_400;
        let secs = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
        };
        Date::from_unix_days(secs.div_euclid(SECS_PER_DAY))
    }
}

/// Earliest accepted birth date in an ID number.
const MIN_BIRTH_DATE: Date = Date {
    year: 1900,
    month: 1,
    day: 1,
};

/// ISO 7064 MOD 11-2 weights for the 17 leading digits (GB 11643-1999).
const GB11643_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// Check characters indexed by the weighted sum modulo 11.
const GB11643_CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// Residence-permit prefixes: Hong Kong, Macau, Taiwan.
const HMT_PREFIXES: [&[u8; 6]; 3] = [b"810000", b"820000", b"830000"];

/// Computes the check character for 17 leading ASCII digits.
fn check_char_for(first17: &[u8; 17]) -> Option<u8> {
    let mut sum: u32 = 0;
    for (&b, &w) in first17.iter().zip(GB11643_WEIGHTS.iter()) {
        if !b.is_ascii_digit() {
            return None;
        }
        sum += u32::from(b - b'0') * w;
    }
    let index = usize::try_from(sum % 11).ok()?;
    GB11643_CHECK_CHARS.get(index).copied()
}

/// Computes the GB 11643-1999 (ISO 7064 MOD 11-2) check character for the
/// 17 leading digits of an ID number.
///
/// Returns `None` unless `first17` is exactly 17 ASCII digits.
#[must_use]
pub fn gb11643_check_char(first17: &str) -> Option<char> {
    let digits: &[u8; 17] = first17.as_bytes().try_into().ok()?;
    check_char_for(digits).map(char::from)
}

/// Parses a run of ASCII digits as a number; `None` on any other byte or
/// on an empty slice.
fn parse_digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 {
        return None;
    }
    bytes.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Reads the `YYYYMMDD` birth date at characters 7-14 (1-based). The result
/// may still be an invalid calendar date.
fn embedded_birth_date(id: &[u8; 18]) -> Option<Date> {
    let year = u16::try_from(parse_digits(id.get(6..10)?)?).ok()?;
    let month = u8::try_from(parse_digits(id.get(10..12)?)?).ok()?;
    let day = u8::try_from(parse_digits(id.get(12..14)?)?).ok()?;
    Some(Date { year, month, day })
}

/// Checks the region part of an 18-character number for `id_type`.
fn check_region(id_type: IdType, id: &[u8; 18]) -> Result<(), &'static str> {
    match id_type {
        IdType::MainlandResidentIdCard => {
            let province = id.get(0..2).and_then(parse_digits).unwrap_or(0);
            match province {
                11..=65 | 71 => Ok(()),
                81..=83 => Err(
                    "numbers starting with 81, 82 or 83 followed by 0000 are Hong Kong, Macau \
                     or Taiwan residence permits, not mainland resident ID cards; \
                     use the HMT residence permit id type",
                ),
                _ => Err("the first two digits are not a valid province code"),
            }
        }
        IdType::HmtResidencePermit => {
            let prefix = id.get(0..6).unwrap_or_default();
            if HMT_PREFIXES.iter().any(|p| p.as_slice() == prefix) {
                Ok(())
            } else {
                Err(
                    "a Hong Kong, Macau or Taiwan residence permit number must start with \
                     810000 (Hong Kong), 820000 (Macau) or 830000 (Taiwan)",
                )
            }
        }
    }
}

/// Validates and canonicalises an ID number.
///
/// Surrounding ASCII whitespace is trimmed and a lowercase check character
/// `x` is upper-cased; the canonical form is returned. The checks are, in
/// order: non-empty, not an old 15-digit number, exactly 18 characters,
/// 17 digits followed by a digit or `X`, the region prefix for `id_type`,
/// a real birth date between 1900-01-01 and `today` (inclusive), and the
/// GB 11643-1999 check character.
///
/// `field` is the field path reported in the [`Violation`]
/// (e.g. `identity.id_number`). The violation never contains the input.
///
/// # Errors
///
/// Returns a [`Violation`] for `field` describing the first rule broken.
pub fn validate_id_number(
    field: &str,
    id_type: IdType,
    raw: &str,
    today: Date,
) -> Result<String, Violation> {
    let fail = |description: &str| Violation::new(field, description);
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Err(fail("must not be empty"));
    }
    if trimmed.len() == 15 && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(
            "15-digit numbers are not accepted; use the 18-character number",
        ));
    }
    if trimmed.chars().count() != 18 {
        return Err(fail("must be exactly 18 characters"));
    }
    let Ok(mut id) = <[u8; 18]>::try_from(trimmed.as_bytes()) else {
        return Err(fail(
            "must contain only ASCII digits, with an optional final check character X",
        ));
    };
    let [first17 @ .., last] = &mut id;
    if !first17.iter().all(u8::is_ascii_digit) {
        return Err(fail("the first 17 characters must be digits"));
    }
    match *last {
        b'x' => *last = b'X',
        b'X' | b'0'..=b'9' => {}
        _ => return Err(fail("the last character must be a digit or X")),
    }

    check_region(id_type, &id).map_err(fail)?;

    let birth = embedded_birth_date(&id)
        .filter(Date::is_valid)
        .ok_or_else(|| fail("birth date (characters 7-14) is not a real calendar date"))?;
    if birth < MIN_BIRTH_DATE {
        return Err(fail("birth date is before 1900-01-01"));
    }
    if birth > today {
        return Err(fail("birth date is in the future"));
    }

    let [first17 @ .., last] = &id;
    if check_char_for(first17) != Some(*last) {
        return Err(fail("check digit does not match"));
    }

    Ok(id.iter().copied().map(char::from).collect())
}

/// Masks an ID number for display: the first 3 and last 4 characters are
/// kept and every other character becomes `*`
/// (`11010519491231002X` → `110***********002X`).
///
/// Inputs shorter than 8 characters are fully masked, keeping their length.
/// Lengths are counted in Unicode scalar values.
#[must_use]
pub fn mask_id_number(id: &str) -> String {
    let len = id.chars().count();
    if len < 8 {
        return "*".repeat(len);
    }
    let tail_start = len - 4;
    id.chars()
        .enumerate()
        .map(|(i, c)| if i < 3 || i >= tail_start { c } else { '*' })
        .collect()
}

/// Maximum length of a name, in Unicode scalar values.
const MAX_NAME_CHARS: usize = 64;

/// Returns true for the combining diacritical marks U+0300..=U+036F.
fn is_combining_mark(c: char) -> bool {
    ('\u{0300}'..='\u{036F}').contains(&c)
}

/// Returns true for punctuation that is allowed inside names.
fn is_name_punctuation(c: char) -> bool {
    matches!(c, ' ' | '\u{00B7}' | '\u{2022}' | '.' | '-' | '\'')
}

/// Validates a person's name and returns it trimmed of surrounding
/// whitespace.
///
/// After trimming the name must be 1..=64 characters (Unicode scalar values)
/// and contain at least one letter. Allowed characters are letters
/// ([`char::is_alphabetic`], which covers CJK and Latin), combining marks
/// U+0300..=U+036F (not as the first character), the ASCII space, middle
/// dot `·` (U+00B7), bullet `•` (U+2022), `.`, `-` and `'`. Control
/// characters, line/paragraph separators, digits and all other symbols are
/// rejected.
///
/// # Errors
///
/// Returns a [`Violation`] for `field` describing the first rule broken.
pub fn validate_name(field: &str, raw: &str) -> Result<String, Violation> {
    let fail = |description: &str| Violation::new(field, description);
    let name = raw.trim();
    if name.is_empty() {
        return Err(fail("must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(fail("must be at most 64 characters"));
    }
    let mut has_letter = false;
    for (i, c) in name.chars().enumerate() {
        // Combining marks first: some (U+0345, U+0363..U+036F) are also alphabetic, and are still not letters.
        if is_combining_mark(c) {
            if i == 0 {
                return Err(fail("must not start with a combining mark"));
            }
        } else if c.is_alphabetic() {
            has_letter = true;
        } else if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            return Err(fail(
                "must not contain control characters or line/paragraph separators",
            ));
        } else if c.is_numeric() {
            return Err(fail("must not contain digits"));
        } else if !is_name_punctuation(c) {
            return Err(fail(
                "contains a character that is not allowed in a name; only letters, \
                 combining marks, spaces and the punctuation · • . - ' are allowed",
            ));
        }
    }
    if !has_letter {
        return Err(fail("must contain at least one letter"));
    }
    Ok(name.to_owned())
}

/// An accepted image container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ImageFormat {
    /// JPEG / JFIF (magic bytes `FF D8 FF`).
    Jpeg,
    /// PNG (magic bytes `89 50 4E 47 0D 0A 1A 0A`).
    Png,
}

impl ImageFormat {
    /// The IANA media type of this format.
    #[must_use]
    pub fn mime(&self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
        }
    }
}

/// Smallest payload accepted as an image, in bytes.
pub const MIN_IMAGE_BYTES: usize = 16;

/// JPEG magic bytes.
const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
/// PNG magic bytes.
const PNG_MAGIC: &[u8] = &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Names a recognisable but unsupported image format, for a clearer error.
fn unsupported_format_name(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("GIF")
    } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP".as_slice()) {
        Some("WebP")
    } else if bytes.starts_with(b"BM") {
        Some("BMP")
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some("TIFF")
    } else if bytes.get(4..8) == Some(b"ftyp".as_slice()) {
        Some("HEIF/AVIF")
    } else {
        None
    }
}

/// Width and height of a PNG (IHDR) or JPEG (first SOFn frame header), when the header can be read.
#[must_use]
pub fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.starts_with(PNG_MAGIC) {
        // Signature (8), chunk length (4), "IHDR" (4), width (4), height (4).
        if bytes.get(12..16) != Some(b"IHDR".as_slice()) {
            return None;
        }
        let w = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
        let h = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
        return Some((w, h));
    }
    if !bytes.starts_with(JPEG_MAGIC) {
        return None;
    }
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        if marker == 0xD9 || marker == 0xDA {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let h = u16::from_be_bytes([*bytes.get(i + 5)?, *bytes.get(i + 6)?]);
            let w = u16::from_be_bytes([*bytes.get(i + 7)?, *bytes.get(i + 8)?]);
            return Some((u32::from(w), u32::from(h)));
        }
        if len < 2 {
            return None;
        }
        i += 2 + len;
    }
    None
}

/// Validates an image payload by size and magic bytes and returns its
/// format.
///
/// Rejects an empty payload, one larger than `max_bytes`, one smaller than
/// [`MIN_IMAGE_BYTES`] (too small to be an image), and anything that is not
/// JPEG (`FF D8 FF`) or PNG (`89 50 4E 47 0D 0A 1A 0A`).
///
/// # Errors
///
/// Returns a [`Violation`] for `field` describing the first rule broken;
/// known unsupported formats (GIF, WebP, BMP, TIFF, HEIF/AVIF) are named.
pub fn validate_image(
    field: &str,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<ImageFormat, Violation> {
    if bytes.is_empty() {
        return Err(Violation::new(field, "must not be empty"));
    }
    if bytes.len() > max_bytes {
        return Err(Violation::new(
            field,
            format!("image is larger than the maximum of {max_bytes} bytes"),
        ));
    }
    if bytes.len() < MIN_IMAGE_BYTES {
        return Err(Violation::new(
            field,
            format!("too small to be an image (fewer than {MIN_IMAGE_BYTES} bytes)"),
        ));
    }
    if bytes.starts_with(JPEG_MAGIC) {
        Ok(ImageFormat::Jpeg)
    } else if bytes.starts_with(PNG_MAGIC) {
        Ok(ImageFormat::Png)
    } else if let Some(name) = unsupported_format_name(bytes) {
        Err(Violation::new(
            field,
            format!("{name} images are not supported; only JPEG and PNG are accepted"),
        ))
    } else {
        Err(Violation::new(
            field,
            "is not a JPEG or PNG image; only JPEG and PNG are accepted",
        ))
    }
}

/// Value of a standard-alphabet base64 digit, `None` for any other byte.
fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Validates strict standard base64 (RFC 4648 §4) and returns the number of
/// bytes it decodes to.
///
/// Requirements: non-empty; no `data:` URI prefix; no whitespace or line
/// breaks; only `A-Z a-z 0-9 + /` plus `=` padding; padding only at the end,
/// at most two `=`, and present whenever needed (total length a multiple of
/// 4); and canonical encoding (unused bits of the last digit are zero).
///
/// # Errors
///
/// Returns a [`Violation`] for `field` describing the first rule broken.
/// Descriptions may cite a byte offset but never the text itself.
pub fn validate_base64(field: &str, text: &str) -> Result<usize, Violation> {
    let fail = |description: String| Violation::new(field, description);
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(fail("must not be empty".to_owned()));
    }
    if bytes
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"data:"))
    {
        return Err(fail(
            "must be plain base64, not a data: URI; remove the \"data:...;base64,\" prefix"
                .to_owned(),
        ));
    }
    if let Some(pos) = bytes.iter().position(u8::is_ascii_whitespace) {
        return Err(fail(format!(
            "must not contain whitespace or line breaks (found at byte offset {pos})"
        )));
    }
    let mut padding = 0usize;
    let mut last_value = None;
    for (pos, &b) in bytes.iter().enumerate() {
        match (b, base64_value(b)) {
            (b'=', _) => padding += 1,
            (_, Some(value)) => {
                if padding > 0 {
                    return Err(fail(format!(
                        "padding '=' may only appear at the end (data found after it at byte \
                         offset {pos})"
                    )));
                }
                last_value = Some(value);
            }
            (b'-' | b'_', None) => {
                return Err(fail(format!(
                    "uses the URL-safe alphabet ('-' or '_' at byte offset {pos}); \
                     use standard base64 with '+' and '/'"
                )));
            }
            (_, None) => {
                return Err(fail(format!(
                    "contains a character outside the base64 alphabet at byte offset {pos}"
                )));
            }
        }
    }
    if !bytes.len().is_multiple_of(4) {
        return Err(fail(
            "length must be a multiple of 4 (missing or wrong '=' padding)".to_owned(),
        ));
    }
    if padding > 2 {
        return Err(fail("has too much '=' padding (at most two)".to_owned()));
    }
    let unused_bits_mask = match padding {
        2 => 0b1111,
        1 => 0b0011,
        _ => 0,
    };
    if last_value.is_some_and(|v| v & unused_bits_mask != 0) {
        return Err(fail(
            "is not canonical base64: the unused bits before the padding must be zero".to_owned(),
        ));
    }
    Ok(bytes.len() / 4 * 3 - padding)
}

/// Builds a synthetic 18-character ID number with a correct check character
/// from a 6-digit region code, a birth date and a 3-digit sequence number,
/// for test identities.
///
/// Returns `None` if `region` is not 6 ASCII digits, `birth` is not a valid
/// date with a 4-digit year (1000..=9999), or `sequence` exceeds 999. The
/// region is not checked against any id type; [`validate_id_number`] does
/// that.
#[must_use]
pub fn synthetic_id_number(region: &str, birth: Date, sequence: u16) -> Option<String> {
    let region_ok = region.len() == 6 && region.bytes().all(|b| b.is_ascii_digit());
    if !region_ok || !birth.is_valid() || !(1000..=9999).contains(&birth.year) || sequence > 999 {
        return None;
    }
    let first17 = format!(
        "{region}{:04}{:02}{:02}{sequence:03}",
        birth.year, birth.month, birth.day
    );
    let check = gb11643_check_char(&first17)?;
    let mut id = first17;
    id.push(check);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIELD: &str = "identity.id_number";
    const TODAY: Date = Date {
        year: 2024,
        month: 6,
        day: 15,
    };

    /// Days since 1970-01-01 of a valid date.
    fn unix_days(date: Date) -> i64 {
        days_from_civil(
            i64::from(date.year),
            i64::from(date.month),
            i64::from(date.day),
        )
    }

    fn d(year: u16, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    fn mainland(raw: &str) -> Result<String, Violation> {
        validate_id_number(FIELD, IdType::MainlandResidentIdCard, raw, TODAY)
    }

    fn hmt(raw: &str) -> Result<String, Violation> {
        validate_id_number(FIELD, IdType::HmtResidencePermit, raw, TODAY)
    }

    fn mainland_err(raw: &str) -> String {
        let v = mainland(raw).unwrap_err();
        assert_eq!(v.field, FIELD);
        v.description
    }

    fn hmt_err(raw: &str) -> String {
        let v = hmt(raw).unwrap_err();
        assert_eq!(v.field, FIELD);
        v.description
    }

    /// Fixes the check character of a 17-digit prefix.
    fn with_check(first17: &str) -> String {
        let mut s = first17.to_owned();
        s.push(gb11643_check_char(first17).unwrap());
        s
    }

    // ---- Date ----

    #[test]
    fn date_validity() {
        assert!(d(2000, 2, 29).is_valid());
        assert!(d(2024, 2, 29).is_valid());
        assert!(!d(1900, 2, 29).is_valid());
        assert!(!d(2023, 2, 29).is_valid());
        assert!(!d(2023, 2, 30).is_valid());
        assert!(!d(2023, 4, 31).is_valid());
        assert!(d(2023, 12, 31).is_valid());
        assert!(!d(2023, 13, 1).is_valid());
        assert!(!d(2023, 0, 1).is_valid());
        assert!(!d(2023, 1, 0).is_valid());
        assert!(!d(2023, 1, 32).is_valid());
    }

    #[test]
    fn date_ordering_is_chronological() {
        assert!(d(1999, 12, 31) < d(2000, 1, 1));
        assert!(d(2000, 1, 31) < d(2000, 2, 1));
        assert!(d(2000, 2, 1) < d(2000, 2, 2));
    }

    #[test]
    fn from_unix_days_known_values() {
        assert_eq!(Date::from_unix_days(0), d(1970, 1, 1));
        assert_eq!(Date::from_unix_days(-1), d(1969, 12, 31));
        assert_eq!(Date::from_unix_days(11_016), d(2000, 2, 29));
        assert_eq!(Date::from_unix_days(19_723), d(2024, 1, 1));
        assert_eq!(Date::from_unix_days(-25_567), d(1900, 1, 1));
    }

    #[test]
    fn from_unix_days_clamps_extremes() {
        assert_eq!(Date::from_unix_days(i64::MIN), d(0, 1, 1));
        assert_eq!(Date::from_unix_days(i64::MAX), d(65_535, 12, 31));
        assert_eq!(Date::from_unix_days(MIN_UNIX_DAYS), d(0, 1, 1));
        assert_eq!(Date::from_unix_days(MAX_UNIX_DAYS), d(65_535, 12, 31));
    }

    #[test]
    fn today_utc_is_plausible() {
        let today = Date::today_utc();
        assert!(today.is_valid());
        assert!(today >= d(2024, 1, 1));
    }

    // ---- check character ----

    #[test]
    fn check_char_for_samples() {
        assert_eq!(gb11643_check_char("11010519491231002"), Some('X'));
        assert_eq!(gb11643_check_char("44052418800101001"), Some('4'));
        assert_eq!(gb11643_check_char("44030819990110151"), Some('2'));
        assert_eq!(gb11643_check_char("81000019940823002"), Some('1'));
        assert_eq!(gb11643_check_char("83000019920130002"), Some('2'));
    }

    #[test]
    fn check_char_rejects_malformed() {
        assert_eq!(gb11643_check_char(""), None);
        assert_eq!(gb11643_check_char("1101051949123100"), None);
        assert_eq!(gb11643_check_char("110105194912310021"), None);
        assert_eq!(gb11643_check_char("1101051949123100a"), None);
        assert_eq!(
            gb11643_check_char("１１０１０５１９４９１２３１００２"),
            None
        );
    }

    // ---- mainland ID numbers ----

    #[test]
    fn mainland_valid_samples() {
        assert_eq!(
            mainland("11010519491231002X").unwrap(),
            "11010519491231002X"
        );
        assert_eq!(
            mainland("440308199901101512").unwrap(),
            "440308199901101512"
        );
    }

    #[test]
    fn mainland_canonicalises() {
        assert_eq!(
            mainland("11010519491231002x").unwrap(),
            "11010519491231002X"
        );
        assert_eq!(
            mainland(" \t11010519491231002x\r\n").unwrap(),
            "11010519491231002X"
        );
    }

    #[test]
    fn mainland_1880_sample_fails_on_date_not_check_digit() {
        assert_eq!(gb11643_check_char("44052418800101001"), Some('4'));
        assert_eq!(
            mainland_err("440524188001010014"),
            "birth date is before 1900-01-01"
        );
    }

    #[test]
    fn mainland_empty() {
        assert_eq!(mainland_err(""), "must not be empty");
        assert_eq!(mainland_err("   \t\n"), "must not be empty");
    }

    #[test]
    fn mainland_rejects_15_digit() {
        assert_eq!(
            mainland_err("110105491231002"),
            "15-digit numbers are not accepted; use the 18-character number"
        );
        assert_eq!(
            hmt_err(" 110105491231002 "),
            "15-digit numbers are not accepted; use the 18-character number"
        );
    }

    #[test]
    fn mainland_wrong_length() {
        for raw in [
            "1",
            "1101051949123100",
            "11010519491231002",
            "11010519491231002X1",
        ] {
            assert_eq!(mainland_err(raw), "must be exactly 18 characters", "{raw}");
        }
        // 15 characters but not all digits is a plain length error.
        assert_eq!(
            mainland_err("11010549123100X"),
            "must be exactly 18 characters"
        );
    }

    #[test]
    fn mainland_rejects_bad_characters() {
        assert_eq!(
            mainland_err("1101051949123100２X"),
            "must contain only ASCII digits, with an optional final check character X"
        );
        assert_eq!(
            mainland_err("1101051949123100X2"),
            "the first 17 characters must be digits"
        );
        assert_eq!(
            mainland_err("11010519491231002Y"),
            "the last character must be a digit or X"
        );
        assert_eq!(
            mainland_err("11010519491 31002X"),
            "the first 17 characters must be digits"
        );
        assert_eq!(
            mainland_err("-1010519491231002X"),
            "the first 17 characters must be digits"
        );
    }

    #[test]
    fn mainland_check_digit_mismatch() {
        assert_eq!(
            mainland_err("110105194912310021"),
            "check digit does not match"
        );
        assert_eq!(
            mainland_err("440308199901101513"),
            "check digit does not match"
        );
        assert_eq!(
            mainland_err("44030819990110151X"),
            "check digit does not match"
        );
    }

    #[test]
    fn mainland_invalid_calendar_dates() {
        for first17 in [
            "11010519990229001", // not a leap year
            "11010519000229001", // 1900 is not a leap year
            "11010520230230001",
            "11010520230431001",
            "11010520231301001",
            "11010520230001001",
            "11010520230100001",
            "11010520230132001",
        ] {
            assert_eq!(
                mainland_err(&with_check(first17)),
                "birth date (characters 7-14) is not a real calendar date",
                "{first17}"
            );
        }
        assert!(mainland(&with_check("11010520000229001")).is_ok());
    }

    #[test]
    fn mainland_date_bounds() {
        assert!(mainland(&with_check("11010519000101001")).is_ok());
        assert_eq!(
            mainland_err(&with_check("11010518991231001")),
            "birth date is before 1900-01-01"
        );
        assert!(mainland(&with_check("11010520240615001")).is_ok());
        assert_eq!(
            mainland_err(&with_check("11010520240616001")),
            "birth date is in the future"
        );
        assert_eq!(
            mainland_err(&with_check("11010530000101001")),
            "birth date is in the future"
        );
    }

    #[test]
    fn mainland_province_codes() {
        for prefix in ["11", "35", "65", "71"] {
            let id = with_check(&format!("{prefix}010519491231002"));
            assert!(mainland(&id).is_ok(), "{prefix}");
        }
        for prefix in ["00", "10", "66", "70", "72", "80", "84", "91", "99"] {
            let id = with_check(&format!("{prefix}010519491231002"));
            assert_eq!(
                mainland_err(&id),
                "the first two digits are not a valid province code",
                "{prefix}"
            );
        }
    }

    #[test]
    fn mainland_rejects_hmt_prefixes_with_hint() {
        for id in [
            "810000199408230021",
            "830000199201300022",
            &with_check("82000019900101001"),
            &with_check("81010519491231002"),
        ] {
            let description = mainland_err(id);
            assert!(description.contains("residence permit"), "{description}");
            assert!(description.contains("HMT residence permit id type"));
        }
    }

    // ---- HK/Macau/Taiwan residence permits ----

    #[test]
    fn hmt_valid_samples() {
        assert_eq!(hmt("810000199408230021").unwrap(), "810000199408230021");
        assert_eq!(hmt("830000199201300022").unwrap(), "830000199201300022");
        let macau = with_check("82000019900101001");
        assert_eq!(hmt(&macau).unwrap(), macau);
        assert_eq!(
            hmt(&format!("  {}  ", macau.to_lowercase())).unwrap(),
            macau
        );
    }

    #[test]
    fn hmt_rejects_other_prefixes() {
        for id in [
            "11010519491231002X",
            "440308199901101512",
            &with_check("81000119940823002"),
            &with_check("84000019940823002"),
            &with_check("80000019940823002"),
        ] {
            assert!(
                hmt_err(id).starts_with("a Hong Kong, Macau or Taiwan residence permit number"),
                "{id}"
            );
        }
    }

    #[test]
    fn hmt_applies_date_and_check_rules() {
        assert_eq!(hmt_err("810000199408230022"), "check digit does not match");
        assert_eq!(
            hmt_err(&with_check("81000018991231002")),
            "birth date is before 1900-01-01"
        );
        assert_eq!(
            hmt_err(&with_check("81000020250101002")),
            "birth date is in the future"
        );
        assert_eq!(
            hmt_err(&with_check("81000019990229002")),
            "birth date (characters 7-14) is not a real calendar date"
        );
    }

    #[test]
    fn violation_display_and_debug_omit_value() {
        let v = mainland("110105194912310021").unwrap_err();
        assert_eq!(
            v.to_string(),
            "identity.id_number: check digit does not match"
        );
        assert!(!format!("{v:?}").contains("110105194912310021"));
    }

    // ---- masking ----

    #[test]
    fn mask_examples() {
        assert_eq!(mask_id_number("11010519491231002X"), "110***********002X");
        assert_eq!(mask_id_number("110105491231002"), "110********1002");
        assert_eq!(mask_id_number("12345678"), "123*5678");
        assert_eq!(mask_id_number("1234567"), "*******");
        assert_eq!(mask_id_number("123"), "***");
        assert_eq!(mask_id_number(""), "");
        assert_eq!(mask_id_number("张三李四王五赵六钱"), "张三李**五赵六钱");
    }

    // ---- names ----

    #[test]
    fn names_valid() {
        let n = |raw: &str| validate_name("identity.name", raw).unwrap();
        assert_eq!(n("张三"), "张三");
        assert_eq!(n("  李四\u{3000}"), "李四");
        assert_eq!(n("阿依古丽·买买提"), "阿依古丽·买买提");
        assert_eq!(n("阿依古丽•买买提"), "阿依古丽•买买提");
        assert_eq!(n("John O'Neil-Smith Jr."), "John O'Neil-Smith Jr.");
        assert_eq!(n("Jose\u{0301}"), "Jose\u{0301}");
        assert_eq!(n("Zoë Ångström"), "Zoë Ångström");
        assert_eq!(n("王〇"), "王〇");
        assert_eq!(n(&"a".repeat(64)), "a".repeat(64));
        assert_eq!(n(&"张".repeat(64)), "张".repeat(64));
    }

    #[test]
    fn names_invalid() {
        let e = |raw: &str| validate_name("identity.name", raw).unwrap_err().description;
        assert_eq!(e(""), "must not be empty");
        assert_eq!(e(" \t\u{3000} "), "must not be empty");
        assert_eq!(e(&"a".repeat(65)), "must be at most 64 characters");
        assert_eq!(e(&"张".repeat(65)), "must be at most 64 characters");
        let control = "must not contain control characters or line/paragraph separators";
        assert_eq!(e("张\u{0}三"), control);
        assert_eq!(e("张\t三"), control);
        assert_eq!(e("张\n三"), control);
        assert_eq!(e("张\u{7f}三"), control);
        assert_eq!(e("张\u{2028}三"), control);
        assert_eq!(e("张\u{2029}三"), control);
        assert_eq!(e("张三3"), "must not contain digits");
        assert_eq!(e("张三３"), "must not contain digits");
        for raw in [
            "张@三",
            "a_b",
            "a,b",
            "a\u{200B}b",
            "😀",
            "a/b",
            "a\u{3000}b",
        ] {
            assert!(
                e(raw).starts_with("contains a character that is not allowed"),
                "{raw:?}"
            );
        }
        assert_eq!(e("\u{0301}a"), "must not start with a combining mark");
        assert_eq!(e("·-."), "must contain at least one letter");
        // Found by fuzzing (fuzz/fuzz_targets/name.rs): U+0368 and U+0345 are alphabetic combining marks, once
        // accepted as a whole name.
        assert_eq!(e("\u{0368}"), "must not start with a combining mark");
        assert_eq!(e("\u{0345}a"), "must not start with a combining mark");
        assert_eq!(e("-\u{0368}"), "must contain at least one letter");
        assert_eq!(
            validate_name("identity.name", "a\u{0368}").as_deref(),
            Ok("a\u{0368}")
        );
    }

    #[test]
    fn name_errors_do_not_echo_value() {
        let raw = "Alexander3";
        let v = validate_name("identity.name", raw).unwrap_err();
        assert!(!v.description.contains("Alexander"));
        assert!(!format!("{v:?}").contains("Alexander"));
    }

    // ---- images ----

    fn padded(magic: &[u8], len: usize) -> Vec<u8> {
        let mut v = magic.to_vec();
        v.resize(len, 0);
        v
    }

    #[test]
    fn image_jpeg_and_png() {
        let jpeg = padded(&[0xFF, 0xD8, 0xFF, 0xE0], 16);
        assert_eq!(validate_image("image", &jpeg, 1024), Ok(ImageFormat::Jpeg));
        let png = padded(PNG_MAGIC, 100);
        assert_eq!(validate_image("image", &png, 100), Ok(ImageFormat::Png));
        assert_eq!(ImageFormat::Jpeg.mime(), "image/jpeg");
        assert_eq!(ImageFormat::Png.mime(), "image/png");
    }

    #[test]
    fn image_rejections() {
        let e = |bytes: &[u8], max: usize| validate_image("image", bytes, max).unwrap_err();
        assert_eq!(e(&[], 1024).description, "must not be empty");
        assert_eq!(e(&[], 1024).field, "image");
        assert_eq!(
            e(&padded(JPEG_MAGIC, 15), 1024).description,
            "too small to be an image (fewer than 16 bytes)"
        );
        assert_eq!(
            e(&padded(JPEG_MAGIC, 1025), 1024).description,
            "image is larger than the maximum of 1024 bytes"
        );
        assert_eq!(
            e(&padded(b"GIF89a", 64), 1024).description,
            "GIF images are not supported; only JPEG and PNG are accepted"
        );
        assert_eq!(
            e(&padded(b"GIF87a", 64), 1024).description,
            "GIF images are not supported; only JPEG and PNG are accepted"
        );
        let mut webp = padded(b"RIFF", 64);
        webp.splice(8..12, *b"WEBP");
        assert!(e(&webp, 1024).description.starts_with("WebP images"));
        assert!(e(&padded(b"BM", 64), 1024)
            .description
            .starts_with("BMP images"));
        assert_eq!(
            e(&padded(b"hello world", 64), 1024).description,
            "is not a JPEG or PNG image; only JPEG and PNG are accepted"
        );
        // Truncated magic bytes are not accepted.
        assert!(e(&padded(&[0xFF, 0xD8, 0x00], 64), 1024)
            .description
            .starts_with("is not a JPEG or PNG"));
        assert!(e(&padded(&PNG_MAGIC[..7], 64), 1024)
            .description
            .starts_with("is not a JPEG or PNG"));
    }

    // ---- base64 ----

    fn b64_err(text: &str) -> String {
        let v = validate_base64("image_base64", text).unwrap_err();
        assert_eq!(v.field, "image_base64");
        v.description
    }

    #[test]
    fn base64_valid() {
        let ok = |t: &str| validate_base64("image_base64", t).unwrap();
        assert_eq!(ok("TQ=="), 1);
        assert_eq!(ok("TWE="), 2);
        assert_eq!(ok("TWFu"), 3);
        assert_eq!(ok("TWFuTQ=="), 4);
        assert_eq!(ok("TWFuTWFu"), 6);
        assert_eq!(ok("+/+/"), 3);
        assert_eq!(ok("AAAAAA=="), 4);
        assert_eq!(ok("/9j/4AAQ"), 6);
    }

    #[test]
    fn base64_empty_and_data_uri() {
        assert_eq!(b64_err(""), "must not be empty");
        for t in [
            "data:image/png;base64,TWFu",
            "DATA:image/jpeg;base64,TWFu",
            "data:",
        ] {
            assert!(b64_err(t).contains("not a data: URI"), "{t}");
        }
    }

    #[test]
    fn base64_whitespace() {
        for t in ["TWFu\n", "TW Fu", "\tTWFu", "TWFu\r\nTWFu"] {
            assert!(
                b64_err(t).starts_with("must not contain whitespace"),
                "{t:?}"
            );
        }
    }

    #[test]
    fn base64_bad_characters() {
        assert!(b64_err("TW-u").starts_with("uses the URL-safe alphabet"));
        assert!(b64_err("TW_u").starts_with("uses the URL-safe alphabet"));
        for t in ["TWF!", "TW*u", "TWFé", "TWF\u{0}"] {
            assert!(
                b64_err(t).starts_with("contains a character outside the base64 alphabet"),
                "{t:?}"
            );
        }
        assert_eq!(
            b64_err("TW.u"),
            "contains a character outside the base64 alphabet at byte offset 2"
        );
    }

    #[test]
    fn base64_length_and_padding() {
        let len = "length must be a multiple of 4 (missing or wrong '=' padding)";
        for t in ["T", "TQ", "TWE", "TQ=", "TWFuT", "TWFuTQ"] {
            assert_eq!(b64_err(t), len, "{t}");
        }
        assert!(b64_err("TQ==TQ==").starts_with("padding '=' may only appear at the end"));
        assert!(b64_err("T=Fu").starts_with("padding '=' may only appear at the end"));
        assert!(b64_err("=TWF").starts_with("padding '=' may only appear at the end"));
        assert_eq!(b64_err("T==="), "has too much '=' padding (at most two)");
        assert_eq!(b64_err("===="), "has too much '=' padding (at most two)");
        assert_eq!(
            b64_err("TWFu===="),
            "has too much '=' padding (at most two)"
        );
    }

    #[test]
    fn base64_non_canonical_bits() {
        let msg = "is not canonical base64: the unused bits before the padding must be zero";
        assert_eq!(b64_err("TR=="), msg);
        assert_eq!(b64_err("TWF="), msg);
        assert_eq!(validate_base64("b64", "TQ=="), Ok(1));
        assert_eq!(validate_base64("b64", "TWE="), Ok(2));
    }

    // ---- synthetic numbers ----

    #[test]
    fn synthetic_reproduces_known_sample() {
        assert_eq!(
            synthetic_id_number("110105", d(1949, 12, 31), 2).as_deref(),
            Some("11010519491231002X")
        );
        assert_eq!(
            synthetic_id_number("810000", d(1994, 8, 23), 2).as_deref(),
            Some("810000199408230021")
        );
    }

    #[test]
    fn synthetic_roundtrips() {
        let id = synthetic_id_number("440308", d(1999, 1, 10), 151).unwrap();
        assert_eq!(mainland(&id).unwrap(), id);
        let id = synthetic_id_number("830000", d(1992, 1, 30), 2).unwrap();
        assert_eq!(hmt(&id).unwrap(), id);
        let id = synthetic_id_number("110105", d(2000, 2, 29), 0).unwrap();
        assert_eq!(mainland(&id).unwrap(), id);
    }

    #[test]
    fn synthetic_rejects_malformed_parts() {
        let ok = d(1990, 1, 1);
        assert_eq!(synthetic_id_number("11010", ok, 1), None);
        assert_eq!(synthetic_id_number("1101051", ok, 1), None);
        assert_eq!(synthetic_id_number("11010a", ok, 1), None);
        assert_eq!(synthetic_id_number("", ok, 1), None);
        assert_eq!(synthetic_id_number("110105", ok, 1000), None);
        assert_eq!(synthetic_id_number("110105", d(1990, 2, 30), 1), None);
        assert_eq!(synthetic_id_number("110105", d(999, 1, 1), 1), None);
        assert_eq!(synthetic_id_number("110105", d(10_000, 1, 1), 1), None);
        assert!(synthetic_id_number("110105", ok, 999).is_some());
    }

    // ---- properties ----

    /// A valid date between 1900-01-01 and `TODAY` inclusive.
    fn birth_date_strategy() -> impl Strategy<Value = Date> {
        let lo = unix_days(MIN_BIRTH_DATE);
        let hi = unix_days(TODAY);
        (lo..=hi).prop_map(Date::from_unix_days)
    }

    /// A 6-digit region valid for the given id type.
    fn region_strategy() -> impl Strategy<Value = (IdType, String)> {
        let mainland =
            (prop_oneof![11u8..=65, Just(71u8)], 0u16..10_000).prop_map(|(province, rest)| {
                (
                    IdType::MainlandResidentIdCard,
                    format!("{province:02}{rest:04}"),
                )
            });
        let hmt = prop::sample::select(vec!["810000", "820000", "830000"])
            .prop_map(|r| (IdType::HmtResidencePermit, r.to_owned()));
        prop_oneof![mainland, hmt]
    }

    fn valid_number_strategy() -> impl Strategy<Value = (IdType, String)> {
        (region_strategy(), birth_date_strategy(), 0u16..=999).prop_map(
            |((id_type, region), birth, seq)| {
                (id_type, synthetic_id_number(&region, birth, seq).unwrap())
            },
        )
    }

    fn any_date() -> impl Strategy<Value = Date> {
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(year, month, day)| Date {
            year,
            month,
            day,
        })
    }

    fn any_id_type() -> impl Strategy<Value = IdType> {
        prop_oneof![
            Just(IdType::MainlandResidentIdCard),
            Just(IdType::HmtResidencePermit)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_validate_id_number_never_panics(
            raw in prop_oneof![".*", "[0-9xX \t]{0,24}", "[0-9]{17}[0-9xX]"],
            id_type in any_id_type(),
            today in any_date(),
        ) {
            let _ = validate_id_number(FIELD, id_type, &raw, today);
            let _ = mask_id_number(&raw);
            let _ = validate_name("name", &raw);
            let _ = validate_base64("b64", &raw);
            let _ = validate_image("img", raw.as_bytes(), 64);
            let _ = gb11643_check_char(&raw);
        }

        #[test]
        fn prop_synthetic_numbers_pass((id_type, id) in valid_number_strategy()) {
            prop_assert_eq!(validate_id_number(FIELD, id_type, &id, TODAY), Ok(id.clone()));
            let lower = id.to_lowercase();
            prop_assert_eq!(validate_id_number(FIELD, id_type, &lower, TODAY), Ok(id));
        }

        #[test]
        fn prop_single_substitution_fails(
            (id_type, id) in valid_number_strategy(),
            pos in 0usize..18,
            replacement in prop::sample::select(b"0123456789X".to_vec()),
        ) {
            let mut bytes = id.clone().into_bytes();
            prop_assume!(bytes[pos] != replacement);
            prop_assume!(pos == 17 || replacement != b'X');
            bytes[pos] = replacement;
            let mutated = String::from_utf8(bytes).unwrap();
            prop_assert!(validate_id_number(FIELD, id_type, &mutated, TODAY).is_err());
        }

        #[test]
        fn prop_errors_never_echo_input(
            raw in prop_oneof![
                ".{6,30}",
                "[0-9]{6,20}",
                "[0-9]{17}[0-9xX]",
                "[0-9 xX]{6,24}",
                valid_number_strategy().prop_map(|(_, id)| id),
            ],
            id_type in any_id_type(),
        ) {
            if let Err(v) = validate_id_number(FIELD, id_type, &raw, TODAY) {
                let trimmed = raw.trim_ascii();
                prop_assert!(!v.description.contains(&raw));
                if trimmed.chars().count() >= 6 {
                    prop_assert!(!v.description.contains(trimmed));
                }
                let debug = format!("{:?}", v);
                prop_assert!(!debug.contains(&raw));
            }
        }

        #[test]
        fn prop_unix_days_roundtrip(days in MIN_UNIX_DAYS..=MAX_UNIX_DAYS) {
            let date = Date::from_unix_days(days);
            prop_assert!(date.is_valid());
            prop_assert_eq!(unix_days(date), days);
        }

        #[test]
        fn prop_base64_length_matches_encoding(data in prop::collection::vec(any::<u8>(), 1..64)) {
            let encoded = reference_base64(&data);
            prop_assert_eq!(validate_base64("b64", &encoded), Ok(data.len()));
        }

        #[test]
        fn prop_mask_preserves_length(id in ".{0,40}") {
            let masked = mask_id_number(&id);
            prop_assert_eq!(masked.chars().count(), id.chars().count());
        }
    }

    /// Minimal standard base64 encoder for property tests.
    fn reference_base64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn reads_png_and_jpeg_dimensions() {
        let mut png = PNG_MAGIC.to_vec();
        png.extend_from_slice(&[0, 0, 0, 13]);
        png.extend_from_slice(b"IHDR");
        png.extend_from_slice(&2000u32.to_be_bytes());
        png.extend_from_slice(&1000u32.to_be_bytes());
        assert_eq!(image_dimensions(&png), Some((2000, 1000)));
        // SOI, APP0 (length 4), SOF0 with height 480 and width 640.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x01,
            0xE0, 0x02, 0x80, 0x01, 0x01, 0x11, 0x00,
        ];
        assert_eq!(image_dimensions(&jpeg), Some((640, 480)));
        assert_eq!(image_dimensions(&[0xFF, 0xD8, 0xFF, 0xD9]), None);
        assert_eq!(image_dimensions(b"GIF89a......"), None);
    }

    #[test]
    fn document_type_follows_the_region_prefix() {
        assert_eq!(
            IdType::of_number("810000199408230021"),
            Some(IdType::HmtResidencePermit)
        );
        assert_eq!(
            IdType::of_number("110101190001010014"),
            Some(IdType::MainlandResidentIdCard)
        );
        assert_eq!(IdType::of_number("8100001994"), None);
    }
}
