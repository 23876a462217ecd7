//! The OpenID AuthZEN Authorization API 1.0, mapped onto the same engine:
//!
//! | AuthZEN | memberd |
//! |---|---|
//! | `subject` `{"type": "user", "id": S}` | the user with `authentik_sub` S (`"type": "user_id"`: by id) |
//! | `resource` `{"type": T, "id": I}` | scope `(T, I)` |
//! | `resource.properties.module` (or `action.properties.module`) | module |
//! | `action.name` | action |
//! | `context` | accepted; `context.min_revision` as in `/v1/check` |

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::AppState;
use super::decisions::{BATCH_BODY_BYTES, MAX_BATCH, await_revision};
use super::error::ApiError;
use super::extract::{DecisionCaller, JsonBody};
use super::openapi::{Api, Auth, Doc};
use crate::authz::index::Request;
use crate::model::{Action, AuthentikSub, Module, ScopeId, ScopeType, UserId};
use crate::service::access::Subject;

pub fn routes() -> Api {
    Api::new("authzen")
        .route(
            "/access/v1/evaluation",
            post(evaluation),
            &[Doc::post("An AuthZEN access evaluation", Auth::Decision)
                .takes::<SingleEvaluation>()
                .answers::<EvaluationAnswer>(&[200])],
        )
        .route(
            "/access/v1/evaluations",
            post(evaluations).layer(DefaultBodyLimit::max(BATCH_BODY_BYTES)),
            &[Doc::post("AuthZEN evaluations in a batch", Auth::Decision)
                .takes::<Batch>()
                .answers::<BatchAnswer>(&[200])],
        )
        .route(
            "/.well-known/authzen-configuration",
            get(configuration),
            &[Doc::get("AuthZEN metadata", Auth::Public).answers::<Configuration>(&[200])],
        )
}

/// A subject or a resource.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = AuthzenEntity)]
struct Entity {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    /// Free-form, as AuthZEN leaves it; memberd reads `module` from a resource's.
    #[serde(default)]
    #[schema(value_type = Object)]
    properties: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = AuthzenAction)]
struct ActionBody {
    name: String,
    /// Free-form; `module` is read here when the resource has none.
    #[serde(default)]
    #[schema(value_type = Object)]
    properties: Map<String, Value>,
}

/// One evaluation; in a batch, any part left out comes from the batch's defaults.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = AuthzenEvaluation)]
struct Evaluation {
    #[serde(default)]
    subject: Option<Entity>,
    #[serde(default)]
    resource: Option<Entity>,
    #[serde(default)]
    action: Option<ActionBody>,
    /// Free-form; `min_revision` waits for the index as in `/v1/check`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Map<String, Value>>,
}

/// One evaluation on its own: every part is needed ([`Evaluation`], as
/// the description shows it alone).
#[derive(utoipa::ToSchema)]
#[schema(as = AuthzenSingleEvaluation)]
#[allow(dead_code)]
struct SingleEvaluation {
    subject: Entity,
    resource: Entity,
    action: ActionBody,
    /// Free-form; `min_revision` waits for the index as in `/v1/check`.
    #[schema(value_type = Option<Object>)]
    context: Option<Map<String, Value>>,
}

/// An evaluation in the engine's terms.
struct Question {
    subject: Subject,
    scope_type: ScopeType,
    scope_id: ScopeId,
    module: Module,
    action: Action,
    min_revision: Option<i64>,
}

fn field<T>(name: &str, parsed: Result<T, impl std::fmt::Display>) -> Result<T, ApiError> {
    parsed.map_err(|e| ApiError::invalid_field(name, e.to_string()))
}

impl Evaluation {
    fn merged(self, defaults: &Evaluation) -> Evaluation {
        Evaluation {
            subject: self.subject.or_else(|| defaults.subject.clone()),
            resource: self.resource.or_else(|| defaults.resource.clone()),
            action: self.action.or_else(|| defaults.action.clone()),
            context: self.context.or_else(|| defaults.context.clone()),
        }
    }

    fn question(self) -> Result<Question, ApiError> {
        let subject = self
            .subject
            .ok_or_else(|| ApiError::invalid_field("subject", "missing subject"))?;
        let resource = self
            .resource
            .ok_or_else(|| ApiError::invalid_field("resource", "missing resource"))?;
        let action = self
            .action
            .ok_or_else(|| ApiError::invalid_field("action", "missing action"))?;
        let subject = match subject.kind.as_str() {
            "user" => Subject::Sub(field("subject.id", AuthentikSub::parse(subject.id))?),
            "user_id" => Subject::Id(UserId(field("subject.id", Uuid::parse_str(&subject.id))?)),
            other => {
                return Err(ApiError::invalid_field(
                    "subject.type",
                    format!("unknown subject type {other:?} (user or user_id)"),
                ));
            }
        };
        let module = resource
            .properties
            .get("module")
            .or_else(|| action.properties.get("module"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::invalid_field("resource.properties.module", "missing module")
            })?;
        let min_revision = self
            .context
            .as_ref()
            .and_then(|c| c.get("min_revision"))
            .and_then(Value::as_i64);
        Ok(Question {
            subject,
            scope_type: field("resource.type", ScopeType::parse(resource.kind))?,
            scope_id: field("resource.id", ScopeId::parse(resource.id))?,
            module: field("resource.properties.module", Module::parse(module))?,
            action: field("action.name", Action::parse(action.name))?,
            min_revision,
        })
    }
}

impl Question {
    fn request(&self) -> Request<'_> {
        Request {
            scope_type: self.scope_type.as_str(),
            scope_id: self.scope_id.as_str(),
            module: self.module.as_str(),
            action: self.action.as_str(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuthzenDecision)]
struct Decision {
    decision: bool,
}

/// The index revision a decision was made at.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuthzenDecisionContext)]
struct DecisionContext {
    revision: crate::model::Revision,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuthzenEvaluationAnswer)]
struct EvaluationAnswer {
    decision: bool,
    context: DecisionContext,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuthzenBatchAnswer)]
struct BatchAnswer {
    evaluations: Vec<Decision>,
    context: DecisionContext,
}

async fn evaluation(
    _: DecisionCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Evaluation>,
) -> Result<Json<EvaluationAnswer>, ApiError> {
    let question = body.question()?;
    await_revision(&state, question.min_revision).await?;
    let revision = state.engine.revision();
    let decision = state.engine.check(&question.subject, &question.request());
    Ok(Json(EvaluationAnswer {
        decision,
        context: DecisionContext { revision },
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = AuthzenOptions)]
struct Options {
    /// `execute_all` when left out.
    #[serde(default)]
    evaluations_semantic: Option<Semantic>,
}

/// When a batch stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[schema(as = AuthzenSemantic)]
#[serde(rename_all = "snake_case")]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

/// Evaluations, with defaults for the parts an item leaves out.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = AuthzenBatch)]
struct Batch {
    #[serde(flatten)]
    defaults: Evaluation,
    #[serde(default)]
    evaluations: Option<Vec<Evaluation>>,
    #[serde(default)]
    options: Option<Options>,
}

async fn evaluations(
    _: DecisionCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Batch>,
) -> Result<Json<BatchAnswer>, ApiError> {
    let items = match body.evaluations {
        // Without `evaluations`, the request is a single evaluation.
        None => vec![Evaluation::default()],
        Some(items) if items.len() > MAX_BATCH => {
            return Err(ApiError::invalid_field(
                "evaluations",
                format!("at most {MAX_BATCH} evaluations"),
            ));
        }
        Some(items) => items,
    };
    let stop_at = match body.options.and_then(|o| o.evaluations_semantic) {
        None | Some(Semantic::ExecuteAll) => None,
        Some(Semantic::DenyOnFirstDeny) => Some(false),
        Some(Semantic::PermitOnFirstPermit) => Some(true),
    };
    let questions = items
        .into_iter()
        .map(|item| item.merged(&body.defaults).question())
        .collect::<Result<Vec<_>, _>>()?;
    await_revision(
        &state,
        questions.iter().filter_map(|q| q.min_revision).max(),
    )
    .await?;
    let revision = state.engine.revision();
    let mut decisions = Vec::with_capacity(questions.len());
    for question in &questions {
        let decision = state.engine.check(&question.subject, &question.request());
        decisions.push(Decision { decision });
        if stop_at == Some(decision) {
            break;
        }
    }
    Ok(Json(BatchAnswer {
        evaluations: decisions,
        context: DecisionContext { revision },
    }))
}

/// Where the endpoints are, by the address the caller used (or `MEMBERD_PUBLIC_URL`).
/// Where a policy enforcement point finds the decision endpoints.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuthzenConfiguration)]
struct Configuration {
    policy_decision_point: String,
    access_evaluation_endpoint: String,
    access_evaluations_endpoint: String,
}

async fn configuration(State(state): State<AppState>, headers: HeaderMap) -> Json<Configuration> {
    let base = match &state.settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    Json(Configuration {
        access_evaluation_endpoint: format!("{base}/access/v1/evaluation"),
        access_evaluations_endpoint: format!("{base}/access/v1/evaluations"),
        policy_decision_point: base,
    })
}
