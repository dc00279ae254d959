//! Baidu access_token handling (OAuth 2.0 client credentials, FACTS.md §1.1).
//!
//! One [`TokenCache`] per credential. The token (30 days) is fetched once and shared; it is refreshed by a single
//! request when it nears expiry, however many calls need it at that moment, and once more when Baidu says it is
//! invalid or expired ([`TokenCache::invalidate`]). The request is `POST <base>/oauth/2.0/token?grant_type=
//! client_credentials&client_id=<API Key>&client_secret=<Secret Key>`; the URL carries secrets, so it is never
//! logged, and transport errors are reported without it.
//!
//! A fetch takes at most the client's timeout (`baidu.timeout_secs`), and it is not tried again right after a
//! transient failure (timeout, unreachable, 5xx): for [`FAILURE_HOLD`] every caller, including those that were
//! waiting for that fetch and the adapter's own retries, gets the same failure at once. So a hanging token endpoint
//! costs a call one timeout, not one per retry.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::Secret;
use crate::domain::error::sanitize_vendor_text;
use crate::domain::{Vendor, VendorError, VendorErrorKind};
use crate::vendors::http::send;

/// Source of the current time in unix ms (injectable for tests and the sandbox clock).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A cached token.
#[derive(Clone)]
struct Token {
    value: Secret,
    expires_at_ms: i64,
}

/// How long a transient token failure is answered from memory instead of by a new request.
pub const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// The token, or the last transient failure and when it happened.
#[derive(Default)]
struct State {
    token: Option<Token>,
    failure: Option<(tokio::time::Instant, VendorError)>,
}

/// Shared access_token of one API Key / Secret Key pair.
pub struct TokenCache {
    http: reqwest::Client,
    url: String,
    api_key: Secret,
    secret_key: Secret,
    clock: Clock,
    /// Refresh this long before expiry.
    margin_ms: i64,
    current: Mutex<State>,
}

/// The token endpoint's reply (success and OAuth error fields).
#[derive(Deserialize)]
pub struct TokenReply {
    /// The token.
    pub access_token: Option<String>,
    /// Its lifetime, seconds.
    pub expires_in: Option<i64>,
    /// The OAuth error name.
    pub error: Option<String>,
    /// The OAuth error text.
    pub error_description: Option<String>,
}

const MAX_REPLY_BYTES: usize = 16 * 1024;

fn failure(
    kind: VendorErrorKind,
    code: &str,
    message: &str,
    retry: Option<Duration>,
) -> VendorError {
    VendorError {
        kind,
        vendor: Vendor::Baidu,
        vendor_code: code.to_owned(),
        vendor_message: sanitize_vendor_text(message),
        possibly_billed: false,
        retry_after: retry,
    }
}

impl TokenCache {
    /// A cache for one credential. `margin` is how long before expiry a token is replaced.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: Secret,
        secret_key: Secret,
        clock: Clock,
        margin: Duration,
    ) -> Self {
        Self {
            http,
            url: format!("{}/oauth/2.0/token", base_url.trim_end_matches('/')),
            api_key,
            secret_key,
            clock,
            margin_ms: i64::try_from(margin.as_millis()).unwrap_or(i64::MAX),
            current: Mutex::new(State::default()),
        }
    }

    /// A valid token, fetching one if there is none or it nears expiry. Concurrent callers share one request.
    pub async fn get(&self) -> Result<Secret, VendorError> {
        let mut current = self.current.lock().await;
        if let Some(t) = current.token.as_ref() {
            if (self.clock)() < t.expires_at_ms.saturating_sub(self.margin_ms) {
                return Ok(t.value.clone());
            }
        }
        if let Some((at, e)) = &current.failure {
            if at.elapsed() < FAILURE_HOLD {
                return Err(e.clone());
            }
        }
        match self.fetch().await {
            Ok(fresh) => {
                let value = fresh.value.clone();
                *current = State {
                    token: Some(fresh),
                    failure: None,
                };
                Ok(value)
            }
            Err(e) => {
                let transient = matches!(
                    e.kind,
                    VendorErrorKind::Timeout
                        | VendorErrorKind::Unreachable
                        | VendorErrorKind::Unavailable
                        | VendorErrorKind::RateLimited
                );
                current.failure = transient.then(|| (tokio::time::Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Drops `stale` after Baidu called it invalid or expired, unless another caller already replaced it; the next
    /// [`TokenCache::get`] then fetches a new one (once, however many callers saw the error).
    pub async fn invalidate(&self, stale: &Secret) {
        let mut current = self.current.lock().await;
        if current.token.as_ref().is_some_and(|t| &t.value == stale) {
            current.token = None;
        }
    }

    async fn fetch(&self) -> Result<Token, VendorError> {
        let requested_at = (self.clock)();
        let request = self
            .http
            .post(&self.url)
            .query(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.api_key.expose()),
                ("client_secret", self.secret_key.expose()),
            ])
            .header(reqwest::header::ACCEPT, "application/json");
        let reply = send(Vendor::Baidu, "oauth/2.0/token", request, MAX_REPLY_BYTES)
            .await
            .map_err(|mut e| {
                // A token request is never billed: whatever happened, it is safe to ask again later.
                e.possibly_billed = false;
                e
            })?;
        let (status, body) = (reply.status.as_u16(), reply.body);
        tracing::info!(
            vendor = "baidu",
            endpoint = "oauth/2.0/token",
            http_status = status,
            "vendor reply"
        );
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|_| {
            if status >= 500 {
                failure(
                    VendorErrorKind::Unavailable,
                    &status.to_string(),
                    "token endpoint failed",
                    Some(Duration::from_secs(5)),
                )
            } else {
                failure(
                    VendorErrorKind::ProtocolError,
                    "",
                    "token reply is not the documented JSON",
                    None,
                )
            }
        })?;
        if let Some(error) = reply.error {
            let description = reply.error_description.unwrap_or_default();
            let kind = match error.as_str() {
                "invalid_client" | "unauthorized_client" | "invalid_grant" | "access_denied" => {
                    VendorErrorKind::AccountError
                }
                _ if status >= 500 => VendorErrorKind::Unavailable,
                _ => VendorErrorKind::ProtocolError,
            };
            let retry = (kind == VendorErrorKind::Unavailable).then(|| Duration::from_secs(5));
            return Err(failure(kind, &error, &description, retry));
        }
        match (reply.access_token, reply.expires_in) {
            (Some(token), Some(expires_in))
                if !token.is_empty() && expires_in > 0 && status == 200 =>
            {
                Ok(Token {
                    value: Secret::new(token),
                    expires_at_ms: requested_at.saturating_add(expires_in.saturating_mul(1000)),
                })
            }
            _ => Err(failure(
                VendorErrorKind::ProtocolError,
                &status.to_string(),
                "token reply without access_token and expires_in",
                None,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};

    use super::*;

    #[derive(Default)]
    struct Fake {
        requests: AtomicU64,
    }

    async fn token(
        State(fake): State<Arc<Fake>>,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        let n = fake.requests.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if q.get("client_id").map(String::as_str) != Some("ak") {
            return (
                StatusCode::UNAUTHORIZED,
                Json(
                    serde_json::json!({"error":"invalid_client","error_description":"unknown client id"}),
                ),
            );
        }
        if q.get("client_secret").map(String::as_str) != Some("sk")
            || q.get("grant_type").map(String::as_str) != Some("client_credentials")
        {
            return (
                StatusCode::UNAUTHORIZED,
                Json(
                    serde_json::json!({"error":"invalid_client","error_description":"Client authentication failed"}),
                ),
            );
        }
        (
            StatusCode::OK,
            Json(
                serde_json::json!({"access_token": format!("24.token{n}.2592000.1.282335-1"), "expires_in": 2592000,
                "refresh_token":"25.x", "scope":"public", "session_key":"k", "session_secret":"s"}),
            ),
        )
    }

    async fn serve() -> (String, Arc<Fake>) {
        crate::app::install_crypto_provider();
        let fake = Arc::new(Fake::default());
        let app = Router::new()
            .route("/oauth/2.0/token", post(token))
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), fake)
    }

    fn cache(base: &str, ak: &str, now: Arc<AtomicI64>) -> Arc<TokenCache> {
        Arc::new(TokenCache::new(
            reqwest::Client::new(),
            base,
            Secret::new(ak),
            Secret::new("sk"),
            Arc::new(move || now.load(Ordering::SeqCst)),
            Duration::from_secs(24 * 3600),
        ))
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request_and_refresh_before_expiry() {
        let (base, fake) = serve().await;
        let now = Arc::new(AtomicI64::new(1_000_000));
        let c = cache(&base, "ak", Arc::clone(&now));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let c = Arc::clone(&c);
            tasks.push(tokio::spawn(async move {
                c.get().await.map(|s| s.expose().to_owned())
            }));
        }
        let mut tokens = std::collections::HashSet::new();
        for t in tasks {
            tokens.insert(t.await.unwrap().unwrap());
        }
        assert_eq!(tokens.len(), 1);
        assert_eq!(
            fake.requests.load(Ordering::SeqCst),
            1,
            "exactly one token request"
        );

        // 28 days later: still valid (margin is one day).
        now.fetch_add(28 * 24 * 3600 * 1000, Ordering::SeqCst);
        c.get().await.unwrap();
        assert_eq!(fake.requests.load(Ordering::SeqCst), 1);
        // Inside the last day: one refresh, shared by concurrent callers.
        now.fetch_add(24 * 3600 * 1000 + 1, Ordering::SeqCst);
        let (a, b) = tokio::join!(c.get(), c.get());
        assert_eq!(a.unwrap(), b.unwrap());
        assert_eq!(fake.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn invalidation_refreshes_once() {
        let (base, fake) = serve().await;
        let c = cache(&base, "ak", Arc::new(AtomicI64::new(0)));
        let first = c.get().await.unwrap();
        // Several calls saw "token invalid" for the same token: one refresh.
        for _ in 0..5 {
            c.invalidate(&first).await;
        }
        let second = c.get().await.unwrap();
        assert_ne!(first, second);
        c.invalidate(&first).await;
        assert_eq!(
            c.get().await.unwrap(),
            second,
            "a stale invalidation does not drop the new token"
        );
        assert_eq!(fake.requests.load(Ordering::SeqCst), 2);
    }

    async fn hang(State(fake): State<Arc<Fake>>) -> StatusCode {
        fake.requests.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
        StatusCode::OK
    }

    /// A hanging token endpoint: one request, failed at the client's timeout; concurrent callers and retries right
    /// after get that failure without asking again; after FAILURE_HOLD it is asked again.
    #[tokio::test]
    async fn a_hanging_endpoint_costs_one_timeout_and_is_not_retried_at_once() {
        crate::app::install_crypto_provider();
        let fake = Arc::new(Fake::default());
        let app = Router::new()
            .route("/oauth/2.0/token", post(hang))
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http =
            crate::vendors::http::client(Duration::from_secs(5), Duration::from_secs(1)).unwrap();
        let c = Arc::new(TokenCache::new(
            http,
            &format!("http://{addr}"),
            Secret::new("ak"),
            Secret::new("sk"),
            Arc::new(|| 0),
            Duration::from_secs(60),
        ));
        let (a, b, d) = tokio::join!(c.get(), c.get(), c.get());
        for e in [a, b, d, c.get().await, c.get().await] {
            let e = e.unwrap_err();
            assert_eq!(e.kind, VendorErrorKind::Timeout);
            assert!(!e.possibly_billed);
        }
        assert_eq!(fake.requests.load(Ordering::SeqCst), 1);
        tokio::time::pause();
        tokio::time::advance(FAILURE_HOLD).await;
        tokio::time::resume();
        assert_eq!(c.get().await.unwrap_err().kind, VendorErrorKind::Timeout);
        assert_eq!(fake.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bad_credentials_are_account_errors_without_secrets() {
        let (base, _) = serve().await;
        let e = cache(&base, "wrong-ak", Arc::new(AtomicI64::new(0)))
            .get()
            .await
            .unwrap_err();
        assert_eq!(e.kind, VendorErrorKind::AccountError);
        assert_eq!(e.vendor_code, "invalid_client");
        assert!(!format!("{e:?}").contains("sk"));
        let e = cache("http://127.0.0.1:9", "ak", Arc::new(AtomicI64::new(0)))
            .get()
            .await
            .unwrap_err();
        assert_eq!(e.kind, VendorErrorKind::Unreachable);
        assert!(!e.possibly_billed);
    }
}
