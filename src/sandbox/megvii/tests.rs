use super::*;
use crate::vendors::megvii::wire::{
    decode_data_uri_jpeg, parse_callback_data, parse_get_result, parse_get_token, Reply,
};

const API_KEY: &str = "sim-megvii-api-key";
const API_SECRET: &str = "sim-megvii-api-secret";
/// Synthetic: region 110101, born 1900-01-01, sequence 001.
const ID_NO: &str = "110101190001010014";
const NAME: &str = "测试用户";
const RETURN_URL: &str = "https://app.example/face/return?state=a%2Fb";
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn config(enforce_notify_ports: bool) -> MegviiSimConfig {
    MegviiSimConfig {
        api_key: API_KEY.to_owned(),
        api_secret: API_SECRET.to_owned(),
        enforce_notify_ports,
    }
}

/// One notify the receiver got.
#[derive(Debug, Clone)]
struct Received {
    data: String,
    sign: String,
    at: Instant,
}

type Inbox = Arc<Mutex<Vec<Received>>>;
/// Field changes: `Some(v)` sets, `None` removes.
type Changes<'a> = Vec<(&'a str, Option<&'a str>)>;
/// A get_result query.
type Query<'a> = Vec<(&'a str, &'a str)>;

async fn receive(State(inbox): State<Inbox>, body: Bytes) -> StatusCode {
    let mut data = None;
    let mut sign = None;
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "data" => data = Some(v.into_owned()),
            "sign" => sign = Some(v.into_owned()),
            _ => {}
        }
    }
    inbox.lock().unwrap().push(Received {
        data: data.unwrap_or_default(),
        sign: sign.unwrap_or_default(),
        at: Instant::now(),
    });
    StatusCode::OK
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct Harness {
    sim: Arc<MegviiSimulator>,
    base: String,
    notify_url: String,
    inbox: Inbox,
    client: reqwest::Client,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(config(false)).await
    }

    async fn start_with(cfg: MegviiSimConfig) -> Self {
        crate::app::install_crypto_provider();
        let sim = MegviiSimulator::new(cfg, SimClock::new());
        let addr = serve(Router::new().nest(MOUNT, sim.router())).await;
        let inbox: Inbox = Arc::default();
        let receiver = serve(
            Router::new()
                .route("/notify", post(receive))
                .with_state(Arc::clone(&inbox)),
        )
        .await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Harness {
            sim,
            base: format!("http://{addr}{MOUNT}"),
            notify_url: format!("http://{receiver}/notify"),
            inbox,
            client,
        }
    }

    /// Valid urlencoded fields of a comparison_type 1 / idcard_mode 0 flow.
    fn fields(&self) -> Vec<(String, String)> {
        [
            ("api_key", API_KEY),
            ("api_secret", API_SECRET),
            ("return_url", RETURN_URL),
            ("notify_url", self.notify_url.as_str()),
            ("biz_no", "order-0001"),
            ("comparison_type", "1"),
            ("idcard_mode", "0"),
            ("idcard_name", NAME),
            ("idcard_number", ID_NO),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// `fields()` with `changes` applied: `Some(v)` sets (or adds), `None` removes.
    fn with(&self, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
        let mut fields = self.fields();
        for (key, value) in changes {
            fields.retain(|(k, _)| k != key);
            if let Some(v) = value {
                fields.push(((*key).to_owned(), (*v).to_owned()));
            }
        }
        fields
    }

    async fn post_token(&self, fields: &[(String, String)]) -> (u16, Vec<u8>) {
        let resp = self
            .client
            .post(format!("{}/faceid/lite/get_token", self.base))
            .form(fields)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("body").to_vec())
    }

    async fn post_multipart(&self, body: Vec<u8>, boundary: &str) -> (u16, Vec<u8>) {
        let resp = self
            .client
            .post(format!("{}/faceid/lite/get_token", self.base))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("body").to_vec())
    }

    async fn token_ok(&self, fields: &[(String, String)]) -> GetTokenReply {
        let (status, body) = self.post_token(fields).await;
        match parse_get_token(status, &body).expect("parseable") {
            Reply::Ok(r) => r,
            Reply::Err { error, .. } => panic!("expected a token, got {error:?}"),
        }
    }

    async fn token(&self, changes: &[(&str, Option<&str>)]) -> GetTokenReply {
        self.token_ok(&self.with(changes)).await
    }

    async fn page(&self, token: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}/faceid/lite/do", self.base))
            .query(&[("token", token)])
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("text"))
    }

    async fn submit(&self, token: &str, outcome: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/faceid/lite/do", self.base))
            .form(&[("token", token), ("outcome", outcome)])
            .send()
            .await
            .expect("send")
    }

    async fn get_result_raw(&self, query: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let resp = self
            .client
            .get(format!("{}/faceid/lite/get_result", self.base))
            .query(query)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.expect("body").to_vec())
    }

    async fn get_result(&self, biz_id: &str, extra: &[(&str, &str)]) -> Reply<GetResultReply> {
        let mut query = vec![
            ("api_key", API_KEY),
            ("api_secret", API_SECRET),
            ("biz_id", biz_id),
        ];
        query.extend_from_slice(extra);
        let (status, body) = self.get_result_raw(&query).await;
        parse_get_result(status, &body).expect("parseable")
    }

    async fn result_ok(&self, biz_id: &str, extra: &[(&str, &str)]) -> GetResultReply {
        match self.get_result(biz_id, extra).await {
            Reply::Ok(r) => r,
            Reply::Err { error, .. } => panic!("expected a result, got {error:?}"),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until `n` notifies arrived.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..500 {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} notifies, got {}", self.received().len());
    }

    /// A flow finished with `outcome` via `complete`; returns the one notify's data, checked and parsed.
    async fn run(
        &self,
        changes: &[(&str, Option<&str>)],
        outcome: PageOutcome,
    ) -> (GetTokenReply, String, LiteResult) {
        let before = self.received().len();
        let t = self.token(changes).await;
        self.sim
            .complete(&t.token, outcome)
            .await
            .expect("complete");
        let got = self.received();
        assert_eq!(got.len(), before + 1, "one notify");
        let n = got.last().unwrap().clone();
        assert_eq!(n.sign, wire::sign(API_SECRET, &n.data));
        let parsed = parse_callback_data(&n.data).expect("data parses");
        assert_eq!(parsed.biz_info.biz_id, t.biz_id);
        (t, n.data, parsed)
    }
}

fn assert_error(status: u16, body: &[u8], want_status: u16, want_message: &str) {
    match parse_get_token(status, body).expect("parseable") {
        Reply::Err { http_status, error } => {
            assert_eq!(
                (http_status, error.error_message.as_str()),
                (want_status, want_message)
            );
            let rid = error.request_id.expect("request_id");
            let (ts, uuid) = rid.split_once(',').expect("<unix>,<uuid>");
            assert!(ts.parse::<i64>().is_ok() && uuid.len() == 36, "{rid}");
            assert!(error.time_used.is_some());
        }
        Reply::Ok(r) => panic!("expected {want_message}, got {r:?}"),
    }
}

/// A multipart body: (name, filename, bytes).
fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

fn jpeg() -> Vec<u8> {
    SYNTHETIC_JPEG.to_vec()
}

fn png() -> Vec<u8> {
    vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13]
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of `<input ... name="{name}" value="...">` in a page.
fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("input") + marker.len();
    let end = start + html[start..].find('"').expect("end quote");
    unescape(&html[start..end])
}

// -- get_token ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_token_urlencoded_success() {
    let h = Harness::start().await;
    let before = h.sim.clock().now_ms() / 1000;
    let t = h
        .token(&[
            ("biz_extra_data", Some("extra {\"k\":1}")),
            ("biz_no", Some("订单-1")),
        ])
        .await;
    assert_eq!(t.token.len(), 32);
    assert!(t
        .token
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let (ts, uuid) = t.biz_id.split_once(',').expect("biz_id");
    let ts: i64 = ts.parse().expect("unix");
    assert!((before..=before + 2).contains(&ts));
    assert!(uuid::Uuid::parse_str(uuid).is_ok());
    assert_eq!(t.expired_time, ts + 3600);
    assert_eq!(t.biz_no.as_deref(), Some("订单-1"));
    assert!(t.request_id.contains(','));
    // Lowercase check character accepted; optional arguments at their limits accepted.
    h.token(&[
        ("idcard_number", Some("11010519491231002x")),
        ("maximum_shooting_time", Some("60")),
        ("web_title", Some(&"t".repeat(32))),
        ("biz_extra_data", Some(&"e".repeat(4096))),
        ("biz_no", Some(&"n".repeat(128))),
        (
            "idcard_uneditable_field",
            Some("idcard_name, idcard_number,idcard_valid_date,idcard_issued_by"),
        ),
        ("procedure_type", Some("still")),
        ("procedure_priority", Some("keep")),
        ("liveness_preferences", Some("video_strict")),
        ("encryption_type", Some("2")),
        ("update_rtc", Some("1")),
        ("scene_id", Some("scene-1")),
        ("uuid", Some("user-1")),
    ])
    .await;
    h.token(&[
        ("maximum_shooting_time", Some("10")),
        ("action_http_method", Some("GET")),
    ])
    .await;
    assert_eq!(h.sim.stats().get_token, 3);

    // A fresh flow is NOT_STARTED, without the result blocks.
    let r = h.result_ok(&t.biz_id, &[]).await;
    assert_eq!(r.result.status, LiteStatus::NotStarted);
    assert_eq!(r.result.biz_info.biz_no, "订单-1");
    assert_eq!(
        r.result.biz_info.biz_extra_data.as_deref(),
        Some("extra {\"k\":1}")
    );
    assert!(r.result.idcard_info.is_none() && r.result.liveness_result.is_none());
    assert!(r.result.verify_result.is_none() && r.images.is_none());
}

#[tokio::test]
async fn get_token_multipart_success_with_reference_images() {
    let h = Harness::start().await;
    let b = "----facegate-test-boundary";
    let notify = h.notify_url.clone();
    let body = multipart(
        b,
        &[
            ("api_key", None, API_KEY.as_bytes()),
            ("api_secret", None, API_SECRET.as_bytes()),
            ("return_url", None, RETURN_URL.as_bytes()),
            ("notify_url", None, notify.as_bytes()),
            ("biz_no", None, "mp-1".as_bytes()),
            ("comparison_type", None, b"0"),
            ("image_ref1", Some("ref1.jpg"), &jpeg()),
            ("image_ref2", Some("ref2.png"), &png()),
        ],
    );
    let (status, body) = h.post_multipart(body, b).await;
    let Reply::Ok(t) = parse_get_token(status, &body).expect("parseable") else {
        panic!("{}", String::from_utf8_lossy(&body))
    };
    assert_eq!(t.biz_no.as_deref(), Some("mp-1"));
    h.sim
        .complete(&t.token, PageOutcome::Pass)
        .await
        .expect("complete");
    let n = h.received();
    let r = parse_callback_data(&n[0].data).expect("data");
    let v = r.verify_result.expect("verify_result");
    assert_eq!(v.result_ref1.expect("ref1").confidence, 85.0);
    assert!(v.result_ref2.is_some() && v.result_ref3.is_none() && v.result_faceid.is_none());
    assert!(v.id_exceptions.is_none() && r.idcard_info.is_none());

    // A quoted boundary and a multipart KYC flow with the urlencoded fields.
    let b2 = "simple";
    let fields = h.fields();
    let parts: Vec<(&str, Option<&str>, &[u8])> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), None, v.as_bytes()))
        .collect();
    let resp = h
        .client
        .post(format!("{}/faceid/lite/get_token", h.base))
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary=\"{b2}\""),
        )
        .body(multipart(b2, &parts))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn get_token_validation_errors() {
    let h = Harness::start().await;
    let long = |n: usize| "x".repeat(n);
    let (biz_no, title, extra) = (long(129), long(33), long(4097));
    let cases: Vec<(Changes, u16, &str)> = vec![
        (vec![("api_key", None)], 400, "MISSING_ARGUMENTS: api_key"),
        (
            vec![("api_secret", Some(""))],
            400,
            "MISSING_ARGUMENTS: api_secret",
        ),
        (
            vec![("api_key", Some("wrong"))],
            403,
            "AUTHENTICATION_ERROR",
        ),
        (
            vec![("api_secret", Some("wrong"))],
            403,
            "AUTHENTICATION_ERROR",
        ),
        (
            vec![("return_url", None)],
            400,
            "MISSING_ARGUMENTS: return_url",
        ),
        (
            vec![("return_url", Some("ftp://app.example/r"))],
            400,
            "BAD_ARGUMENTS: return_url",
        ),
        (
            vec![("notify_url", None)],
            400,
            "MISSING_ARGUMENTS: notify_url",
        ),
        (
            vec![("notify_url", Some("not a url"))],
            400,
            "BAD_ARGUMENTS: notify_url",
        ),
        (
            vec![("notify_url", Some("http://h.example:99999/n"))],
            400,
            "BAD_ARGUMENTS: notify_url",
        ),
        (vec![("biz_no", None)], 400, "MISSING_ARGUMENTS: biz_no"),
        (
            vec![("biz_no", Some(&biz_no))],
            400,
            "BAD_ARGUMENTS: biz_no",
        ),
        (
            vec![("comparison_type", None)],
            400,
            "MISSING_ARGUMENTS: comparison_type",
        ),
        (
            vec![("comparison_type", Some("2"))],
            400,
            "BAD_ARGUMENTS: comparison_type",
        ),
        (
            vec![("idcard_mode", None)],
            400,
            "MISSING_ARGUMENTS: idcard_mode",
        ),
        (
            vec![("idcard_mode", Some("5"))],
            400,
            "BAD_ARGUMENTS: idcard_mode",
        ),
        (
            vec![("idcard_name", None)],
            400,
            "MISSING_ARGUMENTS: idcard_name",
        ),
        (
            vec![("idcard_number", None)],
            400,
            "MISSING_ARGUMENTS: idcard_number",
        ),
        // Wrong check character (…0014 is right), 17 and 19 characters, letters.
        (
            vec![("idcard_number", Some("110101190001010015"))],
            400,
            "BAD_ARGUMENTS: idcard_number",
        ),
        (
            vec![("idcard_number", Some("11010119000101001"))],
            400,
            "BAD_ARGUMENTS: idcard_number",
        ),
        (
            vec![("idcard_number", Some("1101011900010100144"))],
            400,
            "BAD_ARGUMENTS: idcard_number",
        ),
        (
            vec![("idcard_number", Some("11010119000101001A"))],
            400,
            "BAD_ARGUMENTS: idcard_number",
        ),
        // With idcard_mode 1 the number is optional but still checked when given.
        (
            vec![
                ("idcard_mode", Some("1")),
                ("idcard_number", Some("110101190001010015")),
            ],
            400,
            "BAD_ARGUMENTS: idcard_number",
        ),
        (
            vec![("comparison_type", Some("0"))],
            400,
            "MISSING_ARGUMENTS: image_ref1",
        ),
        // In a urlencoded body image_ref1 is only text: still missing.
        (
            vec![
                ("comparison_type", Some("0")),
                ("image_ref1", Some("/9j/4AAQ")),
            ],
            400,
            "MISSING_ARGUMENTS: image_ref1",
        ),
        (
            vec![("procedure_type", Some("face"))],
            400,
            "BAD_ARGUMENTS: procedure_type",
        ),
        (
            vec![("procedure_priority", Some("selfie"))],
            400,
            "BAD_ARGUMENTS: procedure_priority",
        ),
        (
            vec![("liveness_preferences", Some("strict"))],
            400,
            "BAD_ARGUMENTS: liveness_preferences",
        ),
        (
            vec![("web_title", Some(&title))],
            400,
            "BAD_ARGUMENTS: web_title",
        ),
        (
            vec![("biz_extra_data", Some(&extra))],
            400,
            "BAD_ARGUMENTS: biz_extra_data",
        ),
        (
            vec![("idcard_uneditable_field", Some("idcard_name,idcard_photo"))],
            400,
            "BAD_ARGUMENTS: idcard_uneditable_field",
        ),
        (
            vec![("get_fail_reason", Some("2"))],
            400,
            "BAD_ARGUMENTS: get_fail_reason",
        ),
        (
            vec![("return_multifaces_tag", Some("yes"))],
            400,
            "BAD_ARGUMENTS: return_multifaces_tag",
        ),
        (
            vec![("action_http_method", Some("PUT"))],
            400,
            "BAD_ARGUMENTS: action_http_method",
        ),
        (
            vec![("maximum_shooting_time", Some("9"))],
            400,
            "BAD_ARGUMENTS: maximum_shooting_time",
        ),
        (
            vec![("maximum_shooting_time", Some("61"))],
            400,
            "BAD_ARGUMENTS: maximum_shooting_time",
        ),
        (
            vec![("maximum_shooting_time", Some("+20"))],
            400,
            "BAD_ARGUMENTS: maximum_shooting_time",
        ),
        (
            vec![("multi_oriented_detection", Some("2"))],
            400,
            "BAD_ARGUMENTS: multi_oriented_detection",
        ),
        (
            vec![("fmp_mode", Some("x"))],
            400,
            "BAD_ARGUMENTS: fmp_mode",
        ),
        (
            vec![("get_shooting_error", Some("true"))],
            400,
            "BAD_ARGUMENTS: get_shooting_error",
        ),
        (
            vec![("update_rtc", Some("-1"))],
            400,
            "BAD_ARGUMENTS: update_rtc",
        ),
        (
            vec![("encryption_type", Some("3"))],
            400,
            "BAD_ARGUMENTS: encryption_type",
        ),
    ];
    for (changes, status, message) in &cases {
        let (s, body) = h.post_token(&h.with(changes)).await;
        assert_error(s, &body, *status, message);
    }
    // Not form data at all.
    let resp = h
        .client
        .post(format!("{}/faceid/lite/get_token", h.base))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    assert_error(
        status,
        &resp.bytes().await.unwrap(),
        400,
        "BAD_ARGUMENTS: Content-Type",
    );
    assert_eq!(h.sim.stats().get_token, cases.len() as u64 + 1);
    assert!(h.sim.lock().flows.is_empty(), "no flow was created");
}

#[tokio::test]
async fn get_token_image_ref_checks() {
    let h = Harness::start().await;
    let b = "xYz";
    let notify = h.notify_url.clone();
    let base: Vec<(&str, Option<&str>, &[u8])> = vec![
        ("api_key", None, API_KEY.as_bytes()),
        ("api_secret", None, API_SECRET.as_bytes()),
        ("return_url", None, RETURN_URL.as_bytes()),
        ("notify_url", None, notify.as_bytes()),
        ("biz_no", None, b"img-1"),
        ("comparison_type", None, b"0"),
    ];
    let gif: &[u8] = b"GIF89a\x01\x00\x01\x00";
    let jpg = jpeg();
    let with = |extra: Vec<(&'static str, Option<&'static str>, &[u8])>| {
        let mut parts = base.clone();
        parts.extend(extra);
        multipart(b, &parts)
    };
    let (s, body) = h
        .post_multipart(with(vec![("image_ref1", Some("a.gif"), gif)]), b)
        .await;
    assert_error(s, &body, 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT: image_ref1");
    let (s, body) = h
        .post_multipart(with(vec![("image_ref1", Some("a.jpg"), b"")]), b)
        .await;
    assert_error(s, &body, 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT: image_ref1");
    let (s, body) = h
        .post_multipart(
            with(vec![
                ("image_ref1", Some("a.jpg"), &jpg),
                ("image_ref2", Some("b.txt"), b"hello"),
            ]),
            b,
        )
        .await;
    assert_error(s, &body, 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT: image_ref2");
    // A text part (no filename) is not a file.
    let (s, body) = h
        .post_multipart(with(vec![("image_ref1", None, b"/9j/4AAQ")]), b)
        .await;
    assert_error(s, &body, 400, "MISSING_ARGUMENTS: image_ref1");
    // A text part that is not UTF-8.
    let (s, body) = h
        .post_multipart(with(vec![("image_ref1", None, &jpg)]), b)
        .await;
    assert_error(s, &body, 400, "BAD_ARGUMENTS: image_ref1");
    // Malformed multipart: no close delimiter, wrong boundary.
    let mut truncated = with(vec![("image_ref1", Some("a.jpg"), &jpg)]);
    truncated.truncate(truncated.len() - 10);
    let (s, body) = h.post_multipart(truncated, b).await;
    assert_error(s, &body, 400, "BAD_ARGUMENTS: multipart");
    let (s, body) = h
        .post_multipart(with(vec![("image_ref1", Some("a.jpg"), &jpg)]), "other")
        .await;
    assert_error(s, &body, 400, "BAD_ARGUMENTS: multipart");
    // And the good one.
    let (s, body) = h
        .post_multipart(with(vec![("image_ref1", Some("a.jpg"), &jpg)]), b)
        .await;
    assert!(matches!(parse_get_token(s, &body).unwrap(), Reply::Ok(_)));
}

#[tokio::test]
async fn notify_ports_enforced_when_enabled() {
    let h = Harness::start_with(config(true)).await;
    for (url, ok) in [
        ("http://127.0.0.1:8080/notify", false),
        ("http://notify.example/n", false),
        ("https://notify.example:444/n", false),
        ("https://notify.example/n", true),
        ("http://notify.example:5000/n", true),
        ("https://[::1]:16003/n", true),
        ("http://user@notify.example:8883/n?x=1", true),
        ("https://notify.example:8028", true),
    ] {
        let (s, body) = h.post_token(&h.with(&[("notify_url", Some(url))])).await;
        if ok {
            assert!(
                matches!(parse_get_token(s, &body).unwrap(), Reply::Ok(_)),
                "{url}"
            );
        } else {
            assert_error(s, &body, 400, "BAD_ARGUMENTS: notify_url");
        }
    }
    // Not enforced: the test receiver's arbitrary port is fine.
    let h = Harness::start().await;
    h.token(&[("notify_url", Some("http://127.0.0.1:8080/notify"))])
        .await;
}

#[tokio::test]
async fn concurrency_limit_injection() {
    let h = Harness::start().await;
    h.sim.inject_concurrency_limit(2);
    for _ in 0..2 {
        let (s, body) = h.post_token(&h.fields()).await;
        assert_error(s, &body, 403, "CONCURRENCY_LIMIT_EXCEEDED");
    }
    h.token(&[]).await;
    assert_eq!(h.sim.stats().get_token, 3);
}

// -- page ----------------------------------------------------------------------------------------------------

#[tokio::test]
async fn page_renders_buttons_and_starts_processing() {
    let h = Harness::start().await;
    let t = h
        .token(&[
            ("web_title", Some("<b>T&C</b>")),
            ("biz_no", Some("a\"<x>")),
        ])
        .await;
    let (status, html) = h.page(&t.token).await;
    assert_eq!(status, 200);
    assert!(html.contains(
        "<title>facegate 沙箱 — 旷视 FaceID Lite (facegate sandbox — Megvii FaceID Lite)</title>"
    ));
    assert!(html.contains("<html lang=\"zh-CN\">"));
    assert!(html.contains("核身通过 <span lang=\"en\">(pass)</span>"));
    assert!(html.contains("<p lang=\"en\" class=\"en\">This is a simulated Megvii"));
    assert!(html.contains(r#"<form method="post" action="do">"#));
    assert!(html.contains(&format!(
        r#"<input type="hidden" name="token" value="{}">"#,
        t.token
    )));
    for o in PageOutcome::ALL {
        let button = format!(r#"name="outcome" value="{0}" id="{0}""#, o.as_str());
        assert!(html.contains(&button), "{button}");
    }
    assert!(html.contains("&lt;b&gt;T&amp;C&lt;/b&gt;") && !html.contains("<b>T&C"));
    assert!(html.contains("a&quot;&lt;x&gt;"));
    assert!(!html.contains("{{") && !html.contains("src=") && !html.contains("href="));
    assert!(!html.contains(ID_NO) && !html.contains(NAME));
    assert_eq!(
        h.result_ok(&t.biz_id, &[]).await.result.status,
        LiteStatus::Processing
    );
    // Reopening keeps PROCESSING.
    assert_eq!(h.page(&t.token).await.0, 200);
    let (status, html) = h.page("0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, 404);
    assert!(html.contains("id=\"error\""));
    assert_eq!(h.sim.stats().page_views, 3);
}

#[tokio::test]
async fn token_lives_one_hour_and_is_single_use() {
    let h = Harness::start().await;
    let t = h.token(&[]).await;
    h.sim.clock().advance(HOUR - Duration::from_secs(1));
    assert_eq!(h.page(&t.token).await.0, 200);
    h.sim.clock().advance(Duration::from_secs(1));
    let (status, html) = h.page(&t.token).await;
    assert_eq!(status, 410);
    assert!(html.contains("id=\"error\""));
    assert!(h.sim.complete(&t.token, PageOutcome::Pass).await.is_err());
    assert!(h
        .submit(&t.token, "pass")
        .await
        .text()
        .await
        .unwrap()
        .contains("id=\"error\""));
    assert!(h.received().is_empty());

    let t = h.token(&[]).await;
    h.sim
        .complete(&t.token, PageOutcome::Pass)
        .await
        .expect("first use");
    let (status, html) = h.page(&t.token).await;
    assert_eq!(status, 410);
    assert!(html.contains("id=\"error\""));
    assert!(h.sim.complete(&t.token, PageOutcome::Cancel).await.is_err());
    let resp = h.submit(&t.token, "cancel").await;
    assert_eq!(resp.status().as_u16(), 410);
    assert_eq!(h.received().len(), 1);
    assert_eq!(
        h.result_ok(&t.biz_id, &[]).await.result.status,
        LiteStatus::Ok
    );
    // Unknown outcome.
    let t = h.token(&[]).await;
    let resp = h.submit(&t.token, "explode").await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("id=\"error\""));
}

// -- results -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn outcome_data_shapes_kyc_given_identity() {
    let h = Harness::start().await;
    let extra = [("biz_extra_data", Some("ctx-42"))];
    let (_, text, r) = h.run(&extra, PageOutcome::Pass).await;
    assert_eq!(r.status, LiteStatus::Ok);
    assert_eq!(r.biz_info.biz_no, "order-0001");
    assert_eq!(r.biz_info.biz_extra_data.as_deref(), Some("ctx-42"));
    assert_eq!(r.liveness_result.as_ref().unwrap().result, "PASS");
    assert_eq!(
        r.liveness_result
            .as_ref()
            .unwrap()
            .procedure_type
            .as_deref(),
        Some("video")
    );
    let v = r.verify_result.as_ref().unwrap();
    assert!(text.contains(r#""error_message":null"#), "{text}");
    assert!(v.error_message.is_none() && v.verify_time.is_some());
    let c = v.result_faceid.as_ref().unwrap();
    assert_eq!(c.confidence, 85.0);
    let thresholds: Vec<(&str, f64)> = c.thresholds.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        thresholds,
        [
            ("1e-3", 62.169),
            ("1e-4", 69.315),
            ("1e-5", 74.399),
            ("1e-6", 78.038)
        ]
    );
    assert!(v.result_ref1.is_none() && v.id_exceptions.is_some());
    assert!(r.idcard_info.is_none(), "idcard_mode 0 has no idcard_info");
    assert!(r.will_result.is_none() && r.multifaces_tag.is_none() && r.fail_reason.is_none());
    assert!(!text.contains(NAME) && !text.contains(ID_NO));

    let (_, _, r) = h.run(&[], PageOutcome::FaceMismatch).await;
    assert_eq!(r.status, LiteStatus::Ok);
    assert_eq!(
        r.verify_result.unwrap().result_faceid.unwrap().confidence,
        30.0
    );

    let (_, _, r) = h.run(&[], PageOutcome::LivenessFailed).await;
    assert_eq!(r.status, LiteStatus::Failed);
    assert_eq!(r.liveness_result.unwrap().result, "FAIL");
    assert!(r.verify_result.is_none());

    for (outcome, message) in [
        (PageOutcome::IdNameMismatch, "ID_NUMBER_NAME_NOT_MATCH"),
        (PageOutcome::NoSuchIdNumber, "NO_SUCH_ID_NUMBER"),
    ] {
        let (_, _, r) = h.run(&[], outcome).await;
        assert_eq!(r.status, LiteStatus::Ok);
        assert_eq!(r.liveness_result.unwrap().result, "PASS");
        let v = r.verify_result.unwrap();
        assert_eq!(v.error_message.as_deref(), Some(message));
        assert!(v.result_faceid.is_none());
    }

    for (outcome, status) in [
        (PageOutcome::Cancel, LiteStatus::Cancelled),
        (PageOutcome::Timeout, LiteStatus::Timeout),
        (
            PageOutcome::WebrtcUnsupported,
            LiteStatus::WebrtcUnsupported,
        ),
        (PageOutcome::WebrtcFailed, LiteStatus::Failed),
    ] {
        let (_, _, r) = h.run(&[("idcard_mode", Some("2"))], outcome).await;
        assert_eq!(r.status, status);
        assert!(
            r.idcard_info.is_none() && r.verify_result.is_none(),
            "{outcome}"
        );
        assert!(r.fail_reason.is_none());
        match outcome {
            PageOutcome::Timeout => assert_eq!(r.liveness_result.unwrap().result, "TIMEOUT"),
            _ => assert!(r.liveness_result.is_none()),
        }
    }
    let (_, _, r) = h
        .run(
            &[("get_fail_reason", Some("1"))],
            PageOutcome::WebrtcUnsupported,
        )
        .await;
    assert_eq!(r.fail_reason.as_deref(), Some("WEBRTC_UNSUPPORTED"));
    let (_, _, r) = h
        .run(&[("get_fail_reason", Some("1"))], PageOutcome::WebrtcFailed)
        .await;
    assert_eq!(r.status, LiteStatus::Failed);
    assert_eq!(r.fail_reason.as_deref(), Some("WEBRTC_UNSUPPORTED"));
    assert!(r.liveness_result.is_none() && r.verify_result.is_none());
    let (_, _, r) = h
        .run(&[("get_fail_reason", Some("1"))], PageOutcome::Cancel)
        .await;
    assert!(r.fail_reason.is_none());
}

#[tokio::test]
async fn outcome_data_shapes_ocr_will_and_multifaces() {
    let h = Harness::start().await;
    let mode1 = [
        ("idcard_mode", Some("1")),
        ("idcard_name", None),
        ("idcard_number", None),
    ];
    let (_, _, r) = h.run(&mode1, PageOutcome::Pass).await;
    let id = r.idcard_info.expect("idcard_info");
    assert_eq!(id.idcard_mode.unwrap().as_text(), "1");
    assert_eq!(id.idcard_name.as_deref(), Some("沙箱用户"));
    assert_eq!(id.idcard_number.as_deref(), Some("110101190001010014"));
    let front = id.front_side.unwrap().ocr_result.unwrap();
    assert_eq!(front.id_card_number.as_deref(), Some("110101190001010014"));
    assert_eq!(front.birthday.unwrap().year.as_text(), "1900");
    assert!(id.back_side.is_none());

    let mode2 = [
        ("idcard_mode", Some("2")),
        ("idcard_uneditable_field", Some("idcard_number")),
    ];
    let (_, _, r) = h.run(&mode2, PageOutcome::LivenessFailed).await;
    let id = r.idcard_info.expect("idcard_info");
    assert_eq!(id.idcard_uneditable_field.as_deref(), Some("idcard_number"));
    assert!(id.front_side.is_some());
    let back = id.back_side.unwrap().ocr_result.unwrap();
    assert!(back.issued_by.is_some() && back.valid_date.is_some());

    let (_, _, r) = h
        .run(&[("idcard_mode", Some("3"))], PageOutcome::Pass)
        .await;
    let id = r.idcard_info.expect("typed identity");
    assert!(id.front_side.is_none() && id.idcard_number.is_some());

    let will = [
        ("procedure_type", Some("will")),
        ("return_multifaces_tag", Some("1")),
    ];
    let (_, text, r) = h.run(&will, PageOutcome::Pass).await;
    assert!(text.contains(r#""multifaces_tag":"0""#), "{text}");
    assert_eq!(
        r.liveness_result.unwrap().procedure_type.as_deref(),
        Some("will")
    );
    let w = r.will_result.expect("will_result");
    assert_eq!(
        (w[0].result.as_str(), w[0].will_error_message.as_deref()),
        ("PASS", Some(""))
    );
    let (_, _, r) = h.run(&will, PageOutcome::LivenessFailed).await;
    let w = r.will_result.expect("will_result");
    assert_eq!(
        (w[0].result.as_str(), w[0].will_error_message.as_deref()),
        ("FAIL", Some("ACTION_FAIL"))
    );
    let (_, _, r) = h.run(&will, PageOutcome::Cancel).await;
    assert!(r.will_result.is_none());
    assert_eq!(r.multifaces_tag.unwrap().as_text(), "0");
}

// -- notify and faults ---------------------------------------------------------------------------------------

#[tokio::test]
async fn notify_signed_and_counted() {
    let h = Harness::start().await;
    let (t, data, _) = h.run(&[], PageOutcome::Pass).await;
    let n = &h.received()[0];
    assert_eq!(n.data, data);
    assert_eq!(n.sign.len(), 40);
    assert_eq!(n.sign, wire::sign(API_SECRET, &data));
    assert_ne!(n.sign, wire::sign("other", &data));
    assert_eq!(h.sim.stats().notify_sent, 1);
    assert_eq!(h.sim.stats().notify_failed, 0);

    // A notify_url nobody listens on counts as failed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/notify", closed.local_addr().unwrap());
    drop(closed);
    let t2 = h.token(&[("notify_url", Some(&dead))]).await;
    h.sim.complete(&t2.token, PageOutcome::Pass).await.unwrap();
    assert_eq!(h.sim.stats().notify_failed, 1);
    assert_eq!(h.sim.stats().notify_sent, 1);
    assert_ne!(t.biz_id, t2.biz_id);
}

#[tokio::test]
async fn callback_faults() {
    let h = Harness::start().await;

    // Duplicate: two identical, valid notifies.
    h.sim.set_fault(CallbackFault::Duplicate);
    let t = h.token(&[]).await;
    h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
    let got = h.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].data.as_str(), got[0].sign.as_str()),
        (got[1].data.as_str(), got[1].sign.as_str())
    );
    assert_eq!(got[0].sign, wire::sign(API_SECRET, &got[0].data));

    // The fault applied once: the next flow has one notify.
    let t = h.token(&[]).await;
    h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
    assert_eq!(h.received().len(), 3);

    // Forged: the data is genuine, the sign is not.
    h.sim.set_fault(CallbackFault::Forged);
    let t = h.token(&[]).await;
    let done = h
        .sim
        .complete(&t.token, PageOutcome::FaceMismatch)
        .await
        .unwrap();
    let n = h.received().last().unwrap().clone();
    assert_ne!(n.sign, wire::sign(API_SECRET, &n.data));
    assert_eq!(
        parse_callback_data(&n.data).unwrap().biz_info.biz_id,
        t.biz_id
    );
    // The browser's copy is genuine.
    let form: BTreeMap<_, _> = done.form.iter().cloned().collect();
    assert_eq!(form["data"], n.data);
    assert_eq!(form["sign"], wire::sign(API_SECRET, &form["data"]));

    // Tampered: data changed after signing (a cancelled flow now claims OK with a high score).
    h.sim.set_fault(CallbackFault::Tampered);
    let t = h.token(&[]).await;
    let done = h.sim.complete(&t.token, PageOutcome::Cancel).await.unwrap();
    let n = h.received().last().unwrap().clone();
    assert_ne!(n.sign, wire::sign(API_SECRET, &n.data));
    let genuine = &done.form[0].1;
    assert_eq!(n.sign, wire::sign(API_SECRET, genuine));
    let tampered = parse_callback_data(&n.data).unwrap();
    assert_eq!(tampered.status, LiteStatus::Ok);
    assert_eq!(
        tampered
            .verify_result
            .unwrap()
            .result_faceid
            .unwrap()
            .confidence,
        99.9
    );
    assert_eq!(
        h.result_ok(&t.biz_id, &[]).await.result.status,
        LiteStatus::Cancelled
    );

    // Never: no notify, the flow is still finished.
    h.sim.set_fault(CallbackFault::Never);
    let before = h.received().len();
    let t = h.token(&[]).await;
    h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
    assert_eq!(h.received().len(), before);
    assert_eq!(
        h.result_ok(&t.biz_id, &[]).await.result.status,
        LiteStatus::Ok
    );

    // Reordered: the final notify, then a validly signed stale PROCESSING one.
    h.sim.set_fault(CallbackFault::Reordered);
    let t = h.token(&[]).await;
    h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
    let got = h.received();
    assert_eq!(got.len(), before + 2);
    let (first, second) = (&got[before], &got[before + 1]);
    for n in [first, second] {
        assert_eq!(n.sign, wire::sign(API_SECRET, &n.data));
    }
    assert_eq!(
        parse_callback_data(&first.data).unwrap().status,
        LiteStatus::Ok
    );
    let stale = parse_callback_data(&second.data).unwrap();
    assert_eq!(stale.status, LiteStatus::Processing);
    assert_eq!(stale.biz_info.biz_id, t.biz_id);
    assert!(stale.verify_result.is_none());
    assert!(first.at <= second.at);

    // Late: after the delay.
    h.sim
        .set_fault(CallbackFault::Late(Duration::from_millis(300)));
    let t = h.token(&[]).await;
    let started = Instant::now();
    h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
    let got = h.received();
    assert_eq!(got.len(), before + 3);
    assert!(got.last().unwrap().at.duration_since(started) >= Duration::from_millis(300));
    assert_eq!(h.sim.stats().notify_sent, got.len() as u64);
}

// -- browser return --------------------------------------------------------------------------------------

#[test]
fn biz_id_is_appended_before_the_fragment() {
    let id = "1462259748,52b13fb5-8dfb-4537-a62b-a641d5e929f1";
    let enc = "1462259748%2C52b13fb5-8dfb-4537-a62b-a641d5e929f1";
    for (url, want) in [
        (
            "https://d.example/xxx",
            format!("https://d.example/xxx?biz_id={enc}"),
        ),
        (
            "https://d.example/xxx?xxx=1",
            format!("https://d.example/xxx?xxx=1&biz_id={enc}"),
        ),
        (
            "https://d.example/xxx?xxx=1#frag",
            format!("https://d.example/xxx?xxx=1&biz_id={enc}#frag"),
        ),
        (
            "https://d.example/xxx#/a?b=c",
            format!("https://d.example/xxx?biz_id={enc}#/a?b=c"),
        ),
        (
            "https://d.example/xxx?",
            format!("https://d.example/xxx?biz_id={enc}"),
        ),
        (
            "https://d.example/xxx?a=1&",
            format!("https://d.example/xxx?a=1&biz_id={enc}"),
        ),
    ] {
        assert_eq!(append_biz_id(url, id), want, "{url}");
    }
}

#[tokio::test]
async fn get_return_redirects_with_biz_id() {
    let h = Harness::start().await;
    let url = "https://app.example/r?x=1#/done";
    let get = [
        ("action_http_method", Some("GET")),
        ("return_url", Some(url)),
    ];
    let t = h.token(&get).await;
    let done = h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
    assert_eq!(done.return_method, "GET");
    assert!(done.form.is_empty());
    let enc: String = form_urlencoded::byte_serialize(t.biz_id.as_bytes()).collect();
    assert_eq!(
        done.return_url,
        format!("https://app.example/r?x=1&biz_id={enc}#/done")
    );

    // Through the page.
    let t = h.token(&get).await;
    assert_eq!(h.page(&t.token).await.0, 200);
    let resp = h.submit(&t.token, "pass").await;
    assert_eq!(resp.status().as_u16(), 303);
    let location = resp.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let enc: String = form_urlencoded::byte_serialize(t.biz_id.as_bytes()).collect();
    assert_eq!(
        location,
        format!("https://app.example/r?x=1&biz_id={enc}#/done")
    );
    // The notify is sent in the background.
    let got = h.wait_for(2).await;
    let last = parse_callback_data(&got[1].data).unwrap();
    assert_eq!(last.biz_info.biz_id, t.biz_id);
}

#[tokio::test]
async fn post_return_page_carries_the_signed_form() {
    let h = Harness::start().await;
    let url = "https://app.example/r?a=1&b=\"2\"";
    let t = h.token(&[("return_url", Some(url))]).await;
    let resp = h.submit(&t.token, "face_mismatch").await;
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'unsafe-inline'"));
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"<form id="return" method="post" action="https://app.example/r?a=1&amp;b=&quot;2&quot;">"#), "{html}");
    assert!(html.contains("<noscript><button type=\"submit\">"));
    assert!(html.contains("<script>document.getElementById('return').submit()</script>"));
    let data = hidden_value(&html, "data");
    let sign = hidden_value(&html, "sign");
    assert_eq!(sign, wire::sign(API_SECRET, &data));
    let r = parse_callback_data(&data).unwrap();
    assert_eq!(
        r.verify_result.unwrap().result_faceid.unwrap().confidence,
        30.0
    );
    let got = h.wait_for(1).await;
    assert_eq!(
        (got[0].data.as_str(), got[0].sign.as_str()),
        (data.as_str(), sign.as_str())
    );

    let t = h.token(&[]).await;
    let done = h.sim.complete(&t.token, PageOutcome::Pass).await.unwrap();
    assert_eq!(done.return_method, "POST");
    assert_eq!(done.return_url, RETURN_URL);
    let names: Vec<&str> = done.form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["data", "sign"]);
}

// -- get_result ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_result_shapes_images_and_call_cap() {
    let h = Harness::start().await;
    let (t, _, _) = h
        .run(&[("idcard_mode", Some("2"))], PageOutcome::Pass)
        .await;
    let r = h
        .result_ok(
            &t.biz_id,
            &[("return_image", "4"), ("return_verify_time", "1")],
        )
        .await;
    assert_eq!(r.result.status, LiteStatus::Ok);
    assert!(r.request_id.as_deref().is_some_and(|id| id.contains(',')));
    assert!(r.time_used.is_some());
    assert!(r
        .result
        .verify_result
        .as_ref()
        .unwrap()
        .verify_time
        .is_some());
    assert!(r.result.idcard_info.is_some() && r.result.liveness_result.is_some());
    let images = r.images.expect("images");
    for uri in [
        &images.image_best,
        &images.image_idcard_front,
        &images.image_idcard_back,
    ] {
        let uri = uri.as_deref().expect("image");
        assert!(uri.starts_with("data:image/jpeg;base64,"));
        assert!(decode_data_uri_jpeg(uri)
            .unwrap()
            .starts_with(&[0xFF, 0xD8, 0xFF]));
    }
    let r = h.result_ok(&t.biz_id, &[("return_image", "0")]).await;
    assert!(r.images.is_none());
    assert!(r.result.verify_result.unwrap().verify_time.is_none());
    let r = h.result_ok(&t.biz_id, &[("return_image", "3")]).await;
    let images = r.images.expect("images");
    assert!(images.image_best.is_none() && images.image_idcard_front.is_none());
    assert!(images.image_idcard_back.is_some());
    // The fourth call is refused.
    match h.get_result(&t.biz_id, &[]).await {
        Reply::Err { http_status, error } => {
            assert_eq!(
                (http_status, error.error_message.as_str()),
                (400, "BAD_ARGUMENTS: biz_id")
            )
        }
        Reply::Ok(_) => panic!("fourth call answered"),
    }

    // Images only for status OK; only what the mode shot.
    let (t, _, _) = h
        .run(&[("idcard_mode", Some("2"))], PageOutcome::LivenessFailed)
        .await;
    let r = h.result_ok(&t.biz_id, &[("return_image", "4")]).await;
    assert_eq!(r.result.status, LiteStatus::Failed);
    assert!(r.images.is_none());
    let (t, _, _) = h.run(&[], PageOutcome::Pass).await;
    let r = h.result_ok(&t.biz_id, &[("return_image", "2")]).await;
    assert!(r.images.is_none(), "idcard_mode 0 shot no card");
    let r = h.result_ok(&t.biz_id, &[("return_image", "1")]).await;
    assert!(r.images.unwrap().image_best.is_some());

    // Errors.
    let cases: [(Query, u16, &str); 7] = [
        (
            vec![("api_secret", API_SECRET), ("biz_id", &t.biz_id)],
            400,
            "MISSING_ARGUMENTS: api_key",
        ),
        (
            vec![
                ("api_key", API_KEY),
                ("api_secret", "nope"),
                ("biz_id", &t.biz_id),
            ],
            403,
            "AUTHENTICATION_ERROR",
        ),
        (
            vec![("api_key", API_KEY), ("api_secret", API_SECRET)],
            400,
            "MISSING_ARGUMENTS: biz_id",
        ),
        (
            vec![
                ("api_key", API_KEY),
                ("api_secret", API_SECRET),
                ("biz_id", "1,nope"),
            ],
            400,
            "RESULT_NOT_FOUND",
        ),
        (
            vec![
                ("api_key", API_KEY),
                ("api_secret", API_SECRET),
                ("biz_id", &t.biz_id),
                ("return_image", "7"),
            ],
            400,
            "BAD_ARGUMENTS: return_image",
        ),
        (
            vec![
                ("api_key", API_KEY),
                ("api_secret", API_SECRET),
                ("biz_id", &t.biz_id),
                ("return_image", "01"),
            ],
            400,
            "BAD_ARGUMENTS: return_image",
        ),
        (
            vec![
                ("api_key", API_KEY),
                ("api_secret", API_SECRET),
                ("biz_id", &t.biz_id),
                ("return_verify_time", "2"),
            ],
            400,
            "BAD_ARGUMENTS: return_verify_time",
        ),
    ];
    for (query, status, message) in &cases {
        let (s, body) = h.get_result_raw(query).await;
        assert_error(s, &body, *status, message);
    }
    // Those did not use up the flow's calls (two used so far).
    assert!(matches!(h.get_result(&t.biz_id, &[]).await, Reply::Ok(_)));
    assert_eq!(
        h.sim.stats().get_result,
        3 + 1 + 1 + 2 + cases.len() as u64 + 1
    );
}

#[tokio::test]
async fn results_kept_one_day() {
    let h = Harness::start().await;
    let (done, _, _) = h.run(&[], PageOutcome::Pass).await;
    let pending = h.token(&[]).await;
    h.sim.clock().advance(DAY - Duration::from_secs(1));
    assert_eq!(
        h.result_ok(&done.biz_id, &[]).await.result.status,
        LiteStatus::Ok
    );
    // The unfinished flow (its token long expired) still reports NOT_STARTED.
    assert_eq!(
        h.result_ok(&pending.biz_id, &[]).await.result.status,
        LiteStatus::NotStarted
    );
    h.sim.clock().advance(Duration::from_secs(2));
    for biz_id in [&done.biz_id, &pending.biz_id] {
        match h.get_result(biz_id, &[]).await {
            Reply::Err { http_status, error } => {
                assert_eq!(
                    (http_status, error.error_message.as_str()),
                    (400, "RESULT_NOT_FOUND")
                )
            }
            Reply::Ok(r) => panic!("kept past a day: {r:?}"),
        }
    }
}

#[tokio::test]
async fn unknown_paths_answer_api_not_found() {
    let h = Harness::start().await;
    let resp = h
        .client
        .get(format!("{}/faceid/lite/nope", h.base))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.bytes().await.unwrap(), 404, "API_NOT_FOUND");
}

// -- units -----------------------------------------------------------------------------------------------

#[test]
fn multipart_parser_is_strict() {
    let ok = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b\r\n\
                   content-disposition: form-data; name=\"f\"; filename=\"x;\\\"y.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\
                   \xff\xd8\r\n\r\n--b--";
    let parts = parse_multipart(ok, "b").unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(
        (parts[0].name.as_str(), parts[0].data.as_slice()),
        ("a", b"1".as_slice())
    );
    assert_eq!(parts[1].filename.as_deref(), Some("x;\"y.jpg"));
    assert_eq!(parts[1].data, b"\xff\xd8\r\n");
    for bad in [
        b"preamble\r\n--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--"
            .as_slice(),
        b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b",
        b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--junk",
        b"--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\n1\r\n--b--",
        b"--b\r\nContent-Disposition: form-data\r\n\r\n1\r\n--b--",
        b"--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\n1\r\n--b--",
        b"--b\r\nX-Other: 1\r\n\r\n1\r\n--b--",
        b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n1\r\n--b--",
    ] {
        assert!(
            parse_multipart(bad, "b").is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        multipart_boundary("multipart/form-data; boundary=abc").as_deref(),
        Some("abc")
    );
    assert_eq!(
        multipart_boundary("multipart/form-data; charset=utf-8; boundary=\"a b\"").as_deref(),
        Some("a b")
    );
    assert_eq!(multipart_boundary("multipart/form-data"), None);
    assert_eq!(multipart_boundary("multipart/form-data; boundary="), None);
    assert_eq!(
        multipart_boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
        None
    );
}

#[test]
fn urls_ids_and_outcomes() {
    assert_eq!(parse_http_url("https://a.example/x"), Some(443));
    assert_eq!(parse_http_url("HTTP://a.example"), Some(80));
    assert_eq!(parse_http_url("http://a.example:5000?x"), Some(5000));
    assert_eq!(parse_http_url("http://[::1]:8028/"), Some(8028));
    assert_eq!(parse_http_url("http://[::1]/"), Some(80));
    for bad in [
        "a.example/x",
        "javascript:alert(1)",
        "http://",
        "http://:80/",
        "http://a:0/",
        "http://a:x/",
        "http://a b/",
        "http://a/\n",
    ] {
        assert_eq!(parse_http_url(bad), None, "{bad}");
    }
    assert!(valid_id_number("110101190001010014"));
    assert!(valid_id_number("11010519491231002x"));
    assert!(!valid_id_number("110101190001010013"));
    assert!(!valid_id_number("１１0101190001010014"));
    for o in PageOutcome::ALL {
        assert_eq!(PageOutcome::parse(o.as_str()), Some(o));
        assert_eq!(o.to_string().parse::<PageOutcome>(), Ok(o));
    }
    assert_eq!(PageOutcome::parse("abandon"), None);
    assert_eq!(CallbackFault::default(), CallbackFault::None);
}

#[test]
fn debug_output_hides_secrets() {
    let text = format!("{:?}", config(true));
    assert!(!text.contains(API_KEY) && !text.contains(API_SECRET));
    crate::app::install_crypto_provider();
    let sim = MegviiSimulator::new(config(false), SimClock::new());
    assert!(!format!("{sim:?}").contains(API_SECRET));
}
