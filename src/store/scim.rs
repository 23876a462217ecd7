//! The SCIM view of users: the userName and externalId a provider gave them.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{AnyPool, Begin, ChangeTx, Result, Store, StoreError, now, on_pool};
use crate::audit::Event;
use crate::model::{Revision, RoleAssignment, RoleName, Scope, ScopeId, UserId};

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
}

/// One SCIM write to a group: everything it changes, written in one
/// transaction, so a write that fails midway leaves nothing behind.
#[derive(Debug, Default)]
pub struct GroupChange<'a> {
    /// Create the group with this name and externalId (a name another
    /// group has is `AlreadyExists`).
    pub create: Option<(&'a str, Option<&'a str>)>,
    /// Set its name and externalId.
    pub rename: Option<(&'a str, Option<&'a str>)>,
    /// Members to take out, then members to put in.
    pub remove: Vec<UserId>,
    pub add: Vec<UserId>,
    /// Link it to a role (`Some(None)`: unlink). Its members hold the
    /// linked role everywhere, as SCIM's assignment.
    pub link: Option<Option<&'a RoleName>>,
    /// Delete it, its members letting go of its role.
    pub delete: bool,
}

/// What a group's write did to the policy, at `revision`: each user now
/// holds (`true`) or no longer holds the role everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPolicyChange {
    pub revision: Revision,
    pub held: Vec<(UserId, RoleName, bool)>,
}

/// The assignment a linked group's members hold: its role, everywhere.
fn everywhere(role: &RoleName) -> RoleAssignment {
    RoleAssignment {
        role: role.clone(),
        scope: Scope {
            scope_type: "*".into(),
            scope_id: ScopeId::parse("*").expect("a valid scope id"),
        },
    }
}

const CREATE_GROUP: &str = "INSERT INTO scim_groups \
     (id, display_name, display_name_key, external_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)";
const RENAME_GROUP: &str = "UPDATE scim_groups \
     SET display_name = $2, display_name_key = $3, external_id = $4, updated_at = $5 WHERE id = $1";

/// A write to the group row, where a name another group has is
/// `AlreadyExists`.
fn unique_name<T>(result: sqlx::Result<T>) -> Result<T> {
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::AlreadyExists("displayName"))
        }
        other => Ok(other?),
    }
}

impl Store {
    /// Applies `change` to group `id` in one transaction. Membership in a
    /// group linked to a role is SCIM's hold on the role's assignment
    /// everywhere: it goes when neither SCIM nor an operator holds it. The
    /// revision moves only when some assignment did.
    pub async fn change_scim_group(
        &self,
        id: Uuid,
        change: &GroupChange<'_>,
    ) -> Result<GroupPolicyChange> {
        let at = now();
        on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let mut held: Vec<(UserId, RoleName, bool)> = Vec::new();
            // Create, then rename (a PUT's names): the same columns either way.
            let names = [
                (change.create, CREATE_GROUP, "scim.group.create"),
                (change.rename, RENAME_GROUP, "scim.group.update"),
            ];
            for (given, sql, action) in names {
                let Some((name, external_id)) = given else {
                    continue;
                };
                unique_name(
                    sqlx::query(sql)
                        .bind(id)
                        .bind(name)
                        .bind(name.to_lowercase())
                        .bind(external_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await,
                )?;
                tx.audit(
                    None,
                    Event::new(action, format!("scim_group:{id}")).after(
                        serde_json::json!({"display_name": name, "external_id": external_id}),
                    ),
                )
                .await?;
            }
            let role_name: Option<Option<String>> =
                sqlx::query_scalar("SELECT role_name FROM scim_groups WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(role_name) = role_name else {
                return Err(StoreError::NotFound("group"));
            };
            // A role deleted since it was linked is held by no one.
            let mut role = match role_name {
                Some(name) => tx.role_of(&name).await?,
                None => None,
            };
            for (user, member) in change
                .remove
                .iter()
                .map(|u| (*u, false))
                .chain(change.add.iter().map(|u| (*u, true)))
            {
                let sql = if member {
                    "INSERT INTO scim_group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM scim_group_members WHERE group_id = $1 AND user_id = $2"
                };
                let changed = sqlx::query(sql)
                    .bind(id)
                    .bind(user.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if !changed {
                    continue;
                }
                let target = tx.user_target(user).await?;
                let action = if member {
                    "scim.group.member.add"
                } else {
                    "scim.group.member.remove"
                };
                tx.audit(
                    None,
                    Event::new(action, format!("scim_group:{id}"))
                        .after(serde_json::json!({ "member": target })),
                )
                .await?;
                if let Some((role_id, name)) = &role {
                    if tx
                        .hold(
                            revision,
                            user,
                            linked(id, *role_id, name),
                            member,
                            &target,
                            at,
                        )
                        .await?
                    {
                        held.push((user, name.clone(), member));
                    }
                }
            }
            let unlinking = change.delete || change.link.is_some();
            if unlinking {
                let members: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT user_id FROM scim_group_members WHERE group_id = $1",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                let members: Vec<UserId> = members.into_iter().map(UserId).collect();
                if let Some((role_id, name)) = &role {
                    let linked = linked(id, *role_id, name);
                    held.extend(tx.hold_all(revision, &members, linked, false, at).await?);
                }
                if let Some(link) = change.link.filter(|_| !change.delete) {
                    sqlx::query(
                        "UPDATE scim_groups SET role_name = $2, updated_at = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(link.map(RoleName::as_str))
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    tx.audit(
                        None,
                        Event::new("scim.group.role", format!("scim_group:{id}"))
                            .after(serde_json::json!({ "role": link })),
                    )
                    .await?;
                    role = match link {
                        Some(name) => tx.role_of(name.as_str()).await?,
                        None => None,
                    };
                    if let Some((role_id, name)) = &role {
                        let linked = linked(id, *role_id, name);
                        held.extend(tx.hold_all(revision, &members, linked, true, at).await?);
                    }
                }
            }
            if change.delete {
                sqlx::query("DELETE FROM scim_groups WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.audit(
                    None,
                    Event::new("scim.group.delete", format!("scim_group:{id}")),
                )
                .await?;
            }
            let policy_changed = !held.is_empty();
            if policy_changed {
                let users: Vec<UserId> = held.iter().map(|(user, _, _)| *user).collect();
                tx.log_users(revision, &users).await?;
            } else {
                // The group changed, the policy did not: the revision stays.
                sqlx::query("UPDATE revision SET value = value - 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(GroupPolicyChange {
                revision: Revision(if policy_changed {
                    revision
                } else {
                    revision - 1
                }),
                held,
            })
        })
    }
}

/// A group's linked role, which its members hold everywhere.
#[derive(Clone, Copy)]
struct Linked<'a> {
    group: Uuid,
    role_id: Uuid,
    role: &'a RoleName,
}

fn linked(group: Uuid, role_id: Uuid, role: &RoleName) -> Linked<'_> {
    Linked {
        group,
        role_id,
        role,
    }
}

/// The statements of a group's write that touch roles, on a connection of
/// either backend.
trait GroupTx {
    /// The role's id and name, if it exists.
    async fn role_of(&mut self, name: &str) -> Result<Option<(Uuid, RoleName)>>;

    /// SCIM holds (`hold`) or lets go of the group's role everywhere for
    /// the user (`target` names them in the audit log). Answers whether the
    /// assignment itself came or went: it stays while an operator holds it,
    /// or while another group linked to the role has the user.
    async fn hold(
        &mut self,
        revision: i64,
        user: UserId,
        linked: Linked<'_>,
        hold: bool,
        target: &str,
        at: OffsetDateTime,
    ) -> Result<bool>;

    /// [`GroupTx::hold`] for each of `users`: answers the holds that came
    /// or went, as [`GroupPolicyChange::held`] lists them.
    async fn hold_all(
        &mut self,
        revision: i64,
        users: &[UserId],
        linked: Linked<'_>,
        hold: bool,
        at: OffsetDateTime,
    ) -> Result<Vec<(UserId, RoleName, bool)>>;
}

/// Implements [`GroupTx`] for one backend's connection: the same
/// statements on both.
macro_rules! group_tx {
    ($connection:ty) => {
        impl GroupTx for $connection {
            async fn role_of(&mut self, name: &str) -> Result<Option<(Uuid, RoleName)>> {
                let id = self.role_id(name).await?;
                let name = RoleName::parse(name).map_err(|e| StoreError::Corrupt(e.to_string()));
                match id {
                    Some(id) => Ok(Some((id, name?))),
                    None => Ok(None),
                }
            }

            async fn hold(
                &mut self,
                revision: i64,
                user: UserId,
                Linked { group, role_id, role }: Linked<'_>,
                hold: bool,
                target: &str,
                at: OffsetDateTime,
            ) -> Result<bool> {
                let assignment = everywhere(role);
                let scope = &assignment.scope;
                let tx = self;
                let changed = if hold {
                    let id = Uuid::new_v4();
                    let inserted = sqlx::query(
                        "INSERT INTO role_assignments (id, user_id, role_id, scope_type, scope_id, created_at, held_by_admin, held_by_scim) \
                         VALUES ($1, $2, $3, $4, $5, $6, FALSE, TRUE) ON CONFLICT (user_id, role_id, scope_type, scope_id) DO NOTHING",
                    )
                    .bind(id)
                    .bind(user.0)
                    .bind(role_id)
                    .bind(scope.scope_type.as_str())
                    .bind(scope.scope_id.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    if inserted {
                        let seq = tx.audit(Some(revision), Event::new("role.assign", target.to_owned()).after(&assignment)).await?;
                        sqlx::query("UPDATE role_assignments SET audit_seq = $1 WHERE id = $2")
                            .bind(seq)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    inserted
                } else {
                    let other_groups: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM scim_group_members m JOIN scim_groups g ON g.id = m.group_id \
                         WHERE m.user_id = $1 AND g.role_name = $2 AND g.id <> $3",
                    )
                    .bind(user.0)
                    .bind(role.as_str())
                    .bind(group)
                    .fetch_one(&mut *tx)
                    .await?;
                    if other_groups > 0 {
                        return Ok(false);
                    }
                    let deleted = sqlx::query(
                        "DELETE FROM role_assignments WHERE user_id = $1 AND role_id = $2 \
                         AND scope_type = $3 AND scope_id = $4 AND NOT held_by_admin",
                    )
                    .bind(user.0)
                    .bind(role_id)
                    .bind(scope.scope_type.as_str())
                    .bind(scope.scope_id.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        > 0;
                    if deleted {
                        tx.audit(Some(revision), Event::new("role.unassign", target.to_owned()).before(&assignment)).await?;
                    }
                    deleted
                };
                if !changed {
                    // Held by an operator too (or not at all): only SCIM's hold moves.
                    sqlx::query(
                        "UPDATE role_assignments SET held_by_scim = $5 \
                         WHERE user_id = $1 AND role_id = $2 AND scope_type = $3 AND scope_id = $4",
                    )
                    .bind(user.0)
                    .bind(role_id)
                    .bind(scope.scope_type.as_str())
                    .bind(scope.scope_id.as_str())
                    .bind(hold)
                    .execute(&mut *tx)
                    .await?;
                }
                Ok(changed)
            }

            async fn hold_all(
                &mut self,
                revision: i64,
                users: &[UserId],
                linked: Linked<'_>,
                hold: bool,
                at: OffsetDateTime,
            ) -> Result<Vec<(UserId, RoleName, bool)>> {
                let mut held = Vec::new();
                for user in users {
                    let target = self.user_target(*user).await?;
                    if self.hold(revision, *user, linked, hold, &target, at).await? {
                        held.push((*user, linked.role.clone(), hold));
                    }
                }
                Ok(held)
            }
        }
    };
}
group_tx!(sqlx::SqliteConnection);
group_tx!(sqlx::PgConnection);
