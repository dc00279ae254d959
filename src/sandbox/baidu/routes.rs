//! The faceprint API: reply envelopes, the endpoints' request checks and answers, and the axum handlers.

use super::*;

// ---------------------------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------------------------

/// One faceprint answer.
#[derive(Debug)]
pub(super) enum Reply {
    Ok(Value),
    Fail { code: i64, message: String },
    Gateway { code: i64, message: &'static str },
}

#[derive(Serialize)]
pub(super) struct OkEnvelope<'a> {
    pub(super) success: bool,
    pub(super) result: &'a Value,
    pub(super) log_id: String,
}

#[derive(Serialize)]
pub(super) struct ErrEnvelope<'a> {
    pub(super) success: bool,
    pub(super) result: Option<()>,
    pub(super) code: i64,
    pub(super) message: &'a str,
    pub(super) log_id: String,
}

#[derive(Serialize)]
pub(super) struct GatewayError<'a> {
    pub(super) error_code: i64,
    pub(super) error_msg: &'a str,
}

impl Reply {
    pub(super) fn fail(code: i64, message: impl Into<String>) -> Self {
        Reply::Fail {
            code,
            message: message.into(),
        }
    }

    pub(super) fn token_invalid() -> Self {
        Reply::fail(CODE_TOKEN_INVALID, MSG_TOKEN_INVALID)
    }

    pub(super) fn not_started() -> Self {
        Reply::fail(CODE_NOT_STARTED, MSG_NOT_STARTED)
    }

    pub(super) fn not_json() -> Self {
        Reply::fail(CODE_NOT_JSON, MSG_NOT_JSON)
    }

    pub(super) fn missing(name: &str) -> Self {
        Reply::fail(CODE_PARAM_MISSING, format!("param[{name}] is null"))
    }

    pub(super) fn invalid(name: &str) -> Self {
        Reply::fail(CODE_PARAM_INVALID, format!("param[{name}] format error"))
    }

    pub(super) fn outcome(outcome: PageOutcome) -> Self {
        match outcome.failure() {
            Some((code, message)) => Reply::fail(code, message),
            None => Reply::fail(CODE_SERVICE_ERROR, MSG_SERVICE_ERROR),
        }
    }

    pub(super) fn to_json(&self) -> String {
        let encoded = match self {
            Reply::Ok(result) => serde_json::to_string(&OkEnvelope {
                success: true,
                result,
                log_id: new_log_id(),
            }),
            Reply::Fail { code, message } => serde_json::to_string(&ErrEnvelope {
                success: false,
                result: None,
                code: *code,
                message,
                log_id: new_log_id(),
            }),
            Reply::Gateway { code, message } => serde_json::to_string(&GatewayError {
                error_code: *code,
                error_msg: message,
            }),
        };
        encoded.unwrap_or_else(|_| r#"{"error_code":1,"error_msg":"Unknown error"}"#.to_owned())
    }

    pub(super) fn into_response_with(self, status: StatusCode) -> Response {
        json_response_ct(status, self.to_json())
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        self.into_response_with(StatusCode::OK)
    }
}

/// The faceprint paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    Generate,
    IdcardSubmit,
    UploadMatchImage,
    Simple,
    Detail,
    Stat,
    Media,
    GetAll,
}

impl Api {
    const ALL: [Api; 8] = [
        Api::Generate,
        Api::IdcardSubmit,
        Api::UploadMatchImage,
        Api::Simple,
        Api::Detail,
        Api::Stat,
        Api::Media,
        Api::GetAll,
    ];

    pub(super) fn path(self) -> &'static str {
        match self {
            Api::Generate => "verifyToken/generate",
            Api::IdcardSubmit => "idcard/submit",
            Api::UploadMatchImage => "uploadMatchImage",
            Api::Simple => "result/simple",
            Api::Detail => "result/detail",
            Api::Stat => "result/stat",
            Api::Media => "result/media/query",
            Api::GetAll => "result/getall",
        }
    }

    pub(super) fn from_path(path: &str) -> Option<Self> {
        let path = path.trim_start_matches('/');
        Self::ALL.into_iter().find(|a| a.path() == path)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Faceprint endpoints
// ---------------------------------------------------------------------------------------------------------------

/// A required string field: missing / null / empty -> 222001, other types -> 216100.
pub(super) fn req_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, Reply> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(Reply::missing(name)),
        Some(Value::String(s)) if s.is_empty() => Err(Reply::missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Reply::invalid(name)),
    }
}

/// An optional string field (null or empty = absent); other types -> 216100 naming `shown`.
pub(super) fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    shown: &str,
) -> Result<Option<&'a str>, Reply> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reply::invalid(shown)),
    }
}

pub(super) fn usable_session<'a>(
    inner: &'a mut Inner,
    token: &str,
    now: i64,
) -> Result<&'a mut Session, Reply> {
    match inner.sessions.get_mut(token) {
        Some(s) if s.usable(now) => Ok(s),
        _ => Err(Reply::token_invalid()),
    }
}

pub(super) fn query_session<'a>(
    inner: &'a Inner,
    token: &str,
    now: i64,
    retention_ms: i64,
) -> Result<&'a Session, Reply> {
    match inner.sessions.get(token) {
        Some(s) if s.queryable(now, retention_ms) => Ok(s),
        _ => Err(Reply::token_invalid()),
    }
}

/// The session if its last attempt passed and it is within retention; else the error detail would answer.
pub(super) fn passed_session<'a>(
    inner: &'a Inner,
    token: &str,
    now: i64,
    retention_ms: i64,
) -> Result<&'a Session, Reply> {
    let session = query_session(inner, token, now, retention_ms)?;
    let last = session.attempts.last().ok_or_else(Reply::not_started)?;
    if last.outcome == PageOutcome::Pass {
        Ok(session)
    } else {
        Err(Reply::outcome(last.outcome))
    }
}

pub(super) fn face_image_session<'a>(
    inner: &'a Inner,
    token: &str,
    order: &str,
    now: i64,
) -> Result<&'a Session, Reply> {
    let session = query_session(inner, token, now, RESULT_RETENTION_MS)?;
    let order: usize = order.parse().map_err(|_| Reply::token_invalid())?;
    session
        .attempts
        .iter()
        .any(|a| a.order == order && a.outcome.captured())
        .then_some(session)
        .ok_or_else(Reply::token_invalid)
}

pub(super) fn idcard_submit(
    inner: &mut Inner,
    obj: &Map<String, Value>,
    now: i64,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let name = req_str(obj, "id_name")?;
    let number = req_str(obj, "id_no")?;
    let cert = match obj.get("certificate_type") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => 0,
            Some(4) => 4,
            _ => return Err(Reply::invalid("certificate_type")),
        },
        Some(_) => return Err(Reply::invalid("certificate_type")),
    };
    let identity = validate_identity(name, number, cert)?;
    let session = usable_session(inner, token, now)?;
    session.identity = Some(identity);
    Ok(json!(1))
}

/// Validates a name and an 18-character ID number (GB 11643 check character; type 4 needs 810000/820000/830000).
pub(super) fn validate_identity(
    name: &str,
    number: &str,
    certificate_type: u8,
) -> Result<Identity, Reply> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Reply::missing("id_name"));
    }
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Reply::invalid("id_name"));
    }
    let number = number.trim();
    if number.is_empty() {
        return Err(Reply::missing("id_no"));
    }
    let canonical = number.to_ascii_uppercase();
    let valid = canonical.len() == 18
        && canonical.is_ascii()
        && canonical
            .split_at_checked(17)
            .is_some_and(|(first17, last)| {
                gb11643_check_char(first17).is_some_and(|c| last.len() == 1 && last.starts_with(c))
            })
        && (certificate_type != 4 || is_hmt_prefix(&canonical));
    if !valid {
        return Err(Reply::invalid("id_no"));
    }
    Ok(Identity {
        name: name.to_owned(),
        number: canonical,
        certificate_type,
    })
}

pub(super) fn is_hmt_prefix(number: &str) -> bool {
    ["810000", "820000", "830000"]
        .iter()
        .any(|p| number.starts_with(p))
}

pub(super) fn upload_match_image(
    inner: &mut Inner,
    obj: &Map<String, Value>,
    now: i64,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let image = req_str(obj, "image")?;
    for control in ["quality_control", "liveness_control"] {
        if let Some(v) = opt_str(obj, control, control)? {
            if !matches!(v, "NONE" | "LOW" | "NORMAL" | "HIGH") {
                return Err(Reply::invalid(control));
            }
        }
    }
    check_match_image(image)?;
    let session = usable_session(inner, token, now)?;
    session.reference_uploaded = true;
    Ok(Value::Null)
}

/// uploadMatchImage's image rules: base64 text <= 10 MiB, standard base64 of a JPEG or PNG, at most 1920x1080
/// (either orientation) when the dimensions can be read.
pub(super) fn check_match_image(text: &str) -> Result<(), Reply> {
    if text.len() > MAX_IMAGE_BASE64_LEN {
        return Err(Reply::fail(CODE_IMAGE_SIZE, "image size error"));
    }
    let format_error = || Reply::fail(CODE_IMAGE_FORMAT, "image format error");
    let bytes = STANDARD
        .decode(text.as_bytes())
        .map_err(|_| format_error())?;
    let dimensions = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg_dimensions(&bytes)
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some(png_dimensions(&bytes).ok_or_else(format_error)?)
    } else {
        return Err(format_error());
    };
    if let Some((w, h)) = dimensions {
        if w == 0 || h == 0 {
            return Err(format_error());
        }
        if w.max(h) > MAX_LONG_SIDE || w.min(h) > MAX_SHORT_SIDE {
            return Err(Reply::fail(CODE_IMAGE_SIZE, "image size error"));
        }
    }
    Ok(())
}

/// Width and height from a PNG's IHDR chunk.
pub(super) fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

/// Width and height from a JPEG's first SOFn segment; `None` when there is none before SOS / the end.
pub(super) fn jpeg_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2usize;
    loop {
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        while *bytes.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *bytes.get(i)?;
        i += 1;
        match marker {
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]));
        if len < 2 {
            return None;
        }
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let h = u16::from_be_bytes([*bytes.get(i + 3)?, *bytes.get(i + 4)?]);
            let w = u16::from_be_bytes([*bytes.get(i + 5)?, *bytes.get(i + 6)?]);
            return Some((u32::from(w), u32::from(h)));
        }
        i += len;
    }
}

pub(super) fn result_simple(
    inner: &Inner,
    obj: &Map<String, Value>,
    now: i64,
    base: &str,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    passed_session(inner, token, now, RESULT_RETENTION_MS)?;
    Ok(json!({ "image": image_url(base, token) }))
}

pub(super) fn result_detail(
    inner: &Inner,
    obj: &Map<String, Value>,
    now: i64,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let session = passed_session(inner, token, now, RESULT_RETENTION_MS)?;
    let Some(last) = session.attempts.last() else {
        return Err(Reply::not_started());
    };
    let (name, number) = last
        .identity
        .as_ref()
        .map_or((String::new(), String::new()), |id| {
            (id.name.clone(), id.number.clone())
        });
    Ok(json!({
        "verify_result": {
            "score": last.score.unwrap_or(0.0),
            "liveness_score": PASS_LIVENESS_SCORE,
            "spoofing": 0.0,
        },
        "idcard_confirm": { "name": name, "idcard_number": number },
        "is_demote": false,
    }))
}

pub(super) fn result_stat(
    inner: &Inner,
    obj: &Map<String, Value>,
    now: i64,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let session = query_session(inner, token, now, RESULT_RETENTION_MS)?;
    let mut fin: BTreeMap<i64, u64> = BTreeMap::new();
    let mut verify: BTreeMap<i64, u64> = BTreeMap::new();
    let mut liveness: BTreeMap<i64, u64> = BTreeMap::new();
    for a in &session.attempts {
        *fin.entry(a.outcome.failure().map_or(0, |(c, _)| c))
            .or_default() += 1;
        match a.outcome {
            PageOutcome::Pass | PageOutcome::FaceMismatch => {
                *liveness.entry(0).or_default() += 1;
                *verify.entry(0).or_default() += 1;
            }
            PageOutcome::LivenessFailed => {
                *liveness.entry(CODE_LIVENESS_FAILED).or_default() += 1;
                *verify.entry(0).or_default() += 1;
            }
            PageOutcome::IdNameMismatch => {
                *liveness.entry(0).or_default() += 1;
                *verify.entry(CODE_ID_NAME_MISMATCH).or_default() += 1;
            }
            PageOutcome::Abandon => {}
        }
    }
    let entries = |counts: &BTreeMap<i64, u64>| -> Value {
        counts
            .iter()
            .map(|(code, count)| json!({ "error_code": code, "count": count }))
            .collect()
    };
    Ok(json!({
        "Verify_FIN": entries(&fin),
        "Sessioncode": [],
        "OCR": [],
        "verify": entries(&verify),
        "VideoLiveness": entries(&liveness),
        "Livenesscolorful": [],
        "VerifySec": [],
    }))
}

pub(super) fn result_media(
    inner: &Inner,
    obj: &Map<String, Value>,
    now: i64,
    base: &str,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    passed_session(inner, token, now, MEDIA_RETENTION_MS)?;
    let images: Vec<String> = (1..=4)
        .map(|n| format!("{base}/media/{token}-{n}.jpg"))
        .collect();
    Ok(json!({
        "processVideo": [format!("{base}/media/{token}.mp4")],
        "images": images,
        "extInfo": null,
    }))
}

pub(super) fn result_getall(
    inner: &Inner,
    obj: &Map<String, Value>,
    now: i64,
    base: &str,
) -> Result<Value, Reply> {
    let token = req_str(obj, "verify_token")?;
    let session = query_session(inner, token, now, RESULT_RETENTION_MS)?;
    let charged = session.attempts.iter().filter(|a| a.charged).count();
    let (match_count, verify_count) = if session.plan.needs_reference {
        (charged, 0)
    } else {
        (0, charged)
    };
    let attempts: Vec<Value> = session
        .attempts
        .iter()
        .map(|a| attempt_json(session, a, token, base))
        .collect();
    Ok(json!({
        "verify_count": session.attempts.len(),
        "ocr_charge_count": 0,
        "match_charge_count": match_count,
        "verify_charge_count": verify_count,
        "verify_result": attempts,
    }))
}

pub(super) fn attempt_json(session: &Session, a: &Attempt, token: &str, base: &str) -> Value {
    let (code, message) = match a.outcome.failure() {
        None => ("0".to_owned(), MSG_PASSED),
        Some((code, message)) => (code.to_string(), message),
    };
    let time = format_cst(a.at_ms);
    let face_image = if a.outcome.captured() {
        format!("{base}/media/{token}-face{}.jpg", a.order)
    } else {
        String::new()
    };
    let mut record = Map::new();
    record.insert("order".into(), json!(a.order));
    record.insert(
        "is_verify_passed".into(),
        json!(a.outcome == PageOutcome::Pass),
    );
    record.insert("code".into(), json!(code));
    record.insert("message".into(), json!(message));
    record.insert("verify_time".into(), json!(time));
    record.insert("is_charged".into(), json!(a.charged));
    record.insert(
        "charge_type".into(),
        json!(if a.charged { session.charge_type() } else { "" }),
    );
    record.insert(
        "charge_time".into(),
        json!(if a.charged { time.as_str() } else { "" }),
    );
    record.insert("is_ocr_charge".into(), json!(false));
    record.insert("ocr_charge_time".into(), json!(""));
    record.insert("ocr_count".into(), json!(0));
    record.insert(
        "verify_detail".into(),
        json!({
            "face_image": face_image,
            "verify_log_id": a.verify_log_id,
            "score": a.score,
            "threshold": session.plan.threshold,
            "liveness_score": 0,
            "spoofing_score": 0,
            "is_demote": false,
        }),
    );
    if let Some(id) = &a.identity {
        record.insert(
            "idcard_confirm".into(),
            json!({
                "name": id.name,
                "idcard_number": id.number,
                "idcard_type": id.certificate_type.to_string(),
            }),
        );
    }
    Value::Object(record)
}

// ---------------------------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------------------------

pub(super) async fn oauth_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.oauth(query.as_deref())
}

pub(super) async fn faceprint_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(api) = Api::from_path(&path) else {
        return Reply::Gateway {
            code: 3,
            message: "Unsupported openapi method",
        }
        .into_response();
    };
    let base = base_url(&headers, &uri);
    sim.faceprint(api, query.as_deref(), &headers, body, &base)
        .into_response()
}

pub(super) async fn page_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.page(query.as_deref())
}

/// `/face/print` -> `/face/print/` (relative, so it works under any mount point).
pub(super) async fn page_slash_handler(RawQuery(query): RawQuery) -> Response {
    let location = match query {
        Some(q) => format!("print/?{q}"),
        None => "print/".to_owned(),
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => error_page(PageError::TokenGone),
    }
}

pub(super) async fn submit_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => sim.submit(&body),
        Err(_) => message_page(
            StatusCode::BAD_REQUEST,
            "error",
            BAD_REQUEST,
            &Bilingual::new("无法读取表单", "Unreadable form.").paragraphs("", ""),
            None,
        ),
    }
}

pub(super) async fn image_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.image(query.as_deref())
}

pub(super) async fn media_handler(
    State(sim): State<Arc<BaiduSimulator>>,
    Path(file): Path<String>,
) -> Response {
    sim.media_file(&file)
}

// ---------------------------------------------------------------------------------------------------------------
