//! `overlimit reset NAME...`: frees clients by removing their counters under
//! lock, as the sweep does, so no increment racing with it is lost. A name
//! is taken as `status` prints it; `*@domain` and an address range reset
//! every client counter they cover.

use super::{exit, Args};
use crate::backend::{Change, Found, Open, Store};
use crate::client::{range_spelled, shown, unescape, Client, Net};
use crate::counted::Counted;
use crate::error::Internal;
use crate::journal::{self, Event};
use crate::sweep::{label, read_counter};
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

pub const USAGE: &str = "usage: overlimit reset [--] NAME...

Removes counters: their counts, windows and refused attempts start again
from zero. A NAME is a client, `@domain` or `@RANGE` for a shared counter,
as `overlimit status` prints them, or a pattern: `*@domain` for every user
of the domain, `192.0.2.0/24` for every address of the range (shared
counters are reset only by their own name). Exit 0, or 2 on a usage error or
a counter that cannot be removed.";

/// What one argument names.
enum Target {
    One(Counted),
    UsersOf(Vec<u8>),
    AddressesIn(Net),
}

fn target(name: &[u8]) -> Option<Target> {
    if let Some(domain) = name.strip_prefix(b"*@") {
        return (!domain.is_empty()).then(|| Target::UsersOf(domain.to_ascii_lowercase()));
    }
    if range_spelled(name) {
        return Net::parse(name).map(|(n, _)| Target::AddressesIn(n));
    }
    Counted::from_label(name).map(Target::One)
}

impl Target {
    fn covers(&self, who: &Counted) -> bool {
        match (self, who) {
            (Target::One(one), who) => one == who,
            (Target::UsersOf(d), Counted::Client(c @ Client::User(_))) => {
                c.domain() == Some(&d[..])
            }
            (Target::AddressesIn(net), Counted::Client(Client::Ip(ip))) => net.contains(*ip),
            _ => false,
        }
    }
}

pub fn run(store: &mut Store, dir: &Path, args: &[OsString]) -> i32 {
    let args = match Args::parse(args, &[]) {
        Ok(a) if !a.names.is_empty() => a,
        Ok(_) => {
            eprintln!("{USAGE}");
            return exit::TROUBLE;
        }
        Err(e) => {
            eprintln!("overlimit reset: {e}\n{USAGE}");
            return exit::TROUBLE;
        }
    };
    let mut code = exit::OK;
    let mut ended = Vec::new();
    for name in &args.names {
        let name = unescape(name);
        let asked = shown(&name);
        let Some(target) = target(&name) else {
            eprintln!("overlimit reset: {asked}: not a client name, @domain, *@domain or range");
            code = exit::TROUBLE;
            continue;
        };
        let files = match &target {
            Target::One(who) => Ok(vec![who.file()]),
            _ => matching(store, &target),
        };
        let mut removed = 0;
        for file in files.unwrap_or_else(|e| {
            eprintln!("overlimit: {e}");
            code = exit::TROUBLE;
            Vec::new()
        }) {
            match remove(store, &file, &target, &mut ended) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => {
                    eprintln!("overlimit: {e}");
                    code = exit::TROUBLE;
                }
            }
        }
        match (&target, removed) {
            (_, 0) => println!("{asked}: not counted"),
            (Target::One(_), _) => println!("{asked}: reset"),
            (_, n) => println!(
                "{asked}: reset {n} counter{}",
                if n == 1 { "" } else { "s" }
            ),
        }
    }
    if let Err(e) = journal::append(dir, &ended) {
        eprintln!(
            "overlimit reset: {}: {e}",
            dir.join(journal::NAME).display()
        );
        code = exit::TROUBLE;
    }
    code
}

/// The counters whose label the pattern covers.
fn matching(store: &mut Store, target: &Target) -> Result<Vec<String>, Internal> {
    let mut out = Vec::new();
    for file in store.files(Instant::now() + crate::time::ADMIN_LOCK_WAIT)? {
        if let Ok(Some(c)) = read_counter(store, &file) {
            if Counted::from_label(&label(&file, &c)).is_some_and(|who| target.covers(&who)) {
                out.push(file);
            }
        }
    }
    Ok(out)
}

/// Removes one counter, as one step against every writer, if it is (still)
/// one the target covers; false if there was none.
/// The episodes it ended are added to `ended`, for the journal.
fn remove(
    store: &mut Store,
    file: &str,
    target: &Target,
    ended: &mut Vec<Event>,
) -> Result<bool, Internal> {
    let deadline = Instant::now() + crate::time::ADMIN_LOCK_WAIT;
    let now = crate::time::Time::now().secs();
    let (covered, events) =
        store.update(&[file.to_string()], Open::Existing, deadline, |found| {
            let covered = match &found[0] {
                Found::Missing => false,
                _ if matches!(target, Target::One(_)) => true,
                Found::Counter(c) => {
                    Counted::from_label(&label(file, c)).is_some_and(|who| target.covers(&who))
                }
                Found::Damaged => false,
            };
            let change = if covered {
                Change::Delete
            } else {
                Change::Keep
            };
            let events = match &found[0] {
                Found::Counter(c) if covered => ended_by_reset(file, c, now),
                _ => Vec::new(),
            };
            Ok(((covered, events), vec![change]))
        })?;
    ended.extend(events);
    Ok(covered)
}

/// A removed counter's open episodes, ended: each reported limit, and its
/// block.
fn ended_by_reset(file: &str, c: &crate::counter::Counter, now: u64) -> Vec<Event> {
    let label = label(file, c);
    let freed: Vec<crate::admit::Full> = c
        .notified
        .iter()
        .map(|&item| crate::admit::Full::ended(&label, item))
        .collect();
    let mut events = journal::freed(&freed, now);
    if c.block.is_some() {
        events.push(Event {
            at: now,
            event: "unblock".into(),
            client: shown(&label),
            limit: "reset".into(),
            count: 0,
        });
    }
    events
}
