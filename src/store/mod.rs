//! Persistence. One `Store` serves SQLite (the embedded default) and
//! PostgreSQL (selected by a `postgres://` URL).
//!
//! Each query is written once: `on_pool!` compiles the same body against the
//! pool of either backend, and both backends run one shared test suite. The
//! SQL is the common dialect of both (`$n` placeholders, `ON CONFLICT`,
//! `RETURNING`); what differs (column types, how transactions start) lives
//! in the per-backend migrations and in `Begin`.
//!
//! Every change to the policy bumps the revision as the first statement of
//! its transaction. That takes the write lock up front (no lock upgrade, so
//! no deadlock between concurrent writers) and orders changes by revision.
//! The users whose effective permissions a change touches are stamped with
//! its revision and written to the change log in the same transaction. A
//! change that turns out to change nothing is rolled back, so revisions move
//! only when something did.

pub(crate) mod audit;
mod backup;
mod clients;
mod identities;
mod import;
mod login;
mod roles;
mod rows;
mod rules;
mod scim;
mod sessions;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Pool, Transaction};
use time::OffsetDateTime;

use crate::audit::Event;
use crate::model::{AuthentikSub, Grant, Revision, RoleName, User, UserId};

pub use audit::{AuditFilter, ChainReport};
pub use backup::{Document as ExportDocument, Imported};
pub use identities::Identity;
pub use login::{Attempt, ThrottleState};
pub use rules::RulesOutcome;
pub use scim::{
    GroupChange, GroupPolicyChange, ScimFilter, ScimGroupRow, ScimMemberRow, ScimUserRow,
};
pub use sessions::RefreshOutcome;
pub use users::{ChangesSince, PolicyDelta};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// The change would break an invariant the caller can fix (the message says how).
    #[error("{0}")]
    Refused(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum AnyPool {
    Sqlite(Pool<Sqlite>),
    Postgres(Pool<Postgres>),
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// The SQLite database's file (none in memory or on PostgreSQL): what
    /// processes migrating together lock.
    sqlite_file: Option<std::path::PathBuf>,
}

/// Runs one body against whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            AnyPool::Sqlite($pool) => $body,
            AnyPool::Postgres($pool) => $body,
        }
    };
}
use on_pool;

/// How transactions start on each backend.
trait Begin {
    type Db: sqlx::Database;
    /// SQLite must take the write lock at `BEGIN`: a deferred transaction
    /// that upgrades later can fail with `SQLITE_BUSY` instead of waiting.
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Self::Db>>;
    /// Every statement sees the same moment.
    async fn begin_read(&self) -> sqlx::Result<Transaction<'static, Self::Db>>;

    /// Opens a change's write transaction and bumps the revision first.
    async fn begin_change(&self) -> Result<(Transaction<'static, Self::Db>, i64)>
    where
        <Self::Db as sqlx::Database>::Connection: ChangeTx,
    {
        let mut tx = self.begin_write().await?;
        let revision = tx.bump_revision().await?;
        Ok((tx, revision))
    }

    /// Opens the transaction of a change to one user: bumps the revision
    /// and finds the user (`NotFound` when there is none).
    async fn begin_user_change(
        &self,
        sub: &AuthentikSub,
    ) -> Result<(Transaction<'static, Self::Db>, i64, UserId)>
    where
        <Self::Db as sqlx::Database>::Connection: ChangeTx,
    {
        let (mut tx, revision) = self.begin_change().await?;
        let user = tx.user_id(sub).await?.ok_or(StoreError::NotFound("user"))?;
        Ok((tx, revision, user))
    }
}

impl Begin for Pool<Sqlite> {
    type Db = Sqlite;
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
    async fn begin_read(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.begin().await
    }
}

impl Begin for Pool<Postgres> {
    type Db = Postgres;
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.begin().await
    }
    async fn begin_read(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
    }
}

const BUMP_REVISION: &str = "UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value";

/// Commits a change that changed something; rolls back one that did not,
/// leaving the revision where it was. Answers the revision now current.
async fn finish_change<DB: sqlx::Database>(
    tx: Transaction<'static, DB>,
    revision: i64,
    changed: bool,
) -> Result<i64> {
    if changed {
        tx.commit().await?;
        Ok(revision)
    } else {
        tx.rollback().await?;
        Ok(revision - 1)
    }
}

/// The statements changes share, on a connection of either backend (a
/// transaction derefs to its connection). Each is a plain method: the
/// caller's `?` is where an error leaves it.
pub(crate) trait ChangeTx {
    /// Bumps the revision: the first statement of a change (see above).
    async fn bump_revision(&mut self) -> Result<i64>;

    /// Stamps users with the revision and logs them as changed.
    async fn log_users(&mut self, revision: i64, users: &[UserId]) -> Result<()>;

    /// Stamps and logs every holder of each named role. Run before a
    /// deletion that would take the holders' assignments with it.
    async fn log_role_holders(&mut self, revision: i64, roles: &[&str]) -> Result<()>;

    /// Appends a record of `event`, attributed to the current
    /// `audit::Origin`, at policy revision `revision`; answers its sequence
    /// number. Taking the head row's lock serialises appends until the commit.
    async fn audit(&mut self, revision: Option<i64>, event: Event) -> Result<i64>;

    /// `user:<subject>` for a user id (its id when it has gone).
    async fn user_target(&mut self, user: UserId) -> Result<String>;

    /// The user with this subject.
    async fn user_id(&mut self, sub: &AuthentikSub) -> Result<Option<UserId>>;

    /// The role with this name.
    async fn role_id(&mut self, name: &str) -> Result<Option<uuid::Uuid>>;

    /// Replaces the role's parents; an unknown parent is `NotFound`.
    async fn set_parents(&mut self, role: uuid::Uuid, parents: &[RoleName]) -> Result<()>;

    /// Logs a change to the role's own definition (its parents or
    /// permissions, or its existence), so that other instances reload it.
    async fn log_role(&mut self, revision: i64, name: &str) -> Result<()>;
}

/// The names of roles, as [`ChangeTx::log_role_holders`] takes them.
fn names_of<'a>(roles: impl IntoIterator<Item = &'a RoleName>) -> Vec<&'a str> {
    roles.into_iter().map(RoleName::as_str).collect()
}

/// Implements [`ChangeTx`] for one backend's connection: the same
/// statements on both.
macro_rules! change_tx {
    ($connection:ty) => {
        impl ChangeTx for $connection {
            async fn bump_revision(&mut self) -> Result<i64> {
                Ok(sqlx::query_scalar(BUMP_REVISION).fetch_one(self).await?)
            }

            async fn log_users(&mut self, revision: i64, users: &[UserId]) -> Result<()> {
                for user in users {
                    sqlx::query("UPDATE users SET revision = $1 WHERE id = $2")
                        .bind(revision)
                        .bind(user.0)
                        .execute(&mut *self)
                        .await?;
                    sqlx::query(
                        "INSERT INTO change_log (revision, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(revision)
                    .bind(user.0)
                    .execute(&mut *self)
                    .await?;
                }
                Ok(())
            }

            async fn log_role_holders(&mut self, revision: i64, roles: &[&str]) -> Result<()> {
                for role in roles {
                    sqlx::query(
                        "UPDATE users SET revision = $1 WHERE id IN \
                         (SELECT a.user_id FROM role_assignments a JOIN roles r ON r.id = a.role_id WHERE r.name = $2)",
                    )
                    .bind(revision)
                    .bind(role)
                    .execute(&mut *self)
                    .await?;
                    sqlx::query(
                        "INSERT INTO change_log (revision, user_id) \
                         SELECT DISTINCT $1, a.user_id FROM role_assignments a JOIN roles r ON r.id = a.role_id \
                         WHERE r.name = $2 ON CONFLICT DO NOTHING",
                    )
                    .bind(revision)
                    .bind(role)
                    .execute(&mut *self)
                    .await?;
                }
                Ok(())
            }

            async fn audit(&mut self, revision: Option<i64>, event: Event) -> Result<i64> {
                let (seq, prev_hash): (i64, String) = sqlx::query_as(audit::NEXT)
                    .fetch_one(&mut *self)
                    .await?;
                let record = audit::record(seq, prev_hash, revision, event);
                audit::bind_insert!(sqlx::query(audit::INSERT), record)
                    .execute(&mut *self)
                    .await?;
                sqlx::query(audit::SET_HEAD)
                    .bind(&record.hash)
                    .execute(&mut *self)
                    .await?;
                Ok(seq)
            }

            async fn user_target(&mut self, user: UserId) -> Result<String> {
                let sub: Option<String> =
                    sqlx::query_scalar("SELECT authentik_sub FROM users WHERE id = $1")
                        .bind(user.0)
                        .fetch_optional(self)
                        .await?;
                Ok(format!("user:{}", sub.unwrap_or_else(|| user.0.to_string())))
            }

            async fn user_id(&mut self, sub: &AuthentikSub) -> Result<Option<UserId>> {
                let id: Option<uuid::Uuid> =
                    sqlx::query_scalar("SELECT id FROM users WHERE authentik_sub = $1")
                        .bind(sub.as_str())
                        .fetch_optional(self)
                        .await?;
                Ok(id.map(UserId))
            }

            async fn role_id(&mut self, name: &str) -> Result<Option<uuid::Uuid>> {
                Ok(sqlx::query_scalar("SELECT id FROM roles WHERE name = $1")
                    .bind(name)
                    .fetch_optional(self)
                    .await?)
            }

            async fn set_parents(&mut self, role: uuid::Uuid, parents: &[RoleName]) -> Result<()> {
                sqlx::query("DELETE FROM role_parents WHERE role_id = $1")
                    .bind(role)
                    .execute(&mut *self)
                    .await?;
                for parent in parents {
                    let parent = self
                        .role_id(parent.as_str())
                        .await?
                        .ok_or(StoreError::NotFound("role"))?;
                    sqlx::query(
                        "INSERT INTO role_parents (role_id, parent_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    )
                    .bind(role)
                    .bind(parent)
                    .execute(&mut *self)
                    .await?;
                }
                Ok(())
            }

            async fn log_role(&mut self, revision: i64, name: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO role_change_log (revision, role_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(revision)
                .bind(name)
                .execute(self)
                .await?;
                Ok(())
            }
        }
    };
}
change_tx!(sqlx::SqliteConnection);
change_tx!(sqlx::PgConnection);

/// Timestamps are kept to the microsecond, PostgreSQL's precision, so that a
/// value reads back equal to what was written on either backend.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .expect("a truncated nanosecond is in range")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertOutcome {
    pub user: User,
    pub changed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantOutcome {
    pub grant: Grant,
    pub created: bool,
    /// Created, or its effect changed.
    pub changed: bool,
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// The grant that was removed, if there was one.
    pub revoked: Option<Grant>,
    pub revision: Revision,
}

/// The result of a change that may have changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub changed: bool,
    pub revision: Revision,
}

/// One row of the policy, as `load_policy` streams it.
#[derive(Debug, Clone)]
pub enum PolicyRow {
    User(User),
    Role {
        name: crate::model::RoleName,
    },
    Parent {
        role: crate::model::RoleName,
        parent: crate::model::RoleName,
    },
    RolePermission {
        role: crate::model::RoleName,
        permission: crate::model::RolePermission,
    },
    Grant(LoadedGrant),
    Assignment {
        user_id: UserId,
        assignment: crate::model::RoleAssignment,
    },
    /// A stored row memberd no longer accepts (written by an older version,
    /// or edited by hand): the policy loads without it.
    Skipped {
        table: &'static str,
        reason: String,
    },
}

/// A decoded policy row, or the row skipped with why.
fn policy_row<T>(
    table: &'static str,
    decoded: Result<T>,
    row: impl FnOnce(T) -> PolicyRow,
) -> PolicyRow {
    match decoded {
        Ok(value) => row(value),
        Err(e) => PolicyRow::Skipped {
            table,
            reason: e.to_string(),
        },
    }
}

/// A direct grant as the index needs it (no timestamps: decoding a million of
/// them would dominate the load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedGrant {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub permission: crate::model::Permission,
    pub effect: crate::model::Effect,
}

/// An exclusive `flock` on the SQLite file, released when dropped (the
/// descriptor closes).
struct MigrationLock(#[allow(dead_code)] std::fs::File);

impl MigrationLock {
    /// The lock on the store's SQLite file; none to take in memory or on
    /// PostgreSQL.
    async fn take_for(file: &Option<std::path::PathBuf>) -> Result<Option<Self>> {
        match file {
            Some(path) => Ok(Some(Self::take(path.clone()).await?)),
            None => Ok(None),
        }
    }

    async fn take(path: std::path::PathBuf) -> Result<Self> {
        tokio::task::spawn_blocking(move || {
            use std::os::fd::AsRawFd;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            // SAFETY: flock on a descriptor this function owns; it blocks
            // until the lock is ours.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(MigrationLock(file))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|locked| locked)
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))
    }
}

/// Whether a pooled connection may be handed out again.
///
/// When a disk fills, SQLite rolls the transaction back by itself as a
/// statement or `COMMIT` fails; the `ROLLBACK` sqlx then sends finds no
/// transaction and fails, and sqlx keeps counting the connection as inside
/// one, so every later `BEGIN` on it failed ("begin_with at non-zero
/// transaction depth") long after the disk had room again. By the time a
/// connection is acquired the pool has flushed its pending rollback (the
/// ping on release), so one still inside a transaction is broken: the pool
/// closes it and opens a fresh one.
fn left_clean(conn: &mut impl Connection) -> bool {
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::debug!("closing a connection left inside a failed transaction");
    }
    clean
}

impl Store {
    /// Opens the database named by `url`, creating an SQLite file if it is missing.
    pub async fn connect(url: &str) -> Result<Self> {
        let mut sqlite_file = None;
        let pool = if url.starts_with("sqlite:") {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            if !in_memory {
                sqlite_file = Some(options.get_filename().to_path_buf());
            }
            // Every connection to `:memory:` is a database of its own: keep one.
            let max = if in_memory { 1 } else { 8 };
            // The first connection turns a new file to WAL, which takes an
            // exclusive lock SQLite does not wait for: processes starting
            // together take turns (the lock `migrate` takes too).
            let _first = MigrationLock::take_for(&sqlite_file).await?;
            AnyPool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max)
                    .min_connections(u32::from(in_memory))
                    .idle_timeout(if in_memory {
                        None
                    } else {
                        Some(Duration::from_secs(600))
                    })
                    .max_lifetime(if in_memory {
                        None
                    } else {
                        Some(Duration::from_secs(1800))
                    })
                    .before_acquire(|conn, _| Box::pin(async move { Ok(left_clean(conn)) }))
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            AnyPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .before_acquire(|conn, _| Box::pin(async move { Ok(left_clean(conn)) }))
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        Ok(Self { pool, sqlite_file })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            AnyPool::Sqlite(_) => Backend::Sqlite,
            AnyPool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Brings the schema up to date. A database migrated by a newer memberd
    /// is refused rather than run with a schema this build does not know.
    ///
    /// Processes starting together migrate one at a time: on PostgreSQL
    /// under sqlx's advisory lock, on SQLite under an exclusive `flock` of
    /// the database file (SQLite's own locks are `fcntl` locks, which
    /// `flock` does not touch), so each finds the others' work done.
    pub async fn migrate(&self) -> Result<()> {
        let _lock = MigrationLock::take_for(&self.sqlite_file).await?;
        let result = match &self.pool {
            AnyPool::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await,
            AnyPool::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await,
        };
        match result {
            Err(sqlx::migrate::MigrateError::VersionMissing(version)) => {
                Err(StoreError::Corrupt(format!(
                    "the database has migration {version}, which this memberd does not know: \
                     it was migrated by a newer version; run that version (or newer)"
                )))
            }
            other => Ok(other?),
        }
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    /// Open connections, and how many of them are idle.
    pub fn pool_stats(&self) -> (u32, usize) {
        on_pool!(self, |pool| (pool.size(), pool.num_idle()))
    }

    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Notifications of revisions committed by any process (PostgreSQL's
    /// `LISTEN`; see migration 0007). `None` on SQLite, which others poll.
    pub async fn listen_revisions(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        match &self.pool {
            AnyPool::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen("memberd_revision").await?;
                Ok(Some(listener))
            }
            AnyPool::Sqlite(_) => Ok(None),
        }
    }

    pub async fn current_revision(&self) -> Result<Revision> {
        let value: i64 = on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT value FROM revision WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(Revision(value))
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Stores `value` unless `key` has one already; true when this call stored it.
    /// Two processes starting at once agree on one value this way.
    pub async fn insert_setting_if_absent(&self, key: &str, value: &str) -> Result<bool> {
        let sql = "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
        let affected = on_pool!(self, |pool| sqlx::query(sql)
            .bind(key)
            .bind(value)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(affected == 1)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(super::now().nanosecond() % 1_000, 0);
    }
}
