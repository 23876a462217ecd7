//! The embedded (iframe) token: front ends that embed back-office pages pass
//! the user as `{"sub", "exp"}` encrypted with a secret they share with
//! memberd, in URL-safe base64.
//!
//! AES-256-GCM by default. AES-256-CBC with PKCS#7 exists only for front ends
//! that cannot change, and then always with an HMAC-SHA256 over IV and
//! ciphertext that is checked before anything is decrypted (encrypt-then-MAC,
//! the layout of RFC 7518's A256CBC: MAC key first, encryption key second):
//! unauthenticated CBC would let a caller probe the padding byte by byte.
//! Every failure is the same `Invalid`, so a caller learns nothing from which
//! step refused its token.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::Secret;
use super::tokens::decode_key_bytes;

const GCM_AAD: &[u8] = b"memberd frontend token v1";
const IV_LEN: usize = 16;
const TAG_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FrontendCipher {
    /// AES-256-GCM; the secret is 32 bytes.
    #[default]
    Gcm,
    /// AES-256-CBC with PKCS#7 plus HMAC-SHA256 (encrypt-then-MAC); the
    /// secret is 64 bytes: the MAC key, then the encryption key.
    CbcHmacSha256,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrontendTokenError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the frontend secret must be {0} bytes, as base64 or hex")]
    BadSecret(usize),
}

/// What the token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendClaims {
    pub sub: String,
    /// Unix seconds.
    pub exp: i64,
}

enum Keys {
    Gcm(LessSafeKey),
    CbcHmac {
        mac: hmac::Key,
        encryption: [u8; 32],
    },
}

pub struct FrontendTokens {
    keys: Keys,
    /// The longest a token may claim to live, in seconds from its opening:
    /// a front end's clock or a leaked minting key must not yield tokens
    /// good for years.
    max_lifetime: i64,
}

/// [`FrontendTokens`]' default longest lifetime: a working day.
pub const DEFAULT_MAX_LIFETIME_SECONDS: u64 = 12 * 3600;

impl fmt::Debug for FrontendTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrontendTokens([redacted])")
    }
}

impl FrontendTokens {
    pub fn new(secret: &Secret, cipher: FrontendCipher) -> Result<Self, FrontendTokenError> {
        let bytes = decode_key_bytes(secret.expose());
        let keys = match cipher {
            FrontendCipher::Gcm => {
                let bytes = bytes
                    .filter(|b| b.len() == 32)
                    .ok_or(FrontendTokenError::BadSecret(32))?;
                let key = UnboundKey::new(&AES_256_GCM, &bytes)
                    .map_err(|_| FrontendTokenError::BadSecret(32))?;
                Keys::Gcm(LessSafeKey::new(key))
            }
            FrontendCipher::CbcHmacSha256 => {
                let bytes = bytes
                    .filter(|b| b.len() == 64)
                    .ok_or(FrontendTokenError::BadSecret(64))?;
                let mut encryption = [0u8; 32];
                encryption.copy_from_slice(&bytes[32..]);
                Keys::CbcHmac {
                    mac: hmac::Key::new(hmac::HMAC_SHA256, &bytes[..32]),
                    encryption,
                }
            }
        };
        Ok(Self {
            keys,
            max_lifetime: DEFAULT_MAX_LIFETIME_SECONDS as i64,
        })
    }

    /// Refuses tokens whose `exp` is more than `seconds` ahead.
    pub fn with_max_lifetime(mut self, seconds: u64) -> Self {
        self.max_lifetime = i64::try_from(seconds).unwrap_or(i64::MAX);
        self
    }

    /// What a front end does; memberd uses it in tests and examples.
    pub fn seal(&self, claims: &FrontendClaims) -> String {
        let plain = serde_json::to_vec(claims).expect("claims serialise");
        let bytes = match &self.keys {
            Keys::Gcm(key) => {
                let nonce: [u8; NONCE_LEN] = rand::random();
                let mut in_out = plain;
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(GCM_AAD),
                    &mut in_out,
                )
                .expect("sealing cannot fail");
                [nonce.as_slice(), &in_out].concat()
            }
            Keys::CbcHmac { mac, encryption } => {
                let iv: [u8; IV_LEN] = rand::random();
                let key = PaddedBlockEncryptingKey::cbc_pkcs7(
                    UnboundCipherKey::new(&AES_256, encryption).expect("a 32-byte key"),
                )
                .expect("CBC with PKCS#7");
                let mut in_out = plain;
                key.less_safe_encrypt(&mut in_out, EncryptionContext::Iv128(FixedLength::from(iv)))
                    .expect("encryption cannot fail");
                let mut out = [iv.as_slice(), &in_out].concat();
                let tag = hmac::sign(mac, &out);
                out.extend_from_slice(tag.as_ref());
                out
            }
        };
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The token's claims if it is authentic and not expired at `now`.
    pub fn open(&self, token: &str, now: i64) -> Result<FrontendClaims, FrontendTokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim().trim_end_matches('='))
            .map_err(|_| FrontendTokenError::Invalid)?;
        let plain = match &self.keys {
            Keys::Gcm(key) => {
                if bytes.len() < NONCE_LEN {
                    return Err(FrontendTokenError::Invalid);
                }
                let (nonce, sealed) = bytes.split_at(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce)
                    .map_err(|_| FrontendTokenError::Invalid)?;
                let mut in_out = sealed.to_vec();
                key.open_in_place(nonce, Aad::from(GCM_AAD), &mut in_out)
                    .map_err(|_| FrontendTokenError::Invalid)?
                    .to_vec()
            }
            Keys::CbcHmac { mac, encryption } => {
                if bytes.len() < IV_LEN + 16 + TAG_LEN {
                    return Err(FrontendTokenError::Invalid);
                }
                let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
                // The MAC first, in constant time: nothing unauthenticated is decrypted.
                hmac::verify(mac, signed, tag).map_err(|_| FrontendTokenError::Invalid)?;
                let (iv, ciphertext) = signed.split_at(IV_LEN);
                let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| FrontendTokenError::Invalid)?;
                let key = PaddedBlockDecryptingKey::cbc_pkcs7(
                    UnboundCipherKey::new(&AES_256, encryption)
                        .map_err(|_| FrontendTokenError::Invalid)?,
                )
                .map_err(|_| FrontendTokenError::Invalid)?;
                let mut in_out = ciphertext.to_vec();
                key.decrypt(&mut in_out, DecryptionContext::Iv128(FixedLength::from(iv)))
                    .map_err(|_| FrontendTokenError::Invalid)?
                    .to_vec()
            }
        };
        let claims: FrontendClaims =
            serde_json::from_slice(&plain).map_err(|_| FrontendTokenError::Invalid)?;
        if claims.exp <= now
            || claims.exp.saturating_sub(now) > self.max_lifetime
            || claims.sub.is_empty()
        {
            return Err(FrontendTokenError::Invalid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> FrontendClaims {
        FrontendClaims {
            sub: "user-1".into(),
            exp,
        }
    }

    fn secret(len: usize) -> Secret {
        Secret::new(URL_SAFE_NO_PAD.encode(vec![7u8; len]))
    }

    #[test]
    fn both_ciphers_round_trip_and_are_url_safe() {
        for (cipher, len) in [
            (FrontendCipher::Gcm, 32),
            (FrontendCipher::CbcHmacSha256, 64),
        ] {
            let tokens = FrontendTokens::new(&secret(len), cipher).unwrap();
            let token = tokens.seal(&claims(2_000));
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(tokens.open(&token, 1_000).unwrap(), claims(2_000));
            assert_eq!(
                tokens.open(&token, 2_000),
                Err(FrontendTokenError::Invalid),
                "expired"
            );
        }
    }

    // Regression (issue 13, finding 14): a token expiring in 2200 opened.
    #[test]
    fn tokens_claiming_too_long_a_life_are_refused() {
        let tokens = FrontendTokens::new(&secret(32), FrontendCipher::Gcm)
            .unwrap()
            .with_max_lifetime(3600);
        let year_2200 = 7_258_118_400;
        assert_eq!(
            tokens.open(&tokens.seal(&claims(year_2200)), 1_000),
            Err(FrontendTokenError::Invalid)
        );
        assert!(
            tokens
                .open(&tokens.seal(&claims(1_000 + 3600)), 1_000)
                .is_ok()
        );
        assert!(
            tokens
                .open(&tokens.seal(&claims(1_000 + 3601)), 1_000)
                .is_err()
        );
    }

    #[test]
    fn every_tampering_fails_the_same_way() {
        for (cipher, len) in [
            (FrontendCipher::Gcm, 32),
            (FrontendCipher::CbcHmacSha256, 64),
        ] {
            let tokens = FrontendTokens::new(&secret(len), cipher).unwrap();
            let mut bytes = URL_SAFE_NO_PAD.decode(tokens.seal(&claims(2_000))).unwrap();
            for i in [0, 5, bytes.len() / 2, bytes.len() - 1] {
                bytes[i] ^= 1;
                let token = URL_SAFE_NO_PAD.encode(&bytes);
                assert_eq!(
                    tokens.open(&token, 1_000),
                    Err(FrontendTokenError::Invalid),
                    "byte {i}"
                );
                bytes[i] ^= 1;
            }
            for junk in ["", "!!!", "AAAA", &"A".repeat(200)] {
                assert_eq!(tokens.open(junk, 1_000), Err(FrontendTokenError::Invalid));
            }
            let other =
                FrontendTokens::new(&Secret::new(URL_SAFE_NO_PAD.encode(vec![8u8; len])), cipher)
                    .unwrap();
            let foreign = other.seal(&claims(2_000));
            assert_eq!(
                tokens.open(&foreign, 1_000),
                Err(FrontendTokenError::Invalid)
            );
        }
    }

    #[test]
    fn cbc_without_its_mac_is_not_accepted() {
        // A ciphertext with valid padding but no MAC: what a padding oracle would probe.
        let tokens = FrontendTokens::new(&secret(64), FrontendCipher::CbcHmacSha256).unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(tokens.seal(&claims(2_000))).unwrap();
        let stripped = URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - TAG_LEN]);
        assert_eq!(
            tokens.open(&stripped, 1_000),
            Err(FrontendTokenError::Invalid)
        );
    }

    #[test]
    fn secrets_of_the_wrong_size_are_refused() {
        assert_eq!(
            FrontendTokens::new(&secret(16), FrontendCipher::Gcm).unwrap_err(),
            FrontendTokenError::BadSecret(32)
        );
        assert_eq!(
            FrontendTokens::new(&secret(32), FrontendCipher::CbcHmacSha256).unwrap_err(),
            FrontendTokenError::BadSecret(64)
        );
    }
}
