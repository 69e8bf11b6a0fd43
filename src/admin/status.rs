//! `overlimit status`: who is counted, against which limits, how many in each
//! window, how many refused, when room frees up, and which counter refuses
//! a client (its own, its domain's, its range's); over-limit ones first.
//!
//! The counters are read first (each under a shared lock, released at
//! once), then the control file once for all of them with no lock held:
//! the cost grows with counters plus lines.

use super::{exit, Args};
use crate::admit::{full_items, Full};
use crate::backend::Store;
use crate::client::{shown, unescape};
use crate::counted::Counted;
use crate::counter::{Block, Counter};
use crate::error::Internal;
use crate::limits::{format_period, Limits};
use crate::lookup;
use crate::rules::{counters_of, limits_in, resolve_in};
use crate::sweep::{label, read_counter};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

pub const USAGE: &str = "usage: overlimit status [--json] [--] [CLIENT...]

Lists the counted clients and shared counters (or only the named ones and
the shared counters that apply to them; `@domain` and `@RANGE` name shared
counters): limits, classic count, count per window, refused attempts, and
which counter has no room and when it frees up. Over-limit ones come first.
A name is taken as status prints it (`\\xHH` for a byte that is not UTF-8).
Exit 0, or 2 on a usage error or a counter that cannot be read.";

/// One counter and its state.
struct Row {
    counted: Counted,
    limits: Limits,
    counter: Counter,
    /// Its own limits without room.
    full: Vec<Full>,
    /// For a client: the shared counters that apply to it.
    shared: Vec<Vec<u8>>,
    /// Every limit without room among the counters that apply to it.
    refused_by: Vec<Full>,
    /// For a client: the shared counters that apply to it and are blocked
    /// (its own block is its counter's).
    blocked_by: Vec<(Vec<u8>, Block)>,
}

pub fn run(control: &Path, store: &mut Store, args: &[OsString]) -> i32 {
    let args = match Args::parse(args, &["--json"]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("overlimit status: {e}\n{USAGE}");
            return exit::TROUBLE;
        }
    };
    let mut code = exit::OK;
    let now = crate::time::Time::now();
    match rows(control, store, &args.names, now, &mut code) {
        Ok(mut rows) => {
            // Named ones stay in the order asked, each before its shared
            // counters; the full list puts who has no room first.
            if args.names.is_empty() {
                rows.sort_by(|a, b| {
                    a.refused_by
                        .is_empty()
                        .cmp(&b.refused_by.is_empty())
                        .then(b.counter.total.cmp(&a.counter.total))
                });
            }
            if args.has("--json") {
                print_json(&rows, now);
            } else {
                print_table(&rows, now);
            }
            code
        }
        Err(e) => {
            eprintln!("overlimit: {e}");
            exit::TROUBLE
        }
    }
}

/// The rows to show: every counter file, or the named counters and those
/// that apply to named clients.
fn rows(
    control: &Path,
    store: &mut Store,
    names: &[Vec<u8>],
    now: crate::time::Time,
    code: &mut i32,
) -> Result<Vec<Row>, Internal> {
    // Listed before the closure below borrows the store.
    let listed = if names.is_empty() {
        store.files(std::time::Instant::now() + crate::time::READ_LOCK_WAIT)?
    } else {
        Vec::new()
    };
    let mut counters: HashMap<String, Counter> = HashMap::new();
    let mut read = |file: &str, code: &mut i32| -> Option<Counter> {
        if let Some(c) = counters.get(file) {
            return Some(c.clone());
        }
        match read_counter(store, file) {
            Ok(c) => {
                let c = c?;
                counters.insert(file.to_string(), c.clone());
                Some(c)
            }
            Err(e) => {
                eprintln!("overlimit: {e}");
                *code = exit::TROUBLE;
                None
            }
        }
    };
    // What to show, before the control file is read.
    let mut wanted: Vec<Counted> = Vec::new();
    // The index in `wanted` of each named one, with the name as asked.
    let mut named: HashMap<usize, Vec<u8>> = HashMap::new();
    if names.is_empty() {
        for file in listed {
            if let Some(c) = read(&file, code) {
                match Counted::from_label(&label(&file, &c)) {
                    Some(who) if who.file() == file => wanted.push(who),
                    // A seed-script file, or one named otherwise: by its file.
                    _ => wanted.extend(Counted::from_label(file.as_bytes())),
                }
            }
        }
    } else {
        for name in names {
            let name = unescape(name);
            match Counted::from_label(&name) {
                Some(who) => {
                    named.insert(wanted.len(), name);
                    wanted.push(who);
                }
                None => {
                    eprintln!("overlimit status: {}: not a client name", shown(&name));
                    *code = exit::TROUBLE;
                }
            }
        }
    }
    let mut notes = Vec::new();
    let source = lookup::open(control, &wanted, &mut notes)?;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, who) in wanted.iter().enumerate() {
        let applies = match who {
            Counted::Client(c) => counters_of(c, &resolve_in(&source, c)?),
            _ => vec![(who.clone(), limits_in(&source, who)?.unwrap_or_default())],
        };
        let mut states = Vec::new();
        for (counted, limits) in applies {
            let found = read(&counted.file(), code);
            let mut counter = found.clone().unwrap_or_default();
            let mut periods = limits.periods();
            periods.extend(counter.windows.iter().map(|w| w.period));
            periods.sort_unstable();
            periods.dedup();
            counter.keep_windows(&periods, now);
            let full = full_items(&counted.label(), &limits, &counter);
            states.push((counted, limits, counter, full, found.is_some()));
        }
        let refused_by: Vec<Full> = states.iter().flat_map(|s| s.3.clone()).collect();
        let shared: Vec<Vec<u8>> = states[1..].iter().map(|s| s.0.label()).collect();
        let blocked_by: Vec<(Vec<u8>, Block)> = states[1..]
            .iter()
            .filter_map(|s| Some((s.0.label(), holding(&s.2, now)?.clone())))
            .collect();
        let asked = named.get(&i);
        let is_named = asked.is_some();
        if let (Some(asked), true) = (asked, states.iter().all(|s| !s.4)) {
            eprintln!("overlimit: {}: not counted", shown(asked));
            continue;
        }
        for (n, (counted, limits, counter, full, _)) in states.into_iter().enumerate() {
            // Shared counters are shown once, and beside a named client only.
            if n > 0 && !is_named {
                continue;
            }
            if !seen.insert(counted.label()) {
                continue;
            }
            let refused_by = if n == 0 {
                refused_by.clone()
            } else {
                full.clone()
            };
            rows.push(Row {
                shared: if n == 0 { shared.clone() } else { Vec::new() },
                blocked_by: if n == 0 {
                    blocked_by.clone()
                } else {
                    Vec::new()
                },
                counted,
                limits,
                counter,
                full,
                refused_by,
            });
        }
    }
    Ok(rows)
}

/// `OVER 2/1h room in 12m` for the row's own limits, and `refused by
/// @shop.example (4 until reset)` for each shared counter without room or
/// `refused by @shop.example (BLOCKED ...)` for each one blocked.
fn state(r: &Row, now: crate::time::Time) -> String {
    let blocked = |b: &Block| format!("BLOCKED {}: {}", crate::refusal::until(b), b.reason);
    let block = holding(&r.counter, now).map(blocked);
    if r.refused_by.is_empty() && block.is_none() && r.blocked_by.is_empty() {
        return "ok".into();
    }
    let when = |f: &Full| format!("{} {}", f.item, crate::refusal::room(now, f.room_at));
    let label = r.counted.label();
    let mut parts: Vec<String> = block.into_iter().collect();
    if !r.full.is_empty() {
        let own: Vec<String> = r.full.iter().map(when).collect();
        parts.push(format!("OVER {}", own.join(", ")));
    }
    for (shared, b) in &r.blocked_by {
        parts.push(format!("refused by {} ({})", shown(shared), blocked(b)));
    }
    for f in r.refused_by.iter().filter(|f| f.label != label) {
        parts.push(format!("refused by {} ({})", shown(&f.label), when(f)));
    }
    parts.join("; ")
}

/// The counter's block, if it still holds.
fn holding(c: &Counter, now: crate::time::Time) -> Option<&Block> {
    c.block.as_ref().filter(|b| b.holds(now.secs()))
}

/// `null`, or `{"until":SECONDS or null,"reason":TEXT}`.
fn block_json(r: &Row, now: crate::time::Time) -> String {
    holding(&r.counter, now).map_or("null".into(), |b| block_fields(b, ""))
}

/// `{` the block's `until` and `reason` `}`, after the fields in `lead`.
fn block_fields(b: &Block, lead: &str) -> String {
    let until = match b.until {
        0 => "null".to_string(),
        t => t.to_string(),
    };
    format!(
        "{{{lead}\"until\":{until},\"reason\":{}}}",
        json_string(&b.reason)
    )
}

fn windows(c: &Counter) -> Vec<(u32, u64)> {
    c.windows.iter().map(|w| (w.period, w.count())).collect()
}

fn print_table(rows: &[Row], now: crate::time::Time) {
    println!(
        "{:<32} {:<20} {:>8} {:<24} {:>8}  STATE",
        "CLIENT", "LIMITS", "COUNT", "WINDOWS", "REFUSED"
    );
    for r in rows {
        let windows: Vec<String> = windows(&r.counter)
            .iter()
            .map(|(p, n)| format!("{}:{n}", format_period(*p)))
            .collect();
        let limits = if r.limits.is_unlimited() {
            "unlimited".to_string()
        } else {
            r.limits.to_string()
        };
        println!(
            "{:<32} {:<20} {:>8} {:<24} {:>8}  {}",
            shown(&r.counted.label()),
            limits,
            r.counter.total,
            if windows.is_empty() {
                "-".to_string()
            } else {
                windows.join(",")
            },
            r.counter.refused,
            state(r, now)
        );
    }
}

/// The room-at of a set of full limits: the latest, `reset` if one waits
/// for a reset, `null` if none is full.
fn room_json(full: &[Full]) -> String {
    if full.is_empty() {
        return "null".into();
    }
    match crate::admit::room_at(full) {
        Some(t) => t.secs_up().to_string(),
        None => "\"reset\"".into(),
    }
}

/// The schema is documented in overlimit(8) (JSON OUTPUT); keys are only
/// ever added.
fn print_json(rows: &[Row], now: crate::time::Time) {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let windows: Vec<String> = windows(&r.counter)
                .iter()
                .map(|(p, n)| format!("{{\"period\":{p},\"count\":{n}}}"))
                .collect();
            let refused_by: Vec<String> = r
                .refused_by
                .iter()
                .map(|f| {
                    format!(
                        "{{\"counter\":{},\"limit\":{},\"count\":{},\"room_at\":{}}}",
                        json_string(&shown(&f.label)),
                        json_string(&f.item.to_string()),
                        f.count,
                        room_json(std::slice::from_ref(f))
                    )
                })
                .collect();
            let shared: Vec<String> = r.shared.iter().map(|s| json_string(&shown(s))).collect();
            let blocked_by: Vec<String> = r
                .blocked_by
                .iter()
                .map(|(c, b)| block_fields(b, &format!("\"counter\":{},", json_string(&shown(c)))))
                .collect();
            format!(
                "{{\"client\":{},\"kind\":\"{}\",\"limits\":{},\"count\":{},\"windows\":[{}],\"refused\":{},\"last_refused\":{},\"over\":{},\"room_at\":{},\"refused_by\":[{}],\"shared\":[{}],\"blocked\":{},\"blocked_by\":[{}],\"now\":{}}}",
                json_string(&shown(&r.counted.label())),
                r.counted.kind(),
                json_string(&r.limits.to_string()),
                r.counter.total,
                windows.join(","),
                r.counter.refused,
                r.counter.last_refused,
                !r.refused_by.is_empty(),
                room_json(&r.refused_by),
                refused_by.join(","),
                shared.join(","),
                block_json(r, now),
                blocked_by.join(","),
                now.secs(),
            )
        })
        .collect();
    println!("[{}]", items.join(",\n "));
}

/// A JSON string of text that `shown` made: UTF-8 throughout, quotes and
/// backslashes escaped (control characters are already `\xHH`).
fn json_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}
