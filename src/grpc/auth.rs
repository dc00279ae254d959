//! Authentication and method-level authorization of every gRPC request: one tower layer around the whole tonic
//! server (`Server::builder().layer(AuthLayer::new(..))`).
//!
//! A request authenticates with `authorization: Bearer <key>` (the key's SHA-256 compared in constant time with
//! every configured caller's hash) or, without a bearer key, with the client certificate subject the listener
//! verified ([`PeerInfo::client_subject`]). The [`Caller`] goes into the request's extensions, where handlers find it
//! ([`caller`]). The method's scope is checked here; GetResult's extra scopes (personal data, media) depend on the
//! message and are checked by its handler. Health and reflection stay open unless configured otherwise. With no
//! callers configured (`auth.mode = "none"`, or sandbox mode), every request acts as [`Caller::anonymous`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic::Code;

use super::conn::{normalize_dn, PeerInfo};
use super::error::status;
use crate::config::{AuthConfig, AuthMode, CallerCredentials};
use crate::domain::caller::{Caller, Scope};

/// ErrorInfo reason of a request without valid credentials.
pub const REASON_UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// ErrorInfo reason of a caller without the scope a call needs (metadata `scope`).
pub const REASON_MISSING_SCOPE: &str = "MISSING_SCOPE";

const SERVICE_PREFIX: &str = "/facegate.v1.VerificationService/";
const SANDBOX_PREFIX: &str = "/facegate.v1.SandboxService/";
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
const REFLECTION_PREFIXES: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Who may call what: the configured callers, or the anonymous caller when none are configured on purpose.
pub struct Authenticator {
    callers: Vec<CallerCredentials>,
    anonymous: Option<Caller>,
    health_open: bool,
    reflection_open: bool,
}

/// What a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A method of the service, needing a scope.
    Method(&'static str, Scope),
    /// Health checks.
    Health,
    /// Server reflection.
    Reflection,
    /// Anything else: authenticated, then answered by tonic (UNIMPLEMENTED).
    Other,
}

/// The scope each method of `facegate.v1.VerificationService` needs.
const METHOD_SCOPES: [(&str, Scope); 11] = [
    ("StartSession", Scope::SessionsCreate),
    ("SubmitIdentity", Scope::SessionsCreate),
    ("UploadReference", Scope::SessionsCreate),
    ("GetResult", Scope::SessionsRead),
    ("StreamStatus", Scope::SessionsRead),
    ("CancelSession", Scope::SessionsCancel),
    ("RedactSession", Scope::SessionsRedact),
    ("ListSessions", Scope::SessionsList),
    ("ListSessionEvents", Scope::SessionsRead),
    ("ListWebhookDeliveries", Scope::WebhooksRead),
    ("RedeliverWebhook", Scope::WebhooksRedeliver),
];

/// The scope each method of `facegate.v1.SandboxService` (served only by a sandbox) needs: playing a session's
/// end user is part of creating it; the scenarios are read.
const SANDBOX_METHOD_SCOPES: [(&str, Scope); 2] = [
    ("SimulateOutcome", Scope::SessionsCreate),
    ("ListScenarios", Scope::SessionsRead),
];

fn target(path: &str) -> Target {
    let methods = if let Some(name) = path.strip_prefix(SERVICE_PREFIX) {
        Some((name, &METHOD_SCOPES[..]))
    } else {
        path.strip_prefix(SANDBOX_PREFIX)
            .map(|name| (name, &SANDBOX_METHOD_SCOPES[..]))
    };
    if let Some((name, scopes)) = methods {
        return scopes
            .iter()
            .find(|(m, _)| *m == name)
            .map(|(m, s)| Target::Method(m, *s))
            .unwrap_or(Target::Other);
    }
    if path.starts_with(HEALTH_PREFIX) {
        return Target::Health;
    }
    if REFLECTION_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return Target::Reflection;
    }
    Target::Other
}

/// Why a request was refused (its log line carries no credential).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// No credentials, or credentials no caller has.
    Unauthenticated(&'static str),
    /// The caller lacks a scope.
    MissingScope(Box<Caller>, Scope),
}

impl Authenticator {
    /// The authenticator of `auth` (key files read). `sandbox` says whether this is sandbox mode, where no callers
    /// means every request is anonymous (as `auth.mode = "none"` does elsewhere); with callers, sandbox mode
    /// authenticates as production does.
    pub fn new(auth: &AuthConfig, sandbox: bool) -> Result<Self, String> {
        let callers = auth.credentials().map_err(|p| p.join("; "))?;
        let anonymous = (callers.is_empty() && (sandbox || auth.mode == AuthMode::None))
            .then(|| Caller::anonymous(&auth.default_tenant));
        Ok(Self {
            callers,
            anonymous,
            health_open: auth.health_open,
            reflection_open: auth.reflection_open,
        })
    }

    /// Whether every request acts as the anonymous caller.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }

    /// The caller a request acts as, or why it is refused. `None` for an open health or reflection call made
    /// without credentials.
    fn check(&self, path: &str, headers: &http::HeaderMap, peer: Option<&PeerInfo>) -> Checked {
        let target = target(path);
        if let Some(anon) = &self.anonymous {
            return Checked::Caller(anon.clone());
        }
        let open = match target {
            Target::Health => self.health_open,
            Target::Reflection => self.reflection_open,
            Target::Method(..) | Target::Other => false,
        };
        if open {
            return Checked::Open;
        }
        let caller = match self.authenticate(headers, peer) {
            Ok(c) => c,
            Err(why) => return Checked::Refused(Refusal::Unauthenticated(why)),
        };
        if let Target::Method(_, scope) = target {
            if !caller.has(scope) {
                return Checked::Refused(Refusal::MissingScope(Box::new(caller), scope));
            }
        }
        Checked::Caller(caller)
    }

    /// The caller whose bearer key (or, without one, whose client certificate) the request presents.
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<Caller, &'static str> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let key = bearer_key(value).ok_or("malformed authorization header")?;
            let digest: [u8; 32] = Sha256::digest(key).into();
            // Every configured hash is compared, in constant time, whichever matches.
            let mut matched = None;
            for (i, c) in self.callers.iter().enumerate() {
                if let Some(hash) = &c.key_sha256 {
                    let equal: bool = hash.ct_eq(&digest).into();
                    if equal && matched.is_none() {
                        matched = Some(i);
                    }
                }
            }
            return matched
                .map(|i| self.callers[i].caller.clone())
                .ok_or("unknown key");
        }
        let subject = peer
            .and_then(|p| p.client_subject.as_deref())
            .map(normalize_dn);
        match subject {
            Some(subject) => self
                .callers
                .iter()
                .find(|c| c.mtls_subject.as_deref() == Some(subject.as_str()))
                .map(|c| c.caller.clone())
                .ok_or("client certificate of no caller"),
            None => Err("no credentials"),
        }
    }
}

enum Checked {
    Caller(Caller),
    Open,
    Refused(Refusal),
}

/// The key of `Bearer <key>` (scheme case-insensitive); `None` for anything else.
fn bearer_key(value: &http::HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let key = rest.trim_ascii();
    (!key.is_empty() && key.iter().all(|b| b.is_ascii_graphic())).then_some(key)
}

/// The peer address of a request: from the listener's [`PeerInfo`], or the plain TCP connection's.
fn peer_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<PeerInfo>()
        .and_then(|p| p.remote_addr)
        .or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(|t| t.remote_addr())
        })
}

/// The peer address a handler's request came from, for the audit trail.
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    peer_addr(request.extensions())
}

/// The request path as a log value: itself when it is short plain text, else `other`.
fn loggable_path(path: &str) -> &str {
    if path.len() <= 200 && path.bytes().all(|b| b.is_ascii_graphic()) {
        path
    } else {
        "other"
    }
}

/// The authenticated caller of a request, put there by the auth layer. Its absence is a wiring fault, never a
/// reason to act as anyone.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("request reached a handler without an authenticated caller");
            status(
                Code::Internal,
                "INTERNAL",
                "the request has no authenticated caller",
                Default::default(),
                None,
                vec![],
            )
        })
}

/// PERMISSION_DENIED for a caller without `scope` (reason `MISSING_SCOPE`, metadata `scope`), counted and logged.
pub fn missing_scope(
    caller: &Caller,
    scope: Scope,
    method: &str,
    peer: Option<SocketAddr>,
) -> tonic::Status {
    crate::metrics::global().auth_failure(REASON_MISSING_SCOPE);
    let peer = peer.map(|a| a.to_string()).unwrap_or_default();
    tracing::warn!(reason = REASON_MISSING_SCOPE, caller = %caller.id, tenant = %caller.tenant,
        scope = scope.as_str(), peer = %peer, method, "request refused");
    status(
        Code::PermissionDenied,
        REASON_MISSING_SCOPE,
        format!("caller {} lacks scope {scope}", caller.id),
        [("scope".to_owned(), scope.as_str().to_owned())].into(),
        None,
        vec![],
    )
}

/// Checks a scope a handler needs beyond its method's (GetResult's personal data and media).
pub fn require<T>(
    request: &tonic::Request<T>,
    caller: &Caller,
    scope: Scope,
    method: &str,
) -> Result<(), tonic::Status> {
    if caller.has(scope) {
        Ok(())
    } else {
        Err(missing_scope(caller, scope, method, peer_of(request)))
    }
}

/// The tower layer (see the module docs).
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer authenticating with `auth`.
    pub fn new(auth: Authenticator) -> Self {
        Self {
            auth: Arc::new(auth),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// A service behind [`AuthLayer`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let checked = self.auth.check(
            &path,
            request.headers(),
            request.extensions().get::<PeerInfo>(),
        );
        let refusal = match checked {
            Checked::Caller(caller) => {
                request.extensions_mut().insert(caller);
                None
            }
            Checked::Open => None,
            Checked::Refused(r) => Some(r),
        };
        if let Some(refusal) = refusal {
            let addr = peer_addr(request.extensions());
            let peer = addr.map(|a| a.to_string()).unwrap_or_default();
            let method = loggable_path(&path).to_owned();
            let status = match refusal {
                Refusal::Unauthenticated(why) => {
                    crate::metrics::global().auth_failure(REASON_UNAUTHENTICATED);
                    tracing::warn!(reason = REASON_UNAUTHENTICATED, detail = why, peer = %peer,
                        method = %method, "request refused");
                    status(
                        Code::Unauthenticated,
                        REASON_UNAUTHENTICATED,
                        "valid credentials are required: authorization: Bearer <key>, or a client certificate",
                        Default::default(),
                        None,
                        vec![],
                    )
                }
                Refusal::MissingScope(caller, scope) => {
                    missing_scope(&caller, scope, &method, addr)
                }
            };
            return Box::pin(async move { Ok(status.into_http::<Body>()) });
        }
        // The clone that was polled ready serves this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CallerConfig;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn auth(callers: Vec<CallerConfig>) -> AuthConfig {
        AuthConfig {
            callers,
            ..Default::default()
        }
    }

    fn keyed(id: &str, key: &str, scopes: &[&str]) -> CallerConfig {
        CallerConfig {
            id: id.into(),
            tenant: format!("t-{id}"),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            api_key_sha256: hex(&Sha256::digest(key.as_bytes())),
            ..Default::default()
        }
    }

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = authorization {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    const START: &str = "/facegate.v1.VerificationService/StartSession";

    fn caller_of(c: Checked) -> Option<Caller> {
        match c {
            Checked::Caller(c) => Some(c),
            _ => None,
        }
    }

    #[test]
    fn keys_and_subjects_authenticate_and_scopes_are_checked() {
        let mut mtls = keyed("m", "unused", &["sessions:read"]);
        mtls.api_key_sha256.clear();
        mtls.mtls_subject = "CN=m, O=Shop".into();
        let a = Authenticator::new(
            &auth(vec![
                keyed("a", "key-a", &["sessions:create"]),
                keyed("b", "key-b", &["sessions:read"]),
                mtls,
            ]),
            false,
        )
        .unwrap();
        let got = caller_of(a.check(START, &headers(Some("Bearer key-a")), None)).unwrap();
        assert_eq!((got.id.as_str(), got.tenant.as_str()), ("a", "t-a"));
        assert_eq!(
            caller_of(a.check(START, &headers(Some("bearer  key-a ")), None)).map(|c| c.id),
            Some("a".into())
        );
        for bad in [
            None,
            Some("Bearer nope"),
            Some("Basic a2V5LWE="),
            Some("Bearer "),
        ] {
            assert!(matches!(
                a.check(START, &headers(bad), None),
                Checked::Refused(Refusal::Unauthenticated(_))
            ));
        }
        match a.check(START, &headers(Some("Bearer key-b")), None) {
            Checked::Refused(Refusal::MissingScope(c, s)) => {
                assert_eq!((c.id.as_str(), s), ("b", Scope::SessionsCreate))
            }
            _ => panic!("b may not start sessions"),
        }
        let peer = PeerInfo {
            remote_addr: None,
            client_subject: Some("cn=m,o=Shop".into()),
        };
        let get = "/facegate.v1.VerificationService/GetResult";
        assert_eq!(
            caller_of(a.check(get, &headers(None), Some(&peer))).map(|c| c.id),
            Some("m".into())
        );
        // A wrong key is refused even with a good certificate.
        assert!(matches!(
            a.check(get, &headers(Some("Bearer wrong")), Some(&peer)),
            Checked::Refused(Refusal::Unauthenticated(_))
        ));
        let stranger = PeerInfo {
            remote_addr: None,
            client_subject: Some("CN=x".into()),
        };
        assert!(matches!(
            a.check(get, &headers(None), Some(&stranger)),
            Checked::Refused(_)
        ));
        // Unknown methods need a caller too.
        assert!(matches!(
            a.check(
                "/facegate.v1.VerificationService/Nope",
                &headers(None),
                None
            ),
            Checked::Refused(_)
        ));
    }

    #[test]
    fn sandbox_methods_need_their_scopes() {
        let a = Authenticator::new(
            &auth(vec![
                keyed("creator", "key-c", &["sessions:create"]),
                keyed("reader", "key-r", &["sessions:read"]),
            ]),
            true,
        )
        .unwrap();
        let simulate = "/facegate.v1.SandboxService/SimulateOutcome";
        let scenarios = "/facegate.v1.SandboxService/ListScenarios";
        assert!(caller_of(a.check(simulate, &headers(Some("Bearer key-c")), None)).is_some());
        assert!(matches!(
            a.check(simulate, &headers(Some("Bearer key-r")), None),
            Checked::Refused(Refusal::MissingScope(_, Scope::SessionsCreate))
        ));
        assert!(caller_of(a.check(scenarios, &headers(Some("Bearer key-r")), None)).is_some());
        assert!(matches!(
            a.check(scenarios, &headers(Some("Bearer key-c")), None),
            Checked::Refused(Refusal::MissingScope(_, Scope::SessionsRead))
        ));
        assert!(matches!(
            a.check(simulate, &headers(None), None),
            Checked::Refused(Refusal::Unauthenticated(_))
        ));
    }

    #[test]
    fn health_and_reflection_are_open_unless_closed() {
        let mut cfg = auth(vec![keyed("a", "key-a", &[])]);
        let a = Authenticator::new(&cfg, false).unwrap();
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(matches!(a.check(path, &headers(None), None), Checked::Open));
        }
        cfg.health_open = false;
        cfg.reflection_open = false;
        let a = Authenticator::new(&cfg, false).unwrap();
        assert!(matches!(
            a.check("/grpc.health.v1.Health/Check", &headers(None), None),
            Checked::Refused(_)
        ));
        assert!(caller_of(a.check(
            "/grpc.health.v1.Health/Check",
            &headers(Some("Bearer key-a")),
            None
        ))
        .is_some());
    }

    #[test]
    fn anonymous_only_without_callers_in_mode_none_or_sandbox() {
        let mut cfg = AuthConfig::default();
        assert!(!Authenticator::new(&cfg, false).unwrap().is_anonymous());
        assert!(Authenticator::new(&cfg, true).unwrap().is_anonymous());
        cfg.mode = AuthMode::None;
        let a = Authenticator::new(&cfg, false).unwrap();
        let anon = caller_of(a.check(START, &headers(None), None)).unwrap();
        assert_eq!(anon, Caller::anonymous("default"));
        // Sandbox mode with callers authenticates.
        let cfg = auth(vec![keyed("a", "key-a", &["sessions:create"])]);
        assert!(!Authenticator::new(&cfg, true).unwrap().is_anonymous());
    }
}
