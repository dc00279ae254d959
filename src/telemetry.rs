//! Logging and tracing setup. Log lines carry ids and outcomes, never names, ID numbers, images or secrets.
//!
//! Logs are human-readable text by default and one JSON object per line with `--log-format json`; in JSON every
//! line carries the fields of the spans it was emitted in (so `request_id` and `trace_id` of the RPC it belongs to,
//! see [`crate::grpc::observe`]). Spans are exported with OTLP over gRPC when the standard variables name an
//! endpoint ([`otlp_endpoint_from_env`]); otherwise nothing is exported. Service name, resource attributes,
//! sampler, timeouts, headers and batching follow the other standard `OTEL_*` variables.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
    /// OTLP/gRPC endpoint spans are exported to (for example `http://127.0.0.1:4317`); `None`: no export.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// The given log settings, and the OTLP endpoint from the standard environment variables.
    pub fn from_env(log_format: LogFormat, log_filter: &str) -> Self {
        Self {
            log_format,
            log_filter: log_filter.to_owned(),
            otlp_endpoint: otlp_endpoint_from_env(),
        }
    }
}

/// The traces endpoint the standard variables ask for: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; none (export off) when neither is set, or when `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none`.
pub fn otlp_endpoint_from_env() -> Option<String> {
    endpoint_from(|name| std::env::var(name).ok())
}

fn endpoint_from(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| {
        var(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// Setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
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

/// The installed telemetry. Call [`Telemetry::shutdown`] on the way out so buffered spans are exported.
#[must_use = "shut it down at exit so the last spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter (waiting at most a few seconds).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks while the export runs on this runtime: keep it off the runtime's threads.
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("facegate: trace export shutdown: {e}"),
            Err(e) => eprintln!("facegate: trace export shutdown failed: {e}"),
        }
    }
}

/// Installs logging to stderr and, when `config` names an endpoint, span export. An exporter that cannot be built
/// is reported in the log and left out; the service runs on.
pub fn init(config: &TelemetryConfig) -> Telemetry {
    let ansi = std::io::stderr().is_terminal();
    match install(config, std::io::stderr, ansi) {
        Ok(t) => t,
        Err(TelemetryError::AlreadyInstalled) => Telemetry { provider: None },
        Err(e) => {
            let logs_only = TelemetryConfig {
                otlp_endpoint: None,
                ..config.clone()
            };
            let t =
                install(&logs_only, std::io::stderr, ansi).unwrap_or(Telemetry { provider: None });
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
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(provider(endpoint)?),
        None => None,
    };
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
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("facegate"))
            .with_filter(Targets::new().with_target("facegate", Level::INFO))
    });
    tracing_subscriber::registry()
        .with(log)
        .with(traces)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider })
}

fn provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let failed = |reason: String| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        reason,
    };
    // The exporter's channel starts a task on the runtime it is built in.
    tokio::runtime::Handle::try_current()
        .map_err(|_| failed("no Tokio runtime to run the exporter on".into()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| failed(e.to_string()))?;
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
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
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
            request_id = "req-1",
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
            text.contains("rpc{rpc.method=\"StartSession\" request_id=\"req-1\" trace_id=\"0af7651916cd43dd8448eb211c80319c\"}:vendor_call{facegate.vendor=\"juhe\"}"),
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
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(line["rpc.method"], "StartSession");
        assert_eq!(line["facegate.vendor"], "juhe");
        assert_eq!(line["http_status"], 200);
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(!text.contains("otel."), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn the_endpoint_comes_from_the_standard_variables() {
        assert_eq!(endpoint_from(env(&[])), None, "off without an endpoint");
        assert_eq!(
            endpoint_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])),
            Some("http://c:4317".into())
        );
        assert_eq!(
            endpoint_from(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317"),
            ])),
            Some("http://t:4317".into()),
            "the per-signal variable wins"
        );
        assert_eq!(
            endpoint_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])),
            None
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                endpoint_from(env(&[
                    off,
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
                ])),
                None
            );
        }
    }
}
