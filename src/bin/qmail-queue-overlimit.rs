//! `qmail-queue-overlimit`: the qmail-queue front. Installed as
//! `QMAILDIR/bin/qmail-queue` (root:overlimit, mode 2711), with qmail's own
//! kept as `bin/qmail-queue.orig` (group overlimit, mode 4110, so only this
//! front can run it), every program that queues mail passes it: PHP's
//! `mail()`, `sendmail`, `qmail-inject`, cron, forwards.
//!
//! It reads the message (fd 0) wholly first, then the envelope (fd 1) as
//! qmail-queue(8) defines it (`F` sender NUL, `T` recipient NUL ..., NUL),
//! counts the envelope's recipients for the caller's real uid with
//! `overlimit-count --queue N`, and execs `qmail-queue.orig` with the same
//! message and envelope and the caller's real uid, which qmail-queue writes
//! into the Received line. Accounts listed in `control/overlimit-uncounted`
//! (qmail-smtpd's, counted by the plug-in, and qmail's daemons) and the
//! `overlimit` account (whose mail `overlimit-count` counted already) pass
//! uncounted. Anything else refuses: 71 temporarily (over a limit, any
//! internal error), 31 for good, and nothing is queued.

use overlimit::client::printable;
use overlimit::local::identity::{self, ACCOUNT};
use overlimit::local::privilege;
use overlimit::local::{executable, memory_file, trusted};
use overlimit::local::{COUNTER, PERMFAIL, QUEUE_ORIG, TEMPFAIL, UNCOUNTED};
use overlimit::log;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

const NAME: &str = "qmail-queue-overlimit";

/// qmail-queue(8)'s exit codes that this front uses.
const ADDRESS_TOO_LONG: i32 = 11;
const REFUSED_FOR_GOOD: i32 = 31;
const WRITE_ERROR: i32 = 53;
const CANNOT_READ: i32 = 54;
const REFUSED_FOR_NOW: i32 = 71;
const BAD_ENVELOPE: i32 = 91;

/// Longest envelope address accepted (qmail's own stay far below).
const MAX_ADDRESS: usize = 1000;

fn main() {
    overlimit::local::answer_version(NAME);
    std::process::exit(run())
}

/// A refusal: one line on stderr (qmail-queue prints none; its callers
/// report only the code, so the reason is here), and the code.
fn refuse(code: i32, why: &str) -> i32 {
    log::line(NAME, why);
    code
}

fn run() -> i32 {
    privilege::raise_soft_limits();
    if let Err(why) = privileged() {
        return refuse(REFUSED_FOR_NOW, &format!("mail refused: {why}"));
    }
    // SAFETY: single-threaded; nothing holds pointers into the environment.
    // qmail-queue.orig needs none, and the caller's must not reach it.
    unsafe { libc::clearenv() };
    let message = match copy_message() {
        Ok(f) => f,
        Err((code, why)) => return refuse(code, &format!("{why}; nothing queued")),
    };
    let (envelope, recipients) = match read_envelope() {
        Ok(e) => e,
        Err((code, why)) => return refuse(code, &why),
    };
    if let Err(e) = executable(Path::new(QUEUE_ORIG)) {
        return refuse(REFUSED_FOR_NOW, &format!("{e}; nothing queued"));
    }
    let uid = identity::real_uid();
    match uncounted(uid) {
        Ok(true) => {}
        Ok(false) if recipients == 0 => {}
        Ok(false) => {
            if let Err(code) = count(recipients) {
                return code;
            }
        }
        Err(why) => return refuse(REFUSED_FOR_NOW, &format!("{why}; nothing queued")),
    }
    // The same message and envelope, rewound, on fds 0 and 1.
    let e = Command::new(QUEUE_ORIG)
        .env_clear()
        .stdin(message)
        .stdout(envelope)
        .exec();
    refuse(REFUSED_FOR_NOW, &format!("cannot run {QUEUE_ORIG}: {e}"))
}

/// The setgid bit must be in effect: the original runs only for group
/// overlimit, and without the bit a site could not queue at all, or (a
/// front run unprivileged from a copy) not be counted.
fn privileged() -> Result<(), String> {
    let gid = identity::gid_of(ACCOUNT.as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: getegid has no preconditions.
    let egid = unsafe { libc::getegid() };
    match gid {
        Some(g) if g == egid => Ok(()),
        Some(g) => Err(format!(
            "the set-group-id bit is not in effect (egid {egid}, {ACCOUNT} is {g}): \
             install root:{ACCOUNT} mode 2711 on a filesystem without nosuid; \
             run make install as root"
        )),
        None => Err(format!(
            "no group {ACCOUNT} in /etc/group: run make install as root"
        )),
    }
}

/// fd 0 copied into a memory file: all of it before the envelope is read, or
/// a writer of a large message would block on fd 0 while this waited on fd 1.
/// `Err`: the exit code (54 reading, 53 writing, as qmail-queue's) and why.
fn copy_message() -> Result<File, (i32, String)> {
    let write_error = |e: std::io::Error| (WRITE_ERROR, format!("cannot buffer the message: {e}"));
    let mut out = memory_file(c"qmail-queue-overlimit-message").map_err(write_error)?;
    // SAFETY: fd 0 is the caller's; ManuallyDrop keeps it open for the rest.
    let mut input = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((CANNOT_READ, format!("cannot read the message: {e}"))),
        };
        out.write_all(&buf[..n]).map_err(write_error)?;
    }
    out.rewind().map_err(write_error)?;
    Ok(out)
}

/// The envelope from fd 1, checked as qmail-queue checks it, copied into a
/// memory file; the number of recipients.
fn read_envelope() -> Result<(File, u64), (i32, String)> {
    // SAFETY: fd 1 is the caller's envelope; ManuallyDrop keeps it open.
    let input = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let mut bytes = Vec::new();
    let mut reader = std::io::BufReader::new(&*input);
    let read_error = |e: std::io::Error| (CANNOT_READ, format!("cannot read the envelope: {e}"));
    let mut recipients = 0u64;
    let mut first = true;
    loop {
        let mut kind = [0u8; 1];
        if reader.read(&mut kind).map_err(read_error)? == 0 {
            return Err((
                CANNOT_READ,
                "the envelope ends early; nothing queued".into(),
            ));
        }
        bytes.push(kind[0]);
        match (first, kind[0]) {
            (true, b'F') => {}
            (false, b'T') => recipients += 1,
            (false, 0) => break,
            _ => return Err((BAD_ENVELOPE, "envelope format error; nothing queued".into())),
        }
        first = false;
        let mut addr = Vec::new();
        let n = std::io::BufRead::read_until(&mut reader, 0, &mut addr).map_err(read_error)?;
        if n == 0 || addr.last() != Some(&0) {
            return Err((
                CANNOT_READ,
                "the envelope ends early; nothing queued".into(),
            ));
        }
        if addr.len() > MAX_ADDRESS {
            return Err((ADDRESS_TOO_LONG, "an envelope address is too long".into()));
        }
        bytes.extend_from_slice(&addr);
    }
    let mut out = memory_file(c"qmail-queue-overlimit-envelope")
        .map_err(|e| (REFUSED_FOR_NOW, format!("cannot buffer the envelope: {e}")))?;
    out.write_all(&bytes)
        .and_then(|()| out.rewind())
        .map_err(|e| (REFUSED_FOR_NOW, format!("cannot buffer the envelope: {e}")))?;
    Ok((out, recipients))
}

/// Whether the caller's mail passes uncounted: the `overlimit` account, and
/// the logins in the root-owned `control/overlimit-uncounted`.
fn uncounted(uid: u32) -> Result<bool, String> {
    let login = identity::login(uid).map_err(|e| e.to_string())?;
    let Some(login) = login else { return Ok(false) };
    if login == ACCOUNT.as_bytes() {
        return Ok(true);
    }
    let path = Path::new(UNCOUNTED);
    let mut file = match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("open {UNCOUNTED}: {e}")),
        Ok(f) => f,
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("stat {UNCOUNTED}: {e}"))?;
    if !trusted(&meta) {
        return Err(format!(
            "{UNCOUNTED}: not trusted (it must be a regular file owned by root, writable \
             by no one else)"
        ));
    }
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .map_err(|e| format!("read {UNCOUNTED}: {e}"))?;
    Ok(text
        .split(|&b| b == b'\n')
        .map(|l| l.split(|&b| b == b'#').next().unwrap_or(b"").trim_ascii())
        .any(|l| l == login.as_slice()))
}

/// Has `overlimit-count --queue N` count for the caller; `Err` is the exit code.
fn count(n: u64) -> Result<(), i32> {
    let out = Command::new(COUNTER)
        .env_clear()
        .arg("--queue")
        .arg(n.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Err(refuse(
                REFUSED_FOR_NOW,
                &format!("cannot run {COUNTER}: {e}; nothing queued"),
            ))
        }
    };
    let line = String::from_utf8_lossy(&out.stdout);
    let line = printable(line.lines().next().unwrap_or("").as_bytes());
    match out.status.code() {
        Some(0) => Ok(()),
        Some(PERMFAIL) => Err(refuse(REFUSED_FOR_GOOD, &format!("{line}; nothing queued"))),
        Some(TEMPFAIL) => Err(refuse(REFUSED_FOR_NOW, &format!("{line}; nothing queued"))),
        _ => Err(refuse(
            REFUSED_FOR_NOW,
            &format!("{COUNTER} failed ({}); nothing queued", out.status),
        )),
    }
}
