//! Secrets at rest: AES-256-GCM with the key from `PROVISIONER_SECRETS_KEY`.
//!
//! An order may carry a password for the customer's first Keystone user. It must never rest in
//! plain text: the store keeps it sealed by [`SecretsKey::seal`] until the user exists, then drops
//! it. The cipher is ring's AEAD (ring is already in the build through rustls, so no new crate):
//! AES-256-GCM with a fresh random 96-bit nonce per message, and associated data that binds a
//! ciphertext to its place (the order id), so a sealed value copied to another row does not open.
//!
//! The envelope is one ASCII string, `v1:<key id>:<base64(nonce | ciphertext | tag)>`:
//! - `v1` versions the format, so a future scheme can be read next to this one;
//! - the key id (8 hex digits of a SHA-256 of the key, which says nothing about the key) lets a
//!   worker with the wrong key say so, instead of a bare "cannot decrypt".
//!
//! The key is 32 random bytes in base64 (`openssl rand -base64 32`, or
//! `provisioner secrets gen-key`). [`SecretsKey`] never prints it, and opened values come back
//! as [`Secret`], which does not print either.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// The envelope's version prefix.
const V1: &str = "v1";

/// Why a key could not be read or a value not be sealed or opened. The messages never contain
/// the key or the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("the key must be 32 bytes in base64 (make one with `openssl rand -base64 32`): {0}")]
    BadKey(String),
    #[error("not a sealed value (expected `v1:<key id>:<base64>`)")]
    NotSealed,
    #[error("sealed with key {sealed_with}, but the configured key is {configured}")]
    WrongKey { sealed_with: String, configured: String },
    #[error("the sealed value does not open: corrupted, or moved from another record")]
    Corrupt,
    #[error("no randomness available from the operating system")]
    Random,
}

/// The key that seals secrets at rest. `Debug` shows only its id.
pub struct SecretsKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretsKey(id={})", self.id)
    }
}

impl SecretsKey {
    /// Reads a key given as base64 of 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<SecretsKey, SecretsError> {
        let bytes = B64.decode(text.trim()).map_err(|_| SecretsError::BadKey("not valid base64".into()))?;
        SecretsKey::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<SecretsKey, SecretsError> {
        if bytes.len() != 32 {
            return Err(SecretsError::BadKey(format!("it decodes to {} bytes", bytes.len())));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| SecretsError::BadKey("rejected by AES-256".into()))?;
        let digest =
            Sha256::new().chain_update(b"openstack-provisioner key id\0").chain_update(bytes).finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(SecretsKey { key: LessSafeKey::new(unbound), id })
    }

    /// A new random key, as the base64 text `PROVISIONER_SECRETS_KEY` takes.
    pub fn generate() -> Result<Secret, SecretsError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| SecretsError::Random)?;
        Ok(Secret::new(B64.encode(bytes)))
    }

    /// The key's public id, as it appears in envelopes and logs.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext`, bound to `context` (e.g. the order id): the same context is needed
    /// to open it.
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SecretsError::Random)?;
        let mut data = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| SecretsError::Corrupt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(format!("{V1}:{}:{}", self.id, B64.encode(out)))
    }

    /// Opens an envelope made by [`SecretsKey::seal`] with the same key and context.
    pub fn open(&self, envelope: &str, context: &str) -> Result<Secret, SecretsError> {
        let mut parts = envelope.splitn(3, ':');
        let (Some(V1), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SecretsError::NotSealed);
        };
        if key_id != self.id {
            return Err(SecretsError::WrongKey {
                sealed_with: key_id.to_string(),
                configured: self.id.clone(),
            });
        }
        let raw = B64.decode(body).map_err(|_| SecretsError::NotSealed)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretsError::Corrupt);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Corrupt)?;
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SecretsError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map(Secret::new).map_err(|_| SecretsError::Corrupt)
    }
}

/// Whether `text` looks like an envelope of this module (a plain password never should, but a
/// store can tell sealed values from legacy ones with it).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with("v1:") && text.splitn(3, ':').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::from_base64(SecretsKey::generate().unwrap().expose()).unwrap()
    }

    #[test]
    fn sealed_values_open_with_the_same_key_and_context_only() {
        let k = key();
        let sealed = k.seal("S3cret-pw", "B-2026-000123").unwrap();
        assert!(is_sealed(&sealed), "{sealed}");
        assert!(!sealed.contains("S3cret"), "{sealed}");
        assert!(sealed.starts_with(&format!("v1:{}:", k.id())), "{sealed}");
        assert_eq!(k.open(&sealed, "B-2026-000123").unwrap().expose(), "S3cret-pw");
        // A random nonce each time: the same password never seals the same way twice.
        assert_ne!(k.seal("S3cret-pw", "B-2026-000123").unwrap(), sealed);
        assert_eq!(
            k.open(&sealed, "B-2026-000124").unwrap_err(),
            SecretsError::Corrupt,
            "moved to another order"
        );
        let other = key();
        assert!(matches!(other.open(&sealed, "B-2026-000123"), Err(SecretsError::WrongKey { .. })));
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(k.open(&tampered, "B-2026-000123").is_err());
        assert_eq!(k.open("hunter2", "x").unwrap_err(), SecretsError::NotSealed);
        assert!(!is_sealed("hunter2"));
    }

    #[test]
    fn keys_are_checked_and_never_printed() {
        let text = SecretsKey::generate().unwrap();
        assert_eq!(B64.decode(text.expose()).unwrap().len(), 32);
        let k = SecretsKey::from_base64(&format!("  {}\n", text.expose())).unwrap();
        let shown = format!("{k:?} {text:?} {text}");
        assert!(!shown.contains(text.expose()), "{shown}");
        assert_eq!(shown, format!("SecretsKey(id={}) *** ***", k.id()));
        assert_eq!(k.id().len(), 8);
        let short = SecretsKey::from_base64(&B64.encode([1u8; 16])).unwrap_err();
        assert!(short.to_string().contains("16 bytes"), "{short}");
        assert!(matches!(SecretsKey::from_base64("not base64!"), Err(SecretsError::BadKey(_))));
        // The same key always has the same id (the id is in every envelope).
        assert_eq!(SecretsKey::from_base64(text.expose()).unwrap().id(), k.id());
    }
}
