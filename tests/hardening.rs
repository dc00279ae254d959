//! Hardening of both listeners and of the vendor token calls (issue 11, item 6): silent and idle connections are
//! closed and the listeners keep answering however many there were; connections over the limit are closed at once;
//! every RPC answers a request that does not decode with INVALID_ARGUMENT `INVALID_REQUEST` and one that is too
//! large with RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE`; oversized callback bodies are `MALFORMED_CALLBACK`; token
//! fetches end at the vendor timeout and are not retried.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::Router;
use common::*;
use facegate::app::Mode;
use facegate::config::{BaiduPlanConfig, Config, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::Code;
use tower::{Service, ServiceExt};

/// Every RPC of a sandbox server, as `service/method`.
const METHODS: [&str; 13] = [
    "VerificationService/StartSession",
    "VerificationService/SubmitIdentity",
    "VerificationService/UploadReference",
    "VerificationService/GetResult",
    "VerificationService/StreamStatus",
    "VerificationService/CancelSession",
    "VerificationService/RedactSession",
    "VerificationService/ListSessions",
    "VerificationService/ListSessionEvents",
    "VerificationService/ListWebhookDeliveries",
    "VerificationService/RedeliverWebhook",
    "SandboxService/SimulateOutcome",
    "SandboxService/ListScenarios",
];

/// Waits until the server closes `conn` (a read returns end of file or the connection is reset), and returns what
/// the server sent before that.
async fn closed_by_server(mut conn: TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz(http: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{http}/healthz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn small_limits(c: &mut Config) {
    c.http.max_connections = 40;
    c.http.preface_timeout_secs = 1;
    c.http.header_read_timeout_secs = 1;
    c.grpc.max_connections = 40;
    c.grpc.preface_timeout_secs = 1;
}

/// 1,134 silent connections once used up a 1024-descriptor limit and the HTTP listener stopped answering. Now the
/// ones over `max_connections` are closed at once, the rest at the preface timeout, and both listeners answer after.
#[tokio::test]
async fn silent_connections_are_closed_and_both_listeners_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    small_limits(&mut config);
    let mut srv = Server::start_with(dir, config).await;
    let (grpc, http) = (srv.running().grpc_addr, srv.running().http_addr);
    for addr in [http, grpc] {
        let mut silent = Vec::new();
        for _ in 0..300 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // Every one of them is closed by the server (over the limit: at once; the others: at the timeout), having
        // been sent nothing (an HTTP/2 server's SETTINGS are all the gRPC listener says first).
        let closed = futures_util::future::join_all(silent.into_iter().map(closed_by_server)).await;
        assert_eq!(closed.len(), 300);
        if addr == http {
            assert!(closed.iter().all(|seen| seen.is_empty()));
        }
    }
    assert_eq!(healthz(http).await, "ok\n");
    // A new gRPC connection is served.
    let mut client = connect(srv.running()).await;
    let err = client.get_result(missing_session()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    srv.stop().await;
}

/// Connections held open up to the limit: the next one is closed without a word while the held ones are still
/// served, and once they end, new ones are served again.
#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.http.max_connections = 3;
    let mut srv = Server::start_with(dir, config).await;
    let http = srv.running().http_addr;
    let request = b"GET /healthz HTTP/1.1\r\nHost: facegate\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(http).await.unwrap();
        c.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "a held connection is served"
        );
        held.push(c);
    }
    let mut extra = TcpStream::connect(http).await.unwrap();
    let _ = extra.write_all(request).await;
    assert!(
        closed_by_server(extra).await.is_empty(),
        "no answer over the limit"
    );
    // A held (keep-alive) connection is still served.
    held[0].write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = held[0].read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(held);
    // The slots come back as the server sees the held connections close.
    loop {
        if let Ok(r) = reqwest::get(format!("http://{http}/healthz")).await {
            assert_eq!(r.text().await.unwrap(), "ok\n");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    srv.stop().await;
}

/// HTTP/1: request headers that never finish, and a keep-alive connection that sends no next request, are closed at
/// `http.header_read_timeout_secs` (past the preface, so it is hyper's header timeout that closes them).
#[tokio::test]
async fn http1_header_read_timeout_closes_slow_and_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    small_limits(&mut config);
    // Far from the header timeout, so the preface deadline cannot be what closes them.
    config.http.preface_timeout_secs = 3600;
    let mut srv = Server::start_with(dir, config).await;
    let http = srv.running().http_addr;
    let mut slow = TcpStream::connect(http).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: facegate\r\nX-Slow: 1")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: facegate\r\n\r\n")
        .await
        .unwrap();
    let (slow_seen, idle_seen) = tokio::join!(closed_by_server(slow), closed_by_server(idle));
    assert!(
        slow_seen.is_empty() || slow_seen.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&slow_seen)
    );
    assert!(
        idle_seen.starts_with(b"HTTP/1.1 200"),
        "the request was answered, then the idle connection closed"
    );
    assert_eq!(healthz(http).await, "ok\n");
    srv.stop().await;
}

/// One gRPC message on the wire: the uncompressed flag, the length, the bytes.
fn frame(announced_len: u32, bytes: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&announced_len.to_be_bytes());
    f.extend_from_slice(bytes);
    f
}

/// Sends `body` as the request of `method` and returns the call's status.
async fn raw_call(channel: &Channel, method: &str, body: Vec<u8>) -> tonic::Status {
    let request = http::Request::builder()
        .method("POST")
        .uri(Uri::try_from(format!("http://facegate/facegate.v1.{method}")).unwrap())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(axum::body::Body::from(body)))
        .unwrap();
    let mut channel = channel.clone();
    let response = channel.ready().await.unwrap().call(request).await.unwrap();
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    loop {
        let frame = std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx))
            .await
            .expect("the call ends with trailers")
            .unwrap();
        if let Ok(trailers) = frame.into_trailers() {
            return tonic::Status::from_header_map(&trailers).expect("grpc-status in the trailers");
        }
    }
}

#[tokio::test]
async fn every_rpc_refuses_undecodable_and_oversized_messages_with_error_info() {
    let srv = Server::start().await;
    let channel = channel(srv.running()).await;
    let limit = srv.running().config.grpc.max_message_bytes;
    for method in METHODS {
        // Field 1, length-delimited, says 5 bytes and has 1.
        let st = raw_call(&channel, method, frame(3, &[0x0a, 0x05, 0x01])).await;
        assert_eq!(st.code(), Code::InvalidArgument, "{method}: {st:?}");
        assert_eq!(reason(&st).0, "INVALID_REQUEST", "{method}");

        // Announces one byte over the limit (and sends only a few): refused at the prefix.
        let st = raw_call(&channel, method, frame(limit as u32 + 1, &[0; 16])).await;
        assert_eq!(st.code(), Code::ResourceExhausted, "{method}: {st:?}");
        let (why, metadata) = reason(&st);
        assert_eq!(why, "MESSAGE_TOO_LARGE", "{method}");
        assert_eq!(metadata["limitBytes"], limit.to_string());
        assert_eq!(metadata["messageBytes"], (limit + 1).to_string());
    }
    // The connection is still good for well-formed calls.
    let mut client =
        facegate::proto::v1::verification_service_client::VerificationServiceClient::new(channel);
    let err = client.get_result(missing_session()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn oversized_callbacks_and_return_forms_are_malformed_callbacks() {
    let mut srv = Server::start().await;
    let s = srv.start_ok(megvii_inline("hard-cb-1", 1)).await;
    let http = srv.running().http_addr;
    let big = format!(
        "data={}&sign=00",
        "a".repeat(facegate::http::callbacks::MAX_CALLBACK_BYTES)
    );
    let browser = Browser::new();
    for url in [
        format!("http://{http}/v1/callbacks/megvii/notify"),
        format!("http://{http}/v1/return/{}", s.id),
    ] {
        let r = browser
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{url}");
        assert_eq!(r.text().await.unwrap(), "MALFORMED_CALLBACK", "{url}");
    }
    srv.stop().await;
}

/// A vendor endpoint that counts requests by path and never answers (but for Baidu's token, with
/// `answer_token`).
#[derive(Default)]
struct Hanging {
    token_requests: AtomicU64,
    other_requests: AtomicU64,
    answer_token: bool,
}

async fn hang(State(h): State<Arc<Hanging>>, uri: Uri) -> String {
    let path = uri.path();
    if path == "/oauth/2.0/token" || path == "/faceid/lite/get_token" {
        h.token_requests.fetch_add(1, Ordering::SeqCst);
        if h.answer_token && path == "/oauth/2.0/token" {
            return r#"{"access_token":"24.test-access-token","expires_in":2592000}"#.to_owned();
        }
    } else {
        h.other_requests.fetch_add(1, Ordering::SeqCst);
    }
    std::future::pending::<()>().await;
    "never".to_owned()
}

async fn hanging_vendor() -> (Arc<Hanging>, String) {
    hanging_vendor_with(Hanging::default()).await
}

async fn hanging_vendor_with(h: Hanging) -> (Arc<Hanging>, String) {
    let h = Arc::new(h);
    let app = Router::new().fallback(hang).with_state(Arc::clone(&h));
    let addr = common::recorder::serve(app).await;
    (h, format!("http://{addr}"))
}

/// Starts a production facegate against a hanging Baidu (`h`) with a 1 s vendor timeout, makes one inline
/// StartSession, and returns the vendor's request counts and the error the call ended with.
async fn start_against_hanging_baidu(
    h: Hanging,
    request_id: &str,
) -> (Arc<Hanging>, tonic::Status) {
    let (hanging, base) = hanging_vendor_with(h).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    config.baidu.base_url = base.clone();
    config.baidu.page_url = format!("{base}/face/print/");
    config.baidu.allow_plaintext_http = true;
    config.baidu.api_key = Secret::new("independent-api-key");
    config.baidu.secret_key = Secret::new("independent-secret-key");
    config.baidu.timeout_secs = 1;
    config.baidu.plans.insert(
        "kyc".into(),
        BaiduPlanConfig {
            plan_id: "plan-kyc".into(),
            needs_identity: true,
            needs_reference: false,
            ..Default::default()
        },
    );
    config.baidu.default_plan = "kyc".into();
    let mut srv = Server::start_mode(dir, config, Mode::Production).await;
    let err = srv
        .client
        .start_session(baidu_inline(request_id, "kyc", 1))
        .await
        .unwrap_err();
    srv.stop().await;
    (hanging, err)
}

#[tokio::test]
async fn a_hanging_baidu_token_endpoint_costs_one_timeout_and_one_request() {
    let (hanging, err) = start_against_hanging_baidu(Hanging::default(), "hard-baidu-1").await;
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(reason(&err).0, "VENDOR_TIMEOUT");
    assert_eq!(
        hanging.token_requests.load(Ordering::SeqCst),
        1,
        "the token fetch is not retried after its timeout"
    );
    assert_eq!(hanging.other_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_hanging_baidu_endpoint_is_not_asked_again_after_its_timeout() {
    let answering_token = Hanging {
        answer_token: true,
        ..Default::default()
    };
    let (hanging, err) = start_against_hanging_baidu(answering_token, "hard-baidu-2").await;
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(reason(&err).0, "VENDOR_TIMEOUT");
    assert_eq!(hanging.token_requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        hanging.other_requests.load(Ordering::SeqCst),
        1,
        "verifyToken/generate timed out once and was not sent again past the vendor timeout"
    );
}

#[tokio::test]
async fn a_hanging_megvii_get_token_costs_one_timeout_and_one_request() {
    let (hanging, base) = hanging_vendor().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    config.megvii.base_url = base.clone();
    config.megvii.page_url = format!("{base}/faceid/lite/do");
    config.megvii.allow_plaintext_http = true;
    config.megvii.api_key = Secret::new("independent-key");
    config.megvii.api_secret = Secret::new("independent-secret");
    config.megvii.timeout_secs = 1;
    let mut srv = Server::start_mode(dir, config, Mode::Production).await;
    let err = srv
        .client
        .start_session(megvii_inline("hard-megvii-1", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(reason(&err).0, "VENDOR_TIMEOUT");
    assert_eq!(hanging.token_requests.load(Ordering::SeqCst), 1);
    srv.stop().await;
}
