//! Session events through the real server: vendor calls with their outcome and billing, state changes, rejected
//! callbacks, unmasked reads, pagination with authenticated page tokens, tenant isolation, no personal data in any
//! stored event, and the log across a restart.

mod common;

use common::*;
use facegate::proto::v1 as pb;
use facegate::sandbox::megvii::{CallbackFault, PageOutcome};
use pb::session_event::Detail;
use tonic::Code;

const ALL: &[&str] = &[
    "sessions:create",
    "sessions:read",
    "sessions:cancel",
    "personal_data:reveal",
    "media:read",
];

fn list(session_id: &str, page_size: i32, page_token: &str) -> pb::ListSessionEventsRequest {
    pb::ListSessionEventsRequest {
        session_id: session_id.into(),
        page_size,
        page_token: page_token.into(),
    }
}

async fn all_events(
    client: &mut pb::verification_service_client::VerificationServiceClient<
        tonic::transport::Channel,
    >,
    session_id: &str,
) -> Vec<pb::SessionEvent> {
    client
        .list_session_events(list(session_id, 0, ""))
        .await
        .unwrap()
        .into_inner()
        .events
}

fn vendor_calls(events: &[pb::SessionEvent]) -> Vec<&pb::VendorCallEvent> {
    events
        .iter()
        .filter_map(|e| match &e.detail {
            Some(Detail::VendorCall(c)) => Some(c),
            _ => None,
        })
        .collect()
}

fn state_changes(events: &[pb::SessionEvent]) -> Vec<(i32, i32)> {
    events
        .iter()
        .filter_map(|e| match &e.detail {
            Some(Detail::StateChanged(c)) => Some((c.from, c.to)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_juhe_vendor_error_shows_the_call_and_a_pass_shows_the_billed_call() {
    let mut srv = Server::start().await;
    let st = srv
        .client
        .start_session(juhe_inline("ev-err", 911))
        .await
        .unwrap_err();
    let session_id = reason(&st).1["sessionId"].clone();
    let events = all_events(&mut srv.client, &session_id).await;
    let seqs: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        state_changes(&events),
        vec![(
            pb::SessionState::Unspecified as i32,
            pb::SessionState::RequiresInput as i32
        )]
    );
    let calls = vendor_calls(&events);
    let last = calls.last().expect("the vendor call is recorded");
    assert_eq!(last.vendor, pb::Vendor::Juhe as i32);
    assert!(
        !last.endpoint.is_empty() && !last.endpoint.contains('/')
            || last.endpoint.contains("verify")
    );
    assert_eq!(last.outcome, "vendor_error");
    assert_eq!(last.error_reason, "VENDOR_DATA_SOURCE_TIMEOUT");
    assert_eq!(last.vendor_code, "226401");
    assert!(!last.billed && !last.possibly_billed);
    assert!(last.latency.is_some());
    assert!(events.iter().all(|e| e.time.is_some()));

    let s = srv.start_ok(juhe_inline("ev-pass", 1)).await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    let events = all_events(&mut srv.client, &s.id).await;
    assert_eq!(
        state_changes(&events),
        vec![
            (
                pb::SessionState::Unspecified as i32,
                pb::SessionState::RequiresInput as i32
            ),
            (
                pb::SessionState::RequiresInput as i32,
                pb::SessionState::Verified as i32
            ),
        ]
    );
    let calls = vendor_calls(&events);
    let last = calls.last().unwrap();
    assert_eq!((last.outcome.as_str(), last.billed), ("ok", true));
    assert!(last.error_reason.is_empty());
    let summary = srv
        .result_with(&s.id, false, false, false)
        .await
        .events_summary
        .unwrap();
    assert_eq!(summary.events, events.len() as i64);
    assert_eq!(summary.vendor_calls, calls.len() as i64);
    assert_eq!(summary.billed_calls, 1);
    assert_eq!(summary.possibly_billed_calls, 0);
    assert_eq!(summary.last_event_time, events.last().unwrap().time);
    srv.stop().await;
}

#[tokio::test]
async fn a_forged_megvii_callback_is_a_rejected_callback_event() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(megvii_inline("ev-forged", 2)).await;
    srv.megvii().set_fault(CallbackFault::Forged);
    srv.megvii()
        .complete(&token_of(&s.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    assert!(srv.megvii().stats().notify_failed > 0);
    let events = all_events(&mut srv.client, &s.id).await;
    let rejected: Vec<&pb::CallbackEvent> = events
        .iter()
        .filter_map(|e| match &e.detail {
            Some(Detail::Callback(c)) if !c.accepted => Some(c),
            _ => None,
        })
        .collect();
    assert!(!rejected.is_empty(), "{events:?}");
    for c in &rejected {
        assert_eq!(c.vendor, pb::Vendor::Megvii as i32);
        assert_eq!(c.rejection_reason, "INVALID_SIGNATURE");
    }
    assert!(rejected.iter().any(|c| c.source == "notify"));
    let summary = srv
        .result_with(&s.id, false, false, false)
        .await
        .events_summary
        .unwrap();
    assert_eq!(summary.callbacks_rejected, rejected.len() as i64);
    assert_eq!(summary.callbacks_accepted, 0);
    srv.stop().await;
}

#[tokio::test]
async fn unmasked_reads_pages_tenants_personal_data_and_restart() {
    let srv = Server::start_with_callers(vec![
        caller_config("admin", "shop", ALL, "key-admin"),
        caller_config("rival", "other", ALL, "key-rival"),
    ])
    .await;
    let mut admin = srv.with_key("key-admin").await;
    let s = admin
        .start_session(juhe_inline("ev-read", 1))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    for _ in 0..5 {
        admin
            .get_result(pb::GetResultRequest {
                session_id: s.id.clone(),
                reveal_personal_data: true,
                include_face_image: true,
                include_media: false,
            })
            .await
            .unwrap();
    }
    let first = admin
        .list_session_events(list(&s.id, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(first.next_page_token.is_empty());
    let events = first.events;
    let reads: Vec<&pb::UnmaskedReadEvent> = events
        .iter()
        .filter_map(|e| match &e.detail {
            Some(Detail::UnmaskedRead(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(reads.len(), 5);
    assert_eq!(reads[0].caller_id, "admin");
    assert_eq!(reads[0].tenant, "shop");
    assert_eq!(reads[0].kinds, vec!["personal_data", "face_image"]);
    let summary = admin
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events_summary
        .unwrap();
    assert_eq!(summary.unmasked_reads, 5);

    // Pages of 2 give the same events, in order, and end with an empty token.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_session_events(list(&s.id, 2, &token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 2);
        paged.extend(page.events);
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, events);
    assert_eq!(pages, events.len().div_ceil(2));

    // A token is bound to its session and cannot be edited.
    let token = admin
        .list_session_events(list(&s.id, 1, ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());
    let other = admin
        .start_session(juhe_empty("ev-other"))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let mut tampered = token.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    for (id, bad) in [
        (other.id.as_str(), token.clone()),
        (s.id.as_str(), String::from_utf8(tampered).unwrap()),
        (s.id.as_str(), "garbage".to_owned()),
    ] {
        let st = admin
            .list_session_events(list(id, 0, &bad))
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument);
    }
    let st = admin
        .list_session_events(list(&s.id, -1, ""))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);

    // Another tenant cannot tell the session exists.
    let mut rival = srv.with_key("key-rival").await;
    let st = rival
        .list_session_events(list(&s.id, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::NotFound);
    let st = rival
        .list_session_events(list("ses_00000000000000000000000000000000", 0, ""))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::NotFound);

    // No stored event holds the name or ID number.
    let db = srv.db_path();
    let Server { running, dir, .. } = srv;
    running.unwrap().shutdown().await.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let bodies: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, body FROM session_events ORDER BY session_id, sequence")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert!(bodies.len() > events.len());
    for (kind, body) in &bodies {
        assert!(!kind.is_empty());
        for secret in ["测试用户", id_number(1).as_str(), "key-admin", "http"] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }

    // The log survives a restart.
    let mut config = sandbox_config(&db);
    config.auth.callers = vec![caller_config("admin", "shop", ALL, "key-admin")];
    let mut srv = Server::start_with(dir, config).await;
    let mut admin = srv.with_key("key-admin").await;
    let after = admin
        .list_session_events(list(&s.id, 0, ""))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(after, events);
    srv.stop().await;
}
