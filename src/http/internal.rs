//! Service-to-service routes, behind `X-Internal-Secret`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{InternalCaller, JsonBody, path_param};
use crate::model::{AuthentikSub, Permission, Revision, Snapshot, User, UserId, UserUpsert};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/users/upsert-by-sub", post(upsert_by_sub))
        .route(
            "/internal/permissions/{authentik_sub}/snapshot",
            get(snapshot),
        )
}

async fn upsert_by_sub(
    _: InternalCaller,
    State(state): State<AppState>,
    JsonBody(upsert): JsonBody<UserUpsert>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(state.directory.upsert_user(&upsert).await?))
}

#[derive(Serialize)]
struct SnapshotBody<'a> {
    authentik_sub: &'a AuthentikSub,
    user_id: UserId,
    is_active: bool,
    revision: Revision,
    permissions: &'a [Permission],
}

/// Changes whenever the user's snapshot may have: the user's revision moves
/// with every change to the user or their grants.
fn etag(snapshot: &Snapshot) -> String {
    format!(
        "\"{}.{}\"",
        snapshot.user.id.0.simple(),
        snapshot.user.revision
    )
}

/// `If-None-Match` holds a list of tags, or `*`; weak tags compare equal to strong ones here.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|list| {
            list.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
        })
}

async fn snapshot(
    _: InternalCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sub = path_param("authentik_sub", sub, AuthentikSub::parse)?;
    let snapshot = state.directory.snapshot(&sub).await?;
    let etag = etag(&snapshot);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::internal(&e))?;
    let cache = [
        (header::ETAG, etag_value),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let body = SnapshotBody {
        authentik_sub: &snapshot.user.authentik_sub,
        user_id: snapshot.user.id,
        is_active: snapshot.user.is_active,
        revision: snapshot.user.revision,
        permissions: &snapshot.permissions,
    };
    Ok((cache, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, v.parse().unwrap());
            h
        };
        assert!(none_match(&with("\"a.1\""), "\"a.1\""));
        assert!(none_match(&with("\"x\", W/\"a.1\""), "\"a.1\""));
        assert!(none_match(&with("*"), "\"a.1\""));
        assert!(!none_match(&with("\"a.2\""), "\"a.1\""));
        assert!(!none_match(&HeaderMap::new(), "\"a.1\""));
    }
}
