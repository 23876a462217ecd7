//! Users, their direct grants, the change log, and loading the whole policy.

use futures_util::TryStreamExt;
use uuid::Uuid;

use super::audit::{grant_state, user_state};
use super::rows::{
    AssignmentRow, GrantRow, LoadedGrantRow, NameRow, ParentRow, RolePermissionRow, UserRow,
};
use super::{
    AnyPool, Begin, ChangeOutcome, ChangeTx, GrantOutcome, PolicyRow, Result, RevokeOutcome, Store,
    StoreError, UpsertOutcome, finish_change, now, on_pool, policy_row,
};
use crate::audit::Event;
use crate::model::{
    AuthentikSub, Effect, Grant, Permission, Revision, RoleName, User, UserId, UserUpsert,
};

macro_rules! user_columns {
    () => {
        "id, authentik_sub, email, display_name, is_active, revision, created_at, updated_at"
    };
}

const FIND_GRANT: &str = "SELECT id, user_id, scope_type, scope_id, module, action, effect, created_at \
     FROM permissions WHERE user_id = $1 AND scope_type = $2 AND scope_id = $3 AND module = $4 AND action = $5";

/// Binds a permission's four columns, in order, to the next four placeholders.
macro_rules! bind_permission {
    ($query:expr, $permission:expr) => {
        $query
            .bind($permission.scope_type.as_str())
            .bind($permission.scope_id.as_str())
            .bind($permission.module.as_str())
            .bind($permission.action.as_str())
    };
}

/// What `/internal/changes` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangesSince {
    /// The users whose effective permissions changed after the revision asked for.
    Changed {
        users: Vec<UserId>,
        revision: Revision,
    },
    /// The log no longer reaches back that far: everything must be refetched.
    Gone { oldest: Revision },
}

/// The policy rows changed after a revision: see `Store::policy_changes_since`.
#[derive(Debug, Clone, Default)]
pub struct PolicyDelta {
    pub revision: Revision,
    /// Roles whose definitions changed, and whether each still exists.
    pub roles: Vec<(RoleName, bool)>,
    /// Users whose grants or assignments may have changed (those that exist).
    pub users: Vec<UserId>,
    /// The current parents and permissions of the roles, and the users with
    /// their grants and assignments, in that order.
    pub rows: Vec<PolicyRow>,
}

impl Store {
    pub async fn user_by_sub(&self, sub: &AuthentikSub) -> Result<Option<User>> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE authentik_sub = $1"
        );
        let row: Option<UserRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(sub.as_str())
            .fetch_optional(pool)
            .await?);
        row.map(User::try_from).transpose()
    }

    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        let row: Option<UserRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(id.0)
            .fetch_optional(pool)
            .await?);
        row.map(User::try_from).transpose()
    }

    /// Users whose subject, email or display name contains `search` (any
    /// case), by subject, after the subject `after`; at most `limit`.
    pub async fn users_page(
        &self,
        search: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE ($1 IS NULL OR LOWER(authentik_sub) LIKE $1 ESCAPE '\\' \
             OR LOWER(COALESCE(email, '')) LIKE $1 ESCAPE '\\' \
             OR LOWER(COALESCE(display_name, '')) LIKE $1 ESCAPE '\\') \
             AND ($2 IS NULL OR authentik_sub > $2) ORDER BY authentik_sub LIMIT $3"
        );
        let pattern = search.map(|s| {
            let escaped = s
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let rows: Vec<UserRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(pattern.as_deref())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(User::try_from).collect()
    }

    /// The user's direct grants, by permission.
    pub async fn grants_of(&self, user: UserId) -> Result<Vec<Grant>> {
        let rows: Vec<GrantRow> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, user_id, scope_type, scope_id, module, action, effect, created_at \
             FROM permissions WHERE user_id = $1 ORDER BY scope_type, scope_id, module, action"
        )
        .bind(user.0)
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(Grant::try_from).collect()
    }

    /// Creates the user or updates the fields given. Safe under concurrent
    /// calls for one subject: the unique subject and `ON CONFLICT` make the
    /// second caller update the row the first one created.
    pub async fn upsert_user(&self, upsert: &UserUpsert) -> Result<UpsertOutcome> {
        // Other systems upsert on every sign-in; most calls change nothing and
        // should not take the write lock nor move the revision.
        if let Some(user) = self.user_by_sub(&upsert.authentik_sub).await? {
            if upsert.is_noop_for(&user) {
                return Ok(UpsertOutcome {
                    user,
                    changed: false,
                });
            }
        }
        const SELECT: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE authentik_sub = $1"
        );
        const UPSERT: &str = concat!(
            "INSERT INTO users (id, authentik_sub, email, display_name, is_active, revision, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, COALESCE($5, TRUE), $6, $7, $7) \
             ON CONFLICT (authentik_sub) DO UPDATE SET \
                 email = COALESCE($3, users.email), \
                 display_name = COALESCE($4, users.display_name), \
                 is_active = COALESCE($5, users.is_active), \
                 revision = $6, updated_at = $7 \
             RETURNING ",
            user_columns!()
        );
        let at = now();
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            // A concurrent caller may have written the same values meanwhile.
            let existing: Option<UserRow> = sqlx::query_as(SELECT)
                .bind(upsert.authentik_sub.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let existing = existing.map(User::try_from).transpose()?;
            match existing {
                Some(user) if upsert.is_noop_for(&user) => {
                    tx.rollback().await?;
                    UpsertOutcome {
                        user,
                        changed: false,
                    }
                }
                _ => {
                    let row: UserRow = sqlx::query_as(UPSERT)
                        .bind(Uuid::new_v4())
                        .bind(upsert.authentik_sub.as_str())
                        .bind(upsert.email.as_ref().map(|e| e.as_str()))
                        .bind(upsert.display_name.as_ref().map(|d| d.as_str()))
                        .bind(upsert.is_active)
                        .bind(revision)
                        .bind(at)
                        .fetch_one(&mut *tx)
                        .await?;
                    let user = User::try_from(row)?;
                    tx.log_users(revision, &[user.id]).await?;
                    let target = format!("user:{}", user.authentik_sub);
                    let event = match &existing {
                        Some(before) => Event::new("user.update", target)
                            .before(user_state(before))
                            .after(user_state(&user)),
                        None => Event::new("user.create", target).after(user_state(&user)),
                    };
                    tx.audit(Some(revision), event).await?;
                    tx.commit().await?;
                    UpsertOutcome {
                        user,
                        changed: true,
                    }
                }
            }
        });
        Ok(outcome)
    }

    /// Grants `permission` with `effect`. Granting what the user already holds
    /// changes nothing; granting it with the other effect changes the effect.
    pub async fn grant(
        &self,
        sub: &AuthentikSub,
        permission: &Permission,
        effect: Effect,
    ) -> Result<GrantOutcome> {
        let insert = "INSERT INTO permissions (id, user_id, scope_type, scope_id, module, action, created_at, effect) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let at = now();
        let id = Uuid::new_v4();
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision, user_id) = pool.begin_user_change(sub).await?;
            let existing: Option<GrantRow> =
                bind_permission!(sqlx::query_as(FIND_GRANT).bind(user_id.0), permission)
                    .fetch_optional(&mut *tx)
                    .await?;
            let existing = existing.map(Grant::try_from).transpose()?;
            let before = existing.as_ref().map(grant_state);
            let (grant, created, changed) = match existing {
                Some(grant) if grant.effect == effect => (grant, false, false),
                Some(grant) => {
                    sqlx::query("UPDATE permissions SET effect = $1 WHERE id = $2")
                        .bind(effect.as_str())
                        .bind(grant.id)
                        .execute(&mut *tx)
                        .await?;
                    (Grant { effect, ..grant }, false, true)
                }
                None => {
                    bind_permission!(sqlx::query(insert).bind(id).bind(user_id.0), permission)
                        .bind(at)
                        .bind(effect.as_str())
                        .execute(&mut *tx)
                        .await?;
                    let grant = Grant {
                        id,
                        user_id,
                        permission: permission.clone(),
                        effect,
                        created_at: at,
                    };
                    (grant, true, true)
                }
            };
            if changed {
                tx.log_users(revision, &[user_id]).await?;
                let action = if created {
                    "grant.create"
                } else {
                    "grant.update"
                };
                let mut event =
                    Event::new(action, format!("user:{}", sub)).after(grant_state(&grant));
                event.before = before;
                let seq = tx.audit(Some(revision), event).await?;
                sqlx::query("UPDATE permissions SET audit_seq = $1 WHERE id = $2")
                    .bind(seq)
                    .bind(grant.id)
                    .execute(&mut *tx)
                    .await?;
            }
            let revision = finish_change(tx, revision, changed).await?;
            GrantOutcome {
                grant,
                created,
                changed,
                revision: Revision(revision),
            }
        });
        Ok(outcome)
    }

    /// Revokes `permission`, whatever its effect; revoking what the user does
    /// not hold is not an error.
    pub async fn revoke(
        &self,
        sub: &AuthentikSub,
        permission: &Permission,
    ) -> Result<RevokeOutcome> {
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision, user_id) = pool.begin_user_change(sub).await?;
            let existing: Option<GrantRow> =
                bind_permission!(sqlx::query_as(FIND_GRANT).bind(user_id.0), permission)
                    .fetch_optional(&mut *tx)
                    .await?;
            let existing = existing.map(Grant::try_from).transpose()?;
            if let Some(grant) = &existing {
                sqlx::query("DELETE FROM permissions WHERE id = $1")
                    .bind(grant.id)
                    .execute(&mut *tx)
                    .await?;
                tx.log_users(revision, &[user_id]).await?;
                tx.audit(
                    Some(revision),
                    Event::new("grant.revoke", format!("user:{}", sub)).before(grant_state(grant)),
                )
                .await?;
            }
            let revision = finish_change(tx, revision, existing.is_some()).await?;
            RevokeOutcome {
                revoked: existing,
                revision: Revision(revision),
            }
        });
        Ok(outcome)
    }

    /// The users whose effective permissions changed after `since`.
    pub async fn changes_since(&self, since: Revision) -> Result<ChangesSince> {
        let outcome = on_pool!(self, |pool| {
            let mut tx = pool.begin_read().await?;
            let floor: Option<String> =
                sqlx::query_scalar("SELECT value FROM settings WHERE key = 'change_log_floor'")
                    .fetch_optional(&mut *tx)
                    .await?;
            let floor = floor.and_then(|f| f.parse::<i64>().ok()).unwrap_or(0);
            if since.0 < floor {
                tx.rollback().await?;
                return Ok(ChangesSince::Gone {
                    oldest: Revision(floor),
                });
            }
            let users: Vec<Uuid> =
                sqlx::query_scalar("SELECT DISTINCT user_id FROM change_log WHERE revision > $1")
                    .bind(since.0)
                    .fetch_all(&mut *tx)
                    .await?;
            let revision: i64 = sqlx::query_scalar("SELECT value FROM revision WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            ChangesSince::Changed {
                users: users.into_iter().map(UserId).collect(),
                revision: Revision(revision),
            }
        });
        Ok(outcome)
    }

    /// Forgets the change log up to and including `through`; asking about
    /// changes since before then answers `Gone`.
    pub async fn prune_change_log(&self, through: Revision) -> Result<ChangeOutcome> {
        let outcome = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let deleted = sqlx::query("DELETE FROM change_log WHERE revision <= $1")
                .bind(through.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM role_change_log WHERE revision <= $1")
                .bind(through.0)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ('change_log_floor', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(through.0.to_string())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            ChangeOutcome {
                changed: deleted > 0,
                revision: through,
            }
        });
        Ok(outcome)
    }

    /// What changed after `since`, read at one moment: the roles whose
    /// definitions changed (and whether each still exists), the users whose
    /// grants or assignments may have, and the current rows of both. `None`
    /// when the change log no longer reaches back that far.
    pub async fn policy_changes_since(&self, since: Revision) -> Result<Option<PolicyDelta>> {
        const ROLES: &str = "SELECT DISTINCT role_name FROM role_change_log WHERE revision > $1";
        const LIVE_ROLES: &str = "SELECT name FROM roles WHERE name IN \
             (SELECT role_name FROM role_change_log WHERE revision > $1)";
        const PARENTS: &str = "SELECT r.name AS role, p.name AS parent FROM role_parents rp \
             JOIN roles r ON r.id = rp.role_id JOIN roles p ON p.id = rp.parent_id \
             WHERE r.name IN (SELECT role_name FROM role_change_log WHERE revision > $1)";
        const ROLE_PERMISSIONS: &str = "SELECT r.name AS role, rp.module, rp.action, rp.scope_type, \
             rp.scope_id, rp.effect FROM role_permissions rp JOIN roles r ON r.id = rp.role_id \
             WHERE r.name IN (SELECT role_name FROM role_change_log WHERE revision > $1)";
        const USERS: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id IN (SELECT user_id FROM change_log WHERE revision > $1)"
        );
        const GRANTS: &str = "SELECT id, user_id, scope_type, scope_id, module, action, effect \
             FROM permissions WHERE user_id IN (SELECT user_id FROM change_log WHERE revision > $1)";
        const ASSIGNMENTS: &str = "SELECT a.user_id, r.name AS role, a.scope_type, a.scope_id \
             FROM role_assignments a JOIN roles r ON r.id = a.role_id \
             WHERE a.user_id IN (SELECT user_id FROM change_log WHERE revision > $1)";
        on_pool!(self, |pool| {
            let mut tx = pool.begin_read().await?;
            let floor: Option<String> =
                sqlx::query_scalar("SELECT value FROM settings WHERE key = 'change_log_floor'")
                    .fetch_optional(&mut *tx)
                    .await?;
            if since.0 < floor.and_then(|f| f.parse::<i64>().ok()).unwrap_or(0) {
                tx.rollback().await?;
                return Ok(None);
            }
            let revision: i64 = sqlx::query_scalar("SELECT value FROM revision WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            let mut delta = PolicyDelta {
                revision: Revision(revision),
                ..PolicyDelta::default()
            };
            if revision <= since.0 {
                tx.rollback().await?;
                return Ok(Some(delta));
            }
            let changed: Vec<String> = sqlx::query_scalar(ROLES)
                .bind(since.0)
                .fetch_all(&mut *tx)
                .await?;
            let live: Vec<NameRow> = sqlx::query_as(LIVE_ROLES)
                .bind(since.0)
                .fetch_all(&mut *tx)
                .await?;
            let live: Vec<RoleName> = live
                .into_iter()
                .map(NameRow::role_name)
                .collect::<Result<_>>()?;
            for name in changed {
                let name = RoleName::parse(name)
                    .map_err(|e| StoreError::Corrupt(format!("role_change_log.role_name: {e}")))?;
                let exists = live.contains(&name);
                delta.roles.push((name, exists));
            }
            let parents: Vec<ParentRow> = sqlx::query_as(PARENTS)
                .bind(since.0)
                .fetch_all(&mut *tx)
                .await?;
            for row in parents {
                let (role, parent) = row.names()?;
                delta.rows.push(PolicyRow::Parent { role, parent });
            }
            let permissions: Vec<RolePermissionRow> = sqlx::query_as(ROLE_PERMISSIONS)
                .bind(since.0)
                .fetch_all(&mut *tx)
                .await?;
            for row in permissions {
                let (role, permission) = row.parse()?;
                delta
                    .rows
                    .push(PolicyRow::RolePermission { role, permission });
            }
            let users: Vec<UserRow> = sqlx::query_as(USERS)
                .bind(since.0)
                .fetch_all(&mut *tx)
                .await?;
            for row in users {
                let user = User::try_from(row)?;
                delta.users.push(user.id);
                delta.rows.push(PolicyRow::User(user));
            }
            let grants: Vec<LoadedGrantRow> = sqlx::query_as(GRANTS)
                .bind(since.0)
                .fetch_all(&mut *tx)
                .await?;
            for row in grants {
                delta.rows.push(PolicyRow::Grant(row.parse()?));
            }
            let assignments: Vec<AssignmentRow> = sqlx::query_as(ASSIGNMENTS)
                .bind(since.0)
                .fetch_all(&mut *tx)
                .await?;
            for row in assignments {
                let (user_id, assignment) = row.parse()?;
                delta.rows.push(PolicyRow::Assignment {
                    user_id,
                    assignment,
                });
            }
            tx.rollback().await?;
            Ok(Some(delta))
        })
    }

    /// Streams the whole policy to `sink`, read at one moment: users and roles
    /// first, then what refers to them. Returns the revision it was read at.
    pub async fn load_policy(
        &self,
        mut sink: impl FnMut(PolicyRow) -> Result<()>,
    ) -> Result<Revision> {
        const USERS: &str = concat!("SELECT ", user_columns!(), " FROM users");
        const ROLES: &str = "SELECT name FROM roles";
        const PARENTS: &str = "SELECT r.name AS role, p.name AS parent FROM role_parents rp \
                               JOIN roles r ON r.id = rp.role_id JOIN roles p ON p.id = rp.parent_id";
        const ROLE_PERMISSIONS: &str = "SELECT r.name AS role, rp.module, rp.action, rp.scope_type, rp.scope_id, \
                                        rp.effect FROM role_permissions rp JOIN roles r ON r.id = rp.role_id";
        const ASSIGNMENTS: &str = "SELECT a.user_id, r.name AS role, a.scope_type, a.scope_id \
                                   FROM role_assignments a JOIN roles r ON r.id = a.role_id";
        const GRANTS: &str =
            "SELECT id, user_id, scope_type, scope_id, module, action, effect FROM permissions";
        let revision = on_pool!(self, |pool| {
            let mut tx = pool.begin_read().await?;
            let revision: i64 = sqlx::query_scalar("SELECT value FROM revision WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            {
                let mut rows = sqlx::query_as::<_, UserRow>(USERS).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    sink(policy_row("users", User::try_from(row), PolicyRow::User))?;
                }
            }
            {
                let mut rows = sqlx::query_as::<_, NameRow>(ROLES).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    sink(policy_row("roles", row.role_name(), |name| {
                        PolicyRow::Role { name }
                    }))?;
                }
            }
            {
                let mut rows = sqlx::query_as::<_, ParentRow>(PARENTS).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    sink(policy_row("role_parents", row.names(), |(role, parent)| {
                        PolicyRow::Parent { role, parent }
                    }))?;
                }
            }
            {
                let mut rows =
                    sqlx::query_as::<_, RolePermissionRow>(ROLE_PERMISSIONS).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    sink(policy_row(
                        "role_permissions",
                        row.parse(),
                        |(role, permission)| PolicyRow::RolePermission { role, permission },
                    ))?;
                }
            }
            {
                let mut rows = sqlx::query_as::<_, LoadedGrantRow>(GRANTS).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    sink(policy_row("permissions", row.parse(), PolicyRow::Grant))?;
                }
            }
            {
                let mut rows = sqlx::query_as::<_, AssignmentRow>(ASSIGNMENTS).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    sink(policy_row(
                        "role_assignments",
                        row.parse(),
                        |(user_id, assignment)| PolicyRow::Assignment {
                            user_id,
                            assignment,
                        },
                    ))?;
                }
            }
            tx.rollback().await?;
            revision
        });
        Ok(Revision(revision))
    }
}
