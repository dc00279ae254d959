//! Service-level behaviour: idempotency (also concurrent), restart durability, health, and the exact wire form an
//! independent Juhe endpoint receives.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use facegate::app::Mode;
use facegate::config::Secret;
use facegate::proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

#[tokio::test]
async fn same_request_id_returns_the_same_session_without_a_second_call() {
    let mut srv = Server::start().await;
    let a = srv.start_ok(juhe_inline("idem-1", 1)).await;
    let b = srv.start_ok(juhe_inline("idem-1", 1)).await;
    assert_eq!(a.id, b.id);
    assert_eq!(a.version, b.version);
    assert_eq!(srv.juhe_stats().verify_encry_calls, 1);

    let st = srv
        .client
        .start_session(juhe_inline("idem-1", 901))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::AlreadyExists);
    let (reason, md) = reason(&st);
    assert_eq!(reason, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(md["sessionId"], a.id);
    assert_eq!(srv.juhe_stats().verify_encry_calls, 1);
    srv.stop().await;
}

#[tokio::test]
async fn concurrent_retries_with_one_request_id_make_one_vendor_call() {
    let mut srv = Server::start().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = srv.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .start_session(juhe_inline("idem-concurrent", 1))
                .await
                .map(|r| r.into_inner().session.unwrap())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let s = t.await.unwrap().unwrap();
        assert_eq!(
            state(&s),
            pb::SessionState::Verified,
            "every retry sees the decided session"
        );
        ids.insert(s.id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(srv.juhe_requests(), 1);

    // Concurrent inputs on one session also make one call: the second sees SESSION_BUSY or the final state.
    let s = srv.start_ok(juhe_empty("race")).await;
    srv.client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: s.id.clone(),
            identity: Some(identity(1)),
        })
        .await
        .unwrap();
    let mut uploads = Vec::new();
    for _ in 0..8 {
        let mut client = srv.client.clone();
        let id = s.id.clone();
        uploads.push(tokio::spawn(async move {
            client
                .upload_reference(pb::UploadReferenceRequest {
                    session_id: id,
                    image: Some(probe()),
                    ..Default::default()
                })
                .await
        }));
    }
    for u in uploads {
        match u.await.unwrap() {
            Ok(r) => assert_eq!(
                state(&r.into_inner().session.unwrap()),
                pb::SessionState::Verified
            ),
            Err(st) => assert!(
                matches!(reason(&st).0.as_str(), "SESSION_BUSY" | "SESSION_FINAL"),
                "{st:?}"
            ),
        }
    }
    assert_eq!(srv.juhe_requests(), 2);
    srv.stop().await;
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let mut srv = Server::start().await;
    let done = srv.start_ok(juhe_inline("restart-final", 901)).await;
    let open = srv.start_ok(juhe_empty("restart-open")).await;
    srv.client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: open.id.clone(),
            identity: Some(identity(1)),
        })
        .await
        .unwrap();
    srv.stop().await;

    let db = srv.db_path();
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    let mut srv2 = Server::start_with(dir, sandbox_config(&db)).await;
    let got = srv2
        .client
        .get_result(pb::GetResultRequest {
            session_id: done.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let s = got.session.unwrap();
    assert_eq!(state(&s), pb::SessionState::Failed);
    assert_eq!(
        s.failure.unwrap().code,
        pb::FailureCode::FaceMismatch as i32
    );
    assert_eq!(got.outcome.unwrap().billing.len(), 1);

    // The open session keeps its identity across the restart and completes with the image alone.
    let finished = srv2
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: open.id.clone(),
            image: Some(probe()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&finished), pb::SessionState::Verified);
    // Idempotency survives too.
    let again = srv2
        .client
        .start_session(juhe_inline("restart-final", 901))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(again.id, done.id);
    srv2.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let mut srv = Server::start().await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", srv.running().grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "facegate.v1.VerificationService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    srv.stop().await;
}

/// A minimal HTTP/1.1 endpoint that records one request per connection and answers with a documented Juhe reply.
async fn capture_endpoint(
    reply: &'static str,
) -> (
    String,
    Arc<Mutex<Vec<(String, Vec<(String, String)>, Vec<u8>)>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_end, content_length) = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        break (pos + 4, len);
                    }
                };
                while buf.len() < head_end + content_length {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.lines();
                let request_line = lines.next().unwrap_or_default().to_string();
                let headers = lines
                    .filter_map(|l| {
                        l.split_once(':')
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    })
                    .collect();
                sink.lock()
                    .unwrap()
                    .push((request_line, headers, buf[head_end..].to_vec()));
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    reply.len(),
                    reply
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// AES-128-ECB/PKCS5 decryption written here independently of the crate's adapter code.
fn independent_decrypt(openid: &str, b64: &str) -> String {
    use aes::cipher::{BlockCipherDecrypt, KeyInit};
    use base64::Engine;
    use md5::{Digest, Md5};
    let hex: String = Md5::digest(openid.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = &hex.as_bytes()[..16];
    let cipher = aes::Aes128::new_from_slice(key).unwrap();
    let mut data = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(data.len() % 16, 0);
    for block in data.chunks_mut(16) {
        cipher.decrypt_block(block.try_into().unwrap());
    }
    let pad = *data.last().unwrap() as usize;
    assert!((1..=16).contains(&pad) && data[data.len() - pad..].iter().all(|&b| b as usize == pad));
    data.truncate(data.len() - pad);
    String::from_utf8(data).unwrap()
}

#[tokio::test]
async fn an_independent_juhe_endpoint_receives_the_documented_form() {
    let reply = r#"{"reason":"成功","result":{"res":1,"score":"88","message":"身份证号与姓名匹配，且比对成功","orderid":"JH264117091113513280159458"},"error_code":0}"#;
    let (base, seen) = capture_endpoint(reply).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    config.juhe.base_url = base;
    // The fake is plaintext on loopback.
    config.juhe.allow_plaintext_http = true;
    config.juhe.key = Secret::new("independent-key");
    config.juhe.openid = Secret::new("independent-openid");
    let mut srv = Server::start_mode(dir, config, Mode::Production).await;

    for (rid, mode) in [
        ("ind-plain", pb::JuheMode::Plain),
        ("ind-enc", pb::JuheMode::Encrypted),
    ] {
        let mut req = juhe_inline(rid, 1);
        req.vendor_options = Some(pb::start_session_request::VendorOptions::Juhe(
            pb::JuheOptions { mode: mode as i32 },
        ));
        let s = srv.start_ok(req).await;
        assert_eq!(state(&s), pb::SessionState::Verified);
    }
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    let expected_image = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(JPEG)
    };
    for (i, (line, headers, body)) in requests.iter().enumerate() {
        let path = if i == 0 {
            "/verifyface/verify"
        } else {
            "/verifyface/verifyEncry"
        };
        assert!(line.starts_with(&format!("POST {path} HTTP/1.1")), "{line}");
        let ct = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str());
        assert_eq!(ct, Some("application/x-www-form-urlencoded"));
        let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["key", "idcard", "realname", "image"]);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("key"), "independent-key", "the key is never encrypted");
        if i == 0 {
            assert_eq!(get("idcard"), id_number(1));
            assert_eq!(get("realname"), "测试用户");
            assert_eq!(get("image"), expected_image);
        } else {
            // Each value is base64 ciphertext, form-encoded exactly once ('+' travels as %2B).
            assert!(!String::from_utf8_lossy(body).contains('+'));
            assert_eq!(
                independent_decrypt("independent-openid", &get("idcard")),
                id_number(1)
            );
            assert_eq!(
                independent_decrypt("independent-openid", &get("realname")),
                "测试用户"
            );
            assert_eq!(
                independent_decrypt("independent-openid", &get("image")),
                expected_image
            );
        }
    }
    srv.stop().await;
}
