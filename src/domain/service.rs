//! The session service: runs flows over the store, the vendor adapters and the status hub.
//!
//! Every change is a compare-and-set on the session's version, so concurrent callers (and, with a shared database,
//! several replicas) never lose an update. A billed vendor call is claimed in the store first
//! (`attempt_started_at_ms`), so it is made at most once per intent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use sha1::{Digest, Sha1};
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use super::adapter::{
    CallbackRejection, PollOutcome, Progress, ResultQuery, VendorAdapter, Vendors,
};
use super::caller::Caller;
use super::calls::{collect_calls, in_background};
use super::error::{Error, RetryWith, VendorError};
use super::events::{
    self as ev, CallResult, EventDetail, EventsSummary, SessionEvent, StoredEvent,
};
use super::far::{describe, threshold_for};
use super::listing::{self, ListRequest, PageTokens};
use super::now_ms;
use super::quota::{BilledCall, Quotas};
use super::routing::{BreakerSettings, CallHealth, Policies, Router, Weighted};
use super::session::*;
use super::state::{Applied, Event, TransitionError};
use crate::status::poller::{PollConfig, PollStep, Pollers};
use crate::status::Hub;
use crate::store::{Created, IdempotencyRecord, SessionStore, StoreError};

/// Reason recorded when a vendor call was under way while the service stopped: its outcome is unknown.
pub const REASON_OUTCOME_UNKNOWN: &str = "VENDOR_OUTCOME_UNKNOWN";
/// Reason recorded when the end user failed an attempt on the vendor page and may try again there.
pub const REASON_USER_ATTEMPT_FAILED: &str = "USER_ATTEMPT_FAILED";

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Lifetime of a session that is not final, in ms.
    pub session_ttl_ms: i64,
    /// Default false accept rate.
    pub default_far: f64,
    /// After how long a claimed vendor call is taken to have died with its process, in ms.
    pub attempt_stale_ms: i64,
    /// How long a repeated StartSession waits for the original's vendor call.
    pub replay_wait: Duration,
    /// Polling of flows that wait for the end user.
    pub poll: PollConfig,
    /// After a vendor token's expiry, how long the last answer is waited for before EXPIRED, in ms.
    pub final_check_grace_ms: i64,
    /// With a store shared by several processes, how often a watcher re-reads the session for changes made
    /// elsewhere; `None` when this process is the only writer.
    pub watch_refresh: Option<Duration>,
    /// Whether real vendors serve new sessions (false with the sandbox simulators); stored with each session.
    pub live_mode: bool,
    /// Whether StartSession must carry the end user's consent evidence.
    pub require_consent: bool,
    /// How long personal data (identity, images) may live in a session that is not final, in ms from its creation
    /// (at most `session_ttl_ms`): a session still holding it then expires, which wipes it.
    pub personal_data_max_ms: i64,
    /// After how long from creation whole session rows and their idempotency keys are deleted, in ms.
    pub session_rows_max_ms: i64,
}

/// Vendor options as requested, before the adapter resolves them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RequestedOptions {
    /// Nothing requested: vendor defaults.
    #[default]
    Default,
    /// Juhe: `Some(true)` encrypted, `Some(false)` plain, `None` the default.
    Juhe {
        /// Encrypted or plain.
        encrypted: Option<bool>,
    },
    /// Baidu: a configured plan by name (empty: the default plan).
    Baidu {
        /// Plan name.
        plan: String,
    },
    /// Megvii: get_token options.
    Megvii(MegviiSettings),
}

/// An image as the caller gave it.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// Bytes (personal data).
    pub data: Vec<u8>,
    /// Sniffed format.
    pub format: super::validation::ImageFormat,
    /// Role, when the caller said.
    pub role: Option<ImageRole>,
    /// Reference slot (Megvii), 0 = next.
    pub slot: u32,
    /// Quality and liveness control (Baidu).
    pub controls: ImageControls,
}

/// A validated StartSession request.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Idempotency key.
    pub request_id: String,
    /// Vendor; `None`: facegate picks one (routing).
    pub vendor: Option<Vendor>,
    /// Vendor options.
    pub options: RequestedOptions,
    /// Identity, inline.
    pub identity: Option<Identity>,
    /// Images, inline.
    pub images: Vec<ImageInput>,
    /// Success return URL.
    pub success_url: String,
    /// Failure return URL.
    pub failure_url: String,
    /// Caller's reference.
    pub client_reference_id: String,
    /// Caller's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Requested FAR.
    pub target_far: Option<f64>,
    /// The end user's consent evidence (validated).
    pub consent: Option<Consent>,
    /// A deterministic encoding of the whole request, for the idempotency fingerprint.
    pub canonical: Vec<u8>,
}

/// Callbacks accepted and rejected.
#[derive(Default)]
struct CallbackCounts {
    accepted: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
}

/// The session service.
pub struct SessionService {
    store: Arc<dyn SessionStore>,
    vendors: Arc<Vendors>,
    hub: Arc<Hub>,
    cfg: ServiceConfig,
    fingerprint_key: Vec<u8>,
    /// ListSessions' page tokens, keyed from the fingerprint key.
    page_tokens: PageTokens,
    shutdown: watch::Receiver<bool>,
    pollers: Arc<Pollers>,
    callbacks: CallbackCounts,
    /// Single-flight on-demand refreshes: per session, the time of the last one.
    refreshes: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<i64>>>>,
    /// Per-tenant quotas; the daily billed-call cap is reserved before a vendor call is claimed.
    quotas: Arc<Quotas>,
    router: Router,
    /// The names of the configured webhook endpoints (for `/metrics`).
    webhook_endpoints: Vec<String>,
    /// Wakes the webhook worker (a redelivery is due now).
    webhook_wake: Arc<tokio::sync::Notify>,
}

fn store_err(e: StoreError) -> Error {
    tracing::error!(error = %e, "session store failure");
    Error::Store
}

impl SessionService {
    /// Builds the service (reads the store's fingerprint key).
    pub async fn new(
        store: Arc<dyn SessionStore>,
        vendors: Arc<Vendors>,
        hub: Arc<Hub>,
        cfg: ServiceConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, Error> {
        let fingerprint_key = store.fingerprint_key().await.map_err(store_err)?;
        let page_tokens = PageTokens::new(&fingerprint_key)?;
        let pollers = Arc::new(Pollers::new(cfg.poll));
        Ok(Self {
            store,
            vendors,
            hub,
            cfg,
            fingerprint_key,
            page_tokens,
            shutdown,
            pollers,
            callbacks: CallbackCounts::default(),
            refreshes: std::sync::Mutex::new(HashMap::new()),
            quotas: Arc::new(Quotas::unlimited()),
            router: Router::new(Policies::default(), BreakerSettings::default()),
            webhook_endpoints: Vec::new(),
            webhook_wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Knows the configured webhook endpoints (by name) and wakes their worker through `wake`. Call before
    /// wrapping in an `Arc`.
    pub fn with_webhooks(mut self, endpoints: Vec<String>, wake: Arc<tokio::sync::Notify>) -> Self {
        self.webhook_endpoints = endpoints;
        self.webhook_wake = wake;
        self
    }

    /// The configured webhook endpoints' names.
    pub fn webhook_endpoints(&self) -> &[String] {
        &self.webhook_endpoints
    }

    /// The pending webhook messages per endpoint (all replicas'), for `/metrics`.
    pub async fn webhook_backlog(&self) -> Result<Vec<crate::domain::webhooks::Backlog>, Error> {
        self.store.webhook_backlog().await.map_err(store_err)
    }

    /// A page of the webhook deliveries of `caller`'s tenant matching `filter`, newest event first: at most
    /// `page_size` (0: 100; at most 1000) after `page_token`, and the token of the next page (empty on the last).
    pub async fn list_webhook_deliveries(
        &self,
        caller: &Caller,
        filter: &crate::domain::webhooks::DeliveryFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<crate::domain::webhooks::WebhookDelivery>, String), Error> {
        let size = match u32::try_from(page_size) {
            Ok(0) => 100,
            Ok(n) => n.min(1000),
            Err(_) => return Err(Error::invalid("page_size", "must not be negative")),
        };
        // A token is bound to the tenant and the filter: it continues the listing it came from and no other.
        let scope = format!(
            "webhooks|{}|{}|{}|{}",
            caller.tenant,
            filter.session_id,
            filter.endpoint,
            filter.status.map_or("", |s| s.as_str())
        );
        let before = if page_token.is_empty() {
            i64::MAX
        } else {
            ev::parse_page_token(&self.fingerprint_key, &scope, page_token).ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "is not a token of this listing (tokens are bound to their filter)",
                )
            })?
        };
        let mut page = self
            .store
            .webhook_deliveries(&caller.tenant, filter, before, size + 1)
            .await
            .map_err(store_err)?;
        let next = if page.len() > size as usize {
            page.truncate(size as usize);
            page.last()
                .map(|d| ev::page_token(&self.fingerprint_key, &scope, d.seq))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((page, next))
    }

    /// Sends a webhook event of `caller`'s tenant again, now, with the same id (to `endpoint`; empty: its only
    /// one); a failed delivery gets a new retry period and a disabled endpoint is enabled again.
    pub async fn redeliver_webhook(
        &self,
        caller: &Caller,
        id: &str,
        endpoint: &str,
    ) -> Result<crate::domain::webhooks::WebhookDelivery, Error> {
        use crate::store::Redelivered;
        match self
            .store
            .redeliver_webhook(&caller.tenant, id, endpoint, now_ms())
            .await
            .map_err(store_err)?
        {
            Redelivered::Pending(delivery) => {
                tracing::info!(
                    caller = %caller.id,
                    webhook_id = %delivery.id,
                    endpoint = %delivery.endpoint,
                    "webhook redelivery requested"
                );
                self.webhook_wake.notify_one();
                Ok(delivery)
            }
            Redelivered::NotFound => Err(Error::WebhookNotFound),
            Redelivered::EndpointNeeded => Err(Error::invalid(
                "endpoint",
                "the event went to several endpoints: name the one to send it to again",
            )),
            Redelivered::BodyGone => Err(Error::WebhookBodyRedacted),
        }
    }

    /// Uses `quotas` (the default is no limits, billed calls still counted). Call before wrapping in an `Arc`.
    pub fn with_quotas(mut self, quotas: Arc<Quotas>) -> Self {
        self.quotas = quotas;
        self
    }

    /// Routes requests that leave the vendor to facegate with `router` (the default: every configured vendor with
    /// equal weight, default breakers). Call before wrapping in an `Arc`.
    pub fn with_router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// The router (its breakers feed `/metrics`).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The quotas (for the gRPC handlers and metrics).
    pub fn quotas(&self) -> &Arc<Quotas> {
        &self.quotas
    }

    /// Limits, usage and refusals of every tenant's quotas, for `/metrics`.
    pub async fn quota_usage(&self) -> Vec<super::quota::QuotaUsage> {
        self.quotas.usage(&*self.store, now_ms()).await
    }

    /// Reserves the billed call a session is about to claim, under its tenant's daily cap.
    async fn reserve_billed_call(&self, session: &Session) -> Result<BilledCall, Error> {
        self.quotas
            .reserve_billed_call(&*self.store, &session.tenant, now_ms())
            .await
    }

    /// Connects the status engine to this service: pollers call [`SessionService::refresh`]. Call once after
    /// wrapping the service in an `Arc`.
    pub fn enable_polling(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.pollers
            .set_poll_fn(Arc::new(move |id: String, urgent: bool| {
                let weak = weak.clone();
                Box::pin(async move {
                    let Some(svc) = weak.upgrade() else {
                        return PollStep::Done;
                    };
                    if urgent {
                        // Jumped ahead (the user came back, the token ends): its query goes first in the budget.
                        svc.refresh(&id).await
                    } else {
                        in_background(svc.refresh(&id)).await
                    }
                })
            }));
    }

    /// The pollers (for metrics and tests).
    pub fn pollers(&self) -> &Arc<Pollers> {
        &self.pollers
    }

    /// The hub (for metrics and tests).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    fn fingerprint(&self, canonical: &[u8]) -> String {
        let mut h = Sha1::new();
        h.update(&self.fingerprint_key);
        h.update(canonical);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    async fn load(&self, id: &str) -> Result<Session, Error> {
        self.store
            .get(id)
            .await
            .map_err(store_err)?
            .ok_or(Error::NotFound)
    }

    /// One page of the sessions of `caller`'s tenant that match the request's filters, newest first, and the token
    /// of the next page (empty after the last). The sessions are whole: the caller of this method (the gRPC layer)
    /// decides what of them is shown.
    pub async fn list(
        &self,
        caller: &Caller,
        req: &ListRequest,
    ) -> Result<(Vec<Session>, String), Error> {
        let limit = listing::page_size(req.page_size)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(
                self.page_tokens
                    .decode(&req.page_token, &caller.tenant, &req.filter)?,
            )
        };
        // One more than a page: whether another page follows is known without a second query.
        let mut sessions = self
            .store
            .list(&caller.tenant, &req.filter, after, limit.saturating_add(1))
            .await
            .map_err(store_err)?;
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        if sessions.len() <= page {
            return Ok((sessions, String::new()));
        }
        sessions.truncate(page);
        let next = match sessions.last() {
            Some(last) => self.page_tokens.encode(
                &caller.tenant,
                &req.filter,
                last.created_at_ms,
                &last.id,
            )?,
            None => String::new(),
        };
        Ok((sessions, next))
    }

    /// Loads a session of `caller`'s tenant. Another tenant's session is [`Error::NotFound`], exactly as a missing
    /// one: existence is not revealed.
    async fn load_owned(&self, caller: &Caller, id: &str) -> Result<Session, Error> {
        let session = self.load(id).await?;
        owned_by(&session, caller)?;
        Ok(session)
    }

    /// The session as stored, when it belongs to `caller`'s tenant (else [`Error::NotFound`]).
    pub async fn get_owned(&self, caller: &Caller, id: &str) -> Result<Session, Error> {
        self.load_owned(caller, id).await
    }

    /// Loads, changes and stores a session with compare-and-set, retrying on conflicts. `change` returns whether it
    /// changed anything; the version is bumped once per stored change. Watchers hear of it when `publish`.
    async fn mutate<F>(&self, id: &str, publish: bool, change: F) -> Result<Session, Error>
    where
        F: FnMut(&mut Session) -> Result<bool, Error>,
    {
        self.mutate_logged(id, publish, &[], false, change).await
    }

    /// [`SessionService::mutate`] that also appends `extra` events (and, always, the state change it made) to the
    /// session's log in the same transaction. When `change` changes nothing, `extra` is appended on its own unless
    /// `only_if_changed`.
    pub(crate) async fn mutate_logged<F>(
        &self,
        id: &str,
        publish: bool,
        extra: &[SessionEvent],
        only_if_changed: bool,
        mut change: F,
    ) -> Result<Session, Error>
    where
        F: FnMut(&mut Session) -> Result<bool, Error>,
    {
        // The first pass may start from what this process last wrote (no read); a pass that would not write from
        // it, or whose write finds another version stored, starts again from the store.
        let mut from_store = false;
        for _ in 0..16 {
            let original = match self.store.cached(id) {
                Some(cached) if !from_store => cached,
                _ => {
                    from_store = true;
                    self.load(id).await?
                }
            };
            let mut session = original.clone();
            let changed = match change(&mut session) {
                Ok(changed) => changed,
                Err(_) if !from_store => {
                    from_store = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !changed && !from_store {
                from_store = true;
                continue;
            }
            if !changed {
                if !only_if_changed {
                    for event in extra {
                        self.append(id, event, None).await;
                    }
                }
                return Ok(original);
            }
            if session.version == original.version {
                session.version += 1;
            }
            self.limit_personal_data(&mut session);
            session.updated_at_ms = now_ms().max(original.updated_at_ms);
            let mut events = extra.to_vec();
            events.extend(ev::state_change(Some(&original), &session));
            match self.store.update(&session, original.version, &events).await {
                Ok(()) => {
                    count_new_billing(&original, &session);
                    if publish {
                        self.hub.publish(&session);
                    }
                    return Ok(session);
                }
                Err(StoreError::Conflict) => {
                    from_store = true;
                    continue;
                }
                Err(StoreError::NotFound) => return Err(Error::NotFound),
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(Error::Internal(
            "too many concurrent updates of one session".into(),
        ))
    }

    /// A session that is not final and holds personal data expires (and so is wiped) at most
    /// `personal_data_max_ms` after its creation; one whose inputs went to the vendor keeps its own deadline.
    fn limit_personal_data(&self, session: &mut Session) {
        if !session.state.is_final() && !session.inputs.is_empty() {
            let limit = session
                .created_at_ms
                .saturating_add(self.cfg.personal_data_max_ms);
            session.expires_at_ms = session.expires_at_ms.min(limit);
        }
    }

    /// Starts a session of `caller`'s tenant (idempotent by the tenant's `request_id`).
    pub async fn start(
        self: &Arc<Self>,
        caller: &Caller,
        mut req: StartRequest,
    ) -> Result<Session, Error> {
        if *self.shutdown.borrow() {
            return Err(Error::ShuttingDown);
        }
        // Before anything is looked up, stored or sent to a vendor.
        match &req.consent {
            None if self.cfg.require_consent => return Err(Error::ConsentRequired),
            None => {}
            Some(consent) => check_consent(consent, now_ms(), self.cfg.session_ttl_ms)?,
        }
        let far = req.target_far.unwrap_or(self.cfg.default_far);
        let fingerprint = self.fingerprint(&req.canonical);
        // A repeat of a known request id is found by the create below, which writes nothing then (one store
        // round trip for a new request instead of a lookup before it).
        let now = now_ms();
        let images = std::mem::take(&mut req.images);
        let requested = std::mem::take(&mut req.options);
        let template = Session {
            id: new_session_id(),
            vendor: req.vendor.unwrap_or(Vendor::Juhe),
            options: VendorOptions::Juhe { encrypted: false },
            state: State::RequiresInput,
            required_inputs: Vec::new(),
            user_url: None,
            user_url_expires_at_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
            expires_at_ms: now.saturating_add(self.cfg.session_ttl_ms),
            client_reference_id: req.client_reference_id,
            metadata: req.metadata,
            failure: None,
            last_attempt_error: None,
            identity_masked: req.identity.as_ref().map(Identity::masked),
            version: 1,
            target_false_accept_rate: far,
            request_id: req.request_id.clone(),
            cancel_reason: None,
            return_success_url: req.success_url,
            return_failure_url: req.failure_url,
            inputs: Inputs {
                identity: req.identity,
                ..Default::default()
            },
            attempt_started_at_ms: None,
            outcome: Outcome::default(),
            vendor_ref: None,
            final_query_at_ms: None,
            tenant: caller.tenant.clone(),
            live_mode: self.cfg.live_mode,
            redaction: None,
            consent: req.consent,
            start_call: StartCall::None,
            route: None,
        };
        let mut session = match req.vendor {
            Some(vendor) => {
                let adapter = self.vendors.adapter(vendor)?;
                prepare(adapter, template, &requested, images)?
            }
            None => self.route(template, &requested, images)?,
        };
        self.limit_personal_data(&mut session);
        // Inputs complete at creation: the write that stores the session reserves one call under the daily cap
        // (refused: nothing is written, so a retry of this request once the cap allows starts afresh) and claims
        // the vendor call, so a concurrent repeat of this request waits for its outcome instead of seeing a
        // half-started session.
        let billed = session.required_inputs.is_empty();
        if billed {
            session.attempt_started_at_ms = Some(now);
            // Its outcome is this request's answer, and every replay's.
            session.start_call = StartCall::UnderWay;
        }
        let idem = IdempotencyRecord {
            tenant: caller.tenant.clone(),
            request_id: req.request_id,
            fingerprint: fingerprint.clone(),
            session_id: session.id.clone(),
        };
        let events = Vec::from_iter(ev::state_change(None, &session));
        let created = if billed {
            let (day, limit) = self.quotas.billed_call_limit(&caller.tenant, now);
            self.store
                .create_with_billed_call(&session, Some(&idem), &events, day, limit)
                .await
        } else {
            self.store.create(&session, Some(&idem), &events).await
        };
        match created.map_err(store_err)? {
            Created::New => {}
            Created::Existing(existing) => return self.replay(existing, &fingerprint).await,
            Created::CapReached => {
                return Err(self.quotas.billed_call_refused(&caller.tenant, now))
            }
        }
        tracing::info!(session_id = %session.id, vendor = session.vendor.as_str(), live_mode = session.live_mode,
            "session started");
        if session.attempt_started_at_ms.is_some() {
            return self.spawn_attempt(session).await;
        }
        Ok(session)
    }

    /// Picks the vendor of a request that left it to facegate: the tenant's candidates (see [`Router::candidates`])
    /// that can serve the request, ordered by a weighted draw among those whose breaker lets sessions through. The
    /// first becomes the session's vendor; the others that take the same inputs as they are become its failover
    /// order, tried only while nothing billed or possibly billed has happened and no page was handed out.
    fn route(
        &self,
        template: Session,
        requested: &RequestedOptions,
        images: Vec<ImageInput>,
    ) -> Result<Session, Error> {
        let configured: Vec<Vendor> = [Vendor::Juhe, Vendor::Baidu, Vendor::Megvii]
            .into_iter()
            .filter(|v| self.vendors.adapter(*v).is_ok())
            .collect();
        let mut refused: Vec<String> = Vec::new();
        let mut prepared: Vec<(Weighted, Session)> = Vec::new();
        for candidate in self.router.candidates(&template.tenant, &configured) {
            let Ok(adapter) = self.vendors.adapter(candidate.vendor) else {
                continue;
            };
            match prepare(adapter, template.clone(), requested, images.clone()) {
                Ok(session) => match unroutable(adapter, &session) {
                    None => prepared.push((candidate, session)),
                    Some(why) => refused.push(format!("{}: {why}", candidate.vendor.as_str())),
                },
                Err(e) => refused.push(format!("{}: {e}", candidate.vendor.as_str())),
            }
        }
        let order = self
            .router
            .order(prepared.iter().map(|(w, _)| *w).collect());
        for (w, _) in &prepared {
            if !order.contains(&w.vendor) {
                refused.push(format!(
                    "{}: its circuit breaker is open",
                    w.vendor.as_str()
                ));
            }
        }
        let Some(chosen) = order.iter().position(|v| self.router.breakers().take(*v)) else {
            if refused.is_empty() {
                refused.push("no vendor is configured for this tenant".to_owned());
            }
            return Err(Error::NoVendorAvailable(refused.join("; ")));
        };
        let session_of = |vendor: Vendor| {
            prepared
                .iter()
                .find(|(w, _)| w.vendor == vendor)
                .map(|(_, s)| s)
        };
        let Some(mut session) = session_of(order[chosen]).cloned() else {
            return Err(Error::Internal("a drawn vendor was not prepared".into()));
        };
        let failover = order[chosen + 1..]
            .iter()
            .filter_map(|v| session_of(*v))
            .filter(|s| s.inputs == session.inputs && s.required_inputs == session.required_inputs)
            .map(|s| RouteCandidate {
                vendor: s.vendor,
                options: s.options.clone(),
            })
            .collect();
        session.route = Some(Route {
            order: order.clone(),
            failover,
            attempts: Vec::new(),
        });
        tracing::info!(
            vendor = session.vendor.as_str(),
            candidates = order.len(),
            "vendor chosen by routing"
        );
        Ok(session)
    }

    /// Answers a repeat of a StartSession whose request_id is known: what the first call answered. While the first
    /// call's own vendor call is under way (here or on another replica sharing the store) the repeat waits for it,
    /// woken by this process's changes and re-reading the store every `watch_refresh` (1 s without a shared store),
    /// for at most `replay_wait`; the RPC's deadline (the caller's grpc-timeout) ends it sooner. Then: the error that
    /// call failed with (same code, message and details), else the session as it is now.
    async fn replay(
        &self,
        existing: IdempotencyRecord,
        fingerprint: &str,
    ) -> Result<Session, Error> {
        if existing.fingerprint != fingerprint {
            return Err(Error::IdempotencyKeyReused {
                session_id: existing.session_id,
            });
        }
        let mut sub = Subscription::new(&self.hub, &existing.session_id);
        let reload_every = self.cfg.watch_refresh.unwrap_or(Duration::from_secs(1));
        let deadline = tokio::time::Instant::now() + self.cfg.replay_wait;
        loop {
            let session = self.load(&existing.session_id).await?;
            match &session.start_call {
                StartCall::Failed(e) => return Err(e.to_error(&session)),
                StartCall::None => return Ok(session),
                StartCall::UnderWay if session.attempt_started_at_ms.is_none() => {
                    return Ok(session)
                }
                StartCall::UnderWay => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                // Still under way (its process may have stopped: recovery releases it): ask again later.
                return Err(Error::SessionBusy);
            }
            let wake = deadline.min(now + reload_every);
            tokio::select! {
                changed = sub.changed() => {
                    if !changed {
                        // No more notifications here: the store is read at each reload only.
                        tokio::time::sleep_until(wake).await;
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Supplies the identity of one of `caller`'s tenant's sessions.
    pub async fn submit_identity(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        identity: Identity,
    ) -> Result<Session, Error> {
        let session = self.load_owned(caller, id).await?;
        let adapter = self.vendors.adapter(session.vendor)?;
        self.take_input(adapter, id, |s| {
            s.identity_masked = Some(identity.masked());
            s.inputs.identity = Some(identity.clone());
            Ok(())
        })
        .await
    }

    /// Supplies an image to one of `caller`'s tenant's sessions.
    pub async fn upload_image(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        image: ImageInput,
    ) -> Result<Session, Error> {
        let session = self.load_owned(caller, id).await?;
        let adapter = self.vendors.adapter(session.vendor)?;
        self.take_input(adapter, id, |s| {
            take_image(adapter, &mut s.inputs, image.clone())
                .map_err(|v| Error::InvalidArgument(vec![with_prefix(v, "image")]))
        })
        .await
    }

    /// Stores an input. When it completes the inputs, the same write claims the vendor call, so watchers see the
    /// session go straight to its decision, and the call is made once.
    async fn take_input<F>(
        self: &Arc<Self>,
        adapter: &dyn VendorAdapter,
        id: &str,
        mut put: F,
    ) -> Result<Session, Error>
    where
        F: FnMut(&mut Session) -> Result<(), Error>,
    {
        // An input that completes the inputs claims a billed call, which is reserved under the daily cap before
        // the claim is written. The first pass finds out whether it does without writing; a refusal leaves the
        // session as it was. A reservation not used in the end (another request changed the session meanwhile)
        // is given back.
        let mut reservation: Option<BilledCall> = None;
        let (updated, claimed) = loop {
            let reserved = reservation.is_some();
            let mut needs_reservation = false;
            let mut claimed = false;
            let result = self
                .mutate(id, false, |s| {
                    needs_reservation = false;
                    claimed = false;
                    accepting_input(s)?;
                    put(s)?;
                    s.last_attempt_error = None;
                    let required = adapter.required_inputs(s);
                    if required.is_empty() {
                        if !reserved {
                            needs_reservation = true;
                            return Ok(false);
                        }
                        s.attempt_started_at_ms = Some(now_ms());
                        claimed = true;
                    }
                    let _ = s.apply(Event::InputsChanged { required }, now_ms());
                    Ok(true)
                })
                .await;
            match result {
                // Only a pass without a reservation asks for one, so this happens once.
                Ok(current) if needs_reservation => {
                    reservation = Some(self.reserve_billed_call(&current).await?);
                }
                Ok(updated) => break (updated, claimed),
                Err(e) => {
                    if let Some(unused) = reservation.take() {
                        unused.release(&*self.store).await;
                    }
                    return Err(e);
                }
            }
        };
        if !claimed {
            if let Some(unused) = reservation.take() {
                unused.release(&*self.store).await;
            }
        }
        if claimed {
            self.spawn_attempt(updated).await
        } else {
            self.hub.publish(&updated);
            Ok(updated)
        }
    }

    /// Makes a claimed vendor call in a task of its own and waits for its stored outcome.
    async fn spawn_attempt(self: &Arc<Self>, claimed: Session) -> Result<Session, Error> {
        let this = Arc::clone(self);
        let tenant = claimed.tenant.clone();
        // The call belongs to the RPC that claimed it (its span and log fields), though it outlives a timed-out caller.
        // Boxed once here: the attempt's future (about 12 KiB) is otherwise copied by every wrapper it passes
        // through on its way into the task (memcpy was 7% of a StartSession load's CPU).
        let attempt = Box::pin(async move { this.run_attempt(claimed).await });
        let task = tokio::spawn(crate::metrics::for_tenant(&tenant, attempt).in_current_span());
        match task.await {
            Ok(result) => result,
            Err(e) => Err(Error::Internal(format!("vendor call task failed: {e}"))),
        }
    }

    async fn run_attempt(&self, claimed: Session) -> Result<Session, Error> {
        let mut claimed = claimed;
        let (adapter, result, calls) = loop {
            let adapter = self.vendors.adapter(claimed.vendor)?;
            let (result, calls) = collect_calls(adapter.proceed(&claimed)).await;
            let health = match &result {
                Ok(_) => CallHealth::Ok,
                Err(e) => CallHealth::of_error(e.kind),
            };
            self.router.breakers().record(adapter.vendor(), health);
            if let Err(err) = &result {
                if let Some(next) = Box::pin(self.fail_over(&claimed, err, &calls)).await? {
                    claimed = next;
                    continue;
                }
            }
            break (adapter, result, calls);
        };
        let id = claimed.id.clone();
        let claimed_by_start = claimed.start_call == StartCall::UnderWay;
        drop(claimed);
        let vendor = adapter.vendor();
        let billed_by = |outcome: &Outcome| CallResult {
            billed: outcome.billing.iter().any(|b| b.billed),
            ..Default::default()
        };
        match result {
            Ok(Progress::Final {
                verified,
                failure,
                outcome,
            }) => {
                let events = ev::vendor_calls(vendor, &calls, &billed_by(&outcome));
                // Boxed, like the other writes below: each is several KiB of future that would otherwise size this
                // one, copied whole into its task.
                Box::pin(self.decide(&id, verified, failure, outcome, true, &events)).await
            }
            Ok(Progress::AwaitUser {
                user_url,
                expires_at_ms,
                decide_by_ms,
                vendor_ref,
                outcome,
            }) => {
                let events = ev::vendor_calls(vendor, &calls, &billed_by(&outcome));
                let stored = Box::pin(self.mutate_logged(&id, true, &events, false, |s| {
                    if s.state.is_final() {
                        return Ok(false);
                    }
                    s.attempt_started_at_ms = None;
                    s.last_attempt_error = None;
                    if s.start_call == StartCall::UnderWay {
                        s.start_call = StartCall::None;
                    }
                    s.vendor_ref = Some(vendor_ref.clone());
                    s.outcome = outcome.clone();
                    // The inputs are with the vendor now; facegate keeps only their masked form.
                    s.inputs = Inputs::default();
                    // The vendor has what it needs: the session lives to its own deadline again.
                    s.expires_at_ms = s
                        .created_at_ms
                        .saturating_add(self.cfg.session_ttl_ms)
                        .min(decide_by_ms);
                    let _ = s.apply(
                        Event::UserUrlReady {
                            url: user_url.clone(),
                            expires_at_ms,
                        },
                        now_ms(),
                    );
                    Ok(true)
                }))
                .await?;
                tracing::info!(session_id = %stored.id, "vendor page ready; waiting for the end user");
                self.pollers.wake(&stored.id);
                Ok(stored)
            }
            Err(err) => {
                let events = ev::vendor_calls(vendor, &calls, &failed_call(&err));
                let stored = Box::pin(self.record_attempt_error(
                    Some(adapter),
                    &id,
                    &err,
                    err.kind.reason(),
                    &events,
                ))
                .await?;
                // StartSession's own call answers what its replays will answer, from the same stored record.
                if let StartCall::Failed(e) = &stored.start_call {
                    if claimed_by_start {
                        return Err(e.to_error(&stored));
                    }
                }
                let retry_with = if stored.state.is_final() {
                    RetryWith::NewSession
                } else {
                    RetryWith::inputs(&stored.required_inputs, false)
                };
                Err(Error::Vendor {
                    session_id: id,
                    err,
                    retry_with,
                })
            }
        }
    }

    /// After a routed session's vendor call failed: when the vendor is at fault, nothing was billed or possibly
    /// billed, and no page was handed out, moves the session (still claimed) to the next failover candidate whose
    /// breaker lets it through, recording the attempt and its calls. `None`: no failover; the failure stands.
    async fn fail_over(
        &self,
        claimed: &Session,
        err: &VendorError,
        calls: &[ev::CallRecord],
    ) -> Result<Option<Session>, Error> {
        let Some(route) = &claimed.route else {
            return Ok(None);
        };
        if err.possibly_billed
            || CallHealth::of_error(err.kind) != CallHealth::Failed
            || claimed.vendor_ref.is_some()
            || claimed.user_url.is_some()
            || claimed.outcome.billing.iter().any(|b| b.billed)
        {
            return Ok(None);
        }
        let mut remaining = route.failover.clone();
        let next = loop {
            if remaining.is_empty() {
                return Ok(None);
            }
            let candidate = remaining.remove(0);
            let Ok(adapter) = self.vendors.adapter(candidate.vendor) else {
                continue;
            };
            let mut trial = claimed.clone();
            trial.vendor = candidate.vendor;
            trial.options = candidate.options.clone();
            if adapter.required_inputs(&trial).is_empty()
                && self.router.breakers().take(candidate.vendor)
            {
                break candidate;
            }
        };
        let from = claimed.vendor;
        let reason = err.kind.reason();
        let events = ev::vendor_calls(from, calls, &failed_call(err));
        let stored = self
            .mutate_logged(&claimed.id, false, &events, false, |s| {
                if s.state.is_final() || s.attempt_started_at_ms.is_none() || s.vendor != from {
                    return Ok(false);
                }
                let Some(route) = s.route.as_mut() else {
                    return Ok(false);
                };
                route.attempts.push(VendorAttempt {
                    vendor: from,
                    reason: reason.to_owned(),
                    at_ms: now_ms(),
                });
                route.failover = remaining.clone();
                s.vendor = next.vendor;
                s.options = next.options.clone();
                Ok(true)
            })
            .await?;
        if stored.vendor != next.vendor || stored.attempt_started_at_ms.is_none() {
            return Ok(None);
        }
        tracing::warn!(session_id = %stored.id, from = from.as_str(), to = next.vendor.as_str(), reason,
            "vendor failed before anything was billed; failing over");
        Ok(Some(stored))
    }

    /// Stores a decision. With `append_billing` the outcome's billing records are added to those already kept (a
    /// synchronous vendor's earlier failed calls); otherwise they replace them (a vendor's own complete list).
    async fn decide(
        &self,
        id: &str,
        verified: bool,
        failure: Option<Failure>,
        outcome: Outcome,
        append_billing: bool,
        events: &[SessionEvent],
    ) -> Result<Session, Error> {
        let stored = self
            .mutate_logged(id, true, events, false, |s| {
                let mut outcome = outcome.clone();
                if append_billing {
                    let mut billing = s.outcome.billing.clone();
                    billing.append(&mut outcome.billing);
                    outcome.billing = billing;
                }
                s.last_attempt_error = None;
                if s.start_call == StartCall::UnderWay {
                    s.start_call = StartCall::None;
                }
                let event = match (verified, failure.clone()) {
                    (true, _) => Event::Verified { outcome },
                    (false, Some(failure)) => Event::Failed { failure, outcome },
                    (false, None) => Event::Failed {
                        failure: Failure {
                            code: FailureCode::VendorError,
                            vendor_code: String::new(),
                            vendor_message: String::new(),
                        },
                        outcome,
                    },
                };
                match s.apply(event, now_ms()) {
                    Ok(_) => Ok(true),
                    Err(TransitionError::AlreadyFinal(state)) => {
                        tracing::warn!(session_id = %s.id, state = state.as_str(),
                            "vendor outcome arrived for a session that is already final; kept as it was");
                        Ok(false)
                    }
                }
            })
            .await?;
        tracing::info!(session_id = %stored.id, state = stored.state.as_str(), "session decided");
        Ok(stored)
    }

    /// Asks the vendor once how a session that waits for the end user stands, and stores what it learned. Used by
    /// the pollers, on-demand refreshes and the last check when the flow must be over. A vendor whose result query
    /// is one-shot (Megvii get_result) is asked only at that last check, and only once: the claim is stored first.
    pub async fn refresh(&self, id: &str) -> PollStep {
        let session = match self.load(id).await {
            Ok(s) => s,
            Err(Error::NotFound) => return PollStep::Done,
            Err(_) => return PollStep::Backoff(None),
        };
        if session.state.is_final()
            || session.vendor_ref.is_none()
            || session.attempt_started_at_ms.is_some()
        {
            return PollStep::Done;
        }
        let Ok(adapter) = self.vendors.adapter(session.vendor) else {
            return PollStep::Done;
        };
        let final_check = now_ms() >= session.expires_at_ms;
        let session = match adapter.result_query() {
            ResultQuery::None => return PollStep::Done,
            ResultQuery::Poll => session,
            ResultQuery::OnceAtEnd if !final_check => return PollStep::Done,
            ResultQuery::OnceAtEnd => {
                let claimed = self
                    .mutate(id, false, |s| {
                        if s.state.is_final() || s.final_query_at_ms.is_some() {
                            return Ok(false);
                        }
                        s.final_query_at_ms = Some(now_ms());
                        Ok(true)
                    })
                    .await;
                match claimed {
                    Ok(s) if s.final_query_at_ms.is_some() && s.version != session.version => s,
                    _ => return PollStep::Done,
                }
            }
        };
        let (polled, calls) = collect_calls(crate::metrics::for_tenant(
            &session.tenant,
            adapter.poll(&session, final_check),
        ))
        .await;
        let health = match &polled {
            Ok(_) => CallHealth::Ok,
            Err(e) => CallHealth::of_error(e.kind),
        };
        self.router.breakers().record(adapter.vendor(), health);
        // Requests sent (an access-token fetch on the way is not a result query), by what they found.
        let sent = calls
            .iter()
            .filter(|c| !c.endpoint.starts_with("oauth/"))
            .count() as u64;
        let found = match &polled {
            Ok(PollOutcome::Pending { .. }) => "pending",
            Ok(PollOutcome::Final { .. } | PollOutcome::Expired { .. }) => "final",
            Err(e) if e.kind == super::error::VendorErrorKind::RateLimited => "throttled",
            Err(_) => "error",
        };
        crate::metrics::global().status_polls(session.vendor.as_str(), found, sent);
        let ends_in = Duration::from_millis(
            u64::try_from(session.expires_at_ms.saturating_sub(now_ms())).unwrap_or(0),
        );
        let result = match polled {
            Ok(outcome) => {
                let result = CallResult {
                    billed: match &outcome {
                        PollOutcome::Pending { outcome, .. }
                        | PollOutcome::Final { outcome, .. }
                        | PollOutcome::Expired { outcome } => new_billed(&session.outcome, outcome),
                    },
                    ..Default::default()
                };
                let events = ev::vendor_calls(session.vendor, &calls, &result);
                self.apply_vendor_outcome(&session, outcome, &events, false)
                    .await
            }
            Err(e) => {
                let events = ev::vendor_calls(session.vendor, &calls, &failed_call(&e));
                tracing::warn!(session_id = %id, vendor = e.vendor.as_str(), reason = e.kind.reason(),
                    vendor_code = %e.vendor_code, "vendor result query failed");
                if adapter.result_query() == ResultQuery::OnceAtEnd {
                    let _ = self
                        .mutate_logged(id, true, &events, false, |s| {
                            if s.state.is_final() {
                                return Ok(false);
                            }
                            s.last_attempt_error = Some(AttemptError {
                                reason: e.kind.reason().to_owned(),
                                vendor_code: e.vendor_code.clone(),
                                vendor_message: e.vendor_message.clone(),
                                possibly_billed: false,
                            });
                            Ok(true)
                        })
                        .await;
                    return PollStep::Done;
                }
                // Failed polls are recorded while the session's log has room for them (a vendor down for hours
                // must not grow it without bound).
                for event in &events {
                    self.append(
                        id,
                        event,
                        Some((&ev::VENDOR_CALL_KINDS[..], ev::MAX_UNPROMPTED_CALLS)),
                    )
                    .await;
                }
                Ok(PollStep::Backoff(e.retry_after))
            }
        };
        match result {
            Ok(PollStep::Again { changed, .. }) => PollStep::Again {
                changed,
                ends_in: Some(ends_in),
            },
            Ok(step) => step,
            Err(_) => PollStep::Backoff(None),
        }
    }

    /// Stores what the vendor said about a session (a poll or a verified callback). Only forward moves apply; a
    /// final session stays as it is.
    async fn apply_vendor_outcome(
        &self,
        before: &Session,
        outcome: PollOutcome,
        events: &[SessionEvent],
        record_unchanged: bool,
    ) -> Result<PollStep, Error> {
        let id = before.id.as_str();
        match outcome {
            PollOutcome::Pending {
                outcome,
                attempt_failed,
                processing,
            } => {
                let billed = outcome.billing.iter().any(|b| b.billed);
                let attempt_error = attempt_failed.map(|f| AttemptError {
                    reason: REASON_USER_ATTEMPT_FAILED.into(),
                    vendor_code: f.vendor_code,
                    vendor_message: f.vendor_message,
                    possibly_billed: billed,
                });
                // A poll that changed nothing is not recorded (the log stays bounded however long a session is
                // polled); one that changed the session is, with the change. A callback is recorded either way.
                let stored = self
                    .mutate_logged(id, true, events, !record_unchanged, |s| {
                        if s.state.is_final() {
                            return Ok(false);
                        }
                        let mut changed = false;
                        if s.outcome != outcome {
                            s.outcome = outcome.clone();
                            changed = true;
                        }
                        if attempt_error.is_some() && s.last_attempt_error != attempt_error {
                            s.last_attempt_error = attempt_error.clone();
                            changed = true;
                        }
                        if processing
                            && s.apply(Event::VendorProcessing, now_ms()) == Ok(Applied::Changed)
                        {
                            changed = true;
                        }
                        Ok(changed)
                    })
                    .await?;
                Ok(PollStep::Again {
                    changed: stored.version != before.version,
                    ends_in: None,
                })
            }
            PollOutcome::Final {
                verified,
                failure,
                outcome,
            } => self
                .decide(id, verified, failure, outcome, false, events)
                .await
                .map(|_| PollStep::Done),
            PollOutcome::Expired { outcome } => {
                let s = self
                    .mutate_logged(id, true, events, false, |s| {
                        if s.state.is_final() {
                            return Ok(false);
                        }
                        s.outcome = outcome.clone();
                        Ok(s.apply(Event::Expired, now_ms()).is_ok())
                    })
                    .await?;
                tracing::info!(session_id = %s.id, state = s.state.as_str(), "vendor token ran out");
                Ok(PollStep::Done)
            }
        }
    }

    /// A vendor callback: verified (signature over the data as received, strict parsing), matched to its session
    /// and flow, then applied as a hint that can only move the session forward. Duplicates and replays change
    /// nothing. Every callback is counted as accepted or rejected.
    ///
    /// Each lands on the event log of the session it names: accepted ones with the change they made, rejected ones
    /// (when they name a real session of this vendor) while it has fewer than [`ev::MAX_REJECTED_CALLBACKS`], so
    /// forged callbacks cannot grow the log without bound. `source` is [`ev::SOURCE_NOTIFY`] or
    /// [`ev::SOURCE_RETURN`].
    pub async fn callback(
        &self,
        vendor: Vendor,
        data: &[u8],
        sign: &[u8],
        source: &'static str,
    ) -> Result<Session, CallbackRejection> {
        let result = self.callback_inner(vendor, data, sign, source).await;
        let counter = match &result {
            Ok(_) => &self.callbacks.accepted,
            Err(_) => &self.callbacks.rejected,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let arrived = if source == ev::SOURCE_RETURN {
            crate::metrics::CallbackSource::ReturnRelay
        } else {
            crate::metrics::CallbackSource::Notify
        };
        crate::metrics::global().callback(vendor.as_str(), arrived, result.is_ok());
        if let Err(r) = &result {
            tracing::warn!(
                vendor = vendor.as_str(),
                rejection = r.as_str(),
                "callback rejected"
            );
            self.record_rejected_callback(vendor, data, *r, source)
                .await;
        }
        result
    }

    /// Records a rejected callback on the session it names, if that is a session of `vendor`.
    async fn record_rejected_callback(
        &self,
        vendor: Vendor,
        data: &[u8],
        rejection: CallbackRejection,
        source: &'static str,
    ) {
        let Ok(adapter) = self.vendors.adapter(vendor) else {
            return;
        };
        let Some(id) = adapter.claimed_session_id(data) else {
            return;
        };
        match self.store.get(&id).await {
            Ok(Some(s)) if s.vendor == vendor => {}
            _ => return,
        }
        let event = SessionEvent::now(EventDetail::Callback {
            vendor,
            accepted: false,
            rejection_reason: rejection.as_str().to_owned(),
            source: source.to_owned(),
        });
        self.append(
            &id,
            &event,
            Some((
                &[ev::KIND_CALLBACK_REJECTED][..],
                ev::MAX_REJECTED_CALLBACKS,
            )),
        )
        .await;
    }

    /// Appends an event on its own (see [`SessionStore::append_event`]); a failure is logged, not returned: the
    /// change it would describe has happened or not regardless.
    async fn append(&self, id: &str, event: &SessionEvent, cap: Option<(&[&str], u32)>) {
        if let Err(e) = self.store.append_event(id, event, cap).await {
            tracing::warn!(session_id = %id, error = %e, kind = event.kind(), "session event not recorded");
        }
    }

    /// Records that `caller` read `kinds` (`personal_data`, `face_image`, `media`) of a session unmasked. Fails
    /// when it cannot be recorded, so that no unmasked read goes unrecorded.
    pub async fn record_unmasked_read(
        &self,
        caller: &Caller,
        id: &str,
        kinds: &[&str],
    ) -> Result<(), Error> {
        let event = SessionEvent::now(EventDetail::UnmaskedRead {
            caller_id: caller.id.clone(),
            tenant: caller.tenant.clone(),
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        });
        self.store
            .append_event(id, &event, None)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::NotFound => Error::NotFound,
                e => store_err(e),
            })
    }

    /// Records the redaction of a session by `caller` on its own. A redaction that changes the session passes
    /// [`SessionEvent::redacted`] to [`SessionService::mutate_logged`] instead, so both are one write.
    pub async fn record_redaction(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        self.store
            .append_event(id, &SessionEvent::redacted(&caller.id), None)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::NotFound => Error::NotFound,
                e => store_err(e),
            })
    }

    /// A page of the event log of one of `caller`'s tenant's sessions (another tenant's is NOT_FOUND): at most
    /// `page_size` events (0: [`ev::DEFAULT_PAGE_SIZE`]; at most [`ev::MAX_PAGE_SIZE`]) after `page_token`, and the
    /// token of the next page (empty on the last).
    pub async fn list_events(
        &self,
        caller: &Caller,
        id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<StoredEvent>, String), Error> {
        self.load_owned(caller, id).await?;
        let size = match u32::try_from(page_size) {
            Ok(0) => ev::DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(ev::MAX_PAGE_SIZE),
            Err(_) => return Err(Error::invalid("page_size", "must not be negative")),
        };
        let after = if page_token.is_empty() {
            0
        } else {
            ev::parse_page_token(&self.fingerprint_key, id, page_token).ok_or_else(|| {
                Error::invalid("page_token", "is not a page token of this session's events")
            })?
        };
        let mut events = self
            .store
            .events(id, after, size.saturating_add(1))
            .await
            .map_err(store_err)?;
        let more = events.len() > size as usize;
        events.truncate(size as usize);
        let next = match events.last() {
            Some(last) if more => ev::page_token(&self.fingerprint_key, id, last.sequence),
            _ => String::new(),
        };
        Ok((events, next))
    }

    /// Counts over a session's event log (for GetResult; the caller has loaded the session as its own).
    pub async fn events_summary(&self, id: &str) -> Result<EventsSummary, Error> {
        self.store.events_summary(id).await.map_err(store_err)
    }

    async fn callback_inner(
        &self,
        vendor: Vendor,
        data: &[u8],
        sign: &[u8],
        source: &'static str,
    ) -> Result<Session, CallbackRejection> {
        let adapter = self
            .vendors
            .adapter(vendor)
            .map_err(|_| CallbackRejection::UnknownSession)?;
        let verified = adapter.verify_callback(data, sign)?;
        let session = self
            .load(&verified.session_id)
            .await
            .map_err(|_| CallbackRejection::UnknownSession)?;
        if session.vendor != vendor
            || session.vendor_ref.as_deref() != Some(verified.vendor_ref.as_str())
        {
            return Err(CallbackRejection::UnknownSession);
        }
        let accepted = SessionEvent::now(EventDetail::Callback {
            vendor,
            accepted: true,
            rejection_reason: String::new(),
            source: source.to_owned(),
        });
        if session.state.is_final() {
            // A vendor's late or repeated callback: recorded, within the same bound as rejected ones.
            self.append(
                &session.id,
                &accepted,
                Some((
                    &[ev::KIND_CALLBACK_ACCEPTED][..],
                    ev::MAX_REJECTED_CALLBACKS,
                )),
            )
            .await;
            return Ok(session);
        }
        let outcome = adapter.interpret_callback(&session, data)?;
        tracing::info!(session_id = %session.id, vendor = vendor.as_str(), "verified callback");
        self.apply_vendor_outcome(&session, outcome, std::slice::from_ref(&accepted), true)
            .await
            .map_err(|_| CallbackRejection::UnknownSession)?;
        self.load(&session.id)
            .await
            .map_err(|_| CallbackRejection::UnknownSession)
    }

    /// Sessions in the store by state (every state, zero included), read at metrics scrape time.
    pub async fn sessions_by_state(&self) -> Result<Vec<(&'static str, u64)>, Error> {
        let counted = self.store.count_by_state().await.map_err(store_err)?;
        Ok(State::ALL
            .iter()
            .map(|state| {
                let name = state.as_str();
                let n = counted
                    .iter()
                    .filter(|(stored, _)| stored == name)
                    .map(|(_, n)| n)
                    .sum();
                (name, n)
            })
            .collect())
    }

    /// Callbacks accepted and rejected so far.
    pub fn callback_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.callbacks.accepted.load(Relaxed),
            self.callbacks.rejected.load(Relaxed),
        )
    }

    /// Refreshes a session nobody is polling, at most once per poll interval however many callers ask at once.
    async fn refresh_on_demand(&self, id: &str) {
        let gate = {
            let mut map = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(
                map.entry(id.to_owned())
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(0))),
            )
        };
        let mut last = gate.lock().await;
        let min_ms = i64::try_from(self.cfg.poll.min_interval.as_millis()).unwrap_or(i64::MAX);
        if now_ms().saturating_sub(*last) < min_ms {
            return;
        }
        let step = self.refresh(id).await;
        *last = now_ms();
        drop(last);
        if step == PollStep::Done {
            let mut map = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(id).is_some_and(|g| Arc::strong_count(g) == 1) {
                map.remove(id);
            }
        }
    }

    /// Reads, once per session however many callers ask at once, what a final session's decision left out (the
    /// vendor's detail queries: [`VendorAdapter::complete_outcome`]) and stores it. The decision and billing stay
    /// as they were; a failure only leaves the outcome as it is.
    async fn complete_on_demand(&self, session: Session) -> Session {
        let Ok(adapter) = self.vendors.adapter(session.vendor) else {
            return session;
        };
        let gate = {
            let mut map = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(
                map.entry(session.id.clone())
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(0))),
            )
        };
        let guard = gate.lock().await;
        let id = session.id.clone();
        // Another caller may have completed it meanwhile.
        let current = self.load(&id).await.unwrap_or(session);
        let (completed, calls) = collect_calls(crate::metrics::for_tenant(
            &current.tenant,
            adapter.complete_outcome(&current),
        ))
        .await;
        let result = match &completed {
            Ok(_) => CallResult::default(),
            Err(err) => failed_call(err),
        };
        let events = ev::vendor_calls(current.vendor, &calls, &result);
        let out = match completed {
            Ok(Some(outcome)) => self
                .mutate_logged(&id, false, &events, false, |s| {
                    if s.redaction.is_some() || s.outcome.billing != outcome.billing {
                        return Ok(false);
                    }
                    s.outcome = outcome.clone();
                    Ok(true)
                })
                .await
                .unwrap_or(current),
            Ok(None) => current,
            Err(e) => {
                tracing::warn!(session_id = %id, vendor = e.vendor.as_str(), reason = e.kind.reason(),
                    "vendor detail query failed; the result is served without it");
                for event in &events {
                    self.append(
                        &id,
                        event,
                        Some((&ev::VENDOR_CALL_KINDS[..], ev::MAX_UNPROMPTED_CALLS)),
                    )
                    .await;
                }
                current
            }
        };
        drop(guard);
        let mut map = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&id).is_some_and(|g| Arc::strong_count(g) <= 2) {
            map.remove(&id);
        }
        drop(map);
        drop(gate);
        out
    }

    /// The session for GetResult (one of `caller`'s tenant's): refreshed from the vendor when nobody polls it, plus
    /// the data asked for that is never stored (fetched from the vendor while it keeps it).
    pub async fn result(
        &self,
        caller: &Caller,
        id: &str,
        extras: ExtrasRequest,
    ) -> Result<(Session, ResultExtras), Error> {
        // The paths that call a vendor or write are boxed: a GetResult answered from the stored session (most of
        // them) then moves a small future through the RPC's layers instead of one sized for the rarest path.
        let mut session = self.load_owned(caller, id).await?;
        if !session.state.is_final() && session.expires_at_ms <= now_ms() {
            session = Box::pin(self.expire(id)).await?;
        }
        if !session.state.is_final() && session.vendor_ref.is_some() && !self.pollers.is_polling(id)
        {
            Box::pin(self.refresh_on_demand(id)).await;
            session = self.load(id).await?;
        }
        if session.state.is_final()
            && session.redaction.is_none()
            && self
                .vendors
                .adapter(session.vendor)
                .is_ok_and(|a| a.outcome_incomplete(&session))
        {
            session = Box::pin(self.complete_on_demand(session)).await;
        }
        if session.redaction.is_some() {
            // Nothing personal is left to reveal, and the vendor is never asked.
            if extras.any() {
                return Err(Error::SessionRedacted);
            }
            return Ok((session, ResultExtras::default()));
        }
        let mut kept = ResultExtras::default();
        if extras.reveal_personal_data {
            if let Some(doc) = &session.outcome.revealable_identity {
                if session
                    .outcome
                    .revealable_until_ms
                    .is_some_and(|t| now_ms() < t)
                {
                    kept.identity_document = Some(doc.clone());
                } else {
                    return Err(Error::Vendor {
                        session_id: session.id.clone(),
                        err: VendorError {
                            kind: super::error::VendorErrorKind::ResultExpired,
                            vendor: session.vendor,
                            vendor_code: String::new(),
                            vendor_message:
                                "the personal data was wiped after the vendor's retention".into(),
                            possibly_billed: false,
                            retry_after: None,
                        },
                        retry_with: RetryWith::SameRequest,
                    });
                }
            }
        }
        if !extras.any() || session.vendor_ref.is_none() {
            return Ok((session, kept));
        }
        Box::pin(self.fetch_extras(id, session, extras, kept)).await
    }

    /// The extras of a GetResult that the vendor keeps (face image, media), fetched now (none of it is stored).
    async fn fetch_extras(
        &self,
        id: &str,
        session: Session,
        extras: ExtrasRequest,
        kept: ResultExtras,
    ) -> Result<(Session, ResultExtras), Error> {
        let adapter = self.vendors.adapter(session.vendor)?;
        let (fetched, calls) = collect_calls(crate::metrics::for_tenant(
            &session.tenant,
            adapter.fetch_extras(&session, extras),
        ))
        .await;
        let result = match &fetched {
            Ok(_) => CallResult::default(),
            Err(err) => failed_call(err),
        };
        for event in ev::vendor_calls(session.vendor, &calls, &result) {
            self.append(
                id,
                &event,
                Some((&ev::VENDOR_CALL_KINDS[..], ev::MAX_UNPROMPTED_CALLS)),
            )
            .await;
        }
        let mut fetched = fetched.map_err(|err| Error::Vendor {
            session_id: session.id.clone(),
            err,
            retry_with: RetryWith::SameRequest,
        })?;
        if kept.identity_document.is_some() {
            fetched.identity_document = kept.identity_document;
        }
        Ok((session, fetched))
    }

    /// The browser came back from the vendor page: a hint to poll now (it changes nothing by itself).
    pub async fn user_returned(&self, id: &str) -> Result<Session, Error> {
        let session = self.load(id).await?;
        if !session.state.is_final() && session.vendor_ref.is_some() {
            if self.pollers.is_polling(id) {
                // The woken poll usually answers within a fraction of a second: wait for it (bounded), so the page
                // the browser gets says what the vendor decided (a failed kyc_retry attempt offers another try)
                // instead of "being checked" from the copy stored before the user finished.
                let mut change = Subscription::new(&self.hub, id);
                self.pollers.wake(id);
                let _ = tokio::time::timeout(RETURN_POLL_WAIT, change.changed()).await;
                drop(change);
                return self.load(id).await;
            } else {
                self.refresh_on_demand(id).await;
                return self.load(id).await;
            }
        }
        Ok(session)
    }

    /// Where the browser goes after the vendor page: the session's return URL for `success` (or the failure URL),
    /// else the plan's. Empty when none is configured.
    pub fn return_url(&self, session: &Session, success: bool) -> String {
        let (plan_success, plan_failure) = self
            .vendors
            .adapter(session.vendor)
            .map(|a| a.default_return_urls(session))
            .unwrap_or_default();
        let pick = |own: &str, plan: String| if own.is_empty() { plan } else { own.to_owned() };
        if success {
            pick(&session.return_success_url, plan_success)
        } else if !session.return_failure_url.is_empty() {
            session.return_failure_url.clone()
        } else if !plan_failure.is_empty() {
            plan_failure
        } else {
            // One return URL serves both outcomes when only the success URL is set.
            pick(&session.return_success_url, plan_success)
        }
    }

    /// Stores a failed call: the claim is released, the error recorded, and (with an adapter) the inputs whose
    /// re-submission means "try again" are dropped.
    async fn record_attempt_error(
        &self,
        adapter: Option<&dyn VendorAdapter>,
        id: &str,
        err: &VendorError,
        reason: &str,
        events: &[SessionEvent],
    ) -> Result<Session, Error> {
        tracing::warn!(session_id = %id, vendor = err.vendor.as_str(), reason,
            vendor_code = %err.vendor_code, possibly_billed = err.possibly_billed, "vendor call failed");
        self.mutate_logged(id, true, events, false, |s| {
            if s.state.is_final() {
                return Ok(false);
            }
            s.attempt_started_at_ms = None;
            s.last_attempt_error = Some(AttemptError {
                reason: reason.to_owned(),
                vendor_code: err.vendor_code.clone(),
                vendor_message: err.vendor_message.clone(),
                possibly_billed: err.possibly_billed,
            });
            // Only StartSession's own call: an answer it already kept stays what its replays answer.
            let for_start = s.start_call == StartCall::UnderWay;
            if for_start {
                s.start_call = StartCall::None;
            }
            // StartSession's answer, kept for its replays once the session says what trying again takes.
            let keep_for_start = |s: &mut Session| {
                if for_start {
                    let retry_with = if s.state.is_final() {
                        RetryWith::NewSession
                    } else {
                        RetryWith::inputs(&s.required_inputs, true)
                    };
                    s.start_call = StartCall::Failed(StartError::new(err, retry_with));
                }
            };
            let Some(adapter) = adapter else {
                keep_for_start(s);
                return Ok(true);
            };
            if !err.vendor_code.is_empty() && !err.possibly_billed {
                s.outcome.billing.push(BillingRecord {
                    vendor: err.vendor,
                    item: adapter.billing_item(s),
                    billed: false,
                    at_ms: now_ms(),
                    vendor_reference: String::new(),
                });
            }
            // A new attempt needs a new intent: the caller sends the image again (or a new identity first).
            adapter.reset_for_retry(&mut s.inputs);
            let required = adapter.required_inputs(s);
            if required.is_empty() {
                // The flow takes no input a caller could send again: this session cannot be retried.
                let failure = Failure {
                    code: FailureCode::VendorError,
                    vendor_code: err.vendor_code.clone(),
                    vendor_message: err.vendor_message.clone(),
                };
                let outcome = s.outcome.clone();
                let _ = s.apply(Event::Failed { failure, outcome }, now_ms());
                keep_for_start(s);
                return Ok(true);
            }
            let _ = s.apply(Event::InputsChanged { required }, now_ms());
            keep_for_start(s);
            Ok(true)
        })
        .await
    }

    /// Returns a session, expiring it first when its time is up.
    pub async fn get(&self, id: &str) -> Result<Session, Error> {
        let session = self.load(id).await?;
        if !session.state.is_final() && session.expires_at_ms <= now_ms() {
            return self.expire(id).await;
        }
        Ok(session)
    }

    async fn expire(&self, id: &str) -> Result<Session, Error> {
        let current = self.load(id).await?;
        if current.vendor_ref.is_some() && !current.state.is_final() {
            // The vendor decides: one last check, and EXPIRED only when it has nothing (or stays silent too long).
            self.refresh(id).await;
            let after = self.load(id).await?;
            let grace_over = now_ms()
                >= after
                    .expires_at_ms
                    .saturating_add(self.cfg.final_check_grace_ms);
            if after.state.is_final() || !grace_over {
                return Ok(after);
            }
        }
        let stale_ms = self.cfg.attempt_stale_ms;
        self.mutate(id, true, |s| {
            let now = now_ms();
            if s.state.is_final() || s.expires_at_ms > now {
                return Ok(false);
            }
            if s.attempt_started_at_ms.is_some_and(|t| now - t < stale_ms) {
                return Ok(false);
            }
            Ok(s.apply(Event::Expired, now).is_ok())
        })
        .await
    }

    /// Wipes vendor personal data kept for GetResult (Megvii OCR) once its retention is over; returns how many.
    pub async fn wipe_due(&self) -> Result<usize, Error> {
        let ids = self
            .store
            .personal_data_due(now_ms(), 500)
            .await
            .map_err(store_err)?;
        let mut n = 0;
        for id in ids {
            let wiped = self
                .mutate(&id, false, |s| {
                    if s.outcome.revealable_identity.is_none() {
                        return Ok(false);
                    }
                    s.outcome.revealable_identity = None;
                    s.outcome.revealable_until_ms = None;
                    Ok(true)
                })
                .await;
            match wiped {
                Ok(_) => n += 1,
                Err(e) => tracing::warn!(session_id = %id, error = %e, "cannot wipe personal data"),
            }
        }
        if n > 0 {
            self.compact_store("wipe").await;
        }
        Ok(n)
    }

    /// Makes removed data unrecoverable from the database files (SQLite: a WAL checkpoint that truncates the WAL,
    /// with `secure_delete` zeroing freed pages). A failure is logged: the data is gone from the rows already.
    async fn compact_store(&self, after: &'static str) {
        // The old record versions must not survive in the database files.
        if let Err(e) = self.store.compact().await {
            tracing::warn!(error = %e, after, "cannot compact the store");
        }
    }

    /// Deletes whole sessions older than `session_rows_max_ms` with their idempotency keys, their billing records
    /// kept in the daily aggregate; returns how many. Safe on every replica at once: each row is taken by one.
    pub async fn delete_old_rows(&self) -> Result<usize, Error> {
        const BATCH: u32 = 500;
        let before = now_ms().saturating_sub(self.cfg.session_rows_max_ms);
        let mut total = 0;
        loop {
            let n = self
                .store
                .delete_sessions_before(before, BATCH)
                .await
                .map_err(store_err)?;
            total += n;
            if n < BATCH as usize || *self.shutdown.borrow() {
                if total > 0 {
                    self.compact_store("row deletion").await;
                }
                return Ok(total);
            }
        }
    }

    /// Expires every session whose time is up; returns how many changed.
    pub async fn expire_due(&self) -> Result<usize, Error> {
        let ids = self.store.expired(now_ms(), 500).await.map_err(store_err)?;
        let mut n = 0;
        for id in ids {
            match self.expire(&id).await {
                Ok(s) if s.state == State::Expired => n += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(session_id = %id, error = %e, "cannot expire session"),
            }
        }
        Ok(n)
    }

    /// Cancels one of `caller`'s tenant's sessions that is not final.
    pub async fn cancel(
        &self,
        caller: &Caller,
        id: &str,
        reason: String,
    ) -> Result<Session, Error> {
        self.mutate(id, true, |s| {
            owned_by(s, caller)?;
            if s.state.is_final() {
                return Err(Error::SessionFinal(s.state));
            }
            if s.attempt_started_at_ms.is_some() {
                return Err(Error::SessionBusy);
            }
            s.apply(
                Event::Canceled {
                    reason: reason.clone(),
                },
                now_ms(),
            )
            .map_err(|TransitionError::AlreadyFinal(st)| Error::SessionFinal(st))?;
            Ok(true)
        })
        .await
    }

    /// Redacts one of `caller`'s tenant's sessions: its personal data is removed for good (see
    /// [`Session::redact_personal_data`]). A session that is not final is canceled first and its vendor flow
    /// abandoned (no further vendor call is made for it; a late callback or poll result changes nothing, since the
    /// session is final and the vendor's handle is gone); one with a vendor call under way is [`Error::SessionBusy`].
    /// Repeating it returns the redacted session unchanged. One compare-and-set write, so it holds across replicas.
    pub async fn redact(&self, caller: &Caller, id: &str) -> Result<Session, Error> {
        let mut redacted_now = false;
        // The Redacted event is written in the same store transaction as the redaction itself.
        let event = [SessionEvent::redacted(&caller.id)];
        let session = self
            .mutate_logged(id, true, &event, true, |s| {
                redacted_now = false;
                owned_by(s, caller)?;
                if s.redaction.is_some() {
                    return Ok(false);
                }
                if s.attempt_started_at_ms.is_some() {
                    return Err(Error::SessionBusy);
                }
                let now = now_ms();
                if !s.state.is_final() {
                    s.apply(
                        Event::Canceled {
                            reason: String::new(),
                        },
                        now,
                    )
                    .map_err(|TransitionError::AlreadyFinal(st)| Error::SessionFinal(st))?;
                }
                s.redact_personal_data(now);
                redacted_now = true;
                Ok(true)
            })
            .await?;
        if redacted_now {
            self.compact_store("redaction").await;
            // A poller of the session sees it final and stops.
            self.pollers.wake(id);
            tracing::info!(session_id = %session.id, state = session.state.as_str(), "session redacted");
        }
        Ok(session)
    }

    /// Vendor calls whose process stopped have unknown outcomes: they are released (never repeated automatically)
    /// and recorded as possibly billed. With `all` (at start-up over a store no other process uses) every claimed
    /// call is taken; otherwise only claims older than any call can run, so another replica's live call is never
    /// disturbed.
    pub async fn recover(&self, all: bool) -> Result<usize, Error> {
        let ids = self.store.in_flight().await.map_err(store_err)?;
        let stale_before = now_ms().saturating_sub(self.cfg.attempt_stale_ms);
        let mut n = 0;
        for id in ids {
            let session = self.load(&id).await?;
            if !all
                && session
                    .attempt_started_at_ms
                    .is_none_or(|t| t > stale_before)
            {
                continue;
            }
            let err = VendorError {
                kind: super::error::VendorErrorKind::Timeout,
                vendor: session.vendor,
                vendor_code: String::new(),
                vendor_message: "the service stopped during the vendor call".into(),
                possibly_billed: true,
                retry_after: None,
            };
            let adapter = self.vendors.adapter(session.vendor).ok();
            self.record_attempt_error(adapter, &id, &err, REASON_OUTCOME_UNKNOWN, &[])
                .await?;
            n += 1;
        }
        Ok(n)
    }

    /// Watches one of `caller`'s tenant's sessions: the current snapshot, then every stored change, ending after a
    /// final state, a failed reload or shutdown ([`Error::ShuttingDown`]).
    ///
    /// The stream is computed as it is polled, with no task and no channel of its own: while it waits it holds its
    /// hub subscription, the last version it sent and the shutdown signal, nothing more. Dropping it (the client went
    /// away) lets go of the session's poller and hub channel at once.
    pub async fn watch(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
    ) -> Result<impl Stream<Item = Result<Arc<Session>, Error>> + Send + 'static, Error> {
        self.load_owned(caller, id).await?;
        let rx = self.hub.subscribe(id);
        // From here on the watcher owns the subscription: whatever happens, dropping it releases the hub channel.
        let mut watcher = Watcher {
            svc: Arc::clone(self),
            id: id.to_owned(),
            snapshot: None,
            rx: Some(rx),
            shutdown: self.shutdown.clone(),
            last: 0,
            polling: false,
            _open: crate::metrics::global().stream_opened(),
        };
        let snapshot = self.get(id).await?;
        watcher.snapshot = Some(Arc::new(crate::status::into_watched_view(snapshot)));
        Ok(futures_util::stream::unfold(
            watcher,
            |mut watcher| async move {
                let item = watcher.next().await?;
                Some((item, watcher))
            },
        ))
    }
}

/// The state of one status stream (see [`SessionService::watch`]).
struct Watcher {
    svc: Arc<SessionService>,
    id: String,
    /// The opening snapshot, until it is sent.
    snapshot: Option<Arc<Session>>,
    /// The hub subscription; `None` once the stream has ended.
    rx: Option<broadcast::Receiver<Arc<Session>>>,
    shutdown: watch::Receiver<bool>,
    /// The version last sent: older or repeated changes are skipped.
    last: i64,
    /// Whether this watcher counts towards the session's poller.
    polling: bool,
    _open: crate::metrics::OpenStream<'static>,
}

/// What woke a waiting watcher.
enum Wake {
    Change(Arc<Session>),
    Reload,
    Closed,
    ShuttingDown,
}

impl Watcher {
    /// The next message of the stream, or `None` once it has ended.
    async fn next(&mut self) -> Option<Result<Arc<Session>, Error>> {
        if let Some(snapshot) = self.snapshot.take() {
            self.last = snapshot.version;
            if snapshot.state.is_final() {
                self.end();
            } else {
                // One poller per session, shared by every watcher, while anyone watches.
                self.svc.pollers.watch(&self.id);
                self.polling = true;
            }
            return Some(Ok(snapshot));
        }
        loop {
            let rx = self.rx.as_mut()?;
            let shutdown = &mut self.shutdown;
            let wake = tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        Wake::ShuttingDown
                    } else {
                        continue;
                    }
                }
                msg = rx.recv() => match msg {
                    Ok(s) => Wake::Change(s),
                    Err(broadcast::error::RecvError::Lagged(_)) => Wake::Reload,
                    Err(broadcast::error::RecvError::Closed) => Wake::Closed,
                },
                // Changes another replica made reach this stream through the store.
                _ = refresh_after(self.svc.cfg.watch_refresh) => Wake::Reload,
            };
            let session = match wake {
                Wake::Change(s) => s,
                Wake::ShuttingDown => {
                    self.end();
                    return Some(Err(Error::ShuttingDown));
                }
                // A lagging watcher skips what it missed and reads the latest state (boxed: rare, and a store
                // read is a large future the waiting stream should not carry).
                Wake::Reload => match Box::pin(self.svc.load(&self.id)).await {
                    Ok(s) => Arc::new(crate::status::into_watched_view(s)),
                    Err(e) => {
                        self.end();
                        return Some(Err(e));
                    }
                },
                Wake::Closed => {
                    // The channel went away (the session became final): send the stored final state if newer.
                    let stored = Box::pin(self.svc.load(&self.id)).await;
                    self.end();
                    return match stored {
                        Ok(s) if s.version > self.last => {
                            Some(Ok(Arc::new(crate::status::into_watched_view(s))))
                        }
                        _ => None,
                    };
                }
            };
            if session.version <= self.last {
                continue;
            }
            self.last = session.version;
            if session.state.is_final() {
                self.end();
            }
            return Some(Ok(session));
        }
    }

    /// Ends the stream: leaves the poller and the hub channel (once).
    fn end(&mut self) {
        if std::mem::take(&mut self.polling) {
            self.svc.pollers.unwatch(&self.id);
        }
        if let Some(rx) = self.rx.take() {
            drop(rx);
            self.svc.hub.release(&self.id);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.end();
    }
}

/// How long [`SessionService::user_returned`] waits for the poll it woke to change the session.
const RETURN_POLL_WAIT: Duration = Duration::from_secs(2);

/// A hub subscription that lets go of the session's channel when dropped (also when the RPC's deadline drops the
/// future holding it).
struct Subscription<'a> {
    hub: &'a Hub,
    id: &'a str,
    rx: Option<broadcast::Receiver<Arc<Session>>>,
}

impl<'a> Subscription<'a> {
    fn new(hub: &'a Hub, id: &'a str) -> Self {
        Self {
            hub,
            id,
            rx: Some(hub.subscribe(id)),
        }
    }

    /// Waits for a change published in this process: false once no more can come.
    async fn changed(&mut self) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        match rx.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => {
                self.rx = None;
                false
            }
        }
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.rx = None;
        self.hub.release(self.id);
    }
}

/// Sleeps for `every`, or forever when there is nothing to refresh.
async fn refresh_after(every: Option<Duration>) {
    match every {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending::<()>().await,
    }
}

/// Counts the billed vendor calls a stored change added to a session's outcome (`facegate_vendor_billed_total`). Each
/// record is counted by the one write that added it, whichever path (call, poll, callback) brought it.
fn count_new_billing(before: &Session, after: &Session) {
    let billed = |s: &Session| s.outcome.billing.iter().filter(|b| b.billed).count();
    let added = billed(after).saturating_sub(billed(before));
    if added > 0 {
        crate::metrics::global().billed(after.vendor.as_str(), &after.tenant, added as u64);
    }
}

/// How far in the future a consent's granted time may lie (clock skew between the caller and facegate), in ms.
pub const CONSENT_SKEW_MS: i64 = 5 * 60 * 1000;

/// A consent's granted time must lie between one session lifetime ago and [`CONSENT_SKEW_MS`] ahead: consent is
/// collected for this verification, just before it starts.
fn check_consent(consent: &Consent, now: i64, session_ttl_ms: i64) -> Result<(), Error> {
    if consent.granted_at_ms > now.saturating_add(CONSENT_SKEW_MS) {
        return Err(Error::invalid(
            "consent.granted_time",
            "must not be in the future",
        ));
    }
    if consent.granted_at_ms < now.saturating_sub(session_ttl_ms) {
        return Err(Error::invalid(
            "consent.granted_time",
            "must not be older than the session lifetime (session.ttl_secs)",
        ));
    }
    Ok(())
}

/// [`Error::NotFound`] unless `session` belongs to `caller`'s tenant.
/// The result of a failed adapter operation, for its calls' events.
fn failed_call(err: &VendorError) -> CallResult {
    CallResult {
        billed: false,
        possibly_billed: err.possibly_billed,
        error_reason: err.kind.reason().to_owned(),
        vendor_code: err.vendor_code.clone(),
    }
}

/// Whether `after` records a billed charge `before` did not.
fn new_billed(before: &Outcome, after: &Outcome) -> bool {
    let billed = |o: &Outcome| o.billing.iter().filter(|b| b.billed).count();
    billed(after) > billed(before)
}

fn owned_by(session: &Session, caller: &Caller) -> Result<(), Error> {
    if session.tenant == caller.tenant {
        Ok(())
    } else {
        Err(Error::NotFound)
    }
}

fn accepting_input(s: &Session) -> Result<(), Error> {
    if s.state.is_final() {
        return Err(Error::SessionFinal(s.state));
    }
    if s.attempt_started_at_ms.is_some() {
        return Err(Error::SessionBusy);
    }
    if s.state != State::RequiresInput {
        return Err(Error::InputNotAccepted(format!(
            "the session takes no more input in state {}",
            s.state.as_str()
        )));
    }
    Ok(())
}

fn take_image(
    adapter: &dyn VendorAdapter,
    inputs: &mut Inputs,
    image: ImageInput,
) -> Result<(), super::validation::Violation> {
    if image.data.len() > adapter.max_image_bytes() {
        return Err(super::validation::Violation {
            field: "data".into(),
            description: format!(
                "the image is larger than {} allows ({} bytes at most)",
                adapter.vendor().as_str(),
                adapter.max_image_bytes()
            ),
        });
    }
    adapter.accept_image(inputs, image)
}

/// `template` made a session of `adapter`'s vendor: the options resolved, the identity and images placed where the
/// flow needs them, what it still needs listed. Refused when the vendor publishes no threshold for the session's
/// false accept rate or cannot take the options or an image.
fn prepare(
    adapter: &dyn VendorAdapter,
    mut session: Session,
    requested: &RequestedOptions,
    images: Vec<ImageInput>,
) -> Result<Session, Error> {
    let vendor = adapter.vendor();
    let far = session.target_false_accept_rate;
    if threshold_for(adapter.published_thresholds(), far).is_none() {
        return Err(Error::invalid(
            "target_false_accept_rate",
            format!(
                "{} publishes score thresholds only for false accept rates {}",
                vendor.as_str(),
                describe(adapter.published_thresholds())
            ),
        ));
    }
    session.vendor = vendor;
    session.options = adapter
        .resolve_options(requested.clone())
        .map_err(|v| Error::InvalidArgument(vec![v]))?;
    for (i, image) in images.into_iter().enumerate() {
        take_image(adapter, &mut session.inputs, image)
            .map_err(|v| Error::InvalidArgument(vec![with_prefix(v, &format!("images[{i}]"))]))?;
    }
    session.required_inputs = adapter.required_inputs(&session);
    Ok(session)
}

/// Why a prepared session of a vendor cannot be routed to: a vendor that answers at once needs every input in the
/// request; a vendor that hands the user a page may wait for the identity (SubmitIdentity), but not for an image
/// the caller could not know to send (a reference-image plan needs its reference in the request).
fn unroutable(adapter: &dyn VendorAdapter, session: &Session) -> Option<&'static str> {
    let synchronous = adapter.result_query() == ResultQuery::None;
    if synchronous && !session.required_inputs.is_empty() {
        return Some("needs the identity and a probe image in the request");
    }
    let needs_image = session
        .required_inputs
        .iter()
        .any(|r| matches!(r, RequiredInput::ReferenceImage | RequiredInput::ProbeImage));
    needs_image.then_some("needs a reference image in the request")
}

fn with_prefix(mut v: super::validation::Violation, prefix: &str) -> super::validation::Violation {
    v.field = if v.field.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}.{}", v.field)
    };
    v
}

/// A new session id: `ses_` and a UUIDv7 (RFC 9562) in hex. Its leading 48 bits are the creation time in
/// milliseconds, so ids made one after another sort together and the store's indexes on ids (the sessions'
/// primary key, the events' session ids) grow at their ends, where one batch's inserts share pages, instead of
/// each touching a random page. Its other 74 bits are all random (no per-millisecond counter, which would make
/// an id guessable from its neighbour's).
fn new_session_id() -> String {
    let id = uuid::Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext));
    format!("ses_{}", id.simple())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;

    use futures_util::StreamExt;

    use super::*;
    use crate::domain::validation::{ImageFormat, Violation};
    use crate::domain::VendorErrorKind;
    use crate::store::sqlite::SqliteStore;

    /// The fakes' images: every one is the probe.
    fn take_probe(inputs: &mut Inputs, image: ImageInput) -> Result<(), Violation> {
        inputs.probe = Some(FaceImage {
            data: image.data,
            format: image.format,
            role: ImageRole::Probe,
            controls: image.controls,
        });
        Ok(())
    }

    /// The fakes' needs: the identity and a probe, as Juhe's.
    fn identity_and_probe(s: &Session) -> Vec<RequiredInput> {
        let mut v = Vec::new();
        if s.inputs.identity.is_none() {
            v.push(RequiredInput::Identity);
        }
        if s.inputs.probe.is_none() {
            v.push(RequiredInput::ProbeImage);
        }
        v
    }

    /// A Juhe-shaped adapter that counts calls, waits, and decides "verified".
    struct Fake {
        calls: Arc<AtomicU64>,
        delay: Duration,
    }

    #[async_trait]
    impl VendorAdapter for Fake {
        fn vendor(&self) -> Vendor {
            Vendor::Juhe
        }
        fn published_thresholds(&self) -> &[ScoreThreshold] {
            &crate::domain::far::JUHE_THRESHOLDS
        }
        fn resolve_options(&self, _: RequestedOptions) -> Result<VendorOptions, Violation> {
            Ok(VendorOptions::Juhe { encrypted: false })
        }
        fn max_image_bytes(&self) -> usize {
            1 << 20
        }
        fn accept_image(&self, inputs: &mut Inputs, image: ImageInput) -> Result<(), Violation> {
            take_probe(inputs, image)
        }
        fn reset_for_retry(&self, inputs: &mut Inputs) {
            inputs.probe = None;
        }
        fn billing_item(&self, _: &Session) -> String {
            "fake".into()
        }
        fn required_inputs(&self, s: &Session) -> Vec<RequiredInput> {
            identity_and_probe(s)
        }
        async fn proceed(&self, _: &Session) -> Result<Progress, VendorError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            Ok(Progress::Final {
                verified: true,
                failure: None,
                outcome: Outcome::default(),
            })
        }
    }

    async fn service(
        dir: &tempfile::TempDir,
        ttl_ms: i64,
        delay: Duration,
    ) -> (
        Arc<SessionService>,
        Arc<AtomicU64>,
        Arc<dyn SessionStore>,
        watch::Sender<bool>,
    ) {
        let store: Arc<dyn SessionStore> = Arc::new(
            SqliteStore::open(&dir.path().join("t.db"), &Default::default())
                .await
                .unwrap(),
        );
        let calls = Arc::new(AtomicU64::new(0));
        let vendors = Arc::new(Vendors {
            juhe: Some(Box::new(Fake {
                calls: Arc::clone(&calls),
                delay,
            })),
            baidu: None,
            megvii: None,
        });
        let (tx, rx) = watch::channel(false);
        let cfg = ServiceConfig {
            session_ttl_ms: ttl_ms,
            default_far: 1e-3,
            attempt_stale_ms: 60_000,
            replay_wait: Duration::from_secs(5),
            poll: PollConfig {
                min_interval: Duration::from_millis(50),
                max_interval: Duration::from_millis(200),
                jitter: 0.0,
                in_flight: 2,
            },
            final_check_grace_ms: 60_000,
            watch_refresh: None,
            live_mode: true,
            require_consent: false,
            personal_data_max_ms: ttl_ms,
            session_rows_max_ms: 90 * 86_400_000,
        };
        let svc = SessionService::new(Arc::clone(&store), vendors, Arc::new(Hub::new()), cfg, rx)
            .await
            .unwrap();
        (Arc::new(svc), calls, store, tx)
    }

    /// A synchronous adapter of `vendor` that answers each `proceed` (and `poll`) with the next scripted answer.
    struct Scripted {
        vendor: Vendor,
        proceeds: std::sync::Mutex<std::collections::VecDeque<Result<Progress, VendorError>>>,
        polls: std::sync::Mutex<std::collections::VecDeque<Result<PollOutcome, VendorError>>>,
        calls: Arc<AtomicU64>,
        page: bool,
    }

    impl Scripted {
        fn new(vendor: Vendor, proceeds: Vec<Result<Progress, VendorError>>) -> Self {
            Self {
                vendor,
                proceeds: std::sync::Mutex::new(proceeds.into()),
                polls: std::sync::Mutex::new(Default::default()),
                calls: Arc::new(AtomicU64::new(0)),
                page: false,
            }
        }
    }

    fn verified() -> Result<Progress, VendorError> {
        Ok(Progress::Final {
            verified: true,
            failure: None,
            outcome: Outcome::default(),
        })
    }

    fn failed(vendor: Vendor, kind: VendorErrorKind, possibly_billed: bool) -> VendorError {
        VendorError {
            kind,
            vendor,
            vendor_code: String::new(),
            vendor_message: String::new(),
            possibly_billed,
            retry_after: None,
        }
    }

    #[async_trait]
    impl VendorAdapter for Scripted {
        fn vendor(&self) -> Vendor {
            self.vendor
        }
        fn published_thresholds(&self) -> &[ScoreThreshold] {
            &crate::domain::far::JUHE_THRESHOLDS
        }
        fn resolve_options(&self, _: RequestedOptions) -> Result<VendorOptions, Violation> {
            Ok(VendorOptions::Juhe { encrypted: false })
        }
        fn max_image_bytes(&self) -> usize {
            1 << 20
        }
        fn accept_image(&self, inputs: &mut Inputs, image: ImageInput) -> Result<(), Violation> {
            take_probe(inputs, image)
        }
        fn reset_for_retry(&self, inputs: &mut Inputs) {
            inputs.probe = None;
        }
        fn billing_item(&self, _: &Session) -> String {
            "scripted".into()
        }
        fn required_inputs(&self, s: &Session) -> Vec<RequiredInput> {
            identity_and_probe(s)
        }
        fn result_query(&self) -> ResultQuery {
            if self.page {
                ResultQuery::Poll
            } else {
                ResultQuery::None
            }
        }
        async fn proceed(&self, _: &Session) -> Result<Progress, VendorError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self.proceeds.lock().unwrap().pop_front();
            next.unwrap_or_else(|| Err(failed(self.vendor, VendorErrorKind::ProtocolError, false)))
        }
        async fn poll(&self, session: &Session, _: bool) -> Result<PollOutcome, VendorError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self.polls.lock().unwrap().pop_front();
            next.unwrap_or_else(|| {
                Ok(PollOutcome::Pending {
                    outcome: session.outcome.clone(),
                    attempt_failed: None,
                    processing: false,
                })
            })
        }
    }

    /// A service whose Juhe and Megvii slots hold `juhe` and `megvii`, routing to Juhe first (all but surely: its
    /// weight is 2^32 - 1 against 1) and failing over to Megvii.
    async fn routed(
        dir: &tempfile::TempDir,
        juhe: Scripted,
        megvii: Scripted,
    ) -> (Arc<SessionService>, Arc<AtomicU64>, Arc<AtomicU64>) {
        let (juhe_calls, megvii_calls) = (Arc::clone(&juhe.calls), Arc::clone(&megvii.calls));
        let store: Arc<dyn SessionStore> = Arc::new(
            SqliteStore::open(&dir.path().join("r.db"), &Default::default())
                .await
                .unwrap(),
        );
        let vendors = Arc::new(Vendors {
            juhe: Some(Box::new(juhe)),
            baidu: None,
            megvii: Some(Box::new(megvii)),
        });
        let (_tx, rx) = watch::channel(false);
        let (base, _, _, _) = service(dir, 60_000, Duration::ZERO).await;
        let policies = Policies {
            default: Some(vec![
                Weighted {
                    vendor: Vendor::Juhe,
                    weight: u32::MAX,
                },
                Weighted {
                    vendor: Vendor::Megvii,
                    weight: 1,
                },
            ]),
            ..Default::default()
        };
        let svc = SessionService::new(store, vendors, Arc::new(Hub::new()), base.cfg.clone(), rx)
            .await
            .unwrap()
            .with_router(Router::new(policies, BreakerSettings::default()));
        (Arc::new(svc), juhe_calls, megvii_calls)
    }

    fn routed_req(id: &str) -> StartRequest {
        StartRequest {
            vendor: None,
            ..start_req(id, true)
        }
    }

    #[tokio::test]
    async fn a_vendor_failing_before_anything_is_billed_fails_over_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let juhe = Scripted::new(
            Vendor::Juhe,
            vec![Err(failed(
                Vendor::Juhe,
                VendorErrorKind::Unavailable,
                false,
            ))],
        );
        let megvii = Scripted::new(Vendor::Megvii, vec![verified()]);
        let (svc, juhe_calls, megvii_calls) = routed(&dir, juhe, megvii).await;
        let s = svc.start(&anon(), routed_req("route-1")).await.unwrap();
        assert_eq!(s.state, State::Verified);
        assert_eq!(s.vendor, Vendor::Megvii);
        let route = s.route.clone().unwrap();
        assert_eq!(route.order, vec![Vendor::Juhe, Vendor::Megvii]);
        assert_eq!(route.attempts.len(), 1);
        assert_eq!(route.attempts[0].vendor, Vendor::Juhe);
        assert_eq!(route.attempts[0].reason, "VENDOR_UNAVAILABLE");
        assert!(route.failover.is_empty());
        assert_eq!(
            (
                juhe_calls.load(Ordering::SeqCst),
                megvii_calls.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        // The store holds the new vendor (its column too: listing by vendor finds it).
        let stored = svc.get(&s.id).await.unwrap();
        assert_eq!(stored.vendor, Vendor::Megvii);
        assert_eq!(stored.route, s.route);
    }

    #[tokio::test]
    async fn no_failover_after_a_possibly_billed_call_or_a_users_fault() {
        for (kind, possibly_billed) in [
            (VendorErrorKind::Timeout, true),
            (VendorErrorKind::ProtocolError, true),
            (VendorErrorKind::RejectedInput, false),
            (VendorErrorKind::NoRecord, false),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let juhe = Scripted::new(
                Vendor::Juhe,
                vec![Err(failed(Vendor::Juhe, kind, possibly_billed))],
            );
            let megvii = Scripted::new(Vendor::Megvii, vec![verified()]);
            let (svc, juhe_calls, megvii_calls) = routed(&dir, juhe, megvii).await;
            let err = svc.start(&anon(), routed_req("route-2")).await.unwrap_err();
            let Error::Vendor { session_id, .. } = &err else {
                panic!("{kind:?}: {err:?}");
            };
            assert_eq!(juhe_calls.load(Ordering::SeqCst), 1, "{kind:?}");
            assert_eq!(
                megvii_calls.load(Ordering::SeqCst),
                0,
                "{kind:?}: no failover"
            );
            let stored = svc.get(session_id).await.unwrap();
            assert_eq!(stored.vendor, Vendor::Juhe, "{kind:?}");
            assert!(stored.route.unwrap().attempts.is_empty(), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn no_failover_once_the_user_has_a_page() {
        let dir = tempfile::tempdir().unwrap();
        let mut juhe = Scripted::new(
            Vendor::Juhe,
            vec![Ok(Progress::AwaitUser {
                user_url: "https://page.example/x".into(),
                expires_at_ms: now_ms() + 60_000,
                decide_by_ms: now_ms() + 60_000,
                vendor_ref: "ref".into(),
                outcome: Outcome::default(),
            })],
        );
        juhe.page = true;
        juhe.polls = std::sync::Mutex::new(
            vec![Err(failed(
                Vendor::Juhe,
                VendorErrorKind::Unavailable,
                false,
            ))]
            .into(),
        );
        let megvii = Scripted::new(Vendor::Megvii, vec![verified()]);
        let (svc, _, megvii_calls) = routed(&dir, juhe, megvii).await;
        let s = svc.start(&anon(), routed_req("route-3")).await.unwrap();
        assert_eq!(s.state, State::AwaitingUser);
        let _ = svc.refresh(&s.id).await;
        let after = svc.get(&s.id).await.unwrap();
        assert_eq!(after.vendor, Vendor::Juhe);
        assert_eq!(after.state, State::AwaitingUser);
        assert!(after.route.unwrap().attempts.is_empty());
        assert_eq!(megvii_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn five_failures_open_the_breaker_and_routing_skips_the_vendor() {
        let dir = tempfile::tempdir().unwrap();
        let unavailable = || Err(failed(Vendor::Juhe, VendorErrorKind::Unavailable, false));
        let juhe = Scripted::new(Vendor::Juhe, (0..5).map(|_| unavailable()).collect());
        let megvii = Scripted::new(Vendor::Megvii, (0..6).map(|_| verified()).collect());
        let (svc, juhe_calls, _) = routed(&dir, juhe, megvii).await;
        for i in 0..5 {
            let s = svc
                .start(&anon(), routed_req(&format!("route-b{i}")))
                .await
                .unwrap();
            assert_eq!(s.vendor, Vendor::Megvii, "{i}: failed over");
        }
        let s = svc.start(&anon(), routed_req("route-b5")).await.unwrap();
        assert_eq!(s.vendor, Vendor::Megvii);
        assert_eq!(
            s.route.unwrap().order,
            vec![Vendor::Megvii],
            "Juhe is skipped"
        );
        assert_eq!(juhe_calls.load(Ordering::SeqCst), 5);
        let juhe_state = svc
            .router()
            .breakers()
            .snapshot()
            .into_iter()
            .find(|(v, _, _)| *v == Vendor::Juhe)
            .map(|(_, state, opened)| (state, opened));
        assert_eq!(
            juhe_state,
            Some((crate::domain::routing::BreakerState::Open, 1))
        );
        // A request that names the vendor is served as before, breaker or not.
        let named = svc
            .start(
                &anon(),
                StartRequest {
                    vendor: Some(Vendor::Juhe),
                    ..start_req("route-named", true)
                },
            )
            .await;
        assert!(named.is_err(), "Juhe's script is spent: it was called");
        assert_eq!(juhe_calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn a_request_no_candidate_can_serve_is_refused_before_anything_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let juhe = Scripted::new(Vendor::Juhe, vec![]);
        let megvii = Scripted::new(Vendor::Megvii, vec![]);
        let (svc, juhe_calls, megvii_calls) = routed(&dir, juhe, megvii).await;
        // Synchronous vendors need the identity and the probe in the request.
        let err = svc
            .start(
                &anon(),
                StartRequest {
                    vendor: None,
                    ..start_req("route-none", false)
                },
            )
            .await
            .unwrap_err();
        let Error::NoVendorAvailable(why) = err else {
            panic!("{err:?}");
        };
        assert!(
            why.contains("juhe: needs the identity and a probe image"),
            "{why}"
        );
        assert!(why.contains("megvii:"), "{why}");
        assert_eq!(
            (
                juhe_calls.load(Ordering::SeqCst),
                megvii_calls.load(Ordering::SeqCst)
            ),
            (0, 0)
        );
        let stored: u64 = svc
            .sessions_by_state()
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(stored, 0);
    }

    fn anon() -> crate::domain::caller::Caller {
        crate::domain::caller::Caller::anonymous(crate::domain::caller::DEFAULT_TENANT)
    }

    fn start_req(id: &str, with_inputs: bool) -> StartRequest {
        StartRequest {
            request_id: id.into(),
            vendor: Some(Vendor::Juhe),
            options: RequestedOptions::Default,
            identity: with_inputs.then(|| Identity {
                name: "测试".into(),
                id_number: "110101190001010014".into(),
                id_type: crate::domain::validation::IdType::MainlandResidentIdCard,
            }),
            images: if with_inputs {
                vec![ImageInput {
                    data: vec![0xff, 0xd8, 0xff, 0],
                    format: ImageFormat::Jpeg,
                    role: None,
                    slot: 0,
                    controls: ImageControls::default(),
                }]
            } else {
                vec![]
            },
            success_url: String::new(),
            failure_url: String::new(),
            client_reference_id: String::new(),
            metadata: BTreeMap::new(),
            target_far: None,
            consent: None,
            canonical: id.as_bytes().to_vec(),
        }
    }

    #[test]
    fn session_ids_sort_by_creation_and_keep_74_random_bits() {
        let ids: Vec<String> = (0..2000).map(|_| new_session_id()).collect();
        let bits = |id: &str| {
            let hex = id.strip_prefix("ses_").unwrap();
            assert_eq!(hex.len(), 32);
            u128::from_str_radix(hex, 16).unwrap()
        };
        let mut by_ms: std::collections::BTreeMap<u128, Vec<u128>> = Default::default();
        for pair in ids.windows(2) {
            // The creation time leads: a later id never sorts before an earlier millisecond's.
            assert!(bits(&pair[0]) >> 80 <= bits(&pair[1]) >> 80);
        }
        for id in &ids {
            let v = bits(id);
            assert_eq!((v >> 76) & 0xf, 7, "version 7");
            by_ms.entry(v >> 80).or_default().push(v);
        }
        // Within one millisecond the random part is random, not a counter: ids made one after another differ in
        // far more than their last bits.
        let random = |v: u128| ((v >> 64) & 0xfff) << 62 | (v & ((1 << 62) - 1));
        let mut close = 0;
        let mut pairs = 0;
        for same_ms in by_ms.values() {
            for pair in same_ms.windows(2) {
                pairs += 1;
                if (random(pair[0]) ^ random(pair[1])) >> 40 == 0 {
                    close += 1;
                }
            }
        }
        assert!(pairs > 0);
        assert_eq!(
            close, 0,
            "{close} of {pairs} neighbours share their top 34 random bits"
        );
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_abandon_the_vendor_call() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, calls, _, _tx) = service(&dir, 60_000, Duration::from_millis(300)).await;
        let svc2 = Arc::clone(&svc);
        let gave_up = tokio::time::timeout(Duration::from_millis(50), async move {
            svc2.start(&anon(), start_req("drop", true)).await
        })
        .await;
        assert!(
            gave_up.is_err(),
            "the caller gave up before the vendor answered"
        );
        // The replay waits for the call that is still under way and sees its stored outcome.
        let s = svc.start(&anon(), start_req("drop", true)).await.unwrap();
        assert_eq!(s.state, State::Verified);
        assert!(
            s.inputs.is_empty(),
            "personal data wiped at the final state"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// The service with a daily cap of `cap` billed calls for every tenant.
    async fn capped(
        dir: &tempfile::TempDir,
        cap: u64,
    ) -> (
        Arc<SessionService>,
        Arc<AtomicU64>,
        Arc<dyn SessionStore>,
        watch::Sender<bool>,
    ) {
        let (svc, calls, store, tx) = service(dir, 60_000, Duration::ZERO).await;
        let auth = crate::config::AuthConfig {
            default_quota: crate::config::QuotaConfig {
                billed_calls_per_day: cap,
                ..Default::default()
            },
            ..Default::default()
        };
        let svc = Arc::into_inner(svc)
            .unwrap()
            .with_quotas(Arc::new(Quotas::new(&auth)));
        (Arc::new(svc), calls, store, tx)
    }

    fn billed_today(rows: Vec<(String, u64)>) -> u64 {
        rows.into_iter()
            .find(|(t, _)| t == crate::domain::caller::DEFAULT_TENANT)
            .map_or(0, |(_, n)| n)
    }

    fn is_cap_refusal(e: &Error) -> bool {
        matches!(
            e,
            Error::QuotaExceeded { quota, retry_after: Some(_), .. }
                if *quota == crate::domain::quota::BILLED_CALLS_PER_DAY
        )
    }

    #[tokio::test]
    async fn the_daily_cap_refuses_before_anything_is_written_or_called() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, calls, store, _tx) = capped(&dir, 2).await;
        let today = crate::domain::quota::utc_day(now_ms());
        for i in 0..2 {
            let s = svc
                .start(&anon(), start_req(&format!("ok{i}"), true))
                .await
                .unwrap();
            assert_eq!(s.state, State::Verified);
        }
        // A repeated request replays its session: no second reservation, no second call.
        svc.start(&anon(), start_req("ok0", true)).await.unwrap();
        assert_eq!(billed_today(store.billed_calls(today).await.unwrap()), 2);

        let e = svc
            .start(&anon(), start_req("over", true))
            .await
            .unwrap_err();
        assert!(is_cap_refusal(&e), "{e:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "no vendor call over the cap"
        );
        assert!(
            store
                .idempotency(crate::domain::caller::DEFAULT_TENANT, "over")
                .await
                .unwrap()
                .is_none(),
            "nothing written: a retry once the cap allows starts afresh"
        );
        assert_eq!(billed_today(store.billed_calls(today).await.unwrap()), 2);

        // Inputs given one by one: the one that completes them is refused, and the session stays as it was.
        let s = svc.start(&anon(), start_req("later", false)).await.unwrap();
        let full = start_req("x", true);
        let s = svc
            .submit_identity(&anon(), &s.id, full.identity.clone().unwrap())
            .await
            .unwrap();
        assert_eq!(s.required_inputs, vec![RequiredInput::ProbeImage]);
        let image = full.images[0].clone();
        let e = svc
            .upload_image(&anon(), &s.id, image.clone())
            .await
            .unwrap_err();
        assert!(is_cap_refusal(&e), "{e:?}");
        let after = store.get(&s.id).await.unwrap().unwrap();
        assert_eq!(after.state, State::RequiresInput);
        assert_eq!(after.version, s.version, "nothing stored");
        assert!(after.attempt_started_at_ms.is_none());
        assert!(after.inputs.probe.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn without_a_cap_calls_are_counted_and_inputs_claim_once() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, calls, store, _tx) = capped(&dir, 0).await;
        let today = crate::domain::quota::utc_day(now_ms());
        let s = svc.start(&anon(), start_req("parts", false)).await.unwrap();
        let full = start_req("x", true);
        svc.submit_identity(&anon(), &s.id, full.identity.clone().unwrap())
            .await
            .unwrap();
        assert_eq!(
            billed_today(store.billed_calls(today).await.unwrap()),
            0,
            "an input that does not complete the inputs reserves nothing"
        );
        let done = svc
            .upload_image(&anon(), &s.id, full.images[0].clone())
            .await
            .unwrap();
        assert_eq!(done.state, State::Verified);
        for i in 0..3 {
            svc.start(&anon(), start_req(&format!("inline{i}"), true))
                .await
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(billed_today(store.billed_calls(today).await.unwrap()), 4);
        // An input the session refuses (final already) reserves nothing.
        let e = svc
            .upload_image(&anon(), &s.id, full.images[0].clone())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::SessionFinal(_)), "{e:?}");
        assert_eq!(billed_today(store.billed_calls(today).await.unwrap()), 4);
    }

    #[tokio::test]
    async fn recovery_releases_calls_that_were_under_way_at_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, calls, store, _tx) = service(&dir, 60_000, Duration::ZERO).await;
        let s = svc
            .start(&anon(), start_req("recover", false))
            .await
            .unwrap();
        let mut stuck = store.get(&s.id).await.unwrap().unwrap();
        stuck.inputs.identity = start_req("x", true).identity;
        stuck.inputs.probe = Some(FaceImage {
            data: vec![1],
            format: ImageFormat::Jpeg,
            role: ImageRole::Probe,
            controls: ImageControls::default(),
        });
        stuck.attempt_started_at_ms = Some(now_ms());
        stuck.version += 1;
        store.update(&stuck, s.version, &[]).await.unwrap();
        assert_eq!(store.in_flight().await.unwrap(), vec![s.id.clone()]);

        assert_eq!(
            svc.recover(false).await.unwrap(),
            0,
            "a fresh claim may be another replica's live call"
        );
        assert_eq!(svc.recover(true).await.unwrap(), 1);
        let after = svc.get(&s.id).await.unwrap();
        assert_eq!(after.state, State::RequiresInput);
        assert!(after.attempt_started_at_ms.is_none());
        assert_eq!(after.required_inputs, vec![RequiredInput::ProbeImage]);
        let e = after.last_attempt_error.unwrap();
        assert_eq!(e.reason, REASON_OUTCOME_UNKNOWN);
        assert!(e.possibly_billed);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "never repeated automatically"
        );
        assert!(store.in_flight().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn expiry_reaches_watchers_and_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _, _, _tx) = service(&dir, 100, Duration::ZERO).await;
        let s = svc
            .start(&anon(), start_req("expire", false))
            .await
            .unwrap();
        let mut rx = Box::pin(svc.watch(&anon(), &s.id).await.unwrap());
        assert_eq!(
            rx.next().await.unwrap().unwrap().state,
            State::RequiresInput
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(svc.expire_due().await.unwrap(), 1);
        assert_eq!(rx.next().await.unwrap().unwrap().state, State::Expired);
        assert!(
            rx.next().await.is_none(),
            "the stream ends after a final state"
        );
        assert_eq!(svc.hub().watched_sessions(), 0);
        let err = svc.cancel(&anon(), &s.id, String::new()).await.unwrap_err();
        assert!(matches!(err, Error::SessionFinal(State::Expired)));
    }

    #[tokio::test]
    async fn shutdown_ends_open_streams() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _, _, tx) = service(&dir, 60_000, Duration::ZERO).await;
        let s = svc
            .start(&anon(), start_req("shutdown", false))
            .await
            .unwrap();
        let mut rx = Box::pin(svc.watch(&anon(), &s.id).await.unwrap());
        assert!(rx.next().await.unwrap().is_ok());
        tx.send(true).unwrap();
        assert!(matches!(rx.next().await.unwrap(), Err(Error::ShuttingDown)));
        assert!(matches!(
            svc.start(&anon(), start_req("after", false)).await,
            Err(Error::ShuttingDown)
        ));
    }

    #[tokio::test]
    async fn a_lagging_watcher_reloads_the_latest_state_and_a_dropped_one_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _, store, _tx) = service(&dir, 60_000, Duration::ZERO).await;
        let s = svc.start(&anon(), start_req("lag", false)).await.unwrap();
        let mut rx = Box::pin(svc.watch(&anon(), &s.id).await.unwrap());
        assert_eq!(rx.next().await.unwrap().unwrap().version, s.version);
        // More changes than the hub buffers, while the watcher reads none of them.
        let mut current = s.clone();
        for _ in 0..=crate::status::CHANNEL_CAPACITY {
            let before = current.version;
            current.version += 1;
            current.client_reference_id = format!("v{}", current.version);
            store.update(&current, before, &[]).await.unwrap();
            svc.hub().publish(&current);
        }
        let caught_up = rx.next().await.unwrap().unwrap();
        assert_eq!(caught_up.version, current.version, "the latest state");
        assert_eq!(caught_up.client_reference_id, current.client_reference_id);
        // Then every further change, in order, up to the final one.
        let canceled = svc.cancel(&anon(), &s.id, String::new()).await.unwrap();
        let last = rx.next().await.unwrap().unwrap();
        assert_eq!(
            (last.state, last.version),
            (State::Canceled, canceled.version)
        );
        assert!(rx.next().await.is_none());

        // A stream dropped by its client (never polled, or waiting) gives the hub channel back at once.
        let s = svc.start(&anon(), start_req("gone", false)).await.unwrap();
        let never_polled = svc.watch(&anon(), &s.id).await.unwrap();
        let mut waiting = Box::pin(svc.watch(&anon(), &s.id).await.unwrap());
        assert!(waiting.next().await.unwrap().is_ok());
        assert_eq!(svc.hub().watched_sessions(), 1);
        drop(never_polled);
        assert_eq!(svc.hub().watched_sessions(), 1, "still watched");
        drop(waiting);
        assert_eq!(svc.hub().watched_sessions(), 0);
    }

    #[tokio::test]
    async fn sessions_are_kept_to_their_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _, _, _tx) = service(&dir, 60_000, Duration::ZERO).await;
        let shop = crate::domain::caller::Caller::anonymous("shop");
        let other = crate::domain::caller::Caller::anonymous("other");
        let s = svc.start(&shop, start_req("same", false)).await.unwrap();
        assert_eq!((s.tenant.as_str(), s.live_mode), ("shop", true));
        assert!(matches!(
            svc.result(&other, &s.id, Default::default()).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            svc.watch(&other, &s.id).await,
            Err(Error::NotFound)
        ));
        assert!(matches!(
            svc.cancel(&other, &s.id, String::new()).await,
            Err(Error::NotFound)
        ));
        // The same request id in another tenant is another session; in the same tenant, the same one.
        let theirs = svc.start(&other, start_req("same", false)).await.unwrap();
        assert_ne!(theirs.id, s.id);
        assert_eq!(theirs.tenant, "other");
        let again = svc.start(&shop, start_req("same", false)).await.unwrap();
        assert_eq!(again.id, s.id);
        assert!(svc.cancel(&shop, &s.id, String::new()).await.is_ok());
    }

    #[tokio::test]
    async fn redaction_and_state_changes_land_on_the_event_log() {
        let dir = tempfile::tempdir().unwrap();
        let (svc, _, _, _tx) = service(&dir, 60_000, Duration::ZERO).await;
        let shop = crate::domain::caller::Caller::anonymous("shop");
        let s = svc.start(&shop, start_req("ev", false)).await.unwrap();
        svc.cancel(&shop, &s.id, "the user's own words".into())
            .await
            .unwrap();
        // A redaction that changes the session writes its event with the change; one on its own appends it.
        svc.mutate_logged(&s.id, false, &[SessionEvent::redacted("ops")], false, |s| {
            s.metadata.clear();
            Ok(true)
        })
        .await
        .unwrap();
        svc.record_redaction(&shop, &s.id).await.unwrap();
        assert!(matches!(
            svc.record_redaction(&shop, "ses_missing").await,
            Err(Error::NotFound)
        ));
        let (events, next) = svc.list_events(&shop, &s.id, 0, "").await.unwrap();
        assert!(next.is_empty());
        let details: Vec<EventDetail> = events.into_iter().map(|e| e.event.detail).collect();
        assert_eq!(
            details,
            vec![
                EventDetail::StateChanged {
                    from: None,
                    to: State::RequiresInput,
                    failure_code: None,
                    reason: String::new(),
                },
                EventDetail::StateChanged {
                    from: Some(State::RequiresInput),
                    to: State::Canceled,
                    failure_code: None,
                    reason: String::new(),
                },
                EventDetail::Redacted {
                    caller_id: "ops".into()
                },
                EventDetail::Redacted {
                    caller_id: shop.id.clone()
                },
            ]
        );
        let other = crate::domain::caller::Caller::anonymous("other");
        assert!(matches!(
            svc.list_events(&other, &s.id, 0, "").await,
            Err(Error::NotFound)
        ));
        let (page, next) = svc.list_events(&shop, &s.id, 3, "").await.unwrap();
        assert_eq!(page.len(), 3);
        let (rest, last) = svc.list_events(&shop, &s.id, 3, &next).await.unwrap();
        assert_eq!((rest.len(), rest[0].sequence, last.as_str()), (1, 4, ""));
        assert!(matches!(
            svc.list_events(&shop, &s.id, 0, "bogus").await,
            Err(Error::InvalidArgument(_))
        ));
    }
}
