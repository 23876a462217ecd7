//! Decisions: "may this user do this?", one at a time, in batches, and explained.

use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{DecisionCaller, JsonBody, QueryParams};
use super::openapi::{Api, Auth, Doc};
use crate::authz::index::{Contribution, Explanation, Request};
use crate::metrics;
use crate::model::{Action, AuthentikSub, Module, Revision, ScopeId, ScopeType, UserId};
use crate::service::access::Subject;

/// How long a request with `min_revision` waits for the index to catch up.
const MIN_REVISION_WAIT: Duration = Duration::from_secs(2);
pub const MAX_BATCH: usize = 1000;
/// Room for `MAX_BATCH` checks with long scope ids; other routes keep the configured limit.
pub const BATCH_BODY_BYTES: usize = 1024 * 1024;

pub fn routes() -> Api {
    Api::new("decisions")
        .route(
            "/v1/check",
            post(check),
            &[Doc::post("May this user do this here?", Auth::Decision)
                .takes::<CheckBody>()
                .answers::<CheckResponse>(&[200])],
        )
        .route(
            "/v1/check/batch",
            post(check_batch).layer(DefaultBodyLimit::max(BATCH_BODY_BYTES)),
            &[
                Doc::post("Up to 1,000 checks, answered in order", Auth::Decision)
                    .takes::<BatchBody>()
                    .answers::<BatchResponse>(&[200]),
            ],
        )
        .route(
            "/v1/explain",
            get(explain),
            &[Doc::get(
                "A decision with every grant that contributed and who made it",
                Auth::Decision,
            )
            .query::<ExplainQuery>()
            .answers::<ExplainResponse>(&[200])],
        )
}

/// `"subject": "an authentik_sub"` or `"subject": {"user_id": "…"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SubjectBody {
    Sub(AuthentikSub),
    Id { user_id: Uuid },
}

impl From<SubjectBody> for Subject {
    fn from(s: SubjectBody) -> Self {
        match s {
            SubjectBody::Sub(sub) => Subject::Sub(sub),
            SubjectBody::Id { user_id } => Subject::Id(UserId(user_id)),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    subject: SubjectBody,
    scope_type: ScopeType,
    scope_id: ScopeId,
    module: Module,
    action: Action,
    #[serde(default)]
    min_revision: Option<i64>,
}

/// The request's parts, once parsed, in the engine's terms.
struct Check {
    subject: Subject,
    scope_type: ScopeType,
    scope_id: ScopeId,
    module: Module,
    action: Action,
}

impl Check {
    fn request(&self) -> Request<'_> {
        Request {
            scope_type: self.scope_type.as_str(),
            scope_id: self.scope_id.as_str(),
            module: self.module.as_str(),
            action: self.action.as_str(),
        }
    }
}

impl From<CheckBody> for Check {
    fn from(b: CheckBody) -> Self {
        Check {
            subject: b.subject.into(),
            scope_type: b.scope_type,
            scope_id: b.scope_id,
            module: b.module,
            action: b.action,
        }
    }
}

/// Waits for the index to reach `min_revision`; a stale answer is worse than none.
pub async fn await_revision(state: &AppState, min_revision: Option<i64>) -> Result<(), ApiError> {
    let Some(min) = min_revision else {
        return Ok(());
    };
    if state
        .engine
        .wait_for(Revision(min), MIN_REVISION_WAIT)
        .await
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "revision_not_reached",
        format!(
            "this instance is at revision {}, not yet at {min}; retry",
            state.engine.revision()
        ),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
struct CheckResponse {
    allowed: bool,
    revision: Revision,
}

async fn check(
    _: DecisionCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CheckBody>,
) -> Result<Json<CheckResponse>, ApiError> {
    await_revision(&state, body.min_revision).await?;
    let check = Check::from(body);
    // The revision first: the answer is at least as new as the revision it reports.
    let revision = state.engine.revision();
    let allowed = state.engine.check(&check.subject, &check.request());
    metrics::checks(u64::from(allowed), u64::from(!allowed));
    Ok(Json(CheckResponse { allowed, revision }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    checks: Vec<CheckBody>,
    #[serde(default)]
    min_revision: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BatchResponse {
    results: Vec<bool>,
    revision: Revision,
}

async fn check_batch(
    _: DecisionCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Json<BatchResponse>, ApiError> {
    if body.checks.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "checks",
            format!("at most {MAX_BATCH} checks in one batch"),
        ));
    }
    let min = body
        .checks
        .iter()
        .filter_map(|c| c.min_revision)
        .chain(body.min_revision)
        .max();
    await_revision(&state, min).await?;
    let checks: Vec<Check> = body.checks.into_iter().map(Check::from).collect();
    let revision = state.engine.revision();
    let results = state
        .engine
        .check_many(checks.iter().map(|c| (&c.subject, c.request())));
    let allowed = results.iter().filter(|a| **a).count() as u64;
    metrics::checks(allowed, results.len() as u64 - allowed);
    Ok(Json(BatchResponse { results, revision }))
}

/// Whom and what to explain: `subject` or `user_id`, and the request.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    #[serde(default)]
    subject: Option<AuthentikSub>,
    #[serde(default)]
    user_id: Option<Uuid>,
    scope_type: ScopeType,
    scope_id: ScopeId,
    module: Module,
    action: Action,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ExplainResponse {
    allowed: bool,
    is_active: bool,
    /// Why: `allowed`, `denied` (a deny matched), `no_matching_allow`, `inactive_user`.
    reason: &'static str,
    #[schema(value_type = Vec<Contributed>)]
    contributions: Vec<ExplainedContribution>,
    revision: Revision,
}

/// One grant or role permission that matched, as [`ExplainedContribution`]
/// writes it (the engine's `Contribution` with who made it).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // A description only.
struct Contributed {
    effect: crate::model::Effect,
    scope_type: String,
    scope_id: String,
    module: String,
    action: String,
    /// `direct` (a grant to the user) or `role`.
    source: String,
    /// A direct grant's id.
    grant_id: Option<Uuid>,
    /// A role's chain, from the role held to the role holding the permission.
    chain: Option<Vec<String>>,
    assigned_scope_type: Option<String>,
    assigned_scope_id: Option<String>,
    /// Who made the grant (or the role assignment) and when.
    granted: Option<GrantedBy>,
}

#[derive(Serialize)]
struct ExplainedContribution {
    #[serde(flatten)]
    contribution: Contribution,
    /// Who made the grant (or the role assignment) and when; absent for
    /// rows written before the audit log existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    granted: Option<GrantedBy>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct GrantedBy {
    audit_seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    at: time::OffsetDateTime,
    actor: crate::audit::Actor,
    action: String,
}

impl From<crate::audit::Record> for GrantedBy {
    fn from(r: crate::audit::Record) -> Self {
        Self {
            audit_seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
        }
    }
}

async fn explain(
    _: DecisionCaller,
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ExplainQuery>,
) -> Result<Json<ExplainResponse>, ApiError> {
    let subject = match (query.subject, query.user_id) {
        (Some(sub), None) => Subject::Sub(sub),
        (None, Some(id)) => Subject::Id(UserId(id)),
        _ => {
            return Err(ApiError::invalid_field(
                "subject",
                "give subject (an authentik_sub) or user_id",
            ));
        }
    };
    let check = Check {
        subject,
        scope_type: query.scope_type,
        scope_id: query.scope_id,
        module: query.module,
        action: query.action,
    };
    let revision = state.engine.revision();
    let explanation: Explanation = state.engine.explain(&check.subject, &check.request())?;
    let user = state.engine.user_id(&check.subject);
    let mut contributions = Vec::with_capacity(explanation.contributions.len());
    for contribution in explanation.contributions {
        let granted = state
            .audit_log
            .granted_by(user, &contribution)
            .await?
            .map(GrantedBy::from);
        contributions.push(ExplainedContribution {
            contribution,
            granted,
        });
    }
    Ok(Json(ExplainResponse {
        allowed: explanation.allowed,
        is_active: explanation.is_active,
        reason: explanation.reason,
        contributions,
        revision,
    }))
}
