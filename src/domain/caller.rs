//! Who is calling: the authenticated [`Caller`] every RPC acts as, its tenant and its [`Scope`]s.
//!
//! The gRPC auth layer (`grpc::auth`) turns a bearer key or a verified client certificate into a `Caller` and puts it
//! in the request's extensions; handlers hand it to the domain, which keeps every session to its owner's tenant.

use std::collections::BTreeSet;
use std::fmt;

/// The tenant of the anonymous caller (no callers configured) and of rows written before tenants existed, unless
/// `auth.default_tenant` says otherwise.
pub const DEFAULT_TENANT: &str = "default";
/// The id of the caller every request acts as when no callers are configured.
pub const ANONYMOUS: &str = "anonymous";

/// A permission a caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// StartSession, SubmitIdentity, UploadReference.
    SessionsCreate,
    /// GetResult, StreamStatus.
    SessionsRead,
    /// CancelSession.
    SessionsCancel,
    /// GetResult with `reveal_personal_data`.
    PersonalDataReveal,
    /// GetResult with `include_face_image` or `include_media`.
    MediaRead,
    /// ListSessions.
    SessionsList,
    /// RedactSession.
    SessionsRedact,
    /// ListWebhookDeliveries.
    WebhooksRead,
    /// RedeliverWebhook.
    WebhooksRedeliver,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 9] = [
        Scope::SessionsCreate,
        Scope::SessionsRead,
        Scope::SessionsCancel,
        Scope::PersonalDataReveal,
        Scope::MediaRead,
        Scope::SessionsList,
        Scope::SessionsRedact,
        Scope::WebhooksRead,
        Scope::WebhooksRedeliver,
    ];

    /// The name used in config and in `MISSING_SCOPE` errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SessionsCreate => "sessions:create",
            Scope::SessionsRead => "sessions:read",
            Scope::SessionsCancel => "sessions:cancel",
            Scope::PersonalDataReveal => "personal_data:reveal",
            Scope::MediaRead => "media:read",
            Scope::SessionsList => "sessions:list",
            Scope::SessionsRedact => "sessions:redact",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksRedeliver => "webhooks:redeliver",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller. Holds no secret: only who it is, its tenant and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The configured caller id (in logs, traces, metrics and the audit trail).
    pub id: String,
    /// The tenant its sessions belong to.
    pub tenant: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
}

impl Caller {
    /// The caller every request acts as when no callers are configured: all scopes, in `tenant`.
    pub fn anonymous(tenant: &str) -> Self {
        Self {
            id: ANONYMOUS.to_owned(),
            tenant: tenant.to_owned(),
            scopes: Scope::ALL.into_iter().collect(),
        }
    }

    /// Whether the caller holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_anonymous_has_all() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("sessions:delete"), None);
        let a = Caller::anonymous(DEFAULT_TENANT);
        assert!(Scope::ALL.into_iter().all(|s| a.has(s)));
        assert_eq!(a.id, "anonymous");
        assert_eq!(a.tenant, "default");
    }
}
