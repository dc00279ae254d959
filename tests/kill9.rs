//! kill -9 under concurrent StartSession load: the real binary (`serve --sandbox`, SQLite store in a temp dir) is
//! killed with SIGKILL while many Juhe sessions are being started, then restarted on the same store. Every session
//! whose StartSession was answered OK must be there in the state it was answered with (or later), and no intent may
//! be billed twice: not by the sessions as stored, and not by replaying, after the restart, every request id that
//! was sent (answered or not).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use facegate::config::{Secret, StoreConfig};
use facegate::proto::v1 as pb;
use facegate::proto::v1::verification_service_client::VerificationServiceClient;
use facegate::store::sqlite::SqliteStore;
use facegate::store::{ListFilter, SessionStore, StoreOptions};
use tonic::transport::Channel;

use common::hooks::{expected_types, new_secret, Receiver};
use common::juhe_inline;

/// Calls in flight at once.
const CONCURRENCY: usize = 48;

/// One run of the binary and where it listens.
struct Process {
    child: Child,
    grpc: String,
    http: String,
}

impl Process {
    fn start(db: &Path, key: &str) -> Self {
        Self::start_with(db, key, None)
    }

    /// [`Process::start`] with a configuration file.
    fn start_with(db: &Path, key: &str, config: Option<&Path>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_facegate"));
        if let Some(path) = config {
            cmd.arg("--config").arg(path);
        }
        for (k, _) in std::env::vars() {
            if k.starts_with("FACEGATE") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .args(["serve", "--sandbox"])
            .env("FACEGATE__GRPC__LISTEN", "127.0.0.1:0")
            .env("FACEGATE__HTTP__LISTEN", "127.0.0.1:0")
            .env("FACEGATE__STORE__SQLITE_PATH", db)
            .env("FACEGATE__STORE__ENCRYPTION_KEYS", key)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The sandbox help names both listeners; the rest of stdout is drained so the process never blocks on it.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (grpc, http) = loop {
            let line = lines
                .next()
                .expect("the binary ended before serving")
                .unwrap();
            if let Some(rest) = line.strip_prefix("facegate sandbox: gRPC on ") {
                let (grpc, rest) = rest.split_once(", HTTP on ").unwrap();
                let http = rest.split_whitespace().next().unwrap();
                break (grpc.to_owned(), http.to_owned());
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, grpc, http }
    }

    async fn client(&self) -> VerificationServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        VerificationServiceClient::new(channel)
    }

    /// SIGKILL, and wait until it is gone.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Billed Juhe calls this process has recorded (`facegate_vendor_billed_total`).
    async fn billed_calls(&self) -> u64 {
        facegate::app::install_crypto_provider();
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("facegate_vendor_billed_total{") && l.contains("juhe"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }
}

/// What the load saw: request ids answered OK (with the session and its state) and those sent without an answer.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<String, (String, pb::SessionState)>,
    unanswered: BTreeSet<String>,
}

/// Starts sessions from `CONCURRENCY` tasks until the process stops answering; returns when all of them stopped.
async fn load(
    client: VerificationServiceClient<Channel>,
    round: usize,
    seen: Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CONCURRENCY)
        .map(|task| {
            let mut client = client.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                for n in 0.. {
                    let request_id = format!("kill9-{round}-{task}-{n}");
                    match client.start_session(juhe_inline(&request_id, 1)).await {
                        Ok(reply) => {
                            let s = reply.into_inner().session.unwrap();
                            let state = common::state(&s);
                            seen.lock().unwrap().acked.insert(request_id, (s.id, state));
                        }
                        Err(_) => {
                            seen.lock().unwrap().unanswered.insert(request_id);
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

fn is_final(state: pb::SessionState) -> bool {
    matches!(
        state,
        pb::SessionState::Verified
            | pb::SessionState::Failed
            | pb::SessionState::Expired
            | pb::SessionState::Canceled
    )
}

fn store_options(key: &str) -> StoreOptions {
    let config = StoreConfig {
        encryption_keys: vec![Secret::new(key.to_owned())],
        ..Default::default()
    };
    StoreOptions {
        keys: config.key_ring().unwrap().unwrap(),
        ..Default::default()
    }
}

/// Every stored session: none has more than one billed record or more than one vendor call in its log.
async fn check_store(db: &Path, key: &str) -> usize {
    let store = SqliteStore::open(db, &store_options(key)).await.unwrap();
    let tenant = facegate::domain::caller::DEFAULT_TENANT;
    let mut after = None;
    let mut sessions = 0;
    loop {
        let page = store
            .list(tenant, &ListFilter::default(), after.clone(), 500)
            .await
            .unwrap();
        let Some(last) = page.last() else {
            break;
        };
        after = Some((last.created_at_ms, last.id.clone()));
        for s in &page {
            sessions += 1;
            let billed = s.outcome.billing.iter().filter(|b| b.billed).count();
            assert!(billed <= 1, "session {} billed {billed} times", s.id);
            let summary = store.events_summary(&s.id).await.unwrap();
            let calls = summary.vendor_calls;
            assert!(calls <= 1, "session {} made {calls} vendor calls", s.id);
        }
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_start_session_load_loses_no_acknowledged_session_and_bills_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("facegate.db");
    let key = format!(
        "k1:{}",
        facegate::store::seal::generate_key_base64().unwrap()
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    // Kill points: after this many more acknowledged sessions, with the load still running.
    for (round, kill_after) in [40usize, 150, 400].into_iter().enumerate() {
        let process = Process::start(&db, &key);
        let before = seen.lock().unwrap().acked.len();
        let tasks = load(process.client().await, round, Arc::clone(&seen)).await;
        while seen.lock().unwrap().acked.len() < before + kill_after {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        process.kill();
        for t in tasks {
            t.await.unwrap();
        }

        let process = Process::start(&db, &key);
        let mut client = process.client().await;
        let (acked, unanswered) = {
            let seen = seen.lock().unwrap();
            (seen.acked.clone(), seen.unanswered.clone())
        };
        assert!(!unanswered.is_empty(), "the kill found no call in flight");
        // Every acknowledged session is there, as it was acknowledged or later.
        for (request_id, (id, acked_state)) in &acked {
            let s = client
                .get_result(pb::GetResultRequest {
                    session_id: id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{request_id}: acknowledged session {id} lost: {e}"))
                .into_inner()
                .session
                .unwrap();
            let state = common::state(&s);
            if is_final(*acked_state) {
                assert_eq!(state, *acked_state, "{request_id}: {id}");
            }
        }
        check_store(&db, &key).await;

        // Which unanswered request ids made a session before the kill: their replays must not call Juhe again.
        let store = SqliteStore::open(&db, &store_options(&key)).await.unwrap();
        let tenant = facegate::domain::caller::DEFAULT_TENANT;
        let mut fresh = 0;
        for request_id in &unanswered {
            if store
                .idempotency(tenant, request_id)
                .await
                .unwrap()
                .is_none()
            {
                fresh += 1;
            }
        }
        drop(store);
        assert_eq!(process.billed_calls().await, 0);
        // Replays of every request id sent so far: the acknowledged ones answer their own session, and only
        // requests that never made a session make a (first) billed call.
        for (request_id, (id, _)) in &acked {
            let replayed = match client.start_session(juhe_inline(request_id, 1)).await {
                Ok(r) => r.into_inner().session.unwrap().id,
                // One whose vendor call a kill cut off answers that error again, with its session.
                Err(st) => common::reason(&st).1["sessionId"].clone(),
            };
            assert_eq!(&replayed, id, "{request_id}");
        }
        for request_id in &unanswered {
            let reply = client.start_session(juhe_inline(request_id, 1)).await;
            let (id, state) = match reply {
                Ok(r) => {
                    let s = r.into_inner().session.unwrap();
                    let state = common::state(&s);
                    (s.id, state)
                }
                // Its vendor call was under way at the kill: the replay answers what recovery recorded (outcome
                // unknown, possibly billed), with the session it made.
                Err(st) => {
                    let (reason, md) = common::reason(&st);
                    assert_eq!(reason, "VENDOR_TIMEOUT", "{request_id}: {st:?}");
                    assert_eq!(md["possiblyBilled"], "true");
                    (md["sessionId"].clone(), pb::SessionState::RequiresInput)
                }
            };
            seen.lock()
                .unwrap()
                .acked
                .insert(request_id.clone(), (id, state));
        }
        seen.lock().unwrap().unanswered.clear();
        assert_eq!(
            process.billed_calls().await,
            fresh,
            "replays made billed calls for intents already started"
        );
        let stored = check_store(&db, &key).await;
        assert_eq!(stored, seen.lock().unwrap().acked.len());
        process.kill();
    }
}

/// kill -9 between a state change and its webhook: the receiver takes the first delivery and never answers, the
/// process is killed, and after the restart every event of the session arrives acknowledged exactly once, in order,
/// each verifying with the endpoint's secret (the outbox row was written with the change; the dead process's lease
/// is released when the next one opens the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_a_webhook_is_delivered_delivers_it_once_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("facegate.db");
    let key = format!(
        "k1:{}",
        facegate::store::seal::generate_key_base64().unwrap()
    );
    let secret = new_secret();
    let receiver = Receiver::start(std::slice::from_ref(&secret)).await;
    receiver.answer(0);
    let config = dir.path().join("facegate.toml");
    std::fs::write(
        &config,
        format!(
            "[webhooks]\ninitial_backoff_ms = 50\npoll_interval_ms = 50\n\n[[webhooks.endpoints]]\n\
             name = \"shop\"\nurl = \"{}\"\nsecret = \"{secret}\"\n",
            receiver.url
        ),
    )
    .unwrap();
    let process = Process::start_with(&db, &key, Some(&config));
    let session = process
        .client()
        .await
        .start_session(juhe_inline("kill9-webhook", 1))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    receiver.wait_until(30, |d| !d.is_empty()).await;
    process.kill();
    assert!(receiver.acknowledged().is_empty());
    receiver.answer(200);

    let process = Process::start_with(&db, &key, Some(&config));
    let events = process
        .client()
        .await
        .list_session_events(pb::ListSessionEventsRequest {
            session_id: session.id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let expected = expected_types(&events);
    assert!(expected.len() >= 2, "{expected:?}");
    receiver
        .wait_until(30, |d| {
            d.iter().filter(|d| d.answered == 200).count() >= expected.len()
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let acknowledged = receiver.acknowledged();
    let types: Vec<String> = acknowledged.iter().map(|d| d.event_type()).collect();
    assert_eq!(types, expected, "each event once, in order");
    let ids: BTreeSet<&str> = acknowledged.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), expected.len());
    assert!(acknowledged.iter().all(|d| d.verified == vec![true]));
    // The delivery the killed process had under way was sent again, with the same id.
    let first = &receiver.deliveries()[0];
    assert_eq!(first.answered, 0);
    assert!(ids.contains(first.id.as_str()));
    process.kill();
}
