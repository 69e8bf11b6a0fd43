//! Which program delivers local mail: the administrator's, never the
//! caller's. `QMAILDIR/control/overlimit-sendmail` names it (one absolute
//! path, e.g. `/usr/sbin/sendmail` for Postfix) when that file is owned by
//! root and writable by no one else; without the file it is the build's
//! `QMAILDIR/bin/sendmail`. A file that is there but not trusted refuses the
//! mail: falling back would hide the administrator's mistake.

use crate::error::{fail, Internal};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const CONTROL: &str = crate::home_path!("control/overlimit-sendmail");
pub const BUILT_IN: &str = crate::home_path!("bin/sendmail");

/// The deliverer named by `control`, else `BUILT_IN`.
pub fn resolve(control: &Path) -> Result<PathBuf, Internal> {
    let meta = match std::fs::symlink_metadata(control) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BUILT_IN.into()),
        Err(e) => return Err(fail("stat", control, e)),
        Ok(m) => m,
    };
    let shown = control.display();
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(Internal(format!(
            "{shown}: not trusted (it must be a regular file owned by root, writable by \
             no one else: chown root {shown}; chmod 644 {shown})"
        )));
    }
    let text = std::fs::read(control).map_err(|e| fail("read", control, e))?;
    let line = text
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    let path = Path::new(std::ffi::OsStr::from_bytes(line));
    if !path.is_absolute() {
        return Err(Internal(format!(
            "{shown}: the first line must be an absolute path"
        )));
    }
    Ok(path.to_path_buf())
}

/// Whether this process may execute `path` (checked before counting, so a
/// message that cannot be handed on is never counted).
pub fn executable(path: &Path) -> Result<(), Internal> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Internal(format!("{}: a NUL in the path", path.display())))?;
    // SAFETY: access reads a NUL-terminated string we own.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(fail("execute", path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether an argument list and environment fit what `execve` accepts under
/// the current stack limit (Linux allows a quarter of it, at least 128 KiB,
/// at most 6 MiB; each string at most 128 KiB).
pub fn fits_exec(args: &[&[u8]], env: &[&[u8]]) -> Result<(), Internal> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) };
    let allowed = (lim.rlim_cur / 4).clamp(128 << 10, 6 << 20) as usize;
    let pointer = std::mem::size_of::<usize>();
    let needed: usize = args
        .iter()
        .chain(env)
        .map(|s| s.len() + 1 + pointer)
        .sum::<usize>()
        + 2 * pointer;
    // A margin for the program's name and what the kernel adds.
    if needed + 4096 > allowed || args.iter().any(|a| a.len() >= 128 << 10) {
        return Err(Internal(format!(
            "the deliverer's arguments ({needed} bytes) do not fit the {allowed} bytes \
             the stack limit allows"
        )));
    }
    Ok(())
}
