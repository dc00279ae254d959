//! ListSessions through the generated client: filters (state, vendor, client_reference_id, create-time range),
//! keyset pagination with no duplicates or gaps while sessions are created meanwhile, the page size's default and
//! maximum, tenant isolation, refused page tokens (altered, another tenant's, other filters), no personal data in
//! listed sessions, and the scope.

mod common;

use std::collections::HashSet;

use common::*;
use facegate::proto::v1 as pb;
use prost::Message;
use tonic::Code;

const LISTER: &str = "key-lister";
const CREATOR: &str = "key-creator";
const RIVAL: &str = "key-rival";

async fn server() -> Server {
    Server::start_with_callers(vec![
        caller_config(
            "lister",
            "shop",
            &["sessions:create", "sessions:read", "sessions:list"],
            LISTER,
        ),
        caller_config("creator", "shop", &["sessions:create"], CREATOR),
        caller_config(
            "rival",
            "other",
            &["sessions:create", "sessions:list"],
            RIVAL,
        ),
    ])
    .await
}

fn assert_invalid_token(result: Result<impl std::fmt::Debug, tonic::Status>) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status).0, "INVALID_REQUEST");
    let details = tonic_types::StatusExt::get_error_details(&status);
    let bad = details.bad_request().expect("field violations");
    assert_eq!(bad.field_violations[0].field, "page_token");
}

fn ids(response: &pb::ListSessionsResponse) -> Vec<String> {
    response.sessions.iter().map(|s| s.id.clone()).collect()
}

fn with_reference(
    mut request: pb::StartSessionRequest,
    reference: &str,
) -> pb::StartSessionRequest {
    request.client_reference_id = reference.into();
    request.metadata.insert("channel".into(), "kiosk".into());
    request
}

/// Starts sessions of tenant `shop`: 4 waiting for input (reference `ref-a`) and 3 final inline Juhe ones
/// (reference `ref-b`); returns their ids, newest first as ListSessions orders them.
async fn fill(client: &mut KeyedClient) -> Vec<pb::Session> {
    let mut made = Vec::new();
    for i in 0..4 {
        let request = with_reference(juhe_empty(&format!("empty-{i}")), "ref-a");
        made.push(
            client
                .start_session(request)
                .await
                .unwrap()
                .into_inner()
                .session
                .unwrap(),
        );
    }
    for i in 0..3 {
        let request = with_reference(juhe_inline(&format!("inline-{i}"), 40 + i), "ref-b");
        made.push(
            client
                .start_session(request)
                .await
                .unwrap()
                .into_inner()
                .session
                .unwrap(),
        );
    }
    made.sort_by(|a, b| {
        let key = |s: &pb::Session| {
            let t = s.create_time.unwrap();
            (t.seconds, t.nanos, s.id.clone())
        };
        key(b).cmp(&key(a))
    });
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_the_tenants_sessions_newest_first() {
    let mut srv = server().await;
    let mut client = keyed_client(srv.running(), Some(LISTER)).await;
    let made = fill(&mut client).await;
    let all = client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ids(&all),
        made.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
    );
    assert!(all.next_page_token.is_empty(), "one page holds them all");

    let waiting = client
        .list_sessions(pb::ListSessionsRequest {
            state: pb::SessionState::RequiresInput as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let want: Vec<String> = made
        .iter()
        .filter(|s| state(s) == pb::SessionState::RequiresInput)
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(want.len(), 4);
    assert_eq!(ids(&waiting), want);

    let juhe = client
        .list_sessions(pb::ListSessionsRequest {
            vendor: pb::Vendor::Juhe as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(juhe.sessions.len(), 7);
    let baidu = client
        .list_sessions(pb::ListSessionsRequest {
            vendor: pb::Vendor::Baidu as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(baidu.sessions.is_empty());

    let by_reference = client
        .list_sessions(pb::ListSessionsRequest {
            client_reference_id: "ref-b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let want: Vec<String> = made
        .iter()
        .filter(|s| s.client_reference_id == "ref-b")
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(want.len(), 3);
    assert_eq!(ids(&by_reference), want);

    // Time range: [oldest, newest) leaves the newest out; [newest, unbounded) keeps it (and its ties).
    let oldest = made.last().unwrap().create_time;
    let newest = made.first().unwrap().create_time;
    let range = client
        .list_sessions(pb::ListSessionsRequest {
            create_time_start: oldest,
            create_time_end: newest,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let want: Vec<String> = made
        .iter()
        .filter(|s| s.create_time != newest)
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(ids(&range), want);
    let from_newest = client
        .list_sessions(pb::ListSessionsRequest {
            create_time_start: newest,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let want: Vec<String> = made
        .iter()
        .filter(|s| s.create_time == newest)
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(ids(&from_newest), want);

    // Another tenant sees none of them, with or without filters.
    let mut rival = keyed_client(srv.running(), Some(RIVAL)).await;
    let theirs = rival
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.sessions.is_empty());
    let theirs = rival
        .list_sessions(pb::ListSessionsRequest {
            client_reference_id: "ref-a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.sessions.is_empty());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_have_no_duplicates_or_gaps_while_sessions_are_created() {
    let mut srv = server().await;
    let mut client = keyed_client(srv.running(), Some(LISTER)).await;
    let made = fill(&mut client).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_sessions(pb::ListSessionsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.sessions.len() <= 2);
        seen.extend(ids(&page));
        // New sessions (newer than every listed one) do not shift later pages.
        client
            .start_session(juhe_empty(&format!("meanwhile-{pages}")))
            .await
            .unwrap();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 4, "7 sessions in pages of 2");
    assert_eq!(seen, made.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_bound_to_tenant_filters_and_contents() {
    let mut srv = server().await;
    let mut client = keyed_client(srv.running(), Some(LISTER)).await;
    fill(&mut client).await;
    let first = client
        .list_sessions(pb::ListSessionsRequest {
            page_size: 2,
            state: pb::SessionState::RequiresInput as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    // The same filters continue, a different page size too (AIP-158).
    let next = client
        .list_sessions(pb::ListSessionsRequest {
            page_size: 5,
            page_token: token.clone(),
            state: pb::SessionState::RequiresInput as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.sessions.len(), 2);
    // Other filters: refused.
    for other in [
        pb::ListSessionsRequest {
            page_token: token.clone(),
            ..Default::default()
        },
        pb::ListSessionsRequest {
            page_token: token.clone(),
            state: pb::SessionState::RequiresInput as i32,
            vendor: pb::Vendor::Juhe as i32,
            ..Default::default()
        },
        pb::ListSessionsRequest {
            page_token: token.clone(),
            state: pb::SessionState::RequiresInput as i32,
            client_reference_id: "ref-a".into(),
            ..Default::default()
        },
        pb::ListSessionsRequest {
            page_token: token.clone(),
            state: pb::SessionState::RequiresInput as i32,
            create_time_start: Some(prost_types::Timestamp::default()),
            ..Default::default()
        },
    ] {
        assert_invalid_token(client.list_sessions(other).await);
    }
    // Altered: every character changed in turn to another base64url character.
    let same = |t: &str| pb::ListSessionsRequest {
        page_token: t.to_owned(),
        state: pb::SessionState::RequiresInput as i32,
        ..Default::default()
    };
    for i in (0..token.len()).step_by(7) {
        let mut altered = token.clone().into_bytes();
        altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_invalid_token(client.list_sessions(same(&altered)).await);
    }
    assert_invalid_token(client.list_sessions(same(&token[..token.len() - 4])).await);
    assert_invalid_token(client.list_sessions(same("not a token")).await);
    // Another tenant, same filters: refused.
    let mut rival = keyed_client(srv.running(), Some(RIVAL)).await;
    assert_invalid_token(rival.list_sessions(same(&token)).await);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_sessions_carry_no_personal_data() {
    let mut srv = server().await;
    let mut client = keyed_client(srv.running(), Some(LISTER)).await;
    let made = fill(&mut client).await;
    let listed = client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), made.len());
    let mut masked = Vec::new();
    for (session, full) in listed.sessions.iter().zip(&made) {
        if let Some(identity) = &full.identity {
            masked.push(identity.name_masked.clone());
            masked.push(identity.id_number_masked.clone());
        }
        assert_eq!(session.identity, None);
        assert!(session.user_url.is_empty() && session.user_url_expire_time.is_none());
        assert_eq!(session.last_attempt_error, None);
        assert!(session.cancel_reason.is_empty());
        if let Some(f) = &session.failure {
            assert!(f.vendor_code.is_empty() && f.vendor_message.is_empty());
        }
        // What a listed session does carry.
        assert_eq!(session.id, full.id);
        assert_eq!(session.state, full.state);
        assert_eq!(session.vendor, full.vendor);
        assert_eq!(session.create_time, full.create_time);
        assert_eq!(session.client_reference_id, full.client_reference_id);
        assert_eq!(session.metadata, full.metadata);
        assert_eq!(session.request_id, full.request_id);
        assert_eq!(session.live_mode, full.live_mode);
    }
    assert!(
        !masked.is_empty(),
        "the full sessions had (masked) identities"
    );
    let bytes = listed.encode_to_vec();
    let text = String::from_utf8_lossy(&bytes);
    for i in 0..3 {
        assert!(!text.contains(&id_number(40 + i)));
    }
    assert!(!text.contains('测'), "no part of the name");
    for m in &masked {
        assert!(!text.contains(m.as_str()), "no masked identity");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_has_a_default_and_a_maximum() {
    let mut srv = server().await;
    let mut client = keyed_client(srv.running(), Some(LISTER)).await;
    for i in 0..501 {
        client
            .start_session(juhe_empty(&format!("many-{i}")))
            .await
            .unwrap();
    }
    let default = client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.sessions.len(), 50);
    assert!(!default.next_page_token.is_empty());
    let most = client
        .list_sessions(pb::ListSessionsRequest {
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(most.sessions.len(), 500);
    let rest = client
        .list_sessions(pb::ListSessionsRequest {
            page_size: 500,
            page_token: most.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.sessions.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let negative = client
        .list_sessions(pb::ListSessionsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_needs_the_sessions_list_scope() {
    let mut srv = server().await;
    let mut creator = keyed_client(srv.running(), Some(CREATOR)).await;
    let status = creator
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let (reason, metadata) = reason(&status);
    assert_eq!(reason, "MISSING_SCOPE");
    assert_eq!(
        metadata.get("scope").map(String::as_str),
        Some("sessions:list")
    );
    srv.stop().await;
}
