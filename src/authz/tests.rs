//! The engine against its definition: unit tests of each rule, and property
//! tests comparing the index, built by random incremental changes, with a
//! naive evaluator written straight from the decision rule.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use uuid::Uuid;

use super::functions::key_match2;
use super::index::{Index, IndexError, Request, Source};
use crate::model::{Effect, UserId};

fn user(n: u128) -> UserId {
    UserId(Uuid::from_u128(n + 1))
}

fn req<'a>(st: &'a str, sid: &'a str, module: &'a str, action: &'a str) -> Request<'a> {
    Request {
        scope_type: st,
        scope_id: sid,
        module,
        action,
    }
}

fn index_with_users(n: u128) -> Index {
    let mut index = Index::new();
    for u in 0..n {
        index.upsert_user(user(u), &format!("u{u}"), true, 0);
    }
    index
}

#[test]
fn direct_grants_with_wildcards() {
    let mut ix = index_with_users(1);
    ix.set_direct(
        user(0),
        Uuid::nil(),
        "org",
        "1",
        "billing",
        "read",
        Effect::Allow,
    )
    .unwrap();
    ix.set_direct(user(0), Uuid::nil(), "org", "*", "docs", "*", Effect::Allow)
        .unwrap();
    assert!(
        ix.check(user(0), &req("org", "1", "billing", "read"))
            .unwrap()
    );
    assert!(
        !ix.check(user(0), &req("org", "2", "billing", "read"))
            .unwrap()
    );
    assert!(
        !ix.check(user(0), &req("org", "1", "billing", "write"))
            .unwrap()
    );
    assert!(
        !ix.check(user(0), &req("team", "1", "billing", "read"))
            .unwrap()
    );
    assert!(
        ix.check(user(0), &req("org", "99", "docs", "delete"))
            .unwrap()
    );
    assert!(ix.check(user(0), &req("org", "*", "docs", "*")).unwrap());
    assert!(
        !ix.check(user(0), &req("org", "*", "billing", "read"))
            .unwrap(),
        "* asks for every org"
    );
    assert!(
        !ix.check(user(0), &req("org", "1", "never-seen", "read"))
            .unwrap()
    );
}

#[test]
fn deny_wins_and_inactive_users_may_nothing() {
    let mut ix = index_with_users(1);
    ix.set_direct(
        user(0),
        Uuid::nil(),
        "org",
        "*",
        "billing",
        "*",
        Effect::Allow,
    )
    .unwrap();
    ix.set_direct(
        user(0),
        Uuid::nil(),
        "org",
        "7",
        "billing",
        "delete",
        Effect::Deny,
    )
    .unwrap();
    assert!(
        ix.check(user(0), &req("org", "7", "billing", "read"))
            .unwrap()
    );
    assert!(
        !ix.check(user(0), &req("org", "7", "billing", "delete"))
            .unwrap()
    );
    assert!(
        ix.check(user(0), &req("org", "8", "billing", "delete"))
            .unwrap()
    );
    ix.upsert_user(user(0), "u0", false, 1);
    assert!(
        !ix.check(user(0), &req("org", "8", "billing", "delete"))
            .unwrap()
    );
    let why = ix
        .explain(user(0), &req("org", "8", "billing", "read"))
        .unwrap();
    assert_eq!(why.reason, "inactive_user");
}

#[test]
fn roles_apply_in_the_scope_of_the_assignment() {
    let mut ix = index_with_users(2);
    ix.add_role("editor");
    ix.set_role_permission("editor", "docs", "write", None, Effect::Allow)
        .unwrap();
    ix.assign(user(0), "editor", "project", "7").unwrap();
    ix.assign(user(1), "editor", "project", "*").unwrap();
    assert!(
        ix.check(user(0), &req("project", "7", "docs", "write"))
            .unwrap()
    );
    assert!(
        !ix.check(user(0), &req("project", "8", "docs", "write"))
            .unwrap()
    );
    assert!(
        ix.check(user(1), &req("project", "8", "docs", "write"))
            .unwrap()
    );
    assert!(
        !ix.check(user(1), &req("org", "8", "docs", "write"))
            .unwrap()
    );
    ix.assign(user(1), "editor", "*", "*").unwrap();
    assert!(
        ix.check(user(1), &req("org", "8", "docs", "write"))
            .unwrap()
    );
}

#[test]
fn pinned_permissions_apply_only_where_pin_and_assignment_meet() {
    let mut ix = index_with_users(2);
    ix.add_role("auditor");
    ix.set_role_permission(
        "auditor",
        "audit",
        "read",
        Some(("org", "1")),
        Effect::Allow,
    )
    .unwrap();
    ix.assign(user(0), "auditor", "*", "*").unwrap();
    ix.assign(user(1), "auditor", "org", "2").unwrap();
    assert!(
        ix.check(user(0), &req("org", "1", "audit", "read"))
            .unwrap()
    );
    assert!(
        !ix.check(user(0), &req("org", "2", "audit", "read"))
            .unwrap()
    );
    assert!(
        !ix.check(user(1), &req("org", "1", "audit", "read"))
            .unwrap()
    );
    assert!(
        !ix.check(user(1), &req("org", "2", "audit", "read"))
            .unwrap()
    );
}

#[test]
fn hierarchy_is_inherited_and_cycles_are_refused() {
    let mut ix = index_with_users(1);
    for r in ["viewer", "editor", "admin"] {
        ix.add_role(r);
    }
    ix.set_role_permission("viewer", "docs", "read", None, Effect::Allow)
        .unwrap();
    ix.set_role_permission("editor", "docs", "write", None, Effect::Allow)
        .unwrap();
    ix.set_parents("editor", &["viewer"]).unwrap();
    ix.set_parents("admin", &["editor"]).unwrap();
    ix.assign(user(0), "admin", "org", "1").unwrap();
    assert!(ix.check(user(0), &req("org", "1", "docs", "read")).unwrap());
    assert!(
        ix.check(user(0), &req("org", "1", "docs", "write"))
            .unwrap()
    );
    assert_eq!(
        ix.set_parents("viewer", &["admin"]),
        Err(IndexError::Cycle("viewer".into()))
    );
    assert_eq!(
        ix.set_parents("viewer", &["viewer"]),
        Err(IndexError::Cycle("viewer".into()))
    );
    assert!(
        ix.check(user(0), &req("org", "1", "docs", "read")).unwrap(),
        "a refused change changes nothing"
    );

    let why = ix
        .explain(user(0), &req("org", "1", "docs", "read"))
        .unwrap();
    assert!(why.allowed);
    match &why.contributions[0].source {
        Source::Role { chain, .. } => {
            assert_eq!(
                chain.iter().map(|c| c.as_ref()).collect::<Vec<_>>(),
                ["admin", "editor", "viewer"]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ix.holders("viewer"), vec![user(0)]);
    ix.remove_role("editor");
    assert!(
        !ix.check(user(0), &req("org", "1", "docs", "read")).unwrap(),
        "the chain is broken"
    );
}

#[test]
fn path_modules_match_as_key_match2() {
    let mut ix = index_with_users(1);
    ix.add_role("api");
    ix.set_role_permission("api", "/api/users/:id", "read", None, Effect::Allow)
        .unwrap();
    ix.set_direct(
        user(0),
        Uuid::nil(),
        "org",
        "1",
        "/api/admin/*",
        "*",
        Effect::Deny,
    )
    .unwrap();
    ix.set_direct(
        user(0),
        Uuid::nil(),
        "org",
        "1",
        "/api/*",
        "*",
        Effect::Allow,
    )
    .unwrap();
    ix.assign(user(0), "api", "org", "1").unwrap();
    assert!(
        ix.check(user(0), &req("org", "1", "/api/users/42", "read"))
            .unwrap()
    );
    assert!(
        ix.check(user(0), &req("org", "1", "/api/things", "write"))
            .unwrap()
    );
    assert!(
        !ix.check(user(0), &req("org", "1", "/api/admin/x", "read"))
            .unwrap()
    );
}

#[test]
fn snapshots_apply_denies_and_list_roles() {
    let mut ix = index_with_users(1);
    ix.add_role("staff");
    ix.set_role_permission("staff", "docs", "read", None, Effect::Allow)
        .unwrap();
    ix.set_role_permission("staff", "docs", "write", None, Effect::Allow)
        .unwrap();
    ix.assign(user(0), "staff", "org", "1").unwrap();
    ix.set_direct(
        user(0),
        Uuid::nil(),
        "org",
        "1",
        "docs",
        "write",
        Effect::Deny,
    )
    .unwrap();
    ix.set_direct(
        user(0),
        Uuid::nil(),
        "org",
        "*",
        "billing",
        "*",
        Effect::Allow,
    )
    .unwrap();
    ix.set_direct(
        user(0),
        Uuid::nil(),
        "org",
        "3",
        "billing",
        "refund",
        Effect::Deny,
    )
    .unwrap();
    let snap = ix.snapshot(user(0)).unwrap();
    let texts = |v: &super::index::PermissionList| {
        v.iter()
            .map(|p| format!("{}/{}/{}/{}", p.scope_type, p.scope_id, p.module, p.action))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts(&snap.permissions),
        ["org/*/billing/*", "org/1/docs/read"]
    );
    assert_eq!(
        texts(&snap.denied),
        ["org/3/billing/refund"],
        "only denies that carve into an allow"
    );
    assert_eq!(snap.roles.len(), 1);
    assert_eq!(&*snap.roles[0].role, "staff");
}

// ---- the naive evaluator and the property test ---------------------------------

const SCOPE_TYPES: [&str; 2] = ["org", "team"];
const SCOPE_IDS: [&str; 3] = ["1", "2", "*"];
const MODULES: [&str; 4] = ["billing", "docs", "/api/users/:id", "/api/*"];
const REQUEST_MODULES: [&str; 5] = ["billing", "docs", "/api/users/7", "/api/x", "other"];
const ACTIONS: [&str; 3] = ["read", "write", "*"];
const ROLES: [&str; 4] = ["r0", "r1", "r2", "r3"];
const USERS: u128 = 3;

#[derive(Debug, Clone)]
enum Op {
    Direct {
        user: u128,
        st: usize,
        sid: usize,
        module: usize,
        action: usize,
        deny: bool,
        remove: bool,
    },
    RolePerm {
        role: usize,
        module: usize,
        action: usize,
        pin: Option<(usize, usize)>,
        deny: bool,
        remove: bool,
    },
    Assign {
        user: u128,
        role: usize,
        scope: Option<(usize, usize)>,
        remove: bool,
    },
    Parents {
        role: usize,
        parents: Vec<usize>,
    },
    Active {
        user: u128,
        active: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let scope = (0..SCOPE_TYPES.len(), 0..SCOPE_IDS.len());
    prop_oneof![
        (
            0..USERS,
            scope.clone(),
            0..MODULES.len(),
            0..ACTIONS.len(),
            any::<bool>(),
            prop::bool::weighted(0.2)
        )
            .prop_map(
                |(user, (st, sid), module, action, deny, remove)| Op::Direct {
                    user,
                    st,
                    sid,
                    module,
                    action,
                    deny,
                    remove
                }
            ),
        (
            0..ROLES.len(),
            0..MODULES.len(),
            0..ACTIONS.len(),
            prop::option::weighted(0.3, scope.clone()),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2)
        )
            .prop_map(|(role, module, action, pin, deny, remove)| Op::RolePerm {
                role,
                module,
                action,
                pin,
                deny,
                remove
            }),
        (
            0..USERS,
            0..ROLES.len(),
            prop::option::weighted(0.8, scope),
            prop::bool::weighted(0.2)
        )
            .prop_map(|(user, role, scope, remove)| Op::Assign {
                user,
                role,
                scope,
                remove
            }),
        (0..ROLES.len(), prop::collection::vec(0..ROLES.len(), 0..3))
            .prop_map(|(role, parents)| Op::Parents { role, parents }),
        (0..USERS, prop::bool::weighted(0.8))
            .prop_map(|(user, active)| Op::Active { user, active }),
    ]
}

/// (role, module, action, pin)
type RolePermKey = (
    usize,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

/// The policy as plain data, evaluated by the definition.
#[derive(Default)]
struct Naive {
    active: BTreeMap<u128, bool>,
    direct: BTreeMap<(u128, &'static str, &'static str, &'static str, &'static str), Effect>,
    role_perms: BTreeMap<RolePermKey, Effect>,
    assignments: BTreeSet<(u128, usize, &'static str, &'static str)>,
    parents: BTreeMap<usize, Vec<usize>>,
}

fn scope_of(scope: Option<(usize, usize)>) -> (&'static str, &'static str) {
    scope.map_or(("*", "*"), |(st, sid)| (SCOPE_TYPES[st], SCOPE_IDS[sid]))
}

impl Naive {
    fn reaches(&self, from: usize, to: usize) -> bool {
        from == to
            || self
                .parents
                .get(&from)
                .is_some_and(|ps| ps.iter().any(|p| self.reaches(*p, to)))
    }

    fn covers((st, sid): (&str, &str), rst: &str, rsid: &str) -> bool {
        st == "*" || (st == rst && (sid == "*" || sid == rsid))
    }

    fn module_matches(granted: &str, requested: &str) -> bool {
        granted == requested
            || (granted.starts_with('/')
                && (granted.contains('*') || granted.contains("/:"))
                && key_match2(requested, granted).unwrap())
    }

    fn check(&self, user: u128, st: &str, sid: &str, module: &str, action: &str) -> bool {
        if !self.active.get(&user).copied().unwrap_or(true) {
            return false;
        }
        let action_ok = |a: &str| a == "*" || a == action;
        let mut effects = Vec::new();
        for ((u, gst, gsid, gm, ga), effect) in &self.direct {
            if *u == user
                && *gst == st
                && (*gsid == sid || *gsid == "*")
                && Self::module_matches(gm, module)
                && action_ok(ga)
            {
                effects.push(*effect);
            }
        }
        for (u, role, ast, asid) in &self.assignments {
            if *u != user || !Self::covers((ast, asid), st, sid) {
                continue;
            }
            for ((r, pm, pa, pin), effect) in &self.role_perms {
                if self.reaches(*role, *r)
                    && pin.is_none_or(|p| Self::covers(p, st, sid))
                    && Self::module_matches(pm, module)
                    && action_ok(pa)
                {
                    effects.push(*effect);
                }
            }
        }
        effects.contains(&Effect::Allow) && !effects.contains(&Effect::Deny)
    }
}

fn apply(ix: &mut Index, naive: &mut Naive, op: &Op) {
    match op.clone() {
        Op::Direct {
            user: u,
            st,
            sid,
            module,
            action,
            deny,
            remove,
        } => {
            let key = (
                u,
                SCOPE_TYPES[st],
                SCOPE_IDS[sid],
                MODULES[module],
                ACTIONS[action],
            );
            if remove {
                ix.remove_direct(user(u), key.1, key.2, key.3, key.4);
                naive.direct.remove(&key);
            } else {
                let effect = if deny { Effect::Deny } else { Effect::Allow };
                ix.set_direct(user(u), Uuid::nil(), key.1, key.2, key.3, key.4, effect)
                    .unwrap();
                naive.direct.insert(key, effect);
            }
        }
        Op::RolePerm {
            role,
            module,
            action,
            pin,
            deny,
            remove,
        } => {
            let pin = pin.map(|p| scope_of(Some(p)));
            if remove {
                ix.remove_role_permission(ROLES[role], MODULES[module], ACTIONS[action], pin);
                naive
                    .role_perms
                    .remove(&(role, MODULES[module], ACTIONS[action], pin));
            } else {
                let effect = if deny { Effect::Deny } else { Effect::Allow };
                ix.set_role_permission(ROLES[role], MODULES[module], ACTIONS[action], pin, effect)
                    .unwrap();
                naive
                    .role_perms
                    .insert((role, MODULES[module], ACTIONS[action], pin), effect);
            }
        }
        Op::Assign {
            user: u,
            role,
            scope,
            remove,
        } => {
            let (st, sid) = scope_of(scope);
            if remove {
                ix.unassign(user(u), ROLES[role], st, sid);
                naive.assignments.remove(&(u, role, st, sid));
            } else {
                ix.assign(user(u), ROLES[role], st, sid).unwrap();
                naive.assignments.insert((u, role, st, sid));
            }
        }
        Op::Parents { role, mut parents } => {
            parents.sort_unstable();
            parents.dedup();
            let names: Vec<&str> = parents.iter().map(|p| ROLES[*p]).collect();
            let cycle = parents.iter().any(|p| naive.reaches(*p, role));
            match ix.set_parents(ROLES[role], &names) {
                Ok(()) => {
                    assert!(!cycle, "index accepted a cycle");
                    naive.parents.insert(role, parents);
                }
                Err(IndexError::Cycle(_)) => assert!(cycle, "index refused an acyclic change"),
                Err(e) => panic!("{e}"),
            }
        }
        Op::Active { user: u, active } => {
            ix.upsert_user(user(u), &format!("u{u}"), active, 0);
            naive.active.insert(u, active);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn index_decides_as_the_definition(ops in prop::collection::vec(op(), 1..40)) {
        let mut ix = index_with_users(USERS);
        for role in ROLES {
            ix.add_role(role);
        }
        let mut naive = Naive::default();
        for op in &ops {
            apply(&mut ix, &mut naive, op);
        }
        for u in 0..USERS {
            for st in SCOPE_TYPES.iter().chain(&["unknown"]) {
                for sid in SCOPE_IDS.iter().chain(&["3"]) {
                    for module in REQUEST_MODULES {
                        for action in ACTIONS.iter().chain(&["delete"]) {
                            let expected = naive.check(u, st, sid, module, action);
                            let request = req(st, sid, module, action);
                            let actual = ix.check(user(u), &request).unwrap();
                            prop_assert_eq!(actual, expected, "user {} {:?} after {:?}", u, request, ops);
                            let explained = ix.explain(user(u), &request).unwrap();
                            prop_assert_eq!(explained.allowed, expected);
                        }
                    }
                }
            }
        }
    }

    /// A snapshot, read as a cache would (some listed allow covers the request,
    /// no listed deny does), agrees with the check for every concrete request.
    #[test]
    fn snapshots_agree_with_checks(ops in prop::collection::vec(op(), 1..30)) {
        let mut ix = index_with_users(USERS);
        for role in ROLES {
            ix.add_role(role);
        }
        let mut naive = Naive::default();
        for op in &ops {
            apply(&mut ix, &mut naive, op);
        }
        for u in 0..USERS {
            let snap = ix.snapshot(user(u)).unwrap();
            for list in [&snap.permissions, &snap.denied] {
                let all: Vec<_> = list.iter().collect();
                let sorted = all.windows(2).all(|w| (w[0].scope_type, w[0].scope_id, w[0].module, w[0].action) < (w[1].scope_type, w[1].scope_id, w[1].module, w[1].action));
                prop_assert!(sorted, "in name order, without repeats: {:?}", all);
            }
            let matches = |p: super::index::PermissionRef<'_>, st: &str, sid: &str, module: &str, action: &str| {
                Naive::covers((p.scope_type, p.scope_id), st, sid)
                    && Naive::module_matches(p.module, module)
                    && (p.action == "*" || p.action == action)
            };
            for st in SCOPE_TYPES {
                for sid in ["1", "2", "3"] {
                    for module in REQUEST_MODULES {
                        for action in ["read", "write", "delete"] {
                            let cached = snap.is_active
                                && snap.permissions.iter().any(|p| matches(p, st, sid, module, action))
                                && !snap.denied.iter().any(|p| matches(p, st, sid, module, action));
                            let checked = ix.check(user(u), &req(st, sid, module, action)).unwrap();
                            prop_assert_eq!(cached, checked, "user {} {}/{}/{}/{} after {:?}", u, st, sid, module, action, ops);
                        }
                    }
                }
            }
        }
    }
}
