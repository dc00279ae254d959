//! The delivery worker: claims due outbox messages with a lease, POSTs each to its endpoint signed, and records the
//! attempt. At least once, in order per session and endpoint (the store hands out a session's next message only
//! once the one before it is no longer pending), retried with exponential backoff and jitter for the retry
//! period; an endpoint that failed every attempt for that long is disabled (logged) until RedeliverWebhook.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::sign::signature;
use crate::config::{WebhookEndpoint, WebhooksConfig};
use crate::domain::now_ms;
use crate::domain::webhooks::{AttemptNext, AttemptRecord, ClaimedMessage};
use crate::store::SessionStore;

/// How long a message whose endpoint this process does not know is left to other replicas.
const UNKNOWN_ENDPOINT_HOLD_MS: i64 = 300_000;
/// Lease beyond the attempt's own timeout (the time to record it).
const LEASE_MARGIN_MS: i64 = 20_000;

/// The retry schedule.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// How long a message is retried, and an endpoint may fail, from the first attempt.
    pub retry_for: Duration,
}

impl Schedule {
    /// From the configuration.
    pub fn of(config: &WebhooksConfig) -> Self {
        Self {
            initial: Duration::from_millis(config.initial_backoff_ms),
            max: Duration::from_secs(config.max_backoff_secs),
            retry_for: Duration::from_secs(config.retry_for_secs),
        }
    }

    /// The delay after the `failures`-th failed attempt (from 1): `initial * 2^(failures-1)`, capped at `max`,
    /// then a random share between half and all of it (`unit` in [0, 1)), so receivers that failed together do
    /// not get their retries together.
    pub fn delay(&self, failures: i64, unit: f64) -> Duration {
        let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(exp.min(31)))
            .min(self.max);
        base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// What follows a failed attempt at `now_ms` that was the `failures`-th of a message first tried at
    /// `first_attempt_at_ms`: another attempt, or giving up once the next would fall past the retry period.
    pub fn after_failure(
        &self,
        failures: i64,
        first_attempt_at_ms: i64,
        now_ms: i64,
        unit: f64,
    ) -> AttemptNext {
        let next = now_ms.saturating_add(millis(self.delay(failures, unit)));
        if next > first_attempt_at_ms.saturating_add(millis(self.retry_for)) {
            AttemptNext::GiveUp
        } else {
            AttemptNext::RetryAt(next)
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A random number in [0, 1) (from the OS generator behind v4 UUIDs).
fn unit_random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// What a worker needs, shared by its attempts.
struct Context {
    store: Arc<dyn SessionStore>,
    endpoints: BTreeMap<String, WebhookEndpoint>,
    client: reqwest::Client,
    owner: String,
    schedule: Schedule,
    timeout: Duration,
}

/// The delivery worker of one process.
pub struct Worker {
    ctx: Arc<Context>,
    wake: Arc<Notify>,
    concurrency: usize,
    poll: Duration,
}

impl Worker {
    /// A worker over `store` for the configured endpoints, woken by `wake` (the outbox's). `owner` names this
    /// process in leases.
    pub fn new(
        store: Arc<dyn SessionStore>,
        endpoints: &[WebhookEndpoint],
        config: &WebhooksConfig,
        wake: Arc<Notify>,
    ) -> Result<Self, String> {
        let timeout = Duration::from_secs(config.timeout_secs);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            // A redirect could take the event (and its signature) to a host nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("facegate-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self {
            ctx: Arc::new(Context {
                store,
                endpoints: endpoints
                    .iter()
                    .map(|e| (e.name.clone(), e.clone()))
                    .collect(),
                client,
                owner: format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()),
                schedule: Schedule::of(config),
                timeout,
            }),
            wake,
            concurrency: usize::try_from(config.concurrency).unwrap_or(16).max(1),
            poll: Duration::from_millis(config.poll_interval_ms.max(10)),
        })
    }

    /// Delivers until `stop` turns true; attempts in flight then get their timeout to finish (an unfinished one
    /// keeps its lease until it runs out, and is sent again).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let lease = millis(self.ctx.timeout) + LEASE_MARGIN_MS;
        loop {
            if *stop.borrow() {
                break;
            }
            while in_flight.try_join_next().is_some() {}
            let free = self.concurrency.saturating_sub(in_flight.len());
            let mut claimed_all = false;
            if free > 0 {
                let now = now_ms();
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match self
                    .ctx
                    .store
                    .claim_webhooks(&self.ctx.owner, now, now.saturating_add(lease), limit)
                    .await
                {
                    Ok(messages) => {
                        claimed_all = messages.len() == free;
                        for message in messages {
                            in_flight.spawn(attempt(Arc::clone(&self.ctx), message));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot claim webhook messages"),
                }
            }
            // A stop signal whose sender is gone stops the worker too (the service is gone).
            if claimed_all {
                // More may be due; look again once a slot frees up.
                tokio::select! {
                    _ = in_flight.join_next() => {}
                    changed = stop.changed() => if changed.is_err() { break },
                }
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = tokio::time::sleep(self.poll) => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
        }
        let drain = async { while in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(self.ctx.timeout, drain).await.is_err() {
            tracing::warn!("stopping with webhook attempts in flight: they are sent again later");
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "facegate".to_owned())
}

/// One attempt at one message, recorded.
async fn attempt(ctx: Arc<Context>, message: ClaimedMessage) {
    let Some(endpoint) = ctx.endpoints.get(&message.endpoint) else {
        tracing::warn!(
            endpoint = %message.endpoint,
            webhook_id = %message.id,
            "a webhook message is for an endpoint this process does not configure; left for another replica"
        );
        let until = now_ms().saturating_add(UNKNOWN_ENDPOINT_HOLD_MS);
        if let Err(e) = ctx.store.release_webhook(&message, &ctx.owner, until).await {
            tracing::warn!(error = %e, "cannot release a webhook message");
        }
        return;
    };
    let span = tracing::info_span!(
        "webhook.deliver",
        endpoint = %endpoint.name,
        webhook_id = %message.id,
        event_type = %message.event_type,
        attempt = message.attempts + 1,
    );
    let (response_code, error) = send(&ctx, endpoint, &message).instrument(span).await;
    let at_ms = now_ms();
    let next = if error.is_empty() {
        AttemptNext::Delivered
    } else {
        ctx.schedule.after_failure(
            message.attempts + 1,
            message.first_attempt_at_ms,
            at_ms,
            unit_random(),
        )
    };
    let outcome = match next {
        AttemptNext::Delivered => "delivered",
        AttemptNext::RetryAt(_) => "failed",
        AttemptNext::GiveUp => "gave_up",
    };
    crate::metrics::global().webhook_attempt(&endpoint.name, outcome);
    let record = AttemptRecord {
        at_ms,
        response_code,
        error: error.to_owned(),
        next,
    };
    // The endpoint is disabled once it has failed for the whole retry period: its failures reach back that far,
    // or (a message given up) to the end of that message's first attempt, whose retry period was all failures.
    let mut disable_since = at_ms.saturating_sub(millis(ctx.schedule.retry_for));
    if next == AttemptNext::GiveUp {
        let first_ended = message
            .first_attempt_at_ms
            .saturating_add(millis(ctx.timeout) + 1_000);
        disable_since = disable_since.max(first_ended);
    }
    match ctx
        .store
        .record_webhook_attempt(&message, &ctx.owner, &record, disable_since)
        .await
    {
        Ok(recorded) => {
            if !recorded.written {
                tracing::warn!(
                    endpoint = %endpoint.name,
                    webhook_id = %message.id,
                    "a webhook attempt outlived its lease; another worker owns the message now"
                );
            }
            if recorded.endpoint_disabled {
                tracing::error!(
                    endpoint = %endpoint.name,
                    tenant = %endpoint.tenant,
                    failing_for_secs = ctx.schedule.retry_for.as_secs(),
                    "webhook endpoint disabled: every attempt failed for the retry period; RedeliverWebhook \
                     enables it again"
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, webhook_id = %message.id, "cannot record a webhook attempt")
        }
    }
    match next {
        AttemptNext::Delivered => tracing::debug!(
            endpoint = %endpoint.name, webhook_id = %message.id, event_type = %message.event_type,
            attempts = message.attempts + 1, "webhook delivered"
        ),
        AttemptNext::RetryAt(at) => tracing::info!(
            endpoint = %endpoint.name, webhook_id = %message.id, status = response_code, error,
            attempts = message.attempts + 1, retry_in_ms = at.saturating_sub(at_ms),
            "webhook attempt failed; retrying"
        ),
        AttemptNext::GiveUp => tracing::warn!(
            endpoint = %endpoint.name, webhook_id = %message.id, status = response_code, error,
            attempts = message.attempts + 1, "webhook given up after the retry period"
        ),
    }
}

/// POSTs a message signed; returns the answer's status (0: none) and why it failed (empty: delivered).
async fn send(
    ctx: &Context,
    endpoint: &WebhookEndpoint,
    message: &ClaimedMessage,
) -> (i64, &'static str) {
    let Some(body) = &message.body else {
        // Only a message that is not pending loses its body (at a redaction); one claimed never should.
        return (0, "BODY_GONE");
    };
    let now = now_ms();
    let timestamp = now.div_euclid(1000);
    let Some(sig) = signature(&endpoint.secrets, &message.id, timestamp, body, now) else {
        return (0, "NO_SIGNING_SECRET");
    };
    let request = ctx
        .client
        .post(&endpoint.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sig)
        .body(body.clone());
    match request.send().await {
        Ok(response) => {
            let code = i64::from(response.status().as_u16());
            // The answer's body is not read: the status decides, and a large body costs nothing unread.
            if response.status().is_success() {
                (code, "")
            } else {
                (code, "HTTP_STATUS")
            }
        }
        Err(e) if e.is_timeout() => (0, "TIMEOUT"),
        Err(e) if e.is_connect() => (0, "CONNECT"),
        Err(_) => (0, "REQUEST"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            retry_for: Duration::from_secs(3 * 86_400),
        }
    }

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let s = schedule();
        assert_eq!(s.delay(1, 0.999_999).as_secs(), 4);
        assert_eq!(s.delay(1, 0.0), Duration::from_millis(2500));
        assert_eq!(s.delay(2, 0.0), Duration::from_secs(5));
        assert_eq!(s.delay(3, 0.0), Duration::from_secs(10));
        assert_eq!(s.delay(30, 0.0), Duration::from_secs(1800));
        assert!(s.delay(i64::MAX, 0.999) <= Duration::from_secs(3600));
        for u in [0.0, 0.3, 0.99] {
            let d = s.delay(4, u);
            assert!(
                d >= Duration::from_secs(20) && d <= Duration::from_secs(40),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_message_is_given_up_when_the_next_attempt_would_pass_three_days() {
        let s = schedule();
        let day = 86_400_000;
        assert_eq!(
            s.after_failure(1, 0, 1_000, 0.0),
            AttemptNext::RetryAt(3_500)
        );
        assert!(matches!(
            s.after_failure(60, 0, 3 * day - 3_600_000, 0.0),
            AttemptNext::RetryAt(_)
        ));
        assert_eq!(
            s.after_failure(60, 0, 3 * day - 60_000, 0.5),
            AttemptNext::GiveUp
        );
    }

    #[test]
    fn the_random_unit_stays_in_range() {
        for _ in 0..1000 {
            let u = unit_random();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
