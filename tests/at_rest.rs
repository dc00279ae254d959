//! Personal data at rest: what the SQLite files hold after real flows (ciphertext only), keys removed and
//! rotated, and the files' mode.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::*;
use facegate::proto::v1 as pb;

/// A name that appears nowhere else.
const CANARY_NAME: &str = "金丝雀测验员";
/// Bytes that appear nowhere else, appended to a real JPEG (the simulators check the format only).
const CANARY_TAIL: &[u8] = &[
    0xC4, 0x9A, 0x17, 0xE3, 0x5B, 0x88, 0x02, 0xF1, 0x6D, 0x3C, 0xA9, 0x44, 0x90, 0x0E, 0xD7, 0x21,
    0x7B, 0xB2, 0x58, 0xCE, 0x13, 0x6F, 0xE0, 0x39, 0x85, 0x4A, 0xF6, 0x0B, 0x97, 0x2D, 0xC8, 0x51,
];

fn canary_image() -> Vec<u8> {
    let mut image = JPEG.to_vec();
    image.extend_from_slice(CANARY_TAIL);
    image
}

fn canary_identity(sequence: u16) -> pb::Identity {
    pb::Identity {
        name: CANARY_NAME.into(),
        id_number: id_number(sequence),
        id_type: 0,
    }
}

/// What must never be found in the database files.
fn needles(sequences: &[u16]) -> Vec<(String, Vec<u8>)> {
    let image = canary_image();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let mut out = vec![
        ("name".to_owned(), CANARY_NAME.as_bytes().to_vec()),
        ("base64 image".to_owned(), b64.into_bytes()),
        ("raw image bytes".to_owned(), CANARY_TAIL.to_vec()),
    ];
    for &seq in sequences {
        out.push((format!("ID number {seq}"), id_number(seq).into_bytes()));
    }
    out
}

/// `bytes` contain none of the canary's name, ID numbers, base64 image or raw image bytes.
fn assert_bytes_free_of_canary(bytes: &[u8], sequences: &[u16], stage: &str) {
    for (what, needle) in needles(sequences) {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
            "{stage}: holds the canary {what}"
        );
    }
}

fn assert_no_canary(db: &Path, sequences: &[u16], stage: &str) {
    let mut checked = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        checked += 1;
        for (what, needle) in needles(sequences) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{stage}: {path} holds the canary {what}"
            );
        }
    }
    assert!(checked > 0, "{stage}: no database file at {}", db.display());
}

fn juhe(request_id: &str, sequence: u16) -> pb::StartSessionRequest {
    pb::StartSessionRequest {
        identity: Some(canary_identity(sequence)),
        images: vec![pb::FaceImage {
            data: canary_image(),
            role: pb::ImageRole::Probe as i32,
        }],
        ..juhe_inline(request_id, sequence)
    }
}

/// The raw `record` column of every session, by id.
async fn raw_records(db: &Path) -> Vec<(String, String)> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, record FROM sessions ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// The canary's sessions: one per stage a flow can rest in.
struct CanaryFlows {
    /// Juhe left in REQUIRES_INPUT by a vendor error, identity and image kept for a retry.
    juhe_waiting: String,
    /// Juhe decided inline.
    juhe_final: pb::Session,
    /// Baidu, waiting for the user, then passed through its page.
    baidu: pb::Session,
    /// Megvii, waiting for the user, then passed by its callback.
    megvii: pb::Session,
}

/// Runs the canary flows of all three vendors, with `check` called once every flow waits (`not final`) and once
/// every flow is decided (`final`).
async fn canary_flows(srv: &mut Server, prefix: &str, check: impl Fn(&str)) -> CanaryFlows {
    let st = srv
        .client
        .start_session(juhe(&format!("{prefix}-err"), 911))
        .await
        .unwrap_err();
    let juhe_waiting = reason(&st).1["sessionId"].clone();
    let baidu = srv
        .start_ok(pb::StartSessionRequest {
            identity: Some(canary_identity(1)),
            ..baidu_inline(&format!("{prefix}-baidu"), "", 1)
        })
        .await;
    assert_eq!(state(&baidu), pb::SessionState::AwaitingUser);
    let megvii = srv
        .start_ok(pb::StartSessionRequest {
            identity: Some(canary_identity(1)),
            ..megvii_inline(&format!("{prefix}-megvii"), 1)
        })
        .await;
    assert_eq!(state(&megvii), pb::SessionState::AwaitingUser);
    check("not final");

    let juhe_final = srv.start_ok(juhe(&format!("{prefix}-final"), 1)).await;
    assert_eq!(state(&juhe_final), pb::SessionState::Verified);
    srv.megvii_page(
        &megvii.user_url,
        facegate::sandbox::megvii::PageOutcome::Pass,
    )
    .await;
    let browser = Browser::new();
    let relay = browser.choose(&baidu.user_url, "pass").await;
    browser.follow(&relay).await;
    for id in [&megvii.id, &baidu.id] {
        let seen = stream_to_end(&mut srv.client.clone(), id).await;
        assert_eq!(
            state(seen.last().unwrap()),
            pb::SessionState::Verified,
            "{id}"
        );
    }
    check("final");
    CanaryFlows {
        juhe_waiting,
        juhe_final,
        baidu,
        megvii,
    }
}

#[tokio::test]
async fn the_sqlite_files_hold_no_canary_at_any_stage_and_nothing_opens_without_the_key() {
    let mut srv = Server::start_fast().await;
    let db = srv.db_path();
    let config = {
        let mut c = sandbox_config(&db);
        fast_polling(&mut c);
        c
    };
    let sequences = [1, 911];

    let CanaryFlows {
        juhe_waiting,
        juhe_final,
        baidu,
        megvii,
    } = canary_flows(&mut srv, "canary", |stage| {
        assert_no_canary(&db, &sequences, stage)
    })
    .await;

    // Redacted: a final and a non-final session. Even opened with the key, their records hold no canary.
    for id in [&juhe_final.id, &juhe_waiting] {
        srv.client
            .redact_session(pb::RedactSessionRequest {
                session_id: id.clone(),
            })
            .await
            .unwrap();
        let opened = srv.running().service.get(id).await.unwrap();
        let json = serde_json::to_vec(&opened).unwrap();
        assert_bytes_free_of_canary(&json, &sequences, "a redacted record, opened");
    }
    assert_no_canary(&db, &sequences, "redacted");
    srv.stop().await;

    // After a restart, with the key: every session reads back.
    let mut again = Server::start_with(tempfile::tempdir().unwrap(), config.clone()).await;
    for id in [&juhe_waiting, &juhe_final.id, &baidu.id, &megvii.id] {
        let s = again.result_with(id, false, false, false).await;
        assert_eq!(&s.session.unwrap().id, id);
    }
    assert_no_canary(&db, &sequences, "after restart");
    again.stop().await;

    // Without the key: a clear error naming the key id, no data.
    let mut keyless = config.clone();
    keyless.store.encryption_keys = vec![test_key("other")];
    let Err(e) = facegate::app::start(keyless, facegate::app::Mode::sandbox()).await else {
        panic!("a store sealed with another key must not open");
    };
    let e = e.to_string();
    assert!(e.contains("\"k1\""), "{e}");
    for (what, needle) in needles(&sequences) {
        assert!(
            !e.as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "{what}: {e}"
        );
    }
    for (_, record) in raw_records(&db).await {
        assert!(record.starts_with("s1:k1:"), "ciphertext only");
    }
}

#[tokio::test]
async fn keys_rotate_without_downtime_and_rotate_keys_reseals_every_old_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("facegate.db");
    let k1 = test_key("k1");
    let k2 = test_key("k2");
    let mut config = sandbox_config(&db);
    config.store.encryption_keys = vec![k1.clone()];
    let mut srv = Server::start_with(tempfile::tempdir().unwrap(), config.clone()).await;
    let old = srv.start_ok(juhe("rot-old", 1)).await;
    srv.stop().await;

    // The new key first: old rows still read, new rows are sealed with the new key.
    config.store.encryption_keys = vec![k2.clone(), k1.clone()];
    let mut srv = Server::start_with(tempfile::tempdir().unwrap(), config.clone()).await;
    assert_eq!(
        srv.result_with(&old.id, false, false, false)
            .await
            .session
            .unwrap()
            .id,
        old.id
    );
    let new = srv.start_ok(juhe("rot-new", 1)).await;
    let by_id: std::collections::BTreeMap<_, _> = raw_records(&db).await.into_iter().collect();
    assert!(by_id[&old.id].starts_with("s1:k1:"));
    assert!(by_id[&new.id].starts_with("s1:k2:"));

    // rotate-keys, while the server runs.
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("rotate-keys")
        .env("FACEGATE__STORE__SQLITE_PATH", &db)
        .env(
            "FACEGATE__STORE__ENCRYPTION_KEYS",
            format!("{},{}", k2.expose(), k1.expose()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old session and the fingerprint key.
    assert!(stdout.contains("re-sealed 2 records"), "{stdout}");
    for (id, record) in raw_records(&db).await {
        assert!(
            record.starts_with("s1:k2:"),
            "{id} is still under the old key"
        );
    }
    srv.stop().await;

    // The old key removed: everything reads.
    config.store.encryption_keys = vec![k2];
    let mut srv = Server::start_with(tempfile::tempdir().unwrap(), config).await;
    for id in [&old.id, &new.id] {
        assert_eq!(
            &srv.result_with(id, false, false, false)
                .await
                .session
                .unwrap()
                .id,
            id
        );
    }
    // A retry of a request id from before the rotation is still recognised.
    let replay = srv.start_ok(juhe("rot-old", 1)).await;
    assert_eq!(replay.id, old.id);
    srv.stop().await;
}

#[tokio::test]
async fn the_database_files_are_private_to_their_owner() {
    let mut srv = Server::start().await;
    let db = srv.db_path();
    srv.start_ok(juhe("mode", 1)).await;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}");
    }
    srv.stop().await;
}

fn assert_bytes_hold_no_canary(bytes: &[u8], sequences: &[u16], stage: &str) {
    for (what, needle) in needles(sequences) {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
            "{stage}: pg_dump holds the canary {what}"
        );
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, pg_dump)"]
async fn a_pg_dump_holds_no_canary_at_any_stage() {
    let cluster = common::pg::PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("unused.db"));
    fast_polling(&mut config);
    config.store.database_url = facegate::config::Secret::new(cluster.url("postgres"));
    let mut srv = Server::start_with(tempfile::tempdir().unwrap(), config.clone()).await;
    let sequences = [1, 911];

    let CanaryFlows {
        juhe_waiting,
        juhe_final,
        baidu,
        megvii,
    } = canary_flows(&mut srv, "pg", |stage| {
        assert_bytes_hold_no_canary(&cluster.dump("postgres"), &sequences, stage)
    })
    .await;
    for id in [&juhe_final.id, &juhe_waiting] {
        srv.client
            .redact_session(pb::RedactSessionRequest {
                session_id: id.clone(),
            })
            .await
            .unwrap();
    }
    assert_bytes_hold_no_canary(&cluster.dump("postgres"), &sequences, "redacted");
    srv.stop().await;

    let mut again = Server::start_with(tempfile::tempdir().unwrap(), config).await;
    for id in [&juhe_waiting, &juhe_final.id, &baidu.id, &megvii.id] {
        let s = again.result_with(id, false, false, false).await;
        assert_eq!(&s.session.unwrap().id, id);
    }
    assert_bytes_hold_no_canary(&cluster.dump("postgres"), &sequences, "after restart");
    again.stop().await;
}
