//! Session transitions. States only move forward (REQUIRES_INPUT -> AWAITING_USER -> PROCESSING -> final) and a
//! final state never changes. A late or duplicate vendor event that would move a session backwards is ignored.

use super::session::{Failure, Outcome, RequiredInput, Session, State};

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The set of missing inputs changed (stays in REQUIRES_INPUT).
    InputsChanged {
        /// What is still missing.
        required: Vec<RequiredInput>,
    },
    /// The vendor page is ready for the end user.
    UserUrlReady {
        /// The page.
        url: String,
        /// When it stops working (unix ms).
        expires_at_ms: i64,
    },
    /// The vendor is working on the result.
    VendorProcessing,
    /// The person was verified.
    Verified {
        /// The outcome.
        outcome: Outcome,
    },
    /// The verification failed.
    Failed {
        /// Why.
        failure: Failure,
        /// The outcome.
        outcome: Outcome,
    },
    /// The session or the vendor token expired.
    Expired,
    /// The caller canceled.
    Canceled {
        /// Why (no personal data).
        reason: String,
    },
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The session changed (version and update time advanced).
    Changed,
    /// The event was stale or a duplicate and changed nothing.
    Ignored,
}

/// An event that cannot apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The session is final already.
    #[error("the session is already final ({})", .0.as_str())]
    AlreadyFinal(State),
}

impl Session {
    /// Applies an event at time `now_ms`. Final states are terminal; backward moves are ignored. Entering a final
    /// state wipes the collected personal data (identity, images).
    pub fn apply(&mut self, event: Event, now_ms: i64) -> Result<Applied, TransitionError> {
        if self.state.is_final() {
            return Err(TransitionError::AlreadyFinal(self.state));
        }
        let target = match &event {
            Event::InputsChanged { .. } => State::RequiresInput,
            Event::UserUrlReady { .. } => State::AwaitingUser,
            Event::VendorProcessing => State::Processing,
            Event::Verified { .. } => State::Verified,
            Event::Failed { .. } => State::Failed,
            Event::Expired => State::Expired,
            Event::Canceled { .. } => State::Canceled,
        };
        if target.rank() < self.state.rank() {
            return Ok(Applied::Ignored);
        }
        match event {
            Event::InputsChanged { required } => {
                if self.required_inputs == required {
                    return Ok(Applied::Ignored);
                }
                self.required_inputs = required;
            }
            Event::UserUrlReady { url, expires_at_ms } => {
                if self.state == State::AwaitingUser && self.user_url.as_deref() == Some(&url) {
                    return Ok(Applied::Ignored);
                }
                self.required_inputs.clear();
                self.user_url = Some(url);
                self.user_url_expires_at_ms = Some(expires_at_ms);
            }
            Event::VendorProcessing => {
                if self.state == State::Processing {
                    return Ok(Applied::Ignored);
                }
                self.required_inputs.clear();
            }
            Event::Verified { outcome } => {
                self.outcome = outcome;
                self.finish();
            }
            Event::Failed { failure, outcome } => {
                self.failure = Some(failure);
                self.outcome = outcome;
                self.finish();
            }
            Event::Expired => self.finish(),
            Event::Canceled { reason } => {
                self.cancel_reason = Some(reason);
                self.finish();
            }
        }
        self.state = target;
        self.version += 1;
        self.updated_at_ms = now_ms.max(self.updated_at_ms);
        Ok(Applied::Changed)
    }

    fn finish(&mut self) {
        self.required_inputs.clear();
        self.attempt_started_at_ms = None;
        self.inputs = Default::default();
    }
}

/// Helpers for tests: this crate's and the integration tests' (the store contract builds its sessions here).
#[doc(hidden)]
pub mod tests_support {
    use crate::domain::session::*;
    use crate::domain::validation::IdType;

    /// A Juhe session waiting for input, version 1, expiring at 1000 ms, holding a synthetic identity.
    pub fn blank_session(id: &str) -> Session {
        Session {
            id: id.into(),
            vendor: Vendor::Juhe,
            options: VendorOptions::Juhe { encrypted: false },
            state: State::RequiresInput,
            required_inputs: vec![RequiredInput::Identity, RequiredInput::ProbeImage],
            user_url: None,
            user_url_expires_at_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: 1000,
            client_reference_id: String::new(),
            metadata: Default::default(),
            failure: None,
            last_attempt_error: None,
            identity_masked: None,
            version: 1,
            target_false_accept_rate: 1e-3,
            request_id: String::new(),
            cancel_reason: None,
            return_success_url: String::new(),
            return_failure_url: String::new(),
            inputs: Inputs {
                identity: Some(Identity {
                    name: "测试".into(),
                    id_number: "11010119000101901X".into(),
                    id_type: IdType::MainlandResidentIdCard,
                }),
                ..Default::default()
            },
            attempt_started_at_ms: None,
            outcome: Outcome::default(),
            vendor_ref: None,
            final_query_at_ms: None,
            tenant: crate::domain::caller::DEFAULT_TENANT.into(),
            live_mode: false,
            redaction: None,
            consent: None,
            start_call: StartCall::default(),
            route: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::session::*;
    use proptest::prelude::*;

    fn blank() -> Session {
        tests_support::blank_session("ses_test")
    }

    fn failure() -> Failure {
        Failure {
            code: FailureCode::FaceMismatch,
            vendor_code: "3005".into(),
            vendor_message: String::new(),
        }
    }

    #[test]
    fn final_states_are_terminal() {
        let mut s = blank();
        assert_eq!(
            s.apply(
                Event::Failed {
                    failure: failure(),
                    outcome: Outcome::default()
                },
                5
            ),
            Ok(Applied::Changed)
        );
        assert_eq!(s.state, State::Failed);
        assert!(s.inputs.is_empty(), "personal data wiped when final");
        let v = s.version;
        for ev in [
            Event::Verified {
                outcome: Outcome::default(),
            },
            Event::Expired,
            Event::Canceled { reason: "x".into() },
            Event::VendorProcessing,
        ] {
            assert_eq!(
                s.apply(ev, 9),
                Err(TransitionError::AlreadyFinal(State::Failed))
            );
        }
        assert_eq!(s.version, v);
        assert_eq!(s.state, State::Failed);
    }

    #[test]
    fn backward_moves_are_ignored() {
        let mut s = blank();
        s.apply(Event::VendorProcessing, 1).unwrap();
        assert_eq!(
            s.apply(
                Event::UserUrlReady {
                    url: "u".into(),
                    expires_at_ms: 2
                },
                2
            ),
            Ok(Applied::Ignored)
        );
        assert_eq!(
            s.apply(Event::InputsChanged { required: vec![] }, 2),
            Ok(Applied::Ignored)
        );
        assert_eq!(s.state, State::Processing);
        assert_eq!(s.apply(Event::VendorProcessing, 3), Ok(Applied::Ignored));
    }

    #[test]
    fn version_and_time_advance_on_change() {
        let mut s = blank();
        s.apply(
            Event::InputsChanged {
                required: vec![RequiredInput::ProbeImage],
            },
            10,
        )
        .unwrap();
        assert_eq!(s.version, 2);
        assert_eq!(s.updated_at_ms, 10);
        assert_eq!(s.required_inputs, vec![RequiredInput::ProbeImage]);
    }

    fn event_strategy() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::InputsChanged {
                required: vec![RequiredInput::ProbeImage]
            }),
            Just(Event::InputsChanged { required: vec![] }),
            Just(Event::UserUrlReady {
                url: "https://x".into(),
                expires_at_ms: 9
            }),
            Just(Event::VendorProcessing),
            Just(Event::Verified {
                outcome: Outcome::default()
            }),
            Just(Event::Failed {
                failure: failure(),
                outcome: Outcome::default()
            }),
            Just(Event::Expired),
            Just(Event::Canceled { reason: "r".into() }),
        ]
    }

    proptest! {
        #[test]
        fn random_event_orders_never_leave_a_final_state(events in proptest::collection::vec(event_strategy(), 0..40)) {
            let mut s = blank();
            let mut first_final: Option<State> = None;
            let mut last_rank = s.state.rank();
            let mut last_version = s.version;
            for (i, ev) in events.into_iter().enumerate() {
                let res = s.apply(ev, i as i64);
                prop_assert!(s.state.rank() >= last_rank, "state moved backwards");
                prop_assert!(s.version >= last_version);
                if let Some(f) = first_final {
                    prop_assert_eq!(s.state, f);
                    prop_assert!(res.is_err());
                    prop_assert_eq!(s.version, last_version);
                } else if s.state.is_final() {
                    first_final = Some(s.state);
                    prop_assert!(s.inputs.is_empty());
                }
                match res {
                    Ok(Applied::Changed) => prop_assert_eq!(s.version, last_version + 1),
                    Ok(Applied::Ignored) | Err(_) => prop_assert_eq!(s.version, last_version),
                }
                last_rank = s.state.rank();
                last_version = s.version;
            }
        }
    }
}
