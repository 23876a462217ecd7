//! Per-key limits of N requests a minute, by the generic cell rate algorithm:
//! one timestamp per key, a burst of up to N, refilling evenly over the minute.
//!
//! [`Limits`] keeps the timestamps in this process (governor's keyed
//! limiters), or in Redis so that a limit holds across every instance (the
//! same algorithm, in one Lua script, on Redis' clock).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;

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

    /// Forgets the in-process keys that have refilled.
    pub fn forget_idle(&self) {
        match self {
            Self::Memory(limiter) => limiter.forget_idle(),
            Self::Redis { fallback, .. } => fallback.forget_idle(),
        };
    }

    /// Counts one request for `key`; `Err(retry_after)` when over `per_minute`.
    pub async fn check(&self, key: &str, per_minute: u32) -> Result<(), Duration> {
        match self {
            Self::Memory(limiter) => limiter.check(key, per_minute),
            Self::Redis {
                link,
                prefix,
                script,
                fallback,
            } => {
                // While Redis is known to be down, count here without waiting.
                let Some(mut connection) = link.connection() else {
                    return fallback.check(key, per_minute);
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
                        fallback.check(key, per_minute)
                    }
                }
            }
        }
    }
}

const WINDOW: Duration = Duration::from_secs(60);

/// One keyed GCRA limiter (governor's) per quota in use. governor gives a
/// limiter one quota; memberd's differ per API client, so each distinct
/// `per_minute` has its own, and there are as many as there are distinct
/// limits (a handful). Their keys live in governor's sharded map: a check
/// takes no lock shared by every key, and forgetting the keys that have
/// refilled ([`RateLimiter::forget_idle`]) runs in the background, not on
/// the decision path.
pub struct RateLimiter<C: Clock = DefaultClock> {
    by_quota: RwLock<HashMap<u32, Arc<Keyed<C>>>>,
    clock: C,
}

type Keyed<C> = governor::RateLimiter<
    String,
    DashMapStateStore<String>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(clock: C) -> Self {
        Self {
            by_quota: RwLock::default(),
            clock,
        }
    }

    /// Counts one request for `key`; `Err(retry_after)` when over the limit.
    pub fn check(&self, key: &str, per_minute: u32) -> Result<(), Duration> {
        let limiter = self.limiter(per_minute);
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn limiter(&self, per_minute: u32) -> Arc<Keyed<C>> {
        let per_minute = per_minute.max(1);
        let read = self.by_quota.read().unwrap_or_else(|p| p.into_inner());
        if let Some(limiter) = read.get(&per_minute) {
            return limiter.clone();
        }
        drop(read);
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).expect("at least 1"));
        self.by_quota
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(per_minute)
            .or_insert_with(|| {
                Arc::new(governor::RateLimiter::new(
                    quota,
                    DashMapStateStore::default(),
                    self.clock.clone(),
                ))
            })
            .clone()
    }

    /// Forgets the keys whose every request has refilled: they carry no
    /// information. Answers how many keys are left.
    pub fn forget_idle(&self) -> usize {
        let limiters: Vec<Arc<Keyed<C>>> = self
            .by_quota
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        limiters
            .iter()
            .map(|limiter| {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            })
            .sum()
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

    use governor::clock::FakeRelativeClock;

    fn limiter() -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiter::with_clock(clock.clone()), clock)
    }

    #[test]
    fn allows_a_burst_of_the_limit_then_refuses() {
        let (limiter, _) = limiter();
        for _ in 0..10 {
            assert!(limiter.check("c", 10).is_ok());
        }
        let retry = limiter.check("c", 10).unwrap_err();
        assert_eq!(retry, Duration::from_secs(6));
        // Other keys are unaffected, and so is the same key under another limit.
        assert!(limiter.check("other", 10).is_ok());
        assert!(limiter.check("c", 20).is_ok());
    }

    #[test]
    fn refills_evenly() {
        let (limiter, clock) = limiter();
        for _ in 0..60 {
            limiter.check("c", 60).unwrap();
        }
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check("c", 60).is_err());
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check("c", 60).is_ok());
        assert!(limiter.check("c", 60).is_err());
        clock.advance(Duration::from_secs(120));
        for _ in 0..60 {
            assert!(limiter.check("c", 60).is_ok());
        }
    }

    #[test]
    fn refused_requests_do_not_consume() {
        let (limiter, clock) = limiter();
        limiter.check("c", 1).unwrap();
        clock.advance(Duration::from_secs(30));
        for _ in 0..100 {
            assert!(limiter.check("c", 1).is_err());
        }
        clock.advance(Duration::from_secs(30));
        assert!(limiter.check("c", 1).is_ok());
    }

    /// Many keys cost a check nothing (the old map was pruned in the check,
    /// O(n) under one lock, past 10,000 keys); the keys that have refilled
    /// are forgotten in the background.
    #[test]
    fn keys_that_have_refilled_are_forgotten() {
        let (limiter, clock) = limiter();
        for n in 0..20_000 {
            limiter.check(&format!("address-{n}"), 30).unwrap();
        }
        limiter.check("busy", 1).unwrap();
        assert_eq!(limiter.forget_idle(), 20_001);
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            limiter.forget_idle(),
            1,
            "only the key still counting stays"
        );
        assert!(limiter.check("busy", 1).is_err());
    }
}
