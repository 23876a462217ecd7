//! The audit log, for reviewers: filtered, newest first, a page at a time.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::AppState;
use super::error::ApiError;
use super::extract::{AdminCaller, QueryParams};
use super::openapi::{Api, Auth, Doc};
use crate::audit::Record;
use crate::model::Capability;
use crate::store::{AuditFilter, ChainReport};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub fn routes() -> Api {
    Api::new("audit")
        .route(
            "/admin/audit",
            get(list),
            &[Doc::get(
                "Audit records, newest first, filtered, a page at a time",
                Auth::Admin(Capability::Admin),
            )
            .query::<AuditQuery>()
            .answers::<AuditPage>(&[200])],
        )
        .route(
            "/admin/audit/verify",
            get(verify),
            &[Doc::get(
                "Walk the audit hash chain; the first break if any",
                Auth::Admin(Capability::Admin),
            )
            .answers::<VerifyResponse>(&[200])],
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// The actor's id: an authentik_sub, a client key, `internal`, a CLI user.
    actor: Option<String>,
    /// `user:<sub>`, `role:<name>`, `client:<key>`, `rule:<name>`, `account:<username>`, …
    target: Option<String>,
    action: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<OffsetDateTime>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AuditPage {
    records: Vec<Record>,
    /// Pass as `cursor` for older records; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

async fn list(
    _: AdminCaller,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("between 1 and {MAX_PAGE}"),
        ));
    }
    let before_seq = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| ApiError::invalid_field("cursor", "not a cursor this API gave"))
        })
        .transpose()?;
    let filter = AuditFilter {
        actor: query.actor,
        target: query.target,
        action: query.action,
        since: query.since,
        until: query.until,
        before_seq,
    };
    let records = state.audit_log.records(&filter, limit).await?;
    let next_cursor = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        records,
        next_cursor,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct VerifyResponse {
    intact: bool,
    records: Option<i64>,
    #[serde(rename = "break", skip_serializing_if = "Option::is_none")]
    broken: Option<String>,
}

async fn verify(
    _: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<VerifyResponse>, ApiError> {
    Ok(Json(match state.audit_log.verify().await? {
        ChainReport::Intact { records } => VerifyResponse {
            intact: true,
            records: Some(records),
            broken: None,
        },
        ChainReport::Broken(at) => VerifyResponse {
            intact: false,
            records: None,
            broken: Some(at.to_string()),
        },
    }))
}
