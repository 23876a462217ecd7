//! memberd's own login: local accounts, the password and second-factor
//! steps with their throttling, tokens, sessions, and TOTP enrolment.

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

    async fn limit_totp(&self, user_id: UserId) -> Result<(), AuthError> {
        self.limits
            .check(&format!("totp:{}", user_id.0), TOTP_TRIES_PER_MINUTE)
            .await
            .map_err(|retry_after| AuthError::Locked { retry_after })
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

    // ---- accounts -------------------------------------------------------------

    pub fn check_policy(&self, password: &Secret, username: &Username) -> Result<(), AuthError> {
        self.settings
            .password_policy
            .check(password, username)
            .map_err(AuthError::Policy)
    }

    /// Creates a local account and its user (or links it to the user with
    /// `subject`); with `admin`, the user holds the built-in admin role everywhere.
    pub async fn create_account(&self, new: NewAccount) -> Result<LocalAccount, AuthError> {
        self.check_policy(&new.password, &new.username)?;
        if self
            .store
            .account_by_username(&new.username)
            .await?
            .is_some()
        {
            return Err(ServiceError::Conflict("account").into());
        }
        let hash = self.hasher.hash_password(new.password).await?;
        let subject = new.subject.unwrap_or_else(|| new.username.local_subject());
        let user = self
            .directory
            .upsert_user(&UserUpsert {
                authentik_sub: subject.clone(),
                email: new.email,
                display_name: new.display_name,
                is_active: None,
            })
            .await?;
        self.store
            .create_local_account(user.id, &new.username, &hash, new.must_change_password)
            .await?;
        if new.admin {
            self.ensure_admin_role().await?;
            let everywhere = RoleAssignment {
                role: RoleName::parse(ADMIN_ROLE).expect("a valid role name"),
                scope: Scope {
                    scope_type: "*".into(),
                    scope_id: ScopeId::parse("*").expect("a valid scope id"),
                },
            };
            self.directory
                .assign_role(
                    Authority::Full,
                    AssignmentSource::Admin,
                    &subject,
                    &everywhere,
                )
                .await?;
        }
        tracing::info!(username = %new.username, user_id = %user.id, "local account created");
        self.store
            .account_by_username(&new.username)
            .await?
            .ok_or(AuthError::NoAccount)
    }

    async fn ensure_admin_role(&self) -> Result<(), AuthError> {
        let name = RoleName::parse(ADMIN_ROLE).expect("a valid role name");
        match self
            .directory
            .create_role(
                Authority::Full,
                &name,
                "memberd operators: every action on memberd itself",
                &[],
            )
            .await
        {
            Ok(_) | Err(ServiceError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let permission = RolePermission {
            module: Module::parse(ADMIN_MODULE).expect("a valid module"),
            action: Action::parse("*").expect("a valid action"),
            effect: Effect::Allow,
            scope: None,
        };
        self.directory
            .set_role_permission(Authority::Full, &name, &permission)
            .await?;
        Ok(())
    }

    pub async fn accounts(&self) -> Result<Vec<LocalAccount>, AuthError> {
        Ok(self.store.accounts().await?)
    }

    pub async fn account(&self, username: &Username) -> Result<LocalAccount, AuthError> {
        self.store
            .account_by_username(username)
            .await?
            .ok_or(AuthError::NoAccount)
    }

    /// Sets a new password chosen by an administrator; the user must change it at next login.
    pub async fn reset_password(
        &self,
        username: &Username,
        password: Secret,
    ) -> Result<(), AuthError> {
        let account = self.account(username).await?;
        self.check_policy(&password, username)?;
        let hash = self.hasher.hash_password(password).await?;
        self.store
            .set_password(account.user_id, &hash, true)
            .await?;
        self.store.clear_attempts(&account_key(username)).await?;
        // Whoever held the old password is signed out.
        self.sessions.revoke_all(account.user_id).await?;
        tracing::info!(%username, "password reset by an administrator");
        Ok(())
    }

    pub async fn change_password(
        &self,
        principal: &Principal,
        current: Secret,
        new: Secret,
    ) -> Result<(), AuthError> {
        let account = self.account_of(principal.user_id).await?;
        self.check_policy(&new, &account.username)?;
        self.confirm_password(&account, current).await?;
        let hash = self.hasher.hash_password(new).await?;
        self.store
            .set_password(account.user_id, &hash, false)
            .await?;
        // Every other session ends: one of them may be why the password changed.
        let now = OffsetDateTime::now_utc();
        for session in self.sessions.list(account.user_id, now).await? {
            if session.id != principal.session_id {
                self.sessions.revoke(session.id, None).await?;
            }
        }
        tracing::info!(username = %account.username, "password changed");
        Ok(())
    }

    /// A signed-in user proves the password again (to change it, or their
    /// second factor). Throttled and counted like a login, so a stolen
    /// session is no password oracle: wrong answers lock the account, are
    /// audited, and are refused before any hash runs once locked.
    async fn confirm_password(
        &self,
        account: &LocalAccount,
        password: Secret,
    ) -> Result<(), AuthError> {
        let key = account_key(&account.username);
        let attempt = self.reserve(&key, self.settings.max_failures).await?;
        if self
            .hasher
            .verify_password(password, Some(account.password_hash.clone()))
            .await?
        {
            self.store.refund_attempt(&key).await?;
            return Ok(());
        }
        self.store
            .record_event(
                Event::new("login.failure", login_target(&key))
                    .after(serde_json::json!({"factor": "password", "step": "reauthentication"})),
            )
            .await?;
        self.failed(&key, attempt, self.settings.max_failures)
            .await?;
        Err(AuthError::WrongPassword)
    }

    /// The upsert other systems make by subject: the `local:` namespace is
    /// memberd's own accounts', changed through the accounts API only.
    pub async fn upsert_external_user(&self, upsert: &UserUpsert) -> Result<User, ServiceError> {
        if upsert.authentik_sub.is_reserved() {
            return Err(ServiceError::Forbidden(format!(
                "{} is a local account's subject: manage it under /admin/accounts",
                upsert.authentik_sub
            )));
        }
        self.upsert_user(upsert).await
    }

    /// Creates or updates the user; one left disabled is signed out
    /// everywhere. Every path that can disable a user goes through here.
    pub async fn upsert_user(&self, upsert: &UserUpsert) -> Result<User, ServiceError> {
        let user = self.directory.upsert_user(upsert).await?;
        if !user.is_active {
            self.sessions.revoke_all(user.id).await?;
        }
        Ok(user)
    }

    /// Enables or disables the user (an account's, or any) by subject.
    pub async fn set_user_active(
        &self,
        authority: Authority,
        sub: AuthentikSub,
        active: bool,
    ) -> Result<User, ServiceError> {
        // Disabling or enabling someone never creates them.
        if self.store.user_by_sub(&sub).await?.is_none() {
            return Err(ServiceError::NotFound("user"));
        }
        self.guard_operator(authority, &sub).await?;
        self.upsert_user(&UserUpsert {
            authentik_sub: sub,
            email: None,
            display_name: None,
            is_active: Some(active),
        })
        .await
    }

    /// The user an identity provider's verified token names, created or
    /// refreshed from its claims (an email or name memberd would refuse is
    /// left out, not fatal).
    ///
    /// A provider identity resolves through `(issuer, subject)` first. An
    /// unlinked one may land on the user whose subject equals its own only
    /// when that user is not memberd's (a `local:` subject, a local
    /// account) and is linked to no other issuer: a provider never speaks
    /// for an operator, nor for another provider's user.
    #[tracing::instrument(skip_all)]
    pub async fn provider_user(
        &self,
        issuer: &str,
        claims: crate::service::oidc::ExternalClaims,
    ) -> Result<User, AuthError> {
        let refused = || AuthError::InvalidToken;
        let linked = match self.store.identity_user(issuer, &claims.sub).await? {
            Some(id) => self.store.user_by_id(id).await?,
            None => None,
        };
        let sub = match &linked {
            Some(user) => user.authentik_sub.clone(),
            None => {
                let sub = AuthentikSub::parse(claims.sub.clone()).map_err(|_| refused())?;
                if sub.is_reserved() {
                    return Err(refused());
                }
                if let Some(existing) = self.store.user_by_sub(&sub).await? {
                    let elsewhere = self
                        .store
                        .identities_of(existing.id)
                        .await?
                        .iter()
                        .any(|i| i.issuer != issuer);
                    if elsewhere || self.store.account_by_user(existing.id).await?.is_some() {
                        return Err(refused());
                    }
                }
                sub
            }
        };
        let upsert = UserUpsert {
            authentik_sub: sub,
            email: claims.email.and_then(|e| Email::parse(e).ok()),
            display_name: claims
                .name
                .or(claims.preferred_username)
                .and_then(|n| DisplayName::parse(n).ok()),
            is_active: None,
        };
        let user = self.directory.upsert_user(&upsert).await?;
        if linked.is_none() {
            match self.store.link_identity(issuer, &claims.sub, user.id).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(user)
    }

    /// The operators (users behind local accounts, or holding memberd's own
    /// authority) are changed only by a holder of that authority: a client
    /// allowed to disable users must not be able to lock the operators out.
    pub async fn guard_operator(
        &self,
        authority: Authority,
        sub: &AuthentikSub,
    ) -> Result<(), ServiceError> {
        if authority == Authority::Full {
            return Ok(());
        }
        let Some(user) = self.store.user_by_sub(sub).await? else {
            return Ok(());
        };
        let operator = self.store.account_by_user(user.id).await?.is_some()
            || self.directory.engine().inspect_user_reaches(user.id);
        if operator {
            authority.require_full(|| format!("user {sub} is an operator of memberd"))?;
        }
        Ok(())
    }

    /// Disables the user behind the account and ends every session of theirs.
    pub async fn set_active(&self, username: &Username, active: bool) -> Result<(), AuthError> {
        let account = self.account(username).await?;
        self.set_user_active(Authority::Full, account.subject, active)
            .await?;
        Ok(())
    }

    async fn account_of(&self, user_id: UserId) -> Result<LocalAccount, AuthError> {
        self.store
            .account_by_user(user_id)
            .await?
            .ok_or(AuthError::NoAccount)
    }

    // ---- login ----------------------------------------------------------------

    pub async fn new_captcha(&self) -> Result<(String, String), AuthError> {
        let generated = tokio::task::spawn_blocking(captcha::generate)
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let id = uuid::Uuid::new_v4().to_string();
        let expires = unix(OffsetDateTime::now_utc()) + self.settings.captcha_ttl.as_secs() as i64;
        self.store
            .insert_captcha(&id, &digest(&generated.answer), expires)
            .await?;
        Ok((id, crate::png::data_url(&generated.png)))
    }

    async fn captcha_required(
        &self,
        username_key: &str,
        ip_key: Option<&str>,
    ) -> Result<bool, AuthError> {
        Ok(match self.settings.captcha {
            CaptchaMode::Always => true,
            CaptchaMode::Never => false,
            CaptchaMode::AfterFailures => {
                let now = unix(OffsetDateTime::now_utc());
                let window = self.settings.failure_window.as_secs() as i64;
                let recent = |s: crate::store::ThrottleState| {
                    s.lockouts > 0
                        || (s.window_start > now - window && s.failures >= CAPTCHA_AFTER_FAILURES)
                };
                recent(self.store.throttle(username_key).await?)
                    || match ip_key {
                        Some(key) => recent(self.store.throttle(key).await?),
                        None => false,
                    }
            }
        })
    }

    async fn check_captcha(&self, id: Option<&str>, answer: Option<&str>) -> Result<(), AuthError> {
        let (Some(id), Some(answer)) = (id, answer) else {
            return Err(AuthError::CaptchaRequired);
        };
        let stored = self
            .store
            .take_captcha(id, unix(OffsetDateTime::now_utc()))
            .await?
            .ok_or(AuthError::CaptchaInvalid)?;
        let given = digest(&captcha::normalise_answer(answer));
        if bool::from(given.as_bytes().ct_eq(stored.as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::CaptchaInvalid)
        }
    }

    fn lockout_for(&self, lockouts: i64) -> Duration {
        let factor = 1u32
            .checked_shl(lockouts.clamp(0, 30) as u32)
            .unwrap_or(u32::MAX);
        self.settings
            .lockout
            .checked_mul(factor)
            .unwrap_or(self.settings.max_lockout)
            .min(self.settings.max_lockout)
    }

    async fn retry_after(&self, key: &str) -> Result<Duration, AuthError> {
        let state = self.store.throttle(key).await?;
        let now = unix(OffsetDateTime::now_utc());
        Ok(Duration::from_secs((state.locked_until - now).max(1) as u64))
    }

    /// Takes an attempt for `key`; a locked key, or one whose attempts are
    /// all taken by failures and requests in flight, is refused without a
    /// password check (and what it took is given back, so refusals do not
    /// pile up).
    async fn reserve(&self, key: &str, limit: i64) -> Result<Attempt, AuthError> {
        let now = unix(OffsetDateTime::now_utc());
        let window = self.settings.failure_window.as_secs() as i64;
        match self.store.reserve_attempt(key, now, window).await? {
            Some(attempt) if attempt.failures <= limit => return Ok(attempt),
            Some(_) => self.store.refund_attempt(key).await?,
            None => {}
        }
        Err(AuthError::Locked {
            retry_after: self.retry_after(key).await?,
        })
    }

    /// A failed attempt that took the last slot locks the key.
    async fn failed(&self, key: &str, attempt: Attempt, limit: i64) -> Result<(), AuthError> {
        if attempt.failures >= limit {
            let until = unix(OffsetDateTime::now_utc())
                + self.lockout_for(attempt.lockouts).as_secs() as i64;
            self.store.lock_out(key, attempt, until).await?;
            tracing::warn!(key, lockouts = attempt.lockouts + 1, "login locked out");
            crate::metrics::login(crate::metrics::Login::Lockout);
            self.store
                .record_event(Event::new("login.lockout", login_target(key)).after(
                    serde_json::json!({"lockouts": attempt.lockouts + 1, "locked_until": until}),
                ))
                .await?;
        }
        Ok(())
    }

    /// Runs `work` to its end in a task of its own: a client that hangs up
    /// must not cancel a login between taking an attempt and settling it.
    async fn uncancelled<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, AuthError>> + Send + 'static,
    ) -> Result<T, AuthError> {
        // The task carries the request's audit origin with it.
        tokio::spawn(crate::audit::scope(crate::audit::current(), work))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
    }

    pub async fn login(
        &self,
        request: LoginRequest,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        let (this, client) = (self.clone(), client.clone());
        self.uncancelled(async move { this.login_settled(request, &client).await })
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn login_settled(
        &self,
        request: LoginRequest,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        // An unparseable username is treated as unknown, not told apart.
        let username = Username::parse(request.username.clone()).ok();
        let user_key = account_key_raw(&request.username);
        // The address was rendered from an IpAddr; text that is none counts as itself.
        let ip_key = client.ip.as_deref().map(|ip| {
            let counted = ip
                .parse()
                .map_or_else(|_| ip.to_owned(), crate::ratelimit::address_key);
            format!("ip:{counted}")
        });

        if self.captcha_required(&user_key, ip_key.as_deref()).await? {
            self.check_captcha(
                request.captcha_id.as_deref(),
                request.captcha_answer.as_deref(),
            )
            .await?;
        }
        let ip_attempt = match &ip_key {
            Some(key) => Some((
                key.as_str(),
                self.reserve(key, self.settings.max_failures_per_ip).await?,
            )),
            None => None,
        };
        let user_attempt = match self.reserve(&user_key, self.settings.max_failures).await {
            Ok(attempt) => attempt,
            Err(locked) => {
                if let Some((key, _)) = ip_attempt {
                    self.store.refund_attempt(key).await?;
                }
                return Err(locked);
            }
        };

        let account = match &username {
            Some(u) => self.store.account_by_username(u).await?,
            None => None,
        };
        let stored = account.as_ref().map(|a| a.password_hash.clone());
        let matched = self
            .hasher
            .verify_password(request.password, stored)
            .await?;
        let account = account.filter(|a| matched && a.is_active);
        let Some(account) = account else {
            crate::metrics::login(crate::metrics::Login::Failure);
            self.store
                .record_event(Event::new("login.failure", login_target(&user_key)))
                .await?;
            self.failed(&user_key, user_attempt, self.settings.max_failures)
                .await?;
            if let Some((key, attempt)) = ip_attempt {
                self.failed(key, attempt, self.settings.max_failures_per_ip)
                    .await?;
            }
            return Err(AuthError::InvalidCredentials);
        };
        if let Some((key, _)) = ip_attempt {
            self.store.refund_attempt(key).await?;
        }
        if account.totp_enabled() {
            // The password was right: this attempt is no failure. The TOTP
            // step counts its own wrong codes toward the same lockout.
            self.store.refund_attempt(&user_key).await?;
            let mfa_token = opaque_token("mfa_");
            let expires = unix(OffsetDateTime::now_utc()) + self.settings.mfa_ttl.as_secs() as i64;
            self.store
                .insert_mfa_challenge(&token_digest(&mfa_token), account.user_id, expires)
                .await?;
            return Ok(LoginOutcome::MfaRequired { mfa_token });
        }
        self.store.clear_attempts(&user_key).await?;
        Ok(LoginOutcome::Tokens(
            self.start_session(&account, client).await?,
        ))
    }

    pub async fn login_totp(
        &self,
        mfa_token: Secret,
        code: &str,
        client: &ClientInfo,
    ) -> Result<TokenResponse, AuthError> {
        let (this, code, client) = (self.clone(), code.to_owned(), client.clone());
        self.uncancelled(async move { this.login_totp_settled(mfa_token, &code, &client).await })
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn login_totp_settled(
        &self,
        mfa_token: Secret,
        code: &str,
        client: &ClientInfo,
    ) -> Result<TokenResponse, AuthError> {
        let challenge = token_digest(&mfa_token);
        let user_id = self
            .store
            .mfa_challenge(&challenge, unix(OffsetDateTime::now_utc()))
            .await?
            .ok_or(AuthError::MfaTokenInvalid)?;
        let account = self.account_of(user_id).await?;
        // Disabled between the password and the code: the challenge is dead.
        if !account.is_active {
            return Err(AuthError::MfaTokenInvalid);
        }
        let key = account_key(&account.username);
        let attempt = self.reserve(&key, self.settings.max_failures).await?;
        if !self.second_factor(&account, code).await? {
            crate::metrics::login(crate::metrics::Login::Failure);
            self.store
                .record_event(
                    Event::new("login.failure", login_target(&key))
                        .after(serde_json::json!({"factor": "totp"})),
                )
                .await?;
            self.failed(&key, attempt, self.settings.max_failures)
                .await?;
            return Err(AuthError::InvalidCode);
        }
        if !self.store.take_mfa_challenge(&challenge).await? {
            return Err(AuthError::MfaTokenInvalid);
        }
        self.store.clear_attempts(&key).await?;
        self.start_session(&account, client).await
    }

    /// A TOTP code (each time step good once) or an unused recovery code.
    async fn second_factor(&self, account: &LocalAccount, code: &str) -> Result<bool, AuthError> {
        self.limit_totp(account.user_id).await?;
        if totp::is_recovery_code(code) {
            let keyed = totp::recovery_code_digest(&self.kek, account.user_id, code);
            let used = self
                .store
                .use_recovery_code(account.user_id, &keyed)
                .await?
                || self
                    .store
                    .use_recovery_code(account.user_id, &totp::legacy_recovery_code_digest(code))
                    .await?;
            if used {
                tracing::info!(username = %account.username, "recovery code used");
            }
            return Ok(used);
        }
        let Some(sealed) = &account.sealed_totp_secret else {
            return Ok(false);
        };
        let secret = self.open_totp(account.user_id, sealed)?;
        let now = unix(OffsetDateTime::now_utc()).max(0) as u64;
        match self.settings.totp.verify(&secret, code, now) {
            Some(step) => Ok(self
                .store
                .use_totp_step(account.user_id, step as i64)
                .await?),
            None => Ok(false),
        }
    }

    fn open_totp(&self, user_id: UserId, sealed: &str) -> Result<TotpSecret, AuthError> {
        Ok(TotpSecret::from_bytes(
            self.kek.open(sealed, &totp_context(user_id))?,
        ))
    }

    fn roles_of(&self, subject: &AuthentikSub) -> Vec<String> {
        let mut roles: Vec<String> = self
            .directory
            .engine()
            .snapshot(&Subject::Sub(subject.clone()))
            .map(|s| s.roles.iter().map(|r| r.role.to_string()).collect())
            .unwrap_or_default();
        roles.sort();
        roles.dedup();
        roles
    }

    fn access_token(
        &self,
        account: &LocalAccount,
        session: SessionId,
    ) -> Result<(String, AccessClaims), AuthError> {
        let now = unix(OffsetDateTime::now_utc());
        let ring = self.key_ring();
        let claims = AccessClaims {
            iss: ring.issuer().to_owned(),
            sub: account.subject.as_str().to_owned(),
            aud: ring.audience().to_owned(),
            exp: now + self.settings.access_ttl.as_secs() as i64,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: crate::authn::tokens::FIRST_PARTY_CLIENT.to_owned(),
            sid: session.to_string(),
            roles: self.roles_of(&account.subject),
            preferred_username: Some(account.username.to_string()),
            pwd_change: account.must_change_password,
        };
        Ok((ring.sign(&claims)?, claims))
    }

    fn token_response(
        &self,
        account: &LocalAccount,
        session: SessionId,
        refresh: Secret,
    ) -> Result<TokenResponse, AuthError> {
        let (access_token, _) = self.access_token(account, session)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.settings.access_ttl.as_secs(),
            refresh_token: refresh.expose().to_owned(),
            password_change_required: account.must_change_password,
            session_id: session,
        })
    }

    async fn start_session(
        &self,
        account: &LocalAccount,
        client: &ClientInfo,
    ) -> Result<TokenResponse, AuthError> {
        let now = crate::store::now();
        let absolute = now + self.settings.session_max;
        let session = Session {
            id: SessionId::new(),
            user_id: account.user_id,
            created_at: now,
            last_used_at: now,
            expires_at: (now + self.settings.session_idle).min(absolute),
            absolute_expires_at: absolute,
            ip: client.ip.clone(),
            user_agent: client
                .user_agent
                .as_ref()
                .map(|ua| ua.chars().take(256).collect()),
            revoked_at: None,
        };
        let refresh = opaque_token("mrt_");
        self.sessions
            .create(&session, &token_digest(&refresh))
            .await?;
        tracing::info!(username = %account.username, session = %session.id, "signed in");
        crate::audit::act_as(Actor::user(account.subject.as_str()));
        crate::metrics::login(crate::metrics::Login::Success);
        self.store
            .record_event(
                Event::new("login.success", format!("user:{}", account.subject))
                    .after(serde_json::json!({"session": session.id.0, "username": account.username.as_str()})),
            )
            .await?;
        // The token names the user's roles from this instance's index, which
        // follows changes made elsewhere within a second: an operator created
        // by the CLI a moment ago signed in with no roles. One read of the
        // revision tells whether the index is behind.
        if self.store.current_revision().await? > self.directory.engine().revision() {
            self.directory.catch_up().await?;
        }
        self.token_response(account, session.id, refresh)
    }

    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: Secret) -> Result<TokenResponse, AuthError> {
        let now = crate::store::now();
        let new = opaque_token("mrt_");
        let outcome = self
            .sessions
            .refresh(
                &token_digest(&refresh_token),
                &token_digest(&new),
                now,
                now + self.settings.session_idle,
            )
            .await?;
        match outcome {
            RefreshOutcome::Rotated(session) => {
                let account = self.account_of(session.user_id).await?;
                if !account.is_active {
                    self.sessions.revoke(session.id, None).await?;
                    return Err(AuthError::SessionEnded);
                }
                self.token_response(&account, session.id, new)
            }
            RefreshOutcome::Reused(session) => {
                // The database store revoked it in the same transaction; this
                // covers the Redis store, and is harmless twice.
                self.sessions.revoke(session, None).await?;
                tracing::warn!(%session, "refresh token reused: session revoked");
                Err(AuthError::RefreshReused)
            }
            RefreshOutcome::Invalid => Err(AuthError::InvalidToken),
        }
    }

    /// Verifies one of memberd's access tokens and that its session is still active.
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal, AuthError> {
        let ring = self.key_ring();
        let claims = match ring.verify(access_token) {
            Ok(claims) => claims,
            Err(TokenError::Expired) => return Err(AuthError::TokenExpired),
            Err(TokenError::Invalid) => return Err(AuthError::InvalidToken),
        };
        let session_id = claims
            .sid
            .parse()
            .map(SessionId)
            .map_err(|_| AuthError::InvalidToken)?;
        let session = self
            .sessions
            .active(session_id, OffsetDateTime::now_utc())
            .await?
            .ok_or(AuthError::SessionEnded)?;
        Ok(Principal {
            user_id: session.user_id,
            session_id,
            claims,
        })
    }

    pub async fn logout(&self, principal: &Principal) -> Result<(), AuthError> {
        self.sessions.revoke(principal.session_id, None).await?;
        Ok(())
    }

    // ---- TOTP -----------------------------------------------------------------

    pub async fn totp_enroll(&self, principal: &Principal) -> Result<TotpEnrolment, AuthError> {
        let account = self.account_of(principal.user_id).await?;
        if account.totp_enabled() {
            return Err(AuthError::TotpAlreadyEnabled);
        }
        let secret = TotpSecret::generate();
        let sealed = self
            .kek
            .seal(secret.as_bytes(), &totp_context(account.user_id));
        self.store
            .set_pending_totp(account.user_id, &sealed)
            .await?;
        let uri = totp::otpauth_uri(
            &self.settings.totp_issuer,
            account.username.as_str(),
            &secret,
            &self.settings.totp,
        );
        let qr_png = tokio::task::spawn_blocking({
            let uri = uri.clone();
            move || totp::qr_png_data_url(&uri)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(ServiceError::Internal)?;
        Ok(TotpEnrolment {
            secret: secret.to_base32(),
            otpauth_uri: uri,
            qr_png,
        })
    }

    /// Turns TOTP on: it takes the password and a code from the new secret.
    pub async fn totp_confirm(
        &self,
        principal: &Principal,
        password: Secret,
        code: &str,
    ) -> Result<Vec<String>, AuthError> {
        let account = self.account_of(principal.user_id).await?;
        if account.totp_enabled() {
            return Err(AuthError::TotpAlreadyEnabled);
        }
        self.confirm_password(&account, password).await?;
        let pending = account
            .sealed_pending_totp_secret
            .as_deref()
            .ok_or(AuthError::TotpNotEnrolling)?;
        let secret = self.open_totp(account.user_id, pending)?;
        self.limit_totp(account.user_id).await?;
        let now = unix(OffsetDateTime::now_utc()).max(0) as u64;
        let step = self
            .settings
            .totp
            .verify(&secret, code, now)
            .ok_or(AuthError::InvalidCode)?;
        let codes = totp::generate_recovery_codes();
        let digests: Vec<String> = codes
            .iter()
            .map(|c| totp::recovery_code_digest(&self.kek, account.user_id, c))
            .collect();
        if !self
            .store
            .enable_totp(account.user_id, pending, step as i64, &digests)
            .await?
        {
            return Err(AuthError::TotpNotEnrolling);
        }
        tracing::info!(username = %account.username, "TOTP enabled");
        Ok(codes)
    }

    /// The owner turns TOTP off: it takes the password and a current code.
    pub async fn totp_disable(
        &self,
        principal: &Principal,
        password: Secret,
        code: &str,
    ) -> Result<(), AuthError> {
        let account = self.account_of(principal.user_id).await?;
        if !account.totp_enabled() {
            return Err(AuthError::TotpNotEnabled);
        }
        self.confirm_password(&account, password).await?;
        if !self.second_factor(&account, code).await? {
            return Err(AuthError::InvalidCode);
        }
        self.store.disable_totp(account.user_id).await?;
        tracing::info!(username = %account.username, "TOTP disabled by its owner");
        Ok(())
    }

    /// An administrator removes a user's TOTP (a lost device).
    pub async fn totp_reset(&self, username: &Username) -> Result<(), AuthError> {
        let account = self.account(username).await?;
        self.store.disable_totp(account.user_id).await?;
        tracing::warn!(%username, "TOTP reset by an administrator");
        Ok(())
    }

    pub async fn recovery_codes_left(&self, user_id: UserId) -> Result<i64, AuthError> {
        Ok(self.store.unused_recovery_codes(user_id).await?)
    }

    /// Who a session belongs to, for `/me`: the user, and their local
    /// account with its second factor when they have one.
    pub async fn signed_in(&self, principal: &Principal) -> Result<SignedIn, AuthError> {
        let user = self
            .store
            .user_by_id(principal.user_id)
            .await?
            .ok_or(AuthError::SessionEnded)?;
        let account = match self.store.account_by_user(principal.user_id).await? {
            Some(account) => {
                let codes_left = if account.totp_enabled() {
                    Some(self.recovery_codes_left(account.user_id).await?)
                } else {
                    None
                };
                Some((account, codes_left))
            }
            None => None,
        };
        Ok(SignedIn { user, account })
    }
}

/// The user behind a session and their local account (with the recovery
/// codes left when TOTP is on).
pub struct SignedIn {
    pub user: crate::model::User,
    pub account: Option<(LocalAccount, Option<i64>)>,
}

/// The throttle key of a username as typed (lower-cased, so case cannot
/// dodge the counter), whether or not such an account exists. Text that
/// cannot be a username is keyed by its digest, so the key stays short.
fn account_key_raw(typed: &str) -> String {
    let lowered = typed.trim().to_lowercase();
    match Username::parse(lowered.clone()) {
        Ok(username) => format!("user:{username}"),
        Err(_) => format!("user#{}", &digest(&lowered)[..32]),
    }
}

/// A throttle key as an audit target: `account:<username>` or `ip:<address>`.
fn login_target(key: &str) -> String {
    match key.strip_prefix("user") {
        Some(rest) => format!("account{rest}"),
        None => key.to_owned(),
    }
}

fn account_key(username: &Username) -> String {
    account_key_raw(username.as_str())
}

/// The published keys: the newest unretired signs; retired ones stay until
/// every token they signed has expired. With `create`, a store without a
/// signing key gets one.
async fn load_ring(
    store: &Store,
    kek: &KeyEncryptionKey,
    settings: &LoginSettings,
    create: bool,
) -> Result<KeyRing, AuthError> {
    let mut keys = store.signing_keys().await?;
    if create && !keys.iter().any(|k| k.retired_at.is_none()) {
        let key = generate_signing_key(kek, crate::store::now());
        store.insert_signing_key(&key).await?;
        tracing::info!(kid = %key.kid, "signing key generated");
        keys = store.signing_keys().await?;
    }
    let now = OffsetDateTime::now_utc();
    let grace = settings.access_ttl + Duration::from_secs(60);
    keys.retain(|k| k.retired_at.is_none_or(|at| at + grace > now));
    Ok(KeyRing::new(
        settings.issuer.clone(),
        settings.audience.clone(),
        &keys,
        kek,
    )?)
}

/// `memberd keys rotate`: a new signing key; the old one stays published
/// until the tokens it signed have expired.
pub async fn rotate_signing_key(
    store: &Store,
    kek: &KeyEncryptionKey,
) -> Result<String, AuthError> {
    let key = generate_signing_key(kek, crate::store::now());
    store.rotate_signing_key(&key).await?;
    Ok(key.kid)
}
