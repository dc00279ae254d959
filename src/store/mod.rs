//! Session persistence. [`SessionStore`] is what the domain sees; [`sqlite::SqliteStore`] is the embedded
//! implementation and [`postgres::PostgresStore`] the one several replicas can share. Both are [`sql::SqlStore`]:
//! one implementation of the contract over either database, which differ only in their statements, schema
//! migrations and error handling.

mod outbox;
pub mod postgres;
mod recent;
pub mod seal;
pub mod sql;
pub mod sqlite;
mod sqlite_writer;
mod writer;

use async_trait::async_trait;

use crate::domain::events::{EventsSummary, SessionEvent, StoredEvent};
use crate::domain::webhooks::{
    AttemptRecord, AttemptRecorded, Backlog, ClaimedMessage, DeliveryFilter, OutboxSource,
    WebhookDelivery,
};
use crate::domain::{Session, State, Vendor};

/// What [`SessionStore::list`] selects within a tenant; `None` (or empty) is no condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only sessions in this state.
    pub state: Option<State>,
    /// Only sessions of this vendor.
    pub vendor: Option<Vendor>,
    /// Only sessions with exactly this `client_reference_id` (matched through its keyed hash, the indexed
    /// `client_reference_key` column); empty: any.
    pub client_reference_id: String,
    /// Only sessions created at or after this time (unix ms).
    pub created_from_ms: Option<i64>,
    /// Only sessions created before this time (unix ms).
    pub created_before_ms: Option<i64>,
}

/// What a store needs to know when it is opened: how to fill what rows written before a column existed lack, and
/// the keys that seal what it keeps.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The tenant of sessions (and idempotency records) stored before tenants existed (`auth.default_tenant`).
    pub default_tenant: String,
    /// The `live_mode` of sessions stored before it was recorded.
    pub legacy_live_mode: bool,
    /// The data keys sealing every record (`store.encryption_keys`): the first seals, all open.
    pub keys: seal::KeyRing,
    /// What turns creates and updates into webhook messages written in the same transaction (`None`: no webhook
    /// endpoints are configured, nothing is enqueued).
    pub outbox: Option<std::sync::Arc<dyn OutboxSource>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            default_tenant: crate::domain::caller::DEFAULT_TENANT.to_owned(),
            legacy_live_mode: true,
            keys: seal::KeyRing::ephemeral(),
            outbox: None,
        }
    }
}

/// An idempotency record: which session a tenant's `request_id` created, and a keyed fingerprint of the request.
/// Request ids are scoped per tenant: two tenants may use the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The tenant whose request id it is.
    pub tenant: String,
    /// The caller's key.
    pub request_id: String,
    /// Keyed hash of the request (see [`SessionStore::fingerprint_key`]).
    pub fingerprint: String,
    /// The session it created.
    pub session_id: String,
}

/// What [`SessionStore::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The session was written.
    New,
    /// The `request_id` was taken already; nothing was written.
    Existing(IdempotencyRecord),
    /// The billed call [`SessionStore::create_with_billed_call`] asked for is over the day's limit; nothing was
    /// written.
    CapReached,
}

/// A store failure. Messages carry no personal data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An optimistic update lost: the stored version was not the expected one.
    #[error("version conflict")]
    Conflict,
    /// The session does not exist.
    #[error("not found")]
    NotFound,
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// A stored record could not be read.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Persistent sessions, with optimistic concurrency on `Session::version`.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Writes a new session (with its `tenant` and `live_mode`) and, atomically with it, its idempotency record. When
    /// the record's tenant has its `request_id` already, writes nothing and returns the existing record.
    /// `events` are appended to the session's event log in the same transaction (sequences from 1).
    async fn create(
        &self,
        session: &Session,
        idempotency: Option<&IdempotencyRecord>,
        events: &[SessionEvent],
    ) -> Result<Created, StoreError>;
    /// Reads a session (its `tenant` and `live_mode` from their columns). Tenant-blind: the domain keeps callers to
    /// their tenant.
    /// [`SessionStore::create`], reserving in the same write one billed call of the session's tenant on the UTC
    /// `day`, under `limit` calls that day (`None`: counted, never refused). Nothing is written when the limit is
    /// reached ([`Created::CapReached`]) or the request id is taken ([`Created::Existing`], which wins over the
    /// limit: the first call's answer is a repeat's too).
    async fn create_with_billed_call(
        &self,
        session: &Session,
        idempotency: Option<&IdempotencyRecord>,
        events: &[SessionEvent],
        day: i64,
        limit: Option<u64>,
    ) -> Result<Created, StoreError>;
    async fn get(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// The session as this process last wrote it, when kept: the first read of a compare-and-set update, which
    /// spares that read a query. It can be stale (another process or replica changed the session since): an
    /// update from it then fails with [`StoreError::Conflict`] and the caller reads with [`SessionStore::get`].
    /// Nothing that answers a caller may rely on it.
    fn cached(&self, _id: &str) -> Option<Session> {
        None
    }
    /// The service that owned this store stopped: give up what makes it this process's alone (the SQLite lock
    /// file), so a new start in the same process can take it.
    fn release(&self) {}
    /// Replaces a session if the stored version is `expected_version` (else [`StoreError::Conflict`]), and appends
    /// `events` to its log in the same transaction (each the next sequence, under the row lock of the update).
    async fn update(
        &self,
        session: &Session,
        expected_version: i64,
        events: &[SessionEvent],
    ) -> Result<(), StoreError>;
    /// Appends one event to a session's log without changing the session, under its row lock. With a `cap`, only
    /// while the session has fewer than `cap.1` events of the kinds `cap.0`. Returns whether it was appended;
    /// [`StoreError::NotFound`] when the session does not exist.
    async fn append_event(
        &self,
        session_id: &str,
        event: &SessionEvent,
        cap: Option<(&[&str], u32)>,
    ) -> Result<bool, StoreError>;
    /// A session's events after sequence `after_seq`, in order, at most `limit`.
    async fn events(
        &self,
        session_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Counts over a session's events.
    async fn events_summary(&self, session_id: &str) -> Result<EventsSummary, StoreError>;
    /// Reads a tenant's idempotency record.
    async fn idempotency(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Up to `limit` sessions of `tenant` that match `filter`, newest first (by `created_at_ms`, then by id, both
    /// descending), starting after the position `after` (`created_at_ms, id` of the last session of the previous
    /// page; `None`: from the newest). Keyset pagination over the index `(tenant, created_at_ms, id)` (and its
    /// variants per filter): a page costs the same however deep it is.
    async fn list(
        &self,
        tenant: &str,
        filter: &ListFilter,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Session>, StoreError>;
    /// Ids of sessions that are not final and whose `expires_at_ms` is before `now_ms` (at most `limit`).
    async fn expired(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Ids of sessions holding vendor personal data past its retention (at most `limit`).
    async fn personal_data_due(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Ids of sessions with a vendor call marked as under way (for recovery after a restart).
    async fn in_flight(&self) -> Result<Vec<String>, StoreError>;
    /// Number of sessions in each state (the state's stored name), for the `facegate_sessions` gauge.
    async fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// A random key made once per store, used to fingerprint idempotent requests without storing their content.
    async fn fingerprint_key(&self) -> Result<Vec<u8>, StoreError>;
    /// Reserves one billed vendor call for `tenant` on UTC day `day` (whole days since 1970-01-01) if fewer than
    /// `limit` are reserved for that day; `None` is no limit (the call is still counted). Returns whether it was
    /// reserved. Atomic across every store over the same database, so the cap holds across restarts and replicas.
    async fn reserve_billed_call(
        &self,
        tenant: &str,
        day: i64,
        limit: Option<u64>,
    ) -> Result<bool, StoreError>;
    /// Gives back one reservation of [`SessionStore::reserve_billed_call`] whose call was never claimed.
    async fn release_billed_call(&self, tenant: &str, day: i64) -> Result<(), StoreError>;
    /// The billed calls reserved on UTC day `day`, by tenant (tenants without any are left out).
    async fn billed_calls(&self, day: i64) -> Result<Vec<(String, u64)>, StoreError>;
    /// Deletes up to `limit` whole sessions created before `before_ms`, with their idempotency keys, after adding
    /// their billing records to the `billing_daily` aggregate, all in one transaction that counts only the rows it
    /// deleted itself (so stores sweeping the same database at once never count a row twice). Returns how many.
    async fn delete_sessions_before(&self, before_ms: i64, limit: u32)
        -> Result<usize, StoreError>;
    /// The aggregated billing records of deleted sessions, ordered by tenant, day, vendor, item and billed.
    async fn billing_daily(&self) -> Result<Vec<BillingDaily>, StoreError>;
    /// Makes deleted data unrecoverable from the database files after a wipe or redaction (SQLite: truncates the
    /// WAL into the main file, whose freed pages `secure_delete` zeroes). A no-op for PostgreSQL, whose stale
    /// tuples hold ciphertext only.
    async fn compact(&self) -> Result<(), StoreError>;
    /// Re-seals with the first key of the ring every record sealed with another key (or stored before sealing),
    /// online: each row is rewritten only if its version is unchanged, so concurrent updates win. Returns how many
    /// records it re-sealed.
    async fn reseal(&self) -> Result<u64, StoreError>;
    /// A cheap round trip to the database (`SELECT 1`): readiness follows whether it answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Claims up to `limit` webhook messages due at `now_ms` for `owner`, leased until `lease_until_ms`, oldest
    /// first: each only when no earlier message of its session and endpoint is pending, none of a disabled
    /// endpoint, none another worker holds. Bodies come opened.
    async fn claim_webhooks(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, StoreError>;
    /// Records an attempt at a message `owner` holds (nothing when its lease was lost), and the endpoint's
    /// failure streak: a failure whose streak began at or before `disable_if_failing_since_ms` disables the
    /// endpoint.
    async fn record_webhook_attempt(
        &self,
        message: &ClaimedMessage,
        owner: &str,
        attempt: &AttemptRecord,
        disable_if_failing_since_ms: i64,
    ) -> Result<AttemptRecorded, StoreError>;
    /// Gives back a claimed message without an attempt, not to be claimed before `until_ms`.
    async fn release_webhook(
        &self,
        message: &ClaimedMessage,
        owner: &str,
        until_ms: i64,
    ) -> Result<(), StoreError>;
    /// Frees every webhook lease (for a store one process owns, at its start). Returns how many were held.
    async fn release_webhook_leases(&self) -> Result<u64, StoreError>;
    /// Up to `limit` of a tenant's webhook deliveries matching `filter` with outbox positions below
    /// `before_seq`, newest first.
    async fn webhook_deliveries(
        &self,
        tenant: &str,
        filter: &DeliveryFilter,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Makes a tenant's delivery of event `id` (to `endpoint`; empty: its only endpoint) pending again, due at
    /// `now_ms`, and enables its endpoint. See [`Redelivered`].
    async fn redeliver_webhook(
        &self,
        tenant: &str,
        id: &str,
        endpoint: &str,
        now_ms: i64,
    ) -> Result<Redelivered, StoreError>;
    /// Pending webhook messages per endpoint.
    async fn webhook_backlog(&self) -> Result<Vec<Backlog>, StoreError>;
}

/// What [`SessionStore::redeliver_webhook`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivered {
    /// The delivery, now pending.
    Pending(WebhookDelivery),
    /// The tenant has no such event (to that endpoint).
    NotFound,
    /// The event went to several endpoints and none was named.
    EndpointNeeded,
    /// The session was redacted and the body of this sent event dropped: there is nothing to send.
    BodyGone,
}

/// Billing records of deleted sessions, counted per tenant, UTC day of the call, vendor, item and billed flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingDaily {
    /// The session's tenant.
    pub tenant: String,
    /// UTC day of the call (whole days since 1970-01-01).
    pub day: i64,
    /// The vendor (`Vendor::as_str`).
    pub vendor: String,
    /// The endpoint or charge type.
    pub item: String,
    /// Whether the vendor billed the calls.
    pub billed: bool,
    /// How many.
    pub count: i64,
}
