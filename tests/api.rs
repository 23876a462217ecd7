//! The HTTP contract other systems code against, on SQLite and PostgreSQL.

mod common;

use common::{Credentials, TestApp, error_code, new_client, spawn_app, spawn_app_with};
use memberd::authn::api_key::HashAlgorithm;
use memberd::model::{ClientStatus, Origin, PathPattern};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn grant_body(sub: &str) -> Value {
    json!({"authentik_sub": sub, "scope_type": "org", "scope_id": "42", "module": "billing", "action": "read"})
}

async fn with_user(app: &TestApp, sub: &str) {
    assert_eq!(
        app.upsert(json!({"authentik_sub": sub})).await.status(),
        StatusCode::OK
    );
}

async fn grant(app: &TestApp, creds: &Credentials, body: &Value) -> reqwest::Response {
    app.admin(creds, "/admin/permissions/grant")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The state a failed request must leave untouched.
async fn state_of(app: &TestApp, sub: &str) -> (i64, Value) {
    let snapshot = app.snapshot(sub).await;
    let body = if snapshot.status() == StatusCode::OK {
        snapshot.json().await.unwrap()
    } else {
        Value::Null
    };
    (app.revision().await, body)
}

on_both_backends! { spawn_app;

async fn health_and_readiness(app) {
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

async fn request_ids_are_echoed_or_generated(app) {
    let r = app.http.get(app.url("/healthz")).header("X-Request-Id", "trace-abc.123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc.123");
    let r = app.http.get(app.url("/healthz")).header("X-Request-Id", "bad id\twith junk").send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    let r = app.http.get(app.url("/nope")).header("X-Request-Id", "mine-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "mine-1");
    assert_eq!(body["error"]["code"], "route_not_found");
}

async fn wrong_method_is_a_json_405(app) {
    let r = app.http.get(app.url("/admin/permissions/grant")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "method_not_allowed");
}

async fn upsert_creates_and_updates(app) {
    let r = app.upsert(json!({"authentik_sub": "ada", "email": "ada@example.org", "display_name": "Ada"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let created: Value = r.json().await.unwrap();
    for key in ["id", "authentik_sub", "email", "display_name", "is_active", "created_at", "updated_at"] {
        assert!(created.get(key).is_some(), "missing {key} in {created}");
    }
    assert_eq!(created["is_active"], true);
    assert_eq!(app.revision().await, 1);

    let r = app.upsert(json!({"authentik_sub": "ada", "is_active": false})).await;
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["id"], created["id"]);
    assert_eq!(updated["email"], "ada@example.org", "fields left out keep their value");
    assert_eq!(updated["display_name"], "Ada");
    assert_eq!(updated["is_active"], false);
    assert_eq!(app.revision().await, 2);

    // Unchanged: same answer, no new revision.
    let r = app.upsert(json!({"authentik_sub": "ada", "email": "ada@example.org"})).await;
    assert_eq!(r.json::<Value>().await.unwrap(), updated);
    assert_eq!(app.revision().await, 2);
}

async fn concurrent_upserts_of_one_sub(app) {
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let request = app
                .internal(Method::POST, "/internal/users/upsert-by-sub")
                .json(&json!({"authentik_sub": "racer", "display_name": format!("Racer {}", i % 3)}));
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        ids.push(r.json::<Value>().await.unwrap()["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one subject, one user");
}

async fn internal_routes_need_the_secret(app) {
    let path = "/internal/users/upsert-by-sub";
    let body = json!({"authentik_sub": "ada"});
    let r = app.http.post(app.url(path)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "missing_internal_secret");
    let r = app.http.post(app.url(path)).header("X-Internal-Secret", "wrong-secret-wrong-secret").json(&body)
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "invalid_internal_secret");
    let r = app.http.get(app.url("/internal/permissions/ada/snapshot")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Authentication comes before the body: a bad body without the secret is still 401.
    let r = app.http.post(app.url(path)).body("{").header("content-type", "application/json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.revision().await, 0, "nothing was written");
    assert!(app.store.user_by_sub(&memberd::model::AuthentikSub::parse("ada").unwrap()).await.unwrap().is_none());
}

async fn snapshot_with_etag(app) {
    let creds = app.create_client().await;
    let r = app.snapshot("ada").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "user_not_found");

    with_user(&app, "ada").await;
    for (scope_id, module) in [("9", "docs"), ("10", "billing"), ("*", "audit")] {
        let body = json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": scope_id, "module": module, "action": "read"});
        assert_eq!(grant(&app, &creds, &body).await.status(), StatusCode::CREATED);
    }
    let r = app.snapshot("ada").await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["authentik_sub"], "ada");
    assert_eq!(body["is_active"], true);
    assert_eq!(body["revision"], 4);
    assert!(body["user_id"].is_string());
    let scope_ids: Vec<&str> = body["permissions"].as_array().unwrap().iter()
        .map(|p| p["scope_id"].as_str().unwrap()).collect();
    assert_eq!(scope_ids, ["*", "10", "9"], "sorted by scope, then module and action");
    assert_eq!(body["permissions"][0], json!({"scope_type": "org", "scope_id": "*", "module": "audit", "action": "read"}));

    let path = "/internal/permissions/ada/snapshot";
    let r = app.internal(Method::GET, path).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.bytes().await.unwrap().is_empty());

    // Another user's change leaves ada's snapshot unchanged.
    with_user(&app, "bob").await;
    let r = app.internal(Method::GET, path).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // Her own change does not.
    app.admin(&creds, "/admin/permissions/revoke").json(&json!({"authentik_sub": "ada", "scope_type": "org",
        "scope_id": "9", "module": "docs", "action": "read"})).send().await.unwrap();
    let r = app.internal(Method::GET, path).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.json::<Value>().await.unwrap()["permissions"].as_array().unwrap().len(), 2);
}

async fn grant_is_idempotent_and_revisions_increase(app) {
    let creds = app.create_client().await;
    with_user(&app, "ada").await;
    let r = grant(&app, &creds, &grant_body("ada")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["revision"], 2);
    assert_eq!(first["created"], true);
    assert_eq!(first["grant"]["module"], "billing");
    assert!(first["grant"]["id"].is_string());

    let r = grant(&app, &creds, &grant_body("ada")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["grant"], first["grant"]);
    assert_eq!(again["revision"], 2);

    let other = json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "42", "module": "billing", "action": "*"});
    let r = grant(&app, &creds, &other).await;
    assert_eq!(r.json::<Value>().await.unwrap()["revision"], 3);
}

async fn grant_to_unknown_user_is_404(app) {
    let creds = app.create_client().await;
    let r = grant(&app, &creds, &grant_body("ghost")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "user_not_found");
    let r = app.admin(&creds, "/admin/permissions/revoke").json(&grant_body("ghost")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.revision().await, 0);
}

async fn revoke_of_present_and_missing_grants(app) {
    let creds = app.create_client().await;
    with_user(&app, "ada").await;
    grant(&app, &creds, &grant_body("ada")).await;
    let revoke = || app.admin(&creds, "/admin/permissions/revoke").json(&grant_body("ada")).send();
    let r = revoke().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"revoked": true, "revision": 3}));
    let r = revoke().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"revoked": false, "revision": 3}));
}

async fn api_client_credentials(app) {
    with_user(&app, "ada").await;
    let creds = app.create_client().await;
    let body = grant_body("ada");

    let r = app.http.post(app.url("/admin/permissions/grant")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "missing_api_key");

    let unknown = Credentials { client_key: "mbc_unknown".into(), ..creds.clone() };
    let r = grant(&app, &unknown, &body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "invalid_api_key");

    let wrong = Credentials { api_key: format!("{}x", creds.api_key), ..creds.clone() };
    let r = grant(&app, &wrong, &body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "invalid_api_key");
    assert_eq!(app.revision().await, 1, "refused requests write nothing");

    assert_eq!(grant(&app, &creds, &body).await.status(), StatusCode::CREATED);
}

async fn disabled_and_rotated_clients_stop_at_once(app) {
    with_user(&app, "ada").await;
    let creds = app.create_client_with(memberd::service::clients::NewClient {
        hash: HashAlgorithm::Argon2, ..new_client("argon")
    }).await;
    let body = grant_body("ada");
    assert_eq!(grant(&app, &creds, &body).await.status(), StatusCode::CREATED);
    // The verified key is now remembered; disabling must still win at once.
    app.client_admin().set_status(&creds.client_key, ClientStatus::Disabled).await.unwrap();
    let r = grant(&app, &creds, &body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "client_disabled");

    app.client_admin().set_status(&creds.client_key, ClientStatus::Active).await.unwrap();
    assert_eq!(grant(&app, &creds, &body).await.status(), StatusCode::OK);
    let new_key = app.client_admin().rotate(&creds.client_key, HashAlgorithm::Bcrypt).await.unwrap();
    let r = grant(&app, &creds, &body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the old key stops working at once");
    assert_eq!(error_code(r).await, "invalid_api_key");
    let rotated = Credentials { api_key: new_key.expose().to_owned(), ..creds };
    assert_eq!(grant(&app, &rotated, &body).await.status(), StatusCode::OK);
}

async fn every_hash_format_verifies(app) {
    with_user(&app, "ada").await;
    for hash in [HashAlgorithm::Sha256, HashAlgorithm::Bcrypt, HashAlgorithm::Argon2] {
        let creds = app.create_client_with(memberd::service::clients::NewClient { hash, ..new_client("h") }).await;
        let r = grant(&app, &creds, &grant_body("ada")).await;
        assert!(r.status().is_success(), "{hash:?}: {}", r.status());
    }
}

async fn expired_clients_are_refused(app) {
    with_user(&app, "ada").await;
    let creds = app.create_client().await;
    let mut client = app.store.client(&creds.client_key).await.unwrap().unwrap();
    client.client_key = "mbc_expired".into();
    client.expires_at = Some(memberd::store::now() - time::Duration::seconds(1));
    app.store.create_client(&client).await.unwrap();
    let expired = Credentials { client_key: "mbc_expired".into(), ..creds };
    let r = grant(&app, &expired, &grant_body("ada")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "client_expired");
}

async fn allowlists(app) {
    with_user(&app, "ada").await;
    let body = grant_body("ada");

    let by_origin = app.create_client_with(memberd::service::clients::NewClient {
        allowed_origins: vec![Origin::parse("https://admin.example.org").unwrap()], ..new_client("o")
    }).await;
    let r = grant(&app, &by_origin, &body).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no Origin at all");
    assert_eq!(error_code(r).await, "origin_not_allowed");
    let r = app.admin(&by_origin, "/admin/permissions/grant").header("Origin", "https://evil.example.org")
        .json(&body).send().await.unwrap();
    assert_eq!(error_code(r).await, "origin_not_allowed");
    let r = app.admin(&by_origin, "/admin/permissions/grant").header("Origin", "https://Admin.example.org")
        .json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let elsewhere = app.create_client_with(memberd::service::clients::NewClient {
        allowed_ips: vec!["10.0.0.0/8".parse().unwrap()], ..new_client("ip")
    }).await;
    let r = grant(&app, &elsewhere, &body).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "ip_not_allowed");
    // X-Forwarded-For from an untrusted peer is not believed.
    let r = app.admin(&elsewhere, "/admin/permissions/grant").header("X-Forwarded-For", "10.1.2.3")
        .json(&body).send().await.unwrap();
    assert_eq!(error_code(r).await, "ip_not_allowed");
    let local = app.create_client_with(memberd::service::clients::NewClient {
        allowed_ips: vec!["127.0.0.1/32".parse().unwrap()], ..new_client("local")
    }).await;
    assert_eq!(grant(&app, &local, &body).await.status(), StatusCode::OK);

    let revoke_only = app.create_client_with(memberd::service::clients::NewClient {
        allowed_paths: vec![PathPattern::parse("/admin/permissions/revoke").unwrap()], ..new_client("p")
    }).await;
    let r = grant(&app, &revoke_only, &body).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "path_not_allowed");
    let r = app.admin(&revoke_only, "/admin/permissions/revoke").json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

async fn rate_limits_answer_429_with_retry_after(app) {
    with_user(&app, "ada").await;
    let creds = app.create_client_with(memberd::service::clients::NewClient {
        rate_limit_per_minute: Some(3), ..new_client("slow")
    }).await;
    for _ in 0..3 {
        assert!(grant(&app, &creds, &grant_body("ada")).await.status().is_success());
    }
    let r = grant(&app, &creds, &grant_body("ada")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(r).await, "rate_limited");
}

async fn bad_input_is_refused_and_writes_nothing(app) {
    let creds = app.create_client().await;
    with_user(&app, "ada").await;
    let before = state_of(&app, "ada").await;
    let long = "x".repeat(129);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"scope_type": "org", "scope_id": "1", "module": "m", "action": "read"}), "authentik_sub"),
        (json!({"authentik_sub": "ada", "scope_id": "1", "module": "m", "action": "read"}), "scope_type"),
        (json!({"authentik_sub": 7, "scope_type": "org", "scope_id": "1", "module": "m", "action": "read"}), "authentik_sub"),
        (json!({"authentik_sub": "ada", "scope_type": "Org", "scope_id": "1", "module": "m", "action": "read"}), "scope_type"),
        (json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": long, "module": "m", "action": "read"}), "scope_id"),
        (json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "", "module": "m", "action": "read"}), "scope_id"),
        (json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "no spaces", "action": "read"}), "module"),
        (json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "m", "action": "re/ad"}), "action"),
        (json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "m", "action": "read", "extra": 1}), "extra"),
        (json!(["not", "an", "object"]), "."),
    ];
    for (body, field) in cases {
        let r = grant(&app, &creds, &body).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let error: Value = r.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_field", "{error}");
        if field != "." {
            assert_eq!(error["error"]["field"], field, "{error}");
        }
    }

    let upserts: Vec<(Value, &str)> = vec![
        (json!({}), "authentik_sub"),
        (json!({"authentik_sub": "s".repeat(256)}), "authentik_sub"),
        (json!({"authentik_sub": "ada", "email": "not-an-email"}), "email"),
        (json!({"authentik_sub": "ada", "is_active": "yes"}), "is_active"),
        (json!({"authentik_sub": "ada", "display_name": "d".repeat(201)}), "display_name"),
    ];
    for (body, field) in upserts {
        let r = app.upsert(body.clone()).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], field);
    }

    let raw = |body: &'static str, content_type: &'static str| {
        app.admin(&creds, "/admin/permissions/grant").header("content-type", content_type).body(body).send()
    };
    let r = raw("{\"authentik_sub\": ", "application/json").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "malformed_json");
    let trailing = r#"{"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "m", "action": "read"} {}"#;
    let r = raw(trailing, "application/json").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "trailing data");
    assert_eq!(error_code(r).await, "malformed_json");
    let r = raw("authentik_sub=ada", "application/x-www-form-urlencoded").await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(r).await, "unsupported_media_type");

    let huge = json!({"authentik_sub": "ada", "email": format!("{}@example.org", "a".repeat(100_000))});
    let r = app.upsert(huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "payload_too_large");

    let r = app.snapshot(&"s".repeat(300)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(state_of(&app, "ada").await, before, "nothing was written");
}

}

/// PostgreSQL only: an SQLite file cannot be taken away from a process that has it open.
#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let Some(app) = spawn_app(common::Backend::Postgres).await else {
        return;
    };
    let TestApp {
        db,
        http,
        base,
        store,
        ..
    } = app;
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    store.close().await;
    drop(db); // DROP DATABASE ... WITH (FORCE) ends the server's connections too
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A request that needs the database is a retryable 503, not a 500
    // (issue 14: clients could not tell an outage from a bug).
    let r = http
        .post(format!("{base}/internal/users/upsert-by-sub"))
        .header("X-Internal-Secret", common::INTERNAL_SECRET)
        .json(&json!({"authentik_sub": "ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, "storage_unavailable");
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "liveness does not depend on the database"
    );
}

#[tokio::test]
async fn trusted_proxies_forward_the_caller_address() {
    let Some(app) = spawn_app_with(common::Backend::Sqlite, |s| {
        s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    with_user(&app, "ada").await;
    let creds = app
        .create_client_with(memberd::service::clients::NewClient {
            allowed_ips: vec!["203.0.113.7/32".parse().unwrap()],
            ..new_client("behind-proxy")
        })
        .await;
    let send = |xff: Option<&'static str>| {
        let mut request = app
            .admin(&creds, "/admin/permissions/grant")
            .json(&grant_body("ada"));
        if let Some(xff) = xff {
            request = request.header("X-Forwarded-For", xff);
        }
        request.send()
    };
    // The right-most hop our proxies did not write is the caller; hops to
    // its left are whatever the caller sent (issue 13, finding 5: the first
    // hop was believed, so `X-Forwarded-For: <allowed>, <real>` got in).
    assert_eq!(
        send(Some("10.0.0.1, 203.0.113.7")).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        send(Some("203.0.113.7, 10.0.0.1")).await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "a forged first hop is not believed"
    );
    assert_eq!(
        send(Some("10.9.9.9, 203.0.113.7, 127.0.0.5"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "hops written by trusted proxies are skipped (granted already: 200)"
    );
    assert_eq!(
        send(Some("203.0.113.7, not-an-address"))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN,
        "an unparseable hop ends the walk at the proxy"
    );
    assert_eq!(send(None).await.unwrap().status(), StatusCode::FORBIDDEN);
}
