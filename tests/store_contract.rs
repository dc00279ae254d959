//! One behaviour suite for every `SessionStore`: each test in `contract` runs against SQLite and against a private
//! PostgreSQL cluster (`common::pg`; those are ignored by default and run in CI with `--run-ignored`). At the end,
//! PostgreSQL-only checks (replicas migrating together) and the real server on PostgreSQL across a restart.

mod common;

use std::sync::Arc;

use common::pg::PgCluster;
use common::{
    identity, juhe_empty, juhe_inline, probe, sandbox_config, state, watch_in_background, Server,
};
use facegate::config::Secret;
use facegate::domain::state::tests_support::blank_session;
use facegate::domain::{IdentityDocument, State};
use facegate::proto::v1 as pb;
use facegate::store::postgres::PostgresStore;
use facegate::store::sqlite::SqliteStore;
use facegate::store::{Created, IdempotencyRecord, SessionStore, StoreError};

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
        match self {
            Backend::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("db/facegate.db"))
                    .await
                    .unwrap(),
            ),
            Backend::Postgres(cluster) => Arc::new(
                PostgresStore::connect(&cluster.url("postgres"))
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Restarts the database server, where there is one.
    fn restart_server(&self) {
        if let Backend::Postgres(cluster) = self {
            cluster.restart();
        }
    }
}

fn idem(request_id: &str, session_id: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        request_id: request_id.into(),
        fingerprint: format!("fp-{request_id}"),
        session_id: session_id.into(),
    }
}

/// The behaviour every store has.
mod contract {
    use super::*;

    pub async fn create_get_update_conflict(backend: Backend) {
        let store = backend.open().await;
        let mut s = blank_session("ses_a");
        // Text that JSON escapes (a NUL among it) must come back as it went in.
        s.metadata
            .insert("note".into(), "quote \" backslash \\ nul \u{0} 测试".into());
        assert_eq!(store.create(&s, None).await.unwrap(), Created::New);
        assert_eq!(store.get("ses_a").await.unwrap().unwrap(), s);
        assert!(store.get("nope").await.unwrap().is_none());

        s.version = 2;
        s.state = State::Processing;
        s.updated_at_ms = 7;
        store.update(&s, 1).await.unwrap();
        assert_eq!(store.get("ses_a").await.unwrap().unwrap(), s);
        assert!(matches!(
            store.update(&s, 1).await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            store.update(&blank_session("nope"), 1).await,
            Err(StoreError::NotFound)
        ));
    }

    pub async fn idempotency_returns_the_first_session(backend: Backend) {
        let store = backend.open().await;
        let first = idem("r1", "ses_a");
        let created = store.create(&blank_session("ses_a"), Some(&first)).await;
        assert_eq!(created.unwrap(), Created::New);
        let again = store
            .create(&blank_session("ses_b"), Some(&idem("r1", "ses_b")))
            .await
            .unwrap();
        assert_eq!(again, Created::Existing(first.clone()));
        assert!(
            store.get("ses_b").await.unwrap().is_none(),
            "the second create wrote nothing"
        );
        assert_eq!(store.idempotency("r1").await.unwrap(), Some(first));
        assert_eq!(store.idempotency("r2").await.unwrap(), None);
    }

    pub async fn concurrent_creates_with_one_request_id_make_one_session(backend: Backend) {
        let store = backend.open().await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let id = format!("ses_{i}");
                    store
                        .create(&blank_session(&id), Some(&idem("same", &id)))
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
            }
        }
        assert_eq!(new, 1, "exactly one create wins");
        let winner = store.idempotency("same").await.unwrap().unwrap();
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
            assert_eq!(store.create(s, None).await.unwrap(), Created::New);
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
        store.update(&done, 1).await.unwrap();
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
        store.update(&revealable, 1).await.unwrap();
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
        store.create(&s, Some(&record)).await.unwrap();
        s.version = 2;
        s.state = State::Verified;
        store.update(&s, 1).await.unwrap();
        drop(store);
        backend.restart_server();
        let store = backend.open().await;
        assert_eq!(store.get("ses_keep").await.unwrap().unwrap(), s);
        assert_eq!(store.idempotency("keep").await.unwrap(), Some(record));
        assert!(store.expired(i64::MAX, 10).await.unwrap().is_empty());
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

    pub async fn errors_carry_no_personal_data(backend: Backend) {
        let store = backend.open().await;
        let mut s = blank_session("ses_pii");
        let identity = s.inputs.identity.as_mut().unwrap();
        identity.name = "张三丰".into();
        identity.id_number = "11010119491001201X".into();
        store.create(&s, None).await.unwrap();
        let Err(StoreError::Database(message)) = store.create(&s, None).await else {
            panic!("a second session with the same id is refused");
        };
        for secret in ["张三丰", "11010119491001201X", "ses_pii", "RequiresInput"] {
            assert!(!message.contains(secret), "{secret} in {message}");
        }
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
                two_stores_racing_for_the_last_slots_take_exactly_the_limit
            );
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
    let replicas = (0..4).map(|_| PostgresStore::connect(&url));
    for replica in futures_util::future::join_all(replicas).await {
        replica.expect("every replica starts");
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM facegate_schema_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3], "each migration applied once");

    sqlx::query("INSERT INTO facegate_schema_migrations (version) VALUES (999)")
        .execute(&pool)
        .await
        .unwrap();
    let Err(e) = PostgresStore::connect(&url).await else {
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
    let calls = again.juhe_stats();
    assert_eq!(
        calls.verify_calls + calls.verify_encry_calls,
        0,
        "no new vendor call"
    );
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
    let watcher = watch_in_background(&b.client, &s.id);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
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
