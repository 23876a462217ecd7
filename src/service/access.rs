//! Answering questions from the compiled index: checks, snapshots,
//! explanations. Nothing here touches the database.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::ServiceError;
use crate::authz::index::{EffectiveSnapshot, Explanation, Index, IndexError, Request};
use crate::model::{AuthentikSub, Revision, UserId};
use crate::store::{PolicyRow, Store};

/// Who a question is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Sub(AuthentikSub),
    Id(UserId),
}

/// The index, shared: checks take the read lock for nanoseconds, changes the
/// write lock for microseconds. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    index: Arc<RwLock<Index>>,
    revision: watch::Sender<i64>,
}

impl From<IndexError> for ServiceError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::UnknownUser => ServiceError::NotFound("user"),
            IndexError::UnknownRole(_) => ServiceError::NotFound("role"),
            IndexError::Cycle(role) => {
                ServiceError::Invalid(format!("role {role} would inherit from itself"))
            }
            IndexError::Pattern(e) => ServiceError::Invalid(e.to_string()),
        }
    }
}

impl Engine {
    /// Compiles the whole policy from the store.
    pub async fn load(store: &Store) -> Result<Self, ServiceError> {
        let mut index = Index::new();
        let mut failure: Option<IndexError> = None;
        let revision = store
            .load_policy(|row| {
                if let Err(e) = apply_row(&mut index, row) {
                    failure.get_or_insert(e);
                }
                Ok(())
            })
            .await?;
        if let Some(e) = failure {
            return Err(ServiceError::Internal(format!(
                "the stored policy does not compile: {e}"
            )));
        }
        index.set_revision(revision.0);
        let (tx, _) = watch::channel(revision.0);
        Ok(Self {
            index: Arc::new(RwLock::new(index)),
            revision: tx,
        })
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
        self.revision.send_if_modified(|current| {
            let newer = revision.0 > *current;
            if newer {
                *current = revision.0;
            }
            newer
        });
        out
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
    }
}
