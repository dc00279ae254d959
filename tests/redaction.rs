//! RedactSession (irreversible removal of a session's personal data) and consent evidence on StartSession.

mod common;

use std::collections::BTreeMap;

use common::pg::PgCluster;
use common::*;
use facegate::app::Mode;
use facegate::config::Secret;
use facegate::proto::v1 as pb;
use facegate::sandbox::megvii::PageOutcome;
use tonic::Code;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn consent() -> pb::Consent {
    pb::Consent {
        granted_time: Some(prost_types::Timestamp {
            seconds: now_secs() - 30,
            nanos: 0,
        }),
        notice_version: "face-notice-2026-01".into(),
        method: pb::ConsentMethod::Checkbox as i32,
    }
}

/// A request carrying everything RedactSession must remove that the caller gives.
fn with_caller_data(mut req: pb::StartSessionRequest) -> pb::StartSessionRequest {
    req.client_reference_id = "order-4711".into();
    req.metadata = BTreeMap::from([("cart".to_owned(), "c-99".to_owned())]);
    req.return_urls = Some(pb::ReturnUrls {
        success_url: "https://shop.example/ok".into(),
        failure_url: "https://shop.example/ko".into(),
    });
    req.consent = Some(consent());
    req
}

async fn redact(srv: &mut Server, id: &str) -> pb::Session {
    srv.client
        .redact_session(pb::RedactSessionRequest {
            session_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
}

/// Nothing personal is left on the session, and it says it was redacted.
fn assert_redacted(s: &pb::Session) {
    let r = s.redaction.as_ref().expect("redaction is set");
    assert_eq!(r.state, pb::RedactionState::Redacted as i32);
    assert!(r.redact_time.is_some());
    assert!(s.identity.is_none(), "the masked identity is gone too");
    assert!(s.client_reference_id.is_empty());
    assert!(s.metadata.is_empty());
    assert!(s.user_url.is_empty());
    assert!(s.user_url_expire_time.is_none());
    assert!(s.cancel_reason.is_empty());
    if let Some(f) = &s.failure {
        assert!(f.vendor_message.is_empty());
    }
    if let Some(e) = &s.last_attempt_error {
        assert!(e.vendor_message.is_empty());
    }
}

fn assert_session_redacted(status: tonic::Status) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).0, "SESSION_REDACTED");
}

/// GetResult with each kind of unmasked read is refused; a plain one shows nothing personal.
async fn assert_nothing_revealed(srv: &mut Server, id: &str) {
    for (reveal, face, media) in [
        (true, false, false),
        (false, true, false),
        (false, false, true),
    ] {
        let refused = srv
            .client
            .get_result(pb::GetResultRequest {
                session_id: id.into(),
                reveal_personal_data: reveal,
                include_face_image: face,
                include_media: media,
            })
            .await
            .unwrap_err();
        assert_session_redacted(refused);
    }
    let plain = srv.result_with(id, false, false, false).await;
    assert_redacted(plain.session.as_ref().unwrap());
    let outcome = plain.outcome.unwrap();
    assert!(outcome.identity_document.is_none());
    assert!(outcome.face_image.is_empty());
    assert!(outcome.media.is_empty());
}

#[tokio::test]
async fn a_final_juhe_session_keeps_its_decision_scores_billing_and_consent() {
    let mut srv = Server::start_fast().await;
    let s = srv
        .start_ok(with_caller_data(juhe_inline("red-juhe", 1)))
        .await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    assert!(s.identity.is_some());
    let before = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap();

    let r = redact(&mut srv, &s.id).await;
    assert_redacted(&r);
    assert_eq!(state(&r), pb::SessionState::Verified, "the decision stays");
    assert_eq!((r.id.as_str(), r.vendor), (s.id.as_str(), s.vendor));
    assert_eq!(r.create_time, s.create_time);
    assert_eq!(r.request_id, s.request_id);
    assert_eq!(r.consent, s.consent, "consent evidence is kept");
    assert!(r.consent.is_some());

    let after = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap();
    assert_eq!(after.face_match, before.face_match, "scores stay");
    assert_eq!(after.billing, before.billing, "billing records stay");
    assert!(!after.billing.is_empty());
    let Some(pb::outcome::VendorDetail::Juhe(j)) = &after.vendor_detail else {
        panic!("juhe detail");
    };
    assert!(
        j.message.is_empty() && j.desc.is_empty(),
        "vendor free text is gone"
    );

    let again = redact(&mut srv, &s.id).await;
    assert_eq!(
        again, r,
        "a repeated redaction is a no-op returning the same session"
    );
    assert_nothing_revealed(&mut srv, &s.id).await;
    let juhe_calls = srv.juhe_stats();
    redact(&mut srv, &s.id).await;
    assert_eq!(srv.juhe_stats(), juhe_calls, "no vendor call");
    srv.stop().await;
}

#[tokio::test]
async fn a_juhe_session_waiting_for_input_is_canceled_then_redacted() {
    let mut srv = Server::start_fast().await;
    let mut req = with_caller_data(juhe_empty("red-juhe-open"));
    req.identity = Some(identity(2));
    let s = srv.start_ok(req).await;
    assert_eq!(state(&s), pb::SessionState::RequiresInput);
    let r = redact(&mut srv, &s.id).await;
    assert_eq!(state(&r), pb::SessionState::Canceled);
    assert_redacted(&r);
    assert!(r.required_inputs.is_empty());
    // The flow takes nothing more.
    let refused = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(probe()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).0, "SESSION_FINAL");
    assert_eq!(
        srv.juhe_stats(),
        Default::default(),
        "no vendor call at all"
    );
    assert_nothing_revealed(&mut srv, &s.id).await;
    srv.stop().await;
}

#[tokio::test]
async fn a_baidu_session_awaiting_the_user_is_abandoned_and_a_late_result_changes_nothing() {
    let mut srv = Server::start_fast().await;
    let s = srv
        .start_ok(with_caller_data(baidu_inline("red-baidu", "", 4)))
        .await;
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    let watcher = watch_in_background(&srv.client, &s.id);
    let r = redact(&mut srv, &s.id).await;
    assert_eq!(state(&r), pb::SessionState::Canceled);
    assert_redacted(&r);
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Canceled);
    // A result query already on its way when the redaction landed may still arrive; wait until the poller is gone.
    while srv.running().service.pollers().is_polling(&s.id) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let polls = srv.baidu_calls("result/getall");

    // The user still finishes the vendor page: Baidu now has a result, which facegate never asks for.
    Browser::new().choose(&s.user_url, "pass").await;
    let later = srv.result(&s.id).await;
    assert_eq!(later, r, "nothing changed");
    assert_nothing_revealed(&mut srv, &s.id).await;
    assert_eq!(
        srv.baidu_calls("result/getall"),
        polls,
        "no vendor call for an abandoned flow"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_megvii_session_waiting_for_its_callback_is_abandoned_and_the_late_callback_changes_nothing(
) {
    let mut srv = Server::start_fast().await;
    let s = srv
        .start_ok(with_caller_data(megvii_inline("red-megvii", 5)))
        .await;
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    let r = redact(&mut srv, &s.id).await;
    assert_eq!(state(&r), pb::SessionState::Canceled);
    assert_redacted(&r);
    let (accepted, rejected) = srv.running().service.callback_counts();
    srv.megvii()
        .complete(&token_of(&s.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    assert_eq!(
        srv.running().service.callback_counts(),
        (accepted, rejected + 1),
        "the callback no longer matches any flow"
    );
    assert_eq!(srv.result(&s.id).await, r, "nothing changed");
    assert_nothing_revealed(&mut srv, &s.id).await;
    assert_eq!(
        srv.megvii().stats().get_result,
        0,
        "never asked for the result"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_decided_megvii_session_loses_its_ocr_data() {
    let mut srv = Server::start_fast().await;
    let mut req = megvii_inline("red-megvii-ocr", 6);
    if let Some(pb::start_session_request::VendorOptions::Megvii(o)) = &mut req.vendor_options {
        o.idcard_mode = pb::MegviiIdcardMode::ShootFront as i32;
    }
    req.identity = None;
    let s = srv.start_ok(req).await;
    srv.megvii_page(&s.user_url, PageOutcome::Pass).await;
    let decided = srv.result_with(&s.id, true, false, false).await;
    assert_eq!(
        state(decided.session.as_ref().unwrap()),
        pb::SessionState::Verified
    );
    assert!(
        decided.outcome.unwrap().identity_document.is_some(),
        "the OCR data is revealable before"
    );
    let r = redact(&mut srv, &s.id).await;
    assert_eq!(state(&r), pb::SessionState::Verified);
    assert_redacted(&r);
    assert_nothing_revealed(&mut srv, &s.id).await;
    let Some(pb::outcome::VendorDetail::Megvii(m)) = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap()
        .vendor_detail
    else {
        panic!("megvii detail");
    };
    assert!(m.biz_id.is_empty(), "the vendor's handle is gone");
    srv.stop().await;
}

#[tokio::test]
async fn redaction_needs_its_scope_and_stays_in_the_tenant() {
    let srv = Server::start_with_callers(vec![
        caller_config(
            "admin",
            "shop",
            &["sessions:create", "sessions:read", "sessions:redact"],
            "key-admin",
        ),
        caller_config(
            "plain",
            "shop",
            &["sessions:create", "sessions:read", "sessions:cancel"],
            "key-plain",
        ),
        caller_config(
            "rival",
            "other",
            &["sessions:create", "sessions:read", "sessions:redact"],
            "key-rival",
        ),
    ])
    .await;
    let mut admin = srv.with_key("key-admin").await;
    let s = admin
        .start_session(juhe_inline("red-scope", 1))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let req = || pb::RedactSessionRequest {
        session_id: s.id.clone(),
    };
    let refused = srv
        .with_key("key-plain")
        .await
        .redact_session(req())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let (why, metadata) = reason(&refused);
    assert_eq!(why, "MISSING_SCOPE");
    assert_eq!(
        metadata.get("scope").map(String::as_str),
        Some("sessions:redact")
    );

    let foreign = srv
        .with_key("key-rival")
        .await
        .redact_session(req())
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(reason(&foreign).0, "SESSION_NOT_FOUND");

    let kept = admin
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert!(
        kept.redaction.is_none() && kept.identity.is_some(),
        "untouched"
    );
    let r = admin.redact_session(req()).await.unwrap().into_inner();
    assert_redacted(r.session.as_ref().unwrap());
}

#[tokio::test]
async fn production_refuses_a_session_without_consent_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    // The production default: consent required.
    config.session.require_consent = None;
    let mut srv = Server::start_mode(dir, config, Mode::Production).await;
    for vendor in [pb::Vendor::Juhe, pb::Vendor::Baidu, pb::Vendor::Megvii] {
        let refused = srv
            .client
            .start_session(pb::StartSessionRequest {
                request_id: format!("no-consent-{}", vendor as i32),
                vendor: vendor as i32,
                identity: Some(identity(1)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(reason(&refused).0, "CONSENT_REQUIRED");
    }
    let stored: u64 = srv
        .running()
        .service
        .sessions_by_state()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(stored, 0, "nothing was stored");
    // With consent the request gets past the policy (here to the missing vendor credentials).
    let mut with = juhe_inline("with-consent", 1);
    with.consent = Some(consent());
    let next = srv.client.start_session(with).await.unwrap_err();
    assert_eq!(reason(&next).0, "VENDOR_NOT_CONFIGURED");
    srv.stop().await;
}

#[tokio::test]
async fn consent_evidence_is_validated_stored_and_kept_after_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.session.require_consent = Some(true);
    let mut srv = Server::start_with(dir, config).await;

    let refused = srv
        .client
        .start_session(juhe_inline("sandbox-no-consent", 1))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).0, "CONSENT_REQUIRED");

    let bad = |f: fn(&mut pb::Consent)| {
        let mut c = consent();
        f(&mut c);
        let mut req = juhe_inline("bad-consent", 1);
        req.consent = Some(c);
        req
    };
    for (req, field) in [
        (
            bad(|c| c.granted_time.as_mut().unwrap().seconds = now_secs() + 3600),
            "consent.granted_time",
        ),
        (
            bad(|c| c.granted_time.as_mut().unwrap().seconds = now_secs() - 3 * 86_400),
            "consent.granted_time",
        ),
        (bad(|c| c.granted_time = None), "consent.granted_time"),
        (bad(|c| c.notice_version.clear()), "consent.notice_version"),
        (
            bad(|c| c.notice_version = "v".repeat(65)),
            "consent.notice_version",
        ),
        (bad(|c| c.method = 0), "consent.method"),
        (bad(|c| c.method = 99), "consent.method"),
    ] {
        let st = srv.client.start_session(req).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument);
        assert_eq!(reason(&st).0, "INVALID_REQUEST");
        assert!(st.message().contains(field), "{field}: {}", st.message());
    }
    assert_eq!(
        srv.juhe_stats(),
        Default::default(),
        "no vendor call for refusals"
    );

    let given = consent();
    let mut req = juhe_inline("with-consent", 1);
    req.consent = Some(given.clone());
    let s = srv.start_ok(req).await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    assert_eq!(s.consent.as_ref(), Some(&given));
    assert_eq!(srv.result(&s.id).await.consent.as_ref(), Some(&given));
    let r = redact(&mut srv, &s.id).await;
    assert_eq!(r.consent.as_ref(), Some(&given), "kept after redaction");
    // After a restart, from the store.
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    srv.stop().await;
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.session.require_consent = Some(true);
    let mut again = Server::start_with(dir, config).await;
    let stored = again.result(&s.id).await;
    assert_eq!(stored.consent.as_ref(), Some(&given));
    assert_redacted(&stored);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (initdb, pg_ctl); .ci/run installs it"]
async fn redaction_holds_across_two_replicas_on_one_postgresql_database() {
    let cluster = PgCluster::start();
    let replica = || {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sandbox_config(&dir.path().join("facegate.db"));
        fast_polling(&mut config);
        config.store.database_url = Secret::new(cluster.url("postgres"));
        (dir, config)
    };
    let (dir_a, config_a) = replica();
    let (dir_b, config_b) = replica();
    let mut a = Server::start_with(dir_a, config_a).await;
    let mut b = Server::start_with(dir_b, config_b).await;

    let final_juhe = a
        .start_ok(with_caller_data(juhe_inline("pg-juhe", 1)))
        .await;
    let open_juhe = a
        .start_ok(with_caller_data(juhe_empty("pg-juhe-open")))
        .await;
    let baidu = a
        .start_ok(with_caller_data(baidu_inline("pg-baidu", "", 2)))
        .await;
    let megvii = a
        .start_ok(with_caller_data(megvii_inline("pg-megvii", 3)))
        .await;
    assert_eq!(state(&final_juhe), pb::SessionState::Verified);
    assert_eq!(state(&open_juhe), pb::SessionState::RequiresInput);
    assert_eq!(state(&baidu), pb::SessionState::AwaitingUser);
    assert_eq!(state(&megvii), pb::SessionState::AwaitingUser);
    // Replica A watches the Baidu session (its poller runs there) while B redacts.
    let watcher = watch_in_background(&a.client, &baidu.id);

    for (s, final_state) in [
        (&final_juhe, pb::SessionState::Verified),
        (&open_juhe, pb::SessionState::Canceled),
        (&baidu, pb::SessionState::Canceled),
        (&megvii, pb::SessionState::Canceled),
    ] {
        let r = redact(&mut b, &s.id).await;
        assert_eq!(state(&r), final_state);
        assert_redacted(&r);
        let seen_by_a = a.result(&s.id).await;
        assert_eq!(
            seen_by_a, r,
            "the other replica reads the same redacted session"
        );
        assert_eq!(
            redact(&mut a, &s.id).await,
            r,
            "a repeat on the other replica is a no-op"
        );
        assert_nothing_revealed(&mut a, &s.id).await;
    }
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Canceled);
    // The late Megvii callback reaches replica A's HTTP listener: it changes nothing.
    a.megvii()
        .complete(&token_of(&megvii.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    assert_redacted(&b.result(&megvii.id).await);
    assert_eq!(
        state(&b.result(&megvii.id).await),
        pb::SessionState::Canceled
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn personal_data_in_a_session_that_is_not_final_lives_no_longer_than_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.retention.personal_data_max_secs = Some(1);
    config.session.sweep_interval_secs = 1;
    let mut srv = Server::start_with(dir, config).await;
    let empty = srv.start_ok(juhe_empty("no-data")).await;
    let mut req = juhe_empty("holds-identity");
    req.identity = Some(identity(1));
    let s = srv.start_ok(req).await;
    assert_eq!(state(&s), pb::SessionState::RequiresInput);
    let limit = s.create_time.unwrap().seconds + 1;
    assert!(
        s.expire_time.unwrap().seconds <= limit,
        "expires with its personal data"
    );
    assert!(
        empty.expire_time.unwrap().seconds > limit + 3600,
        "a session without personal data keeps session.ttl_secs"
    );
    let mut client = srv.client.clone();
    let seen = stream_to_end(&mut client, &s.id).await;
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Expired);
    assert!(
        srv.result(&s.id).await.identity.is_some(),
        "the masked form stays"
    );
    srv.stop().await;
}
