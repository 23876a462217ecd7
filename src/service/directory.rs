//! Users and their direct grants.

use crate::model::{AuthentikSub, Permission, Revision, Snapshot, User, UserUpsert};
use crate::store::{GrantOutcome, RevokeOutcome, Store};

use super::ServiceError;

#[derive(Clone)]
pub struct Directory {
    store: Store,
}

impl Directory {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn upsert_user(&self, upsert: &UserUpsert) -> Result<User, ServiceError> {
        let outcome = self.store.upsert_user(upsert).await?;
        if outcome.changed {
            tracing::info!(user_id = %outcome.user.id, revision = %outcome.user.revision, "user upserted");
        }
        Ok(outcome.user)
    }

    pub async fn snapshot(&self, sub: &AuthentikSub) -> Result<Snapshot, ServiceError> {
        self.store
            .snapshot(sub)
            .await?
            .ok_or(ServiceError::NotFound("user"))
    }

    pub async fn grant(
        &self,
        sub: &AuthentikSub,
        permission: &Permission,
    ) -> Result<GrantOutcome, ServiceError> {
        let outcome = self.store.grant(sub, permission).await?;
        if outcome.created {
            tracing::info!(user_id = %outcome.grant.user_id, revision = %outcome.revision, "permission granted");
        }
        Ok(outcome)
    }

    pub async fn revoke(
        &self,
        sub: &AuthentikSub,
        permission: &Permission,
    ) -> Result<RevokeOutcome, ServiceError> {
        let outcome = self.store.revoke(sub, permission).await?;
        if outcome.revoked {
            tracing::info!(revision = %outcome.revision, "permission revoked");
        }
        Ok(outcome)
    }

    pub async fn revision(&self) -> Result<Revision, ServiceError> {
        Ok(self.store.current_revision().await?)
    }
}
