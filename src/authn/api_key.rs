//! API keys: generation with a recognisable prefix, hashing for storage and
//! verification of every stored hash format (sha256, bcrypt, argon2).
//!
//! Hashing and verifying run on the shared hashing pool (`authn::hashing`),
//! which alone holds argon2's work memory.

use std::str::FromStr;

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Secret;

/// Prefix of every API key, so secret scanners can recognise a leaked one.
pub const API_KEY_PREFIX: &str = "mbr_";
/// Prefix of client keys: public identifiers, not secrets.
pub const CLIENT_KEY_PREFIX: &str = "mbc_";

/// bcrypt's cost for API keys: the keys carry 256 bits of entropy, so the
/// hash's work factor protects little and a lower cost keeps verification cheap.
const BCRYPT_COST: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    #[default]
    Argon2,
    Bcrypt,
    Sha256,
}

impl FromStr for HashAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "argon2" => Ok(Self::Argon2),
            "bcrypt" => Ok(Self::Bcrypt),
            "sha256" => Ok(Self::Sha256),
            other => Err(format!(
                "unknown hash algorithm {other:?} (argon2, bcrypt or sha256)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyHashError {
    #[error("the stored key hash is in no known format")]
    UnknownFormat,
    #[error("hashing failed: {0}")]
    Hashing(String),
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn generate_client_key() -> String {
    format!("{CLIENT_KEY_PREFIX}{}", random_alphanumeric(24))
}

/// 43 alphanumeric characters: ≈256 bits of entropy.
pub fn generate_api_key() -> Secret {
    Secret::new(format!("{API_KEY_PREFIX}{}", random_alphanumeric(43)))
}

/// Lower-case hexadecimal, as SHA-256 digests are stored.
pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

pub fn sha256_hash(key: &Secret) -> String {
    format!("sha256:{}", hex(&Sha256::digest(key.expose().as_bytes())))
}

/// bcrypt at [`BCRYPT_COST`]: CPU-bound, to be run on the hashing pool.
pub fn bcrypt_hash(key: &Secret) -> Result<String, KeyHashError> {
    bcrypt::hash(key.expose(), BCRYPT_COST).map_err(|e| KeyHashError::Hashing(e.to_string()))
}

/// Whether `key` matches a stored SHA-256 digest or bcrypt hash, told by the
/// stored hash's prefix. argon2 hashes need work memory and are verified by
/// the hashing pool (`authn::hashing`); here they are an unknown format.
pub fn verify_sha256_or_bcrypt(key: &Secret, stored: &str) -> Result<bool, KeyHashError> {
    if let Some(expected) = stored.strip_prefix("sha256:") {
        let actual = hex(&Sha256::digest(key.expose().as_bytes()));
        let expected = expected.to_ascii_lowercase();
        if expected.len() != actual.len() {
            return Err(KeyHashError::UnknownFormat);
        }
        Ok(actual.as_bytes().ct_eq(expected.as_bytes()).into())
    } else if ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
    {
        bcrypt::verify(key.expose(), stored).map_err(|_| KeyHashError::UnknownFormat)
    } else {
        Err(KeyHashError::UnknownFormat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_distinct() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert!(a.expose().starts_with(API_KEY_PREFIX));
        assert_eq!(a.expose().len(), API_KEY_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert!(generate_client_key().starts_with(CLIENT_KEY_PREFIX));
    }

    #[test]
    fn hashes_made_elsewhere_verify() {
        let key = Secret::new("secret-key");
        // sha256("secret-key") as another system would have stored it, in either case.
        let sha = "sha256:85dbe15d75ef9308c7ae0f33c7a324cc6f4bf519a2ed2f3027bd33c140a4f9aa";
        assert!(verify_sha256_or_bcrypt(&key, sha).unwrap());
        assert!(
            verify_sha256_or_bcrypt(&key, &sha.to_uppercase().replacen("SHA256:", "sha256:", 1))
                .unwrap()
        );
        assert!(!verify_sha256_or_bcrypt(&Secret::new("secret-kez"), sha).unwrap());
        // bcrypt's $2y$ and $2a$ variants.
        let b = bcrypt::hash_with_result("secret-key", 4).unwrap();
        assert!(
            verify_sha256_or_bcrypt(&key, &b.format_for_version(bcrypt::Version::TwoY)).unwrap()
        );
        assert!(
            verify_sha256_or_bcrypt(&key, &b.format_for_version(bcrypt::Version::TwoA)).unwrap()
        );
    }

    #[test]
    fn unknown_formats_are_errors_not_mismatches() {
        let key = Secret::new("k");
        assert!(verify_sha256_or_bcrypt(&key, "md5:abc").is_err());
        assert!(verify_sha256_or_bcrypt(&key, "sha256:abc").is_err());
        assert!(
            verify_sha256_or_bcrypt(&key, "$argon2id$v=19$m=19456,t=2,p=1$AAAA$AAAA").is_err(),
            "argon2 is the pool's"
        );
    }
}
