//! Embedded SQLite store: one file, WAL journal, schema migrations by `PRAGMA user_version`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteQueryResult};
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::sql::{pending_migrations, Dialect, SqlStore, Statements, Step};
use super::sqlite_writer::{self, BUSY_TIMEOUT};
use super::writer::Writer;
use super::{StoreError, StoreOptions};

/// Schema migrations; entry `i` upgrades `user_version` `i` to `i + 1`.
const MIGRATIONS: &[&[Step]] = &[
    &[
        Step::Sql("CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        vendor TEXT NOT NULL,
        is_final INTEGER NOT NULL,
        in_flight INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        record TEXT NOT NULL
    )"),
        Step::Sql("CREATE INDEX sessions_live_by_expiry ON sessions (is_final, expires_at_ms)"),
        Step::Sql("CREATE INDEX sessions_in_flight ON sessions (in_flight) WHERE in_flight = 1"),
        Step::Sql("CREATE TABLE idempotency (
        request_id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        created_at_ms INTEGER NOT NULL
    )"),
        Step::Sql("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)"),
    ],
    &[
        Step::Sql("ALTER TABLE sessions ADD COLUMN personal_data_until_ms INTEGER"),
        Step::Sql("CREATE INDEX sessions_personal_data ON sessions (personal_data_until_ms)
     WHERE personal_data_until_ms IS NOT NULL"),
    ],
    &[Step::Sql("CREATE INDEX sessions_by_state ON sessions (state)")],
    // Tenants and live mode (issue 9): rows from before get the configured default tenant and legacy live mode;
    // request ids become unique per tenant (SQLite cannot change a primary key in place: the table is rebuilt).
    &[
        Step::Sql("ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT ''"),
        Step::Sql("ALTER TABLE sessions ADD COLUMN live_mode INTEGER NOT NULL DEFAULT 0"),
        Step::Legacy("UPDATE sessions SET tenant = ?, live_mode = ?"),
        Step::Sql("CREATE INDEX sessions_by_tenant ON sessions (tenant)"),
        Step::Sql(
            "CREATE TABLE idempotency_by_tenant (
        tenant TEXT NOT NULL,
        request_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, request_id)
    )",
        ),
        Step::Sql(
            "INSERT INTO idempotency_by_tenant (tenant, request_id, fingerprint, session_id, created_at_ms)
     SELECT s.tenant, i.request_id, i.fingerprint, i.session_id, i.created_at_ms
     FROM idempotency i JOIN sessions s ON s.id = i.session_id",
        ),
        Step::Sql("DROP TABLE idempotency"),
        Step::Sql("ALTER TABLE idempotency_by_tenant RENAME TO idempotency"),
    ],
    // Billed vendor calls per tenant and UTC day (days since 1970-01-01), for the daily cap.
    &[Step::Sql(
        "CREATE TABLE billed_calls (
        tenant TEXT NOT NULL,
        day INTEGER NOT NULL,
        calls INTEGER NOT NULL,
        PRIMARY KEY (tenant, day)
    )",
    )],
    // The per-session event log (issue 10): append-only, one row per event, the typed event as JSON in `body`.
    &[Step::Sql(
        "CREATE TABLE session_events (
        session_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
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
        day INTEGER NOT NULL,
        vendor TEXT NOT NULL,
        item TEXT NOT NULL,
        billed INTEGER NOT NULL,
        count INTEGER NOT NULL,
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
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        tenant TEXT NOT NULL,
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        occurred_at_ms INTEGER NOT NULL,
        body TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at_ms INTEGER NOT NULL,
        first_attempt_at_ms INTEGER,
        last_attempt_at_ms INTEGER,
        last_status_code INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        delivered_at_ms INTEGER,
        lease_owner TEXT,
        lease_until_ms INTEGER NOT NULL DEFAULT 0,
        drop_body_when_sent INTEGER NOT NULL DEFAULT 0,
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
        failing_since_ms INTEGER,
        disabled_at_ms INTEGER
    )",
        ),
    ],
];

/// SQLite's statements (booleans are 0 and 1).
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    type Database = sqlx::Sqlite;

    const SKIP_LOCKED: &'static str = "";

    const STATEMENTS: Statements = Statements {
        insert_session: "INSERT INTO sessions (version, state, is_final, in_flight, expires_at_ms, updated_at_ms,
             record, personal_data_until_ms, client_reference_key, id, vendor, created_at_ms, tenant, live_mode)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        insert_session_unless_taken: "INSERT INTO sessions (version, state, is_final, in_flight,
             expires_at_ms, updated_at_ms, record, personal_data_until_ms, client_reference_key, id, vendor,
             created_at_ms, tenant, live_mode)
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
             WHERE NOT EXISTS (SELECT 1 FROM idempotency WHERE tenant = ? AND request_id IN (?, ?))",
        idempotency_taken: "SELECT 1 FROM idempotency WHERE tenant = ? AND request_id IN (?, ?)",
        insert_idempotency: "INSERT INTO idempotency (tenant, request_id, fingerprint, session_id, created_at_ms)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, request_id) DO NOTHING",
        select_record: "SELECT record, tenant, live_mode FROM sessions WHERE id = ?",
        update_session: "UPDATE sessions SET version = ?, state = ?, is_final = ?, in_flight = ?,
             expires_at_ms = ?, updated_at_ms = ?, record = ?, personal_data_until_ms = ?,
             client_reference_key = ?, vendor = ? WHERE id = ? AND version = ?",
        session_exists: "SELECT 1 FROM sessions WHERE id = ?",
        select_idempotency: "SELECT tenant, request_id, fingerprint, session_id FROM idempotency
             WHERE tenant = ? AND request_id IN (?, ?)",
        expired: "SELECT id FROM sessions WHERE is_final = 0 AND expires_at_ms <= ? ORDER BY expires_at_ms LIMIT ?",
        personal_data_due: "SELECT id FROM sessions
             WHERE personal_data_until_ms IS NOT NULL AND personal_data_until_ms <= ? LIMIT ?",
        in_flight: "SELECT id FROM sessions WHERE in_flight = 1",
        count_by_state: "SELECT state, COUNT(*) FROM sessions GROUP BY state",
        make_fingerprint_key: "INSERT INTO meta (key, value) VALUES ('fingerprint_key', ?)
             ON CONFLICT (key) DO NOTHING",
        replace_fingerprint_key: "UPDATE meta SET value = ? WHERE key = 'fingerprint_key'",
        select_fingerprint_key: "SELECT value FROM meta WHERE key = 'fingerprint_key'",
        reserve_billed_call: "INSERT INTO billed_calls (tenant, day, calls) VALUES (?, ?, 1)
             ON CONFLICT (tenant, day) DO UPDATE SET calls = billed_calls.calls + 1 WHERE billed_calls.calls < ?",
        release_billed_call:
            "UPDATE billed_calls SET calls = calls - 1 WHERE tenant = ? AND day = ? AND calls > 0",
        billed_calls: "SELECT tenant, calls FROM billed_calls WHERE day = ? ORDER BY tenant",
        lock_session: "UPDATE sessions SET version = version WHERE id = ?",
        count_events_of_kinds:
            "SELECT COUNT(*) FROM session_events WHERE session_id = ? AND kind IN (?, ?, ?)",
        select_events: "SELECT sequence, at_ms, body FROM session_events
             WHERE session_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
        summarize_events:
            "SELECT kind, COUNT(*), MAX(at_ms) FROM session_events WHERE session_id = ? GROUP BY kind",
        begin_write: "BEGIN IMMEDIATE",
        begin_sweep: "BEGIN IMMEDIATE",
        old_sessions: "SELECT id FROM sessions WHERE created_at_ms < ? ORDER BY created_at_ms LIMIT ?",
        delete_idempotency_of: "DELETE FROM idempotency WHERE session_id = ?",
        delete_events_of: "DELETE FROM session_events WHERE session_id = ?",
        delete_session: "DELETE FROM sessions WHERE id = ? RETURNING record, tenant",
        add_billing_daily: "INSERT INTO billing_daily (tenant, day, vendor, item, billed, count)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, day, vendor, item, billed)
             DO UPDATE SET count = billing_daily.count + excluded.count",
        billing_daily: "SELECT tenant, day, vendor, item, billed, count FROM billing_daily
             ORDER BY tenant, day, vendor, item, billed",
        unkeyed_sessions: "SELECT record, tenant, live_mode, id FROM sessions WHERE client_reference_key IS NULL
             LIMIT ?",
        set_client_reference_key: "UPDATE sessions SET client_reference_key = ?
             WHERE id = ? AND client_reference_key IS NULL",
        not_sealed_with: "SELECT id, version, record FROM sessions WHERE id > ? AND record NOT LIKE ?
             ORDER BY id LIMIT ?",
        reseal_session: "UPDATE sessions SET record = ? WHERE id = ? AND version = ?",
    };

    fn placeholder(n: usize) -> String {
        format!("?{n}")
    }

    fn explain(sql: &str) -> (String, usize) {
        (format!("EXPLAIN QUERY PLAN {sql}"), 3)
    }

    /// Migrates in one transaction that holds the write lock from the start, so that processes opening the file
    /// at the same time read the version one after the other and migrate once.
    async fn migrate(pool: &SqlitePool, options: &StoreOptions) -> Result<(), StoreError> {
        let mut conn = pool.acquire().await.map_err(db)?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        match apply_migrations(&mut conn, options).await {
            Ok(()) => sqlx::query("COMMIT")
                .execute(&mut *conn)
                .await
                .map(|_| ())
                .map_err(db),
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e)
            }
        }
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    /// Moves the WAL into the main file and truncates it, so that the old page images it held are gone (the main
    /// file's freed pages are zeroed by `secure_delete`). A checkpoint blocked by readers is retried next time.
    async fn compact(pool: &SqlitePool) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// The embedded store.
pub type SqliteStore = SqlStore<SqliteDialect>;

fn db(e: sqlx::Error) -> StoreError {
    SqliteDialect::error(e)
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path` and migrates it (rows from before a column existed
    /// get their values from `store_options`).
    pub async fn open(path: &Path, store_options: &StoreOptions) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Database(format!("cannot create directory: {e}")))?;
            }
        }
        create_private(path)?;
        let url = format!("sqlite://{}", path.display());
        let options = CONNECTION_PRAGMAS.iter().fold(
            SqliteConnectOptions::from_str(&url)
                .map_err(db)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(BUSY_TIMEOUT),
            |options, (name, value)| options.pragma(*name, *value),
        );
        // Processes opening a new file at the same moment can be told SQLITE_BUSY at once, without the busy
        // handler (switching the file to WAL, recovering its index): opening is tried again for a few seconds.
        let mut tries = 0u32;
        let store = loop {
            match Self::connect_with(readers(&options), store_options).await {
                Err(StoreError::Database(m)) if is_busy(&m) && tries < OPEN_TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50) * tries).await;
                }
                other => break other?,
            }
        };
        // SQLite has one writer at a time: every write of this store goes through one connection that commits
        // what is queued meanwhile in one transaction (see `super::writer`).
        let conn = sqlite_writer::open(path)?;
        let (writer, queue) = Writer::channel();
        sqlite_writer::spawn(path, conn, queue)?;
        Ok(store.with_writer(writer))
    }
}

impl SqliteStore {
    /// [`SqliteStore::open`] for the one process that serves the file (`facegate serve`): it takes the lock file
    /// `<path>.lock` (waiting up to [`LOCK_WAIT`] for a stopping service to let it go) and, holding it, serves reads
    /// from what it wrote and read itself (see `super::recent`). A second service on the same file is refused: SQLite
    /// serves one process; replicas share PostgreSQL. Other openers (`rotate-keys`, which rewrites records without
    /// changing them, and tools) use [`SqliteStore::open`] and take no lock.
    pub async fn open_exclusive(
        path: &Path,
        store_options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        Self::open_exclusive_within(path, store_options, LOCK_WAIT).await
    }

    async fn open_exclusive_within(
        path: &Path,
        store_options: &StoreOptions,
        wait: Duration,
    ) -> Result<Self, StoreError> {
        let store = Self::open(path, store_options).await?;
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        let mut file = std::fs::OpenOptions::new();
        file.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        let file = file.open(&lock_path).map_err(|e| {
            StoreError::Database(format!(
                "cannot open the lock file {}: {e}",
                lock_path.display()
            ))
        })?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Database(format!(
                        "store.sqlite_path {} is in use by another facegate service (it holds {}): an SQLite \
                         store serves one process; replicas share a PostgreSQL database (store.database_url)",
                        path.display(),
                        lock_path.display()
                    )))
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::Database(format!(
                        "cannot lock {}: {e}",
                        lock_path.display()
                    )))
                }
            }
        }
        store.own(file);
        Ok(store)
    }
}

/// The settings of every connection to the file, the pool's and the writer's and checkpointer's
/// (`super::sqlite_writer`) alike.
pub(super) const CONNECTION_PRAGMAS: &[(&str, &str)] = &[
    // Deleted content is overwritten with zeros, not left in free pages.
    ("secure_delete", "ON"),
    // A commit is appended to the WAL without an fsync (README "Durability").
    ("synchronous", "NORMAL"),
    ("foreign_keys", "ON"),
    // Statement journals and temporary tables stay in memory: no temporary file per statement, and none that
    // holds a page of the store outside its own files.
    ("temp_store", "MEMORY"),
];

/// The pool's connections (reads, migrations, sweeps) keep a small page cache: SQLite allocates it with the C
/// allocator, which keeps what it once held, so eight connections at SQLite's default 2 MiB each left the process
/// up to 16 MiB larger after one pass over many sessions (10k StatusStreams opened, then closed). The serving
/// process answers most reads from memory (`super::recent`); a read that misses finds its pages in the OS page
/// cache. The writer's connection keeps the default: its index pages are touched by every write.
const READER_CACHE_KIB: i64 = 256;

fn readers(options: &SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .clone()
        .pragma("cache_size", format!("-{READER_CACHE_KIB}"))
}

/// How long [`SqliteStore::open_exclusive`] waits for another holder of the lock file.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Creates the database file readable by its owner only (mode 0600) unless it exists: SQLite then creates its
/// `-wal` and `-shm` files with the same mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(format!(
            "cannot create the database file: {e}"
        ))),
    }
}

/// How often opening is tried again after SQLITE_BUSY (about 5 s in all).
const OPEN_TRIES: u32 = 14;

/// Whether a database error is SQLite's BUSY (code 5) or LOCKED (code 6).
fn is_busy(message: &str) -> bool {
    message.contains("(code: 5)")
        || message.contains("(code: 6)")
        || message.contains("database is locked")
}

async fn apply_migrations(
    conn: &mut SqliteConnection,
    options: &StoreOptions,
) -> Result<(), StoreError> {
    let current: i64 = sqlx::query("PRAGMA user_version")
        .fetch_one(&mut *conn)
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
            query.execute(&mut *conn).await.map_err(db)?;
        }
        let bump = format!("PRAGMA user_version = {}", i + 1);
        sqlx::query(sqlx::AssertSqlSafe(bump))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionStore;

    #[tokio::test]
    async fn pool_connections_keep_a_small_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("facegate.db"), &StoreOptions::default())
            .await
            .unwrap();
        let size: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(size, -READER_CACHE_KIB);
        for (pragma, expected) in [("secure_delete", 1), ("synchronous", 1), ("temp_store", 2)] {
            let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {pragma}")))
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(value, expected, "{pragma}");
        }
    }

    #[tokio::test]
    async fn one_service_owns_the_file_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("facegate.db");
        let options = StoreOptions::default();
        let first = SqliteStore::open_exclusive(&path, &options).await.unwrap();
        let refused =
            SqliteStore::open_exclusive_within(&path, &options, Duration::from_millis(200))
                .await
                .err()
                .unwrap()
                .to_string();
        assert!(refused.contains("store.sqlite_path"), "{refused}");
        assert!(refused.contains("store.database_url"), "{refused}");
        // Tools open it beside the service.
        SqliteStore::open(&path, &options).await.unwrap();
        // Once the service stopped, a new start takes it (also while the old one is still being dropped).
        first.release();
        SqliteStore::open_exclusive_within(&path, &options, Duration::from_millis(200))
            .await
            .unwrap();
    }
}
