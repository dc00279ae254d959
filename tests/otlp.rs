//! OTLP transports: an in-process OTLP/HTTP receiver (an axum handler decoding `ExportTraceServiceRequest`) gets the
//! spans of an RPC when `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (the base endpoint gets `/v1/traces`), and
//! `https://` collectors of either protocol are reached over TLS verified against `OTEL_EXPORTER_OTLP_CERTIFICATE`.
//! (OTLP/gRPC over plain http is tests/telemetry.rs.) Only the first test installs the process-wide subscriber; the
//! TLS tests use tracer providers of their own.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use common::*;
use facegate::config::LogFormat;
use facegate::telemetry::{self, OtlpExport, OtlpProtocol, TelemetryConfig};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio_stream::wrappers::TcpListenerStream;

/// What a receiver got: (path, content type, request) per export.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, String, ExportTraceServiceRequest)>>>);

impl Received {
    fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, _, r)| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }
}

/// The OTLP/HTTP receiver's router: any POST path, protobuf bodies.
fn http_receiver(received: Received) -> axum::Router {
    axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: Bytes| {
            let received = received.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                received
                    .0
                    .lock()
                    .unwrap()
                    .push((uri.path().to_owned(), content_type, request));
                let reply = ExportTraceServiceResponse {
                    partial_success: None,
                };
                (
                    [("content-type", "application/x-protobuf")],
                    reply.encode_to_vec(),
                )
            }
        },
    )
}

#[derive(Clone, Default)]
struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0 .0.lock().unwrap().push((
            String::new(),
            "application/grpc".into(),
            request.into_inner(),
        ));
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn vars<'a>(pairs: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_receiver_gets_the_spans_of_an_rpc() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = http_receiver(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // The standard variables, as a deployment sets them: the base endpoint of an OTLP/HTTP collector.
    let export = telemetry::otlp_from(vars(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
    ]))
    .unwrap();
    assert_eq!(
        export.as_ref().map(|e| e.protocol),
        Some(OtlpProtocol::HttpProtobuf)
    );
    let telemetry = telemetry::init_with(
        &TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "info".into(),
            otlp: export,
        },
        std::io::sink,
    )
    .unwrap();
    assert!(telemetry.exporting());

    let mut srv = Server::start().await;
    let mut request = tonic::Request::new(juhe_inline("otlp-http", 1));
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    srv.start_ok(request).await;
    srv.stop().await;
    telemetry.shutdown().await;

    let exports = received.0.lock().unwrap().clone();
    assert!(!exports.is_empty(), "spans were exported");
    for (path, content_type, _) in &exports {
        assert_eq!(
            path, "/v1/traces",
            "the signal path after the base endpoint"
        );
        assert_eq!(content_type, "application/x-protobuf");
    }
    let spans = received.spans();
    let rpc: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "facegate.v1.VerificationService/StartSession")
        .collect();
    assert_eq!(rpc.len(), 1, "{spans:?}");
    assert_eq!(rpc[0].kind, SpanKind::Server as i32);
    assert_eq!(
        rpc[0]
            .trace_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace"
    );
    let attributes: BTreeMap<&str, _> = rpc[0]
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone()))
        .collect();
    assert!(attributes.contains_key("call_id"));
    assert!(
        spans
            .iter()
            .any(|s| s.kind == SpanKind::Client as i32 && s.parent_span_id == rpc[0].span_id),
        "the Juhe call is a child of the RPC"
    );
}

/// A CA and a `localhost` server certificate signed by it, the CA written to `dir/ca.pem`: (cert PEM, key PEM).
fn pki(dir: &Path) -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "otlp test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Exports one span through a provider of its own to `export` and returns once the provider has shut down.
async fn export_one_span(export: OtlpExport) {
    let provider = telemetry::tracer_provider(Some(&export)).unwrap();
    provider.tracer("otlp-test").in_span("tls-probe", |_cx| {});
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_grpc_collectors_are_verified_against_the_configured_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki(dir.path());
    let receiver = GrpcReceiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )
            .unwrap()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let export = telemetry::otlp_from(vars(&[
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc".into()),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("https://localhost:{port}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            dir.path().join("ca.pem").display().to_string(),
        ),
    ]))
    .unwrap()
    .unwrap();
    export_one_span(export).await;
    let spans = receiver.0.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "tls-probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http_protobuf_collectors_are_verified_against_the_configured_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki(dir.path());
    let tls = tls_acceptor(&cert, &key);
    let received = Received::default();
    let app = http_receiver(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    let export = telemetry::otlp_from(vars(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("https://localhost:{port}/collector/traces"),
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            dir.path().join("ca.pem").display().to_string(),
        ),
    ]))
    .unwrap()
    .unwrap();
    export_one_span(export).await;
    let exports = received.0.lock().unwrap().clone();
    assert_eq!(exports.len(), 1);
    assert_eq!(
        exports[0].0, "/collector/traces",
        "the per-signal URL is used as is"
    );
    let spans = received.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "tls-probe");
}

fn tls_acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
