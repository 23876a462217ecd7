//! Identities: a user's (issuer, subject) at each identity provider.

use uuid::Uuid;

use super::{AnyPool, Begin, ChangeTx, Result, Store, StoreError, now, on_pool};
use crate::audit::Event;
use crate::model::UserId;

/// One linked identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
}

impl Store {
    pub async fn identity_user(&self, issuer: &str, subject: &str) -> Result<Option<UserId>> {
        let id: Option<Uuid> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT user_id FROM identities WHERE issuer = $1 AND subject = $2"
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(pool)
        .await?);
        Ok(id.map(UserId))
    }

    /// Links the identity to the user. Linking it again to the same user
    /// changes nothing (false); an identity of another user is `AlreadyExists`.
    pub async fn link_identity(&self, issuer: &str, subject: &str, user: UserId) -> Result<bool> {
        let inserted = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let (out, event): (_, Option<Event>) = {
                let inserted = sqlx::query(
                "INSERT INTO identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (issuer, subject) DO NOTHING",
            )
            .bind(issuer)
            .bind(subject)
            .bind(user.0)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
                let event = if inserted == 1 {
                    let target = tx.user_target(user).await?;
                    Some(
                        Event::new("identity.link", target)
                            .after(serde_json::json!({"issuer": issuer, "subject": subject})),
                    )
                } else {
                    None
                };
                (inserted, event)
            };
            if let Some(event) = event {
                tx.audit(None, event).await?;
            }
            tx.commit().await?;
            out
        });
        if inserted == 1 {
            return Ok(true);
        }
        match self.identity_user(issuer, subject).await? {
            Some(owner) if owner == user => Ok(false),
            _ => Err(StoreError::AlreadyExists("identity")),
        }
    }

    pub async fn identities_of(&self, user: UserId) -> Result<Vec<Identity>> {
        Ok(on_pool!(self, |pool| sqlx::query_as(
            "SELECT issuer, subject FROM identities WHERE user_id = $1 ORDER BY issuer, subject"
        )
        .bind(user.0)
        .fetch_all(pool)
        .await?))
    }
}
