//! The test harness: a fresh temporary directory per test, and the real
//! binaries run the way qmail-smtpd runs the plug-in — a cleared environment,
//! stdin a pipe nobody writes to (the client's socket, which must never be
//! read), stdout pointed at stderr, and fd 4 a pipe read after the exit.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_rcptcheck-overlimit");
pub const SWEEP: &str = env!("CARGO_BIN_EXE_overlimit-sweep");
pub const ADMIN: &str = env!("CARGO_BIN_EXE_overlimit");

/// No run of a program may take longer: a hang fails the test.
pub const HANG: Duration = Duration::from_secs(20);

/// A temporary directory holding `relaylimits` and the counter directory
/// `overlimit/`, removed when dropped. It sits alone in a fresh private
/// parent, so a test may check that nothing escaped beside it without
/// depending on what other processes do in the shared `$TMPDIR`.
pub struct Sandbox {
    pub root: PathBuf,
}

/// A fresh directory of our own under `$TMPDIR` (mode 0700, created by
/// `mkdtemp`, so no other process's file can be in its place).
pub fn fresh_dir(what: &str) -> PathBuf {
    let template = std::env::temp_dir().join(format!("overlimit-{what}-XXXXXX"));
    let mut bytes = template.into_os_string().into_encoded_bytes();
    bytes.push(0);
    // SAFETY: `bytes` is a writable NUL-terminated template that outlives the
    // call; mkdtemp only rewrites its X's.
    let made = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    assert!(
        !made.is_null(),
        "mkdtemp: {}",
        std::io::Error::last_os_error()
    );
    bytes.pop();
    // SAFETY: the bytes came from an OsString and mkdtemp wrote ASCII.
    PathBuf::from(unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(bytes) })
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = fresh_dir("test").join("box");
        std::fs::create_dir_all(root.join("overlimit")).unwrap();
        Sandbox { root }
    }

    /// With this control file.
    pub fn with_limits(text: &str) -> Sandbox {
        let s = Sandbox::new();
        s.limits(text);
        s
    }

    pub fn control(&self) -> PathBuf {
        self.root.join("relaylimits")
    }

    pub fn dir(&self) -> PathBuf {
        self.root.join("overlimit")
    }

    /// Replaces the control file.
    pub fn limits(&self, text: &str) {
        std::fs::write(self.control(), text).unwrap();
    }

    /// The bytes of a counter file, if it exists.
    pub fn counter(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir().join(file)).ok()
    }

    /// The counter files in the counter directory, sorted: every name but
    /// dot files (the journal).
    pub fn counter_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    /// The plug-in for a relay client authenticated as `user`.
    pub fn user(&self, user: &str) -> Run {
        self.plugin()
            .env("RELAYCLIENT", "")
            .env("SMTPAUTHUSER", user)
            .env("TCPREMOTEIP", "192.0.2.99")
    }

    /// The plug-in for a relay client known by its address.
    pub fn ip(&self, ip: &str) -> Run {
        self.plugin().env("RELAYCLIENT", "").env("TCPREMOTEIP", ip)
    }

    /// The plug-in with only RELAYLIMITS and OVERLIMITDIR set.
    pub fn plugin(&self) -> Run {
        Run::new(PLUGIN)
            .env("RELAYLIMITS", self.control())
            .env("OVERLIMITDIR", self.dir())
            .env("USE_FD4", "1")
            .env("RECIPIENT", "someone@remote.example")
    }

    /// `overlimit ARGS`, with this sandbox's environment.
    pub fn admin(&self, args: &[&str]) -> Run {
        Run::new(ADMIN)
            .args(args)
            .env("RELAYLIMITS", self.control())
            .env("OVERLIMITDIR", self.dir())
    }

    /// `overlimit-sweep ARGS`, with this sandbox's environment.
    pub fn sweep(&self, args: &[&str]) -> Run {
        Run::new(SWEEP)
            .args(args)
            .env("RELAYLIMITS", self.control())
            .env("OVERLIMITDIR", self.dir())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A test may have made parts read-only; undo that before removing.
        let parent = self.root.parent().expect("a private parent");
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+rwx")
            .arg(parent)
            .status();
        let _ = std::fs::remove_dir_all(parent);
    }
}

/// Whether this is CI (`.ci/run` sets `CI=true` after installing every
/// tool), where no test may skip.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true")
}

/// A test that cannot run here says so on stderr, loudly, and returns;
/// under CI it fails instead, so a skip never reports as a pass there.
pub fn skip(why: &str) {
    assert!(!under_ci(), "CI=true, and this test cannot run: {why}");
    eprintln!("skipped: {why}");
}

/// A system group and user made for a test and removed when dropped, so the
/// host is left with the accounts it had. Ones that already existed are
/// used and left alone.
pub struct TempAccounts {
    made_user: Option<String>,
    made_group: Option<String>,
}

impl TempAccounts {
    /// Ensures group `group` and system user `user` (with a group of its own)
    /// exist; `Err` says why not.
    pub fn new(group: &str, user: &str) -> Result<TempAccounts, String> {
        let quiet = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let mut made = TempAccounts {
            made_user: None,
            made_group: None,
        };
        if !quiet("getent", &["group", group]) {
            if !quiet("groupadd", &["--system", group]) {
                return Err(format!("groupadd {group} failed"));
            }
            made.made_group = Some(group.to_string());
        }
        if !quiet("id", &[user]) {
            let args = [
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ];
            if !quiet("useradd", &args) {
                return Err(format!("useradd {user} failed"));
            }
            made.made_user = Some(user.to_string());
        }
        Ok(made)
    }
}

impl Drop for TempAccounts {
    fn drop(&mut self) {
        // userdel removes the user's own group (USERGROUPS_ENAB) with it.
        if let Some(user) = &self.made_user {
            let _ = Command::new("userdel").arg(user).status();
            let _ = Command::new("groupdel")
                .arg(user)
                .stderr(Stdio::null())
                .status();
        }
        if let Some(group) = &self.made_group {
            let _ = Command::new("groupdel").arg(group).status();
        }
    }
}

/// What a run left behind.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code; `None` if a signal ended the process.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// stderr, which also carries stdout for the plug-in.
    pub stderr: String,
    /// stdout (empty for the plug-in, whose stdout is its stderr).
    pub stdout: String,
    /// What was written on fd 4.
    pub fd4: String,
    pub elapsed: Duration,
}

/// A program about to run with a cleared environment.
pub struct Run {
    cmd: Command,
    stdout_on_stderr: bool,
}

impl Run {
    pub fn new(program: &str) -> Run {
        let mut cmd = Command::new(program);
        cmd.env_clear();
        Run {
            cmd,
            stdout_on_stderr: program == PLUGIN,
        }
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Run {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Run {
        self.cmd.env_remove(k);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Run {
        self.cmd.args(args);
        self
    }

    /// One more argument, any bytes.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Run {
        self.cmd.arg(arg);
        self
    }

    /// Starts the program; `finish` waits for it.
    pub fn spawn(mut self) -> Running {
        let (fd4_read, fd4_write) = std::io::pipe().unwrap();
        // stdin: a pipe whose other end stays open and silent, like a client
        // that sends nothing; a plug-in that read it would hang.
        let (stdin_read, stdin_write) = std::io::pipe().unwrap();
        let fd4 = fd4_write.as_raw_fd();
        let on_stderr = self.stdout_on_stderr;
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            self.cmd.pre_exec(move || {
                // When the pipe already is fd 4, dup2 does nothing and the
                // close-on-exec flag would stay: clear it instead.
                if fd4 == 4 {
                    if libc::fcntl(4, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd4, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if on_stderr && libc::dup2(2, 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.cmd.stdin(stdin_read).stderr(Stdio::piped());
        if !on_stderr {
            self.cmd.stdout(Stdio::piped());
        }
        let started = Instant::now();
        let mut child = self.cmd.spawn().expect("start program");
        drop(fd4_write);
        // Read output while the program runs, so a long output cannot fill a
        // pipe and stall it.
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut b = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut b);
                }
                String::from_utf8_lossy(&b).into_owned()
            })
        };
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn Read + Send>),
        );
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
        );
        Running {
            child,
            fd4: fd4_read,
            _stdin: stdin_write,
            started,
            stderr,
            stdout,
        }
    }

    /// Runs the program to its end (failing the test if it hangs).
    pub fn run(self) -> Outcome {
        self.spawn().finish()
    }

    /// Runs and returns the exit code, which must exist.
    pub fn code(self) -> i32 {
        let o = self.run();
        o.code
            .unwrap_or_else(|| panic!("killed by a signal: {o:?}"))
    }
}

pub struct Running {
    pub child: std::process::Child,
    fd4: std::io::PipeReader,
    _stdin: std::io::PipeWriter,
    started: Instant,
    stderr: std::thread::JoinHandle<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Running {
    pub fn finish(mut self) -> Outcome {
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if self.started.elapsed() > HANG {
                let _ = self.child.kill();
                panic!("program hung for {HANG:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let elapsed = self.started.elapsed();
        let stderr = self.stderr.join().unwrap();
        let stdout = self.stdout.join().unwrap();
        let mut fd4 = Vec::new();
        self.fd4.read_to_end(&mut fd4).unwrap();
        Outcome {
            code: status.code(),
            signal: status.signal(),
            stderr,
            stdout,
            fd4: String::from_utf8_lossy(&fd4).into_owned(),
            elapsed,
        }
    }
}

/// Runs `n` plug-ins at once, each built by `make(i)`, and returns their
/// outcomes.
pub fn parallel(n: usize, make: impl Fn(usize) -> Run) -> Vec<Outcome> {
    let running: Vec<Running> = (0..n).map(|i| make(i).spawn()).collect();
    running.into_iter().map(Running::finish).collect()
}

/// How many outcomes exited with `code`.
pub fn count(outcomes: &[Outcome], code: i32) -> usize {
    outcomes.iter().filter(|o| o.code == Some(code)).count()
}

/// True if `path` exists (without following a final symlink).
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// xorshift64: pseudo-random, the same sequence on every run, so a failure
/// can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The number after the first `"KEY":` in `json` (status --json holds only
/// non-negative integers).
pub fn json_number(json: &str, key: &str) -> u64 {
    let after = json
        .split(&format!("\"{key}\":"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

impl Sandbox {
    /// The classic count in a counter file: its `total` line, or the size of
    /// a seed-script file of `X`s.
    pub fn total(&self, file: &str) -> Option<u64> {
        let bytes = self.counter(file)?;
        if bytes.iter().all(|&b| b == b'X') {
            return Some(bytes.len() as u64);
        }
        let text = String::from_utf8(bytes).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("total "))?
            .parse()
            .ok()
    }

    /// The text of `overlimit status --json CLIENT`, which exits 0 only when
    /// the counter reads.
    pub fn status_json(&self, client: &str) -> String {
        let o = self.admin(&["status", "--json", client]).run();
        assert_eq!((o.code, o.stderr.as_str()), (Some(0), ""), "{o:?}");
        o.stdout
    }
}

/// Sets the data length of the record whose key ends with `key` in the cdb
/// at `path` to `len` (a damaged file; the data is not there). A cdb's
/// records follow its 2,048-byte header up to the first hash table.
pub fn damage_cdb_record(path: &Path, key: &[u8], len: u32) {
    let mut cdb = std::fs::read(path).unwrap();
    let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let tables = (0..256).map(|i| word(&cdb, i * 8)).min().unwrap();
    let mut at = 2048;
    while at < tables {
        let (klen, dlen) = (word(&cdb, at), word(&cdb, at + 4));
        if cdb[at + 8..at + 8 + klen].ends_with(key) {
            cdb[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
            std::fs::write(path, cdb).unwrap();
            return;
        }
        at += 8 + klen + dlen;
    }
    panic!("no record for {key:?} in {}", path.display());
}
