//! memberd's own tokens: Ed25519 signing keys (private halves sealed with a
//! key-encryption key before they are stored), access tokens as EdDSA JWTs,
//! the JWKS that lets other services verify them, and opaque refresh tokens.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Secret;
use super::api_key::hex;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key-encryption key must be 32 bytes, as base64 or 64 hex digits")]
    BadKeyEncryptionKey,
    #[error("a sealed value does not open with this key-encryption key")]
    Unseal,
    #[error("a stored signing key is invalid: {0}")]
    BadSigningKey(String),
    #[error("no signing key")]
    NoSigningKey,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Decodes key bytes written as base64 (standard or URL-safe, padded or
/// not) or, for 32- and 64-byte keys, as hex.
pub fn decode_key_bytes(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if matches!(text.len(), 64 | 128) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect();
    }
    let unpadded = text.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(unpadded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded))
        .ok()
}

/// Seals secrets at rest (signing keys, TOTP secrets) with AES-256-GCM.
/// Each sealed value is bound to what it is (`aad`), so one cannot be
/// swapped for another in the database.
pub struct KeyEncryptionKey {
    sealing: LessSafeKey,
    /// Keys digests of low-entropy secrets (recovery codes): derived from
    /// the key-encryption key, so a copy of the database alone cannot test
    /// guesses against them.
    digests: aws_lc_rs::hmac::Key,
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey([redacted])")
    }
}

impl KeyEncryptionKey {
    pub fn parse(text: &Secret) -> Result<Self, KeyError> {
        let bytes = decode_key_bytes(text.expose()).ok_or(KeyError::BadKeyEncryptionKey)?;
        if bytes.len() != 32 {
            return Err(KeyError::BadKeyEncryptionKey);
        }
        let key =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyError::BadKeyEncryptionKey)?;
        let derive = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes);
        let digest_key = aws_lc_rs::hmac::sign(&derive, b"memberd keyed digests v1");
        Ok(Self {
            sealing: LessSafeKey::new(key),
            digests: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, digest_key.as_ref()),
        })
    }

    /// HMAC-SHA256 of `data` under a key derived from this one, bound to
    /// `context`, as hex.
    pub fn keyed_digest(&self, context: &str, data: &[u8]) -> String {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.digests);
        ctx.update(context.as_bytes());
        ctx.update(&[0]);
        ctx.update(data);
        hex(ctx.sign().as_ref())
    }

    /// A new random key, and its text form for the configuration.
    pub fn generate() -> (Self, Secret) {
        let text = Secret::new(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
        (
            Self::parse(&text).expect("32 random bytes make a key"),
            text,
        )
    }

    pub fn seal(&self, plaintext: &[u8], aad: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut in_out = plaintext.to_vec();
        self.sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .expect("sealing a small value cannot fail");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&in_out);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, KeyError> {
        let mut bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| KeyError::Unseal)?;
        if bytes.len() < NONCE_LEN {
            return Err(KeyError::Unseal);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN]).map_err(|_| KeyError::Unseal)?;
        let mut rest = bytes.split_off(NONCE_LEN);
        let plain = self
            .sealing
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut rest)
            .map_err(|_| KeyError::Unseal)?;
        Ok(plain.to_vec())
    }
}

/// A signing key as stored: the public half in the clear, the private half sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    pub algorithm: String,
    pub public_key: Vec<u8>,
    pub sealed_private_key: String,
    pub created_at: OffsetDateTime,
    pub retired_at: Option<OffsetDateTime>,
}

pub const EDDSA: &str = "EdDSA";
/// The JOSE `typ` of memberd's access tokens (RFC 9068, section 2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The `client_id` of tokens from memberd's own sign-in (password, TOTP,
/// refresh): the console and back offices that sign in through memberd.
pub const FIRST_PARTY_CLIENT: &str = "memberd";

fn sealing_context(kid: &str) -> String {
    format!("memberd signing key {kid}")
}

/// A new Ed25519 key; its id is derived from its public key (RFC 7638 style).
pub fn generate_signing_key(kek: &KeyEncryptionKey, now: OffsetDateTime) -> StoredSigningKey {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .expect("the system random source works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a fresh key parses");
    let public_key = pair.public_key().as_ref().to_vec();
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&public_key)[..12]);
    StoredSigningKey {
        sealed_private_key: kek.seal(pkcs8.as_ref(), &sealing_context(&kid)),
        kid,
        algorithm: EDDSA.into(),
        public_key,
        created_at: now,
        retired_at: None,
    }
}

/// What memberd's access tokens say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// The OAuth client the token was issued to (RFC 9068): memberd's own
    /// sign-in, [`FIRST_PARTY_CLIENT`]. Absent from tokens issued before it
    /// was added, which stay valid until they expire.
    #[serde(default)]
    pub client_id: String,
    pub sid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Set while an administrator's reset awaits the user's own password.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pwd_change: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// The keys in force: the newest unretired one signs; every key still
/// published verifies.
pub struct KeyRing {
    issuer: String,
    audience: String,
    signer: Option<(String, EncodingKey)>,
    verifiers: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("issuer", &self.issuer)
            .field("signer", &self.signer.as_ref().map(|(kid, _)| kid))
            .field("verifiers", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// `keys` are those still published, newest first.
    pub fn new(
        issuer: String,
        audience: String,
        keys: &[StoredSigningKey],
        kek: &KeyEncryptionKey,
    ) -> Result<Self, KeyError> {
        let mut signer = None;
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        for key in keys {
            if key.algorithm != EDDSA {
                return Err(KeyError::BadSigningKey(format!(
                    "{}: algorithm {}",
                    key.kid, key.algorithm
                )));
            }
            if signer.is_none() && key.retired_at.is_none() {
                let pkcs8 = kek.open(&key.sealed_private_key, &sealing_context(&key.kid))?;
                let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
                    .map_err(|e| KeyError::BadSigningKey(format!("{}: {e}", key.kid)))?;
                if pair.public_key().as_ref() != key.public_key.as_slice() {
                    return Err(KeyError::BadSigningKey(format!(
                        "{}: halves differ",
                        key.kid
                    )));
                }
                signer = Some((key.kid.clone(), EncodingKey::from_ed_der(&pkcs8)));
            }
            verifiers.insert(key.kid.clone(), DecodingKey::from_ed_der(&key.public_key));
            jwks.push(serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": EDDSA,
                "use": "sig",
                "kid": key.kid,
                "x": URL_SAFE_NO_PAD.encode(&key.public_key),
            }));
        }
        Ok(Self {
            issuer,
            audience,
            signer,
            verifiers,
            jwks: serde_json::json!({ "keys": jwks }),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let (kid, key) = self.signer.as_ref().ok_or(KeyError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        // RFC 9068: libraries that validate JWT access tokens require it,
        // and it keeps an access token from passing for another kind of JWT.
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        jsonwebtoken::encode(&header, claims, key).map_err(|e| KeyError::Sign(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifiers.get(kid))
            .ok_or(TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

/// An opaque random token (refresh tokens, MFA challenges) and how it is
/// stored: its SHA-256, since the token itself carries 256 random bits.
pub fn opaque_token(prefix: &str) -> Secret {
    Secret::new(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    ))
}

pub fn token_digest(token: &Secret) -> String {
    hex(&Sha256::digest(token.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[StoredSigningKey], kek: &KeyEncryptionKey) -> KeyRing {
        KeyRing::new(
            "https://members.example".into(),
            "memberd".into(),
            keys,
            kek,
        )
        .unwrap()
    }

    fn claims(exp_in: i64) -> AccessClaims {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        AccessClaims {
            iss: "https://members.example".into(),
            sub: "local:alice".into(),
            aud: "memberd".into(),
            exp: now + exp_in,
            iat: now,
            jti: "j1".into(),
            client_id: FIRST_PARTY_CLIENT.into(),
            sid: "s1".into(),
            roles: vec!["admin".into()],
            preferred_username: Some("alice".into()),
            pwd_change: false,
        }
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let (kek, text) = KeyEncryptionKey::generate();
        let sealed = kek.seal(b"private", "ctx");
        assert_eq!(kek.open(&sealed, "ctx").unwrap(), b"private");
        assert!(kek.open(&sealed, "other").is_err());
        let (other, _) = KeyEncryptionKey::generate();
        assert!(other.open(&sealed, "ctx").is_err());
        let again = KeyEncryptionKey::parse(&text).unwrap();
        assert_eq!(again.open(&sealed, "ctx").unwrap(), b"private");
        assert!(KeyEncryptionKey::parse(&Secret::new("short")).is_err());
        let hex_key = Secret::new("00".repeat(32));
        assert!(KeyEncryptionKey::parse(&hex_key).is_ok());
    }

    #[test]
    fn tokens_verify_across_a_rotation_and_not_after_the_key_is_gone() {
        let (kek, _) = KeyEncryptionKey::generate();
        let now = OffsetDateTime::now_utc();
        let old = generate_signing_key(&kek, now);
        let old_ring = ring(std::slice::from_ref(&old), &kek);
        // One value: two calls either side of a second's turn differ.
        let signed = claims(900);
        let token = old_ring.sign(&signed).unwrap();
        assert_eq!(old_ring.verify(&token).unwrap(), signed);

        let new = generate_signing_key(&kek, now);
        let retired = StoredSigningKey {
            retired_at: Some(now),
            ..old.clone()
        };
        let rotated = ring(&[new.clone(), retired], &kek);
        assert!(
            rotated.verify(&token).is_ok(),
            "the old key is still published"
        );
        let fresh = rotated.sign(&claims(900)).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some(new.kid.as_str())
        );
        let after = ring(std::slice::from_ref(&new), &kek);
        assert!(matches!(after.verify(&token), Err(TokenError::Invalid)));
        assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let (kek, _) = KeyEncryptionKey::generate();
        let key = generate_signing_key(&kek, OffsetDateTime::now_utc());
        let ring = ring(&[key], &kek);
        let expired = ring.sign(&claims(-120)).unwrap();
        assert!(matches!(ring.verify(&expired), Err(TokenError::Expired)));
        let token = ring.sign(&claims(900)).unwrap();
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(ring.verify(&forged).is_err());
        let mut wrong_aud = claims(900);
        wrong_aud.aud = "someone-else".into();
        assert!(ring.verify(&ring.sign(&wrong_aud).unwrap()).is_err());
        assert!(ring.verify("not.a.jwt").is_err());
    }

    #[test]
    fn a_key_sealed_under_another_kid_is_refused() {
        let (kek, _) = KeyEncryptionKey::generate();
        let a = generate_signing_key(&kek, OffsetDateTime::now_utc());
        let b = generate_signing_key(&kek, OffsetDateTime::now_utc());
        let swapped = StoredSigningKey {
            sealed_private_key: b.sealed_private_key.clone(),
            ..a
        };
        assert!(KeyRing::new("i".into(), "a".into(), &[swapped], &kek).is_err());
    }
}
