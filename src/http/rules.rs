//! The back office's rule tree (admin CRUD, role bindings), the permission
//! catalog, and what a signed-in user sees of them: `/me/menus`, `/me/buttons`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{AdminCaller, JsonBody, QueryParams, Viewer, nullable, path_param};
use super::openapi::{Api, Auth, Doc};
use super::roles::Deleted;
use crate::model::{
    Action, CatalogModule, Module, RoleName, Rule, RuleKind, RuleName, RuleText, ScopeId, ScopeType,
};
use crate::model::{Capability, Description, Revision};
use crate::service::directory::CatalogMode;
use crate::service::menus::MenuNode;

pub fn routes() -> Api {
    use Auth::{Admin, Viewer};
    Api::new("menus")
        .route(
            "/admin/rules",
            get(list).post(create),
            &[
                Doc::get("Every rule", Admin(Capability::Read)).answers::<RuleList>(&[200]),
                Doc::post("Create a rule (201)", Admin(Capability::RolesWrite))
                    .takes::<NewRule>()
                    .answers::<Rule>(&[201]),
            ],
        )
        .route(
            "/admin/rules/{name}",
            get(show).patch(update).delete(delete),
            &[
                Doc::get(
                    "One rule and the roles bound to it",
                    Admin(Capability::Read),
                )
                .answers::<RuleWithRoles>(&[200]),
                Doc::patch("Change or move a rule", Admin(Capability::RolesWrite))
                    .takes::<RulePatch>()
                    .answers::<RuleChanged>(&[200]),
                Doc::delete(
                    "Delete a rule (its subtree with ?cascade=true)",
                    Admin(Capability::RolesWrite),
                )
                .query::<DeleteQuery>()
                .answers::<Deleted>(&[200]),
            ],
        )
        .route(
            "/admin/roles/{name}/rules",
            get(role_rules).put(set_role_rules),
            &[
                Doc::get("The rules a role is bound to", Admin(Capability::Read))
                    .answers::<RoleRules>(&[200]),
                Doc::put(
                    "Bind a role to exactly these rules",
                    Admin(Capability::RolesWrite),
                )
                .takes::<RoleRules>()
                .answers::<RoleRulesChanged>(&[200]),
            ],
        )
        .route(
            "/admin/catalog",
            get(catalog),
            &[Doc::get(
                "Declared modules and actions, and what is undeclared",
                Admin(Capability::Read),
            )
            .answers::<Catalog>(&[200])],
        )
        .route(
            "/admin/catalog/{module}",
            axum::routing::put(declare).delete(undeclare),
            &[
                Doc::put(
                    "Declare a module and its actions",
                    Admin(Capability::RolesWrite),
                )
                .takes::<Declaration>()
                .answers::<CatalogModule>(&[200]),
                Doc::delete(
                    "Remove a module from the catalog",
                    Admin(Capability::RolesWrite),
                )
                .answers_nothing(),
            ],
        )
        .route(
            "/me/menus",
            get(my_menus),
            &[Doc::get("The menu tree the caller may see", Viewer)
                .query::<MenuQuery>()
                .answers::<Menus>(&[200])],
        )
        .route(
            "/me/buttons",
            get(my_buttons),
            &[Doc::get("The buttons the caller may use", Viewer)
                .query::<MenuQuery>()
                .answers::<Buttons>(&[200])],
        )
}

fn rule_name(raw: String) -> Result<RuleName, ApiError> {
    path_param("name", raw, RuleName::parse)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRule {
    name: RuleName,
    kind: RuleKind,
    #[serde(default)]
    parent: Option<RuleName>,
    title: RuleText,
    #[serde(default)]
    path: Option<RuleText>,
    #[serde(default)]
    component: Option<RuleText>,
    #[serde(default)]
    icon: Option<RuleText>,
    #[serde(default)]
    weight: i32,
    #[serde(default)]
    hidden: bool,
    module: Module,
    action: Action,
}

/// The fields to change; `null` clears an optional one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RulePatch {
    name: Option<RuleName>,
    kind: Option<RuleKind>,
    #[serde(default, deserialize_with = "nullable")]
    parent: Option<Option<RuleName>>,
    title: Option<RuleText>,
    #[serde(default, deserialize_with = "nullable")]
    path: Option<Option<RuleText>>,
    #[serde(default, deserialize_with = "nullable")]
    component: Option<Option<RuleText>>,
    #[serde(default, deserialize_with = "nullable")]
    icon: Option<Option<RuleText>>,
    weight: Option<i32>,
    hidden: Option<bool>,
    module: Option<Module>,
    action: Option<Action>,
}

impl RulePatch {
    fn apply(self, rule: Rule) -> Rule {
        Rule {
            name: self.name.unwrap_or(rule.name),
            kind: self.kind.unwrap_or(rule.kind),
            parent: self.parent.unwrap_or(rule.parent),
            title: self.title.unwrap_or(rule.title),
            path: self.path.unwrap_or(rule.path),
            component: self.component.unwrap_or(rule.component),
            icon: self.icon.unwrap_or(rule.icon),
            weight: self.weight.unwrap_or(rule.weight),
            hidden: self.hidden.unwrap_or(rule.hidden),
            module: self.module.unwrap_or(rule.module),
            action: self.action.unwrap_or(rule.action),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct RuleList {
    rules: Vec<Rule>,
}

#[derive(Serialize, ToSchema)]
struct RuleWithRoles {
    rule: Rule,
    roles: Vec<RoleName>,
}

#[derive(Serialize, ToSchema)]
struct RuleChanged {
    rule: Rule,
    revision: Revision,
}

#[derive(Serialize, ToSchema)]
struct RoleRulesChanged {
    rules: Vec<RuleName>,
    revision: Revision,
}

/// The catalog's mode, its declared modules, and what is used but undeclared.
#[derive(Serialize, ToSchema)]
struct Catalog {
    mode: CatalogMode,
    modules: Vec<CatalogModule>,
    undeclared: Vec<Undeclared>,
}

/// A module and action used somewhere but not declared.
#[derive(Serialize, ToSchema)]
struct Undeclared {
    module: String,
    action: String,
}

#[derive(Serialize, ToSchema)]
struct Menus {
    menus: Vec<MenuNode>,
    revision: Revision,
}

#[derive(Serialize, ToSchema)]
struct Buttons {
    buttons: Vec<RuleName>,
    revision: Revision,
}

async fn list(_: AdminCaller, State(state): State<AppState>) -> Result<Json<RuleList>, ApiError> {
    Ok(Json(RuleList {
        rules: state.directory.rules().await?,
    }))
}

async fn create(
    caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewRule>,
) -> Result<(StatusCode, Json<Rule>), ApiError> {
    let rule = Rule {
        name: body.name,
        kind: body.kind,
        parent: body.parent,
        title: body.title,
        path: body.path,
        component: body.component,
        icon: body.icon,
        weight: body.weight,
        hidden: body.hidden,
        module: body.module,
        action: body.action,
    };
    state
        .directory
        .create_rule(caller.authority(), &rule)
        .await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

async fn show(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RuleWithRoles>, ApiError> {
    let name = rule_name(name)?;
    let rule = state.directory.rule(&name).await?;
    let roles = state.directory.rule_roles(&name).await?;
    Ok(Json(RuleWithRoles { rule, roles }))
}

async fn update(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<RulePatch>,
) -> Result<Json<RuleChanged>, ApiError> {
    let name = rule_name(name)?;
    let rule = patch.apply(state.directory.rule(&name).await?);
    let revision = state
        .directory
        .update_rule(caller.authority(), &name, &rule)
        .await?;
    Ok(Json(RuleChanged { rule, revision }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Delete the rules under it too.
    #[serde(default)]
    cascade: bool,
}

async fn delete(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    let name = rule_name(name)?;
    let revision = state
        .directory
        .delete_rule(caller.authority(), &name, query.cascade)
        .await?;
    Ok(Json(Deleted::new(revision)))
}

async fn role_rules(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RoleRules>, ApiError> {
    let role = path_param("name", name, RoleName::parse)?;
    Ok(Json(RoleRules {
        rules: state.directory.role_rules(&role).await?,
    }))
}

/// The rules a role is bound to.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RoleRules {
    rules: Vec<RuleName>,
}

async fn set_role_rules(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<RoleRules>,
) -> Result<Json<RoleRulesChanged>, ApiError> {
    let role = path_param("name", name, RoleName::parse)?;
    let revision = state
        .directory
        .set_role_rules(caller.authority(), &role, &body.rules)
        .await?;
    Ok(Json(RoleRulesChanged {
        rules: state.directory.role_rules(&role).await?,
        revision,
    }))
}

async fn catalog(_: AdminCaller, State(state): State<AppState>) -> Result<Json<Catalog>, ApiError> {
    Ok(Json(Catalog {
        mode: state.directory.catalog_mode(),
        modules: state.directory.catalog().await?,
        undeclared: state
            .directory
            .undeclared()
            .await?
            .into_iter()
            .map(|(module, action)| Undeclared { module, action })
            .collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Declaration {
    #[serde(default = "Description::empty")]
    description: Description,
    actions: Vec<Action>,
}

async fn declare(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(module): Path<String>,
    JsonBody(body): JsonBody<Declaration>,
) -> Result<Json<CatalogModule>, ApiError> {
    let module = path_param("module", module, Module::parse)?;
    let mut actions = body.actions;
    actions.sort();
    actions.dedup();
    let declared = CatalogModule {
        module,
        description: body.description.into(),
        actions,
    };
    state
        .directory
        .declare(caller.authority(), &declared)
        .await?;
    Ok(Json(declared))
}

async fn undeclare(
    caller: AdminCaller,
    State(state): State<AppState>,
    Path(module): Path<String>,
) -> Result<StatusCode, ApiError> {
    let module = path_param("module", module, Module::parse)?;
    state
        .directory
        .undeclare(caller.authority(), &module)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The scope a back office asks about; both or neither.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MenuQuery {
    scope_type: Option<ScopeType>,
    scope_id: Option<ScopeId>,
    /// Read by the `Viewer` extractor; named here so that it is not unknown.
    #[serde(default, rename = "frontend_token")]
    _frontend_token: Option<String>,
}

/// The scope asked about, or the configured menu scope: both or neither.
pub(super) fn menu_scope(
    state: &AppState,
    scope_type: Option<ScopeType>,
    scope_id: Option<ScopeId>,
) -> Result<(ScopeType, ScopeId), ApiError> {
    match (scope_type, scope_id) {
        (Some(t), Some(i)) => Ok((t, i)),
        (None, None) => Ok(state.settings.menu_scope.clone()),
        _ => Err(ApiError::invalid_field(
            "scope_id",
            "give scope_type and scope_id together, or neither",
        )),
    }
}

async fn my_menus(
    State(state): State<AppState>,
    viewer: Viewer,
    QueryParams(query): QueryParams<MenuQuery>,
) -> Result<Json<Menus>, ApiError> {
    let (scope_type, scope_id) = menu_scope(&state, query.scope_type, query.scope_id)?;
    let view = state
        .directory
        .menu_view(viewer.user_id(), &scope_type, &scope_id)
        .await?;
    Ok(Json(Menus {
        menus: view.menus,
        revision: view.revision,
    }))
}

async fn my_buttons(
    State(state): State<AppState>,
    viewer: Viewer,
    QueryParams(query): QueryParams<MenuQuery>,
) -> Result<Json<Buttons>, ApiError> {
    let (scope_type, scope_id) = menu_scope(&state, query.scope_type, query.scope_id)?;
    let view = state
        .directory
        .menu_view(viewer.user_id(), &scope_type, &scope_id)
        .await?;
    Ok(Json(Buttons {
        buttons: view.buttons,
        revision: view.revision,
    }))
}
