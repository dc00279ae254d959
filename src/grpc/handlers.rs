//! `facegate.v1.VerificationService`: validate, call the domain, convert.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::auth::{caller, peer_of, require};
use super::convert;
use super::error::{status, to_status};
use crate::domain::caller::{Caller, Scope};
use crate::domain::service::SessionService;
use crate::domain::{Error, Session};
use crate::proto::v1 as pb;
use crate::proto::v1::verification_service_server::VerificationService;

/// The gRPC service.
#[derive(Clone)]
pub struct VerificationApi {
    service: Arc<SessionService>,
    request_timeout: Duration,
}

impl VerificationApi {
    /// The domain service.
    #[cfg(feature = "sandbox")]
    pub(super) fn service(&self) -> &Arc<SessionService> {
        &self.service
    }

    /// Wraps the domain service; unary calls get `request_timeout`.
    pub fn new(service: Arc<SessionService>, request_timeout: Duration) -> Self {
        Self {
            service,
            request_timeout,
        }
    }

    /// The time a unary call has: `grpc.request_timeout_secs`, or less when the caller's `grpc-timeout` says so.
    /// The answer to a caller's deadline leaves a little before it (a tenth of it, at most 500 ms), so that it is
    /// this DEADLINE_EXCEEDED with its ErrorInfo that arrives in time, not the transport's bare cancellation.
    pub(super) fn budget<T>(&self, request: &Request<T>) -> Budget {
        let caller = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        match caller {
            Some(t) if t < self.request_timeout => Budget {
                time: t.saturating_sub((t / 10).min(Duration::from_millis(500))),
                callers: true,
            },
            _ => Budget {
                time: self.request_timeout,
                callers: false,
            },
        }
    }

    /// Runs a unary call under the request deadline. A vendor call already started goes on in its own task and its
    /// outcome is stored, so a timed-out caller can read it with GetResult.
    pub(super) async fn unary<T, F>(
        &self,
        method: &'static str,
        budget: Budget,
        fut: F,
    ) -> Result<Response<T>, Status>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        // Boxed: a handler's future (StartSession's is several KiB) is then not copied again into the timeout.
        let result = match tokio::time::timeout(budget.time, Box::pin(fut)).await {
            Ok(r) => r.map_err(|e| to_status(&e)),
            Err(_) => Err(status(
                tonic::Code::DeadlineExceeded,
                "REQUEST_TIMEOUT",
                if budget.callers {
                    format!("{method} did not finish within the caller's deadline")
                } else {
                    format!(
                        "{method} did not finish within {} s",
                        self.request_timeout.as_secs()
                    )
                },
                Default::default(),
                Some(Duration::from_secs(1)),
                vec![],
            )),
        };
        // The outcome of every call is logged, traced and counted around the service (`super::observe`).
        result.map(Response::new)
    }
}

/// How long a unary call may run, and whether the caller's deadline set it.
pub(super) struct Budget {
    time: Duration,
    callers: bool,
}

/// A `grpc-timeout` header value: at most 8 digits and a unit (H, M, S, m, u, n), as the gRPC HTTP/2 protocol says.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = value.get(..value.len() - unit.len_utf8())?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.saturating_mul(3600)),
        'M' => Duration::from_secs(n.saturating_mul(60)),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

impl VerificationApi {
    /// The authenticated caller of a request, once it has taken a token of its tenant's RPC rate quota.
    pub(super) fn admit<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = caller(request)?;
        self.service
            .quotas()
            .check_rpc(&caller.tenant)
            .map_err(|e| to_status(&e))?;
        Ok(caller)
    }
}

/// The audit trail of an unmasked read: who (caller, tenant, peer address) read which kinds of data of which
/// session. Never the data itself.
fn audit_unmasked_read(
    caller: &crate::domain::caller::Caller,
    peer: Option<std::net::SocketAddr>,
    session_id: &str,
    extras: &crate::domain::ExtrasRequest,
) -> Vec<&'static str> {
    let kinds: Vec<&'static str> = [
        (extras.reveal_personal_data, "personal_data"),
        (extras.face_image, "face_image"),
        (extras.media, "media"),
    ]
    .into_iter()
    .filter_map(|(asked, kind)| asked.then_some(kind))
    .collect();
    if kinds.is_empty() {
        return kinds;
    }
    for kind in &kinds {
        crate::metrics::global().unmasked_read(&caller.tenant, &caller.id, kind);
    }
    let peer = peer.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(audit = "unmasked_read", caller = %caller.id, tenant = %caller.tenant, peer = %peer,
        session_id = %session_id, kinds = %kinds.join(","), "unmasked read");
    kinds
}

fn with_session<T>(s: Session, f: impl FnOnce(pb::Session) -> T) -> T {
    f(convert::session(&s))
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::StreamStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VerificationService for VerificationApi {
    async fn start_session(
        &self,
        request: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::StartSessionResponse>, Status> {
        let caller = self.admit(&request)?;
        crate::grpc::observe::record_idempotency_key(&request.get_ref().request_id);
        let svc = Arc::clone(&self.service);
        self.unary("StartSession", self.budget(&request), async move {
            let req = convert::start_request(request.get_ref())?;
            let s = svc.start(&caller, req).await?;
            Ok(with_session(s, |session| pb::StartSessionResponse {
                session: Some(session),
            }))
        })
        .await
    }

    async fn submit_identity(
        &self,
        request: Request<pb::SubmitIdentityRequest>,
    ) -> Result<Response<pb::SubmitIdentityResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        self.unary("SubmitIdentity", self.budget(&request), async move {
            let (id, identity) = convert::submit_identity(request.get_ref())?;
            let s = svc.submit_identity(&caller, &id, identity).await?;
            Ok(with_session(s, |session| pb::SubmitIdentityResponse {
                session: Some(session),
            }))
        })
        .await
    }

    async fn upload_reference(
        &self,
        request: Request<pb::UploadReferenceRequest>,
    ) -> Result<Response<pb::UploadReferenceResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        self.unary("UploadReference", self.budget(&request), async move {
            let (id, image) = convert::upload(request.get_ref())?;
            let s = svc.upload_image(&caller, &id, image).await?;
            Ok(with_session(s, |session| pb::UploadReferenceResponse {
                session: Some(session),
            }))
        })
        .await
    }

    async fn get_result(
        &self,
        request: Request<pb::GetResultRequest>,
    ) -> Result<Response<pb::GetResultResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        let req = request.get_ref();
        if req.reveal_personal_data {
            require(&request, &caller, Scope::PersonalDataReveal, "GetResult")?;
        }
        if req.include_face_image || req.include_media {
            require(&request, &caller, Scope::MediaRead, "GetResult")?;
        }
        let peer = peer_of(&request);
        self.unary("GetResult", self.budget(&request), async move {
            let req = request.get_ref();
            let id = convert::session_id("session_id", &req.session_id)?;
            let extras = crate::domain::ExtrasRequest {
                reveal_personal_data: req.reveal_personal_data,
                face_image: req.include_face_image,
                media: req.include_media,
            };
            let (s, fetched) = svc.result(&caller, &id, extras).await?;
            let kinds = audit_unmasked_read(&caller, peer, &s.id, &extras);
            if !kinds.is_empty() {
                svc.record_unmasked_read(&caller, &s.id, &kinds).await?;
            }
            let summary = svc.events_summary(&s.id).await?;
            Ok(pb::GetResultResponse {
                outcome: Some(convert::outcome(&s, &fetched)),
                session: Some(convert::session(&s)),
                events_summary: Some(convert::events_summary(&summary)),
            })
        })
        .await
    }

    type StreamStatusStream = StatusStream;

    async fn stream_status(
        &self,
        request: Request<pb::StreamStatusRequest>,
    ) -> Result<Response<Self::StreamStatusStream>, Status> {
        let caller = self.admit(&request)?;
        let id = convert::session_id("session_id", &request.get_ref().session_id)
            .map_err(|e| to_status(&e))?;
        // The stream holds a slot of its tenant's open_streams quota until it is dropped: when it ends, fails or
        // its client goes away.
        let slot = self
            .service
            .quotas()
            .open_stream(&caller.tenant)
            .map_err(|e| to_status(&e))?;
        let changes = self
            .service
            .watch(&caller, &id)
            .await
            .map_err(|e| to_status(&e))?;
        // Each message is converted only when the stream yields it, and tonic encodes it at once.
        let stream = changes.map(move |item| {
            let _held = &slot;
            item.map(|s| pb::StreamStatusResponse {
                session: Some(convert::session(&s)),
            })
            .map_err(|e| to_status(&e))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_session(
        &self,
        request: Request<pb::CancelSessionRequest>,
    ) -> Result<Response<pb::CancelSessionResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        self.unary("CancelSession", self.budget(&request), async move {
            let (id, reason) = convert::cancel(request.get_ref())?;
            let s = svc.cancel(&caller, &id, reason).await?;
            Ok(with_session(s, |session| pb::CancelSessionResponse {
                session: Some(session),
            }))
        })
        .await
    }

    async fn list_session_events(
        &self,
        request: Request<pb::ListSessionEventsRequest>,
    ) -> Result<Response<pb::ListSessionEventsResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        self.unary("ListSessionEvents", self.budget(&request), async move {
            let req = request.get_ref();
            let id = convert::session_id("session_id", &req.session_id)?;
            let (events, next_page_token) = svc
                .list_events(&caller, &id, req.page_size, &req.page_token)
                .await?;
            Ok(pb::ListSessionEventsResponse {
                events: events.iter().map(convert::session_event).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        self.unary("ListWebhookDeliveries", self.budget(&request), async move {
            let req = request.get_ref();
            let filter = convert::delivery_filter(req)?;
            let (deliveries, next_page_token) = svc
                .list_webhook_deliveries(&caller, &filter, req.page_size, &req.page_token)
                .await?;
            Ok(pb::ListWebhookDeliveriesResponse {
                deliveries: deliveries.iter().map(convert::webhook_delivery).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn redeliver_webhook(
        &self,
        request: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::RedeliverWebhookResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        self.unary("RedeliverWebhook", self.budget(&request), async move {
            let req = request.get_ref();
            let (id, endpoint) = convert::redeliver_request(req)?;
            let delivery = svc.redeliver_webhook(&caller, &id, &endpoint).await?;
            Ok(pb::RedeliverWebhookResponse {
                delivery: Some(convert::webhook_delivery(&delivery)),
            })
        })
        .await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        self.unary("ListSessions", self.budget(&request), async move {
            let req = convert::list_request(request.get_ref())?;
            let (sessions, next_page_token) = svc.list(&caller, &req).await?;
            Ok(pb::ListSessionsResponse {
                sessions: sessions.iter().map(convert::listed_session).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn redact_session(
        &self,
        request: Request<pb::RedactSessionRequest>,
    ) -> Result<Response<pb::RedactSessionResponse>, Status> {
        let caller = self.admit(&request)?;
        let svc = Arc::clone(&self.service);
        self.unary("RedactSession", self.budget(&request), async move {
            let id = convert::session_id("session_id", &request.get_ref().session_id)?;
            let s = svc.redact(&caller, &id).await?;
            Ok(with_session(s, |session| pb::RedactSessionResponse {
                session: Some(session),
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values_parse_strictly() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            "",
            "S",
            "1",
            "123456789S",
            "1s",
            "-1S",
            "1.5S",
            "１S",
            "1SS",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
