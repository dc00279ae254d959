//! Prometheus metrics: a small process-wide registry, served at `GET /metrics` on the HTTP listener in the text
//! exposition format 0.0.4.
//!
//! Hand-written rather than a crate: the handful of counters and histograms below need a map and a formatter, and
//! the text format 0.0.4 is what Prometheus scrapes (`prometheus-client` writes OpenMetrics text instead). Every
//! label value is a `&'static str` chosen by facegate's own code (method, gRPC code, vendor, endpoint, outcome,
//! state) or a name from the configuration (tenant, caller id; see [`label`]), so a label can never carry personal
//! data or a session id, and the number of series is bounded.
//!
//! The registry is process-wide, as Prometheus counters are: they start at zero when the process starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency histograms, in seconds (vendor calls time out after 15 s by default, unary RPCs
/// after 30 s; status streams last as long as their sessions wait).
pub const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

const VENDORS: [&str; 3] = ["baidu", "megvii", "juhe"];
/// `facegate_callbacks_total`'s `source` values.
const CALLBACK_SOURCES: [&str; 2] = ["notify", "return_relay"];

/// Where a vendor callback arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackSource {
    /// The vendor's server POST to notify_url.
    Notify,
    /// The browser's POST of the signed result form to the return URL (relayed on to the caller's page).
    ReturnRelay,
}

impl CallbackSource {
    fn label(self) -> &'static str {
        match self {
            Self::Notify => CALLBACK_SOURCES[0],
            Self::ReturnRelay => CALLBACK_SOURCES[1],
        }
    }
}

/// The git commit facegate was built from (build.rs: `git rev-parse`, or `FACEGATE_GIT_COMMIT` at build time),
/// `unknown` when neither was available.
pub const GIT_COMMIT: &str = env!("FACEGATE_GIT_COMMIT");
/// What a status poll's request found (`facegate_status_polls_total`'s `result`).
const POLL_RESULTS: [&str; 4] = ["pending", "final", "throttled", "error"];

/// Most distinct configured names (tenants, caller ids) kept as label values; any further one is `other`.
const MAX_NAMES: usize = 1024;

static NAMES: LazyLock<Mutex<BTreeSet<&'static str>>> = LazyLock::new(Default::default);

/// A tenant or caller id as a label value. These come from the configuration (and sessions stored under it), so
/// they are few; each distinct one is kept for the life of the process, and past [`MAX_NAMES`] they read `other`.
pub fn label(name: &str) -> &'static str {
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    if names.len() >= MAX_NAMES {
        return "other";
    }
    let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(kept);
    kept
}

tokio::task_local! {
    /// The tenant a vendor call is made for (see [`for_tenant`]).
    static TENANT: &'static str;
}

/// Runs `f` with vendor calls inside it counted for `tenant` (`facegate_vendor_requests_total{tenant}`).
pub fn for_tenant<F: std::future::Future>(
    tenant: &str,
    f: F,
) -> impl std::future::Future<Output = F::Output> {
    TENANT.scope(label(tenant), f)
}

/// The tenant of the vendor call being made, or empty outside [`for_tenant`].
fn current_tenant() -> &'static str {
    TENANT.try_with(|t| *t).unwrap_or("")
}

/// Counters by label values.
struct Counters<const N: usize> {
    values: Mutex<BTreeMap<[&'static str; N], u64>>,
}

impl<const N: usize> Counters<N> {
    fn new(initial: &[[&'static str; N]]) -> Self {
        Self {
            values: Mutex::new(initial.iter().map(|l| (*l, 0)).collect()),
        }
    }

    fn add(&self, labels: [&'static str; N], n: u64) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *values.entry(labels).or_insert(0) += n;
    }

    fn snapshot(&self) -> Vec<([&'static str; N], u64)> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// One histogram: per-bucket (not cumulative) counts, the sum and the count.
#[derive(Clone, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Histograms by label values.
struct Histograms<const N: usize> {
    values: Mutex<BTreeMap<[&'static str; N], Histogram>>,
}

impl<const N: usize> Histograms<N> {
    fn new() -> Self {
        Self {
            values: Mutex::new(BTreeMap::new()),
        }
    }

    fn observe(&self, labels: [&'static str; N], value: Duration) {
        let seconds = value.as_secs_f64();
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let h = values.entry(labels).or_default();
        if let Some(i) = BUCKETS.iter().position(|le| seconds <= *le) {
            h.buckets[i] += 1;
        }
        h.sum += seconds;
        h.count += 1;
    }

    fn snapshot(&self) -> Vec<([&'static str; N], Histogram)> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

/// facegate's metrics.
pub struct Metrics {
    rpc_requests: Counters<3>,
    rpc_duration: Histograms<3>,
    vendor_requests: Counters<4>,
    vendor_duration: Histograms<3>,
    vendor_billed: Counters<2>,
    auth_failures: Counters<1>,
    unmasked_reads: Counters<3>,
    status_polls: Counters<2>,
    status_poll_queue_depth: AtomicU64,
    callbacks: Counters<3>,
    streams_open: AtomicI64,
    webhook_attempts: Counters<2>,
}

/// Keeps `facegate_status_streams_open` raised while it lives.
pub struct OpenStream<'a>(&'a Metrics);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry (series that every deployment has start at zero).
    pub fn new() -> Self {
        Self {
            rpc_requests: Counters::new(&[]),
            rpc_duration: Histograms::new(),
            vendor_requests: Counters::new(&[]),
            vendor_duration: Histograms::new(),
            vendor_billed: Counters::new(&[]),
            auth_failures: Counters::new(&[]),
            unmasked_reads: Counters::new(&[]),
            status_polls: Counters::new(
                &VENDORS
                    .iter()
                    .flat_map(|v| POLL_RESULTS.map(|r| [*v, r]))
                    .collect::<Vec<_>>(),
            ),
            status_poll_queue_depth: AtomicU64::new(0),
            callbacks: Counters::new(
                &CALLBACK_SOURCES
                    .iter()
                    .flat_map(|source| {
                        ["verified", "rejected"].map(|result| ["megvii", *source, result])
                    })
                    .collect::<Vec<_>>(),
            ),
            streams_open: AtomicI64::new(0),
            webhook_attempts: Counters::new(&[]),
        }
    }

    /// Starts each webhook endpoint's delivery series at zero.
    pub fn register_webhook_endpoints<'a>(&self, endpoints: impl IntoIterator<Item = &'a str>) {
        for endpoint in endpoints {
            let endpoint = label(endpoint);
            for outcome in WEBHOOK_OUTCOMES {
                self.webhook_attempts.add([endpoint, outcome], 0);
            }
        }
    }

    /// One webhook attempt of `endpoint`: `delivered`, `failed` (retried later) or `gave_up`.
    pub fn webhook_attempt(&self, endpoint: &str, outcome: &'static str) {
        self.webhook_attempts.add([label(endpoint), outcome], 1);
    }

    /// Starts the series every deployment has at zero for each configured tenant (billed calls by vendor).
    pub fn register_tenants<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        for tenant in tenants {
            let tenant = label(tenant);
            for vendor in VENDORS {
                self.vendor_billed.add([vendor, tenant], 0);
            }
        }
    }

    /// A finished RPC: its method, gRPC code name (`OK`, `NOT_FOUND`, ...), the caller's tenant and duration.
    pub fn rpc(&self, method: &'static str, code: &'static str, tenant: &str, elapsed: Duration) {
        let tenant = label(tenant);
        self.rpc_requests.add([method, code, tenant], 1);
        self.rpc_duration.observe([method, code, tenant], elapsed);
    }

    /// A finished vendor HTTP call, for the tenant of [`for_tenant`] around it.
    pub fn vendor_request(
        &self,
        vendor: &'static str,
        endpoint: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        let tenant = current_tenant();
        self.vendor_requests
            .add([vendor, endpoint, outcome, tenant], 1);
        self.vendor_duration
            .observe([vendor, endpoint, tenant], elapsed);
    }

    /// `n` billed vendor calls newly recorded in a session of `tenant`.
    pub fn billed(&self, vendor: &'static str, tenant: &str, n: u64) {
        self.vendor_billed.add([vendor, label(tenant)], n);
    }

    /// A request the auth layer refused, by reason (`UNAUTHENTICATED`, `MISSING_SCOPE`).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.add([reason], 1);
    }

    /// An unmasked read (GetResult revealing personal data, a face image or media), by tenant, caller and kind.
    pub fn unmasked_read(&self, tenant: &str, caller: &str, kind: &'static str) {
        self.unmasked_reads
            .add([label(tenant), label(caller), kind], 1);
    }

    /// `n` result query requests sent to a vendor for a session that waits for the end user, by what the query
    /// found: `pending`, `final`, `throttled` or `error`.
    pub fn status_polls(&self, vendor: &'static str, result: &'static str, n: u64) {
        self.status_polls.add([vendor, result], n);
    }

    /// Sessions whose poll is due and waits for its turn, as the poll scheduler last counted.
    pub fn set_status_poll_queue_depth(&self, depth: u64) {
        self.status_poll_queue_depth.store(depth, Ordering::Relaxed);
    }

    /// A vendor callback, accepted (`verified`) or rejected, by where it arrived: `notify` (the vendor's server
    /// call to notify_url) or `return_relay` (the signed form the browser POSTs to the return URL). Each arrival is
    /// counted once, so one Megvii flow whose notify and browser return both arrive shows once under each source.
    pub fn callback(&self, vendor: &'static str, source: CallbackSource, verified: bool) {
        let result = if verified { "verified" } else { "rejected" };
        self.callbacks.add([vendor, source.label(), result], 1);
    }

    /// A status stream opened; it counts as open until the returned guard drops.
    pub fn stream_opened(&self) -> OpenStream<'_> {
        self.streams_open.fetch_add(1, Ordering::Relaxed);
        OpenStream(self)
    }

    /// The text exposition (format 0.0.4). `sessions` are the session counts by state, read by the caller.
    pub fn render(&self, sessions: &[(&'static str, u64)]) -> String {
        let mut out = String::new();
        counter(&mut out, &RPC_REQUESTS, &self.rpc_requests.snapshot());
        histogram(&mut out, &RPC_DURATION, &self.rpc_duration.snapshot());
        counter(&mut out, &VENDOR_REQUESTS, &self.vendor_requests.snapshot());
        histogram(&mut out, &VENDOR_DURATION, &self.vendor_duration.snapshot());
        counter(&mut out, &VENDOR_BILLED, &self.vendor_billed.snapshot());
        let sessions: Vec<([&str; 1], u64)> = sessions.iter().map(|(s, n)| ([*s], *n)).collect();
        gauge(&mut out, &SESSIONS, &sessions);
        let open = u64::try_from(self.streams_open.load(Ordering::Relaxed)).unwrap_or(0);
        gauge(&mut out, &STREAMS_OPEN, &[([], open)]);
        counter(&mut out, &STATUS_POLLS, &self.status_polls.snapshot());
        let depth = self.status_poll_queue_depth.load(Ordering::Relaxed);
        gauge(&mut out, &STATUS_POLL_QUEUE_DEPTH, &[([], depth)]);
        counter(&mut out, &CALLBACKS, &self.callbacks.snapshot());
        counter(&mut out, &AUTH_FAILURES, &self.auth_failures.snapshot());
        counter(&mut out, &UNMASKED_READS, &self.unmasked_reads.snapshot());
        counter(
            &mut out,
            &WEBHOOK_ATTEMPTS,
            &self.webhook_attempts.snapshot(),
        );
        gauge(
            &mut out,
            &BUILD_INFO,
            &[([env!("CARGO_PKG_VERSION"), GIT_COMMIT], 1)],
        );
        process::render(&mut out);
        out
    }
}

/// The text exposition of the per-tenant quotas: limits (where one is set), usage now and refusals. Tenant label
/// values come from config, so these series are bounded too.
pub fn render_quotas(quotas: &[crate::domain::quota::QuotaUsage]) -> String {
    let mut out = String::new();
    family_header(&mut out, &QUOTA_LIMIT, "gauge");
    for q in quotas {
        if let Some(limit) = q.limit {
            sample(
                &mut out,
                QUOTA_LIMIT.name,
                &QUOTA_LIMIT.keys,
                &[&q.tenant, q.quota],
                "",
                &limit,
            );
        }
    }
    family_header(&mut out, &QUOTA_USAGE, "gauge");
    for q in quotas {
        if let Some(usage) = q.usage {
            sample(
                &mut out,
                QUOTA_USAGE.name,
                &QUOTA_USAGE.keys,
                &[&q.tenant, q.quota],
                "",
                &usage,
            );
        }
    }
    family_header(&mut out, &QUOTA_REJECTIONS, "counter");
    for q in quotas {
        sample(
            &mut out,
            QUOTA_REJECTIONS.name,
            &QUOTA_REJECTIONS.keys,
            &[&q.tenant, q.quota],
            "",
            &q.rejections,
        );
    }
    out
}

/// What a webhook attempt came to, as `facegate_webhook_deliveries_total` counts it.
pub const WEBHOOK_OUTCOMES: [&str; 3] = ["delivered", "failed", "gave_up"];

/// The text exposition of the webhook outbox at `now_ms`: per endpoint, the events not delivered yet and how old
/// the oldest of them is. Endpoint names come from config, so the series are bounded.
pub fn render_webhook_backlog(
    endpoints: &[&str],
    backlog: &[crate::domain::webhooks::Backlog],
    now_ms: i64,
) -> String {
    let mut out = String::new();
    family_header(&mut out, &WEBHOOK_PENDING, "gauge");
    let of = |e: &str| backlog.iter().find(|b| b.endpoint == e);
    for e in endpoints {
        let pending = of(e).map_or(0, |b| b.pending);
        sample(
            &mut out,
            WEBHOOK_PENDING.name,
            &WEBHOOK_PENDING.keys,
            &[e],
            "",
            &pending,
        );
    }
    family_header(&mut out, &WEBHOOK_LAG, "gauge");
    for e in endpoints {
        let lag = of(e)
            .and_then(|b| b.oldest_at_ms)
            .map_or(0.0, |at| (now_ms.saturating_sub(at)).max(0) as f64 / 1000.0);
        sample(
            &mut out,
            WEBHOOK_LAG.name,
            &WEBHOOK_LAG.keys,
            &[e],
            "",
            &lag,
        );
    }
    out
}

const WEBHOOK_ATTEMPTS: Family<2> = Family {
    name: "facegate_webhook_deliveries_total",
    help: "Webhook delivery attempts by endpoint and outcome: delivered (a 2xx answer), failed (retried later), \
           gave_up (failed for the whole retry period).",
    keys: ["endpoint", "outcome"],
};
const WEBHOOK_PENDING: Family<1> = Family {
    name: "facegate_webhook_pending",
    help: "Webhook events not delivered yet, by endpoint (in the store: every replica's).",
    keys: ["endpoint"],
};
const WEBHOOK_LAG: Family<1> = Family {
    name: "facegate_webhook_lag_seconds",
    help:
        "Age of the oldest webhook event not delivered yet, by endpoint (0 when none is pending).",
    keys: ["endpoint"],
};

/// The text exposition of the vendors' circuit breakers: each vendor's state (one series per state, 1 for the
/// current one) and how often its breaker opened.
pub fn render_breakers(
    breakers: &[(
        crate::domain::Vendor,
        crate::domain::routing::BreakerState,
        u64,
    )],
) -> String {
    use crate::domain::routing::BreakerState;
    let mut out = String::new();
    family_header(&mut out, &BREAKER_STATE, "gauge");
    for (vendor, state, _) in breakers {
        for s in BreakerState::ALL {
            sample(
                &mut out,
                BREAKER_STATE.name,
                &BREAKER_STATE.keys,
                &[vendor.as_str(), s.as_str()],
                "",
                &u8::from(s == *state),
            );
        }
    }
    family_header(&mut out, &BREAKER_OPENED, "counter");
    for (vendor, _, opened) in breakers {
        sample(
            &mut out,
            BREAKER_OPENED.name,
            &BREAKER_OPENED.keys,
            &[vendor.as_str()],
            "",
            opened,
        );
    }
    out
}

const BREAKER_STATE: Family<2> = Family {
    name: "facegate_vendor_circuit_state",
    help: "Each vendor's circuit breaker, 1 for its current state (closed, open, half_open) and 0 for the others. \
           Routing skips a vendor whose breaker is open.",
    keys: ["vendor", "state"],
};
const BREAKER_OPENED: Family<1> = Family {
    name: "facegate_vendor_circuit_opened_total",
    help: "Times each vendor's circuit breaker opened.",
    keys: ["vendor"],
};

/// A metric family: name, help text and label names.
struct Family<const N: usize> {
    name: &'static str,
    help: &'static str,
    keys: [&'static str; N],
}

const RPC_REQUESTS: Family<3> = Family {
    name: "facegate_rpc_requests_total",
    help: "RPCs of facegate.v1.VerificationService handled, by method, gRPC status code and the caller's tenant.",
    keys: ["method", "code", "tenant"],
};
const RPC_DURATION: Family<3> = Family {
    name: "facegate_rpc_duration_seconds",
    help: "Time from an RPC's request to its final status (a status stream's whole life), by method, code and \
           tenant.",
    keys: ["method", "code", "tenant"],
};
const VENDOR_REQUESTS: Family<4> = Family {
    name: "facegate_vendor_requests_total",
    help: "HTTP calls to vendors, by vendor, endpoint, outcome (ok, http_4xx, http_5xx, http_other, timeout, \
           unreachable, error) and the tenant of the session they were made for (empty when none).",
    keys: ["vendor", "endpoint", "outcome", "tenant"],
};
const VENDOR_DURATION: Family<3> = Family {
    name: "facegate_vendor_request_duration_seconds",
    help:
        "Duration of vendor HTTP calls including reading the reply, by vendor, endpoint and tenant.",
    keys: ["vendor", "endpoint", "tenant"],
};
const VENDOR_BILLED: Family<2> = Family {
    name: "facegate_vendor_billed_total",
    help: "Billed vendor calls recorded in session outcomes, by vendor and tenant.",
    keys: ["vendor", "tenant"],
};
const AUTH_FAILURES: Family<1> = Family {
    name: "facegate_auth_failures_total",
    help: "gRPC requests refused by authentication or authorization, by reason (UNAUTHENTICATED, MISSING_SCOPE).",
    keys: ["reason"],
};
const UNMASKED_READS: Family<3> = Family {
    name: "facegate_unmasked_reads_total",
    help: "GetResult calls that returned unmasked data, by tenant, caller and kind (personal_data, face_image, \
           media).",
    keys: ["tenant", "caller", "kind"],
};
const SESSIONS: Family<1> = Family {
    name: "facegate_sessions",
    help: "Sessions in the store by state, counted at scrape time.",
    keys: ["state"],
};
const STREAMS_OPEN: Family<0> = Family {
    name: "facegate_status_streams_open",
    help: "StreamStatus streams open now.",
    keys: [],
};
const STATUS_POLLS: Family<2> = Family {
    name: "facegate_status_polls_total",
    help: "Result query requests sent to vendors for sessions waiting for the end user (scheduled polls, on-demand \
           refreshes, last checks), by vendor and result (pending, final, throttled, error).",
    keys: ["vendor", "result"],
};
const STATUS_POLL_QUEUE_DEPTH: Family<0> = Family {
    name: "facegate_status_poll_queue_depth",
    help: "Watched sessions whose next poll is due and waits for its turn in the vendor budget (recounted at most \
           twice a second).",
    keys: [],
};
const CALLBACKS: Family<3> = Family {
    name: "facegate_callbacks_total",
    help: "Vendor callbacks received, each arrival once, by vendor, source (notify: the vendor's server call; \
           return_relay: the signed form the browser posts to the return URL) and result (verified or rejected).",
    keys: ["vendor", "source", "result"],
};
const BUILD_INFO: Family<2> = Family {
    name: "facegate_build_info",
    help: "Always 1; the labels say which build runs: version and git commit (unknown when built without git).",
    keys: ["version", "git_commit"],
};

const QUOTA_LIMIT: Family<2> = Family {
    name: "facegate_quota_limit",
    help: "Configured per-tenant limits, by tenant and quota: rpc_rate (RPCs per second, per replica), open_streams \
           (per replica), billed_calls_per_day (UTC day, all replicas). Absent where there is no limit.",
    keys: ["tenant", "quota"],
};
const QUOTA_USAGE: Family<2> = Family {
    name: "facegate_quota_usage",
    help: "Use of each per-tenant quota now, by tenant and quota: rpc_rate (token bucket tokens taken and not yet \
           refilled), open_streams (StatusStreams open), billed_calls_per_day (vendor calls counted today, UTC, read \
           from the store at scrape time).",
    keys: ["tenant", "quota"],
};
const QUOTA_REJECTIONS: Family<2> = Family {
    name: "facegate_quota_rejections_total",
    help: "Requests refused with QUOTA_EXCEEDED, by tenant and quota.",
    keys: ["tenant", "quota"],
};

fn family_header<const N: usize>(out: &mut String, f: &Family<N>, kind: &str) {
    let _ = writeln!(out, "# HELP {} {}", f.name, f.help.replace('\\', "\\\\"));
    let _ = writeln!(out, "# TYPE {} {kind}", f.name);
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample line; `extra` is an additional `le="..."` label or empty.
fn sample(
    out: &mut String,
    name: &str,
    keys: &[&str],
    values: &[&str],
    extra: &str,
    value: &dyn std::fmt::Display,
) {
    out.push_str(name);
    let mut labels: Vec<String> = keys
        .iter()
        .zip(values)
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if !extra.is_empty() {
        labels.push(extra.to_owned());
    }
    if !labels.is_empty() {
        let _ = write!(out, "{{{}}}", labels.join(","));
    }
    let _ = writeln!(out, " {value}");
}

fn counter<const N: usize>(out: &mut String, f: &Family<N>, series: &[([&str; N], u64)]) {
    family_header(out, f, "counter");
    simple_samples(out, f, series);
}

fn gauge<const N: usize>(out: &mut String, f: &Family<N>, series: &[([&str; N], u64)]) {
    family_header(out, f, "gauge");
    simple_samples(out, f, series);
}

fn simple_samples<const N: usize>(out: &mut String, f: &Family<N>, series: &[([&str; N], u64)]) {
    for (labels, n) in series {
        sample(out, f.name, &f.keys, labels, "", n);
    }
}

fn histogram<const N: usize>(out: &mut String, f: &Family<N>, series: &[([&str; N], Histogram)]) {
    family_header(out, f, "histogram");
    let name = f.name;
    let bucket = format!("{name}_bucket");
    for (labels, h) in series {
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            sample(
                out,
                &bucket,
                &f.keys,
                labels,
                &format!("le=\"{le}\""),
                &cumulative,
            );
        }
        sample(out, &bucket, &f.keys, labels, "le=\"+Inf\"", &h.count);
        sample(out, &format!("{name}_sum"), &f.keys, labels, "", &h.sum);
        sample(out, &format!("{name}_count"), &f.keys, labels, "", &h.count);
    }
}

/// The process metrics of the Prometheus client libraries' process collector (same names and meaning), read from
/// `/proc/self` at scrape time. Elsewhere than Linux, and for any file that cannot be read, they are left out.
mod process {
    use std::fmt::Write as _;

    /// Clock ticks per second of `/proc/<pid>/stat` times: USER_HZ, which the kernel fixes at 100 for its user ABI.
    const TICKS_PER_SECOND: f64 = 100.0;

    pub(super) fn render(out: &mut String) {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(Stat::parse);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        if let Some(stat) = &stat {
            one(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                stat.cpu_ticks as f64 / TICKS_PER_SECOND,
            );
        }
        if let Some(kb) = status_kb(&status, "VmRSS:") {
            one(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                (kb * 1024) as f64,
            );
        }
        if let Some(kb) = status_kb(&status, "VmSize:") {
            one(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                (kb * 1024) as f64,
            );
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries listed.
            let open = dir.count().saturating_sub(1);
            one(
                out,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                open as f64,
            );
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l))
        {
            one(
                out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max as f64,
            );
        }
        if let (Some(stat), Some(boot)) = (&stat, boot_time) {
            one(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + stat.start_ticks as f64 / TICKS_PER_SECOND,
            );
        }
    }

    fn one(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }

    /// What `/proc/<pid>/stat` says: CPU time (user + system) and start time after boot, in clock ticks.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Stat {
        pub(super) cpu_ticks: u64,
        pub(super) start_ticks: u64,
    }

    impl Stat {
        /// Fields after the command name (which is in parentheses and may hold spaces or parentheses itself):
        /// utime is field 14, stime 15, starttime 22 (proc(5)).
        pub(super) fn parse(text: &str) -> Option<Self> {
            let (_, rest) = text.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // fields[0] is field 3 (state).
            let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
            Some(Self {
                cpu_ticks: field(14)?.checked_add(field(15)?)?,
                start_ticks: field(22)?,
            })
        }
    }

    /// A `Name:   N kB` line of `/proc/<pid>/status`.
    pub(super) fn status_kb(status: &str, name: &str) -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let mut words = line[name.len()..].split_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(n)
    }

    /// The soft limit of `Max open files` in `/proc/<pid>/limits` (`unlimited`: none reported).
    pub(super) fn max_open_files(limits: &str) -> Option<u64> {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// `btime` of `/proc/stat`: boot time in seconds since the epoch.
    pub(super) fn boot_time(stat: &str) -> Option<u64> {
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_files_are_read_as_proc5_describes_them() {
        let stat = "4242 (face gate) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123456 \
                    1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            process::Stat::parse(stat),
            Some(process::Stat {
                cpu_ticks: 325,
                start_ticks: 123456
            })
        );
        assert_eq!(process::Stat::parse("4242 (x"), None);
        assert_eq!(process::Stat::parse("4242 (x) S 1 2"), None);
        let status = "Name:\tfacegate\nVmSize:\t  123456 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(process::status_kb(status, "VmRSS:"), Some(20480));
        assert_eq!(process::status_kb(status, "VmSize:"), Some(123456));
        assert_eq!(process::status_kb(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(process::max_open_files(limits), Some(1024));
        assert_eq!(
            process::max_open_files("Max open files  unlimited unlimited files\n"),
            None
        );
        assert_eq!(
            process::boot_time("cpu  1 2 3\nbtime 1764640000\nprocesses 9\n"),
            Some(1764640000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn build_info_and_process_metrics_are_rendered() {
        let text = Metrics::new().render(&[]);
        let l = lines(&text);
        assert!(l.contains(&"# TYPE facegate_build_info gauge"));
        assert!(l.contains(
            &format!(
                "facegate_build_info{{version=\"{}\",git_commit=\"{GIT_COMMIT}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        ));
        assert!(
            GIT_COMMIT == "unknown"
                || (GIT_COMMIT.len() >= 7 && GIT_COMMIT.bytes().all(|b| b.is_ascii_hexdigit())),
            "{GIT_COMMIT}"
        );
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        assert!(l.contains(&"# TYPE process_cpu_seconds_total counter"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_open_fds") <= value("process_max_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn counters_and_gauges_render_in_text_format() {
        let m = Metrics::new();
        m.register_tenants(["shop"]);
        m.rpc("StartSession", "OK", "shop", Duration::from_millis(20));
        m.rpc("StartSession", "OK", "shop", Duration::from_millis(30));
        m.rpc("GetResult", "NOT_FOUND", "ledger", Duration::from_millis(1));
        m.billed("juhe", "shop", 1);
        m.auth_failure("UNAUTHENTICATED");
        m.unmasked_read("shop", "orders", "personal_data");
        m.callback("megvii", CallbackSource::Notify, false);
        m.callback("megvii", CallbackSource::ReturnRelay, true);
        let guard = m.stream_opened();
        let text = m.render(&[("VERIFIED", 2), ("FAILED", 0)]);
        let l = lines(&text);
        assert!(l.contains(&"# TYPE facegate_rpc_requests_total counter"));
        assert!(l.contains(
            &"facegate_rpc_requests_total{method=\"StartSession\",code=\"OK\",tenant=\"shop\"} 2"
        ));
        assert!(l.contains(
            &"facegate_rpc_requests_total{method=\"GetResult\",code=\"NOT_FOUND\",tenant=\"ledger\"} 1"
        ));
        assert!(l.contains(&"facegate_vendor_billed_total{vendor=\"juhe\",tenant=\"shop\"} 1"));
        assert!(l.contains(&"facegate_vendor_billed_total{vendor=\"baidu\",tenant=\"shop\"} 0"));
        assert!(l.contains(&"facegate_auth_failures_total{reason=\"UNAUTHENTICATED\"} 1"));
        assert!(l.contains(
            &"facegate_unmasked_reads_total{tenant=\"shop\",caller=\"orders\",kind=\"personal_data\"} 1"
        ));
        assert!(l.contains(
            &"facegate_callbacks_total{vendor=\"megvii\",source=\"notify\",result=\"rejected\"} 1"
        ));
        assert!(l.contains(
            &"facegate_callbacks_total{vendor=\"megvii\",source=\"notify\",result=\"verified\"} 0"
        ));
        assert!(l.contains(
            &"facegate_callbacks_total{vendor=\"megvii\",source=\"return_relay\",result=\"verified\"} 1"
        ));
        assert!(l.contains(
            &"facegate_callbacks_total{vendor=\"megvii\",source=\"return_relay\",result=\"rejected\"} 0"
        ));
        assert!(l.contains(&"facegate_sessions{state=\"VERIFIED\"} 2"));
        assert!(l.contains(&"facegate_status_streams_open 1"));
        drop(guard);
        assert!(m.render(&[]).contains("\nfacegate_status_streams_open 0\n"));
    }

    #[test]
    fn status_polls_count_requests_by_result_and_the_queue_depth_is_a_gauge() {
        let m = Metrics::new();
        let text = m.render(&[]);
        let l = lines(&text);
        assert!(l.contains(&"facegate_status_polls_total{vendor=\"baidu\",result=\"pending\"} 0"));
        assert!(l.contains(&"facegate_status_poll_queue_depth 0"));
        m.status_polls("baidu", "final", 2);
        m.set_status_poll_queue_depth(7);
        let text = m.render(&[]);
        let l = lines(&text);
        assert!(l.contains(&"facegate_status_polls_total{vendor=\"baidu\",result=\"final\"} 2"));
        assert!(l.contains(&"# TYPE facegate_status_poll_queue_depth gauge"));
        assert!(l.contains(&"facegate_status_poll_queue_depth 7"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let m = Metrics::new();
        let calls = async {
            for ms in [3, 40, 40, 700, 4_000_000] {
                m.vendor_request("juhe", "verifyface/verify", "ok", Duration::from_millis(ms));
            }
        };
        futures_util::FutureExt::now_or_never(for_tenant("shop", calls)).unwrap();
        let text = m.render(&[]);
        let bucket = |le: &str| {
            let prefix = format!(
                "facegate_vendor_request_duration_seconds_bucket{{vendor=\"juhe\",endpoint=\"verifyface/verify\",tenant=\"shop\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(bucket("0.005"), Some(1));
        assert_eq!(bucket("0.05"), Some(3));
        assert_eq!(bucket("1"), Some(4));
        assert_eq!(bucket("1800"), Some(4), "4000 s is above every bound");
        assert_eq!(bucket("+Inf"), Some(5));
        assert!(text.contains(
            "facegate_vendor_request_duration_seconds_count{vendor=\"juhe\",endpoint=\"verifyface/verify\",tenant=\"shop\"} 5\n"
        ));
        assert!(text.contains(
            "facegate_vendor_requests_total{vendor=\"juhe\",endpoint=\"verifyface/verify\",outcome=\"ok\",tenant=\"shop\"} 5\n"
        ));
    }

    #[test]
    fn quotas_render_limits_where_set_usage_and_rejections() {
        use crate::domain::quota::QuotaUsage;
        let rows = [
            QuotaUsage {
                tenant: "shop".into(),
                quota: "rpc_rate",
                limit: Some(2.5),
                usage: Some(1.0),
                rejections: 3,
            },
            QuotaUsage {
                tenant: "shop".into(),
                quota: "billed_calls_per_day",
                limit: None,
                usage: None,
                rejections: 0,
            },
        ];
        let text = render_quotas(&rows);
        let l = lines(&text);
        assert!(l.contains(&"# TYPE facegate_quota_limit gauge"));
        assert!(l.contains(&"facegate_quota_limit{tenant=\"shop\",quota=\"rpc_rate\"} 2.5"));
        assert!(l.contains(&"facegate_quota_usage{tenant=\"shop\",quota=\"rpc_rate\"} 1"));
        assert!(l.contains(
            &"facegate_quota_rejections_total{tenant=\"shop\",quota=\"billed_calls_per_day\"} 0"
        ));
        assert!(
            !text.contains("facegate_quota_limit{tenant=\"shop\",quota=\"billed_calls_per_day\"}"),
            "no limit series without a limit"
        );
        assert!(
            !text.contains("facegate_quota_usage{tenant=\"shop\",quota=\"billed_calls_per_day\"}")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
