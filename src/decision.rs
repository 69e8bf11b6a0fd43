//! One client's recipients decided, as every front end asks it: the lines
//! that apply, the counters they name, the admission, its notes in the log
//! and its episode edges in the journal. The plug-in, the policy service and
//! `overlimit-count` differ only in where they get the lines (a file or the
//! policy service's cache) and the store, and in how they answer; the steps
//! and their order are here once, so a front end cannot skip one.

use crate::admit::{self, Admission, Target};
use crate::backend::Store;
use crate::client::Client;
use crate::config::Config;
use crate::error::Internal;
use crate::journal;
use crate::rules::Resolved;
use crate::time::Time;
use std::path::Path;
use std::time::Instant;

/// What is asked: `n` recipients of `client` at `now`.
pub struct Asked<'a> {
    pub client: &'a Client,
    /// The control file, named in front of its notes (bad lines, a stale cdb).
    pub control: &'a Path,
    /// The counter directory, which holds the journal.
    pub dir: &'a Path,
    pub n: u64,
    pub now: Time,
    pub deadline: Instant,
    /// Over the limit is counted and reported, never refused.
    pub monitor: bool,
}

impl<'a> Asked<'a> {
    /// One recipient of `client`, as `config` (the plug-in's environment,
    /// the policy service's) says where the lines and counters are.
    pub fn one(config: &'a Config, client: &'a Client, now: Time, deadline: Instant) -> Self {
        Asked {
            client,
            control: &config.control,
            dir: &config.dir,
            n: 1,
            now,
            deadline,
            monitor: config.monitor,
        }
    }
}

/// The answer, and the counters it raised (what a refund gives back).
pub struct Decided {
    pub result: Admission,
    pub targets: Vec<Target>,
}

/// Decides `asked`: `resolve` reads the lines that apply (filling the notes
/// to log), `store` holds the counters, `log` takes every line for the log.
/// The notes are logged even when the lines cannot be read.
pub fn decide(
    asked: &Asked<'_>,
    resolve: impl FnOnce(&mut Vec<String>) -> Result<Resolved, Internal>,
    store: &mut Store,
    log: &mut dyn FnMut(&str),
) -> Result<Decided, Internal> {
    let mut notes = Vec::new();
    let resolved = resolve(&mut notes);
    for n in &notes {
        log(&format!("{}: {n}", asked.control.display()));
    }
    let targets = admit::targets(asked.client, &resolved?);
    let result = admit::admit_n(
        store,
        &targets,
        asked.now,
        asked.deadline,
        asked.monitor,
        asked.n,
    )?;
    for n in &result.notes {
        log(n);
    }
    journal::record(asked.dir, &result, asked.now.secs(), |m| log(m));
    Ok(Decided { result, targets })
}
