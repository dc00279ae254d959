use super::*;
use crate::vendors::baidu::wire::{
    parse_reply, BaiduError, DetailResult, GenerateResult, GetAllResult, MediaResult,
    Reply as WireReply, SimpleResult, StatResult,
};
use serde::de::DeserializeOwned;

const API_KEY: &str = "sim-baidu-api-key";
const SECRET_KEY: &str = "sim-baidu-secret-key";
const APP_ID: &str = "118000001";
/// 指定用户身份核验, authority compare, failure ends the URL.
const PLAN_IDENTITY: &str = "1001";
/// The user enters the identity, authority compare, retries allowed.
const PLAN_RETRY: &str = "1002";
/// 指定用户身份核验 + 自建人脸库比对, failure ends the URL.
const PLAN_REFERENCE: &str = "1003";
/// The user enters the identity, failure ends the URL.
const PLAN_ONCE: &str = "1004";
const NAME: &str = "测试用户";
/// Synthetic: region 110101, born 1900-01-01, sequence 001.
const ID_NO: &str = "110101190001010014";
/// Residence-permit specimen number (FACTS §4.2).
const HMT_NO: &str = "810000199408230021";
const SUCCESS_URL: &str = "https://app.example/face/done?state=success&ref=a%2Fb";
const FAILED_URL: &str = "https://app.example/face/done?state=failed&ref=a%2Fb";

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn plan(
    id: &str,
    identity: bool,
    reference: bool,
    fail_ends: bool,
    threshold: f64,
) -> BaiduSimPlan {
    BaiduSimPlan {
        plan_id: id.to_owned(),
        needs_identity: identity,
        needs_reference: reference,
        fail_ends_url: fail_ends,
        threshold,
    }
}

fn config() -> BaiduSimConfig {
    BaiduSimConfig {
        api_key: API_KEY.to_owned(),
        secret_key: SECRET_KEY.to_owned(),
        app_id: APP_ID.to_owned(),
        plans: vec![
            plan(PLAN_IDENTITY, true, false, true, 80.0),
            plan(PLAN_RETRY, false, false, false, 80.0),
            plan(PLAN_REFERENCE, true, true, true, 75.0),
            plan(PLAN_ONCE, false, false, true, 80.0),
        ],
    }
}

fn vt(token: &str) -> Value {
    json!({ "verify_token": token })
}

fn ok_of<T: DeserializeOwned>(bytes: &[u8]) -> T {
    match parse_reply::<T>(bytes).expect("parseable reply") {
        WireReply::Ok { result, log_id } => {
            assert!(
                !log_id.is_empty() && log_id.bytes().all(|b| b.is_ascii_digit()),
                "{log_id}"
            );
            result
        }
        WireReply::Err(e) => panic!("expected success, got {e:?}"),
    }
}

fn err_of(bytes: &[u8]) -> BaiduError {
    match parse_reply::<Value>(bytes).expect("parseable reply") {
        WireReply::Err(e) => e,
        WireReply::Ok { result, .. } => panic!("expected an error, got {result}"),
    }
}

fn assert_err(bytes: &[u8], code: i64, message: &str) -> BaiduError {
    let e = err_of(bytes);
    assert_eq!((e.code, e.message.as_str()), (code, message), "{e:?}");
    assert!(!e.gateway);
    assert!(e.log_id.bytes().all(|b| b.is_ascii_digit()) && !e.log_id.is_empty());
    e
}

fn assert_token_gone(bytes: &[u8]) {
    let e = assert_err(bytes, CODE_TOKEN_INVALID, MSG_TOKEN_INVALID);
    assert!(e.is_verify_token_gone() && !e.is_access_token_error() && !e.is_rate_limit());
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut v = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
    v.extend_from_slice(b"IHDR");
    v.extend_from_slice(&width.to_be_bytes());
    v.extend_from_slice(&height.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    v
}

fn jpeg_sof(width: u16, height: u16) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ];
    v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    v.extend_from_slice(&height.to_be_bytes());
    v.extend_from_slice(&width.to_be_bytes());
    v.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    v
}

/// Tiny JPEG-looking bytes without a frame header.
fn tiny_jpeg() -> Vec<u8> {
    vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0xFB, 0xEF, 0xBE, 0x00, 0xFF, 0xD9,
    ]
}

struct Harness {
    sim: Arc<BaiduSimulator>,
    root: String,
    base: String,
    host: String,
    client: reqwest::Client,
    access_token: String,
}

impl Harness {
    async fn start() -> Self {
        crate::app::install_crypto_provider();
        let sim = BaiduSimulator::new(config(), SimClock::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().nest(MOUNT, sim.router());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let mut h = Harness {
            sim,
            root: format!("http://{addr}"),
            base: format!("http://{addr}{MOUNT}"),
            host: addr.to_string(),
            client,
            access_token: String::new(),
        };
        h.access_token = h.new_access_token().await;
        h
    }

    async fn oauth(&self, method: reqwest::Method, params: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .client
            .request(method, format!("{}/oauth/2.0/token", self.base))
            .query(params)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let body = resp.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).expect("json"))
    }

    async fn new_access_token(&self) -> String {
        let (status, v) = self
            .oauth(
                reqwest::Method::POST,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", API_KEY),
                    ("client_secret", SECRET_KEY),
                ],
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["access_token"].as_str().expect("access_token").to_owned()
    }

    async fn post_raw(
        &self,
        path: &str,
        access_token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Vec<u8> {
        let mut req = self
            .client
            .post(format!(
                "{}/rpc/2.0/brain/solution/faceprint/{path}",
                self.base
            ))
            .body(body);
        if let Some(t) = access_token {
            req = req.query(&[("access_token", t)]);
        }
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(JSON_CONTENT_TYPE)
        );
        resp.bytes().await.expect("body").to_vec()
    }

    async fn post_with(&self, access_token: &str, path: &str, body: &Value) -> Vec<u8> {
        self.post_raw(
            path,
            Some(access_token),
            Some("application/json"),
            serde_json::to_vec(body).expect("encode"),
        )
        .await
    }

    async fn post(&self, path: &str, body: &Value) -> Vec<u8> {
        self.post_with(&self.access_token, path, body).await
    }

    async fn ok<T: DeserializeOwned>(&self, path: &str, body: &Value) -> T {
        ok_of(&self.post(path, body).await)
    }

    async fn generate(&self, plan_id: &str) -> String {
        let r: GenerateResult = self
            .ok("verifyToken/generate", &json!({ "plan_id": plan_id }))
            .await;
        r.verify_token
    }

    async fn submit_identity(&self, token: &str, id_no: &str, certificate_type: u8) {
        let r: i64 = self
            .ok(
                "idcard/submit",
                &json!({"verify_token": token, "id_name": NAME, "id_no": id_no,
                            "certificate_type": certificate_type}),
            )
            .await;
        assert_eq!(r, 1);
    }

    async fn get(&self, url: &str) -> (u16, String, Vec<u8>) {
        let resp = self.client.get(url).send().await.expect("send");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, ct, resp.bytes().await.expect("body").to_vec())
    }

    async fn page(&self, query: &[(&str, &str)]) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}/face/print/", self.base))
            .query(query)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("text"))
    }

    async fn submit(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}/face/print/submit", self.base))
            .form(fields)
            .send()
            .await
            .expect("send")
    }
}

fn location(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

// -- OAuth -----------------------------------------------------------------------------------------------

#[tokio::test]
async fn oauth_success_and_error_shapes() {
    let h = Harness::start().await;
    let good = [
        ("grant_type", "client_credentials"),
        ("client_id", API_KEY),
        ("client_secret", SECRET_KEY),
    ];
    let now_s = h.sim.clock().now_ms() / 1000;
    for method in [reqwest::Method::POST, reqwest::Method::GET] {
        let (status, v) = h.oauth(method, &good).await;
        assert_eq!(status, 200);
        let token = v["access_token"].as_str().expect("token");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 5, "{token}");
        assert_eq!(parts[0], "24");
        assert!(parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(parts[2], "2592000");
        let exp: i64 = parts[3].parse().expect("exp");
        assert!((exp - (now_s + 2_592_000)).abs() <= 5, "{exp}");
        assert_eq!(parts[4], format!("282335-{APP_ID}"));
        assert_eq!(v["expires_in"], 2_592_000);
        let refresh = v["refresh_token"].as_str().expect("refresh");
        assert!(
            refresh.starts_with("25.") && refresh.contains(".315360000."),
            "{refresh}"
        );
        assert!(refresh.ends_with(&format!(".282335-{APP_ID}")));
        assert_eq!(v["scope"], "public brain_all_scope");
        assert!(v["session_key"].is_string() && v["session_secret"].is_string());
    }
    let (status, v) = h
        .oauth(
            reqwest::Method::POST,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nope"),
                ("client_secret", SECRET_KEY),
            ],
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        v,
        json!({"error":"invalid_client","error_description":"unknown client id"})
    );
    let (status, v) = h
        .oauth(
            reqwest::Method::POST,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", API_KEY),
                ("client_secret", "nope"),
            ],
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        v,
        json!({"error":"invalid_client","error_description":"Client authentication failed"})
    );
    for grant in [None, Some("password")] {
        let mut params = vec![("client_id", API_KEY), ("client_secret", SECRET_KEY)];
        if let Some(g) = grant {
            params.push(("grant_type", g));
        }
        let (status, v) = h.oauth(reqwest::Method::POST, &params).await;
        assert_eq!(status, 400);
        assert_eq!(
            v,
            json!({"error":"unsupported_grant_type",
                       "error_description":"The authorization grant type is not supported"})
        );
    }
    // Harness token + POST + GET issued; 7 requests in all.
    assert_eq!(h.sim.issued_access_tokens(), 3);
    assert_eq!(h.sim.stats().token_requests, 7);
}

#[tokio::test]
async fn the_oauth_client_reads_the_simulated_token_endpoint() {
    use crate::config::Secret;
    use crate::vendors::baidu::token::TokenCache;
    let h = Harness::start().await;
    let clock = h.sim.clock().clone();
    let cache = |key: &str| {
        let clock = clock.clone();
        TokenCache::new(
            reqwest::Client::new(),
            &h.base,
            Secret::new(key),
            Secret::new(SECRET_KEY),
            Arc::new(move || clock.now_ms()),
            DAY,
        )
    };
    let token = cache(API_KEY).get().await.expect("token");
    let r: GenerateResult = ok_of(
        &h.post_with(
            token.expose(),
            "verifyToken/generate",
            &json!({"plan_id": PLAN_IDENTITY}),
        )
        .await,
    );
    assert_eq!(r.verify_token.len(), 24);
    let e = cache("wrong").get().await.expect_err("bad key");
    assert_eq!(e.vendor_code, "invalid_client");
}

#[tokio::test]
async fn access_tokens_live_thirty_days_and_gateway_errors() {
    let h = Harness::start().await;
    let body = serde_json::to_vec(&json!({"plan_id": PLAN_IDENTITY})).expect("encode");
    let missing = h
        .post_raw(
            "verifyToken/generate",
            None,
            Some("application/json"),
            body.clone(),
        )
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&missing).expect("json"),
        json!({"error_code":100,"error_msg":"Invalid parameter"})
    );
    let e = err_of(&missing);
    assert!(e.gateway && e.is_access_token_error() && e.code == 100);
    let empty = h
        .post_raw(
            "verifyToken/generate",
            Some(""),
            Some("application/json"),
            body.clone(),
        )
        .await;
    assert_eq!(err_of(&empty).code, 100);
    let unknown = h
        .post_raw(
            "result/detail",
            Some("24.nope"),
            Some("application/json"),
            body.clone(),
        )
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&unknown).expect("json"),
        json!({"error_code":110,"error_msg":"Access token invalid or no longer valid"})
    );
    assert!(err_of(&unknown).is_access_token_error());

    let first = h.access_token.clone();
    h.sim.clock().advance(29 * DAY);
    let _: GenerateResult = ok_of(
        &h.post_with(
            &first,
            "verifyToken/generate",
            &json!({"plan_id": PLAN_IDENTITY}),
        )
        .await,
    );
    // A new token does not revoke the old one.
    let second = h.new_access_token().await;
    assert_ne!(first, second);
    let _: GenerateResult = ok_of(
        &h.post_with(
            &first,
            "verifyToken/generate",
            &json!({"plan_id": PLAN_IDENTITY}),
        )
        .await,
    );
    h.sim.clock().advance(2 * DAY);
    let expired = h
        .post_raw(
            "uploadMatchImage",
            Some(&first),
            Some("application/json"),
            body.clone(),
        )
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&expired).expect("json"),
        json!({"error_code":111,"error_msg":"Access token expired"})
    );
    assert!(err_of(&expired).is_access_token_error());
    let _: GenerateResult = ok_of(
        &h.post_with(
            &second,
            "verifyToken/generate",
            &json!({"plan_id": PLAN_IDENTITY}),
        )
        .await,
    );
    assert_eq!(h.sim.issued_access_tokens(), 2);
}

// -- Generate and request validation ---------------------------------------------------------------------

#[tokio::test]
async fn generate_plans_and_request_validation() {
    let h = Harness::start().await;
    assert_err(
        &h.post("verifyToken/generate", &json!({"plan_id": "9999"}))
            .await,
        CODE_SERVICE_ERROR,
        "服务异常,请稍后再试",
    );
    assert_err(
        &h.post("verifyToken/generate", &json!({"plan_id": 9999}))
            .await,
        CODE_SERVICE_ERROR,
        "服务异常,请稍后再试",
    );
    // Numeric plan ids, extra fields and a charset parameter are fine.
    let r: GenerateResult = h
        .ok(
            "verifyToken/generate",
            &json!({"plan_id": 1002, "access_token": "ignored", "extra": [1, 2]}),
        )
        .await;
    assert_eq!(r.verify_token.len(), 24);
    assert!(r.verify_token.bytes().all(|b| b.is_ascii_alphanumeric()));
    let _: GenerateResult = ok_of(
        &h.post_raw(
            "verifyToken/generate",
            Some(&h.access_token),
            Some("Application/JSON; charset=UTF-8"),
            br#"{"plan_id":"1001"}"#.to_vec(),
        )
        .await,
    );
    assert_err(
        &h.post("verifyToken/generate", &json!({})).await,
        CODE_PARAM_MISSING,
        "param[plan_id] is null",
    );
    assert_err(
        &h.post("verifyToken/generate", &json!({"plan_id": true}))
            .await,
        CODE_PARAM_INVALID,
        "param[plan_id] format error",
    );
    assert_err(
        &h.post(
            "verifyToken/generate",
            &json!({"plan_id": "1001", "redirect_config": "x"}),
        )
        .await,
        CODE_PARAM_INVALID,
        "param[redirect_config] format error",
    );
    let not_json = "request body should be json format";
    for (ct, body) in [
        (Some("text/plain"), br#"{"plan_id":"1001"}"#.to_vec()),
        (None, br#"{"plan_id":"1001"}"#.to_vec()),
        (
            Some("application/x-www-form-urlencoded"),
            b"plan_id=1001".to_vec(),
        ),
        (Some("application/json"), b"[1]".to_vec()),
        (Some("application/json"), b"{\"plan_id\":".to_vec()),
        (Some("application/json"), Vec::new()),
    ] {
        let r = h
            .post_raw("verifyToken/generate", Some(&h.access_token), ct, body)
            .await;
        assert_err(&r, CODE_NOT_JSON, not_json);
    }
    // Over the 16 MiB body limit.
    let mut big = b"{\"plan_id\":\"1001\",\"x\":\"".to_vec();
    big.resize(BODY_LIMIT + 1, b'a');
    let r = h
        .post_raw(
            "verifyToken/generate",
            Some(&h.access_token),
            Some("application/json"),
            big,
        )
        .await;
    assert_err(&r, CODE_NOT_JSON, not_json);
}

// -- The full flow -------------------------------------------------------------------------------------

#[tokio::test]
async fn full_pass_flow_over_http() {
    let h = Harness::start().await;
    let token = h.generate(PLAN_IDENTITY).await;

    // Before any attempt.
    assert_err(
        &h.post("result/detail", &vt(&token)).await,
        CODE_NOT_STARTED,
        "认证尚未开始",
    );
    assert_err(
        &h.post("result/simple", &vt(&token)).await,
        CODE_NOT_STARTED,
        "认证尚未开始",
    );
    assert_err(
        &h.post("result/media/query", &vt(&token)).await,
        CODE_NOT_STARTED,
        "认证尚未开始",
    );
    let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
    assert_eq!((all.verify_count, all.verify_result.len()), (0, 0));
    assert_eq!(all.verify_charge_count, Some(0));
    let stat: StatResult = h.ok("result/stat", &vt(&token)).await;
    assert!(stat.values().all(Vec::is_empty) && stat.len() == 7);

    // The page refuses until idcard/submit ran.
    let (status, html) = h.page(&[("token", &token)]).await;
    assert_eq!(status, 409);
    assert!(html.contains("id=\"error\""));
    h.submit_identity(&token, ID_NO, 0).await;

    let query = [
        ("token", token.as_str()),
        ("successUrl", SUCCESS_URL),
        ("failedUrl", FAILED_URL),
    ];
    let (status, html) = h.page(&query).await;
    assert_eq!(status, 200);
    assert!(html.contains(
        "<title>facegate 沙箱 — 百度H5人脸实名认证 (facegate sandbox — Baidu faceprint)</title>"
    ));
    assert!(html.contains("<html lang=\"zh-CN\">"));
    assert!(html.contains("认证通过 <span lang=\"en\">(pass)</span>"));
    assert!(html.contains("<p lang=\"en\" class=\"en\">This is a simulated Baidu"));
    assert!(html.contains(r#"<form method="post" action="submit">"#));
    for outcome in PageOutcome::ALL {
        let button = format!(
            r#"<button type="submit" name="outcome" value="{0}" id="{0}">"#,
            outcome.as_str()
        );
        assert!(html.contains(&button), "{button}");
    }
    assert!(html.contains(&format!(r#"name="token" value="{token}""#)));
    assert!(html.contains(&format!(
        r#"name="successUrl" value="{}""#,
        SUCCESS_URL.replace('&', "&amp;")
    )));
    assert!(!html.contains("name=\"id_name\""), "identity is fixed");
    assert!(html.contains("110***********0014") && !html.contains(ID_NO));
    assert!(!html.contains(NAME) && !html.contains("{{"));

    let resp = h
        .submit(&[
            ("token", &token),
            ("outcome", "pass"),
            ("successUrl", SUCCESS_URL),
            ("failedUrl", FAILED_URL),
        ])
        .await;
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(location(&resp).as_deref(), Some(SUCCESS_URL));

    let detail: DetailResult = h.ok("result/detail", &vt(&token)).await;
    let scores = detail.verify_result.expect("verify_result");
    let score = scores.score.and_then(|s| s.as_f64()).expect("score");
    assert!((80.0..=100.0).contains(&score), "{score}");
    assert!(scores
        .liveness_score
        .and_then(|s| s.as_f64())
        .is_some_and(|s| s > 0.0));
    assert_eq!(scores.spoofing.and_then(|s| s.as_f64()), Some(0.0));
    let confirm = detail.idcard_confirm.expect("idcard_confirm");
    assert_eq!(
        (confirm.name.as_deref(), confirm.idcard_number.as_deref()),
        (Some(NAME), Some(ID_NO))
    );
    assert_eq!(detail.is_demote, Some(false));
    assert!(detail.idcard_ocr_result.is_none() && detail.idcard_images.is_none());

    let simple: SimpleResult = h.ok("result/simple", &vt(&token)).await;
    assert_eq!(
        simple.image,
        format!(
            "http://{}/sandbox/baidu/solution/faceprint/image/query?verify_token={token}",
            h.host
        )
    );
    let (status, ct, bytes) = h.get(&simple.image).await;
    assert_eq!((status, ct.as_str()), (200, "image/jpeg"));
    assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]));

    let raw_all = h.post("result/getall", &vt(&token)).await;
    let raw: Value = serde_json::from_slice(&raw_all).expect("json");
    let all: GetAllResult = ok_of(&raw_all);
    assert_eq!(all.verify_count, 1);
    assert_eq!(
        (
            all.ocr_charge_count,
            all.match_charge_count,
            all.verify_charge_count
        ),
        (Some(0), Some(0), Some(1))
    );
    let a = &all.verify_result[0];
    assert_eq!(a.order, 1);
    assert!(a.is_verify_passed);
    assert_eq!(raw["result"]["verify_result"][0]["code"], json!("0"));
    assert_eq!(a.message.as_deref(), Some("核验成功"));
    let time = a.verify_time.clone().expect("verify_time");
    assert_eq!(time.len(), 19, "{time}");
    assert!(time.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b' ',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    }));
    assert_eq!(a.is_charged, Some(true));
    assert_eq!(a.charge_type.as_deref(), Some("verify"));
    assert_eq!(a.charge_time.as_deref(), Some(time.as_str()));
    assert_eq!(
        (a.is_ocr_charge, a.ocr_charge_time.as_deref(), a.ocr_count),
        (Some(false), Some(""), Some(0))
    );
    let d = a.verify_detail.as_ref().expect("verify_detail");
    assert_eq!(d.score.as_ref().and_then(|s| s.as_f64()), Some(score));
    assert_eq!(d.threshold.as_ref().and_then(|s| s.as_f64()), Some(80.0));
    assert_eq!(
        d.liveness_score.as_ref().and_then(|s| s.as_f64()),
        Some(0.0)
    );
    assert_eq!(
        d.spoofing_score.as_ref().and_then(|s| s.as_f64()),
        Some(0.0)
    );
    assert_eq!(d.is_demote, Some(false));
    assert!(d
        .verify_log_id
        .as_ref()
        .is_some_and(|l| !l.as_text().is_empty()));
    let face = d.face_image.clone().expect("face_image");
    assert!(
        face.starts_with(&format!("http://{}/sandbox/baidu/", h.host)),
        "{face}"
    );
    let (status, ct, _) = h.get(&face).await;
    assert_eq!((status, ct.as_str()), (200, "image/jpeg"));
    let c = a.idcard_confirm.as_ref().expect("idcard_confirm");
    assert_eq!(
        (c.name.as_deref(), c.idcard_number.as_deref()),
        (Some(NAME), Some(ID_NO))
    );
    assert_eq!(
        c.idcard_type.as_ref().map(|t| t.as_text()).as_deref(),
        Some("0")
    );
    assert!(a.idcard_ocr_result.is_none() && c.idcard_ocr_result.is_none());
    assert!(raw["result"]["verify_result"][0]
        .get("idcard_ocr_result")
        .is_none());

    let stat: StatResult = h.ok("result/stat", &vt(&token)).await;
    for key in [
        "Verify_FIN",
        "Sessioncode",
        "OCR",
        "verify",
        "VideoLiveness",
        "Livenesscolorful",
        "VerifySec",
    ] {
        assert!(stat.contains_key(key), "{key}");
    }
    let fin = &stat["Verify_FIN"];
    assert_eq!(fin.len(), 1);
    assert_eq!(
        (fin[0].error_code.as_text(), fin[0].count.as_text()),
        ("0".into(), "1".into())
    );
    assert_eq!(stat["verify"][0].count.as_text(), "1");

    let raw_media = h.post("result/media/query", &vt(&token)).await;
    let media: MediaResult = ok_of(&raw_media);
    let raw: Value = serde_json::from_slice(&raw_media).expect("json");
    assert!(raw["result"].get("video").is_none());
    assert_eq!(raw["result"]["extInfo"], Value::Null);
    let videos = media.process_video.expect("processVideo");
    assert_eq!(
        videos,
        vec![format!("http://{}/sandbox/baidu/media/{token}.mp4", h.host)]
    );
    let images = media.images.expect("images");
    assert_eq!(images.len(), 4);
    let (status, ct, _) = h.get(&videos[0]).await;
    assert_eq!((status, ct.as_str()), (200, "video/mp4"));
    for image in &images {
        assert_eq!(h.get(image).await.0, 200, "{image}");
    }

    // Used up: no second verification.
    let (status, html) = h.page(&query).await;
    assert_eq!(status, 410);
    assert!(html.contains("id=\"error\"") && html.contains(MSG_TOKEN_INVALID));
    assert_token_gone(
        &h.post(
            "idcard/submit",
            &json!({"verify_token": token, "id_name": NAME, "id_no": ID_NO, "certificate_type": 0}),
        )
        .await,
    );
    assert_eq!(
        h.sim.complete(&token, PageOutcome::Pass),
        Err(MSG_TOKEN_INVALID.to_owned())
    );
    let stats = h.sim.stats();
    assert_eq!((stats.billed, stats.page_views), (1, 3));
}

// -- Failures and retries ------------------------------------------------------------------------------

#[tokio::test]
async fn failure_outcomes_detail_and_getall() {
    let h = Harness::start().await;
    let cases = [
        (
            PageOutcome::FaceMismatch,
            CODE_FACE_MISMATCH,
            "人脸比对未通过",
            true,
        ),
        (
            PageOutcome::LivenessFailed,
            CODE_LIVENESS_FAILED,
            "活体检测未通过",
            true,
        ),
        (
            PageOutcome::IdNameMismatch,
            CODE_ID_NAME_MISMATCH,
            "身份证号与姓名不匹配",
            false,
        ),
        (
            PageOutcome::Abandon,
            CODE_USER_ABANDONED,
            "用户放弃认证",
            false,
        ),
    ];
    for (outcome, code, message, billed) in cases {
        let token = h.generate(PLAN_IDENTITY).await;
        h.submit_identity(&token, ID_NO, 0).await;
        let resp = h
            .submit(&[
                ("token", token.as_str()),
                ("outcome", outcome.as_str()),
                ("successUrl", SUCCESS_URL),
                ("failedUrl", FAILED_URL),
            ])
            .await;
        assert_eq!(resp.status().as_u16(), 303);
        assert_eq!(location(&resp).as_deref(), Some(FAILED_URL), "{outcome}");
        assert_err(&h.post("result/detail", &vt(&token)).await, code, message);
        assert_err(&h.post("result/simple", &vt(&token)).await, code, message);
        let raw = h.post("result/getall", &vt(&token)).await;
        let all: GetAllResult = ok_of(&raw);
        let raw: Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(all.verify_count, 1, "{outcome}");
        assert_eq!(all.verify_charge_count, Some(i64::from(billed)));
        let a = &all.verify_result[0];
        assert!(!a.is_verify_passed);
        assert_eq!(
            raw["result"]["verify_result"][0]["code"],
            json!(code.to_string())
        );
        assert_eq!(a.message.as_deref(), Some(message));
        assert_eq!(a.is_charged, Some(billed), "{outcome}");
        assert_eq!(
            a.charge_type.as_deref(),
            Some(if billed { "verify" } else { "" })
        );
        let d = a.verify_detail.as_ref().expect("verify_detail");
        assert_eq!(d.threshold.as_ref().and_then(|t| t.as_f64()), Some(80.0));
        let score = d.score.as_ref().and_then(|s| s.as_f64());
        match outcome {
            PageOutcome::FaceMismatch => assert!(score.is_some_and(|s| s < 80.0), "{score:?}"),
            _ => assert_eq!(score, None, "{outcome}"),
        }
        assert_eq!(
            d.face_image.as_deref().is_some_and(str::is_empty),
            outcome == PageOutcome::Abandon
        );
        let stat: StatResult = h.ok("result/stat", &vt(&token)).await;
        assert_eq!(stat["Verify_FIN"][0].error_code.as_text(), code.to_string());
        // The URL is used up (认证未通过时URL失效).
        assert_eq!(h.page(&[("token", &token)]).await.0, 410);
    }
    assert_eq!(h.sim.stats().billed, 2);
}

#[tokio::test]
async fn retry_allowed_when_the_url_stays_valid() {
    let h = Harness::start().await;
    let r: GenerateResult = h
        .ok(
            "verifyToken/generate",
            &json!({"plan_id": PLAN_RETRY,
                        "redirect_config": {"success_url": SUCCESS_URL, "failed_url": FAILED_URL}}),
        )
        .await;
    let token = r.verify_token;
    // redirect_config fills in for the missing query parameters; the user types the identity.
    let (status, html) = h.page(&[("token", &token)]).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!(
        r#"name="failedUrl" value="{}""#,
        FAILED_URL.replace('&', "&amp;")
    )));
    assert!(html.contains(r#"name="id_name""#) && html.contains(r#"name="id_no""#));

    // Missing identity: the form comes back with an error and nothing is recorded.
    let resp = h
        .submit(&[("token", token.as_str()), ("outcome", "pass")])
        .await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.expect("text").contains("id=\"error\""));
    let resp = h
        .submit(&[
            ("token", token.as_str()),
            ("outcome", "pass"),
            ("id_name", NAME),
            ("id_no", "110101190001010015"),
        ])
        .await;
    assert_eq!(resp.status().as_u16(), 400);

    let resp = h
        .submit(&[
            ("token", token.as_str()),
            ("outcome", "face_mismatch"),
            ("id_name", NAME),
            ("id_no", ID_NO),
        ])
        .await;
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(location(&resp).as_deref(), Some(FAILED_URL));
    assert_err(
        &h.post("result/detail", &vt(&token)).await,
        CODE_FACE_MISMATCH,
        "人脸比对未通过",
    );
    let (status, html) = h.page(&[("token", &token)]).await;
    assert_eq!(status, 200, "retry allowed");
    assert!(html.contains("<dd>1</dd>"));
    let resp = h
        .submit(&[
            ("token", token.as_str()),
            ("outcome", "pass"),
            ("id_name", NAME),
            ("id_no", HMT_NO),
        ])
        .await;
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(location(&resp).as_deref(), Some(SUCCESS_URL));

    let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
    assert_eq!(all.verify_count, 2);
    assert_eq!(all.verify_charge_count, Some(2));
    let orders: Vec<(i64, bool)> = all
        .verify_result
        .iter()
        .map(|a| (a.order, a.is_verify_passed))
        .collect();
    assert_eq!(orders, vec![(1, false), (2, true)]);
    let second = all.verify_result[1]
        .idcard_confirm
        .as_ref()
        .expect("confirm");
    assert_eq!(second.idcard_number.as_deref(), Some(HMT_NO));
    assert_eq!(
        second.idcard_type.as_ref().map(|t| t.as_text()).as_deref(),
        Some("4")
    );
    let _: DetailResult = h.ok("result/detail", &vt(&token)).await;
    // A pass ends it.
    assert_eq!(h.page(&[("token", &token)]).await.0, 410);
    assert_eq!(h.sim.stats().billed, 2);
}

#[tokio::test]
async fn retry_refused_when_failure_ends_the_url() {
    let h = Harness::start().await;
    let token = h.generate(PLAN_ONCE).await;
    h.sim
        .complete(&token, PageOutcome::LivenessFailed)
        .expect("first attempt");
    assert_eq!(
        h.sim.complete(&token, PageOutcome::Pass),
        Err(MSG_TOKEN_INVALID.to_owned())
    );
    let (status, html) = h.page(&[("token", &token)]).await;
    assert_eq!(status, 410);
    assert!(html.contains("id=\"error\""));
    let resp = h
        .submit(&[
            ("token", token.as_str()),
            ("outcome", "pass"),
            ("id_name", NAME),
            ("id_no", ID_NO),
        ])
        .await;
    assert_eq!(resp.status().as_u16(), 410);
    let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
    assert_eq!(all.verify_count, 1);
    // complete() used the synthetic sandbox identity.
    let c = all.verify_result[0]
        .idcard_confirm
        .as_ref()
        .expect("confirm");
    assert_eq!(c.idcard_number.as_deref(), Some(SANDBOX_ID_NUMBER));
}

#[tokio::test]
async fn complete_checks_plan_preconditions() {
    let h = Harness::start().await;
    assert_eq!(
        h.sim.complete("unknown", PageOutcome::Pass),
        Err(MSG_TOKEN_INVALID.to_owned())
    );
    let token = h.generate(PLAN_IDENTITY).await;
    assert!(h.sim.complete(&token, PageOutcome::Pass).is_err());
    h.submit_identity(&token, ID_NO, 0).await;
    let token2 = h.generate(PLAN_REFERENCE).await;
    h.submit_identity(&token2, ID_NO, 0).await;
    assert!(
        h.sim.complete(&token2, PageOutcome::Pass).is_err(),
        "reference missing"
    );
    assert_eq!(h.sim.complete(&token, PageOutcome::Pass), Ok(()));
    assert_eq!(h.sim.stats().billed, 1);
}

// -- Time ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn verification_window_is_two_hours() {
    let h = Harness::start().await;
    let token = h.generate(PLAN_IDENTITY).await;
    h.sim.clock().advance(HOUR + Duration::from_secs(59 * 60));
    h.submit_identity(&token, ID_NO, 0).await;
    assert_err(
        &h.post("result/detail", &vt(&token)).await,
        CODE_NOT_STARTED,
        "认证尚未开始",
    );
    h.sim.clock().advance(Duration::from_secs(120));
    assert_token_gone(
        &h.post(
            "idcard/submit",
            &json!({"verify_token": token, "id_name": NAME, "id_no": ID_NO, "certificate_type": 0}),
        )
        .await,
    );
    let image = STANDARD.encode(tiny_jpeg());
    assert_token_gone(
        &h.post(
            "uploadMatchImage",
            &json!({"verify_token": token, "image": image}),
        )
        .await,
    );
    let (status, html) = h.page(&[("token", &token)]).await;
    assert_eq!(status, 410);
    assert!(html.contains(MSG_TOKEN_INVALID));
    assert_eq!(
        h.sim.complete(&token, PageOutcome::Pass),
        Err(MSG_TOKEN_INVALID.to_owned())
    );
    for path in [
        "result/detail",
        "result/getall",
        "result/stat",
        "result/simple",
        "result/media/query",
    ] {
        assert_token_gone(&h.post(path, &vt(&token)).await);
    }
    // Unknown verify tokens answer the same.
    assert_token_gone(
        &h.post("result/detail", &vt("AAAAAAAAAAAAAAAAAAAAAAAA"))
            .await,
    );
}

#[tokio::test]
async fn results_kept_three_days_and_media_one_day() {
    let h = Harness::start().await;
    let token = h.generate(PLAN_IDENTITY).await;
    h.submit_identity(&token, ID_NO, 0).await;
    h.sim.complete(&token, PageOutcome::Pass).expect("pass");
    let media: MediaResult = h.ok("result/media/query", &vt(&token)).await;
    let video = media.process_video.expect("video").remove(0);
    let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
    let face = all.verify_result[0]
        .verify_detail
        .as_ref()
        .and_then(|d| d.face_image.clone())
        .expect("face");
    let image = format!(
        "{}/solution/faceprint/image/query?verify_token={token}",
        h.base
    );

    h.sim.clock().advance(23 * HOUR);
    let _: MediaResult = h.ok("result/media/query", &vt(&token)).await;
    assert_eq!(h.get(&video).await.0, 200);
    h.sim.clock().advance(2 * HOUR);
    assert_token_gone(&h.post("result/media/query", &vt(&token)).await);
    let (status, ct, body) = h.get(&video).await;
    assert_eq!((status, ct.as_str()), (404, JSON_CONTENT_TYPE));
    assert_token_gone(&body);
    let _: DetailResult = h.ok("result/detail", &vt(&token)).await;
    assert_eq!(h.get(&image).await.0, 200);

    h.sim.clock().advance(46 * HOUR); // 71 h after completion
    let _: DetailResult = h.ok("result/detail", &vt(&token)).await;
    let _: SimpleResult = h.ok("result/simple", &vt(&token)).await;
    let _: GetAllResult = h.ok("result/getall", &vt(&token)).await;
    h.sim.clock().advance(2 * HOUR); // 73 h
    for path in [
        "result/detail",
        "result/simple",
        "result/getall",
        "result/stat",
    ] {
        assert_token_gone(&h.post(path, &vt(&token)).await);
    }
    assert_eq!(h.get(&image).await.0, 404);
    assert_eq!(h.get(&face).await.0, 404);
}

#[tokio::test]
async fn retry_plan_results_age_from_the_last_attempt() {
    let h = Harness::start().await;
    let token = h.generate(PLAN_RETRY).await;
    h.sim
        .complete(&token, PageOutcome::FaceMismatch)
        .expect("attempt");
    h.sim.clock().advance(2 * HOUR + Duration::from_secs(60));
    assert_eq!(
        h.sim.complete(&token, PageOutcome::Pass),
        Err(MSG_TOKEN_INVALID.to_owned())
    );
    let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
    assert_eq!(all.verify_count, 1);
    assert_err(
        &h.post("result/detail", &vt(&token)).await,
        CODE_FACE_MISMATCH,
        "人脸比对未通过",
    );
    h.sim.clock().advance(3 * DAY);
    assert_token_gone(&h.post("result/getall", &vt(&token)).await);
}

// -- Fault injection and stats -------------------------------------------------------------------------

#[tokio::test]
async fn qps_limit_injection_alternates_both_shapes() {
    let h = Harness::start().await;
    let token = h.generate(PLAN_IDENTITY).await;
    h.sim.inject_qps_limit(3);
    let first = h.post("result/detail", &vt(&token)).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&first).expect("json"),
        json!({"error_code":18,"error_msg":"Open api qps request limit reached"})
    );
    let e = err_of(&first);
    assert!(e.gateway && e.is_rate_limit() && !e.is_access_token_error());
    let second = h.post("result/getall", &vt(&token)).await;
    let v: Value = serde_json::from_slice(&second).expect("json");
    assert_eq!(
        (v["success"].clone(), v["result"].clone()),
        (json!(false), Value::Null)
    );
    let e = assert_err(&second, 18, "openapi限制");
    assert!(e.is_rate_limit());
    // Injected limits come before the access-token check.
    let third = h
        .post_raw(
            "result/simple",
            None,
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(err_of(&third).code, 18);
    assert!(err_of(&third).gateway);
    assert_err(
        &h.post("result/detail", &vt(&token)).await,
        CODE_NOT_STARTED,
        "认证尚未开始",
    );
    let stats = h.sim.stats();
    assert_eq!(stats.qps_limited, 3);
    assert_eq!(stats.calls.get("result/detail"), Some(&2));
}

#[tokio::test]
async fn stats_count_every_call() {
    let h = Harness::start().await;
    assert_eq!(
        h.sim.stats(),
        BaiduSimStats {
            token_requests: 1,
            ..BaiduSimStats::default()
        }
    );
    let token = h.generate(PLAN_IDENTITY).await;
    // Still counted, even as an error.
    assert_err(
        &h.post("verifyToken/generate", &json!({"plan_id": "404"}))
            .await,
        CODE_SERVICE_ERROR,
        MSG_SERVICE_ERROR,
    );
    let _ = h
        .post_with("24.unknown", "result/detail", &vt(&token))
        .await;
    let _ = h
        .post_raw(
            "result/getall",
            Some(&h.access_token),
            Some("text/plain"),
            Vec::new(),
        )
        .await;
    h.sim.inject_qps_limit(1);
    let _ = h.post("result/stat", &vt(&token)).await;
    h.submit_identity(&token, ID_NO, 0).await;
    let _ = h.page(&[("token", &token)]).await;
    let _ = h.page(&[("token", "nope")]).await;
    h.sim.complete(&token, PageOutcome::Pass).expect("pass");
    // Unknown paths and wrong methods are not counted.
    let unknown = h.post("result/everything", &vt(&token)).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&unknown).expect("json"),
        json!({"error_code":3,"error_msg":"Unsupported openapi method"})
    );
    let (status, _, _) = h
        .get(&format!(
            "{}/rpc/2.0/brain/solution/faceprint/result/detail",
            h.base
        ))
        .await;
    assert_eq!(status, 405);
    let expected: BTreeMap<String, u64> = [
        ("verifyToken/generate", 2),
        ("result/detail", 1),
        ("result/getall", 1),
        ("result/stat", 1),
        ("idcard/submit", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(
        h.sim.stats(),
        BaiduSimStats {
            token_requests: 1,
            calls: expected,
            qps_limited: 1,
            page_views: 2,
            billed: 1,
        }
    );
}

// -- Request validation --------------------------------------------------------------------------------

#[tokio::test]
async fn upload_match_image_validation() {
    let h = Harness::start().await;
    let token = h.generate(PLAN_REFERENCE).await;
    h.submit_identity(&token, ID_NO, 0).await;
    let (status, html) = h.page(&[("token", &token)]).await;
    assert_eq!(status, 409, "reference image missing");
    assert!(html.contains("id=\"error\""));
    let upload = |image: String, extra: Value| {
        let mut body = json!({"verify_token": token, "image": image});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        body
    };
    let rejected = [
        (
            upload("***".into(), json!({})),
            CODE_IMAGE_FORMAT,
            "image format error",
        ),
        (
            upload(STANDARD.encode(b"GIF89a not a face at all"), json!({})),
            CODE_IMAGE_FORMAT,
            "image format error",
        ),
        (
            upload(STANDARD.encode(png(1921, 1080)), json!({})),
            CODE_IMAGE_SIZE,
            "image size error",
        ),
        (
            upload(STANDARD.encode(png(1920, 1081)), json!({})),
            CODE_IMAGE_SIZE,
            "image size error",
        ),
        (
            upload(STANDARD.encode(jpeg_sof(2000, 1000)), json!({})),
            CODE_IMAGE_SIZE,
            "image size error",
        ),
        (
            upload(
                STANDARD.encode(tiny_jpeg()),
                json!({"quality_control": "MAX"}),
            ),
            CODE_PARAM_INVALID,
            "param[quality_control] format error",
        ),
        (
            upload(STANDARD.encode(tiny_jpeg()), json!({"liveness_control": 2})),
            CODE_PARAM_INVALID,
            "param[liveness_control] format error",
        ),
        (
            json!({"verify_token": token}),
            CODE_PARAM_MISSING,
            "param[image] is null",
        ),
    ];
    for (body, code, message) in &rejected {
        assert_err(&h.post("uploadMatchImage", body).await, *code, message);
    }
    assert_eq!(
        h.page(&[("token", &token)]).await.0,
        409,
        "nothing was accepted"
    );
    for image in [
        png(1920, 1080),
        png(1080, 1920),
        jpeg_sof(640, 480),
        tiny_jpeg(),
    ] {
        let body = upload(
            STANDARD.encode(image),
            json!({"quality_control": "LOW", "liveness_control": "HIGH"}),
        );
        let r: Option<Value> = ok_of(&h.post("uploadMatchImage", &body).await);
        assert_eq!(r, None);
    }
    assert_eq!(h.page(&[("token", &token)]).await.0, 200);
    h.sim.complete(&token, PageOutcome::Pass).expect("pass");
    let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
    assert_eq!(
        (all.match_charge_count, all.verify_charge_count),
        (Some(1), Some(0))
    );
    assert_eq!(all.verify_result[0].charge_type.as_deref(), Some("match"));
    let threshold = all.verify_result[0]
        .verify_detail
        .as_ref()
        .and_then(|d| d.threshold.as_ref())
        .and_then(|t| t.as_f64());
    assert_eq!(threshold, Some(75.0));
}

#[test]
fn match_image_size_limits() {
    let code = |r: Result<(), Reply>| match r {
        Ok(()) => 0,
        Err(Reply::Fail { code, .. }) => code,
        Err(other) => panic!("{other:?}"),
    };
    assert_eq!(
        code(check_match_image(&"A".repeat(MAX_IMAGE_BASE64_LEN + 4))),
        CODE_IMAGE_SIZE
    );
    assert_eq!(
        code(check_match_image(&STANDARD.encode(png(0, 10)))),
        CODE_IMAGE_FORMAT
    );
    assert_eq!(
        code(check_match_image(&STANDARD.encode(png(10, 10))[..20])),
        CODE_IMAGE_FORMAT
    );
    let truncated_png = STANDARD.encode(&png(10, 10)[..14]);
    assert_eq!(code(check_match_image(&truncated_png)), CODE_IMAGE_FORMAT);
    assert_eq!(png_dimensions(&png(640, 480)), Some((640, 480)));
    assert_eq!(jpeg_dimensions(&jpeg_sof(640, 480)), Some((640, 480)));
    assert_eq!(jpeg_dimensions(&tiny_jpeg()), None);
    assert_eq!(jpeg_dimensions(SYNTHETIC_JPEG), Some((1, 1)));
    // Fill bytes and standalone markers before the frame header.
    let mut padded = vec![0xFF, 0xD8, 0xFF, 0xFF, 0xD0];
    padded.extend_from_slice(&jpeg_sof(3000, 10)[2..]);
    assert_eq!(jpeg_dimensions(&padded), Some((3000, 10)));
    assert_eq!(
        code(check_match_image(&STANDARD.encode(&padded))),
        CODE_IMAGE_SIZE
    );
}

#[tokio::test]
async fn idcard_submit_validation_and_certificate_types() {
    let h = Harness::start().await;
    let token = h.generate(PLAN_IDENTITY).await;
    let submit = |name: Value, id: Value, cert: Option<Value>| {
        let mut body = json!({"verify_token": token, "id_name": name, "id_no": id});
        if let (Some(b), Some(c)) = (body.as_object_mut(), cert) {
            b.insert("certificate_type".into(), c);
        }
        body
    };
    let wrong_check = format!("{}5", &ID_NO[..17]);
    let rejected = [
        (
            submit(json!(NAME), json!(ID_NO), Some(json!(4))),
            CODE_PARAM_INVALID,
            "param[id_no] format error",
        ),
        (
            submit(json!(NAME), json!(HMT_NO), Some(json!(2))),
            CODE_PARAM_INVALID,
            "param[certificate_type] format error",
        ),
        (
            submit(json!(NAME), json!(ID_NO), Some(json!("0"))),
            CODE_PARAM_INVALID,
            "param[certificate_type] format error",
        ),
        (
            submit(json!(NAME), json!(wrong_check), Some(json!(0))),
            CODE_PARAM_INVALID,
            "param[id_no] format error",
        ),
        (
            submit(json!(NAME), json!(&ID_NO[..17]), Some(json!(0))),
            CODE_PARAM_INVALID,
            "param[id_no] format error",
        ),
        (
            submit(json!(NAME), json!(18), Some(json!(0))),
            CODE_PARAM_INVALID,
            "param[id_no] format error",
        ),
        (
            submit(json!("  "), json!(ID_NO), Some(json!(0))),
            CODE_PARAM_MISSING,
            "param[id_name] is null",
        ),
        (
            submit(json!(NAME), Value::Null, Some(json!(0))),
            CODE_PARAM_MISSING,
            "param[id_no] is null",
        ),
    ];
    for (body, code, message) in &rejected {
        assert_err(&h.post("idcard/submit", body).await, *code, message);
    }
    assert_eq!(
        h.page(&[("token", &token)]).await.0,
        409,
        "nothing was accepted"
    );
    // Type omitted = 0; a resubmission replaces it (type 4 with a residence-permit number).
    let r: i64 = h
        .ok("idcard/submit", &submit(json!(NAME), json!(ID_NO), None))
        .await;
    assert_eq!(r, 1);
    h.submit_identity(&token, HMT_NO, 4).await;
    assert_eq!(h.page(&[("token", &token)]).await.0, 200);
    h.sim.complete(&token, PageOutcome::Pass).expect("pass");
    let all: GetAllResult = h.ok("result/getall", &vt(&token)).await;
    let c = all.verify_result[0]
        .idcard_confirm
        .as_ref()
        .expect("confirm");
    assert_eq!(c.idcard_number.as_deref(), Some(HMT_NO));
    assert_eq!(
        c.idcard_type.as_ref().map(|t| t.as_text()).as_deref(),
        Some("4")
    );
    // Unknown verify tokens.
    assert_token_gone(
        &h.post(
            "idcard/submit",
            &json!({"verify_token": "x", "id_name": NAME, "id_no": ID_NO}),
        )
        .await,
    );
}

#[test]
fn identity_rules() {
    assert!(validate_identity(NAME, ID_NO, 0).is_ok());
    assert!(validate_identity(NAME, HMT_NO, 4).is_ok());
    assert!(validate_identity(NAME, "830000199201300022", 4).is_ok());
    assert!(validate_identity(NAME, ID_NO, 4).is_err());
    // A lowercase check character x is accepted and canonicalised.
    let x_id = (0..1000u16)
        .filter_map(crate::sandbox::test_id_number)
        .find(|id| id.ends_with('X'))
        .expect("some sequence has check char X");
    let id = validate_identity(NAME, &x_id.to_lowercase(), 0).expect("x accepted");
    assert_eq!(id.number, x_id);
    assert!(validate_identity(NAME, "11010119000101001Ｘ", 0).is_err());
    assert!(validate_identity(&"名".repeat(65), ID_NO, 0).is_err());
}

// -- The page ------------------------------------------------------------------------------------------

#[tokio::test]
async fn page_escaping_redirects_and_result_page() {
    let h = Harness::start().await;
    let (status, html) = h.page(&[("token", "unknown")]).await;
    assert_eq!(status, 410);
    assert!(html.contains("id=\"error\"") && html.contains(MSG_TOKEN_INVALID));
    let (status, _) = h.page(&[]).await;
    assert_eq!(status, 410);

    let token = h.generate(PLAN_ONCE).await;
    let evil = "https://x.example/?a=\"><script>alert(1)</script>&b='";
    let (status, html) = h.page(&[("token", &token), ("successUrl", evil)]).await;
    assert_eq!(status, 200);
    assert!(!html.contains("<script>"));
    assert!(html.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;b=&#39;"));

    // /face/print without the slash goes to /face/print/ (relative Location).
    let resp = h
        .client
        .get(format!("{}/face/print?token={token}", h.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 302);
    assert_eq!(
        location(&resp).as_deref(),
        Some(format!("print/?token={token}").as_str())
    );

    let resp = h
        .submit(&[("token", token.as_str()), ("outcome", "maybe")])
        .await;
    assert_eq!(resp.status().as_u16(), 400);
    // No URL known (and a non-http one is ignored): a result page.
    let resp = h
        .submit(&[
            ("token", token.as_str()),
            ("outcome", "pass"),
            ("successUrl", "javascript:alert(1)"),
            ("id_name", NAME),
            ("id_no", ID_NO),
        ])
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let html = resp.text().await.expect("text");
    assert!(
        html.contains(r#"id="result" data-outcome="pass""#),
        "{html}"
    );
    let _: DetailResult = h.ok("result/detail", &vt(&token)).await;
    assert_eq!(h.root.len() + MOUNT.len(), h.base.len());
}

// -- Pure helpers --------------------------------------------------------------------------------------

#[test]
fn times_are_utc_plus_8() {
    assert_eq!(format_cst(0), "1970-01-01 08:00:00");
    assert_eq!(format_cst(1_696_903_810_000), "2023-10-10 10:10:10");
    assert_eq!(format_cst(1_704_038_399_999), "2023-12-31 23:59:59");
    assert_eq!(format_cst(1_704_038_400_000), "2024-01-01 00:00:00");
}

#[test]
fn outcomes_parse_and_print() {
    for o in PageOutcome::ALL {
        assert_eq!(PageOutcome::parse(o.as_str()), Some(o));
        assert_eq!(o.as_str().parse::<PageOutcome>(), Ok(o));
        assert_eq!(o.to_string(), o.as_str());
    }
    assert_eq!(PageOutcome::parse("PASS"), None);
    assert!("".parse::<PageOutcome>().is_err());
    let names: Vec<&str> = PageOutcome::ALL.iter().map(PageOutcome::as_str).collect();
    assert_eq!(
        names,
        [
            "pass",
            "face_mismatch",
            "liveness_failed",
            "id_name_mismatch",
            "abandon"
        ]
    );
}

#[test]
fn generated_identifiers() {
    let tokens: std::collections::HashSet<String> = (0..200).map(|_| new_verify_token()).collect();
    assert_eq!(tokens.len(), 200);
    assert!(tokens
        .iter()
        .all(|t| t.len() == 24 && t.bytes().all(|b| b.is_ascii_alphanumeric())));
    let id = new_log_id();
    assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0'));
}

#[test]
fn template_and_escaping() {
    assert_eq!(
        esc(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    // Inserted values are not scanned for placeholders again.
    let out = fill_template(
        "{{a}}-{{b}}-{{c}}-{{",
        &[("a", "{{b}}".into()), ("b", "B".into())],
    );
    assert_eq!(out, "{{b}}-B-{{c}}-{{");
    assert_eq!(mask_name(NAME), "测***");
    assert_eq!(mask_name(""), "");
    for name in [
        "plan_id",
        "identity",
        "token",
        "success_url",
        "failed_url",
        "identity_inputs",
        "notice",
    ] {
        assert!(PAGE_TEMPLATE.contains(&format!("{{{{{name}}}}}")), "{name}");
    }
}

#[test]
fn clock_clones_share_the_offset() {
    let clock = SimClock::new();
    let other = clock.clone();
    let before = other.now_ms();
    clock.advance(DAY);
    assert!(other.now_ms() - before >= 86_400_000);
    assert!(other.now_ms() - before < 86_400_000 + 60_000);
}

#[test]
fn debug_output_hides_secrets() {
    let sim = BaiduSimulator::new(config(), SimClock::new());
    let text = format!("{sim:?}");
    assert!(
        !text.contains(API_KEY) && !text.contains(SECRET_KEY),
        "{text}"
    );
    assert!(text.contains(APP_ID));
}
