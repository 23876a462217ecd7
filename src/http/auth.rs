//! memberd's own login under `/auth`, `/me`, and the documents that let
//! other services verify memberd's tokens (`/.well-known/*`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
            &[Doc::get("A captcha (PNG as a data URL)", Public).answers::<Captcha>(&[200])],
        )
        .route(
            "/auth/login",
            post(login),
            &[Doc::post("Sign in with username and password", Public)
                .takes::<LoginBody>()
                .answers::<SignedInAnswer>(&[200])],
        )
        .route(
            "/auth/login/totp",
            post(login_totp),
            &[
                Doc::post("Complete a sign-in with a TOTP or recovery code", Public)
                    .takes::<TotpLoginBody>()
                    .answers::<SignedInAnswer>(&[200]),
            ],
        )
        .route(
            "/auth/refresh",
            post(refresh),
            &[Doc::post("Rotate the refresh token for new tokens", Public)
                .takes::<RefreshBody>()
                .answers::<SignedInAnswer>(&[200])],
        )
        .route(
            "/auth/logout",
            post(logout),
            &[Doc::post("End this session", Session).answers_nothing()],
        )
        .route(
            "/auth/password",
            post(change_password),
            &[Doc::post("Change one's password", Session)
                .takes::<PasswordChange>()
                .answers_nothing()],
        )
        .route(
            "/auth/sessions",
            get(my_sessions),
            &[Doc::get("One's active sessions", Session).answers::<SessionList>(&[200])],
        )
        .route(
            "/auth/sessions/{id}",
            delete(revoke_my_session),
            &[Doc::delete("Revoke one of one's sessions", Session).answers_nothing()],
        )
        .route(
            "/auth/totp/enroll",
            post(totp_enroll),
            &[
                Doc::post("Start TOTP enrolment (secret and QR code)", Session)
                    .answers::<Enrolment>(&[200]),
            ],
        )
        .route(
            "/auth/totp/confirm",
            post(totp_confirm),
            &[Doc::post(
                "Confirm TOTP with the password and a code; recovery codes",
                Session,
            )
            .takes::<TotpConfirmBody>()
            .answers::<RecoveryCodes>(&[200])],
        )
        .route(
            "/auth/totp/disable",
            post(totp_disable),
            &[Doc::post("Turn TOTP off", Session)
                .takes::<TotpDisableBody>()
                .answers_nothing()],
        )
        .route(
            "/me",
            get(me),
            &[Doc::get("Who the caller is", Viewer).answers::<Me>(&[200])],
        )
        .route(
            "/me/permissions/snapshot",
            get(my_snapshot),
            &[Doc::get("The caller's own permission snapshot", Viewer)
                .answers::<super::internal::Snapshot>(&[200])
                .revalidates()],
        )
        .route(
            "/.well-known/jwks.json",
            get(jwks),
            &[
                Doc::get("The keys that verify memberd's access tokens", Public)
                    .answers::<Jwks>(&[200]),
            ],
        )
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
            &[Doc::get("Where memberd's keys and endpoints are", Public)
                .answers::<ServerMetadata>(&[200])],
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server_metadata),
            &[
                Doc::get("Where memberd's keys and endpoints are (RFC 8414)", Public)
                    .answers::<ServerMetadata>(&[200]),
            ],
        )
}

async fn captcha(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (captcha_id, image) = state.auth.new_captcha().await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(Captcha { captcha_id, image }),
    )
        .into_response())
}

/// A captcha: its id, to send back with the answer, and its picture.
#[derive(Serialize, ToSchema)]
struct Captcha {
    captcha_id: String,
    /// A PNG as a `data:` URL.
    image: String,
}

/// A TOTP enrolment, to be confirmed with a code.
#[derive(Serialize, ToSchema)]
struct Enrolment {
    otpauth_uri: String,
    /// The `otpauth_uri` as a QR code, a PNG as a `data:` URL.
    qr_png: String,
    /// The shared secret, in base32.
    secret: String,
}

/// Ten codes, each good once in place of a TOTP code; shown this once.
#[derive(Serialize, ToSchema)]
struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    #[schema(value_type = String, format = Password)]
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
            Json(MfaRequired {
                mfa_required: true,
                mfa_token: mfa_token.expose().to_owned(),
            }),
        )
            .into_response()),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpLoginBody {
    #[schema(value_type = String)]
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

/// Without `refresh_token`, the refresh cookie is used (with `X-CSRF-Token`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
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

/// Signed in with `use_cookies`: the tokens are in `HttpOnly` cookies, and
/// the CSRF token every change must carry is here (and in `memberd_csrf`).
#[derive(Serialize, ToSchema)]
struct CookieSession {
    /// `cookie`.
    token_type: &'static str,
    expires_in: u64,
    csrf_token: String,
    password_change_required: bool,
}

/// The password was right; the second factor is next (`/auth/login/totp`).
#[derive(Serialize, ToSchema)]
struct MfaRequired {
    mfa_required: bool,
    mfa_token: String,
}

/// What a sign-in or a refresh answers: tokens, or cookies and a CSRF
/// token (`use_cookies`), or, for a password sign-in with TOTP on, the
/// second step.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // A description only: each handler answers one of these types.
enum SignedInAnswer {
    Tokens(TokenResponse),
    Cookies(CookieSession),
    Mfa(MfaRequired),
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
        Json(CookieSession {
            token_type: "cookie",
            expires_in: tokens.expires_in,
            csrf_token: csrf.expose().to_owned(),
            password_change_required: tokens.password_change_required,
        }),
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    #[schema(value_type = String, format = Password)]
    current_password: Secret,
    #[schema(value_type = String, format = Password)]
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
/// A session as its owner or an administrator sees it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionView {
    #[schema(format = DateTime)]
    created_at: String,
    /// Whether it is the caller's own session (only in one's own list).
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<bool>,
    #[schema(format = DateTime)]
    expires_at: String,
    id: SessionId,
    ip: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: String,
    user_agent: Option<String>,
}

impl SessionView {
    pub fn of(session: &Session, current: Option<SessionId>) -> Self {
        Self {
            created_at: rfc3339(session.created_at),
            current: current.map(|current| current == session.id),
            expires_at: rfc3339(session.expires_at),
            id: session.id,
            ip: session.ip.clone(),
            last_used_at: rfc3339(session.last_used_at),
            user_agent: session.user_agent.clone(),
        }
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

impl SessionList {
    pub fn of(sessions: &[Session], current: Option<SessionId>) -> Self {
        Self {
            sessions: sessions
                .iter()
                .map(|s| SessionView::of(s, current))
                .collect(),
        }
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn my_sessions(
    State(state): State<AppState>,
    SignedIn(principal): SignedIn,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state
        .auth
        .sessions()
        .list(principal.user_id, time::OffsetDateTime::now_utc())
        .await?;
    Ok(Json(SessionList::of(&sessions, Some(principal.session_id))))
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
        Json(Enrolment {
            otpauth_uri: enrolment.otpauth_uri,
            qr_png: enrolment.qr_png,
            secret: enrolment.secret,
        }),
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpConfirmBody {
    /// The account's password: a stolen session alone cannot bind a second factor.
    #[schema(value_type = String, format = Password)]
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
        Json(RecoveryCodes {
            recovery_codes: codes,
        }),
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpDisableBody {
    #[schema(value_type = String, format = Password)]
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
/// `GET /me`: who is asking. The user's own fields are at the top level,
/// with `sub` (the `authentik_sub`) as a userinfo endpoint answers it, and
/// also under `user`, where callers written against earlier versions read
/// them; a memberd session adds its details beside them.
#[derive(Serialize, ToSchema)]
struct Me {
    authenticated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    #[serde(flatten)]
    identity: Option<Identity>,
    #[serde(flatten)]
    session: Option<SessionDetails>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MeIdentity)]
struct Identity {
    sub: crate::model::AuthentikSub,
    authentik_sub: crate::model::AuthentikSub,
    email: Option<crate::model::Email>,
    display_name: Option<crate::model::DisplayName>,
    is_active: bool,
    user: crate::model::User,
}

impl From<crate::model::User> for Identity {
    fn from(user: crate::model::User) -> Self {
        Self {
            sub: user.authentik_sub.clone(),
            authentik_sub: user.authentik_sub.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            is_active: user.is_active,
            user,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct SessionDetails {
    session_id: crate::model::SessionId,
    roles: Vec<String>,
    password_change_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<crate::model::Username>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_codes_left: Option<i64>,
}

async fn me(State(state): State<AppState>, viewer: Viewer) -> Result<Json<Me>, ApiError> {
    let signed_in = |source, user| Me {
        authenticated: true,
        source: Some(source),
        identity: Some(Identity::from(user)),
        session: None,
    };
    Ok(Json(match viewer {
        Viewer::Anonymous => Me {
            authenticated: false,
            source: None,
            identity: None,
            session: None,
        },
        Viewer::External(user) => signed_in("identity_provider", user),
        Viewer::Embedded(user) => signed_in("embedded", user),
        Viewer::Session(principal) => {
            let who = state.auth.signed_in(&principal).await?;
            let (account, recovery_codes_left) = match who.account {
                Some((account, left)) => (Some(account), left),
                None => (None, None),
            };
            Me {
                session: Some(SessionDetails {
                    session_id: principal.session_id,
                    roles: principal.claims.roles,
                    password_change_required: principal.claims.pwd_change,
                    totp_enabled: account.as_ref().map(|a| a.totp_enabled()),
                    username: account.map(|a| a.username),
                    recovery_codes_left,
                }),
                ..signed_in("session", who.user)
            }
        }
    }))
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

/// A JSON Web Key Set (RFC 7517) of Ed25519 public keys (RFC 8037).
#[derive(ToSchema)]
#[allow(dead_code)] // A description only: the key ring writes the set.
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct Jwk {
    /// `OKP`.
    kty: String,
    /// `Ed25519`.
    crv: String,
    /// `EdDSA`.
    alg: String,
    /// `sig`.
    #[schema(rename = "use")]
    use_: String,
    kid: String,
    /// The public key, base64url without padding.
    x: String,
}

async fn jwks(State(state): State<AppState>) -> Response {
    let ring = state.auth.key_ring();
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(ring.jwks().clone()),
    )
        .into_response()
}

/// What a resource server needs to verify memberd's access tokens, and
/// nothing memberd does not serve: memberd signs its own operators in
/// through `/auth/*` (not an OAuth authorization or token endpoint), so no
/// endpoint, grant or response type of those is listed.
#[derive(Serialize, ToSchema)]
struct ServerMetadata {
    issuer: String,
    jwks_uri: String,
    /// `/me` answers a top-level `sub` with a memberd access token.
    userinfo_endpoint: String,
    /// Required by both documents; memberd has no authorization endpoint.
    response_types_supported: [&'static str; 0],
    subject_types_supported: [&'static str; 1],
}

fn server_metadata(state: &AppState) -> ServerMetadata {
    let ring = state.auth.key_ring();
    let issuer = ring.issuer().to_owned();
    ServerMetadata {
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        userinfo_endpoint: format!("{issuer}/me"),
        issuer,
        response_types_supported: [],
        subject_types_supported: ["public"],
    }
}

/// OpenID Connect Discovery's document.
async fn openid_configuration(State(state): State<AppState>) -> Json<ServerMetadata> {
    Json(server_metadata(&state))
}

/// OAuth 2.0 Authorization Server Metadata (RFC 8414), where libraries that
/// validate JWT access tokens (RFC 9068) look for the issuer's keys.
async fn authorization_server_metadata(State(state): State<AppState>) -> Json<ServerMetadata> {
    Json(server_metadata(&state))
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
