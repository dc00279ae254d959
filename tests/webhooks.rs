//! Outbound webhooks through the real server: every delivery verified by a receiver with the Standard Webhooks
//! reference crate; events in order per session and filtered per endpoint; bodies that carry the session as
//! canonical JSON and no unmasked personal data; a receiver answering 500 for a while getting everything later, in
//! order; a rotated secret verifying during its window and not after; RedeliverWebhook; an endpoint disabled after
//! failing for its whole retry period; ListWebhookDeliveries and the metrics; and (PostgreSQL, ignored by
//! default) two replicas over one database delivering each event once.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::hooks::{expected_types, new_secret, Delivery, Receiver};
use common::*;
use facegate::config::{Config, Secret, WebhookEndpointConfig};
use facegate::proto::v1 as pb;
use tonic::Code;

/// A sandbox config whose one endpoint (all events) is `receiver`, retrying fast.
fn config_with(dir: &tempfile::TempDir, endpoints: Vec<WebhookEndpointConfig>) -> Config {
    let mut c = sandbox_config(&dir.path().join("facegate.db"));
    fast_polling(&mut c);
    c.webhooks.endpoints = endpoints;
    c.webhooks.initial_backoff_ms = 50;
    c.webhooks.max_backoff_secs = 1;
    c.webhooks.poll_interval_ms = 50;
    c
}

fn endpoint(name: &str, url: &str, secret: &str, events: &[&str]) -> WebhookEndpointConfig {
    WebhookEndpointConfig {
        name: name.into(),
        url: url.into(),
        secret: Secret::new(secret),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        ..Default::default()
    }
}

/// The deliveries of each session, in arrival order, as event types.
fn types_by_session(deliveries: &[Delivery]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in deliveries {
        out.entry(d.session_id()).or_default().push(d.event_type());
    }
    out
}

async fn events_of(server: &mut Server, session_id: &str) -> Vec<pb::SessionEvent> {
    server
        .client
        .list_session_events(pb::ListSessionEventsRequest {
            session_id: session_id.into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn deliveries(
    server: &mut Server,
    req: pb::ListWebhookDeliveriesRequest,
) -> Vec<pb::WebhookDelivery> {
    server
        .client
        .list_webhook_deliveries(req)
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

#[tokio::test]
async fn events_arrive_signed_in_order_per_session_and_filtered_per_endpoint() {
    let secret = new_secret();
    let receiver = Receiver::start(std::slice::from_ref(&secret)).await;
    let verified_only_secret = new_secret();
    let verified_only = Receiver::start(std::slice::from_ref(&verified_only_secret)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        &dir,
        vec![
            endpoint("all", &receiver.url, &secret, &[]),
            endpoint(
                "verified-only",
                &verified_only.url,
                &verified_only_secret,
                &["session.verified"],
            ),
        ],
    );
    let mut server = Server::start_with(dir, config).await;

    // A Juhe session decided at once, a Baidu session canceled and redacted, a Juhe session that fails.
    let juhe = server.start_ok(juhe_inline("wh-juhe", 1)).await;
    assert_eq!(state(&juhe), pb::SessionState::Verified);
    let baidu = server.start_ok(baidu_inline("wh-baidu", "", 2)).await;
    server
        .client
        .cancel_session(pb::CancelSessionRequest {
            session_id: baidu.id.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    server
        .client
        .redact_session(pb::RedactSessionRequest {
            session_id: baidu.id.clone(),
        })
        .await
        .unwrap();
    let mut expected = BTreeMap::new();
    for id in [&juhe.id, &baidu.id] {
        let events = events_of(&mut server, id).await;
        expected.insert(id.clone(), expected_types(&events));
    }
    assert_eq!(
        expected[&baidu.id].last().map(String::as_str),
        Some("session.redacted")
    );
    let total: usize = expected.values().map(Vec::len).sum();
    let seen = receiver
        .wait_until(30, |d| {
            d.iter().filter(|d| d.answered == 200).count() >= total
        })
        .await;
    assert_eq!(types_by_session(&seen), expected, "in order, each once");
    let mut ids = BTreeSet::new();
    for d in &seen {
        assert_eq!(d.verified, vec![true], "every delivery verifies: {}", d.raw);
        assert!(ids.insert(d.id.clone()), "one id per event");
        assert!(d.id.starts_with("msg_"));
        assert!(d.body["timestamp"].as_str().unwrap().ends_with('Z'));
        let data = &d.body["data"];
        assert!(data["state"]
            .as_str()
            .unwrap()
            .starts_with("SESSION_STATE_"));
        assert!(data["createTime"].is_string());
        // Masked identity only: the synthetic ID numbers and the name never leave unmasked.
        for sequence in [1, 2] {
            assert!(!d.raw.contains(&id_number(sequence)), "{}", d.raw);
        }
        assert!(!d.raw.contains("测试用户"));
    }
    let juhe_verified = seen
        .iter()
        .find(|d| d.session_id() == juhe.id && d.event_type() == "session.verified")
        .unwrap();
    assert_eq!(
        juhe_verified.body["data"]["state"],
        "SESSION_STATE_VERIFIED"
    );
    assert!(juhe_verified.body["data"]["identity"]["idNumberMasked"]
        .as_str()
        .unwrap()
        .contains('*'));
    let redacted = seen
        .iter()
        .find(|d| d.event_type() == "session.redacted")
        .unwrap();
    assert!(redacted.body["data"]["redaction"].is_object());

    // The filtered endpoint got the verified event only, with the same id as the other endpoint's.
    let only = verified_only.wait_until(30, |d| !d.is_empty()).await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].event_type(), "session.verified");
    assert_eq!(only[0].id, juhe_verified.id);
    assert_eq!(only[0].verified, vec![true]);

    // ListWebhookDeliveries: newest first, filtered, paginated; all delivered at the first attempt. (The receiver
    // has answered; each attempt is recorded right after its answer.)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let all = loop {
        let every = deliveries(&mut server, Default::default()).await;
        if every.len() == total + 1
            && every
                .iter()
                .all(|d| d.status == pb::WebhookDeliveryStatus::Delivered as i32)
        {
            break deliveries(
                &mut server,
                pb::ListWebhookDeliveriesRequest {
                    endpoint: "all".into(),
                    ..Default::default()
                },
            )
            .await;
        }
        assert!(tokio::time::Instant::now() < deadline, "{every:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(all.len(), total);
    for d in &all {
        assert_eq!(
            d.status,
            pb::WebhookDeliveryStatus::Delivered as i32,
            "{d:?}"
        );
        assert_eq!((d.attempts, d.last_response_code), (1, 200));
        assert!(d.deliver_time.is_some() && d.next_attempt_time.is_none());
    }
    let of_juhe = deliveries(
        &mut server,
        pb::ListWebhookDeliveriesRequest {
            session_id: juhe.id.clone(),
            ..Default::default()
        },
    )
    .await;
    let mut listed: Vec<&str> = of_juhe
        .iter()
        .filter(|d| d.endpoint == "all")
        .map(|d| d.event_type.as_str())
        .collect();
    listed.reverse();
    assert_eq!(listed, expected[&juhe.id]);
    let first = server
        .client
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.deliveries.len(), 2);
    let second = server
        .client
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
            page_size: 1000,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.deliveries.len() + second.deliveries.len(), total + 1);
    assert!(second.next_page_token.is_empty());
    // A token is bound to its filter.
    let err = server
        .client
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
            endpoint: "all".into(),
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Metrics: delivered attempts and an empty backlog.
    let text = reqwest::get(format!("http://{}/metrics", server.running().http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!(
            "facegate_webhook_deliveries_total{{endpoint=\"all\",outcome=\"delivered\"}} {total}"
        )),
        "{text}"
    );
    assert!(text.contains("facegate_webhook_pending{endpoint=\"all\"} 0"));
    assert!(text.contains("facegate_webhook_lag_seconds{endpoint=\"verified-only\"} 0"));
    server.stop().await;
}

#[tokio::test]
async fn a_receiver_answering_500_for_a_while_gets_every_event_later_in_order() {
    let secret = new_secret();
    let receiver = Receiver::start(std::slice::from_ref(&secret)).await;
    receiver.fail_next(7);
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&dir, vec![endpoint("shop", &receiver.url, &secret, &[])]);
    let mut server = Server::start_with(dir, config).await;
    let mut expected = BTreeMap::new();
    for i in 0..3u16 {
        let s = server
            .start_ok(juhe_inline(&format!("wh-500-{i}"), 1 + i))
            .await;
        let events = events_of(&mut server, &s.id).await;
        expected.insert(s.id.clone(), expected_types(&events));
    }
    let total: usize = expected.values().map(Vec::len).sum();
    let seen = receiver
        .wait_until(60, |d| {
            d.iter().filter(|d| d.answered == 200).count() >= total
        })
        .await;
    assert!(seen.iter().filter(|d| d.answered == 500).count() == 7);
    // Per session, the acknowledged deliveries are the events in order; a failed one was retried before the next.
    let acknowledged: Vec<Delivery> = seen.iter().filter(|d| d.answered == 200).cloned().collect();
    assert_eq!(types_by_session(&acknowledged), expected);
    for (session, types) in types_by_session(&seen) {
        let mut deduped = types.clone();
        deduped.dedup();
        assert_eq!(
            deduped, expected[&session],
            "retries come before the next event"
        );
    }
    assert!(seen.iter().all(|d| d.verified == vec![true]));
    let listed = deliveries(&mut server, Default::default()).await;
    assert!(listed
        .iter()
        .all(|d| d.status == pb::WebhookDeliveryStatus::Delivered as i32));
    assert!(listed
        .iter()
        .any(|d| d.attempts > 1 && d.last_response_code == 200));
    let text = reqwest::get(format!("http://{}/metrics", server.running().http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("facegate_webhook_deliveries_total{endpoint=\"shop\",outcome=\"failed\"} 7")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_until_its_window_ends() {
    let old = new_secret();
    let new = new_secret();
    let receiver = Receiver::start(&[new.clone(), old.clone()]).await;
    let in_window = |expires: &str| WebhookEndpointConfig {
        previous_secret: Secret::new(old.clone()),
        previous_secret_expires: expires.into(),
        ..endpoint("rotating", &receiver.url, &new, &["session.created"])
    };
    // During the window: two signatures, each verifying with its secret.
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&dir, vec![in_window("2999-01-01T00:00:00Z")]);
    let mut server = Server::start_with(dir, config).await;
    server.start_ok(juhe_inline("wh-rot-1", 1)).await;
    let seen = receiver.wait_until(30, |d| d.len() == 1).await;
    assert_eq!(seen[0].verified, vec![true, true], "{}", seen[0].signature);
    assert_eq!(seen[0].signature.split(' ').count(), 2);
    server.stop().await;
    // After it: the new secret alone signs; a receiver still on the old one refuses.
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&dir, vec![in_window("2020-01-01T00:00:00Z")]);
    let mut server = Server::start_with(dir, config).await;
    server.start_ok(juhe_inline("wh-rot-2", 2)).await;
    let seen = receiver.wait_until(30, |d| d.len() == 2).await;
    assert_eq!(seen[1].verified, vec![true, false]);
    assert_eq!(seen[1].signature.split(' ').count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn redelivery_sends_the_same_event_again_and_refuses_what_it_cannot_send() {
    let secret = new_secret();
    let receiver = Receiver::start(std::slice::from_ref(&secret)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        &dir,
        vec![endpoint(
            "shop",
            &receiver.url,
            &secret,
            &["session.created"],
        )],
    );
    let mut server = Server::start_with(dir, config).await;
    let s = server.start_ok(juhe_inline("wh-redeliver", 1)).await;
    let first = receiver.wait_until(30, |d| d.len() == 1).await;
    let again = server
        .client
        .redeliver_webhook(pb::RedeliverWebhookRequest {
            id: first[0].id.clone(),
            endpoint: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(again.status, pb::WebhookDeliveryStatus::Pending as i32);
    assert_eq!(again.session_id, s.id);
    let both = receiver
        .wait_until(30, |d| d.len() == 2 && d[1].answered == 200)
        .await;
    assert_eq!(
        both[1].id, both[0].id,
        "the same webhook-id: receivers deduplicate"
    );
    assert_eq!(both[1].raw, both[0].raw, "the same body");
    assert_eq!(both[1].verified, vec![true]);
    // The receiver answered; the attempt is recorded right after.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed = deliveries(&mut server, Default::default()).await;
        assert_eq!(listed.len(), 1);
        if listed[0].attempts == 2 {
            assert_eq!(
                listed[0].status,
                pb::WebhookDeliveryStatus::Delivered as i32
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let unknown = server
        .client
        .redeliver_webhook(pb::RedeliverWebhookRequest {
            id: format!("msg_{}", "0".repeat(32)),
            endpoint: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown).0, "WEBHOOK_DELIVERY_NOT_FOUND");
    let malformed = server
        .client
        .redeliver_webhook(pb::RedeliverWebhookRequest {
            id: "https://elsewhere.test/".into(),
            endpoint: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);

    // Redacting the session drops the bodies of what was sent: nothing is left to send again.
    server
        .client
        .redact_session(pb::RedactSessionRequest {
            session_id: s.id.clone(),
        })
        .await
        .unwrap();
    let gone = server
        .client
        .redeliver_webhook(pb::RedeliverWebhookRequest {
            id: first[0].id.clone(),
            endpoint: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::FailedPrecondition);
    assert_eq!(reason(&gone).0, "WEBHOOK_BODY_REDACTED");
    server.stop().await;
}

#[tokio::test]
async fn an_event_pending_at_a_redaction_is_still_sent_and_then_loses_its_body() {
    let secret = new_secret();
    let receiver = Receiver::start(std::slice::from_ref(&secret)).await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        &dir,
        vec![endpoint(
            "shop",
            &receiver.url,
            &secret,
            &["session.created"],
        )],
    );
    let mut server = Server::start_with(dir, config).await;
    let s = server.start_ok(juhe_inline("wh-pending-redact", 1)).await;
    receiver.wait_until(30, |d| !d.is_empty()).await;
    server
        .client
        .redact_session(pb::RedactSessionRequest {
            session_id: s.id.clone(),
        })
        .await
        .unwrap();
    receiver.answer(200);
    let seen = receiver
        .wait_until(30, |d| d.iter().any(|d| d.answered == 200))
        .await;
    let sent = seen.iter().find(|d| d.answered == 200).unwrap();
    assert_eq!(sent.event_type(), "session.created");
    assert_eq!(sent.verified, vec![true]);
    // Once sent, its body is gone: there is nothing to send again.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let err = server
            .client
            .redeliver_webhook(pb::RedeliverWebhookRequest {
                id: sent.id.clone(),
                endpoint: String::new(),
            })
            .await;
        match err {
            Err(e) if reason(&e).0 == "WEBHOOK_BODY_REDACTED" => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "still redeliverable: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_its_whole_retry_period_is_disabled_until_a_redelivery() {
    let secret = new_secret();
    let receiver = Receiver::start(std::slice::from_ref(&secret)).await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with(
        &dir,
        vec![endpoint(
            "flaky",
            &receiver.url,
            &secret,
            &["session.created"],
        )],
    );
    config.webhooks.retry_for_secs = 1;
    config.webhooks.initial_backoff_ms = 100;
    let mut server = Server::start_with(dir, config).await;
    server.start_ok(juhe_inline("wh-off-1", 1)).await;
    // Given up after a second of failures, and the endpoint disabled.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let failed = loop {
        let listed = deliveries(&mut server, Default::default()).await;
        if listed
            .first()
            .is_some_and(|d| d.status == pb::WebhookDeliveryStatus::Failed as i32)
        {
            break listed[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never given up: {listed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(failed.attempts >= 2);
    assert_eq!(
        (failed.last_response_code, failed.last_error.as_str()),
        (503, "HTTP_STATUS")
    );
    // A disabled endpoint gets nothing new (its events wait).
    server.start_ok(juhe_inline("wh-off-2", 2)).await;
    let attempts = receiver.deliveries().len();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        receiver.deliveries().len(),
        attempts,
        "no attempt while disabled"
    );
    let waiting = deliveries(
        &mut server,
        pb::ListWebhookDeliveriesRequest {
            status: pb::WebhookDeliveryStatus::Pending as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].attempts, 0);
    // Redelivering enables it: the given-up event and the waiting one both arrive.
    receiver.answer(200);
    server
        .client
        .redeliver_webhook(pb::RedeliverWebhookRequest {
            id: failed.id.clone(),
            endpoint: "flaky".into(),
        })
        .await
        .unwrap();
    let seen = receiver
        .wait_until(30, |d| d.iter().filter(|d| d.answered == 200).count() == 2)
        .await;
    let ok: BTreeSet<String> = seen
        .iter()
        .filter(|d| d.answered == 200)
        .map(|d| d.id.clone())
        .collect();
    assert!(ok.contains(&failed.id) && ok.contains(&waiting[0].id));
    server.stop().await;
}

#[tokio::test]
async fn callers_see_their_own_tenants_deliveries_and_need_the_webhook_scopes() {
    let secret = new_secret();
    let receiver = Receiver::start(std::slice::from_ref(&secret)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with(&dir, vec![]);
    config.auth.callers = vec![
        caller_config(
            "shop",
            "shop",
            &["sessions:create", "webhooks:read", "webhooks:redeliver"],
            "shop-key",
        ),
        caller_config(
            "bank",
            "bank",
            &["sessions:create", "webhooks:read"],
            "bank-key",
        ),
    ];
    config.webhooks.endpoints = vec![WebhookEndpointConfig {
        tenant: "shop".into(),
        ..endpoint("shop-hook", &receiver.url, &secret, &["session.created"])
    }];
    let server = Server::start_with(dir, config).await;
    let mut shop = server.with_key("shop-key").await;
    let mut bank = server.with_key("bank-key").await;
    shop.start_session(juhe_inline("wh-t-1", 1)).await.unwrap();
    bank.start_session(juhe_inline("wh-t-2", 2)).await.unwrap();
    let seen = receiver.wait_until(30, |d| !d.is_empty()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        receiver.deliveries().len(),
        1,
        "only the shop tenant has an endpoint"
    );
    let listed = shop
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(listed.len(), 1);
    let none = bank
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert!(
        none.is_empty(),
        "another tenant's deliveries do not exist for bank"
    );
    let refused = bank
        .redeliver_webhook(pb::RedeliverWebhookRequest {
            id: seen[0].id.clone(),
            endpoint: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused).1["scope"], "webhooks:redeliver");
}

#[tokio::test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl); CI runs it with --run-ignored"]
async fn two_postgres_replicas_deliver_each_event_once() {
    let cluster = pg::PgCluster::start();
    let secret = new_secret();
    let receiver = Receiver::start(std::slice::from_ref(&secret)).await;
    let key = test_key("k1");
    let replica = |dir: &tempfile::TempDir| {
        let mut c = config_with(dir, vec![endpoint("shop", &receiver.url, &secret, &[])]);
        c.store.database_url = Secret::new(cluster.url("postgres"));
        c.store.encryption_keys = vec![key.clone()];
        c
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config_a = replica(&dir_a);
    let config_b = replica(&dir_b);
    let mut a = Server::start_with(dir_a, config_a).await;
    let mut b = Server::start_with(dir_b, config_b).await;
    let mut expected = BTreeMap::new();
    for i in 0..12u16 {
        let server = if i % 2 == 0 { &mut a } else { &mut b };
        let s = server
            .start_ok(juhe_inline(&format!("wh-pg-{i}"), 1 + i))
            .await;
        let events = events_of(server, &s.id).await;
        expected.insert(s.id.clone(), expected_types(&events));
    }
    let total: usize = expected.values().map(Vec::len).sum();
    receiver
        .wait_until(60, |d| {
            d.iter().filter(|d| d.answered == 200).count() >= total
        })
        .await;
    // Both replicas polled meanwhile; give a duplicate the time to show up.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let seen = receiver.deliveries();
    assert_eq!(
        seen.len(),
        total,
        "each event once, no replica sent one twice"
    );
    let ids: BTreeSet<&str> = seen.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), total);
    assert_eq!(types_by_session(&seen), expected);
    assert!(seen.iter().all(|d| d.verified == vec![true]));
    a.stop().await;
    b.stop().await;
}
