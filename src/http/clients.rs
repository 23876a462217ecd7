//! API clients over HTTP, for the console: what `memberd client …` does on
//! the command line. A new or rotated key is in the answer once; only its
//! hash is kept.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{AdminCaller, JsonBody, nullable};
use super::openapi::{Api, Auth, Doc};
use crate::authn::api_key::HashAlgorithm;
use crate::model::{
    ApiClient, Capability, ClientName, ClientStatus, Origin, PathPattern, parse_ip_net,
};
use crate::service::clients::NewClient;

pub fn routes() -> Api {
    use Auth::Admin;
    Api::new("clients")
        .route(
            "/admin/clients",
            get(list).post(create),
            &[
                Doc::get("Every API client", Admin(Capability::Admin))
                    .answers::<ClientList>(&[200]),
                Doc::post(
                    "Create a client; its key is in the answer, once (201)",
                    Admin(Capability::Admin),
                )
                .takes::<Create>()
                .answers::<Created>(&[201]),
            ],
        )
        .route(
            "/admin/clients/{client_key}",
            get(show).patch(update),
            &[
                Doc::get("One client", Admin(Capability::Admin)).answers::<ApiClient>(&[200]),
                Doc::patch(
                    "Change a client's name, allowlists, expiry or rate limit",
                    Admin(Capability::Admin),
                )
                .takes::<Settings>()
                .answers::<ApiClient>(&[200]),
            ],
        )
        .route(
            "/admin/clients/{client_key}/rotate",
            post(rotate),
            &[Doc::post(
                "Replace the key; the old one stops working at once",
                Admin(Capability::Admin),
            )
            .answers::<NewKey>(&[200])],
        )
        .route(
            "/admin/clients/{client_key}/disable",
            post(disable),
            &[
                Doc::post("Refuse the client's requests", Admin(Capability::Admin))
                    .answers::<ApiClient>(&[200]),
            ],
        )
        .route(
            "/admin/clients/{client_key}/enable",
            post(enable),
            &[Doc::post(
                "Accept the client's requests again",
                Admin(Capability::Admin),
            )
            .answers::<ApiClient>(&[200])],
        )
}

/// Allowlists, expiry and rate limit, as sent; parsed into the model's types.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct Settings {
    name: Option<ClientName>,
    allowed_origins: Option<Vec<String>>,
    allowed_ips: Option<Vec<String>>,
    allowed_paths: Option<Vec<PathPattern>>,
    /// RFC 3339; `null` for never.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    rate_limit_per_minute: Option<Option<u32>>,
    capabilities: Option<Vec<Capability>>,
}

fn origins(raw: Vec<String>) -> Result<Vec<Origin>, ApiError> {
    raw.iter()
        .map(|o| {
            Origin::normalize(o)
                .map_err(|e| ApiError::invalid_field("allowed_origins", e.to_string()))
        })
        .collect()
}

fn ips(raw: Vec<String>) -> Result<Vec<IpNet>, ApiError> {
    raw.iter()
        .map(|ip| {
            parse_ip_net(ip).map_err(|e| ApiError::invalid_field("allowed_ips", e.to_string()))
        })
        .collect()
}

fn expiry(raw: Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    raw.map(|t| {
        OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).map_err(|_| {
            ApiError::invalid_field(
                "expires_at",
                "an RFC 3339 moment, such as 2027-01-01T00:00:00Z",
            )
        })
    })
    .transpose()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Create {
    name: ClientName,
    #[serde(flatten)]
    settings: CreateSettings,
}

#[derive(Deserialize, Default, ToSchema)]
struct CreateSettings {
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    allowed_ips: Vec<String>,
    #[serde(default)]
    allowed_paths: Vec<PathPattern>,
    /// RFC 3339; never when left out.
    #[serde(default)]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[serde(default)]
    rate_limit_per_minute: Option<u32>,
    /// None or empty: check only.
    #[serde(default)]
    capabilities: Vec<Capability>,
}

#[derive(Serialize, ToSchema)]
struct ClientList {
    clients: Vec<ApiClient>,
}

/// The new client and its API key: the only time the key is shown.
#[derive(Serialize, ToSchema)]
struct Created {
    client: ApiClient,
    client_key: String,
    api_key: String,
}

/// A rotated client's new API key, shown this once.
#[derive(Serialize, ToSchema)]
struct NewKey {
    client_key: String,
    api_key: String,
}

async fn list(_: AdminCaller, State(state): State<AppState>) -> Result<Json<ClientList>, ApiError> {
    Ok(Json(ClientList {
        clients: state.client_admin.list().await?,
    }))
}

async fn create(
    _: AdminCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Create>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let s = body.settings;
    let new = NewClient {
        name: body.name,
        allowed_origins: origins(s.allowed_origins)?,
        allowed_ips: ips(s.allowed_ips)?,
        allowed_paths: s.allowed_paths,
        expires_at: expiry(s.expires_at)?,
        rate_limit_per_minute: s.rate_limit_per_minute,
        capabilities: s.capabilities,
        hash: HashAlgorithm::default(),
    };
    let (client, api_key) = state.client_admin.create(new).await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            client_key: client.client_key.clone(),
            api_key: api_key.expose().to_owned(),
            client,
        }),
    ))
}

async fn show(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(client_key): Path<String>,
) -> Result<Json<ApiClient>, ApiError> {
    Ok(Json(state.client_admin.get(&client_key).await?))
}

async fn update(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(client_key): Path<String>,
    JsonBody(body): JsonBody<Settings>,
) -> Result<Json<ApiClient>, ApiError> {
    let mut client = state.client_admin.get(&client_key).await?;
    if let Some(name) = body.name {
        client.name = name;
    }
    if let Some(raw) = body.allowed_origins {
        client.allowed_origins = origins(raw)?;
    }
    if let Some(raw) = body.allowed_ips {
        client.allowed_ips = ips(raw)?;
    }
    if let Some(paths) = body.allowed_paths {
        client.allowed_paths = paths;
    }
    if let Some(raw) = body.expires_at {
        client.expires_at = expiry(raw)?;
    }
    if let Some(limit) = body.rate_limit_per_minute {
        client.rate_limit_per_minute = limit;
    }
    if let Some(capabilities) = body.capabilities {
        client.capabilities = capabilities;
    }
    state.client_admin.update(&mut client).await?;
    Ok(Json(client))
}

async fn rotate(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(client_key): Path<String>,
) -> Result<Json<NewKey>, ApiError> {
    let api_key = state
        .client_admin
        .rotate(&client_key, HashAlgorithm::default())
        .await?;
    Ok(Json(NewKey {
        client_key,
        api_key: api_key.expose().to_owned(),
    }))
}

async fn set_status(
    state: &AppState,
    client_key: &str,
    status: ClientStatus,
) -> Result<Json<ApiClient>, ApiError> {
    state.client_admin.set_status(client_key, status).await?;
    Ok(Json(state.client_admin.get(client_key).await?))
}

async fn disable(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(client_key): Path<String>,
) -> Result<Json<ApiClient>, ApiError> {
    set_status(&state, &client_key, ClientStatus::Disabled).await
}

async fn enable(
    _: AdminCaller,
    State(state): State<AppState>,
    Path(client_key): Path<String>,
) -> Result<Json<ApiClient>, ApiError> {
    set_status(&state, &client_key, ClientStatus::Active).await
}
