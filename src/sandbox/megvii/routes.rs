//! The HTTP API: get_token arguments (form and multipart) and their checks, and the axum handlers.

use super::*;

// ---------------------------------------------------------------------------------------------------------------
// get_token arguments
// ---------------------------------------------------------------------------------------------------------------

/// A request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Field {
    Text(String),
    File(Vec<u8>),
}

/// The request's fields by name (first occurrence wins).
#[derive(Debug, Default)]
pub(super) struct Fields(HashMap<String, Field>);

impl Fields {
    pub(super) fn from_request(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let mut fields = Fields::default();
        match mime.as_str() {
            "application/x-www-form-urlencoded" => {
                for (k, v) in form_urlencoded::parse(body) {
                    fields.insert(k.into_owned(), Field::Text(v.into_owned()));
                }
            }
            "multipart/form-data" => {
                let boundary =
                    multipart_boundary(content_type).ok_or_else(|| ApiError::bad("multipart"))?;
                for part in
                    parse_multipart(body, &boundary).map_err(|_| ApiError::bad("multipart"))?
                {
                    let field = if part.filename.is_some() {
                        Field::File(part.data)
                    } else {
                        match String::from_utf8(part.data) {
                            Ok(text) => Field::Text(text),
                            Err(_) => return Err(ApiError::bad(&part.name)),
                        }
                    };
                    fields.insert(part.name, field);
                }
            }
            _ => return Err(ApiError::bad("Content-Type")),
        }
        Ok(fields)
    }

    pub(super) fn insert(&mut self, name: String, field: Field) {
        self.0.entry(name).or_insert(field);
    }

    /// A text field; empty counts as absent.
    pub(super) fn optional(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(Field::Text(t)) if !t.is_empty() => Some(t),
            _ => None,
        }
    }

    pub(super) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.optional(name).ok_or_else(|| ApiError::missing(name))
    }

    /// A file part.
    pub(super) fn file(&self, name: &str) -> Option<&[u8]> {
        match self.0.get(name) {
            Some(Field::File(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// An optional field restricted to `allowed`.
    pub(super) fn one_of(&self, name: &str, allowed: &[&str]) -> Result<Option<&str>, ApiError> {
        match self.optional(name) {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v)),
            Some(_) => Err(ApiError::bad(name)),
        }
    }

    pub(super) fn flag(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.one_of(name, &["0", "1"])? == Some("1"))
    }
}

pub(super) fn validate_params(f: &Fields, enforce_notify_ports: bool) -> Result<Params, ApiError> {
    let return_url = f.required("return_url")?;
    if parse_http_url(return_url).is_none() {
        return Err(ApiError::bad("return_url"));
    }
    let notify_url = f.required("notify_url")?;
    let port = parse_http_url(notify_url).ok_or_else(|| ApiError::bad("notify_url"))?;
    if enforce_notify_ports && !NOTIFY_PORTS.contains(&port) {
        return Err(ApiError::bad("notify_url"));
    }
    let biz_no = f.required("biz_no")?;
    if biz_no.len() > MAX_BIZ_NO {
        return Err(ApiError::bad("biz_no"));
    }
    let comparison_type = match f.required("comparison_type")? {
        "0" => 0,
        "1" => 1,
        _ => return Err(ApiError::bad("comparison_type")),
    };
    let idcard_mode = match f.one_of("idcard_mode", &["0", "1", "2", "3", "4"])? {
        Some(m) => Some(m.parse::<u8>().map_err(|_| ApiError::bad("idcard_mode"))?),
        None if comparison_type == 1 => return Err(ApiError::missing("idcard_mode")),
        None => None,
    };
    let kyc_given = comparison_type == 1 && idcard_mode == Some(0);
    match f.optional("idcard_name") {
        None if kyc_given => return Err(ApiError::missing("idcard_name")),
        None => {}
        Some(name) => {
            let name = name.trim();
            if name.is_empty()
                || name.chars().count() > MAX_NAME_CHARS
                || name.chars().any(char::is_control)
            {
                return Err(ApiError::bad("idcard_name"));
            }
        }
    }
    match f.optional("idcard_number") {
        None if kyc_given => return Err(ApiError::missing("idcard_number")),
        None => {}
        Some(number) if !valid_id_number(number) => return Err(ApiError::bad("idcard_number")),
        Some(_) => {}
    }
    let mut refs = [false; 3];
    for (i, slot) in refs.iter_mut().enumerate() {
        let key = format!("image_ref{}", i + 1);
        if let Some(bytes) = f.file(&key) {
            if !is_jpeg_or_png(bytes) {
                return Err(ApiError::image(&key));
            }
            *slot = true;
        }
    }
    if comparison_type == 0 && !refs[0] {
        return Err(ApiError::missing("image_ref1"));
    }
    let procedure_type = f
        .one_of(
            "procedure_type",
            &["video", "selfie", "still", "flash", "will"],
        )?
        .map(str::to_owned);
    f.one_of("procedure_priority", &["video", "still", "keep"])?;
    f.one_of(
        "liveness_preferences",
        &[
            "none",
            "selfie_no_metadata_check",
            "video_strict",
            "still_strict",
        ],
    )?;
    let web_title = f.optional("web_title").map(str::to_owned);
    if web_title.as_ref().is_some_and(|t| t.len() > MAX_WEB_TITLE) {
        return Err(ApiError::bad("web_title"));
    }
    if f.optional("biz_extra_data")
        .is_some_and(|d| d.len() > MAX_BIZ_EXTRA_DATA)
    {
        return Err(ApiError::bad("biz_extra_data"));
    }
    let idcard_uneditable_field = f.optional("idcard_uneditable_field").map(str::to_owned);
    if let Some(list) = &idcard_uneditable_field {
        let ok = list.split(',').all(|item| {
            matches!(
                item.trim(),
                "idcard_name" | "idcard_number" | "idcard_valid_date" | "idcard_issued_by"
            )
        });
        if !ok {
            return Err(ApiError::bad("idcard_uneditable_field"));
        }
    }
    let get_fail_reason = f.flag("get_fail_reason")?;
    let return_multifaces_tag = f.flag("return_multifaces_tag")?;
    let action_get = f.one_of("action_http_method", &["GET", "POST"])? == Some("GET");
    if let Some(t) = f.optional("maximum_shooting_time") {
        let valid = t.len() <= 2
            && t.bytes().all(|b| b.is_ascii_digit())
            && t.parse::<u8>().is_ok_and(|n| (10..=60).contains(&n));
        if !valid {
            return Err(ApiError::bad("maximum_shooting_time"));
        }
    }
    for key in [
        "multi_oriented_detection",
        "fmp_mode",
        "get_shooting_error",
        "update_rtc",
    ] {
        f.flag(key)?;
    }
    f.one_of("encryption_type", &["0", "1", "2"])?;
    for key in ["scene_id", "uuid"] {
        if f.optional(key)
            .is_some_and(|v| v.len() > MAX_BIZ_NO || v.chars().any(char::is_control))
        {
            return Err(ApiError::bad(key));
        }
    }
    Ok(Params {
        return_url: return_url.to_owned(),
        notify_url: notify_url.to_owned(),
        comparison_type,
        idcard_mode,
        idcard_uneditable_field,
        refs,
        procedure_type,
        get_fail_reason,
        return_multifaces_tag,
        action_get,
        web_title,
    })
}

/// 18 characters, the last the GB 11643 check character of the first 17 (`x` accepted for `X`).
pub(super) fn valid_id_number(number: &str) -> bool {
    let upper = number.to_ascii_uppercase();
    upper.len() == 18
        && upper.is_ascii()
        && upper.split_at_checked(17).is_some_and(|(first17, last)| {
            gb11643_check_char(first17).is_some_and(|c| last.len() == 1 && last.starts_with(c))
        })
}

pub(super) fn is_jpeg_or_png(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
        || bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A])
}

/// The port of an absolute http(s) URL (explicit, else 80/443); `None` when it is not one, or has whitespace or
/// control characters.
pub(super) fn parse_http_url(url: &str) -> Option<u16> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        return None;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    match port {
        None => Some(default_port),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().filter(|&n| n != 0)
        }
        Some(_) => None,
    }
}

/// Appends `biz_id` to a return URL as the document's §1.2 shows: `?biz_id=` without a query, `&biz_id=` after
/// one, and before a `#fragment`.
pub(super) fn append_biz_id(url: &str, biz_id: &str) -> String {
    let (base, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let encoded: String = form_urlencoded::byte_serialize(biz_id.as_bytes()).collect();
    format!("{base}{separator}biz_id={encoded}{fragment}")
}

// ---------------------------------------------------------------------------------------------------------------
// multipart/form-data
// ---------------------------------------------------------------------------------------------------------------

/// One multipart part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) name: String,
    pub(super) filename: Option<String>,
    pub(super) data: Vec<u8>,
}

/// The `boundary` parameter of a multipart Content-Type (quoted or not, 1-70 characters).
pub(super) fn multipart_boundary(content_type: &str) -> Option<String> {
    let (_, params) = content_type.split_once(';')?;
    let boundary = parse_params(params)?
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v)?;
    (!boundary.is_empty()
        && boundary.len() <= 70
        && boundary.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && !boundary.ends_with(' '))
    .then_some(boundary)
}

/// A strict multipart/form-data parser: the body starts with the first delimiter, every part has a
/// `Content-Disposition: form-data; name=".."` header, and the close delimiter ends the body (optionally followed
/// by CRLF).
pub(super) fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let mut rest = body
        .strip_prefix(delimiter.as_bytes())
        .ok_or("body does not start with the boundary")?;
    let mut parts = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(b"--") {
            return if after.is_empty() || after == b"\r\n" {
                Ok(parts)
            } else {
                Err("data after the close delimiter".to_owned())
            };
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("delimiter not followed by CRLF")?;
        if parts.len() >= MAX_MULTIPART_PARTS {
            return Err("too many parts".to_owned());
        }
        let header_end = find(rest, b"\r\n\r\n")
            .filter(|&i| i <= MAX_PART_HEADER)
            .ok_or("part headers not terminated")?;
        let headers = std::str::from_utf8(rest.get(..header_end).ok_or("headers")?)
            .map_err(|_| "part headers are not UTF-8")?;
        rest = rest.get(header_end + 4..).ok_or("headers")?;
        let data_end = find(rest, next_delimiter.as_bytes()).ok_or("part not terminated")?;
        let data = rest.get(..data_end).ok_or("data")?.to_vec();
        rest = rest
            .get(data_end + next_delimiter.len()..)
            .ok_or("delimiter")?;

        let mut disposition = None;
        for line in headers.split("\r\n") {
            let (name, value) = line.split_once(':').ok_or("malformed part header")?;
            if name.trim().eq_ignore_ascii_case("content-disposition") {
                if disposition.is_some() {
                    return Err("repeated Content-Disposition".to_owned());
                }
                disposition = Some(value.trim());
            }
        }
        let disposition = disposition.ok_or("part without Content-Disposition")?;
        let (kind, params) = disposition.split_once(';').unwrap_or((disposition, ""));
        if !kind.trim().eq_ignore_ascii_case("form-data") {
            return Err("part is not form-data".to_owned());
        }
        let params = parse_params(params).ok_or("malformed Content-Disposition")?;
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        let name = get("name")
            .filter(|n| !n.is_empty())
            .ok_or("part without a name")?;
        parts.push(Part {
            name,
            filename: get("filename"),
            data,
        });
    }
}

/// Parses `; k=v; k="quoted \" value"` header parameters (the text after the first ';').
pub(super) fn parse_params(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars
            .next_if(|c| *c == ' ' || *c == '\t' || *c == ';')
            .is_some()
        {}
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ';') {
            key.push(c);
        }
        let key = key.trim().to_owned();
        if key.is_empty() || chars.next() != Some('=') {
            return None;
        }
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            if !matches!(chars.peek(), None | Some(';')) {
                return None;
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ';') {
                value.push(c);
            }
            value = value.trim().to_owned();
        }
        out.push((key, value));
    }
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------------------------

pub(super) async fn get_token_handler(
    State(sim): State<Arc<MegviiSimulator>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    sim.get_token(&headers, body)
}

pub(super) async fn page_handler(
    State(sim): State<Arc<MegviiSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.page(query.as_deref())
}

pub(super) async fn do_handler(
    State(sim): State<Arc<MegviiSimulator>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(body) => sim.submit(&body),
        Err(_) => error_page(PageError::BadOutcome),
    }
}

pub(super) async fn get_result_handler(
    State(sim): State<Arc<MegviiSimulator>>,
    RawQuery(query): RawQuery,
) -> Response {
    sim.get_result(query.as_deref())
}

pub(super) async fn api_not_found_handler(State(sim): State<Arc<MegviiSimulator>>) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "API_NOT_FOUND")
        .into_response(sim.clock.now_ms(), Instant::now())
}

// ---------------------------------------------------------------------------------------------------------------
