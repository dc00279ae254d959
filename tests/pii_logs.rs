//! Personal data never reaches the logs: every flow and error path runs with debug logging captured, and the
//! captured text must not contain the test identity's name, ID numbers, image, or the vendor secrets.

mod common;

use common::*;
use facegate::proto::v1 as pb;

#[tokio::test]
async fn flows_and_errors_log_no_personal_data_or_secrets() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();

    let mut srv = Server::start_fast().await;
    let name = "测试用户";
    let mut ids = Vec::new();
    for (i, seq) in [1u16, 901, 902, 911, 921].into_iter().enumerate() {
        ids.push(id_number(seq));
        let _ = srv
            .client
            .start_session(juhe_inline(&format!("pii-{i}"), seq))
            .await;
    }
    let mut plain = juhe_inline("pii-plain", 1);
    plain.vendor_options = Some(pb::start_session_request::VendorOptions::Juhe(
        pb::JuheOptions {
            mode: pb::JuheMode::Plain as i32,
        },
    ));
    let _ = srv.client.start_session(plain).await;
    // Invalid input: a wrong check digit must not be echoed either.
    let mut wrong = identity(1);
    wrong.id_number = format!(
        "{}{}",
        &wrong.id_number[..17],
        if wrong.id_number.ends_with('0') {
            '1'
        } else {
            '0'
        }
    );
    ids.push(wrong.id_number.clone());
    let _ = srv
        .client
        .start_session(pb::StartSessionRequest {
            request_id: "pii-bad".into(),
            vendor: pb::Vendor::Juhe as i32,
            identity: Some(wrong),
            ..Default::default()
        })
        .await;
    let s = srv.start_ok(juhe_empty("pii-step")).await;
    srv.client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: s.id.clone(),
            identity: Some(identity(1)),
        })
        .await
        .unwrap();
    srv.client
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            reveal_personal_data: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // Baidu: identity to idcard/submit, the page, polling, and every result on request.
    let browser = Browser::new();
    for (i, outcome) in ["pass", "id_name_mismatch"].into_iter().enumerate() {
        let seq = 30 + i as u16;
        ids.push(id_number(seq));
        let b = srv
            .client
            .start_session(baidu_inline(&format!("pii-baidu-{i}"), "", seq))
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        let relay = browser.choose(&b.user_url, outcome).await;
        browser.follow(&relay).await;
        let mut client = srv.client.clone();
        stream_to_end(&mut client, &b.id).await;
        let _ = srv
            .client
            .get_result(pb::GetResultRequest {
                session_id: b.id.clone(),
                reveal_personal_data: true,
                include_face_image: true,
                include_media: true,
            })
            .await;
    }
    let mut reference = baidu_inline("pii-baidu-ref", "reference", 1);
    reference.identity = None;
    reference.images = vec![pb::FaceImage {
        data: JPEG.to_vec(),
        role: pb::ImageRole::Reference as i32,
    }];
    let _ = srv.client.start_session(reference).await;

    // Megvii: identity to get_token, a signed callback with OCR data, a reveal, and a get_result.
    let mut ocr = megvii_inline("pii-megvii-ocr", 50);
    ocr.identity = None;
    if let Some(pb::start_session_request::VendorOptions::Megvii(o)) = ocr.vendor_options.as_mut() {
        o.idcard_mode = pb::MegviiIdcardMode::ShootFront as i32;
    }
    for req in [megvii_inline("pii-megvii", 51), ocr] {
        if let Some(id) = req.identity.as_ref() {
            ids.push(id.id_number.clone());
        }
        let m = srv.start_ok(req).await;
        srv.megvii_page(&m.user_url, facegate::sandbox::megvii::PageOutcome::Pass)
            .await;
        let _ = srv
            .client
            .get_result(pb::GetResultRequest {
                session_id: m.id.clone(),
                reveal_personal_data: true,
                ..Default::default()
            })
            .await;
    }
    srv.stop().await;

    let text = logs.text();
    assert!(
        text.contains("vendor call") && text.contains("session started"),
        "logging was captured"
    );
    for id in &ids {
        assert!(!text.contains(id.as_str()), "an ID number reached the logs");
        assert!(
            !text.contains(&id[..14]),
            "part of an ID number reached the logs"
        );
    }
    assert!(!text.contains(name), "a name reached the logs");
    assert!(!text.contains("沙箱用户"), "an OCR'd name reached the logs");
    let image_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(JPEG)
    };
    assert!(
        !text.contains(&image_b64[..16]),
        "image data reached the logs"
    );
    for secret in [
        facegate::sandbox::JUHE_KEY,
        facegate::sandbox::JUHE_OPENID,
        facegate::sandbox::BAIDU_API_KEY,
        facegate::sandbox::BAIDU_SECRET_KEY,
        facegate::sandbox::MEGVII_API_KEY,
        facegate::sandbox::MEGVII_API_SECRET,
        "access_token=",
        "client_secret=",
    ] {
        assert!(!text.contains(secret), "a vendor secret reached the logs");
    }
    assert!(
        text.contains("vendor page ready"),
        "the Baidu flow was logged"
    );
}
