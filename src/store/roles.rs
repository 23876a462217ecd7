//! Roles: their hierarchy, permissions, and assignments to users.
//!
//! Callers pass the roles whose holders a change affects (the changed role
//! and every role inheriting it, which the engine knows); their holders are
//! stamped and logged in the change's transaction.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::rows::{ParentRow, RolePermissionRow, RoleRow};
use super::{
    AnyPool, Begin, ChangeOutcome, ChangeTx, Result, Store, StoreError, finish_change, names_of,
    now, on_pool,
};
use crate::audit::Event;
use crate::model::{
    AssignmentSource, AuthentikSub, Revision, Role, RoleAssignment, RoleName, RolePermission,
    Scope, UserId,
};

/// A pin as stored: empty strings for a permission that is not pinned.
fn pin_columns(scope: Option<&Scope>) -> (&str, &str) {
    scope.map_or(("", ""), |s| (s.scope_type.as_str(), s.scope_id.as_str()))
}

impl Store {
    pub async fn create_role(
        &self,
        name: &RoleName,
        description: &str,
        parents: &[RoleName],
    ) -> Result<Revision> {
        let at = now();
        let revision = on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let id = Uuid::new_v4();
            let inserted = sqlx::query(
                "INSERT INTO roles (id, name, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(id)
            .bind(name.as_str())
            .bind(description)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::AlreadyExists("role"));
            }
            tx.set_parents(id, parents).await?;
            tx.log_role(revision, name.as_str()).await?;
            tx.audit(
                Some(revision),
                Event::new("role.create", format!("role:{name}"))
                    .after(serde_json::json!({"description": description, "parents": parents})),
            )
            .await?;
            finish_change(tx, revision, true).await?
        });
        Ok(Revision(revision))
    }

    /// Changes what is given; `affected` are the roles whose holders see the change.
    pub async fn update_role(
        &self,
        name: &RoleName,
        description: Option<&str>,
        parents: Option<&[RoleName]>,
        affected: &[RoleName],
    ) -> Result<ChangeOutcome> {
        let at = now();
        let revision = on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let id = tx
                .role_id(name.as_str())
                .await?
                .ok_or(StoreError::NotFound("role"))?;
            let before: (String,) = sqlx::query_as("SELECT description FROM roles WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let old_parents: Vec<String> = sqlx::query_scalar(
                "SELECT p.name FROM role_parents rp JOIN roles p ON p.id = rp.parent_id \
                 WHERE rp.role_id = $1 ORDER BY p.name",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            if let Some(description) = description {
                sqlx::query("UPDATE roles SET description = $1 WHERE id = $2")
                    .bind(description)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(parents) = parents {
                tx.set_parents(id, parents).await?;
                tx.log_role_holders(revision, &names_of(affected)).await?;
                tx.log_role(revision, name.as_str()).await?;
            }
            tx.audit(
                Some(revision),
                Event::new("role.update", format!("role:{name}"))
                    .before(serde_json::json!({"description": before.0, "parents": old_parents}))
                    .after(serde_json::json!({
                        "description": description.unwrap_or(&before.0),
                        "parents": parents.map_or_else(
                            || old_parents.clone(),
                            |p| p.iter().map(|r| r.to_string()).collect()
                        ),
                    })),
            )
            .await?;
            sqlx::query("UPDATE roles SET updated_at = $1 WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            finish_change(tx, revision, true).await?
        });
        Ok(ChangeOutcome {
            changed: true,
            revision: Revision(revision),
        })
    }

    /// Deletes the role with its permissions, its place in the hierarchy and
    /// its assignments; its holders (and those of roles inheriting it) are logged first.
    pub async fn delete_role(&self, name: &RoleName, affected: &[RoleName]) -> Result<Revision> {
        let revision = on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let id = tx
                .role_id(name.as_str())
                .await?
                .ok_or(StoreError::NotFound("role"))?;
            tx.log_role_holders(revision, &names_of(affected)).await?;
            tx.log_role(revision, name.as_str()).await?;
            sqlx::query("DELETE FROM roles WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.audit(
                Some(revision),
                Event::new("role.delete", format!("role:{name}")),
            )
            .await?;
            finish_change(tx, revision, true).await?
        });
        Ok(Revision(revision))
    }

    /// Adds the permission to the role, or changes its effect.
    pub async fn set_role_permission(
        &self,
        role: &RoleName,
        permission: &RolePermission,
        affected: &[RoleName],
    ) -> Result<ChangeOutcome> {
        let (pin_type, pin_id) = pin_columns(permission.scope.as_ref());
        let at = now();
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let role_id = tx
                .role_id(role.as_str())
                .await?
                .ok_or(StoreError::NotFound("role"))?;
            let existing: Option<(Uuid, String, bool)> = sqlx::query_as(
                "SELECT id, effect, from_rules FROM role_permissions \
                 WHERE role_id = $1 AND module = $2 AND action = $3 AND scope_type = $4 AND scope_id = $5",
            )
            .bind(role_id)
            .bind(permission.module.as_str())
            .bind(permission.action.as_str())
            .bind(pin_type)
            .bind(pin_id)
            .fetch_optional(&mut *tx)
            .await?;
            let before_effect = existing.as_ref().map(|(_, effect, _)| effect.clone());
            // Set explicitly, a permission that rules gave stays when the rules go.
            let changed = match existing {
                Some((_, effect, false)) if effect == permission.effect.as_str() => false,
                Some((id, _, _)) => {
                    sqlx::query(
                        "UPDATE role_permissions SET effect = $1, from_rules = FALSE WHERE id = $2",
                    )
                    .bind(permission.effect.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    true
                }
                None => {
                    sqlx::query(
                        "INSERT INTO role_permissions (id, role_id, module, action, scope_type, scope_id, effect, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(Uuid::new_v4())
                    .bind(role_id)
                    .bind(permission.module.as_str())
                    .bind(permission.action.as_str())
                    .bind(pin_type)
                    .bind(pin_id)
                    .bind(permission.effect.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    true
                }
            };
            if changed {
                tx.log_role_holders(revision, &names_of(affected)).await?;
                tx.log_role(revision, role.as_str()).await?;
                let mut event =
                    Event::new("role.permission.set", format!("role:{role}")).after(permission);
                if let Some(effect) = before_effect {
                    let mut before = serde_json::to_value(permission).unwrap_or_default();
                    before["effect"] = serde_json::Value::String(effect);
                    event.before = Some(before);
                }
                tx.audit(Some(revision), event).await?;
            }
            ChangeOutcome {
                changed,
                revision: Revision(finish_change(tx, revision, changed).await?),
            }
        });
        Ok(outcome)
    }

    /// Removes the permission (whatever its effect) from the role.
    pub async fn remove_role_permission(
        &self,
        role: &RoleName,
        permission: &RolePermission,
        affected: &[RoleName],
    ) -> Result<ChangeOutcome> {
        let (pin_type, pin_id) = pin_columns(permission.scope.as_ref());
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let role_id = tx
                .role_id(role.as_str())
                .await?
                .ok_or(StoreError::NotFound("role"))?;
            let deleted = sqlx::query(
                "DELETE FROM role_permissions \
                 WHERE role_id = $1 AND module = $2 AND action = $3 AND scope_type = $4 AND scope_id = $5",
            )
            .bind(role_id)
            .bind(permission.module.as_str())
            .bind(permission.action.as_str())
            .bind(pin_type)
            .bind(pin_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if deleted {
                tx.log_role_holders(revision, &names_of(affected)).await?;
                tx.log_role(revision, role.as_str()).await?;
                tx.audit(
                    Some(revision),
                    Event::new("role.permission.remove", format!("role:{role}")).before(
                        serde_json::json!({
                            "module": permission.module,
                            "action": permission.action,
                            "scope": permission.scope,
                        }),
                    ),
                )
                .await?;
            }
            ChangeOutcome {
                changed: deleted,
                revision: Revision(finish_change(tx, revision, deleted).await?),
            }
        });
        Ok(outcome)
    }

    /// Records that `source` holds the assignment; the policy changes only
    /// when no source held it before.
    pub async fn assign_role(
        &self,
        source: AssignmentSource,
        sub: &AuthentikSub,
        assignment: &RoleAssignment,
    ) -> Result<(UserId, ChangeOutcome)> {
        let at = now();
        let id = Uuid::new_v4();
        let by_admin = source == AssignmentSource::Admin;
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision, user_id) = pool.begin_user_change(sub).await?;
            let role_id = tx
                .role_id(assignment.role.as_str())
                .await?
                .ok_or(StoreError::NotFound("role"))?;
            let inserted = sqlx::query(
                "INSERT INTO role_assignments (id, user_id, role_id, scope_type, scope_id, created_at, held_by_admin, held_by_scim) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, role_id, scope_type, scope_id) DO NOTHING",
            )
            .bind(id)
            .bind(user_id.0)
            .bind(role_id)
            .bind(assignment.scope.scope_type.as_str())
            .bind(assignment.scope.scope_id.as_str())
            .bind(at)
            .bind(by_admin)
            .bind(!by_admin)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                tx.log_users(revision, &[user_id]).await?;
                let seq = tx
                    .audit(
                        Some(revision),
                        Event::new("role.assign", format!("user:{sub}")).after(assignment),
                    )
                    .await?;
                sqlx::query("UPDATE role_assignments SET audit_seq = $1 WHERE id = $2")
                    .bind(seq)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            (
                user_id,
                role_id,
                ChangeOutcome {
                    changed: inserted,
                    revision: Revision(finish_change(tx, revision, inserted).await?),
                },
            )
        });
        let (user_id, role_id, outcome) = outcome;
        if !outcome.changed {
            // Held already, by another source: this one holds it too.
            self.set_holder(source, true, user_id, role_id, assignment)
                .await?;
        }
        Ok((user_id, outcome))
    }

    /// Records that `source` no longer holds the assignment; it goes when no
    /// source holds it any more.
    pub async fn unassign_role(
        &self,
        source: AssignmentSource,
        sub: &AuthentikSub,
        assignment: &RoleAssignment,
    ) -> Result<(UserId, ChangeOutcome)> {
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision, user_id) = pool.begin_user_change(sub).await?;
            let role_id = tx
                .role_id(assignment.role.as_str())
                .await?
                .ok_or(StoreError::NotFound("role"))?;
            let deleted = sqlx::query(
                "DELETE FROM role_assignments WHERE user_id = $1 AND role_id = $2 AND scope_type = $3 AND scope_id = $4 \
                 AND (held_by_admin = $5 OR NOT held_by_admin) AND (held_by_scim = $6 OR NOT held_by_scim)",
            )
            .bind(user_id.0)
            .bind(role_id)
            .bind(assignment.scope.scope_type.as_str())
            .bind(assignment.scope.scope_id.as_str())
            // Gone when no other source holds it: $5/$6 is TRUE for the
            // source letting go, so only the other's flag can keep the row.
            .bind(source == AssignmentSource::Admin)
            .bind(source == AssignmentSource::Scim)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if deleted {
                tx.log_users(revision, &[user_id]).await?;
                tx.audit(
                    Some(revision),
                    Event::new("role.unassign", format!("user:{sub}")).before(assignment),
                )
                .await?;
            }
            (
                user_id,
                role_id,
                ChangeOutcome {
                    changed: deleted,
                    revision: Revision(finish_change(tx, revision, deleted).await?),
                },
            )
        });
        let (user_id, role_id, outcome) = outcome;
        if !outcome.changed {
            // Still held by another source (or not at all): this one lets go.
            self.set_holder(source, false, user_id, role_id, assignment)
                .await?;
        }
        Ok((user_id, outcome))
    }

    /// Whether `source` holds an assignment that stays either way: no policy
    /// change, so no revision and no transaction of the change log.
    async fn set_holder(
        &self,
        source: AssignmentSource,
        holds: bool,
        user_id: UserId,
        role_id: Uuid,
        assignment: &RoleAssignment,
    ) -> Result<()> {
        let sql: &str = match source {
            AssignmentSource::Admin => {
                "UPDATE role_assignments SET held_by_admin = $5 \
                 WHERE user_id = $1 AND role_id = $2 AND scope_type = $3 AND scope_id = $4"
            }
            AssignmentSource::Scim => {
                "UPDATE role_assignments SET held_by_scim = $5 \
                 WHERE user_id = $1 AND role_id = $2 AND scope_type = $3 AND scope_id = $4"
            }
        };
        on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(user_id.0)
                .bind(role_id)
                .bind(assignment.scope.scope_type.as_str())
                .bind(assignment.scope.scope_id.as_str())
                .bind(holds)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Every role with its parents and permissions, by name.
    pub async fn roles(&self) -> Result<Vec<Role>> {
        self.read_roles(None).await
    }

    pub async fn role(&self, name: &RoleName) -> Result<Option<Role>> {
        Ok(self.read_roles(Some(name)).await?.pop())
    }

    async fn read_roles(&self, only: Option<&RoleName>) -> Result<Vec<Role>> {
        // `$1 IS NULL OR name = $1` with a typed NULL: one statement for one role or all.
        const ROLES: &str = "SELECT name, description, created_at, updated_at FROM roles \
                             WHERE CAST($1 AS TEXT) IS NULL OR name = $1";
        const PARENTS: &str = "SELECT r.name AS role, p.name AS parent FROM role_parents rp \
                               JOIN roles r ON r.id = rp.role_id JOIN roles p ON p.id = rp.parent_id \
                               WHERE CAST($1 AS TEXT) IS NULL OR r.name = $1";
        const PERMISSIONS: &str = "SELECT r.name AS role, rp.module, rp.action, rp.scope_type, rp.scope_id, rp.effect \
                                   FROM role_permissions rp JOIN roles r ON r.id = rp.role_id \
                                   WHERE CAST($1 AS TEXT) IS NULL OR r.name = $1";
        let only = only.map(RoleName::as_str);
        let (roles, parents, permissions) = on_pool!(self, |pool| {
            let mut tx = pool.begin_read().await?;
            let roles: Vec<RoleRow> = sqlx::query_as(ROLES).bind(only).fetch_all(&mut *tx).await?;
            let parents: Vec<ParentRow> = sqlx::query_as(PARENTS)
                .bind(only)
                .fetch_all(&mut *tx)
                .await?;
            let permissions: Vec<RolePermissionRow> = sqlx::query_as(PERMISSIONS)
                .bind(only)
                .fetch_all(&mut *tx)
                .await?;
            tx.rollback().await?;
            (roles, parents, permissions)
        });
        let mut by_name: BTreeMap<RoleName, Role> = BTreeMap::new();
        for row in roles {
            let role = Role::try_from(row)?;
            by_name.insert(role.name.clone(), role);
        }
        for row in parents {
            let (role, parent) = row.names()?;
            if let Some(role) = by_name.get_mut(&role) {
                role.parents.push(parent);
            }
        }
        for row in permissions {
            let (role, permission) = row.parse()?;
            if let Some(role) = by_name.get_mut(&role) {
                role.permissions.push(permission);
            }
        }
        Ok(by_name
            .into_values()
            .map(|mut role| {
                role.parents.sort();
                role.permissions.sort();
                role
            })
            .collect())
    }
}
