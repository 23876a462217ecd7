//! The back office's rule tree over HTTP: a role bound to rules holds their
//! permissions, so the menus a user sees and the checks behind them agree;
//! tree invariants; the permission catalog, open and strict.

mod common;

use common::{Backend, Credentials, TestApp, error_code, spawn_app_with};
use memberd::service::auth::CaptchaMode;
use memberd::service::directory::CatalogMode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    app: TestApp,
    admin: Credentials,
}

async fn fixture(backend: Backend) -> Option<Fixture> {
    with_catalog(backend, CatalogMode::Open).await
}

async fn with_catalog(backend: Backend, catalog: CatalogMode) -> Option<Fixture> {
    let app = spawn_app_with(backend, |s| {
        s.login_captcha = CaptchaMode::Never;
        s.catalog = catalog;
    })
    .await?;
    let admin = app.create_client().await;
    Some(Fixture { app, admin })
}

impl Fixture {
    fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .http
            .request(method, self.app.url(path))
            .header("X-Client-Key", &self.admin.client_key)
            .header("X-API-Key", &self.admin.api_key)
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let response = self.admin(method, path).json(&body).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn rule(
        &self,
        name: &str,
        kind: &str,
        parent: Option<&str>,
        weight: i32,
        module: &str,
        action: &str,
    ) {
        self.ok(
            Method::POST,
            "/admin/rules",
            json!({
                "name": name, "kind": kind, "parent": parent, "title": name, "weight": weight,
                "path": format!("/{}", name.replace(':', "/")), "module": module, "action": action,
            }),
        )
        .await;
    }

    /// A back office's rules: two directories, three menus, two buttons.
    async fn back_office(&self) {
        self.rule("system", "directory", None, 10, "system", "view")
            .await;
        self.rule(
            "system:user:list",
            "menu",
            Some("system"),
            2,
            "users",
            "list",
        )
        .await;
        self.rule(
            "system:role:list",
            "menu",
            Some("system"),
            1,
            "roles",
            "list",
        )
        .await;
        self.rule(
            "system:user:add",
            "button",
            Some("system:user:list"),
            0,
            "users",
            "add",
        )
        .await;
        self.rule(
            "system:user:delete",
            "button",
            Some("system:user:list"),
            0,
            "users",
            "delete",
        )
        .await;
        self.rule("reports", "directory", None, 1, "reports", "view")
            .await;
        self.rule("reports:sales", "menu", Some("reports"), 0, "sales", "view")
            .await;
    }

    /// An operator signed in to memberd, holding `role` in the console scope.
    async fn operator(&self, username: &str, role: &str) -> String {
        self.ok(
            Method::POST,
            "/admin/accounts",
            json!({"username": username, "password": PASSWORD, "must_change_password": false}),
        )
        .await;
        self.ok(
            Method::POST,
            &format!("/admin/users/local:{username}/roles"),
            json!({"role": role, "scope_type": "memberd", "scope_id": "console"}),
        )
        .await;
        let tokens: Value = self
            .app
            .http
            .post(self.app.url("/auth/login"))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    async fn me(&self, token: &str, path: &str) -> Value {
        let response = self
            .app
            .http
            .get(self.app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn check(&self, sub: &str, module: &str, action: &str) -> bool {
        let answer: Value = self.app.internal(Method::POST, "/v1/check")
            .json(&json!({"subject": sub, "scope_type": "memberd", "scope_id": "console", "module": module, "action": action}))
            .send().await.unwrap().json().await.unwrap();
        answer["allowed"].as_bool().unwrap()
    }
}

/// `name[children…]`, to compare trees at a glance.
fn shape(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let children = shape(&n["children"]);
            if children.is_empty() {
                n["name"].as_str().unwrap().to_owned()
            } else {
                format!("{}{children:?}", n["name"].as_str().unwrap())
            }
        })
        .collect()
}

on_both_backends! { fixture;

async fn a_back_office_renders_what_the_role_allows_and_checks_agree(f) {
    f.back_office().await;
    f.ok(Method::POST, "/admin/roles", json!({"name": "user-admin"})).await;
    f.ok(Method::PUT, "/admin/roles/user-admin/rules", json!({"rules": ["system:user:list", "system:user:add"]})).await;
    let token = f.operator("olga", "user-admin").await;

    let menus = f.me(&token, "/me/menus").await;
    assert_eq!(shape(&menus["menus"]), ["system[\"system:user:list\"]"], "{menus}");
    let system = &menus["menus"][0];
    assert_eq!(system["kind"], "directory");
    assert_eq!(system["hidden"], false);
    assert_eq!(system["children"][0]["path"], "/system/user/list");
    let buttons = f.me(&token, "/me/buttons").await;
    assert_eq!(buttons["buttons"], json!(["system:user:add"]));

    // The menus shown and the API checks agree.
    assert!(f.check("local:olga", "users", "list").await);
    assert!(f.check("local:olga", "users", "add").await);
    assert!(!f.check("local:olga", "users", "delete").await);
    assert!(!f.check("local:olga", "roles", "list").await);

    // More rules, ordered by weight; another scope shows nothing.
    f.ok(Method::PUT, "/admin/roles/user-admin/rules",
        json!({"rules": ["system:user:list", "system:role:list", "reports:sales", "system:user:delete"]})).await;
    let menus = f.me(&token, "/me/menus").await;
    assert_eq!(shape(&menus["menus"]), ["reports[\"reports:sales\"]", "system[\"system:role:list\", \"system:user:list\"]"]);
    assert_eq!(f.me(&token, "/me/buttons").await["buttons"], json!(["system:user:delete"]));
    assert!(!f.check("local:olga", "users", "add").await, "unbinding takes the permission away");
    let elsewhere = f.me(&token, "/me/menus?scope_type=org&scope_id=7").await;
    assert_eq!(elsewhere["menus"], json!([]));

    // Unbinding everything empties the menus; the binding is in the audit log.
    f.ok(Method::PUT, "/admin/roles/user-admin/rules", json!({"rules": []})).await;
    assert_eq!(f.me(&token, "/me/menus").await["menus"], json!([]));
    assert!(!f.check("local:olga", "users", "list").await);
    let audit: Value = f.admin(Method::GET, "/admin/audit?target=role:user-admin&action=role.rules.set")
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(audit["records"].as_array().unwrap().len(), 3);
    assert_eq!(audit["records"][0]["after"], json!({"rules": []}));
}

async fn a_permission_given_explicitly_outlives_the_rules(f) {
    f.back_office().await;
    f.ok(Method::POST, "/admin/roles", json!({"name": "viewer"})).await;
    f.ok(Method::PUT, "/admin/roles/viewer/rules", json!({"rules": ["system:user:list", "system:role:list"]})).await;
    f.ok(Method::POST, "/admin/roles/viewer/permissions", json!({"module": "users", "action": "list"})).await;
    f.operator("pia", "viewer").await;
    f.ok(Method::PUT, "/admin/roles/viewer/rules", json!({"rules": []})).await;
    assert!(f.check("local:pia", "users", "list").await, "given explicitly, it stays");
    assert!(!f.check("local:pia", "roles", "list").await, "given only by a rule, it goes");

    // A rule's permission changed: the roles bound to it follow.
    f.ok(Method::PUT, "/admin/roles/viewer/rules", json!({"rules": ["reports:sales"]})).await;
    assert!(f.check("local:pia", "sales", "view").await);
    f.ok(Method::PATCH, "/admin/rules/reports:sales", json!({"module": "revenue"})).await;
    assert!(!f.check("local:pia", "sales", "view").await);
    assert!(f.check("local:pia", "revenue", "view").await);
}

async fn the_tree_refuses_loops_and_deletes_subtrees_only_when_asked(f) {
    f.back_office().await;
    let into_own_child = f.admin(Method::PATCH, "/admin/rules/system")
        .json(&json!({"parent": "system:user:list"})).send().await.unwrap();
    assert_eq!(into_own_child.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(into_own_child).await, "invalid_request");
    let into_itself = f.admin(Method::PATCH, "/admin/rules/system")
        .json(&json!({"parent": "system"})).send().await.unwrap();
    assert_eq!(into_itself.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Moving elsewhere, and back to the root with null, is fine.
    f.ok(Method::PATCH, "/admin/rules/reports", json!({"parent": "system"})).await;
    let moved = f.ok(Method::PATCH, "/admin/rules/reports", json!({"parent": null, "title": "Reports"})).await;
    assert_eq!(moved["rule"]["parent"], Value::Null);
    assert_eq!(moved["rule"]["title"], "Reports");

    let duplicate = f.admin(Method::POST, "/admin/rules")
        .json(&json!({"name": "system", "kind": "menu", "title": "x", "module": "m", "action": "a"})).send().await.unwrap();
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    let orphan = f.admin(Method::POST, "/admin/rules")
        .json(&json!({"name": "x", "kind": "menu", "parent": "nowhere", "title": "x", "module": "m", "action": "a"})).send().await.unwrap();
    assert_eq!(orphan.status(), StatusCode::NOT_FOUND);
    let bad_kind = f.admin(Method::POST, "/admin/rules")
        .json(&json!({"name": "x", "kind": "page", "title": "x", "module": "m", "action": "a"})).send().await.unwrap();
    assert_eq!(error_code(bad_kind).await, "invalid_field");

    f.ok(Method::POST, "/admin/roles", json!({"name": "clerk"})).await;
    f.ok(Method::PUT, "/admin/roles/clerk/rules", json!({"rules": ["system:user:add"]})).await;
    f.operator("quinn", "clerk").await;
    assert!(f.check("local:quinn", "users", "add").await);

    let refused = f.admin(Method::DELETE, "/admin/rules/system").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    f.ok(Method::DELETE, "/admin/rules/system?cascade=true", Value::Null).await;
    let left: Value = f.admin(Method::GET, "/admin/rules").send().await.unwrap().json().await.unwrap();
    // The console's own rules (memberd…) ship with every database.
    let names: Vec<&str> = left["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap())
        .filter(|n| !n.starts_with("memberd")).collect();
    assert_eq!(names, ["reports:sales", "reports"], "by weight, then name");
    assert!(!f.check("local:quinn", "users", "add").await, "the deleted button's permission went with it");
    let gone = f.admin(Method::GET, "/admin/rules/system:user:add").send().await.unwrap();
    assert_eq!(error_code(gone).await, "rule_not_found");
}

async fn the_open_catalog_lists_what_is_undeclared(f) {
    f.back_office().await;
    let declared = f.ok(Method::PUT, "/admin/catalog/users", json!({"description": "People", "actions": ["list", "add", "add"]})).await;
    assert_eq!(declared["actions"], json!(["add", "list"]));
    let catalog: Value = f.admin(Method::GET, "/admin/catalog").send().await.unwrap().json().await.unwrap();
    assert_eq!(catalog["mode"], "open");
    assert_eq!(catalog["modules"][0]["module"], "users");
    let undeclared = catalog["undeclared"].as_array().unwrap();
    assert!(undeclared.contains(&json!({"module": "users", "action": "delete"})), "{catalog}");
    assert!(!undeclared.contains(&json!({"module": "users", "action": "list"})));
    let deleted = f.admin(Method::DELETE, "/admin/catalog/users").send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = f.admin(Method::DELETE, "/admin/catalog/users").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

}

#[tokio::test]
async fn a_strict_catalog_refuses_what_it_does_not_declare() {
    let Some(f) = with_catalog(Backend::Sqlite, CatalogMode::Strict).await else {
        return;
    };
    f.app.upsert(json!({"authentik_sub": "rita"})).await;
    let grant = json!({"authentik_sub": "rita", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"});
    let refused = f
        .admin(Method::POST, "/admin/permissions/grant")
        .json(&grant)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(refused).await, "undeclared_permission");
    let rule = json!({"name": "billing", "kind": "menu", "title": "Billing", "module": "billing", "action": "read"});
    let refused = f
        .admin(Method::POST, "/admin/rules")
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(refused).await, "undeclared_permission");

    f.ok(
        Method::PUT,
        "/admin/catalog/billing",
        json!({"actions": ["read"]}),
    )
    .await;
    f.ok(Method::POST, "/admin/permissions/grant", grant).await;
    f.ok(Method::POST, "/admin/rules", rule).await;
    // `*` stands for every action of a declared module; other actions stay refused.
    f.ok(
        Method::POST,
        "/admin/roles",
        json!({"name": "billing-admin"}),
    )
    .await;
    f.ok(
        Method::POST,
        "/admin/roles/billing-admin/permissions",
        json!({"module": "billing", "action": "*"}),
    )
    .await;
    let refund = f
        .admin(Method::POST, "/admin/roles/billing-admin/permissions")
        .json(&json!({"module": "billing", "action": "refund"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(refund).await, "undeclared_permission");
}
