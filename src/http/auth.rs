//! memberd's own login under `/auth`, `/me`, and the documents that let
//! other services verify memberd's tokens (`/.well-known/*`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{
    ACCESS_COOKIE, CSRF_COOKIE, Client, JsonBody, REFRESH_COOKIE, SignedIn, Viewer, check_csrf,
    cookie, path_param,
};
use super::openapi::{Api, Auth, Doc};
use crate::authn::Secret;
use crate::authn::tokens::opaque_token;
use crate::model::{Session, SessionId};
use crate::service::access::Subject;
use crate::service::auth::{LoginOutcome, LoginRequest, TokenResponse};

pub fn routes() -> Api {
    use Auth::{Public, Session, Viewer};
    Api::new("login")
        .route(
            "/auth/captcha",
            get(captcha),
            &[Doc::get("A captcha (PNG as a data URL)", Public)],
        )
        .route(
            "/auth/login",
            post(login),
            &[Doc::post("Sign in with username and password", Public)],
        )
        .route(
            "/auth/login/totp",
            post(login_totp),
            &[Doc::post(
                "Complete a sign-in with a TOTP or recovery code",
                Public,
            )],
        )
        .route(
            "/auth/refresh",
            post(refresh),
            &[Doc::post("Rotate the refresh token for new tokens", Public)],
        )
        .route(
            "/auth/logout",
            post(logout),
            &[Doc::post("End this session", Session)],
        )
        .route(
            "/auth/password",
            post(change_password),
            &[Doc::post("Change one's password", Session)],
        )
        .route(
            "/auth/sessions",
            get(my_sessions),
            &[Doc::get("One's active sessions", Session)],
        )
        .route(
            "/auth/sessions/{id}",
            delete(revoke_my_session),
            &[Doc::delete("Revoke one of one's sessions", Session)],
        )
        .route(
            "/auth/totp/enroll",
            post(totp_enroll),
            &[Doc::post(
                "Start TOTP enrolment (secret and QR code)",
                Session,
            )],
        )
        .route(
            "/auth/totp/confirm",
            post(totp_confirm),
            &[Doc::post(
                "Confirm TOTP with the password and a code; recovery codes",
                Session,
            )],
        )
        .route(
            "/auth/totp/disable",
            post(totp_disable),
            &[Doc::post("Turn TOTP off", Session)],
        )
        .route("/me", get(me), &[Doc::get("Who the caller is", Viewer)])
        .route(
            "/me/permissions/snapshot",
            get(my_snapshot),
            &[Doc::get("The caller's own permission snapshot", Viewer)],
        )
        .route(
            "/.well-known/jwks.json",
            get(jwks),
            &[Doc::get(
                "The keys that verify memberd's access tokens",
                Public,
            )],
        )
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
            &[Doc::get("Where memberd's keys and endpoints are", Public)],
        )
}

async fn captcha(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (captcha_id, image) = state.auth.new_captcha().await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "captcha_id": captcha_id, "image": image })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: Secret,
    #[serde(default)]
    captcha_id: Option<String>,
    #[serde(default)]
    captcha_answer: Option<String>,
    /// Answer with session cookies (the browser console) instead of tokens in the body.
    #[serde(default)]
    use_cookies: bool,
}

async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    let request = LoginRequest {
        username: body.username,
        password: body.password,
        captcha_id: body.captcha_id,
        captcha_answer: body.captcha_answer,
    };
    match state.auth.login(request, &client).await? {
        LoginOutcome::Tokens(tokens) => Ok(token_response(&state, tokens, body.use_cookies)),
        LoginOutcome::MfaRequired { mfa_token } => Ok((
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({ "mfa_required": true, "mfa_token": mfa_token.expose() })),
        )
            .into_response()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpLoginBody {
    mfa_token: Secret,
    code: String,
    #[serde(default)]
    use_cookies: bool,
}

async fn login_totp(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(body): JsonBody<TotpLoginBody>,
) -> Result<Response, ApiError> {
    let tokens = state
        .auth
        .login_totp(body.mfa_token, &body.code, &client)
        .await?;
    Ok(token_response(&state, tokens, body.use_cookies))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<Secret>,
    #[serde(default)]
    use_cookies: bool,
}

async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<Response, ApiError> {
    let (token, cookies) = match body.refresh_token {
        Some(token) => (token, body.use_cookies),
        None => {
            let from_cookie = cookie(&headers, REFRESH_COOKIE).ok_or_else(|| {
                ApiError::invalid_field("refresh_token", "refresh_token is required")
            })?;
            check_csrf(&headers)?;
            (Secret::new(from_cookie), true)
        }
    };
    let tokens = state.auth.refresh(token).await?;
    Ok(token_response(&state, tokens, cookies))
}

fn set_cookie(
    response: &mut Response,
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
    http_only: bool,
) {
    let mut cookie = format!("{name}={value}; Path={path}; Max-Age={max_age}; SameSite=Strict");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if state.settings.cookie_secure {
        cookie.push_str("; Secure");
    }
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Tokens in the body (the OAuth 2.0 token response), or as cookies with a
/// CSRF token in the body for the browser console.
fn token_response(state: &AppState, tokens: TokenResponse, cookies: bool) -> Response {
    let no_store = [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ];
    if !cookies {
        return (no_store, Json(tokens)).into_response();
    }
    let csrf = opaque_token("");
    let settings = state.auth.settings();
    let mut response = (
        no_store,
        Json(json!({
            "token_type": "cookie",
            "expires_in": tokens.expires_in,
            "csrf_token": csrf.expose(),
            "password_change_required": tokens.password_change_required,
        })),
    )
        .into_response();
    let access_age = settings.access_ttl.as_secs();
    let session_age = settings.session_max.as_secs();
    set_cookie(
        &mut response,
        state,
        ACCESS_COOKIE,
        &tokens.access_token,
        "/",
        access_age,
        true,
    );
    set_cookie(
        &mut response,
        state,
        REFRESH_COOKIE,
        &tokens.refresh_token,
        "/auth",
        session_age,
        true,
    );
    set_cookie(
        &mut response,
        state,
        CSRF_COOKIE,
        csrf.expose(),
        "/",
        session_age,
        false,
    );
    response
}

async fn logout(
    State(state): State<AppState>,
    SignedIn(principal): SignedIn,
) -> Result<Response, ApiError> {
    state.auth.logout(&principal).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    for (name, path) in [
        (ACCESS_COOKIE, "/"),
        (REFRESH_COOKIE, "/auth"),
        (CSRF_COOKIE, "/"),
    ] {
        set_cookie(
            &mut response,
            &state,
            name,
            "",
            path,
            0,
            name != CSRF_COOKIE,
        );
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: Secret,
    new_password: Secret,
}

async fn change_password(
    State(state): State<AppState>,
    SignedIn(principal): SignedIn,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .change_password(&principal, body.current_password, body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A session as its owner or an administrator sees it.
pub fn session_json(session: &Session, current: Option<SessionId>) -> Value {
    let mut out = json!({
        "id": session.id,
        "created_at": rfc3339(session.created_at),
        "last_used_at": rfc3339(session.last_used_at),
        "expires_at": rfc3339(session.expires_at),
        "ip": session.ip,
        "user_agent": session.user_agent,
    });
    if let Some(current) = current {
        out["current"] = (current == session.id).into();
    }
    out
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn my_sessions(
    State(state): State<AppState>,
    SignedIn(principal): SignedIn,
) -> Result<Json<Value>, ApiError> {
    let sessions = state
        .auth
        .sessions()
        .list(principal.user_id, time::OffsetDateTime::now_utc())
        .await?;
    let sessions: Vec<Value> = sessions
        .iter()
        .map(|s| session_json(s, Some(principal.session_id)))
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

pub fn session_id(raw: String) -> Result<SessionId, ApiError> {
    path_param("id", raw, |s| s.parse::<uuid::Uuid>().map(SessionId))
}

async fn revoke_my_session(
    State(state): State<AppState>,
    SignedIn(principal): SignedIn,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = session_id(id)?;
    if state
        .auth
        .sessions()
        .revoke(id, Some(principal.user_id))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "session_not_found",
            "no such session of yours",
        ))
    }
}

async fn totp_enroll(
    State(state): State<AppState>,
    SignedIn(principal): SignedIn,
) -> Result<Response, ApiError> {
    let enrolment = state.auth.totp_enroll(&principal).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "secret": enrolment.secret,
            "otpauth_uri": enrolment.otpauth_uri,
            "qr_png": enrolment.qr_png,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpConfirmBody {
    /// The account's password: a stolen session alone cannot bind a second factor.
    password: Secret,
    code: String,
}

async fn totp_confirm(
    State(state): State<AppState>,
    SignedIn(principal): SignedIn,
    JsonBody(body): JsonBody<TotpConfirmBody>,
) -> Result<Response, ApiError> {
    let codes = state
        .auth
        .totp_confirm(&principal, body.password, &body.code)
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "recovery_codes": codes })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpDisableBody {
    password: Secret,
    code: String,
}

async fn totp_disable(
    State(state): State<AppState>,
    SignedIn(principal): SignedIn,
    JsonBody(body): JsonBody<TotpDisableBody>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .totp_disable(&principal, body.password, &body.code)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller: a signed-in session, a user named by an embedded token, or,
/// on a public path, nobody (`{"authenticated": false}`).
async fn me(State(state): State<AppState>, viewer: Viewer) -> Result<Json<Value>, ApiError> {
    let principal = match viewer {
        Viewer::Anonymous => return Ok(Json(json!({ "authenticated": false }))),
        Viewer::External(user) => {
            return Ok(Json(json!({
                "authenticated": true,
                "source": "identity_provider",
                "user": user,
            })));
        }
        Viewer::Embedded(user) => {
            return Ok(Json(json!({
                "authenticated": true,
                "source": "embedded",
                "user": user,
            })));
        }
        Viewer::Session(principal) => principal,
    };
    let internal = |e: crate::store::StoreError| ApiError::internal(&e);
    let user = state
        .store
        .user_by_id(principal.user_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::unauthorized("session_revoked", "the user no longer exists"))?;
    let mut out = json!({
        "authenticated": true,
        "source": "session",
        "user": user,
        "session_id": principal.session_id,
        "roles": principal.claims.roles,
        "password_change_required": principal.claims.pwd_change,
    });
    if let Some(account) = state
        .store
        .account_by_user(principal.user_id)
        .await
        .map_err(internal)?
    {
        out["username"] = account.username.as_str().into();
        out["totp_enabled"] = account.totp_enabled().into();
        if account.totp_enabled() {
            out["recovery_codes_left"] = state
                .auth
                .recovery_codes_left(account.user_id)
                .await?
                .into();
        }
    }
    Ok(Json(out))
}

/// The caller's own permission snapshot, as `/internal/permissions/{sub}/snapshot` answers it.
async fn my_snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
) -> Result<Response, ApiError> {
    let user_id = viewer
        .user_id()
        .ok_or_else(|| ApiError::unauthorized("missing_token", "sign in first"))?;
    let snapshot = state.engine.snapshot(&Subject::Id(user_id))?;
    crate::metrics::snapshot();
    super::internal::snapshot_response(&snapshot, &headers)
}

async fn jwks(State(state): State<AppState>) -> Response {
    let ring = state.auth.key_ring();
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(ring.jwks().clone()),
    )
        .into_response()
}

async fn openid_configuration(State(state): State<AppState>) -> Json<Value> {
    let ring = state.auth.key_ring();
    let issuer = ring.issuer();
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "userinfo_endpoint": format!("{issuer}/me"),
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
    }))
}

/// At most `MEMBERD_AUTH_RATE_LIMIT` requests a minute from one address to
/// `/auth/*` (in this instance's memory): the lockout stops guessing, this
/// stops floods of captchas, logins and refreshes.
pub async fn rate_limit(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !request.uri().path().starts_with("/auth/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let ip = super::extract::caller_ip(&parts, &state)
        .map_or_else(String::new, crate::ratelimit::address_key);
    let limit = state.settings.auth_rate_limit_per_minute;
    if let Err(retry_after) = state.limits.check(&format!("auth:{ip}"), limit).await {
        return ApiError::rate_limited(retry_after).into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}
