//! Idempotent replay of StartSession: a repeat of a request_id answers what the first call answered (the same error,
//! code, message and details; or the same session), on the replica that made the vendor call and on another one
//! sharing its PostgreSQL database, and never later than the caller's deadline.

mod common;

use std::time::Duration;

use common::pg::PgCluster;
use common::*;
use facegate::config::Secret;
use facegate::proto::v1 as pb;
use tonic::Code;

/// The same StartSession with a grpc-timeout of `timeout`.
fn with_deadline(
    req: pb::StartSessionRequest,
    timeout: Duration,
) -> tonic::Request<pb::StartSessionRequest> {
    let mut r = tonic::Request::new(req);
    r.set_timeout(timeout);
    r
}

#[tokio::test]
async fn a_replayed_failed_start_session_answers_the_same_error() {
    let mut srv = Server::start().await;
    // Sequence 911: Juhe answers 226401 (its data source timed out), which waiting can cure.
    let first = srv
        .client
        .start_session(juhe_inline("replay-911", 911))
        .await
        .unwrap_err();
    assert_eq!(first.code(), Code::Unavailable);
    let (why, md) = reason(&first);
    assert_eq!(why, "VENDOR_DATA_SOURCE_TIMEOUT");
    assert!(
        !has_retry_info(&first),
        "repeating this request replays this error, so it does not invite a repeat"
    );
    assert_eq!(md["retryWith"], "UploadReference");
    assert_eq!(md["retryDelay"], "5s");
    let session_id = md["sessionId"].clone();

    let replay = srv
        .client
        .start_session(juhe_inline("replay-911", 911))
        .await
        .unwrap_err();
    assert_same_answer(&first, &replay);
    assert_eq!(srv.juhe_requests(), 1, "a replay makes no vendor call");

    // Trying again as the ErrorInfo says: the image through UploadReference, whose own repeat may succeed.
    let again = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: session_id.clone(),
            image: Some(probe()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&again).0, "VENDOR_DATA_SOURCE_TIMEOUT");
    assert!(has_retry_info(&again));
    assert_eq!(srv.juhe_requests(), 2);
    // The StartSession replay still answers what StartSession answered.
    let replay = srv
        .client
        .start_session(juhe_inline("replay-911", 911))
        .await
        .unwrap_err();
    assert_same_answer(&first, &replay);
    assert_eq!(srv.juhe_requests(), 2);

    // A success replays as the same session.
    let ok = srv.start_ok(juhe_inline("replay-ok", 1)).await;
    let ok_again = srv.start_ok(juhe_inline("replay-ok", 1)).await;
    assert_eq!(ok_again.id, ok.id);
    assert_eq!(state(&ok_again), pb::SessionState::Verified);
    assert_eq!(srv.juhe_requests(), 3);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waits_for_the_first_call_but_not_past_the_callers_deadline() {
    let mut srv = Server::start().await;
    // Sequence 931: the simulated vendor takes 3 s to answer.
    let mut first_client = srv.client.clone();
    let first = tokio::spawn(async move {
        first_client
            .start_session(juhe_inline("replay-slow", 931))
            .await
    });
    // Whichever of the two arrives first makes the (3 s) call; the one with a 2.5 s deadline is answered before it,
    // by the server, with its ErrorInfo. The server answers a tenth of the deadline early (250 ms): the margin
    // the reply has before the client's own timer gives up with CANCELLED.
    let short = srv
        .client
        .start_session(with_deadline(
            juhe_inline("replay-slow", 931),
            Duration::from_millis(2500),
        ))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&short).0, "REQUEST_TIMEOUT");
    let first = first.await.unwrap().unwrap().into_inner().session.unwrap();
    let replay = srv.start_ok(juhe_inline("replay-slow", 931)).await;
    assert_eq!(replay.id, first.id);
    assert_eq!(state(&first), pb::SessionState::Verified);
    assert_eq!(state(&replay), pb::SessionState::Verified);
    assert_eq!(srv.juhe_requests(), 1);
    assert_eq!(
        srv.running().service.hub().watched_sessions(),
        0,
        "the replay cut short by its deadline let go of its subscription"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL (initdb, pg_ctl); .ci/run installs it"]
async fn a_replay_on_another_replica_answers_what_the_first_call_answered() {
    let cluster = PgCluster::start();
    let replica = || {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sandbox_config(&dir.path().join("facegate.db"));
        config.store.database_url = Secret::new(cluster.url("postgres"));
        config.session.watch_refresh_ms = 200;
        (dir, config)
    };
    let (dir_a, config_a) = replica();
    let (dir_b, config_b) = replica();
    let mut a = Server::start_with(dir_a, config_a).await;
    let mut b = Server::start_with(dir_b, config_b).await;

    // A failed StartSession on A replays as the same error on B.
    let first = a
        .client
        .start_session(juhe_inline("two-911", 911))
        .await
        .unwrap_err();
    let on_b = b
        .client
        .start_session(juhe_inline("two-911", 911))
        .await
        .unwrap_err();
    assert_same_answer(&first, &on_b);
    assert_eq!(a.juhe_requests() + b.juhe_requests(), 1);

    // A slow vendor (3 s): the repeats reach the other replica while the call is under way. They read the store,
    // so they answer the final session (not a stale snapshot, not a timeout), and a short deadline is kept.
    let mut a_client = a.client.clone();
    let on_a =
        tokio::spawn(async move { a_client.start_session(juhe_inline("two-slow", 931)).await });
    // 2.5 s: the server answers 250 ms early, before the client's own timer and the vendor's 3 s.
    let short = b
        .client
        .start_session(with_deadline(
            juhe_inline("two-slow", 931),
            Duration::from_millis(2500),
        ))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&short).0, "REQUEST_TIMEOUT");
    let on_b = b.start_ok(juhe_inline("two-slow", 931)).await;
    let on_a = on_a.await.unwrap().unwrap().into_inner().session.unwrap();
    assert_eq!(on_b.id, on_a.id);
    assert_eq!(state(&on_a), pb::SessionState::Verified);
    assert_eq!(state(&on_b), pb::SessionState::Verified);
    assert_eq!(
        a.juhe_requests() + b.juhe_requests(),
        2,
        "one call per request_id"
    );
    a.stop().await;
    b.stop().await;
}
