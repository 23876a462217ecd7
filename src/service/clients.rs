//! API clients: creating and managing them, and authenticating their requests.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::authn::Secret;
use crate::authn::api_key::{self, HashAlgorithm};
use crate::authn::hashing::{HashError, HashPool};
use crate::model::{ApiClient, Capability, ClientName, ClientStatus, Origin, PathPattern};
use crate::ratelimit::Limits;
use crate::store::{self, Store, StoreError};

use super::ServiceError;

/// `last_used_at` is a hint for operators, not an audit trail: writing it at
/// most this often keeps busy clients from turning every request into a write.
const TOUCH_INTERVAL: time::Duration = time::Duration::seconds(60);
/// Bound on each of the remembered sets (verified keys, client rows,
/// addresses that guessed): quick_cache's S3-FIFO evicts past it, in O(1)
/// and without a lock shared by every key.
const MAX_REMEMBERED_KEYS: usize = 10_000;
/// Wrong API keys one address may present a minute. Past it, the address's
/// keys are refused (429) without hashing until the budget refills. Only
/// failures count, so any number of legitimate clients may share an
/// address (a gateway, a NAT).
const KEY_FAILURES_PER_ADDRESS: u32 = 20;

/// What a client key looks like (`mbc_` and 24 letters and digits when
/// memberd makes one): anything else is refused before any lookup or cache,
/// so unknown keys cost no memory whatever their size.
fn is_client_key(key: &str) -> bool {
    key.len() <= 64
        && key.starts_with(api_key::CLIENT_KEY_PREFIX)
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An API key longer than this is no key of ours (ours are 47 bytes).
const MAX_API_KEY_LEN: usize = 256;

fn hash_failure(e: HashError) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// What an operator asks for when creating a client.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: ClientName,
    pub allowed_origins: Vec<Origin>,
    pub allowed_ips: Vec<IpNet>,
    pub allowed_paths: Vec<PathPattern>,
    pub expires_at: Option<OffsetDateTime>,
    pub rate_limit_per_minute: Option<u32>,
    /// None named: [`Capability::DEFAULT`].
    pub capabilities: Vec<Capability>,
    pub hash: HashAlgorithm,
}

/// The capabilities as stored: sorted, once each, the default for none.
fn capability_set(mut capabilities: Vec<Capability>) -> Vec<Capability> {
    if capabilities.is_empty() {
        capabilities = Capability::DEFAULT.to_vec();
    }
    capabilities.sort_unstable();
    capabilities.dedup();
    capabilities
}

/// Creating, listing, disabling and rotating clients.
#[derive(Clone)]
pub struct ClientAdmin {
    store: Store,
    hashes: HashPool,
}

impl ClientAdmin {
    pub fn new(store: Store, hashes: HashPool) -> Self {
        Self { store, hashes }
    }

    /// The new client and its API key: the only time the key exists in the clear.
    pub async fn create(&self, new: NewClient) -> Result<(ApiClient, Secret), ServiceError> {
        if new.rate_limit_per_minute == Some(0) {
            return Err(ServiceError::Invalid(
                "rate limit must be at least 1 request per minute".into(),
            ));
        }
        if new
            .expires_at
            .is_some_and(|t| t <= OffsetDateTime::now_utc())
        {
            return Err(ServiceError::Invalid("expiry must be in the future".into()));
        }
        let api_key = api_key::generate_api_key();
        let client = ApiClient {
            client_key: api_key::generate_client_key(),
            name: new.name,
            api_key_hash: self
                .hashes
                .hash_key(&api_key, new.hash)
                .await
                .map_err(hash_failure)?,
            status: ClientStatus::Active,
            expires_at: new.expires_at,
            allowed_origins: new.allowed_origins,
            allowed_ips: new.allowed_ips,
            allowed_paths: new.allowed_paths,
            rate_limit_per_minute: new.rate_limit_per_minute,
            capabilities: capability_set(new.capabilities),
            created_at: store::now(),
            last_used_at: None,
        };
        self.store.create_client(&client).await?;
        tracing::info!(client_key = %client.client_key, "api client created");
        Ok((client, api_key))
    }

    pub async fn list(&self) -> Result<Vec<ApiClient>, ServiceError> {
        Ok(self.store.clients().await?)
    }

    pub async fn set_status(
        &self,
        client_key: &str,
        status: ClientStatus,
    ) -> Result<(), ServiceError> {
        self.store.set_client_status(client_key, status).await?;
        tracing::info!(
            client_key,
            status = status.as_str(),
            "api client status changed"
        );
        Ok(())
    }

    pub async fn get(&self, client_key: &str) -> Result<ApiClient, ServiceError> {
        self.store
            .client(client_key)
            .await?
            .ok_or(ServiceError::NotFound("client"))
    }

    /// Replaces the client's name, allowlists, expiry and rate limit.
    pub async fn update(&self, client: &mut ApiClient) -> Result<(), ServiceError> {
        if client.rate_limit_per_minute == Some(0) {
            return Err(ServiceError::Invalid(
                "rate limit must be at least 1 request per minute".into(),
            ));
        }
        client.capabilities = capability_set(std::mem::take(&mut client.capabilities));
        self.store.update_client(client).await?;
        tracing::info!(client_key = %client.client_key, "api client updated");
        Ok(())
    }

    /// A new key replaces the old one at once, in every process: requests
    /// compare the stored hash, which the rotation changes.
    pub async fn rotate(
        &self,
        client_key: &str,
        algorithm: HashAlgorithm,
    ) -> Result<Secret, ServiceError> {
        if self.store.client(client_key).await?.is_none() {
            return Err(ServiceError::NotFound("client"));
        }
        let api_key = api_key::generate_api_key();
        let hash = self
            .hashes
            .hash_key(&api_key, algorithm)
            .await
            .map_err(hash_failure)?;
        self.store.set_client_key_hash(client_key, &hash).await?;
        tracing::info!(client_key, "api client key rotated");
        Ok(api_key)
    }
}

/// Why a client's request was refused. Each maps to its own error code.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("unknown client or wrong API key")]
    InvalidCredentials,
    #[error("this API client is disabled")]
    Disabled,
    #[error("this API client has expired")]
    Expired,
    #[error("requests from this origin are not allowed for this client")]
    OriginNotAllowed,
    #[error("requests from this address are not allowed for this client")]
    IpNotAllowed,
    #[error("this path is not allowed for this client")]
    PathNotAllowed,
    #[error("this API client was not given the {0} capability")]
    MissingCapability(Capability),
    #[error("rate limit exceeded")]
    RateLimited { retry_after: Duration },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for ClientAuthError {
    fn from(e: StoreError) -> Self {
        Self::Service(e.into())
    }
}

/// How current the client's stored row must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Read from the store on every request: disabling or rotating a client,
    /// from any process, takes effect at once. For routes that change things.
    Strict,
    /// A row read at most `ROW_CACHE_TTL` ago will do: decision routes
    /// (checks) never touch the database on their hot path.
    Recent,
}

/// A client's row (or its absence) and when it was read.
type CachedRow = (Option<ApiClient>, Instant);

/// How long a client row may serve `Freshness::Recent` requests.
const ROW_CACHE_TTL: Duration = Duration::from_secs(1);

/// One request as far as client authentication cares.
pub struct ClientRequest<'a> {
    pub client_key: &'a str,
    pub api_key: &'a Secret,
    pub origin: Option<&'a str>,
    /// The caller's address, already resolved through trusted proxies.
    pub ip: Option<IpAddr>,
    pub path: &'a str,
    /// What the route asks of the client.
    pub needs: Capability,
}

/// Keys verified recently, by a digest of client key and API key together,
/// with the stored hash they verified against. An entry counts only while the
/// client's stored hash is still that one, so a rotation by any process ends
/// it; the client's state (disabled, expired) is read from its row on every
/// request, so the cache never outlives a change to the client.
struct VerifiedKeys {
    entries: quick_cache::sync::Cache<[u8; 32], Arc<Verified>>,
}

impl Default for VerifiedKeys {
    fn default() -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(MAX_REMEMBERED_KEYS),
        }
    }
}

struct Verified {
    stored_hash: String,
    at: Instant,
    /// A background re-verification is under way.
    refreshing: AtomicBool,
}

/// What the cache knows of a key.
#[derive(Debug, PartialEq, Eq)]
enum Remembered {
    No,
    Yes,
    /// Yes, and past half its life: the caller should refresh it (once).
    YesRefresh,
}

impl VerifiedKeys {
    fn digest(request: &ClientRequest<'_>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(request.client_key.as_bytes());
        h.update([0]);
        h.update(request.api_key.expose().as_bytes());
        h.finalize().into()
    }

    fn lookup(&self, digest: &[u8; 32], stored_hash: &str, ttl: Duration) -> Remembered {
        let Some(entry) = self.entries.get(digest) else {
            return Remembered::No;
        };
        let age = entry.at.elapsed();
        if entry.stored_hash != stored_hash || age >= ttl {
            return Remembered::No;
        }
        if age >= ttl / 2 && !entry.refreshing.swap(true, Ordering::Relaxed) {
            return Remembered::YesRefresh;
        }
        Remembered::Yes
    }

    fn insert(&self, digest: [u8; 32], stored_hash: String) {
        let verified = Verified {
            stored_hash,
            at: Instant::now(),
            refreshing: AtomicBool::new(false),
        };
        self.entries.insert(digest, Arc::new(verified));
    }

    /// A refresh that did not verify (a busy pool, a rotated key): the entry
    /// ages out as it would have, and a later request may try again.
    fn refresh_failed(&self, digest: &[u8; 32]) {
        if let Some(entry) = self.entries.get(digest) {
            entry.refreshing.store(false, Ordering::Relaxed);
        }
    }
}

/// Addresses that presented too many wrong keys, and until when their keys
/// are refused unhashed.
struct Guessing {
    until: quick_cache::sync::Cache<String, Instant>,
}

impl Default for Guessing {
    fn default() -> Self {
        Self {
            until: quick_cache::sync::Cache::new(MAX_REMEMBERED_KEYS),
        }
    }
}

impl Guessing {
    fn blocked(&self, address: &str) -> Option<Duration> {
        self.until
            .get(address)
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    fn block(&self, address: String, for_: Duration) {
        self.until.insert(address, Instant::now() + for_);
    }
}

/// Decides whether a request comes from an active client that may make it.
#[derive(Clone)]
pub struct ClientAuthenticator {
    store: Store,
    hashes: HashPool,
    verified: Arc<VerifiedKeys>,
    guessing: Arc<Guessing>,
    limits: Limits,
    cache_ttl: Duration,
    rows: Arc<quick_cache::sync::Cache<String, CachedRow>>,
}

impl ClientAuthenticator {
    pub fn new(store: Store, hashes: HashPool, cache_ttl: Duration) -> Self {
        Self {
            store,
            hashes,
            verified: Arc::default(),
            guessing: Arc::default(),
            limits: Limits::default(),
            cache_ttl,
            rows: Arc::new(quick_cache::sync::Cache::new(MAX_REMEMBERED_KEYS)),
        }
    }

    /// How many client rows (or their absence) are remembered: bounded in
    /// number, and in size since only well-formed client keys get here.
    pub fn remembered_rows(&self) -> usize {
        self.rows.len()
    }

    /// Counts each client's requests in `limits` (Redis, to hold across instances).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    async fn client_row(
        &self,
        client_key: &str,
        freshness: Freshness,
    ) -> Result<Option<ApiClient>, StoreError> {
        if freshness == Freshness::Recent {
            if let Some((row, at)) = self.rows.get(client_key) {
                if at.elapsed() < ROW_CACHE_TTL {
                    return Ok(row);
                }
            }
        }
        let row = self.store.client(client_key).await?;
        self.rows
            .insert(client_key.to_owned(), (row.clone(), Instant::now()));
        Ok(row)
    }

    /// Verifies a remembered key again while it is still remembered, when a
    /// hashing thread is idle, so that a client in steady use never waits
    /// for a hash (before, every client missed together each minute).
    fn refresh(&self, digest: [u8; 32], api_key: Secret, stored_hash: String) {
        let (hashes, verified) = (self.hashes.clone(), self.verified.clone());
        tokio::spawn(async move {
            match hashes.verify_key_if_idle(&api_key, &stored_hash).await {
                Ok(true) => verified.insert(digest, stored_hash),
                _ => verified.refresh_failed(&digest),
            }
        });
    }

    /// Only the key verification is remembered for long; the client's row is
    /// read as fresh as `freshness` asks.
    pub async fn authenticate(
        &self,
        request: ClientRequest<'_>,
        freshness: Freshness,
    ) -> Result<ApiClient, ClientAuthError> {
        if !is_client_key(request.client_key) || request.api_key.expose().len() > MAX_API_KEY_LEN {
            return Err(ClientAuthError::InvalidCredentials);
        }
        let client = self
            .client_row(request.client_key, freshness)
            .await?
            .ok_or(ClientAuthError::InvalidCredentials)?;

        let digest = VerifiedKeys::digest(&request);
        let remembered = self
            .verified
            .lookup(&digest, &client.api_key_hash, self.cache_ttl);
        crate::metrics::api_key_cache(remembered != Remembered::No);
        if remembered == Remembered::YesRefresh {
            self.refresh(digest, request.api_key.clone(), client.api_key_hash.clone());
        }
        if remembered == Remembered::No {
            // A hash is the expensive part: an address that guessed wrong
            // too often, or a full queue, is refused before any runs.
            let address = request
                .ip
                .map_or_else(|| "unknown".to_owned(), crate::ratelimit::address_key);
            if let Some(retry_after) = self.guessing.blocked(&address) {
                return Err(ClientAuthError::RateLimited { retry_after });
            }
            let busy = || ClientAuthError::RateLimited {
                retry_after: Duration::from_secs(1),
            };
            if self.hashes.saturated() {
                return Err(busy());
            }
            let verified = match self
                .hashes
                .verify_key(request.api_key, &client.api_key_hash)
                .await
            {
                Ok(verified) => verified,
                Err(HashError::Busy) => return Err(busy()),
                Err(e) => return Err(hash_failure(e).into()),
            };
            if !verified {
                if let Err(retry_after) = self
                    .limits
                    .check(&format!("key-failures:{address}"), KEY_FAILURES_PER_ADDRESS)
                    .await
                {
                    self.guessing.block(address, retry_after);
                }
                return Err(ClientAuthError::InvalidCredentials);
            }
            self.verified.insert(digest, client.api_key_hash.clone());
        }

        // Only a caller holding the key learns the client's state.
        if client.status == ClientStatus::Disabled {
            return Err(ClientAuthError::Disabled);
        }
        let now = OffsetDateTime::now_utc();
        if client.expires_at.is_some_and(|t| t <= now) {
            return Err(ClientAuthError::Expired);
        }
        if !client.allowed_origins.is_empty() {
            let origin = request.origin.and_then(|o| Origin::normalize(o).ok());
            if !origin.is_some_and(|o| client.allowed_origins.contains(&o)) {
                return Err(ClientAuthError::OriginNotAllowed);
            }
        }
        if !client.allowed_ips.is_empty()
            && !request
                .ip
                .is_some_and(|ip| client.allowed_ips.iter().any(|net| net.contains(&ip)))
        {
            return Err(ClientAuthError::IpNotAllowed);
        }
        if !client.allowed_paths.is_empty()
            && !client.allowed_paths.iter().any(|p| p.matches(request.path))
        {
            return Err(ClientAuthError::PathNotAllowed);
        }
        if !client.may(request.needs) {
            return Err(ClientAuthError::MissingCapability(request.needs));
        }
        if let Some(limit) = client.rate_limit_per_minute {
            self.limits
                .check(&format!("client:{}", client.client_key), limit)
                .await
                .map_err(|retry_after| ClientAuthError::RateLimited { retry_after })?;
        }

        if client
            .last_used_at
            .is_none_or(|t| now - t >= TOUCH_INTERVAL)
        {
            let store = self.store.clone();
            let key = client.client_key.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_client(&key, store::now()).await {
                    tracing::warn!(error = %e, "could not record when an api client was last used");
                }
            });
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remembered sets are bounded by eviction, not by a scan under a
    /// lock: a flood of addresses or keys leaves them near the bound, and
    /// the newest entries are there.
    #[test]
    fn remembered_sets_stay_bounded() {
        let (guessing, verified) = (Guessing::default(), VerifiedKeys::default());
        let flood = MAX_REMEMBERED_KEYS * 5;
        for n in 0..flood {
            guessing.block(format!("address-{n}"), Duration::from_secs(60));
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(n as u64).to_le_bytes());
            verified.insert(digest, "hash".into());
        }
        let bound = MAX_REMEMBERED_KEYS + MAX_REMEMBERED_KEYS / 10;
        assert!(guessing.until.len() <= bound, "{}", guessing.until.len());
        assert!(
            verified.entries.len() <= bound,
            "{}",
            verified.entries.len()
        );
        assert!(
            guessing
                .blocked(&format!("address-{}", flood - 1))
                .is_some()
        );
    }

    #[test]
    fn only_our_client_keys_are_looked_up() {
        assert!(is_client_key(&api_key::generate_client_key()));
        assert!(!is_client_key(&format!("mbc_{}", "a".repeat(400 * 1024))));
        assert!(!is_client_key("someone-else's-key"));
        assert!(!is_client_key("mbc_\u{0}"));
    }

    fn cheap_pool() -> HashPool {
        let cost = crate::authn::hashing::HashCost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        HashPool::new(cost, 1, Duration::from_secs(5)).unwrap()
    }

    /// A client in steady use never waits for a hash: its key is verified
    /// again in the background halfway through its life, and stays remembered
    /// past the first expiry; an idle one is forgotten.
    #[tokio::test]
    async fn keys_in_use_are_refreshed_before_they_expire() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let hashes = cheap_pool();
        let admin = ClientAdmin::new(store.clone(), hashes.clone());
        let new = NewClient {
            name: ClientName::parse("steady").unwrap(),
            allowed_origins: vec![],
            allowed_ips: vec![],
            allowed_paths: vec![],
            expires_at: None,
            rate_limit_per_minute: None,
            capabilities: vec![],
            hash: HashAlgorithm::Argon2,
        };
        let (client, key) = admin.create(new).await.unwrap();
        let ttl = Duration::from_millis(800);
        let auth = ClientAuthenticator::new(store, hashes.clone(), ttl);
        let request = || ClientRequest {
            client_key: &client.client_key,
            api_key: &key,
            origin: None,
            ip: None,
            path: "/v1/check",
            needs: Capability::Check,
        };
        let before = hashes.hashes_run();
        auth.authenticate(request(), Freshness::Strict)
            .await
            .unwrap();
        assert_eq!(hashes.hashes_run(), before + 1, "a first use verifies");
        let first = Instant::now();

        tokio::time::sleep(ttl / 2 + Duration::from_millis(50)).await;
        auth.authenticate(request(), Freshness::Strict)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while hashes.hashes_run() < before + 2 {
            assert!(Instant::now() < deadline, "no background refresh");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep((first + ttl + Duration::from_millis(50)) - Instant::now()).await;
        // Past the first verification's expiry: still remembered, no hash on the request's path.
        let digest = VerifiedKeys::digest(&request());
        assert_ne!(
            auth.verified.lookup(&digest, &client.api_key_hash, ttl),
            Remembered::No,
            "the refreshed key is remembered past its first expiry"
        );

        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert_eq!(
            auth.verified.lookup(&digest, &client.api_key_hash, ttl),
            Remembered::No,
            "an idle key is forgotten"
        );
    }
}
