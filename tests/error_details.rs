//! Reflection clients print facegate's error details: grpcurl, against the real server, shows the ErrorInfo (its
//! reason and domain as JSON fields), BadRequest, RetryInfo and QuotaFailure decoded through reflection, never "is
//! not recognized"; `buf curl --protocol grpc` names each detail's type. Needs grpcurl and buf on PATH (.ci/run
//! installs both), hence ignored by default.

mod common;

use std::process::Command;

use base64::Engine;
use common::*;
use facegate::config::QuotaConfig;
use serde_json::json;

/// Runs a tool and returns what it printed (stdout and stderr), which must be a failed call.
fn failed_call(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be on PATH (.ci/run installs it): {e}"));
    assert!(!out.status.success(), "{program} {args:?} succeeded");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("not recognized"),
        "{program} could not decode a detail:\n{text}"
    );
    text
}

/// grpcurl's output with all whitespace removed, so JSON fields read `"key":"value"`.
fn grpcurl(addr: &str, method: &str, body: &serde_json::Value) -> String {
    let body = body.to_string();
    let method = format!("facegate.v1.VerificationService/{method}");
    failed_call("grpcurl", &["-plaintext", "-d", &body, addr, &method])
        .split_whitespace()
        .collect()
}

fn buf_curl(addr: &str, method: &str, body: &serde_json::Value) -> String {
    let body = body.to_string();
    let url = format!("http://{addr}/facegate.v1.VerificationService/{method}");
    failed_call(
        "buf",
        &[
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "-d",
            &body,
            &url,
        ],
    )
    .split_whitespace()
    .collect()
}

fn juhe_start(request_id: &str, sequence: u16) -> serde_json::Value {
    json!({
        "request_id": request_id,
        "vendor": "VENDOR_JUHE",
        "identity": {"name": "测试用户", "id_number": id_number(sequence)},
        "images": [{"data": base64::engine::general_purpose::STANDARD.encode(JPEG), "role": "IMAGE_ROLE_PROBE"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs grpcurl and buf on PATH; .ci/run installs them"]
async fn grpcurl_and_buf_curl_print_error_details_decoded() {
    let mut srv = Server::start().await;
    let addr = srv.running().grpc_addr.to_string();

    // ErrorInfo: Juhe's data source timed out (sequence 911).
    let out = grpcurl(&addr, "StartSession", &juhe_start("grpcurl-911", 911));
    assert!(
        out.contains("type.googleapis.com/google.rpc.ErrorInfo"),
        "{out}"
    );
    assert!(
        out.contains(r#""reason":"VENDOR_DATA_SOURCE_TIMEOUT""#),
        "{out}"
    );
    assert!(out.contains(r#""domain":"facegate.v1""#), "{out}");
    assert!(out.contains(r#""retryWith":"UploadReference""#), "{out}");
    let session_id = out
        .split(r#""sessionId":""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no sessionId in {out}"))
        .to_owned();
    // buf curl (1.75) prints each detail's type and its bytes in base64: it decodes only types compiled into buf
    // itself, whatever reflection serves. The replay answers the same error.
    let out = buf_curl(&addr, "StartSession", &juhe_start("grpcurl-911", 911));
    assert!(out.contains(r#""code":"unavailable""#), "{out}");
    assert!(out.contains(r#""type":"google.rpc.ErrorInfo""#), "{out}");

    // RetryInfo: sending the image again is the retry.
    let upload = json!({
        "session_id": session_id,
        "image": {"data": base64::engine::general_purpose::STANDARD.encode(JPEG), "role": "IMAGE_ROLE_PROBE"},
    });
    let out = grpcurl(&addr, "UploadReference", &upload);
    assert!(
        out.contains("type.googleapis.com/google.rpc.RetryInfo"),
        "{out}"
    );
    assert!(out.contains(r#""retryDelay":"5s""#), "{out}");

    // BadRequest: a field violation.
    let mut bad = juhe_start("grpcurl-bad", 1);
    let good = id_number(1);
    let wrong_check = if good.ends_with('0') { '1' } else { '0' };
    bad["identity"]["id_number"] = json!(format!("{}{wrong_check}", &good[..17]));
    let out = grpcurl(&addr, "StartSession", &bad);
    assert!(
        out.contains("type.googleapis.com/google.rpc.BadRequest"),
        "{out}"
    );
    assert!(out.contains(r#""field":"identity.id_number""#), "{out}");
    let out = buf_curl(&addr, "StartSession", &bad);
    assert!(out.contains(r#""type":"google.rpc.BadRequest""#), "{out}");
    srv.stop().await;

    // QuotaFailure: the daily cap of billed calls.
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.auth.default_quota = QuotaConfig {
        billed_calls_per_day: 1,
        ..QuotaConfig::default()
    };
    let mut srv = Server::start_with(dir, config).await;
    let addr = srv.running().grpc_addr.to_string();
    srv.start_ok(juhe_inline("cap-1", 1)).await;
    let out = grpcurl(&addr, "StartSession", &juhe_start("cap-2", 1));
    assert!(
        out.contains("type.googleapis.com/google.rpc.QuotaFailure"),
        "{out}"
    );
    assert!(out.contains(r#""quotaId":"billed_calls_per_day""#), "{out}");
    assert!(out.contains(r#""reason":"QUOTA_EXCEEDED""#), "{out}");
    srv.stop().await;
}
