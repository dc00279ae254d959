//! Per-tenant quotas (`auth.default_quota`, `auth.quotas.<tenant>`; 0 is no limit):
//!
//! - `rpc_rate`: a token bucket per tenant and replica (`rpc_per_second` refill, `rpc_burst` size), checked once
//!   per RPC by [`Quotas::check_rpc`];
//! - `open_streams`: StatusStreams open at once per tenant and replica, each holding a [`StreamGuard`] that gives its
//!   slot back when dropped (the stream ended, failed or its client went away);
//! - `billed_calls_per_day`: vendor calls claimed per tenant and UTC day, counted in the store
//!   ([`SessionStore::reserve_billed_call`]) so that the cap holds across restarts and across replicas.
//!
//! A refusal is [`Error::QuotaExceeded`]. Tenants come from config, so the per-tenant state and the metric series
//! are bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::Error;
use crate::config::{AuthConfig, QuotaConfig};
use crate::store::SessionStore;

/// The RPC rate quota.
pub const RPC_RATE: &str = "rpc_rate";
/// The open StatusStreams quota.
pub const OPEN_STREAMS: &str = "open_streams";
/// The daily billed vendor calls quota.
pub const BILLED_CALLS_PER_DAY: &str = "billed_calls_per_day";
/// Every quota, in the order metrics list them.
pub const QUOTAS: [&str; 3] = [RPC_RATE, OPEN_STREAMS, BILLED_CALLS_PER_DAY];

const DAY_MS: i64 = 86_400_000;

/// The UTC day of a time: whole days since 1970-01-01.
pub fn utc_day(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

/// How long from `now_ms` until the next UTC midnight.
pub fn until_next_utc_day(now_ms: i64) -> Duration {
    let next = (utc_day(now_ms) + 1).saturating_mul(DAY_MS);
    Duration::from_millis(u64::try_from(next.saturating_sub(now_ms)).unwrap_or(0))
}

/// The limits of one tenant; 0 (or 0.0) is no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Token bucket refill, per second.
    pub rpc_per_second: f64,
    /// Token bucket size; 0 with a rate is one second's worth (at least one token).
    pub rpc_burst: u32,
    /// Most StatusStreams open at once.
    pub max_open_streams: u32,
    /// Most billed vendor calls per UTC day.
    pub billed_calls_per_day: u64,
}

impl From<&QuotaConfig> for Limits {
    fn from(q: &QuotaConfig) -> Self {
        Self {
            // Config validation refuses a negative or non-finite rate; anything else not above 0 is no limit.
            rpc_per_second: if q.rpc_per_second.is_finite() && q.rpc_per_second > 0.0 {
                q.rpc_per_second
            } else {
                0.0
            },
            rpc_burst: q.rpc_burst,
            max_open_streams: q.max_open_streams,
            billed_calls_per_day: q.billed_calls_per_day,
        }
    }
}

impl Limits {
    /// No limits.
    pub const NONE: Limits = Limits {
        rpc_per_second: 0.0,
        rpc_burst: 0,
        max_open_streams: 0,
        billed_calls_per_day: 0,
    };

    /// The token bucket's size, when the rate is limited.
    fn bucket_size(&self) -> Option<f64> {
        (self.rpc_per_second > 0.0).then(|| {
            if self.rpc_burst > 0 {
                f64::from(self.rpc_burst)
            } else {
                self.rpc_per_second.ceil().max(1.0)
            }
        })
    }

    /// The configured limit of a quota, `None` when it has none.
    pub fn limit(&self, quota: &str) -> Option<f64> {
        let value = match quota {
            RPC_RATE => self.rpc_per_second,
            OPEN_STREAMS => f64::from(self.max_open_streams),
            BILLED_CALLS_PER_DAY => self.billed_calls_per_day as f64,
            _ => 0.0,
        };
        (value > 0.0).then_some(value)
    }
}

/// A token bucket: `size` tokens, refilled at `rate` per second, one taken per RPC.
#[derive(Debug)]
struct Bucket {
    size: f64,
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(size: f64, rate: f64, now: Instant) -> Self {
        Self {
            size,
            rate,
            tokens: size,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.size);
        self.at = self.at.max(now);
    }

    /// Takes a token, or says how long until one is free.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.rate;
        // At least a millisecond, so that a RetryInfo never says "now".
        Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
    }

    /// Tokens taken and not yet refilled.
    fn in_use(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.size - self.tokens
    }
}

/// The quota state of one tenant on this replica.
#[derive(Debug)]
struct Tenant {
    name: String,
    limits: Limits,
    bucket: Option<Mutex<Bucket>>,
    open_streams: AtomicU32,
    /// Refusals by quota, in the order of [`QUOTAS`].
    rejections: [AtomicU64; 3],
}

impl Tenant {
    fn new(name: &str, limits: Limits, now: Instant) -> Self {
        Self {
            name: name.to_owned(),
            limits,
            bucket: limits
                .bucket_size()
                .map(|size| Mutex::new(Bucket::new(size, limits.rpc_per_second, now))),
            open_streams: AtomicU32::new(0),
            rejections: Default::default(),
        }
    }

    fn refuse(&self, quota: &'static str, limit: String, retry_after: Option<Duration>) -> Error {
        if let Some(i) = QUOTAS.iter().position(|q| *q == quota) {
            self.rejections[i].fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(tenant = %self.name, quota, "quota exceeded");
        Error::QuotaExceeded {
            tenant: self.name.clone(),
            quota,
            limit,
            retry_after,
        }
    }
}

/// A limit as text: whole numbers without a fraction.
fn format_limit(limit: f64) -> String {
    if limit.fract() == 0.0 && limit.abs() < 1e15 {
        format!("{}", limit as i64)
    } else {
        format!("{limit}")
    }
}

/// Keeps a StatusStream's slot of its tenant's `open_streams` quota while it lives.
#[derive(Debug)]
#[must_use = "the stream's slot is given back when the guard drops"]
pub struct StreamGuard {
    tenant: Arc<Tenant>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.tenant.open_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One billed call reserved in the store by [`Quotas::reserve_billed_call`]. When the call it was reserved for is
/// not claimed after all, give it back with [`BilledCall::release`].
#[derive(Debug)]
#[must_use = "a reservation whose call is not made is given back with release"]
pub struct BilledCall {
    tenant: String,
    day: i64,
}

impl BilledCall {
    /// Gives the reservation back (its call was not claimed). A store failure leaves the call counted: the cap errs
    /// on the side of fewer vendor calls.
    pub async fn release(self, store: &dyn SessionStore) {
        if let Err(e) = store.release_billed_call(&self.tenant, self.day).await {
            tracing::warn!(tenant = %self.tenant, error = %e, "cannot give back an unused billed-call reservation");
        }
    }
}

/// Usage of one quota of one tenant, for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaUsage {
    /// The tenant.
    pub tenant: String,
    /// The quota ([`QUOTAS`]).
    pub quota: &'static str,
    /// Its limit; `None` when it has none.
    pub limit: Option<f64>,
    /// What is used now: RPC tokens taken and not yet refilled, streams open, billed calls today (`None` when the
    /// store could not be read).
    pub usage: Option<f64>,
    /// Requests refused by this quota since the process started.
    pub rejections: u64,
}

/// Every tenant's quotas on this replica.
#[derive(Debug)]
pub struct Quotas {
    default: Limits,
    configured: BTreeMap<String, Limits>,
    tenants: Mutex<BTreeMap<String, Arc<Tenant>>>,
}

impl Default for Quotas {
    fn default() -> Self {
        Self::unlimited()
    }
}

impl Quotas {
    /// No limits for anyone (billed calls are still counted).
    pub fn unlimited() -> Self {
        Self {
            default: Limits::NONE,
            configured: BTreeMap::new(),
            tenants: Mutex::new(BTreeMap::new()),
        }
    }

    /// The quotas of `auth`: `auth.quotas.<tenant>`, else `auth.default_quota`. The tenants of the quotas, of the
    /// callers and the default tenant are known from the start (metrics list them all).
    pub fn new(auth: &AuthConfig) -> Self {
        let quotas = Self {
            default: Limits::from(&auth.default_quota),
            configured: auth
                .quotas
                .iter()
                .map(|(t, q)| (t.clone(), Limits::from(q)))
                .collect(),
            tenants: Mutex::new(BTreeMap::new()),
        };
        let known = auth
            .quotas
            .keys()
            .map(String::as_str)
            .chain(auth.callers.iter().map(|c| c.tenant.as_str()))
            .chain(std::iter::once(auth.default_tenant.as_str()))
            .filter(|t| !t.is_empty());
        for tenant in known {
            quotas.tenant(tenant);
        }
        quotas
    }

    /// The limits of a tenant.
    pub fn limits(&self, tenant: &str) -> Limits {
        self.configured.get(tenant).copied().unwrap_or(self.default)
    }

    fn tenant(&self, name: &str) -> Arc<Tenant> {
        self.tenant_at(name, Instant::now())
    }

    /// A tenant's state, made at `now` (its bucket full) when it is new.
    fn tenant_at(&self, name: &str, now: Instant) -> Arc<Tenant> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tenants.get(name) {
            return Arc::clone(t);
        }
        let t = Arc::new(Tenant::new(name, self.limits(name), now));
        tenants.insert(name.to_owned(), Arc::clone(&t));
        t
    }

    /// Takes one RPC token of `tenant`; the auth layer calls this once per request. Refused with
    /// [`Error::QuotaExceeded`] (`rpc_rate`, retry after the next token is free) when the bucket is empty.
    pub fn check_rpc(&self, tenant: &str) -> Result<(), Error> {
        self.check_rpc_at(tenant, Instant::now())
    }

    fn check_rpc_at(&self, tenant: &str, now: Instant) -> Result<(), Error> {
        let t = self.tenant_at(tenant, now);
        let Some(bucket) = &t.bucket else {
            return Ok(());
        };
        let taken = bucket.lock().unwrap_or_else(|p| p.into_inner()).take(now);
        taken.map_err(|wait| t.refuse(RPC_RATE, format_limit(t.limits.rpc_per_second), Some(wait)))
    }

    /// Opens a StatusStream of `tenant`: refused with [`Error::QuotaExceeded`] (`open_streams`, no RetryInfo) when
    /// `max_open_streams` are open; otherwise the slot is held until the guard drops.
    pub fn open_stream(&self, tenant: &str) -> Result<StreamGuard, Error> {
        let t = self.tenant(tenant);
        let max = t.limits.max_open_streams;
        let opened = t
            .open_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then(|| n.saturating_add(1))
            });
        match opened {
            Ok(_) => Ok(StreamGuard { tenant: t }),
            Err(_) => Err(t.refuse(OPEN_STREAMS, max.to_string(), None)),
        }
    }

    /// Reserves one billed vendor call of `tenant` for today (UTC) in the store, before the call is claimed.
    /// Refused with [`Error::QuotaExceeded`] (`billed_calls_per_day`, retry after the next UTC midnight) when the
    /// day's cap is reached; without a cap the call is counted and never refused.
    pub async fn reserve_billed_call(
        &self,
        store: &dyn SessionStore,
        tenant: &str,
        now_ms: i64,
    ) -> Result<BilledCall, Error> {
        let (day, limit) = self.billed_call_limit(tenant, now_ms);
        let reserved = store
            .reserve_billed_call(tenant, day, limit)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "session store failure reserving a billed call");
                Error::Store
            })?;
        if reserved {
            Ok(BilledCall {
                tenant: tenant.to_owned(),
                day,
            })
        } else {
            Err(self.billed_call_refused(tenant, now_ms))
        }
    }

    /// What a billed call of `tenant` at `now_ms` is reserved under (for a store write that reserves it itself):
    /// the UTC day, and the day's cap (`None`: counted, never refused).
    pub fn billed_call_limit(&self, tenant: &str, now_ms: i64) -> (i64, Option<u64>) {
        let cap = self.tenant(tenant).limits.billed_calls_per_day;
        (utc_day(now_ms), (cap > 0).then_some(cap))
    }

    /// The refusal of a billed call of `tenant` at `now_ms` whose day's cap is reached: [`Error::QuotaExceeded`]
    /// (`billed_calls_per_day`, retry after the next UTC midnight), counted.
    pub fn billed_call_refused(&self, tenant: &str, now_ms: i64) -> Error {
        let t = self.tenant(tenant);
        t.refuse(
            BILLED_CALLS_PER_DAY,
            t.limits.billed_calls_per_day.to_string(),
            Some(until_next_utc_day(now_ms)),
        )
    }

    /// Limits, usage and refusals of every known tenant and quota (billed calls of today read from the store).
    pub async fn usage(&self, store: &dyn SessionStore, now_ms: i64) -> Vec<QuotaUsage> {
        let billed: Option<BTreeMap<String, u64>> = match store.billed_calls(utc_day(now_ms)).await
        {
            Ok(rows) => Some(rows.into_iter().collect()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read billed calls for /metrics");
                None
            }
        };
        let tenants: Vec<Arc<Tenant>> = self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        let mut out = Vec::with_capacity(tenants.len() * QUOTAS.len());
        for t in tenants {
            for (i, quota) in QUOTAS.into_iter().enumerate() {
                let usage = match quota {
                    RPC_RATE => Some(t.bucket.as_ref().map_or(0.0, |b| {
                        b.lock().unwrap_or_else(|p| p.into_inner()).in_use(now)
                    })),
                    OPEN_STREAMS => Some(f64::from(t.open_streams.load(Ordering::Acquire))),
                    _ => billed
                        .as_ref()
                        .map(|b| b.get(&t.name).copied().unwrap_or(0) as f64),
                };
                out.push(QuotaUsage {
                    tenant: t.name.clone(),
                    quota,
                    limit: t.limits.limit(quota),
                    usage,
                    rejections: t.rejections[i].load(Ordering::Relaxed),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuotaConfig;

    fn auth(default: QuotaConfig, tenants: &[(&str, QuotaConfig)]) -> AuthConfig {
        AuthConfig {
            default_quota: default,
            quotas: tenants
                .iter()
                .map(|(t, q)| ((*t).to_owned(), q.clone()))
                .collect(),
            ..AuthConfig::default()
        }
    }

    fn rate(rpc_per_second: f64, rpc_burst: u32) -> QuotaConfig {
        QuotaConfig {
            rpc_per_second,
            rpc_burst,
            ..QuotaConfig::default()
        }
    }

    fn refusal(e: Error) -> (String, &'static str, String, Option<Duration>) {
        match e {
            Error::QuotaExceeded {
                tenant,
                quota,
                limit,
                retry_after,
            } => (tenant, quota, limit, retry_after),
            other => panic!("not a quota refusal: {other:?}"),
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate_and_says_when_a_token_is_free() {
        let q = Quotas::new(&auth(rate(2.0, 3), &[]));
        let t0 = Instant::now();
        for _ in 0..3 {
            q.check_rpc_at("shop", t0).unwrap();
        }
        let (tenant, quota, limit, retry) = refusal(q.check_rpc_at("shop", t0).unwrap_err());
        assert_eq!(
            (tenant.as_str(), quota, limit.as_str()),
            ("shop", RPC_RATE, "2")
        );
        assert_eq!(retry, Some(Duration::from_millis(500)), "one token at 2/s");
        // A quarter second later half a token has come back: a quarter second to go.
        let t1 = t0 + Duration::from_millis(250);
        let (_, _, _, retry) = refusal(q.check_rpc_at("shop", t1).unwrap_err());
        assert_eq!(retry, Some(Duration::from_millis(250)));
        let t2 = t0 + Duration::from_millis(500);
        q.check_rpc_at("shop", t2).unwrap();
        assert!(q.check_rpc_at("shop", t2).is_err());
        // Idle for long, the bucket holds no more than its size.
        let t3 = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            q.check_rpc_at("shop", t3).unwrap();
        }
        assert!(q.check_rpc_at("shop", t3).is_err());
    }

    #[test]
    fn burst_zero_is_one_seconds_worth_and_at_least_one_token() {
        let q = Quotas::new(&auth(rate(5.0, 0), &[("slow", rate(0.5, 0))]));
        let t0 = Instant::now();
        for _ in 0..5 {
            q.check_rpc_at("a", t0).unwrap();
        }
        assert!(q.check_rpc_at("a", t0).is_err());
        q.check_rpc_at("slow", t0).unwrap();
        let (_, _, limit, retry) = refusal(q.check_rpc_at("slow", t0).unwrap_err());
        assert_eq!(limit, "0.5");
        assert_eq!(retry, Some(Duration::from_secs(2)));
    }

    #[test]
    fn tenants_have_their_own_buckets_and_zero_is_no_limit() {
        let q = Quotas::new(&auth(rate(1.0, 1), &[("free", QuotaConfig::default())]));
        let t0 = Instant::now();
        q.check_rpc_at("a", t0).unwrap();
        assert!(q.check_rpc_at("a", t0).is_err());
        q.check_rpc_at("b", t0).unwrap();
        for _ in 0..1000 {
            q.check_rpc_at("free", t0).unwrap();
        }
        let unlimited = Quotas::unlimited();
        for _ in 0..1000 {
            unlimited.check_rpc_at("x", t0).unwrap();
            drop(unlimited.open_stream("x").unwrap());
        }
    }

    #[test]
    fn stream_slots_are_given_back_when_guards_drop() {
        let limits = QuotaConfig {
            max_open_streams: 2,
            ..QuotaConfig::default()
        };
        let q = Quotas::new(&auth(limits, &[]));
        let a = q.open_stream("shop").unwrap();
        let b = q.open_stream("shop").unwrap();
        let (tenant, quota, limit, retry) = refusal(q.open_stream("shop").unwrap_err());
        assert_eq!(
            (tenant.as_str(), quota, limit.as_str()),
            ("shop", OPEN_STREAMS, "2")
        );
        assert_eq!(retry, None, "waiting does not free a stream");
        let other = q.open_stream("other").unwrap();
        drop(a);
        let c = q.open_stream("shop").unwrap();
        assert!(q.open_stream("shop").is_err());
        drop((b, c, other));
        let _d = q.open_stream("shop").unwrap();
    }

    #[test]
    fn days_are_utc_and_retry_points_at_the_next_midnight() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(DAY_MS - 1), 0);
        assert_eq!(utc_day(DAY_MS), 1);
        assert_eq!(utc_day(-1), -1);
        assert_eq!(until_next_utc_day(DAY_MS - 1), Duration::from_millis(1));
        assert_eq!(
            until_next_utc_day(DAY_MS),
            Duration::from_millis(86_400_000)
        );
        assert_eq!(
            until_next_utc_day(DAY_MS * 3 + 3_600_000),
            Duration::from_secs(23 * 3600)
        );
    }

    #[test]
    fn limits_come_from_the_tenant_entry_else_the_default() {
        let q = Quotas::new(&AuthConfig {
            callers: vec![crate::config::CallerConfig {
                id: "orders".into(),
                tenant: "shop".into(),
                ..Default::default()
            }],
            ..auth(
                QuotaConfig {
                    billed_calls_per_day: 10,
                    ..QuotaConfig::default()
                },
                &[(
                    "big",
                    QuotaConfig {
                        billed_calls_per_day: 1000,
                        max_open_streams: 5,
                        ..QuotaConfig::default()
                    },
                )],
            )
        });
        assert_eq!(q.limits("big").billed_calls_per_day, 1000);
        assert_eq!(q.limits("shop").billed_calls_per_day, 10);
        assert_eq!(q.limits("shop").limit(OPEN_STREAMS), None);
        assert_eq!(q.limits("big").limit(OPEN_STREAMS), Some(5.0));
        let known: Vec<String> = q.tenants.lock().unwrap().keys().cloned().collect();
        assert_eq!(
            known,
            ["big", "default", "shop"],
            "quota, default and caller tenants"
        );
    }
}
