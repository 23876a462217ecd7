//! Every change to users, grants and roles: written to the store in one
//! transaction, then applied to the index, one change at a time so that the
//! index follows the store's revision order.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::access::Engine;
use super::{Authority, ServiceError, is_reserved_module};
use crate::authz::index::Index;
use crate::model::{
    Action, AssignmentSource, AuthentikSub, CatalogModule, Effect, Module, Permission, Revision,
    Role, RoleAssignment, RoleName, RolePermission, Rule, RuleName, ScopeId, ScopeType, User,
    UserId, UserUpsert,
};
use crate::store::{ChangeOutcome, ChangesSince, GrantOutcome, RevokeOutcome, RulesOutcome, Store};

/// How many revisions of the change log are kept; older `since` values get 410.
const CHANGE_LOG_KEEP: i64 = 100_000;

/// Whether grants, role permissions and rules may name modules and actions
/// the catalog does not declare.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CatalogMode {
    /// Accepted, and listed as undeclared.
    #[default]
    Open,
    /// Refused (422).
    Strict,
}

#[derive(Clone)]
pub struct Directory {
    store: Store,
    engine: Engine,
    catalog: CatalogMode,
    /// Serialises changes: each reads the index (which roles a change
    /// reaches), writes the store, then updates the index.
    writer: Arc<Mutex<()>>,
}

fn role_names(names: Vec<Arc<str>>) -> Vec<RoleName> {
    names
        .iter()
        .filter_map(|n| RoleName::parse(n.as_ref()).ok())
        .collect()
}

fn pin(permission: &RolePermission) -> Option<(&str, &str)> {
    permission
        .scope
        .as_ref()
        .map(|s| (s.scope_type.as_str(), s.scope_id.as_str()))
}

impl Directory {
    pub fn new(store: Store, engine: Engine) -> Self {
        Self {
            store,
            engine,
            catalog: CatalogMode::Open,
            writer: Arc::default(),
        }
    }

    pub fn with_catalog(mut self, mode: CatalogMode) -> Self {
        self.catalog = mode;
        self
    }

    pub fn catalog_mode(&self) -> CatalogMode {
        self.catalog
    }

    /// Under a strict catalog, refuses a module or action it does not declare.
    async fn require_declared(&self, module: &Module, action: &Action) -> Result<(), ServiceError> {
        if self.catalog == CatalogMode::Strict && !self.store.is_declared(module, action).await? {
            return Err(ServiceError::Undeclared(format!(
                "{module}/{action} is not declared in the catalog (MEMBERD_CATALOG=strict): declare it under /admin/catalog first"
            )));
        }
        Ok(())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// memberd's own module is given and taken only by a holder of it.
    fn guard_module(&self, authority: Authority, module: &Module) -> Result<(), ServiceError> {
        if is_reserved_module(module.as_str()) {
            authority.require_full(|| format!("module {module} is memberd's own authority"))?;
        }
        Ok(())
    }

    /// A role that carries memberd's own authority (itself or through a
    /// parent) is held, changed and inherited only by the will of a holder.
    fn guard_role(&self, authority: Authority, role: &RoleName) -> Result<(), ServiceError> {
        if authority == Authority::Full {
            return Ok(());
        }
        if self
            .engine
            .inspect(|ix| ix.role_reaches(role.as_str(), is_reserved_module))
        {
            authority.require_full(|| format!("role {role} carries memberd's own authority"))?;
        }
        Ok(())
    }

    pub async fn upsert_user(&self, upsert: &UserUpsert) -> Result<User, ServiceError> {
        let _writer = self.writer.lock().await;
        let outcome = self.store.upsert_user(upsert).await?;
        if outcome.changed {
            let user = &outcome.user;
            self.engine.apply(user.revision, |ix| {
                ix.upsert_user(
                    user.id,
                    user.authentik_sub.as_str(),
                    user.is_active,
                    user.revision.0,
                );
            });
            tracing::info!(user_id = %user.id, revision = %user.revision, "user upserted");
            self.maybe_prune(user.revision).await;
        }
        Ok(outcome.user)
    }

    pub async fn grant(
        &self,
        authority: Authority,
        sub: &AuthentikSub,
        permission: &Permission,
        effect: Effect,
    ) -> Result<GrantOutcome, ServiceError> {
        self.guard_module(authority, &permission.module)?;
        self.require_declared(&permission.module, &permission.action)
            .await?;
        let _writer = self.writer.lock().await;
        let outcome = self.store.grant(sub, permission, effect).await?;
        if outcome.changed {
            let g = &outcome.grant;
            self.engine.apply(outcome.revision, |ix| {
                ix.touch_user(g.user_id, outcome.revision.0);
                ix.set_direct(
                    g.user_id,
                    g.id,
                    g.permission.scope_type.as_str(),
                    g.permission.scope_id.as_str(),
                    g.permission.module.as_str(),
                    g.permission.action.as_str(),
                    g.effect,
                )
            })?;
            tracing::info!(user_id = %g.user_id, revision = %outcome.revision, effect = g.effect.as_str(), "permission granted");
        }
        Ok(outcome)
    }

    pub async fn revoke(
        &self,
        authority: Authority,
        sub: &AuthentikSub,
        permission: &Permission,
    ) -> Result<RevokeOutcome, ServiceError> {
        self.guard_module(authority, &permission.module)?;
        let _writer = self.writer.lock().await;
        let outcome = self.store.revoke(sub, permission).await?;
        if let Some(g) = &outcome.revoked {
            self.engine.apply(outcome.revision, |ix| {
                ix.touch_user(g.user_id, outcome.revision.0);
                ix.remove_direct(
                    g.user_id,
                    g.permission.scope_type.as_str(),
                    g.permission.scope_id.as_str(),
                    g.permission.module.as_str(),
                    g.permission.action.as_str(),
                );
            });
            tracing::info!(user_id = %g.user_id, revision = %outcome.revision, "permission revoked");
        }
        Ok(outcome)
    }

    pub async fn revision(&self) -> Result<Revision, ServiceError> {
        Ok(self.store.current_revision().await?)
    }

    // ---- roles ----------------------------------------------------------------

    pub async fn roles(&self) -> Result<Vec<Role>, ServiceError> {
        Ok(self.store.roles().await?)
    }

    pub async fn role(&self, name: &RoleName) -> Result<Role, ServiceError> {
        self.store
            .role(name)
            .await?
            .ok_or(ServiceError::NotFound("role"))
    }

    /// The subjects holding the role, directly or through a role inheriting it.
    pub fn holders(&self, name: &RoleName) -> Vec<Arc<str>> {
        let users = self.engine.inspect(|ix| ix.holders(name.as_str()));
        self.engine.subs_of(&users)
    }

    pub async fn create_role(
        &self,
        authority: Authority,
        name: &RoleName,
        description: &str,
        parents: &[RoleName],
    ) -> Result<Revision, ServiceError> {
        for parent in parents {
            self.guard_role(authority, parent)?;
        }
        let _writer = self.writer.lock().await;
        if self.engine.inspect(|ix| ix.role_exists(name.as_str())) {
            return Err(ServiceError::Conflict("role"));
        }
        self.known_roles(parents)?;
        let revision = self.store.create_role(name, description, parents).await?;
        let parents: Vec<&str> = parents.iter().map(RoleName::as_str).collect();
        self.engine.apply(revision, |ix| {
            ix.add_role(name.as_str());
            ix.set_parents(name.as_str(), &parents)
        })?;
        tracing::info!(role = %name, %revision, "role created");
        Ok(revision)
    }

    /// Changes what is given. New parents that would close a cycle are refused.
    pub async fn update_role(
        &self,
        authority: Authority,
        name: &RoleName,
        description: Option<&str>,
        parents: Option<&[RoleName]>,
    ) -> Result<Revision, ServiceError> {
        self.guard_role(authority, name)?;
        for parent in parents.unwrap_or_default() {
            self.guard_role(authority, parent)?;
        }
        let _writer = self.writer.lock().await;
        self.known_roles(parents.unwrap_or_default())?;
        let parent_names: Option<Vec<&str>> =
            parents.map(|ps| ps.iter().map(RoleName::as_str).collect());
        let affected = self
            .engine
            .inspect(|ix| -> Result<Vec<RoleName>, ServiceError> {
                if !ix.role_exists(name.as_str()) {
                    return Err(ServiceError::NotFound("role"));
                }
                if let Some(parents) = &parent_names {
                    if ix.would_cycle(name.as_str(), parents)? {
                        return Err(ServiceError::Invalid(format!(
                            "role {name} would inherit from itself"
                        )));
                    }
                }
                Ok(role_names(ix.roles_including(name.as_str())))
            })?;
        let outcome = self
            .store
            .update_role(name, description, parents, &affected)
            .await?;
        if let Some(parents) = &parent_names {
            let holders = self.engine.inspect(|ix| ix.holders(name.as_str()));
            self.engine.apply(outcome.revision, |ix| {
                ix.set_parents(name.as_str(), parents)?;
                for user in holders.iter().chain(&ix.holders(name.as_str())) {
                    ix.touch_user(*user, outcome.revision.0);
                }
                Ok::<_, ServiceError>(())
            })?;
        } else {
            self.engine.apply(outcome.revision, |_| ());
        }
        tracing::info!(role = %name, revision = %outcome.revision, "role updated");
        Ok(outcome.revision)
    }

    pub async fn delete_role(
        &self,
        authority: Authority,
        name: &RoleName,
    ) -> Result<Revision, ServiceError> {
        self.guard_role(authority, name)?;
        let _writer = self.writer.lock().await;
        let (affected, holders) = self.engine.inspect(|ix| {
            (
                role_names(ix.roles_including(name.as_str())),
                ix.holders(name.as_str()),
            )
        });
        let revision = self.store.delete_role(name, &affected).await?;
        self.engine.apply(revision, |ix| {
            ix.remove_role(name.as_str());
            touch_all(ix, &holders, revision);
        });
        tracing::info!(role = %name, %revision, "role deleted");
        Ok(revision)
    }

    pub async fn set_role_permission(
        &self,
        authority: Authority,
        role: &RoleName,
        permission: &RolePermission,
    ) -> Result<ChangeOutcome, ServiceError> {
        self.guard_module(authority, &permission.module)?;
        self.guard_role(authority, role)?;
        self.require_declared(&permission.module, &permission.action)
            .await?;
        let _writer = self.writer.lock().await;
        let (affected, holders) = self.affected_by(role)?;
        let outcome = self
            .store
            .set_role_permission(role, permission, &affected)
            .await?;
        if outcome.changed {
            self.engine.apply(outcome.revision, |ix| {
                touch_all(ix, &holders, outcome.revision);
                ix.set_role_permission(
                    role.as_str(),
                    permission.module.as_str(),
                    permission.action.as_str(),
                    pin(permission),
                    permission.effect,
                )
            })?;
        }
        Ok(outcome)
    }

    pub async fn remove_role_permission(
        &self,
        authority: Authority,
        role: &RoleName,
        permission: &RolePermission,
    ) -> Result<ChangeOutcome, ServiceError> {
        self.guard_module(authority, &permission.module)?;
        self.guard_role(authority, role)?;
        let _writer = self.writer.lock().await;
        let (affected, holders) = self.affected_by(role)?;
        let outcome = self
            .store
            .remove_role_permission(role, permission, &affected)
            .await?;
        if outcome.changed {
            self.engine.apply(outcome.revision, |ix| {
                touch_all(ix, &holders, outcome.revision);
                ix.remove_role_permission(
                    role.as_str(),
                    permission.module.as_str(),
                    permission.action.as_str(),
                    pin(permission),
                );
            });
        }
        Ok(outcome)
    }

    fn known_roles(&self, roles: &[RoleName]) -> Result<(), ServiceError> {
        self.engine.inspect(
            |ix| match roles.iter().find(|r| !ix.role_exists(r.as_str())) {
                Some(unknown) => Err(ServiceError::Invalid(format!(
                    "no role named {unknown} to inherit from"
                ))),
                None => Ok(()),
            },
        )
    }

    fn affected_by(&self, role: &RoleName) -> Result<(Vec<RoleName>, Vec<UserId>), ServiceError> {
        self.engine.inspect(|ix| {
            if !ix.role_exists(role.as_str()) {
                return Err(ServiceError::NotFound("role"));
            }
            Ok((
                role_names(ix.roles_including(role.as_str())),
                ix.holders(role.as_str()),
            ))
        })
    }

    pub async fn assign_role(
        &self,
        authority: Authority,
        source: AssignmentSource,
        sub: &AuthentikSub,
        assignment: &RoleAssignment,
    ) -> Result<ChangeOutcome, ServiceError> {
        self.guard_role(authority, &assignment.role)?;
        let _writer = self.writer.lock().await;
        let (user, outcome) = self.store.assign_role(source, sub, assignment).await?;
        if outcome.changed {
            self.engine.apply(outcome.revision, |ix| {
                ix.touch_user(user, outcome.revision.0);
                ix.assign(
                    user,
                    assignment.role.as_str(),
                    &assignment.scope.scope_type,
                    assignment.scope.scope_id.as_str(),
                )
            })?;
        }
        Ok(outcome)
    }

    /// Writes one SCIM write to a group in one transaction, then brings the
    /// roles its members came to hold, or let go of, into the index. Who
    /// linked the group to its role held `admin`: membership carries the
    /// role on that authority, not the SCIM client's.
    pub async fn change_scim_group(
        &self,
        group: uuid::Uuid,
        change: &crate::store::GroupChange<'_>,
    ) -> Result<(), ServiceError> {
        let _writer = self.writer.lock().await;
        let applied = self.store.change_scim_group(group, change).await?;
        if applied.held.is_empty() {
            return Ok(());
        }
        let revision = applied.revision;
        self.engine.apply(revision, |ix| {
            for (user, role, holds) in &applied.held {
                ix.touch_user(*user, revision.0);
                if *holds {
                    ix.assign(*user, role.as_str(), "*", "*")?;
                } else {
                    ix.unassign(*user, role.as_str(), "*", "*");
                }
            }
            Ok::<(), crate::authz::index::IndexError>(())
        })?;
        tracing::info!(%group, %revision, changed = applied.held.len(), "SCIM group's role holders changed");
        Ok(())
    }

    pub async fn unassign_role(
        &self,
        authority: Authority,
        source: AssignmentSource,
        sub: &AuthentikSub,
        assignment: &RoleAssignment,
    ) -> Result<ChangeOutcome, ServiceError> {
        self.guard_role(authority, &assignment.role)?;
        let _writer = self.writer.lock().await;
        let (user, outcome) = self.store.unassign_role(source, sub, assignment).await?;
        if outcome.changed {
            self.engine.apply(outcome.revision, |ix| {
                ix.touch_user(user, outcome.revision.0);
                ix.unassign(
                    user,
                    assignment.role.as_str(),
                    &assignment.scope.scope_type,
                    assignment.scope.scope_id.as_str(),
                );
            });
        }
        Ok(outcome)
    }

    // ---- rules (menus and buttons) --------------------------------------------

    pub async fn rules(&self) -> Result<Vec<Rule>, ServiceError> {
        Ok(self.store.rules().await?)
    }

    /// Everything an operator sees of one user: the row, direct grants,
    /// effective permissions and roles, local account and identities.
    pub async fn user_detail(&self, sub: &AuthentikSub) -> Result<UserDetail, ServiceError> {
        let user = self
            .store
            .user_by_sub(sub)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        let grants = self.store.grants_of(user.id).await?;
        let snapshot = self.engine.snapshot(&super::access::Subject::Id(user.id))?;
        let account = self.store.account_by_user(user.id).await?;
        let identities = self.store.identities_of(user.id).await?;
        Ok(UserDetail {
            user,
            grants,
            snapshot,
            account,
            identities,
        })
    }

    /// What `user` (nobody: nothing) sees of the rule tree in a scope: the
    /// directories and menus whose permission they hold there, with their
    /// ancestors, and the buttons. The revision is read first, so the view
    /// is at least as new as the revision it reports.
    pub async fn menu_view(
        &self,
        user: Option<UserId>,
        scope_type: &ScopeType,
        scope_id: &ScopeId,
    ) -> Result<super::menus::MenuView, ServiceError> {
        let revision = self.engine.revision();
        let rules = self.store.rules().await?;
        let allowed = |module: &Module, action: &Action| {
            user.is_some_and(|id| {
                self.engine.check(
                    &super::access::Subject::Id(id),
                    &crate::authz::index::Request {
                        scope_type: scope_type.as_str(),
                        scope_id: scope_id.as_str(),
                        module: module.as_str(),
                        action: action.as_str(),
                    },
                )
            })
        };
        Ok(super::menus::MenuView {
            menus: super::menus::menu_tree(&rules, allowed),
            buttons: super::menus::buttons(&rules, allowed),
            revision,
        })
    }

    /// Users whose subject, email or display name contains `search` (any
    /// case), in subject order after `cursor`, at most `limit`.
    pub async fn users_page(
        &self,
        search: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>, ServiceError> {
        Ok(self.store.users_page(search, cursor, limit).await?)
    }

    /// The user with this subject, if any.
    pub async fn user(&self, sub: &AuthentikSub) -> Result<Option<User>, ServiceError> {
        Ok(self.store.user_by_sub(sub).await?)
    }

    /// The user's id, by subject.
    pub async fn user_id_of(&self, sub: &AuthentikSub) -> Result<UserId, ServiceError> {
        self.store
            .user_by_sub(sub)
            .await?
            .map(|u| u.id)
            .ok_or(ServiceError::NotFound("user"))
    }

    /// The (issuer, subject) identities linked to a user.
    pub async fn identities(
        &self,
        user: UserId,
    ) -> Result<Vec<crate::store::Identity>, ServiceError> {
        Ok(self.store.identities_of(user).await?)
    }

    /// Links an identity-provider identity to a user, so that its tokens
    /// open that user; whether it was new. `Conflict("identity")` when it
    /// belongs to another user.
    pub async fn link_identity(
        &self,
        issuer: &str,
        subject: &str,
        user: UserId,
    ) -> Result<bool, ServiceError> {
        for (field, value) in [("issuer", issuer), ("subject", subject)] {
            if value.trim().is_empty() || value.chars().count() > 1024 {
                return Err(ServiceError::InvalidField {
                    field,
                    message: format!("{field} must be 1-1024 characters"),
                });
            }
        }
        match self.store.link_identity(issuer, subject, user).await {
            Err(crate::store::StoreError::AlreadyExists(_)) => {
                Err(ServiceError::Conflict("identity"))
            }
            other => Ok(other?),
        }
    }

    /// The roles bound to a rule.
    pub async fn rule_roles(&self, name: &RuleName) -> Result<Vec<RoleName>, ServiceError> {
        Ok(self.store.rule_roles(name).await?)
    }

    pub async fn rule(&self, name: &RuleName) -> Result<Rule, ServiceError> {
        self.store
            .rule(name)
            .await?
            .ok_or(ServiceError::NotFound("rule"))
    }

    pub async fn create_rule(&self, authority: Authority, rule: &Rule) -> Result<(), ServiceError> {
        self.guard_module(authority, &rule.module)?;
        self.require_declared(&rule.module, &rule.action).await?;
        let _writer = self.writer.lock().await;
        self.store.create_rule(rule).await?;
        tracing::info!(rule = %rule.name, "rule created");
        Ok(())
    }

    /// Replaces the rule; roles bound to it follow a change of its permission.
    pub async fn update_rule(
        &self,
        authority: Authority,
        name: &RuleName,
        rule: &Rule,
    ) -> Result<Revision, ServiceError> {
        self.guard_module(authority, &rule.module)?;
        self.guard_rules(authority, std::slice::from_ref(name))
            .await?;
        self.require_declared(&rule.module, &rule.action).await?;
        let _writer = self.writer.lock().await;
        let affected = self.affected_by_rule(name).await?;
        let outcome = self.store.update_rule(name, rule, &affected).await?;
        self.reload_roles(&outcome).await?;
        tracing::info!(rule = %name, revision = %outcome.revision, "rule updated");
        Ok(outcome.revision)
    }

    pub async fn delete_rule(
        &self,
        authority: Authority,
        name: &RuleName,
        cascade: bool,
    ) -> Result<Revision, ServiceError> {
        self.guard_rules(authority, std::slice::from_ref(name))
            .await?;
        let _writer = self.writer.lock().await;
        let affected = self.affected_by_rule(name).await?;
        let outcome = self.store.delete_rule(name, cascade, &affected).await?;
        self.reload_roles(&outcome).await?;
        tracing::info!(rule = %name, revision = %outcome.revision, "rule deleted");
        Ok(outcome.revision)
    }

    pub async fn role_rules(&self, role: &RoleName) -> Result<Vec<RuleName>, ServiceError> {
        self.role(role).await?;
        Ok(self.store.role_rules(role).await?)
    }

    /// Binds the role to exactly these rules: the role holds their permissions.
    pub async fn set_role_rules(
        &self,
        authority: Authority,
        role: &RoleName,
        rules: &[RuleName],
    ) -> Result<Revision, ServiceError> {
        self.guard_role(authority, role)?;
        if authority == Authority::Delegated {
            // The rules bound now, and those bound before (which the change
            // takes away), checked in one pass over the tree.
            let mut touched = self.store.role_rules(role).await?;
            touched.extend_from_slice(rules);
            self.guard_rules(authority, &touched).await?;
        }
        let _writer = self.writer.lock().await;
        let (affected, _) = self.affected_by(role)?;
        let outcome = self.store.set_role_rules(role, rules, &affected).await?;
        self.reload_roles(&outcome).await?;
        Ok(outcome.revision)
    }

    /// Rules (with their subtrees, which a deletion takes along) that reveal
    /// memberd's own module are bound, changed and deleted only by a holder.
    async fn guard_rules(
        &self,
        authority: Authority,
        names: &[RuleName],
    ) -> Result<(), ServiceError> {
        if authority == Authority::Full {
            return Ok(());
        }
        let rules = self.store.rules().await?;
        let mut pending: Vec<&RuleName> = names.iter().collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(name) = pending.pop() {
            if !seen.insert(name) {
                continue;
            }
            let Some(rule) = rules.iter().find(|r| &r.name == name) else {
                continue;
            };
            self.guard_module(authority, &rule.module)?;
            pending.extend(
                rules
                    .iter()
                    .filter(|r| r.parent.as_ref() == Some(name))
                    .map(|r| &r.name),
            );
        }
        Ok(())
    }

    /// The roles bound to the rule or its descendants, and every role inheriting one.
    async fn affected_by_rule(&self, name: &RuleName) -> Result<Vec<RoleName>, ServiceError> {
        let bound = self.store.rule_roles(name).await?;
        Ok(self.engine.inspect(|ix| {
            let mut names: Vec<RoleName> = bound
                .iter()
                .flat_map(|role| role_names(ix.roles_including(role.as_str())))
                .collect();
            names.sort();
            names.dedup();
            names
        }))
    }

    /// Brings roles whose permissions the store changed into the index.
    async fn reload_roles(&self, outcome: &RulesOutcome) -> Result<(), ServiceError> {
        let mut roles = Vec::with_capacity(outcome.roles.len());
        for name in &outcome.roles {
            roles.push(self.role(name).await?);
        }
        self.engine.apply(outcome.revision, |ix| {
            for role in &roles {
                replace_permissions(ix, role, outcome.revision)?;
            }
            Ok::<_, ServiceError>(())
        })
    }

    // ---- the catalog -------------------------------------------------------------

    pub async fn catalog(&self) -> Result<Vec<CatalogModule>, ServiceError> {
        Ok(self.store.catalog().await?)
    }

    pub async fn undeclared(&self) -> Result<Vec<(String, String)>, ServiceError> {
        Ok(self.store.undeclared().await?)
    }

    pub async fn declare(
        &self,
        authority: Authority,
        module: &CatalogModule,
    ) -> Result<(), ServiceError> {
        self.guard_module(authority, &module.module)?;
        Ok(self.store.put_catalog_module(module).await?)
    }

    pub async fn undeclare(
        &self,
        authority: Authority,
        module: &Module,
    ) -> Result<(), ServiceError> {
        self.guard_module(authority, module)?;
        if self.store.delete_catalog_module(module).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound("module"))
        }
    }

    // ---- following other processes ------------------------------------------

    /// Brings the index up to date with what other processes (other
    /// instances, the CLI) committed. Holds the writer lock, so that no local
    /// change interleaves with the reload. Answers the revision now published.
    pub async fn catch_up(&self) -> Result<Revision, ServiceError> {
        let _writer = self.writer.lock().await;
        let since = self.engine.revision();
        match self.store.policy_changes_since(since).await? {
            Some(delta) if delta.revision <= since => {}
            Some(delta) => match self.engine.apply_delta(&delta) {
                Ok(()) => tracing::debug!(
                    from = %since,
                    to = %delta.revision,
                    roles = delta.roles.len(),
                    users = delta.users.len(),
                    "caught up with changes made elsewhere"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "changes made elsewhere did not apply; recompiling the policy");
                    self.engine.reload(&self.store).await?;
                }
            },
            None => {
                tracing::info!(from = %since, "the change log no longer reaches back: recompiling the policy");
                self.engine.reload(&self.store).await?;
            }
        }
        Ok(self.engine.revision())
    }

    /// The subjects whose effective permissions changed after `since`.
    pub async fn changes_since(&self, since: Revision) -> Result<Changes, ServiceError> {
        Ok(match self.store.changes_since(since).await? {
            ChangesSince::Gone { oldest } => Changes::Gone { oldest },
            ChangesSince::Changed { users, revision } => Changes::Changed {
                subjects: self.engine.subs_of(&users),
                revision,
            },
        })
    }

    /// Keeps the change log bounded; runs every thousand revisions.
    async fn maybe_prune(&self, revision: Revision) {
        if revision.0 % 1000 == 0 && revision.0 > CHANGE_LOG_KEEP {
            if let Err(e) = self
                .store
                .prune_change_log(Revision(revision.0 - CHANGE_LOG_KEEP))
                .await
            {
                tracing::warn!(error = %e, "could not prune the change log");
            }
        }
    }
}

/// Replaces the role's permissions in the index with the stored ones, and
/// marks its holders changed.
pub(super) fn replace_permissions(
    ix: &mut Index,
    role: &Role,
    revision: Revision,
) -> Result<(), ServiceError> {
    let holders = ix.holders(role.name.as_str());
    ix.replace_role_permissions(
        role.name.as_str(),
        role.permissions
            .iter()
            .map(|p| (p.module.as_str(), p.action.as_str(), pin(p), p.effect)),
    )?;
    touch_all(ix, &holders, revision);
    Ok(())
}

fn touch_all(ix: &mut Index, users: &[UserId], revision: Revision) {
    for user in users {
        ix.touch_user(*user, revision.0);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    Changed {
        subjects: Vec<Arc<str>>,
        revision: Revision,
    },
    Gone {
        oldest: Revision,
    },
}

/// One user as an operator sees them (`Directory::user_detail`).
pub struct UserDetail {
    pub user: User,
    pub grants: Vec<crate::model::Grant>,
    pub snapshot: crate::authz::index::EffectiveSnapshot,
    pub account: Option<crate::model::LocalAccount>,
    pub identities: Vec<crate::store::Identity>,
}
