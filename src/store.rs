//! The counter directory: safe names, safe opening, bounded locking.
//!
//! A counter is opened without following symbolic links and without blocking
//! on a FIFO, used only if it is a regular file with one link, locked with
//! `flock` within a deadline, and checked after locking to still be the file
//! at its path (a sweep or reset may have removed it meanwhile).

use crate::counter::{Counter, READ_LIMIT};
use crate::error::{fail, Internal};
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

/// How long the plug-in waits for a lock in all (kept here for the callers
/// that name it so; every deadline lives in `time.rs`).
pub use crate::time::LOCK_WAIT;
/// Longest file name used as is; longer names are hashed.
const NAME_MAX: usize = 200;

/// The file name of a client's counter. Ordinary names (lower-case letters,
/// digits, `. @ _ + - :`, not starting with `.` or `@`) are kept, as the seed
/// script kept them; any other name becomes `=` and its bytes in hex, and a
/// long one `=` + a hex prefix + `~` + a 128-bit hash. `=` and `~` are not in
/// the ordinary set, so the forms cannot collide, and none holds a `/`.
pub fn client_file(name: &[u8]) -> String {
    let ordinary = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b".@_+-:".contains(b);
    if !name.is_empty()
        && name.len() <= NAME_MAX
        && name.iter().all(ordinary)
        && name[0] != b'.'
        && name[0] != b'@'
    {
        return String::from_utf8(name.to_vec()).unwrap();
    }
    encoded('=', name)
}

/// The file name of a domain's aggregate counter: `@domain`. No client file
/// starts with `@`, so an aggregate never shares a client's counter.
pub fn domain_file(domain: &[u8]) -> String {
    let plain = client_file(domain);
    if plain.starts_with('=') || domain.contains(&b'@') {
        return encoded('@', domain).replacen('@', "@=", 1);
    }
    format!("@{plain}")
}

fn encoded(lead: char, name: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    if 2 * name.len() < NAME_MAX {
        return format!("{lead}{}", hex(name));
    }
    let (a, b) = (
        fnv64(name, 0xcbf2_9ce4_8422_2325),
        fnv64(name, 0x6c62_272e_07bb_0142),
    );
    format!("{lead}{}~{a:016x}{b:016x}", hex(&name[..40]))
}

fn fnv64(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// How a counter is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read and write, created if missing: the plug-in.
    Create,
    /// Read and write, only if it exists: the sweep and `reset`.
    Existing,
    /// Read only, under a shared lock: `status`, which must work on a
    /// filesystem gone read-only and change nothing, not even a mode.
    Read,
}

/// A counter file, locked until dropped.
pub struct Locked {
    pub path: PathBuf,
    file: File,
    size: u64,
}

impl Locked {
    /// Opens (creating it) and locks the counter `name` in `dir`, giving up at
    /// `deadline`.
    pub fn open(dir: &Path, name: &str, deadline: Instant) -> Result<Locked, Internal> {
        Locked::open_with(dir, name, deadline, Access::Create).map(|l| l.unwrap())
    }

    /// As `open`, but `None` where the counter does not exist (never creates).
    pub fn open_existing(
        dir: &Path,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Locked>, Internal> {
        Locked::open_with(dir, name, deadline, Access::Existing)
    }

    /// As `open_existing`, but read-only under a shared lock: for reading,
    /// never for `write`.
    pub fn open_to_read(
        dir: &Path,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Locked>, Internal> {
        Locked::open_with(dir, name, deadline, Access::Read)
    }

    fn open_with(
        dir: &Path,
        name: &str,
        deadline: Instant,
        access: Access,
    ) -> Result<Option<Locked>, Internal> {
        let path = dir.join(name);
        let create = access == Access::Create;
        loop {
            let file = match OpenOptions::new()
                .read(true)
                .write(access != Access::Read)
                .create(create)
                .mode(0o660)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(fail("open", &path, e)),
            };
            let m = check_plain(&file, &path)?;
            if access != Access::Read {
                share_with_directory(&file, &path, &m, dir)?;
            }
            lock(&file, &path, deadline, access != Access::Read)?;
            // The lock is ours; is the file still the counter at `path`?
            let here = file.metadata().map_err(|e| fail("fstat", &path, e))?;
            match std::fs::symlink_metadata(&path) {
                Ok(there) if there.dev() == here.dev() && there.ino() == here.ino() => {
                    return Ok(Some(Locked {
                        path,
                        file,
                        size: here.len(),
                    }));
                }
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(fail("lstat", &path, e))
                }
                _ if Instant::now() >= deadline => {
                    return Err(Internal::NotPlain {
                        path,
                        why: "kept changing while locked".into(),
                    })
                }
                _ if !create => return Ok(None),
                _ => continue,
            }
        }
    }

    /// The counter's contents; `None` for a file that is not a counter.
    pub fn read(&self) -> Result<Option<Counter>, Internal> {
        let mut buf = vec![0u8; (self.size as usize).min(READ_LIMIT)];
        self.file
            .read_exact_at(&mut buf, 0)
            .map_err(|e| fail("read", &self.path, e))?;
        Ok(Counter::parse(&buf, self.size))
    }

    /// The file's length when opened, or after the last write.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Replaces the contents: one write at offset 0, then a truncate; see
    /// `counter.rs` for why a kill between them is harmless. The caller has
    /// checked `fits_size_limit`.
    pub fn write_text(&mut self, text: &[u8]) -> Result<(), Internal> {
        self.file
            .write_all_at(text, 0)
            .map_err(|e| fail("write", &self.path, e))?;
        if self.size > text.len() as u64 {
            self.file
                .set_len(text.len() as u64)
                .map_err(|e| fail("truncate", &self.path, e))?;
        }
        self.size = text.len() as u64;
        Ok(())
    }

    /// Removes the counter while still holding its lock, so a plug-in waiting
    /// for it notices and starts again on a fresh file.
    pub fn remove(self) -> Result<(), Internal> {
        std::fs::remove_file(&self.path).map_err(|e| fail("unlink", &self.path, e))
    }
}

/// Refuses a write that the process's file-size limit (`softlimit -f`,
/// `ulimit -f`) would cut short. Past the limit the kernel writes only part
/// of the text, which would tear a counter that had been longer, and raises
/// SIGXFSZ, which would kill the writer: checked first, neither can happen.
pub fn fits_size_limit(path: &Path, len: usize) -> Result<(), Internal> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
        && len as u64 > lim.rlim_cur
    {
        return Err(Internal::SizeLimit {
            path: path.to_path_buf(),
            limit: lim.rlim_cur,
            need: len,
        });
    }
    Ok(())
}

/// Refuses anything but a regular file with a single link: a planted hard
/// link would let a write reach a file outside the directory.
fn check_plain(file: &File, path: &Path) -> Result<std::fs::Metadata, Internal> {
    let m = file.metadata().map_err(|e| fail("fstat", path, e))?;
    if !m.file_type().is_file() {
        return Err(Internal::NotPlain {
            path: path.to_path_buf(),
            why: "not a regular file; left alone".into(),
        });
    }
    if m.nlink() > 1 {
        return Err(Internal::NotPlain {
            path: path.to_path_buf(),
            why: format!("has {} hard links; left alone", m.nlink()),
        });
    }
    Ok(m)
}

/// Makes a counter writable by everyone who runs the plug-in. The plug-in's
/// umask (often 022) would leave 0640 files, which `overlimit-count`, running
/// with the directory's group, could not update: a counter this process owns
/// gets mode 0660 (the directory, mode 2770, keeps everyone else out whatever
/// the file's mode). A counter just created (still empty) goes to the
/// directory's owner and group: root, running the plug-in by hand as the man
/// page shows, would otherwise leave a file the smtpd user cannot write, and
/// that client would pass uncounted until the sweep. Handing an empty file to
/// the account that owns the directory gives it nothing it could not have
/// made itself, and `fchown` on the open descriptor cannot be redirected.
/// An existing, group-writable counter, the common case, costs nothing here.
pub(crate) fn share_with_directory(
    file: &File,
    path: &Path,
    m: &std::fs::Metadata,
    dir: &Path,
) -> Result<(), Internal> {
    use std::os::unix::fs::PermissionsExt;
    let fresh = m.len() == 0;
    if m.mode() & 0o060 == 0o060 && !fresh {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if m.mode() & 0o060 != 0o060 && m.uid() == euid {
        let mode = (m.mode() & 0o7777) | 0o660;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("fchmod", path, e))?;
    }
    if !fresh {
        return Ok(());
    }
    let d = std::fs::metadata(dir).map_err(|e| fail("stat", dir, e))?;
    if euid == 0 && (m.uid(), m.gid()) != (d.uid(), d.gid()) {
        std::os::unix::fs::fchown(file, Some(d.uid()), Some(d.gid()))
            .map_err(|e| fail("fchown", path, e))?;
    } else if m.uid() == euid && m.gid() != d.gid() {
        // Without a setgid directory the file has the creator's group; a
        // member of the directory's group may give it that one. Not being a
        // member is no error: the file stays as the creator's own.
        let _ = std::os::unix::fs::fchown(file, None, Some(d.gid()));
    }
    Ok(())
}

/// Takes the lock, exclusive or shared, waiting no later than `deadline`.
/// The common case, no contention, costs one `flock`. Otherwise a thread
/// waits in a blocking `flock` (the kernel queues waiters, which polling
/// would not) and the caller gives up at the deadline; a lock the thread
/// takes later belongs to a file this process has stopped using.
fn lock(file: &File, path: &Path, deadline: Instant, exclusive: bool) -> Result<(), Internal> {
    let tried = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match tried {
        Ok(()) => return Ok(()),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(fail("flock", path, e)),
    }
    let waiter = file.try_clone().map_err(|e| fail("dup", path, e))?;
    let (tx, rx) = mpsc::channel();
    // A small stack: run scripts often cap memory (`softlimit -m 2000000`),
    // and the default 2 MiB stack could not be mapped under such a cap.
    std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = tx.send(if exclusive {
                waiter.lock()
            } else {
                waiter.lock_shared()
            });
        })
        .map_err(|e| fail("start a lock waiter for", path, e))?;
    let waiting = Instant::now();
    let wait = deadline.saturating_duration_since(waiting);
    match rx.recv_timeout(wait) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(fail("flock", path, e)),
        Err(_) => Err(Internal::LockTimeout {
            path: path.to_path_buf(),
            waited: waiting.elapsed(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_kept() {
        assert_eq!(client_file(b"info@example.com"), "info@example.com");
        assert_eq!(client_file(b"2001:db8::7"), "2001:db8::7");
        assert_eq!(client_file(b"192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn hostile_names_stay_inside() {
        for name in [
            &b"../x"[..],
            b"/etc/passwd",
            b".",
            b"..",
            b"a/b",
            b"\xff\x00",
            b"@x",
            b"UP",
        ] {
            let f = client_file(name);
            assert!(f.starts_with('='), "{f}");
            assert!(!f.contains('/') && f.len() <= NAME_MAX);
        }
        let long = vec![b'a'; 10_000];
        let f = client_file(&long);
        assert!(f.starts_with('=') && f.len() <= NAME_MAX, "{f}");
        assert_ne!(f, client_file(&long[..9_999]));
    }

    #[test]
    fn domains_never_collide_with_clients() {
        assert_eq!(domain_file(b"example.com"), "@example.com");
        assert!(domain_file(b"../up").starts_with("@="));
        assert_ne!(domain_file(b"x"), client_file(b"@x"));
    }
}
