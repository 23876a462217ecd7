//! `memberd export` and `memberd import`: the whole state as one JSON
//! document, read at one moment, and written into an empty database in one
//! transaction, whichever backends the two are.
//!
//! Tables are moved column by column with each column's type spelled out
//! once below, so that a UUID, a moment or a boolean means the same on
//! SQLite and PostgreSQL. Sessions, login throttles, captchas and MFA
//! challenges are not moved: they are short-lived, and users sign in again.

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::Value;
use sqlx::Row;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AnyPool, Begin, ChangeTx, Result, Store, StoreError, on_pool};
use crate::audit::Event;
use crate::model::Revision;

pub const FORMAT: &str = "memberd-export";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Uuid,
    OptUuid,
    Text,
    OptText,
    /// BIGINT
    I64,
    OptI64,
    /// INTEGER (4 bytes on PostgreSQL)
    I32,
    OptI32,
    Bool,
    Time,
    OptTime,
    /// Base64 in the document.
    Bytes,
}

use Col::*;

/// Every table that is moved, parents before children, with its columns.
const TABLES: &[(&str, &[(&str, Col)])] = &[
    (
        "users",
        &[
            ("id", Uuid),
            ("authentik_sub", Text),
            ("email", OptText),
            ("display_name", OptText),
            ("is_active", Bool),
            ("revision", I64),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    ),
    (
        "permissions",
        &[
            ("id", Uuid),
            ("user_id", Uuid),
            ("scope_type", Text),
            ("scope_id", Text),
            ("module", Text),
            ("action", Text),
            ("created_at", Time),
            ("effect", Text),
            ("audit_seq", OptI64),
        ],
    ),
    (
        "roles",
        &[
            ("id", Uuid),
            ("name", Text),
            ("description", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    ),
    ("role_parents", &[("role_id", Uuid), ("parent_id", Uuid)]),
    (
        "role_permissions",
        &[
            ("id", Uuid),
            ("role_id", Uuid),
            ("module", Text),
            ("action", Text),
            ("scope_type", Text),
            ("scope_id", Text),
            ("effect", Text),
            ("created_at", Time),
            ("from_rules", Bool),
        ],
    ),
    (
        "role_assignments",
        &[
            ("id", Uuid),
            ("user_id", Uuid),
            ("role_id", Uuid),
            ("scope_type", Text),
            ("scope_id", Text),
            ("created_at", Time),
            ("audit_seq", OptI64),
            ("held_by_admin", Bool),
            ("held_by_scim", Bool),
        ],
    ),
    (
        "rules",
        &[
            ("id", Uuid),
            ("name", Text),
            ("kind", Text),
            ("parent_id", OptUuid),
            ("title", Text),
            ("path", OptText),
            ("component", OptText),
            ("icon", OptText),
            ("weight", I32),
            ("hidden", Bool),
            ("module", Text),
            ("action", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    ),
    ("role_rules", &[("role_id", Uuid), ("rule_id", Uuid)]),
    (
        "catalog_modules",
        &[("module", Text), ("description", Text)],
    ),
    ("catalog_actions", &[("module", Text), ("action", Text)]),
    (
        "api_clients",
        &[
            ("client_key", Text),
            ("name", Text),
            ("api_key_hash", Text),
            ("status", Text),
            ("expires_at", OptTime),
            ("allowed_origins", Text),
            ("allowed_ips", Text),
            ("allowed_paths", Text),
            ("rate_limit_per_minute", OptI32),
            ("capabilities", Text),
            ("created_at", Time),
            ("last_used_at", OptTime),
        ],
    ),
    (
        "local_accounts",
        &[
            ("user_id", Uuid),
            ("username", Text),
            ("password_hash", Text),
            ("must_change_password", Bool),
            ("totp_secret", OptText),
            ("totp_pending_secret", OptText),
            ("totp_last_step", OptI64),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    ),
    (
        "recovery_codes",
        &[("user_id", Uuid), ("digest", Text), ("used_at", OptTime)],
    ),
    (
        "identities",
        &[
            ("issuer", Text),
            ("subject", Text),
            ("user_id", Uuid),
            ("created_at", Time),
        ],
    ),
    (
        "scim_users",
        &[
            ("user_id", Uuid),
            ("user_name", Text),
            ("user_name_key", Text),
            ("external_id", OptText),
            ("client_key", OptText),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    ),
    (
        "scim_groups",
        &[
            ("id", Uuid),
            ("display_name", Text),
            ("display_name_key", Text),
            ("external_id", OptText),
            ("role_name", OptText),
            ("created_at", Time),
            ("updated_at", Time),
        ],
    ),
    (
        "scim_group_members",
        &[("group_id", Uuid), ("user_id", Uuid)],
    ),
    (
        "signing_keys",
        &[
            ("kid", Text),
            ("algorithm", Text),
            ("public_key", Bytes),
            ("private_key", Text),
            ("created_at", Time),
            ("retired_at", OptTime),
        ],
    ),
    ("settings", &[("key", Text), ("value", Text)]),
    (
        "audit_log",
        &[
            ("seq", I64),
            ("at", Time),
            ("actor_kind", Text),
            ("actor_id", Text),
            ("action", Text),
            ("target", Text),
            ("before_state", OptText),
            ("after_state", OptText),
            ("ip", OptText),
            ("request_id", OptText),
            ("revision", OptI64),
            ("prev_hash", Text),
            ("hash", Text),
        ],
    ),
];

/// A parent must precede a child that references it; rules reference rules.
fn order_by(table: &str) -> &'static str {
    match table {
        "rules" => " ORDER BY created_at, name",
        "audit_log" => " ORDER BY seq",
        _ => "",
    }
}

#[derive(Debug, Deserialize)]
pub struct Document {
    format: String,
    version: u32,
    revision: i64,
    audit_head: (i64, String),
    tables: std::collections::BTreeMap<String, Table>,
}

#[derive(Debug, Deserialize)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub revision: Revision,
    pub rows: Vec<(&'static str, usize)>,
}

fn bad(what: String) -> StoreError {
    StoreError::Corrupt(format!("the export document: {what}"))
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Corrupt(format!("writing the export: {e}"))
}

fn time_text(t: OffsetDateTime) -> Value {
    Value::String(t.format(&Rfc3339).unwrap_or_default())
}

fn parse_uuid(v: &Value) -> Result<Option<uuid::Uuid>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => uuid::Uuid::parse_str(s)
            .map(Some)
            .map_err(|e| bad(format!("uuid {s}: {e}"))),
        other => Err(bad(format!("expected a uuid, got {other}"))),
    }
}

fn parse_time(v: &Value) -> Result<Option<OffsetDateTime>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map(Some)
            .map_err(|e| bad(format!("moment {s}: {e}"))),
        other => Err(bad(format!("expected a moment, got {other}"))),
    }
}

fn parse_text(v: &Value) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(bad(format!("expected text, got {other}"))),
    }
}

fn parse_int(v: &Value) -> Result<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(format!("integer {n}"))),
        other => Err(bad(format!("expected an integer, got {other}"))),
    }
}

fn required<T>(value: Option<T>, column: &str) -> Result<T> {
    value.ok_or_else(|| bad(format!("{column} may not be null")))
}

/// A row of either backend, read column by column into JSON.
trait ReadColumn {
    /// Column `i` as JSON, read as `col`.
    fn json_column(&self, i: usize, col: Col) -> Result<Value>;
}

/// A query of either backend, bound column by column from JSON.
trait BindColumn: Sized {
    /// Binds `value` as column `name` of type `col`.
    fn bind_column(self, col: Col, name: &str, value: &Value) -> Result<Self>;
}

/// Implements [`ReadColumn`] and [`BindColumn`] for one backend: the same
/// conversions on both.
macro_rules! columns_of {
    ($db:ty, $row:ty) => {
        impl ReadColumn for $row {
            fn json_column(&self, i: usize, col: Col) -> Result<Value> {
                let row = self;
                Ok(match col {
                    Uuid => Value::String(row.try_get::<uuid::Uuid, _>(i)?.to_string()),
                    OptUuid => row
                        .try_get::<Option<uuid::Uuid>, _>(i)?
                        .map_or(Value::Null, |u| Value::String(u.to_string())),
                    Text => Value::String(row.try_get::<String, _>(i)?),
                    OptText => row
                        .try_get::<Option<String>, _>(i)?
                        .map_or(Value::Null, Value::String),
                    I64 => Value::from(row.try_get::<i64, _>(i)?),
                    OptI64 => row
                        .try_get::<Option<i64>, _>(i)?
                        .map_or(Value::Null, Value::from),
                    I32 => Value::from(row.try_get::<i32, _>(i)?),
                    OptI32 => row
                        .try_get::<Option<i32>, _>(i)?
                        .map_or(Value::Null, Value::from),
                    Bool => Value::Bool(row.try_get::<bool, _>(i)?),
                    Time => time_text(row.try_get::<OffsetDateTime, _>(i)?),
                    OptTime => row
                        .try_get::<Option<OffsetDateTime>, _>(i)?
                        .map_or(Value::Null, time_text),
                    Bytes => Value::String(BASE64.encode(row.try_get::<Vec<u8>, _>(i)?)),
                })
            }
        }

        impl<'q> BindColumn for sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            fn bind_column(self, col: Col, name: &str, v: &Value) -> Result<Self> {
                let q = self;
                Ok(match col {
                    Uuid => q.bind(required(parse_uuid(v)?, name)?),
                    OptUuid => q.bind(parse_uuid(v)?),
                    Text => q.bind(required(parse_text(v)?, name)?),
                    OptText => q.bind(parse_text(v)?),
                    I64 => q.bind(required(parse_int(v)?, name)?),
                    OptI64 => q.bind(parse_int(v)?),
                    I32 => q.bind(
                        i32::try_from(required(parse_int(v)?, name)?)
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                    OptI32 => q.bind(
                        parse_int(v)?
                            .map(i32::try_from)
                            .transpose()
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                    Bool => q.bind(required(v.as_bool(), name)?),
                    Time => q.bind(required(parse_time(v)?, name)?),
                    OptTime => q.bind(parse_time(v)?),
                    Bytes => q.bind(
                        BASE64
                            .decode(required(parse_text(v)?, name)?)
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                })
            }
        }
    };
}
columns_of!(sqlx::Sqlite, sqlx::sqlite::SqliteRow);
columns_of!(sqlx::Postgres, sqlx::postgres::PgRow);

impl Store {
    /// Writes the whole state, read at one moment, to `out`.
    pub async fn export(&self, out: &mut impl Write) -> Result<Revision> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_read().await?;
            let revision: i64 = sqlx::query_scalar("SELECT value FROM revision WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            let head: (i64, String) =
                sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            let header = serde_json::json!({
                "format": FORMAT,
                "version": VERSION,
                "exported_at": time_text(OffsetDateTime::now_utc()),
                "revision": revision,
                "audit_head": [head.0, head.1],
            });
            let header = header.to_string();
            // The header's fields, then "tables", streamed table by table.
            write!(out, "{},\"tables\":{{", &header[..header.len() - 1]).map_err(io)?;
            for (t, (table, columns)) in TABLES.iter().enumerate() {
                let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
                let sql = format!(
                    "SELECT {} FROM {table}{}",
                    names.join(", "),
                    order_by(table)
                );
                write!(
                    out,
                    "{}\"{table}\":{{\"columns\":{},\"rows\":[",
                    if t == 0 { "" } else { "," },
                    serde_json::to_string(&names).unwrap_or_default()
                )
                .map_err(io)?;
                let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut *tx);
                let mut first = true;
                while let Some(row) = rows.try_next().await? {
                    let mut values = Vec::with_capacity(columns.len());
                    for (i, (_, col)) in columns.iter().enumerate() {
                        values.push(row.json_column(i, *col)?);
                    }
                    write!(
                        out,
                        "{}{}",
                        if first { "" } else { "," },
                        Value::Array(values)
                    )
                    .map_err(io)?;
                    first = false;
                }
                write!(out, "]}}").map_err(io)?;
            }
            writeln!(out, "}}}}").map_err(io)?;
            tx.rollback().await?;
            Ok(Revision(revision))
        })
    }

    /// Writes an exported state into this database, which must hold no
    /// users, roles, clients or audit records yet; all or nothing.
    pub async fn import(&self, doc: &Document) -> Result<Imported> {
        if doc.format != FORMAT || doc.version != VERSION {
            return Err(bad(format!(
                "this memberd reads {FORMAT} version {VERSION}, not {} version {}",
                doc.format, doc.version
            )));
        }
        let mut imported = Vec::new();
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let occupied: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM roles) \
                 + (SELECT COUNT(*) FROM api_clients) + (SELECT COUNT(*) FROM audit_log)",
            )
            .fetch_one(&mut *tx)
            .await?;
            if occupied > 0 {
                return Err(StoreError::Refused(
                    "the database already holds users, roles, clients or audit records: import into an empty one".into(),
                ));
            }
            // The console's rules, which every database is migrated with,
            // give way to the source's tree.
            sqlx::query("DELETE FROM rules").execute(&mut *tx).await?;
            for (table, columns) in TABLES {
                let Some(data) = doc.tables.get(*table) else {
                    return Err(bad(format!("table {table} is missing")));
                };
                let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
                if data.columns != names {
                    return Err(bad(format!(
                        "table {table} has columns {:?}, expected {names:?}",
                        data.columns
                    )));
                }
                let placeholders: Vec<String> =
                    (1..=names.len()).map(|i| format!("${i}")).collect();
                // Settings the target generated on its first start give way to the source's.
                let conflict = if *table == "settings" {
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                } else {
                    ""
                };
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({}){conflict}",
                    names.join(", "),
                    placeholders.join(", ")
                );
                for row in &data.rows {
                    if row.len() != columns.len() {
                        return Err(bad(format!("a row of {table} has {} values", row.len())));
                    }
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                    for ((name, col), value) in columns.iter().zip(row) {
                        query = query.bind_column(*col, name, value)?;
                    }
                    query.execute(&mut *tx).await?;
                }
                imported.push((*table, data.rows.len()));
            }
            sqlx::query("UPDATE revision SET value = $1 WHERE id = 1")
                .bind(doc.revision)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(doc.audit_head.0)
                .bind(&doc.audit_head.1)
                .execute(&mut *tx)
                .await?;
            // The change log did not move: caches asking about earlier revisions refetch.
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ('change_log_floor', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(doc.revision.to_string())
            .execute(&mut *tx)
            .await?;
            let counts: serde_json::Map<String, Value> = imported
                .iter()
                .map(|(table, rows)| (table.to_string(), Value::from(*rows)))
                .collect();
            tx.audit(
                Some(doc.revision),
                Event::new("state.import", "state").after(counts),
            )
            .await?;
            tx.commit().await?;
            Ok(Imported {
                revision: Revision(doc.revision),
                rows: imported,
            })
        })
    }
}
