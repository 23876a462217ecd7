//! `/internal/authentik/users/ensure` against a local server speaking the
//! part of Authentik's API v3 it uses (`core/users`, `core/groups`), with
//! the request and answer shapes of Authentik's published schema.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::{get, patch};
use common::{Backend, TestApp, error_code, spawn_app, spawn_app_with};
use memberd::authn::Secret;
use memberd::service::authentik::AuthentikSettings;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "authentik-admin-token";

#[derive(Default)]
struct Fake {
    users: Vec<Value>,
    calls: Vec<String>,
    slow: bool,
}

type Shared = Arc<Mutex<Fake>>;

fn authorised(headers: &HeaderMap) -> Result<(), (AxumStatus, axum::Json<Value>)> {
    let ok = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if ok {
        Ok(())
    } else {
        Err((
            AxumStatus::FORBIDDEN,
            axum::Json(json!({"detail": "Authentication credentials were not provided."})),
        ))
    }
}

type Answer = Result<(AxumStatus, axum::Json<Value>), (AxumStatus, axum::Json<Value>)>;

async fn list_users(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Answer {
    authorised(&headers)?;
    let slow = {
        let mut f = fake.lock().unwrap();
        f.calls.push(format!("GET users {}", q["username"]));
        f.slow
    };
    if slow {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let f = fake.lock().unwrap();
    let results: Vec<Value> = f
        .users
        .iter()
        .filter(|u| u["username"] == q["username"].as_str())
        .cloned()
        .collect();
    Ok((
        AxumStatus::OK,
        axum::Json(json!({"pagination": {"count": results.len()}, "results": results})),
    ))
}

async fn create_user(
    State(fake): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Answer {
    authorised(&headers)?;
    let mut f = fake.lock().unwrap();
    f.calls.push(format!("POST users {}", body["username"]));
    if body["username"] == "reserved" || f.users.iter().any(|u| u["username"] == body["username"]) {
        return Err((
            AxumStatus::BAD_REQUEST,
            axum::Json(json!({"username": ["user with this username already exists."]})),
        ));
    }
    let pk = f.users.len() as i64 + 7;
    let mut user = body.clone();
    user["pk"] = pk.into();
    user["uid"] = format!("{:064x}", pk * 1_000_003).into();
    user["groups"] = body.get("groups").cloned().unwrap_or(json!([]));
    f.users.push(user.clone());
    Ok((AxumStatus::CREATED, axum::Json(user)))
}

async fn update_user(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Path(pk): Path<i64>,
    axum::Json(body): axum::Json<Value>,
) -> Answer {
    authorised(&headers)?;
    let mut f = fake.lock().unwrap();
    f.calls.push(format!("PATCH users {pk}"));
    let Some(user) = f.users.iter_mut().find(|u| u["pk"] == pk) else {
        return Err((
            AxumStatus::NOT_FOUND,
            axum::Json(json!({"detail": "Not found."})),
        ));
    };
    for (k, v) in body.as_object().unwrap() {
        user[k] = v.clone();
    }
    Ok((AxumStatus::OK, axum::Json(user.clone())))
}

async fn list_groups(
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Answer {
    authorised(&headers)?;
    let results = if q["name"] == "staff" {
        json!([{"pk": "5b1c0e2e-2a8e-4bd6-9d3c-6c1f0e7a9f10", "name": "staff"}])
    } else {
        json!([])
    };
    Ok((
        AxumStatus::OK,
        axum::Json(json!({"pagination": {}, "results": results})),
    ))
}

async fn fake_authentik() -> (String, Shared) {
    let fake = Shared::default();
    let app = axum::Router::new()
        .route("/api/v3/core/users/", get(list_users).post(create_user))
        .route("/api/v3/core/users/{pk}/", patch(update_user))
        .route("/api/v3/core/groups/", get(list_groups))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, fake)
}

async fn app_with_authentik() -> Option<(TestApp, Shared)> {
    let (base, fake) = fake_authentik().await;
    let app = spawn_app_with(Backend::Sqlite, move |s| {
        s.authentik = Some(AuthentikSettings {
            base_url: base,
            admin_token: Secret::new(TOKEN),
            timeout: Duration::from_secs(1),
        });
    })
    .await?;
    Some((app, fake))
}

async fn ensure(app: &TestApp, body: Value) -> reqwest::Response {
    app.internal(Method::POST, "/internal/authentik/users/ensure")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn calls(fake: &Shared) -> Vec<String> {
    std::mem::take(&mut fake.lock().unwrap().calls)
}

const PASSWORD: &str = "a long and unusual passphrase 42";

#[tokio::test]
async fn ensure_creates_then_updates_and_is_idempotent() {
    let Some((app, fake)) = app_with_authentik().await else {
        return;
    };
    let body = json!({"username": "ada", "email": "ada@example.org", "name": "Ada Lovelace", "groups": ["staff"]});
    let first = ensure(&app, body.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let uid = first["authentik"]["uid"].as_str().unwrap().to_owned();
    assert_eq!(
        first["user"]["authentik_sub"],
        uid.as_str(),
        "the local user goes by Authentik's subject"
    );
    assert_eq!(first["user"]["email"], "ada@example.org");
    assert_eq!(
        first["authentik"]["groups"],
        json!(["5b1c0e2e-2a8e-4bd6-9d3c-6c1f0e7a9f10"])
    );
    assert_eq!(calls(&fake), ["GET users ada", "POST users \"ada\""]);

    let again: Value = ensure(&app, body.clone()).await.json().await.unwrap();
    assert_eq!(again["authentik"]["uid"], uid.as_str());
    assert_eq!(
        calls(&fake),
        ["GET users ada"],
        "nothing to change, nothing sent"
    );

    // Ada also signs in to memberd itself, as the same subject.
    let admin = app.create_client().await;
    let account = app
        .admin(&admin, "/admin/accounts")
        .json(&json!({"username": "ada", "password": PASSWORD, "authentik_sub": uid, "must_change_password": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), StatusCode::CREATED);
    let tokens: Value = app.login("ada", PASSWORD).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let me = |token: String| {
        let app = &app;
        async move {
            app.http
                .get(app.url("/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(access.clone()).await, StatusCode::OK);

    let mut moved = body.clone();
    moved["email"] = "ada@newmail.example".into();
    moved["is_active"] = false.into();
    let updated: Value = ensure(&app, moved).await.json().await.unwrap();
    assert_eq!(
        me(access).await,
        StatusCode::UNAUTHORIZED,
        "deactivating the user through Authentik ends their sessions"
    );
    assert_eq!(calls(&fake), ["GET users ada", "PATCH users 7"]);
    assert_eq!(updated["authentik"]["email"], "ada@newmail.example");
    assert_eq!(updated["user"]["email"], "ada@newmail.example");
    assert_eq!(updated["user"]["is_active"], false);
}

#[tokio::test]
async fn refusals_and_timeouts_write_nothing_locally() {
    let Some((app, fake)) = app_with_authentik().await else {
        return;
    };
    let users_before = app.revision().await;

    let refused = ensure(
        &app,
        json!({"username": "reserved", "email": "r@example.org", "name": "R"}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "identity_provider_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("already exists"),
        "the provider's message: {message}"
    );

    let unknown_group = ensure(
        &app,
        json!({"username": "bob", "email": "b@example.org", "name": "B", "groups": ["nope"]}),
    )
    .await;
    assert_eq!(unknown_group.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(unknown_group).await, "unknown_group");

    fake.lock().unwrap().slow = true;
    let started = std::time::Instant::now();
    let slow = ensure(
        &app,
        json!({"username": "cy", "email": "c@example.org", "name": "C"}),
    )
    .await;
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(slow).await, "identity_provider_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout bounds the wait"
    );

    assert_eq!(
        app.revision().await,
        users_before,
        "no local user was written"
    );
    assert!(fake.lock().unwrap().users.is_empty());
}

#[tokio::test]
async fn without_authentik_configured_the_route_says_so() {
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let response = ensure(
        &app,
        json!({"username": "ada", "email": "ada@example.org", "name": "Ada"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(response).await, "not_configured");
}
