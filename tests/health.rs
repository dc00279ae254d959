//! Liveness and readiness: gRPC health (`""` liveness, `facegate.v1.VerificationService` readiness) and the HTTP
//! endpoints (`/healthz`, `/readyz`) agree; readiness fails while the store is unreachable (PostgreSQL stopped) or
//! when no vendor is configured; `/healthz` answers 503 once a shutdown began; with `http.admin_listen` the
//! operations paths leave the public listener.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::pg::PgCluster;
use common::*;
use facegate::app::Mode;
use facegate::config::Secret;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SERVICE: &str = "facegate.v1.VerificationService";

/// What one look at both protocols shows.
#[derive(Debug, PartialEq)]
struct Seen {
    grpc_overall: i32,
    grpc_ready: i32,
    healthz: u16,
    readyz: u16,
    readyz_text: String,
}

async fn look(grpc: SocketAddr, ops: SocketAddr) -> Seen {
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut status = Vec::new();
    for service in ["", SERVICE] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        status.push(health.check(request).await.unwrap().into_inner().status);
    }
    let healthz = reqwest::get(format!("http://{ops}/healthz"))
        .await
        .unwrap()
        .status()
        .as_u16();
    let readyz = reqwest::get(format!("http://{ops}/readyz")).await.unwrap();
    Seen {
        grpc_overall: status[0],
        grpc_ready: status[1],
        healthz,
        readyz: readyz.status().as_u16(),
        readyz_text: readyz.text().await.unwrap(),
    }
}

/// Looks until `want` holds (the state changes in the background), at most 60 s; returns the last look.
async fn look_until(grpc: SocketAddr, ops: SocketAddr, want: impl Fn(&Seen) -> bool) -> Seen {
    let mut last = look(grpc, ops).await;
    for _ in 0..600 {
        if want(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = look(grpc, ops).await;
    }
    panic!("health never reached the expected state; last seen {last:?}");
}

fn serving(s: &Seen) -> bool {
    s.grpc_ready == ServingStatus::Serving as i32 && s.readyz == 200
}

fn with_admin(c: &mut facegate::config::Config) {
    c.http.admin_listen = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn the_admin_listener_takes_the_operations_paths_off_the_public_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    with_admin(&mut config);
    let mut srv = Server::start_with(dir, config).await;
    let r = srv.running();
    let admin = r.admin_addr.expect("the admin listener is bound");
    assert_ne!(admin, r.http_addr);
    let seen = look(r.grpc_addr, admin).await;
    assert_eq!(
        seen,
        Seen {
            grpc_overall: ServingStatus::Serving as i32,
            grpc_ready: ServingStatus::Serving as i32,
            healthz: 200,
            readyz: 200,
            readyz_text: "ready\n".into(),
        }
    );
    let get = |addr: SocketAddr, path: &str| {
        let url = format!("http://{addr}{path}");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(get(admin, "/metrics").await, 200);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            get(r.http_addr, path).await,
            404,
            "{path} is not on the public listener"
        );
    }
    // The public paths stay on the public listener (the notify route takes only POST: 405 to a GET) and are
    // not on the admin listener.
    let notify = "/v1/callbacks/megvii/notify";
    assert_eq!(get(r.http_addr, notify).await, 405);
    assert_eq!(get(admin, notify).await, 404);
    srv.stop().await;
}

#[tokio::test]
async fn no_vendor_configured_is_not_ready_but_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    live_unauthenticated(&mut config);
    with_admin(&mut config);
    let mut srv = Server::start_mode(dir, config, Mode::Production).await;
    let r = srv.running();
    let seen = look(r.grpc_addr, r.admin_addr.unwrap()).await;
    assert_eq!(
        seen,
        Seen {
            grpc_overall: ServingStatus::Serving as i32,
            grpc_ready: ServingStatus::NotServing as i32,
            healthz: 200,
            readyz: 503,
            readyz_text: "not ready: no vendor configured\n".into(),
        }
    );
    srv.stop().await;
}

#[tokio::test]
async fn healthz_answers_503_once_draining_begins() {
    // Without an admin listener the operations paths are on the HTTP listener, as before.
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.grpc.drain_delay_secs = 3;
    let mut srv = Server::start_with(dir, config).await;
    let running = srv.running.take().unwrap();
    let (grpc, http) = (running.grpc_addr, running.http_addr);
    assert!(serving(&look(grpc, http).await));
    running.shutdown_handle().send(true).unwrap();
    let seen = look_until(grpc, http, |s| {
        s.healthz == 503 && s.grpc_overall == ServingStatus::NotServing as i32
    })
    .await;
    assert_eq!(
        seen,
        Seen {
            grpc_overall: ServingStatus::NotServing as i32,
            grpc_ready: ServingStatus::NotServing as i32,
            healthz: 503,
            readyz: 503,
            readyz_text: "not ready: draining\n".into(),
        },
        "gRPC and HTTP agree while draining"
    );
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (initdb, pg_ctl); .ci/run installs it"]
async fn readiness_follows_the_store_going_away_and_coming_back() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    config.store.database_url = Secret::new(cluster.url("postgres"));
    config.health.store_check_interval_ms = 200;
    config.health.store_check_timeout_ms = 1_000;
    with_admin(&mut config);
    let mut srv = Server::start_with(dir, config).await;
    let (grpc, admin) = (srv.running().grpc_addr, srv.running().admin_addr.unwrap());
    assert!(serving(&look(grpc, admin).await));

    cluster.stop();
    // Both protocols follow one state; the gRPC statuses are set a moment after it changes.
    let down = look_until(grpc, admin, |s| {
        s.readyz == 503 && s.grpc_ready == ServingStatus::NotServing as i32
    })
    .await;
    assert_eq!(
        down,
        Seen {
            grpc_overall: ServingStatus::Serving as i32,
            grpc_ready: ServingStatus::NotServing as i32,
            healthz: 200,
            readyz: 503,
            readyz_text: "not ready: store unreachable\n".into(),
        },
        "liveness stays up, readiness is down on both protocols"
    );

    cluster.start_again();
    let up = look_until(grpc, admin, serving).await;
    assert_eq!(up.grpc_overall, ServingStatus::Serving as i32);
    assert_eq!(up.healthz, 200);
    assert_eq!(up.readyz_text, "ready\n");
    // And the service works again.
    srv.start_ok(juhe_inline("after-the-store-returned", 1))
        .await;
    srv.stop().await;
}
