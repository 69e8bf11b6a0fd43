//! `overlimit history`: who was refused, when, for which limit and how often,
//! read from the journal (`journal.rs`) and its rotated file. Each `over`
//! line opens an episode of its client and limit, the next `free` closes it;
//! a block is an episode of its own, from `block` to `unblock` (or expiry).

use super::exit;
use crate::client::shown;
use crate::journal::{self, quoted, utc, Event};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub const USAGE: &str = "usage: overlimit history [--since DURATION] [--json] [--] [CLIENT...]

Lists the episodes recorded in OVERLIMITDIR/.journal and .journal.1: each
time a client or shared counter went over one of its limits (or was
blocked), when it had room again and how long that took, grouped by client
and limit with the number of episodes. --since 7d keeps the episodes still
going or ended in the last 7 days (units s, m, h, d, w). A CLIENT is named
as status prints it. Exit 0, or 2 on a usage error or a journal that cannot
be read.";

/// One stretch of time a limit had no room.
#[derive(Debug)]
pub struct Episode {
    pub client: String,
    /// The limit, or `blocked`.
    pub limit: String,
    pub over: u64,
    /// When it had room again; `None`: no end recorded (still over, or
    /// its end was lost with a journal line or a rotated file).
    pub free: Option<u64>,
    /// Recipients counted when it went over; for a block, its reason.
    pub detail: String,
}

struct Options {
    since: Option<u64>,
    json: bool,
    names: Vec<String>,
}

pub fn run(dir: &Path, args: &[OsString]) -> i32 {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("overlimit history: {e}\n{USAGE}");
            return exit::TROUBLE;
        }
    };
    let (events, bad) = match journal::read_all(&journal::paths(dir)) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("overlimit history: {e}");
            return exit::TROUBLE;
        }
    };
    if bad > 0 {
        eprintln!("overlimit history: {bad} journal lines were not events; skipped");
    }
    let now = crate::time::Time::now().secs();
    let cutoff = options.since.map(|s| now.saturating_sub(s));
    let shown_ones: Vec<Episode> = episodes(&events)
        .into_iter()
        .filter(|e| options.names.is_empty() || options.names.contains(&e.client))
        .filter(|e| cutoff.is_none_or(|c| e.free.is_none_or(|f| f >= c)))
        .collect();
    if options.json {
        print_json(&shown_ones, now);
    } else {
        print_text(&shown_ones, now);
    }
    exit::OK
}

fn parse(args: &[OsString]) -> Result<Options, String> {
    let mut options = Options {
        since: None,
        json: false,
        names: Vec::new(),
    };
    let mut rest = args.iter();
    let mut flags_done = false;
    while let Some(arg) = rest.next() {
        match arg.as_bytes() {
            name if flags_done || !name.starts_with(b"-") => options.names.push(shown(name)),
            b"--" => flags_done = true,
            b"--json" => options.json = true,
            b"--since" if options.since.is_none() => {
                let value = rest.next().ok_or("--since needs a value")?;
                let seconds = crate::limits::parse_duration(value.as_bytes()).ok_or_else(|| {
                    format!(
                        "--since {}: not a duration such as 7d",
                        shown(value.as_bytes())
                    )
                })?;
                options.since = Some(u64::from(seconds));
            }
            b"--since" => return Err("--since given twice".into()),
            other => return Err(format!("unknown flag {}", shown(other))),
        }
    }
    Ok(options)
}

/// Pairs the events, oldest first, into episodes in the order they began.
pub fn episodes(events: &[Event]) -> Vec<Episode> {
    let mut all: Vec<Episode> = Vec::new();
    for e in events {
        let (limit, opens) = match e.event.as_str() {
            "over" => (e.limit.clone(), true),
            "free" => (e.limit.clone(), false),
            "block" => ("blocked".to_string(), true),
            "unblock" => ("blocked".to_string(), false),
            _ => continue,
        };
        let open = all
            .iter_mut()
            .rev()
            .find(|p| p.client == e.client && p.limit == limit && p.free.is_none());
        match (open, opens) {
            // A second `over` while one is open: the same episode (two
            // processes saw it at once, or a journal line was lost).
            (Some(_), true) => {}
            (Some(p), false) => p.free = Some(e.at),
            (None, true) => all.push(Episode {
                client: e.client.clone(),
                limit,
                over: e.at,
                free: block_end(e),
                detail: if e.event == "block" {
                    e.limit.clone()
                } else {
                    e.count.to_string()
                },
            }),
            // A `free` whose start was rotated away: nothing to pair.
            (None, false) => {}
        }
    }
    all
}

/// A block's own expiry, recorded as its `count` (Unix seconds; 0: none).
fn block_end(e: &Event) -> Option<u64> {
    (e.event == "block" && e.count > 0).then_some(e.count)
}

fn length(e: &Episode, now: u64) -> u64 {
    e.free.unwrap_or(now).saturating_sub(e.over)
}

fn print_text(episodes: &[Episode], now: u64) {
    if episodes.is_empty() {
        println!("no episodes recorded");
        return;
    }
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for e in episodes {
        if !groups.contains(&(&e.client, &e.limit)) {
            groups.push((&e.client, &e.limit));
        }
    }
    for (client, limit) in groups {
        let mine: Vec<&Episode> = episodes
            .iter()
            .filter(|e| e.client == client && e.limit == limit)
            .collect();
        let total: u64 = mine.iter().map(|e| length(e, now)).sum();
        let count = mine.len();
        let plural = if count == 1 { "" } else { "s" };
        println!(
            "{client} {limit}: {count} episode{plural}, {} over in all",
            crate::log::duration(total)
        );
        for e in mine {
            let end = match e.free {
                Some(f) if f > now => format!("until {}", utc(f)),
                Some(f) => format!("to {}", utc(f)),
                None => "no end recorded yet".to_string(),
            };
            let detail = if e.limit == "blocked" {
                format!("reason: {}", e.detail)
            } else {
                format!("{} counted", e.detail)
            };
            println!(
                "  {} {end} ({}; {detail})",
                utc(e.over),
                crate::log::duration(length(e, now))
            );
        }
    }
}

fn print_json(episodes: &[Episode], now: u64) {
    let items: Vec<String> = episodes
        .iter()
        .map(|e| {
            format!(
                "{{\"client\":{},\"limit\":{},\"over\":{},\"free\":{},\"seconds\":{},\"detail\":{}}}",
                quoted(&e.client),
                quoted(&e.limit),
                e.over,
                e.free.map_or("null".to_string(), |f| f.to_string()),
                length(e, now),
                quoted(&e.detail)
            )
        })
        .collect();
    println!("[{}]", items.join(",\n "));
}
