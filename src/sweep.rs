//! What `overlimit-sweep` does to each counter: reset the classic count (the
//! seed script's nightly `rm`), let windows expire, and remove counters with
//! nothing left. Each counter is locked first, so an increment racing with the
//! sweep is either seen and reset or lands on a fresh file, never lost.
//!
//! With `--keep-overlimit` the classic limits of all counters are found
//! first, by one pass over the control file for all of them and with no
//! counter locked: the cost grows with counters plus lines, and no plug-in
//! waits on a lock while the text is read.

use crate::backend::{Change, Expiry, Found, Open, Store};
use crate::counted::Counted;
use crate::counter::Counter;
use crate::error::Internal;
use crate::lookup;
use crate::rules::limits_in;
use crate::time::{ADMIN_LOCK_WAIT, READ_LOCK_WAIT};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// What became of one counter.
#[derive(Debug, PartialEq, Eq)]
pub enum Swept {
    Reset,
    Removed,
    /// At or over its classic limit with `--keep-overlimit`: untouched.
    Kept {
        /// The client (or `@domain`), as `overlimit reset` takes it.
        client: Vec<u8>,
        count: u64,
        limit: u64,
    },
    /// Gone before it could be locked, not a counter file, or new since
    /// the limits were looked up (the next sweep sees it).
    Skipped,
}

/// The counter files of `dir`, sorted: every entry but dot files.
pub fn counter_files(dir: &Path) -> Result<Vec<String>, Internal> {
    let entries = std::fs::read_dir(dir).map_err(|e| crate::error::fail("opendir", dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// The name a counter belongs to: stored in it, or for a seed-script file
/// its file name.
pub fn label(file: &str, c: &Counter) -> Vec<u8> {
    if c.client.is_empty() {
        file.as_bytes().to_vec()
    } else {
        c.client.clone()
    }
}

/// Reads one counter (a file under a shared lock, released on return);
/// `None` when it does not exist.
pub fn read_counter(store: &mut Store, file: &str) -> Result<Option<Counter>, Internal> {
    store.read(file, Instant::now() + READ_LOCK_WAIT)
}

/// The classic limit of each counter of `files` under the current control
/// file (`None`: it has none), by label. Counters are read one at a time and
/// released; the text is read once, with no lock held.
pub fn classic_limits(
    control: &Path,
    store: &mut Store,
    files: &[String],
    notes: &mut Vec<String>,
) -> Result<HashMap<Vec<u8>, Option<u64>>, Internal> {
    let mut counted = Vec::new();
    for file in files {
        // A counter that cannot be read is reported when it is swept.
        if let Ok(Some(c)) = read_counter(store, file) {
            if let Some(who) = Counted::from_label(&label(file, &c)) {
                counted.push(who);
            }
        }
    }
    let source = lookup::open(control, &counted, notes)?;
    let mut out = HashMap::with_capacity(counted.len());
    for who in counted {
        let limit = limits_in(&source, &who)?.and_then(|l| l.classic());
        out.insert(who.label(), limit);
    }
    Ok(out)
}

/// Sweeps one counter at time `now`. `keep` holds the classic limits of
/// `--keep-overlimit` (from `classic_limits`).
pub fn sweep_one(
    store: &mut Store,
    file: &str,
    keep: Option<&HashMap<Vec<u8>, Option<u64>>>,
    now: crate::time::Time,
) -> Result<Swept, Internal> {
    sweep_one_ending(store, file, keep, now, &mut Vec::new())
}

/// `sweep_one`, adding to `ended` the limits whose episode the sweep ends
/// (a classic limit reset, or every limit of a counter removed), for the
/// journal.
pub fn sweep_one_ending(
    store: &mut Store,
    file: &str,
    keep: Option<&HashMap<Vec<u8>, Option<u64>>>,
    now: crate::time::Time,
    ended: &mut Vec<crate::admit::Full>,
) -> Result<Swept, Internal> {
    let place = store.place(file);
    let deadline = Instant::now() + ADMIN_LOCK_WAIT;
    let (swept, freed) = store.update(
        &[file.to_string()],
        Open::Existing,
        deadline,
        |mut found| {
            let c = match found.pop() {
                Some(Found::Counter(c)) => c,
                Some(Found::Damaged) => {
                    return Err(Internal::Damaged {
                        path: place.clone().into(),
                        why: "not a counter; left alone",
                    })
                }
                _ => return Ok(((Swept::Skipped, Vec::new()), vec![Change::Keep])),
            };
            let (label, notified) = (label(file, &c), c.notified.clone());
            let (swept, change) = sweep_counter(file, c, keep, now);
            let still: &[crate::limits::Item] = match &change {
                Change::Set(c, _) => &c.notified,
                Change::Keep => &notified,
                Change::Delete => &[],
            };
            let freed: Vec<crate::admit::Full> = notified
                .iter()
                .filter(|i| !still.contains(i))
                .map(|&item| crate::admit::Full::ended(&label, item))
                .collect();
            Ok(((swept, freed), vec![change]))
        },
    )?;
    ended.extend(freed);
    Ok(swept)
}

/// What the sweep makes of one counter.
fn sweep_counter(
    file: &str,
    mut c: Counter,
    keep: Option<&HashMap<Vec<u8>, Option<u64>>>,
    now: crate::time::Time,
) -> (Swept, Change) {
    let label = label(file, &c);
    if let Some(limits) = keep {
        // Canonical, as `classic_limits` stored it.
        let canonical = Counted::from_label(&label).map(|w| w.label());
        match canonical.and_then(|l| limits.get(&l)) {
            None => return (Swept::Skipped, Change::Keep),
            Some(Some(limit)) if c.total >= *limit => {
                let kept = Swept::Kept {
                    client: label,
                    count: c.total,
                    limit: *limit,
                };
                return (kept, Change::Keep);
            }
            Some(_) => {}
        }
    }
    c.total = 0;
    c.refused = 0;
    c.notified.retain(|i| i.period.is_some());
    // A block is kept until it ends; then it goes like any other count.
    if c.block.as_ref().is_some_and(|b| !b.holds(now.secs())) {
        c.block = None;
    }
    let periods: Vec<u32> = c.windows.iter().map(|w| w.period).collect();
    c.keep_windows(&periods, now);
    if c.is_empty() {
        return (Swept::Removed, Change::Delete);
    }
    if c.client.is_empty() {
        c.client = label;
    }
    (Swept::Reset, Change::Set(c, Expiry::AsBefore))
}
