//! Persistence. One `Store` serves SQLite (the embedded default) and
//! PostgreSQL (selected by a `postgres://` URL).
//!
//! Each query is written once: `on_pool!` compiles the same body against the
//! pool of either backend, and both backends run one shared test suite. The
//! SQL is the common dialect of both (`$n` placeholders, `ON CONFLICT`,
//! `RETURNING`); what differs (column types, how a write transaction starts)
//! lives in the per-backend migrations and in `BeginWrite`.
//!
//! Every change to users or grants bumps the revision as the first statement
//! of its transaction. That takes the write lock up front (no lock upgrade, so
//! no deadlock between concurrent writers) and orders changes by revision. A
//! change that turns out to change nothing is rolled back, so revisions move
//! only when something did.

mod rows;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Pool, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{
    ApiClient, AuthentikSub, ClientStatus, Grant, Permission, Revision, Snapshot, User, UserUpsert,
};
use rows::{ClientRow, GrantRow, SnapshotRow, UserRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
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

/// Starts a transaction that will write. SQLite must take the write lock at
/// `BEGIN`: a deferred transaction that upgrades later can fail with
/// `SQLITE_BUSY` instead of waiting for the other writer.
trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Self::Db>>;
}

impl BeginWrite for Pool<Sqlite> {
    type Db = Sqlite;
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for Pool<Postgres> {
    type Db = Postgres;
    async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.begin().await
    }
}

const BUMP_REVISION: &str = "UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value";
// Column lists as macros: sqlx takes only static SQL, which `concat!` builds.
macro_rules! user_columns {
    () => {
        "id, authentik_sub, email, display_name, is_active, revision, created_at, updated_at"
    };
}
macro_rules! client_columns {
    () => {
        "client_key, name, api_key_hash, status, expires_at, allowed_origins, allowed_ips, \
         allowed_paths, rate_limit_per_minute, created_at, last_used_at"
    };
}

/// Opens the transaction of a change to one user's grants: bumps the revision
/// first (taking the write lock) and finds the user. An unknown user returns
/// `NotFound` from the enclosing function, which rolls the transaction back.
/// Evaluates to `(tx, revision, user_id)`.
macro_rules! begin_user_change {
    ($pool:expr, $sub:expr) => {{
        let mut tx = $pool.begin_write().await?;
        let revision: i64 = sqlx::query_scalar(BUMP_REVISION)
            .fetch_one(&mut *tx)
            .await?;
        let user_id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM users WHERE authentik_sub = $1")
                .bind($sub.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(user_id) = user_id else {
            return Err(StoreError::NotFound("user"));
        };
        (tx, revision, user_id)
    }};
}

/// Ends a change begun by `begin_user_change!`: when it changed something, the
/// user is stamped with its revision and it commits; otherwise it rolls back,
/// leaving the revision where it was. Evaluates to the revision now current.
macro_rules! finish_user_change {
    ($tx:ident, $revision:expr, $user_id:expr, $changed:expr) => {{
        if $changed {
            sqlx::query("UPDATE users SET revision = $1 WHERE id = $2")
                .bind($revision)
                .bind($user_id)
                .execute(&mut *$tx)
                .await?;
            $tx.commit().await?;
            $revision
        } else {
            $tx.rollback().await?;
            $revision - 1
        }
    }};
}

/// Binds a permission's four columns, in order, to the next four placeholders.
macro_rules! bind_permission {
    ($query:expr, $permission:expr) => {
        $query
            .bind($permission.scope_type.as_str())
            .bind($permission.scope_id.as_str())
            .bind($permission.module.as_str())
            .bind($permission.action.as_str())
    };
}

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
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokeOutcome {
    pub revoked: bool,
    pub revision: Revision,
}

impl Store {
    /// Opens the database named by `url`, creating an SQLite file if it is missing.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = if url.starts_with("sqlite:") {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            // Every connection to `:memory:` is a database of its own: keep one.
            let max = if in_memory { 1 } else { 8 };
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
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            AnyPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        Ok(Self { pool })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            AnyPool::Sqlite(_) => Backend::Sqlite,
            AnyPool::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            AnyPool::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            AnyPool::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub async fn current_revision(&self) -> Result<Revision> {
        let value: i64 = on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT value FROM revision WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(Revision(value))
    }

    pub async fn user_by_sub(&self, sub: &AuthentikSub) -> Result<Option<User>> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE authentik_sub = $1"
        );
        let row: Option<UserRow> = on_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(sub.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(User::try_from).transpose()
    }

    /// Creates the user or updates the fields given. Safe under concurrent
    /// calls for one subject: the unique subject and `ON CONFLICT` make the
    /// second caller update the row the first one created.
    pub async fn upsert_user(&self, upsert: &UserUpsert) -> Result<UpsertOutcome> {
        // Other systems upsert on every sign-in; most calls change nothing and
        // should not take the write lock nor move the revision.
        if let Some(user) = self.user_by_sub(&upsert.authentik_sub).await? {
            if upsert.is_noop_for(&user) {
                return Ok(UpsertOutcome {
                    user,
                    changed: false,
                });
            }
        }
        const SELECT: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE authentik_sub = $1"
        );
        const UPSERT: &str = concat!(
            "INSERT INTO users (id, authentik_sub, email, display_name, is_active, revision, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, COALESCE($5, TRUE), $6, $7, $7) \
             ON CONFLICT (authentik_sub) DO UPDATE SET \
                 email = COALESCE($3, users.email), \
                 display_name = COALESCE($4, users.display_name), \
                 is_active = COALESCE($5, users.is_active), \
                 revision = $6, updated_at = $7 \
             RETURNING ",
            user_columns!()
        );
        let at = now();
        let outcome = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let revision: i64 = sqlx::query_scalar(BUMP_REVISION)
                .fetch_one(&mut *tx)
                .await?;
            // A concurrent caller may have written the same values meanwhile.
            let existing: Option<UserRow> = sqlx::query_as(SELECT)
                .bind(upsert.authentik_sub.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let existing = existing.map(User::try_from).transpose()?;
            match existing {
                Some(user) if upsert.is_noop_for(&user) => {
                    tx.rollback().await?;
                    UpsertOutcome {
                        user,
                        changed: false,
                    }
                }
                _ => {
                    let row: UserRow = sqlx::query_as(UPSERT)
                        .bind(Uuid::new_v4())
                        .bind(upsert.authentik_sub.as_str())
                        .bind(upsert.email.as_ref().map(|e| e.as_str()))
                        .bind(upsert.display_name.as_ref().map(|d| d.as_str()))
                        .bind(upsert.is_active)
                        .bind(revision)
                        .bind(at)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    UpsertOutcome {
                        user: User::try_from(row)?,
                        changed: true,
                    }
                }
            }
        });
        Ok(outcome)
    }

    /// The user and their direct grants, read in one statement so that both
    /// come from the same moment.
    pub async fn snapshot(&self, sub: &AuthentikSub) -> Result<Option<Snapshot>> {
        let sql = "SELECT u.id, u.authentik_sub, u.email, u.display_name, u.is_active, u.revision, \
                          u.created_at, u.updated_at, p.scope_type, p.scope_id, p.module, p.action \
                   FROM users u LEFT JOIN permissions p ON p.user_id = u.id \
                   WHERE u.authentik_sub = $1";
        let rows: Vec<SnapshotRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(sub.as_str())
            .fetch_all(pool)
            .await?);
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let user = User::try_from(first.user.clone())?;
        let mut permissions = rows
            .into_iter()
            .filter_map(SnapshotRow::permission)
            .collect::<Result<Vec<_>>>()?;
        // Sorted here, not by SQL: collations differ between backends.
        permissions.sort_unstable();
        permissions.dedup();
        Ok(Some(Snapshot { user, permissions }))
    }

    /// Grants `permission` to the user; granting what they already hold is not an error.
    pub async fn grant(&self, sub: &AuthentikSub, permission: &Permission) -> Result<GrantOutcome> {
        let insert = "INSERT INTO permissions (id, user_id, scope_type, scope_id, module, action, created_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7) \
                      ON CONFLICT (user_id, scope_type, scope_id, module, action) DO NOTHING";
        let existing = "SELECT id, user_id, scope_type, scope_id, module, action, created_at FROM permissions \
                        WHERE user_id = $1 AND scope_type = $2 AND scope_id = $3 AND module = $4 AND action = $5";
        let at = now();
        let id = Uuid::new_v4();
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision, user_id) = begin_user_change!(pool, sub);
            let inserted = bind_permission!(sqlx::query(insert).bind(id).bind(user_id), permission)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            let row: GrantRow =
                bind_permission!(sqlx::query_as(existing).bind(user_id), permission)
                    .fetch_one(&mut *tx)
                    .await?;
            let revision = finish_user_change!(tx, revision, user_id, inserted);
            GrantOutcome {
                grant: Grant::try_from(row)?,
                created: inserted,
                revision: Revision(revision),
            }
        });
        Ok(outcome)
    }

    /// Revokes `permission`; revoking what the user does not hold is not an error.
    pub async fn revoke(
        &self,
        sub: &AuthentikSub,
        permission: &Permission,
    ) -> Result<RevokeOutcome> {
        let delete = "DELETE FROM permissions \
                      WHERE user_id = $1 AND scope_type = $2 AND scope_id = $3 AND module = $4 AND action = $5";
        let outcome = on_pool!(self, |pool| {
            let (mut tx, revision, user_id) = begin_user_change!(pool, sub);
            let deleted = bind_permission!(sqlx::query(delete).bind(user_id), permission)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            RevokeOutcome {
                revoked: deleted,
                revision: Revision(finish_user_change!(tx, revision, user_id, deleted)),
            }
        });
        Ok(outcome)
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
        let affected = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(key)
                .bind(value)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    pub async fn create_client(&self, client: &ApiClient) -> Result<()> {
        const SQL: &str = concat!(
            "INSERT INTO api_clients (",
            client_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (client_key) DO NOTHING"
        );
        let row = ClientRow::from(client);
        let affected = on_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(&row.client_key)
                .bind(&row.name)
                .bind(&row.api_key_hash)
                .bind(&row.status)
                .bind(row.expires_at)
                .bind(&row.allowed_origins)
                .bind(&row.allowed_ips)
                .bind(&row.allowed_paths)
                .bind(row.rate_limit_per_minute)
                .bind(row.created_at)
                .bind(row.last_used_at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists("client"))
        }
    }

    pub async fn client(&self, client_key: &str) -> Result<Option<ApiClient>> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM api_clients WHERE client_key = $1"
        );
        let row: Option<ClientRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(client_key)
            .fetch_optional(pool)
            .await?);
        row.map(ApiClient::try_from).transpose()
    }

    pub async fn clients(&self) -> Result<Vec<ApiClient>> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM api_clients ORDER BY created_at, client_key"
        );
        let rows: Vec<ClientRow> =
            on_pool!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await?);
        rows.into_iter().map(ApiClient::try_from).collect()
    }

    pub async fn set_client_status(&self, client_key: &str, status: ClientStatus) -> Result<()> {
        let sql = "UPDATE api_clients SET status = $2 WHERE client_key = $1";
        let affected = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(client_key)
                .bind(status.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound("client"))
        }
    }

    pub async fn set_client_key_hash(&self, client_key: &str, api_key_hash: &str) -> Result<()> {
        let sql = "UPDATE api_clients SET api_key_hash = $2 WHERE client_key = $1";
        let affected = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(client_key)
                .bind(api_key_hash)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if affected == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound("client"))
        }
    }

    pub async fn touch_client(&self, client_key: &str, at: OffsetDateTime) -> Result<()> {
        let sql = "UPDATE api_clients SET last_used_at = $2 WHERE client_key = $1";
        on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(client_key)
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(())
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
