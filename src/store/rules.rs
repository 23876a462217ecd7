//! The rule tree of back-office menus and buttons, the roles bound to rules,
//! and the permission catalog.
//!
//! Binding a role to rules gives the role each rule's permission (marked
//! `from_rules`), so that a menu shown and the API check behind it always
//! agree; the permission goes when no bound rule needs it any more. A
//! permission given to the role explicitly stays.

use time::OffsetDateTime;
use uuid::Uuid;

use super::rows::corrupt;
use super::{
    AnyPool, Begin, ChangeTx, Result, Store, StoreError, finish_change, names_of, now, on_pool,
};
use crate::audit::Event;
use crate::model::{
    Action, CatalogModule, Module, Revision, RoleName, Rule, RuleKind, RuleName, RuleText,
};

#[derive(sqlx::FromRow)]
struct RuleRow {
    name: String,
    kind: String,
    parent: Option<String>,
    title: String,
    path: Option<String>,
    component: Option<String>,
    icon: Option<String>,
    weight: i32,
    hidden: bool,
    module: String,
    action: String,
}

impl TryFrom<RuleRow> for Rule {
    type Error = StoreError;
    fn try_from(row: RuleRow) -> Result<Self> {
        let text = |what: &'static str, v: Option<String>| {
            v.map(RuleText::parse).transpose().map_err(corrupt(what))
        };
        Ok(Rule {
            name: RuleName::parse(row.name).map_err(corrupt("rules.name"))?,
            kind: RuleKind::parse(&row.kind).map_err(corrupt("rules.kind"))?,
            parent: row
                .parent
                .map(RuleName::parse)
                .transpose()
                .map_err(corrupt("rules.parent"))?,
            title: RuleText::parse(row.title).map_err(corrupt("rules.title"))?,
            path: text("rules.path", row.path)?,
            component: text("rules.component", row.component)?,
            icon: text("rules.icon", row.icon)?,
            weight: row.weight,
            hidden: row.hidden,
            module: Module::parse(row.module).map_err(corrupt("rules.module"))?,
            action: Action::parse(row.action).map_err(corrupt("rules.action"))?,
        })
    }
}

/// The rule columns `RuleRow` reads (with the parent's name), then `$rest`.
macro_rules! select_rules {
    ($rest:literal) => {
        concat!(
            "SELECT r.name, r.kind, p.name AS parent, r.title, r.path, r.component, r.icon, r.weight, ",
            "r.hidden, r.module, r.action FROM rules r LEFT JOIN rules p ON p.id = r.parent_id ",
            $rest
        )
    };
}

/// `down(id)`: the rule found by `$start` and all its descendants; then `$rest`.
macro_rules! subtree {
    ($start:literal, $rest:literal) => {
        concat!(
            "WITH RECURSIVE down(id) AS (SELECT id FROM rules WHERE ",
            $start,
            " UNION SELECT r.id FROM rules r JOIN down ON r.parent_id = down.id) ",
            $rest
        )
    };
}

/// The statements that keep roles in line with the rules bound to them,
/// on a connection of either backend.
trait RulesTx {
    /// Brings the role's rule-given permissions in line with the rules
    /// bound to it. Answers whether any permission was added or removed.
    async fn resync_role(&mut self, role: Uuid, at: OffsetDateTime) -> Result<bool>;

    /// Resyncs each role, logging those whose permissions changed, whose
    /// names it answers.
    async fn resync_bound_roles(
        &mut self,
        revision: i64,
        roles: Vec<(Uuid, String)>,
        at: OffsetDateTime,
    ) -> Result<Vec<String>>;
}

/// Implements [`RulesTx`] for one backend's connection.
macro_rules! rules_tx {
    ($connection:ty) => {
        impl RulesTx for $connection {
            async fn resync_role(&mut self, role: Uuid, at: OffsetDateTime) -> Result<bool> {
                let wanted: Vec<(String, String)> = sqlx::query_as(
                    "SELECT DISTINCT r.module, r.action FROM role_rules rr JOIN rules r ON r.id = rr.rule_id \
                     WHERE rr.role_id = $1",
                )
                .bind(role)
                .fetch_all(&mut *self)
                .await?;
                let held: Vec<(Uuid, String, String)> = sqlx::query_as(
                    "SELECT id, module, action FROM role_permissions \
                     WHERE role_id = $1 AND from_rules AND scope_type = ''",
                )
                .bind(role)
                .fetch_all(&mut *self)
                .await?;
                let mut changed = false;
                for (id, module, action) in &held {
                    if !wanted.iter().any(|(m, a)| m == module && a == action) {
                        sqlx::query("DELETE FROM role_permissions WHERE id = $1")
                            .bind(id)
                            .execute(&mut *self)
                            .await?;
                        changed = true;
                    }
                }
                for (module, action) in &wanted {
                    let added = sqlx::query(
                        "INSERT INTO role_permissions (id, role_id, module, action, scope_type, scope_id, effect, created_at, from_rules) \
                         VALUES ($1, $2, $3, $4, '', '', 'allow', $5, TRUE) \
                         ON CONFLICT (role_id, module, action, scope_type, scope_id) DO NOTHING",
                    )
                    .bind(Uuid::new_v4())
                    .bind(role)
                    .bind(module)
                    .bind(action)
                    .bind(at)
                    .execute(&mut *self)
                    .await?
                    .rows_affected();
                    changed |= added == 1;
                }
                Ok(changed)
            }

            async fn resync_bound_roles(
                &mut self,
                revision: i64,
                roles: Vec<(Uuid, String)>,
                at: OffsetDateTime,
            ) -> Result<Vec<String>> {
                let mut changed_roles = Vec::new();
                for (role_id, role_name) in roles {
                    if self.resync_role(role_id, at).await? {
                        self.log_role(revision, &role_name).await?;
                        changed_roles.push(role_name);
                    }
                }
                Ok(changed_roles)
            }
        }
    };
}
rules_tx!(sqlx::SqliteConnection);
rules_tx!(sqlx::PgConnection);

/// What a change to rules did to roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesOutcome {
    pub revision: Revision,
    /// Roles whose permissions changed: the engine reloads them.
    pub roles: Vec<RoleName>,
}

fn role_names(names: Vec<String>) -> Result<Vec<RoleName>> {
    names
        .into_iter()
        .map(|n| RoleName::parse(n).map_err(corrupt("roles.name")))
        .collect()
}

fn rule_state(rule: &Rule) -> serde_json::Value {
    serde_json::to_value(rule).unwrap_or_default()
}

impl Store {
    /// Every rule, ordered by weight then name.
    pub async fn rules(&self) -> Result<Vec<Rule>> {
        const SQL: &str = select_rules!("ORDER BY r.weight, r.name");
        let rows: Vec<RuleRow> = on_pool!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await?);
        rows.into_iter().map(Rule::try_from).collect()
    }

    pub async fn rule(&self, name: &RuleName) -> Result<Option<Rule>> {
        const SQL: &str = select_rules!("WHERE r.name = $1");
        let row: Option<RuleRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(name.as_str())
            .fetch_optional(pool)
            .await?);
        row.map(Rule::try_from).transpose()
    }

    /// The roles bound to the rule or one of its descendants.
    pub async fn rule_roles(&self, name: &RuleName) -> Result<Vec<RoleName>> {
        let names: Vec<String> = on_pool!(self, |pool| sqlx::query_scalar(subtree!(
            "name = $1",
            "SELECT DISTINCT ro.name FROM role_rules rr JOIN down ON rr.rule_id = down.id \
             JOIN roles ro ON ro.id = rr.role_id ORDER BY ro.name"
        ))
        .bind(name.as_str())
        .fetch_all(pool)
        .await?);
        role_names(names)
    }

    /// The rules the role is bound to, by name.
    pub async fn role_rules(&self, role: &RoleName) -> Result<Vec<RuleName>> {
        let names: Vec<String> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT r.name FROM role_rules rr JOIN rules r ON r.id = rr.rule_id \
             JOIN roles ro ON ro.id = rr.role_id WHERE ro.name = $1 ORDER BY r.name"
        )
        .bind(role.as_str())
        .fetch_all(pool)
        .await?);
        names
            .into_iter()
            .map(|n| RuleName::parse(n).map_err(corrupt("rules.name")))
            .collect()
    }

    /// Adds a rule under its parent (which must exist). A new rule is bound
    /// to no role, so it changes nobody's permissions.
    pub async fn create_rule(&self, rule: &Rule) -> Result<()> {
        let at = now();
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let (out, event): (_, Option<Event>) = {
                let parent_id: Option<Uuid> = match &rule.parent {
                    Some(parent) => {
                        let id: Option<Uuid> =
                            sqlx::query_scalar("SELECT id FROM rules WHERE name = $1")
                                .bind(parent.as_str())
                                .fetch_optional(&mut *tx)
                                .await?;
                        Some(id.ok_or(StoreError::NotFound("parent rule"))?)
                    }
                    None => None,
                };
                let inserted = sqlx::query(
                "INSERT INTO rules (id, name, kind, parent_id, title, path, component, icon, weight, hidden, \
                 module, action, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) ON CONFLICT (name) DO NOTHING",
            )
            .bind(Uuid::new_v4())
            .bind(rule.name.as_str())
            .bind(rule.kind.as_str())
            .bind(parent_id)
            .bind(rule.title.as_str())
            .bind(rule.path.as_ref().map(RuleText::as_str))
            .bind(rule.component.as_ref().map(RuleText::as_str))
            .bind(rule.icon.as_ref().map(RuleText::as_str))
            .bind(rule.weight)
            .bind(rule.hidden)
            .bind(rule.module.as_str())
            .bind(rule.action.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
                if inserted == 0 {
                    return Err(StoreError::AlreadyExists("rule"));
                }
                let event = Event::new("rule.create", format!("rule:{}", rule.name))
                    .after(rule_state(rule));
                ((), Some(event))
            };
            if let Some(event) = event {
                tx.audit(None, event).await?;
            }
            tx.commit().await?;
            out
        });
        Ok(())
    }

    /// Replaces the rule `name` with `rule` (which may rename or move it).
    /// Moving a rule under itself or its own descendant is `Refused`. When
    /// the permission changes, the roles bound to the rule follow;
    /// `affected` are the roles whose holders see that.
    pub async fn update_rule(
        &self,
        name: &RuleName,
        rule: &Rule,
        affected: &[RoleName],
    ) -> Result<RulesOutcome> {
        let at = now();
        on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let existing: Option<RuleRow> = sqlx::query_as(select_rules!("WHERE r.name = $1"))
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let before = Rule::try_from(existing.ok_or(StoreError::NotFound("rule"))?)?;
            let id: Uuid = sqlx::query_scalar("SELECT id FROM rules WHERE name = $1")
                .bind(name.as_str())
                .fetch_one(&mut *tx)
                .await?;
            let parent_id: Option<Uuid> = match &rule.parent {
                Some(parent) => {
                    let found: Option<Uuid> =
                        sqlx::query_scalar("SELECT id FROM rules WHERE name = $1")
                            .bind(parent.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                    let parent_id = found.ok_or(StoreError::NotFound("parent rule"))?;
                    // Walk up from the new parent: meeting this rule would close a loop.
                    let under_itself: bool = sqlx::query_scalar(
                        "WITH RECURSIVE up(id, parent_id) AS ( \
                             SELECT id, parent_id FROM rules WHERE id = $1 \
                             UNION SELECT r.id, r.parent_id FROM rules r JOIN up ON r.id = up.parent_id) \
                         SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
                    )
                    .bind(parent_id)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if under_itself {
                        return Err(StoreError::Refused(format!(
                            "rule {name} cannot move under {parent}, which is itself or one of its descendants"
                        )));
                    }
                    Some(parent_id)
                }
                None => None,
            };
            let renamed = sqlx::query(
                "UPDATE rules SET name = $2, kind = $3, parent_id = $4, title = $5, path = $6, component = $7, \
                 icon = $8, weight = $9, hidden = $10, module = $11, action = $12, updated_at = $13 WHERE id = $1",
            )
            .bind(id)
            .bind(rule.name.as_str())
            .bind(rule.kind.as_str())
            .bind(parent_id)
            .bind(rule.title.as_str())
            .bind(rule.path.as_ref().map(RuleText::as_str))
            .bind(rule.component.as_ref().map(RuleText::as_str))
            .bind(rule.icon.as_ref().map(RuleText::as_str))
            .bind(rule.weight)
            .bind(rule.hidden)
            .bind(rule.module.as_str())
            .bind(rule.action.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await;
            match renamed {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(StoreError::AlreadyExists("rule"));
                }
                other => other?,
            };
            let bound: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT ro.id, ro.name FROM role_rules rr JOIN roles ro ON ro.id = rr.role_id WHERE rr.rule_id = $1",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let changed_roles = tx.resync_bound_roles(revision, bound, at).await?;
            if !changed_roles.is_empty() {
                tx.log_role_holders(revision, &names_of(affected)).await?;
            }
            tx.audit(
                Some(revision),
                Event::new("rule.update", format!("rule:{name}"))
                    .before(rule_state(&before))
                    .after(rule_state(rule)),
            )
            .await?;
            let revision = finish_change(tx, revision, true).await?;
            Ok(RulesOutcome {
                revision: Revision(revision),
                roles: role_names(changed_roles)?,
            })
        })
    }

    /// Deletes the rule; one with children only with `cascade`, and then
    /// its whole subtree. Bound roles lose what only those rules gave them.
    pub async fn delete_rule(
        &self,
        name: &RuleName,
        cascade: bool,
        affected: &[RoleName],
    ) -> Result<RulesOutcome> {
        let at = now();
        on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM rules WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let id = id.ok_or(StoreError::NotFound("rule"))?;
            let subtree: Vec<String> = sqlx::query_scalar(subtree!(
                "id = $1",
                "SELECT r.name FROM rules r JOIN down ON r.id = down.id ORDER BY r.name"
            ))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            if subtree.len() > 1 && !cascade {
                return Err(StoreError::Refused(format!(
                    "rule {name} has {} descendants: delete with ?cascade=true to delete them too",
                    subtree.len() - 1
                )));
            }
            let bound: Vec<(Uuid, String)> = sqlx::query_as(
                subtree!(
                    "id = $1",
                    "SELECT DISTINCT ro.id, ro.name FROM role_rules rr JOIN down ON rr.rule_id = down.id \
                     JOIN roles ro ON ro.id = rr.role_id"
                ),
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            // Holders are logged while their bindings still exist.
            tx.log_role_holders(revision, &names_of(affected)).await?;
            sqlx::query("DELETE FROM rules WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let changed_roles = tx.resync_bound_roles(revision, bound, at).await?;
            tx.audit(
                Some(revision),
                Event::new("rule.delete", format!("rule:{name}"))
                    .before(serde_json::json!({ "rules": subtree })),
            )
            .await?;
            let revision = finish_change(tx, revision, true).await?;
            Ok(RulesOutcome {
                revision: Revision(revision),
                roles: role_names(changed_roles)?,
            })
        })
    }

    /// Binds the role to exactly `rules` (each must exist) and brings its
    /// rule-given permissions in line.
    pub async fn set_role_rules(
        &self,
        role: &RoleName,
        rules: &[RuleName],
        affected: &[RoleName],
    ) -> Result<RulesOutcome> {
        let at = now();
        on_pool!(self, |pool| {
            let (mut tx, revision) = pool.begin_change().await?;
            let role_id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM roles WHERE name = $1")
                .bind(role.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let role_id = role_id.ok_or(StoreError::NotFound("role"))?;
            let before: Vec<String> = sqlx::query_scalar(
                "SELECT r.name FROM role_rules rr JOIN rules r ON r.id = rr.rule_id WHERE rr.role_id = $1 ORDER BY r.name",
            )
            .bind(role_id)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM role_rules WHERE role_id = $1")
                .bind(role_id)
                .execute(&mut *tx)
                .await?;
            for rule in rules {
                let rule_id: Option<Uuid> =
                    sqlx::query_scalar("SELECT id FROM rules WHERE name = $1")
                        .bind(rule.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                let rule_id = rule_id.ok_or(StoreError::NotFound("rule"))?;
                sqlx::query(
                    "INSERT INTO role_rules (role_id, rule_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(role_id)
                .bind(rule_id)
                .execute(&mut *tx)
                .await?;
            }
            let mut after: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
            after.sort();
            after.dedup();
            let changed_roles = tx
                .resync_bound_roles(revision, vec![(role_id, role.to_string())], at)
                .await?;
            if !changed_roles.is_empty() {
                tx.log_role_holders(revision, &names_of(affected)).await?;
            }
            let changed = before != after;
            if changed {
                tx.audit(
                    Some(revision),
                    Event::new("role.rules.set", format!("role:{role}"))
                        .before(serde_json::json!({ "rules": before }))
                        .after(serde_json::json!({ "rules": after })),
                )
                .await?;
            }
            let revision = finish_change(tx, revision, changed).await?;
            Ok(RulesOutcome {
                revision: Revision(revision),
                roles: role_names(changed_roles)?,
            })
        })
    }

    // ---- the catalog --------------------------------------------------------

    pub async fn catalog(&self) -> Result<Vec<CatalogModule>> {
        let (modules, actions): (Vec<(String, String)>, Vec<(String, String)>) =
            on_pool!(self, |pool| {
                let mut tx = pool.begin_read().await?;
                let modules = sqlx::query_as(
                    "SELECT module, description FROM catalog_modules ORDER BY module",
                )
                .fetch_all(&mut *tx)
                .await?;
                let actions = sqlx::query_as(
                    "SELECT module, action FROM catalog_actions ORDER BY module, action",
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.rollback().await?;
                (modules, actions)
            });
        modules
            .into_iter()
            .map(|(module, description)| {
                let actions = actions
                    .iter()
                    .filter(|(m, _)| *m == module)
                    .map(|(_, a)| {
                        Action::parse(a.clone()).map_err(corrupt("catalog_actions.action"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(CatalogModule {
                    module: Module::parse(module).map_err(corrupt("catalog_modules.module"))?,
                    description,
                    actions,
                })
            })
            .collect()
    }

    /// Declares the module with exactly these actions.
    pub async fn put_catalog_module(&self, declared: &CatalogModule) -> Result<()> {
        let module = declared.module.as_str();
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let (out, event): (_, Option<Event>) = {
                sqlx::query(
                    "INSERT INTO catalog_modules (module, description) VALUES ($1, $2) \
                 ON CONFLICT (module) DO UPDATE SET description = excluded.description",
                )
                .bind(module)
                .bind(&declared.description)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM catalog_actions WHERE module = $1")
                    .bind(module)
                    .execute(&mut *tx)
                    .await?;
                for action in &declared.actions {
                    sqlx::query(
                    "INSERT INTO catalog_actions (module, action) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(module)
                .bind(action.as_str())
                .execute(&mut *tx)
                .await?;
                }
                let event = Event::new("catalog.put", format!("module:{module}")).after(declared);
                ((), Some(event))
            };
            if let Some(event) = event {
                tx.audit(None, event).await?;
            }
            tx.commit().await?;
            out
        });
        Ok(())
    }

    pub async fn delete_catalog_module(&self, module: &Module) -> Result<bool> {
        Ok(on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let (out, event): (_, Option<Event>) = {
                let deleted = sqlx::query("DELETE FROM catalog_modules WHERE module = $1")
                    .bind(module.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                let event =
                    deleted.then(|| Event::new("catalog.delete", format!("module:{module}")));
                (deleted, event)
            };
            if let Some(event) = event {
                tx.audit(None, event).await?;
            }
            tx.commit().await?;
            out
        }))
    }

    /// Whether the catalog declares the module and the action (`*` stands
    /// for every action of a declared module).
    pub async fn is_declared(&self, module: &Module, action: &Action) -> Result<bool> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM catalog_modules m WHERE m.module = $1 AND ($2 = '*' OR EXISTS \
             (SELECT 1 FROM catalog_actions a WHERE a.module = m.module AND a.action = $2)))"
        )
        .bind(module.as_str())
        .bind(action.as_str())
        .fetch_one(pool)
        .await?
        }))
    }

    /// Modules and actions in use (by grants, role permissions or rules)
    /// that the catalog does not declare.
    pub async fn undeclared(&self) -> Result<Vec<(String, String)>> {
        Ok(on_pool!(self, |pool| sqlx::query_as(
            "SELECT DISTINCT module, action FROM ( \
                 SELECT module, action FROM permissions UNION \
                 SELECT module, action FROM role_permissions UNION \
                 SELECT module, action FROM rules) used \
             WHERE NOT EXISTS (SELECT 1 FROM catalog_modules m WHERE m.module = used.module AND \
                 (used.action = '*' OR EXISTS (SELECT 1 FROM catalog_actions a \
                  WHERE a.module = used.module AND a.action = used.action))) \
             ORDER BY module, action"
        )
        .fetch_all(pool)
        .await?))
    }
}
