//! A circuit breaker: after `failure_threshold` failed calls in a row the circuit opens and calls
//! fail at once, without touching the network; after `cool_down` one probe call is let through
//! (half-open), and its success closes the circuit again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the breaker opens and how long it stays open.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Consecutive failed calls (after their retries) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before it lets a probe through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, cool_down: Duration::from_secs(2) }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight since `since`; others fail fast until it reports (or it is overdue).
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    /// A probe that has not reported by then is presumed lost (its caller gave up).
    probe_timeout: Duration,
    state: Mutex<State>,
    last_failure: Mutex<String>,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, probe_timeout: Duration) -> Self {
        Self {
            config,
            probe_timeout,
            state: Mutex::new(State::Closed { failures: 0 }),
            last_failure: Mutex::new(String::new()),
        }
    }

    /// Lets a call through, or says why it must fail fast.
    pub(crate) fn admit(&self) -> Result<(), String> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(self.refusal(until - now)),
            State::HalfOpen { since } if now < since + self.probe_timeout => Err(self.refusal(Duration::ZERO)),
            State::Open { .. } | State::HalfOpen { .. } => {
                *state = State::HalfOpen { since: now };
                Ok(())
            }
        }
    }

    /// The service answered (whatever it said): close the circuit.
    pub(crate) fn success(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*state, State::Closed { .. }) {
            metrics::gauge!("loom_db_client_breaker_open").set(0.0);
        }
        *state = State::Closed { failures: 0 };
    }

    /// The service could not be reached: count it, and open the circuit at the threshold.
    pub(crate) fn failure(&self, error: &str) {
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = error.to_owned();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::Open { .. } | State::HalfOpen { .. } => self.config.failure_threshold,
        };
        *state = if failures >= self.config.failure_threshold {
            if !matches!(*state, State::Open { .. }) {
                tracing::warn!(failures, cool_down = ?self.config.cool_down, error, "database service circuit opened");
                metrics::counter!("loom_db_client_breaker_opened_total").increment(1);
                metrics::gauge!("loom_db_client_breaker_open").set(1.0);
            }
            State::Open { until: Instant::now() + self.config.cool_down }
        } else {
            State::Closed { failures }
        };
    }

    /// True while calls fail fast.
    pub(crate) fn is_open(&self) -> bool {
        !matches!(*self.state.lock().unwrap_or_else(|e| e.into_inner()), State::Closed { .. })
    }

    fn refusal(&self, wait: Duration) -> String {
        let last = self.last_failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let next = if wait.is_zero() {
            "a probe call is in flight".to_owned()
        } else {
            format!("next attempt in {} ms", wait.as_millis())
        };
        format!("{} calls in a row failed, failing fast; {next}; last error: {last}", self.config.failure_threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_the_threshold_and_half_opens_after_the_cool_down() {
        let b = Breaker::new(
            BreakerConfig { failure_threshold: 3, cool_down: Duration::from_millis(50) },
            Duration::from_secs(5),
        );
        for _ in 0..2 {
            b.admit().unwrap();
            b.failure("refused");
        }
        b.admit().expect("still closed below the threshold");
        b.failure("refused");
        let why = b.admit().unwrap_err();
        assert!(why.contains("3 calls in a row failed") && why.contains("refused"), "{why}");
        std::thread::sleep(Duration::from_millis(60));
        b.admit().expect("one probe after the cool-down");
        assert!(b.admit().unwrap_err().contains("probe"), "only one probe at a time");
        b.success();
        b.admit().expect("closed again");
        assert!(!b.is_open());
    }

    #[test]
    fn a_failed_probe_reopens_at_once() {
        let b = Breaker::new(
            BreakerConfig { failure_threshold: 1, cool_down: Duration::from_millis(20) },
            Duration::from_secs(5),
        );
        b.failure("x");
        std::thread::sleep(Duration::from_millis(30));
        b.admit().unwrap();
        b.failure("still down");
        assert!(b.admit().is_err());
    }
}
