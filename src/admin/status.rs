//! `overlimit status`: who is counted, against which limits, how many in each
//! window, how many refused, and when room frees up; over-limit clients first.

use crate::admit::{full_items, Full};
use crate::client::{printable, Client};
use crate::counter::Counter;
use crate::store::{client_file, domain_file, Locked};
use crate::sweep::{counter_files, label, limits_of};
use std::path::Path;
use std::time::Instant;

pub const USAGE: &str = "usage: overlimit status [--json] [CLIENT...]

Lists the counted clients (or only those named; `@domain` names a domain's
shared counter): limits, classic count, count per window, refused attempts,
and when room frees up. Over-limit clients come first.";

struct Row {
    label: Vec<u8>,
    limits: String,
    counter: Counter,
    full: Vec<Full>,
}

pub fn run(control: &Path, dir: &Path, args: &[String]) -> i32 {
    let json = args.iter().any(|a| a == "--json");
    let names: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    let files = if names.is_empty() {
        match counter_files(dir) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("overlimit: {e}");
                return 2;
            }
        }
    } else {
        names.iter().map(|n| file_of(n.as_bytes())).collect()
    };
    let now = crate::time::Time::now();
    let mut rows = Vec::new();
    let mut code = 0;
    for (i, file) in files.iter().enumerate() {
        match row(control, dir, file, now) {
            Ok(Some(r)) => rows.push(r),
            Ok(None) => {
                // Named as the administrator wrote it, not as its file.
                if let Some(name) = names.get(i) {
                    eprintln!("overlimit: {}: not counted", printable(name.as_bytes()));
                }
            }
            Err(e) => {
                eprintln!("overlimit: {e}");
                code = 2;
            }
        }
    }
    rows.sort_by(|a, b| {
        a.full
            .is_empty()
            .cmp(&b.full.is_empty())
            .then(b.counter.total.cmp(&a.counter.total))
    });
    if json {
        print_json(&rows, now);
    } else {
        print_table(&rows, now);
    }
    code
}

/// The counter file of a name given on the command line.
pub fn file_of(name: &[u8]) -> String {
    match name.strip_prefix(b"@") {
        Some(domain) => domain_file(&domain.to_ascii_lowercase()),
        None => {
            Client::from_name(name).map_or_else(|| client_file(name), |c| client_file(&c.name()))
        }
    }
}

fn row(
    control: &Path,
    dir: &Path,
    file: &str,
    now: crate::time::Time,
) -> Result<Option<Row>, crate::error::Internal> {
    let deadline = Instant::now() + crate::time::READ_LOCK_WAIT;
    let Some(locked) = Locked::open_to_read(dir, file, deadline)? else {
        return Ok(None);
    };
    let Some(mut counter) = locked.read()? else {
        return Err(crate::error::Internal(format!(
            "{}: not a counter",
            locked.path.display()
        )));
    };
    drop(locked);
    let label = label(file, &counter);
    let limits = limits_of(control, &label)?.unwrap_or_default();
    let mut periods = limits.periods();
    periods.extend(counter.windows.iter().map(|w| w.period));
    periods.sort_unstable();
    periods.dedup();
    counter.keep_windows(&periods, now);
    let full = full_items(&label, &limits, &counter);
    Ok(Some(Row {
        limits: limits.to_string(),
        label,
        counter,
        full,
    }))
}

fn state(r: &Row, now: crate::time::Time) -> String {
    if r.full.is_empty() {
        return "ok".into();
    }
    let when: Vec<String> = r
        .full
        .iter()
        .map(|f| format!("{} {}", f.item, crate::refusal::room(now, f.room_at)))
        .collect();
    format!("OVER {}", when.join(", "))
}

fn print_table(rows: &[Row], now: crate::time::Time) {
    println!(
        "{:<32} {:<20} {:>8} {:<24} {:>8}  STATE",
        "CLIENT", "LIMITS", "COUNT", "WINDOWS", "REFUSED"
    );
    for r in rows {
        let windows: Vec<String> = r
            .counter
            .windows
            .iter()
            .map(|w| format!("{}:{}", crate::limits::format_period(w.period), w.count()))
            .collect();
        let limits = if r.limits == "0" {
            "unlimited"
        } else {
            &r.limits
        };
        println!(
            "{:<32} {:<20} {:>8} {:<24} {:>8}  {}",
            printable(&r.label),
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

fn print_json(rows: &[Row], now: crate::time::Time) {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let windows: Vec<String> = r
                .counter
                .windows
                .iter()
                .map(|w| format!("{{\"period\":{},\"count\":{}}}", w.period, w.count()))
                .collect();
            let room = crate::admit::room_at(&r.full);
            format!(
                "{{\"client\":{},\"limits\":{},\"count\":{},\"windows\":[{}],\"refused\":{},\"last_refused\":{},\"over\":{},\"room_at\":{},\"now\":{}}}",
                json_string(&r.label),
                json_string(r.limits.as_bytes()),
                r.counter.total,
                windows.join(","),
                r.counter.refused,
                r.counter.last_refused,
                !r.full.is_empty(),
                match (r.full.is_empty(), room) {
                    (true, _) => "null".to_string(),
                    (false, Some(t)) => t.secs_up().to_string(),
                    (false, None) => "\"reset\"".to_string(),
                },
                now.secs()
            )
        })
        .collect();
    println!("[{}]", items.join(",\n "));
}

/// A JSON string; bytes that are not printable ASCII are written as `\u00XX`
/// (a non-UTF-8 name stays readable and the output stays valid JSON).
fn json_string(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\u{b:04x}")),
        }
    }
    s.push('"');
    s
}
