//! The per-session event log: an append-only record of what happened to a session (state changes, vendor calls,
//! callbacks, unmasked reads, redaction), written by the store in the same transaction as the change it describes.
//!
//! Events carry no personal data: no names, ID numbers, images, vendor messages (which may quote them) or URLs
//! (which may carry tokens). Only fixed labels, stable reason codes, vendor codes, caller ids and counts.
//!
//! The log stays bounded for sessions polled for hours: a poll is recorded only when it changed the session or
//! failed, failed polls and fetches of extras only while the session has fewer than [`MAX_UNPROMPTED_CALLS`]
//! vendor call events, and rejected callbacks only while it has fewer than [`MAX_REJECTED_CALLBACKS`] of them (so
//! forged callbacks cannot grow it). Polls that changed nothing are visible in `facegate_vendor_requests_total`.

use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use super::session::{FailureCode, Session, State, Vendor};

/// A callback's source: the vendor's server-to-server notification.
pub const SOURCE_NOTIFY: &str = "notify";
/// A callback's source: the signed form the browser brought back from the vendor page.
pub const SOURCE_RETURN: &str = "return";

/// Rejected callbacks recorded per session at most.
pub const MAX_REJECTED_CALLBACKS: u32 = 50;
/// Vendor call events per session after which failed polls and extras fetches are no longer recorded.
pub const MAX_UNPROMPTED_CALLS: u32 = 200;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventDetail {
    /// The session changed state (`from` is `None` at creation).
    StateChanged {
        /// The state before.
        from: Option<State>,
        /// The state after.
        to: State,
        /// Set when `to` is FAILED.
        failure_code: Option<FailureCode>,
        /// A stable UPPER_SNAKE reason, or empty.
        reason: String,
    },
    /// One vendor HTTP call.
    VendorCall {
        /// The vendor.
        vendor: Vendor,
        /// The endpoint's fixed label.
        endpoint: String,
        /// See `VendorCallEvent.outcome` in events.proto.
        outcome: String,
        /// Charged.
        billed: bool,
        /// Perhaps charged.
        possibly_billed: bool,
        /// Latency in ms.
        latency_ms: u64,
        /// facegate's error reason where it failed.
        error_reason: String,
        /// The vendor's code where it failed.
        vendor_code: String,
    },
    /// A vendor callback.
    Callback {
        /// The vendor it claimed to come from.
        vendor: Vendor,
        /// Verified and applied.
        accepted: bool,
        /// Why it was rejected.
        rejection_reason: String,
        /// `notify` or `return`.
        source: String,
    },
    /// An unmasked read.
    UnmaskedRead {
        /// The caller.
        caller_id: String,
        /// Its tenant.
        tenant: String,
        /// What was read.
        kinds: Vec<String>,
    },
    /// The session was redacted.
    Redacted {
        /// The caller who redacted it.
        caller_id: String,
    },
}

/// An event to append: its time and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    /// When, in ms since the epoch.
    pub at_ms: i64,
    /// What.
    pub detail: EventDetail,
}

/// An event as stored: with its sequence in the session's log (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the log.
    pub sequence: i64,
    /// The event.
    pub event: SessionEvent,
}

impl SessionEvent {
    /// An event now.
    pub fn now(detail: EventDetail) -> Self {
        Self {
            at_ms: super::now_ms(),
            detail,
        }
    }

    /// The stored `kind`: the type, refined where the summary counts it (billed calls, rejected callbacks), so
    /// the summary is one grouped count.
    pub fn kind(&self) -> &'static str {
        match &self.detail {
            EventDetail::StateChanged { .. } => KIND_STATE_CHANGED,
            EventDetail::VendorCall { billed: true, .. } => KIND_VENDOR_CALL_BILLED,
            EventDetail::VendorCall {
                possibly_billed: true,
                ..
            } => KIND_VENDOR_CALL_POSSIBLY_BILLED,
            EventDetail::VendorCall { .. } => KIND_VENDOR_CALL,
            EventDetail::Callback { accepted: true, .. } => KIND_CALLBACK_ACCEPTED,
            EventDetail::Callback { .. } => KIND_CALLBACK_REJECTED,
            EventDetail::UnmaskedRead { .. } => KIND_UNMASKED_READ,
            EventDetail::Redacted { .. } => KIND_REDACTED,
        }
    }

    /// The stored body: the JSON of the detail.
    pub fn body(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&self.detail)
    }

    /// An event read back from its time and body.
    pub fn from_body(at_ms: i64, body: &str) -> Result<Self, serde_json::Error> {
        Ok(Self {
            at_ms,
            detail: serde_json::from_str(body)?,
        })
    }

    /// The redaction of a session by `caller_id`.
    pub fn redacted(caller_id: &str) -> Self {
        Self::now(EventDetail::Redacted {
            caller_id: caller_id.to_owned(),
        })
    }
}

/// Stored kinds.
pub const KIND_STATE_CHANGED: &str = "state_changed";
/// A vendor call neither billed nor possibly billed.
pub const KIND_VENDOR_CALL: &str = "vendor_call";
/// A billed vendor call.
pub const KIND_VENDOR_CALL_BILLED: &str = "vendor_call_billed";
/// A possibly billed vendor call.
pub const KIND_VENDOR_CALL_POSSIBLY_BILLED: &str = "vendor_call_possibly_billed";
/// An accepted callback.
pub const KIND_CALLBACK_ACCEPTED: &str = "callback_accepted";
/// A rejected callback.
pub const KIND_CALLBACK_REJECTED: &str = "callback_rejected";
/// An unmasked read.
pub const KIND_UNMASKED_READ: &str = "unmasked_read";
/// A redaction.
pub const KIND_REDACTED: &str = "redacted";

/// The vendor call kinds (for the cap on unprompted calls).
pub const VENDOR_CALL_KINDS: [&str; 3] = [
    KIND_VENDOR_CALL,
    KIND_VENDOR_CALL_BILLED,
    KIND_VENDOR_CALL_POSSIBLY_BILLED,
];

/// Counts over a session's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsSummary {
    /// Events.
    pub events: u64,
    /// Vendor calls.
    pub vendor_calls: u64,
    /// Billed calls.
    pub billed_calls: u64,
    /// Possibly billed calls.
    pub possibly_billed_calls: u64,
    /// Accepted callbacks.
    pub callbacks_accepted: u64,
    /// Rejected callbacks (recorded ones).
    pub callbacks_rejected: u64,
    /// Unmasked reads.
    pub unmasked_reads: u64,
    /// Time of the last event.
    pub last_event_at_ms: Option<i64>,
}

impl EventsSummary {
    /// The summary of the store's grouped counts: rows `(kind, count, last at_ms)`.
    pub fn from_counts(rows: &[(String, u64, i64)]) -> Self {
        let mut s = Self::default();
        for (kind, n, last) in rows {
            let n = *n;
            s.events += n;
            s.last_event_at_ms = Some(s.last_event_at_ms.map_or(*last, |t| t.max(*last)));
            match kind.as_str() {
                KIND_VENDOR_CALL => s.vendor_calls += n,
                KIND_VENDOR_CALL_BILLED => {
                    s.vendor_calls += n;
                    s.billed_calls += n;
                }
                KIND_VENDOR_CALL_POSSIBLY_BILLED => {
                    s.vendor_calls += n;
                    s.possibly_billed_calls += n;
                }
                KIND_CALLBACK_ACCEPTED => s.callbacks_accepted += n,
                KIND_CALLBACK_REJECTED => s.callbacks_rejected += n,
                KIND_UNMASKED_READ => s.unmasked_reads += n,
                _ => {}
            }
        }
        s
    }
}

/// The state change between two versions of a session, if any. The reason is a stable code: the failure's code
/// for FAILED, the attempt error's reason for a session sent back for input; never a caller's free text.
pub fn state_change(before: Option<&Session>, after: &Session) -> Option<SessionEvent> {
    let from = before.map(|b| b.state);
    if from == Some(after.state) {
        return None;
    }
    let failure_code = match after.state {
        State::Failed => after.failure.as_ref().map(|f| f.code),
        _ => None,
    };
    let reason = match after.state {
        State::RequiresInput => after
            .last_attempt_error
            .as_ref()
            .map(|e| e.reason.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    Some(SessionEvent {
        at_ms: after.updated_at_ms,
        detail: EventDetail::StateChanged {
            from,
            to: after.state,
            failure_code,
            reason,
        },
    })
}

/// One vendor HTTP call as the HTTP layer saw it (collected by `domain::calls::collect_calls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The endpoint's fixed label.
    pub endpoint: &'static str,
    /// The HTTP outcome label (`ok`, `http_5xx`, `timeout`, ...).
    pub outcome: &'static str,
    /// How long it took.
    pub latency: Duration,
    /// When it ended.
    pub at_ms: i64,
}

/// How an adapter operation ended, for its calls' events.
#[derive(Debug, Clone, Default)]
pub struct CallResult {
    /// The operation recorded a new billed charge.
    pub billed: bool,
    /// It failed and may have been charged.
    pub possibly_billed: bool,
    /// It failed: facegate's reason.
    pub error_reason: String,
    /// It failed: the vendor's code.
    pub vendor_code: String,
}

/// The events of an adapter operation's calls. The operation's result belongs to its last call (the one that
/// answered it); earlier calls (tokens, uploads) succeeded or the operation would have ended with them.
pub fn vendor_calls(
    vendor: Vendor,
    calls: &[CallRecord],
    result: &CallResult,
) -> Vec<SessionEvent> {
    let last = calls.len().saturating_sub(1);
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let answered = i == last;
            let failed = answered && !result.error_reason.is_empty();
            let outcome = if failed && c.outcome == "ok" {
                "vendor_error"
            } else {
                c.outcome
            };
            SessionEvent {
                at_ms: c.at_ms,
                detail: EventDetail::VendorCall {
                    vendor,
                    endpoint: c.endpoint.to_owned(),
                    outcome: outcome.to_owned(),
                    billed: answered && result.billed,
                    possibly_billed: answered && !result.billed && result.possibly_billed,
                    latency_ms: u64::try_from(c.latency.as_millis()).unwrap_or(u64::MAX),
                    error_reason: if failed {
                        result.error_reason.clone()
                    } else {
                        String::new()
                    },
                    vendor_code: if failed {
                        result.vendor_code.clone()
                    } else {
                        String::new()
                    },
                },
            }
        })
        .collect()
}

/// Page size of ListSessionEvents when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page of ListSessionEvents.
pub const MAX_PAGE_SIZE: u32 = 1000;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Domain separation of page tokens from other uses of the key.
const TOKEN_CONTEXT: &[u8] = b"facegate session events page token v1\0";
/// Bytes of the token's tag.
const TAG_LEN: usize = 16;

fn token_mac(key: &[u8], session_id: &str, after: i64) -> Option<HmacSha256> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
    mac.update(TOKEN_CONTEXT);
    mac.update(session_id.as_bytes());
    mac.update(&[0]);
    mac.update(&after.to_be_bytes());
    Some(mac)
}

/// An opaque page token: the last sequence served, authenticated under `key` and bound to the session.
pub fn page_token(key: &[u8], session_id: &str, after: i64) -> String {
    let Some(mac) = token_mac(key, session_id, after) else {
        return String::new();
    };
    let tag = mac.finalize().into_bytes();
    let mut raw = after.to_be_bytes().to_vec();
    raw.extend_from_slice(&tag[..TAG_LEN]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The sequence a page token continues after, if it is one of ours for this session.
pub fn parse_page_token(key: &[u8], session_id: &str, token: &str) -> Option<i64> {
    if token.len() > 64 {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    if raw.len() != 8 + TAG_LEN {
        return None;
    }
    let (seq, tag) = raw.split_at(8);
    let after = i64::from_be_bytes(seq.try_into().ok()?);
    token_mac(key, session_id, after)?
        .verify_truncated_left(tag)
        .ok()?;
    (after >= 0).then_some(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redaction_is_an_event_of_its_own_kind_with_the_caller() {
        let e = SessionEvent::redacted("ops-console");
        assert_eq!(e.kind(), KIND_REDACTED);
        let back = SessionEvent::from_body(e.at_ms, &e.body().unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            back.detail,
            EventDetail::Redacted {
                caller_id: "ops-console".into()
            }
        );
        let s = EventsSummary::from_counts(&[(KIND_REDACTED.into(), 1, e.at_ms)]);
        assert_eq!((s.events, s.last_event_at_ms), (1, Some(e.at_ms)));
    }

    #[test]
    fn page_tokens_are_bound_to_key_session_and_position() {
        let key = [7u8; 32];
        let t = page_token(&key, "ses_a", 100);
        assert_eq!(parse_page_token(&key, "ses_a", &t), Some(100));
        assert_eq!(parse_page_token(&key, "ses_b", &t), None);
        assert_eq!(parse_page_token(&[8u8; 32], "ses_a", &t), None);
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&t)
            .unwrap();
        raw[7] ^= 1;
        let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(parse_page_token(&key, "ses_a", &tampered), None);
        assert_eq!(parse_page_token(&key, "ses_a", "not a token"), None);
        assert_eq!(parse_page_token(&key, "ses_a", ""), None);
    }

    #[test]
    fn the_last_call_carries_the_operation_result() {
        let calls = [
            CallRecord {
                endpoint: "get_token",
                outcome: "ok",
                latency: Duration::from_millis(3),
                at_ms: 1,
            },
            CallRecord {
                endpoint: "verify",
                outcome: "ok",
                latency: Duration::from_millis(5),
                at_ms: 2,
            },
        ];
        let result = CallResult {
            billed: false,
            possibly_billed: true,
            error_reason: "VENDOR_UNAVAILABLE".into(),
            vendor_code: "10014".into(),
        };
        let events = vendor_calls(Vendor::Juhe, &calls, &result);
        assert_eq!(events[0].kind(), KIND_VENDOR_CALL);
        assert_eq!(events[1].kind(), KIND_VENDOR_CALL_POSSIBLY_BILLED);
        match &events[1].detail {
            EventDetail::VendorCall {
                outcome,
                error_reason,
                vendor_code,
                latency_ms,
                ..
            } => {
                assert_eq!(outcome, "vendor_error");
                assert_eq!(error_reason, "VENDOR_UNAVAILABLE");
                assert_eq!(vendor_code, "10014");
                assert_eq!(*latency_ms, 5);
            }
            other => panic!("{other:?}"),
        }
        let s = EventsSummary::from_counts(&[
            (KIND_VENDOR_CALL.into(), 1, 1),
            (KIND_VENDOR_CALL_POSSIBLY_BILLED.into(), 1, 2),
        ]);
        assert_eq!(
            (
                s.events,
                s.vendor_calls,
                s.possibly_billed_calls,
                s.billed_calls
            ),
            (2, 2, 1, 0)
        );
        assert_eq!(s.last_event_at_ms, Some(2));
    }
}
