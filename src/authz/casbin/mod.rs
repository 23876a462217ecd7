//! Casbin compatibility: models (`.conf`) and policies (`.csv`) as Casbin's
//! Go implementation reads them, and its decisions, for the RBAC family back
//! offices use: ACL, RBAC with hierarchy, domains, resource roles (`g2`),
//! deny and priority effects, and the built-in matching functions.
//!
//! A model outside that family is refused at load with an error naming the
//! construct, so `enforce` never gives a silently wrong answer.

pub mod conf;
mod expr;
pub mod import;
mod roles;

use std::collections::BTreeMap;

use super::functions::{self, FunctionError};
use expr::{Context, Expr, Fields, Function};
use roles::RoleLinks;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CasbinError {
    #[error("model: {0}")]
    Model(String),
    #[error("unsupported by memberd: {0}")]
    Unsupported(String),
    #[error("policy line {line}: {message}")]
    Policy { line: usize, message: String },
    #[error("request: {0}")]
    Request(String),
    #[error(transparent)]
    Function(#[from] FunctionError),
}

/// A function that role links may match names with (`g.match=keyMatch2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    KeyMatch,
    KeyMatch2,
    KeyMatch3,
    RegexMatch,
    GlobMatch,
}

impl Matcher {
    pub fn parse(name: &str) -> Result<Self, CasbinError> {
        Ok(match name {
            "keyMatch" => Self::KeyMatch,
            "keyMatch2" => Self::KeyMatch2,
            "keyMatch3" => Self::KeyMatch3,
            "regexMatch" => Self::RegexMatch,
            "globMatch" => Self::GlobMatch,
            other => {
                return Err(CasbinError::Unsupported(format!(
                    "matching function {other}"
                )));
            }
        })
    }

    pub fn call(self, name: &str, pattern: &str) -> Result<bool, CasbinError> {
        Ok(match self {
            Self::KeyMatch => functions::key_match(name, pattern),
            Self::KeyMatch2 => functions::key_match2(name, pattern)?,
            Self::KeyMatch3 => functions::key_match3(name, pattern)?,
            Self::RegexMatch => functions::regex_match(name, pattern)?,
            Self::GlobMatch => functions::glob_match(name, pattern),
        })
    }
}

/// How matching policies combine into a decision (`[policy_effect]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectRule {
    /// `some(where (p.eft == allow))`
    AllowOverride,
    /// `!some(where (p.eft == deny))`
    DenyOverride,
    /// `some(where (p.eft == allow)) && !some(where (p.eft == deny))`
    AllowAndDeny,
    /// `priority(p.eft) || deny`: the first matching policy decides.
    Priority,
    /// `subjectPriority(p.eft) || deny`: the policy of the most specific subject decides.
    SubjectPriority,
}

impl EffectRule {
    fn parse(text: &str) -> Result<Self, CasbinError> {
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        Ok(match squeezed.as_str() {
            "some(where(p.eft==allow))" => Self::AllowOverride,
            "!some(where(p.eft==deny))" => Self::DenyOverride,
            "some(where(p.eft==allow))&&!some(where(p.eft==deny))" => Self::AllowAndDeny,
            "priority(p.eft)||deny" => Self::Priority,
            "subjectPriority(p.eft)||deny" => Self::SubjectPriority,
            _ => return Err(CasbinError::Unsupported(format!("policy effect {text:?}"))),
        })
    }
}

fn tokens(definition: &str) -> Vec<String> {
    definition
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A parsed model.
#[derive(Debug, Clone)]
pub struct Model {
    pub request: Vec<String>,
    pub policy: Vec<String>,
    /// Role definitions: name (`g`, `g2`) and how many fields (2, or 3 with a domain).
    pub roles: BTreeMap<String, usize>,
    pub effect: EffectRule,
    pub matcher_text: String,
    matcher: Expr,
}

impl Model {
    pub fn parse(text: &str) -> Result<Self, CasbinError> {
        let sections = conf::parse(text)?;
        let section = |name: &str| {
            sections
                .get(name)
                .ok_or_else(|| CasbinError::Model(format!("missing section [{name}]")))
        };
        let only = |name: &str, key: &str| -> Result<String, CasbinError> {
            let s = section(name)?;
            if let Some(other) = s.keys().find(|k| *k != key) {
                return Err(CasbinError::Unsupported(format!(
                    "[{name}] {other} (only {key} is supported)"
                )));
            }
            s.get(key)
                .cloned()
                .ok_or_else(|| CasbinError::Model(format!("[{name}] has no {key}")))
        };
        let request = tokens(&only("request_definition", "r")?);
        let policy = tokens(&only("policy_definition", "p")?);
        let effect = EffectRule::parse(&only("policy_effect", "e")?)?;
        let matcher_text = only("matchers", "m")?;
        let mut roles = BTreeMap::new();
        if let Some(defs) = sections.get("role_definition") {
            for (name, def) in defs {
                if def.contains('(') {
                    return Err(CasbinError::Unsupported(format!(
                        "conditional role definition {name} = {def}"
                    )));
                }
                let arity = tokens(def).len();
                if !(2..=3).contains(&arity) || tokens(def).iter().any(|t| t != "_") {
                    return Err(CasbinError::Unsupported(format!(
                        "role definition {name} = {def}"
                    )));
                }
                roles.insert(name.clone(), arity);
            }
        }
        if let Some(extra) = sections.keys().find(|k| {
            ![
                "request_definition",
                "policy_definition",
                "role_definition",
                "policy_effect",
                "matchers",
            ]
            .contains(&k.as_str())
        }) {
            return Err(CasbinError::Unsupported(format!("section [{extra}]")));
        }
        let role_names: Vec<String> = roles.keys().cloned().collect();
        let matcher = expr::parse(
            &matcher_text,
            &Fields {
                request: &request,
                policy: &policy,
                roles: &role_names,
            },
        )?;
        Ok(Self {
            request,
            policy,
            roles,
            effect,
            matcher_text,
            matcher,
        })
    }

    fn index_of(&self, field: &str) -> Option<usize> {
        self.policy.iter().position(|f| f == field)
    }
}

/// Splits one CSV line as Go's `encoding/csv` does with leading spaces trimmed.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if current.trim().is_empty() => {
                current.clear();
                quoted = true;
            }
            ',' if !quoted => fields.push(std::mem::take(&mut current).trim().to_owned()),
            c => current.push(c),
        }
    }
    fields.push(current.trim().to_owned());
    fields
}

/// A parsed policy: `p` rules and role links, in file order.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub rules: Vec<Vec<String>>,
    pub links: BTreeMap<String, Vec<Vec<String>>>,
}

impl Policy {
    pub fn parse(text: &str, model: &Model) -> Result<Self, CasbinError> {
        let mut policy = Policy::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |message: String| CasbinError::Policy {
                line: number + 1,
                message,
            };
            let mut fields = csv_fields(line);
            let kind = fields.remove(0);
            if kind == "p" {
                if fields.len() != model.policy.len() {
                    return Err(error(format!(
                        "p has {} fields, the model defines {}",
                        fields.len(),
                        model.policy.len()
                    )));
                }
                policy.rules.push(fields);
            } else if let Some(&arity) = model.roles.get(&kind) {
                if fields.len() != arity {
                    return Err(error(format!(
                        "{kind} has {} fields, the model defines {arity}",
                        fields.len()
                    )));
                }
                policy.links.entry(kind).or_default().push(fields);
            } else if kind.starts_with('p') {
                return Err(CasbinError::Unsupported(format!(
                    "policy type {kind} (line {})",
                    number + 1
                )));
            } else {
                return Err(error(format!("{kind} is not defined in the model")));
            }
        }
        Ok(policy)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eft {
    Allow,
    Deny,
    Indeterminate,
}

/// A model and policy, ready to decide requests.
#[derive(Debug, Clone)]
pub struct Enforcer {
    model: Model,
    rules: Vec<Vec<String>>,
    links: BTreeMap<String, RoleLinks>,
}

const DEFAULT_DOMAIN: &str = "casbin::default";

impl Enforcer {
    pub fn new(model: Model, policy: Policy) -> Result<Self, CasbinError> {
        let mut links: BTreeMap<String, RoleLinks> = model
            .roles
            .keys()
            .map(|g| (g.clone(), RoleLinks::default()))
            .collect();
        for (g, rows) in &policy.links {
            let role_links = links
                .get_mut(g)
                .expect("policy links are checked against the model");
            for row in rows {
                role_links.add(&row[0], &row[1], row.get(2).map(String::as_str));
            }
        }
        let mut enforcer = Self {
            rules: policy.rules,
            model,
            links,
        };
        enforcer.order_rules()?;
        Ok(enforcer)
    }

    /// Role links named `g` match names with `matcher` (Casbin's `AddNamedMatchingFunc`).
    pub fn set_role_matching(&mut self, g: &str, matcher: Matcher) -> Result<(), CasbinError> {
        self.role_links(g)?.set_matching(matcher);
        self.order_rules()
    }

    /// Role links named `g` match domains with `matcher` (Casbin's `AddNamedDomainMatchingFunc`).
    pub fn set_domain_matching(&mut self, g: &str, matcher: Matcher) -> Result<(), CasbinError> {
        self.role_links(g)?.set_domain_matching(matcher);
        Ok(())
    }

    fn role_links(&mut self, g: &str) -> Result<&mut RoleLinks, CasbinError> {
        self.links
            .get_mut(g)
            .ok_or_else(|| CasbinError::Model(format!("no role definition {g}")))
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn rules(&self) -> &[Vec<String>] {
        &self.rules
    }

    pub fn links(&self, g: &str) -> &[(String, String, Option<String>)] {
        self.links.get(g).map_or(&[], |l| l.links())
    }

    /// Casbin sorts policies for the priority effects when it loads them.
    fn order_rules(&mut self) -> Result<(), CasbinError> {
        match self.model.effect {
            EffectRule::Priority => {
                if let Some(i) = self.model.index_of("priority") {
                    let mut keyed = Vec::with_capacity(self.rules.len());
                    for rule in std::mem::take(&mut self.rules) {
                        let priority: i64 = rule[i].parse().map_err(|_| {
                            CasbinError::Model(format!("priority {:?} is not an integer", rule[i]))
                        })?;
                        keyed.push((priority, rule));
                    }
                    keyed.sort_by_key(|(p, _)| *p);
                    self.rules = keyed.into_iter().map(|(_, r)| r).collect();
                }
            }
            EffectRule::SubjectPriority => {
                let levels = self.subject_levels();
                let domain = self.model.index_of("dom");
                let level = |rule: &Vec<String>| {
                    let dom = domain.map_or(DEFAULT_DOMAIN, |d| rule[d].as_str());
                    levels
                        .get(&format!("{dom}::{}", rule[0]))
                        .copied()
                        .unwrap_or(0)
                };
                self.rules
                    .sort_by_key(|rule| std::cmp::Reverse(level(rule)));
            }
            _ => {}
        }
        Ok(())
    }

    /// Each subject's depth below the roots of `g`, per domain: deeper is more specific.
    fn subject_levels(&self) -> BTreeMap<String, usize> {
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut is_child: BTreeMap<String, bool> = BTreeMap::new();
        for (child, parent, domain) in self.links("g") {
            let domain = domain.as_deref().unwrap_or(DEFAULT_DOMAIN);
            let (child, parent) = (format!("{domain}::{child}"), format!("{domain}::{parent}"));
            children
                .entry(parent.clone())
                .or_default()
                .push(child.clone());
            is_child.entry(parent).or_insert(false);
            is_child.insert(child, true);
        }
        let mut levels = BTreeMap::new();
        for (root, _) in is_child.iter().filter(|(_, child)| !**child) {
            let mut layer = vec![root.clone()];
            let mut depth = 0;
            while !layer.is_empty() && depth <= children.len() {
                let mut next = Vec::new();
                for name in layer {
                    levels.insert(name.clone(), depth);
                    next.extend(children.get(&name).cloned().unwrap_or_default());
                }
                layer = next;
                depth += 1;
            }
        }
        levels
    }

    fn effect_of(&self, rule: &[String]) -> Eft {
        match self.model.index_of("eft").map(|i| rule[i].as_str()) {
            None | Some("allow") => Eft::Allow,
            Some("deny") => Eft::Deny,
            Some(_) => Eft::Indeterminate,
        }
    }

    /// Decides one request, given as the model's request fields in order.
    pub fn enforce(&self, request: &[&str]) -> Result<bool, CasbinError> {
        if request.len() != self.model.request.len() {
            return Err(CasbinError::Request(format!(
                "{} values given, the model's request has {} ({})",
                request.len(),
                self.model.request.len(),
                self.model.request.join(", ")
            )));
        }
        let empty = vec![String::new(); self.model.policy.len()];
        let mut effects = Vec::new();
        if self.rules.is_empty() {
            // As Casbin does: with no policy, the matcher runs once against empty policy fields.
            if self.matches(request, &empty)? {
                effects.push(Eft::Allow);
            }
        }
        for rule in &self.rules {
            if self.matches(request, rule)? {
                let effect = self.effect_of(rule);
                if matches!(
                    self.model.effect,
                    EffectRule::Priority | EffectRule::SubjectPriority
                ) && effect != Eft::Indeterminate
                {
                    return Ok(effect == Eft::Allow);
                }
                effects.push(effect);
            }
        }
        let allowed = effects.contains(&Eft::Allow);
        let denied = effects.contains(&Eft::Deny);
        Ok(match self.model.effect {
            EffectRule::AllowOverride => allowed,
            EffectRule::DenyOverride => !denied,
            EffectRule::AllowAndDeny => allowed && !denied,
            EffectRule::Priority | EffectRule::SubjectPriority => false,
        })
    }

    fn matches(&self, request: &[&str], rule: &[String]) -> Result<bool, CasbinError> {
        let cx = Bindings {
            enforcer: self,
            request,
            rule,
        };
        Ok(expr::eval(&self.model.matcher, &cx)?.truthy())
    }
}

struct Bindings<'a> {
    enforcer: &'a Enforcer,
    request: &'a [&'a str],
    rule: &'a [String],
}

impl Context for Bindings<'_> {
    fn field(&self, request: bool, index: usize) -> &str {
        if request {
            self.request[index]
        } else {
            &self.rule[index]
        }
    }

    fn call(&self, function: &Function, args: &[String]) -> Result<bool, CasbinError> {
        let (a, b) = (args[0].as_str(), args[1].as_str());
        Ok(match function {
            Function::Role(g) => {
                let links = &self.enforcer.links[g];
                links.has_link(a, b, args.get(2).map(String::as_str))?
            }
            Function::KeyMatch => functions::key_match(a, b),
            Function::KeyMatch2 => functions::key_match2(a, b)?,
            Function::KeyMatch3 => functions::key_match3(a, b)?,
            Function::RegexMatch => functions::regex_match(a, b)?,
            Function::IpMatch => functions::ip_match(a, b)?,
            Function::GlobMatch => functions::glob_match(a, b),
        })
    }
}
