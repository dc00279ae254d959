//! OpenTelemetry: spans reach an in-process OTLP receiver (the TraceService of opentelemetry-proto), continue the
//! caller's W3C trace context, follow the RPC semantic conventions, have one CLIENT child per vendor HTTP call, and
//! carry no personal data or secrets anywhere. The tracer provider is process-wide: this binary has one test.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use facegate::config::LogFormat;
use facegate::proto::v1 as pb;
use facegate::telemetry::{self, TelemetryConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_receiver() -> (Receiver, SocketAddr) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (receiver, addr)
}

/// A caller's trace context: trace id and span id, both as hex.
struct Caller {
    trace_id: String,
    span_id: String,
}

impl Caller {
    fn new(n: u8) -> Self {
        Self {
            trace_id: format!("4bf92f3577b34da6a3ce929d0e0e47{n:02x}"),
            span_id: format!("00f067aa0ba902{n:02x}"),
        }
    }

    fn request<T>(&self, request_id: &str, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        let traceparent = format!("00-{}-{}-01", self.trace_id, self.span_id);
        r.metadata_mut()
            .insert("traceparent", traceparent.parse().unwrap());
        r.metadata_mut()
            .insert("x-request-id", request_id.parse().unwrap());
        r
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(span: &Span) -> BTreeMap<String, Value> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let v = kv.value.as_ref()?.value.clone()?;
            Some((kv.key.clone(), v))
        })
        .collect()
}

fn text(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// The SERVER span of one RPC in the caller's trace, checked against the RPC conventions.
fn server_span<'a>(spans: &'a [Span], caller: &Caller, method: &str, code: i64) -> &'a Span {
    let name = format!("facegate.v1.VerificationService/{method}");
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == caller.trace_id && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {name} span in the caller's trace");
    let span = found[0];
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(
        hex(&span.parent_span_id),
        caller.span_id,
        "the caller's span is the parent"
    );
    let a = attributes(span);
    assert_eq!(a["rpc.system"], text("grpc"));
    assert_eq!(a["rpc.service"], text("facegate.v1.VerificationService"));
    assert_eq!(a["rpc.method"], text(method));
    assert_eq!(a["rpc.grpc.status_code"], Value::IntValue(code));
    assert_eq!(a["trace_id"], text(&caller.trace_id), "the log trace id");
    span
}

/// The CLIENT children of a span: (endpoint, attributes), in start order.
fn vendor_children(spans: &[Span], parent: &Span) -> Vec<(String, BTreeMap<String, Value>)> {
    let mut children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect();
    children.sort_by_key(|s| s.start_time_unix_nano);
    children
        .into_iter()
        .map(|s| {
            assert_eq!(s.kind, SpanKind::Client as i32, "{}", s.name);
            let a = attributes(s);
            let Value::StringValue(endpoint) = &a["facegate.vendor.endpoint"] else {
                panic!("endpoint is a string");
            };
            let method = match endpoint.as_str() {
                "face_image" | "get_result" => "GET",
                _ => "POST",
            };
            assert_eq!(s.name, format!("{method} {endpoint}"));
            assert_eq!(a["http.request.method"], text(method));
            assert_eq!(a["http.response.status_code"], Value::IntValue(200));
            assert_eq!(a["server.address"], text("127.0.0.1"));
            (endpoint.clone(), a)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_trace_and_carry_no_personal_data() {
    let (receiver, addr) = start_receiver().await;
    let telemetry = telemetry::init_with(
        &TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "info".into(),
            otlp: Some(telemetry::OtlpExport {
                protocol: telemetry::OtlpProtocol::Grpc,
                endpoint: format!("http://{addr}"),
                ca_file: None,
            }),
        },
        std::io::sink,
    )
    .unwrap();
    assert!(telemetry.exporting());

    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    fast_polling(&mut config);
    // A Megvii flow left unfinished ends within seconds through its one get_result (api_secret in the query).
    quick_megvii_flows(&mut config, 0);
    let mut srv = Server::start_with(dir, config).await;
    // Juhe: the identity and the face inline, decided within the call.
    let juhe = Caller::new(1);
    let s = srv
        .start_ok(juhe.request("req-juhe", juhe_inline("otel-juhe", 1)))
        .await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    // Baidu: access_token, verify_token and the identity within StartSession; then the page and the decision.
    let baidu = Caller::new(2);
    let b = srv
        .start_ok(baidu.request("req-baidu", baidu_inline("otel-baidu", "", 1)))
        .await;
    let browser = Browser::new();
    let relay = browser.choose(&b.user_url, "pass").await;
    browser.follow(&relay).await;
    let mut client = srv.client.clone();
    let end = stream_to_end(&mut client, &b.id).await;
    assert_eq!(state(end.last().unwrap()), pb::SessionState::Verified);
    let reveal = Caller::new(3);
    srv.client
        .get_result(reveal.request(
            "req-reveal",
            pb::GetResultRequest {
                session_id: b.id.clone(),
                reveal_personal_data: true,
                include_face_image: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // Megvii: get_token with the identity, then a signed callback.
    let megvii = Caller::new(4);
    let m = srv
        .start_ok(megvii.request("req-megvii", megvii_inline("otel-megvii", 1)))
        .await;
    srv.megvii_page(&m.user_url, facegate::sandbox::megvii::PageOutcome::Pass)
        .await;
    let unused = srv.start_ok(megvii_inline("otel-megvii-unused", 2)).await;
    let end = stream_to_end(&mut client, &unused.id).await;
    assert_eq!(state(end.last().unwrap()), pb::SessionState::Expired);
    // An error reply.
    let missing = Caller::new(5);
    let err = srv
        .client
        .get_result(missing.request("req-missing", missing_session()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    srv.stop().await;
    // Graceful shutdown flushes what the batch processor still holds.
    telemetry.shutdown().await;

    let exported = receiver.0.lock().unwrap().clone();
    let spans: Vec<Span> = exported
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect();
    assert!(!spans.is_empty(), "spans were exported");

    let service_name = exported
        .iter()
        .flat_map(|r| &r.resource_spans)
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value);
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        assert_eq!(service_name, Some(text("facegate")));
    }

    let span = server_span(&spans, &juhe, "StartSession", 0);
    assert_eq!(attributes(span)["call_id"], text("req-juhe"));
    let calls = vendor_children(&spans, span);
    assert_eq!(calls.len(), 1, "one Juhe call");
    assert_eq!(calls[0].0, "verifyface/verifyEncry");
    assert_eq!(calls[0].1["facegate.vendor"], text("juhe"));

    let span = server_span(&spans, &baidu, "StartSession", 0);
    let calls = vendor_children(&spans, span);
    let endpoints: Vec<&str> = calls.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        endpoints,
        ["oauth/2.0/token", "verifyToken/generate", "idcard/submit"]
    );
    assert!(calls
        .iter()
        .all(|(_, a)| a["facegate.vendor"] == text("baidu")));

    let span = server_span(&spans, &reveal, "GetResult", 0);
    let calls = vendor_children(&spans, span);
    let endpoints: Vec<&str> = calls.iter().map(|(e, _)| e.as_str()).collect();
    // The first GetResult of a passed Baidu session reads its scores and statistics once (result/detail and
    // result/stat: the decision itself took only result/getall), then the unmasked identity and the face it asked for.
    assert_eq!(
        endpoints,
        [
            "result/detail",
            "result/stat",
            "result/detail",
            "result/simple",
            "face_image"
        ]
    );

    let span = server_span(&spans, &megvii, "StartSession", 0);
    let calls = vendor_children(&spans, span);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "get_token");
    assert_eq!(calls[0].1["facegate.vendor"], text("megvii"));

    let span = server_span(&spans, &missing, "GetResult", 5);
    assert!(vendor_children(&spans, span).is_empty());

    // The Baidu result polls of the pollers are vendor calls too, outside any RPC.
    assert!(spans.iter().any(|s| {
        s.kind == SpanKind::Client as i32
            && attributes(s)
                .get("facegate.vendor.endpoint")
                .is_some_and(|e| *e == text("result/simple") || *e == text("result/getall"))
    }));

    assert!(spans.iter().any(|s| {
        s.kind == SpanKind::Client as i32
            && attributes(s).get("facegate.vendor.endpoint") == Some(&text("get_result"))
            && attributes(s).get("http.request.method") == Some(&text("GET"))
    }));

    // Nothing anywhere (names, attributes, events, status, resource) carries personal data or secrets. Debug
    // output shows every string of the export requests as it is.
    let everything = format!("{exported:?}");
    assert!(everything.contains("vendor call"), "log events ride along");
    for forbidden in [
        "测试用户",
        id_number(1).as_str(),
        "access_token",
        "api_secret",
        "client_secret",
        facegate::sandbox::JUHE_KEY,
        facegate::sandbox::BAIDU_SECRET_KEY,
        facegate::sandbox::MEGVII_API_SECRET,
    ] {
        assert!(
            !everything.contains(forbidden),
            "{forbidden:?} reached the exported spans"
        );
    }
}
