//! Baidu H5 faceprint flows end to end: the real server, a generated gRPC client, the built-in Baidu simulator and
//! its sandbox page, driven over HTTP as a browser would.

mod common;

use std::time::Duration;

use common::*;
use facegate::proto::v1 as pb;
use tonic::Code;

fn baidu_detail(o: &pb::Outcome) -> &pb::BaiduDetail {
    match o.vendor_detail.as_ref() {
        Some(pb::outcome::VendorDetail::Baidu(b)) => b,
        other => panic!("expected Baidu detail, got {other:?}"),
    }
}

#[tokio::test]
async fn pass_flow_through_the_page_ends_verified_with_every_result() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(baidu_inline("baidu-pass", "", 1)).await;
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    assert!(s.required_inputs.is_empty());
    assert!(s.user_url.contains("/face/print/?token="), "{}", s.user_url);
    assert!(
        !s.user_url.contains(&id_number(1)),
        "no ID number in the URL"
    );
    let expire = s.user_url_expire_time.unwrap().seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expire - now - 7200).abs() < 60,
        "verify_token lives 2 hours"
    );

    let watcher = watch_in_background(&srv.client, &s.id);

    let browser = Browser::new();
    let relay = browser.choose(&s.user_url, "pass").await;
    assert!(
        relay.contains(&format!("/v1/return/{}?result=success", s.id)),
        "{relay}"
    );
    let page = browser.follow(&relay).await;
    assert_eq!(
        page.status(),
        200,
        "no return URL configured: facegate's own page"
    );
    assert!(page.text().await.unwrap().contains("id=\"state\""));

    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.first().unwrap()), pb::SessionState::AwaitingUser);
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);

    let r = srv.result_with(&s.id, false, false, false).await;
    let o = r.outcome.unwrap();
    let fm = o.face_match.as_ref().unwrap();
    assert!(fm.passed && fm.score >= 80.0, "{fm:?}");
    assert_eq!(fm.threshold, 80.0);
    assert_eq!(fm.source, "authority");
    assert!(o.liveness.as_ref().unwrap().passed);
    let doc = o.identity_document.as_ref().unwrap();
    assert_eq!(doc.name, "测***", "masked unless asked for");
    assert!(doc.id_number.contains('*'));
    assert!(
        o.face_image.is_empty() && o.media.is_empty(),
        "only on request"
    );
    let b = baidu_detail(&o);
    assert_eq!(b.plan, "kyc");
    assert_eq!(b.verify_count, 1);
    assert_eq!(b.verify_charge_count, 1);
    assert_eq!(b.attempts.len(), 1);
    assert!(b.attempts[0].passed && b.attempts[0].charged);
    assert_eq!(b.attempts[0].charge_type, "verify");
    assert!(b.attempts[0].verify_time.is_some());
    assert!(!b.api_stats.is_empty(), "result/stat is kept");
    assert_eq!(o.billing.len(), 1);
    assert!(o.billing[0].billed);

    let full = srv
        .result_with(&s.id, true, true, true)
        .await
        .outcome
        .unwrap();
    let doc = full.identity_document.unwrap();
    assert_eq!(doc.name, "测试用户");
    assert_eq!(doc.id_number, id_number(1));
    assert!(
        full.face_image.starts_with(&[0xff, 0xd8, 0xff]),
        "the captured face is a JPEG"
    );
    assert!(full.media.iter().any(|m| m.kind == "video"));
    assert!(full.media.iter().any(|m| m.kind == "image"));
    srv.stop().await;
}

#[tokio::test]
async fn each_page_failure_maps_to_its_neutral_code() {
    let mut srv = Server::start_fast().await;
    let browser = Browser::new();
    for (i, (outcome, code)) in [
        ("face_mismatch", pb::FailureCode::FaceMismatch),
        ("liveness_failed", pb::FailureCode::LivenessFailed),
        ("id_name_mismatch", pb::FailureCode::IdNameMismatch),
        ("abandon", pb::FailureCode::UserAbandoned),
    ]
    .into_iter()
    .enumerate()
    {
        let s = srv
            .start_ok(baidu_inline(
                &format!("fail-{outcome}"),
                "kyc",
                10 + i as u16,
            ))
            .await;
        let relay = browser.choose(&s.user_url, outcome).await;
        assert!(relay.contains("result=failed"), "{relay}");
        let mut client = srv.client.clone();
        let seen = stream_to_end(&mut client, &s.id).await;
        let last = seen.last().unwrap();
        assert_eq!(state(last), pb::SessionState::Failed, "{outcome}");
        let f = last.failure.as_ref().unwrap();
        assert_eq!(f.code, code as i32, "{outcome}: {f:?}");
        assert!(!f.vendor_code.is_empty());
        let o = srv
            .result_with(&s.id, false, false, false)
            .await
            .outcome
            .unwrap();
        let b = baidu_detail(&o);
        assert_eq!(b.attempts.len(), 1);
        assert!(!b.attempts[0].passed);
        let billed = matches!(outcome, "face_mismatch" | "liveness_failed");
        assert_eq!(b.attempts[0].charged, billed, "{outcome}");
        // Baidu keeps no face or media of a failed verification: asking for them is not an error.
        let all = srv
            .result_with(&s.id, true, true, true)
            .await
            .outcome
            .unwrap();
        assert!(all.face_image.is_empty() && all.media.is_empty());
    }
    srv.stop().await;
}

#[tokio::test]
async fn stepwise_identity_then_page() {
    let mut srv = Server::start_fast().await;
    let mut req = baidu_inline("stepwise", "kyc", 2);
    req.identity = None;
    let s = srv.start_ok(req).await;
    assert_eq!(state(&s), pb::SessionState::RequiresInput);
    assert_eq!(s.required_inputs, vec![pb::RequiredInput::Identity as i32]);
    assert_eq!(
        srv.baidu_calls("verifyToken/generate"),
        0,
        "nothing at Baidu before the inputs"
    );
    let s = srv
        .client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: s.id.clone(),
            identity: Some(identity(2)),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    assert_eq!(srv.baidu_calls("verifyToken/generate"), 1);
    assert_eq!(srv.baidu_calls("idcard/submit"), 1);
    assert!(s.identity.unwrap().id_number_masked.contains('*'));

    // A plan that needs no identity takes none: a probe image is refused for Baidu.
    let err = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(pb::FaceImage {
                data: JPEG.to_vec(),
                role: pb::ImageRole::Reference as i32,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    srv.stop().await;
}

#[tokio::test]
async fn reference_plan_uploads_the_face_with_controls_and_bills_a_match() {
    let mut srv = Server::start_fast().await;
    let mut req = baidu_inline("reference", "reference", 3);
    req.identity = None;
    let s = srv.start_ok(req).await;
    assert_eq!(
        s.required_inputs,
        vec![pb::RequiredInput::ReferenceImage as i32]
    );
    let probe_refused = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(probe()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(probe_refused.code(), Code::InvalidArgument);
    let s = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(pb::FaceImage {
                data: JPEG.to_vec(),
                role: pb::ImageRole::Reference as i32,
            }),
            quality_control: pb::ControlLevel::Low as i32,
            liveness_control: pb::ControlLevel::High as i32,
            slot: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    assert_eq!(srv.baidu_calls("uploadMatchImage"), 1);
    assert_eq!(srv.baidu_calls("idcard/submit"), 0);
    Browser::new().choose(&s.user_url, "pass").await;
    let mut client = srv.client.clone();
    let seen = stream_to_end(&mut client, &s.id).await;
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    let o = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap();
    assert_eq!(o.face_match.as_ref().unwrap().source, "reference_image");
    assert_eq!(baidu_detail(&o).match_charge_count, 1);
    assert_eq!(o.billing[0].item, "match");
    srv.stop().await;
}

#[tokio::test]
async fn a_plan_that_keeps_the_url_lets_the_user_retry() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(baidu_inline("retry", "kyc_retry", 4)).await;
    let watcher = watch_in_background(&srv.client, &s.id);
    let browser = Browser::new();
    browser.choose(&s.user_url, "liveness_failed").await;
    // The failed attempt shows on the session while the user may still retry.
    let mut seen_retry = false;
    for _ in 0..100 {
        let r = srv.result_with(&s.id, false, false, false).await;
        let sess = r.session.unwrap();
        if let Some(e) = sess.last_attempt_error.as_ref() {
            assert_eq!(e.reason, "USER_ATTEMPT_FAILED");
            assert_eq!(state(&sess), pb::SessionState::AwaitingUser);
            seen_retry = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_retry, "the failed attempt was reported");
    browser.choose(&s.user_url, "pass").await;
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    let o = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap();
    let b = baidu_detail(&o);
    assert_eq!(b.verify_count, 2);
    assert_eq!(b.attempts.len(), 2);
    assert!(!b.attempts[0].passed && b.attempts[1].passed);
    assert_eq!(b.verify_charge_count, 2, "both attempts ran a comparison");
    srv.stop().await;
}

/// Starts `n` Baidu sessions at once; each must reach AWAITING_USER.
async fn start_concurrently(srv: &Server, prefix: &str, n: u16, first_sequence: u16) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut client = srv.client.clone();
        let req = baidu_inline(&format!("{prefix}-{i}"), "", first_sequence + i);
        tasks.push(tokio::spawn(async move {
            client.start_session(req).await.unwrap()
        }));
    }
    for t in tasks {
        let s = t.await.unwrap().into_inner().session.unwrap();
        assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    }
}

#[tokio::test]
async fn one_token_request_under_concurrency_and_one_refresh_after_expiry() {
    let mut srv = Server::start_fast().await;
    start_concurrently(&srv, "conc", 20, 20).await;
    assert_eq!(
        srv.baidu().stats().token_requests,
        1,
        "one access_token for 20 sessions"
    );

    // 31 days later Baidu calls the cached token expired (111): it is replaced once, however many calls saw it.
    srv.baidu()
        .clock()
        .advance(Duration::from_secs(31 * 24 * 3600));
    start_concurrently(&srv, "later", 10, 60).await;
    assert_eq!(srv.baidu().stats().token_requests, 2);
    srv.stop().await;
}

#[tokio::test]
async fn an_unused_verify_token_expires_after_two_hours() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(baidu_inline("expiry", "", 5)).await;
    let watcher = watch_in_background(&srv.client, &s.id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.baidu()
        .clock()
        .advance(Duration::from_secs(2 * 3600 + 60));
    let seen = watcher.await.unwrap();
    let last = seen.last().unwrap();
    assert_eq!(state(last), pb::SessionState::Expired);
    assert!(last.failure.is_none());
    // The page no longer works either.
    let page = Browser::new().http.get(&s.user_url).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("id=\"error\""));
    srv.stop().await;
}

#[tokio::test]
async fn qps_limits_back_off_without_failing_the_stream() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(baidu_inline("qps", "", 6)).await;
    srv.baidu().inject_qps_limit(4);
    let watcher = watch_in_background(&srv.client, &s.id);
    for _ in 0..200 {
        if srv.baidu().stats().qps_limited >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        srv.baidu().stats().qps_limited,
        4,
        "the limited answers were seen"
    );
    Browser::new().choose(&s.user_url, "pass").await;
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    assert!(seen.iter().all(|m| m.last_attempt_error.is_none()));
    srv.stop().await;
}

/// Polls caused by `watchers` watchers of one session through a whole flow, with polling slow enough that only
/// the first poll and the return-page hint cause one.
async fn polls_for_watchers(watchers: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.status.poll_min_interval_ms = 3_600_000;
    config.status.poll_max_interval_ms = 3_600_000;
    let mut srv = Server::start_with(dir, config).await;
    let s = srv.start_ok(baidu_inline("watchers", "", 7)).await;
    let before = srv.baidu_calls("result/getall");
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut client = srv.client.clone();
        let id = s.id.clone();
        tasks.push(tokio::spawn(async move {
            stream_to_end(&mut client, &id).await
        }));
    }
    for _ in 0..200 {
        if srv.baidu_calls("result/getall") > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let browser = Browser::new();
    let relay = browser.choose(&s.user_url, "pass").await;
    assert_eq!(browser.follow(&relay).await.status(), 200);
    for t in tasks {
        let seen = t.await.unwrap();
        assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    }
    let polls = srv.baidu_calls("result/getall") - before;
    let started = srv.running().service.pollers().started();
    srv.stop().await;
    (polls, started)
}

#[tokio::test]
async fn a_hundred_watchers_cause_the_polls_of_one() {
    let one = polls_for_watchers(1).await;
    let hundred = polls_for_watchers(100).await;
    assert_eq!(
        one.0, 2,
        "the first poll, then the one the return page woke"
    );
    assert_eq!(
        hundred, one,
        "same vendor polls and one poller, whatever the number of watchers"
    );
}

#[tokio::test]
async fn nobody_watching_means_no_polls_and_get_result_refreshes_on_demand() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(baidu_inline("on-demand", "", 8)).await;
    Browser::new().choose(&s.user_url, "pass").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(srv.baidu_calls("result/getall"), 0, "no watcher, no poller");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut client = srv.client.clone();
        let id = s.id.clone();
        tasks.push(tokio::spawn(async move {
            client
                .get_result(pb::GetResultRequest {
                    session_id: id,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(state(&r.session.unwrap()), pb::SessionState::Verified);
    }
    assert_eq!(
        srv.baidu_calls("result/getall"),
        1,
        "ten concurrent GetResults, one refresh"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_flow_resumes_polling() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    fast_polling(&mut config);
    let mut srv = Server::start_with(dir, config.clone()).await;
    let s = srv.start_ok(baidu_inline("restart", "", 9)).await;
    let sandbox = std::sync::Arc::clone(srv.running().sandbox.as_ref().unwrap());
    let grpc = srv.running().grpc_addr;
    let http = srv.running().http_addr;
    srv.stop().await;

    config.grpc.listen = grpc;
    config.http.listen = http;
    let running = facegate::app::start(
        config,
        facegate::app::Mode::Sandbox(facegate::app::SandboxOptions {
            simulators: Some(sandbox),
            public: false,
        }),
    )
    .await
    .unwrap();
    let mut client = connect(&running).await;
    let id = s.id.clone();
    let mut c2 = client.clone();
    let watcher = tokio::spawn(async move { stream_to_end(&mut c2, &id).await });
    Browser::new().choose(&s.user_url, "pass").await;
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.first().unwrap()), pb::SessionState::AwaitingUser);
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    let r = client
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.outcome.unwrap().face_match.unwrap().passed);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn return_urls_carry_the_session_id_and_no_personal_data() {
    let mut srv = Server::start_fast().await;
    let mut req = baidu_inline("return-urls", "", 11);
    req.return_urls = Some(pb::ReturnUrls {
        success_url: "https://app.example/done?x=1#top".into(),
        failure_url: "https://app.example/failed".into(),
    });
    let s = srv.start_ok(req).await;
    let browser = Browser::new();
    let relay = browser.choose(&s.user_url, "pass").await;
    let r = browser.follow(&relay).await;
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        to,
        format!("https://app.example/done?x=1&session_id={}#top", s.id)
    );
    assert!(!to.contains(&id_number(11)));
    srv.stop().await;
}

#[tokio::test]
async fn unknown_plans_are_invalid_arguments() {
    let mut srv = Server::start_fast().await;
    let err = srv
        .client
        .start_session(baidu_inline("bad-plan", "nope", 12))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let (reason, _) = reason(&err);
    assert_eq!(reason, "INVALID_REQUEST");
    let details = tonic_types::StatusExt::get_error_details(&err);
    let bad = details.bad_request().expect("field violations");
    assert_eq!(bad.field_violations[0].field, "baidu.plan");
    srv.stop().await;
}

#[tokio::test]
async fn vendor_data_past_retention_is_a_clear_error_and_the_stored_result_stays() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(baidu_inline("retention", "", 13)).await;
    let watcher = watch_in_background(&srv.client, &s.id);
    Browser::new().choose(&s.user_url, "pass").await;
    assert_eq!(
        state(watcher.await.unwrap().last().unwrap()),
        pb::SessionState::Verified
    );

    // Media is kept one day, the rest three days.
    srv.baidu()
        .clock()
        .advance(Duration::from_secs(2 * 24 * 3600));
    let face = srv
        .result_with(&s.id, false, true, false)
        .await
        .outcome
        .unwrap();
    assert!(!face.face_image.is_empty());
    let err = srv
        .client
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            include_media: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).0, "VENDOR_RESULT_EXPIRED");

    srv.baidu()
        .clock()
        .advance(Duration::from_secs(2 * 24 * 3600));
    let err = srv
        .client
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            reveal_personal_data: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err).0, "VENDOR_RESULT_EXPIRED");
    let stored = srv.result_with(&s.id, false, false, false).await;
    assert_eq!(state(&stored.session.unwrap()), pb::SessionState::Verified);
    assert!(stored.outcome.unwrap().face_match.unwrap().passed);
    srv.stop().await;
}

/// Without a return URL the relay shows its own page: after a failed attempt of a plan that keeps the URL it tells
/// the user (in Chinese, then English) that they may try again and links back to the Baidu page, instead of "the
/// result is being checked"; after the pass it says the verification is complete.
#[tokio::test]
async fn the_relay_page_offers_a_retry_after_a_failed_kyc_retry_attempt() {
    let mut srv = Server::start_fast().await;
    let s = srv
        .start_ok(baidu_inline("relay-retry", "kyc_retry", 5))
        .await;
    let browser = Browser::new();
    let relay = browser.choose(&s.user_url, "liveness_failed").await;
    let r = browser.http.get(&relay).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains("<html lang=\"zh-CN\">"), "{html}");
    assert!(html.contains("data-state=\"retry_allowed\""), "{html}");
    assert!(html.contains("您可以再试一次"), "{html}");
    assert!(
        html.contains("<p lang=\"en\" class=\"en\">This attempt did not pass. You may try again"),
        "{html}"
    );
    let href = format!("href=\"{}\"", s.user_url.replace('&', "&amp;"));
    assert!(html.contains(&href), "{html}");
    assert!(!html.contains("being checked") && !html.contains(&id_number(5)));
    assert_eq!(
        state(&srv.result(&s.id).await),
        pb::SessionState::AwaitingUser
    );

    let watcher = watch_in_background(&srv.client, &s.id);
    let relay = browser.choose(&s.user_url, "pass").await;
    let html = browser.page(&relay).await;
    // The pass may not be read from Baidu yet: never a retry offer after it, though.
    assert!(
        html.contains("data-state=\"verified\"") || html.contains("data-state=\"processing\""),
        "{html}"
    );
    assert!(!html.contains("id=\"retry\""), "{html}");
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    let html = browser.page(&relay).await;
    assert!(
        html.contains("data-state=\"verified\"") && html.contains("认证完成。"),
        "{html}"
    );
    assert!(html.contains("Verification complete.") && !html.contains("id=\"retry\""));
    srv.stop().await;
}

/// With a StatusStream open, a poller watches the session and the return relay only wakes it: the relay waits for
/// that poll, so the page after a failed kyc_retry attempt offers another try (not "being checked" from the copy
/// stored before the user finished), and the page after the pass says the verification is complete.
#[tokio::test]
async fn the_relay_page_waits_for_the_poll_it_woke() {
    let mut srv = Server::start_fast().await;
    let s = srv
        .start_ok(baidu_inline("relay-polled", "kyc_retry", 6))
        .await;
    let watcher = watch_in_background(&srv.client, &s.id);
    let browser = Browser::new();
    let relay = browser.choose(&s.user_url, "liveness_failed").await;
    let html = browser.page(&relay).await;
    assert!(html.contains("data-state=\"retry_allowed\""), "{html}");
    assert!(!html.contains("being checked"), "{html}");
    let relay = browser.choose(&s.user_url, "pass").await;
    let html = browser.page(&relay).await;
    assert!(html.contains("data-state=\"verified\""), "{html}");
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    srv.stop().await;
}
