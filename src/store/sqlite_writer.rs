//! The SQLite store's writer: one OS thread that owns one synchronous connection (rusqlite, on the same
//! `libsqlite3-sys` as sqlx's pool) and applies the [`WriteOp`]s queued meanwhile in one transaction (group commit).
//!
//! sqlx's SQLite driver runs every statement on a worker thread of its connection and hands each one over and back
//! through channels: a session's create took four statements, so four round trips between threads, all of them in
//! the one writer's critical path. Here the statements of a whole batch run on the thread that holds the connection,
//! as prepared statements kept in its cache; a caller's only hand-offs are its op going in and its outcome coming
//! back after the commit. What an op does is what [`super::writer::apply`] does on PostgreSQL.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::mpsc;

use super::outbox::{self, OutboxRow};
use super::sql::Dialect;
use super::sqlite::{SqliteDialect, CONNECTION_PRAGMAS};
use super::writer::{
    cap_kinds, insert_events_sql, Done, EventRow, Failed, IdempotencyRow, Job, SessionRow, WriteOp,
    MAX_BATCH,
};
use super::StoreError;

/// Prepared statements the connection keeps (the writes' own, and one event insert per event count).
const STATEMENT_CACHE: usize = 64;

/// A failure of SQLite as a store error. rusqlite's text of an error is SQLite's message and code, without the
/// values a statement bound.
fn db(e: rusqlite::Error) -> Failed {
    Failed::Store(StoreError::Database(e.to_string()))
}

/// Opens the writer's connection to the (existing, migrated) database at `path` with the pool's settings.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = |e: rusqlite::Error| StoreError::Database(format!("opening the store's writer: {e}"));
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "the store's writer could not switch the file to WAL (journal mode {mode})"
        )));
    }
    // Checkpoints run on a thread of their own (see `checkpoints`): a commit that crossed SQLite's automatic
    // threshold would otherwise copy the WAL into the file and fsync both inside the group commit, with every
    // waiting write behind it.
    for (name, value) in CONNECTION_PRAGMAS
        .iter()
        .chain(&[("wal_autocheckpoint", "0")])
    {
        conn.pragma_update(None, name, value).map_err(err)?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// How long the checkpointer lets commits accumulate before it copies them into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL frames (pages, 4 KiB each) past which the writer catches the checkpoint up itself, between two batches, so
/// that the next commit starts the WAL again from its beginning (16 MiB).
///
/// The checkpointer alone cannot end the WAL under a steady load: while it copies, new commits are appended, so
/// the WAL is never entirely in the file at the moment a commit starts, and SQLite only rewinds the WAL then. The
/// WAL grew by 30 MB/s at 3k sessions/s (1 GB after 35 s), every append a new block the file system zeroes.
const WAL_REWIND_FRAMES: u64 = 4096;

/// Starts the writer thread on `conn`, and beside it the thread that checkpoints what it committed (on a
/// connection of its own to `path`); both end when every [`super::writer::Writer`] is gone.
pub(super) fn spawn(
    path: &Path,
    conn: Connection,
    rx: mpsc::Receiver<Job>,
) -> Result<(), StoreError> {
    spawn_with(path, conn, rx, WAL_REWIND_FRAMES).map(|_| ())
}

fn spawn_with(
    path: &Path,
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    rewind_frames: u64,
) -> Result<Arc<WalFrames>, StoreError> {
    let checkpointer = open(path)?;
    let wal = Arc::new(WalFrames {
        frames: AtomicU64::new(0),
        rewind_frames,
        commits: AtomicU64::new(0),
        copied_commits: AtomicU64::new(0),
    });
    let (committed, wake) = std::sync::mpsc::sync_channel(1);
    let start = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map(|_| ())
            .map_err(|e| StoreError::Database(format!("cannot start the store's {name}: {e}")))
    };
    start(
        "sqlite-checkpoint",
        Box::new({
            let wal = wal.clone();
            move || checkpoints(checkpointer, wake, &wal)
        }),
    )?;
    start(
        "sqlite-writer",
        Box::new({
            let wal = wal.clone();
            move || run(conn, rx, committed, &wal)
        }),
    )?;
    Ok(wal)
}

/// The WAL's length as the last checkpoint saw it, shared by the checkpointer and the writer.
struct WalFrames {
    frames: AtomicU64,
    rewind_frames: u64,
    /// Batches the writer has written (each counted once its transactions have committed).
    commits: AtomicU64,
    /// Of those, how many the last complete checkpoint had copied into the database file.
    copied_commits: AtomicU64,
}

/// Runs a `PASSIVE` checkpoint on `conn`: `Some((frames, complete))` with the frames the WAL holds and whether
/// every one of them is now in the database file; `None` when it failed or another checkpoint was running.
fn checkpoint(conn: &Connection) -> Option<(u64, bool)> {
    let counts = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    match counts {
        Ok((0, log, copied)) => Some((u64::try_from(log).unwrap_or(0), copied >= log)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "checkpointing the store's WAL");
            None
        }
    }
}

/// The checkpointer: after each wake-up from the writer (coalesced, at most one every [`CHECKPOINT_EVERY`]) it
/// copies the committed WAL frames into the database file without blocking the writer (`PASSIVE`), so the WAL is
/// restarted from its beginning by a later commit instead of growing. Ends when the writer has ended.
fn checkpoints(conn: Connection, wake: std::sync::mpsc::Receiver<()>, wal: &WalFrames) {
    while wake.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_EVERY);
        while wake.try_recv().is_ok() {}
        // Every transaction counted here has committed, so its frames are in the WAL this checkpoint copies.
        let commits = wal.commits.load(Ordering::Acquire);
        if let Some((frames, complete)) = checkpoint(&conn) {
            wal.frames.store(frames, Ordering::Relaxed);
            if complete {
                wal.copied_commits.store(commits, Ordering::Release);
            }
        }
    }
    // The last commits go into the file too (the store's WAL is truncated by its compaction).
    checkpoint(&conn);
}

/// How long a connection waits for another one's write lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    committed: std::sync::mpsc::SyncSender<()>,
    wal: &WalFrames,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = rx.blocking_recv() {
        jobs.push(job);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let outcomes = write_batch(&mut conn, &jobs);
        wal.commits.fetch_add(1, Ordering::Release);
        for (job, outcome) in jobs.drain(..).zip(outcomes) {
            // A caller that stopped waiting does not need its answer; the op is written all the same.
            let _ = job.reply.send(outcome);
        }
        // Full: a wake-up is pending already.
        let _ = committed.try_send(());
        if wal.frames.load(Ordering::Relaxed) > wal.rewind_frames {
            // Nothing is appended while the writer checkpoints: the copy reaches the WAL's end (the
            // checkpointer has copied most of it already), and the next commit rewinds. Should a reader still
            // need old frames, or the checkpointer be running, the next batch tries again.
            if let Some((_, true)) = checkpoint(&conn) {
                wal.frames.store(0, Ordering::Relaxed);
            }
        }
    }
    drop(committed);
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the store's writer connection");
    }
}

/// Applies `jobs` in one transaction; when one fails (or the commit does), applies each in its own.
fn write_batch(conn: &mut Connection, jobs: &[Job]) -> Vec<Result<Done, Failed>> {
    if jobs.len() > 1 {
        if let Some(done) = all_in_one(conn, jobs.iter().map(|job| &*job.op)) {
            return done.into_iter().map(Ok).collect();
        }
    }
    jobs.iter()
        .map(|job| in_transaction(conn, &job.op))
        .collect()
}

/// Applies every op in one transaction and commits: `None` (and nothing written) when one failed.
fn all_in_one<'a>(
    conn: &mut Connection,
    ops: impl ExactSizeIterator<Item = &'a WriteOp>,
) -> Option<Vec<Done>> {
    let tx = begin(conn).ok()?;
    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        match apply(&tx, op) {
            Ok(d) => done.push(d),
            Err(_) => {
                if let Err(e) = tx.rollback() {
                    tracing::warn!(error = %e, "rolling back a group commit");
                }
                return None;
            }
        }
    }
    tx.commit().ok()?;
    Some(done)
}

fn begin(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, Failed> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)
}

/// Applies `op` in a transaction of its own (rolled back when it fails).
fn in_transaction(conn: &mut Connection, op: &WriteOp) -> Result<Done, Failed> {
    let tx = begin(conn)?;
    match apply(&tx, op) {
        Ok(done) => {
            tx.commit().map_err(db)?;
            Ok(done)
        }
        Err(e) => {
            if let Err(r) = tx.rollback() {
                tracing::warn!(error = %r, "rolling back a store write");
            }
            Err(e)
        }
    }
}

/// The columns an update rewrites (the first nine parameters of `insert_session` and `update_session`).
fn row_params(row: &SessionRow) -> Vec<&dyn ToSql> {
    vec![
        &row.version,
        &row.state,
        &row.is_final,
        &row.in_flight,
        &row.expires_at_ms,
        &row.updated_at_ms,
        &row.record,
        &row.personal_data_until_ms,
        &row.client_reference_key,
    ]
}

fn execute(conn: &Connection, sql: &str, params: &[&dyn ToSql]) -> Result<usize, Failed> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(db)
}

/// Applies `op` inside the current transaction. An op that finds nothing to do (a taken request id, a version
/// conflict, a cap reached) writes nothing; only [`Failed`] needs a rollback.
fn apply(conn: &Connection, op: &WriteOp) -> Result<Done, Failed> {
    let sql = &SqliteDialect::STATEMENTS;
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
                let reserved = execute(
                    conn,
                    sql.reserve_billed_call,
                    &[tenant, &billed.day, &billed.limit],
                )?;
                if reserved == 0 {
                    return taken_or_capped(conn, idempotency.as_ref());
                }
            }
            let mut params = row_params(row);
            params.extend([
                &row.id as &dyn ToSql,
                vendor,
                created_at_ms,
                tenant,
                live_mode,
            ]);
            let statement = match idempotency {
                Some(idem) => {
                    params.extend([
                        &idem.tenant as &dyn ToSql,
                        &idem.request_key,
                        &idem.request_id,
                    ]);
                    sql.insert_session_unless_taken
                }
                None => sql.insert_session,
            };
            if execute(conn, statement, &params)? == 0 {
                if let Some(billed) = billed_call {
                    // The reservation above is for a call this create will not claim.
                    execute(conn, sql.release_billed_call, &[tenant, &billed.day])?;
                }
                return Ok(Done::Taken);
            }
            if let Some(idem) = idempotency {
                let inserted = execute(
                    conn,
                    sql.insert_idempotency,
                    &[
                        &idem.tenant,
                        &idem.request_key,
                        &idem.fingerprint,
                        &idem.session_id,
                        created_at_ms,
                    ],
                )?;
                // The write lock is held since the insert above checked the key: only a broken invariant lands
                // here, and the transaction must not keep the session.
                if inserted != 1 {
                    return Err(Failed::Race);
                }
            }
            insert_events(conn, &row.id, events)?;
            insert_outbox(conn, outbox)?;
            Ok(Done::Created)
        }
        WriteOp::Update {
            row,
            expected_version,
            events,
            outbox,
        } => {
            let mut params = row_params(row);
            params.extend([&row.vendor as &dyn ToSql, &row.id, expected_version]);
            if execute(conn, sql.update_session, &params)? == 1 {
                insert_events(conn, &row.id, events)?;
                insert_outbox(conn, outbox)?;
                if events
                    .iter()
                    .any(|e| e.kind == crate::domain::events::KIND_REDACTED)
                {
                    // What was sent is not kept past a redaction; what is still to be sent stays, masked.
                    execute(
                        conn,
                        &outbox::sql::<SqliteDialect>(outbox::DROP_SENT_BODIES),
                        &[&row.id],
                    )?;
                }
                return Ok(Done::Updated);
            }
            let exists = conn
                .prepare_cached(sql.session_exists)
                .and_then(|mut s| s.query_row([&row.id], |_| Ok(())).optional())
                .map_err(db)?
                .is_some();
            Ok(Done::missed_update(exists))
        }
        WriteOp::Append {
            session_id,
            event,
            cap,
        } => {
            if execute(conn, sql.lock_session, &[session_id])? == 0 {
                return Ok(Done::NotFound);
            }
            if let Some((kinds, max)) = cap {
                let [k0, k1, k2] = cap_kinds(kinds);
                let n: i64 = conn
                    .prepare_cached(sql.count_events_of_kinds)
                    .and_then(|mut s| s.query_row([session_id.as_str(), k0, k1, k2], |r| r.get(0)))
                    .map_err(db)?;
                if n >= i64::from(*max) {
                    return Ok(Done::Appended(false));
                }
            }
            insert_events(conn, session_id, std::slice::from_ref(event))?;
            Ok(Done::Appended(true))
        }
        WriteOp::Reserve { tenant, day, limit } => {
            let reserved = execute(conn, sql.reserve_billed_call, &[tenant, day, limit])?;
            Ok(Done::Reserved(reserved == 1))
        }
        WriteOp::Release { tenant, day } => {
            execute(conn, sql.release_billed_call, &[tenant, day])?;
            Ok(Done::Released)
        }
    }
}

/// Writes a change's webhook messages.
fn insert_outbox(conn: &Connection, rows: &[OutboxRow]) -> Result<(), Failed> {
    if rows.is_empty() {
        return Ok(());
    }
    let statement = outbox::sql::<SqliteDialect>(outbox::INSERT);
    for row in rows {
        execute(
            conn,
            &statement,
            &[
                &row.id,
                &row.endpoint,
                &row.tenant,
                &row.session_id,
                &row.event_type,
                &row.occurred_at_ms,
                &row.body,
                &row.occurred_at_ms,
            ],
        )?;
    }
    Ok(())
}

/// What a create whose billed call was refused answers: [`Done::Taken`] when its request id is taken (the first
/// call's answer is this one's), else [`Done::CapReached`].
fn taken_or_capped(
    conn: &Connection,
    idempotency: Option<&IdempotencyRow>,
) -> Result<Done, Failed> {
    let Some(idem) = idempotency else {
        return Ok(Done::CapReached);
    };
    let taken = conn
        .prepare_cached(SqliteDialect::STATEMENTS.idempotency_taken)
        .and_then(|mut s| {
            s.query_row([&idem.tenant, &idem.request_key, &idem.request_id], |_| {
                Ok(())
            })
            .optional()
        })
        .map_err(db)?;
    Ok(if taken.is_some() {
        Done::Taken
    } else {
        Done::CapReached
    })
}

/// Appends `events` to a session's log in one statement.
fn insert_events(conn: &Connection, session_id: &str, events: &[EventRow]) -> Result<(), Failed> {
    if events.is_empty() {
        return Ok(());
    }
    let statement = insert_events_sql::<SqliteDialect>(events.len());
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(1 + 3 * events.len());
    params.push(&session_id);
    for event in events {
        params.extend([&event.at_ms as &dyn ToSql, &event.kind, &event.body]);
    }
    execute(conn, &statement, &params)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::writer::Writer;
    use crate::store::StoreOptions;

    fn create(id: &str) -> Arc<WriteOp> {
        Arc::new(WriteOp::Create {
            row: SessionRow {
                id: id.into(),
                version: 1,
                state: "REQUIRES_INPUT",
                is_final: false,
                in_flight: false,
                expires_at_ms: 1,
                updated_at_ms: 1,
                record: "x".repeat(600),
                personal_data_until_ms: None,
                client_reference_key: String::new(),
                vendor: "juhe",
            },
            vendor: "juhe",
            created_at_ms: 1,
            tenant: "t".into(),
            live_mode: false,
            idempotency: None,
            billed_call: None,
            outbox: Vec::new(),
            events: vec![EventRow {
                at_ms: 1,
                kind: "state_changed",
                body: "{}".into(),
            }],
        })
    }

    async fn migrated(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let path = dir.path().join("facegate.db");
        SqliteStore::open(&path, &StoreOptions::default())
            .await
            .unwrap();
        path
    }

    fn count(path: &Path, sql: &str) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn the_writer_connection_has_the_pools_settings_and_no_automatic_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = migrated(&dir).await;
        let conn = open(&path).unwrap();
        let pragma = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
        };
        // secure_delete ON, synchronous NORMAL (1), foreign keys on, temp_store MEMORY (2).
        assert_eq!(pragma("secure_delete"), "1");
        assert_eq!(pragma("synchronous"), "1");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("temp_store"), "2");
        assert_eq!(pragma("wal_autocheckpoint"), "0");
        assert_eq!(pragma("journal_mode"), "wal");
    }

    #[tokio::test]
    async fn one_failing_op_in_a_group_commit_takes_no_other_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = migrated(&dir).await;
        let (writer, rx) = Writer::channel();
        // Everything is queued before the writer starts, so it all comes in one batch; the duplicate id fails.
        let mut ops: Vec<_> = (0..100).map(|i| create(&format!("ses_{i}"))).collect();
        ops.insert(50, create("ses_7"));
        let calls: Vec<_> = ops
            .iter()
            .map(|op| {
                let (writer, op) = (writer.clone(), Arc::clone(op));
                tokio::spawn(async move { writer.write(&op).await })
            })
            .collect();
        while writer.queued() < ops.len() {
            tokio::task::yield_now().await;
        }
        spawn(&path, open(&path).unwrap(), rx).unwrap();
        let mut created = 0;
        let mut failed = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(Done::Created) => created += 1,
                Err(Failed::Store(StoreError::Database(m))) => {
                    assert!(m.contains("UNIQUE"), "{m}");
                    failed += 1
                }
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!((created, failed), (100, 1));
        assert_eq!(count(&path, "SELECT COUNT(*) FROM sessions"), 100);
        assert_eq!(count(&path, "SELECT COUNT(*) FROM session_events"), 100);
    }

    /// Creates `n` sessions concurrently (wave `wave`), each created.
    async fn create_wave(writer: &Writer, wave: usize, n: usize) {
        let writes: Vec<_> = (0..n)
            .map(|i| {
                let (writer, op) = (writer.clone(), create(&format!("ses_{wave}_{i}")));
                tokio::spawn(async move { writer.write(&op).await })
            })
            .collect();
        for w in writes {
            assert_eq!(w.await.unwrap().unwrap(), Done::Created);
        }
    }

    fn wal_of(path: &Path) -> std::path::PathBuf {
        let mut wal = std::path::PathBuf::from(path.as_os_str().to_owned());
        wal.set_extension("db-wal");
        wal
    }

    /// Waits until a complete checkpoint of the checkpointer's own has copied every batch written so far.
    async fn checkpointed(wal: &WalFrames) {
        let written = wal.commits.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while wal.copied_commits.load(Ordering::Acquire) < written {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no complete checkpoint of {written} batches within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn after_a_pause_the_checkpointer_lets_the_next_commit_start_the_wal_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = migrated(&dir).await;
        let (writer, rx) = Writer::channel();
        let wal = spawn_with(&path, open(&path).unwrap(), rx, WAL_REWIND_FRAMES).unwrap();
        let mut after_wave = Vec::new();
        let mut after_one = Vec::new();
        for round in 0..8 {
            create_wave(&writer, round, 200).await;
            checkpointed(&wal).await;
            after_wave.push(wal.frames.load(Ordering::Relaxed));
            // Everything is in the file and nobody reads the WAL: this commit writes it from its first frame.
            let op = create(&format!("ses_single_{round}"));
            assert_eq!(writer.write(&op).await.unwrap(), Done::Created);
            checkpointed(&wal).await;
            after_one.push(wal.frames.load(Ordering::Relaxed));
        }
        // Appended to what was there, the WAL would hold every earlier wave's frames and one create's more; started
        // again, it holds that one create's few.
        assert!(
            after_one
                .iter()
                .zip(&after_wave)
                .all(|(&one, &wave)| one > 0 && one < 64 && one < wave),
            "frames after one create {after_one:?}, after each wave {after_wave:?}"
        );
        assert_eq!(count(&path, "SELECT COUNT(*) FROM sessions"), 1608);
    }

    /// The WAL's size after `waves` waves of 100 concurrent creates, one straight after the other (a load that
    /// never pauses), with the writer rewinding past `rewind_frames`.
    async fn wal_after_steady_load(rewind_frames: u64, waves: usize) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = migrated(&dir).await;
        let (writer, rx) = Writer::channel();
        spawn_with(&path, open(&path).unwrap(), rx, rewind_frames).unwrap();
        for wave in 0..waves {
            create_wave(&writer, wave, 100).await;
        }
        let wal = wal_of(&path);
        let size = std::fs::metadata(&wal).unwrap().len();
        assert_eq!(
            count(&path, "SELECT COUNT(*) FROM sessions"),
            i64::try_from(waves * 100).unwrap()
        );
        size
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_a_load_that_never_pauses_the_writer_rewinds_the_wal() {
        // Long enough for many checkpoints (one per 100 ms at most).
        let waves = 300;
        let unrewound = wal_after_steady_load(u64::MAX, waves).await;
        let rewound = wal_after_steady_load(64, waves).await;
        assert!(
            rewound * 4 < unrewound,
            "WAL of {rewound} bytes with rewinds, {unrewound} without"
        );
    }
}
