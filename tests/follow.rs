//! Several instances on one database: each follows the change log, so what
//! one changes the other answers, at once with `min_revision` and within
//! moments without; a change from outside any instance (the CLI) too.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Credentials, TestApp, spawn_app};
use memberd::app::Application;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A second instance on the first one's database.
async fn second_instance(first: &TestApp) -> String {
    let app = Application::build(first.settings.clone())
        .await
        .expect("building a second instance");
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until(std::future::pending()));
    base
}

struct Pair {
    a: TestApp,
    b: String,
    admin: Credentials,
}

async fn pair(backend: Backend) -> Option<Pair> {
    let a = spawn_app(backend).await?;
    let b = second_instance(&a).await;
    let admin = a.create_client().await;
    Some(Pair { a, b, admin })
}

impl Pair {
    async fn on_a(&self, path: &str, body: Value) -> Value {
        let response = self
            .a
            .admin(&self.admin, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn check_on_b(&self, body: Value) -> (bool, i64) {
        let response = self
            .a
            .http
            .post(format!("{}/v1/check", self.b))
            .header("X-Internal-Secret", common::INTERNAL_SECRET)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        (
            answer["allowed"].as_bool().unwrap(),
            answer["revision"].as_i64().unwrap(),
        )
    }

    /// B's answer once it has reached `revision`: exact, no waiting in the test.
    async fn on_b_at(&self, sub: &str, module: &str, revision: i64) -> bool {
        let (allowed, seen) = self
            .check_on_b(json!({"subject": sub, "scope_type": "org", "scope_id": "1",
                "module": module, "action": "read", "min_revision": revision}))
            .await;
        assert!(seen >= revision);
        allowed
    }

    /// How long until B answers `expected` without being told a revision.
    async fn until_b_says(&self, sub: &str, module: &str, expected: bool) -> Duration {
        let started = Instant::now();
        loop {
            let (allowed, _) = self
                .check_on_b(json!({"subject": sub, "scope_type": "org", "scope_id": "1",
                    "module": module, "action": "read"}))
                .await;
            if allowed == expected {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "B never caught up"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

on_both_backends! { pair;

async fn what_one_instance_changes_the_other_answers(p) {
    p.a.upsert(json!({"authentik_sub": "ann"})).await;
    let granted = p.on_a("/admin/permissions/grant", json!({"authentik_sub": "ann", "scope_type": "org",
        "scope_id": "1", "module": "billing", "action": "read"})).await;
    let waited = p.until_b_says("ann", "billing", true).await;
    eprintln!("visible on the other instance after {waited:?}");
    assert!(p.on_b_at("ann", "billing", granted["revision"].as_i64().unwrap()).await);

    // Roles: created, given a permission and assigned on A; held on B.
    p.on_a("/admin/roles", json!({"name": "clerk"})).await;
    p.on_a("/admin/roles/clerk/permissions", json!({"module": "ledger", "action": "read"})).await;
    let assigned = p.on_a("/admin/users/ann/roles", json!({"role": "clerk", "scope_type": "org", "scope_id": "1"})).await;
    assert!(p.on_b_at("ann", "ledger", assigned["revision"].as_i64().unwrap()).await);

    // A role's permission changes without touching the user's own rows.
    let more = p.on_a("/admin/roles/clerk/permissions", json!({"module": "payroll", "action": "read"})).await;
    assert!(p.on_b_at("ann", "payroll", more["revision"].as_i64().unwrap()).await);

    // Deleting the role, revoking and disabling all reach B.
    let deleted = p.a.http.delete(p.a.url("/admin/roles/clerk"))
        .header("X-Client-Key", &p.admin.client_key).header("X-API-Key", &p.admin.api_key)
        .send().await.unwrap();
    assert!(deleted.status().is_success());
    let revision = p.a.revision().await;
    assert!(!p.on_b_at("ann", "ledger", revision).await);
    let disabled = p.a.upsert(json!({"authentik_sub": "ann", "is_active": false})).await;
    assert_eq!(disabled.status(), StatusCode::OK);
    assert!(!p.on_b_at("ann", "billing", p.a.revision().await).await);
}

async fn a_change_from_outside_any_instance_is_followed(p) {
    // The CLI (here: the store, as `memberd casbin import` uses it) writes behind both instances' backs.
    p.a.upsert(json!({"authentik_sub": "bo"})).await;
    let sub = memberd::model::AuthentikSub::parse("bo").unwrap();
    let permission = memberd::model::Permission {
        scope_type: memberd::model::ScopeType::parse("org").unwrap(),
        scope_id: memberd::model::ScopeId::parse("1").unwrap(),
        module: memberd::model::Module::parse("archive").unwrap(),
        action: memberd::model::Action::parse("read").unwrap(),
    };
    let outcome = p.a.store.grant(&sub, &permission, memberd::model::Effect::Allow).await.unwrap();
    assert!(p.on_b_at("bo", "archive", outcome.revision.0).await);

    // A then changes something itself: its own index must not claim the
    // outside change until it has it.
    let granted = p.on_a("/admin/permissions/grant", json!({"authentik_sub": "bo", "scope_type": "org",
        "scope_id": "1", "module": "billing", "action": "read"})).await;
    let explained: Value = p.a.internal(Method::POST, "/v1/check")
        .json(&json!({"subject": "bo", "scope_type": "org", "scope_id": "1", "module": "archive",
            "action": "read", "min_revision": granted["revision"]}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(explained["allowed"], true, "{explained}");
}

}
