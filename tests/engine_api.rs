//! The authorization routes (roles, checks, snapshots, explain, changes,
//! AuthZEN) over HTTP, on SQLite and PostgreSQL.

mod common;

use common::{Credentials, TestApp, error_code, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = if status == StatusCode::NOT_MODIFIED {
        Value::Null
    } else {
        response.json().await.unwrap()
    };
    (status, body)
}

impl TestApp {
    fn admin_at(&self, creds: &Credentials, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-Client-Key", &creds.client_key)
            .header("X-API-Key", &creds.api_key)
    }

    async fn check(&self, sub: &str, scope: (&str, &str), module: &str, action: &str) -> bool {
        let body = json!({"subject": sub, "scope_type": scope.0, "scope_id": scope.1, "module": module, "action": action});
        let (status, body) = send(self.internal(Method::POST, "/v1/check").json(&body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["allowed"].as_bool().unwrap()
    }
}

/// ada holds `editor` (which inherits `viewer`) in org 1; bob holds nothing.
async fn with_roles(app: &TestApp) -> Credentials {
    let creds = app.create_client().await;
    for sub in ["ada", "bob"] {
        app.upsert(json!({"authentik_sub": sub})).await;
    }
    let (status, _) = send(
        app.admin_at(&creds, Method::POST, "/admin/roles")
            .json(&json!({"name": "viewer"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = send(
        app.admin_at(&creds, Method::POST, "/admin/roles")
            .json(&json!({"name": "editor", "description": "writes docs", "inherits": ["viewer"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["role"]["parents"], json!(["viewer"]));
    for (role, action) in [("viewer", "read"), ("editor", "write")] {
        let (status, _) = send(
            app.admin_at(
                &creds,
                Method::POST,
                &format!("/admin/roles/{role}/permissions"),
            )
            .json(&json!({"module": "docs", "action": action})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _) = send(
        app.admin_at(&creds, Method::POST, "/admin/users/ada/roles")
            .json(&json!({"role": "editor", "scope_type": "org", "scope_id": "1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    creds
}

on_both_backends! { spawn_app;

async fn checks_follow_roles_scopes_and_hierarchy(app) {
    with_roles(&app).await;
    assert!(app.check("ada", ("org", "1"), "docs", "read").await, "inherited from viewer");
    assert!(app.check("ada", ("org", "1"), "docs", "write").await);
    assert!(!app.check("ada", ("org", "2"), "docs", "read").await, "outside the assignment's scope");
    assert!(!app.check("bob", ("org", "1"), "docs", "read").await);
    assert!(!app.check("nobody", ("org", "1"), "docs", "read").await, "an unknown subject may nothing");

    let ada_id = app.store.user_by_sub(&memberd::model::AuthentikSub::parse("ada").unwrap()).await.unwrap().unwrap().id;
    let body = json!({"subject": {"user_id": ada_id}, "scope_type": "org", "scope_id": "1", "module": "docs", "action": "read"});
    let (_, body) = send(app.internal(Method::POST, "/v1/check").json(&body)).await;
    assert_eq!(body["allowed"], true);
    assert!(body["revision"].as_i64().unwrap() > 0);
}

async fn deny_wins_over_role_allows(app) {
    let creds = with_roles(&app).await;
    let deny = json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "docs", "action": "write", "effect": "deny"});
    let (status, body) = send(app.admin(&creds, "/admin/permissions/grant").json(&deny)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["grant"]["effect"], "deny");
    assert!(!app.check("ada", ("org", "1"), "docs", "write").await);
    assert!(app.check("ada", ("org", "1"), "docs", "read").await);

    let explain = "/v1/explain?subject=ada&scope_type=org&scope_id=1&module=docs&action=write";
    let (status, why) = send(app.internal(Method::GET, explain)).await;
    assert_eq!(status, StatusCode::OK, "{why}");
    assert_eq!(why["allowed"], false);
    assert_eq!(why["reason"], "denied");
    assert_eq!(why["contributions"][0]["effect"], "deny");
    assert_eq!(why["contributions"][0]["source"], "direct");
    assert_eq!(why["contributions"][1]["source"], "role");
    assert_eq!(why["contributions"][1]["chain"], json!(["editor"]));

    let explain = "/v1/explain?subject=ada&scope_type=org&scope_id=1&module=docs&action=read";
    let (_, why) = send(app.internal(Method::GET, explain)).await;
    assert_eq!(why["allowed"], true);
    assert_eq!(why["contributions"][0]["chain"], json!(["editor", "viewer"]));
    assert_eq!(why["contributions"][0]["assigned_scope_id"], "1");
}

async fn batch_answers_in_order(app) {
    with_roles(&app).await;
    let checks: Vec<Value> = [("ada", "read"), ("bob", "read"), ("ada", "delete"), ("ada", "write")]
        .iter()
        .map(|(sub, action)| json!({"subject": sub, "scope_type": "org", "scope_id": "1", "module": "docs", "action": action}))
        .collect();
    let (status, body) = send(app.internal(Method::POST, "/v1/check/batch").json(&json!({"checks": checks}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([true, false, false, true]));

    let full: Vec<Value> = (0..1000).map(|_| checks[0].clone()).collect();
    let (status, body) = send(app.internal(Method::POST, "/v1/check/batch").json(&json!({"checks": full}))).await;
    assert_eq!(status, StatusCode::OK, "a full batch fits its body limit");
    assert_eq!(body["results"].as_array().unwrap().len(), 1000);
    let too_many: Vec<Value> = (0..1001).map(|_| checks[0].clone()).collect();
    let r = app.internal(Method::POST, "/v1/check/batch").json(&json!({"checks": too_many})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn min_revision_waits_then_refuses(app) {
    with_roles(&app).await;
    let now = app.revision().await;
    let body = |min: i64| json!({"subject": "ada", "scope_type": "org", "scope_id": "1", "module": "docs", "action": "read", "min_revision": min});
    let (status, answer) = send(app.internal(Method::POST, "/v1/check").json(&body(now))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["revision"], now);
    let r = app.internal(Method::POST, "/v1/check").json(&body(now + 5)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(r).await, "revision_not_reached");
}

async fn decision_routes_need_credentials(app) {
    let creds = with_roles(&app).await;
    let body = json!({"subject": "ada", "scope_type": "org", "scope_id": "1", "module": "docs", "action": "read"});
    let r = app.http.post(app.url("/v1/check")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "missing_credentials");
    let r = app.http.post(app.url("/v1/check")).header("X-Internal-Secret", "not-the-secret-at-all").json(&body).send().await.unwrap();
    assert_eq!(error_code(r).await, "invalid_internal_secret");
    let (status, answer) = send(app.admin_at(&creds, Method::POST, "/v1/check").json(&body)).await;
    assert_eq!(status, StatusCode::OK, "an API client may ask too");
    assert_eq!(answer["allowed"], true);
    let bad = json!({"subject": "ada", "scope_type": "Org", "scope_id": "1", "module": "docs", "action": "read"});
    let r = app.internal(Method::POST, "/v1/check").json(&bad).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn snapshots_show_roles_and_move_with_them(app) {
    let creds = with_roles(&app).await;
    let (status, snap) = send(app.internal(Method::GET, "/internal/permissions/ada/snapshot")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(snap["roles"], json!([{"role": "editor", "scope_type": "org", "scope_id": "1"}]));
    assert_eq!(snap["permissions"], json!([
        {"scope_type": "org", "scope_id": "1", "module": "docs", "action": "read"},
        {"scope_type": "org", "scope_id": "1", "module": "docs", "action": "write"},
    ]));
    assert_eq!(snap["denied"], json!([]));
    let r = app.internal(Method::GET, "/internal/permissions/ada/snapshot").send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();

    // A change to an inherited role reaches ada's snapshot, its revision and its ETag.
    let (_, added) = send(
        app.admin_at(&creds, Method::POST, "/admin/roles/viewer/permissions").json(&json!({"module": "wiki", "action": "read"})),
    )
    .await;
    let r = app.internal(Method::GET, "/internal/permissions/ada/snapshot").header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let snap: Value = r.json().await.unwrap();
    assert_eq!(snap["revision"], added["revision"]);
    assert_eq!(snap["permissions"].as_array().unwrap().len(), 3);

    // bob's did not move.
    let (_, bob) = send(app.internal(Method::GET, "/internal/permissions/bob/snapshot")).await;
    assert!(bob["revision"].as_i64().unwrap() < added["revision"].as_i64().unwrap());
}

async fn changes_name_exactly_the_affected_subjects(app) {
    let creds = with_roles(&app).await;
    let since = app.revision().await;
    let (status, body) = send(app.internal(Method::GET, &format!("/internal/changes?since={since}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"revision": since, "subjects": []}));

    send(app.admin_at(&creds, Method::POST, "/admin/roles/viewer/permissions").json(&json!({"module": "wiki", "action": "read"}))).await;
    send(app.admin(&creds, "/admin/permissions/grant").json(&json!({"authentik_sub": "bob", "scope_type": "org", "scope_id": "9", "module": "x", "action": "read"}))).await;
    let (_, body) = send(app.internal(Method::GET, &format!("/internal/changes?since={since}"))).await;
    assert_eq!(body["subjects"], json!(["ada", "bob"]));
    assert_eq!(body["revision"], since + 2);
    let (_, body) = send(app.internal(Method::GET, &format!("/internal/changes?since={}", since + 1))).await;
    assert_eq!(body["subjects"], json!(["bob"]));

    let r = app.internal(Method::GET, "/internal/changes?since=-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
    assert_eq!(error_code(r).await, "changes_gone");
    let r = app.internal(Method::GET, "/internal/changes?since=abc").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.internal(Method::GET, "/internal/changes").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn role_admin_routes(app) {
    let creds = with_roles(&app).await;
    let (status, body) = send(app.admin_at(&creds, Method::POST, "/admin/roles").json(&json!({"name": "viewer"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = send(app.admin_at(&creds, Method::POST, "/admin/roles").json(&json!({"name": "x", "inherits": ["ghost"]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = send(app.admin_at(&creds, Method::POST, "/admin/roles").json(&json!({"name": "bad name"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, body) = send(app.admin_at(&creds, Method::GET, "/admin/roles/viewer")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["holders"], json!(["ada"]), "ada holds viewer through editor");

    // A cycle is refused and changes nothing.
    let before = app.revision().await;
    let (status, body) = send(app.admin_at(&creds, Method::PATCH, "/admin/roles/viewer").json(&json!({"inherits": ["editor"]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(app.revision().await, before);
    assert!(app.check("ada", ("org", "1"), "docs", "read").await);

    let (status, body) = send(app.admin_at(&creds, Method::PATCH, "/admin/roles/editor").json(&json!({"inherits": [], "description": "alone"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"]["description"], "alone");
    assert!(!app.check("ada", ("org", "1"), "docs", "read").await, "no longer inherited");

    let (status, body) = send(app.admin_at(&creds, Method::GET, "/admin/roles")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["roles"].as_array().unwrap().len(), 2);

    let (status, body) = send(app.admin_at(&creds, Method::GET, "/admin/users/ada/roles")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["roles"][0]["role"], "editor");

    let remove = json!({"module": "docs", "action": "write"});
    let (_, body) = send(app.admin_at(&creds, Method::DELETE, "/admin/roles/editor/permissions").json(&remove)).await;
    assert_eq!(body["removed"], true);
    let (_, body) = send(app.admin_at(&creds, Method::DELETE, "/admin/roles/editor/permissions").json(&remove)).await;
    assert_eq!(body["removed"], false);

    let unassign = json!({"role": "editor", "scope_type": "org", "scope_id": "1"});
    let (_, body) = send(app.admin_at(&creds, Method::DELETE, "/admin/users/ada/roles").json(&unassign)).await;
    assert_eq!(body["removed"], true);
    let (status, _) = send(app.admin_at(&creds, Method::POST, "/admin/users/ada/roles").json(&json!({"role": "ghost"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(app.admin_at(&creds, Method::POST, "/admin/users/ada/roles").json(&json!({"role": "viewer", "scope_type": "org"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, body) = send(app.admin_at(&creds, Method::DELETE, "/admin/roles/viewer")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = send(app.admin_at(&creds, Method::DELETE, "/admin/roles/viewer")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(app.admin_at(&creds, Method::GET, "/admin/roles/viewer")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn pinned_role_permissions(app) {
    let creds = with_roles(&app).await;
    send(app.admin_at(&creds, Method::POST, "/admin/roles").json(&json!({"name": "auditor"}))).await;
    let (status, body) = send(app.admin_at(&creds, Method::POST, "/admin/roles/auditor/permissions")
        .json(&json!({"module": "audit", "action": "read", "scope_type": "org", "scope_id": "1"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    send(app.admin_at(&creds, Method::POST, "/admin/users/bob/roles").json(&json!({"role": "auditor"}))).await;
    assert!(app.check("bob", ("org", "1"), "audit", "read").await);
    assert!(!app.check("bob", ("org", "2"), "audit", "read").await);
}

async fn authzen_evaluations(app) {
    with_roles(&app).await;
    let (status, config) = send(app.http.get(app.url("/.well-known/authzen-configuration"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["access_evaluation_endpoint"], format!("{}/access/v1/evaluation", app.base));

    let evaluation = |action: &str| json!({
        "subject": {"type": "user", "id": "ada"},
        "resource": {"type": "org", "id": "1", "properties": {"module": "docs"}},
        "action": {"name": action},
        "context": {}
    });
    let (status, body) = send(app.internal(Method::POST, "/access/v1/evaluation").json(&evaluation("read"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["decision"], true);
    let (_, body) = send(app.internal(Method::POST, "/access/v1/evaluation").json(&evaluation("delete"))).await;
    assert_eq!(body["decision"], false);

    let batch = json!({
        "subject": {"type": "user", "id": "ada"},
        "resource": {"type": "org", "id": "1", "properties": {"module": "docs"}},
        "evaluations": [
            {"action": {"name": "read"}},
            {"action": {"name": "delete"}},
            {"action": {"name": "write"}},
            {"subject": {"type": "user", "id": "bob"}, "action": {"name": "read"}}
        ]
    });
    let (status, body) = send(app.internal(Method::POST, "/access/v1/evaluations").json(&batch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["evaluations"], json!([{"decision": true}, {"decision": false}, {"decision": true}, {"decision": false}]));

    let mut first_deny = batch.clone();
    first_deny["options"] = json!({"evaluations_semantic": "deny_on_first_deny"});
    let (_, body) = send(app.internal(Method::POST, "/access/v1/evaluations").json(&first_deny)).await;
    assert_eq!(body["evaluations"], json!([{"decision": true}, {"decision": false}]));

    let mut missing = evaluation("read");
    missing["resource"]["properties"] = json!({});
    let r = app.internal(Method::POST, "/access/v1/evaluation").json(&missing).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn the_index_is_rebuilt_at_start(app) {
    let creds = with_roles(&app).await;
    send(app.admin(&creds, "/admin/permissions/grant").json(&json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "docs", "action": "write", "effect": "deny"}))).await;
    let (_, before) = send(app.internal(Method::GET, "/internal/permissions/ada/snapshot")).await;
    // A second server on the same database compiles the same policy.
    let TestApp { db, settings, .. } = app;
    let again = common::spawn_on(db, settings).await;
    let (_, after) = send(again.internal(Method::GET, "/internal/permissions/ada/snapshot")).await;
    assert_eq!(after, before);
    assert!(!again.check("ada", ("org", "1"), "docs", "write").await);
    assert!(again.check("ada", ("org", "1"), "docs", "read").await);
}

}
