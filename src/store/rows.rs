//! Rows as the database returns them, and their conversion into the model.
//! Stored values were parsed on their way in; parsing them again on the way
//! out turns a hand-edited or corrupt row into an error instead of a panic.

use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;
use crate::model::{
    Action, ApiClient, AuthentikSub, Capability, ClientName, ClientStatus, DisplayName, Effect,
    Email, Grant, Module, Origin, ParseError, PathPattern, Permission, Revision, Role,
    RoleAssignment, RoleName, RolePermission, Scope, ScopeId, ScopeType, User, UserId,
};

pub(super) fn corrupt(what: &str) -> impl FnOnce(ParseError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct UserRow {
    id: Uuid,
    authentik_sub: String,
    email: Option<String>,
    display_name: Option<String>,
    is_active: bool,
    revision: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        Ok(User {
            id: UserId(row.id),
            authentik_sub: AuthentikSub::parse(row.authentik_sub)
                .map_err(corrupt("users.authentik_sub"))?,
            email: row
                .email
                .map(Email::parse)
                .transpose()
                .map_err(corrupt("users.email"))?,
            display_name: row
                .display_name
                .map(DisplayName::parse)
                .transpose()
                .map_err(corrupt("users.display_name"))?,
            is_active: row.is_active,
            created_at: row.created_at,
            updated_at: row.updated_at,
            revision: Revision(row.revision),
        })
    }
}

fn permission(
    scope_type: String,
    scope_id: String,
    module: String,
    action: String,
) -> Result<Permission, StoreError> {
    Ok(Permission {
        scope_type: ScopeType::parse(scope_type).map_err(corrupt("permissions.scope_type"))?,
        scope_id: ScopeId::parse(scope_id).map_err(corrupt("permissions.scope_id"))?,
        module: Module::parse(module).map_err(corrupt("permissions.module"))?,
        action: Action::parse(action).map_err(corrupt("permissions.action"))?,
    })
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct GrantRow {
    #[sqlx(flatten)]
    grant: LoadedGrantRow,
    created_at: OffsetDateTime,
}

fn effect(column: &str, value: &str) -> Result<Effect, StoreError> {
    Effect::parse(value).ok_or_else(|| StoreError::Corrupt(format!("{column}: {value:?}")))
}

fn role_name(column: &str, value: String) -> Result<RoleName, StoreError> {
    RoleName::parse(value).map_err(corrupt(column))
}

impl TryFrom<GrantRow> for Grant {
    type Error = StoreError;
    fn try_from(row: GrantRow) -> Result<Self, StoreError> {
        let grant = row.grant.parse()?;
        Ok(Grant {
            id: grant.id,
            user_id: grant.user_id,
            permission: grant.permission,
            effect: grant.effect,
            created_at: row.created_at,
        })
    }
}

/// Allowlists are stored as JSON arrays of strings: one portable column type.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ClientRow {
    pub client_key: String,
    pub name: String,
    pub api_key_hash: String,
    pub status: String,
    pub expires_at: Option<OffsetDateTime>,
    pub allowed_origins: String,
    pub allowed_ips: String,
    pub allowed_paths: String,
    pub rate_limit_per_minute: Option<i32>,
    pub capabilities: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

fn to_json<T: ToString>(items: &[T]) -> String {
    let strings: Vec<String> = items.iter().map(ToString::to_string).collect();
    serde_json::to_string(&strings).expect("a list of strings serialises")
}

fn from_json<T>(
    column: &str,
    json: &str,
    parse: impl Fn(String) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let strings: Vec<String> = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("api_clients.{column}: {e}")))?;
    strings
        .into_iter()
        .map(|s| {
            parse(s.clone())
                .ok_or_else(|| StoreError::Corrupt(format!("api_clients.{column}: {s:?}")))
        })
        .collect()
}

impl From<&ApiClient> for ClientRow {
    fn from(c: &ApiClient) -> Self {
        ClientRow {
            client_key: c.client_key.clone(),
            name: c.name.to_string(),
            api_key_hash: c.api_key_hash.clone(),
            status: c.status.as_str().to_owned(),
            expires_at: c.expires_at,
            allowed_origins: to_json(&c.allowed_origins),
            allowed_ips: to_json(&c.allowed_ips),
            allowed_paths: to_json(&c.allowed_paths),
            rate_limit_per_minute: c
                .rate_limit_per_minute
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            capabilities: to_json(&c.capabilities),
            created_at: c.created_at,
            last_used_at: c.last_used_at,
        }
    }
}

impl TryFrom<ClientRow> for ApiClient {
    type Error = StoreError;
    fn try_from(row: ClientRow) -> Result<Self, StoreError> {
        Ok(ApiClient {
            name: ClientName::parse(row.name).map_err(corrupt("api_clients.name"))?,
            status: ClientStatus::parse(&row.status).ok_or_else(|| {
                StoreError::Corrupt(format!("api_clients.status: {:?}", row.status))
            })?,
            allowed_origins: from_json("allowed_origins", &row.allowed_origins, |s| {
                Origin::parse(s).ok()
            })?,
            allowed_ips: from_json("allowed_ips", &row.allowed_ips, |s| s.parse().ok())?,
            allowed_paths: from_json("allowed_paths", &row.allowed_paths, |s| {
                PathPattern::parse(s).ok()
            })?,
            rate_limit_per_minute: row
                .rate_limit_per_minute
                .and_then(|n| u32::try_from(n).ok()),
            capabilities: from_json("capabilities", &row.capabilities, |s| Capability::parse(&s))?,
            client_key: row.client_key,
            api_key_hash: row.api_key_hash,
            expires_at: row.expires_at,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct NameRow {
    name: String,
}

impl NameRow {
    pub fn role_name(self) -> Result<RoleName, StoreError> {
        role_name("roles.name", self.name)
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct RoleRow {
    name: String,
    description: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl TryFrom<RoleRow> for Role {
    type Error = StoreError;
    fn try_from(row: RoleRow) -> Result<Self, StoreError> {
        Ok(Role {
            name: role_name("roles.name", row.name)?,
            description: row.description,
            parents: Vec::new(),
            permissions: Vec::new(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct ParentRow {
    role: String,
    parent: String,
}

impl ParentRow {
    pub fn names(self) -> Result<(RoleName, RoleName), StoreError> {
        Ok((
            role_name("role_parents.role", self.role)?,
            role_name("role_parents.parent", self.parent)?,
        ))
    }
}

fn scope(column: &str, scope_type: String, scope_id: String) -> Result<Scope, StoreError> {
    let scope_id = ScopeId::parse(scope_id).map_err(corrupt(column))?;
    Scope::parse(scope_type, scope_id).map_err(corrupt(column))
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct RolePermissionRow {
    role: String,
    module: String,
    action: String,
    scope_type: String,
    scope_id: String,
    effect: String,
}

impl RolePermissionRow {
    pub fn parse(self) -> Result<(RoleName, RolePermission), StoreError> {
        let pinned = !self.scope_type.is_empty();
        Ok((
            role_name("role_permissions.role", self.role)?,
            RolePermission {
                module: Module::parse(self.module).map_err(corrupt("role_permissions.module"))?,
                action: Action::parse(self.action).map_err(corrupt("role_permissions.action"))?,
                effect: effect("role_permissions.effect", &self.effect)?,
                scope: if pinned {
                    Some(scope(
                        "role_permissions.scope",
                        self.scope_type,
                        self.scope_id,
                    )?)
                } else {
                    None
                },
            },
        ))
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct AssignmentRow {
    user_id: Uuid,
    role: String,
    scope_type: String,
    scope_id: String,
}

impl AssignmentRow {
    pub fn parse(self) -> Result<(UserId, RoleAssignment), StoreError> {
        Ok((
            UserId(self.user_id),
            RoleAssignment {
                role: role_name("role_assignments.role", self.role)?,
                scope: scope("role_assignments.scope", self.scope_type, self.scope_id)?,
            },
        ))
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct LoadedGrantRow {
    id: Uuid,
    user_id: Uuid,
    scope_type: String,
    scope_id: String,
    module: String,
    action: String,
    effect: String,
}

impl LoadedGrantRow {
    pub fn parse(self) -> Result<super::LoadedGrant, StoreError> {
        Ok(super::LoadedGrant {
            id: self.id,
            user_id: UserId(self.user_id),
            permission: permission(self.scope_type, self.scope_id, self.module, self.action)?,
            effect: effect("permissions.effect", &self.effect)?,
        })
    }
}
