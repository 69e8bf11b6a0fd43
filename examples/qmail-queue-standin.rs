//! A stand-in for qmail's qmail-queue, for the tests of the queue front: it
//! follows qmail-queue(8) exactly as seen from outside (reads the whole
//! message on fd 0, then the envelope on fd 1: `F` sender NUL, `T` recipient
//! NUL ..., NUL; 54 when either ends early, 91 for a format error, 0 when
//! "queued") and, instead of queueing, records the message, the envelope and
//! its real and effective uid in `QMAILDIR/standin/`, one file each, named
//! after its pid. Installed setuid `qmailq` as the real one is.

use std::io::Read;
use std::os::fd::FromRawFd;

fn main() {
    let mut message = Vec::new();
    // SAFETY: fds 0 and 1 are ours for the life of the process.
    let (mut fd0, mut fd1) =
        unsafe { (std::fs::File::from_raw_fd(0), std::fs::File::from_raw_fd(1)) };
    if fd0.read_to_end(&mut message).is_err() {
        std::process::exit(54);
    }
    let mut envelope = Vec::new();
    if fd1.read_to_end(&mut envelope).is_err() {
        std::process::exit(54);
    }
    let code = check(&envelope);
    if code != 0 {
        std::process::exit(code);
    }
    let dir = format!("{}/standin", overlimit::config::QMAILDIR);
    let pid = std::process::id();
    // SAFETY: getuid and geteuid have no preconditions.
    let ids = unsafe { format!("{} {}", libc::getuid(), libc::geteuid()) };
    let ok = std::fs::write(format!("{dir}/message-{pid}"), &message).is_ok()
        && std::fs::write(format!("{dir}/envelope-{pid}"), &envelope).is_ok()
        && std::fs::write(format!("{dir}/uid-{pid}"), ids).is_ok();
    std::process::exit(if ok { 0 } else { 53 })
}

/// qmail-queue's reading of the envelope: 0 when well formed.
fn check(env: &[u8]) -> i32 {
    let mut parts = env.split_inclusive(|&b| b == 0);
    match parts.next() {
        Some(f) if f[0] == b'F' && f.last() == Some(&0) => {}
        Some(f) if f.last() == Some(&0) => return 91,
        _ => return 54,
    }
    for f in parts {
        if f.last() != Some(&0) {
            return 54;
        }
        if f == [0] {
            return 0;
        }
        if f[0] != b'T' {
            return 91;
        }
    }
    54
}
