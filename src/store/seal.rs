//! Encryption at rest: a [`KeyRing`] of data keys seals what the store keeps with XChaCha20-Poly1305 (192-bit
//! random nonces, so one key may seal billions of records), binding each sealed value to its row (the associated
//! data, e.g. the session id) so that it cannot be moved to another.
//!
//! A sealed value is the text `s1:<key id>:<base64(nonce || ciphertext)>`. The first key of the ring seals; every
//! key opens, so keys rotate without downtime (add the new key first, then re-seal with `facegate rotate-keys`).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, Generate, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use hmac::Mac;

use super::StoreError;

/// The version prefix of a sealed value.
const PREFIX: &str = "s1";
/// Bytes of a data key.
pub const KEY_BYTES: usize = 32;
/// Bytes of an XChaCha20 nonce.
const NONCE_BYTES: usize = 24;
/// Longest key id.
const MAX_KEY_ID: usize = 32;

/// One data key.
#[derive(Clone)]
struct DataKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The data keys of the store: the first seals, all open. `Debug` shows the key ids only.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<DataKey>,
    ephemeral: bool,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids())
            .field("ephemeral", &self.ephemeral)
            .finish()
    }
}

/// Whether `id` is a usable key id: 1 to 32 ASCII letters, digits, `-` or `.` (no `:`, nor SQL LIKE wildcards).
fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl KeyRing {
    /// A ring from `id:base64key` entries, each with the setting it came from (for messages); blank entries and
    /// lines starting with `#` are skipped. The error lists every problem, each naming its setting and key id and
    /// never showing key bytes.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<Option<Self>, Vec<String>> {
        let mut keys: Vec<DataKey> = Vec::new();
        let mut problems = Vec::new();
        for (at, entry) in entries {
            let entry = entry.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let Some((id, key)) = entry.split_once(':') else {
                problems.push(format!("{at}: expected id:base64key"));
                continue;
            };
            let id = id.trim();
            if !valid_key_id(id) {
                problems.push(format!(
                    "{at}: the key id must be 1 to {MAX_KEY_ID} letters, digits, '-' or '.'"
                ));
                continue;
            }
            if keys.iter().any(|k| k.id == id) {
                problems.push(format!("{at}: key id {id:?} is declared twice"));
                continue;
            }
            match STANDARD
                .decode(key.trim())
                .map(|b| Key::try_from(b.as_slice()).ok())
            {
                Ok(Some(key)) => keys.push(DataKey {
                    id: id.to_owned(),
                    cipher: XChaCha20Poly1305::new(&key),
                }),
                Ok(None) => problems.push(format!(
                    "{at}: key {id:?} must be {KEY_BYTES} bytes (base64 of 32 random bytes)"
                )),
                Err(_) => problems.push(format!("{at}: key {id:?} is not valid base64")),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok((!keys.is_empty()).then_some(Self {
            keys,
            ephemeral: false,
        }))
    }

    /// A ring of one random key that lives as long as this process (the sandbox without a configured key). Like
    /// `uuid::Uuid::new_v4`, it needs the operating system's random source, which does not fail on supported
    /// systems.
    pub fn ephemeral() -> Self {
        Self {
            keys: vec![DataKey {
                id: "ephemeral".to_owned(),
                cipher: XChaCha20Poly1305::new(&Key::generate()),
            }],
            ephemeral: true,
        }
    }

    /// Whether the ring is [`KeyRing::ephemeral`].
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The key ids, the sealing one first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The id of the key that seals.
    pub fn sealing_key_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    /// Seals `plaintext`, bound to `aad`, with the first key.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<String, StoreError> {
        let key = self
            .keys
            .first()
            .ok_or_else(|| StoreError::Database("no encryption key".into()))?;
        let nonce = XNonce::try_generate()
            .map_err(|e| StoreError::Database(format!("no random source for a nonce: {e}")))?;
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Database("cannot seal a record".into()))?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}:{}:{}", key.id, STANDARD.encode(out)))
    }

    /// Opens a value of [`KeyRing::seal`] bound to `aad`. Errors name the key id at most, never data or key bytes.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, StoreError> {
        let (id, body) = split_sealed(sealed)
            .ok_or_else(|| StoreError::Corrupt("not a sealed record".into()))?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "record sealed with key id {id:?}, which store.encryption_keys does not hold"
            ))
        })?;
        let bytes = STANDARD
            .decode(body)
            .map_err(|_| StoreError::Corrupt("sealed record is not base64".into()))?;
        if bytes.len() < NONCE_BYTES {
            return Err(StoreError::Corrupt("sealed record is too short".into()));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce)
            .map_err(|_| StoreError::Corrupt("sealed record is too short".into()))?;
        key.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError::Corrupt(format!(
                    "sealed record does not open with key {id:?} (altered, or moved from another row)"
                ))
            })
    }

    /// A keyed hash (HMAC-SHA256, hex) of `value` under `key`, for looking up caller-supplied values (request ids)
    /// without storing them.
    pub fn keyed_hash(key: &[u8], value: &str) -> String {
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
            Ok(m) => m,
            // HMAC takes keys of any length.
            Err(_) => return String::new(),
        };
        mac.update(value.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(out.len() * 2);
        for b in out {
            hex.push_str(&format!("{b:02x}"));
        }
        format!("h1:{hex}")
    }
}

/// The key id and body of a sealed value, if it is one.
fn split_sealed(sealed: &str) -> Option<(&str, &str)> {
    let rest = sealed.strip_prefix(PREFIX)?.strip_prefix(':')?;
    rest.split_once(':')
}

/// The key id a value was sealed with, if it is a sealed value.
pub fn sealed_key_id(sealed: &str) -> Option<&str> {
    split_sealed(sealed).map(|(id, _)| id)
}

/// 32 random bytes from the operating system.
pub fn random_key() -> Result<Vec<u8>, StoreError> {
    let key = Key::try_generate()
        .map_err(|e| StoreError::Database(format!("no random source for a key: {e}")))?;
    Ok(key.to_vec())
}

/// A new random 32-byte key as `base64` (for generating keys in tests and tools).
pub fn generate_key_base64() -> Result<String, StoreError> {
    Ok(STANDARD.encode(random_key()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(entries: &[&str]) -> KeyRing {
        KeyRing::parse(
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("store.encryption_keys[{i}]"), *e)),
        )
        .unwrap()
        .unwrap()
    }

    fn entry(id: &str) -> String {
        format!("{id}:{}", generate_key_base64().unwrap())
    }

    #[test]
    fn seals_and_opens_bound_to_the_row() {
        let r = ring(&[&entry("k1")]);
        let sealed = r.seal("sess_1", b"{\"name\":\"canary\"}").unwrap();
        assert!(sealed.starts_with("s1:k1:"));
        assert!(!sealed.contains("canary"));
        assert_eq!(r.open("sess_1", &sealed).unwrap(), b"{\"name\":\"canary\"}");
        assert!(matches!(
            r.open("sess_2", &sealed),
            Err(StoreError::Corrupt(_))
        ));
        // Two seals of the same value differ (random nonces).
        assert_ne!(sealed, r.seal("sess_1", b"{\"name\":\"canary\"}").unwrap());
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = entry("k1");
        let new = entry("k2");
        let before = ring(&[&old]);
        let sealed_old = before.seal("a", b"x").unwrap();
        let after = ring(&[&new, &old]);
        assert_eq!(after.open("a", &sealed_old).unwrap(), b"x");
        assert_eq!(sealed_key_id(&after.seal("a", b"x").unwrap()), Some("k2"));
        let e = ring(&[&new])
            .open("a", &sealed_old)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"k1\""), "{e}");
    }

    #[test]
    fn bad_keys_are_named_without_their_bytes() {
        let short = STANDARD.encode([7u8; 16]);
        let e = KeyRing::parse([
            ("a".to_owned(), format!("k1:{short}").as_str()),
            ("b".to_owned(), "nocolon"),
            ("c".to_owned(), "bad id:AAAA"),
            ("d".to_owned(), "k4:!!notbase64!!"),
        ])
        .unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        let all = e.join("\n");
        assert!(!all.contains(&short) && !all.contains("notbase64"), "{all}");
        let dup = entry("k1");
        assert!(KeyRing::parse([
            ("x".to_owned(), dup.as_str()),
            ("y".to_owned(), dup.as_str())
        ])
        .is_err());
        assert!(KeyRing::parse([("x".to_owned(), " ")]).unwrap().is_none());
    }

    #[test]
    fn debug_shows_ids_only() {
        let e = entry("k1");
        let r = ring(&[&e]);
        let d = format!("{r:?}");
        assert!(d.contains("k1"));
        assert!(!d.contains(e.split_once(':').unwrap().1));
    }

    #[test]
    fn keyed_hash_depends_on_key_and_value() {
        let a = KeyRing::keyed_hash(b"k", "req-1");
        assert!(a.starts_with("h1:"));
        assert_ne!(a, KeyRing::keyed_hash(b"k", "req-2"));
        assert_ne!(a, KeyRing::keyed_hash(b"j", "req-1"));
        assert!(!a.contains("req-1"));
    }
}
