//! ListSessions: page sizes and page tokens (AIP-158).
//!
//! A page token is opaque to the caller. It holds the position of the last session of its page (`created_at_ms`
//! and id: keyset pagination, so a page costs the same however deep it is and sessions created meanwhile cause no
//! duplicates or gaps), a digest of the tenant and the filters it was made for, and an HMAC-SHA256 tag over both
//! under a key derived from the store's fingerprint key. A token that was altered, made for another tenant or used
//! with other filters is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::error::Error;
pub use crate::store::ListFilter;

/// Sessions per page when the request asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page; larger requests are given this many (AIP-158 coerces rather than refuses).
pub const MAX_PAGE_SIZE: u32 = 500;
/// The longest page token accepted, in characters (real ones are far shorter: ids are 36 characters).
const MAX_TOKEN_LEN: usize = 512;
/// The token format's version byte.
const TOKEN_VERSION: u8 = 1;
/// Bytes of the filter digest kept in a token.
const DIGEST_LEN: usize = 16;
/// Bytes of the HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// Version, `created_at_ms`, digest.
const HEADER_LEN: usize = 1 + 8 + DIGEST_LEN;

type HmacSha256 = hmac::Hmac<Sha256>;

/// What ListSessions asks for, validated except for the page token.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Sessions per page as asked (0: the default).
    pub page_size: i32,
    /// The previous page's `next_page_token`; empty for the first page.
    pub page_token: String,
    /// The filters.
    pub filter: ListFilter,
}

/// The page size a request gets: 0 is [`DEFAULT_PAGE_SIZE`], more than [`MAX_PAGE_SIZE`] is coerced to it.
pub fn page_size(asked: i32) -> Result<u32, Error> {
    match u32::try_from(asked) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
        Err(_) => Err(Error::invalid("page_size", "must not be negative")),
    }
}

/// Makes and checks page tokens.
#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(..)")
    }
}

impl PageTokens {
    /// Tokens keyed by a key derived from the store's fingerprint key (so every replica over the same store
    /// accepts the tokens of the others, and the fingerprint key itself is never used for two purposes).
    pub fn new(fingerprint_key: &[u8]) -> Result<Self, Error> {
        let key = mac_with(fingerprint_key)?
            .chain_update(b"facegate.v1 ListSessions page token")
            .finalize()
            .into_bytes()
            .to_vec();
        Ok(Self { key })
    }

    /// The token of the position after `(created_at_ms, id)` for `tenant` and `filter`.
    pub fn encode(
        &self,
        tenant: &str,
        filter: &ListFilter,
        created_at_ms: i64,
        id: &str,
    ) -> Result<String, Error> {
        let mut body = Vec::with_capacity(HEADER_LEN + id.len() + TAG_LEN);
        body.push(TOKEN_VERSION);
        body.extend_from_slice(&created_at_ms.to_be_bytes());
        body.extend_from_slice(&filter_digest(tenant, filter)[..DIGEST_LEN]);
        body.extend_from_slice(id.as_bytes());
        let tag = mac_with(&self.key)?
            .chain_update(&body)
            .finalize()
            .into_bytes();
        body.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(body))
    }

    /// The position a token of `tenant` and `filter` continues after; INVALID_ARGUMENT (field `page_token`) for a
    /// token that was altered or made for another tenant or other filters.
    pub fn decode(
        &self,
        token: &str,
        tenant: &str,
        filter: &ListFilter,
    ) -> Result<(i64, String), Error> {
        let invalid = || {
            Error::invalid(
                "page_token",
                "not a page token of this service (altered or truncated)",
            )
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(invalid());
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        mac_with(&self.key)?
            .chain_update(body)
            .verify_slice(tag)
            .map_err(|_| invalid())?;
        if body[0] != TOKEN_VERSION {
            return Err(invalid());
        }
        if body[9..HEADER_LEN] != filter_digest(tenant, filter)[..DIGEST_LEN] {
            return Err(Error::invalid(
                "page_token",
                "the page token was made for other filters or another tenant: repeat the filters of the first \
                 page's request",
            ));
        }
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&body[1..9]);
        let id = std::str::from_utf8(&body[HEADER_LEN..]).map_err(|_| invalid())?;
        Ok((i64::from_be_bytes(ms), id.to_owned()))
    }
}

/// An HMAC-SHA256 keyed with `key` (it takes keys of any length: the error does not happen).
fn mac_with(key: &[u8]) -> Result<HmacSha256, Error> {
    HmacSha256::new_from_slice(key).map_err(|_| Error::Internal("HMAC key refused".into()))
}

/// SHA-256 of the tenant and the filters, each length-prefixed (so no two different requests share a digest).
fn filter_digest(tenant: &str, filter: &ListFilter) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(tenant.as_bytes());
    field(filter.state.map_or("", |s| s.as_str()).as_bytes());
    field(filter.vendor.map_or("", |v| v.as_str()).as_bytes());
    field(filter.client_reference_id.as_bytes());
    field(&time_bound(filter.created_from_ms));
    field(&time_bound(filter.created_before_ms));
    h.finalize().into()
}

fn time_bound(ms: Option<i64>) -> Vec<u8> {
    ms.map(|t| t.to_be_bytes().to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::State;

    fn filter() -> ListFilter {
        ListFilter {
            state: Some(State::Verified),
            ..Default::default()
        }
    }

    #[test]
    fn a_token_round_trips_for_its_tenant_and_filters() {
        let tokens = PageTokens::new(b"k").unwrap();
        let t = tokens
            .encode("acme", &filter(), 1_700_000_000_000, "ses_ab")
            .unwrap();
        assert_eq!(
            tokens.decode(&t, "acme", &filter()).unwrap(),
            (1_700_000_000_000, "ses_ab".to_owned())
        );
    }

    #[test]
    fn other_tenants_filters_keys_and_altered_tokens_are_refused() {
        let tokens = PageTokens::new(b"k").unwrap();
        let t = tokens.encode("acme", &filter(), 5, "ses_ab").unwrap();
        assert!(tokens.decode(&t, "other", &filter()).is_err());
        assert!(tokens.decode(&t, "acme", &ListFilter::default()).is_err());
        assert!(PageTokens::new(b"k2")
            .unwrap()
            .decode(&t, "acme", &filter())
            .is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        bytes[3] ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(&bytes);
        assert!(tokens.decode(&altered, "acme", &filter()).is_err());
        assert!(tokens.decode("", "acme", &filter()).is_err());
        assert!(tokens.decode("!!", "acme", &filter()).is_err());
        assert!(tokens
            .decode(&"A".repeat(10_000), "acme", &filter())
            .is_err());
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(100_000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }
}
