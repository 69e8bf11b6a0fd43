//! Talking to overlimit-policy the way Postfix's smtpd does: requests of
//! `name=value` lines, replies read to their empty line; the program run in
//! spawn mode (one connection on stdin/stdout) or as a daemon on a socket.
//! A test file that includes this one has `#[path = "support/process.rs"]
//! mod process;`, which runs the program boundedly (`HANG`).
#![allow(dead_code)]

use crate::process::{finish_drained, Drained, Finished, HANG};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const POLICY: &str = env!("CARGO_BIN_EXE_overlimit-policy");

/// A request as smtpd 3.7 sends it, with the attributes that matter here set
/// and a few others around them, as a real request has.
pub fn request(state: &str, sasl_username: &str, client_address: &str, recipient: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\n\
         helo_name=client.example\nqueue_id=\nsender=from@example.com\n\
         recipient={recipient}\nrecipient_count=0\nclient_address={client_address}\n\
         client_name=unknown\nreverse_client_name=unknown\ninstance=1f2.6543a1b2.9c3d.0\n\
         sasl_method={}\nsasl_username={sasl_username}\nsasl_sender=\nsize=0\n\
         ccert_subject=\nencryption_protocol=\nstress=\nclient_port=40000\n\
         policy_context=\nserver_address=127.0.0.1\nserver_port=25\n\
         compatibility_level=3.6\nmail_version=3.7.11\n\n",
        if sasl_username.is_empty() {
            ""
        } else {
            "PLAIN"
        }
    )
}

/// A RCPT request from an authenticated user.
pub fn rcpt(user: &str) -> String {
    request("RCPT", user, "192.0.2.10", "someone@remote.example")
}

/// One policy client connection over any stream.
pub struct Peer<S: Read + Write> {
    reader: BufReader<S>,
}

impl<S: Read + Write> Peer<S> {
    pub fn new(stream: S) -> Peer<S> {
        Peer {
            reader: BufReader::new(stream),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one reply: the `action=` value, or `None` if the server closed
    /// the connection instead. A reply of any other shape fails the test.
    pub fn reply(&mut self) -> Option<String> {
        let mut first = String::new();
        match self.reader.read_line(&mut first) {
            Ok(0) => return None,
            Ok(_) => {}
            // The server reset the connection: closed, too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a reply: {e}"),
        }
        let mut empty = String::new();
        self.reader.read_line(&mut empty).unwrap();
        assert_eq!(
            empty, "\n",
            "a reply is one line and an empty line: {first:?}"
        );
        let action = first
            .strip_prefix("action=")
            .and_then(|a| a.strip_suffix('\n'));
        Some(
            action
                .unwrap_or_else(|| panic!("not a reply: {first:?}"))
                .to_string(),
        )
    }

    /// Sends a request and reads its reply.
    pub fn ask(&mut self, request: &str) -> Option<String> {
        self.send(request.as_bytes());
        self.reply()
    }

    pub fn stream(&mut self) -> &mut S {
        self.reader.get_mut()
    }
}

impl Peer<UnixStream> {
    pub fn unix(path: &Path) -> Peer<UnixStream> {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        Peer::new(s)
    }
}

/// The program with a cleared environment and `env`.
pub fn command(env: &[(OsString, OsString)], args: &[&str]) -> Command {
    let mut c = Command::new(POLICY);
    c.env_clear().args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Waits for `child` at most `HANG`, killing it on a hang (which fails);
/// a signal that ended it fails the test too.
pub fn finish(child: Child, started: Instant) -> Finished {
    by_exit(crate::process::finish(child, started))
}

fn by_exit(f: Finished) -> Finished {
    assert_eq!(f.signal, None, "killed by a signal");
    f
}

/// Spawn mode: `input` on stdin, then end of input; stdout and stderr kept.
pub fn spawn_mode(env: &[(OsString, OsString)], input: &[u8]) -> Finished {
    by_exit(crate::process::feed(command(env, &[]), input))
}

/// The `action=` values of a spawn-mode run's stdout, in order.
pub fn actions(stdout: &str) -> Vec<String> {
    stdout
        .split("\n\n")
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.strip_prefix("action=")
                .unwrap_or_else(|| panic!("not a reply: {r:?}"))
                .to_string()
        })
        .collect()
}

/// A daemon on `--listen ADDRESS`, killed if the test ends without `stop`.
pub struct Daemon {
    child: Option<(Child, Drained)>,
    started: Instant,
}

impl Daemon {
    /// Starts it and waits until `ready` says it accepts connections.
    pub fn start(mut cmd: Command, ready: impl Fn() -> bool) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let drained = Drained::from(&mut child);
        let mut d = Daemon {
            child: Some((child, drained)),
            started: Instant::now(),
        };
        while !ready() {
            if d.child.as_mut().unwrap().0.try_wait().unwrap().is_some() {
                let (child, drained) = d.child.take().unwrap();
                let f = by_exit(finish_drained(child, drained, d.started));
                panic!("the daemon exited with {:?}: {}", f.code, f.stderr);
            }
            assert!(d.started.elapsed() < HANG, "the daemon never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// `--listen unix:PATH` with `env`.
    pub fn unix(env: &[(OsString, OsString)], path: &Path) -> Daemon {
        let address = format!("unix:{}", path.display());
        let path = path.to_path_buf();
        Daemon::start(command(env, &["--listen", &address]), move || {
            UnixStream::connect(&path).is_ok()
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().0.id() as i32
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> Finished {
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let started = Instant::now();
        let (child, drained) = self.child.take().unwrap();
        let mut f = by_exit(finish_drained(child, drained, self.started));
        f.elapsed = started.elapsed();
        f
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some((mut c, _)) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh path for a socket in `dir`.
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join("policy.sock")
}
