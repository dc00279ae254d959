//! The webhook outbox of [`super::sql::SqlStore`]: `webhook_outbox` holds one row per event and endpoint, written in
//! the transaction of the change it reports (see [`super::writer`]), its body sealed with the session's key ring
//! (associated data: the event id and endpoint); `webhook_endpoints` holds each endpoint's failure streak and
//! whether it was disabled.
//!
//! Delivery is claimed with a lease (`lease_owner`, `lease_until_ms`): a worker takes a batch of due rows whose
//! lease is free, each only when no earlier row of the same session and endpoint is still pending (events of one
//! session go in order), on PostgreSQL skipping rows another replica is claiming (`FOR UPDATE SKIP LOCKED`). A
//! worker that dies leaves its lease to run out; another then takes the row (at least once).
//!
//! A redaction drops the bodies of the session's messages that were sent (or given up), and those still pending
//! lose theirs once they are: nothing of a redacted session's data stays in the outbox after it was sent.

use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::sql::{Dialect, SqlStore};
use super::StoreError;
use crate::domain::webhooks::{
    AttemptNext, AttemptRecord, AttemptRecorded, Backlog, ClaimedMessage, DeliveryFilter,
    DeliveryStatus, WebhookDelivery,
};

/// A message to insert, its body sealed.
#[derive(Clone)]
pub(super) struct OutboxRow {
    pub id: String,
    pub endpoint: String,
    pub tenant: String,
    pub session_id: String,
    pub event_type: &'static str,
    pub occurred_at_ms: i64,
    pub body: String,
}

impl std::fmt::Debug for OutboxRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRow")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

/// Associated data sealing a message body: the event id and endpoint (a body moved to another row does not open).
pub(super) fn body_aad(id: &str, endpoint: &str) -> String {
    format!("webhook:{id}:{endpoint}")
}

/// A statement written with PostgreSQL's `$n` placeholders, in `D`'s (SQLite: `?n`).
pub(super) fn sql<D: Dialect>(text: &str) -> String {
    if D::placeholder(1) == "$1" {
        text.to_owned()
    } else {
        text.replace('$', "?")
    }
}

/// Inserts one message (inside the change's transaction).
pub(super) const INSERT: &str =
    "INSERT INTO webhook_outbox (id, endpoint, tenant, session_id, event_type,
     occurred_at_ms, body, status, attempts, next_attempt_at_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8)";

/// At a redaction: drops the bodies of a session's messages that are no longer pending (delivered or given up),
/// and marks the pending ones to lose theirs once they are: `session_id`.
pub(super) const DROP_SENT_BODIES: &str = "UPDATE webhook_outbox
     SET body = CASE WHEN status = 'pending' THEN body ELSE NULL END, drop_body_when_sent = 1
     WHERE session_id = $1";

/// Deletes a session's messages (the retention sweep): `session_id`.
pub(super) const DELETE_OF_SESSION: &str = "DELETE FROM webhook_outbox WHERE session_id = $1";

const CLAIM: &str = "UPDATE webhook_outbox SET lease_owner = $1, lease_until_ms = $2,
     first_attempt_at_ms = COALESCE(first_attempt_at_ms, $3)
     WHERE seq IN (
       SELECT o.seq FROM webhook_outbox o
       WHERE o.status = 'pending' AND o.next_attempt_at_ms <= $3 AND o.lease_until_ms < $3
         AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.endpoint = o.endpoint
           AND p.session_id = o.session_id AND p.status = 'pending' AND p.seq < o.seq)
         AND NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.endpoint = o.endpoint
           AND e.disabled_at_ms IS NOT NULL)
       ORDER BY o.seq LIMIT $4 {LOCK})
     RETURNING seq, id, endpoint, tenant, session_id, event_type, body, attempts, first_attempt_at_ms";

const RECORD: &str = "UPDATE webhook_outbox SET status = $1, attempts = attempts + 1,
     body = CASE WHEN drop_body_when_sent = 1 AND $1 <> 'pending' THEN NULL ELSE body END,
     last_attempt_at_ms = $2, last_status_code = $3, last_error = $4, next_attempt_at_ms = $5,
     delivered_at_ms = $6, lease_owner = NULL, lease_until_ms = 0
     WHERE seq = $7 AND lease_owner = $8";

const ENDPOINT_OK: &str =
    "UPDATE webhook_endpoints SET failing_since_ms = NULL WHERE endpoint = $1 AND failing_since_ms IS NOT NULL";

const ENDPOINT_FAILED: &str = "INSERT INTO webhook_endpoints (endpoint, failing_since_ms, disabled_at_ms)
     VALUES ($1, $2, NULL) ON CONFLICT (endpoint) DO UPDATE
     SET failing_since_ms = COALESCE(webhook_endpoints.failing_since_ms, excluded.failing_since_ms)";

const ENDPOINT_DISABLE: &str = "UPDATE webhook_endpoints SET disabled_at_ms = $1
     WHERE endpoint = $2 AND disabled_at_ms IS NULL AND failing_since_ms <= $3";

const ENDPOINT_ENABLE: &str =
    "UPDATE webhook_endpoints SET disabled_at_ms = NULL, failing_since_ms = NULL WHERE endpoint = $1";

const RELEASE: &str = "UPDATE webhook_outbox SET lease_owner = NULL, lease_until_ms = $1
     WHERE seq = $2 AND lease_owner = $3";

const RELEASE_ALL: &str =
    "UPDATE webhook_outbox SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner IS NOT NULL";

const COLUMNS: &str = "seq, id, endpoint, session_id, event_type, occurred_at_ms, status, attempts,
     last_status_code, last_error, last_attempt_at_ms, next_attempt_at_ms, delivered_at_ms";

const LIST: &str = "SELECT {COLUMNS} FROM webhook_outbox
     WHERE tenant = $1 AND ($2 = '' OR session_id = $2) AND ($3 = '' OR endpoint = $3)
       AND ($4 = '' OR status = $4) AND seq < $5
     ORDER BY seq DESC LIMIT $6";

const FIND: &str = "SELECT {COLUMNS}, body IS NOT NULL FROM webhook_outbox
     WHERE tenant = $1 AND id = $2 AND ($3 = '' OR endpoint = $3) ORDER BY seq LIMIT 2";

const REDELIVER: &str = "UPDATE webhook_outbox SET status = 'pending', next_attempt_at_ms = $1,
     first_attempt_at_ms = CASE WHEN status = 'pending' THEN first_attempt_at_ms ELSE NULL END
     WHERE seq = $2";

const BACKLOG: &str = "SELECT endpoint, COUNT(*), MIN(occurred_at_ms) FROM webhook_outbox
     WHERE status = 'pending' GROUP BY endpoint ORDER BY endpoint";

/// What [`SqlStore::find_delivery`] found.
pub enum Found {
    /// No such event for this tenant (and endpoint).
    None,
    /// The event went to several endpoints: the request must name one.
    Several,
    /// The delivery, and whether its body is still kept.
    One(Box<WebhookDelivery>, bool),
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut <D::Database as Database>::Connection: Executor<'c, Database = D::Database>,
    <D::Database as Database>::Arguments: IntoArguments<D::Database>,
    for<'t> i64: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> Option<i64>: Encode<'t, D::Database> + Type<D::Database>,
    for<'t> &'t str: Encode<'t, D::Database> + Type<D::Database>,
    for<'r> String: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> Option<String>: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> Option<i64>: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> i64: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> bool: Decode<'r, D::Database> + Type<D::Database>,
    usize: sqlx::ColumnIndex<<D::Database as Database>::Row>,
{
    /// Claims up to `limit` due messages for `owner` until `lease_until_ms`, oldest first.
    pub(super) async fn claim_messages(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let statement = sql::<D>(&CLAIM.replace("{LOCK}", D::SKIP_LOCKED));
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(owner)
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get(1).map_err(D::error)?;
            let endpoint: String = r.try_get(2).map_err(D::error)?;
            let sealed: Option<String> = r.try_get(6).map_err(D::error)?;
            let body = match sealed {
                Some(text) => Some(
                    String::from_utf8(self.keys.open(&body_aad(&id, &endpoint), &text)?)
                        .map_err(|_| StoreError::Corrupt("webhook body".into()))?,
                ),
                None => None,
            };
            claimed.push(ClaimedMessage {
                seq: r.try_get(0).map_err(D::error)?,
                id,
                endpoint,
                tenant: r.try_get(3).map_err(D::error)?,
                session_id: r.try_get(4).map_err(D::error)?,
                event_type: r.try_get(5).map_err(D::error)?,
                body,
                attempts: r.try_get(7).map_err(D::error)?,
                first_attempt_at_ms: r
                    .try_get::<Option<i64>, _>(8)
                    .map_err(D::error)?
                    .unwrap_or(now_ms),
            });
        }
        claimed.sort_by_key(|c| c.seq);
        Ok(claimed)
    }

    /// Records an attempt of a message `owner` holds, and what it says about the endpoint: a failure that makes
    /// its streak reach back to `disable_if_failing_since_ms` (or earlier) disables it.
    pub(super) async fn record_message_attempt(
        &self,
        message: &ClaimedMessage,
        owner: &str,
        attempt: &AttemptRecord,
        disable_if_failing_since_ms: i64,
    ) -> Result<AttemptRecorded, StoreError> {
        let (status, next_at, delivered_at) = match attempt.next {
            AttemptNext::Delivered => (
                DeliveryStatus::Delivered,
                attempt.at_ms,
                Some(attempt.at_ms),
            ),
            AttemptNext::RetryAt(at) => (DeliveryStatus::Pending, at, None),
            AttemptNext::GiveUp => (DeliveryStatus::Failed, attempt.at_ms, None),
        };
        let mut tx = self
            .pool
            .begin_with(D::STATEMENTS.begin_write)
            .await
            .map_err(D::error)?;
        let done = sqlx::query(sqlx::AssertSqlSafe(sql::<D>(RECORD)))
            .bind(status.as_str())
            .bind(attempt.at_ms)
            .bind(attempt.response_code)
            .bind(attempt.error.as_str())
            .bind(next_at)
            .bind(delivered_at)
            .bind(message.seq)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(D::error)?;
        let mut recorded = AttemptRecorded {
            written: D::rows_affected(&done) == 1,
            endpoint_disabled: false,
        };
        if recorded.written {
            if attempt.next == AttemptNext::Delivered {
                sqlx::query(sqlx::AssertSqlSafe(sql::<D>(ENDPOINT_OK)))
                    .bind(message.endpoint.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(D::error)?;
            } else {
                sqlx::query(sqlx::AssertSqlSafe(sql::<D>(ENDPOINT_FAILED)))
                    .bind(message.endpoint.as_str())
                    .bind(attempt.at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(D::error)?;
                let disabled = sqlx::query(sqlx::AssertSqlSafe(sql::<D>(ENDPOINT_DISABLE)))
                    .bind(attempt.at_ms)
                    .bind(message.endpoint.as_str())
                    .bind(disable_if_failing_since_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(D::error)?;
                recorded.endpoint_disabled = D::rows_affected(&disabled) == 1;
            }
        }
        tx.commit().await.map_err(D::error)?;
        Ok(recorded)
    }

    /// Gives a claimed message back without an attempt, its lease held off until `until_ms` (its endpoint is not
    /// configured in this process: another replica may know it).
    pub(super) async fn release_message(
        &self,
        message: &ClaimedMessage,
        owner: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(sql::<D>(RELEASE)))
            .bind(until_ms)
            .bind(message.seq)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(D::error)?;
        Ok(())
    }

    /// Frees every lease (a store one process owns, at its start: whoever held them is gone).
    pub(super) async fn release_all_leases(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(sqlx::AssertSqlSafe(sql::<D>(RELEASE_ALL)))
            .execute(&self.pool)
            .await
            .map_err(D::error)?;
        Ok(D::rows_affected(&done))
    }

    /// A page of a tenant's deliveries below `before_seq`, newest first.
    pub(super) async fn list_deliveries(
        &self,
        tenant: &str,
        filter: &DeliveryFilter,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let statement = sql::<D>(&LIST.replace("{COLUMNS}", COLUMNS));
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(tenant)
            .bind(filter.session_id.as_str())
            .bind(filter.endpoint.as_str())
            .bind(filter.status.map_or("", DeliveryStatus::as_str))
            .bind(before_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        rows.iter().map(delivery_of::<D>).collect()
    }

    /// The delivery of a tenant's event `id` (to `endpoint`, or to its only endpoint when empty).
    pub(super) async fn find_delivery(
        &self,
        tenant: &str,
        id: &str,
        endpoint: &str,
    ) -> Result<Found, StoreError> {
        let statement = sql::<D>(&FIND.replace("{COLUMNS}", COLUMNS));
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(tenant)
            .bind(id)
            .bind(endpoint)
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        match rows.as_slice() {
            [] => Ok(Found::None),
            [row] => Ok(Found::One(
                Box::new(delivery_of::<D>(row)?),
                row.try_get(13).map_err(D::error)?,
            )),
            _ => Ok(Found::Several),
        }
    }

    /// Makes a delivery pending again, due at `now_ms` (a new retry period unless it was pending), and enables
    /// its endpoint.
    pub(super) async fn redeliver_message(
        &self,
        delivery: &WebhookDelivery,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin_with(D::STATEMENTS.begin_write)
            .await
            .map_err(D::error)?;
        sqlx::query(sqlx::AssertSqlSafe(sql::<D>(REDELIVER)))
            .bind(now_ms)
            .bind(delivery.seq)
            .execute(&mut *tx)
            .await
            .map_err(D::error)?;
        sqlx::query(sqlx::AssertSqlSafe(sql::<D>(ENDPOINT_ENABLE)))
            .bind(delivery.endpoint.as_str())
            .execute(&mut *tx)
            .await
            .map_err(D::error)?;
        tx.commit().await.map_err(D::error)
    }

    /// Pending messages per endpoint.
    pub(super) async fn backlog(&self) -> Result<Vec<Backlog>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql::<D>(BACKLOG)))
            .fetch_all(&self.pool)
            .await
            .map_err(D::error)?;
        rows.iter()
            .map(|r| {
                Ok(Backlog {
                    endpoint: r.try_get(0).map_err(D::error)?,
                    pending: u64::try_from(r.try_get::<i64, _>(1).map_err(D::error)?).unwrap_or(0),
                    oldest_at_ms: r.try_get(2).map_err(D::error)?,
                })
            })
            .collect()
    }
}

/// A delivery from a row of [`COLUMNS`].
fn delivery_of<D: Dialect>(
    r: &<D::Database as Database>::Row,
) -> Result<WebhookDelivery, StoreError>
where
    for<'r> String: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> Option<i64>: Decode<'r, D::Database> + Type<D::Database>,
    for<'r> i64: Decode<'r, D::Database> + Type<D::Database>,
    usize: sqlx::ColumnIndex<<D::Database as Database>::Row>,
{
    let status: String = r.try_get(6).map_err(D::error)?;
    Ok(WebhookDelivery {
        seq: r.try_get(0).map_err(D::error)?,
        id: r.try_get(1).map_err(D::error)?,
        endpoint: r.try_get(2).map_err(D::error)?,
        session_id: r.try_get(3).map_err(D::error)?,
        event_type: r.try_get(4).map_err(D::error)?,
        occurred_at_ms: r.try_get(5).map_err(D::error)?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt("webhook delivery status".into()))?,
        attempts: r.try_get(7).map_err(D::error)?,
        last_response_code: r.try_get(8).map_err(D::error)?,
        last_error: r.try_get(9).map_err(D::error)?,
        last_attempt_at_ms: r.try_get(10).map_err(D::error)?,
        next_attempt_at_ms: r.try_get(11).map_err(D::error)?,
        delivered_at_ms: r.try_get(12).map_err(D::error)?,
    })
}
