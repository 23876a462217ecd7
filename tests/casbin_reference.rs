//! Casbin's own example models and policies, and the decisions Casbin's test
//! suites assert for them (Go's, where Go and Python disagree).

use std::path::{Path, PathBuf};

use memberd::authz::casbin::{Enforcer, Matcher, Model, Policy};

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/casbin-reference")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(reference().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn enforcer(model: &str, policy: &str, setup: &str) -> Enforcer {
    let model = Model::parse(&read(model)).unwrap_or_else(|e| panic!("{model}: {e}"));
    let policy = if policy == "-" {
        Policy::default()
    } else {
        Policy::parse(&read(policy), &model).unwrap()
    };
    let mut enforcer = Enforcer::new(model, policy).unwrap();
    for step in setup.split(';').filter(|s| !s.is_empty() && *s != "-") {
        let (target, function) = step.split_once('=').unwrap();
        let matcher = Matcher::parse(function).unwrap();
        match target.split_once('.') {
            Some((g, "match")) => enforcer.set_role_matching(g, matcher).unwrap(),
            Some((g, "domain_match")) => enforcer.set_domain_matching(g, matcher).unwrap(),
            _ => panic!("unknown setup {step}"),
        }
    }
    enforcer
}

fn run(table: &str) -> usize {
    let text = read(table);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let mut failures = Vec::new();
    let mut count = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let setup = column("setup").map_or("-", |i| cols[i]);
        let (model, policy, request, expected) = (cols[0], cols[1], cols[2], cols[3] == "true");
        let enforcer = enforcer(model, policy, setup);
        let request: Vec<&str> = request.split(',').collect();
        match enforcer.enforce(&request) {
            Ok(actual) if actual == expected => {}
            other => failures.push(format!(
                "{model} {policy} {request:?} [{setup}]: expected {expected}, got {other:?}"
            )),
        }
        count += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases in {table} disagree with Casbin:\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

#[test]
fn plain_cases() {
    assert_eq!(run("cases.tsv"), 165);
}

#[test]
fn cases_with_matching_functions() {
    assert_eq!(run("cases_extended.tsv"), 64);
}

#[test]
fn cases_where_go_is_the_reference() {
    assert_eq!(run("cases_go_only.tsv"), 12);
}

#[test]
fn unsupported_models_are_refused_by_name() {
    let with_matcher = |m: &str| {
        format!(
            "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n[policy_effect]\ne = some(where (p.eft == allow))\n[matchers]\nm = {m}\n"
        )
    };
    for (matcher, named) in [
        ("r.sub.Owner == p.sub", "attribute access"),
        ("eval(p.sub)", "eval()"),
        ("timeMatch(r.sub, p.sub)", "timeMatch()"),
        ("r.sub == p.sub ? true : false", "ternary"),
    ] {
        let err = Model::parse(&with_matcher(matcher))
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{matcher}: {err}");
    }
    let effect = "[request_definition]\nr = sub, obj, act\n[policy_definition]\np = sub, obj, act\n[policy_effect]\ne = some(where (p.eft == allow)) || x\n[matchers]\nm = r.sub == p.sub\n";
    assert!(
        Model::parse(effect)
            .unwrap_err()
            .to_string()
            .contains("policy effect")
    );
}
