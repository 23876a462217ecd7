//! The store suite: every test runs on SQLite and on PostgreSQL, so the two
//! backends cannot drift apart.

mod common;

use common::{TestStore, test_store};
use ipnet::IpNet;
use memberd::model::{
    Action, ApiClient, AssignmentSource, AuthentikSub, Capability, ClientName, ClientStatus,
    DisplayName, Effect, Email, Module, Origin, PathPattern, Permission, Revision, RoleAssignment,
    RoleName, RolePermission, Scope, ScopeId, ScopeType, UserUpsert,
};
use memberd::store::{ChangesSince, LoadedGrant, PolicyRow, Store, StoreError, now};
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

fn role(name: &str) -> RoleName {
    RoleName::parse(name).unwrap()
}

fn scope(st: &str, sid: &str) -> Scope {
    Scope::parse(st, ScopeId::parse(sid).unwrap()).unwrap()
}

fn role_permission(module: &str, action: &str, pin: Option<(&str, &str)>) -> RolePermission {
    RolePermission {
        module: Module::parse(module).unwrap(),
        action: Action::parse(action).unwrap(),
        effect: Effect::Allow,
        scope: pin.map(|(st, sid)| scope(st, sid)),
    }
}

fn assignment(name: &str, st: &str, sid: &str) -> RoleAssignment {
    RoleAssignment {
        role: role(name),
        scope: scope(st, sid),
    }
}

/// What `load_policy` streamed, summarised.
#[derive(Default)]
struct Loaded {
    revision: Revision,
    users: usize,
    roles: Vec<String>,
    parents: Vec<(String, String)>,
    role_permissions: usize,
    grants: Vec<LoadedGrant>,
    assignments: Vec<(String, String, String)>,
    skipped: Vec<&'static str>,
}

async fn policy(store: &Store) -> Loaded {
    let mut loaded = Loaded::default();
    loaded.revision = store
        .load_policy(|row| {
            match row {
                PolicyRow::User(_) => loaded.users += 1,
                PolicyRow::Role { name } => loaded.roles.push(name.to_string()),
                PolicyRow::Parent { role, parent } => {
                    loaded.parents.push((role.to_string(), parent.to_string()))
                }
                PolicyRow::RolePermission { .. } => loaded.role_permissions += 1,
                PolicyRow::Grant(g) => loaded.grants.push(g),
                PolicyRow::Assignment { assignment, .. } => loaded.assignments.push((
                    assignment.role.to_string(),
                    assignment.scope.scope_type.clone(),
                    assignment.scope.scope_id.to_string(),
                )),
                PolicyRow::Skipped { table, .. } => loaded.skipped.push(table),
            }
            Ok(())
        })
        .await
        .unwrap();
    loaded.roles.sort();
    loaded
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
        capabilities: vec![Capability::GrantsWrite, Capability::Read],
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

    let first = store.grant(&sub("ada"), &p, Effect::Allow).await.unwrap();
    assert!(first.created);
    assert_eq!(first.revision, Revision(2));
    assert_eq!(first.grant.permission, p);

    let again = store.grant(&sub("ada"), &p, Effect::Allow).await.unwrap();
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
    store.grant(&sub("ada"), &p, Effect::Allow).await.unwrap();

    let revoked = store.revoke(&sub("ada"), &p).await.unwrap();
    assert!(revoked.revoked.is_some());
    assert_eq!(revoked.revision, Revision(3));

    let missing = store.revoke(&sub("ada"), &p).await.unwrap();
    assert!(missing.revoked.is_none());
    assert_eq!(missing.revision, Revision(3));
    assert_eq!(store.current_revision().await.unwrap(), Revision(3));
}

async fn unknown_users_are_not_found(t) {
    let store = &t.store;
    let p = perm("org", "1", "m", "read");
    assert!(matches!(store.grant(&sub("ghost"), &p, Effect::Allow).await, Err(StoreError::NotFound("user"))));
    assert!(matches!(store.revoke(&sub("ghost"), &p).await, Err(StoreError::NotFound("user"))));
    assert!(store.user_by_sub(&sub("ghost")).await.unwrap().is_none());
    assert_eq!(store.current_revision().await.unwrap(), Revision(0), "failed changes leave no revision behind");
}

async fn grants_change_effect_in_place(t) {
    let store = &t.store;
    store.upsert_user(&upsert("ada")).await.unwrap();
    let p = perm("org", "1", "billing", "read");
    let allow = store.grant(&sub("ada"), &p, Effect::Allow).await.unwrap();
    let deny = store.grant(&sub("ada"), &p, Effect::Deny).await.unwrap();
    assert!(!deny.created && deny.changed);
    assert_eq!(deny.grant.id, allow.grant.id);
    assert_eq!(deny.grant.effect, Effect::Deny);
    assert_eq!(deny.revision, Revision(3));
    let grants = policy(store).await.grants;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].effect, Effect::Deny);
    let revoked = store.revoke(&sub("ada"), &p).await.unwrap();
    assert_eq!(revoked.revoked.map(|g| g.effect), Some(Effect::Deny));
}

async fn roles_round_trip(t) {
    let store = &t.store;
    store.create_role(&role("viewer"), "reads", &[]).await.unwrap();
    store.create_role(&role("editor"), "", &[role("viewer")]).await.unwrap();
    assert!(matches!(store.create_role(&role("viewer"), "", &[]).await, Err(StoreError::AlreadyExists("role"))));
    assert!(matches!(store.create_role(&role("x"), "", &[role("ghost")]).await, Err(StoreError::NotFound("role"))));
    assert!(store.role(&role("x")).await.unwrap().is_none(), "a failed create leaves nothing");

    let read = role_permission("docs", "read", None);
    let pinned = role_permission("audit", "read", Some(("org", "1")));
    assert!(store.set_role_permission(&role("viewer"), &read, &[]).await.unwrap().changed);
    assert!(!store.set_role_permission(&role("viewer"), &read, &[]).await.unwrap().changed);
    assert!(store.set_role_permission(&role("viewer"), &pinned, &[]).await.unwrap().changed);
    let deny = RolePermission { effect: Effect::Deny, ..read.clone() };
    assert!(store.set_role_permission(&role("viewer"), &deny, &[]).await.unwrap().changed, "effect changed");

    let viewer = store.role(&role("viewer")).await.unwrap().unwrap();
    assert_eq!(viewer.description, "reads");
    assert_eq!(viewer.permissions, vec![pinned.clone(), deny.clone()]);
    let editor = store.role(&role("editor")).await.unwrap().unwrap();
    assert_eq!(editor.parents, vec![role("viewer")]);
    assert_eq!(store.roles().await.unwrap().len(), 2);

    store.update_role(&role("editor"), Some("writes"), Some(&[]), &[]).await.unwrap();
    let editor = store.role(&role("editor")).await.unwrap().unwrap();
    assert_eq!(editor.description, "writes");
    assert!(editor.parents.is_empty());

    assert!(store.remove_role_permission(&role("viewer"), &read, &[]).await.unwrap().changed);
    assert!(!store.remove_role_permission(&role("viewer"), &read, &[]).await.unwrap().changed);
    store.delete_role(&role("viewer"), &[]).await.unwrap();
    assert!(store.role(&role("viewer")).await.unwrap().is_none());
    assert!(matches!(store.delete_role(&role("viewer"), &[]).await, Err(StoreError::NotFound("role"))));
}

async fn assignments_and_the_change_log(t) {
    let store = &t.store;
    let ada = store.upsert_user(&upsert("ada")).await.unwrap().user;
    let bob = store.upsert_user(&upsert("bob")).await.unwrap().user;
    store.create_role(&role("staff"), "", &[]).await.unwrap();
    let before = store.current_revision().await.unwrap();

    let staff = assignment("staff", "org", "1");
    let (user, outcome) = store.assign_role(AssignmentSource::Admin, &sub("ada"), &staff).await.unwrap();
    assert_eq!(user, ada.id);
    assert!(outcome.changed);
    assert!(!store.assign_role(AssignmentSource::Admin, &sub("ada"), &staff).await.unwrap().1.changed);
    assert!(matches!(store.assign_role(AssignmentSource::Admin, &sub("ghost"), &staff).await, Err(StoreError::NotFound("user"))));
    assert!(matches!(store.assign_role(AssignmentSource::Admin, &sub("ada"), &assignment("ghost", "org", "1")).await, Err(StoreError::NotFound("role"))));

    // A change to the role reaches its holders: ada, not bob.
    let changed = store.set_role_permission(&role("staff"), &role_permission("docs", "read", None), &[role("staff")]).await.unwrap();
    match store.changes_since(before).await.unwrap() {
        ChangesSince::Changed { users, revision } => {
            assert_eq!(users, vec![ada.id]);
            assert_eq!(revision, changed.revision);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.user_by_sub(&sub("ada")).await.unwrap().unwrap().revision, changed.revision);
    assert_eq!(store.user_by_sub(&sub("bob")).await.unwrap().unwrap().revision, bob.revision);

    // Deleting the role logs its holders before their assignments go.
    let deleted = store.delete_role(&role("staff"), &[role("staff")]).await.unwrap();
    match store.changes_since(changed.revision).await.unwrap() {
        ChangesSince::Changed { users, revision } => {
            assert_eq!(users, vec![ada.id]);
            assert_eq!(revision, deleted);
        }
        other => panic!("{other:?}"),
    }

    store.prune_change_log(deleted).await.unwrap();
    assert_eq!(store.changes_since(Revision(0)).await.unwrap(), ChangesSince::Gone { oldest: deleted });
    assert_eq!(
        store.changes_since(deleted).await.unwrap(),
        ChangesSince::Changed { users: vec![], revision: deleted }
    );
}

async fn the_policy_loads_whole(t) {
    let store = &t.store;
    store.upsert_user(&upsert("ada")).await.unwrap();
    store.create_role(&role("viewer"), "", &[]).await.unwrap();
    store.create_role(&role("editor"), "", &[role("viewer")]).await.unwrap();
    store.set_role_permission(&role("viewer"), &role_permission("docs", "read", Some(("org", "*"))), &[]).await.unwrap();
    store.assign_role(AssignmentSource::Admin, &sub("ada"), &assignment("editor", "*", "*")).await.unwrap();
    store.grant(&sub("ada"), &perm("org", "1", "billing", "read"), Effect::Deny).await.unwrap();
    let loaded = policy(store).await;
    assert_eq!(loaded.revision, store.current_revision().await.unwrap());
    assert_eq!(loaded.users, 1);
    assert_eq!(loaded.roles, vec!["editor".to_owned(), "viewer".to_owned()]);
    assert_eq!(loaded.parents, vec![("editor".to_owned(), "viewer".to_owned())]);
    assert_eq!(loaded.role_permissions, 1);
    assert_eq!(loaded.assignments, vec![("editor".to_owned(), "*".to_owned(), "*".to_owned())]);
    assert_eq!(loaded.grants.len(), 1);
}

async fn concurrent_writes_get_distinct_increasing_revisions(t) {
    let store = t.store.clone();
    store.upsert_user(&upsert("ada")).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.grant(&sub("ada"), &perm("org", &i.to_string(), "m", "read"), Effect::Allow).await.unwrap().revision
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap().0);
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (2..18).collect::<Vec<_>>());
    assert_eq!(policy(&store).await.grants.len(), 16);
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
