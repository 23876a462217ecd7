//! What memberd does, apart from how it is asked (HTTP, CLI) and where it
//! keeps things (store). Handlers and commands call these; these call the store.

pub mod access;
pub mod audit_log;
pub mod auth;
pub mod authentik;
pub mod casbin;
pub mod clients;
pub mod directory;
pub mod follow;
pub mod health;
pub mod menus;
pub mod oidc;
pub mod provisioning;
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
    /// One field of the request is at fault.
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    /// A module or action the strict catalog does not declare.
    #[error("{0}")]
    Undeclared(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller may not give or take what it asked to (see `Authority`).
    #[error("{0}")]
    Forbidden(String),
    /// A dependency cannot be reached: retryable.
    #[error("{dependency} is unavailable: {cause}")]
    Unavailable {
        dependency: Dependency,
        cause: String,
    },
}

/// What memberd needs from outside the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Database,
    Redis,
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Database => "the database",
            Self::Redis => "Redis",
        })
    }
}

impl Dependency {
    /// Logs an outage once as it is first seen, then at most once a minute
    /// with the number of requests it failed meanwhile: a full disk under
    /// load failed thousands of requests, each logging the same line.
    pub fn log_unavailable(self, cause: &dyn std::fmt::Display) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST_LOGGED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
        static SILENCED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
        const EVERY_SECONDS: u64 = 60;
        let slot = self as usize;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = LAST_LOGGED[slot].load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= EVERY_SECONDS
            && LAST_LOGGED[slot]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if due {
            let failed_since = SILENCED[slot].swap(0, Ordering::Relaxed);
            tracing::warn!(
                dependency = %self,
                %cause,
                failed_since_last_logged = failed_since,
                "a dependency is unavailable; answering 503 until it is back"
            );
        } else {
            SILENCED[slot].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether the database could not be reached at all (as opposed to refusing
/// or failing a statement): the client may retry.
fn is_connection_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_storage_fault(&code)),
        _ => false,
    }
}

/// PostgreSQL's SQLSTATEs (five characters) for a lost or refused
/// connection (class 08), an administrator's shutdown (57P) or a database
/// that is gone (3D000); SQLite's result codes (numbers, the primary code in
/// the low byte) for a full disk, an I/O error, a read-only or unopenable file.
fn is_storage_fault(code: &str) -> bool {
    if code.len() == 5 {
        return code.starts_with("08") || code.starts_with("57P") || code == "3D000";
    }
    code.parse::<u32>()
        .is_ok_and(|n| matches!(n & 0xff, 8 | 10 | 13 | 14))
}

/// How far the caller of a change to the policy may reach.
///
/// memberd's own authority (the `memberd` module: administering memberd,
/// the console's pages) is not data that any writer may hand out: only a
/// caller that holds it may give it, take it, or change a role that carries
/// it. Everything else in the policy is open to any caller allowed to write
/// it (the API client's capability, checked at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// Holds memberd's own authority: the internal secret, the CLI, an
    /// operator with `memberd/admin`, an API client given `admin`.
    Full,
    /// May change the policy, but not memberd's own authority, nor the
    /// users behind local accounts (the operators).
    Delegated,
}

impl Authority {
    pub(crate) fn require_full(self, what: impl FnOnce() -> String) -> Result<(), ServiceError> {
        match self {
            Self::Full => Ok(()),
            Self::Delegated => Err(ServiceError::Forbidden(format!(
                "{}: only a holder of memberd/admin (an API client with the admin capability) may do that",
                what()
            ))),
        }
    }
}

/// Modules that carry memberd's own authority: `memberd` and anything under it.
pub fn is_reserved_module(module: &str) -> bool {
    module == crate::service::auth::ADMIN_MODULE
        || module
            .strip_prefix(crate::service::auth::ADMIN_MODULE)
            .is_some_and(|rest| rest.starts_with([':', '.', '/']))
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ServiceError::NotFound(what),
            StoreError::AlreadyExists(what) => ServiceError::Conflict(what),
            StoreError::Refused(message) => ServiceError::Invalid(message),
            StoreError::Database(e) if is_connection_failure(&e) => ServiceError::Unavailable {
                dependency: Dependency::Database,
                cause: e.to_string(),
            },
            other => ServiceError::Store(other),
        }
    }
}
