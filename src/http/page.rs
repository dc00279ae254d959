//! The end user's pages: Simplified Chinese first (the document's `lang`), English beneath, every inserted value
//! HTML-escaped. Used by the return relay and the sandbox simulators' pages.

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A text in both languages: Simplified Chinese (the page's language) and English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bilingual {
    /// Simplified Chinese, shown first.
    pub zh: &'static str,
    /// English, shown beneath or beside.
    pub en: &'static str,
}

impl Bilingual {
    /// Two texts.
    pub const fn new(zh: &'static str, en: &'static str) -> Self {
        Self { zh, en }
    }

    /// The Chinese text, then the English one beside it in a `<span lang="en">` (for headings, buttons, links).
    pub fn inline(&self) -> String {
        format!("{} <span lang=\"en\">{}</span>", esc(self.zh), esc(self.en))
    }

    /// Two paragraphs: the Chinese one (with `id` and the extra attributes, already HTML) and the English one
    /// beneath, marked `lang="en"`.
    pub fn paragraphs(&self, id: &str, attrs: &str) -> String {
        let id_attr = if id.is_empty() {
            String::new()
        } else {
            format!(" id=\"{}\"", esc(id))
        };
        format!(
            "<p{id_attr}{attrs}>{}</p>\n<p lang=\"en\" class=\"en\">{}</p>\n",
            esc(self.zh),
            esc(self.en)
        )
    }
}

/// The style shared by the small pages (the English text a little quieter).
pub const BASE_STYLE: &str =
    "body { font-family: system-ui, sans-serif; max-width: 34rem; margin: 2rem auto; \
     padding: 0 1rem; color: #222; } .en { color: #555; margin-top: -.5rem; } \
     a.button { display: inline-block; padding: .5rem .75rem; background: #1f5fa8; color: #fff; \
     text-decoration: none; border-radius: 4px; }";

/// A whole page: `lang="zh-CN"`, UTF-8, the title in both languages, `body` (already HTML).
pub fn page(title: Bilingual, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{} — {}</title>\n<style>{BASE_STYLE}</style>\n\
         </head>\n<body>\n<h1>{}</h1>\n{body}</body>\n</html>\n",
        esc(title.zh),
        esc(title.en),
        title.inline()
    )
}

/// Whether `url` is an absolute http(s) URL (the only kind put into a link).
pub fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_escaped_with_lang_marks() {
        let t = Bilingual::new("认证<完成>", "Done & \"ok\"");
        assert_eq!(
            t.inline(),
            "认证&lt;完成&gt; <span lang=\"en\">Done &amp; &quot;ok&quot;</span>"
        );
        assert_eq!(
            t.paragraphs("state", " data-x=\"1\""),
            "<p id=\"state\" data-x=\"1\">认证&lt;完成&gt;</p>\n<p lang=\"en\" class=\"en\">Done &amp; &quot;ok&quot;</p>\n"
        );
        let p = page(Bilingual::new("标题", "Title"), "<p>x</p>\n");
        assert!(p.starts_with("<!DOCTYPE html>\n<html lang=\"zh-CN\">"));
        assert!(p.contains("<title>标题 — Title</title>"));
        assert!(p.contains("<h1>标题 <span lang=\"en\">Title</span></h1>"));
        assert!(is_http_url("https://a.example/x?y=1"));
        assert!(is_http_url("HTTP://a"));
        assert!(!is_http_url("javascript:alert(1)"));
        assert!(!is_http_url("https://a b"));
    }
}
