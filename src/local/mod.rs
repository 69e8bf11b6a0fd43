//! Local injection: the shared parts of `sendmail-overlimit` (the wrapper PHP's
//! `mail()` runs as the site's user) and `overlimit-count` (the small setgid
//! program that counts for it). Mail handed to sendmail never meets
//! qmail-smtpd, so these two put it under the same limits and counters.
//!
//! - `args`: the sendmail command line, as PHP and common tools write it;
//! - `message`: the few header fields the wrapper reads (recipients, subject);
//! - `identity`: the calling account, from the real uid;
//! - `senders`: the administrator's map from accounts to client names.

pub mod args;
pub mod identity;
pub mod message;
pub mod senders;

use std::ffi::CString;

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
