//! The sandbox H5 page (`page.html`): its form, rendering, error and message pages, and media responses.

use super::*;
use crate::http::page::page;

pub(super) const PAGE_TEMPLATE: &str = include_str!("page.html");

// Page rendering
// ---------------------------------------------------------------------------------------------------------------

/// The page's form fields; first occurrence wins, absent = "".
#[derive(Default)]
pub(super) struct FormFields {
    pub(super) token: String,
    pub(super) outcome: String,
    pub(super) success_url: String,
    pub(super) failed_url: String,
    pub(super) id_name: String,
    pub(super) id_no: String,
}

impl FormFields {
    pub(super) fn parse(body: &[u8]) -> Self {
        let mut out = FormFields::default();
        let mut seen = [false; 6];
        for (name, value) in form_urlencoded::parse(body) {
            let (slot, index) = match name.as_ref() {
                "token" => (&mut out.token, 0),
                "outcome" => (&mut out.outcome, 1),
                "successUrl" => (&mut out.success_url, 2),
                "failedUrl" => (&mut out.failed_url, 3),
                "id_name" => (&mut out.id_name, 4),
                "id_no" => (&mut out.id_no, 5),
                _ => continue,
            };
            if let Some(flag) = seen.get_mut(index) {
                if !*flag {
                    *flag = true;
                    *slot = value.into_owned();
                }
            }
        }
        out
    }
}

pub(super) fn render_page(
    token: &str,
    session: &Session,
    success_url: Option<&str>,
    failed_url: Option<&str>,
    notice: Option<Bilingual>,
) -> String {
    let plan = &session.plan;
    let compare_source = if plan.needs_reference {
        Bilingual::new("自建人脸库比对", "(reference image uploaded)")
    } else {
        Bilingual::new("权威数据源比对", "(authority compare)")
    }
    .inline();
    let identity = match (&session.identity, plan.needs_identity) {
        (Some(id), true) => format!(
            "指定用户身份核验: {} / {} (certificate_type {})",
            esc(&mask_name(&id.name)),
            esc(&mask_id_number(&id.number)),
            id.certificate_type
        ),
        (Some(id), false) => format!(
            "已上报 {} / {}; {}",
            esc(&mask_name(&id.name)),
            esc(&mask_id_number(&id.number)),
            Bilingual::new(
                "也可在下方重新输入",
                "(submitted; you may enter another below)"
            )
            .inline()
        ),
        (None, _) => Bilingual::new(
            "由用户在本页输入姓名和身份证号",
            "(the user enters name and ID number below)",
        )
        .inline(),
    };
    let identity_inputs = if plan.needs_identity {
        String::new()
    } else {
        concat!(
            "  <label for=\"id_name_input\">姓名 <span lang=\"en\">(id_name)</span></label>\n",
            "  <input type=\"text\" id=\"id_name_input\" name=\"id_name\" autocomplete=\"off\">\n",
            "  <label for=\"id_no_input\">身份证号 <span lang=\"en\">(id_no)</span></label>\n",
            "  <input type=\"text\" id=\"id_no_input\" name=\"id_no\" autocomplete=\"off\" maxlength=\"18\">\n",
        )
        .to_owned()
    };
    let on_failure = if plan.fail_ends_url {
        Bilingual::new("URL失效", "(the link is used up)")
    } else {
        Bilingual::new("URL不失效, 可重试", "(the user may retry)")
    }
    .inline();
    let notice = notice
        .map(|n| {
            format!(
                "<div class=\"notice\" id=\"error\">\n{}</div>",
                n.paragraphs("", "")
            )
        })
        .unwrap_or_default();
    fill_template(
        PAGE_TEMPLATE,
        &[
            ("plan_id", esc(&plan.plan_id)),
            ("compare_source", compare_source),
            ("identity", identity),
            ("on_failure", on_failure),
            ("threshold", esc(&plan.threshold.to_string())),
            ("attempts", session.attempts.len().to_string()),
            ("notice", notice),
            ("token", esc(token)),
            ("success_url", esc(success_url.unwrap_or_default())),
            ("failed_url", esc(failed_url.unwrap_or_default())),
            ("identity_inputs", identity_inputs),
        ],
    )
}

/// The heading of a refused page request.
pub(super) const BAD_REQUEST: Bilingual = Bilingual::new("无效的请求", "Bad request");

pub(super) fn error_page(error: PageError) -> Response {
    message_page(
        error.status(),
        "error",
        Bilingual::new("无法进行认证", "Cannot verify"),
        &error.message().paragraphs("", ""),
        None,
    )
}

/// A small page with one `<div id="{element_id}">` (error or result): a heading and `body` (HTML, both languages).
pub(super) fn message_page(
    status: StatusCode,
    element_id: &'static str,
    heading: Bilingual,
    body: &str,
    outcome: Option<PageOutcome>,
) -> Response {
    let outcome_attr = outcome
        .map(|o| format!(" data-outcome=\"{}\"", o.as_str()))
        .unwrap_or_default();
    let content = format!(
        "<div id=\"{element_id}\"{outcome_attr}>\n<h2>{}</h2>\n{body}</div>\n",
        heading.inline()
    );
    html_response(status, PAGE_CSP, page(PAGE_TITLE, &content))
}

pub(super) fn binary_response(mime: &'static str, bytes: &'static [u8]) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        bytes,
    )
        .into_response()
}

/// Keeps the first character of a name and masks the rest.
pub(super) fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
