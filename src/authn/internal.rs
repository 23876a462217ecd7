//! The shared secrets that service-to-service (`/internal`) routes require.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Secret;

/// Holds digests only: comparing fixed-length digests in constant time hides
/// both the secrets' contents and their lengths from a timing observer.
#[derive(Clone)]
pub struct InternalSecrets {
    digests: Vec<[u8; 32]>,
}

impl InternalSecrets {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        Self {
            digests: secrets.into_iter().map(|s| digest(s.expose())).collect(),
        }
    }

    /// From a stored `sha256:<hex>` digest, as kept for a generated development secret.
    pub fn push_stored_digest(&mut self, stored: &str) -> bool {
        match stored.strip_prefix("sha256:").and_then(decode_hex32) {
            Some(d) => {
                self.digests.push(d);
                true
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// True when `presented` equals any configured secret. Every configured
    /// secret is compared, so the time taken does not say which one matched.
    pub fn verify(&self, presented: &str) -> bool {
        let presented = digest(presented);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, d| acc | d.ct_eq(&presented))
            .into()
    }
}

pub fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// `sha256:<hex>` of a secret, the form in which memberd stores secrets it generated.
pub fn stored_digest(secret: &Secret) -> String {
    format!("sha256:{}", super::api_key::hex(&digest(secret.expose())))
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_secret_verifies() {
        let a = Secret::new("first-secret");
        let b = Secret::new("second-secret");
        let secrets = InternalSecrets::new([&a, &b]);
        assert!(secrets.verify("first-secret"));
        assert!(secrets.verify("second-secret"));
        assert!(!secrets.verify("first-secre"));
        assert!(!secrets.verify(""));
    }

    #[test]
    fn no_secret_verifies_nothing() {
        assert!(!InternalSecrets::new([]).verify(""));
    }

    #[test]
    fn stored_digests_round_trip() {
        let generated = Secret::new("generated-dev-secret");
        let mut secrets = InternalSecrets::new([]);
        assert!(secrets.push_stored_digest(&stored_digest(&generated)));
        assert!(secrets.verify("generated-dev-secret"));
        assert!(!secrets.push_stored_digest("sha256:zz"));
    }
}
