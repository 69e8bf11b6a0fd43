//! Local injection: the shared parts of `sendmail-overlimit` (the wrapper PHP's
//! `mail()` runs as the site's user), `overlimit-count` (set-id `overlimit`:
//! counts, then hands the message to the real sendmail itself) and
//! `qmail-queue-overlimit` (the qmail-queue front). Mail handed to sendmail
//! never meets qmail-smtpd, so these put it under the same limits and
//! counters, counting exactly what is handed to the queue.
//!
//! - `args`: the sendmail command line, modelled as qmail's and Postfix's read it;
//! - `address`: address lists and the one-plain-address check;
//! - `message`: the header fields the wrapper reads and removes;
//! - `identity`: the calling account, from the real uid;
//! - `senders`: the administrator's map from accounts to client names;
//! - `privilege`: becoming `overlimit` wholly, the caller's state taken back;
//! - `cgroup`: whether the caller controls the counter's cgroup;
//! - `deliverer`: the administrator's real sendmail, and one run of it;
//! - `refusal`: how a refusal reads, for the caller and for the log;
//! - `install`: what `overlimit check` reports about a broken install.

pub mod address;
pub mod args;
pub mod cgroup;
pub mod deliverer;
pub mod identity;
pub mod install;
pub mod message;
pub mod privilege;
pub mod refusal;
pub mod senders;

use std::ffi::CString;

/// `overlimit-count`, which `sendmail-overlimit` and `qmail-queue-overlimit` run.
pub const COUNTER: &str = crate::home_path!("bin/overlimit-count");
/// Accounts whose queued mail passes the queue front uncounted.
pub const UNCOUNTED: &str = crate::home_path!("control/overlimit-uncounted");
/// The original qmail-queue, once the front is swapped in.
pub const QUEUE_ORIG: &str = crate::home_path!("bin/qmail-queue.orig");
/// The front as `make install` puts it, before it is swapped in.
pub const FRONT: &str = crate::home_path!("bin/qmail-queue-overlimit");
/// The front itself, where qmail's programs run it.
pub const QUEUE: &str = crate::home_path!("bin/qmail-queue");

/// Refused for now: over the limit, or an error that may pass. Not 75
/// (EX_TEMPFAIL), which PHP 8.5's `mail()` counts as success.
pub const TEMPFAIL: i32 = 111;
/// Refused for good: a usage error, a name the account may not use, a message
/// too large.
pub const PERMFAIL: i32 = 100;

/// Largest message the wrapper buffers; PHP's mail is far smaller.
pub const MAX_MESSAGE: usize = 32 << 20;

/// Where local accounts live in the control file: `*@localhost:100/1h` gives
/// each account its own limit, `@localhost:2000/1h` caps them all together.
pub const LOCAL_DOMAIN: &str = "localhost";

/// Whether a control file the privileged programs read is the
/// administrator's: a regular file owned by root that no one else may write.
pub fn trusted(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.is_file() && meta.uid() == 0 && meta.mode() & 0o022 == 0
}

/// Whether this process may execute `path`, by its effective ids (checked
/// before counting, so a message that cannot be handed on is never counted).
pub fn executable(path: &std::path::Path) -> Result<(), crate::error::Internal> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        crate::error::Internal::other(format!("{}: a NUL in the path", path.display()))
    })?;
    // SAFETY: faccessat reads a NUL-terminated string we own.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(crate::error::fail("execute", path, e));
    }
    Ok(())
}

/// Sends one line to syslog, facility mail, as `ident`. Control bytes are
/// escaped so that a subject cannot forge log lines; a missing syslog daemon
/// just loses the line.
pub fn syslog(ident: &'static std::ffi::CStr, priority: libc::c_int, text: &str) {
    let text = crate::client::printable(text.as_bytes());
    let Ok(text) = CString::new(text) else { return };
    // SAFETY: `ident` is static, as openlog requires; the format is a literal
    // "%s" and its one argument a NUL-terminated string we own.
    unsafe {
        libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_MAIL);
        libc::syslog(priority, c"%s".as_ptr(), text.as_ptr());
        libc::closelog();
    }
}

/// An anonymous memory file (a memfd), for a message handed to a child on
/// its stdin: the child reads it from offset 0 once it is rewound.
pub fn memory_file(name: &std::ffi::CStr) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor it
    // returns is ours alone.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// The whole message on stdin, at most `MAX_MESSAGE` bytes: `Err` gives the
/// exit code (111 unreadable, 100 too large) and the reason.
pub fn read_message() -> Result<Vec<u8>, (i32, String)> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| (TEMPFAIL, format!("cannot read the message: {e}")))?;
    if buf.len() > MAX_MESSAGE {
        let mib = MAX_MESSAGE >> 20;
        return Err((PERMFAIL, format!("message larger than {mib} MiB")));
    }
    Ok(buf)
}

/// Answers `PROGRAM --version` (the only argument) and exits 0, before the
/// program does anything else: the set-id programs then neither count nor
/// refuse, and an administrator can ask any installed program its version.
pub fn answer_version(program: &str) {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "--version") && args.next().is_none() {
        use std::io::Write;
        let version = env!("CARGO_PKG_VERSION");
        let _ = writeln!(std::io::stdout(), "{program} {version}");
        std::process::exit(0);
    }
}
