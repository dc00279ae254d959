//! `facegate.v1.SandboxService` (sandbox mode only): validate, call the sandbox, convert.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::convert;
use super::error::{status, to_status};
use super::handlers::VerificationApi;
use crate::domain::validation::Violation;
use crate::domain::{Error, State};
use crate::proto::v1 as pb;
use crate::proto::v1::sandbox_service_server::SandboxService;
use crate::sandbox::scenarios::{SimulatedOutcome, JUHE_SCENARIOS, PAGE_SCENARIOS};
use crate::sandbox::simulate::{simulate_outcome, SimulateError};
use crate::sandbox::Sandbox;

/// ErrorInfo reason of SimulateOutcome on a session that does not wait for its user (metadata `sessionId`,
/// `state`).
pub const REASON_NOT_AWAITING_USER: &str = "SESSION_NOT_AWAITING_USER";
/// ErrorInfo reason of SimulateOutcome when the simulator's page refuses (its token is used up or gone).
pub const REASON_PAGE_REFUSED: &str = "SANDBOX_PAGE_REFUSED";

/// The gRPC sandbox service: the simulators and the verification API it shares authentication, quotas and deadlines
/// with.
#[derive(Clone)]
pub struct SandboxApi {
    api: VerificationApi,
    sandbox: Arc<Sandbox>,
}

impl SandboxApi {
    /// The sandbox service over `sandbox`'s simulators.
    pub fn new(api: VerificationApi, sandbox: Arc<Sandbox>) -> Self {
        Self { api, sandbox }
    }
}

fn simulated_outcome(value: i32) -> Result<SimulatedOutcome, Error> {
    use pb::SimulatedOutcome as P;
    let outcome = match P::try_from(value) {
        Ok(P::Pass) => SimulatedOutcome::Pass,
        Ok(P::FaceMismatch) => SimulatedOutcome::FaceMismatch,
        Ok(P::LivenessFailed) => SimulatedOutcome::LivenessFailed,
        Ok(P::IdNameMismatch) => SimulatedOutcome::IdNameMismatch,
        Ok(P::Abandon) => SimulatedOutcome::Abandon,
        Ok(P::NoSuchIdNumber) => SimulatedOutcome::NoSuchIdNumber,
        Ok(P::Cancel) => SimulatedOutcome::Cancel,
        Ok(P::Timeout) => SimulatedOutcome::Timeout,
        Ok(P::WebrtcUnsupported) => SimulatedOutcome::WebrtcUnsupported,
        Ok(P::WebrtcFailed) => SimulatedOutcome::WebrtcFailed,
        Ok(P::Unspecified) => return Err(invalid_outcome("is required")),
        Err(_) => return Err(invalid_outcome("is not a known SimulatedOutcome")),
    };
    Ok(outcome)
}

fn invalid_outcome(description: &str) -> Error {
    Error::InvalidArgument(vec![Violation::new("outcome", description)])
}

fn pb_outcome(o: SimulatedOutcome) -> pb::SimulatedOutcome {
    use pb::SimulatedOutcome as P;
    match o {
        SimulatedOutcome::Pass => P::Pass,
        SimulatedOutcome::FaceMismatch => P::FaceMismatch,
        SimulatedOutcome::LivenessFailed => P::LivenessFailed,
        SimulatedOutcome::IdNameMismatch => P::IdNameMismatch,
        SimulatedOutcome::Abandon => P::Abandon,
        SimulatedOutcome::NoSuchIdNumber => P::NoSuchIdNumber,
        SimulatedOutcome::Cancel => P::Cancel,
        SimulatedOutcome::Timeout => P::Timeout,
        SimulatedOutcome::WebrtcUnsupported => P::WebrtcUnsupported,
        SimulatedOutcome::WebrtcFailed => P::WebrtcFailed,
    }
}

fn not_awaiting_user(session_id: &str, state: State) -> Status {
    status(
        Code::FailedPrecondition,
        REASON_NOT_AWAITING_USER,
        format!(
            "the session is {}: only a session waiting for its user (AWAITING_USER or PROCESSING) takes an outcome",
            state.as_str()
        ),
        [
            ("sessionId".to_owned(), session_id.to_owned()),
            ("state".to_owned(), state.as_str().to_owned()),
        ]
        .into(),
        None,
        vec![],
    )
}

fn simulate_status(session_id: &str, err: SimulateError) -> Status {
    match err {
        SimulateError::Session(e) => to_status(&e),
        SimulateError::NotOffered { vendor, outcome } => to_status(&invalid_outcome(&format!(
            "{} is not an outcome of the {} sandbox page (ListScenarios lists them)",
            outcome.page_value(),
            vendor.as_str()
        ))),
        SimulateError::NotAwaitingUser(state) => not_awaiting_user(session_id, state),
        SimulateError::PageRefused(why) => status(
            Code::FailedPrecondition,
            REASON_PAGE_REFUSED,
            format!("the sandbox page refused the outcome: {why}"),
            [("sessionId".to_owned(), session_id.to_owned())].into(),
            None,
            vec![],
        ),
    }
}

#[tonic::async_trait]
impl SandboxService for SandboxApi {
    async fn simulate_outcome(
        &self,
        request: Request<pb::SimulateOutcomeRequest>,
    ) -> Result<Response<pb::SimulateOutcomeResponse>, Status> {
        let caller = self.api.admit(&request)?;
        let req = request.get_ref();
        let id = convert::session_id("session_id", &req.session_id).map_err(|e| to_status(&e))?;
        let outcome = simulated_outcome(req.outcome).map_err(|e| to_status(&e))?;
        let service = Arc::clone(self.api.service());
        let sandbox = Arc::clone(&self.sandbox);
        let budget = self.api.budget(&request);
        // Unary deadlines apply as to every RPC; the domain errors are mapped inside, the sandbox's own here.
        let simulated = self
            .api
            .unary("SimulateOutcome", budget, async move {
                Ok(simulate_outcome(&sandbox, &service, &caller, &id, outcome)
                    .await
                    .map_err(|e| simulate_status(&id, e)))
            })
            .await?;
        let session = simulated.into_inner()?;
        Ok(Response::new(pb::SimulateOutcomeResponse {
            session: Some(convert::session(&session)),
        }))
    }

    async fn list_scenarios(
        &self,
        request: Request<pb::ListScenariosRequest>,
    ) -> Result<Response<pb::ListScenariosResponse>, Status> {
        self.api.admit(&request)?;
        Ok(Response::new(pb::ListScenariosResponse {
            juhe_identities: JUHE_SCENARIOS
                .iter()
                .map(|s| pb::JuheScenario {
                    sequence: s.sequence_text(),
                    id_number: s.id_number(),
                    vendor_answer: s.vendor_answer.to_owned(),
                    result: s.result.to_owned(),
                })
                .collect(),
            page_outcomes: PAGE_SCENARIOS
                .iter()
                .map(|s| pb::PageScenario {
                    vendor: convert::pb_vendor(s.vendor).into(),
                    outcome: pb_outcome(s.outcome).into(),
                    page_value: s.outcome.page_value().to_owned(),
                    result: s.result(),
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_converts_both_ways() {
        for s in PAGE_SCENARIOS {
            assert_eq!(
                simulated_outcome(pb_outcome(s.outcome).into()).ok(),
                Some(s.outcome)
            );
        }
        assert!(matches!(
            simulated_outcome(0),
            Err(Error::InvalidArgument(v)) if v[0].field == "outcome"
        ));
        assert!(matches!(
            simulated_outcome(99),
            Err(Error::InvalidArgument(v)) if v[0].field == "outcome"
        ));
    }
}
