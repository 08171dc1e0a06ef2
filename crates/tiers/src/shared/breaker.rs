//! A circuit breaker, so that a dead shared store costs one timeout per cool-down, not one per read.
//!
//! Closed: calls go through; `threshold` failures in a row open it. Open: calls are refused at
//! once until `cooldown` has passed, then one probe call is let through (half-open). The probe's
//! success closes the breaker; its failure opens it again. A probe that never reports (its caller
//! was cancelled) is replaced by another after a further `cooldown`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerState {
    /// Calls go through.
    #[default]
    Closed,
    /// Calls are refused until a probe is due.
    Open,
    /// One probe is out.
    HalfOpen,
}

impl BreakerState {
    /// Its name in stats and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { since: Instant },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

/// What a call's report changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Opened,
    Closed,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker { state: Mutex::new(State::Closed { failures: 0 }), threshold: threshold.max(1), cooldown }
    }

    /// Whether a call may go to the store now. When this returns `true` in the open state, the
    /// caller is the probe and must report its outcome.
    pub(crate) fn allow(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *s = State::HalfOpen { since: now };
                true
            }
            State::HalfOpen { since } if now >= since + self.cooldown => {
                *s = State::HalfOpen { since: now };
                true
            }
            State::Open { .. } | State::HalfOpen { .. } => false,
        }
    }

    /// Reports a call's outcome: `true` if the store answered (a "not found" is an answer).
    pub(crate) fn report(&self, ok: bool) -> Transition {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match (&mut *s, ok) {
            (State::Closed { failures }, true) => {
                *failures = 0;
                Transition::None
            }
            (State::Closed { failures }, false) => {
                *failures += 1;
                if *failures >= self.threshold {
                    *s = State::Open { until: now + self.cooldown };
                    return Transition::Opened;
                }
                Transition::None
            }
            (State::HalfOpen { .. }, true) | (State::Open { .. }, true) => {
                *s = State::Closed { failures: 0 };
                Transition::Closed
            }
            (State::HalfOpen { .. }, false) => {
                *s = State::Open { until: now + self.cooldown };
                Transition::Opened
            }
            (State::Open { .. }, false) => Transition::None,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_probes_after_cooldown_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.allow());
            assert_eq!(b.report(false), Transition::None);
        }
        assert!(b.allow());
        assert_eq!(b.report(false), Transition::Opened);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(), "open: refused at once");

        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow(), "the probe goes through");
        assert!(!b.allow(), "only one probe at a time");
        assert_eq!(b.report(false), Transition::Opened, "a failed probe opens it again");
        assert!(!b.allow());

        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow());
        // A probe that never reports is replaced after another cool-down.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow());
        assert_eq!(b.report(true), Transition::Closed);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(1));
        b.report(false);
        b.report(true);
        assert_eq!(b.report(false), Transition::None);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
