//! `memberd export` from the embedded SQLite and `memberd import` into
//! PostgreSQL, as a team outgrowing one machine does: the same snapshots,
//! the same decisions, the audit chain intact, accounts and clients working.

mod common;

use std::process::Command;

use common::{Backend, TestDb, spawn_app_with, spawn_on};
use memberd::service::auth::CaptchaMode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_memberd");
const PASSWORD: &str = "correct horse battery staple";
const SUBJECTS: &[&str] = &["ada", "bob", "cy", "local:olga"];

fn memberd(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .env_remove("MEMBERD_CONFIG")
        .env_remove("MEMBERD_KEY_ENCRYPTION_KEY")
        .env("MEMBERD_DATABASE_URL", url)
        .args(args)
        .output()
        .expect("running memberd")
}

async fn snapshots(app: &common::TestApp) -> Vec<Value> {
    let mut all = Vec::new();
    for sub in SUBJECTS {
        let response = app.snapshot(sub).await;
        assert_eq!(response.status(), StatusCode::OK, "{sub}");
        all.push(response.json().await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_sqlite_and_import_into_postgres_decide_the_same() {
    let Some(target) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let Some(source) =
        spawn_app_with(Backend::Sqlite, |s| s.login_captcha = CaptchaMode::Never).await
    else {
        return;
    };
    let admin = source.create_client().await;
    let post = |path: &str, body: Value| source.admin(&admin, path).json(&body);
    let put = |path: &str, body: Value| {
        source
            .http
            .request(Method::PUT, source.url(path))
            .header("X-Client-Key", &admin.client_key)
            .header("X-API-Key", &admin.api_key)
            .json(&body)
    };

    // A little of everything: users, direct allows and denies, a role
    // hierarchy with pinned and wildcard permissions, assignments, rules
    // bound to a role, a catalog, a local account.
    for sub in ["ada", "bob", "cy"] {
        source
            .upsert(json!({"authentik_sub": sub, "email": format!("{sub}@example.org")}))
            .await;
    }
    for (sub, module, action, effect) in [
        ("ada", "billing", "read", "allow"),
        ("ada", "billing", "refund", "deny"),
        ("cy", "reports", "*", "allow"),
    ] {
        let r = post("/admin/permissions/grant", json!({"authentik_sub": sub, "scope_type": "org", "scope_id": "1", "module": module, "action": action, "effect": effect})).send().await.unwrap();
        assert!(r.status().is_success());
    }
    post("/admin/roles", json!({"name": "viewer"}))
        .send()
        .await
        .unwrap();
    post(
        "/admin/roles",
        json!({"name": "editor", "inherits": ["viewer"]}),
    )
    .send()
    .await
    .unwrap();
    post(
        "/admin/roles/viewer/permissions",
        json!({"module": "docs", "action": "read"}),
    )
    .send()
    .await
    .unwrap();
    post(
        "/admin/roles/editor/permissions",
        json!({"module": "docs", "action": "*"}),
    )
    .send()
    .await
    .unwrap();
    post("/admin/roles/editor/permissions", json!({"module": "docs", "action": "delete", "effect": "deny", "scope_type": "org", "scope_id": "2"})).send().await.unwrap();
    post(
        "/admin/users/bob/roles",
        json!({"role": "editor", "scope_type": "org", "scope_id": "*"}),
    )
    .send()
    .await
    .unwrap();
    post("/admin/rules", json!({"name": "docs", "kind": "menu", "title": "Docs", "module": "docs", "action": "list"})).send().await.unwrap();
    assert!(
        put("/admin/roles/viewer/rules", json!({"rules": ["docs"]}))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(
        put("/admin/catalog/docs", json!({"actions": ["read", "list"]}))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let account = post(
        "/admin/accounts",
        json!({"username": "olga", "password": PASSWORD, "must_change_password": false}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(account.status(), StatusCode::CREATED);
    post(
        "/admin/users/local:olga/roles",
        json!({"role": "viewer", "scope_type": "org", "scope_id": "1"}),
    )
    .send()
    .await
    .unwrap();
    let before = snapshots(&source).await;
    let audit_before = match source.store.verify_audit_chain().await.unwrap() {
        memberd::store::ChainReport::Intact { records } => records,
        broken => panic!("{broken:?}"),
    };

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.json");
    let exported = memberd(
        &source.db.url,
        &["export", "--output", file.to_str().unwrap()],
    );
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let document: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(document["format"], "memberd-export");
    assert_eq!(
        document["tables"]["users"]["rows"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert!(!std::fs::read_to_string(&file).unwrap().contains(PASSWORD));

    let migrated = memberd(&target.url, &["migrate"]);
    assert!(migrated.status.success());
    let imported = memberd(&target.url, &["import", file.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&imported.stdout);
    assert!(
        imported.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(
        out.contains(&format!("audit chain intact: {} records", audit_before + 1)),
        "{out}"
    );

    // The same answers from PostgreSQL.
    let mut settings = source.settings.clone();
    settings.database_url = target.url.clone();
    let moved = spawn_on(target, settings).await;
    assert_eq!(snapshots(&moved).await, before);
    for (sub, module, action, scope_id, expected) in [
        ("ada", "billing", "read", "1", true),
        ("ada", "billing", "refund", "1", false),
        ("bob", "docs", "write", "9", true),
        ("bob", "docs", "delete", "2", false),
        ("cy", "reports", "export", "1", true),
        ("local:olga", "docs", "list", "1", true),
    ] {
        let answer: Value = moved.internal(Method::POST, "/v1/check")
            .json(&json!({"subject": sub, "scope_type": "org", "scope_id": scope_id, "module": module, "action": action}))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(
            answer["allowed"], expected,
            "{sub} {module}/{action} in {scope_id}"
        );
    }
    // The API client's key and the operator's password work where they moved.
    let listed = moved
        .http
        .get(moved.url("/admin/rules"))
        .header("X-Client-Key", &admin.client_key)
        .header("X-API-Key", &admin.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let login = moved
        .http
        .post(moved.url("/auth/login"))
        .json(&json!({"username": "olga", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);

    // A second import into a database that is no longer empty is refused.
    let again = memberd(&moved.db.url, &["import", file.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("import into an empty one"));
}
