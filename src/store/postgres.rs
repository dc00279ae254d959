//! PostgreSQL store: the tables of the SQLite store in PostgreSQL types, shared by every replica that points at the
//! same database. Schema migrations are numbered rows of `facegate_schema_migrations`, applied under a transaction
//! advisory lock so that replicas starting together migrate once.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgQueryResult};
use sqlx::{PgPool, Row};

use super::sql::{pending_migrations, Dialect, SqlStore, Statements, Step};
use super::{StoreError, StoreOptions};

/// The schema version this build migrates a database to: the number of [`MIGRATIONS`], each one row of
/// `facegate_schema_migrations`.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
///
/// `record` is TEXT, not JSONB: JSONB refuses `\u0000` in strings, and its errors quote the document.
const MIGRATIONS: &[&[Step]] = &[
    &[
        Step::Sql("CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        state TEXT NOT NULL,
        vendor TEXT NOT NULL,
        is_final BOOLEAN NOT NULL,
        in_flight BOOLEAN NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        record TEXT NOT NULL,
        personal_data_until_ms BIGINT
    )"),
        Step::Sql("CREATE INDEX sessions_live_by_expiry ON sessions (is_final, expires_at_ms)"),
        Step::Sql("CREATE INDEX sessions_in_flight ON sessions (in_flight) WHERE in_flight"),
        Step::Sql("CREATE INDEX sessions_personal_data ON sessions (personal_data_until_ms)
     WHERE personal_data_until_ms IS NOT NULL"),
        Step::Sql("CREATE TABLE idempotency (
        request_id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        created_at_ms BIGINT NOT NULL
    )"),
        Step::Sql("CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL)"),
    ],
    &[Step::Sql("CREATE INDEX sessions_by_state ON sessions (state)")],
    // Tenants and live mode (issue 9): rows from before get the configured default tenant and legacy live mode;
    // request ids become unique per tenant.
    &[
        Step::Sql("ALTER TABLE sessions ADD COLUMN tenant TEXT, ADD COLUMN live_mode BOOLEAN"),
        Step::Legacy("UPDATE sessions SET tenant = $1, live_mode = $2"),
        Step::Sql(
            "ALTER TABLE sessions ALTER COLUMN tenant SET NOT NULL, ALTER COLUMN live_mode SET NOT NULL",
        ),
        Step::Sql("CREATE INDEX sessions_by_tenant ON sessions (tenant)"),
        Step::Sql("ALTER TABLE idempotency ADD COLUMN tenant TEXT"),
        Step::Sql(
            "UPDATE idempotency i SET tenant = s.tenant FROM sessions s WHERE s.id = i.session_id",
        ),
        Step::Sql("ALTER TABLE idempotency ALTER COLUMN tenant SET NOT NULL"),
        Step::Sql("ALTER TABLE idempotency DROP CONSTRAINT idempotency_pkey"),
        Step::Sql("ALTER TABLE idempotency ADD PRIMARY KEY (tenant, request_id)"),
    ],
    // Billed vendor calls per tenant and UTC day (days since 1970-01-01), for the daily cap.
    &[Step::Sql(
        "CREATE TABLE billed_calls (
        tenant TEXT NOT NULL,
        day BIGINT NOT NULL,
        calls BIGINT NOT NULL,
        PRIMARY KEY (tenant, day)
    )",
    )],
    // The per-session event log (issue 10): append-only, one row per event, the typed event as JSON in `body`.
    &[Step::Sql(
        "CREATE TABLE session_events (
        session_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (session_id, sequence)
    )",
    )],
    // Retention: aggregated billing of deleted sessions, and the index the row sweep reads.
    &[
        Step::Sql(
        "CREATE TABLE billing_daily (
        tenant TEXT NOT NULL,
        day BIGINT NOT NULL,
        vendor TEXT NOT NULL,
        item TEXT NOT NULL,
        billed BOOLEAN NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (tenant, day, vendor, item, billed)
    )",
    ),
    Step::Sql("CREATE INDEX sessions_by_create_time ON sessions (created_at_ms)")],
    // ListSessions (issue 10): the keyed hash of each session's client reference (filled on insert and update;
    // rows from before are filled when the store opens, see `SqlStore::backfill_client_reference_keys`) and the
    // indexes of the page query, newest first, per filter.
    &[
        Step::Sql("ALTER TABLE sessions ADD COLUMN client_reference_key TEXT"),
        Step::Sql("CREATE INDEX sessions_list ON sessions (tenant, created_at_ms DESC, id DESC)"),
        Step::Sql(
            "CREATE INDEX sessions_list_by_state ON sessions (tenant, state, created_at_ms DESC, id DESC)",
        ),
        Step::Sql(
            "CREATE INDEX sessions_list_by_vendor ON sessions (tenant, vendor, created_at_ms DESC, id DESC)",
        ),
        Step::Sql(
            "CREATE INDEX sessions_list_by_reference
     ON sessions (tenant, client_reference_key, created_at_ms DESC, id DESC)",
        ),
        Step::Sql("CREATE INDEX sessions_unkeyed ON sessions (id) WHERE client_reference_key IS NULL"),
    ],
    // Outbound webhooks (issue 13): one row per event and endpoint, written with the change it reports; each
    // endpoint's failure streak.
    &[
        Step::Sql(
            "CREATE TABLE webhook_outbox (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        tenant TEXT NOT NULL,
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        occurred_at_ms BIGINT NOT NULL,
        body TEXT,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at_ms BIGINT NOT NULL,
        first_attempt_at_ms BIGINT,
        last_attempt_at_ms BIGINT,
        last_status_code BIGINT NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        delivered_at_ms BIGINT,
        lease_owner TEXT,
        lease_until_ms BIGINT NOT NULL DEFAULT 0,
        drop_body_when_sent BIGINT NOT NULL DEFAULT 0,
        UNIQUE (id, endpoint)
    )",
        ),
        Step::Sql(
            "CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at_ms) WHERE status = 'pending'",
        ),
        Step::Sql(
            "CREATE INDEX webhook_outbox_order ON webhook_outbox (endpoint, session_id, seq)
     WHERE status = 'pending'",
        ),
        Step::Sql("CREATE INDEX webhook_outbox_by_tenant ON webhook_outbox (tenant, seq)"),
        Step::Sql("CREATE INDEX webhook_outbox_by_session ON webhook_outbox (session_id)"),
        Step::Sql(
            "CREATE TABLE webhook_endpoints (
        endpoint TEXT PRIMARY KEY,
        failing_since_ms BIGINT,
        disabled_at_ms BIGINT
    )",
        ),
    ],
];

/// The advisory lock key replicas migrate under ("facegate" in ASCII).
const MIGRATION_LOCK: i64 = 0x6661_6365_6761_7465;

/// PostgreSQL's statements.
pub struct PostgresDialect;

impl Dialect for PostgresDialect {
    type Database = sqlx::Postgres;

    const SKIP_LOCKED: &'static str = " FOR UPDATE OF o SKIP LOCKED";

    const STATEMENTS: Statements = Statements {
        insert_session: "INSERT INTO sessions (version, state, is_final, in_flight, expires_at_ms, updated_at_ms,
             record, personal_data_until_ms, client_reference_key, id, vendor, created_at_ms, tenant, live_mode)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        insert_session_unless_taken: "INSERT INTO sessions (version, state, is_final, in_flight,
             expires_at_ms, updated_at_ms, record, personal_data_until_ms, client_reference_key, id, vendor,
             created_at_ms, tenant, live_mode)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14
             WHERE NOT EXISTS (SELECT 1 FROM idempotency WHERE tenant = $15 AND request_id IN ($16, $17))",
        idempotency_taken: "SELECT 1 FROM idempotency WHERE tenant = $1 AND request_id IN ($2, $3)",
        insert_idempotency: "INSERT INTO idempotency (tenant, request_id, fingerprint, session_id, created_at_ms)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, request_id) DO NOTHING",
        select_record: "SELECT record, tenant, live_mode FROM sessions WHERE id = $1",
        update_session: "UPDATE sessions SET version = $1, state = $2, is_final = $3, in_flight = $4,
             expires_at_ms = $5, updated_at_ms = $6, record = $7, personal_data_until_ms = $8,
             client_reference_key = $9, vendor = $10 WHERE id = $11 AND version = $12",
        session_exists: "SELECT 1 FROM sessions WHERE id = $1",
        select_idempotency: "SELECT tenant, request_id, fingerprint, session_id FROM idempotency
             WHERE tenant = $1 AND request_id IN ($2, $3)",
        expired: "SELECT id FROM sessions WHERE NOT is_final AND expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2",
        personal_data_due: "SELECT id FROM sessions
             WHERE personal_data_until_ms IS NOT NULL AND personal_data_until_ms <= $1 LIMIT $2",
        in_flight: "SELECT id FROM sessions WHERE in_flight",
        count_by_state: "SELECT state, COUNT(*) FROM sessions GROUP BY state",
        // The first replica to ask writes the (sealed) key; every other one reads the same.
        make_fingerprint_key: "INSERT INTO meta (key, value) VALUES ('fingerprint_key', $1)
             ON CONFLICT (key) DO NOTHING",
        replace_fingerprint_key: "UPDATE meta SET value = $1 WHERE key = 'fingerprint_key'",
        select_fingerprint_key: "SELECT value FROM meta WHERE key = 'fingerprint_key'",
        // Under READ COMMITTED a concurrent reservation of the same row waits for this one and then sees its
        // count; under a stricter default isolation it fails with 40001, a lost race tried again.
        reserve_billed_call: "INSERT INTO billed_calls (tenant, day, calls) VALUES ($1, $2, 1)
             ON CONFLICT (tenant, day) DO UPDATE SET calls = billed_calls.calls + 1
             WHERE billed_calls.calls < $3",
        release_billed_call:
            "UPDATE billed_calls SET calls = calls - 1 WHERE tenant = $1 AND day = $2 AND calls > 0",
        billed_calls: "SELECT tenant, calls FROM billed_calls WHERE day = $1 ORDER BY tenant",
        lock_session: "UPDATE sessions SET version = version WHERE id = $1",
        count_events_of_kinds:
            "SELECT COUNT(*) FROM session_events WHERE session_id = $1 AND kind IN ($2, $3, $4)",
        select_events: "SELECT sequence, at_ms, body FROM session_events
             WHERE session_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        summarize_events:
            "SELECT kind, COUNT(*), MAX(at_ms) FROM session_events WHERE session_id = $1 GROUP BY kind",
        begin_write: "BEGIN",
        begin_sweep: "BEGIN",
        old_sessions: "SELECT id FROM sessions WHERE created_at_ms < $1 ORDER BY created_at_ms LIMIT $2
             FOR UPDATE SKIP LOCKED",
        delete_idempotency_of: "DELETE FROM idempotency WHERE session_id = $1",
        delete_events_of: "DELETE FROM session_events WHERE session_id = $1",
        delete_session: "DELETE FROM sessions WHERE id = $1 RETURNING record, tenant",
        add_billing_daily: "INSERT INTO billing_daily (tenant, day, vendor, item, billed, count)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, day, vendor, item, billed)
             DO UPDATE SET count = billing_daily.count + excluded.count",
        billing_daily: "SELECT tenant, day, vendor, item, billed, count FROM billing_daily
             ORDER BY tenant, day, vendor, item, billed",
        unkeyed_sessions: "SELECT record, tenant, live_mode, id FROM sessions WHERE client_reference_key IS NULL
             LIMIT $1",
        set_client_reference_key: "UPDATE sessions SET client_reference_key = $1
             WHERE id = $2 AND client_reference_key IS NULL",
        // COLLATE "C": ids compare bytewise, the order the paging by `id >` needs whatever the database collation.
        not_sealed_with: "SELECT id, version, record FROM sessions
             WHERE id COLLATE \"C\" > $1 AND record NOT LIKE $2 ORDER BY id COLLATE \"C\" LIMIT $3",
        reseal_session: "UPDATE sessions SET record = $1 WHERE id = $2 AND version = $3",
    };

    fn placeholder(n: usize) -> String {
        format!("${n}")
    }

    fn explain(sql: &str) -> (String, usize) {
        (format!("EXPLAIN {sql}"), 0)
    }

    /// Migrates in one transaction under an advisory lock: replicas starting together wait for each other, and
    /// the later ones find the schema migrated.
    async fn migrate(pool: &PgPool, options: &StoreOptions) -> Result<(), StoreError> {
        let mut tx = pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS facegate_schema_migrations (
                version BIGINT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let current: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) FROM facegate_schema_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?
                .try_get(0)
                .map_err(db)?;
        for i in pending_migrations(current, MIGRATIONS.len())? {
            for step in MIGRATIONS[i] {
                let query = match step {
                    Step::Sql(sql) => sqlx::query(*sql),
                    Step::Legacy(sql) => sqlx::query(*sql)
                        .bind(options.default_tenant.as_str())
                        .bind(options.legacy_live_mode),
                };
                query.execute(&mut *tx).await.map_err(db)?;
            }
            sqlx::query("INSERT INTO facegate_schema_migrations (version) VALUES ($1)")
                .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// Nothing to do: the stale tuples an update or wipe leaves (until VACUUM) hold sealed records only.
    async fn compact(_pool: &PgPool) -> Result<(), StoreError> {
        Ok(())
    }

    /// Errors of SQLSTATE class 22 (data exception) and 23 (integrity constraint violation) can quote the values a
    /// statement carried, in their message or detail: they keep only their code, constraint and table. sqlx's text
    /// of other errors is the server's primary message, which names objects, not values.
    fn error(e: sqlx::Error) -> StoreError {
        if let Some(pg) = database_error(&e) {
            let code = pg.code();
            if code.starts_with("22") || code.starts_with("23") {
                return StoreError::Database(format!(
                    "SQLSTATE {code} (constraint {}, table {})",
                    pg.constraint().unwrap_or("-"),
                    pg.table().unwrap_or("-")
                ));
            }
        }
        StoreError::Database(e.to_string())
    }

    /// The insert's `ON CONFLICT` absorbs the usual race; a unique violation, a serialization failure (under a
    /// serializable default isolation) or a deadlock is a lost race too.
    fn lost_race(e: &sqlx::Error) -> bool {
        database_error(e).is_some_and(|pg| matches!(pg.code(), "23505" | "40001" | "40P01"))
    }
}

fn database_error(e: &sqlx::Error) -> Option<&PgDatabaseError> {
    match e {
        sqlx::Error::Database(d) => d.try_downcast_ref::<PgDatabaseError>(),
        _ => None,
    }
}

fn db(e: sqlx::Error) -> StoreError {
    PostgresDialect::error(e)
}

/// The shared store.
pub type PostgresStore = SqlStore<PostgresDialect>;

impl PostgresStore {
    /// Connects to `url` (`postgres://` or `postgresql://`, libpq parameters such as `sslmode` in the query) and
    /// migrates the schema (rows from before a column existed get their values from `store_options`).
    pub async fn connect(url: &str, store_options: &StoreOptions) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid database URL: {e}")))?
            .application_name("facegate");
        Self::connect_with(options, store_options).await
    }
}
