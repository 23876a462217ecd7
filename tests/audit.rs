//! The audit log over HTTP: every change recorded with who, from where and
//! in which request; nothing recorded for what did not happen; the chain
//! verified and a hand-edited row caught; explanations linked to the record
//! that granted.

mod common;

use common::{Backend, TestApp, error_code, spawn_app, tamper};
use memberd::store::ChainReport;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn setup(backend: Backend) -> Option<TestApp> {
    spawn_app(backend).await
}

async fn audit_page(app: &TestApp, creds: &common::Credentials, query: &str) -> Value {
    let response = app
        .http
        .get(app.url(&format!("/admin/audit{query}")))
        .header("X-Client-Key", &creds.client_key)
        .header("X-API-Key", &creds.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn actions(page: &Value) -> Vec<&str> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect()
}

on_both_backends! { setup;

async fn changes_are_recorded_with_actor_address_request_and_revision(app) {
    let creds = app.create_client().await;
    assert_eq!(app.upsert(json!({"authentik_sub": "alice", "email": "a@example.com"})).await.status(), StatusCode::OK);
    let grant = app
        .admin(&creds, "/admin/permissions/grant")
        .header("X-Request-Id", "grant-req-1")
        .json(&json!({"authentik_sub": "alice", "scope_type": "org", "scope_id": "acme", "module": "billing", "action": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), StatusCode::CREATED);
    let upsert = app.upsert(json!({"authentik_sub": "alice", "display_name": "Alice"})).await;
    assert_eq!(upsert.status(), StatusCode::OK);

    let page = audit_page(&app, &creds, "?target=user:alice").await;
    assert_eq!(actions(&page), ["user.update", "grant.create", "user.create"], "{page}");
    let records = page["records"].as_array().unwrap();
    let (update, grant, create) = (&records[0], &records[1], &records[2]);

    assert_eq!(create["actor"], json!({"kind": "internal", "id": "internal"}));
    assert_eq!(create["after"]["email"], "a@example.com");
    assert!(create["before"].is_null());
    assert_eq!(grant["actor"], json!({"kind": "client", "id": creds.client_key}));
    assert_eq!(grant["request_id"], "grant-req-1");
    assert_eq!(grant["ip"], "127.0.0.1");
    assert_eq!(grant["after"]["module"], "billing");
    assert_eq!(grant["revision"], create["revision"].as_i64().unwrap() + 1);
    assert_eq!(update["before"]["display_name"], Value::Null);
    assert_eq!(update["after"]["display_name"], "Alice");
    // Each links to the one before it.
    assert_eq!(update["prev_hash"], grant["hash"]);

    // Filters narrow; the cursor pages back through older records.
    let by_action = audit_page(&app, &creds, "?action=grant.create").await;
    assert_eq!(actions(&by_action), ["grant.create"]);
    let by_actor = audit_page(&app, &creds, &format!("?actor={}", creds.client_key)).await;
    assert_eq!(actions(&by_actor), ["grant.create"]);
    let first = audit_page(&app, &creds, "?target=user:alice&limit=2").await;
    assert_eq!(actions(&first), ["user.update", "grant.create"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = audit_page(&app, &creds, &format!("?target=user:alice&limit=2&cursor={cursor}")).await;
    assert_eq!(actions(&second), ["user.create"]);
    assert!(second.get("next_cursor").is_none());
    let future = audit_page(&app, &creds, "?since=2999-01-01T00:00:00Z").await;
    assert_eq!(actions(&future), Vec::<&str>::new());
    let past = audit_page(&app, &creds, "?until=2000-01-01T00:00:00Z").await;
    assert_eq!(actions(&past), Vec::<&str>::new());

    let bad = app.http.get(app.url("/admin/audit?limit=0"))
        .header("X-Client-Key", &creds.client_key).header("X-API-Key", &creds.api_key)
        .send().await.unwrap();
    assert_eq!(error_code(bad).await, "invalid_field");
    let unauthenticated = app.http.get(app.url("/admin/audit")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

async fn what_did_not_happen_is_not_recorded(app) {
    let creds = app.create_client().await;
    app.upsert(json!({"authentik_sub": "bob"})).await;
    let body = json!({"authentik_sub": "bob", "scope_type": "org", "scope_id": "acme", "module": "billing", "action": "read"});
    for _ in 0..2 {
        app.admin(&creds, "/admin/permissions/grant").json(&body).send().await.unwrap();
    }
    // A no-op upsert, a grant to nobody, a revoke of what bob does not hold.
    app.upsert(json!({"authentik_sub": "bob"})).await;
    let missing = app.admin(&creds, "/admin/permissions/grant")
        .json(&json!({"authentik_sub": "nobody", "scope_type": "org", "scope_id": "acme", "module": "billing", "action": "read"}))
        .send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    app.admin(&creds, "/admin/permissions/revoke")
        .json(&json!({"authentik_sub": "bob", "scope_type": "org", "scope_id": "acme", "module": "billing", "action": "write"}))
        .send().await.unwrap();

    let page = audit_page(&app, &creds, "").await;
    let recorded: Vec<&str> = actions(&page).into_iter().filter(|a| !a.starts_with("client.")).collect();
    assert_eq!(recorded, ["grant.create", "user.create"], "{page}");
}

async fn the_chain_verifies_and_a_hand_edited_row_is_caught(app) {
    let creds = app.create_client().await;
    for sub in ["carol", "dave", "erin"] {
        app.upsert(json!({"authentik_sub": sub})).await;
        app.admin(&creds, "/admin/permissions/grant")
            .json(&json!({"authentik_sub": sub, "scope_type": "org", "scope_id": "acme", "module": "billing", "action": "read"}))
            .send().await.unwrap();
    }
    let records = match app.store.verify_audit_chain().await.unwrap() {
        ChainReport::Intact { records } => records,
        broken => panic!("{broken:?}"),
    };
    assert_eq!(records, 7, "a client, three users, three grants");
    let verified: Value = app.http.get(app.url("/admin/audit/verify"))
        .header("X-Client-Key", &creds.client_key).header("X-API-Key", &creds.api_key)
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(verified, json!({"intact": true, "records": 7}));

    // Someone with database access quietly rewrites who got the grant.
    tamper(&app.db.url, "UPDATE audit_log SET target = 'user:mallory' WHERE seq = 5").await;
    match app.store.verify_audit_chain().await.unwrap() {
        ChainReport::Broken(memberd::audit::Break::Content { seq: 5 }) => {}
        other => panic!("expected a break at record 5: {other:?}"),
    }
    let verified: Value = app.http.get(app.url("/admin/audit/verify"))
        .header("X-Client-Key", &creds.client_key).header("X-API-Key", &creds.api_key)
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(verified["intact"], false);
    assert!(verified["break"].as_str().unwrap().contains("record 5"), "{verified}");
}

async fn explain_names_who_granted_and_when(app) {
    let creds = app.create_client().await;
    app.upsert(json!({"authentik_sub": "frank"})).await;
    app.admin(&creds, "/admin/permissions/grant")
        .json(&json!({"authentik_sub": "frank", "scope_type": "org", "scope_id": "acme", "module": "billing", "action": "read"}))
        .send().await.unwrap();
    let role = app.admin(&creds, "/admin/roles").json(&json!({"name": "auditor"})).send().await.unwrap();
    assert_eq!(role.status(), StatusCode::CREATED, "{}", role.text().await.unwrap());
    let permission = app.admin(&creds, "/admin/roles/auditor/permissions")
        .json(&json!({"module": "ledger", "action": "read"}))
        .send().await.unwrap();
    assert!(permission.status().is_success(), "{}", permission.text().await.unwrap());
    let assigned = app.admin(&creds, "/admin/users/frank/roles")
        .json(&json!({"role": "auditor", "scope_type": "org", "scope_id": "acme"}))
        .send().await.unwrap();
    assert!(assigned.status().is_success(), "{}", assigned.text().await.unwrap());

    for (module, action) in [("billing", "grant.create"), ("ledger", "role.assign")] {
        let explained: Value = app
            .internal(Method::GET, &format!("/v1/explain?subject=frank&scope_type=org&scope_id=acme&module={module}&action=read"))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(explained["allowed"], true, "{explained}");
        let granted = &explained["contributions"][0]["granted"];
        assert_eq!(granted["action"], action, "{explained}");
        assert_eq!(granted["actor"]["id"], creds.client_key.as_str());
        assert!(granted["at"].is_string());
        let seq = granted["audit_seq"].as_i64().unwrap();
        let record = app.store.audit_record(seq).await.unwrap().unwrap();
        assert_eq!(record.target, "user:frank");
    }
}

}
