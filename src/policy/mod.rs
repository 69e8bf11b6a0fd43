//! overlimit-policy's protocol: Postfix's SMTP access policy delegation
//! (SMTPD_POLICY_README), as a thin front end over the same engine as the
//! qmail plug-in.
//!
//! - `request`: reading one request, bounded;
//! - `reply`: the `action=` wording and the log line of a refusal;
//! - `decide`: one request's answer over client, lookup and admit;
//! - `cache`: lookups remembered until the control file or its cdb changes;
//! - `serve`: one connection (spawn mode, or one of the daemon's);
//! - `listen`: the daemon's sockets, threads and clean stop;
//! - `metrics`: `--metrics HOST:PORT`, the counters served on HTTP;
//! - `logger`: stderr, or syslog where stderr is the policy socket.

pub mod cache;
pub mod decide;
pub mod listen;
pub mod logger;
pub mod metrics;
pub mod reply;
pub mod request;
pub mod serve;
