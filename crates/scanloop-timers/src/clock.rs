//! The time a service decides with, injectable so a test can move it.
//!
//! Production code takes a [`SharedClock`] instead of calling `Utc::now()` wherever a decision
//! depends on the date (points expiry, a rolling window, a vesting date). A test hands the
//! service a [`ShiftedClock`] and moves it forward: a year passes in a call.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// A clock shared by everything in one process that must agree on the time.
pub type SharedClock = Arc<dyn Clock>;

/// The host's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The host's clock, for production wiring.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The host's clock plus an offset that only grows. Time keeps flowing (so timestamps stay
/// distinct and ordered, as the database and Kafka expect) and jumps when a test calls
/// [`ShiftedClock::advance`]. Never moving back keeps every reader's view monotonic.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_millis: AtomicI64,
}

impl ShiftedClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves the clock forward by `by` (a negative duration is ignored).
    pub fn advance(&self, by: Duration) {
        let millis = by.num_milliseconds().max(0);
        self.offset_millis.fetch_add(millis, Ordering::SeqCst);
    }

    /// How far ahead of the host's clock this clock is.
    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.offset_millis.load(Ordering::SeqCst))
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_jumps_forward_and_never_back() {
        let clock = ShiftedClock::new();
        assert_eq!(clock.offset(), Duration::zero());
        clock.advance(Duration::days(366));
        clock.advance(Duration::days(-5));
        assert_eq!(clock.offset(), Duration::days(366));
        let ahead = clock.now() - Utc::now();
        assert!(ahead > Duration::days(365) && ahead <= Duration::days(366));
    }
}
