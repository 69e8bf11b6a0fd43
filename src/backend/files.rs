//! Counters as files in the counter directory, the default: every counter
//! of a decision is locked (in order of file name, so two processes needing
//! the same pair never wait on each other in a cycle), read, decided on, and
//! written back all or none before any lock is released.

use super::{Change, Found, Open};
use crate::counter::Counter;
use crate::error::Internal;
use crate::store::{fits_size_limit, Locked};
use std::path::Path;
use std::time::Instant;

/// One counter under a shared lock, released on return.
pub(super) fn read(dir: &Path, file: &str, deadline: Instant) -> Result<Option<Counter>, Internal> {
    let Some(locked) = Locked::open_to_read(dir, file, deadline)? else {
        return Ok(None);
    };
    match locked.read()? {
        Some(c) => Ok(Some(c)),
        None => Err(Internal::Damaged {
            path: locked.path.clone(),
            why: "not a counter",
        }),
    }
}

pub(super) fn update<R>(
    dir: &Path,
    files: &[String],
    open: Open,
    deadline: Instant,
    mut decide: impl FnMut(Vec<Found>) -> Result<(R, Vec<Change>), Internal>,
) -> Result<R, Internal> {
    let mut locked = lock_all(dir, files, open, deadline)?;
    let mut found = Vec::with_capacity(files.len());
    for l in &locked {
        found.push(match l {
            None => Found::Missing,
            Some(l) => l.read()?.map_or(Found::Damaged, Found::Counter),
        });
    }
    let before: Vec<Counter> = found
        .iter()
        .map(|f| match f {
            Found::Counter(c) => c.clone(),
            _ => Counter::default(),
        })
        .collect();
    let (result, changes) = decide(found)?;
    if changes.len() != files.len() {
        return Err(Internal::other(
            "a decision gave not one change per counter; none changed",
        ));
    }
    let mut writes = Vec::new();
    let mut counters = Vec::new();
    let mut befores = Vec::new();
    let mut deletes = Vec::new();
    for ((l, change), b) in locked.iter_mut().zip(changes).zip(before) {
        let Some(l) = l.take() else { continue };
        match change {
            Change::Keep => {}
            Change::Set(c, _) => {
                writes.push(l);
                counters.push(c);
                befores.push(b);
            }
            Change::Delete => deletes.push(l),
        }
    }
    write_all(&mut writes, &counters, &befores)?;
    for l in deletes {
        l.remove()?;
    }
    Ok(result)
}

/// Opens and locks every counter, in order of file name so that two
/// processes needing the same pair never wait on each other in a cycle.
fn lock_all(
    dir: &Path,
    files: &[String],
    open: Open,
    deadline: Instant,
) -> Result<Vec<Option<Locked>>, Internal> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| files[a].cmp(&files[b]));
    let mut locked: Vec<Option<Locked>> = (0..files.len()).map(|_| None).collect();
    for &i in &order {
        locked[i] = match open {
            Open::Create => Some(Locked::open(dir, &files[i], deadline)?),
            Open::Existing => Locked::open_existing(dir, &files[i], deadline)?,
        };
    }
    Ok(locked)
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
