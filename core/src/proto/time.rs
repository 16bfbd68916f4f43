//! The protocol's clock.
//!
//! Protocol code never reads a clock: every call takes `now: Time`. The driver passes its
//! wall clock made monotonic (never going backwards); the simulator passes virtual time.
//! Because it is wall-clock based, the same value stamps signed records (`issued_ms`).

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time: microseconds since the Unix epoch, on the driver's monotonic clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// From microseconds since the Unix epoch.
    pub const fn from_micros(us: u64) -> Self {
        Time(us)
    }
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms.saturating_mul(1000))
    }
    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    /// Milliseconds since the Unix epoch (what signed records carry).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }
    /// How long after `earlier` this is (zero if it is not after it).
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_sub(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }
}

/// The earliest of two optional deadlines.
pub fn earliest(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_millis(5);
        assert_eq!((t + Duration::from_millis(1)).as_millis(), 6);
        assert_eq!((t - Duration::from_secs(1)), Time::from_micros(0));
        assert_eq!(
            t.saturating_since(t + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(earliest(Some(t), None), Some(t));
        assert_eq!(
            earliest(Some(t), Some(Time::from_micros(1))),
            Some(Time::from_micros(1))
        );
    }
}
