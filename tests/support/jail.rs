//! The one harness for tests of the privileged local path: a private mount
//! namespace (`unshare -m --propagation private`) held open by a sleeping
//! process, in which a tmpfs (without nosuid) covers QMAILDIR and copies of
//! /etc/passwd and /etc/group hold the test accounts (overlimit, two sites,
//! qmailq, qmaild). The real binaries are installed there by the real
//! `make install-files`, with their owners and modes; a site's processes run
//! through `nsenter` and `setpriv --reuid --regid --clear-groups`. The test
//! reads and writes the jail's files through /proc/PID/root. Nothing is left
//! on the host: the namespace, its mounts and the tmpfs go with the holder.
//!
//! Without root (or without unshare, nsenter, setpriv, make) a test says
//! `skipped: REASON` on stderr and passes; under CI=true it fails instead
//! (tests/common's `skip`: a test file that includes this one has
//! `mod common;`, and `#[path = "support/process.rs"] mod process;` for
//! running the jail's commands).
#![allow(dead_code)]

use crate::process::Finished;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const QMAILDIR: &str = "/var/qmail";
pub const COUNT: &str = env!("CARGO_BIN_EXE_overlimit-count");
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Test accounts: (login, uid). Each has a group of the same name and id.
pub const ACCOUNTS: [(&str, u32); 5] = [
    ("overlimit", 64_000),
    ("site1", 64_001),
    ("site2", 64_002),
    ("qmailq", 64_003),
    ("qmaild", 64_004),
];

pub fn uid(login: &str) -> u32 {
    ACCOUNTS.iter().find(|a| a.0 == login).unwrap().1
}

/// Skips (or fails under CI) when the jail cannot be built here; `None`
/// means go on.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("a private mount namespace and set-id installs need root".into());
    }
    for tool in ["unshare", "nsenter", "setpriv", "make"] {
        let found = PATH.split(':').any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("{tool} is missing (scripts/debian-packages)"));
        }
    }
    None
}

/// Returns a jail, or skips: `let Some(j) = Jail::or_skip() else { return };`.
pub struct Jail {
    holder: Child,
    pid: u32,
    /// Host-side scratch: the passwd and group copies, a Postfix config.
    pub scratch: PathBuf,
}

impl Jail {
    pub fn or_skip() -> Option<Jail> {
        Jail::with_mounts(&[])
    }

    /// A jail that also bind-mounts each host path `from` over `to`.
    pub fn with_mounts(binds: &[(&Path, &str)]) -> Option<Jail> {
        if let Some(why) = unavailable() {
            crate::common::skip(&why);
            return None;
        }
        Some(Jail::start(binds))
    }

    fn start(binds: &[(&Path, &str)]) -> Jail {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let scratch = std::env::temp_dir().join(format!(
            "overlimit-jail-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        let names: Vec<&str> = ACCOUNTS.iter().map(|a| a.0).collect();
        let keep = |text: String| -> String {
            text.lines()
                .filter(|l| !names.contains(&l.split(':').next().unwrap_or("")))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let mut passwd = keep(std::fs::read_to_string("/etc/passwd").unwrap());
        let mut group = keep(std::fs::read_to_string("/etc/group").unwrap());
        for (name, id) in ACCOUNTS {
            passwd.push_str(&format!("{name}:x:{id}:{id}::/nonexistent:/bin/sh\n"));
            group.push_str(&format!("{name}:x:{id}:\n"));
        }
        std::fs::write(scratch.join("passwd"), passwd).unwrap();
        std::fs::write(scratch.join("group"), group).unwrap();
        for f in ["passwd", "group"] {
            std::fs::set_permissions(scratch.join(f), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let s = scratch.display();
        let mut script = format!(
            "set -e
mount --bind {s}/passwd /etc/passwd
mount --bind {s}/group /etc/group
if [ -d {QMAILDIR} ]; then
  mount -t tmpfs -o mode=755,size=256m tmpfs {QMAILDIR}
else
  # No {QMAILDIR} on the host: a tmpfs over /var, the host's /var bound back
  # entry by entry, and {QMAILDIR} made in it.
  mkdir {s}/hostvar
  mount --bind /var {s}/hostvar
  mount -t tmpfs -o mode=755 tmpfs /var
  for e in {s}/hostvar/* {s}/hostvar/.[!.]*; do
    [ -e \"$e\" ] || [ -L \"$e\" ] || continue
    n=/var/${{e##*/}}
    if [ -L \"$e\" ]; then cp -P \"$e\" \"$n\"
    elif [ -d \"$e\" ]; then mkdir \"$n\"; mount --bind \"$e\" \"$n\"
    else touch \"$n\"; mount --bind \"$e\" \"$n\"; fi
  done
  mkdir -m 755 {QMAILDIR}
fi
"
        );
        for (from, to) in binds {
            script.push_str(&format!("mount --bind {} {to}\n", from.display()));
        }
        script.push_str("echo ready\nexec sleep 100000\n");
        let mut holder = Command::new("unshare")
            .env_clear()
            .env("PATH", PATH)
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n", "the jail did not start");
        let pid = holder.id();
        let jail = Jail {
            holder,
            pid,
            scratch,
        };
        jail.install();
        jail
    }

    /// The real `make install-files` into the jail's QMAILDIR, then the
    /// stand-ins: a recording `bin/sendmail` and a setuid qmailq `qmail-queue`.
    fn install(&self) {
        let build = Path::new(COUNT).parent().unwrap();
        let manifest = env!("CARGO_MANIFEST_DIR");
        let out = self.root(&format!(
            "make -s -C {manifest} install-files BUILD={} QMAILDIR={QMAILDIR}",
            build.display()
        ));
        assert!(out.status.success(), "make install-files: {}", text(&out));
        let standin = build.join("examples/qmail-queue-standin");
        assert!(
            standin.exists(),
            "{} is missing (cargo builds examples with the tests)",
            standin.display()
        );
        let out = self.root(&format!(
            "set -e
d={QMAILDIR}
cat > $d/bin/sendmail <<'EOF'
#!/bin/sh
# Records what it was given, as the real sendmail would queue it.
d={QMAILDIR}/deliveries/$$
mkdir $d
for a in \"$@\"; do printf '%s\\0' \"$a\"; done > $d/args
id -u > $d/uid
env > $d/env
ls /proc/$$/fd > $d/fds
cat > $d/message
exit $(cat {QMAILDIR}/deliverer-exit 2>/dev/null || echo 0)
EOF
chmod 755 $d/bin/sendmail
mkdir -m 733 $d/deliveries
install -o qmailq -g qmailq -m 4711 {} $d/bin/qmail-queue
install -d -o qmailq -g qmailq -m 700 $d/standin
",
            standin.display()
        ));
        assert!(out.status.success(), "stand-ins: {}", text(&out));
    }

    /// A path of the jail, as the host sees it.
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.pid))
    }

    /// A command run inside the jail as root.
    pub fn command(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.env_clear()
            .env("PATH", PATH)
            .arg("-t")
            .arg(self.pid.to_string())
            .arg("-m")
            .arg("--");
        c
    }

    /// `sh -c SCRIPT` inside the jail as root.
    pub fn root(&self, script: &str) -> Output {
        self.command().args(["sh", "-c", script]).output().unwrap()
    }

    /// A command inside the jail as `login` (its uid and group only), with
    /// `setpriv` options before the user's; the caller adds the program.
    pub fn as_user(&self, login: &str, extra: &[&str]) -> Command {
        let id = uid(login).to_string();
        let mut c = self.command();
        c.arg("setpriv")
            .arg(format!("--reuid={id}"))
            .arg(format!("--regid={id}"))
            .arg("--clear-groups")
            .args(extra)
            .arg("--");
        c
    }

    /// Runs `cmd` (a command of this jail's) with `input` on stdin;
    /// bounded by a hang limit.
    pub fn feed(&self, cmd: Command, input: &[u8]) -> Finished {
        crate::process::feed(cmd, input)
    }

    /// `sendmail-overlimit ARGS` as `login`, the message on stdin.
    pub fn sendmail(&self, login: &str, args: &[&str], message: &[u8]) -> Finished {
        let mut c = self.as_user(login, &[]);
        c.arg(format!("{QMAILDIR}/bin/sendmail-overlimit"))
            .args(args);
        self.feed(c, message)
    }

    /// Writes a root-owned control file `name` with `text`.
    pub fn control(&self, name: &str, text: &str) {
        let p = self.path(&format!("{QMAILDIR}/control/{name}"));
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// The classic count (`total` line) of a counter, if it exists.
    pub fn total(&self, counter: &str) -> Option<u64> {
        let p = self.path(&format!("{QMAILDIR}/overlimit/{counter}"));
        let text = std::fs::read_to_string(p).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("total "))?
            .parse()
            .ok()
    }

    /// The raw text of a counter.
    pub fn counter(&self, counter: &str) -> Option<String> {
        std::fs::read_to_string(self.path(&format!("{QMAILDIR}/overlimit/{counter}"))).ok()
    }

    /// Every delivery the stand-in sendmail recorded: args, uid, env, descriptors, message.
    pub fn deliveries(&self) -> Vec<Delivery> {
        let dir = self.path(&format!("{QMAILDIR}/deliveries"));
        let mut v: Vec<(u64, Delivery)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let d = e.unwrap().path();
                let modified = std::fs::metadata(&d).unwrap().modified().unwrap();
                let key = modified
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                let args = std::fs::read(d.join("args")).unwrap_or_default();
                // Each argument ends in a NUL: empty ones are kept.
                let args = args
                    .split_inclusive(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(&a[..a.len() - 1]).into_owned())
                    .collect();
                (
                    key,
                    Delivery {
                        args,
                        uid: std::fs::read_to_string(d.join("uid"))
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                        env: std::fs::read_to_string(d.join("env")).unwrap_or_default(),
                        fds: std::fs::read_to_string(d.join("fds"))
                            .unwrap_or_default()
                            .lines()
                            .filter_map(|l| l.parse().ok())
                            .collect(),
                        message: std::fs::read(d.join("message")).unwrap_or_default(),
                    },
                )
            })
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, d)| d).collect()
    }

    /// Recipients handed to the stand-in: the arguments after `--`.
    pub fn delivered_recipients(&self) -> usize {
        self.deliveries()
            .iter()
            .map(Delivery::recipients)
            .map(|r| r.len())
            .sum()
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

#[derive(Debug)]
pub struct Delivery {
    pub args: Vec<String>,
    pub uid: String,
    pub env: String,
    /// The descriptors the stand-in had open (its shell's script among them).
    pub fds: Vec<i32>,
    pub message: Vec<u8>,
}

impl Delivery {
    pub fn recipients(&self) -> Vec<String> {
        let at = self
            .args
            .iter()
            .position(|a| a == "--")
            .expect("no -- in the deliverer's arguments");
        self.args[at + 1..].to_vec()
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
