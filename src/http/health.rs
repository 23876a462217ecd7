//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::AppState;
use super::openapi::{Api, Auth, Doc};
use crate::service::health::Readiness;

pub fn routes() -> Api {
    Api::new("operations")
        .route(
            "/healthz",
            get(healthz),
            &[Doc::get("Alive", Auth::Public).answers::<Alive>(&[200])],
        )
        .route(
            "/readyz",
            get(readyz),
            &[Doc::get(
                "Ready: the database answers (and Redis, when it holds the sessions); 503 otherwise, with the same body",
                Auth::Public,
            )
            .answers::<Readiness>(&[200, 503])],
        )
        .route(
            "/metrics",
            get(metrics),
            &[Doc::get("Prometheus metrics, in its text exposition format", Auth::Public)
                .answers_text("text/plain")],
        )
}

/// Prometheus' scrape target.
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let stats = state.engine.stats();
    let (db_pool_size, db_pool_idle) = state.health.pool_stats();
    let body = crate::metrics::render(&crate::metrics::Gauges {
        revision: state.engine.revision().0,
        index_users: stats.users,
        index_roles: stats.roles,
        index_direct_grants: stats.direct_grants,
        index_role_permissions: stats.role_permissions,
        index_assignments: stats.assignments,
        db_pool_size,
        db_pool_idle,
        policy_rows_skipped: state.engine.skipped_rows(),
        api_client_rows_remembered: state.client_auth.remembered_rows(),
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Alive: answers without touching anything else.
async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Alive {
    status: &'static str,
}

/// Ready: the database answers (and Redis, when it holds the sessions).
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let readiness = state.health.readiness().await;
    let status = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}
