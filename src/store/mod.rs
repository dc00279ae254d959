//! Session persistence. [`SessionStore`] is what the domain sees; [`sqlite::SqliteStore`] is the embedded
//! implementation. A PostgreSQL implementation plugs in behind the same trait.
//!
//! Both keep the same tables: `sessions` holds each session as a JSON `record` plus the columns the queries use,
//! `idempotency` maps request ids to the session they created, and `meta` holds the fingerprint key.

pub mod sqlite;

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::{Database, Decode, Encode, Row, Type};

use crate::domain::Session;

/// An idempotency record: which session a `request_id` created, and a keyed fingerprint of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
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
    /// Writes a new session and, atomically with it, its idempotency record. When the record's `request_id` exists
    /// already, writes nothing and returns the existing record.
    async fn create(
        &self,
        session: &Session,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Created, StoreError>;
    /// Reads a session.
    async fn get(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Replaces a session if the stored version is `expected_version` (else [`StoreError::Conflict`]).
    async fn update(&self, session: &Session, expected_version: i64) -> Result<(), StoreError>;
    /// Reads an idempotency record.
    async fn idempotency(&self, request_id: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Ids of sessions that are not final and whose `expires_at_ms` is before `now_ms` (at most `limit`).
    async fn expired(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Ids of sessions holding vendor personal data past its retention (at most `limit`).
    async fn personal_data_due(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Ids of sessions with a vendor call marked as under way (for recovery after a restart).
    async fn in_flight(&self) -> Result<Vec<String>, StoreError>;
    /// A random key made once per store, used to fingerprint idempotent requests without storing their content.
    async fn fingerprint_key(&self) -> Result<Vec<u8>, StoreError>;
}

/// Until when a session keeps vendor personal data (the index the wipe sweep reads).
fn personal_data_until(session: &Session) -> Option<i64> {
    session
        .outcome
        .revealable_identity
        .as_ref()
        .and(session.outcome.revealable_until_ms)
}

/// A session as the JSON text of its `record` column.
fn encode(session: &Session) -> Result<String, StoreError> {
    serde_json::to_string(session).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A session from the JSON text of its `record` column.
fn decode(text: &str) -> Result<Session, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("session record: {e}")))
}

/// A database failure. sqlx's text of an error holds the server's message but not the values a statement bound.
fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// What an update that matched no row means: the session is there at another version, or not there at all.
fn conflict_or_missing(exists: bool) -> StoreError {
    if exists {
        StoreError::Conflict
    } else {
        StoreError::NotFound
    }
}

/// Binds the columns an update rewrites, in this order: `version, state, is_final, in_flight, expires_at_ms,
/// updated_at_ms, record, personal_data_until_ms` (an insert binds them first too, then its own).
fn bind_changing<'q, DB>(
    query: Query<'q, DB, <DB as Database>::Arguments>,
    session: &Session,
    record: &str,
) -> Query<'q, DB, <DB as Database>::Arguments>
where
    DB: Database,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(session.version)
        .bind(session.state.as_str())
        .bind(session.state.is_final())
        .bind(session.attempt_started_at_ms.is_some())
        .bind(session.expires_at_ms)
        .bind(session.updated_at_ms)
        .bind(record)
        .bind(personal_data_until(session))
}

/// An idempotency record from a `request_id, fingerprint, session_id` row.
fn idempotency_from_row<R>(row: &R) -> Result<IdempotencyRecord, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(IdempotencyRecord {
        request_id: row.try_get(0).map_err(db)?,
        fingerprint: row.try_get(1).map_err(db)?,
        session_id: row.try_get(2).map_err(db)?,
    })
}

/// The first column of every row, as text (the id lists).
fn ids<R>(rows: &[R]) -> Result<Vec<String>, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
}
