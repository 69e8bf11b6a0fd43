//! `overlimit block` and `overlimit unblock`: the administrator's immediate
//! stop for one client (or shared counter), with no edit of the control
//! file. The block is kept in the counter itself (`counter.rs`, the
//! `blocked` line), so it holds with files and with Redis alike and every
//! front end refuses through the one decision (`admit.rs`); each is also a
//! line in the journal, which `overlimit history` shows.

use super::exit;
use crate::backend::{Change, Expiry, Found, Open, Store};
use crate::client::{shown, unescape};
use crate::counted::Counted;
use crate::counter::{Block, Counter, REASON_LIMIT};
use crate::journal::{self, Event};
use crate::time::{Time, ADMIN_LOCK_WAIT};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

pub const USAGE: &str = "usage: overlimit block [--for DURATION] [--reason TEXT] [--] CLIENT
       overlimit unblock [--] CLIENT

block refuses every recipient of CLIENT (a client, or @domain or @RANGE for
a shared counter that a line gives limits, as status prints it) at once,
whatever its limits say, until --for has passed (units s, m, h, d, w; at
most a year) or until unblock; without --for, until unblock. The refusal
says `blocked by the administrator until TIME: REASON`, and the sender sees
the reason. OVERLIMIT_MONITOR only logs it, as it does a full limit. The
block is kept in the counter, shown by status, kept by the sweep, and
recorded with unblock in the journal. Exit 0, or 2 on a usage error or a
counter that cannot be written.";

struct Asked {
    name: Vec<u8>,
    seconds: Option<u64>,
    reason: Option<String>,
}

fn parse(args: &[OsString], unblock: bool) -> Result<Asked, String> {
    let mut names = Vec::new();
    let (mut seconds, mut reason) = (None, None);
    let mut rest = args.iter();
    let mut flags_done = false;
    while let Some(arg) = rest.next() {
        let mut value = |flag: &str| rest.next().ok_or(format!("{flag} needs a value"));
        match arg.as_bytes() {
            name if flags_done || !name.starts_with(b"-") => names.push(name.to_vec()),
            b"--" => flags_done = true,
            b"--for" if !unblock && seconds.is_none() => {
                let v = value("--for")?;
                let s = crate::limits::parse_duration(v.as_bytes()).ok_or_else(|| {
                    format!("--for {}: not a duration such as 1d", shown(v.as_bytes()))
                })?;
                seconds = Some(u64::from(s));
            }
            b"--reason" if !unblock && reason.is_none() => {
                let mut text = shown(value("--reason")?.as_bytes());
                let mut cut = text.len().min(REASON_LIMIT);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                reason = Some(text);
            }
            b"--for" | b"--reason" if !unblock => {
                return Err(format!("{} given twice", shown(arg.as_bytes())))
            }
            other => return Err(format!("unknown flag {}", shown(other))),
        }
    }
    match names.len() {
        1 => Ok(Asked {
            name: unescape(&names[0]),
            seconds,
            reason,
        }),
        0 => Err("a CLIENT is needed".into()),
        _ => Err(format!(
            "one CLIENT at a time, not also {}",
            shown(&names[1])
        )),
    }
}

/// `overlimit block` (or with `unblock`, `overlimit unblock`).
pub fn run(store: &mut Store, dir: &Path, args: &[OsString], unblock: bool) -> i32 {
    let command = if unblock { "unblock" } else { "block" };
    let asked = match parse(args, unblock) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("overlimit {command}: {e}\n{USAGE}");
            return exit::TROUBLE;
        }
    };
    // Patterns (`*@domain`, a bare range) are reset's, not block's: a block
    // is kept in one counter, and names one.
    let pattern = asked.name.starts_with(b"*@") || crate::client::range_spelled(&asked.name);
    let Some(who) = Counted::from_label(&asked.name).filter(|_| !pattern) else {
        eprintln!(
            "overlimit {command}: {}: not a client name, @domain or @range",
            shown(&asked.name)
        );
        return exit::TROUBLE;
    };
    let now = Time::now().secs();
    let block = Block {
        until: asked.seconds.map_or(0, |s| now.saturating_add(s)),
        reason: asked.reason.unwrap_or_else(|| "no reason given".into()),
    };
    let label = who.label();
    let open = if unblock {
        Open::Existing
    } else {
        Open::Create
    };
    let deadline = Instant::now() + ADMIN_LOCK_WAIT;
    let done = store.update(&[who.file()], open, deadline, |mut found| {
        let mut c = match found.pop() {
            Some(Found::Counter(c)) => c,
            // A damaged counter is started again: the block must hold.
            Some(Found::Damaged) if !unblock => Counter::default(),
            _ => return Ok((None, vec![Change::Keep])),
        };
        c.client.clone_from(&label);
        let before = c.block.take();
        if !unblock {
            c.block = Some(block.clone());
        } else if before.is_none() {
            return Ok((None, vec![Change::Keep]));
        }
        // Blocked: only the sweep may remove it; unblocked: as it was, and
        // the next decision gives it its limits' expiry again.
        let expiry = if unblock {
            Expiry::AsBefore
        } else {
            Expiry::Never
        };
        Ok((Some(before), vec![Change::Set(c, expiry)]))
    });
    let name = shown(&label);
    let event = match done {
        Err(e) => {
            eprintln!("overlimit {command}: {e}");
            return exit::TROUBLE;
        }
        Ok(None) => {
            println!("{name}: not blocked");
            return exit::OK;
        }
        Ok(Some(before)) if unblock => {
            println!("{name}: unblocked");
            let reason = before.map(|b| b.reason).unwrap_or_default();
            event(now, "unblock", &name, reason, 0)
        }
        Ok(Some(_)) => {
            let until = crate::refusal::until(&block);
            println!("{name}: blocked {until}: {}", block.reason);
            event(now, "block", &name, block.reason.clone(), block.until)
        }
    };
    match journal::append(dir, &[event]) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!(
                "overlimit {command}: {}: {e} (the {command} itself is done)",
                dir.join(journal::NAME).display()
            );
            exit::TROUBLE
        }
    }
}

/// A block's journal line: its reason where a limit goes, its end (0: none)
/// where a count goes.
fn event(at: u64, kind: &str, client: &str, reason: String, until: u64) -> Event {
    Event {
        at,
        event: kind.into(),
        client: client.into(),
        limit: reason,
        count: until,
    }
}
