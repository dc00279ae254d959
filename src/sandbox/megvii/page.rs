//! The sandbox page (`page.html`), the browser return and error pages.

use super::*;

pub(super) const PAGE_TEMPLATE: &str = include_str!("page.html");

// Pages and responses
// ---------------------------------------------------------------------------------------------------------------

pub(super) fn render_page(flow: &Flow) -> String {
    let p = &flow.params;
    let web_title = p
        .web_title
        .as_deref()
        .map(|t| format!("<h2 id=\"web_title\">{}</h2>", esc(t)))
        .unwrap_or_default();
    let comparison = match (p.comparison_type, p.idcard_mode) {
        (1, Some(0)) => {
            "权威数据源比对, 调用方传入姓名和身份证号 (comparison_type 1, idcard_mode 0)".to_owned()
        }
        (1, Some(1)) => {
            "权威数据源比对, 拍摄身份证人像面 (comparison_type 1, idcard_mode 1)".to_owned()
        }
        (1, Some(2)) => {
            "权威数据源比对, 拍摄身份证正反面 (comparison_type 1, idcard_mode 2)".to_owned()
        }
        (1, Some(m)) => {
            format!("权威数据源比对, 用户输入身份信息 (comparison_type 1, idcard_mode {m})")
        }
        _ => {
            let n = p.refs.iter().filter(|r| **r).count();
            format!("与上传的参照图比对 (comparison_type 0, {n} image_ref)")
        }
    };
    let procedure = p.procedure_type.as_deref().unwrap_or("video");
    let return_method = if p.action_get { "GET" } else { "POST" };
    fill_template(
        PAGE_TEMPLATE,
        &[
            ("web_title", web_title),
            ("biz_no", esc(&flow.biz_no)),
            ("comparison", esc(&comparison)),
            ("procedure", esc(procedure)),
            ("return_method", return_method.to_owned()),
            ("token", esc(&flow.token)),
        ],
    )
}

/// The browser's way back: a 303 for GET, an auto-submitting form for POST.
pub(super) fn browser_return(completed: &CompletedFlow) -> Response {
    if completed.return_method == "GET" {
        if let Ok(location) = HeaderValue::from_str(&completed.return_url) {
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        header::REFERRER_POLICY,
                        HeaderValue::from_static("no-referrer"),
                    ),
                ],
            )
                .into_response();
        }
        let body = page_shell(&format!(
            "<div id=\"result\"><p><a id=\"return\" href=\"{}\">{}</a></p></div>",
            esc(&completed.return_url),
            CONTINUE.inline()
        ));
        return html_response(StatusCode::OK, PAGE_CSP, body);
    }
    let hidden: String = completed
        .form
        .iter()
        .map(|(k, v)| {
            format!(
                "  <input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                esc(k),
                esc(v)
            )
        })
        .collect();
    let body = page_shell(&format!(
        "<div id=\"result\">\n{}\
         <form id=\"return\" method=\"post\" action=\"{}\">\n{hidden}\
         <noscript><button type=\"submit\">{}</button></noscript>\n</form>\n</div>\n\
         <script>document.getElementById('return').submit()</script>",
        Bilingual::new("正在返回…", "Returning…").paragraphs("", ""),
        esc(&completed.return_url),
        CONTINUE.inline()
    ));
    html_response(StatusCode::OK, RETURN_PAGE_CSP, body)
}

pub(super) fn error_page(error: PageError) -> Response {
    let body = page_shell(&format!(
        "<div id=\"error\">\n<h2>{}</h2>\n{}</div>",
        Bilingual::new("无法进行核身", "Cannot verify").inline(),
        error.message().paragraphs("", "")
    ));
    html_response(error.status(), PAGE_CSP, body)
}

/// The link or button that goes on to return_url.
const CONTINUE: Bilingual = Bilingual::new("继续", "Continue");

/// A minimal page around `content` (already HTML).
pub(super) fn page_shell(content: &str) -> String {
    crate::http::page::page(PAGE_TITLE, &format!("{content}\n"))
}

// ---------------------------------------------------------------------------------------------------------------
