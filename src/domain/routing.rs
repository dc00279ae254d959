//! Routing of sessions whose request leaves the vendor to facegate (`VENDOR_UNSPECIFIED`): the tenant's policy (or
//! the default one; without any, every configured vendor with equal weight) gives weighted candidates, the request
//! filters them (see [`super::service`]), the per-vendor circuit breakers drop the unhealthy ones, and a weighted
//! draw orders the rest: the first is tried, the others are the failover order.
//!
//! A breaker opens after [`BreakerSettings::consecutive_failures`] failures in a row, or when more than
//! [`BreakerSettings::failure_ratio`] of at least [`BreakerSettings::min_calls`] calls in the last
//! [`BreakerSettings::window`] failed; after [`BreakerSettings::open_for`] it lets one probe through (half-open):
//! the probe's success closes it, its failure opens it again. Answers that are the user's fault (rejected input,
//! no record of the ID number) do not count. Every call to a vendor feeds its breaker, whether the session was
//! routed or named the vendor; only routing consults it (a request that names a vendor is served as before).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::VendorErrorKind;
use super::Vendor;

/// A candidate vendor and its weight (> 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weighted {
    /// The vendor.
    pub vendor: Vendor,
    /// Its share of the draw, relative to the other candidates'.
    pub weight: u32,
}

/// The configured routing policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    /// Per tenant.
    pub tenants: BTreeMap<String, Vec<Weighted>>,
    /// For tenants without their own; `None`: every configured vendor, equal weights.
    pub default: Option<Vec<Weighted>>,
}

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Failures in a row that open it.
    pub consecutive_failures: u32,
    /// Share of failed calls in the window above which it opens...
    pub failure_ratio: f64,
    /// ...once the window holds at least this many calls.
    pub min_calls: u32,
    /// The window.
    pub window: Duration,
    /// How long it stays open before one probe may pass.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
        }
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are kept away until the open period ends.
    Open,
    /// The open period ended: one probe may pass (or is under way).
    HalfOpen,
}

impl BreakerState {
    /// Every state.
    pub const ALL: [BreakerState; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// How a vendor call ended, for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallHealth {
    /// The vendor answered.
    Ok,
    /// The vendor failed (unreachable, timed out, overloaded, broken answer, account trouble).
    Failed,
    /// The vendor answered that the user's input is at fault: says nothing about the vendor's health.
    UsersFault,
}

impl CallHealth {
    /// What an error of `kind` says about the vendor.
    pub fn of_error(kind: VendorErrorKind) -> Self {
        match kind {
            VendorErrorKind::RejectedInput
            | VendorErrorKind::NoRecord
            | VendorErrorKind::ResultExpired => Self::UsersFault,
            VendorErrorKind::RateLimited
            | VendorErrorKind::Unavailable
            | VendorErrorKind::DataSourceTimeout
            | VendorErrorKind::AccountError
            | VendorErrorKind::Unreachable
            | VendorErrorKind::Timeout
            | VendorErrorKind::ProtocolError => Self::Failed,
        }
    }
}

#[derive(Debug)]
struct Breaker {
    /// Open until then (`Some`), after which it is half-open.
    open_until: Option<Instant>,
    /// Since when a half-open breaker's probe is under way (a probe not heard of within the open period is taken
    /// to be lost, e.g. a routed session that never made its call, and another may go).
    probing: Option<Instant>,
    consecutive: u32,
    /// Recent calls and failures.
    window: CallWindow,
    opened: u64,
}

/// Buckets a [`CallWindow`] divides its window into.
const WINDOW_BUCKETS: u32 = 100;

/// The calls and failures of the last `window`, counted in [`WINDOW_BUCKETS`] buckets with running totals: one
/// call costs O(1) and the memory is bounded whatever the call rate. (A list of every call, counted again at each
/// call, took 1.7% of the CPU of a StartSession load at 4.7k sessions/s, under the breakers' one lock.) A bucket
/// leaves the window once its first call is older than the window, so a call is counted for at most one bucket
/// (a hundredth of the window) longer than the window.
#[derive(Debug, Default)]
struct CallWindow {
    /// Oldest first: when each bucket's first call was made, its calls and its failures.
    buckets: VecDeque<(Instant, u32, u32)>,
    calls: u64,
    failures: u64,
}

impl CallWindow {
    /// Counts a call made at `now` and drops what is older than `window`.
    fn push(&mut self, now: Instant, failed: bool, window: Duration) {
        let width = (window / WINDOW_BUCKETS).max(Duration::from_millis(1));
        let failure = u32::from(failed);
        match self.buckets.back_mut() {
            Some((start, calls, failures)) if now.saturating_duration_since(*start) < width => {
                *calls = calls.saturating_add(1);
                *failures = failures.saturating_add(failure);
            }
            _ => self.buckets.push_back((now, 1, failure)),
        }
        self.calls += 1;
        self.failures += u64::from(failure);
        while let Some(&(start, calls, failures)) = self.buckets.front() {
            if now.saturating_duration_since(start) <= window {
                break;
            }
            self.buckets.pop_front();
            self.calls -= u64::from(calls);
            self.failures -= u64::from(failures);
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Breaker {
    fn new() -> Self {
        Self {
            open_until: None,
            probing: None,
            consecutive: 0,
            window: CallWindow::default(),
            opened: 0,
        }
    }

    fn probe_under_way(&self, now: Instant, settings: &BreakerSettings) -> bool {
        self.probing
            .is_some_and(|since| now.duration_since(since) < settings.open_for)
    }

    fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn open(&mut self, now: Instant, settings: &BreakerSettings) {
        self.open_until = Some(now + settings.open_for);
        self.probing = None;
        self.consecutive = 0;
        self.window.clear();
        self.opened += 1;
    }

    fn close(&mut self) {
        self.open_until = None;
        self.probing = None;
        self.consecutive = 0;
        self.window.clear();
    }
}

/// The breakers of the three vendors.
pub struct Breakers {
    settings: BreakerSettings,
    inner: Mutex<[Breaker; 3]>,
}

fn slot(vendor: Vendor) -> usize {
    match vendor {
        Vendor::Baidu => 0,
        Vendor::Megvii => 1,
        Vendor::Juhe => 2,
    }
}

/// Every vendor, in the breakers' order.
const VENDORS: [Vendor; 3] = [Vendor::Baidu, Vendor::Megvii, Vendor::Juhe];

impl Breakers {
    /// Closed breakers with `settings`.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new([Breaker::new(), Breaker::new(), Breaker::new()]),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Breaker; 3]> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether routing may send a session to `vendor` now: closed, or half-open with no probe under way.
    pub fn available(&self, vendor: Vendor) -> bool {
        self.available_at(vendor, Instant::now())
    }

    fn available_at(&self, vendor: Vendor, now: Instant) -> bool {
        let breakers = self.lock();
        let b = &breakers[slot(vendor)];
        match b.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !b.probe_under_way(now, &self.settings),
        }
    }

    /// Routing chose `vendor`: a half-open breaker's one probe is now under way. False when another took it first.
    pub fn take(&self, vendor: Vendor) -> bool {
        self.take_at(vendor, Instant::now())
    }

    fn take_at(&self, vendor: Vendor, now: Instant) -> bool {
        let settings = self.settings;
        let mut breakers = self.lock();
        let b = &mut breakers[slot(vendor)];
        match b.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if b.probe_under_way(now, &settings) => false,
            BreakerState::HalfOpen => {
                b.probing = Some(now);
                true
            }
        }
    }

    /// Counts one call to `vendor`.
    pub fn record(&self, vendor: Vendor, health: CallHealth) {
        self.record_at(vendor, health, Instant::now())
    }

    fn record_at(&self, vendor: Vendor, health: CallHealth, now: Instant) {
        let settings = self.settings;
        let mut breakers = self.lock();
        let b = &mut breakers[slot(vendor)];
        match (b.state(now), health) {
            // The vendor answered: a probe's answer closes the breaker.
            (BreakerState::HalfOpen, CallHealth::Ok | CallHealth::UsersFault) => b.close(),
            (BreakerState::HalfOpen, CallHealth::Failed) => b.open(now, &settings),
            // Calls still under way when it opened say nothing new.
            (BreakerState::Open, _) => {}
            (BreakerState::Closed, CallHealth::UsersFault) => {}
            (BreakerState::Closed, health) => {
                let failed = health == CallHealth::Failed;
                b.consecutive = if failed { b.consecutive + 1 } else { 0 };
                b.window.push(now, failed, settings.window);
                let (calls, failures) = (b.window.calls, b.window.failures);
                let ratio_trips = calls >= u64::from(settings.min_calls)
                    && failures as f64 > settings.failure_ratio * calls as f64;
                if b.consecutive >= settings.consecutive_failures || ratio_trips {
                    b.open(now, &settings);
                    tracing::warn!(
                        vendor = vendor.as_str(),
                        open_secs = settings.open_for.as_secs(),
                        "circuit breaker opened: routing skips this vendor"
                    );
                }
            }
        }
    }

    /// Every vendor's state and how often its breaker opened, for `/metrics`.
    pub fn snapshot(&self) -> Vec<(Vendor, BreakerState, u64)> {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> Vec<(Vendor, BreakerState, u64)> {
        let breakers = self.lock();
        VENDORS
            .iter()
            .map(|v| {
                let b = &breakers[slot(*v)];
                (*v, b.state(now), b.opened)
            })
            .collect()
    }
}

/// The policies and the breakers.
pub struct Router {
    policies: Policies,
    breakers: Breakers,
}

impl Router {
    /// A router over `policies` with breakers of `settings`.
    pub fn new(policies: Policies, settings: BreakerSettings) -> Self {
        Self {
            policies,
            breakers: Breakers::new(settings),
        }
    }

    /// The breakers.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// The weighted candidates for `tenant` among the `configured` vendors: the tenant's policy, else the default
    /// policy, else every configured vendor with weight 1.
    pub fn candidates(&self, tenant: &str, configured: &[Vendor]) -> Vec<Weighted> {
        let policy = self
            .policies
            .tenants
            .get(tenant)
            .or(self.policies.default.as_ref());
        match policy {
            Some(list) => list
                .iter()
                .filter(|w| w.weight > 0 && configured.contains(&w.vendor))
                .copied()
                .collect(),
            None => configured
                .iter()
                .map(|v| Weighted {
                    vendor: *v,
                    weight: 1,
                })
                .collect(),
        }
    }

    /// Drops the candidates whose breaker keeps sessions away, then orders the rest by a weighted draw without
    /// replacement: each next one is picked with probability proportional to its weight among those left.
    pub fn order(&self, candidates: Vec<Weighted>) -> Vec<Vendor> {
        let mut left: Vec<Weighted> = candidates
            .into_iter()
            .filter(|w| self.breakers.available(w.vendor))
            .collect();
        let mut out = Vec::with_capacity(left.len());
        while !left.is_empty() {
            let total: u64 = left.iter().map(|w| u64::from(w.weight)).sum();
            // 64 random bits (UUIDv4's generator, the OS's); the modulo bias over weights this small is nil.
            let mut pick = (uuid::Uuid::new_v4().as_u128() as u64) % total.max(1);
            let mut index = left.len() - 1;
            for (i, w) in left.iter().enumerate() {
                if pick < u64::from(w.weight) {
                    index = i;
                    break;
                }
                pick -= u64::from(w.weight);
            }
            out.push(left.remove(index).vendor);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            open_for: Duration::from_millis(50),
            ..Default::default()
        }
    }

    /// A breaker read at chosen instants (`at(ms)` is `ms` after the first), so a slow test thread cannot let
    /// the open period run out between two of its steps.
    struct Clocked {
        b: Breakers,
        start: Instant,
    }

    impl Clocked {
        fn new() -> Self {
            Self {
                b: Breakers::new(settings()),
                start: Instant::now(),
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.start + Duration::from_millis(ms)
        }
        fn available(&self, v: Vendor, ms: u64) -> bool {
            self.b.available_at(v, self.at(ms))
        }
        fn take(&self, v: Vendor, ms: u64) -> bool {
            self.b.take_at(v, self.at(ms))
        }
        fn record(&self, v: Vendor, health: CallHealth, ms: u64) {
            self.b.record_at(v, health, self.at(ms))
        }
    }

    #[test]
    fn five_failures_in_a_row_open_and_a_probe_closes_or_reopens() {
        let c = Clocked::new();
        for _ in 0..4 {
            c.record(Vendor::Juhe, CallHealth::Failed, 0);
        }
        assert!(c.available(Vendor::Juhe, 0));
        // The user's fault neither counts nor breaks the run.
        c.record(Vendor::Juhe, CallHealth::UsersFault, 0);
        c.record(Vendor::Juhe, CallHealth::Failed, 0);
        assert!(!c.available(Vendor::Juhe, 0));
        assert!(!c.take(Vendor::Juhe, 49));
        assert!(c.available(Vendor::Baidu, 0), "breakers are per vendor");
        // Open for 50 ms.
        assert!(c.available(Vendor::Juhe, 60), "half-open");
        assert!(c.take(Vendor::Juhe, 60), "the one probe");
        assert!(!c.take(Vendor::Juhe, 61), "only one probe");
        assert!(!c.available(Vendor::Juhe, 61));
        c.record(Vendor::Juhe, CallHealth::Failed, 62);
        assert!(
            !c.available(Vendor::Juhe, 63),
            "a failed probe opens it again"
        );
        assert!(c.take(Vendor::Juhe, 120));
        c.record(Vendor::Juhe, CallHealth::Ok, 121);
        assert!(
            c.available(Vendor::Juhe, 122)
                && c.take(Vendor::Juhe, 122)
                && c.take(Vendor::Juhe, 122)
        );
        let opened =
            c.b.snapshot_at(c.at(122))
                .into_iter()
                .find(|(v, _, _)| *v == Vendor::Juhe)
                .map(|(_, state, n)| (state, n));
        assert_eq!(opened, Some((BreakerState::Closed, 2)));
    }

    #[test]
    fn a_probe_never_heard_of_lets_another_go_after_the_open_period() {
        let c = Clocked::new();
        for _ in 0..5 {
            c.record(Vendor::Megvii, CallHealth::Failed, 0);
        }
        assert!(c.take(Vendor::Megvii, 60));
        assert!(!c.take(Vendor::Megvii, 100));
        assert!(
            c.take(Vendor::Megvii, 120),
            "the first probe is taken to be lost"
        );
    }

    #[test]
    fn more_than_half_of_twenty_calls_failing_opens() {
        let b = Breakers::new(settings());
        // Alternating never makes 5 in a row; 10 of 20 is not more than half.
        for i in 0..20 {
            b.record(
                Vendor::Baidu,
                if i % 2 == 0 {
                    CallHealth::Failed
                } else {
                    CallHealth::Ok
                },
            );
        }
        assert!(b.available(Vendor::Baidu));
        b.record(Vendor::Baidu, CallHealth::Failed);
        assert!(!b.available(Vendor::Baidu), "11 of 21");
    }

    #[test]
    fn fewer_than_twenty_calls_do_not_trip_the_ratio() {
        let b = Breakers::new(settings());
        for i in 0..19 {
            let health = if i % 5 == 4 {
                CallHealth::Ok
            } else {
                CallHealth::Failed
            };
            b.record(Vendor::Megvii, health);
        }
        assert!(
            b.available(Vendor::Megvii),
            "15 of 19 failed, never 5 in a row"
        );
    }

    #[test]
    fn the_window_forgets_old_calls_and_stays_small_at_any_rate() {
        let window = Duration::from_secs(10);
        let start = Instant::now();
        let mut w = CallWindow::default();
        // 100,000 calls over 20 s, one in four failed.
        for i in 0..100_000u32 {
            let at = start + Duration::from_micros(u64::from(i) * 200);
            w.push(at, i % 4 == 0, window);
        }
        // The last 10 s (plus at most one bucket): half the calls, a quarter of them failed.
        assert!((50_000..=50_500).contains(&w.calls), "{} calls", w.calls);
        assert!(
            (12_500..=12_625).contains(&w.failures),
            "{} failures",
            w.failures
        );
        assert!(w.buckets.len() <= WINDOW_BUCKETS as usize + 1);
        // Long after: one new call is all the window holds.
        w.push(start + Duration::from_secs(60), false, window);
        assert_eq!((w.calls, w.failures, w.buckets.len()), (1, 0, 1));
    }

    #[test]
    fn user_faults_do_not_count() {
        for kind in [
            VendorErrorKind::RejectedInput,
            VendorErrorKind::NoRecord,
            VendorErrorKind::ResultExpired,
        ] {
            assert_eq!(CallHealth::of_error(kind), CallHealth::UsersFault);
        }
        assert_eq!(
            CallHealth::of_error(VendorErrorKind::Unreachable),
            CallHealth::Failed
        );
    }

    #[test]
    fn policies_pick_the_tenants_then_the_default_then_every_configured_vendor() {
        let w = |vendor, weight| Weighted { vendor, weight };
        let configured = [Vendor::Baidu, Vendor::Juhe];
        let none = Router::new(Policies::default(), settings());
        assert_eq!(
            none.candidates("shop", &configured),
            vec![w(Vendor::Baidu, 1), w(Vendor::Juhe, 1)]
        );
        let mut policies = Policies {
            default: Some(vec![w(Vendor::Megvii, 5), w(Vendor::Juhe, 2)]),
            ..Default::default()
        };
        policies
            .tenants
            .insert("shop".into(), vec![w(Vendor::Baidu, 3), w(Vendor::Juhe, 0)]);
        let r = Router::new(policies, settings());
        assert_eq!(r.candidates("shop", &configured), vec![w(Vendor::Baidu, 3)]);
        // Megvii is not configured here.
        assert_eq!(r.candidates("other", &configured), vec![w(Vendor::Juhe, 2)]);
    }

    #[test]
    fn the_draw_follows_the_weights_and_skips_open_breakers() {
        let w = |vendor, weight| Weighted { vendor, weight };
        let r = Router::new(Policies::default(), settings());
        let mut first = BTreeMap::new();
        for _ in 0..4000 {
            let order = r.order(vec![w(Vendor::Baidu, 3), w(Vendor::Megvii, 1)]);
            assert_eq!(order.len(), 2);
            *first.entry(order[0].as_str()).or_insert(0u32) += 1;
        }
        let baidu = first.get("baidu").copied().unwrap_or(0);
        // 3000 expected, standard deviation 27.
        assert!((2800..3200).contains(&baidu), "{first:?}");
        for _ in 0..5 {
            r.breakers().record(Vendor::Baidu, CallHealth::Failed);
        }
        let order = r.order(vec![w(Vendor::Baidu, 100), w(Vendor::Megvii, 1)]);
        assert_eq!(order, vec![Vendor::Megvii]);
    }
}
