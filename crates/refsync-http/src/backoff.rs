//! Retry policy: how many tries, and how long to wait between them (full-jitter exponential
//! backoff that honours the upstream's `Retry-After`).

use std::time::Duration;

/// How [`HttpClient::send`](crate::HttpClient::send) retries a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included (default 4). `0` is treated as `1`.
    pub max_attempts: u32,
    /// The backoff cap of the first retry; doubled on each further retry (default 500 ms).
    pub base: Duration,
    /// The largest backoff cap (default 30 s).
    pub max_delay: Duration,
    /// The longest server-requested wait (`Retry-After` or a vendor reset header) that the
    /// client sleeps through (default 60 s). A longer one is returned to the caller as the
    /// [`RateLimited`](refsync_core::ErrorKind::RateLimited) error, with `retry_after` set,
    /// instead of holding the task.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (one try).
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The backoff cap after `attempt` failed tries (`attempt` is 1-based):
    /// `min(max_delay, base * 2^(attempt - 1))`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        self.base
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay)
    }

    /// How long to wait before the next try, after `attempt` (1-based) tries failed.
    ///
    /// Full jitter: uniformly random in `0..=cap(attempt)`, and never less than `retry_after`
    /// when the server asked for one (the caller decides beforehand whether that wait is
    /// acceptable, see [`RetryPolicy::max_retry_after`]).
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl rand::Rng,
    ) -> Duration {
        let cap_nanos = u64::try_from(self.cap(attempt).as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=cap_nanos));
        match retry_after {
            Some(wait) => jittered.max(wait),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 4);
        assert_eq!(p.base, Duration::from_millis(500));
        assert_eq!(p.max_delay, Duration::from_secs(30));
        assert_eq!(p.max_retry_after, Duration::from_secs(60));
        assert_eq!(RetryPolicy::none().max_attempts, 1);
    }

    #[test]
    fn cap_doubles_then_saturates() {
        let p = RetryPolicy::default();
        assert_eq!(p.cap(0), Duration::from_millis(500));
        assert_eq!(p.cap(1), Duration::from_millis(500));
        assert_eq!(p.cap(2), Duration::from_secs(1));
        assert_eq!(p.cap(3), Duration::from_secs(2));
        assert_eq!(p.cap(7), Duration::from_secs(30));
        assert_eq!(p.cap(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..10 {
            let d = p.delay(attempt, Some(Duration::from_secs(45)), &mut rng);
            assert!(d >= Duration::from_secs(45));
            assert!(d <= Duration::from_secs(45).max(p.cap(attempt)));
        }
    }

    #[test]
    fn jitter_spreads() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<_> = (0..50).map(|_| p.delay(3, None, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 40);
    }

    proptest! {
        #[test]
        fn delay_is_bounded(
            attempt in any::<u32>(),
            base_ms in 0u64..100_000,
            max_ms in 0u64..1_000_000,
            ra in proptest::option::of(0u64..1_000_000),
            seed in any::<u64>(),
        ) {
            let p = RetryPolicy {
                max_attempts: 4,
                base: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(max_ms),
                max_retry_after: Duration::from_secs(60),
            };
            let ra = ra.map(Duration::from_millis);
            let d = p.delay(attempt, ra, &mut StdRng::seed_from_u64(seed));
            prop_assert!(d <= p.cap(attempt).max(ra.unwrap_or_default()));
            prop_assert!(d >= ra.unwrap_or_default());
            prop_assert!(p.cap(attempt) <= p.max_delay);
        }
    }
}
