//! Local accounts and sessions, for administrators (`/admin`, an API
//! client) and for other services (`/internal/sessions`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{SessionList, session_id};
use super::error::ApiError;
use super::extract::{AdminCaller, InternalCaller, JsonBody, path_param, subject_param};
use super::openapi::{Api, Auth, Doc};
use crate::authn::Secret;
use crate::model::Capability;
use crate::model::{AuthentikSub, DisplayName, Email, LocalAccount, SessionId, UserId, Username};
use crate::service::ServiceError;
use crate::service::auth::NewAccount;

pub fn routes() -> Api {
    use Auth::{Admin, Internal};
    Api::new("accounts")
        .route(
            "/admin/accounts",
            get(list_accounts).post(create_account),
            &[
                Doc::get("List local accounts", Admin(Capability::Admin))
                    .answers::<AccountList>(&[200]),
                Doc::post("Create a local account (201)", Admin(Capability::Admin))
                    .takes::<CreateAccount>()
                    .answers::<Account>(&[201]),
            ],
        )
        .route(
            "/admin/accounts/{username}",
            get(get_account),
            &[Doc::get("One local account", Admin(Capability::Admin)).answers::<Account>(&[200])],
        )
        .route(
            "/admin/accounts/{username}/disable",
            post(disable_account),
            &[Doc::post(
                "Disable an account, ending its sessions",
                Admin(Capability::Admin),
            )
            .answers_nothing()],
        )
        .route(
            "/admin/accounts/{username}/enable",
            post(enable_account),
            &[Doc::post("Enable an account", Admin(Capability::Admin)).answers_nothing()],
        )
        .route(
            "/admin/accounts/{username}/password",
            post(reset_password),
            &[Doc::post(
                "Reset a password (changed at next login)",
                Admin(Capability::Admin),
            )
            .takes::<ResetPassword>()
            .answers_nothing()],
        )
        .route(
            "/admin/accounts/{username}/totp/reset",
            post(reset_totp),
            &[Doc::post("Remove an account's TOTP", Admin(Capability::Admin)).answers_nothing()],
        )
        .route(
            "/admin/users/{authentik_sub}/sessions",
            get(user_sessions).delete(revoke_user_sessions),
            &[
                Doc::get("A user's active sessions", Admin(Capability::Admin))
                    .answers::<SessionList>(&[200]),
                Doc::delete("Revoke all of a user's sessions", Admin(Capability::Admin))
                    .answers::<Revoked>(&[200]),
            ],
        )
        .route(
            "/admin/users/{authentik_sub}/sessions/{id}",
            delete(revoke_user_session),
            &[
                Doc::delete("Revoke one of a user's sessions", Admin(Capability::Admin))
                    .answers_nothing(),
            ],
        )
        .route(
            "/admin/users/{authentik_sub}/identities",
            get(identities).post(link_identity),
            &[
                Doc::get(
                    "A user's identities at identity providers",
                    Admin(Capability::Read),
                )
                .answers::<IdentityList>(&[200]),
                Doc::post(
                    "Link an (issuer, subject) identity to the user",
                    Admin(Capability::Admin),
                )
                .takes::<LinkIdentity>()
                .answers::<Linked>(&[201, 200]),
            ],
        )
        .route(
            "/internal/sessions/{id}",
            get(session_status),
            &[Doc::get("Whether a session is still active", Internal)
                .answers::<SessionStatus>(&[200])],
        )
}

/// A local account, without its secrets.
#[derive(Serialize, ToSchema)]
struct Account {
    username: Username,
    user_id: UserId,
    authentik_sub: AuthentikSub,
    is_active: bool,
    totp_enabled: bool,
    must_change_password: bool,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&LocalAccount> for Account {
    fn from(account: &LocalAccount) -> Self {
        Self {
            username: account.username.clone(),
            user_id: account.user_id,
            authentik_sub: account.subject.clone(),
            is_active: account.is_active,
            totp_enabled: account.totp_enabled(),
            must_change_password: account.must_change_password,
            created_at: account
                .created_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct AccountList {
    accounts: Vec<Account>,
}

#[derive(Serialize, ToSchema)]
struct Revoked {
    /// How many sessions were ended.
    revoked: u64,
}

/// Whether a session is active; its user and end when it is.
#[derive(Serialize, ToSchema)]
struct SessionStatus {
    sid: SessionId,
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct IdentityList {
    identities: Vec<crate::store::Identity>,
}

/// An identity and whether this request linked it (201) or it was linked already (200).
#[derive(Serialize, ToSchema)]
struct Linked {
    issuer: String,
    subject: String,
    linked: bool,
}

fn username(raw: String) -> Result<Username, ApiError> {
    path_param("username", raw, Username::parse)
}

async fn list_accounts(
    _: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<AccountList>, ApiError> {
    let accounts = state.auth.accounts().await?;
    Ok(Json(AccountList {
        accounts: accounts.iter().map(Account::from).collect(),
    }))
}

async fn get_account(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Account>, ApiError> {
    Ok(Json(Account::from(
        &state.auth.account(&username(raw)?).await?,
    )))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    username: Username,
    #[schema(value_type = String, format = Password)]
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
) -> Result<(StatusCode, Json<Account>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(Account::from(&account))))
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetPassword {
    #[schema(value_type = String, format = Password)]
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
    Ok(state.directory.user_id_of(&subject_param(raw)?).await?)
}

async fn user_sessions(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<SessionList>, ApiError> {
    let user = user_id(&state, raw).await?;
    let sessions = state
        .auth
        .sessions()
        .list(user, time::OffsetDateTime::now_utc())
        .await?;
    Ok(Json(SessionList::of(&sessions, None)))
}

async fn revoke_user_sessions(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    let actor = caller.actor();
    let user = user_id(&state, raw).await?;
    let revoked = state.auth.sessions().revoke_all(user).await?;
    tracing::info!(%actor, user_id = %user, revoked, "sessions revoked");
    Ok(Json(Revoked {
        revoked: revoked as u64,
    }))
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
) -> Result<Json<SessionStatus>, ApiError> {
    let id = session_id(id)?;
    let session = state
        .auth
        .sessions()
        .active(id, time::OffsetDateTime::now_utc())
        .await?;
    Ok(Json(SessionStatus {
        sid: id,
        active: session.is_some(),
        user_id: session.as_ref().map(|s| s.user_id),
        expires_at: session.map(|s| {
            s.expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        }),
    }))
}

async fn identities(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<IdentityList>, ApiError> {
    let user = user_id(&state, raw).await?;
    Ok(Json(IdentityList {
        identities: state.directory.identities(user).await?,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LinkIdentity {
    #[schema(pattern = r"\S", min_length = 1, max_length = 1024)]
    issuer: String,
    #[schema(pattern = r"\S", min_length = 1, max_length = 1024)]
    subject: String,
}

/// Links another identity-provider identity to the user, so that tokens for
/// it open the same user (a second provider, or a changed subject mode).
async fn link_identity(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<LinkIdentity>,
) -> Result<(StatusCode, Json<Linked>), ApiError> {
    let user = user_id(&state, raw).await?;
    let created = match state
        .directory
        .link_identity(&body.issuer, &body.subject, user)
        .await
    {
        Err(ServiceError::Conflict("identity")) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "identity_linked_elsewhere",
                "this identity belongs to another user",
            ));
        }
        other => other?,
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
        Json(Linked {
            issuer: body.issuer,
            subject: body.subject,
            linked: created,
        }),
    ))
}
