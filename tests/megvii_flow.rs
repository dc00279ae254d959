//! Megvii FaceID Lite flows end to end: the real server, a generated gRPC client, the built-in Megvii simulator
//! that signs and sends callbacks to facegate's HTTP intake, and an attacker who does not know the secret.

mod common;

use std::time::Duration;

use common::*;
use facegate::proto::v1 as pb;
use facegate::sandbox::megvii::{CallbackFault, PageOutcome};
use facegate::sandbox::MEGVII_API_SECRET;
use tonic::Code;

fn megvii_detail(o: &pb::Outcome) -> &pb::MegviiDetail {
    match o.vendor_detail.as_ref() {
        Some(pb::outcome::VendorDetail::Megvii(m)) => m,
        other => panic!("expected Megvii detail, got {other:?}"),
    }
}

/// Posts a callback form to facegate's notify intake; returns (status, body).
async fn notify(srv: &Server, form: &[(String, String)]) -> (u16, String) {
    let r = Browser::new()
        .http
        .post(format!(
            "http://{}/v1/callbacks/megvii/notify",
            srv.running().http_addr
        ))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_callback_decides_and_wakes_the_stream_without_any_poll() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(megvii_inline("mg-pass", 1)).await;
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    assert!(
        s.user_url.contains("/faceid/lite/do?token="),
        "{}",
        s.user_url
    );
    assert!(!s.user_url.contains(&id_number(1)));
    let watcher = watch_in_background(&srv.client, &s.id);
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.megvii()
        .complete(&token_of(&s.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    let stats = srv.megvii().stats();
    assert_eq!(stats.get_token, 1);
    assert_eq!(stats.get_result, 0, "the callback decided: no get_result");
    let o = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap();
    let fm = o.face_match.as_ref().unwrap();
    assert!(fm.passed);
    assert_eq!(fm.source, "authority");
    assert_eq!(fm.thresholds.len(), 4);
    assert_eq!(fm.threshold_false_accept_rate, 1e-3);
    let m = megvii_detail(&o);
    assert!(m.from_callback);
    assert_eq!(m.status, "OK");
    assert_eq!(m.biz_no, s.id);
    assert_eq!(m.liveness_result, "PASS");
    assert!(!m.comparisons.is_empty());
    assert!(o.billing.iter().any(|b| b.billed));
    assert_eq!(srv.running().service.callback_counts(), (1, 0));
    srv.stop().await;
}

#[tokio::test]
async fn each_page_outcome_maps_to_its_neutral_code() {
    let mut srv = Server::start_fast().await;
    for (i, (page, code)) in [
        (PageOutcome::FaceMismatch, pb::FailureCode::FaceMismatch),
        (PageOutcome::LivenessFailed, pb::FailureCode::LivenessFailed),
        (PageOutcome::IdNameMismatch, pb::FailureCode::IdNameMismatch),
        (PageOutcome::NoSuchIdNumber, pb::FailureCode::IdNotFound),
        (PageOutcome::Cancel, pb::FailureCode::UserAbandoned),
        (PageOutcome::Timeout, pb::FailureCode::UserTimeout),
        (
            PageOutcome::WebrtcUnsupported,
            pb::FailureCode::BrowserUnsupported,
        ),
        (
            PageOutcome::WebrtcFailed,
            pb::FailureCode::BrowserUnsupported,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let s = srv
            .start_ok(megvii_inline(
                &format!("mg-{}", page.as_str()),
                40 + i as u16,
            ))
            .await;
        srv.megvii()
            .complete(&token_of(&s.user_url), page)
            .await
            .unwrap();
        let after = srv.result(&s.id).await;
        assert_eq!(state(&after), pb::SessionState::Failed, "{page:?}");
        assert_eq!(after.failure.unwrap().code, code as i32, "{page:?}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn reference_images_go_up_front_as_multipart() {
    let mut srv = Server::start_fast().await;
    let req = pb::StartSessionRequest {
        request_id: "mg-ref".into(),
        vendor: pb::Vendor::Megvii as i32,
        vendor_options: Some(pb::start_session_request::VendorOptions::Megvii(
            pb::MegviiOptions {
                comparison_type: pb::MegviiComparisonType::ReferenceImage as i32,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let s = srv.start_ok(req).await;
    assert_eq!(
        s.required_inputs,
        vec![pb::RequiredInput::ReferenceImage as i32]
    );
    assert_eq!(
        srv.megvii().stats().get_token,
        0,
        "no token before the inputs"
    );
    let s = srv
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
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    assert_eq!(srv.megvii().stats().get_token, 1);
    srv.megvii()
        .complete(&token_of(&s.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    let o = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap();
    assert_eq!(o.face_match.unwrap().source, "ref1");
    srv.stop().await;
}

#[tokio::test]
async fn forged_tampered_and_replayed_callbacks_change_nothing() {
    let mut srv = Server::start_fast().await;
    let mut last = String::new();
    for (i, fault) in [CallbackFault::Forged, CallbackFault::Tampered]
        .into_iter()
        .enumerate()
    {
        let s = srv
            .start_ok(megvii_inline(&format!("mg-forged-{i}"), 2 + i as u16))
            .await;
        let before = srv.result(&s.id).await;
        srv.megvii().set_fault(fault);
        srv.megvii()
            .complete(&token_of(&s.user_url), PageOutcome::Pass)
            .await
            .unwrap();
        assert!(
            srv.megvii().stats().notify_failed > i as u64,
            "facegate refused the {fault:?} notify"
        );
        let after = srv.result(&s.id).await;
        assert_eq!(
            after.version, before.version,
            "{fault:?} changed the session"
        );
        assert_eq!(state(&after), pb::SessionState::AwaitingUser);
        last = s.id.clone();
    }
    assert_eq!(srv.running().service.callback_counts(), (0, 2));

    // A callback whose sign does not match is refused with 403; one with no data with 400.
    let (code, body) = notify(
        &srv,
        &[
            ("data".into(), "{\"status\":\"OK\"}".into()),
            ("sign".into(), "0".repeat(40)),
        ],
    )
    .await;
    assert_eq!((code, body.as_str()), (403, "INVALID_SIGNATURE"));
    let (code, _) = notify(&srv, &[("sign".into(), "0".repeat(40))]).await;
    assert_eq!(code, 400);
    assert_eq!(
        state(&srv.result(&last).await),
        pb::SessionState::AwaitingUser
    );
    assert_eq!(srv.running().service.callback_counts(), (0, 4));
    srv.stop().await;
}

#[tokio::test]
async fn duplicates_replays_late_and_reordered_callbacks_change_nothing_after_the_decision() {
    let mut srv = Server::start_fast().await;
    for (i, fault) in [
        CallbackFault::Duplicate,
        CallbackFault::Reordered,
        CallbackFault::Late(Duration::from_millis(300)),
    ]
    .into_iter()
    .enumerate()
    {
        let s = srv
            .start_ok(megvii_inline(&format!("mg-dup-{i}"), 3 + i as u16))
            .await;
        srv.megvii().set_fault(fault);
        let flow = srv
            .megvii()
            .complete(&token_of(&s.user_url), PageOutcome::Pass)
            .await
            .unwrap();
        let decided = srv.result(&s.id).await;
        assert_eq!(state(&decided), pb::SessionState::Verified, "{fault:?}");
        // Replaying the signed form (as the browser's return POST carries it) changes nothing either.
        let (code, _) = notify(&srv, &flow.form).await;
        assert_eq!(code, 200, "a valid replay is acknowledged");
        let later = srv.result(&s.id).await;
        assert_eq!(later.version, decided.version, "{fault:?}");
        assert_eq!(state(&later), pb::SessionState::Verified);
    }
    srv.stop().await;
}

/// SHA-1 with a settable state, for the length-extension attack (the attacker knows `sha1(secret || data)` and the
/// length of `secret || data`, but not the secret).
mod sha1_ext {
    pub fn pad(len: usize) -> Vec<u8> {
        let mut p = vec![0x80];
        while (len + p.len()) % 64 != 56 {
            p.push(0);
        }
        p.extend_from_slice(&((len as u64) * 8).to_be_bytes());
        p
    }

    fn compress(h: &mut [u32; 5], block: &[u8]) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = *h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }

    /// `sha1(prefix || pad(prefix) || suffix)` from `sha1(prefix)` and the length of `prefix || pad(prefix)`.
    pub fn extend(digest_hex: &str, glued_len: usize, suffix: &[u8]) -> String {
        let mut h = [0u32; 5];
        for (i, x) in h.iter_mut().enumerate() {
            *x = u32::from_str_radix(&digest_hex[i * 8..i * 8 + 8], 16).unwrap();
        }
        let total = glued_len + suffix.len();
        let mut tail = suffix.to_vec();
        tail.extend(pad(total));
        for block in tail.chunks(64) {
            compress(&mut h, block);
        }
        h.iter().map(|x| format!("{x:08x}")).collect()
    }
}

#[tokio::test]
async fn a_sha1_length_extension_forgery_is_refused() {
    use sha1::Digest;
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(megvii_inline("mg-ext", 5)).await;
    // The real flow ends CANCELLED, but its notify never arrives: the attacker saw the signed form (it passes
    // through the browser) and wants to turn it into a pass.
    srv.megvii().set_fault(CallbackFault::Never);
    let flow = srv
        .megvii()
        .complete(&token_of(&s.user_url), PageOutcome::Cancel)
        .await
        .unwrap();
    let data = flow
        .form
        .iter()
        .find(|(k, _)| k == "data")
        .unwrap()
        .1
        .clone();
    let sign = flow
        .form
        .iter()
        .find(|(k, _)| k == "sign")
        .unwrap()
        .1
        .clone();
    let prefix_len = MEGVII_API_SECRET.len() + data.len();
    let suffix = br#"{"status":"OK"}"#;
    let mut forged_data = data.as_bytes().to_vec();
    forged_data.extend(sha1_ext::pad(prefix_len));
    forged_data.extend_from_slice(suffix);
    let glued_len = prefix_len + sha1_ext::pad(prefix_len).len();
    let forged_sign = sha1_ext::extend(&sign, glued_len, suffix);
    // The forgery is a valid signature over the forged bytes: only strict parsing can stop it.
    let mut h = sha1::Sha1::new();
    h.update(MEGVII_API_SECRET.as_bytes());
    h.update(&forged_data);
    let real: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(real, forged_sign, "the test's length extension is correct");

    let body = format!(
        "data={}&sign={forged_sign}",
        form_urlencoded::byte_serialize(&forged_data).collect::<String>()
    );
    let r = Browser::new()
        .http
        .post(format!(
            "http://{}/v1/callbacks/megvii/notify",
            srv.running().http_addr
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "MALFORMED_CALLBACK");
    let after = srv.result(&s.id).await;
    assert_eq!(
        state(&after),
        pb::SessionState::AwaitingUser,
        "nothing changed"
    );

    // The genuine form, as the browser carries it, is still accepted.
    let (code, _) = notify(&srv, &flow.form).await;
    assert_eq!(code, 200);
    assert_eq!(state(&srv.result(&s.id).await), pb::SessionState::Failed);
    srv.stop().await;
}

#[tokio::test]
async fn a_callback_that_never_comes_ends_through_exactly_one_get_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    fast_polling(&mut config);
    quick_megvii_flows(&mut config, 1);
    let mut srv = Server::start_with(dir, config).await;
    let s = srv.start_ok(megvii_inline("mg-never", 6)).await;
    let watcher = watch_in_background(&srv.client, &s.id);
    srv.megvii().set_fault(CallbackFault::Never);
    srv.megvii()
        .complete(&token_of(&s.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(srv.megvii().stats().get_result, 1, "exactly one get_result");
    let o = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap();
    assert!(!megvii_detail(&o).from_callback);
    srv.stop().await;
}

#[tokio::test]
async fn a_flow_never_finished_expires_after_its_one_get_result() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    quick_megvii_flows(&mut config, 0);
    let mut srv = Server::start_with(dir, config).await;
    let s = srv.start_ok(megvii_inline("mg-unused", 7)).await;
    let mut client = srv.client.clone();
    let seen = stream_to_end(&mut client, &s.id).await;
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Expired);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(srv.megvii().stats().get_result, 1);
    srv.stop().await;
}

#[tokio::test]
async fn a_restart_between_token_and_callback_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    fast_polling(&mut config);
    let mut srv = Server::start_with(dir, config.clone()).await;
    let s = srv.start_ok(megvii_inline("mg-restart", 8)).await;
    let sandbox = std::sync::Arc::clone(srv.running().sandbox.as_ref().unwrap());
    config.grpc.listen = srv.running().grpc_addr;
    config.http.listen = srv.running().http_addr;
    srv.stop().await;
    let running = facegate::app::start(
        config,
        facegate::app::Mode::Sandbox(facegate::app::SandboxOptions {
            simulators: Some(std::sync::Arc::clone(&sandbox)),
            public: false,
        }),
    )
    .await
    .unwrap();
    let mut client = connect(&running).await;
    sandbox
        .megvii
        .complete(&token_of(&s.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    let r = client
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&r.session.unwrap()), pb::SessionState::Verified);
    assert_eq!(sandbox.megvii.stats().get_result, 0);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_browser_is_relayed_by_get_and_by_post_without_personal_data() {
    let mut srv = Server::start_fast().await;
    let browser = Browser::new();
    for by_get in [true, false] {
        let mut req = megvii_inline(&format!("mg-return-{by_get}"), 9);
        if let Some(pb::start_session_request::VendorOptions::Megvii(o)) =
            req.vendor_options.as_mut()
        {
            o.action_http_method = if by_get {
                pb::MegviiActionHttpMethod::Get as i32
            } else {
                pb::MegviiActionHttpMethod::Post as i32
            };
        }
        req.return_urls = Some(pb::ReturnUrls {
            success_url: "https://app.example/kyc/done".into(),
            failure_url: String::new(),
        });
        let s = srv.start_ok(req).await;
        if !by_get {
            // The browser's POST alone decides: the server notify never arrives.
            srv.megvii().set_fault(CallbackFault::Never);
        }
        let flow = srv
            .megvii()
            .complete(&token_of(&s.user_url), PageOutcome::Pass)
            .await
            .unwrap();
        let r = if by_get {
            assert_eq!(flow.return_method, "GET");
            assert!(flow.return_url.contains("biz_id="));
            browser.follow(&flow.return_url).await
        } else {
            assert_eq!(flow.return_method, "POST");
            browser
                .http
                .post(&flow.return_url)
                .form(&flow.form)
                .send()
                .await
                .unwrap()
        };
        assert_eq!(r.status(), 303);
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(
            to,
            format!("https://app.example/kyc/done?session_id={}", s.id)
        );
        assert!(!to.contains(&id_number(9)));
        assert_eq!(state(&srv.result(&s.id).await), pb::SessionState::Verified);
    }
    srv.stop().await;
}

#[tokio::test]
async fn ocr_identity_is_masked_unless_asked_for() {
    let mut srv = Server::start_fast().await;
    let req = pb::StartSessionRequest {
        request_id: "mg-ocr".into(),
        vendor: pb::Vendor::Megvii as i32,
        vendor_options: Some(pb::start_session_request::VendorOptions::Megvii(
            pb::MegviiOptions {
                idcard_mode: pb::MegviiIdcardMode::ShootFront as i32,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let s = srv.start_ok(req).await;
    assert_eq!(
        state(&s),
        pb::SessionState::AwaitingUser,
        "the user shoots the card: nothing to send"
    );
    srv.megvii()
        .complete(&token_of(&s.user_url), PageOutcome::Pass)
        .await
        .unwrap();
    let masked = srv
        .result_with(&s.id, false, false, false)
        .await
        .outcome
        .unwrap();
    let doc = masked.identity_document.clone().unwrap();
    assert!(doc.id_number.contains('*') && doc.address.is_empty());
    let m = megvii_detail(&masked);
    assert!(
        !m.idcard_front_legality.is_empty(),
        "legality scores are kept"
    );
    let revealed = srv
        .result_with(&s.id, true, false, false)
        .await
        .outcome
        .unwrap()
        .identity_document
        .unwrap();
    assert!(!revealed.id_number.contains('*'));
    assert_eq!(revealed.id_number.len(), 18);
    srv.stop().await;
}

#[tokio::test]
async fn megvii_options_are_validated() {
    let mut srv = Server::start_fast().await;
    let mut req = megvii_inline("mg-bad", 1);
    if let Some(pb::start_session_request::VendorOptions::Megvii(o)) = req.vendor_options.as_mut() {
        o.maximum_shooting_time_seconds = 5;
        o.web_title = "x".repeat(40);
    }
    let err = srv.client.start_session(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&err);
    let fields: Vec<String> = details
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|f| f.field.clone())
        .collect();
    assert!(fields.contains(&"megvii.maximum_shooting_time_seconds".to_string()));
    assert!(fields.contains(&"megvii.web_title".to_string()));
    srv.stop().await;
}

/// Status FAILED with fail_reason WEBRTC_UNSUPPORTED (the callback document's form with get_fail_reason=1) is the
/// user's browser, not a vendor error; the callback decides it, so it costs the get_token call only.
#[tokio::test]
async fn failed_with_webrtc_unsupported_is_browser_unsupported_for_one_call() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(megvii_inline("mg-webrtc-failed", 60)).await;
    srv.megvii()
        .complete(&token_of(&s.user_url), PageOutcome::WebrtcFailed)
        .await
        .unwrap();
    let after = srv.result(&s.id).await;
    assert_eq!(state(&after), pb::SessionState::Failed);
    let f = after.failure.unwrap();
    assert_eq!(f.code, pb::FailureCode::BrowserUnsupported as i32);
    assert_eq!(f.vendor_code, "WEBRTC_UNSUPPORTED");
    let stats = srv.megvii().stats();
    assert_eq!((stats.get_token, stats.get_result), (1, 0));
    srv.stop().await;
}

/// A fail_reason that echoes the session's own name and ID number is masked before it is stored.
#[tokio::test]
async fn a_fail_reason_echoing_the_identity_is_masked() {
    use sha1::Digest;
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(megvii_inline("mg-echo", 61)).await;
    srv.megvii().set_fault(CallbackFault::Never);
    let flow = srv
        .megvii()
        .complete(&token_of(&s.user_url), PageOutcome::WebrtcFailed)
        .await
        .unwrap();
    let data = &flow.form.iter().find(|(k, _)| k == "data").unwrap().1;
    let mut v: serde_json::Value = serde_json::from_str(data).unwrap();
    v["fail_reason"] = format!("NETWORK_ERROR 测试用户/{}", id_number(61).to_lowercase()).into();
    let data = v.to_string();
    let mut h = sha1::Sha1::new();
    h.update(MEGVII_API_SECRET.as_bytes());
    h.update(data.as_bytes());
    let sign: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let (code, _) = notify(&srv, &[("data".into(), data), ("sign".into(), sign)]).await;
    assert_eq!(code, 200);
    let r = srv.result_with(&s.id, false, false, false).await;
    let f = r.session.unwrap().failure.unwrap();
    assert_eq!(f.code, pb::FailureCode::VendorError as i32);
    let m = megvii_detail(r.outcome.as_ref().unwrap());
    for text in [&f.vendor_code, &m.fail_reason] {
        assert!(
            !text.contains("测试用户") && !text.to_uppercase().contains(&id_number(61)),
            "{text}"
        );
        assert!(text.starts_with("NETWORK_ERROR 测***/"), "{text}");
    }
    let stats = srv.megvii().stats();
    assert_eq!((stats.get_token, stats.get_result), (1, 0));
    srv.stop().await;
}
