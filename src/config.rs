//! Configuration: built-in defaults, then a TOML file, then environment variables `FACEGATE__SECTION__KEY`.
//!
//! Secrets live in [`Secret`], whose `Debug`, `Display` and `Serialize` never show the value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::caller::{Caller, Scope};

/// A secret value (vendor key, password). Printing or serialising it shows `***` (or nothing when empty).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that sends it to the vendor.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Who may call the gRPC API: callers, their tenants and scopes, per-tenant quotas.
    pub auth: AuthConfig,
    /// The gRPC listener.
    pub grpc: GrpcConfig,
    /// The HTTP listener (vendor callbacks, sandbox pages and simulators).
    pub http: HttpConfig,
    /// The session store.
    pub store: StoreConfig,
    /// Session rules.
    pub session: SessionConfig,
    /// How long personal data and session rows are kept.
    pub retention: RetentionConfig,
    /// Juhe verifyface.
    pub juhe: JuheConfig,
    /// Baidu H5 faceprint.
    pub baidu: BaiduConfig,
    /// The status engine.
    pub status: StatusConfig,
    /// Megvii FaceID Lite.
    pub megvii: MegviiConfig,
    /// Logging.
    pub log: LogConfig,
    /// Readiness: how the store is checked.
    pub health: HealthConfig,
    /// Which vendor serves a StartSession that leaves the vendor to facegate, and the vendors' circuit breakers.
    pub routing: RoutingConfig,
    /// Signed events pushed to the tenants' own endpoints (README "Webhooks").
    pub webhooks: WebhooksConfig,
}

/// Outbound webhooks (Standard Webhooks): the endpoints each tenant receives session events at, and how they are
/// retried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The endpoints (none: nothing is enqueued or sent).
    pub endpoints: Vec<WebhookEndpointConfig>,
    /// How long an attempt may take: a 2xx answer within it counts as delivered.
    pub timeout_secs: u64,
    /// How long a message is retried (from its first attempt) before it is given up, and how long an endpoint may
    /// fail every attempt before it is disabled.
    pub retry_for_secs: u64,
    /// The delay after a first failed attempt; each further failure doubles it (with jitter), up to
    /// `max_backoff_secs`.
    pub initial_backoff_ms: u64,
    /// The longest delay between two attempts.
    pub max_backoff_secs: u64,
    /// Attempts in flight at once, per replica.
    pub concurrency: u32,
    /// How often the outbox is looked at when nothing was written meanwhile (another replica's writes).
    pub poll_interval_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            timeout_secs: 10,
            retry_for_secs: 3 * 86_400,
            initial_backoff_ms: 5_000,
            max_backoff_secs: 3_600,
            concurrency: 16,
            poll_interval_ms: 1_000,
        }
    }
}

/// One endpoint of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookEndpointConfig {
    /// The endpoint's name (in ListWebhookDeliveries and metrics); default: the tenant and a hash of the URL.
    /// Keep it when the URL changes, so undelivered events follow.
    pub name: String,
    /// The tenant whose sessions it receives; default `auth.default_tenant` ("default"), which is the tenant when
    /// no callers are configured.
    pub tenant: String,
    /// Where events are POSTed: https:// (a production start refuses http://; the sandbox accepts it on
    /// loopback).
    pub url: String,
    /// The signing secret, `whsec_` and base64 of 24 to 64 random bytes.
    pub secret: Secret,
    /// A file holding the secret instead (a mounted Secret).
    pub secret_file: PathBuf,
    /// During a rotation, the secret being replaced: it signs beside `secret` (two signatures in
    /// `webhook-signature`) until `previous_secret_expires`.
    pub previous_secret: Secret,
    /// A file holding the previous secret instead.
    pub previous_secret_file: PathBuf,
    /// When the previous secret stops signing (RFC 3339, e.g. `2026-12-10T00:00:00Z`); empty: while it is set.
    pub previous_secret_expires: String,
    /// The event types it receives (`session.verified`, ...); empty: all.
    pub events: Vec<String>,
}

/// A signing secret read from the configuration: its key bytes and, for a rotation, until when it signs.
#[derive(Clone)]
pub struct WebhookSecret {
    /// The HMAC key (the base64 after `whsec_`, decoded).
    pub key: Vec<u8>,
    /// Signs until this time (unix ms); `None`: always.
    pub until_ms: Option<i64>,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("key", &"***")
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

/// An endpoint as the worker uses it: every setting checked and its secrets read.
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// Its URL.
    pub url: String,
    /// The secrets that sign, the current first.
    pub secrets: Vec<WebhookSecret>,
    /// The event types it receives; empty: all.
    pub events: Vec<String>,
}

impl WebhookEndpoint {
    /// Whether it receives events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event_type)
    }
}

/// Decodes a `whsec_...` secret into its key bytes.
fn webhook_key(value: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let raw = value
        .trim()
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_ (Standard Webhooks)")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| "must be whsec_ followed by base64".to_owned())?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "must hold 24 to 64 bytes of key (it holds {})",
            key.len()
        ));
    }
    Ok(key)
}

/// The value of a secret setting given inline or by file (exactly one of them for `required`).
fn secret_value(
    at: &str,
    inline: &Secret,
    file: &Path,
    required: bool,
) -> Result<Option<String>, String> {
    use std::io::Read;
    match (inline.is_empty(), file.as_os_str().is_empty()) {
        (false, false) => Err(format!("{at} and {at}_file are both set: set one")),
        (false, true) => Ok(Some(inline.expose().to_owned())),
        (true, false) => {
            let mut raw = String::new();
            std::fs::File::open(file)
                .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_string(&mut raw))
                .map_err(|e| format!("{at}_file: cannot read {}: {e}", file.display()))?;
            Ok(Some(raw.trim().to_owned()))
        }
        (true, true) if required => Err(format!("{at} (or {at}_file) is required")),
        (true, true) => Ok(None),
    }
}

impl WebhooksConfig {
    /// The endpoints with their secrets read, or every problem found (each naming its key). `tenants` are the
    /// tenants that exist (the callers' and the default one); `default_tenant` fills an endpoint without one.
    pub fn endpoints(
        &self,
        default_tenant: &str,
        tenants: &[&str],
    ) -> Result<Vec<WebhookEndpoint>, Vec<String>> {
        use sha2::{Digest, Sha256};
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = format!("webhooks.endpoints[{i}]");
            let tenant = if e.tenant.is_empty() {
                default_tenant.to_owned()
            } else {
                e.tenant.clone()
            };
            if !tenants.contains(&tenant.as_str()) {
                problems.push(format!(
                    "{at}.tenant: {tenant} is not the tenant of any configured caller (nor auth.default_tenant)"
                ));
            }
            match reqwest::Url::parse(&e.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    if !u.username().is_empty() || u.password().is_some() {
                        problems.push(format!(
                            "{at}.url must not carry credentials (sign with the secret instead)"
                        ));
                    }
                }
                _ => problems.push(format!("{at}.url must be an http(s) URL with a host")),
            }
            for ev in &e.events {
                if !crate::domain::webhooks::EVENT_TYPES.contains(&ev.as_str()) {
                    problems.push(format!(
                        "{at}.events: unknown event type {ev} (known: {})",
                        crate::domain::webhooks::EVENT_TYPES.join(", ")
                    ));
                }
            }
            let mut secrets = Vec::new();
            match secret_value(&format!("{at}.secret"), &e.secret, &e.secret_file, true) {
                Ok(Some(v)) => match webhook_key(&v) {
                    Ok(key) => secrets.push(WebhookSecret {
                        key,
                        until_ms: None,
                    }),
                    Err(m) => problems.push(format!("{at}.secret {m}")),
                },
                Ok(None) => {}
                Err(m) => problems.push(m),
            }
            let until_ms = if e.previous_secret_expires.trim().is_empty() {
                None
            } else {
                match e
                    .previous_secret_expires
                    .trim()
                    .parse::<prost_types::Timestamp>()
                {
                    Ok(t) => Some(t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)),
                    Err(_) => {
                        problems.push(format!(
                            "{at}.previous_secret_expires must be an RFC 3339 time (2026-12-10T00:00:00Z)"
                        ));
                        None
                    }
                }
            };
            match secret_value(
                &format!("{at}.previous_secret"),
                &e.previous_secret,
                &e.previous_secret_file,
                false,
            ) {
                Ok(Some(v)) => match webhook_key(&v) {
                    Ok(key) => secrets.push(WebhookSecret { key, until_ms }),
                    Err(m) => problems.push(format!("{at}.previous_secret {m}")),
                },
                Ok(None) if until_ms.is_some() => problems.push(format!(
                    "{at}.previous_secret_expires is set without a previous_secret"
                )),
                Ok(None) => {}
                Err(m) => problems.push(m),
            }
            let name = if e.name.is_empty() {
                let hash = Sha256::digest(e.url.as_bytes());
                let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!("{tenant}-{hex}")
            } else {
                e.name.clone()
            };
            if name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                problems.push(format!(
                    "{at}.name must be 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
            if out.iter().any(|o: &WebhookEndpoint| o.name == name) {
                problems.push(format!("{at}.name: {name} is used twice"));
            }
            out.push(WebhookEndpoint {
                name,
                tenant,
                url: e.url.clone(),
                secrets,
                events: e.events.clone(),
            });
        }
        if !self.endpoints.is_empty() {
            if self.timeout_secs == 0 || self.timeout_secs > 60 {
                problems.push("webhooks.timeout_secs must be 1 to 60".to_owned());
            }
            if self.retry_for_secs == 0
                || self.initial_backoff_ms == 0
                || self.max_backoff_secs == 0
            {
                problems.push(
                    "webhooks.retry_for_secs, webhooks.initial_backoff_ms and webhooks.max_backoff_secs must be \
                     at least 1"
                        .to_owned(),
                );
            }
            if self.concurrency == 0 || self.poll_interval_ms == 0 {
                problems.push(
                    "webhooks.concurrency and webhooks.poll_interval_ms must be at least 1"
                        .to_owned(),
                );
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    /// What the endpoints' URLs need: https:// in production; in the sandbox, http:// only on loopback.
    fn transport_problems(&self, sandbox: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let Ok(url) = reqwest::Url::parse(&e.url) else {
                continue;
            };
            if url.scheme() != "http" {
                continue;
            }
            let host = url.host_str().unwrap_or("");
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !sandbox {
                out.push(format!(
                    "webhooks.endpoints[{i}].url must be https:// (events carry sessions and their signatures; \
                     a production start refuses plaintext endpoints)"
                ));
            } else if !loopback {
                out.push(format!(
                    "webhooks.endpoints[{i}].url: the sandbox accepts plaintext http:// endpoints on loopback \
                     only (127.0.0.1, ::1, localhost); use https:// elsewhere"
                ));
            }
        }
        out
    }
}

/// Routing of StartSession requests with `VENDOR_UNSPECIFIED` (README "Routing").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Candidate vendors and weights per tenant; a policy of tenant `default` applies to tenants without their own.
    /// Without any policy every configured vendor is a candidate with equal weight.
    pub policies: Vec<RoutingPolicyConfig>,
    /// When a vendor's circuit breaker opens.
    pub breaker: BreakerConfig,
}

/// One tenant's routing policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingPolicyConfig {
    /// The tenant (`default`: every tenant without a policy of its own).
    pub tenant: String,
    /// The candidates, each with its weight.
    pub candidates: Vec<RoutingCandidateConfig>,
}

/// A candidate vendor of a routing policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingCandidateConfig {
    /// `juhe`, `baidu` or `megvii`.
    pub vendor: crate::domain::Vendor,
    /// Its share of the sessions, relative to the other candidates' (1 to 1000; default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A vendor's circuit breaker: it opens after `consecutive_failures` failed calls in a row, or when more than
/// `failure_ratio` of at least `min_calls` calls in the last `window_secs` failed; after `open_secs` one probe may
/// pass. Vendor answers that are the user's fault do not count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Share of failed calls in the window above which it opens.
    pub failure_ratio: f64,
    /// Calls the window must hold before the ratio counts.
    pub min_calls: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// How long it stays open before one probe may pass, in seconds.
    pub open_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 20,
            window_secs: 10,
            open_secs: 30,
        }
    }
}

impl RoutingConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut tenants = std::collections::BTreeSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            if policy.tenant.is_empty() || !tenants.insert(policy.tenant.as_str()) {
                problems.push(format!(
                    "routing.policies[{i}].tenant must be set and name each tenant once"
                ));
            }
            if policy.candidates.is_empty() {
                problems.push(format!(
                    "routing.policies[{i}].candidates must list at least one vendor"
                ));
            }
            let mut vendors = std::collections::BTreeSet::new();
            for (j, c) in policy.candidates.iter().enumerate() {
                if !(1..=1000).contains(&c.weight) {
                    problems.push(format!(
                        "routing.policies[{i}].candidates[{j}].weight must be 1 to 1000"
                    ));
                }
                if !vendors.insert(c.vendor.as_str()) {
                    problems.push(format!(
                        "routing.policies[{i}].candidates lists {} twice",
                        c.vendor.as_str()
                    ));
                }
            }
        }
        let b = &self.breaker;
        if b.consecutive_failures == 0 || b.min_calls == 0 || b.window_secs == 0 || b.open_secs == 0
        {
            problems.push(
                "routing.breaker.consecutive_failures, min_calls, window_secs and open_secs must be at least 1"
                    .to_owned(),
            );
        }
        if !(b.failure_ratio > 0.0 && b.failure_ratio < 1.0) {
            problems.push("routing.breaker.failure_ratio must be in (0, 1)".to_owned());
        }
        problems
    }

    /// The domain's policies and breaker settings.
    pub fn router(&self) -> crate::domain::routing::Router {
        use crate::domain::routing::{BreakerSettings, Policies, Router, Weighted};
        let mut policies = Policies::default();
        for policy in &self.policies {
            let list: Vec<Weighted> = policy
                .candidates
                .iter()
                .map(|c| Weighted {
                    vendor: c.vendor,
                    weight: c.weight,
                })
                .collect();
            if policy.tenant == crate::domain::caller::DEFAULT_TENANT {
                policies.default = Some(list);
            } else {
                policies.tenants.insert(policy.tenant.clone(), list);
            }
        }
        let b = &self.breaker;
        Router::new(
            policies,
            BreakerSettings {
                consecutive_failures: b.consecutive_failures,
                failure_ratio: b.failure_ratio,
                min_calls: b.min_calls,
                window: std::time::Duration::from_secs(b.window_secs),
                open_for: std::time::Duration::from_secs(b.open_secs),
            },
        )
    }
}

/// Readiness checks (`/readyz` and gRPC health of `facegate.v1.VerificationService`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often the store is pinged (`SELECT 1`), in milliseconds; readiness is NOT_SERVING while it fails.
    pub store_check_interval_ms: u64,
    /// How long one ping may take before the store counts as unreachable, in milliseconds.
    pub store_check_timeout_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            store_check_interval_ms: 5_000,
            store_check_timeout_ms: 2_000,
        }
    }
}

/// gRPC listener settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Listen address, e.g. `127.0.0.1:50051` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Largest request or response message in bytes (a 10 MB image plus its envelope fits the default).
    pub max_message_bytes: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Deadline for one unary call, in seconds (streams are not limited).
    pub request_timeout_secs: u64,
    /// Most requests handled at once per connection.
    pub concurrency_limit_per_connection: usize,
    /// How long a graceful shutdown waits for in-flight calls, in seconds.
    pub shutdown_grace_secs: u64,
    /// On SIGTERM, how long health reports NOT_SERVING while calls are still served, before listeners close (lets
    /// load balancers and Kubernetes readiness notice first), in seconds.
    pub drain_delay_secs: u64,
    /// Most open connections; a connection beyond it is closed at once (kept below the open-file limit).
    pub max_connections: usize,
    /// A connection that has not sent its HTTP/2 preface this many seconds after it was accepted (after the TLS
    /// handshake) is closed.
    pub preface_timeout_secs: u64,
    /// TLS (and mTLS) of the gRPC listener; off while `cert_file` is empty.
    pub tls: TlsConfig,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: 16 * 1024 * 1024,
            max_concurrent_streams: 200,
            request_timeout_secs: 30,
            concurrency_limit_per_connection: 256,
            shutdown_grace_secs: 20,
            drain_delay_secs: 0,
            max_connections: 10_000,
            preface_timeout_secs: 5,
            tls: TlsConfig::default(),
        }
    }
}

/// HTTP listener settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address, e.g. `127.0.0.1:8080` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The address vendors and browsers use to reach this listener; notify and return URLs are built from it.
    /// Empty means `http://<listen>`.
    pub public_base_url: String,
    /// Most open connections; a connection beyond it is closed at once (kept below the open-file limit).
    pub max_connections: usize,
    /// A connection that has sent nothing (no HTTP/2 preface, no HTTP/1 request) this many seconds after it was
    /// accepted (after the TLS handshake) is closed.
    pub preface_timeout_secs: u64,
    /// Longest an HTTP/1 request's headers may take to arrive, in seconds, counted from when the connection is
    /// ready for a request (so it is also the keep-alive idle timeout).
    pub header_read_timeout_secs: u64,
    /// TLS of the HTTP listener; off while `cert_file` is empty (a TLS-terminating ingress in front is the usual
    /// alternative).
    pub tls: TlsConfig,
    /// The operations listener (plaintext HTTP: `/metrics`, `/healthz`, `/readyz`), e.g. `0.0.0.0:9090`. When set,
    /// the HTTP listener serves only the public paths (callbacks, the return relay, sandbox pages); unset, the
    /// operations paths are served on the HTTP listener too.
    pub admin_listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: String::new(),
            max_connections: 4_096,
            preface_timeout_secs: 5,
            header_read_timeout_secs: 10,
            tls: TlsConfig::default(),
            admin_listen: None,
        }
    }
}

/// TLS of a listener, from PEM files that are re-read when they change (Kubernetes Secret rotation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain (PEM). Empty: the listener speaks plaintext.
    pub cert_file: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against (mTLS). Empty: no client certificates.
    pub client_ca_file: PathBuf,
    /// With `client_ca_file`: refuse a connection without a valid client certificate. When false, a client may
    /// still authenticate with a bearer key instead.
    pub require_client_cert: bool,
    /// How often the files are checked for changes, in ms.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            require_client_cert: false,
            reload_interval_ms: 5000,
        }
    }
}

impl TlsConfig {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Settings of the section at `prefix` (`grpc.tls`) that do not go together.
    fn problems(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let key = !self.key_file.as_os_str().is_empty();
        let ca = !self.client_ca_file.as_os_str().is_empty();
        if self.enabled() && !key {
            out.push(format!(
                "{prefix}.key_file is required with {prefix}.cert_file"
            ));
        }
        if !self.enabled() && key {
            out.push(format!(
                "{prefix}.cert_file is required with {prefix}.key_file"
            ));
        }
        if !self.enabled() && ca {
            out.push(format!(
                "{prefix}.client_ca_file needs {prefix}.cert_file (client certificates need TLS)"
            ));
        }
        if self.require_client_cert && !ca {
            out.push(format!(
                "{prefix}.require_client_cert needs {prefix}.client_ca_file and {prefix}.cert_file"
            ));
        }
        if self.reload_interval_ms < 100 {
            out.push(format!("{prefix}.reload_interval_ms must be at least 100"));
        }
        out
    }
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Callers from `auth.callers` authenticate with a bearer key or a client certificate (the default).
    #[default]
    Keys,
    /// No authentication: every request acts as caller `anonymous` of the default tenant with all scopes. Set on
    /// purpose only; warned about at every start.
    None,
}

/// Who may call the gRPC API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `keys` (default) or `none`.
    pub mode: AuthMode,
    /// The callers (`[[auth.callers]]`).
    pub callers: Vec<CallerConfig>,
    /// The tenant of the anonymous caller and of sessions stored before tenants existed.
    pub default_tenant: String,
    /// Whether `grpc.health.v1.Health` answers without credentials (for probes and load balancers).
    pub health_open: bool,
    /// Whether server reflection answers without credentials (for grpcurl and buf curl).
    pub reflection_open: bool,
    /// Quotas of tenants without an entry in `quotas`.
    pub default_quota: QuotaConfig,
    /// Quotas by tenant (`[auth.quotas.<tenant>]`).
    pub quotas: BTreeMap<String, QuotaConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Keys,
            callers: Vec::new(),
            default_tenant: crate::domain::caller::DEFAULT_TENANT.to_owned(),
            health_open: true,
            reflection_open: true,
            default_quota: QuotaConfig::default(),
            quotas: BTreeMap::new(),
        }
    }
}

impl AuthConfig {
    /// What is wrong with the quotas (`auth.default_quota`, `auth.quotas.<tenant>`).
    fn quota_problems(&self) -> Vec<String> {
        let named = std::iter::once(("auth.default_quota".to_owned(), &self.default_quota)).chain(
            self.quotas
                .iter()
                .map(|(tenant, q)| (format!("auth.quotas.{tenant}"), q)),
        );
        let mut problems = Vec::new();
        for (name, q) in named {
            if !(q.rpc_per_second.is_finite() && q.rpc_per_second >= 0.0) {
                problems.push(format!(
                    "{name}.rpc_per_second must be 0 (no limit) or above"
                ));
            } else if q.rpc_burst > 0 && q.rpc_per_second == 0.0 {
                problems.push(format!(
                    "{name}.rpc_burst needs {name}.rpc_per_second (the bucket's refill rate)"
                ));
            }
        }
        problems
    }
}

/// A caller of the gRPC API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CallerConfig {
    /// The caller's id: in logs, traces, metrics and the audit trail.
    pub id: String,
    /// The tenant its sessions belong to.
    pub tenant: String,
    /// What it may do: `sessions:create`, `sessions:read`, `sessions:cancel`, `personal_data:reveal`, `media:read`.
    pub scopes: Vec<String>,
    /// Lowercase hex SHA-256 of the caller's bearer key.
    pub api_key_sha256: String,
    /// A file holding the key itself (a mounted Secret); hashed when read. Alternative to `api_key_sha256`.
    pub api_key_file: PathBuf,
    /// The subject of a client certificate verified by `grpc.tls.client_ca_file` (`CN=orders-service`).
    pub mtls_subject: String,
}

/// Limits of one tenant. 0 means no limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// RPCs per second (token bucket refill rate), per replica.
    pub rpc_per_second: f64,
    /// Largest burst of RPCs (token bucket size); 0 with a rate means one second's worth.
    pub rpc_burst: u32,
    /// Most StatusStreams open at once, per replica.
    pub max_open_streams: u32,
    /// Most vendor calls that may be billed per UTC day, counted in the store (across restarts and replicas).
    pub billed_calls_per_day: u64,
}

/// Session store settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Path of the embedded SQLite database file (created when missing); unused when `database_url` is set.
    pub sqlite_path: PathBuf,
    /// A PostgreSQL URL (`postgres://user:password@host:5432/db?sslmode=verify-full`) for a store several
    /// replicas share. Empty means the SQLite file.
    pub database_url: Secret,
    /// Data keys sealing every stored record, each `id:base64key` (32 random bytes, e.g. `openssl rand -base64
    /// 32`): the first seals, all open. From the environment, comma-separated:
    /// `FACEGATE__STORE__ENCRYPTION_KEYS=k2:...,k1:...`.
    pub encryption_keys: Vec<Secret>,
    /// A file of further `id:base64key` lines (a mounted Secret), after `encryption_keys`; `#` starts a comment.
    pub encryption_keys_file: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            sqlite_path: PathBuf::from("facegate.db"),
            database_url: Secret::default(),
            encryption_keys: Vec::new(),
            encryption_keys_file: PathBuf::new(),
        }
    }
}

/// Largest `store.encryption_keys_file` read, in bytes.
const MAX_KEYS_FILE_BYTES: u64 = 64 * 1024;

impl StoreConfig {
    /// The data keys of `encryption_keys` then `encryption_keys_file` (read now); `None` when there are none. The
    /// error lists every problem, each naming its setting and key id, never key bytes.
    pub fn key_ring(&self) -> Result<Option<crate::store::seal::KeyRing>, Vec<String>> {
        use std::io::Read;
        let mut entries: Vec<(String, String)> = self
            .encryption_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("store.encryption_keys[{i}]"), k.expose().to_owned()))
            .collect();
        if !self.encryption_keys_file.as_os_str().is_empty() {
            let path = &self.encryption_keys_file;
            let mut raw = String::new();
            let read = std::fs::File::open(path)
                .and_then(|f| f.take(MAX_KEYS_FILE_BYTES + 1).read_to_string(&mut raw));
            match read {
                Err(e) => {
                    return Err(vec![format!(
                        "store.encryption_keys_file: cannot read {}: {e}",
                        path.display()
                    )])
                }
                Ok(n) if n as u64 > MAX_KEYS_FILE_BYTES => {
                    return Err(vec![format!(
                        "store.encryption_keys_file: {} is larger than {MAX_KEYS_FILE_BYTES} bytes",
                        path.display()
                    )])
                }
                Ok(_) => {}
            }
            entries.extend(raw.lines().enumerate().map(|(i, line)| {
                (
                    format!("store.encryption_keys_file line {}", i + 1),
                    line.to_owned(),
                )
            }));
        }
        crate::store::seal::KeyRing::parse(entries.iter().map(|(at, e)| (at.clone(), e.as_str())))
    }
}

/// Session rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Seconds after creation when a session that is not final becomes EXPIRED.
    pub ttl_secs: u64,
    /// The false accept rate decisions use when the caller does not ask for one.
    pub default_target_false_accept_rate: f64,
    /// How often the expiry sweeper runs, in seconds.
    pub sweep_interval_secs: u64,
    /// With a shared database (several replicas), how often a StatusStream re-reads its session for changes made
    /// by another replica, in ms.
    pub watch_refresh_ms: u64,
    /// Whether StartSession must carry the end user's consent evidence (`consent`). Unset: true in production,
    /// false in the sandbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_consent: Option<bool>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 24 * 3600,
            default_target_false_accept_rate: 1e-3,
            sweep_interval_secs: 30,
            watch_refresh_ms: 2000,
            require_consent: None,
        }
    }
}

impl SessionConfig {
    /// The consent policy in effect: as configured, else on in production and off in the sandbox.
    pub fn require_consent(&self, sandbox: bool) -> bool {
        self.require_consent.unwrap_or(!sandbox)
    }
}

/// Retention of personal data and session rows (`[retention]`), enforced by the sweeper on every replica.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Longest time personal data (identity, images) may live in a session that is not final, in seconds from its
    /// creation. Past it the inputs are wiped; a session whose vendor already has what it needs goes on, any other
    /// expires. Unset: `session.ttl_secs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal_data_max_secs: Option<u64>,
    /// How long revealable vendor OCR data (Megvii) is kept after the session became final, in seconds.
    pub revealable_secs: u64,
    /// After how many days from creation whole session rows and their idempotency keys are deleted (their billing
    /// records are first added to the `billing_daily` aggregate, kept for good).
    pub session_rows_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            personal_data_max_secs: None,
            revealable_secs: 86_400,
            session_rows_days: 90,
        }
    }
}

impl RetentionConfig {
    /// The personal-data limit in effect, in seconds.
    pub fn personal_data_max_secs(&self, session: &SessionConfig) -> u64 {
        self.personal_data_max_secs.unwrap_or(session.ttl_secs)
    }

    fn problems(&self, session: &SessionConfig) -> Vec<String> {
        let mut problems = Vec::new();
        match self.personal_data_max_secs {
            Some(0) => {
                problems.push("retention.personal_data_max_secs must be at least 1".to_owned())
            }
            Some(n) if n > session.ttl_secs => problems.push(format!(
                "retention.personal_data_max_secs ({n}) must not exceed session.ttl_secs ({})",
                session.ttl_secs
            )),
            _ => {}
        }
        if self.revealable_secs == 0 || self.revealable_secs > 30 * 86_400 {
            problems.push(
                "retention.revealable_secs must be between 1 and 2592000 (30 days)".to_owned(),
            );
        }
        // Rows must outlive the session they hold: ttl plus a day for the final result to be read.
        let min_days = session.ttl_secs / 86_400 + 1;
        if self.session_rows_days < min_days || self.session_rows_days > 36_500 {
            problems.push(format!(
                "retention.session_rows_days must be between {min_days} (a day past session.ttl_secs) and 36500"
            ));
        }
        problems
    }
}

/// Juhe verifyface settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JuheConfig {
    /// Base URL; the adapter posts to `<base_url>/verifyface/verify` and `/verifyface/verifyEncry`.
    ///
    /// The default is `https://apis.juhe.cn`. Juhe's verifyface document shows only `http://apis.juhe.cn`; HTTPS on
    /// the same host is inferred from the many public clients that call other Juhe APIs on `https://apis.juhe.cn`
    /// (WeChat mini programs, which may only use HTTPS), not from the verifyface document itself.
    pub base_url: String,
    /// The API key (个人中心 -> 我的数据).
    pub key: Secret,
    /// The account openid; its md5 gives the AES key of verifyEncry. Empty disables the encrypted variant.
    pub openid: Secret,
    /// Whole-call timeout in seconds.
    pub timeout_secs: u64,
    /// Connect timeout in seconds.
    pub connect_timeout_secs: u64,
    /// Largest reply accepted, in bytes.
    pub max_response_bytes: usize,
    /// Largest probe image accepted, in bytes (Juhe recommends under 100 KB).
    pub max_image_bytes: usize,
    /// Allow an `http://` base_url: name, ID number, face image and key then cross the network in clear. Off by
    /// default; warned about at every start and by `check-config`.
    pub allow_plaintext_http: bool,
}

impl Default for JuheConfig {
    fn default() -> Self {
        Self {
            base_url: "https://apis.juhe.cn".into(),
            key: Secret::default(),
            openid: Secret::default(),
            timeout_secs: 15,
            connect_timeout_secs: 3,
            max_response_bytes: 64 * 1024,
            max_image_bytes: 5 * 1024 * 1024,
            allow_plaintext_http: false,
        }
    }
}

/// Baidu H5 faceprint settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BaiduConfig {
    /// Base URL of the API host (`https://aip.baidubce.com`): `/oauth/2.0/token` and
    /// `/rpc/2.0/brain/solution/faceprint/...` are under it.
    pub base_url: String,
    /// The H5 page the end user opens (`https://brain.baidu.com/face/print/`); facegate appends `token`,
    /// `successUrl` and `failedUrl`.
    pub page_url: String,
    /// API Key.
    pub api_key: Secret,
    /// Secret Key.
    pub secret_key: Secret,
    /// The plan used when a session names none. Empty means the only plan, when exactly one is declared.
    pub default_plan: String,
    /// The plans created at the Baidu console, by facegate name (`[baidu.plans.<name>]`).
    pub plans: BTreeMap<String, BaiduPlanConfig>,
    /// Whole-call timeout in seconds.
    pub timeout_secs: u64,
    /// Connect timeout in seconds.
    pub connect_timeout_secs: u64,
    /// Largest reply accepted, in bytes (result/detail may carry ID card images).
    pub max_response_bytes: usize,
    /// Replace the access_token this long before it expires, in seconds.
    pub token_refresh_margin_secs: u64,
    /// Most result queries (status polls and on-demand refreshes) per second, across all sessions.
    pub poll_qps: f64,
    /// Score thresholds by false accept rate, for decisions at a caller's target FAR. Baidu's own verdict uses
    /// the plan's threshold; a stricter target FAR can only turn a pass into SCORE_BELOW_THRESHOLD.
    pub score_thresholds: Vec<ThresholdConfig>,
    /// Hosts facegate downloads captured face images from (result/simple); the base URL's host is always allowed.
    pub media_hosts: Vec<String>,
    /// Allow `http://` in base_url and page_url (personal data and credentials in clear). Off by default; warned
    /// about at every start and by `check-config`.
    pub allow_plaintext_http: bool,
}

/// A Baidu plan (方案) as created at the Baidu console.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BaiduPlanConfig {
    /// The plan_id shown at the console.
    pub plan_id: String,
    /// The plan verifies a specified user (指定用户身份核验): the identity is sent with idcard/submit first.
    pub needs_identity: bool,
    /// The plan compares with an uploaded face (自建人脸库比对): the reference is sent with uploadMatchImage first.
    pub needs_reference: bool,
    /// A failed attempt ends the URL (认证未通过时URL失效); otherwise the user may retry until the token expires.
    pub fail_ends_url: bool,
    /// Where the browser goes after a pass when the session names no return URL.
    pub success_url: String,
    /// Where the browser goes after a failure when the session names no return URL.
    pub failure_url: String,
}

impl Default for BaiduPlanConfig {
    fn default() -> Self {
        Self {
            plan_id: String::new(),
            needs_identity: true,
            needs_reference: false,
            fail_ends_url: true,
            success_url: String::new(),
            failure_url: String::new(),
        }
    }
}

/// A score threshold for a false accept rate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// The false accept rate, e.g. 0.0001.
    pub false_accept_rate: f64,
    /// The score at or above which faces match at that rate.
    pub threshold: f64,
}

impl Default for BaiduConfig {
    fn default() -> Self {
        Self {
            base_url: "https://aip.baidubce.com".into(),
            page_url: "https://brain.baidu.com/face/print/".into(),
            api_key: Secret::default(),
            secret_key: Secret::default(),
            default_plan: String::new(),
            plans: BTreeMap::new(),
            timeout_secs: 15,
            connect_timeout_secs: 3,
            max_response_bytes: 24 * 1024 * 1024,
            token_refresh_margin_secs: 24 * 3600,
            poll_qps: 5.0,
            score_thresholds: vec![
                ThresholdConfig {
                    false_accept_rate: 1e-3,
                    threshold: 70.0,
                },
                ThresholdConfig {
                    false_accept_rate: 1e-4,
                    threshold: 80.0,
                },
                ThresholdConfig {
                    false_accept_rate: 1e-5,
                    threshold: 90.0,
                },
            ],
            media_hosts: vec![
                "brain.baidu.com".into(),
                "aip.baidubce.com".into(),
                "bj.bcebos.com".into(),
            ],
            allow_plaintext_http: false,
        }
    }
}

/// Status engine settings (polling of vendors that do not call back).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// First interval between two polls of one session, in ms (and the interval after a wake-up hint).
    pub poll_min_interval_ms: u64,
    /// Longest interval between two polls, in ms; intervals grow by half while nothing changes.
    pub poll_max_interval_ms: u64,
    /// Random spread of each interval, as a fraction (0.2 = plus or minus 20%).
    pub poll_jitter: f64,
    /// After a vendor token's expiry, how long facegate keeps asking for the last answer before EXPIRED, in s.
    pub final_check_grace_secs: u64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            poll_min_interval_ms: 1000,
            poll_max_interval_ms: 10_000,
            poll_jitter: 0.2,
            final_check_grace_secs: 600,
        }
    }
}

/// Megvii FaceID Lite settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MegviiConfig {
    /// Base URL of the API host (`https://api.megvii.com`; overseas `https://api-idn.megvii.com`,
    /// `https://api-sgp.megvii.com`): `/faceid/lite/get_token` and `/faceid/lite/get_result` are under it.
    pub base_url: String,
    /// The H5 page the end user opens; facegate appends `?token=`.
    pub page_url: String,
    /// api_key.
    pub api_key: Secret,
    /// api_secret (also the callback signing secret).
    pub api_secret: Secret,
    /// Whole-call timeout in seconds.
    pub timeout_secs: u64,
    /// Connect timeout in seconds.
    pub connect_timeout_secs: u64,
    /// Largest reply accepted, in bytes (get_result may carry images).
    pub max_response_bytes: usize,
    /// Longest a user's flow may take from get_token, in seconds (the token itself lives about an hour).
    pub max_flow_secs: u64,
    /// After the flow must be over, how long a late callback is waited for before the one get_result, in seconds.
    pub result_wait_secs: u64,
    /// Allow `http://` in base_url and page_url (personal data and credentials in clear). Off by default; warned
    /// about at every start and by `check-config`.
    pub allow_plaintext_http: bool,
}

impl Default for MegviiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.megvii.com".into(),
            page_url: "https://api.megvii.com/faceid/lite/do".into(),
            api_key: Secret::default(),
            api_secret: Secret::default(),
            timeout_secs: 15,
            connect_timeout_secs: 3,
            max_response_bytes: 8 * 1024 * 1024,
            max_flow_secs: 3600,
            result_wait_secs: 120,
            allow_plaintext_http: false,
        }
    }
}

/// Ports Megvii calls notify_url on (megvii-faceid-lite-callbacks.txt).
pub const MEGVII_CALLBACK_PORTS: [u16; 5] = [443, 5000, 16003, 8883, 8028];

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `facegate=debug,info` (RUST_LOG overrides it).
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// A configuration that cannot be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An environment variable could not be applied.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// Why.
        message: String,
    },
    /// A file or variable sets something under `sandbox`, which only the command line chooses.
    #[error(
        "{origin} sets `{key}`, but sandbox mode is chosen by `facegate serve --sandbox`, never by configuration \
         (a production config must not be able to turn the simulators on); remove it"
    )]
    SandboxKey {
        /// The file or environment variable.
        origin: String,
        /// The key it sets.
        key: String,
    },
    /// The merged values do not form a valid configuration.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Settings that do not parse or cannot work, each naming its key and where it was set.
    #[error("invalid configuration: {}", issues_text(.0))]
    Issues(Vec<ConfigIssue>),
}

fn issues_text(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One problem with one setting: its key (`grpc.listen`; empty when it concerns no single key), where its value
/// came from (`config file /etc/facegate.toml`, `environment variable FACEGATE__GRPC__LISTEN`, `default`) and what is
/// wrong. Never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    /// The setting.
    pub key: String,
    /// Where its value came from.
    pub source: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() || self.message.starts_with(&self.key) {
            write!(f, "{} ({})", self.message, self.source)
        } else {
            write!(f, "{} ({}): {}", self.key, self.source, self.message)
        }
    }
}

impl ConfigError {
    /// The problems as issues with key and source (for `check-config --format json`).
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let issue = |key: &str, source: String| ConfigIssue {
            key: key.to_owned(),
            source,
            message: self.to_string(),
        };
        match self {
            Self::Issues(issues) => issues.clone(),
            Self::Read { path, .. } | Self::Parse { path, .. } => {
                vec![issue("", format!("config file {}", path.display()))]
            }
            Self::Env { name, .. } => vec![issue(
                &env_path(name).join("."),
                format!("environment variable {name}"),
            )],
            Self::SandboxKey { origin, key } => vec![issue(key, origin.clone())],
            Self::Invalid(_) => vec![issue("", "configuration".into())],
        }
    }
}

/// Settings holding secrets that may also be read from a file: `<key>_file = "/path"` in the TOML, or
/// `FACEGATE__<SECTION>__<KEY>_FILE=/path`. (Caller keys have `auth.callers[].api_key_file`, data keys
/// `store.encryption_keys_file`, each with its own format.)
pub const SECRET_FILE_KEYS: [&str; 7] = [
    "store.database_url",
    "juhe.key",
    "juhe.openid",
    "baidu.api_key",
    "baidu.secret_key",
    "megvii.api_key",
    "megvii.api_secret",
];

/// Largest secret file read, in bytes.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Where each setting's value came from: dotted key (list elements by index, `auth.callers.0.id`) -> source.
/// Settings not in it have their default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSources(BTreeMap<String, String>);

impl ConfigSources {
    /// Where `key` (or, for a table or list, the settings under it; for a part of a value, the value) came from.
    pub fn of(&self, key: &str) -> String {
        if key.is_empty() {
            return "configuration".into();
        }
        if let Some(s) = self.0.get(key) {
            return s.clone();
        }
        let below = format!("{key}.");
        if let Some((_, s)) = self.0.iter().find(|(k, _)| k.starts_with(&below)) {
            return s.clone();
        }
        let mut parent = key;
        while let Some((up, _)) = parent.rsplit_once('.') {
            if let Some(s) = self.0.get(up) {
                return s.clone();
            }
            parent = up;
        }
        "default".into()
    }

    fn record_tree(&mut self, prefix: &str, value: &toml::Value, source: &str) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    self.record_tree(&join_key(prefix, k), v, source);
                }
            }
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for (i, v) in items.iter().enumerate() {
                    self.record_tree(&join_key(prefix, &i.to_string()), v, source);
                }
            }
            _ => {
                self.0.insert(prefix.to_owned(), source.to_owned());
            }
        }
    }

    /// An issue about the setting a message names first (`grpc.listen must ...`).
    fn issue(&self, message: String) -> ConfigIssue {
        let key = leading_key(&message);
        ConfigIssue {
            source: self.of(&key),
            key,
            message,
        }
    }

    /// Issues for problem messages that each start with the key they are about.
    pub fn issues(&self, messages: &[String]) -> Vec<ConfigIssue> {
        messages.iter().map(|m| self.issue(m.clone())).collect()
    }
}

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The dotted key a problem message starts with (`baidu.plans.kyc.plan_id is required` -> `baidu.plans.kyc.plan_id`),
/// or empty.
fn leading_key(message: &str) -> String {
    let first = message
        .split(|c: char| c.is_whitespace() || c == ':' || c == ',')
        .next()
        .unwrap_or_default();
    let key = first.split('[').next().unwrap_or_default();
    let section = key.split('.').next().unwrap_or_default();
    let known = toml::Value::try_from(Config::default())
        .ok()
        .and_then(|v| v.as_table().map(|t| t.contains_key(section)))
        .unwrap_or(false);
    if known && key.contains('.') {
        key.to_owned()
    } else {
        String::new()
    }
}

/// Reads the secret files named by `<key>_file` settings into their keys (see [`SECRET_FILE_KEYS`]) and removes the
/// `_file` settings. A secret set both directly and by file is an error naming both.
fn apply_secret_files(
    value: &mut toml::Value,
    sources: &mut ConfigSources,
    issues: &mut Vec<ConfigIssue>,
) {
    use std::io::Read;
    for key in SECRET_FILE_KEYS {
        let Some((section, name)) = key.split_once('.') else {
            continue;
        };
        let file_key = format!("{key}_file");
        let Some(table) = value.get_mut(section).and_then(toml::Value::as_table_mut) else {
            continue;
        };
        let Some(path) = table.remove(&format!("{name}_file")) else {
            continue;
        };
        let file_source = sources.of(&file_key);
        sources.0.remove(&file_key);
        let Some(path) = path.as_str().map(str::to_owned) else {
            issues.push(ConfigIssue {
                key: file_key,
                source: file_source,
                message: "must be a file path (a string)".into(),
            });
            continue;
        };
        if path.is_empty() {
            continue;
        }
        let direct = table
            .get(name)
            .and_then(toml::Value::as_str)
            .is_some_and(|v| !v.is_empty());
        if direct {
            issues.push(ConfigIssue {
                key: key.to_owned(),
                source: format!("{} and {file_source}", sources.of(key)),
                message: format!(
                    "{key} ({}) and {file_key} ({file_source}) are both set: set one of them",
                    sources.of(key)
                ),
            });
            continue;
        }
        let mut raw = Vec::new();
        let read = std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut raw));
        let text = match read {
            Err(e) => Err(format!("cannot read {path}: {e}")),
            Ok(n) if n as u64 > MAX_SECRET_FILE_BYTES => Err(format!(
                "{path} is larger than {MAX_SECRET_FILE_BYTES} bytes"
            )),
            Ok(_) => String::from_utf8(raw).map_err(|_| format!("{path} is not UTF-8 text")),
        };
        match text {
            Ok(mut secret) => {
                // One trailing newline (as `echo` and editors write it) is not part of the secret.
                if secret.ends_with("\r\n") {
                    secret.truncate(secret.len() - 2);
                } else if secret.ends_with('\n') {
                    secret.truncate(secret.len() - 1);
                }
                table.insert(name.to_owned(), toml::Value::String(secret));
                sources.0.insert(
                    key.to_owned(),
                    format!("file {path} (named by {file_source})"),
                );
            }
            Err(message) => issues.push(ConfigIssue {
                key: file_key,
                source: file_source,
                message,
            }),
        }
    }
}

/// Findings of a check over the configuration: errors refuse the start, warnings are logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigProblems {
    /// Settings that must change before the service may start; each message names its key.
    pub errors: Vec<String>,
    /// Settings that work but deserve a warning at every start.
    pub warnings: Vec<String>,
}

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "FACEGATE__";

/// The section no configuration may set: sandbox mode is chosen by `serve --sandbox` only.
const SANDBOX_SECTION: &str = "sandbox";

impl Config {
    /// Loads defaults, then `file` (if any), then `FACEGATE__*` variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_with_sources(file, env).map(|(config, _)| config)
    }

    /// Like [`Config::load_from`], also saying where each setting came from.
    pub fn load_with_sources(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, ConfigSources), ConfigError> {
        let mut sources = ConfigSources::default();
        let mut value = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file_value: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?;
            if let Some(sandbox) = file_value.get(SANDBOX_SECTION) {
                let key = match sandbox.as_table().and_then(|t| t.keys().next()) {
                    Some(first) => format!("{SANDBOX_SECTION}.{first}"),
                    None => SANDBOX_SECTION.to_owned(),
                };
                return Err(ConfigError::SandboxKey {
                    origin: format!("config file {}", path.display()),
                    key,
                });
            }
            sources.record_tree("", &file_value, &format!("config file {}", path.display()));
            merge(&mut value, file_value);
        }
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort_by(|(a, _), (b, _)| env_order(a, b));
        if let Some((name, _)) = vars.iter().find(|(k, _)| {
            let section = k[ENV_PREFIX.len()..].split("__").next().unwrap_or_default();
            section.eq_ignore_ascii_case(SANDBOX_SECTION)
        }) {
            return Err(ConfigError::SandboxKey {
                origin: format!("environment variable {name}"),
                key: name[ENV_PREFIX.len()..]
                    .replace("__", ".")
                    .to_ascii_lowercase(),
            });
        }
        for (name, raw) in vars {
            apply_env(&mut value, &name, &raw)?;
            sources.0.insert(
                env_path(&name).join("."),
                format!("environment variable {name}"),
            );
        }
        let mut issues = Vec::new();
        apply_secret_files(&mut value, &mut sources, &mut issues);
        if !issues.is_empty() {
            return Err(ConfigError::Issues(issues));
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            // A secret's value never appears in a message, even when it is of the wrong type.
            let secret = SECRET_FILE_KEYS.contains(&key.as_str())
                || key.starts_with("store.encryption_keys");
            let message = if secret {
                "cannot be read (a secret: its value is not shown)".to_owned()
            } else {
                e.into_inner().message().to_owned()
            };
            ConfigError::Issues(vec![ConfigIssue {
                source: sources.of(&key),
                key,
                message,
            }])
        })?;
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Issues(sources.issues(&problems)));
        }
        Ok((config, sources))
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// What [`Config::validate`] finds, each message starting with the key it is about.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.grpc.max_message_bytes < 11 * 1024 * 1024 {
            problems.push(
                "grpc.max_message_bytes must fit a 10 MB image (at least 11534336)".to_owned(),
            );
        }
        if self.grpc.max_concurrent_streams == 0 {
            problems.push("grpc.max_concurrent_streams must be at least 1".to_owned());
        }
        if self.grpc.request_timeout_secs == 0 {
            problems.push("grpc.request_timeout_secs must be at least 1".to_owned());
        }
        if self.grpc.concurrency_limit_per_connection == 0 {
            problems.push("grpc.concurrency_limit_per_connection must be at least 1".to_owned());
        }
        problems.extend(self.auth.quota_problems());
        if !(self.session.default_target_false_accept_rate > 0.0
            && self.session.default_target_false_accept_rate < 1.0)
        {
            problems.push("session.default_target_false_accept_rate must be in (0, 1)".to_owned());
        }
        if self.session.ttl_secs == 0 || self.session.sweep_interval_secs == 0 {
            problems.push(
                "session.ttl_secs and session.sweep_interval_secs must be at least 1".to_owned(),
            );
        }
        problems.extend(self.retention.problems(&self.session));
        problems.extend(self.routing.problems());
        if let Err(webhooks) = self
            .webhooks
            .endpoints(&self.auth.default_tenant, &self.tenants())
        {
            problems.extend(webhooks);
        }
        for (name, url) in [
            ("juhe.base_url", &self.juhe.base_url),
            ("baidu.base_url", &self.baidu.base_url),
            ("megvii.base_url", &self.megvii.base_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!("{name} must be an http(s) URL"));
            }
        }
        let database_url = self.store.database_url.expose();
        if !(database_url.is_empty()
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            problems.push(
                "store.database_url must be a postgres:// or postgresql:// URL (or empty for SQLite)"
                    .to_owned(),
            );
        }
        if self.grpc.max_connections == 0 || self.http.max_connections == 0 {
            problems.push(
                "grpc.max_connections and http.max_connections must be at least 1".to_owned(),
            );
        }
        if self.grpc.preface_timeout_secs == 0
            || self.http.preface_timeout_secs == 0
            || self.http.header_read_timeout_secs == 0
        {
            problems.push(
                "grpc.preface_timeout_secs, http.preface_timeout_secs and http.header_read_timeout_secs must be \
                 at least 1"
                    .to_owned(),
            );
        }
        let public = &self.http.public_base_url;
        if !(public.is_empty() || public.starts_with("http://") || public.starts_with("https://")) {
            problems.push("http.public_base_url must be an http(s) URL".to_owned());
        }
        if self.juhe.timeout_secs == 0 || self.juhe.connect_timeout_secs == 0 {
            problems.push(
                "juhe.timeout_secs and juhe.connect_timeout_secs must be at least 1".to_owned(),
            );
        }
        if !(self.baidu.page_url.starts_with("http://")
            || self.baidu.page_url.starts_with("https://"))
        {
            problems.push("baidu.page_url must be an http(s) URL".to_owned());
        }
        if self.baidu.timeout_secs == 0 || self.baidu.connect_timeout_secs == 0 {
            problems.push(
                "baidu.timeout_secs and baidu.connect_timeout_secs must be at least 1".to_owned(),
            );
        }
        if !(self.baidu.poll_qps.is_finite() && self.baidu.poll_qps > 0.0) {
            problems.push("baidu.poll_qps must be above 0".to_owned());
        }
        for t in &self.baidu.score_thresholds {
            let far_ok = t.false_accept_rate > 0.0 && t.false_accept_rate < 1.0;
            if !far_ok || !(0.0..=100.0).contains(&t.threshold) {
                problems.push(
                    "baidu.score_thresholds need false_accept_rate in (0, 1) and threshold in [0, 100]"
                        .to_owned(),
                );
            }
        }
        for (name, plan) in &self.baidu.plans {
            if plan.plan_id.trim().is_empty() {
                problems.push(format!("baidu.plans.{name}.plan_id is required"));
            }
            for (field, url) in [
                ("success_url", &plan.success_url),
                ("failure_url", &plan.failure_url),
            ] {
                if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                    problems.push(format!("baidu.plans.{name}.{field} must be an http(s) URL"));
                }
            }
        }
        if !self.baidu.default_plan.is_empty()
            && !self.baidu.plans.contains_key(&self.baidu.default_plan)
        {
            problems.push("baidu.default_plan must name a declared plan".to_owned());
        }
        if self.status.poll_min_interval_ms == 0
            || self.status.poll_max_interval_ms < self.status.poll_min_interval_ms
        {
            problems.push(
                "status.poll_min_interval_ms must be at least 1 and at most status.poll_max_interval_ms"
                    .to_owned(),
            );
        }
        if !(0.0..1.0).contains(&self.status.poll_jitter) {
            problems.push("status.poll_jitter must be in [0, 1)".to_owned());
        }
        if !(self.megvii.page_url.starts_with("http://")
            || self.megvii.page_url.starts_with("https://"))
        {
            problems.push("megvii.page_url must be an http(s) URL".to_owned());
        }
        if self.megvii.timeout_secs == 0
            || self.megvii.connect_timeout_secs == 0
            || self.megvii.max_flow_secs == 0
        {
            problems.push(
                "megvii.timeout_secs, megvii.connect_timeout_secs and megvii.max_flow_secs must be at least 1"
                    .to_owned(),
            );
        }
        for (prefix, tls) in [("grpc.tls", &self.grpc.tls), ("http.tls", &self.http.tls)] {
            problems.extend(tls.problems(prefix));
        }
        if self.juhe.max_response_bytes < 1024 {
            problems.push("juhe.max_response_bytes must be at least 1024".to_owned());
        }
        if let Err(auth) = self.auth.credentials() {
            problems.extend(auth);
        }
        problems
    }

    /// What the wire settings of this configuration need: `errors` stop `serve` and `check-config` (each names its
    /// key), `warnings` are logged at every start and printed by `check-config`. Checks the operator's own values,
    /// before sandbox mode points the adapters at its loopback simulators.
    pub fn transport_problems(&self, sandbox: bool) -> ConfigProblems {
        let mut out = ConfigProblems::default();
        out.errors.extend(self.webhooks.transport_problems(sandbox));
        // Sandbox mode replaces every vendor URL with its simulators' (loopback), so the operator's are unused.
        if !sandbox {
            for (section, allowed, urls) in [
                (
                    "juhe",
                    self.juhe.allow_plaintext_http,
                    vec![("base_url", &self.juhe.base_url)],
                ),
                (
                    "baidu",
                    self.baidu.allow_plaintext_http,
                    vec![
                        ("base_url", &self.baidu.base_url),
                        ("page_url", &self.baidu.page_url),
                    ],
                ),
                (
                    "megvii",
                    self.megvii.allow_plaintext_http,
                    vec![
                        ("base_url", &self.megvii.base_url),
                        ("page_url", &self.megvii.page_url),
                    ],
                ),
            ] {
                for (key, url) in urls {
                    if !url.trim_start().to_ascii_lowercase().starts_with("http://") {
                        continue;
                    }
                    if allowed {
                        out.warnings.push(format!(
                            "{section}.{key} is plaintext http:// ({section}.allow_plaintext_http = true): \
                             personal data and vendor credentials cross the network unencrypted"
                        ));
                    } else {
                        out.errors.push(format!(
                            "{section}.{key} must be https:// (personal data and vendor credentials would cross \
                             the network in clear); set {section}.allow_plaintext_http = true to accept that"
                        ));
                    }
                }
            }
        }
        if sandbox && self.http.tls.enabled() {
            out.errors.push(
                "http.tls cannot be used in sandbox mode: the adapters reach the simulators on the HTTP listener \
                 over loopback plaintext"
                    .to_owned(),
            );
        }
        out
    }

    /// Every tenant that exists: the default one and the callers'.
    pub fn tenants(&self) -> Vec<&str> {
        let mut tenants: Vec<&str> = std::iter::once(self.auth.default_tenant.as_str())
            .chain(self.auth.callers.iter().map(|c| c.tenant.as_str()))
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        tenants
    }

    /// The public base URL without a trailing slash.
    pub fn public_base_url(&self, bound_http: SocketAddr) -> String {
        if self.http.public_base_url.is_empty() {
            let scheme = if self.http.tls.enabled() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{bound_http}")
        } else {
            self.http.public_base_url.trim_end_matches('/').to_owned()
        }
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Problems that do not stop the service but deserve a warning.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.juhe.key.is_empty() {
            out.push(
                "juhe.key is not set: Juhe sessions are refused (VENDOR_NOT_CONFIGURED)".to_owned(),
            );
        }
        if self.megvii.api_key.is_empty() || self.megvii.api_secret.is_empty() {
            out.push(
                "megvii.api_key or megvii.api_secret is not set: Megvii sessions are refused (VENDOR_NOT_CONFIGURED)"
                    .to_owned(),
            );
        } else {
            let port = public_port(&self.http.public_base_url).unwrap_or(self.http.listen.port());
            if !MEGVII_CALLBACK_PORTS.contains(&port) {
                out.push(format!(
                    "http.public_base_url uses port {port}, which Megvii does not call back on (it calls 443, \
                     5000, 16003, 8883 or 8028): notify_url callbacks will not arrive"
                ));
            }
        }
        if self.baidu.api_key.is_empty() || self.baidu.plans.is_empty() {
            out.push(
                "baidu.api_key or baidu.plans is not set: Baidu sessions are refused (VENDOR_NOT_CONFIGURED)"
                    .to_owned(),
            );
        }
        out
    }
}

impl Config {
    /// The safe-default rules of a start, for `serve` and `check-config` alike: callers ([`Config::auth`]) and the
    /// wire ([`Config::transport_problems`]). `sandbox` says whether this start is sandbox mode (simulators,
    /// loopback): there, no callers means every request acts as the anonymous caller.
    pub fn start_problems(&self, sandbox: bool) -> ConfigProblems {
        let mut out = self.transport_problems(sandbox);
        match self.store.key_ring() {
            Ok(Some(_)) => {}
            Ok(None) if sandbox => {}
            Ok(None) => out.errors.push(
                "no encryption key is configured (store.encryption_keys or store.encryption_keys_file): every \
                 stored session is sealed with it; generate one with `openssl rand -base64 32` and set \
                 store.encryption_keys = [\"k1:<key>\"]"
                    .to_owned(),
            ),
            Err(problems) => out.errors.extend(problems),
        }
        if self.auth.callers.is_empty() && !sandbox {
            match self.auth.mode {
                AuthMode::Keys => out.errors.push(
                    "no callers are configured (auth.callers): declare the callers of the gRPC API, or set \
                     auth.mode = \"none\" to serve every request unauthenticated on purpose"
                        .to_owned(),
                ),
                AuthMode::None => out.warnings.push(format!(
                    "auth.mode = \"none\": the gRPC API is unauthenticated; every request acts as caller \
                     anonymous of tenant {} with all scopes (declare auth.callers to require credentials)",
                    self.auth.default_tenant
                )),
            }
        }
        if !sandbox && self.http.admin_listen.is_none() && !self.http.listen.ip().is_loopback() {
            out.warnings.push(format!(
                "http.admin_listen is not set: /metrics, /healthz and /readyz are served on http.listen = {} \
                 beside the public callback and return paths; set http.admin_listen (e.g. 0.0.0.0:9090) to serve \
                 them on a port of their own",
                self.http.listen
            ));
        }
        out
    }
}

/// What the auth layer knows of one configured caller: who it is and how it proves it.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerCredentials {
    /// The caller (id, tenant, scopes).
    pub caller: Caller,
    /// SHA-256 of its bearer key, from `api_key_sha256` or the hashed contents of `api_key_file`.
    pub key_sha256: Option<[u8; 32]>,
    /// Its client certificate subject, in [`crate::grpc::conn::normalize_dn`] form.
    pub mtls_subject: Option<String>,
}

impl fmt::Debug for CallerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerCredentials")
            .field("caller", &self.caller)
            .field("key_sha256", &self.key_sha256.map(|_| "***"))
            .field("mtls_subject", &self.mtls_subject)
            .finish()
    }
}

/// Largest `api_key_file` read, in bytes.
const MAX_KEY_FILE_BYTES: u64 = 4096;

impl AuthConfig {
    /// The configured callers with their credentials: key files read and hashed, every rule checked (ids unique and
    /// set, a tenant, known scopes, a key hash or key file, or a client certificate subject, no key shared). The
    /// error lists every problem, each naming its setting; none of them shows a key.
    pub fn credentials(&self) -> Result<Vec<CallerCredentials>, Vec<String>> {
        let mut problems = Vec::new();
        let mut out: Vec<CallerCredentials> = Vec::new();
        if self.default_tenant.trim().is_empty() {
            problems.push("auth.default_tenant must not be empty".to_owned());
        }
        for (i, c) in self.callers.iter().enumerate() {
            let at = format!("auth.callers[{i}]");
            if c.id.trim().is_empty() {
                problems.push(format!("{at}.id is required"));
            } else if self.callers[..i].iter().any(|o| o.id == c.id) {
                problems.push(format!("{at}.id {:?} is declared twice", c.id));
            }
            if c.tenant.trim().is_empty() {
                problems.push(format!("{at}.tenant is required"));
            }
            let mut scopes = std::collections::BTreeSet::new();
            for name in &c.scopes {
                match Scope::parse(name) {
                    Some(s) => {
                        scopes.insert(s);
                    }
                    None => problems.push(format!(
                        "{at}.scopes: unknown scope {name:?} (known: {})",
                        Scope::ALL.map(Scope::as_str).join(", ")
                    )),
                }
            }
            let has_hash = !c.api_key_sha256.is_empty();
            let has_file = !c.api_key_file.as_os_str().is_empty();
            let subject = c.mtls_subject.trim();
            let key_sha256 = match (has_hash, has_file) {
                (true, true) => {
                    problems.push(format!(
                        "{at}: set either api_key_sha256 or api_key_file, not both"
                    ));
                    None
                }
                (true, false) => match parse_sha256_hex(&c.api_key_sha256) {
                    Some(h) => Some(h),
                    None => {
                        problems.push(format!(
                            "{at}.api_key_sha256 must be 64 lowercase hex digits (the SHA-256 of the key)"
                        ));
                        None
                    }
                },
                (false, true) => match read_key_file(&c.api_key_file) {
                    Ok(h) => Some(h),
                    Err(why) => {
                        problems.push(format!("{at}.api_key_file: {why}"));
                        None
                    }
                },
                (false, false) => {
                    if subject.is_empty() {
                        problems.push(format!(
                            "{at} needs api_key_sha256, api_key_file or mtls_subject"
                        ));
                    }
                    None
                }
            };
            if let Some(h) = key_sha256 {
                if let Some(j) = out.iter().position(|o| o.key_sha256 == Some(h)) {
                    problems.push(format!(
                        "{at} has the same key as auth.callers[{j}]: every caller needs its own key"
                    ));
                }
            }
            out.push(CallerCredentials {
                caller: Caller {
                    id: c.id.clone(),
                    tenant: c.tenant.clone(),
                    scopes,
                },
                key_sha256,
                mtls_subject: (!subject.is_empty())
                    .then(|| crate::grpc::conn::normalize_dn(subject)),
            });
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }
}

fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Reads a key file (a mounted Secret) and hashes the key: one trailing newline (`\n` or `\r\n`) is not part of it.
fn read_key_file(path: &Path) -> Result<[u8; 32], String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut raw = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if raw.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_KEY_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let mut key: &[u8] = &raw;
    if let Some(k) = key.strip_suffix(b"\n") {
        key = k.strip_suffix(b"\r").unwrap_or(k);
    }
    if key.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Sha256::digest(key).into())
}

/// The port of an http(s) URL (explicit, or 80/443 by scheme); `None` for an empty or unreadable URL.
fn public_port(url: &str) -> Option<u16> {
    let (rest, default) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    if host_port.ends_with(']') {
        return Some(default);
    }
    match host_port.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => Some(default),
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Applies one `FACEGATE__SECTION__KEY` variable. A numeric segment indexes an array of tables (or, last, an array
/// of values): `FACEGATE__AUTH__CALLERS__0__API_KEY_FILE`; the index one past the end appends a new element.
fn apply_env(root: &mut toml::Value, name: &str, raw: &str) -> Result<(), ConfigError> {
    let path = env_path(name);
    let err = |message: String| ConfigError::Env {
        name: name.to_owned(),
        message,
    };
    if path.iter().any(|p| p.is_empty()) {
        return Err(err("expected FACEGATE__SECTION__KEY".into()));
    }
    let mut node = root;
    for (i, part) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        if let toml::Value::Array(items) = node {
            let index: usize = part
                .parse()
                .map_err(|_| err(format!("{part} is not an index into a list setting")))?;
            if index > items.len() {
                return Err(err(format!(
                    "index {index} is past the end of a list of {} (the next index appends)",
                    items.len()
                )));
            }
            if last {
                let value = match items.first() {
                    Some(existing) => typed_like(existing, raw).ok_or_else(|| {
                        err(format!("cannot be read as a {}", existing.type_str()))
                    })?,
                    None => toml::Value::String(raw.to_owned()),
                };
                if index == items.len() {
                    items.push(value);
                } else {
                    items[index] = value;
                }
                return Ok(());
            }
            if index == items.len() {
                items.push(array_element_template(&path[..i]));
            }
            node = &mut items[index];
            continue;
        }
        let table = node
            .as_table_mut()
            .ok_or_else(|| err("names a value inside a non-table setting".into()))?;
        if last {
            let value = match table.get(part.as_str()) {
                Some(existing) => typed_like(existing, raw)
                    .ok_or_else(|| err(format!("cannot be read as a {}", existing.type_str())))?,
                None => toml::Value::String(raw.to_owned()),
            };
            table.insert(part.clone(), value);
            return Ok(());
        }
        node = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::map::Map::new()));
    }
    Ok(())
}

/// The lower-cased segments of a variable's name after the prefix.
fn env_path(name: &str) -> Vec<String> {
    name.get(ENV_PREFIX.len()..)
        .unwrap_or_default()
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// Orders variables so that list indexes apply in numeric order (`__2__` before `__10__`), each append before the
/// settings of later elements.
fn env_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (pa, pb) = (env_path(a), env_path(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len()).then_with(|| a.cmp(b))
}

/// A new element of the list setting at `path`, with every key at its default so that values set through the
/// environment get their types.
fn array_element_template(path: &[String]) -> toml::Value {
    let joined = path.join(".");
    let template = match joined.as_str() {
        "auth.callers" => toml::Value::try_from(CallerConfig::default()).ok(),
        "webhooks.endpoints" => toml::Value::try_from(WebhookEndpointConfig::default()).ok(),
        _ => None,
    };
    template.unwrap_or_else(|| toml::Value::Table(toml::map::Map::new()))
}

fn typed_like(existing: &toml::Value, raw: &str) -> Option<toml::Value> {
    Some(match existing {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().ok()?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().ok()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return None,
        }),
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        // A list of strings (`scopes`): comma-separated.
        toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn webhook_endpoints_load_as_the_readme_writes_them_and_bad_ones_are_named() {
        let readme = include_str!("../README.md");
        let start = readme.find("## Webhooks").unwrap();
        let block = &readme[start..];
        let toml_start = block.find("```toml\n").unwrap() + "```toml\n".len();
        let toml_end = block[toml_start..].find("```").unwrap();
        let mut c: Config = toml::from_str(&block[toml_start..toml_start + toml_end]).unwrap();
        assert_eq!(c.webhooks.endpoints.len(), 2);
        assert_eq!(
            c.webhooks.endpoints[0].events,
            ["session.verified", "session.failed"]
        );
        c.auth.callers = vec![CallerConfig {
            id: "orders".into(),
            tenant: "shop".into(),
            ..Default::default()
        }];
        // The README's placeholders: a secret that is not one, files that do not exist here.
        let problems = c
            .webhooks
            .endpoints(&c.auth.default_tenant, &c.tenants())
            .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0]
            .starts_with("webhooks.endpoints[0].secret must be whsec_ followed by base64"));
        assert!(problems[1].starts_with("webhooks.endpoints[1].secret_file: cannot read"));
        assert!(problems[2].starts_with("webhooks.endpoints[1].previous_secret_file: cannot read"));

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, value: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{value}\n")).unwrap();
            path
        };
        let key = |byte: u8, n: usize| {
            use base64::Engine;
            format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(vec![byte; n])
            )
        };
        c.webhooks.endpoints[0].secret = Secret::new(key(1, 32));
        c.webhooks.endpoints[1].secret_file = write("new", &key(2, 32));
        c.webhooks.endpoints[1].previous_secret_file = write("old", &key(3, 24));
        let endpoints = c
            .webhooks
            .endpoints(&c.auth.default_tenant, &c.tenants())
            .unwrap();
        assert_eq!(endpoints[0].name, "orders");
        assert!(
            endpoints[1].name.starts_with("shop-"),
            "{}",
            endpoints[1].name
        );
        assert_eq!(endpoints[1].secrets.len(), 2);
        assert_eq!(endpoints[1].secrets[1].key, vec![3; 24]);
        assert_eq!(endpoints[1].secrets[1].until_ms, Some(1_796_860_800_000));
        assert!(endpoints[0].wants("session.failed") && !endpoints[0].wants("session.created"));
        assert!(endpoints[1].wants("session.created"));
        assert!(
            !format!("{endpoints:?}").contains("whsec"),
            "secrets are masked in Debug"
        );

        // Production refuses plaintext endpoints; the sandbox takes them on loopback only.
        c.webhooks.endpoints[0].url = "http://orders.internal/hook".into();
        let prod = c.transport_problems(false).errors;
        assert!(
            prod.iter()
                .any(|e| e.starts_with("webhooks.endpoints[0].url must be https://")),
            "{prod:?}"
        );
        let sandbox = c.transport_problems(true).errors;
        assert!(sandbox
            .iter()
            .any(|e| e.starts_with("webhooks.endpoints[0].url: the sandbox accepts")));
        c.webhooks.endpoints[0].url = "http://127.0.0.1:9000/hook".into();
        assert!(c.transport_problems(true).errors.is_empty());
        assert!(!c.transport_problems(false).errors.is_empty());

        // Every other mistake names its key.
        let mut bad = c.clone();
        bad.webhooks.endpoints[0].tenant = "nobody".into();
        bad.webhooks.endpoints[0].events = vec!["session.approved".into()];
        bad.webhooks.endpoints[0].secret = Secret::new(key(1, 8));
        bad.webhooks.endpoints[0].url = "ftp://x".into();
        bad.webhooks.endpoints[1].name = "orders".into();
        bad.webhooks.endpoints[1].previous_secret_expires = "next week".into();
        let problems = bad
            .webhooks
            .endpoints("default", &bad.tenants())
            .unwrap_err();
        for expected in [
            "webhooks.endpoints[0].tenant: nobody",
            "webhooks.endpoints[0].url must be an http(s) URL",
            "webhooks.endpoints[0].events: unknown event type session.approved",
            "webhooks.endpoints[0].secret must hold 24 to 64 bytes",
            "webhooks.endpoints[1].previous_secret_expires must be an RFC 3339 time",
            "webhooks.endpoints[1].name: orders is used twice",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected}: {problems:?}"
            );
        }
        assert!(
            !problems.join(" ").contains(&key(1, 8)),
            "no secret in a message"
        );
    }

    #[test]
    fn routing_policies_load_as_the_readme_writes_them_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("facegate.toml");
        let readme = include_str!("../README.md");
        let start = readme.find("## Routing").unwrap();
        let block = &readme[start..];
        let toml_start = block.find("```toml\n").unwrap() + "```toml\n".len();
        let toml_end = block[toml_start..].find("```").unwrap();
        std::fs::write(&file, &block[toml_start..toml_start + toml_end]).unwrap();
        let c = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(c.routing.policies.len(), 2);
        assert_eq!(
            c.routing.policies[1].candidates[0].weight, 1,
            "weight defaults to 1"
        );
        let router = c.routing.router();
        use crate::domain::routing::Weighted;
        let configured = [crate::domain::Vendor::Juhe, crate::domain::Vendor::Baidu];
        assert_eq!(
            router.candidates("shop", &configured),
            vec![Weighted {
                vendor: crate::domain::Vendor::Baidu,
                weight: 3
            }]
        );
        assert_eq!(router.candidates("other", &configured).len(), 2);

        let mut bad = c.clone();
        bad.routing.policies[0].candidates[0].weight = 0;
        bad.routing.policies[1].tenant = "shop".into();
        bad.routing.breaker.failure_ratio = 1.5;
        let problems = bad.problems().join("; ");
        assert!(
            problems.contains("routing.policies[0].candidates[0].weight"),
            "{problems}"
        );
        assert!(
            problems.contains("routing.policies[1].tenant"),
            "{problems}"
        );
        assert!(
            problems.contains("routing.breaker.failure_ratio"),
            "{problems}"
        );
    }

    #[test]
    fn a_public_http_listener_without_an_admin_listener_is_warned_about() {
        let mut c = Config::default();
        c.store.encryption_keys = vec![Secret::new(format!(
            "k1:{}",
            crate::store::seal::generate_key_base64().unwrap()
        ))];
        c.auth.mode = AuthMode::None;
        let admin_warning = |c: &Config| {
            c.start_problems(false)
                .warnings
                .iter()
                .any(|w| w.starts_with("http.admin_listen is not set"))
        };
        assert!(!admin_warning(&c), "loopback: nothing to warn about");
        c.http.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(admin_warning(&c));
        c.http.admin_listen = Some("0.0.0.0:9090".parse().unwrap());
        assert!(!admin_warning(&c));
    }

    #[test]
    fn the_admin_listener_is_off_by_default_and_set_from_the_environment() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.http.admin_listen, None);
        assert_eq!(c.health, HealthConfig::default());
        let c = Config::load_from(
            None,
            env(&[
                ("FACEGATE__HTTP__ADMIN_LISTEN", "0.0.0.0:9090"),
                ("FACEGATE__HEALTH__STORE_CHECK_INTERVAL_MS", "250"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.admin_listen, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(c.health.store_check_interval_ms, 250);
        assert!(
            Config::load_from(None, env(&[("FACEGATE__HTTP__ADMIN_LISTEN", "nowhere")])).is_err()
        );
    }

    #[test]
    fn secrets_come_from_files_named_in_the_environment_or_the_toml() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("juhe-key");
        std::fs::write(&key, "from-file\n").unwrap();
        let url = dir.path().join("db-url");
        std::fs::write(&url, "postgres://u:pw@db/x\r\n").unwrap();
        let secret = dir.path().join("secret");
        // Only one trailing newline is dropped.
        std::fs::write(&secret, "s3cret\n\n").unwrap();
        let toml = dir.path().join("c.toml");
        std::fs::write(
            &toml,
            format!(
                "[megvii]\napi_secret_file = {:?}\n",
                secret.display().to_string()
            ),
        )
        .unwrap();
        let (c, sources) = Config::load_with_sources(
            Some(&toml),
            env(&[
                ("FACEGATE__JUHE__KEY_FILE", key.to_str().unwrap()),
                ("FACEGATE__STORE__DATABASE_URL_FILE", url.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(c.juhe.key.expose(), "from-file");
        assert_eq!(c.store.database_url.expose(), "postgres://u:pw@db/x");
        assert_eq!(c.megvii.api_secret.expose(), "s3cret\n");
        assert_eq!(
            sources.of("juhe.key"),
            format!(
                "file {} (named by environment variable FACEGATE__JUHE__KEY_FILE)",
                key.display()
            )
        );
        assert!(sources.of("megvii.api_secret").contains("config file"));
        assert!(!c.to_masked_toml().contains("from-file"));
        assert!(
            !c.to_masked_toml().contains("_file = \"/"),
            "the _file keys are consumed"
        );
        // Every secret has its _FILE variant.
        for k in SECRET_FILE_KEYS {
            let var = format!(
                "FACEGATE__{}_FILE",
                k.replace('.', "__").to_ascii_uppercase()
            );
            let url_like = if k == "store.database_url" {
                &url
            } else {
                &key
            };
            let c = Config::load_from(None, env(&[(&var, url_like.to_str().unwrap())])).unwrap();
            let value = toml::Value::try_from(&c).unwrap();
            let (section, name) = k.split_once('.').unwrap();
            assert_eq!(value[section][name].as_str(), Some("***"), "{var}");
        }
    }

    #[test]
    fn a_secret_set_twice_or_unreadable_is_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "from-file").unwrap();
        let toml = dir.path().join("c.toml");
        std::fs::write(&toml, "[baidu]\napi_key = \"inline-secret\"\n").unwrap();
        let e = Config::load_from(
            Some(&toml),
            env(&[("FACEGATE__BAIDU__API_KEY_FILE", key.to_str().unwrap())]),
        )
        .unwrap_err();
        let issues = e.issues();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].key, "baidu.api_key");
        let text = e.to_string();
        assert!(text.contains("baidu.api_key (config file"), "{text}");
        assert!(
            text.contains(
                "baidu.api_key_file (environment variable FACEGATE__BAIDU__API_KEY_FILE)"
            ),
            "{text}"
        );
        assert!(
            !text.contains("inline-secret") && !text.contains("from-file"),
            "{text}"
        );
        let e = Config::load_from(
            None,
            env(&[("FACEGATE__MEGVII__API_KEY_FILE", "/nonexistent/k")]),
        )
        .unwrap_err();
        let issues = e.issues();
        assert_eq!(issues[0].key, "megvii.api_key_file");
        assert_eq!(
            issues[0].source,
            "environment variable FACEGATE__MEGVII__API_KEY_FILE"
        );
        assert!(issues[0].message.contains("/nonexistent/k"), "{issues:?}");
    }

    #[test]
    fn errors_name_the_key_and_where_it_was_set() {
        let e = Config::load_from(None, env(&[("FACEGATE__GRPC__LISTEN", "not-an-address")]))
            .unwrap_err();
        let issues = e.issues();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "grpc.listen");
        assert_eq!(
            issues[0].source,
            "environment variable FACEGATE__GRPC__LISTEN"
        );
        assert!(e
            .to_string()
            .contains("grpc.listen (environment variable FACEGATE__GRPC__LISTEN)"));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[http]\nlisten = \"0.0.0.0:99999\"\n").unwrap();
        let issues = Config::load_from(Some(&p), env(&[])).unwrap_err().issues();
        assert_eq!(issues[0].key, "http.listen");
        assert_eq!(issues[0].source, format!("config file {}", p.display()));

        // A value that parses but cannot work: the key its message names, and where it came from.
        let issues = Config::load_from(None, env(&[("FACEGATE__JUHE__BASE_URL", "ftp://x")]))
            .unwrap_err()
            .issues();
        assert_eq!(issues[0].key, "juhe.base_url");
        assert_eq!(
            issues[0].source,
            "environment variable FACEGATE__JUHE__BASE_URL"
        );
        let issues = Config::load_from(None, env(&[("FACEGATE__GRPC__MAX_MESSAGE_BYTES", "1000")]))
            .unwrap_err()
            .issues();
        assert_eq!(issues[0].key, "grpc.max_message_bytes");
        // A default that stops working because of another setting says so.
        std::fs::write(&p, "[baidu]\ndefault_plan = \"nope\"\n").unwrap();
        let issues = Config::load_from(Some(&p), env(&[])).unwrap_err().issues();
        assert_eq!(issues[0].key, "baidu.default_plan");
        assert_eq!(issues[0].source, format!("config file {}", p.display()));

        // A secret of the wrong type: named, its value not shown.
        std::fs::write(&p, "[juhe]\nkey = 123456789\n").unwrap();
        let e = Config::load_from(Some(&p), env(&[])).unwrap_err();
        assert_eq!(e.issues()[0].key, "juhe.key");
        assert!(!e.to_string().contains("123456789"), "{e}");
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[grpc]\nlisten = \"0.0.0.0:6000\"\nrequest_timeout_secs = 5\n[juhe]\nkey = \"filekey\"\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&p),
            env(&[
                ("FACEGATE__GRPC__REQUEST_TIMEOUT_SECS", "9"),
                ("FACEGATE__JUHE__OPENID", "oid"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.grpc.listen.port(), 6000);
        assert_eq!(c.grpc.request_timeout_secs, 9);
        assert_eq!(c.juhe.key.expose(), "filekey");
        assert_eq!(c.juhe.openid.expose(), "oid");
    }

    #[test]
    fn sandbox_cannot_be_configured() {
        let dir = tempfile::tempdir().unwrap();
        for (i, text) in [
            "[sandbox]\nenabled = true\n",
            "[sandbox]\nenabled = false\n",
            "[sandbox]\n",
            "sandbox = true\n",
            "[grpc]\nrequest_timeout_secs = 5\n[sandbox]\nanything = 1\n",
        ]
        .into_iter()
        .enumerate()
        {
            let p = dir.path().join(format!("c{i}.toml"));
            std::fs::write(&p, text).unwrap();
            let e = Config::load_from(Some(&p), env(&[])).unwrap_err();
            assert!(matches!(e, ConfigError::SandboxKey { .. }), "{text}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(
                    "sandbox mode is chosen by `facegate serve --sandbox`, never by configuration"
                ) && msg.contains(&p.display().to_string()),
                "{msg}"
            );
        }
        let p = dir.path().join("c0.toml");
        assert!(Config::load_from(Some(&p), env(&[]))
            .unwrap_err()
            .to_string()
            .contains("sets `sandbox.enabled`"));
        for name in [
            "FACEGATE__SANDBOX__ENABLED",
            "FACEGATE__sandbox__enabled",
            "FACEGATE__SANDBOX",
            "FACEGATE__SANDBOX__PUBLIC",
        ] {
            for value in ["true", "false"] {
                let e = Config::load_from(None, env(&[(name, value)])).unwrap_err();
                let msg = e.to_string();
                assert!(
                    matches!(e, ConfigError::SandboxKey { .. })
                        && msg.contains(name)
                        && msg.contains("never by configuration"),
                    "{name}: {msg}"
                );
            }
        }
        // Not the sandbox section: a key that merely starts with the word is an ordinary unknown key.
        let e = Config::load_from(None, env(&[("FACEGATE__SANDBOXES__X", "1")])).unwrap_err();
        assert!(!matches!(e, ConfigError::SandboxKey { .. }), "{e}");
        assert!(!Config::default().to_masked_toml().contains("sandbox"));
    }

    #[test]
    fn megvii_callback_ports_are_checked() {
        let mut c = Config::default();
        c.megvii.api_key = Secret::new("k");
        c.megvii.api_secret = Secret::new("s");
        c.http.public_base_url = "https://gate.example".into();
        assert!(!c
            .warnings()
            .iter()
            .any(|w| w.contains("does not call back")));
        c.http.public_base_url = "https://gate.example:5000/x".into();
        assert!(!c
            .warnings()
            .iter()
            .any(|w| w.contains("does not call back")));
        c.http.public_base_url = "http://gate.example".into();
        assert!(c.warnings().iter().any(|w| w.contains("port 80")));
        c.http.public_base_url = String::new();
        assert!(c.warnings().iter().any(|w| w.contains("port 8080")));
    }

    #[test]
    fn baidu_plans_come_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[baidu.plans.kyc]\nplan_id = \"1234\"\nfail_ends_url = false\n[baidu.plans.selfie]\nplan_id = \"99\"\nneeds_identity = false\nneeds_reference = true\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&p),
            env(&[
                (
                    "FACEGATE__BAIDU__PLANS__KYC__SUCCESS_URL",
                    "https://app.example/ok",
                ),
                ("FACEGATE__BAIDU__DEFAULT_PLAN", "kyc"),
            ]),
        )
        .unwrap();
        let kyc = &c.baidu.plans["kyc"];
        assert_eq!(kyc.plan_id, "1234");
        assert!(kyc.needs_identity && !kyc.fail_ends_url);
        assert_eq!(kyc.success_url, "https://app.example/ok");
        assert!(c.baidu.plans["selfie"].needs_reference);
        assert_eq!(c.baidu.default_plan, "kyc");
        assert!(
            Config::load_from(Some(&p), env(&[("FACEGATE__BAIDU__DEFAULT_PLAN", "nope")])).is_err()
        );
        assert!(
            Config::load_from(Some(&p), env(&[("FACEGATE__BAIDU__PLANS__KYC__NOPE", "1")]))
                .is_err()
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_fail() {
        assert!(Config::load_from(None, env(&[("FACEGATE__GRPC__NOPE", "1")])).is_err());
        assert!(
            Config::load_from(None, env(&[("FACEGATE__GRPC__REQUEST_TIMEOUT_SECS", "x")])).is_err()
        );
        assert!(Config::load_from(None, env(&[("FACEGATE__JUHE__BASE_URL", "ftp://x")])).is_err());
        assert!(
            Config::load_from(None, env(&[("FACEGATE__GRPC__MAX_MESSAGE_BYTES", "1000")])).is_err()
        );
    }

    #[test]
    fn connection_limits_are_read_and_must_be_positive() {
        let c = Config::load_from(
            None,
            env(&[
                ("FACEGATE__GRPC__MAX_CONNECTIONS", "500"),
                ("FACEGATE__HTTP__HEADER_READ_TIMEOUT_SECS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(c.grpc.max_connections, 500);
        assert_eq!(c.http.max_connections, 4096);
        assert_eq!(c.http.header_read_timeout_secs, 3);
        assert_eq!(c.grpc.preface_timeout_secs, 5);
        for key in [
            "FACEGATE__GRPC__MAX_CONNECTIONS",
            "FACEGATE__HTTP__MAX_CONNECTIONS",
            "FACEGATE__GRPC__PREFACE_TIMEOUT_SECS",
            "FACEGATE__HTTP__PREFACE_TIMEOUT_SECS",
            "FACEGATE__HTTP__HEADER_READ_TIMEOUT_SECS",
        ] {
            assert!(
                Config::load_from(None, env(&[(key, "0")])).is_err(),
                "{key}"
            );
        }
    }

    #[test]
    fn quotas_are_read_per_tenant_and_checked() {
        let c = Config::load_from(
            None,
            env(&[
                ("FACEGATE__AUTH__DEFAULT_QUOTA__BILLED_CALLS_PER_DAY", "100"),
                ("FACEGATE__AUTH__DEFAULT_QUOTA__RPC_PER_SECOND", "2.5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.auth.default_quota.billed_calls_per_day, 100);
        assert_eq!(c.auth.default_quota.rpc_per_second, 2.5);
        let mut c = Config::default();
        c.auth.quotas.insert(
            "shop".into(),
            QuotaConfig {
                rpc_per_second: -1.0,
                ..QuotaConfig::default()
            },
        );
        c.auth.default_quota.rpc_burst = 10;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("auth.quotas.shop.rpc_per_second"), "{e}");
        assert!(e.contains("auth.default_quota.rpc_burst needs"), "{e}");
    }

    #[test]
    fn database_url_must_be_postgres_and_is_masked() {
        let bad = Config::load_from(
            None,
            env(&[("FACEGATE__STORE__DATABASE_URL", "mysql://u:pw@db/x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("store.database_url"), "{bad}");
        assert!(
            !bad.contains("pw@db"),
            "the URL itself is not echoed: {bad}"
        );
        for url in [
            "postgres://facegate:pw-123@db:5432/facegate",
            "postgresql://db/facegate?sslmode=verify-full",
        ] {
            let c =
                Config::load_from(None, env(&[("FACEGATE__STORE__DATABASE_URL", url)])).unwrap();
            assert_eq!(c.store.database_url.expose(), url);
            let text = c.to_masked_toml();
            assert!(
                !text.contains(url) && text.contains("database_url = \"***\""),
                "{text}"
            );
        }
        assert!(Config::default()
            .to_masked_toml()
            .contains("database_url = \"\""));
    }

    #[test]
    fn tls_settings_must_go_together() {
        let problems = |pairs: &[(&str, &str)]| match Config::load_from(None, env(pairs)) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        assert!(problems(&[("FACEGATE__GRPC__TLS__CERT_FILE", "/c.pem")])
            .contains("grpc.tls.key_file is required with grpc.tls.cert_file"));
        assert!(problems(&[("FACEGATE__HTTP__TLS__KEY_FILE", "/k.pem")])
            .contains("http.tls.cert_file is required with http.tls.key_file"));
        assert!(
            problems(&[("FACEGATE__GRPC__TLS__CLIENT_CA_FILE", "/ca.pem")])
                .contains("grpc.tls.client_ca_file needs grpc.tls.cert_file")
        );
        assert!(problems(&[
            ("FACEGATE__GRPC__TLS__CERT_FILE", "/c.pem"),
            ("FACEGATE__GRPC__TLS__KEY_FILE", "/k.pem"),
            ("FACEGATE__GRPC__TLS__REQUIRE_CLIENT_CERT", "true"),
        ])
        .contains("grpc.tls.require_client_cert needs grpc.tls.client_ca_file"));
        assert!(
            problems(&[("FACEGATE__HTTP__TLS__RELOAD_INTERVAL_MS", "99")])
                .contains("http.tls.reload_interval_ms must be at least 100")
        );
        assert_eq!(
            problems(&[
                ("FACEGATE__GRPC__TLS__CERT_FILE", "/c.pem"),
                ("FACEGATE__GRPC__TLS__KEY_FILE", "/k.pem"),
                ("FACEGATE__GRPC__TLS__CLIENT_CA_FILE", "/ca.pem"),
                ("FACEGATE__GRPC__TLS__REQUIRE_CLIENT_CERT", "true"),
                ("FACEGATE__GRPC__TLS__RELOAD_INTERVAL_MS", "100"),
            ]),
            ""
        );
    }

    #[test]
    fn plaintext_vendor_urls_need_the_opt_in_and_are_warned_about() {
        let c = Config::default();
        assert_eq!(c.juhe.base_url, "https://apis.juhe.cn");
        assert_eq!(c.transport_problems(false), ConfigProblems::default());

        let mut c = Config::default();
        c.juhe.base_url = "http://apis.juhe.cn".into();
        c.baidu.page_url = "HTTP://brain.baidu.com/face/print/".into();
        c.megvii.base_url = "http://api.megvii.com".into();
        c.megvii.page_url = "http://api.megvii.com/faceid/lite/do".into();
        let p = c.transport_problems(false);
        assert!(p.warnings.is_empty(), "{p:?}");
        for key in [
            "juhe.base_url",
            "baidu.page_url",
            "megvii.base_url",
            "megvii.page_url",
        ] {
            assert!(p.errors.iter().any(|e| e.starts_with(key)), "{key}: {p:?}");
        }
        assert_eq!(p.errors.len(), 4, "{p:?}");

        c.juhe.allow_plaintext_http = true;
        c.megvii.allow_plaintext_http = true;
        let p = c.transport_problems(false);
        assert_eq!(p.errors.len(), 1, "{p:?}");
        assert!(p.errors[0].starts_with("baidu.page_url"), "{p:?}");
        assert_eq!(p.warnings.len(), 3, "{p:?}");
        assert!(
            p.warnings.iter().all(|w| w.contains("unencrypted")),
            "{p:?}"
        );

        // Sandbox mode replaces the vendor URLs; its simulators are plaintext on loopback.
        assert_eq!(c.transport_problems(true), ConfigProblems::default());
        c.http.tls.cert_file = "/c.pem".into();
        assert!(c.transport_problems(true).errors[0].starts_with("http.tls"));
    }

    #[test]
    fn the_public_base_url_follows_http_tls() {
        let bound: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let mut c = Config::default();
        assert_eq!(c.public_base_url(bound), "http://127.0.0.1:8443");
        c.http.tls.cert_file = "/c.pem".into();
        assert_eq!(c.public_base_url(bound), "https://127.0.0.1:8443");
    }

    #[test]
    fn secrets_are_masked_everywhere() {
        let mut c = Config::default();
        c.juhe.key = Secret::new("supersecretkey");
        c.juhe.openid = Secret::new("openid-value");
        let text = c.to_masked_toml();
        assert!(!text.contains("supersecretkey"));
        assert!(!text.contains("openid-value"));
        assert!(text.contains("***"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("supersecretkey"));
        assert!(!format!("{}", c.juhe.key).contains("supersecret"));
    }

    fn sha256_hex(key: &str) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn webhook_endpoints_come_from_env_by_index() {
        let c = Config::load_from(
            None,
            env(&[
                (
                    "FACEGATE__WEBHOOKS__ENDPOINTS__0__URL",
                    "https://orders.internal/hook",
                ),
                (
                    "FACEGATE__WEBHOOKS__ENDPOINTS__0__SECRET_FILE",
                    "/run/secrets/orders-webhook",
                ),
                (
                    "FACEGATE__WEBHOOKS__ENDPOINTS__0__EVENTS",
                    "session.verified, session.failed",
                ),
                ("FACEGATE__WEBHOOKS__TIMEOUT_SECS", "5"),
            ]),
        );
        // The secret file does not exist here: the error names it, so the endpoint itself was read.
        let err = c.unwrap_err().to_string();
        assert!(
            err.contains(
                "webhooks.endpoints[0].secret_file: cannot read /run/secrets/orders-webhook"
            ),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, format!("whsec_{}\n", "A".repeat(32))).unwrap();
        let c = Config::load_from(
            None,
            env(&[
                (
                    "FACEGATE__WEBHOOKS__ENDPOINTS__0__URL",
                    "https://orders.internal/hook",
                ),
                (
                    "FACEGATE__WEBHOOKS__ENDPOINTS__0__SECRET_FILE",
                    file.to_str().unwrap(),
                ),
                (
                    "FACEGATE__WEBHOOKS__ENDPOINTS__0__EVENTS",
                    "session.verified, session.failed",
                ),
                ("FACEGATE__WEBHOOKS__TIMEOUT_SECS", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.webhooks.timeout_secs, 5);
        assert_eq!(
            c.webhooks.endpoints[0].events,
            ["session.verified", "session.failed"]
        );
        let endpoints = c.webhooks.endpoints("default", &c.tenants()).unwrap();
        assert_eq!(endpoints[0].secrets[0].key.len(), 24);
    }

    #[test]
    fn callers_come_from_file_and_env_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("k");
        std::fs::write(&key_file, "second-key\n").unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            format!(
                "[[auth.callers]]\nid = \"orders\"\ntenant = \"shop\"\nscopes = [\"sessions:create\"]\n\
                 api_key_sha256 = \"{}\"\n",
                sha256_hex("first-key")
            ),
        )
        .unwrap();
        let c = Config::load_from(
            Some(&p),
            env(&[
                (
                    "FACEGATE__AUTH__CALLERS__0__SCOPES",
                    "sessions:read, sessions:cancel",
                ),
                ("FACEGATE__AUTH__CALLERS__1__ID", "billing"),
                ("FACEGATE__AUTH__CALLERS__1__TENANT", "ledger"),
                (
                    "FACEGATE__AUTH__CALLERS__1__API_KEY_FILE",
                    key_file.to_str().unwrap(),
                ),
                ("FACEGATE__AUTH__CALLERS__1__SCOPES__0", "sessions:read"),
                ("FACEGATE__AUTH__CALLERS__2__ID", "mtls-only"),
                ("FACEGATE__AUTH__CALLERS__2__TENANT", "shop"),
                (
                    "FACEGATE__AUTH__CALLERS__2__MTLS_SUBJECT",
                    "cn = mtls-only, o=Shop",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.auth.callers.len(), 3);
        assert_eq!(
            c.auth.callers[0].scopes,
            vec!["sessions:read".to_owned(), "sessions:cancel".to_owned()]
        );
        assert_eq!(c.auth.callers[1].id, "billing");
        assert_eq!(c.auth.callers[1].scopes, vec!["sessions:read".to_owned()]);
        let creds = c.auth.credentials().unwrap();
        // The trailing newline of a mounted Secret is not part of the key.
        let mut expected = [0u8; 32];
        expected.copy_from_slice(&{
            use sha2::{Digest, Sha256};
            Sha256::digest(b"second-key")
        });
        assert_eq!(creds[1].key_sha256, Some(expected));
        assert_eq!(creds[1].caller.tenant, "ledger");
        assert_eq!(creds[2].key_sha256, None);
        assert_eq!(
            creds[2].mtls_subject.as_deref(),
            Some("CN=mtls-only,O=Shop")
        );
        assert!(!format!("{creds:?}").contains(&sha256_hex("first-key")[..8]));
        // An index past the end, or a name where an index belongs, is refused.
        let gap = Config::load_from(Some(&p), env(&[("FACEGATE__AUTH__CALLERS__2__ID", "x")]));
        assert!(gap.unwrap_err().to_string().contains("past the end"));
        assert!(
            Config::load_from(Some(&p), env(&[("FACEGATE__AUTH__CALLERS__X__ID", "x")])).is_err()
        );
    }

    #[test]
    fn env_indexes_apply_in_numeric_order() {
        assert_eq!(
            env_order(
                "FACEGATE__AUTH__CALLERS__2__ID",
                "FACEGATE__AUTH__CALLERS__10__ID"
            ),
            std::cmp::Ordering::Less
        );
        assert_eq!(
            env_order(
                "FACEGATE__AUTH__CALLERS__1",
                "FACEGATE__AUTH__CALLERS__1__ID"
            ),
            std::cmp::Ordering::Less
        );
    }

    fn caller(id: &str, key: &str) -> CallerConfig {
        CallerConfig {
            id: id.into(),
            tenant: "shop".into(),
            scopes: vec!["sessions:read".into()],
            api_key_sha256: sha256_hex(key),
            ..Default::default()
        }
    }

    fn problems(c: &Config) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn callers_are_checked() {
        let mut c = Config::default();
        c.auth.callers = vec![caller("a", "k1"), caller("a", "k2")];
        assert!(problems(&c).contains("auth.callers[1].id \"a\" is declared twice"));
        c.auth.callers = vec![caller("", "k1")];
        assert!(problems(&c).contains("auth.callers[0].id is required"));
        let mut no_tenant = caller("a", "k1");
        no_tenant.tenant.clear();
        c.auth.callers = vec![no_tenant];
        assert!(problems(&c).contains("auth.callers[0].tenant is required"));
        let mut bad_scope = caller("a", "k1");
        bad_scope.scopes.push("sessions:delete".into());
        c.auth.callers = vec![caller("b", "k0"), bad_scope];
        assert!(problems(&c).contains("auth.callers[1].scopes: unknown scope \"sessions:delete\""));
        let mut upper = caller("a", "k1");
        upper.api_key_sha256 = upper.api_key_sha256.to_ascii_uppercase();
        c.auth.callers = vec![upper];
        assert!(problems(&c).contains("auth.callers[0].api_key_sha256 must be 64 lowercase hex"));
        let mut both = caller("a", "k1");
        both.api_key_file = "/nonexistent".into();
        c.auth.callers = vec![both];
        assert!(problems(&c).contains("either api_key_sha256 or api_key_file"));
        let mut neither = caller("a", "k1");
        neither.api_key_sha256.clear();
        c.auth.callers = vec![neither.clone()];
        assert!(problems(&c).contains("needs api_key_sha256, api_key_file or mtls_subject"));
        neither.mtls_subject = "CN=a".into();
        c.auth.callers = vec![neither];
        assert!(c.validate().is_ok());
        let mut with_key_and_subject = caller("a", "k1");
        with_key_and_subject.mtls_subject = "CN=a".into();
        c.auth.callers = vec![with_key_and_subject, caller("b", "k1")];
        let text = problems(&c);
        assert!(
            text.contains("auth.callers[1] has the same key as auth.callers[0]"),
            "{text}"
        );
        assert!(!text.contains(&sha256_hex("k1")), "{text}");
        c.auth.callers = vec![caller("a", "k1")];
        c.auth.default_tenant = " ".into();
        assert!(problems(&c).contains("auth.default_tenant"));
    }

    #[test]
    fn key_files_are_read_and_must_hold_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        let mut from_file = caller("a", "unused");
        from_file.api_key_sha256.clear();
        from_file.api_key_file = dir.path().join("missing");
        c.auth.callers = vec![from_file.clone()];
        assert!(problems(&c).contains("auth.callers[0].api_key_file: cannot read"));
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        from_file.api_key_file = dir.path().join("empty");
        c.auth.callers = vec![from_file.clone()];
        assert!(
            problems(&c).contains("auth.callers[0].api_key_file:")
                && problems(&c).contains("is empty")
        );
        std::fs::write(dir.path().join("key"), "the-key\r\n").unwrap();
        from_file.api_key_file = dir.path().join("key");
        c.auth.callers = vec![from_file, caller("b", "the-key")];
        assert!(problems(&c).contains("same key"));
    }

    #[test]
    fn serving_without_callers_needs_mode_none_on_purpose() {
        let mut c = Config::default();
        c.store.encryption_keys = vec![test_store_key()];
        let p = c.start_problems(false);
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].contains("auth.callers") && p.errors[0].contains("auth.mode"));
        assert_eq!(c.start_problems(true), ConfigProblems::default());
        c.auth.mode = AuthMode::None;
        let p = c.start_problems(false);
        assert!(p.errors.is_empty());
        assert!(p.warnings[0].contains("auth.mode = \"none\""));
        c.auth.mode = AuthMode::Keys;
        c.auth.callers = vec![caller("a", "k")];
        assert_eq!(c.start_problems(false), ConfigProblems::default());
    }

    fn test_store_key() -> Secret {
        Secret::new(format!(
            "k1:{}",
            crate::store::seal::generate_key_base64().unwrap()
        ))
    }

    #[test]
    fn production_needs_an_encryption_key_and_the_sandbox_does_not() {
        let mut c = Config::default();
        c.auth.mode = AuthMode::None;
        let p = c.start_problems(false);
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        assert!(p.errors[0].contains("store.encryption_keys"));
        assert!(c.start_problems(true).errors.is_empty());
        c.store.encryption_keys = vec![Secret::new("k1:dG9vLXNob3J0")];
        let p = c.start_problems(true);
        assert!(
            p.errors.len() == 1 && p.errors[0].contains("store.encryption_keys[0]"),
            "{:?}",
            p.errors
        );
        assert!(!p.errors[0].contains("dG9vLXNob3J0"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, format!("{}\n", test_store_key().expose())).unwrap();
        c.store.encryption_keys.clear();
        c.store.encryption_keys_file = file;
        assert!(c.start_problems(false).errors.is_empty());
        let key = test_store_key();
        c.store.encryption_keys = vec![key.clone()];
        let shown = format!("{:?}", c.store);
        assert!(shown.contains("***") && !shown.contains(key.expose().split_once(':').unwrap().1));
    }
}
