//! Sessions and tokens: the access tokens a session is given, refreshing
//! and ending it, verifying a token, and the signing keys.

use super::*;

impl Auth {
    pub(super) fn roles_of(&self, subject: &AuthentikSub) -> Vec<String> {
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

    pub(super) fn access_token(
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

    pub(super) fn token_response(
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

    pub(super) async fn start_session(
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

/// The published keys: the newest unretired signs; retired ones stay until
/// every token they signed has expired. With `create`, a store without a
/// signing key gets one.
pub(super) async fn load_ring(
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

/// The user behind a session and their local account (with the recovery
/// codes left when TOTP is on).
pub struct SignedIn {
    pub user: crate::model::User,
    pub account: Option<(LocalAccount, Option<i64>)>,
}
