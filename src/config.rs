//! The environment every program reads, so one `export` line in a run script
//! or a crontab configures them all (see the ENVIRONMENT section of the man
//! pages), and the home every default path derives from.
//!
//! Like qmail's `conf-qmail`, the home is fixed when the programs are built:
//! `make QMAILDIR=DIR` passes `OVERLIMIT_QMAILDIR=DIR` to cargo. A privileged
//! program uses only these built-in paths, so an install into another home
//! never acts on `/var/qmail`, and no caller can point one elsewhere.

use std::ffi::OsString;
use std::path::PathBuf;

/// The qmail home this build belongs to (`/var/qmail` unless built otherwise).
pub const QMAILDIR: &str = match option_env!("OVERLIMIT_QMAILDIR") {
    Some(dir) if !dir.is_empty() => dir,
    _ => "/var/qmail",
};

/// `QMAILDIR/$rel` as a `&'static str`, computed at compile time.
#[macro_export]
macro_rules! home_path {
    ($rel:literal) => {{
        const REL: &str = concat!("/", $rel);
        const LEN: usize = $crate::config::QMAILDIR.len() + REL.len();
        const BYTES: [u8; LEN] = $crate::config::join($crate::config::QMAILDIR, REL);
        const PATH: &str = match std::str::from_utf8(&BYTES) {
            Ok(s) => s,
            Err(_) => panic!("QMAILDIR is not UTF-8"),
        };
        PATH
    }};
}

/// `a` then `b`, as bytes, in a const context (`N` is their total length).
pub const fn join<const N: usize>(a: &str, b: &str) -> [u8; N] {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut out = [0u8; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - a.len()];
        i += 1;
    }
    out
}

pub const DEFAULT_CONTROL: &str = home_path!("control/relaylimits");
pub const DEFAULT_DIR: &str = home_path!("overlimit");
/// For `overlimit-count`, which trusts no environment: the `OVERLIMIT_REDIS`
/// URL, on its first line, when the counters are in Redis.
pub const DEFAULT_REDIS: &str = home_path!("control/overlimitredis");
/// Where qmail's programs and ours live.
pub const BIN: &str = home_path!("bin");

#[derive(Clone, Debug)]
pub struct Config {
    /// `RELAYLIMITS`: the control file.
    pub control: PathBuf,
    /// `OVERLIMITDIR`: the counter directory.
    pub dir: PathBuf,
    /// `OVERLIMIT_REDIS`: a server holding the counters instead of `dir`.
    pub redis: Option<String>,
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
            // A value that is not UTF-8 is kept (lossily) so that it fails
            // to parse, loudly, instead of falling back to files.
            redis: std::env::var_os("OVERLIMIT_REDIS")
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string_lossy().into_owned()),
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

    /// Where the counters are: `OVERLIMIT_REDIS`, or files in `dir`.
    pub fn store(&self) -> Result<crate::backend::Store, crate::error::Internal> {
        crate::backend::Store::open(&self.dir, self.redis.as_deref())
    }
}

/// The counters as installed, for `overlimit-count`: the server named in
/// `DEFAULT_REDIS` if that file exists, else files in `DEFAULT_DIR`. The
/// caller of a set-id program controls its environment, and an
/// `OVERLIMIT_REDIS` of its own would send its counts to a server it runs.
pub fn installed_store() -> Result<crate::backend::Store, crate::error::Internal> {
    let path = std::path::Path::new(DEFAULT_REDIS);
    let url = match std::fs::read(path) {
        Ok(text) => {
            let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
            let url = String::from_utf8_lossy(first).trim().to_string();
            (!url.is_empty()).then_some(url)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(crate::error::fail("read", path, e)),
    };
    crate::backend::Store::open(std::path::Path::new(DEFAULT_DIR), url.as_deref())
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_default_path_derives_from_the_home() {
        assert_eq!(
            super::DEFAULT_CONTROL,
            format!("{}/control/relaylimits", super::QMAILDIR)
        );
        assert_eq!(super::DEFAULT_DIR, format!("{}/overlimit", super::QMAILDIR));
        assert_eq!(super::BIN, format!("{}/bin", super::QMAILDIR));
    }
}
