//! The window arithmetic against an exact reference model: a list of
//! timestamps. Over random periods, random gaps, counts of several recipients
//! at once and clock steps of up to ten years either way, the counter never
//! counts fewer recipients than the model (never loose), at most those of one
//! more bucket (strict by at most PERIOD/60, rounded up to a millisecond),
//! and `room_at` names the very moment the window has room.
//!
//! The default case count runs in `cargo test`; a long run is
//! `PROPTEST_CASES=100000 cargo test --release --test window_model`.
//!
//! The model follows the counter's rule for a clock stepped back: a
//! recipient that the clock now places in the future happened at the latest
//! now, so from then on it counts as of now (see `window.rs`).

use overlimit::time::Time;
use overlimit::window::{Window, MAX_KEPT};
use proptest::prelude::*;

const TEN_YEARS: i64 = 10 * 365 * 86_400_000;

#[derive(Clone, Debug)]
enum Step {
    /// Time passes (milliseconds).
    Wait(u64),
    /// The wall clock is stepped (milliseconds, either way).
    Jump(i64),
    /// `n` recipients are counted now.
    Add(u64),
}

fn step(period_ms: u64) -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..=period_ms / 4 + 50).prop_map(Step::Wait),
        2 => (0..=2 * period_ms).prop_map(Step::Wait),
        1 => prop_oneof![
            -TEN_YEARS..=TEN_YEARS,
            -(period_ms as i64)..=(period_ms as i64),
        ]
        .prop_map(Step::Jump),
        8 => (1u64..=5).prop_map(Step::Add),
    ]
}

fn period() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..=5, 1u32..=3_600, 1u32..=366 * 86_400]
}

/// The exact model: every recipient's time and count, folded to `now` when
/// the clock puts it in the future. A recipient seen older than the period
/// is gone for good, whatever the clock says later: it is. `loose_gone` is
/// the same for a period one bucket longer, the most the counter may keep.
struct Model {
    period: u64,
    width: u64,
    recipients: Vec<Recipient>,
}

struct Recipient {
    at: u64,
    n: u64,
    gone: bool,
    loose_gone: bool,
}

impl Model {
    fn observe(&mut self, now: u64) {
        for r in &mut self.recipients {
            r.at = r.at.min(now);
            r.gone |= r.at + self.period <= now;
            r.loose_gone |= r.at + self.period + self.width <= now;
        }
    }

    /// Recipients within the period up to `now`.
    fn count(&self) -> u64 {
        self.recipients
            .iter()
            .filter(|r| !r.gone)
            .map(|r| r.n)
            .sum()
    }

    /// Recipients within the period and one bucket more.
    fn bound(&self) -> u64 {
        self.recipients
            .iter()
            .filter(|r| !r.loose_gone)
            .map(|r| r.n)
            .sum()
    }
}

proptest! {
    #[test]
    fn the_window_errs_strict_by_at_most_one_bucket_and_room_at_is_exact(
        (p, steps) in period().prop_flat_map(|p| {
            (Just(p), prop::collection::vec(step(u64::from(p) * 1000), 1..120))
        }),
        start in 1_000_000_000_000u64..2_000_000_000_000,
    ) {
        let mut w = Window::new(p);
        let period = u64::from(p) * 1000;
        let width = w.width();
        prop_assert!(width <= period / 60 + 1, "a bucket is PERIOD/60, rounded up");
        let mut model = Model { period, width, recipients: Vec::new() };
        let mut now = start;
        for s in steps {
            match s {
                Step::Wait(ms) => now += ms,
                Step::Jump(ms) => now = now.saturating_add_signed(ms).max(period),
                Step::Add(n) => {
                    w.add(Time::from_millis(now), n);
                    model.observe(now);
                    model.recipients.push(Recipient { at: now, n, gone: false, loose_gone: false });
                }
            }
            w.expire(Time::from_millis(now));
            model.observe(now);
            let counted = w.count();
            let (exact, bound) = (model.count(), model.bound());
            prop_assert!(counted >= exact, "loose: {counted} counted, {exact} in the period");
            prop_assert!(counted <= bound, "too strict: {counted} counted, {bound} within a bucket more");
            prop_assert!(w.counts.len() <= MAX_KEPT);
            for max in [1, 2, 5, counted.max(1)] {
                let Some(at) = w.room_at(max) else {
                    prop_assert!(counted < max);
                    continue;
                };
                prop_assert!(counted >= max);
                prop_assert!(at.millis() > now, "room at {at:?} is not after now {now}");
                prop_assert!(at.millis() - now <= period + width, "room in {} ms", at.millis() - now);
                let mut later = w.clone();
                later.expire(at);
                prop_assert!(later.count() < max, "no room at room_at");
                let mut before = w.clone();
                before.expire(Time::from_millis(at.millis() - 1));
                prop_assert!(before.count() >= max, "room before room_at");
            }
        }
    }
}

#[test]
fn ten_per_second_means_ten_per_second() {
    let mut w = Window::new(1);
    let t0 = 1_700_000_000_000;
    w.add(Time::from_millis(t0), 10);
    let free = w.room_at(10).unwrap().millis() - t0;
    // The bug: buckets of whole seconds held them up to 3 s.
    assert!((1_000..=1_017).contains(&free), "room after {free} ms");
}

#[test]
fn one_recipient_counted_ten_years_ahead_does_not_lock_a_client_out() {
    let mut w = Window::new(3600);
    let now = 1_700_000_000_000;
    w.add(Time::from_millis(now + TEN_YEARS as u64), 1);
    w.expire(Time::from_millis(now));
    let free = w.room_at(1).unwrap().millis() - now;
    assert!(free <= 3_600_000 + 60_000, "room in {free} ms");
}

proptest! {
    /// A damaged or hostile counter file holds any numbers: no index, sum or
    /// product of the window arithmetic may overflow (tests run with
    /// overflow checks), and the window stays bounded.
    #[test]
    fn hostile_windows_overflow_nothing_and_stay_bounded(
        period in any::<u32>().prop_map(|p| p.max(1)),
        first in any::<u64>(),
        counts in prop::collection::vec(any::<u64>(), 0..=MAX_KEPT),
        times in prop::collection::vec((any::<u64>(), any::<u64>()), 1..8),
    ) {
        let mut w = Window { period, first, counts };
        for (now, n) in times {
            let now = Time::from_millis(now);
            w.expire(now);
            let _ = w.count();
            let _ = w.room_at(1);
            let _ = w.room_at(u64::MAX);
            w.add(now, n);
            w.take_back(now, n / 2);
            prop_assert!(w.counts.len() <= MAX_KEPT);
        }
    }
}
