//! Redis as a dependency with bounds: every connection attempt and command
//! times out in tens of milliseconds, and a circuit fails calls at once for
//! a moment after one could not reach Redis, so an outage costs requests
//! nothing but the answer "unavailable" (sessions: 503 with `Retry-After`;
//! rate limits: the in-process fallback) instead of seconds each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long the circuit stays open after a failure before a call may probe.
const OPEN_FOR: Duration = Duration::from_secs(1);

/// One connection to Redis shared by sessions and rate limits, and the
/// circuit that guards it.
#[derive(Clone)]
pub struct RedisLink {
    connection: ConnectionManager,
    /// Until when (ms since the epoch) calls fail at once; 0: closed.
    open_until: Arc<AtomicU64>,
    timeout: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RedisLink {
    /// Connects with `timeout` on connecting and on every command.
    pub async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(timeout);
        let connection = redis::Client::open(url)?
            .get_connection_manager_with_config(config)
            .await?;
        Ok(Self {
            connection,
            open_until: Arc::default(),
            timeout,
        })
    }

    /// The connection, or `None` while the circuit is open (Redis failed
    /// within the last second): the caller answers without waiting.
    pub fn connection(&self) -> Option<ConnectionManager> {
        (now_ms() >= self.open_until.load(Ordering::Relaxed)).then(|| self.connection.clone())
    }

    /// The connection whatever the circuit says, for callers that check
    /// `connection()` themselves before each use.
    pub fn connection_ignoring_circuit(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Notes the outcome of a call: an error that means Redis is out of
    /// reach opens the circuit; success closes it.
    pub fn record<T>(&self, outcome: &redis::RedisResult<T>) {
        match outcome {
            Ok(_) => self.recovered(),
            Err(e) if is_outage(e) => self.trip(&e.to_string()),
            Err(_) => {}
        }
    }

    /// Opens the circuit for a second (logged once as it opens).
    pub fn trip(&self, cause: &str) {
        let until = now_ms() + OPEN_FOR.as_millis() as u64;
        if self.open_until.swap(until, Ordering::Relaxed) == 0 {
            tracing::warn!(
                error = cause,
                "Redis is unavailable; failing fast and retrying every second"
            );
        }
    }

    /// Closes the circuit (logged once as it closes).
    pub fn recovered(&self) {
        if self.open_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!("Redis answers again");
        }
    }

    /// Whether Redis answers a PING within the timeout (for `/readyz`).
    pub async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        let answer = tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        let answer = answer.unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "PING timed out",
            )))
        });
        self.record(&answer);
        answer.is_ok()
    }
}

/// An error that says Redis could not be reached, rather than that it
/// refused a command.
pub fn is_outage(e: &redis::RedisError) -> bool {
    e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}
