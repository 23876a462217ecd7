//! What a user sees of the back office: the menu tree and the buttons their
//! permissions reveal. Pure: the caller says which permissions the user holds.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::model::{Action, Module, Rule, RuleKind, RuleName};

/// A directory or menu as the back office renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MenuNode {
    pub name: RuleName,
    pub kind: RuleKind,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    pub weight: i32,
    pub hidden: bool,
    #[schema(no_recursion)]
    pub children: Vec<MenuNode>,
}

/// What a user sees of the rule tree in one scope.
pub struct MenuView {
    pub menus: Vec<MenuNode>,
    pub buttons: Vec<RuleName>,
    pub revision: crate::model::Revision,
}

/// The directories and menus `allowed` reveals, with their ancestors (so
/// that the tree stays connected), children ordered by weight then name.
/// Buttons are not in the tree: see [`buttons`].
pub fn menu_tree(rules: &[Rule], allowed: impl Fn(&Module, &Action) -> bool) -> Vec<MenuNode> {
    let by_name: HashMap<&RuleName, &Rule> = rules.iter().map(|r| (&r.name, r)).collect();
    let mut shown: HashSet<&RuleName> = HashSet::new();
    for rule in rules {
        if rule.kind == RuleKind::Button || !allowed(&rule.module, &rule.action) {
            continue;
        }
        // The rule and every ancestor; stops at one already shown (and so
        // at any loop a hand-edited table might hold).
        let mut next = Some(rule);
        while let Some(node) = next {
            if node.kind == RuleKind::Button || !shown.insert(&node.name) {
                break;
            }
            next = node.parent.as_ref().and_then(|p| by_name.get(p).copied());
        }
    }
    let mut children: BTreeMap<Option<&RuleName>, Vec<&Rule>> = BTreeMap::new();
    for rule in rules.iter().filter(|r| shown.contains(&r.name)) {
        // A parent not shown (a button, or missing) makes the node a root.
        let parent = rule.parent.as_ref().filter(|p| shown.contains(p));
        children.entry(parent).or_default().push(rule);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.weight.cmp(&b.weight).then_with(|| a.name.cmp(&b.name)));
    }
    fn build(
        parent: Option<&RuleName>,
        children: &BTreeMap<Option<&RuleName>, Vec<&Rule>>,
        depth: usize,
    ) -> Vec<MenuNode> {
        if depth > 64 {
            return Vec::new();
        }
        children
            .get(&parent)
            .map(|list| {
                list.iter()
                    .map(|rule| MenuNode {
                        name: rule.name.clone(),
                        kind: rule.kind,
                        title: rule.title.to_string(),
                        path: rule.path.as_ref().map(ToString::to_string),
                        component: rule.component.as_ref().map(ToString::to_string),
                        icon: rule.icon.as_ref().map(ToString::to_string),
                        weight: rule.weight,
                        hidden: rule.hidden,
                        children: build(Some(&rule.name), children, depth + 1),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    build(None, &children, 0)
}

/// The names of the buttons `allowed` reveals, sorted.
pub fn buttons(rules: &[Rule], allowed: impl Fn(&Module, &Action) -> bool) -> Vec<RuleName> {
    let mut names: Vec<RuleName> = rules
        .iter()
        .filter(|r| r.kind == RuleKind::Button && allowed(&r.module, &r.action))
        .map(|r| r.name.clone())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RuleText;

    fn rule(name: &str, kind: RuleKind, parent: Option<&str>, weight: i32, module: &str) -> Rule {
        Rule {
            name: RuleName::parse(name).unwrap(),
            kind,
            parent: parent.map(|p| RuleName::parse(p).unwrap()),
            title: RuleText::parse(name).unwrap(),
            path: None,
            component: None,
            icon: None,
            weight,
            hidden: false,
            module: Module::parse(module).unwrap(),
            action: Action::parse("view").unwrap(),
        }
    }

    fn tree() -> Vec<Rule> {
        use RuleKind::*;
        vec![
            rule("system", Directory, None, 1, "system"),
            rule("system:user", Menu, Some("system"), 2, "users"),
            rule("system:role", Menu, Some("system"), 1, "roles"),
            rule(
                "system:user:add",
                Button,
                Some("system:user"),
                0,
                "users_write",
            ),
            rule("reports", Directory, None, 0, "reports"),
            rule("reports:sales", Menu, Some("reports"), 0, "sales"),
        ]
    }

    fn names(nodes: &[MenuNode]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| {
                if n.children.is_empty() {
                    n.name.to_string()
                } else {
                    format!("{}{:?}", n.name, names(&n.children))
                }
            })
            .collect()
    }

    #[test]
    fn a_visible_menu_brings_its_ancestors() {
        // Only users: the system directory comes along, the roles menu does not.
        let visible = menu_tree(&tree(), |m, _| m.as_str() == "users");
        assert_eq!(names(&visible), ["system[\"system:user\"]"]);
    }

    #[test]
    fn children_are_ordered_by_weight_and_buttons_stay_out() {
        let all = menu_tree(&tree(), |_, _| true);
        assert_eq!(
            names(&all),
            [
                "reports[\"reports:sales\"]",
                "system[\"system:role\", \"system:user\"]"
            ]
        );
        assert_eq!(
            buttons(&tree(), |_, _| true),
            [RuleName::parse("system:user:add").unwrap()]
        );
        assert!(buttons(&tree(), |m, _| m.as_str() != "users_write").is_empty());
    }

    #[test]
    fn nothing_allowed_shows_nothing() {
        assert!(menu_tree(&tree(), |_, _| false).is_empty());
    }

    #[test]
    fn a_loop_in_the_table_does_not_hang() {
        let mut rules = tree();
        rules[0].parent = Some(RuleName::parse("system:user").unwrap());
        let shown = menu_tree(&rules, |_, _| true);
        assert_eq!(names(&shown), ["reports[\"reports:sales\"]"]);
    }
}
