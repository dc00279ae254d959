//! An independent Megvii fake (not facegate's simulator) configured as the base URL: it records the get_token and
//! get_result requests in their documented form, and drives facegate with callbacks it signs itself
//! (`sha1(api_secret + data)`, lowercase hex). Callbacks signed with any other secret never change a session.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Router;
use common::recorder::{serve, Recorder, Seen};
use common::*;
use facegate::app::Mode;
use facegate::config::Secret;
use facegate::proto::v1 as pb;
use serde_json::json;
use sha1::Digest;

const SECRET: &str = "independent-megvii-secret";
const BIZ_ID: &str = "1462259748,52b13fb5-8dfb-4537-a62b-a641d5e929f1";

#[derive(Default)]
struct Fake {
    seen: Recorder,
}

async fn handle(
    State(fake): State<Arc<Fake>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    fake.seen.record(&method, &uri, &headers, &body);
    match uri.path() {
        "/faceid/lite/get_token" => axum::Json(json!({"request_id": "1,abc", "time_used": 5,
            "token": "0123456789abcdef0123456789abcdef", "biz_id": BIZ_ID,
            "expired_time": 4102444800i64}))
        .into_response(),
        "/faceid/lite/get_result" => {
            let biz_no = fake.biz_no();
            axum::Json(result_json(&biz_no)).into_response()
        }
        _ => (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error_message": "API_NOT_FOUND", "request_id": "1,x", "time_used": 1}),
            ),
        )
            .into_response(),
    }
}

impl Fake {
    /// The biz_no of the latest get_token.
    fn biz_no(&self) -> String {
        self.seen
            .seen()
            .iter()
            .rev()
            .find(|s| s.path == "/faceid/lite/get_token")
            .and_then(|s| s.field("biz_no"))
            .unwrap_or_default()
    }
}

fn result_json(biz_no: &str) -> serde_json::Value {
    let thresholds = json!({"1e-3": 62.169, "1e-4": 69.315, "1e-5": 74.399, "1e-6": 78.038});
    json!({"status": "OK", "biz_info": {"biz_id": BIZ_ID, "biz_no": biz_no},
        "liveness_result": {"result": "PASS", "procedure_type": "video",
            "details": {"UPLOAD_TIMES": 1, "FACE_NOT_FOUND": 0},
            "face_genuineness": {"synthetic_face_confidence": 0.01, "synthetic_face_threshold": 0.5}},
        "verify_result": {"verify_time": 1462259763, "error_message": null,
            "result_faceid": {"confidence": 88.5, "thresholds": thresholds}}})
}

fn signed(secret: &str, data: &str) -> Vec<(String, String)> {
    let mut h = sha1::Sha1::new();
    h.update(secret.as_bytes());
    h.update(data.as_bytes());
    let sign: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    vec![("data".into(), data.into()), ("sign".into(), sign)]
}

async fn fake_megvii() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new().fallback(handle).with_state(Arc::clone(&fake));
    let addr = serve(app).await;
    (fake, format!("http://{addr}"))
}

async fn server_against(base: &str, quick_end: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    config.megvii.base_url = base.into();
    config.megvii.page_url = format!("{base}/faceid/lite/do");
    // The fake is plaintext on loopback.
    config.megvii.allow_plaintext_http = true;
    config.megvii.api_key = Secret::new("independent-key");
    config.megvii.api_secret = Secret::new(SECRET);
    if quick_end {
        config.megvii.max_flow_secs = 1;
        config.megvii.result_wait_secs = 0;
        config.session.sweep_interval_secs = 1;
    }
    Server::start_mode(dir, config, Mode::Production).await
}

async fn post_notify(srv: &Server, form: &[(String, String)]) -> u16 {
    Browser::new()
        .http
        .post(format!(
            "http://{}/v1/callbacks/megvii/notify",
            srv.running().http_addr
        ))
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn get_token_is_the_documented_form_and_only_the_right_secret_decides() {
    let (fake, base) = fake_megvii().await;
    let mut srv = server_against(&base, false).await;
    let s = srv.start_ok(megvii_inline("mw-1", 1)).await;
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    assert_eq!(
        s.user_url,
        format!("{base}/faceid/lite/do?token=0123456789abcdef0123456789abcdef")
    );
    let seen = fake.seen.seen();
    assert_eq!(seen.len(), 1);
    let t = &seen[0];
    assert_eq!(t.method, "POST");
    assert!(t
        .content_type
        .starts_with("application/x-www-form-urlencoded"));
    assert!(t.query.is_empty(), "credentials travel in the body");
    let http = srv.running().http_addr;
    for (name, want) in [
        ("api_key", "independent-key".to_owned()),
        ("api_secret", SECRET.to_owned()),
        ("biz_no", s.id.clone()),
        ("comparison_type", "1".into()),
        ("idcard_mode", "0".into()),
        ("idcard_name", "测试用户".into()),
        ("idcard_number", id_number(1)),
        (
            "notify_url",
            format!("http://{http}/v1/callbacks/megvii/notify"),
        ),
        ("return_url", format!("http://{http}/v1/return/{}", s.id)),
        ("action_http_method", "POST".into()),
        ("get_fail_reason", "1".into()),
    ] {
        assert_eq!(t.field(name).as_deref(), Some(want.as_str()), "{name}");
    }

    // Signed with another secret: refused, nothing changes.
    let data = result_json(&s.id).to_string();
    assert_eq!(
        post_notify(&srv, &signed("some-other-secret", &data)).await,
        403
    );
    let mut c = srv.client.clone();
    let snapshot = c
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&snapshot), pb::SessionState::AwaitingUser);
    assert_eq!(snapshot.version, s.version);

    // Signed with the account's secret: the stream ends VERIFIED.
    let id = s.id.clone();
    let watcher = tokio::spawn(async move { stream_to_end(&mut c, &id).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post_notify(&srv, &signed(SECRET, &data)).await, 200);
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    assert!(
        fake.seen
            .seen()
            .iter()
            .all(|s| s.path != "/faceid/lite/get_result"),
        "no get_result when a callback decided"
    );
    srv.stop().await;
}

#[tokio::test]
async fn reference_images_are_sent_as_multipart_files() {
    let (fake, base) = fake_megvii().await;
    let mut srv = server_against(&base, false).await;
    let req = pb::StartSessionRequest {
        request_id: "mw-ref".into(),
        vendor: pb::Vendor::Megvii as i32,
        vendor_options: Some(pb::start_session_request::VendorOptions::Megvii(
            pb::MegviiOptions {
                comparison_type: pb::MegviiComparisonType::ReferenceImage as i32,
                uuid: "user-42".into(),
                ..Default::default()
            },
        )),
        images: vec![
            pb::FaceImage {
                data: JPEG.to_vec(),
                role: pb::ImageRole::Reference as i32,
            },
            pb::FaceImage {
                data: JPEG.to_vec(),
                role: pb::ImageRole::Reference as i32,
            },
        ],
        ..Default::default()
    };
    let s = srv.start_ok(req).await;
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    let seen = fake.seen.seen();
    let t = &seen[0];
    assert!(t.content_type.starts_with("multipart/form-data; boundary="));
    let body = String::from_utf8_lossy(&t.body);
    for part in [
        "name=\"comparison_type\"\r\n\r\n0\r\n",
        "name=\"uuid\"\r\n\r\nuser-42\r\n",
        "name=\"image_ref1\"; filename=\"ref1.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n",
        "name=\"image_ref2\"; filename=\"ref2.jpg\"",
    ] {
        assert!(body.contains(part), "missing {part:?}");
    }
    assert!(!body.contains("idcard_number"));
    srv.stop().await;
}

#[tokio::test]
async fn without_a_callback_the_one_get_result_is_a_documented_get() {
    let (fake, base) = fake_megvii().await;
    let mut srv = server_against(&base, true).await;
    let s = srv.start_ok(megvii_inline("mw-never", 2)).await;
    let mut c = srv.client.clone();
    let seen = tokio::time::timeout(Duration::from_secs(20), stream_to_end(&mut c, &s.id))
        .await
        .unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let calls: Vec<Seen> = fake
        .seen
        .seen()
        .iter()
        .filter(|s| s.path == "/faceid/lite/get_result")
        .cloned()
        .collect();
    assert_eq!(calls.len(), 1, "get_result at most once");
    assert_eq!(calls[0].method, "GET");
    let q: std::collections::BTreeMap<_, _> = calls[0].query.iter().cloned().collect();
    assert_eq!(q["api_key"], "independent-key");
    assert_eq!(q["api_secret"], SECRET);
    assert_eq!(q["biz_id"], BIZ_ID);
    srv.stop().await;
}
