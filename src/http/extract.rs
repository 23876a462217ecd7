//! Extractors: they parse requests into the model's types and authenticate
//! callers, rejecting with the same JSON errors as the handlers.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use super::openapi::Required;
use crate::audit::{self, Actor};
use crate::authn::Secret;
use crate::authz::index::Request as Question;
use crate::model::{ApiClient, AuthentikSub, Capability, User, UserId};
use crate::service::Authority;
use crate::service::access::Subject;
use crate::service::auth::{ADMIN_MODULE, AuthError, ClientInfo, Principal};
use crate::service::clients::{ClientRequest, Freshness};
use crate::service::oidc::{Oidc, OidcError, claimed_issuer};
use subtle::ConstantTimeEq;

/// A JSON body parsed into `T`. Malformed JSON is 400; a missing, unknown or
/// ill-typed field is 422 and names the field; a body over the limit is 413.
pub struct JsonBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// A JSON body whose strings hold a NUL (JSON can only carry one escaped,
/// as `\u0000`): refused for every field at once, on both backends.
pub fn json_carries_nul(body: &[u8]) -> bool {
    body.windows(6).enumerate().any(|(i, w)| {
        w[0] == b'\\'
            && w[1] == b'u'
            && &w[2..] == b"0000"
            // `\\u0000` is a backslash and the text "u0000", not a NUL.
            && body[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

/// serde names a missing field only in its message: "missing field `x`".
fn missing_field_name(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is too large",
                    )
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        "the request body could not be read",
                    )
                }
            })?;
        if json_carries_nul(&bytes) {
            return Err(super::middleware::nul_refused());
        }
        // serde reads a struct from an array too (its fields in order); every
        // body memberd takes is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') && !bytes.is_empty() {
            return Err(ApiError::invalid_field(
                ".",
                "the body must be a JSON object",
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = inner.to_string();
                    let field = match missing_field_name(&message) {
                        Some(name) if path == "." => name.to_owned(),
                        Some(name) => format!("{path}.{name}"),
                        None => path,
                    };
                    // serde's message ends with a position, which says nothing more than the field.
                    let message = message
                        .split(" at line ")
                        .next()
                        .unwrap_or(&message)
                        .to_owned();
                    ApiError::invalid_field(field, message)
                }
                _ => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    format!("malformed JSON: {inner}"),
                ),
            }
        })?;
        deserializer.end().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("malformed JSON: {e}"),
            )
        })?;
        Ok(JsonBody(value))
    }
}

/// One path parameter, parsed with `parse`; an unusable value is 422 naming it.
pub fn path_param<T, E: std::fmt::Display>(
    name: &str,
    raw: String,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<T, ApiError> {
    parse(raw).map_err(|e| ApiError::invalid_field(name, e.to_string()))
}

/// The `{authentik_sub}` of a route.
pub fn subject_param(raw: String) -> Result<AuthentikSub, ApiError> {
    path_param("authentik_sub", raw, AuthentikSub::parse)
}

/// For a PATCH field: absent stays `None`, `null` becomes `Some(None)`, so
/// that "leave it" and "clear it" differ.
pub fn nullable<'de, T: serde::Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// The caller presented one of the internal secrets.
pub struct InternalCaller(());

impl FromRequestParts<AppState> for InternalCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        internal_secret(parts, state)
            .unwrap_or_else(|| {
                Err(ApiError::unauthorized(
                    "missing_internal_secret",
                    "X-Internal-Secret header is required",
                ))
            })
            .map(|()| {
                audit::act_as(Actor::internal());
                InternalCaller(())
            })
    }
}

/// The caller of an admin route: an authenticated API client allowed to
/// make this request, or an operator signed in to memberd (the console)
/// whose roles allow `memberd`/`admin`. Handlers of admin routes take it, so
/// none can run unauthenticated.
pub enum AdminCaller {
    Client(ApiClient),
    Operator(Principal),
}

impl AdminCaller {
    /// How far the caller reaches into memberd's own authority: operators
    /// hold `memberd/admin` (or they would not be here); a client holds it
    /// when it was given the `admin` capability.
    pub fn authority(&self) -> Authority {
        match self {
            Self::Client(client) if !client.may(Capability::Admin) => Authority::Delegated,
            _ => Authority::Full,
        }
    }

    /// Who acted, for the log of administrative changes.
    pub fn actor(&self) -> String {
        match self {
            Self::Client(client) => format!("client {}", client.client_key),
            Self::Operator(principal) => format!("operator {}", principal.claims.sub),
        }
    }
}

/// The caller's address. Behind trusted proxies it is the right-most
/// `X-Forwarded-For` hop that is not itself a trusted proxy: every hop left
/// of it was written by whoever sent the request, so only the hops our own
/// proxies appended can be believed. A hop that does not parse ends the walk
/// at the address before it (the connection's, when it is the last).
pub(super) fn caller_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()?
        .0
        .ip()
        .to_canonical();
    let trusted = |ip: &IpAddr| {
        state
            .settings
            .trusted_proxies
            .iter()
            .any(|net| net.contains(ip))
    };
    if !trusted(&peer) {
        return Some(peer);
    }
    let hops = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut caller = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                caller = ip.to_canonical();
                if !trusted(&caller) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(caller)
}

/// Authenticates the API client named in the request's headers.
async fn api_client(
    parts: &Parts,
    state: &AppState,
    freshness: Freshness,
    needs: Capability,
) -> Result<ApiClient, ApiError> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(client_key), Some(api_key)) = (header("x-client-key"), header("x-api-key")) else {
        return Err(ApiError::unauthorized(
            "missing_api_key",
            "X-Client-Key and X-API-Key headers are required",
        ));
    };
    let api_key = Secret::new(api_key);
    let request = ClientRequest {
        client_key,
        api_key: &api_key,
        origin: header("origin"),
        ip: caller_ip(parts, state),
        path: parts.uri.path(),
        needs,
    };
    let client = state.client_auth.authenticate(request, freshness).await?;
    tracing::debug!(client_key = %client.client_key, "api client authenticated");
    audit::act_as(Actor::client(client.client_key.clone()));
    Ok(client)
}

fn internal_secret(parts: &Parts, state: &AppState) -> Option<Result<(), ApiError>> {
    let presented = parts.headers.get("x-internal-secret")?;
    Some(
        if state
            .internal_secrets
            .verify(presented.to_str().unwrap_or_default())
        {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "invalid_internal_secret",
                "X-Internal-Secret is not valid",
            ))
        },
    )
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let signed_in = !parts.headers.contains_key("x-client-key")
            && (parts.headers.contains_key(header::AUTHORIZATION)
                || cookie(&parts.headers, ACCESS_COOKIE).is_some());
        if !signed_in {
            return api_client(
                parts,
                state,
                Freshness::Strict,
                Required::of(&parts.extensions),
            )
            .await
            .map(AdminCaller::Client);
        }
        let SignedIn(principal) = SignedIn::from_request_parts(parts, state).await?;
        let may_administer = state.engine.check(
            &Subject::Id(principal.user_id),
            &Question {
                scope_type: "memberd",
                scope_id: "console",
                module: ADMIN_MODULE,
                action: "admin",
            },
        );
        if may_administer {
            Ok(AdminCaller::Operator(principal))
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "administering memberd takes the admin role (memberd/admin)",
            ))
        }
    }
}

/// A system asking for decisions: it presents the internal secret or an API
/// client's credentials. The client's row may be a second old, so that
/// decisions never wait on the database. An operator signed in to the
/// console (with `memberd`/`admin`) may ask too: the console's "why?".
pub enum DecisionCaller {
    Internal,
    Client,
    Operator,
}

impl FromRequestParts<AppState> for DecisionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(verdict) = internal_secret(parts, state) {
            return verdict.map(|()| {
                audit::act_as(Actor::internal());
                DecisionCaller::Internal
            });
        }
        if parts.headers.contains_key("x-client-key") {
            return api_client(parts, state, Freshness::Recent, Capability::Check)
                .await
                .map(|_| DecisionCaller::Client);
        }
        if parts.headers.contains_key(header::AUTHORIZATION)
            || cookie(&parts.headers, ACCESS_COOKIE).is_some()
        {
            return AdminCaller::from_request_parts(parts, state)
                .await
                .map(|_| DecisionCaller::Operator);
        }
        Err(ApiError::unauthorized(
            "missing_credentials",
            "send X-Internal-Secret, or X-Client-Key and X-API-Key",
        ))
    }
}

/// Query parameters parsed into `T`; a missing or bad one is 422 naming it.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(QueryParams)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                let field = match missing_field_name(&message) {
                    Some(name) => name.to_owned(),
                    None => path,
                };
                ApiError::invalid_field(field, message)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/scim+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn escaped_nuls_are_found() {
        assert!(json_carries_nul(br#"{"a":"x\u0000"}"#));
        assert!(!json_carries_nul(br#"{"a":"x\\u0000"}"#));
        assert!(json_carries_nul(br#"{"a":"x\\\u0000"}"#));
        assert!(!json_carries_nul(br#"{"a":"x\u0001"}"#));
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            missing_field_name("missing field `authentik_sub` at line 1 column 2"),
            Some("authentik_sub")
        );
        assert_eq!(missing_field_name("invalid type: integer"), None);
    }
}

pub const ACCESS_COOKIE: &str = "memberd_access";
pub const REFRESH_COOKIE: &str = "memberd_refresh";
pub const CSRF_COOKIE: &str = "memberd_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A request authenticated by a cookie must repeat the CSRF cookie's value
/// in `X-CSRF-Token`.
pub fn check_csrf(headers: &HeaderMap) -> Result<(), ApiError> {
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let expected = cookie(headers, CSRF_COOKIE).unwrap_or_default();
    let matches: bool = sent.as_bytes().ct_eq(expected.as_bytes()).into();
    if expected.is_empty() || !matches {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "X-CSRF-Token must repeat the memberd_csrf cookie",
        ));
    }
    Ok(())
}

/// Routes a signed-in user may call while an administrator's password reset
/// awaits their own new password.
const ALLOWED_BEFORE_PASSWORD_CHANGE: &[&str] = &["/auth/password", "/auth/logout", "/me"];

/// A user signed in with one of memberd's access tokens (as a bearer token,
/// or the session cookie of the browser console), whose session is active.
///
/// A cookie travels with every request the browser makes, also those a
/// hostile page triggers; so a state-changing request authenticated by the
/// cookie must repeat the CSRF cookie's value in `X-CSRF-Token`, which only
/// pages of memberd's own origin can read (double-submit, on top of
/// `SameSite=Strict`).
pub struct SignedIn(pub Principal);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match bearer(&parts.headers) {
            Some(token) => token,
            None => {
                let token = cookie(&parts.headers, ACCESS_COOKIE).ok_or_else(|| {
                    ApiError::unauthorized(
                        "missing_token",
                        "send Authorization: Bearer <access token>",
                    )
                })?;
                if !parts.method.is_safe() {
                    check_csrf(&parts.headers)?;
                }
                token
            }
        };
        let principal = state.auth.authenticate(token).await?;
        if principal.claims.pwd_change
            && !ALLOWED_BEFORE_PASSWORD_CHANGE.contains(&parts.uri.path())
        {
            return Err(AuthError::PasswordChangeRequired.into());
        }
        audit::act_as(Actor::user(principal.claims.sub.clone()));
        Ok(SignedIn(principal))
    }
}

/// Who the caller is, for sessions and throttling.
pub fn client_info(parts: &Parts, state: &AppState) -> ClientInfo {
    ClientInfo {
        ip: caller_ip(parts, state).map(|ip| ip.to_string()),
        user_agent: parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// The caller's address and user agent, as an extractor.
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Client(client_info(parts, state)))
    }
}

pub const FRONTEND_TOKEN_HEADER: &str = "x-frontend-token";
pub const FRONTEND_TOKEN_QUERY: &str = "frontend_token";

/// Who is looking, on user routes such as `/me`: a signed-in session, a user
/// passed by an embedding front end in an encrypted token, or, on a
/// configured public path, nobody.
pub enum Viewer {
    Session(Principal),
    /// Signed in at the identity provider; upserted by subject on sight.
    External(User),
    Embedded(User),
    Anonymous,
}

impl Viewer {
    /// The user behind the viewer, if any.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Self::Session(p) => Some(p.user_id),
            Self::External(u) | Self::Embedded(u) => Some(u.id),
            Self::Anonymous => None,
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let (Some(oidc), Some(token)) = (&state.oidc, bearer(&parts.headers)) {
            let ours = state.auth.key_ring().issuer().to_owned();
            if claimed_issuer(token).as_deref() != Some(ours.as_str()) {
                return external_user(state, oidc, token)
                    .await
                    .map(Viewer::External);
            }
        }
        let has_session = parts.headers.contains_key(header::AUTHORIZATION)
            || cookie(&parts.headers, ACCESS_COOKIE).is_some();
        if has_session {
            return SignedIn::from_request_parts(parts, state)
                .await
                .map(|SignedIn(p)| Viewer::Session(p));
        }
        let embedded = parts
            .headers
            .get(FRONTEND_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                    .find(|(k, _)| k == FRONTEND_TOKEN_QUERY)
                    .map(|(_, v)| v.into_owned())
            });
        if let Some(token) = embedded {
            return embedded_user(state, &token).await.map(Viewer::Embedded);
        }
        if state
            .settings
            .public_paths
            .iter()
            .any(|p| p.matches(parts.uri.path()))
        {
            return Ok(Viewer::Anonymous);
        }
        Err(ApiError::unauthorized(
            "missing_token",
            "send Authorization: Bearer <access token>",
        ))
    }
}

/// The user a provider's token names (see `Auth::provider_user`).
async fn external_user(state: &AppState, oidc: &Oidc, token: &str) -> Result<User, ApiError> {
    let claims = oidc.verify(token).await.map_err(|e| match e {
        OidcError::Expired => ApiError::unauthorized("token_expired", "the token has expired"),
        OidcError::Invalid(_) => ApiError::unauthorized("invalid_token", "the token is not valid"),
    })?;
    let issuer = claims
        .iss
        .clone()
        .or_else(|| oidc.issuer().map(str::to_owned))
        .unwrap_or_default();
    let user = state.auth.provider_user(&issuer, claims).await?;
    audit::act_as(Actor::user(user.authentik_sub.as_str()));
    if !user.is_active {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "user_disabled",
            "this user is disabled in memberd",
        ));
    }
    Ok(user)
}

/// The credentials of `Authorization: Bearer …`, the scheme in any case
/// (RFC 7235 §2.1). Ours is one line: the `headers` crate's typed header
/// (through axum-extra) would bring a crate and its own dependencies for it.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// The active user an embedded token names. Every failure (no secret
/// configured, a bad token, an unknown or disabled user) is the same answer.
async fn embedded_user(state: &AppState, token: &str) -> Result<User, ApiError> {
    let invalid = || ApiError::unauthorized("invalid_token", "the token is not valid");
    let tokens = state.frontend_tokens.as_ref().ok_or_else(invalid)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = tokens.open(token, now).map_err(|_| invalid())?;
    let sub = AuthentikSub::parse(claims.sub).map_err(|_| invalid())?;
    let user = state.directory.user(&sub).await?;
    let user = user.filter(|u| u.is_active).ok_or_else(invalid)?;
    audit::act_as(Actor::user(user.authentik_sub.as_str()));
    Ok(user)
}
