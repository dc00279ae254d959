//! Outbound webhooks (README "Webhooks"): session events pushed to each tenant's configured endpoints, signed as
//! the Standard Webhooks specification says, so receivers verify them with its libraries in any language.
//!
//! - [`Outbox`] is the store's [`OutboxSource`]: every create and update whose events include a state change or a
//!   redaction gets one message per subscribed endpoint, written in the same transaction (a crash loses none).
//!   The body is the session in the proto's canonical JSON mapping, its personal data masked as GetResult shows it
//!   and without the vendor's free-text messages.
//! - [`sign`] makes the `webhook-signature` header; [`deliver::Worker`] claims due messages with a lease, sends
//!   them in order per session, retries with exponential backoff and jitter, gives up after the retry period and
//!   disables an endpoint that failed for all of it.
//!
//! Targets are the configured URLs only: nothing in a request chooses where an event goes.

pub mod deliver;
pub mod sign;

use std::sync::{Arc, LazyLock};

use prost::Message;
use tokio::sync::Notify;

use crate::config::WebhookEndpoint;
use crate::domain::events::SessionEvent;
use crate::domain::webhooks::{event_types, OutboxMessage, OutboxSource};
use crate::domain::Session;

/// The configured endpoints and what wakes the worker.
pub struct Outbox {
    endpoints: Arc<Vec<WebhookEndpoint>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox for `endpoints`, waking whoever waits on `wake` when messages were committed.
    pub fn new(endpoints: Arc<Vec<WebhookEndpoint>>, wake: Arc<Notify>) -> Self {
        Self { endpoints, wake }
    }
}

impl OutboxSource for Outbox {
    fn messages(
        &self,
        session: &Session,
        events: &[SessionEvent],
    ) -> Result<Vec<OutboxMessage>, String> {
        if !self.endpoints.iter().any(|e| e.tenant == session.tenant) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (event_type, at_ms) in event_types(events) {
            let mut targets = self
                .endpoints
                .iter()
                .filter(|e| e.tenant == session.tenant && e.wants(event_type))
                .peekable();
            if targets.peek().is_none() {
                continue;
            }
            let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
            let body = body(event_type, at_ms, session)?;
            for endpoint in targets {
                out.push(OutboxMessage {
                    id: id.clone(),
                    endpoint: endpoint.name.clone(),
                    event_type,
                    occurred_at_ms: at_ms,
                    body: body.clone(),
                });
            }
        }
        Ok(out)
    }

    fn enqueued(&self) {
        self.wake.notify_one();
    }
}

/// The descriptor of `facegate.v1.Session`, from the compiled-in descriptor set.
static SESSION_DESCRIPTOR: LazyLock<Result<prost_reflect::MessageDescriptor, String>> =
    LazyLock::new(|| {
        let pool = prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("descriptor set: {e}"))?;
        pool.get_message_by_name("facegate.v1.Session")
            .ok_or_else(|| "facegate.v1.Session is not in the descriptor set".to_owned())
    });

/// The Standard Webhooks payload of an event: `{"type", "timestamp", "data"}`, `data` the session in the proto's
/// canonical JSON mapping (lowerCamelCase names, enum names, RFC 3339 times, default values left out).
pub fn body(event_type: &str, occurred_at_ms: i64, session: &Session) -> Result<String, String> {
    let descriptor = SESSION_DESCRIPTOR.as_ref().map_err(Clone::clone)?;
    let encoded = crate::grpc::convert::webhook_session(session).encode_to_vec();
    let message = prost_reflect::DynamicMessage::decode(descriptor.clone(), encoded.as_slice())
        .map_err(|e| format!("session message: {e}"))?;
    let data = serde_json::to_value(&message).map_err(|e| format!("session JSON: {e}"))?;
    let timestamp = prost_types::Timestamp {
        seconds: occurred_at_ms.div_euclid(1000),
        nanos: i32::try_from(occurred_at_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    };
    serde_json::to_string(&serde_json::json!({
        "type": event_type,
        "timestamp": timestamp.to_string(),
        "data": data,
    }))
    .map_err(|e| format!("webhook body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookSecret;
    use crate::domain::events::EventDetail;
    use crate::domain::State;

    fn endpoint(name: &str, tenant: &str, events: &[&str]) -> WebhookEndpoint {
        WebhookEndpoint {
            name: name.into(),
            tenant: tenant.into(),
            url: "https://example.test/hook".into(),
            secrets: vec![WebhookSecret {
                key: vec![7; 32],
                until_ms: None,
            }],
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    fn session() -> Session {
        let mut s = crate::domain::state::tests_support::blank_session("ses_1");
        s.state = State::Verified;
        s.required_inputs.clear();
        s.created_at_ms = 1_764_000_000_000;
        s.updated_at_ms = 1_764_000_000_500;
        s.client_reference_id = "order-1".into();
        s.version = 3;
        s.identity_masked = Some(crate::domain::MaskedIdentity {
            name_masked: "测*".into(),
            id_number_masked: "110***********901X".into(),
            id_type: crate::domain::validation::IdType::MainlandResidentIdCard,
        });
        s.failure = None;
        s.last_attempt_error = Some(crate::domain::AttemptError {
            reason: "VENDOR_UNAVAILABLE".into(),
            vendor_code: "500".into(),
            vendor_message: "vendor text".into(),
            possibly_billed: false,
        });
        s.tenant = "shop".into();
        s
    }

    fn changed(to: State) -> SessionEvent {
        SessionEvent {
            at_ms: 1_764_000_000_500,
            detail: EventDetail::StateChanged {
                from: Some(State::Processing),
                to,
                failure_code: None,
                reason: String::new(),
            },
        }
    }

    #[test]
    fn a_state_change_goes_to_each_subscribed_endpoint_of_the_tenant_with_one_id() {
        let outbox = Outbox::new(
            Arc::new(vec![
                endpoint("all", "shop", &[]),
                endpoint("verified-only", "shop", &["session.verified"]),
                endpoint("failed-only", "shop", &["session.failed"]),
                endpoint("other-tenant", "bank", &[]),
            ]),
            Arc::new(Notify::new()),
        );
        let messages = outbox
            .messages(&session(), &[changed(State::Verified)])
            .unwrap();
        let names: Vec<&str> = messages.iter().map(|m| m.endpoint.as_str()).collect();
        assert_eq!(names, ["all", "verified-only"]);
        assert_eq!(messages[0].id, messages[1].id);
        assert!(messages[0].id.starts_with("msg_"));
        assert_eq!(messages[0].event_type, "session.verified");
        assert!(outbox.messages(&session(), &[]).unwrap().is_empty());
    }

    #[test]
    fn the_body_is_the_sessions_canonical_json_with_the_identity_masked() {
        let text = body("session.verified", 1_764_000_000_500, &session()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "session.verified");
        assert_eq!(v["timestamp"], "2025-11-24T16:00:00.500Z");
        let data = &v["data"];
        assert_eq!(data["id"], "ses_1");
        assert_eq!(data["state"], "SESSION_STATE_VERIFIED");
        assert_eq!(data["vendor"], "VENDOR_JUHE");
        assert_eq!(data["clientReferenceId"], "order-1");
        assert_eq!(data["version"], "3");
        assert_eq!(data["identity"]["idNumberMasked"], "110***********901X");
        assert_eq!(data["lastAttemptError"]["vendorCode"], "500");
        assert_eq!(data["createTime"], "2025-11-24T16:00:00Z");
        assert!(!text.contains("vendorMessage") && !text.contains("vendor text"));
        // The unmasked identity the session still holds (its inputs) is not in the body.
        assert!(!text.contains("11010119000101901X") && !text.contains("测试"));
    }
}
