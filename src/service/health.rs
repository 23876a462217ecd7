//! Whether this instance can serve: each dependency's state, for `/readyz`,
//! and the database pool's use, for `/metrics`.

use std::time::Duration;

use serde::Serialize;

use super::access::Engine;
use super::oidc::Oidc;
use crate::redis_link::RedisLink;
use crate::store::Store;

/// A hung database fails the probe rather than hanging it.
const DATABASE_PROBE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Health {
    store: Store,
    engine: Engine,
    redis: Option<RedisLink>,
    oidc: Option<Oidc>,
}

/// What `/readyz` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok`, `degraded` (serving, with stored rows left out of the index)
    /// or `unavailable`.
    pub status: &'static str,
    /// `ok`, `error` or `timeout`.
    pub database: &'static str,
    /// `ok` or `unavailable`; only when Redis is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
    /// `ok` or `unreachable`; only when a provider is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<SkippedRows>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SkippedRows {
    pub skipped_rows: u64,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.status != "unavailable"
    }
}

impl Health {
    pub fn new(store: Store, engine: Engine, redis: Option<RedisLink>, oidc: Option<Oidc>) -> Self {
        Self {
            store,
            engine,
            redis,
            oidc,
        }
    }

    /// Ready when the database answers, and Redis too when it holds the
    /// sessions (without it no one signs in). A provider that cannot be
    /// reached (the keys in hand keep verifying), or stored rows the index
    /// left out, leave memberd serving: the answer says so.
    pub async fn readiness(&self) -> Readiness {
        let database = match tokio::time::timeout(DATABASE_PROBE, self.store.ping()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: database check failed");
                "error"
            }
            Err(_) => {
                tracing::warn!("readiness: database check timed out");
                "timeout"
            }
        };
        let redis = match &self.redis {
            Some(redis) => Some(if redis.ping().await {
                "ok"
            } else {
                "unavailable"
            }),
            None => None,
        };
        let identity_provider = self
            .oidc
            .as_ref()
            .map(|oidc| if oidc.healthy() { "ok" } else { "unreachable" });
        let skipped = self.engine.skipped_rows();
        let ready = database == "ok" && redis != Some("unavailable");
        Readiness {
            status: match (ready, skipped) {
                (false, _) => "unavailable",
                (true, 0) => "ok",
                (true, _) => "degraded",
            },
            database,
            redis,
            identity_provider,
            policy: (skipped > 0).then_some(SkippedRows {
                skipped_rows: skipped,
            }),
        }
    }

    /// The database pool: connections open, and idle.
    pub fn pool_stats(&self) -> (u32, usize) {
        self.store.pool_stats()
    }
}
