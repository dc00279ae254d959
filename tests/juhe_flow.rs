//! Juhe flows end to end: the real server, generated gRPC client, built-in Juhe simulator.

mod common;

use common::*;
use facegate::app::Mode;
use facegate::proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

fn juhe_detail(o: &pb::Outcome) -> &pb::JuheDetail {
    match o.vendor_detail.as_ref() {
        Some(pb::outcome::VendorDetail::Juhe(j)) => j,
        other => panic!("expected Juhe detail, got {other:?}"),
    }
}

#[tokio::test]
async fn inline_pass_is_final_in_the_reply_and_billed_once() {
    let mut srv = Server::start().await;
    let resp = srv
        .client
        .start_session(juhe_inline("inline-pass", 1))
        .await
        .unwrap()
        .into_inner();
    let s = resp.session.unwrap();
    assert_eq!(state(&s), pb::SessionState::Verified);
    assert!(s.required_inputs.is_empty());
    let masked = s.identity.as_ref().unwrap();
    assert_eq!(
        masked.id_number_masked,
        format!("110***********{}", &id_number(1)[14..])
    );
    assert_eq!(masked.name_masked, "测***");

    let r = srv
        .client
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let o = r.outcome.unwrap();
    let fm = o.face_match.clone().unwrap();
    assert_eq!(
        (fm.score, fm.threshold, fm.threshold_false_accept_rate),
        (96.0, 60.0, 0.001)
    );
    assert!(fm.passed);
    assert_eq!(fm.thresholds.len(), 2);
    assert_eq!(o.billing.len(), 1);
    assert!(o.billing[0].billed);
    assert!(o.billing[0].vendor_reference.starts_with("JH"));
    let j = juhe_detail(&o);
    assert_eq!(j.res, 1);
    assert!(
        j.encrypted,
        "sandbox has an openid, so the encrypted endpoint is the default"
    );
    let stats = srv.juhe_stats();
    assert_eq!(
        (
            stats.verify_calls,
            stats.verify_encry_calls,
            stats.billed_calls
        ),
        (0, 1, 1)
    );
    srv.stop().await;
}

#[tokio::test]
async fn plain_mode_uses_the_plain_endpoint() {
    let mut srv = Server::start().await;
    let mut req = juhe_inline("plain", 1);
    req.vendor_options = Some(pb::start_session_request::VendorOptions::Juhe(
        pb::JuheOptions {
            mode: pb::JuheMode::Plain as i32,
        },
    ));
    let s = srv.start_ok(req).await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    let stats = srv.juhe_stats();
    assert_eq!((stats.verify_calls, stats.verify_encry_calls), (1, 0));
    srv.stop().await;
}

#[tokio::test]
async fn every_outcome_scenario_maps_to_its_neutral_result() {
    let mut srv = Server::start().await;
    let cases: [(u16, f64, pb::SessionState, Option<pb::FailureCode>); 7] = [
        (
            901,
            0.0,
            pb::SessionState::Failed,
            Some(pb::FailureCode::FaceMismatch),
        ),
        (
            902,
            0.0,
            pb::SessionState::Failed,
            Some(pb::FailureCode::IdNameMismatch),
        ),
        (
            903,
            0.0,
            pb::SessionState::Failed,
            Some(pb::FailureCode::NoFaceFound),
        ),
        (
            904,
            0.0,
            pb::SessionState::Failed,
            Some(pb::FailureCode::IdPhotoUnavailable),
        ),
        (
            905,
            0.0,
            pb::SessionState::Failed,
            Some(pb::FailureCode::ScoreBelowThreshold),
        ),
        (906, 0.0, pb::SessionState::Verified, None),
        (
            906,
            0.0001,
            pb::SessionState::Failed,
            Some(pb::FailureCode::ScoreBelowThreshold),
        ),
    ];
    for (i, (seq, far, want_state, want_code)) in cases.into_iter().enumerate() {
        let mut req = juhe_inline(&format!("scenario-{i}"), seq);
        req.target_false_accept_rate = far;
        let s = srv.start_ok(req).await;
        assert_eq!(state(&s), want_state, "scenario {seq} at FAR {far}");
        assert_eq!(
            s.failure.as_ref().map(|f| f.code),
            want_code.map(|c| c as i32),
            "scenario {seq}"
        );
        if let Some(f) = &s.failure {
            assert!(!f.vendor_code.is_empty());
        }
    }
    let mut req = juhe_inline("far-check", 906);
    req.target_false_accept_rate = 0.0001;
    let id = srv.start_ok(req).await.id;
    let r = srv
        .client
        .get_result(pb::GetResultRequest {
            session_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let fm = r.outcome.unwrap().face_match.unwrap();
    assert_eq!(
        (
            fm.score,
            fm.threshold,
            fm.threshold_false_accept_rate,
            fm.passed
        ),
        (65.0, 70.0, 0.0001, false)
    );
    srv.stop().await;
}

#[tokio::test]
async fn vendor_errors_map_to_codes_and_leave_the_session_retryable() {
    let mut srv = Server::start().await;
    let cases = [
        (
            911,
            Code::Unavailable,
            "VENDOR_DATA_SOURCE_TIMEOUT",
            "226401",
            true,
        ),
        (
            912,
            Code::FailedPrecondition,
            "VENDOR_NO_RECORD",
            "226402",
            false,
        ),
        (914, Code::Unavailable, "VENDOR_UNAVAILABLE", "226404", true),
        (
            921,
            Code::ResourceExhausted,
            "VENDOR_RATE_LIMITED",
            "10012",
            true,
        ),
        (
            922,
            Code::ResourceExhausted,
            "VENDOR_RATE_LIMITED",
            "10011",
            true,
        ),
        (
            923,
            Code::ResourceExhausted,
            "VENDOR_RATE_LIMITED",
            "10013",
            true,
        ),
        (924, Code::Unavailable, "VENDOR_UNAVAILABLE", "10014", true),
        (925, Code::Unavailable, "VENDOR_UNAVAILABLE", "10020", true),
    ];
    for (seq, code, want_reason, vendor_code, retry) in cases {
        let st = srv
            .client
            .start_session(juhe_inline(&format!("err-{seq}"), seq))
            .await
            .unwrap_err();
        assert_eq!(st.code(), code, "scenario {seq}");
        let (reason, md) = reason(&st);
        assert_eq!(reason, want_reason, "scenario {seq}");
        assert_eq!(md["vendorCode"], vendor_code);
        assert_eq!(md["possiblyBilled"], "false");
        // A replay of StartSession answers this same error, so it has no RetryInfo: the ErrorInfo says to send the
        // image again, and after how long where the vendor said waiting helps.
        assert!(!has_retry_info(&st), "scenario {seq}");
        assert_eq!(md["retryWith"], "UploadReference", "scenario {seq}");
        assert_eq!(md.contains_key("retryDelay"), retry, "scenario {seq}");
        assert!(!st.message().contains(&id_number(seq)));
        let session_id = md["sessionId"].clone();
        let s = srv
            .client
            .get_result(pb::GetResultRequest {
                session_id: session_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        assert_eq!(state(&s), pb::SessionState::RequiresInput);
        assert_eq!(
            s.required_inputs,
            vec![pb::RequiredInput::ProbeImage as i32]
        );
        let e = s.last_attempt_error.unwrap();
        assert_eq!(
            (e.reason.as_str(), e.vendor_code.as_str(), e.possibly_billed),
            (want_reason, vendor_code, false)
        );
    }
    assert_eq!(srv.juhe_stats().billed_calls, 0);

    // A retry is a new intent: sending the image again makes exactly one new call.
    let st = srv
        .client
        .start_session(juhe_inline("err-retry", 911))
        .await
        .unwrap_err();
    let session_id = reason(&st).1["sessionId"].clone();
    let before = srv.juhe_stats();
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
    assert!(
        has_retry_info(&again),
        "sending the same image again is the retry"
    );
    let after = srv.juhe_stats();
    assert_eq!(after.verify_encry_calls, before.verify_encry_calls + 1);
    srv.stop().await;
}

#[tokio::test]
async fn stepwise_flow_streams_each_change_and_ends_at_the_final_state() {
    let mut srv = Server::start().await;
    let s = srv.start_ok(juhe_empty("stepwise")).await;
    assert_eq!(state(&s), pb::SessionState::RequiresInput);
    assert_eq!(
        s.required_inputs,
        vec![
            pb::RequiredInput::Identity as i32,
            pb::RequiredInput::ProbeImage as i32
        ]
    );
    let mut stream = srv
        .client
        .stream_status(pb::StreamStatusRequest {
            session_id: s.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap().session.unwrap();
    assert_eq!(
        first.version, s.version,
        "the first message is the current snapshot"
    );

    let after_identity = srv
        .client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: s.id.clone(),
            identity: Some(identity(1)),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(
        after_identity.required_inputs,
        vec![pb::RequiredInput::ProbeImage as i32]
    );
    let second = stream.next().await.unwrap().unwrap().session.unwrap();
    assert_eq!(
        second.required_inputs,
        vec![pb::RequiredInput::ProbeImage as i32]
    );

    let done = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(probe()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&done), pb::SessionState::Verified);
    let mut rest = Vec::new();
    while let Some(msg) = stream.next().await {
        rest.push(msg.unwrap().session.unwrap());
    }
    assert_eq!(
        rest.len(),
        1,
        "one message for the decision, then the stream ends"
    );
    assert_eq!(state(&rest[0]), pb::SessionState::Verified);
    assert!(rest[0].version > second.version);

    // A stream opened on a final session sends the snapshot and ends.
    let mut late = srv
        .client
        .stream_status(pb::StreamStatusRequest {
            session_id: s.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let only = late.next().await.unwrap().unwrap().session.unwrap();
    assert_eq!(state(&only), pb::SessionState::Verified);
    assert!(late.next().await.is_none());

    // Input after the end is refused.
    let st = srv
        .client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: s.id.clone(),
            identity: Some(identity(1)),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert_eq!(reason(&st).0, "SESSION_FINAL");
    srv.stop().await;
}

#[tokio::test]
async fn image_first_then_identity_also_completes() {
    let mut srv = Server::start().await;
    let s = srv.start_ok(juhe_empty("image-first")).await;
    let s2 = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(probe()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(s2.required_inputs, vec![pb::RequiredInput::Identity as i32]);
    let s3 = srv
        .client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: s.id.clone(),
            identity: Some(identity(902)),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&s3), pb::SessionState::Failed);
    assert_eq!(
        s3.failure.unwrap().code,
        pb::FailureCode::IdNameMismatch as i32
    );
    srv.stop().await;
}

#[tokio::test]
async fn cancel_is_final() {
    let mut srv = Server::start().await;
    let s = srv.start_ok(juhe_empty("cancel")).await;
    let c = srv
        .client
        .cancel_session(pb::CancelSessionRequest {
            session_id: s.id.clone(),
            reason: "user left".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&c), pb::SessionState::Canceled);
    assert_eq!(c.cancel_reason, "user left");
    let st = srv
        .client
        .cancel_session(pb::CancelSessionRequest {
            session_id: s.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (st.code(), reason(&st).0.as_str()),
        (Code::FailedPrecondition, "SESSION_FINAL")
    );
    let st = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(probe()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&st).0, "SESSION_FINAL");
    assert_eq!(srv.juhe_requests(), 0);
    srv.stop().await;
}

#[tokio::test]
async fn invalid_input_gets_field_violations_without_echoing_personal_data() {
    let mut srv = Server::start().await;
    let mut bad = identity(1);
    let mut chars: Vec<char> = bad.id_number.chars().collect();
    chars[16] = if chars[16] == '1' { '2' } else { '1' };
    bad.id_number = chars.into_iter().collect();
    let req = pb::StartSessionRequest {
        request_id: "bad-input".into(),
        vendor: pb::Vendor::Juhe as i32,
        identity: Some(bad.clone()),
        images: vec![pb::FaceImage {
            data: b"GIF89a not an accepted image".to_vec(),
            role: 0,
        }],
        ..Default::default()
    };
    let st = srv.client.start_session(req).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    assert_eq!(reason(&st).0, "INVALID_REQUEST");
    let details = tonic_types::StatusExt::get_error_details(&st);
    let fields: Vec<String> = details
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert!(
        fields.contains(&"identity.id_number".to_string()),
        "{fields:?}"
    );
    assert!(fields.contains(&"images[0].data".to_string()), "{fields:?}");
    assert!(!format!("{st:?}").contains(&bad.id_number));
    assert!(!format!("{st:?}").contains("测试用户"));

    let st = srv
        .client
        .get_result(pb::GetResultRequest {
            session_id: "ses_0123456789abcdef0123456789abcdef".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (st.code(), reason(&st).0.as_str()),
        (Code::NotFound, "SESSION_NOT_FOUND")
    );

    let mut far = juhe_inline("far-bad", 1);
    far.target_false_accept_rate = 1e-6;
    let st = srv.client.start_session(far).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument);
    assert_eq!(
        srv.juhe_stats(),
        Default::default(),
        "no vendor call for invalid requests"
    );
    srv.stop().await;
}

#[tokio::test]
async fn vendors_without_credentials_are_refused_with_error_info() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    let mut srv = Server::start_mode(dir, config, Mode::Production).await;
    for v in [pb::Vendor::Juhe, pb::Vendor::Baidu, pb::Vendor::Megvii] {
        let st = srv
            .client
            .start_session(pb::StartSessionRequest {
                request_id: format!("v-{}", v as i32),
                vendor: v as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::FailedPrecondition);
        let (reason, meta) = reason(&st);
        assert_eq!(reason, "VENDOR_NOT_CONFIGURED");
        assert_eq!(
            meta["vendor"],
            v.as_str_name().trim_start_matches("VENDOR_").to_lowercase()
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_10_mb_image_passes_the_transport_and_meets_the_vendor_limit() {
    let mut srv = Server::start().await;
    let mut big = JPEG.to_vec();
    big.resize(10 * 1024 * 1024, 0);
    let mut req = juhe_inline("big-image", 1);
    req.images = vec![pb::FaceImage {
        data: big,
        role: pb::ImageRole::Probe as i32,
    }];
    let st = srv.client.start_session(req).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    let details = tonic_types::StatusExt::get_error_details(&st);
    let v = &details.bad_request().unwrap().field_violations[0];
    assert_eq!(v.field, "images[0].data");
    assert!(v.description.contains("juhe"), "{}", v.description);
    assert_eq!(srv.juhe_stats(), Default::default());
    srv.stop().await;
}

/// Answers seen in the wild (simulator scenarios 907-910): each is one billed call that decides the session, so a
/// retry by the caller cannot pay again.
#[tokio::test]
async fn answers_seen_in_the_wild_decide_with_one_billed_call() {
    let mut srv = Server::start().await;
    let cases: [(u16, pb::SessionState, Option<pb::FailureCode>, &str); 4] = [
        // res 2 with a code the document does not list: still the face-comparison failure res 2 stands for.
        (
            907,
            pb::SessionState::Failed,
            Some(pb::FailureCode::FaceMismatch),
            "3006",
        ),
        // res 2 without any code.
        (
            908,
            pb::SessionState::Failed,
            Some(pb::FailureCode::FaceMismatch),
            "res=2",
        ),
        // res "1" and error_code "0" as strings.
        (909, pb::SessionState::Verified, None, ""),
        // res 2 / 3005 whose message echoes the name and ID number.
        (
            910,
            pb::SessionState::Failed,
            Some(pb::FailureCode::FaceMismatch),
            "3005",
        ),
    ];
    for (seq, want_state, want_code, vendor_code) in cases {
        let before = srv.juhe_stats();
        let s = srv.start_ok(juhe_inline(&format!("wild-{seq}"), seq)).await;
        let after = srv.juhe_stats();
        assert_eq!(state(&s), want_state, "scenario {seq}");
        assert_eq!(
            after.verify_encry_calls + after.verify_calls,
            before.verify_encry_calls + before.verify_calls + 1,
            "scenario {seq}: one vendor call"
        );
        assert_eq!(
            after.billed_calls,
            before.billed_calls + 1,
            "scenario {seq}: billed once"
        );
        assert_eq!(
            s.failure.as_ref().map(|f| f.code),
            want_code.map(|c| c as i32),
            "scenario {seq}"
        );
        if let Some(f) = &s.failure {
            assert_eq!(f.vendor_code, vendor_code, "scenario {seq}");
        }

        // The session is decided: a new probe image is refused without a vendor call, and a replay of the same
        // StartSession answers the same session without one.
        if want_state == pb::SessionState::Failed {
            let refused = srv
                .client
                .upload_reference(pb::UploadReferenceRequest {
                    session_id: s.id.clone(),
                    image: Some(probe()),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(
                refused.code(),
                Code::FailedPrecondition,
                "scenario {seq}: {refused:?}"
            );
        }
        let replay = srv.start_ok(juhe_inline(&format!("wild-{seq}"), seq)).await;
        assert_eq!(replay.id, s.id);
        let end = srv.juhe_stats();
        assert_eq!(
            (end.verify_encry_calls + end.verify_calls, end.billed_calls),
            (
                after.verify_encry_calls + after.verify_calls,
                after.billed_calls
            ),
            "scenario {seq}: no second call"
        );
    }

    // Scenario 910 echoed the name and ID number: neither is stored as sent.
    let s = srv.start_ok(juhe_inline("wild-910", 910)).await;
    let r = srv
        .client
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let f = r.session.unwrap().failure.unwrap();
    let j = juhe_detail(r.outcome.as_ref().unwrap()).clone();
    let seen = format!("{} {} {} {}", f.vendor_message, j.message, j.desc, j.code);
    assert!(
        !seen.contains("测试用户") && !seen.contains(&id_number(910)),
        "{seen}"
    );
    assert!(j.message.contains("测***"), "{}", j.message);
    srv.stop().await;
}
