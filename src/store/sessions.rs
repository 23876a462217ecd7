//! Sessions and their refresh tokens, in the database (the default session
//! store; Redis is the other, in `service::sessions`).

use time::OffsetDateTime;
use uuid::Uuid;

use super::{AnyPool, Begin, ChangeTx, Result, Store, now, on_pool};
use crate::audit::Event;
use crate::model::{Session, SessionId, UserId};

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    created_at: OffsetDateTime,
    last_used_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    absolute_expires_at: OffsetDateTime,
    ip: Option<String>,
    user_agent: Option<String>,
    revoked_at: Option<OffsetDateTime>,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            id: SessionId(row.id),
            user_id: UserId(row.user_id),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            absolute_expires_at: row.absolute_expires_at,
            ip: row.ip,
            user_agent: row.user_agent,
            revoked_at: row.revoked_at,
        }
    }
}

macro_rules! session_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, created_at, last_used_at, expires_at, absolute_expires_at, ip, user_agent, revoked_at \
             FROM sessions WHERE ",
            $rest
        )
    };
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was current: it is spent and the new one stands in its place.
    Rotated(Session),
    /// The token had been spent before: someone holds a copy. The session is revoked.
    Reused(SessionId),
    /// Unknown token, or its session is over.
    Invalid,
}

impl Store {
    pub async fn insert_session(&self, session: &Session, refresh_digest: &str) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, absolute_expires_at, ip, user_agent) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(session.id.0)
            .bind(session.user_id.0)
            .bind(session.created_at)
            .bind(session.last_used_at)
            .bind(session.expires_at)
            .bind(session.absolute_expires_at)
            .bind(&session.ip)
            .bind(&session.user_agent)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (digest, session_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(refresh_digest)
            .bind(session.id.0)
            .bind(session.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn session(&self, id: SessionId) -> Result<Option<Session>> {
        let row: Option<SessionRow> =
            on_pool!(self, |pool| sqlx::query_as(session_select!("id = $1"))
                .bind(id.0)
                .fetch_optional(pool)
                .await?);
        Ok(row.map(Session::from))
    }

    /// Sessions of the user that are still active at `at`, newest first.
    pub async fn sessions_of(&self, user_id: UserId, at: OffsetDateTime) -> Result<Vec<Session>> {
        let rows: Vec<SessionRow> = on_pool!(self, |pool| sqlx::query_as(session_select!(
            "user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC"
        ))
        .bind(user_id.0)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(Session::from)
            .filter(|s| s.is_active(at))
            .collect())
    }

    /// Spends `old_digest` and, if it was current, records `new_digest` and
    /// slides the session's expiry to `idle_until` (capped by its absolute end).
    pub async fn refresh_session(
        &self,
        old_digest: &str,
        new_digest: &str,
        at: OffsetDateTime,
        idle_until: OffsetDateTime,
    ) -> Result<RefreshOutcome> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let token: Option<(Uuid, Option<OffsetDateTime>)> =
                sqlx::query_as("SELECT session_id, used_at FROM refresh_tokens WHERE digest = $1")
                    .bind(old_digest)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((session_id, used_at)) = token else {
                tx.rollback().await?;
                return Ok(RefreshOutcome::Invalid);
            };
            let session: Option<SessionRow> = sqlx::query_as(session_select!("id = $1"))
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(session) = session.map(Session::from).filter(|s| s.is_active(at)) else {
                tx.rollback().await?;
                return Ok(RefreshOutcome::Invalid);
            };
            // Claimed conditionally: of two requests racing with one token,
            // the second finds it spent, as if it had come later.
            let claimed = used_at.is_none()
                && sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $2 WHERE digest = $1 AND used_at IS NULL",
                )
                .bind(old_digest)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
            if !claimed {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(session_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(RefreshOutcome::Reused(SessionId(session_id)));
            }
            let expires_at = idle_until.min(session.absolute_expires_at);
            sqlx::query(
                "INSERT INTO refresh_tokens (digest, session_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(new_digest)
            .bind(session_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE sessions SET last_used_at = $2, expires_at = $3 WHERE id = $1")
                .bind(session_id)
                .bind(at)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(RefreshOutcome::Rotated(Session {
                last_used_at: at,
                expires_at,
                ..session
            }))
        })
    }

    /// Revokes the session if it belongs to `owner` (any owner when `None`).
    pub async fn revoke_session(&self, id: SessionId, owner: Option<UserId>) -> Result<bool> {
        let revoked = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let holder: Option<Uuid> = sqlx::query_scalar(
                "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
                 AND ($3 IS NULL OR user_id = $3) RETURNING user_id",
            )
            .bind(id.0)
            .bind(now())
            .bind(owner.map(|o| o.0))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(holder) = holder {
                let target = tx.user_target(UserId(holder)).await?;
                tx.audit(None, session_revoked(target, id)).await?;
                tx.commit().await?;
            }
            holder.is_some()
        });
        Ok(revoked)
    }

    pub async fn revoke_sessions_of(&self, user_id: UserId) -> Result<u64> {
        Ok(on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let revoked = sqlx::query(
                "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind(user_id.0)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if revoked > 0 {
                let target = tx.user_target(user_id).await?;
                tx.audit(None, sessions_revoked(target, revoked)).await?;
                tx.commit().await?;
            }
            revoked
        }))
    }

    /// Records revocations made in another session store (Redis).
    pub async fn record_session_revocation(
        &self,
        user_id: UserId,
        session: Option<SessionId>,
        count: u64,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let target = tx.user_target(user_id).await?;
            let event = match session {
                Some(id) => session_revoked(target, id),
                None => sessions_revoked(target, count),
            };
            tx.audit(None, event).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes sessions that ended before `before`, with their refresh tokens.
    pub async fn delete_sessions_ended_before(&self, before: OffsetDateTime) -> Result<u64> {
        Ok(on_pool!(self, |pool| sqlx::query(
            "DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1"
        )
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected()))
    }
}

pub(crate) fn session_revoked(target: String, id: SessionId) -> Event {
    Event::new("session.revoke", target).before(serde_json::json!({ "session": id.0 }))
}

pub(crate) fn sessions_revoked(target: String, count: u64) -> Event {
    Event::new("session.revoke_all", target).after(serde_json::json!({ "revoked": count }))
}
