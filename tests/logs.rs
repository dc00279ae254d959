//! JSON logs (`--log-format json`): every line is a JSON object, and every line emitted while an RPC is handled
//! (including those of the vendor call it runs in a task of its own) carries the RPC's `call_id` (the caller's
//! `x-request-id`, else a generated one), `trace_id` (the caller's trace when it sent a `traceparent`) and the
//! `span_id` of the span it was logged in; StartSession's lines also carry its idempotency key as `idempotency_key`.
//! The subscriber is process-wide: this binary has one test.

mod common;

use common::*;
use facegate::config::LogFormat;
use facegate::telemetry::{self, TelemetryConfig};
use serde_json::Value;

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn lines(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a JSON object: {l:?} ({other:?})"),
        })
        .collect()
}

fn field<'a>(line: &'a serde_json::Map<String, Value>, name: &str) -> &'a str {
    line.get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

fn is_span_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s != "0".repeat(16)
}

fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s != "0".repeat(32)
}

/// `message` with the caller's request id and its trace context ([`CALLER_TRACE`]).
fn in_callers_trace<T>(message: T, request_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_an_rpc_carries_its_call_id_trace_id_and_span_id() {
    let logs = Captured::default();
    let _telemetry = telemetry::init_with(
        &TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "info".into(),
            otlp: None,
        },
        logs.clone(),
    )
    .unwrap();
    let mut srv = Server::start().await;
    let before = logs.text().len();

    // The caller's request id and trace context.
    let juhe = in_callers_trace(juhe_inline("logs-juhe", 1), "log-juhe");
    srv.client.start_session(juhe).await.unwrap();
    let juhe_end = logs.text().len();
    // A request id without trace context: Baidu's three vendor calls run in a task of their own.
    let mut baidu = tonic::Request::new(baidu_inline("logs-baidu", "", 1));
    baidu
        .metadata_mut()
        .insert("x-request-id", "log-baidu".parse().unwrap());
    let waiting = srv
        .client
        .start_session(baidu)
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let baidu_end = logs.text().len();
    // Neither: both are made up.
    let missing = srv.client.get_result(missing_session()).await;
    assert!(missing.is_err());
    let missing_end = logs.text().len();
    // A stream: its span ends once it is open; the line that says how it ended names the call all the same.
    let stream = in_callers_trace(
        facegate::proto::v1::StreamStatusRequest {
            session_id: waiting.id.clone(),
        },
        "log-stream",
    );
    let mut messages = srv.client.stream_status(stream).await.unwrap().into_inner();
    assert!(messages.message().await.unwrap().is_some(), "the snapshot");
    drop(messages);
    let finished_stream = |text: &str| {
        lines(text).into_iter().find(|l| {
            field(l, "message") == "rpc finished" && l.get("call_id") == Some(&"log-stream".into())
        })
    };
    let mut waited = 0;
    while finished_stream(&logs.text()[missing_end..]).is_none() && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    let all = logs.text();
    let end = missing_end;
    srv.stop().await;

    let stream_lines = lines(&all[missing_end..]);
    let opened = stream_lines
        .iter()
        .find(|l| field(l, "message") == "stream opened")
        .unwrap_or_else(|| panic!("{stream_lines:?}"));
    assert_eq!(field(opened, "call_id"), "log-stream");
    assert_eq!(field(opened, "trace_id"), CALLER_TRACE);
    assert_eq!(field(opened, "rpc.method"), "StreamStatus");
    assert!(is_span_id(field(opened, "span_id")), "{opened:?}");
    let finished = finished_stream(&all[missing_end..]).expect("the stream's end is logged");
    assert_eq!(
        field(&finished, "code"),
        "CANCELLED",
        "the client went away"
    );
    assert_eq!(field(&finished, "trace_id"), CALLER_TRACE);
    assert_eq!(field(&finished, "tenant"), field(opened, "tenant"));
    assert!(
        !finished.contains_key("span_id"),
        "the span ended when the stream opened: {finished:?}"
    );

    let everything = lines(&logs.text());
    assert!(everything
        .iter()
        .any(|l| field(l, "message") == "facegate serving"));

    let juhe_lines = lines(&all[before..juhe_end]);
    assert!(juhe_lines.len() >= 4, "{juhe_lines:?}");
    for l in &juhe_lines {
        assert_eq!(field(l, "call_id"), "log-juhe");
        assert_eq!(field(l, "idempotency_key"), "logs-juhe");
        assert!(!l.contains_key("request_id"), "{l:?}");
        assert_eq!(field(l, "trace_id"), CALLER_TRACE);
        assert!(is_span_id(field(l, "span_id")), "{l:?}");
        assert_eq!(field(l, "rpc.method"), "StartSession");
        assert!(field(l, "timestamp").len() >= 20);
        assert!(["INFO", "WARN", "ERROR"].contains(&field(l, "level")));
    }
    let messages: Vec<&str> = juhe_lines.iter().map(|l| field(l, "message")).collect();
    for expected in [
        "session started",
        "vendor call",
        "session decided",
        "rpc finished",
    ] {
        assert!(messages.contains(&expected), "{messages:?}");
    }
    let finished = juhe_lines
        .iter()
        .find(|l| field(l, "message") == "rpc finished")
        .unwrap();
    assert_eq!(field(finished, "code"), "OK");
    assert!(
        !juhe_lines.iter().any(|l| l.contains_key("otel.name")),
        "span directives stay out of the log"
    );

    let baidu_lines = lines(&all[juhe_end..baidu_end]);
    let trace = field(&baidu_lines[0], "trace_id").to_owned();
    assert!(is_trace_id(&trace) && trace != CALLER_TRACE, "{trace}");
    for l in &baidu_lines {
        assert_eq!(field(l, "call_id"), "log-baidu");
        assert_eq!(field(l, "idempotency_key"), "logs-baidu");
        assert!(is_span_id(field(l, "span_id")), "{l:?}");
        assert_eq!(field(l, "trace_id"), trace, "one trace id per RPC");
    }
    let vendor_calls = baidu_lines
        .iter()
        .filter(|l| field(l, "message") == "vendor call")
        .count();
    assert!(
        vendor_calls >= 2,
        "the vendor calls' lines are the RPC's: {baidu_lines:?}"
    );

    let missing_lines = lines(&all[baidu_end..end]);
    assert!(!missing_lines.is_empty());
    let call_id = field(&missing_lines[0], "call_id").to_owned();
    assert_eq!(call_id.len(), 32, "generated: {call_id}");
    for l in &missing_lines {
        assert_eq!(field(l, "call_id"), call_id);
        assert!(
            !l.contains_key("idempotency_key"),
            "GetResult has none: {l:?}"
        );
        assert!(is_span_id(field(l, "span_id")), "{l:?}");
        assert!(is_trace_id(field(l, "trace_id")));
    }
    assert!(missing_lines
        .iter()
        .any(|l| field(l, "message") == "rpc finished" && field(l, "code") == "NOT_FOUND"));
}
