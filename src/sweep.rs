//! What `overlimit-sweep` does to each counter: reset the classic count (the
//! seed script's nightly `rm`), let windows expire, and remove counters with
//! nothing left. Each counter is locked first, so an increment racing with the
//! sweep is either seen and reset or lands on a fresh file, never lost.

use crate::client::Client;
use crate::counter::Counter;
use crate::error::Internal;
use crate::lookup::{self, Resolved};
use crate::store::Locked;
use crate::time::ADMIN_LOCK_WAIT;
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
    /// Gone before it could be locked, or not a counter file.
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

/// The limits that apply to the counter labelled `label` (a client or
/// `@domain`) under the current control file.
pub fn limits_of(control: &Path, label: &[u8]) -> Result<Option<crate::limits::Limits>, Internal> {
    let mut notes = Vec::new();
    if let Some(domain) = label.strip_prefix(b"@") {
        // Any user of the domain finds the domain's line.
        let user = Client::User([b"x@", domain].concat());
        let r = lookup::resolve(control, &user, &mut notes)?;
        return Ok(r.domain.map(|r| r.limits));
    }
    let Some(client) = Client::from_name(label) else {
        return Ok(None);
    };
    let Resolved { own, .. } = lookup::resolve(control, &client, &mut notes)?;
    Ok(own.map(|r| r.limits))
}

/// Sweeps one counter file at time `now`.
pub fn sweep_one(
    dir: &Path,
    file: &str,
    control: &Path,
    keep_overlimit: bool,
    now: crate::time::Time,
) -> Result<Swept, Internal> {
    let Some(mut locked) = Locked::open_existing(dir, file, Instant::now() + ADMIN_LOCK_WAIT)?
    else {
        return Ok(Swept::Skipped);
    };
    let Some(mut c) = locked.read()? else {
        return Err(Internal(format!(
            "{}: not a counter; left alone",
            locked.path.display()
        )));
    };
    if keep_overlimit {
        let label = label(file, &c);
        if let Some(limit) = limits_of(control, &label)?.and_then(|l| l.classic()) {
            if c.total >= limit {
                return Ok(Swept::Kept {
                    client: label,
                    count: c.total,
                    limit,
                });
            }
        }
    }
    c.total = 0;
    c.refused = 0;
    c.notified.retain(|i| i.period.is_some());
    let periods: Vec<u32> = c.windows.iter().map(|w| w.period).collect();
    c.keep_windows(&periods, now);
    if c.is_empty() {
        locked.remove()?;
        return Ok(Swept::Removed);
    }
    if c.client.is_empty() {
        c.client = label(file, &c);
    }
    locked.write(&c)?;
    Ok(Swept::Reset)
}
