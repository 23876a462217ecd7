//! Bearer tokens from the organisation's OpenID Connect provider
//! (Authentik, or any other), checked against its JWKS.
//!
//! Keys are fetched at start and kept; a token naming an unknown `kid` makes
//! one refresh, at most every ten seconds, so forged `kid`s cannot hammer the
//! provider; a refresh every five minutes drops retired keys. When the
//! provider is down the keys in hand keep working, and `healthy()` says so.
//! Verified tokens are remembered (by their SHA-256, never beyond their
//! `exp`), so a caller repeating one token pays for the signature once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Algorithms a public key may verify: never `none`, never HMAC.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::PS256,
];
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);
const REFRESH_EVERY: Duration = Duration::from_secs(300);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const VERIFIED_CACHE_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Discovery runs against `{issuer}/.well-known/openid-configuration`;
    /// tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// The JWKS directly (then without discovery).
    pub jwks_url: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
}

impl OidcSettings {
    /// The names of `MEMBERD_OIDC_ALGORITHMS`, refusing `none` and HMAC.
    pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
        if names.is_empty() {
            return Ok(DEFAULT_ALGORITHMS.to_vec());
        }
        names
            .iter()
            .map(|name| {
                let alg: Algorithm = name
                    .trim()
                    .parse()
                    .map_err(|_| format!("unknown JWT algorithm {name:?}"))?;
                if ASYMMETRIC.contains(&alg) {
                    Ok(alg)
                } else {
                    Err(format!(
                        "{name}: only public-key algorithms verify provider tokens"
                    ))
                }
            })
            .collect()
    }
}

/// Why a token was refused. The log says which; the client gets a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
}

/// What memberd takes from a provider's token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExternalClaims {
    pub iss: Option<String>,
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
}

#[derive(Clone)]
pub struct Oidc(Arc<Inner>);

struct Inner {
    settings: OidcSettings,
    http: reqwest::Client,
    jwks_url: RwLock<Option<String>>,
    keys: RwLock<Arc<HashMap<String, DecodingKey>>>,
    /// When an unknown `kid` last made a refresh.
    last_unknown_kid: Mutex<Option<Instant>>,
    healthy: AtomicBool,
    verified: Mutex<HashMap<[u8; 32], ExternalClaims>>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Oidc {
    /// Fetches the keys once. A provider that cannot be reached does not stop
    /// memberd from starting: its tokens are refused until it answers.
    pub async fn start(settings: OidcSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("an HTTP client builds");
        let oidc = Self(Arc::new(Inner {
            jwks_url: RwLock::new(settings.jwks_url.clone()),
            settings,
            http,
            keys: RwLock::default(),
            last_unknown_kid: Mutex::default(),
            healthy: AtomicBool::new(false),
            verified: Mutex::default(),
        }));
        oidc.refresh().await;
        let background = Arc::downgrade(&oidc.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(inner) = background.upgrade() else {
                    return;
                };
                Oidc(inner).refresh().await;
            }
        });
        oidc
    }

    pub fn issuer(&self) -> Option<&str> {
        self.0.settings.issuer.as_deref()
    }

    /// Whether the last attempt to read the provider's keys succeeded.
    pub fn healthy(&self) -> bool {
        self.0.healthy.load(Ordering::Relaxed)
    }

    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(url) = self.0.jwks_url.read().expect("never poisoned").clone() {
            return Ok(url);
        }
        let issuer = self.issuer().ok_or("neither an issuer nor a JWKS URL")?;
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let found: Discovery = self
            .0
            .http
            .get(&discovery)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("discovery at {discovery}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("discovery at {discovery}: {e}"))?;
        *self.0.jwks_url.write().expect("never poisoned") = Some(found.jwks_uri.clone());
        Ok(found.jwks_uri)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let url = self.jwks_url().await?;
        crate::metrics::jwks_refresh();
        let set: JwkSet = self
            .0
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("JWKS at {url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("JWKS at {url}: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            // Keys for encryption, or of kinds memberd cannot use, are skipped.
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            keys.insert(kid, key);
        }
        Ok(keys)
    }

    /// Reads the keys again; false when the provider could not be read.
    async fn refresh(&self) -> bool {
        match self.fetch().await {
            Ok(keys) => {
                *self.0.keys.write().expect("never poisoned") = Arc::new(keys);
                self.0.healthy.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "identity provider keys could not be read; keeping the keys in hand");
                self.0.healthy.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    /// A refresh for an unknown `kid`, unless one ran in the last ten seconds.
    async fn refresh_for_unknown_kid(&self) {
        let due = {
            let mut last = self.0.last_unknown_kid.lock().expect("never poisoned");
            let due = last.is_none_or(|at| at.elapsed() >= REFRESH_AT_MOST_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.refresh().await;
        }
    }

    fn key(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let keys = self.0.keys.read().expect("never poisoned").clone();
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            // A provider with a single key may leave `kid` out.
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn verify(&self, token: &str) -> Result<ExternalClaims, OidcError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.cached(&digest) {
            return Ok(claims);
        }
        let claims = self.verify_uncached(token).await.inspect_err(|e| {
            tracing::info!(reason = %e, "identity provider token refused");
        })?;
        self.remember(digest, &claims);
        Ok(claims)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<ExternalClaims> {
        let cache = self.0.verified.lock().expect("never poisoned");
        cache.get(digest).filter(|c| c.exp > now()).cloned()
    }

    fn remember(&self, digest: [u8; 32], claims: &ExternalClaims) {
        let mut cache = self.0.verified.lock().expect("never poisoned");
        if cache.len() >= VERIFIED_CACHE_ENTRIES {
            let at = now();
            cache.retain(|_, c| c.exp > at);
            if cache.len() >= VERIFIED_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(digest, claims.clone());
    }

    async fn verify_uncached(&self, token: &str) -> Result<ExternalClaims, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| OidcError::Invalid("malformed token"))?;
        if !self.0.settings.algorithms.contains(&header.alg) {
            return Err(OidcError::Invalid("algorithm not allowed"));
        }
        let key = match self.key(header.kid.as_deref()) {
            Some(key) => key,
            None => {
                self.refresh_for_unknown_kid().await;
                self.key(header.kid.as_deref())
                    .ok_or(OidcError::Invalid("unknown signing key"))?
            }
        };
        let settings = &self.0.settings;
        let mut validation = Validation::new(header.alg);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer.trim_end_matches('/'), issuer.as_str()]);
            required.push("iss");
        }
        match &settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data =
            jsonwebtoken::decode::<ExternalClaims>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => OidcError::Expired,
                    ErrorKind::InvalidIssuer => OidcError::Invalid("wrong issuer"),
                    ErrorKind::InvalidAudience => OidcError::Invalid("wrong audience"),
                    ErrorKind::ImmatureSignature => OidcError::Invalid("not valid yet (nbf)"),
                    ErrorKind::InvalidSignature => OidcError::Invalid("bad signature"),
                    ErrorKind::MissingRequiredClaim(_) => {
                        OidcError::Invalid("a required claim is missing")
                    }
                    _ => OidcError::Invalid("does not verify"),
                }
            })?;
        let claims = data.claims;
        if claims
            .iat
            .is_some_and(|iat| iat > now() + settings.leeway.as_secs() as i64)
        {
            return Err(OidcError::Invalid("issued in the future (iat)"));
        }
        if claims.sub.is_empty() {
            return Err(OidcError::Invalid("empty subject"));
        }
        Ok(claims)
    }
}

/// The `iss` a token claims, unverified: only to choose which verifier to ask.
pub fn claimed_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_and_hmac_can_never_be_allowed() {
        assert_eq!(
            OidcSettings::parse_algorithms(&[]).unwrap(),
            DEFAULT_ALGORITHMS
        );
        for bad in ["HS256", "none", "RS999"] {
            assert!(
                OidcSettings::parse_algorithms(&[bad.into()]).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            OidcSettings::parse_algorithms(&["ES256".into(), " RS256".into()]).unwrap(),
            [Algorithm::ES256, Algorithm::RS256]
        );
    }
}
