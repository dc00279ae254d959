//! Session change fan-out and expiry.
//!
//! [`Hub`] delivers every stored change of a session to all of its watchers through one broadcast channel per
//! watched session, so watchers never poll anything themselves.
//!
//! A change is sent as one shared [`Arc`] of its [`watched view`](watched_view): every watcher reads the same
//! allocation, and the personal data a stream never shows (the collected inputs, the outcome) is not kept in the
//! channel's slots at all.

pub mod expiry;
pub mod poller;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::domain::{Inputs, Outcome, Session, StartCall};

/// Buffered changes per session before a slow watcher is told it lagged. A session changes a handful of times in
/// its life and a lagging watcher reloads the latest snapshot from the store, so a few slots are enough; every slot
/// keeps its last change alive until it is overwritten.
pub const CHANNEL_CAPACITY: usize = 4;

/// Fan-out of session changes to watchers.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Session>>>>,
}

impl Hub {
    /// A new, empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to changes of session `id` (subscribe before reading the snapshot, so no change is missed). The
    /// changes received are [`watched_view`]s.
    pub fn subscribe(&self, id: &str) -> broadcast::Receiver<Arc<Session>> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Publishes a stored change to the session's watchers, if it has any.
    pub fn publish(&self, session: &Session) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&session.id) {
            if tx.send(Arc::new(watched_view(session))).is_err() || session.state.is_final() {
                // Nobody listens any more, or nothing will follow a final state.
                map.remove(&session.id);
            }
        }
    }

    /// Drops the channel of a session nobody watches any more.
    pub fn release(&self, id: &str) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(id).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(id);
        }
    }

    /// Number of sessions with at least one channel (for metrics and tests).
    pub fn watched_sessions(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// What a watcher is shown of a session: everything but the collected inputs (identity, face images) and the
/// outcome (vendor detail, revealable identity), which a status stream never carries. Only the fields kept are
/// copied, so an image is never cloned for a watcher; the destructuring is exhaustive, so a new field of
/// [`Session`] has to be decided on here.
pub fn watched_view(session: &Session) -> Session {
    let Session {
        id,
        vendor,
        options,
        state,
        required_inputs,
        user_url,
        user_url_expires_at_ms,
        created_at_ms,
        updated_at_ms,
        expires_at_ms,
        client_reference_id,
        metadata,
        failure,
        last_attempt_error,
        identity_masked,
        version,
        target_false_accept_rate,
        request_id,
        cancel_reason,
        return_success_url,
        return_failure_url,
        inputs: _,
        attempt_started_at_ms,
        outcome: _,
        vendor_ref,
        final_query_at_ms,
        tenant,
        live_mode,
        redaction,
        consent,
        start_call: _,
        route,
    } = session;
    Session {
        id: id.clone(),
        vendor: *vendor,
        options: options.clone(),
        state: *state,
        required_inputs: required_inputs.clone(),
        user_url: user_url.clone(),
        user_url_expires_at_ms: *user_url_expires_at_ms,
        created_at_ms: *created_at_ms,
        updated_at_ms: *updated_at_ms,
        expires_at_ms: *expires_at_ms,
        client_reference_id: client_reference_id.clone(),
        metadata: metadata.clone(),
        failure: failure.clone(),
        last_attempt_error: last_attempt_error.clone(),
        identity_masked: identity_masked.clone(),
        version: *version,
        target_false_accept_rate: *target_false_accept_rate,
        request_id: request_id.clone(),
        cancel_reason: cancel_reason.clone(),
        return_success_url: return_success_url.clone(),
        return_failure_url: return_failure_url.clone(),
        inputs: Inputs::default(),
        attempt_started_at_ms: *attempt_started_at_ms,
        outcome: Outcome::default(),
        vendor_ref: vendor_ref.clone(),
        final_query_at_ms: *final_query_at_ms,
        tenant: tenant.clone(),
        live_mode: *live_mode,
        redaction: *redaction,
        consent: consent.clone(),
        // What StartSession answered is for its replays, not for watchers.
        start_call: StartCall::None,
        route: route.clone(),
    }
}

/// [`watched_view`] of a session the caller owns: the parts a watcher is not shown are dropped, not copied.
pub fn into_watched_view(mut session: Session) -> Session {
    session.inputs = Inputs::default();
    session.outcome = Outcome::default();
    session
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::validation::{IdType, ImageFormat};
    use crate::domain::{
        FaceImage, Identity, ImageControls, ImageRole, State, Vendor, VendorOptions,
    };

    fn session(id: &str, version: i64, state: State) -> Session {
        Session {
            id: id.into(),
            vendor: Vendor::Juhe,
            options: VendorOptions::Juhe { encrypted: false },
            state,
            required_inputs: Vec::new(),
            user_url: Some("https://h5.example/x".into()),
            user_url_expires_at_ms: Some(5),
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: 3,
            client_reference_id: "ref".into(),
            metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            failure: None,
            last_attempt_error: None,
            identity_masked: None,
            version,
            target_false_accept_rate: 1e-3,
            request_id: "req".into(),
            cancel_reason: None,
            return_success_url: "https://shop.example/ok".into(),
            return_failure_url: String::new(),
            inputs: Inputs {
                identity: Some(Identity {
                    name: "测试".into(),
                    id_number: "110101190001010014".into(),
                    id_type: IdType::MainlandResidentIdCard,
                }),
                probe: Some(FaceImage {
                    data: vec![0xff, 0xd8, 0xff, 0],
                    format: ImageFormat::Jpeg,
                    role: ImageRole::Probe,
                    controls: ImageControls::default(),
                }),
                references: Vec::new(),
            },
            attempt_started_at_ms: None,
            outcome: Outcome {
                revealable_until_ms: Some(9),
                ..Outcome::default()
            },
            vendor_ref: Some("token".into()),
            final_query_at_ms: None,
            tenant: "shop".into(),
            live_mode: false,
            redaction: None,
            consent: None,
            start_call: StartCall::None,
            route: None,
        }
    }

    #[test]
    fn the_watched_view_drops_inputs_and_outcome_and_keeps_the_rest() {
        let full = session("ses_a", 3, State::AwaitingUser);
        let view = watched_view(&full);
        assert!(view.inputs.is_empty());
        assert_eq!(view.outcome, Outcome::default());
        let mut expected = full.clone();
        expected.inputs = Inputs::default();
        expected.outcome = Outcome::default();
        assert_eq!(view, expected);
        assert_eq!(into_watched_view(full), expected);
    }

    #[tokio::test]
    async fn watchers_share_one_view_of_each_change() {
        let hub = Hub::new();
        let mut a = hub.subscribe("ses_a");
        let mut b = hub.subscribe("ses_a");
        hub.publish(&session("ses_a", 2, State::AwaitingUser));
        let (x, y) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        assert!(Arc::ptr_eq(&x, &y), "one allocation for every watcher");
        assert_eq!(x.version, 2);
        assert!(x.inputs.is_empty(), "no personal data in the channel");
        // Nobody watches another session: nothing is kept for it.
        hub.publish(&session("ses_b", 2, State::AwaitingUser));
        assert_eq!(hub.watched_sessions(), 1);
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_it_lagged() {
        let hub = Hub::new();
        let mut slow = hub.subscribe("ses_a");
        for v in 0..=CHANNEL_CAPACITY as i64 {
            hub.publish(&session("ses_a", v + 2, State::AwaitingUser));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(1))
        ));
        assert_eq!(slow.recv().await.unwrap().version, 3);
    }

    #[tokio::test]
    async fn a_final_change_closes_the_channel_and_release_drops_unwatched_ones() {
        let hub = Hub::new();
        let mut rx = hub.subscribe("ses_a");
        hub.publish(&session("ses_a", 2, State::Verified));
        assert_eq!(hub.watched_sessions(), 0);
        assert_eq!(rx.recv().await.unwrap().state, State::Verified);
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));

        let rx = hub.subscribe("ses_b");
        hub.release("ses_b");
        assert_eq!(hub.watched_sessions(), 1, "still watched");
        drop(rx);
        hub.release("ses_b");
        assert_eq!(hub.watched_sessions(), 0);
    }
}
