//! The decision for one recipient: lock every counter that applies (the
//! client's own and, for a user, the domain's), accept only if each has room,
//! and raise them all together.
//!
//! The decision runs on what the store found at every counter and returns
//! what to write back; the store (`backend`) makes the reading, the
//! check and the increments one step to every other process, whether the
//! counters are files under `flock` or keys in a Redis transaction.

use crate::backend::{Change, Expiry, Found, Open, Store};
use crate::counter::{Block, Counter, MAX_NOTIFIED};
use crate::error::Internal;
use crate::limits::{Item, Limits};
use crate::time::Time;
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

impl Full {
    /// A limit whose episode ended, as `Admission::newly_free` and the
    /// journal hold it: no count, no room time.
    pub fn ended(label: &[u8], item: Item) -> Full {
        Full {
            label: label.to_vec(),
            item,
            count: 0,
            room_at: None,
        }
    }
}

/// A counter the administrator blocked (`overlimit block`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub label: Vec<u8>,
    pub block: Block,
}

#[derive(Debug, Default)]
pub struct Admission {
    /// The first counter that applies and is blocked: refused whatever the
    /// limits say (in monitor mode, like a full limit, only reported).
    pub blocked: Option<Blocked>,
    /// Every limit without room; empty when the recipient was accepted.
    pub full: Vec<Full>,
    /// Limits that went over for the first time: tell the administrator.
    pub newly_full: Vec<Full>,
    /// Limits whose episode ended in this decision: reported over before,
    /// they have room again (or are no longer in the control file). Seen on
    /// the first recipient after the room came, so a journal records the
    /// end no earlier than it was observed; `count` and `room_at` are unset.
    pub newly_free: Vec<Full>,
    /// Counters found damaged and started again.
    pub notes: Vec<String>,
}

impl Admission {
    pub fn accepted(&self) -> bool {
        self.full.is_empty() && self.blocked.is_none()
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
    store: &mut Store,
    targets: &[Target],
    now: Time,
    deadline: Instant,
    monitor: bool,
) -> Result<Admission, Internal> {
    admit_n(store, targets, now, deadline, monitor, 1)
}

/// Decides the `n` recipients of one message together (`sendmail-overlimit`):
/// all are accepted, or none is, so a message is never sent to part of its
/// recipients. Each counter rises by `n` in one step.
pub fn admit_n(
    store: &mut Store,
    targets: &[Target],
    now: Time,
    deadline: Instant,
    monitor: bool,
    n: u64,
) -> Result<Admission, Internal> {
    let files = files_of(targets);
    let places: Vec<String> = files.iter().map(|f| store.place(f)).collect();
    let result = store.update(&files, Open::Create, deadline, |found| {
        Ok(decide(targets, found, &places, now, monitor, n))
    });
    match (result, store.fallback()) {
        (Err(outage), Some(local)) => {
            // The server is out of reach and the address asks for a local
            // budget: the same decision, in files, on this host's share.
            let shares: Vec<Target> = targets
                .iter()
                .map(|t| Target {
                    file: t.file.clone(),
                    label: t.label.clone(),
                    limits: local.share(&t.limits),
                })
                .collect();
            let mut files_store = local.store();
            let places: Vec<String> = files.iter().map(|f| files_store.place(f)).collect();
            let mut admission = files_store.update(&files, Open::Create, deadline, |found| {
                Ok(decide(&shares, found, &places, now, monitor, n))
            })?;
            admission.notes.insert(0, local.note(&outage));
            Ok(admission)
        }
        (result, _) => result,
    }
}

/// The decision on what was found at each target's counter, and the counters
/// to write back: the same for every backend.
fn decide(
    targets: &[Target],
    found: Vec<Found>,
    places: &[String],
    now: Time,
    monitor: bool,
    n: u64,
) -> (Admission, Vec<Change>) {
    let mut result = Admission::default();
    let mut counters = Vec::with_capacity(targets.len());
    let mut full = Vec::with_capacity(targets.len());
    for ((t, f), place) in targets.iter().zip(found).zip(places) {
        let mut c = match f {
            Found::Counter(c) => c,
            Found::Missing => Counter::default(),
            Found::Damaged => {
                result
                    .notes
                    .push(format!("{place}: not a counter; started again"));
                Counter::default()
            }
        };
        c.client.clone_from(&t.label);
        c.keep_windows(&t.limits.periods(), now);
        if c.block.as_ref().is_some_and(|b| !b.holds(now.secs())) {
            c.block = None;
        }
        if let (None, Some(block)) = (&result.blocked, &c.block) {
            result.blocked = Some(Blocked {
                label: t.label.clone(),
                block: block.clone(),
            });
        }
        full.push(full_for(&t.label, &t.limits, &c, n));
        counters.push(c);
    }

    let accept = (result.blocked.is_none() && full.iter().all(Vec::is_empty)) || monitor;
    for ((t, c), full) in targets.iter().zip(&mut counters).zip(&full) {
        let (newly_full, newly_free) = notify_once(c, &t.label, &t.limits, full);
        result.newly_full.extend(newly_full);
        result.newly_free.extend(newly_free);
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
    (result, changes(targets, counters))
}

/// The targets' counter file names, as the store takes them.
fn files_of(targets: &[Target]) -> Vec<String> {
    targets.iter().map(|t| t.file.clone()).collect()
}

/// Every counter written back, each to expire as its limits say; a blocked
/// one only by the sweep, which keeps it until the block ends.
fn changes(targets: &[Target], counters: Vec<Counter>) -> Vec<Change> {
    targets
        .iter()
        .zip(counters)
        .map(|(t, c)| {
            let expiry = match c.block {
                Some(_) => Expiry::Never,
                None => Expiry::for_limits(&t.limits),
            };
            Change::Set(c, expiry)
        })
        .collect()
}

/// Updates which of `limits` the counter has reported as full: an episode
/// ends when its limit has room, and a limit that goes over starts one and is
/// returned, to be reported once. Each item has its own flag, so two limits
/// of one period (`1/1h,10/1h`) do not share one. Also returns the episodes
/// that ended.
fn notify_once(
    c: &mut Counter,
    label: &[u8],
    limits: &Limits,
    full: &[Full],
) -> (Vec<Full>, Vec<Full>) {
    let mut freed = Vec::new();
    c.notified.retain(|i| {
        let still = limits.items.contains(i) && full.iter().any(|f| f.item == *i);
        if !still {
            freed.push(Full::ended(label, *i));
        }
        still
    });
    let mut newly = Vec::new();
    for f in full {
        if !c.notified.contains(&f.item) && c.notified.len() < MAX_NOTIFIED {
            c.notified.push(f.item);
            newly.push(f.clone());
        }
    }
    (newly, freed)
}

/// Gives back `n` recipients that `admit_n` accepted at `at` for `targets`,
/// when the message they belong to was not queued after all (the real
/// sendmail failed): nothing is counted that was not sent.
pub fn refund(
    store: &mut Store,
    targets: &[Target],
    at: Time,
    n: u64,
    deadline: Instant,
) -> Result<(), Internal> {
    let files = files_of(targets);
    let mut give_back = |found: Vec<Found>| {
        let now = Time::now().max(at);
        let mut counters = Vec::with_capacity(targets.len());
        for (t, f) in targets.iter().zip(found) {
            let mut c = match f {
                Found::Counter(c) => c,
                _ => Counter::default(),
            };
            c.client.clone_from(&t.label);
            c.total = c.total.saturating_sub(n);
            for w in &mut c.windows {
                w.expire(now);
                w.take_back(at, n);
            }
            counters.push(c);
        }
        Ok(((), changes(targets, counters)))
    };
    let result = store.update(&files, Open::Create, deadline, &mut give_back);
    match (result, store.fallback()) {
        // Still out of reach: the recipients were counted locally.
        (Err(_), Some(local)) => local
            .store()
            .update(&files, Open::Create, deadline, give_back),
        (result, _) => result,
    }
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
