//! `overlimit migrate`: moves the counter files of `OVERLIMITDIR` into the
//! Redis server of `OVERLIMIT_REDIS`, for a host that starts sharing its
//! counters with others. Every count is kept: totals, windows, refused
//! tallies and notified limits are added to what the server may already
//! hold for the same client (another host counting there already), never
//! written over it.
//!
//! Each file stays locked while it is moved, so no plug-in still counting
//! in files adds to it meanwhile; its counts are merged into the key in one
//! `WATCH`ed transaction, and only then is the file removed, still locked.
//! A second run finds no file, so it changes nothing: that is what makes
//! the command safe to run twice. (A crash between the transaction and the
//! removal would count that one counter twice on the next run: more, never
//! fewer, which errs strict.)

use super::{exit, Args};
use crate::backend::{Change, Expiry, Found, Open, Store};
use crate::counter::Counter;
use crate::error::Internal;
use crate::time::Time;
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

pub const USAGE: &str = "usage: overlimit migrate

Moves every counter file of OVERLIMITDIR into the server OVERLIMIT_REDIS
names, adding its counts to what the server holds for the same client, and
removes the file once its counts are there; a second run finds nothing to
move. Exit 0 when every counter moved, 1 when some were left in place (not
a counter, in the directory or on the server), 2 on a usage error or when
the directory or the server cannot be reached.";

pub fn run(dir: &Path, redis: Option<&str>, args: &[OsString]) -> i32 {
    match Args::parse(args, &[]) {
        Ok(a) if a.names.is_empty() => {}
        Ok(_) => {
            eprintln!("overlimit migrate: unexpected argument\n{USAGE}");
            return exit::TROUBLE;
        }
        Err(e) => {
            eprintln!("overlimit migrate: {e}\n{USAGE}");
            return exit::TROUBLE;
        }
    }
    let Some(url) = redis else {
        eprintln!("overlimit migrate: OVERLIMIT_REDIS is not set: there is no server to move the counters to");
        return exit::TROUBLE;
    };
    let mut shared = match Store::open(dir, Some(url)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("overlimit migrate: {e}");
            return exit::TROUBLE;
        }
    };
    let mut files = Store::Files(dir.to_path_buf());
    let names = match files.files(Instant::now()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("overlimit migrate: {e}");
            return exit::TROUBLE;
        }
    };
    let (mut moved, mut left) = (0usize, 0usize);
    let mut code = exit::OK;
    for name in &names {
        match move_one(&mut files, &mut shared, name) {
            Ok(true) => moved += 1,
            Ok(false) => {}
            Err(Moved::Damaged(why)) => {
                eprintln!("overlimit migrate: {why}; left in place");
                left += 1;
                code = code.max(exit::PROBLEMS);
            }
            Err(Moved::Failed(e)) => {
                eprintln!("overlimit migrate: {e}; left in place");
                left += 1;
                code = exit::TROUBLE;
            }
        }
    }
    println!(
        "migrated {moved} counter{} from {} to {}; {left} left in place",
        if moved == 1 { "" } else { "s" },
        dir.display(),
        crate::redis::Server::parse(url).map_or_else(|_| url.to_string(), |s| s.shown())
    );
    code
}

/// Why one counter was not moved.
enum Moved {
    /// Not a counter (the file, or the key it would merge into).
    Damaged(String),
    /// The file or the server could not be read or written.
    Failed(Internal),
}

/// Moves one counter file; false when it is gone already (a racing sweep
/// or reset).
fn move_one(files: &mut Store, shared: &mut Store, name: &str) -> Result<bool, Moved> {
    let deadline = Instant::now() + crate::time::ADMIN_LOCK_WAIT;
    let file = [name.to_string()];
    let place = files.place(name);
    let mut damaged = None;
    let result = files.update(&file, Open::Existing, deadline, |found| {
        let counter = match found.into_iter().next() {
            Some(Found::Counter(c)) => c,
            Some(Found::Missing) | None => return Ok((false, vec![Change::Keep])),
            Some(Found::Damaged) => {
                damaged = Some(format!("{place}: not a counter"));
                return Ok((false, vec![Change::Keep]));
            }
        };
        let now = Time::now();
        let merged = shared.update(&file, Open::Create, deadline, |there| match &there[0] {
            Found::Damaged => Ok((false, vec![Change::Keep])),
            Found::Missing => Ok((
                true,
                vec![set(merge(Counter::default(), &counter, now), false)],
            )),
            Found::Counter(c) => Ok((true, vec![set(merge(c.clone(), &counter, now), true)])),
        })?;
        if !merged {
            damaged = Some(format!("{}: not a counter", shared.place(name)));
            return Ok((false, vec![Change::Keep]));
        }
        Ok((true, vec![Change::Delete]))
    });
    match (result, damaged) {
        (_, Some(why)) => Err(Moved::Damaged(why)),
        (Ok(moved), None) => Ok(moved),
        (Err(e), None) => Err(Moved::Failed(e)),
    }
}

/// The merged counter's write. A key that was there keeps its expiry; a new
/// one keeps its count until the sweep, as its file did: `migrate` does not
/// read the control file, and the next recipient counted sets the expiry
/// its limits call for.
fn set(counter: Counter, existed: bool) -> Change {
    Change::Set(
        counter,
        if existed {
            Expiry::AsBefore
        } else {
            Expiry::Never
        },
    )
}

/// `from`'s counts added to `into`'s: totals and refusals summed, the later
/// refusal kept, notified limits united, each window's buckets added to the
/// same period's (both expired to `now` first, so no bucket already outside
/// its window comes back).
pub fn merge(mut into: Counter, from: &Counter, now: Time) -> Counter {
    if into.client.is_empty() {
        into.client = from.client.clone();
    }
    into.total = into.total.saturating_add(from.total);
    into.refused = into.refused.saturating_add(from.refused);
    into.last_refused = into.last_refused.max(from.last_refused);
    for item in &from.notified {
        if !into.notified.contains(item) {
            into.notified.push(*item);
        }
    }
    for w in &from.windows {
        let mut w = w.clone();
        w.expire(now);
        let target = into.window_mut(w.period);
        target.expire(now);
        for (i, &n) in w.counts.iter().enumerate() {
            target.put(w.first.saturating_add(i as u64), n);
        }
    }
    into
}
