//! Secrets berth must use again later (a remote registry's password), kept
//! in the database only as AES-256-GCM ciphertext under a key that comes
//! from configuration, so a copy of the database alone reveals nothing.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest as _, Sha256};

use crate::{Error, ErrorCode, Result};

/// Stored form: `v1:` + base64(nonce ‖ ciphertext ‖ tag).
const PREFIX: &str = "v1:";

/// Seals and opens secrets with one key.
pub struct Sealer {
    key: LessSafeKey,
    /// A short fingerprint of the key, to tell an operator which key sealed what.
    id: String,
}

impl Sealer {
    /// From the configured key material (any length; at least 32 bytes is
    /// checked by configuration). The AEAD key is its SHA-256.
    pub fn new(material: &[u8]) -> Sealer {
        let digest = Sha256::digest([b"berth sealed secrets\0".as_slice(), material].concat());
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &digest).expect("32-byte key"));
        let id = hex::encode(&Sha256::digest(digest)[..4]);
        Sealer { key, id }
    }

    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// `context` binds the ciphertext to where it is stored (a registry's
    /// id), so a sealed value copied into another row does not open.
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let nonce_bytes = crate::auth::random_bytes(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes).expect("12-byte nonce");
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(context.as_bytes()), &mut buf)
            .expect("sealing cannot fail for short inputs");
        let mut out = nonce_bytes;
        out.extend_from_slice(&buf);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        )
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String> {
        let wrong = || {
            Error::new(
                ErrorCode::Unsupported,
                format!(
                    "a stored credential does not open with this replica's secret key (key {}): \
                     set auth.secret_key to the same value on every replica",
                    self.id
                ),
            )
        };
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or_else(wrong)?;
        let (n, c) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| wrong())?;
        let mut buf = c.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let s = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let sealed = s.seal("hunter2", "registry:1");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, s.seal("hunter2", "registry:1"), "a fresh nonce each time");
        assert_eq!(s.open(&sealed, "registry:1").unwrap(), "hunter2");
        // Another row, another key, a damaged value: all refused, with the remedy named.
        assert!(s.open(&sealed, "registry:2").is_err());
        let other = Sealer::new(b"another key of at least 32 bytes!!");
        let e = other.open(&sealed, "registry:1").unwrap_err();
        assert!(e.message.contains("auth.secret_key"), "{}", e.message);
        let mut damaged = sealed.clone();
        damaged.pop();
        assert!(s.open(&damaged, "registry:1").is_err());
        assert!(s.open("plain", "registry:1").is_err());
        assert_ne!(s.key_id(), other.key_id());
    }
}
