//! The compiled, in-memory form of every grant, role and assignment.
//!
//! Strings are interned to `u32` symbols (`*` is symbol 0). A check probes:
//! - the user's direct grants, a hash map keyed by the packed
//!   `(scope_type, scope_id, module, action)`: four probes (scope id and
//!   action each exact or `*`);
//! - the roles granting `(module, action)` or `(module, *)`, from one global
//!   map, each tested against the roles the user holds in a covering scope by
//!   one bit of that role's closure (the set of roles it includes through
//!   inheritance, itself included).
//!
//! So a check costs a handful of hash probes whatever the size of the policy
//! or the depth of the hierarchy, and never allocates. Patterns
//! (`/api/users/:id` modules) are scanned only when some grant uses one.
//! Every change is applied in place; nothing is rebuilt.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::pattern::ModulePattern;
use crate::model::{Effect, UserId};

pub type Sym = u32;
/// `*`: every scope id, every action, every scope type.
pub const WILD: Sym = 0;
/// A request string no grant has ever named: equal to nothing stored.
const UNKNOWN: Sym = u32::MAX;
/// The pin of a role permission that applies wherever its role is held.
const UNPINNED: Sym = u32::MAX - 1;

#[derive(Default)]
struct Symbols {
    ids: FxHashMap<Arc<str>, Sym>,
    names: Vec<Arc<str>>,
    /// Every symbol in name order, so that each can hold a rank that sorts
    /// like its name: snapshots then sort integers, not strings.
    by_name: BTreeMap<Arc<str>, Sym>,
    ranks: Vec<u64>,
}

impl Symbols {
    fn new() -> Self {
        let mut s = Self::default();
        s.intern("*");
        s
    }

    fn intern(&mut self, name: &str) -> Sym {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = Sym::try_from(self.names.len()).expect("fewer than 4 billion distinct names");
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name.clone(), id);
        self.ranks.push(0);
        self.rank_new(name, id);
        id
    }

    /// Gives a new symbol the rank halfway between its neighbours' in name
    /// order; when they leave no room, spreads all ranks evenly again (rare:
    /// after dozens of names land in one gap).
    fn rank_new(&mut self, name: Arc<str>, id: Sym) {
        let below = self
            .by_name
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(&*name)))
            .next_back()
            .map_or(0, |(_, &s)| self.ranks[s as usize]);
        let above = self
            .by_name
            .range::<str, _>((Bound::Excluded(&*name), Bound::Unbounded))
            .next()
            .map_or(u64::MAX, |(_, &s)| self.ranks[s as usize]);
        self.by_name.insert(name, id);
        if above - below >= 2 {
            self.ranks[id as usize] = below + (above - below) / 2;
            return;
        }
        let gap = u64::MAX / (self.by_name.len() as u64 + 1);
        for (position, &sym) in self.by_name.values().enumerate() {
            self.ranks[sym as usize] = (position as u64 + 1) * gap;
        }
    }

    fn lookup(&self, name: &str) -> Sym {
        self.ids.get(name).copied().unwrap_or(UNKNOWN)
    }

    fn name(&self, sym: Sym) -> &Arc<str> {
        &self.names[sym as usize]
    }

    /// Orders like the names, field by field.
    fn sort_key(&self, syms: [Sym; 4]) -> [u64; 4] {
        syms.map(|s| self.ranks[s as usize])
    }
}

fn pack(a: Sym, b: Sym, c: Sym, d: Sym) -> u128 {
    (u128::from(a) << 96) | (u128::from(b) << 64) | (u128::from(c) << 32) | u128::from(d)
}

fn unpack(k: u128) -> [Sym; 4] {
    [
        (k >> 96) as Sym,
        (k >> 64) as Sym,
        (k >> 32) as Sym,
        k as Sym,
    ]
}

fn pair(module: Sym, action: Sym) -> u64 {
    (u64::from(module) << 32) | u64::from(action)
}

/// A scope as symbols: `(WILD, WILD)` is everywhere, `(t, WILD)` every id of type t.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ScopeSyms {
    st: Sym,
    sid: Sym,
}

impl ScopeSyms {
    fn covers(self, st: Sym, sid: Sym) -> bool {
        self.st == WILD || (self.st == st && (self.sid == WILD || self.sid == sid))
    }

    /// The part of `self` that `other` also covers, if any.
    fn intersect(self, other: ScopeSyms) -> Option<ScopeSyms> {
        if self.st == WILD {
            return Some(other);
        }
        if other.st == WILD {
            return Some(self);
        }
        if self.st != other.st {
            return None;
        }
        match (self.sid, other.sid) {
            (WILD, sid) | (sid, WILD) => Some(ScopeSyms { st: self.st, sid }),
            (a, b) if a == b => Some(self),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct DirectGrant {
    id: Uuid,
    effect: Effect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Assignment {
    role: u32,
    scope: ScopeSyms,
}

struct UserEntry {
    id: UserId,
    sub: Arc<str>,
    active: bool,
    revision: i64,
    direct: FxHashMap<u128, DirectGrant>,
    /// Keys in `direct` whose module is a pattern.
    direct_patterns: Vec<u128>,
    assignments: Vec<Assignment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoleGrant {
    role: u32,
    effect: Effect,
    pin: ScopeSyms,
}

impl RoleGrant {
    fn pin(&self) -> Option<ScopeSyms> {
        (self.pin.st != UNPINNED).then_some(self.pin)
    }
}

struct RoleEntry {
    name: Arc<str>,
    parents: Vec<u32>,
    /// `pack(module, action, pin_st, pin_sid)` → effect.
    perms: FxHashMap<u128, Effect>,
    /// Bit r is set when this role includes role r (itself, or by inheritance).
    closure: Vec<u64>,
}

impl RoleEntry {
    fn includes(&self, role: u32) -> bool {
        self.closure
            .get((role / 64) as usize)
            .is_some_and(|w| w & (1 << (role % 64)) != 0)
    }
}

/// One check, as strings. Strings never seen by the index match only wildcards.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub scope_type: &'a str,
    pub scope_id: &'a str,
    pub module: &'a str,
    pub action: &'a str,
}

/// A permission in its textual form, sharing the index's strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PermissionText {
    pub scope_type: Arc<str>,
    pub scope_id: Arc<str>,
    pub module: Arc<str>,
    pub action: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct HeldRole {
    pub role: Arc<str>,
    pub scope_type: Arc<str>,
    pub scope_id: Arc<str>,
}

/// A permission borrowed from a [`PermissionList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PermissionRef<'a> {
    pub scope_type: &'a str,
    pub scope_id: &'a str,
    pub module: &'a str,
    pub action: &'a str,
}

/// Permissions in name order, sharing one table of the names they use: a
/// thousand permissions name a few hundred strings, and holding a handle per
/// field (four atomic increments each, and as many decrements) cost more
/// than computing the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionList {
    names: Vec<Arc<str>>,
    entries: Vec<[u32; 4]>,
}

impl PermissionList {
    /// `permissions` must be in the order the list is to keep.
    fn new<'a>(
        symbols: &Symbols,
        permissions: impl ExactSizeIterator<Item = &'a [Sym; 4]>,
    ) -> Self {
        let mut local: FxHashMap<Sym, u32> = FxHashMap::default();
        local.reserve(permissions.size_hint().0 + 8);
        let mut names = Vec::new();
        // In sorted order a column mostly repeats the row above (one scope, a
        // module for each of its actions): remember each column's last symbol.
        let mut last: [(Sym, u32); 4] = [(UNKNOWN, 0); 4];
        let entries = permissions
            .map(|p| {
                let mut entry = [0u32; 4];
                for (column, &sym) in p.iter().enumerate() {
                    if last[column].0 != sym {
                        let index = *local.entry(sym).or_insert_with(|| {
                            names.push(symbols.name(sym).clone());
                            (names.len() - 1) as u32
                        });
                        last[column] = (sym, index);
                    }
                    entry[column] = last[column].1;
                }
                entry
            })
            .collect();
        Self { names, entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<PermissionRef<'_>> {
        self.entries.get(i).map(|e| self.resolve(e))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = PermissionRef<'_>> {
        self.entries.iter().map(|e| self.resolve(e))
    }

    fn resolve(&self, [st, sid, module, action]: &[u32; 4]) -> PermissionRef<'_> {
        PermissionRef {
            scope_type: &self.names[*st as usize],
            scope_id: &self.names[*sid as usize],
            module: &self.names[*module as usize],
            action: &self.names[*action as usize],
        }
    }
}

impl serde::Serialize for PermissionList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// What a user may do, with denies applied: `permissions` are the allows
/// no deny cancels entirely; `denied` are the denies that still carve
/// exceptions out of them (a cache must apply both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSnapshot {
    pub user_id: UserId,
    pub authentik_sub: Arc<str>,
    pub is_active: bool,
    pub revision: i64,
    pub permissions: PermissionList,
    pub denied: PermissionList,
    pub roles: Vec<HeldRole>,
}

/// Where a matching grant came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Source {
    Direct {
        grant_id: Uuid,
    },
    Role {
        /// From the role held to the role holding the permission.
        chain: Vec<Arc<str>>,
        assigned_scope_type: Arc<str>,
        assigned_scope_id: Arc<str>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contribution {
    pub effect: Effect,
    #[serde(flatten)]
    pub permission: PermissionText,
    #[serde(flatten)]
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    pub allowed: bool,
    pub is_active: bool,
    /// Why: `inactive_user`, `denied`, `allowed` or `no_matching_allow`.
    pub reason: &'static str,
    pub contributions: Vec<Contribution>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("no such user")]
    UnknownUser,
    #[error("no such role: {0}")]
    UnknownRole(String),
    #[error("role {0} would inherit from itself")]
    Cycle(String),
}

/// The whole policy, compiled.
pub struct Index {
    symbols: Symbols,
    users: Vec<UserEntry>,
    user_by_sub: FxHashMap<Arc<str>, u32>,
    user_by_id: FxHashMap<UserId, u32>,
    roles: Vec<Option<RoleEntry>>,
    role_by_name: FxHashMap<Arc<str>, u32>,
    /// `pair(module, action)` → the roles whose own permissions grant it.
    role_grants: FxHashMap<u64, Vec<RoleGrant>>,
    /// Role permissions whose module is a pattern: `(module, action, grant)`.
    role_pattern_grants: Vec<(Sym, Sym, RoleGrant)>,
    /// Path-module patterns, by module symbol.
    patterns: FxHashMap<Sym, ModulePattern>,
    revision: i64,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    pub fn new() -> Self {
        Self {
            symbols: Symbols::new(),
            users: Vec::new(),
            user_by_sub: FxHashMap::default(),
            user_by_id: FxHashMap::default(),
            roles: Vec::new(),
            role_by_name: FxHashMap::default(),
            role_grants: FxHashMap::default(),
            role_pattern_grants: Vec::new(),
            patterns: FxHashMap::default(),
            revision: 0,
        }
    }

    /// The revision of the last change applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn set_revision(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    fn module_sym(&mut self, module: &str) -> Sym {
        let sym = self.symbols.intern(module);
        if !self.patterns.contains_key(&sym) {
            if let Some(pattern) = ModulePattern::parse(module) {
                self.patterns.insert(sym, pattern);
            }
        }
        sym
    }

    fn module_matches(&self, granted: Sym, requested: &str, requested_sym: Sym) -> bool {
        granted == requested_sym
            || self
                .patterns
                .get(&granted)
                .is_some_and(|pattern| pattern.matches(requested))
    }

    fn scope(&mut self, scope_type: &str, scope_id: &str) -> ScopeSyms {
        ScopeSyms {
            st: self.symbols.intern(scope_type),
            sid: self.symbols.intern(scope_id),
        }
    }

    fn text(&self, [st, sid, module, action]: [Sym; 4]) -> PermissionText {
        PermissionText {
            scope_type: self.symbols.name(st).clone(),
            scope_id: self.symbols.name(sid).clone(),
            module: self.symbols.name(module).clone(),
            action: self.symbols.name(action).clone(),
        }
    }

    // ---- users and direct grants ------------------------------------------

    pub fn upsert_user(&mut self, id: UserId, sub: &str, active: bool, revision: i64) {
        if let Some(&u) = self.user_by_id.get(&id) {
            let user = &mut self.users[u as usize];
            user.active = active;
            user.revision = user.revision.max(revision);
            return;
        }
        let u = u32::try_from(self.users.len()).expect("fewer than 4 billion users");
        let sub: Arc<str> = Arc::from(sub);
        self.users.push(UserEntry {
            id,
            sub: sub.clone(),
            active,
            revision,
            direct: FxHashMap::default(),
            direct_patterns: Vec::new(),
            assignments: Vec::new(),
        });
        self.user_by_sub.insert(sub, u);
        self.user_by_id.insert(id, u);
    }

    pub fn user_by_sub(&self, sub: &str) -> Option<UserId> {
        self.user_by_sub
            .get(sub)
            .map(|&u| self.users[u as usize].id)
    }

    pub fn sub_of(&self, id: UserId) -> Option<Arc<str>> {
        self.user_by_id
            .get(&id)
            .map(|&u| self.users[u as usize].sub.clone())
    }

    fn user_mut(&mut self, id: UserId) -> Result<&mut UserEntry, IndexError> {
        let u = *self.user_by_id.get(&id).ok_or(IndexError::UnknownUser)?;
        Ok(&mut self.users[u as usize])
    }

    /// Forgets the user's direct grants and role assignments, before they
    /// are reloaded from the store.
    pub fn reset_user(&mut self, id: UserId) {
        if let Ok(user) = self.user_mut(id) {
            user.direct.clear();
            user.direct_patterns.clear();
            user.assignments.clear();
        }
    }

    /// Marks a change to the user's effective permissions at `revision`.
    pub fn touch_user(&mut self, id: UserId, revision: i64) {
        if let Ok(user) = self.user_mut(id) {
            user.revision = user.revision.max(revision);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn set_direct(
        &mut self,
        user: UserId,
        grant_id: Uuid,
        scope_type: &str,
        scope_id: &str,
        module: &str,
        action: &str,
        effect: Effect,
    ) -> Result<(), IndexError> {
        let module_sym = self.module_sym(module);
        let key = pack(
            self.symbols.intern(scope_type),
            self.symbols.intern(scope_id),
            module_sym,
            self.symbols.intern(action),
        );
        let is_pattern = self.patterns.contains_key(&module_sym);
        let entry = self.user_mut(user)?;
        if entry
            .direct
            .insert(
                key,
                DirectGrant {
                    id: grant_id,
                    effect,
                },
            )
            .is_none()
            && is_pattern
        {
            entry.direct_patterns.push(key);
        }
        Ok(())
    }

    pub fn remove_direct(
        &mut self,
        user: UserId,
        scope_type: &str,
        scope_id: &str,
        module: &str,
        action: &str,
    ) {
        let key = pack(
            self.symbols.lookup(scope_type),
            self.symbols.lookup(scope_id),
            self.symbols.lookup(module),
            self.symbols.lookup(action),
        );
        if let Ok(entry) = self.user_mut(user) {
            entry.direct.remove(&key);
            entry.direct_patterns.retain(|k| *k != key);
        }
    }

    // ---- roles ------------------------------------------------------------

    pub fn role_exists(&self, name: &str) -> bool {
        self.role_by_name.contains_key(name)
    }

    fn role_idx(&self, name: &str) -> Result<u32, IndexError> {
        self.role_by_name
            .get(name)
            .copied()
            .ok_or_else(|| IndexError::UnknownRole(name.to_owned()))
    }

    fn role(&self, r: u32) -> &RoleEntry {
        self.roles[r as usize]
            .as_ref()
            .expect("live role indices point at live roles")
    }

    pub fn add_role(&mut self, name: &str) {
        if self.role_by_name.contains_key(name) {
            return;
        }
        let r = u32::try_from(self.roles.len()).expect("fewer than 4 billion roles");
        let name: Arc<str> = Arc::from(name);
        // A new role includes only itself, and no other role includes it yet.
        let mut closure = vec![0u64; (r as usize / 64) + 1];
        closure[r as usize / 64] |= 1 << (r % 64);
        self.roles.push(Some(RoleEntry {
            name: name.clone(),
            parents: Vec::new(),
            perms: FxHashMap::default(),
            closure,
        }));
        self.role_by_name.insert(name, r);
    }

    pub fn remove_role(&mut self, name: &str) {
        let Some(r) = self.role_by_name.remove(name) else {
            return;
        };
        self.roles[r as usize] = None;
        for grants in self.role_grants.values_mut() {
            grants.retain(|g| g.role != r);
        }
        self.role_grants.retain(|_, g| !g.is_empty());
        self.role_pattern_grants.retain(|(_, _, g)| g.role != r);
        for role in self.roles.iter_mut().flatten() {
            role.parents.retain(|p| *p != r);
        }
        for user in &mut self.users {
            user.assignments.retain(|a| a.role != r);
        }
        self.recompute_closures();
    }

    /// Whether making `role` inherit `parents` would close a cycle.
    pub fn would_cycle(&self, role: &str, parents: &[&str]) -> Result<bool, IndexError> {
        let r = self.role_idx(role)?;
        for parent in parents {
            let p = self.role_idx(parent)?;
            if p == r || self.role(p).includes(r) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn set_parents(&mut self, role: &str, parents: &[&str]) -> Result<(), IndexError> {
        if self.would_cycle(role, parents)? {
            return Err(IndexError::Cycle(role.to_owned()));
        }
        let r = self.role_idx(role)?;
        let parents = parents
            .iter()
            .map(|p| self.role_idx(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.roles[r as usize].as_mut().expect("live").parents = parents;
        self.recompute_closures();
        Ok(())
    }

    pub fn parents(&self, role: &str) -> Vec<Arc<str>> {
        self.role_idx(role)
            .map(|r| {
                self.role(r)
                    .parents
                    .iter()
                    .map(|p| self.role(*p).name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closures by memoised depth-first search: inheritance is acyclic (checked on every change).
    fn recompute_closures(&mut self) {
        let n = self.roles.len();
        let words = n.div_ceil(64);
        let mut done: Vec<Option<Vec<u64>>> = vec![None; n];
        fn visit(
            r: usize,
            roles: &[Option<RoleEntry>],
            done: &mut Vec<Option<Vec<u64>>>,
            words: usize,
        ) {
            if done[r].is_some() {
                return;
            }
            let mut bits = vec![0u64; words];
            bits[r / 64] |= 1 << (r % 64);
            if let Some(role) = &roles[r] {
                for &p in &role.parents {
                    visit(p as usize, roles, done, words);
                    for (b, pb) in bits
                        .iter_mut()
                        .zip(done[p as usize].as_ref().expect("visited"))
                    {
                        *b |= pb;
                    }
                }
            }
            done[r] = Some(bits);
        }
        for r in 0..n {
            visit(r, &self.roles, &mut done, words);
        }
        for (role, bits) in self.roles.iter_mut().zip(done) {
            if let Some(role) = role {
                role.closure = bits.expect("every role visited");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn set_role_permission(
        &mut self,
        role: &str,
        module: &str,
        action: &str,
        pin: Option<(&str, &str)>,
        effect: Effect,
    ) -> Result<(), IndexError> {
        let r = self.role_idx(role)?;
        let module_sym = self.module_sym(module);
        let action_sym = self.symbols.intern(action);
        let pin = match pin {
            Some((st, sid)) => self.scope(st, sid),
            None => ScopeSyms {
                st: UNPINNED,
                sid: UNPINNED,
            },
        };
        let key = pack(module_sym, action_sym, pin.st, pin.sid);
        self.roles[r as usize]
            .as_mut()
            .expect("live")
            .perms
            .insert(key, effect);
        let grant = RoleGrant {
            role: r,
            effect,
            pin,
        };
        let same = |g: &RoleGrant| g.role == r && g.pin == pin;
        if self.patterns.contains_key(&module_sym) {
            self.role_pattern_grants
                .retain(|(m, a, g)| !(*m == module_sym && *a == action_sym && same(g)));
            self.role_pattern_grants
                .push((module_sym, action_sym, grant));
        } else {
            let grants = self
                .role_grants
                .entry(pair(module_sym, action_sym))
                .or_default();
            grants.retain(|g| !same(g));
            grants.push(grant);
        }
        Ok(())
    }

    pub fn remove_role_permission(
        &mut self,
        role: &str,
        module: &str,
        action: &str,
        pin: Option<(&str, &str)>,
    ) {
        let Ok(r) = self.role_idx(role) else { return };
        let (m, a) = (self.symbols.lookup(module), self.symbols.lookup(action));
        let pin = match pin {
            Some((st, sid)) => ScopeSyms {
                st: self.symbols.lookup(st),
                sid: self.symbols.lookup(sid),
            },
            None => ScopeSyms {
                st: UNPINNED,
                sid: UNPINNED,
            },
        };
        self.roles[r as usize]
            .as_mut()
            .expect("live")
            .perms
            .remove(&pack(m, a, pin.st, pin.sid));
        let same = |g: &RoleGrant| g.role == r && g.pin == pin;
        if let Some(grants) = self.role_grants.get_mut(&pair(m, a)) {
            grants.retain(|g| !same(g));
        }
        self.role_pattern_grants
            .retain(|(pm, pa, g)| !(*pm == m && *pa == a && same(g)));
    }

    /// Replaces every permission of the role with `permissions`
    /// (`(module, action, pin, effect)`): how a role reloaded from the store
    /// is brought in.
    pub fn replace_role_permissions<'a>(
        &mut self,
        role: &str,
        permissions: impl IntoIterator<Item = (&'a str, &'a str, Option<(&'a str, &'a str)>, Effect)>,
    ) -> Result<(), IndexError> {
        let r = self.role_idx(role)?;
        self.roles[r as usize].as_mut().expect("live").perms.clear();
        for grants in self.role_grants.values_mut() {
            grants.retain(|g| g.role != r);
        }
        self.role_grants.retain(|_, g| !g.is_empty());
        self.role_pattern_grants.retain(|(_, _, g)| g.role != r);
        for (module, action, pin, effect) in permissions {
            self.set_role_permission(role, module, action, pin, effect)?;
        }
        Ok(())
    }

    pub fn assign(
        &mut self,
        user: UserId,
        role: &str,
        scope_type: &str,
        scope_id: &str,
    ) -> Result<(), IndexError> {
        let r = self.role_idx(role)?;
        let scope = self.scope(scope_type, scope_id);
        let entry = self.user_mut(user)?;
        let assignment = Assignment { role: r, scope };
        if !entry.assignments.contains(&assignment) {
            entry.assignments.push(assignment);
        }
        Ok(())
    }

    pub fn unassign(&mut self, user: UserId, role: &str, scope_type: &str, scope_id: &str) {
        let Ok(r) = self.role_idx(role) else { return };
        let scope = ScopeSyms {
            st: self.symbols.lookup(scope_type),
            sid: self.symbols.lookup(scope_id),
        };
        if let Ok(entry) = self.user_mut(user) {
            entry
                .assignments
                .retain(|a| !(a.role == r && a.scope == scope));
        }
    }

    /// The roles whose holders a change to `role` reaches: itself and every
    /// role inheriting it.
    /// Whether the role, itself or through a role it inherits, holds a
    /// permission (allow or deny) in a module `module` accepts.
    pub fn role_reaches(&self, role: &str, module: impl Fn(&str) -> bool) -> bool {
        self.role_idx(role)
            .is_ok_and(|r| self.role_idx_reaches(r, &module))
    }

    fn role_idx_reaches(&self, r: u32, module: &dyn Fn(&str) -> bool) -> bool {
        let entry = self.role(r);
        self.roles.iter().enumerate().any(|(i, other)| {
            other.as_ref().is_some_and(|other| {
                entry.includes(i as u32)
                    && other
                        .perms
                        .keys()
                        .any(|&k| module(self.symbols.name(unpack(k)[0])))
            })
        })
    }

    /// Whether the user holds, directly or through a role, a permission in a
    /// module `module` accepts.
    pub fn user_reaches(&self, user: UserId, module: impl Fn(&str) -> bool) -> bool {
        let Some(&u) = self.user_by_id.get(&user) else {
            return false;
        };
        let entry = &self.users[u as usize];
        entry
            .direct
            .keys()
            .any(|&k| module(self.symbols.name(unpack(k)[2])))
            || entry
                .assignments
                .iter()
                .any(|a| self.role_idx_reaches(a.role, &module))
    }

    pub fn roles_including(&self, role: &str) -> Vec<Arc<str>> {
        let Ok(r) = self.role_idx(role) else {
            return Vec::new();
        };
        self.roles
            .iter()
            .flatten()
            .filter(|other| other.includes(r))
            .map(|other| other.name.clone())
            .collect()
    }

    /// Users whose effective permissions depend on `role`: those holding it or
    /// any role that inherits it.
    pub fn holders(&self, role: &str) -> Vec<UserId> {
        let Ok(r) = self.role_idx(role) else {
            return Vec::new();
        };
        self.users
            .iter()
            .filter(|u| u.assignments.iter().any(|a| self.role(a.role).includes(r)))
            .map(|u| u.id)
            .collect()
    }

    // ---- questions ----------------------------------------------------------

    /// Allowed iff the user is active, some allow matches and no deny does.
    pub fn check(&self, user: UserId, request: &Request<'_>) -> Result<bool, IndexError> {
        let u = *self.user_by_id.get(&user).ok_or(IndexError::UnknownUser)?;
        Ok(self.check_entry(&self.users[u as usize], request))
    }

    pub fn check_sub(&self, sub: &str, request: &Request<'_>) -> Result<bool, IndexError> {
        let u = *self.user_by_sub.get(sub).ok_or(IndexError::UnknownUser)?;
        Ok(self.check_entry(&self.users[u as usize], request))
    }

    fn check_entry(&self, user: &UserEntry, request: &Request<'_>) -> bool {
        if !user.active {
            return false;
        }
        let mut allowed = false;
        let mut deny = false;
        self.visit_matches(user, request, |effect, _| {
            match effect {
                Effect::Allow => allowed = true,
                Effect::Deny => deny = true,
            }
            !deny
        });
        allowed && !deny
    }

    /// Calls `seen` with each matching grant until it returns false.
    fn visit_matches(
        &self,
        user: &UserEntry,
        request: &Request<'_>,
        mut seen: impl FnMut(Effect, Match) -> bool,
    ) {
        let s = &self.symbols;
        let (st, sid, m, a) = (
            s.lookup(request.scope_type),
            s.lookup(request.scope_id),
            s.lookup(request.module),
            s.lookup(request.action),
        );

        // A request for `*` itself is matched by wildcard grants only, once.
        let scope_ids: &[Sym] = if sid == WILD { &[WILD] } else { &[sid, WILD] };
        let actions: &[Sym] = if a == WILD { &[WILD] } else { &[a, WILD] };
        for &scope_id in scope_ids {
            for &action in actions {
                let key = pack(st, scope_id, m, action);
                if let Some(grant) = user.direct.get(&key) {
                    if !seen(grant.effect, Match::Direct(key, grant.id)) {
                        return;
                    }
                }
            }
        }
        for &key in &user.direct_patterns {
            let [gst, gsid, gm, ga] = unpack(key);
            if gst == st
                && (gsid == sid || gsid == WILD)
                && (ga == a || ga == WILD)
                && self.module_matches(gm, request.module, m)
            {
                if gm == m {
                    continue; // already seen as an exact match above
                }
                let grant = &user.direct[&key];
                if !seen(grant.effect, Match::Direct(key, grant.id)) {
                    return;
                }
            }
        }

        let covering = |a: &&Assignment| a.scope.covers(st, sid);
        if !user.assignments.iter().any(|x| covering(&x)) {
            return;
        }
        let applies = |g: &RoleGrant| -> Option<Assignment> {
            if g.pin().is_some_and(|pin| !pin.covers(st, sid)) {
                return None;
            }
            user.assignments
                .iter()
                .filter(covering)
                .find(|x| self.role(x.role).includes(g.role))
                .copied()
        };
        for &action in actions {
            if let Some(grants) = self.role_grants.get(&pair(m, action)) {
                for g in grants {
                    if let Some(held) = applies(g) {
                        if !seen(
                            g.effect,
                            Match::Role {
                                grant: *g,
                                module: m,
                                action,
                                held,
                            },
                        ) {
                            return;
                        }
                    }
                }
            }
        }
        for (gm, ga, g) in &self.role_pattern_grants {
            if (*ga == a || *ga == WILD) && self.module_matches(*gm, request.module, m) {
                if let Some(held) = applies(g) {
                    if !seen(
                        g.effect,
                        Match::Role {
                            grant: *g,
                            module: *gm,
                            action: *ga,
                            held,
                        },
                    ) {
                        return;
                    }
                }
            }
        }
    }

    /// Every grant that matches the request, with where it came from.
    pub fn explain(&self, user: UserId, request: &Request<'_>) -> Result<Explanation, IndexError> {
        let u = *self.user_by_id.get(&user).ok_or(IndexError::UnknownUser)?;
        let entry = &self.users[u as usize];
        let mut contributions = Vec::new();
        self.visit_matches(entry, request, |effect, found| {
            contributions.push(self.contribution(effect, found));
            true
        });
        let allowed_by = contributions.iter().any(|c| c.effect == Effect::Allow);
        let denied = contributions.iter().any(|c| c.effect == Effect::Deny);
        let (allowed, reason) = match (entry.active, denied, allowed_by) {
            (false, _, _) => (false, "inactive_user"),
            (true, true, _) => (false, "denied"),
            (true, false, true) => (true, "allowed"),
            (true, false, false) => (false, "no_matching_allow"),
        };
        // Denies first: they decided.
        contributions.sort_by_key(|c| std::cmp::Reverse(c.effect));
        Ok(Explanation {
            allowed,
            is_active: entry.active,
            reason,
            contributions,
        })
    }

    fn contribution(&self, effect: Effect, found: Match) -> Contribution {
        match found {
            Match::Direct(key, grant_id) => Contribution {
                effect,
                permission: self.text(unpack(key)),
                source: Source::Direct { grant_id },
            },
            Match::Role {
                grant,
                module,
                action,
                held,
            } => {
                let scope = grant
                    .pin()
                    .and_then(|p| p.intersect(held.scope))
                    .unwrap_or(held.scope);
                Contribution {
                    effect,
                    permission: self.text([scope.st, scope.sid, module, action]),
                    source: Source::Role {
                        chain: self.chain(held.role, grant.role),
                        assigned_scope_type: self.symbols.name(held.scope.st).clone(),
                        assigned_scope_id: self.symbols.name(held.scope.sid).clone(),
                    },
                }
            }
        }
    }

    /// The inheritance path from `from` to `to`, by breadth-first search.
    fn chain(&self, from: u32, to: u32) -> Vec<Arc<str>> {
        let mut previous: FxHashMap<u32, u32> = FxHashMap::default();
        let mut queue = std::collections::VecDeque::from([from]);
        previous.insert(from, from);
        while let Some(r) = queue.pop_front() {
            if r == to {
                break;
            }
            for &p in &self.role(r).parents {
                if let std::collections::hash_map::Entry::Vacant(e) = previous.entry(p) {
                    e.insert(r);
                    queue.push_back(p);
                }
            }
        }
        let mut path = vec![to];
        let mut at = to;
        while at != from {
            at = previous[&at];
            path.push(at);
        }
        path.reverse();
        path.into_iter()
            .map(|r| self.role(r).name.clone())
            .collect()
    }

    /// The user's effective permissions: direct, and through every role held.
    pub fn snapshot(&self, user: UserId) -> Result<EffectiveSnapshot, IndexError> {
        let u = *self.user_by_id.get(&user).ok_or(IndexError::UnknownUser)?;
        let entry = &self.users[u as usize];
        // Each permission with its key in name order; equal keys are equal permissions.
        let mut allow: Vec<([u64; 4], [Sym; 4])> = Vec::new();
        let mut deny: Vec<([u64; 4], [Sym; 4])> = Vec::new();
        let mut push = |effect: Effect, p: [Sym; 4]| {
            let keyed = (self.symbols.sort_key(p), p);
            match effect {
                Effect::Allow => allow.push(keyed),
                Effect::Deny => deny.push(keyed),
            }
        };
        for (key, grant) in &entry.direct {
            push(grant.effect, unpack(*key));
        }
        for held in &entry.assignments {
            let closure = &self.role(held.role).closure;
            for (word_index, &word) in closure.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let r = word_index as u32 * 64 + bits.trailing_zeros();
                    bits &= bits - 1;
                    for (key, effect) in &self.role(r).perms {
                        let [module, action, pin_st, pin_sid] = unpack(*key);
                        let scope = if pin_st == UNPINNED {
                            Some(held.scope)
                        } else {
                            held.scope.intersect(ScopeSyms {
                                st: pin_st,
                                sid: pin_sid,
                            })
                        };
                        if let Some(scope) = scope {
                            push(*effect, [scope.st, scope.sid, module, action]);
                        }
                    }
                }
            }
        }
        allow.sort_unstable_by_key(|(key, _)| *key);
        allow.dedup_by_key(|(key, _)| *key);
        deny.sort_unstable_by_key(|(key, _)| *key);
        deny.dedup_by_key(|(key, _)| *key);
        let covers = |d: &[Sym; 4], p: &[Sym; 4]| {
            ScopeSyms {
                st: d[0],
                sid: d[1],
            }
            .covers(p[0], p[1])
                && (d[2] == p[2]
                    || self
                        .patterns
                        .get(&d[2])
                        .is_some_and(|re| re.matches(self.symbols.name(p[2]))))
                && (d[3] == WILD || d[3] == p[3])
        };
        allow.retain(|(_, p)| !deny.iter().any(|(_, d)| covers(d, p)));
        let overlaps = |d: &[Sym; 4], p: &[Sym; 4]| {
            ScopeSyms {
                st: d[0],
                sid: d[1],
            }
            .intersect(ScopeSyms {
                st: p[0],
                sid: p[1],
            })
            .is_some()
                && (d[2] == p[2]
                    || self
                        .patterns
                        .get(&d[2])
                        .is_some_and(|re| re.matches(self.symbols.name(p[2])))
                    || self
                        .patterns
                        .get(&p[2])
                        .is_some_and(|re| re.matches(self.symbols.name(d[2]))))
                && (d[3] == WILD || p[3] == WILD || d[3] == p[3])
        };
        deny.retain(|(_, d)| allow.iter().any(|(_, p)| overlaps(d, p)));

        let permissions = PermissionList::new(&self.symbols, allow.iter().map(|(_, p)| p));
        let denied = PermissionList::new(&self.symbols, deny.iter().map(|(_, p)| p));
        let mut roles: Vec<HeldRole> = entry
            .assignments
            .iter()
            .map(|a| HeldRole {
                role: self.role(a.role).name.clone(),
                scope_type: self.symbols.name(a.scope.st).clone(),
                scope_id: self.symbols.name(a.scope.sid).clone(),
            })
            .collect();
        roles.sort_unstable();
        Ok(EffectiveSnapshot {
            user_id: entry.id,
            authentik_sub: entry.sub.clone(),
            is_active: entry.active,
            revision: entry.revision,
            permissions,
            denied,
            roles,
        })
    }

    /// Sizes, for metrics and benchmarks.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            users: self.users.len(),
            roles: self.role_by_name.len(),
            direct_grants: self.users.iter().map(|u| u.direct.len()).sum(),
            role_permissions: self.roles.iter().flatten().map(|r| r.perms.len()).sum(),
            assignments: self.users.iter().map(|u| u.assignments.len()).sum(),
            symbols: self.symbols.names.len(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    pub users: usize,
    pub roles: usize,
    pub direct_grants: usize,
    pub role_permissions: usize,
    pub assignments: usize,
    pub symbols: usize,
}

#[derive(Clone, Copy)]
enum Match {
    Direct(u128, Uuid),
    Role {
        grant: RoleGrant,
        module: Sym,
        action: Sym,
        held: Assignment,
    },
}

#[cfg(test)]
mod symbol_tests {
    use super::Symbols;

    fn assert_ranks_follow_names(symbols: &Symbols) {
        let mut by_rank: Vec<_> = symbols.names.iter().zip(&symbols.ranks).collect();
        by_rank.sort_by_key(|(_, rank)| **rank);
        let names: Vec<&str> = by_rank.iter().map(|(name, _)| &***name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "ranks sort like names and are distinct");
    }

    #[test]
    fn ranks_follow_names_whatever_the_order_of_arrival() {
        let ascending: Vec<String> = (0..2000).map(|i| format!("m{i:05}")).collect();
        let descending: Vec<String> = ascending.iter().rev().cloned().collect();
        // Always into the gap just above "a": exhausts it and forces renumbering.
        let one_gap: Vec<String> = (0..200)
            .map(|i| format!("a{}", "z".repeat(200 - i)))
            .collect();
        for names in [ascending, descending, one_gap] {
            let mut symbols = Symbols::new();
            symbols.intern("a");
            symbols.intern("b");
            for name in &names {
                symbols.intern(name);
            }
            assert_eq!(
                symbols.intern(&names[0]),
                symbols.lookup(&names[0]),
                "interned once"
            );
            assert_ranks_follow_names(&symbols);
        }
    }
}
