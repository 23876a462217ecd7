//! The policies the benchmarks run on, generated the same way every time.
//!
//! They are Casbin RBAC policies (`r = sub, obj, act`, `g = _, _`), so that
//! the `casbin` crate and memberd answer the same questions: memberd's index
//! is compiled from the same text through `memberd casbin import`'s planner.
//! Roles come in ten levels, each inheriting from the level below, so no
//! chain is longer than Casbin's ten-level limit.

#![allow(dead_code)]

pub mod server;

use std::fmt::Write as _;

use memberd::authz::casbin::import::{compile, plan};
use memberd::authz::casbin::{Enforcer, Model, Policy};
use memberd::authz::index::{Index, Request};
use memberd::model::ScopeType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const MODEL: &str = "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n\
    [role_definition]\ng = _, _\n[policy_effect]\ne = some(where (p.eft == allow))\n\
    [matchers]\nm = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act\n";

pub const MODULES: usize = 2000;
pub const ACTIONS: usize = 10;

pub struct Size {
    pub roles: usize,
    pub permissions_per_role: usize,
    pub users: usize,
    pub grants_per_user: usize,
}

/// 100 roles, 1k role permissions, 1k users.
pub const SMALL: Size = Size {
    roles: 100,
    permissions_per_role: 10,
    users: 1_000,
    grants_per_user: 0,
};
/// 1k roles, 100k role permissions, 10k users with 1-3 roles, 100k direct grants.
pub const LARGE: Size = Size {
    roles: 1_000,
    permissions_per_role: 100,
    users: 10_000,
    grants_per_user: 10,
};

/// A user holding ten roles of the lowest level: about a thousand permissions.
pub const WIDE_USER: &str = "wide";

pub fn policy_csv(size: &Size) -> String {
    let mut rng = StdRng::seed_from_u64(42);
    let mut csv = String::new();
    let per_level = (size.roles / 10).max(1);
    for role in 0..size.roles {
        for _ in 0..size.permissions_per_role {
            let _ = writeln!(
                csv,
                "p, role{role}, m{}, a{}",
                rng.random_range(0..MODULES),
                rng.random_range(0..ACTIONS)
            );
        }
        let level = role / per_level;
        if level > 0 {
            for _ in 0..rng.random_range(1..=2) {
                let parent = (level - 1) * per_level + rng.random_range(0..per_level);
                let _ = writeln!(csv, "g, role{role}, role{parent}");
            }
        }
    }
    for user in 0..size.users {
        for _ in 0..rng.random_range(1..=3) {
            let _ = writeln!(
                csv,
                "g, user{user}, role{}",
                rng.random_range(0..size.roles)
            );
        }
        for _ in 0..size.grants_per_user {
            let _ = writeln!(
                csv,
                "p, user{user}, m{}, a{}",
                rng.random_range(0..MODULES),
                rng.random_range(0..ACTIONS)
            );
        }
    }
    for role in 0..10.min(size.roles) {
        let _ = writeln!(csv, "g, {WIDE_USER}, role{role}");
    }
    csv
}

pub fn enforcer(csv: &str) -> Enforcer {
    let model = Model::parse(MODEL).unwrap();
    let policy = Policy::parse(csv, &model).unwrap();
    Enforcer::new(model, policy).unwrap()
}

pub fn scope_type() -> ScopeType {
    ScopeType::parse("casbin").unwrap()
}

pub fn index(csv: &str) -> Index {
    let plan = plan(&enforcer(csv), &scope_type()).unwrap();
    compile(&plan).unwrap().0
}

/// One question, as strings, with the user's subject.
#[derive(Clone)]
pub struct Question {
    pub sub: String,
    pub module: String,
    pub action: String,
}

impl Question {
    pub fn request(&self) -> Request<'_> {
        Request {
            scope_type: "casbin",
            scope_id: "default",
            module: &self.module,
            action: &self.action,
        }
    }
}

/// Questions about random users: half of them about a permission the user
/// has (from their snapshot), half random (mostly denied).
pub fn questions(index: &Index, size: &Size, n: usize) -> Vec<Question> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..n)
        .map(|i| {
            let sub = format!("user{}", rng.random_range(0..size.users));
            let id = index.user_by_sub(&sub).unwrap();
            let snapshot = index.snapshot(id).unwrap();
            if i % 2 == 0 && !snapshot.permissions.is_empty() {
                let p = snapshot
                    .permissions
                    .get(rng.random_range(0..snapshot.permissions.len()))
                    .unwrap();
                Question {
                    sub,
                    module: p.module.to_string(),
                    action: p.action.to_string(),
                }
            } else {
                Question {
                    sub,
                    module: format!("m{}", rng.random_range(0..MODULES)),
                    action: format!("a{}", rng.random_range(0..ACTIONS)),
                }
            }
        })
        .collect()
}
