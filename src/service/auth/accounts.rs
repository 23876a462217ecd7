//! Local accounts: creating them, their passwords and state, the users
//! they and identity providers bring, and who counts as an operator.

use super::*;

impl Auth {
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

    pub(super) async fn ensure_admin_role(&self) -> Result<(), AuthError> {
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
    pub(super) async fn confirm_password(
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

    pub(super) async fn account_of(&self, user_id: UserId) -> Result<LocalAccount, AuthError> {
        self.store
            .account_by_user(user_id)
            .await?
            .ok_or(AuthError::NoAccount)
    }
}
