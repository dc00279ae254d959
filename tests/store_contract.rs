//! One behaviour suite for every `SessionStore`: each test in `contract` runs against SQLite and against a private
//! PostgreSQL cluster (`common::pg`; those are ignored by default and run in CI with `--run-ignored`). At the end,
//! PostgreSQL-only checks (replicas migrating together) and the real server on PostgreSQL across a restart.

mod common;

use std::sync::Arc;

use common::pg::PgCluster;
use common::{identity, juhe_empty, juhe_inline, probe, sandbox_config, state, Server};
use facegate::config::Secret;
use facegate::domain::events::{EventDetail, EventsSummary, SessionEvent, KIND_CALLBACK_REJECTED};
use facegate::domain::state::tests_support::blank_session;
use facegate::domain::{IdentityDocument, State};
use facegate::proto::v1 as pb;
use facegate::store::postgres::PostgresStore;
use facegate::store::sqlite::SqliteStore;
use facegate::store::{
    Created, IdempotencyRecord, ListFilter, SessionStore, StoreError, StoreOptions,
};

/// The options of every store this process opens: one data key, generated at start, so reopened stores read what
/// earlier ones wrote.
fn test_options() -> StoreOptions {
    static OPTIONS: std::sync::OnceLock<StoreOptions> = std::sync::OnceLock::new();
    OPTIONS.get_or_init(StoreOptions::default).clone()
}

/// Writes a session and its idempotency record with the statements of the build before tenants.
macro_rules! legacy_rows {
    ($pool:expr, $insert_session:expr, $insert_idem:expr, $s:expr, $record:expr, $request_id:expr) => {{
        let s = $s;
        sqlx::query($insert_session)
            .bind(s.version)
            .bind(s.state.as_str())
            .bind(s.state.is_final())
            .bind(false)
            .bind(s.expires_at_ms)
            .bind(s.updated_at_ms)
            .bind($record)
            .bind(None::<i64>)
            .bind(s.id.as_str())
            .bind(s.vendor.as_str())
            .bind(s.created_at_ms)
            .execute(&$pool)
            .await
            .unwrap();
        sqlx::query($insert_idem)
            .bind($request_id)
            .bind("fp-legacy")
            .bind(s.id.as_str())
            .bind(s.created_at_ms)
            .execute(&$pool)
            .await
            .unwrap();
    }};
}

/// Where a store lives, so that a test can open it again as a restarted (or another) replica would.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(PgCluster),
}

impl Backend {
    fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Self {
        Backend::Postgres(PgCluster::start())
    }

    async fn open(&self) -> Arc<dyn SessionStore> {
        self.open_with(&test_options()).await
    }

    async fn open_with(&self, options: &StoreOptions) -> Arc<dyn SessionStore> {
        match self {
            Backend::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("db/facegate.db"), options)
                    .await
                    .unwrap(),
            ),
            Backend::Postgres(cluster) => Arc::new(
                PostgresStore::connect(&cluster.url("postgres"), options)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Runs one statement on the database directly (as an older build, or an operator, would).
    async fn execute(&self, statement: &str) {
        match self {
            Backend::Sqlite(dir) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("db/facegate.db"));
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            Backend::Postgres(cluster) => {
                let pool = sqlx::PgPool::connect(&cluster.url("postgres"))
                    .await
                    .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        }
    }

    /// The plan of the list query (SQLite only: PostgreSQL's planner rightly scans a table this small; the
    /// benchmark checks its plan over a million rows).
    async fn sqlite_list_plan(
        &self,
        filter: &ListFilter,
        after: Option<(i64, String)>,
    ) -> Option<Vec<String>> {
        match self {
            Backend::Sqlite(dir) => Some(
                SqliteStore::open(&dir.path().join("db/facegate.db"), &StoreOptions::default())
                    .await
                    .unwrap()
                    .explain_list("shop", filter, after, 100)
                    .await
                    .unwrap(),
            ),
            Backend::Postgres(_) => None,
        }
    }

    /// Builds the database as the build before tenants left it (its schema, statements and record format, from
    /// `legacy`), holding `session` and its idempotency record `request_id`.
    async fn build_pre_tenant_database(
        &self,
        session: &facegate::domain::Session,
        request_id: &str,
    ) {
        let mut record = serde_json::to_value(session).unwrap();
        let fields = record.as_object_mut().unwrap();
        assert!(fields.remove("tenant").is_some() && fields.remove("live_mode").is_some());
        let record = record.to_string();
        match self {
            Backend::Sqlite(dir) => {
                let path = dir.path().join("db/facegate.db");
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                for step in legacy::SQLITE_SCHEMA {
                    sqlx::query(*step).execute(&pool).await.unwrap();
                }
                legacy_rows!(
                    pool,
                    legacy::SQLITE_INSERT_SESSION,
                    legacy::SQLITE_INSERT_IDEMPOTENCY,
                    session,
                    &record,
                    request_id
                );
                pool.close().await;
            }
            Backend::Postgres(cluster) => {
                let pool = sqlx::PgPool::connect(&cluster.url("postgres"))
                    .await
                    .unwrap();
                for step in legacy::POSTGRES_SCHEMA {
                    sqlx::query(*step).execute(&pool).await.unwrap();
                }
                legacy_rows!(
                    pool,
                    legacy::POSTGRES_INSERT_SESSION,
                    legacy::POSTGRES_INSERT_IDEMPOTENCY,
                    session,
                    &record,
                    request_id
                );
                pool.close().await;
            }
        }
    }

    /// Restarts the database server, where there is one.
    fn restart_server(&self) {
        if let Backend::Postgres(cluster) = self {
            cluster.restart();
        }
    }
}

/// The schema and statements of the build before tenants (main at "Skeleton for issue 9"), as fixtures.
mod legacy {
    /// SQLite migrations 1 to 3, then `user_version` 3.
    pub const SQLITE_SCHEMA: &[&str] = &[
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
        "ALTER TABLE sessions ADD COLUMN personal_data_until_ms INTEGER",
        "CREATE INDEX sessions_personal_data ON sessions (personal_data_until_ms)
     WHERE personal_data_until_ms IS NOT NULL",
        "CREATE INDEX sessions_by_state ON sessions (state)",
        "PRAGMA user_version = 3",
    ];
    pub const SQLITE_INSERT_SESSION: &str =
        "INSERT INTO sessions (version, state, is_final, in_flight, expires_at_ms, updated_at_ms,
             record, personal_data_until_ms, id, vendor, created_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    pub const SQLITE_INSERT_IDEMPOTENCY: &str =
        "INSERT INTO idempotency (request_id, fingerprint, session_id, created_at_ms)
             VALUES (?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING";

    /// PostgreSQL migrations 1 and 2, recorded as applied.
    pub const POSTGRES_SCHEMA: &[&str] = &[
        "CREATE TABLE facegate_schema_migrations (
                version BIGINT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        "CREATE TABLE sessions (
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
    )",
        "CREATE INDEX sessions_live_by_expiry ON sessions (is_final, expires_at_ms)",
        "CREATE INDEX sessions_in_flight ON sessions (in_flight) WHERE in_flight",
        "CREATE INDEX sessions_personal_data ON sessions (personal_data_until_ms)
     WHERE personal_data_until_ms IS NOT NULL",
        "CREATE TABLE idempotency (
        request_id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        created_at_ms BIGINT NOT NULL
    )",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL)",
        "CREATE INDEX sessions_by_state ON sessions (state)",
        "INSERT INTO facegate_schema_migrations (version) VALUES (1), (2)",
    ];
    pub const POSTGRES_INSERT_SESSION: &str =
        "INSERT INTO sessions (version, state, is_final, in_flight, expires_at_ms, updated_at_ms,
             record, personal_data_until_ms, id, vendor, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
    pub const POSTGRES_INSERT_IDEMPOTENCY: &str =
        "INSERT INTO idempotency (request_id, fingerprint, session_id, created_at_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (request_id) DO NOTHING";
}

fn idem(request_id: &str, session_id: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        tenant: facegate::domain::caller::DEFAULT_TENANT.into(),
        request_id: request_id.into(),
        fingerprint: format!("fp-{request_id}"),
        session_id: session_id.into(),
    }
}

/// The behaviour every store has.
mod contract {
    use super::*;
    use facegate::domain::Vendor;

    /// Sessions of tenant `shop` (and one of `other`) for the list tests: 12 sessions over 6 create times (ties of
    /// two), alternating states and vendors, client references `order-0` to `order-2`.
    fn listed(i: usize) -> facegate::domain::Session {
        let mut s = blank_session(&format!("ses_{i:02}"));
        s.tenant = "shop".into();
        s.created_at_ms = 1_000 * (i as i64 / 2);
        s.state = if i.is_multiple_of(2) {
            State::RequiresInput
        } else {
            State::Canceled
        };
        s.vendor = if i.is_multiple_of(3) {
            Vendor::Baidu
        } else {
            Vendor::Juhe
        };
        s.client_reference_id = format!("order-{}", i % 3);
        s
    }

    fn ids(sessions: &[facegate::domain::Session]) -> Vec<String> {
        sessions.iter().map(|s| s.id.clone()).collect()
    }

    /// The ids of `listed` sessions (0..12) that `keep` keeps, newest first, ties by id descending.
    fn expected(keep: impl Fn(&facegate::domain::Session) -> bool) -> Vec<String> {
        let mut all: Vec<_> = (0..12).map(listed).filter(|s| keep(s)).collect();
        all.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        ids(&all)
    }

    pub async fn list_pages_newest_first_with_filters(backend: Backend) {
        let store = backend.open().await;
        for i in 0..12 {
            store.create(&listed(i), None, &[]).await.unwrap();
        }
        let mut foreign = listed(99);
        foreign.tenant = "other".into();
        store.create(&foreign, None, &[]).await.unwrap();
        let all = ListFilter::default();
        // Pages of 5 by keyset: every session once, in order.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.list("shop", &all, after.clone(), 5).await.unwrap();
            assert!(page.len() <= 5);
            if let Some(last) = page.last() {
                after = Some((last.created_at_ms, last.id.clone()));
            }
            let done = page.len() < 5;
            seen.extend(ids(&page));
            if done {
                break;
            }
        }
        assert_eq!(seen, expected(|_| true));
        assert_eq!(
            ids(&store.list("other", &all, None, 50).await.unwrap()),
            vec!["ses_99"]
        );
        assert!(store
            .list("nobody", &all, None, 50)
            .await
            .unwrap()
            .is_empty());
        // Each filter, alone and combined.
        let by_state = ListFilter {
            state: Some(State::Canceled),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list("shop", &by_state, None, 50).await.unwrap()),
            expected(|s| s.state == State::Canceled)
        );
        let by_vendor = ListFilter {
            vendor: Some(Vendor::Baidu),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list("shop", &by_vendor, None, 50).await.unwrap()),
            expected(|s| s.vendor == Vendor::Baidu)
        );
        let by_reference = ListFilter {
            client_reference_id: "order-1".into(),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list("shop", &by_reference, None, 50).await.unwrap()),
            expected(|s| s.client_reference_id == "order-1")
        );
        let by_time = ListFilter {
            created_from_ms: Some(1_000),
            created_before_ms: Some(4_000),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list("shop", &by_time, None, 50).await.unwrap()),
            expected(|s| (1_000..4_000).contains(&s.created_at_ms))
        );
        let combined = ListFilter {
            state: Some(State::RequiresInput),
            vendor: Some(Vendor::Juhe),
            client_reference_id: "order-2".into(),
            created_from_ms: Some(0),
            created_before_ms: Some(10_000),
        };
        let want = expected(|s| {
            s.state == State::RequiresInput
                && s.vendor == Vendor::Juhe
                && s.client_reference_id == "order-2"
        });
        assert!(!want.is_empty());
        assert_eq!(
            ids(&store.list("shop", &combined, None, 50).await.unwrap()),
            want
        );
        // Another tenant's reference does not match: the key is per tenant.
        assert!(store
            .list("other", &by_reference, None, 50)
            .await
            .unwrap()
            .is_empty());
        // A position inside a tie continues with the rest of the tie.
        let tie = store
            .list("shop", &all, Some((5_000, "ses_11".into())), 1)
            .await
            .unwrap();
        assert_eq!(ids(&tie), vec!["ses_10"]);
        // An update that changes the reference moves the session to the new one's filter.
        let mut moved = store.get("ses_04").await.unwrap().unwrap();
        moved.client_reference_id = "order-1".into();
        moved.version = 2;
        store.update(&moved, 1, &[]).await.unwrap();
        assert!(
            ids(&store.list("shop", &by_reference, None, 50).await.unwrap())
                .contains(&"ses_04".to_owned())
        );
        // The page query walks an index in order, without a sort or a scan of the table.
        for (filter, after) in [
            (all.clone(), None),
            (all.clone(), Some((3_000, "ses_07".to_owned()))),
            (by_state.clone(), Some((3_000, "ses_07".to_owned()))),
            (by_vendor.clone(), None),
            (by_reference.clone(), Some((3_000, "ses_07".to_owned()))),
            (by_time.clone(), Some((3_000, "ses_07".to_owned()))),
        ] {
            let Some(plan) = backend.sqlite_list_plan(&filter, after).await else {
                break;
            };
            let text = plan.join(" | ");
            assert!(!plan.is_empty());
            assert!(!text.contains("TEMP B-TREE"), "sorts: {text}");
            assert!(
                plan.iter()
                    .all(|l| l.starts_with("SEARCH sessions USING INDEX sessions_list")),
                "not an index search: {text}"
            );
        }
    }

    pub async fn client_reference_keys_are_backfilled(backend: Backend) {
        let store = backend.open().await;
        for i in 0..6 {
            store.create(&listed(i), None, &[]).await.unwrap();
        }
        drop(store);
        // As rows written before the column existed hold it.
        backend
            .execute("UPDATE sessions SET client_reference_key = NULL")
            .await;
        let store = backend.open().await;
        let filter = ListFilter {
            client_reference_id: "order-0".into(),
            ..Default::default()
        };
        assert_eq!(
            ids(&store.list("shop", &filter, None, 50).await.unwrap()),
            vec!["ses_03", "ses_00"]
        );
    }

    pub async fn create_get_update_conflict(backend: Backend) {
        let store = backend.open().await;
        let mut s = blank_session("ses_a");
        // Text that JSON escapes (a NUL among it) must come back as it went in.
        s.metadata
            .insert("note".into(), "quote \" backslash \\ nul \u{0} 测试".into());
        assert_eq!(store.create(&s, None, &[]).await.unwrap(), Created::New);
        assert_eq!(store.get("ses_a").await.unwrap().unwrap(), s);
        assert!(store.get("nope").await.unwrap().is_none());

        s.version = 2;
        s.state = State::Processing;
        s.updated_at_ms = 7;
        store.update(&s, 1, &[]).await.unwrap();
        assert_eq!(store.get("ses_a").await.unwrap().unwrap(), s);
        assert!(matches!(
            store.update(&s, 1, &[]).await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            store.update(&blank_session("nope"), 1, &[]).await,
            Err(StoreError::NotFound)
        ));
    }

    pub async fn idempotency_returns_the_first_session(backend: Backend) {
        let store = backend.open().await;
        let first = idem("r1", "ses_a");
        let created = store
            .create(&blank_session("ses_a"), Some(&first), &[])
            .await;
        assert_eq!(created.unwrap(), Created::New);
        let again = store
            .create(&blank_session("ses_b"), Some(&idem("r1", "ses_b")), &[])
            .await
            .unwrap();
        assert_eq!(again, Created::Existing(first.clone()));
        assert!(
            store.get("ses_b").await.unwrap().is_none(),
            "the second create wrote nothing"
        );
        assert_eq!(
            store.idempotency("default", "r1").await.unwrap(),
            Some(first)
        );
        assert_eq!(store.idempotency("default", "r2").await.unwrap(), None);
    }

    pub async fn tenants_are_stored_and_request_ids_are_per_tenant(backend: Backend) {
        let store = backend.open().await;
        let mut a = blank_session("ses_ta");
        a.tenant = "shop".into();
        a.live_mode = true;
        let mut b = blank_session("ses_tb");
        b.tenant = "ledger".into();
        let mut rec_a = idem("same", "ses_ta");
        rec_a.tenant = "shop".into();
        let mut rec_b = idem("same", "ses_tb");
        rec_b.tenant = "ledger".into();
        assert_eq!(
            store.create(&a, Some(&rec_a), &[]).await.unwrap(),
            Created::New
        );
        assert_eq!(
            store.create(&b, Some(&rec_b), &[]).await.unwrap(),
            Created::New,
            "another tenant's request id is another session"
        );
        let got = store.get("ses_ta").await.unwrap().unwrap();
        assert_eq!((got.tenant.as_str(), got.live_mode), ("shop", true));
        assert_eq!(got, a);
        let got = store.get("ses_tb").await.unwrap().unwrap();
        assert_eq!((got.tenant.as_str(), got.live_mode), ("ledger", false));
        assert_eq!(
            store.idempotency("shop", "same").await.unwrap(),
            Some(rec_a.clone())
        );
        assert_eq!(
            store.idempotency("ledger", "same").await.unwrap(),
            Some(rec_b)
        );
        assert_eq!(store.idempotency("default", "same").await.unwrap(), None);
        let mut again = blank_session("ses_tc");
        again.tenant = "shop".into();
        let mut rec_c = idem("same", "ses_tc");
        rec_c.tenant = "shop".into();
        assert_eq!(
            store.create(&again, Some(&rec_c), &[]).await.unwrap(),
            Created::Existing(rec_a),
            "within a tenant the request id is taken"
        );
        assert!(store.get("ses_tc").await.unwrap().is_none());
    }

    pub async fn pre_tenant_rows_get_the_default_tenant(backend: Backend) {
        let mut old = blank_session("ses_old");
        old.request_id = "r-old".into();
        backend.build_pre_tenant_database(&old, "r-old").await;
        let options = StoreOptions {
            default_tenant: "legacy-shop".into(),
            legacy_live_mode: true,
            ..test_options()
        };
        let store = backend.open_with(&options).await;
        let mut got = store.get("ses_old").await.unwrap().unwrap();
        assert_eq!((got.tenant.as_str(), got.live_mode), ("legacy-shop", true));
        let record = store
            .idempotency("legacy-shop", "r-old")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.session_id, "ses_old");
        assert_eq!(record.fingerprint, "fp-legacy");
        assert_eq!(store.idempotency("default", "r-old").await.unwrap(), None);
        // The row keeps working: it updates, and the queries see it.
        got.version = 2;
        got.state = State::Canceled;
        store.update(&got, 1, &[]).await.unwrap();
        assert_eq!(store.get("ses_old").await.unwrap().unwrap(), got);
        assert_eq!(
            store.count_by_state().await.unwrap(),
            vec![("CANCELED".to_owned(), 1)]
        );
        // Another tenant may now use the same request id.
        let mut fresh = blank_session("ses_new");
        fresh.tenant = "other".into();
        let mut rec = idem("r-old", "ses_new");
        rec.tenant = "other".into();
        assert_eq!(
            store.create(&fresh, Some(&rec), &[]).await.unwrap(),
            Created::New
        );
        drop(store);
        // Opening again (with other options) migrates nothing twice and changes no row.
        let again = backend.open_with(&test_options()).await;
        assert_eq!(
            again.get("ses_old").await.unwrap().unwrap().tenant,
            "legacy-shop"
        );
    }

    pub async fn concurrent_creates_with_one_request_id_make_one_session(backend: Backend) {
        let store = backend.open().await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let id = format!("ses_{i}");
                    store
                        .create(&blank_session(&id), Some(&idem("same", &id)), &[])
                        .await
                })
            })
            .collect();
        let mut new = 0;
        let mut existing = Vec::new();
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Created::New => new += 1,
                Created::Existing(record) => existing.push(record),
                Created::CapReached => panic!("no billed call was asked for"),
            }
        }
        assert_eq!(new, 1, "exactly one create wins");
        let winner = store.idempotency("default", "same").await.unwrap().unwrap();
        assert!(existing.iter().all(|r| *r == winner), "{existing:?}");
        let mut stored = Vec::new();
        for i in 0..20 {
            let id = format!("ses_{i}");
            if store.get(&id).await.unwrap().is_some() {
                stored.push(id);
            }
        }
        assert_eq!(stored, vec![winner.session_id]);
    }

    pub async fn expired_in_flight_and_personal_data_queries(backend: Backend) {
        let store = backend.open().await;
        let at = |id: &str, expires_at_ms: i64, state: State| {
            let mut s = blank_session(id);
            s.expires_at_ms = expires_at_ms;
            s.state = state;
            s
        };
        let mut working = at("ses_working", 200, State::Processing);
        working.attempt_started_at_ms = Some(5);
        let mut revealable = at("ses_revealable", 500, State::Verified);
        revealable.outcome.revealable_identity = Some(IdentityDocument {
            name: "张三丰".into(),
            ..Default::default()
        });
        revealable.outcome.revealable_until_ms = Some(300);
        let mut wiped = at("ses_wiped", 500, State::Verified);
        wiped.outcome.revealable_until_ms = Some(300);
        for s in [
            &at("ses_input", 100, State::RequiresInput),
            &working,
            &at("ses_done", 50, State::Failed),
            &revealable,
            &wiped,
        ] {
            assert_eq!(store.create(s, None, &[]).await.unwrap(), Created::New);
        }

        assert_eq!(store.expired(99, 10).await.unwrap(), Vec::<String>::new());
        assert_eq!(store.expired(100, 10).await.unwrap(), ["ses_input"]);
        assert_eq!(
            store.expired(i64::MAX, 10).await.unwrap(),
            ["ses_input", "ses_working"],
            "not final, earliest first"
        );
        assert_eq!(store.expired(i64::MAX, 1).await.unwrap(), ["ses_input"]);

        assert_eq!(store.in_flight().await.unwrap(), ["ses_working"]);
        let mut done = working.clone();
        done.version = 2;
        done.attempt_started_at_ms = None;
        store.update(&done, 1, &[]).await.unwrap();
        assert!(store.in_flight().await.unwrap().is_empty());

        assert!(store.personal_data_due(299, 10).await.unwrap().is_empty());
        assert_eq!(
            store.personal_data_due(300, 10).await.unwrap(),
            ["ses_revealable"],
            "only sessions that hold the data"
        );
        assert_eq!(store.personal_data_due(i64::MAX, 0).await.unwrap().len(), 0);
        revealable.version = 2;
        revealable.outcome.revealable_identity = None;
        store.update(&revealable, 1, &[]).await.unwrap();
        assert!(store
            .personal_data_due(i64::MAX, 10)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn fingerprint_key_is_made_once_and_shared(backend: Backend) {
        let (a, b) = tokio::join!(backend.open(), backend.open());
        let (ka, kb) = tokio::join!(a.fingerprint_key(), b.fingerprint_key());
        let key = ka.unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(kb.unwrap(), key, "two stores on one database share the key");
        assert_eq!(a.fingerprint_key().await.unwrap(), key);
        drop((a, b));
        backend.restart_server();
        let reopened = backend.open().await;
        assert_eq!(reopened.fingerprint_key().await.unwrap(), key);
    }

    pub async fn sessions_survive_a_restart(backend: Backend) {
        let store = backend.open().await;
        let mut s = blank_session("ses_keep");
        let record = idem("keep", "ses_keep");
        store.create(&s, Some(&record), &[]).await.unwrap();
        s.version = 2;
        s.state = State::Verified;
        store.update(&s, 1, &[]).await.unwrap();
        drop(store);
        backend.restart_server();
        let store = backend.open().await;
        assert_eq!(store.get("ses_keep").await.unwrap().unwrap(), s);
        assert_eq!(
            store.idempotency("default", "keep").await.unwrap(),
            Some(record)
        );
        assert!(store.expired(i64::MAX, 10).await.unwrap().is_empty());
    }

    pub async fn creates_reserve_their_billed_call_in_the_same_write(backend: Backend) {
        let store = backend.open().await;
        let day = 30_000;
        let tenant = facegate::domain::caller::DEFAULT_TENANT;
        let count =
            |rows: Vec<(String, u64)>| rows.iter().find(|(t, _)| t == tenant).map_or(0, |r| r.1);
        let create = |store: Arc<dyn SessionStore>,
                      id: &str,
                      request: &str,
                      day: i64,
                      limit: Option<u64>| {
            let (id, request) = (id.to_owned(), request.to_owned());
            async move {
                store
                    .create_with_billed_call(
                        &blank_session(&id),
                        Some(&idem(&request, &id)),
                        &[],
                        day,
                        limit,
                    )
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            create(store.clone(), "ses_1", "r1", day, Some(2)).await,
            Created::New
        );
        assert_eq!(count(store.billed_calls(day).await.unwrap()), 1);
        let first = store.idempotency(tenant, "r1").await.unwrap().unwrap();
        assert_eq!(
            create(store.clone(), "ses_1b", "r1", day, Some(2)).await,
            Created::Existing(first.clone()),
            "a repeat finds the first session"
        );
        assert_eq!(
            count(store.billed_calls(day).await.unwrap()),
            1,
            "and reserves nothing"
        );
        assert!(store.get("ses_1b").await.unwrap().is_none());
        assert_eq!(
            create(store.clone(), "ses_2", "r2", day, Some(2)).await,
            Created::New
        );
        assert_eq!(
            create(store.clone(), "ses_3", "r3", day, Some(2)).await,
            Created::CapReached,
            "the third call of the day is over the cap"
        );
        assert!(
            store.get("ses_3").await.unwrap().is_none(),
            "nothing written"
        );
        assert!(store.idempotency(tenant, "r3").await.unwrap().is_none());
        assert_eq!(
            create(store.clone(), "ses_1c", "r1", day, Some(2)).await,
            Created::Existing(first),
            "at the cap, a repeat still finds the first session"
        );
        assert_eq!(
            create(store.clone(), "ses_4", "r4", day, Some(0)).await,
            Created::CapReached
        );
        assert_eq!(count(store.billed_calls(day).await.unwrap()), 2);
        for i in 0..3 {
            let id = format!("ses_free_{i}");
            assert_eq!(
                create(store.clone(), &id, &id, day + 1, None).await,
                Created::New,
                "no limit: counted, never refused"
            );
        }
        assert_eq!(count(store.billed_calls(day + 1).await.unwrap()), 3);

        // Concurrent creates (one group commit on SQLite, parallel transactions on PostgreSQL) take exactly the
        // limit, and only the sessions that got a call are stored.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let id = format!("ses_race_{i}");
                tokio::spawn(create(store.clone(), &id, &id, day + 2, Some(5)))
            })
            .collect();
        let mut new = 0;
        for task in tasks {
            match task.await.unwrap() {
                Created::New => new += 1,
                Created::CapReached => {}
                Created::Existing(e) => panic!("distinct request ids: {e:?}"),
            }
        }
        assert_eq!(new, 5);
        assert_eq!(count(store.billed_calls(day + 2).await.unwrap()), 5);
        let mut stored = 0;
        for i in 0..20 {
            if store.get(&format!("ses_race_{i}")).await.unwrap().is_some() {
                stored += 1;
            }
        }
        assert_eq!(stored, 5);
    }

    pub async fn billed_calls_are_capped_per_tenant_and_day(backend: Backend) {
        let store = backend.open().await;
        let day = 20_000;
        assert!(store.billed_calls(day).await.unwrap().is_empty());
        assert!(store
            .reserve_billed_call("shop", day, Some(2))
            .await
            .unwrap());
        assert!(store
            .reserve_billed_call("shop", day, Some(2))
            .await
            .unwrap());
        assert!(
            !store
                .reserve_billed_call("shop", day, Some(2))
                .await
                .unwrap(),
            "the third call of the day is over the cap"
        );
        assert!(
            store
                .reserve_billed_call("shop", day + 1, Some(2))
                .await
                .unwrap(),
            "a new day starts at zero"
        );
        assert!(
            store
                .reserve_billed_call("other", day, Some(1))
                .await
                .unwrap(),
            "each tenant has its own count"
        );
        assert!(!store
            .reserve_billed_call("other", day, Some(0))
            .await
            .unwrap());
        for _ in 0..3 {
            assert!(
                store.reserve_billed_call("free", day, None).await.unwrap(),
                "no limit: counted, never refused"
            );
        }
        assert_eq!(
            store.billed_calls(day).await.unwrap(),
            [
                ("free".to_owned(), 3),
                ("other".to_owned(), 1),
                ("shop".to_owned(), 2)
            ]
        );
        store.release_billed_call("shop", day).await.unwrap();
        store.release_billed_call("nobody", day).await.unwrap();
        assert!(
            store
                .reserve_billed_call("shop", day, Some(2))
                .await
                .unwrap(),
            "a released reservation is free again"
        );
        drop(store);
        backend.restart_server();
        let store = backend.open().await;
        assert!(
            !store
                .reserve_billed_call("shop", day, Some(2))
                .await
                .unwrap(),
            "the count survives a restart"
        );
        assert_eq!(
            store.billed_calls(day + 1).await.unwrap(),
            [("shop".to_owned(), 1)]
        );
    }

    pub async fn two_stores_racing_for_the_last_slots_take_exactly_the_limit(backend: Backend) {
        let (a, b) = tokio::join!(backend.open(), backend.open());
        let day = 20_001;
        assert!(a.reserve_billed_call("shop", day, Some(8)).await.unwrap());
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
                tokio::spawn(async move { store.reserve_billed_call("shop", day, Some(8)).await })
            })
            .collect();
        let mut reserved = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() {
                reserved += 1;
            }
        }
        assert_eq!(reserved, 7, "exactly the slots left are reserved");
        assert_eq!(b.billed_calls(day).await.unwrap(), [("shop".to_owned(), 8)]);
    }

    /// A session created at `created_at_ms` with `billed` billed and one unbilled Juhe record on day 3.
    fn old_session(id: &str, created_at_ms: i64, billed: usize) -> facegate::domain::Session {
        let mut s = blank_session(id);
        s.created_at_ms = created_at_ms;
        s.state = State::Verified;
        for i in 0..=billed {
            s.outcome.billing.push(facegate::domain::BillingRecord {
                vendor: facegate::domain::Vendor::Juhe,
                item: "verifyface/verify".into(),
                billed: i < billed,
                at_ms: 3 * 86_400_000 + 1000,
                vendor_reference: format!("JH{id}{i}"),
            });
        }
        s
    }

    fn juhe_day3(billed: bool, count: i64) -> facegate::store::BillingDaily {
        facegate::store::BillingDaily {
            tenant: "default".into(),
            day: 3,
            vendor: "juhe".into(),
            item: "verifyface/verify".into(),
            billed,
            count,
        }
    }

    pub async fn old_rows_are_deleted_with_their_keys_and_billing_aggregated(backend: Backend) {
        let store = backend.open().await;
        for (id, created, billed) in [
            ("ses_old1", 10, 2),
            ("ses_old2", 20, 1),
            ("ses_new", 5000, 1),
        ] {
            let created = store
                .create(
                    &old_session(id, created, billed),
                    Some(&idem(&format!("r-{id}"), id)),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(created, Created::New);
        }
        assert_eq!(
            store.delete_sessions_before(1000, 1).await.unwrap(),
            1,
            "the limit holds"
        );
        assert_eq!(store.delete_sessions_before(1000, 10).await.unwrap(), 1);
        assert_eq!(store.delete_sessions_before(1000, 10).await.unwrap(), 0);
        for id in ["ses_old1", "ses_old2"] {
            assert!(store.get(id).await.unwrap().is_none());
            assert!(store
                .idempotency("default", &format!("r-{id}"))
                .await
                .unwrap()
                .is_none());
        }
        assert!(store.get("ses_new").await.unwrap().is_some());
        assert!(store
            .idempotency("default", "r-ses_new")
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            store.billing_daily().await.unwrap(),
            [juhe_day3(false, 2), juhe_day3(true, 3)],
            "2 + 1 billed and one unbilled of each deleted session"
        );
        // A request id of a deleted session is free again.
        let again = store
            .create(
                &old_session("ses_again", 6000, 0),
                Some(&idem("r-ses_old1", "ses_again")),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(again, Created::New);
    }

    pub async fn two_stores_sweeping_at_once_aggregate_each_row_once(backend: Backend) {
        let (a, b) = tokio::join!(backend.open(), backend.open());
        let n: usize = 60;
        for i in 0..n {
            let id = format!("ses_sweep{i}");
            a.create(
                &old_session(&id, 10 + i as i64, 1),
                Some(&idem(&format!("r{i}"), &id)),
                &[],
            )
            .await
            .unwrap();
        }
        let sweep = |store: Arc<dyn SessionStore>| {
            tokio::spawn(async move {
                let mut total = 0;
                loop {
                    let k = store.delete_sessions_before(1000, 7).await.unwrap();
                    if k == 0 {
                        return total;
                    }
                    total += k;
                }
            })
        };
        let (da, db) = tokio::join!(sweep(Arc::clone(&a)), sweep(Arc::clone(&b)));
        assert_eq!(
            da.unwrap() + db.unwrap(),
            n,
            "every row deleted by exactly one store"
        );
        let n = n as i64;
        assert_eq!(
            b.billing_daily().await.unwrap(),
            [juhe_day3(false, n), juhe_day3(true, n)]
        );
    }

    pub async fn errors_carry_no_personal_data(backend: Backend) {
        let store = backend.open().await;
        let mut s = blank_session("ses_pii");
        let identity = s.inputs.identity.as_mut().unwrap();
        identity.name = "张三丰".into();
        identity.id_number = "11010119491001201X".into();
        store.create(&s, None, &[]).await.unwrap();
        let Err(StoreError::Database(message)) = store.create(&s, None, &[]).await else {
            panic!("a second session with the same id is refused");
        };
        for secret in ["张三丰", "11010119491001201X", "ses_pii", "RequiresInput"] {
            assert!(!message.contains(secret), "{secret} in {message}");
        }
    }

    fn state_event(from: Option<State>, to: State, at_ms: i64) -> SessionEvent {
        SessionEvent {
            at_ms,
            detail: EventDetail::StateChanged {
                from,
                to,
                failure_code: None,
                reason: String::new(),
            },
        }
    }

    fn rejected(at_ms: i64) -> SessionEvent {
        SessionEvent {
            at_ms,
            detail: EventDetail::Callback {
                vendor: facegate::domain::Vendor::Megvii,
                accepted: false,
                rejection_reason: "INVALID_SIGNATURE".into(),
                source: "notify".into(),
            },
        }
    }

    pub async fn session_events_are_written_with_their_change(backend: Backend) {
        let store = backend.open().await;
        let mut s = blank_session("ses_ev");
        let created = state_event(None, State::RequiresInput, 1);
        store
            .create(&s, None, std::slice::from_ref(&created))
            .await
            .unwrap();
        s.version = 2;
        s.state = State::Processing;
        let call = SessionEvent {
            at_ms: 2,
            detail: EventDetail::VendorCall {
                vendor: facegate::domain::Vendor::Juhe,
                endpoint: "verifyface/verify".into(),
                outcome: "ok".into(),
                billed: true,
                possibly_billed: false,
                latency_ms: 12,
                error_reason: String::new(),
                vendor_code: String::new(),
            },
        };
        let moved = state_event(Some(State::RequiresInput), State::Processing, 3);
        store
            .update(&s, 1, &[call.clone(), moved.clone()])
            .await
            .unwrap();
        // A lost update writes none of its events.
        assert!(matches!(
            store.update(&s, 1, &[rejected(9)]).await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            store.append_event("nope", &rejected(9), None).await,
            Err(StoreError::NotFound)
        ));
        // Capped appends stop at the cap; others go on.
        let kinds = [KIND_CALLBACK_REJECTED];
        assert!(store
            .append_event("ses_ev", &rejected(4), Some((&kinds[..], 2)))
            .await
            .unwrap());
        assert!(store
            .append_event("ses_ev", &rejected(5), Some((&kinds[..], 2)))
            .await
            .unwrap());
        assert!(!store
            .append_event("ses_ev", &rejected(6), Some((&kinds[..], 2)))
            .await
            .unwrap());
        assert!(store
            .append_event("ses_ev", &SessionEvent::redacted("ops"), None)
            .await
            .unwrap());
        // The session itself is as the update left it.
        assert_eq!(store.get("ses_ev").await.unwrap().unwrap(), s);

        let all = store.events("ses_ev", 0, 100).await.unwrap();
        let seqs: Vec<i64> = all.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(all[0].event, created);
        assert_eq!(all[1].event, call);
        assert_eq!(all[2].event, moved);
        assert_eq!(all[3].event, rejected(4));
        assert_eq!(all[5].event.kind(), "redacted");
        let page = store.events("ses_ev", 2, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(store.events("other", 0, 10).await.unwrap().is_empty());

        let summary = store.events_summary("ses_ev").await.unwrap();
        assert_eq!(summary.events, 6);
        assert_eq!(summary.vendor_calls, 1);
        assert_eq!(summary.billed_calls, 1);
        assert_eq!(summary.callbacks_rejected, 2);
        assert_eq!(summary.last_event_at_ms, Some(all[5].event.at_ms));
        assert_eq!(
            store.events_summary("other").await.unwrap(),
            EventsSummary::default()
        );

        drop(store);
        backend.restart_server();
        let store = backend.open().await;
        assert_eq!(store.events("ses_ev", 0, 100).await.unwrap(), all);
    }

    pub async fn concurrent_appends_get_distinct_sequences(backend: Backend) {
        let store = backend.open().await;
        let other = backend.open().await;
        store
            .create(&blank_session("ses_race"), None, &[])
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 {
                Arc::clone(&store)
            } else {
                Arc::clone(&other)
            };
            tasks.push(tokio::spawn(async move {
                store
                    .append_event("ses_race", &rejected(i), None)
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
        let seqs: Vec<i64> = store
            .events("ses_race", 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(seqs, (1..=16).collect::<Vec<i64>>());
    }
}

macro_rules! contract_test {
    ({ $(#[$attr:meta])* }, $backend:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $name() {
            super::contract::$name($backend).await;
        }
    };
}

/// The whole contract against one backend, as a module of tests with the given attributes.
macro_rules! contract_suite {
    ($module:ident, $backend:expr, $attrs:tt) => {
        mod $module {
            use super::*;
            contract_test!($attrs, $backend, create_get_update_conflict);
            contract_test!($attrs, $backend, idempotency_returns_the_first_session);
            contract_test!(
                $attrs,
                $backend,
                concurrent_creates_with_one_request_id_make_one_session
            );
            contract_test!(
                $attrs,
                $backend,
                expired_in_flight_and_personal_data_queries
            );
            contract_test!($attrs, $backend, fingerprint_key_is_made_once_and_shared);
            contract_test!($attrs, $backend, sessions_survive_a_restart);
            contract_test!($attrs, $backend, errors_carry_no_personal_data);
            contract_test!($attrs, $backend, billed_calls_are_capped_per_tenant_and_day);
            contract_test!(
                $attrs,
                $backend,
                creates_reserve_their_billed_call_in_the_same_write
            );
            contract_test!(
                $attrs,
                $backend,
                two_stores_racing_for_the_last_slots_take_exactly_the_limit
            );
            contract_test!(
                $attrs,
                $backend,
                tenants_are_stored_and_request_ids_are_per_tenant
            );
            contract_test!($attrs, $backend, pre_tenant_rows_get_the_default_tenant);
            contract_test!(
                $attrs,
                $backend,
                session_events_are_written_with_their_change
            );
            contract_test!($attrs, $backend, concurrent_appends_get_distinct_sequences);
            contract_test!(
                $attrs,
                $backend,
                old_rows_are_deleted_with_their_keys_and_billing_aggregated
            );
            contract_test!(
                $attrs,
                $backend,
                two_stores_sweeping_at_once_aggregate_each_row_once
            );
            contract_test!($attrs, $backend, list_pages_newest_first_with_filters);
            contract_test!($attrs, $backend, client_reference_keys_are_backfilled);
        }
    };
}

contract_suite!(sqlite, Backend::sqlite(), {});
contract_suite!(postgres, Backend::postgres(), {
    #[ignore = "needs PostgreSQL (initdb, pg_ctl); .ci/run installs it"]
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (initdb, pg_ctl); .ci/run installs it"]
async fn postgres_replicas_starting_together_migrate_once() {
    let cluster = PgCluster::start();
    let url = cluster.url("postgres");
    let options = test_options();
    let replicas = (0..4).map(|_| PostgresStore::connect(&url, &options));
    for replica in futures_util::future::join_all(replicas).await {
        replica.expect("every replica starts");
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM facegate_schema_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<i64> = (1..=facegate::store::postgres::SCHEMA_VERSION).collect();
    assert!(expected.len() >= 8, "the outbox migrations are counted");
    assert_eq!(versions, expected, "each migration applied once");

    sqlx::query("INSERT INTO facegate_schema_migrations (version) VALUES (999)")
        .execute(&pool)
        .await
        .unwrap();
    let Err(e) = PostgresStore::connect(&url, &options).await else {
        panic!("a build older than the schema refuses to start");
    };
    assert!(e.to_string().contains("newer than this build"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (initdb, pg_ctl); .ci/run installs it"]
async fn server_on_postgres_keeps_a_juhe_session_across_a_restart() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite_file = dir.path().join("facegate.db");
    let mut config = sandbox_config(&sqlite_file);
    config.store.database_url = Secret::new(cluster.url("postgres"));
    let mut srv = Server::start_with(dir, config.clone()).await;
    let verified = srv.start_ok(juhe_inline("id", 1)).await;
    assert_eq!(state(&verified), pb::SessionState::Verified);
    srv.stop().await;
    assert!(!sqlite_file.exists(), "the SQLite file is not used");

    let mut again = Server::start_with(tempfile::tempdir().unwrap(), config).await;
    let read = again.result(&verified.id).await;
    assert_eq!(state(&read), pb::SessionState::Verified);
    assert_eq!(read.id, verified.id);
    let replay = again.start_ok(juhe_inline("id", 1)).await;
    assert_eq!(replay.id, verified.id, "the request id is still known");
    assert_eq!(again.juhe_requests(), 0, "no new vendor call");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (initdb, pg_ctl); .ci/run installs it"]
async fn a_stream_on_one_replica_hears_a_decision_made_on_another() {
    let cluster = PgCluster::start();
    let replica = |_: u8| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sandbox_config(&dir.path().join("facegate.db"));
        config.store.database_url = Secret::new(cluster.url("postgres"));
        config.session.watch_refresh_ms = 100;
        (dir, config)
    };
    let (dir_a, config_a) = replica(1);
    let (dir_b, config_b) = replica(2);
    let mut a = Server::start_with(dir_a, config_a).await;
    let b = Server::start_with(dir_b, config_b).await;
    let s = a.start_ok(juhe_empty("two-replicas")).await;
    // The stream on B is open, its first message (the snapshot) read, before A changes anything.
    let mut stream = b
        .client
        .clone()
        .stream_status(pb::StreamStatusRequest {
            session_id: s.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("no snapshot within 10 s")
        .unwrap()
        .unwrap();
    let watcher = tokio::spawn(async move {
        let mut seen = vec![first.session.unwrap()];
        while let Some(msg) = stream.message().await.unwrap() {
            seen.push(msg.session.unwrap());
        }
        seen
    });
    a.client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: s.id.clone(),
            identity: Some(identity(1)),
        })
        .await
        .unwrap();
    a.client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(probe()),
            ..Default::default()
        })
        .await
        .unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), watcher)
        .await
        .expect("the stream on the other replica ended")
        .unwrap();
    assert_eq!(
        state(seen.first().unwrap()),
        pb::SessionState::RequiresInput
    );
    assert_eq!(state(seen.last().unwrap()), pb::SessionState::Verified);
}
