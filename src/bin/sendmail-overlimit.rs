//! `sendmail-overlimit`: a sendmail for PHP's `mail()` (its `sendmail_path`)
//! that puts local mail under the limits qmail-smtpd's plug-in applies.
//!
//! It runs as the site's user, without privileges: it reads the command line
//! and the message, counts the recipients (the arguments, and with `-t` the
//! header's To, Cc and Bcc), has `overlimit-count` (setgid, beside it) count
//! them for the calling account, and then either execs the real sendmail with
//! the flags and the message unchanged, or refuses: nothing is sent, the exit
//! code is 111 or 100 (never 75, which PHP 8.5 takes for success), and one
//! line goes to stderr and syslog naming the client, the recipients and the
//! subject. This file is the one place that decides the exit code.

use overlimit::client::printable;
use overlimit::local::args::{self, Args};
use overlimit::local::message;
use overlimit::local::{identity, syslog, MAX_MESSAGE, PERMFAIL, TEMPFAIL};
use overlimit::log;
use std::ffi::{CStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const NAME: &str = "sendmail-overlimit";
const IDENT: &CStr = c"sendmail-overlimit";
const DEFAULT_SENDMAIL: &str = "/var/qmail/bin/sendmail";
const COUNTER: &str = "overlimit-count";
const USAGE: &str = "usage: sendmail-overlimit [--client NAME] [--stamp] [--sender ADDR]
                          [--sendmail PATH] [SENDMAIL FLAGS] [RECIPIENT...]

A sendmail for PHP's sendmail_path (sendmail-overlimit -t -i) that counts
each message's recipients against the caller's limits in relaylimits before
it runs the real sendmail with the same flags and message.

  --client NAME    count as NAME, if control/overlimit-senders allows it
  --stamp          add X-Overlimit-Client: NAME (uid N) to the message
  --sender ADDR    envelope sender (-f ADDR) unless -f or -r is given
  --sendmail PATH  the real sendmail (OVERLIMIT_SENDMAIL; default
                   /var/qmail/bin/sendmail)

Exit codes: the real sendmail's when it runs; 111 over the limit or a
temporary error; 100 a usage error, a name not allowed, a message over
32 MiB. See sendmail-overlimit(8).";

fn main() {
    std::process::exit(run())
}

fn run() -> i32 {
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => return refuse(PERMFAIL, &format!("{e}; nothing sent")),
    };
    if args.help {
        println!("{USAGE}");
        return 0;
    }
    let sendmail = args
        .sendmail
        .clone()
        .or_else(|| std::env::var_os("OVERLIMIT_SENDMAIL").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_SENDMAIL.into());
    let message = match read_message() {
        Ok(m) => m,
        Err((code, why)) => return refuse(code, &format!("{why}; nothing sent")),
    };
    let mut n: u64 = args
        .recipients
        .iter()
        .map(|r| message::count_addresses(r.as_bytes()))
        .sum();
    if args.reads_header() {
        n += message::header_recipients(&message);
    }
    if n == 0 {
        // Nothing to count: the real sendmail reports its own error.
        return send(&sendmail, args.pass, &message, None);
    }
    let uid = identity::real_uid();
    let what = describe(uid, n, &message);
    match ask(&args, n) {
        Ok(client) => {
            syslog(IDENT, libc::LOG_INFO, &format!("counted {client}: {what}"));
            let stamp = args.stamp.then(|| {
                let end = String::from_utf8_lossy(message::line_end(&message));
                format!("X-Overlimit-Client: {client} (uid {uid}){end}")
            });
            send(&sendmail, args.for_sendmail(), &message, stamp)
        }
        Err((code, why)) => refuse(code, &format!("refused {why}; {what}")),
    }
}

/// `uid 1001, 2 recipients, subject "Hello"`, for the log.
fn describe(uid: u32, n: u64, message: &[u8]) -> String {
    let subject = match message::subject(message) {
        Some(s) => {
            let mut s = printable(&s);
            if s.len() > 200 {
                s.truncate(200);
                s.push_str("...");
            }
            format!("subject \"{s}\"")
        }
        None => "no subject".into(),
    };
    format!(
        "uid {uid}, {n} recipient{}, {subject}",
        if n == 1 { "" } else { "s" }
    )
}

/// One line on stderr, where PHP's caller logs it, and the same in syslog.
fn refuse(code: i32, why: &str) -> i32 {
    log::line(NAME, why);
    syslog(IDENT, libc::LOG_WARNING, why);
    code
}

/// The whole message from stdin, up to `MAX_MESSAGE` bytes.
fn read_message() -> Result<Vec<u8>, (i32, String)> {
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

/// Has `overlimit-count`, installed beside this program, count `n`
/// recipients. `Ok`: the client's name; `Err`: the exit code and reason.
fn ask(args: &Args, n: u64) -> Result<String, (i32, String)> {
    let program = counter_path();
    let mut cmd = Command::new(&program);
    if let Some(name) = &args.client {
        cmd.arg("--client").arg(name);
    }
    let out = cmd
        .arg(n.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| (TEMPFAIL, format!("cannot run {}: {e}", program.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or("").to_string();
    match out.status.code() {
        Some(0) if !line.is_empty() => Ok(line),
        Some(code @ (TEMPFAIL | PERMFAIL)) if !line.is_empty() => Err((code, line)),
        _ => Err((
            TEMPFAIL,
            format!("{} failed ({})", program.display(), out.status),
        )),
    }
}

fn counter_path() -> PathBuf {
    let here = std::env::current_exe().ok();
    match here.as_deref().and_then(|p| p.parent()) {
        Some(dir) => dir.join(COUNTER),
        None => PathBuf::from("/var/qmail/bin").join(COUNTER),
    }
}

/// Replaces this process with the real sendmail, its stdin the message (with
/// the stamp on top) in a memory file at offset 0. Returns only on failure.
fn send(sendmail: &OsString, args: Vec<OsString>, message: &[u8], stamp: Option<String>) -> i32 {
    let buffered = buffer().and_then(|mut f| {
        let top = message::top(message);
        f.write_all(&message[..top])?;
        if let Some(s) = &stamp {
            f.write_all(s.as_bytes())?;
        }
        f.write_all(&message[top..])?;
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
    let e = Command::new(sendmail).args(args).stdin(file).exec();
    let shown = String::from_utf8_lossy(sendmail.as_bytes());
    refuse(TEMPFAIL, &format!("cannot run {shown}: {e}; nothing sent"))
}

/// An anonymous file for the message: a memfd, else an unlinked file in the
/// temporary directory.
fn buffer() -> std::io::Result<File> {
    // SAFETY: memfd_create with a literal name; a descriptor it returns is
    // ours alone.
    let fd = unsafe { libc::memfd_create(c"sendmail-overlimit".as_ptr(), libc::MFD_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        return Ok(unsafe { File::from_raw_fd(fd) });
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
}
