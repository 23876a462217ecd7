//! Passwords: the policy a new one must meet, and argon2id hashing that runs
//! off the async runtime, a bounded number at a time.
//!
//! Each argon2id hash at the OWASP parameters holds 19 MiB and a core for
//! about 25 ms. Unbounded, a login storm would take memory without limit and
//! every core from the permission checks; so hashes wait for one of a few
//! permits, and a caller that waits too long is told the service is busy.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::Secret;
use crate::model::Username;

pub const MAX_PASSWORD_CHARS: usize = 256;
pub const DEFAULT_MIN_PASSWORD_CHARS: usize = 12;

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    #[error("the password must be at least {0} characters long")]
    TooShort(usize),
    #[error("the password must be at most {MAX_PASSWORD_CHARS} characters long")]
    TooLong,
    #[error("the password is one of the most common passwords")]
    TooCommon,
    #[error("the password must not contain the username")]
    ContainsUsername,
}

impl PolicyViolation {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort(_) => "password_too_short",
            Self::TooLong => "password_too_long",
            Self::TooCommon => "password_too_common",
            Self::ContainsUsername => "password_contains_username",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: DEFAULT_MIN_PASSWORD_CHARS,
        }
    }
}

impl PasswordPolicy {
    pub fn check(&self, password: &Secret, username: &Username) -> Result<(), PolicyViolation> {
        let chars = password.expose().chars().count();
        if chars < self.min_chars {
            return Err(PolicyViolation::TooShort(self.min_chars));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(PolicyViolation::TooLong);
        }
        let lowered = password.expose().to_lowercase();
        if COMMON_PASSWORDS.contains(lowered.as_str()) {
            return Err(PolicyViolation::TooCommon);
        }
        if lowered.contains(username.as_str()) {
            return Err(PolicyViolation::ContainsUsername);
        }
        Ok(())
    }
}

/// argon2id cost. The defaults are OWASP's: m = 19 MiB, t = 2, p = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("too many password checks at once; retry shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes and verifies passwords, at most `permits` at once.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    max_wait: Duration,
    /// Verified against when the username is unknown, so that an unknown
    /// user costs the same time as a wrong password.
    decoy: Arc<str>,
}

impl PasswordHasher {
    pub fn new(cost: HashCost, permits: usize, max_wait: Duration) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let decoy = hash_with(&argon2, &Secret::new("memberd decoy password"))?;
        Ok(Self {
            argon2: Arc::new(argon2),
            permits: Arc::new(Semaphore::new(permits.max(1))),
            max_wait,
            decoy: decoy.into(),
        })
    }

    /// One permit per core: logins then use every core at most, and the
    /// checks' threads still get their share from the scheduler.
    pub fn default_permits() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .expect("the semaphore is never closed");
        let argon2 = self.argon2.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&argon2)
        })
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    #[tracing::instrument(skip_all)]
    pub async fn hash(&self, password: Secret) -> Result<String, PasswordError> {
        self.run(move |argon2| hash_with(argon2, &password)).await?
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown
    /// user, or an account without a password) it spends the same time and
    /// answers false.
    #[tracing::instrument(skip_all)]
    pub async fn verify(
        &self,
        password: Secret,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let decoy = self.decoy.clone();
        self.run(move |argon2| {
            let (phc, real) = match &stored {
                Some(s) => (s.as_str(), true),
                None => (&*decoy, false),
            };
            let Ok(parsed) = PasswordHash::new(phc) else {
                return Ok(false);
            };
            // The stored hash's own parameters apply, so hashes made at an
            // older cost still verify after the cost is raised.
            let matched = argon2
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok();
            Ok(matched && real)
        })
        .await?
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &Secret) -> Result<String, PasswordError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    argon2
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    #[test]
    fn each_rule_has_its_own_code() {
        let policy = PasswordPolicy::default();
        let check = |pw: &str| policy.check(&Secret::new(pw), &user("alice"));
        assert_eq!(check("short"), Err(PolicyViolation::TooShort(12)));
        assert_eq!(check(&"x".repeat(257)), Err(PolicyViolation::TooLong));
        assert!(check(&"é".repeat(256)).is_ok(), "length counts characters");
        assert_eq!(check("1qaz2wsx3edc"), Err(PolicyViolation::TooCommon));
        assert_eq!(check("Q1W2E3R4T5Y6"), Err(PolicyViolation::TooCommon));
        assert_eq!(
            check("my-ALICE-is-long"),
            Err(PolicyViolation::ContainsUsername)
        );
        assert!(check("correct horse battery").is_ok());
        let lenient = PasswordPolicy { min_chars: 6 };
        assert_eq!(
            lenient.check(&Secret::new("dragon"), &user("bob")),
            Err(PolicyViolation::TooCommon)
        );
    }

    #[test]
    fn the_shipped_list_holds_at_least_ten_thousand() {
        assert!(
            COMMON_PASSWORDS.len() >= 10_000,
            "{}",
            COMMON_PASSWORDS.len()
        );
    }

    fn cheap() -> PasswordHasher {
        let cost = HashCost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        PasswordHasher::new(cost, 1, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let hasher = cheap();
        let stored = hasher.hash(Secret::new("a good passphrase")).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        let verify = |pw: &str, stored: Option<String>| hasher.verify(Secret::new(pw), stored);
        assert!(
            verify("a good passphrase", Some(stored.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("a bad passphrase", Some(stored)).await.unwrap());
        assert!(!verify("memberd decoy password", None).await.unwrap());
        assert!(!verify("x", Some("not a phc string".into())).await.unwrap());
    }

    #[tokio::test]
    async fn a_caller_that_waits_too_long_is_told_busy() {
        let hasher = PasswordHasher {
            max_wait: Duration::from_millis(20),
            ..cheap()
        };
        let held = hasher.permits.clone().acquire_owned().await.unwrap();
        let err = hasher.hash(Secret::new("whatever")).await.unwrap_err();
        assert!(matches!(err, PasswordError::Busy));
        drop(held);
        assert!(hasher.hash(Secret::new("whatever")).await.is_ok());
    }
}
