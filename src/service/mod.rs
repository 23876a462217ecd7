//! What memberd does, apart from how it is asked (HTTP, CLI) and where it
//! keeps things (store). Handlers and commands call these; these call the store.

pub mod access;
pub mod auth;
pub mod authentik;
pub mod casbin;
pub mod clients;
pub mod directory;
pub mod follow;
pub mod menus;
pub mod oidc;
pub mod sessions;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("{0}")]
    Invalid(String),
    /// A module or action the strict catalog does not declare.
    #[error("{0}")]
    Undeclared(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ServiceError::NotFound(what),
            StoreError::AlreadyExists(what) => ServiceError::Conflict(what),
            StoreError::Refused(message) => ServiceError::Invalid(message),
            other => ServiceError::Store(other),
        }
    }
}
