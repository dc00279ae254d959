//! Draining, graceful shutdown with calls in flight, and a vendor that does not answer in time.

mod common;

use common::*;
use facegate::proto::v1 as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn shutdown_reports_not_serving_then_lets_in_flight_calls_finish() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("facegate.db");
    let mut config = sandbox_config(&db);
    // Long enough for the health check below to see the drain on a slow machine; the vendor still answers after it.
    config.grpc.drain_delay_secs = 2;
    let mut srv = Server::start_with(dir, config.clone()).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", srv.running().grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);

    // Sequence 931: the simulated vendor answers after 3 s.
    let mut client = srv.client.clone();
    let slow = tokio::spawn(async move {
        client
            .start_session(juhe_inline("slow-during-shutdown", 931))
            .await
    });
    // The call is in flight once the simulated vendor has it (it counts a call when it receives it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while srv.juhe_requests() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow call never reached the vendor"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let running = srv.running.take().unwrap();
    let handle = running.shutdown_handle();
    handle.send(true).unwrap();
    // Draining is visible to health checks, well before the listener closes (2 s).
    let check = tonic_health::pb::HealthCheckRequest {
        service: "facegate.v1.VerificationService".into(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    loop {
        let status = health
            .check(check.clone())
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "draining is not visible to health checks (status {status})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let finished = slow.await.unwrap().unwrap().into_inner().session.unwrap();
    assert_eq!(
        state(&finished),
        pb::SessionState::Verified,
        "the in-flight call completed"
    );
    running.wait().await.unwrap();

    // Its outcome was stored before the process stopped.
    let srv2 = Server::start_with(tempfile::tempdir().unwrap(), sandbox_config(&db)).await;
    let mut c = srv2.client.clone();
    let got = c
        .get_result(pb::GetResultRequest {
            session_id: finished.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&got), pb::SessionState::Verified);
    let mut srv2 = srv2;
    srv2.stop().await;
}

#[tokio::test]
async fn a_vendor_that_does_not_answer_in_time_is_possibly_billed_and_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.juhe.timeout_secs = 1;
    config.grpc.shutdown_grace_secs = 2;
    let mut srv = Server::start_with(dir, config).await;
    // Sequence 932: the simulated vendor holds its answer far longer than juhe.timeout_secs.
    let st = srv
        .client
        .start_session(juhe_inline("no-answer", 932))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::DeadlineExceeded);
    let (reason, md) = reason(&st);
    assert_eq!(reason, "VENDOR_TIMEOUT");
    assert_eq!(md["possiblyBilled"], "true");
    assert!(
        !has_retry_info(&st),
        "a possibly billed call is not an invitation to retry blindly"
    );
    let s = srv
        .client
        .get_result(pb::GetResultRequest {
            session_id: md["sessionId"].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&s), pb::SessionState::RequiresInput);
    assert!(s.last_attempt_error.unwrap().possibly_billed);
    // Repeating the same request is a replay, not a new call: it answers the same error.
    let again = srv
        .client
        .start_session(juhe_inline("no-answer", 932))
        .await
        .unwrap_err();
    assert_same_answer(&st, &again);
    assert_eq!(common::reason(&again).1["sessionId"], s.id);
    assert_eq!(srv.juhe_requests(), 1);
    srv.stop().await;
}
