//! Writing a whole imported policy at once: one transaction, one revision.

use uuid::Uuid;

use super::{AnyPool, Begin, ChangeTx, Result, Store, names_of, now, on_pool};
use crate::audit::Event;
use crate::authz::casbin::import::ImportPlan;
use crate::model::Revision;

impl Store {
    /// Adds the plan to what is stored (existing rows are kept; effects are
    /// updated), and logs every user whose permissions it may touch.
    pub async fn import_policy(&self, plan: &ImportPlan) -> Result<Revision> {
        let at = now();
        let revision = on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            for user in &plan.users {
                sqlx::query(
                    "INSERT INTO users (id, authentik_sub, is_active, revision, created_at, updated_at) \
                     VALUES ($1, $2, TRUE, $3, $4, $4) ON CONFLICT (authentik_sub) DO NOTHING",
                )
                .bind(Uuid::new_v4())
                .bind(user.as_str())
                .bind(revision)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            for role in plan.roles.keys() {
                sqlx::query(
                    "INSERT INTO roles (id, name, description, created_at, updated_at) \
                     VALUES ($1, $2, 'imported from Casbin', $3, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(Uuid::new_v4())
                .bind(role.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            for (role, parents) in &plan.roles {
                for parent in parents {
                    sqlx::query(
                        "INSERT INTO role_parents (role_id, parent_id) \
                         SELECT r.id, p.id FROM roles r, roles p WHERE r.name = $1 AND p.name = $2 \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(role.as_str())
                    .bind(parent.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for (role, p) in &plan.role_permissions {
                let (pin_type, pin_id) = p
                    .scope
                    .as_ref()
                    .map_or(("", ""), |s| (s.scope_type.as_str(), s.scope_id.as_str()));
                sqlx::query(
                    "INSERT INTO role_permissions (id, role_id, module, action, scope_type, scope_id, effect, created_at) \
                     SELECT $1, r.id, $3, $4, $5, $6, $7, $8 FROM roles r WHERE r.name = $2 \
                     ON CONFLICT (role_id, module, action, scope_type, scope_id) DO UPDATE SET effect = excluded.effect",
                )
                .bind(Uuid::new_v4())
                .bind(role.as_str())
                .bind(p.module.as_str())
                .bind(p.action.as_str())
                .bind(pin_type)
                .bind(pin_id)
                .bind(p.effect.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            for ((user, p), effect) in &plan.grants {
                sqlx::query(
                    "INSERT INTO permissions (id, user_id, scope_type, scope_id, module, action, effect, created_at) \
                     SELECT $1, u.id, $3, $4, $5, $6, $7, $8 FROM users u WHERE u.authentik_sub = $2 \
                     ON CONFLICT (user_id, scope_type, scope_id, module, action) DO UPDATE SET effect = excluded.effect",
                )
                .bind(Uuid::new_v4())
                .bind(user.as_str())
                .bind(p.scope_type.as_str())
                .bind(p.scope_id.as_str())
                .bind(p.module.as_str())
                .bind(p.action.as_str())
                .bind(effect.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            for (user, a) in &plan.assignments {
                sqlx::query(
                    "INSERT INTO role_assignments (id, user_id, role_id, scope_type, scope_id, created_at) \
                     SELECT $1, u.id, r.id, $4, $5, $6 FROM users u, roles r WHERE u.authentik_sub = $2 AND r.name = $3 \
                     ON CONFLICT (user_id, role_id, scope_type, scope_id) DO NOTHING",
                )
                .bind(Uuid::new_v4())
                .bind(user.as_str())
                .bind(a.role.as_str())
                .bind(a.scope.scope_type.as_str())
                .bind(a.scope.scope_id.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            for user in &plan.users {
                sqlx::query(
                    "INSERT INTO change_log (revision, user_id) SELECT $1, id FROM users WHERE authentik_sub = $2 \
                     ON CONFLICT DO NOTHING",
                )
                .bind(revision)
                .bind(user.as_str())
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE users SET revision = $1 WHERE authentik_sub = $2")
                    .bind(revision)
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.log_role_holders(revision, &names_of(plan.roles.keys()))
                .await?;
            for role in plan.roles.keys() {
                sqlx::query(
                    "INSERT INTO role_change_log (revision, role_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(revision)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
            }
            tx.audit(
                Some(revision),
                Event::new("casbin.import", "policy").after(serde_json::json!({
                    "users": plan.users.len(),
                    "roles": plan.roles.len(),
                    "role_permissions": plan.role_permissions.len(),
                    "grants": plan.grants.len(),
                    "assignments": plan.assignments.len(),
                })),
            )
            .await?;
            tx.commit().await?;
            revision
        });
        Ok(Revision(revision))
    }

    /// Stores `value` under `key`, replacing what was there.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<()> {
        let sql = "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        on_pool!(self, |pool| {
            sqlx::query(sql).bind(key).bind(value).execute(pool).await?;
        });
        Ok(())
    }
}
