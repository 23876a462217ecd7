//! The second factor: TOTP enrolment, confirmation, removal, and the
//! per-user limit on codes tried.

use super::*;

impl Auth {
    pub(super) async fn limit_totp(&self, user_id: UserId) -> Result<(), AuthError> {
        self.limits
            .check(&format!("totp:{}", user_id.0), TOTP_TRIES_PER_MINUTE)
            .await
            .map_err(|retry_after| AuthError::Locked { retry_after })
    }

    pub(super) fn open_totp(&self, user_id: UserId, sealed: &str) -> Result<TotpSecret, AuthError> {
        Ok(TotpSecret::from_bytes(
            self.kek.open(sealed, &totp_context(user_id))?,
        ))
    }

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
}
