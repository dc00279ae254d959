//! Per-tenant quotas through the real server: the daily billed-call cap (across a restart, and across two replicas
//! on one PostgreSQL database), the RPC rate and open StatusStreams. Until callers authenticate, every request is
//! the default tenant's.

mod common;

use common::pg::PgCluster;
use common::{juhe_empty, juhe_inline, missing_session, reason, sandbox_config, state, Server};
use facegate::config::{Config, QuotaConfig, Secret};
use facegate::proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

fn with_quota(mut config: Config, quota: QuotaConfig) -> Config {
    config.auth.default_quota = quota;
    config
}

fn cap(n: u64) -> QuotaConfig {
    QuotaConfig {
        billed_calls_per_day: n,
        ..QuotaConfig::default()
    }
}

/// Checks a QUOTA_EXCEEDED refusal of `quota` with `limit`; returns its RetryInfo delay.
fn assert_quota_exceeded(
    status: &tonic::Status,
    quota: &str,
    limit: &str,
) -> Option<std::time::Duration> {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let (reason, metadata) = reason(status);
    assert_eq!(reason, "QUOTA_EXCEEDED");
    assert_eq!(metadata["tenant"], "default");
    assert_eq!(metadata["quota"], quota);
    assert_eq!(metadata["limit"], limit);
    let details = status.get_error_details();
    let failure = details.quota_failure().expect("a QuotaFailure");
    assert_eq!(failure.violations.len(), 1);
    assert_eq!(failure.violations[0].subject, "tenant:default");
    assert!(!failure.violations[0].description.is_empty());
    details
        .retry_info()
        .map(|r| r.retry_delay.expect("a delay"))
}

async fn metrics(srv: &Server) -> String {
    let url = format!("http://{}/metrics", srv.running().http_addr);
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn series(text: &str, name: &str, quota: &str) -> Option<f64> {
    let prefix = format!("{name}{{tenant=\"default\",quota=\"{quota}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_cap_refuses_the_vendor_call_and_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_quota(sandbox_config(&dir.path().join("facegate.db")), cap(2));
    let mut srv = Server::start_with(dir, config.clone()).await;
    for i in 0..2 {
        let s = srv.start_ok(juhe_inline(&format!("cap-{i}"), 1)).await;
        assert_eq!(state(&s), pb::SessionState::Verified);
    }
    let replay = srv.start_ok(juhe_inline("cap-0", 1)).await;
    assert_eq!(
        state(&replay),
        pb::SessionState::Verified,
        "a replay is not a new call"
    );

    let refused = srv
        .client
        .start_session(juhe_inline("cap-2", 1))
        .await
        .unwrap_err();
    let retry = assert_quota_exceeded(&refused, "billed_calls_per_day", "2")
        .expect("RetryInfo: the cap resets at the next UTC midnight");
    assert!(retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(86_400));
    assert_eq!(srv.juhe_requests(), 2, "no vendor call over the cap");

    // Inputs given one by one: the one that completes them is refused and the session still waits for it.
    let s = srv.start_ok(juhe_empty("cap-parts")).await;
    srv.client
        .submit_identity(pb::SubmitIdentityRequest {
            session_id: s.id.clone(),
            identity: Some(common::identity(1)),
        })
        .await
        .unwrap();
    let refused = srv
        .client
        .upload_reference(pb::UploadReferenceRequest {
            session_id: s.id.clone(),
            image: Some(common::probe()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(assert_quota_exceeded(&refused, "billed_calls_per_day", "2").is_some());
    let after = srv.result(&s.id).await;
    assert_eq!(state(&after), pb::SessionState::RequiresInput);
    assert_eq!(srv.juhe_requests(), 2);

    let text = metrics(&srv).await;
    let q = "billed_calls_per_day";
    assert_eq!(series(&text, "facegate_quota_limit", q), Some(2.0));
    assert_eq!(series(&text, "facegate_quota_usage", q), Some(2.0));
    assert_eq!(
        series(&text, "facegate_quota_rejections_total", q),
        Some(2.0)
    );
    assert_eq!(
        series(&text, "facegate_quota_limit", "rpc_rate"),
        None,
        "no limit, no limit series"
    );
    assert_eq!(
        series(&text, "facegate_quota_usage", "open_streams"),
        Some(0.0)
    );

    srv.stop().await;
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    let mut again = Server::start_with(dir, config).await;
    let refused = again
        .client
        .start_session(juhe_inline("cap-3", 1))
        .await
        .unwrap_err();
    assert!(assert_quota_exceeded(&refused, "billed_calls_per_day", "2").is_some());
    assert_eq!(
        again.juhe_requests(),
        0,
        "still no vendor call after the restart"
    );
    let text = metrics(&again).await;
    assert_eq!(
        series(&text, "facegate_quota_usage", "billed_calls_per_day"),
        Some(2.0),
        "read from the store"
    );
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cap_billed_calls_are_counted_and_never_refused() {
    let mut srv = Server::start().await;
    for i in 0..3 {
        let s = srv.start_ok(juhe_inline(&format!("free-{i}"), 1)).await;
        assert_eq!(state(&s), pb::SessionState::Verified);
    }
    let text = metrics(&srv).await;
    let q = "billed_calls_per_day";
    assert_eq!(series(&text, "facegate_quota_usage", q), Some(3.0));
    assert_eq!(series(&text, "facegate_quota_limit", q), None);
    assert_eq!(
        series(&text, "facegate_quota_rejections_total", q),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpc_rate_refuses_past_the_burst_and_says_when_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    // One token per 100 s: none comes back while the test runs.
    let quota = QuotaConfig {
        rpc_per_second: 0.01,
        rpc_burst: 2,
        ..QuotaConfig::default()
    };
    let config = with_quota(sandbox_config(&dir.path().join("facegate.db")), quota);
    let mut srv = Server::start_with(dir, config).await;
    for _ in 0..2 {
        let e = srv.client.get_result(missing_session()).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "within the burst");
    }
    let refused = srv.client.get_result(missing_session()).await.unwrap_err();
    let retry = assert_quota_exceeded(&refused, "rpc_rate", "0.01").expect("RetryInfo");
    assert!(
        retry > std::time::Duration::from_secs(50) && retry <= std::time::Duration::from_secs(100)
    );
    let refused = srv
        .client
        .start_session(juhe_inline("rate", 1))
        .await
        .unwrap_err();
    assert!(assert_quota_exceeded(&refused, "rpc_rate", "0.01").is_some());
    assert_eq!(srv.juhe_requests(), 0);
    let text = metrics(&srv).await;
    assert_eq!(
        series(&text, "facegate_quota_limit", "rpc_rate"),
        Some(0.01)
    );
    assert_eq!(
        series(&text, "facegate_quota_rejections_total", "rpc_rate"),
        Some(2.0)
    );
    let in_use = series(&text, "facegate_quota_usage", "rpc_rate").unwrap();
    assert!(in_use > 1.9 && in_use <= 2.0, "{in_use}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_limited_and_a_closed_stream_gives_its_slot_back() {
    let dir = tempfile::tempdir().unwrap();
    let quota = QuotaConfig {
        max_open_streams: 1,
        ..QuotaConfig::default()
    };
    let config = with_quota(sandbox_config(&dir.path().join("facegate.db")), quota);
    let mut srv = Server::start_with(dir, config).await;
    let s = srv.start_ok(juhe_empty("streams")).await;
    let watch = || pb::StreamStatusRequest {
        session_id: s.id.clone(),
    };
    let mut first = srv
        .client
        .stream_status(watch())
        .await
        .unwrap()
        .into_inner();
    let opening = first.message().await.unwrap().unwrap();
    assert_eq!(
        state(&opening.session.unwrap()),
        pb::SessionState::RequiresInput
    );

    let refused = srv.client.stream_status(watch()).await.unwrap_err();
    assert_eq!(
        assert_quota_exceeded(&refused, "open_streams", "1"),
        None,
        "no RetryInfo: waiting does not close a stream"
    );
    assert_eq!(
        series(&metrics(&srv).await, "facegate_quota_usage", "open_streams"),
        Some(1.0)
    );

    // The client goes away: the server drops the stream and its slot is free again.
    drop(first);
    let mut reopened = None;
    for _ in 0..200 {
        match srv.client.stream_status(watch()).await {
            Ok(stream) => {
                reopened = Some(stream.into_inner());
                break;
            }
            Err(e) => {
                assert_quota_exceeded(&e, "open_streams", "1");
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
        }
    }
    let mut second = reopened.expect("the slot came back after the first stream closed");
    // A stream that ends (the session is cancelled, so final) gives its slot back too.
    srv.client
        .cancel_session(pb::CancelSessionRequest {
            session_id: s.id.clone(),
            reason: "done".into(),
        })
        .await
        .unwrap();
    while second.message().await.unwrap().is_some() {}
    let mut third = None;
    for _ in 0..200 {
        match srv.client.stream_status(watch()).await {
            Ok(stream) => {
                third = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    }
    assert!(third.is_some(), "an ended stream gave its slot back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (initdb, pg_ctl); .ci/run installs it"]
async fn two_replicas_on_one_postgresql_database_share_the_daily_cap() {
    let cluster = PgCluster::start();
    let replica = || {
        let dir = tempfile::tempdir().unwrap();
        let mut config = with_quota(sandbox_config(&dir.path().join("facegate.db")), cap(3));
        config.store.database_url = Secret::new(cluster.url("postgres"));
        (dir, config)
    };
    let (dir_a, config_a) = replica();
    let (dir_b, config_b) = replica();
    let mut a = Server::start_with(dir_a, config_a).await;
    let mut b = Server::start_with(dir_b, config_b).await;
    for i in 0..2 {
        let s = a.start_ok(juhe_inline(&format!("a-{i}"), 1)).await;
        assert_eq!(state(&s), pb::SessionState::Verified);
    }
    let s = b.start_ok(juhe_inline("b-0", 1)).await;
    assert_eq!(state(&s), pb::SessionState::Verified);
    for (srv, id) in [(&mut a, "a-over"), (&mut b, "b-over")] {
        let refused = srv
            .client
            .start_session(juhe_inline(id, 1))
            .await
            .unwrap_err();
        assert!(assert_quota_exceeded(&refused, "billed_calls_per_day", "3").is_some());
    }
    assert_eq!(
        a.juhe_requests() + b.juhe_requests(),
        3,
        "three calls in all"
    );
    let text = metrics(&b).await;
    assert_eq!(
        series(&text, "facegate_quota_usage", "billed_calls_per_day"),
        Some(3.0),
        "each replica reads the shared count"
    );
    a.stop().await;
    b.stop().await;
}
