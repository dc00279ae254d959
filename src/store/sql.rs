//! The session store over a SQL database, written once for SQLite and PostgreSQL.
//!
//! Both keep the same tables: `sessions` holds each session as the sealed JSON text of `record` (see
//! [`super::seal`]; bound to the session id) plus the columns the queries read, none of them personal;
//! `idempotency` maps keyed hashes of request ids to the session they created, and `meta` holds the sealed
//! fingerprint key.
//! A [`Dialect`] gives the statements in its database's SQL, its schema migrations and what differs in error
//! handling.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::pool::PoolOptions;
use sqlx::query::Query;
use sqlx::{
    ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type,
};

use super::outbox::{self, OutboxRow};
use super::recent::Recent;
use super::seal::{sealed_key_id, KeyRing};
use super::writer::{
    self, BilledCallRow, Done, EventRow, Failed, IdempotencyRow, SessionRow, WriteOp, Writer,
};
use super::{
    BillingDaily, Created, IdempotencyRecord, ListFilter, Redelivered, SessionStore, StoreError,
    StoreOptions,
};
use crate::domain::events::{EventsSummary, SessionEvent, StoredEvent};
use crate::domain::webhooks::{
    AttemptRecord, AttemptRecorded, Backlog, ClaimedMessage, DeliveryFilter, OutboxSource,
    WebhookDelivery,
};
use crate::domain::Session;

/// The statements of a store in one database's SQL, each with its parameters in the order they are bound.
pub struct Statements {
    /// Writes a session: `version, state, is_final, in_flight, expires_at_ms, updated_at_ms, record,
    /// personal_data_until_ms, client_reference_key, id, vendor, created_at_ms, tenant, live_mode`.
    pub insert_session: &'static str,
    /// `insert_session` unless the idempotency table has the request id already (no row then): its parameters,
    /// then `tenant, hashed, given` (the request id hashed, and as given: see `select_idempotency`).
    pub insert_session_unless_taken: &'static str,
    /// A row when a tenant's request id is taken: `tenant, hashed, given`.
    pub idempotency_taken: &'static str,
    /// Writes an idempotency record unless its tenant's request id is taken (no row then): `tenant, request_id,
    /// fingerprint, session_id, created_at_ms`.
    pub insert_idempotency: &'static str,
    /// The `record`, `tenant` and `live_mode` of a session: `id`.
    pub select_record: &'static str,
    /// Rewrites a session if it is at the expected version: the first nine parameters of `insert_session`, then
    /// `vendor, id, expected_version` (a routed session's vendor changes when it fails over).
    pub update_session: &'static str,
    /// A row when the session exists: `id`.
    pub session_exists: &'static str,
    /// `tenant, request_id, fingerprint, session_id` of a tenant's request id, stored hashed or (from before
    /// hashing) as given: `tenant, hashed, given`.
    pub select_idempotency: &'static str,
    /// Ids of sessions not final whose expiry is at or before a time, earliest first: `now_ms, limit`.
    pub expired: &'static str,
    /// Ids of sessions holding personal data due at or before a time: `now_ms, limit`.
    pub personal_data_due: &'static str,
    /// Ids of sessions with a vendor call under way.
    pub in_flight: &'static str,
    /// Sessions counted by state: rows `state, count`.
    pub count_by_state: &'static str,
    /// Writes the (sealed) fingerprint key unless there is one: `value`.
    pub make_fingerprint_key: &'static str,
    /// Replaces the fingerprint key: `value`.
    pub replace_fingerprint_key: &'static str,
    /// The fingerprint key.
    pub select_fingerprint_key: &'static str,
    /// Counts one billed call of a tenant's day unless the day has `limit` already (no row changed then):
    /// `tenant, day, limit`.
    pub reserve_billed_call: &'static str,
    /// Takes one billed call of a tenant's day back: `tenant, day`.
    pub release_billed_call: &'static str,
    /// Billed calls of a day: rows `tenant, calls` for `day`.
    pub billed_calls: &'static str,
    /// Takes a session's row lock (SQLite: the write lock) without changing it: `id`.
    pub lock_session: &'static str,
    /// Events of a session of three kinds (repeat one to ask for fewer): `session_id, kind, kind, kind`.
    pub count_events_of_kinds: &'static str,
    /// Rows `sequence, at_ms, body` of a session after a sequence, in order: `session_id, after, limit`.
    pub select_events: &'static str,
    /// Rows `kind, count, max at_ms` of a session's events: `session_id`.
    pub summarize_events: &'static str,
    /// Starts a transaction that writes (as a writer from the start on SQLite, so it never waits to upgrade).
    pub begin_write: &'static str,
    /// Starts the retention sweep's transaction (as a writer from the start on SQLite).
    pub begin_sweep: &'static str,
    /// Ids of up to `limit` sessions created before a time, locked for this transaction (skipping rows another
    /// transaction holds) where the database can.
    pub old_sessions: &'static str,
    /// Deletes a session's idempotency keys.
    pub delete_idempotency_of: &'static str,
    /// Deletes a session's event log: `session_id`.
    pub delete_events_of: &'static str,
    /// Deletes a session, returning `record, tenant` only when this statement deleted it.
    pub delete_session: &'static str,
    /// Adds `count` records to the aggregate row `tenant, day, vendor, item, billed`.
    pub add_billing_daily: &'static str,
    /// Every aggregate row: `tenant, day, vendor, item, billed, count`.
    pub billing_daily: &'static str,
    /// Sessions written before `client_reference_key` existed: rows `record, tenant, live_mode, id`, at most
    /// `limit`.
    pub unkeyed_sessions: &'static str,
    /// Fills the `client_reference_key` of a session that has none: `client_reference_key, id`.
    pub set_client_reference_key: &'static str,
    /// Rows `id, version, record` of sessions after an id whose record does not match a LIKE pattern, by id:
    /// `after_id, pattern, limit`.
    pub not_sealed_with: &'static str,
    /// Rewrites a record if the session is at a version: `record, id, version`.
    pub reseal_session: &'static str,
}

/// Milliseconds of a day.
const DAY_MS: i64 = 86_400_000;

/// What a database brings to [`SqlStore`].
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx database.
    type Database: Database;
    /// Its statements.
    const STATEMENTS: Statements;
    /// What a row-claiming subquery ends with so that concurrent claimers skip each other's rows (PostgreSQL:
    /// `FOR UPDATE OF o SKIP LOCKED`; SQLite has one writer and needs nothing).
    const SKIP_LOCKED: &'static str;
    /// Brings the schema of a new or older database up to this build's; safe when several processes start at once.
    /// Rows from before a column existed get their values from `options`.
    fn migrate(
        pool: &Pool<Self::Database>,
        options: &StoreOptions,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
    /// How many rows a statement changed.
    fn rows_affected(result: &<Self::Database as Database>::QueryResult) -> u64;
    /// A failure as a [`StoreError`]; its message must carry no personal data. sqlx's text of an error is the
    /// server's message, without the values a statement bound.
    fn error(e: sqlx::Error) -> StoreError {
        StoreError::Database(e.to_string())
    }
    /// The `n`th (from 1) parameter of a statement built at run time.
    fn placeholder(n: usize) -> String;
    /// The statement that shows the plan of `sql`, and which column of its rows holds the plan's text.
    fn explain(sql: &str) -> (String, usize);
    /// Whether a create lost the race for its request id with an error that a new try resolves.
    fn lost_race(_e: &sqlx::Error) -> bool {
        false
    }
    /// See [`SessionStore::compact`].
    fn compact(
        pool: &Pool<Self::Database>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

/// Associated data of the sealed fingerprint key.
const FINGERPRINT_KEY_AAD: &str = "meta:fingerprint_key";
/// Rows re-sealed per batch.
const RESEAL_BATCH: i64 = 200;

/// How often a create is tried when it lost the race for its request id and could not read the winner.
const CREATE_ATTEMPTS: usize = 3;
/// How often a billed-call reservation is tried when it lost a race (a serialization failure).
const RESERVE_ATTEMPTS: usize = 5;

/// A session store over a pool of one SQL database.
pub struct SqlStore<D: Dialect> {
    pub(super) pool: Pool<D::Database>,
    pub(super) keys: KeyRing,
    /// The fingerprint key, read (and made) once at open; it also keys the hashes of request ids.
    fingerprint_key: Vec<u8>,
    /// The group-commit writer every write goes through (SQLite); `None`: each write in its own transaction on
    /// the pool (PostgreSQL).
    writer: Option<Writer>,
    /// What this process last wrote of each session (see [`SessionStore::cached`]).
    recent: Arc<Recent>,
    /// What turns creates and updates into webhook messages (`None`: no endpoints are configured).
    outbox: Option<Arc<dyn OutboxSource>>,
    dialect: PhantomData<D>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            keys: self.keys.clone(),
            fingerprint_key: self.fingerprint_key.clone(),
            writer: self.writer.clone(),
            recent: Arc::clone(&self.recent),
            outbox: self.outbox.clone(),
            dialect: PhantomData,
        }
    }
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> i64: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> Option<i64>: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> bool: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
    for<'r> String: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> Vec<u8>: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> i64: Decode<'r, D::Database>,
    for<'r> bool: Decode<'r, D::Database>,
    usize: ColumnIndex<<D::Database as Database>::Row>,
{
    /// A store over a pool of up to eight connections made with `options`, its schema migrated (and the
    /// `client_reference_key` of older rows filled).
    pub(super) async fn connect_with(
        options: <<D::Database as Database>::Connection as Connection>::Options,
        store_options: &StoreOptions,
    ) -> Result<Self, StoreError>
    where
        for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
        <D::Database as Database>::Arguments: IntoArguments<D::Database>,
        for<'t> &'t [u8]: Encode<'t, D::Database> + Type<D::Database>,
        for<'r> Vec<u8>: Decode<'r, D::Database> + Type<D::Database>,
        usize: ColumnIndex<<D::Database as Database>::Row>,
    {
        let pool = PoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(D::error)?;
        D::migrate(&pool, store_options).await?;
        let keys = store_options.keys.clone();
        let fingerprint_key = load_fingerprint_key::<D>(&pool, &keys).await?;
        let store = Self {
            pool,
            keys,
            fingerprint_key,
            writer: None,
            recent: Arc::default(),
            outbox: store_options.outbox.clone(),
            dialect: PhantomData,
        };
        store.backfill_client_reference_keys().await?;
        Ok(store)
    }

    /// Serves reads from what this process wrote and read, while `lock` (held on the store for this process alone)
    /// is kept: see [`super::recent`].
    pub(super) fn own(&self, lock: std::fs::File) {
        self.recent.own(lock);
    }

    /// Sends every write of this store (and its clones) to `writer`.
    pub(super) fn with_writer(mut self, writer: Writer) -> Self {
        self.writer = Some(writer);
        self
    }

    /// The webhook messages a write of `session` with `events` enqueues, bodies sealed.
    fn outbox_rows(
        &self,
        session: &Session,
        events: &[SessionEvent],
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let Some(source) = &self.outbox else {
            return Ok(Vec::new());
        };
        source
            .messages(session, events)
            .map_err(|e| StoreError::Database(format!("webhook outbox: {e}")))?
            .into_iter()
            .map(|m| {
                let body = self
                    .keys
                    .seal(&outbox::body_aad(&m.id, &m.endpoint), m.body.as_bytes())?;
                Ok(OutboxRow {
                    id: m.id,
                    endpoint: m.endpoint,
                    tenant: session.tenant.clone(),
                    session_id: session.id.clone(),
                    event_type: m.event_type,
                    occurred_at_ms: m.occurred_at_ms,
                    body,
                })
            })
            .collect()
    }

    /// Tells the outbox source that messages were committed.
    fn enqueued(&self, rows: usize) {
        if rows > 0 {
            if let Some(source) = &self.outbox {
                source.enqueued();
            }
        }
    }

    fn encode(&self, session: &Session) -> Result<String, StoreError> {
        let json = serde_json::to_vec(session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.keys.seal(&session.id, &json)
    }

    fn decode(&self, id: &str, text: &str) -> Result<Session, StoreError> {
        // A record stored before sealing is its JSON text (re-sealed by its next update or by `reseal`).
        let json = if text.starts_with('{') {
            text.as_bytes().to_vec()
        } else {
            self.keys.open(id, text)?
        };
        serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("session record: {e}")))
    }

    /// How a request id is stored: a keyed hash, since a caller may put anything (even personal data) in it.
    fn request_key(&self, request_id: &str) -> String {
        KeyRing::keyed_hash(&self.fingerprint_key, &format!("request_id:{request_id}"))
    }
}

/// What the fingerprint key's row holds.
fn open_fingerprint_key(keys: &KeyRing, value: &[u8]) -> Result<Vec<u8>, StoreError> {
    match std::str::from_utf8(value) {
        Ok(text) if sealed_key_id(text).is_some() => keys.open(FINGERPRINT_KEY_AAD, text),
        // Stored before sealing: the 32 bytes themselves (re-sealed by `reseal`).
        _ if value.len() == 32 => Ok(value.to_vec()),
        _ => Err(StoreError::Corrupt("fingerprint key".into())),
    }
}

/// Reads the fingerprint key, making it first when the store has none. With an ephemeral key ring (the sandbox
/// without a configured key), a key sealed by an earlier run cannot be opened and is replaced: the sessions of that
/// run cannot be read either.
async fn load_fingerprint_key<D: Dialect>(
    pool: &Pool<D::Database>,
    keys: &KeyRing,
) -> Result<Vec<u8>, StoreError>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> &'t [u8]: Encode<'t, D::Database> + Type<D::Database>,
    for<'r> Vec<u8>: Decode<'r, D::Database> + Type<D::Database>,
    usize: ColumnIndex<<D::Database as Database>::Row>,
{
    let fresh = super::seal::random_key()?;
    let sealed = keys.seal(FINGERPRINT_KEY_AAD, &fresh)?;
    sqlx::query(D::STATEMENTS.make_fingerprint_key)
        .bind(sealed.as_bytes())
        .execute(pool)
        .await
        .map_err(D::error)?;
    let value: Vec<u8> = sqlx::query(D::STATEMENTS.select_fingerprint_key)
        .fetch_one(pool)
        .await
        .map_err(D::error)?
        .try_get(0)
        .map_err(D::error)?;
    match open_fingerprint_key(keys, &value) {
        Ok(key) => Ok(key),
        Err(StoreError::Corrupt(_)) if keys.is_ephemeral() => {
            sqlx::query(D::STATEMENTS.replace_fingerprint_key)
                .bind(sealed.as_bytes())
                .execute(pool)
                .await
                .map_err(D::error)?;
            Ok(fresh)
        }
        Err(e) => Err(e),
    }
}

/// One step of a schema migration.
pub enum Step {
    /// A statement without parameters.
    Sql(&'static str),
    /// A statement that fills rows from before a column existed, bound to [`StoreOptions::default_tenant`] and
    /// [`StoreOptions::legacy_live_mode`], in that order.
    Legacy(&'static str),
}

/// The migrations a schema at version `current` still needs, as indexes into a list of `known` migrations (entry
/// `i` takes the schema from version `i` to `i + 1`); an error when the schema is newer than this build.
pub(super) fn pending_migrations(current: i64, known: usize) -> Result<Range<usize>, StoreError> {
    let current = usize::try_from(current).unwrap_or(0);
    if current > known {
        return Err(StoreError::Database(format!(
            "database schema version {current} is newer than this build knows ({known})"
        )));
    }
    Ok(current..known)
}

/// Until when a session keeps vendor personal data (the index the wipe sweep reads).
fn personal_data_until(session: &Session) -> Option<i64> {
    session
        .outcome
        .revealable_identity
        .as_ref()
        .and(session.outcome.revealable_until_ms)
}

/// The rows of `events` to append.
fn event_rows(events: &[SessionEvent]) -> Result<Vec<EventRow>, StoreError> {
    events
        .iter()
        .map(|event| {
            Ok(EventRow {
                at_ms: event.at_ms,
                kind: event.kind(),
                body: event
                    .body()
                    .map_err(|e| StoreError::Corrupt(format!("session event: {e}")))?,
            })
        })
        .collect()
}

/// An outcome a write of that kind does not have.
fn unexpected(done: Done) -> StoreError {
    StoreError::Database(format!("unexpected write outcome {done:?}"))
}

/// How many old rows one step of the `client_reference_key` backfill reads.
const BACKFILL_BATCH: i64 = 500;

/// The indexed stand-in of a session's `client_reference_id`: HMAC-SHA256 under the fingerprint key of the tenant
/// (length-prefixed) and the reference, in hex. The caller's free text is not kept in clear in an index; equal
/// references of one tenant have equal keys, so the exact-match filter can use the index.
pub fn client_reference_key(
    key: &[u8],
    tenant: &str,
    client_reference_id: &str,
) -> Result<String, StoreError> {
    use hmac::{KeyInit, Mac};
    // HMAC takes keys of any length: the error does not happen.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .map_err(|_| StoreError::Database("fingerprint key refused by HMAC".into()))?;
    mac.update(&(tenant.len() as u64).to_be_bytes());
    mac.update(tenant.as_bytes());
    mac.update(client_reference_id.as_bytes());
    Ok(mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The page query of [`SessionStore::list`] for `filter`, with or without a position to start after, and the
/// number of its parameters. Parameters in order: `tenant`, then each condition the filter sets (state, vendor,
/// client_reference_key, created_from_ms, created_before_ms), then `after_ms, after_id` when `after`, then
/// `limit`. The order is the index's, `(created_at_ms, id)` descending, and the position a row-value comparison,
/// so the database walks one index from the position and stops after `limit` rows: no sort, no offset.
fn list_sql<D: Dialect>(filter: &ListFilter, after: bool) -> String {
    let mut n = 1;
    let mut next = || {
        n += 1;
        D::placeholder(n)
    };
    let mut sql = format!(
        "SELECT record, tenant, live_mode, id FROM sessions WHERE tenant = {}",
        D::placeholder(1)
    );
    if filter.state.is_some() {
        sql.push_str(&format!(" AND state = {}", next()));
    }
    if filter.vendor.is_some() {
        sql.push_str(&format!(" AND vendor = {}", next()));
    }
    if !filter.client_reference_id.is_empty() {
        sql.push_str(&format!(" AND client_reference_key = {}", next()));
    }
    if filter.created_from_ms.is_some() {
        sql.push_str(&format!(" AND created_at_ms >= {}", next()));
    }
    if filter.created_before_ms.is_some() {
        sql.push_str(&format!(" AND created_at_ms < {}", next()));
    }
    if after {
        let (ms, id) = (next(), next());
        sql.push_str(&format!(" AND (created_at_ms, id) < ({ms}, {id})"));
    }
    sql.push_str(&format!(
        " ORDER BY created_at_ms DESC, id DESC LIMIT {}",
        next()
    ));
    sql
}

#[async_trait]
impl<D: Dialect> SessionStore for SqlStore<D>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> i64: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> Option<i64>: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> bool: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t [u8]: Encode<'t, D::Database> + Type<D::Database>,
    for<'r> String: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> Vec<u8>: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> Option<String>: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> Option<i64>: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> i64: Decode<'r, D::Database>,
    for<'r> bool: Decode<'r, D::Database>,
    usize: ColumnIndex<<D::Database as Database>::Row>,
{
    async fn claim_webhooks(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        self.claim_messages(owner, now_ms, lease_until_ms, limit)
            .await
    }

    async fn record_webhook_attempt(
        &self,
        message: &ClaimedMessage,
        owner: &str,
        attempt: &AttemptRecord,
        disable_if_failing_since_ms: i64,
    ) -> Result<AttemptRecorded, StoreError> {
        self.record_message_attempt(message, owner, attempt, disable_if_failing_since_ms)
            .await
    }

    async fn release_webhook(
        &self,
        message: &ClaimedMessage,
        owner: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        self.release_message(message, owner, until_ms).await
    }

    async fn release_webhook_leases(&self) -> Result<u64, StoreError> {
        self.release_all_leases().await
    }

    async fn webhook_deliveries(
        &self,
        tenant: &str,
        filter: &DeliveryFilter,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.list_deliveries(tenant, filter, before_seq, limit)
            .await
    }

    async fn redeliver_webhook(
        &self,
        tenant: &str,
        id: &str,
        endpoint: &str,
        now_ms: i64,
    ) -> Result<Redelivered, StoreError> {
        match self.find_delivery(tenant, id, endpoint).await? {
            outbox::Found::None => Ok(Redelivered::NotFound),
            outbox::Found::Several => Ok(Redelivered::EndpointNeeded),
            outbox::Found::One(_, false) => Ok(Redelivered::BodyGone),
            outbox::Found::One(mut delivery, true) => {
                self.redeliver_message(&delivery, now_ms).await?;
                delivery.status = crate::domain::webhooks::DeliveryStatus::Pending;
                delivery.next_attempt_at_ms = now_ms;
                if let Some(source) = &self.outbox {
                    source.enqueued();
                }
                Ok(Redelivered::Pending(*delivery))
            }
        }
    }

    async fn webhook_backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        self.backlog().await
    }

    async fn create(
        &self,
        session: &Session,
        idempotency: Option<&IdempotencyRecord>,
        events: &[SessionEvent],
    ) -> Result<Created, StoreError> {
        self.create_op(session, idempotency, events, None).await
    }

    async fn create_with_billed_call(
        &self,
        session: &Session,
        idempotency: Option<&IdempotencyRecord>,
        events: &[SessionEvent],
        day: i64,
        limit: Option<u64>,
    ) -> Result<Created, StoreError> {
        let cap = limit.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        if cap > 0 {
            let billed = BilledCallRow { day, limit: cap };
            return self
                .create_op(session, idempotency, events, Some(billed))
                .await;
        }
        // The reservation's insert counts the day's first call whatever the limit: a limit of 0 is answered here,
        // without a write.
        match idempotency {
            Some(idem) => Ok(self
                .idempotency(&idem.tenant, &idem.request_id)
                .await?
                .map_or(Created::CapReached, Created::Existing)),
            None => Ok(Created::CapReached),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        if let Some(session) = self.recent.read(id) {
            return Ok(Some(session));
        }
        let mark = self.recent.mark();
        let row = sqlx::query(D::STATEMENTS.select_record)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(D::error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (session, size) = self.sized_session_of(&row, id)?;
        if let Some(mark) = mark {
            self.recent.fill(mark, &session, size);
        }
        Ok(Some(session))
    }

    fn cached(&self, id: &str) -> Option<Session> {
        self.recent.get(id)
    }

    fn release(&self) {
        self.recent.release();
    }

    async fn list(
        &self,
        tenant: &str,
        filter: &ListFilter,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Session>, StoreError> {
        let sql = list_sql::<D>(filter, after.is_some());
        let reference_key = self.filter_reference_key(tenant, filter)?;
        let rows = self
            .bind_list(&sql, tenant, filter, &reference_key, after.as_ref(), limit)
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        rows.iter().map(|r| self.session_with_id(r)).collect()
    }

    async fn update(
        &self,
        session: &Session,
        expected_version: i64,
        events: &[SessionEvent],
    ) -> Result<(), StoreError> {
        let row = self.row_of(session)?;
        let size = row.record.len();
        let outbox = self.outbox_rows(session, events)?;
        let enqueued = outbox.len();
        let op = Arc::new(WriteOp::Update {
            row,
            expected_version,
            events: event_rows(events)?,
            outbox,
        });
        let done = self.write(&op).await.map_err(|e| {
            self.recent.forget(&session.id);
            e.into_store_error::<D>()
        })?;
        if done == Done::Updated {
            self.recent.put(session, size);
            self.enqueued(enqueued);
            return Ok(());
        }
        self.recent.forget(&session.id);
        match done {
            Done::Conflict => Err(StoreError::Conflict),
            Done::NotFound => Err(StoreError::NotFound),
            other => Err(unexpected(other)),
        }
    }

    async fn append_event(
        &self,
        session_id: &str,
        event: &SessionEvent,
        cap: Option<(&[&str], u32)>,
    ) -> Result<bool, StoreError> {
        let op = Arc::new(WriteOp::Append {
            session_id: session_id.to_owned(),
            event: event_rows(std::slice::from_ref(event))?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("session event".into()))?,
            cap: cap.map(|(kinds, max)| (kinds.iter().map(|k| (*k).to_owned()).collect(), max)),
        });
        let done = self.write(&op).await;
        self.recent.forget_summary(session_id);
        match done.map_err(Failed::into_store_error::<D>)? {
            Done::Appended(appended) => Ok(appended),
            Done::NotFound => Err(StoreError::NotFound),
            other => Err(unexpected(other)),
        }
    }

    async fn events(
        &self,
        session_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(D::STATEMENTS.select_events)
            .bind(session_id)
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        rows.iter()
            .map(|r| {
                let sequence: i64 = r.try_get(0).map_err(D::error)?;
                let at_ms: i64 = r.try_get(1).map_err(D::error)?;
                let body: String = r.try_get(2).map_err(D::error)?;
                let event = SessionEvent::from_body(at_ms, &body)
                    .map_err(|e| StoreError::Corrupt(format!("session event: {e}")))?;
                Ok(StoredEvent { sequence, event })
            })
            .collect()
    }

    async fn events_summary(&self, session_id: &str) -> Result<EventsSummary, StoreError> {
        if let Some(summary) = self.recent.read_summary(session_id) {
            return Ok(summary);
        }
        let mark = self.recent.mark();
        let rows = sqlx::query(D::STATEMENTS.summarize_events)
            .bind(session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        let counts = rows
            .iter()
            .map(|r| {
                let kind: String = r.try_get(0).map_err(D::error)?;
                let n: i64 = r.try_get(1).map_err(D::error)?;
                let last: i64 = r.try_get(2).map_err(D::error)?;
                Ok((kind, u64::try_from(n).unwrap_or(0), last))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let summary = EventsSummary::from_counts(&counts);
        if let Some(mark) = mark {
            self.recent.fill_summary(mark, session_id, &summary);
        }
        Ok(summary)
    }

    async fn idempotency(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        // Records from before request ids were hashed hold them as given.
        let hashed = self.request_key(request_id);
        let rows = sqlx::query(D::STATEMENTS.select_idempotency)
            .bind(tenant)
            .bind(hashed.as_str())
            .bind(request_id)
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        let mut found = None;
        for r in &rows {
            let key: String = r.try_get(1).map_err(D::error)?;
            // The hashed key wins over one stored as given.
            if found.is_none() || key == hashed {
                found = Some(IdempotencyRecord {
                    tenant: r.try_get(0).map_err(D::error)?,
                    request_id: request_id.to_owned(),
                    fingerprint: r.try_get(2).map_err(D::error)?,
                    session_id: r.try_get(3).map_err(D::error)?,
                });
            }
        }
        Ok(found)
    }

    async fn expired(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        self.ids(
            sqlx::query(D::STATEMENTS.expired)
                .bind(now_ms)
                .bind(i64::from(limit)),
        )
        .await
    }

    async fn personal_data_due(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        self.ids(
            sqlx::query(D::STATEMENTS.personal_data_due)
                .bind(now_ms)
                .bind(i64::from(limit)),
        )
        .await
    }

    async fn in_flight(&self) -> Result<Vec<String>, StoreError> {
        self.ids(sqlx::query(D::STATEMENTS.in_flight)).await
    }

    async fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(D::STATEMENTS.count_by_state)
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(0).map_err(D::error)?;
                let n: i64 = r.try_get(1).map_err(D::error)?;
                Ok((state, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    async fn fingerprint_key(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self.fingerprint_key.clone())
    }

    async fn reserve_billed_call(
        &self,
        tenant: &str,
        day: i64,
        limit: Option<u64>,
    ) -> Result<bool, StoreError> {
        // The insert counts the day's first call whatever the limit, so a limit of 0 is answered here.
        let limit = match limit {
            Some(0) => return Ok(false),
            Some(n) => i64::try_from(n).unwrap_or(i64::MAX),
            None => i64::MAX,
        };
        let op = Arc::new(WriteOp::Reserve {
            tenant: tenant.to_owned(),
            day,
            limit,
        });
        let mut last = None;
        for _ in 0..RESERVE_ATTEMPTS {
            match self.write(&op).await {
                Ok(Done::Reserved(reserved)) => return Ok(reserved),
                Ok(other) => return Err(unexpected(other)),
                Err(Failed::Db(e)) if D::lost_race(&e) => last = Some(e),
                Err(e) => return Err(e.into_store_error::<D>()),
            }
        }
        Err(last.map_or_else(
            || StoreError::Database("billed-call reservation kept losing races".into()),
            D::error,
        ))
    }

    async fn release_billed_call(&self, tenant: &str, day: i64) -> Result<(), StoreError> {
        let op = Arc::new(WriteOp::Release {
            tenant: tenant.to_owned(),
            day,
        });
        self.write(&op)
            .await
            .map_err(Failed::into_store_error::<D>)?;
        Ok(())
    }

    async fn billed_calls(&self, day: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(D::STATEMENTS.billed_calls)
            .bind(day)
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        rows.iter()
            .map(|r| {
                let tenant: String = r.try_get(0).map_err(D::error)?;
                let n: i64 = r.try_get(1).map_err(D::error)?;
                Ok((tenant, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    async fn compact(&self) -> Result<(), StoreError> {
        D::compact(&self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(D::error)?;
        Ok(())
    }

    async fn reseal(&self) -> Result<u64, StoreError> {
        let sql = &D::STATEMENTS;
        let pattern = format!("s1:{}:%", self.keys.sealing_key_id());
        let mut resealed = 0u64;
        // The fingerprint key first.
        let value: Vec<u8> = sqlx::query(sql.select_fingerprint_key)
            .fetch_one(&self.pool)
            .await
            .map_err(D::error)?
            .try_get(0)
            .map_err(D::error)?;
        let current = std::str::from_utf8(&value).ok().and_then(sealed_key_id);
        if current != Some(self.keys.sealing_key_id()) {
            let sealed = self.keys.seal(FINGERPRINT_KEY_AAD, &self.fingerprint_key)?;
            sqlx::query(sql.replace_fingerprint_key)
                .bind(sealed.as_bytes())
                .execute(&self.pool)
                .await
                .map_err(D::error)?;
            resealed += 1;
        }
        let mut after = String::new();
        loop {
            let rows = sqlx::query(sql.not_sealed_with)
                .bind(after.as_str())
                .bind(pattern.as_str())
                .bind(RESEAL_BATCH)
                .fetch_all(&self.pool)
                .await
                .map_err(D::error)?;
            let Some(last) = rows.last() else {
                return Ok(resealed);
            };
            after = last.try_get(0).map_err(D::error)?;
            for row in &rows {
                let id: String = row.try_get(0).map_err(D::error)?;
                let version: i64 = row.try_get(1).map_err(D::error)?;
                let text: String = row.try_get(2).map_err(D::error)?;
                let session = self.decode(&id, &text)?;
                let record = self.encode(&session)?;
                // A row updated meanwhile was sealed by that update.
                let done = sqlx::query(sql.reseal_session)
                    .bind(record.as_str())
                    .bind(id.as_str())
                    .bind(version)
                    .execute(&self.pool)
                    .await
                    .map_err(D::error)?;
                resealed += D::rows_affected(&done);
            }
        }
    }

    async fn delete_sessions_before(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<usize, StoreError> {
        let sql = &D::STATEMENTS;
        let mut tx = self
            .pool
            .begin_with(sql.begin_sweep)
            .await
            .map_err(D::error)?;
        let ids: Vec<String> = sqlx::query(sql.old_sessions)
            .bind(before_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(D::error)?
            .iter()
            .map(|r| r.try_get(0).map_err(D::error))
            .collect::<Result<_, _>>()?;
        let mut counts: BTreeMap<(String, i64, String, String, bool), i64> = BTreeMap::new();
        let mut deleted = 0;
        for id in &ids {
            for statement in [sql.delete_idempotency_of, sql.delete_events_of] {
                sqlx::query(statement)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(D::error)?;
            }
            sqlx::query(sqlx::AssertSqlSafe(outbox::sql::<D>(
                outbox::DELETE_OF_SESSION,
            )))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(D::error)?;
            let Some(row) = sqlx::query(sql.delete_session)
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(D::error)?
            else {
                continue;
            };
            let record: String = row.try_get(0).map_err(D::error)?;
            let tenant: String = row.try_get(1).map_err(D::error)?;
            self.recent.forget(id);
            let session = self.decode(id, &record)?;
            for b in &session.outcome.billing {
                let key = (
                    tenant.clone(),
                    b.at_ms.div_euclid(DAY_MS),
                    b.vendor.as_str().to_owned(),
                    b.item.clone(),
                    b.billed,
                );
                *counts.entry(key).or_insert(0) += 1;
            }
            deleted += 1;
        }
        for ((tenant, day, vendor, item, billed), count) in counts {
            sqlx::query(sql.add_billing_daily)
                .bind(tenant.as_str())
                .bind(day)
                .bind(vendor.as_str())
                .bind(item.as_str())
                .bind(billed)
                .bind(count)
                .execute(&mut *tx)
                .await
                .map_err(D::error)?;
        }
        let committed = tx.commit().await.map_err(D::error);
        // Forgotten before the commit too; once more now, so no read that raced the delete keeps a copy.
        for id in &ids {
            self.recent.forget(id);
        }
        committed?;
        Ok(deleted)
    }

    async fn billing_daily(&self) -> Result<Vec<BillingDaily>, StoreError> {
        let rows = sqlx::query(D::STATEMENTS.billing_daily)
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        rows.iter()
            .map(|r| {
                Ok(BillingDaily {
                    tenant: r.try_get(0).map_err(D::error)?,
                    day: r.try_get(1).map_err(D::error)?,
                    vendor: r.try_get(2).map_err(D::error)?,
                    item: r.try_get(3).map_err(D::error)?,
                    billed: r.try_get(4).map_err(D::error)?,
                    count: r.try_get(5).map_err(D::error)?,
                })
            })
            .collect()
    }
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> i64: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> Option<i64>: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> bool: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t [u8]: Encode<'t, D::Database> + Type<D::Database>,
    for<'r> String: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> Vec<u8>: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> i64: Decode<'r, D::Database>,
    for<'r> bool: Decode<'r, D::Database>,
    usize: ColumnIndex<<D::Database as Database>::Row>,
{
    /// Writes a new session (with its idempotency record and first events, and with `billed_call` reserved in the
    /// same write).
    async fn create_op(
        &self,
        session: &Session,
        idempotency: Option<&IdempotencyRecord>,
        events: &[SessionEvent],
        billed_call: Option<BilledCallRow>,
    ) -> Result<Created, StoreError> {
        let row = self.row_of(session)?;
        let size = row.record.len();
        let op = Arc::new(WriteOp::Create {
            row,
            vendor: session.vendor.as_str(),
            created_at_ms: session.created_at_ms,
            tenant: session.tenant.clone(),
            live_mode: session.live_mode,
            idempotency: idempotency.map(|idem| IdempotencyRow {
                tenant: idem.tenant.clone(),
                request_key: self.request_key(&idem.request_id),
                request_id: idem.request_id.clone(),
                fingerprint: idem.fingerprint.clone(),
                session_id: idem.session_id.clone(),
            }),
            events: event_rows(events)?,
            billed_call,
            outbox: self.outbox_rows(session, events)?,
        });
        let enqueued = match op.as_ref() {
            WriteOp::Create { outbox, .. } => outbox.len(),
            _ => 0,
        };
        for _ in 0..CREATE_ATTEMPTS {
            match self.write(&op).await {
                Ok(Done::Created) => {
                    self.recent.put(session, size);
                    self.enqueued(enqueued);
                    return Ok(Created::New);
                }
                Ok(Done::CapReached) => return Ok(Created::CapReached),
                Ok(Done::Taken) | Err(Failed::Race) => {
                    if let Some(idem) = idempotency {
                        match self.idempotency(&idem.tenant, &idem.request_id).await? {
                            Some(existing) => return Ok(Created::Existing(existing)),
                            None => continue,
                        }
                    }
                }
                Err(Failed::Db(e)) if idempotency.is_some() && D::lost_race(&e) => continue,
                Err(e) => {
                    // The write's fate may be unknown: nothing of this id may be served from the cache.
                    self.recent.forget(&session.id);
                    return Err(e.into_store_error::<D>());
                }
                Ok(other) => return Err(unexpected(other)),
            }
        }
        Err(StoreError::Database(
            "idempotency record vanished during insert".into(),
        ))
    }

    /// A session from a row `record, tenant, live_mode` of session `id`: the record opened with the session id as
    /// associated data, the columns authoritative (rows migrated from before tenants hold them only there).
    fn session_of(
        &self,
        row: &<D::Database as Database>::Row,
        id: &str,
    ) -> Result<Session, StoreError> {
        self.sized_session_of(row, id).map(|(s, _)| s)
    }

    /// [`Self::session_of`] and the length of its sealed record.
    fn sized_session_of(
        &self,
        row: &<D::Database as Database>::Row,
        id: &str,
    ) -> Result<(Session, usize), StoreError> {
        let text: String = row.try_get(0).map_err(D::error)?;
        let mut session = self.decode(id, &text)?;
        session.tenant = row.try_get(1).map_err(D::error)?;
        session.live_mode = row.try_get(2).map_err(D::error)?;
        Ok((session, text.len()))
    }

    /// A session from a row `record, tenant, live_mode, id`.
    fn session_with_id(&self, row: &<D::Database as Database>::Row) -> Result<Session, StoreError> {
        let id: String = row.try_get(3).map_err(D::error)?;
        self.session_of(row, &id)
    }

    /// The columns a write of `session` sets, its record sealed.
    fn row_of(&self, session: &Session) -> Result<SessionRow, StoreError> {
        Ok(SessionRow {
            id: session.id.clone(),
            version: session.version,
            state: session.state.as_str(),
            is_final: session.state.is_final(),
            in_flight: session.attempt_started_at_ms.is_some(),
            expires_at_ms: session.expires_at_ms,
            updated_at_ms: session.updated_at_ms,
            record: self.encode(session)?,
            personal_data_until_ms: personal_data_until(session),
            client_reference_key: self.reference_key(session)?,
            vendor: session.vendor.as_str(),
        })
    }

    /// Applies `op`: through the group-commit writer when there is one, else in a transaction of its own on the
    /// pool (one statement without).
    async fn write(&self, op: &Arc<WriteOp>) -> Result<Done, Failed> {
        if let Some(writer) = &self.writer {
            return writer.write(op).await;
        }
        if op.single_statement() {
            let mut conn = self.pool.acquire().await.map_err(Failed::Db)?;
            return writer::apply::<D>(&mut conn, op).await;
        }
        let tx = self
            .pool
            .begin_with(D::STATEMENTS.begin_write)
            .await
            .map_err(Failed::Db)?;
        writer::in_transaction::<D>(tx, op).await
    }

    /// The `client_reference_key` of a session.
    fn reference_key(&self, session: &Session) -> Result<String, StoreError> {
        client_reference_key(
            &self.fingerprint_key,
            &session.tenant,
            &session.client_reference_id,
        )
    }

    /// The `client_reference_key` a filter looks for (empty when it has no client reference).
    fn filter_reference_key(
        &self,
        tenant: &str,
        filter: &ListFilter,
    ) -> Result<String, StoreError> {
        if filter.client_reference_id.is_empty() {
            return Ok(String::new());
        }
        client_reference_key(&self.fingerprint_key, tenant, &filter.client_reference_id)
    }

    /// The page query of [`list_sql`] with its parameters bound.
    fn bind_list<'q>(
        &self,
        sql: &'q str,
        tenant: &'q str,
        filter: &'q ListFilter,
        reference_key: &'q str,
        after: Option<&'q (i64, String)>,
        limit: u32,
    ) -> Query<'q, D::Database, <D::Database as Database>::Arguments> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant);
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some(vendor) = filter.vendor {
            query = query.bind(vendor.as_str());
        }
        if !filter.client_reference_id.is_empty() {
            query = query.bind(reference_key);
        }
        if let Some(from) = filter.created_from_ms {
            query = query.bind(from);
        }
        if let Some(before) = filter.created_before_ms {
            query = query.bind(before);
        }
        if let Some((ms, id)) = after {
            query = query.bind(*ms).bind(id.as_str());
        }
        query.bind(i64::from(limit))
    }

    /// The database's plan of the page query of [`SessionStore::list`] for these arguments, one line per row (for
    /// tests and the benchmark: it must walk an index, without a sort or a scan of the tenant).
    pub async fn explain_list(
        &self,
        tenant: &str,
        filter: &ListFilter,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let (sql, column) = D::explain(&list_sql::<D>(filter, after.is_some()));
        let reference_key = self.filter_reference_key(tenant, filter)?;
        let rows = self
            .bind_list(&sql, tenant, filter, &reference_key, after.as_ref(), limit)
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(column).map_err(D::error))
            .collect()
    }

    /// Fills the `client_reference_key` of rows written before the column existed (the migration adds it empty:
    /// SQL cannot compute the keyed hash). Runs at every open and finds nothing to do once done; replicas opening
    /// together may fill the same rows, with the same value.
    async fn backfill_client_reference_keys(&self) -> Result<(), StoreError> {
        let key = self.fingerprint_key.clone();
        loop {
            let rows = sqlx::query(D::STATEMENTS.unkeyed_sessions)
                .bind(BACKFILL_BATCH)
                .fetch_all(&self.pool)
                .await
                .map_err(D::error)?;
            if rows.is_empty() {
                return Ok(());
            }
            for row in &rows {
                let id: String = row.try_get(3).map_err(D::error)?;
                // A record that cannot be read gets a key no filter matches (it is not listed by reference).
                let reference_key = match self.session_with_id(row) {
                    Ok(s) => client_reference_key(&key, &s.tenant, &s.client_reference_id)?,
                    Err(e) => {
                        tracing::warn!(session_id = %id, error = %e, "cannot key the client reference");
                        String::new()
                    }
                };
                sqlx::query(D::STATEMENTS.set_client_reference_key)
                    .bind(reference_key.as_str())
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(D::error)?;
            }
        }
    }
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'r> String: Decode<'r, D::Database> + Type<D::Database>,
    usize: ColumnIndex<<D::Database as Database>::Row>,
{
    /// The first column of every row of `query`, as text.
    async fn ids(
        &self,
        query: Query<'_, D::Database, <D::Database as Database>::Arguments>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = query.fetch_all(&self.pool).await.map_err(D::error)?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(D::error))
            .collect()
    }
}
