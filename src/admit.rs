//! The decision for one recipient: lock every counter that applies (the
//! client's own and, for a user, the domain's), accept only if each has room,
//! and raise them all together.
//!
//! Counters are locked in order of file name, so two processes that need the
//! same pair never wait on each other in a cycle; all are held while any is
//! read or written, so the check and the increments are one step to every
//! other process.

use crate::counter::{Counter, MAX_NOTIFIED};
use crate::error::Internal;
use crate::limits::{Item, Limits};
use crate::store::{fits_size_limit, Locked};
use crate::time::Time;
use std::path::Path;
use std::time::Instant;

/// One counter to check and raise.
pub struct Target {
    /// File name in the counter directory.
    pub file: String,
    /// The client, or `@domain`, as stored in the counter and logged.
    pub label: Vec<u8>,
    pub limits: Limits,
}

/// A limit that had no room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Full {
    pub label: Vec<u8>,
    pub item: Item,
    /// Recipients already counted against it.
    pub count: u64,
    /// When a window has room again; `None` for a classic count, which waits
    /// for the sweep or `overlimit reset`, or for more recipients at once
    /// than the limit allows at all.
    pub room_at: Option<Time>,
}

#[derive(Debug, Default)]
pub struct Admission {
    /// Every limit without room; empty when the recipient was accepted.
    pub full: Vec<Full>,
    /// Limits that went over for the first time: tell the administrator.
    pub newly_full: Vec<Full>,
    /// Counters found damaged and started again.
    pub notes: Vec<String>,
}

impl Admission {
    pub fn accepted(&self) -> bool {
        self.full.is_empty()
    }

    /// When every full limit has room again; see `room_at`.
    pub fn room_at(&self) -> Option<Time> {
        room_at(&self.full)
    }
}

/// When every one of `full` has room again; `None` if one waits for a reset.
pub fn room_at(full: &[Full]) -> Option<Time> {
    full.iter()
        .map(|f| f.room_at)
        .try_fold(Time::default(), |a, r| r.map(|r| a.max(r)))
}

/// Decides one recipient at time `now`. With `monitor`, a recipient without
/// room is counted as if accepted, and reported all the same.
pub fn admit(
    dir: &Path,
    targets: &[Target],
    now: Time,
    deadline: Instant,
    monitor: bool,
) -> Result<Admission, Internal> {
    admit_n(dir, targets, now, deadline, monitor, 1)
}

/// Decides the `n` recipients of one message together (`sendmail-overlimit`):
/// all are accepted, or none is, so a message is never sent to part of its
/// recipients. Each counter rises by `n` in one step.
pub fn admit_n(
    dir: &Path,
    targets: &[Target],
    now: Time,
    deadline: Instant,
    monitor: bool,
    n: u64,
) -> Result<Admission, Internal> {
    let mut locked = lock_all(dir, targets, deadline)?;
    let mut result = Admission::default();
    let mut before = Vec::with_capacity(targets.len());
    let mut counters = Vec::with_capacity(targets.len());
    let mut full = Vec::with_capacity(targets.len());
    for (t, l) in targets.iter().zip(&locked) {
        let mut c = l.read()?.unwrap_or_else(|| {
            result.notes.push(format!(
                "{}: not a counter; started again",
                l.path.display()
            ));
            Counter::default()
        });
        before.push(c.clone());
        c.client.clone_from(&t.label);
        c.keep_windows(&t.limits.periods(), now);
        full.push(full_for(&t.label, &t.limits, &c, n));
        counters.push(c);
    }

    let accept = full.iter().all(Vec::is_empty) || monitor;
    for ((t, c), full) in targets.iter().zip(&mut counters).zip(&full) {
        result.newly_full.extend(notify_once(c, &t.limits, full));
        if accept {
            c.total = c.total.saturating_add(n);
            for w in &mut c.windows {
                w.add(now, n);
            }
        }
    }
    result.full = full.into_iter().flatten().collect();
    if !accept {
        // The attempt is tallied on the client's own counter, never as a
        // recipient: a hijacked account that keeps trying is not kept out longer.
        counters[0].refused = counters[0].refused.saturating_add(n);
        counters[0].last_refused = now.secs();
    }
    write_all(&mut locked, &counters, &before)?;
    Ok(result)
}

/// Updates which of `limits` the counter has reported as full: an episode
/// ends when its limit has room, and a limit that goes over starts one and is
/// returned, to be reported once. Each item has its own flag, so two limits
/// of one period (`1/1h,10/1h`) do not share one.
fn notify_once(c: &mut Counter, limits: &Limits, full: &[Full]) -> Vec<Full> {
    c.notified
        .retain(|i| limits.items.contains(i) && full.iter().any(|f| f.item == *i));
    let mut newly = Vec::new();
    for f in full {
        if !c.notified.contains(&f.item) && c.notified.len() < MAX_NOTIFIED {
            c.notified.push(f.item);
            newly.push(f.clone());
        }
    }
    newly
}

/// Gives back `n` recipients that `admit_n` accepted at `at` for `targets`,
/// when the message they belong to was not queued after all (the real
/// sendmail failed): nothing is counted that was not sent.
pub fn refund(
    dir: &Path,
    targets: &[Target],
    at: Time,
    n: u64,
    deadline: Instant,
) -> Result<(), Internal> {
    let mut locked = lock_all(dir, targets, deadline)?;
    let now = Time::now().max(at);
    let mut before = Vec::with_capacity(targets.len());
    let mut counters = Vec::with_capacity(targets.len());
    for (t, l) in targets.iter().zip(&locked) {
        let mut c = l.read()?.unwrap_or_default();
        before.push(c.clone());
        c.client.clone_from(&t.label);
        c.total = c.total.saturating_sub(n);
        for w in &mut c.windows {
            w.expire(now);
            w.take_back(at, n);
        }
        counters.push(c);
    }
    write_all(&mut locked, &counters, &before)
}

/// Opens and locks every target's counter, in order of file name so that two
/// processes needing the same pair never wait on each other in a cycle.
fn lock_all(dir: &Path, targets: &[Target], deadline: Instant) -> Result<Vec<Locked>, Internal> {
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by(|&a, &b| targets[a].file.cmp(&targets[b].file));
    let mut locked: Vec<Option<Locked>> = (0..targets.len()).map(|_| None).collect();
    for &i in &order {
        locked[i] = Some(Locked::open(dir, &targets[i].file, deadline)?);
    }
    Ok(locked.into_iter().map(Option::unwrap).collect())
}

/// Writes each counter back, all or none: the longest text is checked
/// against the file-size limit before the first is written, and when a write
/// fails (a full disk: the user's counter rewritten in place, the domain's
/// new one needing a block it cannot get), the counters already written, and
/// the one that failed, get their text from `before` back.
fn write_all(
    locked: &mut [Locked],
    counters: &[Counter],
    before: &[Counter],
) -> Result<(), Internal> {
    let texts: Vec<Vec<u8>> = counters.iter().map(Counter::to_text).collect();
    if let Some((l, text)) = locked.iter().zip(&texts).max_by_key(|(_, t)| t.len()) {
        fits_size_limit(&l.path, text.len())?;
    }
    // A counter that was empty (just created) is put back by truncating it,
    // which needs no block.
    let empty: Vec<bool> = locked.iter().map(|l| l.size() == 0).collect();
    for i in 0..locked.len() {
        let Err(e) = locked[i].write_text(&texts[i]) else {
            continue;
        };
        let mut restore = Vec::new();
        for j in 0..=i {
            let text = if empty[j] {
                Vec::new()
            } else {
                before[j].to_text()
            };
            if let Err(again) = locked[j].write_text(&text) {
                restore.push(again);
            }
        }
        return Err(Internal::Rollback {
            first: Box::new(e),
            restore,
        });
    }
    Ok(())
}

/// The items of `limits` that `c` has no room for (its windows expired to now).
pub fn full_items(label: &[u8], limits: &Limits, c: &Counter) -> Vec<Full> {
    full_for(label, limits, c, 1)
}

/// The items of `limits` without room for `n` more recipients. `room_at` is
/// when room for all `n` frees; `None` also where `n` exceeds the limit
/// itself, which no wait can help.
fn full_for(label: &[u8], limits: &Limits, c: &Counter, n: u64) -> Vec<Full> {
    let mut full = Vec::new();
    for item in &limits.items {
        let (count, room_at) = match item.period.and_then(|p| c.window(p)) {
            None if item.period.is_some() => (0, None),
            None => (c.total, None),
            Some(w) => {
                let room = match item.max.checked_sub(n) {
                    Some(left) => w.room_at(left + 1),
                    None => None,
                };
                (w.count(), room)
            }
        };
        if count.saturating_add(n) > item.max {
            full.push(Full {
                label: label.to_vec(),
                item: *item,
                count,
                room_at,
            });
        }
    }
    full
}

/// The counters that apply to `client`: its own (always, so `status` shows
/// who sends most even when unlimited), then its domain's and its ranges'
/// if lines give them limits.
pub fn targets(client: &crate::client::Client, resolved: &crate::lookup::Resolved) -> Vec<Target> {
    crate::rules::counters_of(client, resolved)
        .into_iter()
        .map(|(counted, limits)| Target {
            file: counted.file(),
            label: counted.label(),
            limits,
        })
        .collect()
}
