//! One rolling window of a counter, and the one arithmetic every program
//! uses for it: what is still counted, and when room frees up.
//!
//! A window of PERIOD is kept as buckets of PERIOD/60 (rounded up to whole
//! milliseconds), so a counter stays under a page whatever the limit. A
//! recipient at time t falls in the bucket `[b×w, (b+1)×w)` holding t and is
//! counted at `now` while its bucket's end is less than PERIOD ago, i.e.
//! while `now < (b+1)×w + PERIOD`: that is at least until `t + PERIOD` (never
//! loose) and at most one bucket longer (strict by at most PERIOD/60 plus a
//! millisecond). `Time::now` truncates to the millisecond, which moves t back
//! and so can only shorten a wait, never lengthen the count past that bound.
//!
//! The wall clock may be stepped. A bucket after `now` (the clock went back)
//! is folded into the bucket of `now`: whatever it holds happened at the
//! latest now, so counting it for a period from now errs strict, and no
//! bucket is ever left in a future that would lock a client out for years. A
//! clock stepped forward ages every bucket by the step, as it would any
//! timestamp: there is no clock shared by every process that a step spares.
//!
//! Every index and product here is saturating: a damaged or hostile counter
//! file holds any number, and none may overflow.

use crate::time::Time;

/// Buckets per period.
pub const BUCKETS: u64 = 60;
/// Most buckets a window holds once expired: the buckets from PERIOD ago to
/// now, at most PERIOD/width + 1.
pub const MAX_KEPT: usize = BUCKETS as usize + 1;

/// Recipient counts per bucket of one rolling window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Seconds.
    pub period: u32,
    /// Absolute index (milliseconds / bucket width) of `counts[0]`.
    pub first: u64,
    pub counts: Vec<u64>,
}

impl Window {
    pub fn new(period: u32) -> Window {
        Window {
            period,
            first: 0,
            counts: Vec::new(),
        }
    }

    pub fn period_millis(&self) -> u64 {
        u64::from(self.period) * 1000
    }

    /// Milliseconds per bucket.
    pub fn width(&self) -> u64 {
        self.period_millis().div_ceil(BUCKETS).max(1)
    }

    /// The index of the bucket holding `t`.
    pub fn bucket(&self, t: Time) -> u64 {
        t.millis() / self.width()
    }

    fn last(&self) -> u64 {
        let len = self.counts.len().saturating_sub(1) as u64;
        self.first.saturating_add(len)
    }

    /// Drops the buckets that no longer overlap the window ending at `now`,
    /// and folds any bucket after `now` into `now`'s (see the top of the file).
    pub fn expire(&mut self, now: Time) {
        let here = self.bucket(now);
        if !self.counts.is_empty() && self.last() > here {
            let keep = match here.checked_sub(self.first) {
                Some(d) => usize::try_from(d).map_or(usize::MAX, |d| d.saturating_add(1)),
                None => 0,
            };
            let future = sum(self.counts.get(keep..).unwrap_or(&[]));
            self.counts.truncate(keep);
            self.put(here, future);
        }
        let oldest = now.millis().saturating_sub(self.period_millis()) / self.width();
        if oldest > self.first {
            let gone = usize::try_from(oldest - self.first).unwrap_or(usize::MAX);
            self.counts.drain(..gone.min(self.counts.len()));
            self.first = oldest;
        }
        while self.counts.last() == Some(&0) {
            self.counts.pop();
        }
        let zeros = self.counts.iter().take_while(|&&c| c == 0).count();
        self.counts.drain(..zeros);
        self.first = if self.counts.is_empty() {
            oldest
        } else {
            self.first.saturating_add(zeros as u64)
        };
    }

    /// Recipients within the window (call `expire` first).
    pub fn count(&self) -> u64 {
        sum(&self.counts)
    }

    /// Counts `n` recipients at `now`, in one step.
    pub fn add(&mut self, now: Time, n: u64) {
        self.expire(now);
        self.put(self.bucket(now), n);
    }

    /// Adds `n` to bucket `index`; an index before the first bucket kept
    /// goes into the first, which holds it at least as long.
    pub(crate) fn put(&mut self, index: u64, n: u64) {
        if n == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.first = index;
        }
        let mut at = usize::try_from(index.saturating_sub(self.first)).unwrap_or(usize::MAX);
        if at >= MAX_KEPT {
            // Only a caller that did not expire first gets here (reading an
            // old file): the oldest buckets move into a later one, which
            // holds them longer, and the window stays bounded.
            let shift = at - (MAX_KEPT - 1);
            let gone = shift.min(self.counts.len());
            let moved = sum(&self.counts[..gone]);
            self.counts.drain(..gone);
            self.first = self.first.saturating_add(shift as u64);
            if self.counts.is_empty() {
                self.counts.push(0);
            }
            self.counts[0] = self.counts[0].saturating_add(moved);
            at = MAX_KEPT - 1;
        }
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] = self.counts[at].saturating_add(n);
    }

    /// Takes back `n` recipients counted by `add(at, _)`, from the bucket that
    /// call used (or as much of `n` as it still holds: an expired bucket has
    /// nothing left to give back).
    pub fn take_back(&mut self, at: Time, n: u64) {
        let here = self.bucket(at);
        if self.counts.is_empty() || here < self.first {
            return;
        }
        // A bucket after the last was folded into the last (a clock step).
        let i = usize::try_from(here - self.first).unwrap_or(usize::MAX);
        let i = i.min(self.counts.len() - 1);
        self.counts[i] = self.counts[i].saturating_sub(n);
    }

    /// The first moment at which the window holds fewer than `max` (call
    /// `expire` first); `None` when it already does. The bucket that must
    /// go for that leaves at its end plus the period.
    pub fn room_at(&self, max: u64) -> Option<Time> {
        let mut left = self.count();
        if left < max {
            return None;
        }
        for (i, c) in self.counts.iter().enumerate() {
            left = left.saturating_sub(*c);
            if left < max {
                let end = self
                    .first
                    .saturating_add(i as u64 + 1)
                    .saturating_mul(self.width());
                return Some(Time::from_millis(end.saturating_add(self.period_millis())));
            }
        }
        None
    }
}

fn sum(counts: &[u64]) -> u64 {
    counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn take_back_undoes_add_and_never_goes_below_zero() {
        let mut w = Window::new(3600);
        w.add(at(1_000_000_000), 3);
        w.add(at(1_000_200_000), 1);
        w.take_back(at(1_000_000_000), 2);
        assert_eq!(w.count(), 2);
        w.take_back(at(1_000_000_000), 5);
        assert_eq!(w.count(), 1);
        w.take_back(at(10), 1);
        assert_eq!(w.count(), 1, "a time before the first bucket holds nothing");
    }

    #[test]
    fn an_hour_window_errs_strict_by_at_most_a_minute() {
        let mut w = Window::new(3600); // 60 s buckets
        let t0 = 1_000_020_000;
        for t in [0, 30_000, 39_999] {
            w.add(at(t0 + t), 1);
        }
        // Counted a full period after the last recipient...
        w.expire(at(t0 + 39_999 + 3_600_000 - 1));
        assert_eq!(w.count(), 3);
        // ...and free within a bucket of it.
        let free = w.room_at(3).unwrap();
        assert!(free.millis() >= t0 + 39_999 + 3_600_000);
        assert!(free.millis() <= t0 + 3_600_000 + 60_000);
        w.expire(free);
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn three_per_two_seconds_has_room_again_two_seconds_after() {
        // The bug: buckets of whole seconds kept a recipient up to 4 s.
        let mut w = Window::new(2);
        w.add(at(100_000), 1);
        w.add(at(100_300), 2);
        let free = w.room_at(3).unwrap();
        assert!(
            free.millis() >= 102_000 && free.millis() <= 102_000 + 34,
            "{free:?}"
        );
    }

    #[test]
    fn a_bucket_in_the_future_is_folded_into_now() {
        let mut w = Window::new(60);
        let ten_years = 10 * 365 * 86_400_000;
        let now = 1_700_000_000_000;
        w.add(at(now + ten_years), 1);
        w.add(at(now), 1);
        assert_eq!(w.count(), 2);
        assert!(w.room_at(1).unwrap().millis() <= now + 61_000);
    }

    #[test]
    fn hostile_indices_neither_overflow_nor_allocate() {
        let mut w = Window {
            period: u32::MAX,
            first: u64::MAX,
            counts: vec![u64::MAX; MAX_KEPT],
        };
        assert_eq!(w.count(), u64::MAX);
        assert!(w.room_at(1).is_some());
        w.expire(at(1));
        assert_eq!(w.count(), u64::MAX);
        w.add(at(u64::MAX), u64::MAX);
        w.take_back(at(u64::MAX), 1);
        assert!(w.counts.len() <= MAX_KEPT);
        let mut w = Window::new(1);
        w.put(0, 1);
        w.put(u64::MAX, 1);
        assert_eq!((w.count(), w.counts.len()), (2, MAX_KEPT));
    }
}
