//! proto <-> domain conversions, with request validation. Every violation names the proto field path.

use std::collections::BTreeMap;

use prost::Message;

use crate::domain::listing::{ListFilter, ListRequest};
use crate::domain::service::{ImageInput, RequestedOptions, StartRequest};
use crate::domain::validation::{self, Date, IdType, Violation};
use crate::domain::{self as d, Error};
use crate::proto::v1 as pb;

/// Largest image any vendor takes (Baidu and Megvii: 10 MB); vendors may take less.
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
const MAX_METADATA_ENTRIES: usize = 32;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;
const MAX_REFERENCE: usize = 128;
const MAX_URL: usize = 2048;
const MAX_CANCEL_REASON: usize = 256;

fn violation(field: &str, description: impl Into<String>) -> Violation {
    Violation {
        field: field.to_owned(),
        description: description.into(),
    }
}

fn fail(violations: Vec<Violation>) -> Result<(), Error> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

/// Validates a session id (`ses_` + 32 hex).
pub fn session_id(field: &str, id: &str) -> Result<String, Error> {
    let ok = id.len() == 36
        && id.starts_with("ses_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(id.to_owned())
    } else if id.is_empty() {
        Err(Error::invalid(field, "required"))
    } else {
        Err(Error::invalid(
            field,
            "not a session id (ses_ followed by 32 lowercase hex digits)",
        ))
    }
}

fn request_id(v: &mut Vec<Violation>, id: &str) {
    if id.is_empty() {
        v.push(violation(
            "request_id",
            "required: an idempotency key chosen by the caller",
        ));
    } else if id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        v.push(violation(
            "request_id",
            "1 to 128 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
}

fn vendor(v: pb::Vendor) -> Option<d::Vendor> {
    match v {
        pb::Vendor::Unspecified => None,
        pb::Vendor::Baidu => Some(d::Vendor::Baidu),
        pb::Vendor::Megvii => Some(d::Vendor::Megvii),
        pb::Vendor::Juhe => Some(d::Vendor::Juhe),
    }
}

/// Validates an identity.
pub fn identity(field: &str, id: &pb::Identity, v: &mut Vec<Violation>) -> Option<d::Identity> {
    let id_type = match pb::IdType::try_from(id.id_type) {
        Ok(pb::IdType::Unspecified | pb::IdType::MainlandResidentIdCard) => {
            IdType::MainlandResidentIdCard
        }
        Ok(pb::IdType::HmtResidencePermit) => IdType::HmtResidencePermit,
        Err(_) => {
            v.push(violation(&format!("{field}.id_type"), "unknown id type"));
            return None;
        }
    };
    let name = validation::validate_name(&format!("{field}.name"), &id.name)
        .map_err(|e| v.push(e))
        .ok();
    let number = validation::validate_id_number(
        &format!("{field}.id_number"),
        id_type,
        &id.id_number,
        Date::today_utc(),
    )
    .map_err(|e| v.push(e))
    .ok();
    Some(d::Identity {
        name: name?,
        id_number: number?,
        id_type,
    })
}

/// Validates an image.
pub fn image(
    field: &str,
    img: &pb::FaceImage,
    slot: u32,
    v: &mut Vec<Violation>,
) -> Option<ImageInput> {
    let role = match pb::ImageRole::try_from(img.role) {
        Ok(pb::ImageRole::Unspecified) => None,
        Ok(pb::ImageRole::Reference) => Some(d::ImageRole::Reference),
        Ok(pb::ImageRole::Probe) => Some(d::ImageRole::Probe),
        Err(_) => {
            v.push(violation(&format!("{field}.role"), "unknown image role"));
            return None;
        }
    };
    let format = validation::validate_image(&format!("{field}.data"), &img.data, MAX_IMAGE_BYTES)
        .map_err(|e| v.push(e))
        .ok()?;
    Some(ImageInput {
        data: img.data.clone(),
        format,
        role,
        slot,
        controls: d::ImageControls::default(),
    })
}

fn url(v: &mut Vec<Violation>, field: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let scheme_ok = value.starts_with("https://") || value.starts_with("http://");
    if !scheme_ok
        || value.len() > MAX_URL
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        v.push(violation(
            field,
            "an absolute http(s) URL of at most 2048 characters without spaces",
        ));
    }
}

fn printable(v: &mut Vec<Violation>, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        v.push(violation(field, format!("at most {max} characters")));
    } else if value.chars().any(char::is_control) {
        v.push(violation(field, "control characters are not allowed"));
    }
}

fn target_far(v: &mut Vec<Violation>, far: f64) -> Option<f64> {
    if far == 0.0 {
        None
    } else if !(far.is_finite() && far > 0.0 && far < 1.0) {
        v.push(violation(
            "target_false_accept_rate",
            "must be 0 (default) or between 0 and 1",
        ));
        None
    } else {
        Some(far)
    }
}

/// Validates StartSession.
pub fn start_request(req: &pb::StartSessionRequest) -> Result<StartRequest, Error> {
    let mut v = Vec::new();
    request_id(&mut v, &req.request_id);
    // VENDOR_UNSPECIFIED leaves the vendor to facegate (routing); vendor options then keep it to their vendor.
    let vendor = match pb::Vendor::try_from(req.vendor) {
        Ok(x) => vendor(x),
        Err(_) => {
            v.push(violation(
                "vendor",
                "unknown: VENDOR_UNSPECIFIED (facegate picks), VENDOR_BAIDU, VENDOR_MEGVII or VENDOR_JUHE",
            ));
            None
        }
    };
    let options = match (&req.vendor_options, vendor) {
        (None, _) => RequestedOptions::Default,
        (Some(pb::start_session_request::VendorOptions::Juhe(o)), Some(d::Vendor::Juhe) | None) => {
            match pb::JuheMode::try_from(o.mode) {
                Ok(pb::JuheMode::Unspecified) => RequestedOptions::Juhe { encrypted: None },
                Ok(pb::JuheMode::Plain) => RequestedOptions::Juhe {
                    encrypted: Some(false),
                },
                Ok(pb::JuheMode::Encrypted) => RequestedOptions::Juhe {
                    encrypted: Some(true),
                },
                Err(_) => {
                    v.push(violation("juhe.mode", "unknown Juhe mode"));
                    RequestedOptions::Default
                }
            }
        }
        (
            Some(pb::start_session_request::VendorOptions::Baidu(o)),
            Some(d::Vendor::Baidu) | None,
        ) => {
            if o.plan.len() > 64
                || !o
                    .plan
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            {
                v.push(violation(
                    "baidu.plan",
                    "a configured plan name: at most 64 characters of [A-Za-z0-9_.-]",
                ));
            }
            RequestedOptions::Baidu {
                plan: o.plan.clone(),
            }
        }
        (
            Some(pb::start_session_request::VendorOptions::Megvii(o)),
            Some(d::Vendor::Megvii) | None,
        ) => RequestedOptions::Megvii(megvii_options(o, &mut v)),
        (Some(_), _) => {
            v.push(violation(
                "vendor_options",
                "the options must be those of the chosen vendor",
            ));
            RequestedOptions::Default
        }
    };
    let identity = req
        .identity
        .as_ref()
        .and_then(|i| identity("identity", i, &mut v));
    let mut images = Vec::new();
    for (i, img) in req.images.iter().enumerate() {
        if let Some(x) = image(
            &format!("images[{i}]"),
            img,
            u32::try_from(i + 1).unwrap_or(0),
            &mut v,
        ) {
            images.push(x);
        }
    }
    let (success_url, failure_url) = req
        .return_urls
        .as_ref()
        .map(|r| (r.success_url.clone(), r.failure_url.clone()))
        .unwrap_or_default();
    url(&mut v, "return_urls.success_url", &success_url);
    url(&mut v, "return_urls.failure_url", &failure_url);
    printable(
        &mut v,
        "client_reference_id",
        &req.client_reference_id,
        MAX_REFERENCE,
    );
    if req.metadata.len() > MAX_METADATA_ENTRIES {
        v.push(violation(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (k, val) in &req.metadata {
        if k.is_empty() {
            v.push(violation("metadata", "keys must not be empty"));
        }
        printable(&mut v, &format!("metadata[{k}]"), k, MAX_METADATA_KEY);
        printable(&mut v, &format!("metadata[{k}]"), val, MAX_METADATA_VALUE);
    }
    let far = target_far(&mut v, req.target_false_accept_rate);
    let consent = req.consent.as_ref().and_then(|c| consent(c, &mut v));
    fail(v)?;
    Ok(StartRequest {
        request_id: req.request_id.clone(),
        vendor,
        options,
        identity,
        images,
        success_url,
        failure_url: if failure_url.is_empty() {
            String::new()
        } else {
            failure_url
        },
        client_reference_id: req.client_reference_id.clone(),
        metadata: req.metadata.clone().into_iter().collect::<BTreeMap<_, _>>(),
        target_far: far,
        consent,
        canonical: req.encode_to_vec(),
    })
}

/// Longest consent notice version.
const MAX_NOTICE_VERSION: usize = 64;

/// Validates the form of consent evidence (its time window is the domain's to check).
fn consent(c: &pb::Consent, v: &mut Vec<Violation>) -> Option<d::Consent> {
    let granted_at_ms = match &c.granted_time {
        Some(t) if (0..1_000_000_000).contains(&t.nanos) => t
            .seconds
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(i64::from(t.nanos / 1_000_000))),
        _ => None,
    };
    if granted_at_ms.is_none() {
        v.push(violation(
            "consent.granted_time",
            "required: a valid timestamp",
        ));
    }
    let n = c.notice_version.chars().count();
    if n == 0 || n > MAX_NOTICE_VERSION {
        v.push(violation(
            "consent.notice_version",
            format!("required: 1 to {MAX_NOTICE_VERSION} characters"),
        ));
    } else if c.notice_version.chars().any(char::is_control) {
        v.push(violation(
            "consent.notice_version",
            "control characters are not allowed",
        ));
    }
    let method = match pb::ConsentMethod::try_from(c.method) {
        Ok(pb::ConsentMethod::Checkbox) => Some(d::ConsentMethod::Checkbox),
        Ok(pb::ConsentMethod::Button) => Some(d::ConsentMethod::Button),
        Ok(pb::ConsentMethod::Signature) => Some(d::ConsentMethod::Signature),
        Ok(pb::ConsentMethod::Other) => Some(d::ConsentMethod::Other),
        Ok(pb::ConsentMethod::Unspecified) | Err(_) => {
            v.push(violation(
                "consent.method",
                "required: CONSENT_METHOD_CHECKBOX, _BUTTON, _SIGNATURE or _OTHER",
            ));
            None
        }
    };
    Some(d::Consent {
        granted_at_ms: granted_at_ms?,
        notice_version: c.notice_version.clone(),
        method: method?,
    })
}

/// Validates Megvii options and turns them into the vendor's values.
fn megvii_options(o: &pb::MegviiOptions, v: &mut Vec<Violation>) -> d::MegviiSettings {
    let mut bad = |field: &str, what: &str| v.push(violation(&format!("megvii.{field}"), what));
    let comparison = match pb::MegviiComparisonType::try_from(o.comparison_type) {
        Ok(pb::MegviiComparisonType::Unspecified | pb::MegviiComparisonType::Authority) => {
            d::MegviiComparison::Authority
        }
        Ok(pb::MegviiComparisonType::ReferenceImage) => d::MegviiComparison::ReferenceImage,
        Err(_) => {
            bad("comparison_type", "unknown value");
            d::MegviiComparison::Authority
        }
    };
    let idcard_mode = match pb::MegviiIdcardMode::try_from(o.idcard_mode) {
        Ok(pb::MegviiIdcardMode::Unspecified | pb::MegviiIdcardMode::Provided) => 0,
        Ok(pb::MegviiIdcardMode::ShootFront) => 1,
        Ok(pb::MegviiIdcardMode::ShootBothSides) => 2,
        Ok(pb::MegviiIdcardMode::UserTyped) => 3,
        Ok(pb::MegviiIdcardMode::UserChoice) => 4,
        Err(_) => {
            bad("idcard_mode", "unknown value");
            0
        }
    };
    if comparison == d::MegviiComparison::ReferenceImage && o.idcard_mode != 0 {
        bad(
            "idcard_mode",
            "only with MEGVII_COMPARISON_TYPE_AUTHORITY (the identity is not used with reference images)",
        );
    }
    let procedure_type = match pb::MegviiProcedureType::try_from(o.procedure_type) {
        Ok(pb::MegviiProcedureType::Unspecified) => "",
        Ok(pb::MegviiProcedureType::Video) => "video",
        Ok(pb::MegviiProcedureType::Selfie) => "selfie",
        Ok(pb::MegviiProcedureType::Still) => "still",
        Ok(pb::MegviiProcedureType::Flash) => "flash",
        Ok(pb::MegviiProcedureType::Will) => "will",
        Err(_) => {
            bad("procedure_type", "unknown value");
            ""
        }
    };
    let procedure_priority = match pb::MegviiProcedurePriority::try_from(o.procedure_priority) {
        Ok(pb::MegviiProcedurePriority::Unspecified) => "",
        Ok(pb::MegviiProcedurePriority::Video) => "video",
        Ok(pb::MegviiProcedurePriority::Still) => "still",
        Ok(pb::MegviiProcedurePriority::Keep) => "keep",
        Err(_) => {
            bad("procedure_priority", "unknown value");
            ""
        }
    };
    let liveness_preferences = match pb::MegviiLivenessPreference::try_from(o.liveness_preferences)
    {
        Ok(pb::MegviiLivenessPreference::Unspecified) => "",
        Ok(pb::MegviiLivenessPreference::None) => "none",
        Ok(pb::MegviiLivenessPreference::SelfieNoMetadataCheck) => "selfie_no_metadata_check",
        Ok(pb::MegviiLivenessPreference::VideoStrict) => "video_strict",
        Ok(pb::MegviiLivenessPreference::StillStrict) => "still_strict",
        Err(_) => {
            bad("liveness_preferences", "unknown value");
            ""
        }
    };
    let mut fields = Vec::new();
    for f in &o.idcard_uneditable_fields {
        match pb::MegviiIdcardField::try_from(*f) {
            Ok(pb::MegviiIdcardField::Name) => fields.push("idcard_name".to_owned()),
            Ok(pb::MegviiIdcardField::Number) => fields.push("idcard_number".to_owned()),
            Ok(pb::MegviiIdcardField::ValidDate) => fields.push("idcard_valid_date".to_owned()),
            Ok(pb::MegviiIdcardField::IssuedBy) => fields.push("idcard_issued_by".to_owned()),
            _ => bad("idcard_uneditable_fields", "unknown or unspecified field"),
        }
    }
    fields.dedup();
    let return_by_get = match pb::MegviiActionHttpMethod::try_from(o.action_http_method) {
        Ok(pb::MegviiActionHttpMethod::Get) => true,
        Ok(_) => false,
        Err(_) => {
            bad("action_http_method", "unknown value");
            false
        }
    };
    let encryption_type = match pb::MegviiEncryptionType::try_from(o.encryption_type) {
        Ok(pb::MegviiEncryptionType::Unspecified) => None,
        Ok(pb::MegviiEncryptionType::None) => Some(0),
        Ok(pb::MegviiEncryptionType::Sm2) => Some(1),
        Ok(pb::MegviiEncryptionType::Rsa) => Some(2),
        Err(_) => {
            bad("encryption_type", "unknown value");
            None
        }
    };
    for (field, value, max) in [
        ("web_title", &o.web_title, 32),
        ("scene_id", &o.scene_id, 128),
        ("biz_extra_data", &o.biz_extra_data, 4096),
        ("uuid", &o.uuid, 128),
    ] {
        if value.len() > max {
            bad(field, &format!("at most {max} bytes"));
        }
        if value.chars().any(char::is_control) {
            bad(field, "no control characters");
        }
    }
    let maximum_shooting_time = match u32::try_from(o.maximum_shooting_time_seconds) {
        Ok(0) => 0,
        Ok(s @ 10..=60) => s,
        _ => {
            bad(
                "maximum_shooting_time_seconds",
                "0 (the default) or 10 to 60",
            );
            0
        }
    };
    d::MegviiSettings {
        comparison,
        idcard_mode,
        procedure_type: procedure_type.into(),
        procedure_priority: procedure_priority.into(),
        liveness_preferences: liveness_preferences.into(),
        web_title: o.web_title.clone(),
        scene_id: o.scene_id.clone(),
        biz_extra_data: o.biz_extra_data.clone(),
        idcard_uneditable_fields: fields,
        return_multifaces_tag: o.return_multifaces_tag,
        get_fail_reason: o.get_fail_reason,
        return_by_get,
        multi_oriented_detection: o.multi_oriented_detection,
        fmp_mode: o.fmp_mode,
        get_shooting_error: o.get_shooting_error,
        maximum_shooting_time,
        update_rtc: o.update_rtc,
        encryption_type,
        uuid: o.uuid.clone(),
    }
}

/// Validates SubmitIdentity.
pub fn submit_identity(req: &pb::SubmitIdentityRequest) -> Result<(String, d::Identity), Error> {
    let id = session_id("session_id", &req.session_id)?;
    let mut v = Vec::new();
    let ident = match &req.identity {
        Some(i) => identity("identity", i, &mut v),
        None => {
            v.push(violation("identity", "required"));
            None
        }
    };
    fail(v)?;
    let ident = ident.ok_or_else(|| Error::invalid("identity", "required"))?;
    Ok((id, ident))
}

/// Validates UploadReference.
pub fn upload(req: &pb::UploadReferenceRequest) -> Result<(String, ImageInput), Error> {
    let id = session_id("session_id", &req.session_id)?;
    let mut v = Vec::new();
    let slot = match u32::try_from(req.slot) {
        Ok(s) if s <= 3 => s,
        _ => {
            v.push(violation("slot", "0 (next free) or 1 to 3"));
            0
        }
    };
    let mut levels = [d::ControlLevel::None; 2];
    for (i, (field, level)) in [
        ("quality_control", req.quality_control),
        ("liveness_control", req.liveness_control),
    ]
    .into_iter()
    .enumerate()
    {
        levels[i] = match pb::ControlLevel::try_from(level) {
            Ok(pb::ControlLevel::Unspecified | pb::ControlLevel::None) => d::ControlLevel::None,
            Ok(pb::ControlLevel::Low) => d::ControlLevel::Low,
            Ok(pb::ControlLevel::Normal) => d::ControlLevel::Normal,
            Ok(pb::ControlLevel::High) => d::ControlLevel::High,
            Err(_) => {
                v.push(violation(field, "unknown control level"));
                d::ControlLevel::None
            }
        };
    }
    let img = match &req.image {
        Some(i) => image("image", i, slot, &mut v),
        None => {
            v.push(violation("image", "required"));
            None
        }
    };
    fail(v)?;
    let mut img = img.ok_or_else(|| Error::invalid("image", "required"))?;
    img.controls = d::ImageControls {
        quality: levels[0],
        liveness: levels[1],
    };
    Ok((id, img))
}

/// Validates CancelSession.
pub fn cancel(req: &pb::CancelSessionRequest) -> Result<(String, String), Error> {
    let id = session_id("session_id", &req.session_id)?;
    let mut v = Vec::new();
    printable(&mut v, "reason", &req.reason, MAX_CANCEL_REASON);
    fail(v)?;
    Ok((id, req.reason.clone()))
}

/// Validates ListSessions.
pub fn list_request(req: &pb::ListSessionsRequest) -> Result<ListRequest, Error> {
    let mut v = Vec::new();
    let state = match pb::SessionState::try_from(req.state) {
        Ok(pb::SessionState::Unspecified) => None,
        Ok(state) => Some(domain_state(state)),
        Err(_) => {
            v.push(violation("state", "unknown session state"));
            None
        }
    };
    let vendor = match pb::Vendor::try_from(req.vendor) {
        Ok(pb::Vendor::Unspecified) => None,
        Ok(pb_vendor) => vendor(pb_vendor),
        Err(_) => {
            v.push(violation("vendor", "unknown vendor"));
            None
        }
    };
    printable(
        &mut v,
        "client_reference_id",
        &req.client_reference_id,
        MAX_REFERENCE,
    );
    let start = req
        .create_time_start
        .as_ref()
        .and_then(|t| timestamp_ms(&mut v, "create_time_start", t));
    let end = req
        .create_time_end
        .as_ref()
        .and_then(|t| timestamp_ms(&mut v, "create_time_end", t));
    if let (Some(start), Some(end)) = (start, end) {
        if end < start {
            v.push(violation(
                "create_time_end",
                "must not be before create_time_start",
            ));
        }
    }
    if req.page_size < 0 {
        v.push(violation("page_size", "must not be negative"));
    }
    if req.page_token.len() > 512 {
        v.push(violation("page_token", "not a page token of this service"));
    }
    fail(v)?;
    Ok(ListRequest {
        page_size: req.page_size,
        page_token: req.page_token.clone(),
        filter: ListFilter {
            state,
            vendor,
            client_reference_id: req.client_reference_id.clone(),
            created_from_ms: start,
            created_before_ms: end,
        },
    })
}

/// A timestamp as unix milliseconds, rounded up (sessions are created at whole milliseconds, so `created >= t` and
/// `created < t` hold exactly when they hold against the rounded-up value).
fn timestamp_ms(v: &mut Vec<Violation>, field: &str, t: &prost_types::Timestamp) -> Option<i64> {
    // 0001-01-01 to 9999-12-31, as google.protobuf.Timestamp allows.
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        v.push(violation(field, "not a valid timestamp"));
        return None;
    }
    let nanos = i64::from(t.nanos);
    Some(t.seconds * 1000 + (nanos + 999_999) / 1_000_000)
}

fn domain_state(s: pb::SessionState) -> d::State {
    match s {
        pb::SessionState::Unspecified | pb::SessionState::RequiresInput => d::State::RequiresInput,
        pb::SessionState::AwaitingUser => d::State::AwaitingUser,
        pb::SessionState::Processing => d::State::Processing,
        pb::SessionState::Verified => d::State::Verified,
        pb::SessionState::Failed => d::State::Failed,
        pb::SessionState::Expired => d::State::Expired,
        pb::SessionState::Canceled => d::State::Canceled,
    }
}

/// A webhook delivery as ListWebhookDeliveries shows it.
pub fn webhook_delivery(d: &crate::domain::webhooks::WebhookDelivery) -> pb::WebhookDelivery {
    use crate::domain::webhooks::DeliveryStatus as S;
    pb::WebhookDelivery {
        id: d.id.clone(),
        endpoint: d.endpoint.clone(),
        session_id: d.session_id.clone(),
        event_type: d.event_type.clone(),
        create_time: Some(ts(d.occurred_at_ms)),
        status: match d.status {
            S::Pending => pb::WebhookDeliveryStatus::Pending,
            S::Delivered => pb::WebhookDeliveryStatus::Delivered,
            S::Failed => pb::WebhookDeliveryStatus::Failed,
        } as i32,
        attempts: i32::try_from(d.attempts).unwrap_or(i32::MAX),
        last_response_code: i32::try_from(d.last_response_code).unwrap_or(0),
        last_error: d.last_error.clone(),
        last_attempt_time: d.last_attempt_at_ms.map(ts),
        next_attempt_time: (d.status == S::Pending).then(|| ts(d.next_attempt_at_ms)),
        deliver_time: d.delivered_at_ms.map(ts),
    }
}

/// Longest endpoint name a request may give (config names are at most 64 characters).
const MAX_ENDPOINT_NAME: usize = 64;

fn endpoint_name(value: &str) -> Result<String, Error> {
    if value.len() > MAX_ENDPOINT_NAME
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(
            "endpoint",
            "must be an endpoint name (letters, digits, '-', '_', '.'; at most 64)",
        ));
    }
    Ok(value.to_owned())
}

/// Validates ListWebhookDeliveries' filter.
pub fn delivery_filter(
    req: &pb::ListWebhookDeliveriesRequest,
) -> Result<crate::domain::webhooks::DeliveryFilter, Error> {
    use crate::domain::webhooks::DeliveryStatus as S;
    let session_id = if req.session_id.is_empty() {
        String::new()
    } else {
        session_id("session_id", &req.session_id)?
    };
    let status = match pb::WebhookDeliveryStatus::try_from(req.status) {
        Ok(pb::WebhookDeliveryStatus::Unspecified) => None,
        Ok(pb::WebhookDeliveryStatus::Pending) => Some(S::Pending),
        Ok(pb::WebhookDeliveryStatus::Delivered) => Some(S::Delivered),
        Ok(pb::WebhookDeliveryStatus::Failed) => Some(S::Failed),
        Err(_) => return Err(Error::invalid("status", "is not a WebhookDeliveryStatus")),
    };
    Ok(crate::domain::webhooks::DeliveryFilter {
        session_id,
        endpoint: endpoint_name(&req.endpoint)?,
        status,
    })
}

/// Validates RedeliverWebhook: the event id (`msg_` and 32 hex digits) and the endpoint name.
pub fn redeliver_request(req: &pb::RedeliverWebhookRequest) -> Result<(String, String), Error> {
    let hex = req.id.strip_prefix("msg_").unwrap_or("");
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            "id",
            "must be a webhook-id (msg_ and 32 hex digits)",
        ));
    }
    Ok((req.id.clone(), endpoint_name(&req.endpoint)?))
}

/// A session as a webhook body carries it: as GetResult shows it (personal data masked), without the vendor's
/// free-text messages (which may quote what the person typed or the vendor read).
pub fn webhook_session(s: &d::Session) -> pb::Session {
    let mut out = session(s);
    if let Some(f) = out.failure.as_mut() {
        f.vendor_message.clear();
    }
    if let Some(e) = out.last_attempt_error.as_mut() {
        e.vendor_message.clear();
    }
    out
}

/// A session as ListSessions shows it: no personal data and no outcome detail. It has id, vendor, state,
/// required inputs, times, client reference, metadata, the failure's code, version, target false accept rate,
/// request id and live mode; never the identity (not even masked), the user URL, the last attempt error, the
/// cancel reason or the vendor's failure code and message.
pub fn listed_session(s: &d::Session) -> pb::Session {
    let full = session(s);
    pb::Session {
        id: full.id,
        vendor: full.vendor,
        state: full.state,
        required_inputs: full.required_inputs,
        create_time: full.create_time,
        update_time: full.update_time,
        expire_time: full.expire_time,
        client_reference_id: full.client_reference_id,
        metadata: full.metadata,
        failure: full.failure.map(|f| pb::Failure {
            code: f.code,
            ..Default::default()
        }),
        version: full.version,
        target_false_accept_rate: full.target_false_accept_rate,
        request_id: full.request_id,
        live_mode: full.live_mode,
        ..Default::default()
    }
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn pb_state(s: d::State) -> pb::SessionState {
    match s {
        d::State::RequiresInput => pb::SessionState::RequiresInput,
        d::State::AwaitingUser => pb::SessionState::AwaitingUser,
        d::State::Processing => pb::SessionState::Processing,
        d::State::Verified => pb::SessionState::Verified,
        d::State::Failed => pb::SessionState::Failed,
        d::State::Expired => pb::SessionState::Expired,
        d::State::Canceled => pb::SessionState::Canceled,
    }
}

/// The proto enum of a vendor.
pub fn pb_vendor(v: d::Vendor) -> pb::Vendor {
    match v {
        d::Vendor::Baidu => pb::Vendor::Baidu,
        d::Vendor::Megvii => pb::Vendor::Megvii,
        d::Vendor::Juhe => pb::Vendor::Juhe,
    }
}

fn pb_id_type(t: IdType) -> pb::IdType {
    match t {
        IdType::MainlandResidentIdCard => pb::IdType::MainlandResidentIdCard,
        IdType::HmtResidencePermit => pb::IdType::HmtResidencePermit,
    }
}

fn pb_failure_code(c: d::FailureCode) -> pb::FailureCode {
    use d::FailureCode as F;
    match c {
        F::FaceMismatch => pb::FailureCode::FaceMismatch,
        F::LivenessFailed => pb::FailureCode::LivenessFailed,
        F::IdNameMismatch => pb::FailureCode::IdNameMismatch,
        F::NoFaceFound => pb::FailureCode::NoFaceFound,
        F::IdPhotoUnavailable => pb::FailureCode::IdPhotoUnavailable,
        F::UserAbandoned => pb::FailureCode::UserAbandoned,
        F::UserTimeout => pb::FailureCode::UserTimeout,
        F::BrowserUnsupported => pb::FailureCode::BrowserUnsupported,
        F::IdNotFound => pb::FailureCode::IdNotFound,
        F::ScoreBelowThreshold => pb::FailureCode::ScoreBelowThreshold,
        F::VendorError => pb::FailureCode::VendorError,
    }
}

/// Domain session -> proto (personal data masked).
pub fn session(s: &d::Session) -> pb::Session {
    pb::Session {
        id: s.id.clone(),
        vendor: pb_vendor(s.vendor) as i32,
        state: pb_state(s.state) as i32,
        required_inputs: s
            .required_inputs
            .iter()
            .map(|r| match r {
                d::RequiredInput::Identity => pb::RequiredInput::Identity as i32,
                d::RequiredInput::ReferenceImage => pb::RequiredInput::ReferenceImage as i32,
                d::RequiredInput::ProbeImage => pb::RequiredInput::ProbeImage as i32,
            })
            .collect(),
        user_url: s.user_url.clone().unwrap_or_default(),
        user_url_expire_time: s.user_url_expires_at_ms.map(ts),
        create_time: Some(ts(s.created_at_ms)),
        update_time: Some(ts(s.updated_at_ms)),
        expire_time: (!s.state.is_final()).then(|| ts(s.expires_at_ms)),
        client_reference_id: s.client_reference_id.clone(),
        metadata: s.metadata.clone(),
        failure: s.failure.as_ref().map(|f| pb::Failure {
            code: pb_failure_code(f.code) as i32,
            vendor_code: f.vendor_code.clone(),
            vendor_message: f.vendor_message.clone(),
        }),
        last_attempt_error: s.last_attempt_error.as_ref().map(|e| pb::AttemptError {
            reason: e.reason.clone(),
            vendor_code: e.vendor_code.clone(),
            vendor_message: e.vendor_message.clone(),
            possibly_billed: e.possibly_billed,
        }),
        identity: s.identity_masked.as_ref().map(|m| pb::MaskedIdentity {
            name_masked: m.name_masked.clone(),
            id_number_masked: m.id_number_masked.clone(),
            id_type: pb_id_type(m.id_type) as i32,
        }),
        version: s.version,
        target_false_accept_rate: s.target_false_accept_rate,
        request_id: s.request_id.clone(),
        cancel_reason: s.cancel_reason.clone().unwrap_or_default(),
        live_mode: s.live_mode,
        redaction: s.redaction.map(|r| pb::Redaction {
            state: pb::RedactionState::Redacted as i32,
            redact_time: Some(ts(r.redacted_at_ms)),
        }),
        consent: s.consent.as_ref().map(|c| pb::Consent {
            granted_time: Some(ts(c.granted_at_ms)),
            notice_version: c.notice_version.clone(),
            method: match c.method {
                d::ConsentMethod::Checkbox => pb::ConsentMethod::Checkbox,
                d::ConsentMethod::Button => pb::ConsentMethod::Button,
                d::ConsentMethod::Signature => pb::ConsentMethod::Signature,
                d::ConsentMethod::Other => pb::ConsentMethod::Other,
            } as i32,
        }),
        routing: s.route.as_ref().map(routing),
    }
}

fn routing(r: &d::Route) -> pb::Routing {
    pb::Routing {
        candidates: r.order.iter().map(|v| pb_vendor(*v) as i32).collect(),
        failovers: r
            .attempts
            .iter()
            .map(|a| pb::VendorAttempt {
                vendor: pb_vendor(a.vendor) as i32,
                reason: a.reason.clone(),
                fail_time: Some(ts(a.at_ms)),
            })
            .collect(),
    }
}

fn pb_identity_document(doc: &d::IdentityDocument) -> pb::IdentityDocument {
    pb::IdentityDocument {
        name: doc.name.clone(),
        id_number: doc.id_number.clone(),
        id_type: doc
            .id_type
            .map(pb_id_type)
            .unwrap_or(pb::IdType::Unspecified) as i32,
        address: doc.address.clone(),
        birth_date: doc.birth_date.clone(),
        gender: doc.gender.clone(),
        ethnicity: doc.ethnicity.clone(),
        issued_by: doc.issued_by.clone(),
        valid_period: doc.valid_period.clone(),
    }
}

fn pb_baidu(b: &d::BaiduDetail, media_note: &str) -> pb::BaiduDetail {
    let deciding = b
        .attempts
        .iter()
        .find(|a| a.passed)
        .or_else(|| b.attempts.last());
    let clamp = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    pb::BaiduDetail {
        verify_token: b.verify_token.clone(),
        plan: b.plan.clone(),
        plan_id: b.plan_id.clone(),
        verify_count: clamp(b.verify_count),
        risk_level: deciding.map(|a| a.risk_level.clone()).unwrap_or_default(),
        risk_tags: deciding
            .map(|a| {
                a.risk_tag
                    .split([',', '|'])
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        ocr_charge_count: clamp(b.ocr_charge_count),
        match_charge_count: clamp(b.match_charge_count),
        verify_charge_count: clamp(b.verify_charge_count),
        attempts: b
            .attempts
            .iter()
            .map(|a| pb::BaiduAttempt {
                order: clamp(a.order),
                passed: a.passed,
                code: a.code.clone(),
                message: a.message.clone(),
                verify_time: a.verify_time_ms.map(ts),
                charged: a.charged,
                charge_type: a.charge_type.clone(),
                charge_time: a.charge_time_ms.map(ts),
                ocr_charged: a.ocr_charged,
                ocr_charge_time: a.ocr_charge_time_ms.map(ts),
                ocr_count: clamp(a.ocr_count),
                score: a.score,
                threshold: a.threshold,
                liveness_score: a.liveness_score,
                spoofing_score: a.spoofing_score,
                risk_level: a.risk_level.clone(),
                risk_tag: a.risk_tag.clone(),
                is_demote: a.is_demote,
                verify_log_id: a.verify_log_id.clone(),
            })
            .collect(),
        is_demote: b.is_demote,
        api_stats: b
            .api_stats
            .iter()
            .map(|st| pb::BaiduApiStat {
                api: st.api.clone(),
                error_code: st.error_code.clone(),
                count: st.count,
            })
            .collect(),
        media_note: media_note.to_owned(),
        plan_needs_identity: b.plan_needs_identity,
        plan_needs_reference: b.plan_needs_reference,
    }
}

fn pb_thresholds(list: &[d::ScoreThreshold]) -> Vec<pb::ScoreThreshold> {
    list.iter()
        .map(|t| pb::ScoreThreshold {
            false_accept_rate: t.false_accept_rate,
            threshold: t.threshold,
        })
        .collect()
}

fn pb_megvii(m: &d::MegviiDetail) -> pb::MegviiDetail {
    let clamp = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    pb::MegviiDetail {
        biz_id: m.biz_id.clone(),
        status: m.status.clone(),
        fail_reason: m.fail_reason.clone(),
        verify_error_message: m.verify_error_message.clone(),
        multifaces_tag: m.multifaces_tag.clone(),
        from_callback: m.from_callback,
        comparisons: m
            .comparisons
            .iter()
            .map(|c| pb::MegviiComparison {
                source: c.source.clone(),
                confidence: c.confidence,
                thresholds: pb_thresholds(&c.thresholds),
            })
            .collect(),
        id_exceptions: m.id_exceptions.clone().into_iter().collect(),
        liveness_result: m.liveness_result.clone(),
        liveness_procedure: m.liveness_procedure.clone(),
        liveness_details: m.liveness_details.clone().into_iter().collect(),
        face_genuineness: m
            .face_genuineness
            .iter()
            .map(|g| pb::MegviiGenuineness {
                check: g.check.clone(),
                confidence: g.confidence,
                threshold: g.threshold,
            })
            .collect(),
        will_results: m
            .will_results
            .iter()
            .map(|(result, error_message)| pb::MegviiWillResult {
                result: result.clone(),
                error_message: error_message.clone(),
            })
            .collect(),
        idcard_mode: m.idcard_mode.clone(),
        idcard_front_legality: m.idcard_front_legality.clone().into_iter().collect(),
        idcard_back_legality: m.idcard_back_legality.clone().into_iter().collect(),
        idcard_front_upload_times: clamp(m.idcard_front_upload_times),
        idcard_back_upload_times: clamp(m.idcard_back_upload_times),
        biz_no: m.biz_no.clone(),
        biz_extra_data: m.biz_extra_data.clone(),
        verify_time: m.verify_time_ms.map(ts),
    }
}

/// Domain outcome -> proto. Stored identity fields are masked; `extras` (fetched on request, never stored) adds
/// the unmasked identity, the face image and media.
pub fn outcome(s: &d::Session, extras: &d::ResultExtras) -> pb::Outcome {
    let o = &s.outcome;
    pb::Outcome {
        face_match: o.face_match.as_ref().map(|f| pb::FaceMatch {
            score: f.score,
            threshold: f.threshold,
            threshold_false_accept_rate: f.threshold_false_accept_rate,
            thresholds: pb_thresholds(&f.thresholds),
            passed: f.passed,
            source: f.source.clone(),
        }),
        liveness: o.liveness.as_ref().map(|l| pb::Liveness {
            passed: l.passed,
            liveness_score: l.liveness_score,
            spoofing_score: l.spoofing_score,
            procedure: l.procedure.clone(),
        }),
        identity_document: extras
            .identity_document
            .as_ref()
            .or(o.identity_document.as_ref())
            .map(pb_identity_document),
        billing: o
            .billing
            .iter()
            .map(|b| pb::BillingRecord {
                vendor: pb_vendor(b.vendor) as i32,
                item: b.item.clone(),
                billed: b.billed,
                time: (b.at_ms > 0).then(|| ts(b.at_ms)),
                vendor_reference: b.vendor_reference.clone(),
            })
            .collect(),
        face_image: extras.face_image.clone().unwrap_or_default(),
        media: extras
            .media
            .iter()
            .map(|m| pb::MediaLink {
                kind: m.kind.clone(),
                url: m.url.clone(),
            })
            .collect(),
        vendor_detail: o.vendor_detail.as_ref().map(|vd| match vd {
            d::VendorDetail::Juhe(j) => pb::outcome::VendorDetail::Juhe(pb::JuheDetail {
                res: j.res,
                score: j.score.clone(),
                code: j.code.clone(),
                desc: j.desc.clone(),
                message: j.message.clone(),
                order_id: j.order_id.clone(),
                encrypted: j.encrypted,
            }),
            d::VendorDetail::Baidu(b) => {
                pb::outcome::VendorDetail::Baidu(pb_baidu(b, &extras.media_note))
            }
            d::VendorDetail::Megvii(m) => pb::outcome::VendorDetail::Megvii(pb_megvii(m)),
        }),
    }
}

fn duration_ms(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored session event as sent.
pub fn session_event(e: &crate::domain::events::StoredEvent) -> pb::SessionEvent {
    use crate::domain::events::EventDetail as E;
    use pb::session_event::Detail;
    let detail = match &e.event.detail {
        E::StateChanged {
            from,
            to,
            failure_code,
            reason,
        } => Detail::StateChanged(pb::StateChangedEvent {
            from: from.map_or(pb::SessionState::Unspecified, pb_state) as i32,
            to: pb_state(*to) as i32,
            failure_code: failure_code.map_or(pb::FailureCode::Unspecified, pb_failure_code) as i32,
            reason: reason.clone(),
        }),
        E::VendorCall {
            vendor,
            endpoint,
            outcome,
            billed,
            possibly_billed,
            latency_ms,
            error_reason,
            vendor_code,
        } => Detail::VendorCall(pb::VendorCallEvent {
            vendor: pb_vendor(*vendor) as i32,
            endpoint: endpoint.clone(),
            outcome: outcome.clone(),
            billed: *billed,
            possibly_billed: *possibly_billed,
            latency: Some(duration_ms(*latency_ms)),
            error_reason: error_reason.clone(),
            vendor_code: vendor_code.clone(),
        }),
        E::Callback {
            vendor,
            accepted,
            rejection_reason,
            source,
        } => Detail::Callback(pb::CallbackEvent {
            vendor: pb_vendor(*vendor) as i32,
            accepted: *accepted,
            rejection_reason: rejection_reason.clone(),
            source: source.clone(),
        }),
        E::UnmaskedRead {
            caller_id,
            tenant,
            kinds,
        } => Detail::UnmaskedRead(pb::UnmaskedReadEvent {
            caller_id: caller_id.clone(),
            tenant: tenant.clone(),
            kinds: kinds.clone(),
        }),
        E::Redacted { caller_id } => Detail::Redacted(pb::RedactedEvent {
            caller_id: caller_id.clone(),
        }),
    };
    pb::SessionEvent {
        sequence: e.sequence,
        time: Some(ts(e.event.at_ms)),
        detail: Some(detail),
    }
}

/// A session's event counts as sent.
pub fn events_summary(s: &crate::domain::events::EventsSummary) -> pb::SessionEventsSummary {
    pb::SessionEventsSummary {
        events: count(s.events),
        vendor_calls: count(s.vendor_calls),
        billed_calls: count(s.billed_calls),
        possibly_billed_calls: count(s.possibly_billed_calls),
        callbacks_accepted: count(s.callbacks_accepted),
        callbacks_rejected: count(s.callbacks_rejected),
        unmasked_reads: count(s.unmasked_reads),
        last_event_time: s.last_event_at_ms.map(ts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked() {
        assert!(session_id("f", "ses_0123456789abcdef0123456789abcdef").is_ok());
        assert!(session_id("f", "").is_err());
        assert!(session_id("f", "ses_0123456789ABCDEF0123456789abcdef").is_err());
        assert!(session_id("f", "ses_ü123456789abcdef0123456789abcde").is_err());
    }

    #[test]
    fn start_request_collects_all_violations_without_echoing_values() {
        let req = pb::StartSessionRequest {
            request_id: "bad id!".into(),
            // Not a Vendor value (0, VENDOR_UNSPECIFIED, routes).
            vendor: 42,
            identity: Some(pb::Identity {
                name: "A\u{0}B".into(),
                id_number: "110101190001019010".into(),
                id_type: 0,
            }),
            images: vec![pb::FaceImage {
                data: b"GIF89a-not-allowed".to_vec(),
                role: 0,
            }],
            target_false_accept_rate: 2.0,
            ..Default::default()
        };
        let Err(Error::InvalidArgument(v)) = start_request(&req) else {
            panic!("expected violations");
        };
        let fields: Vec<_> = v.iter().map(|x| x.field.as_str()).collect();
        for f in [
            "request_id",
            "vendor",
            "identity.name",
            "identity.id_number",
            "images[0].data",
            "target_false_accept_rate",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        for x in &v {
            assert!(!x.description.contains("110101190001019010"));
        }
    }

    #[test]
    fn an_unspecified_vendor_routes_and_options_keep_it_to_their_vendor() {
        let req = pb::StartSessionRequest {
            request_id: "route-1".into(),
            vendor: pb::Vendor::Unspecified as i32,
            ..Default::default()
        };
        let routed = start_request(&req).map(|r| r.vendor);
        assert!(matches!(routed, Ok(None)));
        let with_options = pb::StartSessionRequest {
            vendor_options: Some(pb::start_session_request::VendorOptions::Baidu(
                pb::BaiduOptions { plan: "kyc".into() },
            )),
            ..req.clone()
        };
        assert!(matches!(
            start_request(&with_options).map(|r| r.options),
            Ok(RequestedOptions::Baidu { plan }) if plan == "kyc"
        ));
        let mismatched = pb::StartSessionRequest {
            vendor: pb::Vendor::Juhe as i32,
            ..with_options
        };
        assert!(matches!(
            start_request(&mismatched),
            Err(Error::InvalidArgument(v)) if v.iter().any(|x| x.field == "vendor_options")
        ));
    }

    #[test]
    fn timestamps_split_ms() {
        let t = ts(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
    }
}
