//! Per-key limits of N requests a minute, by the generic cell rate algorithm:
//! one timestamp per key, a burst of up to N, refilling evenly over the minute.
//!
//! [`Limits`] keeps the timestamps in this process, or in Redis so that a
//! limit holds across every instance (the same algorithm, in one Lua script,
//! on Redis' clock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::redis_link::RedisLink;

/// GCRA on Redis' clock. KEYS[1]: the key; ARGV[1]: the interval between
/// requests, ARGV[2]: the window, both in microseconds. Answers 0 when
/// allowed, else the microseconds to wait.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > window then return nxt - now - window end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return 0
";

/// The part of an address a per-address throttle counts. An IPv6 client
/// is given a whole /64 (often far more) and may rotate through it freely,
/// so a /64 is one client; IPv4 addresses count one by one.
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let net = ipnet::Ipv6Net::new(v6, 64).expect("64 is a valid prefix length");
            net.trunc().to_string()
        }
        v4 => v4.to_string(),
    }
}

/// Where limits are counted.
#[derive(Clone)]
pub enum Limits {
    Memory(Arc<RateLimiter>),
    /// Shared by every instance; when Redis cannot be reached, the
    /// in-process limiter stands in (a per-instance limit, not none).
    Redis {
        link: RedisLink,
        prefix: String,
        script: Arc<redis::Script>,
        fallback: Arc<RateLimiter>,
    },
}

impl Default for Limits {
    fn default() -> Self {
        Self::Memory(Arc::default())
    }
}

impl Limits {
    pub fn redis(link: RedisLink, prefix: impl Into<String>) -> Self {
        Self::Redis {
            link,
            prefix: prefix.into(),
            script: Arc::new(redis::Script::new(GCRA_SCRIPT)),
            fallback: Arc::default(),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis { .. } => "redis",
        }
    }

    /// Counts one request for `key`; `Err(retry_after)` when over `per_minute`.
    pub async fn check(&self, key: &str, per_minute: u32) -> Result<(), Duration> {
        match self {
            Self::Memory(limiter) => limiter.check(key, per_minute, Instant::now()),
            Self::Redis {
                link,
                prefix,
                script,
                fallback,
            } => {
                // While Redis is known to be down, count here without waiting.
                let Some(mut connection) = link.connection() else {
                    return fallback.check(key, per_minute, Instant::now());
                };
                let interval = WINDOW / per_minute.max(1);
                let answer: redis::RedisResult<i64> = script
                    .key(format!("{prefix}limit:{key}"))
                    .arg(interval.as_micros() as i64)
                    .arg(WINDOW.as_micros() as i64)
                    .invoke_async(&mut connection)
                    .await;
                link.record(&answer);
                match answer {
                    Ok(0) => Ok(()),
                    Ok(wait) => Err(Duration::from_micros(wait.max(1) as u64)),
                    Err(e) => {
                        tracing::debug!(error = %e, "rate limits in Redis unavailable; counting in this instance");
                        fallback.check(key, per_minute, Instant::now())
                    }
                }
            }
        }
    }
}

const WINDOW: Duration = Duration::from_secs(60);
/// Keys whose state has fully refilled carry no information; past this many
/// keys they are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct RateLimiter {
    /// Per key, the theoretical arrival time of the next request.
    tat: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// Counts one request for `key` at `now`; `Err(retry_after)` when over the limit.
    pub fn check(&self, key: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let per_minute = per_minute.max(1);
        let interval = WINDOW / per_minute;
        let mut tat = self
            .tat
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = tat.get(key).copied().filter(|t| *t > now).unwrap_or(now);
        let next = current + interval;
        if next - now > WINDOW {
            return Err(next - now - WINDOW);
        }
        if tat.len() >= PRUNE_ABOVE {
            tat.retain(|_, t| *t > now);
        }
        tat.insert(key.to_owned(), next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let address_key = |ip: &str| address_key(ip.parse().unwrap());
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2:bbbb::2"), "2001:db8:1:2::/64");
        assert_ne!(
            address_key("2001:db8:1:3::1"),
            address_key("2001:db8:1:2::1")
        );
        assert_eq!(address_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(address_key("::ffff:192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn allows_a_burst_of_the_limit_then_refuses() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check("c", 10, t0).is_ok());
        }
        let retry = limiter.check("c", 10, t0).unwrap_err();
        assert_eq!(retry, Duration::from_secs(6));
        // Other keys are unaffected.
        assert!(limiter.check("other", 10, t0).is_ok());
    }

    #[test]
    fn refills_evenly() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..60 {
            limiter.check("c", 60, t0).unwrap();
        }
        assert!(
            limiter
                .check("c", 60, t0 + Duration::from_millis(500))
                .is_err()
        );
        assert!(limiter.check("c", 60, t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.check("c", 60, t0 + Duration::from_secs(1)).is_err());
        for _ in 0..60 {
            assert!(
                limiter
                    .check("c", 60, t0 + Duration::from_secs(120))
                    .is_ok()
            );
        }
    }

    #[test]
    fn refused_requests_do_not_consume() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        limiter.check("c", 1, t0).unwrap();
        for _ in 0..100 {
            assert!(limiter.check("c", 1, t0 + Duration::from_secs(30)).is_err());
        }
        assert!(limiter.check("c", 1, t0 + Duration::from_secs(60)).is_ok());
    }
}
