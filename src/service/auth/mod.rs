//! memberd's own login, one `Auth` over four parts, each in its file:
//! [`accounts`] (local accounts, passwords, who is an operator), [`login`]
//! (captchas, throttles and lockouts, the password and second-factor
//! steps), [`tokens`] (sessions, access and refresh tokens, signing keys)
//! and [`second_factor`] (TOTP enrolment and the codes of the second factor). They share the
//! store, the session store, the key ring and the settings kept here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::access::Subject;
use super::directory::Directory;
use super::sessions::SessionStore;
use super::{Authority, ServiceError};
use crate::audit::{Actor, Event};
use crate::authn::Secret;
use crate::authn::api_key::hex;
use crate::authn::captcha;
use crate::authn::hashing::{HashError, HashPool};
use crate::authn::password::{PasswordPolicy, PolicyViolation};
use crate::authn::tokens::{
    AccessClaims, KeyEncryptionKey, KeyError, KeyRing, TokenError, generate_signing_key,
    opaque_token, token_digest,
};
use crate::authn::totp::{self, Totp, TotpSecret};
use crate::model::{
    Action, AssignmentSource, AuthentikSub, DisplayName, Effect, Email, LocalAccount, Module,
    RoleAssignment, RoleName, RolePermission, Scope, ScopeId, Session, SessionId, User, UserId,
    UserUpsert, Username,
};
use crate::ratelimit::Limits;
use crate::store::{Attempt, RefreshOutcome, Store, StoreError};

mod accounts;
mod login;
mod second_factor;
mod tokens;

use login::{account_key, login_target};
use tokens::load_ring;
pub use tokens::{SignedIn, rotate_signing_key};

/// Whether a login must solve a captcha.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum CaptchaMode {
    Always,
    /// After 3 failures for the username or the address.
    #[default]
    AfterFailures,
    Never,
}

/// Failures (per username or address) after which `after_failures` asks for a captcha.
pub const CAPTCHA_AFTER_FAILURES: i64 = 3;

#[derive(Debug, Clone)]
pub struct LoginSettings {
    pub issuer: String,
    pub audience: String,
    pub captcha: CaptchaMode,
    pub captcha_ttl: Duration,
    pub max_failures: i64,
    /// Failures from one address before it is throttled.
    pub max_failures_per_ip: i64,
    /// How long failures are remembered.
    pub failure_window: Duration,
    pub lockout: Duration,
    pub max_lockout: Duration,
    pub access_ttl: Duration,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub mfa_ttl: Duration,
    pub password_policy: PasswordPolicy,
    pub totp: Totp,
    pub totp_issuer: String,
}

impl LoginSettings {
    pub fn new(issuer: String) -> Self {
        Self {
            issuer,
            audience: "memberd".into(),
            captcha: CaptchaMode::AfterFailures,
            captcha_ttl: Duration::from_secs(120),
            max_failures: 5,
            max_failures_per_ip: 20,
            failure_window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
            max_lockout: Duration::from_secs(24 * 3600),
            access_ttl: Duration::from_secs(15 * 60),
            session_idle: Duration::from_secs(7 * 24 * 3600),
            session_max: Duration::from_secs(30 * 24 * 3600),
            mfa_ttl: Duration::from_secs(300),
            password_policy: PasswordPolicy::default(),
            totp: Totp::default(),
            totp_issuer: "memberd".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong password, unknown username, disabled account: one answer for all.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("too many failed attempts; try again later")]
    Locked { retry_after: Duration },
    #[error("a captcha is required")]
    CaptchaRequired,
    #[error("the captcha answer is wrong or the captcha has expired")]
    CaptchaInvalid,
    #[error("the MFA token is invalid or has expired")]
    MfaTokenInvalid,
    #[error("the code is not valid")]
    InvalidCode,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the session has ended")]
    SessionEnded,
    #[error("the refresh token was already used; the session is revoked")]
    RefreshReused,
    #[error("{0}")]
    Policy(PolicyViolation),
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("the password must be changed first")]
    PasswordChangeRequired,
    #[error("TOTP is already enabled")]
    TotpAlreadyEnabled,
    #[error("TOTP is not enabled")]
    TotpNotEnabled,
    #[error("start TOTP enrolment first")]
    TotpNotEnrolling,
    #[error("no local account for this user")]
    NoAccount,
    #[error("too many password checks at once; retry shortly")]
    Busy,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::store::StoreError> for AuthError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Service(e.into())
    }
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::Failed(m) => Self::Service(ServiceError::Internal(m)),
        }
    }
}

impl From<KeyError> for AuthError {
    fn from(e: KeyError) -> Self {
        Self::Service(ServiceError::Internal(e.to_string()))
    }
}

/// Who is asking, as far as sessions and throttling care.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The OAuth 2.0 token response (RFC 6749 §5.1).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub password_change_required: bool,
    #[serde(skip)]
    pub session_id: SessionId,
}

#[derive(Debug)]
pub enum LoginOutcome {
    Tokens(TokenResponse),
    MfaRequired { mfa_token: Secret },
}

pub struct LoginRequest {
    pub username: String,
    pub password: Secret,
    pub captcha_id: Option<String>,
    pub captcha_answer: Option<String>,
}

/// A caller signed in with one of memberd's access tokens, whose session is active.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub claims: AccessClaims,
}

pub struct TotpEnrolment {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_png: String,
}

/// The built-in role of memberd's operators.
pub const ADMIN_ROLE: &str = "admin";
/// What the admin role holds: every action of module `memberd`.
pub const ADMIN_MODULE: &str = "memberd";

/// The new account's details, parsed.
pub struct NewAccount {
    pub username: Username,
    pub password: Secret,
    pub subject: Option<AuthentikSub>,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub must_change_password: bool,
    pub admin: bool,
}

#[derive(Clone)]
pub struct Auth {
    store: Store,
    directory: Directory,
    sessions: SessionStore,
    hasher: HashPool,
    kek: Arc<KeyEncryptionKey>,
    keys: Arc<RwLock<Arc<KeyRing>>>,
    settings: Arc<LoginSettings>,
    /// Codes tried per user, in memory or Redis.
    limits: Limits,
}

/// TOTP or recovery codes one user may try a minute (login, confirm, disable),
/// across instances when limits live in Redis: guessing stays slow even
/// where the lockout's window would allow more.
pub const TOTP_TRIES_PER_MINUTE: u32 = 10;

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn digest(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn totp_context(user_id: UserId) -> String {
    format!("memberd totp {}", user_id.0)
}

impl Auth {
    pub async fn new(
        store: Store,
        directory: Directory,
        sessions: SessionStore,
        hasher: HashPool,
        kek: KeyEncryptionKey,
        settings: LoginSettings,
    ) -> Result<Self, AuthError> {
        let kek = Arc::new(kek);
        let ring = load_ring(&store, &kek, &settings, true).await?;
        Ok(Self {
            store,
            directory,
            sessions,
            hasher,
            kek,
            keys: Arc::new(RwLock::new(Arc::new(ring))),
            settings: Arc::new(settings),
            limits: Limits::default(),
        })
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn settings(&self) -> &LoginSettings {
        &self.settings
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.keys
            .read()
            .expect("the key ring lock is never poisoned")
            .clone()
    }

    /// Reads the signing keys again (after `memberd keys rotate` in another process).
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        let ring = load_ring(&self.store, &self.kek, &self.settings, false).await?;
        *self
            .keys
            .write()
            .expect("the key ring lock is never poisoned") = Arc::new(ring);
        Ok(())
    }

    /// Deletes what no longer matters: sessions over for a day, keys retired
    /// past their grace, throttles without recent failures.
    pub async fn prune(&self) -> Result<(), AuthError> {
        let now = OffsetDateTime::now_utc();
        if let SessionStore::Database(store) = &self.sessions {
            store
                .delete_sessions_ended_before(now - Duration::from_secs(24 * 3600))
                .await?;
        }
        let grace = self.settings.access_ttl + Duration::from_secs(3600);
        self.store.delete_retired_keys(now - grace).await?;
        // Lockouts double for as long as their throttle is remembered: a day after the last one.
        let forget = (self.settings.failure_window + self.settings.max_lockout).as_secs() as i64;
        self.store.prune_throttles(unix(now) - forget).await?;
        Ok(())
    }
}
