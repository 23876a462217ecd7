//! Service-to-service routes, behind `X-Internal-Secret`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{InternalCaller, JsonBody, QueryParams, subject_param};
use super::openapi::{Api, Auth, Doc};
use crate::authz::index::{EffectiveSnapshot, HeldRole, PermissionList};
use crate::model::{Revision, User, UserId, UserUpsert};
use crate::service::access::Subject;
use crate::service::authentik::{AuthentikUser, EnsureUser};
use crate::service::directory::Changes;

pub fn routes() -> Api {
    use Auth::Internal;
    Api::new("directory")
        .route(
            "/internal/users/upsert-by-sub",
            post(upsert_by_sub),
            &[Doc::post("Create or update a user by subject", Internal)
                .takes::<UserUpsert>()
                .answers::<User>(&[200])],
        )
        .route(
            "/internal/permissions/{authentik_sub}/snapshot",
            get(snapshot),
            &[Doc::get(
                "A user's permission snapshot, with an ETag (304 for a matching If-None-Match)",
                Internal,
            )
            .answers::<Snapshot>(&[200])
            .revalidates()],
        )
        .route(
            "/internal/changes",
            get(changes),
            &[
                Doc::get("Whose permissions changed since a revision", Internal)
                    .query::<ChangesQuery>()
                    .answers::<ChangesBody>(&[200]),
            ],
        )
        .route(
            "/internal/authentik/users/ensure",
            post(ensure_in_authentik),
            &[Doc::post(
                "Create or update the user in Authentik, then in memberd",
                Internal,
            )
            .takes::<EnsureUser>()
            .answers::<Ensured>(&[200])],
        )
}

async fn upsert_by_sub(
    _: InternalCaller,
    State(state): State<AppState>,
    JsonBody(upsert): JsonBody<UserUpsert>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(state.auth.upsert_external_user(&upsert).await?))
}

/// Changes whenever the user's snapshot may have: the user's revision moves
/// with every change to the user, their grants, or the roles they hold.
fn etag(snapshot: &EffectiveSnapshot) -> String {
    format!("\"{}.{}\"", snapshot.user_id.0.simple(), snapshot.revision)
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

/// A snapshot as JSON, with its `ETag`; `304` when the caller has it already.
pub fn snapshot_response(
    snapshot: &EffectiveSnapshot,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = etag(snapshot);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::internal(&e))?;
    let cache = [
        (header::ETAG, etag_value),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if none_match(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let body = SnapshotBody {
        authentik_sub: &snapshot.authentik_sub,
        user_id: snapshot.user_id,
        is_active: snapshot.is_active,
        revision: snapshot.revision,
        permissions: &snapshot.permissions,
        denied: &snapshot.denied,
        roles: &snapshot.roles,
    };
    Ok((cache, Json(body)).into_response())
}

/// What a snapshot says, as the description shows it ([`SnapshotBody`] is
/// how it is written).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct Snapshot {
    authentik_sub: String,
    user_id: UserId,
    is_active: bool,
    revision: i64,
    /// The allows no deny cancels entirely.
    permissions: Vec<crate::model::EffectivePermission>,
    /// The denies that still carve exceptions out of them.
    denied: Vec<crate::model::EffectivePermission>,
    roles: Vec<super::roles::HeldRoleBody>,
}

/// Written straight from the snapshot (a `json!` value would copy every string first).
#[derive(Serialize)]
struct SnapshotBody<'a> {
    authentik_sub: &'a str,
    user_id: UserId,
    is_active: bool,
    revision: i64,
    permissions: &'a PermissionList,
    denied: &'a PermissionList,
    roles: &'a [HeldRole],
}

async fn snapshot(
    _: InternalCaller,
    State(state): State<AppState>,
    Path(sub): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sub = subject_param(sub)?;
    let snapshot = state.engine.snapshot(&Subject::Sub(sub))?;
    crate::metrics::snapshot();
    snapshot_response(&snapshot, &headers)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ChangesQuery {
    /// The revision the caller's cache is at; one the log no longer
    /// reaches back to answers 410 changes_gone.
    since: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ChangesBody {
    revision: Revision,
    /// The subjects whose effective permissions changed: drop their cached snapshots.
    #[schema(value_type = Vec<String>)]
    subjects: Vec<std::sync::Arc<str>>,
}

async fn changes(
    _: InternalCaller,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ChangesQuery>,
) -> Result<Json<ChangesBody>, ApiError> {
    match state.directory.changes_since(Revision(query.since)).await? {
        Changes::Changed { subjects, revision } => Ok(Json(ChangesBody { revision, subjects })),
        Changes::Gone { oldest } => Err(ApiError::new(
            StatusCode::GONE,
            "changes_gone",
            format!("the change log starts after revision {oldest}: refetch every snapshot"),
        )),
    }
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

/// Creates or updates the user in Authentik, then in memberd by the subject
/// Authentik gives it; answers both.
async fn ensure_in_authentik(
    _: InternalCaller,
    State(state): State<AppState>,
    JsonBody(wanted): JsonBody<EnsureUser>,
) -> Result<Json<Ensured>, ApiError> {
    let authentik = state.authentik.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "set MEMBERD_AUTHENTIK_BASE_URL and MEMBERD_AUTHENTIK_ADMIN_TOKEN",
        )
    })?;
    let (authentik, user) = authentik.ensure(wanted).await?;
    Ok(Json(Ensured { authentik, user }))
}

/// The user as Authentik and memberd each keep them.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Ensured {
    authentik: AuthentikUser,
    user: User,
}
