//! The audit log: who changed what, when, from where.
//!
//! The store writes one record per change inside the change's own
//! transaction, so a change and its record commit or vanish together.
//! Records form a hash chain: each holds the hash of the one before it, and
//! its own hash covers every field plus that link. Editing, deleting or
//! reordering a stored record breaks the chain at that record, which
//! [`verify`] reports (`memberd audit verify`).
//!
//! Who acted is not threaded through every service signature: the HTTP
//! layer opens a [`scope`] per request (request id, caller address) and the
//! extractor that authenticates the caller names the actor in it. Work done
//! outside a request (the CLI, background tasks) runs in a scope of its own
//! or is attributed to `system`.

use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The hash the first record links to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// A person signed in to memberd or to the identity provider.
    User,
    /// An API client.
    Client,
    /// A service presenting the internal secret.
    Internal,
    /// The command line, on the database's machine.
    Cli,
    /// memberd itself (maintenance).
    System,
    /// A caller who has not (yet) authenticated, such as one trying to sign in.
    Anonymous,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Client => "client",
            Self::Internal => "internal",
            Self::Cli => "cli",
            Self::System => "system",
            Self::Anonymous => "anonymous",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user" => Self::User,
            "client" => Self::Client,
            "internal" => Self::Internal,
            "cli" => Self::Cli,
            "system" => Self::System,
            "anonymous" => Self::Anonymous,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn user(sub: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::User,
            id: sub.into(),
        }
    }
    pub fn client(client_key: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::Client,
            id: client_key.into(),
        }
    }
    pub fn internal() -> Self {
        Self {
            kind: ActorKind::Internal,
            id: "internal".into(),
        }
    }
    pub fn cli() -> Self {
        let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Self {
            kind: ActorKind::Cli,
            id: who,
        }
    }
    pub fn system() -> Self {
        Self {
            kind: ActorKind::System,
            id: "memberd".into(),
        }
    }
    pub fn anonymous() -> Self {
        Self {
            kind: ActorKind::Anonymous,
            id: "anonymous".into(),
        }
    }
}

/// Where a change came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub actor: Actor,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl Origin {
    fn system() -> Self {
        Self {
            actor: Actor::system(),
            ip: None,
            request_id: None,
        }
    }
}

tokio::task_local! {
    static CONTEXT: Arc<Mutex<Origin>>;
}

/// Runs `work` with `origin` as the source of the changes it makes.
pub async fn scope<F: Future>(origin: Origin, work: F) -> F::Output {
    CONTEXT.scope(Arc::new(Mutex::new(origin)), work).await
}

/// Names who is acting in the current scope (an authenticating extractor
/// calls this once it knows). Outside a scope it does nothing.
pub fn act_as(actor: Actor) {
    let _ = CONTEXT.try_with(|origin| {
        origin.lock().unwrap_or_else(|p| p.into_inner()).actor = actor;
    });
}

/// The origin of the changes being made now.
pub fn current() -> Origin {
    CONTEXT
        .try_with(|origin| origin.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .unwrap_or_else(|_| Origin::system())
}

/// A change, as the store records it. `before` and `after` hold what a
/// reviewer needs to see and never a secret (no hashes, keys or codes).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub action: &'static str,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Event {
    pub fn new(action: &'static str, target: impl Into<String>) -> Self {
        Self {
            action,
            target: target.into(),
            before: None,
            after: None,
        }
    }
    pub fn before(mut self, value: impl Serialize) -> Self {
        self.before = serde_json::to_value(value).ok();
        self
    }
    pub fn after(mut self, value: impl Serialize) -> Self {
        self.after = serde_json::to_value(value).ok();
        self
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Record {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub actor: Actor,
    pub action: String,
    pub target: String,
    /// The state before the change: free-form, whatever the target is
    /// (stored as the JSON text that was hashed).
    #[serde(serialize_with = "raw_json")]
    #[schema(value_type = Option<Object>)]
    pub before: Option<String>,
    /// The state after the change: free-form, as `before`.
    #[serde(serialize_with = "raw_json")]
    #[schema(value_type = Option<Object>)]
    pub after: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub revision: Option<i64>,
    pub prev_hash: String,
    pub hash: String,
}

fn raw_json<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    let value: Option<Value> = text.as_deref().and_then(|t| serde_json::from_str(t).ok());
    value.serialize(s)
}

impl Record {
    /// The hash of every field but `hash` itself. The fields are written as
    /// one JSON array (a fixed order, unambiguous separators); the moment as
    /// integer microseconds, which both backends store exactly.
    pub fn compute_hash(&self) -> String {
        let at_micros = (self.at.unix_timestamp_nanos() / 1_000) as i64;
        let canonical = serde_json::json!([
            self.seq,
            at_micros,
            self.actor.kind.as_str(),
            self.actor.id,
            self.action,
            self.target,
            self.before,
            self.after,
            self.ip,
            self.request_id,
            self.revision,
            self.prev_hash,
        ]);
        crate::authn::api_key::hex(&Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// Where the chain first fails to hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("record {seq}: expected sequence number {expected} (a record is missing or reordered)")]
    Gap { seq: i64, expected: i64 },
    #[error("record {seq}: does not link to the hash of the record before it")]
    Link { seq: i64 },
    #[error("record {seq}: its content does not match its hash (the row was edited)")]
    Content { seq: i64 },
    #[error(
        "the chain ends at record {last} but its head says {head}: records were removed from the end"
    )]
    Head { last: i64, head: i64 },
}

/// Walks records in sequence order, checking each against the one before it.
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS.to_owned(),
        }
    }
}

impl Verifier {
    pub fn push(&mut self, record: &Record) -> Result<(), Break> {
        if record.seq != self.expected_seq {
            return Err(Break::Gap {
                seq: record.seq,
                expected: self.expected_seq,
            });
        }
        if record.prev_hash != self.prev_hash {
            return Err(Break::Link { seq: record.seq });
        }
        if record.compute_hash() != record.hash {
            return Err(Break::Content { seq: record.seq });
        }
        self.expected_seq += 1;
        self.prev_hash.clone_from(&record.hash);
        Ok(())
    }

    /// Checks the end of the walk against the stored head `(seq, hash)`.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<i64, Break> {
        let last = self.expected_seq - 1;
        if last != head_seq || (head_seq > 0 && head_hash != self.prev_hash) {
            return Err(Break::Head {
                last,
                head: head_seq,
            });
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, prev: &str) -> Record {
        let mut r = Record {
            seq,
            at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            actor: Actor::client("backoffice"),
            action: "grant.create".into(),
            target: "user:alice".into(),
            before: None,
            after: Some(r#"{"module":"billing"}"#.into()),
            ip: Some("10.0.0.1".into()),
            request_id: Some("r1".into()),
            revision: Some(seq),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        r
    }

    fn chain(n: i64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or(GENESIS.to_owned(), |r| r.hash.clone());
            out.push(record(seq, &prev));
        }
        out
    }

    fn verify(records: &[Record], head: i64) -> Result<i64, Break> {
        let mut v = Verifier::default();
        for r in records {
            v.push(r)?;
        }
        let head_hash = records
            .iter()
            .find(|r| r.seq == head)
            .map_or(String::new(), |r| r.hash.clone());
        v.finish(head, &head_hash)
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5), 5), Ok(5));
        assert_eq!(verify(&[], 0), Ok(0));
    }

    #[test]
    fn an_edited_field_is_caught_at_its_record() {
        let mut records = chain(5);
        records[2].target = "user:mallory".into();
        assert_eq!(verify(&records, 5), Err(Break::Content { seq: 3 }));
    }

    #[test]
    fn a_rehashed_edit_breaks_the_next_link() {
        let mut records = chain(5);
        records[2].after = Some(r#"{"module":"payroll"}"#.into());
        records[2].hash = records[2].compute_hash();
        assert_eq!(verify(&records, 5), Err(Break::Link { seq: 4 }));
    }

    #[test]
    fn deleted_records_are_caught() {
        let mut records = chain(5);
        records.remove(1);
        assert_eq!(
            verify(&records, 5),
            Err(Break::Gap {
                seq: 3,
                expected: 2
            })
        );
        let mut truncated = chain(5);
        truncated.truncate(3);
        let mut v = Verifier::default();
        for r in &truncated {
            v.push(r).unwrap();
        }
        assert_eq!(
            v.finish(5, "whatever"),
            Err(Break::Head { last: 3, head: 5 })
        );
    }

    #[test]
    fn every_field_is_covered() {
        let base = record(1, GENESIS);
        let variants: Vec<Box<dyn Fn(&mut Record)>> = vec![
            Box::new(|r| r.seq = 2),
            Box::new(|r| r.at += time::Duration::microseconds(1)),
            Box::new(|r| r.actor.kind = ActorKind::User),
            Box::new(|r| r.actor.id = "other".into()),
            Box::new(|r| r.action = "grant.revoke".into()),
            Box::new(|r| r.target = "user:bob".into()),
            Box::new(|r| r.before = Some("{}".into())),
            Box::new(|r| r.after = None),
            Box::new(|r| r.ip = None),
            Box::new(|r| r.request_id = None),
            Box::new(|r| r.revision = None),
            Box::new(|r| r.prev_hash = "1".repeat(64)),
        ];
        for change in variants {
            let mut r = base.clone();
            change(&mut r);
            assert_ne!(r.compute_hash(), base.hash);
        }
    }

    #[tokio::test]
    async fn the_actor_named_in_a_scope_is_the_origin() {
        assert_eq!(current().actor, Actor::system());
        let origin = Origin {
            actor: Actor::system(),
            ip: Some("10.0.0.1".into()),
            request_id: Some("r1".into()),
        };
        let seen = scope(origin, async {
            act_as(Actor::client("backoffice"));
            current()
        })
        .await;
        assert_eq!(seen.actor, Actor::client("backoffice"));
        assert_eq!(seen.ip.as_deref(), Some("10.0.0.1"));
    }
}
