//! The HTTP interface: routing, extractors, one file per route group.

mod accounts;
mod admin;
mod audit;
mod auth;
mod authzen;
mod clients;
mod console;
mod decisions;
pub mod error;
mod extract;
mod health;
mod internal;
pub mod middleware;
pub mod openapi;
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
use crate::ratelimit::Limits;
use crate::service::access::Engine;
use crate::service::auth::Auth;
use crate::service::authentik::Authentik;
use crate::service::clients::{ClientAdmin, ClientAuthenticator};
use crate::service::directory::Directory;
use crate::service::oidc::Oidc;
use error::ApiError;

/// Every route, with its documentation.
pub fn api(state: AppState) -> openapi::Api {
    health::routes()
        .merge(internal::routes())
        .merge(admin::routes())
        .merge(audit::routes())
        .merge(roles::routes())
        .merge(rules::routes())
        .merge(decisions::routes())
        .merge(authzen::routes())
        .merge(auth::routes().map_router(|routes| {
            routes.route_layer(axum::middleware::from_fn_with_state(
                state,
                auth::rate_limit,
            ))
        }))
        .merge(accounts::routes())
        .merge(clients::routes())
        .merge(console::routes())
        .merge(scim::routes())
        .document(
            "/openapi.json",
            &[
                openapi::Doc::get("This API's OpenAPI 3.1 description", openapi::Auth::Public)
                    .answers_as::<openapi::Description>("application/json", &[200]),
            ],
        )
        .document(
            "/docs",
            &[
                openapi::Doc::get("This API's reference, as a page", openapi::Auth::Public)
                    .answers_text("text/html"),
            ],
        )
}

/// What handlers share, behind one `Arc`: axum clones the state for every
/// extractor and middleware that takes it, on every request, and a clone
/// of each of the services' handles (some thirty `Arc`s, their counters
/// shared by every core) cost `/healthz` a quarter of its throughput.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services handlers call, and the settings they read.
pub struct Services {
    pub settings: Arc<Settings>,
    /// SCIM's users and groups.
    pub provisioning: crate::service::provisioning::Provisioning,
    pub directory: Directory,
    pub audit_log: crate::service::audit_log::AuditLog,
    pub health: crate::service::health::Health,
    pub engine: Engine,
    pub client_auth: ClientAuthenticator,
    pub client_admin: ClientAdmin,
    pub internal_secrets: Arc<InternalSecrets>,
    pub auth: Auth,
    /// Opens the embedded (iframe) tokens, when a frontend secret is configured.
    pub frontend_tokens: Option<Arc<FrontendTokens>>,
    /// Verifies the identity provider's bearer tokens, when one is configured.
    pub oidc: Option<Oidc>,
    /// Authentik's admin API, when configured.
    pub authentik: Option<Authentik>,
    /// Request rates (per address on `/auth/*`), in memory or Redis.
    pub limits: Limits,
}

pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.settings.max_body_bytes;
    let (routes, operations) = api(state.clone()).into_parts();
    // Rendered once: the routes do not change while the process runs.
    let description: Arc<str> = openapi::document(&operations).to_string().into();
    let page: Arc<str> = openapi::reference_page(&operations).into();
    routes
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let body = description.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body.to_string(),
                    )
                }
            }),
        )
        .route(
            "/docs",
            axum::routing::get(move || {
                let body = page.clone();
                async move { axum::response::Html(body.to_string()) }
            }),
        )
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
