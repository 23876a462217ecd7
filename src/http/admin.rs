//! Admin routes, for authenticated API clients.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{AdminCaller, JsonBody};
use super::openapi::{Api, Auth, Doc};
use crate::model::{
    Action, AuthentikSub, Effect, Grant, Module, Permission, Revision, ScopeId, ScopeType,
};

pub fn routes() -> Api {
    Api::new("permissions")
        .route(
            "/admin/permissions/grant",
            post(grant),
            &[Doc::post(
                "Grant a user a permission, allow or deny (201 new, 200 already held)",
                Auth::Admin,
            )],
        )
        .route(
            "/admin/permissions/revoke",
            post(revoke),
            &[Doc::post("Revoke a user's permission", Auth::Admin)],
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    authentik_sub: AuthentikSub,
    scope_type: ScopeType,
    scope_id: ScopeId,
    module: Module,
    action: Action,
    /// Only in grants; a revoke removes the permission whatever its effect.
    #[serde(default)]
    effect: Option<Effect>,
}

impl GrantRequest {
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

#[derive(Serialize)]
struct GrantResponse {
    grant: Grant,
    created: bool,
    revision: Revision,
}

async fn grant(
    _: AdminCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<GrantRequest>,
) -> Result<(StatusCode, Json<GrantResponse>), ApiError> {
    let effect = request.effect.unwrap_or_default();
    let (sub, permission) = request.into_parts();
    let outcome = state.directory.grant(&sub, &permission, effect).await?;
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

#[derive(Serialize)]
struct RevokeResponse {
    revoked: bool,
    revision: Revision,
}

async fn revoke(
    _: AdminCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<GrantRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    if request.effect.is_some() {
        return Err(ApiError::invalid_field(
            "effect",
            "revoke removes the permission whatever its effect",
        ));
    }
    let (sub, permission) = request.into_parts();
    let outcome = state.directory.revoke(&sub, &permission).await?;
    Ok(Json(RevokeResponse {
        revoked: outcome.revoked.is_some(),
        revision: outcome.revision,
    }))
}
