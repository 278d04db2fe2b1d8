//! Docker registry bearer tokens: JWTs signed with HMAC-SHA256.
//!
//! berth both issues and checks its tokens, so a symmetric key suffices; every
//! replica holds the same key (from configuration, or generated once and kept
//! in the database). Checking a token is one HMAC and a JSON parse: no
//! database access on the pull path.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One granted scope: `{"type":"repository","name":"library/busybox","actions":["pull"]}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClaimAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ClaimAccess>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "token is malformed",
            TokenError::BadSignature => "token signature is invalid",
            TokenError::Expired => "token has expired",
            TokenError::NotYetValid => "token is not valid yet",
            TokenError::WrongAudience => "token was issued for another service",
        })
    }
}

#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
    pub issuer: String,
    /// Seconds of clock difference tolerated between replicas.
    pub leeway: i64,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl TokenSigner {
    pub fn new(key: Vec<u8>, issuer: impl Into<String>, leeway: i64) -> TokenSigner {
        assert!(key.len() >= 32, "token keys are at least 32 bytes");
        TokenSigner {
            key,
            issuer: issuer.into(),
            leeway,
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialise");
        let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{signing_input}.{}", B64.encode(sig))
    }

    /// Checks signature, time and audience at `now` (Unix seconds).
    pub fn verify(&self, token: &str, audience: &str, now: i64) -> Result<Claims, TokenError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        // Only berth's own header is accepted: no "alg" games.
        if B64.decode(header).map_err(|_| TokenError::Malformed)? != HEADER.as_bytes() {
            return Err(TokenError::Malformed);
        }
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).map_err(|_| TokenError::Malformed)?)
            .map_err(|_| TokenError::Malformed)?;
        if claims.exp + self.leeway < now {
            return Err(TokenError::Expired);
        }
        if claims.nbf - self.leeway > now {
            return Err(TokenError::NotYetValid);
        }
        if claims.aud != audience {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "berth".into(),
            sub: "alice".into(),
            aud: "registry".into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "j".into(),
            access: vec![ClaimAccess {
                kind: "repository".into(),
                name: "lib/x".into(),
                actions: vec!["pull".into()],
            }],
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let s = TokenSigner::new(vec![1; 32], "berth", 30);
        let t = s.sign(&claims(1000));
        assert_eq!(s.verify(&t, "registry", 1000).unwrap(), claims(1000));
        assert_eq!(s.verify(&t, "other", 1000), Err(TokenError::WrongAudience));
        assert_eq!(s.verify(&t, "registry", 1000 + 300 + 31), Err(TokenError::Expired));
        assert!(s.verify(&t, "registry", 1000 + 300 + 29).is_ok(), "leeway");
        assert_eq!(s.verify(&t, "registry", 1000 - 31), Err(TokenError::NotYetValid));
        let other_key = TokenSigner::new(vec![2; 32], "berth", 30);
        assert_eq!(other_key.verify(&t, "registry", 1000), Err(TokenError::BadSignature));
        // A payload swapped for one granting more keeps the old signature: refused.
        let mut more = claims(1000);
        more.access[0].actions.push("push".into());
        let forged = s.sign(&more);
        let (head_payload, _) = forged.rsplit_once('.').unwrap();
        let (_, sig) = t.rsplit_once('.').unwrap();
        assert_eq!(
            s.verify(&format!("{head_payload}.{sig}"), "registry", 1000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(s.verify("garbage", "registry", 1000), Err(TokenError::Malformed));
    }

    #[test]
    fn alg_none_is_refused() {
        let s = TokenSigner::new(vec![1; 32], "berth", 30);
        let payload = B64.encode(serde_json::to_vec(&claims(1000)).unwrap());
        let none = format!("{}.{payload}.", B64.encode(r#"{"alg":"none"}"#));
        assert!(s.verify(&none, "registry", 1000).is_err());
    }
}
