//! Local accounts and sessions, for administrators (`/admin`, an API
//! client) and for other services (`/internal/sessions`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{session_id, session_json};
use super::error::ApiError;
use super::extract::{AdminCaller, InternalCaller, JsonBody, path_param, subject_param};
use super::openapi::{Api, Auth, Doc};
use crate::authn::Secret;
use crate::model::Capability;
use crate::model::{AuthentikSub, DisplayName, Email, LocalAccount, UserId, Username};
use crate::service::auth::NewAccount;

pub fn routes() -> Api {
    use Auth::{Admin, Internal};
    Api::new("accounts")
        .route(
            "/admin/accounts",
            get(list_accounts).post(create_account),
            &[
                Doc::get("List local accounts", Admin(Capability::Admin)),
                Doc::post("Create a local account (201)", Admin(Capability::Admin)),
            ],
        )
        .route(
            "/admin/accounts/{username}",
            get(get_account),
            &[Doc::get("One local account", Admin(Capability::Admin))],
        )
        .route(
            "/admin/accounts/{username}/disable",
            post(disable_account),
            &[Doc::post(
                "Disable an account, ending its sessions",
                Admin(Capability::Admin),
            )],
        )
        .route(
            "/admin/accounts/{username}/enable",
            post(enable_account),
            &[Doc::post("Enable an account", Admin(Capability::Admin))],
        )
        .route(
            "/admin/accounts/{username}/password",
            post(reset_password),
            &[Doc::post(
                "Reset a password (changed at next login)",
                Admin(Capability::Admin),
            )],
        )
        .route(
            "/admin/accounts/{username}/totp/reset",
            post(reset_totp),
            &[Doc::post(
                "Remove an account's TOTP",
                Admin(Capability::Admin),
            )],
        )
        .route(
            "/admin/users/{authentik_sub}/sessions",
            get(user_sessions).delete(revoke_user_sessions),
            &[
                Doc::get("A user's active sessions", Admin(Capability::Admin)),
                Doc::delete("Revoke all of a user's sessions", Admin(Capability::Admin)),
            ],
        )
        .route(
            "/admin/users/{authentik_sub}/sessions/{id}",
            delete(revoke_user_session),
            &[Doc::delete(
                "Revoke one of a user's sessions",
                Admin(Capability::Admin),
            )],
        )
        .route(
            "/admin/users/{authentik_sub}/identities",
            get(identities).post(link_identity),
            &[
                Doc::get(
                    "A user's identities at identity providers",
                    Admin(Capability::Read),
                ),
                Doc::post(
                    "Link an (issuer, subject) identity to the user",
                    Admin(Capability::Admin),
                ),
            ],
        )
        .route(
            "/internal/sessions/{id}",
            get(session_status),
            &[Doc::get("Whether a session is still active", Internal)],
        )
}

fn account_json(account: &LocalAccount) -> Value {
    json!({
        "username": account.username,
        "user_id": account.user_id,
        "authentik_sub": account.subject,
        "is_active": account.is_active,
        "totp_enabled": account.totp_enabled(),
        "must_change_password": account.must_change_password,
        "created_at": account.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    })
}

fn username(raw: String) -> Result<Username, ApiError> {
    path_param("username", raw, Username::parse)
}

async fn list_accounts(
    _: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let accounts: Vec<Value> = state
        .auth
        .accounts()
        .await?
        .iter()
        .map(account_json)
        .collect();
    Ok(Json(json!({ "accounts": accounts })))
}

async fn get_account(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(account_json(
        &state.auth.account(&username(raw)?).await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    username: Username,
    password: Secret,
    #[serde(default)]
    authentik_sub: Option<AuthentikSub>,
    #[serde(default)]
    email: Option<Email>,
    #[serde(default)]
    display_name: Option<DisplayName>,
    /// Holds the built-in admin role.
    #[serde(default)]
    admin: bool,
    /// The user must choose their own password at first login [default: true].
    #[serde(default = "yes")]
    must_change_password: bool,
}

fn yes() -> bool {
    true
}

async fn create_account(
    caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateAccount>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let actor = caller.actor();
    let account = state
        .auth
        .create_account(NewAccount {
            username: body.username,
            password: body.password,
            subject: body.authentik_sub,
            email: body.email,
            display_name: body.display_name,
            must_change_password: body.must_change_password,
            admin: body.admin,
        })
        .await?;
    tracing::info!(%actor, username = %account.username, "account created");
    Ok((StatusCode::CREATED, Json(account_json(&account))))
}

async fn disable_account(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_active(caller, &state, raw, false).await
}

async fn enable_account(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    set_active(caller, &state, raw, true).await
}

async fn set_active(
    caller: AdminCaller,
    state: &AppState,
    raw: String,
    active: bool,
) -> Result<StatusCode, ApiError> {
    let username = username(raw)?;
    state.auth.set_active(&username, active).await?;
    tracing::info!(actor = %caller.actor(), %username, active, "account enabled or disabled");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetPassword {
    password: Secret,
}

async fn reset_password(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<ResetPassword>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.actor();
    let username = username(raw)?;
    state.auth.reset_password(&username, body.password).await?;
    tracing::info!(%actor, %username, "password reset");
    Ok(StatusCode::NO_CONTENT)
}

async fn reset_totp(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.actor();
    let username = username(raw)?;
    state.auth.totp_reset(&username).await?;
    tracing::info!(%actor, %username, "TOTP reset");
    Ok(StatusCode::NO_CONTENT)
}

async fn user_id(state: &AppState, raw: String) -> Result<UserId, ApiError> {
    let sub = subject_param(raw)?;
    state
        .store
        .user_by_sub(&sub)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map(|u| u.id)
        .ok_or_else(|| ApiError::not_found("user_not_found", "no user with this authentik_sub"))
}

async fn user_sessions(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&state, raw).await?;
    let sessions = state
        .auth
        .sessions()
        .list(user, time::OffsetDateTime::now_utc())
        .await?;
    let sessions: Vec<Value> = sessions.iter().map(|s| session_json(s, None)).collect();
    Ok(Json(json!({ "sessions": sessions })))
}

async fn revoke_user_sessions(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let actor = caller.actor();
    let user = user_id(&state, raw).await?;
    let revoked = state.auth.sessions().revoke_all(user).await?;
    tracing::info!(%actor, user_id = %user, revoked, "sessions revoked");
    Ok(Json(json!({ "revoked": revoked })))
}

async fn revoke_user_session(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path((raw, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.actor();
    let user = user_id(&state, raw).await?;
    let id = session_id(id)?;
    if state.auth.sessions().revoke(id, Some(user)).await? {
        tracing::info!(%actor, session = %id, "session revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "session_not_found",
            "no such session of this user",
        ))
    }
}

/// Whether a session (an access token's `sid`) is still active, for services
/// that verify memberd's tokens themselves and want to honour revocations.
async fn session_status(
    _: InternalCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = session_id(id)?;
    let session = state
        .auth
        .sessions()
        .active(id, time::OffsetDateTime::now_utc())
        .await?;
    Ok(Json(match session {
        Some(s) => json!({
            "sid": id,
            "active": true,
            "user_id": s.user_id,
            "expires_at": s.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        }),
        None => json!({ "sid": id, "active": false }),
    }))
}

async fn identities(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&state, raw).await?;
    let identities = state
        .store
        .identities_of(user)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({ "identities": identities })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkIdentity {
    issuer: String,
    subject: String,
}

/// Links another identity-provider identity to the user, so that tokens for
/// it open the same user (a second provider, or a changed subject mode).
async fn link_identity(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<LinkIdentity>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let field = |name: &str, value: &str| -> Result<(), ApiError> {
        if value.trim().is_empty() || value.len() > 1024 {
            Err(ApiError::invalid_field(
                name,
                format!("{name} must be 1-1024 characters"),
            ))
        } else {
            Ok(())
        }
    };
    field("issuer", &body.issuer)?;
    field("subject", &body.subject)?;
    let user = user_id(&state, raw).await?;
    let created = match state
        .store
        .link_identity(&body.issuer, &body.subject, user)
        .await
    {
        Ok(created) => created,
        Err(crate::store::StoreError::AlreadyExists(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "identity_linked_elsewhere",
                "this identity belongs to another user",
            ));
        }
        Err(e) => return Err(ApiError::internal(&e)),
    };
    if created {
        tracing::info!(actor = %caller.actor(), user_id = %user, issuer = %body.issuer, subject = %body.subject, "identity linked");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "issuer": body.issuer, "subject": body.subject, "linked": created })),
    ))
}
