//! Passwords: the policy a new one must meet. They are hashed and verified
//! on the shared hashing pool (`authn::hashing`).

use std::collections::HashSet;
use std::sync::LazyLock;

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
}
