//! Session persistence. [`SessionStore`] is what the domain sees; [`sqlite::SqliteStore`] is the embedded
//! implementation and [`postgres::PostgresStore`] the one several replicas can share. Both are [`sql::SqlStore`]:
//! one implementation of the contract over either database, which differ only in their statements, schema
//! migrations and error handling.

pub mod postgres;
pub mod seal;
pub mod sql;
pub mod sqlite;

use async_trait::async_trait;

use crate::domain::Session;

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            default_tenant: crate::domain::caller::DEFAULT_TENANT.to_owned(),
            legacy_live_mode: true,
            keys: seal::KeyRing::ephemeral(),
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
    async fn create(
        &self,
        session: &Session,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Created, StoreError>;
    /// Reads a session (its `tenant` and `live_mode` from their columns). Tenant-blind: the domain keeps callers to
    /// their tenant.
    async fn get(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Replaces a session if the stored version is `expected_version` (else [`StoreError::Conflict`]).
    async fn update(&self, session: &Session, expected_version: i64) -> Result<(), StoreError>;
    /// Reads a tenant's idempotency record.
    async fn idempotency(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
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
    /// Makes deleted data unrecoverable from the database files after a wipe or redaction (SQLite: truncates the
    /// WAL into the main file, whose freed pages `secure_delete` zeroes). A no-op for PostgreSQL, whose stale
    /// tuples hold ciphertext only.
    async fn compact(&self) -> Result<(), StoreError>;
    /// Re-seals with the first key of the ring every record sealed with another key (or stored before sealing),
    /// online: each row is rewritten only if its version is unchanged, so concurrent updates win. Returns how many
    /// records it re-sealed.
    async fn reseal(&self) -> Result<u64, StoreError>;
}
