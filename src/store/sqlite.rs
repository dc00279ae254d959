//! Embedded SQLite store: one file, WAL journal, schema migrations by `PRAGMA user_version`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{Created, IdempotencyRecord, SessionStore, StoreError};
use crate::domain::Session;

/// Schema migrations; entry `i` upgrades `user_version` `i` to `i + 1`.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE sessions (
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
    )",
        "CREATE INDEX sessions_live_by_expiry ON sessions (is_final, expires_at_ms)",
        "CREATE INDEX sessions_in_flight ON sessions (in_flight) WHERE in_flight = 1",
        "CREATE TABLE idempotency (
        request_id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        created_at_ms INTEGER NOT NULL
    )",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    ],
    &[
        "ALTER TABLE sessions ADD COLUMN personal_data_until_ms INTEGER",
        "CREATE INDEX sessions_personal_data ON sessions (personal_data_until_ms)
     WHERE personal_data_until_ms IS NOT NULL",
    ],
    &["CREATE INDEX sessions_by_state ON sessions (state)"],
];

/// Until when a session keeps vendor personal data (the index the wipe sweep reads).
fn personal_data_until(session: &Session) -> Option<i64> {
    session
        .outcome
        .revealable_identity
        .as_ref()
        .and(session.outcome.revealable_until_ms)
}

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Database(format!("cannot create directory: {e}")))?;
            }
        }
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(db)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let current: i64 = sqlx::query("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        let current = usize::try_from(current).unwrap_or(0);
        if current > MIGRATIONS.len() {
            return Err(StoreError::Database(format!(
                "database schema version {current} is newer than this build knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, steps) in MIGRATIONS.iter().enumerate().skip(current) {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            let mut result = Ok(());
            for step in *steps {
                if let Err(e) = sqlx::query(*step).execute(&mut *conn).await {
                    result = Err(db(e));
                    break;
                }
            }
            if result.is_ok() {
                let bump = format!("PRAGMA user_version = {}", i + 1);
                result = sqlx::query(sqlx::AssertSqlSafe(bump))
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())
                    .map_err(db);
            }
            match result {
                Ok(()) => {
                    sqlx::query("COMMIT")
                        .execute(&mut *conn)
                        .await
                        .map_err(db)?;
                }
                Err(e) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn encode(session: &Session) -> Result<String, StoreError> {
        serde_json::to_string(session).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn decode(text: &str) -> Result<Session, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("session record: {e}")))
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(
        &self,
        session: &Session,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<Created, StoreError> {
        let record = Self::encode(session)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO sessions (id, version, state, vendor, is_final, in_flight, expires_at_ms,
             created_at_ms, updated_at_ms, record, personal_data_until_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.id)
        .bind(session.version)
        .bind(session.state.as_str())
        .bind(session.vendor.as_str())
        .bind(session.state.is_final())
        .bind(session.attempt_started_at_ms.is_some())
        .bind(session.expires_at_ms)
        .bind(session.created_at_ms)
        .bind(session.updated_at_ms)
        .bind(&record)
        .bind(personal_data_until(session))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(idem) = idempotency {
            let inserted = sqlx::query(
                "INSERT INTO idempotency (request_id, fingerprint, session_id, created_at_ms)
                 VALUES (?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(&idem.request_id)
            .bind(&idem.fingerprint)
            .bind(&idem.session_id)
            .bind(session.created_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await.map_err(db)?;
                return match self.idempotency(&idem.request_id).await? {
                    Some(existing) => Ok(Created::Existing(existing)),
                    None => Err(StoreError::Database(
                        "idempotency record vanished during insert".into(),
                    )),
                };
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(Created::New)
    }

    async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query("SELECT record FROM sessions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        match row {
            Some(row) => {
                let text: String = row.try_get(0).map_err(db)?;
                Self::decode(&text).map(Some)
            }
            None => Ok(None),
        }
    }

    async fn update(&self, session: &Session, expected_version: i64) -> Result<(), StoreError> {
        let record = Self::encode(session)?;
        let affected = sqlx::query(
            "UPDATE sessions SET version = ?, state = ?, is_final = ?, in_flight = ?, expires_at_ms = ?,
             updated_at_ms = ?, record = ?, personal_data_until_ms = ? WHERE id = ? AND version = ?",
        )
        .bind(session.version)
        .bind(session.state.as_str())
        .bind(session.state.is_final())
        .bind(session.attempt_started_at_ms.is_some())
        .bind(session.expires_at_ms)
        .bind(session.updated_at_ms)
        .bind(&record)
        .bind(personal_data_until(session))
        .bind(&session.id)
        .bind(expected_version)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if affected == 1 {
            return Ok(());
        }
        let exists = sqlx::query("SELECT 1 FROM sessions WHERE id = ?")
            .bind(&session.id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .is_some();
        Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        })
    }

    async fn idempotency(&self, request_id: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT request_id, fingerprint, session_id FROM idempotency WHERE request_id = ?",
        )
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| {
            Ok(IdempotencyRecord {
                request_id: r.try_get(0).map_err(db)?,
                fingerprint: r.try_get(1).map_err(db)?,
                session_id: r.try_get(2).map_err(db)?,
            })
        })
        .transpose()
    }

    async fn expired(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM sessions WHERE is_final = 0 AND expires_at_ms <= ? ORDER BY expires_at_ms LIMIT ?",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
    }

    async fn personal_data_due(&self, now_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM sessions WHERE personal_data_until_ms IS NOT NULL AND personal_data_until_ms <= ?
             LIMIT ?",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(db))
            .collect()
    }

    async fn in_flight(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM sessions WHERE in_flight = 1")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM sessions GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(0).map_err(db)?;
                let n: i64 = r.try_get(1).map_err(db)?;
                Ok((state, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    async fn fingerprint_key(&self) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('fingerprint_key', randomblob(32)) ON CONFLICT (key) DO NOTHING",
        )
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'fingerprint_key'")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        row.try_get::<Vec<u8>, _>(0).map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::tests_support::blank_session;

    #[tokio::test]
    async fn roundtrip_conflict_and_idempotency() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db/facegate.db"))
            .await
            .unwrap();
        let mut s = blank_session("ses_a");
        let idem = IdempotencyRecord {
            request_id: "r1".into(),
            fingerprint: "f".into(),
            session_id: "ses_a".into(),
        };
        assert_eq!(store.create(&s, Some(&idem)).await.unwrap(), Created::New);
        let other = blank_session("ses_b");
        let idem_b = IdempotencyRecord {
            session_id: "ses_b".into(),
            ..idem.clone()
        };
        assert_eq!(
            store.create(&other, Some(&idem_b)).await.unwrap(),
            Created::Existing(idem.clone())
        );
        assert!(
            store.get("ses_b").await.unwrap().is_none(),
            "loser rolled back"
        );
        assert_eq!(store.get("ses_a").await.unwrap().unwrap(), s);

        s.version += 1;
        store.update(&s, 1).await.unwrap();
        assert!(matches!(
            store.update(&s, 1).await,
            Err(StoreError::Conflict)
        ));
        let missing = blank_session("nope");
        assert!(matches!(
            store.update(&missing, 1).await,
            Err(StoreError::NotFound)
        ));

        assert_eq!(
            store.expired(i64::MAX, 10).await.unwrap(),
            vec!["ses_a".to_string()]
        );
        assert!(store.expired(0, 10).await.unwrap().is_empty());
        let k1 = store.fingerprint_key().await.unwrap();
        assert_eq!(k1.len(), 32);
        assert_eq!(store.fingerprint_key().await.unwrap(), k1);
    }

    #[tokio::test]
    async fn reopen_keeps_sessions_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        {
            let store = SqliteStore::open(&path).await.unwrap();
            store
                .create(&blank_session("ses_keep"), None)
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        assert!(store.get("ses_keep").await.unwrap().is_some());
    }
}
