//! The history journal: one line of JSON per episode edge (a limit of a
//! counter goes over; it has room again), so "who was refused last week, for
//! which limit, how often" outlives the sweep, which zeroes the tallies.
//!
//! It lives in the counter directory as `.journal` (a dot name, so the sweep,
//! `status` and the directory listing never take it for a counter) and is
//! written only on a transition, by one `O_APPEND` write of whole lines: the
//! plug-in pays nothing on the recipients in between. Past `CAP` bytes the
//! writer that notices renames it to `.journal.1`, replacing the older one,
//! so the two files together hold at most about twice `CAP`.

use crate::admit::{Admission, Full};
use crate::client::shown;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The journal's file name in the counter directory.
pub const NAME: &str = ".journal";
/// Size at which the journal is rotated to `NAME.1`.
pub const CAP: u64 = 1 << 20;

/// What happened to one limit of one counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    /// `over`, `free`, `block` or `unblock`.
    pub event: String,
    /// The counter's client or `@domain`, as `shown` prints it.
    pub client: String,
    /// The limit (`10/1h`), or for a block the reason.
    pub limit: String,
    /// Recipients counted against the limit when it went over.
    pub count: u64,
}

impl Event {
    fn of(at: u64, event: &str, f: &Full) -> Event {
        Event {
            at,
            event: event.to_string(),
            client: shown(&f.label),
            limit: f.item.to_string(),
            count: f.count,
        }
    }

    /// The journal line, newline included.
    pub fn to_line(&self) -> String {
        format!(
            "{{\"at\":{},\"event\":{},\"client\":{},\"limit\":{},\"count\":{}}}\n",
            self.at,
            quoted(&self.event),
            quoted(&self.client),
            quoted(&self.limit),
            self.count
        )
    }

    /// Reads a line `to_line` wrote; `None` for anything else.
    pub fn parse(line: &str) -> Option<Event> {
        let mut rest = line.trim_end().strip_prefix('{')?.strip_suffix('}')?;
        let mut e = Event {
            at: 0,
            event: String::new(),
            client: String::new(),
            limit: String::new(),
            count: 0,
        };
        let mut seen = 0;
        while !rest.is_empty() {
            let (key, after) = string(rest)?;
            let after = after.strip_prefix(':')?;
            let (value, after) = match after.strip_prefix('"') {
                Some(_) => string(after)?,
                None => {
                    let end = after.find(',').unwrap_or(after.len());
                    (after[..end].to_string(), &after[end..])
                }
            };
            match key.as_str() {
                "at" => e.at = value.parse().ok()?,
                "count" => e.count = value.parse().ok()?,
                "event" => e.event = value,
                "client" => e.client = value,
                "limit" => e.limit = value,
                _ => {}
            }
            seen += 1;
            rest = after.strip_prefix(',').unwrap_or(after);
            if !after.is_empty() && !after.starts_with(',') {
                return None;
            }
        }
        (seen >= 5 && !e.event.is_empty()).then_some(e)
    }
}

/// A JSON string of text `shown` made (no control character is left in
/// it): quotes and backslashes escaped.
pub fn quoted(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Reads one quoted string at the start of `text`: its value and the rest.
fn string(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

/// The journal of counter directory `dir`, and its rotated older file.
pub fn paths(dir: &Path) -> [PathBuf; 2] {
    [dir.join(format!("{NAME}.1")), dir.join(NAME)]
}

/// The episode edges of one decision at `at` (Unix seconds): the limits that
/// went over and those that have room again.
pub fn events_of(result: &Admission, at: u64) -> Vec<Event> {
    let over = result.newly_full.iter().map(|f| Event::of(at, "over", f));
    let free = result.newly_free.iter().map(|f| Event::of(at, "free", f));
    over.chain(free).collect()
}

/// `free` events for limits whose episode ended outside a decision (the
/// sweep's reset, `overlimit reset`).
pub fn freed(ended: &[Full], at: u64) -> Vec<Event> {
    ended.iter().map(|f| Event::of(at, "free", f)).collect()
}

/// Appends `events` to the journal in `dir` in one write, rotating it first
/// if it has grown past `CAP`. Nothing to write costs nothing. The journal is
/// a record, never the decision: an error is returned for the caller to log.
pub fn append(dir: &Path, events: &[Event]) -> std::io::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let text: String = events.iter().map(Event::to_line).collect();
    let [older, path] = paths(dir);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o660)
        // Never a symlink, and a FIFO put in its place does not hang us.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file; nothing journaled",
        ));
    }
    // Shared as a counter is: group-writable for every program that
    // decides, owned by the directory's owner when root made it.
    crate::store::share_with_directory(&file, &path, &meta, dir)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Rotated only while the name is still this full file: a writer that
    // lost the race to another does not rename the fresh journal over the
    // older one. This descriptor keeps naming the full file, so its lines
    // land in `.journal.1`; the next writer starts afresh.
    let still_ours = || {
        std::fs::symlink_metadata(&path)
            .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
    };
    if meta.len() >= CAP && still_ours() {
        std::fs::rename(&path, &older)?;
    }
    file.write_all(text.as_bytes())
}

/// Records one decision's episode edges, handing a failure to `log`: the
/// journal never changes the decision.
pub fn record(dir: &Path, result: &Admission, at: u64, log: impl FnOnce(&str)) {
    if let Err(e) = append(dir, &events_of(result, at)) {
        log(&format!("{}: {e}", dir.join(NAME).display()));
    }
}

/// Every event in the rotated file and the journal, oldest first, and the
/// number of lines that were not events (shown, never fatal).
pub fn read_all(files: &[PathBuf]) -> std::io::Result<(Vec<Event>, usize)> {
    let mut events = Vec::new();
    let mut bad = 0;
    for f in files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", f.display()),
                ))
            }
        };
        for line in String::from_utf8_lossy(&bytes).lines() {
            match Event::parse(line) {
                Some(e) => events.push(e),
                None if line.is_empty() => {}
                None => bad += 1,
            }
        }
    }
    events.sort_by_key(|e| e.at);
    Ok((events, bad))
}

/// Unix seconds as an administrator reads them: `2026-12-01 23:10:18Z`.
pub fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date, counting in 400-year eras
    // from 0000-03-01 so the leap day ends each year.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{utc, Event};

    #[test]
    fn times_read_as_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_796_166_618), "2026-12-01 23:10:18Z");
    }

    #[test]
    fn lines_read_back() {
        let e = Event {
            at: 1_700_000_000,
            event: "over".into(),
            client: "we\"b1@example.com\\x0a".into(),
            limit: "10/1h".into(),
            count: 10,
        };
        assert_eq!(Event::parse(&e.to_line()), Some(e));
        assert_eq!(Event::parse("{\"at\":1}"), None);
        assert_eq!(Event::parse("garbage"), None);
    }
}
