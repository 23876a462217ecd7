//! Importing a Casbin policy into the store, and exporting the store as one.

use std::time::Duration;

use super::ServiceError;
use crate::authz::casbin::import::{self, ExportInput, ImportPlan, Verified};
use crate::authz::casbin::{CasbinError, Enforcer, Model};
use crate::model::{Revision, ScopeType};
use crate::store::{PolicyRow, Store};

const MODEL_SETTING: &str = "casbin_model";
const SCOPE_TYPE_SETTING: &str = "casbin_scope_type";

impl From<CasbinError> for ServiceError {
    fn from(e: CasbinError) -> Self {
        ServiceError::Invalid(e.to_string())
    }
}

/// The scope type a model's requests map to unless told otherwise.
pub fn default_scope_type(model: &Model) -> ScopeType {
    let name = if model.request.iter().any(|f| f == "dom") {
        "domain"
    } else {
        "casbin"
    };
    ScopeType::parse(name).expect("a valid scope type")
}

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub plan: ImportPlan,
    pub verified: Verified,
    pub revision: Revision,
}

/// Plans the import, checks its decisions against Casbin's for up to
/// `verify_for`, then writes it in one transaction.
pub async fn import(
    store: &Store,
    enforcer: &Enforcer,
    model_text: &str,
    scope_type: &ScopeType,
    verify_for: Duration,
) -> Result<ImportReport, ServiceError> {
    let plan = import::plan(enforcer, scope_type)?;
    let verified = import::verify(enforcer, &plan, scope_type, verify_for)?;
    let revision = store.import_policy(&plan).await?;
    store.put_setting(MODEL_SETTING, model_text).await?;
    store
        .put_setting(SCOPE_TYPE_SETTING, scope_type.as_str())
        .await?;
    tracing::info!(%revision, users = plan.users.len(), roles = plan.roles.len(), "casbin policy imported");
    Ok(ImportReport {
        plan,
        verified,
        revision,
    })
}

/// The store as Casbin CSV for `model`, or for the model last imported.
pub async fn export(
    store: &Store,
    model: Option<&str>,
    scope_type: Option<&ScopeType>,
) -> Result<String, ServiceError> {
    let model_text = match model {
        Some(text) => text.to_owned(),
        None => store.setting(MODEL_SETTING).await?.ok_or_else(|| {
            ServiceError::Invalid("no Casbin model was imported here: give one with --model".into())
        })?,
    };
    let model = Model::parse(&model_text)?;
    let scope_type = match scope_type {
        Some(t) => t.clone(),
        None => match store.setting(SCOPE_TYPE_SETTING).await? {
            Some(t) if model.request.iter().any(|f| f == "dom") == (t != "casbin") => {
                ScopeType::parse(t).map_err(|e| ServiceError::Internal(e.to_string()))?
            }
            _ => default_scope_type(&model),
        },
    };
    let mut input = ExportInput::default();
    let mut subs = std::collections::HashMap::new();
    store
        .load_policy(|row| {
            match row {
                PolicyRow::User(user) => {
                    subs.insert(user.id, user.authentik_sub);
                }
                PolicyRow::Parent { role, parent } => input.role_parents.push((role, parent)),
                PolicyRow::RolePermission { role, permission } => {
                    input.role_permissions.push((role, permission))
                }
                PolicyRow::Grant(grant) => {
                    if let Some(sub) = subs.get(&grant.user_id) {
                        input
                            .grants
                            .push((sub.clone(), grant.permission, grant.effect));
                    }
                }
                PolicyRow::Assignment {
                    user_id,
                    assignment,
                } => {
                    if let Some(sub) = subs.get(&user_id) {
                        input.assignments.push((sub.clone(), assignment));
                    }
                }
                PolicyRow::Role { .. } | PolicyRow::Skipped { .. } => {}
            }
            Ok(())
        })
        .await?;
    Ok(import::export(&model, &scope_type, &input)?)
}
