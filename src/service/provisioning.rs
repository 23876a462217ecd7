//! SCIM provisioning's rules, apart from SCIM's wire format (`http::scim`):
//! which users a SCIM client may see and change, how a provisioned user is
//! named, and what a group's membership does (a group linked to a role
//! makes its members hold the role everywhere). Each write to a group is
//! one transaction.

use uuid::Uuid;

use super::auth::Auth;
use super::directory::Directory;
use super::{Authority, ServiceError};
use crate::model::{ApiClient, AuthentikSub, DisplayName, Email, RoleName, UserId, UserUpsert};
use crate::store::{
    GroupChange, ScimFilter, ScimGroupRow, ScimMemberRow, ScimUserRow, Store, StoreError,
};

/// The attributes of a User memberd keeps, as a provider gave them.
#[derive(Debug, Default, Clone)]
pub struct UserFields {
    pub user_name: Option<String>,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub active: Option<bool>,
}

impl UserFields {
    fn upsert(&self, sub: AuthentikSub) -> Result<UserUpsert, ServiceError> {
        let invalid = |e: crate::model::ParseError| ServiceError::Invalid(e.to_string());
        Ok(UserUpsert {
            authentik_sub: sub,
            email: self
                .email
                .clone()
                .map(Email::parse)
                .transpose()
                .map_err(invalid)?,
            display_name: self
                .display_name
                .clone()
                .map(DisplayName::parse)
                .transpose()
                .map_err(invalid)?,
            is_active: self.active,
        })
    }
}

/// A Group as a POST or PUT gives it: every attribute memberd keeps.
#[derive(Debug, Clone)]
pub struct GroupFields {
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: Vec<UserId>,
}

/// One operation of a group's PATCH, in the order given.
#[derive(Debug, Clone)]
pub enum GroupOperation {
    AddMembers(Vec<UserId>),
    RemoveMembers(Vec<UserId>),
    ReplaceMembers(Vec<UserId>),
    Rename(String),
}

#[derive(Clone)]
pub struct Provisioning {
    store: Store,
    directory: Directory,
    auth: Auth,
}

impl Provisioning {
    pub fn new(store: Store, directory: Directory, auth: Auth) -> Self {
        Self {
            store,
            directory,
            auth,
        }
    }

    /// A user this client provisioned. Others' users do not exist for it,
    /// so a SCIM client can neither read nor change them. A user
    /// provisioned before ownership was recorded is adopted by the first
    /// client to touch it, unless it is an operator of memberd.
    pub async fn user(&self, client: &ApiClient, id: UserId) -> Result<ScimUserRow, ServiceError> {
        let missing = || ServiceError::NotFound("user");
        let row = self.store.scim_user(id).await?.ok_or_else(missing)?;
        match &row.client_key {
            Some(owner) if *owner == client.client_key => Ok(row),
            Some(_) => Err(missing()),
            None => {
                let sub = AuthentikSub::parse(row.authentik_sub.clone()).map_err(|_| missing())?;
                self.auth
                    .guard_operator(Authority::Delegated, &sub)
                    .await
                    .map_err(|_| missing())?;
                Ok(row)
            }
        }
    }

    /// One page of the client's users, and how many match.
    pub async fn users(
        &self,
        client: &ApiClient,
        filter: &ScimFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<ScimUserRow>), ServiceError> {
        Ok(self
            .store
            .scim_users(Some(&client.client_key), filter, offset, limit)
            .await?)
    }

    /// Provisions a new user. The provider's stable id (Authentik sends the
    /// user's uid as externalId) is the subject its tokens carry; without
    /// one, the userName. A SCIM client never takes over a user that
    /// exists (an operator, a user another client or a provider made).
    pub async fn create_user(
        &self,
        client: &ApiClient,
        fields: &UserFields,
    ) -> Result<ScimUserRow, ServiceError> {
        let user_name = fields
            .user_name
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ServiceError::Invalid("userName is required".into()))?;
        let taken = ScimFilter::UserName(user_name.clone());
        if self.store.scim_users(None, &taken, 0, 1).await?.0 > 0 {
            return Err(ServiceError::Conflict("user with this userName"));
        }
        let sub = fields
            .external_id
            .clone()
            .unwrap_or_else(|| user_name.clone());
        let sub = AuthentikSub::parse(sub).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        if sub.is_reserved() || self.store.user_by_sub(&sub).await?.is_some() {
            return Err(ServiceError::Conflict("user with this externalId"));
        }
        let id = self.save(client, None, sub, fields, &user_name).await?;
        self.user(client, id).await
    }

    /// Applies the fields to a provisioned user (its userName kept unless
    /// given; a deactivated user is signed out) and reads it back.
    pub async fn update_user(
        &self,
        client: &ApiClient,
        row: &ScimUserRow,
        fields: &UserFields,
    ) -> Result<ScimUserRow, ServiceError> {
        let user_name = fields
            .user_name
            .clone()
            .unwrap_or_else(|| row.user_name.clone());
        let sub = AuthentikSub::parse(row.authentik_sub.clone())
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let id = UserId(row.user_id);
        self.save(client, Some(id), sub, fields, &user_name).await?;
        self.user(client, id).await
    }

    /// Writes the fields to the user. The SCIM record goes first: a
    /// userName another user has is refused before anything of the user
    /// changes.
    async fn save(
        &self,
        client: &ApiClient,
        existing: Option<UserId>,
        sub: AuthentikSub,
        fields: &UserFields,
        user_name: &str,
    ) -> Result<UserId, ServiceError> {
        let upsert = fields.upsert(sub)?;
        let external_id = fields.external_id.as_deref();
        if let Some(id) = existing {
            self.record(client, id, user_name, external_id).await?;
        }
        let user = self.auth.upsert_user(&upsert).await?;
        if existing.is_none() {
            self.record(client, user.id, user_name, external_id).await?;
        }
        Ok(user.id)
    }

    async fn record(
        &self,
        client: &ApiClient,
        id: UserId,
        user_name: &str,
        external_id: Option<&str>,
    ) -> Result<(), ServiceError> {
        match self
            .store
            .put_scim_user(&client.client_key, id, user_name, external_id)
            .await
        {
            Err(StoreError::AlreadyExists(_)) => {
                Err(ServiceError::Conflict("user with this userName"))
            }
            other => Ok(other?),
        }
    }

    pub async fn group(&self, id: Uuid) -> Result<ScimGroupRow, ServiceError> {
        self.store
            .scim_group(id)
            .await?
            .ok_or(ServiceError::NotFound("group"))
    }

    /// Groups by displayName; with `display_name`, that one (any case).
    pub async fn groups(
        &self,
        display_name: Option<&str>,
    ) -> Result<Vec<ScimGroupRow>, ServiceError> {
        Ok(self.store.scim_groups(display_name).await?)
    }

    pub async fn members(&self, group: Uuid) -> Result<Vec<ScimMemberRow>, ServiceError> {
        Ok(self.store.scim_members(group).await?)
    }

    pub async fn create_group(
        &self,
        client: &ApiClient,
        fields: &GroupFields,
    ) -> Result<ScimGroupRow, ServiceError> {
        self.own_users(client, &fields.members).await?;
        let id = Uuid::new_v4();
        let change = GroupChange {
            create: Some((&fields.display_name, fields.external_id.as_deref())),
            add: fields.members.clone(),
            ..GroupChange::default()
        };
        self.write(id, &change).await?;
        self.group(id).await
    }

    /// Replaces the group's name, externalId and members (a group that is
    /// not there is `NotFound` from the write).
    pub async fn replace_group(
        &self,
        client: &ApiClient,
        id: Uuid,
        fields: &GroupFields,
    ) -> Result<ScimGroupRow, ServiceError> {
        self.own_users(client, &fields.members).await?;
        let mut change = membership(&self.member_ids(id).await?, &fields.members);
        change.rename = Some((&fields.display_name, fields.external_id.as_deref()));
        self.write(id, &change).await?;
        self.group(id).await
    }

    /// Applies the operations to the group in order, all or none.
    pub async fn patch_group(
        &self,
        client: &ApiClient,
        group: &ScimGroupRow,
        operations: &[GroupOperation],
    ) -> Result<ScimGroupRow, ServiceError> {
        let id = group.id;
        let current = self.member_ids(id).await?;
        let mut members = current.clone();
        let mut name = None;
        for operation in operations {
            match operation {
                GroupOperation::AddMembers(users) => {
                    self.own_users(client, users).await?;
                    join(&mut members, users);
                }
                GroupOperation::RemoveMembers(users) => {
                    members.retain(|member| !users.contains(member));
                }
                GroupOperation::ReplaceMembers(users) => {
                    self.own_users(client, users).await?;
                    members.clear();
                    join(&mut members, users);
                }
                GroupOperation::Rename(to) => name = Some(to.as_str()),
            }
        }
        let mut change = membership(&current, &members);
        change.rename = name.map(|name| (name, group.external_id.as_deref()));
        self.write(id, &change).await?;
        self.group(id).await
    }

    /// Deletes the group; a linked role is taken from its members.
    pub async fn delete_group(&self, id: Uuid) -> Result<(), ServiceError> {
        let change = GroupChange {
            delete: true,
            ..GroupChange::default()
        };
        self.write(id, &change).await
    }

    /// Links the group to a role (or unlinks it): its members hold the role
    /// everywhere, and later membership changes carry it along. Answers the
    /// group as linked and its number of members.
    pub async fn link_role(
        &self,
        id: Uuid,
        role: Option<&RoleName>,
    ) -> Result<(ScimGroupRow, usize), ServiceError> {
        if let Some(role) = role {
            self.directory.role(role).await?;
        }
        let change = GroupChange {
            link: Some(role),
            ..GroupChange::default()
        };
        self.write(id, &change).await?;
        let group = self.group(id).await?;
        let members = self.member_ids(id).await?.len();
        tracing::info!(group = %group.display_name, role = ?group.role_name, "SCIM group linked");
        Ok((group, members))
    }

    async fn write(&self, id: Uuid, change: &GroupChange<'_>) -> Result<(), ServiceError> {
        match self.directory.change_scim_group(id, change).await {
            Err(ServiceError::Store(StoreError::AlreadyExists(_))) => {
                Err(ServiceError::Conflict("group with this displayName"))
            }
            other => other,
        }
    }

    async fn member_ids(&self, group: Uuid) -> Result<Vec<UserId>, ServiceError> {
        Ok(self
            .members(group)
            .await?
            .iter()
            .map(|m| UserId(m.user_id))
            .collect())
    }

    /// Members must be users this client provisioned: a group linked to a
    /// role must not become a way to give that role to anyone else (an
    /// operator).
    async fn own_users(&self, client: &ApiClient, users: &[UserId]) -> Result<(), ServiceError> {
        for user in users {
            match self.user(client, *user).await {
                Err(ServiceError::NotFound(_)) => {
                    return Err(ServiceError::Invalid(format!("no user {}", user.0)));
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
}

/// The change that makes a group's members `current` exactly `wanted`.
fn membership(current: &[UserId], wanted: &[UserId]) -> GroupChange<'static> {
    GroupChange {
        remove: current
            .iter()
            .filter(|u| !wanted.contains(u))
            .copied()
            .collect(),
        add: wanted
            .iter()
            .filter(|u| !current.contains(u))
            .copied()
            .collect(),
        ..GroupChange::default()
    }
}

/// Adds the users who are not members yet, in the order given.
fn join(members: &mut Vec<UserId>, users: &[UserId]) {
    for user in users {
        if !members.contains(user) {
            members.push(*user);
        }
    }
}
