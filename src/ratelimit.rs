//! Per-key limits of N requests a minute, by the generic cell rate algorithm:
//! one timestamp per key, a burst of up to N, refilling evenly over the minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
