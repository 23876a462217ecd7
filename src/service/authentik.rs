//! Ensuring users in Authentik through its admin API (v3, `core/users`),
//! then in memberd under the subject Authentik will put in their tokens.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ServiceError;
use super::auth::Auth;
use crate::authn::Secret;
use crate::model::{AuthentikSub, DisplayName, Email, User, UserUpsert};

#[derive(Debug, Clone)]
pub struct AuthentikSettings {
    /// e.g. https://auth.example.org
    pub base_url: String,
    pub admin_token: Secret,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthentikError {
    #[error("Authentik refused: {0}")]
    Refused(String),
    #[error("Authentik did not answer in time")]
    Timeout,
    #[error("Authentik could not be reached: {0}")]
    Unreachable(String),
    #[error("no Authentik group named {0:?}")]
    UnknownGroup(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What `ensure` is asked for.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsureUser {
    pub username: String,
    pub email: Email,
    pub name: DisplayName,
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Authentik group names the user must belong to (others are kept).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

/// The part of Authentik's user object memberd reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuthentikUser {
    pub pk: i64,
    pub username: String,
    /// What Authentik's OIDC providers put in `sub` by default (hashed user id).
    pub uid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub is_active: bool,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Deserialize)]
struct Page<T> {
    results: Vec<T>,
}

#[derive(Deserialize)]
struct Group {
    pk: String,
}

#[derive(Clone)]
pub struct Authentik {
    settings: AuthentikSettings,
    http: reqwest::Client,
    /// Writes the user as memberd keeps it (and signs a deactivated one out).
    accounts: Auth,
}

impl Authentik {
    pub fn new(settings: AuthentikSettings, accounts: Auth) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .expect("an HTTP client builds");
        Self {
            settings,
            http,
            accounts,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/api/v3/{path}",
            self.settings.base_url.trim_end_matches('/')
        )
    }

    fn url_with(&self, path: &str, key: &str, value: &str) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(key, value)
            .finish();
        format!("{}?{query}", self.url(path))
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, AuthentikError> {
        let response = request
            .bearer_auth(self.settings.admin_token.expose())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    AuthentikError::Timeout
                } else {
                    AuthentikError::Unreachable(e.without_url().to_string())
                }
            })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            // Authentik answers field errors as {"field": ["message"]} and
            // others as {"detail": "message"}.
            let message = match &body {
                Value::Object(map) if map.contains_key("detail") => map["detail"].to_string(),
                Value::Null => format!("HTTP {status}"),
                other => other.to_string(),
            };
            Err(AuthentikError::Refused(format!(
                "HTTP {}: {message}",
                status.as_u16()
            )))
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, AuthentikError> {
        serde_json::from_value(value)
            .map_err(|e| AuthentikError::Refused(format!("unexpected answer: {e}")))
    }

    async fn group_pk(&self, name: &str) -> Result<String, AuthentikError> {
        let page: Page<Group> = Self::decode(
            self.call(self.http.get(self.url_with("core/groups/", "name", name)))
                .await?,
        )?;
        page.results
            .into_iter()
            .next()
            .map(|g| g.pk)
            .ok_or_else(|| AuthentikError::UnknownGroup(name.to_owned()))
    }

    /// Creates the user in Authentik, or brings it up to date; then upserts
    /// the user in memberd by the subject Authentik gives it. Nothing is
    /// written in memberd when Authentik refuses.
    pub async fn ensure(
        &self,
        wanted: EnsureUser,
    ) -> Result<(AuthentikUser, User), AuthentikError> {
        let mut group_pks = Vec::new();
        for name in wanted.groups.iter().flatten() {
            group_pks.push(self.group_pk(name).await?);
        }
        let existing: Page<AuthentikUser> = Self::decode(
            self.call(
                self.http
                    .get(self.url_with("core/users/", "username", &wanted.username)),
            )
            .await?,
        )?;
        let existing = existing
            .results
            .into_iter()
            .find(|u| u.username == wanted.username);
        let is_active = wanted
            .is_active
            .unwrap_or_else(|| existing.as_ref().is_none_or(|u| u.is_active));
        let ensured: AuthentikUser = match existing {
            None => {
                let body = json!({
                    "username": wanted.username,
                    "name": wanted.name.as_str(),
                    "email": wanted.email.as_str(),
                    "is_active": is_active,
                    "groups": group_pks,
                });
                Self::decode(
                    self.call(self.http.post(self.url("core/users/")).json(&body))
                        .await?,
                )?
            }
            Some(user) => {
                let mut groups = user.groups.clone();
                for pk in &group_pks {
                    if !groups.contains(pk) {
                        groups.push(pk.clone());
                    }
                }
                let unchanged = user.name == wanted.name.as_str()
                    && user.email == wanted.email.as_str()
                    && user.is_active == is_active
                    && groups == user.groups;
                if unchanged {
                    user
                } else {
                    let body = json!({
                        "name": wanted.name.as_str(),
                        "email": wanted.email.as_str(),
                        "is_active": is_active,
                        "groups": groups,
                    });
                    let path = format!("core/users/{}/", user.pk);
                    Self::decode(
                        self.call(self.http.patch(self.url(&path)).json(&body))
                            .await?,
                    )?
                }
            }
        };
        let sub = AuthentikSub::parse(ensured.uid.clone())
            .map_err(|e| AuthentikError::Refused(format!("unusable uid: {e}")))?;
        let user = self
            .accounts
            .upsert_user(&UserUpsert {
                authentik_sub: sub,
                email: Some(wanted.email),
                display_name: Some(wanted.name),
                is_active: Some(is_active),
            })
            .await?;
        Ok((ensured, user))
    }
}
