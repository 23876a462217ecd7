//! The SCIM view of users: the userName and externalId a provider gave them.

use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::{audited, user_target};
use super::{AnyPool, Begin, Result, Store, StoreError, now, on_pool};
use crate::audit::Event;
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
    /// The SCIM client that provisioned the user (None: before ownership).
    pub client_key: Option<String>,
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
             u.is_active, s.client_key, s.created_at, u.updated_at FROM scim_users s JOIN users u ON u.id = s.user_id ",
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

    /// One page (`offset`, `limit`) of the matching users, by userName, and
    /// how many match; with `owner`, only that client's users (and those
    /// provisioned before ownership).
    pub async fn scim_users(
        &self,
        owner: Option<&str>,
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
                "SELECT COUNT(*) FROM scim_users s WHERE (($1 = 0) \
                 OR ($1 = 1 AND s.user_name_key = $2) OR ($1 = 2 AND s.external_id = $2)) \
                 AND (CAST($3 AS TEXT) IS NULL OR s.client_key = $3 OR s.client_key IS NULL)",
            )
            .bind(kind)
            .bind(&value)
            .bind(owner)
            .fetch_one(pool)
            .await?;
            let rows = sqlx::query_as(scim_select!(
                "WHERE (($1 = 0) OR ($1 = 1 AND s.user_name_key = $2) OR ($1 = 2 AND s.external_id = $2)) \
                 AND (CAST($5 AS TEXT) IS NULL OR s.client_key = $5 OR s.client_key IS NULL) \
                 ORDER BY s.user_name_key LIMIT $3 OFFSET $4"
            ))
            .bind(kind)
            .bind(&value)
            .bind(limit)
            .bind(offset)
            .bind(owner)
            .fetch_all(pool)
            .await?;
            Ok((total, rows))
        })
    }

    /// Records (or changes) how the provider names the user; a userName
    /// another user has is `AlreadyExists`.
    /// `owner` becomes the user's provisioning client if it has none.
    pub async fn put_scim_user(
        &self,
        owner: &str,
        user: UserId,
        user_name: &str,
        external_id: Option<&str>,
    ) -> Result<()> {
        let at = now();
        let result = on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO scim_users (user_id, user_name, user_name_key, external_id, created_at, updated_at, client_key) \
             VALUES ($1, $2, $3, $4, $5, $5, $6) \
             ON CONFLICT (user_id) DO UPDATE SET user_name = $2, user_name_key = $3, external_id = $4, updated_at = $5, \
             client_key = COALESCE(scim_users.client_key, $6)"
        )
        .bind(user.0)
        .bind(user_name)
        .bind(user_name.to_lowercase())
        .bind(external_id)
        .bind(at)
        .bind(owner)
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

/// A group pushed over SCIM.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScimGroupRow {
    pub id: Uuid,
    pub display_name: String,
    pub external_id: Option<String>,
    pub role_name: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A member as SCIM shows it: the user's id and userName (or subject).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScimMemberRow {
    pub user_id: Uuid,
    pub authentik_sub: String,
    pub user_name: Option<String>,
}

const GROUP_COLUMNS: &str = "id, display_name, external_id, role_name, created_at, updated_at";

impl Store {
    /// Creates a group; a displayName another group has is `AlreadyExists`.
    pub async fn insert_scim_group(
        &self,
        id: Uuid,
        display_name: &str,
        external_id: Option<&str>,
    ) -> Result<()> {
        let at = now();
        let inserted = audited!(self, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO scim_groups (id, display_name, display_name_key, external_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(display_name)
            .bind(display_name.to_lowercase())
            .bind(external_id)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let event = (inserted == 1).then(|| {
                Event::new("scim.group.create", format!("scim_group:{id}")).after(
                    serde_json::json!({"display_name": display_name, "external_id": external_id}),
                )
            });
            (inserted, event)
        });
        if inserted == 1 {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists("displayName"))
        }
    }

    pub async fn rename_scim_group(
        &self,
        id: Uuid,
        display_name: &str,
        external_id: Option<&str>,
    ) -> Result<()> {
        audited!(self, |tx| {
            let result = sqlx::query(
                "UPDATE scim_groups SET display_name = $2, display_name_key = $3, external_id = $4, updated_at = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(display_name)
            .bind(display_name.to_lowercase())
            .bind(external_id)
            .bind(now())
            .execute(&mut *tx)
            .await;
            let updated = match result {
                Ok(r) => r.rows_affected(),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(StoreError::AlreadyExists("displayName"));
                }
                Err(e) => return Err(e.into()),
            };
            let event = (updated == 1).then(|| {
                Event::new("scim.group.update", format!("scim_group:{id}")).after(
                    serde_json::json!({"display_name": display_name, "external_id": external_id}),
                )
            });
            ((), event)
        });
        Ok(())
    }

    pub async fn scim_group(&self, id: Uuid) -> Result<Option<ScimGroupRow>> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM scim_groups WHERE id = $1");
        Ok(on_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
            sql.as_str()
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?))
    }

    /// Groups, by displayName; with `display_name`, only that one (any case).
    pub async fn scim_groups(&self, display_name: Option<&str>) -> Result<Vec<ScimGroupRow>> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM scim_groups WHERE ($1 IS NULL OR display_name_key = $1) \
             ORDER BY display_name_key"
        );
        Ok(on_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
            sql.as_str()
        ))
        .bind(display_name.map(str::to_lowercase))
        .fetch_all(pool)
        .await?))
    }

    pub async fn delete_scim_group(&self, id: Uuid) -> Result<bool> {
        Ok(audited!(self, |tx| {
            let deleted = sqlx::query("DELETE FROM scim_groups WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            let event =
                deleted.then(|| Event::new("scim.group.delete", format!("scim_group:{id}")));
            (deleted, event)
        }))
    }

    pub async fn set_scim_group_role(&self, id: Uuid, role: Option<&str>) -> Result<()> {
        audited!(self, |tx| {
            let updated =
                sqlx::query("UPDATE scim_groups SET role_name = $2, updated_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(role)
                    .bind(now())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            let event = (updated == 1).then(|| {
                Event::new("scim.group.role", format!("scim_group:{id}"))
                    .after(serde_json::json!({ "role": role }))
            });
            ((), event)
        });
        Ok(())
    }

    pub async fn scim_members(&self, id: Uuid) -> Result<Vec<ScimMemberRow>> {
        Ok(on_pool!(self, |pool| sqlx::query_as(
            "SELECT m.user_id, u.authentik_sub, s.user_name FROM scim_group_members m \
             JOIN users u ON u.id = m.user_id LEFT JOIN scim_users s ON s.user_id = m.user_id \
             WHERE m.group_id = $1 ORDER BY u.authentik_sub"
        )
        .bind(id)
        .fetch_all(pool)
        .await?))
    }

    /// Adds (true) or removes (false) a member; answers whether anything changed.
    pub async fn set_scim_member(&self, id: Uuid, user: UserId, member: bool) -> Result<bool> {
        let (sql, action) = if member {
            (
                "INSERT INTO scim_group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                "scim.group.member.add",
            )
        } else {
            (
                "DELETE FROM scim_group_members WHERE group_id = $1 AND user_id = $2",
                "scim.group.member.remove",
            )
        };
        Ok(audited!(self, |tx| {
            let changed = sqlx::query(sql)
                .bind(id)
                .bind(user.0)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            let event = if changed {
                let member = user_target!(tx, user);
                Some(
                    Event::new(action, format!("scim_group:{id}"))
                        .after(serde_json::json!({ "member": member })),
                )
            } else {
                None
            };
            (changed, event)
        }))
    }
}
