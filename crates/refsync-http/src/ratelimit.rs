//! Client-side rate limiting: stay below an upstream's limit instead of collecting 429s
//! (Referral Factory blocks an IP for 7 days after 3 abuses).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A limit of `capacity` calls in any window of length `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls allowed per window. `0` is treated as `1`.
    pub capacity: u32,
    /// The window length.
    pub per: Duration,
}

impl RateLimit {
    /// `capacity` calls per `per`.
    pub fn new(capacity: u32, per: Duration) -> Self {
        RateLimit { capacity, per }
    }
    /// `n` calls per second.
    pub fn per_second(n: u32) -> Self {
        Self::new(n, Duration::from_secs(1))
    }
    /// `n` calls per minute, e.g. `RateLimit::per_minute(540)` to stay 10 % below Referral
    /// Factory's 600.
    pub fn per_minute(n: u32) -> Self {
        Self::new(n, Duration::from_secs(60))
    }
    /// `n` calls per hour.
    pub fn per_hour(n: u32) -> Self {
        Self::new(n, Duration::from_secs(3600))
    }
}

/// The pure core of the limiter: a bucket of `capacity` tokens in which each spent token comes
/// back exactly `per` after it was spent.
///
/// Unlike a classic refill-at-a-steady-rate bucket (which lets up to `2 × capacity - 1` calls
/// through in some windows of length `per`: a full burst, then the refill), this never lets more
/// than `capacity` calls through in **any** window of length `per`, which is what upstream
/// limits such as "600 calls per minute" mean. Bursts up to `capacity` are still allowed.
/// Memory is one `Instant` per token (`capacity` × 16 bytes).
///
/// Time is passed in, so it is testable with simulated instants.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    /// When each currently spent token was spent, oldest first (at most `capacity`).
    spent: VecDeque<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        let limit = RateLimit {
            capacity: limit.capacity.max(1),
            per: limit.per,
        };
        let cap = usize::try_from(limit.capacity)
            .unwrap_or(usize::MAX)
            .min(4096);
        TokenBucket {
            limit,
            spent: VecDeque::with_capacity(cap),
        }
    }

    /// The limit this bucket enforces (with `capacity` at least 1).
    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Takes a token at `now`, or says how long to wait until one comes back.
    ///
    /// `now` should not go backwards; if it does, the bucket stays conservative (tokens spent
    /// "in the future" are not returned early).
    pub fn try_acquire_at(&mut self, now: Instant) -> Result<(), Duration> {
        let per = self.limit.per;
        while let Some(&oldest) = self.spent.front() {
            if now
                .checked_duration_since(oldest)
                .is_some_and(|age| age >= per)
            {
                self.spent.pop_front();
            } else {
                break;
            }
        }
        let capacity = usize::try_from(self.limit.capacity).unwrap_or(usize::MAX);
        if self.spent.len() < capacity {
            self.spent.push_back(now);
            return Ok(());
        }
        let oldest = self.spent.front().copied().unwrap_or(now);
        let back_at = oldest.checked_add(per).unwrap_or(now);
        let wait = back_at.saturating_duration_since(now);
        // Never report a zero wait while refusing (only possible if `now` went backwards).
        Err(wait.max(Duration::from_millis(1)))
    }

    /// Tokens available at `now` (without taking one).
    pub fn available_at(&self, now: Instant) -> u32 {
        let per = self.limit.per;
        let still_spent = self
            .spent
            .iter()
            .filter(|&&t| now.checked_duration_since(t).is_none_or(|age| age < per))
            .count();
        self.limit
            .capacity
            .saturating_sub(u32::try_from(still_spent).unwrap_or(u32::MAX))
    }
}

/// Now, on tokio's clock: the limiter sleeps with `tokio::time::sleep`, so it must measure with
/// the same clock (under `tokio::time::pause` a std `Instant` would not move while the sleeps
/// complete at once, and `acquire` would spin).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A shareable async rate limiter over a [`TokenBucket`] (clones share the bucket).
///
/// Time is tokio's (`tokio::time::Instant`), so tests can drive it with paused time.
///
/// Give every client that talks to the same upstream account the same `RateLimiter`
/// (see [`HttpClientBuilder::rate_limiter`](crate::HttpClientBuilder::rate_limiter)).
/// Waiters are not queued fairly; each waits until a token is back and tries again.
#[derive(Clone)]
pub struct RateLimiter {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = *self.lock().limit();
        f.debug_struct("RateLimiter")
            .field("capacity", &limit.capacity)
            .field("per", &limit.per)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter with a full bucket.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            bucket: Arc::new(Mutex::new(TokenBucket::new(limit))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        // The bucket stays consistent even if a holder panicked: no invariant spans the lock.
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a call is allowed, and takes it.
    pub async fn acquire(&self) {
        loop {
            let result = self.lock().try_acquire_at(now());
            match result {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Takes a call if one is allowed right now.
    pub fn try_acquire(&self) -> bool {
        self.lock().try_acquire_at(now()).is_ok()
    }

    /// The limit enforced.
    pub fn limit(&self) -> RateLimit {
        *self.lock().limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn burst_then_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit::per_second(3));
        assert_eq!(b.available_at(t0), 3);
        for _ in 0..3 {
            b.try_acquire_at(t0).unwrap();
        }
        assert_eq!(b.try_acquire_at(t0), Err(Duration::from_secs(1)));
        let t1 = t0 + Duration::from_millis(400);
        assert_eq!(b.try_acquire_at(t1), Err(Duration::from_millis(600)));
        let t2 = t0 + Duration::from_secs(1);
        assert_eq!(b.available_at(t2), 3);
        b.try_acquire_at(t2).unwrap();
        assert_eq!(b.available_at(t2), 2);
    }

    #[test]
    fn zero_capacity_means_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit::new(0, Duration::from_secs(1)));
        assert_eq!(b.limit().capacity, 1);
        assert!(b.try_acquire_at(t0).is_ok());
        assert!(b.try_acquire_at(t0).is_err());
    }

    #[test]
    fn clock_going_backwards_stays_conservative() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(RateLimit::per_second(1));
        b.try_acquire_at(t0).unwrap();
        let err = b.try_acquire_at(t0 - Duration::from_secs(5)).unwrap_err();
        assert!(err >= Duration::from_secs(1));
    }

    #[test]
    fn limiter_try_acquire_shares_bucket() {
        let l = RateLimiter::new(RateLimit::per_minute(2));
        let l2 = l.clone();
        assert!(l.try_acquire());
        assert!(l2.try_acquire());
        assert!(!l.try_acquire());
        assert_eq!(l.limit(), RateLimit::per_minute(2));
        assert!(format!("{l:?}").contains("capacity: 2"));
    }

    proptest! {
        /// Whatever the arrival pattern, no window of length `per` holds more than `capacity`
        /// granted calls; and a refused call is told a wait after which it would be granted.
        #[test]
        fn never_more_than_capacity_in_any_window(
            capacity in 1u32..20,
            per_ms in 1u64..2_000,
            gaps in proptest::collection::vec(0u64..300, 1..300),
        ) {
            let per = Duration::from_millis(per_ms);
            let mut bucket = TokenBucket::new(RateLimit::new(capacity, per));
            let t0 = Instant::now();
            let mut now = t0;
            let mut granted: Vec<Instant> = Vec::new();
            for gap in gaps {
                now += Duration::from_millis(gap);
                match bucket.try_acquire_at(now) {
                    Ok(()) => granted.push(now),
                    Err(wait) => {
                        prop_assert!(wait > Duration::ZERO && wait <= per);
                        let mut probe = bucket.clone();
                        prop_assert!(probe.try_acquire_at(now + wait).is_ok());
                    }
                }
            }
            // Any window [start, start + per) starting at a grant is the worst case.
            for (i, start) in granted.iter().enumerate() {
                let in_window = granted[i..].iter().take_while(|t| **t < *start + per).count();
                prop_assert!(in_window <= capacity as usize, "{} calls in one window", in_window);
            }
        }
    }
}
