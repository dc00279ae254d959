//! The return-URL relay: vendor pages send the end user's browser to `/v1/return/<session id>?result=..`. The visit
//! is only a hint that the user is done (it makes facegate ask the vendor now; it never decides anything by
//! itself). The browser then goes on to the caller's return URL with `session_id` appended, or sees a short page
//! when the caller gave none. No personal data is ever put in a URL or on the page.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::callbacks::{answer, data_and_sign, MAX_CALLBACK_BYTES};
use crate::vendors::CallbackRejection;
use axum::extract::rejection::BytesRejection;
use axum::Router;
use serde::Deserialize;

use crate::domain::service::SessionService;
use crate::domain::State as SessionState;

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
        let text = match session.state {
            SessionState::Verified => "Verification complete.",
            SessionState::Failed => "Verification not passed.",
            SessionState::Expired | SessionState::Canceled => "This verification has ended.",
            _ => "Thank you. The result is being checked.",
        };
        return Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>facegate</title></head>\
             <body><p id=\"state\" data-state=\"{}\">{text}</p><p>You can close this window.</p></body></html>",
            session.state.as_str()
        ))
        .into_response();
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
