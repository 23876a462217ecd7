//! The routes the console stands on: users searched and paged, one user in
//! full, the menu a user would see, and API clients managed over HTTP.

mod common;

use common::{Backend, TestApp, error_code, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn setup(backend: Backend) -> Option<(TestApp, common::Credentials)> {
    let app = spawn_app(backend).await?;
    let creds = app.create_client().await;
    Some((app, creds))
}

fn call(
    app: &TestApp,
    creds: &common::Credentials,
    method: Method,
    path: &str,
) -> reqwest::RequestBuilder {
    app.http
        .request(method, app.url(path))
        .header("X-Client-Key", &creds.client_key)
        .header("X-API-Key", &creds.api_key)
}

async fn get(app: &TestApp, creds: &common::Credentials, path: &str) -> Value {
    let response = call(app, creds, Method::GET, path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

fn subs(page: &Value) -> Vec<&str> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["authentik_sub"].as_str().unwrap())
        .collect()
}

on_both_backends! { setup;

async fn users_are_searched_paged_and_shown(fixture) {
    let (app, creds) = fixture;
    for (sub, email, name) in [("ada", "ada@example.org", "Ada Lovelace"), ("bob", "bob@corp.test", "Bob"),
                               ("cy", "cy@example.org", "Cy"), ("d_100%", "d@x.test", "Dee")] {
        app.upsert(json!({"authentik_sub": sub, "email": email, "display_name": name})).await;
    }
    assert_eq!(subs(&get(&app, &creds, "/admin/users").await), ["ada", "bob", "cy", "d_100%"]);
    assert_eq!(subs(&get(&app, &creds, "/admin/users?q=EXAMPLE.ORG").await), ["ada", "cy"]);
    assert_eq!(subs(&get(&app, &creds, "/admin/users?q=lovelace").await), ["ada"]);
    // % and _ are searched for, not wildcards.
    assert_eq!(subs(&get(&app, &creds, "/admin/users?q=%25").await), ["d_100%"]);
    assert_eq!(subs(&get(&app, &creds, "/admin/users?q=_").await), ["d_100%"]);
    let first = get(&app, &creds, "/admin/users?limit=3").await;
    assert_eq!(subs(&first), ["ada", "bob", "cy"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = get(&app, &creds, &format!("/admin/users?limit=3&cursor={cursor}")).await;
    assert_eq!(subs(&second), ["d_100%"]);
    assert!(second["next_cursor"].is_null());

    call(&app, &creds, Method::POST, "/admin/permissions/grant")
        .json(&json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"}))
        .send().await.unwrap();
    let ada = get(&app, &creds, "/admin/users/ada").await;
    assert_eq!(ada["user"]["email"], "ada@example.org");
    assert_eq!(ada["grants"][0]["module"], "billing");
    assert!(ada["account"].is_null());
    let missing = call(&app, &creds, Method::GET, "/admin/users/nobody").send().await.unwrap();
    assert_eq!(error_code(missing).await, "user_not_found");

    call(&app, &creds, Method::POST, "/admin/rules")
        .json(&json!({"name": "billing", "kind": "menu", "title": "Billing", "module": "billing", "action": "read"}))
        .send().await.unwrap();
    let preview = get(&app, &creds, "/admin/users/ada/menus?scope_type=org&scope_id=1").await;
    assert_eq!(preview["menus"][0]["name"], "billing");
    let elsewhere = get(&app, &creds, "/admin/users/ada/menus?scope_type=org&scope_id=2").await;
    assert_eq!(elsewhere["menus"], json!([]));
}

async fn api_clients_are_managed_over_http(fixture) {
    let (app, creds) = fixture;
    let created = call(&app, &creds, Method::POST, "/admin/clients")
        .json(&json!({"name": "reports", "allowed_ips": ["127.0.0.1"], "rate_limit_per_minute": 100, "capabilities": ["read"]}))
        .send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let key = created["client_key"].as_str().unwrap().to_owned();
    let secret = created["api_key"].as_str().unwrap().to_owned();
    assert!(created["client"].get("api_key_hash").is_none());
    let new_creds = common::Credentials { client_key: key.clone(), api_key: secret };
    assert_eq!(call(&app, &new_creds, Method::GET, "/admin/roles").send().await.unwrap().status(), StatusCode::OK);

    let listed = get(&app, &creds, "/admin/clients").await;
    assert_eq!(listed["clients"].as_array().unwrap().len(), 2);
    let updated = call(&app, &creds, Method::PATCH, &format!("/admin/clients/{key}"))
        .json(&json!({"allowed_ips": ["10.0.0.0/8"], "expires_at": "2999-01-01T00:00:00Z", "rate_limit_per_minute": null}))
        .send().await.unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let shown = get(&app, &creds, &format!("/admin/clients/{key}")).await;
    assert_eq!(shown["allowed_ips"], json!(["10.0.0.0/8"]));
    assert!(shown["rate_limit_per_minute"].is_null());
    assert!(shown["expires_at"].as_str().unwrap().starts_with("2999-01-01"));
    // Now only 10/8 may call: loopback is refused.
    let refused = call(&app, &new_creds, Method::GET, "/admin/roles").send().await.unwrap();
    assert_eq!(error_code(refused).await, "ip_not_allowed");
    let bad = call(&app, &creds, Method::PATCH, &format!("/admin/clients/{key}"))
        .json(&json!({"allowed_ips": ["not an ip"]})).send().await.unwrap();
    assert_eq!(error_code(bad).await, "invalid_field");

    call(&app, &creds, Method::PATCH, &format!("/admin/clients/{key}")).json(&json!({"allowed_ips": []})).send().await.unwrap();
    let rotated: Value = call(&app, &creds, Method::POST, &format!("/admin/clients/{key}/rotate")).send().await.unwrap().json().await.unwrap();
    let old = call(&app, &new_creds, Method::GET, "/admin/roles").send().await.unwrap();
    assert_eq!(error_code(old).await, "invalid_api_key");
    let fresh = common::Credentials { client_key: key.clone(), api_key: rotated["api_key"].as_str().unwrap().to_owned() };
    assert_eq!(call(&app, &fresh, Method::GET, "/admin/roles").send().await.unwrap().status(), StatusCode::OK);
    let disabled = call(&app, &creds, Method::POST, &format!("/admin/clients/{key}/disable")).send().await.unwrap();
    assert_eq!(disabled.status(), StatusCode::OK);
    let refused = call(&app, &fresh, Method::GET, "/admin/roles").send().await.unwrap();
    assert_eq!(error_code(refused).await, "client_disabled");

    let audit = get(&app, &creds, &format!("/admin/audit?target=client:{key}")).await;
    let actions: Vec<&str> = audit["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["client.disable", "client.rotate_key", "client.update", "client.update", "client.create"]);
}

}
