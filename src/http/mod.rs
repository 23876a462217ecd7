//! The HTTP interface: routing, extractors, one file per route group.

mod accounts;
mod admin;
mod audit;
mod auth;
mod authzen;
mod decisions;
pub mod error;
mod extract;
mod health;
mod internal;
pub mod middleware;
mod roles;
mod rules;
mod scim;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::catch_panic::CatchPanicLayer;

use crate::authn::frontend::FrontendTokens;
use crate::authn::internal::InternalSecrets;
use crate::config::Settings;
use crate::ratelimit::RateLimiter;
use crate::service::access::Engine;
use crate::service::auth::Auth;
use crate::service::authentik::Authentik;
use crate::service::clients::ClientAuthenticator;
use crate::service::directory::Directory;
use crate::service::oidc::Oidc;
use crate::store::Store;
use error::ApiError;

/// What handlers share. Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub directory: Directory,
    pub engine: Engine,
    pub client_auth: ClientAuthenticator,
    pub internal_secrets: Arc<InternalSecrets>,
    pub auth: Auth,
    /// Opens the embedded (iframe) tokens, when a frontend secret is configured.
    pub frontend_tokens: Option<Arc<FrontendTokens>>,
    /// Verifies the identity provider's bearer tokens, when one is configured.
    pub oidc: Option<Oidc>,
    /// Authentik's admin API, when configured.
    pub authentik: Option<Authentik>,
    /// Requests per address on `/auth/*`.
    pub auth_limiter: Arc<RateLimiter>,
}

pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.settings.max_body_bytes;
    Router::new()
        .merge(health::routes())
        .merge(internal::routes())
        .merge(admin::routes())
        .merge(audit::routes())
        .merge(roles::routes())
        .merge(rules::routes())
        .merge(decisions::routes())
        .merge(authzen::routes())
        .merge(
            auth::routes().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::rate_limit,
            )),
        )
        .merge(accounts::routes())
        .merge(scim::routes())
        .fallback(|| async { ApiError::not_found("route_not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .with_state(state.clone())
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state,
            middleware::request_context,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}
