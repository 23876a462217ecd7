//! Role links (`g`, `g2`, …) as Casbin's Go role manager answers them:
//! `name1` has `name2` when a chain of at most ten links leads from one to
//! the other. With a matching function (`g.match=keyMatch2`), a link whose
//! left side is a pattern applies to every name the pattern matches, and a
//! name reaches any role whose name it matches. With a domain matching
//! function, links made in a domain pattern apply in every domain it matches.

use std::collections::{BTreeSet, VecDeque};

use super::CasbinError;
use super::Matcher;

/// Go's default `maxHierarchyLevel`.
const MAX_HIERARCHY: usize = 10;

#[derive(Debug, Default, Clone)]
pub struct RoleLinks {
    /// `(name1, name2, domain)`: name1 inherits name2 (in domain, if any).
    links: Vec<(String, String, Option<String>)>,
    matching: Option<Matcher>,
    domain_matching: Option<Matcher>,
}

impl RoleLinks {
    pub fn set_matching(&mut self, m: Matcher) {
        self.matching = Some(m);
    }

    pub fn set_domain_matching(&mut self, m: Matcher) {
        self.domain_matching = Some(m);
    }

    pub fn add(&mut self, name1: &str, name2: &str, domain: Option<&str>) {
        let link = (
            name1.to_owned(),
            name2.to_owned(),
            domain.map(str::to_owned),
        );
        if !self.links.contains(&link) {
            self.links.push(link);
        }
    }

    pub fn links(&self) -> &[(String, String, Option<String>)] {
        &self.links
    }

    fn matches(&self, name: &str, pattern: &str) -> Result<bool, CasbinError> {
        if name == pattern {
            return Ok(true);
        }
        match &self.matching {
            Some(m) => m.call(name, pattern),
            None => Ok(false),
        }
    }

    fn in_domain(
        &self,
        link_domain: &Option<String>,
        domain: Option<&str>,
    ) -> Result<bool, CasbinError> {
        match (link_domain.as_deref(), domain) {
            (None, None) => Ok(true),
            (Some(d), Some(q)) if d == q => Ok(true),
            (Some(d), Some(q)) => match &self.domain_matching {
                Some(m) => m.call(q, d),
                None => Ok(false),
            },
            _ => Ok(false),
        }
    }

    pub fn has_link(
        &self,
        name1: &str,
        name2: &str,
        domain: Option<&str>,
    ) -> Result<bool, CasbinError> {
        if self.matches(name1, name2)? {
            return Ok(true);
        }
        let mut seen: BTreeSet<String> = BTreeSet::from([name1.to_owned()]);
        let mut frontier: VecDeque<(String, usize)> = VecDeque::from([(name1.to_owned(), 0)]);
        while let Some((name, depth)) = frontier.pop_front() {
            if depth == MAX_HIERARCHY {
                continue;
            }
            for (from, to, link_domain) in &self.links {
                if !self.in_domain(link_domain, domain)? || !self.matches(&name, from)? {
                    continue;
                }
                if self.matches(to, name2)? {
                    return Ok(true);
                }
                if seen.insert(to.clone()) {
                    frontier.push_back((to.clone(), depth + 1));
                }
            }
        }
        Ok(false)
    }
}
