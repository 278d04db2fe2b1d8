//! Passwords and secrets.
//!
//! User passwords are hashed with argon2id: people choose them, so the hash
//! must be slow. Robot secrets are 32 random bytes that berth makes itself;
//! a SHA-256 of such a secret cannot be searched, so checking one costs
//! microseconds instead of the tens of milliseconds argon2 spends.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use sha2::{Digest, Sha256};

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v).expect("the operating system provides randomness");
    v
}

/// A random secret of `n` bytes, as URL-safe base64 without padding.
pub fn random_secret(n: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(n))
}

/// A password a person can type: 20 characters with upper, lower and digits.
pub fn random_password() -> String {
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const DIGIT: &[u8] = b"23456789";
    let all: Vec<u8> = [UPPER, LOWER, DIGIT].concat();
    let bytes = random_bytes(20);
    let mut out: Vec<u8> = bytes.iter().map(|b| all[*b as usize % all.len()]).collect();
    // Guarantee one of each class so the password passes berth's own policy.
    out[0] = UPPER[bytes[0] as usize % UPPER.len()];
    out[1] = LOWER[bytes[1] as usize % LOWER.len()];
    out[2] = DIGIT[bytes[2] as usize % DIGIT.len()];
    String::from_utf8(out).expect("ASCII")
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes(16)).expect("16 bytes make a salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password")
        .to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Each argon2 check holds 19 MiB for tens of milliseconds. Running more at
/// once than there are cores is no faster, and a burst of logins (a CI fleet
/// starting) would otherwise hold 19 MiB each at the same time.
pub(crate) fn argon2_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores.clamp(1, 4))
    })
}

/// [`verify_password`] off the async threads, at most [`argon2_slots`] at a time.
pub async fn verify_password_bounded(password: &str, hash: &str) -> bool {
    let _slot = argon2_slots().acquire().await.expect("the semaphore is never closed");
    let (pw, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
        .await
        .unwrap_or(false)
}

/// Harbor's rule: 8 to 128 characters, with an uppercase and a lowercase
/// letter and a digit.
pub fn password_policy(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if !(8..=128).contains(&n)
        || !password.chars().any(|c| c.is_ascii_uppercase())
        || !password.chars().any(|c| c.is_ascii_lowercase())
        || !password.chars().any(|c| c.is_ascii_digit())
    {
        return Err("a password needs 8 to 128 characters, with at least one uppercase letter, one lowercase letter and one digit".into());
    }
    Ok(())
}

pub fn hash_secret(secret: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

pub fn verify_secret(secret: &str, hash: &str) -> bool {
    constant_time_eq(&hash_secret(secret), hash)
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("Correct-Horse-1");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("Correct-Horse-1", &h));
        assert!(!verify_password("correct-horse-1", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_ne!(hash_password("same"), hash_password("same"), "salted");
    }

    #[test]
    fn policy() {
        assert!(password_policy("Harbor12345").is_ok());
        for weak in ["short1A", "alllowercase1", "ALLUPPER1", "NoDigitsHere"] {
            assert!(password_policy(weak).is_err(), "{weak}");
        }
        for _ in 0..50 {
            let p = random_password();
            assert!(password_policy(&p).is_ok(), "{p}");
        }
    }

    #[test]
    fn secrets() {
        let s = random_secret(32);
        assert_eq!(s.len(), 43);
        assert!(verify_secret(&s, &hash_secret(&s)));
        assert!(!verify_secret("other", &hash_secret(&s)));
        assert_ne!(random_secret(32), s);
    }
}
