//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one
//! `v1,...` entry per signing secret, separated by spaces (during a rotation the old and the new secret both sign,
//! and a receiver holding either verifies).

use base64::Engine;
use hmac::{KeyInit, Mac};

use crate::config::WebhookSecret;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The `webhook-signature` value of a message at `timestamp` (unix seconds), signed by every secret that still
/// signs at `now_ms`. `None` when no secret signs (never with a checked configuration: the current one always does).
pub fn signature(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &str,
    now_ms: i64,
) -> Option<String> {
    let entries: Vec<String> = secrets
        .iter()
        .filter(|s| s.until_ms.is_none_or(|until| now_ms < until))
        .filter_map(|s| {
            let mut mac = HmacSha256::new_from_slice(&s.key).ok()?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body.as_bytes());
            let tag = mac.finalize().into_bytes();
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(tag)
            ))
        })
        .collect();
    (!entries.is_empty()).then(|| entries.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8, until_ms: Option<i64>) -> WebhookSecret {
        WebhookSecret {
            key: vec![byte; 32],
            until_ms,
        }
    }

    #[test]
    fn the_reference_crate_verifies_the_signature() {
        let key = vec![3u8; 32];
        let whsec = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&key)
        );
        let body = r#"{"type":"session.verified"}"#;
        let ts = crate::domain::now_ms() / 1000;
        let header = signature(
            &[WebhookSecret {
                key,
                until_ms: None,
            }],
            "msg_1",
            ts,
            body,
            0,
        )
        .unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", header.parse().unwrap());
        let wh = standardwebhooks::Webhook::new(&whsec).unwrap();
        wh.verify(body.as_bytes(), &headers).unwrap();
        assert!(wh
            .verify(b"{\"type\":\"session.failed\"}", &headers)
            .is_err());
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_until_the_old_one_expires() {
        let secrets = [secret(1, None), secret(2, Some(1_000))];
        let both = signature(&secrets, "msg_1", 5, "{}", 999).unwrap();
        assert_eq!(both.split(' ').count(), 2);
        let current = signature(&secrets, "msg_1", 5, "{}", 1_000).unwrap();
        assert_eq!(current.split(' ').count(), 1);
        assert!(both.starts_with(&current));
        assert!(signature(&[secret(1, Some(10))], "msg_1", 5, "{}", 10).is_none());
    }
}
