//! Which program delivers local mail: the administrator's, never the
//! caller's. `QMAILDIR/control/overlimit-sendmail` names it (one absolute
//! path, e.g. `/usr/sbin/sendmail` for Postfix) when that file is owned by
//! root and writable by no one else; without the file it is the build's
//! `QMAILDIR/bin/sendmail`. A file that is there but not trusted refuses the
//! mail: falling back would hide the administrator's mistake.

use crate::error::{fail, Internal};
use std::os::unix::ffi::OsStrExt;
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
    if !super::trusted(&meta) {
        return Err(Internal::other(format!(
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
        return Err(Internal::other(format!(
            "{shown}: the first line must be an absolute path"
        )));
    }
    Ok(path.to_path_buf())
}

/// Whether an argument list and environment fit what `execve` accepts under
/// the current stack limit (Linux allows a quarter of it, at least 128 KiB,
/// at most 6 MiB; each string at most 128 KiB).
fn fits_exec(args: &[&[u8]], env: &[&[u8]]) -> Result<(), Internal> {
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
        return Err(Internal::other(format!(
            "the deliverer's arguments ({needed} bytes) do not fit the {allowed} bytes \
             the stack limit allows"
        )));
    }
    Ok(())
}

/// One run of the deliverer, with the argument list and environment this
/// program builds itself: `DELIVERER [-i] -f SENDER [-F FULLNAME] -- RCPT...`
/// (never `-t`), PATH and the caller's login as USER and LOGNAME (for
/// qmail-inject's default From).
pub struct Invocation {
    pub program: PathBuf,
    args: Vec<Vec<u8>>,
    env: Vec<(&'static str, Vec<u8>)>,
}

impl Invocation {
    pub fn new(
        program: PathBuf,
        ignore_dots: bool,
        sender: &[u8],
        full_name: Option<&[u8]>,
        recipients: &[Vec<u8>],
        login: &[u8],
    ) -> Invocation {
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(recipients.len() + 6);
        if ignore_dots {
            args.push(b"-i".to_vec());
        }
        args.extend([b"-f".to_vec(), sender.to_vec()]);
        if let Some(f) = full_name {
            args.extend([b"-F".to_vec(), f.to_vec()]);
        }
        args.push(b"--".to_vec());
        args.extend(recipients.iter().cloned());
        let env = vec![
            ("PATH", super::privilege::PATH.as_bytes().to_vec()),
            ("USER", login.to_vec()),
            ("LOGNAME", login.to_vec()),
        ];
        Invocation { program, args, env }
    }

    /// Whether `execve` will take it (checked before counting).
    pub fn fits(&self) -> Result<(), Internal> {
        let argv: Vec<&[u8]> = std::iter::once(self.program.as_os_str().as_bytes())
            .chain(self.args.iter().map(Vec::as_slice))
            .collect();
        let env: Vec<Vec<u8>> = self
            .env
            .iter()
            .map(|(k, v)| [k.as_bytes(), b"=", v].concat())
            .collect();
        let env: Vec<&[u8]> = env.iter().map(Vec::as_slice).collect();
        fits_exec(&argv, &env)
    }

    /// Runs the deliverer on `message` and waits: how it ended, or `Err` when
    /// it could not start. Its stderr is relayed, so a caller that closed its
    /// own cannot make a deliverer that queued the mail fail afterwards on a
    /// write.
    ///
    /// It runs in a session of its own, without a controlling terminal: a
    /// terminal signals its foreground process group whatever the uids, and
    /// Postfix's postdrop catches SIGINT even when it inherits it ignored, so
    /// a site typing ^C on its own terminal just after postdrop queued the
    /// message would make the deliverer fail, and the queued recipients be
    /// given back.
    pub fn run(&self, message: std::fs::File) -> Result<Ended, Internal> {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(&self.program);
        // SAFETY: setsid is async-signal-safe and touches no memory; in the
        // child it cannot fail (a fresh child leads no process group).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // From `/`: the caller's working directory may be closed to overlimit.
        cmd.env_clear()
            .current_dir("/")
            .args(self.args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .stdin(message)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, std::ffi::OsStr::from_bytes(v));
        }
        let child = cmd.spawn().map_err(|e| fail("run", &self.program, e))?;
        let out = match child.wait_with_output() {
            Ok(out) => out,
            Err(e) => return Ok(Ended::Unknown(format!("waiting for it failed: {e}"))),
        };
        let _ = std::io::stderr().write_all(&out.stderr);
        Ok(match out.status.code() {
            Some(75) => Ended::Exited(super::TEMPFAIL),
            Some(code) => Ended::Exited(code),
            None => Ended::Unknown(format!("it ended by {}", out.status)),
        })
    }
}

/// How a run of the deliverer ended.
pub enum Ended {
    /// It exited with this code; 75 (EX_TEMPFAIL, which PHP 8.5 takes for
    /// success) is given as 111. Non-zero: nothing was queued.
    Exited(i32),
    /// It may have queued the message before it was killed (by the kernel:
    /// the caller can no longer signal it), or its end was not seen.
    Unknown(String),
}
