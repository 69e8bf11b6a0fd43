//! What `overlimit check` reports about the local-mail install: every mode,
//! owner and mount the privilege model depends on (see the Makefile's
//! header). A broken install already refuses mail; this names what to fix
//! before the first site's mail is refused.

use super::identity::{self, ACCOUNT};
use super::{deliverer, COUNTER, FRONT, QUEUE, QUEUE_ORIG, UNCOUNTED};
use crate::config::{BIN, DEFAULT_DIR};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One sentence per problem found; empty when the install is sound.
pub fn findings() -> Vec<String> {
    let mut out = Vec::new();
    let uid = identity::uid_of(ACCOUNT.as_bytes()).ok().flatten();
    let gid = identity::gid_of(ACCOUNT.as_bytes()).ok().flatten();
    let (Some(uid), Some(gid)) = (uid, gid) else {
        out.push(format!(
            "no account or group {ACCOUNT}: local mail is refused (run make install as root)"
        ));
        return out;
    };
    let mut expect = |path: &str, owner: u32, group: u32, mode: u32, what: &str| {
        match std::fs::symlink_metadata(path) {
            Err(e) => out.push(format!("{path}: {e}: {what} (run make install as root)")),
            Ok(m) if (m.uid(), m.gid(), m.mode() & 0o7777) != (owner, group, mode) => {
                out.push(format!(
                "{path}: owner {}:{} mode {:o}, should be {owner}:{group} mode {mode:o}: {what} \
                 (run make install as root)",
                m.uid(),
                m.gid(),
                m.mode() & 0o7777
            ))
            }
            Ok(_) => {}
        }
    };
    expect(COUNTER, uid, gid, 0o6755, "local mail is refused");
    expect(
        DEFAULT_DIR,
        uid,
        gid,
        0o2770,
        "the counters are not the overlimit account's",
    );
    expect(FRONT, 0, gid, 0o2711, "the queue front cannot run");
    if Path::new(QUEUE_ORIG).exists() {
        expect(QUEUE, 0, gid, 0o2711, "bin/qmail-queue is not the front");
        match std::fs::metadata(QUEUE_ORIG) {
            Ok(m) if m.gid() != gid || m.mode() & 0o001 != 0 => out.push(format!(
                "{QUEUE_ORIG}: runnable by others than group {ACCOUNT}: a site can queue \
                 uncounted (make queue-front-on)"
            )),
            _ => {}
        }
    }
    // qmail takes an account whose home exists and is its own for a local
    // user: mail to it would be delivered as overlimit into that directory
    // (the counters', as make install once made it), its .qmail files
    // obeyed, the forwards passing the queue front uncounted.
    if let Ok(Some(home)) = identity::home_of(ACCOUNT.as_bytes()) {
        let home = String::from_utf8_lossy(&home).into_owned();
        if std::fs::metadata(&home).is_ok_and(|m| m.is_dir() && m.uid() == uid) {
            out.push(format!(
                "the {ACCOUNT} account's home {home} is its own directory: qmail delivers \
                 mail for {ACCOUNT} there, as {ACCOUNT}, uncounted (usermod -d /nonexistent \
                 {ACCOUNT})"
            ));
        }
    }
    if nosuid(BIN) {
        out.push(format!(
            "{BIN} is on a nosuid mount: the set-id bits have no effect and local mail is refused"
        ));
    }
    if let Err(e) = deliverer::resolve(Path::new(deliverer::CONTROL)).and_then(|d| {
        std::fs::metadata(&d)
            .map(|_| ())
            .map_err(|e| crate::error::fail("stat", &d, e))
    }) {
        out.push(format!("the deliverer: {e}: local mail is refused"));
    }
    if let Ok(m) = std::fs::symlink_metadata(UNCOUNTED) {
        if !super::trusted(&m) {
            out.push(format!(
                "{UNCOUNTED}: not owned by root or writable by others: the queue front refuses mail"
            ));
        }
    }
    out
}

/// Whether `path` is on a filesystem mounted nosuid.
fn nosuid(path: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: statvfs writes a struct we own, from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_NOSUID != 0 }
}
