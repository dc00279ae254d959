//! Outbound webhooks as the domain sees them: which session events are pushed (and under which Standard Webhooks
//! event type), the outbox message a state change enqueues, and a delivery as ListWebhookDeliveries shows it.
//!
//! The store writes a change's messages in the same transaction as the change (see
//! [`crate::store::SessionStore::update`]); the webhooks worker (`crate::webhooks`) claims them with a lease,
//! signs and sends them, and records every attempt here.

use super::events::{EventDetail, SessionEvent};
use super::session::{Session, State};

/// `session.created`: a session was written (whatever state it starts in).
pub const SESSION_CREATED: &str = "session.created";
/// `session.redacted`: a session's personal data was removed for good (sent once, at the first redaction).
pub const SESSION_REDACTED: &str = "session.redacted";

/// Every event type, in the order a session can produce them.
pub const EVENT_TYPES: [&str; 8] = [
    SESSION_CREATED,
    "session.awaiting_user",
    "session.processing",
    "session.verified",
    "session.failed",
    "session.expired",
    "session.canceled",
    SESSION_REDACTED,
];

/// The event type a session entering `state` produces (`None`: entering it is not pushed).
pub fn state_event_type(state: State) -> Option<&'static str> {
    match state {
        State::RequiresInput => None,
        State::AwaitingUser => Some("session.awaiting_user"),
        State::Processing => Some("session.processing"),
        State::Verified => Some("session.verified"),
        State::Failed => Some("session.failed"),
        State::Expired => Some("session.expired"),
        State::Canceled => Some("session.canceled"),
    }
}

/// The webhook events a write's session events produce, in order, each with when it happened: a creation is
/// `session.created` (and, when the session starts past REQUIRES_INPUT, the event of that state too), a state change
/// the new state's event, a redaction `session.redacted`. Vendor calls, callbacks and reads produce none.
pub fn event_types(events: &[SessionEvent]) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for event in events {
        match &event.detail {
            EventDetail::StateChanged { from, to, .. } => {
                if from.is_none() {
                    out.push((SESSION_CREATED, event.at_ms));
                }
                if let Some(t) = state_event_type(*to) {
                    out.push((t, event.at_ms));
                }
            }
            EventDetail::Redacted { .. } => out.push((SESSION_REDACTED, event.at_ms)),
            EventDetail::VendorCall { .. }
            | EventDetail::Callback { .. }
            | EventDetail::UnmaskedRead { .. } => {}
        }
    }
    out
}

/// One message for one endpoint, as a write enqueues it.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The event's id (`webhook-id`): the same for every endpoint the event goes to.
    pub id: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The event type.
    pub event_type: &'static str,
    /// When the change happened (unix ms).
    pub occurred_at_ms: i64,
    /// The JSON body (the session with its personal data masked); the store seals it.
    pub body: String,
}

impl std::fmt::Debug for OutboxMessage {
    /// Without the body (masked, but still about a person).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxMessage")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("event_type", &self.event_type)
            .field("occurred_at_ms", &self.occurred_at_ms)
            .finish_non_exhaustive()
    }
}

/// What turns a store write into outbox messages: the configured endpoints and the body renderer. The store calls
/// it for every create and update, before the write, and [`OutboxSource::enqueued`] after a write that enqueued
/// something committed.
pub trait OutboxSource: Send + Sync + std::fmt::Debug + 'static {
    /// The messages a write of `session` with `events` enqueues (usually none: only state changes and redactions
    /// of tenants with endpoints produce any). An error (a body that cannot be rendered) fails the write.
    fn messages(
        &self,
        session: &Session,
        events: &[SessionEvent],
    ) -> Result<Vec<OutboxMessage>, String>;
    /// Messages were committed: the worker can look for them now instead of at its next poll.
    fn enqueued(&self);
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not delivered yet.
    Pending,
    /// Answered 2xx.
    Delivered,
    /// Given up after the retry period.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A delivery as stored and listed (never the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// Position in the outbox (newest highest); pagination continues below it.
    pub seq: i64,
    /// The event's id.
    pub id: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The session.
    pub session_id: String,
    /// The event type.
    pub event_type: String,
    /// When the change happened (unix ms).
    pub occurred_at_ms: i64,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// HTTP status of the last answer (0: none).
    pub last_response_code: i64,
    /// Why the last attempt failed, or empty.
    pub last_error: String,
    /// When the last attempt was made.
    pub last_attempt_at_ms: Option<i64>,
    /// When the next attempt is due (pending).
    pub next_attempt_at_ms: i64,
    /// When it was delivered.
    pub delivered_at_ms: Option<i64>,
}

/// What ListWebhookDeliveries selects within a tenant (empty or `None`: no condition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this session's.
    pub session_id: String,
    /// Only this endpoint's.
    pub endpoint: String,
    /// Only in this status.
    pub status: Option<DeliveryStatus>,
}

/// A message claimed for delivery: the worker holds its lease until it records the attempt.
#[derive(Clone)]
pub struct ClaimedMessage {
    /// Outbox position.
    pub seq: i64,
    /// The event's id.
    pub id: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The session's tenant.
    pub tenant: String,
    /// The session.
    pub session_id: String,
    /// The event type.
    pub event_type: String,
    /// The opened body; `None` once the session was redacted and this message's body dropped.
    pub body: Option<String>,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When the first attempt of the current retry period was made (unix ms).
    pub first_attempt_at_ms: i64,
}

impl std::fmt::Debug for ClaimedMessage {
    /// Without the body.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedMessage")
            .field("seq", &self.seq)
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("session_id", &self.session_id)
            .field("event_type", &self.event_type)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to, as the worker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// When it was made (unix ms).
    pub at_ms: i64,
    /// The HTTP status of the answer (0: none).
    pub response_code: i64,
    /// Why it failed (`HTTP_STATUS`, `TIMEOUT`, `CONNECT`, `REQUEST`), or empty when it was delivered.
    pub error: String,
    /// What follows: delivered, another attempt at a time, or given up.
    pub next: AttemptNext,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    /// A 2xx answer: delivered.
    Delivered,
    /// Failed; the next attempt is due at this time (unix ms).
    RetryAt(i64),
    /// Failed for the whole retry period: given up.
    GiveUp,
}

/// What recording an attempt found about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptRecorded {
    /// The lease was still this worker's, and the attempt was written.
    pub written: bool,
    /// This failure disabled the endpoint (it had failed for the whole retry period).
    pub endpoint_disabled: bool,
}

/// A pending backlog of one endpoint, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// The endpoint's name.
    pub endpoint: String,
    /// Messages not delivered yet.
    pub pending: u64,
    /// When the oldest of them happened (unix ms).
    pub oldest_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::EventDetail;

    fn changed(from: Option<State>, to: State, at_ms: i64) -> SessionEvent {
        SessionEvent {
            at_ms,
            detail: EventDetail::StateChanged {
                from,
                to,
                failure_code: None,
                reason: String::new(),
            },
        }
    }

    #[test]
    fn state_changes_and_redactions_map_to_event_types_in_order() {
        let events = [
            changed(None, State::AwaitingUser, 1),
            changed(Some(State::AwaitingUser), State::Processing, 2),
            changed(Some(State::Processing), State::Verified, 3),
            SessionEvent {
                at_ms: 4,
                detail: EventDetail::Redacted {
                    caller_id: "ops".into(),
                },
            },
        ];
        assert_eq!(
            event_types(&events),
            vec![
                (SESSION_CREATED, 1),
                ("session.awaiting_user", 1),
                ("session.processing", 2),
                ("session.verified", 3),
                (SESSION_REDACTED, 4),
            ]
        );
        assert_eq!(
            event_types(&[changed(None, State::RequiresInput, 7)]),
            vec![(SESSION_CREATED, 7)]
        );
        let call = SessionEvent {
            at_ms: 5,
            detail: EventDetail::UnmaskedRead {
                caller_id: "c".into(),
                tenant: "t".into(),
                kinds: vec![],
            },
        };
        assert!(event_types(&[call]).is_empty());
        for state in [
            State::AwaitingUser,
            State::Processing,
            State::Verified,
            State::Failed,
            State::Expired,
            State::Canceled,
        ] {
            let t = state_event_type(state).unwrap();
            assert!(EVENT_TYPES.contains(&t), "{t}");
        }
    }

    #[test]
    fn statuses_round_trip_their_stored_names() {
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("sent"), None);
    }
}
