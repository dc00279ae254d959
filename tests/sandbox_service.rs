//! `facegate.v1.SandboxService` end to end: the real sandbox server, generated gRPC clients, and the simulators'
//! pages played by SimulateOutcome only (no browser, no page request), for every outcome both pages offer.

mod common;

use common::*;
use facegate::domain::Vendor;
use facegate::proto::v1 as pb;
use facegate::proto::v1::sandbox_service_client::SandboxServiceClient;
use facegate::sandbox::scenarios::{PageScenario, JUHE_SCENARIOS, PAGE_SCENARIOS};
use tonic::transport::Channel;
use tonic::Code;

async fn sandbox_client(srv: &Server) -> SandboxServiceClient<Channel> {
    SandboxServiceClient::new(channel(srv.running()).await)
}

fn pb_outcome(page_value: &str) -> pb::SimulatedOutcome {
    pb::SimulatedOutcome::from_str_name(&format!(
        "SIMULATED_OUTCOME_{}",
        page_value.to_ascii_uppercase()
    ))
    .unwrap()
}

fn start_request(vendor: Vendor, request_id: &str, plan: &str) -> pb::StartSessionRequest {
    match vendor {
        Vendor::Baidu => baidu_inline(request_id, plan, 1),
        Vendor::Megvii => megvii_inline(request_id, 1),
        Vendor::Juhe => juhe_inline(request_id, 1),
    }
}

async fn simulate(
    client: &mut SandboxServiceClient<Channel>,
    session_id: &str,
    outcome: pb::SimulatedOutcome,
) -> Result<pb::Session, tonic::Status> {
    client
        .simulate_outcome(pb::SimulateOutcomeRequest {
            session_id: session_id.into(),
            outcome: outcome.into(),
        })
        .await
        .map(|r| r.into_inner().session.unwrap())
}

fn expected_state(s: &PageScenario) -> pb::SessionState {
    pb::SessionState::from_str_name(&format!("SESSION_STATE_{}", s.state.as_str())).unwrap()
}

fn expected_failure(s: &PageScenario) -> Option<pb::FailureCode> {
    s.failure
        .map(|c| pb::FailureCode::from_str_name(&format!("FAILURE_CODE_{}", c.as_str())).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_outcome_of_both_vendors_completes_by_rpc_as_listed() {
    let mut srv = Server::start_fast().await;
    let mut sandbox = sandbox_client(&srv).await;
    for (i, scenario) in PAGE_SCENARIOS.iter().enumerate() {
        let what = format!(
            "{} {}",
            scenario.vendor.as_str(),
            scenario.outcome.page_value()
        );
        let s = srv
            .start_ok(start_request(scenario.vendor, &format!("sim-{i}"), "kyc"))
            .await;
        assert_eq!(state(&s), pb::SessionState::AwaitingUser, "{what}");
        let answered = simulate(
            &mut sandbox,
            &s.id,
            pb_outcome(scenario.outcome.page_value()),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(state(&answered), expected_state(scenario), "{what}");
        let failure = answered.failure.as_ref().map(|f| f.code());
        assert_eq!(failure, expected_failure(scenario), "{what}");
        // What GetResult reads afterwards is the same decision, billed as the table says.
        let stored = srv.result_with(&s.id, false, false, false).await;
        let session = stored.session.unwrap();
        assert_eq!(state(&session), expected_state(scenario), "{what}");
        let billed = stored
            .outcome
            .map(|o| o.billing.iter().any(|b| b.billed))
            .unwrap_or(false);
        assert_eq!(billed, scenario.billed, "{what}: billing");
        // A decided session takes no further outcome.
        let again = simulate(
            &mut sandbox,
            &s.id,
            pb_outcome(scenario.outcome.page_value()),
        )
        .await
        .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{what}");
        assert_eq!(reason(&again).0, "SESSION_NOT_AWAITING_USER", "{what}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_keeps_its_url_takes_more_attempts_until_a_pass() {
    let mut srv = Server::start_fast().await;
    let mut sandbox = sandbox_client(&srv).await;
    let s = srv
        .start_ok(start_request(Vendor::Baidu, "sim-retry", "kyc_retry"))
        .await;
    for failed in [
        pb::SimulatedOutcome::FaceMismatch,
        pb::SimulatedOutcome::LivenessFailed,
    ] {
        let after = simulate(&mut sandbox, &s.id, failed).await.unwrap();
        assert_eq!(state(&after), pb::SessionState::AwaitingUser, "{failed:?}");
        let last = after
            .last_attempt_error
            .as_ref()
            .expect("the failed attempt");
        assert_eq!(last.reason, "USER_ATTEMPT_FAILED", "{failed:?}");
    }
    let passed = simulate(&mut sandbox, &s.id, pb::SimulatedOutcome::Pass)
        .await
        .unwrap();
    assert_eq!(state(&passed), pb::SessionState::Verified);
    let attempts = srv.baidu().getall_times(&token_of(&s.user_url));
    assert!(!attempts.is_empty(), "facegate asked Baidu for the result");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_a_session_cannot_take_are_refused_and_change_nothing() {
    let mut srv = Server::start_fast().await;
    let mut sandbox = sandbox_client(&srv).await;
    let invalid_outcome = |e: &tonic::Status| {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(reason(e).0, "INVALID_REQUEST", "{e:?}");
        assert!(e.message().contains("outcome") || !e.details().is_empty());
    };
    // Juhe has no page.
    let juhe = srv.start_ok(juhe_empty("sim-juhe")).await;
    invalid_outcome(
        &simulate(&mut sandbox, &juhe.id, pb::SimulatedOutcome::Pass)
            .await
            .unwrap_err(),
    );
    // Megvii's page has no "abandon"; Baidu's has no "cancel"; neither takes UNSPECIFIED.
    let megvii = srv
        .start_ok(start_request(Vendor::Megvii, "sim-m", "kyc"))
        .await;
    let baidu = srv
        .start_ok(start_request(Vendor::Baidu, "sim-b", "kyc"))
        .await;
    for (id, outcome) in [
        (&megvii.id, pb::SimulatedOutcome::Abandon),
        (&baidu.id, pb::SimulatedOutcome::Cancel),
        (&baidu.id, pb::SimulatedOutcome::Unspecified),
    ] {
        invalid_outcome(&simulate(&mut sandbox, id, outcome).await.unwrap_err());
    }
    for s in [&megvii, &baidu] {
        assert_eq!(
            state(&srv.result(&s.id).await),
            pb::SessionState::AwaitingUser
        );
    }
    // Unknown and malformed session ids.
    let unknown = simulate(
        &mut sandbox,
        &missing_session().session_id,
        pb::SimulatedOutcome::Pass,
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = simulate(&mut sandbox, "not-a-session", pb::SimulatedOutcome::Pass)
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    // A canceled session no longer waits for its user.
    srv.client
        .cancel_session(pb::CancelSessionRequest {
            session_id: baidu.id.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let canceled = simulate(&mut sandbox, &baidu.id, pb::SimulatedOutcome::Pass)
        .await
        .unwrap_err();
    assert_eq!(canceled.code(), Code::FailedPrecondition);
    let (why, metadata) = reason(&canceled);
    assert_eq!(why, "SESSION_NOT_AWAITING_USER");
    assert_eq!(metadata.get("state").map(String::as_str), Some("CANCELED"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sessions_tenant_plays_its_user_and_scopes_apply() {
    let mut srv = Server::start_with_callers(vec![
        caller_config(
            "shop",
            "shop",
            &["sessions:create", "sessions:read"],
            "key-shop",
        ),
        caller_config("reader", "shop", &["sessions:read"], "key-reader"),
        caller_config(
            "rival",
            "other",
            &["sessions:create", "sessions:read"],
            "key-rival",
        ),
    ])
    .await;
    let mut shop = srv.with_key("key-shop").await;
    let s = shop
        .start_session(start_request(Vendor::Baidu, "sim-tenant", "kyc"))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let keyed = |key: &'static str| {
        let channel = channel(srv.running());
        async move { SandboxServiceClient::with_interceptor(channel.await, Bearer::new(Some(key))) }
    };
    let request = || pb::SimulateOutcomeRequest {
        session_id: s.id.clone(),
        outcome: pb::SimulatedOutcome::Pass.into(),
    };
    let rival = keyed("key-rival")
        .await
        .simulate_outcome(request())
        .await
        .unwrap_err();
    assert_eq!(rival.code(), Code::NotFound);
    let reader = keyed("key-reader")
        .await
        .simulate_outcome(request())
        .await
        .unwrap_err();
    assert_eq!(reader.code(), Code::PermissionDenied);
    assert_eq!(reason(&reader).0, "MISSING_SCOPE");
    let anonymous = SandboxServiceClient::new(channel(srv.running()).await)
        .simulate_outcome(request())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let listed = keyed("key-reader")
        .await
        .list_scenarios(pb::ListScenariosRequest {})
        .await
        .unwrap();
    assert!(!listed.into_inner().page_outcomes.is_empty());
    let done = keyed("key-shop")
        .await
        .simulate_outcome(request())
        .await
        .unwrap();
    assert_eq!(
        state(done.get_ref().session.as_ref().unwrap()),
        pb::SessionState::Verified
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_scenarios_answers_the_readme_tables_rows() {
    let mut srv = Server::start().await;
    let listed = sandbox_client(&srv)
        .await
        .list_scenarios(pb::ListScenariosRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.juhe_identities.len(), JUHE_SCENARIOS.len());
    for (got, want) in listed.juhe_identities.iter().zip(JUHE_SCENARIOS) {
        assert_eq!(got.sequence, want.sequence_text());
        assert_eq!(got.id_number, want.id_number());
        assert_eq!(got.vendor_answer, want.vendor_answer);
        assert_eq!(got.result, want.result);
    }
    assert_eq!(listed.page_outcomes.len(), PAGE_SCENARIOS.len());
    for (got, want) in listed.page_outcomes.iter().zip(PAGE_SCENARIOS) {
        assert_eq!(got.page_value, want.outcome.page_value());
        assert_eq!(got.outcome(), pb_outcome(want.outcome.page_value()));
        assert_eq!(got.result, want.result());
        let vendor = match want.vendor {
            Vendor::Baidu => pb::Vendor::Baidu,
            Vendor::Megvii => pb::Vendor::Megvii,
            Vendor::Juhe => pb::Vendor::Juhe,
        };
        assert_eq!(got.vendor(), vendor);
    }
    // Every listed Juhe identity answers as listed where the answer is a decision.
    for scenario in JUHE_SCENARIOS.iter().filter(|s| s.result == "VERIFIED") {
        let s = srv
            .start_ok(juhe_inline(
                &format!("list-{}", scenario.sequence),
                scenario.sequence,
            ))
            .await;
        assert_eq!(state(&s), pb::SessionState::Verified, "{scenario:?}");
    }
    srv.stop().await;
}

/// The services a server's reflection lists.
async fn reflected_services(srv: &Server) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(channel(srv.running()).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match replies.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_sandbox_serves_and_lists_the_sandbox_service() {
    let mut sandbox = Server::start().await;
    let services = reflected_services(&sandbox).await;
    assert!(
        services.iter().any(|s| s == "facegate.v1.SandboxService"),
        "{services:?}"
    );
    sandbox.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    let mut production = Server::start_mode(dir, config, facegate::app::Mode::Production).await;
    let services = reflected_services(&production).await;
    assert!(
        services
            .iter()
            .any(|s| s == "facegate.v1.VerificationService"),
        "{services:?}"
    );
    assert!(
        !services.iter().any(|s| s.contains("Sandbox")),
        "{services:?}"
    );
    let unimplemented = sandbox_client(&production)
        .await
        .list_scenarios(pb::ListScenariosRequest {})
        .await
        .unwrap_err();
    assert_eq!(unimplemented.code(), Code::Unimplemented);
    production.stop().await;
}
