use super::*;
use serde_json::{json, Value};

const KEY: &str = "sim-juhe-key-0123456789abcdef";
// Same openid as the crypto known-answer test.
const OPENID: &str = "JHsim-openid-0001";
const NAME: &str = "测试用户";
const FORM: &str = "application/x-www-form-urlencoded";

/// Synthetic ID: region 110101, born 1900-01-01, given sequence code.
fn synth_id(seq: &str) -> String {
    let first17 = format!("11010119000101{seq}");
    let check = gb11643_check_char(&first17).expect("17 digits");
    format!("{first17}{check}")
}

/// Tiny synthetic JPEG-looking bytes; bytes 6..9 encode to "++++".
fn jpeg_bytes() -> Vec<u8> {
    vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0xFB, 0xEF, 0xBE, 0x00, 0xFF, 0xD9,
    ]
}

fn jpeg_b64() -> String {
    STANDARD.encode(jpeg_bytes())
}

struct Harness {
    sim: Arc<JuheSimulator>,
    base: String,
    client: reqwest::Client,
}

impl Harness {
    async fn start() -> Self {
        let sim = JuheSimulator::new(JuheSimConfig {
            key: KEY.to_owned(),
            openid: OPENID.to_owned(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = sim.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        crate::app::install_crypto_provider();
        Harness {
            sim,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, endpoint: Endpoint) -> String {
        match endpoint {
            Endpoint::Verify => format!("{}/verifyface/verify", self.base),
            Endpoint::VerifyEncry => format!("{}/verifyface/verifyEncry", self.base),
        }
    }

    async fn read(resp: reqwest::Response) -> (String, Value) {
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(ct.as_deref(), Some(JSON_CONTENT_TYPE));
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).expect("json body");
        (text, value)
    }

    async fn form(&self, endpoint: Endpoint, fields: &[(&str, &str)]) -> Value {
        let resp = self
            .client
            .post(self.url(endpoint))
            .form(fields)
            .send()
            .await
            .expect("send");
        Self::read(resp).await.1
    }

    async fn raw(&self, endpoint: Endpoint, content_type: Option<&str>, body: Vec<u8>) -> Value {
        self.raw_text(endpoint, content_type, body).await.1
    }

    async fn raw_text(
        &self,
        endpoint: Endpoint,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (String, Value) {
        let mut req = self.client.post(self.url(endpoint)).body(body);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        Self::read(req.send().await.expect("send")).await
    }

    async fn plain(&self, idcard: &str, image: &str) -> Value {
        self.form(
            Endpoint::Verify,
            &[
                ("key", KEY),
                ("idcard", idcard),
                ("realname", NAME),
                ("image", image),
            ],
        )
        .await
    }

    async fn encrypted(&self, idcard: &str, image: &str) -> Value {
        let k = JuheKey::from_openid(OPENID);
        let (i, n, m) = (
            k.encrypt_field(idcard),
            k.encrypt_field(NAME),
            k.encrypt_field(image),
        );
        self.form(
            Endpoint::VerifyEncry,
            &[
                ("key", KEY),
                ("idcard", &i),
                ("realname", &n),
                ("image", &m),
            ],
        )
        .await
    }
}

fn param_error(reason: &str) -> Value {
    json!({"reason": reason, "result": null, "error_code": 226403})
}

/// Checks a billed reply; returns `result` without the random orderid.
fn billed(v: &Value) -> Value {
    assert_eq!(v["reason"], "成功");
    if v["result"]["res"].is_string() {
        assert_eq!(
            v["error_code"], "0",
            "a string res comes with a string error_code"
        );
    } else {
        assert_eq!(v["error_code"], 0);
    }
    let mut result = v["result"].clone();
    let orderid = result["orderid"].as_str().expect("orderid").to_owned();
    assert_eq!(orderid.len(), 26, "{orderid}");
    assert!(orderid.starts_with("JH"));
    assert!(orderid[2..].bytes().all(|b| b.is_ascii_digit()));
    if let Some(obj) = result.as_object_mut() {
        obj.remove("orderid");
    }
    result
}

fn expected_result(seq: &str) -> Value {
    match seq {
        "901" => json!({"res":2,"code":"3005","message":MSG_RES2,"desc":"人脸比对失败"}),
        "902" => json!({"res":3,"message":"身份证号与姓名不匹配"}),
        "903" => {
            json!({"res":2,"code":"3004","message":MSG_RES2,"desc":"用户上传的照片检测不到人脸"})
        }
        "904" => {
            json!({"res":2,"code":"3003","message":MSG_RES2,"desc":"人脸库中的照片检测不到人脸"})
        }
        "905" => json!({"res":1,"score":"55","message":"身份证号与姓名匹配，且比对成功"}),
        "906" => json!({"res":1,"score":"65","message":"身份证号与姓名匹配，且比对成功"}),
        "907" => json!({"res":2,"code":"3006","message":MSG_RES2,"desc":"其他原因"}),
        "908" => json!({"res":2,"message":MSG_RES2}),
        "909" => json!({"res":"1","score":"96","message":"身份证号与姓名匹配，且比对成功"}),
        "910" => {
            json!({"res":2,"code":"3005","message":format!("{MSG_RES2}: {NAME} {}", synth_id("910")),"desc":"人脸比对失败"})
        }
        _ => json!({"res":1,"score":"96","message":"身份证号与姓名匹配，且比对成功"}),
    }
}

fn expected_error(seq: &str) -> Option<Value> {
    let sys = |code: u32, rc: &str, reason: &str| json!({"resultcode": rc, "reason": reason, "result": null, "error_code": code});
    let svc =
        |code: u32, reason: &str| json!({"reason": reason, "result": null, "error_code": code});
    Some(match seq {
        "911" => svc(226401, "数据源超时"),
        "912" => svc(226402, "查无记录"),
        "914" => svc(226404, "对比错误"),
        "921" => sys(10012, "112", "请求超过次数限制"),
        "922" => sys(10011, "111", "当前IP请求超过限制"),
        "923" => sys(10013, "113", "测试KEY超过请求限制"),
        "924" => sys(10014, "114", "系统内部异常"),
        "925" => sys(10020, "120", "接口维护"),
        _ => return None,
    })
}

fn check_scenario(seq: &str, v: &Value) {
    match expected_error(seq) {
        Some(err) => assert_eq!(v, &err, "seq {seq}"),
        None => assert_eq!(billed(v), expected_result(seq), "seq {seq}"),
    }
}

#[test]
fn synthetic_ids_are_valid() {
    assert_eq!(synth_id("001"), "110101190001010014");
    for (seq, _) in SCENARIOS {
        let id = synth_id(seq);
        assert_eq!(idcard_sequence(&id).as_deref(), Some(*seq));
    }
}

#[tokio::test]
async fn default_success_exact_wire_shape() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(h.url(Endpoint::Verify))
        .form(&[
            ("key", KEY),
            ("idcard", &synth_id("001")),
            ("realname", NAME),
            ("image", &jpeg_b64()),
        ])
        .send()
        .await
        .expect("send");
    let (text, v) = Harness::read(resp).await;
    let orderid = v["result"]["orderid"].as_str().expect("orderid").to_owned();
    assert_eq!(
        text,
        format!(
            r#"{{"reason":"成功","result":{{"res":1,"score":"96","message":"身份证号与姓名匹配，且比对成功","orderid":"{orderid}"}},"error_code":0}}"#
        )
    );
    billed(&v);
}

#[tokio::test]
async fn every_scenario_plain() {
    let h = Harness::start().await;
    for (seq, _) in SCENARIOS
        .iter()
        .chain(&[("001", "default"), ("900", "default")])
        .filter(|(seq, _)| answer_delay(seq).is_zero())
    {
        let v = h.plain(&synth_id(seq), &jpeg_b64()).await;
        check_scenario(seq, &v);
    }
}

#[tokio::test]
async fn every_scenario_encrypted() {
    let h = Harness::start().await;
    for (seq, _) in SCENARIOS
        .iter()
        .chain(&[("001", "default")])
        .filter(|(seq, _)| answer_delay(seq).is_zero())
    {
        let v = h.encrypted(&synth_id(seq), &jpeg_b64()).await;
        check_scenario(seq, &v);
    }
}

#[tokio::test]
async fn system_error_exact_wire_text() {
    let h = Harness::start().await;
    let body = format!(
        "key={KEY}&idcard={}&realname=x&image={}",
        synth_id("921"),
        "%2F9j%2F4A%3D%3D"
    );
    let (text, _) = h
        .raw_text(Endpoint::Verify, Some(FORM), body.into_bytes())
        .await;
    assert_eq!(
        text,
        r#"{"resultcode":"112","reason":"请求超过次数限制","result":null,"error_code":10012}"#
    );
    let (text, _) = h
        .raw_text(Endpoint::Verify, Some(FORM), b"idcard=1".to_vec())
        .await;
    assert_eq!(
        text,
        r#"{"resultcode":"101","reason":"错误的请求KEY","result":null,"error_code":10001}"#
    );
}

#[tokio::test]
async fn bad_or_missing_key() {
    let h = Harness::start().await;
    let bad_key =
        json!({"resultcode":"101","reason":"错误的请求KEY","result":null,"error_code":10001});
    let id = synth_id("001");
    let img = jpeg_b64();
    for endpoint in [Endpoint::Verify, Endpoint::VerifyEncry] {
        for key in [Some("wrong"), Some(""), None] {
            let mut fields = vec![("idcard", id.as_str()), ("realname", NAME), ("image", &img)];
            if let Some(k) = key {
                fields.push(("key", k));
            }
            assert_eq!(h.form(endpoint, &fields).await, bad_key);
        }
    }
    // Key is case-sensitive.
    let upper = KEY.to_uppercase();
    let v = h
        .form(
            Endpoint::Verify,
            &[
                ("key", &upper),
                ("idcard", &id),
                ("realname", NAME),
                ("image", &img),
            ],
        )
        .await;
    assert_eq!(v, bad_key);
}

#[tokio::test]
async fn missing_or_empty_fields() {
    let h = Harness::start().await;
    let id = synth_id("001");
    let img = jpeg_b64();
    let all = [
        ("idcard", id.as_str()),
        ("realname", NAME),
        ("image", img.as_str()),
    ];
    for endpoint in [Endpoint::Verify, Endpoint::VerifyEncry] {
        for skip in ["idcard", "realname", "image"] {
            let expected = param_error(&format!("参数错误:{skip}不能为空"));
            let mut missing = vec![("key", KEY)];
            let mut empty = vec![("key", KEY)];
            for (name, value) in all {
                if name == skip {
                    empty.push((name, ""));
                } else {
                    missing.push((name, value));
                    empty.push((name, value));
                }
            }
            assert_eq!(h.form(endpoint, &missing).await, expected, "{skip}");
            assert_eq!(h.form(endpoint, &empty).await, expected, "{skip}");
        }
    }
    // Fields are checked in document order: idcard first.
    let v = h.form(Endpoint::Verify, &[("key", KEY)]).await;
    assert_eq!(v, param_error("参数错误:idcard不能为空"));
    // An encrypted empty string decrypts fine but is still empty.
    let k = JuheKey::from_openid(OPENID);
    let (i, n, e) = (
        k.encrypt_field(&id),
        k.encrypt_field(""),
        k.encrypt_field(&img),
    );
    let v = h
        .form(
            Endpoint::VerifyEncry,
            &[
                ("key", KEY),
                ("idcard", &i),
                ("realname", &n),
                ("image", &e),
            ],
        )
        .await;
    assert_eq!(v, param_error("参数错误:realname不能为空"));
}

#[tokio::test]
async fn bad_idcard_format() {
    let h = Harness::start().await;
    let good = synth_id("001");
    let wrong_check = format!(
        "{}{}",
        &good[..17],
        if good.ends_with('0') { '1' } else { '0' }
    );
    let expected = param_error(REASON_IDCARD_FORMAT);
    for id in [
        "11010119000101001".to_owned(),   // 17 chars
        format!("{good}0"),               // 19 chars
        wrong_check,                      // bad check char
        "11010119000101001Ｘ".to_owned(), // non-ASCII
        "1101011900010100A4".to_owned(),  // letter in body
        "110101000101001".to_owned(),     // old 15-digit form
    ] {
        assert_eq!(h.plain(&id, &jpeg_b64()).await, expected, "{id}");
        assert_eq!(h.encrypted(&id, &jpeg_b64()).await, expected, "{id}");
    }
    // A check char 'X' is accepted in either case.
    let x_id = (0..1000)
        .map(|n| synth_id(&format!("{n:03}")))
        .find(|id| id.ends_with('X') && !id[14..17].starts_with('9'))
        .expect("some sequence has check char X");
    billed(&h.plain(&x_id, &jpeg_b64()).await);
    billed(&h.plain(&x_id.to_lowercase(), &jpeg_b64()).await);
}

#[tokio::test]
async fn bad_base64_image() {
    let h = Harness::start().await;
    let id = synth_id("001");
    let expected = param_error(REASON_IMAGE_FORMAT);
    let data_uri = format!("data:image/jpeg;base64,{}", jpeg_b64());
    let urlsafe = jpeg_b64().replace('+', "-").replace('/', "_");
    let with_space = jpeg_b64().replace('+', " ");
    let unpadded = STANDARD
        .encode([0xFF, 0xD8, 0xFF, 0xE0])
        .trim_end_matches('=')
        .to_owned();
    for img in [
        "***",
        data_uri.as_str(),
        &urlsafe,
        &with_space,
        &unpadded,
        "====",
    ] {
        assert_eq!(h.plain(&id, img).await, expected, "{img}");
        assert_eq!(h.encrypted(&id, img).await, expected, "{img}");
    }
}

#[tokio::test]
async fn non_image_bytes_are_billed_3004() {
    let h = Harness::start().await;
    let not_image = STANDARD.encode(b"GIF89a not a face");
    let expected = expected_result("903");
    for seq in ["001", "901", "905"] {
        assert_eq!(billed(&h.plain(&synth_id(seq), &not_image).await), expected);
        assert_eq!(
            billed(&h.encrypted(&synth_id(seq), &not_image).await),
            expected
        );
    }
    // Name/ID mismatch is decided before the picture is looked at.
    assert_eq!(
        billed(&h.plain(&synth_id("902"), &not_image).await),
        expected_result("902")
    );
    // PNG is accepted.
    let png = STANDARD.encode([0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0]);
    assert_eq!(
        billed(&h.plain(&synth_id("001"), &png).await),
        expected_result("001")
    );
    assert_eq!(h.sim.stats().billed_calls, 8);
}

#[tokio::test]
async fn plain_and_encrypted_paths_do_not_mix() {
    let h = Harness::start().await;
    let id = synth_id("001");
    let img = jpeg_b64();
    // Plaintext sent to verifyEncry cannot be decrypted.
    let v = h
        .form(
            Endpoint::VerifyEncry,
            &[
                ("key", KEY),
                ("idcard", &id),
                ("realname", NAME),
                ("image", &img),
            ],
        )
        .await;
    assert_eq!(v, param_error(REASON_DECRYPT));
    // Ciphertext sent to verify is not an ID number.
    let k = JuheKey::from_openid(OPENID);
    let (i, n, m) = (
        k.encrypt_field(&id),
        k.encrypt_field(NAME),
        k.encrypt_field(&img),
    );
    let v = h
        .form(
            Endpoint::Verify,
            &[
                ("key", KEY),
                ("idcard", &i),
                ("realname", &n),
                ("image", &m),
            ],
        )
        .await;
    assert_eq!(v, param_error(REASON_IDCARD_FORMAT));
    // Wrong openid on the client side.
    let other = JuheKey::from_openid("JHsim-openid-0002");
    let (i, n, m) = (
        other.encrypt_field(&id),
        other.encrypt_field(NAME),
        other.encrypt_field(&img),
    );
    let v = h
        .form(
            Endpoint::VerifyEncry,
            &[
                ("key", KEY),
                ("idcard", &i),
                ("realname", &n),
                ("image", &m),
            ],
        )
        .await;
    assert_eq!(v, param_error(REASON_DECRYPT));
    // Each field alone failing to decrypt is enough.
    for bad in ["idcard", "realname", "image"] {
        let mut fields = vec![("key", KEY)];
        let enc = [("idcard", &i), ("realname", &n), ("image", &m)];
        let good = [
            ("idcard", k.encrypt_field(&id)),
            ("realname", k.encrypt_field(NAME)),
            ("image", k.encrypt_field(&img)),
        ];
        for ((name, wrong), (_, right)) in enc.iter().zip(good.iter()) {
            fields.push((
                name,
                if *name == bad {
                    wrong.as_str()
                } else {
                    right.as_str()
                },
            ));
        }
        assert_eq!(
            h.form(Endpoint::VerifyEncry, &fields).await,
            param_error(REASON_DECRYPT),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn plus_in_unencoded_ciphertext_breaks_decryption() {
    let h = Harness::start().await;
    let k = JuheKey::from_openid(OPENID);
    let i = k.encrypt_field(&synth_id("001"));
    let n = k.encrypt_field(NAME);
    let m = k.encrypt_field(&jpeg_b64());
    // Fixed by the crypto known-answer vector: the name ciphertext has a '+'.
    assert_eq!(n, "Ht61vShgNoTQZNmhN+jCZA==");
    let raw = format!("key={KEY}&idcard={i}&realname={n}&image={m}");
    let v = h
        .raw(Endpoint::VerifyEncry, Some(FORM), raw.clone().into_bytes())
        .await;
    assert_eq!(v, param_error(REASON_DECRYPT));
    // Only '+' matters: escaping just that one character makes it work.
    let fixed = raw.replace('+', "%2B");
    let v = h
        .raw(Endpoint::VerifyEncry, Some(FORM), fixed.into_bytes())
        .await;
    assert_eq!(billed(&v), expected_result("001"));
    // Double urlencoding breaks it too.
    let once: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("realname", &n)
        .finish();
    let twice = once.replace('%', "%25");
    let raw2 = format!("key={KEY}&idcard={i}&{twice}&image={m}").replace('+', "%2B");
    let v = h
        .raw(Endpoint::VerifyEncry, Some(FORM), raw2.into_bytes())
        .await;
    assert_eq!(v, param_error(REASON_DECRYPT));
    // The same happens to a plain image sent without urlencoding.
    let img = jpeg_b64();
    assert!(img.contains('+'));
    let raw3 = format!(
        "key={KEY}&idcard={}&realname=x&image={img}",
        synth_id("001")
    );
    let v = h.raw(Endpoint::Verify, Some(FORM), raw3.into_bytes()).await;
    assert_eq!(v, param_error(REASON_IMAGE_FORMAT));
}

#[tokio::test]
async fn content_type_must_be_form() {
    let h = Harness::start().await;
    let body = format!(
        "key={KEY}&idcard={}&realname=x&image=%2F9j%2F4A%3D%3D",
        synth_id("001")
    );
    let expected = param_error(REASON_BAD_FORMAT);
    for ct in [
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
    ] {
        for endpoint in [Endpoint::Verify, Endpoint::VerifyEncry] {
            let v = h.raw(endpoint, ct, body.clone().into_bytes()).await;
            assert_eq!(v, expected, "{ct:?}");
        }
    }
    // Parameters and case variations of the form type are accepted.
    for ct in [
        "application/x-www-form-urlencoded; charset=UTF-8",
        "Application/X-WWW-Form-Urlencoded",
    ] {
        let v = h
            .raw(Endpoint::Verify, Some(ct), body.clone().into_bytes())
            .await;
        assert_eq!(billed(&v), expected_result("001"), "{ct}");
    }
}

#[tokio::test]
async fn oversized_body_is_rejected_with_json() {
    let h = Harness::start().await;
    let mut body = b"key=".to_vec();
    body.resize(BODY_LIMIT + 1, b'a');
    let v = h.raw(Endpoint::Verify, Some(FORM), body).await;
    assert_eq!(v, param_error(REASON_BAD_FORMAT));
}

#[tokio::test]
async fn garbage_never_breaks_the_server() {
    let h = Harness::start().await;
    let bodies: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xFF, 0xFE, 0x00, b'&', b'='],
        b"key=%ZZ%&&&==&idcard=%FF%FE".to_vec(),
        format!("key={KEY}&idcard=%FF%FE%00&realname=%00&image=%FF").into_bytes(),
        format!(
            "key={KEY}&idcard={}&realname=x&image=%E4%B8%AD",
            synth_id("001")
        )
        .into_bytes(),
        format!("key={KEY}&key=other&idcard={}", "9".repeat(10_000)).into_bytes(),
    ];
    for body in bodies {
        for endpoint in [Endpoint::Verify, Endpoint::VerifyEncry] {
            let v = h.raw(endpoint, Some(FORM), body.clone()).await;
            assert!(v["error_code"].as_u64().is_some_and(|c| c != 0), "{v}");
        }
    }
    // Still serving.
    billed(&h.plain(&synth_id("001"), &jpeg_b64()).await);
}

#[tokio::test]
async fn stats_count_requests_and_billing() {
    let h = Harness::start().await;
    assert_eq!(h.sim.stats(), JuheSimStats::default());
    let img = jpeg_b64();
    h.plain(&synth_id("001"), &img).await; // billed
    h.plain(&synth_id("902"), &img).await; // billed (res 3)
    h.plain(&synth_id("911"), &img).await; // 226401
    h.plain(&synth_id("921"), &img).await; // 10012
    h.form(Endpoint::Verify, &[("key", "bad")]).await; // 10001
    h.encrypted(&synth_id("901"), &img).await; // billed (res 2)
    h.encrypted(&synth_id("912"), &img).await; // 226402
    h.raw(Endpoint::VerifyEncry, Some("text/plain"), vec![])
        .await; // 226403
    assert_eq!(
        h.sim.stats(),
        JuheSimStats {
            verify_calls: 5,
            verify_encry_calls: 3,
            billed_calls: 3,
        }
    );
    // Wrong method / unknown path are not counted.
    let r = h
        .client
        .get(h.url(Endpoint::Verify))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(h.sim.stats().verify_calls, 5);
}

#[test]
fn debug_output_hides_secrets() {
    let sim = JuheSimulator::new(JuheSimConfig {
        key: KEY.to_owned(),
        openid: OPENID.to_owned(),
    });
    let text = format!("{sim:?}");
    assert!(!text.contains(KEY) && !text.contains(OPENID), "{text}");
}

#[test]
fn scenario_table_is_consistent() {
    let mut seen = std::collections::HashSet::new();
    for (seq, desc) in SCENARIOS {
        assert_eq!(seq.len(), 3);
        assert!(seq.bytes().all(|b| b.is_ascii_digit()));
        assert!(seen.insert(*seq), "duplicate {seq}");
        assert!(!desc.is_empty());
    }
    assert_eq!(SCENARIOS.len(), 20);
}
