//! Answering questions from the compiled index: checks, snapshots,
//! explanations. Nothing here touches the database.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::{Notify, watch};

use super::ServiceError;
use crate::authz::index::{EffectiveSnapshot, Explanation, Index, IndexError, Request};
use crate::model::{AuthentikSub, Revision, RolePermission, UserId};
use crate::store::{PolicyDelta, PolicyRow, Store};

/// Who a question is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Sub(AuthentikSub),
    Id(UserId),
}

/// The index, shared: checks take the read lock for nanoseconds, changes the
/// write lock for microseconds. Cheap to clone.
///
/// The published revision is contiguous: every change up to it is in the
/// index. A change applied out of order (another instance made the ones
/// before it) waits for the follower to fill the gap before it is
/// published, so that `min_revision` stays exact.
#[derive(Clone)]
pub struct Engine {
    index: Arc<RwLock<Index>>,
    /// Stored rows the last full compile left out: non-zero is "degraded".
    skipped: Arc<std::sync::atomic::AtomicU64>,
    revision: watch::Sender<i64>,
    /// Woken when a change arrives ahead of the published revision.
    gap: Arc<Notify>,
}

impl From<IndexError> for ServiceError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::UnknownUser => ServiceError::NotFound("user"),
            IndexError::UnknownRole(_) => ServiceError::NotFound("role"),
            IndexError::Cycle(role) => {
                ServiceError::Invalid(format!("role {role} would inherit from itself"))
            }
        }
    }
}

impl Engine {
    /// Compiles the whole policy from the store.
    pub async fn load(store: &Store) -> Result<Self, ServiceError> {
        let (index, skipped) = Self::compile(store).await?;
        let (tx, _) = watch::channel(index.revision());
        Ok(Self {
            index: Arc::new(RwLock::new(index)),
            skipped: Arc::new(skipped.into()),
            revision: tx,
            gap: Arc::default(),
        })
    }

    /// Recompiles the whole policy and swaps it in (when the change log no
    /// longer reaches back to this index's revision).
    pub async fn reload(&self, store: &Store) -> Result<(), ServiceError> {
        let (index, skipped) = Self::compile(store).await?;
        let revision = index.revision();
        *self.write() = index;
        self.skipped
            .store(skipped, std::sync::atomic::Ordering::Relaxed);
        self.publish(Revision(revision));
        Ok(())
    }

    /// The index, and how many stored rows it left out. A row memberd no
    /// longer accepts never stops a start: refusing to serve every decision
    /// over one bad grant would be worse than answering without it. Each is
    /// logged, counted in `/metrics` and reported by `/readyz`.
    async fn compile(store: &Store) -> Result<(Index, u64), ServiceError> {
        let mut index = Index::new();
        let mut skipped = 0u64;
        let revision = store
            .load_policy(|row| {
                let outcome = match row {
                    PolicyRow::Skipped { table, reason } => Err(format!("{table}: {reason}")),
                    row => apply_row(&mut index, row).map_err(|e| e.to_string()),
                };
                if let Err(reason) = outcome {
                    skipped += 1;
                    tracing::error!(%reason, "a stored policy row does not compile; it is left out");
                }
                Ok(())
            })
            .await?;
        index.set_revision(revision.0);
        Ok((index, skipped))
    }

    /// Whether the user holds anything in memberd's own modules.
    pub fn inspect_user_reaches(&self, user: UserId) -> bool {
        self.read().user_reaches(user, super::is_reserved_module)
    }

    /// How many stored policy rows the index leaves out (see `compile`).
    pub fn skipped_rows(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a committed change made at `revision`.
    pub(super) fn apply<T>(&self, revision: Revision, change: impl FnOnce(&mut Index) -> T) -> T {
        let out = {
            let mut index = self.write();
            let out = change(&mut index);
            index.set_revision(revision.0);
            out
        };
        let mut gap = false;
        self.revision.send_if_modified(|current| {
            let next = revision.0 == *current + 1;
            gap = revision.0 > *current + 1;
            if next {
                *current = revision.0;
            }
            next
        });
        if gap {
            self.gap.notify_one();
        }
        out
    }

    /// Publishes `revision`: every change up to it is in the index.
    fn publish(&self, revision: Revision) {
        self.revision.send_if_modified(|current| {
            let newer = revision.0 > *current;
            if newer {
                *current = revision.0;
            }
            newer
        });
    }

    /// Resolves when a change arrived ahead of the published revision.
    pub async fn gap_seen(&self) {
        self.gap.notified().await;
    }

    /// Brings in what changed after the published revision, as the store
    /// read it at `delta.revision`, and publishes that revision.
    pub fn apply_delta(&self, delta: &PolicyDelta) -> Result<(), ServiceError> {
        {
            let mut index = self.write();
            let ix = &mut *index;
            let live: Vec<&str> = delta
                .roles
                .iter()
                .filter(|(_, exists)| *exists)
                .map(|(name, _)| name.as_str())
                .collect();
            for (name, exists) in &delta.roles {
                if *exists {
                    ix.add_role(name.as_str());
                } else {
                    ix.remove_role(name.as_str());
                }
            }
            // Clearing first: the new edges, added to no stale ones, cannot close a loop.
            for name in &live {
                ix.set_parents(name, &[])?;
            }
            let mut parents: FxHashMap<&str, Vec<&str>> = FxHashMap::default();
            let mut permissions: FxHashMap<&str, Vec<&RolePermission>> = FxHashMap::default();
            for row in &delta.rows {
                match row {
                    PolicyRow::Parent { role, parent } => {
                        parents
                            .entry(role.as_str())
                            .or_default()
                            .push(parent.as_str());
                    }
                    PolicyRow::RolePermission { role, permission } => {
                        permissions
                            .entry(role.as_str())
                            .or_default()
                            .push(permission);
                    }
                    _ => {}
                }
            }
            for name in &live {
                ix.set_parents(name, parents.get(name).map_or(&[][..], Vec::as_slice))?;
                let held = permissions.get(name).map_or(&[][..], Vec::as_slice);
                ix.replace_role_permissions(
                    name,
                    held.iter().map(|p| {
                        (
                            p.module.as_str(),
                            p.action.as_str(),
                            p.scope
                                .as_ref()
                                .map(|s| (s.scope_type.as_str(), s.scope_id.as_str())),
                            p.effect,
                        )
                    }),
                )?;
                for holder in ix.holders(name) {
                    ix.touch_user(holder, delta.revision.0);
                }
            }
            for row in &delta.rows {
                if let PolicyRow::User(user) = row {
                    ix.upsert_user(
                        user.id,
                        user.authentik_sub.as_str(),
                        user.is_active,
                        user.revision.0,
                    );
                    ix.reset_user(user.id);
                }
            }
            for row in &delta.rows {
                if matches!(row, PolicyRow::Grant(_) | PolicyRow::Assignment { .. }) {
                    apply_row(ix, row.clone())?;
                }
            }
            ix.set_revision(delta.revision.0);
        }
        self.publish(delta.revision);
        Ok(())
    }

    /// Reads the index without changing it.
    pub(super) fn inspect<T>(&self, question: impl FnOnce(&Index) -> T) -> T {
        question(&self.read())
    }

    pub fn revision(&self) -> Revision {
        Revision(*self.revision.borrow())
    }

    /// Waits up to `timeout` for the index to reach `revision`.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision.0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn user_id_in(index: &Index, subject: &Subject) -> Option<UserId> {
        match subject {
            Subject::Sub(sub) => index.user_by_sub(sub.as_str()),
            Subject::Id(id) => index.sub_of(*id).map(|_| *id),
        }
    }

    /// An unknown subject may do nothing.
    pub fn check(&self, subject: &Subject, request: &Request<'_>) -> bool {
        let index = self.read();
        Self::user_id_in(&index, subject)
            .is_some_and(|id| index.check(id, request).unwrap_or(false))
    }

    /// Answers many checks under one read lock, in order.
    pub fn check_many<'a>(
        &self,
        checks: impl IntoIterator<Item = (&'a Subject, Request<'a>)>,
    ) -> Vec<bool> {
        let index = self.read();
        checks
            .into_iter()
            .map(|(subject, request)| {
                Self::user_id_in(&index, subject)
                    .is_some_and(|id| index.check(id, &request).unwrap_or(false))
            })
            .collect()
    }

    pub fn snapshot(&self, subject: &Subject) -> Result<EffectiveSnapshot, ServiceError> {
        let index = self.read();
        let id = Self::user_id_in(&index, subject).ok_or(ServiceError::NotFound("user"))?;
        Ok(index.snapshot(id)?)
    }

    pub fn explain(
        &self,
        subject: &Subject,
        request: &Request<'_>,
    ) -> Result<Explanation, ServiceError> {
        let index = self.read();
        let id = Self::user_id_in(&index, subject).ok_or(ServiceError::NotFound("user"))?;
        Ok(index.explain(id, request)?)
    }

    pub fn stats(&self) -> crate::authz::index::IndexStats {
        self.read().stats()
    }

    /// The id of the user a subject names, if the index knows them.
    pub fn user_id(&self, subject: &Subject) -> Option<UserId> {
        Self::user_id_in(&self.read(), subject)
    }

    pub fn subs_of(&self, users: &[UserId]) -> Vec<Arc<str>> {
        let index = self.read();
        let mut subs: Vec<Arc<str>> = users.iter().filter_map(|u| index.sub_of(*u)).collect();
        subs.sort_unstable();
        subs
    }
}

/// One stored row into the index. Rows arrive users and roles first.
fn apply_row(index: &mut Index, row: PolicyRow) -> Result<(), IndexError> {
    match row {
        PolicyRow::User(user) => {
            index.upsert_user(
                user.id,
                user.authentik_sub.as_str(),
                user.is_active,
                user.revision.0,
            );
            Ok(())
        }
        PolicyRow::Role { name } => {
            index.add_role(name.as_str());
            Ok(())
        }
        PolicyRow::Parent { role, parent } => {
            let mut parents: Vec<String> = index
                .parents(role.as_str())
                .iter()
                .map(|p| p.to_string())
                .collect();
            parents.push(parent.to_string());
            let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
            index.set_parents(role.as_str(), &parents)
        }
        PolicyRow::RolePermission { role, permission } => index.set_role_permission(
            role.as_str(),
            permission.module.as_str(),
            permission.action.as_str(),
            permission
                .scope
                .as_ref()
                .map(|s| (s.scope_type.as_str(), s.scope_id.as_str())),
            permission.effect,
        ),
        PolicyRow::Grant(grant) => index.set_direct(
            grant.user_id,
            grant.id,
            grant.permission.scope_type.as_str(),
            grant.permission.scope_id.as_str(),
            grant.permission.module.as_str(),
            grant.permission.action.as_str(),
            grant.effect,
        ),
        PolicyRow::Assignment {
            user_id,
            assignment,
        } => index.assign(
            user_id,
            assignment.role.as_str(),
            &assignment.scope.scope_type,
            assignment.scope.scope_id.as_str(),
        ),
        PolicyRow::Skipped { .. } => Ok(()),
    }
}
