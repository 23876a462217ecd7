//! Moving a Casbin policy into memberd's model and back.
//!
//! Only model shapes memberd represents exactly are accepted:
//!
//! | part | accepted forms |
//! |---|---|
//! | request, policy | `sub, obj, act` or `sub, dom, obj, act` (policy may add `eft`) |
//! | subject | `r.sub == p.sub`, `g(r.sub, p.sub)`, `g(r.sub, p.sub, r.dom)` |
//! | domain | `r.dom == p.dom` |
//! | object | `r.obj == p.obj`, `keyMatch2(r.obj, p.obj)`, `g2(r.obj, p.obj)` (resource roles, expanded) |
//! | action | `r.act == p.act`, `(r.act == p.act \|\| p.act == "*")` |
//! | effect | allow-override (without deny rules), or allow-and-deny |
//!
//! The mapping: names on the right of `g` are roles, every other subject is a
//! user (`authentik_sub`); a domain is a scope `(scope_type, domain)`, and a
//! model without domains puts everything in `(scope_type, *)`; objects are
//! modules, acts are actions. Role inheritance is global in memberd; the
//! import verifies decisions against Casbin's, so a policy where that differs
//! is refused rather than imported wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{CasbinError, EffectRule, Enforcer, Model};
use crate::authz::index::{Index, Request};
use crate::model::{
    Action, AuthentikSub, Effect, Module, Permission, RoleAssignment, RoleName, RolePermission,
    Scope, ScopeId, ScopeType, UserId,
};

/// How the model's parts are matched, once recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub roles: bool,
    pub domains: bool,
    pub object: ObjectMatch,
    pub action_wildcard: bool,
    pub eft: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectMatch {
    Equal,
    KeyMatch2,
    ResourceRoles,
}

fn unsupported(what: impl Into<String>) -> CasbinError {
    CasbinError::Unsupported(format!("{} (for import and export)", what.into()))
}

pub fn shape(model: &Model) -> Result<Shape, CasbinError> {
    let fields = |v: &[String]| v.join(", ");
    let domains = match model
        .request
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["sub", "obj", "act"] => false,
        ["sub", "dom", "obj", "act"] => true,
        _ => {
            return Err(unsupported(format!(
                "request definition r = {}",
                fields(&model.request)
            )));
        }
    };
    let expected: &[&str] = if domains {
        &["sub", "dom", "obj", "act"]
    } else {
        &["sub", "obj", "act"]
    };
    let eft = match model.policy.iter().map(String::as_str).collect::<Vec<_>>() {
        p if p == expected => false,
        p if p.len() == expected.len() + 1
            && p[..expected.len()] == *expected
            && p[expected.len()] == "eft" =>
        {
            true
        }
        _ => {
            return Err(unsupported(format!(
                "policy definition p = {}",
                fields(&model.policy)
            )));
        }
    };
    if !matches!(
        model.effect,
        EffectRule::AllowOverride | EffectRule::AllowAndDeny
    ) {
        return Err(unsupported(format!("policy effect {:?}", model.effect)));
    }
    let squeezed: String = model
        .matcher_text
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '\'' { '"' } else { c })
        .collect();
    let subjects = [
        ("r.sub==p.sub", false),
        (
            if domains {
                "g(r.sub,p.sub,r.dom)"
            } else {
                "g(r.sub,p.sub)"
            },
            true,
        ),
    ];
    let objects = [
        ("r.obj==p.obj", ObjectMatch::Equal),
        ("keyMatch2(r.obj,p.obj)", ObjectMatch::KeyMatch2),
        ("g2(r.obj,p.obj)", ObjectMatch::ResourceRoles),
    ];
    let actions = [
        ("r.act==p.act", false),
        ("(r.act==p.act||p.act==\"*\")", true),
    ];
    for (subject, roles) in subjects {
        for (object, object_match) in objects {
            for (action, action_wildcard) in actions {
                let domain = if domains { "&&r.dom==p.dom" } else { "" };
                if squeezed == format!("{subject}{domain}&&{object}&&{action}") {
                    let expected_roles: usize = usize::from(roles)
                        + usize::from(object_match == ObjectMatch::ResourceRoles);
                    if model.roles.len() != expected_roles {
                        return Err(unsupported("role definitions the matcher does not use"));
                    }
                    if object_match == ObjectMatch::ResourceRoles
                        && model.roles.get("g2") != Some(&2)
                    {
                        return Err(unsupported("g2 must be a role definition with two fields"));
                    }
                    return Ok(Shape {
                        roles,
                        domains,
                        object: object_match,
                        action_wildcard,
                        eft,
                    });
                }
            }
        }
    }
    Err(unsupported(format!(
        "matcher {:?}: memberd imports subject, [domain,] object and action matched in that order, \
         as in Casbin's RBAC examples",
        model.matcher_text
    )))
}

/// What an import writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportPlan {
    pub users: BTreeSet<AuthentikSub>,
    /// Each role with the roles it inherits.
    pub roles: BTreeMap<RoleName, BTreeSet<RoleName>>,
    pub role_permissions: BTreeSet<(RoleName, RolePermission)>,
    pub grants: BTreeMap<(AuthentikSub, Permission), Effect>,
    pub assignments: BTreeSet<(AuthentikSub, RoleAssignment)>,
}

fn parse<T, E: std::fmt::Display>(
    what: &str,
    value: &str,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, CasbinError> {
    f(value).map_err(|e| CasbinError::Unsupported(format!("{what} {value:?}: {e}")))
}

fn is_pattern(object: &str) -> bool {
    object.contains('*') || object.contains(':') || object.contains('{')
}

pub fn plan(enforcer: &Enforcer, scope_type: &ScopeType) -> Result<ImportPlan, CasbinError> {
    let model = enforcer.model();
    let shape = shape(model)?;
    let g = enforcer.links("g");
    let role_names: BTreeSet<&str> = g.iter().map(|(_, role, _)| role.as_str()).collect();
    let scope = |domain: Option<&str>| -> Result<Scope, CasbinError> {
        let id = parse("domain", domain.unwrap_or("*"), |d| ScopeId::parse(d))?;
        Ok(Scope::parse(scope_type.as_str(), id).expect("a scope type and an id make a scope"))
    };

    // Resource roles: each object group stands for its members (and itself).
    let g2 = enforcer.links("g2");
    let members = |object: &str| -> BTreeSet<String> {
        let mut all = BTreeSet::from([object.to_owned()]);
        let mut frontier = vec![object.to_owned()];
        while let Some(group) = frontier.pop() {
            for (member, parent, _) in g2 {
                if *parent == group && all.insert(member.clone()) {
                    frontier.push(member.clone());
                }
            }
        }
        all
    };

    let mut plan = ImportPlan::default();
    for role in &role_names {
        plan.roles.insert(
            parse("role", role, |v| RoleName::parse(v))?,
            BTreeSet::new(),
        );
    }
    for (index, rule) in enforcer.rules().iter().enumerate() {
        let row = |i: usize| rule[i].as_str();
        let (subject, domain, object, action) = if shape.domains {
            (row(0), Some(row(1)), row(2), row(3))
        } else {
            (row(0), None, row(1), row(2))
        };
        let effect = match shape.eft.then(|| rule[rule.len() - 1].as_str()) {
            None | Some("allow") => Effect::Allow,
            Some("deny") if model.effect == EffectRule::AllowAndDeny => Effect::Deny,
            Some("deny") => {
                return Err(unsupported(
                    "deny rules under an allow-override effect (Casbin ignores them; memberd would not)",
                ));
            }
            Some(other) => {
                return Err(unsupported(format!(
                    "effect {other:?} in policy rule {}",
                    index + 1
                )));
            }
        };
        if action == "*" && !shape.action_wildcard {
            return Err(unsupported(format!(
                "policy rule {}: act * is literal for this matcher, a wildcard in memberd",
                index + 1
            )));
        }
        if domain == Some("*") {
            return Err(unsupported(format!(
                "policy rule {}: dom * is literal for this matcher, a wildcard in memberd",
                index + 1
            )));
        }
        let objects = match shape.object {
            ObjectMatch::ResourceRoles => members(object),
            _ => BTreeSet::from([object.to_owned()]),
        };
        for object in objects {
            let patterned = is_pattern(&object);
            match shape.object {
                ObjectMatch::KeyMatch2 if patterned && !object.starts_with('/') => {
                    return Err(unsupported(format!(
                        "object pattern {object:?}: memberd matches patterns in paths starting with /"
                    )));
                }
                // keyMatch2 leaves the rest of the object a regular
                // expression; memberd's patterns are literal but for `*` and
                // `:name`. A `.` stays (literal, it matches a subset of what
                // Casbin's would); anything that changes the language is refused.
                ObjectMatch::KeyMatch2
                    if object.contains([
                        '(', ')', '[', ']', '{', '}', '|', '+', '?', '^', '$', '\\',
                    ]) =>
                {
                    return Err(unsupported(format!(
                        "object {object:?}: regular-expression syntax in a keyMatch2 object (memberd's patterns are literal but for * and :name)"
                    )));
                }
                ObjectMatch::Equal | ObjectMatch::ResourceRoles
                    if patterned && object.starts_with('/') =>
                {
                    return Err(unsupported(format!(
                        "object {object:?} is literal for this matcher, a pattern in memberd"
                    )));
                }
                _ => {}
            }
            let module = parse("object", &object, |o| Module::parse(o))?;
            let action = parse("act", action, |a| Action::parse(a))?;
            let scope = scope(domain)?;
            if role_names.contains(subject) {
                let role = parse("role", subject, |v| RoleName::parse(v))?;
                // In a domain model a role's permission holds in its domain only.
                let pin = shape.domains.then(|| scope.clone());
                plan.role_permissions.insert((
                    role,
                    RolePermission {
                        module,
                        action,
                        effect,
                        scope: pin,
                    },
                ));
            } else {
                let user = parse("subject", subject, |v| AuthentikSub::parse(v))?;
                let permission = Permission {
                    scope_type: scope_type.clone(),
                    scope_id: scope.scope_id.clone(),
                    module,
                    action,
                };
                plan.users.insert(user.clone());
                // Deny wins, as in the engine.
                let slot = plan.grants.entry((user, permission)).or_insert(effect);
                *slot = (*slot).max(effect);
            }
        }
    }
    for (name, role, domain) in g {
        let role = parse("role", role, |v| RoleName::parse(v))?;
        if role_names.contains(name.as_str()) {
            let child = parse("role", name, |v| RoleName::parse(v))?;
            plan.roles.entry(child).or_default().insert(role);
        } else {
            let user = parse("subject", name, |v| AuthentikSub::parse(v))?;
            plan.users.insert(user.clone());
            plan.assignments.insert((
                user,
                RoleAssignment {
                    role,
                    scope: scope(domain.as_deref())?,
                },
            ));
        }
    }
    Ok(plan)
}

/// The plan compiled as the engine would compile it.
pub fn compile(plan: &ImportPlan) -> Result<(Index, BTreeMap<AuthentikSub, UserId>), CasbinError> {
    let compile_error = |e: crate::authz::index::IndexError| {
        CasbinError::Unsupported(format!("compiling the import: {e}"))
    };
    let mut index = Index::new();
    let ids: BTreeMap<AuthentikSub, UserId> = plan
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), UserId(uuid::Uuid::from_u128(i as u128 + 1))))
        .collect();
    for (sub, id) in &ids {
        index.upsert_user(*id, sub.as_str(), true, 0);
    }
    for role in plan.roles.keys() {
        index.add_role(role.as_str());
    }
    for (role, parents) in &plan.roles {
        let parents: Vec<&str> = parents.iter().map(RoleName::as_str).collect();
        index
            .set_parents(role.as_str(), &parents)
            .map_err(compile_error)?;
    }
    for (role, p) in &plan.role_permissions {
        let pin = p
            .scope
            .as_ref()
            .map(|s| (s.scope_type.as_str(), s.scope_id.as_str()));
        index
            .set_role_permission(
                role.as_str(),
                p.module.as_str(),
                p.action.as_str(),
                pin,
                p.effect,
            )
            .map_err(compile_error)?;
    }
    for ((sub, p), effect) in &plan.grants {
        index
            .set_direct(
                ids[sub],
                uuid::Uuid::nil(),
                p.scope_type.as_str(),
                p.scope_id.as_str(),
                p.module.as_str(),
                p.action.as_str(),
                *effect,
            )
            .map_err(compile_error)?;
    }
    for (sub, a) in &plan.assignments {
        index
            .assign(
                ids[sub],
                a.role.as_str(),
                &a.scope.scope_type,
                a.scope.scope_id.as_str(),
            )
            .map_err(compile_error)?;
    }
    Ok((index, ids))
}

/// How far the verification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub compared: usize,
    pub of: usize,
}

/// Compares the plan's decisions with Casbin's on every request the policy's
/// vocabulary makes (users × domains × objects × actions), in a fixed order,
/// until `budget` runs out. The first disagreement fails the import.
pub fn verify(
    enforcer: &Enforcer,
    plan: &ImportPlan,
    scope_type: &ScopeType,
    budget: Duration,
) -> Result<Verified, CasbinError> {
    let shape = shape(enforcer.model())?;
    let (index, ids) = compile(plan)?;
    let mut domains: BTreeSet<String> = BTreeSet::new();
    let mut objects: BTreeSet<String> = BTreeSet::new();
    let mut actions: BTreeSet<String> = BTreeSet::new();
    for rule in enforcer.rules() {
        let offset = usize::from(shape.domains);
        if shape.domains {
            domains.insert(rule[1].clone());
        }
        objects.insert(rule[1 + offset].clone());
        actions.insert(rule[2 + offset].clone());
    }
    for (member, group, _) in enforcer.links("g2") {
        objects.insert(member.clone());
        objects.insert(group.clone());
    }
    for (_, _, domain) in enforcer.links("g") {
        domains.extend(domain.clone());
    }
    if !shape.domains {
        domains.insert("*".to_owned());
    }
    actions.remove("*");
    actions.insert("memberd-unlisted-action".to_owned());
    let of = ids.len() * domains.len() * objects.len() * actions.len();
    let started = Instant::now();
    let mut compared = 0;
    for (sub, id) in &ids {
        for domain in &domains {
            for object in &objects {
                for action in &actions {
                    if started.elapsed() > budget {
                        return Ok(Verified { compared, of });
                    }
                    let request: Vec<&str> = if shape.domains {
                        vec![sub.as_str(), domain, object, action]
                    } else {
                        vec![sub.as_str(), object, action]
                    };
                    let casbin = enforcer.enforce(&request)?;
                    let ours = index
                        .check(
                            *id,
                            &Request {
                                scope_type: scope_type.as_str(),
                                scope_id: domain,
                                module: object,
                                action,
                            },
                        )
                        .unwrap_or(false);
                    if casbin != ours {
                        return Err(CasbinError::Unsupported(format!(
                            "after import, request {} would be {} where Casbin says {} (memberd's role \
                             inheritance holds in every domain; Casbin's only in the domain that declares it)",
                            request.join(","),
                            if ours { "allowed" } else { "denied" },
                            if casbin { "allowed" } else { "denied" },
                        )));
                    }
                    compared += 1;
                }
            }
        }
    }
    Ok(Verified { compared, of })
}

/// A policy in memberd's terms, to be written out for `model`.
#[derive(Debug, Clone, Default)]
pub struct ExportInput {
    pub role_parents: Vec<(RoleName, RoleName)>,
    pub role_permissions: Vec<(RoleName, RolePermission)>,
    pub grants: Vec<(AuthentikSub, Permission, Effect)>,
    pub assignments: Vec<(AuthentikSub, RoleAssignment)>,
}

/// Casbin CSV for `model`. What the model cannot express is an error naming it.
pub fn export(
    model: &Model,
    scope_type: &ScopeType,
    input: &ExportInput,
) -> Result<String, CasbinError> {
    let shape = shape(model)?;
    if shape.object == ObjectMatch::ResourceRoles {
        return Err(unsupported(
            "export to a g2 model (memberd keeps resource roles expanded); export to the same model without g2",
        ));
    }
    let cannot =
        |what: String| CasbinError::Unsupported(format!("cannot export {what} to this model"));
    let domain_of = |scope: &Scope| -> Result<Option<String>, CasbinError> {
        if scope.scope_type != scope_type.as_str() {
            return Err(cannot(format!("scope type {}", scope.scope_type)));
        }
        match (shape.domains, scope.scope_id.as_str()) {
            (false, "*") => Ok(None),
            (false, id) => Err(cannot(format!(
                "scope {}:{id} (this model has no domains)",
                scope.scope_type
            ))),
            (true, "*") => Err(cannot(format!(
                "scope {}:* (a domain model has no wildcard domain)",
                scope.scope_type
            ))),
            (true, id) => Ok(Some(id.to_owned())),
        }
    };
    let eft = |effect: Effect| -> Result<Option<&'static str>, CasbinError> {
        match (shape.eft, effect) {
            (true, e) => Ok(Some(e.as_str())),
            (false, Effect::Allow) => Ok(None),
            (false, Effect::Deny) => Err(cannot("deny rules (the model has no eft)".into())),
        }
    };
    let mut p_lines = BTreeSet::new();
    let mut g_lines = BTreeSet::new();
    let mut domains = BTreeSet::new();
    let line = |fields: Vec<&str>| fields.join(", ");
    for (role, permission) in &input.role_permissions {
        let domain = match (&permission.scope, shape.domains) {
            (Some(scope), true) => domain_of(scope)?,
            (None, false) => None,
            (None, true) => {
                return Err(cannot(format!(
                    "role {role}'s permission that holds in every domain"
                )));
            }
            (Some(scope), false) => {
                return Err(cannot(format!(
                    "role {role}'s permission pinned to {}:{}",
                    scope.scope_type, scope.scope_id
                )));
            }
        };
        let mut fields = vec![role.as_str()];
        fields.extend(domain.as_deref());
        fields.extend([permission.module.as_str(), permission.action.as_str()]);
        fields.extend(eft(permission.effect)?);
        domains.extend(domain.clone());
        p_lines.insert(format!("p, {}", line(fields)));
    }
    for (user, permission, effect) in &input.grants {
        let scope = Scope::parse(permission.scope_type.as_str(), permission.scope_id.clone())
            .expect("a grant's scope is a scope");
        let domain = domain_of(&scope)?;
        let mut fields = vec![user.as_str()];
        fields.extend(domain.as_deref());
        fields.extend([permission.module.as_str(), permission.action.as_str()]);
        fields.extend(eft(*effect)?);
        domains.extend(domain.clone());
        p_lines.insert(format!("p, {}", line(fields)));
    }
    for (user, assignment) in &input.assignments {
        let domain = domain_of(&assignment.scope)?;
        let mut fields = vec![user.as_str(), assignment.role.as_str()];
        fields.extend(domain.as_deref());
        domains.extend(domain.clone());
        g_lines.insert(format!("g, {}", line(fields)));
    }
    if !input.role_parents.is_empty() && !shape.roles {
        return Err(cannot("role inheritance (the model has no g)".into()));
    }
    for (role, parent) in &input.role_parents {
        if shape.domains {
            // Global in memberd: declared in every domain the policy names.
            for domain in &domains {
                g_lines.insert(format!(
                    "g, {}",
                    line(vec![role.as_str(), parent.as_str(), domain])
                ));
            }
        } else {
            g_lines.insert(format!("g, {}", line(vec![role.as_str(), parent.as_str()])));
        }
    }
    if (!g_lines.is_empty() || !input.assignments.is_empty()) && !shape.roles {
        return Err(cannot("role assignments (the model has no g)".into()));
    }
    let mut out = String::new();
    for l in p_lines.iter().chain(&g_lines) {
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}
