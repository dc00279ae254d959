//! The write path of [`super::sql::SqlStore`]: every change is a [`WriteOp`].
//!
//! PostgreSQL runs each op in a transaction of its own on a pooled connection ([`apply`] in [`in_transaction`]):
//! replicas and connections write in parallel, and the server's own group commit batches their WAL flushes.
//! SQLite has one writer at a time whatever the number of connections, so a store over SQLite sends its ops through
//! a [`Writer`] to one thread that owns a connection of its own ([`super::sqlite_writer`]) and commits everything
//! queued meanwhile in one transaction (group commit): concurrent sessions share one `BEGIN IMMEDIATE ... COMMIT`
//! and its WAL append instead of queueing for the write lock one by one. A caller hears of its op only after the
//! transaction that holds it has committed. An op that fails inside a batch makes the batch roll back; its ops are
//! then applied one transaction each, so one failure never takes another op with it.

use std::sync::Arc;

use sqlx::{Database, Encode, Executor, IntoArguments, Row, Type};
use tokio::sync::{mpsc, oneshot};

use super::outbox::{self, OutboxRow};
use super::sql::Dialect;
use super::StoreError;

/// Most ops one group commit holds.
pub(super) const MAX_BATCH: usize = 256;
/// Ops waiting for the writer before senders wait for room.
pub(super) const QUEUE: usize = 4096;

/// The columns of a session that a write sets (all but those fixed at creation).
#[derive(Debug, Clone)]
pub(super) struct SessionRow {
    pub id: String,
    pub version: i64,
    pub state: &'static str,
    pub is_final: bool,
    pub in_flight: bool,
    pub expires_at_ms: i64,
    pub updated_at_ms: i64,
    /// The sealed record.
    pub record: String,
    pub personal_data_until_ms: Option<i64>,
    pub client_reference_key: String,
    /// The session's vendor (an update rewrites it: a routed session may fail over to another vendor).
    pub vendor: &'static str,
}

/// An event to append, its body already serialized.
#[derive(Debug, Clone)]
pub(super) struct EventRow {
    pub at_ms: i64,
    pub kind: &'static str,
    pub body: String,
}

/// An idempotency record to write, its request id already hashed.
#[derive(Clone)]
pub(super) struct IdempotencyRow {
    pub tenant: String,
    pub request_key: String,
    /// The request id as the caller gave it: records from before request ids were hashed hold it so.
    pub request_id: String,
    pub fingerprint: String,
    pub session_id: String,
}

impl std::fmt::Debug for IdempotencyRow {
    /// Without the request id as given (a caller may put anything in it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyRow")
            .field("tenant", &self.tenant)
            .field("request_key", &self.request_key)
            .field("fingerprint", &self.fingerprint)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// A billed call a create reserves: on the UTC `day`, under `limit` calls of the session's tenant.
#[derive(Debug, Clone, Copy)]
pub(super) struct BilledCallRow {
    pub day: i64,
    pub limit: i64,
}

/// One change to the store.
#[derive(Debug, Clone)]
pub(super) enum WriteOp {
    /// A new session (unless its idempotency key is taken), its idempotency record and first events; with
    /// `billed_call`, only if one billed call of its tenant can be reserved too, in the same transaction.
    Create {
        row: SessionRow,
        vendor: &'static str,
        created_at_ms: i64,
        tenant: String,
        live_mode: bool,
        idempotency: Option<IdempotencyRow>,
        events: Vec<EventRow>,
        billed_call: Option<BilledCallRow>,
        /// Webhook messages the change enqueues, in the same transaction.
        outbox: Vec<OutboxRow>,
    },
    /// A session replaced if at `expected_version`, with events appended.
    Update {
        row: SessionRow,
        expected_version: i64,
        events: Vec<EventRow>,
        /// Webhook messages the change enqueues, in the same transaction.
        outbox: Vec<OutboxRow>,
    },
    /// One event appended under the session's row lock, with an optional cap on events of some kinds.
    Append {
        session_id: String,
        event: EventRow,
        cap: Option<(Vec<String>, u32)>,
    },
    /// One billed call reserved under a limit.
    Reserve {
        tenant: String,
        day: i64,
        limit: i64,
    },
    /// One billed call given back.
    Release { tenant: String, day: i64 },
}

/// The three kinds `count_events_of_kinds` binds for a cap on `kinds` (one to three; the first repeats).
pub(super) fn cap_kinds(kinds: &[String]) -> [&str; 3] {
    let kind = |i: usize| {
        kinds
            .get(i)
            .or(kinds.first())
            .map(String::as_str)
            .unwrap_or("")
    };
    [kind(0), kind(1), kind(2)]
}

impl Done {
    /// What an update that changed no row did: the session is at another version, or gone.
    pub(super) fn missed_update(exists: bool) -> Self {
        if exists {
            Self::Conflict
        } else {
            Self::NotFound
        }
    }
}

impl WriteOp {
    /// Whether the op is one statement (it needs no transaction of its own).
    pub(super) fn single_statement(&self) -> bool {
        matches!(self, Self::Reserve { .. } | Self::Release { .. })
    }
}

/// What an op did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    /// The session was written.
    Created,
    /// The request id was taken already: nothing was written.
    Taken,
    /// The billed call a create asked for is over its day's limit: nothing was written.
    CapReached,
    /// The session was replaced.
    Updated,
    /// The session is at another version: nothing was written.
    Conflict,
    /// The session does not exist.
    NotFound,
    /// Whether the event was appended.
    Appended(bool),
    /// Whether the billed call was reserved.
    Reserved(bool),
    /// The reservation was given back.
    Released,
}

/// Why an op did not complete.
#[derive(Debug)]
pub(super) enum Failed {
    /// The database failed (or, on PostgreSQL, a concurrent transaction won: see [`Dialect::lost_race`]).
    Db(sqlx::Error),
    /// A create wrote its session and then found its request id taken by a concurrent create: its transaction
    /// was rolled back.
    Race,
    /// The store cannot take writes (its writer stopped).
    Store(StoreError),
}

impl Failed {
    /// As a store error.
    pub(super) fn into_store_error<D: Dialect>(self) -> StoreError {
        match self {
            Self::Db(e) => D::error(e),
            Self::Race => StoreError::Database("lost the race for an idempotency key".into()),
            Self::Store(e) => e,
        }
    }
}

/// An op on its way to the writer, and where its outcome goes.
pub(super) struct Job {
    pub(super) op: Arc<WriteOp>,
    pub(super) reply: oneshot::Sender<Result<Done, Failed>>,
}

/// The sending side of a writer task.
#[derive(Clone)]
pub(super) struct Writer(mpsc::Sender<Job>);

impl Writer {
    /// A writer and the receiver its task reads.
    pub(super) fn channel() -> (Self, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self(tx), rx)
    }

    /// How many ops are waiting for the writer.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.0.max_capacity() - self.0.capacity()
    }

    /// Applies `op` in the writer's next transaction and returns its outcome once that transaction committed (or
    /// failed). The op is applied even when the caller stops waiting.
    pub(super) async fn write(&self, op: &Arc<WriteOp>) -> Result<Done, Failed> {
        let stopped = || Failed::Store(StoreError::Database("the store's writer stopped".into()));
        let (reply, outcome) = oneshot::channel();
        self.0
            .send(Job {
                op: Arc::clone(op),
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Applies `op` in `tx` and commits (rolls back when it fails).
pub(super) async fn in_transaction<D: Dialect>(
    mut tx: sqlx::Transaction<'_, D::Database>,
    op: &WriteOp,
) -> Result<Done, Failed>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> i64: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> Option<i64>: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> bool: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
    for<'r> i64: sqlx::Decode<'r, D::Database>,
    usize: sqlx::ColumnIndex<<D::Database as Database>::Row>,
{
    match apply::<D>(&mut tx, op).await {
        Ok(done) => {
            tx.commit().await.map_err(Failed::Db)?;
            Ok(done)
        }
        Err(e) => {
            if let Err(r) = tx.rollback().await {
                tracing::warn!(error = %D::error(r), "rolling back a store write");
            }
            Err(e)
        }
    }
}

/// A statement of [`super::sql::Statements`] as sqlx takes it. (A plain function: the `'static` bound stays out of
/// the futures, which the compiler could otherwise not prove `Send` when the writer task is spawned.)
fn stmt(sql: &'static str) -> sqlx::SqlStr {
    sqlx::SqlSafeStr::into_sql_str(sql)
}

/// Binds the columns an update rewrites (the first nine parameters of `insert_session` and `update_session`).
fn bind_row<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as Database>::Arguments>,
    row: &'q SessionRow,
) -> sqlx::query::Query<'q, DB, <DB as Database>::Arguments>
where
    DB: Database,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
{
    query
        .bind(row.version)
        .bind(row.state)
        .bind(row.is_final)
        .bind(row.in_flight)
        .bind(row.expires_at_ms)
        .bind(row.updated_at_ms)
        .bind(row.record.as_str())
        .bind(row.personal_data_until_ms)
        .bind(row.client_reference_key.as_str())
}

/// What a create whose billed call was refused answers: [`Done::Taken`] when its request id is taken (the first
/// call's answer is this one's), else [`Done::CapReached`].
async fn taken_or_capped<D: Dialect>(
    conn: &mut <D::Database as Database>::Connection,
    idempotency: Option<&IdempotencyRow>,
) -> Result<Done, Failed>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
{
    let Some(idem) = idempotency else {
        return Ok(Done::CapReached);
    };
    let found = sqlx::query(stmt(D::STATEMENTS.idempotency_taken))
        .bind(idem.tenant.as_str())
        .bind(idem.request_key.as_str())
        .bind(idem.request_id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(Failed::Db)?;
    Ok(if found.is_some() {
        Done::Taken
    } else {
        Done::CapReached
    })
}

/// Applies `op` on `conn` (inside a transaction, unless the op is one statement). An op that finds nothing to do
/// (a taken request id, a version conflict, a cap reached) writes nothing; only [`Failed`] needs a rollback.
pub(super) async fn apply<D: Dialect>(
    conn: &mut <D::Database as Database>::Connection,
    op: &WriteOp,
) -> Result<Done, Failed>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> i64: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> Option<i64>: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> bool: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
    for<'r> i64: sqlx::Decode<'r, D::Database>,
    usize: sqlx::ColumnIndex<<D::Database as Database>::Row>,
{
    let sql = &D::STATEMENTS;
    match op {
        WriteOp::Create {
            row,
            vendor,
            created_at_ms,
            tenant,
            live_mode,
            idempotency,
            events,
            billed_call,
            outbox,
        } => {
            if let Some(billed) = billed_call {
                let reserved = sqlx::query(stmt(sql.reserve_billed_call))
                    .bind(tenant.as_str())
                    .bind(billed.day)
                    .bind(billed.limit)
                    .execute(&mut *conn)
                    .await
                    .map_err(Failed::Db)?;
                if D::rows_affected(&reserved) == 0 {
                    return taken_or_capped::<D>(conn, idempotency.as_ref()).await;
                }
            }
            let statement = if idempotency.is_some() {
                sql.insert_session_unless_taken
            } else {
                sql.insert_session
            };
            let mut query = bind_row(sqlx::query(stmt(statement)), row)
                .bind(row.id.as_str())
                .bind(*vendor)
                .bind(*created_at_ms)
                .bind(tenant.as_str())
                .bind(*live_mode);
            if let Some(idem) = idempotency {
                query = query
                    .bind(idem.tenant.as_str())
                    .bind(idem.request_key.as_str())
                    .bind(idem.request_id.as_str());
            }
            let inserted = query.execute(&mut *conn).await.map_err(Failed::Db)?;
            if D::rows_affected(&inserted) == 0 {
                if let Some(billed) = billed_call {
                    // The reservation above is for a call this create will not claim.
                    sqlx::query(stmt(sql.release_billed_call))
                        .bind(tenant.as_str())
                        .bind(billed.day)
                        .execute(&mut *conn)
                        .await
                        .map_err(Failed::Db)?;
                }
                return Ok(Done::Taken);
            }
            if let Some(idem) = idempotency {
                // On PostgreSQL a concurrent create of the same request id holds this insert until it ends; when
                // it committed, the insert writes nothing and this transaction must not keep its session.
                let result = sqlx::query(stmt(sql.insert_idempotency))
                    .bind(idem.tenant.as_str())
                    .bind(idem.request_key.as_str())
                    .bind(idem.fingerprint.as_str())
                    .bind(idem.session_id.as_str())
                    .bind(*created_at_ms)
                    .execute(&mut *conn)
                    .await;
                match result {
                    Ok(r) if D::rows_affected(&r) == 1 => {}
                    Ok(_) => return Err(Failed::Race),
                    Err(e) if D::lost_race(&e) => return Err(Failed::Race),
                    Err(e) => return Err(Failed::Db(e)),
                }
            }
            insert_events::<D>(conn, &row.id, events).await?;
            insert_outbox::<D>(conn, outbox).await?;
            Ok(Done::Created)
        }
        WriteOp::Update {
            row,
            expected_version,
            events,
            outbox,
        } => {
            // The update takes the row lock (SQLite: the write lock) first, so the events' sequences are
            // assigned one writer at a time.
            let result = bind_row(sqlx::query(stmt(sql.update_session)), row)
                .bind(row.vendor)
                .bind(row.id.as_str())
                .bind(*expected_version)
                .execute(&mut *conn)
                .await
                .map_err(Failed::Db)?;
            if D::rows_affected(&result) == 1 {
                insert_events::<D>(conn, &row.id, events).await?;
                insert_outbox::<D>(conn, outbox).await?;
                if events
                    .iter()
                    .any(|e| e.kind == crate::domain::events::KIND_REDACTED)
                {
                    // What was sent is not kept past a redaction; what is still to be sent stays, masked.
                    sqlx::query(sqlx::AssertSqlSafe(outbox::sql::<D>(
                        outbox::DROP_SENT_BODIES,
                    )))
                    .bind(row.id.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(Failed::Db)?;
                }
                return Ok(Done::Updated);
            }
            let exists = sqlx::query(stmt(sql.session_exists))
                .bind(row.id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(Failed::Db)?
                .is_some();
            Ok(Done::missed_update(exists))
        }
        WriteOp::Append {
            session_id,
            event,
            cap,
        } => {
            let locked = sqlx::query(stmt(sql.lock_session))
                .bind(session_id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(Failed::Db)?;
            if D::rows_affected(&locked) == 0 {
                return Ok(Done::NotFound);
            }
            if let Some((kinds, max)) = cap {
                let [k0, k1, k2] = cap_kinds(kinds);
                let n: i64 = sqlx::query(stmt(sql.count_events_of_kinds))
                    .bind(session_id.as_str())
                    .bind(k0)
                    .bind(k1)
                    .bind(k2)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(Failed::Db)?
                    .try_get(0)
                    .map_err(Failed::Db)?;
                if n >= i64::from(*max) {
                    return Ok(Done::Appended(false));
                }
            }
            insert_events::<D>(conn, session_id, std::slice::from_ref(event)).await?;
            Ok(Done::Appended(true))
        }
        WriteOp::Reserve { tenant, day, limit } => {
            // One statement: SQLite takes the write lock before reading the row; PostgreSQL locks the row (or
            // waits for a concurrent insert of it) and checks the limit against its latest version.
            let done = sqlx::query(stmt(sql.reserve_billed_call))
                .bind(tenant.as_str())
                .bind(*day)
                .bind(*limit)
                .execute(&mut *conn)
                .await
                .map_err(Failed::Db)?;
            Ok(Done::Reserved(D::rows_affected(&done) == 1))
        }
        WriteOp::Release { tenant, day } => {
            sqlx::query(stmt(sql.release_billed_call))
                .bind(tenant.as_str())
                .bind(*day)
                .execute(&mut *conn)
                .await
                .map_err(Failed::Db)?;
            Ok(Done::Released)
        }
    }
}

/// The statement appending `n` events to a session's log as its next sequences (run under the session's row
/// lock): parameter 1 is the session id, then `at_ms, kind, body` of each event. One statement whatever `n`: the
/// next sequence is read once, and each event's offset comes with its values.
pub(super) fn insert_events_sql<D: Dialect>(n: usize) -> String {
    let p = D::placeholder;
    let values: Vec<String> = (0..n)
        .map(|i| {
            let base = 2 + 3 * i;
            format!("({}, {}, {}, {})", i + 1, p(base), p(base + 1), p(base + 2))
        })
        .collect();
    format!(
        "INSERT INTO session_events (session_id, sequence, at_ms, kind, body) \
         SELECT {id}, (SELECT COALESCE(MAX(sequence), 0) FROM session_events WHERE session_id = {id}) + \
         v.column1, v.column2, v.column3, v.column4 FROM (VALUES {values}) AS v",
        id = p(1),
        values = values.join(", ")
    )
}

/// Writes a change's webhook messages.
async fn insert_outbox<D: Dialect>(
    conn: &mut <D::Database as Database>::Connection,
    rows: &[OutboxRow],
) -> Result<(), Failed>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> i64: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
{
    for row in rows {
        sqlx::query(sqlx::AssertSqlSafe(outbox::sql::<D>(outbox::INSERT)))
            .bind(row.id.as_str())
            .bind(row.endpoint.as_str())
            .bind(row.tenant.as_str())
            .bind(row.session_id.as_str())
            .bind(row.event_type)
            .bind(row.occurred_at_ms)
            .bind(row.body.as_str())
            .bind(row.occurred_at_ms)
            .execute(&mut *conn)
            .await
            .map_err(Failed::Db)?;
    }
    Ok(())
}

/// Appends `events` to a session's log in one statement.
async fn insert_events<D: Dialect>(
    conn: &mut <D::Database as Database>::Connection,
    session_id: &str,
    events: &[EventRow],
) -> Result<(), Failed>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> i64: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
{
    if events.is_empty() {
        return Ok(());
    }
    let sql = insert_events_sql::<D>(events.len());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(session_id);
    for event in events {
        query = query
            .bind(event.at_ms)
            .bind(event.kind)
            .bind(event.body.as_str());
    }
    query.execute(&mut *conn).await.map_err(Failed::Db)?;
    Ok(())
}
