//! An independent Baidu endpoint (not facegate's simulator) configured as the base URL records what the adapter
//! sends: the access_token in the URL query, JSON bodies with exactly the documented fields, and one token refresh
//! after Baidu calls the token invalid.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Router;
use common::recorder::{serve, Recorder, Seen};
use common::*;
use facegate::app::Mode;
use facegate::config::{BaiduPlanConfig, Secret};
use facegate::proto::v1 as pb;
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    seen: Recorder,
    tokens_issued: Mutex<u32>,
    refuse_first_generate: Mutex<bool>,
    host: Mutex<String>,
}

const TOKEN_1: &str = "24.0123456789abcdef0123456789abcdef.2592000.1.282335-1";
const TOKEN_2: &str = "24.fedcba9876543210fedcba9876543210.2592000.1.282335-1";
const JPEG_FACE: &[u8] = &[
    0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0xff, 0xd9,
];

async fn handle(
    State(fake): State<Arc<Fake>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = fake.seen.record(&method, &uri, &headers, &body).path;
    if path == "/face.jpg" {
        return ([("content-type", "image/jpeg")], JPEG_FACE.to_vec()).into_response();
    }
    if path == "/oauth/2.0/token" {
        let mut n = fake.tokens_issued.lock().unwrap();
        *n += 1;
        let token = if *n == 1 { TOKEN_1 } else { TOKEN_2 };
        return axum::Json(
            json!({"access_token": token, "expires_in": 2592000, "refresh_token": "25.x",
            "scope": "public", "session_key": "k", "session_secret": "s"}),
        )
        .into_response();
    }
    let endpoint = path.trim_start_matches("/rpc/2.0/brain/solution/faceprint/");
    if endpoint == "verifyToken/generate" {
        let mut refuse = fake.refuse_first_generate.lock().unwrap();
        if *refuse {
            *refuse = false;
            return axum::Json(
                json!({"error_code": 110, "error_msg": "Access token invalid or no longer valid"}),
            )
            .into_response();
        }
    }
    let host = fake.host.lock().unwrap().clone();
    let result = match endpoint {
        "verifyToken/generate" => json!({"verify_token": "Yz9rWITm4vak16PBAh5x8oG7"}),
        "idcard/submit" => json!(1),
        "uploadMatchImage" => Value::Null,
        "result/getall" => {
            json!({"verify_count": 1, "ocr_charge_count": 0, "match_charge_count": 0,
            "verify_charge_count": 1, "verify_result": [{"order": 1, "is_verify_passed": true, "code": "0",
            "message": "", "verify_time": "2023-10-10 10:10:10", "is_charged": true, "charge_type": "verify",
            "charge_time": "2023-10-10 10:10:10", "is_ocr_charge": false, "ocr_count": 0,
            "verify_detail": {"face_image": "xxx.jpg", "verify_log_id": "77", "score": 89.9, "threshold": 80,
            "liveness_score": 0, "spoofing_score": 0, "is_demote": false},
            "idcard_confirm": {"name": "张三", "idcard_number": "110101190001010014", "idcard_type": "0"}}]})
        }
        "result/detail" => {
            json!({"verify_result": {"score": 89.9, "liveness_score": 0.97, "spoofing": 0.0},
            "idcard_confirm": {"name": "张三", "idcard_number": "110101190001010014"}})
        }
        "result/stat" => {
            json!({"Verify_FIN": [{"error_code": 0, "count": 1}], "verify": [{"error_code": 0, "count": 1}]})
        }
        "result/simple" => json!({"image": format!("http://{host}/face.jpg")}),
        "result/media/query" => {
            json!({"processVideo": [format!("http://{host}/v.mp4")], "images": [], "extInfo": null})
        }
        _ => {
            return axum::Json(json!({"error_code": 3, "error_msg": "Unsupported openapi method"}))
                .into_response()
        }
    };
    axum::Json(json!({"success": true, "result": result, "log_id": "1814798895"})).into_response()
}

async fn fake_baidu() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new().fallback(handle).with_state(Arc::clone(&fake));
    let addr = serve(app).await;
    *fake.host.lock().unwrap() = addr.to_string();
    (fake, format!("http://{addr}"))
}

async fn server_against(base: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    fast_polling(&mut config);
    config.baidu.base_url = base.into();
    config.baidu.page_url = format!("{base}/face/print/");
    // The fake is plaintext on loopback.
    config.baidu.allow_plaintext_http = true;
    config.baidu.api_key = Secret::new("independent-api-key");
    config.baidu.secret_key = Secret::new("independent-secret-key");
    for (name, needs_identity, needs_reference) in [("kyc", true, false), ("ref", false, true)] {
        config.baidu.plans.insert(
            name.into(),
            BaiduPlanConfig {
                plan_id: format!("plan-{name}"),
                needs_identity,
                needs_reference,
                ..Default::default()
            },
        );
    }
    config.baidu.default_plan = "kyc".into();
    Server::start_mode(dir, config, Mode::Production).await
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn requests_have_the_documented_shape() {
    let (fake, base) = fake_baidu().await;
    *fake.refuse_first_generate.lock().unwrap() = true;
    let mut srv = server_against(&base).await;
    let s = srv.start_ok(baidu_inline("wire", "kyc", 1)).await;
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    assert!(s.user_url.starts_with(&format!(
        "{base}/face/print/?token=Yz9rWITm4vak16PBAh5x8oG7&successUrl=http"
    )));
    let mut client = srv.client.clone();
    let seen = stream_to_end(&mut client, &s.id).await;
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    let r = srv
        .client
        .get_result(pb::GetResultRequest {
            session_id: s.id.clone(),
            reveal_personal_data: true,
            include_face_image: true,
            include_media: true,
        })
        .await
        .unwrap()
        .into_inner();
    let o = r.outcome.unwrap();
    assert_eq!(o.face_image, JPEG_FACE);
    assert_eq!(o.identity_document.unwrap().name, "张三");
    assert_eq!(o.media.len(), 1);

    let seen = fake.seen.seen();
    let tokens: Vec<&Seen> = seen
        .iter()
        .filter(|x| x.path == "/oauth/2.0/token")
        .collect();
    assert_eq!(
        tokens.len(),
        2,
        "one token, then one refresh after error 110"
    );
    for t in &tokens {
        assert_eq!(t.method, "POST");
        let q: std::collections::BTreeMap<_, _> = t.query.iter().cloned().collect();
        assert_eq!(q["grant_type"], "client_credentials");
        assert_eq!(q["client_id"], "independent-api-key");
        assert_eq!(q["client_secret"], "independent-secret-key");
    }
    let calls: Vec<&Seen> = seen
        .iter()
        .filter(|x| x.path.starts_with("/rpc/2.0/brain/solution/faceprint/"))
        .collect();
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c.method, "POST", "{c:?}");
        assert_eq!(c.content_type, "application/json", "{c:?}");
        assert_eq!(c.query.len(), 1);
        assert_eq!(c.query[0].0, "access_token");
        // The first generate used the first token and was refused; every later call uses the new one.
        let want = if i == 0 { TOKEN_1 } else { TOKEN_2 };
        assert_eq!(c.query[0].1, want, "{c:?}");
    }
    let by_path = |p: &str| -> Vec<&Seen> {
        calls
            .iter()
            .copied()
            .filter(|c| c.path.ends_with(p))
            .collect()
    };
    let generate = by_path("verifyToken/generate");
    assert_eq!(
        generate.len(),
        2,
        "the refused generate was sent once more, with the new token"
    );
    assert_eq!(keys(&generate[1].json()), ["plan_id", "redirect_config"]);
    assert_eq!(generate[1].json()["plan_id"], "plan-kyc");
    assert_eq!(
        keys(&generate[1].json()["redirect_config"]),
        ["failed_url", "success_url"]
    );
    let submit = by_path("idcard/submit");
    assert_eq!(submit.len(), 1);
    assert_eq!(
        keys(&submit[0].json()),
        ["certificate_type", "id_name", "id_no", "verify_token"]
    );
    assert_eq!(submit[0].json()["certificate_type"], 0);
    assert_eq!(submit[0].json()["id_no"], id_number(1));
    assert_eq!(submit[0].json()["verify_token"], "Yz9rWITm4vak16PBAh5x8oG7");
    for p in [
        "result/getall",
        "result/detail",
        "result/stat",
        "result/simple",
        "result/media/query",
    ] {
        let c = by_path(p);
        assert!(!c.is_empty(), "{p} called");
        for x in c {
            assert_eq!(keys(&x.json()), ["verify_token"], "{p}");
        }
    }
    assert!(by_path("uploadMatchImage").is_empty());
    assert!(seen
        .iter()
        .any(|x| x.path == "/face.jpg" && x.method == "GET"));
    srv.stop().await;
}

#[tokio::test]
async fn upload_match_image_sends_base64_and_the_controls() {
    let (fake, base) = fake_baidu().await;
    let mut srv = server_against(&base).await;
    let mut req = baidu_inline("wire-ref", "ref", 2);
    req.identity = None;
    let s = srv.start_ok(req).await;
    let s = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(pb::FaceImage {
                data: JPEG.to_vec(),
                role: pb::ImageRole::Reference as i32,
            }),
            quality_control: pb::ControlLevel::Normal as i32,
            liveness_control: 0,
            slot: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = fake.seen.seen();
    let upload: Vec<&Seen> = seen
        .iter()
        .filter(|x| x.path.ends_with("/uploadMatchImage"))
        .collect();
    assert_eq!(upload.len(), 1);
    let body = &upload[0].json();
    assert_eq!(
        keys(body),
        [
            "image",
            "liveness_control",
            "quality_control",
            "verify_token"
        ]
    );
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(body["image"].as_str().unwrap())
            .unwrap(),
        JPEG
    );
    assert_eq!(body["quality_control"], "NORMAL");
    assert_eq!(body["liveness_control"], "NONE");
    assert!(
        seen.iter().all(|x| !x.path.ends_with("/idcard/submit")),
        "the plan takes no identity"
    );
    srv.stop().await;
}
