//! `overlimit metrics`: the counters in Prometheus' text exposition format,
//! for node_exporter's textfile collector, and the same text that
//! `overlimit-policy --metrics` serves on HTTP (one renderer, two outlets).
//!
//! Totals cover every counter; per-client series are limited to the top N
//! (over-limit ones first, then by count), so a server with a million
//! counted clients does not hand Prometheus a million series. Counters are
//! read as `overlimit status` reads them: each under a shared lock released
//! at once, then the control file once for all of them.
//!
//! The one source of internal errors a scrape has is a counter it cannot
//! read (damaged, not a plain file, locked past the deadline): those are
//! `overlimit_counter_errors`, and named on stderr. The plug-in's own
//! internal errors live in its log only; nothing counts them across calls.

use super::exit;
use crate::admit::full_items;
use crate::backend::Store;
use crate::client::shown;
use crate::counted::Counted;
use crate::counter::Counter;
use crate::error::{fail, Internal};
use crate::lookup;
use crate::rules::{counters_of, limits_in, resolve_in};
use crate::sweep::{label, read_counter};
use crate::time::Time;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const USAGE: &str = "usage: overlimit metrics [--top N] [--output FILE]

Writes the counters in Prometheus' text format: counters and over-limit
counters by kind, recipients counted and refused, counters that could not be
read, and per-client series for the top N clients (over-limit ones first,
then by count; default 10, 0 for none). --output writes FILE atomically
(a temporary file beside it, then a rename), as node_exporter's textfile
collector needs. Exit 0, or 2 on a usage error, an unreadable counter
directory or counter, or a FILE that cannot be written.";

/// Per-client series shown when `--top` is not given.
pub const DEFAULT_TOP: usize = 10;

/// The state of one counter, as a scrape sees it.
struct Seen {
    counted: Counted,
    counter: Counter,
    /// No room now for another recipient: its own limits, or (for a
    /// client) a shared counter that applies to it.
    over: bool,
}

/// What one scrape found.
pub struct Scrape {
    pub text: String,
    /// Counters that could not be read (already in `text`), for the exit code.
    pub errors: usize,
}

pub fn run(control: &Path, store: &mut Store, args: &[OsString]) -> i32 {
    let (top, output) = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("overlimit metrics: {e}\n{USAGE}");
            return exit::TROUBLE;
        }
    };
    let scrape = match render(control, store, top, &mut |e| eprintln!("overlimit: {e}")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("overlimit: {e}");
            return exit::TROUBLE;
        }
    };
    let written = match &output {
        Some(path) => write_atomically(path, scrape.text.as_bytes()),
        None => std::io::stdout()
            .write_all(scrape.text.as_bytes())
            .map_err(|e| fail("write", Path::new("standard output"), e)),
    };
    match written {
        Err(e) => {
            eprintln!("overlimit: {e}");
            exit::TROUBLE
        }
        Ok(()) if scrape.errors > 0 => exit::TROUBLE,
        Ok(()) => exit::OK,
    }
}

/// `--top N` and `--output FILE`, each once at most.
fn parse(args: &[OsString]) -> Result<(usize, Option<PathBuf>), String> {
    let mut top = None;
    let mut output = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |flag: &str| {
            rest.next()
                .ok_or_else(|| format!("{flag} needs a value"))
                .cloned()
        };
        match arg.as_bytes() {
            b"--top" if top.is_none() => {
                let n = value("--top")?;
                let parsed = n.to_str().and_then(|s| s.parse::<usize>().ok());
                top = Some(
                    parsed.ok_or_else(|| format!("--top {}: not a number", shown(n.as_bytes())))?,
                );
            }
            b"--output" if output.is_none() => output = Some(PathBuf::from(value("--output")?)),
            b"--top" | b"--output" => return Err(format!("{} given twice", shown(arg.as_bytes()))),
            other => return Err(format!("unexpected argument {}", shown(other))),
        }
    }
    Ok((top.unwrap_or(DEFAULT_TOP), output))
}

/// Reads every counter and the control file and renders the exposition
/// text. A counter that cannot be read is reported through `error` and
/// counted; a counter directory that cannot be listed is an `Err`.
pub fn render(
    control: &Path,
    store: &mut Store,
    top: usize,
    error: &mut dyn FnMut(&Internal),
) -> Result<Scrape, Internal> {
    let now = Time::now();
    let mut errors = 0;
    // Listed before the closure below borrows the store.
    let files = store.files(std::time::Instant::now() + crate::time::ADMIN_LOCK_WAIT)?;
    let mut read = |file: &str| match read_counter(store, file) {
        Ok(c) => c,
        Err(e) => {
            error(&e);
            errors += 1;
            None
        }
    };
    let mut counters: HashMap<String, Counter> = HashMap::new();
    let mut wanted = Vec::new();
    for file in files {
        let Some(c) = read(&file) else { continue };
        let who = match Counted::from_label(&label(&file, &c)) {
            Some(who) if who.file() == file => who,
            // A seed-script file, or one named otherwise: by its file name.
            _ => match Counted::from_label(file.as_bytes()) {
                Some(who) => who,
                None => continue,
            },
        };
        counters.insert(file, c);
        wanted.push(who);
    }
    let mut notes = Vec::new();
    let source = lookup::open(control, &wanted, &mut notes)?;
    let mut seen = Vec::with_capacity(wanted.len());
    for who in wanted {
        let applies = match &who {
            Counted::Client(c) => counters_of(c, &resolve_in(&source, c)?),
            _ => vec![(who.clone(), limits_in(&source, &who)?.unwrap_or_default())],
        };
        let mut over = false;
        let mut own = Counter::default();
        for (n, (counted, limits)) in applies.into_iter().enumerate() {
            let Some(mut counter) = counters.get(&counted.file()).cloned() else {
                continue;
            };
            let mut periods = limits.periods();
            periods.extend(counter.windows.iter().map(|w| w.period));
            periods.sort_unstable();
            periods.dedup();
            counter.keep_windows(&periods, now);
            over |= !full_items(&counted.label(), &limits, &counter).is_empty();
            if n == 0 {
                own = counter;
            }
        }
        seen.push(Seen {
            counted: who,
            counter: own,
            over,
        });
    }
    Ok(Scrape {
        text: exposition(&mut seen, top, errors, now),
        errors,
    })
}

/// One per-client figure of a counter.
type Pick = fn(&Seen) -> u64;

const KINDS: [&str; 4] = ["user", "address", "domain", "range"];

/// One metric's HELP and TYPE lines (every metric here is a gauge: the
/// sweep and `reset` bring the counts down).
fn head(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn exposition(seen: &mut [Seen], top: usize, errors: usize, now: Time) -> String {
    let mut out = String::new();
    let by_kind = |out: &mut String, name: &str, pick: &dyn Fn(&Seen) -> bool| {
        for k in KINDS {
            let n = seen
                .iter()
                .filter(|s| s.counted.kind() == k && pick(s))
                .count();
            let _ = writeln!(out, "{name}{{kind=\"{k}\"}} {n}");
        }
    };
    head(
        &mut out,
        "overlimit_counters",
        "Counters in the counter directory, by kind.",
    );
    by_kind(&mut out, "overlimit_counters", &|_| true);
    head(
        &mut out,
        "overlimit_over_limit",
        "Counters with no room for another recipient now (a client also when a shared counter that applies to it is full), by kind.",
    );
    by_kind(&mut out, "overlimit_over_limit", &|s| s.over);
    let clients = || {
        seen.iter()
            .filter(|s| matches!(s.counted, Counted::Client(_)))
    };
    head(
        &mut out,
        "overlimit_recipients",
        "Recipients accepted, summed over the clients' own counters since their last sweep or reset.",
    );
    let total: u64 = clients().map(|s| s.counter.total).sum();
    let _ = writeln!(out, "overlimit_recipients {total}");
    head(
        &mut out,
        "overlimit_refused",
        "Recipients refused, summed over the clients' own counters since their last sweep or reset.",
    );
    let refused: u64 = clients().map(|s| s.counter.refused).sum();
    let _ = writeln!(out, "overlimit_refused {refused}");
    head(
        &mut out,
        "overlimit_counter_errors",
        "Counters this scrape could not read (damaged, not a plain file, or locked past the deadline).",
    );
    let _ = writeln!(out, "overlimit_counter_errors {errors}");
    head(
        &mut out,
        "overlimit_top_clients",
        "The most clients given per-client series (overlimit metrics --top).",
    );
    let _ = writeln!(out, "overlimit_top_clients {top}");
    head(
        &mut out,
        "overlimit_scrape_timestamp_seconds",
        "When these figures were read, in Unix seconds.",
    );
    let _ = writeln!(out, "overlimit_scrape_timestamp_seconds {}", now.secs());

    // The top N: over-limit first, then by count, then by name (stable).
    seen.sort_by(|a, b| {
        b.over
            .cmp(&a.over)
            .then(b.counter.total.cmp(&a.counter.total))
            .then_with(|| a.counted.label().cmp(&b.counted.label()))
    });
    let shown_top: Vec<&Seen> = seen.iter().take(top).collect();
    let series: [(&str, &str, Pick); 3] = [
        (
            "overlimit_client_recipients",
            "Recipients accepted for one of the top clients since its last sweep or reset.",
            |s| s.counter.total,
        ),
        (
            "overlimit_client_refused",
            "Recipients refused for one of the top clients since its last sweep or reset.",
            |s| s.counter.refused,
        ),
        (
            "overlimit_client_over_limit",
            "1 if one of the top clients has no room now, else 0.",
            |s| u64::from(s.over),
        ),
    ];
    for (name, help, value) in series {
        head(&mut out, name, help);
        for s in &shown_top {
            let _ = writeln!(
                out,
                "{name}{{client=\"{}\",kind=\"{}\"}} {}",
                label_value(&shown(&s.counted.label())),
                s.counted.kind(),
                value(s)
            );
        }
    }
    out
}

/// A label value as the text format wants it: backslash, double quote and
/// line feed escaped (`shown` has already made other control bytes `\xHH`).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `bytes` to a temporary file beside `path` and renames it into
/// place, so a collector never reads half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Internal> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let temp = path.with_file_name(name);
    // create_new: never through a link or over a file someone put there.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| fail("write", &temp, e))
        .and_then(|()| std::fs::rename(&temp, path).map_err(|e| fail("rename", path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    #[test]
    fn top_is_read_once() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(parse(&args(&[])).unwrap().0, DEFAULT_TOP);
        assert_eq!(parse(&args(&["--top", "3"])).unwrap().0, 3);
        assert!(parse(&args(&["--top", "x"]))
            .unwrap_err()
            .contains("--top x"));
        assert!(parse(&args(&["--top"])).is_err());
        assert!(parse(&args(&["--top", "1", "--top", "2"])).is_err());
    }
}
