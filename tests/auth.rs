//! Callers, scopes and tenants through the generated client: every RPC allowed with its scope and refused without,
//! UNAUTHENTICATED without (valid) credentials, health and reflection open by default and closed on request, every
//! RPC across tenants NOT_FOUND, per-tenant request ids, live_mode in the sandbox, and the audit line of an unmasked
//! read.

mod common;

use common::*;
use facegate::proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

const ALL: &[&str] = &[
    "sessions:create",
    "sessions:read",
    "sessions:cancel",
    "personal_data:reveal",
    "media:read",
];

/// Callers of tenant `shop`, one per scope plus one with all, and `rival` of tenant `other` with all.
async fn server() -> Server {
    Server::start_with_callers(vec![
        caller_config("admin", "shop", ALL, "key-admin"),
        caller_config("creator", "shop", &["sessions:create"], "key-creator"),
        caller_config("reader", "shop", &["sessions:read"], "key-reader"),
        caller_config("canceler", "shop", &["sessions:cancel"], "key-canceler"),
        caller_config(
            "revealer",
            "shop",
            &["sessions:read", "personal_data:reveal"],
            "key-revealer",
        ),
        caller_config(
            "viewer",
            "shop",
            &["sessions:read", "media:read"],
            "key-viewer",
        ),
        caller_config("rival", "other", ALL, "key-rival"),
    ])
    .await
}

fn assert_missing_scope(result: Result<impl std::fmt::Debug, tonic::Status>, scope: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let (reason, metadata) = reason(&status);
    assert_eq!(reason, "MISSING_SCOPE");
    assert_eq!(metadata.get("scope").map(String::as_str), Some(scope));
}

fn assert_unauthenticated(result: Result<impl std::fmt::Debug, tonic::Status>, key: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status).0, "UNAUTHENTICATED");
    if !key.is_empty() {
        assert!(
            !status.message().contains(key),
            "the key is not echoed: {}",
            status.message()
        );
    }
}

fn assert_not_found(result: Result<impl std::fmt::Debug, tonic::Status>, missing_message: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(reason(&status).0, "SESSION_NOT_FOUND");
    assert_eq!(
        status.message(),
        missing_message,
        "the same answer as for a missing id"
    );
}

fn submit(id: &str) -> pb::SubmitIdentityRequest {
    pb::SubmitIdentityRequest {
        session_id: id.into(),
        identity: Some(identity(1)),
    }
}

fn upload(id: &str) -> pb::UploadReferenceRequest {
    pb::UploadReferenceRequest {
        session_id: id.into(),
        image: Some(probe()),
        ..Default::default()
    }
}

fn get(id: &str) -> pb::GetResultRequest {
    pb::GetResultRequest {
        session_id: id.into(),
        ..Default::default()
    }
}

fn stream(id: &str) -> pb::StreamStatusRequest {
    pb::StreamStatusRequest {
        session_id: id.into(),
    }
}

fn cancel(id: &str) -> pb::CancelSessionRequest {
    pb::CancelSessionRequest {
        session_id: id.into(),
        ..Default::default()
    }
}

async fn new_session(client: &mut KeyedClient, request_id: &str) -> pb::Session {
    client
        .start_session(juhe_empty(request_id))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_allows_its_rpcs_and_only_those() {
    let mut srv = server().await;
    let mut admin = srv.with_key("key-admin").await;
    let mut creator = srv.with_key("key-creator").await;
    let mut reader = srv.with_key("key-reader").await;
    let mut canceler = srv.with_key("key-canceler").await;
    let mut revealer = srv.with_key("key-revealer").await;
    let mut viewer = srv.with_key("key-viewer").await;

    // sessions:create: StartSession, SubmitIdentity, UploadReference.
    let s = new_session(&mut creator, "scope-1").await;
    assert!(!s.live_mode, "sandbox sessions are not live");
    for other in [&mut reader, &mut canceler] {
        assert_missing_scope(
            other.start_session(juhe_empty("scope-x")).await,
            "sessions:create",
        );
        assert_missing_scope(
            other.submit_identity(submit(&s.id)).await,
            "sessions:create",
        );
        assert_missing_scope(
            other.upload_reference(upload(&s.id)).await,
            "sessions:create",
        );
    }
    creator.submit_identity(submit(&s.id)).await.unwrap();
    let decided = creator
        .upload_reference(upload(&s.id))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&decided), pb::SessionState::Verified);
    assert!(!decided.live_mode);

    // sessions:read: GetResult, StreamStatus.
    for other in [&mut creator, &mut canceler] {
        assert_missing_scope(other.get_result(get(&s.id)).await, "sessions:read");
        assert_missing_scope(other.stream_status(stream(&s.id)).await, "sessions:read");
    }
    let read = reader.get_result(get(&s.id)).await.unwrap().into_inner();
    assert_eq!(read.session.unwrap().id, s.id);
    let mut messages = reader
        .stream_status(stream(&s.id))
        .await
        .unwrap()
        .into_inner();
    let first = messages.next().await.unwrap().unwrap().session.unwrap();
    assert_eq!(state(&first), pb::SessionState::Verified);

    // personal_data:reveal and media:read, on top of sessions:read.
    let reveal = pb::GetResultRequest {
        reveal_personal_data: true,
        ..get(&s.id)
    };
    let face = pb::GetResultRequest {
        include_face_image: true,
        ..get(&s.id)
    };
    let media = pb::GetResultRequest {
        include_media: true,
        ..get(&s.id)
    };
    assert_missing_scope(
        reader.get_result(reveal.clone()).await,
        "personal_data:reveal",
    );
    assert_missing_scope(
        viewer.get_result(reveal.clone()).await,
        "personal_data:reveal",
    );
    revealer.get_result(reveal).await.unwrap();
    for req in [face, media] {
        assert_missing_scope(reader.get_result(req.clone()).await, "media:read");
        assert_missing_scope(revealer.get_result(req.clone()).await, "media:read");
        viewer.get_result(req).await.unwrap();
    }

    // sessions:cancel: CancelSession.
    let open = new_session(&mut admin, "scope-2").await;
    for other in [&mut creator, &mut reader] {
        assert_missing_scope(
            other.cancel_session(cancel(&open.id)).await,
            "sessions:cancel",
        );
    }
    let canceled = canceler
        .cancel_session(cancel(&open.id))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(state(&canceled), pb::SessionState::Canceled);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_credentials_are_unauthenticated() {
    let mut srv = server().await;
    let mut none = keyed_client(srv.running(), None).await;
    let mut wrong = srv.with_key("key-wrong-0123").await;
    assert_unauthenticated(none.start_session(juhe_empty("u-1")).await, "");
    assert_unauthenticated(
        wrong.start_session(juhe_empty("u-1")).await,
        "key-wrong-0123",
    );
    assert_unauthenticated(wrong.get_result(missing_session()).await, "key-wrong-0123");
    assert_unauthenticated(none.stream_status(stream("ses_x")).await, "");
    assert_unauthenticated(none.cancel_session(cancel("ses_x")).await, "");
    // The plain client of the harness sends nothing either.
    assert_unauthenticated(srv.client.get_result(missing_session()).await, "");
    // A key is one caller's, whatever else the request says.
    let mut admin = srv.with_key("key-admin").await;
    let s = new_session(&mut admin, "u-2").await;
    assert_eq!(s.request_id, "u-2");
    // Refusals are counted by reason (metrics are per process: other tests of this binary may add to them).
    let text = reqwest::get(format!("http://{}/metrics", srv.running().http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("facegate_auth_failures_total{reason=\"UNAUTHENTICATED\"} "))
        .expect("refusals are counted")
        .parse()
        .unwrap();
    assert!(refused >= 6.0, "{text}");
    assert!(!text.contains("key-wrong-0123"));
    srv.stop().await;
}

async fn health(running: &facegate::app::Running, key: Option<&str>) -> Result<(), tonic::Status> {
    let bearer = Bearer::new(key);
    let mut client = tonic_health::pb::health_client::HealthClient::with_interceptor(
        channel(running).await,
        bearer,
    );
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: facegate::app::SERVICE_NAME.into(),
        })
        .await
        .map(|_| ())
}

async fn reflection(
    running: &facegate::app::Running,
    key: Option<&str>,
) -> Result<(), tonic::Status> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        server_reflection_request::MessageRequest, ServerReflectionRequest,
    };
    let bearer = Bearer::new(key);
    let mut client = ServerReflectionClient::with_interceptor(channel(running).await, bearer);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    replies.next().await.expect("a reply")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_open_by_default_and_closed_on_request() {
    let mut open = server().await;
    health(open.running(), None).await.unwrap();
    reflection(open.running(), None).await.unwrap();
    open.stop().await;

    let mut closed = Server::start_with_auth(|a| {
        a.callers = vec![caller_config("probe", "ops", &[], "key-probe")];
        a.health_open = false;
        a.reflection_open = false;
    })
    .await;
    assert_unauthenticated(health(closed.running(), None).await, "");
    assert_unauthenticated(reflection(closed.running(), None).await, "");
    assert_unauthenticated(health(closed.running(), Some("key-nope")).await, "key-nope");
    health(closed.running(), Some("key-probe")).await.unwrap();
    reflection(closed.running(), Some("key-probe"))
        .await
        .unwrap();
    closed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_across_tenants_is_not_found() {
    let mut srv = server().await;
    let mut admin = srv.with_key("key-admin").await;
    let mut rival = srv.with_key("key-rival").await;
    let missing = "ses_00000000000000000000000000000000";
    let waiting = new_session(&mut admin, "t-1").await;

    let expected = |r: Result<(), tonic::Status>| r.unwrap_err().message().to_owned();
    let msg_submit = expected(rival.submit_identity(submit(missing)).await.map(|_| ()));
    let msg_upload = expected(rival.upload_reference(upload(missing)).await.map(|_| ()));
    let msg_get = expected(rival.get_result(get(missing)).await.map(|_| ()));
    let msg_stream = expected(rival.stream_status(stream(missing)).await.map(|_| ()));
    let msg_cancel = expected(rival.cancel_session(cancel(missing)).await.map(|_| ()));

    let id = waiting.id.as_str();
    assert_not_found(
        rival.submit_identity(submit(id)).await,
        &msg_submit.replace(missing, id),
    );
    assert_not_found(
        rival.upload_reference(upload(id)).await,
        &msg_upload.replace(missing, id),
    );
    assert_not_found(
        rival.get_result(get(id)).await,
        &msg_get.replace(missing, id),
    );
    let reveal = pb::GetResultRequest {
        reveal_personal_data: true,
        include_face_image: true,
        include_media: true,
        ..get(id)
    };
    assert_not_found(
        rival.get_result(reveal).await,
        &msg_get.replace(missing, id),
    );
    assert_not_found(
        rival.stream_status(stream(id)).await,
        &msg_stream.replace(missing, id),
    );
    assert_not_found(
        rival.cancel_session(cancel(id)).await,
        &msg_cancel.replace(missing, id),
    );

    // A stream opened by its owner meanwhile is unaffected, and the session is unchanged by the attempts.
    let mut mine = admin.stream_status(stream(id)).await.unwrap().into_inner();
    let first = mine.next().await.unwrap().unwrap().session.unwrap();
    assert_eq!(state(&first), pb::SessionState::RequiresInput);
    assert_eq!(first.version, waiting.version);
    drop(mine);

    // Another tenant's request id is another session; the owner's repeat is the same one.
    let theirs = new_session(&mut rival, "t-1").await;
    assert_ne!(theirs.id, waiting.id);
    assert_eq!(theirs.request_id, "t-1");
    let again = new_session(&mut admin, "t-1").await;
    assert_eq!(again.id, waiting.id);
    // Each sees only its own.
    assert_not_found(
        admin.get_result(get(&theirs.id)).await,
        &msg_get.replace(missing, &theirs.id),
    );
    rival.get_result(get(&theirs.id)).await.unwrap();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_callers_the_sandbox_is_anonymous_and_not_live() {
    let mut srv = Server::start().await;
    let s = srv.start_ok(juhe_inline("anon-1", 1)).await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    assert!(!s.live_mode);
    assert!(!srv.result(&s.id).await.live_mode);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_without_callers_outside_the_sandbox_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    let Err(e) = facegate::app::start(config.clone(), facegate::app::Mode::Production).await else {
        panic!("a production start without callers is refused");
    };
    let text = e.to_string();
    assert!(
        text.contains("auth.callers") && text.contains("auth.mode"),
        "{text}"
    );
    config.auth.mode = facegate::config::AuthMode::None;
    let running = facegate::app::start(config, facegate::app::Mode::Production)
        .await
        .unwrap();
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_reads_are_audited_without_the_data() {
    let logs = Captured::default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(logs.clone())
        .with_ansi(false)
        .try_init();
    let mut srv = server().await;
    let mut admin = srv.with_key("key-admin").await;
    let s = admin
        .start_session(juhe_inline("audit-1", 1))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    admin
        .get_result(pb::GetResultRequest {
            reveal_personal_data: true,
            include_face_image: true,
            ..get(&s.id)
        })
        .await
        .unwrap();
    // A masked read is no audit event.
    admin.get_result(get(&s.id)).await.unwrap();
    let text = logs.text();
    let audits: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("unmasked read"))
        .collect();
    assert_eq!(audits.len(), 1, "{text}");
    let line = audits[0];
    for part in [
        "caller=admin",
        "tenant=shop",
        "peer=127.0.0.1:",
        &format!("session_id={}", s.id),
        "kinds=personal_data,face_image",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    for secret in ["测试用户", id_number(1).as_str(), "key-admin"] {
        assert!(!text.contains(secret), "{secret} in the logs");
    }
    // Every line of the call names its caller and tenant.
    let rpc_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("rpc finished"))
        .collect();
    assert!(!rpc_lines.is_empty());
    assert!(rpc_lines
        .iter()
        .all(|l| l.contains("caller=admin") && l.contains("tenant=shop")));
    srv.stop().await;
}
