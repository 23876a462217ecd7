//! The one pool that runs every password-grade hash: login passwords and API
//! keys alike, off the async runtime and a bounded number at a time.
//!
//! Each argon2id hash at the OWASP parameters holds 19 MiB and a core for
//! about 25 ms. Unbounded, a login storm or a burst of API-key cache misses
//! would take memory without limit and every core from the permission
//! checks; so hashes wait for one of a few permits, and a caller that waits
//! too long is told the service is busy.
//!
//! Hashes run on a fixed set of threads of their own, one per permit, each
//! with its work memory allocated once and reused: left to the allocator,
//! every blocking thread's arena kept its own 19 MiB blocks (a login storm
//! grew the process past 600 MiB, eight API-key misses at once to 162 MB).
//! So the memory hashing holds is at most the pool's size times one hash's
//! memory, whatever the load. The threads run at a lower scheduling priority
//! (nice 19), so that when a check and a hash both want a core, the check
//! gets it first.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Secret;
use super::api_key::{self, HashAlgorithm, KeyHashError};

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

/// A stored hash that asks for more memory than this is not verified: a
/// hash imported from elsewhere could otherwise make one verification take
/// gigabytes.
const MAX_VERIFY_MEMORY_KIB: u32 = 256 * 1024;

/// Hashes waiting for a thread, beyond which API-key verifications are
/// turned away at once (logins wait up to the pool's `max_wait` instead).
const MAX_QUEUED: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password checks at once; retry shortly")]
    Busy,
    #[error("hashing failed: {0}")]
    Failed(String),
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The hashing threads: each takes jobs from the one queue and runs them in
/// its own work memory, given back to the allocator down to one hash at the
/// configured cost after a larger one. They end when the last pool handle is
/// dropped.
fn start_workers(count: usize, kept_blocks: usize) -> Sender<Job> {
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
                    if memory.len() > kept_blocks {
                        memory.truncate(kept_blocks);
                        memory.shrink_to_fit();
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

/// Leaves the queue when dropped.
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs hashes, at most `threads` at once, for every caller in the process.
#[derive(Clone)]
pub struct HashPool {
    params: Params,
    permits: Arc<Semaphore>,
    jobs: Arc<Mutex<Sender<Job>>>,
    queued: Arc<AtomicUsize>,
    max_wait: Duration,
    /// Hashes run, for tests and the benchmark to tell a cached answer from a computed one.
    ran: Arc<AtomicU64>,
    /// Verified against when the username is unknown, so that an unknown
    /// user costs the same time as a wrong password.
    decoy: Arc<str>,
}

impl HashPool {
    pub fn new(cost: HashCost, threads: usize, max_wait: Duration) -> Result<Self, HashError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| HashError::Failed(e.to_string()))?;
        let decoy = hash_with(
            &params,
            &Secret::new("memberd decoy password"),
            &mut Vec::new(),
        )?;
        let threads = threads.max(1);
        Ok(Self {
            permits: Arc::new(Semaphore::new(threads)),
            jobs: Arc::new(Mutex::new(start_workers(threads, params.block_count()))),
            params,
            queued: Arc::default(),
            max_wait,
            ran: Arc::default(),
            decoy: decoy.into(),
        })
    }

    /// One thread per core: hashes then use every core at most, and the
    /// checks' threads still get their share from the scheduler.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// A pool at the default cost, for one-off commands and tests.
    pub fn standard() -> Self {
        Self::new(
            HashCost::default(),
            Self::default_threads(),
            Duration::from_secs(10),
        )
        .expect("the default cost is valid")
    }

    /// How many hashes this pool has run.
    pub fn hashes_run(&self) -> u64 {
        self.ran.load(Ordering::Relaxed)
    }

    /// Whether the queue is full: a hash asked for now would only wait.
    pub fn saturated(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= MAX_QUEUED
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(self.queued.clone());
        let permit = tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .expect("the semaphore is never closed");
        self.run_with(permit, work).await
    }

    /// Runs `work` only if a thread is free now: for work that may as well
    /// not happen under load (refreshing a cache).
    async fn run_if_idle<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        self.run_with(permit, work).await
    }

    async fn run_with<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let ran = self.ran.clone();
        let job: Job = Box::new(move |memory| {
            let _permit = permit;
            ran.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(work(memory));
        });
        self.jobs
            .lock()
            .expect("the job queue lock is never poisoned")
            .send(job)
            .map_err(|_| HashError::Failed("the hashing threads are gone".into()))?;
        result
            .await
            .map_err(|_| HashError::Failed("a hashing thread failed".into()))
    }

    #[tracing::instrument(skip_all)]
    pub async fn hash_password(&self, password: Secret) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move |memory| hash_with(&params, &password, memory))
            .await?
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown
    /// user, or an account without a password) it spends the same time and
    /// answers false.
    #[tracing::instrument(skip_all)]
    pub async fn verify_password(
        &self,
        password: Secret,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
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

    /// A stored hash of a new API key; argon2 at the pool's cost.
    #[tracing::instrument(skip_all)]
    pub async fn hash_key(
        &self,
        key: &Secret,
        algorithm: HashAlgorithm,
    ) -> Result<String, HashError> {
        let key = key.clone();
        let params = self.params.clone();
        match algorithm {
            HashAlgorithm::Sha256 => Ok(api_key::sha256_hash(&key)),
            HashAlgorithm::Bcrypt => {
                self.run(move |_| api_key::bcrypt_hash(&key).map_err(key_failure))
                    .await?
            }
            HashAlgorithm::Argon2 => {
                self.run(move |memory| hash_with(&params, &key, memory))
                    .await?
            }
        }
    }

    /// Whether `key` matches `stored`, in any format memberd reads.
    #[tracing::instrument(skip_all)]
    pub async fn verify_key(&self, key: &Secret, stored: &str) -> Result<bool, HashError> {
        self.verify_key_when(key, stored, Wait::ForTurn).await
    }

    /// As [`Self::verify_key`], or `Busy` at once if no thread is free.
    pub async fn verify_key_if_idle(&self, key: &Secret, stored: &str) -> Result<bool, HashError> {
        self.verify_key_when(key, stored, Wait::No).await
    }

    /// SHA-256 digests are compared on the caller's thread: they cost nothing.
    async fn verify_key_when(
        &self,
        key: &Secret,
        stored: &str,
        wait: Wait,
    ) -> Result<bool, HashError> {
        if stored.starts_with("sha256:") {
            return Ok(api_key::verify_sha256_or_bcrypt(key, stored).unwrap_or(false));
        }
        let (key, stored) = (key.clone(), stored.to_owned());
        let work = move |memory: &mut Vec<Block>| verify_key_in(&key, &stored, memory);
        match wait {
            Wait::ForTurn => self.run(work).await,
            Wait::No => self.run_if_idle(work).await,
        }
    }
}

/// Whether a hash waits for a thread (up to the pool's `max_wait`) or runs only if one is idle.
enum Wait {
    ForTurn,
    No,
}

fn key_failure(e: KeyHashError) -> HashError {
    HashError::Failed(e.to_string())
}

/// A stored key hash in no known format verifies nothing.
fn verify_key_in(key: &Secret, stored: &str, memory: &mut Vec<Block>) -> bool {
    if stored.starts_with("$argon2") {
        verify_with(stored, key, memory)
    } else {
        api_key::verify_sha256_or_bcrypt(key, stored).unwrap_or(false)
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
) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(e.to_string());
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
    if params.m_cost() > MAX_VERIFY_MEMORY_KIB {
        tracing::warn!(
            memory_kib = params.m_cost(),
            "a stored argon2 hash asks for more memory than memberd gives one verification"
        );
        return false;
    }
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

    pub(crate) fn cheap() -> HashPool {
        let cost = HashCost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        HashPool::new(cost, 1, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let pool = cheap();
        let stored = pool
            .hash_password(Secret::new("a good passphrase"))
            .await
            .unwrap();
        assert!(stored.starts_with("$argon2id$"));
        let verify =
            |pw: &str, stored: Option<String>| pool.verify_password(Secret::new(pw), stored);
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
    async fn api_keys_of_every_format_verify_on_the_pool() {
        let pool = cheap();
        let key = api_key::generate_api_key();
        let other = api_key::generate_api_key();
        for algorithm in [
            HashAlgorithm::Sha256,
            HashAlgorithm::Bcrypt,
            HashAlgorithm::Argon2,
        ] {
            let stored = pool.hash_key(&key, algorithm).await.unwrap();
            assert!(!stored.contains(key.expose()));
            assert!(
                pool.verify_key(&key, &stored).await.unwrap(),
                "{algorithm:?}"
            );
            assert!(
                !pool.verify_key(&other, &stored).await.unwrap(),
                "{algorithm:?}"
            );
        }
        // Hashes made by the argon2 crate at its default cost (how earlier
        // memberd versions stored keys) still verify.
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = Argon2::default()
            .hash_password(key.expose().as_bytes(), &salt)
            .unwrap()
            .to_string();
        assert!(pool.verify_key(&key, &theirs).await.unwrap());
        assert!(!pool.verify_key(&key, "md5:abc").await.unwrap());
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

    #[test]
    fn a_hash_asking_for_gigabytes_is_not_computed() {
        let greedy = "$argon2id$v=19$m=4194304,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$\
                      AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let mut memory = Vec::new();
        assert!(!verify_with(greedy, &Secret::new("x"), &mut memory));
        assert!(memory.is_empty());
    }

    #[tokio::test]
    async fn a_caller_that_waits_too_long_is_told_busy() {
        let pool = HashPool {
            max_wait: Duration::from_millis(20),
            ..cheap()
        };
        let held = pool.permits.clone().acquire_owned().await.unwrap();
        let err = pool
            .hash_password(Secret::new("whatever"))
            .await
            .unwrap_err();
        assert!(matches!(err, HashError::Busy));
        let key = api_key::generate_api_key();
        let stored = "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(matches!(
            pool.verify_key_if_idle(&key, stored).await,
            Err(HashError::Busy)
        ));
        drop(held);
        assert!(pool.hash_password(Secret::new("whatever")).await.is_ok());
    }
}
