//! overlimit: per-sender recipient limits for qmail and Postfix.
//!
//! The limit engine lives here; each program in `src/bin/` is a thin front end:
//!
//! - `control`, `limits`: one line of the control file and its limits;
//! - `client`, `counted`: who is sending, in canonical form, and the counters
//!   (own, domain, range) a client is counted on;
//! - `rules`: which counters and limits apply, by one set of probes;
//! - `lookup`, `compiled`, `cdb`: those probes answered from the text or its cdb;
//! - `counter`, `window`: a counter's text and its rolling windows;
//! - `backend`, `store`, `redis`: where counters live: files in one
//!   directory (`store`), or keys in a shared Redis server;
//! - `admit`: the decision for one recipient, across every counter that applies;
//! - `decision`: that decision as every front end asks it (lines, counters,
//!   admission, log, journal), once;
//! - `refusal`: how a refusal is worded, in the log and to the sender;
//! - `journal`: the history of each limit's episodes (`overlimit history`);
//! - `time`: milliseconds, and every deadline;
//! - `process`: what a program puts right before anything else (descriptors,
//!   signals of resource limits, memory that runs out);
//! - `sweep`: the cron job's reset;
//! - `local`: mail that meets no SMTP server (the sendmail wrapper, the
//!   counting program, the qmail-queue front);
//! - `policy`: the Postfix policy service;
//! - `admin`: the administrator's subcommands;
//! - `config`, `error`, `log`: environment, internal errors, diagnostics;
//! - `bytes`: fast byte searches for the control-file scan.

pub mod admin;
pub mod admit;
pub mod backend;
pub mod bytes;
pub mod cdb;
pub mod client;
pub mod compiled;
pub mod config;
pub mod control;
pub mod counted;
pub mod counter;
pub mod decision;
pub mod error;
pub mod journal;
pub mod limits;
pub mod local;
pub mod log;
pub mod lookup;
pub mod policy;
pub mod process;
pub mod redis;
pub mod refusal;
pub mod rules;
pub mod store;
pub mod sweep;
pub mod time;
pub mod window;
