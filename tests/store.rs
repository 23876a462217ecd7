//! The store suite: every test runs on SQLite and on PostgreSQL, so the two
//! backends cannot drift apart.

mod common;

use common::{TestStore, test_store};
use ipnet::IpNet;
use memberd::model::{
    Action, ApiClient, AuthentikSub, ClientName, ClientStatus, DisplayName, Email, Module, Origin,
    PathPattern, Permission, Revision, ScopeId, ScopeType, UserUpsert,
};
use memberd::store::{StoreError, now};
use time::Duration;

fn sub(s: &str) -> AuthentikSub {
    AuthentikSub::parse(s).unwrap()
}

fn perm(scope_type: &str, scope_id: &str, module: &str, action: &str) -> Permission {
    Permission {
        scope_type: ScopeType::parse(scope_type).unwrap(),
        scope_id: ScopeId::parse(scope_id).unwrap(),
        module: Module::parse(module).unwrap(),
        action: Action::parse(action).unwrap(),
    }
}

fn upsert(s: &str) -> UserUpsert {
    UserUpsert {
        authentik_sub: sub(s),
        email: None,
        display_name: None,
        is_active: None,
    }
}

fn client(key: &str) -> ApiClient {
    ApiClient {
        client_key: key.into(),
        name: ClientName::parse("back office").unwrap(),
        api_key_hash: "sha256:00".into(),
        status: ClientStatus::Active,
        expires_at: Some(now() + Duration::days(30)),
        allowed_origins: vec![Origin::parse("https://admin.example.org").unwrap()],
        allowed_ips: vec![
            "10.0.0.0/8".parse::<IpNet>().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
        allowed_paths: vec![PathPattern::parse("/admin/**").unwrap()],
        rate_limit_per_minute: Some(600),
        created_at: now(),
        last_used_at: None,
    }
}

on_both_backends! { test_store;

async fn migrations_are_idempotent(t) {
    let TestStore { store, .. } = t;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), Revision(0));
}

async fn upsert_creates_then_updates_only_given_fields(t) {
    let store = &t.store;
    let created = store
        .upsert_user(&UserUpsert {
            email: Some(Email::parse("ada@example.org").unwrap()),
            display_name: Some(DisplayName::parse("Ada").unwrap()),
            ..upsert("ada")
        })
        .await
        .unwrap();
    assert!(created.changed);
    assert!(created.user.is_active);
    assert_eq!(created.user.revision, Revision(1));

    let updated = store.upsert_user(&UserUpsert { is_active: Some(false), ..upsert("ada") }).await.unwrap();
    assert!(updated.changed);
    assert_eq!(updated.user.id, created.user.id);
    assert_eq!(updated.user.email, created.user.email, "a field left out keeps its value");
    assert_eq!(updated.user.display_name, created.user.display_name);
    assert!(!updated.user.is_active);
    assert_eq!(updated.user.created_at, created.user.created_at);
    assert_eq!(updated.user.revision, Revision(2));

    let same = store.upsert_user(&UserUpsert { is_active: Some(false), ..upsert("ada") }).await.unwrap();
    assert!(!same.changed);
    assert_eq!(same.user, updated.user, "reads back exactly what was written");
    assert_eq!(store.current_revision().await.unwrap(), Revision(2), "a no-op moves no revision");
}

async fn grants_are_idempotent_and_bump_the_revision(t) {
    let store = &t.store;
    store.upsert_user(&upsert("ada")).await.unwrap();
    let p = perm("org", "42", "billing", "read");

    let first = store.grant(&sub("ada"), &p).await.unwrap();
    assert!(first.created);
    assert_eq!(first.revision, Revision(2));
    assert_eq!(first.grant.permission, p);

    let again = store.grant(&sub("ada"), &p).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.grant, first.grant);
    assert_eq!(again.revision, Revision(2));
    assert_eq!(store.current_revision().await.unwrap(), Revision(2));

    let user = store.user_by_sub(&sub("ada")).await.unwrap().unwrap();
    assert_eq!(user.revision, Revision(2), "the user's revision follows their grants");
}

async fn revoke_reports_whether_anything_was_revoked(t) {
    let store = &t.store;
    store.upsert_user(&upsert("ada")).await.unwrap();
    let p = perm("org", "42", "billing", "read");
    store.grant(&sub("ada"), &p).await.unwrap();

    let revoked = store.revoke(&sub("ada"), &p).await.unwrap();
    assert!(revoked.revoked);
    assert_eq!(revoked.revision, Revision(3));

    let missing = store.revoke(&sub("ada"), &p).await.unwrap();
    assert!(!missing.revoked);
    assert_eq!(missing.revision, Revision(3));
    assert_eq!(store.current_revision().await.unwrap(), Revision(3));
}

async fn unknown_users_are_not_found(t) {
    let store = &t.store;
    let p = perm("org", "1", "m", "read");
    assert!(matches!(store.grant(&sub("ghost"), &p).await, Err(StoreError::NotFound("user"))));
    assert!(matches!(store.revoke(&sub("ghost"), &p).await, Err(StoreError::NotFound("user"))));
    assert!(store.snapshot(&sub("ghost")).await.unwrap().is_none());
    assert!(store.user_by_sub(&sub("ghost")).await.unwrap().is_none());
    assert_eq!(store.current_revision().await.unwrap(), Revision(0), "failed changes leave no revision behind");
}

async fn snapshots_are_sorted_bytewise(t) {
    let store = &t.store;
    store.upsert_user(&upsert("ada")).await.unwrap();
    store.upsert_user(&upsert("bob")).await.unwrap();
    let grants = [
        perm("project", "b", "docs", "write"),
        perm("org", "Z", "billing", "*"),
        perm("org", "a", "billing", "read"),
        perm("org", "*", "audit", "read"),
        perm("project", "b", "docs", "read"),
    ];
    for p in &grants {
        store.grant(&sub("ada"), p).await.unwrap();
    }
    store.grant(&sub("bob"), &perm("org", "1", "other", "read")).await.unwrap();

    let snapshot = store.snapshot(&sub("ada")).await.unwrap().unwrap();
    let mut expected = grants.to_vec();
    expected.sort();
    assert_eq!(snapshot.permissions, expected);
    // Byte order: '*' < 'Z' < 'a', whatever the database's collation.
    assert_eq!(snapshot.permissions[0].scope_id.as_str(), "*");
    assert_eq!(snapshot.permissions[1].scope_id.as_str(), "Z");

    let empty = store.upsert_user(&upsert("carol")).await.unwrap().user;
    let snapshot = store.snapshot(&sub("carol")).await.unwrap().unwrap();
    assert_eq!(snapshot.user, empty);
    assert!(snapshot.permissions.is_empty());
}

async fn concurrent_writes_get_distinct_increasing_revisions(t) {
    let store = t.store.clone();
    store.upsert_user(&upsert("ada")).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.grant(&sub("ada"), &perm("org", &i.to_string(), "m", "read")).await.unwrap().revision
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap().0);
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (2..18).collect::<Vec<_>>());
    assert_eq!(store.snapshot(&sub("ada")).await.unwrap().unwrap().permissions.len(), 16);
}

async fn concurrent_upserts_of_one_subject_make_one_user(t) {
    let store = t.store.clone();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let email = Email::parse(format!("u{}@example.org", i % 2)).unwrap();
                store.upsert_user(&UserUpsert { email: Some(email), ..upsert("same") }).await.unwrap().user.id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one subject, one user");
}

async fn settings_keep_the_first_value(t) {
    let store = &t.store;
    assert_eq!(store.setting("k").await.unwrap(), None);
    assert!(store.insert_setting_if_absent("k", "first").await.unwrap());
    assert!(!store.insert_setting_if_absent("k", "second").await.unwrap());
    assert_eq!(store.setting("k").await.unwrap().as_deref(), Some("first"));
}

async fn clients_round_trip(t) {
    let store = &t.store;
    let c = client("mbc_one");
    store.create_client(&c).await.unwrap();
    assert_eq!(store.client("mbc_one").await.unwrap(), Some(c.clone()));
    assert!(matches!(store.create_client(&c).await, Err(StoreError::AlreadyExists("client"))));

    let minimal = ApiClient {
        expires_at: None,
        allowed_origins: vec![],
        allowed_ips: vec![],
        allowed_paths: vec![],
        rate_limit_per_minute: None,
        ..client("mbc_two")
    };
    store.create_client(&minimal).await.unwrap();
    assert_eq!(store.clients().await.unwrap().len(), 2);

    store.set_client_status("mbc_one", ClientStatus::Disabled).await.unwrap();
    store.set_client_key_hash("mbc_one", "sha256:ff").await.unwrap();
    let at = now();
    store.touch_client("mbc_one", at).await.unwrap();
    let changed = store.client("mbc_one").await.unwrap().unwrap();
    assert_eq!(changed.status, ClientStatus::Disabled);
    assert_eq!(changed.api_key_hash, "sha256:ff");
    assert_eq!(changed.last_used_at, Some(at));

    assert!(matches!(store.set_client_status("nope", ClientStatus::Active).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.set_client_key_hash("nope", "x").await, Err(StoreError::NotFound(_))));
    assert_eq!(store.client("nope").await.unwrap(), None);
}

}
