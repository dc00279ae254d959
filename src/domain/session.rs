//! The vendor-neutral session and its parts. Personal data (names, ID numbers, images) lives only in
//! [`Identity`] and [`FaceImage`], whose `Debug` never shows it, and is wiped from a session when it becomes final.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::validation::{mask_id_number, IdType, ImageFormat};

/// The vendor doing a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    /// Baidu H5 faceprint.
    Baidu,
    /// Megvii FaceID Lite.
    Megvii,
    /// Juhe verifyface.
    Juhe,
}

impl Vendor {
    /// Lowercase name used in logs, metrics and error metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Baidu => "baidu",
            Vendor::Megvii => "megvii",
            Vendor::Juhe => "juhe",
        }
    }
}

/// Session states (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// The flow needs input (`required_inputs`).
    RequiresInput,
    /// The end user must complete the vendor page.
    AwaitingUser,
    /// The vendor is working.
    Processing,
    /// Final: verified.
    Verified,
    /// Final: not verified.
    Failed,
    /// Final: expired before completion.
    Expired,
    /// Final: canceled by the caller.
    Canceled,
}

impl State {
    /// Every state, in flow order.
    pub const ALL: [State; 7] = [
        State::RequiresInput,
        State::AwaitingUser,
        State::Processing,
        State::Verified,
        State::Failed,
        State::Expired,
        State::Canceled,
    ];

    /// Whether the state never changes again.
    pub fn is_final(self) -> bool {
        self.rank() == 3
    }
    /// Position in the forward-only order: inputs (0) < user (1) < processing (2) < final (3).
    pub fn rank(self) -> u8 {
        match self {
            State::RequiresInput => 0,
            State::AwaitingUser => 1,
            State::Processing => 2,
            State::Verified | State::Failed | State::Expired | State::Canceled => 3,
        }
    }
    /// Stable text used in the store and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::RequiresInput => "REQUIRES_INPUT",
            State::AwaitingUser => "AWAITING_USER",
            State::Processing => "PROCESSING",
            State::Verified => "VERIFIED",
            State::Failed => "FAILED",
            State::Expired => "EXPIRED",
            State::Canceled => "CANCELED",
        }
    }
}

/// An input the flow still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RequiredInput {
    /// Name and ID number.
    Identity,
    /// A reference face.
    ReferenceImage,
    /// The probe face.
    ProbeImage,
}

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRole {
    /// A reference face.
    Reference,
    /// The probe face.
    Probe,
}

/// A person's identity. Personal data: `Debug` shows only the masked ID number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Validated, trimmed name.
    pub name: String,
    /// Validated, canonical ID number.
    pub id_number: String,
    /// The document type.
    pub id_type: IdType,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &"***")
            .field("id_number", &mask_id_number(&self.id_number))
            .field("id_type", &self.id_type)
            .finish()
    }
}

impl Identity {
    /// Masks this identity's name and ID number where `text` contains them (see [`mask_personal_text`]).
    pub fn mask_in(&self, text: &str) -> String {
        mask_personal_text(text, &[&self.name], &[&self.id_number])
    }

    /// The masked form shown to callers.
    pub fn masked(&self) -> MaskedIdentity {
        MaskedIdentity {
            name_masked: mask_name(&self.name),
            id_number_masked: mask_id_number(&self.id_number),
            id_type: self.id_type,
        }
    }
}

/// Masks a name: the first character stays, every other character becomes `*`.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

/// Masks, in vendor text, every occurrence of the given names and ID numbers (the session's own identity: what
/// the caller submitted or the vendor read off the card), so a vendor message that echoes them is not stored as
/// sent. A name becomes its masked form (a one-character name `*`); an ID number (compared ignoring the case of
/// `X`) its masked form. Empty values are ignored. Run it before [`crate::domain::error::sanitize_vendor_text`],
/// whose length bound could otherwise cut a name in two.
pub fn mask_personal_text(text: &str, names: &[&str], id_numbers: &[&str]) -> String {
    let mut out = text.to_owned();
    for id in id_numbers.iter().filter(|i| !i.is_empty() && i.is_ascii()) {
        out = replace_ascii_case_insensitive(&out, id, &mask_id_number(id));
    }
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let masked = if name.chars().count() < 2 {
            "*".to_owned()
        } else {
            mask_name(name)
        };
        out = out.replace(name, &masked);
    }
    out
}

/// Replaces every occurrence of the ASCII `needle` in `text`, ignoring ASCII case.
fn replace_ascii_case_insensitive(text: &str, needle: &str, with: &str) -> String {
    // ASCII case folding keeps byte offsets, and a match of an ASCII needle starts and ends on char boundaries.
    let folded = text.to_ascii_uppercase();
    let needle = needle.to_ascii_uppercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in folded.match_indices(&needle) {
        if at < last {
            continue;
        }
        out.push_str(text.get(last..at).unwrap_or_default());
        out.push_str(with);
        last = at + needle.len();
    }
    out.push_str(text.get(last..).unwrap_or_default());
    out
}

/// An identity with the personal data masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedIdentity {
    /// First character of the name, then `*`.
    pub name_masked: String,
    /// First 3 and last 4 characters of the number.
    pub id_number_masked: String,
    /// The document type.
    pub id_type: IdType,
}

impl MaskedIdentity {
    /// Masks, in vendor text, what can be the name this masked form stands for once the name itself is gone (a
    /// session keeps only the masked identity after its inputs went to the vendor): a run of letters outside ASCII
    /// (CJK, and `·` inside it) that starts with the name's first character and is as long as the name. This may
    /// also mask a word that merely looks like the name, never less than the name. The ID number needs nothing
    /// here: [`crate::domain::error::sanitize_vendor_text`] already removes runs of digits.
    pub fn mask_in(&self, text: &str) -> String {
        let masked: Vec<char> = self.name_masked.chars().collect();
        let (Some(&first), len) = (masked.first(), masked.len()) else {
            return text.to_owned();
        };
        let name_like = |c: char| (c.is_alphabetic() && !c.is_ascii()) || c == '·';
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < chars.len() {
            let run = chars
                .get(i..i + len)
                .filter(|w| w.first() == Some(&first) && w.iter().skip(1).all(|c| name_like(*c)));
            if len >= 2 && run.is_some() {
                out.push_str(&self.name_masked);
                i += len;
            } else {
                out.extend(chars.get(i));
                i += 1;
            }
        }
        out
    }
}

/// A vendor's image control level (Baidu `quality_control` / `liveness_control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ControlLevel {
    /// No control (the vendor default).
    #[default]
    None,
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// High.
    High,
}

impl ControlLevel {
    /// The vendor's spelling (`NONE`, `LOW`, `NORMAL`, `HIGH`).
    pub fn as_str(self) -> &'static str {
        match self {
            ControlLevel::None => "NONE",
            ControlLevel::Low => "LOW",
            ControlLevel::Normal => "NORMAL",
            ControlLevel::High => "HIGH",
        }
    }
}

/// Quality and liveness control asked for with an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageControls {
    /// Quality control.
    pub quality: ControlLevel,
    /// Liveness control.
    pub liveness: ControlLevel,
}

/// A face image. Personal data: `Debug` shows only the format and size.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceImage {
    /// The image file.
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    /// Sniffed format.
    pub format: ImageFormat,
    /// What it is for.
    pub role: ImageRole,
    /// Controls asked for with the image (Baidu).
    #[serde(default)]
    pub controls: ImageControls,
}

impl fmt::Debug for FaceImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaceImage")
            .field("format", &self.format)
            .field("role", &self.role)
            .field("bytes", &self.data.len())
            .finish()
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The inputs a session has collected. Wiped when the session becomes final.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The identity, once submitted.
    pub identity: Option<Identity>,
    /// The probe image (Juhe).
    pub probe: Option<FaceImage>,
    /// Reference images (Baidu: one; Megvii: up to three, by slot).
    pub references: Vec<FaceImage>,
}

impl Inputs {
    /// Whether no personal data is held.
    pub fn is_empty(&self) -> bool {
        self.identity.is_none() && self.probe.is_none() && self.references.is_empty()
    }
}

/// Neutral failure codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCode {
    /// Faces differ.
    FaceMismatch,
    /// Liveness failed.
    LivenessFailed,
    /// Name and ID number do not match.
    IdNameMismatch,
    /// No face in the image.
    NoFaceFound,
    /// The authority photo is unusable.
    IdPhotoUnavailable,
    /// The user left.
    UserAbandoned,
    /// The user ran out of time.
    UserTimeout,
    /// The browser cannot run the page.
    BrowserUnsupported,
    /// The ID number is not in the authority source.
    IdNotFound,
    /// Score under the threshold for the requested FAR.
    ScoreBelowThreshold,
    /// A vendor error ended the flow.
    VendorError,
}

impl FailureCode {
    /// The code as the API and the store spell it (`FACE_MISMATCH`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::FaceMismatch => "FACE_MISMATCH",
            FailureCode::LivenessFailed => "LIVENESS_FAILED",
            FailureCode::IdNameMismatch => "ID_NAME_MISMATCH",
            FailureCode::NoFaceFound => "NO_FACE_FOUND",
            FailureCode::IdPhotoUnavailable => "ID_PHOTO_UNAVAILABLE",
            FailureCode::UserAbandoned => "USER_ABANDONED",
            FailureCode::UserTimeout => "USER_TIMEOUT",
            FailureCode::BrowserUnsupported => "BROWSER_UNSUPPORTED",
            FailureCode::IdNotFound => "ID_NOT_FOUND",
            FailureCode::ScoreBelowThreshold => "SCORE_BELOW_THRESHOLD",
            FailureCode::VendorError => "VENDOR_ERROR",
        }
    }
}

/// Why a session failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Neutral code.
    pub code: FailureCode,
    /// Vendor code.
    pub vendor_code: String,
    /// Vendor message, sanitised.
    pub vendor_message: String,
}

/// The error of the last vendor attempt that did not end the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// Stable reason (README table).
    pub reason: String,
    /// Vendor code.
    pub vendor_code: String,
    /// Vendor message, sanitised.
    pub vendor_message: String,
    /// Whether the call may have been billed.
    pub possibly_billed: bool,
}

/// A threshold and the false accept rate it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreThreshold {
    /// False accept rate, e.g. 0.001.
    pub false_accept_rate: f64,
    /// Score threshold.
    pub threshold: f64,
}

/// A face comparison score and the decision taken on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceMatch {
    /// Raw vendor score.
    pub score: f64,
    /// Threshold used.
    pub threshold: f64,
    /// FAR the threshold stands for.
    pub threshold_false_accept_rate: f64,
    /// All published thresholds.
    pub thresholds: Vec<ScoreThreshold>,
    /// score >= threshold.
    pub passed: bool,
    /// What the face was compared with.
    pub source: String,
}

/// One possibly billed vendor call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingRecord {
    /// Vendor.
    pub vendor: Vendor,
    /// Endpoint or charge type.
    pub item: String,
    /// Whether the vendor billed it.
    pub billed: bool,
    /// When (unix ms).
    pub at_ms: i64,
    /// Vendor order or log id.
    pub vendor_reference: String,
}

/// Juhe result fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JuheDetail {
    /// `res`.
    pub res: i32,
    /// `score` as sent.
    pub score: String,
    /// `code` (res = 2).
    pub code: String,
    /// `desc` (res = 2).
    pub desc: String,
    /// `message`.
    pub message: String,
    /// `orderid`.
    pub order_id: String,
    /// verifyEncry used.
    pub encrypted: bool,
}

/// One verification attempt on the Baidu page (result/getall `verify_result[]`), without personal data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaiduAttempt {
    /// `order`, 1 for the first attempt.
    pub order: i64,
    /// `is_verify_passed`.
    pub passed: bool,
    /// `code` ("0" on success).
    pub code: String,
    /// `message`, sanitised.
    pub message: String,
    /// `verify_time` (unix ms; Beijing time on the wire).
    pub verify_time_ms: Option<i64>,
    /// `is_charged`.
    pub charged: bool,
    /// `charge_type` (verify, match, ...).
    pub charge_type: String,
    /// `charge_time` (unix ms).
    pub charge_time_ms: Option<i64>,
    /// `is_ocr_charge`.
    pub ocr_charged: bool,
    /// `ocr_charge_time` (unix ms).
    pub ocr_charge_time_ms: Option<i64>,
    /// `ocr_count`.
    pub ocr_count: i64,
    /// `verify_detail.score` (absent when no comparison ran).
    pub score: Option<f64>,
    /// `verify_detail.threshold`.
    pub threshold: Option<f64>,
    /// `verify_detail.liveness_score`.
    pub liveness_score: Option<f64>,
    /// `verify_detail.spoofing_score`.
    pub spoofing_score: Option<f64>,
    /// `verify_detail.risk_level`.
    pub risk_level: String,
    /// `verify_detail.risk_tag`.
    pub risk_tag: String,
    /// `verify_detail.is_demote`.
    pub is_demote: bool,
    /// `verify_detail.verify_log_id`.
    pub verify_log_id: String,
}

/// One row of result/stat: calls of a backing API with one error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaiduApiStat {
    /// The API (`Verify_FIN`, `Sessioncode`, `OCR`, `verify`, `VideoLiveness`, `Livenesscolorful`, `VerifySec`).
    pub api: String,
    /// `error_code` ("0" = success).
    pub error_code: String,
    /// `count`.
    pub count: i64,
}

/// Baidu result fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaiduDetail {
    /// The verify_token.
    pub verify_token: String,
    /// facegate's plan name.
    pub plan: String,
    /// Baidu plan_id.
    pub plan_id: String,
    /// `verify_count`.
    pub verify_count: i64,
    /// `ocr_charge_count`.
    pub ocr_charge_count: i64,
    /// `match_charge_count`.
    pub match_charge_count: i64,
    /// `verify_charge_count`.
    pub verify_charge_count: i64,
    /// Every attempt, oldest first.
    pub attempts: Vec<BaiduAttempt>,
    /// result/detail `is_demote`.
    pub is_demote: bool,
    /// result/stat rows.
    pub api_stats: Vec<BaiduApiStat>,
    /// The plan verifies a specified user.
    #[serde(default)]
    pub plan_needs_identity: bool,
    /// The plan compares with an uploaded face.
    #[serde(default)]
    pub plan_needs_reference: bool,
    /// `result/detail` and `result/stat` were read (after the decision, for GetResult).
    #[serde(default)]
    pub details_read: bool,
}

/// One Megvii face comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MegviiComparisonScore {
    /// faceid, ref1..3, idcard_photo, idcard_datasource.
    pub source: String,
    /// confidence.
    pub confidence: f64,
    /// Thresholds by FAR.
    pub thresholds: Vec<ScoreThreshold>,
}

/// One Megvii anti-spoofing check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MegviiGenuineness {
    /// The check name.
    pub check: String,
    /// Its confidence.
    pub confidence: f64,
    /// Its threshold.
    pub threshold: f64,
}

/// Megvii result fields, without personal data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MegviiDetail {
    /// biz_id.
    pub biz_id: String,
    /// biz_no.
    pub biz_no: String,
    /// biz_extra_data.
    pub biz_extra_data: String,
    /// status.
    pub status: String,
    /// fail_reason.
    pub fail_reason: String,
    /// verify_result.error_message.
    pub verify_error_message: String,
    /// multifaces_tag.
    pub multifaces_tag: String,
    /// From a verified callback (else get_result).
    pub from_callback: bool,
    /// Comparisons.
    pub comparisons: Vec<MegviiComparisonScore>,
    /// id_exceptions.
    pub id_exceptions: BTreeMap<String, i64>,
    /// liveness_result.result.
    pub liveness_result: String,
    /// liveness_result.procedure_type.
    pub liveness_procedure: String,
    /// liveness_result.details.
    pub liveness_details: BTreeMap<String, i64>,
    /// liveness_result.face_genuineness.
    pub face_genuineness: Vec<MegviiGenuineness>,
    /// will_result (result, error message).
    pub will_results: Vec<(String, String)>,
    /// idcard_info.idcard_mode.
    pub idcard_mode: String,
    /// Front legality scores.
    pub idcard_front_legality: BTreeMap<String, f64>,
    /// Back legality scores.
    pub idcard_back_legality: BTreeMap<String, f64>,
    /// Front upload times.
    pub idcard_front_upload_times: i64,
    /// Back upload times.
    pub idcard_back_upload_times: i64,
    /// verify_time (unix ms).
    pub verify_time_ms: Option<i64>,
}

/// Vendor-specific detail of an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VendorDetail {
    /// Juhe.
    Juhe(JuheDetail),
    /// Baidu.
    Baidu(BaiduDetail),
    /// Megvii.
    Megvii(Box<MegviiDetail>),
}

/// Liveness and anti-spoofing scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Liveness {
    /// Whether the vendor judged the face live.
    pub passed: bool,
    /// Liveness score.
    pub liveness_score: f64,
    /// Spoofing score.
    pub spoofing_score: f64,
    /// The procedure, where known.
    pub procedure: String,
}

/// Identity fields read (OCR) or confirmed by the vendor. Stored masked; shown unmasked only when fetched on
/// request from the vendor. `Debug` masks it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityDocument {
    /// Name.
    pub name: String,
    /// ID number.
    pub id_number: String,
    /// Document type, where known.
    pub id_type: Option<IdType>,
    /// Address.
    pub address: String,
    /// Birth date as printed.
    pub birth_date: String,
    /// Gender.
    pub gender: String,
    /// Ethnicity (民族).
    pub ethnicity: String,
    /// Issuing authority.
    pub issued_by: String,
    /// Validity period.
    pub valid_period: String,
}

impl fmt::Debug for IdentityDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityDocument")
            .field("name", &mask_name(&self.name))
            .field("id_number", &mask_id_number(&self.id_number))
            .field("id_type", &self.id_type)
            .finish_non_exhaustive()
    }
}

impl IdentityDocument {
    /// The masked form kept in the store: name and number masked, the other personal fields dropped.
    pub fn masked(&self) -> IdentityDocument {
        IdentityDocument {
            name: mask_name(&self.name),
            id_number: mask_id_number(&self.id_number),
            id_type: self.id_type,
            gender: self.gender.clone(),
            ethnicity: self.ethnicity.clone(),
            ..Default::default()
        }
    }
}

/// What is known of a session's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Face comparison.
    pub face_match: Option<FaceMatch>,
    /// Liveness.
    #[serde(default)]
    pub liveness: Option<Liveness>,
    /// Identity fields read or confirmed by the vendor (masked).
    #[serde(default)]
    pub identity_document: Option<IdentityDocument>,
    /// The same fields unmasked, when the vendor sends them only once (Megvii callbacks): kept until
    /// `revealable_until_ms` for GetResult with reveal_personal_data, then wiped.
    #[serde(default)]
    pub revealable_identity: Option<IdentityDocument>,
    /// Until when `revealable_identity` is kept (unix ms).
    #[serde(default)]
    pub revealable_until_ms: Option<i64>,
    /// Every possibly billed call.
    pub billing: Vec<BillingRecord>,
    /// Vendor detail.
    pub vendor_detail: Option<VendorDetail>,
}

/// A link to captured media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLink {
    /// "video" or "image".
    pub kind: String,
    /// The URL at the vendor.
    pub url: String,
}

/// Result data fetched from the vendor on request and never stored.
#[derive(Clone, Default, PartialEq)]
pub struct ResultExtras {
    /// The unmasked identity document (reveal_personal_data).
    pub identity_document: Option<IdentityDocument>,
    /// The captured face (include_face_image).
    pub face_image: Option<Vec<u8>>,
    /// Media links (include_media).
    pub media: Vec<MediaLink>,
    /// Vendor note on the media (Baidu extInfo).
    pub media_note: String,
}

impl fmt::Debug for ResultExtras {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultExtras")
            .field("identity_document", &self.identity_document)
            .field("face_image_bytes", &self.face_image.as_ref().map(Vec::len))
            .field("media", &self.media.len())
            .finish()
    }
}

/// What a GetResult caller asks for beyond the stored outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtrasRequest {
    /// Unmasked identity fields.
    pub reveal_personal_data: bool,
    /// The captured face image.
    pub face_image: bool,
    /// Media links.
    pub media: bool,
}

impl ExtrasRequest {
    /// Whether anything beyond the stored outcome is asked for.
    pub fn any(&self) -> bool {
        self.reveal_personal_data || self.face_image || self.media
    }
}

/// What a Megvii session compares the live face with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MegviiComparison {
    /// comparison_type=1: the authority source.
    #[default]
    Authority,
    /// comparison_type=0: uploaded reference images.
    ReferenceImage,
}

/// Options of a Megvii FaceID Lite session, in the vendor's own values (empty / `None` = the vendor default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MegviiSettings {
    /// comparison_type.
    pub comparison: MegviiComparison,
    /// idcard_mode 0..4 (with comparison_type 1).
    pub idcard_mode: u8,
    /// procedure_type.
    pub procedure_type: String,
    /// procedure_priority.
    pub procedure_priority: String,
    /// liveness_preferences.
    pub liveness_preferences: String,
    /// web_title.
    pub web_title: String,
    /// scene_id.
    pub scene_id: String,
    /// biz_extra_data.
    pub biz_extra_data: String,
    /// idcard_uneditable_field entries.
    pub idcard_uneditable_fields: Vec<String>,
    /// return_multifaces_tag=1.
    pub return_multifaces_tag: bool,
    /// get_fail_reason=1.
    pub get_fail_reason: bool,
    /// action_http_method=GET (else POST).
    pub return_by_get: bool,
    /// multi_oriented_detection=1.
    pub multi_oriented_detection: bool,
    /// fmp_mode=1.
    pub fmp_mode: bool,
    /// get_shooting_error=1.
    pub get_shooting_error: bool,
    /// maximum_shooting_time (10..=60), 0 = default.
    pub maximum_shooting_time: u32,
    /// update_rtc=1.
    pub update_rtc: bool,
    /// encryption_type, when set.
    pub encryption_type: Option<u8>,
    /// uuid (empty: the session id).
    pub uuid: String,
}

/// Vendor options fixed at session start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VendorOptions {
    /// Juhe: plain or encrypted endpoint.
    Juhe {
        /// Use verifyEncry.
        encrypted: bool,
    },
    /// Baidu: the configured plan.
    Baidu {
        /// facegate's plan name.
        plan: String,
        /// The Baidu plan_id.
        plan_id: String,
    },
    /// Megvii: the get_token options.
    Megvii(MegviiSettings),
}

/// A verification session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Vendor.
    pub vendor: Vendor,
    /// Options.
    pub options: VendorOptions,
    /// State.
    pub state: State,
    /// What the flow still needs (REQUIRES_INPUT only).
    pub required_inputs: Vec<RequiredInput>,
    /// Vendor page URL (AWAITING_USER).
    pub user_url: Option<String>,
    /// When user_url stops working (unix ms).
    pub user_url_expires_at_ms: Option<i64>,
    /// Created (unix ms).
    pub created_at_ms: i64,
    /// Last change (unix ms).
    pub updated_at_ms: i64,
    /// Expiry of a non-final session (unix ms).
    pub expires_at_ms: i64,
    /// Caller's reference.
    pub client_reference_id: String,
    /// Caller's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Failure (FAILED).
    pub failure: Option<Failure>,
    /// Last attempt error that did not end the session.
    pub last_attempt_error: Option<AttemptError>,
    /// Masked identity.
    pub identity_masked: Option<MaskedIdentity>,
    /// Version, +1 per change.
    pub version: i64,
    /// FAR decisions are made at.
    pub target_false_accept_rate: f64,
    /// Idempotency key.
    pub request_id: String,
    /// Cancel reason (CANCELED).
    pub cancel_reason: Option<String>,
    /// Return URLs for H5 vendors.
    pub return_success_url: String,
    /// Failure return URL for H5 vendors.
    pub return_failure_url: String,
    /// Collected inputs (personal data; wiped when final).
    pub inputs: Inputs,
    /// Set while a billed vendor call is under way (unix ms of its start): a second call is refused meanwhile.
    pub attempt_started_at_ms: Option<i64>,
    /// The outcome so far.
    pub outcome: Outcome,
    /// The vendor's handle of the flow once it is under way (Baidu verify_token, Megvii biz_id).
    #[serde(default)]
    pub vendor_ref: Option<String>,
    /// When the one-shot result query of the flow was claimed (Megvii get_result); it is never made twice.
    #[serde(default)]
    pub final_query_at_ms: Option<i64>,
    /// The tenant that owns the session (its creating caller's). The store's `tenant` column is authoritative.
    #[serde(default)]
    pub tenant: String,
    /// Whether real vendors serve the session (false for the sandbox simulators). The store's `live_mode` column is
    /// authoritative.
    #[serde(default)]
    pub live_mode: bool,
    /// Set once the session was redacted: its personal data is gone for good.
    #[serde(default)]
    pub redaction: Option<Redaction>,
    /// The end user's consent evidence given to StartSession (kept after redaction).
    #[serde(default)]
    pub consent: Option<Consent>,
    /// StartSession's own vendor call (made when the request brought every input): under way, or how it failed,
    /// which is what a replay of the request_id answers.
    #[serde(default, skip_serializing_if = "StartCall::is_none")]
    pub start_call: StartCall,
    /// How facegate chose the vendor, when the request left it to facegate (`None`: the request named it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
}

/// How a routed session's vendor was chosen, and the vendors it left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Every candidate that could serve the request, in the order drawn; the first was tried first.
    pub order: Vec<Vendor>,
    /// The candidates still to fail over to, with the options each resolved at the start.
    pub failover: Vec<RouteCandidate>,
    /// The vendors tried before the session's own, oldest first, and why each was left.
    pub attempts: Vec<VendorAttempt>,
}

/// A vendor a routed session may fail over to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCandidate {
    /// The vendor.
    pub vendor: Vendor,
    /// Its options, resolved from the request.
    pub options: VendorOptions,
}

/// A vendor a routed session left before anything was billed or a page was handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorAttempt {
    /// The vendor.
    pub vendor: Vendor,
    /// The stable reason of its failure (`VENDOR_UNAVAILABLE`, ...).
    pub reason: String,
    /// When it failed, unix ms.
    pub at_ms: i64,
}

/// The vendor call StartSession claimed itself, as far as a replay of its request_id needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartCall {
    /// StartSession claimed no call, or its call produced an outcome (the session is the answer).
    #[default]
    None,
    /// StartSession's call is under way.
    UnderWay,
    /// StartSession's call failed: the error it answered, without personal data.
    Failed(StartError),
}

impl StartCall {
    /// Nothing to keep.
    pub fn is_none(&self) -> bool {
        matches!(self, StartCall::None)
    }
}

/// The error StartSession answered when its own vendor call failed, stored so that a replay answers the same status
/// code, message and details. The vendor message is sanitised like every vendor text; redaction clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartError {
    /// What kind of failure.
    pub kind: super::error::VendorErrorKind,
    /// The vendor's code, if it gave one.
    pub vendor_code: String,
    /// The vendor's message, sanitised.
    pub vendor_message: String,
    /// Whether the call may have been billed.
    pub possibly_billed: bool,
    /// After how long the vendor said trying again may help, in ms.
    pub retry_after_ms: Option<u64>,
    /// How to try again.
    pub retry_with: super::error::RetryWith,
}

impl StartError {
    /// Keeps a failure of StartSession's call.
    pub fn new(err: &super::error::VendorError, retry_with: super::error::RetryWith) -> Self {
        Self {
            kind: err.kind,
            vendor_code: err.vendor_code.clone(),
            vendor_message: err.vendor_message.clone(),
            possibly_billed: err.possibly_billed,
            retry_after_ms: err
                .retry_after
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            retry_with,
        }
    }

    /// The error as StartSession answered it, for session `session`.
    pub fn to_error(&self, session: &Session) -> super::error::Error {
        super::error::Error::Vendor {
            session_id: session.id.clone(),
            err: super::error::VendorError {
                kind: self.kind,
                vendor: session.vendor,
                vendor_code: self.vendor_code.clone(),
                vendor_message: self.vendor_message.clone(),
                possibly_billed: self.possibly_billed,
                retry_after: self.retry_after_ms.map(std::time::Duration::from_millis),
            },
            retry_with: self.retry_with.clone(),
        }
    }
}

/// The redaction of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// When it was redacted (unix ms).
    pub redacted_at_ms: i64,
}

/// How the end user gave consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentMethod {
    /// A checkbox.
    Checkbox,
    /// A button.
    Button,
    /// A signature.
    Signature,
    /// Anything else.
    Other,
}

/// Evidence of the end user's separate consent to face processing (no personal data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// When consent was given (unix ms).
    pub granted_at_ms: i64,
    /// The notice version agreed to.
    pub notice_version: String,
    /// How it was given.
    pub method: ConsentMethod,
}

impl Session {
    /// Removes every piece of personal data, and everything that could lead to it, for good: the inputs, the
    /// masked identity, OCR data, the caller's metadata, reference and return URLs, the cancel reason, the vendor's
    /// handles and page URL, and vendor free text. Kept: ids, tenant, vendor, state, decision, scores, failure
    /// codes, billing records, consent evidence and timestamps.
    pub fn redact_personal_data(&mut self, now_ms: i64) {
        self.inputs = Inputs::default();
        self.identity_masked = None;
        self.client_reference_id.clear();
        self.metadata.clear();
        self.return_success_url.clear();
        self.return_failure_url.clear();
        self.cancel_reason = None;
        self.user_url = None;
        self.user_url_expires_at_ms = None;
        self.vendor_ref = None;
        if let Some(f) = &mut self.failure {
            f.vendor_message.clear();
        }
        if let Some(e) = &mut self.last_attempt_error {
            e.vendor_message.clear();
        }
        if let StartCall::Failed(e) = &mut self.start_call {
            e.vendor_message.clear();
        }
        if let VendorOptions::Megvii(m) = &mut self.options {
            m.web_title.clear();
            m.biz_extra_data.clear();
            m.uuid.clear();
        }
        let outcome = &mut self.outcome;
        outcome.identity_document = None;
        outcome.revealable_identity = None;
        outcome.revealable_until_ms = None;
        match &mut outcome.vendor_detail {
            Some(VendorDetail::Juhe(j)) => {
                j.desc.clear();
                j.message.clear();
            }
            Some(VendorDetail::Baidu(b)) => {
                b.verify_token.clear();
                for a in &mut b.attempts {
                    a.message.clear();
                    a.verify_log_id.clear();
                }
            }
            Some(VendorDetail::Megvii(m)) => {
                m.biz_id.clear();
                m.biz_extra_data.clear();
                m.verify_error_message.clear();
            }
            None => {}
        }
        self.redaction = Some(Redaction {
            redacted_at_ms: now_ms,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_codes_are_spelled_as_the_store_spells_them() {
        use FailureCode as F;
        for code in [
            F::FaceMismatch,
            F::LivenessFailed,
            F::IdNameMismatch,
            F::NoFaceFound,
            F::IdPhotoUnavailable,
            F::UserAbandoned,
            F::UserTimeout,
            F::BrowserUnsupported,
            F::IdNotFound,
            F::ScoreBelowThreshold,
            F::VendorError,
        ] {
            assert_eq!(
                serde_json::to_string(&code).ok(),
                Some(format!("\"{}\"", code.as_str()))
            );
        }
    }

    #[test]
    fn a_masked_identity_masks_what_can_be_its_name() {
        let m = MaskedIdentity {
            name_masked: "测***".into(),
            id_number_masked: "110***********0014".into(),
            id_type: IdType::MainlandResidentIdCard,
        };
        assert_eq!(
            m.mask_in("NETWORK_ERROR 测试用户/x"),
            "NETWORK_ERROR 测***/x"
        );
        assert_eq!(m.mask_in("测试 ok 测a用户"), "测试 ok 测a用户");
        assert_eq!(m.mask_in("WEBRTC_UNSUPPORTED"), "WEBRTC_UNSUPPORTED");
        let empty = MaskedIdentity {
            name_masked: String::new(),
            ..m
        };
        assert_eq!(empty.mask_in("测试用户"), "测试用户");
    }

    #[test]
    fn personal_text_is_masked_where_vendor_text_echoes_it() {
        let t = mask_personal_text(
            "照片与张三不符, 11010519491231002x 核验失败; 张三",
            &["张三"],
            &["11010519491231002X"],
        );
        assert_eq!(t, "照片与张*不符, 110***********002X 核验失败; 张*");
        assert_eq!(mask_personal_text("李 ok", &["李"], &[""]), "* ok");
        assert_eq!(
            mask_personal_text("NETWORK_ERROR", &["", " "], &[]),
            "NETWORK_ERROR"
        );
        let id = Identity {
            name: "王小明".into(),
            id_number: "440524188001010014".into(),
            id_type: IdType::MainlandResidentIdCard,
        };
        assert_eq!(
            id.mask_in("王小明/440524188001010014"),
            "王**/440***********0014"
        );
    }

    #[test]
    fn debug_hides_personal_data() {
        let id = Identity {
            name: "测试人员".into(),
            id_number: "11010119000101901X".into(),
            id_type: IdType::MainlandResidentIdCard,
        };
        let d = format!("{id:?}");
        assert!(!d.contains("测试人员"));
        assert!(!d.contains("11010119000101901X"));
        assert!(d.contains("110***********901X"));
        let img = FaceImage {
            data: vec![0xff, 0xd8, 0xff, 1, 2, 3],
            format: ImageFormat::Jpeg,
            role: ImageRole::Probe,
            controls: ImageControls::default(),
        };
        assert!(format!("{img:?}").contains("bytes: 6"));
        assert!(!format!("{img:?}").contains("255"));
    }

    #[test]
    fn masks_names() {
        assert_eq!(mask_name("张三丰"), "张**");
        assert_eq!(mask_name(""), "");
    }
}
