//! Logging and tracing setup. Log lines carry ids and outcomes, never names, ID numbers, images or secrets.
//!
//! Logs are human-readable text by default and one JSON object per line with `--log-format json`; in JSON every
//! line carries the fields of the spans it was emitted in (so `call_id` and `trace_id` of the RPC it belongs to,
//! see [`crate::grpc::observe`]), and `span_id`, the OpenTelemetry id of the innermost span. Spans are exported with
//! OTLP over gRPC or HTTP (protobuf) when the standard variables name an endpoint ([`otlp_from_env`]); otherwise
//! nothing is exported. Service name, resource attributes,
//! sampler, timeouts, headers and batching follow the other standard `OTEL_*` variables.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub mod log_writer;

use crate::config::LogFormat;

/// Default `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "facegate";

/// How long a shutdown waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Logging and tracing settings.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Text or JSON lines.
    pub log_format: LogFormat,
    /// Tracing filter of the log (`RUST_LOG` overrides it).
    pub log_filter: String,
    /// Where and how spans are exported; `None`: no export.
    pub otlp: Option<OtlpExport>,
}

impl TelemetryConfig {
    /// The given log settings, and the OTLP export the standard environment variables ask for (see
    /// [`otlp_from_env`]). An unsupported protocol or an endpoint that is not an http(s) URL is an error naming the
    /// variable.
    pub fn from_env(log_format: LogFormat, log_filter: &str) -> Result<Self, TelemetryError> {
        Ok(Self {
            log_format,
            log_filter: log_filter.to_owned(),
            otlp: otlp_from_env()?,
        })
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`grpc`), usually port 4317.
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`http/protobuf`), usually port 4318, path `/v1/traces`.
    HttpProtobuf,
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The transport.
    pub protocol: OtlpProtocol,
    /// The URL spans are sent to, used as is: `http://collector:4317` for gRPC, `http://collector:4318/v1/traces`
    /// for OTLP/HTTP. `https://` verifies the collector's certificate against the system roots, or against the CA
    /// of `ca_file`.
    pub endpoint: String,
    /// PEM CA certificates the collector's certificate must chain to (`OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The export the standard variables ask for, as the OpenTelemetry specification defines them
/// (specification/protocol/exporter.md):
/// - protocol: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`
///   (`http/json` is refused). Unset means `grpc`, what facegate exported with before it read the variable (the
///   specification allows an SDK to keep such a default).
/// - endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as is; else `OTEL_EXPORTER_OTLP_ENDPOINT` is the base
///   URL: as is for gRPC, with `v1/traces` appended to its path for OTLP/HTTP. Neither set: no export.
/// - `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, else `OTEL_EXPORTER_OTLP_CERTIFICATE`: a CA file for `https://`.
/// - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: no export.
pub fn otlp_from_env() -> Result<Option<OtlpExport>, TelemetryError> {
    otlp_from(|name| std::env::var(name).ok())
}

/// Like [`otlp_from_env`] over the variables `var` looks up (tests).
pub fn otlp_from(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpExport>, TelemetryError> {
    let set = |name: &'static str| {
        var(name)
            .map(|v| (name, v.trim().to_owned()))
            .filter(|(_, v)| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|(_, v)| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|(_, v)| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        None => OtlpProtocol::Grpc,
        Some((_, v)) if v == "grpc" => OtlpProtocol::Grpc,
        Some((_, v)) if v == "http/protobuf" => OtlpProtocol::HttpProtobuf,
        Some((variable, value)) => {
            let reason = if value == "http/json" {
                "OTLP/HTTP with JSON bodies is not supported; use http/protobuf or grpc"
            } else {
                "expected grpc or http/protobuf"
            };
            return Err(TelemetryError::Variable {
                variable,
                value,
                reason: reason.into(),
            });
        }
    };
    let (variable, endpoint) = match set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(signal) => signal,
        None => match set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            None => return Ok(None),
            Some((variable, base)) => match protocol {
                OtlpProtocol::Grpc => (variable, base),
                OtlpProtocol::HttpProtobuf => (variable, traces_url(&base)),
            },
        },
    };
    let lower = endpoint.to_ascii_lowercase();
    let authority = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    if !authority.is_some_and(|a| !a.is_empty() && !a.starts_with('/')) {
        return Err(TelemetryError::Variable {
            variable,
            value: endpoint,
            reason: "expected an http:// or https:// URL".into(),
        });
    }
    let ca_file = set("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
        .or_else(|| set("OTEL_EXPORTER_OTLP_CERTIFICATE"))
        .map(|(_, path)| std::path::PathBuf::from(path));
    Ok(Some(OtlpExport {
        protocol,
        endpoint,
        ca_file,
    }))
}

/// The OTLP/HTTP traces URL of a base endpoint: `v1/traces` appended to its path (after a `/` when it has none).
fn traces_url(base: &str) -> String {
    // Query and fragment are not part of the base (the specification lets exporters ignore them).
    let base = base.split(['?', '#']).next().unwrap_or_default();
    if base.ends_with('/') {
        format!("{base}v1/traces")
    } else {
        format!("{base}/v1/traces")
    }
}

/// Setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A standard `OTEL_*` variable has a value facegate cannot use.
    #[error("{variable}={value:?}: {reason}")]
    Variable {
        /// The variable.
        variable: &'static str,
        /// Its value (endpoints and protocols: no secrets).
        value: String,
        /// Why.
        reason: String,
    },
    /// The OTLP exporter could not be built (for example an endpoint without `http://`).
    #[error("cannot export traces to {endpoint}: {reason}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A global subscriber was installed already.
    #[error("logging is set up already")]
    AlreadyInstalled,
}

impl TelemetryError {
    /// The `OTEL_*` variable a [`TelemetryError::Variable`] names.
    pub fn variable(&self) -> Option<&'static str> {
        match self {
            Self::Variable { variable, .. } => Some(variable),
            _ => None,
        }
    }
}

/// The installed telemetry. Call [`Telemetry::shutdown`] on the way out so buffered spans are exported.
#[must_use = "shut it down at exit so the last spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    exporting: bool,
    /// Flushes the log lines still queued for stderr when dropped (at the end of [`Telemetry::shutdown`]).
    log_writer: Option<log_writer::LogWriterGuard>,
}

impl Telemetry {
    fn none() -> Self {
        Self {
            provider: None,
            exporting: false,
            log_writer: None,
        }
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Exports the spans still buffered, stops the exporter (waiting at most a few seconds) and writes the log
    /// lines still queued.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider.filter(|_| self.exporting) {
            export_rest(provider).await;
        }
        // Last: the lines logged while the spans were exported are written too.
        drop(self.log_writer);
    }
}

/// Exports the spans still buffered and stops the exporter (waiting at most a few seconds).
async fn export_rest(provider: SdkTracerProvider) {
    // The SDK's shutdown blocks while the export runs on this runtime: keep it off the runtime's threads.
    let done =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("facegate: trace export shutdown: {e}"),
        Err(e) => eprintln!("facegate: trace export shutdown failed: {e}"),
    }
}

/// Installs logging to stderr and, when `config` names an endpoint, span export. An exporter that cannot be built
/// is reported in the log and left out; the service runs on.
///
/// Log lines are written by a thread of their own, in batches (see [`log_writer`]): an RPC appends its line to a
/// buffer instead of making a `write` system call on stderr or waking a thread per line. No line is dropped: when
/// the buffer is full (a stalled stderr), the callers wait.
pub fn init(config: &TelemetryConfig) -> Telemetry {
    let ansi = std::io::stderr().is_terminal();
    match log_writer::spawn(std::io::stderr()) {
        Ok((writer, guard)) => Telemetry {
            log_writer: Some(guard),
            ..install_or_logs_only(config, writer, ansi)
        },
        Err(e) => {
            eprintln!("facegate: log writer thread not started ({e}); writing log lines to stderr directly");
            install_or_logs_only(config, std::io::stderr, ansi)
        }
    }
}

/// [`install`], and without span export when the exporter cannot be built.
fn install_or_logs_only<W>(config: &TelemetryConfig, writer: W, ansi: bool) -> Telemetry
where
    W: for<'a> MakeWriter<'a> + Clone + Send + Sync + 'static,
{
    match install(config, writer.clone(), ansi) {
        Ok(t) => t,
        Err(TelemetryError::AlreadyInstalled) => Telemetry::none(),
        Err(e) => {
            let logs_only = TelemetryConfig {
                otlp: None,
                ..config.clone()
            };
            let t = install(&logs_only, writer, ansi).unwrap_or(Telemetry::none());
            tracing::warn!(error = %e, "traces are not exported");
            t
        }
    }
}

/// Like [`init`] with the log written to `writer` (tests capture it), and any failure returned. Span export needs
/// a Tokio runtime: call it from inside one.
pub fn init_with<W>(config: &TelemetryConfig, writer: W) -> Result<Telemetry, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    install(config, writer, false)
}

fn install<W>(config: &TelemetryConfig, writer: W, ansi: bool) -> Result<Telemetry, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let log_filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&config.log_filter))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let filter = log_filter();
    // Without export the OpenTelemetry layer still runs, over a provider with no exporter: every span gets its
    // trace and span ids, which the log lines carry.
    let exporting = config.otlp.is_some();
    let provider = tracer_provider(config.otlp.as_ref())?;
    let log = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(TextFields)
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    // Only facegate's own spans are exported (not those of the HTTP and gRPC libraries, nor the exporter's own
    // calls), whatever the log filter says.
    let traces = span_layer(&provider).with_filter(
        Targets::new()
            .with_target("facegate", Level::INFO)
            // Log lines become span events only for a backend that receives them: with nothing exported,
            // copying each line's fields into its span is work nobody reads.
            .and(tracing_subscriber::filter::filter_fn(move |m| {
                exporting || m.is_span()
            })),
    );
    // The ids are needed only for the events that are logged, and only by the JSON lines (a text line names the
    // call by the span's `trace_id` field). Unfiltered, this layer would switch on every callsite of every level
    // (the HTTP/2 library's trace events included) and walk each event's spans.
    // (An `Option` of the layer would not do: it does not pass the dispatch on to the layer it holds.)
    let json = matches!(config.log_format, LogFormat::Json);
    let ids = OtelIds::default()
        .with_filter(log_filter().and(tracing_subscriber::filter::filter_fn(move |_| json)));
    tracing_subscriber::registry()
        .with(traces)
        .with(ids)
        .with(log)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry {
        provider: Some(provider),
        exporting,
        log_writer: None,
    })
}

/// The OpenTelemetry layer over `provider`'s tracer, as [`init`] installs it (before its filter). Per span, the
/// layer would by default also read the clock at every poll of its future (busy and idle time), attach the span's
/// context as the thread's current OpenTelemetry context (nothing here reads it: the ids are taken from the span),
/// and record the creating thread (a Tokio worker, meaningless for a task that moves between them). The
/// `busy_ns`, `idle_ns` and `thread.*` span attributes are therefore not exported.
fn span_layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("facegate"))
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_threads(false)
}

/// Default export timeout (the specification's `OTEL_EXPORTER_OTLP_TIMEOUT` default).
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s.
fn export_timeout(var: impl Fn(&str) -> Option<String>) -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .into_iter()
    .find_map(|name| var(name).and_then(|v| v.trim().parse::<u64>().ok()))
    .map(Duration::from_millis)
    .unwrap_or(DEFAULT_EXPORT_TIMEOUT)
}

/// The tracer provider [`init`] installs: exporting to `export` in batches, or (`None`) exporting nothing. Building
/// a gRPC exporter needs a Tokio runtime.
pub fn tracer_provider(export: Option<&OtlpExport>) -> Result<SdkTracerProvider, TelemetryError> {
    Ok(match export {
        Some(export) => provider(Some(exporter(export)?)),
        None => provider(None),
    })
}

fn exporter(export: &OtlpExport) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let failed = |reason: String| TelemetryError::Exporter {
        endpoint: export.endpoint.clone(),
        reason,
    };
    let https = export.endpoint.to_ascii_lowercase().starts_with("https://");
    let ca = match &export.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            failed(format!(
                "cannot read the CA file {} (OTEL_EXPORTER_OTLP_CERTIFICATE): {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    match export.protocol {
        OtlpProtocol::Grpc => {
            // The exporter's channel starts a task on the runtime it is built in.
            tokio::runtime::Handle::try_current()
                .map_err(|_| failed("no Tokio runtime to run the exporter on".into()))?;
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&export.endpoint);
            if https {
                let tls = tonic::transport::ClientTlsConfig::new();
                let tls = match ca {
                    Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                    None => tls.with_native_roots(),
                };
                builder = builder.with_tls_config(tls);
            }
            builder.build().map_err(|e| failed(e.to_string()))
        }
        OtlpProtocol::HttpProtobuf => {
            // reqwest is built without a crypto provider of its own; the process uses ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut builder = reqwest::blocking::Client::builder()
                .timeout(export_timeout(|name| std::env::var(name).ok()))
                .redirect(reqwest::redirect::Policy::none());
            if let Some(pem) = ca {
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| failed(format!("the CA file holds no PEM certificate: {e}")))?;
                builder = builder.tls_certs_only(certs);
            }
            // The batch exporter sends from a thread of its own (the SDK blocks on the export there), so the
            // client is the blocking one; it is built off the async runtime, which it must not block.
            let client = std::thread::spawn(move || builder.build())
                .join()
                .map_err(|_| failed("building the HTTP client failed".into()))?
                .map_err(|e| failed(e.to_string()))?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(&export.endpoint)
                .with_http_client(client)
                .build()
                .map_err(|e| failed(e.to_string()))
        }
    }
}

fn provider(exporter: Option<opentelemetry_otlp::SpanExporter>) -> SdkTracerProvider {
    let named = |var: &str, needle: &str| {
        std::env::var(var)
            .ok()
            .is_some_and(|v| !v.trim().is_empty() && v.contains(needle))
    };
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if !named("OTEL_SERVICE_NAME", "") && !named("OTEL_RESOURCE_ATTRIBUTES", "service.name=") {
        resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    match exporter {
        Some(exporter) => builder.with_batch_exporter(exporter),
        None => builder,
    }
    .build()
}

/// The OpenTelemetry trace and span id (hex) of a span, once an event was logged in it; `None`: a span the
/// OpenTelemetry layer does not follow (another crate's).
struct SpanIds(Option<(String, String)>);

/// Caches [`SpanIds`] in each span an event is logged in (the innermost one the OpenTelemetry layer follows, and
/// those inside it), for [`FlatJson`]. Sits between the OpenTelemetry layer and the log layer: it runs after the
/// first (which knows the ids) and before the second (which prints them). It reads the ids at the first event, not
/// when the span is made, so the caller's trace context set right after creation still becomes the span's parent.
#[derive(Default)]
struct OtelIds {
    dispatch: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<S> Layer<S> for OtelIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        use opentelemetry::trace::TraceContextExt as _;
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(dispatch) = self.dispatch.get().and_then(|d| d.upgrade()) else {
            return;
        };
        for span in scope {
            if let Some(SpanIds(known)) = span.extensions().get::<SpanIds>() {
                if known.is_some() {
                    return;
                }
                continue;
            }
            let ids =
                tracing_opentelemetry::get_otel_context(&span.id(), &dispatch).and_then(|cx| {
                    let otel = cx.span();
                    let sc = otel.span_context();
                    sc.is_valid()
                        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
                });
            let found = ids.is_some();
            span.extensions_mut().insert(SpanIds(ids));
            if found {
                return;
            }
        }
    }
}

/// Span field names that steer the OpenTelemetry layer (`otel.name`, `otel.kind`) and mean nothing in a log line.
fn is_otel_directive(name: &str) -> bool {
    name.starts_with("otel.")
}

/// Text fields as `name=value`, the message bare, without the `otel.*` directives.
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() || is_otel_directive(field.name()) {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value:?}")
        } else {
            write!(self.writer, "{sep}{}={value:?}", field.name())
        };
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, the fields of every span the event is in (outermost
/// first, inner spans overriding), then the event's own fields and `message`.
struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = serde_json::Map::new();
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert("target".into(), event.metadata().target().into());
        // The OpenTelemetry ids of the innermost span that has them (cached there by [`OtelIds`]).
        let ids = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<SpanIds>().and_then(|i| i.0.clone()))
        });
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(fields)
                {
                    line.extend(map.into_iter().filter(|(k, _)| !is_otel_directive(k)));
                }
            }
        }
        if let Some((trace_id, span_id)) = ids {
            // An RPC's span names its trace id already (the caller's when it sent one); spans outside an RPC (a
            // poller's vendor call) get theirs here.
            line.entry("trace_id").or_insert(trace_id.into());
            line.insert("span_id".into(), span_id.into());
        }
        let mut visitor = JsonVisitor(&mut line);
        event.record(&mut visitor);
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    /// What `log_in_spans` writes through a subscriber built on a log file.
    fn logged<S>(subscriber: impl FnOnce(std::fs::File) -> S) -> String
    where
        S: Subscriber + Send + Sync + 'static,
    {
        use std::io::{Read, Seek};
        let mut file = tempfile::tempfile().unwrap();
        let subscriber = subscriber(file.try_clone().unwrap());
        tracing::subscriber::with_default(subscriber, log_in_spans);
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        text
    }

    /// Logs one event inside two nested spans shaped like an RPC and a vendor call.
    fn log_in_spans() {
        let rpc = tracing::info_span!(
            "rpc",
            otel.name = "facegate.v1.VerificationService/StartSession",
            otel.kind = "server",
            rpc.method = "StartSession",
            call_id = "req-1",
            trace_id = tracing::field::Empty,
        );
        rpc.record("trace_id", "0af7651916cd43dd8448eb211c80319c");
        let _rpc = rpc.enter();
        let _call = tracing::info_span!(
            "vendor_call",
            otel.kind = "client",
            facegate.vendor = "juhe"
        )
        .entered();
        tracing::info!(http_status = 200u64, elapsed_ms = 3, "vendor reply");
    }

    #[test]
    fn text_lines_show_span_fields_without_otel_directives() {
        let text = logged(|file| {
            tracing_subscriber::fmt()
                .fmt_fields(TextFields)
                .with_ansi(false)
                .with_writer(file)
                .finish()
        });
        assert!(
            text.contains("rpc{rpc.method=\"StartSession\" call_id=\"req-1\" trace_id=\"0af7651916cd43dd8448eb211c80319c\"}:vendor_call{facegate.vendor=\"juhe\"}"),
            "{text}"
        );
        assert!(
            text.contains("vendor reply http_status=200 elapsed_ms=3"),
            "{text}"
        );
        assert!(!text.contains("otel."), "{text}");
    }

    #[test]
    fn json_lines_carry_the_fields_of_every_span() {
        let text = logged(|file| {
            tracing_subscriber::fmt()
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .with_writer(file)
                .finish()
        });
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["message"], "vendor reply");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["call_id"], "req-1");
        assert_eq!(line["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(line["rpc.method"], "StartSession");
        assert_eq!(line["facegate.vendor"], "juhe");
        assert_eq!(line["http_status"], 200);
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(!text.contains("otel."), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn the_export_comes_from_the_standard_variables() {
        let grpc = |endpoint: &str| {
            Some(OtlpExport {
                protocol: OtlpProtocol::Grpc,
                endpoint: endpoint.into(),
                ca_file: None,
            })
        };
        let http = |endpoint: &str| {
            Some(OtlpExport {
                protocol: OtlpProtocol::HttpProtobuf,
                endpoint: endpoint.into(),
                ca_file: None,
            })
        };
        assert_eq!(
            otlp_from(env(&[])).unwrap(),
            None,
            "off without an endpoint"
        );
        assert_eq!(
            otlp_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])).unwrap(),
            grpc("http://c:4317"),
            "gRPC when no protocol is named"
        );
        assert_eq!(
            otlp_from(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t:4317"),
            ]))
            .unwrap(),
            grpc("https://t:4317"),
            "the per-signal variable wins"
        );
        assert_eq!(
            otlp_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])).unwrap(),
            None
        );
        // OTLP/HTTP: the base URL gets the signal path; the per-signal URL is used as is.
        for (base, url) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("https://c/otlp", "https://c/otlp/v1/traces"),
        ] {
            assert_eq!(
                otlp_from(env(&[
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", base),
                ]))
                .unwrap(),
                http(url)
            );
        }
        assert_eq!(
            otlp_from(env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
            ]))
            .unwrap(),
            http("http://c:4318/custom"),
            "the per-signal protocol wins; the per-signal URL keeps its path"
        );
        assert_eq!(
            otlp_from(env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ]))
            .unwrap(),
            grpc("http://c:4317")
        );
        let with_ca = otlp_from(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(with_ca.ca_file, Some("/etc/ca.pem".into()));
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                otlp_from(env(&[
                    off,
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
                ]))
                .unwrap(),
                None
            );
        }
    }

    #[test]
    fn unusable_values_are_refused_naming_the_variable() {
        let e = otlp_from(env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\""),
            "{e}"
        );
        assert!(e.contains("not supported"), "{e}");
        let e = otlp_from(env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="), "{e}");
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://c"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
        ] {
            let e = otlp_from(env(&[(var, value)])).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{var}=")), "{e}");
        }
    }

    #[test]
    fn the_export_timeout_follows_the_variables() {
        assert_eq!(export_timeout(env(&[])), DEFAULT_EXPORT_TIMEOUT);
        assert_eq!(
            export_timeout(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])),
            Duration::from_millis(2500)
        );
        assert_eq!(
            export_timeout(env(&[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700")
            ])),
            Duration::from_millis(700)
        );
    }

    #[test]
    fn json_lines_inside_an_exported_span_carry_its_span_id() {
        use std::io::{Read, Seek};
        let provider = provider(None);
        let mut file = tempfile::tempfile().unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(span_layer(&provider))
            .with(OtelIds::default())
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(FlatJson)
                    .with_writer(file.try_clone().unwrap()),
            );
        let (outer_id, inner_id) = tracing::subscriber::with_default(subscriber, || {
            use opentelemetry::trace::TraceContextExt as _;
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            tracing::info!("outside any span");
            let outer = tracing::info_span!("outer");
            let _o = outer.enter();
            tracing::info!("in outer");
            let inner = tracing::info_span!("inner");
            let _i = inner.enter();
            tracing::info!("in inner");
            let id = |s: &tracing::Span| s.context().span().span_context().span_id().to_string();
            (id(&outer), id(&inner))
        });
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].get("span_id").is_none(), "{text}");
        assert_eq!(lines[1]["span_id"], outer_id.as_str());
        assert_eq!(lines[2]["span_id"], inner_id.as_str());
        assert_ne!(outer_id, inner_id);
        assert_eq!(outer_id.len(), 16);
        assert_eq!(lines[1]["trace_id"], lines[2]["trace_id"]);
        assert_eq!(lines[1]["trace_id"].as_str().map(str::len), Some(32));
    }
}
