//! `overlimit check --replay`: before an edited control file goes live, who
//! would it have refused? The journal's episodes (`journal.rs`) and the
//! current counters are judged against the edited file.
//!
//! The journal records, for each episode, the client, the limit that went
//! over, how many recipients were counted against it then, and when it
//! started and ended: not each recipient. So an episode proves only that
//! its client sent that many within that limit's period (or since a sweep,
//! for a classic limit) and asked for one more. A new limit of the same
//! kind, or a window at least as long, at or below that count certainly
//! refuses; anything higher, or a shorter window, cannot be judged from the
//! journal and is said to be unknown. The current counters are judged like
//! `status` judges them, on the windows they keep.

use super::exit;
use crate::admit::full_items;
use crate::backend::Store;
use crate::client::shown;
use crate::counted::Counted;
use crate::journal::{self, utc};
use crate::limits::{Item, Limits};
use crate::rules::limits_in;
use crate::sweep::{label, read_counter};
use std::path::{Path, PathBuf};

/// What the edited file makes of one recorded episode.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// This new limit refuses at the recorded count.
    Refused(Item),
    /// No new limit can be judged against what was recorded.
    Unknown,
    /// Unlimited under the edited file.
    Unlimited,
}

/// Judges one episode: `count` recipients counted against `old` when it
/// went over (and one more asked for), under `new`.
pub fn judge(old: Item, count: u64, new: Option<&Limits>) -> Verdict {
    let Some(new) = new.filter(|l| !l.is_unlimited()) else {
        return Verdict::Unlimited;
    };
    let proven = |i: &Item| match (old.period, i.period) {
        (None, None) => true,
        // The recorded recipients fall in any window at least as long that
        // ends when the episode began.
        (Some(p), Some(q)) => q >= p,
        _ => false,
    };
    match new.items.iter().find(|i| proven(i) && i.max <= count) {
        Some(i) => Verdict::Refused(*i),
        None => Verdict::Unknown,
    }
}

/// The journal files: the one named (and its `.1`), or the counter
/// directory's.
fn files(dir: &Path, named: Option<&Path>) -> Vec<PathBuf> {
    match named {
        Some(p) => {
            let mut older = p.as_os_str().to_owned();
            older.push(".1");
            vec![PathBuf::from(older), p.to_path_buf()]
        }
        None => journal::paths(dir).to_vec(),
    }
}

/// Prints the replay; returns the exit code (0, or 2 on a file that cannot
/// be read).
pub fn run(control: &Path, dir: &Path, store: &mut Store, named: Option<&Path>) -> i32 {
    let (events, bad) = match journal::read_all(&files(dir, named)) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("overlimit check --replay: {e}");
            return exit::TROUBLE;
        }
    };
    if bad > 0 {
        eprintln!("overlimit check --replay: {bad} journal lines were not events; skipped");
    }
    let over: Vec<_> = events.iter().filter(|e| e.event == "over").collect();
    let wanted: Vec<Counted> = over
        .iter()
        .filter_map(|e| Counted::from_label(&crate::client::unescape(e.client.as_bytes())))
        .collect();
    let mut code = exit::OK;
    let (mut refused, mut unknown, mut freed) = (0, 0, 0);
    let mut notes = Vec::new();
    let source = match crate::lookup::open(control, &wanted, &mut notes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("overlimit check --replay: {e}");
            return exit::TROUBLE;
        }
    };
    for e in &over {
        let who = Counted::from_label(&crate::client::unescape(e.client.as_bytes()));
        let old = Limits::parse(e.limit.as_bytes())
            .ok()
            .and_then(|l| l.items.first().copied());
        let (Some(who), Some(old)) = (who, old) else {
            continue;
        };
        let new = match limits_in(&source, &who) {
            Ok(l) => l,
            Err(err) => {
                eprintln!("overlimit check --replay: {err}");
                code = exit::TROUBLE;
                continue;
            }
        };
        let at = utc(e.at);
        let was = format!("{} over {} with {} counted", e.client, old, e.count);
        match judge(old, e.count, new.as_ref()) {
            Verdict::Refused(i) => {
                refused += 1;
                println!("would refuse: {was} at {at}: refused by {i} as well");
            }
            Verdict::Unknown => {
                unknown += 1;
                let new = new.map_or("none".into(), |l| l.to_string());
                println!(
                    "unknown: {was} at {at}: the journal cannot tell whether {new} would have held"
                );
            }
            Verdict::Unlimited => {
                freed += 1;
                println!("would pass: {was} at {at}: unlimited now");
            }
        }
    }
    let now_over = match current(control, store, &mut code) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("overlimit check --replay: {e}");
            return exit::TROUBLE;
        }
    };
    for n in &notes {
        eprintln!("overlimit: {}: {n}", control.display());
    }
    println!(
        "replay: {} episodes: {refused} would be refused, {unknown} cannot be told, {freed} unlimited; {now_over} counters over a limit now",
        over.len()
    );
    code
}

/// Prints each current counter that the edited file finds over a limit,
/// on the windows it keeps; returns how many.
fn current(
    control: &Path,
    store: &mut Store,
    code: &mut i32,
) -> Result<usize, crate::error::Internal> {
    let now = crate::time::Time::now();
    let files = store.files(std::time::Instant::now() + crate::time::READ_LOCK_WAIT)?;
    let mut counters = Vec::new();
    for f in files {
        match read_counter(store, &f) {
            Ok(Some(c)) => {
                if let Some(who) = Counted::from_label(&label(&f, &c)) {
                    counters.push((who, c));
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("overlimit check --replay: {e}");
                *code = exit::TROUBLE;
            }
        }
    }
    let wanted: Vec<Counted> = counters.iter().map(|(w, _)| w.clone()).collect();
    let mut notes = Vec::new();
    let source = crate::lookup::open(control, &wanted, &mut notes)?;
    let mut over = 0;
    for (who, mut c) in counters {
        let Some(limits) = limits_in(&source, &who)? else {
            continue;
        };
        c.keep_windows(&limits.periods(), now);
        let full = full_items(&who.label(), &limits, &c);
        if !full.is_empty() {
            over += 1;
            let items: Vec<String> = full
                .iter()
                .map(|f| format!("{} ({} counted)", f.item, f.count))
                .collect();
            println!("over now: {} {}", shown(&who.label()), items.join(", "));
        }
    }
    Ok(over)
}

#[cfg(test)]
mod tests {
    use super::{judge, Verdict};
    use crate::limits::{Item, Limits};

    fn item(max: u64, period: Option<u32>) -> Item {
        Item { max, period }
    }

    #[test]
    fn only_what_the_count_proves_is_a_refusal() {
        let old = item(10, Some(3600));
        let l = |t: &str| Limits::parse(t.as_bytes()).unwrap();
        assert_eq!(
            judge(old, 10, Some(&l("5/1h"))),
            Verdict::Refused(item(5, Some(3600)))
        );
        assert_eq!(
            judge(old, 10, Some(&l("10/1d"))),
            Verdict::Refused(item(10, Some(86_400)))
        );
        assert_eq!(judge(old, 10, Some(&l("11/1h"))), Verdict::Unknown);
        assert_eq!(
            judge(old, 10, Some(&l("5/1m"))),
            Verdict::Unknown,
            "a shorter window"
        );
        assert_eq!(
            judge(old, 10, Some(&l("5"))),
            Verdict::Unknown,
            "a classic count"
        );
        assert_eq!(
            judge(item(100, None), 100, Some(&l("50"))),
            Verdict::Refused(item(50, None))
        );
        assert_eq!(judge(old, 10, None), Verdict::Unlimited);
    }
}
