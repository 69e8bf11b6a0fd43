//! Time as the engine counts it, and every deadline in one place.
//!
//! Windows are as short as one second (`10/1s`), so the engine keeps time in
//! milliseconds: a bucket of a window is PERIOD/60 wide, which at `1s` is
//! 17 ms, and whole seconds would make such a window three times too long.
//! `Time` is a type of its own, not a bare number, so that a caller cannot
//! hand the engine seconds where it expects milliseconds.

use std::time::Duration;

/// How long the plug-in (and any program in an SMTP session) waits for its
/// locks in all; qmail-smtpd has no timeout of its own.
pub const LOCK_WAIT: Duration = Duration::from_secs(1);
/// How long the administrator's tools that change counters (the sweep,
/// `reset`) wait for one counter's lock: no SMTP client is waiting on them.
pub const ADMIN_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long `status`, which only reads, waits for one counter's lock.
pub const READ_LOCK_WAIT: Duration = Duration::from_secs(2);

/// A moment: milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The wall clock, truncated to the millisecond (0 before the epoch).
    /// Truncation errs strict: see `counter.rs`.
    pub fn now() -> Time {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Time(since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }

    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    pub const fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1000))
    }

    pub const fn millis(self) -> u64 {
        self.0
    }

    /// Whole seconds, rounded down: for logs of what happened.
    pub const fn secs(self) -> u64 {
        self.0 / 1000
    }

    /// Whole seconds, rounded up: for when something will be possible, so
    /// that a time shown is never before the moment it names.
    pub const fn secs_up(self) -> u64 {
        self.0.div_ceil(1000)
    }

    /// `self` plus `ms`, or `None` past the end of time (a damaged counter).
    pub fn checked_add_millis(self, ms: u64) -> Option<Time> {
        self.0.checked_add(ms).map(Time)
    }

    /// Milliseconds from `self` until `later` (0 if `later` is not later).
    pub fn millis_until(self, later: Time) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_down_for_the_past_and_up_for_the_future() {
        let t = Time::from_millis(1_500);
        assert_eq!((t.secs(), t.secs_up()), (1, 2));
        assert_eq!(Time::from_secs(7).secs_up(), 7);
        assert_eq!(Time::from_secs(u64::MAX).millis(), u64::MAX);
        assert_eq!(Time::from_millis(u64::MAX).checked_add_millis(1), None);
        assert_eq!(Time::from_secs(5).millis_until(Time::from_secs(2)), 0);
    }
}
