//! Signing in: captchas, the throttles and lockouts on usernames and
//! addresses, the password step and the second-factor step.

use super::*;

impl Auth {
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

    pub(super) async fn captcha_required(
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

    pub(super) async fn check_captcha(
        &self,
        id: Option<&str>,
        answer: Option<&str>,
    ) -> Result<(), AuthError> {
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

    pub(super) fn lockout_for(&self, lockouts: i64) -> Duration {
        let factor = 1u32
            .checked_shl(lockouts.clamp(0, 30) as u32)
            .unwrap_or(u32::MAX);
        self.settings
            .lockout
            .checked_mul(factor)
            .unwrap_or(self.settings.max_lockout)
            .min(self.settings.max_lockout)
    }

    pub(super) async fn retry_after(&self, key: &str) -> Result<Duration, AuthError> {
        let state = self.store.throttle(key).await?;
        let now = unix(OffsetDateTime::now_utc());
        Ok(Duration::from_secs((state.locked_until - now).max(1) as u64))
    }

    /// Takes an attempt for `key`; a locked key, or one whose attempts are
    /// all taken by failures and requests in flight, is refused without a
    /// password check (and what it took is given back, so refusals do not
    /// pile up).
    pub(super) async fn reserve(&self, key: &str, limit: i64) -> Result<Attempt, AuthError> {
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
    pub(super) async fn failed(
        &self,
        key: &str,
        attempt: Attempt,
        limit: i64,
    ) -> Result<(), AuthError> {
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
    pub(super) async fn uncancelled<T: Send + 'static>(
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
    pub(super) async fn login_settled(
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
    pub(super) async fn login_totp_settled(
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
    pub(super) async fn second_factor(
        &self,
        account: &LocalAccount,
        code: &str,
    ) -> Result<bool, AuthError> {
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
}

/// The throttle key of a username as typed (lower-cased, so case cannot
/// dodge the counter), whether or not such an account exists. Text that
/// cannot be a username is keyed by its digest, so the key stays short.
pub(super) fn account_key_raw(typed: &str) -> String {
    let lowered = typed.trim().to_lowercase();
    match Username::parse(lowered.clone()) {
        Ok(username) => format!("user:{username}"),
        Err(_) => format!("user#{}", &digest(&lowered)[..32]),
    }
}

/// A throttle key as an audit target: `account:<username>` or `ip:<address>`.
pub(super) fn login_target(key: &str) -> String {
    match key.strip_prefix("user") {
        Some(rest) => format!("account{rest}"),
        None => key.to_owned(),
    }
}

pub(super) fn account_key(username: &Username) -> String {
    account_key_raw(username.as_str())
}
