//! The secrets key: the 32-byte key that seals webhook signing secrets before they
//! are stored. orgd signs with those secrets, so it must be able to read them back
//! (a hash would not do); sealing them with an AEAD keeps a copy of the database
//! (a backup, a dump, a stolen disk) from carrying usable secrets without the key.
//!
//! A sealed value reads `v1.<key id>.<base64(nonce ‖ ciphertext)>`: XChaCha20-Poly1305
//! with a random 24-byte nonce (large enough that random nonces never repeat under
//! one key), and the caller's associated data (which row and column the value
//! belongs to), so a sealed value copied to another row or column does not open.
//! The key id names the key without revealing it, so a process given the wrong key
//! can say so instead of reporting corruption.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: &str = "v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// The key that seals webhook signing secrets at rest.
#[derive(Clone)]
pub struct SecretsKey {
    bytes: [u8; KEY_LEN],
    key_id: String,
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    /// Sealed under another key: a configuration error, not corruption.
    #[error("sealed with another secrets key (key id {sealed_with}, this process has {ours})")]
    OtherKey { sealed_with: String, ours: String },
    /// Not a sealed value, altered, or moved from another row or column.
    #[error("sealed value is corrupt or belongs to another row")]
    Corrupt,
}

impl SecretsKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Standard base64 of exactly 32 bytes (surrounding whitespace ignored, so a
    /// key file may end with a newline).
    pub fn parse(text: &str) -> Option<Self> {
        let decoded = STANDARD.decode(text.trim()).ok()?;
        let bytes: [u8; KEY_LEN] = decoded.try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let key_id = hex::encode(&Sha256::digest(bytes)[..4]);
        Self { bytes, key_id }
    }

    /// The key as [`SecretsKey::parse`] reads it, for writing it to its file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// The first 8 hex digits of the key's SHA-256: names the key in sealed values
    /// and messages without revealing it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.bytes.into())
    }

    /// Seals `plaintext` for the place `aad` names (e.g. `whk_…/secret`).
    pub fn seal(&self, plaintext: &str, aad: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: aad.as_bytes(),
        };
        // Encryption fails only for messages of hundreds of gigabytes.
        let ciphertext = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("XChaCha20-Poly1305 encrypts any message this small");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!("{VERSION}.{}.{}", self.key_id, STANDARD.encode(sealed))
    }

    /// Opens what [`SecretsKey::seal`] made for the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, UnsealError> {
        let (key_id, body) = split_sealed(sealed).ok_or(UnsealError::Corrupt)?;
        if key_id != self.key_id {
            return Err(UnsealError::OtherKey {
                sealed_with: key_id.to_owned(),
                ours: self.key_id.clone(),
            });
        }
        let raw = STANDARD.decode(body).map_err(|_| UnsealError::Corrupt)?;
        if raw.len() < NONCE_LEN {
            return Err(UnsealError::Corrupt);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: aad.as_bytes(),
        };
        let plaintext = self
            .cipher()
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| UnsealError::Corrupt)?;
        String::from_utf8(plaintext).map_err(|_| UnsealError::Corrupt)
    }
}

/// The key id a sealed value names, without opening it; `None` when the value is
/// not in the sealed format.
pub fn sealed_key_id(sealed: &str) -> Option<&str> {
    split_sealed(sealed).map(|(key_id, _)| key_id)
}

fn split_sealed(sealed: &str) -> Option<(&str, &str)> {
    let mut parts = sealed.splitn(3, '.');
    let (version, key_id, body) = (parts.next()?, parts.next()?, parts.next()?);
    (version == VERSION).then_some((key_id, body))
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The id is safe to show and tells keys apart; the bytes never are.
        f.debug_struct("SecretsKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AAD: &str = "whk_01jd0000000000000000000000/secret";

    #[test]
    fn a_sealed_value_opens_with_the_same_key_and_place() {
        let key = SecretsKey::generate();
        let sealed = key.seal("whsec_abc", AAD);
        assert!(sealed.starts_with(&format!("v1.{}.", key.key_id())));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(key.open(&sealed, AAD).as_deref(), Ok("whsec_abc"));
    }

    #[test]
    fn sealing_twice_gives_different_values() {
        let key = SecretsKey::generate();
        assert_ne!(key.seal("same", AAD), key.seal("same", AAD));
    }

    #[test]
    fn a_value_moved_to_another_place_does_not_open() {
        let key = SecretsKey::generate();
        let sealed = key.seal("whsec_abc", AAD);
        assert_eq!(
            key.open(&sealed, "whk_01jd0000000000000000000000/previous_secret"),
            Err(UnsealError::Corrupt)
        );
        assert_eq!(
            key.open(&sealed, "whk_01jd0000000000000000000001/secret"),
            Err(UnsealError::Corrupt)
        );
    }

    #[test]
    fn another_key_is_named_rather_than_reported_as_corruption() {
        let ours = SecretsKey::generate();
        let theirs = SecretsKey::generate();
        let sealed = theirs.seal("whsec_abc", AAD);
        assert_eq!(sealed_key_id(&sealed), Some(theirs.key_id()));
        match ours.open(&sealed, AAD) {
            Err(err @ UnsealError::OtherKey { .. }) => {
                let message = err.to_string();
                assert!(message.contains(theirs.key_id()), "{message}");
                assert!(message.contains(ours.key_id()), "{message}");
            }
            other => panic!("expected OtherKey, got {other:?}"),
        }
    }

    #[test]
    fn a_tampered_value_does_not_open() {
        let key = SecretsKey::generate();
        let sealed = key.seal("whsec_abc", AAD);
        let (head, body) = sealed.rsplit_once('.').unwrap();
        let mut raw = STANDARD.decode(body).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("{head}.{}", STANDARD.encode(raw));
        assert_eq!(key.open(&tampered, AAD), Err(UnsealError::Corrupt));
        for garbage in ["", "v1", "v1.x", "whsec_abc", "v2.00000000.AAAA"] {
            assert!(key.open(garbage, AAD).is_err(), "{garbage:?} opened");
        }
        let short = format!("v1.{}.AAAA", key.key_id());
        assert_eq!(key.open(&short, AAD), Err(UnsealError::Corrupt));
    }

    #[test]
    fn a_key_parses_from_base64_of_exactly_32_bytes() {
        let key = SecretsKey::generate();
        let again = SecretsKey::parse(&format!("{}\n", key.to_base64())).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        let sealed = key.seal("x", AAD);
        assert_eq!(again.open(&sealed, AAD).as_deref(), Ok("x"));
        assert!(SecretsKey::parse(&STANDARD.encode([0u8; 31])).is_none());
        assert!(SecretsKey::parse(&STANDARD.encode([0u8; 33])).is_none());
        assert!(SecretsKey::parse("not base64!").is_none());
        assert_eq!(key.key_id().len(), 8);
    }

    #[test]
    fn debug_shows_the_key_id_but_never_the_key() {
        let key = SecretsKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.key_id()));
        assert!(!shown.contains(&key.to_base64()));
        assert!(!shown.contains(&hex::encode(key.bytes)));
    }

    proptest! {
        #[test]
        fn any_text_round_trips(plaintext in ".*", aad in ".*") {
            let key = SecretsKey::generate();
            let sealed = key.seal(&plaintext, &aad);
            prop_assert_eq!(key.open(&sealed, &aad), Ok(plaintext));
        }
    }
}
