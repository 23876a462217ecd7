//! Reading the audit log: a page of records, the hash chain's state, and
//! which record made a grant or a role assignment that an explanation names.
//! (Writing it happens inside each change's transaction, in the store.)

use crate::audit::Record;
use crate::authz::index::{Contribution, Source};
use crate::model::UserId;
use crate::store::{AuditFilter, ChainReport, Store};

use super::ServiceError;

#[derive(Clone)]
pub struct AuditLog {
    store: Store,
}

impl AuditLog {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records matching `filter`, newest first, at most `limit`.
    pub async fn records(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<Record>, ServiceError> {
        Ok(self.store.audit_records(filter, limit).await?)
    }

    pub async fn verify(&self) -> Result<ChainReport, ServiceError> {
        Ok(self.store.verify_audit_chain().await?)
    }

    /// The record that made `contribution` to `user`'s decision: the grant,
    /// or the assignment of the first role of its chain in its scope.
    pub async fn granted_by(
        &self,
        user: Option<UserId>,
        contribution: &Contribution,
    ) -> Result<Option<Record>, ServiceError> {
        Ok(match (&contribution.source, user) {
            (Source::Direct { grant_id }, _) => self.store.grant_record(*grant_id).await?,
            (
                Source::Role {
                    chain,
                    assigned_scope_type,
                    assigned_scope_id,
                },
                Some(user),
            ) => match chain.first() {
                Some(role) => {
                    self.store
                        .assignment_record(user, role, assigned_scope_type, assigned_scope_id)
                        .await?
                }
                None => None,
            },
            _ => None,
        })
    }
}
