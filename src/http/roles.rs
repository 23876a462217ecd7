//! Roles and role assignments, for authenticated API clients.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{AdminCaller, JsonBody, path_param, subject_param};
use super::openapi::{Api, Auth, Doc};
use crate::model::{
    Action, Effect, Module, RoleAssignment, RoleName, RolePermission, Scope, ScopeId,
};
use crate::model::{AssignmentSource, AuthentikSub, Capability, Description, Revision, Role};
use crate::service::access::Subject;
use crate::store::ChangeOutcome;

pub fn routes() -> Api {
    use Auth::Admin;
    Api::new("roles")
        .route(
            "/admin/roles",
            get(list).post(create),
            &[
                Doc::get("All roles", Admin(Capability::Read)).answers::<RoleList>(&[200]),
                Doc::post("Create a role (201)", Admin(Capability::RolesWrite))
                    .takes::<CreateRole>()
                    .answers::<RoleChanged>(&[201]),
            ],
        )
        .route(
            "/admin/roles/{name}",
            get(show).patch(update).delete(delete),
            &[
                Doc::get(
                    "One role, its permissions and holders",
                    Admin(Capability::Read),
                )
                .answers::<RoleWithHolders>(&[200]),
                Doc::patch(
                    "Change a role's description or parents",
                    Admin(Capability::RolesWrite),
                )
                .takes::<UpdateRole>()
                .answers::<RoleChanged>(&[200]),
                Doc::delete("Delete a role", Admin(Capability::RolesWrite))
                    .answers::<Deleted>(&[200]),
            ],
        )
        .route(
            "/admin/roles/{name}/permissions",
            axum::routing::post(add_permission).delete(remove_permission),
            &[
                Doc::post("Give the role a permission", Admin(Capability::RolesWrite))
                    .takes::<PermissionBody>()
                    .answers::<Changed>(&[201, 200]),
                Doc::delete(
                    "Take a permission from the role",
                    Admin(Capability::RolesWrite),
                )
                .takes::<PermissionBody>()
                .answers::<Removed>(&[200]),
            ],
        )
        .route(
            "/admin/users/{authentik_sub}/roles",
            get(user_roles).post(assign).delete(unassign),
            &[
                Doc::get("The roles a user holds", Admin(Capability::Read))
                    .answers::<UserRoles>(&[200]),
                Doc::post("Assign a role in a scope", Admin(Capability::GrantsWrite))
                    .takes::<AssignmentBody>()
                    .answers::<Changed>(&[201, 200]),
                Doc::delete("Unassign a role", Admin(Capability::GrantsWrite))
                    .takes::<AssignmentBody>()
                    .answers::<Removed>(&[200]),
            ],
        )
}

fn role_name(raw: String) -> Result<RoleName, ApiError> {
    path_param("name", raw, RoleName::parse)
}

/// 201 when something was created, 200 when it was there already.
fn created_or_ok(changed: bool) -> StatusCode {
    if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

#[derive(Serialize, ToSchema)]
struct RoleList {
    roles: Vec<Role>,
}

/// A role as it is after a change, and the revision the change made.
#[derive(Serialize, ToSchema)]
struct RoleChanged {
    role: Role,
    revision: Revision,
}

#[derive(Serialize, ToSchema)]
struct RoleWithHolders {
    role: Role,
    /// The subjects holding the role, directly or through a role that inherits it.
    #[schema(value_type = Vec<String>)]
    holders: Vec<Arc<str>>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Deleted {
    deleted: bool,
    revision: Revision,
}

impl Deleted {
    pub(super) fn new(revision: Revision) -> Self {
        Self {
            deleted: true,
            revision,
        }
    }
}

/// Whether something was added (201) or was there already (200).
#[derive(Serialize, ToSchema)]
struct Changed {
    changed: bool,
    revision: Revision,
}

/// Whether something was there to remove.
#[derive(Serialize, ToSchema)]
struct Removed {
    removed: bool,
    revision: Revision,
}

#[derive(Serialize, ToSchema)]
struct UserRoles {
    authentik_sub: AuthentikSub,
    roles: Vec<HeldRoleBody>,
    revision: i64,
}

/// A role a user holds, and where.
#[derive(Serialize, ToSchema)]
#[schema(as = HeldRole)]
pub(super) struct HeldRoleBody {
    #[schema(value_type = String)]
    role: Arc<str>,
    #[schema(value_type = String)]
    scope_type: Arc<str>,
    #[schema(value_type = String)]
    scope_id: Arc<str>,
}

async fn list(_: AdminCaller, State(state): State<AppState>) -> Result<Json<RoleList>, ApiError> {
    Ok(Json(RoleList {
        roles: state.directory.roles().await?,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRole {
    name: RoleName,
    #[serde(default = "Description::empty")]
    description: Description,
    #[serde(default)]
    inherits: Vec<RoleName>,
}

async fn create(
    caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateRole>,
) -> Result<(StatusCode, Json<RoleChanged>), ApiError> {
    let revision = state
        .directory
        .create_role(
            caller.authority(),
            &body.name,
            body.description.as_str(),
            &body.inherits,
        )
        .await?;
    let role = state.directory.role(&body.name).await?;
    Ok((StatusCode::CREATED, Json(RoleChanged { role, revision })))
}

async fn show(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RoleWithHolders>, ApiError> {
    let name = role_name(name)?;
    let role = state.directory.role(&name).await?;
    Ok(Json(RoleWithHolders {
        role,
        holders: state.directory.holders(&name),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateRole {
    #[serde(default)]
    description: Option<Description>,
    #[serde(default)]
    inherits: Option<Vec<RoleName>>,
}

async fn update(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UpdateRole>,
) -> Result<Json<RoleChanged>, ApiError> {
    let name = role_name(name)?;
    let revision = state
        .directory
        .update_role(
            caller.authority(),
            &name,
            body.description.as_ref().map(Description::as_str),
            body.inherits.as_deref(),
        )
        .await?;
    let role = state.directory.role(&name).await?;
    Ok(Json(RoleChanged { role, revision }))
}

async fn delete(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let name = role_name(name)?;
    let revision = state
        .directory
        .delete_role(caller.authority(), &name)
        .await?;
    Ok(Json(Deleted::new(revision)))
}

/// A role permission; `scope_type` and `scope_id` pin it to one scope, and come together.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PermissionBody {
    module: Module,
    action: Action,
    #[serde(default)]
    effect: Option<Effect>,
    #[serde(default)]
    #[schema(pattern = r"^(\*|[a-z][a-z0-9_.:-]{0,63})$", max_length = 64)]
    scope_type: Option<String>,
    #[serde(default)]
    scope_id: Option<ScopeId>,
}

impl PermissionBody {
    fn parse(self) -> Result<RolePermission, ApiError> {
        let scope = match (self.scope_type, self.scope_id) {
            (None, None) => None,
            (Some(t), Some(i)) => Some(
                Scope::parse(t, i)
                    .map_err(|e| ApiError::invalid_field("scope_type", e.to_string()))?,
            ),
            _ => {
                return Err(ApiError::invalid_field(
                    "scope_type",
                    "scope_type and scope_id come together",
                ));
            }
        };
        Ok(RolePermission {
            module: self.module,
            action: self.action,
            effect: self.effect.unwrap_or_default(),
            scope,
        })
    }
}

async fn add_permission(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PermissionBody>,
) -> Result<(StatusCode, Json<Changed>), ApiError> {
    let name = role_name(name)?;
    let permission = body.parse()?;
    let outcome = state
        .directory
        .set_role_permission(caller.authority(), &name, &permission)
        .await?;
    Ok((created_or_ok(outcome.changed), Json(Changed::from(outcome))))
}

async fn remove_permission(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PermissionBody>,
) -> Result<Json<Removed>, ApiError> {
    let name = role_name(name)?;
    if body.effect.is_some() {
        return Err(ApiError::invalid_field(
            "effect",
            "removing takes the permission whatever its effect",
        ));
    }
    let permission = body.parse()?;
    let outcome = state
        .directory
        .remove_role_permission(caller.authority(), &name, &permission)
        .await?;
    Ok(Json(Removed::from(outcome)))
}

/// A role in a scope; both scope fields left out mean everywhere (`*`, `*`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignmentBody {
    role: RoleName,
    #[serde(default)]
    #[schema(pattern = r"^(\*|[a-z][a-z0-9_.:-]{0,63})$", max_length = 64)]
    scope_type: Option<String>,
    #[serde(default)]
    scope_id: Option<ScopeId>,
}

impl AssignmentBody {
    fn parse(self) -> Result<RoleAssignment, ApiError> {
        let scope = match (self.scope_type, self.scope_id) {
            (None, None) => Scope::everywhere(),
            (Some(t), Some(i)) => Scope::parse(t, i)
                .map_err(|e| ApiError::invalid_field("scope_type", e.to_string()))?,
            _ => {
                return Err(ApiError::invalid_field(
                    "scope_type",
                    "scope_type and scope_id come together",
                ));
            }
        };
        Ok(RoleAssignment {
            role: self.role,
            scope,
        })
    }
}

async fn user_roles(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
) -> Result<Json<UserRoles>, ApiError> {
    let sub = subject_param(sub)?;
    let snapshot = state.engine.snapshot(&Subject::Sub(sub.clone()))?;
    Ok(Json(UserRoles {
        authentik_sub: sub,
        roles: snapshot
            .roles
            .into_iter()
            .map(|r| HeldRoleBody {
                role: r.role,
                scope_type: r.scope_type,
                scope_id: r.scope_id,
            })
            .collect(),
        revision: snapshot.revision,
    }))
}

async fn assign(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
    JsonBody(body): JsonBody<AssignmentBody>,
) -> Result<(StatusCode, Json<Changed>), ApiError> {
    let sub = subject_param(sub)?;
    let outcome = state
        .directory
        .assign_role(
            caller.authority(),
            AssignmentSource::Admin,
            &sub,
            &body.parse()?,
        )
        .await?;
    Ok((created_or_ok(outcome.changed), Json(Changed::from(outcome))))
}

async fn unassign(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
    JsonBody(body): JsonBody<AssignmentBody>,
) -> Result<Json<Removed>, ApiError> {
    let sub = subject_param(sub)?;
    let outcome = state
        .directory
        .unassign_role(
            caller.authority(),
            AssignmentSource::Admin,
            &sub,
            &body.parse()?,
        )
        .await?;
    Ok(Json(Removed::from(outcome)))
}

impl From<ChangeOutcome> for Changed {
    fn from(outcome: ChangeOutcome) -> Self {
        Self {
            changed: outcome.changed,
            revision: outcome.revision,
        }
    }
}

impl From<ChangeOutcome> for Removed {
    fn from(outcome: ChangeOutcome) -> Self {
        Self {
            removed: outcome.changed,
            revision: outcome.revision,
        }
    }
}
