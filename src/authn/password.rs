//! Passwords: the policy a new one must meet, and argon2id hashing that runs
//! off the async runtime, a bounded number at a time.
//!
//! Each argon2id hash at the OWASP parameters holds 19 MiB and a core for
//! about 25 ms. Unbounded, a login storm would take memory without limit and
//! every core from the permission checks; so hashes wait for one of a few
//! permits, and a caller that waits too long is told the service is busy.
//!
//! Hashes run on a fixed set of threads of their own, one per permit, each
//! with its work memory allocated once and reused: left to the allocator,
//! every blocking thread's arena kept its own 19 MiB blocks, and a storm grew
//! the process past 600 MiB. The threads run at a lower scheduling priority
//! (nice 19), so that when a check and a hash both want a core, the check
//! gets it first.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
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

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The hashing threads: each takes jobs from the one queue and runs them in
/// its own work memory. They end when the last hasher handle is dropped.
fn start_workers(count: usize) -> Sender<Job> {
    let (jobs, queue) = channel::<Job>();
    let queue: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(queue));
    for n in 0..count {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("memberd-argon2-{n}"))
            .spawn(move || {
                lower_priority();
                let mut memory = Vec::new();
                loop {
                    let job = queue.lock().map(|q| q.recv());
                    match job {
                        Ok(Ok(job)) => job(&mut memory),
                        _ => return,
                    }
                }
            })
            .expect("starting a hashing thread");
    }
    jobs
}

/// Nice 19 (the lowest priority) for the calling thread (on Linux, `setpriority` with `who = 0`
/// applies to the calling thread only).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory effects; a failure leaves the priority as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Hashes and verifies passwords, at most `permits` at once.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    jobs: Arc<Mutex<Sender<Job>>>,
    max_wait: Duration,
    /// Verified against when the username is unknown, so that an unknown
    /// user costs the same time as a wrong password.
    decoy: Arc<str>,
}

impl PasswordHasher {
    pub fn new(cost: HashCost, permits: usize, max_wait: Duration) -> Result<Self, PasswordError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let decoy = hash_with(
            &params,
            &Secret::new("memberd decoy password"),
            &mut Vec::new(),
        )?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(permits.max(1))),
            jobs: Arc::new(Mutex::new(start_workers(permits.max(1)))),
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
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .expect("the semaphore is never closed");
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _permit = permit;
            let _ = done.send(work(memory));
        });
        self.jobs
            .lock()
            .expect("the job queue lock is never poisoned")
            .send(job)
            .map_err(|_| PasswordError::Hash("the hashing threads are gone".into()))?;
        result
            .await
            .map_err(|_| PasswordError::Hash("a hashing thread failed".into()))
    }

    #[tracing::instrument(skip_all)]
    pub async fn hash(&self, password: Secret) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.run(move |memory| hash_with(&params, &password, memory))
            .await?
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
        self.run(move |memory| {
            let (phc, real) = match &stored {
                Some(s) => (s.as_str(), true),
                None => (&*decoy, false),
            };
            verify_with(phc, &password, memory) && real
        })
        .await
    }
}

fn fit(memory: &mut Vec<Block>, params: &Params) {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
}

/// An argon2id PHC string, computed in `memory`.
fn hash_with(
    params: &Params,
    password: &Secret,
    memory: &mut Vec<Block>,
) -> Result<String, PasswordError> {
    let failed = |e: &dyn std::fmt::Display| PasswordError::Hash(e.to_string());
    let salt = rand::random::<[u8; 16]>();
    let mut out = [0u8; 32];
    fit(memory, params);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            &salt,
            &mut out,
            &mut memory[..],
        )
        .map_err(|e| failed(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string, computed in `memory`. The
/// stored hash's own parameters apply, so hashes made at an older cost still
/// verify after the cost is raised. Anything malformed is a mismatch.
fn verify_with(phc: &str, password: &Secret, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    fit(memory, &params);
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.expose().as_bytes(),
        salt,
        &mut out,
        &mut memory[..],
    );
    computed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
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

    #[test]
    fn hashes_interoperate_with_the_argon2_crates_own() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(64, 1, 1, None).unwrap();
        let ours = hash_with(&params, &Secret::new("pass phrase"), &mut Vec::new()).unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2.verify_password(b"pass phrase", &parsed).is_ok());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = argon2
            .hash_password(b"pass phrase", &salt)
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        assert!(verify_with(
            &theirs,
            &Secret::new("pass phrase"),
            &mut memory
        ));
        assert!(!verify_with(
            &theirs,
            &Secret::new("pass phrasf"),
            &mut memory
        ));
        // An argon2i hash of another cost, in memory larger than it needs.
        let other_params = Params::new(32, 2, 1, None).unwrap();
        let other = Argon2::new(Algorithm::Argon2i, Version::V0x13, other_params)
            .hash_password(b"pass phrase", &salt)
            .unwrap()
            .to_string();
        assert!(verify_with(
            &other,
            &Secret::new("pass phrase"),
            &mut memory
        ));
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
