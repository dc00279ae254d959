//! Juhe `verifyface/verifyEncry` field encryption.
//!
//! Scheme (juhe-verifyface-api.txt §2, FACTS.md §3):
//! - key: the first 16 characters of the lowercase hex MD5 of the account
//!   `openid`, used as 16 ASCII bytes, i.e. an AES-128 key;
//! - cipher: AES/ECB/PKCS5Padding (PKCS#7 with a 16-byte block), no IV;
//! - output: standard base64 (alphabet with `+` and `/`, `=` padding).
//!
//! The plaintext is the UTF-8 bytes of the field value. For `image` that is
//! the base64 *text* of the picture, not the raw picture bytes.
//!
//! The ciphertext still has to be form-urlencoded exactly once for transport;
//! that is the HTTP client's job, not this module's.

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyInit};
use aes::Aes128;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use md5::{Digest, Md5};

type Aes128EcbEnc = ecb::Encryptor<Aes128>;
type Aes128EcbDec = ecb::Decryptor<Aes128>;

const BLOCK_LEN: usize = 16;

/// Why a field could not be decrypted. Messages never contain field data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The value is not valid standard base64.
    #[error("ciphertext is not valid standard base64")]
    BadBase64,
    /// The decoded ciphertext is empty or not a multiple of the AES block size.
    #[error("ciphertext length is not a positive multiple of 16 bytes")]
    BadLength,
    /// PKCS#7 padding check failed (typically a wrong key or altered data).
    #[error("ciphertext padding is invalid")]
    BadPadding,
    /// The decrypted bytes are not UTF-8 text.
    #[error("decrypted data is not valid UTF-8")]
    NotUtf8,
}

/// AES-128 key derived from a Juhe `openid`.
///
/// `Debug` never shows the key material.
#[derive(Clone)]
pub struct JuheKey([u8; 16]);

impl std::fmt::Debug for JuheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JuheKey(***)")
    }
}

impl JuheKey {
    /// Key = first 16 chars of lowercase hex `md5(openid)`, as ASCII bytes.
    pub fn from_openid(openid: &str) -> Self {
        fn hex_lower(nibble: u8) -> u8 {
            match nibble {
                0..=9 => b'0' + nibble,
                _ => b'a' + (nibble - 10),
            }
        }
        let digest = Md5::digest(openid.as_bytes());
        let hex = digest
            .iter()
            .flat_map(|b| [hex_lower(b >> 4), hex_lower(b & 0x0f)]);
        // The first 16 hex characters (= the first 8 digest bytes).
        let mut key = [0u8; 16];
        for (slot, ch) in key.iter_mut().zip(hex) {
            *slot = ch;
        }
        JuheKey(key)
    }

    /// Encrypts the UTF-8 bytes of `plaintext`; returns standard base64
    /// (not yet urlencoded).
    pub fn encrypt_field(&self, plaintext: &str) -> String {
        let ciphertext =
            Aes128EcbEnc::new(&self.0.into()).encrypt_padded_vec::<Pkcs7>(plaintext.as_bytes());
        STANDARD.encode(ciphertext)
    }

    /// Decodes standard base64, decrypts and checks the padding and UTF-8.
    pub fn decrypt_field(&self, b64: &str) -> Result<String, CryptoError> {
        let ciphertext = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| CryptoError::BadBase64)?;
        if ciphertext.is_empty() || ciphertext.len() % BLOCK_LEN != 0 {
            return Err(CryptoError::BadLength);
        }
        let plaintext = Aes128EcbDec::new(&self.0.into())
            .decrypt_padded_vec::<Pkcs7>(&ciphertext)
            .map_err(|_| CryptoError::BadPadding)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known-answer vectors computed with an independent implementation
    // (OpenSSL 3.0 command line):
    //   echo -n 'JHsim-openid-0001' | md5sum        -> 50cb2a9729926b91829fefe3766dffef
    //   key = "50cb2a9729926b91" (ASCII) = hex 35306362326139373239393236623931
    //   echo -n '<text>' | openssl enc -aes-128-ecb \
    //       -K 35306362326139373239393236623931 -nosalt | base64 -w0
    const KAT_OPENID: &str = "JHsim-openid-0001";
    const KAT_KEY_ASCII: &[u8; 16] = b"50cb2a9729926b91";
    const KAT_VECTORS: &[(&str, &str)] = &[
        (
            "110101190001010014",
            "XpHY6IU0GYT0zjJi95ZodDJMb0mtGfPFWEaAlY/N+jg=",
        ),
        ("测试用户", "Ht61vShgNoTQZNmhN+jCZA=="),
        ("", "r7f1+pi74QD/N1jbOymwYw=="),
        (
            "exactly16bytes!!",
            "zke7CGYwvajtsa2HYGhDeK+39fqYu+EA/zdY2zspsGM=",
        ),
    ];

    #[test]
    fn key_derivation_matches_md5_prefix() {
        let key = JuheKey::from_openid(KAT_OPENID);
        assert_eq!(&key.0, KAT_KEY_ASCII);
    }

    #[test]
    fn known_answer_vectors_from_openssl() {
        let key = JuheKey::from_openid(KAT_OPENID);
        for (plain, expected) in KAT_VECTORS {
            assert_eq!(key.encrypt_field(plain), *expected, "encrypt {plain:?}");
            assert_eq!(
                key.decrypt_field(expected).as_deref(),
                Ok(*plain),
                "decrypt {expected:?}"
            );
        }
    }

    #[test]
    fn roundtrip_ascii_chinese_empty_and_long() {
        let key = JuheKey::from_openid("some-other-openid");
        let long_image_text = "/9j/4AAQSkZJRgABAQ+/=".repeat(200);
        for plain in [
            "110101190001010014",
            "测试用户·名字",
            "",
            long_image_text.as_str(),
        ] {
            let ct = key.encrypt_field(plain);
            assert_eq!(key.decrypt_field(&ct).as_deref(), Ok(plain));
        }
    }

    #[test]
    fn wrong_key_is_an_error() {
        let wrong = JuheKey::from_openid("JHsim-openid-0002");
        for (_, ct) in KAT_VECTORS {
            assert!(wrong.decrypt_field(ct).is_err(), "{ct}");
        }
    }

    #[test]
    fn tampered_ciphertext_is_an_error() {
        let key = JuheKey::from_openid(KAT_OPENID);
        let mut raw = STANDARD
            .decode("XpHY6IU0GYT0zjJi95ZodDJMb0mtGfPFWEaAlY/N+jg=")
            .expect("valid base64 literal");
        // Flip one bit in the last block: the padding no longer checks out.
        if let Some(last) = raw.last_mut() {
            *last ^= 0x01;
        }
        assert_eq!(
            key.decrypt_field(&STANDARD.encode(&raw)),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let key = JuheKey::from_openid(KAT_OPENID);
        // '+' turned into ' ' by a form decoder.
        assert_eq!(
            key.decrypt_field("Ht61vShgNoTQZNmhN jCZA=="),
            Err(CryptoError::BadBase64)
        );
        // URL-safe alphabet is not accepted.
        assert_eq!(
            key.decrypt_field("Ht61vShgNoTQZNmhN-jCZA=="),
            Err(CryptoError::BadBase64)
        );
        // Double urlencoding leaves '%' in the value.
        assert_eq!(
            key.decrypt_field("Ht61vShgNoTQZNmhN%2BjCZA%3D%3D"),
            Err(CryptoError::BadBase64)
        );
        assert_eq!(key.decrypt_field(""), Err(CryptoError::BadLength));
        assert_eq!(
            key.decrypt_field(&STANDARD.encode([0u8; 15])),
            Err(CryptoError::BadLength)
        );
        // A block that decrypts to non-UTF-8 bytes with valid padding.
        let enc = Aes128EcbEnc::new(&key.0.into()).encrypt_padded_vec::<Pkcs7>(&[0xff, 0xfe]);
        assert_eq!(
            key.decrypt_field(&STANDARD.encode(enc)),
            Err(CryptoError::NotUtf8)
        );
    }

    #[test]
    fn debug_hides_key_and_errors_hide_data() {
        let key = JuheKey::from_openid(KAT_OPENID);
        assert_eq!(format!("{key:?}"), "JuheKey(***)");
        let err = key.decrypt_field("测试").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("ciphertext is not valid standard base64")
        );
    }
}
