//! A test webhook receiver: an HTTP endpoint on loopback that keeps every delivery and verifies its signature with
//! the Standard Webhooks reference crate (`standardwebhooks`), against each of the secrets it was given. What it
//! answers is chosen by the test: a status, a status for the first few requests, or no answer at all (a hang).

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    format!(
        "whsec_{}",
        facegate::store::seal::generate_key_base64().unwrap()
    )
}

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: serde_json::Value,
    pub raw: String,
    /// Whether each of the receiver's secrets verified it (in the order given).
    pub verified: Vec<bool>,
    /// What the receiver answered (0: it did not).
    pub answered: u16,
}

impl Delivery {
    pub fn event_type(&self) -> String {
        self.body["type"].as_str().unwrap_or("").to_owned()
    }

    pub fn session_id(&self) -> String {
        self.body["data"]["id"].as_str().unwrap_or("").to_owned()
    }
}

struct Shared {
    secrets: Vec<String>,
    deliveries: Mutex<Vec<Delivery>>,
    /// The status answered; 0: never answer.
    status: AtomicU16,
    /// Requests still to fail with 500 before `status` applies.
    fail_first: AtomicUsize,
}

/// The receiver and its URL.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    /// A receiver verifying with `secrets`, answering 200.
    pub async fn start(secrets: &[String]) -> Self {
        let shared = Arc::new(Shared {
            secrets: secrets.to_vec(),
            deliveries: Mutex::new(Vec::new()),
            status: AtomicU16::new(200),
            fail_first: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&shared));
        let addr = super::recorder::serve(app).await;
        Self {
            url: format!("http://{addr}/hook"),
            shared,
        }
    }

    /// Answers `status` from now on (0: never answers).
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Fails the next `n` requests with 500.
    pub fn fail_next(&self, n: usize) {
        self.shared.fail_first.store(n, Ordering::SeqCst);
    }

    /// Every delivery so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap().clone()
    }

    /// Deliveries answered 2xx.
    pub fn acknowledged(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| (200..300).contains(&d.answered))
            .collect()
    }

    /// Waits (up to `secs`) until `done` holds for the deliveries so far.
    pub async fn wait_until(&self, secs: u64, done: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let seen = self.deliveries();
            if done(&seen) {
                return seen;
            }
            if tokio::time::Instant::now() > deadline {
                let summary: Vec<(String, String, u16)> = seen
                    .iter()
                    .map(|d| (d.event_type(), d.session_id(), d.answered))
                    .collect();
                panic!(
                    "the receiver did not see what was expected in {secs} s; it saw {summary:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let verified = shared
        .secrets
        .iter()
        .map(|s| {
            standardwebhooks::Webhook::new(s)
                .unwrap()
                .verify(&body, &headers)
                .is_ok()
        })
        .collect();
    let status = if shared
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        500
    } else {
        shared.status.load(Ordering::SeqCst)
    };
    let index = {
        let mut deliveries = shared.deliveries.lock().unwrap();
        deliveries.push(Delivery {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            raw: String::from_utf8_lossy(&body).into_owned(),
            verified,
            answered: 0,
        });
        deliveries.len() - 1
    };
    if status == 0 {
        std::future::pending::<()>().await;
    }
    shared.deliveries.lock().unwrap()[index].answered = status;
    StatusCode::from_u16(status).unwrap()
}

/// The event types a session's log implies, in order: what its webhooks must carry.
pub fn expected_types(events: &[facegate::proto::v1::SessionEvent]) -> Vec<String> {
    use facegate::proto::v1::session_event::Detail;
    use facegate::proto::v1::SessionState as S;
    let mut out = Vec::new();
    for e in events {
        match &e.detail {
            Some(Detail::StateChanged(c)) => {
                if c.from == S::Unspecified as i32 {
                    out.push("session.created".to_owned());
                }
                let t = match S::try_from(c.to).unwrap() {
                    S::AwaitingUser => "session.awaiting_user",
                    S::Processing => "session.processing",
                    S::Verified => "session.verified",
                    S::Failed => "session.failed",
                    S::Expired => "session.expired",
                    S::Canceled => "session.canceled",
                    S::RequiresInput | S::Unspecified => continue,
                };
                out.push(t.to_owned());
            }
            Some(Detail::Redacted(_)) if !out.iter().any(|t| t == "session.redacted") => {
                out.push("session.redacted".to_owned())
            }
            _ => {}
        }
    }
    out
}
