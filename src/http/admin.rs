//! Admin routes, for authenticated API clients.

use axum::Json;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

use super::extract::{QueryParams, subject_param};
use crate::service::access::Subject;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{AdminCaller, JsonBody};
use super::openapi::{Api, Auth, Doc};
use crate::model::{
    Action, AuthentikSub, Effect, Grant, Module, Permission, Revision, ScopeId, ScopeType,
};
use crate::model::{Capability, User};

pub fn routes() -> Api {
    Api::new("permissions")
        .route(
            "/admin/users",
            get(list_users),
            &[Doc::get(
                "Users, searched by subject, email or name, a page at a time",
                Auth::Admin(Capability::Read),
            )
            .query::<UsersQuery>()
            .answers::<UsersPage>(&[200])],
        )
        .route(
            "/admin/users/{authentik_sub}",
            get(show_user),
            &[Doc::get(
                "One user: grants, roles, local account, identities",
                Auth::Admin(Capability::Read),
            )
            .answers::<UserDetailResponse>(&[200])],
        )
        .route(
            "/admin/users/{authentik_sub}/disable",
            post(disable_user),
            &[Doc::post(
                "Disable a user: every check is denied, every session ends",
                Auth::Admin(Capability::UsersWrite),
            )
            .answers::<UserChanged>(&[200])],
        )
        .route(
            "/admin/users/{authentik_sub}/enable",
            post(enable_user),
            &[
                Doc::post("Enable a user again", Auth::Admin(Capability::UsersWrite))
                    .answers::<UserChanged>(&[200]),
            ],
        )
        .route(
            "/admin/users/{authentik_sub}/menus",
            get(user_menus),
            &[Doc::get(
                "The menu tree and buttons this user would see",
                Auth::Admin(Capability::Read),
            )
            .query::<MenuQuery>()
            .answers::<MenuPreview>(&[200])],
        )
        .route(
            "/admin/permissions/grant",
            post(grant),
            &[Doc::post(
                "Grant a user a permission, allow or deny (201 new, 200 already held)",
                Auth::Admin(Capability::GrantsWrite),
            )
            .takes::<GrantRequest>()
            .answers::<GrantResponse>(&[201, 200])],
        )
        .route(
            "/admin/permissions/revoke",
            post(revoke),
            &[Doc::post(
                "Revoke a user's permission",
                Auth::Admin(Capability::GrantsWrite),
            )
            .takes::<RevokeRequest>()
            .answers::<RevokeResponse>(&[200])],
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    authentik_sub: AuthentikSub,
    scope_type: ScopeType,
    scope_id: ScopeId,
    module: Module,
    action: Action,
    /// `allow` when left out.
    #[serde(default)]
    effect: Option<Effect>,
}

/// A grant to take back, whatever its effect.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    authentik_sub: AuthentikSub,
    scope_type: ScopeType,
    scope_id: ScopeId,
    module: Module,
    action: Action,
}

impl GrantRequest {
    /// Who, what, and the effect (`allow` when left out).
    fn into_parts(self) -> (AuthentikSub, Permission, Effect) {
        let target = RevokeRequest {
            authentik_sub: self.authentik_sub,
            scope_type: self.scope_type,
            scope_id: self.scope_id,
            module: self.module,
            action: self.action,
        };
        let (sub, permission) = target.into_parts();
        (sub, permission, self.effect.unwrap_or_default())
    }
}

impl RevokeRequest {
    fn into_parts(self) -> (AuthentikSub, Permission) {
        let permission = Permission {
            scope_type: self.scope_type,
            scope_id: self.scope_id,
            module: self.module,
            action: self.action,
        };
        (self.authentik_sub, permission)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct GrantResponse {
    grant: Grant,
    created: bool,
    revision: Revision,
}

async fn grant(
    caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<GrantRequest>,
) -> Result<(StatusCode, Json<GrantResponse>), ApiError> {
    let (sub, permission, effect) = request.into_parts();
    let outcome = state
        .directory
        .grant(caller.authority(), &sub, &permission, effect)
        .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(GrantResponse {
            grant: outcome.grant,
            created: outcome.created,
            revision: outcome.revision,
        }),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
struct RevokeResponse {
    revoked: bool,
    revision: Revision,
}

async fn revoke(
    caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let (sub, permission) = request.into_parts();
    let outcome = state
        .directory
        .revoke(caller.authority(), &sub, &permission)
        .await?;
    Ok(Json(RevokeResponse {
        revoked: outcome.revoked.is_some(),
        revision: outcome.revision,
    }))
}

const USERS_PAGE: u32 = 50;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UsersQuery {
    /// Part of a subject, email or display name, in any case.
    q: Option<String>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

async fn list_users(
    _: AdminCaller,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<UsersQuery>,
) -> Result<Json<UsersPage>, ApiError> {
    let limit = query.limit.unwrap_or(USERS_PAGE);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "between 1 and 500"));
    }
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if search.is_some_and(|q| q.chars().count() > 255) {
        return Err(ApiError::invalid_field("q", "at most 255 characters"));
    }
    let users = state
        .directory
        .users_page(search, query.cursor.as_deref(), limit)
        .await?;
    let next_cursor = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.authentik_sub.to_string()))
        .flatten();
    Ok(Json(UsersPage { users, next_cursor }))
}

/// A page of users; `next_cursor` asks for the next (none on the last page).
#[derive(Serialize, ToSchema)]
struct UsersPage {
    users: Vec<User>,
    next_cursor: Option<String>,
}

/// The menu tree and buttons a user would see.
#[derive(Serialize, ToSchema)]
struct MenuPreview {
    menus: Vec<crate::service::menus::MenuNode>,
    buttons: Vec<crate::model::RuleName>,
}

/// A user after a change, and the revision it made.
#[derive(Serialize, ToSchema)]
struct UserChanged {
    user: User,
    revision: Revision,
}

/// `GET /admin/users/{authentik_sub}`.
#[derive(Serialize, ToSchema)]
struct UserDetailResponse {
    user: crate::model::User,
    grants: Vec<crate::model::Grant>,
    #[schema(value_type = Vec<super::roles::HeldRoleBody>)]
    roles: Vec<crate::authz::index::HeldRole>,
    #[schema(value_type = Vec<crate::model::EffectivePermission>)]
    permissions: crate::authz::index::PermissionList,
    #[schema(value_type = Vec<crate::model::EffectivePermission>)]
    denied: crate::authz::index::PermissionList,
    account: Option<AccountSummary>,
    identities: Vec<crate::store::Identity>,
    revision: i64,
}

/// A local account without its secrets.
#[derive(Serialize, ToSchema)]
struct AccountSummary {
    username: crate::model::Username,
    totp_enabled: bool,
    must_change_password: bool,
}

async fn show_user(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
) -> Result<Json<UserDetailResponse>, ApiError> {
    let detail = state.directory.user_detail(&subject_param(sub)?).await?;
    Ok(Json(UserDetailResponse {
        user: detail.user,
        grants: detail.grants,
        roles: detail.snapshot.roles,
        permissions: detail.snapshot.permissions,
        denied: detail.snapshot.denied,
        account: detail.account.map(|a| AccountSummary {
            totp_enabled: a.totp_enabled(),
            username: a.username,
            must_change_password: a.must_change_password,
        }),
        identities: detail.identities,
        revision: detail.snapshot.revision,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MenuQuery {
    scope_type: Option<ScopeType>,
    scope_id: Option<ScopeId>,
}

async fn user_menus(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
    QueryParams(query): QueryParams<MenuQuery>,
) -> Result<Json<MenuPreview>, ApiError> {
    let sub = subject_param(sub)?;
    let user = state
        .engine
        .user_id(&Subject::Sub(sub))
        .ok_or_else(|| ApiError::not_found("user_not_found", "no user with this authentik_sub"))?;
    let (scope_type, scope_id) =
        super::rules::menu_scope(&state, query.scope_type, query.scope_id)?;
    let view = state
        .directory
        .menu_view(Some(user), &scope_type, &scope_id)
        .await?;
    Ok(Json(MenuPreview {
        menus: view.menus,
        buttons: view.buttons,
    }))
}

async fn set_active(
    state: &AppState,
    caller: &AdminCaller,
    raw: String,
    active: bool,
) -> Result<Json<UserChanged>, ApiError> {
    let sub = subject_param(raw)?;
    let user = state
        .auth
        .set_user_active(caller.authority(), sub, active)
        .await?;
    Ok(Json(UserChanged {
        revision: user.revision,
        user,
    }))
}

async fn disable_user(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
) -> Result<Json<UserChanged>, ApiError> {
    set_active(&state, &caller, sub, false).await
}

async fn enable_user(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
) -> Result<Json<UserChanged>, ApiError> {
    set_active(&state, &caller, sub, true).await
}
