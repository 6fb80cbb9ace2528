//! The circuit breaker that keeps a 429 storm from turning into Referral Factory's 7-day IP
//! block, and the [`Clock`] it (and the retry waits) run on.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where the client reads the time and sleeps: the circuit breaker's cool-downs and the waits
/// between retries (`Retry-After`, backoff). The rate limiter runs on tokio's clock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> Instant;
    /// Waits `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// The default clock: tokio's (`tokio::time`), so paused test time applies.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: time moves only when [`advance`](ManualClock::advance) is called or
/// when the client sleeps (a sleep returns at once after moving the clock), and every sleep is
/// recorded.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Debug)]
struct ManualInner {
    start: Instant,
    offset: Duration,
    sleeps: Vec<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock at an arbitrary start instant.
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualInner {
                start: Instant::now(),
                offset: Duration::ZERO,
                sleeps: Vec::new(),
            })),
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.lock().offset += by;
    }
    /// Time elapsed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.lock().offset
    }
    /// The sleeps the client asked for, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock().sleeps.clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let g = self.lock();
        g.start + g.offset
    }
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        {
            let mut g = self.lock();
            g.offset += duration;
            g.sleeps.push(duration);
        }
        Box::pin(std::future::ready(()))
    }
}

/// Settings of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// 429s that open the breaker (default 2) ...
    pub threshold: u32,
    /// ... when they fall within this window (default 60 s).
    pub window: Duration,
    /// The first cool-down (default 5 min).
    pub cooldown: Duration,
    /// The longest cool-down after failed probes (default 1 h).
    pub max_cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            threshold: 2,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(300),
            max_cooldown: Duration::from_secs(3600),
        }
    }
}

/// What the breaker is doing, for inspection (health checks, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; `recent_429s` rate-limit answers fell within the window.
    Closed {
        /// 429s within the window.
        recent_429s: u32,
    },
    /// Every call fails fast for `remaining`.
    Open {
        /// Time left in the cool-down.
        remaining: Duration,
        /// The cool-down this opening started with.
        cooldown: Duration,
    },
    /// The cool-down is over: the next call is the one probe.
    HalfOpen {
        /// Whether the probe is in flight (other calls fail fast meanwhile).
        probe_in_flight: bool,
    },
}

/// A circuit breaker over rate-limit answers.
///
/// - **Closed**: calls go through. Each HTTP 429 is remembered; `threshold` 429s (2) within
///   `window` (60 s) open it.
/// - **Open**: every call fails at once, without touching the network, with
///   `RateLimited { retry_after: remaining cool-down }`. The cool-down is `cooldown` (5 min) or
///   the server's `Retry-After` when longer.
/// - **Half-open** (cool-down over): exactly one call — the probe — goes through; the others
///   fail fast until it has an answer. Any answer other than 429 closes the breaker; a 429
///   reopens it with the cool-down doubled (capped at `max_cooldown`, 1 h); no answer at all
///   (timeout, connection error, or the probe was cancelled) lets the next call probe.
///
/// Clones share the state. Opening and closing are logged (`tracing`, no secrets).
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Mutex<Inner>>,
    settings: BreakerSettings,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("settings", &self.settings)
            .field("state", &self.state())
            .finish()
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every transition; a probe permit only acts on the generation it came from.
    generation: u64,
}

#[derive(Debug)]
enum State {
    Closed {
        recent: VecDeque<Instant>,
    },
    Open {
        until: Instant,
        cooldown: Duration,
    },
    HalfOpen {
        cooldown: Duration,
        probe_in_flight: bool,
    },
}

/// Why a call may not go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Open, for `remaining`.
    Open { remaining: Duration },
    /// Half-open with the probe in flight.
    ProbeInFlight,
}

/// What came back for a call made under a [`Permit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An HTTP answer other than 429 (2xx or an error status).
    Answered,
    /// HTTP 429.
    RateLimited(Option<Duration>),
    /// No answer (timeout, connection failure).
    NoAnswer,
}

/// The breaker opened (or reopened) because of this call's 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) remaining: Duration,
}

/// Leave to make one call; report its [`Outcome`] with [`Permit::record`].
pub(crate) struct Permit {
    breaker: CircuitBreaker,
    generation: u64,
    probe: bool,
    recorded: bool,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings, clock: Arc<dyn Clock>) -> Self {
        CircuitBreaker {
            inner: Arc::new(Mutex::new(Inner {
                state: State::Closed {
                    recent: VecDeque::new(),
                },
                generation: 0,
            })),
            settings,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The settings.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let now = self.clock.now();
        let g = self.lock();
        match &g.state {
            State::Closed { recent } => BreakerState::Closed {
                recent_429s: u32::try_from(
                    recent
                        .iter()
                        .filter(|t| now.saturating_duration_since(**t) < self.settings.window)
                        .count(),
                )
                .unwrap_or(u32::MAX),
            },
            State::Open { until, cooldown } if now < *until => BreakerState::Open {
                remaining: until.saturating_duration_since(now),
                cooldown: *cooldown,
            },
            State::Open { .. } => BreakerState::HalfOpen {
                probe_in_flight: false,
            },
            State::HalfOpen {
                probe_in_flight, ..
            } => BreakerState::HalfOpen {
                probe_in_flight: *probe_in_flight,
            },
        }
    }

    /// Fails fast when no call may go out now (without taking the probe).
    pub(crate) fn check(&self) -> Result<(), Rejection> {
        let now = self.clock.now();
        let g = self.lock();
        match &g.state {
            State::Open { until, .. } if now < *until => Err(Rejection::Open {
                remaining: until.saturating_duration_since(now),
            }),
            State::HalfOpen {
                probe_in_flight: true,
                ..
            } => Err(Rejection::ProbeInFlight),
            _ => Ok(()),
        }
    }

    /// Takes leave for one call: always when closed, the single probe when half-open.
    pub(crate) fn permit(&self) -> Result<Permit, Rejection> {
        let now = self.clock.now();
        let mut g = self.lock();
        let probe = match &mut g.state {
            State::Closed { .. } => false,
            State::Open { until, .. } if now < *until => {
                return Err(Rejection::Open {
                    remaining: until.saturating_duration_since(now),
                });
            }
            State::Open { cooldown, .. } => {
                let cooldown = *cooldown;
                g.state = State::HalfOpen {
                    cooldown,
                    probe_in_flight: true,
                };
                g.generation += 1;
                tracing::info!(
                    connector = crate::NAME,
                    "circuit breaker half-open: cool-down over, sending one probe call"
                );
                true
            }
            State::HalfOpen {
                probe_in_flight: true,
                ..
            } => return Err(Rejection::ProbeInFlight),
            State::HalfOpen {
                probe_in_flight, ..
            } => {
                *probe_in_flight = true;
                true
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            generation: g.generation,
            probe,
            recorded: false,
        })
    }

    fn record(&self, generation: u64, probe: bool, outcome: Outcome) -> Option<Opened> {
        let now = self.clock.now();
        let s = self.settings;
        let mut g = self.lock();
        let current = g.generation == generation;
        match (&mut g.state, outcome) {
            (State::Closed { recent }, Outcome::RateLimited(retry_after)) => {
                recent.push_back(now);
                while recent
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= s.window)
                {
                    recent.pop_front();
                }
                if recent.len() >= usize::try_from(s.threshold.max(1)).unwrap_or(usize::MAX) {
                    let remaining = s.cooldown.max(retry_after.unwrap_or_default());
                    g.state = State::Open {
                        until: now + remaining,
                        cooldown: s.cooldown,
                    };
                    g.generation += 1;
                    tracing::warn!(
                        connector = crate::NAME,
                        cooldown_s = remaining.as_secs(),
                        threshold = s.threshold,
                        window_s = s.window.as_secs(),
                        "circuit breaker opened: Referral Factory answered 429 repeatedly; every call fails fast until the cool-down is over (Referral Factory blocks the IP for 7 days after three abuses)"
                    );
                    return Some(Opened { remaining });
                }
                None
            }
            (State::HalfOpen { cooldown, .. }, Outcome::RateLimited(retry_after)) => {
                let doubled = cooldown.saturating_mul(2).min(s.max_cooldown);
                let remaining = doubled.max(retry_after.unwrap_or_default());
                g.state = State::Open {
                    until: now + remaining,
                    cooldown: doubled,
                };
                g.generation += 1;
                tracing::warn!(
                    connector = crate::NAME,
                    cooldown_s = remaining.as_secs(),
                    "circuit breaker reopened: the probe call was rate-limited again; cool-down doubled"
                );
                Some(Opened { remaining })
            }
            (State::HalfOpen { .. }, Outcome::Answered) if probe && current => {
                g.state = State::Closed {
                    recent: VecDeque::new(),
                };
                g.generation += 1;
                tracing::info!(
                    connector = crate::NAME,
                    "circuit breaker closed: the probe call was answered without 429"
                );
                None
            }
            (
                State::HalfOpen {
                    probe_in_flight, ..
                },
                Outcome::NoAnswer,
            ) if probe && current => {
                *probe_in_flight = false;
                None
            }
            // Answers of calls made while closed, and late answers while open, change nothing.
            _ => None,
        }
    }
}

impl Permit {
    /// Reports the outcome; `Some` when this 429 opened the breaker.
    pub(crate) fn record(mut self, outcome: Outcome) -> Option<Opened> {
        self.recorded = true;
        self.breaker.record(self.generation, self.probe, outcome)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            // A cancelled probe: let the next call probe.
            self.breaker
                .record(self.generation, true, Outcome::NoAnswer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new();
        (
            CircuitBreaker::new(BreakerSettings::default(), Arc::new(clock.clone())),
            clock,
        )
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn two_429s_within_a_minute_open_it() {
        let (b, clock) = breaker();
        assert_eq!(b.permit().unwrap().record(Outcome::RateLimited(None)), None);
        assert_eq!(b.state(), BreakerState::Closed { recent_429s: 1 });
        clock.advance(Duration::from_secs(59));
        let opened = b.permit().unwrap().record(Outcome::RateLimited(None));
        assert_eq!(opened, Some(Opened { remaining: 5 * MIN }));
        assert_eq!(b.check(), Err(Rejection::Open { remaining: 5 * MIN }));
        clock.advance(MIN);
        assert_eq!(
            b.permit().err(),
            Some(Rejection::Open { remaining: 4 * MIN })
        );
    }

    #[test]
    fn rate_limits_further_apart_than_the_window_do_not() {
        let (b, clock) = breaker();
        b.permit().unwrap().record(Outcome::RateLimited(None));
        clock.advance(MIN);
        assert_eq!(b.permit().unwrap().record(Outcome::RateLimited(None)), None);
        assert_eq!(b.state(), BreakerState::Closed { recent_429s: 1 });
        b.permit().unwrap().record(Outcome::Answered);
        assert!(b.check().is_ok());
    }

    #[test]
    fn a_longer_retry_after_extends_the_cooldown() {
        let (b, _clock) = breaker();
        b.permit().unwrap().record(Outcome::RateLimited(None));
        let opened = b
            .permit()
            .unwrap()
            .record(Outcome::RateLimited(Some(10 * MIN)));
        assert_eq!(
            opened,
            Some(Opened {
                remaining: 10 * MIN
            })
        );
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let (b, clock) = breaker();
        b.permit().unwrap().record(Outcome::RateLimited(None));
        b.permit().unwrap().record(Outcome::RateLimited(None));
        clock.advance(5 * MIN);
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                probe_in_flight: false
            }
        );
        let probe = b.permit().unwrap();
        assert_eq!(b.permit().err(), Some(Rejection::ProbeInFlight));
        assert_eq!(b.check(), Err(Rejection::ProbeInFlight));
        assert_eq!(probe.record(Outcome::Answered), None);
        assert_eq!(b.state(), BreakerState::Closed { recent_429s: 0 });
        assert!(b.permit().is_ok());
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_an_hour() {
        let (b, clock) = breaker();
        b.permit().unwrap().record(Outcome::RateLimited(None));
        b.permit().unwrap().record(Outcome::RateLimited(None));
        let mut expected = 5 * MIN;
        for _ in 0..6 {
            clock.advance(expected);
            let opened = b.permit().unwrap().record(Outcome::RateLimited(None));
            expected = (expected * 2).min(60 * MIN);
            assert_eq!(
                opened,
                Some(Opened {
                    remaining: expected
                })
            );
            assert_eq!(
                b.state(),
                BreakerState::Open {
                    remaining: expected,
                    cooldown: expected
                }
            );
        }
        assert_eq!(expected, 60 * MIN);
    }

    #[test]
    fn a_probe_without_answer_or_dropped_lets_the_next_call_probe() {
        let (b, clock) = breaker();
        b.permit().unwrap().record(Outcome::RateLimited(None));
        b.permit().unwrap().record(Outcome::RateLimited(None));
        clock.advance(5 * MIN);
        b.permit().unwrap().record(Outcome::NoAnswer);
        let probe = b.permit().unwrap();
        drop(probe);
        let probe = b.permit().unwrap();
        assert!(b.permit().is_err());
        probe.record(Outcome::Answered);
        assert!(b.permit().is_ok());
    }

    #[test]
    fn late_answers_do_not_close_an_open_breaker() {
        let (b, _clock) = breaker();
        let slow = b.permit().unwrap();
        b.permit().unwrap().record(Outcome::RateLimited(None));
        b.permit().unwrap().record(Outcome::RateLimited(None));
        assert_eq!(slow.record(Outcome::Answered), None);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn manual_clock_sleeps_move_time() {
        let c = ManualClock::new();
        let t0 = c.now();
        let fut = c.sleep(Duration::from_secs(3));
        drop(fut);
        assert_eq!(c.now() - t0, Duration::from_secs(3));
        assert_eq!(c.sleeps(), vec![Duration::from_secs(3)]);
        assert_eq!(c.elapsed(), Duration::from_secs(3));
    }
}
