//! One circuit breaker per upstream. Closed: count outcomes in a fixed window and open when the failure
//! rate reaches the threshold (with enough requests). Open: refuse at once (the caller answers 503 with
//! `Retry-After`) until `open_ms` passed. Half-open: let a few probes through; all succeed → closed, any
//! fails → open again.

use crate::config::BreakerSettings;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { since: Instant, total: u32, failed: u32 },
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

/// Whether a request may go to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    No { retry_after: Duration },
}

impl Default for Breaker {
    fn default() -> Self {
        Self { state: Mutex::new(State::Closed { since: Instant::now(), total: 0, failed: 0 }) }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn admit(&self, s: &BreakerSettings, now: Instant) -> Admit {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } if now < until => Admit::No { retry_after: until - now },
            State::Open { .. } => {
                *state = State::HalfOpen { admitted: 1, succeeded: 0 };
                Admit::Yes
            }
            State::HalfOpen { admitted, succeeded } if admitted < s.half_open_probes => {
                *state = State::HalfOpen { admitted: admitted + 1, succeeded };
                Admit::Yes
            }
            State::HalfOpen { .. } => Admit::No { retry_after: Duration::from_secs(1) },
        }
    }

    pub fn record(&self, s: &BreakerSettings, ok: bool, now: Instant) {
        let mut state = self.lock();
        let open = State::Open { until: now + Duration::from_millis(s.open_ms) };
        *state = match *state {
            State::Closed { since, total, failed } => {
                let (since, total, failed) = if now.duration_since(since) > Duration::from_millis(s.window_ms)
                {
                    (now, 1, u32::from(!ok))
                } else {
                    (since, total + 1, failed + u32::from(!ok))
                };
                if total >= s.min_requests && f64::from(failed) >= s.failure_rate * f64::from(total) {
                    tracing::warn!(total, failed, "circuit breaker opened");
                    open
                } else {
                    State::Closed { since, total, failed }
                }
            }
            State::HalfOpen { .. } if !ok => open,
            State::HalfOpen { admitted, succeeded } if succeeded + 1 >= s.half_open_probes => {
                let _ = admitted;
                tracing::info!("circuit breaker closed after successful probes");
                State::Closed { since: now, total: 0, failed: 0 }
            }
            State::HalfOpen { admitted, succeeded } => State::HalfOpen { admitted, succeeded: succeeded + 1 },
            // An answer that was admitted before the breaker opened changes nothing.
            s @ State::Open { .. } => s,
        };
    }

    /// 0 closed, 1 open, 2 half-open (the `socialnet_gateway_breaker_state` gauge).
    pub fn state_code(&self) -> f64 {
        match *self.lock() {
            State::Closed { .. } => 0.0,
            State::Open { .. } => 1.0,
            State::HalfOpen { .. } => 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_rate: 0.5,
            min_requests: 4,
            window_ms: 1_000,
            open_ms: 500,
            half_open_probes: 2,
        }
    }

    #[test]
    fn opens_on_the_failure_rate_then_recovers_through_half_open() {
        let (s, b, t0) = (settings(), Breaker::default(), Instant::now());
        for ok in [true, false, true] {
            b.record(&s, ok, t0);
        }
        assert_eq!(b.admit(&s, t0), Admit::Yes, "3 requests: below min_requests");
        b.record(&s, false, t0); // 2 of 4 failed
        assert!(matches!(b.admit(&s, t0), Admit::No { .. }), "open");
        let later = t0 + Duration::from_millis(501);
        assert_eq!(b.admit(&s, later), Admit::Yes, "first probe");
        assert_eq!(b.admit(&s, later), Admit::Yes, "second probe");
        assert!(matches!(b.admit(&s, later), Admit::No { .. }), "no more than the probes");
        b.record(&s, true, later);
        b.record(&s, true, later);
        assert_eq!(b.state_code(), 0.0, "closed again");
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let (s, b, t0) = (settings(), Breaker::default(), Instant::now());
        for _ in 0..4 {
            b.record(&s, false, t0);
        }
        let later = t0 + Duration::from_millis(600);
        assert_eq!(b.admit(&s, later), Admit::Yes);
        b.record(&s, false, later);
        assert!(matches!(b.admit(&s, later), Admit::No { .. }));
    }

    #[test]
    fn an_old_window_is_forgotten() {
        let (s, b, t0) = (settings(), Breaker::default(), Instant::now());
        for _ in 0..3 {
            b.record(&s, false, t0);
        }
        b.record(&s, true, t0 + Duration::from_millis(1_500));
        assert_eq!(b.admit(&s, t0 + Duration::from_millis(1_500)), Admit::Yes);
    }
}
