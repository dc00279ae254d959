//! Shared HTTP plumbing for adapters: one client per vendor with timeouts, bounded body reads, classification of
//! transport failures by whether the request may have reached the vendor, and [`send`], the one place a vendor call
//! is made, traced (a CLIENT span) and counted (the `facegate_vendor_*` metrics).

use std::time::{Duration, Instant};

use opentelemetry::trace::Status as SpanStatus;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::events::CallRecord;
use crate::domain::{Vendor, VendorError, VendorErrorKind};

/// Builds a client with connect and whole-request timeouts. No redirects are followed (a vendor API never
/// redirects; following one could leak a request elsewhere).
pub fn client(connect_timeout: Duration, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("facegate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// Maps a transport error. A connect failure never reached the vendor; anything later may have been billed.
pub fn transport_error(vendor: Vendor, e: &reqwest::Error) -> VendorError {
    let (kind, possibly_billed, retry) = if e.is_connect() {
        (
            VendorErrorKind::Unreachable,
            false,
            Some(Duration::from_secs(2)),
        )
    } else if e.is_timeout() {
        (VendorErrorKind::Timeout, true, None)
    } else {
        (VendorErrorKind::ProtocolError, true, None)
    };
    VendorError {
        kind,
        vendor,
        vendor_code: String::new(),
        vendor_message: String::new(),
        possibly_billed,
        retry_after: retry,
    }
}

/// A reply (or a request we could not make) outside the vendor's documented form. `message` is sanitised: it may
/// quote a parser that saw vendor text.
pub fn protocol_error(vendor: Vendor, message: &str, possibly_billed: bool) -> VendorError {
    VendorError {
        kind: VendorErrorKind::ProtocolError,
        vendor,
        vendor_code: String::new(),
        vendor_message: crate::domain::error::sanitize_vendor_text(message),
        possibly_billed,
        retry_after: None,
    }
}

/// An error of a call that is never billed, whatever its transport failure suggested.
pub fn unbilled(mut e: VendorError) -> VendorError {
    e.possibly_billed = false;
    e
}

/// Reads a response body, refusing more than `max` bytes.
pub async fn read_bounded(
    vendor: Vendor,
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, VendorError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large(vendor, max));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(too_large(vendor, max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_error(vendor, &e)),
        }
    }
}

fn too_large(vendor: Vendor, max: usize) -> VendorError {
    VendorError {
        kind: VendorErrorKind::ProtocolError,
        vendor,
        vendor_code: String::new(),
        vendor_message: format!("reply larger than {max} bytes"),
        possibly_billed: true,
        retry_after: None,
    }
}

/// A vendor's HTTP reply: status and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// Body, at most the `max` given to [`send`].
    pub body: Vec<u8>,
}

/// Makes one vendor call and reads its reply (at most `max` bytes). The call gets a CLIENT span named after the
/// method and `endpoint` (a fixed label such as `verifyface/verify` or `get_token`) with the HTTP method, vendor,
/// endpoint, server address and response status, and is counted in `facegate_vendor_requests_total` and
/// `facegate_vendor_request_duration_seconds`. Neither ever sees the URL's path or query (which can carry an
/// access_token or api_secret), the body, or any header.
pub async fn send(
    vendor: Vendor,
    endpoint: &'static str,
    request: reqwest::RequestBuilder,
    max: usize,
) -> Result<Reply, VendorError> {
    let (client, request) = request.build_split();
    let request = request.map_err(|e| transport_error(vendor, &e))?;
    let method = request.method().clone();
    let span = tracing::info_span!(
        "vendor_call",
        otel.name = %format_args!("{method} {endpoint}"),
        otel.kind = "client",
        http.request.method = %method,
        facegate.vendor = vendor.as_str(),
        facegate.vendor.endpoint = endpoint,
        server.address = request.url().host_str().unwrap_or(""),
        http.response.status_code = Empty,
        error.type = Empty,
    );
    let started = Instant::now();
    let result = async {
        let response = client
            .execute(request)
            .await
            .map_err(|e| transport_error(vendor, &e))?;
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", i64::from(status.as_u16()));
        let body = read_bounded(vendor, response, max).await?;
        Ok::<_, VendorError>(Reply { status, body })
    }
    .instrument(span.clone())
    .await;
    let outcome = match &result {
        Ok(reply) if reply.status.is_success() => "ok",
        Ok(reply) if reply.status.is_client_error() => "http_4xx",
        Ok(reply) if reply.status.is_server_error() => "http_5xx",
        Ok(_) => "http_other",
        Err(e) => match e.kind {
            VendorErrorKind::Timeout => "timeout",
            VendorErrorKind::Unreachable => "unreachable",
            _ => "error",
        },
    };
    if outcome != "ok" {
        let error_type = match &result {
            Ok(reply) => reply.status.as_str().to_owned(),
            Err(_) => outcome.to_owned(),
        };
        span.record("error.type", error_type.as_str());
        span.set_status(SpanStatus::error(error_type));
    }
    let elapsed = started.elapsed();
    crate::metrics::global().vendor_request(vendor.as_str(), endpoint, outcome, elapsed);
    crate::domain::calls::record_call(CallRecord {
        endpoint,
        outcome,
        latency: elapsed,
        at_ms: crate::domain::now_ms(),
    });
    result
}
