//! `sendmail-overlimit`: a sendmail for PHP's `mail()` (its `sendmail_path`)
//! that puts local mail under the limits qmail-smtpd's plug-in applies.
//!
//! It runs as the site's user, without privileges, and counts by
//! construction: it reads the command line as qmail's and Postfix's sendmail
//! do (`local::args`), resolves every recipient itself (the arguments, and
//! with `-t` the header's To, Cc and Bcc, or the Resent- ones), refuses any
//! that is not one plain address, removes `Bcc:` from the message, and execs
//! `overlimit-count --submit` with exactly those recipients and the edited
//! message. That program counts them and hands them, each as one argument
//! and without `-t`, to the administrator's real sendmail: what is counted is
//! what is sent. This program never runs the real sendmail itself.
//!
//! Exit codes: `overlimit-count`'s (0 sent, 111 over a limit or a temporary
//! error, 100 never), and here 100 for a usage error or a recipient it cannot
//! read, 111 when it cannot go on; never 75, which PHP 8.5 takes for success.

use overlimit::client::printable;
use overlimit::local::args::{self, Args};
use overlimit::local::{address, identity, memory_file, message, privilege, read_message, syslog};
use overlimit::local::{COUNTER, PERMFAIL, TEMPFAIL};
use overlimit::log;
use std::ffi::{CStr, OsStr};
use std::io::{Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

const NAME: &str = "sendmail-overlimit";
const IDENT: &CStr = c"sendmail-overlimit";
const USAGE: &str =
    "usage: sendmail-overlimit [--client NAME] [--sender ADDR] [-t] [-i] [-f SENDER]
                          [-F FULLNAME] [--] [RECIPIENT...]

A sendmail for PHP's sendmail_path (sendmail-overlimit -t -i): it resolves
the recipients itself (arguments, and with -t the header's), and has
overlimit-count count them for the calling account and hand exactly those to
the real sendmail (control/overlimit-sendmail).

  --client NAME    count as NAME, if control/overlimit-senders allows it
  --sender ADDR    envelope sender unless -f or -r is given (default: login)
  also accepted: -oi -bm -odb -odi -oem -v -U -r ADDR, -E/-J (ignored);
  anything else is refused.

Exit codes: 0 sent; 111 over a limit or a temporary error; 100 never (a
usage error, a recipient that is not one plain address, a name not allowed,
more recipients than a limit allows). See sendmail-overlimit(8).";

fn main() {
    std::process::exit(run())
}

fn run() -> i32 {
    privilege::raise_soft_limits();
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => return refuse(PERMFAIL, &format!("{e}; nothing sent")),
    };
    if args.help {
        println!("{USAGE}");
        return 0;
    }
    if args.version {
        println!("sendmail-overlimit {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let message = match read_message() {
        Ok(m) => m,
        Err((code, why)) => return refuse(code, &format!("{why}; nothing sent")),
    };
    let recipients = match args.resolve(&message) {
        Ok(r) => r,
        Err(why) => return refuse(PERMFAIL, &format!("{why}; nothing sent")),
    };
    let sender = match sender(&args) {
        Ok(s) => s,
        Err((code, why)) => return refuse(code, &format!("{why}; nothing sent")),
    };
    let message = message::without(&message, &["bcc", "resent-bcc"]);
    let mut cmd = Command::new(COUNTER);
    if let Some(c) = &args.client {
        cmd.arg("--client").arg(OsStr::from_bytes(c));
    }
    cmd.arg("--submit");
    if args.ignore_dots {
        cmd.arg("-i");
    }
    cmd.arg("-f").arg(OsStr::from_bytes(&sender));
    if let Some(f) = &args.full_name {
        cmd.arg("-F").arg(OsStr::from_bytes(f));
    }
    cmd.arg("--")
        .args(recipients.iter().map(|r| OsStr::from_bytes(r)));
    let buffered = memory_file(c"sendmail-overlimit").and_then(|mut f| {
        f.write_all(&message)?;
        f.rewind()?;
        Ok(f)
    });
    let file = match buffered {
        Ok(f) => f,
        Err(e) => {
            return refuse(
                TEMPFAIL,
                &format!("cannot buffer the message: {e}; nothing sent"),
            )
        }
    };
    let e = cmd.stdin(file).exec();
    refuse(
        TEMPFAIL,
        &format!("cannot run {COUNTER}: {e}; nothing sent"),
    )
}

/// `-f`/`-r` as given (empty is `<>`), else `--sender`, else the login.
fn sender(args: &Args) -> Result<Vec<u8>, (i32, String)> {
    if let Some(s) = args.sender.as_ref().or(args.default_sender.as_ref()) {
        // `-f '<a@x>'` as sendmail takes it; `<>` is the null sender.
        let s = s.trim_ascii();
        let s = match s.strip_prefix(b"<").and_then(|s| s.strip_suffix(b">")) {
            Some(inner) => inner,
            None => s,
        };
        if !s.is_empty() && !address::atomic(s) {
            let why = format!("sender \"{}\" is not one plain address", printable(s));
            return Err((PERMFAIL, why));
        }
        return Ok(s.to_vec());
    }
    let uid = identity::real_uid();
    match identity::login(uid) {
        Ok(Some(login)) => Ok(login),
        Ok(None) => Err((PERMFAIL, format!("uid {uid} has no login name"))),
        Err(e) => Err((TEMPFAIL, e.to_string())),
    }
}

/// One line on stderr, where PHP's caller logs it, and the same in syslog.
fn refuse(code: i32, why: &str) -> i32 {
    log::line(NAME, why);
    syslog(IDENT, libc::LOG_WARNING, why);
    code
}
