//! Regression tests for the trust boundaries (issue 13): each finding, as
//! the attacker sent it, on SQLite and PostgreSQL.

mod common;

use common::{Credentials, TestApp, error_code, new_client, spawn_app, tamper};
use memberd::model::{AuthentikSub, Capability, PathPattern};
use memberd::service::access::Engine;
use memberd::service::clients::NewClient;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "a long and unusual passphrase 42";

async fn client_with(app: &TestApp, capabilities: &[Capability], paths: &[&str]) -> Credentials {
    app.create_client_with(NewClient {
        capabilities: capabilities.to_vec(),
        allowed_paths: paths
            .iter()
            .map(|p| PathPattern::parse(*p).unwrap())
            .collect(),
        ..new_client("narrow")
    })
    .await
}

fn call(app: &TestApp, creds: &Credentials, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.http
        .request(method, app.url(path))
        .header("X-Client-Key", &creds.client_key)
        .header("X-API-Key", &creds.api_key)
}

async fn post(app: &TestApp, creds: &Credentials, path: &str, body: Value) -> reqwest::Response {
    app.admin(creds, path).json(&body).send().await.unwrap()
}

async fn check(app: &TestApp, sub: &str, module: &str, action: &str) -> bool {
    let r = app
        .internal(Method::POST, "/v1/check")
        .json(&json!({"subject": sub, "scope_type": "memberd", "scope_id": "console", "module": module, "action": action}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["allowed"]
        .as_bool()
        .unwrap()
}

async fn account(app: &TestApp, admin: &Credentials, username: &str, is_admin: bool) {
    let r = post(
        app,
        admin,
        "/admin/accounts",
        json!({"username": username, "password": PASSWORD, "admin": is_admin, "must_change_password": false}),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

fn scim(app: &TestApp, creds: &Credentials, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.http
        .request(method, app.url(path))
        .header(
            "authorization",
            format!("Bearer {}:{}", creds.client_key, creds.api_key),
        )
        .header("content-type", "application/scim+json")
}

on_both_backends! { spawn_app;

// Finding 1: `/(*` answered 422 yet was stored, and the next start failed.
async fn a_module_is_a_pattern_memberd_compiles_or_nothing_is_stored(app) {
    let admin = app.create_client().await;
    app.upsert(json!({"authentik_sub": "ada"})).await;
    let r = post(&app, &admin, "/admin/permissions/grant",
        json!({"authentik_sub": "ada", "scope_type": "memberd", "scope_id": "console", "module": "/(*", "action": "read"})).await;
    assert_eq!(r.status(), StatusCode::CREATED, "every module that parses compiles");
    assert!(check(&app, "ada", "/(x", "read").await, "`(` is literal");
    assert!(!check(&app, "ada", "/x", "read").await);

    // Finding 3's pattern: `|` was an alternation that matched `memberd`.
    let r = post(&app, &admin, "/admin/permissions/grant",
        json!({"authentik_sub": "ada", "scope_type": "memberd", "scope_id": "console", "module": "/x|memberd*", "action": "admin"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(!check(&app, "ada", "memberd", "admin").await);

    // A fresh start compiles what is stored, and skips (not dies on) a row
    // edited by hand into something memberd refuses.
    let engine = Engine::load(&app.store).await.expect("the stored policy loads");
    assert_eq!(engine.skipped_rows(), 0);
    tamper(&app.db.url, "UPDATE permissions SET module = 'not a module' WHERE module = '/(*'").await;
    let engine = Engine::load(&app.store).await.expect("a bad row never stops a start");
    assert_eq!(engine.skipped_rows(), 1);
    let user = app.store.user_by_sub(&AuthentikSub::parse("ada").unwrap()).await.unwrap().unwrap();
    let snapshot = engine.snapshot(&memberd::service::access::Subject::Id(user.id)).unwrap();
    assert_eq!(snapshot.permissions.len(), 1, "the good grant is still there");
}

// Finding 3: a client fenced to `/admin/permissions/*` granted memberd/admin.
async fn a_narrow_client_cannot_hand_out_memberds_own_authority(app) {
    let admin = app.create_client().await;
    account(&app, &admin, "root", true).await;
    account(&app, &admin, "mallory", false).await;
    let narrow = client_with(&app, &[Capability::GrantsWrite], &["/admin/permissions/*", "/admin/users/**"]).await;

    let r = post(&app, &narrow, "/admin/permissions/grant",
        json!({"authentik_sub": "local:mallory", "scope_type": "memberd", "scope_id": "console", "module": "memberd", "action": "admin"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "forbidden");
    assert!(!check(&app, "local:mallory", "memberd", "admin").await);

    // Nor through the built-in admin role, nor by taking it from an operator.
    let r = post(&app, &narrow, "/admin/users/local:mallory/roles",
        json!({"role": "admin"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!check(&app, "local:mallory", "memberd", "admin").await);
    let r = call(&app, &narrow, Method::DELETE, "/admin/users/local:root/roles")
        .json(&json!({"role": "admin"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(check(&app, "local:root", "memberd", "admin").await);

    // What it was given still works.
    app.upsert(json!({"authentik_sub": "ada"})).await;
    let r = post(&app, &narrow, "/admin/permissions/grant",
        json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // And nothing it was not: creating a client takes `admin`.
    let r = post(&app, &narrow, "/admin/clients", json!({"name": "escalated"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A client that may change roles cannot bind the console's own rules
    // (they reveal `memberd`), nor unbind them from a role that has them.
    let roles = client_with(&app, &[Capability::RolesWrite], &[]).await;
    assert_eq!(post(&app, &roles, "/admin/roles", json!({"name": "staff"})).await.status(), StatusCode::CREATED);
    let bind = |rules: Value| call(&app, &roles, Method::PUT, "/admin/roles/staff/rules").json(&json!({"rules": rules})).send();
    assert_eq!(bind(json!(["memberd:users"])).await.unwrap().status(), StatusCode::FORBIDDEN);
    let r = call(&app, &admin, Method::PUT, "/admin/roles/staff/rules")
        .json(&json!({"rules": ["memberd:users"]})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(bind(json!([])).await.unwrap().status(), StatusCode::FORBIDDEN);
}

async fn capabilities_are_enforced_on_every_route_family(app) {
    let admin = app.create_client().await;
    app.upsert(json!({"authentik_sub": "ada"})).await;
    let grant = json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"});

    // The default for a new client: decisions only.
    let checker = client_with(&app, &[], &[]).await;
    let r = post(&app, &checker, "/admin/permissions/grant", grant.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "missing_capability");
    let r = call(&app, &checker, Method::GET, "/admin/users").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app.admin(&checker, "/v1/check")
        .json(&json!({"subject": "ada", "scope_type": "org", "scope_id": "1", "module": "billing", "action": "read"}))
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = scim(&app, &checker, Method::GET, "/scim/v2/Users").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // `read` reads and writes nothing.
    let reader = client_with(&app, &[Capability::Read], &[]).await;
    assert_eq!(call(&app, &reader, Method::GET, "/admin/users").send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(post(&app, &reader, "/admin/roles", json!({"name": "x"})).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(call(&app, &reader, Method::GET, "/admin/audit").send().await.unwrap().status(), StatusCode::FORBIDDEN);

    // A client's capabilities are shown and can be changed by an admin.
    let listed: Value = call(&app, &admin, Method::GET, &format!("/admin/clients/{}", reader.client_key)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["capabilities"], json!(["read"]));
    let r = call(&app, &admin, Method::PATCH, &format!("/admin/clients/{}", reader.client_key))
        .json(&json!({"capabilities": ["read", "grants:write"]}))
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(post(&app, &reader, "/admin/permissions/grant", grant).await.status(), StatusCode::CREATED);
}

async fn a_client_that_disables_users_cannot_lock_out_operators(app) {
    let admin = app.create_client().await;
    account(&app, &admin, "root", true).await;
    app.upsert(json!({"authentik_sub": "ada"})).await;
    let users = client_with(&app, &[Capability::UsersWrite], &[]).await;
    let r = post(&app, &users, "/admin/users/local:root/disable", json!({})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let root = app.store.user_by_sub(&AuthentikSub::parse("local:root").unwrap()).await.unwrap().unwrap();
    assert!(root.is_active);
    assert_eq!(post(&app, &users, "/admin/users/ada/disable", json!({})).await.status(), StatusCode::OK);

    // The internal upsert does not reach into the local namespace either.
    let r = app.upsert(json!({"authentik_sub": "local:root", "is_active": false})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let root = app.store.user_by_sub(&AuthentikSub::parse("local:root").unwrap()).await.unwrap().unwrap();
    assert!(root.is_active);
}

// Finding 11: every wrong API key cost a hash, unthrottled; finding 2:
// unknown client keys of any size were remembered.
async fn wrong_api_keys_are_throttled_before_any_hash(app) {
    let admin = app.create_client().await;
    assert_eq!(call(&app, &admin, Method::GET, "/admin/users").send().await.unwrap().status(), StatusCode::OK);
    let wrong = Credentials { client_key: admin.client_key.clone(), api_key: "mbr_not-the-key".into() };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..24 {
        let r = call(&app, &wrong, Method::GET, "/admin/users").send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r.headers().get("retry-after").cloned();
        }
        statuses.push(r.status().as_u16());
    }
    // The failure that exhausts the budget of 20 is the last one hashed.
    assert!(statuses[..21].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[21..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(retry_after.is_some());
    // A key verified before is still served from the cache: no hash, no wait.
    assert_eq!(call(&app, &admin, Method::GET, "/admin/users").send().await.unwrap().status(), StatusCode::OK);

    // A client key that is no key of ours is refused unread and not
    // remembered, whatever its size (2,000 keys of 400 KiB took 800 MiB).
    let remembered = || async {
        let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("memberd_api_client_rows_remembered "))
            .expect("the gauge is exported")
            .parse::<f64>()
            .unwrap()
    };
    let before = remembered().await;
    for i in 0..50 {
        let huge = Credentials { client_key: format!("mbc_{i}{}", "a".repeat(8_000)), api_key: "x".into() };
        let r = call(&app, &huge, Method::GET, "/admin/users").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(remembered().await, before);
}

// Finding 4: a SCIM client rewrote and disabled the operator `local:root`.
async fn a_scim_client_cannot_take_over_users_it_did_not_provision(app) {
    let admin = app.create_client().await;
    account(&app, &admin, "root", true).await;
    let provisioner = client_with(&app, &[Capability::Scim], &[]).await;
    let r = scim(&app, &provisioner, Method::POST, "/scim/v2/Users")
        .body(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "root2",
            "externalId": "local:root", "active": false, "emails": [{"value": "evil@example.org", "primary": true}]}).to_string())
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let root = app.store.user_by_sub(&AuthentikSub::parse("local:root").unwrap()).await.unwrap().unwrap();
    assert!(root.is_active);
    assert_ne!(root.email.as_ref().map(|e| e.as_str()), Some("evil@example.org"));

    // Nor a user that exists already (made by a provider or the internal upsert).
    app.upsert(json!({"authentik_sub": "ada"})).await;
    let r = scim(&app, &provisioner, Method::POST, "/scim/v2/Users")
        .body(json!({"userName": "ada", "externalId": "ada", "active": false}).to_string())
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Another SCIM client's users do not exist for it.
    let other = client_with(&app, &[Capability::Scim], &[]).await;
    let r = scim(&app, &other, Method::POST, "/scim/v2/Users")
        .body(json!({"userName": "bjensen", "externalId": "bjensen"}).to_string())
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let path = format!("/scim/v2/Users/{id}");
    assert_eq!(scim(&app, &provisioner, Method::GET, &path).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let r = scim(&app, &provisioner, Method::PATCH, &path)
        .body(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": false}]}).to_string())
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let listed: Value = scim(&app, &provisioner, Method::GET, "/scim/v2/Users").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["totalResults"], 0, "{listed}");
    assert_eq!(scim(&app, &other, Method::GET, &path).send().await.unwrap().status(), StatusCode::OK);
}

// Finding 12: a PUT that failed with 409 still stored `active` and `displayName`.
async fn a_scim_put_refused_for_a_taken_username_changes_nothing(app) {
    let provisioner = client_with(&app, &[Capability::Scim], &[]).await;
    let create = |name: &str| {
        scim(&app, &provisioner, Method::POST, "/scim/v2/Users")
            .body(json!({"userName": name, "externalId": name, "displayName": name}).to_string())
            .send()
    };
    assert_eq!(create("alice").await.unwrap().status(), StatusCode::CREATED);
    let bob: Value = create("bob").await.unwrap().json().await.unwrap();
    let path = format!("/scim/v2/Users/{}", bob["id"].as_str().unwrap());
    let r = scim(&app, &provisioner, Method::PUT, &path)
        .body(json!({"userName": "alice", "displayName": "Changed", "active": false}).to_string())
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let user = app.store.user_by_sub(&AuthentikSub::parse("bob").unwrap()).await.unwrap().unwrap();
    assert!(user.is_active);
    assert_eq!(user.display_name.as_ref().map(|d| d.as_str()), Some("bob"));
}

// Finding 12: leaving a group linked to a role took the role an administrator gave.
async fn leaving_a_linked_group_keeps_a_role_an_administrator_assigned(app) {
    let admin = app.create_client().await;
    let provisioner = client_with(&app, &[Capability::Scim], &[]).await;
    assert_eq!(post(&app, &admin, "/admin/roles", json!({"name": "staff"})).await.status(), StatusCode::CREATED);
    assert_eq!(post(&app, &admin, "/admin/roles/staff/permissions", json!({"module": "wiki", "action": "read"})).await.status(), StatusCode::CREATED);
    let user: Value = scim(&app, &provisioner, Method::POST, "/scim/v2/Users")
        .body(json!({"userName": "ada", "externalId": "ada"}).to_string())
        .send().await.unwrap().json().await.unwrap();
    let member = json!([{"value": user["id"]}]);
    let group: Value = scim(&app, &provisioner, Method::POST, "/scim/v2/Groups")
        .body(json!({"displayName": "Staff", "members": member}).to_string())
        .send().await.unwrap().json().await.unwrap();
    let group_id = group["id"].as_str().unwrap();
    let r = call(&app, &admin, Method::PUT, &format!("/admin/scim/groups/{group_id}/role")).json(&json!({"role": "staff"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The administrator assigns the same role, everywhere, by hand.
    let r = post(&app, &admin, "/admin/users/ada/roles", json!({"role": "staff"})).await;
    assert_eq!(r.status(), StatusCode::OK, "already held (through the group)");
    let wiki = || app.internal(Method::POST, "/v1/check")
        .json(&json!({"subject": "ada", "scope_type": "org", "scope_id": "1", "module": "wiki", "action": "read"}))
        .send();
    assert_eq!(wiki().await.unwrap().json::<Value>().await.unwrap()["allowed"], true);

    let r = scim(&app, &provisioner, Method::PATCH, &format!("/scim/v2/Groups/{group_id}"))
        .body(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": format!("members[value eq \"{}\"]", user["id"].as_str().unwrap())}]}).to_string())
        .send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert_eq!(wiki().await.unwrap().json::<Value>().await.unwrap()["allowed"], true,
        "the administrator's assignment stays");

    // Once the administrator takes it too, it is gone.
    let r = call(&app, &admin, Method::DELETE, "/admin/users/ada/roles")
        .json(&json!({"role": "staff"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(wiki().await.unwrap().json::<Value>().await.unwrap()["allowed"], false);
}

}

// Finding 13: NUL bytes answered 500 on PostgreSQL; they are the client's mistake.
mod nul_bytes {
    use super::*;

    on_both_backends! { spawn_app;

    async fn nul_bytes_are_a_400_wherever_they_come(app) {
        let admin = app.create_client().await;
        app.upsert(json!({"authentik_sub": "ada"})).await;
        let r = post(&app, &admin, "/admin/permissions/grant",
            json!({"authentik_sub": "ada", "scope_type": "org", "scope_id": "1\u{0}", "module": "billing", "action": "read"})).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(r).await, "invalid_text");
        let r = call(&app, &admin, Method::GET, "/admin/clients/mbc_%00x").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = call(&app, &admin, Method::PUT, "/admin/catalog/billing")
            .json(&json!({"description": "bad\u{0}", "actions": ["read"]})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let provisioner = client_with(&app, &[Capability::Scim], &[]).await;
        let r = scim(&app, &provisioner, Method::POST, "/scim/v2/Users")
            .body(json!({"userName": "a\u{0}b", "externalId": "x\u{0}", "displayName": "d\u{0}"}).to_string())
            .send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(app.revision().await, 1, "nothing was written");

        // Lengths are checked at the edge too, with the field named.
        let long = "x".repeat(300);
        let r = scim(&app, &provisioner, Method::POST, "/scim/v2/Users")
            .body(json!({"userName": long}).to_string())
            .send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = post(&app, &admin, "/admin/roles", json!({"name": "r", "description": "d".repeat(1001)})).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_code(r).await, "invalid_field");
        assert_eq!(app.revision().await, 1, "nothing was written");
    }

    }
}

// Finding 5: behind a trusted proxy, forged `X-Forwarded-For` hops changed
// the address the `/auth/*` limit counted, and an unparseable one skipped it.
mod forwarded {
    use super::*;
    use common::spawn_app_with;

    async fn behind_a_proxy(backend: common::Backend) -> Option<TestApp> {
        spawn_app_with(backend, |s| {
            s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            s.auth_rate_limit_per_minute = 5;
        })
        .await
    }

    on_both_backends! { behind_a_proxy;

    async fn forged_hops_do_not_escape_the_auth_limit(app) {
        let mut statuses = Vec::new();
        for i in 0..8 {
            let forged = if i % 2 == 0 { format!("10.0.0.{i}, 198.51.100.7") } else { format!("garbage-{i}, 198.51.100.7") };
            let r = app.http.get(app.url("/auth/captcha")).header("X-Forwarded-For", forged).send().await.unwrap();
            statuses.push(r.status().as_u16());
        }
        assert!(statuses[..5].iter().all(|s| *s != 429), "{statuses:?}");
        assert!(statuses[5..].iter().all(|s| *s == 429), "one caller, however its left hops read: {statuses:?}");

        // An unparseable right-most hop counts as the proxy itself, not as nobody.
        let mut statuses = Vec::new();
        for _ in 0..7 {
            let r = app.http.get(app.url("/auth/captcha")).header("X-Forwarded-For", "not-an-address").send().await.unwrap();
            statuses.push(r.status().as_u16());
        }
        assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    }

    }
}
