//! Per-RPC observability around the gRPC service, so handlers stay free of it: a SERVER span named
//! `facegate.v1.VerificationService/<Method>` with the RPC semantic-convention attributes, continuing the caller's W3C
//! `traceparent`; `call_id` (the caller's `x-request-id`, else a new one), `trace_id`, `caller` and `tenant` fields
//! (and for StartSession its idempotency key as `idempotency_key`) that every log line inside the call
//! inherits (the caller is the one the auth layer in front authenticated); and the RPC metrics. The span, the metrics and a closing log line are finished when the response's final gRPC status is
//! known: from the headers of a trailers-only reply (an error), else from the trailers at the end of the body (a
//! unary reply, or the end of a status stream), else CANCELLED when the client went away first.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Frame, SizeHint};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Status as SpanStatus, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Code;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::app::SERVICE_NAME;
use crate::domain::caller::Caller;

/// The service's methods: the only values the `method` label and span names take.
pub const METHODS: [&str; 11] = [
    "StartSession",
    "SubmitIdentity",
    "UploadReference",
    "GetResult",
    "StreamStatus",
    "CancelSession",
    "RedactSession",
    "ListSessions",
    "ListSessionEvents",
    "ListWebhookDeliveries",
    "RedeliverWebhook",
];

/// The sandbox service's name and methods (served only by `serve --sandbox`).
pub const SANDBOX_SERVICE_NAME: &str = "facegate.v1.SandboxService";
/// See [`SANDBOX_SERVICE_NAME`].
pub const SANDBOX_METHODS: [&str; 2] = ["SimulateOutcome", "ListScenarios"];

/// Metadata key of the caller's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps a gRPC service (see the module docs).
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
}

impl<S> Observed<S> {
    /// Observes `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for Observed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = method_of(request.uri().path());
        let caller = request.extensions().get::<Caller>();
        let (span, ids) = rpc_span(service, method, request.headers(), caller);
        let stream = STREAMING_METHODS.contains(&method).then(|| StreamIds {
            ids,
            caller: caller.map(|c| c.id.to_string()),
        });
        let call = Call {
            scope: Scope::Span(span.clone()),
            stream,
            method,
            tenant: caller.map(|c| c.tenant.clone()).unwrap_or_default(),
            started: Instant::now(),
        };
        // The clone that was polled ready serves this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let response = inner.call(request).instrument(span);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            let body = match code_of(&parts.headers) {
                Some(code) => {
                    call.finish(code);
                    body
                }
                None => Body::new(ObservedBody {
                    inner: body,
                    call: Some(call),
                }),
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// The service and method named by a request path, if it is one of [`METHODS`] or [`SANDBOX_METHODS`] (else
/// `other` of the verification service, so a client cannot make up label values).
fn method_of(path: &str) -> (&'static str, &'static str) {
    let services: [(&'static str, &[&'static str]); 2] = [
        (SERVICE_NAME, &METHODS),
        (SANDBOX_SERVICE_NAME, &SANDBOX_METHODS),
    ];
    let rest = path.strip_prefix('/').unwrap_or_default();
    services
        .into_iter()
        .find_map(|(service, methods)| {
            let name = rest.strip_prefix(service)?.strip_prefix('/')?;
            let method = methods.iter().find(|m| **m == name)?;
            Some((service, *method))
        })
        .unwrap_or((SERVICE_NAME, "other"))
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Whether `v` is a plain token (1 to 128 characters of `[A-Za-z0-9._:-]`): only such caller-chosen ids are logged.
fn plain_token(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// The per-call id logged as `call_id`: the caller's `x-request-id` when it is a plain token, else a new one. It goes
/// into every log line of the call, so it must not be able to carry anything else.
fn call_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| plain_token(v))
        .map(str::to_owned)
        .unwrap_or_else(generated_call_id)
}

/// A new call id: 32 hex digits, a random number drawn once per process then a count of the ids it made. Unique
/// within the process and, by the random half, across processes; it is a log correlation id only, never shown to a
/// caller. (A random UUID per call cost a `getrandom` system call on every RPC.)
fn generated_call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    format!(
        "{process:016x}{:016x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Records StartSession's idempotency key (its `request_id`, distinct from the per-call `call_id`) on the current
/// RPC span as `idempotency_key`. The key is the caller's choice: only a plain token of at most 128 characters is
/// logged (what validation accepts), anything else as `<invalid>`.
pub fn record_idempotency_key(key: &str) {
    let shown = if plain_token(key) { key } else { "<invalid>" };
    Span::current().record("idempotency_key", shown);
}

/// The call's ids, as its span records them.
struct CallIds {
    call_id: String,
    trace_id: String,
}

/// What the closing log line of a stream names once its span has ended (see [`Call::opened`]): the fields every
/// line inside the span inherits (the tenant is [`Call::tenant`], present when the caller is).
struct StreamIds {
    ids: CallIds,
    caller: Option<String>,
}

fn rpc_span(
    service: &'static str,
    method: &'static str,
    headers: &http::HeaderMap,
    caller: Option<&Caller>,
) -> (Span, CallIds) {
    let call_id = call_id(headers);
    let span = tracing::info_span!(
        "rpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        call_id = %call_id,
        idempotency_key = Empty,
        trace_id = Empty,
        // Set by the auth layer in front: every log line of the call names who made it (absent: none).
        caller = caller.map(|c| tracing::field::display(&c.id)),
        tenant = caller.map(|c| tracing::field::display(&c.tenant)),
    );
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    // Without the OpenTelemetry layer (exporting off) this does nothing; the trace id below still follows the caller.
    let _ = span.set_parent(parent.clone());
    let own = span.context().span().span_context().trace_id();
    let caller = parent.span().span_context().trace_id();
    let trace_id = [own, caller]
        .into_iter()
        .find(|id| *id != opentelemetry::trace::TraceId::INVALID)
        .map(|id| id.to_string())
        .unwrap_or_else(|| format!("{:032x}", uuid::Uuid::new_v4().as_u128()));
    span.record("trace_id", trace_id.as_str());
    (span, CallIds { call_id, trace_id })
}

/// The gRPC status in a header map (the headers of a trailers-only reply, or the trailers).
fn code_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// The canonical name of a gRPC code, as in the gRPC specification.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Codes that make a server span an error (RPC semantic conventions: the server's fault, not the caller's).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// Server-streaming methods: their span ends once the stream is open (see [`Call::opened`]).
const STREAMING_METHODS: [&str; 1] = ["StreamStatus"];

/// Where an RPC's lines are logged: in its span, or, once a stream's span has ended at its opening, with the ids
/// the span carried.
enum Scope {
    Span(Span),
    Ended(StreamIds),
}

/// One RPC until its final status.
struct Call {
    scope: Scope,
    /// A server-streaming method's ids (see [`STREAMING_METHODS`]) until its span ends; `None` for a unary one.
    stream: Option<StreamIds>,
    method: &'static str,
    tenant: String,
    started: Instant,
}

impl Call {
    /// A stream's first message has passed: its span ends here, with code OK, covering what opening it took
    /// (authentication, the lookup, the snapshot). A stream may stay open for hours: a span held that long reaches
    /// no tracing backend before it ends, is lost with the process, and keeps a slot of the tracing registry, which
    /// never gives its memory back (10k idle streams left 11 MiB behind after they closed). How the stream ended is
    /// the `rpc finished` line and the RPC metrics, as for every RPC.
    fn opened(&mut self) {
        let Some(ids) = self.stream.take() else {
            return;
        };
        if let Scope::Span(span) = std::mem::replace(&mut self.scope, Scope::Ended(ids)) {
            span.record("rpc.grpc.status_code", Code::Ok as i32);
            let _entered = span.enter();
            tracing::info!("stream opened");
        }
    }

    /// The span, while the call has one.
    fn span(&self) -> Option<&Span> {
        match &self.scope {
            Scope::Span(span) => Some(span),
            Scope::Ended(_) => None,
        }
    }

    fn finish(self, code: Code) {
        let elapsed = self.started.elapsed();
        let name = code_name(code);
        crate::metrics::global().rpc(self.method, name, &self.tenant, elapsed);
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        match &self.scope {
            Scope::Span(span) => {
                span.record("rpc.grpc.status_code", code as i32);
                if is_server_error(code) {
                    span.set_status(SpanStatus::error(name));
                }
                let _entered = span.enter();
                tracing::info!(code = name, elapsed_ms, "rpc finished");
            }
            // A stream whose span ended at its opening: the line names the call as the span's lines did.
            Scope::Ended(stream) => tracing::info!(
                call_id = %stream.ids.call_id,
                trace_id = %stream.ids.trace_id,
                caller = stream.caller.as_deref(),
                tenant = stream.caller.as_ref().map(|_| self.tenant.as_str()),
                code = name,
                elapsed_ms,
                "rpc finished"
            ),
        }
    }
}

/// A response body that finishes its [`Call`] when the trailers pass (or the body ends or is dropped).
struct ObservedBody {
    inner: Body,
    call: Option<Call>,
}

impl ObservedBody {
    fn finish(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            call.finish(code);
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = {
            let _entered = self
                .call
                .as_ref()
                .and_then(Call::span)
                .map(|span| span.clone().entered());
            Pin::new(&mut self.inner).poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(code_of) {
                    self.finish(code);
                } else if frame.is_data() {
                    if let Some(call) = self.call.as_mut() {
                        call.opened();
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => self.finish(status.code()),
            Poll::Ready(None) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // The client went away (or the connection closed) before the final status.
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_become_labels() {
        let verification = |m| (SERVICE_NAME, m);
        assert_eq!(
            method_of("/facegate.v1.VerificationService/StartSession"),
            verification("StartSession")
        );
        assert_eq!(
            method_of("/facegate.v1.VerificationService/StreamStatus"),
            verification("StreamStatus")
        );
        assert_eq!(
            method_of("/facegate.v1.SandboxService/SimulateOutcome"),
            (SANDBOX_SERVICE_NAME, "SimulateOutcome")
        );
        assert_eq!(
            method_of("/facegate.v1.VerificationService/Made_Up"),
            verification("other")
        );
        assert_eq!(
            method_of("/facegate.v1.SandboxService/StartSession"),
            verification("other")
        );
        assert_eq!(
            method_of("/other.Service/StartSession"),
            verification("other")
        );
    }

    #[test]
    fn call_ids_are_plain_tokens_or_generated() {
        let mut h = http::HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, "req-1.a:b_C".parse().unwrap());
        assert_eq!(call_id(&h), "req-1.a:b_C");
        for bad in ["has space", "a\"b", &"x".repeat(129)] {
            h.insert(REQUEST_ID_HEADER, bad.parse().unwrap());
            let id = call_id(&h);
            assert_eq!(id.len(), 32, "{bad:?} is replaced");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(call_id(&http::HeaderMap::new()).len(), 32);
        let made: std::collections::HashSet<String> = (0..1000)
            .map(|_| call_id(&http::HeaderMap::new()))
            .collect();
        assert_eq!(made.len(), 1000, "generated ids are distinct");
    }

    #[test]
    fn code_names_follow_the_grpc_spec() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
        assert_eq!(code_name(Code::from(16)), "UNAUTHENTICATED");
        assert!(is_server_error(Code::Unavailable) && !is_server_error(Code::NotFound));
    }
}
