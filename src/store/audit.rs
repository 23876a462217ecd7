//! The audit log's table: appending inside a change's transaction, reading
//! with filters, and walking the chain.

use futures_util::TryStreamExt;
use time::OffsetDateTime;

use super::{AnyPool, Begin, ChangeTx, Result, Store, StoreError, on_pool};
use crate::audit::{Actor, ActorKind, Break, Event, Record, Verifier};

pub(super) const INSERT: &str = "INSERT INTO audit_log (seq, at, actor_kind, actor_id, action, target, \
     before_state, after_state, ip, request_id, revision, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
pub(super) const NEXT: &str =
    "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash";
pub(super) const SET_HEAD: &str = "UPDATE audit_head SET hash = $1 WHERE id = 1";

macro_rules! columns {
    ($p:literal) => {
        concat!(
            $p,
            "seq, ",
            $p,
            "at, ",
            $p,
            "actor_kind, ",
            $p,
            "actor_id, ",
            $p,
            "action, ",
            $p,
            "target, ",
            $p,
            "before_state, ",
            $p,
            "after_state, ",
            $p,
            "ip, ",
            $p,
            "request_id, ",
            $p,
            "revision, ",
            $p,
            "prev_hash, ",
            $p,
            "hash"
        )
    };
}

macro_rules! bind_insert {
    ($query:expr, $r:expr) => {
        $query
            .bind($r.seq)
            .bind($r.at)
            .bind($r.actor.kind.as_str())
            .bind(&$r.actor.id)
            .bind(&$r.action)
            .bind(&$r.target)
            .bind(&$r.before)
            .bind(&$r.after)
            .bind(&$r.ip)
            .bind(&$r.request_id)
            .bind($r.revision)
            .bind(&$r.prev_hash)
            .bind(&$r.hash)
    };
}
pub(super) use bind_insert;

/// The record of `event`, stamped now with the current origin, and hashed.
pub(super) fn record(seq: i64, prev_hash: String, revision: Option<i64>, event: Event) -> Record {
    let origin = crate::audit::current();
    let mut record = Record {
        seq,
        at: super::now(),
        actor: origin.actor,
        action: event.action.to_owned(),
        target: event.target,
        before: event.before.map(|v| v.to_string()),
        after: event.after.map(|v| v.to_string()),
        ip: origin.ip,
        request_id: origin.request_id,
        revision,
        prev_hash,
        hash: String::new(),
    };
    record.hash = record.compute_hash();
    record
}

#[derive(sqlx::FromRow)]
pub(super) struct RecordRow {
    seq: i64,
    at: OffsetDateTime,
    actor_kind: String,
    actor_id: String,
    action: String,
    target: String,
    before_state: Option<String>,
    after_state: Option<String>,
    ip: Option<String>,
    request_id: Option<String>,
    revision: Option<i64>,
    prev_hash: String,
    hash: String,
}

impl TryFrom<RecordRow> for Record {
    type Error = StoreError;
    fn try_from(row: RecordRow) -> Result<Self> {
        let kind = ActorKind::parse(&row.actor_kind).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "audit_log.actor_kind of record {}: {:?}",
                row.seq, row.actor_kind
            ))
        })?;
        Ok(Record {
            seq: row.seq,
            at: row.at,
            actor: Actor {
                kind,
                id: row.actor_id,
            },
            action: row.action,
            target: row.target,
            before: row.before_state,
            after: row.after_state,
            ip: row.ip,
            request_id: row.request_id,
            revision: row.revision,
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }
}

/// A user as a reviewer sees one in a record.
pub(super) fn user_state(user: &crate::model::User) -> serde_json::Value {
    serde_json::json!({
        "authentik_sub": user.authentik_sub,
        "email": user.email,
        "display_name": user.display_name,
        "is_active": user.is_active,
    })
}

pub(super) fn grant_state(grant: &crate::model::Grant) -> serde_json::Value {
    serde_json::json!({
        "id": grant.id,
        "scope_type": grant.permission.scope_type,
        "scope_id": grant.permission.scope_id,
        "module": grant.permission.module,
        "action": grant.permission.action,
        "effect": grant.effect.as_str(),
    })
}

/// Which records to list. Every field narrows; none lists everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Records older than this sequence number (the cursor of the page before).
    pub before_seq: Option<i64>,
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainReport {
    Intact { records: i64 },
    Broken(Break),
}

impl Store {
    /// Appends one record in a transaction of its own: for events that
    /// change nothing else, such as a failed login.
    pub async fn record_event(&self, event: Event) -> Result<i64> {
        Ok(on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let seq = tx.audit(None, event).await?;
            tx.commit().await?;
            seq
        }))
    }

    /// Records newest first, at most `limit`.
    pub async fn audit_records(&self, filter: &AuditFilter, limit: u32) -> Result<Vec<Record>> {
        // Absent filters bind NULL and drop out of the condition, so one
        // statement serves every combination.
        const SQL: &str = concat!(
            "SELECT ",
            columns!(""),
            " FROM audit_log WHERE \
             ($1 IS NULL OR actor_id = $1) AND ($2 IS NULL OR target = $2) AND \
             ($3 IS NULL OR action = $3) AND ($4 IS NULL OR at >= $4) AND \
             ($5 IS NULL OR at < $5) AND ($6 IS NULL OR seq < $6) \
             ORDER BY seq DESC LIMIT $7"
        );
        let rows: Vec<RecordRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(&filter.actor)
            .bind(&filter.target)
            .bind(&filter.action)
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.before_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(Record::try_from).collect()
    }

    pub async fn audit_record(&self, seq: i64) -> Result<Option<Record>> {
        const SQL: &str = concat!("SELECT ", columns!(""), " FROM audit_log WHERE seq = $1");
        let row: Option<RecordRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(seq)
            .fetch_optional(pool)
            .await?);
        row.map(Record::try_from).transpose()
    }

    /// The record that gave a direct grant its current form.
    pub async fn grant_record(&self, grant: uuid::Uuid) -> Result<Option<Record>> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!("l."),
            " FROM permissions p JOIN audit_log l ON l.seq = p.audit_seq WHERE p.id = $1"
        );
        let row: Option<RecordRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(grant)
            .fetch_optional(pool)
            .await?);
        row.map(Record::try_from).transpose()
    }

    /// The record of the assignment of `role` to the user in a scope.
    pub async fn assignment_record(
        &self,
        user: crate::model::UserId,
        role: &str,
        scope_type: &str,
        scope_id: &str,
    ) -> Result<Option<Record>> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!("l."),
            " FROM role_assignments a JOIN roles r ON r.id = a.role_id \
             JOIN audit_log l ON l.seq = a.audit_seq \
             WHERE a.user_id = $1 AND r.name = $2 AND a.scope_type = $3 AND a.scope_id = $4"
        );
        let row: Option<RecordRow> = on_pool!(self, |pool| sqlx::query_as(SQL)
            .bind(user.0)
            .bind(role)
            .bind(scope_type)
            .bind(scope_id)
            .fetch_optional(pool)
            .await?);
        row.map(Record::try_from).transpose()
    }

    /// Walks the whole chain in order, at one moment, and reports the first break.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        const SQL: &str = concat!("SELECT ", columns!(""), " FROM audit_log ORDER BY seq");
        let report = on_pool!(self, |pool| {
            let mut tx = pool.begin_read().await?;
            let (head_seq, head_hash): (i64, String) =
                sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_one(&mut *tx)
                    .await?;
            let mut verifier = Verifier::default();
            let mut broken = None;
            {
                let mut rows = sqlx::query_as::<_, RecordRow>(SQL).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    if let Err(b) = verifier.push(&Record::try_from(row)?) {
                        broken = Some(b);
                        break;
                    }
                }
            }
            tx.rollback().await?;
            match broken {
                Some(b) => ChainReport::Broken(b),
                None => match verifier.finish(head_seq, &head_hash) {
                    Ok(records) => ChainReport::Intact { records },
                    Err(b) => ChainReport::Broken(b),
                },
            }
        });
        Ok(report)
    }
}
