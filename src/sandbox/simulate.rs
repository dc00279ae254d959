//! `SandboxService.SimulateOutcome` without the gRPC layer: plays the end user of a Baidu or Megvii session on the
//! simulator's page, through the same simulator calls the page's buttons make, then does what the browser's return
//! through facegate's return relay does: Baidu is asked for the result at once; Megvii's signed result form is
//! applied like a callback.

use super::scenarios::SimulatedOutcome;
use super::web::query_param;
use super::Sandbox;
use crate::domain::caller::Caller;
use crate::domain::service::SessionService;
use crate::domain::{Error, Session, State, Vendor};

/// Why an outcome was not simulated. Nothing changed then.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The session could not be read (unknown, another tenant's, the store).
    #[error("{0}")]
    Session(Error),
    /// The session's vendor page does not offer the outcome (Juhe has no page at all).
    #[error("the {} sandbox page does not offer outcome {}", .vendor.as_str(), .outcome.page_value())]
    NotOffered {
        /// The session's vendor.
        vendor: Vendor,
        /// The outcome asked for.
        outcome: SimulatedOutcome,
    },
    /// The session does not wait for its user.
    #[error("the session is {}, not waiting for its user", .0.as_str())]
    NotAwaitingUser(State),
    /// The simulator refused the page action (its token is used up or gone, e.g. after a sandbox restart).
    #[error("the sandbox page refused: {0}")]
    PageRefused(String),
}

/// Records `outcome` on the vendor page of `session_id` (a session of `caller`'s tenant) and returns the session
/// once facegate has heard of it.
pub async fn simulate_outcome(
    sandbox: &Sandbox,
    service: &SessionService,
    caller: &Caller,
    session_id: &str,
    outcome: SimulatedOutcome,
) -> Result<Session, SimulateError> {
    let session = service
        .get_owned(caller, session_id)
        .await
        .map_err(SimulateError::Session)?;
    let not_offered = SimulateError::NotOffered {
        vendor: session.vendor,
        outcome,
    };
    if !outcome.offered_by(session.vendor) {
        return Err(not_offered);
    }
    if !matches!(session.state, State::AwaitingUser | State::Processing) {
        return Err(SimulateError::NotAwaitingUser(session.state));
    }
    // The page reads its token from its own URL, as here.
    let token = session
        .user_url
        .as_deref()
        .and_then(|url| url.split_once('?'))
        .and_then(|(_, query)| query_param(Some(query), "token"))
        .ok_or(SimulateError::NotAwaitingUser(session.state))?;
    match session.vendor {
        Vendor::Baidu => {
            let page_outcome = outcome.baidu().ok_or(not_offered)?;
            sandbox
                .baidu
                .complete(&token, page_outcome)
                .map_err(SimulateError::PageRefused)?;
            // The browser's return makes facegate ask Baidu at once. Asked here directly, so the answer reflects
            // this attempt even when a poll made just before (the previous attempt's) would hold an on-demand
            // query back.
            service.refresh(session_id).await;
            return service
                .get_owned(caller, session_id)
                .await
                .map_err(SimulateError::Session);
        }
        Vendor::Megvii => {
            let page_outcome = outcome.megvii().ok_or(not_offered)?;
            // Records the result and sends the signed notify to facegate's intake, waiting for its answer.
            let completed = sandbox
                .megvii
                .complete(&token, page_outcome)
                .await
                .map_err(SimulateError::PageRefused)?;
            // The browser POSTs the signed result to the return relay, which applies it like a callback.
            let field = |name: &str| {
                completed
                    .form
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_bytes())
            };
            if let (Some(data), Some(sign)) = (field("data"), field("sign")) {
                let _ = service
                    .callback(
                        Vendor::Megvii,
                        data,
                        sign,
                        crate::domain::events::SOURCE_RETURN,
                    )
                    .await;
            }
        }
        Vendor::Juhe => return Err(not_offered),
    }
    service
        .user_returned(session_id)
        .await
        .map_err(SimulateError::Session)
}
