//! SCIM 2.0 (RFC 7643/7644) inbound provisioning: identity providers push
//! users and groups here. Users are memberd's users; a group linked to a role
//! (`PUT /admin/scim/groups/{id}/role`) makes its members hold the role.
//!
//! Authentication: `Authorization: Bearer CLIENT_KEY:API_KEY` of an API
//! client (give the provider a client of its own, limited to `/scim/**`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{AdminCaller, JsonBody, client_info};
use super::openapi::{Api, Auth, Doc, SCIM_JSON};
use crate::authn::Secret;
use crate::model::Capability;
use crate::model::{ApiClient, RoleName, UserId};
use crate::service::ServiceError;
use crate::service::clients::{ClientAuthError, ClientRequest, Freshness};
use crate::service::provisioning::{GroupFields, GroupOperation, UserFields};
use crate::store::{ScimFilter, ScimGroupRow, ScimUserRow};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const MAX_PAGE: i64 = 200;
/// What SCIM writes take: its own media type, and plain JSON as many providers send.
const SCIM_TAKES: &[&str] = &[SCIM_JSON, "application/json"];

/// A list's query (RFC 7644 §3.4.2).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
struct ListQuery {
    /// `userName eq "…"`, `externalId eq "…"` (users); `displayName eq "…"` (groups).
    filter: Option<String>,
    /// 1-based; less than 1 reads as 1 (RFC 7644 §3.4.2.4).
    startIndex: Option<i64>,
    /// At most 200; less than 0 reads as 0.
    count: Option<i64>,
}

/// A discovery document (RFC 7643 §5–7): described by its own schema URN.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ScimDiscovery {
    schemas: Vec<String>,
    #[schema(value_type = Object)]
    meta: Value,
}

/// Discovery documents, as a list.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
struct ScimDiscoveryList {
    schemas: Vec<String>,
    totalResults: i64,
    #[schema(value_type = Vec<Object>)]
    Resources: Vec<Value>,
}

pub fn routes() -> Api {
    // Discovery is open, as RFC 7644 §4 lets it be: it describes the
    // service, never its data.
    use Auth::{Public, Scim};
    group_routes()
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
            &[
                Doc::get("SCIM: what this service provider supports", Public)
                    .answers_as::<ScimDiscovery>(SCIM_JSON, &[200]),
            ],
        )
        .route(
            "/scim/v2/ResourceTypes",
            get(resource_types),
            &[Doc::get("SCIM: resource types", Public)
                .answers_as::<ScimDiscoveryList>(SCIM_JSON, &[200])],
        )
        .route(
            "/scim/v2/Schemas",
            get(schemas),
            &[
                Doc::get("SCIM: schemas", Public)
                    .answers_as::<ScimDiscoveryList>(SCIM_JSON, &[200]),
            ],
        )
        .route(
            "/scim/v2/Users",
            get(list_users).post(create_user),
            &[
                Doc::get("SCIM: list or filter users", Scim)
                    .query::<ListQuery>()
                    .answers_as::<ScimUserList>(SCIM_JSON, &[200]),
                Doc::post("SCIM: create a user", Scim)
                    .takes_as::<ScimUserInput>(SCIM_TAKES)
                    .answers_as::<ScimUser>(SCIM_JSON, &[201]),
            ],
        )
        .route(
            "/scim/v2/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
            &[
                Doc::get("SCIM: one user", Scim).answers_as::<ScimUser>(SCIM_JSON, &[200]),
                Doc::put("SCIM: replace a user", Scim)
                    .takes_as::<ScimUserInput>(SCIM_TAKES)
                    .answers_as::<ScimUser>(SCIM_JSON, &[200]),
                Doc::patch("SCIM: patch a user", Scim)
                    .takes_as::<ScimPatchOp>(SCIM_TAKES)
                    .answers_as::<ScimUser>(SCIM_JSON, &[200]),
                Doc::delete("SCIM: deprovision a user", Scim).answers_nothing(),
            ],
        )
}

/// An error in SCIM's shape (RFC 7644 §3.12).
struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

impl ScimError {
    fn new(status: StatusCode, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, None, "no such user")
    }
}

/// How a SCIM error is written (RFC 7644 §3.12).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScimErrorBody {
    schemas: Vec<String>,
    /// The HTTP status, as a string.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scim_type: Option<String>,
    detail: String,
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let body = ScimErrorBody {
            schemas: vec![ERROR_SCHEMA.to_owned()],
            status: self.status.as_u16().to_string(),
            scim_type: self.scim_type.map(str::to_owned),
            detail: self.detail,
        };
        scim_json(self.status, &body)
    }
}

impl From<ServiceError> for ScimError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(what) => {
                Self::new(StatusCode::NOT_FOUND, None, format!("no such {what}"))
            }
            ServiceError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                Some("uniqueness"),
                format!("a {what} exists"),
            ),
            ServiceError::Invalid(detail) => Self::bad("invalidValue", detail),
            other => {
                tracing::error!(error = %other, "SCIM request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error")
            }
        }
    }
}

/// A NUL in the path or query, refused before routing.
pub(super) fn nul_refused() -> Response {
    ScimError::bad("invalidValue", "text may not contain NUL characters").into_response()
}

fn scim_json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    response
}

/// An API client presenting `Bearer CLIENT_KEY:API_KEY`, given `scim`.
struct ScimCaller(ApiClient);

impl FromRequestParts<AppState> for ScimCaller {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ScimError> {
        let unauthorized = || {
            ScimError::new(
                StatusCode::UNAUTHORIZED,
                None,
                "send Authorization: Bearer CLIENT_KEY:API_KEY",
            )
        };
        let token = super::extract::bearer(&parts.headers).ok_or_else(unauthorized)?;
        let (client_key, api_key) = token.trim().split_once(':').ok_or_else(unauthorized)?;
        let api_key = Secret::new(api_key);
        let info = client_info(parts, state);
        let ip = info.ip.as_deref().and_then(|ip| ip.parse().ok());
        let request = ClientRequest {
            client_key,
            api_key: &api_key,
            origin: None,
            ip,
            path: parts.uri.path(),
            needs: Capability::Scim,
        };
        match state
            .client_auth
            .authenticate(request, Freshness::Strict)
            .await
        {
            Ok(client) => Ok(ScimCaller(client)),
            Err(e @ ClientAuthError::MissingCapability(_)) => {
                Err(ScimError::new(StatusCode::FORBIDDEN, None, e.to_string()))
            }
            Err(e) => Err(ScimError::new(
                StatusCode::UNAUTHORIZED,
                None,
                e.to_string(),
            )),
        }
    }
}

fn base_url(parts_host: Option<&str>, state: &AppState) -> String {
    match &state.settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", parts_host.unwrap_or("localhost")),
    }
}

/// When a resource was made and changed, and where it lives.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScimMeta {
    resource_type: String,
    #[schema(format = DateTime)]
    created: String,
    #[schema(format = DateTime)]
    last_modified: String,
    location: String,
}

impl ScimMeta {
    fn new(
        resource_type: &str,
        created: time::OffsetDateTime,
        modified: time::OffsetDateTime,
        location: String,
    ) -> Self {
        let when = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        Self {
            resource_type: resource_type.to_owned(),
            created: when(created),
            last_modified: when(modified),
            location,
        }
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct ScimName {
    formatted: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct ScimEmail {
    value: String,
    primary: bool,
}

/// A user as SCIM shows it: the attributes memberd keeps.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScimUser {
    schemas: Vec<String>,
    id: uuid::Uuid,
    user_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<ScimName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emails: Option<Vec<ScimEmail>>,
    active: bool,
    meta: ScimMeta,
}

fn scim_user(row: &ScimUserRow, base: &str) -> ScimUser {
    ScimUser {
        schemas: vec![USER_SCHEMA.to_owned()],
        id: row.user_id,
        user_name: row.user_name.clone(),
        external_id: row.external_id.clone(),
        display_name: row.display_name.clone(),
        name: row
            .display_name
            .clone()
            .map(|formatted| ScimName { formatted }),
        emails: row.email.clone().map(|value| {
            vec![ScimEmail {
                value,
                primary: true,
            }]
        }),
        active: row.is_active,
        meta: ScimMeta::new(
            "User",
            row.created_at,
            row.updated_at,
            format!("{base}/scim/v2/Users/{}", row.user_id),
        ),
    }
}

/// A user as a provider sends it. Attributes memberd does not keep, and
/// extension schemas, are accepted and ignored: free-form beyond these.
#[derive(utoipa::ToSchema)]
#[schema(as = ScimUserRequest)]
#[allow(dead_code, non_snake_case)]
struct ScimUserInput {
    /// Read by no one here (issue 17 checks it).
    #[schema(value_type = Option<Value>)]
    schemas: Option<Vec<String>>,
    #[schema(
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        max_length = 255
    )]
    userName: String,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", max_length = 255)]
    externalId: Option<String>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", max_length = 255)]
    displayName: Option<String>,
    active: Option<bool>,
    #[schema(value_type = Option<Object>)]
    name: Option<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    emails: Option<Value>,
}

/// A PATCH request (RFC 7644 §3.5.2).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
struct ScimPatchOp {
    #[schema(value_type = Option<Value>)]
    schemas: Option<Vec<String>>,
    Operations: Vec<ScimOperation>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ScimOperation {
    /// `add`, `remove` or `replace`.
    op: String,
    path: Option<String>,
    /// What the operation sets: free-form, by the path.
    #[schema(value_type = Object)]
    value: Option<Value>,
}

/// A page of resources.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ScimList<T> {
    schemas: Vec<String>,
    total_results: i64,
    start_index: i64,
    items_per_page: usize,
    #[serde(rename = "Resources")]
    resources: Vec<T>,
}

/// The longest userName, externalId or displayName memberd keeps.
const SCIM_TEXT_MAX: usize = 255;

/// A text attribute memberd keeps: userName and externalId name the user
/// everywhere, so printable, and no longer than a subject may be.
fn scim_text(attribute: &str, value: &Value) -> Result<String, ScimError> {
    let text = value
        .as_str()
        .ok_or_else(|| ScimError::bad("invalidValue", format!("{attribute} must be a string")))?;
    if text.chars().count() > SCIM_TEXT_MAX || text.chars().any(char::is_control) {
        return Err(ScimError::bad(
            "invalidValue",
            format!("{attribute}: at most {SCIM_TEXT_MAX} printable characters"),
        ));
    }
    Ok(text.to_owned())
}

/// Reads the attributes present in `resource` (a User, or a PATCH value)
/// into `fields`, leniently: others are ignored.
fn absorb(fields: &mut UserFields, resource: &Value) -> Result<(), ScimError> {
    let Some(object) = resource.as_object() else {
        return Err(ScimError::bad("invalidValue", "expected an object"));
    };
    for (key, value) in object {
        set_attribute(fields, key, value)?;
    }
    Ok(())
}

fn set_attribute(fields: &mut UserFields, attribute: &str, value: &Value) -> Result<(), ScimError> {
    let text = |v: &Value| scim_text(attribute, v);
    match attribute.to_ascii_lowercase().as_str() {
        "username" => fields.user_name = Some(text(value)?),
        "externalid" => fields.external_id = Some(text(value)?),
        "displayname" => fields.display_name = Some(text(value)?),
        "name" => {
            let formatted = value["formatted"].as_str().map(str::to_owned).or_else(|| {
                let parts: Vec<&str> = [&value["givenName"], &value["familyName"]]
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            });
            if fields.display_name.is_none() {
                fields.display_name = formatted;
            }
        }
        "emails" => {
            let emails = value
                .as_array()
                .ok_or_else(|| ScimError::bad("invalidValue", "emails must be an array"))?;
            let chosen = emails
                .iter()
                .find(|e| e["primary"] == true)
                .or_else(|| emails.first());
            fields.email = chosen.and_then(|e| e["value"].as_str()).map(str::to_owned);
        }
        "active" => {
            fields.active = Some(match value {
                Value::Bool(b) => *b,
                // Some providers send booleans as strings in PATCH values.
                Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Err(ScimError::bad("invalidValue", "active must be a boolean")),
            })
        }
        _ => {}
    }
    Ok(())
}

fn parse_body(bytes: &Bytes) -> Result<Value, ScimError> {
    if super::extract::json_carries_nul(bytes) {
        return Err(ScimError::bad(
            "invalidValue",
            "text may not contain NUL characters",
        ));
    }
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("malformed JSON: {e}")))?;
    if !body.is_object() {
        return Err(ScimError::bad(
            "invalidSyntax",
            "the body must be a JSON object",
        ));
    }
    Ok(body)
}

fn user_id(raw: &str) -> Result<UserId, ScimError> {
    raw.parse::<Uuid>()
        .map(UserId)
        .map_err(|_| ScimError::not_found())
}

fn host(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

async fn create_user(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let mut fields = UserFields::default();
    absorb(&mut fields, &parse_body(&body)?)?;
    let row = state.provisioning.create_user(&client, &fields).await?;
    Ok(scim_json(
        StatusCode::CREATED,
        &scim_user(&row, &base_url(host(&headers).as_deref(), &state)),
    ))
}

async fn get_user(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let row = state.provisioning.user(&client, user_id(&id)?).await?;
    Ok(user_response(&state, &headers, &row))
}

/// A filter of the one form providers send: `ATTRIBUTE eq "VALUE"`.
/// Answers the attribute (lower-cased) and the value.
fn eq_filter(filter: Option<&str>) -> Result<Option<(String, String)>, ScimError> {
    let Some(filter) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let unsupported = || ScimError::bad("invalidFilter", format!("unsupported filter: {filter}"));
    let mut parts = filter.splitn(3, ' ');
    let (Some(attribute), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unsupported());
    };
    if !op.eq_ignore_ascii_case("eq") {
        return Err(unsupported());
    }
    let value: String = serde_json::from_str(value.trim()).map_err(|_| unsupported())?;
    Ok(Some((attribute.to_ascii_lowercase(), value)))
}

fn unsupported_filter(filter: Option<&str>) -> ScimError {
    ScimError::bad(
        "invalidFilter",
        format!("unsupported filter: {}", filter.unwrap_or_default()),
    )
}

/// `filter=userName eq "…"` or `externalId eq "…"`.
fn parse_filter(filter: Option<&str>) -> Result<ScimFilter, ScimError> {
    match eq_filter(filter)? {
        None => Ok(ScimFilter::All),
        Some((attribute, value)) if attribute == "username" => Ok(ScimFilter::UserName(value)),
        Some((attribute, value)) if attribute == "externalid" => Ok(ScimFilter::ExternalId(value)),
        Some(_) => Err(unsupported_filter(filter)),
    }
}

/// A list's query: its filter and its page (`startIndex` 1-based).
struct ListParams {
    filter: Option<String>,
    start_index: i64,
    count: i64,
}

impl ListParams {
    fn parse(query: Option<String>) -> Result<Self, ScimError> {
        let params: std::collections::HashMap<String, String> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let number = |name: &str, default: i64| -> Result<i64, ScimError> {
            params.get(name).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| ScimError::bad("invalidValue", format!("{name} must be a number")))
            })
        };
        Ok(Self {
            start_index: number("startIndex", 1)?.max(1),
            count: number("count", 100)?.clamp(0, MAX_PAGE),
            filter: params.get("filter").cloned(),
        })
    }
}

async fn list_users(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ScimError> {
    let ListParams {
        filter,
        start_index,
        count,
    } = ListParams::parse(query)?;
    let filter = parse_filter(filter.as_deref())?;
    let (total, rows) = state
        .provisioning
        .users(&client, &filter, start_index - 1, count)
        .await?;
    let base = base_url(host(&headers).as_deref(), &state);
    let resources: Vec<ScimUser> = rows.iter().map(|r| scim_user(r, &base)).collect();
    Ok(list_response(total, start_index, resources))
}

/// [`ScimList`] of users, as the description shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
struct ScimUserList {
    schemas: Vec<String>,
    totalResults: i64,
    startIndex: i64,
    itemsPerPage: usize,
    Resources: Vec<ScimUser>,
}

/// [`ScimList`] of groups, as the description shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
struct ScimGroupList {
    schemas: Vec<String>,
    totalResults: i64,
    startIndex: i64,
    itemsPerPage: usize,
    Resources: Vec<ScimGroup>,
}

fn list_response<T: serde::Serialize>(total: i64, start_index: i64, resources: Vec<T>) -> Response {
    let list = ScimList {
        schemas: vec![LIST_SCHEMA.to_owned()],
        total_results: total,
        start_index,
        items_per_page: resources.len(),
        resources,
    };
    scim_json(StatusCode::OK, &list)
}

async fn replace_user(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let row = state.provisioning.user(&client, user_id(&id)?).await?;
    let mut fields = UserFields::default();
    absorb(&mut fields, &parse_body(&body)?)?;
    // A replace without `active` leaves the user active (RFC 7643's default).
    fields.active.get_or_insert(true);
    let row = state
        .provisioning
        .update_user(&client, &row, &fields)
        .await?;
    Ok(user_response(&state, &headers, &row))
}

async fn patch_user(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let row = state.provisioning.user(&client, user_id(&id)?).await?;
    let body = parse_body(&body)?;
    if !body["schemas"]
        .as_array()
        .is_some_and(|s| s.iter().any(|v| v == PATCH_SCHEMA))
    {
        return Err(ScimError::bad(
            "invalidSyntax",
            format!("schemas must include {PATCH_SCHEMA}"),
        ));
    }
    let operations = body["Operations"]
        .as_array()
        .ok_or_else(|| ScimError::bad("invalidSyntax", "Operations must be an array"))?;
    let mut fields = UserFields {
        external_id: row.external_id.clone(),
        ..UserFields::default()
    };
    for operation in operations {
        let op = operation["op"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if op != "add" && op != "replace" {
            return Err(ScimError::bad(
                "invalidValue",
                format!("unsupported op {op:?} (add and replace are)"),
            ));
        }
        let value = &operation["value"];
        match operation["path"].as_str() {
            None => absorb(&mut fields, value)?,
            // `emails[type eq "work"].value` and the like set the email.
            Some(path) if path.to_ascii_lowercase().starts_with("emails") => {
                let email = value.as_str().map(str::to_owned).or_else(|| {
                    value
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(|e| e["value"].as_str())
                        .map(str::to_owned)
                });
                fields.email = email;
            }
            Some(path) => set_attribute(&mut fields, path, value)?,
        }
    }
    let row = state
        .provisioning
        .update_user(&client, &row, &fields)
        .await?;
    Ok(user_response(&state, &headers, &row))
}

fn user_response(state: &AppState, headers: &axum::http::HeaderMap, row: &ScimUserRow) -> Response {
    scim_json(
        StatusCode::OK,
        &scim_user(row, &base_url(host(headers).as_deref(), state)),
    )
}

/// Deactivates the user: their grants and roles stay, their sessions end.
async fn delete_user(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ScimError> {
    let row = state.provisioning.user(&client, user_id(&id)?).await?;
    let fields = UserFields {
        external_id: row.external_id.clone(),
        active: Some(false),
        ..UserFields::default()
    };
    state
        .provisioning
        .update_user(&client, &row, &fields)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn service_provider_config() -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": { "supported": true },
            "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
            "filter": { "supported": true, "maxResults": MAX_PAGE },
            "changePassword": { "supported": false },
            "sort": { "supported": false },
            "etag": { "supported": false },
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "API client",
                "description": "Authorization: Bearer CLIENT_KEY:API_KEY of a memberd API client",
            }],
            "meta": { "resourceType": "ServiceProviderConfig" },
        }),
    )
}

async fn resource_types() -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": 2,
            "Resources": [{
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": "User",
                "name": "User",
                "endpoint": "/Users",
                "schema": USER_SCHEMA,
                "meta": { "resourceType": "ResourceType" },
            }, {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": "Group",
                "name": "Group",
                "endpoint": "/Groups",
                "schema": "urn:ietf:params:scim:schemas:core:2.0:Group",
                "meta": { "resourceType": "ResourceType" },
            }],
        }),
    )
}

async fn schemas() -> Response {
    let attribute = |name: &str, kind: &str, required: bool| {
        json!({ "name": name, "type": kind, "multiValued": false, "required": required,
                "mutability": "readWrite", "returned": "default", "uniqueness": "none" })
    };
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": 1,
            "Resources": [{
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
                "id": USER_SCHEMA,
                "name": "User",
                "attributes": [
                    attribute("userName", "string", true),
                    attribute("displayName", "string", false),
                    attribute("active", "boolean", false),
                    { "name": "emails", "type": "complex", "multiValued": true, "required": false,
                      "mutability": "readWrite", "returned": "default" },
                ],
                "meta": { "resourceType": "Schema" },
            }],
        }),
    )
}

// ---- groups -------------------------------------------------------------------

const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

pub fn group_routes() -> Api {
    use Auth::{Admin, Scim};
    // An operator's route, beside the SCIM ones: memberd's own error body.
    let link = Api::new("scim").route(
        "/admin/scim/groups/{id}/role",
        axum::routing::put(link_group_role),
        &[Doc::put(
            "Link a SCIM group to a role (or null)",
            Admin(Capability::Admin),
        )
        .takes::<GroupRole>()
        .answers::<LinkedGroup>(&[200])],
    );
    Api::new("scim")
        .errors_as::<ScimErrorBody>(SCIM_JSON)
        .route(
            "/scim/v2/Groups",
            get(list_groups).post(create_group),
            &[
                Doc::get("SCIM: list or filter groups", Scim)
                    .query::<ListQuery>()
                    .answers_as::<ScimGroupList>(SCIM_JSON, &[200]),
                Doc::post("SCIM: create a group", Scim)
                    .takes_as::<ScimGroupInput>(SCIM_TAKES)
                    .answers_as::<ScimGroup>(SCIM_JSON, &[201]),
            ],
        )
        .route(
            "/scim/v2/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
            &[
                Doc::get("SCIM: one group", Scim).answers_as::<ScimGroup>(SCIM_JSON, &[200]),
                Doc::put("SCIM: replace a group", Scim)
                    .takes_as::<ScimGroupInput>(SCIM_TAKES)
                    .answers_as::<ScimGroup>(SCIM_JSON, &[200]),
                Doc::patch("SCIM: patch a group", Scim)
                    .takes_as::<ScimPatchOp>(SCIM_TAKES)
                    .answers_as::<ScimGroup>(SCIM_JSON, &[200]),
                Doc::delete("SCIM: delete a group", Scim).answers_nothing(),
            ],
        )
        .merge(link)
}

/// The group a path names; an id that is not a UUID names none.
async fn load_group(state: &AppState, raw: &str) -> Result<ScimGroupRow, ScimError> {
    let id: Uuid = raw
        .parse()
        .map_err(|_| ScimError::new(StatusCode::NOT_FOUND, None, "no such group"))?;
    Ok(state.provisioning.group(id).await?)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct ScimMember {
    value: uuid::Uuid,
    display: String,
    #[serde(rename = "$ref")]
    reference: String,
}

/// A group as SCIM shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScimGroup {
    schemas: Vec<String>,
    id: uuid::Uuid,
    display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    members: Vec<ScimMember>,
    meta: ScimMeta,
}

/// A group as a provider sends it; other attributes are ignored.
#[derive(utoipa::ToSchema)]
#[schema(as = ScimGroupRequest)]
#[allow(dead_code, non_snake_case)]
struct ScimGroupInput {
    /// Read by no one here (issue 17 checks it).
    #[schema(value_type = Option<Value>)]
    schemas: Option<Vec<String>>,
    #[schema(
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        max_length = 255
    )]
    displayName: String,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$", max_length = 255)]
    externalId: Option<String>,
    members: Option<Vec<ScimMemberRef>>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ScimMemberRef {
    /// The member's SCIM id.
    value: String,
}

async fn scim_group(
    state: &AppState,
    group: &ScimGroupRow,
    base: &str,
) -> Result<ScimGroup, ScimError> {
    let members = state
        .provisioning
        .members(group.id)
        .await?
        .iter()
        .map(|m| ScimMember {
            value: m.user_id,
            display: m
                .user_name
                .clone()
                .unwrap_or_else(|| m.authentik_sub.clone()),
            reference: format!("{base}/scim/v2/Users/{}", m.user_id),
        })
        .collect();
    Ok(ScimGroup {
        schemas: vec![GROUP_SCHEMA.to_owned()],
        id: group.id,
        display_name: group.display_name.clone(),
        external_id: group.external_id.clone(),
        members,
        meta: ScimMeta::new(
            "Group",
            group.created_at,
            group.updated_at,
            format!("{base}/scim/v2/Groups/{}", group.id),
        ),
    })
}

/// A Group as a POST or PUT gives it: every attribute memberd keeps, so a
/// PUT that leaves one out clears it (RFC 7644 §3.5.1) and displayName,
/// which names the group, is required.
fn group_fields(body: &Value) -> Result<GroupFields, ScimError> {
    let display_name = match &body["displayName"] {
        Value::Null => None,
        value => Some(scim_text("displayName", value)?),
    }
    .filter(|name| !name.trim().is_empty())
    .ok_or_else(|| ScimError::bad("invalidValue", "displayName is required"))?;
    let external_id = match &body["externalId"] {
        Value::Null => None,
        value => Some(scim_text("externalId", value)?),
    };
    Ok(GroupFields {
        display_name,
        external_id,
        members: member_ids(&body["members"])?,
    })
}

/// The user ids in a `members` value: `[{"value": id}, …]`.
fn member_ids(value: &Value) -> Result<Vec<UserId>, ScimError> {
    let members = match value {
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![value.clone()],
        Value::Null => Vec::new(),
        _ => return Err(ScimError::bad("invalidValue", "members must be an array")),
    };
    members
        .iter()
        .map(|m| {
            m["value"]
                .as_str()
                .and_then(|v| v.parse::<Uuid>().ok())
                .map(UserId)
                .ok_or_else(|| {
                    ScimError::bad("invalidValue", "each member needs a user id as value")
                })
        })
        .collect()
}

async fn create_group(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let fields = group_fields(&parse_body(&body)?)?;
    let group = state.provisioning.create_group(&client, &fields).await?;
    let base = base_url(host(&headers).as_deref(), &state);
    Ok(scim_json(
        StatusCode::CREATED,
        &scim_group(&state, &group, &base).await?,
    ))
}

async fn get_group(
    _: ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let group = load_group(&state, &id).await?;
    let base = base_url(host(&headers).as_deref(), &state);
    Ok(scim_json(
        StatusCode::OK,
        &scim_group(&state, &group, &base).await?,
    ))
}

async fn list_groups(
    _: ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ScimError> {
    let params = ListParams::parse(query)?;
    let filter = params.filter.as_deref();
    let name = match eq_filter(filter)? {
        None => None,
        Some((attribute, value)) if attribute == "displayname" => Some(value),
        Some(_) => return Err(unsupported_filter(filter)),
    };
    let groups = state.provisioning.groups(name.as_deref()).await?;
    let base = base_url(host(&headers).as_deref(), &state);
    let page = groups
        .iter()
        .skip(usize::try_from(params.start_index - 1).unwrap_or(usize::MAX))
        .take(usize::try_from(params.count).unwrap_or(0));
    let mut resources = Vec::new();
    for group in page {
        resources.push(scim_group(&state, group, &base).await?);
    }
    Ok(list_response(
        i64::try_from(groups.len()).unwrap_or(i64::MAX),
        params.start_index,
        resources,
    ))
}

async fn replace_group(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let group = load_group(&state, &id).await?;
    let fields = group_fields(&parse_body(&body)?)?;
    let group = state
        .provisioning
        .replace_group(&client, group.id, &fields)
        .await?;
    let base = base_url(host(&headers).as_deref(), &state);
    Ok(scim_json(
        StatusCode::OK,
        &scim_group(&state, &group, &base).await?,
    ))
}

/// `members[value eq "ID"]`: the member a remove names.
fn member_in_path(path: &str) -> Option<UserId> {
    let inner = path.strip_prefix("members[")?.strip_suffix(']')?;
    let mut parts = inner.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("value"), Some(op), Some(v)) if op.eq_ignore_ascii_case("eq") => {
            serde_json::from_str::<String>(v)
                .ok()?
                .parse()
                .ok()
                .map(UserId)
        }
        _ => None,
    }
}

async fn patch_group(
    ScimCaller(client): ScimCaller,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let group = load_group(&state, &id).await?;
    let operations = group_operations(&parse_body(&body)?)?;
    let group = state
        .provisioning
        .patch_group(&client, &group, &operations)
        .await?;
    let base = base_url(host(&headers).as_deref(), &state);
    Ok(scim_json(
        StatusCode::OK,
        &scim_group(&state, &group, &base).await?,
    ))
}

/// A group's PATCH operations (RFC 7644 §3.5.2): members added, removed
/// (all given, or one by a `members[value eq "…"]` path) or replaced, and
/// the displayName replaced.
fn group_operations(body: &Value) -> Result<Vec<GroupOperation>, ScimError> {
    let operations = body["Operations"]
        .as_array()
        .ok_or_else(|| ScimError::bad("invalidSyntax", "Operations must be an array"))?;
    operations
        .iter()
        .map(|operation| {
            let op = operation["op"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let path = operation["path"].as_str().unwrap_or_default();
            let value = &operation["value"];
            Ok(match (op.as_str(), path) {
                ("add", p) if p.eq_ignore_ascii_case("members") => {
                    GroupOperation::AddMembers(member_ids(value)?)
                }
                ("remove", p) if p.eq_ignore_ascii_case("members") => {
                    GroupOperation::RemoveMembers(member_ids(value)?)
                }
                ("remove", p) if member_in_path(p).is_some() => {
                    GroupOperation::RemoveMembers(member_in_path(p).into_iter().collect())
                }
                ("replace", p) if p.eq_ignore_ascii_case("members") => {
                    GroupOperation::ReplaceMembers(member_ids(value)?)
                }
                ("replace", p)
                    if p.eq_ignore_ascii_case("displayName")
                        || (p.is_empty() && value["displayName"].is_string()) =>
                {
                    let name = if value.is_string() {
                        value
                    } else {
                        &value["displayName"]
                    };
                    let name = scim_text("displayName", name)?;
                    if name.trim().is_empty() {
                        return Err(ScimError::bad(
                            "invalidValue",
                            "displayName must be a string",
                        ));
                    }
                    GroupOperation::Rename(name)
                }
                _ => {
                    return Err(ScimError::bad(
                        "invalidPath",
                        format!("unsupported operation {op:?} on {path:?}"),
                    ));
                }
            })
        })
        .collect()
}

/// Deletes the group; a linked role is taken from its members.
async fn delete_group(
    _: ScimCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ScimError> {
    let group = load_group(&state, &id).await?;
    state.provisioning.delete_group(group.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupRole {
    /// The role the group's members hold, or null to unlink.
    role: Option<RoleName>,
}

/// The group as linked.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct LinkedGroup {
    id: uuid::Uuid,
    display_name: String,
    role: Option<String>,
    /// How many members now hold the role.
    members: usize,
}

/// Links a SCIM group to a role (or unlinks it): the members gain (or lose)
/// the role everywhere, and later membership changes carry it along.
async fn link_group_role(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<GroupRole>,
) -> Result<Json<LinkedGroup>, ApiError> {
    let not_found = || ApiError::not_found("group_not_found", "no such SCIM group");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let (group, members) = match state.provisioning.link_role(id, body.role.as_ref()).await {
        Err(ServiceError::NotFound("group")) => return Err(not_found()),
        other => other?,
    };
    Ok(Json(LinkedGroup {
        id: group.id,
        display_name: group.display_name,
        role: group.role_name,
        members,
    }))
}
