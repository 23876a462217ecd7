//! Local accounts, their second factors, login throttling, captchas, MFA
//! challenges and signing keys.
//!
//! Every "use once" (a captcha, a challenge, a recovery code, a TOTP step) and
//! every counter is one conditional statement, so two concurrent requests
//! can never both succeed where only one may.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{AnyPool, Begin, ChangeTx, Result, Store, StoreError, now, on_pool};
use crate::audit::Event;
use crate::authn::tokens::StoredSigningKey;
use crate::model::{AuthentikSub, LocalAccount, UserId, Username};

#[derive(sqlx::FromRow)]
struct AccountRow {
    user_id: Uuid,
    username: String,
    password_hash: String,
    must_change_password: bool,
    totp_secret: Option<String>,
    totp_pending_secret: Option<String>,
    authentik_sub: String,
    is_active: bool,
    created_at: OffsetDateTime,
}

impl TryFrom<AccountRow> for LocalAccount {
    type Error = StoreError;
    fn try_from(row: AccountRow) -> Result<Self> {
        let corrupt =
            |what: &str, e: crate::model::ParseError| StoreError::Corrupt(format!("{what}: {e}"));
        Ok(LocalAccount {
            user_id: UserId(row.user_id),
            username: Username::parse(row.username).map_err(|e| corrupt("username", e))?,
            subject: AuthentikSub::parse(row.authentik_sub)
                .map_err(|e| corrupt("authentik_sub", e))?,
            password_hash: row.password_hash,
            must_change_password: row.must_change_password,
            sealed_totp_secret: row.totp_secret,
            sealed_pending_totp_secret: row.totp_pending_secret,
            is_active: row.is_active,
            created_at: row.created_at,
        })
    }
}

macro_rules! account_select {
    ($where:literal) => {
        concat!(
            "SELECT a.user_id, a.username, a.password_hash, a.must_change_password, a.totp_secret, \
             a.totp_pending_secret, u.authentik_sub, u.is_active, a.created_at \
             FROM local_accounts a JOIN users u ON u.id = a.user_id WHERE ",
            $where
        )
    };
}

/// A login throttle's counters after an attempt was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Attempt {
    /// Attempts in the current window, this one included.
    pub failures: i64,
    /// Lockouts so far; the next lasts `base × 2^lockouts`.
    pub lockouts: i64,
}

/// A throttle's state as read, for deciding whether a captcha is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct ThrottleState {
    pub failures: i64,
    pub window_start: i64,
    pub lockouts: i64,
    pub locked_until: i64,
}

#[derive(sqlx::FromRow)]
struct SigningKeyRow {
    kid: String,
    algorithm: String,
    public_key: Vec<u8>,
    private_key: String,
    created_at: OffsetDateTime,
    retired_at: Option<OffsetDateTime>,
}

impl From<SigningKeyRow> for StoredSigningKey {
    fn from(row: SigningKeyRow) -> Self {
        StoredSigningKey {
            kid: row.kid,
            algorithm: row.algorithm,
            public_key: row.public_key,
            sealed_private_key: row.private_key,
            created_at: row.created_at,
            retired_at: row.retired_at,
        }
    }
}

impl Store {
    pub async fn create_local_account(
        &self,
        user_id: UserId,
        username: &Username,
        password_hash: &str,
        must_change_password: bool,
    ) -> Result<()> {
        let at = now();
        let inserted = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let inserted = sqlx::query(
                "INSERT INTO local_accounts (user_id, username, password_hash, must_change_password, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING",
            )
            .bind(user_id.0)
            .bind(username.as_str())
            .bind(password_hash)
            .bind(must_change_password)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 1 {
                let target = tx.user_target(user_id).await?;
                tx.audit(
                    None,
                    Event::new("account.create", target).after(serde_json::json!({
                        "username": username.as_str(),
                        "must_change_password": must_change_password,
                    })),
                )
                .await?;
                tx.commit().await?;
            }
            inserted
        });
        if inserted == 1 {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists("account"))
        }
    }

    pub async fn account_by_username(&self, username: &Username) -> Result<Option<LocalAccount>> {
        let row: Option<AccountRow> = on_pool!(self, |pool| sqlx::query_as(account_select!(
            "a.username = $1"
        ))
        .bind(username.as_str())
        .fetch_optional(pool)
        .await?);
        row.map(LocalAccount::try_from).transpose()
    }

    pub async fn account_by_user(&self, user_id: UserId) -> Result<Option<LocalAccount>> {
        let row: Option<AccountRow> = on_pool!(self, |pool| sqlx::query_as(account_select!(
            "a.user_id = $1"
        ))
        .bind(user_id.0)
        .fetch_optional(pool)
        .await?);
        row.map(LocalAccount::try_from).transpose()
    }

    pub async fn accounts(&self) -> Result<Vec<LocalAccount>> {
        let rows: Vec<AccountRow> = on_pool!(self, |pool| sqlx::query_as(account_select!(
            "TRUE ORDER BY a.username"
        ))
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(LocalAccount::try_from).collect()
    }

    pub async fn set_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        must_change_password: bool,
    ) -> Result<()> {
        // A password set with a forced change is an administrator's reset.
        let action = if must_change_password {
            "account.password.reset"
        } else {
            "account.password.change"
        };
        let updated = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(
                "UPDATE local_accounts SET password_hash = $2, must_change_password = $3, updated_at = $4 WHERE user_id = $1",
            )
            .bind(user_id.0)
            .bind(password_hash)
            .bind(must_change_password)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 1 {
                let target = tx.user_target(user_id).await?;
                tx.audit(None, Event::new(action, target)).await?;
                tx.commit().await?;
            }
            updated
        });
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound("account"))
        }
    }

    pub async fn set_pending_totp(&self, user_id: UserId, sealed: &str) -> Result<()> {
        let updated = on_pool!(self, |pool| {
            sqlx::query(
            "UPDATE local_accounts SET totp_pending_secret = $2, updated_at = $3 WHERE user_id = $1"
        )
        .bind(user_id.0)
        .bind(sealed)
        .bind(now())
        .execute(pool)
        .await?
        .rows_affected()
        });
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound("account"))
        }
    }

    /// Makes the pending secret the account's, with new recovery codes, and
    /// records `step` as used. False if the pending secret changed meanwhile.
    pub async fn enable_totp(
        &self,
        user_id: UserId,
        pending: &str,
        step: i64,
        recovery_digests: &[String],
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(
                "UPDATE local_accounts SET totp_secret = totp_pending_secret, totp_pending_secret = NULL, \
                 totp_last_step = $3, updated_at = $4 WHERE user_id = $1 AND totp_pending_secret = $2",
            )
            .bind(user_id.0)
            .bind(pending)
            .bind(step)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(user_id.0)
                .execute(&mut *tx)
                .await?;
            for digest in recovery_digests {
                sqlx::query("INSERT INTO recovery_codes (user_id, digest) VALUES ($1, $2)")
                    .bind(user_id.0)
                    .bind(digest)
                    .execute(&mut *tx)
                    .await?;
            }
            let target = tx.user_target(user_id).await?;
            tx.audit(None, Event::new("totp.enrol", target)).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn disable_totp(&self, user_id: UserId) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "UPDATE local_accounts SET totp_secret = NULL, totp_pending_secret = NULL, \
                 totp_last_step = NULL, updated_at = $2 WHERE user_id = $1",
            )
            .bind(user_id.0)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind(user_id.0)
                .execute(&mut *tx)
                .await?;
            let target = tx.user_target(user_id).await?;
            tx.audit(None, Event::new("totp.reset", target)).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Accepts a TOTP step if it is later than every step accepted before.
    pub async fn use_totp_step(&self, user_id: UserId, step: i64) -> Result<bool> {
        let updated = on_pool!(self, |pool| {
            sqlx::query(
            "UPDATE local_accounts SET totp_last_step = $2 \
             WHERE user_id = $1 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $2)"
        )
        .bind(user_id.0)
        .bind(step)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(updated == 1)
    }

    pub async fn use_recovery_code(&self, user_id: UserId, digest: &str) -> Result<bool> {
        let updated = on_pool!(self, |pool| {
            sqlx::query(
            "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND digest = $2 AND used_at IS NULL"
        )
        .bind(user_id.0)
        .bind(digest)
        .bind(now())
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(updated == 1)
    }

    pub async fn unused_recovery_codes(&self, user_id: UserId) -> Result<i64> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL"
        )
        .bind(user_id.0)
        .fetch_one(pool)
        .await?))
    }

    pub async fn throttle(&self, key: &str) -> Result<ThrottleState> {
        let row: Option<ThrottleState> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT failures, window_start, lockouts, locked_until FROM login_throttle WHERE key = $1"
        )
        .bind(key)
        .fetch_optional(pool)
        .await?
        });
        Ok(row.unwrap_or_default())
    }

    /// Counts an attempt against `key` before the password is checked, so
    /// that parallel guesses each take a slot; `None` while `key` is locked.
    /// Attempts older than `window` seconds are forgotten.
    pub async fn reserve_attempt(
        &self,
        key: &str,
        at: i64,
        window: i64,
    ) -> Result<Option<Attempt>> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO login_throttle (key) VALUES ($1) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .execute(pool)
            .await?;
            Ok(sqlx::query_as(
                "UPDATE login_throttle SET \
                     failures = CASE WHEN window_start <= $2 - $3 THEN 1 ELSE failures + 1 END, \
                     window_start = CASE WHEN window_start <= $2 - $3 THEN $2 ELSE window_start END \
                 WHERE key = $1 AND locked_until <= $2 RETURNING failures, lockouts",
            )
            .bind(key)
            .bind(at)
            .bind(window)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Locks `key` until `until`, if no one else has locked it since `seen` was read.
    pub async fn lock_out(&self, key: &str, seen: Attempt, until: i64) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE login_throttle SET lockouts = lockouts + 1, failures = 0, locked_until = $3 \
             WHERE key = $1 AND lockouts = $2"
        )
        .bind(key)
        .bind(seen.lockouts)
        .bind(until)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// After a success: forget the key's failures (and, for an account, its lockouts).
    pub async fn clear_attempts(&self, key: &str) -> Result<()> {
        self.update_throttle(
            "UPDATE login_throttle SET failures = 0, lockouts = 0 WHERE key = $1",
            key,
        )
        .await
    }

    /// Gives back the slot an attempt took: one that succeeded (for
    /// addresses, whose failures a success from the same address must not
    /// wipe out), or one refused without a password check.
    pub async fn refund_attempt(&self, key: &str) -> Result<()> {
        self.update_throttle(
            "UPDATE login_throttle SET failures = failures - 1 WHERE key = $1 AND failures > 0",
            key,
        )
        .await
    }

    async fn update_throttle(&self, sql: &'static str, key: &str) -> Result<()> {
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(key)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Forgets throttles with nothing recent: no failure and no lockout after `before`.
    pub async fn prune_throttles(&self, before: i64) -> Result<u64> {
        Ok(on_pool!(self, |pool| sqlx::query(
            "DELETE FROM login_throttle WHERE window_start < $1 AND locked_until < $1"
        )
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected()))
    }

    pub async fn insert_captcha(
        &self,
        id: &str,
        answer_digest: &str,
        expires_at: i64,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            // Expired captchas are removed as new ones come.
            sqlx::query("DELETE FROM captchas WHERE expires_at < $1")
                .bind(OffsetDateTime::now_utc().unix_timestamp())
                .execute(pool)
                .await?;
            sqlx::query("INSERT INTO captchas (id, answer_digest, expires_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(answer_digest)
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Removes the captcha and answers its answer's digest, if it had not expired.
    pub async fn take_captcha(&self, id: &str, at: i64) -> Result<Option<String>> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar(
            "DELETE FROM captchas WHERE id = $1 AND expires_at > $2 RETURNING answer_digest"
        )
        .bind(id)
        .bind(at)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn insert_mfa_challenge(
        &self,
        digest: &str,
        user_id: UserId,
        expires_at: i64,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("DELETE FROM mfa_challenges WHERE expires_at < $1")
                .bind(OffsetDateTime::now_utc().unix_timestamp())
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO mfa_challenges (digest, user_id, expires_at) VALUES ($1, $2, $3)",
            )
            .bind(digest)
            .bind(user_id.0)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn mfa_challenge(&self, digest: &str, at: i64) -> Result<Option<UserId>> {
        let id: Option<Uuid> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT user_id FROM mfa_challenges WHERE digest = $1 AND expires_at > $2"
        )
        .bind(digest)
        .bind(at)
        .fetch_optional(pool)
        .await?);
        Ok(id.map(UserId))
    }

    /// Consumes the challenge; false if another request consumed it first.
    pub async fn take_mfa_challenge(&self, digest: &str) -> Result<bool> {
        let deleted = on_pool!(self, |pool| sqlx::query(
            "DELETE FROM mfa_challenges WHERE digest = $1"
        )
        .bind(digest)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(deleted == 1)
    }

    pub async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, public_key, private_key, created_at, retired_at) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.public_key)
        .bind(&key.sealed_private_key)
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Adds `key` as the signing key and retires every other, at once.
    pub async fn rotate_signing_key(&self, key: &StoredSigningKey) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
                .bind(key.created_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, public_key, private_key, created_at, retired_at) \
                 VALUES ($1, $2, $3, $4, $5, NULL)",
            )
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(&key.public_key)
            .bind(&key.sealed_private_key)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
            tx.audit(
                None,
                Event::new("keys.rotate", format!("signing_key:{}", key.kid))
                    .after(serde_json::json!({ "kid": key.kid, "algorithm": key.algorithm })),
            )
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every signing key, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>> {
        let rows: Vec<SigningKeyRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT kid, algorithm, public_key, private_key, created_at, retired_at \
             FROM signing_keys ORDER BY created_at DESC, kid"
        )
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(StoredSigningKey::from).collect())
    }

    /// Removes keys retired before `before`: no token they signed is still valid.
    pub async fn delete_retired_keys(&self, before: OffsetDateTime) -> Result<u64> {
        Ok(on_pool!(self, |pool| sqlx::query(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1"
        )
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected()))
    }
}
