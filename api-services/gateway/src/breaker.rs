//! One circuit breaker per upstream. Closed: count outcomes in a fixed window and open when the failure
//! rate reaches the threshold (with enough requests). Open: refuse at once (the caller answers 503 with
//! `Retry-After`) until `open_ms` passed. Half-open: let a few probes through; all succeed → closed, any
//! fails → open again.

use crate::config::BreakerSettings;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
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
    /// The state last set on the gauge (`u8::MAX`: never), so the gauge is touched on changes only.
    reported: AtomicU8,
}

/// Whether a request may go to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    No { retry_after: Duration },
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Closed { since: Instant::now(), total: 0, failed: 0 }),
            reported: AtomicU8::new(u8::MAX),
        }
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
        f64::from(code(&self.lock()))
    }

    /// Set `socialnet_gateway_breaker_state{upstream}` if the state changed since it was last set (a
    /// labelled gauge lookup per request was a measurable part of the gateway's cost). Under the state's
    /// lock, so two reports cannot leave the gauge on the older state.
    pub fn report(&self, upstream: &str) {
        let state = self.lock();
        let code = code(&state);
        if self.reported.swap(code, Ordering::Relaxed) != code {
            metrics::gauge!("socialnet_gateway_breaker_state", "upstream" => upstream.to_owned())
                .set(f64::from(code));
        }
    }
}

/// The gauge's value of a state: 0 closed, 1 open, 2 half-open.
fn code(state: &State) -> u8 {
    match state {
        State::Closed { .. } => 0,
        State::Open { .. } => 1,
        State::HalfOpen { .. } => 2,
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

    /// Records every value set on a gauge, in order.
    struct Setter(std::sync::Arc<Mutex<Vec<f64>>>);

    impl metrics::GaugeFn for Setter {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            self.0.lock().unwrap().push(value);
        }
    }

    #[test]
    fn the_state_gauge_is_set_first_and_then_on_changes_only() {
        let values: std::sync::Arc<Mutex<Vec<f64>>> = Default::default();
        let gauges = {
            let values = values.clone();
            crate::test_recorder::TestRecorder::gauges(move |_| {
                metrics::Gauge::from_arc(std::sync::Arc::new(Setter(values.clone())))
            })
        };
        let (s, b, t0) = (settings(), Breaker::default(), Instant::now());
        metrics::with_local_recorder(&gauges, || {
            for _ in 0..3 {
                b.record(&s, true, t0);
                b.report("up");
            }
            for _ in 0..4 {
                b.record(&s, false, t0);
                b.report("up");
            }
            let later = t0 + Duration::from_millis(600);
            assert_eq!(b.admit(&s, later), Admit::Yes);
            b.report("up");
            b.record(&s, true, later);
            b.report("up");
            b.record(&s, true, later);
            b.report("up");
        });
        assert_eq!(*values.lock().unwrap(), vec![0.0, 1.0, 2.0, 0.0], "closed, open, half-open, closed");
    }
}
