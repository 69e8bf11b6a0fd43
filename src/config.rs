//! The environment every program reads, so one `export` line in a run script
//! or a crontab configures them all (see the ENVIRONMENT section of the man
//! pages).

use std::ffi::OsString;
use std::path::PathBuf;

pub const DEFAULT_CONTROL: &str = "/var/qmail/control/relaylimits";
pub const DEFAULT_DIR: &str = "/var/qmail/overlimit";

#[derive(Clone, Debug)]
pub struct Config {
    /// `RELAYLIMITS`: the control file.
    pub control: PathBuf,
    /// `OVERLIMITDIR`: the counter directory.
    pub dir: PathBuf,
    /// `OVERLIMIT_MONITOR`: log what would be refused, refuse nothing.
    pub monitor: bool,
    /// `OVERLIMIT_FAILCLOSED`: internal errors answer 111 instead of 112.
    pub fail_closed: bool,
    /// `OVERLIMIT_REPLY`: 421 or 451, the code of a reply line on fd 4.
    pub reply: Option<u16>,
    /// `OVERLIMIT_NOTIFY`: a program run when a client first goes over.
    pub notify: Option<OsString>,
    /// `OVERLIMIT_ATCHARS`: the characters that stand for `@` in a login.
    pub atchars: Vec<u8>,
}

impl Config {
    pub fn from_env() -> Config {
        let path = |name, default| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| OsString::from(default))
        };
        Config {
            control: path("RELAYLIMITS", DEFAULT_CONTROL).into(),
            dir: path("OVERLIMITDIR", DEFAULT_DIR).into(),
            monitor: switch("OVERLIMIT_MONITOR"),
            fail_closed: switch("OVERLIMIT_FAILCLOSED"),
            reply: match std::env::var_os("OVERLIMIT_REPLY")
                .as_deref()
                .and_then(|v| v.to_str())
            {
                Some("421") => Some(421),
                Some("451") => Some(451),
                _ => None,
            },
            notify: std::env::var_os("OVERLIMIT_NOTIFY").filter(|v| !v.is_empty()),
            atchars: crate::client::atchars(),
        }
    }
}

/// A switch is on when set to anything but the empty string or `0`.
pub fn switch(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
