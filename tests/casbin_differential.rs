//! memberd's Casbin enforcer against the `casbin` crate, on random policies
//! and requests: the same decisions, every time.

use casbin::prelude::{CoreApi, DefaultModel, MemoryAdapter, MgmtApi};
use memberd::authz::casbin::{Enforcer, Model, Policy};
use proptest::prelude::*;

const RBAC_WITH_DENY: &str = "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act, eft\n\
    [role_definition]\ng = _, _\n[policy_effect]\ne = some(where (p.eft == allow)) && !some(where (p.eft == deny))\n\
    [matchers]\nm = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act\n";

const RBAC_WITH_DOMAINS: &str = "[request_definition]\nr = sub, dom, obj, act\n[policy_definition]\np = sub, dom, obj, act\n\
    [role_definition]\ng = _, _, _\n[policy_effect]\ne = some(where (p.eft == allow))\n\
    [matchers]\nm = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act\n";

const RBAC_WITH_PATHS: &str = "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n\
    [role_definition]\ng = _, _\n[policy_effect]\ne = some(where (p.eft == allow))\n\
    [matchers]\nm = g(r.sub, p.sub) && keyMatch2(r.obj, p.obj) && (r.act == p.act || p.act == \"*\")\n";

const SUBJECTS: [&str; 6] = ["alice", "bob", "carol", "admin", "editor", "viewer"];
const DOMAINS: [&str; 2] = ["d1", "d2"];
const OBJECTS: [&str; 3] = ["data1", "data2", "data3"];
const PATHS: [&str; 5] = [
    "/api/users/:id",
    "/api/*",
    "/api/users",
    "/docs/:page",
    "/api/users/:id/keys",
];
const REQUEST_PATHS: [&str; 5] = [
    "/api/users/7",
    "/api/users",
    "/api/x/y",
    "/docs/intro",
    "/api/users/7/keys",
];
const ACTIONS: [&str; 3] = ["read", "write", "*"];

/// Role links point from a subject to a later one (users to roles, roles to
/// higher roles), so the hierarchy is acyclic, as real ones are.
fn link() -> impl Strategy<Value = (usize, usize)> {
    (0..SUBJECTS.len() - 1).prop_flat_map(|a| (Just(a), a + 1..SUBJECTS.len()))
}

fn oracle(
    model: &str,
    rules: &[Vec<String>],
    links: &[Vec<String>],
    requests: &[Vec<String>],
) -> Vec<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let model = DefaultModel::from_str(model).await.unwrap();
        let mut e = casbin::Enforcer::new(model, MemoryAdapter::default())
            .await
            .unwrap();
        if !rules.is_empty() {
            e.add_policies(rules.to_vec()).await.unwrap();
        }
        if !links.is_empty() {
            e.add_grouping_policies(links.to_vec()).await.unwrap();
        }
        requests
            .iter()
            .map(|r| e.enforce(r.clone()).unwrap())
            .collect()
    })
}

fn ours(
    model: &str,
    rules: &[Vec<String>],
    links: &[Vec<String>],
    requests: &[Vec<String>],
) -> Vec<bool> {
    let model = Model::parse(model).unwrap();
    let mut text = String::new();
    for rule in rules {
        text.push_str(&format!("p, {}\n", rule.join(", ")));
    }
    for link in links {
        text.push_str(&format!("g, {}\n", link.join(", ")));
    }
    let enforcer = Enforcer::new(model.clone(), Policy::parse(&text, &model).unwrap()).unwrap();
    requests
        .iter()
        .map(|r| {
            enforcer
                .enforce(&r.iter().map(String::as_str).collect::<Vec<_>>())
                .unwrap()
        })
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rbac_with_deny(
        rules in prop::collection::vec((0..SUBJECTS.len(), 0..OBJECTS.len(), 0..2usize, any::<bool>()), 0..12),
        links in prop::collection::vec(link(), 0..8),
    ) {
        let rules: Vec<Vec<String>> = rules.iter()
            .map(|&(s, o, a, deny)| strings(&[SUBJECTS[s], OBJECTS[o], ACTIONS[a], if deny { "deny" } else { "allow" }]))
            .collect();
        let links: Vec<Vec<String>> = links.iter().map(|&(a, b)| strings(&[SUBJECTS[a], SUBJECTS[b]])).collect();
        let mut requests = Vec::new();
        for s in SUBJECTS { for o in OBJECTS { for a in &ACTIONS[..2] { requests.push(strings(&[s, o, a])); } } }
        prop_assert_eq!(ours(RBAC_WITH_DENY, &rules, &links, &requests), oracle(RBAC_WITH_DENY, &rules, &links, &requests));
    }

    #[test]
    fn rbac_with_domains(
        rules in prop::collection::vec((0..SUBJECTS.len(), 0..DOMAINS.len(), 0..OBJECTS.len(), 0..2usize), 0..12),
        links in prop::collection::vec((link(), 0..DOMAINS.len()), 0..8),
    ) {
        let rules: Vec<Vec<String>> = rules.iter()
            .map(|&(s, d, o, a)| strings(&[SUBJECTS[s], DOMAINS[d], OBJECTS[o], ACTIONS[a]]))
            .collect();
        let links: Vec<Vec<String>> = links.iter()
            .map(|&((a, b), d)| strings(&[SUBJECTS[a], SUBJECTS[b], DOMAINS[d]]))
            .collect();
        let mut requests = Vec::new();
        for s in SUBJECTS { for d in DOMAINS { for o in OBJECTS { for a in &ACTIONS[..2] {
            requests.push(strings(&[s, d, o, a]));
        } } } }
        prop_assert_eq!(ours(RBAC_WITH_DOMAINS, &rules, &links, &requests), oracle(RBAC_WITH_DOMAINS, &rules, &links, &requests));
    }

    #[test]
    fn rbac_with_paths(
        rules in prop::collection::vec((0..SUBJECTS.len(), 0..PATHS.len(), 0..ACTIONS.len()), 0..12),
        links in prop::collection::vec(link(), 0..8),
    ) {
        let rules: Vec<Vec<String>> = rules.iter()
            .map(|&(s, p, a)| strings(&[SUBJECTS[s], PATHS[p], ACTIONS[a]]))
            .collect();
        let links: Vec<Vec<String>> = links.iter().map(|&(a, b)| strings(&[SUBJECTS[a], SUBJECTS[b]])).collect();
        let mut requests = Vec::new();
        for s in SUBJECTS { for p in REQUEST_PATHS { for a in &ACTIONS[..2] { requests.push(strings(&[s, p, a])); } } }
        prop_assert_eq!(ours(RBAC_WITH_PATHS, &rules, &links, &requests), oracle(RBAC_WITH_PATHS, &rules, &links, &requests));
    }
}
