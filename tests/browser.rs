//! The Baidu flow in a real browser: headless Debian Chromium, driven through ChromeDriver's WebDriver API, opens
//! the session's user_url, presses "pass" on the sandbox H5 page, follows the redirects through facegate's return
//! relay, and the StatusStream ends in VERIFIED.
//!
//! The second test visits every end-user page (the sandbox vendor pages and their error pages, the return relay in
//! each state: verified, failed, retry allowed after a failed `kyc_retry` attempt, processing), saves a screenshot of
//! each under the test's target dir (`$CARGO_TARGET_TMPDIR/page-screenshots/`, not committed), and checks its
//! Chinese and English text and `lang` attributes.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them and runs this test with
//! `--run-ignored only`). Paths can be overridden with FACEGATE_CHROMIUM and FACEGATE_CHROMEDRIVER.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use facegate::proto::v1 as pb;
use facegate::sandbox::megvii::CallbackFault;
use serde_json::{json, Value};

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        facegate::app::install_crypto_provider();
        let path = std::env::var("FACEGATE_CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {path} (install chromium-driver): {e}"));
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..100 {
            if let Ok(r) = d.http.get(format!("{}/status", d.base)).send().await {
                if r.status().is_success() {
                    return d;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(status.is_success(), "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }
}

#[tokio::test]
#[ignore = "needs Debian chromium and chromium-driver; .ci/run installs them and runs it"]
async fn headless_chromium_completes_the_baidu_page() {
    let mut srv = Server::start_fast().await;
    let s = srv.start_ok(baidu_inline("browser", "", 1)).await;
    assert_eq!(state(&s), pb::SessionState::AwaitingUser);
    let watcher = watch_in_background(&srv.client, &s.id);

    let driver = Driver::start().await;
    let binary = std::env::var("FACEGATE_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    let session = driver
        .call(
            reqwest::Method::POST,
            "/session",
            Some(
                json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
                "goog:chromeOptions": {"binary": binary, "args": ["--headless=new", "--no-sandbox",
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]}}}}),
            ),
        )
        .await;
    let sid = session["sessionId"].as_str().unwrap().to_owned();
    let at = |p: &str| format!("/session/{sid}{p}");
    driver
        .call(
            reqwest::Method::POST,
            &at("/url"),
            Some(json!({"url": s.user_url})),
        )
        .await;
    let title = driver.call(reqwest::Method::GET, &at("/title"), None).await;
    assert!(
        title.as_str().unwrap().contains("Baidu faceprint"),
        "{title}"
    );
    let button = driver
        .call(
            reqwest::Method::POST,
            &at("/element"),
            Some(json!({"using": "css selector", "value": "#pass"})),
        )
        .await;
    // The W3C WebDriver element reference key.
    let element = button["element-6066-11e4-a52e-4f735466cecf"]
        .as_str()
        .unwrap_or_else(|| panic!("no element in {button}"))
        .to_owned();
    driver
        .call(
            reqwest::Method::POST,
            &at(&format!("/element/{element}/click")),
            Some(json!({})),
        )
        .await;

    let seen = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);

    // The browser went through facegate's relay and shows its page (no return URL was configured).
    let mut url = String::new();
    for _ in 0..50 {
        url = driver
            .call(reqwest::Method::GET, &at("/url"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned();
        if url.contains("/v1/return/") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(url.contains(&format!("/v1/return/{}", s.id)), "{url}");
    let _ = driver
        .call(reqwest::Method::DELETE, &format!("/session/{sid}"), None)
        .await;
    srv.stop().await;
}

/// One headless Chromium session.
struct Chrome {
    driver: Driver,
    sid: String,
    shots: std::path::PathBuf,
}

impl Chrome {
    async fn start() -> Self {
        let driver = Driver::start().await;
        let binary = std::env::var("FACEGATE_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
        let session = driver
            .call(
                reqwest::Method::POST,
                "/session",
                Some(
                    json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
                    "goog:chromeOptions": {"binary": binary, "args": ["--headless=new", "--no-sandbox",
                    "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--lang=zh-CN",
                    "--window-size=800,900", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync"]}}}}),
                ),
            )
            .await;
        let sid = session["sessionId"].as_str().unwrap().to_owned();
        let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Chrome { driver, sid, shots }
    }

    fn at(&self, p: &str) -> String {
        format!("/session/{}{p}", self.sid)
    }

    async fn open(&self, url: &str) {
        self.driver
            .call(
                reqwest::Method::POST,
                &self.at("/url"),
                Some(json!({ "url": url })),
            )
            .await;
    }

    async fn script(&self, js: &str) -> Value {
        self.driver
            .call(
                reqwest::Method::POST,
                &self.at("/execute/sync"),
                Some(json!({"script": js, "args": []})),
            )
            .await
    }

    async fn click(&self, css: &str) {
        let found = self
            .driver
            .call(
                reqwest::Method::POST,
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let element = found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no {css} in {found}"))
            .to_owned();
        self.driver
            .call(
                reqwest::Method::POST,
                &self.at(&format!("/element/{element}/click")),
                Some(json!({})),
            )
            .await;
    }

    /// Waits until the page at a URL containing `part` has finished loading; returns the URL.
    async fn wait_for(&self, part: &str) -> String {
        let mut url = String::new();
        for _ in 0..100 {
            url = self
                .script("return document.readyState === 'complete' ? location.href : ''")
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if url.contains(part) {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never reached {part}; last at {url}");
    }

    /// Saves a screenshot as `<name>.png` and checks the page: `lang="zh-CN"` on the document, every Chinese and
    /// English text present, and the English text inside an element whose language is English.
    async fn check(&self, name: &str, zh: &[&str], en: &[&str]) -> String {
        let shot = self
            .driver
            .call(reqwest::Method::GET, &self.at("/screenshot"), None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap())
            .unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
            "{name}"
        );
        std::fs::write(self.shots.join(format!("{name}.png")), &png).unwrap();

        let lang = self.script("return document.documentElement.lang").await;
        assert_eq!(lang, "zh-CN", "{name}");
        let text = self
            .script("return document.body.innerText")
            .await
            .as_str()
            .unwrap()
            .to_owned();
        for t in zh.iter().chain(en) {
            assert!(text.contains(t), "{name}: {t:?} not in {text:?}");
        }
        // Each English text sits in an element whose closest lang is "en"; each Chinese one in one that is zh-CN.
        let langs = self
            .script(
                "const out = {}; const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); \
                 let n; while ((n = walk.nextNode())) { const t = n.textContent.trim(); if (t) { \
                 out[t] = n.parentElement.closest('[lang]').lang; } } return out;",
            )
            .await;
        let langs = langs.as_object().unwrap();
        let lang_of = |t: &str| {
            langs
                .iter()
                .find(|(k, _)| k.contains(t))
                .map(|(_, v)| v.as_str().unwrap_or_default().to_owned())
                .unwrap_or_else(|| panic!("{name}: no text node with {t:?} in {langs:?}"))
        };
        for t in en {
            assert_eq!(lang_of(t), "en", "{name}: {t:?}");
        }
        for t in zh {
            assert_eq!(lang_of(t), "zh-CN", "{name}: {t:?}");
        }
        text
    }

    async fn end(self) {
        let _ = self
            .driver
            .call(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.sid),
                None,
            )
            .await;
    }
}

#[tokio::test]
#[ignore = "needs Debian chromium and chromium-driver; .ci/run installs them and runs it"]
async fn every_end_user_page_in_chinese_and_english() {
    let mut srv = Server::start_fast().await;
    let web = Chrome::start().await;

    // The Baidu sandbox page, then the relay after a pass.
    let s = srv.start_ok(baidu_inline("pages-pass", "", 71)).await;
    web.open(&s.user_url).await;
    web.check(
        "baidu-page",
        &["这是模拟的百度 H5 人脸实名认证页面", "认证通过", "放弃认证"],
        &[
            "This is a simulated Baidu H5 face verification page",
            "(pass)",
            "(abandon)",
        ],
    )
    .await;
    web.click("#pass").await;
    web.wait_for(&format!("/v1/return/{}", s.id)).await;
    web.check(
        "relay-verified",
        &["认证完成。", "您可以关闭此窗口。"],
        &["Verification complete.", "You can close this window."],
    )
    .await;
    assert_eq!(state(&srv.result(&s.id).await), pb::SessionState::Verified);

    // A failed attempt of a plan whose URL ends with it.
    let s = srv.start_ok(baidu_inline("pages-failed", "", 72)).await;
    web.open(&s.user_url).await;
    web.click("#face_mismatch").await;
    web.wait_for(&format!("/v1/return/{}", s.id)).await;
    web.check(
        "relay-failed",
        &["认证未通过。"],
        &["Verification not passed."],
    )
    .await;
    assert_eq!(state(&srv.result(&s.id).await), pb::SessionState::Failed);

    // The used-up token: the sandbox page's error page.
    web.open(&s.user_url).await;
    web.check(
        "baidu-error",
        &["无法进行认证", "Token无效或者已过期"],
        &["Cannot verify", "The token is invalid or has expired."],
    )
    .await;

    // kyc_retry: a failed attempt keeps the URL; the page says so and links back; the retry passes.
    let s = srv
        .start_ok(baidu_inline("pages-retry", "kyc_retry", 73))
        .await;
    web.open(&s.user_url).await;
    web.click("#liveness_failed").await;
    web.wait_for(&format!("/v1/return/{}", s.id)).await;
    let text = web
        .check(
            "relay-retry-allowed",
            &["本次认证未通过，您可以再试一次", "重新认证"],
            &["This attempt did not pass. You may try again", "Try again"],
        )
        .await;
    assert!(
        !text.contains("正在核对") && !text.contains("being checked"),
        "{text}"
    );
    let after = srv.result(&s.id).await;
    assert_eq!(state(&after), pb::SessionState::AwaitingUser);
    let watcher = watch_in_background(&srv.client, &s.id);
    web.click("#retry").await;
    web.wait_for("/face/print/").await;
    web.click("#pass").await;
    let relay = web.wait_for(&format!("/v1/return/{}", s.id)).await;
    let text = web
        .script("return document.body.innerText")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    // The pass may not be read from Baidu yet; never a retry offer after it, though.
    assert!(
        !text.contains("重新认证") && !text.contains("Try again"),
        "{text}"
    );
    let seen = watcher.await.unwrap();
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
    web.open(&relay).await;
    web.check(
        "relay-verified-after-retry",
        &["认证完成。"],
        &["Verification complete."],
    )
    .await;

    // The Megvii sandbox page; the browser comes back by GET (biz_id only) and no callback has arrived yet: the
    // relay says the result is being checked.
    let mut req = megvii_inline("pages-megvii", 74);
    if let Some(pb::start_session_request::VendorOptions::Megvii(o)) = req.vendor_options.as_mut() {
        o.action_http_method = pb::MegviiActionHttpMethod::Get as i32;
    }
    let s = srv.start_ok(req).await;
    srv.megvii().set_fault(CallbackFault::Never);
    web.open(&s.user_url).await;
    web.check(
        "megvii-page",
        &["这是模拟的旷视 FaceID Lite", "核身通过", "用户取消"],
        &[
            "This is a simulated Megvii FaceID Lite page",
            "(pass)",
            "(cancel)",
        ],
    )
    .await;
    web.click("#pass").await;
    web.wait_for(&format!("/v1/return/{}", s.id)).await;
    web.check(
        "relay-processing",
        &["感谢您的配合，正在核对认证结果。"],
        &["Thank you. The result is being checked."],
    )
    .await;

    // The used token: the Megvii page's error page.
    web.open(&s.user_url).await;
    web.check(
        "megvii-error",
        &["无法进行核身", "该 token 已使用"],
        &["Cannot verify", "The token was already used."],
    )
    .await;

    web.end().await;
    srv.stop().await;
}
