//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::openapi::{Api, Auth, Doc};

pub fn routes() -> Api {
    Api::new("operations")
        .route("/healthz", get(healthz), &[Doc::get("Alive", Auth::Public)])
        .route(
            "/readyz",
            get(readyz),
            &[Doc::get("Ready: the database answers", Auth::Public)],
        )
        .route(
            "/metrics",
            get(metrics),
            &[Doc::get("Prometheus metrics", Auth::Public)],
        )
}

/// Prometheus' scrape target.
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let stats = state.engine.stats();
    let (db_pool_size, db_pool_idle) = state.store.pool_stats();
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
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: the database answers, within a bound so a hung database fails the probe.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            "error"
        }
        Err(_) => {
            tracing::warn!("readiness: database check timed out");
            "timeout"
        }
    };
    let mut body = json!({ "status": "ok", "database": database });
    let mut ready = database == "ok";
    // Redis holds the sessions when configured: without it no one signs in.
    if let Some(redis) = &state.redis {
        let up = redis.ping().await;
        body["redis"] = json!(if up { "ok" } else { "unavailable" });
        ready &= up;
    }
    // A provider that cannot be reached (the keys in hand keep verifying),
    // or stored rows the index left out, leave memberd serving: the body
    // says so.
    if let Some(oidc) = &state.oidc {
        body["identity_provider"] = json!(if oidc.healthy() { "ok" } else { "unreachable" });
    }
    let skipped = state.engine.skipped_rows();
    if skipped > 0 {
        body["status"] = json!("degraded");
        body["policy"] = json!({ "skipped_rows": skipped });
    }
    if !ready {
        body["status"] = json!("unavailable");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    (StatusCode::OK, Json(body))
}
