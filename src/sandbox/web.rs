//! Small helpers shared by the simulators' HTTP answers and sandbox pages.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";

pub use crate::http::page::{esc, Bilingual};

/// Replaces `{{name}}` placeholders in one pass (inserted values are never scanned again). Values are HTML.
pub fn fill_template(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some((before, after)) = rest.split_once("{{") {
        out.push_str(before);
        match after.split_once("}}") {
            Some((name, tail)) => {
                match vars.iter().find(|(k, _)| *k == name) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        out.push_str("{{");
                        out.push_str(name);
                        out.push_str("}}");
                    }
                }
                rest = tail;
            }
            None => {
                out.push_str("{{");
                rest = after;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// An HTML page that is never cached, sends no referrer, and runs under `csp`.
pub fn html_response(status: StatusCode, csp: &'static str, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(HTML_CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            ),
        ],
        body,
    )
        .into_response()
}

/// A JSON body with the vendor's content type.
pub fn json_response(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// The first value of a query parameter.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_once_and_escape_is_complete() {
        let html = fill_template(
            "<p>{{a}}{{b}}{{missing}}</p>",
            &[("a", esc("<x&'\"")), ("b", "{{a}}".into())],
        );
        assert_eq!(html, "<p>&lt;x&amp;&#39;&quot;{{a}}{{missing}}</p>");
        assert_eq!(query_param(Some("a=1&b=%20x"), "b").as_deref(), Some(" x"));
    }
}
