//! The return-URL relay: vendor pages send the end user's browser to `/v1/return/<session id>?result=..`. The visit
//! is only a hint that the user is done (it makes facegate ask the vendor now; it never decides anything by
//! itself). The browser then goes on to the caller's return URL with `session_id` appended, or sees a short page
//! when the caller gave none. No personal data is ever put in a URL or on the page.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::callbacks::{answer, data_and_sign, MAX_CALLBACK_BYTES};
use crate::domain::adapter::CallbackRejection;
use axum::extract::rejection::BytesRejection;
use axum::Router;
use serde::Deserialize;

use super::page::{esc, is_http_url, page, Bilingual};
use crate::domain::service::{SessionService, REASON_USER_ATTEMPT_FAILED};
use crate::domain::{Session, State as SessionState};

/// Path prefix of the relay.
pub const PREFIX: &str = "/v1/return";

#[derive(Deserialize)]
struct Params {
    result: Option<String>,
}

/// The relay's routes.
pub fn router(service: Arc<SessionService>) -> Router {
    Router::new()
        .route(
            &format!("{PREFIX}/{{session_id}}"),
            get(returned).post(returned_with_form),
        )
        .layer(DefaultBodyLimit::max(MAX_CALLBACK_BYTES))
        .with_state(service)
}

fn is_session_id(id: &str) -> bool {
    id.len() == 36
        && id.starts_with("ses_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The browser POSTs the vendor's signed result form (Megvii return_url): it is verified and applied like a server
/// callback (a forged one changes nothing), then the browser goes on as with GET.
async fn returned_with_form(
    State(service): State<Arc<SessionService>>,
    Path(session_id): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_session_id(&session_id) {
        return (StatusCode::NOT_FOUND, "unknown session\n").into_response();
    }
    let readable = body.is_ok();
    if let Ok(session) = service.get(&session_id).await {
        let body = body.unwrap_or_default();
        let (data, sign) = data_and_sign(&headers, &body).unwrap_or_default();
        let _ = service
            .callback(
                session.vendor,
                &data,
                &sign,
                crate::domain::events::SOURCE_RETURN,
            )
            .await;
    }
    // An oversized (or unreadable) form is answered as a malformed callback, not relayed.
    if !readable {
        return answer(Err(CallbackRejection::Malformed));
    }
    returned(State(service), Path(session_id), Query(params)).await
}

async fn returned(
    State(service): State<Arc<SessionService>>,
    Path(session_id): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    if !is_session_id(&session_id) {
        return (StatusCode::NOT_FOUND, "unknown session\n").into_response();
    }
    let session = match service.user_returned(&session_id).await {
        Ok(s) => s,
        Err(crate::domain::Error::NotFound) => {
            return (StatusCode::NOT_FOUND, "unknown session\n").into_response()
        }
        Err(e) => {
            tracing::warn!(session_id = %session_id, error = %e, "return relay failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response();
        }
    };
    // A decided session picks the URL by its state; otherwise the vendor page's own say (untrusted, but it only
    // chooses between the caller's two URLs).
    let success = match session.state {
        SessionState::Verified => true,
        SessionState::Failed | SessionState::Expired | SessionState::Canceled => false,
        // Without a word from the page (Megvii), the return URL is where the caller checks the result.
        _ => params.result.as_deref() != Some("failed"),
    };
    let target = service.return_url(&session, success);
    if target.is_empty() {
        return relay_page(&session, params.result.as_deref() == Some("success"));
    }
    let (base, fragment) = match target.split_once('#') {
        Some((b, f)) => (b.to_owned(), format!("#{f}")),
        None => (target.clone(), String::new()),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let location = format!("{base}{sep}session_id={session_id}{fragment}");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// What the relay page tells the user (when the caller gave no return URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageState {
    Verified,
    Failed,
    Ended,
    /// The attempt failed but the vendor page may be used again (a Baidu plan that keeps the URL).
    RetryAllowed,
    Processing,
}

impl PageState {
    /// `said_success`: the vendor page sent the browser to the success URL. The session read here may predate the
    /// vendor's answer (a running poller is only woken), so a failed earlier attempt must not be offered again
    /// after a pass: the page then says the result is being checked.
    fn of(session: &Session, now_ms: i64, said_success: bool) -> Self {
        match session.state {
            SessionState::Verified => PageState::Verified,
            SessionState::Failed => PageState::Failed,
            SessionState::Expired | SessionState::Canceled => PageState::Ended,
            _ if !said_success && retry_url(session, now_ms).is_some() => PageState::RetryAllowed,
            _ => PageState::Processing,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PageState::Verified => "verified",
            PageState::Failed => "failed",
            PageState::Ended => "ended",
            PageState::RetryAllowed => "retry_allowed",
            PageState::Processing => "processing",
        }
    }

    fn text(self) -> Bilingual {
        match self {
            PageState::Verified => Bilingual::new("认证完成。", "Verification complete."),
            PageState::Failed => Bilingual::new("认证未通过。", "Verification not passed."),
            PageState::Ended => Bilingual::new("本次认证已结束。", "This verification has ended."),
            PageState::RetryAllowed => Bilingual::new(
                "本次认证未通过，您可以再试一次：请点击下方的“重新认证”，回到认证页面重新完成人脸认证。",
                "This attempt did not pass. You may try again: press \"Try again\" below to return to the \
                 verification page and verify your face once more.",
            ),
            PageState::Processing => Bilingual::new(
                "感谢您的配合，正在核对认证结果。",
                "Thank you. The result is being checked.",
            ),
        }
    }
}

/// The vendor page to go back to after a failed attempt the session lets the user repeat: the session is still
/// waiting for the user, its last attempt failed (`USER_ATTEMPT_FAILED`), and its user URL has not expired.
fn retry_url(session: &Session, now_ms: i64) -> Option<&str> {
    if session.state != SessionState::AwaitingUser {
        return None;
    }
    let failed_attempt = session
        .last_attempt_error
        .as_ref()
        .is_some_and(|e| e.reason == REASON_USER_ATTEMPT_FAILED);
    let live = session.user_url_expires_at_ms.is_none_or(|t| t > now_ms);
    session
        .user_url
        .as_deref()
        .filter(|u| failed_attempt && live && is_http_url(u))
}

const TITLE: Bilingual = Bilingual::new("人脸实名认证", "Face verification");
const CLOSE: Bilingual = Bilingual::new("您可以关闭此窗口。", "You can close this window.");
const TRY_AGAIN: Bilingual = Bilingual::new("重新认证", "Try again");
/// The relay page runs no script and loads nothing.
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

/// The short page shown when the caller gave no return URL. No personal data: the state, a link back to the
/// vendor page where a retry is allowed, nothing else.
fn relay_page(session: &Session, said_success: bool) -> Response {
    let state = PageState::of(session, crate::domain::now_ms(), said_success);
    let mut body = state
        .text()
        .paragraphs("state", &format!(" data-state=\"{}\"", esc(state.as_str())));
    if state == PageState::RetryAllowed {
        if let Some(url) = retry_url(session, crate::domain::now_ms()) {
            body.push_str(&format!(
                "<p><a id=\"retry\" class=\"button\" href=\"{}\">{}</a></p>\n",
                esc(url),
                TRY_AGAIN.inline()
            ));
        }
    } else {
        body.push_str(&CLOSE.paragraphs("close", ""));
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
        ],
        page(TITLE, &body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_session_ids_are_relayed() {
        assert!(is_session_id("ses_0123456789abcdef0123456789abcdef"));
        assert!(!is_session_id("ses_0123456789ABCDEF0123456789abcdef"));
        assert!(!is_session_id("../etc/passwd"));
    }
}
