//! Routing end to end: StartSession with VENDOR_UNSPECIFIED against the real sandbox server, its policies, its
//! per-vendor circuit breakers (fed by the Megvii simulator refusing get_token) and `/metrics`.

mod common;

use std::collections::BTreeMap;

use common::*;
use facegate::config::{RoutingCandidateConfig, RoutingPolicyConfig};
use facegate::domain::Vendor;
use facegate::proto::v1 as pb;
use tonic::Code;

fn policy(candidates: &[(Vendor, u32)]) -> RoutingPolicyConfig {
    RoutingPolicyConfig {
        tenant: "default".into(),
        candidates: candidates
            .iter()
            .map(|(vendor, weight)| RoutingCandidateConfig {
                vendor: *vendor,
                weight: *weight,
            })
            .collect(),
    }
}

async fn server(policies: Vec<RoutingPolicyConfig>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(&dir.path().join("facegate.db"));
    fast_polling(&mut config);
    config.routing.policies = policies;
    Server::start_with(dir, config).await
}

/// A request that leaves the vendor to facegate, with the identity inline (and the images given).
fn routed(request_id: &str, images: Vec<pb::FaceImage>) -> pb::StartSessionRequest {
    pb::StartSessionRequest {
        request_id: request_id.into(),
        vendor: pb::Vendor::Unspecified as i32,
        identity: Some(identity(1)),
        images,
        ..Default::default()
    }
}

fn vendor_of(s: &pb::Session) -> pb::Vendor {
    pb::Vendor::try_from(s.vendor).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_the_sessions_among_the_vendors_that_can_serve_them() {
    let mut srv = server(vec![policy(&[(Vendor::Baidu, 3), (Vendor::Megvii, 1)])]).await;
    let mut count = BTreeMap::new();
    for i in 0..200 {
        let s = srv.start_ok(routed(&format!("w-{i}"), vec![])).await;
        assert_eq!(state(&s), pb::SessionState::AwaitingUser);
        let routing = s.routing.as_ref().expect("a routed session says so");
        assert_eq!(routing.candidates.len(), 2);
        assert_eq!(routing.candidates[0], s.vendor, "the first drawn serves it");
        assert!(routing.failovers.is_empty());
        *count.entry(vendor_of(&s).as_str_name()).or_insert(0u32) += 1;
    }
    // 150 expected, standard deviation 6.1.
    let baidu = count.get("VENDOR_BAIDU").copied().unwrap_or(0);
    assert!((120..=180).contains(&baidu), "{count:?}");
    assert_eq!(
        baidu + count.get("VENDOR_MEGVII").copied().unwrap_or(0),
        200
    );
    // A session that named its vendor has no routing.
    let named = srv.start_ok(megvii_inline("w-named", 1)).await;
    assert!(named.routing.is_none());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_image_routes_to_the_vendor_that_compares_it_and_nothing_fits_is_refused() {
    // No policy: every configured vendor is a candidate; only Juhe takes a probe image now.
    let mut srv = server(vec![]).await;
    let s = srv.start_ok(routed("p-1", vec![probe()])).await;
    assert_eq!(vendor_of(&s), pb::Vendor::Juhe);
    assert_eq!(state(&s), pb::SessionState::Verified);
    assert_eq!(
        s.routing.as_ref().unwrap().candidates,
        vec![pb::Vendor::Juhe as i32]
    );
    // Without the identity and with a probe: Juhe needs both now, Baidu and Megvii take no probe.
    let err = srv
        .client
        .start_session(pb::StartSessionRequest {
            identity: None,
            ..routed("p-2", vec![probe()])
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err).0, "NO_VENDOR_AVAILABLE");
    assert!(err.message().contains("juhe:"), "{}", err.message());
    assert!(!err.message().contains(&id_number(1)));
    // Vendor options keep routing to their vendor.
    let s = srv
        .start_ok(pb::StartSessionRequest {
            vendor_options: Some(pb::start_session_request::VendorOptions::Megvii(
                pb::MegviiOptions::default(),
            )),
            ..routed("p-3", vec![])
        })
        .await;
    assert_eq!(vendor_of(&s), pb::Vendor::Megvii);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_vendor_fails_over_until_its_breaker_opens_and_metrics_show_it() {
    let mut srv = server(vec![policy(&[(Vendor::Megvii, 1000), (Vendor::Baidu, 1)])]).await;
    srv.megvii().inject_concurrency_limit(100);
    let mut failed_over = 0;
    let mut skipped = None;
    for i in 0..40 {
        let s = srv.start_ok(routed(&format!("b-{i}"), vec![])).await;
        // Megvii refused get_token (nothing billed, no page): the session went on with Baidu.
        assert_eq!(vendor_of(&s), pb::Vendor::Baidu, "{i}");
        assert_eq!(state(&s), pb::SessionState::AwaitingUser);
        let routing = s.routing.unwrap();
        if routing.candidates == vec![pb::Vendor::Baidu as i32] {
            skipped = Some(i);
            break;
        }
        if routing.candidates[0] == pb::Vendor::Megvii as i32 {
            assert_eq!(routing.failovers.len(), 1);
            assert_eq!(routing.failovers[0].vendor, pb::Vendor::Megvii as i32);
            assert!(routing.failovers[0].fail_time.is_some());
            failed_over += 1;
        }
    }
    assert_eq!(failed_over, 5, "five failures in a row open the breaker");
    assert!(skipped.is_some(), "then routing skips Megvii");
    let stats = srv.megvii().stats();
    assert_eq!(
        stats.get_token, 5,
        "Megvii was asked five times (each refused), then no more"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", srv.running().http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "facegate_vendor_circuit_state{vendor=\"megvii\",state=\"open\"} 1",
        "facegate_vendor_circuit_state{vendor=\"megvii\",state=\"closed\"} 0",
        "facegate_vendor_circuit_state{vendor=\"baidu\",state=\"closed\"} 1",
        "facegate_vendor_circuit_opened_total{vendor=\"megvii\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in /metrics");
    }
    // A request that names Megvii is still sent there, breaker or not.
    let err = srv
        .client
        .start_session(megvii_inline("b-named", 1))
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::FailedPrecondition, "{err:?}");
    srv.stop().await;
}
