//! Where sessions live: the database by default, Redis when configured (so
//! that several instances share them, and they expire by TTL). Both answer
//! the same questions and pass the same test suite.

use crate::redis_link::{RedisLink, is_outage};
use time::OffsetDateTime;

use super::{Dependency, ServiceError};
use crate::model::{Session, SessionId, UserId};
use crate::store::{RefreshOutcome, Store};

#[derive(Clone)]
pub enum SessionStore {
    Database(Store),
    Redis(RedisSessions),
}

impl SessionStore {
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Database(_) => "database",
            Self::Redis(_) => "redis",
        }
    }

    pub async fn create(
        &self,
        session: &Session,
        refresh_digest: &str,
    ) -> Result<(), ServiceError> {
        match self {
            Self::Database(store) => Ok(store.insert_session(session, refresh_digest).await?),
            Self::Redis(redis) => redis.guarded(redis.create(session, refresh_digest)).await,
        }
    }

    /// The session if it exists and is active at `at`.
    pub async fn active(
        &self,
        id: SessionId,
        at: OffsetDateTime,
    ) -> Result<Option<Session>, ServiceError> {
        let session = match self {
            Self::Database(store) => store.session(id).await?,
            Self::Redis(redis) => redis.guarded(redis.get(id)).await?,
        };
        Ok(session.filter(|s| s.is_active(at)))
    }

    pub async fn list(
        &self,
        user_id: UserId,
        at: OffsetDateTime,
    ) -> Result<Vec<Session>, ServiceError> {
        match self {
            Self::Database(store) => Ok(store.sessions_of(user_id, at).await?),
            Self::Redis(redis) => redis.guarded(redis.list(user_id, at)).await,
        }
    }

    pub async fn refresh(
        &self,
        old_digest: &str,
        new_digest: &str,
        at: OffsetDateTime,
        idle_until: OffsetDateTime,
    ) -> Result<RefreshOutcome, ServiceError> {
        match self {
            Self::Database(store) => Ok(store
                .refresh_session(old_digest, new_digest, at, idle_until)
                .await?),
            Self::Redis(redis) => {
                redis
                    .guarded(redis.refresh(old_digest, new_digest, at, idle_until))
                    .await
            }
        }
    }

    /// Revokes the session if `owner` (when given) holds it.
    pub async fn revoke(&self, id: SessionId, owner: Option<UserId>) -> Result<bool, ServiceError> {
        match self {
            Self::Database(store) => Ok(store.revoke_session(id, owner).await?),
            Self::Redis(redis) => redis.guarded(redis.revoke(id, owner)).await,
        }
    }

    pub async fn revoke_all(&self, user_id: UserId) -> Result<u64, ServiceError> {
        match self {
            Self::Database(store) => Ok(store.revoke_sessions_of(user_id).await?),
            Self::Redis(redis) => redis.guarded(redis.revoke_all(user_id)).await,
        }
    }
}

/// Sessions in Redis: `{prefix}session:{sid}` holds the session as JSON and
/// expires with it; `{prefix}user:{uid}` is the set of a user's session ids;
/// `{prefix}refresh:{digest}` is `sid|0` (current) or `sid|1` (spent).
#[derive(Clone)]
pub struct RedisSessions {
    /// The circuit is checked by `guarded` before each operation, so its
    /// steps use the connection directly.
    link: RedisLink,
    prefix: String,
    /// Where revocations are recorded: Redis holds sessions, not the audit log.
    audit: Option<Store>,
}

impl From<redis::RedisError> for ServiceError {
    fn from(e: redis::RedisError) -> Self {
        if is_outage(&e) {
            ServiceError::Unavailable {
                dependency: Dependency::Redis,
                cause: e.to_string(),
            }
        } else {
            ServiceError::Internal(format!("redis: {e}"))
        }
    }
}

/// Spends a refresh token atomically: of two racing requests, one rotates
/// and the other finds the token spent.
const REFRESH_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return {'invalid', ''} end
local sid = string.sub(v, 1, -3)
local spent = string.sub(v, -1) == '1'
local session_key = ARGV[2] .. sid
local session = redis.call('GET', session_key)
if not session then return {'invalid', ''} end
if spent then
  redis.call('DEL', session_key)
  return {'reused', sid}
end
redis.call('SET', KEYS[1], sid .. '|1', 'KEEPTTL')
redis.call('SET', KEYS[2], sid .. '|0', 'PX', ARGV[1])
return {'rotated', session}
";

fn millis_until(at: OffsetDateTime, until: OffsetDateTime) -> i64 {
    ((until - at).whole_milliseconds() as i64).max(1)
}

impl RedisSessions {
    /// On a link of its own, with a patient timeout (for tools and tests,
    /// where a loaded machine must not read as an outage).
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, ServiceError> {
        let link = RedisLink::connect(url, std::time::Duration::from_secs(2)).await?;
        Ok(Self::new(link, prefix))
    }

    /// On a link shared with the rest of the process (the rate limits).
    pub fn new(link: RedisLink, prefix: impl Into<String>) -> Self {
        Self {
            link,
            prefix: prefix.into(),
            audit: None,
        }
    }

    /// Runs one session operation: refused at once while Redis is known to
    /// be down, and its outcome kept for the circuit.
    async fn guarded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        if self.link.connection().is_none() {
            return Err(ServiceError::Unavailable {
                dependency: Dependency::Redis,
                cause: "failing fast after a recent failure".into(),
            });
        }
        let outcome = work.await;
        match &outcome {
            // Only Redis' own failures open its circuit (a revocation's
            // audit record goes to the database).
            Err(ServiceError::Unavailable {
                dependency: Dependency::Redis,
                cause,
            }) => self.link.trip(cause),
            Ok(_) => self.link.recovered(),
            Err(_) => {}
        }
        outcome
    }

    /// Records revocations in `store`'s audit log.
    pub fn audited_in(mut self, store: Store) -> Self {
        self.audit = Some(store);
        self
    }

    async fn record(
        &self,
        user_id: UserId,
        session: Option<SessionId>,
        count: u64,
    ) -> Result<(), ServiceError> {
        if let Some(store) = &self.audit {
            store
                .record_session_revocation(user_id, session, count)
                .await?;
        }
        Ok(())
    }

    fn session_key(&self, id: SessionId) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn user_key(&self, user_id: UserId) -> String {
        format!("{}user:{}", self.prefix, user_id.0)
    }

    fn refresh_key(&self, digest: &str) -> String {
        format!("{}refresh:{digest}", self.prefix)
    }

    async fn put(&self, session: &Session, at: OffsetDateTime) -> Result<(), ServiceError> {
        let json =
            serde_json::to_string(session).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mut conn = self.link.connection_ignoring_circuit();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.session_key(session.id))
            .arg(json)
            .arg("PX")
            .arg(millis_until(at, session.expires_at))
            .ignore()
            .cmd("SADD")
            .arg(self.user_key(session.user_id))
            .arg(session.id.to_string())
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Writes the session over its stored self, and answers false (writing
    /// nothing) when it is gone: `SET … XX` makes the check and the write
    /// one step, so a revocation is never brought back.
    async fn replace_existing(
        &self,
        session: &Session,
        at: OffsetDateTime,
    ) -> Result<bool, ServiceError> {
        let json =
            serde_json::to_string(session).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let mut conn = self.link.connection_ignoring_circuit();
        let written: Option<String> = redis::cmd("SET")
            .arg(self.session_key(session.id))
            .arg(json)
            .arg("XX")
            .arg("PX")
            .arg(millis_until(at, session.expires_at))
            .query_async(&mut conn)
            .await?;
        Ok(written.is_some())
    }

    async fn create(&self, session: &Session, refresh_digest: &str) -> Result<(), ServiceError> {
        self.put(session, session.created_at).await?;
        let mut conn = self.link.connection_ignoring_circuit();
        redis::cmd("SET")
            .arg(self.refresh_key(refresh_digest))
            .arg(format!("{}|0", session.id))
            .arg("PX")
            .arg(millis_until(
                session.created_at,
                session.absolute_expires_at,
            ))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, ServiceError> {
        let mut conn = self.link.connection_ignoring_circuit();
        let json: Option<String> = redis::cmd("GET")
            .arg(self.session_key(id))
            .query_async(&mut conn)
            .await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| ServiceError::Internal(e.to_string())))
            .transpose()
    }

    async fn list(
        &self,
        user_id: UserId,
        at: OffsetDateTime,
    ) -> Result<Vec<Session>, ServiceError> {
        let mut conn = self.link.connection_ignoring_circuit();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.user_key(user_id))
            .query_async(&mut conn)
            .await?;
        let mut sessions = Vec::new();
        for raw in ids {
            let id = raw.parse().map(SessionId).ok();
            match id {
                Some(id) => match self.get(id).await? {
                    Some(s) if s.is_active(at) => sessions.push(s),
                    _ => self.forget(user_id, &raw).await?,
                },
                None => self.forget(user_id, &raw).await?,
            }
        }
        sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(sessions)
    }

    async fn forget(&self, user_id: UserId, raw_id: &str) -> Result<(), ServiceError> {
        let mut conn = self.link.connection_ignoring_circuit();
        redis::cmd("SREM")
            .arg(self.user_key(user_id))
            .arg(raw_id)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn refresh(
        &self,
        old_digest: &str,
        new_digest: &str,
        at: OffsetDateTime,
        idle_until: OffsetDateTime,
    ) -> Result<RefreshOutcome, ServiceError> {
        let mut conn = self.link.connection_ignoring_circuit();
        let (verdict, value): (String, String) = redis::Script::new(REFRESH_SCRIPT)
            .key(self.refresh_key(old_digest))
            .key(self.refresh_key(new_digest))
            // The new token lives as long as the session can.
            .arg(i64::MAX / 4)
            .arg(format!("{}session:", self.prefix))
            .invoke_async(&mut conn)
            .await?;
        match verdict.as_str() {
            "rotated" => {
                let session: Session = serde_json::from_str(&value)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                if !session.is_active(at) {
                    return Ok(RefreshOutcome::Invalid);
                }
                let session = Session {
                    last_used_at: at,
                    expires_at: idle_until.min(session.absolute_expires_at),
                    ..session
                };
                // Only if it still exists: a revoke between the script and
                // here deleted it, and must not be undone.
                if !self.replace_existing(&session, at).await? {
                    return Ok(RefreshOutcome::Invalid);
                }
                redis::cmd("PEXPIRE")
                    .arg(self.refresh_key(new_digest))
                    .arg(millis_until(at, session.absolute_expires_at))
                    .query_async::<()>(&mut conn)
                    .await?;
                Ok(RefreshOutcome::Rotated(session))
            }
            "reused" => Ok(RefreshOutcome::Reused(SessionId(value.parse().map_err(
                |_| ServiceError::Internal("redis: malformed session id".into()),
            )?))),
            _ => Ok(RefreshOutcome::Invalid),
        }
    }

    async fn revoke(&self, id: SessionId, owner: Option<UserId>) -> Result<bool, ServiceError> {
        let Some(session) = self.get(id).await? else {
            return Ok(false);
        };
        if owner.is_some_and(|o| o != session.user_id) {
            return Ok(false);
        }
        let mut conn = self.link.connection_ignoring_circuit();
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.session_key(id))
            .query_async(&mut conn)
            .await?;
        self.forget(session.user_id, &id.to_string()).await?;
        if deleted == 1 {
            self.record(session.user_id, Some(id), 1).await?;
        }
        Ok(deleted == 1)
    }

    async fn revoke_all(&self, user_id: UserId) -> Result<u64, ServiceError> {
        let mut conn = self.link.connection_ignoring_circuit();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.user_key(user_id))
            .query_async(&mut conn)
            .await?;
        let mut revoked = 0;
        for raw in ids {
            let deleted: i64 = redis::cmd("DEL")
                .arg(format!("{}session:{raw}", self.prefix))
                .query_async(&mut conn)
                .await?;
            revoked += deleted as u64;
        }
        redis::cmd("DEL")
            .arg(self.user_key(user_id))
            .query_async::<()>(&mut conn)
            .await?;
        if revoked > 0 {
            self.record(user_id, None, revoked).await?;
        }
        Ok(revoked)
    }
}
