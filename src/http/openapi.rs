//! The API's description, from the code that serves it: every route is
//! registered through [`Api::route`], which takes the route's documentation
//! with its handler, so a route cannot exist undocumented. From those
//! records come `/openapi.json` (OpenAPI 3.1) and `/docs`, a reference page
//! rendered here, with nothing fetched from anywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::routing::MethodRouter;
use serde_json::{Value, json};

use super::AppState;
use crate::model::Capability;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    Public,
    /// `X-Internal-Secret`.
    Internal,
    /// An API client given this capability, or an operator's session whose
    /// roles allow `memberd`/`admin`.
    Admin(Capability),
    /// `X-Internal-Secret`, or an API client.
    Decision,
    /// A memberd access token (bearer or the console's cookie).
    Session,
    /// Any token `/me` takes: a memberd session, the identity provider's
    /// token, an embedded token; none on a configured public path.
    Viewer,
    /// `Authorization: Bearer CLIENT_KEY:API_KEY`.
    Scim,
}

impl Auth {
    fn describe(self) -> &'static str {
        match self {
            Self::Public => "none",
            Self::Internal => "X-Internal-Secret",
            Self::Admin(_) => {
                "an API client (X-Client-Key + X-API-Key), or an operator's memberd session with memberd/admin"
            }
            Self::Decision => "X-Internal-Secret, or an API client",
            Self::Session => "a memberd access token",
            Self::Viewer => {
                "a memberd access token, the identity provider's token, or an embedded token"
            }
            Self::Scim => "Bearer CLIENT_KEY:API_KEY",
        }
    }

    /// The capability an API client needs for the operation.
    pub fn capability(self) -> Option<Capability> {
        match self {
            Self::Admin(capability) => Some(capability),
            Self::Decision => Some(Capability::Check),
            Self::Scim => Some(Capability::Scim),
            _ => None,
        }
    }

    fn security(self) -> Value {
        match self {
            Self::Public => json!([]),
            Self::Internal => json!([{ "internalSecret": [] }]),
            Self::Admin(_) => json!([
                { "clientKey": [], "apiKey": [] },
                { "bearer": [] },
                { "sessionCookie": [], "csrfToken": [] }
            ]),
            Self::Decision => json!([{ "internalSecret": [] }, { "clientKey": [], "apiKey": [] }]),
            Self::Session => json!([{ "bearer": [] }, { "sessionCookie": [], "csrfToken": [] }]),
            Self::Viewer => json!([
                { "bearer": [] },
                { "sessionCookie": [] },
                { "frontendToken": [] },
                {}
            ]),
            Self::Scim => json!([{ "scimBearer": [] }]),
        }
    }
}

/// The capability the matched admin operation asks of an API client, as
/// its route left it in the request's extensions. `AdminCaller` reads it;
/// where it is missing it asks for `admin`, so a route that forgot to say
/// is closed, not open.
#[derive(Debug, Clone, Copy)]
pub struct Required(pub Capability);

impl Required {
    pub fn of(extensions: &axum::http::Extensions) -> Capability {
        extensions
            .get::<Required>()
            .map_or(Capability::Admin, |r| r.0)
    }
}

/// Puts a type's schema (and the schemas it refers to) into the
/// document's components; answers the `$ref` to it.
pub type Schema = fn(&mut BTreeMap<String, Value>) -> Value;

fn schema_of<T: utoipa::ToSchema>(components: &mut BTreeMap<String, Value>) -> Value {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    for (name, schema) in nested {
        components.insert(name, serde_json::to_value(schema).unwrap_or_default());
    }
    let name = T::name();
    components.insert(
        name.to_string(),
        serde_json::to_value(T::schema()).unwrap_or_default(),
    );
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Puts the parameters of a query type into the operation.
pub type Params = fn() -> Vec<Value>;

fn query_of<T: utoipa::IntoParams>() -> Vec<Value> {
    T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query))
        .into_iter()
        .map(|p| serde_json::to_value(p).unwrap_or_default())
        .collect()
}

/// An OpenAPI document: free-form here, its own schema describes it.
#[derive(utoipa::ToSchema)]
#[schema(as = OpenApiDescription)]
#[allow(dead_code)]
pub struct Description {
    openapi: String,
    #[schema(value_type = Object)]
    info: serde_json::Map<String, Value>,
    #[schema(value_type = Object)]
    paths: serde_json::Map<String, Value>,
    #[schema(value_type = Object)]
    components: serde_json::Map<String, Value>,
}

/// What a body is.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// A JSON document of a described type, under this media type.
    Json(&'static str, Schema),
    /// Text under this media type: a page, a script, Prometheus' exposition.
    Text(&'static str),
    /// No body (204, a redirect, 304).
    Nothing,
}

const JSON: &str = "application/json";
/// SCIM's media type (RFC 7644 §3.1); SCIM routes take plain JSON as well.
pub const SCIM_JSON: &str = "application/scim+json";

/// One operation's documentation, given with its handler.
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    pub method: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// The body it takes, under each of these media types, when typed.
    pub request: Option<(&'static [&'static str], Schema)>,
    /// Its success statuses and what it answers with them, when typed.
    pub response: Option<(&'static [u16], Body)>,
    /// Its query parameters.
    pub query: Option<Params>,
    /// How its errors are written, when not as memberd's error body (SCIM's).
    pub errors: Option<Body>,
    /// Answers with an `ETag`, and 304 without a body to a matching
    /// `If-None-Match`.
    pub revalidates: bool,
}

impl Doc {
    /// Takes a JSON body of type `T`.
    pub const fn takes<T: utoipa::ToSchema>(self) -> Self {
        self.takes_as::<T>(&[JSON])
    }

    /// Takes a body of type `T` under any of `media`.
    pub const fn takes_as<T: utoipa::ToSchema>(mut self, media: &'static [&'static str]) -> Self {
        self.request = Some((media, schema_of::<T>));
        self
    }

    /// Answers a JSON body of type `T` with one of `statuses` (a creation
    /// that may find its object there already: `&[201, 200]`).
    pub const fn answers<T: utoipa::ToSchema>(self, statuses: &'static [u16]) -> Self {
        self.answers_as::<T>(JSON, statuses)
    }

    /// Answers a body of type `T` under `media` with one of `statuses`.
    pub const fn answers_as<T: utoipa::ToSchema>(
        mut self,
        media: &'static str,
        statuses: &'static [u16],
    ) -> Self {
        self.response = Some((statuses, Body::Json(media, schema_of::<T>)));
        self
    }

    /// Answers text under `media`.
    pub const fn answers_text(mut self, media: &'static str) -> Self {
        self.response = Some((&[200], Body::Text(media)));
        self
    }

    /// Answers 204 with no body.
    pub const fn answers_nothing(mut self) -> Self {
        self.response = Some((&[204], Body::Nothing));
        self
    }

    /// Answers 303 See Other, to a page.
    pub const fn redirects(mut self) -> Self {
        self.response = Some((&[303], Body::Nothing));
        self
    }

    /// Reads its query parameters into `T`.
    pub const fn query<T: utoipa::IntoParams>(mut self) -> Self {
        self.query = Some(query_of::<T>);
        self
    }

    /// Answers with an `ETag`; 304 Not Modified to a matching `If-None-Match`.
    pub const fn revalidates(mut self) -> Self {
        self.revalidates = true;
        self
    }

    /// Writes its errors as `T` under `media`.
    pub const fn errors_as<T: utoipa::ToSchema>(mut self, media: &'static str) -> Self {
        self.errors = Some(Body::Json(media, schema_of::<T>));
        self
    }

    const fn new(method: &'static str, summary: &'static str, auth: Auth) -> Self {
        Self {
            method,
            summary,
            auth,
            request: None,
            response: None,
            query: None,
            errors: None,
            revalidates: false,
        }
    }
    pub const fn get(summary: &'static str, auth: Auth) -> Self {
        Self::new("GET", summary, auth)
    }
    pub const fn post(summary: &'static str, auth: Auth) -> Self {
        Self::new("POST", summary, auth)
    }
    pub const fn put(summary: &'static str, auth: Auth) -> Self {
        Self::new("PUT", summary, auth)
    }
    pub const fn patch(summary: &'static str, auth: Auth) -> Self {
        Self::new("PATCH", summary, auth)
    }
    pub const fn delete(summary: &'static str, auth: Auth) -> Self {
        Self::new("DELETE", summary, auth)
    }
}

/// A documented operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub request: Option<(&'static [&'static str], Schema)>,
    pub response: Option<(&'static [u16], Body)>,
    pub query: Option<Params>,
    pub errors: Option<Body>,
    pub revalidates: bool,
}

/// Routes with their documentation. Modules build one each; the router merges them.
pub struct Api {
    tag: &'static str,
    router: Router<AppState>,
    operations: Vec<Operation>,
    /// How its operations write errors, unless one says otherwise.
    errors: Option<Body>,
}

impl Api {
    pub fn new(tag: &'static str) -> Self {
        Self {
            tag,
            router: Router::new(),
            operations: Vec::new(),
            errors: None,
        }
    }

    /// Its operations write their errors as `T` under `media` (SCIM's).
    pub fn errors_as<T: utoipa::ToSchema>(mut self, media: &'static str) -> Self {
        self.errors = Some(Body::Json(media, schema_of::<T>));
        self
    }

    /// Serves `handler` at `path`, documented by `docs` (one per method it answers).
    pub fn route(
        mut self,
        path: &'static str,
        handler: MethodRouter<AppState>,
        docs: &[Doc],
    ) -> Self {
        // Admin routes differ in what they need; decision and SCIM routes
        // always need `check` and `scim`, which their extractors ask for
        // themselves, so a check pays for no layer.
        let needs: Arc<[(Method, Capability)]> = docs
            .iter()
            .filter_map(|d| match d.auth {
                Auth::Admin(capability) => Some((d.method.parse().ok()?, capability)),
                _ => None,
            })
            .collect();
        let handler = if needs.is_empty() {
            handler
        } else {
            handler.route_layer(axum::middleware::from_fn(
                move |mut request: Request, next: Next| {
                    let needs = needs.clone();
                    async move {
                        // HEAD is answered by GET's handler, so it needs GET's capability.
                        let method = match request.method() {
                            &Method::HEAD => Method::GET,
                            m => m.clone(),
                        };
                        if let Some((_, capability)) = needs.iter().find(|(m, _)| *m == method) {
                            request.extensions_mut().insert(Required(*capability));
                        }
                        next.run(request).await
                    }
                },
            ))
        };
        self.router = self.router.route(path, handler);
        self.document(path, docs)
    }

    /// Documents a route whose handler is added later (the description's own routes).
    pub fn document(mut self, path: &'static str, docs: &[Doc]) -> Self {
        let (tag, errors) = (self.tag, self.errors);
        self.operations.extend(docs.iter().map(|d| Operation {
            method: d.method,
            path,
            tag,
            summary: d.summary,
            auth: d.auth,
            request: d.request,
            response: d.response,
            query: d.query,
            errors: d.errors.or(errors),
            revalidates: d.revalidates,
        }));
        self
    }

    pub fn merge(mut self, other: Api) -> Self {
        self.router = self.router.merge(other.router);
        self.operations.extend(other.operations);
        self
    }

    /// Applies `wrap` (a layer, say) to the routes so far.
    pub fn map_router(mut self, wrap: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = wrap(self.router);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<Operation>) {
        (self.router, self.operations)
    }
}

/// What a path parameter must be, by its name (and, for `{name}`, by
/// whether it names a role or a rule): the same types the handlers parse.
fn path_parameter_schema(path: &str, name: &str, schemas: &mut BTreeMap<String, Value>) -> Value {
    use crate::model::{AuthentikSub, Module, RoleName, RuleName, Username};
    match name {
        "authentik_sub" => schema_of::<AuthentikSub>(schemas),
        "username" => schema_of::<Username>(schemas),
        "module" => schema_of::<Module>(schemas),
        "name" if path.starts_with("/admin/roles/") => schema_of::<RoleName>(schemas),
        "name" if path.starts_with("/admin/rules/") => schema_of::<RuleName>(schemas),
        "id" if !path.starts_with("/scim/") => json!({ "type": "string", "format": "uuid" }),
        _ => json!({ "type": "string" }),
    }
}

fn path_parameters(path: &str, schemas: &mut BTreeMap<String, Value>) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": path_parameter_schema(path, name, schemas),
            })
        })
        .collect()
}

fn content(body: Body, schemas: &mut BTreeMap<String, Value>) -> Option<Value> {
    match body {
        Body::Json(media, schema) => Some(json!({ media: { "schema": schema(schemas) } })),
        Body::Text(media) => Some(json!({ media: { "schema": { "type": "string" } } })),
        Body::Nothing => None,
    }
}

fn response(description: &str, content: Option<Value>) -> Value {
    match content {
        Some(content) => json!({ "description": description, "content": content }),
        None => json!({ "description": description }),
    }
}

/// The errors an operation can answer, by what it reads and who may call it.
fn error_statuses(op: &Operation, parameters: &[Value]) -> Vec<(u16, &'static str)> {
    let mut statuses = Vec::new();
    if op.request.is_some() {
        statuses.extend([
            (400, "The body is not JSON, or not of the described shape."),
            (413, "The body is too large."),
            (415, "The body is not JSON."),
        ]);
    }
    if op.auth != Auth::Public {
        statuses.extend([
            (401, "No credentials, or credentials that do not open."),
            (403, "The caller may not do this."),
        ]);
    }
    if parameters.iter().any(|p| p["in"] == "path") {
        statuses.push((404, "There is no such object."));
    }
    if op.request.is_some() || !parameters.is_empty() {
        statuses.push((422, "A field or parameter is not valid; `field` names it."));
    }
    statuses.push((
        503,
        "Storage, or a service it needs, is unavailable; see Retry-After.",
    ));
    statuses
}

/// `post_admin_roles_name_permissions` for `POST /admin/roles/{name}/permissions`:
/// an identifier in every language a generator writes, which a generated
/// client names its functions by, and which a route keeps for as long as
/// its path does.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|word| !word.is_empty())
        .collect();
    let path = if words.is_empty() {
        "root".to_owned()
    } else {
        words.join("_")
    };
    format!("{method}_{path}").to_ascii_lowercase()
}

/// The OpenAPI 3.1 document.
pub fn document(operations: &[Operation]) -> Value {
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    let error_schema = json!({ "$ref": "#/components/schemas/Error" });
    for op in operations {
        let mut parameters = path_parameters(op.path, &mut schemas);
        if let Some(query) = op.query {
            parameters.extend(query());
        }
        if op.revalidates {
            parameters.push(json!({
                "name": "If-None-Match",
                "in": "header",
                "required": false,
                "description": "The ETag of the copy the caller holds: 304 if it is current.",
                "schema": { "type": "string" }
            }));
        }
        let error_content = match op.errors {
            Some(body) => content(body, &mut schemas),
            None => Some(json!({ JSON: { "schema": error_schema } })),
        };
        let mut responses = serde_json::Map::new();
        for (status, description) in error_statuses(op, &parameters) {
            responses.insert(
                status.to_string(),
                response(description, error_content.clone()),
            );
        }
        responses.insert(
            "default".into(),
            response("An error.", error_content.clone()),
        );
        match op.response {
            Some((statuses, body)) => {
                let mut success = response("Success.", content(body, &mut schemas));
                if op.revalidates {
                    success["headers"] = json!({ "ETag": {
                        "description": "Names this version; send it back as If-None-Match.",
                        "schema": { "type": "string" }
                    }});
                    responses.insert(
                        "304".into(),
                        json!({ "description": "Not Modified: the copy the caller holds is current." }),
                    );
                }
                for status in statuses {
                    responses.insert(status.to_string(), success.clone());
                }
            }
            None => {
                responses.insert(
                    "200".into(),
                    json!({ "description": "Success (201 for a creation, 204 without a body)." }),
                );
            }
        }
        let mut operation = json!({
            "tags": [op.tag],
            "summary": op.summary,
            "operationId": operation_id(op.method, op.path),
            "security": op.auth.security(),
            "responses": responses,
        });
        if let Some(capability) = op.auth.capability() {
            // What an API client must have been given to call it.
            operation["x-memberd-capability"] = json!(capability.as_str());
        }
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if let Some((media, schema)) = op.request {
            let schema = schema(&mut schemas);
            let content: serde_json::Map<String, Value> = media
                .iter()
                .map(|m| ((*m).to_owned(), json!({ "schema": schema })))
                .collect();
            operation["requestBody"] = json!({ "required": true, "content": content });
        }
        paths
            .entry(op.path)
            .or_default()
            .insert(op.method.to_ascii_lowercase(), operation);
    }
    schemas.insert(
        "Error".to_owned(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "request_id"],
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "request_id": { "type": "string" },
                        "field": { "type": "string" }
                    }
                }
            }
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "memberd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The member center: users, what each may do, and whether a request is allowed.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "internalSecret": { "type": "apiKey", "in": "header", "name": "X-Internal-Secret" },
                "clientKey": { "type": "apiKey", "in": "header", "name": "X-Client-Key" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "sessionCookie": { "type": "apiKey", "in": "cookie", "name": "memberd_access" },
                "csrfToken": { "type": "apiKey", "in": "header", "name": "X-CSRF-Token" },
                "frontendToken": { "type": "apiKey", "in": "header", "name": "X-Frontend-Token" },
                "scimBearer": { "type": "http", "scheme": "bearer", "description": "CLIENT_KEY:API_KEY" }
            },
            "schemas": schemas,
        }
    })
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A readable reference: one self-contained page, no scripts, no fonts, no CDN.
pub fn reference_page(operations: &[Operation]) -> String {
    let mut by_tag: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in operations {
        by_tag.entry(op.tag).or_default().push(op);
    }
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>memberd API reference</title><style>\
         body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         h2{margin-top:2rem;border-bottom:1px solid #ddd}\
         table{border-collapse:collapse;width:100%}td{padding:.3rem .5rem;border-bottom:1px solid #eee;vertical-align:top}\
         code{font:13px ui-monospace,monospace}.m{font-weight:bold;width:5rem}.a{color:#666;font-size:13px}\
         </style></head><body><h1>memberd API reference</h1>\
         <p>Every route memberd serves, generated from the code. The machine-readable \
         description is at <a href=\"/openapi.json\"><code>/openapi.json</code></a> (OpenAPI 3.1). \
         Errors are <code>{\"error\":{\"code\",\"message\",\"request_id\"}}</code>.</p>",
    );
    let _ = write!(html, "<nav><p>");
    for tag in by_tag.keys() {
        let _ = write!(
            html,
            "<a href=\"#{tag}\">{tag}</a> · ",
            tag = escape_html(tag)
        );
    }
    let _ = write!(html, "</p></nav>");
    for (tag, ops) in by_tag {
        let _ = write!(html, "<h2 id=\"{t}\">{t}</h2><table>", t = escape_html(tag));
        for op in ops {
            let _ = write!(
                html,
                "<tr><td class=\"m\">{}</td><td><code>{}</code><br>{}<br><span class=\"a\">Auth: {}</span></td></tr>",
                op.method,
                escape_html(op.path),
                escape_html(op.summary),
                escape_html(&match op.auth.capability() {
                    Some(capability) => format!("{} (capability {capability})", op.auth.describe()),
                    None => op.auth.describe().to_owned(),
                })
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_parameters_come_from_the_template() {
        let params = super::path_parameters(
            "/admin/users/{authentik_sub}/sessions/{id}",
            &mut Default::default(),
        );
        let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["authentik_sub", "id"]);
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        assert_eq!(
            super::escape_html("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
