//! The SCIM view of users: the userName and externalId a provider gave them.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{AnyPool, Result, Store, StoreError, now, on_pool};
use crate::model::UserId;

/// A provisioned user, with the memberd user's fields SCIM shows.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScimUserRow {
    pub user_id: Uuid,
    pub user_name: String,
    pub external_id: Option<String>,
    pub authentik_sub: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub is_active: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What a list is filtered by (the filters providers send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScimFilter {
    All,
    UserName(String),
    ExternalId(String),
}

macro_rules! scim_select {
    ($rest:literal) => {
        concat!(
            "SELECT s.user_id, s.user_name, s.external_id, u.authentik_sub, u.email, u.display_name, \
             u.is_active, s.created_at, u.updated_at FROM scim_users s JOIN users u ON u.id = s.user_id ",
            $rest
        )
    };
}

impl Store {
    pub async fn scim_user(&self, user: UserId) -> Result<Option<ScimUserRow>> {
        Ok(on_pool!(self, |pool| sqlx::query_as(scim_select!(
            "WHERE s.user_id = $1"
        ))
        .bind(user.0)
        .fetch_optional(pool)
        .await?))
    }

    /// One page (`offset`, `limit`) of the matching users, by userName, and how many match.
    pub async fn scim_users(
        &self,
        filter: &ScimFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<ScimUserRow>)> {
        let (kind, value) = match filter {
            ScimFilter::All => (0, String::new()),
            ScimFilter::UserName(v) => (1, v.to_lowercase()),
            ScimFilter::ExternalId(v) => (2, v.clone()),
        };
        on_pool!(self, |pool| {
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM scim_users s WHERE ($1 = 0) \
                 OR ($1 = 1 AND s.user_name_key = $2) OR ($1 = 2 AND s.external_id = $2)",
            )
            .bind(kind)
            .bind(&value)
            .fetch_one(pool)
            .await?;
            let rows = sqlx::query_as(scim_select!(
                "WHERE ($1 = 0) OR ($1 = 1 AND s.user_name_key = $2) OR ($1 = 2 AND s.external_id = $2) \
                 ORDER BY s.user_name_key LIMIT $3 OFFSET $4"
            ))
            .bind(kind)
            .bind(&value)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            Ok((total, rows))
        })
    }

    /// Records (or changes) how the provider names the user; a userName
    /// another user has is `AlreadyExists`.
    pub async fn put_scim_user(
        &self,
        user: UserId,
        user_name: &str,
        external_id: Option<&str>,
    ) -> Result<()> {
        let at = now();
        let result = on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO scim_users (user_id, user_name, user_name_key, external_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (user_id) DO UPDATE SET user_name = $2, user_name_key = $3, external_id = $4, updated_at = $5"
        )
        .bind(user.0)
        .bind(user_name)
        .bind(user_name.to_lowercase())
        .bind(external_id)
        .bind(at)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        });
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists("userName"))
            }
            Err(e) => Err(e.into()),
        }
    }
}
