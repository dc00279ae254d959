//! The Baidu flow in a real browser: headless Debian Chromium, driven through ChromeDriver's WebDriver API, opens
//! the session's user_url, presses "pass" on the sandbox H5 page, follows the redirects through facegate's return
//! relay, and the StatusStream ends in VERIFIED.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them and runs this test with
//! `--run-ignored only`). Paths can be overridden with FACEGATE_CHROMIUM and FACEGATE_CHROMEDRIVER.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use facegate::proto::v1 as pb;
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
